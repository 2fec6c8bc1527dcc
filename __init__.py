"""ZSVR: zero-shot video restoration nodes for ComfyUI.

ComfyUI loads this file as the pack's entry point. It imports nothing from
ComfyUI at import time, so ``kernels/`` (pure torch/numpy) can be imported and
unit-tested without the host; the nodes are imported only when ComfyUI asks
for them through the V3 entry point below.
"""

__version__ = "0.1.0"


async def comfy_entrypoint():
    """V3 entry point: ComfyUI calls this and registers the returned extension's nodes."""
    from .nodes import ZSVRExtension

    return ZSVRExtension()
