"""Whole-clip runs keep a record per clip and give outputs their final names only when complete (issue 25 item 3).

``headless/whole_clips.py`` without ComfyUI: the key follows the settings and the source, not the staged name or
the passing folder; one saved file becomes ``<stem><ext>``, several go into ``<stem>/`` (swapped in whole over an
older folder); what is placed is recorded and found again (and not when a file is gone, the key changed, or
``force``); a killed runner's passing folder is swept, a live one's is not.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from zsvr.headless import manifest, whole_clips
from zsvr.nodes.errors import InputError

PROMPT = {
    "1": {"class_type": "ZSVR_LoadVideo", "inputs": {"video": "x.mp4", "frame_cap": 0}},
    "2": {"class_type": "SaveVideo", "inputs": {"video": ["1", 0], "filename_prefix": "video/x"}},
}


def _clip(folder, name="rain.mp4", data=b"source bytes"):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_bytes(data)
    return folder / name


def _saved(folder, names):
    folder.mkdir(parents=True, exist_ok=True)
    for n in names:
        (folder / n).write_text(f"made {n}")
    return [folder / n for n in names]


def test_the_key_follows_settings_and_source_not_the_names_the_run_uses():
    key = whole_clips.whole_key(PROMPT, "d1")
    staged = whole_clips.clip_prompt(PROMPT, "zsvr_batch_rain.mp4", "zsvr_runner/123-abc/rain")
    assert staged["1"]["inputs"]["video"] == "zsvr_batch_rain.mp4"
    assert staged["2"]["inputs"]["filename_prefix"] == "zsvr_runner/123-abc/rain"
    assert PROMPT["2"]["inputs"]["filename_prefix"] == "video/x"  # the template is not changed
    assert whole_clips.whole_key(staged, "d1") == key  # staged name and passing folder are not settings
    changed = json.loads(json.dumps(PROMPT))
    changed["1"]["inputs"]["frame_cap"] = 5
    assert whole_clips.whole_key(changed, "d1") != key
    assert whole_clips.whole_key(PROMPT, "d2") != key


def test_one_saved_file_takes_the_clips_name_and_a_rerun_finds_it(tmp_path):
    video = _clip(tmp_path / "in", "rain.mov")
    out = tmp_path / "out"
    clip = whole_clips.open_clip(PROMPT, video, out)
    assert clip.done is None and not out.exists()  # nothing is written before the clip is done
    out.mkdir()
    (out / "rain.mp4").write_text("an older result")  # replaced, never numbered beside
    (final,) = clip.place(_saved(out / "zsvr_runner" / "1-a", ["rain_00001_.mp4"]), frames=33)
    assert final == out / "rain.mp4" and final.read_text() == "made rain_00001_.mp4"
    record = json.loads((out / "rain.zsvr.json").read_text())
    assert record["output"] == {"key": clip.key, "files": ["rain.mp4"], "frames": 33}
    assert record["source"] == {"name": "rain.mov", "sha256": manifest.file_digest(video)}
    again = whole_clips.open_clip(PROMPT, video, out)
    assert again.done == [final] and again.frames == 33
    assert whole_clips.open_clip(PROMPT, video, out, force=True).done is None
    other = json.loads(json.dumps(PROMPT))
    other["1"]["inputs"]["frame_cap"] = 9
    assert whole_clips.open_clip(other, video, out).done is None
    final.unlink()
    assert whole_clips.open_clip(PROMPT, video, out).done is None  # a file gone: run again
    video.write_bytes(b"another source")
    (out / "rain.mp4").write_text("x")
    assert whole_clips.open_clip(PROMPT, video, out).done is None  # the source changed


def test_several_saved_files_go_into_a_folder_swapped_in_whole(tmp_path):
    video = _clip(tmp_path / "in")
    out = tmp_path / "out"
    (out / "rain").mkdir(parents=True)
    (out / "rain" / "stale_00009_.png").write_text("from an older run")
    clip = whole_clips.open_clip(PROMPT, video, out)
    finals = clip.place(_saved(out / "zsvr_runner" / "1-a", ["rain_00001_.png", "rain_00002_.png"]), frames=2)
    assert finals == [out / "rain" / "rain_00001_.png", out / "rain" / "rain_00002_.png"]
    assert sorted(p.name for p in (out / "rain").iterdir()) == ["rain_00001_.png", "rain_00002_.png"]
    assert sorted(p.name for p in out.iterdir()) == ["rain", "rain.zsvr.json", "zsvr_runner"]  # no .partial/.old
    assert whole_clips.open_clip(PROMPT, video, out).done == finals
    with pytest.raises(RuntimeError, match="saved no file"):
        clip.place([])


def test_a_clip_record_keeps_the_chunked_runs_entries(tmp_path):
    video = _clip(tmp_path / "in")
    out = tmp_path / "out"
    out.mkdir()
    record = manifest.Manifest(out / "rain.zsvr.json")
    record.data["chunks"] = {"k": {"index": 0, "done": True, "file": "rain.zsvr-chunks/c.mkv"}}
    record.save()
    clip = whole_clips.open_clip(PROMPT, video, out)
    clip.place(_saved(out / "p", ["a.mp4"]), frames=None)
    assert json.loads((out / "rain.zsvr.json").read_text())["chunks"] == record.data["chunks"]


def test_the_source_folder_is_refused_as_output_and_twin_stems_as_input(tmp_path):
    video = _clip(tmp_path / "in")
    with pytest.raises(InputError, match="--output.*folder of 'rain.mp4'"):
        whole_clips.open_clip(PROMPT, video, tmp_path / "in")
    with pytest.raises(InputError, match="--input.*several clips named rain"):
        manifest.check_stems([tmp_path / "rain.mp4", tmp_path / "rain.mov", tmp_path / "b.mp4"])


def test_a_killed_runners_passing_folder_is_swept_and_a_live_ones_kept(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(dead.stdout)
    root = tmp_path / "zsvr_runner"
    (root / f"{dead_pid}-aaaa").mkdir(parents=True)
    (root / f"{dead_pid}-aaaa" / "half.mp4").write_text("x")
    (root / f"{os.getppid()}-bbbb").mkdir()  # a live process (pytest's parent)
    (root / "not-ours").mkdir()
    mine = whole_clips.passing_folder(tmp_path)
    assert mine.parent == root and mine.name.startswith(f"{os.getpid()}-")
    assert whole_clips.sweep_stale(tmp_path) == 1
    assert sorted(p.name for p in root.iterdir()) == [f"{os.getppid()}-bbbb", "not-ours"]
    for p in list(root.iterdir()):
        p.rmdir()
    assert whole_clips.sweep_stale(tmp_path) == 0 and not root.exists()  # an empty zsvr_runner goes too
