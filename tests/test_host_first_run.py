"""The first Run works (issue 16, item 5): the shipped workflows open with the pack's example clip, which
ZSVR_LoadVideo offers and reads from the pack's folder in a ComfyUI whose input folder does not have it."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from host_harness import PACK_DIR, REALRAIN_DIR
from test_host_foundation import _first_frames_by_pyav

EXAMPLE = "zsvr_example_rain.mp4"
EXAMPLE_FILE = PACK_DIR / "example_media" / EXAMPLE


def _load(video: str, key: str, **overrides) -> dict:
    inputs = {"video": video, "start_frame": 0, "frame_cap": 5, "every_nth": 1, "width": 96, "height": 64,
              "fit": "crop", "frame_rule": "any", "size_multiple": 8, "best_effort": False, "pad_frames": False}
    inputs.update(overrides)
    return {"1": {"class_type": "ZSVR_LoadVideo", "inputs": inputs},
            "cap": {"class_type": "ZSVRTest_Capture", "inputs": {"value": ["1", 0], "key": key}},
            "fps": {"class_type": "ZSVRTest_Capture", "inputs": {"value": ["1", 1], "key": key + "_fps"}}}


def _options(host) -> list[str]:
    spec = host.nodes.NODE_CLASS_MAPPINGS["ZSVR_LoadVideo"].INPUT_TYPES()["required"]["video"]
    return spec[0] if isinstance(spec[0], list) else spec[1]["options"]


def test_the_example_clip_is_small_and_shipped():
    assert EXAMPLE_FILE.is_file() and 100_000 < EXAMPLE_FILE.stat().st_size < 500_000
    readme = (PACK_DIR / "example_media" / "README.md").read_text()
    assert "Pexels" in readme and "tvaranka/ZSVD" in readme and "realrain13/" in readme


def test_the_loader_offers_and_loads_the_example_clip_from_the_pack(host):
    assert not (host.input_dir / EXAMPLE).exists()  # a fresh input folder: nothing copied by hand
    assert EXAMPLE in _options(host)
    result = host.run(_load(EXAMPLE, "example"))
    assert result.success, result.error_message
    frames = host.captured["example"]
    assert frames.shape == (5, 64, 96, 3) and host.captured["example_fps"] == 8.0
    # 720x480 to 96x64 keeps the aspect ratio, so this is FFmpeg's area scaling of the pack's own file
    assert torch.equal(frames, _first_frames_by_pyav(EXAMPLE_FILE, 5, 96, 64))
    assert not (host.input_dir / EXAMPLE).exists()  # and nothing was copied by the pack either


@pytest.mark.skipif(not (REALRAIN_DIR / "42.mp4").is_file(), reason="shared/data/realrain not found")
def test_a_users_file_of_the_same_name_wins(host):
    own = host.input_dir / EXAMPLE
    shutil.copyfile(REALRAIN_DIR / "42.mp4", own)
    try:
        assert _options(host).count(EXAMPLE) == 1
        result = host.run(_load(EXAMPLE, "own"))
        assert result.success, result.error_message
        assert torch.equal(host.captured["own"], _first_frames_by_pyav(REALRAIN_DIR / "42.mp4", 5, 96, 64))
    finally:
        own.unlink()


@pytest.mark.parametrize("path", sorted((PACK_DIR / "workflows").glob("*.json")), ids=lambda p: p.name)
def test_every_shipped_workflow_opens_with_a_clip_the_loader_finds(host, path):
    """The widget value each workflow stores for ZSVR_LoadVideo's video is offered and passes the host's own
    validation of that node (file found) in a ComfyUI with an input folder that does not have it."""
    loaders = [n for n in json.loads(path.read_text())["nodes"] if n["type"] == "ZSVR_LoadVideo"]
    assert loaders
    for node in loaders:
        video = node["widgets_values"][0]
        assert video == EXAMPLE and video in _options(host)
        ok, error, _, node_errors = host.execution_validate(_load(video, "wf"))
        assert ok, (error, node_errors)
