"""SD U-Net adapter (ComfyUI's ``UNetModel``: SD1.x, SD2.x, SDXL and their fine-tunes).

Image U-Nets denoise a video as a batch of frames. Their self-attention is
reached through ComfyUI's ``attn1_patch`` hook, which only the SD
``BasicTransformerBlock`` honours: ``p(n, context_attn1, value_attn1,
extra_options)`` receives the normalised hidden states ``n`` (the query input)
and returns the key and value inputs the block's ``attn1`` then projects.
``extra_options`` carries the U-Net position (``"block"`` = ("input" | "middle"
| "output", id), ``"block_index"`` within the transformer) and the batch layout
(``"cond_or_uncond"``, ``"context_window"``).

Video models are refused here by the callers that need a frames-as-batch
image U-Net: DiTs (Wan, HunyuanVideo, LTXV, Mochi, Cosmos, ...) and SVD's
temporal U-Net already attend across frames.
"""

from __future__ import annotations

from ...kernels.errors import InputError

GROUPS = ("input", "middle", "output")
SUPPORTED = "an image U-Net: SD1.5, SD2.x or SDXL (and their fine-tunes)"


def _unet_class():
    from comfy.ldm.modules.diffusionmodules.openaimodel import UNetModel

    return UNetModel


def _is_temporal_unet(diffusion_model) -> bool:
    from comfy.ldm.modules.attention import SpatialVideoTransformer

    if getattr(diffusion_model, "use_temporal_resblocks", False):
        return True
    return any(isinstance(m, SpatialVideoTransformer) for m in diffusion_model.modules())


class SDUNetAdapter:
    family = "SD1.5 / SD2.x / SDXL U-Net (UNetModel)"

    @staticmethod
    def matches(diffusion_model) -> bool:
        return isinstance(diffusion_model, _unet_class()) and not _is_temporal_unet(diffusion_model)

    @staticmethod
    def attention_blocks(model_patcher) -> dict[str, list[int]]:
        """For each U-Net block group, the block ids that hold self-attention (a SpatialTransformer)."""
        from comfy.ldm.modules.attention import SpatialTransformer

        unet = model_patcher.model.diffusion_model

        def has_attention(module) -> bool:
            return module is not None and any(isinstance(m, SpatialTransformer) for m in module.modules())

        return {
            "input": [i for i, b in enumerate(unet.input_blocks) if has_attention(b)],
            "middle": [0] if has_attention(getattr(unet, "middle_block", None)) else [],
            "output": [i for i, b in enumerate(unet.output_blocks) if has_attention(b)],
        }

    @staticmethod
    def block_counts(model_patcher) -> dict[str, int]:
        unet = model_patcher.model.diffusion_model
        return {"input": len(unet.input_blocks), "middle": 1 if getattr(unet, "middle_block", None) is not None else 0,
                "output": len(unet.output_blocks)}

    @staticmethod
    def install_attn1_patch(model_patcher, patch) -> None:
        """Add ``patch`` to the self-attention key/value inputs of every transformer block (a clone's)."""
        model_patcher.set_model_attn1_patch(patch)


def unet_adapter_for(model_patcher, purpose: str, input_name: str = "model") -> SDUNetAdapter:
    """The U-Net adapter, or an InputError that names what works (video models get their own message)."""
    base = getattr(model_patcher, "model", None)
    diffusion_model = getattr(base, "diffusion_model", None)
    if SDUNetAdapter.matches(diffusion_model):
        return SDUNetAdapter()
    name = f"{type(base).__name__} ({type(diffusion_model).__name__})"
    latent_format = getattr(base, "latent_format", None)
    is_video = getattr(latent_format, "latent_dimensions", 2) == 3
    if isinstance(diffusion_model, _unet_class()):  # SVD-style U-Net with temporal layers
        is_video = True
    if is_video:
        raise InputError(
            input_name,
            f"is a video model, {name}, which already attends across frames, so {purpose} is not needed "
            "(it is for image U-Nets that denoise a video as a batch of frames)",
            f"connect the video model straight to the sampler, or use {purpose} with {SUPPORTED}",
        )
    raise InputError(input_name, f"is a {name}, which {purpose} does not support",
                     f"use {SUPPORTED}; they are the models whose self-attention ComfyUI lets a node patch")
