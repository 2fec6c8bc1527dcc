"""Which attention batch rows are which frames: the frame layout of an image U-Net's batch.

An image U-Net denoises a video as a batch of frames. The batch rows of one
attention call are ``len(chunk_values)`` chunks (cond/uncond, batched or run
separately), each chunk one copy of the latent batch (or of a context window of
it); ``frames_per_video`` splits a chunk into videos of consecutive frames (0 =
the chunk is one video); under a context window a chunk's rows are the frames
``window`` of the full latent batch. ``shot_starts`` (the latent frames where a
new shot starts: ``kernels.shot_cuts``) split a video further: each shot is a
video of its own (its own label, positions counted from its first frame), so a
frame patch never mixes frames across a cut, also inside a context window that
straddles one.

Pure Python (no torch tensors, so building a layout never touches a device);
used by the frame patches of ``nodes`` (SW-CFA, SLR temporal attention).
"""

from __future__ import annotations

import bisect
import dataclasses
from typing import Sequence

from .errors import ParameterError


@dataclasses.dataclass(frozen=True)
class BatchLayout:
    """Per batch row: its cond/uncond chunk, its video (unique across chunks), its position in the video and its
    frame index in the latent batch; plus the context window's frames (``None`` without windows)."""

    chunks: int
    chunk_rows: int
    chunk_values: tuple
    chunk: list
    video: list
    position: list
    frame: list
    window: tuple | None


def batch_layout(rows: int, chunk_values: Sequence, frames_per_video: int,
                 window: Sequence[int] | None = None, shot_starts: Sequence[int] | None = None) -> BatchLayout:
    """The :class:`BatchLayout` of ``rows`` attention rows.

    Args:
        rows: batch rows of the attention call.
        chunk_values: one entry per chunk (ComfyUI's ``cond_or_uncond``); empty means one chunk.
        frames_per_video: frames of each video in a chunk (0 = the chunk is one video).
        window: the frame indices (in the full latent batch) of a chunk's rows under a context window, or None.
            A window whose length is not the chunk's row count is ignored (it is not this call's window).
        shot_starts: latent frame indices (in the full latent batch) where a new shot starts, or None: every
            shot becomes a video of its own (a shot that ``frames_per_video`` also splits gets both boundaries).

    Returns:
        The :class:`BatchLayout`: each row's chunk, video and frame position.

    Raises:
        ParameterError: ``rows`` does not split into the chunks (the caller's bookkeeping is wrong);
            ``frames_per_video`` is negative, or (without a window) does not divide the chunk's rows;
            ``shot_starts`` holds something other than whole frame indices.
    """
    chunk_values = tuple(chunk_values) or (0,)
    chunks = len(chunk_values)
    if rows % chunks != 0:
        raise ParameterError("rows", f"is {rows}, which does not split into the {chunks} chunks of chunk_values",
                             "pass the attention call's batch rows, a multiple of len(chunk_values)")
    fpv = int(frames_per_video)
    if fpv < 0:
        raise ParameterError("frames_per_video", f"is {fpv}",
                             "use 0 (the whole batch is one video) or the frame count of each video")
    chunk = rows // chunks
    frames: tuple | None = None
    if window is not None and len(window) == chunk:
        frames = tuple(int(f) for f in window)
    if frames is None:
        per = fpv if fpv > 0 else max(chunk, 1)
        if chunk % per != 0:
            raise ParameterError("frames_per_video", f"is {fpv}, which does not divide the batch of {chunk} frames",
                                 "set it to the number of frames of each video in the batch (0 if the batch is one "
                                 "video)")
        video, position = [r // per for r in range(chunk)], [r % per for r in range(chunk)]
    elif fpv == 0:
        video, position = [0] * chunk, list(frames)
    else:  # the context window holds frames of the full batch; videos are fpv consecutive frames of it
        video, position = [f // fpv for f in frames], [f % fpv for f in frames]
    frame = list(frames) if frames is not None else list(range(chunk))
    if shot_starts:
        video, position = _split_shots(video, position, frame, shot_starts)
    per_chunk = max(video, default=-1) + 1
    return BatchLayout(
        chunks=chunks, chunk_rows=chunk, chunk_values=chunk_values,
        chunk=[c for c in range(chunks) for _ in range(chunk)],
        video=[c * per_chunk + v for c in range(chunks) for v in video],
        position=position * chunks, frame=frame * chunks, window=frames,
    )


def _split_shots(video: list, position: list, frame: list, shot_starts: Sequence[int]) -> tuple[list, list]:
    """``(video, position)`` with every shot its own video: a row's segment starts at the later of its video's
    first frame and the last shot start at or before its frame; videos are renumbered 0.. in segment order."""
    items = list(shot_starts)
    if any(isinstance(s, bool) or not isinstance(s, int) and not hasattr(s, "__index__") for s in items):
        raise ParameterError("shot_starts", f"is {items!r}", "pass whole latent frame indices where shots start")
    starts = sorted({int(s) for s in items})
    segments = []
    for v, p, f in zip(video, position, frame):
        k = bisect.bisect_right(starts, f) - 1
        video_start = f - p  # the frame of the row's video position 0
        seg = max(video_start, starts[k]) if k >= 0 else video_start
        segments.append((v, seg))
    labels = {key: n for n, key in enumerate(sorted(set(segments)))}
    return [labels[key] for key in segments], [f - seg for (_, seg), f in zip(segments, frame)]


def video_runs(layout: BatchLayout) -> list[tuple[int, list[int]]]:
    """``(chunk, rows)`` of every video in the batch, its rows sorted by frame position (a video's trajectory).

    Args:
        layout: the batch's :class:`BatchLayout` (:func:`batch_layout`).

    Returns:
        One ``(chunk, rows)`` per video, in the order its first row appears; ``rows`` sorted by frame position.
    """
    groups: dict[tuple, list[int]] = {}
    for r in range(len(layout.chunk)):
        groups.setdefault((layout.chunk[r], layout.video[r]), []).append(r)
    runs = []
    for (chunk, _), members in groups.items():
        members.sort(key=lambda r: layout.position[r])
        runs.append((chunk, members))
    return runs
