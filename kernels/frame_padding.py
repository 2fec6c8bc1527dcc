"""Pad a clip to a model's frame rule before encoding and cut the padding off after decoding: no frame dropped.

Video VAEs of Wan and CogVideoX code ``4k+1`` frames (one latent frame for the
first frame, one for every 4 after it; LTX-Video ``8k+1``). A clip of another
length either loses its tail (the largest valid count, what ``ZSVR_LoadVideo``'s
``frame_rule`` does without ``pad_frames``) or is padded. Here the padding is
undone: :func:`pad_to_rule` repeats the last frame up to the next valid count
and returns the count it started from; after the model and the decoder,
:func:`trim_padding` keeps exactly that many frames, so a 60-frame clip comes
back as 60 frames (decoded as 61). The repeated frames sit at the clip's end,
so the kept frames are the source's frames, in order.

Pure torch; the counts follow :func:`kernels.video_io.rule_count`.
"""

from __future__ import annotations

import torch

from .errors import ParameterError
from .video_io import rule_count


def pad_to_rule(images: torch.Tensor, frame_rule: str) -> tuple[torch.Tensor, int]:
    """``images`` ``[F, H, W, C]`` padded by repeating its last frame up to the rule's next count; returns
    ``(padded, F)``. A count the rule already allows comes back as the same tensor.

    Raises:
        ParameterError: naming ``images`` when it is not a non-empty ``[F, H, W, C]`` batch, ``frame_rule`` when
            it is not a known rule.
    """
    if not isinstance(images, torch.Tensor) or images.ndim != 4 or images.shape[0] == 0:
        shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise ParameterError("images", f"is {shape}, not a batch of frames [frames, height, width, channels]",
                             "connect the frames from Load Video")
    frames = int(images.shape[0])
    count = rule_count(frames, frame_rule, pad=True)
    if count == frames:
        return images, frames
    tail = images[-1:].expand(count - frames, *images.shape[1:])
    return torch.cat([images, tail], dim=0), frames


def trim_padding(images: torch.Tensor, frame_count: int) -> tuple[torch.Tensor, int]:
    """The first ``frame_count`` frames of ``images`` (the padding :func:`pad_to_rule` added cut off); returns
    ``(kept, frames removed)``.

    Raises:
        ParameterError: naming ``frame_count`` when it is below 1, or more than the frames given: a node between
            the padding and here dropped frames, and repeating some now would hide that.
    """
    if not isinstance(images, torch.Tensor) or images.ndim != 4:
        shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise ParameterError("images", f"is {shape}, not a batch of frames [frames, height, width, channels]",
                             "connect the decoded frames (VAE Decode)")
    frame_count, have = int(frame_count), int(images.shape[0])
    if frame_count < 1:
        raise ParameterError("frame_count", f"is {frame_count}", "connect the frame_count of Pad Frames to Rule")
    if have < frame_count:
        raise ParameterError(
            "frame_count",
            f"is {frame_count} but only {have} frames came back: a node between the padding and here dropped "
            f"{frame_count - have}",
            "pad the frames to the model's frame rule before the VAE encoder (Pad Frames to Rule, or Load Video's "
            "frame_rule with pad_frames) and keep nodes that change the frame count out of the path",
        )
    if have == frame_count:
        return images, 0
    return images[:frame_count], have - frame_count
