"""``--set NODE.INPUT=VALUE``: widget overrides that either change what the user meant or fail saying why.

An override that matches nothing must never let the run go on with the
workflow's own values, so every ``--set`` is checked against the prompt and
the node registry before anything runs:

* **NODE** is matched against every node of the (API-format) prompt by its id
  (``12``), its title (``_meta.title``, what the user typed in the editor), its
  type (``ZSVR_InversionSampler``) or its display name (``Inversion Sampler
  (ZSVR)``, what the editor shows when there is no title). All nodes it matches
  are changed; no match is an error listing the workflow's nodes.
* **INPUT** must be a widget input of that node's class (INT, FLOAT, STRING,
  BOOLEAN or a combo); an unknown name lists the node's widget inputs, a
  socket input (MODEL, IMAGE, ...) says that it is wired, not set.
* **VALUE** must pass the input's schema: a whole number for INT, a finite
  number for FLOAT, ``true``/``false`` for BOOLEAN, one of the options for a
  combo, and within ``min``/``max``. Anything else is an error that gives the
  accepted values. STRING inputs take the text as typed (a JSON string literal
  is unquoted).

Pure Python: the registry is passed in as two callables, ``input_types(class_type)``
(the class's ``INPUT_TYPES()`` or None) and ``display_name(class_type)`` (or None),
which :class:`headless.comfy_boot.ComfyHost` provides.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import math
from typing import Callable, Iterable

WIDGET_TYPES = ("INT", "FLOAT", "STRING", "BOOLEAN", "COMBO")
MAX_LISTED = 12
"""How many options or names an error lists before it says how many more there are."""


class OverrideError(ValueError):
    """A ``--set`` that cannot be applied; the message names it and says what would be accepted."""


@dataclasses.dataclass(frozen=True)
class Override:
    """One parsed ``--set NODE.INPUT=VALUE`` (``raw`` is VALUE exactly as typed)."""

    node: str
    input: str
    raw: str

    @property
    def text(self) -> str:
        return f"{self.node}.{self.input}={self.raw}"


@dataclasses.dataclass(frozen=True)
class Applied:
    """What an override changed: one node's input, its old and new value."""

    override: Override
    node_id: str
    node_name: str
    old: object
    new: object


def parse(items: Iterable[str]) -> list[Override]:
    """Parse ``NODE.INPUT=VALUE`` strings (NODE may contain dots; the last dot before '=' splits)."""
    out = []
    for item in items or ():
        target, sep, raw = item.partition("=")
        node, dot, name = target.rpartition(".")
        if not sep or not dot or not node.strip() or not name.strip():
            raise OverrideError(
                f"--set {item!r}: expected NODE.INPUT=VALUE, e.g. --set \"Inversion Sampler (ZSVR).skip=30\" "
                "(NODE is a node id, title, type or display name; INPUT a widget name)")
        out.append(Override(node.strip(), name.strip(), raw))
    return out


def _listing(names: list[str]) -> str:
    shown = ", ".join(names[:MAX_LISTED])
    return shown + (f", ... ({len(names) - MAX_LISTED} more)" if len(names) > MAX_LISTED else "")


def _suggest(word: str, choices: Iterable[str]) -> str:
    close = difflib.get_close_matches(str(word), [str(c) for c in choices], n=3, cutoff=0.6)
    return f" Did you mean {' or '.join(repr(c) for c in close)}?" if close else ""


def node_label(node_id: str, node: dict, display_name: Callable[[str], str | None]) -> str:
    """``12 "My title" (Inversion Sampler (ZSVR), ZSVR_InversionSampler)``: every name the node answers to."""
    class_type = node.get("class_type", "?")
    title = (node.get("_meta") or {}).get("title")
    shown = display_name(class_type)
    kinds = ", ".join(dict.fromkeys(n for n in (shown, class_type) if n))
    return f"{node_id}" + (f" {title!r}" if title and title != shown else "") + f" ({kinds})"


def match_nodes(prompt: dict, node: str, display_name: Callable[[str], str | None]) -> list[str]:
    """Ids of the prompt's nodes whose id, title, type or display name is ``node``."""
    found = []
    for node_id, entry in prompt.items():
        class_type = entry.get("class_type")
        names = {str(node_id), (entry.get("_meta") or {}).get("title"), class_type, display_name(class_type)}
        if node in names:
            found.append(node_id)
    return found


def _spec(types: dict, name: str):
    for group in ("required", "optional"):
        spec = (types.get(group) or {}).get(name)
        if spec is not None:
            return spec
    return None


def _kind_and_options(spec) -> tuple[str, dict]:
    kind = spec[0]
    opts = spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}
    if isinstance(kind, (list, tuple)):
        return "COMBO", {**opts, "options": list(kind)}
    return str(getattr(kind, "value", kind)), opts


def widget_inputs(types: dict) -> list[str]:
    """The inputs of a node class that a ``--set`` can change, in schema order."""
    names = []
    for group in ("required", "optional"):
        for name, spec in (types.get(group) or {}).items():
            if _kind_and_options(spec)[0] in WIDGET_TYPES:
                names.append(name)
    return names


def _json(raw: str):
    try:
        return json.loads(raw)
    except (json.JSONDecodeError, ValueError):
        return raw


def coerce(raw: str, spec, where: str):
    """VALUE as typed -> the value the input's schema accepts, or :class:`OverrideError` saying what it accepts."""
    kind, opts = _kind_and_options(spec)
    lo, hi = opts.get("min"), opts.get("max")
    bounds = (f" from {lo}" if lo is not None else "") + (f" to {hi}" if hi is not None else "")
    value = _json(raw.strip())

    def in_range(number):
        if (lo is not None and number < lo) or (hi is not None and number > hi):
            raise OverrideError(f"{where}: {raw!r} is out of range; use a value{bounds}.")
        return number

    if kind == "STRING":
        return value if isinstance(value, str) else raw
    if kind == "BOOLEAN":
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false"):
            return value.lower() == "true"
        raise OverrideError(f"{where}: {raw!r} is not a boolean; use true or false.")
    if kind == "INT":
        if isinstance(value, float) and math.isfinite(value) and value.is_integer():
            value = int(value)
        if not isinstance(value, int) or isinstance(value, bool):
            raise OverrideError(f"{where}: {raw!r} is not a whole number; use an integer{bounds}.")
        return in_range(value)
    if kind == "FLOAT":
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            raise OverrideError(f"{where}: {raw!r} is not a number; use a number{bounds}.")
        if not math.isfinite(value):
            raise OverrideError(f"{where}: {raw!r} is not a finite number; use a number{bounds}.")
        return in_range(float(value))
    if kind == "COMBO":
        options = list(opts.get("options") or [])
        for candidate in (raw, raw.strip(), value):
            if candidate in options:
                return candidate
        if not options:
            raise OverrideError(f"{where}: {raw!r} is not available; this input has no options here "
                                "(for a file list: put the file into its ComfyUI folder).")
        raise OverrideError(f"{where}: {raw!r} is not one of its options: {_listing([str(o) for o in options])}."
                            + _suggest(raw, options))
    raise OverrideError(f"{where} is a {kind} socket (it is wired to another node's output); --set changes "
                        "widget values only.")


def apply(prompt: dict, overrides: Iterable[Override], input_types: Callable[[str], dict | None],
          display_name: Callable[[str], str | None] = lambda _: None) -> list[Applied]:
    """Check every override against ``prompt`` and the registry, then apply them all (in place).

    Nothing is changed unless every override is valid. Returns one :class:`Applied` per changed node input.
    """
    changes = []
    for ov in overrides:
        ids = match_nodes(prompt, ov.node, display_name)
        if not ids:
            labels = [node_label(i, n, display_name) for i, n in prompt.items()]
            names = {str(i) for i in prompt}
            for n in prompt.values():
                names |= {n.get("class_type"), (n.get("_meta") or {}).get("title"), display_name(n.get("class_type"))}
            raise OverrideError(
                f"--set {ov.text!r}: no node matches {ov.node!r} by id, title, type or display name."
                + _suggest(ov.node, [x for x in names if x]) + f" The workflow's nodes: {_listing(labels)}.")
        for node_id in ids:
            entry = prompt[node_id]
            label = node_label(node_id, entry, display_name)
            types = input_types(entry.get("class_type"))
            if types is None:
                raise OverrideError(f"--set {ov.text!r}: node {label} has a type that is not registered; "
                                    "install its node pack or remove the override.")
            spec = _spec(types, ov.input)
            where = f"--set {ov.text!r}: input {ov.input!r} of node {label}"
            if spec is None:
                settable = widget_inputs(types)
                raise OverrideError(
                    f"--set {ov.text!r}: node {label} has no input {ov.input!r}."
                    + _suggest(ov.input, settable) + f" Its widget inputs: {_listing(settable) or '(none)'}.")
            value = coerce(ov.raw, spec, where)
            changes.append(Applied(ov, node_id, label, entry.get("inputs", {}).get(ov.input), value))
    for change in changes:
        prompt[change.node_id].setdefault("inputs", {})[change.override.input] = change.new
    return changes


def describe(changes: list[Applied]) -> list[str]:
    """One line per applied override, for the console: ``--set X.y=3: node 12 (...) y 5 -> 3``."""
    lines = []
    for c in changes:
        old = f"wired from node {c.old[0]}" if isinstance(c.old, list) else repr(c.old)
        lines.append(f"--set {c.override.text}: node {c.node_name} {c.override.input} {old} -> {c.new!r}")
    return lines
