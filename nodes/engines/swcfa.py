"""TDM's sliding-window cross-frame attention (eq. 7-9) as an ``attn1_patch``: the engine of ``ZSVR_SWCFA``.

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

from ...kernels import cross_frame_attention as cfa
from .. import run_state
from ..frame_layout import cached_plan, call_layout, check_core_sampler_windows, gated_frame_kv


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
        def make() -> cfa.WindowPlan:
            video, position, _ = self.frame_labels(rows, extra_options)
            return cfa.plan_windows(video, position, self.radius)

        return cached_plan(self._plans, rows, extra_options, device, make)

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
        # only key/value inputs laid out like the frames are averaged (a cross-attention context is not)
        patched = gated_frame_kv(n, context_attn1, value_attn1, extra_options, self.is_active, self.plan,
                                 cfa.apply_plan)
        return (n, context_attn1, value_attn1) if patched is None else patched
