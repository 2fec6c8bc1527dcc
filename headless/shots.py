"""The shots of a clip in a chunked run (issue 26; docs/long-clips.md): one streaming scan, recorded in the manifest.

Where a clip changes shot, a chunk that straddles the cut would restore two unrelated shots together (the model
attends across them, flow-based steps warp pixels across them) and a crossfade would smear one into the other.
So with cuts on (the default; ``--no-scene-cuts`` turns them off) the clip job (``headless/clip_job.py``) asks
:func:`clip_cuts` for the frames where a new shot starts and plans its chunks shot by shot
(``kernels/chunking.plan_shot_chunks``): no chunk straddles a cut and no crossfade crosses one.

* **The scan** (:func:`scan_cuts`): the clip decoded once, front to back, at ``SCAN_SIDE`` pixels on its longer
  side (``kernels/video_io.iter_thumbnails``; one small frame in memory at a time), one
  ``kernels/shot_cuts.frame_signature`` per frame (a few hundred bytes each), then
  ``shot_cuts.cuts_from_signatures`` at the user's threshold (``--scene-threshold``, default
  ``shot_cuts.DEFAULT_THRESHOLD``; its rule and limits, e.g. dissolves, are that module's).
* **The record** (:func:`record_shots`): the manifest's ``"shots"`` entry holds the threshold, the cuts and the
  shot count (``{"scene_cuts": false}`` with cuts off). A resumed run of the same source at the same threshold
  takes the cuts from there instead of scanning again; another threshold scans again. Chunk keys hold only each
  chunk's range and settings, not the threshold, so a changed threshold re-runs only the chunks of the shots
  whose cuts changed.
"""

from __future__ import annotations

import logging
import pathlib
from typing import Optional

import torch

from ..kernels import shot_cuts, video_io
from ..kernels.errors import ParameterError
from ..nodes.errors import InputError

log = logging.getLogger("zsvr")

SCAN_SIDE = 64
"""Longer side (pixels) of the frames the scan decodes; the signatures need no more (an 8x8 thumbnail and
colour histograms)."""
SCAN_VERSION = 1
"""Part of the manifest's record: bumped when a scan would find other cuts at the same threshold."""


def check_threshold(threshold) -> None:
    """Raise ParameterError naming ``threshold`` unless it is a number in (0, 1] (``shot_cuts``' own check)."""
    shot_cuts.cuts_from_signatures(torch.zeros(0, shot_cuts.SIGNATURE_SIZE), threshold)


def scan_cuts(video: pathlib.Path, threshold: float, frames: int) -> tuple[list[int], int]:
    """The frames of ``video`` where a new shot starts, and the number of frames the scan decoded.

    ``frames`` is the clip's frame count from its packets (``video_io.probe_clip``): cuts at or past it are dropped
    (a clip whose packets and decoder disagree). Raises InputError naming ``video`` when decoding fails.
    """
    signatures = []
    try:
        for small in video_io.iter_thumbnails(str(video), SCAN_SIDE):
            signatures.append(shot_cuts.frame_signature(small))
        cuts = shot_cuts.cuts_from_signatures(signatures, threshold) if len(signatures) > 1 else []
    except ParameterError as exc:
        raise InputError("video", f"scanning for shot cuts: {exc.problem}",
                         f"{exc.fix}, or run with --no-scene-cuts") from None
    return [c for c in cuts if c < frames], len(signatures)


def clip_cuts(video: pathlib.Path, frames: int, digest: str, record, options, warnings: list) -> list[int]:
    """The cuts a chunked run of ``video`` plans by: ``[]`` with cuts off, the manifest ``record``'s when it holds
    this source's at this threshold, else a fresh :func:`scan_cuts` (a note goes to ``warnings`` when the decoder
    and the packets disagree on the frame count)."""
    if not options.scene_cuts:
        return []
    threshold = float(options.scene_threshold)
    known = _recorded(record, digest, threshold, frames)
    if known is not None:
        return known
    log.info("ZSVR runner: %s: scanning %d frames for shot cuts", video.name, frames)
    cuts, decoded = scan_cuts(video, threshold, frames)
    if decoded != frames:
        warnings.append(f"the shot scan decoded {decoded} frames where the packets say {frames}: cuts found in the "
                        "first frames only")
    return cuts


def _recorded(record, digest: str, threshold: float, frames: int) -> Optional[list[int]]:
    shots = record.data.get("shots")
    source = record.data.get("source")
    if not isinstance(shots, dict) or not isinstance(source, dict) or source.get("sha256") != digest:
        return None
    if shots.get("scan") != SCAN_VERSION or shots.get("threshold") != threshold:
        return None
    cuts = shots.get("cuts")
    try:
        return shot_cuts.check_cuts(cuts, frames)
    except ParameterError:
        return None


def record_shots(record, options, cuts: list[int], frames: int) -> None:
    """Write the clip's shots into its manifest ``record`` (saved with the plan)."""
    if not options.scene_cuts:
        record.data["shots"] = {"scene_cuts": False, "count": 1, "cuts": []}
        return
    record.data["shots"] = {"scene_cuts": True, "threshold": float(options.scene_threshold), "scan": SCAN_VERSION,
                            "count": len(cuts) + 1, "cuts": list(cuts),
                            "bounds": [list(b) for b in shot_cuts.shot_bounds(cuts, frames)]}


def describe(cuts: list[int], plan, threshold: float) -> list[str]:
    """Notes for the clip's summary: how many shots (when more than one) and the short shots run padded."""
    if not cuts:
        return []
    shown = ", ".join(str(c) for c in cuts[:12]) + (f", ... ({len(cuts)} cuts)" if len(cuts) > 12 else "")
    notes = [f"{len(cuts) + 1} shots (new shot at frame {shown}; --scene-threshold {threshold:g}): chunks "
             "planned per shot, none crosses a cut"]
    padded = [c for c in plan if c.padded]
    if padded:
        parts = ", ".join(f"frames {c.start}-{c.end - 1} on {c.run_frames}" for c in padded[:6])
        notes.append(f"{len(padded)} shot{'s' if len(padded) > 1 else ''} shorter than a chunk's frame rule run "
                     f"padded (the last frame repeated, the extra dropped): {parts}")
    return notes
