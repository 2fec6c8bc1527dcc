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
"""

from __future__ import annotations

import asyncio
import dataclasses
import pathlib
import sys
import uuid

PACK_DIR = pathlib.Path(__file__).resolve().parent.parent


class EventLog:
    """The server stand-in ``PromptExecutor`` reports to: it keeps every ``send_sync`` event in order."""

    def __init__(self):
        self.client_id = None
        self.last_node_id = None
        self.last_prompt_id = None
        self.sockets_metadata = {}
        self.events: list = []

    def send_sync(self, event, data, sid=None):
        self.events.append((event, data))

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


class ComfyHost:
    """A booted in-process ComfyUI with the pack loaded.

    Args:
        comfy_dir: the ComfyUI checkout.
        cpu: force CPU (``None``: CPU when CUDA is not available).
        output_dir, input_dir, temp_dir: ComfyUI's I/O folders (unchanged when ``None``).
        model_folders: extra ``(kind, folder)`` model paths, registered as the defaults.
        client_id: the client id prompts run under (per-node events need one).
    """

    def __init__(self, comfy_dir: pathlib.Path, cpu: bool | None = None, output_dir: pathlib.Path | None = None,
                 input_dir: pathlib.Path | None = None, temp_dir: pathlib.Path | None = None,
                 model_folders=(), client_id: str = "zsvr-headless"):
        comfy_dir = pathlib.Path(comfy_dir)
        if str(comfy_dir) not in sys.path:
            sys.path.insert(0, str(comfy_dir))
        import comfy.cli_args

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
        asyncio.run(nodes.init_extra_nodes(init_custom_nodes=False, init_api_nodes=False))
        if not asyncio.run(nodes.load_custom_node(str(PACK_DIR))):
            raise RuntimeError(f"ComfyUI could not load the pack at {PACK_DIR}; see the log above")
        self.pack = sys.modules[str(PACK_DIR).replace(".", "_x_")]
        self.progress_listener = None
        comfy.utils.set_progress_bar_global_hook(self._progress_hook)
        self.server = EventLog()
        self.executor = execution.PromptExecutor(self.server, cache_type=execution.CacheType.CLASSIC)

    @property
    def events(self) -> list:
        return self.server.events

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
        """A UI-format workflow converted to API format (an API-format one is returned as it is)."""
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
