"""Which attention batch rows are which frames, and when a patch is active: shared by the U-Net frame patches.

An image U-Net denoises a video as a batch of frames. Inside an ``attn1``
patch the batch rows are, read at every call and never assumed:

* ``len(extra_options["cond_or_uncond"])`` chunks (cond/uncond, batched or run
  separately), each chunk one copy of the latent batch;
* ``frames_per_video`` splits a chunk into videos of consecutive frames (0 = the
  chunk is one video);
* under core context windows (dim 0) a chunk's rows are the frames
  ``extra_options["context_window"].index_list`` of the full latent batch.

Used by ``ZSVR_SWCFA`` (TDM) and ``ZSVR_SLRTemporalAttention`` (ZVRD).
"""

from __future__ import annotations

import dataclasses

from ..kernels import cross_frame_attention as cfa


@dataclasses.dataclass(frozen=True)
class BatchLayout:
    """Per batch row: its cond/uncond chunk, its video (unique across chunks), its position in the video and its
    frame index in the latent batch; plus the context window's frames (``None`` without windows)."""

    chunks: int
    chunk_rows: int
    chunk_values: tuple
    chunk: list
    video: list
    position: list
    frame: list
    window: tuple | None


def batch_layout(rows: int, extra_options, frames_per_video: int, who: str = "ZSVR") -> BatchLayout:
    chunk_values = tuple(extra_options.get("cond_or_uncond") or [0])
    chunks = len(chunk_values)
    if rows % chunks != 0:
        raise RuntimeError(f"{who}: the attention batch has {rows} rows, which do not split into the "
                           f"{chunks} cond/uncond chunks ComfyUI reports; cannot tell which rows are which frames")
    chunk = rows // chunks
    window = extra_options.get("context_window")
    index_list = getattr(window, "index_list", None)
    frames: tuple | None = None
    if index_list is not None and getattr(window, "dim", 0) == 0 and len(index_list) == chunk:
        frames = tuple(int(f) for f in index_list)
    fpv = frames_per_video
    if frames is None:
        video, position = (t.tolist() for t in cfa.video_layout(chunk, fpv))
    elif fpv == 0:
        video, position = [0] * chunk, list(frames)
    else:  # the context window holds frames of the full batch; videos are fpv consecutive frames of it
        video, position = [f // fpv for f in frames], [f % fpv for f in frames]
    per_chunk = max(video) + 1
    frame = list(frames) if frames is not None else list(range(chunk))
    return BatchLayout(
        chunks=chunks, chunk_rows=chunk, chunk_values=chunk_values,
        chunk=[c for c in range(chunks) for _ in range(chunk)],
        video=[c * per_chunk + v for c in range(chunks) for v in video],
        position=position * chunks, frame=frame * chunks, window=frames,
    )


def layout_key(rows: int, extra_options, device) -> tuple:
    """What a cached per-layout plan depends on."""
    chunks = len(extra_options.get("cond_or_uncond") or [0])
    window = extra_options.get("context_window")
    index_list = getattr(window, "index_list", None)
    return (rows, chunks, tuple(index_list) if index_list is not None else None, getattr(window, "dim", 0), str(device))


_last_sigma: list = [None, None]  # [the sigmas tensor last read, its value]


def current_sigma(extra_options) -> float | None:
    """The sigma of the model call in progress, as a float.

    Reading a GPU tensor is a device sync; ComfyUI hands every block of one call the same ``sigmas`` tensor,
    so it is read once per model call, not once per attention layer (the tensor is held, so ``is`` is exact).
    """
    sigmas = extra_options.get("sigmas")
    if sigmas is None:
        return None
    if _last_sigma[0] is not sigmas:
        _last_sigma[:] = [sigmas, float(sigmas.detach().flatten()[0])]
    return _last_sigma[1]


def schedule_window_inputs(action: str) -> list:
    """The ``start_percent`` / ``end_percent`` inputs every schedule-gated node declares (see :func:`schedule_gate`);
    ``action`` names what the node does in its window, e.g. "Switch" or "Apply SLR attention"."""
    from comfy_api.latest import io

    return [io.Float.Input("start_percent", default=0.0, min=0.0, max=1.0, step=0.01,
                           tooltip=f"{action} from this point of the schedule (0 = first step)."),
            io.Float.Input("end_percent", default=1.0, min=0.0, max=1.0, step=0.01,
                           tooltip=f"{action} until this point of the schedule (1 = last step).")]


def schedule_gate(model_patcher, start_percent: float, end_percent: float):
    """``is_active(extra_options)``: the current sigma lies in [sigma(end_percent), sigma(start_percent)]."""
    if start_percent <= 0.0 and end_percent >= 1.0:
        return None  # always on: skip reading the sigma (a device sync) at every attention call
    sampling = model_patcher.get_model_object("model_sampling")
    sigma_start = float(sampling.percent_to_sigma(start_percent))
    sigma_end = float(sampling.percent_to_sigma(end_percent))

    def is_active(extra_options) -> bool:
        sigma = current_sigma(extra_options)
        if sigma is None:
            return True
        return sigma_end <= sigma <= sigma_start

    return is_active


def map_frame_kv(context, value, rows: int, fn):
    """Apply ``fn`` to the attn1 key/value inputs that are laid out like the frames (``rows`` rows).

    A key/value input with another batch (a cross-attention context) passes
    through unchanged; when value is the same tensor as context, ``fn`` runs once.
    """
    new_context = fn(context) if context.shape[0] == rows else context
    if value is context:
        return new_context, new_context
    return new_context, (fn(value) if value.shape[0] == rows else value)


FRAMES_PER_VIDEO_TOOLTIP = (
    "Frames of each video in the latent batch: 0 = the whole batch is one video; "
    "e.g. 16 for a batch of two 16-frame videos (it must divide the batch). "
    "Frames never mix across videos, nor between positive and negative prompts.")
"""The one tooltip of every frame patch's ``frames_per_video`` input."""
