"""``ZSVR_LoadVideo``: a video file to IMAGE frames, fps, frame count, AUDIO and shot cuts (docs/nodes.md).

The node only parses inputs, wires ComfyUI's progress bar and interrupt check
into the kernel's per-frame callback, and wraps the outputs; decoding, resizing,
the frame rule, the memory guard and every input check live in
``kernels/video_io.py``; the shot cuts (where the loaded frames change shot) are
``kernels/shot_cuts.py``'s rule on the loaded frames.
"""

from __future__ import annotations

import logging
import os

import folder_paths
from comfy_api.latest import io

from ..kernels import shot_cuts as sc
from ..kernels import video_io
from .errors import InputError
from . import example_media
from .errors import kernel_inputs
from .host import progress_step
from .shared_inputs import check_finite, validate_widgets
from .types import CATEGORY, ShotCuts

log = logging.getLogger("zsvr")


def _video_files() -> list[str]:
    input_dir = folder_paths.get_input_directory()
    try:
        names = os.listdir(input_dir)
    except OSError:
        return []
    files = [f for f in names if os.path.isfile(os.path.join(input_dir, f))]
    return sorted(folder_paths.filter_files_content_types(files, ["video"]))


def frames_note(result: video_io.LoadedVideo, start_frame: int, every_nth: int, frame_rule: str) -> str:
    """What the node loaded, for its UI text (the headless runner prints it): the source frames it kept, and how
    many the frame rule trimmed (and which) or padded."""
    selected = result.selected if result.selected is not None else result.frame_count
    count = result.frame_count

    def source(i: int) -> int:
        return start_frame + i * every_nth

    kept = min(count, selected)
    note = f"loaded {count} frames (source frames {source(0)}-{source(kept - 1)}"
    note += f", every {every_nth})" if every_nth > 1 else ")"
    if count < selected:
        cut = selected - count
        note += (f"; frame_rule {frame_rule} trimmed the last {cut} of the {selected} selected frames (source "
                 f"frames {source(count)}-{source(selected - 1)}): to keep them, turn on pad_frames or use "
                 "Pad Frames to Rule + Trim Padding")
    elif count > selected:
        note += f"; pad_frames added {count - selected} copies of the last frame for frame_rule {frame_rule}"
    return note


def find_shot_cuts(images, threshold: float, step=None) -> sc.ShotCuts:
    """The loaded frames' shot cuts (``kernels.shot_cuts``): one signature per frame, then the cut rule; 0 = off
    (one shot). ``step(i, total)`` is called after each frame (progress and interrupt)."""
    frames = int(images.shape[0])
    if threshold <= 0.0 or frames < 2:
        return sc.ShotCuts((), frames)
    signatures = []
    for i in range(frames):
        signatures.append(sc.frame_signature(images[i]))
        if step is not None:
            step(i + 1, frames)
    with kernel_inputs(threshold="shot_threshold"):
        return sc.ShotCuts(tuple(sc.cuts_from_signatures(signatures, threshold)), frames)


def shots_note(cuts: sc.ShotCuts, threshold: float) -> str:
    """The loader's UI text on shots: how many it found and where (its second line)."""
    if threshold <= 0.0:
        return "shot cuts off (shot_threshold 0): the clip counts as one shot"
    if not cuts.cuts:
        return f"1 shot (no cut found at shot_threshold {threshold:g})"
    shown = ", ".join(str(c) for c in cuts.cuts[:20]) + (", ..." if len(cuts.cuts) > 20 else "")
    return (f"{cuts.shots} shots: cuts at frames {shown} (shot_threshold {threshold:g}); connect shot_cuts to the "
            "flow-based nodes so they do not blend across them")


class LoadVideo(io.ComfyNode):
    """Load a video from the input folder (or an upload) as ComfyUI IMAGE frames."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        # Input order is a public contract (saved workflows store widget values
        # by position): append new inputs at the end, never reorder or rename.
        return io.Schema(
            node_id="ZSVR_LoadVideo",
            display_name="Load Video (ZSVR)",
            category=f"{CATEGORY}/io",
            description=(
                "Decodes a video with PyAV, streaming: only the selected frames are kept, each resized as it "
                "is decoded; a start_frame past the beginning seeks to the keyframe before it instead of decoding "
                "everything before it. Outputs IMAGE [frames, height, width, 3] in 0..1, the fps, the frame count, "
                "the sound of the selected span (AUDIO) and where the shots change (shot_cuts: hard cuts found in "
                "the loaded frames, see shot_threshold)."
            ),
            inputs=[
                io.Combo.Input(
                    "video",
                    options=example_media.with_examples(_video_files()),
                    upload=io.UploadType.video,
                    tooltip="Video file from ComfyUI's input folder; use the upload button to add one. "
                    f"{example_media.EXAMPLE_VIDEO} is the pack's example clip (read from the pack's folder).",
                ),
                io.Int.Input(
                    "start_frame", default=0, min=0, max=1_000_000, step=1,
                    tooltip="First source frame to use (0 = the first frame).",
                ),
                io.Int.Input(
                    "frame_cap", default=0, min=0, max=1_000_000, step=1,
                    tooltip="Most frames to output before the frame rule is applied; 0 = all frames. "
                    "Decoding stops once enough frames are read.",
                ),
                io.Int.Input(
                    "every_nth", default=1, min=1, max=1000, step=1,
                    tooltip="Use every n-th source frame (1 = every frame). The output fps is the source fps divided by n.",
                ),
                io.Int.Input(
                    "width", default=0, min=0, max=16384, step=8,
                    tooltip="Output width in pixels; 0 = from the source (keeps the aspect ratio when height is set). "
                    "Must be a multiple of size_multiple.",
                ),
                io.Int.Input(
                    "height", default=0, min=0, max=16384, step=8,
                    tooltip="Output height in pixels; 0 = from the source (keeps the aspect ratio when width is set). "
                    "Must be a multiple of size_multiple.",
                ),
                io.Combo.Input(
                    "fit", options=list(video_io.FIT_MODES), default="crop",
                    tooltip="How to reach the output size when the aspect ratio differs: crop = scale to cover, "
                    "then cut the centre; pad = scale to fit, then add black bars; stretch = distort.",
                ),
                io.Combo.Input(
                    "frame_rule", options=list(video_io.FRAME_RULES), default="any",
                    tooltip="Frame count the output must have: any; 4k+1 (5, 9, ..., 49: Wan, CogVideoX VAEs); "
                    "8k+1 (9, 17, ...: LTX-Video). Extra frames are trimmed from the end.",
                ),
                io.Int.Input(
                    "size_multiple", default=8, min=1, max=256, step=1,
                    tooltip="Pixel grid the model needs: width and height must be multiples of it "
                    "(8 for SD-style VAEs, 16 for Wan and CogVideoX). Sizes from the source are rounded to it.",
                ),
                io.Boolean.Input(
                    "best_effort", default=False,
                    tooltip="If the file is corrupt or truncated part-way, use the frames decoded before the damage "
                    "instead of failing.",
                ),
                io.Boolean.Input(
                    "pad_frames", default=False,
                    tooltip="For the frame rule, repeat the last frame up to the next valid count instead of trimming "
                    "(adds frames that are not in the video).",
                ),
                io.Float.Input(
                    "shot_threshold", default=sc.DEFAULT_THRESHOLD, min=0.0, max=1.0, step=0.01, optional=True,
                    tooltip="How different two consecutive frames must be, compared with the frames around them, "
                    "to count as a cut to a new shot (0..1; higher finds fewer cuts; 0 = off, one shot). Found on "
                    "the loaded frames; fades and dissolves are not found, a flash of one or two frames is not a cut.",
                ),
            ],
            outputs=[
                io.Image.Output("images", tooltip="Frames as IMAGE [frames, height, width, 3], float 0..1."),
                io.Float.Output("fps", display_name="fps", tooltip="Frame rate of the output: source fps / every_nth."),
                io.Int.Output("frame_count", display_name="frame_count", tooltip="Number of output frames."),
                io.Audio.Output(
                    "audio",
                    tooltip="The file's sound under the selected frames (from the first selected frame, for the "
                    "output's duration), as ComfyUI AUDIO; empty (None) when the file has no audio track or it "
                    "cannot be decoded (a warning says so; the frames still load).",
                ),
                ShotCuts.Output(
                    "shot_cuts", display_name="shot_cuts",
                    tooltip="Where the shots change in the loaded frames (after start_frame, frame_cap, every_nth "
                    "and padding): connect it to Noise Sharing, SLR Temporal Attention or Temporal Consistency "
                    "Guidance so they treat each shot as a video of its own.",
                ),
            ],
        )

    @classmethod
    def execute(
        cls,
        video: str,
        start_frame: int = 0,
        frame_cap: int = 0,
        every_nth: int = 1,
        width: int = 0,
        height: int = 0,
        fit: str = "crop",
        frame_rule: str = "any",
        size_multiple: int = 8,
        best_effort: bool = False,
        pad_frames: bool = False,
        shot_threshold: float = sc.DEFAULT_THRESHOLD,
    ) -> io.NodeOutput:
        if not video:
            raise InputError("video", "no file chosen", "upload a video or put one in ComfyUI's input folder")
        check_finite(cls, shot_threshold=shot_threshold)
        if not (0.0 <= shot_threshold <= 1.0):
            raise InputError("shot_threshold", f"is {shot_threshold}",
                             f"use 0 (off) or a number up to 1 (default {sc.DEFAULT_THRESHOLD}; higher = fewer cuts)")
        path = example_media.video_path(video)
        with kernel_inputs(path="video"):
            result = video_io.load_video(
                path,
                start_frame=start_frame,
                frame_cap=frame_cap,
                every_nth=every_nth,
                width=width,
                height=height,
                fit=fit,
                frame_rule=frame_rule,
                size_multiple=size_multiple,
                best_effort=best_effort,
                pad_frames=pad_frames,
                progress=progress_step(),
                audio=True,
            )
        audio = result.audio.as_comfy() if result.audio is not None else None
        cuts = find_shot_cuts(result.images, float(shot_threshold), progress_step())
        return io.NodeOutput(result.images, float(result.fps), int(result.frame_count), audio, cuts,
                             ui={"text": [frames_note(result, start_frame, every_nth, frame_rule),
                                          shots_note(cuts, float(shot_threshold))]})

    @classmethod
    def fingerprint_inputs(cls, video: str, **kwargs):
        """Re-run when the file changes (modification time), like the core LoadVideo."""
        try:
            return os.path.getmtime(example_media.video_path(video))
        except (OSError, TypeError, InputError):
            return float("nan")

    @classmethod
    def validate_inputs(cls, video: str, shot_threshold=None):
        problem = validate_widgets(cls, shot_threshold=shot_threshold)
        if problem is not True:
            return problem
        if not video:
            return "ZSVR input 'video': no file chosen. Fix: upload a video or put one in ComfyUI's input folder."
        try:
            exists = example_media.video_exists(video)
        except InputError as exc:  # a name that leads out of ComfyUI's folders: refused before anything runs
            return str(exc)
        if not exists:
            return (
                f"ZSVR input 'video': file not found: {video}. "
                "Fix: put the video in ComfyUI's input folder or upload it."
            )
        return True
