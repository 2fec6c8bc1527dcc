"""SD U-Net adapter (ComfyUI's ``UNetModel``: SD1.x, SD2.x, SDXL and their fine-tunes).

Image U-Nets denoise a video as a batch of frames. Their self-attention is
reached through ComfyUI's ``attn1_patch`` hook, which only the SD
``BasicTransformerBlock`` honours: ``p(n, context_attn1, value_attn1,
extra_options)`` receives the normalised hidden states ``n`` (the query input)
and returns the key and value inputs the block's ``attn1`` then projects.
``extra_options`` carries the U-Net position (``"block"`` = ("input" | "middle"
| "output", id), ``"block_index"`` within the transformer) and the batch layout
(``"cond_or_uncond"``, ``"context_window"``).

Nodes reach it through the model-family registry
(``nodes.adapters.require(model, "self_attention_patch", purpose)``), which
refuses every other model; video models (Wan, HunyuanVideo, LTXV, Mochi,
Cosmos, ...: 3-d latents) get a message that they already attend across
frames. SVD's temporal U-Net is not matched (:meth:`SDUNetAdapter.matches`).
"""

from __future__ import annotations

from .capabilities import Capabilities


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
    capabilities = Capabilities(text_key_switch=False, frame_axis="batch", self_attention_patch=True,
                                latent_is_video=False, context_windows=True)
    pooled_text_encoder = None
    """None: no pooled text vector is checked for U-Net conditionings."""

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
    def self_attention_layers(model_patcher) -> list[tuple[str, int, int, int]]:
        """Every self-attention layer as ``(group, block id, block_index, level)``.

        ``block_index`` is the transformer block inside the block's
        SpatialTransformer (ComfyUI's ``extra_options["block_index"]``, the
        third item of an attn1 replace key); ``level`` is how many times the
        feature map has been halved there (0 = the latent's own resolution),
        counted from the U-Net's Downsample/Upsample layers, so the largest
        attention resolution is the smallest level present.
        """
        from comfy.ldm.modules.attention import SpatialTransformer
        from comfy.ldm.modules.diffusionmodules.openaimodel import Downsample, Upsample

        unet = model_patcher.model.diffusion_model
        layers: list[tuple[str, int, int, int]] = []

        def add(group, block_id, module, level):
            for st in (m for m in module.modules() if isinstance(m, SpatialTransformer)):
                for index, tb in enumerate(st.transformer_blocks):
                    if not getattr(tb, "disable_self_attn", False):
                        layers.append((group, block_id, index, level))
                break  # one SpatialTransformer per U-Net block

        level = 0
        for i, block in enumerate(unet.input_blocks):
            add("input", i, block, level)
            level += sum(isinstance(m, Downsample) for m in block.modules())
        middle = getattr(unet, "middle_block", None)
        if middle is not None:
            add("middle", 0, middle, level)
        for i, block in enumerate(unet.output_blocks):
            add("output", i, block, level)
            level -= sum(isinstance(m, Upsample) for m in block.modules())
        return layers

    @staticmethod
    def install_attn1_patch(model_patcher, patch) -> None:
        """Add ``patch`` to the self-attention key/value inputs of every transformer block (a clone's)."""
        model_patcher.set_model_attn1_patch(patch)

    @staticmethod
    def install_attn1_replace(model_patcher, replace, group: str, block_id: int, block_index: int) -> None:
        """Make ``replace(q, k, v, extra_options)`` compute one self-attention layer (a clone's).

        ComfyUI projects q, k, v itself, calls ``replace`` and applies ``to_out`` to its result.
        """
        model_patcher.set_model_attn1_replace(replace, group, block_id, block_index)
