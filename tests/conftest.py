"""Test configuration: the pack imported as ``zsvr``, and the real-host fixtures.

Tests import the pack as ``zsvr`` (``zsvr.kernels...``, ``zsvr.headless...``), the one name the pack has
everywhere (``pack_import.py``). Its folder never becomes a ``sys.path`` entry, so its ``kernels/`` and
``nodes/`` shadow nothing (PyPI's ``kernels``, ComfyUI's ``nodes``): ``python -m pytest`` from the pack's
folder puts it there, so it is taken off first; and pytest would put it back when it sets up the pack's folder
as a package of tests (it has an ``__init__.py``), so the folder is collected as a plain directory instead.
Host tests use the ``host`` fixture from ``tests/host_harness.py``.
"""

import pathlib
import runpy

import pytest

PACK_DIR = pathlib.Path(__file__).resolve().parent.parent
runpy.run_path(str(PACK_DIR / "pack_import.py"))["import_pack"]()

pytest_plugins = ["host_harness"]


class _PackFolderIsNotATestPackage:
    """Collect the pack's folder as a plain directory: as a ``Package`` pytest would import its ``__init__.py``
    as a top-level module and insert the folder at the front of ``sys.path``."""

    @pytest.hookimpl(tryfirst=True)
    def pytest_collect_directory(self, path, parent):
        if path.resolve() == PACK_DIR:
            return pytest.Dir.from_parent(parent, path=path)
        return None


def pytest_configure(config):
    config.pluginmanager.register(_PackFolderIsNotATestPackage(), "zsvr-pack-folder-is-not-a-test-package")
