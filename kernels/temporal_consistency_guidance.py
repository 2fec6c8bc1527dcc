"""ZVRD temporal consistency guidance (Cao, Yue, Liu, Yang, AAAI 2025, eq. 8-10): the pixel term.

ZVRD steers sampling with the gradient of a temporal-consistency loss on the
current clean-image prediction ``x0_hat`` of all frames (the frames are the
batch of an image U-Net). The paper's text is not available here; as far as it
can be reconstructed the loss and the step are

    L_pix  = sum_i || M_i * ( x0_hat_i - W(x0_hat_{i-1}, f_{i->i-1}) ) ||             (eq. 8)
    L_clip = sum_i  d( CLIP(D(x0_hat_i)), CLIP(D(x0_hat_{i-1})) )                      (eq. 9)
    x_{t-1} <- x_{t-1} - eta_t * grad_{x_t} ( L_pix + L_clip )                         (eq. 10)

over consecutive frames ``i-1, i`` of one video: ``W(., f)`` warps the previous
frame onto frame ``i``'s grid with the optical flow ``f_{i->i-1}`` from frame
``i`` to frame ``i-1``, ``M_i`` is 1 where that flow is reliable (not occluded,
forward-backward consistency) and 0 elsewhere, ``D`` a decoder and ``d`` a
feature distance.

What is implemented: the pixel term (eq. 8) and the guided update (eq. 10) in
two gradient modes. The CLIP feature term (eq. 9) needs CLIP image-encoder
weights (and a VAE decoder in the loop), which are not available offline; it is
left as a seam: every function here takes ``feature_loss``, a callable
``feature_loss(x0, prev, cur) -> scalar tensor`` (``x0`` the ``[F, C, h, w]``
prediction, ``prev``/``cur`` LongTensors of the compared frame pairs, always
frames of one video) whose value is added to the pixel loss, so a later CLIP
term plugs in without changing any caller; it must be differentiable in ``x0``.

Choices (the paper text is not available, so each is ours) and why
-------------------------------------------------------------------
* **Norm: half squared L2** (the paper's norm is not recoverable here):
  ``L_pix = 1/2 sum M (x0_i - W(x0_{i-1}))^2``, summed over channels, pixels
  and pairs (``norm="l1"`` gives the L1 sum instead; the node uses L2).
  Its gradient is the masked inconsistency itself, so a step is proportional
  to how inconsistent the frames are: it fades out as they agree, where the
  L1 gradient (a sign) keeps pushing by the full step and chatters around
  zero. With a sum (not a mean) the step of one element does not depend on
  the frame count or size, so ``weight`` means the same at any resolution:
  one x0 step with ``weight`` 0.5 makes an isolated pair of frames agree
  exactly, and any ``weight`` below 0.5 lowers the loss of a chain of frames
  (the gradient is a graph Laplacian of the frames, eigenvalues below 4);
  above 0.25 the fastest frame-to-frame flicker flips sign while it shrinks.
* **Where the loss is measured: on the x0 prediction in latent space**, with
  the flow of the input video (estimated at image resolution by
  ``kernels.optical_flow``: DIS, forward-backward occlusion) downsampled to the
  latent grid with ``resize_flow`` / ``resize_mask`` (a latent pixel counts as
  occluded as soon as any image pixel under it is). Why not on decoded
  pixels: the MODEL carries no VAE; decoding every step, and backpropagating
  through the decoder, would cost more than the U-Net step and far more
  memory; and an SD latent is spatially aligned with its image (one latent
  pixel codes one 8x8 patch), so warping the latent with the downsampled flow
  approximates encoding the warped image -- the same assumption the pack's
  noise sharing and trajectory attention make. What it loses: motion finer
  than one latent pixel is resampled bilinearly, and pixel-level flicker that
  the latent does not represent is not seen.
* **Two gradient modes** (``eq. 10``'s gradient):
  ``"x0"`` -- the gradient of the loss with respect to ``x0_hat`` itself
  (:func:`x0_gradient`); no model backward, negligible cost (one warp and its
  transpose). ``"through model"`` -- DPS-style, the gradient with respect to
  the noisy input ``x_t`` through the model, ``J^T grad_{x0} L`` with ``J`` the
  denoiser's Jacobian (:func:`through_model_gradient`): one extra model
  forward with autograd recording plus one backward per guided step (about 4x
  the step's compute: the backward costs about two forwards), and the activation memory of a training step for all
  frames (and the cond/uncond batch) at once, several times the memory of
  sampling. It is the faithful form of gradient guidance; ``"x0"`` is its
  cheap approximation with ``J = I`` (exact as the noise goes to 0).
* **How the update is applied**: both modes return a gradient ``g`` with the
  latent's shape, and the guided prediction is ``x0_hat - weight * g``
  (:func:`guided`). A sampler turns that into ``x_{t-1}``: for a DDIM/Euler
  step ``x_{t-1} = (s_{t-1}/s_t) x_t + (1 - s_{t-1}/s_t) x0_hat``, so eq. 10's
  step size is ``eta_t = weight * (1 - s_{t-1}/s_t)`` -- the schedule we use: a
  constant ``weight`` on the prediction, which the sampler scales down where
  a step changes little and applies in full at the last step (``s = 0``).
  Applying the update to the prediction (rather than to ``x_t``) is what lets
  the guidance work through ComfyUI's post-CFG hook with any sampler.
* **Which steps**: every model evaluation whose noise level lies in the node's
  ``start_percent .. end_percent`` window (default: all). Samplers that
  evaluate the model several times per step (Heun, DPM++ 2S) are guided at
  each evaluation.
* **Videos in one batch**: ``frames_per_video`` splits the batch into videos
  of consecutive frames (0 = one video); pairs across a video boundary are
  never compared. **Shots**: ``shot_starts`` (``kernels.shot_cuts``) leave out
  the pair across each cut too, so every shot is guided as a video of its own.

Gradients under ComfyUI: nodes and sampling run under
``torch.inference_mode()``, where autograd is off and tensors are "inference
tensors" that autograd may not save. Every gradient here is taken inside
``torch.inference_mode(False)`` and ``torch.enable_grad()``, on clones of the
inputs (a clone made outside inference mode is a normal tensor), so the
functions work whether or not they are called inside inference mode. (The
model's own weights are the caller's business: see the node.)

Flow convention: ``kernels.optical_flow`` (``flow_bw[i-1]`` is the flow from
frame ``i`` to frame ``i-1`` on frame ``i``'s grid, ``flow_pairs(...,
forward=False)``; ``valid[i-1]`` is ``~occlusion_mask(flow_bw, flow_fw)`` for
frame ``i``). Pure torch: no ComfyUI import.
"""

from __future__ import annotations

from typing import Callable, Optional, Sequence

import torch

from . import optical_flow as of
from . import shot_cuts
from .cross_frame_attention import video_layout
from .errors import ParameterError

NORMS = ("l2", "l1")
FeatureLoss = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def consecutive_pairs(frames: int, frames_per_video: int = 0, device=None,
                      shot_starts: Sequence[int] = ()) -> tuple[torch.Tensor, torch.Tensor]:
    """``(prev, cur)`` frame indices of every consecutive pair inside one video (never across videos or cuts).

    Args:
        frames: the batch's frame count ``F``.
        frames_per_video: frames of each video in the batch (0: the whole batch is one video).
        device: device of the result (None: the CPU).
        shot_starts: frames where a new shot starts (``kernels.shot_cuts``): the pair ending there is left out, so
            each shot is guided exactly as a video of its own. Indices outside 1..F-1 are ignored.

    Returns:
        ``(prev, cur)``: int64 ``[P]`` each, ``cur = prev + 1``, one entry per pair within a video.

    Raises:
        ParameterError: naming ``frames_per_video`` when it is negative or does not divide ``frames``, or
            ``shot_starts`` when it holds something other than whole frame indices.
    """
    video, _ = video_layout(frames, frames_per_video)
    keep = video[1:] == video[:-1]
    for start in shot_cuts.check_shot_starts(shot_starts):
        if 1 <= start < frames:
            keep[start - 1] = False
    cur = torch.arange(1, frames)
    cur = cur[keep]
    return (cur - 1).to(device), cur.to(device)


def temporal_loss(x0: torch.Tensor, flow_bw: torch.Tensor, valid: Optional[torch.Tensor] = None,
                  frames_per_video: int = 0, norm: str = "l2",
                  feature_loss: Optional[FeatureLoss] = None, shot_starts: Sequence[int] = ()) -> torch.Tensor:
    """Eq. 8 (plus the optional feature term): the scalar loss, differentiable in ``x0``.

    ``x0``: ``[F, C, h, w]``. ``flow_bw``: ``[F-1, 2, h, w]``, entry ``i-1`` the flow from frame ``i`` to
    ``i-1``. ``valid``: ``[F-1, 1, h, w]`` bool or weights in [0, 1] (None = 1). Entries of pairs that cross
    a video boundary are ignored. Computed in float32 (float64 for float64 input).

    Args:
        x0: ``[F, C, h, w]`` float prediction of the clean frames.
        flow_bw: ``[F-1, 2, h, w]`` backward flow, entry ``i-1`` from frame ``i`` to ``i-1`` in latent pixels.
        valid: ``[F-1, 1, h, w]`` (or ``[F-1, h, w]``) bool mask or weights in [0, 1], or None (all 1).
        frames_per_video: frames of each video in the batch (0: one video).
        norm: ``"l2"`` (half squared L2) or ``"l1"``.
        feature_loss: optional ``feature_loss(x0, prev, cur) -> scalar`` added to the pixel loss.
        shot_starts: frames where a new shot starts; pairs across a cut are left out (:func:`consecutive_pairs`).

    Returns:
        0-d tensor: the loss (float32, float64 for float64 ``x0``), 0 without pairs plus any feature term.

    Raises:
        ParameterError: as :func:`temporal_loss`.
    """
    if norm not in NORMS:
        raise ParameterError("norm", f"is {norm!r}", f"use one of: {', '.join(NORMS)}")
    frames = _check_x0(x0)
    flow_bw, valid = _check_flow(flow_bw, valid, x0)
    work = _work_dtype(x0)
    prev, cur = consecutive_pairs(frames, frames_per_video, x0.device, shot_starts)
    x = x0.to(work)
    loss = x.new_zeros(())
    if prev.numel():
        # flow and mask entry i-1 belong to the pair (i-1, i), so ``prev`` indexes them too
        warped = of.warp(x.index_select(0, prev), flow_bw.index_select(0, prev).to(work))
        diff = x.index_select(0, cur) - warped
        if valid is not None:
            diff = diff * valid.index_select(0, prev).to(work)
        loss = 0.5 * diff.square().sum() if norm == "l2" else diff.abs().sum()
    if feature_loss is not None:
        loss = loss + feature_loss(x0, prev, cur)
    return loss


def x0_gradient(x0: torch.Tensor, flow_bw: torch.Tensor, valid: Optional[torch.Tensor] = None,
                frames_per_video: int = 0, norm: str = "l2",
                feature_loss: Optional[FeatureLoss] = None,
                shot_starts: Sequence[int] = ()) -> tuple[torch.Tensor, torch.Tensor]:
    """Mode ``"x0"``: ``(grad_{x0} L, L)``, the gradient with ``x0``'s shape in float32 (float64 for float64 input).

    Safe under inference mode.

    Args:
        x0, flow_bw, valid, frames_per_video, norm, feature_loss, shot_starts: as in :func:`temporal_loss`.

    Returns:
        ``(grad, loss)``: detached ``[F, C, h, w]`` gradient (zeros when nothing is compared) and the detached
        0-d loss of :func:`temporal_loss`.

    Raises:
        ParameterError: as :func:`temporal_loss`.
    """
    _check_x0(x0)
    with torch.inference_mode(False), torch.enable_grad():
        x = _normal(x0).to(_work_dtype(x0)).requires_grad_(True)
        loss = temporal_loss(x, _normal(flow_bw), _normal(valid), frames_per_video, norm, feature_loss, shot_starts)
        grad = _grad(loss, x)
    return grad, loss.detach()


def through_model_gradient(denoise: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, flow_bw: torch.Tensor,
                           valid: Optional[torch.Tensor] = None, frames_per_video: int = 0, norm: str = "l2",
                           feature_loss: Optional[FeatureLoss] = None,
                           shot_starts: Sequence[int] = ()) -> tuple[torch.Tensor, torch.Tensor]:
    """Mode ``"through model"``: ``(grad_{x_t} L(denoise(x_t)), L)`` -- one forward of ``denoise`` with autograd
    recording and one backward. ``denoise`` maps the noisy input ``[F, C, h, w]`` to the x0 prediction; it runs
    outside inference mode with gradients on, so every tensor it saves for backward must be a normal tensor.

    Args:
        denoise: callable mapping the noisy input ``[F, C, h, w]`` to the x0 prediction ``[F, C, h, w]``.
        x: ``[F, C, h, w]`` float noisy input ``x_t``.
        flow_bw, valid, frames_per_video, norm, feature_loss, shot_starts: as in :func:`temporal_loss`.

    Returns:
        ``(grad, loss)``: detached gradient with ``x``'s shape (float32, float64 for float64 ``x``; zeros when
        nothing is compared) and the detached 0-d loss of :func:`temporal_loss` on the prediction.

    Raises:
        ParameterError: naming ``x`` (not a 4-d float tensor), or as :func:`temporal_loss` for the prediction
            (``x0``), ``norm``, ``flow_bw``, ``valid`` or ``frames_per_video``.
    """
    _check_x0(x, "x")
    with torch.inference_mode(False), torch.enable_grad():
        xt = _normal(x).requires_grad_(True)
        pred = denoise(xt)
        loss = temporal_loss(pred, _normal(flow_bw), _normal(valid), frames_per_video, norm, feature_loss,
                             shot_starts)
        grad = _grad(loss, xt)
    return grad, loss.detach()


def guided(denoised: torch.Tensor, grad: torch.Tensor, weight: float) -> torch.Tensor:
    """Eq. 10 through the prediction: ``denoised - weight * grad`` (``denoised``'s dtype and device).

    Args:
        denoised: ``[F, C, h, w]`` x0 prediction.
        grad: gradient of the same shape (any device and dtype; moved to ``denoised``'s).
        weight: the guidance weight.

    Returns:
        ``[F, C, h, w]`` guided prediction in ``denoised``'s dtype and device.
    """
    return denoised - (float(weight) * grad).to(device=denoised.device, dtype=denoised.dtype)


# ---------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------


def _normal(t: Optional[torch.Tensor]) -> Optional[torch.Tensor]:
    """A detached copy that autograd may save (a clone outside inference mode is never an inference tensor)."""
    if not isinstance(t, torch.Tensor):
        return t  # None, or a wrong type that the checks below report
    return t.detach().clone() if t.is_inference() else t.detach()


def _grad(loss: torch.Tensor, wrt: torch.Tensor) -> torch.Tensor:
    work = _work_dtype(wrt)
    if not loss.requires_grad:  # nothing to compare (one frame, or every pair masked out)
        return torch.zeros_like(wrt, dtype=work).detach()
    (grad,) = torch.autograd.grad(loss, wrt, allow_unused=True)
    if grad is None:
        return torch.zeros_like(wrt, dtype=work).detach()
    return grad.detach().to(work)


def _work_dtype(t: torch.Tensor) -> torch.dtype:
    return torch.float64 if t.dtype == torch.float64 else torch.float32


def _check_x0(x0: torch.Tensor, name: str = "x0") -> int:
    if not isinstance(x0, torch.Tensor) or x0.dim() != 4 or not x0.is_floating_point():
        desc = f"has shape {tuple(x0.shape)}" if isinstance(x0, torch.Tensor) else f"is a {type(x0).__name__}"
        raise ParameterError(name, desc, "pass the frames' prediction as a float tensor [frames, C, h, w]")
    return x0.shape[0]


def _check_flow(flow_bw, valid, x0: torch.Tensor):
    frames, _, h, w = x0.shape
    want = (frames - 1, 2, h, w)
    if not isinstance(flow_bw, torch.Tensor) or tuple(flow_bw.shape) != want:
        shape = tuple(flow_bw.shape) if isinstance(flow_bw, torch.Tensor) else type(flow_bw).__name__
        raise ParameterError("flow_bw", f"has shape {shape}, expected {want}",
                             "pass one backward flow per consecutive frame pair at the latent's size (resize_flow)")
    flow_bw = flow_bw.to(device=x0.device)
    if valid is not None:
        if valid.dim() == 3:
            valid = valid.unsqueeze(1)
        if tuple(valid.shape) != (frames - 1, 1, h, w):
            raise ParameterError("valid", f"has shape {tuple(valid.shape)}, expected {(frames - 1, 1, h, w)}",
                                 "pass one reliability mask per frame pair at the latent's size (resize_mask)")
        valid = valid.to(device=x0.device)
    return flow_bw, valid
