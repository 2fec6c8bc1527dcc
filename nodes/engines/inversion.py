"""Edit-friendly DDPM (or DDIM) inversion and its replay as SAMPLERs and a NOISE (ZSVD, TDM): the engine of
``ZSVR_DDPMInvert`` and ``ZSVR_InversionSampler``.

The inversion (the posterior of Ho et al. 2020, eq. 6-7, per step rule; the
math is ``kernels.inversion``): the model is driven through ComfyUI's own
``CFGGuider`` with a ``Sampler`` whose ``sample`` runs the inversion loop of
``kernels.inversion``, so model loading, conditioning, patches and wrappers are
exactly the host's (:class:`InversionRunner`).

The replay: a NOISE whose sample is eps at the start level
(:class:`InversionNoise`) and a SAMPLER that steps with the inversion's rule and
stored noise (:class:`ReplaySampler`), for core ``SamplerCustomAdvanced`` with
any GUIDER.
"""

from __future__ import annotations

import torch

import comfy.samplers

from ...kernels import inversion as inv_kernel
from ..errors import InputError
from .. import host
from ..errors import kernel_inputs
from .expert_pair import experts_of
from ..frame_layout import check_window_schedule, context_handler, describe_windows, window_settings, with_sample_sigmas


class InversionRunner(comfy.samplers.Sampler):
    """A SAMPLER-shaped object the guider calls with its model wrapper; runs the inversion."""

    def __init__(self, rule: str, seed: int, first_step: int, store_dtype: torch.dtype):
        self.store_dtype = store_dtype
        self.rule = rule
        self.seed = seed
        self.first_step = first_step
        self.result: inv_kernel.InversionResult | None = None

    def sample(self, model_wrap, sigmas, extra_args, callback, noise, latent_image=None, denoise_mask=None,
               disable_pbar=False):
        model_sampling = model_wrap.inner_model.model_sampling
        a, b = host.path_for(model_sampling, sigmas)
        s_in = latent_image.new_ones([latent_image.shape[0]])
        # the schedule's own tensor elements, so model inputs are bit-exact with the host's samplers
        by_value = {float(t): t for t in sigmas}
        options = extra_args.get("model_options")
        check_window_schedule(options, latent_image, len(sigmas) - 1, "ZSVR DDPM Inversion")
        floor_args = None

        def denoise(x, sigma):
            nonlocal floor_args
            s = by_value.get(sigma)
            if s is None:
                s = torch.tensor(sigma, dtype=sigmas.dtype, device=sigmas.device)
                if context_handler(options) is not None:
                    # ddim's one call below the schedule (at sigma_floor for the step to sigma 0): core context
                    # windows look every call's sigma up in the schedule, so name it in place of that final 0
                    if floor_args is None:
                        floor_args = with_sample_sigmas(extra_args, torch.cat((sigmas[:-1], s.reshape(1))))
                    return model_wrap(x, s * s_in, **floor_args)
            return model_wrap(x, s * s_in, **extra_args)

        def on_step(done, total, x0_hat):
            host.interrupt_check()
            if callback is not None:
                callback(done - 1, x0_hat, x0_hat, total)

        self.result = inv_kernel.invert(
            denoise, latent_image, sigmas, a, b, self.rule, self.seed, first_step=self.first_step,
            sigma_floor=float(model_sampling.sigma_min), store_dtype=self.store_dtype, on_step=on_step,
        )
        return latent_image


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
        check_same_experts(inv.meta.get("experts"), experts_of(model_wrap))
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


def check_same_experts(made: dict | None, now: dict | None) -> None:
    """A replay must route its levels to the experts the inversion used (Wan 2.2 A14B), else strength 1 would not
    give the clip back."""
    if made == now:
        return
    def said(pair):
        return "one model" if pair is None else f"two experts switching at {pair['boundary']:g} of the schedule"
    raise InputError("model_low_noise", f"of the guider gives {said(now)}, but the inversion was made with "
                     f"{said(made)}", "connect the same model_low_noise and expert_boundary to ZSVR DDPM Inversion "
                     "and ZSVR Negative Prompt Editor")
