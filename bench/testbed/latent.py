"""The test bed's exactly invertible pixel-space "latent", in place of a VAE.

Model space (what the diffusion model sees, unit variance per channel on the training
frames): pixels ``[T, 3, 32, 32]`` in [0, 1] are normalised per channel with the
training frames' mean and std, pixel-unshuffled 2x2 to 12 channels at 16x16, and padded
with 4 zero channels to Wan's 16; the clip's frames are the latent's time axis
(``[1, 16, T, 16, 16]``). Decoding drops the 4 padding channels and undoes the rest, so
``decode(encode(x)) == x`` up to float rounding.

The graph's LATENT (what VAE Encode would output) is the model-space tensor passed
through the model's latent format in reverse (``latent_format.process_out``), because
ComfyUI's samplers apply ``process_latent_in`` to a LATENT before the model sees it;
the graph's output LATENT is decoded with ``process_in`` first. Both directions are
the host's own ``comfy.latent_formats.Wan21`` methods.
"""

from __future__ import annotations

import torch

CHANNELS = 16
PIXEL_CHANNELS = 12


def to_model_space(pixels: torch.Tensor, mean, std) -> torch.Tensor:
    """``[T, 3, H, W]`` (or ``[B, T, 3, H, W]``) pixels in [0, 1] to ``[B, 16, T, H/2, W/2]`` model space."""
    batched = pixels if pixels.dim() == 5 else pixels[None]
    b, t, c, h, w = batched.shape
    m = torch.as_tensor(mean, dtype=batched.dtype).view(1, 1, 3, 1, 1)
    s = torch.as_tensor(std, dtype=batched.dtype).view(1, 1, 3, 1, 1)
    x = ((batched - m) / s).reshape(b * t, c, h, w)
    x = torch.nn.functional.pixel_unshuffle(x, 2)                        # [B*T, 12, H/2, W/2]
    x = torch.cat([x, x.new_zeros(b * t, CHANNELS - PIXEL_CHANNELS, h // 2, w // 2)], dim=1)
    return x.reshape(b, t, CHANNELS, h // 2, w // 2).permute(0, 2, 1, 3, 4).contiguous()


def from_model_space(z: torch.Tensor, mean, std) -> torch.Tensor:
    """The inverse of :func:`to_model_space`: ``[B, 16, T, h, w]`` to pixels ``[B, T, 3, 2h, 2w]`` (not clamped)."""
    b, _, t, h, w = z.shape
    x = z[:, :PIXEL_CHANNELS].permute(0, 2, 1, 3, 4).reshape(b * t, PIXEL_CHANNELS, h, w)
    x = torch.nn.functional.pixel_shuffle(x, 2).reshape(b, t, 3, 2 * h, 2 * w)
    m = torch.as_tensor(mean, dtype=z.dtype).view(1, 1, 3, 1, 1)
    s = torch.as_tensor(std, dtype=z.dtype).view(1, 1, 3, 1, 1)
    return x * s + m


def encode(pixels: torch.Tensor, mean, std, latent_format) -> dict:
    """Pixels to the LATENT a graph starts from (``{"samples": latent_format.process_out(model space)}``)."""
    return {"samples": latent_format.process_out(to_model_space(pixels, mean, std))}


def decode(latent: dict | torch.Tensor, mean, std, latent_format) -> torch.Tensor:
    """A graph's LATENT back to pixels ``[B, T, 3, H, W]`` (not clamped)."""
    samples = latent["samples"] if isinstance(latent, dict) else latent
    return from_model_space(latent_format.process_in(samples.float()), mean, std)
