"""Sliding-window cross-frame attention (SW-CFA), TDM eq. 7-9.

An image U-Net denoises the frames of a video as a batch. SW-CFA makes each
frame's self-attention look at its neighbours: for frame ``i`` of a video with
frames ``0..F-1`` and window radius ``r``, with ``W(i) = {j : max(0, i-r) <= j
<= min(F-1, i+r)}`` (clipped at the video's ends, frame ``i`` included),

    K_bar_i = 1/|W(i)| * sum_{j in W(i)} K_j                      (eq. 7)
    V_bar_i = 1/|W(i)| * sum_{j in W(i)} V_j                      (eq. 8)
    out_i   = softmax(Q_i K_bar_i^T / sqrt(d)) V_bar_i  per head  (eq. 9)

with ``Q_i, K_j, V_j`` the frame's own query and the frames' keys and values
(``[tokens, heads * d]`` each). The query stays the frame's own.

Why a mean of the hidden states is enough: ``K = h W_k (+ b_k)`` and
``V = h W_v (+ b_v)`` are affine in the hidden states ``h``, and the window
weights ``1/|W(i)|`` sum to 1, so

    K_bar_i = (1/|W(i)| sum_j h_j) W_k (+ b_k) = to_k(h_bar_i),   likewise V_bar_i = to_v(h_bar_i).

Replacing the attention's key/value *input* by the window mean ``h_bar`` of the
hidden states therefore gives eq. 7-9 exactly, and the attention itself is the
host's plain self-attention (same backend, same cost). ``h_bar`` for every
frame costs one cumulative sum over the frame axis: with ``S_k = sum_{j<k} h_j``
(in the frame order of each video), ``h_bar_i = (S_{hi_i} - S_{lo_i}) / (hi_i - lo_i)``,
``O(frames * tokens * channels)`` whatever the radius; no frame's window is
ever materialised.

Frames are identified by labels, not by an assumed layout: each row of the
batch carries a ``video`` id and a ``position`` (its frame index inside that
video); the window of a row is the rows of the same video whose position is
within ``radius``. :func:`window_mean` covers the plain layout (videos of
``frames_per_video`` consecutive rows); :func:`window_mean_at` takes explicit
labels (several cond/uncond chunks in one batch, ComfyUI context windows).
Rows missing from the batch (outside a context window) are simply not in any
window, so the window is clipped there too.

Precision: the result has the input's dtype. The prefix sums are accumulated
in float32 for 16-bit inputs (a float16/bfloat16 running sum of many frames
would lose the small differences ``S_hi - S_lo``), in the input's dtype
otherwise.

Pure torch: no ComfyUI import.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Sequence

import torch

from .errors import ParameterError


@dataclasses.dataclass(frozen=True)
class WindowPlan:
    """Where each row's window starts and ends in the prefix-sum axis (rows sorted by video, position).

    ``order`` sorts the rows (``None`` when they already are); ``inverse`` undoes it.
    Row ``k`` of the sorted batch averages sorted rows ``lo[k] .. hi[k]-1``.
    """

    order: torch.Tensor | None
    inverse: torch.Tensor | None
    lo: torch.Tensor
    hi: torch.Tensor
    count: torch.Tensor

    @property
    def rows(self) -> int:
        return int(self.lo.shape[0])

    @property
    def is_identity(self) -> bool:
        """True when every window holds only its own row (radius 0, or single-frame videos)."""
        return bool(torch.all(self.count == 1))

    def to(self, device) -> "WindowPlan":
        move = lambda t: None if t is None else t.to(device)  # noqa: E731
        return WindowPlan(move(self.order), move(self.inverse), move(self.lo), move(self.hi), move(self.count))


def plan_windows(video: Sequence[int] | torch.Tensor, position: Sequence[int] | torch.Tensor, radius: int) -> WindowPlan:
    """The window bounds for rows labelled ``(video, position)``; see the module docstring.

    ``video`` and ``position`` are integer labels, one per batch row (position
    >= 0). A radius larger than the longest video is clipped to it (the window
    is then the whole video).

    Args:
        video: each row's video label.
        position: each row's frame position in its video (>= 0).
        radius: the window radius ``r`` in frames (0: no cross-frame attention).

    Returns:
        The :class:`WindowPlan` (CPU tensors; :meth:`WindowPlan.to` moves it).

    Raises:
        ParameterError: ``video`` and ``position`` differ in length, ``radius`` is negative, or ``position`` has
            a negative value.
    """
    video = _cpu_labels(video)
    position = _cpu_labels(position)
    if video.shape != position.shape:
        raise ParameterError("video", f"has {video.numel()} labels but position has {position.numel()}",
                             "pass one video label and one position per batch row")
    if radius < 0:
        raise ParameterError("radius", f"is {radius}", "use 0 (no cross-frame attention) or a positive window radius")
    rows = video.numel()
    if rows == 0:
        empty = torch.zeros(0, dtype=torch.int64)
        return WindowPlan(None, None, empty, empty, empty.to(torch.float64))
    if int(position.min()) < 0:
        raise ParameterError("position", f"has a negative frame position ({int(position.min())})",
                             "use frame positions >= 0")
    span = int(position.max())
    radius = min(int(radius), span)
    # one sortable key per row; videos are spaced so that no window reaches the next video's keys
    stride = span + 2 * radius + 1
    vid = video - video.min()
    key = vid * stride + position
    key_sorted, order = torch.sort(key, stable=True)
    lo = torch.searchsorted(key_sorted, key_sorted - radius, right=False)
    hi = torch.searchsorted(key_sorted, key_sorted + radius, right=True)
    if torch.equal(order, torch.arange(rows)):
        order_t, inverse = None, None
    else:
        order_t = order
        inverse = torch.empty_like(order)
        inverse[order] = torch.arange(rows)
    return WindowPlan(order_t, inverse, lo, hi, (hi - lo).to(torch.float64))


def _cpu_labels(labels) -> torch.Tensor:
    """Integer labels as a flat int64 CPU tensor (Python sequences are converted without touching a device)."""
    if isinstance(labels, torch.Tensor):
        return labels.detach().flatten().to("cpu", torch.int64)
    return torch.tensor([int(x) for x in labels], dtype=torch.int64)


def video_layout(batch: int, frames_per_video: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(video, position)`` labels of a batch made of videos of ``frames_per_video`` consecutive frames.

    ``frames_per_video`` 0 means the whole batch is one video.

    Args:
        batch: the batch's row count.
        frames_per_video: frames of each video (0: the whole batch).

    Returns:
        ``(video, position)``: int64 ``[batch]`` labels.

    Raises:
        ParameterError: ``frames_per_video`` is negative or does not divide ``batch``.
    """
    if frames_per_video < 0:
        raise ParameterError("frames_per_video", f"is {frames_per_video}",
                             "use 0 (the whole batch is one video) or the frame count of each video")
    if frames_per_video == 0:
        frames_per_video = max(batch, 1)
    if batch % frames_per_video != 0:
        raise ParameterError("frames_per_video", f"is {frames_per_video}, which does not divide the batch of {batch} "
                             "frames", "set it to the number of frames of each video in the batch (0 if the batch is "
                             "one video)")
    rows = torch.arange(batch)
    return rows // frames_per_video, rows % frames_per_video


def apply_plan(hidden: torch.Tensor, plan: WindowPlan) -> torch.Tensor:
    """Window mean of ``hidden`` ``[rows, ...]`` along dim 0 for a :class:`WindowPlan` (on ``hidden``'s device).

    Memory: one prefix-sum buffer, the result and one gathered temporary (the subtrahend), each ``rows + 1`` or
    ``rows`` frames; the subtraction and division run in place. When autograd records (guidance that needs
    gradients through the model) the same arithmetic runs out of place, so it can be differentiated.

    Args:
        hidden: ``[rows, ...]`` states, one row per batch row.
        plan: the :class:`WindowPlan` of these rows (:func:`plan_windows`).

    Returns:
        The window means, ``hidden``'s shape.

    Raises:
        ParameterError: ``plan`` is for another row count.
    """
    rows = hidden.shape[0]
    if plan.rows != rows:
        raise ParameterError("plan", f"is for {plan.rows} rows but hidden has {rows}",
                             "plan the windows for this call's batch rows")
    if rows == 0:
        return hidden
    acc = hidden.dtype if hidden.dtype in (torch.float32, torch.float64) else torch.float32
    x = hidden if plan.order is None else hidden.index_select(0, plan.order)
    count = plan.count.to(acc).view((rows,) + (1,) * (x.dim() - 1))
    if torch.is_grad_enabled() and hidden.requires_grad:
        # prefix sums with a leading zero row: csum[k] = sum of sorted rows < k
        csum = torch.cat((x.new_zeros((1,) + tuple(x.shape[1:]), dtype=acc), torch.cumsum(x, dim=0, dtype=acc)))
        out = (csum.index_select(0, plan.hi) - csum.index_select(0, plan.lo)) / count
    else:
        csum = torch.empty((rows + 1,) + tuple(x.shape[1:]), dtype=acc, device=x.device)
        csum[0].zero_()
        torch.cumsum(x, dim=0, dtype=acc, out=csum[1:])
        del x
        out = csum.index_select(0, plan.hi)
        out.sub_(csum.index_select(0, plan.lo))
        del csum
        out.div_(count)
    out = out.to(hidden.dtype)
    if plan.inverse is not None:
        out = out.index_select(0, plan.inverse)
    return out


def window_mean_at(hidden: torch.Tensor, video, position, radius: int) -> torch.Tensor:
    """Mean of ``hidden`` over each row's window, rows labelled by ``(video, position)`` (TDM eq. 7-8 on ``h``).

    Args:
        hidden: ``[rows, ...]`` states.
        video: each row's video label.
        position: each row's frame position.
        radius: the window radius in frames.

    Returns:
        The window means, ``hidden``'s shape.

    Raises:
        ParameterError: as :func:`plan_windows`.
    """
    return apply_plan(hidden, plan_windows(video, position, radius).to(hidden.device))


def window_mean(hidden: torch.Tensor, frames_per_video: int, radius: int) -> torch.Tensor:
    """Sliding-window mean over frames: ``hidden`` ``[B, T, C]`` holds ``B / frames_per_video`` videos of
    consecutive frames (``frames_per_video`` 0: the whole batch is one video). Row ``i`` becomes the mean of
    rows ``i-r..i+r`` of its own video, clipped at the video's ends (TDM eq. 7-8 applied to ``h``; see the
    module docstring for why that equals the mean of K and V).

    Args:
        hidden: ``[B, T, C]`` states, one row per frame.
        frames_per_video: frames of each video (0: the whole batch).
        radius: the window radius ``r`` in frames.

    Returns:
        The window means, ``hidden``'s shape.

    Raises:
        ParameterError: as :func:`video_layout` and :func:`plan_windows`.
    """
    video, position = video_layout(hidden.shape[0], frames_per_video)
    return window_mean_at(hidden, video, position, radius)


def reference_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, heads: int, radius: int, *,
                        frames_per_video: int = 0, video=None, position=None) -> torch.Tensor:
    """TDM eq. 7-9 computed literally, for tests: ``q, k, v`` ``[B, T, heads * d]`` (already projected).

    For each row ``i``: ``K_bar`` = mean of ``k`` over the rows of its window, ``V_bar`` likewise, then
    ``softmax(Q_i K_bar^T / sqrt(d)) V_bar`` per head. Rows are labelled by ``(video, position)``
    (default: :func:`video_layout` of ``frames_per_video``). Slow on purpose; not for sampling.

    Args:
        q: ``[B, T, heads * d]`` queries.
        k: ``[B, T, heads * d]`` keys.
        v: ``[B, T, heads * d]`` values.
        heads: the head count.
        radius: the window radius in frames.
        frames_per_video: frames of each video, when ``video``/``position`` are not given.
        video: each row's video label, or None.
        position: each row's frame position, or None.

    Returns:
        ``[B, T, heads * d]`` attention outputs.

    Raises:
        ParameterError: as :func:`video_layout`, when the labels come from ``frames_per_video``.
    """
    batch, tokens, inner = q.shape
    if video is None or position is None:
        video, position = video_layout(batch, frames_per_video)
    video = [int(x) for x in torch.as_tensor(video).flatten()]
    position = [int(x) for x in torch.as_tensor(position).flatten()]
    d = inner // heads
    out = torch.empty_like(q)
    for i in range(batch):
        window = [j for j in range(batch) if video[j] == video[i] and abs(position[j] - position[i]) <= radius]
        k_bar = torch.stack([k[j] for j in window]).mean(dim=0)  # eq. 7
        v_bar = torch.stack([v[j] for j in window]).mean(dim=0)  # eq. 8
        qh = q[i].reshape(tokens, heads, d).transpose(0, 1)  # [heads, T, d]
        kh = k_bar.reshape(k_bar.shape[0], heads, d).transpose(0, 1)
        vh = v_bar.reshape(v_bar.shape[0], heads, d).transpose(0, 1)
        weights = torch.softmax(qh @ kh.transpose(-1, -2) / math.sqrt(d), dim=-1)  # eq. 9
        out[i] = (weights @ vh).transpose(0, 1).reshape(tokens, inner)
    return out
