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
"""

from __future__ import annotations

import enum

from ..kernels.errors import InputError

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


class PassCache:
    """Values a switch hands from one step's null pass to its remove pass (``values[(family, block)]``).

    Keys carry the family and block; under core context windows the editor
    makes one cache per window call, so values of one window never reach another.
    """

    def __init__(self):
        self.values: dict = {}


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
    """The step's pass-cache dict (``values``) of this call."""
    cache = (options or {}).get(CACHE_KEY)
    if cache is None:
        raise RuntimeError("ZSVR attention switch: this call carries no pass cache (the editor sets one per step)")
    return cache.values


def null_values(options, key):
    """What the null pass stored under ``key`` this step; a clear error if the null pass did not run first."""
    values = cache_values(options)
    if key not in values:
        raise RuntimeError("ZSVR attention switch: the null pass did not run before the remove pass")
    return values[key]


def mark_pass(transformer_options: dict, which: Pass) -> None:
    """Tag a call's (or a clone's) ``transformer_options`` with its pass."""
    transformer_options[PASS_KEY] = which
