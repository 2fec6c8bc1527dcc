"""Test configuration: the pack imported as ``zsvr``, and the real-host fixtures.

Kernel tests import the pack's pure modules as ``zsvr.kernels...`` (the pack's
directory may have any name, so it is registered under a fixed alias here).
Host tests use the ``host`` fixture from ``tests/host_harness.py``.
"""

import importlib.util
import pathlib
import sys

PACK_DIR = pathlib.Path(__file__).resolve().parent.parent


def _register_pack_alias() -> None:
    if "zsvr" in sys.modules:
        return
    spec = importlib.util.spec_from_file_location(
        "zsvr", PACK_DIR / "__init__.py", submodule_search_locations=[str(PACK_DIR)]
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules["zsvr"] = module
    spec.loader.exec_module(module)


_register_pack_alias()

pytest_plugins = ["host_harness"]
