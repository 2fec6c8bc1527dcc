"""UI-format workflow -> API-format prompt, following the ComfyUI frontend's rules.

ComfyUI's server executes only API-format prompts; the conversion from the
drag-and-drop (UI) format lives in the web frontend (``graphToPrompt``). This
module re-states those rules in Python (written for this pack; no frontend
code is used), so the headless runner and the tests can execute the shipped
workflows through the host's executor:

* ``widgets_values`` fill a node's widget inputs in ``INPUT_TYPES`` order
  (required, then optional). A widget is an INT, FLOAT, STRING, BOOLEAN or
  COMBO input without ``forceInput``. An INT/FLOAT marked
  ``control_after_generate`` (or named ``seed``/``noise_seed``) is followed by
  its control value ("fixed", "randomize", ...), which is skipped. A combo with
  an upload flag (``image_upload``/``video_upload``/``audio_upload``) adds an
  upload button *after all other widgets*, whose value ("image") is the last
  entry and is ignored (checked against frontend 1.27.10 in a real browser:
  ``tests/test_browser_workflows.py``); it is dropped before the widgets are
  filled, so a file saved before a widget was appended gives that widget its
  default (not the button's value). A dict ``widgets_values`` maps by name.
* A linked input becomes ``[source_id, output_slot]``, after following
  ``Reroute`` nodes and bypassed (mode 4) nodes, which pass their first input
  of the link's type through; a muted (mode 2) source drops the input.
* ``PrimitiveNode`` sources give their widget value, not a link.
* ``Note``/``MarkdownNote``, ``Reroute`` and ``PrimitiveNode`` are not emitted;
  muted and bypassed nodes are not emitted.
* Subgraphs are not supported (refused with a clear error).

Pure Python: the node registry is passed in as ``input_types(class_type)``.
"""

from __future__ import annotations

from typing import Callable

VIRTUAL_NODES = {"Note", "MarkdownNote", "Reroute", "PrimitiveNode"}
WIDGET_TYPES = {"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"}
UPLOAD_FLAGS = ("image_upload", "video_upload", "audio_upload", "file_upload")
MUTED, BYPASSED = 2, 4


class WorkflowError(ValueError):
    """A workflow that cannot be converted; the message says which node and why."""


def _links(workflow: dict) -> dict[int, tuple]:
    out = {}
    for link in workflow.get("links", []):
        if isinstance(link, dict):
            out[link["id"]] = (link["origin_id"], link["origin_slot"], link["target_id"], link["target_slot"],
                               link.get("type"))
        else:
            out[link[0]] = (link[1], link[2], link[3], link[4], link[5] if len(link) > 5 else None)
    return out


def is_widget(spec) -> bool:
    kind = spec[0]
    opts = spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}
    if opts.get("forceInput"):
        return False
    return isinstance(kind, (list, tuple)) or kind in WIDGET_TYPES


def widget_slots(input_types: dict) -> list[tuple[str, int]]:
    """(input name, number of widgets_values entries it takes) for each widget input, in order."""
    slots = []
    for group in ("required", "optional"):
        for name, spec in (input_types.get(group) or {}).items():
            if not is_widget(spec):
                continue
            opts = spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}
            width = 1
            if spec[0] in ("INT", "FLOAT") and opts.get("control_after_generate"):
                width += 1
            slots.append((name, width))
    return slots


def has_upload_button(input_types: dict) -> bool:
    """True when the frontend appends an upload button (its value is the last widgets_values entry)."""
    for group in ("required", "optional"):
        for spec in (input_types.get(group) or {}).values():
            opts = spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}
            if any(opts.get(flag) for flag in UPLOAD_FLAGS):
                return True
    return False


def _default(spec):
    opts = spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}
    if "default" in opts:
        return opts["default"]
    if isinstance(spec[0], (list, tuple)) and spec[0]:
        return spec[0][0]
    if opts.get("options"):
        return opts["options"][0]
    return None


def ui_to_api(workflow: dict, input_types: Callable[[str], dict | None]) -> dict:
    """Convert a UI-format workflow to an API-format prompt (see the module docstring)."""
    if not isinstance(workflow, dict) or "nodes" not in workflow:
        raise WorkflowError("not a UI-format workflow (no 'nodes' list); API-format prompts need no conversion")
    subgraphs = {sg.get("id") for sg in (workflow.get("definitions") or {}).get("subgraphs", [])}
    nodes = {n["id"]: n for n in workflow["nodes"]}
    links = _links(workflow)
    unknown = sorted({n["type"] for n in nodes.values()
                      if n["type"] not in VIRTUAL_NODES and input_types(n["type"]) is None})
    if unknown:
        if subgraphs & set(unknown):
            raise WorkflowError("workflows with subgraphs are not supported; unpack the subgraph in the editor first")
        raise WorkflowError(f"unknown node types: {', '.join(unknown)} (is the node pack that provides them installed?)")

    def resolve(link_id, seen=()):
        """Follow a link to its real source: ('link', [id, slot]), ('value', v) or None."""
        if link_id is None or link_id not in links or link_id in seen:
            return None
        src_id, src_slot, _, _, link_type = links[link_id]
        src = nodes.get(src_id)
        if src is None:
            return None
        seen = seen + (link_id,)
        mode = src.get("mode", 0)
        if src["type"] == "Reroute":
            return resolve(src["inputs"][0].get("link"), seen) if src.get("inputs") else None
        if src["type"] == "PrimitiveNode":
            values = src.get("widgets_values") or []
            return ("value", values[0]) if values else None
        if mode == MUTED:
            return None
        if mode == BYPASSED:
            for inp in src.get("inputs", []):
                if inp.get("link") is not None and (link_type is None or inp.get("type") == link_type):
                    return resolve(inp["link"], seen)
            return None
        return ("link", [str(src_id), src_slot])

    prompt = {}
    for node in sorted(nodes.values(), key=lambda n: n["id"]):
        if node["type"] in VIRTUAL_NODES or node.get("mode", 0) in (MUTED, BYPASSED):
            continue
        types = input_types(node["type"])
        specs = {}
        for group in ("required", "optional"):
            specs.update(types.get(group) or {})
        values = node.get("widgets_values")
        inputs = {}
        if isinstance(values, dict):
            for name, spec in specs.items():
                if is_widget(spec) and name in values:
                    inputs[name] = values[name]
        else:
            values = list(values or [])
            if values and has_upload_button(types):
                # the upload button's value is always the last entry: drop it, so a widget appended to the node
                # later (an older file has one value fewer) takes its default instead of the button's value
                values = values[:-1]
            position = 0
            for name, width in widget_slots(types):
                inputs[name] = values[position] if position < len(values) else _default(specs[name])
                position += width
        for inp in node.get("inputs", []):
            name = inp.get("name")
            if name not in specs:
                continue
            source = resolve(inp.get("link"))
            if source is None:
                if not is_widget(specs[name]):
                    inputs.pop(name, None)
                continue
            inputs[name] = source[1]
        entry = {"class_type": node["type"], "inputs": inputs}
        if node.get("title"):
            entry["_meta"] = {"title": node["title"]}
        prompt[str(node["id"])] = entry
    return prompt
