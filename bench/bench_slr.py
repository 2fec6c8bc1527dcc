"""SLR temporal attention cost benchmark (ZVRD eq. 5-7) against plain self-attention, per sampling step.

Run: ``python bench/bench_slr.py`` (CUDA, float16: 16 frames of 512x512 SD1.5,
i.e. latent 64x64 -> 4096 tokens at the first level, 320 channels, 8 heads)
or ``python bench/bench_slr.py --small`` (CPU-sized, float32: 8 frames of
128x128). No ComfyUI needed: the pack is imported as ``zsvr`` by ``pack_import.py``,
as ``tests/conftest.py`` does it, and the layers are built from plain tensors.

What one SD1.5 U-Net step runs in its 16 self-attention layers, with the
frames of all cond/uncond chunks in one batch (``--chunks``, 2 = CFG):

=====================  =======================  =====================================
level (tokens, ch)     encoder + middle          decoder (output blocks)
=====================  =======================  =====================================
0: 64x64, 320          input 1, 2                output 9, 10, 11  (trajectory layers)
1: 32x32, 640          input 4, 5                output 6, 7, 8
2: 16x16, 1280         input 7, 8                output 3, 4, 5
3: 8x8, 1280           middle                    -
=====================  =======================  =====================================

Timed per layer type (one full layer: q/k/v projections, torch SDPA, output
projection, over all rows):

- ``plain``: ordinary per-frame self-attention (the unpatched U-Net).
- ``neighbour``: what ``ZSVR_SLRTemporalAttention`` does in every decoder layer:
  key/value input = ``[h_prev ; h_next]`` (``neighbour_context``), 2T keys per row.
- ``trajectory``: a level-0 decoder layer once the schedule has passed T_TA:
  neighbour attention, then for every frame pair and direction the feature
  similarity match, three candidates' 8x8 patch warp errors on the input video,
  the selection, and the trajectory attention (``kernels.temporal_attention``).
  Flow itself is timed separately (CPU, OpenCV DIS, per frame pair, both
  directions): on the input video at image size (estimated once per run and
  cached) and on the x0 preview (256 px for a 64 px latent; every step).

The step totals add the layers up (encoder and middle stay plain) and report
the SLR step relative to the plain step, before and after T_TA. Writes the
figures as JSON to ``bench/results/``.
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
import layer_timing  # noqa: E402  (bench/: the timing rule and result names bench_swcfa.py shares)

# SD1.5 self-attention layers: (level, channel multiplier, encoder+middle count, decoder count)
SD15_LEVELS = [(0, 1, 2, 3), (1, 2, 2, 3), (2, 4, 2, 3), (3, 4, 1, 0)]


def _synthetic(frames, height, width):
    """A smooth random texture panning 2 px right and 1 px down per frame, IMAGE layout [F, H, W, 3]."""
    make = runpy.run_path(str(PACK_DIR / "bench" / "bench_flow.py"))["_synthetic"]  # the flow benchmark's test video

    return make(frames, height, width)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    layer_timing.add_device_args(parser, "CPU-sized problem (8 frames of 128x128, float32)")
    parser.add_argument("--frames", type=int, default=None)
    parser.add_argument("--size", type=int, default=None, help="image height = width in pixels (latent = /8)")
    parser.add_argument("--chunks", type=int, default=None, help="cond/uncond chunks in the batch (2 = CFG)")
    parser.add_argument("--heads", type=int, default=8)
    parser.add_argument("--repeat", type=int, default=None)
    parser.add_argument("--warmup", type=int, default=None)
    parser.add_argument("--out", type=pathlib.Path, default=PACK_DIR / "bench" / "results")
    args = parser.parse_args()

    from zsvr.kernels import optical_flow as of
    from zsvr.kernels import temporal_attention as ta

    device, dtype = layer_timing.device_and_dtype(args)
    frames = args.frames or (8 if args.small else 16)
    size = args.size or (128 if args.small else 512)
    chunks = args.chunks or (1 if args.small else 2)
    repeat = args.repeat or (3 if device.type == "cpu" else 20)
    warmup = args.warmup if args.warmup is not None else (1 if device.type == "cpu" else 3)
    heads = args.heads
    rows = frames * chunks
    latent = size // 8
    gen = torch.Generator().manual_seed(0)
    device_name = layer_timing.device_name(device)
    print(f"SLR temporal attention benchmark on {device_name} ({device}, {args.dtype}), torch {torch.__version__}")
    print(f"{frames} frames x {chunks} chunk(s) of {size}x{size} (latent {latent}x{latent}), SD1.5 self-attention "
          f"layers, {heads} heads; median/best of {repeat} after {warmup} warm-up")

    video, position = [c * 1000 for c in range(chunks) for _ in range(frames)], list(range(frames)) * chunks
    plan = ta.plan_neighbours(video, position).to(device)
    image = _synthetic(frames, size, size).permute(0, 3, 1, 2).contiguous().to(device, torch.float32)

    rows_out = []
    per_level = {}
    with torch.no_grad():
        for level, mult, enc, dec in SD15_LEVELS:
            side = latent >> level
            if side < 1:
                continue
            tokens, c = side * side, 320 * mult
            d = c // heads
            x = torch.randn(rows, tokens, c, generator=gen).to(device, dtype)
            w_q, w_k, w_v, w_o = (torch.randn(c, c, generator=gen).mul_(c ** -0.5).to(device, dtype) for _ in range(4))

            def split(t):
                return t.view(t.shape[0], t.shape[1], heads, d).transpose(1, 2)

            def merge(t):
                return t.transpose(1, 2).reshape(t.shape[0], -1, c)

            def plain():
                q, k, v = F.linear(x, w_q), F.linear(x, w_k), F.linear(x, w_v)
                return F.linear(merge(F.scaled_dot_product_attention(split(q), split(k), split(v))), w_o)

            def neighbour_inner():
                ctx = ta.neighbour_context(x, plan)
                q, k, v = F.linear(x, w_q), F.linear(ctx, w_k), F.linear(ctx, w_v)
                return q, merge(F.scaled_dot_product_attention(split(q), split(k), split(v)))

            def neighbour():
                return F.linear(neighbour_inner()[1], w_o)

            timings = {"plain": layer_timing.median_best(plain, device, warmup, repeat),
                       "neighbour": layer_timing.median_best(neighbour, device, warmup, repeat)}
            if level == 0:
                grid = (side, side)
                patch = max(8, round(size / side))
                flow_fw = torch.zeros(frames - 1, 2, side, side, device=device)
                flow_fw[:, 0] = 0.25  # sub-pixel pan: rounds to a zero flow candidate, a realistic mix of choices
                flow_cands = ta.flow_targets(flow_fw)
                flow_back = ta.flow_targets(-flow_fw)

                def trajectory():
                    q, o = neighbour_inner()
                    out = o.clone()
                    for ch in range(chunks):
                        sl = slice(ch * frames, (ch + 1) * frames)
                        qc = q[sl]
                        fwd, bwd = [], []
                        for s in range(frames - 1):
                            sim = ta.similarity_targets(qc[s], qc[s + 1])
                            picks = []
                            for direction, (a, b) in enumerate(((s, s + 1), (s + 1, s))):
                                flow_c = (flow_cands if direction == 0 else flow_back)[s]
                                history = sim[direction].roll(1)  # any third candidate of the right size
                                cands = torch.stack([flow_c, history, sim[direction]])
                                errors = ta.patch_errors(image[a], image[b], cands, grid, patch)
                                picks.append(ta.select_targets(cands, errors)[0])
                            fwd.append(picks[0])
                            bwd.append(picks[1])
                        out[sl] = ta.trajectory_attention(o[sl], fwd, bwd, heads)
                    return F.linear(out, w_o)

                timings["trajectory"] = layer_timing.median_best(trajectory, device, max(1, warmup // 2),
                                                                   max(1, repeat // 2))
            per_level[level] = {"tokens": tokens, "channels": c, "encoder_layers": enc, "decoder_layers": dec,
                                **{f"{k}_ms": v[0] * 1e3 for k, v in timings.items()},
                                **{f"{k}_best_ms": v[1] * 1e3 for k, v in timings.items()}}
            for name, (med, best) in timings.items():
                rows_out.append({"level": level, "tokens": tokens, "channels": c, "variant": name,
                                 "median_ms": med * 1e3, "best_ms": best * 1e3,
                                 "rel_plain": med / timings["plain"][0]})
            del x

    # flow (CPU, OpenCV DIS medium), ms per frame pair for both directions
    cpu_frames = _synthetic(2, size, size)
    x0_side = latent * max(1, min(8, -(-256 // latent)))
    x0_frames = _synthetic(2, x0_side, x0_side)
    estimator = of.get_flow_estimator("dis")

    def flow_pair(frames_):
        nchw = frames_.permute(0, 3, 1, 2).contiguous()
        return lambda: estimator(torch.stack([nchw[0], nchw[1]]), torch.stack([nchw[1], nchw[0]]))

    flow_image_ms = layer_timing.median_best(flow_pair(cpu_frames), torch.device("cpu"), 1, 5)[0] * 1e3
    flow_x0_ms = layer_timing.median_best(flow_pair(x0_frames), torch.device("cpu"), 1, 5)[0] * 1e3

    plain_step = sum(v["plain_ms"] * (v["encoder_layers"] + v["decoder_layers"]) for v in per_level.values())
    slr_before = sum(v["plain_ms"] * v["encoder_layers"] + v["neighbour_ms"] * v["decoder_layers"]
                     for v in per_level.values())
    lvl0 = per_level[0]
    slr_after = slr_before + lvl0["decoder_layers"] * (lvl0["trajectory_ms"] - lvl0["neighbour_ms"])
    flow_per_step_x0 = flow_x0_ms * (frames - 1)  # every step, without an input video (x0 guidance)
    summary = {
        "plain_step_ms": plain_step,
        "slr_step_before_t_ta_ms": slr_before,
        "slr_step_after_t_ta_ms": slr_after,
        "slr_before_rel_plain": slr_before / plain_step,
        "slr_after_rel_plain": slr_after / plain_step,
        "flow_ms_per_pair_image": flow_image_ms,
        "flow_ms_per_pair_x0_preview": flow_x0_ms,
        "flow_x0_preview_size": x0_side,
        "flow_per_step_x0_ms": flow_per_step_x0,
        "flow_once_per_run_image_ms": flow_image_ms * (frames - 1),
    }

    print(f"{'level':>5} {'tokens':>7} {'ch':>5} {'variant':<11} {'median ms':>10} {'best ms':>9} {'x plain':>8}")
    for r in rows_out:
        print(f"{r['level']:>5} {r['tokens']:>7} {r['channels']:>5} {r['variant']:<11} {r['median_ms']:>10.2f} "
              f"{r['best_ms']:>9.2f} {r['rel_plain']:>8.2f}")
    print(f"per U-Net step, all 16 self-attention layers: plain {plain_step:.1f} ms; SLR before T_TA "
          f"{slr_before:.1f} ms (x{summary['slr_before_rel_plain']:.2f}); after T_TA {slr_after:.1f} ms "
          f"(x{summary['slr_after_rel_plain']:.2f}), flow not included")
    print(f"flow (CPU, DIS medium, both directions) per frame pair: {flow_image_ms:.1f} ms at {size}x{size} "
          f"(input video, once per run: {summary['flow_once_per_run_image_ms']:.0f} ms); {flow_x0_ms:.1f} ms at "
          f"{x0_side}x{x0_side} (x0 preview, every step after T_TA: {flow_per_step_x0:.0f} ms)")

    path = layer_timing.result_path(args.out, "slr", device_name, device, args.small)
    path.write_text(json.dumps({
        "benchmark": "slr_temporal_attention", "device": str(device), "device_name": device_name,
        "dtype": args.dtype, "torch": torch.__version__, "frames": frames, "chunks": chunks, "size": size,
        "latent": latent, "heads": heads, "repeat": repeat, "warmup": warmup, "small": args.small,
        "layers": rows_out, "levels": per_level, "summary": summary,
    }, indent=2) + "\n")
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
