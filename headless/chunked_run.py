"""Chunked runs of long clips in the headless runner (issue 14; docs/long-clips.md): plan, run, resume, stitch, sound.

``run_workflow.py WORKFLOW --input ... --output ... --chunk-frames N --overlap K`` hands each clip to :func:`run_clip`:

1. **Probe** (``kernels/video_io.probe_clip``): the frame count and every
   frame's timing, from the packets (no picture is decoded). A clip with a
   variable frame rate is refused: frames are numbered in decode order and
   timed at ``i / fps``, which would drift from the sound.
2. **Plan** (``kernels/chunking.plan_chunks``) with the ``frame_rule`` of the
   workflow's ``ZSVR_LoadVideo``: every chunk has a length the rule keeps; a
   clip no longer than one chunk runs whole (a note says so).
3. **Run** each chunk as its own prompt: a copy of the workflow in which every
   ``ZSVR_LoadVideo`` gets the chunk's ``start_frame`` / ``frame_cap`` (the
   loader seeks to the keyframe before ``start_frame`` and decodes only the
   chunk, so no clip is ever decoded whole), and the workflow's output nodes
   are replaced by the lossless chunk sink (``headless/chunk_sink.py``; why
   lossless: ``headless/stitch.py``) fed by the IMAGE that went into the video
   (``CreateVideo``'s images, or the one image-saving node's). With
   ``--color-match`` a ``ZSVR_ColorMatch`` sits between that IMAGE and the
   sink, referenced to the loader's frames of the same chunk.
4. **Resume** (``headless/manifest.py``): after every chunk the clip's
   manifest records it with a key over its settings; a re-run skips chunks
   (and whole clips) whose key is done, and re-runs what a changed setting
   touches. A run killed mid-chunk loses only that chunk.
5. **Stitch** (``headless/stitch.py``): the chunk files are crossfaded over
   their overlaps, frame by frame, into ``<output>/<stem>.mp4`` at the
   source's frame rate, with the source's sound copied (or AAC-encoded where
   MP4 cannot hold its codec), written under ``<stem>.partial.mp4`` and
   renamed when complete. A sound track that cannot be decoded is left out
   with a warning; the picture is still restored.

Per clip, beside the output: ``<stem>.zsvr.json`` (manifest) and, while the
clip is in progress (or with ``--keep-chunks``), ``<stem>.zsvr-chunks/``.
Memory per clip is one chunk's workflow plus a few frames for stitching; it
does not grow with the clip's length.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import os
import pathlib
import shutil
import time
from typing import Callable, Optional

from ..kernels import chunk_files, chunking, color_match, video_io
from ..kernels.errors import InputError, ParameterError
from . import chunk_sink, manifest, stitch

log = logging.getLogger("zsvr")

LOADER = "ZSVR_LoadVideo"
COLOR_MATCH_NODE = "zsvr_chunk_color_match"
SINK_NODE = "zsvr_chunk_sink"
RUN_VERSION = 1
"""Bumped when the meaning of a chunk key changes (forces re-runs)."""


@dataclasses.dataclass
class ChunkOptions:
    """What ``--chunk-frames``, ``--overlap``, ``--color-match`` and ``--keep-chunks`` ask for."""

    chunk_frames: int
    overlap: int = 8
    color_match: Optional[str] = None
    """A ``ZSVR_ColorMatch`` method applied to every chunk, or None."""
    keep_chunks: bool = False


OPTION_FLAGS = {"chunk_frames": "--chunk-frames", "overlap": "--overlap", "method": "--color-match"}


def _option_error(exc: ParameterError) -> InputError:
    return InputError(OPTION_FLAGS.get(exc.parameter, exc.parameter), exc.problem, exc.fix)


# ---------------------------------------------------------------------------
# The chunk prompt.
# ---------------------------------------------------------------------------


def _is_output(host, class_type: str) -> bool:
    cls = host.nodes.NODE_CLASS_MAPPINGS.get(class_type)
    return cls is not None and getattr(cls, "OUTPUT_NODE", False) is True


def _result_image(host, prompt: dict) -> list:
    """The link ``[node id, slot]`` of the IMAGE the workflow makes its video from."""
    links = [n["inputs"].get("images") for n in prompt.values() if n["class_type"] == "CreateVideo"]
    if not links:
        links = [n["inputs"].get("images") for n in prompt.values() if _is_output(host, n["class_type"])]
    found = {tuple(link) for link in links if isinstance(link, list) and len(link) == 2}
    if len(found) != 1:
        what = "no" if not found else f"{len(found)} different"
        raise InputError(
            "workflow",
            f"has {what} result images for a chunked run (the IMAGE going into CreateVideo or an image save node)",
            "keep exactly one CreateVideo (or one image-saving node) in the workflow",
        )
    return list(found.pop())


@dataclasses.dataclass
class ChunkedWorkflow:
    """The workflow as chunked runs send it: loaders, frame rule and the prompt template."""

    template: dict
    loaders: list[str]
    frame_rule: str

    def chunk_prompt(self, video_name: str, chunk: chunking.Chunk, fps: float, sink_path: str = "") -> dict:
        prompt = copy.deepcopy(self.template)
        for nid in self.loaders:
            prompt[nid]["inputs"].update(video=video_name, start_frame=chunk.start, frame_cap=chunk.frames,
                                         pad_frames=chunk.padded)
        prompt[SINK_NODE]["inputs"].update(path=sink_path, fps=float(fps))
        return prompt


def prepare(host, base_prompt: dict, options: ChunkOptions) -> ChunkedWorkflow:
    """Check the options against the workflow and build the chunk prompt template (raises InputError)."""
    loaders = sorted(nid for nid, n in base_prompt.items() if n["class_type"] == LOADER)
    if not loaders:
        raise InputError("workflow", f"has no {LOADER} node", "chunked runs need the pack's video loader")
    rules = {base_prompt[nid]["inputs"].get("frame_rule", "any") for nid in loaders}
    if len(rules) != 1:
        raise InputError("frame_rule", f"differs between the {LOADER} nodes ({', '.join(sorted(rules))})",
                         "use one frame rule in every loader")
    frame_rule = rules.pop()
    for nid in loaders:
        every_nth = base_prompt[nid]["inputs"].get("every_nth", 1)
        if every_nth != 1:
            raise InputError("every_nth", f"is {every_nth} in {LOADER} node {nid}; chunked runs keep every frame",
                             f"set it to 1 (--set {LOADER}.every_nth=1)")
    try:
        chunking.check_chunking(options.chunk_frames, options.overlap, frame_rule)
        if options.color_match is not None and options.color_match not in color_match.METHODS:
            raise ParameterError("method", f"is {options.color_match!r}", f"use one of {', '.join(color_match.METHODS)}")
    except ParameterError as exc:
        raise _option_error(exc) from None
    template = copy.deepcopy(base_prompt)
    image = _result_image(host, template)
    for nid in [nid for nid, n in template.items() if _is_output(host, n["class_type"])]:
        del template[nid]
    if options.color_match is not None:
        template[COLOR_MATCH_NODE] = {"class_type": "ZSVR_ColorMatch", "inputs": {
            "image": image, "reference": [loaders[0], 0], "method": options.color_match, "strength": 1.0}}
        image = [COLOR_MATCH_NODE, 0]
    template[SINK_NODE] = {"class_type": chunk_sink.register(host.nodes),
                           "inputs": {"images": image, "path": "", "fps": 24.0}}
    return ChunkedWorkflow(template, loaders, frame_rule)


# ---------------------------------------------------------------------------
# One clip.
# ---------------------------------------------------------------------------


def _stage(video: pathlib.Path, input_dir: pathlib.Path) -> tuple[pathlib.Path, bool]:
    """The clip in ComfyUI's input folder (hard link where possible, else a copy); True when it is our copy."""
    staged = input_dir / f"zsvr_batch_{video.name}"
    if staged.exists() and staged.resolve() == video.resolve():
        return staged, False
    staged.unlink(missing_ok=True)
    try:
        os.link(video, staged)
    except OSError:
        shutil.copyfile(video, staged)
    return staged, True


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


def prepare_clip(workflow: ChunkedWorkflow, video: pathlib.Path, output_dir: pathlib.Path, options: ChunkOptions):
    """Probe, check and plan one clip, and name its output: ``(probe, plan, final path, warnings)``.

    Shared by the in-process run (:func:`run_clip`) and the server run (``remote_chunks``); raises InputError for
    a clip it refuses.
    """
    warnings: list[str] = []
    try:
        probe = video_io.probe_clip(video)
    except ParameterError as exc:
        raise InputError("video", exc.problem, exc.fix) from None
    _check_clip(video, probe)
    plan = chunking.plan_chunks(probe.frames, options.chunk_frames, options.overlap, workflow.frame_rule)
    if probe.frames <= options.chunk_frames:
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
    return probe, plan, final, warnings


def run_clip(host, workflow: ChunkedWorkflow, video: pathlib.Path, output_dir: pathlib.Path, options: ChunkOptions,
             on_chunk: Optional[Callable[[int, int, str], None]] = None) -> dict:
    """Run one clip in chunks and stitch it; returns a summary (raises InputError / RuntimeError on failure).

    ``on_chunk(done, total, what)`` is called after every chunk (run or reused) with a few words on it.
    """
    video = pathlib.Path(video)
    probe, plan, final, warnings = prepare_clip(workflow, video, output_dir, options)
    record = manifest.Manifest.load(output_dir / f"{video.stem}.zsvr.json")
    digest = manifest.file_digest(video)
    staged, own_copy = _stage(video, pathlib.Path(host.folder_paths.get_input_directory()))
    try:
        return _run_staged(host, workflow, video, staged, probe, plan, digest, final, record, options, warnings,
                           on_chunk)
    finally:
        if own_copy:
            staged.unlink(missing_ok=True)


def record_plan(record, video: pathlib.Path, digest: str, probe, options, workflow, keys: list[str]) -> None:
    """Write the clip's source and chunk plan into its manifest ``record``, keep only the entries of this plan's
    chunk ``keys`` (a changed plan or workflow starts over) and save it."""
    record.data["source"] = {"name": video.name, "sha256": digest, "frames": probe.frames, "rate": str(probe.rate)}
    record.data["plan"] = {"chunk_frames": options.chunk_frames, "overlap": options.overlap,
                           "frame_rule": workflow.frame_rule}
    record.keep_only(keys)
    record.save()


def _run_staged(host, workflow, video, staged, probe, plan, digest, final, record, options, warnings, on_chunk):
    """:func:`run_clip` once the clip is probed, planned and staged in ComfyUI's input folder."""
    output_dir = final.parent
    has_audio = probe.audio is not None and probe.audio.error is None
    audio_copy = not has_audio or probe.audio.codec in stitch.MP4_COPY_CODECS
    keys = [manifest.settings_key({"prompt": workflow.chunk_prompt(staged.name, c, probe.fps), "source": digest,
                                   "format": chunk_files.CHUNK_FORMAT, "version": RUN_VERSION}) for c in plan]
    output_key = manifest.settings_key({"chunks": keys, "crf": stitch.VIDEO_CRF, "audio": has_audio,
                                        "audio_copy": audio_copy, "version": RUN_VERSION})
    summary = {"frames": probe.frames, "chunks": len(plan), "chunks_run": 0, "chunks_reused": 0,
               "output": str(final), "warnings": warnings}
    if record.output_done(output_key) == final:
        summary["chunks_reused"] = len(plan)
        summary["reused_output"] = True
        return summary

    record_plan(record, video, digest, probe, options, workflow, keys)
    chunk_dir = output_dir / f"{video.stem}.zsvr-chunks"
    chunk_dir.mkdir(exist_ok=True)
    files = []
    for chunk, key in zip(plan, keys):
        done = record.done_file(key)
        if done is not None:
            files.append(done)
            summary["chunks_reused"] += 1
        else:
            file = chunk_dir / f"chunk_{chunk.start:07d}_{chunk.frames:04d}_{key[:12]}.mkv"
            start = time.perf_counter()
            run = host.execute(workflow.chunk_prompt(staged.name, chunk, probe.fps, str(file)))
            if not run.success:
                raise RuntimeError(f"chunk {chunk.index + 1}/{len(plan)} (frames {chunk.start}-{chunk.end - 1}): "
                                   f"{run.error_text()}")
            written = ((run.outputs.get(SINK_NODE) or {}).get("zsvr_chunk") or [{}])[0].get("frames")
            if written != chunk.run_frames or not file.is_file():
                raise RuntimeError(
                    f"chunk {chunk.index + 1}/{len(plan)} (frames {chunk.start}-{chunk.end - 1}): the workflow returned "
                    f"{written} frames for a chunk of {chunk.run_frames}; every frame in must come out once "
                    f"(check the loader's frame_rule and nodes that change the frame count)")
            record.mark_done(key, chunk.index, chunk.start, chunk.frames, file, time.perf_counter() - start)
            files.append(file)
            summary["chunks_run"] += 1
        if on_chunk is not None:
            what = "reused" if done is not None else f"restored in {time.perf_counter() - start:.1f} s"
            on_chunk(chunk.index + 1, len(plan), f"frames {chunk.start}-{chunk.end - 1} {what}")

    try:
        frames = stitch.write_video(final, stitch.iter_stitched(plan, files), probe.rate,
                                    audio_source=video if has_audio else None, audio_copy=audio_copy,
                                    audio_shift_s=probe.first_time)
    except stitch.StitchError as exc:
        raise RuntimeError(f"stitching '{video.name}': {exc}") from None
    record.mark_output(output_key, final, frames)
    if not options.keep_chunks:
        shutil.rmtree(chunk_dir, ignore_errors=True)
    summary["frames"] = frames
    return summary


def run_batch_chunked(host, base_prompt: dict, videos: list[pathlib.Path], output_dir: pathlib.Path,
                      options: ChunkOptions, progress: bool = True,
                      peak_memory: Optional[Callable[[], float]] = None,
                      report: Optional[Callable[[str], None]] = None) -> list[dict]:
    """Every clip through :func:`run_clip`; one row per clip (the runner's table format), never raises for a clip.

    Option errors (bad ``--chunk-frames`` / ``--overlap`` / ``--color-match``,
    a workflow that cannot be chunked) raise :class:`InputError` before anything is written.
    Progress: one line per chunk through ``report`` when given, else a tqdm bar per clip (``progress``).
    """
    from tqdm import tqdm

    workflow = prepare(host, base_prompt, options)
    stems = [v.stem for v in videos]
    twins = sorted({s for s in stems if stems.count(s) > 1})
    if twins:
        raise InputError("--input", f"has several clips named {', '.join(twins)} (different extensions)",
                         "rename them: chunked outputs are named after the clip's stem")
    rows = []
    for number, video in enumerate(videos, 1):
        bar = tqdm(total=1, desc=video.name, unit="chunk", disable=not progress or report is not None, leave=True)

        def on_chunk(done, total, what, bar=bar, number=number, video=video):
            if report is not None:
                report(f"clip {number}/{len(videos)} {video.name}: chunk {done}/{total}, {what}")
            if bar.total != total:
                bar.reset(total=total)
            bar.n = done
            bar.refresh()

        start = time.perf_counter()
        row = {"video": video.name, "ok": True, "frames": None, "error": None, "outputs": [], "warnings": []}
        try:
            summary = run_clip(host, workflow, video, output_dir, options, on_chunk)
            row.update(frames=summary["frames"], outputs=[summary["output"]], warnings=summary["warnings"],
                       chunks=summary["chunks"], chunks_run=summary["chunks_run"],
                       chunks_reused=summary["chunks_reused"])
        except Exception as exc:  # one clip's failure must not stop the batch
            row.update(ok=False, error=str(exc) if isinstance(exc, (InputError, RuntimeError)) else
                       f"{type(exc).__name__}: {exc}")
        finally:
            bar.close()
        for warning in row["warnings"]:
            log.warning("ZSVR runner: %s: %s", video.name, warning)
        row["seconds"] = round(time.perf_counter() - start, 2)
        row["peak_memory_gb"] = round(peak_memory(), 2) if peak_memory is not None else 0.0
        rows.append(row)
    return rows
