"""``ZSVR_SWCFA``: TDM's sliding-window cross-frame attention as a patched MODEL clone.

The node parses its inputs (the radius, the block selection) and installs the ``attn1_patch`` and its
``OUTER_SAMPLE`` check on a clone of the MODEL; the patch (TDM eq. 7-9) is ``nodes.engines.swcfa``.
"""

from __future__ import annotations

import comfy.patcher_extension
from comfy_api.latest import io

from .errors import InputError
from ..kernels.unet_blocks import check_unet_block_syntax, parse_unet_blocks
from .adapters import require
from .engines.swcfa import SWCFAPatch
from .errors import kernel_inputs
from .shared_inputs import (
    blocks_check,
    check_finite,
    check_frames_per_video,
    frames_per_video_input,
    schedule_window,
    schedule_window_inputs,
    validate_window_widgets,
)
from .types import CATEGORY

PURPOSE = "sliding-window cross-frame attention"
WRAPPER_KEY = "zsvr_swcfa"


def chosen_blocks(blocks: str, counts: dict[str, int], with_attention: dict[str, list[int]]) -> dict[str, frozenset]:
    """The ``blocks`` input parsed (``kernels.unet_blocks``), as the node input's errors."""
    with kernel_inputs(text="blocks"):
        chosen = parse_unet_blocks(blocks, counts, with_attention)
    if not chosen and (blocks or "").strip().lower() not in ("", "all"):
        where = "; ".join(f"{g} {', '.join(map(str, ids))}" for g, ids in with_attention.items() if ids)
        raise InputError("blocks", f"('{blocks.strip().lower()}') selects no block with self-attention",
                         f"this model has self-attention in: {where}")
    return chosen

class SWCFA(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="ZSVR_SWCFA",
            display_name="Sliding-Window Cross-Frame Attention (ZSVR)",
            category=f"{CATEGORY}/tdm",
            description=(
                "TDM's sliding-window cross-frame attention: in an image U-Net that denoises a video as a batch "
                "of frames, each frame's self-attention keys and values become the mean over its neighbouring "
                "frames (the query stays the frame's own), for temporally consistent results. Same speed as "
                "plain attention. Supported: SD1.5, SD2.x, SDXL. Video models (Wan, HunyuanVideo, ...) already "
                "attend across frames and do not need it."
            ),
            inputs=[
                io.Model.Input("model", tooltip="The image U-Net (SD1.5, SD2.x or SDXL) to patch; a patched copy "
                                                "is returned and the input model is left unchanged."),
                io.Int.Input("radius", default=3, min=0, max=4096,
                             tooltip="Window radius r: frame i attends to the mean keys/values of frames i-r..i+r "
                                     "of its video (TDM uses 3). Windows are clipped at the video's ends, so a "
                                     "radius larger than the video simply means the whole video. 0 = off."),
                frames_per_video_input(),
                io.String.Input("blocks", default="all",
                                tooltip="Which self-attention layers get the window: 'all', or a comma list of "
                                        "input, middle, output, each optionally with U-Net block ids like "
                                        "output:3-11 (blocks without attention are skipped). Empty = none."),
                *schedule_window_inputs("Apply"),
            ],
            outputs=[io.Model.Output(display_name="model")],
        )

    @classmethod
    def validate_inputs(cls, blocks=None, start_percent=None, end_percent=None):
        """Before anything runs: finite window ends in order, and a block selection that parses (whether its ids
        exist needs the model, so that is checked when the node runs)."""
        return validate_window_widgets(cls, start_percent, end_percent, blocks_check(blocks, check_unet_block_syntax))

    @classmethod
    def execute(cls, model, radius, frames_per_video, blocks, start_percent, end_percent) -> io.NodeOutput:
        check_finite(cls, start_percent=start_percent, end_percent=end_percent)
        adapter = require(model, "self_attention_patch", PURPOSE)
        if radius < 0:
            raise InputError("radius", f"is {radius}", "use 0 (off) or a positive window radius (TDM uses 3)")
        check_frames_per_video(frames_per_video)
        gate = schedule_window(model, start_percent, end_percent)
        chosen = chosen_blocks(blocks, adapter.block_counts(model), adapter.attention_blocks(model))
        patched = model.clone()
        if radius > 0 and chosen:
            patch = SWCFAPatch(radius, frames_per_video, chosen, gate)
            adapter.install_attn1_patch(patched, patch)
            patched.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.OUTER_SAMPLE, WRAPPER_KEY,
                                         patch.outer_sample)
        return io.NodeOutput(patched)
