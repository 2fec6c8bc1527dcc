"""Chunked runs of long clips through the runner on the live host (issue 14): frames, fps, sound, resume, errors.

The runner is driven as in ``test_host_workflows.py``: ``run_workflow.run_batch``
on the harness's booted host. Two workflows: the shipped Wan workflow with the
tiny-model substitution (the real thing, at 32x32), and a pass-through
``ZSVR_LoadVideo -> CreateVideo -> SaveVideo`` whose chunks equal their input,
so stitching must give back the source (exactly before the final encoder) and
the resume tests stay fast. Clips are built from the realrain clips with a
sine sound track (``tests/long_clips.py``).
"""

from __future__ import annotations

import json
import pathlib

import numpy as np
import pytest

import long_clips
from host_harness import PACK_DIR, REALRAIN_DIR
from test_host_workflows import TINY, _input_types, _substitute_files, _tiny_run_prompt
from zsvr.headless.clip_job import ChunkOptions

pytestmark = pytest.mark.skipif(not REALRAIN_DIR.is_dir(), reason="shared/data/realrain not found")

CHUNKS = {"chunk_frames": 49, "overlap": 8}


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    d = tmp_path_factory.mktemp("long")
    frames = long_clips.realrain_frames(150, 176, 120)
    return {
        "sound": long_clips.write_clip(d / "rain150.mp4", 150, frames=frames),
        "short": long_clips.write_clip(d / "rain30.mp4", 30, frames=frames),
        "pcm": long_clips.write_clip(d / "pcm60.mkv", 60, frames=frames, audio="pcm"),
        "broken": long_clips.write_clip(d / "mute60.mp4", 60, frames=frames, audio="broken"),
        "vfr": long_clips.write_clip(d / "vfr60.mp4", 60, frames=frames, variable_rate=True),
    }


def passthrough(frame_rule="4k+1"):
    """Load Video -> Create Video (fps, audio) -> Save Video: every chunk's output is its input."""
    return {
        "1": {"class_type": "ZSVR_LoadVideo", "inputs": {
            "video": "x.mp4", "start_frame": 0, "frame_cap": 0, "every_nth": 1, "width": 0, "height": 0, "fit": "crop",
            "frame_rule": frame_rule, "size_multiple": 8, "best_effort": False, "pad_frames": False}},
        "2": {"class_type": "CreateVideo", "inputs": {"images": ["1", 0], "fps": ["1", 1], "audio": ["1", 3]}},
        "3": {"class_type": "SaveVideo", "inputs": {"video": ["2", 0], "filename_prefix": "x", "format": "auto",
                                                    "codec": "auto"}},
    }


def tiny_wan(host, name="ZSVD rain removal - Wan 2.1.json"):
    import importlib

    wf = importlib.import_module(f"{host.pack.__name__}.headless.workflow_format")
    data = json.loads((PACK_DIR / "workflows" / name).read_text())
    return _tiny_run_prompt(_substitute_files(host, wf.ui_to_api(data, _input_types(host)), TINY[name]), TINY[name])


class Counting:
    """Wraps the host's ``execute`` to count the prompts the runner sends; ``kill_after`` raises KeyboardInterrupt
    right after that many prompts completed (the chunk's file is written, the manifest not yet updated)."""

    def __init__(self, host, kill_after=None):
        self.host, self.kill_after, self.calls = host, kill_after, 0

    def __enter__(self):
        self.real = self.host.comfy.execute

        def execute(prompt):
            self.calls += 1
            result = self.real(prompt)
            if self.kill_after is not None and self.calls == self.kill_after:
                raise KeyboardInterrupt
            return result

        self.host.comfy.execute = execute
        return self

    def __exit__(self, *exc):
        del self.host.comfy.execute  # back to the class's method
        return False


def run(runner, host, prompt, clip, out, sets=(), **chunks):
    return runner.run_batch(host.comfy, prompt, [clip], out, sets, progress=False, chunks=ChunkOptions(**{**CHUNKS, **chunks}))


def test_tiny_wan_chunked_150_frames_keep_count_fps_size_and_sound(host, runner, clips, tmp_path):
    """The shipped Wan workflow (tiny models, 32x32) on a 150-frame clip with sound, 49-frame chunks overlapping
    by 8: four prompts, 150 frames out at 8 fps, and the source's audio track sample for sample. The clip is
    three 49-frame realrain shots and 3 frames of a fourth: chunked per shot (the last shot run on 5 frames)."""
    out = tmp_path / "out"
    prompt = tiny_wan(host)
    for node in prompt.values():  # 3 steps (invert 2, edit 2): the frame count, rate and sound are the point here
        node["inputs"].update({"BasicScheduler": {"steps": 3}, "ZSVR_DDPMInvert": {"first_step": 1},
                               "ZSVR_InversionSampler": {"skip": 1}}.get(node["class_type"], {}))
    with Counting(host) as count:
        (row,) = run(runner, host, prompt, clips["sound"], out)
    assert row["ok"], row["error"]
    # the model check before the first clip (blocks against the model: run_checks.py), then four chunks
    assert count.calls == 5 and (row["chunks"], row["chunks_run"], row["chunks_reused"]) == (4, 4, 0)
    info = long_clips.video_info(out / "rain150.mp4")
    assert (info["frames"], info["rate"], info["width"], info["height"], info["audio"]) == (150, 8, 32, 32, "aac")
    source, rate = long_clips.decode_audio(clips["sound"])
    restored, out_rate = long_clips.decode_audio(out / "rain150.mp4")
    assert out_rate == rate and restored.shape == source.shape and np.array_equal(restored, source)
    manifest = json.loads((out / "rain150.zsvr.json").read_text())
    assert sorted((c["start"], c["frames"]) for c in manifest["chunks"].values()) == [(0, 49), (49, 49), (98, 49),
                                                                                       (147, 3)]
    assert manifest["shots"]["cuts"] == [49, 98, 147] and manifest["shots"]["count"] == 4
    assert row["shots"] == 4 and any(w.startswith("4 shots (new shot at frame 49, 98, 147") for w in row["warnings"])
    assert manifest["output"]["frames"] == 150
    assert sorted(p.name for p in out.iterdir()) == ["rain150.mp4", "rain150.zsvr.json"]  # chunks removed


def test_wan22_14b_pair_workflow_runs_chunked(host, runner, clips, tmp_path):
    """The shipped Wan 2.2 14B workflow (the tiny pair of experts) through the runner in chunks: a 30-frame clip in
    17-frame chunks overlapping by 4 is two prompts and 30 frames out."""
    out = tmp_path / "out"
    with Counting(host) as count:
        (row,) = run(runner, host, tiny_wan(host, "ZSVD rain removal - Wan 2.2 14B.json"), clips["short"], out,
                     chunk_frames=17, overlap=4)
    assert row["ok"], row["error"]
    # the model check before the first clip (blocks against both experts: run_checks.py), then two chunks
    assert count.calls == 3 and row["chunks"] == 2
    assert long_clips.video_info(out / "rain30.mp4")["frames"] == 30


def test_stitching_passthrough_chunks_gives_back_the_source(host, runner, clips, tmp_path):
    """Chunks equal to their input: the crossfaded frames equal the source exactly; the mp4 within H.264's loss."""
    import importlib

    stitch = importlib.import_module(f"{host.pack.__name__}.headless.stitch")
    chunking = importlib.import_module(f"{host.pack.__name__}.kernels.chunking")
    out = tmp_path / "out"
    (row,) = run(runner, host, passthrough(), clips["sound"], out, keep_chunks=True)
    assert row["ok"], row["error"]
    # the chunk sink wrote into ComfyUI's output folder; each file was moved into the clip's chunk folder
    passing = pathlib.Path(host.comfy.folder_paths.get_output_directory()) / "zsvr_runner"
    assert not passing.exists() or not any(passing.rglob("*"))
    manifest = json.loads((out / "rain150.zsvr.json").read_text())
    chunks = sorted(manifest["chunks"].values(), key=lambda c: c["start"])
    assert all((out / c["file"]).parent == out / "rain150.zsvr-chunks" for c in chunks)
    assert manifest["shots"]["cuts"] == [49, 98, 147]  # the realrain clips the test clip is made of
    plan = chunking.plan_shot_chunks(150, [49, 98, 147], 49, 8, "4k+1")
    assert [(c["start"], c["frames"]) for c in chunks] == [(c.start, c.frames) for c in plan]
    source = long_clips.decode_frames(clips["sound"])
    stitched = np.stack(list(stitch.iter_stitched(plan, [out / c["file"] for c in chunks])))
    assert np.array_equal(stitched, source)
    restored = long_clips.decode_frames(out / "rain150.mp4").astype(np.float64)
    assert restored.shape == source.shape
    mse = ((restored - source) ** 2).mean()
    assert 10 * np.log10(255**2 / mse) > 35  # PSNR in dB: H.264 at CRF 18, no seam, nothing misplaced


def test_killed_after_the_first_chunk_a_rerun_runs_only_the_missing_ones(host, runner, clips, tmp_path):
    out = tmp_path / "out"
    prompt = passthrough()
    with Counting(host, kill_after=2) as count, pytest.raises(KeyboardInterrupt):
        run(runner, host, prompt, clips["sound"], out)
    assert count.calls == 2
    manifest = json.loads((out / "rain150.zsvr.json").read_text())
    assert [c["start"] for c in manifest["chunks"].values() if c["done"]] == [0]  # chunk 2 was in flight
    assert not (out / "rain150.mp4").exists() and not (out / "rain150.partial.mp4").exists()
    with Counting(host) as count:
        (row,) = run(runner, host, prompt, clips["sound"], out)
    assert row["ok"], row["error"]
    assert count.calls == 3 and (row["chunks_run"], row["chunks_reused"]) == (3, 1)
    assert long_clips.video_info(out / "rain150.mp4")["frames"] == 150
    with Counting(host) as count:  # the same command again: nothing runs
        (row,) = run(runner, host, prompt, clips["sound"], out)
    assert row["ok"] and count.calls == 0 and row["chunks_reused"] == 4 and row["skipped"]
    assert "skipped (done)" in runner.format_table([{**row, "seconds": 0.0, "peak_memory_gb": 0.0}])
    before = (out / "rain150.mp4").stat().st_mtime_ns
    with Counting(host) as count:  # --force: every chunk and the output again, nothing reused
        (row,) = run(runner, host, prompt, clips["sound"], out, force=True)
    assert row["ok"] and count.calls == 4 and (row["chunks_run"], row["chunks_reused"]) == (4, 0)
    assert not row["skipped"] and (out / "rain150.mp4").stat().st_mtime_ns != before
    assert long_clips.video_info(out / "rain150.mp4")["frames"] == 150
    assert sorted(p.name for p in out.iterdir()) == ["rain150.mp4", "rain150.zsvr.json"]  # no second copy
    with Counting(host) as count:  # a changed --set: every chunk depends on it
        (row,) = run(runner, host, prompt, clips["sound"], out, sets=["ZSVR_LoadVideo.width=160"])
    assert row["ok"], row["error"]
    assert count.calls == 4 and row["chunks_run"] == 4
    assert long_clips.video_info(out / "rain150.mp4")["width"] == 160
    with Counting(host) as count:  # the colour match is part of every chunk too
        (row,) = run(runner, host, prompt, clips["sound"], out, sets=["ZSVR_LoadVideo.width=160"],
                     color_match="mean_std")
    assert row["ok"] and count.calls == 4


@pytest.mark.parametrize("chunks, flag, words", [
    ({"overlap": 49}, "--overlap", "not below chunk_frames (49)"),
    ({"chunk_frames": 48}, "--chunk-frames", "use 45 or 49 frames per chunk"),
    ({"color_match": "wavelet"}, "--color-match", "use one of low_frequency, mean_std"),
])
def test_bad_options_are_refused_before_anything_is_written(host, runner, clips, tmp_path, chunks, flag, words):
    out = tmp_path / "out"
    with Counting(host) as count, pytest.raises(runner.ChunkOptionError) as info:
        run(runner, host, passthrough(), clips["sound"], out, **chunks)
    assert f"ZSVR input '{flag}'" in str(info.value) and words in str(info.value) and "Fix:" in str(info.value)
    assert count.calls == 0 and not out.exists()


def test_a_clip_shorter_than_one_chunk_runs_whole(host, runner, clips, tmp_path):
    out = tmp_path / "out"
    with Counting(host) as count:
        (row,) = run(runner, host, passthrough(), clips["short"], out)
    assert row["ok"], row["error"] and count.calls == 1
    assert "30 frames, not more than one chunk (49): run whole (on 33 frames for frame rule 4k+1" in row["warnings"][0]
    assert "run whole" in runner.format_table([row])
    assert np.array_equal(long_clips.decode_frames(out / "rain30.mp4").shape, (30, 120, 176, 3))


def test_a_variable_frame_rate_clip_is_refused_saying_how_frames_are_timed(host, runner, clips, tmp_path):
    out = tmp_path / "out"
    with Counting(host) as count:
        (row,) = run(runner, host, passthrough(), clips["vfr"], out)
    assert not row["ok"] and count.calls == 0
    error = row["error"]
    assert "ZSVR input 'video': 'vfr60.mp4' has a variable frame rate" in error
    assert "from 125.0 to 250.0 ms" in error and "time frame i at i / fps" in error and "constant frame rate" in error
    assert not any(out.glob("vfr60*"))  # nothing half-written


def test_audio_that_cannot_be_decoded_leaves_a_restored_video_without_sound(host, runner, clips, tmp_path):
    out = tmp_path / "out"
    (row,) = run(runner, host, passthrough(), clips["broken"], out)
    assert row["ok"], row["error"]
    assert any("audio track of 'mute60.mp4' cannot be decoded" in w and "no sound" in w for w in row["warnings"])
    info = long_clips.video_info(out / "mute60.mp4")
    assert (info["frames"], info["audio"]) == (60, None)


def test_sound_mp4_cannot_hold_is_encoded_as_aac(host, runner, clips, tmp_path):
    """PCM (in Matroska) is not an MP4 codec: the track is decoded and AAC-encoded, same rate, same sound."""
    out = tmp_path / "out"
    (row,) = run(runner, host, passthrough(), clips["pcm"], out)
    assert row["ok"], row["error"]
    assert long_clips.video_info(out / "pcm60.mp4")["audio"] == "aac"
    source, rate = long_clips.decode_audio(clips["pcm"])
    restored, out_rate = long_clips.decode_audio(out / "pcm60.mp4")
    assert out_rate == rate and abs(restored.shape[1] - source.shape[1]) <= 2048
    n = min(restored.shape[1], source.shape[1])
    error = np.sqrt(((restored[:, :n] - source[:, :n]) ** 2).mean()) / np.sqrt((source[:, :n] ** 2).mean())
    assert error < 0.05  # relative RMS error of the AAC copy, aligned in time


def test_load_video_node_outputs_the_sound_under_its_frames(host, clips):
    import shutil

    shutil.copyfile(clips["sound"], host.input_dir / "rain150.mp4")
    prompt = passthrough()
    prompt["1"]["inputs"].update(video="rain150.mp4", start_frame=41, frame_cap=49)
    prompt["3"] = {"class_type": "ZSVRTest_Capture", "inputs": {"value": ["1", 3], "key": "audio"}}
    result = host.run(prompt)
    assert result.success, result.error_message
    audio = host.captured["audio"]
    source, rate = long_clips.decode_audio(clips["sound"])
    first = round(41 / 8 * rate)
    expected = source[:, first:first + round(49 / 8 * rate)]
    assert audio["sample_rate"] == rate and tuple(audio["waveform"].shape) == (1, 2, expected.shape[1])
    assert np.abs(audio["waveform"][0].numpy() - expected).max() < 1e-4
