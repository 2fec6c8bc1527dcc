"""Hostile clips into ``ZSVR_LoadVideo``'s kernel: each ends in a clear error or a correct result, in bounded time
and memory, and never crashes the process (issue 23 item 4, the kernel part of the sweep).

Seeded mutations of the pack's example clip (truncated, bytes flipped, blocks overwritten with 0xFF, which in an
MP4's boxes claims huge sizes and counts) are decoded at 64x64 by ``video_io.load_video`` in one child process,
so a crash in the decoder is caught as the case it happened on instead of killing the test run. A case passes
when it gives finite frames in 0..1 of the asked size, or raises ``ParameterError`` naming ``path`` with a fix.
"""

from __future__ import annotations

import json
import pathlib
import random
import subprocess
import sys
import textwrap

PACK_DIR = pathlib.Path(__file__).resolve().parent.parent
CLIP = PACK_DIR / "example_media" / "zsvr_example_rain.mp4"
CASES = 36
SECONDS_PER_CASE = 20.0
EXTRA_MEMORY_MB = 1500  # the child's peak RSS above its start: 64x64 frames need a few MB; a claimed size must not


def mutations(data: bytes, count: int, seed: int = 0) -> list[tuple[str, bytes]]:
    """``count`` seeded hostile variants of ``data`` with a short name each."""
    rng = random.Random(seed)
    out = []
    for i in range(count):
        kind = ("truncate", "flip", "ff-block")[i % 3]
        buf = bytearray(data)
        if kind == "truncate":
            cut = rng.randrange(1, len(buf))
            buf = buf[:cut]
            name = f"truncate@{cut}"
        elif kind == "flip":
            spots = [rng.randrange(len(buf)) for _ in range(rng.choice((1, 8, 64)))]
            for spot in spots:
                buf[spot] ^= 1 << rng.randrange(8)
            name = f"flip{len(spots)}@{spots[0]}"
        else:  # near the start (ftyp/moov headers) or anywhere
            start = rng.randrange(min(len(buf), 4096)) if rng.random() < 0.5 else rng.randrange(len(buf))
            length = rng.choice((4, 16, 256))
            buf[start:start + length] = b"\xff" * len(buf[start:start + length])
            name = f"ff{length}@{start}"
        out.append((name, bytes(buf)))
    return out


CHILD = textwrap.dedent("""
    import json, math, resource, runpy, sys, time
    runpy.run_path(sys.argv[1])["import_pack"]()
    from zsvr.kernels import video_io
    from zsvr.kernels.errors import ParameterError
    start_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    for path in sys.argv[2:]:
        print(json.dumps({"case": path, "started": True}), flush=True)
        t0 = time.perf_counter()
        try:
            out = video_io.load_video(path, width=64, height=64, audio=True)
            images = out.images
            ok = (images.ndim == 4 and tuple(images.shape[1:]) == (64, 64, 3) and images.shape[0] >= 1
                  and bool(images.isfinite().all()) and float(images.min()) >= 0 and float(images.max()) <= 1)
            result = {"outcome": "frames" if ok else "wrong frames", "frames": int(images.shape[0])}
        except ParameterError as exc:
            clear = exc.parameter == "path" and bool(exc.fix)
            result = {"outcome": "clear error" if clear else "unclear error", "message": str(exc)[:200]}
        except Exception as exc:
            result = {"outcome": "unexpected " + type(exc).__name__, "message": str(exc)[:200]}
        grown = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - start_rss) / 1024
        result.update(case=path, seconds=round(time.perf_counter() - t0, 2), grown_mb=round(grown))
        print(json.dumps(result), flush=True)
""")


def test_hostile_variants_of_the_example_clip_end_in_a_clear_error_or_correct_frames(tmp_path):
    cases = []
    for i, (name, data) in enumerate(mutations(CLIP.read_bytes(), CASES)):
        path = tmp_path / f"case{i:02d}.mp4"
        path.write_bytes(data)
        cases.append((str(path), name))
    names = dict(cases)
    done = subprocess.run([sys.executable, "-c", CHILD, str(PACK_DIR / "pack_import.py"), *names],
                          capture_output=True, text=True, timeout=SECONDS_PER_CASE * CASES + 60)
    lines = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    results = [r for r in lines if "outcome" in r]
    started = [r["case"] for r in lines if r.get("started")]
    crashed = started[len(results)] if len(started) > len(results) else None
    assert done.returncode == 0 and crashed is None, \
        f"the decoder crashed (exit {done.returncode}) on {names.get(crashed)}: {done.stderr[-1500:]}"
    assert len(results) == CASES
    bad = [(names[r["case"]], r) for r in results if r["outcome"] not in ("frames", "clear error")]
    assert bad == []
    slow = [(names[r["case"]], r["seconds"]) for r in results if r["seconds"] > SECONDS_PER_CASE]
    assert slow == []
    assert max(r["grown_mb"] for r in results) < EXTRA_MEMORY_MB
    counts = {o: sum(r["outcome"] == o for r in results) for o in ("frames", "clear error")}
    print(f"hostile clips: {CASES} cases, {counts['clear error']} clear errors, {counts['frames']} correct results, "
          "0 crashes")
    assert counts["clear error"] > 0  # the mutations do break clips (the sweep is not vacuous)
