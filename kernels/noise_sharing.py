"""Spatial-temporal noise sharing, ZVRD eq. 11 (Cao, Yue, Liu, Yang, AAAI 2025).

ZVRD gives every frame the same initial latent x_T and the same per-step
noise z (:func:`shared_noise`), then, where the flow is reliable, lets the
noise follow the motion (:func:`blend_noise`):

    z_i  <-  M (lambda z_i + (1 - lambda) W(z_{i-1})) + (1 - M) z_i        (eq. 11)

with ``W`` the warp of the previous frame's noise onto frame ``i`` by the
backward flow (frame ``i`` -> ``i-1``), ``M`` the non-occluded mask of frame
``i`` and ``lambda`` in [0, 1] the weight of the frame's own noise.

Frame layouts: the frame axis is a parameter: axis 0 for an image U-Net
batch ``[F, C, H, W]`` (frames as batch items), axis 2 for a video latent
``[B, C, T, H, W]``. The last two axes are always the spatial ones; every
other axis (channels, batch) is carried along with the same flow.

Typical use (image frames ``[F, H, W, 3]``, latent noise ``[F, 4, H/8, W/8]``)::

    fw = optical_flow.flow_pairs(frames, forward=True)
    bw = optical_flow.flow_pairs(frames, forward=False)
    occluded = optical_flow.occlusion_mask(bw, fw)          # pixels of frames 1..F-1
    size = noise.shape[-2:]
    flow_lat = optical_flow.resize_flow(bw, size)
    valid = ~optical_flow.resize_mask(occluded, size, threshold=0.01)
    z = blend_noise(shared_noise(noise.shape, 0, gen), flow_lat, valid, lam, frame_axis=0)

Choices and their reasons
-------------------------
**Sequential.** Frames are processed for ``i = 1 .. F-1`` in order and
``z_{i-1}`` is the previous frame's *already blended* noise. With shared
noise the raw ``z_{i-1}`` equals ``z_i``, so blending with the raw one would
give, for a steady motion ``d``, the same ``(lambda z(p) + (1-lambda) z(p+d))``
pattern in every frame: a static pattern that does not move with the
content, i.e. nothing gained over plain shared noise. Blending with the
blended previous frame makes the noise travel along flow trajectories (for
``lambda = 0`` it is transported exactly), which is the purpose of eq. 11.

**Nearest-neighbour warp.** ``W(z)(p) = z(round(p + flow(p)))`` copies one
sample; bilinear warping averages up to four independent samples and shrinks
the variance (by up to 4x at half-pixel offsets). The nearest warp is an
index gather here (not grid_sample) because the normaliser below needs to
know *which* sample was taken; it is what ``optical_flow.warp(mode="nearest")``
computes. Pixels whose source lies outside the frame take no blend (``M = 0``
there).

**Exact unit-variance normaliser.** As written, eq. 11 has variance
``lambda^2 + (1-lambda)^2 + 2 lambda (1-lambda) rho`` inside the mask, where
``rho = Corr(z_i(p), W(z_{i-1})(p))``; a sampler expects unit-variance noise,
so the blended part is divided by the square root of that. Which ``rho``
applies?

* Independent per-frame noise and a first blend: ``rho = 0``, normaliser
  ``sqrt(lambda^2 + (1-lambda)^2)``.
* Shared noise (z_i == z_{i-1} before warping): the warped sample is
  ``z(q)`` with ``q = round(p + flow(p))``, the *same field at another
  pixel*. Distinct pixels of one white-noise field are independent, so
  ``rho = 0`` whenever ``q != p`` -- the sharing does not correlate them. But
  where the flow rounds to zero (static background, the common case)
  ``q = p`` and the warped sample *is* ``z_i(p)``: ``rho = 1``, the blend is
  ``z_i(p)`` itself and the normaliser must be 1. Dividing by
  ``sqrt(lambda^2+(1-lambda)^2)`` there would inflate the variance to
  ``1 / (lambda^2 + (1-lambda)^2)`` (2x at lambda = 0.5).
* Sequential blending: ``W(z_{i-1})(p)`` is a combination of samples along
  the backward trajectory of ``p``; it correlates with ``z_i(p)`` exactly when
  that trajectory passes through pixel ``p`` of the shared field (zero flow,
  or motion that comes back, e.g. a shake).

So the exact normaliser is computed per pixel. The implementation tracks,
for every pixel of the current frame, the blended noise as a linear
combination ``sum_k c_k g_k`` of independent standard-normal base samples
``g_k`` (key = which raw frame field, which pixel). A new step forms
``a z_i(p) + b W(prev)(p)`` (``a = 1 - m (1-lambda)``, ``b = m (1-lambda)``,
``m`` the mask value), merges the term of ``z_i(p)`` with an equal key
gathered from the trajectory, and divides by ``sqrt(sum_k c_k^2)`` -- the
exact standard deviation, because the merged keys are distinct independent
samples. This reduces to ``sqrt(lambda^2 + (1-lambda)^2)`` for independent
samples and to 1 for ``q = p`` with shared noise. Raw frames that are
bitwise-equal are recognised as one shared field; otherwise raw frames are
taken to be independent draws, and the entries of one frame (all channels,
batch items and pixels) independent standard normals. Bookkeeping is at most
``F`` terms per pixel of one frame (not per channel), negligible next to the
model.

A soft mask ``m`` in (0, 1) is accepted: eq. 11 then is the same blend with
effective weight ``1 - m (1-lambda)`` on the own noise, and the same exact
normaliser keeps it unit variance. ``M = 0`` pixels and ``lambda = 1`` leave
``z`` unchanged bit for bit.

What stays approximate: the marginal of every element is exactly N(0, 1),
but a nearest warp can copy one source sample to two pixels where the flow
converges (occlusion, zoom), which correlates those pixels. The occlusion
mask removes most such places; what remains is ZVRD's own approximation
(integral-noise transport, Chang et al. ICLR 2024, would avoid it at far
higher cost).
"""

from __future__ import annotations

import math
from typing import Optional, Sequence

import torch

from .errors import ParameterError
from . import shot_cuts


def step_seed(noise_seed: int) -> int:
    """The per-step noise stream's seed: one 64-bit LCG step from ``noise_seed`` (Knuth's MMIX constants).

    Seeding the per-step stream with this instead of ``noise_seed`` itself keeps the per-step noise z from
    repeating the draw of x_T when both are drawn on the CPU from the same seed.

    Args:
        noise_seed: the sampler's noise seed.

    Returns:
        The per-step stream's seed, an unsigned 64-bit integer.
    """
    return (int(noise_seed) * 6364136223846793005 + 1442695040888963407) % (1 << 64)


def shared_noise(
    shape: Sequence[int],
    frame_axis: int,
    generator: Optional[torch.Generator] = None,
    dtype: torch.dtype = torch.float32,
    device: Optional[torch.device] = None,
) -> torch.Tensor:
    """Standard-normal noise of ``shape`` that is identical for every index along ``frame_axis``.

    One frame's worth is drawn with ``torch.randn(..., generator=generator)``
    and copied (a contiguous tensor, not a view) to every frame. Use
    ``frame_axis=0`` for an image U-Net batch ``[F, C, H, W]`` and
    ``frame_axis=2`` for a video latent ``[B, C, T, H, W]``. ``device``
    defaults to the generator's device (CPU without one), as ComfyUI draws
    noise on the CPU.

    Args:
        shape: the noise's shape, positive sizes.
        frame_axis: the axis the frames are on (negative counts from the end).
        generator: the random stream, or None for torch's global one.
        dtype: the noise's dtype.
        device: where to draw it; default the generator's device.

    Returns:
        A new tensor of ``shape``, the same standard-normal frame at every index of ``frame_axis``.

    Raises:
        ParameterError: ``shape`` is empty or has a size below 1, or ``frame_axis`` is not an axis of it.
    """
    shape = tuple(int(s) for s in shape)
    if not shape or any(s < 1 for s in shape):
        raise ParameterError("shape", f"is {shape}", "pass positive sizes")
    axis = _frame_axis(frame_axis, len(shape))
    one = list(shape)
    one[axis] = 1
    if device is None:
        device = generator.device if generator is not None else torch.device("cpu")
    frame = torch.randn(one, generator=generator, dtype=dtype, device=device)
    return frame.expand(shape).contiguous()


def blend_noise(
    z: torch.Tensor,
    flow_bw: torch.Tensor,
    mask: Optional[torch.Tensor],
    lam: float,
    frame_axis: int,
    shot_starts: Sequence[int] = (),
) -> torch.Tensor:
    """ZVRD eq. 11 applied sequentially over frames, renormalised to unit variance.

    ``z``: noise with frames along ``frame_axis``, spatial axes last
    (``[F, C, H, W]`` with axis 0, ``[B, C, T, H, W]`` with axis 2).
    ``flow_bw``: ``[F-1, 2, H, W]`` at the noise's spatial size (see
    ``optical_flow.resize_flow``), entry ``i-1`` the flow from frame ``i`` to
    frame ``i-1`` on frame ``i``'s grid, i.e. ``optical_flow.flow_pairs(...,
    forward=False)``. ``mask``: ``[F-1, 1, H, W]`` or ``[F-1, H, W]``, bool or
    float in [0, 1], entry ``i-1`` = 1 where frame ``i``'s backward flow is
    reliable (``~occlusion_mask(flow_bw, flow_fw)``); ``None`` = 1 everywhere.
    ``lam``: lambda in [0, 1], the weight of the frame's own noise (1 = no
    blending, 0 = noise transported along the flow).

    ``shot_starts``: frames where a new shot starts (``kernels.shot_cuts``):
    such a frame takes no blend (``M = 0``: its own noise, bit for bit, like
    frame 0), so noise never travels across a cut and every shot gets exactly
    the noise it would get as a video of its own.

    Returns a new tensor of ``z``'s shape, dtype and device. Frame 0 is never
    changed. See the module docstring for the exact normaliser.

    Args:
        z: the noise, frames along ``frame_axis``, H and W last.
        flow_bw: ``[F-1, 2, H, W]`` backward flow at the noise's size.
        mask: ``[F-1, 1, H, W]`` or ``[F-1, H, W]`` reliability of the backward flow, or None.
        lam: lambda in [0, 1], the weight of each frame's own noise.
        frame_axis: the axis of ``z`` the frames are on.
        shot_starts: frame indices where a new shot starts (no blend into them); indices outside 1..F-1 are ignored.

    Returns:
        The blended, unit-variance noise (a new tensor; frame 0 unchanged).

    Raises:
        ParameterError: naming ``lam``, ``z``, ``frame_axis``, ``flow_bw`` or ``mask`` when it is out of range
            or of the wrong shape or type.
    """
    if isinstance(lam, bool) or not isinstance(lam, (int, float)) or not math.isfinite(lam) or not 0.0 <= lam <= 1.0:
        raise ParameterError("lam", f"is {lam!r}", "use a number between 0 (noise follows the flow) and 1 (no blending)")
    if not isinstance(z, torch.Tensor) or z.dim() < 3 or not z.is_floating_point():
        desc = f"has shape {tuple(z.shape)} and dtype {z.dtype}" if isinstance(z, torch.Tensor) else f"is a {type(z).__name__}"
        raise ParameterError("z", desc, "pass floating-point noise with frames on one axis and H, W last")
    axis = _frame_axis(frame_axis, z.dim())
    if axis >= z.dim() - 2:
        raise ParameterError("frame_axis", f"is {frame_axis}, a spatial axis", "the last two axes are H, W")
    frames = z.movedim(axis, 0)
    n_frames, h, w = frames.shape[0], frames.shape[-2], frames.shape[-1]
    flow_bw, mask = _check_flow_mask(flow_bw, mask, n_frames, h, w)
    cut_pairs = [int(i) - 1 for i in shot_cuts.check_shot_starts(shot_starts) if 1 <= int(i) < n_frames]
    if cut_pairs:
        mask = mask.clone()
        mask[cut_pairs] = 0.0  # a shot's first frame: no blend from the previous shot
    if lam == 1.0 or n_frames < 2:
        return z.clone()

    work_dtype = torch.float64 if z.dtype == torch.float64 else torch.float32
    raw = frames.reshape(n_frames, -1, h * w)  # [F, L, P]
    n_pix = h * w
    sources = _shared_sources(raw)
    # The bookkeeping is per pixel (not per channel) and runs on the CPU in float64
    # (small, and exact enough; also works where the noise's device has no float64).
    arange = torch.arange(n_pix)

    out = torch.empty_like(raw)
    out[0] = raw[0]
    prev = raw[0].to(work_dtype)
    # The previous frame's blended noise as a linear combination of independent samples, per pixel:
    # keys[k, p] = source_frame * P + source_pixel (-1 = empty slot), coefs[k, p] its weight.
    keys = (sources[0] * n_pix + arange).unsqueeze(0)
    coefs = torch.ones(1, n_pix, dtype=torch.float64)
    for i in range(1, n_frames):
        src_idx, inside = _nearest_source(flow_bw[i - 1], h, w)
        m = mask[i - 1].reshape(-1) * inside
        b = m * (1.0 - lam)
        a = 1.0 - b

        g_keys = keys[:, src_idx]
        g_coefs = coefs[:, src_idx] * b
        g_keys = torch.where(g_coefs == 0, torch.full_like(g_keys, -1), g_keys)
        own_key = sources[i] * n_pix + arange
        match = g_keys == own_key  # keys of one pixel are distinct: at most one match
        g_coefs = g_coefs + a * match
        no_match = ~match.any(0)
        new_keys = torch.where(no_match, own_key, torch.full_like(own_key, -1))
        keys = torch.cat([g_keys, new_keys.unsqueeze(0)])
        coefs = torch.cat([g_coefs, (a * no_match).unsqueeze(0)])
        std = coefs.square().sum(0).sqrt()  # > 0: all weights are >= 0 and a + b = 1
        coefs = coefs / std
        keep = (keys >= 0).any(1)
        keys, coefs = keys[keep], coefs[keep]

        cur = raw[i].to(work_dtype)
        scale_a = (a / std).to(device=z.device, dtype=work_dtype)
        scale_b = (b / std).to(device=z.device, dtype=work_dtype)
        blended = cur * scale_a + prev[:, src_idx.to(z.device)] * scale_b
        blended = torch.where((m > 0).to(z.device), blended, cur)  # M = 0: the raw noise, bit for bit
        out[i] = blended.to(z.dtype)
        prev = blended
    return out.reshape(frames.shape).movedim(0, axis)


# ---------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------


def _frame_axis(frame_axis: int, ndim: int) -> int:
    if isinstance(frame_axis, bool) or not isinstance(frame_axis, int) or not -ndim <= frame_axis < ndim:
        raise ParameterError("frame_axis", f"is {frame_axis!r} for a {ndim}-d tensor", f"use an axis in 0..{ndim - 1}")
    return frame_axis % ndim


def _check_flow_mask(flow_bw, mask, n_frames: int, h: int, w: int):
    """Flow (float32) and mask (float64, [F-1, H, W]) on the CPU, where the bookkeeping runs."""
    want = (n_frames - 1, 2, h, w)
    if not isinstance(flow_bw, torch.Tensor) or tuple(flow_bw.shape) != want:
        shape = tuple(flow_bw.shape) if isinstance(flow_bw, torch.Tensor) else type(flow_bw).__name__
        raise ParameterError("flow_bw", f"has shape {shape}, expected {want}",
                             "pass one backward flow per frame pair at the noise's H, W (resize_flow)")
    flow_bw = flow_bw.detach().to(device="cpu", dtype=torch.float32)
    if mask is None:
        mask = torch.ones(n_frames - 1, h, w, dtype=torch.float64)
    else:
        if not isinstance(mask, torch.Tensor):
            raise ParameterError("mask", f"is a {type(mask).__name__}", "pass a tensor [F-1,1,H,W] or None")
        if mask.dim() == 4 and mask.shape[1] == 1:
            mask = mask[:, 0]
        if tuple(mask.shape) != (n_frames - 1, h, w):
            raise ParameterError("mask", f"has shape {tuple(mask.shape)}, expected {(n_frames - 1, 1, h, w)}",
                                 "pass one mask per frame pair at the noise's H, W")
        mask = mask.detach().to(device="cpu", dtype=torch.float64)
        if not bool(((mask >= 0) & (mask <= 1)).all()):
            raise ParameterError("mask", "has values outside [0, 1]", "pass a bool mask or weights in [0, 1]")
    return flow_bw, mask


def _nearest_source(flow: torch.Tensor, h: int, w: int):
    """Flat source index ``round(p + flow(p))`` per pixel (clamped) and whether it lies inside the frame (float 0/1)."""
    xs = torch.arange(w, device=flow.device, dtype=flow.dtype).view(1, w)
    ys = torch.arange(h, device=flow.device, dtype=flow.dtype).view(h, 1)
    sx = torch.round(xs + flow[0])
    sy = torch.round(ys + flow[1])
    inside = (sx >= 0) & (sx <= w - 1) & (sy >= 0) & (sy <= h - 1)
    sx = sx.clamp(0, w - 1).long()
    sy = sy.clamp(0, h - 1).long()
    return (sy * w + sx).reshape(-1), inside.reshape(-1).to(torch.float64)


def _shared_sources(raw: torch.Tensor) -> torch.Tensor:
    """For each frame, the first frame whose raw noise is bitwise equal (itself if none): shared noise detection."""
    reps = []
    sources = []
    for i in range(raw.shape[0]):
        for r in reps:
            if torch.equal(raw[r], raw[i]):
                sources.append(r)
                break
        else:
            reps.append(i)
            sources.append(i)
    return torch.tensor(sources, dtype=torch.long)
