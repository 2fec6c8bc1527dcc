"""The in-process runner's checks before the first model call: options before ComfyUI boots, the workflow once
before any clip runs.

* :func:`check_chunk_options` (before booting ComfyUI, no ComfyUI import): ``--chunk-frames`` / ``--overlap`` /
  ``--color-match`` against the frame rule of the workflow's ``ZSVR_LoadVideo`` nodes, read from the file
  (UI or API format), so a bad value costs no boot.
* :func:`missing_model_files` (after boot, before any clip): every combo value of the prompt that is not among
  the host's options, i.e. a model file that is not in ComfyUI's models folders, each named with the row of the
  README's download table for that file (the same check ``--servers`` makes of each server,
  ``headless/fleet_preflight.py``).
* :func:`check_models_once` (after boot, before any clip): the model-dependent checks of nodes that know the
  model, run once on a prompt made of only those nodes and what feeds them (the model loaders), before any
  inversion: ``ZSVR_AttentionSwitch``'s ``blocks`` against the model's block count. The loaded models stay in
  ComfyUI's cache, so the first clip does not load them again.
"""

from __future__ import annotations

import pathlib
import re

from ..nodes.errors import InputError
from .fleet_preflight import combo_options

LOADER = "ZSVR_LoadVideo"
FRAME_RULE_WIDGET = 7
"""Position of ``frame_rule`` among ``ZSVR_LoadVideo``'s widget values in a UI-format workflow (the node contract
fixes it: tests/node_contract.json)."""
MODEL_CHECK_NODES = ("ZSVR_AttentionSwitch",)
"""Nodes whose checks need the loaded model (``blocks`` against the model's block count)."""
CHECK_SINK = "zsvr_check_sink"
README = pathlib.Path(__file__).resolve().parent.parent / "README.md"


class WorkflowCheckError(ValueError):
    """The workflow cannot run here (a model file missing, a setting the model refuses): one message, what to do."""


def _frame_rules(workflow: dict) -> set:
    rules = set()
    if "nodes" in workflow:
        for node in workflow.get("nodes") or []:
            if node.get("type") == LOADER and node.get("mode", 0) not in (2, 4):
                values = node.get("widgets_values")
                if isinstance(values, dict):
                    rules.add(values.get("frame_rule", "any"))
                elif isinstance(values, list) and len(values) > FRAME_RULE_WIDGET:
                    rules.add(values[FRAME_RULE_WIDGET])
    else:
        for node in workflow.values():
            if isinstance(node, dict) and node.get("class_type") == LOADER:
                rules.add((node.get("inputs") or {}).get("frame_rule", "any"))
    return rules


def check_chunk_options(chunks, workflow: dict, sets=()) -> None:
    """Raise :class:`InputError` naming the flag when ``chunks`` (a ``ChunkOptions``) cannot work with this
    workflow's frame rule. A rule the file does not fix (several loaders disagreeing, or a ``--set`` on it) is
    checked later, against the prompt."""
    from ..kernels import chunking, color_match
    from ..kernels.errors import ParameterError
    from .chunked_run import _option_error

    rules = _frame_rules(workflow)
    rule_set = any(getattr(s, "input", "") == "frame_rule" for s in sets or ())
    rule = rules.pop() if len(rules) == 1 and not rule_set else "any"
    if rule not in chunking.FRAME_RULES:
        rule = "any"
    try:
        chunking.check_chunking(chunks.chunk_frames, chunks.overlap, rule)
        if chunks.color_match is not None and chunks.color_match not in color_match.METHODS:
            raise ParameterError("method", f"is {chunks.color_match!r}", f"use one of {', '.join(color_match.METHODS)}")
        if chunks.scene_cuts:
            from .shots import check_threshold

            check_threshold(chunks.scene_threshold)
    except ParameterError as exc:
        raise _option_error(exc) from None


def download_row(name: str, readme: pathlib.Path = README) -> str:
    """The README's download-table row for a model file name, as words ("" when the README has none)."""
    try:
        text = readme.read_text(encoding="utf-8")
    except OSError:
        return ""
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) < 3 or not cells[0].startswith("`"):
            continue
        where = cells[0].strip("`").rstrip("/")
        if where.split("/")[-1] == name.rstrip("/").split("/")[-1] and "/" in where:
            source = re.sub(r"`", "", cells[1])
            return f"the README's download table: ComfyUI/models/{cells[0].strip('`')} from {source} ({cells[2]})"
    return ""


def missing_model_files(host, prompt: dict) -> list[str]:
    """One line per combo value the host does not offer (a model file not in its models folders), with where to
    download it; ``ZSVR_LoadVideo``'s video (the clip, staged later) is not checked."""
    problems = []
    for node_id, node in prompt.items():
        class_type = node.get("class_type")
        if class_type == LOADER:
            continue
        types = host.input_types(class_type) or {}
        for name, value in (node.get("inputs") or {}).items():
            if not isinstance(value, str):
                continue
            spec = (types.get("required") or {}).get(name) or (types.get("optional") or {}).get(name)
            options = combo_options(spec)
            if options is None or value in options:
                continue
            if isinstance(spec[-1], dict) and any(k.endswith("_upload") for k in spec[-1]):
                continue
            where = download_row(value)
            fix = f"download it ({where})" if where else "put the file into ComfyUI's models folder for this loader"
            label = (node.get("_meta") or {}).get("title") or host.display_name(class_type) or class_type
            problems.append(f"node {node_id} ({label}) {name}: '{value}' is not in ComfyUI's models folders; "
                            f"{fix}, or choose another with --set {node_id}.{name}=FILE")
    return problems


def _upstream(prompt: dict, node_id: str) -> set:
    seen, todo = set(), [node_id]
    while todo:
        nid = todo.pop()
        if nid in seen or nid not in prompt:
            continue
        seen.add(nid)
        for value in (prompt[nid].get("inputs") or {}).values():
            if isinstance(value, list) and len(value) == 2 and isinstance(value[0], str):
                todo.append(value[0])
    return seen


def check_models_once(host, prompt: dict, say=None, names: dict | None = None) -> None:
    """Run the model-dependent checks (:data:`MODEL_CHECK_NODES`) once, before any clip; raise
    :class:`WorkflowCheckError` with the node's own message when one refuses its settings for this model.
    ``names``: the console's node names (``console.node_names``), given the check's own nodes."""
    checks = [nid for nid, n in prompt.items() if n.get("class_type") in MODEL_CHECK_NODES]
    if not checks or "PreviewAny" not in host.nodes.NODE_CLASS_MAPPINGS:
        return
    part = {}
    for nid in checks:
        needed = _upstream(prompt, nid)
        if any(prompt[n].get("class_type") == LOADER for n in needed):
            continue  # fed by the clip: checked when the clip runs
        for n in needed:
            part[n] = prompt[n]
    if not part:
        return
    for index, nid in enumerate(n for n in checks if n in part):
        part[f"{CHECK_SINK}_{index}"] = {"class_type": "PreviewAny", "inputs": {"source": [nid, 0]}}
        if names is not None:
            names[f"{CHECK_SINK}_{index}"] = ("Model check", "settings against the model")
    if say is not None:
        say("checking the workflow against the model (loading it once) ...")
    run = host.execute(part)
    if not run.success:
        raise WorkflowCheckError(f"the workflow's settings do not fit the model: {run.error_text()}")
