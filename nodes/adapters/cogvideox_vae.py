"""CogVideoX's VAE as a ComfyUI ``VAE``: diffusers' ``AutoencoderKLCogVideoX`` behind ``comfy.sd.VAE``.

ComfyUI's ``comfy.sd.VAE`` recognises architectures from a state dict and knows
no CogVideoX VAE. :class:`CogVideoXVAE` is a subclass that sets the attributes
``VAE``'s methods read instead (compression 4x8x8 with a causal first frame:
``F`` frames <-> ``(F - 1) / 4 + 1`` latent frames; 16 channels; pixels in -1..1)
around diffusers' autoencoder, so the core ``VAEEncode`` / ``VAEDecode`` (their
tiled variants and out-of-memory fallback included) work unchanged. Encoding
returns the posterior mean (deterministic, as inversion wants).

Progress and interrupt: a long clip's encode or decode can take longer than
the edit, and ComfyUI's plain VAE pass reports no progress for a video VAE.
diffusers' autoencoder codes a clip in frame chunks (8 frames per encoder
call, 2 latent frames per decoder call, ``num_*_frames_batch_size``), each
chunk one call of its ``encoder`` / ``decoder`` module; for the duration of a
pass the adapter hooks those calls: before each chunk it asks ComfyUI whether
the user interrupted (``throw_exception_if_processing_interrupted``), after
each it advances one ``comfy.utils.ProgressBar`` (shown on the running node,
e.g. the core VAE Encode, in the page). Core's tiled passes (VAE Encode/Decode
(Tiled) and the out-of-memory fallback) call the adapter once per tile; there
one bar spans every chunk of every tile (:meth:`CogVideoXVAE.encode_tiled_3d`).
"""

from __future__ import annotations

import contextlib
import inspect
import math

import torch

import comfy.model_management as mm
import comfy.model_patcher
import comfy.sd
import comfy.utils

from .cogvideox_format import SUPPORTED_DTYPES


class _ChunkProgress:
    """One progress bar over a pass's frame-chunk calls, with an interrupt check before each chunk."""

    def __init__(self, total: int):
        self.total = max(1, int(total))
        self.done = 0
        self.bar = comfy.utils.ProgressBar(self.total)

    def before_chunk(self, module, args):
        mm.throw_exception_if_processing_interrupted()

    def after_chunk(self, module, args, output):
        self.done += 1
        self.total = max(self.total, self.done)  # a count that fell short (e.g. diffusers' own tiling) only grows
        self.bar.update_absolute(self.done, self.total)


def chunk_calls(frames: int, batch: int, frames_per_chunk: int, sliced: bool) -> int:
    """Calls of diffusers' CogVideoX encoder (or decoder) for one pass over ``frames`` frames: one per
    ``frames_per_chunk`` frames (the remainder joins the first chunk; at least one), per batch item when the
    autoencoder slices the batch."""
    return (batch if sliced and batch > 1 else 1) * max(frames // frames_per_chunk, 1)


def tile_lengths(size: int, tile: int, overlap: int) -> list[int]:
    """The lengths along one axis of the tiles ComfyUI's ``tiled_scale_multidim`` cuts an axis of ``size`` into
    (tiles start every ``tile - overlap``; the last ones are clamped to the end)."""
    if size <= tile:
        return [size]
    return [min(tile, size - max(0, min(size - overlap, start))) for start in range(0, size - overlap, tile - overlap)]


class _AutoencoderAdapter(torch.nn.Module):
    """What ``comfy.sd.VAE`` calls: encode(pixels -1..1 [B,3,F,H,W]) -> mean latent; decode(latent) -> pixels."""

    def __init__(self, autoencoder):
        super().__init__()
        self.autoencoder = autoencoder
        self.run: _ChunkProgress | None = None  # a tiled pass's bar, shared by its per-tile calls

    def chunks(self, x: torch.Tensor, decode: bool) -> int:
        """Encoder (or decoder) calls for a pass over ``x`` ``[B, C, F, H, W]``."""
        ae = self.autoencoder
        per_chunk = ae.num_latent_frames_batch_size if decode else ae.num_sample_frames_batch_size
        return chunk_calls(x.shape[2], x.shape[0], per_chunk, bool(getattr(ae, "use_slicing", False)))

    @contextlib.contextmanager
    def _watched(self, module: torch.nn.Module, x: torch.Tensor, decode: bool):
        progress = self.run if self.run is not None else _ChunkProgress(self.chunks(x, decode))
        handles = (module.register_forward_pre_hook(progress.before_chunk),
                   module.register_forward_hook(progress.after_chunk))
        try:
            yield
        finally:
            for handle in handles:
                handle.remove()

    def encode(self, x):
        with self._watched(self.autoencoder.encoder, x, decode=False):
            return self.autoencoder.encode(x).latent_dist.mode()

    def decode(self, z, **kwargs):
        with self._watched(self.autoencoder.decoder, z, decode=True):
            return self.autoencoder.decode(z).sample

    @contextlib.contextmanager
    def tiled_pass(self, x: torch.Tensor, tile, overlap, decode: bool):
        """One bar over every chunk of every tile of a core tiled pass over ``x`` (tile and overlap per axis, as
        ComfyUI's ``tiled_scale_multidim`` takes them)."""
        per_chunk = self.autoencoder.num_latent_frames_batch_size if decode else \
            self.autoencoder.num_sample_frames_batch_size
        overlap = overlap if isinstance(overlap, (tuple, list)) else [overlap] * len(tile)
        frames, *space = [tile_lengths(n, t, o) for n, t, o in zip(x.shape[2:], tile, overlap)]
        spatial = 1
        for lengths in space:
            spatial *= len(lengths)
        total = x.shape[0] * spatial * sum(max(f // per_chunk, 1) for f in frames)
        self.run = _ChunkProgress(total)
        try:
            yield
        finally:
            self.run = None


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

    def _tiled(self, method, samples, args, kwargs, decode: bool):
        """Run core's tiled pass ``method`` with one progress bar over all its tiles (its own defaults for the
        tile sizes it was not given, read from its signature)."""
        bound = inspect.signature(method).bind(samples, *args, **kwargs)
        bound.apply_defaults()
        given = bound.arguments
        tile = (given["tile_t"], given["tile_x"], given["tile_y"])
        with self.first_stage_model.tiled_pass(samples, tile, given["overlap"], decode):
            return method(samples, *args, **kwargs)

    def encode_tiled_3d(self, samples, *args, **kwargs):
        """Core's 3-D tiled encode (VAE Encode (Tiled), the out-of-memory fallback) with one bar over all tiles."""
        return self._tiled(super().encode_tiled_3d, samples, args, kwargs, decode=False)

    def decode_tiled_3d(self, samples, *args, **kwargs):
        """Core's 3-D tiled decode (VAE Decode (Tiled), the out-of-memory fallback) with one bar over all tiles."""
        return self._tiled(super().decode_tiled_3d, samples, args, kwargs, decode=True)
