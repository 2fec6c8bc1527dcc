"""The runner's stop (issue 25 item 2, ``headless/stop_signals.py``): one signal stops it, cleanly, the first time.

``run_workflow.py`` runs as a subprocess on a temporary ComfyUI base folder whose ``custom_nodes`` holds this pack
(a link) and a stand-in "sampler" node: it reports progress every 50 ms through ComfyUI's progress bar (the path
a sampler's steps take, where ComfyUI checks its interrupt flag) and, with ``stubborn``, first sleeps 4 s without
any progress step (as a model load does). It writes ``started`` into the output folder when it begins, and the test
sends its signal then. Asserted: SIGINT once -> exit 130 within a few seconds, one ``stopped by SIGINT`` line, no
traceback, no staged ``zsvr_batch_*`` copy left, the second clip never started; SIGTERM -> 143, SIGHUP -> 129;
a second SIGINT while the node ignores the first -> 130 at once (well before the node's 4 s), still no traceback.
The ``--servers`` counterpart (SIGINT, SIGTERM and SIGHUP delete queued prompts and interrupt the running one) is
in ``tests/test_servers.py``.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest

from host_harness import PACK_DIR, REALRAIN_DIR, comfyui_or_skip

SLOW_PACK = '''"""Stand-in sampler: progress steps every 50 ms through ComfyUI's progress bar."""
import os
import time

import comfy.utils
import folder_paths


class SlowSampler:
    CATEGORY = "testing"
    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "run"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"images": ("IMAGE",), "stubborn": ("BOOLEAN", {"default": False})}}

    def run(self, images, stubborn):
        open(os.path.join(folder_paths.get_output_directory(), "started"), "w").close()
        if stubborn:
            time.sleep(4)
        bar = comfy.utils.ProgressBar(400)
        for _ in range(400):
            time.sleep(0.05)
            bar.update(1)
        return (images,)


NODE_CLASS_MAPPINGS = {"ZSVRTest_SlowSampler": SlowSampler}
'''

WORKFLOW = {
    "1": {"class_type": "ZSVR_LoadVideo", "inputs": {
        "video": "", "start_frame": 0, "frame_cap": 2, "every_nth": 1, "width": 32, "height": 32, "fit": "crop",
        "frame_rule": "any", "size_multiple": 8, "best_effort": False, "pad_frames": False}},
    "2": {"class_type": "ZSVRTest_SlowSampler", "inputs": {"images": ["1", 0], "stubborn": False}},
    "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": "x"}},
}

pytestmark = pytest.mark.skipif(not (REALRAIN_DIR / "152.mp4").is_file(), reason="shared/data/realrain not found")


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    comfy_dir = comfyui_or_skip()
    root = tmp_path_factory.mktemp("stops")
    nodes_dir = root / "base" / "custom_nodes"
    (nodes_dir / "slow_pack").mkdir(parents=True)
    (nodes_dir / "slow_pack" / "__init__.py").write_text(SLOW_PACK)
    os.symlink(PACK_DIR, nodes_dir / "comfyui-zsvr")
    clips = root / "clips"
    clips.mkdir()
    for name in ("a.mp4", "b.mp4"):
        shutil.copyfile(REALRAIN_DIR / "152.mp4", clips / name)
    return {"comfy": comfy_dir, "root": root, "base": root / "base", "clips": clips}


def _run(setup, tmp_path, signals, stubborn=False):
    """Start the runner, wait for the node to start, send ``signals`` (each after its delay); return the outcome."""
    workflow = json.loads(json.dumps(WORKFLOW))
    workflow["2"]["inputs"]["stubborn"] = stubborn
    path = tmp_path / "slow.json"
    path.write_text(json.dumps(workflow))
    out = tmp_path / "out"
    cmd = [sys.executable, str(PACK_DIR / "run_workflow.py"), str(path), "--input", str(setup["clips"]),
           "--output", str(out), "--comfyui", str(setup["comfy"]), "--base-directory", str(setup["base"]), "--cpu",
           "--disable-api-nodes"]
    env = {k: v for k, v in os.environ.items() if k != "COMFYUI_PATH"}
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path, env=env)
    deadline = time.monotonic() + 300
    while not (out / "started").exists():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "the stand-in node never started"
        time.sleep(0.05)
    time.sleep(0.3)
    sent = time.monotonic()
    for delay, signum in signals:
        time.sleep(delay)
        proc.send_signal(signum)
    stdout, stderr = proc.communicate(timeout=60)
    return proc.returncode, time.monotonic() - sent, stdout, stderr


def _staged(setup):
    return list((setup["base"] / "input").glob("zsvr_batch_*"))


@pytest.mark.parametrize("signum, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143), (signal.SIGHUP, 129)])
def test_one_signal_stops_the_run_cleanly(setup, tmp_path, signum, code):
    rc, seconds, stdout, stderr = _run(setup, tmp_path, [(0, signum)])
    text = stdout + stderr
    assert rc == code, text
    assert seconds < 5, f"took {seconds:.1f} s to stop"
    name = signal.Signals(signum).name
    lines = [line for line in text.splitlines() if line.startswith("stopped by")]
    assert lines == [f"stopped by {name}: 0 of 2 clips finished; staged copies removed"], text
    assert "Traceback" not in text
    assert "[2/2]" not in stderr, "the second clip started after the stop"
    assert not _staged(setup), "a staged copy stayed in ComfyUI's input folder"
    assert not list((tmp_path / "out").rglob("*.png")), "an interrupted clip left output frames"


def test_a_second_signal_exits_at_once(setup, tmp_path):
    # the node ignores the first signal for 4 s (no progress step): the second one must not wait for it
    rc, seconds, stdout, stderr = _run(setup, tmp_path, [(0, signal.SIGINT), (0.3, signal.SIGINT)], stubborn=True)
    text = stdout + stderr
    assert rc == 130, text
    assert seconds < 2.5, f"took {seconds:.1f} s after the signals"
    assert "Traceback" not in text
    assert "SIGINT again: exiting at once" in stderr
