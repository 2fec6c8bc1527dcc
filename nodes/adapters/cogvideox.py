"""CogVideoX adapter (the diffusers ``CogVideoXTransformer3DModel`` wrapped by ``ZSVR_LoadCogVideoX``).

CogVideoX runs full joint attention over [text tokens, video tokens] in every
block. ZSVD's switch in such a block (Varanka et al., WACV 2026, sec. 3.3):
the remove pass's *video* queries attend to [the null pass's text keys/values
at the same block, their own video keys/values], while the remove pass's
*text* queries keep their own keys and values. Keys are taken after the
per-head key LayerNorm; CogVideoX applies RoPE (5b, 1.5) to the video part of
queries and keys only, never to text tokens, so the cached text keys carry no
position (diffusers ``CogVideoXAttnProcessor2_0`` rotates ``[:, :, text_len:]``).

How it is reached (no diffusers forward is copied or monkey-patched): the
loader installs a :class:`SwitchProcessor` as every block's diffusers
attention processor (:meth:`CogVideoXAdapter.install_processors`). It is diffusers' own extension point; ComfyUI's
``transformer_options`` of the current call reach it through diffusers'
``attention_kwargs`` (the wrapper passes ``{OPTIONS_KWARG: transformer_options}``,
which every ``CogVideoXBlock`` forwards to its ``attn1``), so nothing is
stored on shared objects. Under ComfyUI every block computes its attention
with the host's attention backend (see :class:`SwitchProcessor`); called
without ComfyUI's options it is diffusers' stock processor. In a switched
block the remove pass costs two attention calls over the same keys (the few
text queries, then the video queries), never a second full attention.

Which blocks switch, and when, is per MODEL clone: ``ZSVR_AttentionSwitch``
stores the clone's :class:`~..switch_protocol.SwitchSettings` under
:data:`~..switch_protocol.SWITCH_KEY` in its ``transformer_options`` (ComfyUI
copies those options into every call), and each processor asks
:func:`~..switch_protocol.switched_role` for its block; the null pass leaves
its text keys/values in the step's pass cache under ``(FAMILY_MARK, block)``.

Core context windows (dim 2) hand the wrapper one window of latent frames per
call; the wrapper computes its positions (sincos table or RoPE) for the
window's length, as for any shorter clip. The text keys/values of a block
depend on the window's video tokens (joint attention), and the pass cache is
keyed by the window (``switch_protocol.window_key``), so each window's remove
pass reads its own window's null values.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .. import switch_protocol as protocol
from .capabilities import Capabilities

OPTIONS_KWARG = "zsvr_options"
"""diffusers ``attention_kwargs`` key under which the wrapper passes ComfyUI's ``transformer_options``."""
FAMILY_MARK = "cogvideox"
"""The family part of the pass-cache keys."""


class CogVideoXAdapter:
    family = "CogVideoX (ZSVR Load CogVideoX)"
    capabilities = Capabilities(text_key_switch=True, frame_axis="time", self_attention_patch=False,
                                latent_is_video=True, context_windows=True)
    pooled_text_encoder = None
    """CogVideoX needs no pooled text vector."""
    switch_help = family
    """No block numbering notes: the switch's tooltip names the family."""

    @staticmethod
    def matches(diffusion_model) -> bool:
        # imported here: cogvideox_model imports ComfyUI and this module, which must load without either
        from .cogvideox_model import CogVideoXDiT

        return isinstance(diffusion_model, CogVideoXDiT)

    @staticmethod
    def num_blocks(model_patcher) -> int:
        return len(model_patcher.model.diffusion_model.transformer.transformer_blocks)

    @staticmethod
    def install_processors(transformer, attention=None) -> None:
        """Give every block of diffusers' ``CogVideoXTransformer3DModel`` a :class:`SwitchProcessor` (the loader
        calls this once). ``attention`` is the backend of calls made under ComfyUI; default :func:`host_attention`.
        Installing again keeps the original diffusers processor as the stock one."""
        for index, block in enumerate(transformer.transformer_blocks):
            stock = block.attn1.processor
            if isinstance(stock, SwitchProcessor):
                stock = stock.stock
            block.attn1.set_processor(SwitchProcessor(index, stock, attention=attention or host_attention))

    def install_switch(self, model_patcher, blocks: list[int], is_active) -> None:
        """Nothing to patch: every block's processor (installed by the loader) already reads the switch settings
        ``ZSVR_AttentionSwitch`` stores in the clone's ``transformer_options`` under ``SWITCH_KEY``."""


def host_attention(q, k, v, transformer_options):
    """ComfyUI's optimized attention on [B, heads, L, head_dim]: the backend the host was started with
    (SDPA, ``--use-sage-attention``, ``--use-flash-attention``, ...) and any ``optimized_attention_override``
    in the call's ``transformer_options``. ComfyUI is imported on use, so this module loads without it."""
    import comfy.ldm.modules.attention as comfy_attention

    return comfy_attention.optimized_attention(q, k, v, q.shape[1], skip_reshape=True, skip_output_reshape=True,
                                               transformer_options=transformer_options)


def sdpa(q, k, v, options=None):
    """Plain SDPA in [B, heads, L, head_dim] (the attention used without a host backend, e.g. in bench/)."""
    return F.scaled_dot_product_attention(q, k, v, attn_mask=None, dropout_p=0.0, is_causal=False)


class SwitchProcessor:
    """A diffusers attention processor for one CogVideoX block (index ``block``).

    ``stock`` is diffusers' ``CogVideoXAttnProcessor2_0``; calls that carry no
    ComfyUI options (diffusers used directly) go to it untouched.
    ``attention(q, k, v, options)`` is the attention backend for calls that
    do ([B, heads, L, head_dim] in and out); the loader installs :func:`host_attention`,
    ComfyUI's ``optimized_attention``, so the host's choice (``--use-sage-attention``,
    ``--use-flash-attention``, SDPA) and any ``optimized_attention_override``
    in ``transformer_options`` (a user's attention patch) apply to CogVideoX
    too, switched blocks included. Default: :func:`sdpa`.

    Cost in a switched block of the remove pass: the projections once, then
    two attention calls over the same key sequence, the 226 text queries with
    the pass's own text keys/values and the video queries with the null pass's;
    the null text keys/values are written into the key/value tensors in place
    between the two calls, so nothing of video length is copied.
    """

    def __init__(self, block: int, stock, attention=sdpa):
        self.block = block
        self.stock = stock
        self.attention = attention

    def __call__(self, attn, hidden_states, encoder_hidden_states, attention_mask=None, image_rotary_emb=None,
                 zsvr_options=None):
        if zsvr_options is None or attention_mask is not None:
            return self.stock(attn, hidden_states, encoder_hidden_states, attention_mask=attention_mask,
                              image_rotary_emb=image_rotary_emb)
        options = zsvr_options
        text_len = encoder_hidden_states.shape[1]
        q, k, v = project_qkv(attn, hidden_states, encoder_hidden_states, image_rotary_emb)
        which = protocol.switched_role(options, self.block)
        if which is None:
            return project_out(attn, self.attention(q, k, v, options), text_len)
        key = (FAMILY_MARK, self.block)
        if which is protocol.Pass.NULL:
            # clone: a view would keep this pass's whole video-length keys/values alive until the remove pass
            protocol.cache_values(options)[key] = (k[:, :, :text_len].clone(), v[:, :, :text_len].clone())
            return project_out(attn, self.attention(q, k, v, options), text_len)
        k_txt, v_txt = (t.to(device=k.device, dtype=k.dtype) for t in protocol.null_values(options, key))
        if k_txt.shape[0] not in (1, k.shape[0]):
            raise RuntimeError(f"ZSVR CogVideoX switch: the null pass had batch {k_txt.shape[0]}, "
                               f"the remove pass {k.shape[0]}")
        out_txt = self.attention(q[:, :, :text_len], k, v, options)  # text queries: their own keys/values
        if k_txt.shape[2] == text_len:  # always under the loader, which fits every prompt to one length
            k[:, :, :text_len] = k_txt  # broadcasts a batch-1 null pass over the remove rows
            v[:, :, :text_len] = v_txt
        else:
            k = torch.cat((k_txt.expand(k.shape[0], -1, -1, -1), k[:, :, text_len:]), dim=2)
            v = torch.cat((v_txt.expand(v.shape[0], -1, -1, -1), v[:, :, text_len:]), dim=2)
        out_vid = self.attention(q[:, :, text_len:], k, v, options)  # video queries: null text, own video
        return _project(attn, out_vid), _project(attn, out_txt)


def project_qkv(attn, hidden_states, encoder_hidden_states, image_rotary_emb=None):
    """Queries, keys, values [B, heads, text + video, head_dim] of a CogVideoX block's joint attention.

    CogVideoX attends over one joint sequence, text first (Yang et al., ICLR 2025,
    sec. 2.2, "3D full attention"). With ``c`` the text states, ``z`` the video
    states and ``split`` cutting the channels into ``heads`` heads:

        x = [c; z]
        Q = RoPE_z(LN_q(split(x W_q)))      K = RoPE_z(LN_k(split(x W_k)))      V = split(x W_v)

    ``LN_q`` / ``LN_k`` are per-head LayerNorms over ``head_dim`` (the module's
    ``norm_q`` / ``norm_k``; absent in a model built without QK norm) and ``RoPE_z``
    rotates the video rows only, by the 3-D rotary embedding ``image_rotary_emb``
    (5b, 1.5; RoFormer eq. 34): text tokens carry no position. The weights are
    the attention module's own ``to_q`` / ``to_k`` / ``to_v``; the rotation is
    diffusers' ``apply_rotary_emb``, the one the embedding was made for.
    """
    text_len = encoder_hidden_states.shape[1]
    joint = torch.cat((encoder_hidden_states, hidden_states), dim=1)  # x = [c; z]

    def projected(linear, norm):
        per_head = _split_heads(linear(joint), attn.heads)
        return per_head if norm is None else norm(per_head)

    q = _rotate_video(projected(attn.to_q, attn.norm_q), text_len, image_rotary_emb)
    k = _rotate_video(projected(attn.to_k, attn.norm_k), text_len, image_rotary_emb)
    v = projected(attn.to_v, None)
    return q, k, v


def _split_heads(x, heads: int):
    """[B, L, heads * head_dim] -> [B, heads, L, head_dim]."""
    return x.unflatten(-1, (heads, -1)).transpose(1, 2)


def _rotate_video(x, text_len: int, rotary):
    """``x`` [B, heads, text + video, head_dim] with its video rows rotated by ``rotary`` (None: unchanged).

    In place: ``x`` is always a tensor this call made, and a copy would cost a video-length tensor."""
    if rotary is None:
        return x
    from diffusers.models.embeddings import apply_rotary_emb

    video = x[:, :, text_len:]
    video.copy_(apply_rotary_emb(video, rotary))
    return x


def _project(attn, out):
    """Output projection of an attention result [B, heads, L, head_dim] -> [B, L, dim]."""
    batch, heads, length, head_dim = out.shape
    out = out.transpose(1, 2).reshape(batch, length, heads * head_dim)
    return attn.to_out[1](attn.to_out[0](out))


def project_out(attn, out, text_len: int):
    """Output projection of the joint attention result; returns (video, text) like diffusers' processor."""
    out = _project(attn, out)
    return out[:, text_len:], out[:, :text_len]
