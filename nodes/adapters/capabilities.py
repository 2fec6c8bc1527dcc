"""What a model family lets the pack do: the capability record every family adapter declares.

Nodes ask the registry (:mod:`nodes.adapters`) for a family with a capability instead of testing model classes or
tensor ranks themselves (docs/layout.md).
"""

from __future__ import annotations

import dataclasses

FRAME_AXES = ("batch", "time")


@dataclasses.dataclass(frozen=True)
class Capabilities:
    """One family's capabilities.

    Attributes:
        text_key_switch: ZSVD attention switching (``ZSVR_AttentionSwitch``) can swap the text keys/values of its blocks.
        frame_axis: where the video's frames are in the latent: ``"batch"`` (an image model denoising a video as a
            batch of frames, ``[F, C, H, W]``) or ``"time"`` (a video model, ``[B, C, T, H, W]``, axis 2).
        self_attention_patch: per-layer self-attention key/value patches (``attn1`` patches: SW-CFA, SLR) reach it.
        latent_is_video: the latent is a video latent (3 latent dimensions).
        context_windows: its ZSVR patches work under core context windows on the frame axis.
    """

    text_key_switch: bool
    frame_axis: str
    self_attention_patch: bool
    latent_is_video: bool
    context_windows: bool

    def __post_init__(self):
        if self.frame_axis not in FRAME_AXES:
            raise ValueError(f"frame_axis must be one of {FRAME_AXES}, got {self.frame_axis!r}")
