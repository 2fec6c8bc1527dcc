"""Optical-flow benchmark for ZVRD's flow kernels on the 720x480 realrain clips (CPU).

Run: ``python bench/bench_flow.py [--pairs N] [--repeat N] [--clips DIR] [--json PATH]``.
No ComfyUI needed: the pack is imported as ``zsvr`` by ``pack_import.py``, as in
``tests/conftest.py``.

For every clip the first ``--pairs + 1`` frames are decoded with the pack's
PyAV loader (``video_io.load_video``, native 720x480; synthetic moving
texture when no clip is found) and timed, per frame pair, median of
``--repeat`` runs after one warm-up:

* ``flow_pairs`` with OpenCV DIS at each preset (``medium`` is the default);
* the torch side of a ZVRD flow step: ``occlusion_mask`` (forward-backward
  check), a bilinear ``warp`` of the RGB frame, ``resize_flow`` to the 1/8
  latent size, and ``noise_sharing.blend_noise`` on a 4-channel latent noise
  (per frame).

GPU: not applicable to DIS (OpenCV's DIS has no CUDA path and the pack has no
torch flow fallback); the torch parts run on the GPU as-is but are
milliseconds on the CPU already, so only the CPU is measured here.

Writes the table to stdout and JSON to ``bench/results/flow_cpu.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import platform
import runpy
import statistics
import sys

PACK_DIR = pathlib.Path(__file__).resolve().parent.parent
runpy.run_path(str(PACK_DIR / "pack_import.py"))["import_pack"]()  # the pack as `zsvr`, its folder off sys.path
if str(PACK_DIR / "bench") not in sys.path:
    sys.path.insert(0, str(PACK_DIR / "bench"))
import layer_timing  # noqa: E402  (bench/: the timing rule bench_slr.py and bench_swcfa.py share)


def _time(fn, repeat):
    """Median and best seconds of ``repeat`` calls after one warm-up (:func:`layer_timing.median_best` on the CPU)."""
    import torch

    return layer_timing.median_best(fn, torch.device("cpu"), 1, repeat)


def _synthetic(frames, height=480, width=720):
    """A smooth random texture panning 2 px right and 1 px down per frame."""
    import torch

    gen = torch.Generator().manual_seed(0)
    base = torch.rand(1, 3, height // 8 + 8, width // 8 + 8, generator=gen)
    big = torch.nn.functional.interpolate(base, scale_factor=8, mode="bicubic", align_corners=False).clamp(0, 1)
    out = [big[0, :, 32 - t : 32 - t + height, 32 - 2 * t : 32 - 2 * t + width] for t in range(frames)]
    return torch.stack(out).permute(0, 2, 3, 1).contiguous()


def main() -> int:
    default_dir = pathlib.Path(os.environ.get("ZSVR_SHARED", PACK_DIR.parent / "shared")) / "data" / "realrain"
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=pathlib.Path, default=default_dir)
    parser.add_argument("--pairs", type=int, default=8, help="frame pairs per clip")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--json", type=pathlib.Path, default=PACK_DIR / "bench" / "results" / "flow_cpu.json")
    args = parser.parse_args()

    import cv2
    import torch

    from zsvr.kernels import noise_sharing as ns
    from zsvr.kernels import optical_flow as of
    from zsvr.kernels import video_io

    clips = sorted(args.clips.glob("*.mp4")) if args.clips.is_dir() else []
    sources = [(c.name, c) for c in clips] or [("synthetic", None)]
    presets = list(of.DIS_PRESETS[::-1])  # medium, fast, ultrafast
    print(
        f"python {platform.python_version()}, torch {torch.__version__}, opencv {cv2.__version__}, "
        f"{os.cpu_count()} CPU cores, torch threads {torch.get_num_threads()}, cv2 threads {cv2.getNumThreads()}; "
        f"{args.pairs} pairs per clip; ms per frame pair, median (best) of {args.repeat} runs "
        f"(5 for the torch ops) after a warm-up"
    )
    print("GPU: n/a for DIS (OpenCV DIS is CPU-only; no torch flow fallback in the pack)")
    cols = [f"dis {p}" for p in presets] + ["occlusion", "warp rgb", "resize 1/8", "blend noise", "occluded %"]
    print(f"{'clip':<11}" + "".join(f"{c:>14}" for c in cols[:-1]) + f"{cols[-1]:>13}")

    rows = []
    for name, path in sources:
        if path is None:
            frames = _synthetic(args.pairs + 1)
        else:
            frames = video_io.load_video(str(path), frame_cap=args.pairs + 1).images
        n_pairs = frames.shape[0] - 1
        h, w = frames.shape[1:3]
        row = {"clip": name, "height": h, "width": w, "pairs": n_pairs}
        for preset in presets:
            med, best = _time(lambda: of.flow_pairs(frames, preset=preset), args.repeat)
            row[f"dis_{preset}_ms"] = 1000 * med / n_pairs
            row[f"dis_{preset}_best_ms"] = 1000 * best / n_pairs
        fw = of.flow_pairs(frames)
        bw = of.flow_pairs(frames, forward=False)
        nchw = frames.permute(0, 3, 1, 2).contiguous()
        lat = (h // 8, w // 8)
        noise = ns.shared_noise((n_pairs + 1, 4) + lat, 0, torch.Generator().manual_seed(0))
        occ = of.occlusion_mask(bw, fw)
        small_flow = of.resize_flow(bw, lat)
        small_valid = ~of.resize_mask(occ, lat, threshold=0.01)
        extra = {
            "occlusion_ms": lambda: of.occlusion_mask(bw, fw),
            "warp_rgb_ms": lambda: of.warp(nchw[1:], fw),
            "resize_flow_ms": lambda: of.resize_flow(bw, lat),
            "blend_noise_ms": lambda: ns.blend_noise(noise, small_flow, small_valid, 0.5, 0),
        }
        for key, fn in extra.items():
            med, best = _time(fn, max(args.repeat, 5))  # cheap: more runs against scheduler noise
            row[key] = 1000 * med / n_pairs
            row[key.replace("_ms", "_best_ms")] = 1000 * best / n_pairs
        row["occluded_percent"] = 100 * occ.float().mean().item()
        rows.append(row)
        cells = [(row[f"dis_{p}_ms"], row[f"dis_{p}_best_ms"]) for p in presets]
        cells += [(row[k], row[k.replace("_ms", "_best_ms")]) for k in extra]
        print(f"{name:<11}" + "".join(f"{m:>7.1f} ({b:>4.1f})" for m, b in cells) + f"{row['occluded_percent']:>13.2f}")

    mean = {k: statistics.mean(r[k] for r in rows) for k in rows[0] if k.endswith("_ms") or k.endswith("percent")}
    keys = [f"dis_{p}_ms" for p in presets] + ["occlusion_ms", "warp_rgb_ms", "resize_flow_ms", "blend_noise_ms"]
    print(
        f"{'mean':<11}"
        + "".join(f"{mean[k]:>7.1f} ({mean[k.replace('_ms', '_best_ms')]:>4.1f})" for k in keys)
        + f"{mean['occluded_percent']:>13.2f}"
    )

    result = {
        "benchmark": "optical_flow",
        "device": "cpu",
        "gpu": "n/a: OpenCV DIS has no GPU path; the pack has no torch flow fallback",
        "python": platform.python_version(),
        "torch": torch.__version__,
        "opencv": cv2.__version__,
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "cv2_threads": cv2.getNumThreads(),
        "repeat": args.repeat,
        "unit": "ms per frame pair (blend_noise: per frame of a [F,4,H/8,W/8] latent noise); *_ms median, *_best_ms best",
        "default_preset": of.DEFAULT_DIS_PRESET,
        "clips": rows,
        "mean": mean,
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
