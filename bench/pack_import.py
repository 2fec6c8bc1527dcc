"""Import the pack's pure kernels without ComfyUI, under the fixed alias ``zsvr`` (as tests/conftest.py does).

The pack's folder may have any name, so benchmarks register it by path:
``import_pack(); from zsvr.kernels import video_io``.
"""

import importlib.util
import pathlib
import sys

PACK_DIR = pathlib.Path(__file__).resolve().parent.parent


def import_pack():
    if "zsvr" not in sys.modules:
        spec = importlib.util.spec_from_file_location(
            "zsvr", PACK_DIR / "__init__.py", submodule_search_locations=[str(PACK_DIR)]
        )
        module = importlib.util.module_from_spec(spec)
        sys.modules["zsvr"] = module
        spec.loader.exec_module(module)
    return sys.modules["zsvr"]
