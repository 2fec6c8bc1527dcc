"""CogVideoX as a ComfyUI model: a ``BaseModel`` whose diffusion model is diffusers' transformer.

ComfyUI 0.3.64 has no CogVideoX of its own, so diffusers'
``CogVideoXTransformer3DModel`` is wrapped in ComfyUI's model objects instead of
being re-implemented:

* :class:`CogVideoXDiT` (the ``diffusion_model``) takes ComfyUI's
  ``(x [B, C, T, H, W], timestep, context, transformer_options)`` and calls
  diffusers with ``hidden_states`` [B, T, C, H, W], ``encoder_hidden_states=context``
  and the timestep, plus the rotary embeddings the diffusers pipeline would
  compute (5b / 1.5 only). ComfyUI's ``transformer_options`` of the call reach
  the attention processors through diffusers' ``attention_kwargs``
  (:data:`~.cogvideox.OPTIONS_KWARG`).
* :class:`CogVideoXModel` (the ``BaseModel``) fits every prompt to the model's
  text length, so ComfyUI batches prompts without repeating tokens.
* :func:`use_comfy_ops` switches the transformer's Linear / Conv / LayerNorm /
  GroupNorm modules to ComfyUI's cast-on-the-fly op classes, which compute
  exactly like torch's when fully loaded; ComfyUI's model management (load and
  offload devices, manual casting, partial low-VRAM loading) then applies as to
  its own models.

Text: CogVideoX was trained on T5 v1.1 XXL embeddings of exactly 226 tokens
[1, 226, 4096]: the prompt, ``</s>``, then pad tokens, with *no* attention mask
in the encoder. ComfyUI's loaders give: ``sd3`` (T5 only) 77 tokens, unmasked;
``mochi`` 256 masked; ``ltxv`` 128 masked. The exact match is ``CLIPLoader``
(t5xxl_fp16 / t5xxl_fp8 file, type ``sd3``) -> core ``T5TokenizerOptions``
(min_padding 0, min_length 226) -> ``CLIPTextEncode``. Anything else still runs:
:func:`fit_text` zero-pads or truncates (with a warning) to 226 tokens, which
CogVideoX-2b's positional embedding requires, at some cost in fidelity.
"""

from __future__ import annotations

import logging

import torch

import comfy.conds
import comfy.ldm.common_dit
import comfy.model_base
import comfy.patcher_extension

from ...kernels.cogvideox_rope import crop_region
from ..errors import InputError
from .cogvideox import OPTIONS_KWARG

log = logging.getLogger("zsvr")


def fit_text(context: torch.Tensor, length: int) -> torch.Tensor:
    """Zero-pad or truncate text embeddings [B, L, D] to ``length`` tokens (CogVideoX trains on 226)."""
    have = context.shape[1]
    if have == length:
        return context
    if have > length:
        log.warning("ZSVR CogVideoX: the text conditioning has %d tokens; using the first %d (CogVideoX's "
                    "max_text_seq_length)", have, length)
        return context[:, :length]
    return torch.nn.functional.pad(context, (0, 0, 0, length - have))


class CogVideoXDiT(torch.nn.Module):
    """ComfyUI-facing diffusion model around diffusers' ``CogVideoXTransformer3DModel``.

    The transformer's attention processors are the adapter's (the loader installs them with
    :meth:`~.cogvideox.CogVideoXAdapter.install_processors` before wrapping it).
    """

    def __init__(self, transformer, dtype: torch.dtype):
        super().__init__()
        self.transformer = transformer
        self.dtype = dtype
        self._rope_cache: dict = {}

    def forward(self, x, timestep, context=None, control=None, transformer_options={}, **kwargs):
        return comfy.patcher_extension.WrapperExecutor.new_class_executor(
            self._forward, self,
            comfy.patcher_extension.get_all_wrappers(comfy.patcher_extension.WrappersMP.DIFFUSION_MODEL,
                                                     transformer_options),
        ).execute(x, timestep, context, control, transformer_options, **kwargs)

    def _forward(self, x, timestep, context, control, transformer_options, **kwargs):
        cfg = self.transformer.config
        if context is None:
            raise RuntimeError("ZSVR CogVideoX: the model was called without text conditioning")
        batch, _, frames, height, width = x.shape
        p, p_t = cfg.patch_size, cfg.patch_size_t
        if p_t is not None and frames % p_t:
            if (transformer_options or {}).get("context_window") is not None:
                raise InputError("model", f"runs core context windows of {frames} latent frames; this CogVideoX 1.5 "
                                 f"model needs a multiple of {p_t}",
                                 f"set the Context Windows node's context_length to a multiple of {p_t}")
            raise InputError("latent", f"has {frames} latent frames; this CogVideoX 1.5 model needs a multiple of {p_t}",
                             "use a frame count of 8k+5 (e.g. 85 frames -> 22 latent frames)")
        x = comfy.ldm.common_dit.pad_to_patch_size(x, (1, p, p))
        self._buffers_to(x.device)
        rotary = self._rotary(x.shape[2], x.shape[3], x.shape[4], x.device) \
            if cfg.use_rotary_positional_embeddings else None
        timestep = timestep.reshape(-1)
        if timestep.shape[0] != batch:
            timestep = timestep.expand(batch)
        out = self.transformer(
            hidden_states=x.movedim(1, 2), encoder_hidden_states=fit_text(context, cfg.max_text_seq_length),
            timestep=timestep, image_rotary_emb=rotary, attention_kwargs={OPTIONS_KWARG: transformer_options},
            return_dict=False,
        )[0]
        return out.movedim(2, 1)[:, :, :frames, :height, :width]

    def _buffers_to(self, device) -> None:
        # buffers of non-leaf modules (the sincos position table) are not moved by ComfyUI's partial loading
        for module in self.transformer.modules():
            for name, buf in list(module._buffers.items()):
                if buf is not None and buf.device != device:
                    module._buffers[name] = buf.to(device)

    def _rotary(self, frames: int, height: int, width: int, device):
        key = (frames, height, width, str(device))
        if key not in self._rope_cache:
            from diffusers.models.embeddings import get_3d_rotary_pos_embed

            cfg = self.transformer.config
            p = cfg.patch_size
            grid = (height // p, width // p)
            base_w, base_h = cfg.sample_width // p, cfg.sample_height // p
            if cfg.patch_size_t is None:  # CogVideoX 1.0 (5b)
                rope = get_3d_rotary_pos_embed(embed_dim=cfg.attention_head_dim, crops_coords=crop_region(grid, base_w, base_h),
                                               grid_size=grid, temporal_size=frames, device=device)
            else:  # CogVideoX 1.5
                rope = get_3d_rotary_pos_embed(embed_dim=cfg.attention_head_dim, crops_coords=None, grid_size=grid,
                                               temporal_size=(frames + cfg.patch_size_t - 1) // cfg.patch_size_t,
                                               grid_type="slice", max_size=(base_h, base_w), device=device)
            self._rope_cache.clear()
            self._rope_cache[key] = rope
        return self._rope_cache[key]


class CogVideoXModel(comfy.model_base.BaseModel):
    """ComfyUI BaseModel whose diffusion model is :class:`CogVideoXDiT`."""

    def __init__(self, model_config, diffusion_model: CogVideoXDiT, model_sampling, model_type, device=None):
        super().__init__(model_config, model_type, device=device)
        self.diffusion_model = diffusion_model
        self.model_sampling = model_sampling
        self.text_length = int(diffusion_model.transformer.config.max_text_seq_length)

    def extra_conds(self, **kwargs):
        out = super().extra_conds(**kwargs)
        cross_attn = kwargs.get("cross_attn", None)
        if cross_attn is not None:
            # one token count for every prompt, so ComfyUI batches them without repeating tokens
            out["c_crossattn"] = comfy.conds.CONDCrossAttn(fit_text(cross_attn, self.text_length))
        return out


def use_comfy_ops(module: torch.nn.Module, ops) -> None:
    """Switch torch layers to ComfyUI's op classes (same math; adds cast-on-the-fly for low VRAM)."""
    swap = {torch.nn.Linear: ops.Linear, torch.nn.Conv2d: ops.Conv2d, torch.nn.Conv3d: ops.Conv3d,
            torch.nn.LayerNorm: ops.LayerNorm, torch.nn.GroupNorm: ops.GroupNorm}
    for m in module.modules():
        new = swap.get(type(m))
        if new is not None:
            m.__class__ = new
