"""The runner checks everything before the first model call and stays quiet (issue 25 items 4 and 5).

* before ComfyUI boots: ``--output`` naming a file and chunk options the workflow's frame rule refuses are one
  line each, exit status 2, no traceback (the runner as a subprocess; nothing boots);
* once before any clip (in-process, the session's host): a model file that is missing is named with the
  README's download row, and ``blocks`` outside the model's block count is refused before any inversion runs;
* quiet by default: ComfyUI's ``!!! Exception during processing !!!`` block and its traceback stay out of the
  runner's output (``--verbose`` keeps them), and a clip's error names the user's file, not the staged copy.
"""

from __future__ import annotations

import io
import json
import logging
import os
import subprocess
import sys

import pytest

from host_harness import PACK_DIR, REALRAIN_DIR, comfyui_or_skip
from zsvr.headless import console, run_checks
from zsvr.headless.clip_job import ChunkOptions
from zsvr.nodes.errors import InputError

WAN = "ZSVD rain removal - Wan 2.1.json"
LONG = "ZSVD rain removal (whole long clip) - Wan 2.1.json"


def _workflow(name):
    return json.loads((PACK_DIR / "workflows" / name).read_text())


def _runner(tmp_path, *args, timeout=120):
    env = {k: v for k, v in os.environ.items() if k != "COMFYUI_PATH"}
    return subprocess.run([sys.executable, str(PACK_DIR / "run_workflow.py"), *map(str, args)], capture_output=True,
                          text=True, cwd=tmp_path, env=env, timeout=timeout)


# ---------------------------------------------------------------------------
# Before ComfyUI boots.
# ---------------------------------------------------------------------------


def test_chunk_options_are_checked_against_the_files_frame_rule():
    run_checks.check_chunk_options(ChunkOptions(chunk_frames=33, overlap=8), _workflow(LONG))  # any: every count
    with pytest.raises(InputError) as err:
        run_checks.check_chunk_options(ChunkOptions(chunk_frames=30, overlap=8), _workflow(WAN))  # 4k+1
    assert str(err.value).startswith("ZSVR input '--chunk-frames': 30 breaks the workflow's frame rule '4k+1'")
    assert "use 29 or 33 frames per chunk" in str(err.value)
    with pytest.raises(InputError, match=r"'--overlap': 49 is not below chunk_frames \(49\)"):
        run_checks.check_chunk_options(ChunkOptions(chunk_frames=49, overlap=49), _workflow(WAN))
    with pytest.raises(InputError, match=r"'--color-match': is 'median'"):
        run_checks.check_chunk_options(ChunkOptions(chunk_frames=49, color_match="median"), _workflow(WAN))
    for bad in (0.0, 1.5, -0.2):
        with pytest.raises(InputError, match=rf"'--scene-threshold': is {bad}.*pass a number in \(0, 1\]"):
            run_checks.check_chunk_options(ChunkOptions(chunk_frames=49, scene_threshold=bad), _workflow(WAN))
    # with cuts off the threshold is not used, hence not checked
    run_checks.check_chunk_options(ChunkOptions(chunk_frames=49, scene_cuts=False, scene_threshold=5.0), _workflow(WAN))


@pytest.mark.skipif(not REALRAIN_DIR.is_dir(), reason="shared/data/realrain not found")
def test_a_bad_command_line_is_one_line_before_comfyui_boots(tmp_path):
    comfy_dir = comfyui_or_skip()
    clip = sorted(REALRAIN_DIR.glob("*.mp4"))[0]
    taken = tmp_path / "taken.mp4"
    taken.write_bytes(b"not a folder")
    workflow = PACK_DIR / "workflows" / WAN
    for extra, first in (
            (["--output", taken], f"error: --output {taken} is a file; --output names a folder"),
            (["--output", tmp_path / "out", "--chunk-frames", "30"],
             "error: ZSVR input '--chunk-frames': 30 breaks the workflow's frame rule '4k+1'"),
            (["--output", tmp_path / "out", "--chunk-frames", "49", "--overlap", "60"],
             "error: ZSVR input '--overlap': 60 is not below chunk_frames (49)"),
            (["--output", tmp_path / "out", "--chunk-frames", "49", "--scene-threshold", "1.5"],
             "error: ZSVR input '--scene-threshold': is 1.5"),
            (["--output", tmp_path / "out", "--no-scene-cuts"],
             "error: --no-scene-cuts and --scene-threshold plan the chunks of a chunked run: add --chunk-frames N"),
            (["--output", tmp_path / "out", "--chunk-frames", "49", "--no-scene-cuts", "--scene-threshold", "0.3"],
             "error: --scene-threshold sets where cuts are found, --no-scene-cuts turns them off")):
        proc = _runner(tmp_path, workflow, "--input", clip, "--comfyui", comfy_dir, *extra)
        lines = proc.stderr.splitlines()
        assert proc.returncode == 2 and len(lines) == 1 and lines[0].startswith(first), proc.stderr
        assert proc.stdout == ""  # no table, no traceback, ComfyUI never started
    assert not (tmp_path / "out").exists()


def test_download_rows_come_from_the_readme():
    row = run_checks.download_row("wan2.1_t2v_1.3B_fp16.safetensors")
    assert row == ("the README's download table: ComfyUI/models/diffusion_models/wan2.1_t2v_1.3B_fp16.safetensors "
                   "from Comfy-Org/Wan_2.1_ComfyUI_repackaged, split_files/diffusion_models/"
                   "wan2.1_t2v_1.3B_fp16.safetensors (about 2.8 GB)")
    assert "THUDM/CogVideoX-2b" in run_checks.download_row("CogVideoX-2b")
    assert run_checks.download_row("my_own_model.safetensors") == ""


# ---------------------------------------------------------------------------
# Quiet by default.
# ---------------------------------------------------------------------------


def _log_through(verbose: bool) -> str:
    stream = io.StringIO()
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    try:
        console.route_logging(console.ConsoleReporter(stream=stream, tty=False), verbose=verbose)
        for level, text in ((logging.ERROR, "!!! Exception during processing !!! bad clip"),
                            (logging.ERROR, "Traceback (most recent call last):"),
                            (logging.WARNING, "a warning from the executor")):
            root.handle(logging.LogRecord("root", level, "/comfy/execution.py", 575, text, None, None))
        root.handle(logging.LogRecord("root", logging.ERROR, "/pack/nodes/x.py", 1, "a pack error", None, None))
    finally:
        root.handlers[:], root.level = saved
    return stream.getvalue()


def test_the_executors_error_block_shows_only_with_verbose():
    quiet, verbose = _log_through(False), _log_through(True)
    assert quiet.splitlines() == ["WARNING: a warning from the executor", "ERROR: a pack error"]
    assert "ERROR: !!! Exception during processing !!! bad clip" in verbose and "Traceback" in verbose


@pytest.mark.skipif(not REALRAIN_DIR.is_dir(), reason="shared/data/realrain not found")
def test_a_failing_clip_is_one_line_naming_the_users_file(tmp_path):
    comfy_dir = comfyui_or_skip()
    clips = tmp_path / "clips"
    clips.mkdir()
    bad = clips / "broken.mp4"
    bad.write_bytes(b"\x00" * 4096)
    workflow = tmp_path / "load_save.json"
    workflow.write_text(json.dumps({
        "1": {"class_type": "ZSVR_LoadVideo", "inputs": {
            "video": "", "start_frame": 0, "frame_cap": 2, "every_nth": 1, "width": 32, "height": 32, "fit": "crop",
            "frame_rule": "any", "size_multiple": 8, "best_effort": False, "pad_frames": False}},
        "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "x"}}}))
    base = tmp_path / "comfy"
    (base / "custom_nodes").mkdir(parents=True)
    os.symlink(PACK_DIR, base / "custom_nodes" / "comfyui-zsvr")
    proc = _runner(tmp_path, workflow, "--input", clips, "--output", tmp_path / "out", "--comfyui", comfy_dir,
                   "--base-directory", base, "--cpu", "--disable-api-nodes", "--disable-all-custom-nodes", timeout=600)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 1, output
    assert "!!! Exception during processing" not in output and "Traceback" not in output, output
    assert "zsvr_batch_" not in output, output
    failed = [line for line in proc.stderr.splitlines() if line.startswith("  FAILED")]
    assert len(failed) == 1 and str(bad) in failed[0], proc.stderr
    row = [line for line in proc.stdout.splitlines() if line.startswith("broken.mp4")]
    assert row and "FAILED" in row[0] and str(bad) in row[0], proc.stdout


# ---------------------------------------------------------------------------
# Once before any clip, in-process.
# ---------------------------------------------------------------------------


class Recording:
    """Records the class types of every prompt the runner sends to the host."""

    def __init__(self, host):
        self.host, self.prompts = host, []

    def __enter__(self):
        real = self.host.comfy.execute

        def execute(prompt):
            self.prompts.append(sorted({n["class_type"] for n in prompt.values()}))
            return real(prompt)

        self.host.comfy.execute = execute
        return self

    def __exit__(self, *exc):
        del self.host.comfy.execute
        return False


@pytest.mark.skipif(not REALRAIN_DIR.is_dir(), reason="shared/data/realrain not found")
def test_a_missing_model_file_is_named_once_with_its_download_row_before_any_clip(host, tmp_path):
    from zsvr import run_workflow

    api = host.comfy.to_api(_workflow(WAN))  # the shipped names: not in the test host's models folders
    clips = sorted(REALRAIN_DIR.glob("*.mp4"))[:2]
    input_dir = host.comfy.folder_paths.get_input_directory()
    before = sorted(os.listdir(input_dir))
    with Recording(host) as rec, pytest.raises(run_checks.WorkflowCheckError) as err:
        run_workflow.run_batch(host.comfy, api, clips, tmp_path / "out", progress=False)
    message = str(err.value)
    assert rec.prompts == [] and sorted(os.listdir(input_dir)) == before
    assert message.startswith("model files missing, nothing was run:")
    assert ("node 2 (Load Diffusion Model) unet_name: 'wan2.1_t2v_1.3B_fp16.safetensors' is not in ComfyUI's models "
            "folders; download it (the README's download table: ComfyUI/models/diffusion_models/"
            "wan2.1_t2v_1.3B_fp16.safetensors from Comfy-Org/Wan_2.1_ComfyUI_repackaged") in message
    assert "vae/wan_2.1_vae.safetensors from Comfy-Org" in message
    # one line per missing file: the diffusion model, the VAE, and the text encoder unless another test put a
    # placeholder of it into the host's models folder
    assert message.count("\n  node ") in (2, 3) and "\n  node 4 (Load VAE) vae_name" in message


@pytest.mark.skipif(not REALRAIN_DIR.is_dir(), reason="shared/data/realrain not found")
def test_blocks_outside_the_model_are_refused_before_any_inversion(host, tmp_path):
    from test_host_workflows import TINY, _substitute_files, _tiny_run_prompt
    from zsvr import run_workflow

    prompt = _tiny_run_prompt(_substitute_files(host, host.comfy.to_api(_workflow(WAN)), TINY[WAN]), TINY[WAN])
    clip = sorted(REALRAIN_DIR.glob("*.mp4"))[0]
    with Recording(host) as rec, pytest.raises(run_checks.WorkflowCheckError) as err:
        run_workflow.run_batch(host.comfy, json.loads(json.dumps(prompt)), [clip], tmp_path / "out",
                               sets=["ZSVR_AttentionSwitch.blocks=0-40"], progress=False)
    assert len(rec.prompts) == 1 and "ZSVR_DDPMInvert" not in rec.prompts[0], rec.prompts  # the check prompt only
    assert "ZSVR_AttentionSwitch" in rec.prompts[0] and "ZSVR_LoadVideo" not in rec.prompts[0]
    assert "ZSVR input 'blocks': has '0-40', outside this model's blocks 0-" in str(err.value)
    # settings the model takes: the check passes and the clip runs (the check's loaded model reused from the cache)
    with Recording(host) as rec:
        (row,) = run_workflow.run_batch(host.comfy, prompt, [clip], tmp_path / "out", progress=False)
    assert row["ok"], row["error"]
    assert len(rec.prompts) == 2 and "ZSVR_DDPMInvert" in rec.prompts[1]
