"""A long unattended run survives being killed (issue 25 item 6): SIGKILL at seeded random points, rerun, same result.

``run_workflow.py`` runs as a subprocess, chunked (``--chunk-frames 5 --overlap 1``: eight chunks per 33-frame
clip), on two clips through the pass-through workflow (Load Video -> Create Video -> Save Video, no model, so the
test is about the runner's bookkeeping and stays fast). It is killed with SIGKILL five times, each at a seeded random
delay (0-0.1 s) after its first restored chunk, and rerun each time; then it is run to the end. Asserted: after every kill no
file with a final name (``<stem>.mp4``) is partial (it decodes to the uninterrupted run's frames, or is absent);
the final outputs decode to exactly the frames of an uninterrupted run in another folder (chunk files are
lossless and the stitch is deterministic); no chunk was restored more than twice over all the runs (counted from
the runner's per-chunk ``restored in`` lines); the last rerun after completion runs nothing.
"""

from __future__ import annotations

import collections
import os
import random
import re
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

import long_clips
from host_harness import PACK_DIR, REALRAIN_DIR, comfyui_or_skip
from test_host_long_clips import passthrough

pytestmark = pytest.mark.skipif(not REALRAIN_DIR.is_dir(), reason="shared/data/realrain not found")

RESTORED = re.compile(r"clip \d+/\d+ (\S+): chunk (\d+)/\d+, frames \S+ restored in")


def _cmd(comfy_dir, workflow, clips, out):
    return [sys.executable, str(PACK_DIR / "run_workflow.py"), str(workflow), "--input", str(clips),
            "--output", str(out), "--comfyui", str(comfy_dir), "--cpu", "--disable-api-nodes",
            "--disable-all-custom-nodes", "--chunk-frames", "5", "--overlap", "1", "--keep-chunks"]


def _env():
    return {k: v for k, v in os.environ.items() if k != "COMFYUI_PATH"}


def _run_killed(cmd, delay, cwd):
    """Run ``cmd``; SIGKILL it ``delay`` s after its first restored chunk (unless it ended): (stderr, killed)."""
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, cwd=cwd, env=_env())
    lines, started = [], threading.Event()

    def read():
        for line in proc.stderr:
            lines.append(line)
            if RESTORED.search(line):  # a chunk was just restored: the run is under way
                started.set()
        started.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    started.wait(300)
    time.sleep(delay)
    if proc.poll() is None:
        proc.send_signal(signal.SIGKILL)
    proc.wait(60)
    reader.join(10)
    return "".join(lines), proc.returncode == -signal.SIGKILL


def _frames(path):
    return long_clips.decode_frames(path)


def _matches(path, expected) -> bool:
    """Every frame, within the encoder's noise of ``expected`` (see the module docstring)."""
    return long_clips.same_up_to_the_encoder(_frames(path), expected)


def _chunks(folder, name):
    return {p.name: _frames(p) for p in sorted((folder / f"{name}.zsvr-chunks").glob("chunk_*.mkv"))}


def test_killed_five_times_the_rerun_gives_the_uninterrupted_result(tmp_path):
    comfy_dir = comfyui_or_skip()
    import json

    frames = long_clips.realrain_frames(33, 64, 48)
    clips = tmp_path / "clips"
    clips.mkdir()
    for name in ("a", "b"):
        long_clips.write_clip(clips / f"{name}.mp4", 33, width=64, height=48, frames=frames[::-1] if name == "b"
                              else frames)
    workflow = tmp_path / "pass.json"
    workflow.write_text(json.dumps(passthrough()))

    ref = tmp_path / "ref"
    proc = subprocess.run(_cmd(comfy_dir, workflow, clips, ref), capture_output=True, text=True, cwd=tmp_path,
                          env=_env(), timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    expected = {n: _frames(ref / f"{n}.mp4") for n in ("a", "b")}
    assert all(len(f) == 33 for f in expected.values())

    out = tmp_path / "out"
    rng = random.Random(25)
    restored = collections.Counter()
    killed = []
    for _ in range(5):
        log, was_killed = _run_killed(_cmd(comfy_dir, workflow, clips, out), rng.uniform(0.0, 0.1), tmp_path)
        killed.append(was_killed)
        restored.update(RESTORED.findall(log))
        assert "Traceback" not in log
        for n in ("a", "b"):  # a final name is only ever a finished output
            final = out / f"{n}.mp4"
            if final.exists():
                assert _matches(final, expected[n]), f"{final.name} is partial or wrong after a kill"
    print("killed mid-run:", killed, "chunks restored before the last run:", dict(restored))
    assert sum(killed) >= 4, f"the kills missed the runs: {killed}"
    proc = subprocess.run(_cmd(comfy_dir, workflow, clips, out), capture_output=True, text=True, cwd=tmp_path,
                          env=_env(), timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    restored.update(RESTORED.findall(proc.stderr))
    for n in ("a", "b"):
        assert _matches(out / f"{n}.mp4", expected[n]), n
        mine, theirs = _chunks(out, n), _chunks(ref, n)
        assert sorted(mine) == sorted(theirs) and len(mine) == 8, (sorted(mine), sorted(theirs))
        for name in mine:
            assert np.array_equal(mine[name], theirs[name]), f"{n}: {name} differs from the uninterrupted run's"
    assert set(restored) <= {(f"{n}.mp4", str(c)) for n in "ab" for c in range(1, 9)}
    assert max(restored.values()) <= 2, restored
    again = subprocess.run(_cmd(comfy_dir, workflow, clips, out), capture_output=True, text=True, cwd=tmp_path,
                           env=_env(), timeout=300)
    assert again.returncode == 0 and not RESTORED.findall(again.stderr), again.stderr
    assert again.stdout.count("skipped (done)") == 2, again.stdout
    assert sorted(p.name for p in out.iterdir()) == ["a.mp4", "a.zsvr-chunks", "a.zsvr.json", "b.mp4",
                                                     "b.zsvr-chunks", "b.zsvr.json"]
