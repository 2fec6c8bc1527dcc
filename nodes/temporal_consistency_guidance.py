"""``ZSVR_TemporalConsistencyGuidance``: ZVRD's temporal consistency guidance (pixel term) as a patched MODEL clone.

The node checks its inputs and installs the guidance on a clone of the MODEL: a post-CFG function, the
``OUTER_SAMPLE`` wrapper and, in mode "through model", the weight copies. The patch, how it hooks in, its flow
cache and run state are in ``nodes.engines.temporal_consistency_guidance``.
"""

from __future__ import annotations

import comfy.patcher_extension
from comfy_api.latest import io

from .errors import InputError
from .adapters import frame_axis, model_name
from .engines.temporal_consistency_guidance import WORKS_WITH, TCGPatch, install_weight_copies
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

MODES = ("x0", "through model")
WRAPPER_KEY = "zsvr_temporal_consistency_guidance"


def check_model(model_patcher) -> None:
    """The guidance compares frames along the latent's batch: the registry must say the frames are there."""
    latent_format = getattr(getattr(model_patcher, "model", None), "latent_format", None)
    dims = getattr(latent_format, "latent_dimensions", None)
    if frame_axis(model_patcher) != "batch" or dims != 2:
        kind = "a video model" if frame_axis(model_patcher) == "time" else "not an image model"
        raise InputError("model", f"is {kind}, {model_name(model_patcher)}, whose frames are not the batch of "
                         "its latent", f"use {WORKS_WITH}")


class TemporalConsistencyGuidance(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="ZSVR_TemporalConsistencyGuidance",
            display_name="Temporal Consistency Guidance (ZSVR)",
            category=f"{CATEGORY}/zvrd",
            description=(
                "ZVRD's temporal consistency guidance for an image model that denoises a video as a batch of "
                "frames: at every step the clean prediction is moved to reduce the difference between each frame "
                "and the previous frame carried along the input video's optical flow (occluded pixels excluded). "
                "Pixel term only (measured on the latent); ZVRD's CLIP feature term is not included, because its "
                "weights are not available offline (the code leaves a seam for it). Mode 'x0' is cheap; 'through "
                "model' back-propagates through the model (about 4x the compute and much more memory per step)."
            ),
            inputs=[
                io.Model.Input("model", tooltip="The image model (SD1.5, SD2.x, SDXL, ...) that samples the frames "
                                                "as a batch; a patched copy is returned, the input is unchanged."),
                io.Image.Input("image", tooltip="The input video, one frame per latent frame: the optical flow and "
                                                "occlusion masks between its consecutive frames say which latent "
                                                "pixels must agree. Estimated once (OpenCV DIS) and cached."),
                io.Float.Input("weight", default=0.1, min=0.0, max=2.0, step=0.01,
                               tooltip="Step size of the guidance on the clean prediction (0 = off, the unpatched "
                                       "model exactly). The loss is half the squared difference, so 0.5 makes an "
                                       "isolated pair of frames agree in one step; keep it below 0.5 in mode x0. "
                                       "The paper's value is not published; 0.1 is our pick."),
                io.Combo.Input("mode", options=list(MODES), default="x0",
                               tooltip="x0: gradient with respect to the clean prediction (cheap, no model "
                                       "backward). through model: DPS-style gradient with respect to the noisy "
                                       "input through the model (one extra forward and backward per step, about "
                                       "4x the compute and training-like memory; not with a ControlNet)."),
                frames_per_video_input(),
                *schedule_window_inputs("Guide"),
                shot_cuts_input("compare a frame with the warped previous frame"),
            ],
            outputs=[io.Model.Output(display_name="model")],
        )

    @classmethod
    def validate_inputs(cls, weight=None, start_percent=None, end_percent=None):
        """Before anything runs: weight and the window ends are finite numbers in their ranges, the ends in
        order."""
        return validate_window_widgets(cls, start_percent, end_percent, weight=weight)

    @classmethod
    def execute(cls, model, image, weight, mode, frames_per_video, start_percent=0.0,
                end_percent=1.0, shot_cuts=None) -> io.NodeOutput:
        check_finite(cls, weight=weight, start_percent=start_percent, end_percent=end_percent)
        check_model(model)
        if not (isinstance(weight, (int, float)) and weight >= 0.0 and weight == weight):
            raise InputError("weight", f"is {weight!r}", "use 0 (off) or a positive step size, e.g. 0.1")
        if mode not in MODES:
            raise InputError("mode", f"is {mode!r}", f"use one of: {', '.join(MODES)}")
        check_frames_per_video(frames_per_video)
        gate = schedule_window(model, start_percent, end_percent)
        frames = video_frames(image, "image")
        cuts = check_shot_cuts(shot_cuts)
        patched = model.clone()
        if weight == 0.0:
            return io.NodeOutput(patched)  # off: nothing installed, so sampling equals the unpatched model exactly
        patch = TCGPatch(frames, weight, mode, frames_per_video, gate=gate, shot_cuts=cuts)
        patched.set_model_sampler_post_cfg_function(patch.post_cfg)
        patched.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.OUTER_SAMPLE, WRAPPER_KEY, patch.outer_sample)
        if mode == "through model":
            install_weight_copies(patched)
        return io.NodeOutput(patched)
