"""``ZSVR_PadFrames`` and ``ZSVR_TrimPadding``: a whole clip through a ``4k+1`` model with every frame kept.

Thin nodes over ``kernels/frame_padding.py``: Pad Frames to Rule sits between Load Video and the VAE encoder
(the last frame repeated up to the rule's next count, and the count it started from as ``frame_count``), Trim
Padding after the VAE decoder (back to that count). Both report what they did as UI text (``ui.text``), which
the headless runner prints in its summary.
"""

from __future__ import annotations

from comfy_api.latest import io

from ..kernels import frame_padding, video_io
from .errors import kernel_inputs
from .types import CATEGORY


class PadFrames(io.ComfyNode):
    """Repeat the last frame up to the frame rule's next count; outputs the count before padding."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        # Input order is a public contract: append new inputs at the end, never reorder or rename.
        return io.Schema(
            node_id="ZSVR_PadFrames",
            display_name="Pad Frames to Rule (ZSVR)",
            category=f"{CATEGORY}/io",
            description=(
                "Pads a clip to the frame count a video model needs (4k+1 for Wan and CogVideoX) by repeating its "
                "last frame, so no frame of the clip is trimmed. Connect frame_count to Trim Padding after the VAE "
                "decoder: it cuts the repeated frames off again, and the video keeps every source frame."
            ),
            inputs=[
                io.Image.Input("images", tooltip="The clip's frames (Load Video with frame_rule any)."),
                io.Combo.Input(
                    "frame_rule", options=[r for r in video_io.FRAME_RULES if r != "any"], default="4k+1",
                    tooltip="Frame counts the model takes: 4k+1 (5, 9, ..., 49, ...: Wan, CogVideoX VAEs); "
                    "8k+1 (9, 17, ...: LTX-Video).",
                ),
            ],
            outputs=[
                io.Image.Output("padded", display_name="images", tooltip="The frames, padded to the rule."),
                io.Int.Output("frame_count", display_name="frame_count",
                              tooltip="The number of frames before padding: connect it to Trim Padding."),
            ],
        )

    @classmethod
    def execute(cls, images, frame_rule: str = "4k+1") -> io.NodeOutput:
        with kernel_inputs():
            padded, frames = frame_padding.pad_to_rule(images, frame_rule)
        added = int(padded.shape[0]) - frames
        text = (f"{frames} frames padded to {frames + added} for frame rule {frame_rule} ({added} copies of the "
                "last frame, cut off again by Trim Padding)") if added else \
            f"{frames} frames: already a {frame_rule} count, nothing padded"
        return io.NodeOutput(padded, frames, ui={"text": [text]})


class TrimPadding(io.ComfyNode):
    """Keep the first frame_count frames: the padding Pad Frames to Rule added is cut off after decoding."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        # Input order is a public contract: append new inputs at the end, never reorder or rename.
        return io.Schema(
            node_id="ZSVR_TrimPadding",
            display_name="Trim Padding (ZSVR)",
            category=f"{CATEGORY}/io",
            description=(
                "Cuts the frames Pad Frames to Rule added off the decoded video, so it has exactly the source's "
                "frame count. Fails (instead of repeating frames) when fewer frames come back than the source had."
            ),
            inputs=[
                io.Image.Input("images", tooltip="The decoded frames (VAE Decode output)."),
                io.Int.Input("frame_count", default=1, min=1, max=10_000_000, force_input=True,
                             tooltip="The frame count before padding: Pad Frames to Rule's frame_count."),
            ],
            outputs=[io.Image.Output("trimmed", display_name="images",
                                     tooltip="The first frame_count frames: the source's frames, restored.")],
        )

    @classmethod
    def execute(cls, images, frame_count: int) -> io.NodeOutput:
        with kernel_inputs():
            kept, removed = frame_padding.trim_padding(images, frame_count)
        text = (f"kept {frame_count} frames, cut off the {removed} padding frames at the end") if removed else \
            f"kept all {frame_count} frames (no padding)"
        return io.NodeOutput(kept, ui={"text": [text]})
