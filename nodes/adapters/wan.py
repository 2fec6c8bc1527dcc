"""Wan 2.1 / 2.2 adapter (ComfyUI's native ``WanModel``).

Wan feeds one text embedding to every block's cross-attention and never
updates it, so ZSVD's attention switch in block b (the remove path's text keys
and values replaced by the null path's) is exactly: run block b with the null
path's text embedding in place of the remove path's. No second attention pass
is needed. The block is reached through ComfyUI's ``patches_replace["dit"]``
``("double_block", i)`` hook, which hands the block its text as ``args["txt"]``.
"""

from __future__ import annotations

from ...kernels.errors import InputError

PASS_KEY = "zsvr_pass"
CACHE_KEY = "zsvr_switch_cache"


class WanAdapter:
    family = "Wan 2.1/2.2 (WanModel)"

    @staticmethod
    def matches(diffusion_model) -> bool:
        try:
            from comfy.ldm.wan.model import WanModel
        except ImportError:  # pragma: no cover - host without Wan
            return False
        # S2V's block hook passes no transformer_options, so the switch cannot see the rows there
        return isinstance(diffusion_model, WanModel) and type(diffusion_model).__name__ != "WanModel_S2V"

    @staticmethod
    def num_blocks(model_patcher) -> int:
        return len(model_patcher.model.diffusion_model.blocks)

    def install_switch(self, model_patcher, blocks: list[int], is_active) -> None:
        """Patch ``blocks`` of ``model_patcher`` (a clone) with the text switch."""
        for index in blocks:
            model_patcher.set_model_patch_replace(_SwitchBlock(index, is_active), "dit", "double_block", index)


class _SwitchBlock:
    def __init__(self, index: int, is_active):
        self.index = index
        self.is_active = is_active

    def __call__(self, args, extra):
        opts = args.get("transformer_options") or {}
        which = opts.get(PASS_KEY)
        cache = opts.get(CACHE_KEY)
        if which == "null":
            cache.values["txt"] = args["txt"]
        elif which == "remove":
            if self.is_active(opts):
                null_txt = cache.values.get("txt") if cache is not None else None
                if null_txt is None:
                    raise RuntimeError("ZSVR attention switch: the null pass did not run before the remove pass")
                args = dict(args, txt=null_txt.to(args["txt"].dtype))
        elif which != "inversion":
            raise InputError("model", "carries a ZSVR attention switch but is being sampled without the ZSVR "
                             "Negative Prompt Editor, which supplies the null path the switch reads",
                             "connect the switched model to ZSVR Negative Prompt Editor (or use the unswitched model)")
        return extra["original_block"](args)
