#!/usr/bin/env python
"""A longer seeded hostile-input sweep of ``ZSVR_LoadVideo``'s kernel and the pack's path check (issue 23).

Two parts, both seeded (``--seed``) so a run can be repeated case for case:

* **Clips** (``--cases``, default 600): hostile variants of the pack's example clip and of a small MJPEG AVI,
  built by ``tests/hostile_media.py``: truncated, bits flipped, blocks of 0xFF (a third of them together with a
  header claim), and headers that lie: YUV4MPEG2 frame sizes up to 65536x65536, MP4 ``stts`` and AVI frame
  counts up to 2^32-1, MP4 ``avc1``/``tkhd`` sizes and JPEG SOF sizes up to 65535. Each is decoded at 64x64 by
  ``video_io.load_video`` (sound too) in a child process capped in address space (``RLIMIT_AS``: its size after
  the imports plus ``--extra-mb``), a batch of cases per child; a child that dies is restarted after the case it
  died on, which counts as a **crash**. A case is a **clear error** (``ParameterError`` naming ``path`` with a
  fix), a **correct result** (finite frames in 0..1 of the asked size), or a failure (anything else: an unclear
  error, wrong frames, a crash, over ``--seconds`` per case). The children work in an empty folder of their own;
  it and the clips' folder are listed before and after (**files created**: none expected).
* **Names** (``--names``, default 2000): seeded hostile names (``..``, absolute paths, drive letters,
  backslashes, NUL bytes, links in the folder that lead out or stay in) through the check every node and the
  runner use (``kernels/confined_paths.py``: ``check_relative_name`` then ``inside``). An **escape** is a name
  the check accepts whose real path (``os.path.realpath``, compared independently) lies outside the folder.

Usage (from the pack's folder)::

    python bench/bench_hostile_inputs.py                  # 600 clips, 2000 names
    python bench/bench_hostile_inputs.py --cases 60       # quicker

Writes ``bench/results/hostile_inputs_cpu.json`` (counts, per-kind counts, the slowest cases, date, versions,
the command).
"""

from __future__ import annotations

import argparse
import collections
import datetime
import json
import os
import pathlib
import platform
import random
import runpy
import sys
import tempfile
import time

BENCH_DIR = pathlib.Path(__file__).resolve().parent
PACK_DIR = BENCH_DIR.parent
TESTS_DIR = PACK_DIR / "tests"
RESULTS = BENCH_DIR / "results"

runpy.run_path(str(PACK_DIR / "pack_import.py"))["import_pack"]()  # the pack as `zsvr`, its folder off sys.path
if str(TESTS_DIR) not in sys.path:
    sys.path.insert(0, str(TESTS_DIR))

import hostile_media  # noqa: E402

BATCH = 50


def clip_cases(count: int, seed: int, scratch: pathlib.Path) -> list[tuple[str, str, bytes]]:
    """``count`` seeded ``(kind, label, bytes, ext)`` hostile clips."""
    rng = random.Random(seed)
    mp4 = hostile_media.CLIP.read_bytes()
    avi = hostile_media.mjpeg_avi(scratch / "source.avi")
    sides = (0, 1, 2, 7, 64, 720, 4096, 7680, 8192, 16383, 16384, 16385, 30000, 65535, 65536)
    counts = (0, 1, 48, 50, 1000, 10**6, 10**9, 2**31 - 1, 2**32 - 1)
    damaged = hostile_media.mutations(mp4, count, seed)
    cases = []
    for i in range(count):
        kind = ("damage", "y4m-size", "mp4-frames", "mp4-size", "avi-frames", "jpeg-size")[i % 6]
        if kind == "damage":
            label, data = damaged[i // 6]  # truncated, flipped, 0xFF blocks in turn
            cases.append((kind, label, data, "mp4"))
            continue
        if kind == "y4m-size":
            w, h = max(1, rng.choice(sides)), max(1, rng.choice(sides))
            real = w * h <= 64 * 64 * 4
            data = hostile_media.y4m_clip(w, h, rng.choice((1, 3)), None if real else rng.choice((0, 100, 4608)))
            label, ext = f"y4m {w}x{h}{' real' if real else ''}", "y4m"
        elif kind == "mp4-frames":
            n = rng.choice(counts)
            data, label, ext = hostile_media.claim_mp4_frames(mp4, n), f"stts {n}", "mp4"
        elif kind == "mp4-size":
            w, h = rng.choice(sides[:-1]), rng.choice(sides[:-1])
            data, label, ext = hostile_media.claim_mp4_dims(mp4, w, h), f"avc1/tkhd {w}x{h}", "mp4"
        elif kind == "avi-frames":
            n = rng.choice(counts)
            data, label, ext = hostile_media.claim_avi_frames(avi, n), f"avih/strh {n}", "avi"
        else:
            w, h = rng.choice(sides[:-1]), rng.choice(sides[:-1])
            data, label, ext = hostile_media.claim_jpeg_dims(avi, w, h), f"SOF {w}x{h}", "avi"
        if rng.random() < 1 / 3:  # a claim and damage together
            (more, data), = hostile_media.mutations(data, 1, rng.randrange(1 << 30))
            label += f" + {more}"
        cases.append((kind, label, data, ext))
    return cases


def run_clips(args, scratch: pathlib.Path) -> dict:
    cases = clip_cases(args.cases, args.seed, scratch)
    folder = scratch / "clips"
    folder.mkdir()
    paths, meta = [], {}
    for i, (kind, label, data, ext) in enumerate(cases):
        path = folder / f"case{i:04d}.{ext}"
        path.write_bytes(data)
        paths.append(str(path))
        meta[str(path)] = (kind, label)
    cwd = scratch / "cwd"
    cwd.mkdir()
    before = sorted(p.name for p in scratch.rglob("*"))
    results: dict[str, dict] = {}
    todo = list(paths)
    t0 = time.perf_counter()
    while todo:
        batch, todo = todo[:BATCH], todo[BATCH:]
        got, crashed, stderr = hostile_media.decode_in_child(batch, args.extra_mb, args.seconds * len(batch) + 60,
                                                              cwd=cwd)
        for r in got:
            results[r["case"]] = r
        if crashed is not None:
            at = batch.index(crashed) if crashed in batch else len(got)
            if at < len(batch):
                results[batch[at]] = {"case": batch[at], "outcome": "crash", "message": stderr[-300:]}
            todo = batch[at + 1:] + todo
    wall = time.perf_counter() - t0
    after = sorted(p.name for p in scratch.rglob("*"))
    by_kind = collections.defaultdict(collections.Counter)
    for path in paths:
        r = results[path]
        outcome = r["outcome"]
        if outcome not in ("frames", "clear error", "crash"):
            outcome = "other: " + outcome
        elif outcome == "frames":
            outcome = "correct"
        if outcome != "crash" and r.get("seconds", 0) > args.seconds:
            outcome = "too slow"
        by_kind[meta[path][0]][outcome] += 1
        r["label"] = meta[path][1]
    total = collections.Counter()
    for counter in by_kind.values():
        total.update(counter)
    failures = [{"label": results[p]["label"], **{k: results[p].get(k) for k in ("outcome", "message")}}
                for p in paths if results[p]["outcome"] not in ("frames", "clear error")]
    slowest = sorted((results[p] for p in paths if "seconds" in results[p]), key=lambda r: -r["seconds"])[:5]
    examples = {}  # per kind, one clear error: one about a claimed size or count where there is one

    def telling(message: str) -> int:
        return 2 if " claims frames of " in message else 1 if " declares " in message else 0

    for p in paths:
        kind, r = meta[p][0], results[p]
        if r["outcome"] == "clear error" and telling(r["message"]) > telling(examples.get(kind, {}).get("message", "")):
            examples[kind] = {"label": r["label"], "message": r["message"]}
        elif r["outcome"] == "clear error" and kind not in examples:
            examples[kind] = {"label": r["label"], "message": r["message"]}
    return {
        "cases": len(paths),
        "clear_errors": total["clear error"],
        "correct": total["correct"],
        "crashes": total["crash"],
        "other_failures": sum(n for k, n in total.items() if k not in ("clear error", "correct", "crash")),
        "files_created": len(set(after) - set(before)),
        "by_kind": {k: dict(v) for k, v in sorted(by_kind.items())},
        "failures": failures[:20],
        "slowest": [{"label": r["label"], "seconds": r["seconds"], "outcome": r["outcome"]} for r in slowest],
        "clear_error_examples": examples,
        "wall_s": round(wall, 1),
    }


def hostile_name(rng: random.Random) -> str:
    parts = []
    for _ in range(rng.randint(1, 5)):
        parts.append(rng.choice(("..", ".", "", "a", "clip.mp4", "in_link", "out_link", "C:", "..\\..", "a\0b",
                                 "~", "%2e%2e", "...", " ", "sub")))
    sep = rng.choice(("/", "\\", "/"))
    name = sep.join(parts)
    if rng.random() < 0.2:
        name = rng.choice(("/", "\\", "C:\\", "//", "/tmp/")) + name
    return name


def run_names(args, scratch: pathlib.Path) -> dict:
    from zsvr.kernels import confined_paths
    from zsvr.kernels.errors import ParameterError

    folder = scratch / "input"
    (folder / "sub").mkdir(parents=True)
    (folder / "a").mkdir()
    outside = scratch / "outside"
    outside.mkdir()
    (folder / "out_link").symlink_to(outside, target_is_directory=True)
    (folder / "in_link").symlink_to(folder / "sub", target_is_directory=True)
    (folder / "sub" / "up").symlink_to(scratch, target_is_directory=True)
    rng = random.Random(args.seed + 1)
    counts = collections.Counter()
    escapes = []
    real_folder = os.path.realpath(folder)
    for _ in range(args.names):
        name = hostile_name(rng)
        try:
            checked = confined_paths.check_relative_name(name, "video")
            accepted = confined_paths.inside(folder / checked, [folder])
        except ParameterError:
            accepted = False
        counts["accepted" if accepted else "refused"] += 1
        if accepted:
            real = os.path.realpath(os.path.join(folder, name.replace("\\", "/")))
            if os.path.commonpath([real, real_folder]) != real_folder:
                escapes.append(name)
    return {"names": args.names, "accepted": counts["accepted"], "refused": counts["refused"],
            "escapes": len(escapes), "escape_examples": escapes[:10]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=600)
    parser.add_argument("--names", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=23)
    parser.add_argument("--extra-mb", type=int, default=1500,
                        help="each child's address space above its size after the imports (MB)")
    parser.add_argument("--seconds", type=float, default=20.0, help="the time bound per case")
    parser.add_argument("--out", type=pathlib.Path, default=RESULTS / "hostile_inputs_cpu.json")
    args = parser.parse_args()

    import av
    import torch

    with tempfile.TemporaryDirectory(prefix="zsvr_hostile_") as tmp:
        scratch = pathlib.Path(tmp)
        (scratch / "c").mkdir()
        (scratch / "n").mkdir()
        clips = run_clips(args, scratch / "c")
        names = run_names(args, scratch / "n")
    record = {
        "benchmark": "hostile_inputs",
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "command": "python bench/bench_hostile_inputs.py " + " ".join(sys.argv[1:]),
        "device": "cpu",
        "python": platform.python_version(),
        "torch": torch.__version__,
        "av": av.__version__,
        "ffmpeg": ".".join(str(v) for v in av.library_versions.get("libavformat", ())),
        "cpu_count": os.cpu_count(),
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "seed": args.seed,
        "memory_cap": f"RLIMIT_AS = the child's size after the imports + {args.extra_mb} MB",
        "seconds_per_case_bound": args.seconds,
        "clips": clips,
        "paths": names,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=2) + "\n")
    print(f"clips: {clips['cases']} cases, {clips['clear_errors']} clear errors, {clips['correct']} correct, "
          f"{clips['crashes']} crashes, {clips['other_failures']} other failures, "
          f"{clips['files_created']} files created ({clips['wall_s']} s)")
    print(f"names: {names['names']} names, {names['accepted']} accepted, {names['refused']} refused, "
          f"{names['escapes']} escapes")
    for kind, counter in clips["by_kind"].items():
        print(f"  {kind:12s} {counter}")
    print(f"wrote {args.out}")
    ok = (clips["crashes"] == 0 and clips["other_failures"] == 0 and clips["files_created"] == 0
          and names["escapes"] == 0)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
