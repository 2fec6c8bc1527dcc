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

from comfy_api.latest import io

from ..kernels import cross_frame_attention as cfa
from ..kernels.block_ranges import parse_blocks
from ..kernels.errors import InputError
from .adapters.sd_unet import GROUPS, unet_adapter_for
from .frame_layout import (
    FRAMES_PER_VIDEO_TOOLTIP,
    batch_layout,
    layout_key,
    map_frame_kv,
    schedule_gate,
    schedule_window_inputs,
)
from .types import CATEGORY

PURPOSE = "sliding-window cross-frame attention"
BLOCKS_HELP = ("write 'all', or a comma list of input, middle, output, each optionally with block ids like "
               "output:3-11 (ComfyUI's U-Net block numbering); leave it empty for none")


def parse_unet_blocks(text: str, counts: dict[str, int], with_attention: dict[str, list[int]],
                      input_name: str = "blocks") -> dict[str, frozenset[int]]:
    """The chosen U-Net blocks per group, keeping only blocks that have self-attention.

    ``"all"``: every self-attention block. ``"input,middle,output"`` / ``"output"``:
    whole groups. ``"output:3-11"`` / ``"input:4"``: ids of a group (one index or
    range per item). ``""``: none.
    """
    text = (text or "").strip().lower()
    if text == "":
        return {}
    if text == "all":
        return {g: frozenset(ids) for g, ids in with_attention.items() if ids}
    chosen: dict[str, set[int]] = {}
    for part in text.split(","):
        part = part.strip()
        if part == "":
            continue
        group, _, ids = (s.strip() for s in part.partition(":"))
        if group not in GROUPS:
            raise InputError(input_name, f"has '{part}', which is not a U-Net block group", BLOCKS_HELP)
        if ids == "":
            picked = with_attention[group]
        else:
            picked = parse_blocks(ids, counts[group], input_name=input_name)
        chosen.setdefault(group, set()).update(i for i in picked if i in with_attention[group])
    if not any(chosen.values()):
        where = "; ".join(f"{g} {', '.join(map(str, ids))}" for g, ids in with_attention.items() if ids)
        raise InputError(input_name, f"('{text}') selects no block with self-attention",
                         f"this model has self-attention in: {where}")
    return {g: frozenset(ids) for g, ids in chosen.items() if ids}


class SWCFAPatch:
    """The ``attn1_patch``: window-mean the key/value input of the chosen self-attention layers."""

    def __init__(self, radius: int, frames_per_video: int, blocks: dict[str, frozenset[int]], is_active=None):
        self.radius = int(radius)
        self.frames_per_video = int(frames_per_video)
        self.blocks = blocks
        self.is_active = is_active
        self._plans: dict[tuple, cfa.WindowPlan | None] = {}

    def frame_labels(self, rows: int, extra_options) -> tuple[list[int], list[int], tuple | None]:
        """``(video, position)`` of every attention row, and the context window's frames if one is in use."""
        layout = batch_layout(rows, extra_options, self.frames_per_video, who="ZSVR SW-CFA")
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
                io.Int.Input("frames_per_video", default=0, min=0, max=1_000_000,
                             tooltip=FRAMES_PER_VIDEO_TOOLTIP),
                io.String.Input("blocks", default="all",
                                tooltip="Which self-attention layers get the window: 'all', or a comma list of "
                                        "input, middle, output, each optionally with U-Net block ids like "
                                        "output:3-11 (blocks without attention are skipped). Empty = none."),
                *schedule_window_inputs("Apply"),
            ],
            outputs=[io.Model.Output(display_name="model")],
        )

    @classmethod
    def execute(cls, model, radius, frames_per_video, blocks, start_percent, end_percent) -> io.NodeOutput:
        adapter = unet_adapter_for(model, PURPOSE)
        if radius < 0:
            raise InputError("radius", f"is {radius}", "use 0 (off) or a positive window radius (TDM uses 3)")
        if frames_per_video < 0:
            raise InputError("frames_per_video", f"is {frames_per_video}",
                             "use 0 (the whole batch is one video) or the frame count of each video")
        if start_percent > end_percent:
            raise InputError("start_percent", f"({start_percent}) is after end_percent ({end_percent})",
                             "make start_percent at most end_percent")
        chosen = parse_unet_blocks(blocks, adapter.block_counts(model), adapter.attention_blocks(model))
        patched = model.clone()
        if radius > 0 and chosen:
            gate = schedule_gate(model, start_percent, end_percent)
            adapter.install_attn1_patch(patched, SWCFAPatch(radius, frames_per_video, chosen, gate))
        return io.NodeOutput(patched)
