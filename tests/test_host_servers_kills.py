"""A long unattended ``--servers`` run survives its faults (issue 25 item 6, over two real ComfyUI servers).

The in-process half is ``tests/test_host_runner_kills.py``; here the chunks run on two ComfyUI servers
(``ComfyServer`` from ``tests/test_servers.py``: ``main.py`` on 127.0.0.1 with the pack, started and stopped by
the module's fixture). Two 33-frame 64x48 clips go through the pass-through workflow (Load Video -> Create Video
-> Save Video, no model: the test is about the runner's bookkeeping and stays fast) in chunks of 5 overlapping by
1, the chunk files kept. The reference is the same run without a fault (it also warms both servers up: a cold
server's first chunk takes a second, a warm one's a tenth).

* A server killed and restarted: server b is SIGKILLed (its whole process group) when it starts a chunk after
  finishing one (while at least ``LEFT_AT_KILL`` chunks are not done), and started again on the same port and base folder while the run goes on. Server a is paused
  (SIGSTOP) from the kill until b has finished a chunk after its restart (at most ``PAUSE_LIMIT_S``), so that the
  run cannot end before b is back (a restart takes seconds, the rest of the run on a alone less).
* The runner killed: ``run_workflow.py --servers`` as a subprocess is SIGKILLed after its third finished chunk and
  run again.

Asserted each time: exit status 0; every chunk file (FFV1, lossless) decodes bit-identically to the reference's,
the stitched frames too, and the final MP4s have the source's 33 frames within H.264's run-to-run noise of the
reference's (``ENCODER_NOISE``); the output folder holds exactly the reference's files (no ``.part``, no
runner folder, nothing else). For the server kill: b is taken back after its restart (a chunk's final attempt
runs on it), no chunk is tried more than twice and the chunks b held are re-run. For the runner kill: every file
with a final name it left is whole, and the rerun sends exactly the chunks its manifests do not record as done,
each once.
"""

from __future__ import annotations

import asyncio
import collections
import io
import json
import os
import pathlib
import re
import signal
import subprocess
import sys
import threading

import numpy as np
import pytest

pytest.importorskip("aiohttp")

import long_clips  # noqa: E402
from host_harness import PACK_DIR, REALRAIN_DIR, comfyui_or_skip  # noqa: E402
from test_host_long_clips import passthrough  # noqa: E402
from test_servers import ComfyServer  # noqa: E402
from zsvr.headless import servers, stitch  # noqa: E402
from zsvr.headless.clip_job import ChunkOptions  # noqa: E402

pytestmark = pytest.mark.skipif(not REALRAIN_DIR.is_dir(), reason="shared/data/realrain not found")

CHUNKS = ChunkOptions(chunk_frames=5, overlap=1, keep_chunks=True)
FRAMES = 33
STEMS = ("one", "two")
PAUSE_LIMIT_S = 25.0
"""Longest server a stays paused (under the websocket's 20 s ping and 10 s answer window, so a is not dropped)."""
LEFT_AT_KILL = 8
"""Chunks not done yet when b is killed, so that some are still waiting for a server when b is back."""
SENT = re.compile(r"^(\S+ chunk \d+/\d+) -> 127\.0\.0\.1:\d+$", re.M)
FINISHED = re.compile(r"^(\S+ chunk \d+/\d+): ok on ", re.M)


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    """Servers a and b with the pack (no models: the workflow needs none); stopped afterwards."""
    comfy_dir = comfyui_or_skip()
    root = tmp_path_factory.mktemp("kill_servers")
    started = []
    try:
        for name in ("a", "b"):
            started.append(ComfyServer(comfy_dir, root / name, None, True))
        for s in started:
            s.wait_ready()
        yield started
    finally:
        for s in started:
            s.kill(signal.SIGCONT)  # a test that failed may have left it paused
            s.stop()


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    folder = tmp_path_factory.mktemp("kill_clips")
    frames = long_clips.realrain_frames(FRAMES, 64, 48)
    return [long_clips.write_clip(folder / f"{stem}.mp4", FRAMES, width=64, height=48,
                                  frames=frames[::-1] if stem == "two" else frames) for stem in STEMS]


@pytest.fixture(scope="module")
def reference(pair, clips, tmp_path_factory):
    """The chunked run on both servers, no fault: (output folder, sorted unit keys of every chunk)."""
    out = tmp_path_factory.mktemp("kill_reference")
    lines = []
    run = asyncio.run(servers.run_remote_async(passthrough(), clips, out, [], [s.url for s in pair], say=lines.append,
                                               stream=io.StringIO(), chunks=CHUNKS))
    assert run.code == 0, lines[-1]
    assert all(len(job.plan) >= 8 for job in run.clips), [len(job.plan) for job in run.clips]
    return out, sorted(r.unit.key for r in run.results)


def _tree(folder: pathlib.Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


def _chunk(path: pathlib.Path) -> np.ndarray:
    return np.stack(list(stitch.iter_chunk(path)))


def _assert_like_reference(out: pathlib.Path, ref: pathlib.Path) -> None:
    """``out`` holds exactly ``ref``'s files; chunks bit-identical, the MP4s within the encoder's noise."""
    assert _tree(out) == _tree(ref)
    for stem in STEMS:
        ref_chunks = sorted((ref / f"{stem}.zsvr-chunks").glob("chunk_*.mkv"))
        for theirs in ref_chunks:
            assert np.array_equal(_chunk(out / f"{stem}.zsvr-chunks" / theirs.name), _chunk(theirs)), theirs.name
        mine = long_clips.decode_frames(out / f"{stem}.mp4")
        assert len(mine) == FRAMES
        assert long_clips.same_up_to_the_encoder(mine, long_clips.decode_frames(ref / f"{stem}.mp4")), stem


def test_a_server_killed_and_restarted_mid_run_is_taken_back_and_the_run_is_whole(pair, clips, reference, tmp_path):
    a, b = pair
    ref, keys = reference
    events = []
    state = {"done": 0, "b_done": 0, "killed": None, "back": False}
    resumed = threading.Event()
    timer = threading.Timer(PAUSE_LIMIT_S, lambda: resume_a())

    def resume_a():
        if not resumed.is_set():
            resumed.set()
            a.kill(signal.SIGCONT)

    def restart_b():
        b.restart()
        b.wait_ready()

    def listener(event, info):
        unit = info.get("unit")
        events.append((event, info.get("server"), unit.key if unit is not None else None))
        state["done"] += event == "done"
        if info.get("server") != b.url:
            return
        if event == "done" and state["killed"] is None:
            state["b_done"] += 1
        elif (event == "started" and state["b_done"] and state["killed"] is None
              and len(keys) - state["done"] >= LEFT_AT_KILL):
            state["killed"] = unit.key  # b has finished a chunk and is running this one
            b.kill()
            a.kill(signal.SIGSTOP)
            timer.start()
            threading.Thread(target=restart_b, daemon=True).start()
        elif event == "server_up":
            state["back"] = True
        elif event == "done" and state["back"]:
            resume_a()

    lines = []
    try:
        run = asyncio.run(servers.run_remote_async(passthrough(), clips, tmp_path / "out", [], [a.url, b.url],
                                                   say=lines.append, stream=io.StringIO(), chunks=CHUNKS,
                                                   listener=listener))
    finally:
        timer.cancel()
        resume_a()
    table = lines[-1]
    print(table)
    assert state["killed"] is not None, table
    assert run.code == 0 and all(job.error is None for job in run.clips), table
    assert table.splitlines()[-1] == "clips: 2 ok, 0 failed", table
    by_key = {r.unit.key: r for r in run.results}
    assert sorted(by_key) == keys and all(r.ok for r in run.results)
    # the chunks b held when it was killed ran again elsewhere; nothing was tried more than twice
    faulted = [r for r in run.results if any(x.server == b.url and x.outcome == "server fault" for x in r.attempts)]
    assert faulted and state["killed"] in [r.unit.key for r in faulted], table
    assert all([x.outcome for x in r.attempts] == ["server fault", "ok"] for r in faulted), table
    assert max(len(r.attempts) for r in run.results) <= 2, table
    # b came back and was used again: a chunk finished on it after its return, its final attempt on b
    up = events.index(("server_up", b.url, None))
    after = [key for event, server, key in events[up:] if event == "done" and server == b.url]
    assert after and all(by_key[k].attempts[-1].server == b.url for k in after), events
    out = tmp_path / "out"
    _assert_like_reference(out, ref)
    for job in run.clips:  # the stitched frames, before the encoder, are the reference's too
        theirs = sorted((ref / job.chunk_dir.name).glob("chunk_*.mkv"))
        assert np.array_equal(np.stack(list(stitch.iter_stitched(job.plan, [job.files[c.index] for c in job.plan]))),
                              np.stack(list(stitch.iter_stitched(job.plan, theirs))))


def _done_in_manifests(out: pathlib.Path, keys: list[str]) -> set[str]:
    """The unit keys of the chunks the clips' manifests in ``out`` record as done."""
    done = set()
    for stem in STEMS:
        path = out / f"{stem}.zsvr.json"
        total = sum(k.startswith(f"{stem}.mp4 ") for k in keys)
        if path.exists():
            done |= {f"{stem}.mp4 chunk {e['index'] + 1}/{total}"
                     for e in json.loads(path.read_text())["chunks"].values() if e.get("done")}
    return done


def test_the_runner_killed_mid_run_resumes_from_its_manifests(pair, clips, reference, tmp_path):
    a, b = pair
    ref, keys = reference
    workflow = tmp_path / "pass.json"
    workflow.write_text(json.dumps(passthrough()))
    out = tmp_path / "out"
    cmd = [sys.executable, str(PACK_DIR / "run_workflow.py"), str(workflow), "--input", str(clips[0].parent),
           "--output", str(out), "--servers", f"{a.url},{b.url}", "--comfyui", str(tmp_path / "no-comfyui"),
           "--chunk-frames", "5", "--overlap", "1", "--keep-chunks"]
    env = {k: v for k, v in os.environ.items() if k != "COMFYUI_PATH"}
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)
    log = []
    try:
        for line in proc.stderr:
            log.append(line)
            if len(FINISHED.findall("".join(log))) >= 3:  # three chunks are in, the others in flight or waiting
                proc.send_signal(signal.SIGKILL)
                break
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(60)
        proc.stderr.close()
    first = "".join(log)
    assert proc.returncode == -signal.SIGKILL, first
    # The servers still run the prompts the killed runner had queued there (nobody is left to delete them):
    # they write into the servers' own output/zsvr_runner/ folders, never into --output, and the rerun's
    # prompts are new ones; so that is harmless and the rerun below must still be exact.
    done = _done_in_manifests(out, keys)
    assert set(FINISHED.findall(first)) <= done and len(done) < len(keys), (sorted(done), first)
    for stem in STEMS:  # what has a final name is whole
        for path in (out / f"{stem}.zsvr-chunks").glob("chunk_*.mkv"):
            assert np.array_equal(_chunk(path), _chunk(ref / path.parent.name / path.name)), path.name
        assert not (out / f"{stem}.mp4").exists()

    again = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "Traceback" not in first + again.stderr
    sent = collections.Counter(SENT.findall(again.stderr))
    assert max(sent.values()) == 1, sent  # no faults: each chunk once
    assert not set(sent) & done, sorted(set(sent) & done)  # what was done before is not sent again
    assert sorted(set(sent) | done) == keys, again.stderr
    print(f"the killed run left {len(done)} of {len(keys)} chunks done; the rerun sent {len(sent)}")
    _assert_like_reference(out, ref)
