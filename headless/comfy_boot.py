"""ComfyUI booted in this process with the pack loaded: the one boot the runner, the benches and the tests share.

What a prompt goes through is exactly what ComfyUI's server does for ``POST /prompt``:
``execution.validate_prompt`` then ``execution.PromptExecutor.execute``, with the pack
loaded by ComfyUI's own ``nodes.load_custom_node``. The boot order matters, and each
step avoids a failure seen on the host:

* ``comfy.cli_args.args.cpu`` is set before ``comfy.model_management`` is imported
  (it probes CUDA at import);
* ``utils.extra_config`` and ``server`` are imported before ``nodes``, which puts
  ``comfy/`` first on ``sys.path`` (``comfy/utils.py`` then shadows the top-level
  ``utils`` package);
* the global progress hook follows ``main.py``'s contract: it forwards progress and
  raises when the user interrupts, so long loops stop mid-node.

Two ways to load custom nodes (``custom_nodes=``):

* ``"pack"``: ComfyUI's own nodes and this pack only (the tests and benches: a
  session must not pick up whatever packs happen to be installed);
* ``"comfyui"``: what ``main.py`` would load for the user (the runner): the
  ``extra_model_paths.yaml`` next to ComfyUI, the API nodes unless
  ``--disable-api-nodes``, and every pack in each ``custom_nodes`` folder through
  ComfyUI's own ``nodes.load_custom_node``, honouring ``--disable-all-custom-nodes``
  and ``--whitelist-custom-nodes`` and skipping ``*.disabled``, with a
  ``server.PromptServer`` instance in place for packs that register web routes on
  import. This pack is loaded once: from its ``custom_nodes`` entry when it sits
  there (found by real path, so a symlinked checkout counts), else from its own
  folder. Each pack's result (:class:`PackLoad`: loaded, failed with the one-line
  reason, or skipped) is kept in ``ComfyHost.packs``; ComfyUI's log of the loading
  is kept in ``ComfyHost.boot_log`` and only echoed when ``verbose_boot``.

ComfyUI settings that must be in place before it is imported (``base_directory``,
``disable_all_custom_nodes``, ...) are passed as ``comfy_args`` and written to
``comfy.cli_args.args`` first.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import pathlib
import sys
import uuid

from .workflow_format import VIRTUAL_NODES, WorkflowError

PACK_DIR = pathlib.Path(__file__).resolve().parent.parent


class EventLog:
    """The server stand-in ``PromptExecutor`` reports to: it keeps every ``send_sync`` event in order."""

    def __init__(self):
        self.client_id = None
        self.last_node_id = None
        self.last_prompt_id = None
        self.sockets_metadata = {}
        self.events: list = []
        self.listener = None
        """Optional ``listener(event, data)`` called for every event as it happens (the runner's console)."""

    def send_sync(self, event, data, sid=None):
        self.events.append((event, data))
        if self.listener is not None:
            self.listener(event, data)

    def queue_updated(self):
        pass


@dataclasses.dataclass
class Execution:
    """What one prompt did: validation, success, the error event, interruption, and node events."""

    valid: bool
    success: bool
    validation_error: dict | None = None
    node_errors: dict | None = None
    error: dict | None = None
    interrupted: bool = False
    cached: list = dataclasses.field(default_factory=list)
    executed: list = dataclasses.field(default_factory=list)
    outputs: dict = dataclasses.field(default_factory=dict)

    def error_text(self) -> str:
        """One line saying why the prompt failed ("" when it did not)."""
        if not self.valid:
            details = [(self.validation_error or {}).get("message", ""), (self.validation_error or {}).get("details", "")]
            for node_id, err in (self.node_errors or {}).items():
                for e in err.get("errors", []):
                    details.append(f"node {node_id}: {e.get('details') or e.get('message')}")
            return " | ".join(d for d in details if d)
        if self.error is not None:
            return f"node {self.error['node_id']} ({self.error['node_type']}): {self.error['exception_message'].strip()}"
        return "interrupted" if self.interrupted else ""


@dataclasses.dataclass
class PackLoad:
    """What happened to one entry of a ``custom_nodes`` folder at boot."""

    name: str
    path: str
    ok: bool
    error: str | None = None
    """Why it failed, one line (the exception ComfyUI logged), or why it was skipped."""
    skipped: bool = False
    this_pack: bool = False
    node_types: list = dataclasses.field(default_factory=list)


class MissingNodeTypes(WorkflowError):
    """A workflow needs node types that are not registered; the message says which and what to do."""


class _ListHandler(logging.Handler):
    def __init__(self, records: list):
        super().__init__(logging.DEBUG)
        self.records = records

    def emit(self, record):
        self.records.append(record)


@contextlib.contextmanager
def _captured_log(records: list, echo: bool):
    """Route the root logger into ``records`` for the block (echoed afterwards to the usual handlers if ``echo``)."""
    root = logging.getLogger()
    saved_handlers, saved_level = root.handlers[:], root.level
    root.handlers = [_ListHandler(records)]
    root.setLevel(min(saved_level, logging.INFO))
    try:
        yield records
    finally:
        root.handlers = saved_handlers
        root.setLevel(saved_level)
        if echo:
            for record in records:
                if record.levelno >= saved_level:
                    for handler in saved_handlers or [logging.lastResort]:
                        if record.levelno >= handler.level:
                            handler.handle(record)


def failure_reason(messages: list[str]) -> str:
    """The one line that says why a pack failed, from what ComfyUI logged while loading it."""
    for message in messages:
        if message.lstrip().startswith("Traceback"):
            lines = [line.strip() for line in message.strip().splitlines() if line.strip()]
            return lines[-1]
    return messages[-1].strip().splitlines()[-1] if messages else "it failed without a logged reason"


def _pack_key(name: str) -> str:
    """Folder names and registry ids compared loosely: ``ComfyUI-VideoHelperSuite`` ~ ``comfyui-videohelpersuite``."""
    key = name.rsplit("/", 1)[-1].lower()
    for prefix in ("comfyui-", "comfyui_", "comfyui"):
        if key.startswith(prefix) and len(key) > len(prefix):
            key = key[len(prefix):]
            break
    return "".join(ch for ch in key if ch.isalnum())


def explain_missing(missing: dict, packs: list, mode: str, custom_node_dirs=(), hints=None) -> str:
    """The error for node types the registry lacks.

    Args:
        missing: class_type -> list of the workflow's node ids that use it.
        packs: the boot's :class:`PackLoad` list.
        mode: the boot's ``custom_nodes`` mode ("pack" or "comfyui").
        custom_node_dirs: ComfyUI's ``custom_nodes`` folders (where to install a pack).
        hints: class_type -> the pack the UI workflow says the node comes from (``cnr_id``/``aux_id``).
    """
    hints = hints or {}
    used = "; ".join(f"{t} (node {', '.join(map(str, ids))})" for t, ids in sorted(missing.items()))
    parts = [f"the workflow needs node types that are not registered: {used}."]
    failed = [p for p in packs if not p.ok and not p.skipped]
    skipped = [p for p in packs if p.skipped]
    explained = set()
    for class_type in sorted(missing):
        hint = hints.get(class_type)
        for pack in failed + skipped:
            if hint and _pack_key(hint) == _pack_key(pack.name):
                state = ("failed to import: " + (pack.error or "")) if not pack.skipped else \
                    f"was not loaded ({pack.error})"
                fix = (f"fix that (usually `pip install -r {pack.path}/requirements.txt`; --verbose shows the "
                       "traceback) and run again." if not pack.skipped else
                       f"add --whitelist-custom-nodes {pack.name}.")
                parts.append(f"{class_type} comes from custom node pack {pack.name!r}, which {state}; {fix}")
                explained.add(class_type)
    rest = set(missing) - explained
    if rest and failed:
        listed = "; ".join(f"{p.name} ({p.error})" for p in failed)
        parts.append(f"These custom node packs failed to import and may provide them: {listed}. Fix their "
                     "imports (--verbose shows the tracebacks) and run again.")
    if rest and skipped:
        parts.append(f"Not loaded because of --disable-all-custom-nodes: {', '.join(p.name for p in skipped)}; "
                     "add the one you need with --whitelist-custom-nodes NAME.")
    if rest and mode == "pack":
        parts.append("This boot loads only ComfyUI's own nodes and the ZSVR pack (custom_nodes='pack').")
    elif rest and not failed and not skipped:
        where = ", ".join(str(d) for d in custom_node_dirs) or "ComfyUI's custom_nodes folder"
        parts.append(f"Install the node pack that provides them into {where} (or check the workflow "
                     "was saved with the packs you have).")
    return " ".join(parts)


class ComfyHost:
    """A booted in-process ComfyUI with the pack loaded.

    Args:
        comfy_dir: the ComfyUI checkout.
        cpu: force CPU (``None``: CPU when CUDA is not available).
        output_dir, input_dir, temp_dir: ComfyUI's I/O folders (unchanged when ``None``).
        model_folders: extra ``(kind, folder)`` model paths, registered as the defaults.
        client_id: the client id prompts run under (per-node events need one).
        custom_nodes: "pack" (ComfyUI's nodes and this pack only) or "comfyui" (what ComfyUI itself
            loads; see the module docstring).
        comfy_args: ``comfy.cli_args.args`` fields to set before ComfyUI is imported, e.g.
            ``{"base_directory": "...", "disable_all_custom_nodes": True, "whitelist_custom_nodes": [...]}``.
        verbose_boot: echo ComfyUI's log of the custom-node loading (kept in ``boot_log`` either way).
        core_progress_bars: leave ComfyUI's own tqdm bars on (the runner draws its own and turns them off).
    """

    def __init__(self, comfy_dir: pathlib.Path, cpu: bool | None = None, output_dir: pathlib.Path | None = None,
                 input_dir: pathlib.Path | None = None, temp_dir: pathlib.Path | None = None,
                 model_folders=(), client_id: str = "zsvr-headless", custom_nodes: str = "pack",
                 comfy_args: dict | None = None, verbose_boot: bool = False, core_progress_bars: bool = True):
        if custom_nodes not in ("pack", "comfyui"):
            raise ValueError(f"custom_nodes={custom_nodes!r}: use 'pack' (this pack only) or 'comfyui' "
                             "(every pack ComfyUI would load)")
        comfy_dir = pathlib.Path(comfy_dir)
        if str(comfy_dir) not in sys.path:
            sys.path.insert(0, str(comfy_dir))
        import comfy.cli_args

        comfy_args = dict(comfy_args or {})
        base = comfy_args.get("base_directory")
        if base is not None and "folder_paths" in sys.modules:
            if os.path.abspath(base) != sys.modules["folder_paths"].base_path:
                raise RuntimeError(f"base_directory {base}: ComfyUI's folder_paths was already imported with base "
                                   f"{sys.modules['folder_paths'].base_path}; set it before the first boot")
        for key, value in comfy_args.items():
            if not hasattr(comfy.cli_args.args, key):
                raise ValueError(f"comfy_args: ComfyUI has no setting {key!r} (see comfy/cli_args.py)")
            setattr(comfy.cli_args.args, key, value)
        if cpu is None:
            import torch

            cpu = not torch.cuda.is_available()
        comfy.cli_args.args.cpu = cpu
        import folder_paths

        for folder, setter in ((output_dir, folder_paths.set_output_directory),
                               (input_dir, folder_paths.set_input_directory),
                               (temp_dir, folder_paths.set_temp_directory)):
            if folder is not None:
                pathlib.Path(folder).mkdir(parents=True, exist_ok=True)
                setter(str(folder))
        for kind, folder in model_folders:
            pathlib.Path(folder).mkdir(parents=True, exist_ok=True)
            folder_paths.add_model_folder_path(kind, str(folder), is_default=True)
        import utils.extra_config  # noqa: F401  (before nodes: see the module docstring)
        import server  # noqa: F401
        import nodes
        import execution
        import comfy.utils
        import comfy.model_management

        self.comfy_dir = comfy_dir
        self.folder_paths = folder_paths
        self.nodes = nodes
        self.execution = execution
        self.model_management = comfy.model_management
        self.client_id = client_id
        self.custom_nodes = custom_nodes
        self.args = comfy.cli_args.args
        self.packs: list[PackLoad] = []
        self.builtin_failures: list[str] = []
        self.boot_log: list[logging.LogRecord] = []
        if custom_nodes == "pack":
            asyncio.run(nodes.init_extra_nodes(init_custom_nodes=False, init_api_nodes=False))
            pack_path = str(PACK_DIR)
            if not asyncio.run(nodes.load_custom_node(pack_path)):
                raise RuntimeError(f"ComfyUI could not load the pack at {PACK_DIR}; see the log above")
            self.packs.append(PackLoad(PACK_DIR.name, pack_path, True, this_pack=True))
        else:
            pack_path = self._boot_like_comfyui(verbose_boot)
        self.pack = sys.modules[__package__.partition(".")[0]]
        """The pack's package (``zsvr``; ComfyUI's own module for the folder registered it under that name)."""
        self.progress_listener = None
        comfy.utils.set_progress_bar_global_hook(self._progress_hook)
        comfy.utils.set_progress_bar_enabled(core_progress_bars)
        self.server = EventLog()
        self.executor = execution.PromptExecutor(self.server, cache_type=execution.CacheType.CLASSIC)

    @property
    def events(self) -> list:
        return self.server.events

    @property
    def event_listener(self):
        """``listener(event, data)`` called for each executor event as it is sent (None: off)."""
        return self.server.listener

    @event_listener.setter
    def event_listener(self, listener):
        self.server.listener = listener

    # -- custom nodes as ComfyUI loads them ----------------------------------------
    def _boot_like_comfyui(self, verbose: bool) -> str:
        """Load what ComfyUI's ``main.py`` loads; returns the path this pack was loaded from."""
        import hook_breaker_ac10a0
        import server
        import utils.extra_config

        args, nodes, folder_paths = self.args, self.nodes, self.folder_paths
        hook_breaker_ac10a0.save_functions()  # as main.py: packs may not replace core functions on import
        try:
            return self._load_all(args, nodes, folder_paths, server, utils.extra_config, verbose)
        finally:
            hook_breaker_ac10a0.restore_functions()

    def _load_all(self, args, nodes, folder_paths, server, extra_config, verbose: bool) -> str:
        with _captured_log(self.boot_log, echo=verbose):
            extra = self.comfy_dir / "extra_model_paths.yaml"
            if extra.is_file():
                extra_config.load_extra_path_config(str(extra))
            if getattr(server.PromptServer, "instance", None) is None:  # packs add web routes on import
                server.PromptServer(asyncio.new_event_loop())
            self.builtin_failures = list(asyncio.run(nodes.init_extra_nodes(
                init_custom_nodes=False, init_api_nodes=not args.disable_api_nodes)) or [])
        base_names = set(nodes.NODE_CLASS_MAPPINGS)
        loads = self.load_custom_node_folders(folder_paths.get_folder_paths("custom_nodes"), base_names,
                                              args.disable_all_custom_nodes, args.whitelist_custom_nodes, verbose)
        self.packs.extend(loads)
        pack_path = next((p.path for p in loads if p.this_pack), None)
        if pack_path is None:  # the runner used from a checkout outside custom_nodes
            pack_path = str(PACK_DIR)
            self.packs.append(self._load_pack(PACK_DIR.name, pack_path, base_names, True, verbose))
        mine = next(p for p in self.packs if p.this_pack)
        if not mine.ok:
            raise RuntimeError(f"ComfyUI could not load the ZSVR pack at {pack_path}: {mine.error}")
        return pack_path

    def load_custom_node_folders(self, folders, ignore: set, disable_all: bool = False, whitelist=(),
                                 verbose: bool = False) -> list[PackLoad]:
        """Load every pack in ``folders`` as ComfyUI's ``init_external_custom_nodes`` picks them.

        Skips ``__pycache__``, ``*.disabled`` and non-``.py`` files; with ``disable_all`` only this pack and
        the ``whitelist`` folders load (the others are reported as skipped). This pack is recognised by real
        path and loaded at most once. ``ignore``: node ids packs may not replace (ComfyUI's own).
        """
        pack_real = os.path.realpath(PACK_DIR)
        loads: list[PackLoad] = []
        for folder in folders:
            if not os.path.isdir(folder):
                continue
            for entry in os.listdir(os.path.realpath(folder)):
                path = os.path.join(folder, entry)
                if entry == "__pycache__" or entry.endswith(".disabled"):
                    continue
                if os.path.isfile(path) and not entry.endswith(".py"):
                    continue
                this_pack = os.path.realpath(path) == pack_real
                if this_pack and any(p.this_pack for p in (*self.packs, *loads)):
                    continue  # already loaded (the same checkout reached twice: two folders, or a link)
                if not this_pack and disable_all and entry not in whitelist:
                    loads.append(PackLoad(entry, path, False, "--disable-all-custom-nodes", skipped=True))
                    continue
                loads.append(self._load_pack(entry, path, ignore, this_pack, verbose))
        return loads

    def _load_pack(self, name: str, path: str, ignore: set, this_pack: bool, verbose: bool) -> PackLoad:
        before = set(self.nodes.NODE_CLASS_MAPPINGS)
        records: list[logging.LogRecord] = []
        with _captured_log(records, echo=verbose):
            ok = asyncio.run(self.nodes.load_custom_node(path, ignore, module_parent="custom_nodes"))
        self.boot_log.extend(records)
        warnings = [r.getMessage() for r in records if r.levelno >= logging.WARNING]
        return PackLoad(name, path, bool(ok), None if ok else failure_reason(warnings), this_pack=this_pack,
                        node_types=sorted(set(self.nodes.NODE_CLASS_MAPPINGS) - before))

    def pack_report(self) -> list[str]:
        """One line per custom-node outcome worth telling the user (loaded list, each failure, skipped list)."""
        loaded = [p.name + (" (this pack)" if p.this_pack else "") for p in self.packs if p.ok]
        lines = [f"custom nodes loaded: {', '.join(loaded)}"]
        for p in self.packs:
            if not p.ok and not p.skipped:
                lines.append(f"custom node pack {p.name} failed to import: {p.error}")
        skipped = [p.name for p in self.packs if p.skipped]
        if skipped:
            lines.append(f"custom nodes not loaded (--disable-all-custom-nodes): {', '.join(skipped)}")
        if self.builtin_failures:
            lines.append(f"ComfyUI's own nodes that failed to import (missing dependencies; --verbose shows why): "
                         f"{', '.join(self.builtin_failures)}")
        return lines

    def display_name(self, class_type: str) -> str | None:
        """The name the editor shows for a node type (None when it has none of its own)."""
        return self.nodes.NODE_DISPLAY_NAME_MAPPINGS.get(class_type)

    def check_node_types(self, workflow: dict) -> None:
        """Raise :class:`MissingNodeTypes` when the (UI or API) workflow uses an unregistered node type."""
        missing: dict[str, list] = {}
        hints = {}
        if "nodes" in workflow:
            subgraphs = {sg.get("id") for sg in (workflow.get("definitions") or {}).get("subgraphs", [])}
            for node in workflow["nodes"]:
                kind = node.get("type")
                if kind in VIRTUAL_NODES or kind in subgraphs or kind in self.nodes.NODE_CLASS_MAPPINGS:
                    continue
                missing.setdefault(kind, []).append(node.get("id"))
                props = node.get("properties") or {}
                if props.get("cnr_id") or props.get("aux_id"):
                    hints[kind] = props.get("cnr_id") or props.get("aux_id")
        else:
            for node_id, node in workflow.items():
                kind = node.get("class_type") if isinstance(node, dict) else None
                if kind is not None and kind not in self.nodes.NODE_CLASS_MAPPINGS:
                    missing.setdefault(kind, []).append(node_id)
        if missing:
            raise MissingNodeTypes(explain_missing(missing, self.packs, self.custom_nodes,
                                                   self.folder_paths.get_folder_paths("custom_nodes"), hints))

    def _progress_hook(self, value, total, preview_image=None, prompt_id=None, node_id=None):
        from comfy_execution.utils import get_executing_context

        ctx = get_executing_context()
        if node_id is None and ctx is not None:
            node_id = ctx.node_id
        if self.progress_listener is not None:
            self.progress_listener(node_id, value, total)
        self.model_management.throw_exception_if_processing_interrupted()

    def input_types(self, class_type: str):
        """``INPUT_TYPES()`` of a registered node class, or None."""
        cls = self.nodes.NODE_CLASS_MAPPINGS.get(class_type)
        return None if cls is None else cls.INPUT_TYPES()

    def to_api(self, workflow: dict) -> dict:
        """A UI-format workflow converted to API format (an API-format one is returned as it is).

        Raises :class:`MissingNodeTypes` first when a node type is not registered.
        """
        self.check_node_types(workflow)
        if "nodes" not in workflow:
            return workflow
        from . import workflow_format

        return workflow_format.ui_to_api(workflow, self.input_types)

    def validate(self, prompt: dict):
        """The host's own prompt validation: (ok, error, outputs, node_errors)."""
        return asyncio.run(self.execution.validate_prompt(str(uuid.uuid4()), prompt, None))

    def execute(self, prompt: dict) -> Execution:
        """Validate and run an API-format prompt; never raises for a node's error."""
        valid = self.validate(prompt)
        if not valid[0]:
            return Execution(valid=False, success=False, validation_error=valid[1], node_errors=valid[3])
        self.server.events.clear()
        try:
            self.executor.execute(prompt, str(uuid.uuid4()), {"client_id": self.client_id}, valid[2])
        finally:
            self.nodes.interrupt_processing(False)
        result = Execution(valid=True, success=self.executor.success)
        for event, data in self.executor.status_messages:
            if event == "execution_error":
                result.error = data
                result.success = False
            elif event == "execution_interrupted":
                result.interrupted = True
                result.success = False
            elif event == "execution_cached":
                result.cached = list(data["nodes"])
        for event, data in self.server.events:
            if event == "executing" and isinstance(data, dict) and data.get("node") is not None:
                result.executed.append(data["node"])
            elif event == "executed" and isinstance(data, dict):
                result.outputs[data["node"]] = data.get("output")
        return result
