"""Decode benchmark for ``ZSVR_LoadVideo``'s kernel on the 49-frame 720x480 realrain clips.

Run: ``python bench/bench_decode.py [--repeat N] [--clips DIR]``. No ComfyUI
needed: the pack is imported as ``zsvr`` by ``pack_import.py``, as
``tests/conftest.py`` does it.

For every clip it times ``video_io.load_video`` end to end (open, decode,
RGB conversion and resize, float32 IMAGE output) at the native size and
resized to 480x320, and prints frames per second: the median over ``--repeat``
runs after one warm-up run, and the best run. A PyAV-only baseline (decode and
``to_ndarray('rgb24')``, nothing kept) shows how much of the time is the codec.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import platform
import runpy
import statistics
import sys
import time

PACK_DIR = pathlib.Path(__file__).resolve().parent.parent
runpy.run_path(str(PACK_DIR / "pack_import.py"))["import_pack"]()  # the pack as `zsvr`, its folder off sys.path


def _time(fn, repeat):
    fn()  # warm-up (first torch allocation, codec init)
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        frames = fn()
        times.append(time.perf_counter() - t0)
    return frames, statistics.median(times), min(times)


def main() -> int:
    default_dir = pathlib.Path(os.environ.get("ZSVR_SHARED", PACK_DIR.parent / "shared")) / "data" / "realrain"
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=pathlib.Path, default=default_dir)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    clips = sorted(args.clips.glob("*.mp4"))
    if not clips:
        print(f"no .mp4 clips in {args.clips} (set ZSVR_SHARED or pass --clips)")
        return 1

    import av
    import torch

    from zsvr.kernels import video_io

    print(
        f"python {platform.python_version()}, torch {torch.__version__}, av {av.__version__}, "
        f"{os.cpu_count()} CPU cores, torch threads {torch.get_num_threads()}; "
        f"median (best) of {args.repeat} runs after a warm-up"
    )

    def pyav_only(path):
        def run():
            with av.open(str(path)) as container:
                stream = container.streams.video[0]
                stream.thread_type = "AUTO"
                n = 0
                for frame in container.decode(stream):
                    frame.to_ndarray(format="rgb24")
                    n += 1
            return n

        return run

    def kernel(path, **kw):
        def run():
            return video_io.load_video(str(path), **kw).frame_count

        return run

    cases = [
        ("pyav decode+rgb only", lambda p: pyav_only(p)),
        ("load_video 720x480", lambda p: kernel(p)),
        ("load_video 480x320", lambda p: kernel(p, width=480, height=320)),
    ]
    header = f"{'clip':<10}" + "".join(f"{name:>26}" for name, _ in cases)
    print(header)
    totals = {name: [0, 0.0] for name, _ in cases}
    for clip in clips:
        row = f"{clip.name:<10}"
        for name, make in cases:
            frames, median, best = _time(make(clip), args.repeat)
            totals[name][0] += frames
            totals[name][1] += median
            row += f"{frames / median:>15.0f} ({frames / best:>4.0f}) fps"
        print(row)
    row = f"{'all':<10}"
    for name, _ in cases:
        frames, seconds = totals[name]
        row += f"{frames / seconds:>15.0f} {'':>6} fps"
    print(row)
    return 0


if __name__ == "__main__":
    sys.exit(main())
