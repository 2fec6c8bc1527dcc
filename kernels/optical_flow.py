"""Dense optical flow, flow warping and occlusion masks for ZVRD (Cao et al., AAAI 2025).

ZVRD needs flow between consecutive frames for its self-corrected trajectory
attention (eq. 6-7) and for spatial-temporal noise sharing (eq. 11), plus an
occlusion mask telling where the flow is trustworthy. This module is the pure
math: torch, numpy, OpenCV and kornia, never ``comfy``.

Flow convention (used everywhere in the pack)
---------------------------------------------
A flow field is a float32 tensor ``[N, 2, H, W]``; channel 0 is the x
(column, rightwards) displacement and channel 1 the y (row, downwards)
displacement, in pixels of the field's own resolution. The flow *from* frame
``a`` *to* frame ``b`` satisfies

    frame_a(p) ~= frame_b(p + flow(p))        for every pixel p = (x, y) of frame a,

i.e. it is defined on the pixel grid of ``a`` and points to where that pixel's
content is in ``b``. Consequently :func:`warp` with this flow pulls ``b`` back
onto ``a``'s grid: ``warp(frame_b, flow) ~= frame_a``. This is OpenCV's
``calcOpticalFlow*(prev=a, next=b)`` convention. For a video ``0..F-1``:

* forward flow ``flow_fw[t]`` = flow from frame ``t`` to ``t+1``
  (``flow_pairs(frames, forward=True)``);
* backward flow ``flow_bw[t]`` = flow from frame ``t+1`` to ``t``
  (``flow_pairs(frames, forward=False)``), defined on frame ``t+1``'s grid.

Both have ``F-1`` entries, index ``t`` for the pair ``(t, t+1)``.

Estimator: OpenCV DIS (the built-in ``"dis"``)
----------------------------------------------
Dense Inverse Search (Kroeger et al., ECCV 2016) via ``cv2.DISOpticalFlow``:
a classical (non-learned) method, so it runs offline with no downloaded
weights; it ships in every OpenCV wheel and is well maintained; on CPU it takes
tens of milliseconds per 720x480 pair at the ``medium`` preset, which is cheap
next to a diffusion step. Preset ``medium`` is the default (best quality of the
three presets OpenCV offers: ``ultrafast``, ``fast``, ``medium``; there is no
``fine`` preset in OpenCV 4.x or 5.x). DIS works on 8-bit grayscale images:
frames are turned into BT.601 luma ``0.299 R + 0.587 G + 0.114 B``, clamped to
0..1 and rounded to uint8. DIS has no GPU path; a learned estimator (RAFT from
the user's models folder, on the GPU) can be plugged in through the
:class:`FlowEstimator` protocol and :func:`register_flow_estimator` without
changing any caller.

Occlusions (forward-backward consistency)
-----------------------------------------
:func:`occlusion_mask` is the check of Sundaram et al. (ECCV 2010) with the
thresholds of Ruder et al. (GCPR 2016) that Lai et al. (ECCV 2018, "Learning
Blind Video Temporal Consistency") use for their occlusion masks: with
``w_f`` the flow a -> b and ``w_b_hat(p) = w_b(p + w_f(p))`` the flow b -> a
sampled where ``p`` lands,

    occluded(p)  <=>  |w_f + w_b_hat|^2 > alpha1 (|w_f|^2 + |w_b_hat|^2) + alpha2

(alpha1 = 0.01, alpha2 = 0.5). Pixels whose target ``p + w_f(p)`` leaves the
frame are occluded too (their content is not visible in b).

Warping uses kornia (``kornia.geometry.transform.remap``, which wraps
``torch.nn.functional.grid_sample``) instead of a hand-written sampler, so it
runs on any torch device and is differentiable.
"""

from __future__ import annotations

import math
from typing import Callable, Dict, Protocol, Sequence, Tuple, Union, runtime_checkable

import numpy as np
import torch
import torch.nn.functional as F

from .errors import ParameterError

FLOW_DTYPE = torch.float32
LUMA_WEIGHTS = (0.299, 0.587, 0.114)
"""BT.601 luma weights used to turn RGB frames into the grayscale DIS works on."""

DIS_PRESETS = ("ultrafast", "fast", "medium")
DEFAULT_DIS_PRESET = "medium"


# ---------------------------------------------------------------------------
# Estimator seam
# ---------------------------------------------------------------------------


@runtime_checkable
class FlowEstimator(Protocol):
    """Anything that estimates dense flow between batches of frame pairs.

    ``estimator(source, target)`` takes two float tensors ``[N, C, H, W]``
    (``C`` is 1 or 3, values 0..1, same shape and device) and returns the flow
    from ``source`` to ``target`` as float32 ``[N, 2, H, W]`` on the same
    device, in the module convention: ``source(p) ~= target(p + flow(p))``,
    channel 0 = x, channel 1 = y, in pixels.

    A learned estimator (e.g. RAFT loaded from the user's models folder) only
    needs to implement this call and be registered with
    :func:`register_flow_estimator`; it may run on the GPU.
    """

    def __call__(self, source: torch.Tensor, target: torch.Tensor) -> torch.Tensor:  # pragma: no cover - protocol
        ...


class DISFlow:
    """OpenCV Dense Inverse Search flow (the built-in ``"dis"`` estimator), CPU only.

    ``preset`` is one of :data:`DIS_PRESETS`; ``medium`` (default) is the most
    accurate. Frames are converted to BT.601 luma uint8 before estimation; the
    result is moved back to the input's device.
    """

    def __init__(self, preset: str = DEFAULT_DIS_PRESET):
        if preset not in DIS_PRESETS:
            raise ParameterError("preset", f"is {preset!r}", f"use one of: {', '.join(DIS_PRESETS)}")
        self.preset = preset

    def _create(self):
        import cv2  # deferred: the pack imports without OpenCV; only flow estimation needs it

        code = {
            "ultrafast": cv2.DISOPTICAL_FLOW_PRESET_ULTRAFAST,
            "fast": cv2.DISOPTICAL_FLOW_PRESET_FAST,
            "medium": cv2.DISOPTICAL_FLOW_PRESET_MEDIUM,
        }[self.preset]
        return cv2.DISOpticalFlow_create(code)

    def __call__(self, source: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        _check_pair(source, target)
        gray_s = _to_gray_u8(source)
        gray_t = _to_gray_u8(target)
        dis = self._create()
        out = np.empty((gray_s.shape[0], 2) + gray_s.shape[1:], dtype=np.float32)
        for n in range(gray_s.shape[0]):
            flow = dis.calc(gray_s[n], gray_t[n], None)  # [H, W, 2], x then y
            out[n] = flow.transpose(2, 0, 1)
        return torch.from_numpy(out).to(source.device)

    def __repr__(self) -> str:
        return f"DISFlow(preset={self.preset!r})"


_REGISTRY: Dict[str, Callable[..., FlowEstimator]] = {"dis": DISFlow}


def register_flow_estimator(name: str, factory: Callable[..., FlowEstimator], replace: bool = False) -> None:
    """Make ``factory(**options)`` available as flow method ``name`` (e.g. ``"raft"``).

    Args:
        name: the method name callers pass as ``method`` (a non-empty string).
        factory: callable returning a :class:`FlowEstimator`; called with the ``options`` given to
            :func:`get_flow_estimator` / :func:`flow_pairs`.
        replace: allow replacing an estimator already registered under ``name``.

    Returns:
        None.

    Raises:
        ParameterError: naming ``name`` when it is not a non-empty string, or is already registered and
            ``replace`` is False.
    """
    if not name or not isinstance(name, str):
        raise ParameterError("name", f"{name!r} is not a non-empty string", "pass a short lowercase name")
    if name in _REGISTRY and not replace:
        raise ParameterError("name", f"{name!r} is already registered", "pass replace=True to override it")
    _REGISTRY[name] = factory


def flow_estimators() -> Tuple[str, ...]:
    """Names of the registered flow methods (``"dis"`` is always there).

    Returns:
        The registered names, sorted, as a tuple of str.
    """
    return tuple(sorted(_REGISTRY))


def get_flow_estimator(method: Union[str, FlowEstimator] = "dis", **options) -> FlowEstimator:
    """Estimator for ``method``: a registered name (``options`` go to its factory) or an estimator itself.

    Args:
        method: a registered name (see :func:`flow_estimators`), or a callable :class:`FlowEstimator`, which is
            returned unchanged.
        **options: keyword arguments for the named method's factory (e.g. ``preset="fast"`` for ``"dis"``);
            not allowed with an estimator object.

    Returns:
        The :class:`FlowEstimator` (a new one from the factory for a name).

    Raises:
        ParameterError: naming ``method`` when it is an object given with options, neither a name nor callable,
            or an unknown name. The factory's own errors propagate (:class:`DISFlow`: ``preset``).
    """
    if not isinstance(method, str):
        if options:
            raise ParameterError("method", f"is an estimator object, given with options {sorted(options)}",
                                 "configure the estimator itself")
        if not callable(method):
            raise ParameterError("method", f"{method!r} is neither a name nor callable", "pass 'dis' or a FlowEstimator")
        return method
    try:
        factory = _REGISTRY[method]
    except KeyError:
        raise ParameterError("method", f"is {method!r}", f"use one of: {', '.join(flow_estimators())}") from None
    return factory(**options)


# ---------------------------------------------------------------------------
# Flow between consecutive frames
# ---------------------------------------------------------------------------


def as_nchw(frames: torch.Tensor) -> torch.Tensor:
    """Frames as float ``[N, C, H, W]`` (C = 1 or 3) from a ComfyUI IMAGE ``[F, H, W, 3]`` or ``[N, C, H, W]``.

    A 4-d tensor whose last axis is 1 or 3 is read as channels-last (ComfyUI
    IMAGE), otherwise one whose second axis is 1 or 3 as channels-first.

    Args:
        frames: 4-d tensor, channels-last ``[F, H, W, C]`` or channels-first ``[N, C, H, W]`` with C = 1 or 3;
            uint8 values are divided by 255, other integer dtypes only converted to float32.

    Returns:
        ``[N, C, H, W]`` on ``frames``' device: a (permuted) view for floating input, which keeps its dtype;
        float32 otherwise.

    Raises:
        ParameterError: ``frames`` is not a 4-d tensor with 1 or 3 channels.
    """
    if not isinstance(frames, torch.Tensor) or frames.dim() != 4:
        shape = tuple(frames.shape) if isinstance(frames, torch.Tensor) else type(frames).__name__
        raise ParameterError("frames", f"has shape {shape}", "pass an IMAGE [F,H,W,3] or frames [N,C,H,W]")
    if frames.shape[-1] in (1, 3):
        frames = frames.permute(0, 3, 1, 2)
    elif frames.shape[1] not in (1, 3):
        raise ParameterError("frames", f"has shape {tuple(frames.shape)} with neither 1 nor 3 channels",
                             "pass an IMAGE [F,H,W,3] or frames [N,C,H,W] with C = 1 or 3")
    if not frames.is_floating_point():
        frames = frames.float() / 255.0 if frames.dtype == torch.uint8 else frames.float()
    return frames


def flow_pairs(
    frames: torch.Tensor,
    forward: bool = True,
    method: Union[str, FlowEstimator] = "dis",
    **options,
) -> torch.Tensor:
    """Flow for every consecutive pair of ``frames``: ``[F-1, 2, H, W]`` float32.

    ``forward=True``: entry ``t`` is the flow from frame ``t`` to ``t+1``
    (``frame_t(p) ~= frame_{t+1}(p + flow(p))``). ``forward=False``: entry
    ``t`` is the flow from frame ``t+1`` to ``t``, on frame ``t+1``'s grid
    (``frame_{t+1}(p) ~= frame_t(p + flow(p))``).

    ``frames``: ComfyUI IMAGE ``[F, H, W, 3]`` or ``[N, C, H, W]``, values 0..1,
    at least 2 frames. ``method``: a registered estimator name (``"dis"``) or a
    :class:`FlowEstimator`; ``options`` go to the estimator's factory (e.g.
    ``preset="fast"`` for DIS).

    Args:
        frames: the video, IMAGE ``[F, H, W, 3]`` or ``[F, C, H, W]`` (C = 1 or 3), values 0..1, F >= 2
            (read by :func:`as_nchw`).
        forward: True for the flow ``t -> t+1``, False for ``t+1 -> t``.
        method: a registered estimator name or a :class:`FlowEstimator` (:func:`get_flow_estimator`).
        **options: keyword arguments for the named estimator's factory.

    Returns:
        ``[F-1, 2, H, W]`` float32 flow in pixels (channel 0 = x, 1 = y), on the device the estimator returns
        (DIS: ``frames``' device).

    Raises:
        ParameterError: naming ``frames`` (not 4-d with 1 or 3 channels, or fewer than 2 frames) or ``method``
            (see :func:`get_flow_estimator`).
    """
    x = as_nchw(frames)
    if x.shape[0] < 2:
        raise ParameterError("frames", f"has {x.shape[0]} frame(s)", "flow needs at least 2 frames")
    estimator = get_flow_estimator(method, **options)
    first, second = x[:-1], x[1:]
    flow = estimator(first, second) if forward else estimator(second, first)
    return flow.to(FLOW_DTYPE)


# ---------------------------------------------------------------------------
# Warping, occlusion, resizing
# ---------------------------------------------------------------------------


def warp(
    image: torch.Tensor,
    flow: torch.Tensor,
    mode: str = "bilinear",
    padding_mode: str = "zeros",
) -> torch.Tensor:
    """Backward-warp ``image`` by ``flow``: ``out(p) = image(p + flow(p))``.

    With ``flow`` the flow from frame a to frame b and ``image`` frame b, the
    result is b pulled onto a's grid (``~= frame a`` where a's pixel is
    visible in b). ``image`` ``[N, C, H, W]`` (any float dtype), ``flow``
    ``[N, 2, H, W]`` or ``[2, H, W]`` (broadcast over N) at the image's size.

    ``mode``: ``"bilinear"`` or ``"nearest"`` (nearest copies input values, so
    it preserves the value set and the variance of white noise; bilinear
    averages neighbours and shrinks it). ``padding_mode``: ``"zeros"``,
    ``"border"`` or ``"reflection"`` for samples outside the image.

    Implemented with ``kornia.geometry.transform.remap`` (a grid_sample
    wrapper) with pixel-coordinate maps and ``align_corners=True`` (kornia
    normalises pixel maps with the align-corners convention, so True is the
    setting under which ``flow = 0`` is the exact identity).

    Args:
        image: ``[N, C, H, W]`` float tensor to sample; computed in float32 (float64 kept).
        flow: ``[N, 2, H, W]``, ``[1, 2, H, W]`` or ``[2, H, W]`` displacement in pixels (x, y) at the image's
            size; one field is broadcast over N. Moved to the image's device.
        mode: ``"bilinear"`` or ``"nearest"``.
        padding_mode: ``"zeros"``, ``"border"`` or ``"reflection"``.

    Returns:
        ``[N, C, H, W]`` warped image in ``image``'s dtype, on its device.

    Raises:
        ParameterError: naming ``mode`` (not bilinear/nearest), ``image`` (not 4-d) or ``flow`` (not a tensor,
            not ``[N, 2, H, W]`` / ``[2, H, W]``, or not matching the image's batch and size).
    """
    from kornia.geometry.transform import remap

    if mode not in ("bilinear", "nearest"):
        raise ParameterError("mode", f"is {mode!r}", "use 'bilinear' or 'nearest'")
    if image.dim() != 4:
        raise ParameterError("image", f"has shape {tuple(image.shape)}", "pass [N,C,H,W]")
    flow = _check_flow(flow, "flow")
    if flow.shape[0] == 1 and image.shape[0] > 1:
        flow = flow.expand(image.shape[0], -1, -1, -1)
    if flow.shape[0] != image.shape[0] or flow.shape[-2:] != image.shape[-2:]:
        raise ParameterError("flow", f"has shape {tuple(flow.shape)} for an image of shape {tuple(image.shape)}",
                             "pass one [2,H,W] field per image at the image's size (see resize_flow)")
    work_dtype = image.dtype if image.dtype in (torch.float32, torch.float64) else torch.float32
    flow = flow.to(device=image.device, dtype=work_dtype)
    h, w = image.shape[-2:]
    ys = torch.arange(h, device=image.device, dtype=work_dtype).view(1, h, 1)
    xs = torch.arange(w, device=image.device, dtype=work_dtype).view(1, 1, w)
    map_x = xs + flow[:, 0]
    map_y = ys + flow[:, 1]
    out = remap(
        image.to(work_dtype), map_x, map_y, mode=mode, padding_mode=padding_mode, align_corners=True
    )
    return out.to(image.dtype)


def occlusion_mask(
    flow_fw: torch.Tensor,
    flow_bw: torch.Tensor,
    alpha1: float = 0.01,
    alpha2: float = 0.5,
    out_of_frame: bool = True,
) -> torch.Tensor:
    """Forward-backward consistency occlusion mask: bool ``[N, 1, H, W]``, True = occluded.

    ``flow_fw`` is the flow a -> b on a's grid, ``flow_bw`` the flow b -> a
    on b's grid (both ``[N, 2, H, W]``). A pixel ``p`` of a is occluded when

        |w_f + w_b_hat|^2 > alpha1 (|w_f|^2 + |w_b_hat|^2) + alpha2,   w_b_hat = w_b(p + w_f(p))

    (Sundaram et al. 2010; thresholds of Ruder et al. 2016 as used by Lai et
    al., ECCV 2018), with ``w_b_hat`` sampled bilinearly. With
    ``out_of_frame`` (default) pixels whose target ``p + w_f(p)`` lies outside
    b are occluded as well.

    The mask lives on the *first* flow's grid: for the pixels of frame ``t``
    use ``occlusion_mask(flow_fw, flow_bw)``; for the pixels of frame ``t+1``
    (what the noise blend of frame ``t+1`` needs, since it warps with the
    backward flow) use ``occlusion_mask(flow_bw, flow_fw)``.

    Args:
        flow_fw: ``[N, 2, H, W]`` (or ``[2, H, W]``) flow a -> b in pixels; computed in float32.
        flow_bw: flow b -> a of the same shape; moved to ``flow_fw``'s device.
        alpha1: relative tolerance (finite, >= 0).
        alpha2: absolute tolerance in squared pixels (finite, >= 0).
        out_of_frame: also mark pixels whose target leaves the frame.

    Returns:
        ``[N, 1, H, W]`` bool on ``flow_fw``'s device, True where the pixel of a is occluded.

    Raises:
        ParameterError: naming ``flow_fw`` or ``flow_bw`` (not a tensor, not ``[N, 2, H, W]``, or the two shapes
            differ) or ``alpha1`` / ``alpha2`` (not a finite number >= 0).
    """
    flow_fw = _check_flow(flow_fw, "flow_fw").to(FLOW_DTYPE)
    flow_bw = _check_flow(flow_bw, "flow_bw").to(device=flow_fw.device, dtype=FLOW_DTYPE)
    if flow_fw.shape != flow_bw.shape:
        raise ParameterError("flow_bw", f"has shape {tuple(flow_bw.shape)}, flow_fw {tuple(flow_fw.shape)}",
                             "pass forward and backward flow of the same frame pairs at the same size")
    for name, value in (("alpha1", alpha1), ("alpha2", alpha2)):
        if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
            raise ParameterError(name, f"is {value!r}", "use a finite number >= 0")
    w_b_hat = warp(flow_bw, flow_fw, mode="bilinear", padding_mode="border")
    total = flow_fw + w_b_hat
    lhs = (total * total).sum(1, keepdim=True)
    rhs = alpha1 * ((flow_fw * flow_fw).sum(1, keepdim=True) + (w_b_hat * w_b_hat).sum(1, keepdim=True)) + alpha2
    occluded = lhs > rhs
    if out_of_frame:
        occluded |= ~_target_inside(flow_fw)
    return occluded


def resize_flow(flow: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """Flow ``[N, 2, H, W]`` resampled to ``size = (H', W')`` with vectors rescaled.

    The field is resampled bilinearly (pixel-centre alignment,
    ``align_corners=False``; antialiased when shrinking, so a latent pixel
    gets the mean motion of the image pixels it covers) and the vectors are
    scaled to the new pixel units: x by ``W'/W``, y by ``H'/H``. Use it to take
    image-resolution flow to a VAE latent (``/8``) or an attention map.

    Args:
        flow: ``[N, 2, H, W]`` (or ``[2, H, W]``, read as N = 1) flow in pixels; integer flow becomes float32.
        size: ``(H', W')``, both positive.

    Returns:
        ``[N, 2, H', W']`` flow in pixels of the new grid, in the (float) flow's dtype; a copy when the size is
        unchanged.

    Raises:
        ParameterError: naming ``flow`` (not a tensor of shape ``[N, 2, H, W]``) or ``size`` (not two positive
            integers).
    """
    flow = _check_flow(flow, "flow")
    new_h, new_w = _check_size(size)
    h, w = flow.shape[-2:]
    if (new_h, new_w) == (h, w):
        return flow.clone()
    shrinking = new_h < h or new_w < w
    work = flow.float() if flow.dtype not in (torch.float32, torch.float64) else flow
    out = F.interpolate(work, size=(new_h, new_w), mode="bilinear", align_corners=False, antialias=shrinking)
    scale = torch.tensor([new_w / w, new_h / h], dtype=out.dtype, device=out.device).view(1, 2, 1, 1)
    return (out * scale).to(flow.dtype)


def resize_mask(mask: torch.Tensor, size: Sequence[int], threshold: float = 0.5) -> torch.Tensor:
    """Bool mask ``[N, 1, H, W]`` taken to ``size = (H', W')``: True where at least ``threshold`` of the area is True.

    Shrinking averages the covered area (antialiased bilinear); a small
    ``threshold`` (e.g. 0.01) marks a latent pixel occluded as soon as any
    image pixel under it is. Enlarging uses nearest neighbour.

    Args:
        mask: ``[N, 1, H, W]`` mask (bool, or numbers read as its values).
        size: ``(H', W')``, both positive.
        threshold: fraction of the covered area (0..1) that must be True, used when neither side grows; when
            either side grows, nearest-neighbour values ``>= 0.5`` are True.

    Returns:
        ``[N, 1, H', W']`` bool on ``mask``'s device; ``mask.bool()`` copied when the size is unchanged.

    Raises:
        ParameterError: naming ``mask`` (not a tensor of shape ``[N, 1, H, W]``) or ``size`` (not two positive
            integers).
    """
    if not isinstance(mask, torch.Tensor) or mask.dim() != 4 or mask.shape[1] != 1:
        shape = tuple(mask.shape) if isinstance(mask, torch.Tensor) else type(mask).__name__
        raise ParameterError("mask", f"has shape {shape}", "pass [N,1,H,W]")
    new_h, new_w = _check_size(size)
    if (new_h, new_w) == tuple(mask.shape[-2:]):
        return mask.bool().clone()
    m = mask.float()
    if new_h <= m.shape[-2] and new_w <= m.shape[-1]:
        frac = F.interpolate(m, size=(new_h, new_w), mode="bilinear", align_corners=False, antialias=True)
        return frac >= threshold - 1e-6
    return F.interpolate(m, size=(new_h, new_w), mode="nearest") >= 0.5


# ---------------------------------------------------------------------------
# A video's flow at a latent's size
# ---------------------------------------------------------------------------


def image_frames_for(image_frames: int, latent_frames: int) -> list[int] | None:
    """Which image frame represents each latent frame, or None when the counts do not fit.

    The same count maps one to one. ``(T - 1) * r + 1`` image frames for ``T`` latent frames is a causal video
    VAE with temporal compression ``r`` (Wan, HunyuanVideo, CogVideoX 1.5: r = 4): latent frame ``t`` is
    represented by image frame ``r * t`` (the last frame it covers; latent 0 is frame 0).

    Args:
        image_frames: frame count of the video.
        latent_frames: frame count ``T`` of the latent.

    Returns:
        ``T`` image frame indices (index ``t`` for latent frame ``t``), or None when neither mapping fits.
    """
    if image_frames == latent_frames:
        return list(range(latent_frames))
    if latent_frames > 1 and image_frames > latent_frames and (image_frames - 1) % (latent_frames - 1) == 0:
        r = (image_frames - 1) // (latent_frames - 1)
        return [r * t for t in range(latent_frames)]
    return None


def latent_flow(frames: torch.Tensor, latent_frames: int, size: Sequence[int],
                method: Union[str, FlowEstimator] = "dis") -> tuple[torch.Tensor, torch.Tensor]:
    """Backward flow ``[T-1, 2, h, w]`` and reliability mask ``[T-1, 1, h, w]`` of a video at a latent's size.

    ``frames``: the video (IMAGE ``[F, H, W, 3]`` or ``[F, C, H, W]``) whose frames :func:`image_frames_for`
    matches to the ``latent_frames`` latent frames; the flow is estimated directly between the matched frames
    (one estimator call per latent pair, not a composition of ``r`` flows). Entry ``t-1`` is the flow from
    latent frame ``t`` to ``t-1`` on frame ``t``'s grid, resized to ``size = (h, w)`` with :func:`resize_flow`;
    the mask is False where the forward-backward check (:func:`occlusion_mask`) finds frame ``t``'s pixel
    occluded, a latent pixel counting as occluded when any image pixel under it is (:func:`resize_mask`,
    threshold 0.01).

    Args:
        frames: the video, IMAGE ``[F, H, W, 3]`` or ``[F, C, H, W]`` (C = 1 or 3), values 0..1.
        latent_frames: the latent's frame count ``T`` (at least 2 for a flow).
        size: the latent grid ``(h, w)``.
        method: a registered estimator name or a :class:`FlowEstimator` (:func:`get_flow_estimator`).

    Returns:
        ``(flow, valid)``: ``[T-1, 2, h, w]`` float32 backward flow in latent pixels, and ``[T-1, 1, h, w]`` bool,
        True where the flow is reliable (not occluded).

    Raises:
        ParameterError: the frame counts do not fit (see :func:`image_frames_for`). Also naming ``frames`` (not
            4-d with 1 or 3 channels, or fewer than 2 matched frames), ``method`` or ``size``.
    """
    x = as_nchw(frames)
    picked = image_frames_for(x.shape[0], latent_frames)
    if picked is None:
        raise ParameterError("frames", f"has {x.shape[0]} frames for a latent with {latent_frames} frames",
                             f"pass {latent_frames} frames (one per latent frame), or (T-1)*r+1 frames for a video "
                             f"VAE with temporal compression r (e.g. {4 * (latent_frames - 1) + 1} for r = 4)")
    x = x[picked]
    fw = flow_pairs(x, forward=True, method=method)
    bw = flow_pairs(x, forward=False, method=method)
    occluded = occlusion_mask(bw, fw)  # on the grid of frames 1..T-1, what frame t's pairing needs
    flow = resize_flow(bw, size)
    valid = ~resize_mask(occluded, size, threshold=0.01)
    return flow, valid


# ---------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------


def _to_gray_u8(x: torch.Tensor) -> np.ndarray:
    """``[N, C, H, W]`` float 0..1 -> numpy uint8 ``[N, H, W]`` (BT.601 luma for RGB)."""
    x = x.detach().float()
    if x.shape[1] == 3:
        weights = torch.tensor(LUMA_WEIGHTS, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
        x = (x * weights).sum(1)
    else:
        x = x[:, 0]
    gray = (x.clamp(0.0, 1.0) * 255.0).round().to(torch.uint8)
    if gray.device.type != "cpu":
        gray = gray.cpu()
    return np.ascontiguousarray(gray.numpy())


def _check_pair(source: torch.Tensor, target: torch.Tensor) -> None:
    for name, t in (("source", source), ("target", target)):
        if not isinstance(t, torch.Tensor) or t.dim() != 4 or t.shape[1] not in (1, 3):
            shape = tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__
            raise ParameterError(name, f"has shape {shape}", "pass [N,C,H,W] with C = 1 or 3")
    if source.shape != target.shape:
        raise ParameterError("target", f"has shape {tuple(target.shape)}, source {tuple(source.shape)}",
                             "pass frames of one size")


def _check_flow(flow: torch.Tensor, name: str) -> torch.Tensor:
    if not isinstance(flow, torch.Tensor):
        raise ParameterError(name, f"is a {type(flow).__name__}", "pass a torch tensor [N,2,H,W]")
    if flow.dim() == 3:
        flow = flow.unsqueeze(0)
    if flow.dim() != 4 or flow.shape[1] != 2:
        raise ParameterError(name, f"has shape {tuple(flow.shape)}", "pass flow as [N,2,H,W] (x, y displacement)")
    if not flow.is_floating_point():
        flow = flow.float()
    return flow


def _check_size(size: Sequence[int]) -> Tuple[int, int]:
    try:
        new_h, new_w = (int(s) for s in size)
    except (TypeError, ValueError):
        raise ParameterError("size", f"is {size!r}", "pass (height, width)") from None
    if new_h < 1 or new_w < 1:
        raise ParameterError("size", f"is {(new_h, new_w)}", "use a positive height and width")
    return new_h, new_w


def _target_inside(flow: torch.Tensor) -> torch.Tensor:
    """Bool ``[N, 1, H, W]``: whether ``p + flow(p)`` lies inside the frame (pixel centres 0..W-1, 0..H-1)."""
    h, w = flow.shape[-2:]
    xs = torch.arange(w, device=flow.device, dtype=flow.dtype).view(1, 1, w)
    ys = torch.arange(h, device=flow.device, dtype=flow.dtype).view(1, h, 1)
    tx = xs + flow[:, 0]
    ty = ys + flow[:, 1]
    inside = (tx >= 0) & (tx <= w - 1) & (ty >= 0) & (ty <= h - 1)
    return inside.unsqueeze(1)
