"""``ZSVR_SLRTemporalAttention``: ZVRD's short-long-range temporal attention as a patched MODEL clone.

The node parses its inputs and installs the patch on a clone of the MODEL: the ``attn1_patch`` (cross-neighbour
attention, eq. 5) in every decoder self-attention layer, the ``attn1`` replace (trajectory attention, eq. 6-7) in
the largest decoder layers, the x0 capture (post-CFG) and the ``OUTER_SAMPLE`` wrapper. The patch itself, its
run state and the choices the paper leaves open are in ``nodes.engines.slr_temporal_attention``.
"""

from __future__ import annotations

import torch

import comfy.patcher_extension
from comfy_api.latest import io

from .errors import InputError
from .adapters import require
from .engines.slr_temporal_attention import SLRPatch
from .shared_inputs import (
    check_finite,
    check_frames_per_video,
    check_shot_cuts,
    frames_per_video_input,
    schedule_window,
    schedule_window_inputs,
    shot_cuts_input,
    validate_window_widgets,
    video_frames,
)
from .types import CATEGORY

PURPOSE = "SLR temporal attention"
WRAPPER_KEY = "zsvr_slr_temporal_attention"


def _latent_rgb(model_patcher):
    fmt = getattr(model_patcher.model, "latent_format", None)
    factors = getattr(fmt, "latent_rgb_factors", None)
    if not factors:
        return None
    bias = getattr(fmt, "latent_rgb_factors_bias", None)
    return (torch.tensor(factors, dtype=torch.float32),
            None if bias is None else torch.tensor(bias, dtype=torch.float32))


class SLRTemporalAttention(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="ZSVR_SLRTemporalAttention",
            display_name="SLR Temporal Attention (ZSVR)",
            category=f"{CATEGORY}/zvrd",
            description=(
                "ZVRD's short-long-range temporal attention for an image U-Net that denoises a video as a batch of "
                "frames: in the decoder's self-attention each frame attends to its previous and next frame "
                "(cross-neighbour attention), and, from trajectory_start on, the largest decoder layers attend "
                "along per-pixel motion trajectories chosen by optical flow, feature similarity or the previous "
                "step's choice, whichever matches best. Supported: SD1.5, SD2.x, SDXL."
            ),
            inputs=[
                io.Model.Input("model", tooltip="The image U-Net (SD1.5, SD2.x or SDXL) to patch; a patched copy "
                                                "is returned and the input model is left unchanged."),
                io.Float.Input("trajectory_start", default=0.5, min=0.0, max=1.0, step=0.01,
                               tooltip="T_TA: trajectory attention is on from this point of the schedule to the end "
                                       "(0 = every step, 0.5 = the second half, 1 = off; cross-neighbour attention "
                                       "runs at every step). The paper's T_TA is not published; 0.5 is our pick."),
                frames_per_video_input(),
                io.Image.Input("image", optional=True,
                               tooltip="Optional: the input video (one frame per latent frame). Its optical flow "
                                       "and 8x8 patches guide the trajectories. Without it they come from the "
                                       "model's own x0 prediction of the previous step."),
                *schedule_window_inputs("Apply SLR attention"),
                shot_cuts_input("attend to neighbour frames or follow trajectories"),
            ],
            outputs=[io.Model.Output(display_name="model")],
        )

    @classmethod
    def validate_inputs(cls, trajectory_start=None, start_percent=None, end_percent=None):
        """Before anything runs: trajectory_start and the window ends are finite numbers in their ranges, the ends in
        order."""
        return validate_window_widgets(cls, start_percent, end_percent, trajectory_start=trajectory_start)

    @classmethod
    def execute(cls, model, trajectory_start, frames_per_video, image=None, start_percent=0.0,
                end_percent=1.0, shot_cuts=None) -> io.NodeOutput:
        check_finite(cls, trajectory_start=trajectory_start, start_percent=start_percent, end_percent=end_percent)
        adapter = require(model, "self_attention_patch", PURPOSE)
        if not (0.0 <= trajectory_start <= 1.0):
            raise InputError("trajectory_start", f"is {trajectory_start}",
                             "use a fraction of the schedule between 0 (every step) and 1 (off)")
        check_frames_per_video(frames_per_video)
        gate = schedule_window(model, start_percent, end_percent)
        frames = None if image is None else video_frames(image, "image", rgb=True)
        layers = adapter.self_attention_layers(model)
        decoder = [layer for layer in layers if layer[0] == "output"]
        if not decoder:
            raise InputError("model", "has no self-attention in its decoder (output blocks)",
                             "use an SD1.5, SD2.x or SDXL U-Net")
        top = min(layer[3] for layer in decoder)
        trajectory_layers = [layer for layer in decoder if layer[3] == top]
        sampling = model.get_model_object("model_sampling")
        trajectory_sigma = None if trajectory_start >= 1.0 else float(sampling.percent_to_sigma(trajectory_start))
        patch = SLRPatch(frames_per_video, frozenset(layer[1] for layer in decoder),
                         gate=gate, trajectory_sigma=trajectory_sigma,
                         image=frames, latent_rgb=_latent_rgb(model), shot_cuts=check_shot_cuts(shot_cuts))
        patched = model.clone()
        adapter.install_attn1_patch(patched, patch)
        if trajectory_sigma is not None:
            for group, block_id, block_index, _ in trajectory_layers:
                adapter.install_attn1_replace(patched, patch.replace, group, block_id, block_index)
            if frames is None:
                patched.set_model_sampler_post_cfg_function(patch.capture_x0)
        patched.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.OUTER_SAMPLE, WRAPPER_KEY, patch.outer_sample)
        return io.NodeOutput(patched)
