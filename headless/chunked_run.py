"""Chunked runs of long clips in this process (issue 14; docs/long-clips.md): the chunk prompt and the in-process
executor.

``run_workflow.py WORKFLOW --input ... --output ... --chunk-frames N --overlap K`` hands each clip to :func:`run_clip`.
The clip's plan, chunk keys, chunk file names, reuse, manifest and stitching are the one clip job's
(``headless/clip_job.py``), shared with the server executor (``headless/remote_chunks.py``). Here:

* **The chunk prompt** (:func:`prepare`, :class:`ChunkedWorkflow`): a copy of the workflow in which every
  ``ZSVR_LoadVideo`` gets the chunk's ``start_frame`` / ``frame_cap`` (the loader seeks to the keyframe before
  ``start_frame`` and decodes only the chunk, so no clip is ever decoded whole), and the workflow's output nodes
  are replaced by the pack's lossless chunk sink, ``ZSVRHeadless_ChunkOutput`` (``nodes/chunk_output.py``; why
  lossless: ``headless/stitch.py``; the same node on a server), fed
  by the IMAGE that went into the video (``CreateVideo``'s images, or the one image-saving node's). With
  ``--color-match`` a ``ZSVR_ColorMatch`` sits between that IMAGE and the sink, referenced to the loader's
  frames of the same chunk.
* **The in-process executor** (:func:`run_clip`): the clip staged in ComfyUI's input folder, each chunk not
  done yet run through ``host.execute``, its file moved from ComfyUI's output folder (where the sink wrote it)
  into the clip's chunk folder and recorded at once (a run killed mid-chunk loses only that chunk), then the
  clip stitched with its sound into ``<output>/<stem>.mp4``.

Per clip, beside the output: ``<stem>.zsvr.json`` (manifest) and, while the clip is in progress (or with
``--keep-chunks``), ``<stem>.zsvr-chunks/``. Memory per clip is one chunk's workflow plus a few frames for
stitching; it does not grow with the clip's length.
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

from ..kernels import chunking, color_match
from ..kernels.errors import ParameterError
from ..nodes.errors import InputError
from . import clip_job, manifest, shots, whole_clips
from .clip_job import ChunkOptions

log = logging.getLogger("zsvr")

LOADER = "ZSVR_LoadVideo"
COLOR_MATCH_NODE = "zsvr_chunk_color_match"
SINK_NODE = "zsvr_chunk_sink"
SINK_CLASS = "ZSVRHeadless_ChunkOutput"
"""The pack's node that stores a chunk in ComfyUI's output folder (``nodes/chunk_output.py``), in either executor."""

OPTION_FLAGS = {"chunk_frames": "--chunk-frames", "overlap": "--overlap", "method": "--color-match",
                "threshold": "--scene-threshold"}


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

    def chunk_prompt(self, video_name: str, chunk: chunking.Chunk, fps: float, file_stem: str = "") -> dict:
        """The prompt of one chunk; its sink writes ``<ComfyUI output>/<file_stem>.mkv`` (a stem may hold folders)."""
        prompt = copy.deepcopy(self.template)
        for nid in self.loaders:
            prompt[nid]["inputs"].update(video=video_name, start_frame=chunk.start, frame_cap=chunk.frames,
                                         pad_frames=chunk.padded)
        prompt[SINK_NODE]["inputs"].update(filename_prefix=file_stem, fps=float(fps))
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
        if options.scene_cuts:
            shots.check_threshold(options.scene_threshold)
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
    template[SINK_NODE] = {"class_type": SINK_CLASS, "inputs": {"images": image, "filename_prefix": "", "fps": 24.0}}
    return ChunkedWorkflow(template, loaders, frame_rule)


# ---------------------------------------------------------------------------
# One clip.
# ---------------------------------------------------------------------------


def _stage(video: pathlib.Path, input_dir: pathlib.Path) -> tuple[pathlib.Path, bool]:
    """The clip in ComfyUI's input folder (hard link where possible, else a copy); True when it is our copy."""
    staged = input_dir / clip_job.staged_name(video)
    if staged.exists() and staged.resolve() == video.resolve():
        return staged, False
    staged.unlink(missing_ok=True)
    try:
        os.link(video, staged)
    except OSError:
        shutil.copyfile(video, staged)
    return staged, True


def run_clip(host, workflow: ChunkedWorkflow, video: pathlib.Path, output_dir: pathlib.Path, options: ChunkOptions,
             on_chunk: Optional[Callable[[int, int, str], None]] = None,
             stopping: Optional[Callable[[], bool]] = None) -> dict:
    """Run one clip's chunks in this process and stitch it; returns a summary (raises InputError / RuntimeError).

    ``on_chunk(done, total, what)`` is called after every chunk (run or reused) with a few words on it; when
    ``stopping()`` turns true no further chunk starts (RuntimeError; the chunks done stay recorded).
    """
    job = clip_job.open_job(workflow, video, output_dir, options)
    summary = {"frames": job.probe.frames, "chunks": len(job.plan), "chunks_run": 0, "chunks_reused": job.reused,
               "output": str(job.final), "warnings": job.warnings, "shots": job.shots}
    if job.reused_output:
        summary["reused_output"] = True
        return summary
    staged, own_copy = _stage(job.video, pathlib.Path(host.folder_paths.get_input_directory()))
    comfy_out = pathlib.Path(host.folder_paths.get_output_directory())
    passing = whole_clips.passing_folder(comfy_out)  # where the sink writes, inside ComfyUI's output folder
    passing_rel = passing.relative_to(comfy_out).as_posix()
    try:
        for chunk, key in zip(job.plan, job.keys):
            reused = chunk.index in job.files
            if not reused and stopping is not None and stopping():
                raise RuntimeError(f"stopped before {job.where(chunk)}; the chunks done are kept for a rerun")
            if not reused:
                start = time.perf_counter()
                stem = f"{passing_rel}/{job.chunk_stem(chunk, key)}"
                run = host.execute(workflow.chunk_prompt(staged.name, chunk, job.probe.fps, stem))
                if not run.success:
                    raise RuntimeError(f"{job.where(chunk)}: {run.error_text()}")
                entry = ((run.outputs.get(SINK_NODE) or {}).get("zsvr_chunk") or [{}])[0]
                made = passing / str(entry.get("filename", ""))
                job.check_written(chunk, entry.get("frames"), made.is_file())
                file = job.chunk_file(chunk, key)
                shutil.move(made, file)
                job.mark_chunk(chunk, key, file, time.perf_counter() - start)
            if on_chunk is not None:
                what = "reused" if reused else f"restored in {time.perf_counter() - start:.1f} s"
                on_chunk(chunk.index + 1, len(job.plan), f"frames {chunk.start}-{chunk.end - 1} {what}")
    finally:
        whole_clips.drop_passing(passing)
        if own_copy:
            staged.unlink(missing_ok=True)
    job.finish(options.keep_chunks)
    summary.update(frames=job.frames, chunks_run=job.run)
    return summary


def run_batch_chunked(host, base_prompt: dict, videos: list[pathlib.Path], output_dir: pathlib.Path,
                      options: ChunkOptions, progress: bool = True,
                      peak_memory: Optional[Callable[[], float]] = None,
                      report: Optional[Callable[[str], None]] = None,
                      stopping: Optional[Callable[[], bool]] = None) -> list[dict]:
    """Every clip through :func:`run_clip`; one row per clip (the runner's table format), never raises for a clip.

    Option errors (bad ``--chunk-frames`` / ``--overlap`` / ``--color-match``,
    a workflow that cannot be chunked) raise :class:`InputError` before anything is written.
    Progress: one line per chunk through ``report`` when given, else a tqdm bar per clip (``progress``).
    Once ``stopping()`` is true (a stop signal) no further chunk or clip starts.
    """
    from tqdm import tqdm

    workflow = prepare(host, base_prompt, options)
    manifest.check_stems(videos)
    whole_clips.sweep_stale(host.folder_paths.get_output_directory())  # a killed run's passing folders
    rows = []
    for number, video in enumerate(videos, 1):
        if stopping is not None and stopping():
            break
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
        if report is not None and options.scene_cuts:  # the scan decodes the whole clip (small): say so first
            report(f"clip {number}/{len(videos)} {video.name}: finding shot cuts (or reusing the manifest's)")
        try:
            summary = run_clip(host, workflow, video, output_dir, options, on_chunk, stopping)
            row.update(frames=summary["frames"], outputs=[summary["output"]], warnings=summary["warnings"],
                       chunks=summary["chunks"], chunks_run=summary["chunks_run"],
                       chunks_reused=summary["chunks_reused"], shots=summary["shots"],
                       skipped=summary.get("reused_output", False))
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
