"""Train the image test bed: a tiny SD1.5-family U-Net learns clean frames under the null prompt and rainy ones under "rain".

What it is for: SW-CFA, SLR, noise sharing and early stop patch only image U-Nets (the SD
family, frames as the batch), so the Wan test bed (:mod:`testbed.train`) cannot measure them.
This trains the smallest U-Net that ComfyUI's loaders still detect as ``SD15``, on the same
data, so ``bench/bench_testbed_image.py`` can ask whether those patches lower flicker.

Model: ComfyUI's own ``UNetModel`` built by ``comfy.supported_models.SD15`` from
:data:`UNET_CONFIG`. SD15 detection fixes ``model_channels`` 320, ``context_dim`` 768 and
non-linear transformer projections; everything else is read from the weights, so the
network has one level (``channel_mult [1]``, no down/upsampling), one res block with one
transformer (depth 1) in the input level, two output blocks each with a res block and a
transformer, and **no middle block** (``transformer_depth_middle -2``): three
self-attention layers, about 18.7 M parameters (37 MB as fp16; 320 channels are the floor,
so it cannot be "a few MB"). ``UNETLoader`` detects the saved file as ``SD15`` (EPS,
1000-step scaled-linear betas 0.00085..0.012, ``latent_formats.SD15``).

"Latent" (exact, no VAE): SD15 latents have 4 channels and an ``in_channels`` above 4 would
make ComfyUI treat the U-Net as an inpainting model, so each 32x32 frame is reduced to its
luma ``Y = 0.299 R + 0.587 G + 0.114 B`` (BT.601), normalised with the training frames'
luma mean and std, and pixel-unshuffled 2x2 to ``[4, 16, 16]``; the video's frames are the
batch. ``from_model_space(to_model_space(x))`` is the luma of ``x`` up to float rounding.
Colour is the price (the bench measures everything on luma). A graph's LATENT is the model
space passed through ``latent_formats.SD15().process_out`` (divided by 0.18215), because the
samplers apply ``process_in`` before the model sees it (as :mod:`testbed.latent` does for Wan).

Objective: eps prediction on ComfyUI's SD15 sampling: a uniform timestep ``t`` in 0..999,
``sigma = model_sampling.sigmas[t]``, ``x = x0 + sigma * eps``, the network is called on
``model_sampling.calculate_input(sigma, x)`` (= ``x / sqrt(sigma^2 + 1)``, the DDPM
``x_t``) at ``model_sampling.timestep(sigma)`` (= ``t``) and regresses ``eps``.

Labels (as the Wan bed): each step draws ``pairs`` random training clips
(:func:`testbed.clips.random_train_spec`: the first three quarters of each sample video,
never a held-out frame), takes one random frame of each and renders fresh rain over it
(:mod:`testbed.rain`); the clean frame is trained under the null prompt and its rainy twin
under "rain" with the same noise and timestep, so the null prompt never sees rain. The
prompts are two fixed random ``[8, 768]`` token embeddings (seeded, saved beside the
weights) standing in for CLIP-L.

Training: AdamW (lr 4e-4, betas 0.9/0.99, weight decay 0.01, 50 warm-up steps, cosine to
10 % over the wall-clock budget), gradient clipping at 1, an EMA of the weights (decay
ramped to 0.99, short runs have few steps), fixed seeds, one CPU thread; every 10 steps a
line of ``loss_log.jsonl``; the EMA weights (fp16 safetensors) and ``testbed_image.json``
(the latent's normalisation, prompts file, config, parameter count and what the run
reached) are written every few minutes and at the end.

Initialisation (ComfyUI's layers skip it): matrices and kernels N(0, 1/fan_in), norm
scales 1, biases 0, and the layers the SD code zero-initialises (each res block's last
conv, each transformer's ``proj_out``, the output conv) at zero, so the first prediction
is eps = 0.

Command (from ``bench/``, with ``COMFYUI_PATH`` set; 2 min = a smoke run)::

    COMFYUI_PATH=/path/to/ComfyUI python -m testbed.train_image --budget-min 30

The budget is wall-clock time, so another (or a quieter) machine reaches a different step
count; the seeds fix the data and noise stream of each step.
"""

from __future__ import annotations

import argparse
import json
import math
import pathlib
import sys
import time

import torch

from .train import import_comfy
from .training import prompt_embeddings as fixed_prompts

HERE = pathlib.Path(__file__).resolve().parent
MODEL_DIR = HERE / "image_model"
WEIGHTS = "zsvr_testbed_sd15_unet.safetensors"
PROMPTS = "prompts.safetensors"
META = "testbed_image.json"
LOG = "loss_log.jsonl"
TOKENS = 8
TEXT_DIM = 768
PROMPT_SEEDS = {"null": 3003, "rain": 4004}
LUMA = (0.299, 0.587, 0.114)
CHANNELS = 4

UNET_CONFIG = {
    "use_checkpoint": False, "image_size": 32, "use_spatial_transformer": True, "legacy": False,
    "adm_in_channels": None, "in_channels": CHANNELS, "out_channels": CHANNELS, "model_channels": 320,
    "num_res_blocks": [1], "transformer_depth": [1], "transformer_depth_output": [1, 1], "channel_mult": [1],
    "transformer_depth_middle": -2, "use_linear_in_transformer": False, "context_dim": TEXT_DIM,
    "use_temporal_resblock": False, "use_temporal_attention": False,
}


# ---------------------------------------------------------------- the exact luma "latent"

def luma(pixels: torch.Tensor) -> torch.Tensor:
    """RGB ``[..., 3, H, W]`` in [0, 1] to luma ``[..., 1, H, W]`` (BT.601 weights)."""
    w = torch.as_tensor(LUMA, dtype=pixels.dtype).view(3, 1, 1)
    return (pixels * w).sum(dim=-3, keepdim=True)


def gray3(pixels: torch.Tensor) -> torch.Tensor:
    """RGB (or luma) ``[..., C, H, W]`` to its luma repeated to 3 channels (what the metrics and IMAGE inputs take)."""
    y = luma(pixels) if pixels.shape[-3] == 3 else pixels
    return y.expand(*y.shape[:-3], 3, *y.shape[-2:]).contiguous()


def training_luma_stats() -> tuple[float, float]:
    """Mean and std of the luma of every training frame at every training height: the latent's normalisation."""
    from . import clips

    total = square = 0.0
    count = 0
    for video in clips.VIDEOS:
        for height in clips.TRAIN_HEIGHTS:
            frames = clips.load_frames(video, height)
            train, _ = clips.frame_ranges(frames.shape[0])
            y = luma(frames[train.start:train.stop].double() / 255.0)
            total += float(y.sum())
            square += float(y.pow(2).sum())
            count += y.numel()
    mean = total / count
    return mean, math.sqrt(square / count - mean * mean)


def to_model_space(pixels: torch.Tensor, mean: float, std: float) -> torch.Tensor:
    """Frames ``[N, 3, H, W]`` (RGB) or ``[N, 1, H, W]`` (luma) in [0, 1] to model space ``[N, 4, H/2, W/2]``."""
    y = luma(pixels) if pixels.shape[1] == 3 else pixels
    return torch.nn.functional.pixel_unshuffle((y - mean) / std, 2)


def from_model_space(z: torch.Tensor, mean: float, std: float) -> torch.Tensor:
    """The inverse of :func:`to_model_space`: ``[N, 4, h, w]`` to luma ``[N, 1, 2h, 2w]`` (not clamped)."""
    return torch.nn.functional.pixel_shuffle(z, 2) * std + mean


def encode(pixels: torch.Tensor, mean: float, std: float, latent_format) -> dict:
    """Frames to the LATENT a graph starts from (``{"samples": latent_format.process_out(model space)}``)."""
    return {"samples": latent_format.process_out(to_model_space(pixels.float(), mean, std))}


def decode(latent, mean: float, std: float, latent_format) -> torch.Tensor:
    """A graph's LATENT (or its samples) back to luma frames ``[N, 1, H, W]`` (not clamped)."""
    samples = latent["samples"] if isinstance(latent, dict) else latent
    return from_model_space(latent_format.process_in(samples.float()), mean, std)


# ---------------------------------------------------------------- model and prompts

def build_model(seed: int):
    """A ``model_base.BaseModel`` (SD15, EPS) with :data:`UNET_CONFIG`, fp32, initialised as the docstring says."""
    supported = import_comfy()
    config = supported.SD15(dict(UNET_CONFIG))
    config.set_inference_dtype(torch.float32, None)
    model = config.get_model({})
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.diffusion_model.named_parameters():
            if name.startswith("out.2.") or ".out_layers.3." in name or ".proj_out." in name:
                p.zero_()
            elif p.dim() >= 2:
                p.copy_(torch.randn(p.shape, generator=gen) / math.sqrt(p[0].numel()))
            elif "norm" in name and name.endswith("weight") or name.startswith(("out.0.weight",)) \
                    or ".in_layers.0.weight" in name or ".out_layers.0.weight" in name:
                p.fill_(1.0)
            else:
                p.zero_()
    return model


def prompt_embeddings() -> dict[str, torch.Tensor]:
    """The two fixed prompts, ``{"null", "rain"}`` -> ``[TOKENS, TEXT_DIM]`` (seeded standard normal)."""
    return fixed_prompts(TOKENS, TEXT_DIM, PROMPT_SEEDS)


def read_meta(folder: pathlib.Path = MODEL_DIR) -> dict:
    """``testbed_image.json`` of a trained image model."""
    return json.loads((pathlib.Path(folder) / META).read_text())


def train_frames(gen: torch.Generator, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` random training frames and their rainy twins (fresh rain each), RGB ``[n, 3, 32, 32]`` in [0, 1]."""
    from . import clips, rain

    clean, rainy = [], []
    for _ in range(n):
        clip = clips.random_train_spec(gen).cut()
        frame = clip[int(torch.randint(clip.shape[0], (1,), generator=gen))]
        clean.append(frame)
        rainy.append(rain.add_rain(frame[None], gen)[0][0])
    return torch.stack(clean), torch.stack(rainy)


def main(argv=None) -> int:
    """Train for ``--budget-min`` minutes of wall time; write weights, prompts, meta and the loss log."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--budget-min", type=float, default=30.0)
    ap.add_argument("--pairs", type=int, default=4, help="clean/rainy frame pairs per step")
    ap.add_argument("--lr", type=float, default=4e-4)
    ap.add_argument("--ema", type=float, default=0.99, help="EMA decay (ramped up from 0.1)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=pathlib.Path, default=MODEL_DIR)
    ap.add_argument("--save-every-min", type=float, default=5.0)
    args = ap.parse_args(argv)

    from . import rain
    from .training import (LossLog, ema_copy, prompt_batch, save_ema, start_run, train_for_budget,
                           write_prompts)

    out = args.out
    t_start = start_run(args.seed, out)
    mean, std = training_luma_stats()
    model = build_model(args.seed)
    net = model.diffusion_model
    ms = model.model_sampling
    ema = ema_copy(net)
    prompts = prompt_embeddings()
    write_prompts(prompts, out / PROMPTS)
    meta = {
        "weights": WEIGHTS, "prompts": PROMPTS, "tokens": TOKENS, "prompt_seeds": PROMPT_SEEDS,
        "latent": "luma (BT.601) normalised, 2x2 pixel-unshuffle: [4, 16, 16] per 32x32 frame; frames are the batch",
        "luma_mean": mean, "luma_std": std, "unet_config": UNET_CONFIG, "detected_as": "SD15 (EPS)",
        "parameters": sum(p.numel() for p in net.parameters()),
        "train": {"pairs_per_step": args.pairs, "lr": args.lr, "seed": args.seed, "budget_min": args.budget_min,
                  "threads": 1, "ema_decay": args.ema, "rain_ranges": rain.TRAIN_RANGES,
                  "objective": "eps, uniform t in 0..999 of SD15 discrete scaled-linear schedule"},
    }
    opt = torch.optim.AdamW(net.parameters(), lr=args.lr, betas=(0.9, 0.99), weight_decay=0.01)
    gen = torch.Generator().manual_seed(args.seed + 1)
    ctx = prompt_batch(prompts, args.pairs)
    log = LossLog(out / LOG, every=10)

    def checkpoint(step: int, t_train: float, final: bool) -> None:
        save_ema(build_model(args.seed).diffusion_model, ema, out / WEIGHTS)
        record = dict(meta, train=dict(meta["train"], steps=step, frames_seen=2 * args.pairs * step,
                                       wall_min=round((time.time() - t_start) / 60, 2),
                                       train_min=round((time.time() - t_train) / 60, 2), final=final,
                                       last_losses=log.last, first_losses=log.first))
        (out / META).write_text(json.dumps(record, indent=1))

    def losses():
        clean, rainy = train_frames(gen, args.pairs)
        x0 = to_model_space(torch.cat([clean, rainy]), mean, std)
        eps = torch.randn(x0[: args.pairs].shape, generator=gen).repeat(2, 1, 1, 1)
        t = torch.randint(0, 1000, (args.pairs,), generator=gen).repeat(2)
        sigma = ms.sigmas[t].float()
        x = x0 + sigma.view(-1, 1, 1, 1) * eps
        pred = net(ms.calculate_input(sigma, x), ms.timestep(sigma).float(), ctx)
        per_frame = (pred - eps).pow(2).mean(dim=(1, 2, 3))
        return per_frame.mean(), per_frame[: args.pairs].mean(), per_frame[args.pairs:].mean()

    train_for_budget(args.budget_min, args.save_every_min, base_lr=args.lr, warmup=50, opt=opt, net=net, ema=ema,
                     ema_decay=args.ema, log=log, t_start=t_start, losses=losses, checkpoint=checkpoint)
    print((out / META).read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
