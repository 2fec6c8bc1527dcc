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

Clips with cuts (issue 26, ``--cuts``): real shots joined, measured at the cuts with and without shot
awareness, on two models:

* **the test bed** (``bench/testbed``, a Wan 2.1-architecture model trained on this CPU that knows rain; 32x32,
  exact pixel-space "latent", clean ground truth): three held-out rainy clips joined (15 frames, cuts at 5 and
  10), ZSVD at the test bed's best point (strength 6, skip 40 of 100, 50 steps). *Without* shot awareness: the
  whole clip in one graph under core context windows (``ContextWindowsManual``, 5 frames, overlap 2, on the
  time axis), which straddle the cuts and blend across them. *With*: each shot alone (what a chunked run that
  plans its chunks per shot, or splitting the clip at its cuts, gives). Figures: PSNR against the clean clip
  at the frames next to a cut (``c-1``, ``c``) and elsewhere; the seam at each cut (the output's step there
  over the clean clip's step, 1 = the cut is as sharp as in the truth) and the flicker next to it (mean absolute
  error of the frame-to-frame change, output vs truth, on the two steps either side of each cut).
* **the tiny SD1.5 U-Net of the tests** (random weights, so seams, not quality): the three realrain shots of
  ``tests/test_host_shot_cuts.py`` (26 frames at 64x64, cuts at 10 and 17) through each flow-based node in one
  graph, with and without ``shot_cuts``; figures: the bleed at the cut frames (relative difference from each shot
  sampled alone; 0 = no blend), the seam (the step at each cut over the median step) and the flicker next to it.

* **the tests' tiny Wan** (random weights): ZSVD on 12 latent frames of three 4-frame "shots" under core context
  windows (4, overlap 2) vs each shot alone; the bleed at the cut frames and the seam (step at a cut over the
  median step inside the shots).

The in-graph ZVRD nodes take ``shot_cuts``; the core context windows themselves do not know shots, so the
with-awareness arm of the test bed is the per-shot run. Writes ``bench/results/long_clip_cuts_cpu.json``::

    COMFYUI_PATH=../ComfyUI python bench/bench_long_clip.py --cuts
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


# -- clips with cuts (--cuts) -------------------------------------------------------------------------------------
CUT_STEPS = 50
CUT_SETTINGS = {"strength": 6.0, "skip": 20}  # the test bed's best point: strength 6, skip 40 of 100 = 20 of 50
TESTBED_CLIPS = (0, 1, 2)
WINDOW = {"context_length": 5, "context_overlap": 2}


def cut_figures(out, truth, cuts) -> dict:
    """PSNR at the cut frames and elsewhere, seam and flicker at the cuts (``[T, C, H, W]`` tensors)."""
    import math

    t = out.shape[0]
    near = sorted({i for c in cuts for i in (c - 1, c)})
    rest = [i for i in range(t) if i not in near]

    def psnr(idx):
        mse = float((out[idx].clamp(0, 1) - truth[idx]).pow(2).mean())
        return 10 * math.log10(1 / max(mse, 1e-12))

    step_out = (out[1:] - out[:-1]).pow(2).mean(dim=(1, 2, 3))
    step_truth = (truth[1:] - truth[:-1]).pow(2).mean(dim=(1, 2, 3))
    seam = [float(step_out[c - 1] / step_truth[c - 1]) for c in cuts]
    side = sorted({s for c in cuts for s in (c - 3, c - 2, c, c + 1) if 0 <= s < t - 1} - {c - 1 for c in cuts})
    change_err = ((out[1:] - out[:-1]) - (truth[1:] - truth[:-1])).abs().mean(dim=(1, 2, 3))
    inner = [s for s in range(t - 1) if s not in side and s not in {c - 1 for c in cuts}]
    return {"psnr_cut_frames": round(psnr(near), 3), "psnr_elsewhere": round(psnr(rest), 3),
            "seam_at_cuts": round(sum(seam) / len(seam), 3),
            "flicker_next_to_cuts": round(float(change_err[side].mean()), 5),
            "flicker_inside_shots": round(float(change_err[inner].mean()), 5) if inner else None}


def testbed_cuts_worker(spec: dict) -> dict:
    """The test bed: one joined clip under context windows vs each shot alone (see the module docstring)."""
    import torch

    sys.path.insert(0, str(BENCH_DIR))
    _tests_on_path()
    import host_harness
    from bench_testbed import boot
    from testbed import host_nodes

    work = pathlib.Path(spec["work"])
    host, sink, _ = boot(pathlib.Path(spec["comfyui"]), work)
    store: dict = {}
    host.nodes.NODE_CLASS_MAPPINGS["ZSVRBench_Latent"] = host_harness.inject_node(store, "ZSVR/testbed", "LATENT")
    data = host_nodes.heldout_clips()
    rainy = torch.cat([data["rainy"][i] for i in TESTBED_CLIPS])
    clean = torch.cat([data["clean"][i] for i in TESTBED_CLIPS])
    lengths = [data["rainy"][i].shape[0] for i in TESTBED_CLIPS]
    cuts = [sum(lengths[:k]) for k in range(1, len(lengths))]

    def restore(pixels, windows: bool, key: str):
        store[key] = host_nodes.encode_clip(pixels)
        g = host_nodes.zsvd_prompt(0, steps=CUT_STEPS, key="out", **CUT_SETTINGS)
        g["clip"] = {"class_type": "ZSVRBench_Latent", "inputs": {"key": key}}
        if windows:
            g["m0"] = g["m"]
            g["m"] = {"class_type": "ContextWindowsManual", "inputs": {
                "model": ["m0", 0], **WINDOW, "context_schedule": "standard_static", "context_stride": 1,
                "closed_loop": False, "fuse_method": "pyramid", "dim": 2}}
        done = host.execute(g)
        if not done.success:
            raise RuntimeError(done.error_text())
        return host_nodes.decode_latent(sink.pop("out"))

    started = time.perf_counter()
    joined = restore(rainy, True, "joined")
    alone = torch.cat([restore(rainy[s:s + n], False, f"shot{k}")
                       for k, (s, n) in enumerate(zip([0] + cuts, lengths))])
    return {"cuts": cuts, "frames": int(rainy.shape[0]), "seconds": round(time.perf_counter() - started, 1),
            "rainy_input": cut_figures(rainy, clean, cuts),
            "windows_across_cuts": cut_figures(joined, clean, cuts),
            "per_shot": cut_figures(alone, clean, cuts)}


def tiny_cuts_worker(spec: dict) -> dict:
    """The tiny SD1.5 U-Net: each flow node on the joined realrain shots with and without shot_cuts."""
    import torch

    _tests_on_path()
    import host_harness
    import test_host_shot_cuts as t

    from zsvr.kernels import shot_cuts as sc

    host = host_harness.Host(pathlib.Path(spec["comfyui"]), pathlib.Path(spec["work"]) / "host")
    frames = [f for name, count in t.SHOTS for f in t._shot_frames(name, count)]
    images = torch.stack([torch.from_numpy(f).float() / 255 for f in frames])
    found = sc.find_cuts(images)
    cuts = sc.ShotCuts(tuple(found), images.shape[0])
    latent = t._latent_for(images)
    bounds = sc.shot_bounds(found, images.shape[0])
    nodes = {
        "temporal consistency guidance": ("ZSVR_TemporalConsistencyGuidance", {
            "model": "MODEL", "weight": 0.3, "mode": "x0", "frames_per_video": 0, "start_percent": 0.0,
            "end_percent": 1.0}, "euler", 0.6),
        "SLR temporal attention": ("ZSVR_SLRTemporalAttention", {
            "model": "MODEL", "trajectory_start": 0.0, "frames_per_video": 0, "start_percent": 0.0,
            "end_percent": 1.0}, "euler", 0.6),
        "noise sharing (lambda 0.3)": ("ZSVR_NoiseSharing", {"noise_seed": 5, "sampler": "SAMPLER", "lambda": 0.3},
                                       "euler_ancestral", 1.0),
    }

    def sample(kind, inputs, sampler, denoise, imgs, lat, shot_cuts, key):
        host.store[key + "_img"], host.store[key + "_lat"] = imgs, {"samples": lat}
        given = dict(inputs, image=("inject", key + "_img"))
        if shot_cuts is not None:
            host.store[key + "_cuts"] = shot_cuts
            given["shot_cuts"] = ("inject", key + "_cuts")
        return host_harness.run_samples(host, t._graph(host, latent_key=key + "_lat", flow_node=(kind, given),
                                                       capture=key, sampler=sampler, denoise=denoise), key)

    def figures(out, alone):
        near = sorted({i for c in found for i in (c - 1, c)})
        step = (out[1:] - out[:-1]).pow(2).mean(dim=(1, 2, 3))
        cut_steps = {c - 1 for c in found}
        side = sorted({s for c in found for s in (c - 3, c - 2, c, c + 1) if 0 <= s < len(step)} - cut_steps)
        median = float(step[[s for s in range(len(step)) if s not in cut_steps and s not in side]].median())
        return {"bleed_at_cut_frames": round(max(host_harness.rel_error(out[i], alone[i]) for i in near), 5),
                "seam_at_cuts": round(float(step[[c - 1 for c in found]].mean()) / median, 3),
                "flicker_next_to_cuts": round(float(step[side].mean()) / median, 3)}

    results = {}
    for label, (kind, inputs, sampler, denoise) in nodes.items():
        key = kind.lower()
        alone = torch.cat([sample(kind, inputs, sampler, denoise, images[a:b].clone(), latent[a:b].clone(), None,
                                  f"{key}_alone{k}") for k, (a, b) in enumerate(bounds)])
        results[label] = {
            "without_shot_cuts": figures(sample(kind, inputs, sampler, denoise, images, latent, None, key + "_off"),
                                         alone),
            "with_shot_cuts": figures(sample(kind, inputs, sampler, denoise, images, latent, cuts, key + "_on"),
                                      alone)}
    return {"cuts_found": found, "cuts_expected": [10, 17], "frames": int(images.shape[0]), "nodes": results}


def wan_cuts_worker(spec: dict) -> dict:
    """The tests' tiny Wan (random weights): ZSVD on a 12-latent-frame clip of three 4-frame "shots" (each its own
    random picture with small changes per frame), under core context windows of 4 overlapping 2 (straddling both
    cuts) vs each shot alone. Figures on the latents: the bleed at the cut frames (relative difference from the
    shots alone) and the seam (the step at each cut over the median step inside the shots)."""
    import torch

    _tests_on_path()
    import host_harness
    from test_host_context_windows import _windowed_zsvd
    from test_host_inversion import _graph as zsvd_graph

    host = host_harness.Host(pathlib.Path(spec["comfyui"]), pathlib.Path(spec["work"]) / "host")
    gen = torch.Generator().manual_seed(0)
    shots, per = 3, 4
    latent = torch.cat([torch.randn(1, 16, 1, 4, 4, generator=gen) * 2 + 0.4 * torch.randn(1, 16, per, 4, 4,
                                                                                            generator=gen)
                        for _ in range(shots)], dim=2)
    cuts = [per * k for k in range(1, shots)]

    def run(lat, windows, key):
        host.store[key] = {"samples": lat.contiguous()}
        g = zsvd_graph(host, "wan", "ddpm", 8, steps=20, remove_seed=99, strength=6.0, latent_key=key, capture=key)
        if windows:
            g = _windowed_zsvd(g, length=4, overlap=2)
        res = host.run(g)
        if not res.success:
            raise RuntimeError(res.error_message)
        return host.captured[key]["samples"].float()

    joined = run(latent, True, "wan_joined")
    alone = torch.cat([run(latent[:, :, a:a + per], False, f"wan_alone{k}") for k, a in enumerate([0] + cuts)], 2)

    def figures(out):
        x = out[0].permute(1, 0, 2, 3)  # [T, C, h, w]
        step = (x[1:] - x[:-1]).pow(2).mean(dim=(1, 2, 3))
        inside = [s for s in range(len(step)) if s + 1 not in cuts]
        near = sorted({i for c in cuts for i in (c - 1, c)})
        ref = alone[0].permute(1, 0, 2, 3)
        return {"bleed_at_cut_frames": round(max(host_harness.rel_error(x[i], ref[i]) for i in near), 4),
                "seam_at_cuts": round(float(step[[c - 1 for c in cuts]].mean() / step[inside].median()), 3)}

    return {"latent_frames": int(latent.shape[2]), "cuts": cuts, "windows": {"length": 4, "overlap": 2},
            "windows_across_cuts": figures(joined), "per_shot": figures(alone)}


def cuts_main(comfyui: pathlib.Path, out_dir: pathlib.Path, command: str) -> int:
    import datetime

    import torch

    work = pathlib.Path(tempfile.mkdtemp(prefix="zsvr_bench_cuts_"))
    parts = {}
    for part in ("testbed", "tiny", "wan"):
        print(f"running: {part} ...", flush=True)
        proc = subprocess.run([sys.executable, __file__, "--cuts-worker", part,
                               json.dumps({"comfyui": str(comfyui), "work": str(work / part)})],
                              capture_output=True, text=True)
        if proc.returncode != 0:
            raise SystemExit(f"worker failed ({part}):\n{proc.stderr[-4000:]}")
        parts[part] = json.loads(proc.stdout.strip().splitlines()[-1])
    result = {
        "what": "clips with cuts: shot-aware vs not, at the cuts (issue 26); see bench/bench_long_clip.py",
        "command": command, "device": "cpu", "torch": torch.__version__,
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%MZ"),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "runner_per_shot_chunks": "not measured here: the chunked runner's per-shot planning (issue 26 item 2) was "
                                  "not on main when this ran; the per-shot arm of the test bed is the same "
                                  "computation (each shot restored on its own)",
        "testbed": parts["testbed"], "tiny_sd15_in_graph": parts["tiny"], "tiny_wan_windows": parts["wan"],
    }
    tb = parts["testbed"]
    print(f"\ntest bed, {tb['frames']} frames, cuts {tb['cuts']}:")
    print(f"{'arm':<24} {'PSNR cut frames':>16} {'PSNR elsewhere':>15} {'seam':>6} {'flicker near cut':>17}")
    for arm in ("rainy_input", "windows_across_cuts", "per_shot"):
        f = tb[arm]
        print(f"{arm:<24} {f['psnr_cut_frames']:>16.2f} {f['psnr_elsewhere']:>15.2f} {f['seam_at_cuts']:>6.2f} "
              f"{f['flicker_next_to_cuts']:>17.4f}")
    tiny = parts["tiny"]
    print(f"\ntiny SD1.5 in one graph, cuts found {tiny['cuts_found']} (expected {tiny['cuts_expected']}):")
    print(f"{'node':<32} {'arm':<18} {'bleed':>8} {'seam':>6} {'flicker':>8}")
    for node, arms in tiny["nodes"].items():
        for arm, f in arms.items():
            print(f"{node:<32} {arm:<18} {f['bleed_at_cut_frames']:>8.4f} {f['seam_at_cuts']:>6.2f} "
                  f"{f['flicker_next_to_cuts']:>8.2f}")
    wan = parts["wan"]
    print(f"\ntiny Wan ZSVD, {wan['latent_frames']} latent frames, cuts {wan['cuts']}:")
    for arm in ("windows_across_cuts", "per_shot"):
        f = wan[arm]
        print(f"{arm:<24} bleed {f['bleed_at_cut_frames']:.4f}  seam {f['seam_at_cuts']:.2f}")
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "long_clip_cuts_cpu.json"
    path.write_text(json.dumps(result, indent=1) + "\n")
    print("wrote", path)
    return 0


def run_spec(spec: dict) -> dict:
    proc = subprocess.run([sys.executable, __file__, "--worker", json.dumps(spec)], capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"worker failed ({spec['label']}):\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--small", action="store_true", help="45 and 180 frames in 17-frame chunks (a quick check)")
    parser.add_argument("--out", type=pathlib.Path, default=RESULTS, help="where the JSON goes (default bench/results)")
    parser.add_argument("--cuts", action="store_true", help="clips with cuts: shot-aware vs not (issue 26)")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--cuts-worker", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(json.loads(args.worker))))
        return 0
    if args.cuts_worker:
        part, spec = args.cuts_worker
        run = {"testbed": testbed_cuts_worker, "tiny": tiny_cuts_worker, "wan": wan_cuts_worker}[part]
        print(json.dumps(run(json.loads(spec))))
        return 0

    comfyui = pathlib.Path(os.environ.get("COMFYUI_PATH", PACK_DIR.parent.parent)).resolve()
    if not (comfyui / "nodes.py").is_file():
        parser.error(f"no ComfyUI at {comfyui}; set COMFYUI_PATH")
    if args.cuts:
        return cuts_main(comfyui, args.out, "COMFYUI_PATH=../ComfyUI python bench/bench_long_clip.py --cuts")
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
