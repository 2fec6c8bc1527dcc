"""One clip of a chunked run, whichever executor runs its chunks: plan, keys, names, reuse, stitch, manifest.

A chunked run (``--chunk-frames``; docs/long-clips.md) cuts each clip into overlapping chunks, runs every chunk
as its own prompt and stitches the chunk files. Where a chunk runs is the executor's business: in this process
(``headless/chunked_run.py``: ``host.execute``) or on a fleet of ComfyUI servers
(``headless/remote_chunks.py``). Everything else is here, once, so a clip started in one mode resumes in the
other:

* the plan (``kernels/chunking.plan_shot_chunks`` under the workflow's frame rule: per shot, the cuts from
  ``headless/shots.py``, so no chunk straddles a cut; one shot with ``--no-scene-cuts``) and the checks of the clip;
* each chunk's key (:func:`chunk_key`: the in-process chunk prompt on the staged name ``zsvr_batch_<clip>``,
  the source's digest, the chunk-file format and :data:`RUN_VERSION`) and the output's key;
* the chunk file's name (:meth:`ClipJob.chunk_file`) in ``<output>/<stem>.zsvr-chunks/``;
* reuse: chunks whose key the manifest (``headless/manifest.py``) records as done are not run again, and a
  clip whose output is recorded is not touched;
* the check that a chunk gave back every frame (:meth:`ClipJob.check_written`);
* stitching with the source's sound into ``<output>/<stem>.mp4`` (:meth:`ClipJob.finish`).
"""

from __future__ import annotations

import dataclasses
import pathlib
import shutil
import threading
import time
from typing import Optional

from ..kernels import chunk_files, chunking, video_io
from ..kernels.errors import ParameterError
from ..nodes.errors import InputError
from ..kernels.shot_cuts import DEFAULT_THRESHOLD
from . import manifest, shots, stitch

RUN_VERSION = 2
"""Bumped when the meaning of a chunk key changes (forces re-runs). 2: one sink node for both executors."""
STAGED_PREFIX = "zsvr_batch_"
"""The name the in-process run gives its copy of the clip in ComfyUI's input folder (part of every chunk key)."""


@dataclasses.dataclass
class ChunkOptions:
    """What ``--chunk-frames``, ``--overlap``, ``--color-match``, ``--keep-chunks``, ``--no-scene-cuts`` and
    ``--scene-threshold`` ask for."""

    chunk_frames: int
    overlap: int = 8
    color_match: Optional[str] = None
    """A ``ZSVR_ColorMatch`` method applied to every chunk, or None."""
    keep_chunks: bool = False
    scene_cuts: bool = True
    """Plan chunks per shot (``headless/shots.py``); False: the clip as one shot."""
    scene_threshold: float = DEFAULT_THRESHOLD
    """The shot-cut threshold (``kernels/shot_cuts.py``; higher finds fewer cuts)."""
    force: bool = False
    """``--force``: redo every chunk and the output even when the manifest says they are done."""


def staged_name(video: pathlib.Path) -> str:
    """The clip's name in ComfyUI's input folder during an in-process run."""
    return STAGED_PREFIX + pathlib.Path(video).name


def _check_clip(video: pathlib.Path, probe: video_io.ClipProbe) -> None:
    if not probe.constant_rate:
        shortest, longest = probe.frame_durations
        raise InputError(
            "video",
            f"'{video.name}' has a variable frame rate: its frames last from {shortest * 1000:.1f} to "
            f"{longest * 1000:.1f} ms (the stream says {probe.fps:.3f} fps); chunked runs number frames in decode "
            f"order and time frame i at i / fps, so the picture would drift from the sound",
            "re-encode the clip at a constant frame rate first (e.g. ffmpeg -i in.mp4 -fps_mode cfr -r 30 out.mp4), "
            "or run it without --chunk-frames",
        )


def chunk_key(workflow, video: pathlib.Path, chunk: chunking.Chunk, fps: float, digest: str) -> str:
    """The settings key of one chunk: what its file depends on (``workflow`` is a ``ChunkedWorkflow``)."""
    return manifest.settings_key({"prompt": workflow.chunk_prompt(staged_name(video), chunk, fps), "source": digest,
                                  "format": chunk_files.CHUNK_FORMAT, "version": RUN_VERSION})


@dataclasses.dataclass
class ClipJob:
    """One clip of a chunked run: its plan, keys, manifest and the chunk files done so far."""

    video: pathlib.Path
    probe: Optional[video_io.ClipProbe]
    plan: list
    keys: list
    output_key: str
    record: Optional[manifest.Manifest]
    final: pathlib.Path
    chunk_dir: pathlib.Path
    has_audio: bool
    audio_copy: bool
    warnings: list
    files: dict = dataclasses.field(default_factory=dict)
    """chunk index -> its file (reused or made)."""
    run: int = 0
    reused: int = 0
    frames: Optional[int] = None
    error: Optional[str] = None
    reused_output: bool = False
    shots: int = 1
    """Shots the plan has (cuts + 1)."""
    lock: threading.Lock = dataclasses.field(default_factory=threading.Lock)
    """Held while a chunk is recorded: several servers finish chunks of one clip at once."""

    @classmethod
    def failed(cls, video: pathlib.Path, output_dir: pathlib.Path, error: str) -> "ClipJob":
        """A clip refused before planning (its row says why)."""
        return cls(video, None, [], [], "", None, output_dir / f"{video.stem}.mp4", output_dir, False, False, [],
                   error=error)

    def pending(self) -> list[tuple[chunking.Chunk, str]]:
        """``(chunk, key)`` of every chunk still to run (none once the output is done)."""
        if self.reused_output:
            return []
        return [(c, k) for c, k in zip(self.plan, self.keys) if c.index not in self.files]

    def chunk_stem(self, chunk: chunking.Chunk, key: str) -> str:
        """A chunk file's name without ``.mkv`` (start, frames, key)."""
        return f"chunk_{chunk.start:07d}_{chunk.frames:04d}_{key[:12]}"

    def chunk_file(self, chunk: chunking.Chunk, key: str) -> pathlib.Path:
        return self.chunk_dir / f"{self.chunk_stem(chunk, key)}.mkv"

    def where(self, chunk: chunking.Chunk) -> str:
        return f"chunk {chunk.index + 1}/{len(self.plan)} (frames {chunk.start}-{chunk.end - 1})"

    def check_written(self, chunk: chunking.Chunk, written, have_file: bool) -> None:
        """Raise RuntimeError unless the chunk's file is there and holds every frame the chunk ran."""
        if written != chunk.run_frames or not have_file:
            raise RuntimeError(
                f"{self.where(chunk)}: the workflow returned {written} frames for a chunk of {chunk.run_frames}; "
                "every frame in must come out once (check the loader's frame_rule and nodes that change the "
                "frame count)")

    def mark_chunk(self, chunk: chunking.Chunk, key: str, file: pathlib.Path, seconds: float) -> None:
        """Record a finished chunk in the manifest (at once: a run killed later keeps it)."""
        with self.lock:
            self.record.mark_done(key, chunk.index, chunk.start, chunk.frames, file, seconds)
            self.files[chunk.index] = file
            self.run += 1

    def finish(self, keep_chunks: bool = False) -> float:
        """Stitch the chunk files into the output with the source's sound and record it; returns the seconds it
        took (0 when the output is reused or done). Raises RuntimeError when the files do not stitch."""
        if self.reused_output or self.frames is not None:
            return 0.0
        try:
            files = [self.files[c.index] for c in self.plan]
            start = time.perf_counter()
            frames = stitch.write_video(self.final, stitch.iter_stitched(self.plan, files), self.probe.rate,
                                        audio_source=self.video if self.has_audio else None,
                                        audio_copy=self.audio_copy, audio_shift_s=self.probe.first_time)
        except (KeyError, stitch.StitchError) as exc:
            raise RuntimeError(f"stitching '{self.video.name}': {exc}") from None
        self.record.mark_output(self.output_key, self.final, frames)
        self.frames = frames
        if not keep_chunks:
            shutil.rmtree(self.chunk_dir, ignore_errors=True)
        return time.perf_counter() - start

    def row(self) -> dict:
        """The clip's summary row (fields of the runner's per-clip table)."""
        return {"video": self.video.name, "ok": self.error is None, "frames": self.frames, "error": self.error,
                "outputs": [str(self.final)] if self.error is None else [], "warnings": self.warnings,
                "chunks": len(self.plan), "chunks_run": self.run, "chunks_reused": self.reused, "shots": self.shots,
                "skipped": self.reused_output}


def open_job(workflow, video: pathlib.Path, output_dir: pathlib.Path, options: ChunkOptions) -> ClipJob:
    """Probe, check, plan and key one clip, load its manifest and find the chunks already done.

    Raises InputError for a clip it refuses (not a video, a variable frame rate, an output over the source).
    """
    video, output_dir = pathlib.Path(video), pathlib.Path(output_dir)
    warnings: list[str] = []
    try:
        probe = video_io.probe_clip(video)
    except ParameterError as exc:
        raise InputError("video", exc.problem, exc.fix) from None
    _check_clip(video, probe)
    digest = manifest.file_digest(video)
    record = manifest.Manifest.load(output_dir / f"{video.stem}.zsvr.json")
    cuts = shots.clip_cuts(video, probe.frames, digest, record, options, warnings)
    plan = chunking.plan_shot_chunks(probe.frames, cuts, options.chunk_frames, options.overlap, workflow.frame_rule)
    warnings.extend(shots.describe(cuts, plan, options.scene_threshold))
    if len(plan) == 1:
        note = f"{probe.frames} frames, not more than one chunk ({options.chunk_frames}): run whole"
        if plan[0].padded:
            note += f" (on {plan[0].run_frames} frames for frame rule {workflow.frame_rule}, the extra dropped)"
        warnings.append(note)
    if probe.audio is not None and probe.audio.error is not None:
        warnings.append(f"the audio track of '{video.name}' cannot be decoded ({probe.audio.error}): "
                        "the output has no sound; the picture is restored")
    output_dir.mkdir(parents=True, exist_ok=True)
    final = output_dir / f"{video.stem}.mp4"
    if final.resolve() == video.resolve():
        raise InputError("--output", f"would overwrite the source '{video}'", "choose another output folder")

    has_audio = probe.audio is not None and probe.audio.error is None
    audio_copy = not has_audio or probe.audio.codec in stitch.MP4_COPY_CODECS
    keys = [chunk_key(workflow, video, c, probe.fps, digest) for c in plan]
    output_key = manifest.settings_key({"chunks": keys, "crf": stitch.VIDEO_CRF, "audio": has_audio,
                                        "audio_copy": audio_copy, "version": RUN_VERSION})
    if options.force:  # --force: nothing recorded counts as done; the old files are replaced as chunks finish
        record.keep_only([])
        record.data["output"] = None
    job = ClipJob(video, probe, plan, keys, output_key, record, final, output_dir / f"{video.stem}.zsvr-chunks",
                  has_audio, audio_copy, warnings, shots=len(cuts) + 1)
    known_shots = record.data.get("shots")
    shots.record_shots(record, options, cuts, probe.frames)
    if record.output_done(output_key) == final:
        job.reused, job.reused_output, job.frames = len(plan), True, probe.frames
        if record.data["shots"] != known_shots:  # the same plan at another threshold: keep the scan's record
            record.save()
        return job
    _record_plan(record, video, digest, probe, options, workflow, keys)
    job.chunk_dir.mkdir(exist_ok=True)
    for chunk, key in zip(plan, keys):
        done = record.done_file(key)
        if done is not None:
            job.files[chunk.index] = done
            job.reused += 1
        else:  # a file under this key but not in the manifest was cut short: a new one replaces it
            job.chunk_file(chunk, key).unlink(missing_ok=True)
    return job


def _record_plan(record, video: pathlib.Path, digest: str, probe, options, workflow, keys: list[str]) -> None:
    """Write the clip's source and chunk plan into its manifest ``record``, keep only the entries of this plan's
    chunk ``keys`` (a changed plan or workflow starts over) and save it."""
    record.data["source"] = {"name": video.name, "sha256": digest, "frames": probe.frames, "rate": str(probe.rate)}
    record.data["plan"] = {"chunk_frames": options.chunk_frames, "overlap": options.overlap,
                           "frame_rule": workflow.frame_rule}
    record.keep_only(keys)
    record.save()
