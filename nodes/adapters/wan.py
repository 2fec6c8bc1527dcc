"""Wan 2.1 / 2.2 adapter (ComfyUI's native ``WanModel``).

Wan feeds one text embedding to every block's cross-attention and never
updates it, so ZSVD's attention switch in block b (Varanka et al., WACV 2026,
sec. 3.3: the remove path's text keys and values replaced by the null path's)
is exactly: run block b with the null path's text embedding in place of the
remove path's. No second attention pass is needed. The block is reached
through ComfyUI's ``patches_replace["dit"]`` ``("double_block", i)`` hook,
which hands the block its text as ``args["txt"]``.
"""

from __future__ import annotations

from .. import switch_protocol as protocol
from .capabilities import Capabilities


def _s2v_class():
    from comfy.ldm.wan import model

    return getattr(model, "WanModel_S2V", ())


class WanAdapter:
    family = "Wan 2.1/2.2 (WanModel)"
    capabilities = Capabilities(text_key_switch=True, frame_axis="time", self_attention_patch=False,
                                latent_is_video=True, context_windows=True)
    pooled_text_encoder = None
    """Wan needs no pooled text vector."""
    switch_help = "Wan 2.1/2.2: every block's cross-attention (patch both Wan 2.2 experts)"

    @staticmethod
    def matches(diffusion_model) -> bool:
        try:
            from comfy.ldm.wan.model import WanModel
        except ImportError:  # pragma: no cover - host without Wan
            return False
        # S2V's block hook passes no transformer_options, so the switch cannot see which pass a call is
        return isinstance(diffusion_model, WanModel) and not isinstance(diffusion_model, _s2v_class())

    @staticmethod
    def num_blocks(model_patcher) -> int:
        return len(model_patcher.model.diffusion_model.blocks)

    def install_switch(self, model_patcher, blocks: list[int], is_active) -> None:
        """Patch ``blocks`` of ``model_patcher`` (a clone) with the text switch (settings: ``SWITCH_KEY``)."""
        for index in blocks:
            model_patcher.set_model_patch_replace(_SwitchBlock(index), "dit", "double_block", index)


class _SwitchBlock:
    """Block replace: the null pass records its text, the remove pass runs the block on the null pass's text."""

    def __init__(self, index: int):
        self.index = index

    def __call__(self, args, extra):
        opts = args.get("transformer_options") or {}
        which = protocol.switched_role(opts, self.index)
        key = ("wan", self.index)
        if which is protocol.Pass.NULL:
            protocol.cache_values(opts)[key] = args["txt"]
        elif which is protocol.Pass.REMOVE:
            args = dict(args, txt=protocol.null_values(opts, key).to(args["txt"].dtype))
        return extra["original_block"](args)
