"""``ZSVR_ColorMatch``: give restored frames the colour of a reference video (the source), per ``kernels/color_match.py``.

Thin node: checks and maths live in the kernel; this module only declares the
inputs and translates kernel errors into input errors. The restored frames come
first so that bypassing the node (which passes its first IMAGE input through)
leaves the restored frames in place.
"""

from __future__ import annotations

from comfy_api.latest import io

from ..kernels import color_match
from .errors import kernel_inputs
from .shared_inputs import check_finite, validate_widgets
from .types import CATEGORY


class ColorMatch(io.ComfyNode):
    """Transfer a reference video's colour (low frequencies or Lab mean/std) to restored frames."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        # Input order is a public contract: append new inputs at the end, never reorder or rename.
        return io.Schema(
            node_id="ZSVR_ColorMatch",
            display_name="Color Match (ZSVR)",
            category=f"{CATEGORY}/io",
            description=(
                "Gives the restored frames the colours of the reference (connect the source frames from Load Video). "
                "low_frequency replaces the restored video's colour and shading at the scale of about 1/16 of the "
                "frame with the reference's and keeps all its detail; mean_std matches each frame's average colour "
                "and contrast only. Use it against the colour shift of a high editing strength and the colour "
                "jumps between chunks of a long clip. It also brings back large-scale haze or brightness the "
                "restoration removed: lower strength or use mean_std when that change is wanted."
            ),
            inputs=[
                io.Image.Input("image", tooltip="The restored frames (VAE Decode output) whose colour is corrected."),
                io.Image.Input(
                    "reference",
                    tooltip="The frames whose colour is kept: the source frames from Load Video (same count as "
                    "image, or one frame for all). Another size is resized to the image's.",
                ),
                io.Combo.Input(
                    "method", options=list(color_match.METHODS), default="low_frequency",
                    tooltip="low_frequency: take the reference's colour and shading at a coarse scale, keep the "
                    "image's detail (Lab). mean_std: match each frame's Lab mean and standard deviation (global).",
                ),
                io.Float.Input(
                    "strength", default=1.0, min=0.0, max=1.0, step=0.05,
                    tooltip="How much of the correction to apply: 0 = off (image unchanged), 1 = full.",
                ),
            ],
            outputs=[io.Image.Output("images", tooltip="The image with the reference's colour, float 0..1.")],
        )

    @classmethod
    def validate_inputs(cls, strength=None):
        """Before anything runs: strength is a finite number in 0..1."""
        return validate_widgets(cls, strength=strength)

    @classmethod
    def execute(cls, image, reference, method: str = "low_frequency", strength: float = 1.0) -> io.NodeOutput:
        check_finite(cls, strength=strength)
        with kernel_inputs():
            return io.NodeOutput(color_match.color_match(image, reference, method=method, strength=strength))
