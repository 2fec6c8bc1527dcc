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
UI workflows are converted with ``headless/workflow_format.py``.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import shutil
import sys
import time

PACK_DIR = pathlib.Path(__file__).resolve().parent
if str(PACK_DIR) not in sys.path:
    sys.path.insert(0, str(PACK_DIR))

from headless.comfy_boot import ComfyHost  # noqa: E402
VIDEO_SUFFIXES = {".mp4", ".mov", ".mkv", ".webm", ".avi", ".m4v", ".gif"}
SAVE_PREFIX_INPUTS = ("filename_prefix",)


Host = ComfyHost
"""ComfyUI booted in this process with the pack loaded (``headless/comfy_boot.py``)."""


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

        previous_listener, host.progress_listener = host.progress_listener, listener
        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()
        start = time.perf_counter()
        try:
            run = host.execute(prompt)
            result = {"ok": run.success, "error": run.error_text() or None, "outputs": run.outputs}
        except Exception as exc:  # a broken video must not stop the batch
            result = {"ok": False, "error": f"{type(exc).__name__}: {exc}", "outputs": {}}
        finally:
            host.progress_listener = previous_listener
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
