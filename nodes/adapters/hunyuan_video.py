"""HunyuanVideo adapter (ComfyUI's native ``HunyuanVideo``): joint attention.

HunyuanVideo attends over the concatenated sequence [video tokens, text tokens]
in its 20 double-stream and 40 single-stream blocks. ZSVD's switch in such a
block: the remove pass's *video* queries attend to [own video K/V, the null
pass's text K/V (and text attention mask) at the same block], while the
remove pass's *text* queries keep their own keys/values. Blocks are numbered
in execution order: double blocks 0..D-1, then single blocks D..D+S-1.

How it is reached (no forward is copied): a ``patches_replace["dit"]`` block
patch tags the chosen block's ``transformer_options`` with the block number
and the video-token count, and an ``optimized_attention_override`` (chained to
any override already installed, e.g. a user's Sage/Flash patch) does the
split attention for tagged calls: two attention calls (video queries, text
queries) over the same keys, never a second full attention.
"""

from __future__ import annotations

import torch

from .. import switch_protocol as protocol
from .capabilities import Capabilities

TAG_KEY = "zsvr_hunyuan_block"
IMG_LEN_KEY = "zsvr_hunyuan_img_len"
OVERRIDE_KEY = "optimized_attention_override"


class HunyuanVideoAdapter:
    family = "HunyuanVideo"
    capabilities = Capabilities(text_key_switch=True, frame_axis="time", self_attention_patch=False,
                                latent_is_video=True, context_windows=True)
    pooled_text_encoder = ("HunyuanVideo's text encoders: DualCLIPLoader with type hunyuan_video (clip_l and "
                           "llava_llama3) into CLIP Text Encode; the pooled vector comes from clip_l")
    """What gives the pooled text vector the model needs (``host.check_conditioning`` names it)."""
    switch_help = ("HunyuanVideo: double blocks first, then single blocks, numbered in execution order (the text "
                   "swap covers keys, values and the text mask, not the pooled CLIP vector)")

    @staticmethod
    def matches(diffusion_model) -> bool:
        try:
            from comfy.ldm.hunyuan_video.model import HunyuanVideo
        except ImportError:  # pragma: no cover
            return False
        return isinstance(diffusion_model, HunyuanVideo)

    @staticmethod
    def num_blocks(model_patcher) -> int:
        dm = model_patcher.model.diffusion_model
        return len(dm.double_blocks) + len(dm.single_blocks)

    def install_switch(self, model_patcher, blocks: list[int], is_active) -> None:
        n_double = len(model_patcher.model.diffusion_model.double_blocks)
        for index in blocks:
            kind, local = ("double_block", index) if index < n_double else ("single_block", index - n_double)
            model_patcher.set_model_patch_replace(_TagBlock(index, kind == "double_block"), "dit", kind, local)
        if any(i >= n_double for i in blocks) and 0 not in blocks:
            # single blocks see [video, text] as one stream: record the video length at double block 0
            model_patcher.set_model_patch_replace(_RecordImgLen(), "dit", "double_block", 0)
        options = model_patcher.model_options.setdefault("transformer_options", {})
        options[OVERRIDE_KEY] = SwitchAttention(options.get(OVERRIDE_KEY))


class _RecordImgLen:
    def __call__(self, args, extra):
        args["transformer_options"][IMG_LEN_KEY] = args["img"].shape[1]
        return extra["original_block"](args)


class _TagBlock:
    def __init__(self, index: int, double: bool):
        self.index = index
        self.double = double

    def __call__(self, args, extra):
        opts = args["transformer_options"]
        if self.double:
            opts[IMG_LEN_KEY] = args["img"].shape[1]
        img_len = opts.get(IMG_LEN_KEY)
        tagged = dict(opts)
        tagged[TAG_KEY] = (self.index, img_len)
        return extra["original_block"](dict(args, transformer_options=tagged))


class SwitchAttention:
    """``optimized_attention_override`` doing the ZSVD split in tagged blocks; chains to ``previous``.

    Which pass a call is and whether the switch acts now come from the clone's switch settings
    (``switch_protocol``); the override itself holds only the override it chains to."""

    def __init__(self, previous=None):
        self.previous = previous

    def _call(self, func, *args, **kwargs):
        if self.previous is not None:
            return self.previous(func, *args, **kwargs)
        return func(*args, **kwargs)

    def __call__(self, func, q, k, v, heads, *args, **kwargs):
        opts = kwargs.get("transformer_options") or {}
        tag = opts.get(TAG_KEY)
        if tag is None:
            return self._call(func, q, k, v, heads, *args, **kwargs)
        which = protocol.switched_role(opts, tag[0])
        if which is None:
            return self._call(func, q, k, v, heads, *args, **kwargs)
        block, img_len = tag
        if not kwargs.get("skip_reshape", False) or img_len is None:
            raise RuntimeError("ZSVR HunyuanVideo switch: unexpected attention layout")
        mask = kwargs.get("mask")
        key = ("hunyuan", block)
        if which is protocol.Pass.NULL:
            txt_mask = None if mask is None else mask[..., img_len:]
            protocol.cache_values(opts)[key] = (k[:, :, img_len:], v[:, :, img_len:], txt_mask)
            return self._call(func, q, k, v, heads, *args, **kwargs)
        k_txt, v_txt, null_mask = protocol.null_values(opts, key)
        k_img = torch.cat((k[:, :, :img_len], k_txt.to(k.dtype)), dim=2)
        v_img = torch.cat((v[:, :, :img_len], v_txt.to(v.dtype)), dim=2)
        img_mask = None
        if null_mask is not None:
            img_mask = torch.cat((torch.zeros_like(null_mask[..., :1]).expand(*null_mask.shape[:-1], img_len),
                                  null_mask), dim=-1)
        img_kwargs = dict(kwargs, mask=img_mask)
        out_img = self._call(func, q[:, :, :img_len], k_img, v_img, heads, *args, **img_kwargs)
        out_txt = self._call(func, q[:, :, img_len:], k, v, heads, *args, **kwargs)
        return torch.cat((out_img, out_txt), dim=1)
