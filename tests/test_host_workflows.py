"""The shipped workflows against the live host: structure, widget values, conversion, end-to-end runs."""

from __future__ import annotations

import importlib
import io
import json
import pathlib
import zlib

import pytest

import workflow_builder
from host_harness import PACK_DIR, REALRAIN_DIR, rel_error

WORKFLOWS = sorted((PACK_DIR / "workflows").glob("*.json"))

# What the tests put in place of each workflow's model files and real-size settings.
# The attention switch covers some of the tiny models' blocks, never all: switched over every block the edit is
# the reconstruction (strength would change nothing), so block 0 of the tiny Wan's 2 and 0-1 of the tiny
# CogVideoX's 3 (test_workflow_converts_validates_and_runs_on_tiny_models asserts strength changes the output).
WAN_FILES = {"UNETLoader": ("unet_name", "wan"), "VAELoader": ("vae_name", "wan_vae")}
SD15_FILES = {"CheckpointLoaderSimple": ("ckpt_name", "sd15_ckpt"),
              "ControlNetLoader": ("control_net_name", "controlnet_sd15")}


def _tiny_zsvd(files: dict, *, video: dict | None = None, steps: int = 6, skip: int = 2, blocks: str = "0",
               text_width: int | str = 4096, more: dict | None = None, **entry) -> dict:
    """The TINY entry of a ZSVD workflow: its model ``files``; Load Video at ``video`` (5 frames of 32x32 unless
    given); a ``steps``-step schedule whose inversion starts at step ``skip`` (first_step) and whose replay skips
    as many; the attention switch over ``blocks``; ``more`` settings of other nodes (by class or title); the
    text conditioning's ``text_width``; ``entry``: further keys of the entry (``models``)."""
    return {
        "files": dict(files),
        "settings": {
            "ZSVR_LoadVideo": video or {"frame_cap": 5, "width": 32, "height": 32},
            **(more or {}),
            "BasicScheduler": {"steps": steps},
            "ZSVR_DDPMInvert": {"first_step": skip},
            "ZSVR_InversionSampler": {"skip": skip},
            "ZSVR_AttentionSwitch": {"blocks": blocks},
        },
        "text_width": text_width,
        **entry,
    }


TINY = {
    "ZSVD rain removal - Wan 2.1.json": _tiny_zsvd(WAN_FILES),
    # frame_cap stays 0: the whole 49-frame clip (13 latent frames) in windows of 6 latent frames sharing 3,
    # and the tiled VAE in pieces of 16 frames, so windows and temporal tiles are both exercised
    "ZSVD rain removal (whole long clip) - Wan 2.1.json": _tiny_zsvd(
        WAN_FILES, video={"width": 32, "height": 32},
        more={"WanContextWindowsManual": {"context_length": 21, "context_overlap": 9},
              "VAEEncodeTiled": {"temporal_size": 16, "temporal_overlap": 4},
              "VAEDecodeTiled": {"temporal_size": 16, "temporal_overlap": 4}}),
    # node titles: the two experts' loaders differ; the tiny pair (two random Wan 2.1-architecture models)
    "ZSVD rain removal - Wan 2.2 14B.json": _tiny_zsvd(
        {"High-noise expert": ("unet_name", "wan"), "Low-noise expert": ("unet_name", "wan_low"),
         "VAELoader": ("vae_name", "wan_vae")}),
    # the tiny WAN22_T2V (48-channel latent) and the random full-size Wan 2.2 VAE, written on first use
    "ZSVD rain removal - Wan 2.2 5B.json": _tiny_zsvd(
        {"UNETLoader": ("unet_name", "wan22"), "VAELoader": ("vae_name", "wan22_vae")}, models="wan22"),
    "ZSVD rain removal (paper settings) - CogVideoX-2b.json": _tiny_zsvd(
        {"ZSVR_LoadCogVideoX": ("model_folder", "folder:" + "tiny_cogvideox_wf")},
        video={"frame_cap": 9, "width": 64, "height": 64}, steps=10, skip=4, blocks="0-1", text_width="cogvideox"),
    "ZVRD video restoration (SLR) - SD1.5.json": {
        "files": dict(SD15_FILES),
        "settings": {
            "ZSVR_LoadVideo": {"frame_cap": 4, "width": 32, "height": 32},
            "BasicScheduler": {"steps": 4},
        },
        "text_width": None,
    },
    "TDM video restoration (SW-CFA) - SD1.5.json": {
        # the tiny checkpoint carries a random full-size CLIP-L, so CLIPTextEncode runs for real (text_width None)
        "files": dict(SD15_FILES),
        "settings": {
            "ZSVR_LoadVideo": {"frame_cap": 5, "width": 32, "height": 32},
            "Inversion schedule": {"steps": 3},  # node titles: the two BasicSchedulers differ
            "Sampling schedule": {"steps": 5},
        },
        "text_width": None,
    },
}


@pytest.fixture(scope="module")
def wf(host):
    import tiny_models

    cog = host.models_dir / "diffusers" / "tiny_cogvideox_wf"
    if not (cog / "transformer" / "config.json").is_file():
        tiny_models.write_tiny_cogvideox(cog)
    return importlib.import_module(f"{host.pack.__name__}.headless.workflow_format")


def _input_types(host):
    def get(class_type):
        cls = host.nodes.NODE_CLASS_MAPPINGS.get(class_type)
        return None if cls is None else cls.INPUT_TYPES()
    return get


def test_every_workflow_is_listed_with_tiny_substitutes():
    assert WORKFLOWS, "no workflows shipped"
    assert {p.name for p in WORKFLOWS} == set(TINY)


def test_committed_workflows_are_what_the_builder_writes(host, wf):
    built = workflow_builder.build_all(host.nodes, wf)
    assert set(built) == {p.name for p in WORKFLOWS}
    for path in WORKFLOWS:
        assert path.read_text() == workflow_builder.dump(built[path.name]), \
            f"{path.name} is stale: run `COMFYUI_PATH=... python tests/workflow_builder.py`"


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_workflow_nodes_and_links_match_the_registry(host, path):
    from comfy_execution.validation import validate_node_input

    data = json.loads(path.read_text())
    nodes = {n["id"]: n for n in data["nodes"]}
    for node in nodes.values():
        assert node["type"] in host.nodes.NODE_CLASS_MAPPINGS or node["type"] in ("Note", "MarkdownNote"), node["type"]
    assert any(n["type"] == "Note" for n in nodes.values()), "every workflow carries a Note on what to tweak"
    for link_id, src, src_slot, dst, dst_slot, kind in data["links"]:
        src_cls = host.nodes.NODE_CLASS_MAPPINGS[nodes[src]["type"]]
        out_type = src_cls.RETURN_TYPES[src_slot]
        dst_input = nodes[dst]["inputs"][dst_slot]
        assert dst_input["link"] == link_id
        spec = {**(cls := host.nodes.NODE_CLASS_MAPPINGS[nodes[dst]["type"]]).INPUT_TYPES().get("required", {}),
                **cls.INPUT_TYPES().get("optional", {})}[dst_input["name"]]
        in_type = "COMBO" if isinstance(spec[0], list) else spec[0]
        assert validate_node_input(out_type, in_type), f"link {link_id}: {out_type} -> {in_type}"
        assert kind == out_type
    # ends in a video output with the source fps
    saves = [n for n in nodes.values() if n["type"] == "SaveVideo"]
    assert saves
    fps_links = [l for l in data["links"] if nodes[l[3]]["type"] == "CreateVideo" and
                 nodes[l[3]]["inputs"][l[4]]["name"] == "fps"]
    assert fps_links and nodes[fps_links[0][1]]["type"] == "ZSVR_LoadVideo" and fps_links[0][2] == 1


def _substitute_files(host, prompt: dict, tiny: dict) -> dict:
    if tiny.get("models") == "wan22":
        from host_harness import wan22_models

        wan22_models(host)
    for node in prompt.values():
        ct = node["class_type"]
        title = node.get("_meta", {}).get("title")
        found = tiny["files"].get(title) or tiny["files"].get(ct)
        if found:
            key, model = found
            node["inputs"][key] = model[len("folder:"):] if model.startswith("folder:") else host.models[model].name
        if ct == "ZSVR_LoadVideo":
            node["inputs"]["video"] = "42.mp4"
        if ct == "CLIPLoader":  # no UMT5/CLIP weights here: a placeholder name is enough to validate
            placeholder = host.models_dir / "text_encoders" / node["inputs"]["clip_name"]
            placeholder.touch()
    return prompt


def _tiny_run_prompt(prompt: dict, tiny: dict) -> dict:
    for node_id, node in list(prompt.items()):
        ct = node["class_type"]
        node["inputs"].update(tiny["settings"].get(ct, {}))
        node["inputs"].update(tiny["settings"].get(node.get("_meta", {}).get("title"), {}))
        if ct == "CLIPTextEncode" and tiny["text_width"]:
            import tiny_models

            width = tiny_models.COGVIDEOX_TEXT_DIM if tiny["text_width"] == "cogvideox" else tiny["text_width"]
            text = node["inputs"]["text"]
            prompt[node_id] = {"class_type": "ZSVRTest_RandomConditioning", "inputs": {
                "seed": zlib.crc32(text.encode()) % 1000, "tokens": 6, "width": width, "scale": 1.0}}
        elif ct in ("CLIPLoader", "T5TokenizerOptions") and tiny["text_width"]:
            del prompt[node_id]
    return prompt


@pytest.mark.skipif(not REALRAIN_DIR.is_dir(), reason="shared/data/realrain not found")
@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_workflow_converts_validates_and_runs_on_tiny_models(host, wf, path):
    data = json.loads(path.read_text())
    tiny = TINY[path.name]
    prompt = _substitute_files(host, wf.ui_to_api(data, _input_types(host)), tiny)
    ok, err, outputs, node_errors = host.execution_validate(prompt)
    assert ok, (err, node_errors)  # every widget value of the shipped file is accepted by its schema
    run_prompt = _tiny_run_prompt(prompt, tiny)
    edit = _capture_edit(run_prompt, f"{path.stem}/shipped")
    result = host.run(run_prompt)
    assert result.success, result.error_message
    saved = [item for out in result.outputs.values() for item in (out or {}).get("images", [])]
    assert saved, result.outputs
    video = host.work_dir / "output" / saved[0]["subfolder"] / saved[0]["filename"]
    assert video.is_file() and video.stat().st_size > 0
    if edit is not None:
        _assert_strength_edits_and_1_reconstructs(host, run_prompt, edit, path.stem)


# Strength 15 against strength 1 moves the tiny models' final latent by 2.8 (CogVideoX, blocks 0-1 of 3) to 36
# (Wan 2.1 long clip, block 0 of 2) at its most-changed element (measured; the test prints it), while strength 1
# reconstructs to ~1e-5 relative. A broken edit (strength ignored, or the switch over every block) moves it by 0.
EDIT_FLOOR = 0.5


def _capture_edit(prompt: dict, key: str) -> dict | None:
    """For a ZSVD workflow: capture the encoder's latent and the sampler's output under ``key``; return where the
    strength and the step rule are (None for other workflows)."""
    editor = next((i for i, n in prompt.items() if n["class_type"] == "ZSVR_NegativePromptEditor"), None)
    if editor is None:
        return None
    sampler = next(i for i, n in prompt.items() if n["class_type"] == "SamplerCustomAdvanced")
    encoder = next(i for i, n in prompt.items() if n["class_type"] in ("VAEEncode", "VAEEncodeTiled"))
    invert = next(i for i, n in prompt.items() if n["class_type"] == "ZSVR_DDPMInvert")
    replay = next(i for i, n in prompt.items() if n["class_type"] == "ZSVR_InversionSampler")
    prompt["cap_edit"] = {"class_type": "ZSVRTest_Capture", "inputs": {"value": [sampler, 0], "key": f"{key}/out"}}
    prompt["cap_latent"] = {"class_type": "ZSVRTest_Capture", "inputs": {"value": [encoder, 0], "key": f"{key}/in"}}
    return {"editor": editor, "invert": invert, "replay": replay, "key": key}


def _assert_strength_edits_and_1_reconstructs(host, prompt: dict, edit: dict, name: str) -> None:
    """Item 4 of issue 26: the workflow's own strength (15) against strength 1, both on the tiny models with the
    switch over some blocks. The edit must move the latent (max abs difference above EDIT_FLOOR); strength 1
    must reconstruct within 1e-4 relative (the tolerance of test_host_inversion and test_host_attention_switch): the
    encoded latent for rule ddpm, or for rule zsvd (whose last step is the prediction there, not the latent) the
    replay from the last step (as test_host_cogvideox's test_invert_then_replay_reproduces_the_latent)."""
    import copy

    strength = prompt[edit["editor"]]["inputs"]["strength"]
    assert strength > 1, strength
    shipped = host.captured[edit["key"] + "/out"]["samples"]
    latent = host.captured[edit["key"] + "/in"]["samples"]

    def rerun(tag, changes):
        p = copy.deepcopy(prompt)
        for node_id in [i for i, n in p.items() if n["class_type"] in ("SaveVideo", "CreateVideo")]:
            del p[node_id]  # only the sampler's latent is compared: no decode, no file
        del p["cap_latent"]
        p["cap_edit"]["inputs"]["key"] = f"{name}/{tag}"
        for (node, field), value in changes.items():
            p[edit[node]]["inputs"][field] = value
        result = host.run(p)
        assert result.success, result.error_message
        return host.captured[f"{name}/{tag}"]["samples"]

    reconstruction = rerun("strength1", {("editor", "strength"): 1.0})
    moved = float((shipped - reconstruction).abs().max())
    rule = prompt[edit["invert"]]["inputs"]["step_rule"]
    if rule == "zsvd":
        steps = next(n for n in prompt.values() if n["class_type"] == "BasicScheduler")["inputs"]["steps"]
        reference = rerun("last", {("editor", "strength"): 1.0, ("replay", "skip"): steps - 1})
    else:
        reference = latent
    error = rel_error(reconstruction, reference)
    print(f"{name}: strength {strength:g} vs 1: max abs difference {moved:.3g}; strength 1 vs the reconstruction "
          f"({rule}): relative error {error:.3g}")
    assert moved > EDIT_FLOOR, f"strength {strength:g} gives the reconstruction back (max abs difference {moved:.3g})"
    assert error < 1e-4, f"strength 1 does not reconstruct: relative error {error:.3g}"


def test_converter_handles_core_template_rules(host, wf):
    """Seed control values, upload buttons, bypass, mute, reroute and primitive nodes, per the frontend."""
    ui = {
        "nodes": [
            {"id": 1, "type": "ZSVR_LoadVideo", "mode": 0, "inputs": [],
             "widgets_values": ["42.mp4", 2, 9, 1, 64, 48, "pad", "any", 8, False, False, "image"],
             "outputs": [{"name": "images", "type": "IMAGE", "links": [1]}]},
            {"id": 2, "type": "Reroute", "mode": 0, "inputs": [{"name": "", "type": "*", "link": 1}],
             "outputs": [{"name": "", "type": "IMAGE", "links": [2]}]},
            {"id": 3, "type": "ImageInvert", "mode": 4, "inputs": [{"name": "image", "type": "IMAGE", "link": 2}],
             "outputs": [{"name": "IMAGE", "type": "IMAGE", "links": [3]}]},
            {"id": 4, "type": "RandomNoise", "mode": 0,
             "inputs": [{"name": "noise_seed", "type": "INT", "link": 4, "widget": {"name": "noise_seed"}}],
             "widgets_values": [5, "randomize"], "outputs": [{"name": "NOISE", "type": "NOISE", "links": []}]},
            {"id": 5, "type": "PrimitiveNode", "mode": 0, "inputs": [],
             "outputs": [{"name": "INT", "type": "INT", "links": [4]}], "widgets_values": [77, "fixed"]},
            {"id": 6, "type": "Note", "mode": 0, "widgets_values": ["hello"]},
            {"id": 7, "type": "ImageInvert", "mode": 2, "inputs": [{"name": "image", "type": "IMAGE", "link": None}],
             "outputs": [{"name": "IMAGE", "type": "IMAGE", "links": [5]}]},
            {"id": 8, "type": "PreviewImage", "mode": 0, "inputs": [{"name": "images", "type": "IMAGE", "link": 3}]},
            {"id": 9, "type": "PreviewImage", "mode": 0, "inputs": [{"name": "images", "type": "IMAGE", "link": 5}]},
        ],
        "links": [[1, 1, 0, 2, 0, "IMAGE"], [2, 2, 0, 3, 0, "IMAGE"], [3, 3, 0, 8, 0, "IMAGE"],
                  [4, 5, 0, 4, 0, "INT"], [5, 7, 0, 9, 0, "IMAGE"]],
    }
    api = wf.ui_to_api(ui, _input_types(host))
    assert set(api) == {"1", "4", "8", "9"}
    assert api["1"]["inputs"] == {"video": "42.mp4", "start_frame": 2, "frame_cap": 9, "every_nth": 1, "width": 64,
                                  "height": 48, "fit": "pad", "frame_rule": "any", "size_multiple": 8,
                                  "best_effort": False, "pad_frames": False,
                                  "shot_threshold": 0.25}  # saved before it was appended: its default, not "image"
    assert api["8"]["inputs"]["images"] == ["1", 0]  # through the reroute and the bypassed node
    assert api["4"]["inputs"]["noise_seed"] == 77  # the primitive's value
    assert "images" not in api["9"]["inputs"]  # its source is muted
    with pytest.raises(wf.WorkflowError, match="NoSuchNode"):
        wf.ui_to_api({"nodes": [{"id": 1, "type": "NoSuchNode"}], "links": []}, _input_types(host))


@pytest.mark.skipif(not REALRAIN_DIR.is_dir(), reason="shared/data/realrain not found")
def test_runner_processes_realrain_clips_past_a_broken_file(host, wf, tmp_path):
    """run_workflow.run_batch on two real clips with a broken file between them: each clip is one full run
    of the tiny Wan workflow (5 frames out), the broken file fails alone and the batch goes on after it.
    The error names the user's file (not the staged copy), no staged copy stays in ComfyUI's input folder,
    and the console shows every node by name, once, with the sampler's bar ending at 100 %."""
    from zsvr import run_workflow

    path = PACK_DIR / "workflows" / "ZSVD rain removal - Wan 2.1.json"
    tiny = TINY[path.name]
    data = json.loads(path.read_text())
    prompt = _tiny_run_prompt(_substitute_files(host, wf.ui_to_api(data, _input_types(host)), tiny), tiny)
    videos = sorted(REALRAIN_DIR.glob("*.mp4"))[:2]  # the runner does the same for every clip: two suffice
    bad = tmp_path / "broken.mp4"
    bad.write_bytes(b"not a video")
    runner_host = host.comfy  # the runner's own boot, already booted by the harness
    screen = io.StringIO()
    reporter = run_workflow.console.ConsoleReporter(
        run_workflow.console.node_names(prompt, runner_host.display_name), stream=screen, tty=False)
    rows = run_workflow.run_batch(runner_host, prompt, [videos[0], bad, videos[1]], host.work_dir / "output",
                                  reporter=reporter)
    table = run_workflow.format_table(rows)
    print(table)
    staged = sorted(pathlib.Path(runner_host.folder_paths.get_input_directory()).glob("zsvr_batch_*"))
    assert not staged, f"staged copies left in ComfyUI's input folder: {staged}"  # after success and failure
    assert str(bad) in rows[1]["error"] and "zsvr_batch_" not in rows[1]["error"], rows[1]["error"]
    lines = screen.getvalue().splitlines()
    assert [line for line in lines if line.startswith("[")] == [
        f"[1/3] {videos[0].name}", "[2/3] broken.mp4", f"[3/3] {videos[1].name}"]
    assert lines.count("  Load Video (ZSVR): reading the video") == 3  # by name, once per clip
    assert "  VAE Encode: encoding frames (VAE)" in lines and "  Load Diffusion Model: loading the model" in lines
    assert sum(line.startswith("  FAILED after ") and str(bad) in line for line in lines) == 1
    assert lines.count("    SamplerCustomAdvanced: [####################] 4/4 100%") == 2  # the two good clips
    assert not any(line.startswith("  node ") for line in lines), screen.getvalue()
    assert all(a != b for a, b in zip(lines, lines[1:])), screen.getvalue()  # nothing printed twice
    assert len(videos) == 2 and [r["video"] for r in rows] == [videos[0].name, "broken.mp4", videos[1].name]
    assert rows[0]["ok"] and rows[2]["ok"], table  # the clip after the failure still ran
    assert rows[0]["frames"] == rows[2]["frames"] == 5, table
    assert not rows[1]["ok"] and "broken" in (rows[1]["error"] or "") + table
    cells = [line.split()[1:3] for line in table.splitlines()[1:4]]  # status and frames of each row
    assert cells == [["ok", "5"], ["FAILED", "-"], ["ok", "5"]], table
    assert table.splitlines()[-1] == "2 ok, 1 failed", table
