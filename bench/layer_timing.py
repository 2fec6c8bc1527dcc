"""The frame the per-layer cost benchmarks share (``bench_slr.py``, ``bench_swcfa.py``, ``bench_flow.py``).

One rule for timing a torch callable, so that the benches' figures are comparable: ``warmup`` untimed calls,
then ``repeat`` timed calls, each closed by a device synchronise (CUDA kernels run asynchronously, so the clock
would otherwise stop before the work does); the median is the figure, the best the floor. The same device and
dtype defaults (CUDA float16, CPU float32 with ``--small``) and the same result-file name
(``<bench>_<device>_[small_]<date>.json``) for every such bench.
"""

from __future__ import annotations

import datetime
import pathlib
import platform
import re
import statistics
import time

import torch


def sync(device: torch.device) -> None:
    """Wait for ``device``'s queued work (a no-op off CUDA)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def median_best(fn, device: torch.device, warmup: int, repeat: int, peak: bool = False):
    """``(median s, best s)`` of ``repeat`` calls of ``fn`` after ``warmup`` untimed ones; with ``peak``, a third
    item: the peak CUDA memory allocated above what was allocated before the timed calls (bytes; None off CUDA)."""
    for _ in range(warmup):
        fn()
    sync(device)
    times = []
    extra = None
    if peak and device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - t0)
    if peak and device.type == "cuda":
        extra = torch.cuda.max_memory_allocated(device) - base
    result = (statistics.median(times), min(times))
    return result + (extra,) if peak else result


def add_device_args(parser, small_help: str) -> None:
    """The options :func:`device_and_dtype` reads: ``--small`` (``small_help``: the bench's CPU-sized problem),
    ``--device`` and ``--dtype``."""
    parser.add_argument("--small", action="store_true", help=small_help)
    parser.add_argument("--device", default=None, help="cuda or cpu (default: cuda if available, cpu with --small)")
    parser.add_argument("--dtype", default=None, choices=["float16", "bfloat16", "float32"])


def device_and_dtype(args) -> tuple[torch.device, torch.dtype]:
    """Fill ``args.device`` (CUDA if there is one, CPU with ``args.small``) and ``args.dtype`` (float16 on CUDA,
    float32 on the CPU) where the command line left them out; return them as torch objects."""
    if args.device is None:
        args.device = "cpu" if args.small or not torch.cuda.is_available() else "cuda"
    device = torch.device(args.device)
    if args.dtype is None:
        args.dtype = "float32" if device.type == "cpu" else "float16"
    return device, getattr(torch, args.dtype)


def device_name(device: torch.device) -> str:
    """The GPU's name, or the CPU's as the platform reports it (``cpu`` where it reports none)."""
    return torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu"


def result_path(out: pathlib.Path, bench: str, name: str, device: torch.device, small: bool) -> pathlib.Path:
    """``out/<bench>_<device name as a slug>_[small_]<local date-time>.json``, ``out`` created."""
    out.mkdir(parents=True, exist_ok=True)
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    tag = re.sub(r"[^A-Za-z0-9]+", "-", name).strip("-").lower() or device.type
    return out / f"{bench}_{tag}_{'small_' if small else ''}{stamp}.json"
