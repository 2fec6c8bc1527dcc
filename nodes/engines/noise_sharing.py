"""ZVRD's spatial-temporal noise sharing (eq. 11) as a NOISE and a KSAMPLER: the engine of ``ZSVR_NoiseSharing``.

ZVRD (Cao et al., AAAI 2025) gives every frame the same initial latent noise
x_T and the same per-step noise z, and, where optical flow is reliable, lets z
follow the motion:

    z_i <- M (lambda z_i + (1 - lambda) W(z_{i-1})) + (1 - M) z_i           (eq. 11)

(the math, its exact unit-variance normaliser and its choices are in
``kernels.noise_sharing``; flow and occlusion in ``kernels.optical_flow``).

Outputs
-------
* **NOISE**: ``noise_seed``'s noise, identical for every frame: the frames are
  the batch items of an image-U-Net latent ``[F, C, H, W]`` and the time axis
  of a video latent ``[B, C, T, H, W]`` (batch items of a video latent keep
  their own noise). Not flow-blended: x_T is shared as the paper states.
  ComfyUI asks a NOISE for its noise with the LATENT only, before any model is
  known, so here (and only here) the latent's rank tells the two layouts apart;
  the SAMPLER checks that against the model it samples.
* **SAMPLER**: the given sampler with every stochastic per-step noise z shared
  across frames and, with ``lambda < 1`` and an ``image``, flow-blended per eq.
  11. It works through the k-diffusion samplers' ``noise_sampler`` argument:
  ComfyUI's ``KSAMPLER`` passes its ``extra_options`` to the sampler function,
  so the output is a ``KSAMPLER`` that, when sampling starts and the latent's
  shape is known, runs a new ``KSAMPLER`` with ``extra_options["noise_sampler"]``
  set to the shared-noise generator. Where the frames are (batch or time
  axis) it asks the model-family registry about the model the run samples
  (``model_wrap.inner_model``, the BaseModel). Samplers that are not KSAMPLERs (custom
  Sampler classes, ZSVR Early Stop, the inversion replay) have no such hook and
  are refused with an error naming what works. Deterministic samplers (euler,
  dpmpp_2m, uni_pc, ...) draw no per-step noise; with them only the NOISE
  output matters.

Choices
-------
* **Per-step noise stream.** One CPU ``torch.Generator`` per sampling run,
  seeded from ``noise_seed`` through one LCG step (so z never repeats the draw
  of x_T, as ComfyUI's default sampler noise does on the CPU when both use the
  same seed); one frame's worth per call, copied to every frame, then moved to
  the latent's device and dtype. Reproducible across devices.
* **SDE samplers** (dpmpp_sde, dpmpp_2m_sde, ...) normally draw Brownian-tree
  noise; given a ``noise_sampler`` they use it instead, so they get independent
  standard-normal draws per call (a valid SDE discretisation; the result is no
  longer identical across step counts, which the Brownian tree provides).
* **Flow** (only for ``lambda < 1`` with an ``image``): OpenCV DIS between
  consecutive frames of ``image`` at its own resolution, backward flow (frame
  ``i`` -> ``i-1``) and the forward-backward occlusion check, resized to the
  latent's H, W with ``resize_flow`` / ``resize_mask`` (a latent pixel counts as
  occluded when any image pixel under it is, threshold 0.01). Computed once
  per latent shape and cached.
* **Video latents.** ``image`` frames are matched to latent time steps: the same
  count, one to one; or ``(T - 1) * r + 1`` frames (a causal video VAE with
  temporal compression ``r``: Wan, HunyuanVideo, CogVideoX 1.5 use r = 4), where
  latent step ``t`` is represented by image frame ``r * t`` (the last frame it
  covers; latent 0 is frame 0) and the flow is estimated directly between those
  frames (one DIS call per latent pair rather than a composition of ``r``
  flows, which would accumulate error and need occlusion handling at every
  hop). Any other count is refused.
* **lambda < 1 without an image**: nothing to blend with; the noise is shared
  only, and a warning is logged once.
* **Shot cuts** (``shot_cuts``, from ``ZSVR_LoadVideo``): mapped to latent
  frames (``kernels.shot_cuts.latent_shot_starts``: one to one, or for a video
  VAE the latent that holds the cut's frame, a latent that straddles a cut
  counting with the new shot), the first latent frame of every shot takes no
  flow blend (eq. 11's ``M = 0``), so noise never travels across a cut and
  every shot gets exactly the per-step noise it gets as a video of its own.
  The shared part needs nothing: every shot alone would get the same shared
  draw (one frame's worth per call, whatever the frame count), so with
  ``lambda = 1`` cuts change nothing.
"""

from __future__ import annotations

import inspect
import logging

import torch

import comfy.samplers

from ...kernels import noise_sharing as ns
from ...kernels import optical_flow as of
from ..errors import InputError
from .. import run_state
from ..adapters import frame_axis_of_base_model
from ..errors import kernel_inputs
from ..frame_layout import check_window_schedule
from ..shared_inputs import shot_starts_for

log = logging.getLogger("zsvr")

FRAME_AXES = {"batch": 0, "time": 2}
"""The registry's frame axis (``nodes.adapters.frame_axis``) as a tensor axis of the latent."""

LATENT_RANKS = {0: 4, 2: 5}
"""The latent rank each frame axis comes with: ``[F, C, H, W]`` (frames as batch) and ``[B, C, T, H, W]``."""


def noise_frame_axis(samples, input_name: str = "latent_image") -> int:
    """NOISE only (no model known yet): 0 for an image latent ``[F, C, H, W]``, 2 for a video latent."""
    if not isinstance(samples, torch.Tensor) or getattr(samples, "is_nested", False):
        raise InputError(input_name, "is not a single latent tensor", "use an image or video LATENT")
    for axis, rank in LATENT_RANKS.items():
        if samples.dim() == rank:
            return axis
    raise InputError(input_name, f"has shape {tuple(samples.shape)}",
                     "use an image latent [frames, C, H, W] or a video latent [B, C, T, H, W]")


def model_frame_axis(model_wrap, noise: torch.Tensor) -> int:
    """Where the frames are in the latent the run samples, from the model-family registry.

    ``model_wrap`` is what a SAMPLER's ``sample`` receives (the guider); its ``inner_model`` is the BaseModel.
    """
    base = getattr(model_wrap, "inner_model", None)
    axis = FRAME_AXES[frame_axis_of_base_model(base)]
    if not isinstance(noise, torch.Tensor) or noise.dim() != LATENT_RANKS[axis]:
        shape = tuple(noise.shape) if isinstance(noise, torch.Tensor) else type(noise).__name__
        layout = "[frames, C, H, W]" if axis == 0 else "[B, C, T, H, W]"
        raise InputError("latent_image", f"has shape {shape}, but the model samples latents {layout}",
                         "use a latent made for this model (its own Empty Latent or VAE Encode node)")
    return axis


class SharedNoise:
    """NOISE: ``seed``'s standard-normal noise, identical for every frame of the latent."""

    def __init__(self, seed: int):
        self.seed = int(seed)

    def generate_noise(self, input_latent):
        samples = input_latent["samples"]
        axis = noise_frame_axis(samples, "latent_image")
        dtype = samples.dtype if samples.is_floating_point() else torch.float32
        gen = torch.Generator(device="cpu").manual_seed(self.seed)
        return ns.shared_noise(samples.shape, axis, gen, dtype=dtype, device=torch.device("cpu"))


class SharedStepNoise:
    """A k-diffusion ``noise_sampler(sigma, sigma_next)``: shared (optionally flow-blended) per-step noise."""

    def __init__(self, like: torch.Tensor, seed: int, lam: float, frame_axis: int, flow=None, valid=None,
                 shot_starts=()):
        self.shape = tuple(like.shape)
        self.shot_starts = tuple(shot_starts)
        self.axis = int(frame_axis)
        self.device = like.device
        self.dtype = like.dtype
        self.lam = float(lam)
        self.flow = flow
        self.valid = valid
        self.generator = torch.Generator(device="cpu").manual_seed(ns.step_seed(seed))

    def draw(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The next draw ``(shared, z)`` in float32 on the CPU: the shared noise and eq. 11's blend of it (the
        same tensor when nothing is blended)."""
        shared = ns.shared_noise(self.shape, self.axis, self.generator, dtype=torch.float32)
        z = shared
        if self.flow is not None and self.lam < 1.0:
            with kernel_inputs(lam="lambda", flow_bw="image", mask="image"):
                z = ns.blend_noise(shared, self.flow, self.valid, self.lam, self.axis, self.shot_starts)
        return shared, z

    def __call__(self, sigma=None, sigma_next=None):
        return self.draw()[1].to(device=self.device, dtype=self.dtype)


def accepts_noise_sampler(sampler_function) -> bool:
    try:
        params = inspect.signature(sampler_function).parameters
    except (TypeError, ValueError):
        return False
    return "noise_sampler" in params or any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())


class NoiseSharingSampler(comfy.samplers.KSAMPLER):
    """A KSAMPLER whose per-step noise is shared across frames (and flow-blended for ``lam < 1`` with an image)."""

    def __init__(self, inner: comfy.samplers.KSAMPLER, seed: int, lam: float, image: torch.Tensor | None = None,
                 shot_cuts=None):
        super().__init__(inner.sampler_function, dict(inner.extra_options), dict(inner.inpaint_options))
        self.seed = int(seed)
        self.lam = float(lam)
        self.image = image
        self.shot_cuts = shot_cuts  # kernels.shot_cuts.ShotCuts or None
        # (frames, size) -> (flow, valid) on the CPU: a function of the image, kept across runs, a few sizes at most
        self._flows = run_state.BoundedCache(4)

    def _flow_for(self, noise: torch.Tensor, frame_axis: int):
        """Called once per sampling run (so a missing ``image`` is said once per run)."""
        if self.lam >= 1.0:
            return None, None
        if self.image is None:
            log.warning("ZSVR Noise Sharing: lambda is %s but no 'image' is connected, so there is no flow to "
                        "blend the noise along; the noise is shared only", self.lam)
            return None, None
        frames = noise.shape[frame_axis]
        size = tuple(noise.shape[-2:])
        if frames < 2:
            return None, None
        if of.image_frames_for(self.image.shape[0], frames) is None:
            raise InputError("image", f"has {self.image.shape[0]} frames for a latent with {frames} frames",
                             f"connect the video the latent was encoded from: {frames} frames (one per latent "
                             f"frame), or (T-1)*r+1 frames for a video VAE with temporal compression r "
                             f"(e.g. {4 * (frames - 1) + 1} for r = 4)")

        def estimate():
            with kernel_inputs(frames="image", size="image"):
                return of.latent_flow(self.image, frames, size)

        return self._flows.get((frames, size), estimate)

    def noise_sampler_for(self, noise: torch.Tensor, frame_axis: int) -> SharedStepNoise:
        """The run's per-step noise for a latent like ``noise`` whose frames are on axis ``frame_axis``."""
        starts = shot_starts_for(self.shot_cuts, noise.shape[frame_axis])
        flow, valid = self._flow_for(noise, frame_axis)
        return SharedStepNoise(noise, self.seed, self.lam, frame_axis, flow, valid, starts)

    def sample(self, model_wrap, sigmas, extra_args, callback, noise, latent_image=None, denoise_mask=None,
               disable_pbar=False):
        noise_sampler = self.noise_sampler_for(noise, model_frame_axis(model_wrap, noise))
        check_window_schedule(extra_args.get("model_options"), noise, len(sigmas) - 1, "ZSVR Noise Sharing")
        extra = dict(self.extra_options)
        if accepts_noise_sampler(self.sampler_function):
            extra["noise_sampler"] = noise_sampler
        run = comfy.samplers.KSAMPLER(self.sampler_function, extra, self.inpaint_options)
        return run.sample(model_wrap, sigmas, extra_args, callback, noise, latent_image, denoise_mask, disable_pbar)
