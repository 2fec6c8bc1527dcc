"""``--chunk-frames`` with ``--servers``: the fleet executor of a chunked run; every chunk is a unit of
``headless/fleet.py``.

A clip's plan, keys, chunk names, reuse, manifest and stitching are the one clip job's
(``headless/clip_job.py``), as in the in-process run (``headless/chunked_run.py``), so a clip interrupted in one
mode resumes in the other and chunks done on any server count. What differs is where a chunk runs:

* **the prompt** is ``chunked_run.prepare``'s chunk prompt, built against the server's registry (its
  ``/object_info`` says which nodes are outputs); its sink, the pack's ``ZSVRHeadless_ChunkOutput``
  (``nodes/chunk_output.py``), writes the lossless chunk file (``kernels/chunk_files.py``) into the server's
  output folder, and it is fetched through ``/view`` into the clip's chunk folder under the clip job's name;
* **recording**: each chunk is recorded as soon as its file is here (``Unit.collect``), under the clip's lock,
  since several servers finish chunks of one clip at once;
* **stitching** runs here once every chunk of a clip is here (``Fleet.group_done``).
"""

from __future__ import annotations

import pathlib
import types

from ..kernels import chunking
from ..kernels.errors import ParameterError
from ..nodes.errors import InputError
from . import chunked_run, clip_job, manifest
from .clip_job import ChunkOptions, ClipJob
from .fleet_preflight import Registry
from .fleet_units import Unit, UnitResult, Upload

class _RegistryHost:
    """What ``chunked_run.prepare`` asks of a host (which node types are outputs), from a server's registry."""

    def __init__(self, registry: Registry):
        classes = {name: type(name, (), {"OUTPUT_NODE": bool(info.get("output_node"))})
                   for name, info in registry.info.items()}
        self.nodes = types.SimpleNamespace(NODE_CLASS_MAPPINGS=classes)


def _collector(job: ClipJob, chunk: chunking.Chunk, key: str):
    """``Unit.collect`` for one chunk: check the fetched file's frame count, record it in the manifest."""

    def collect(result: UnitResult) -> None:
        entries = (result.outputs.get(chunked_run.SINK_NODE) or {}).get("zsvr_chunk") or [{}]
        files = [f for f in result.files if f.suffix == ".mkv"]
        job.check_written(chunk, entries[0].get("frames"), len(files) == 1)
        attempt = result.final
        job.mark_chunk(chunk, key, files[0], attempt.compute_s if attempt is not None else 0.0)

    return collect


def plan_units(registry: Registry, base_prompt: dict, videos: list, output_dir: pathlib.Path,
               options: ChunkOptions):
    """The units of a chunked ``--servers`` run, and a :class:`~headless.clip_job.ClipJob` per clip; nothing runs.

    Option and workflow errors raise :class:`InputError` before anything is written; a clip that cannot be
    chunked (not a video, a variable frame rate) gets its error in its job and no units.
    """
    workflow = chunked_run.prepare(_RegistryHost(registry), base_prompt, options)
    manifest.check_stems(videos)
    units, jobs = [], []
    for video in map(pathlib.Path, videos):
        try:
            job = clip_job.open_job(workflow, video, pathlib.Path(output_dir), options)
        except (InputError, ParameterError) as exc:
            jobs.append(ClipJob.failed(video, pathlib.Path(output_dir), str(exc)))
            continue
        jobs.append(job)
        for chunk, key in job.pending():
            units.append(Unit(f"{video.name} chunk {chunk.index + 1}/{len(job.plan)}",
                              workflow.chunk_prompt("", chunk, job.probe.fps, job.chunk_stem(chunk, key)),
                              [Upload(video, [(nid, "video") for nid in workflow.loaders])],
                              job.chunk_dir, group=video.name, collect=_collector(job, chunk, key)))
    return units, jobs


def stitch_clip(job: ClipJob, results: list, keep_chunks: bool = False) -> None:
    """``Fleet.group_done``: once every chunk of ``job`` is here, stitch it with its sound (sets ``job.error``)."""
    failed = [r for r in results if not r.ok]
    if failed:
        job.error = "; ".join(f"{r.unit.key}: {r.error}" for r in failed)
        return
    finish_clip(job, keep_chunks)


def finish_clip(job: ClipJob, keep_chunks: bool = False) -> None:
    """Stitch ``job``'s chunk files into its output and record it (a clip with every chunk reused too)."""
    if job.error is not None:
        return
    try:
        seconds = job.finish(keep_chunks)
    except RuntimeError as exc:
        job.error = str(exc)
        return
    if seconds:
        job.warnings.append(f"stitched in {seconds:.1f} s")


def format_clips(clips: list) -> str:
    """The per-clip table of a chunked ``--servers`` run (clip, status, frames, shots, chunks run/reused, output)."""
    lines = [f"{'clip':<24} {'status':<14} {'frames':>6} {'shots':>5} {'chunks':>6} {'run':>4} {'reused':>6}  detail"]
    for c in clips:
        row = c.row()
        frames = "-" if row["frames"] is None else str(row["frames"])
        detail = ", ".join(row["outputs"]) if row["ok"] else (row["error"] or "")
        status = "skipped (done)" if row["ok"] and row.get("skipped") else "ok" if row["ok"] else "FAILED"
        lines.append(f"{row['video']:<24} {status:<14} {frames:>6} {row['shots']:>5} "
                     f"{row['chunks']:>6} "
                     f"{row['chunks_run']:>4} {row['chunks_reused']:>6}  {detail}")
    return "\n".join(lines)
