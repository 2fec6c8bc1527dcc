"""The one way the pack's own scripts, tests and benches import the pack: as the package ``zsvr``.

ComfyUI loads a custom node pack from its folder under a module name made of the folder's path; the pack's
``__init__.py`` then registers itself as ``zsvr`` too, and every module of the pack imports the others
through that name (``zsvr.nodes``, ``zsvr.kernels``, ...). A script inside the pack (``run_workflow.py``,
``bench/*.py``, ``tests/conftest.py``) loads the pack here, before ComfyUI, so that it and ComfyUI share one
copy of every module (one set of classes, one set of module globals).

The pack's folder is never a ``sys.path`` entry: its sub-packages ``kernels``, ``nodes``, ``headless``,
``tests`` and ``bench`` would then shadow other top-level modules (PyPI's ``kernels``, which diffusers and
transformers import; ComfyUI's own ``nodes.py``). Python puts it there by itself in two cases, which
:func:`import_pack` undoes: ``python run_workflow.py`` (the script's folder) and ``python -m pytest`` run
from the pack's folder (the current folder).

Scripts load this file by path, as it cannot be imported before the pack is::

    runpy.run_path(str(PACK_DIR / "pack_import.py"))["import_pack"]()
"""

from __future__ import annotations

import importlib.util
import os
import pathlib
import sys

PACK_NAME = "zsvr"
PACK_DIR = pathlib.Path(__file__).resolve().parent


def _is_pack_dir(entry: str) -> bool:
    try:
        return pathlib.Path(entry or os.getcwd()).resolve() == PACK_DIR
    except OSError:
        return False


def forget_pack_folder() -> None:
    """Remove every ``sys.path`` entry that is the pack's folder (``""`` included when it is the current one)."""
    sys.path[:] = [entry for entry in sys.path if not _is_pack_dir(entry)]


def import_pack():
    """The pack as the package ``zsvr`` (loaded from this folder the first time); its folder leaves ``sys.path``.

    Returns:
        The ``zsvr`` module.

    Raises:
        ImportError: another folder's copy of the pack is already loaded as ``zsvr`` in this process.
    """
    forget_pack_folder()
    loaded = sys.modules.get(PACK_NAME)
    if loaded is None:
        spec = importlib.util.spec_from_file_location(PACK_NAME, PACK_DIR / "__init__.py",
                                                      submodule_search_locations=[str(PACK_DIR)])
        loaded = importlib.util.module_from_spec(spec)
        sys.modules[PACK_NAME] = loaded
        try:
            spec.loader.exec_module(loaded)
        except BaseException:
            del sys.modules[PACK_NAME]
            raise
    elif pathlib.Path(loaded.__file__).resolve().parent != PACK_DIR:
        raise ImportError(f"another copy of ZSVR is already loaded as {PACK_NAME!r} from "
                          f"{pathlib.Path(loaded.__file__).parent}; this one is at {PACK_DIR}")
    return loaded
