"""``--chunk-frames`` with ``--servers``: every chunk of every clip is one unit of ``headless/fleet.py``.

The chunks are the in-process chunked run's (``headless/chunked_run.py``),
planned, keyed, recorded and stitched by the same functions; only where a
chunk runs differs:

* **the prompt** is ``chunked_run.prepare``'s chunk prompt, built against the
  server's registry (its ``/object_info`` says which nodes are outputs), with
  the in-process sink (which writes to a path on the runner's disk) swapped
  for the pack's ``ZSVRHeadless_ChunkOutput`` (``nodes/chunk_output.py``): the
  same lossless FFV1 file (``stitch.write_chunk``), written into the server's
  output folder and fetched through ``/view`` into ``<stem>.zsvr-chunks/``
  under the name the in-process run would give it;
* **the manifest** (``headless/manifest.py``) gets the same keys as in-process
  (computed on the in-process chunk prompt and the staged name
  ``zsvr_batch_<clip>``, never on what a server was sent), so a clip
  interrupted in one mode resumes in the other, and chunks done on any server
  count: :func:`plan_units` makes units only for chunks not done yet; each
  chunk is recorded as soon as its file is here (``Unit.collect``), under a
  lock per clip since several servers finish chunks of one clip at once;
* **stitching** (``stitch.iter_stitched`` / ``write_video``, with the
  source's sound) runs locally once every chunk of a clip is here
  (``Fleet.group_done``), into ``<output>/<stem>.mp4``.
"""

from __future__ import annotations

import dataclasses
import pathlib
import shutil
import threading
import time
import types
from typing import Optional

from ..kernels import chunking, video_io
from ..kernels.errors import InputError, ParameterError
from . import chunked_run, manifest, stitch
from .fleet_preflight import Registry
from .fleet_units import Unit, UnitResult, Upload

REMOTE_SINK = "ZSVRHeadless_ChunkOutput"
"""The pack's node that stores a chunk in a server's output folder (``nodes/chunk_output.py``)."""
STAGED_PREFIX = "zsvr_batch_"
"""What the in-process run names its staged copy (part of a chunk's key there, so here too)."""


class _RegistryHost:
    """What ``chunked_run.prepare`` asks of a host (which node types are outputs), from a server's registry."""

    def __init__(self, registry: Registry):
        classes = {name: type(name, (), {"OUTPUT_NODE": bool(info.get("output_node"))})
                   for name, info in registry.info.items()}
        self.nodes = types.SimpleNamespace(NODE_CLASS_MAPPINGS=classes)


@dataclasses.dataclass
class ClipRun:
    """One clip of a chunked ``--servers`` run: its plan, keys, manifest and the chunk files gathered so far."""

    video: pathlib.Path
    probe: video_io.ClipProbe
    plan: list
    keys: list
    output_key: str
    record: manifest.Manifest
    final: pathlib.Path
    chunk_dir: pathlib.Path
    has_audio: bool
    audio_copy: bool
    warnings: list
    files: dict = dataclasses.field(default_factory=dict)
    """chunk index -> its file (reused or fetched)."""
    run: int = 0
    reused: int = 0
    frames: Optional[int] = None
    error: Optional[str] = None
    reused_output: bool = False
    lock: threading.Lock = dataclasses.field(default_factory=threading.Lock)

    def row(self) -> dict:
        """The clip's summary row (fields of the runner's per-clip table)."""
        return {"video": self.video.name, "ok": self.error is None, "frames": self.frames, "error": self.error,
                "outputs": [str(self.final)] if self.error is None else [], "warnings": self.warnings,
                "chunks": len(self.plan), "chunks_run": self.run, "chunks_reused": self.reused}


def remote_prompt(workflow: chunked_run.ChunkedWorkflow, chunk: chunking.Chunk, fps: float, file_stem: str) -> dict:
    """The prompt a server runs for ``chunk``: the in-process chunk prompt with the sink made a server-side one."""
    prompt = workflow.chunk_prompt("", chunk, fps)
    sink = prompt.pop(chunked_run.SINK_NODE)
    prompt[chunked_run.SINK_NODE] = {"class_type": REMOTE_SINK, "inputs": {
        "images": sink["inputs"]["images"], "filename_prefix": file_stem, "fps": float(fps)}}
    return prompt


def _open_clip(workflow, video: pathlib.Path, output_dir: pathlib.Path, options) -> ClipRun:
    """Probe, plan and key one clip as ``chunked_run.run_clip`` does (raises InputError for a clip it refuses)."""
    probe, plan, final, warnings = chunked_run.prepare_clip(workflow, video, output_dir, options)
    digest = manifest.file_digest(video)
    has_audio = probe.audio is not None and probe.audio.error is None
    audio_copy = not has_audio or probe.audio.codec in stitch.MP4_COPY_CODECS
    staged = STAGED_PREFIX + video.name
    keys = [manifest.settings_key({"prompt": workflow.chunk_prompt(staged, c, probe.fps), "source": digest,
                                   "format": stitch.CHUNK_FORMAT, "version": chunked_run.RUN_VERSION}) for c in plan]
    output_key = manifest.settings_key({"chunks": keys, "crf": stitch.VIDEO_CRF, "audio": has_audio,
                                        "audio_copy": audio_copy, "version": chunked_run.RUN_VERSION})
    record = manifest.Manifest.load(output_dir / f"{video.stem}.zsvr.json")
    clip = ClipRun(video, probe, plan, keys, output_key, record, final, output_dir / f"{video.stem}.zsvr-chunks",
                   has_audio, audio_copy, warnings)
    if record.output_done(output_key) == final:
        clip.reused, clip.reused_output, clip.frames = len(plan), True, probe.frames
        return clip
    chunked_run.record_plan(record, video, digest, probe, options, workflow, keys)
    clip.chunk_dir.mkdir(exist_ok=True)
    for chunk, key in zip(plan, keys):
        done = record.done_file(key)
        if done is not None:
            clip.files[chunk.index] = done
            clip.reused += 1
        else:  # a file under this key but not in the manifest was cut short: the fetched one replaces it
            (clip.chunk_dir / f"{chunk_stem(chunk, key)}.mkv").unlink(missing_ok=True)
    return clip


def chunk_stem(chunk: chunking.Chunk, key: str) -> str:
    """A chunk file's name without ``.mkv``, as the in-process run names it (start, frames, key)."""
    return f"chunk_{chunk.start:07d}_{chunk.frames:04d}_{key[:12]}"


def _collector(clip: ClipRun, chunk: chunking.Chunk, key: str):
    """``Unit.collect`` for one chunk: check the fetched file's frame count, record it in the manifest."""

    def collect(result: UnitResult) -> None:
        entries = (result.outputs.get(chunked_run.SINK_NODE) or {}).get("zsvr_chunk") or [{}]
        written = entries[0].get("frames")
        files = [f for f in result.files if f.suffix == ".mkv"]
        if written != chunk.run_frames or len(files) != 1:
            raise RuntimeError(
                f"chunk {chunk.index + 1}/{len(clip.plan)} (frames {chunk.start}-{chunk.end - 1}): the workflow "
                f"returned {written} frames for a chunk of {chunk.run_frames}; every frame in must come out once "
                "(check the loader's frame_rule and nodes that change the frame count)")
        attempt = result.final
        with clip.lock:
            clip.record.mark_done(key, chunk.index, chunk.start, chunk.frames, files[0],
                                  attempt.compute_s if attempt is not None else 0.0)
            clip.files[chunk.index] = files[0]
            clip.run += 1

    return collect


def plan_units(registry: Registry, base_prompt: dict, videos: list, output_dir: pathlib.Path, options):
    """The units of a chunked ``--servers`` run, and a :class:`ClipRun` per clip; nothing runs yet.

    ``options``: ``chunked_run.ChunkOptions`` or a dict of its fields. Option and workflow errors raise
    :class:`InputError` before anything is written; a clip that cannot be chunked (not a video, a variable
    frame rate) gets its error in its :class:`ClipRun` and no units.
    """
    options = chunked_run.ChunkOptions(**options) if isinstance(options, dict) else options
    workflow = chunked_run.prepare(_RegistryHost(registry), base_prompt, options)
    stems = [pathlib.Path(v).stem for v in videos]
    twins = sorted({s for s in stems if stems.count(s) > 1})
    if twins:
        raise InputError("--input", f"has several clips named {', '.join(twins)} (different extensions)",
                         "rename them: chunked outputs are named after the clip's stem")
    units, clips = [], []
    for video in map(pathlib.Path, videos):
        try:
            clip = _open_clip(workflow, video, pathlib.Path(output_dir), options)
        except (InputError, ParameterError) as exc:
            clips.append(ClipRun(video, None, [], [], "", None, pathlib.Path(output_dir) / f"{video.stem}.mp4",
                                 pathlib.Path(output_dir), False, False, [], error=str(exc)))
            continue
        clips.append(clip)
        if clip.reused_output:
            continue
        for chunk, key in zip(clip.plan, clip.keys):
            if chunk.index in clip.files:
                continue
            stem = chunk_stem(chunk, key)
            units.append(Unit(f"{video.name} chunk {chunk.index + 1}/{len(clip.plan)}",
                              remote_prompt(workflow, chunk, clip.probe.fps, stem),
                              [Upload(video, [(nid, "video") for nid in workflow.loaders])],
                              clip.chunk_dir, group=video.name, collect=_collector(clip, chunk, key)))
    return units, clips


def stitch_clip(clip: ClipRun, results: list, keep_chunks: bool = False) -> None:
    """``Fleet.group_done``: once every chunk of ``clip`` is here, stitch it with its sound (sets ``clip.error``)."""
    failed = [r for r in results if not r.ok]
    if failed:
        clip.error = "; ".join(f"{r.unit.key}: {r.error}" for r in failed)
        return
    finish_clip(clip, keep_chunks)


def finish_clip(clip: ClipRun, keep_chunks: bool = False) -> None:
    """Stitch ``clip``'s chunk files into its output and record it (a clip with every chunk reused too)."""
    if clip.error is not None or clip.reused_output or clip.frames is not None:
        return
    try:
        files = [clip.files[c.index] for c in clip.plan]
        start = time.perf_counter()
        frames = stitch.write_video(clip.final, stitch.iter_stitched(clip.plan, files), clip.probe.rate,
                                    audio_source=clip.video if clip.has_audio else None, audio_copy=clip.audio_copy,
                                    audio_shift_s=clip.probe.first_time)
    except (KeyError, stitch.StitchError) as exc:
        clip.error = f"stitching '{clip.video.name}': {exc}"
        return
    clip.record.mark_output(clip.output_key, clip.final, frames)
    clip.frames = frames
    clip.warnings.append(f"stitched in {time.perf_counter() - start:.1f} s")
    if not keep_chunks:
        shutil.rmtree(clip.chunk_dir, ignore_errors=True)


def format_clips(clips: list) -> str:
    """The per-clip table of a chunked ``--servers`` run (clip, status, frames, chunks run/reused, output)."""
    lines = [f"{'clip':<24} {'status':<7} {'frames':>6} {'chunks':>6} {'run':>4} {'reused':>6}  detail"]
    for c in clips:
        row = c.row()
        frames = "-" if row["frames"] is None else str(row["frames"])
        detail = ", ".join(row["outputs"]) if row["ok"] else (row["error"] or "")
        lines.append(f"{row['video']:<24} {'ok' if row['ok'] else 'FAILED':<7} {frames:>6} {row['chunks']:>6} "
                     f"{row['chunks_run']:>4} {row['chunks_reused']:>6}  {detail}")
    return "\n".join(lines)
