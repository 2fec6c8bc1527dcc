"""Short-long-range (SLR) temporal attention, ZVRD eq. 5-7 (Cao, Yue, Liu, Yang, AAAI 2025).

An image U-Net denoises the frames of a video as a batch. ZVRD replaces the
self-attention of the U-Net's decoder by two cascaded attentions:

**Cross-neighbour-frame attention (short range, eq. 5).** Frame ``i`` keeps
its own query; its keys and values come from its neighbours ``i-1`` and
``i+1``, concatenated along the token axis (one side at a video's ends)::

    K'_i = [K_{i-1} ; K_{i+1}],  V'_i = [V_{i-1} ; V_{i+1}],
    O_i  = softmax(Q_i K'_i^T / sqrt(d)) V'_i                      per head.

``K = to_k(h)`` and ``V = to_v(h)`` act token by token, so handing the
attention the concatenated neighbour hidden states ``[h_{i-1} ; h_{i+1}]`` as
its key/value input gives eq. 5 exactly (:func:`neighbour_context`). At an end
frame the single neighbour is used *twice* (``[h_{i+1} ; h_{i+1}]``): a key set
in which every key appears twice gives every softmax weight the same factor 2
in numerator and denominator, so the result is exactly the one-sided eq. 5,
and every row keeps the same key count (one batched attention call).

**Self-corrected trajectory attention (long range, eq. 6-7).** At the
decoder's largest attention resolution, once the schedule has passed T_TA,
every feature pixel ``p`` of frame ``i`` attends along its trajectory
``tau_i(p) = (p_j)_j`` (its correspondent in every frame ``j`` of the video,
``p_i = p``), with the cross-neighbour output as the query::

    out_i(p) = sum_j softmax_j( <O_i(p), O_j(p_j)> / sqrt(d) ) O_j(p_j)     per head.

The trajectory is chained from frame-to-frame correspondences; for every
consecutive frame pair and direction the correspondence of each pixel is
*chosen* among candidates (flow-based, feature-similarity-based and the
historically best one) by the warp error of the matching patch of a guidance
image (:func:`patch_errors`, :func:`select_targets`): the "self-correction".

Choices the paper leaves open, and what this module does
----------------------------------------------------------
* **Key/value of the trajectory attention.** The keys and values along the
  trajectory are the cross-neighbour outputs ``O_j(p_j)`` themselves (the
  query is ``O_i(p)``, as eq. 6 says), the cascade of ComfyUI-FLATTEN-style
  flow-guided attention. A consequence we rely on: for a static video every
  ``O_j(p_j)`` equals ``O_i(p)``, the softmax averages identical vectors and
  trajectory attention is the identity, so SLR on identical frames equals the
  unpatched model. (Raw ``V`` along the trajectory would instead throw away
  the spatial attention's output.)
* **Trajectory span.** All frames of the video present in the batch (a
  context window when ComfyUI's context windows are in use).
* **Trajectory sampling.** Nearest feature pixel: correspondences are integer
  token indices (flow vectors are rounded, targets clamped into the grid), and
  trajectories are chained through them (``p_{j+1} = c_{j->j+1}(p_j)``).
* **Feature similarity.** Cosine similarity of the layer's own-frame query
  vectors; the candidate is the best-matching token over the *whole*
  neighbour frame (the paper's "best-matching pixel").
* **Warp error.** Mean squared difference between the guidance patch around
  ``p`` in frame ``a`` and the patch of the same size around the candidate's
  target in frame ``b`` (the patch translated by the candidate's displacement,
  sampled bilinearly with border padding). Ties go to the first candidate in
  the order flow, history, similarity.
* **Pairs without a neighbour** (single-frame videos): neighbour attention is
  the frame's plain self-attention; trajectory attention is skipped.
* **Missing frames** (context windows): the neighbours of a row are the rows
  of the same video with the next lower and next higher frame position
  present in the batch; for complete batches that is exactly ``i-1, i+1``.

Token layout: a feature map ``[h, w]`` is flattened row-major (token
``t = y * w + x``), as ComfyUI's SpatialTransformer does.

Pure torch: no ComfyUI import.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Optional, Sequence

import torch
import torch.nn.functional as F

from .errors import ParameterError

# ---------------------------------------------------------------------------
# Cross-neighbour-frame attention (eq. 5)
# ---------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class NeighbourPlan:
    """For every batch row, the row of its previous and next frame (the other side at the ends, itself if alone)."""

    prev: torch.Tensor
    next: torch.Tensor

    @property
    def rows(self) -> int:
        return int(self.prev.shape[0])

    @property
    def is_identity(self) -> bool:
        """True when every row is its own only neighbour (single-frame videos): eq. 5 is plain self-attention.

        Compares on the plan's device (ask before :meth:`to` moves the plan to an accelerator)."""
        own = torch.arange(self.rows, device=self.prev.device)
        return bool(torch.equal(self.prev, own) and torch.equal(self.next, own))

    def to(self, device) -> "NeighbourPlan":
        return NeighbourPlan(self.prev.to(device), self.next.to(device))


def plan_neighbours(video: Sequence[int] | torch.Tensor, position: Sequence[int] | torch.Tensor) -> NeighbourPlan:
    """Neighbour rows for rows labelled ``(video, position)`` (positions distinct within a video).

    ``prev[r]`` is the row of the same video with the largest position below
    row ``r``'s, ``next[r]`` the one with the smallest position above it. A
    missing side takes the other side's row (eq. 5's one-sided ends, see the
    module docstring for why duplicating it is exact); a row alone in its video
    takes itself. Labels given as Python sequences are planned in Python (no
    tensor is read back); the plan is built on the CPU.

    Args:
        video: the video label of every batch row (ints, or a tensor read flattened).
        position: the frame position of every batch row within its video (ints, or a tensor read flattened).

    Returns:
        A :class:`NeighbourPlan` whose ``prev`` and ``next`` are int64 ``[rows]`` row indices on the CPU.

    Raises:
        ParameterError: naming ``video`` when ``video`` and ``position`` differ in length.
    """
    video = _labels(video)
    position = _labels(position)
    if len(video) != len(position):
        raise ParameterError("video", f"has {len(video)} labels but position has {len(position)}",
                             "pass one video label and one position per batch row")
    rows = len(video)
    prev = list(range(rows))
    nxt = list(range(rows))
    if rows:
        order = sorted(range(rows), key=lambda r: (video[r], position[r]))  # stable: ties keep row order
        for k, r in enumerate(order):
            p = order[k - 1] if k > 0 and video[order[k - 1]] == video[r] else None
            n = order[k + 1] if k + 1 < rows and video[order[k + 1]] == video[r] else None
            prev[r] = p if p is not None else (n if n is not None else r)
            nxt[r] = n if n is not None else (p if p is not None else r)
    return NeighbourPlan(torch.tensor(prev, dtype=torch.int64), torch.tensor(nxt, dtype=torch.int64))


def _labels(labels) -> list[int]:
    if isinstance(labels, torch.Tensor):
        return [int(x) for x in labels.detach().flatten().to("cpu", torch.int64).tolist()]
    return [int(x) for x in labels]


def neighbour_context(hidden: torch.Tensor, plan: NeighbourPlan) -> torch.Tensor:
    """``[h_prev ; h_next]`` along tokens for every row: ``hidden`` ``[rows, T, C]`` -> ``[rows, 2T, C]``.

    Used as the key/value input of the attention it gives eq. 5 exactly.

    Args:
        hidden: ``[rows, T, C]`` hidden states of the batch rows.
        plan: the :class:`NeighbourPlan` of these rows (moved to ``hidden``'s device).

    Returns:
        ``[rows, 2T, C]``: each row's previous then next neighbour's tokens, in ``hidden``'s dtype and device.

    Raises:
        ParameterError: naming ``plan`` when it is for another row count than ``hidden``'s.
    """
    if plan.rows != hidden.shape[0]:
        raise ParameterError("plan", f"is for {plan.rows} rows but hidden has {hidden.shape[0]}",
                             "plan the neighbours for this call's batch rows")
    prev = plan.prev.to(hidden.device)
    nxt = plan.next.to(hidden.device)
    return torch.cat([hidden.index_select(0, prev), hidden.index_select(0, nxt)], dim=1)


def reference_neighbour_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, heads: int,
                                  video=None, position=None) -> torch.Tensor:
    """ZVRD eq. 5 computed literally, for tests: ``q, k, v`` ``[B, T, heads * d]`` (already projected).

    For each row: ``K'`` = concatenation of the keys of the frames at position
    ``-1`` and ``+1`` of its video that exist (only one at the ends; the frame's
    own keys for a single-frame video), ``V'`` likewise, then
    ``softmax(Q K'^T / sqrt(d)) V'`` per head. Rows default to one video in
    batch order. Slow on purpose.

    Args:
        q: ``[B, T, heads * d]`` queries.
        k: ``[B, T, heads * d]`` keys.
        v: ``[B, T, heads * d]`` values.
        heads: number of attention heads (head size ``d = q.shape[-1] // heads``).
        video: video label per row (default: all rows one video).
        position: frame position per row (default: the row index).

    Returns:
        ``[B, T, heads * d]`` attention output in ``q``'s dtype.
    """
    batch, tokens, inner = q.shape
    video = [0] * batch if video is None else [int(x) for x in torch.as_tensor(video).flatten()]
    position = list(range(batch)) if position is None else [int(x) for x in torch.as_tensor(position).flatten()]
    d = inner // heads
    out = torch.empty_like(q)
    for i in range(batch):
        same = [j for j in range(batch) if video[j] == video[i]]
        below = [j for j in same if position[j] < position[i]]
        above = [j for j in same if position[j] > position[i]]
        sides = []
        if below:
            sides.append(max(below, key=lambda j: position[j]))
        if above:
            sides.append(min(above, key=lambda j: position[j]))
        if not sides:
            sides = [i]
        k_cat = torch.cat([k[j] for j in sides], dim=0)
        v_cat = torch.cat([v[j] for j in sides], dim=0)
        qh = q[i].reshape(tokens, heads, d).transpose(0, 1)
        kh = k_cat.reshape(-1, heads, d).transpose(0, 1)
        vh = v_cat.reshape(-1, heads, d).transpose(0, 1)
        weights = torch.softmax(qh @ kh.transpose(-1, -2) / math.sqrt(d), dim=-1)
        out[i] = (weights @ vh).transpose(0, 1).reshape(tokens, inner)
    return out


# ---------------------------------------------------------------------------
# Correspondence candidates and their selection (eq. 6, self-correction)
# ---------------------------------------------------------------------------


def flow_targets(flow: torch.Tensor) -> torch.Tensor:
    """Token index of ``round(p + flow(p))`` (clamped into the grid) for every token ``p``.

    ``flow`` ``[2, h, w]`` or ``[N, 2, h, w]`` in pixels of the ``h x w`` grid
    (channel 0 = x, 1 = y; the pack's flow convention, see
    ``optical_flow``). Returns ``[h*w]`` or ``[N, h*w]`` int64.

    Args:
        flow: ``[2, h, w]`` or ``[N, 2, h, w]`` flow in pixels of the grid (computed in float32).

    Returns:
        ``[h*w]`` (for ``[2, h, w]``) or ``[N, h*w]`` int64 row-major target tokens ``y * w + x``, on
        ``flow``'s device.

    Raises:
        ParameterError: naming ``flow`` when it is not ``[2, h, w]`` or ``[N, 2, h, w]``.
    """
    single = flow.dim() == 3
    if single:
        flow = flow.unsqueeze(0)
    if flow.dim() != 4 or flow.shape[1] != 2:
        raise ParameterError("flow", f"has shape {tuple(flow.shape)}", "pass [2,h,w] or [N,2,h,w]")
    h, w = flow.shape[-2:]
    flow = flow.float()
    xs = torch.arange(w, device=flow.device, dtype=flow.dtype).view(1, 1, w)
    ys = torch.arange(h, device=flow.device, dtype=flow.dtype).view(1, h, 1)
    tx = torch.round(xs + flow[:, 0]).clamp(0, w - 1).long()
    ty = torch.round(ys + flow[:, 1]).clamp(0, h - 1).long()
    out = (ty * w + tx).reshape(flow.shape[0], h * w)
    return out[0] if single else out


def similarity_targets(feat_a: torch.Tensor, feat_b: torch.Tensor, max_elements: int = 1 << 25):
    """Best cosine-similarity matches between two frames' features ``[T, C]``.

    Returns ``(a_to_b, b_to_a)``: for every token of ``a`` the index of its
    best-matching token of ``b``, and vice versa (int64 ``[T]`` each). The
    similarity matrix is formed in row blocks of at most ``max_elements``
    entries, so memory stays bounded for large frames.

    Args:
        feat_a: ``[T, C]`` features of frame a (computed in float32).
        feat_b: ``[T, C]`` features of frame b, same shape.
        max_elements: the most similarity entries formed at once (at least one row per block).

    Returns:
        ``(a_to_b, b_to_a)``: int64 ``[T]`` token indices each, on the features' device.

    Raises:
        ParameterError: naming ``feat_a`` when the two are not 2-d tensors of one shape.
    """
    if feat_a.shape != feat_b.shape or feat_a.dim() != 2:
        raise ParameterError("feat_a", f"has shape {tuple(feat_a.shape)} and feat_b {tuple(feat_b.shape)}",
                             "pass two feature maps of one shape [T, C]")
    na = F.normalize(feat_a.float(), dim=-1)
    nb = F.normalize(feat_b.float(), dim=-1)
    return _argmax_rows(na, nb, max_elements), _argmax_rows(nb, na, max_elements)


def _argmax_rows(x: torch.Tensor, y: torch.Tensor, max_elements: int) -> torch.Tensor:
    tokens = x.shape[0]
    block = max(1, max_elements // max(1, y.shape[0]))
    out = torch.empty(tokens, dtype=torch.int64, device=x.device)
    for start in range(0, tokens, block):
        out[start:start + block] = (x[start:start + block] @ y.transpose(0, 1)).argmax(dim=1)
    return out


def patch_errors(guide_a: torch.Tensor, guide_b: torch.Tensor, targets: torch.Tensor, grid: Sequence[int],
                 patch: int) -> torch.Tensor:
    """Warp error of candidate correspondences, measured on patches of a guidance image.

    ``guide_a``, ``guide_b``: the two frames ``[C, Hg, Wg]`` of a guidance image
    (the x0 prediction or the input video) at any resolution; ``grid = (h, w)``
    the feature grid; ``targets`` ``[K, h*w]`` int64: for each of ``K``
    candidates the token of ``b`` that each token of ``a`` corresponds to.

    Feature pixel ``(x, y)`` covers the guidance area centred at
    ``((x + 0.5) Wg / w - 0.5, (y + 0.5) Hg / h - 0.5)``. The error of a
    candidate at a token is the mean over channels and a ``patch x patch``
    window of the squared difference between ``a`` around the token's centre
    and ``b`` around its target's centre (bilinear samples, border padding).
    With ``Hg = 8 h`` and ``patch = 8`` this is exactly the 8x8 pixel block of
    each latent pixel. Returns ``[K, h*w]`` float32.

    Args:
        guide_a: ``[C, Hg, Wg]`` guidance frame a.
        guide_b: ``[C, Hg, Wg]`` guidance frame b, same shape.
        targets: ``[K, h*w]`` (or ``[h*w]``, read as K = 1) int64 target tokens in b.
        grid: the feature grid ``(h, w)``.
        patch: the window side in guidance pixels (values below 1 count as 1).

    Returns:
        ``[K, h*w]`` float32 mean squared patch differences, on ``guide_a``'s device.

    Raises:
        ParameterError: naming ``guide_a`` (the two frames are not 3-d tensors of one shape) or ``targets`` (not
            ``h*w`` tokens).
    """
    if guide_a.shape != guide_b.shape or guide_a.dim() != 3:
        raise ParameterError("guide_a", f"has shape {tuple(guide_a.shape)} and guide_b {tuple(guide_b.shape)}",
                             "pass two guidance frames of one shape [C, H, W]")
    h, w = (int(s) for s in grid)
    if targets.dim() == 1:
        targets = targets.unsqueeze(0)
    if targets.shape[-1] != h * w:
        raise ParameterError("targets", f"has {targets.shape[-1]} tokens for a {h}x{w} grid",
                             "give one target per token of the grid (h*w)")
    patch = max(1, int(patch))
    device = guide_a.device
    _, hg, wg = guide_a.shape
    ga = guide_a.float().unsqueeze(0)
    gb = guide_b.float().unsqueeze(0)
    tokens = torch.arange(h * w, device=device)
    off = torch.arange(patch, device=device, dtype=torch.float32) - (patch - 1) / 2.0
    oy, ox = torch.meshgrid(off, off, indexing="ij")
    ox, oy = ox.reshape(1, -1), oy.reshape(1, -1)  # [1, P*P]

    def centres(tok):
        x = (tok % w).float()
        y = torch.div(tok, w, rounding_mode="floor").float()
        return (x + 0.5) * (wg / w) - 0.5, (y + 0.5) * (hg / h) - 0.5

    def sample(img, cx, cy):  # cx, cy [N] -> [C, N, P*P]
        px = cx.unsqueeze(1) + ox
        py = cy.unsqueeze(1) + oy
        nx = px * (2.0 / max(wg - 1, 1)) - 1.0 if wg > 1 else torch.zeros_like(px)
        ny = py * (2.0 / max(hg - 1, 1)) - 1.0 if hg > 1 else torch.zeros_like(py)
        grid_ = torch.stack([nx, ny], dim=-1).unsqueeze(0)  # [1, N, P*P, 2]
        return F.grid_sample(img, grid_, mode="bilinear", padding_mode="border", align_corners=True)[0]

    ax, ay = centres(tokens)
    pa = sample(ga, ax, ay)  # [C, T, P*P]
    errors = torch.empty(targets.shape[0], h * w, dtype=torch.float32, device=device)
    for k in range(targets.shape[0]):
        bx, by = centres(targets[k].to(device))
        pb = sample(gb, bx, by)
        errors[k] = (pa - pb).square().mean(dim=(0, 2))
    return errors


def select_targets(candidates: torch.Tensor, errors: torch.Tensor):
    """Per token, the candidate with the lowest error: ``(chosen [T], index [T])``; ties go to the first.

    Args:
        candidates: ``[K, T]`` int64 target tokens of ``K`` candidates.
        errors: ``[K, T]`` their errors (:func:`patch_errors`).

    Returns:
        ``(chosen, index)``: the winning target per token (``candidates``' dtype, ``[T]``) and the winning
        candidate's index (int64 ``[T]``).

    Raises:
        ParameterError: naming ``candidates`` when its shape differs from ``errors``'.
    """
    if candidates.shape != errors.shape:
        raise ParameterError("candidates", f"has shape {tuple(candidates.shape)} but errors {tuple(errors.shape)}",
                             "pass one error per candidate and token (the same shape)")
    index = errors.argmin(dim=0)
    chosen = candidates.gather(0, index.unsqueeze(0))[0]
    return chosen, index


CANDIDATES = ("flow", "history", "similarity")
"""The correspondence candidates in the order :func:`select_correspondences` tries them (ties go to the first)."""


def select_correspondences(guide_a: torch.Tensor, guide_b: torch.Tensor, grid: Sequence[int], patch: int,
                           similarity: Sequence[torch.Tensor], flow: Optional[Sequence[torch.Tensor]] = None,
                           history: Optional[Sequence[torch.Tensor]] = None):
    """The self-corrected correspondences of one frame pair ``(a, b)``, both directions (eq. 6's candidates).

    Per direction and token, the candidate with the lowest :func:`patch_errors` warp error on the guidance
    frames ``guide_a``, ``guide_b`` ``[C, H, W]`` wins, among (in this order, ties to the first) ``flow``,
    ``history`` (the previous step's choice) and ``similarity`` (:func:`similarity_targets`); each is a pair
    ``(a->b, b->a)`` of ``[h*w]`` token indices, ``flow`` and ``history`` may be None.

    Returns ``((a_to_b, b_to_a), (index_ab, index_ba), names)``: the chosen targets, which candidate each token
    took (an index into ``names``, int64 ``[h*w]`` on the guidance's device) and the candidate names in use.
    Nothing is read back to the host.

    Args:
        guide_a: ``[C, H, W]`` guidance frame a.
        guide_b: ``[C, H, W]`` guidance frame b, same shape.
        grid: the feature grid ``(h, w)``.
        patch: the patch side in guidance pixels (:func:`patch_errors`).
        similarity: ``(a_to_b, b_to_a)`` int64 ``[h*w]`` feature-similarity candidates.
        flow: ``(a_to_b, b_to_a)`` int64 ``[h*w]`` flow candidates (:func:`flow_targets`), or None.
        history: ``(a_to_b, b_to_a)`` int64 ``[h*w]`` previous choices, or None.

    Returns:
        ``((a_to_b, b_to_a), (index_ab, index_ba), names)``: chosen int64 ``[h*w]`` targets per direction, the
        int64 ``[h*w]`` candidate index per token, and the tuple of candidate names in use (a subset of
        :data:`CANDIDATES`, in order).

    Raises:
        ParameterError: naming ``guide_a`` or ``targets`` (from :func:`patch_errors`) when the guidance frames
            differ in shape or the candidates do not have ``h*w`` tokens.
    """
    names = tuple(name for name, given in zip(CANDIDATES, (flow, history, similarity)) if given is not None)
    given = [c for c in (flow, history, similarity) if c is not None]
    chosen, index = [], []
    for direction, (ga, gb) in enumerate(((guide_a, guide_b), (guide_b, guide_a))):
        stacked = torch.stack([c[direction] for c in given])
        errors = patch_errors(ga, gb, stacked, grid, patch)
        pick, which = select_targets(stacked, errors)
        chosen.append(pick)
        index.append(which)
    return (chosen[0], chosen[1]), (index[0], index[1]), names


def latent_preview(latent: torch.Tensor, rgb_factors: Optional[torch.Tensor] = None,
                   rgb_bias: Optional[torch.Tensor] = None, short_side: int = 256, max_scale: int = 8) -> torch.Tensor:
    """A latent ``[F, C, h, w]`` as images an optical-flow estimator can read: ``[F, 3 or 1, h*u, w*u]`` in 0..1.

    With ``rgb_factors`` ``[C, 3]`` (a latent format's ``latent_rgb_factors``, as ComfyUI's previews use) and
    optional ``rgb_bias`` ``[3]``: ``((latent . factors + bias) + 1) / 2`` clamped to 0..1. Without them (or
    when their channel count differs from the latent's): the channel mean, min-max normalised over the whole
    tensor. Upscaled bilinearly by ``u = clamp(ceil(short_side / min(h, w)), 1, max_scale)`` (DIS is unreliable
    on 64 px images). Computed in float32 on the latent's device.

    Args:
        latent: ``[F, C, h, w]`` latent (detached, read in float32).
        rgb_factors: ``[C, 3]`` latent-to-RGB factors, or None.
        rgb_bias: ``[3]`` RGB bias added after the factors, or None.
        short_side: the short side in pixels the upscaling aims at.
        max_scale: the largest upscaling factor ``u``.

    Returns:
        ``[F, 3, h*u, w*u]`` (with factors) or ``[F, 1, h*u, w*u]`` float32 in 0..1 on the latent's device.

    Raises:
        ParameterError: naming ``latent`` when it is not a 4-d tensor.
    """
    if not isinstance(latent, torch.Tensor) or latent.dim() != 4:
        shape = tuple(latent.shape) if isinstance(latent, torch.Tensor) else type(latent).__name__
        raise ParameterError("latent", f"has shape {shape}", "pass a latent [frames, C, h, w]")
    x = latent.detach().float()
    rgb = None
    if rgb_factors is not None and rgb_factors.shape[0] == x.shape[1]:
        rgb = torch.einsum("fchw,cr->frhw", x, rgb_factors.to(x.device))
        if rgb_bias is not None:
            rgb = rgb + rgb_bias.to(x.device).view(1, 3, 1, 1)
        rgb = ((rgb + 1.0) / 2.0).clamp(0.0, 1.0)
    if rgb is None:
        gray = x.mean(dim=1, keepdim=True)
        lo, hi = gray.amin(), gray.amax()
        rgb = (gray - lo) / (hi - lo).clamp_min(1e-6)
    h, w = rgb.shape[-2:]
    up = max(1, min(int(max_scale), math.ceil(short_side / max(1, min(h, w)))))
    if up > 1:
        rgb = F.interpolate(rgb, scale_factor=up, mode="bilinear", align_corners=False).clamp(0.0, 1.0)
    return rgb


# ---------------------------------------------------------------------------
# Trajectory attention (eq. 6-7)
# ---------------------------------------------------------------------------


def trajectory_indices(forward: Sequence[torch.Tensor], backward: Sequence[torch.Tensor], frame: int,
                       tokens: int, device=None) -> torch.Tensor:
    """Token index of every token of ``frame``'s trajectory in every frame of the video: ``[L, T]``.

    ``forward[s]`` ``[T]``: for each token of frame ``s`` its correspondent in
    frame ``s+1``; ``backward[s]``: for each token of frame ``s+1`` its
    correspondent in frame ``s`` (``L-1`` entries each). Row ``j`` of the result
    is ``p_j`` for ``p`` = each token of ``frame``: chained forward for
    ``j > frame`` and backward for ``j < frame``; row ``frame`` is ``arange(T)``.

    Args:
        forward: ``L-1`` int64 ``[T]`` correspondences, frame ``s`` -> ``s+1``.
        backward: ``L-1`` int64 ``[T]`` correspondences, frame ``s+1`` -> ``s``.
        frame: the trajectory's frame ``i`` (0 .. L-1).
        tokens: tokens per frame ``T``.
        device: device of the result (None: ``forward[0]``'s, the CPU without frames).

    Returns:
        ``[L, T]`` int64 token indices, row ``j`` the trajectory's token in frame ``j``.

    Raises:
        ParameterError: naming ``backward`` when its length differs from ``forward``'s.
    """
    length = len(forward) + 1
    if len(backward) != length - 1:
        raise ParameterError("backward", f"has {len(backward)} entries but forward has {len(forward)}",
                             "pass one backward correspondence per forward one (frames - 1 each)")
    if device is None:
        device = forward[0].device if forward else torch.device("cpu")
    idx = [None] * length
    idx[frame] = torch.arange(tokens, device=device)
    for j in range(frame + 1, length):
        idx[j] = forward[j - 1].to(device)[idx[j - 1]]
    for j in range(frame - 1, -1, -1):
        idx[j] = backward[j].to(device)[idx[j + 1]]
    return torch.stack(idx)


def trajectory_attention(o: torch.Tensor, forward: Sequence[torch.Tensor], backward: Sequence[torch.Tensor],
                         heads: int) -> torch.Tensor:
    """Eq. 6-7 for one video: ``o`` ``[L, T, heads * d]`` (the cross-neighbour outputs of its frames, in order).

    ``out_i(p) = sum_j softmax_j(<o_i(p), o_j(p_j)> / sqrt(d)) o_j(p_j)`` per head,
    with ``p_j`` the trajectory of token ``p`` of frame ``i``
    (:func:`trajectory_indices`). Scores and softmax are in float32; the result
    has ``o``'s dtype. Memory: one ``[L, T, heads * d]`` gather at a time.

    Args:
        o: ``[L, T, heads * d]`` cross-neighbour outputs of the video's ``L`` frames.
        forward: ``L-1`` int64 ``[T]`` correspondences, frame ``s`` -> ``s+1``.
        backward: ``L-1`` int64 ``[T]`` correspondences, frame ``s+1`` -> ``s``.
        heads: number of attention heads.

    Returns:
        ``[L, T, heads * d]`` in ``o``'s dtype and device; a copy of ``o`` when ``L < 2``.

    Raises:
        ParameterError: naming ``backward`` (:func:`trajectory_indices`) when its length differs from ``forward``'s.
    """
    length, tokens, inner = o.shape
    if length < 2:
        return o.clone()
    d = inner // heads
    scale = 1.0 / math.sqrt(d)
    frames = torch.arange(length, device=o.device).unsqueeze(1)
    out = torch.empty_like(o)
    for i in range(length):
        idx = trajectory_indices(forward, backward, i, tokens, o.device)  # [L, T]
        kv = o[frames, idx].float().view(length, tokens, heads, d)  # [L, T, H, d]
        q = o[i].float().view(tokens, heads, d)
        scores = torch.einsum("thd,lthd->thl", q, kv) * scale
        weights = torch.softmax(scores, dim=-1)
        out[i] = torch.einsum("thl,lthd->thd", weights, kv).reshape(tokens, inner).to(o.dtype)
    return out


def reference_trajectory_attention(o: torch.Tensor, forward: Sequence[torch.Tensor], backward: Sequence[torch.Tensor],
                                   heads: int) -> torch.Tensor:
    """Eq. 6-7 token by token, following the trajectory one correspondence at a time (tests only; slow).

    Args:
        o: ``[L, T, heads * d]`` cross-neighbour outputs of the video's ``L`` frames.
        forward: ``L-1`` ``[T]`` correspondences, frame ``s`` -> ``s+1``.
        backward: ``L-1`` ``[T]`` correspondences, frame ``s+1`` -> ``s``.
        heads: number of attention heads.

    Returns:
        ``[L, T, heads * d]`` in ``o``'s dtype (computed in float64); a copy of ``o`` when ``L < 2``.
    """
    length, tokens, inner = o.shape
    d = inner // heads
    out = o.clone()
    if length < 2:
        return out
    for i in range(length):
        for p in range(tokens):
            path = {i: p}
            for j in range(i + 1, length):
                path[j] = int(forward[j - 1][path[j - 1]])
            for j in range(i - 1, -1, -1):
                path[j] = int(backward[j][path[j + 1]])
            keys = torch.stack([o[j, path[j]] for j in range(length)])  # [L, inner]
            for hd in range(heads):
                sl = slice(hd * d, (hd + 1) * d)
                s = keys[:, sl].double() @ o[i, p, sl].double() / math.sqrt(d)
                out[i, p, sl] = (torch.softmax(s, 0) @ keys[:, sl].double()).to(o.dtype)
    return out


def feature_grid(tokens: int, shape: Optional[Sequence[int]]) -> tuple[int, int] | None:
    """The ``(h, w)`` feature grid of ``tokens`` from an activation shape ``[..., h, w]`` (None if it does not fit).

    Args:
        tokens: the token count ``T`` of a flattened feature map.
        shape: an activation shape whose last two sizes are ``h, w``, or None.

    Returns:
        ``(h, w)`` when ``h * w == tokens``; None otherwise, or when ``shape`` is None or shorter than 2.
    """
    if shape is None or len(shape) < 2:
        return None
    h, w = int(shape[-2]), int(shape[-1])
    return (h, w) if h * w == tokens else None
