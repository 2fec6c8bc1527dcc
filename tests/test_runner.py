"""The headless runner as a first-time user meets it: other packs, ``--set`` mistakes, missing node types.

* the runner run as a subprocess against a temporary ComfyUI base folder whose
  ``custom_nodes`` holds a stand-in third-party pack, a pack that fails to import,
  a ``.disabled`` pack and this pack as a symlink: the workflow using the stand-in
  node runs, the broken pack is named in one line, the pack loads once, the staged
  clip is gone afterwards;
* ComfyUI's custom-node switches through the boot's folder loader (in-process);
* the error for a node type whose pack failed or was not loaded;
* ``--set`` against the live registry: the script's own examples, and a mistake that
  stops the batch before anything is staged or run.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

from host_harness import PACK_DIR, REALRAIN_DIR, comfyui_or_skip
from zsvr.headless.comfy_boot import PackLoad, explain_missing

STANDIN_PACK = '''"""Stand-in third-party pack: one V1 node, a web route registered on import (as many packs do)."""
import json
import os

import folder_paths
from server import PromptServer


@PromptServer.instance.routes.get("/zsvr_standin/ping")
async def ping(request):
    return None


class StandInInvert:
    CATEGORY = "testing"
    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "run"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"images": ("IMAGE",),
                             "amount": ("FLOAT", {"default": 0.0, "min": 0.0, "max": 1.0})}}

    def run(self, images, amount):
        out = images * (1 - amount) + (1 - images) * amount
        stats = {"in": float(images.double().mean()), "out": float(out.double().mean()), "frames": len(images)}
        with open(os.path.join(folder_paths.get_output_directory(), "standin_stats.json"), "w") as f:
            json.dump(stats, f)
        return (out,)


NODE_CLASS_MAPPINGS = {"ZSVRStandIn_Invert": StandInInvert}
NODE_DISPLAY_NAME_MAPPINGS = {"ZSVRStandIn_Invert": "Stand-in Invert"}
'''

WORKFLOW = {
    "1": {"class_type": "ZSVR_LoadVideo", "inputs": {
        "video": "", "start_frame": 0, "frame_cap": 2, "every_nth": 1, "width": 32, "height": 32, "fit": "crop",
        "frame_rule": "any", "size_multiple": 8, "best_effort": False, "pad_frames": False}},
    "2": {"class_type": "ZSVRStandIn_Invert", "inputs": {"images": ["1", 0], "amount": 0.0}},
    "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": "x"}},
}


def _pack(folder, name: str, source: str):
    (folder / name).mkdir(parents=True)
    (folder / name / "__init__.py").write_text(source)


@pytest.mark.skipif(not (REALRAIN_DIR / "152.mp4").is_file(), reason="shared/data/realrain not found")
def test_runner_runs_a_workflow_using_another_installed_pack(tmp_path):
    comfy_dir = comfyui_or_skip()
    base = tmp_path / "comfy"
    nodes_dir = base / "custom_nodes"
    _pack(nodes_dir, "standin_pack", STANDIN_PACK)
    _pack(nodes_dir, "broken_pack", "import zsvr_test_dependency_that_is_not_installed\n")
    _pack(nodes_dir, "off_pack.disabled", "raise RuntimeError('a .disabled pack must not load')\n")
    os.symlink(PACK_DIR, nodes_dir / "comfyui-zsvr")  # the pack installed as a link to this checkout
    clips = tmp_path / "clips"
    clips.mkdir()
    shutil.copyfile(REALRAIN_DIR / "152.mp4", clips / "152.mp4")
    workflow = tmp_path / "standin.json"
    workflow.write_text(json.dumps(WORKFLOW))
    out = tmp_path / "out"
    cmd = [sys.executable, str(PACK_DIR / "run_workflow.py"), str(workflow), "--input", str(clips),
           "--output", str(out), "--comfyui", str(comfy_dir), "--base-directory", str(base), "--cpu",
           "--disable-api-nodes", "--set", "Stand-in Invert.amount=1"]
    env = {k: v for k, v in os.environ.items() if k != "COMFYUI_PATH"}
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path, env=env, timeout=900)
    log = proc.stderr.splitlines()
    assert proc.returncode == 0, proc.stdout + proc.stderr

    loaded = [line for line in log if line.startswith("custom nodes loaded: ")]
    assert len(loaded) == 1, proc.stderr
    # once, under its custom_nodes link (not also as the checkout folder), and the .disabled pack not at all
    assert sorted(loaded[0][len("custom nodes loaded: "):].split(", ")) == ["comfyui-zsvr (this pack)",
                                                                            "standin_pack"]
    assert ("custom node pack broken_pack failed to import: ModuleNotFoundError: No module named "
            "'zsvr_test_dependency_that_is_not_installed'") in log
    assert "off_pack" not in proc.stderr
    assert ("--set Stand-in Invert.amount=1: node 2 (Stand-in Invert, ZSVRStandIn_Invert) amount 0.0 -> 1.0"
            in log), proc.stderr

    stats = json.loads((out / "standin_stats.json").read_text())
    assert stats["frames"] == 2 and abs(stats["in"] - 0.5) > 0.02  # inverting visibly changes the mean
    assert stats["out"] == pytest.approx(1 - stats["in"], abs=1e-6)  # the --set reached the stand-in node
    saved = sorted((out / "152").glob("152_*.png"))
    assert len(saved) == 2
    from PIL import Image
    import numpy as np

    mean = np.mean([np.asarray(Image.open(p).convert("RGB"), dtype=np.float64) for p in saved]) / 255
    assert mean == pytest.approx(stats["out"], abs=1 / 255)
    row = [line.split() for line in proc.stdout.splitlines() if line.startswith("152.mp4")]
    assert row and row[0][1:3] == ["ok", "2"], proc.stdout
    assert not list((base / "input").glob("zsvr_batch_*")), "the staged copy stayed in ComfyUI's input folder"
    assert "[1/1] 152.mp4" in log and "  Stand-in Invert" in log  # the node by its display name


def test_custom_node_switches_and_one_pack_per_checkout(host, tmp_path, monkeypatch):
    """The boot's folder loader, in the session's host: ComfyUI's skip rules, --disable-all-custom-nodes with
    a whitelist, a failure's one-line reason, core nodes not replaceable, this pack never loaded twice."""
    folder = tmp_path / "custom_nodes"
    node = ("class N:\n    CATEGORY = 't'\n    RETURN_TYPES = ('INT',)\n    FUNCTION = 'f'\n"
            "    @classmethod\n    def INPUT_TYPES(cls):\n        return {'required': {}}\n"
            "    def f(self):\n        return (1,)\n")
    _pack(folder, "pack_a", node + "NODE_CLASS_MAPPINGS = {'ZSVRTestLoader_A': N}\n")
    _pack(folder, "pack_b", node + "NODE_CLASS_MAPPINGS = {'ZSVRTestLoader_B': N, 'VAEDecode': N}\n")
    _pack(folder, "broken_pack", "import zsvr_missing_dependency\n")
    _pack(folder, "off.disabled", "raise RuntimeError('must not load')\n")
    (folder / "single_file.py").write_text(node + "NODE_CLASS_MAPPINGS = {'ZSVRTestLoader_C': N}\n")
    (folder / "notes.txt").write_text("not a pack")
    os.symlink(PACK_DIR, folder / "zsvr-link")
    monkeypatch.setitem(host.nodes.NODE_CLASS_MAPPINGS, "VAEDecode", host.nodes.NODE_CLASS_MAPPINGS["VAEDecode"])
    core_decode = host.nodes.NODE_CLASS_MAPPINGS["VAEDecode"]
    ignore = set(host.nodes.NODE_CLASS_MAPPINGS)

    loads = {p.name: p for p in host.comfy.load_custom_node_folders([str(folder)], ignore, disable_all=True,
                                                                    whitelist=["pack_a"])}
    assert sorted(loads) == ["broken_pack", "pack_a", "pack_b", "single_file.py"]
    assert loads["pack_a"].ok and loads["pack_a"].node_types == ["ZSVRTestLoader_A"]
    assert all(loads[n].skipped and not loads[n].ok for n in ("pack_b", "broken_pack", "single_file.py"))
    assert "ZSVRTestLoader_B" not in host.nodes.NODE_CLASS_MAPPINGS

    loads = {p.name: p for p in host.comfy.load_custom_node_folders([str(folder)], ignore)}
    assert sorted(loads) == ["broken_pack", "pack_a", "pack_b", "single_file.py"]
    assert loads["broken_pack"].error == "ModuleNotFoundError: No module named 'zsvr_missing_dependency'"
    assert not loads["broken_pack"].ok and not loads["broken_pack"].skipped
    assert loads["pack_b"].node_types == ["ZSVRTestLoader_B"] and loads["single_file.py"].ok
    assert host.nodes.NODE_CLASS_MAPPINGS["VAEDecode"] is core_decode  # ComfyUI's own nodes stay
    assert str(folder / "zsvr-link").replace(".", "_x_") not in sys.modules  # the link to this pack: skipped


def test_missing_node_error_names_the_failed_or_skipped_pack():
    failed = PackLoad("ComfyUI-VideoHelperSuite", "/c/custom_nodes/ComfyUI-VideoHelperSuite", False,
                      "ModuleNotFoundError: No module named 'imageio_ffmpeg'")
    skipped = PackLoad("ComfyUI-GGUF", "/c/custom_nodes/ComfyUI-GGUF", False, "--disable-all-custom-nodes",
                       skipped=True)
    msg = explain_missing({"VHS_VideoCombine": ["21"]}, [failed, skipped], "comfyui",
                          hints={"VHS_VideoCombine": "comfyui-videohelpersuite"})
    assert msg.startswith("the workflow needs node types that are not registered: VHS_VideoCombine (node 21).")
    assert ("VHS_VideoCombine comes from custom node pack 'ComfyUI-VideoHelperSuite', which failed to import: "
            "ModuleNotFoundError: No module named 'imageio_ffmpeg'; fix that (usually `pip install -r "
            "/c/custom_nodes/ComfyUI-VideoHelperSuite/requirements.txt`") in msg
    assert "may provide them" not in msg  # the hint settled it

    msg = explain_missing({"UnetLoaderGGUF": ["3"]}, [skipped], "comfyui", hints={"UnetLoaderGGUF": "city96/ComfyUI-GGUF"})
    assert "UnetLoaderGGUF comes from custom node pack 'ComfyUI-GGUF', which was not loaded " \
           "(--disable-all-custom-nodes); add --whitelist-custom-nodes ComfyUI-GGUF." in msg

    msg = explain_missing({"Foo": ["4", "5"]}, [failed], "comfyui")
    assert "Foo (node 4, 5)" in msg and "These custom node packs failed to import and may provide them: " \
        "ComfyUI-VideoHelperSuite (ModuleNotFoundError: No module named 'imageio_ffmpeg')" in msg

    msg = explain_missing({"Foo": ["4"]}, [], "comfyui", custom_node_dirs=["/c/custom_nodes"])
    assert msg.endswith("Install the node pack that provides them into /c/custom_nodes (or check the workflow "
                        "was saved with the packs you have).")
    assert "only ComfyUI's own nodes and the ZSVR pack" in explain_missing({"Foo": ["4"]}, [], "pack")


def test_runner_names_the_pack_of_an_unregistered_node(host, tmp_path, monkeypatch):
    from zsvr import run_workflow
    from zsvr.headless.comfy_boot import MissingNodeTypes, PackLoad as RunnerPackLoad

    monkeypatch.setattr(host.comfy, "packs", [*host.comfy.packs, RunnerPackLoad(
        "ComfyUI-VideoHelperSuite", "/c/custom_nodes/ComfyUI-VideoHelperSuite", False, "ImportError: cv2")])
    ui = {"nodes": [{"id": 1, "type": "ZSVR_LoadVideo", "widgets_values": ["42.mp4"]},
                    {"id": 7, "type": "VHS_VideoCombine", "properties": {"cnr_id": "comfyui-videohelpersuite"}}],
          "links": []}
    with pytest.raises(MissingNodeTypes, match=r"VHS_VideoCombine comes from custom node pack "
                                               r"'ComfyUI-VideoHelperSuite', which failed to import: ImportError: cv2"):
        run_workflow.run_batch(host.comfy, ui, [tmp_path / "a.mp4"], tmp_path / "out", progress=False)


def _wan_api(host):
    from zsvr import run_workflow

    return run_workflow, host.comfy.to_api(json.loads((PACK_DIR / "workflows" / "ZSVD rain removal - Wan 2.1.json").read_text()))


def test_the_scripts_own_set_examples_work(host, capsys):
    run_workflow, api = _wan_api(host)
    assert '--set 12.strength=10 --set "Inversion Sampler (ZSVR).skip=30"' in run_workflow.__doc__
    changes = run_workflow.apply_sets(host.comfy, api, ["12.strength=10", "Inversion Sampler (ZSVR).skip=30"])
    assert api["12"]["inputs"]["strength"] == 10.0 and api["10"]["inputs"]["skip"] == 30
    assert [(c.node_id, c.override.input) for c in changes] == [("12", "strength"), ("10", "skip")]
    with pytest.raises(SystemExit):
        run_workflow.main(["--help"])
    assert "id, title, type or display name" in " ".join(capsys.readouterr().out.split())


@pytest.mark.skipif(not REALRAIN_DIR.is_dir(), reason="shared/data/realrain not found")
def test_a_bad_set_stops_the_batch_before_anything_runs(host, tmp_path):
    from zsvr.headless.overrides import OverrideError

    run_workflow, api = _wan_api(host)
    input_dir = host.comfy.folder_paths.get_input_directory()
    before = sorted(os.listdir(input_dir))
    clip = sorted(REALRAIN_DIR.glob("*.mp4"))[0]
    with pytest.raises(OverrideError, match=r"has no input 'framecap'\. Did you mean 'frame_cap'\?"):
        run_workflow.run_batch(host.comfy, api, [clip], tmp_path / "out", sets=["ZSVR_LoadVideo.framecap=5"],
                               progress=False)
    assert sorted(os.listdir(input_dir)) == before and not (tmp_path / "out").exists()
