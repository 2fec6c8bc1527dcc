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
attention processor. It is diffusers' own extension point; ComfyUI's
``transformer_options`` of the current call reach it through diffusers'
``attention_kwargs`` (the wrapper passes ``{OPTIONS_KWARG: transformer_options}``,
which every ``CogVideoXBlock`` forwards to its ``attn1``), so nothing is
stored on shared objects. Under ComfyUI every block computes its attention
with the host's attention backend (see :class:`SwitchProcessor`); called
without ComfyUI's options it is diffusers' stock processor. In a switched
block the remove pass costs two attention calls over the same keys (the few
text queries, then the video queries), never a second full attention.

Which blocks switch, and when, is per MODEL clone: ``install_switch`` stores a
:class:`SwitchSettings` in the clone's ``model_options["transformer_options"]``
under :data:`SETTINGS_KEY` (ComfyUI copies those options into every call).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ...kernels.errors import InputError

PASS_KEY = "zsvr_pass"
CACHE_KEY = "zsvr_switch_cache"
SETTINGS_KEY = "zsvr_cogvideox_switch"
OPTIONS_KWARG = "zsvr_options"
FAMILY_MARK = "cogvideox"  # ``diffusion_model.zsvr_family`` of the loader's wrapper


class CogVideoXAdapter:
    family = "CogVideoX (ZSVR Load CogVideoX)"

    @staticmethod
    def matches(diffusion_model) -> bool:
        # a marker, not isinstance: ComfyUI imports the pack under its path, tests under an alias,
        # and the two copies have distinct classes
        return getattr(diffusion_model, "zsvr_family", None) == FAMILY_MARK

    @staticmethod
    def num_blocks(model_patcher) -> int:
        return len(model_patcher.model.diffusion_model.transformer.transformer_blocks)

    def install_switch(self, model_patcher, blocks: list[int], is_active) -> None:
        """Switch ``blocks`` of ``model_patcher`` (a clone) from the options its calls carry."""
        options = model_patcher.model_options.setdefault("transformer_options", {})
        options[SETTINGS_KEY] = SwitchSettings(blocks, is_active)


class SwitchSettings:
    """Which blocks switch and the schedule gate (an object: ComfyUI copies nested dicts only)."""

    def __init__(self, blocks, is_active):
        self.blocks = frozenset(int(b) for b in blocks)
        self.is_active = is_active


def sdpa(q, k, v, options=None):
    """Plain SDPA in [B, heads, L, head_dim] (the attention used without a host backend, e.g. in bench/)."""
    return F.scaled_dot_product_attention(q, k, v, attn_mask=None, dropout_p=0.0, is_causal=False)


class SwitchProcessor:
    """A diffusers attention processor for one CogVideoX block (index ``block``).

    ``stock`` is diffusers' ``CogVideoXAttnProcessor2_0``; calls that carry no
    ComfyUI options (diffusers used directly) go to it untouched.
    ``attention(q, k, v, options)`` is the attention backend for calls that
    do ([B, heads, L, head_dim] in and out); the loader passes ComfyUI's
    ``optimized_attention``, so the host's choice (``--use-sage-attention``,
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
        which = self._switch_role(options)
        if which is None:
            return project_out(attn, self.attention(q, k, v, options), text_len)
        cache = options[CACHE_KEY].values
        key = (FAMILY_MARK, self.block)
        if which == "null":
            # clone: a view would keep this pass's whole video-length keys/values alive until the remove pass
            cache[key] = (k[:, :, :text_len].clone(), v[:, :, :text_len].clone())
            return project_out(attn, self.attention(q, k, v, options), text_len)
        if key not in cache:
            raise RuntimeError("ZSVR attention switch: the null pass did not run before the remove pass")
        k_txt, v_txt = (t.to(device=k.device, dtype=k.dtype) for t in cache[key])
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

    def _switch_role(self, options):
        """'null' or 'remove' where this block switches in this call, else None (plain attention)."""
        settings = options.get(SETTINGS_KEY)
        if settings is None or self.block not in settings.blocks:
            return None
        which = options.get(PASS_KEY)
        if which not in ("null", "remove", "inversion"):
            raise InputError("model", "carries a ZSVR attention switch but is being sampled without the ZSVR "
                             "Negative Prompt Editor, which supplies the null path the switch reads",
                             "connect the switched model to ZSVR Negative Prompt Editor (or use the unswitched model)")
        if which == "inversion" or (which == "remove" and not settings.is_active(options)):
            return None
        return which


def project_qkv(attn, hidden_states, encoder_hidden_states, image_rotary_emb=None):
    """Queries, keys, values [B, heads, text + video, head_dim] of a CogVideoX joint attention.

    Same steps as diffusers' processor: joint sequence [text, video], q/k/v
    projections, per-head LayerNorm of q and k, RoPE on the video part only
    (in place: every tensor here is this call's own).
    """
    joint = torch.cat((encoder_hidden_states, hidden_states), dim=1)
    batch = joint.shape[0]
    text_len = encoder_hidden_states.shape[1]
    q, k, v = attn.to_q(joint), attn.to_k(joint), attn.to_v(joint)
    head_dim = k.shape[-1] // attn.heads
    q, k, v = (t.view(batch, -1, attn.heads, head_dim).transpose(1, 2) for t in (q, k, v))
    if attn.norm_q is not None:
        q = attn.norm_q(q)
    if attn.norm_k is not None:
        k = attn.norm_k(k)
    if image_rotary_emb is not None:
        from diffusers.models.embeddings import apply_rotary_emb

        q[:, :, text_len:] = apply_rotary_emb(q[:, :, text_len:], image_rotary_emb)
        if not attn.is_cross_attention:
            k[:, :, text_len:] = apply_rotary_emb(k[:, :, text_len:], image_rotary_emb)
    return q, k, v


def _project(attn, out):
    """Output projection of an attention result [B, heads, L, head_dim] -> [B, L, dim]."""
    batch, heads, length, head_dim = out.shape
    out = out.transpose(1, 2).reshape(batch, length, heads * head_dim)
    return attn.to_out[1](attn.to_out[0](out))


def project_out(attn, out, text_len: int):
    """Output projection of the joint attention result; returns (video, text) like diffusers' processor."""
    out = _project(attn, out)
    return out[:, text_len:], out[:, :text_len]
