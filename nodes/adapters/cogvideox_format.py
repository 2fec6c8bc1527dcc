"""How ComfyUI sees a CogVideoX: its latent format, model sampling and ``model_config``.

Latents
    16 channels, ``[B, 16, (F - 1) / 4 + 1, H / 8, W / 8]`` (``EmptyHunyuanLatentVideo``
    makes this shape), scaled by the VAE config's ``scaling_factor`` (2b 1.15258426,
    5b 0.7) and shifted by its ``shift_factor`` (none in CogVideoX) on the way into
    the model, as ComfyUI does for every model: ``z_model = (z - shift) * scale``.

Sampling (checked against diffusers' ``CogVideoXDDIMScheduler`` source)
    CogVideoX predicts v (Salimans & Ho, ICLR 2022, sec. 4). Its sigmas are those of
    :func:`kernels.cogvideox_schedule.schedule_sigmas` (the SNR-shifted, zero-terminal-SNR
    schedule; the equations are in that module), served by ComfyUI's
    ``ModelSamplingDiscrete`` + ``V_PREDICTION``. ComfyUI maps sigma to the nearest of
    the 1000 training sigmas and passes that index as the timestep, which is
    diffusers' integer timestep; the ``simple`` scheduler picks indices 999,
    999 - 1000/n, ..., which is diffusers' ``timestep_spacing="trailing"`` used by
    CogVideoX.
"""

from __future__ import annotations

import torch

import comfy.latent_formats
import comfy.model_sampling
import comfy.supported_models_base

from ...kernels.cogvideox_schedule import schedule_sigmas
from ..errors import InputError

SUPPORTED_DTYPES = [torch.bfloat16, torch.float16, torch.float32]
"""Weight / VAE dtypes CogVideoX runs in."""

BETA_SCHEDULES = {"scaled_linear": "linear", "linear": "sqrt_linear", "squaredcos_cap_v2": "squaredcos_cap_v2"}
"""diffusers' ``beta_schedule`` names -> ComfyUI's ``make_beta_schedule`` names (ComfyUI's "linear" is
diffusers' scaled_linear)."""


class CogVideoXSamplingV(comfy.model_sampling.ModelSamplingDiscrete, comfy.model_sampling.V_PREDICTION):
    """v-prediction over CogVideoX's SNR-shifted (zero-terminal-SNR) discrete schedule."""


class CogVideoXSamplingEps(comfy.model_sampling.ModelSamplingDiscrete, comfy.model_sampling.EPS):
    """The same schedule for an epsilon-predicting checkpoint."""


def build_model_sampling(model_config, scheduler_config: dict):
    """ComfyUI's model sampling of a diffusers scheduler config (its prediction type and sigmas)."""
    prediction = scheduler_config.get("prediction_type", "epsilon")
    if prediction not in ("v_prediction", "epsilon"):
        raise InputError("model_folder", f"has prediction_type '{prediction}' in scheduler/scheduler_config.json",
                         "use a v_prediction (CogVideoX) or epsilon scheduler config")
    try:
        sigmas = schedule_sigmas(scheduler_config)
    except ValueError as exc:
        raise InputError("model_folder", f"has a scheduler/scheduler_config.json this loader cannot reproduce ({exc})",
                         "use the scheduler_config.json of the original CogVideoX repository") from exc
    cls = CogVideoXSamplingV if prediction == "v_prediction" else CogVideoXSamplingEps
    sampling = cls(model_config)
    sampling.set_sigmas(sigmas)
    return sampling


def sampling_settings(scheduler_config: dict) -> dict:
    """``model_config.sampling_settings`` (ComfyUI's names) of a diffusers scheduler config."""
    return {"beta_schedule": BETA_SCHEDULES.get(scheduler_config.get("beta_schedule"), "linear"),
            "linear_start": float(scheduler_config.get("beta_start", 0.00085)),
            "linear_end": float(scheduler_config.get("beta_end", 0.012)),
            "timesteps": int(scheduler_config.get("num_train_timesteps", 1000))}


class CogVideoXLatent(comfy.latent_formats.LatentFormat):
    """CogVideoX's latent format: 16 channels, 3 latent dimensions, ``(z - shift) * scale`` into the model."""

    latent_channels = 16
    latent_dimensions = 3

    def __init__(self, scale_factor: float = 1.15258426, shift_factor: float | None = None):
        self.scale_factor = scale_factor
        self.shift_factor = shift_factor or 0.0

    def process_in(self, latent):
        return (latent - self.shift_factor) * self.scale_factor

    def process_out(self, latent):
        return latent / self.scale_factor + self.shift_factor


class CogVideoXConfig(comfy.supported_models_base.BASE):
    """The ``model_config`` ComfyUI's BaseModel needs; the network itself comes from diffusers."""

    unet_config = {}
    unet_extra_config = {}
    supported_inference_dtypes = SUPPORTED_DTYPES
    memory_usage_factor = 2.0
