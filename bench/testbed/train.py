"""Train the test bed: ComfyUI's own ``WanModel`` learns clean clips under the null prompt and rainy ones under "rain".

Model: ``comfy.supported_models.WAN21_T2V`` at dim 128 (one head of 128, the detection floor),
6 blocks, FFN 256, in/out 16 channels (about 1.9 M parameters), built by the host from the same
config ``UNETLoader`` will detect from the saved keys, so the trained file loads as
``WAN21_T2V`` (flow sampling, shift 8).

Objective: the rectified flow ComfyUI's WAN21 sampling assumes (``model_sampling`` CONST):
``x_t = (1 - s) x0 + s eps``, the network is called with timestep ``model_sampling.timestep(s)``
(= 1000 s) and regresses the velocity ``eps - x0`` (the host then denoises with
``x_t - s * v``).

Labels: each step draws ``pairs`` clean training clips and renders fresh rain over each
(:mod:`testbed.rain`); the clean clip is trained under the null prompt and its rainy twin
under "rain", with the same noise and the same noise level, so the only thing telling the
two prompts apart is the rain, and **the null prompt never sees rain**. Prompts are two fixed
random ``[8, 4096]`` token embeddings (seeded, saved beside the weights), standing in for
UMT5, which cannot be made tiny.

Noise levels: half of the pairs draw ``s`` uniformly in (0, 1), half draw a uniform step of
the host's own shifted schedule (``model_sampling.sigma`` of a uniform timestep), which is
where a 100-step edit with skip 10-40 spends its steps (sigma 0.99 down to 0).

Training: AdamW (lr 3e-4, 200 warm-up steps, cosine to 10 % over the time budget), gradient
clipping at 1, an EMA of the weights (decay 0.998, ramped), fixed seeds, one CPU thread, a
wall-clock budget; every 20 steps a line of ``loss_log.jsonl``; the EMA weights are written
(fp16 safetensors) every few minutes and at the end, with ``testbed.json`` (the latent's
normalisation, prompt file, config and what the run reached).

Optional (``--diff-weight``): a paired-difference term ``|e_rain - e_clean|^2`` on the two twins'
velocity errors. The scene's share of the error is common to both twins and cancels, so the
term trains exactly what tells the prompts apart (the rain), which plain MSE leaves to a small
share of its gradient. ``--text-lr-mult`` raises the learning rate of the text path (text
embedding and cross-attention).

The committed weights came from four phases on one thread of this 2-core machine while other
jobs shared it (``testbed.json`` records each phase, ``loss_log.jsonl`` every 20 steps)::

    # from bench/, with COMFYUI_PATH set; W = model/zsvr_testbed_wan21_t2v.safetensors
    python -m testbed.train --budget-min 40                        # 1146 steps, loss 0.50
    python -m testbed.train --budget-min 30 --lr 2e-4 --init W     # +945 steps, loss 0.50
    python -m testbed.train --budget-min 20 --diff-weight 4 --text-lr-mult 3 --init W   # +815 steps
    python -m testbed.train --budget-min 45 --diff-weight 4 --text-lr-mult 3 --init W   # +3168 steps

135.7 min and 6074 steps in all (the last phase ran on a quieter machine: 70 steps a minute
against 28 in the first). After phases 1-2 (70 min) the two prompts' predictions on a rainy
input barely differed (correlation of null - rain with the true rain 0.10-0.20 at every noise
level), and the ZSVD edit gained +0.3 dB; phase 3 raised that correlation to 0.25-0.38 and the
best gain to +1.45 dB (50 steps, 8 held-out clips); phase 4 raised the gain to +1.9 dB after
15 min and +2.3 dB after 30 min (probes at strength 10, skip 55-70; the README's "Does it work?"
has the bench's figures for the final weights). The budget is wall-clock time, so another
machine (or a quieter one) reaches a different step count; the seeds fix the data and noise
stream of each step.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import pathlib
import sys
import time

import torch

from .training import prompt_embeddings as fixed_prompts

HERE = pathlib.Path(__file__).resolve().parent
MODEL_DIR = HERE / "model"
WEIGHTS = "zsvr_testbed_wan21_t2v.safetensors"
PROMPTS = "prompts.safetensors"
META = "testbed.json"
LOG = "loss_log.jsonl"
TOKENS = 8
TEXT_DIM = 4096
PROMPT_SEEDS = {"null": 1001, "rain": 2002}

UNET_CONFIG = {
    "image_model": "wan2.1", "model_type": "t2v", "dim": 128, "out_dim": 16, "num_heads": 1,
    "ffn_dim": 256, "num_layers": 6, "patch_size": (1, 2, 2), "freq_dim": 256, "window_size": (-1, -1),
    "qk_norm": True, "cross_attn_norm": True, "eps": 1e-6, "in_dim": 16,
}


def import_comfy(comfy_dir: str | None = None):
    """Put ComfyUI on ``sys.path`` (``COMFYUI_PATH`` or ``comfy_dir``) for CPU use and return ``comfy.supported_models``."""
    comfy_dir = comfy_dir or os.environ.get("COMFYUI_PATH")
    if comfy_dir and comfy_dir not in sys.path:
        sys.path.insert(0, comfy_dir)
    import comfy.cli_args

    comfy.cli_args.args.cpu = True
    import comfy.supported_models

    return comfy.supported_models


def build_model(seed: int):
    """A ``model_base.WAN21`` with :data:`UNET_CONFIG`, fp32, initialised (the host's layers skip initialisation)."""
    supported = import_comfy()
    config = supported.WAN21_T2V(dict(UNET_CONFIG))
    config.set_inference_dtype(torch.float32, None)
    model = config.get_model({})
    gen = torch.Generator().manual_seed(seed)
    dim = UNET_CONFIG["dim"]
    with torch.no_grad():
        for name, p in model.diffusion_model.named_parameters():
            if name.startswith("head.head."):
                p.zero_()                                    # the first prediction is v = 0
            elif name.endswith("modulation"):
                p.copy_(torch.randn(p.shape, generator=gen) / math.sqrt(dim))
            elif p.dim() >= 2:
                p.copy_(torch.randn(p.shape, generator=gen) / math.sqrt(p[0].numel()))
            elif "norm" in name and name.endswith("weight"):
                p.fill_(1.0)
            else:
                p.zero_()
    return model


def prompt_embeddings() -> dict[str, torch.Tensor]:
    """The two fixed prompts, ``{"null", "rain"}`` -> ``[TOKENS, TEXT_DIM]`` (seeded standard normal)."""
    return fixed_prompts(TOKENS, TEXT_DIM, PROMPT_SEEDS)


def sample_sigmas(model_sampling, n: int, gen: torch.Generator) -> torch.Tensor:
    """Noise levels: half uniform in (0, 1), half uniform steps of the host's shifted schedule."""
    uniform = torch.rand(n, generator=gen)
    shifted = model_sampling.sigma(torch.rand(n, generator=gen) * 1000.0)
    pick = torch.rand(n, generator=gen) < 0.5
    return torch.where(pick, uniform, shifted).clamp(1e-3, 1.0)


def main(argv=None) -> int:
    """Train for ``--budget-min`` minutes of wall time; write weights, prompts, meta and the loss log."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--budget-min", type=float, default=40.0)
    ap.add_argument("--pairs", type=int, default=6, help="clean/rainy pairs per step")
    ap.add_argument("--lr", type=float, default=3e-4)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=pathlib.Path, default=MODEL_DIR)
    ap.add_argument("--save-every-min", type=float, default=5.0)
    ap.add_argument("--diff-weight", type=float, default=0.0,
                    help="weight of the paired-difference term |(e_rain - e_clean)|^2 (e: a twin's velocity error), "
                         "which keeps only what tells the two twins apart: the rain")
    ap.add_argument("--text-lr-mult", type=float, default=1.0,
                    help="learning-rate multiplier for the text path (text embedding and cross-attention)")
    ap.add_argument("--init", type=pathlib.Path, default=None,
                    help="continue from these weights (a later phase: fresh optimiser and warm-up, the loss log "
                         "and testbed.json's phases are appended to)")
    args = ap.parse_args(argv)

    from . import clips, latent, rain
    from .training import (LossLog, ema_copy, prompt_batch, save_ema, start_run, train_for_budget,
                           write_prompts)

    out = args.out
    t_start = start_run(args.seed, out)
    mean, std = clips.training_pixel_stats()
    model = build_model(args.seed)
    net = model.diffusion_model
    earlier = []
    if args.init is not None:
        from safetensors.torch import load_file

        net.load_state_dict({k: v.float() for k, v in load_file(str(args.init)).items()})
        if (out / META).is_file():
            old = json.loads((out / META).read_text())["train"]
            earlier = old.get("phases", [old])
    ema = ema_copy(net)
    prompts = prompt_embeddings()
    write_prompts(prompts, out / PROMPTS)
    meta = {
        "weights": WEIGHTS, "prompts": PROMPTS, "tokens": TOKENS, "prompt_seeds": PROMPT_SEEDS,
        "pixel_mean": mean, "pixel_std": std, "unet_config": {k: list(v) if isinstance(v, tuple) else v
                                                              for k, v in UNET_CONFIG.items()},
        "parameters": sum(p.numel() for p in net.parameters()),
        "train": {"pairs_per_step": args.pairs, "lr": args.lr, "seed": args.seed, "budget_min": args.budget_min,
                  "threads": 1, "ema_decay": 0.998, "rain_ranges": rain.TRAIN_RANGES,
                  "diff_weight": args.diff_weight, "text_lr_mult": args.text_lr_mult},
    }
    text_path = [p for n, p in net.named_parameters() if n.startswith("text_embedding") or ".cross_attn." in n]
    text_ids = {id(p) for p in text_path}
    rest = [p for p in net.parameters() if id(p) not in text_ids]
    opt = torch.optim.AdamW([{"params": rest, "mult": 1.0}, {"params": text_path, "mult": args.text_lr_mult}],
                            lr=args.lr, betas=(0.9, 0.99), weight_decay=0.01)
    gen = torch.Generator().manual_seed(args.seed + 1 + 1000 * len(earlier))  # a later phase draws new clips
    ctx = prompt_batch(prompts, args.pairs)
    log = LossLog(out / LOG, every=20, append=bool(earlier), phase=len(earlier))

    def checkpoint(step: int, t_train: float, final: bool) -> None:
        save_ema(build_model(args.seed).diffusion_model, ema, out / WEIGHTS)
        now = dict(meta["train"], steps=step, wall_min=round((time.time() - t_start) / 60, 2), final=final,
                   last_losses=log.last, init=str(args.init.name) if args.init else None)
        record = dict(meta, train=now)
        if earlier:
            phases = earlier + [now]
            record["train"] = {"phases": phases, "steps": sum(p["steps"] for p in phases),
                               "wall_min": round(sum(p["wall_min"] for p in phases), 2)}
        (out / META).write_text(json.dumps(record, indent=1))

    def losses():
        clean = clips.train_batch(gen, args.pairs)
        rainy = torch.stack([rain.add_rain(c, gen)[0] for c in clean])
        x0 = latent.to_model_space(torch.cat([clean, rainy]), mean, std)
        eps = torch.randn(x0[: args.pairs].shape, generator=gen).repeat(2, 1, 1, 1, 1)
        s = sample_sigmas(model.model_sampling, args.pairs, gen).repeat(2)
        sb = s.view(-1, 1, 1, 1, 1)
        x_t = (1 - sb) * x0 + sb * eps
        v = net(x_t, model.model_sampling.timestep(s), ctx)
        err = v - (eps - x0)
        per_clip = err.pow(2).mean(dim=(1, 2, 3, 4))
        loss = per_clip.mean()
        if args.diff_weight:
            loss = loss + args.diff_weight * (err[args.pairs:] - err[: args.pairs]).pow(2).mean()
        return loss, per_clip[: args.pairs].mean(), per_clip[args.pairs:].mean()

    train_for_budget(args.budget_min, args.save_every_min, base_lr=args.lr, warmup=200, opt=opt, net=net, ema=ema,
                     ema_decay=0.998, log=log, t_start=t_start, losses=losses, checkpoint=checkpoint)
    print((out / META).read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
