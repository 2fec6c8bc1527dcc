"""The inputs several ZSVR nodes share: one declaration, one tooltip and one validation each.

* **Schedule window** (``start_percent`` / ``end_percent``): :func:`schedule_window_inputs` declares them,
  :func:`schedule_window` validates them and returns the gate that the patches ask at every call
  (:func:`schedule_gate`, reading the sigma once per model call, :func:`current_sigma`).
* **frames_per_video**: :func:`frames_per_video_input`, :func:`check_frames_per_video` (when the node runs) and
  :func:`check_frames_per_video_divides` (when the batch is known, at sampling time).
* **IMAGE as video frames**: :func:`video_frames` (``kernels.optical_flow.as_nchw``, its errors naming the node
  input, float32 on the CPU).
* **shot_cuts** (``ZSVR_SHOT_CUTS`` from ``ZSVR_LoadVideo``): :func:`shot_cuts_input`, :func:`check_shot_cuts`
  (when the node runs) and :func:`shot_starts_for` (the latent frames where shots start, at sampling time).
* **Numbers typed into widgets**: :func:`validate_widgets` (a node's ``validate_inputs``: before anything runs;
  :func:`validate_window_widgets` for a node with a schedule window) and :func:`check_finite` (the first line of
  ``execute``: values that arrive through a link).

Kernel errors become node errors in :mod:`.errors` (``kernel_inputs``).
"""

from __future__ import annotations

import math
import weakref

import torch

from ..kernels import optical_flow as of
from ..kernels import shot_cuts as sc
from ..kernels.errors import ParameterError
from .errors import InputError
from .errors import kernel_inputs

# -- IMAGE -----------------------------------------------------------------------------------------------------


def video_frames(image, input_name: str = "image", rgb: bool = False) -> torch.Tensor:
    """An IMAGE input as float32 frames ``[F, C, H, W]`` (C = 1 or 3; 3 with ``rgb``) on the CPU, contiguous.

    Raises:
        InputError: naming ``input_name``, for anything that is not a non-empty batch of 1- or 3-channel frames.
    """
    with kernel_inputs(frames=input_name):
        frames = of.as_nchw(image)
    frames = frames.detach().to("cpu", torch.float32).contiguous()
    if frames.shape[0] < 1:
        raise InputError(input_name, "has no frames", "connect the input video")
    if rgb and frames.shape[1] == 1:
        frames = frames.expand(-1, 3, -1, -1).contiguous()
    return frames


# -- frames_per_video ------------------------------------------------------------------------------------------

FRAMES_PER_VIDEO_TOOLTIP = (
    "Frames of each video in the latent batch: 0 = the whole batch is one video; "
    "e.g. 16 for a batch of two 16-frame videos (it must divide the batch). "
    "Frames never mix across videos, nor between positive and negative prompts.")
"""The one tooltip of every frame patch's ``frames_per_video`` input."""

FRAMES_PER_VIDEO_FIX = "set it to the number of frames of each video in the batch (0 if the batch is one video)"


def frames_per_video_input():
    """The ``frames_per_video`` input of every frame patch."""
    from comfy_api.latest import io

    return io.Int.Input("frames_per_video", default=0, min=0, max=1_000_000, tooltip=FRAMES_PER_VIDEO_TOOLTIP)


def check_frames_per_video(frames_per_video: int) -> int:
    """When the node runs: 0 or a positive frame count."""
    if frames_per_video < 0:
        raise InputError("frames_per_video", f"is {frames_per_video}",
                         "use 0 (the whole batch is one video) or the frame count of each video")
    return int(frames_per_video)


def check_frames_per_video_divides(frames_per_video: int, frames: int) -> None:
    """When the batch is known: ``frames_per_video`` must split the ``frames`` of the batch into whole videos."""
    check_frames_per_video(frames_per_video)
    if frames_per_video > 0 and frames % frames_per_video != 0:
        raise InputError("frames_per_video",
                         f"is {frames_per_video}, which does not divide the batch of {frames} frames",
                         FRAMES_PER_VIDEO_FIX)


# -- shot_cuts --------------------------------------------------------------------------------------------------


def shot_cuts_input(what: str):
    """The optional ``shot_cuts`` input of the flow-based nodes; ``what`` says what the node does not do across a
    cut (e.g. "warp or blend noise")."""
    from .types import ShotCuts

    return ShotCuts.Input(
        "shot_cuts", optional=True,
        tooltip=f"Optional: where the video's shots change (ZSVR Load Video's shot_cuts output, from the same "
                f"video the latent was encoded from). Each shot is treated as a video of its own: the node does not "
                f"{what} across a cut. Unconnected: the whole batch is one continuous shot (as before).")


def check_shot_cuts(value, input_name: str = "shot_cuts"):
    """When the node runs: None or a ``kernels.shot_cuts.ShotCuts``."""
    if value is None or isinstance(value, sc.ShotCuts):
        return value
    raise InputError(input_name, f"is {type(value).__name__}, not shot cuts",
                     "connect ZSVR Load Video's shot_cuts output, or leave it unconnected")


def shot_starts_for(shot_cuts, latent_frames: int, input_name: str = "shot_cuts") -> tuple:
    """The latent frames where a new shot starts (``kernels.shot_cuts.latent_shot_starts``); () without cuts.

    Raises:
        InputError: naming ``input_name`` when the cuts' clip does not fit the latent's frame count.
    """
    if shot_cuts is None or not shot_cuts.cuts:
        return ()
    try:
        return tuple(sc.latent_shot_starts(shot_cuts.cuts, shot_cuts.frames, int(latent_frames)))
    except ParameterError:
        raise InputError(input_name, f"are the cuts of a {shot_cuts.frames}-frame video, which does not fit a latent "
                         f"of {latent_frames} frames",
                         f"connect the shot_cuts of the video the latent was encoded from (the same Load Video "
                         f"settings): {latent_frames} frames, one per latent frame, or (T-1)*r+1 frames for a video "
                         f"VAE with temporal compression r (e.g. {4 * (int(latent_frames) - 1) + 1} for r = 4)"
                         ) from None


# -- schedule window -------------------------------------------------------------------------------------------


def schedule_window_inputs(action: str) -> list:
    """The ``start_percent`` / ``end_percent`` inputs every schedule-gated node declares (see :func:`schedule_gate`);
    ``action`` names what the node does in its window, e.g. "Switch" or "Apply SLR attention"."""
    from comfy_api.latest import io

    return [io.Float.Input("start_percent", default=0.0, min=0.0, max=1.0, step=0.01,
                           tooltip=f"{action} from this point of the schedule (0 = first step)."),
            io.Float.Input("end_percent", default=1.0, min=0.0, max=1.0, step=0.01,
                           tooltip=f"{action} until this point of the schedule (1 = last step).")]


def check_schedule_window(start_percent: float, end_percent: float) -> None:
    if start_percent > end_percent:
        raise InputError("start_percent", f"({start_percent}) is after end_percent ({end_percent})",
                         "make start_percent at most end_percent")


def schedule_window(model_patcher, start_percent: float, end_percent: float):
    """Validate the window and return its gate (:func:`schedule_gate`; None = always on)."""
    check_schedule_window(start_percent, end_percent)
    return schedule_gate(model_patcher, start_percent, end_percent)


_last_sigma: list = [None, None]  # [a weak reference to the sigmas tensor last read, its value]


def current_sigma(extra_options) -> float | None:
    """The sigma of the model call in progress, as a float.

    Reading a GPU tensor is a device sync; ComfyUI hands every block of one call the same ``sigmas`` tensor,
    so it is read once per model call, not once per attention layer. The tensor is held by a weak reference
    only (nothing of a run outlives it), which is still exact: a dead reference matches no tensor.
    """
    sigmas = extra_options.get("sigmas")
    if sigmas is None:
        return None
    if _last_sigma[0] is None or _last_sigma[0]() is not sigmas:
        _last_sigma[:] = [weakref.ref(sigmas), float(sigmas.detach().flatten()[0])]
    return _last_sigma[1]


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


# -- numbers typed into widgets ----------------------------------------------------------------------------------
#
# ComfyUI checks a widget's min/max before a prompt runs, but NaN passes every comparison, so a NaN strength would
# run (a black video reported as success); an API prompt or an edited JSON can carry NaN or inf. Each node with a
# FLOAT input therefore declares ``validate_inputs`` naming those inputs, which ComfyUI calls with the widget
# values before it executes any node of the prompt (values that arrive through a link are None there and are
# checked by ``check_finite`` when the node runs). ComfyUI skips its own min/max check for the inputs a
# ``validate_inputs`` names, so :func:`validate_widgets` does that check too, with the schema's own bounds.


def _widget_spec(node_cls, name: str) -> tuple[str, dict]:
    """(type, options) of input ``name`` as the node declares it (``INPUT_TYPES``)."""
    declared = node_cls.INPUT_TYPES()
    spec = {**declared.get("required", {}), **declared.get("optional", {})}.get(name)
    if spec is None:
        raise ValueError(f"{node_cls.__name__} has no input {name!r}")  # a programming error, not a user's
    kind, options = (spec[0], spec[1] if len(spec) > 1 else {})
    return kind, options


def _bounds(options: dict) -> str:
    low, high = options.get("min"), options.get("max")
    default = f" (default {options['default']})" if "default" in options else ""
    if low is not None and high is not None:
        return f"enter a number from {low} to {high}{default}"
    return f"enter a finite number{default}"


def _not_finite(name: str, value: float, options: dict) -> InputError:
    what = "NaN (not a number)" if math.isnan(value) else f"{value} (infinite)"
    return InputError(name, f"is {what}", _bounds(options))


def check_finite(node_cls, **values) -> None:
    """When the node runs: every given FLOAT value is a finite number.

    Call it first in ``execute`` with the node's FLOAT inputs (``check_finite(cls, strength=strength)``); a value
    that came through a link was not seen by ``validate_inputs``.

    Raises:
        InputError: naming the first input that is NaN or infinite.
    """
    for name, value in values.items():
        if isinstance(value, (int, float)) and not isinstance(value, bool) and not math.isfinite(value):
            raise _not_finite(name, float(value), _widget_spec(node_cls, name)[1])


def widget_error(node_cls, **values) -> InputError | None:
    """The first problem of the given widget values, or None: a FLOAT that is NaN or infinite, or an INT/FLOAT
    outside the declared min/max. ``None`` values (inputs fed by a link) are skipped."""
    for name, value in values.items():
        if value is None:
            continue
        kind, options = _widget_spec(node_cls, name)
        if kind not in ("FLOAT", "INT") or isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        if not math.isfinite(value):
            return _not_finite(name, float(value), options)
        low, high = options.get("min"), options.get("max")
        if low is not None and value < low:
            return InputError(name, f"is {value}, below its minimum {low}", _bounds(options))
        if high is not None and value > high:
            return InputError(name, f"is {value}, above its maximum {high}", _bounds(options))
    return None


def validate_widgets(node_cls, *more_checks, **values):
    """The body of a node's ``validate_inputs``: True, or the message of the first problem (ComfyUI shows it).

    ``values`` are the node's FLOAT inputs (and any INT the node's own checks need); ``more_checks`` are
    callables with no arguments that raise :class:`InputError` (e.g. :func:`window_check`), run only when the
    numbers are fine; each must do nothing for a value that is None (fed by a link, checked when the node runs).

    ComfyUI reports a failed ``validate_inputs`` once per argument it declares, each time with this message, so
    a node declares only the inputs its checks need.
    """
    problem = widget_error(node_cls, **values)
    if problem is None:
        for check in more_checks:
            try:
                check()
            except InputError as exc:
                problem = exc
                break
    return True if problem is None else str(problem)


def blocks_check(blocks, check_syntax):
    """For :func:`validate_widgets`: a ``blocks`` widget that ``check_syntax(text)`` (a kernel's syntax check,
    raising ``ParameterError`` for its ``text``) accepts; whether the blocks exist needs the model."""
    def check():
        if blocks is not None:
            with kernel_inputs(text="blocks"):
                check_syntax(blocks)
    return check


def window_check(start_percent, end_percent):
    """For :func:`validate_widgets`: the schedule window's order, when both ends are widget values."""
    if start_percent is None or end_percent is None:
        return lambda: None
    return lambda: check_schedule_window(start_percent, end_percent)


def validate_window_widgets(node_cls, start_percent, end_percent, *more_checks, **values):
    """The body of a schedule-gated node's ``validate_inputs``: :func:`validate_widgets` of the node's own
    ``values`` and then the window ends (finite numbers in their ranges), then the window's order
    (:func:`window_check`), then ``more_checks``."""
    return validate_widgets(node_cls, window_check(start_percent, end_percent), *more_checks, **values,
                            start_percent=start_percent, end_percent=end_percent)
