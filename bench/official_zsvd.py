"""The official ZSVD schedule on diffusers' CogVideoX, re-created for its cost (issue 8, side (a)).

What the official ZSVD code does per video, as the issue describes it (its
source is not available here; this re-creates its *cost structure*, not its
file):

1. VAE encode of the clip (``AutoencoderKLCogVideoX``), latents times the
   VAE's ``scaling_factor``;
2. edit-friendly DDPM inversion over all 100 steps of the schedule, each step
   one transformer forward at batch 2 whose two rows are identical (null prompt
   on both sides of a classifier-free-guidance pair, guidance 3.5);
3. 60 editing steps (skip 40 of 100), each one forward at batch 2 (null row,
   remove row), in which the switched blocks (0-3 and 15-29 of 30) compute
   their whole joint attention twice: once normally for both rows, and once
   more with the remove row's text tokens replaced by the null row's, so that
   the remove row's video tokens see the null row's text keys/values
   (:class:`DoubledAttentionProcessor`); the second pass's video output of the
   remove row is kept;
4. VAE decode.

The step arithmetic uses diffusers' ``CogVideoXDDIMScheduler`` tables
(``alphas_cumprod`` with CogVideoX-2b's SNR shift and zero-terminal-SNR
rescale, trailing timesteps) with the hybrid rule the pack calls ``zsvd``:
DDIM mean plus DDPM-posterior-sized noise. It is a few element-wise ops per
step and does not matter for the cost. Text encoding is not part of it (random
[1, 226, 4096] embeddings stand in for T5), exactly as on the pack's side.

The module imports neither ComfyUI nor the pack, so tests can check the
doubled-attention processor against the pack's ``SwitchProcessor``.
"""

from __future__ import annotations

import time

import torch

NULL_ROW, REMOVE_ROW = 0, 1
EDIT_KWARG = "official_edit"
DEFAULT_BLOCKS = "0-3,15-29"


def parse_blocks(spec: str, num_blocks: int) -> list[int]:
    """'0-3,15-29' / 'all' / 'none' or '' -> sorted block indices (checked against ``num_blocks``)."""
    spec = spec.strip().lower()
    if spec in ("", "none"):
        return []
    if spec == "all":
        return list(range(num_blocks))
    blocks = set()
    for part in spec.split(","):
        lo, _, hi = part.strip().partition("-")
        first, last = int(lo), int(hi or lo)
        if not 0 <= first <= last < num_blocks:
            raise ValueError(f"blocks '{part}' is outside 0-{num_blocks - 1}")
        blocks.update(range(first, last + 1))
    return sorted(blocks)


class DoubledAttentionProcessor:
    """A diffusers CogVideoX attention processor with the official switch's cost: full attention twice.

    ``stock`` is diffusers' own ``CogVideoXAttnProcessor2_0``. Outside the edit
    (no ``official_edit=True`` in ``attention_kwargs``), or in a block that is
    not switched, it is called once, unchanged. In a switched block during the
    edit, the batch must be [null row, remove row]: the stock processor runs on
    it as is, then once more with the remove row's text hidden states replaced
    by the null row's (so its text keys/values are the null row's after the
    same projection and key norm; text tokens carry no RoPE). The remove row's
    video output comes from the second pass, everything else from the first.
    """

    def __init__(self, stock, switched: bool):
        self.stock = stock
        self.switched = switched

    def __call__(self, attn, hidden_states, encoder_hidden_states, attention_mask=None, image_rotary_emb=None,
                 official_edit=False):
        video, text = self.stock(attn, hidden_states, encoder_hidden_states, attention_mask=attention_mask,
                                 image_rotary_emb=image_rotary_emb)
        if not (official_edit and self.switched):
            return video, text
        if hidden_states.shape[0] != 2:
            raise RuntimeError("official switch: the edit batch must be [null row, remove row]")
        swapped_text = encoder_hidden_states.clone()
        swapped_text[REMOVE_ROW] = encoder_hidden_states[NULL_ROW]
        video_switched, _ = self.stock(attn, hidden_states, swapped_text, attention_mask=attention_mask,
                                       image_rotary_emb=image_rotary_emb)
        video = video.clone()
        video[REMOVE_ROW] = video_switched[REMOVE_ROW]
        return video, text


def install(transformer, blocks) -> None:
    """Give every block of ``transformer`` a :class:`DoubledAttentionProcessor` (switched in ``blocks``)."""
    chosen = set(blocks)
    for index, block in enumerate(transformer.transformer_blocks):
        stock = block.attn1.processor
        if isinstance(stock, DoubledAttentionProcessor):
            stock = stock.stock
        block.attn1.set_processor(DoubledAttentionProcessor(stock, index in chosen))


def make_scheduler(config: dict):
    from diffusers import CogVideoXDDIMScheduler

    keys = ("beta_start", "beta_end", "beta_schedule", "clip_sample", "num_train_timesteps", "prediction_type",
            "rescale_betas_zero_snr", "set_alpha_to_one", "snr_shift_scale", "steps_offset", "timestep_spacing")
    return CogVideoXDDIMScheduler(**{k: config[k] for k in keys if k in config})


class Clock:
    """Wall time with the device synchronised at each reading."""

    def __init__(self, device: torch.device):
        self.device = torch.device(device)

    def __call__(self) -> float:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        return time.perf_counter()


def _v_to_x0_eps(x, v, a, b):
    """x = a x0 + b eps with a^2 + b^2 = 1 and v = a eps - b x0."""
    return a * x - b * v, b * x + a * v


@torch.inference_mode()
def run_official(transformer, vae, video, null_text, remove_text, scheduler_config: dict, *, steps=100, skip=40,
                 strength=15.0, inversion_guidance=3.5, blocks=(), seed=0, switch_repeats=3) -> dict:
    """Run the official schedule once; returns seconds per phase and per-step figures.

    ``video`` is [1, 3, F, H, W] in -1..1 on the device in the VAE's dtype;
    ``null_text`` / ``remove_text`` are [1, L, D] in the transformer's dtype.
    """
    device = video.device
    clock = Clock(device)
    install(transformer, blocks)
    scheduler = make_scheduler(scheduler_config)
    scheduler.set_timesteps(steps, device="cpu")
    timesteps = [int(t) for t in scheduler.timesteps]
    abar = scheduler.alphas_cumprod.to(torch.float64)
    final = float(scheduler.final_alpha_cumprod)
    levels = [float(abar[t]) for t in timesteps] + [final]  # abar before step i, and after the last step
    scale = float(vae.config.scaling_factor)
    gen = torch.Generator(device).manual_seed(seed)
    dtype = next(transformer.parameters()).dtype
    out = {"steps": steps, "skip": skip, "inversion_forwards": steps, "edit_forwards": steps - skip,
           "batch": 2, "switched_blocks": len(blocks)}

    def forward(x, text, t, edit):
        hidden = x.movedim(1, 2).to(dtype)  # [B, C, F, H, W] -> diffusers' [B, F, C, H, W]
        ts = torch.full((x.shape[0],), t, device=device, dtype=torch.long)
        pred = transformer(hidden_states=hidden, encoder_hidden_states=text, timestep=ts,
                           attention_kwargs={EDIT_KWARG: edit}, return_dict=False)[0]
        return pred.movedim(2, 1).float()

    def coeffs(i):
        a_t, a_prev = levels[i], levels[i + 1]
        var = (1 - a_prev) / max(1 - a_t, 1e-12) * (1 - a_t / max(a_prev, 1e-12))
        return a_t ** 0.5, (1 - a_t) ** 0.5, a_prev ** 0.5, (1 - a_prev) ** 0.5, max(var, 0.0) ** 0.5

    def mean(x, v, i):
        a, b, a_prev, b_prev, _ = coeffs(i)
        x0, eps = _v_to_x0_eps(x, v, a, b)
        return a_prev * x0 + b_prev * eps

    t0 = clock()
    x0 = vae.encode(video).latent_dist.mode().float() * scale
    t1 = clock()
    out["vae_encode_s"] = t1 - t0

    # inversion: noisy latents of every level from the clean one, then one batch-2 forward per step
    null2 = torch.cat((null_text, null_text))
    xs = [levels[i] ** 0.5 * x0 + (1 - levels[i]) ** 0.5 * torch.randn(x0.shape, generator=gen, device=device)
          for i in range(steps)] + [x0]
    zs = [None] * steps
    for i, t in enumerate(timesteps):
        x = xs[i]
        v_uncond, v_cond = forward(torch.cat((x, x)), null2, t, False).chunk(2)
        v = v_uncond + inversion_guidance * (v_cond - v_uncond)
        sigma = coeffs(i)[4]
        zs[i] = (xs[i + 1] - mean(x, v, i)) / sigma if sigma > 0 else torch.zeros_like(x)
    t2 = clock()
    out["inversion_s"] = t2 - t1

    # edit from the skip level: [null row, remove row], strength, switched blocks attend twice
    texts = torch.cat((null_text, remove_text))
    x = xs[skip]
    for i in range(skip, steps):
        v_null, v_remove = forward(torch.cat((x, x)), texts, timesteps[i], True).chunk(2)
        v = v_remove + strength * (v_null - v_remove)
        x = mean(x, v, i) + coeffs(i)[4] * zs[i]
    t3 = clock()
    out["edit_s"] = t3 - t2

    pixels = vae.decode((x / scale).to(video.dtype)).sample
    t4 = clock()
    out["vae_decode_s"] = t4 - t3
    out["output_shape"] = list(pixels.shape)
    out["output_finite"] = bool(torch.isfinite(pixels).all())
    del pixels, xs, zs

    # per-step cost of the official edit step vs a plain two-row CFG step (same batch, no second attention)
    xx = torch.cat((x, x))
    t_mid = timesteps[skip]
    timed = {}
    for name, edit in (("plain_cfg", False), ("switched", True)):
        forward(xx, texts, t_mid, edit)  # warm-up
        samples = []
        for _ in range(switch_repeats):
            start = clock()
            forward(xx, texts, t_mid, edit)
            samples.append(clock() - start)
        timed[name] = sorted(samples)[len(samples) // 2]
    out["plain_cfg_step_ms"] = timed["plain_cfg"] * 1000
    out["switched_edit_step_ms"] = timed["switched"] * 1000
    out["official_switch_overhead"] = timed["switched"] / timed["plain_cfg"]
    out["transformer_s"] = out["inversion_s"] + out["edit_s"]
    out["vae_s"] = out["vae_encode_s"] + out["vae_decode_s"]
    out["total_vae_excluded_s"] = out["transformer_s"]
    out["total_s"] = out["transformer_s"] + out["vae_s"]
    return out
