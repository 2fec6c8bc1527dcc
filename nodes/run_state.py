"""Per-run state for stateful model patches, and the debug observer: what makes a patch clone-safe.

``ModelPatcher.clone()`` deep-copies ``model_options`` (where attn1 patches and
post-CFG functions live) but only list-copies the wrappers. A patch object that
kept its run state on itself was therefore split by any later clone (a LoRA
loader, another patch node): the hooks of the clone got a deep copy of it, the
``OUTER_SAMPLE`` wrapper still reset the original, and the second run on the
clone started from the first run's state.

The design here:

* A patch object is **configuration** only (:class:`Config`): immutable after
  the node built it, shared by every clone (``copy.deepcopy`` returns the
  object itself), plus caches that are pure functions of the configuration.
* **Run state** is a fresh object per sampling run. The patch's
  ``OUTER_SAMPLE`` wrapper creates it (:func:`run_with`) and puts it under the
  patch's own key (:func:`new_key`) in the ``transformer_options`` of the
  options that run samples with: ``executor.class_obj`` is the guider, whose
  ``model_options`` ComfyUI's ``CFGGuider.sample`` has just copied for this run.
  ComfyUI's nested-dict copies keep objects by reference, so every model call
  of the run reaches the same state object: attn1 patches through
  ``extra_options[key]`` (:func:`state_of`), post-CFG functions through
  ``args["model_options"]["transformer_options"][key]``
  (:func:`post_cfg_state`).
* Test probes are not production state: a test that wants statistics installs
  an **observer**, a callable ``observer(event, data)``, under
  :data:`OBSERVER_KEY` in the model's ``transformer_options``; patches report
  to it (:func:`notify`), and compute what only the observer needs (which
  costs host syncs) only when one is installed.
"""

from __future__ import annotations

import collections
import contextlib
import itertools

OBSERVER_KEY = "zsvr_debug_observer"
"""``transformer_options`` key of the optional debug observer ``observer(event: str, data: dict)``."""

_keys = itertools.count()


def new_key(name: str) -> str:
    """A ``transformer_options`` key unique to one patch object (``name`` says whose, for debugging)."""
    return f"zsvr_run_state.{name}.{next(_keys)}"


class Config:
    """Base of a patch's configuration object: one object shared by every clone of the patched model.

    ``copy.deepcopy`` (which ``ModelPatcher.clone`` applies to ``model_options``) and ``copy.copy`` return the
    object itself, so the hooks of every clone and the ``OUTER_SAMPLE`` wrapper reach the same configuration
    and the same caches. Subclasses must not keep per-run state on themselves.
    """

    def __deepcopy__(self, memo):
        return self

    def __copy__(self):
        return self


def run_options(executor) -> dict | None:
    """The model options of the sampling run an ``OUTER_SAMPLE`` wrapper wraps (the guider's, copied per run)."""
    options = getattr(getattr(executor, "class_obj", None), "model_options", None)
    return options if isinstance(options, dict) else None


@contextlib.contextmanager
def run_with(executor, key: str, state):
    """In an ``OUTER_SAMPLE`` wrapper: make ``state`` this run's state under ``key`` while the run lasts.

    Without a guider's options (a caller that is not a ComfyUI guider) the state is not reachable by the
    patches, which then work with a state per call (:func:`state_of`'s ``default``).
    """
    options = run_options(executor)
    if options is None:
        yield state
        return
    transformer_options = options.setdefault("transformer_options", {})
    missing = object()
    previous = transformer_options.get(key, missing)
    transformer_options[key] = state
    try:
        yield state
    finally:
        if previous is missing:
            transformer_options.pop(key, None)
        else:
            transformer_options[key] = previous


def state_of(transformer_options, key: str, default=None):
    """The run state under ``key`` in an attn1 patch's ``extra_options`` (or any ``transformer_options``)."""
    if not transformer_options:
        return default
    state = transformer_options.get(key)
    return default if state is None else state


def post_cfg_state(args, key: str, default=None):
    """The run state under ``key`` as a post-CFG function sees it (``args["model_options"]``)."""
    options = args.get("model_options") or {}
    return state_of(options.get("transformer_options"), key, default)


def observer_of(transformer_options):
    """The debug observer installed in these ``transformer_options``, or None (the production case)."""
    if not transformer_options:
        return None
    return transformer_options.get(OBSERVER_KEY)


def notify(transformer_options, event: str, **data) -> None:
    """Report ``event`` to the debug observer, if one is installed."""
    observer = observer_of(transformer_options)
    if observer is not None:
        observer(event, data)


class BoundedCache:
    """A cache of a configuration's pure functions (flows of the input video, per latent size or frame pair),
    holding at most ``maxsize`` entries and dropping the least recently used first.

    Written here because ``functools.lru_cache`` memoises a function's arguments, while these caches key on a
    derived value (a latent's size, a frame pair) and must live on the shared :class:`Config` object. Values are
    kept where they were made (the CPU); device copies belong in the run state.
    """

    def __init__(self, maxsize: int):
        if maxsize < 1:
            raise ValueError(f"maxsize is {maxsize}; it must be at least 1")
        self.maxsize = int(maxsize)
        self._entries: collections.OrderedDict = collections.OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key) -> bool:
        return key in self._entries

    def get(self, key, make):
        """The entry for ``key``, made by ``make()`` (and stored) when it is missing."""
        if key in self._entries:
            self._entries.move_to_end(key)
            return self._entries[key]
        value = make()
        self._entries[key] = value
        while len(self._entries) > self.maxsize:
            self._entries.popitem(last=False)
        return value
