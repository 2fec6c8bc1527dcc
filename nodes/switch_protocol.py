"""The protocol between ZSVD's editor, the inverter and the attention-switch adapters (ZSVD sec. 3.3).

ZSVD's attention switch replaces, in chosen blocks, the remove pass's text
keys/values by the null pass's at the same block and step. Three parties have
to agree on how a model call says which pass it is and where the null pass
leaves its values; they all import this module and nothing else defines a key:

* ``ZSVR_NegativePromptEditor`` runs a switched step as a null pass, then a
  remove pass, each its own model call tagged with :data:`PASS_KEY`, sharing one
  :class:`PassCache` under :data:`CACHE_KEY`;
* ``ZSVR_DDPMInvert`` tags its calls :attr:`Pass.INVERSION` (the switch stays off);
* an adapter's switch reads :func:`role` and the cache; the settings of the
  switch itself (which blocks, the schedule gate) are stored by
  ``ZSVR_AttentionSwitch`` under :data:`SWITCH_KEY` as a :class:`SwitchSettings`.

Everything stored in ``transformer_options`` is an object, not a dict: ComfyUI
copies nested dicts of those options on the way to the model and into every
clone, and these values must stay shared between the passes of one step.

Core context windows (``ContextWindowsManual``, ``WanContextWindowsManual``):
each of the editor's two ``calc_cond_batch`` calls per step is split by the
host's context handler into one model call per window, all windows of the null
pass first, then all windows of the remove pass; the handler names the window
of every call in ``transformer_options["context_window"]``. On joint-attention
families (HunyuanVideo, CogVideoX) the null pass's text keys/values depend on
the window's video tokens, so the pass cache is keyed by the window
(:func:`window_key`): the remove pass of a window reads the values the null
pass left for that same window and never another window's.
"""

from __future__ import annotations

import enum

from .errors import InputError

PASS_KEY = "zsvr_pass"
"""``transformer_options`` key: the :class:`Pass` of the model call in progress."""
CACHE_KEY = "zsvr_switch_cache"
"""``transformer_options`` key: the step's :class:`PassCache` (null pass writes, remove pass reads)."""
SWITCH_KEY = "zsvr_attention_switch"
"""``transformer_options`` key of a switched clone: its :class:`SwitchSettings`."""


class Pass(str, enum.Enum):
    """Which pass a model call belongs to."""

    NULL = "null"  # the editor's null-prompt pass: the switch records its text keys/values
    REMOVE = "remove"  # the editor's remove-prompt pass: switched blocks read the null pass's
    INVERSION = "inversion"  # ZSVR_DDPMInvert: the switch is inactive


WINDOW_OPTION = "context_window"
"""``transformer_options`` key under which ComfyUI's context handler names the window of a model call."""


def window_key(options) -> tuple | None:
    """The core context window of this model call as a hashable key ``(dim, frame indices)``; None without one.

    ComfyUI's ``IndexListContextHandler`` sets ``transformer_options["context_window"]`` (an
    ``IndexListContextWindow`` with ``index_list`` and ``dim``) before each window's model call."""
    window = (options or {}).get(WINDOW_OPTION)
    index_list = getattr(window, "index_list", None)
    if index_list is None:
        return None
    return int(getattr(window, "dim", 0)), tuple(int(i) for i in index_list)


class PassCache:
    """Values a switch hands from one step's null pass to its remove pass.

    ``windows[window_key][(family, block)]``: one dict per core context window
    (:func:`window_key`; ``None`` when the model runs without windows), so the
    remove pass of a window reads only what the null pass stored for that window.
    """

    def __init__(self):
        self.windows: dict = {}

    def values_for(self, window) -> dict:
        """The dict of one window (created on first use)."""
        found = self.windows.get(window)
        if found is None:
            found = self.windows[window] = {}
        return found


class SwitchSettings:
    """Immutable settings of one switched clone: which blocks, the family, and the schedule gate."""

    def __init__(self, blocks, family: str, is_active=None):
        self.blocks = frozenset(int(b) for b in blocks)
        self.family = family
        self._is_active = is_active

    def is_active(self, options) -> bool:
        """Whether the switch acts at this call's sigma (the node's start/end percent window)."""
        return True if self._is_active is None else bool(self._is_active(options))

    def __deepcopy__(self, memo):  # immutable: ModelPatcher.clone() shares it
        return self


NOT_EDITOR = ("carries a ZSVR attention switch but is being sampled without the ZSVR Negative Prompt Editor, "
              "which supplies the null path the switch reads")
NOT_EDITOR_FIX = "connect the switched model to ZSVR Negative Prompt Editor (or use the unswitched model)"


def role(options) -> Pass:
    """The pass of this model call; raises the one "sampled without the editor" error when there is none."""
    which = (options or {}).get(PASS_KEY)
    try:
        return Pass(which)
    except ValueError:
        raise InputError("model", NOT_EDITOR, NOT_EDITOR_FIX) from None


def settings(options) -> SwitchSettings | None:
    """The switch settings a call carries (None: the model is not switched)."""
    return (options or {}).get(SWITCH_KEY)


def switched_role(options, block: int) -> Pass | None:
    """For block ``block`` of this call: :attr:`Pass.NULL` (record), :attr:`Pass.REMOVE` (read and switch), or
    None (plain attention: the block is not switched, the call is the inversion's, or the gate is closed)."""
    found = settings(options)
    if found is None or block not in found.blocks:
        return None
    which = role(options)
    if which is Pass.INVERSION or (which is Pass.REMOVE and not found.is_active(options)):
        return None
    return which


def cache_values(options) -> dict:
    """The step's pass-cache dict of this call's context window (:func:`window_key`)."""
    cache = (options or {}).get(CACHE_KEY)
    if cache is None:
        raise RuntimeError("ZSVR attention switch: this call carries no pass cache (the editor sets one per step)")
    return cache.values_for(window_key(options))


def null_values(options, key):
    """What the null pass stored under ``key`` this step, in this call's window; a clear error if the null pass
    did not run first (for this window)."""
    values = cache_values(options)
    if key not in values:
        window = window_key(options)
        where = "" if window is None else f" in the context window of frames {list(window[1])} (dim {window[0]})"
        raise RuntimeError(f"ZSVR attention switch: the null pass did not run before the remove pass{where}")
    return values[key]


def mark_pass(transformer_options: dict, which: Pass) -> None:
    """Tag a call's (or a clone's) ``transformer_options`` with its pass."""
    transformer_options[PASS_KEY] = which
