"""The unit model of a ``--servers`` run, and which execution errors are the server's fault.

A :class:`Unit` is one API prompt to run on some server, with the local files it needs uploaded
(:class:`Upload`) and the folder its outputs go to; :class:`Attempt` is one try of it on one server and
:class:`UnitResult` what became of it. :func:`clip_units` makes one unit per whole clip;
:func:`classify_error` tells an execution error the machine caused (out of memory, a device error: retried
elsewhere) from one the input caused (reported once), and :func:`error_line` words it. Plain data and pure
functions: no network, no scheduling (``headless/fleet.py`` runs the units; ``headless/servers.py`` describes
the whole ``--servers`` mode).
"""

from __future__ import annotations

import copy
import dataclasses
import pathlib
from typing import Callable, Iterable, Optional

SAVE_PREFIX_INPUTS = ("filename_prefix",)
LOADER_VIDEO_INPUT = ("ZSVR_LoadVideo", "video")

SERVER_ERROR_TYPES = ("OutOfMemoryError", "MemoryError", "AcceleratorError")
SERVER_ERROR_TEXT = ("out of memory", "cuda error", "cublas_status", "cudnn_status", "hip error",
                     "nccl error", "cuda driver", "device-side", "allocation on device")
"""Execution errors that are the machine's, not the input's (matched case-insensitively)."""


@dataclasses.dataclass
class Upload:
    """A local file a unit needs on the server, and the ``(node id, input)`` pairs that receive its server name."""

    path: pathlib.Path
    targets: list


@dataclasses.dataclass
class Unit:
    """One API prompt to run on some server (see ``headless/servers.py``'s module docstring)."""

    key: str
    """Unique in the run, e.g. ``rain.mp4`` or ``rain.mp4 chunk 2/3``."""
    prompt: dict
    uploads: list
    output_dir: pathlib.Path
    group: str = ""
    """The clip this unit belongs to (units of one group share its summary row)."""
    collect: Optional[Callable[["UnitResult"], None]] = None
    """Called (in a worker thread) once the unit's outputs are fetched; raising fails the unit."""


@dataclasses.dataclass
class Attempt:
    """One try of a unit on one server."""

    server: str
    prompt_id: str
    outcome: str = "running"
    """``ok``, ``server fault``, ``timeout``, ``input error`` or ``cancelled``."""
    reason: str = ""
    compute_s: float = 0.0
    """``execution_start`` to the end, seconds."""
    upload_s: float = 0.0
    queue_s: float = 0.0
    fetch_s: float = 0.0


@dataclasses.dataclass
class UnitResult:
    """What became of a unit: its outcome, the server that ran it, the fetched files and every attempt."""

    unit: Unit
    ok: bool = False
    error: Optional[str] = None
    input_error: bool = False
    server: Optional[str] = None
    files: list = dataclasses.field(default_factory=list)
    outputs: dict = dataclasses.field(default_factory=dict)
    """The server's history outputs (node id -> ui dict) of the attempt that succeeded."""
    attempts: list = dataclasses.field(default_factory=list)

    @property
    def final(self) -> Optional[Attempt]:
        return self.attempts[-1] if self.attempts else None

    @property
    def rerun_after(self) -> list:
        """The attempts that failed because of their server (the unit was re-queued after each)."""
        return [a for a in self.attempts if a.outcome in ("server fault", "timeout")]

    @property
    def overhead_s(self) -> float:
        """Upload + queue + fetch seconds of the last attempt (the runner's own cost for the unit)."""
        a = self.final
        return 0.0 if a is None else a.upload_s + a.queue_s + a.fetch_s


def clip_units(prompt: dict, videos: Iterable[pathlib.Path], output_dir: pathlib.Path) -> list[Unit]:
    """One unit per whole clip: every ``ZSVR_LoadVideo`` reads the clip, every save prefix is ``<stem>/<stem>``.

    The same preparation as the in-process ``run_workflow.run_batch``, so both modes write the same names.
    """
    loaders = [nid for nid, node in prompt.items() if node.get("class_type") == LOADER_VIDEO_INPUT[0]]
    if not loaders:
        raise ValueError("the workflow has no ZSVR_LoadVideo node to feed the videos into; add a Load Video "
                         "(ZSVR) node and connect its images where the workflow reads the video")
    units = []
    for video in videos:
        video = pathlib.Path(video)
        p = copy.deepcopy(prompt)
        for node in p.values():
            for key in SAVE_PREFIX_INPUTS:
                if isinstance(node.get("inputs", {}).get(key), str):
                    node["inputs"][key] = f"{video.stem}/{video.stem}"
        units.append(Unit(video.name, p, [Upload(video, [(nid, LOADER_VIDEO_INPUT[1]) for nid in loaders])],
                          pathlib.Path(output_dir), group=video.name))
    return units


def classify_error(data: dict) -> str:
    """``"server"`` for an execution error the machine caused (memory, device), else ``"input"``."""
    kind = str(data.get("exception_type") or "")
    message = str(data.get("exception_message") or "")
    if message.lstrip().startswith("ZSVR input"):
        return "input"
    if kind.rsplit(".", 1)[-1] in SERVER_ERROR_TYPES:
        return "server"
    low = message.lower()
    return "server" if any(t in low for t in SERVER_ERROR_TEXT) else "input"


def error_line(data: dict) -> str:
    """``node 7 (VAEDecode): message`` from an ``execution_error`` event."""
    message = str(data.get("exception_message") or "").strip().splitlines()
    first = message[0] if message else data.get("exception_type")
    return f"node {data.get('node_id')} ({data.get('node_type')}): {first}"
