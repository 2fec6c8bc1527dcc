"""``ZSVR_InversionSampler``: NOISE, SAMPLER and SIGMAS that replay an inversion from a skip step.

Wire them into core ``SamplerCustomAdvanced`` with any GUIDER (the inversion's
own prompt reproduces the input; ``ZSVR_NegativePromptEditor`` edits it).
"""

from __future__ import annotations

import math

import torch

import comfy.samplers
from comfy_api.latest import io

from ..kernels import inversion as inv_kernel
from ..kernels.errors import InputError
from . import host
from .errors import kernel_inputs
from .shared_inputs import check_finite, validate_widgets
from .frame_layout import check_window_schedule, context_handler, describe_windows, window_settings, with_sample_sigmas
from .types import CATEGORY, Inversion


class InversionNoise:
    """NOISE whose sample is eps at the start level, so ``a x0 + b eps`` is the inverted x_skip."""

    def __init__(self, inversion: inv_kernel.InversionResult, start: int):
        self.inversion = inversion
        self.start = start
        self.seed = inversion.seed

    def generate_noise(self, input_latent):
        inv = self.inversion
        a, b = inv.a[self.start], inv.b[self.start]
        if b == 0:
            return torch.zeros_like(inv.x0)
        x = inv.start_latent(self.start)
        return ((x - inv.x0 * a) / b).to(torch.float32)


class ReplaySampler(comfy.samplers.Sampler):
    """Starts at the inverted latent of level ``start`` and steps with the inversion's rule and noise.

    The replay plan (which steps, which stored noise, the DDIM hand-over to
    another schedule, how the last step ends) is ``kernels.inversion.plan_replay``.
    """

    def __init__(self, inversion: inv_kernel.InversionResult, start: int, last_step: str = "exact"):
        self.inversion = inversion
        self.start = start
        self.last_step = last_step

    def sample(self, model_wrap, sigmas, extra_args, callback, noise, latent_image=None, denoise_mask=None,
               disable_pbar=False):
        inv = self.inversion
        host.check_family(inv.meta, model_wrap.inner_model)
        if latent_image is not None and tuple(latent_image.shape) != tuple(inv.x0.shape):
            raise InputError("latent_image", f"has shape {tuple(latent_image.shape)} but the inversion was made from "
                             f"a latent of shape {tuple(inv.x0.shape)}",
                             "connect the same LATENT that was inverted")
        if denoise_mask is not None:
            raise InputError("latent_image", "carries a noise mask", "ZSVR replay edits the whole latent: remove the mask")
        model_sampling = model_wrap.inner_model.model_sampling
        device, dtype = latent_image.device, latent_image.dtype
        with kernel_inputs(noise_scaling="model", step="skip"):
            inv_kernel.validate_sigmas(sigmas)
            path = host.path_for(model_sampling, sigmas) if inv.rule == "ddim" else None
            start, coeffs, stored = inv_kernel.plan_replay(inv, sigmas, self.start, path, self.last_step)
            x = inv.start_latent(start, device=device, dtype=dtype)
        s_in = x.new_ones([x.shape[0]])
        total = len(sigmas) - 1
        extra_args = self._window_args(extra_args, sigmas)

        def denoise(x_j, j):
            host.interrupt_check()
            return model_wrap(x_j, sigmas[j] * s_in, **extra_args)

        def on_step(j, x0_hat, x_j):
            if callback is not None:
                callback(j, x0_hat, x_j, total)

        return inv_kernel.replay(denoise, x, coeffs, stored, on_step)

    def _window_args(self, extra_args: dict, sigmas: torch.Tensor) -> dict:
        """Under core context windows: the inversion's whole schedule as the run's ``sample_sigmas``, when the
        replay samples a tail of it, so the handler numbers (and, for the uniform window schedules, places) the
        windows of every level as it did during the inversion (``frame_layout.with_sample_sigmas``)."""
        inv = self.inversion
        options = extra_args.get("model_options")
        if "context_windows" in inv.meta:
            made, now = inv.meta["context_windows"], window_settings(options, inv.x0)
            if made != now:
                raise InputError("model", f"samples {describe_windows(now)}, but the inversion was made "
                                 f"{describe_windows(made)}, so strength 1 would not give the clip back",
                                 "connect the same MODEL (with the same Context Windows node) to ZSVR DDPM "
                                 "Inversion and to the guider")
        if context_handler(options) is None:
            return extra_args
        tail = inv.sigmas[len(inv.sigmas) - len(sigmas):] if len(sigmas) <= len(inv.sigmas) else None
        own = tail is not None and torch.allclose(sigmas.detach().to("cpu", torch.float32), tail, rtol=1e-5, atol=1e-7)
        full = inv.sigmas.to(device=sigmas.device, dtype=sigmas.dtype) if own else sigmas
        check_window_schedule(options, inv.x0, len(full) - 1, "ZSVR Inversion Sampler")
        return with_sample_sigmas(extra_args, full) if own else extra_args


def _noise_at(inversion: inv_kernel.InversionResult, level: int) -> str:
    """The equivalent EPS sigma b/a of ``level``, rounded down to 4 significant digits (so that a start_noise of
    the printed value starts at that level, not the one before it)."""
    a, b = inversion.a[level], inversion.b[level]
    if a == 0:
        return "inf"
    value = b / a
    if value <= 0:
        return "0"
    scale = 10 ** (3 - math.floor(math.log10(value)))
    return f"{math.floor(value * scale) / scale:g}"


class InversionSampler(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="ZSVR_InversionSampler",
            display_name="Inversion Sampler (ZSVR)",
            category=f"{CATEGORY}/inversion",
            description=(
                "Replays an inversion from a skip step: connect NOISE, SAMPLER and SIGMAS to SamplerCustomAdvanced "
                "(with the inverted LATENT). With the inversion's own prompt it reproduces the input; with the "
                "Negative Prompt Editor it removes what the remove prompt describes. After a ddim inversion (TDM) "
                "the SAMPLER also takes SIGMAS from your own scheduler with another step count (e.g. invert in 10 "
                "steps, sample in 32): sampling starts from the inverted latent at the schedule's first sigma (x_T "
                "when it is the largest) and takes DDIM steps over your schedule. The first sigma must be one the "
                "inversion passed through: every core scheduler except ddim_uniform starts at the model's largest "
                "sigma for any step count."
            ),
            inputs=[
                Inversion.Input("inversion", tooltip="From ZSVR DDPM Inversion."),
                io.Int.Input("skip", default=40, min=0, max=10000,
                             tooltip="Steps of the schedule skipped: the edit starts at step `skip` (ZSVD: 40 of 100). "
                                     "More skip keeps more of the input; less skip edits more. After a ddim "
                                     "inversion with SIGMAS from another scheduler, sampling starts where those "
                                     "SIGMAS start instead (TDM: skip 0)."),
                io.Float.Input("start_noise", default=0.0, min=0.0, max=1000.0, step=0.01,
                               tooltip="Optional start as a noise level instead of a step: the equivalent EPS sigma "
                                       "b/a (k-diffusion sigma; flow sigma s means s/(1-s)). ZSVD official: 4.55 "
                                       "(flow sigma 0.82). 0 = use skip."),
                io.Combo.Input("last_step", options=list(inv_kernel.LAST_STEPS), default="exact", optional=True,
                               tooltip="How the last step (to a clean latent) ends, for step rules ddpm and ddim. "
                                       "exact: add the residual the inversion stored, so strength 1 gives the input "
                                       "back exactly; it is the fine detail the model did not predict, which can "
                                       "include thin rain streaks, so it may put some rain back. prediction: end on "
                                       "the edited clean prediction, like the official ZSVD code (a little detail "
                                       "is lost, no rain is added back). Rule zsvd always ends like the official "
                                       "code. Changing this does not re-run the inversion."),
            ],
            outputs=[
                io.Noise.Output(display_name="noise"),
                io.Sampler.Output(display_name="sampler"),
                io.Sigmas.Output(display_name="sigmas"),
            ],
        )

    @classmethod
    def validate_inputs(cls, start_noise=None):
        """Before anything runs: start_noise is a finite number in its range."""
        return validate_widgets(cls, start_noise=start_noise)

    @classmethod
    def execute(cls, inversion, skip, start_noise, last_step="exact") -> io.NodeOutput:
        check_finite(cls, start_noise=start_noise)
        if not isinstance(inversion, inv_kernel.InversionResult):
            raise InputError("inversion", "is not a ZSVR inversion", "connect ZSVR DDPM Inversion's output")
        steps = inversion.steps
        start = inversion.level_for_noise(start_noise) if start_noise > 0 else skip
        name = "start_noise" if start_noise > 0 else "skip"
        if start >= steps:
            raise InputError(name, f"starts at step {start}, but the schedule has only {steps} steps",
                             f"use a skip below {steps}" if name == "skip" else "use a larger noise level")
        if start < inversion.first_step:
            raise InputError(name, f"starts at step {start}, but the inversion was only computed from step "
                             f"{inversion.first_step}", f"set the inverter's first_step to {start} or less, or "
                             + ("skip more" if name == "skip" else
                                f"lower start_noise to {_noise_at(inversion, inversion.first_step)} or less"))
        sigmas = inversion.sigmas[start:].clone()
        if last_step not in inv_kernel.LAST_STEPS:
            raise InputError("last_step", f"is {last_step!r}", f"use one of: {', '.join(inv_kernel.LAST_STEPS)}")
        return io.NodeOutput(InversionNoise(inversion, start), ReplaySampler(inversion, start, last_step), sigmas)
