"""The per-clip manifest that makes chunked runs resumable: which chunks are done, their files, their settings key.

One small JSON file beside the output (``<stem>.zsvr.json``)::

    {"version": 1, "source": {"name", "sha256", "frames", "rate"},
     "plan": {"chunk_frames", "overlap", "frame_rule"},
     "shots": {"scene_cuts", "threshold", "scan", "count", "cuts", "bounds"},
     "chunks": {"<key>": {"index", "start", "frames", "file", "done", "seconds"}},
     "output": {"key", "files", "frames"} or null}

``output`` is the clip's finished output: the chunked run's stitched video, or a whole-clip run's saved files
(``headless/whole_clips.py``); manifests written before it was a list name one ``file``.

``shots`` is what the shot scan found (``headless/shots.py``): the frames where a new shot starts (``cuts``), each
shot's ``[start, end)`` (``bounds``), at which ``threshold``; ``{"scene_cuts": false, ...}`` with
``--no-scene-cuts``. A resumed run at the same threshold reuses it instead of scanning the clip again.

A chunk's key (:func:`settings_key`) hashes everything that decides its
frames: the prompt the runner sends for it (every node's settings, the
loader's ``start_frame`` / ``frame_cap``, the colour match), the source file's
SHA-256 and the chunk file format. A chunk is skipped when an entry with its
key is done and its file exists; change any setting and its key, hence the
chunk, changes. The output's key hashes the chunk keys and the stitching
settings: a clip whose output exists under the same key is skipped whole.
Model files are named, not hashed: replacing a model file under the same
name is not noticed (delete the manifest to force a re-run).

The file is rewritten after every chunk through a temporary file and
``os.replace``, so an interrupted run leaves the previous manifest or the new
one, never a torn one; an unreadable manifest counts as empty (everything re-runs).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import pathlib
from typing import Optional

from ..kernels import confined_paths
from ..kernels.errors import ParameterError

log = logging.getLogger("zsvr")

MANIFEST_VERSION = 1


def settings_key(value) -> str:
    """SHA-256 (hex) of ``value``'s canonical JSON (sorted keys, no whitespace)."""
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def file_digest(path: os.PathLike, block: int = 1 << 20) -> str:
    """SHA-256 (hex) of a file's bytes, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while data := f.read(block):
            h.update(data)
    return h.hexdigest()


class Manifest:
    """A clip's manifest, loaded from ``path`` (or empty) and saved atomically."""

    def __init__(self, path: os.PathLike, data: Optional[dict] = None):
        self.path = pathlib.Path(path)
        self.data = data if data is not None else {"version": MANIFEST_VERSION, "chunks": {}, "output": None}

    @classmethod
    def load(cls, path: os.PathLike) -> "Manifest":
        path = pathlib.Path(path)
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            return cls(path)
        except (OSError, ValueError) as exc:
            log.warning("ZSVR runner: manifest %s unreadable (%s); starting the clip afresh", path, exc)
            return cls(path)
        if (not isinstance(data, dict) or data.get("version") != MANIFEST_VERSION
                or not isinstance(data.get("chunks"), dict)):
            return cls(path)
        return cls(path, data)

    def save(self) -> None:
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.write_text(json.dumps(self.data, indent=1, sort_keys=True) + "\n")
        os.replace(tmp, self.path)

    # -- chunks ---------------------------------------------------------------
    def done_file(self, key: str) -> Optional[pathlib.Path]:
        """The finished chunk file for ``key``, or None (not done, or its file is gone)."""
        entry = self.data["chunks"].get(key)
        if not isinstance(entry, dict) or not entry.get("done") or not entry.get("file"):
            return None
        return self._own_file(entry["file"])

    def mark_done(self, key: str, index: int, start: int, frames: int, file: pathlib.Path, seconds: float) -> None:
        self.data["chunks"][key] = {"index": index, "start": start, "frames": frames, "done": True,
                                    "file": os.path.relpath(file, self.path.parent), "seconds": round(seconds, 2)}
        self.save()

    def keep_only(self, keys) -> None:
        """Forget chunk entries whose key is not in ``keys`` (settings changed since)."""
        keys = set(keys)
        self.data["chunks"] = {k: v for k, v in self.data["chunks"].items() if k in keys}

    # -- output ---------------------------------------------------------------
    def output_done(self, key: str) -> Optional[pathlib.Path]:
        """The finished (first) output file for ``key``, or None."""
        files = self.output_files(key)
        return files[0] if files else None

    def output_files(self, key: str) -> Optional[list[pathlib.Path]]:
        """Every finished output file recorded for ``key``, or None (another key, or a file is gone)."""
        entry = self.data.get("output")
        if not isinstance(entry, dict) or entry.get("key") != key:
            return None
        names = entry.get("files") if isinstance(entry.get("files"), list) else [entry.get("file")]
        files = [self._own_file(name) for name in names]
        return files if files and all(f is not None for f in files) else None

    def _own_file(self, name) -> Optional[pathlib.Path]:
        """The file a manifest entry names, if it exists inside the run's folder; a name that leads out (an edited
        or foreign manifest) is refused with a warning, and the work is done again."""
        try:
            confined_paths.check_relative_name(name, "file")
        except ParameterError as exc:
            log.warning("ZSVR runner: manifest %s: %s; not reused", self.path, exc)
            return None
        file = self.path.parent / name
        if not confined_paths.inside(file, [self.path.parent]):
            log.warning("ZSVR runner: manifest %s names %r, which leads out of %s; not reused", self.path, name,
                        self.path.parent)
            return None
        return file if file.is_file() else None

    def mark_output(self, key: str, files, frames: Optional[int]) -> None:
        """Record the finished output ``files`` (one path or a list) under ``key``, and save."""
        files = [files] if isinstance(files, (str, os.PathLike)) else list(files)
        self.data["output"] = {"key": key, "files": [os.path.relpath(f, self.path.parent) for f in files],
                               "frames": frames}
        self.save()


def check_stems(videos) -> None:
    """Refuse clips that share a stem (``a.mp4`` and ``a.mov``): outputs and manifests are named after it.

    Raises ``nodes.errors.InputError`` naming ``--input``."""
    from ..nodes.errors import InputError

    stems = [pathlib.Path(v).stem for v in videos]
    twins = sorted({s for s in stems if stems.count(s) > 1})
    if twins:
        raise InputError("--input", f"has several clips named {', '.join(twins)} (different extensions)",
                         "rename them: outputs are named after the clip's stem")
