"""Hostile media for ``ZSVR_LoadVideo``'s kernel, and the capped child process that decodes them (issue 23).

Shared by ``tests/test_hostile_clips.py`` (a few dozen cases, seconds) and ``bench/bench_hostile_inputs.py`` (a few
hundred, minutes):

* :func:`mutations`: seeded damage to a clip's bytes (truncated, bits flipped, blocks overwritten with 0xFF, which
  in an MP4's boxes claims huge sizes and counts);
* header claims: :func:`y4m_clip` (a YUV4MPEG2 header states the frame size in text, so any claim is one line),
  :func:`claim_mp4_frames` (the MP4 ``stts`` sample count: the stream then declares that many frames),
  :func:`claim_mp4_dims` (the ``avc1`` and ``tkhd`` sizes; H.264's own SPS still decides), :func:`mjpeg_avi`,
  :func:`claim_avi_frames` (``avih`` / ``strh`` frame counts) and :func:`claim_jpeg_dims` (each JPEG's SOF size,
  which the MJPEG decoder believes);
* :func:`decode_in_child`: runs ``video_io.load_video`` on each file in one child process whose address space is
  capped (``RLIMIT_AS``: its size after the imports plus ``extra_mb``), one JSON line per case, so a crash or an
  allocation for a claimed size shows as the case it happened on instead of killing the caller.
"""

from __future__ import annotations

import json
import pathlib
import random
import struct
import subprocess
import sys
import textwrap
from typing import Optional

PACK_DIR = pathlib.Path(__file__).resolve().parent.parent
CLIP = PACK_DIR / "example_media" / "zsvr_example_rain.mp4"


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


def y4m_clip(width: int, height: int, frames: int, frame_bytes: Optional[int] = None, value: int = 128) -> bytes:
    """A YUV4MPEG2 (4:2:0) clip whose header claims ``width`` x ``height``; each frame holds ``frame_bytes`` bytes
    (None: the true size, ``width * height * 3 / 2``, so the clip is real), all ``value``."""
    size = width * height * 3 // 2 if frame_bytes is None else frame_bytes
    head = f"YUV4MPEG2 W{width} H{height} F25:1 Ip A1:1 C420jpeg\n".encode()
    return head + (b"FRAME\n" + bytes([value]) * size) * frames


def _box(data: bytes, name: bytes, after: int = 0) -> int:
    at = data.find(name, after)
    if at < 0:
        raise ValueError(f"no {name!r} box")
    return at  # the 4-byte type; the box's size is the 4 bytes before it


def claim_mp4_frames(data: bytes, frames: int) -> bytes:
    """The MP4 with its first ``stts`` entry's sample count set to ``frames`` (the stream declares that many)."""
    buf = bytearray(data)
    at = _box(buf, b"stts", _box(buf, b"moov"))
    buf[at + 12:at + 16] = struct.pack(">I", frames)  # after version/flags and the entry count
    return bytes(buf)


def claim_mp4_dims(data: bytes, width: int, height: int) -> bytes:
    """The MP4 with its ``avc1`` sample entry and ``tkhd`` claiming ``width`` x ``height`` (at most 65535)."""
    buf = bytearray(data)
    moov = _box(buf, b"moov")
    avc1 = _box(buf, b"avc1", _box(buf, b"stsd", moov))
    buf[avc1 + 28:avc1 + 32] = struct.pack(">HH", width, height)
    tkhd = _box(buf, b"tkhd", moov)
    size_at = tkhd + 4 + 4 * 6 + 8 + 8 + 36  # version 0: flags, times, ids, duration, reserved, layer.., matrix
    buf[size_at:size_at + 8] = struct.pack(">II", width << 16, height << 16)
    return bytes(buf)


def mjpeg_avi(path: pathlib.Path, frames: int = 5, width: int = 64, height: int = 48) -> bytes:
    """A small real MJPEG-in-AVI clip (grey ramps), written to ``path``; returns its bytes."""
    import av
    import numpy as np

    with av.open(str(path), "w") as container:
        stream = container.add_stream("mjpeg", rate=25)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuvj420p"
        for i in range(frames):
            frame = av.VideoFrame.from_ndarray(np.full((height, width, 3), 30 + 40 * i, np.uint8), format="rgb24")
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path.read_bytes()


def claim_avi_frames(data: bytes, frames: int) -> bytes:
    """The AVI with its ``avih`` total-frame count and its video ``strh`` length set to ``frames``."""
    buf = bytearray(data)
    avih = _box(buf, b"avih")
    buf[avih + 24:avih + 28] = struct.pack("<I", frames)  # dwTotalFrames
    strh = _box(buf, b"strh")
    buf[strh + 40:strh + 44] = struct.pack("<I", frames)  # dwLength
    return bytes(buf)


def claim_jpeg_dims(data: bytes, width: int, height: int) -> bytes:
    """Every baseline JPEG frame (SOF0 marker) in ``data`` claiming ``width`` x ``height`` (at most 65535)."""
    buf = bytearray(data)
    at = buf.find(b"\xff\xc0")
    while at >= 0:
        buf[at + 5:at + 9] = struct.pack(">HH", height, width)
        at = buf.find(b"\xff\xc0", at + 2)
    return bytes(buf)


CHILD = textwrap.dedent("""
    import json, resource, runpy, sys, time
    runpy.run_path(sys.argv[1])["import_pack"]()
    from zsvr.kernels import video_io
    from zsvr.kernels.errors import ParameterError
    extra = int(sys.argv[2]) * 1024 * 1024
    with open("/proc/self/status") as status:
        vm = next(int(line.split()[1]) * 1024 for line in status if line.startswith("VmSize:"))
    resource.setrlimit(resource.RLIMIT_AS, (vm + extra, vm + extra))
    for path in sys.argv[3:]:
        print(json.dumps({"case": path, "started": True}), flush=True)
        t0 = time.perf_counter()
        try:
            out = video_io.load_video(path, width=64, height=64, audio=True)
            images = out.images
            ok = (images.ndim == 4 and tuple(images.shape[1:]) == (64, 64, 3) and images.shape[0] >= 1
                  and bool(images.isfinite().all()) and float(images.min()) >= 0 and float(images.max()) <= 1)
            result = {"outcome": "frames" if ok else "wrong frames", "frames": int(images.shape[0]),
                      "mean": float(images.mean()), "warnings": out.warnings}
        except ParameterError as exc:
            clear = exc.parameter == "path" and bool(exc.fix)
            result = {"outcome": "clear error" if clear else "unclear error", "message": str(exc)[:400]}
        except MemoryError as exc:
            result = {"outcome": "unexpected MemoryError", "message": str(exc)[:200]}
        except Exception as exc:
            result = {"outcome": "unexpected " + type(exc).__name__, "message": str(exc)[:200]}
        result.update(case=path, seconds=round(time.perf_counter() - t0, 2))
        print(json.dumps(result), flush=True)
""")


def decode_in_child(paths: list[str], extra_mb: int, timeout_s: float,
                    cwd: Optional[pathlib.Path] = None) -> tuple[list[dict], Optional[str], str]:
    """Decode ``paths`` at 64x64 in one child capped at its post-import size plus ``extra_mb``.

    Returns ``(results, crashed, stderr)``: one dict per finished case (``outcome``: ``frames``, ``clear error``,
    or something else that is a failure), the path the child died on (None when it exited cleanly), and the
    child's stderr tail. A child that runs past ``timeout_s`` counts as having died on the case it was on.
    ``cwd``: the child's working folder (None: this process's).
    """
    try:
        done = subprocess.run([sys.executable, "-c", CHILD, str(PACK_DIR / "pack_import.py"), str(extra_mb), *paths],
                              capture_output=True, text=True, timeout=timeout_s, cwd=cwd)
        stdout, stderr, code = done.stdout, done.stderr, done.returncode
    except subprocess.TimeoutExpired as exc:
        stdout = exc.stdout.decode() if isinstance(exc.stdout, bytes) else (exc.stdout or "")
        stderr, code = "timed out", -1
    lines = [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]
    results = [r for r in lines if "outcome" in r]
    started = [r["case"] for r in lines if r.get("started")]
    crashed = started[len(results)] if len(started) > len(results) else None
    if code != 0 and crashed is None:
        crashed = "(child, before the first case)"
    return results, crashed, stderr[-1500:]
