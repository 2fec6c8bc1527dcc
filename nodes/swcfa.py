"""``ZSVR_SWCFA``: TDM's sliding-window cross-frame attention as a patched MODEL clone.

TDM eq. 7-9: in the U-Net's self-attention, frame ``i``'s keys and values
become the mean of frames ``i-r..i+r`` of its video (clipped at the video's
ends, frame ``i`` included); the query stays the frame's own::

    K_bar_i = mean_{j in W(i)} K_j,  V_bar_i = mean_{j in W(i)} V_j,
    out_i = softmax(Q_i K_bar_i^T / sqrt(d)) V_bar_i.

Because ``K = to_k(h)`` and ``V = to_v(h)`` are affine in the attention's input
``h`` and the window weights sum to 1, ``K_bar_i = to_k(mean_{W(i)} h_j)`` (and
likewise ``V``). The patch is therefore an ``attn1_patch`` that hands the
attention the window mean of its key/value input (one cumulative sum over the
frame axis, ``kernels.cross_frame_attention``) and leaves the query and the
attention call itself untouched: eq. 7-9 exactly, at the cost and with the
backend of plain self-attention.

Which batch rows are which frames is read at every call, never assumed: the
rows are ``len(extra_options["cond_or_uncond"])`` chunks (cond/uncond, batched
or run separately), each chunk is the latent batch, ``frames_per_video`` splits
a chunk into videos, and under core context windows (dim 0) the chunk's rows
are the frames ``transformer_options["context_window"].index_list``.
"""

from __future__ import annotations

import comfy.patcher_extension
from comfy_api.latest import io

from ..kernels import cross_frame_attention as cfa
from ..kernels.errors import InputError
from ..kernels.unet_blocks import check_unet_block_syntax, parse_unet_blocks
from . import run_state
from .adapters import require
from .errors import kernel_inputs
from .frame_layout import call_layout, check_core_sampler_windows, layout_key, map_frame_kv
from .shared_inputs import (
    blocks_check,
    check_finite,
    check_frames_per_video,
    frames_per_video_input,
    schedule_window,
    schedule_window_inputs,
    validate_widgets,
    window_check,
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


class SWCFAPatch(run_state.Config):
    """The ``attn1_patch``: window-mean the key/value input of the chosen self-attention layers.

    Configuration only (no run state), shared by every clone of the patched MODEL; the per-layout plans are a
    cache of it."""

    def __init__(self, radius: int, frames_per_video: int, blocks: dict[str, frozenset[int]], is_active=None):
        self.radius = int(radius)
        self.frames_per_video = int(frames_per_video)
        self.blocks = blocks
        self.is_active = is_active
        self._plans: dict[tuple, cfa.WindowPlan | None] = {}

    def frame_labels(self, rows: int, extra_options) -> tuple[list[int], list[int], tuple | None]:
        """``(video, position)`` of every attention row, and the context window's frames if one is in use."""
        layout = call_layout(rows, extra_options, self.frames_per_video, who="ZSVR SW-CFA")
        return layout.video, layout.position, layout.window

    def plan(self, rows: int, extra_options, device) -> cfa.WindowPlan | None:
        key = layout_key(rows, extra_options, device)
        if key not in self._plans:
            video, position, _ = self.frame_labels(rows, extra_options)
            plan = cfa.plan_windows(video, position, self.radius)
            if len(self._plans) > 64:
                self._plans.clear()
            self._plans[key] = None if plan.is_identity else plan.to(device)
        return self._plans[key]

    def outer_sample(self, executor, *args, **kwargs):
        """OUTER_SAMPLE wrapper: a run the host's context handler cannot sample is refused before any step."""
        check_core_sampler_windows(kwargs.get("sampler", args[2] if len(args) > 2 else None),
                                   run_state.run_options(executor),
                                   kwargs.get("latent_image", args[1] if len(args) > 1 else None),
                                   kwargs.get("sigmas", args[3] if len(args) > 3 else None), "ZSVR SW-CFA")
        return executor(*args, **kwargs)

    def __call__(self, n, context_attn1, value_attn1, extra_options):
        block = extra_options.get("block")
        if self.radius == 0 or block is None or block[1] not in self.blocks.get(block[0], ()):
            return n, context_attn1, value_attn1
        if self.is_active is not None and not self.is_active(extra_options):
            return n, context_attn1, value_attn1
        rows = n.shape[0]
        plan = self.plan(rows, extra_options, n.device)
        if plan is None:
            return n, context_attn1, value_attn1
        # only key/value inputs laid out like the frames are averaged (a cross-attention context is not)
        context, value = map_frame_kv(context_attn1, value_attn1, rows,
                                      lambda h: cfa.apply_plan(h, plan))
        return n, context, value


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
        return validate_widgets(cls, window_check(start_percent, end_percent), blocks_check(blocks, check_unet_block_syntax),
                                start_percent=start_percent, end_percent=end_percent)

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
