#!/usr/bin/env python
"""Run a ZSVR workflow headless on every video in a folder, through ComfyUI's own executor.

Run it from the pack's folder inside ``ComfyUI/custom_nodes/`` with ComfyUI's Python:

    python run_workflow.py "workflows/ZSVD rain removal - Wan 2.1.json" --input clips/ --output restored/ \\
        --set 12.strength=10 --set "Inversion Sampler (ZSVR).skip=30"

Each video goes through a fresh copy of the workflow: every ``ZSVR_LoadVideo``
node reads it; what the save nodes write becomes ``--output``/<clip>.mp4 (or a
``<clip>/`` folder for several files) once the clip is complete, recorded in
``<clip>.zsvr.json`` so that a rerun skips it (``--force`` redoes it;
``headless/whole_clips.py``). ``--set NODE.INPUT=VALUE`` overrides a widget: NODE is a node id,
its title, its type or its display name; a NODE, INPUT or VALUE the workflow's
nodes do not accept is an error listing what they do accept (``headless/overrides.py``).
A failure on one video is reported and the rest still run. At the end a table
gives frames, seconds and peak memory per video. Exit status 1 if any failed,
2 for a usage error.

The custom nodes ComfyUI itself would load are loaded too (its own loader, its
``--disable-all-custom-nodes`` / ``--whitelist-custom-nodes`` / ``--disable-api-nodes``
switches), so a workflow may use other packs' nodes; a pack that fails to import
is named with its error. Progress is one line per event (``headless/console.py``).

The workflow may be UI format (what you drag into ComfyUI) or API format;
UI workflows are converted with ``headless/workflow_format.py``.

With ``--servers URL[,URL...]`` no ComfyUI starts here: every clip (or chunk)
goes to those running ComfyUI servers through their own API, one per GPU or
machine (``headless/servers.py``; the README's "Several GPUs or machines").
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import runpy
import shutil
import sys
import time

PACK_DIR = pathlib.Path(__file__).resolve().parent
runpy.run_path(str(PACK_DIR / "pack_import.py"))["import_pack"]()  # the pack as `zsvr`, its folder off sys.path

from zsvr.headless import console, overrides, run_checks  # noqa: E402
from zsvr.headless.comfy_boot import ComfyHost  # noqa: E402
from zsvr.headless.workflow_format import WorkflowError  # noqa: E402
from zsvr.nodes.errors import InputError  # noqa: E402
VIDEO_SUFFIXES = {".mp4", ".mov", ".mkv", ".webm", ".avi", ".m4v", ".gif"}


Host = ComfyHost
"""ComfyUI booted in this process with the pack loaded (``headless/comfy_boot.py``)."""


def parse_sets(sets: list[str]) -> list[overrides.Override]:
    """``--set`` strings parsed (syntax only; :func:`apply_sets` checks them against the workflow)."""
    return overrides.parse(sets)


def apply_sets(host: Host, prompt: dict, sets) -> list[overrides.Applied]:
    """Apply ``--set`` overrides (strings or parsed) to ``prompt``; raises ``OverrideError`` naming a bad one."""
    parsed = [s if isinstance(s, overrides.Override) else overrides.parse([s])[0] for s in sets or ()]
    return overrides.apply(prompt, parsed, host.input_types, host.display_name)


def user_paths(text: str | None, staged: pathlib.Path, video: pathlib.Path) -> str | None:
    """An error text with the staged copy's path and name replaced by the user's file."""
    if not text:
        return text
    for name in (str(staged.resolve()), str(staged), staged.name):
        text = text.replace(name, str(video))
    return text


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
              progress: bool = True, reporter: console.ConsoleReporter | None = None, chunks=None,
              stop=None, force: bool = False) -> list[dict]:
    """Run ``workflow`` once per video; returns one summary row per video (never raises for a video).

    A bad ``--set`` raises ``overrides.OverrideError`` before anything runs; a model file that is missing or a
    setting the model refuses (``blocks``) raises ``run_checks.WorkflowCheckError`` before any clip runs
    (:func:`check_before_clips`). A loader whose frame rule trimmed frames adds a note to the row's
    ``warnings``. Each clip is copied into
    ComfyUI's input folder for the run and removed afterwards, also when the run fails. Without ``chunks`` the
    clips run whole (:func:`run_whole`); ``force`` redoes clips a previous run finished.
    """
    base = host.to_api(workflow)
    if reporter is None:
        reporter = console.ConsoleReporter(console.node_names(base, host.display_name), enabled=progress)
    for line in overrides.describe(apply_sets(host, base, sets)):
        reporter.line(line)
    loaders = [nid for nid, n in base.items() if n["class_type"] == "ZSVR_LoadVideo"]
    if not loaders:
        raise SystemExit("the workflow has no ZSVR_LoadVideo node to feed the videos into; add a "
                         "Load Video (ZSVR) node and connect its images where the workflow reads the video")
    check_before_clips(host, base, reporter)
    if chunks is not None:  # long clips in overlapping chunks, resumable: headless/chunked_run.py
        report = reporter.line if progress else None
        return run_chunked(host, base, videos, output_dir, chunks, progress, report=report, stop=stop)
    return run_whole(host, base, videos, output_dir, loaders, reporter, stop, force)


def run_whole(host: Host, base: dict, videos: list[pathlib.Path], output_dir: pathlib.Path, loaders: list[str],
              reporter: console.ConsoleReporter, stop=None, force: bool = False) -> list[dict]:
    """Each clip whole through ``base`` (an API prompt), in order; one row per clip (``headless/whole_clips.py``).

    The save nodes write into a passing folder of ComfyUI's output folder; a finished clip's files are moved to
    ``<output>/<stem><ext>`` (or ``<output>/<stem>/``) and recorded in ``<stem>.zsvr.json``. A clip recorded
    as done under the same settings is skipped (``force`` runs it again). A stop request ends the batch before
    the next clip."""
    import torch

    from zsvr.headless import manifest, whole_clips
    from zsvr.nodes.errors import InputError

    input_dir = pathlib.Path(host.folder_paths.get_input_directory())
    comfy_out = pathlib.Path(host.folder_paths.get_output_directory())
    manifest.check_stems(videos)
    whole_clips.sweep_stale(comfy_out)
    passing = whole_clips.passing_folder(comfy_out)
    prefix_root = passing.relative_to(comfy_out).as_posix()
    rows = []
    try:
        for index, video in enumerate(videos, 1):
            if stop is not None and stop.requested:  # a signal asked the run to stop: no further clip starts
                break
            row = {"video": video.name, "ok": False, "frames": None, "seconds": 0.0, "peak_memory_gb": 0.0,
                   "error": None, "outputs": [], "warnings": []}
            try:
                clip = whole_clips.open_clip(base, video, output_dir, force)
            except (InputError, OSError) as exc:
                row["error"] = str(exc)
                rows.append(row)
                reporter.line(f"[{index}/{len(videos)}] {video.name}: FAILED: {exc}")
                continue
            if clip.done is not None:
                row.update(ok=True, skipped=True, frames=clip.frames, outputs=[str(f) for f in clip.done])
                rows.append(row)
                reporter.line(f"[{index}/{len(videos)}] {video.name}: skipped (done): {', '.join(row['outputs'])} "
                              "(--force runs it again)")
                continue
            staged = input_dir / f"zsvr_batch_{video.name}"
            own_copy = staged.resolve() != video.resolve()
            prompt = whole_clips.clip_prompt(base, staged.name, f"{prefix_root}/{video.stem}")
            reporter.clip_start(index, len(videos), video.name)
            previous = host.progress_listener, host.event_listener
            host.progress_listener, host.event_listener = reporter.on_progress, reporter.on_event
            if torch.cuda.is_available():
                torch.cuda.reset_peak_memory_stats()
            start = time.perf_counter()
            try:
                if own_copy:
                    shutil.copyfile(video, staged)
                run = host.execute(prompt)
                result = {"ok": run.success, "error": run.error_text() or None, "outputs": run.outputs}
            except Exception as exc:  # a broken video must not stop the batch
                result = {"ok": False, "error": f"{type(exc).__name__}: {exc}", "outputs": {}}
            finally:
                host.progress_listener, host.event_listener = previous
                if own_copy:
                    staged.unlink(missing_ok=True)
            if own_copy:
                result["error"] = user_paths(result["error"], staged, video)
            frames = _frames(host, loaders[0]) if result["ok"] else None
            finals = []
            if result["ok"]:
                try:
                    finals = clip.place(_saved_files(result["outputs"], comfy_out), frames)
                except (RuntimeError, OSError) as exc:
                    result.update(ok=False, error=f"keeping the outputs: {exc}")
            row.update(ok=result["ok"], frames=frames if result["ok"] else None,
                       seconds=round(time.perf_counter() - start, 2), peak_memory_gb=round(peak_memory_gb(), 2),
                       error=result["error"], outputs=[str(f) for f in finals],
                       warnings=trimmed_frames(result["outputs"], loaders))
            rows.append(row)
            for warning in row["warnings"]:
                reporter.line(f"  warning: {warning}")
            reporter.clip_end(row["ok"], ", ".join(row["outputs"]) if row["ok"] else (row["error"] or ""), frames)
    finally:
        whole_clips.drop_passing(passing)
    return rows


def check_before_clips(host: Host, prompt: dict, reporter: console.ConsoleReporter) -> None:
    """The workflow checked once before any clip runs (``headless/run_checks.py``): every model file present, and
    the checks that need the model (``blocks`` against its block count) before any inversion. Raises
    ``run_checks.WorkflowCheckError``."""
    problems = run_checks.missing_model_files(host, prompt)
    if problems:
        raise run_checks.WorkflowCheckError("model files missing, nothing was run:\n  " + "\n  ".join(problems))
    previous = host.progress_listener, host.event_listener
    host.progress_listener, host.event_listener = reporter.on_progress, reporter.on_event  # the model loads: shown
    try:
        run_checks.check_models_once(host, prompt, say=reporter.line, names=reporter.names)
    finally:
        host.progress_listener, host.event_listener = previous


class ChunkOptionError(ValueError):
    """A chunked-run option, or a workflow that cannot run in chunks; the message names it and says what to do."""


def run_chunked(host: Host, prompt: dict, videos: list[pathlib.Path], output_dir: pathlib.Path, chunks,
                progress: bool = True, report=None, stop=None) -> list[dict]:
    """``--chunk-frames``: every clip cut into overlapping chunks, run, stitched with its sound, resumable.

    ``chunks`` is a ``headless.clip_job.ChunkOptions``. Bad options raise :class:`ChunkOptionError`
    before anything is written; a clip's failure is its row's error.
    """
    from zsvr.headless import chunked_run as chunked
    from zsvr.headless import clip_job
    from zsvr.nodes.errors import InputError

    try:
        rows = chunked.run_batch_chunked(host, prompt, videos, output_dir, chunks, progress=progress,
                                         peak_memory=peak_memory_gb, report=report,
                                         stopping=(lambda: stop.requested) if stop is not None else None)
    except InputError as exc:
        raise ChunkOptionError(str(exc)) from None
    input_dir = pathlib.Path(host.folder_paths.get_input_directory())
    for row, video in zip(rows, videos):  # errors name the user's file, not the staged copy
        row["error"] = user_paths(row["error"], input_dir / clip_job.staged_name(video), video)
    return rows


def _frames(host: Host, loader_id: str):
    cached = host.executor.caches.outputs.get(loader_id)
    try:
        data = getattr(cached, "outputs", cached)  # per output slot, a list of values
        return int(data[2][0]) if data is not None else None
    except Exception:  # the cache layout is the host's business; the count is informative only
        return None


def trimmed_frames(outputs: dict, loaders: list[str]) -> list[str]:
    """The loaders' notes on frames their frame rule trimmed (a workflow's own choice), from their UI text.

    ``ZSVR_LoadVideo`` says in its UI text which source frames it loaded and how many (and which) its
    ``frame_rule`` cut off; a run that lost frames that way says so in its row and summary."""
    notes = []
    for nid in loaders:
        for text in ((outputs or {}).get(nid) or {}).get("text") or []:
            if isinstance(text, str) and " trimmed the last " in text:
                notes.append(text)
    return notes


def _saved_files(outputs: dict, comfy_out: pathlib.Path) -> list[pathlib.Path]:
    """The files the prompt's save nodes wrote into ComfyUI's output folder (previews, in temp, are not kept)."""
    files = []
    for out in outputs.values():
        for key in ("images", "gifs", "videos", "animated"):
            for item in (out or {}).get(key, []) or []:
                if isinstance(item, dict) and "filename" in item and item.get("type", "output") == "output":
                    path = comfy_out / item.get("subfolder", "") / item["filename"]
                    if path.is_file() and path not in files:
                        files.append(path)
    return files


def format_table(rows: list[dict]) -> str:
    lines = [f"{'video':<24} {'status':<14} {'frames':>6} {'seconds':>8} {'peak GB':>8}  detail"]
    for r in rows:
        detail = ", ".join(r["outputs"] + r.get("warnings", [])) if r["ok"] else (r["error"] or "")
        frames = "-" if r["frames"] is None else str(r["frames"])
        status = "skipped (done)" if r["ok"] and r.get("skipped") else "ok" if r["ok"] else "FAILED"
        seconds = "-" if r.get("skipped") else f"{r['seconds']:.2f}"
        lines.append(f"{r['video']:<24} {status:<14} {frames:>6} {seconds:>8} "
                     f"{r['peak_memory_gb']:>8.2f}  {detail}")
    failed = sum(not r["ok"] for r in rows)
    lines.append(f"{len(rows) - failed} ok, {failed} failed")
    return "\n".join(lines)


def _chunk_options(args):
    """The one ``ChunkOptions`` of a ``--chunk-frames`` run (None without it), for either executor."""
    if args.chunk_frames is None:
        return None
    from zsvr.headless.clip_job import ChunkOptions  # imports torch and PyAV: only chunked runs need them

    return ChunkOptions(chunk_frames=args.chunk_frames, overlap=args.overlap, color_match=args.color_match,
                        keep_chunks=args.keep_chunks, force=args.force, scene_cuts=not args.no_scene_cuts,
                        **({} if args.scene_threshold is None else {"scene_threshold": args.scene_threshold}))


def early_problem(args, workflow: dict, sets) -> str:
    """What is wrong with the command line before anything boots ("" when nothing): ``--output`` naming a file,
    chunk options that cannot work with the workflow's frame rule."""
    if args.output.exists() and not args.output.is_dir():
        return (f"--output {args.output} is a file; --output names a folder for the results "
                "(it is created if missing): choose a folder")
    if args.chunk_frames is None and (args.no_scene_cuts or args.scene_threshold is not None):
        return ("--no-scene-cuts and --scene-threshold plan the chunks of a chunked run: add --chunk-frames N, "
                "or leave them out (a run without chunks takes each clip whole)")
    if args.no_scene_cuts and args.scene_threshold is not None:
        return "--scene-threshold sets where cuts are found, --no-scene-cuts turns them off: use one of them"
    if args.chunk_frames is not None:
        from zsvr.nodes.errors import InputError

        try:
            run_checks.check_chunk_options(_chunk_options(args), workflow, sets)
        except InputError as exc:
            return str(exc)
    return ""


def run_on_servers(args, workflow: dict, videos: list[pathlib.Path], reporter, chunks=None) -> int:
    """``--servers``: every unit goes to running ComfyUI servers through their API (``headless/servers.py``).

    No ComfyUI starts in this process; the servers' registry converts the workflow and checks ``--set``.
    """
    from zsvr.headless import servers

    return servers.run_remote(workflow, videos, args.output.resolve(), list(args.set), args.servers,
                              args.unit_timeout, say=reporter.line, table=print, chunks=chunks, force=args.force)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("workflow", type=pathlib.Path, help="UI- or API-format workflow JSON")
    parser.add_argument("--input", required=True, type=pathlib.Path, help="a video file or a folder of videos")
    parser.add_argument("--output", required=True, type=pathlib.Path, help="folder for the results")
    parser.add_argument("--set", action="append", default=[], metavar="NODE.INPUT=VALUE",
                        help="override a widget; NODE is a node id, title, type or display name "
                             "(e.g. 12.strength=10, \"Inversion Sampler (ZSVR).skip=30\", ZSVR_LoadVideo.frame_cap=49); "
                             "an unknown node or input, or a value the input refuses, is an error")
    parser.add_argument("--comfyui", type=pathlib.Path, default=None,
                        help="ComfyUI folder (default: COMFYUI_PATH, else two levels up from the pack)")
    parser.add_argument("--cpu", action="store_true", help="run on the CPU even if a GPU is present")
    comfy = parser.add_argument_group("ComfyUI settings (as for ComfyUI's main.py)")
    comfy.add_argument("--base-directory", type=pathlib.Path, default=None,
                       help="ComfyUI base folder for models, custom_nodes, input, output, temp and user")
    comfy.add_argument("--disable-all-custom-nodes", action="store_true",
                       help="load no custom nodes but this pack (and those whitelisted)")
    comfy.add_argument("--whitelist-custom-nodes", nargs="+", default=[], metavar="FOLDER",
                       help="custom_nodes folders to load even with --disable-all-custom-nodes")
    comfy.add_argument("--disable-api-nodes", action="store_true", help="do not load ComfyUI's API nodes")
    comfy.add_argument("--verbose", action="store_true", help="show ComfyUI's log (INFO) and import tracebacks")
    long = parser.add_argument_group("long clips (chunked runs, resumable; see the README's \"Long clips\")")
    long.add_argument("--chunk-frames", type=int, default=None, metavar="N",
                      help="cut each clip into chunks of N frames (obeying the loader's frame_rule, e.g. 49 for 4k+1), "
                           "run each as its own prompt and stitch them; the output keeps every frame, the fps and the sound")
    long.add_argument("--overlap", type=int, default=8, metavar="K",
                      help="frames shared by neighbouring chunks, crossfaded (raised cosine); default 8")
    long.add_argument("--color-match", nargs="?", const="low_frequency", default=None, metavar="METHOD",
                      help="give every chunk the source's colour (ZSVR_ColorMatch: low_frequency, the default, or mean_std)")
    long.add_argument("--keep-chunks", action="store_true", help="keep the lossless chunk files after stitching")
    long.add_argument("--no-scene-cuts", action="store_true",
                      help="plan chunks over the whole clip; by default each clip is scanned once for hard cuts and "
                           "chunked shot by shot, so no chunk or crossfade spans a cut")
    long.add_argument("--scene-threshold", type=float, default=None, metavar="X",
                      help="shot-cut threshold in (0, 1], higher finds fewer cuts (default 0.25)")
    parser.add_argument("--force", action="store_true",
                      help="redo clips and chunks a previous run finished (a rerun skips them by default)")
    fleet = parser.add_argument_group("several GPUs or machines (see the README's \"Several GPUs or machines\")")
    fleet.add_argument("--servers", default=None, metavar="URL[,URL...]",
                       help="send every clip (or chunk) to these running ComfyUI servers through their API instead "
                            "of starting ComfyUI here, e.g. http://127.0.0.1:8188,http://gpu2:8188; a token for them "
                            "is read from $ZSVR_SERVER_TOKEN")
    fleet.add_argument("--unit-timeout", type=float, default=None, metavar="SECONDS",
                       help="with --servers: a clip or chunk running longer than this on a server is interrupted "
                            "and sent to another server (default: no limit)")
    args = parser.parse_args(argv)
    comfy_dir = args.comfyui or pathlib.Path(os.environ.get("COMFYUI_PATH", PACK_DIR.parent.parent))
    if args.servers is None and not (comfy_dir / "nodes.py").is_file():
        parser.error(f"no ComfyUI at {comfy_dir}; pass --comfyui or run from ComfyUI/custom_nodes/<pack>")
    try:
        workflow = json.loads(args.workflow.read_text())
    except (OSError, ValueError) as exc:
        parser.error(f"workflow {args.workflow}: cannot be read as JSON ({exc}); pass a workflow .json file")
    videos = find_videos(args.input)
    try:
        sets = parse_sets(args.set)
    except overrides.OverrideError as exc:
        parser.error(str(exc))
    reporter = console.ConsoleReporter()
    console.route_logging(reporter, verbose=args.verbose)
    problem = early_problem(args, workflow, sets)
    if problem:  # before ComfyUI boots: one line, no traceback
        reporter.line(f"error: {problem}")
        return 2
    chunks = _chunk_options(args)
    if args.servers is not None:
        return run_on_servers(args, workflow, videos, reporter, chunks)
    comfy_args = {"disable_all_custom_nodes": args.disable_all_custom_nodes,
                  "whitelist_custom_nodes": list(args.whitelist_custom_nodes),
                  "disable_api_nodes": args.disable_api_nodes}
    if args.base_directory is not None:
        comfy_args["base_directory"] = str(args.base_directory.resolve())
    from zsvr.headless import stop_signals

    stop = stop_signals.RunnerStop(say=reporter.line).install()  # first signal stops cleanly, second at once
    reporter.line(f"starting ComfyUI at {comfy_dir.resolve()} ...")
    host = Host(comfy_dir.resolve(), cpu=True if args.cpu else None, output_dir=args.output.resolve(),
                custom_nodes="comfyui", comfy_args=comfy_args, verbose_boot=args.verbose, core_progress_bars=False)
    stop.interrupt = lambda: host.nodes.interrupt_processing(True)
    for line in host.pack_report():
        reporter.line(line)
    try:
        base = host.to_api(workflow)
        reporter.names = console.node_names(base, host.display_name)
        rows = run_batch(host, base, videos, args.output.resolve(), sets, reporter=reporter, chunks=chunks,
                         stop=stop, force=args.force)
    except (WorkflowError, overrides.OverrideError, ChunkOptionError, run_checks.WorkflowCheckError,
            InputError) as exc:
        if stop.requested:
            reporter.line(stop.line("before any clip finished"))
            return stop.code
        reporter.line(f"error: {exc}")
        return 2
    except Exception:  # an interrupted model load may raise anything: a stop still ends with its one line
        if not stop.requested:
            raise
        reporter.line(stop.line("before any clip finished"))
        return stop.code
    finally:
        stop.release()
    if stop.requested:
        done = [r["video"] for r in rows if r["ok"]]
        reporter.line(stop.line(f"{len(done)} of {len(videos)} clips finished"
                                + (f" ({', '.join(done)})" if done else "") + "; staged copies removed"))
        return stop.code
    print(format_table(rows))
    return 0 if all(r["ok"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
