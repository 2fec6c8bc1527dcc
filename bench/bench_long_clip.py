#!/usr/bin/env python
"""Chunked runs of long clips on this CPU with the tests' tiny models: memory that stays flat, and seams.

What it measures (issue 14), each run through the real runner (``run_workflow.run_batch``
with ``--chunk-frames 49 --overlap K``) on the shipped Wan workflow with the
tests' tiny-model substitution (32x32 frames), on clips built from the
realrain clips with a sine sound track (``tests/long_clips.py``):

* **Peak RSS of the runner at 150 and at 600 frames** (overlap 8). Each run is
  a fresh process (boot, tiny models, the run), so ``ru_maxrss`` is that
  run's peak; a sampling thread also records the peak during the run alone
  above the RSS right after boot. Flat means the 600-frame peak is within
  20 % of the 150-frame one: nothing grows with the clip (the loader seeks and
  decodes one chunk, chunks go to disk, stitching streams).
* **Seam score** at chunk boundaries: ``e_i`` is the mean squared difference
  between output frames ``i`` and ``i + 1``. For each boundary, the largest
  ``e_i`` among the 9 steps centred on the middle of the overlap (on the cut
  without overlap), divided by the median ``e_i`` of all other steps;
  averaged over the boundaries. The source clip's score at the same places
  is the reference (about what the largest of 9 ordinary steps is); a seam
  shows as a score above it, so ``seam_over_source`` (the ratio) is the figure
  to compare between runs. Runs: overlap 0 and 8, each without and with
  ``--color-match``. The clip is one realrain clip played forwards and
  backwards (no scene cut), so the source itself has no jump.

The tiny models have random weights, so what they output is not a
restoration; the seam figures say how much the crossfade and the colour
match smooth the jump between independently generated chunks, not how a
trained model's seams look. Timings on a shared 2-core CPU are not
performance figures.

Usage (from the pack's folder, with a ComfyUI checkout)::

    COMFYUI_PATH=../ComfyUI python bench/bench_long_clip.py            # 150 and 600 frames (slow on a CPU)
    COMFYUI_PATH=../ComfyUI python bench/bench_long_clip.py --small    # 45 and 180 frames, 17-frame chunks

Prints a table and writes ``bench/results/long_clip_cpu[_small].json``.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import platform
import runpy
import subprocess
import sys
import tempfile
import threading
import time

BENCH_DIR = pathlib.Path(__file__).resolve().parent
PACK_DIR = BENCH_DIR.parent
TESTS_DIR = PACK_DIR / "tests"
RESULTS = BENCH_DIR / "results"
runpy.run_path(str(PACK_DIR / "pack_import.py"))["import_pack"]()  # the pack as `zsvr`, its folder off sys.path


def _tests_on_path() -> None:
    """The tests' helper modules (``host_harness``, ``long_clips``, ...) import one another by their own names."""
    if str(TESTS_DIR) not in sys.path:
        sys.path.insert(0, str(TESTS_DIR))


def _rss_bytes() -> int:
    import psutil

    return psutil.Process().memory_info().rss


def worker(spec: dict) -> dict:
    """One run in this (fresh) process: boot the tiny host, run the runner in chunks, report memory and time."""
    import resource

    _tests_on_path()
    import host_harness
    from test_host_workflows import TINY, _input_types, _substitute_files, _tiny_run_prompt

    from zsvr import run_workflow
    from zsvr.headless import workflow_format as wf
    from zsvr.headless.clip_job import ChunkOptions

    work = pathlib.Path(spec["work"])
    host = host_harness.Host(pathlib.Path(spec["comfyui"]), work / "host")
    name = "ZSVD rain removal - Wan 2.1.json"
    data = json.loads((PACK_DIR / "workflows" / name).read_text())
    prompt = _tiny_run_prompt(_substitute_files(host, wf.ui_to_api(data, _input_types(host)), TINY[name]), TINY[name])
    baseline = _rss_bytes()
    peak = [baseline]
    stop = threading.Event()

    def sample():
        while not stop.wait(0.05):
            peak[0] = max(peak[0], _rss_bytes())

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    start = time.perf_counter()
    rows = run_workflow.run_batch(host.comfy, prompt, [pathlib.Path(spec["clip"])], pathlib.Path(spec["out"]),
                                  progress=False, chunks=ChunkOptions(**spec["chunks"]))
    seconds = time.perf_counter() - start
    stop.set()
    sampler.join()
    row = rows[0]
    if not row["ok"]:
        raise SystemExit(f"run failed: {row['error']}")
    return {"seconds": round(seconds, 1), "chunks": row["chunks"], "frames": row["frames"], "output": row["outputs"][0],
            "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
            "run_rss_above_boot_mib": round((peak[0] - baseline) / 2**20, 1),
            "boot_rss_mib": round(baseline / 2**20, 1)}


SEAM_WINDOW = 4
"""Pairs of frames on each side of a boundary's centre that the seam score looks at (9 pairs in all)."""


def seam_score(frames, plan) -> float:
    """Mean over boundaries of (largest step near the boundary) / (median step elsewhere).

    A step is the mean squared difference between frames ``i`` and ``i + 1``.
    Near a boundary means the ``2 * SEAM_WINDOW + 1`` steps centred on the
    middle of the overlap (on the cut, without overlap): the same number of
    steps whatever the overlap, so a wider crossfade is not favoured or
    penalised by looking at more steps.
    """
    import numpy as np

    x = frames.astype(np.float64)
    steps = ((x[1:] - x[:-1]) ** 2).mean(axis=(1, 2, 3))
    windows = []
    for a, b in zip(plan, plan[1:]):
        centre = (b.start + a.end) // 2 - 1  # the step from the overlap's middle (the cut's step without one)
        windows.append(range(max(0, centre - SEAM_WINDOW), min(len(steps), centre + SEAM_WINDOW + 1)))
    near = set(i for window in windows for i in window)
    median = float(np.median([steps[i] for i in range(len(steps)) if i not in near]))
    return float(np.mean([max(steps[i] for i in window) / median for window in windows]))


def run_spec(spec: dict) -> dict:
    proc = subprocess.run([sys.executable, __file__, "--worker", json.dumps(spec)], capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"worker failed ({spec['label']}):\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--small", action="store_true", help="45 and 180 frames in 17-frame chunks (a quick check)")
    parser.add_argument("--out", type=pathlib.Path, default=RESULTS, help="where the JSON goes (default bench/results)")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(json.loads(args.worker))))
        return 0

    comfyui = pathlib.Path(os.environ.get("COMFYUI_PATH", PACK_DIR.parent.parent)).resolve()
    if not (comfyui / "nodes.py").is_file():
        parser.error(f"no ComfyUI at {comfyui}; set COMFYUI_PATH")
    _tests_on_path()
    import long_clips
    import numpy as np

    from zsvr.kernels import chunking

    short, long, chunk = (45, 180, 17) if args.small else (150, 600, 49)
    work = pathlib.Path(tempfile.mkdtemp(prefix="zsvr_bench_long_"))
    # One realrain clip played forwards and backwards: continuous motion, no scene cut that a seam could hide in.
    clip = long_clips.realrain_frames(49, 176, 120)
    frames = [clip[i % 96 if i % 96 < 49 else 96 - i % 96] for i in range(long)]
    clips = {n: long_clips.write_clip(work / f"rain{n}.mp4", n, frames=frames) for n in (short, long)}
    runs = [
        {"label": f"{short} frames, overlap 8", "frames": short, "overlap": 8, "color_match": None},
        {"label": f"{long} frames, overlap 8", "frames": long, "overlap": 8, "color_match": None},
        {"label": f"{short} frames, overlap 0", "frames": short, "overlap": 0, "color_match": None},
        {"label": f"{short} frames, overlap 0, colour match", "frames": short, "overlap": 0,
         "color_match": "low_frequency"},
        {"label": f"{short} frames, overlap 8, colour match", "frames": short, "overlap": 8,
         "color_match": "low_frequency"},
    ]
    source_seams = {}
    for spec in runs:
        spec.update(work=str(work / spec["label"].replace(" ", "_").replace(",", "")), comfyui=str(comfyui),
                    clip=str(clips[spec["frames"]]),
                    chunks={"chunk_frames": chunk, "overlap": spec["overlap"], "color_match": spec["color_match"]})
        spec["out"] = str(pathlib.Path(spec["work"]) / "out")
        print(f"running: {spec['label']} ...", flush=True)
        spec.update(run_spec(spec))
        plan = chunking.plan_chunks(spec["frames"], chunk, spec["overlap"], "4k+1")
        output = long_clips.decode_frames(pathlib.Path(spec["output"]))
        assert output.shape[0] == spec["frames"], (output.shape, spec["frames"])
        spec["seam_score"] = round(seam_score(output, plan), 3)
        key = (spec["frames"], spec["overlap"])
        if key not in source_seams:
            source = long_clips.decode_frames(pathlib.Path(spec["clip"]))
            small = np.stack([np.asarray(f)[::4, ::4] for f in source])  # the source at about the output's scale
            source_seams[key] = round(seam_score(small, plan), 3)
        spec["source_seam_score"] = source_seams[key]
        spec["seam_over_source"] = round(spec["seam_score"] / spec["source_seam_score"], 2)

    rss_short, rss_long = runs[0]["peak_rss_mib"], runs[1]["peak_rss_mib"]
    result = {
        "what": "chunked runner (--chunk-frames %d) on the tiny Wan workflow at 32x32, this CPU" % chunk,
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "runs": [{k: v for k, v in r.items() if k not in ("work", "comfyui", "clip", "out", "output")} for r in runs],
        "peak_rss_ratio_long_over_short": round(rss_long / rss_short, 3),
        "flat_within_20_percent": abs(rss_long / rss_short - 1) <= 0.2,
    }
    print(f"\n{'run':<40} {'chunks':>6} {'s':>7} {'peak RSS MiB':>13} {'run above boot':>15} {'seam':>6} "
          f"{'source':>7} {'ratio':>6}")
    for r in runs:
        print(f"{r['label']:<40} {r['chunks']:>6} {r['seconds']:>7.1f} {r['peak_rss_mib']:>13.1f} "
              f"{r['run_rss_above_boot_mib']:>15.1f} {r['seam_score']:>6.2f} {r['source_seam_score']:>7.2f} "
              f"{r['seam_over_source']:>6.2f}")
    print(f"peak RSS {long} / {short} frames: {result['peak_rss_ratio_long_over_short']:.3f} "
          f"(flat within 20 %: {result['flat_within_20_percent']})")
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"long_clip_cpu{'_small' if args.small else ''}.json"
    path.write_text(json.dumps(result, indent=1) + "\n")
    print("wrote", path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
