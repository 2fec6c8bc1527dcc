"""Streaming video decode for ``ZSVR_LoadVideo`` (DESIGN.md section 2): PyAV, torch, numpy only.

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
* Errors: every bad input raises :class:`~..errors.ParameterError` naming the
  input (the keyword names here are the node's input names).

Frame indices are decoded-frame indices in presentation order (frame 0 is the
first frame the decoder returns), the convention of the core video nodes and
VideoHelperSuite. The pixel aspect ratio and rotation metadata are ignored.
"""

from __future__ import annotations

import dataclasses
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
    """Source frames decoded (including skipped ones); shows that decoding stopped early."""
    warnings: list[str] = dataclasses.field(default_factory=list)


# ---------------------------------------------------------------------------
# Pure helpers: frame rule, size plan, memory estimate.
# ---------------------------------------------------------------------------


def rule_minimum(frame_rule: str) -> int:
    """Smallest frame count the rule allows: 1 for ``any``, 5 for ``4k+1``, 9 for ``8k+1``."""
    _check_rule(frame_rule)
    step = _RULE_STEP[frame_rule]
    return 1 if step == 1 else step + 1


def rule_count(n: int, frame_rule: str, pad: bool = False) -> int:
    """Frame count of the rule's form derived from ``n`` selected frames.

    Without ``pad``: the largest count ``<= n`` of the form (``k*step+1``, k >= 1),
    or 0 when ``n`` is below the rule's minimum. With ``pad``: the smallest such
    count ``>= n`` (the caller repeats the last frame to reach it); 0 stays 0.
    ``any`` returns ``n``.
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
    """Scaled size for a fit mode: ``crop`` covers the target, ``pad`` fits inside it, ``stretch`` equals it."""
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
    """Bytes of the float32 IMAGE output: ``frames * height * width * 3 * 4``."""
    return int(frames) * int(height) * int(width) * 3 * BYTES_PER_VALUE


def default_memory_limit() -> int:
    """Default output-size limit: half the available RAM (psutil), else 16 GiB."""
    try:
        import psutil  # optional
    except ImportError:  # pragma: no cover - psutil ships with ComfyUI
        return DEFAULT_MEMORY_LIMIT_BYTES
    return int(psutil.virtual_memory().available * MEMORY_FRACTION)


def format_bytes(n: int) -> str:
    """``'1.5 GiB (1,610,612,736 bytes)'``."""
    value = float(n)
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            break
        value /= 1024
    head = f"{n} bytes" if unit == "bytes" else f"{value:.1f} {unit}"
    return f"{head} ({n:,} bytes)" if unit != "bytes" else head


def _memory_error(frames: int, out_w: int, out_h: int, limit: int, src_w: int, src_h: int, at_least: bool = False) -> ParameterError:
    need = estimate_output_bytes(frames, out_h, out_w)
    per_frame = estimate_output_bytes(1, out_h, out_w)
    fit_frames = limit // per_frame
    upscaled = out_w * out_h > src_w * src_h
    name = "width" if (upscaled or fit_frames < 1) else "frame_cap"
    count = f"at least {frames}" if at_least else f"{frames}"
    return ParameterError(
        name,
        f"the output would need {'more than ' if at_least else ''}{format_bytes(need)} "
        f"({count} frames x {out_h}x{out_w}x3 float32), above the memory limit of {format_bytes(limit)}",
        f"set frame_cap to at most {fit_frames} at {out_w}x{out_h}, or raise every_nth, "
        f"or lower width/height (source is {src_w}x{src_h})",
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
    try:
        container = av.open(path)
    except (av.error.FFmpegError, OSError, ValueError, IndexError) as exc:
        raise ParameterError(
            "path",
            f"'{name}' cannot be opened as a video (not a video file, or damaged: {exc})",
            "choose a video file (mp4, webm, mkv, mov, ...)",
        ) from exc
    if not container.streams.video:
        kinds = ", ".join(sorted({s.type for s in container.streams})) or "none"
        container.close()
        raise ParameterError("path", f"'{name}' has no video stream (streams found: {kinds})", "choose a file with video")
    return container, container.streams.video[0]


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
    """Read the container header of ``path`` (no decoding). Raises ParameterError('video') if not a video."""
    container, stream = _open(os.fspath(path))
    try:
        return _info(os.fspath(path), container, stream)
    finally:
        container.close()


def _frame_to_uint8(frame, src_w: int, src_h: int, plan: ResizePlan) -> torch.Tensor:
    """One decoded frame to an ``[out_h, out_w, 3]`` uint8 tensor (own memory) per the resize plan."""
    if (plan.scaled_w, plan.scaled_h) == (src_w, src_h):
        rgb = frame.to_ndarray(format="rgb24")
    else:
        shrink = plan.scaled_w < src_w or plan.scaled_h < src_h
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
) -> LoadedVideo:
    """Decode ``video`` (a path) into a ComfyUI IMAGE, streaming; see the module docstring.

    Selection: source frames ``start_frame, start_frame+every_nth, ...``, at
    most ``frame_cap`` of them (0 = all), then the frame rule (trim, or pad by
    repeating the last frame when ``pad_frames``). Size: :func:`target_size`
    and :func:`plan_resize`. ``memory_limit`` is the largest output in bytes
    (None: :func:`default_memory_limit`).

    Decode errors part-way (a corrupt or truncated stream; a truncated file is
    recognised when the demuxer runs out of packets more than
    ``TRUNCATION_TOLERANCE`` short of the container's declared frame count) raise ParameterError('video') naming the frame index
    reached, unless ``best_effort``: then the frames decoded so far are used
    and a warning (logged and in ``LoadedVideo.warnings``) says how many.
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

    container, stream = _open(path)
    try:
        info = _info(path, container, stream)
        name = os.path.basename(path)
        if info.width <= 0 or info.height <= 0:
            raise ParameterError("path", f"'{name}' has a video stream without a frame size", "choose another file")
        out_w, out_h = target_size(info.width, info.height, width, height, size_multiple)
        plan = plan_resize(info.width, info.height, out_w, out_h, fit)
        per_frame = estimate_output_bytes(1, out_h, out_w)

        # --- plan: how many frames are needed, estimate memory before decoding.
        declared = info.declared_frames
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
                raise _memory_error(out_estimate, out_w, out_h, limit, info.width, info.height)
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
        kept: list[torch.Tensor] = []
        warnings: list[str] = []
        decoded = 0
        packets = 0
        reached_eof = False
        failure: Optional[str] = None
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
                failure = f"decoding failed at frame {decoded} ({exc})"
                break
            done = False
            for frame in frames:
                index = decoded
                decoded += 1
                if index >= start_frame and (index - start_frame) % every_nth == 0:
                    if len(kept) >= max_keep:
                        raise _memory_error(len(kept) + 1, out_w, out_h, limit, info.width, info.height, at_least=True)
                    kept.append(_frame_to_uint8(frame, info.width, info.height, plan))
                if progress is not None:
                    progress(decoded, max(total, decoded))
                if stop_after is not None and len(kept) >= stop_after:
                    done = True
                    break
            if done:
                break
        if reached_eof and failure is None and declared is not None and packets < declared - TRUNCATION_TOLERANCE:
            failure = (
                f"the stream ends at frame {decoded} but the container declares {declared} frames "
                f"(file truncated or damaged)"
            )
    finally:
        container.close()

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
    count = rule_count(len(kept), frame_rule, pad_frames)
    if count == 0:
        raise ParameterError(
            "frame_rule",
            f"'{frame_rule}' needs at least {minimum} frames, but the selection has {len(kept)} "
            f"({decoded} frames decoded, start_frame {start_frame}, every_nth {every_nth}, frame_cap {frame_cap})",
            "lower start_frame or every_nth, raise frame_cap, choose 'any', or turn on pad_frames",
        )
    if estimate_output_bytes(count, out_h, out_w) > limit:
        raise _memory_error(count, out_w, out_h, limit, info.width, info.height)
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
    return LoadedVideo(images, fps, count, info, decoded, warnings)
