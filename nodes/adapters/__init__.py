"""Architecture adapters: where each model family keeps its attention (DESIGN.md principle 4).

A patch node asks :func:`adapter_for` and never checks model classes itself.
"""

from __future__ import annotations

from ...kernels.errors import InputError
from .cogvideox import CogVideoXAdapter
from .hunyuan_video import HunyuanVideoAdapter
from .wan import WanAdapter

ADAPTERS = [WanAdapter, HunyuanVideoAdapter, CogVideoXAdapter]


def adapter_for(model_patcher, input_name: str = "model"):
    diffusion_model = getattr(model_patcher.model, "diffusion_model", None)
    for adapter in ADAPTERS:
        if adapter.matches(diffusion_model):
            return adapter()
    supported = ", ".join(a.family for a in ADAPTERS)
    raise InputError(input_name, f"is a {type(diffusion_model).__name__}, which ZSVR attention switching does not "
                     f"support", f"use one of: {supported}")
