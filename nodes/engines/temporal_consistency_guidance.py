"""ZVRD's temporal consistency guidance, the pixel term (eq. 8-10), as a post-CFG MODEL patch: the engine of
``ZSVR_TemporalConsistencyGuidance``.

ZVRD (Cao et al., AAAI 2025, eq. 8-10) guides sampling with the gradient of a
temporal-consistency loss on the current x0 prediction of all frames: the
occlusion-masked difference between each frame and the previous frame warped
to it along the optical flow (eq. 8), plus a CLIP feature term (eq. 9). The
math, the reconstructed equations and every choice (half squared L2, measured
on the x0 prediction in latent space with the input video's flow downsampled
to the latent grid, step size schedule, steps) are in
``kernels.temporal_consistency_guidance``.

How it hooks in: a post-CFG function (``set_model_sampler_post_cfg_function``)
on a clone of the MODEL. ComfyUI calls it after classifier-free guidance with
the step's prediction (``args["denoised"]``), the noisy input, sigma, the
model, its options and the conds; it returns ``denoised - weight * grad``, so
the guidance composes with any guider that runs ComfyUI's CFG function
(CFGGuider, ZSVR Negative Prompt Editor, ...) and any sampler, including ZSVR
Early Stop (whose returned prediction is the guided one).

* **mode "x0"**: ``grad`` is the loss gradient with respect to the prediction
  (no model backward; negligible cost).
* **mode "through model"**: DPS-style, ``grad`` is the gradient with respect
  to the noisy input ``x_t`` through the model: the step is re-run with
  autograd recording (``comfy.samplers.sampling_function`` with the same
  conds, cfg and model options, and the post-CFG functions that run before
  this one) and back-propagated. Cost per guided step: one extra forward and
  one backward, about 4x the step's compute (3.5-4x measured on the tests'
  tiny U-Net), and the activation memory of a training step for every frame
  and the cond/uncond batch at once. ComfyUI loads models under
  ``torch.inference_mode()``, and autograd cannot save inference-mode weights
  for the backward; so this mode registers an identity weight wrapper
  (``ModelPatcher.add_weight_wrapper``, the mechanism ComfyUI's own LoRA
  training uses) on every layer, which makes ComfyUI hand each layer a fresh
  copy of its weight at every forward: a small cost at every step, and one
  more copy of the weights held during the backward. Other models that run
  inside the step (a ControlNet, ...) are loaded for inference only and cannot
  be differentiated through, nor can attention backends without a backward
  pass (sage attention; ComfyUI's CPU sub-quadratic attention when memory is
  short): the step then stops with an error that says to use mode "x0". Other
  frame patches (SLR attention, SW-CFA) run again inside the extra forward;
  stateful ones (SLR's trajectory history) see that step twice.

Flow: OpenCV DIS between consecutive frames of ``image`` (backward flow and
the forward-backward occlusion check of ``kernels.optical_flow``), resized to
the latent grid (``kernels.optical_flow.latent_flow``, shared with Noise
Sharing), computed once per latent size when sampling starts and cached on the
patch (so re-running the sampler with other settings does not recompute it).

Clones: the patch object is configuration only (``nodes.run_state``), shared by
every clone of the patched MODEL together with its flow cache; what belongs to
one sampling run (the flow moved to the model's device) lives in a run state
that the ``OUTER_SAMPLE`` wrapper creates per run. Statistics (guided steps,
losses) are reported only to a debug observer a test installs.

Shot cuts (``shot_cuts``, from ``ZSVR_LoadVideo``, one per latent frame): the
frame pair across each cut is left out of the loss
(``kernels.temporal_consistency_guidance.consecutive_pairs``), so no frame is
pulled towards the warped last frame of the previous shot and every shot is
guided exactly as a video of its own.

The CLIP feature term (eq. 9) is not implemented: it needs CLIP image-encoder
weights (and a VAE decoder in the loop), which are not available offline. Its
seam is ``TCGPatch.feature_loss`` (None here), passed to the kernel's
``feature_loss`` argument: a callable ``(x0, prev, cur) -> scalar`` added to
the pixel loss.
"""

from __future__ import annotations

import torch

from ...kernels import optical_flow as of
from ...kernels import temporal_consistency_guidance as tcg
from ..errors import InputError
from .. import run_state
from ..errors import kernel_inputs
from ..frame_layout import check_core_sampler_windows
from ..host import interrupt_check
from ..shared_inputs import check_frames_per_video_divides

WORKS_WITH = "an image model that denoises a video as a batch of frames (SD1.5, SD2.x, SDXL and their fine-tunes)"


def check_image_frames(image_frames: int, latent_frames: int) -> None:
    if image_frames != latent_frames:
        raise InputError("image", f"has {image_frames} frames but the latent batch has {latent_frames}",
                         "connect the video the latent was encoded from, one IMAGE frame per latent frame "
                         "(the same frame cap, start frame and every-nth settings)")


def _autograd_safe(weight: torch.Tensor) -> torch.Tensor:
    """Identity weight wrapper: its presence makes ComfyUI copy the weight per forward (see the module docstring);
    an inference-mode weight that still reaches here while gradients are on is cloned into a normal tensor."""
    if torch.is_grad_enabled() and weight.is_inference():
        return weight.clone()
    return weight


def install_weight_copies(model_patcher) -> int:
    """Register :func:`_autograd_safe` on every weight and bias of the model's ComfyUI layers; returns the count."""
    count = 0
    for name, module in model_patcher.model.named_modules():
        if not hasattr(module, "weight_function"):
            continue
        for attr in ("weight", "bias"):
            if getattr(module, attr, None) is not None:
                model_patcher.add_weight_wrapper(f"{name}.{attr}", _autograd_safe)
                count += 1
    return count


class TCGRun:
    """One sampling run's state: the flow and mask moved to the model's device."""

    def __init__(self):
        self.on_device: dict = {}  # (frames, h, w, device) -> (flow, valid)


class TCGPatch(run_state.Config):
    """The configuration of one patched MODEL: the post-CFG guidance, the early frame check and the flow cache.
    Shared by every clone (see the module docstring)."""

    feature_loss = None  # seam for ZVRD's CLIP feature term (eq. 9): a kernel ``feature_loss`` callable

    def __init__(self, image: torch.Tensor, weight: float, mode: str, frames_per_video: int, gate=None,
                 shot_cuts=None):
        self.image = image  # [F, 3, H, W] float32 0..1 on the CPU
        self.shot_cuts = shot_cuts  # kernels.shot_cuts.ShotCuts or None (one cut frame per latent frame)
        self.weight = float(weight)
        self.mode = mode
        self.frames_per_video = int(frames_per_video)
        self.gate = gate
        self.key = run_state.new_key("tcg")
        # (frames, h, w) -> (flow, valid) on the CPU: a function of the image, kept across runs, a few sizes at most
        self._flows = run_state.BoundedCache(4)

    def flow_for(self, shape, device=None, state: TCGRun | None = None, transformer_options=None):
        """Backward flow ``[F-1, 2, h, w]`` and reliability mask ``[F-1, 1, h, w]`` for a latent of ``shape``
        (on the CPU, or on ``device`` through the run ``state``'s copy)."""
        frames, _, h, w = shape
        check_image_frames(self.image.shape[0], frames)
        self.shot_starts_for(frames)
        check_frames_per_video_divides(self.frames_per_video, frames)
        key = (frames, h, w)

        def estimate():
            interrupt_check()
            if frames < 2:
                flows = torch.zeros(0, 2, h, w), torch.zeros(0, 1, h, w, dtype=torch.bool)
            else:
                with kernel_inputs(frames="image", size="image"):
                    flows = of.latent_flow(self.image, frames, (h, w))
            run_state.notify(transformer_options, "tcg.flow_estimated", shape=key)
            return flows

        flow, valid = self._flows.get(key, estimate)
        if device is None:
            return flow, valid
        on_device = state.on_device if state is not None else {}
        dkey = key + (str(device),)
        if dkey not in on_device:
            on_device.clear()
            on_device[dkey] = (flow.to(device), valid.to(device))
        return on_device[dkey]

    def shot_starts_for(self, frames: int) -> tuple:
        """The latent frames where a shot starts (one to one with the batch); () without shot cuts."""
        if self.shot_cuts is None:
            return ()
        if self.shot_cuts.frames != frames:
            raise InputError("shot_cuts", f"are the cuts of a {self.shot_cuts.frames}-frame video but the latent "
                             f"batch has {frames} frames", "connect the shot_cuts of the video the latent was "
                             "encoded from (the same Load Video settings as 'image'), one frame per latent frame")
        return tuple(self.shot_cuts.cuts)

    def outer_sample(self, executor, *args, **kwargs):
        """OUTER_SAMPLE wrapper: refuse a mismatched ``image`` before any step, estimate the flow once, and start
        the run's :class:`TCGRun`."""
        latent = kwargs.get("latent_image", args[1] if len(args) > 1 else None)
        transformer_options = (run_state.run_options(executor) or {}).get("transformer_options")
        if isinstance(latent, torch.Tensor):
            _check_latent(latent)
            self.flow_for(latent.shape, transformer_options=transformer_options)
        check_core_sampler_windows(kwargs.get("sampler", args[2] if len(args) > 2 else None),
                                   run_state.run_options(executor), latent,
                                   kwargs.get("sigmas", args[3] if len(args) > 3 else None),
                                   "ZSVR Temporal Consistency Guidance")
        with run_state.run_with(executor, self.key, TCGRun()):
            return executor(*args, **kwargs)

    def post_cfg(self, args):
        denoised = args["denoised"]
        sigma = args.get("sigma")
        if self.gate is not None and sigma is not None and not self.gate({"sigmas": sigma}):
            return denoised
        interrupt_check()
        _check_latent(denoised)
        transformer_options = (args.get("model_options") or {}).get("transformer_options")
        state = run_state.post_cfg_state(args, self.key)
        flow, valid = self.flow_for(denoised.shape, denoised.device, state, transformer_options)
        starts = self.shot_starts_for(denoised.shape[0])
        if self.mode == "x0":
            grad, loss = tcg.x0_gradient(denoised, flow, valid, self.frames_per_video,
                                         feature_loss=self.feature_loss, shot_starts=starts)
        else:
            # (shot starts passed only when there are some: the three-argument call stays as it was)
            grad, loss = self._through_model(args, flow, valid, *((starts,) if starts else ()))
        observer = run_state.observer_of(transformer_options)
        if observer is not None:  # reading sigma and the loss back is a host sync: debug only
            observer("tcg.guided", {"sigma": None if sigma is None else float(sigma.flatten()[0]),
                                    "loss": float(loss)})
        return tcg.guided(denoised, grad, self.weight)

    def _through_model(self, args, flow, valid, shot_starts=()):
        import comfy.samplers

        options = dict(args["model_options"])
        hooks = list(options.get("sampler_post_cfg_function", []))
        mine = next((i for i, fn in enumerate(hooks) if getattr(fn, "__self__", None) is self), len(hooks))
        options["sampler_post_cfg_function"] = hooks[:mine]  # the prediction as this hook received it
        sigma = args["sigma"]

        def denoise(x: torch.Tensor) -> torch.Tensor:
            return comfy.samplers.sampling_function(args["model"], x, _normal(sigma), args.get("uncond"),
                                                    args.get("cond"), args["cond_scale"], model_options=options)

        try:
            return tcg.through_model_gradient(denoise, args["input"], flow, valid, self.frames_per_video,
                                              feature_loss=self.feature_loss, shot_starts=shot_starts)
        except torch.OutOfMemoryError as exc:
            raise InputError("mode", "'through model' ran out of memory for the extra forward and backward pass "
                             "(it holds the activations of every frame at once)",
                             "use mode 'x0' (no model backward), fewer frames or a smaller size") from exc
        except RuntimeError as exc:
            text = str(exc).strip()
            if "Inference tensors cannot be saved for backward" in text:
                problem = ("'through model' cannot back-propagate through this step: a model in it (a ControlNet, "
                           "T2I adapter, ...) was loaded for inference only")
            else:
                first = text.splitlines()[0] if text else type(exc).__name__
                problem = f"'through model' could not back-propagate through this step ({first})"
            raise InputError("mode", problem,
                             "use mode 'x0' (no model backward); 'through model' needs every model in the step to be "
                             "differentiable, and an attention backend with a backward pass (not sage attention; "
                             "ComfyUI's CPU sub-quadratic attention has none when memory is short)") from exc


def _normal(t: torch.Tensor) -> torch.Tensor:
    return t.detach().clone() if t.is_inference() else t


def _check_latent(latent: torch.Tensor) -> None:
    if latent.dim() != 4:
        raise InputError("model", f"produces a latent of shape {tuple(latent.shape)}, not [frames, C, H, W]",
                         f"use {WORKS_WITH}; video models keep their frames on the latent's time axis")
