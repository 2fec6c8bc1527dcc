"""A SAMPLER that stops any sampler at a chosen step and returns its clean-latent prediction there: the engine of
``ZSVR_EarlyStop``.

ZVRD (Cao et al., AAAI 2025) stops sampling at T_ES and outputs the x0
prediction of that step.

once per step with that step's x0 prediction, so it works for any sampler and
returns the prediction of the very same run.
"""

from __future__ import annotations

import math

import comfy.samplers

from ..errors import InputError
from ..frame_layout import check_core_sampler_windows


class _Stop(Exception):
    def __init__(self, x0):
        super().__init__("early stop")
        self.x0 = x0


def resolve_stop_step(stop_step: int, stop_percent: float, total: int) -> int:
    """1-based step whose prediction is returned; ``total`` means no early stop."""
    if stop_step > 0:
        if stop_step > total:
            raise InputError("stop_step", f"is {stop_step}, after the last of the schedule's {total} steps",
                             f"use 1..{total} (or 0 to stop by percent)")
        return stop_step
    return max(1, min(total, math.ceil(stop_percent * total - 1e-9)))


class EarlyStopSampler(comfy.samplers.Sampler):
    def __init__(self, inner, stop_step: int, stop_percent: float):
        self.inner = inner
        self.stop_step = stop_step
        self.stop_percent = stop_percent

    def sample(self, model_wrap, sigmas, extra_args, callback, noise, latent_image=None, denoise_mask=None,
               disable_pbar=False):
        total = len(sigmas) - 1
        k = resolve_stop_step(self.stop_step, self.stop_percent, total)
        check_core_sampler_windows(self.inner, extra_args.get("model_options"), noise, sigmas, "ZSVR Early Stop")
        if k >= total:
            return self.inner.sample(model_wrap, sigmas, extra_args, callback, noise, latent_image, denoise_mask,
                                     disable_pbar)

        def stop_callback(step, x0, x, total_steps):
            if callback is not None:
                callback(step, x0, x, k)
            if step == k - 1:
                raise _Stop(x0)

        try:
            return self.inner.sample(model_wrap, sigmas, extra_args, stop_callback, noise, latent_image,
                                     denoise_mask, disable_pbar)
        except _Stop as stop:
            return stop.x0
