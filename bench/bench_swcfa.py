"""SW-CFA cost benchmark: TDM sliding-window cross-frame attention vs plain self-attention, one layer.

Run: ``python bench/bench_swcfa.py`` (CUDA, float16: 16 frames of 512x896 SD1.5,
i.e. latent 64x112 -> 7168 tokens at the U-Net's first level, 320 channels,
8 heads) or ``python bench/bench_swcfa.py --small`` (CPU-sized, float32). No
ComfyUI needed: the pack is imported as ``zsvr`` by ``pack_import.py``, as
``tests/conftest.py`` does it, and the layer is built from plain tensors.

Variants, each one full self-attention layer (q/k/v projections, torch SDPA,
output projection) over all frames:

- ``plain``: ordinary per-frame self-attention (what the U-Net does unpatched).
- ``swcfa``: what ``ZSVR_SWCFA`` does: the key/value input is the sliding-window
  mean of the hidden states over frames (``kernels.cross_frame_attention``, a
  cumulative sum; the window plan is cached as in the node), then the same
  projections and SDPA. TDM eq. 7-9 exactly.
- ``window_mean``: the window mean alone (the whole extra cost of ``swcfa``).
- ``naive_mean``: eq. 7-8 done the literal way, stacking each frame's
  ``2r+1`` neighbours' K and V and averaging (the materialised copies SW-CFA avoids).
- ``concat_kv``: attending to the concatenated tokens of the ``2r+1`` frames
  (a different method, ZVRD-style cross-frame attention, shown only for scale).

Prints a table (median and best time over ``--repeat`` runs after warm-up, cost
relative to ``plain``, peak extra memory on CUDA) and writes the figures as
JSON to ``bench/results/``. ``swcfa`` and ``naive_mean`` outputs are compared as
a correctness check.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import runpy
import sys

import torch
import torch.nn.functional as F

PACK_DIR = pathlib.Path(__file__).resolve().parent.parent
runpy.run_path(str(PACK_DIR / "pack_import.py"))["import_pack"]()  # the pack as `zsvr`, its folder off sys.path
if str(PACK_DIR / "bench") not in sys.path:
    sys.path.insert(0, str(PACK_DIR / "bench"))
import layer_timing  # noqa: E402  (bench/: the timing rule and result names bench_slr.py shares)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    layer_timing.add_device_args(parser, "CPU-sized problem (8 frames of 128x224, float32)")
    parser.add_argument("--frames", type=int, default=None)
    parser.add_argument("--height", type=int, default=None, help="image height in pixels (latent = /8)")
    parser.add_argument("--width", type=int, default=None, help="image width in pixels (latent = /8)")
    parser.add_argument("--channels", type=int, default=320)
    parser.add_argument("--heads", type=int, default=8)
    parser.add_argument("--radius", type=int, nargs="+", default=[1, 3, 8])
    parser.add_argument("--repeat", type=int, default=None)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--skip-naive", action="store_true", help="leave out naive_mean and concat_kv")
    parser.add_argument("--out", type=pathlib.Path, default=PACK_DIR / "bench" / "results")
    args = parser.parse_args()

    from zsvr.kernels import cross_frame_attention as cfa
    device, dtype = layer_timing.device_and_dtype(args)
    frames = args.frames or (8 if args.small else 16)
    height = args.height or (128 if args.small else 512)
    width = args.width or (224 if args.small else 896)
    repeat = args.repeat or (3 if device.type == "cpu" else 20)
    tokens = (height // 8) * (width // 8)
    c, heads = args.channels, args.heads
    d = c // heads

    gen = torch.Generator().manual_seed(0)
    x = torch.randn(frames, tokens, c, generator=gen).to(device, dtype)
    w_q, w_k, w_v, w_o = (torch.randn(c, c, generator=gen).mul_(c ** -0.5).to(device, dtype) for _ in range(4))
    b_o = torch.zeros(c, device=device, dtype=dtype)

    def heads_first(t):
        return t.view(t.shape[0], t.shape[1], heads, d).transpose(1, 2)

    def attention(q_in, kv_in_k, kv_in_v):
        q = heads_first(F.linear(q_in, w_q))
        k = heads_first(F.linear(kv_in_k, w_k))
        v = heads_first(F.linear(kv_in_v, w_v))
        out = F.scaled_dot_product_attention(q, k, v)
        return F.linear(out.transpose(1, 2).reshape(q_in.shape[0], -1, c), w_o, b_o)

    def plain():
        return attention(x, x, x)

    device_name = layer_timing.device_name(device)
    print(f"SW-CFA layer benchmark on {device_name} ({device}, {args.dtype}), torch {torch.__version__}")
    print(f"{frames} frames of {width}x{height} -> {tokens} tokens, {c} channels, {heads} heads (d={d}); "
          f"median/best of {repeat} after {args.warmup} warm-up")

    rows = []
    t_plain, best_plain, mem_plain = layer_timing.median_best(plain, device, args.warmup, repeat, peak=True)
    rows.append({"variant": "plain", "radius": 0, "median_ms": t_plain * 1e3, "best_ms": best_plain * 1e3,
                 "rel_plain": 1.0, "peak_extra_mb": None if mem_plain is None else mem_plain / 2**20})
    checks = {}
    with torch.no_grad():
        for radius in args.radius:
            plan = cfa.plan_windows([0] * frames, list(range(frames)), radius).to(device)

            def window_mean():
                return cfa.apply_plan(x, plan)

            def swcfa():
                hbar = cfa.apply_plan(x, plan)
                return attention(x, hbar, hbar)

            lo = [max(0, i - radius) for i in range(frames)]
            hi = [min(frames, i + radius + 1) for i in range(frames)]
            width_w = 2 * radius + 1
            # literal eq. 7-8: gather each frame's window of K and V (clipped windows padded with weight 0)
            gather = torch.tensor([[min(max(j, 0), frames - 1) for j in range(i - radius, i + radius + 1)]
                                   for i in range(frames)], device=device)
            weight = torch.tensor([[1.0 / (hi[i] - lo[i]) if lo[i] <= j < hi[i] else 0.0
                                    for j in range(i - radius, i + radius + 1)] for i in range(frames)],
                                  device=device, dtype=dtype)

            def naive_mean():
                q = heads_first(F.linear(x, w_q))
                k_all, v_all = F.linear(x, w_k), F.linear(x, w_v)
                k_bar = (k_all[gather] * weight[:, :, None, None]).sum(1)  # [F, 2r+1, T, C] materialised
                v_bar = (v_all[gather] * weight[:, :, None, None]).sum(1)
                out = F.scaled_dot_product_attention(q, heads_first(k_bar), heads_first(v_bar))
                return F.linear(out.transpose(1, 2).reshape(frames, -1, c), w_o, b_o)

            def concat_kv():
                q = heads_first(F.linear(x, w_q))
                k_all, v_all = F.linear(x, w_k), F.linear(x, w_v)
                k_cat = k_all[gather].reshape(frames, width_w * tokens, c)
                v_cat = v_all[gather].reshape(frames, width_w * tokens, c)
                out = F.scaled_dot_product_attention(q, heads_first(k_cat), heads_first(v_cat))
                return F.linear(out.transpose(1, 2).reshape(frames, -1, c), w_o, b_o)

            variants = [("window_mean", window_mean), ("swcfa", swcfa)]
            if not args.skip_naive:
                variants += [("naive_mean", naive_mean), ("concat_kv", concat_kv)]
            for name, fn in variants:
                try:
                    med, best, mem = layer_timing.median_best(fn, device, args.warmup, repeat, peak=True)
                except torch.cuda.OutOfMemoryError:
                    rows.append({"variant": name, "radius": radius, "error": "out of memory"})
                    torch.cuda.empty_cache()
                    continue
                rows.append({"variant": name, "radius": radius, "median_ms": med * 1e3, "best_ms": best * 1e3,
                             "rel_plain": med / t_plain, "peak_extra_mb": None if mem is None else mem / 2**20})
            if not args.skip_naive:
                a, b = swcfa().float(), naive_mean().float()
                checks[f"radius_{radius}"] = {"max_abs_diff_swcfa_vs_naive": float((a - b).abs().max()),
                                              "output_max_abs": float(b.abs().max())}
                del a, b

    print(f"{'variant':<12} {'r':>3} {'median ms':>10} {'best ms':>9} {'x plain':>8} {'peak extra MB':>14}")
    for r in rows:
        if "error" in r:
            print(f"{r['variant']:<12} {r['radius']:>3} {r['error']}")
            continue
        mem = "-" if r["peak_extra_mb"] is None else f"{r['peak_extra_mb']:.0f}"
        print(f"{r['variant']:<12} {r['radius']:>3} {r['median_ms']:>10.3f} {r['best_ms']:>9.3f} "
              f"{r['rel_plain']:>8.3f} {mem:>14}")
    for key, val in checks.items():
        print(f"check {key}: swcfa vs naive max |diff| {val['max_abs_diff_swcfa_vs_naive']:.3g} "
              f"(outputs up to {val['output_max_abs']:.3g})")

    path = layer_timing.result_path(args.out, "swcfa", device_name, device, args.small)
    path.write_text(json.dumps({
        "benchmark": "swcfa_layer", "device": str(device), "device_name": device_name, "dtype": args.dtype,
        "torch": torch.__version__, "frames": frames, "height": height, "width": width, "tokens": tokens,
        "channels": c, "heads": heads, "repeat": repeat, "warmup": args.warmup, "small": args.small,
        "results": rows, "checks": checks,
    }, indent=2))
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
