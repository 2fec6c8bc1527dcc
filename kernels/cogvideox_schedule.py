"""CogVideoX's noise schedule as ComfyUI-style sigmas (pure torch).

CogVideoX samples with diffusers' ``CogVideoXDDIMScheduler`` / ``CogVideoXDPMScheduler``
(Yang et al., "CogVideoX", ICLR 2025: v-prediction with zero terminal SNR). Its
``alphas_cumprod`` are built in four steps, each reproduced here in the
variance-exploding parametrisation ``sigma = sqrt((1 - abar) / abar)`` that
ComfyUI's discrete model sampling uses (Karras et al., NeurIPS 2022, Table 1,
VP column: ``sigma(t) = sqrt(1 / abar(t) - 1)``):

1. betas from ``beta_schedule`` over ``num_train_timesteps`` T:

   * ``scaled_linear`` (Rombach et al., LDM, CVPR 2022; CogVideoX's):
     ``beta_t = (sqrt(beta_start) + t / (T-1) (sqrt(beta_end) - sqrt(beta_start)))^2``;
   * ``linear`` (Ho et al., DDPM, NeurIPS 2020, sec. 4):
     ``beta_t = beta_start + t / (T-1) (beta_end - beta_start)``;
   * ``squaredcos_cap_v2`` (Nichol & Dhariwal, ICML 2021, eq. 17 and the 0.999 cap below it):
     ``abar(u) = cos^2((u + s) / (1 + s) pi / 2)``, ``s = 0.008``,
     ``beta_t = min(1 - abar((t+1)/T) / abar(t/T), 0.999)``.

2. ``abar_t = prod_{i<=t} (1 - beta_i)`` (DDPM eq. 4).

3. the SNR shift of diffusers' CogVideoX schedulers, ``abar <- abar / (s + (1 - s) abar)``
   with ``s = snr_shift_scale`` (3.0 for CogVideoX-2b, 1.0 for 5b). Since
   ``SNR = abar / (1 - abar)`` this is ``SNR <- SNR / s``, i.e. exactly
   ``sigma <- sqrt(s) sigma``.

4. with ``rescale_betas_zero_snr``, the zero-terminal-SNR rescale of Lin et al.,
   "Common Diffusion Noise Schedules and Sampling Steps Are Flawed" (WACV 2024),
   Algorithm 1: ``sqrt(abar)`` is shifted so its last value is 0 and scaled so its
   first value is unchanged. ``abar_T = 0`` would be ``sigma = inf``; as ComfyUI's
   own zero-SNR models do, the last ``abar`` is kept at :data:`TERMINAL_ABAR`
   (sigma_max ~ 4.5e3), so the sigmas equal those ComfyUI computes for its models.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch

from .errors import ParameterError

BETA_SCHEDULES = ("scaled_linear", "linear", "squaredcos_cap_v2")
"""diffusers ``beta_schedule`` names :func:`betas` knows."""

TERMINAL_ABAR = 4.8973451890853435e-08
"""``abar`` of the last step after the zero-terminal-SNR rescale (ComfyUI's value, instead of 0)."""

COSINE_OFFSET = 0.008
"""``s`` of the cosine schedule (Nichol & Dhariwal eq. 17)."""
COSINE_MAX_BETA = 0.999


def betas(beta_schedule: str, num_train_timesteps: int, beta_start: float, beta_end: float) -> torch.Tensor:
    """The T betas (float64) of a diffusers ``beta_schedule`` (step 1 of the module doc).

    Args:
        beta_schedule: one of :data:`BETA_SCHEDULES` (diffusers' names).
        num_train_timesteps: ``T``, the training schedule's step count (at least 2).
        beta_start: the first beta (``linear``, ``scaled_linear``; unused by the cosine schedule).
        beta_end: the last beta (``linear``, ``scaled_linear``; unused by the cosine schedule).

    Returns:
        ``[T]`` float64 betas.

    Raises:
        ParameterError: ``beta_schedule`` is unknown, or ``num_train_timesteps`` is not an integer >= 2.
    """
    if beta_schedule not in BETA_SCHEDULES:
        raise ParameterError("beta_schedule", f"is {beta_schedule!r}", f"use one of {', '.join(BETA_SCHEDULES)}")
    if isinstance(num_train_timesteps, bool) or not isinstance(num_train_timesteps, int) or num_train_timesteps < 2:
        raise ParameterError("num_train_timesteps", f"is {num_train_timesteps!r}", "use an integer of at least 2")
    if beta_schedule == "scaled_linear":
        return torch.linspace(beta_start ** 0.5, beta_end ** 0.5, num_train_timesteps, dtype=torch.float64) ** 2
    if beta_schedule == "linear":
        return torch.linspace(beta_start, beta_end, num_train_timesteps, dtype=torch.float64)

    def abar(u: float) -> float:
        return math.cos((u + COSINE_OFFSET) / (1 + COSINE_OFFSET) * math.pi / 2) ** 2

    steps = num_train_timesteps
    return torch.tensor([min(1 - abar((t + 1) / steps) / abar(t / steps), COSINE_MAX_BETA) for t in range(steps)],
                        dtype=torch.float64)


def rescale_zero_terminal_snr(sigmas: torch.Tensor) -> torch.Tensor:
    """Sigmas rescaled to zero terminal SNR (Lin et al. 2024, Algorithm 1; step 4 of the module doc).

    Args:
        sigmas: the schedule's sigmas, a 1-D tensor of at least 2 values.

    Returns:
        The rescaled sigmas, same length (the last step is pure noise).

    Raises:
        ParameterError: ``sigmas`` is not a 1-D tensor of at least 2 values.
    """
    if not isinstance(sigmas, torch.Tensor) or sigmas.ndim != 1 or sigmas.numel() < 2:
        raise ParameterError("sigmas", "must be a 1-D tensor of at least 2 values",
                             "pass the schedule's sigmas, one per step, as a 1-D tensor")
    root_abar = (1 / (sigmas * sigmas + 1)).sqrt()
    first, last = root_abar[0].clone(), root_abar[-1].clone()
    root_abar -= last  # the last step is pure noise
    root_abar *= first / (first - last)  # the first step keeps its value
    abar = root_abar ** 2
    abar[-1] = TERMINAL_ABAR
    return ((1 - abar) / abar) ** 0.5


def snr_shift_default(scheduler_config: Mapping) -> float:
    """diffusers' CogVideoX schedulers default ``snr_shift_scale`` to 3.0; other scheduler classes have no shift.

    Args:
        scheduler_config: a diffusers ``scheduler_config.json`` (its ``_class_name`` decides).

    Returns:
        3.0 for a ``CogVideoX...`` scheduler class (or none named), else 1.0.
    """
    return 3.0 if str(scheduler_config.get("_class_name", "CogVideoX")).startswith("CogVideoX") else 1.0


def schedule_sigmas(scheduler_config: Mapping) -> torch.Tensor:
    """Sigmas (ascending in t, float64) of a diffusers CogVideoX ``scheduler_config.json`` (steps 1-4 above).

    Args:
        scheduler_config: the parsed ``scheduler_config.json``.

    Returns:
        ``[T]`` float64 sigmas, ascending in t.

    Raises:
        ParameterError: naming ``scheduler_config``, for a schedule it cannot reproduce (``trained_betas``, an
            unknown ``beta_schedule``, a non-positive ``snr_shift_scale``).
        TypeError: ``scheduler_config`` is not a mapping.
    """
    if not isinstance(scheduler_config, Mapping):
        raise TypeError("scheduler_config must be a mapping (scheduler_config.json), "
                        f"got {type(scheduler_config).__name__}; pass the parsed JSON object (a dict)")
    if scheduler_config.get("trained_betas") is not None:
        raise ParameterError("scheduler_config", "has trained_betas, which is not supported",
                             "use a scheduler config that sets beta_schedule instead")
    kind = scheduler_config.get("beta_schedule", "scaled_linear")
    if kind not in BETA_SCHEDULES:
        raise ParameterError("scheduler_config", f"has beta_schedule {kind!r}",
                             f"use one of {', '.join(BETA_SCHEDULES)}")
    shift = float(scheduler_config.get("snr_shift_scale", snr_shift_default(scheduler_config)))
    if not shift > 0:
        raise ParameterError("scheduler_config", f"has snr_shift_scale {shift}, which is not positive",
                             "set a positive snr_shift_scale or leave it out")
    beta = betas(kind, int(scheduler_config.get("num_train_timesteps", 1000)),
                 float(scheduler_config.get("beta_start", 0.00085)), float(scheduler_config.get("beta_end", 0.012)))
    abar = torch.cumprod(1.0 - beta, dim=0)
    sigmas = ((1.0 - abar) / abar).sqrt() * math.sqrt(shift)
    if scheduler_config.get("rescale_betas_zero_snr", False):
        sigmas = rescale_zero_terminal_snr(sigmas)
    return sigmas
