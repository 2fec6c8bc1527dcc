"""ZSVR: zero-shot video restoration nodes for ComfyUI.

ComfyUI loads this file as the pack's entry point, under a module name made of
the pack folder's path. The pack's modules import one another as the package
``zsvr`` whoever loaded it (``pack_import.py`` says why), so this file registers
itself under that name unless the pack's own scripts already did.

It imports nothing from ComfyUI at import time, so ``kernels/`` (pure
torch/numpy) can be imported and unit-tested without the host; the nodes are
imported only when ComfyUI asks for them through the V3 entry point below.
"""

import importlib
import os
import sys

__version__ = "0.1.0"
PACK_NAME = "zsvr"


def _register_as_zsvr() -> None:
    loaded = sys.modules.get(PACK_NAME)
    if loaded is None:
        sys.modules[PACK_NAME] = sys.modules[__name__]
        return
    here = os.path.realpath(os.path.dirname(__file__))
    there = os.path.realpath(os.path.dirname(getattr(loaded, "__file__", None) or ""))
    if here != there:
        raise ImportError(f"two copies of ZSVR are installed: {there} is already loaded and {here} would replace "
                          "its nodes. Remove or disable one of them (rename its folder to end in .disabled).")


if __name__ != PACK_NAME:
    _register_as_zsvr()


async def comfy_entrypoint():
    """V3 entry point: ComfyUI calls this and registers the returned extension's nodes."""
    return importlib.import_module(PACK_NAME + ".nodes.extension").ZSVRExtension()
