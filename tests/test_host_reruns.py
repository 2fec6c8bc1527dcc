"""A rerun never redoes or duplicates finished work, in-process and whole (issue 25 item 3).

``run_workflow.run_batch`` without chunks, on two short clips through the pass-through workflow (Load Video ->
Create Video -> Save Video; no model: the test is about the runner's records). Asserted: the outputs are
``<output>/<clip>.mp4`` beside ``<clip>.zsvr.json`` and nothing else (no ``_00001_`` names, no passing folder
left); a rerun runs nothing (the files are untouched, the rows say "skipped (done)" with the recorded frame
count); a changed ``--set`` or ``force`` runs the clips again and replaces the files under the same names; a
workflow saving an image sequence gets ``<output>/<clip>/``; a stop requested before a clip starts ends the batch.
"""

from __future__ import annotations

import json
import pathlib
import types

import pytest

import long_clips
from host_harness import REALRAIN_DIR
from test_host_long_clips import passthrough

pytestmark = pytest.mark.skipif(not REALRAIN_DIR.is_dir(), reason="shared/data/realrain not found")


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    folder = tmp_path_factory.mktemp("rerun_clips")
    frames = long_clips.realrain_frames(9, 64, 48)
    return [long_clips.write_clip(folder / "a.mp4", 9, width=64, height=48, frames=frames),
            long_clips.write_clip(folder / "b.mp4", 9, width=64, height=48, frames=frames[::-1])]


def _listing(out):
    return sorted(p.name for p in out.iterdir())


def test_a_whole_clip_rerun_skips_finished_clips_and_a_change_or_force_runs_them(host, clips, tmp_path):
    from zsvr import run_workflow

    out = tmp_path / "out"
    prompt = passthrough("any")
    rows = run_workflow.run_batch(host.comfy, prompt, clips, out, progress=False)
    assert [(r["ok"], r["frames"], r["outputs"]) for r in rows] == [
        (True, 9, [str(out / "a.mp4")]), (True, 9, [str(out / "b.mp4")])], rows
    assert _listing(out) == ["a.mp4", "a.zsvr.json", "b.mp4", "b.zsvr.json"]
    assert long_clips.video_info(out / "a.mp4")["frames"] == 9
    stamps = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    comfy_out = host.comfy.folder_paths.get_output_directory()
    assert not (pathlib.Path(comfy_out) / "zsvr_runner").exists()

    again = run_workflow.run_batch(host.comfy, prompt, clips, out, progress=False)
    assert [(r["ok"], r.get("skipped"), r["frames"], r["outputs"]) for r in again] == [
        (True, True, 9, [str(out / "a.mp4")]), (True, True, 9, [str(out / "b.mp4")])], again
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == stamps  # nothing ran, nothing was written
    table = run_workflow.format_table(again)
    assert table.count("skipped (done)") == 2 and table.splitlines()[-1] == "2 ok, 0 failed"

    changed = run_workflow.run_batch(host.comfy, prompt, clips, out, sets=["ZSVR_LoadVideo.frame_cap=5"],
                                     progress=False)
    assert [(r["ok"], r.get("skipped", False), r["frames"]) for r in changed] == [(True, False, 5)] * 2
    assert long_clips.video_info(out / "b.mp4")["frames"] == 5
    forced = run_workflow.run_batch(host.comfy, prompt, clips[:1], out, sets=["ZSVR_LoadVideo.frame_cap=5"],
                                    progress=False, force=True)
    assert [(r["ok"], r.get("skipped", False)) for r in forced] == [(True, False)]
    assert _listing(out) == ["a.mp4", "a.zsvr.json", "b.mp4", "b.zsvr.json"]
    record = json.loads((out / "a.zsvr.json").read_text())
    assert record["output"]["files"] == ["a.mp4"] and record["output"]["frames"] == 5


def test_an_image_sequence_goes_into_the_clips_folder_and_a_stop_ends_the_batch(host, clips, tmp_path):
    from zsvr import run_workflow

    out = tmp_path / "out"
    prompt = passthrough("any")
    del prompt["2"], prompt["3"]
    prompt["3"] = {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "x"}}
    (row,) = run_workflow.run_batch(host.comfy, prompt, clips[:1], out, progress=False)
    assert row["ok"], row["error"]
    assert _listing(out) == ["a", "a.zsvr.json"]
    assert _listing(out / "a") == [f"a_{i:05d}_.png" for i in range(1, 10)]
    assert row["outputs"] == [str(out / "a" / f"a_{i:05d}_.png") for i in range(1, 10)]
    stopped = types.SimpleNamespace(requested=True)
    assert run_workflow.run_batch(host.comfy, prompt, clips, tmp_path / "other", progress=False, stop=stopped) == []
    assert not (tmp_path / "other").exists()
