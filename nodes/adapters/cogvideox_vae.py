"""CogVideoX's VAE as a ComfyUI ``VAE``: diffusers' ``AutoencoderKLCogVideoX`` behind ``comfy.sd.VAE``.

ComfyUI's ``comfy.sd.VAE`` recognises architectures from a state dict and knows
no CogVideoX VAE. :class:`CogVideoXVAE` is a subclass that sets the attributes
``VAE``'s methods read instead (compression 4x8x8 with a causal first frame:
``F`` frames <-> ``(F - 1) / 4 + 1`` latent frames; 16 channels; pixels in -1..1)
around diffusers' autoencoder, so the core ``VAEEncode`` / ``VAEDecode`` (their
tiled variants and out-of-memory fallback included) work unchanged. Encoding
returns the posterior mean (deterministic, as inversion wants).
"""

from __future__ import annotations

import math

import torch

import comfy.model_management as mm
import comfy.model_patcher
import comfy.sd

from .cogvideox_format import SUPPORTED_DTYPES


class _AutoencoderAdapter(torch.nn.Module):
    """What ``comfy.sd.VAE`` calls: encode(pixels -1..1 [B,3,F,H,W]) -> mean latent; decode(latent) -> pixels."""

    def __init__(self, autoencoder):
        super().__init__()
        self.autoencoder = autoencoder

    def encode(self, x):
        return self.autoencoder.encode(x).latent_dist.mode()

    def decode(self, z, **kwargs):
        return self.autoencoder.decode(z).sample


class CogVideoXVAE(comfy.sd.VAE):
    """A ComfyUI VAE around diffusers' ``AutoencoderKLCogVideoX`` (see the module doc)."""

    def __init__(self, autoencoder, device=None, dtype=None):
        # VAE.__init__ only detects architectures from a state dict; set what its methods read instead
        self.memory_used_encode = lambda shape, dtype: 8000 * shape[3] * shape[4] * mm.dtype_size(dtype)
        self.memory_used_decode = lambda shape, dtype: 12000 * shape[3] * shape[4] * 64 * mm.dtype_size(dtype)
        self.upscale_ratio = (lambda a: max(0, a * 4 - 3), 8, 8)
        self.upscale_index_formula = (4, 8, 8)
        self.downscale_ratio = (lambda a: max(0, math.floor((a + 3) / 4)), 8, 8)
        self.downscale_index_formula = (4, 8, 8)
        self.latent_channels = int(autoencoder.config.latent_channels)
        self.latent_dim = 3
        self.output_channels = 3
        self.process_input = lambda image: image * 2.0 - 1.0
        self.process_output = lambda image: torch.clamp((image + 1.0) / 2.0, min=0.0, max=1.0)
        self.working_dtypes = list(SUPPORTED_DTYPES)
        self.disable_offload = True  # diffusers' layers cannot be partially loaded
        self.not_video = False
        self.extra_1d_channel = None
        self.crop_input = True
        self.first_stage_model = _AutoencoderAdapter(autoencoder).eval()
        self.device = device if device is not None else mm.vae_device()
        self.vae_dtype = dtype if dtype is not None else mm.vae_dtype(self.device, self.working_dtypes)
        self.first_stage_model.to(self.vae_dtype)
        self.output_device = mm.intermediate_device()
        self.patcher = comfy.model_patcher.ModelPatcher(self.first_stage_model, load_device=self.device,
                                                        offload_device=mm.vae_offload_device())
