"""Which attention batch rows are which frames, read from ComfyUI's ``extra_options``: shared by the frame patches.

An image U-Net denoises a video as a batch of frames. Inside an ``attn1``
patch the batch rows are, read at every call and never assumed:

* ``len(extra_options["cond_or_uncond"])`` chunks (cond/uncond, batched or run
  separately), each chunk one copy of the latent batch;
* ``frames_per_video`` splits a chunk into videos of consecutive frames (0 = the
  chunk is one video);
* under core context windows (dim 0) a chunk's rows are the frames
  ``extra_options["context_window"].index_list`` of the full latent batch.

The layout itself is ``kernels.frame_layout.batch_layout``; this module reads
ComfyUI's options for it and words its errors for the node inputs. Used by
``ZSVR_SWCFA`` (TDM) and ``ZSVR_SLRTemporalAttention`` (ZVRD).

``schedule_gate``, ``schedule_window_inputs``, ``current_sigma`` and
``FRAMES_PER_VIDEO_TOOLTIP`` live in :mod:`.shared_inputs` and are re-exported
here for the modules that import them from this one.
"""

from __future__ import annotations

from ..kernels import frame_layout as fl
from ..kernels.frame_layout import BatchLayout
from .shared_inputs import (  # noqa: F401  (re-exported)
    FRAMES_PER_VIDEO_TOOLTIP,
    check_frames_per_video_divides,
    current_sigma,
    schedule_gate,
    schedule_window_inputs,
)

__all__ = ["BatchLayout", "call_layout", "layout_key", "map_frame_kv", "window_frames", "current_sigma",
           "schedule_gate", "schedule_window_inputs", "FRAMES_PER_VIDEO_TOOLTIP"]


def window_frames(extra_options) -> tuple | None:
    """The frames of the core context window (dim 0) this call runs on, or None."""
    window = extra_options.get("context_window")
    index_list = getattr(window, "index_list", None)
    if index_list is None or getattr(window, "dim", 0) != 0:
        return None
    return tuple(index_list)


def call_layout(rows: int, extra_options, frames_per_video: int, who: str = "ZSVR") -> BatchLayout:
    """The :class:`~..kernels.frame_layout.BatchLayout` of an attention call with ``rows`` batch rows.

    Raises:
        InputError: ``frames_per_video`` does not divide the batch (no context window).
        RuntimeError: the rows do not split into the cond/uncond chunks ComfyUI reports.
    """
    chunk_values = tuple(extra_options.get("cond_or_uncond") or [0])
    chunks = len(chunk_values)
    if rows % chunks != 0:
        raise RuntimeError(f"{who}: the attention batch has {rows} rows, which do not split into the "
                           f"{chunks} cond/uncond chunks ComfyUI reports; cannot tell which rows are which frames")
    window = window_frames(extra_options)
    if window is None or len(window) != rows // chunks:
        check_frames_per_video_divides(frames_per_video, rows // chunks)
    return fl.batch_layout(rows, chunk_values, frames_per_video, window)


def layout_key(rows: int, extra_options, device) -> tuple:
    """What a cached per-layout plan depends on."""
    chunks = len(extra_options.get("cond_or_uncond") or [0])
    window = extra_options.get("context_window")
    index_list = getattr(window, "index_list", None)
    return (rows, chunks, tuple(index_list) if index_list is not None else None, getattr(window, "dim", 0), str(device))


def map_frame_kv(context, value, rows: int, fn):
    """Apply ``fn`` to the attn1 key/value inputs that are laid out like the frames (``rows`` rows).

    A key/value input with another batch (a cross-attention context) passes
    through unchanged; when value is the same tensor as context, ``fn`` runs once.
    """
    new_context = fn(context) if context.shape[0] == rows else context
    if value is context:
        return new_context, new_context
    return new_context, (fn(value) if value.shape[0] == rows else value)
