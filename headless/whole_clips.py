"""Whole-clip runs (no ``--chunk-frames``), either executor: one record per clip, final names only when complete,
skipped on rerun (issue 25 item 3; docs/long-clips.md "Reruns").

A whole-clip run sends each clip through the workflow as one prompt. Its outputs are what the workflow's save
nodes write; this module decides where they end up and remembers that they are done, the same way a chunked run
does (``headless/clip_job.py``), so every mode leaves the same layout in ``--output``:

* ``<stem><ext>``: the clip's output when the workflow saves one file (a video, ``rain.mp4`` for ``rain.mov``);
* ``<stem>/``: the clip's outputs when it saves several (an image sequence, or several save nodes), each under the
  name its save node gave it (``rain/rain_00001_.png`` ...);
* ``<stem>.zsvr.json``: the clip's manifest (``headless/manifest.py``), shared with chunked runs.

**Final names only when complete.** The save nodes write under a passing folder (:func:`passing_folder`:
``zsvr_runner/<pid>-<hex>/``, inside ComfyUI's output folder in-process, fetched into the local output folder by
``--servers``); only once the prompt has finished are the files moved to their final names (:meth:`WholeClip.place`:
a rename on one file system, else a copy to a temporary name and a rename), and only then recorded. A run stopped
or killed before leaves the previous output (or none) and a passing folder, which the next run removes
(:func:`sweep_stale`: folders of runner processes no longer alive).

**Reruns.** The clip's key (:func:`whole_key`) hashes the prompt as this clip runs it (every node's settings, with
the staged clip name and the passing folder left out), the source's SHA-256 and :data:`RUN_VERSION`. A clip whose
manifest records its outputs under the same key, with every file still there, is skipped ("skipped (done)");
``--force`` runs it again. As with chunks, model files are named, not hashed.
"""

from __future__ import annotations

import copy
import dataclasses
import os
import pathlib
import shutil
import uuid
from typing import Iterable, Optional

from ..nodes.errors import InputError
from . import manifest
from .fleet_units import SAVE_PREFIX_INPUTS

RUN_VERSION = 1
"""Bumped when the meaning of a whole-clip key changes (forces re-runs)."""
PASSING_ROOT = "zsvr_runner"
"""The subfolder of an output folder where a run's files wait for their final names."""
LOADER = "ZSVR_LoadVideo"
KEY_VIDEO = "<clip>"
"""What the loaders' ``video`` input reads in the prompt a key is computed from."""


def passing_folder(root: os.PathLike) -> pathlib.Path:
    """A new passing folder ``<root>/zsvr_runner/<pid>-<hex>`` for this process (not created)."""
    return pathlib.Path(root) / PASSING_ROOT / f"{os.getpid()}-{uuid.uuid4().hex[:12]}"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def sweep_stale(root: os.PathLike) -> int:
    """Remove the passing folders under ``<root>/zsvr_runner`` whose runner process has ended (a killed run's
    leftovers); returns how many. Folders of live runners, and anything not named like a passing folder, stay."""
    base = pathlib.Path(root) / PASSING_ROOT
    removed = 0
    try:
        entries = list(base.iterdir())
    except OSError:
        return 0
    for entry in entries:
        pid, _, rest = entry.name.partition("-")
        if not (pid.isdigit() and rest and entry.is_dir() and not entry.is_symlink()):
            continue
        if int(pid) != os.getpid() and not _alive(int(pid)):
            shutil.rmtree(entry, ignore_errors=True)
            removed += 1
    try:
        base.rmdir()  # only when empty
    except OSError:
        pass
    return removed


def drop_passing(folder: pathlib.Path) -> None:
    """Remove a passing folder, and ``zsvr_runner`` with it when nothing else is in there."""
    shutil.rmtree(folder, ignore_errors=True)
    try:
        folder.parent.rmdir()
    except OSError:
        pass


def clip_prompt(prompt: dict, video_name: str, prefix: str) -> dict:
    """A copy of ``prompt`` whose loaders read ``video_name`` and whose save nodes write under ``prefix``."""
    p = copy.deepcopy(prompt)
    for node in p.values():
        inputs = node.get("inputs") or {}
        if node.get("class_type") == LOADER:
            inputs["video"] = video_name
        for key in SAVE_PREFIX_INPUTS:
            if isinstance(inputs.get(key), str):
                inputs[key] = prefix
    return p


def whole_key(prompt: dict, digest: str) -> str:
    """The settings key of a whole-clip run of ``prompt`` on a source with SHA-256 ``digest``."""
    return manifest.settings_key({"prompt": clip_prompt(prompt, KEY_VIDEO, KEY_VIDEO), "source": digest,
                                  "version": RUN_VERSION})


def _move(src: pathlib.Path, dest: pathlib.Path) -> None:
    """``src`` to ``dest`` in one step: a rename, or (across file systems) a copy to a temporary name and a rename."""
    try:
        os.replace(src, dest)
    except OSError:
        tmp = dest.with_name(f".{dest.name}.{uuid.uuid4().hex[:8]}.tmp")
        try:
            shutil.copyfile(src, tmp)
            os.replace(tmp, dest)
        finally:
            tmp.unlink(missing_ok=True)
        src.unlink(missing_ok=True)


@dataclasses.dataclass
class WholeClip:
    """One clip of a whole-clip run: its record, key and, when a previous run finished it, its outputs."""

    video: pathlib.Path
    output_dir: pathlib.Path
    record: manifest.Manifest
    key: str
    done: Optional[list] = None
    """The outputs a previous run recorded under this key (the clip is skipped), else None."""

    @property
    def frames(self) -> Optional[int]:
        entry = self.record.data.get("output")
        frames = entry.get("frames") if isinstance(entry, dict) else None
        return frames if isinstance(frames, int) else None

    def place(self, files: Iterable[os.PathLike], frames: Optional[int] = None) -> list[pathlib.Path]:
        """Move the files the run saved (in its passing folder) to their final names and record them; returns the
        final paths. One file becomes ``<stem><ext>``, several go into ``<stem>/`` under their own names (the
        folder is filled beside it and swapped in whole). Raises RuntimeError when nothing was saved."""
        files = [pathlib.Path(f) for f in files]
        if not files:
            raise RuntimeError("the workflow saved no file for this clip (add a save node, e.g. Save Video)")
        stem = self.video.stem
        self.output_dir.mkdir(parents=True, exist_ok=True)
        if len(files) == 1:
            final = [self.output_dir / f"{stem}{files[0].suffix}"]
            if final[0].is_dir():
                shutil.rmtree(final[0])
            _move(files[0], final[0])
        else:
            folder = self.output_dir / stem
            filling = self.output_dir / f".{stem}.{uuid.uuid4().hex[:8]}.partial"
            filling.mkdir()
            try:
                for f in files:
                    _move(f, filling / f.name)
                old = None
                if folder.exists() or folder.is_symlink():
                    old = self.output_dir / f".{stem}.{uuid.uuid4().hex[:8]}.old"
                    os.replace(folder, old)
                os.replace(filling, folder)
            finally:
                shutil.rmtree(filling, ignore_errors=True)
            if old is not None:
                shutil.rmtree(old, ignore_errors=True) if old.is_dir() and not old.is_symlink() else old.unlink()
            final = [folder / f.name for f in files]
        self.record.mark_output(self.key, final, frames)
        return final


def open_clip(prompt: dict, video: os.PathLike, output_dir: os.PathLike, force: bool = False) -> WholeClip:
    """The clip's record and key; ``done`` is set when a previous run finished it under the same key (and not
    ``force``). Raises InputError when its output would overwrite the source."""
    video, output_dir = pathlib.Path(video), pathlib.Path(output_dir)
    if video.resolve().parent == output_dir.resolve():
        raise InputError("--output", f"is the folder of '{video.name}'; its outputs would be written over or beside "
                         "the sources", "choose another output folder")
    record = manifest.Manifest.load(output_dir / f"{video.stem}.zsvr.json")
    digest = manifest.file_digest(video)
    clip = WholeClip(video, output_dir, record, whole_key(prompt, digest))
    if not force:
        clip.done = record.output_files(clip.key)
    if clip.done is None:
        record.data["source"] = {"name": video.name, "sha256": digest}
    return clip

