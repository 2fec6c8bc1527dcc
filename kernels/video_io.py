"""Streaming video and audio decode for ``ZSVR_LoadVideo`` (docs/nodes.md): PyAV, torch, numpy only.

What this module implements
---------------------------
* :func:`load_video` decodes a file with PyAV and returns a ComfyUI IMAGE
  tensor ``[F, H, W, 3]`` float32 in 0..1, the output fps and the frame count.
* Streaming: frames are pulled from the container one packet at a time. The
  frame selection (``start_frame``, ``every_nth``, ``frame_cap``) is applied
  while decoding: frames before ``start_frame`` or between the every-nth picks
  are decoded (a codec cannot skip them) but never converted, resized or kept,
  and decoding stops as soon as the last needed frame has been seen. A frame
  cap on a long 4K clip therefore keeps at most ``frame_cap`` frames, each
  already resized to the target size.
* Seeking: with ``start_frame`` > 0 the container seeks to the keyframe at or
  before it and decodes forward from there, so a chunk deep into a long clip
  costs the chunk plus at most one GOP, never the frames before it. A frame's
  index is the rank of its timestamp among all the stream's packet
  timestamps (read from the packets, nothing decoded), which is exactly the
  index decoding from the start gives, also for a variable frame rate. The
  seek is used only when that holds for every decoded frame (known
  timestamps, no gaps); otherwise, and on any decode error, the clip is
  decoded from the first frame as before.
* Audio (``audio=True``, :func:`load_audio`): the first audio stream, from the
  first selected frame's presentation time for the output's duration
  (``frames * every_nth / source fps``), as float32 ``[1, channels, samples]``
  with its sample rate (ComfyUI's AUDIO). No audio stream gives None; a
  stream that cannot be decoded gives None and a warning, and the frames
  still load.
* Whole-clip scan at small size (:func:`iter_thumbnails`, for chunked runs' shot cuts): every frame in
  order, shrunk, one at a time.
* Whole-clip probe (:func:`probe_clip`, for chunked runs): the frame count and
  the frame timing from the packets alone, whether the rate is constant, and
  whether the audio decodes.
* Resizing uses **PyAV's reformat (FFmpeg swscale)**, done in the same pass as
  the YUV to RGB24 conversion: ``AREA`` interpolation when shrinking (an
  area-averaging, i.e. antialiased, filter) and ``BICUBIC`` when enlarging.
  Fit modes: ``crop`` scales to cover the target then centre-crops, ``pad``
  scales to fit inside the target then pads with black (centred), ``stretch``
  scales each axis independently.
* Kept frames are stored as uint8 (a quarter of the float output) and turned
  into the float32 output at the end, one frame at a time, so the peak is
  about 1.25 x the output size. The values are those of an 8-bit RGB frame
  divided by 255, as the core ComfyUI video nodes produce.
* Frame-count rule (:func:`rule_count`): ``any``, ``4k+1`` (5, 9, 13, ...),
  ``8k+1`` (9, 17, 25, ...) with k >= 1, so the count maps onto whole latent
  frames of video VAEs (Wan, CogVideoX: 4k+1; LTX-Video: 8k+1). The selection
  is trimmed to the largest such count; frames are invented (the last frame
  repeated, up to the next valid count) only when ``pad_frames`` asks for it.
* Memory guard (:func:`estimate_output_bytes`, :func:`default_memory_limit`):
  before decoding, the output size ``F*H*W*3*4`` bytes is estimated (F from the
  container's declared frame count, else from ``frame_cap``) and refused above
  the limit; when neither is known the same limit is enforced while decoding,
  before the kept frames could exceed it.
* Claimed sizes are bounded before anything is sized from them: a stream whose
  header claims frames above ``MAX_FRAME_SIDE`` pixels a side or
  ``MAX_FRAME_PIXELS`` pixels is refused before a frame decodes (8K footage is
  well inside), every decoded frame is checked again (a stream may change size
  part-way), and a declared frame count larger than the file's byte count (a
  frame takes at least one byte) is ignored with a warning instead of sizing
  anything. Nothing is preallocated from a header count: frames are kept as
  they decode, under the memory limit below.
* Errors: every bad input raises :class:`~..errors.ParameterError` naming the
  input (the keyword names here are the node's input names).

Frame indices are decoded-frame indices in presentation order (frame 0 is the
first frame the decoder returns), the convention of the core video nodes and
VideoHelperSuite. The pixel aspect ratio and rotation metadata are ignored.
"""

from __future__ import annotations

import bisect
import dataclasses
import fractions
import logging
import os
from typing import Callable, Optional

import av
import numpy as np
import torch

from .errors import ParameterError

log = logging.getLogger("zsvr")

FIT_MODES = ("crop", "pad", "stretch")
FRAME_RULES = ("any", "4k+1", "8k+1")
_RULE_STEP = {"any": 1, "4k+1": 4, "8k+1": 8}

DEFAULT_MEMORY_LIMIT_BYTES = 16 * 1024**3
"""Fallback output-size limit (16 GiB) when psutil is not installed."""

MEMORY_FRACTION = 0.5
"""Share of the currently available RAM the decoded output may take by default."""

BYTES_PER_VALUE = 4  # float32 output

MAX_FRAME_SIDE = 16384
"""Largest source frame side (pixels) the loader decodes; 8K UHD is 7680x4320, 8K DCI 8192x4320."""

MAX_FRAME_PIXELS = 8192 * 8192
"""Largest source frame area (67,108,864 pixels, about twice 8K): one decoded frame stays under ~200 MB as RGB24."""

TRUNCATION_TOLERANCE = 2
"""Packets a stream may fall short of its declared frame count before it counts as truncated.

A few frames of slack because FFmpeg's MP4 demuxer can drop samples that an
edit list cuts (for example B-frame priming), which are counted in the header
but never delivered; a real truncation loses far more.
"""

ProgressCallback = Callable[[int, int], None]
"""``callback(decoded, total)``: called after every decoded source frame.

``decoded`` counts source frames decoded so far (skipped ones included, since
they cost decode time); ``total`` is the number the loader expects to decode
(the best estimate available; never smaller than ``decoded``). The callback may
raise (for example on user interrupt): the exception propagates unchanged and
the container is closed.
"""


@dataclasses.dataclass
class VideoInfo:
    """What the container says about its first video stream."""

    path: str
    width: int
    height: int
    fps: float
    declared_frames: Optional[int]
    """Frame count from the container header (mp4/avi), None when not stored (mkv, webm)."""
    duration_s: Optional[float]
    codec: str


@dataclasses.dataclass
class LoadedVideo:
    """Result of :func:`load_video`."""

    images: torch.Tensor
    """``[F, H, W, 3]`` float32 in 0..1 (ComfyUI IMAGE)."""
    fps: float
    """Source fps divided by ``every_nth``."""
    frame_count: int
    source: VideoInfo
    decoded: int
    """Source frames decoded (including skipped ones); shows that decoding stopped early or started at a keyframe."""
    warnings: list[str] = dataclasses.field(default_factory=list)
    audio: Optional["AudioTrack"] = None
    """The sound under the selected frames (``load_video(audio=True)``); None without an audio stream."""
    selected: Optional[int] = None
    """Frames selected before the frame rule (``frame_count`` minus this: padded (+) or trimmed (-) frames)."""


@dataclasses.dataclass
class AudioTrack:
    """Decoded audio as ComfyUI's AUDIO holds it: ``waveform`` ``[1, channels, samples]`` float32 in -1..1."""

    waveform: torch.Tensor
    sample_rate: int

    def as_comfy(self) -> dict:
        """The ComfyUI AUDIO value: ``{"waveform": [1, C, S], "sample_rate": int}``."""
        return {"waveform": self.waveform, "sample_rate": int(self.sample_rate)}


# ---------------------------------------------------------------------------
# Pure helpers: frame rule, size plan, memory estimate.
# ---------------------------------------------------------------------------


def rule_minimum(frame_rule: str) -> int:
    """Smallest frame count the rule allows: 1 for ``any``, 5 for ``4k+1``, 9 for ``8k+1``.

    Args:
        frame_rule: one of ``FRAME_RULES``.

    Returns:
        The rule's smallest frame count.

    Raises:
        ParameterError: naming ``frame_rule`` when it is not one of ``FRAME_RULES``.
    """
    _check_rule(frame_rule)
    step = _RULE_STEP[frame_rule]
    return 1 if step == 1 else step + 1


def rule_count(n: int, frame_rule: str, pad: bool = False) -> int:
    """Frame count of the rule's form derived from ``n`` selected frames.

    Without ``pad``: the largest count ``<= n`` of the form (``k*step+1``, k >= 1),
    or 0 when ``n`` is below the rule's minimum. With ``pad``: the smallest such
    count ``>= n`` (the caller repeats the last frame to reach it); 0 stays 0.
    ``any`` returns ``n``.

    Args:
        n: the number of selected frames (0 or less gives 0).
        frame_rule: one of ``FRAME_RULES``.
        pad: round up (by repeating frames) instead of down.

    Returns:
        The frame count the rule keeps (0 when none).

    Raises:
        ParameterError: naming ``frame_rule`` when it is not one of ``FRAME_RULES``.
    """
    _check_rule(frame_rule)
    step = _RULE_STEP[frame_rule]
    if n <= 0:
        return 0
    if step == 1:
        return n
    minimum = step + 1
    if pad:
        return max(minimum, ((n - 1 + step - 1) // step) * step + 1)
    if n < minimum:
        return 0
    return ((n - 1) // step) * step + 1


def _nearest_multiples(value: int, multiple: int) -> tuple[int, int]:
    low = (value // multiple) * multiple
    return (low if low > 0 else multiple), low + multiple


def _round_to_multiple(value: float, multiple: int) -> int:
    return max(multiple, int(round(value / multiple)) * multiple)


def target_size(src_w: int, src_h: int, width: int, height: int, size_multiple: int) -> tuple[int, int]:
    """Output ``(width, height)`` for a source size and the requested size.

    * An explicit (non-zero) width or height must be a multiple of
      ``size_multiple`` (the model's pixel grid: 8 for SD-style VAEs, 16 for Wan
      and CogVideoX with 2x2 patches); otherwise :class:`ParameterError` names the
      input, the multiple and the two nearest valid sizes.
    * ``0`` means "from the source": both 0 keep the source size; one 0 follows
      the source aspect ratio. A derived size is rounded to the nearest
      multiple of ``size_multiple`` (the fit mode absorbs the few pixels of
      difference), so the default settings work on any source.

    Args:
        src_w: source width in pixels.
        src_h: source height in pixels.
        width: requested width (0: from the source).
        height: requested height (0: from the source).
        size_multiple: the pixel grid both output sides must be multiples of (1: no constraint).

    Returns:
        ``(width, height)`` of the output in pixels, multiples of ``size_multiple`` (at least one multiple).

    Raises:
        ParameterError: naming ``size_multiple`` (below 1), or ``width`` / ``height`` (negative, or not a multiple
            of ``size_multiple``).
    """
    if size_multiple < 1:
        raise ParameterError("size_multiple", f"is {size_multiple}", "use 1 for no constraint, 8 for SD-style VAEs, 16 for Wan")
    for name, value in (("width", width), ("height", height)):
        if value < 0:
            raise ParameterError(name, f"is {value}", "use 0 for the source size or a positive size in pixels")
        if value and value % size_multiple:
            lo, hi = _nearest_multiples(value, size_multiple)
            raise ParameterError(
                name,
                f"{value} is not a multiple of {size_multiple} (size_multiple, the model's pixel grid)",
                f"use {lo} or {hi}, or 0 to follow the source",
            )
    if width and height:
        return width, height
    if width:
        return width, _round_to_multiple(width * src_h / src_w, size_multiple)
    if height:
        return _round_to_multiple(height * src_w / src_h, size_multiple), height
    return _round_to_multiple(src_w, size_multiple), _round_to_multiple(src_h, size_multiple)


@dataclasses.dataclass(frozen=True)
class ResizePlan:
    """How one decoded frame becomes an output frame.

    Scale the frame to ``scaled_w x scaled_h`` (swscale), then take the window
    ``[y0:y0+crop_h, x0:x0+crop_w]`` of it (crop) or place it at ``(pad_y,
    pad_x)`` on a black ``out_h x out_w`` canvas (pad).
    """

    out_w: int
    out_h: int
    scaled_w: int
    scaled_h: int
    fit: str

    @property
    def identity(self) -> bool:
        return (self.scaled_w, self.scaled_h) == (self.out_w, self.out_h)


def plan_resize(src_w: int, src_h: int, out_w: int, out_h: int, fit: str) -> ResizePlan:
    """Scaled size for a fit mode: ``crop`` covers the target, ``pad`` fits inside it, ``stretch`` equals it.

    Args:
        src_w: source width in pixels.
        src_h: source height in pixels.
        out_w: output width in pixels.
        out_h: output height in pixels.
        fit: one of ``FIT_MODES`` (``crop``, ``pad``, ``stretch``).

    Returns:
        The :class:`ResizePlan` (scaled size and fit) for one frame.

    Raises:
        ParameterError: naming ``fit`` when it is not one of ``FIT_MODES``.
    """
    _check_fit(fit)
    if fit == "stretch" or (src_w, src_h) == (out_w, out_h):
        return ResizePlan(out_w, out_h, out_w, out_h, fit)
    sx, sy = out_w / src_w, out_h / src_h
    if fit == "crop":
        s = max(sx, sy)
        # Cover: never smaller than the target on either axis.
        scaled_w = max(out_w, int(round(src_w * s)))
        scaled_h = max(out_h, int(round(src_h * s)))
    else:
        s = min(sx, sy)
        scaled_w = min(out_w, max(1, int(round(src_w * s))))
        scaled_h = min(out_h, max(1, int(round(src_h * s))))
    return ResizePlan(out_w, out_h, scaled_w, scaled_h, fit)


def estimate_output_bytes(frames: int, height: int, width: int) -> int:
    """Bytes of the float32 IMAGE output: ``frames * height * width * 3 * 4``.

    Args:
        frames: frame count.
        height: frame height in pixels.
        width: frame width in pixels.

    Returns:
        The output size in bytes.
    """
    return int(frames) * int(height) * int(width) * 3 * BYTES_PER_VALUE


def default_memory_limit() -> int:
    """Default output-size limit: half the available RAM (psutil), else 16 GiB.

    Returns:
        The limit in bytes: ``MEMORY_FRACTION`` of the available RAM, or ``DEFAULT_MEMORY_LIMIT_BYTES`` without
        psutil.
    """
    try:
        import psutil  # optional
    except ImportError:  # pragma: no cover - psutil ships with ComfyUI
        return DEFAULT_MEMORY_LIMIT_BYTES
    return int(psutil.virtual_memory().available * MEMORY_FRACTION)


def format_bytes(n: int) -> str:
    """``'1.5 GiB (1,610,612,736 bytes)'``.

    Args:
        n: a byte count.

    Returns:
        ``n`` in the largest binary unit up to TiB with one decimal and the exact count, or ``'<n> bytes'``
        below 1 KiB.
    """
    value = float(n)
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            break
        value /= 1024
    head = f"{n} bytes" if unit == "bytes" else f"{value:.1f} {unit}"
    return f"{head} ({n:,} bytes)" if unit != "bytes" else head


def _memory_error(frames: int, out_w: int, out_h: int, limit: int, src_w: int, src_h: int, at_least: bool = False,
                  frame_rule: str = "any", claim: str = "") -> ParameterError:
    """The output does not fit in ``limit``: advise a frame_cap the frame rule accepts, or a smaller size when
    not even the rule's fewest frames fit."""
    need = estimate_output_bytes(frames, out_h, out_w)
    per_frame = estimate_output_bytes(1, out_h, out_w)
    cap = rule_count(limit // per_frame, frame_rule)  # the most frames that fit, of the rule's form
    upscaled = out_w * out_h > src_w * src_h
    name = "width" if (upscaled or cap < 1) else "frame_cap"
    count = f"at least {frames}" if at_least else f"{frames}"
    if cap >= 1:
        fix = f"set frame_cap to at most {cap} at {out_w}x{out_h}, or raise every_nth, or lower width/height"
    else:
        fewest = rule_minimum(frame_rule)
        pixels = limit // estimate_output_bytes(fewest, 1, 1)
        rule = f" (the fewest frame_rule '{frame_rule}' allows)" if fewest > 1 else ""
        fix = (f"lower width/height: {fewest} frame{'s' if fewest > 1 else ''}{rule} fit only at up to "
               f"{pixels:,} pixels per frame, and {out_w}x{out_h} is {out_w * out_h:,}")
    return ParameterError(
        name,
        f"{claim + ': ' if claim else ''}the output would need {'more than ' if at_least else ''}{format_bytes(need)} "
        f"({count} frames x {out_h}x{out_w}x3 float32), above the memory limit of {format_bytes(limit)}",
        f"{fix} (source is {src_w}x{src_h})",
    )


def _check_fit(fit: str) -> None:
    if fit not in FIT_MODES:
        raise ParameterError("fit", f"is {fit!r}", f"use one of {', '.join(FIT_MODES)}")


def _check_rule(frame_rule: str) -> None:
    if frame_rule not in FRAME_RULES:
        raise ParameterError("frame_rule", f"is {frame_rule!r}", f"use one of {', '.join(FRAME_RULES)}")


# ---------------------------------------------------------------------------
# Container access.
# ---------------------------------------------------------------------------


def _open(path: str):
    """Open ``path`` and return ``(container, video stream)``; ParameterError('video') if impossible."""
    name = os.path.basename(path)
    if not os.path.exists(path):
        raise ParameterError("path", f"file not found: {path}", "put the video in ComfyUI's input folder or upload it")
    if not os.path.isfile(path):
        raise ParameterError("path", f"{path} is not a file", "choose a video file")
    if os.path.getsize(path) == 0:  # FFmpeg would say "Invalid data found when processing input: '<server path>'"
        raise ParameterError("path", f"the file is empty (0 bytes): '{name}'",
                             "copy or upload the video again (the copy may have failed), or choose another file")
    try:
        container = av.open(path)
    except (av.error.FFmpegError, OSError, ValueError, IndexError) as exc:
        reason = getattr(exc, "strerror", None) or str(exc)  # FFmpeg's reason without the server's path
        raise ParameterError(
            "path",
            f"'{name}' cannot be opened as a video (not a video file, or damaged: {reason})",
            "choose a video file (mp4, webm, mkv, mov, ...)",
        ) from exc
    if not container.streams.video:
        kinds = ", ".join(sorted({s.type for s in container.streams})) or "none"
        container.close()
        raise ParameterError("path", f"'{name}' has no video stream (streams found: {kinds})", "choose a file with video")
    return container, container.streams.video[0]


def check_frame_size(name: str, width: int, height: int, what: str = "claims") -> None:
    """Refuse a source frame size above ``MAX_FRAME_SIDE`` / ``MAX_FRAME_PIXELS`` (before anything is sized from it).

    Args:
        name: the file's name (for the message).
        width: the frame width the header claims (or a decoded frame has).
        height: the frame height.
        what: the verb in the message (``claims`` for a header, ``has`` for a decoded frame).

    Raises:
        ParameterError: naming ``path``, the file, the size and the supported limits.
    """
    if width <= 0 or height <= 0:
        raise ParameterError("path", f"'{name}' has a video stream without a frame size ({width}x{height})",
                             "choose another file")
    if max(width, height) > MAX_FRAME_SIDE or width * height > MAX_FRAME_PIXELS:
        raise ParameterError(
            "path",
            f"'{name}' {what} frames of {width}x{height} ({width * height:,} pixels), above what ZSVR Load Video "
            f"decodes: at most {MAX_FRAME_SIDE} pixels a side and {MAX_FRAME_PIXELS:,} pixels a frame "
            "(8K is 7680x4320)",
            "downscale the video first (e.g. ffmpeg -i in.mp4 -vf scale=3840:-2 out.mp4), or choose another file",
        )


def plausible_frame_count(name: str, declared: Optional[int], file_bytes: int) -> tuple[Optional[int], Optional[str]]:
    """A header's frame count, or None with a warning when the file is too small to hold that many frames.

    Every frame takes at least one byte of the file, so a count above the file's size is a lie (a damaged or
    crafted header); it is ignored and the frames are counted while decoding.

    Args:
        name: the file's name (for the warning).
        declared: the container's declared frame count (None: not stored).
        file_bytes: the file's size in bytes.

    Returns:
        ``(count, warning)``: the count to trust (None: unknown) and a warning when the declared count was dropped.
    """
    if declared is None or declared <= file_bytes:
        return declared, None
    return None, (f"ZSVR LoadVideo: '{name}' declares {declared:,} frames in a file of {format_bytes(file_bytes)}, "
                  "which cannot hold that many; the count is ignored and the frames are counted while decoding")


def _info(path: str, container, stream) -> VideoInfo:
    rate = stream.average_rate or stream.guessed_rate or stream.base_rate
    fps = float(rate) if rate else 0.0
    declared = int(stream.frames) if stream.frames else None
    duration = None
    if stream.duration is not None and stream.time_base:
        duration = float(stream.duration * stream.time_base)
    elif container.duration:
        duration = container.duration / 1_000_000
    cc = stream.codec_context
    return VideoInfo(path, int(cc.width), int(cc.height), fps, declared, duration, cc.name)


def probe(path: str) -> VideoInfo:
    """Read the container header of ``path`` (no decoding). Raises ParameterError('path') if not a video.

    Args:
        path: the video file (str or path-like).

    Returns:
        The :class:`VideoInfo` of the first video stream.

    Raises:
        ParameterError: naming ``path`` when the file is missing, not a file, empty, cannot be opened, or has no
            video stream.
    """
    container, stream = _open(os.fspath(path))
    try:
        return _info(os.fspath(path), container, stream)
    finally:
        container.close()


def _frame_to_uint8(frame, src_w: int, src_h: int, plan: ResizePlan, name: str = "the video") -> torch.Tensor:
    """One decoded frame to an ``[out_h, out_w, 3]`` uint8 tensor (own memory) per the resize plan.

    A frame whose size differs from the header's (``src_w`` x ``src_h``) is checked against the size limits again
    and scaled from its own size."""
    if (frame.width, frame.height) != (src_w, src_h):  # the stream changed size part-way: check it again
        check_frame_size(name, frame.width, frame.height, "has")
    if (plan.scaled_w, plan.scaled_h) == (frame.width, frame.height):
        rgb = frame.to_ndarray(format="rgb24")
    else:
        shrink = plan.scaled_w < frame.width or plan.scaled_h < frame.height
        interp = "AREA" if shrink else "BICUBIC"
        rgb = frame.reformat(width=plan.scaled_w, height=plan.scaled_h, format="rgb24", interpolation=interp).to_ndarray()
    if plan.fit == "crop" and not plan.identity:
        y0 = (plan.scaled_h - plan.out_h) // 2
        x0 = (plan.scaled_w - plan.out_w) // 2
        rgb = rgb[y0 : y0 + plan.out_h, x0 : x0 + plan.out_w]
    elif plan.fit == "pad" and not plan.identity:
        canvas = np.zeros((plan.out_h, plan.out_w, 3), dtype=np.uint8)
        y0 = (plan.out_h - plan.scaled_h) // 2
        x0 = (plan.out_w - plan.scaled_w) // 2
        canvas[y0 : y0 + plan.scaled_h, x0 : x0 + plan.scaled_w] = rgb
        rgb = canvas
    return torch.from_numpy(np.array(rgb, dtype=np.uint8, copy=True))


# ---------------------------------------------------------------------------
# Decoding: from the first frame, or from the keyframe before start_frame.
# ---------------------------------------------------------------------------


@dataclasses.dataclass
class _Selection:
    """Which decoded frames are kept (``start``, every ``every_nth``-th, at most ``stop_after``) and how."""

    start: int
    every_nth: int
    stop_after: Optional[int]
    max_keep: int
    convert: Callable
    too_many: Callable[[int], Exception]

    def wants(self, index: int) -> bool:
        return index >= self.start and (index - self.start) % self.every_nth == 0

    @property
    def last_needed(self) -> Optional[int]:
        """Index of the last frame the selection can need (None: up to the end)."""
        return None if self.stop_after is None else self.start + (self.stop_after - 1) * self.every_nth


@dataclasses.dataclass
class _Decoded:
    kept: list = dataclasses.field(default_factory=list)
    decoded: int = 0
    failure: Optional[str] = None
    first_time: Optional[float] = None
    """Presentation time (seconds, container clock) of the first kept frame; None when not stored."""

    def keep(self, selection: _Selection, frame) -> bool:
        """Convert and keep ``frame``; True once the selection is complete."""
        if len(self.kept) >= selection.max_keep:
            raise selection.too_many(len(self.kept) + 1)
        if not self.kept:
            self.first_time = frame.time
        self.kept.append(selection.convert(frame))
        return selection.stop_after is not None and len(self.kept) >= selection.stop_after


def _decode_from_start(container, stream, selection: _Selection, progress, total: int, declared) -> _Decoded:
    """Decode from the first frame; a frame's index is its position in decode (presentation) order."""
    result = _Decoded()
    packets = 0
    reached_eof = False
    demux = container.demux(stream)
    while True:
        try:
            packet = next(demux)
            if packet.size:
                packets += 1
            frames = packet.decode()
        except StopIteration:
            reached_eof = True
            break
        except (av.error.FFmpegError, OSError, ValueError) as exc:
            result.failure = f"decoding failed at frame {result.decoded} ({exc})"
            break
        done = False
        for frame in frames:
            index = result.decoded
            result.decoded += 1
            if selection.wants(index) and result.keep(selection, frame):
                done = True
            if progress is not None:
                progress(result.decoded, max(total, result.decoded))
            if done:
                break
        if done:
            break
    if reached_eof and result.failure is None and declared is not None and packets < declared - TRUNCATION_TOLERANCE:
        result.failure = (
            f"the stream ends at frame {result.decoded} but the container declares {declared} frames "
            f"(file truncated or damaged)"
        )
    return result


def _presentation_order(container, stream, needed: Optional[int]) -> Optional[list[int]]:
    """Timestamps of the stream's frames in presentation order, from the packets alone (nothing is decoded).

    Every packet that the decoder turns into a frame (not empty, not marked
    discard) holds one frame, so the sorted packet timestamps are the frames'
    timestamps in the order the decoder returns them: position ``i`` is frame
    ``i``. With ``needed``, reading stops once the first ``needed`` positions
    can no longer change (a later packet's pts is at least its dts, which only
    grows). None when a packet has no timestamp or the demuxer fails.
    """
    order: list[int] = []
    try:
        for count, packet in enumerate(container.demux(stream)):
            if not packet.size or packet.is_discard:
                continue
            if packet.pts is None:
                return None
            bisect.insort(order, packet.pts)
            if needed is not None and count % 16 == 0 and packet.dts is not None and len(order) >= needed:
                if bisect.bisect_left(order, packet.dts) >= needed:
                    break
    except (av.error.FFmpegError, OSError, ValueError):
        return None
    return order


def _decode_from_keyframe(
    container, stream, selection: _Selection, progress, total: int, declared
) -> Optional[_Decoded]:
    """Seek to the keyframe at or before ``selection.start`` and decode forward from there.

    A decoded frame's index is the rank of its timestamp among all the
    stream's packet timestamps (:func:`_presentation_order`), which is the
    index decoding from the first frame gives. The result is trusted only if
    every decoded frame's timestamp is known and the indices run on without a
    gap from at most ``start``; otherwise (and on any decode error or a stream
    that ends early, which the caller then reports) None: decode from the start.
    """
    order = _presentation_order(container, stream, None if selection.last_needed is None else selection.last_needed + 1)
    if order is None or len(order) <= selection.start:
        return None
    index_of = {pts: i for i, pts in enumerate(order)}
    if len(index_of) != len(order):  # repeated timestamps: ranks are ambiguous
        return None
    try:
        container.seek(order[selection.start], stream=stream, backward=True, any_frame=False)
    except (av.error.FFmpegError, OSError, ValueError):
        return None
    result = _Decoded()
    previous = None
    demux = container.demux(stream)
    while True:
        try:
            frames = next(demux).decode()
        except StopIteration:
            break
        except (av.error.FFmpegError, OSError, ValueError):
            return None
        for frame in frames:
            index = index_of.get(frame.pts)
            if index is None or (index > selection.start if previous is None else index != previous + 1):
                return None
            previous = index
            result.decoded += 1
            done = selection.wants(index) and result.keep(selection, frame)
            if progress is not None:
                progress(index + 1, max(total, index + 1))
            if done:
                return result
    if previous is None or previous < selection.start:
        return None
    if declared is not None and previous + 1 < declared - TRUNCATION_TOLERANCE:
        return None
    return result


# ---------------------------------------------------------------------------
# Audio.
# ---------------------------------------------------------------------------

AUDIO_PREROLL_S = 0.5
"""Audio decoded before the wanted span after a seek, so the decoder's state (e.g. AAC's overlap) is settled."""


def iter_thumbnails(video: str, longest_side: int = 64):
    """Every frame of ``video`` in presentation order, shrunk (AREA) so its longer side is ``longest_side``, as a
    uint8 ``[h, w, 3]`` tensor, one at a time (a whole-clip scan at small size: shot cuts for chunked runs).

    Frames are never enlarged; a frame's index is its position in decode order, as everywhere here. Memory holds
    one frame. Raises ParameterError naming ``path`` (not a video, or decoding fails part-way: the frame is said)
    or ``longest_side`` (below 1).
    """
    if isinstance(longest_side, bool) or int(longest_side) != longest_side or longest_side < 1:
        raise ParameterError("longest_side", f"is {longest_side!r}", "pass a side in pixels, e.g. 64")
    path = os.fspath(video)
    name = os.path.basename(path)
    container, stream = _open(path)
    decoded = 0
    try:
        check_frame_size(name, int(stream.codec_context.width), int(stream.codec_context.height))
        stream.thread_type = "AUTO"
        try:
            for frame in container.decode(stream):
                if decoded == 0 or (frame.width, frame.height) != (src_w, src_h):
                    src_w, src_h = frame.width, frame.height
                    check_frame_size(name, src_w, src_h, "has")
                    scale = min(1.0, longest_side / max(src_w, src_h))
                    w, h = max(1, round(src_w * scale)), max(1, round(src_h * scale))
                rgb = frame.reformat(width=w, height=h, format="rgb24", interpolation="AREA").to_ndarray()
                decoded += 1
                yield torch.from_numpy(np.array(rgb, dtype=np.uint8, copy=True))
        except (av.error.FFmpegError, OSError, ValueError) as exc:
            raise ParameterError("path", f"'{name}': decoding failed at frame {decoded} ({exc})",
                                 "re-encode the clip (e.g. ffmpeg -i in.mp4 out.mp4)") from None
    finally:
        container.close()


def _audio_samples(frame) -> np.ndarray:
    """An ``av.AudioFrame`` as float32 ``[channels, samples]`` in -1..1, whatever its sample format."""
    data = frame.to_ndarray()
    channels = len(frame.layout.channels)
    if not frame.format.is_planar:
        data = data.reshape(-1, channels).T  # packed: one row of interleaved samples
    if data.dtype == np.uint8:
        return (data.astype(np.float32) - 128.0) / 128.0
    if np.issubdtype(data.dtype, np.integer):
        return data.astype(np.float32) / float(-np.iinfo(data.dtype).min)
    return data.astype(np.float32)


def load_audio(video: str, start_s: float = 0.0, duration_s: Optional[float] = None) -> Optional[AudioTrack]:
    """Decode the first audio stream of ``video`` from ``start_s`` for ``duration_s`` seconds (None: to the end).

    Times are on the container's clock (the one ``frame.time`` uses), so a
    span taken from video frame times lines up with the picture. Sample ``j``
    of a decoded frame is at ``frame.time + j / sample_rate``; the decoded
    frames are taken as contiguous from the first one. A ``start_s`` past the
    first half second seeks there (with half a second of pre-roll for the
    decoder's state) when the stream's timestamps resolve single samples;
    otherwise the track is decoded from its start. Any sample format and
    channel count becomes float32 ``[1, channels, samples]``. Returns None when
    the file has no audio stream; raises ParameterError('path') when the
    stream cannot be decoded.

    Args:
        video: the media file (str or path-like).
        start_s: start time in seconds on the container's clock.
        duration_s: length in seconds, or None for the rest of the track.

    Returns:
        An :class:`AudioTrack` (``waveform`` float32 ``[1, channels, samples]`` in -1..1 and its sample rate), or
        None without an audio stream.

    Raises:
        ParameterError: naming ``path`` when the file cannot be opened, the audio has no sample rate, or it cannot
            be decoded.
    """
    path = os.fspath(video)
    name = os.path.basename(path)
    try:
        container = av.open(path)
    except (av.error.FFmpegError, OSError, ValueError) as exc:
        raise ParameterError("path", f"'{name}' cannot be opened ({exc})", "choose another file") from exc
    try:
        if not container.streams.audio:
            return None
        stream = container.streams.audio[0]
        rate = int(stream.sample_rate or stream.codec_context.sample_rate or 0)
        if rate <= 0:
            raise ParameterError("path", f"the audio track of '{name}' has no sample rate", "re-encode the audio")
        first = int(round(start_s * rate))
        last = None if duration_s is None else first + int(round(duration_s * rate))
        if start_s > AUDIO_PREROLL_S and stream.time_base and stream.time_base <= fractions.Fraction(1, rate):
            # Only where timestamps are sample-accurate (MP4: 1/rate; Matroska's milliseconds are not):
            # elsewhere samples are counted from the first frame, which needs decoding from the start.
            container.seek(int((start_s - AUDIO_PREROLL_S) / stream.time_base), stream=stream, backward=True)
        pieces: list[np.ndarray] = []
        position = None
        try:
            for packet in container.demux(stream):
                for frame in packet.decode():
                    samples = _audio_samples(frame)
                    if position is None:
                        position = int(round(frame.time * rate)) if frame.time is not None else 0
                    lo, hi = max(first - position, 0), samples.shape[1]
                    if last is not None:
                        hi = min(hi, last - position)
                    if hi > lo:
                        pieces.append(samples[:, lo:hi])
                    position += samples.shape[1]
                if last is not None and position is not None and position >= last:
                    break
        except (av.error.FFmpegError, OSError, ValueError) as exc:
            raise ParameterError(
                "path", f"the audio track of '{name}' cannot be decoded ({exc})", "re-encode the audio (e.g. to AAC)"
            ) from exc
        channels = len(stream.layout.channels) if stream.layout else 1
        waveform = np.concatenate(pieces, axis=1) if pieces else np.zeros((channels, 0), np.float32)
        return AudioTrack(torch.from_numpy(np.ascontiguousarray(waveform)).unsqueeze(0), rate)
    finally:
        container.close()


# ---------------------------------------------------------------------------
# Whole-clip probe (for chunked runs): frame count and timing from the packets.
# ---------------------------------------------------------------------------


@dataclasses.dataclass
class AudioProbe:
    """The first audio stream: codec, rate, channels and whether it decodes."""

    codec: str
    sample_rate: int
    channels: int
    error: Optional[str] = None
    """Why the stream cannot be decoded; None when every packet decodes."""


@dataclasses.dataclass
class ClipProbe:
    """A clip's frames and timing, read from the packets without decoding the picture."""

    path: str
    width: int
    height: int
    frames: int
    """Frames the decoder returns (packets that hold a frame)."""
    rate: fractions.Fraction
    """The stream's frame rate (average rate; frames over duration)."""
    first_time: float
    """Presentation time of frame 0 in seconds (the container clock)."""
    frame_durations: tuple[float, float]
    """Shortest and longest time between consecutive frames, seconds."""
    constant_rate: bool
    """Every frame lasts ``1 / rate`` (within one time-base tick and 1 %)."""
    audio: Optional[AudioProbe]

    @property
    def fps(self) -> float:
        return float(self.rate)


RATE_TOLERANCE = 0.01
"""Relative deviation of a frame's duration from ``1 / rate`` that still counts as a constant rate."""


def probe_clip(video: str, decode_audio: bool = True) -> ClipProbe:
    """Count the frames of ``video`` and check their timing from the packets; decode the audio to check it.

    Raises ParameterError('path') for a file that is not a video or has no
    frames. ``constant_rate`` is False when any frame's duration (difference of
    consecutive presentation timestamps) differs from ``1 / rate`` by more
    than one tick of the stream's time base and ``RATE_TOLERANCE``.

    Args:
        video: the video file (str or path-like).
        decode_audio: decode the first audio stream's packets to check them (False: only describe it).

    Returns:
        The :class:`ClipProbe`; its ``audio`` is None without an audio stream, and an :class:`AudioProbe` whose
        ``error`` says why when the audio does not decode.

    Raises:
        ParameterError: naming ``path`` when the file cannot be opened as a video, or its video packets lack
            timestamps, hold no frame, or the stream stores no frame rate.
    """
    path = os.fspath(video)
    name = os.path.basename(path)
    container, stream = _open(path)
    try:
        cc = stream.codec_context
        check_frame_size(name, int(cc.width), int(cc.height))
        order = _presentation_order(container, stream, None)
        if order is None:
            raise ParameterError("path", f"'{name}' has video packets without timestamps", "re-encode it (e.g. to mp4)")
        if not order:
            raise ParameterError("path", f"'{name}' has zero frames", "choose another file")
        rate = stream.average_rate or stream.guessed_rate or stream.base_rate
        tb = stream.time_base
        if not rate or not tb:
            raise ParameterError("path", f"'{name}' stores no frame rate", "re-encode it at a constant frame rate")
        rate = fractions.Fraction(rate)
        steps = np.diff(np.asarray(order, dtype=np.float64)) * float(tb) if len(order) > 1 else np.array([1 / rate])
        nominal = 1 / float(rate)
        slack = max(float(tb), RATE_TOLERANCE * nominal)
        constant = bool(np.all(np.abs(steps - nominal) <= slack))
        info = ClipProbe(path, int(cc.width), int(cc.height), len(order), rate, float(order[0] * tb),
                         (float(steps.min()), float(steps.max())), constant, None)
        if container.streams.audio:
            info.audio = _probe_audio(container, container.streams.audio[0], decode_audio)
        return info
    finally:
        container.close()


def _probe_audio(container, stream, decode: bool) -> AudioProbe:
    layout = stream.layout
    probe = AudioProbe(stream.codec_context.name, int(stream.sample_rate or 0), len(layout.channels) if layout else 0)
    if not decode:
        return probe
    try:
        container.seek(0)
        decoded = 0
        for packet in container.demux(stream):
            decoded += len(packet.decode())
        if decoded == 0:
            probe.error = "no audio frame decodes"
    except (av.error.FFmpegError, OSError, ValueError) as exc:
        probe.error = str(exc)
    return probe


# ---------------------------------------------------------------------------
# The loader.
# ---------------------------------------------------------------------------


def load_video(
    video: str,
    start_frame: int = 0,
    frame_cap: int = 0,
    every_nth: int = 1,
    width: int = 0,
    height: int = 0,
    fit: str = "crop",
    frame_rule: str = "any",
    size_multiple: int = 8,
    best_effort: bool = False,
    pad_frames: bool = False,
    memory_limit: Optional[int] = None,
    progress: Optional[ProgressCallback] = None,
    audio: bool = False,
) -> LoadedVideo:
    """Decode ``video`` (a path) into a ComfyUI IMAGE, streaming; see the module docstring.

    Selection: source frames ``start_frame, start_frame+every_nth, ...``, at
    most ``frame_cap`` of them (0 = all), then the frame rule (trim, or pad by
    repeating the last frame when ``pad_frames``). Size: :func:`target_size`
    and :func:`plan_resize`. ``memory_limit`` is the largest output in bytes
    (None: :func:`default_memory_limit`).

    Decode errors part-way (a corrupt or truncated stream; a truncated file is
    recognised when the demuxer runs out of packets more than
    ``TRUNCATION_TOLERANCE`` short of the container's declared frame count)
    raise ParameterError('path') naming the frame index reached, unless
    ``best_effort``: then the frames decoded so far are used and a warning
    (logged and in ``LoadedVideo.warnings``) says how many.

    Args:
        video: the video file (str or path-like).
        start_frame: first source frame to select (0 or more).
        frame_cap: the most frames to select (0: all).
        every_nth: select every n-th source frame (1 or more); the output fps is the source fps over it.
        width: output width in pixels (0: from the source; see :func:`target_size`).
        height: output height in pixels (0: from the source).
        fit: one of ``FIT_MODES``: how the source is fitted to the output size.
        frame_rule: one of ``FRAME_RULES``: the frame counts the output may have.
        size_multiple: the pixel grid explicit or derived sizes must be multiples of (1 or more).
        best_effort: on a decode error part-way, keep the frames decoded so far instead of raising.
        pad_frames: reach the frame rule by repeating the last frame instead of trimming.
        memory_limit: the largest output in bytes (None: :func:`default_memory_limit`).
        progress: optional :data:`ProgressCallback`, called after every decoded source frame.
        audio: also decode the sound under the selected frames (:func:`load_audio`); failures become warnings.

    Returns:
        A :class:`LoadedVideo`: ``images`` ``[F, H, W, 3]`` float32 in 0..1, the output fps, the frame count,
        the source :class:`VideoInfo`, the decoded frame count, warnings and the audio (None unless ``audio``).

    Raises:
        ParameterError: naming ``start_frame``, ``frame_cap`` or ``every_nth`` (out of range; ``start_frame``
            also past the end), ``fit``, ``frame_rule`` (unknown, or the selection too short for it),
            ``size_multiple``, ``width`` / ``height`` (:func:`target_size`), ``path`` (not a readable video,
            zero decodable frames, or corrupt without ``best_effort``), or ``width`` / ``frame_cap`` when the
            output would exceed ``memory_limit``.
    """
    path = os.fspath(video)
    for input_name, value, lowest, fix in (
        ("start_frame", start_frame, 0, "use 0 for the first frame"),
        ("frame_cap", frame_cap, 0, "use 0 for all frames or a positive count"),
        ("every_nth", every_nth, 1, "use 1 for every frame, 2 for every second frame, ..."),
    ):
        if int(value) != value or value < lowest:
            raise ParameterError(input_name, f"is {value}", fix)
    _check_fit(fit)
    _check_rule(frame_rule)
    if size_multiple < 1:
        raise ParameterError("size_multiple", f"is {size_multiple}", "use 1 for no constraint, 8 for SD-style VAEs, 16 for Wan")
    minimum = rule_minimum(frame_rule)
    if frame_cap and not pad_frames and frame_cap < minimum:
        raise ParameterError(
            "frame_cap",
            f"{frame_cap} leaves no frames under frame_rule '{frame_rule}', which needs at least {minimum} frames",
            f"set frame_cap to 0 (all) or at least {minimum}, choose frame_rule 'any', or turn on pad_frames",
        )
    limit = default_memory_limit() if memory_limit is None else int(memory_limit)
    warnings: list[str] = []

    container, stream = _open(path)
    try:
        info = _info(path, container, stream)
        name = os.path.basename(path)
        check_frame_size(name, info.width, info.height)
        out_w, out_h = target_size(info.width, info.height, width, height, size_multiple)
        plan = plan_resize(info.width, info.height, out_w, out_h, fit)
        per_frame = estimate_output_bytes(1, out_h, out_w)

        # --- plan: how many frames are needed, estimate memory before decoding.
        declared, doubt = plausible_frame_count(name, info.declared_frames, os.path.getsize(path))
        if doubt is not None:
            warnings.append(doubt)
            log.warning(doubt)
        if declared is not None and start_frame >= declared:
            raise ParameterError(
                "start_frame",
                f"{start_frame} is past the end: '{name}' has {declared} frames (0..{declared - 1})",
                f"use a start_frame below {declared}",
            )
        selected_estimate = None
        if declared is not None:
            selected_estimate = -(-(declared - start_frame) // every_nth)
            if frame_cap:
                selected_estimate = min(selected_estimate, frame_cap)
        elif frame_cap:
            selected_estimate = frame_cap
        if selected_estimate is not None:
            out_estimate = rule_count(selected_estimate, frame_rule, pad_frames)
            if estimate_output_bytes(out_estimate, out_h, out_w) > limit:
                raise _memory_error(out_estimate, out_w, out_h, limit, info.width, info.height, frame_rule=frame_rule,
                                    claim=f"'{name}' declares {declared:,} frames" if declared is not None else "")
        # Keeping more than this many frames would exceed the limit: enforced while decoding.
        max_keep = limit // per_frame
        # Stop as soon as this many frames are kept (None: decode to the end).
        stop_after = None
        if frame_cap:
            stop_after = frame_cap if pad_frames else rule_count(frame_cap, frame_rule)
        if stop_after is not None:
            last_index = start_frame + (stop_after - 1) * every_nth
            total = last_index + 1 if declared is None else min(last_index + 1, declared)
        elif declared is not None:
            total = declared
        elif info.duration_s and info.fps:
            total = max(1, int(round(info.duration_s * info.fps)))
        else:
            total = 0

        stream.thread_type = "AUTO"
        selection = _Selection(
            start=start_frame,
            every_nth=every_nth,
            stop_after=stop_after,
            max_keep=max_keep,
            convert=lambda frame: _frame_to_uint8(frame, info.width, info.height, plan, name),
            too_many=lambda n: _memory_error(n, out_w, out_h, limit, info.width, info.height, at_least=True,
                                             frame_rule=frame_rule),
        )
        decode = None
        if start_frame > 0:
            decode = _decode_from_keyframe(container, stream, selection, progress, total, declared)
            if decode is None:  # the seek could not be trusted: decode from the first frame instead
                log.debug("ZSVR LoadVideo: '%s': seeking not possible, decoding from the first frame", name)
                container.close()
                container, stream = _open(path)
                stream.thread_type = "AUTO"
        if decode is None:
            decode = _decode_from_start(container, stream, selection, progress, total, declared)
    finally:
        container.close()

    kept, decoded, failure = decode.kept, decode.decoded, decode.failure
    if failure is not None:
        if not best_effort:
            raise ParameterError(
                "path",
                f"'{name}' is corrupt: {failure}",
                "re-encode or re-download the file, or turn on best_effort to use the frames decoded before the damage",
            )
        message = f"ZSVR LoadVideo: '{name}' is corrupt ({failure}); best_effort: using the {len(kept)} frames selected from the {decoded} decoded"
        warnings.append(message)
        log.warning(message)

    if decoded == 0:
        raise ParameterError("path", f"'{name}' has zero decodable frames", "choose another file, or re-encode this one")
    if not kept:
        raise ParameterError(
            "start_frame",
            f"{start_frame} is past the end: '{name}' has {decoded} decodable frames (0..{decoded - 1})",
            f"use a start_frame below {decoded}",
        )
    selected = len(kept)
    count = rule_count(selected, frame_rule, pad_frames)
    if count == 0:
        raise ParameterError(
            "frame_rule",
            f"'{frame_rule}' needs at least {minimum} frames, but the selection has {len(kept)} "
            f"({decoded} frames decoded, start_frame {start_frame}, every_nth {every_nth}, frame_cap {frame_cap})",
            "lower start_frame or every_nth, raise frame_cap, choose 'any', or turn on pad_frames",
        )
    if estimate_output_bytes(count, out_h, out_w) > limit:
        raise _memory_error(count, out_w, out_h, limit, info.width, info.height, frame_rule=frame_rule)
    if count != len(kept):
        action = "padded" if count > len(kept) else "trimmed"
        log.info("ZSVR LoadVideo: %s %d selected frames to %d for frame_rule %s", action, len(kept), count, frame_rule)

    images = torch.empty((count, out_h, out_w, 3), dtype=torch.float32)
    real = min(count, len(kept))
    for i in range(real):
        images[i].copy_(kept[i]).div_(255.0)
        kept[i] = None  # free the uint8 copy as soon as it is converted
    if count > real:
        images[real:] = images[real - 1]
    del kept
    source_fps = info.fps
    if not source_fps:
        # No rate in the header: derive it from the duration, else assume 24.
        source_fps = decoded / info.duration_s if info.duration_s else 24.0
        message = f"ZSVR LoadVideo: '{name}' stores no frame rate; using {source_fps:.3f} fps"
        warnings.append(message)
        log.warning(message)
    fps = source_fps / every_nth
    track = None
    if audio:
        # The audio that plays under the output: from the first selected frame, for the output's duration.
        start_s = decode.first_time if decode.first_time is not None else start_frame / source_fps
        try:
            track = load_audio(path, start_s, count * every_nth / source_fps)
        except ParameterError as exc:
            message = f"ZSVR LoadVideo: {exc.problem}; the video is loaded without sound"
            warnings.append(message)
            log.warning(message)
    return LoadedVideo(images, fps, count, info, decoded, warnings, track, selected)
