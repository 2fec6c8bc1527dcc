"""Chunk planning and crossfade weights for chunked runs of long clips (docs/long-clips.md): numpy and torch only.

A clip too long for one run is cut into chunks of ``chunk_frames`` frames that
overlap by at least ``overlap`` frames; each chunk is restored on its own and
the chunks are put back together with a crossfade over each overlap.

* :func:`plan_chunks` places the chunks. Every chunk's length obeys the
  workflow's frame rule (``any`` / ``4k+1`` / ``8k+1``, as ``ZSVR_LoadVideo``
  applies it), so the loader never trims a chunk. Chunks start every
  ``chunk_frames - overlap`` frames; the last one is the shortest
  rule-conforming length that reaches the clip's end, placed so that it ends
  exactly there (it then overlaps its neighbour by ``overlap`` frames or a few
  more). A clip no longer than one chunk is one chunk; when its length breaks
  the rule, that chunk runs on the last frame repeated up to the next
  conforming count (``run_frames``) and only its first ``frames`` outputs are used.
* :func:`plan_shot_chunks` does the same per shot (issue 26): given the frames where a new shot starts
  (``kernels/shot_cuts.py``), each shot is planned on its own by :func:`plan_chunks` and the plans are put
  end to end, so no chunk straddles a cut and no crossfade crosses one (the last chunk of a shot and the
  first of the next abut, sharing no frame: ``trail`` / ``lead`` 0 there, each frame from one shot's chunk).
  A shot shorter than the frame rule allows is one padded chunk (``run_frames`` above ``frames``: the
  last frame repeated, the extra outputs dropped), as a short clip is. A chunk's range depends only on its
  shot's range, so changing a cut re-plans only the shots it touches.
* :func:`crossfade_weights` are raised-cosine weights over an overlap of
  ``n`` frames, ``w[j] = (1 - cos(pi (j + 1) / (n + 1))) / 2``: the incoming
  chunk gets ``w``, the outgoing one ``1 - w``, so the two sum to 1 on every
  frame and neither chunk is ever dropped or taken alone inside the overlap.
  :func:`chunk_weights` gives a chunk's weight for each of its frames (rising
  over its leading overlap, falling over its trailing one). Where chunks
  overlap only pairwise (``overlap <= chunk_frames / 2``) the weights on a frame
  already sum to 1; :func:`frame_sources` normalises them anyway, so larger
  overlaps (three chunks on a frame) blend correctly too.
* :func:`blend` mixes one frame from several chunks as a running weighted
  mean, ``out += (x_k - out) * w_k / (w_1 + ... + w_k)``: equal to the
  normalised weighted sum, and *exactly* the input when the chunks agree
  (``x_k - out`` is then exactly 0), so stitching chunks whose outputs equal
  their inputs is the identity bit for bit. :func:`stitch` is the in-memory
  form over whole chunk outputs (tests, short clips); the runner streams the
  same :func:`frame_sources` / :func:`blend` one frame at a time
  (``headless/stitch.py``).

Frame indices are the loader's source-frame indices (``every_nth`` 1).
Errors raise :class:`~.errors.ParameterError` naming ``chunk_frames``,
``overlap``, ``total_frames`` or ``cuts``.
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np
import torch

from .errors import ParameterError
from .video_io import FRAME_RULES, rule_count, rule_minimum


@dataclasses.dataclass(frozen=True)
class Chunk:
    """One chunk of a plan: source frames ``start .. start + frames - 1``."""

    index: int
    start: int
    frames: int
    """Frames of the clip this chunk covers (and contributes to the output)."""
    run_frames: int
    """Frames the workflow runs on: ``frames``, or more when the clip is shorter than the frame rule allows
    (the loader repeats the last frame; the extra outputs are dropped)."""
    lead: int = 0
    """Frames shared with the previous chunk."""
    trail: int = 0
    """Frames shared with the next chunk."""

    @property
    def end(self) -> int:
        """One past the last source frame."""
        return self.start + self.frames

    @property
    def padded(self) -> bool:
        return self.run_frames > self.frames


def conforms(frames: int, frame_rule: str) -> bool:
    """True when ``frames`` is a count the frame rule allows (the loader would keep it unchanged).

    Args:
        frames: a frame count.
        frame_rule: one of ``FRAME_RULES`` (``video_io``).

    Returns:
        Whether the rule keeps ``frames`` as it is.
    """
    return frames >= rule_minimum(frame_rule) and rule_count(frames, frame_rule) == frames


def check_chunking(chunk_frames: int, overlap: int, frame_rule: str) -> None:
    """Raise ParameterError unless ``chunk_frames`` obeys ``frame_rule`` and ``0 <= overlap < chunk_frames``.

    Args:
        chunk_frames: frames per chunk.
        overlap: frames two neighbouring chunks share (crossfaded).
        frame_rule: the workflow's frame rule, one of ``FRAME_RULES``.

    Returns:
        None.

    Raises:
        ParameterError: naming ``frame_rule`` (unknown), ``chunk_frames`` (not positive, or breaking the rule) or
            ``overlap`` (negative, or not below ``chunk_frames``).
    """
    if frame_rule not in FRAME_RULES:
        raise ParameterError("frame_rule", f"is {frame_rule!r}", f"use one of {', '.join(FRAME_RULES)}")
    if int(chunk_frames) != chunk_frames or chunk_frames < 1:
        raise ParameterError("chunk_frames", f"is {chunk_frames}", "use a positive frame count, e.g. 49")
    if not conforms(chunk_frames, frame_rule):
        low = rule_count(chunk_frames, frame_rule)
        high = rule_count(chunk_frames, frame_rule, pad=True)
        if high == chunk_frames:  # below the rule's minimum
            high = rule_minimum(frame_rule)
        options = f"{low} or {high}" if low else f"{high}"
        raise ParameterError(
            "chunk_frames",
            f"{chunk_frames} breaks the workflow's frame rule '{frame_rule}' (ZSVR_LoadVideo would trim every chunk)",
            f"use {options} frames per chunk",
        )
    if int(overlap) != overlap or overlap < 0:
        raise ParameterError("overlap", f"is {overlap}", "use 0 for no crossfade or a positive frame count, e.g. 8")
    if overlap >= chunk_frames:
        raise ParameterError(
            "overlap",
            f"{overlap} is not below chunk_frames ({chunk_frames}): the chunks would not advance",
            f"use an overlap of at most {chunk_frames - 1} frames; 8 suits 49-frame chunks",
        )


def plan_chunks(total_frames: int, chunk_frames: int, overlap: int, frame_rule: str = "any") -> list[Chunk]:
    """Chunks covering frames ``0 .. total_frames - 1`` (see the module docstring for the placement).

    Args:
        total_frames: the clip's frame count (at least 1).
        chunk_frames: frames per chunk.
        overlap: frames neighbouring chunks share.
        frame_rule: the workflow's frame rule, one of ``FRAME_RULES``.

    Returns:
        The :class:`Chunk` list in order, covering every frame.

    Raises:
        ParameterError: ``total_frames`` is below 1, or :func:`check_chunking` refuses the other parameters.
    """
    check_chunking(chunk_frames, overlap, frame_rule)
    if int(total_frames) != total_frames or total_frames < 1:
        raise ParameterError("total_frames", f"is {total_frames}", "pass the clip's frame count (at least 1)")
    if total_frames <= chunk_frames:
        run = max(rule_count(total_frames, frame_rule, pad=True), rule_minimum(frame_rule))
        return [Chunk(0, 0, total_frames, run)]
    stride = chunk_frames - overlap
    spans: list[tuple[int, int]] = []
    start = 0
    while start + chunk_frames < total_frames:
        spans.append((start, chunk_frames))
        start += stride
    last = max(rule_count(total_frames - start, frame_rule, pad=True), rule_minimum(frame_rule))
    last_start = total_frames - last
    while spans and spans[-1][0] >= last_start:  # a tiny stride: the last chunk already covers these
        spans.pop()
    spans.append((last_start, last))
    chunks = []
    for i, (start, frames) in enumerate(spans):
        lead = max(0, spans[i - 1][0] + spans[i - 1][1] - start) if i else 0
        trail = max(0, start + frames - spans[i + 1][0]) if i + 1 < len(spans) else 0
        chunks.append(Chunk(i, start, frames, frames, min(lead, frames), min(trail, frames)))
    return chunks


def plan_shot_chunks(total_frames: int, cuts: Sequence[int], chunk_frames: int, overlap: int,
                     frame_rule: str = "any") -> list[Chunk]:
    """Chunks covering frames ``0 .. total_frames - 1`` shot by shot: :func:`plan_chunks` within every shot.

    Args:
        total_frames: the clip's frame count (at least 1).
        cuts: the frames where a new shot starts, sorted, distinct, in ``1 .. total_frames - 1`` (``[]``: one shot,
            the plan of :func:`plan_chunks`).
        chunk_frames: frames per chunk.
        overlap: frames neighbouring chunks of one shot share; chunks of different shots share none.
        frame_rule: the workflow's frame rule, one of ``FRAME_RULES``.

    Returns:
        The :class:`Chunk` list in order (indices 0, 1, ... over the whole clip), every frame covered, no chunk
        holding frames of two shots.

    Raises:
        ParameterError: naming ``cuts`` (unsorted, repeated or outside the clip), ``total_frames``, or what
            :func:`check_chunking` refuses.
    """
    from .shot_cuts import shot_bounds

    check_chunking(chunk_frames, overlap, frame_rule)
    if isinstance(total_frames, bool) or int(total_frames) != total_frames or total_frames < 1:
        raise ParameterError("total_frames", f"is {total_frames}", "pass the clip's frame count (at least 1)")
    chunks: list[Chunk] = []
    for first, end in shot_bounds(list(cuts), int(total_frames)):
        for c in plan_chunks(end - first, chunk_frames, overlap, frame_rule):
            chunks.append(dataclasses.replace(c, index=len(chunks), start=first + c.start))
    return chunks


def crossfade_weights(n: int) -> np.ndarray:
    """Raised-cosine weights of the incoming chunk over an ``n``-frame overlap (float64, strictly in (0, 1)).

    Args:
        n: the overlap in frames (0 or more).

    Returns:
        ``[n]`` float64 weights, rising; the outgoing chunk's are ``1 - w``.

    Raises:
        ParameterError: ``n`` is negative.
    """
    if n < 0:
        raise ParameterError("n", f"is {n}", "pass the overlap length in frames (0 or more)")
    j = np.arange(n, dtype=np.float64)
    return 0.5 - 0.5 * np.cos(np.pi * (j + 1) / (n + 1))


def chunk_weights(chunk: Chunk) -> np.ndarray:
    """Weight of each of ``chunk``'s frames: raised-cosine rise over ``lead``, fall over ``trail``, 1 between.

    Args:
        chunk: one chunk of a plan (:func:`plan_chunks`).

    Returns:
        float64 weights, one per frame of the chunk.
    """
    w = np.ones(chunk.frames, dtype=np.float64)
    if chunk.lead:
        w[: chunk.lead] *= crossfade_weights(chunk.lead)
    if chunk.trail:
        w[chunk.frames - chunk.trail :] *= 1.0 - crossfade_weights(chunk.trail)
    return w


def frame_sources(
    plan: Sequence[Chunk], frame: int, weights: Sequence[np.ndarray] | None = None
) -> list[tuple[int, int, float]]:
    """``(chunk index, frame within the chunk, weight)`` for every chunk covering ``frame``; weights sum to 1.

    ``weights`` (:func:`chunk_weights` of each chunk, in plan order) may be passed to avoid recomputing them.

    Args:
        plan: the chunks (:func:`plan_chunks`).
        frame: a frame of the whole clip.
        weights: each chunk's :func:`chunk_weights`, or None to compute them.

    Returns:
        ``(chunk index, frame within the chunk, weight)`` per covering chunk, weights summing to 1.

    Raises:
        ParameterError: ``frame`` is outside the plan.
    """
    found = []
    for chunk in plan:
        if chunk.start <= frame < chunk.end:
            w = (weights[chunk.index] if weights is not None else chunk_weights(chunk))[frame - chunk.start]
            found.append((chunk.index, frame - chunk.start, float(w)))
    if not found:
        raise ParameterError("frame", f"{frame} is outside the plan (frames 0..{plan[-1].end - 1})", "")
    total = sum(w for _, _, w in found)
    return [(i, j, w / total) for i, j, w in found]


def blend(frames: Sequence[torch.Tensor], weights: Sequence[float]) -> torch.Tensor:
    """Weighted mean of same-shaped frames as float32: exactly ``frames[0]`` when all frames are equal.

    Args:
        frames: same-shaped frames.
        weights: one weight per frame.

    Returns:
        The float32 weighted mean, a frame's shape.

    Raises:
        ParameterError: ``frames`` and ``weights`` differ in length.
    """
    if not frames or len(frames) != len(weights):
        raise ParameterError(
            "frames", f"has {len(frames)} frames for {len(weights)} weights", "pass one weight per frame"
        )
    out = frames[0].to(torch.float32).clone()
    acc = float(weights[0])
    for frame, w in zip(frames[1:], weights[1:]):
        acc += float(w)
        out += (frame.to(torch.float32) - out) * (float(w) / acc)
    return out


def stitch(plan: Sequence[Chunk], outputs: Sequence[torch.Tensor]) -> torch.Tensor:
    """The whole output ``[total, ...]`` float32 from each chunk's output (first ``chunk.frames`` used).

    Args:
        plan: the chunks (:func:`plan_chunks`).
        outputs: each chunk's output, in plan order, at least ``chunk.frames`` frames each.

    Returns:
        float32 ``[total, ...]``, overlaps crossfaded.

    Raises:
        ParameterError: ``outputs`` has not one output per chunk, or one has too few frames.
    """
    if len(outputs) != len(plan):
        raise ParameterError(
            "outputs", f"has {len(outputs)} chunk outputs for a plan of {len(plan)}", "pass one per chunk"
        )
    for chunk, out in zip(plan, outputs):
        if out.shape[0] < chunk.frames:
            raise ParameterError(
                "outputs", f"chunk {chunk.index} has {out.shape[0]} frames, the plan needs {chunk.frames}",
                "pass each chunk's whole output",
            )
    weights = [chunk_weights(c) for c in plan]
    total = plan[-1].end
    result = torch.empty((total, *outputs[0].shape[1:]), dtype=torch.float32)
    for frame in range(total):
        sources = frame_sources(plan, frame, weights)
        result[frame] = blend([outputs[i][j] for i, j, _ in sources], [w for _, _, w in sources])
    return result
