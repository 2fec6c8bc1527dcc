"""What the checks at the start of a ``--servers`` run judge a server by, from its ``/object_info``.

:class:`Registry` is a server's node registry in the shape ``overrides`` and ``workflow_format`` take, so the
UI-to-API conversion and the ``--set`` checks need no ComfyUI in this process; :func:`missing_on` lists what a
prompt needs that a server lacks (node types, model files its combos name); :class:`ServerCheck` is one
server's verdict with its reason; :func:`to_api` converts a workflow against a server's registry. Pure
functions of what the servers answered: asking them is ``Fleet.check`` (``headless/fleet.py``).
"""

from __future__ import annotations

import dataclasses
from typing import Iterable, Optional

from .workflow_format import VIRTUAL_NODES, WorkflowError, ui_to_api

PACK_NODE = "ZSVR_LoadVideo"


class Registry:
    """A server's node registry from ``/object_info``, in the shape ``overrides`` and ``workflow_format`` take."""

    def __init__(self, object_info: dict):
        self.info = object_info or {}

    def input_types(self, class_type: str):
        entry = self.info.get(class_type)
        return None if entry is None else entry.get("input") or {}

    def display_name(self, class_type: str):
        entry = self.info.get(class_type) or {}
        name = entry.get("display_name")
        return name if name and name != class_type else None

    def __contains__(self, class_type):
        return class_type in self.info


def combo_options(spec) -> Optional[list]:
    """The option list of a combo input spec (V1 ``[[...], {}]`` or V3 ``["COMBO", {"options": [...]}]``)."""
    if not isinstance(spec, (list, tuple)) or not spec:
        return None
    if isinstance(spec[0], (list, tuple)):
        return list(spec[0])
    if spec[0] == "COMBO" and len(spec) > 1 and isinstance(spec[1], dict):
        return list(spec[1].get("options") or [])
    return None


def missing_on(registry: Registry, prompt: dict, uploaded: Iterable[tuple] = ()) -> list[str]:
    """What ``prompt`` needs that this server lacks: node types, and model files its combos name.

    ``uploaded``: ``(node id, input)`` pairs filled by an upload (not checked against the server's file list).
    """
    skip = set(uploaded)
    types = sorted({n.get("class_type") for n in prompt.values()} - set(registry.info))
    problems = [f"no node type {t} (install the node pack that provides it)" for t in types]
    for node_id, node in prompt.items():
        spec_groups = registry.input_types(node.get("class_type")) or {}
        for name, value in (node.get("inputs") or {}).items():
            if (node_id, name) in skip or not isinstance(value, str):
                continue
            spec = (spec_groups.get("required") or {}).get(name) or (spec_groups.get("optional") or {}).get(name)
            options = combo_options(spec)
            if options is None or value in options or (
                    isinstance(spec[-1], dict) and any(k.endswith("_upload") for k in spec[-1])):
                continue
            problems.append(f"node {node_id} ({node['class_type']}) {name} {value!r} is not among its options "
                            "(a model file missing there? copy it into that server's models folder)")
    return problems


@dataclasses.dataclass
class ServerCheck:
    """One server's answer at start: usable or not, and why."""

    url: str
    ok: bool
    problem: str = ""
    version: str = ""
    device: str = ""
    registry: Optional[Registry] = None

    def line(self) -> str:
        if self.ok:
            return f"server {self.url}: ok (ComfyUI {self.version or '?'}, {self.device or 'device ?'})"
        return f"server {self.url}: NOT USED: {self.problem}"


def to_api(workflow: dict, registry: Registry) -> dict:
    """A UI or API workflow as an API prompt, against a server's registry (raises ``WorkflowError``)."""
    if "nodes" in workflow:
        unknown = sorted({n.get("type") for n in workflow["nodes"]} - VIRTUAL_NODES - set(registry.info))
        if unknown:
            raise WorkflowError(f"the workflow needs node types the server does not have: {', '.join(unknown)}")
        return ui_to_api(workflow, registry.input_types)
    return workflow
