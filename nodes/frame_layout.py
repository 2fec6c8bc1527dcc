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
``ZSVR_SWCFA`` (TDM) and ``ZSVR_SLRTemporalAttention`` (ZVRD), whose ``attn1_patch`` work (the schedule gate,
the per-layout plan cache, the key/value mapping) is :func:`gated_frame_kv` and :func:`cached_plan`.

Core context windows for the samplers (:func:`context_handler`,
:func:`check_window_schedule`, :func:`with_sample_sigmas`): how a whole clip
runs in one graph (docs/long-clips.md).

``schedule_gate``, ``schedule_window_inputs``, ``current_sigma`` and
``FRAMES_PER_VIDEO_TOOLTIP`` live in :mod:`.shared_inputs` and are re-exported
here for the modules that import them from this one.
"""

from __future__ import annotations

import comfy.model_patcher

from ..kernels import frame_layout as fl
from .errors import InputError
from ..kernels.frame_layout import BatchLayout
from .shared_inputs import (  # noqa: F401  (re-exported)
    FRAMES_PER_VIDEO_TOOLTIP,
    check_frames_per_video_divides,
    current_sigma,
    schedule_gate,
    schedule_window_inputs,
)

__all__ = ["BatchLayout", "call_layout", "layout_key", "cached_plan", "gated_frame_kv", "map_frame_kv",
           "window_frames", "current_sigma",
           "schedule_gate", "schedule_window_inputs", "FRAMES_PER_VIDEO_TOOLTIP", "context_handler",
           "check_window_schedule", "check_core_sampler_windows", "with_sample_sigmas", "window_settings",
           "describe_windows"]

SAMPLE_SIGMAS = "sample_sigmas"
"""``transformer_options`` key of the run's schedule (set by ComfyUI's ``CFGGuider.inner_sample``)."""


def context_handler(model_options):
    """The core context handler a run samples with (``ContextWindowsManual`` and kin), or None."""
    return (model_options or {}).get("context_handler")


def handler_dim(handler) -> int | None:
    """The latent axis a core context handler cuts into windows (its ``dim``), or None if it does not say."""
    dim = getattr(handler, "dim", None)
    return None if dim is None else int(dim)


def check_window_schedule(model_options, latent, steps: int, who: str) -> None:
    """Refuse, with a clear error, a run that ComfyUI 0.3.64's context handler would stop with a tensor error.

    ``IndexListContextHandler.set_step`` finds the step by comparing the run's ``sample_sigmas`` (``steps + 1``
    values) with the model call's timestep, which has one entry per batch row. With windows on dim 0 (an image
    model denoising the frames as a batch) the two only broadcast when the batch is 1 or ``steps + 1``.

    Args:
        model_options: the run's model options (their ``context_handler``).
        latent: the latent the run samples.
        steps: the steps of the schedule the run passes to the host (``len(sample_sigmas) - 1``).
        who: the node, for the message.
    """
    handler = context_handler(model_options)
    if handler is None or handler_dim(handler) != 0 or not hasattr(latent, "shape") or len(latent.shape) < 1:
        return
    frames = int(latent.shape[0])
    length = getattr(handler, "context_length", None)
    if frames <= 1 or (length is not None and frames <= int(length)) or frames == steps + 1:
        return
    raise InputError(
        "model",
        f"carries core context windows on dim 0 over a batch of {frames} frames, which this ComfyUI's context "
        f"handler cannot sample in {steps} steps ({who}): it compares the schedule's {steps + 1} sigmas with the "
        f"{frames} per-frame timesteps, and that only works when the two counts agree",
        f"sample {frames - 1} steps for these {frames} frames, or set the Context Windows node's context_length to "
        f"{frames} or more (no windows)",
    )


def window_settings(model_options, latent) -> tuple | None:
    """The core context windows a run over ``latent`` is denoised in, as a comparable tuple; None when it has none.

    None also when the handler leaves this latent whole (its frame axis is not longer than one window), since the
    model then sees the latent as without windows."""
    handler = context_handler(model_options)
    if handler is None:
        return None
    dim = handler_dim(handler)
    length = getattr(handler, "context_length", None)
    shape = getattr(latent, "shape", None)
    if dim is not None and length is not None and shape is not None and (dim >= len(shape) or shape[dim] <= length):
        return None
    return (type(handler).__name__, dim, length, getattr(handler, "context_overlap", None),
            getattr(getattr(handler, "context_schedule", None), "name", None),
            getattr(handler, "context_stride", None), getattr(handler, "closed_loop", None),
            getattr(getattr(handler, "fuse_method", None), "name", None))


def describe_windows(settings: tuple | None) -> str:
    """:func:`window_settings` in words, for messages."""
    if settings is None:
        return "without context windows"
    _, dim, length, overlap, schedule, stride, closed, fuse = settings
    return (f"under context windows (dim {dim}, length {length}, overlap {overlap}, {schedule}, stride {stride}, "
            f"closed_loop {closed}, fuse {fuse})")


def check_core_sampler_windows(sampler, model_options, latent, sigmas, who: str) -> None:
    """:func:`check_window_schedule` for a run whose SAMPLER is a core ``KSAMPLER``, which hands the host the
    schedule it samples; ZSVR's own samplers (the inversion replay) check the schedule they hand the host."""
    import comfy.samplers

    if isinstance(sampler, comfy.samplers.KSAMPLER) and sigmas is not None and hasattr(sigmas, "shape"):
        check_window_schedule(model_options, latent, int(sigmas.shape[-1]) - 1, who)


def with_sample_sigmas(extra_args: dict, sample_sigmas) -> dict:
    """``extra_args`` whose model options name ``sample_sigmas`` as the run's schedule, under core context windows.

    The context handler numbers a model call's step by finding its sigma in ``sample_sigmas``, and the uniform
    window schedules shift the windows with that step number. A replay that starts at a skip step samples a tail
    of the inversion's schedule; handing the handler the inversion's whole schedule numbers every level as the
    inversion did, so each level's windows are the inversion's and the replay stays exact. Without a context
    handler ``extra_args`` is returned as it is, so runs without windows are unchanged.
    """
    options = extra_args.get("model_options")
    if context_handler(options) is None:
        return extra_args
    options = comfy.model_patcher.create_model_options_clone(options)
    options.setdefault("transformer_options", {})[SAMPLE_SIGMAS] = sample_sigmas
    return dict(extra_args, model_options=options)


def window_frames(extra_options) -> tuple | None:
    """The frames of the core context window (dim 0) this call runs on, or None.

    A window on another axis (dim 2 or 3 of an image latent: a strip of every frame) leaves the batch rows
    whole frames, so the rows keep their plain layout (None)."""
    window = extra_options.get("context_window")
    index_list = getattr(window, "index_list", None)
    if index_list is None or getattr(window, "dim", 0) != 0:
        return None
    return tuple(index_list)


def spatial_window(extra_options) -> tuple | None:
    """``(dim, index_list)`` of a core context window that cuts every frame (dim > 0 of an image latent), or None."""
    window = extra_options.get("context_window")
    index_list = getattr(window, "index_list", None)
    dim = int(getattr(window, "dim", 0) or 0)
    if index_list is None or dim == 0:
        return None
    return dim, tuple(index_list)


def call_layout(rows: int, extra_options, frames_per_video: int, who: str = "ZSVR",
                shot_starts=None) -> BatchLayout:
    """The :class:`~..kernels.frame_layout.BatchLayout` of an attention call with ``rows`` batch rows.

    ``shot_starts``: latent frames where a new shot starts (each shot becomes a video of its own), or None.

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
    return fl.batch_layout(rows, chunk_values, frames_per_video, window, shot_starts)


def layout_key(rows: int, extra_options, device) -> tuple:
    """What a cached per-layout plan depends on."""
    chunks = len(extra_options.get("cond_or_uncond") or [0])
    window = extra_options.get("context_window")
    index_list = getattr(window, "index_list", None)
    return (rows, chunks, tuple(index_list) if index_list is not None else None, getattr(window, "dim", 0), str(device))


PLAN_CACHE_LAYOUTS = 64
"""The most layouts a frame patch's plan cache holds before it is emptied (a run has a handful: batch sizes,
cond/uncond splits, context windows)."""


def cached_plan(plans: dict, rows: int, extra_options, device, make):
    """A frame patch's plan for the layout of this attention call, made once per :func:`layout_key`.

    ``make()`` builds the plan on the CPU (an object with ``is_identity`` and ``to(device)``, e.g.
    ``kernels.cross_frame_attention.WindowPlan`` or ``kernels.temporal_attention.NeighbourPlan``); it is stored
    moved to ``device``, or as None when it is the identity (the patch then passes its inputs through).
    ``plans`` is the patch's own cache (a dict on its configuration), emptied when it holds more than
    :data:`PLAN_CACHE_LAYOUTS` layouts.
    """
    key = layout_key(rows, extra_options, device)
    if key not in plans:
        plan = make()
        if len(plans) > PLAN_CACHE_LAYOUTS:
            plans.clear()
        plans[key] = None if plan.is_identity else plan.to(device)
    return plans[key]


def gated_frame_kv(n, context, value, extra_options, gate, plan_for, apply):
    """The work of a frame patch's ``attn1_patch`` once its layer is chosen: the key/value inputs with
    ``apply(h, plan)`` on those laid out like the frames (:func:`map_frame_kv`), as ``(n, context, value)``.

    ``gate`` is the schedule window's ``is_active(extra_options)`` (None: always on); ``plan_for(rows,
    extra_options, device)`` is the patch's plan for this call's layout (None for an identity plan, see
    :func:`cached_plan`). Returns None, and the patch passes its inputs through, when the call is outside the
    window or the plan is the identity.
    """
    if gate is not None and not gate(extra_options):
        return None
    rows = n.shape[0]
    plan = plan_for(rows, extra_options, n.device)
    if plan is None:
        return None
    context, value = map_frame_kv(context, value, rows, lambda h: apply(h, plan))
    return n, context, value


def map_frame_kv(context, value, rows: int, fn):
    """Apply ``fn`` to the attn1 key/value inputs that are laid out like the frames (``rows`` rows).

    A key/value input with another batch (a cross-attention context) passes
    through unchanged; when value is the same tensor as context, ``fn`` runs once.
    """
    new_context = fn(context) if context.shape[0] == rows else context
    if value is context:
        return new_context, new_context
    return new_context, (fn(value) if value.shape[0] == rows else value)
