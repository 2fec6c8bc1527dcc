#!/usr/bin/env python
"""Run a ZSVR workflow headless on every video in a folder, through ComfyUI's own executor.

Run it from the pack's folder inside ``ComfyUI/custom_nodes/`` with ComfyUI's Python:

    python run_workflow.py workflows/zsvd_derain_wan21.json --input clips/ --output restored/ \\
        --set 12.strength=10 --set "Inversion Sampler (ZSVR).skip=30"

Each video goes through a fresh copy of the workflow: every ``ZSVR_LoadVideo``
node reads it, every save node writes into ``--output`` with the video's name
as its prefix. ``--set NODE.INPUT=VALUE`` overrides a widget (NODE is a node id
or its title; VALUE is parsed as JSON when it can be, else taken as text).
A failure on one video is reported and the rest still run. At the end a table
gives frames, seconds and peak memory per video. Exit status 1 if any failed.

The workflow may be UI format (what you drag into ComfyUI) or API format;
UI workflows are converted with ``nodes/workflow_format.py``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import pathlib
import shutil
import sys
import time
import uuid

PACK_DIR = pathlib.Path(__file__).resolve().parent
VIDEO_SUFFIXES = {".mp4", ".mov", ".mkv", ".webm", ".avi", ".m4v", ".gif"}
SAVE_PREFIX_INPUTS = ("filename_prefix",)


class Host:
    """ComfyUI booted in this process with the pack loaded (the server's own validate + execute path)."""

    def __init__(self, comfy_dir: pathlib.Path, cpu: bool | None = None, output_dir: pathlib.Path | None = None):
        if str(comfy_dir) not in sys.path:
            sys.path.insert(0, str(comfy_dir))
        import comfy.cli_args

        if cpu is None:
            import torch

            cpu = not torch.cuda.is_available()
        comfy.cli_args.args.cpu = cpu
        import folder_paths

        if output_dir is not None:
            output_dir.mkdir(parents=True, exist_ok=True)
            folder_paths.set_output_directory(str(output_dir))
        import utils.extra_config  # noqa: F401  (before nodes: nodes.py shadows the top-level utils package)
        import server  # noqa: F401
        import nodes
        import execution
        import comfy.utils
        import comfy.model_management

        self.folder_paths = folder_paths
        self.nodes = nodes
        self.execution = execution
        self.model_management = comfy.model_management
        asyncio.run(nodes.init_extra_nodes(init_custom_nodes=False, init_api_nodes=False))
        if not asyncio.run(nodes.load_custom_node(str(PACK_DIR))):
            raise RuntimeError(f"ComfyUI could not load the pack at {PACK_DIR}")
        self.pack = sys.modules[str(PACK_DIR).replace(".", "_x_")]
        self.progress_listener = None
        comfy.utils.set_progress_bar_global_hook(self._hook)
        self.events: list = []
        self.executor = execution.PromptExecutor(_Server(self.events), cache_type=execution.CacheType.CLASSIC)

    def _hook(self, value, total, preview_image=None, prompt_id=None, node_id=None):
        from comfy_execution.utils import get_executing_context

        ctx = get_executing_context()
        if node_id is None and ctx is not None:
            node_id = ctx.node_id
        if self.progress_listener is not None:
            self.progress_listener(node_id, value, total)
        self.model_management.throw_exception_if_processing_interrupted()

    def input_types(self, class_type: str):
        cls = self.nodes.NODE_CLASS_MAPPINGS.get(class_type)
        return None if cls is None else cls.INPUT_TYPES()

    def to_api(self, workflow: dict) -> dict:
        if "nodes" not in workflow:
            return workflow
        import importlib

        workflow_format = importlib.import_module(f"{self.pack.__name__}.nodes.workflow_format")
        return workflow_format.ui_to_api(workflow, self.input_types)

    def validate(self, prompt: dict):
        return asyncio.run(self.execution.validate_prompt(str(uuid.uuid4()), prompt, None))

    def execute(self, prompt: dict) -> dict:
        """Validate and run; returns {'ok', 'error', 'outputs'}."""
        valid = self.validate(prompt)
        if not valid[0]:
            details = [valid[1].get("message", ""), valid[1].get("details", "")]
            for node_id, err in (valid[3] or {}).items():
                for e in err.get("errors", []):
                    details.append(f"node {node_id}: {e.get('details') or e.get('message')}")
            return {"ok": False, "error": " | ".join(d for d in details if d), "outputs": {}}
        self.events.clear()
        self.executor.execute(prompt, str(uuid.uuid4()), {"client_id": "zsvr-runner"}, valid[2])
        error = None
        for event, data in self.executor.status_messages:
            if event == "execution_error":
                error = f"node {data['node_id']} ({data['node_type']}): {data['exception_message'].strip()}"
            elif event == "execution_interrupted":
                error = "interrupted"
        outputs = {d["node"]: d.get("output") for e, d in self.events if e == "executed" and isinstance(d, dict)}
        return {"ok": error is None and self.executor.success, "error": error, "outputs": outputs}


class _Server:
    def __init__(self, events):
        self.client_id = None
        self.last_node_id = None
        self.last_prompt_id = None
        self.sockets_metadata = {}
        self.events = events

    def send_sync(self, event, data, sid=None):
        self.events.append((event, data))

    def queue_updated(self):
        pass


def parse_sets(sets: list[str]) -> list[tuple[str, str, object]]:
    out = []
    for item in sets or []:
        if "=" not in item or "." not in item.split("=", 1)[0]:
            raise SystemExit(f"--set {item!r}: expected NODE.INPUT=VALUE (NODE is a node id or title)")
        target, raw = item.split("=", 1)
        node, name = target.rsplit(".", 1)
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        out.append((node, name, value))
    return out


def apply_sets(prompt: dict, sets) -> None:
    for node, name, value in sets:
        matches = [nid for nid, n in prompt.items()
                   if nid == node or (n.get("_meta") or {}).get("title") == node or n["class_type"] == node]
        if not matches:
            raise SystemExit(f"--set: no node with id, title or type {node!r} in the workflow")
        for nid in matches:
            prompt[nid]["inputs"][name] = value


def find_videos(path: pathlib.Path) -> list[pathlib.Path]:
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise SystemExit(f"--input {path}: no such file or folder")
    videos = sorted(p for p in path.iterdir() if p.suffix.lower() in VIDEO_SUFFIXES)
    if not videos:
        raise SystemExit(f"--input {path}: no video files ({', '.join(sorted(VIDEO_SUFFIXES))})")
    return videos


def peak_memory_gb() -> float:
    import resource

    import torch

    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 1024**3
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2  # KiB on Linux


def run_batch(host: Host, workflow: dict, videos: list[pathlib.Path], output_dir: pathlib.Path, sets=(),
              progress: bool = True) -> list[dict]:
    """Run ``workflow`` once per video; returns one summary row per video (never raises for a video)."""
    import torch
    from tqdm import tqdm

    base = host.to_api(workflow)
    apply_sets(base, sets)
    loaders = [nid for nid, n in base.items() if n["class_type"] == "ZSVR_LoadVideo"]
    if not loaders:
        raise SystemExit("the workflow has no ZSVR_LoadVideo node to feed the videos into")
    input_dir = pathlib.Path(host.folder_paths.get_input_directory())
    rows = []
    for video in videos:
        staged = input_dir / f"zsvr_batch_{video.name}"
        if staged.resolve() != video.resolve():
            shutil.copyfile(video, staged)
        prompt = json.loads(json.dumps(base))
        for nid in loaders:
            prompt[nid]["inputs"]["video"] = staged.name
        for node in prompt.values():
            for key in SAVE_PREFIX_INPUTS:
                if key in node["inputs"] and isinstance(node["inputs"][key], str):
                    node["inputs"][key] = f"{video.stem}/{video.stem}"
        bar = tqdm(total=1, desc=video.name, unit="step", disable=not progress, leave=True)

        def listener(node_id, value, total, bar=bar):
            if bar.total != total:
                bar.reset(total=total)
            bar.n = value
            bar.set_postfix_str(f"node {node_id}")
            bar.refresh()

        host.progress_listener = listener
        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()
        start = time.perf_counter()
        try:
            result = host.execute(prompt)
        except Exception as exc:  # a broken video must not stop the batch
            result = {"ok": False, "error": f"{type(exc).__name__}: {exc}", "outputs": {}}
        finally:
            host.progress_listener = None
            bar.close()
        seconds = time.perf_counter() - start
        frames = _frames(host, loaders[0]) if result["ok"] else None
        rows.append({"video": video.name, "ok": result["ok"], "frames": frames, "seconds": round(seconds, 2),
                     "peak_memory_gb": round(peak_memory_gb(), 2), "error": result["error"],
                     "outputs": _saved_files(result["outputs"], output_dir)})
    return rows


def _frames(host: Host, loader_id: str):
    cached = host.executor.caches.outputs.get(loader_id)
    try:
        data = getattr(cached, "outputs", cached)  # per output slot, a list of values
        return int(data[2][0]) if data is not None else None
    except Exception:  # the cache layout is the host's business; the count is informative only
        return None


def _saved_files(outputs: dict, output_dir: pathlib.Path) -> list[str]:
    files = []
    for out in outputs.values():
        for key in ("images", "gifs", "videos", "animated"):
            for item in (out or {}).get(key, []) or []:
                if isinstance(item, dict) and "filename" in item:
                    files.append(str(output_dir / item.get("subfolder", "") / item["filename"]))
    return files


def format_table(rows: list[dict]) -> str:
    lines = [f"{'video':<24} {'status':<7} {'frames':>6} {'seconds':>8} {'peak GB':>8}  detail"]
    for r in rows:
        detail = ", ".join(r["outputs"]) if r["ok"] else (r["error"] or "")
        frames = "-" if r["frames"] is None else str(r["frames"])
        lines.append(f"{r['video']:<24} {'ok' if r['ok'] else 'FAILED':<7} {frames:>6} {r['seconds']:>8.2f} "
                     f"{r['peak_memory_gb']:>8.2f}  {detail}")
    failed = sum(not r["ok"] for r in rows)
    lines.append(f"{len(rows) - failed} ok, {failed} failed")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("workflow", type=pathlib.Path, help="UI- or API-format workflow JSON")
    parser.add_argument("--input", required=True, type=pathlib.Path, help="a video file or a folder of videos")
    parser.add_argument("--output", required=True, type=pathlib.Path, help="folder for the results")
    parser.add_argument("--set", action="append", default=[], metavar="NODE.INPUT=VALUE", help="override a widget")
    parser.add_argument("--comfyui", type=pathlib.Path, default=None,
                        help="ComfyUI folder (default: COMFYUI_PATH, else two levels up from the pack)")
    parser.add_argument("--cpu", action="store_true", help="run on the CPU even if a GPU is present")
    args = parser.parse_args(argv)
    comfy_dir = args.comfyui or pathlib.Path(os.environ.get("COMFYUI_PATH", PACK_DIR.parent.parent))
    if not (comfy_dir / "nodes.py").is_file():
        parser.error(f"no ComfyUI at {comfy_dir}; pass --comfyui or run from ComfyUI/custom_nodes/<pack>")
    workflow = json.loads(args.workflow.read_text())
    videos = find_videos(args.input)
    sets = parse_sets(args.set)
    host = Host(comfy_dir.resolve(), cpu=True if args.cpu else None, output_dir=args.output.resolve())
    rows = run_batch(host, workflow, videos, args.output.resolve(), sets)
    print(format_table(rows))
    return 0 if all(r["ok"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
