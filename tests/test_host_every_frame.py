"""No frame dropped unless the user chose it (issue 25 item 1): a 60-frame clip (not a 4k+1 count) through the
whole-long-clip Wan workflow comes back with 60 frames at its rate with its sound, in-process, in chunks and on a
ComfyUI server; a workflow that still trims says how many frames and which.

The workflow is the shipped file with the tiny-model substitution of ``test_host_workflows.py`` (32x32). Its Load
Video reads every frame (frame_rule any), Pad Frames to Rule repeats the last one up to 61 for the Wan VAE, and
Trim Padding cuts it off after decoding.
"""

from __future__ import annotations

import asyncio
import io
import json
import pathlib

import numpy as np
import pytest

import long_clips
from host_harness import PACK_DIR, REALRAIN_DIR
from test_host_workflows import TINY, _input_types, _substitute_files, _tiny_run_prompt
from zsvr.headless.clip_job import ChunkOptions

pytestmark = pytest.mark.skipif(not REALRAIN_DIR.is_dir(), reason="shared/data/realrain not found")

LONG = "ZSVD rain removal (whole long clip) - Wan 2.1.json"
FPS = 8


# The tiny settings of test_host_workflows.py, but the tiled VAE in one temporal tile: the (full-size, random) Wan
# VAE is most of these tests' time, and its temporal tiles are exercised by test_host_workflows.py already.
ONE_TILE = {**TINY[LONG], "settings": {**TINY[LONG]["settings"],
                                       "VAEEncodeTiled": {"temporal_size": 64, "temporal_overlap": 4},
                                       "VAEDecodeTiled": {"temporal_size": 64, "temporal_overlap": 4}}}


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    folder = tmp_path_factory.mktemp("every_frame")
    return long_clips.write_clip(folder / "rain60.mp4", 60, fps=FPS, frames=long_clips.realrain_frames(60, 176, 120))


@pytest.fixture(scope="module")
def long_prompt(host):
    import importlib

    wf = importlib.import_module(f"{host.pack.__name__}.headless.workflow_format")
    data = json.loads((PACK_DIR / "workflows" / LONG).read_text())
    return _tiny_run_prompt(_substitute_files(host, wf.ui_to_api(data, _input_types(host)), TINY[LONG]), ONE_TILE)


def _assert_whole(video, source):
    info = long_clips.video_info(video)
    assert (info["frames"], info["rate"], info["width"], info["height"]) == (60, FPS, 32, 32), info
    sound, rate = long_clips.decode_audio(video)
    ref, ref_rate = long_clips.decode_audio(source)
    assert rate == ref_rate and abs(sound.shape[1] - ref.shape[1]) <= 1024, (sound.shape, ref.shape)  # one AAC frame


def test_the_shipped_long_clip_workflow_pads_and_trims_back():
    data = json.loads((PACK_DIR / "workflows" / LONG).read_text())
    nodes = {n["id"]: n for n in data["nodes"]}
    types = {n["type"]: n for n in data["nodes"]}
    assert types["ZSVR_LoadVideo"]["widgets_values"][7] == "any"  # frame_rule: every frame of the clip
    assert types["ZSVR_PadFrames"]["widgets_values"] == ["4k+1"]
    links = {(nodes[s]["type"], ss, nodes[d]["type"]) for _, s, ss, d, _, _ in data["links"]}
    assert {("ZSVR_LoadVideo", 0, "ZSVR_PadFrames"), ("ZSVR_PadFrames", 0, "VAEEncodeTiled"),
            ("VAEDecodeTiled", 0, "ZSVR_TrimPadding"), ("ZSVR_PadFrames", 1, "ZSVR_TrimPadding"),
            ("ZSVR_TrimPadding", 0, "CreateVideo")} <= links


def test_in_process_a_60_frame_clip_comes_back_with_60_frames_its_rate_and_sound(host, long_prompt, clip, tmp_path):
    from zsvr import run_workflow

    out = pathlib.Path(host.comfy.folder_paths.get_output_directory())  # where the host's save nodes write
    (row,) = run_workflow.run_batch(host.comfy, long_prompt, [clip], out, progress=False)
    assert row["ok"], row["error"]
    assert row["frames"] == 60 and row["warnings"] == []
    (video,) = row["outputs"]
    _assert_whole(video, clip)


def test_chunked_a_60_frame_clip_comes_back_with_60_frames_its_rate_and_sound(host, long_prompt, clip, tmp_path):
    from zsvr import run_workflow

    (row,) = run_workflow.run_batch(host.comfy, long_prompt, [clip], tmp_path, progress=False,
                                    chunks=ChunkOptions(chunk_frames=33, overlap=8))
    assert row["ok"], row["error"]
    assert (row["frames"], row["chunks"]) == (60, 3)  # 0-32, 25-57, 50-59 (10 frames, padded to 13 and cut back)
    _assert_whole(tmp_path / "rain60.mp4", clip)


def test_on_a_server_a_60_frame_clip_comes_back_with_60_frames_its_rate_and_sound(host, long_prompt, clip,
                                                                                   tmp_path):
    pytest.importorskip("aiohttp")
    from test_servers import ComfyServer
    from zsvr.headless import servers

    server = ComfyServer(host.comfy_dir, tmp_path / "server", host.models_dir, with_pack=True)
    try:
        server.wait_ready()
        lines = []
        run = asyncio.run(servers.run_remote_async(long_prompt, [clip], tmp_path / "out", [], [server.url],
                                                   say=lines.append, stream=io.StringIO()))
        assert run.code == 0, lines[-1]
        (result,) = run.results
        (video,) = result.files
        _assert_whole(video, clip)
        # a workflow that trims (Load Video at 4k+1, no padding): the unit's row says which frames were cut
        from test_host_long_clips import passthrough

        lines = []
        run = asyncio.run(servers.run_remote_async(passthrough("4k+1"), [clip], tmp_path / "trimmed", [],
                                                   [server.url], say=lines.append, stream=io.StringIO()))
        assert run.code == 0, lines[-1]
        (row,) = [line for line in lines[-1].splitlines() if line.startswith("rain60.mp4")]
        assert "(warning: loaded 57 frames (source frames 0-56); frame_rule 4k+1 trimmed the last 3 of the 60 " \
               "selected frames (source frames 57-59)" in row, row
    finally:
        server.stop()


def test_a_workflow_that_still_trims_says_how_many_frames_and_which(host, clip, tmp_path):
    """Load Video with frame_rule 4k+1 and no padding (the user's choice): 57 of 60 frames, and the row, the
    console and the node's UI text say the last 3 (source frames 57-59) were cut."""
    from test_host_long_clips import passthrough
    from zsvr import run_workflow
    from zsvr.headless import console

    stream = io.StringIO()
    reporter = console.ConsoleReporter(stream=stream, tty=False)
    out = pathlib.Path(host.comfy.folder_paths.get_output_directory())
    (row,) = run_workflow.run_batch(host.comfy, passthrough("4k+1"), [clip], out, reporter=reporter)
    assert row["ok"], row["error"]
    assert row["frames"] == 57 and long_clips.video_info(row["outputs"][0])["frames"] == 57
    (note,) = row["warnings"]
    assert "trimmed the last 3 of the 60 selected frames (source frames 57-59)" in note, note
    assert f"warning: loaded 57 frames (source frames 0-56); frame_rule 4k+1 trimmed the last 3" in stream.getvalue()
    assert "trimmed the last 3" in run_workflow.format_table([row])
