"""Bad values on the real host (issue 16, item 7): NaN/inf in every FLOAT input of every ZSVR node, the cheap
checks ComfyUI runs before any node (validate_inputs), and the messages that used to mislead."""

from __future__ import annotations

import math
import os
import pathlib

import pytest
import torch

from test_host_inversion import _graph as _inv_graph, _latent

BAD_FLOATS = [float("nan"), float("inf"), float("-inf")]


def _zsvr_float_inputs(host) -> list[tuple[str, str]]:
    """(node id, input name) of every FLOAT input of every ZSVR node in the live registry."""
    found = []
    for node_id in host.zsvr_node_ids():
        declared = host.nodes.NODE_CLASS_MAPPINGS[node_id].INPUT_TYPES()
        for section in ("required", "optional"):
            for name, spec in declared.get(section, {}).items():
                if spec[0] == "FLOAT":
                    found.append((node_id, name))
    return found


def _default(spec):
    """A widget's default value as the page would send it."""
    kind, options = spec[0], (spec[1] if len(spec) > 1 else {})
    if "default" in options:
        return options["default"]
    if isinstance(kind, list):
        return kind[0]
    if kind == "COMBO":
        return options["options"][0]
    return {"INT": 0, "FLOAT": 0.0, "STRING": "", "BOOLEAN": False}[kind]


WIDGETS = ("INT", "FLOAT", "STRING", "BOOLEAN", "COMBO")


def _single_node_prompt(host, node_id: str, **values) -> dict:
    """One ZSVR node: its required widgets at their defaults (``values`` override; a list is a link), every
    required socket fed by a test Inject node (never executed when validation fails), its first output captured."""
    declared = host.nodes.NODE_CLASS_MAPPINGS[node_id].INPUT_TYPES()
    inputs, prompt = {}, {}
    for name, spec in declared.get("required", {}).items():
        if isinstance(spec[0], list) or spec[0] in WIDGETS:
            inputs[name] = _default(spec)
        else:
            prompt[f"in_{name}"] = {"class_type": "ZSVRTest_Inject", "inputs": {"key": "none"}}
            inputs[name] = [f"in_{name}", 0]
    inputs.update(values)
    prompt["n"] = {"class_type": node_id, "inputs": inputs}
    prompt["cap"] = {"class_type": "ZSVRTest_Capture", "inputs": {"value": ["n", 0], "key": "checks"}}
    return prompt


def test_every_zsvr_float_input_is_found(host):
    """The enumeration below covers the nodes that have FLOAT inputs (a guard against an empty parametrisation)."""
    found = _zsvr_float_inputs(host)
    names = {node for node, _ in found}
    assert {"ZSVR_NegativePromptEditor", "ZSVR_DDPMInvert", "ZSVR_InversionSampler", "ZSVR_EarlyStop",
            "ZSVR_AttentionSwitch", "ZSVR_SWCFA", "ZSVR_SLRTemporalAttention", "ZSVR_NoiseSharing",
            "ZSVR_TemporalConsistencyGuidance"} <= names
    assert ("ZSVR_NegativePromptEditor", "strength") in found and ("ZSVR_NoiseSharing", "lambda") in found


def test_defaults_pass_validation(host):
    """The checks refuse bad values, not every value: each node's prompt with its defaults validates."""
    host.store["none"] = None
    for node_id, _ in sorted(set(_zsvr_float_inputs(host))):
        ok, error, _, node_errors = host.execution_validate(_single_node_prompt(host, node_id))
        assert ok, (node_id, error, node_errors)


def test_nan_and_inf_in_every_float_widget_are_refused_naming_the_input(host):
    """A NaN or infinite widget value (API prompt, edited JSON) never runs: ComfyUI refuses the prompt before any
    node executes, or (lambda, whose name Python cannot take as an argument of validate_inputs) the node refuses
    it first thing when it runs. The message names the input."""
    host.store["none"] = None
    for node_id, name in _zsvr_float_inputs(host):
        for bad in BAD_FLOATS:
            result = host.run(_single_node_prompt(host, node_id, **{name: bad}))
            message = f"{result.error_message} {result.node_errors}"
            assert not result.success and "checks" not in host.captured, (node_id, name, bad)
            if f"ZSVR input '{name}'" in message:
                words = "NaN (not a number)" if math.isnan(bad) else "(infinite)"
                assert words in message or name == "lambda", (node_id, name, message)
            else:  # the host's own range check (inf beyond a finite max) also names the input
                assert ("bigger than max" in message or "smaller than min" in message) and name in message, \
                    (node_id, name, message)
            if node_id != "ZSVR_NoiseSharing":
                assert not result.valid, f"{node_id}.{name}={bad} got past validation: {message}"


def test_nan_through_a_link_is_refused_when_the_node_runs(host):
    """A value that arrives through a link is not seen by validate_inputs: each node checks its FLOAT inputs first
    thing in execute, before it touches any other input."""
    host.store["none"] = None
    host.store["nan"] = float("nan")
    for node_id, name in _zsvr_float_inputs(host):
        prompt = _single_node_prompt(host, node_id, **{name: ["bad", 0]})
        prompt["bad"] = {"class_type": "ZSVRTest_Inject", "inputs": {"key": "nan"}}
        host.captured.pop("checks", None)
        result = host.run(prompt)
        assert result.valid and not result.success, (node_id, name, result.error_message)
        assert f"ZSVR input '{name}'" in result.error_message, (node_id, name, result.error_message)
        assert result.error["exception_type"] == "ZSVR.InputError", result.error["exception_type"]


def test_ranges_are_still_enforced_and_the_window_order_is_checked_before_running(host):
    """validate_inputs takes over ComfyUI's min/max check for the inputs it names, so it checks the declared
    bounds itself; the schedule window's order is checked there too, before any node runs."""
    host.store["none"] = None
    ok, _, _, errors = host.execution_validate(_single_node_prompt(host, "ZSVR_NegativePromptEditor", strength=150.0))
    text = str(errors)
    assert not ok and "ZSVR input 'strength': is 150.0, above its maximum 100.0" in text
    ok, _, _, errors = host.execution_validate(_single_node_prompt(host, "ZSVR_EarlyStop", stop_percent=-0.5))
    assert not ok and "ZSVR input 'stop_percent': is -0.5, below its minimum 0.0" in str(errors)
    for node_id in ("ZSVR_AttentionSwitch", "ZSVR_SWCFA", "ZSVR_SLRTemporalAttention",
                    "ZSVR_TemporalConsistencyGuidance"):
        ok, _, _, errors = host.execution_validate(
            _single_node_prompt(host, node_id, start_percent=0.8, end_percent=0.2))
        assert not ok and "ZSVR input 'start_percent': (0.8) is after end_percent (0.2)" in str(errors), node_id


@pytest.mark.parametrize("node_id,blocks,valid", [
    ("ZSVR_AttentionSwitch", "0-3,15-29", True),
    ("ZSVR_AttentionSwitch", "0-99", True),  # whether block 99 exists needs the model: checked when it runs
    ("ZSVR_AttentionSwitch", "0-3,x", False),
    ("ZSVR_AttentionSwitch", "5-2", False),
    ("ZSVR_SWCFA", "output:3-11", True),
    ("ZSVR_SWCFA", "outptu", False),
    ("ZSVR_SWCFA", "input:1-x", False),
])
def test_block_lists_are_parsed_before_anything_runs(host, node_id, blocks, valid):
    host.store["none"] = None
    ok, _, _, errors = host.execution_validate(_single_node_prompt(host, node_id, blocks=blocks))
    assert ok == valid, errors
    if not valid:
        assert "ZSVR input 'blocks'" in str(errors)


def test_hunyuan_fed_conditioning_without_a_pooled_vector_says_what_to_connect(host):
    """Wan-style conditioning (UMT5: no pooled vector) into HunyuanVideo: before the fix, a bare KeyError
    'pooled_output' from deep inside the host."""
    host.store["lat"] = _latent("hunyuan")
    g = _inv_graph(host, "hunyuan", "ddpm", 2, steps=4)
    del g["null"]["inputs"]["pooled"]
    inverter_only = {k: g[k] for k in ("m", "null", "lat", "sig", "inv")}
    inverter_only["cap"] = {"class_type": "ZSVRTest_Capture", "inputs": {"value": ["inv", 0], "key": "hy_inv"}}
    result = host.run(inverter_only)
    assert not result.success and result.error["node_id"] == "inv"
    message = result.error_message
    assert "ZSVR input 'positive': has no pooled text vector, which HunyuanVideo needs" in message
    assert "DualCLIPLoader with type hunyuan_video" in message and "KeyError" not in message
    editor_only = {k: g[k] for k in ("m", "null", "gd")}
    editor_only["cap"] = {"class_type": "ZSVRTest_Capture", "inputs": {"value": ["gd", 0], "key": "hy_gd"}}
    result = host.run(editor_only)
    assert not result.success and "ZSVR input 'null': has no pooled text vector" in result.error_message
    g["null"]["inputs"]["pooled"] = 768  # with HunyuanVideo's pooled vector the same graph runs
    assert host.run(editor_only).success


def test_start_noise_before_the_inverted_steps_advises_a_start_noise_that_works(host):
    """start_noise starting before the inverter's first_step: the message gives the largest start_noise that is
    served (not "skip more", a different input), and that value then runs."""
    host.store["lat"] = _latent("wan")
    g = _inv_graph(host, "wan", "ddpm", 3, first_step=3, steps=6, capture="sn")
    g["rep"]["inputs"]["start_noise"] = 1000.0  # the noisiest finite level: step 1 (flow's step 0 is pure noise)
    result = host.run(g)
    message = result.error_message
    assert not result.success and "ZSVR input 'start_noise': starts at step 1, but the inversion was only " \
        "computed from step 3" in message
    assert "skip more" not in message
    advised = float(message.split("lower start_noise to ")[1].split(" or less")[0])
    g["rep"]["inputs"]["start_noise"] = advised
    result = host.run(g)
    assert result.success, result.error_message
    # it starts exactly at the first inverted step: the sampler runs the last 3 of the 6 steps
    assert [p for p in result.progress if p[0] == "smp"][-1] == ("smp", 3, 3)


def test_error_type_is_a_plain_name_and_articles_read_right(host):
    """ComfyUI shows ``module.qualname`` of the error: without ``__module__ = "ZSVR"`` the type would be the
    module's name (``zsvr.nodes.errors``). Also "an EarlyStopSampler", not "a"."""
    g = {"ks": {"class_type": "KSamplerSelect", "inputs": {"sampler_name": "euler_ancestral"}},
         "es": {"class_type": "ZSVR_EarlyStop", "inputs": {"sampler": ["ks", 0], "stop_step": 0, "stop_percent": 0.8}},
         "ns": {"class_type": "ZSVR_NoiseSharing", "inputs": {"noise_seed": 0, "sampler": ["es", 0], "lambda": 1.0}},
         "cap": {"class_type": "ZSVRTest_Capture", "inputs": {"value": ["ns", 1], "key": "ns"}}}
    result = host.run(g)
    assert not result.success
    assert "ZSVR input 'sampler': is an EarlyStopSampler, which has no per-step noise hook" in result.error_message
    assert result.error["exception_type"] == "ZSVR.InputError"
    # one copy of the pack: every registered node class comes from the `zsvr` package, whatever name ComfyUI
    # gave the folder's module
    assert host.pack.__name__ == "zsvr"
    assert {cls.__module__.split(".")[0] for name, cls in host.nodes.NODE_CLASS_MAPPINGS.items()
            if name.startswith("ZSVR_")} == {"zsvr"}


def test_empty_file_says_so_with_its_name_only(host):
    empty = host.input_dir / "zsvr_empty.mp4"
    empty.write_bytes(b"")
    try:
        result = host.run({"1": {"class_type": "ZSVR_LoadVideo", "inputs": {
            "video": empty.name, "start_frame": 0, "frame_cap": 0, "every_nth": 1, "width": 0, "height": 0,
            "fit": "crop", "frame_rule": "any", "size_multiple": 8, "best_effort": False, "pad_frames": False}},
            "cap": {"class_type": "ZSVRTest_Capture", "inputs": {"value": ["1", 0], "key": "empty"}}})
    finally:
        empty.unlink()
    message = result.error_message
    assert not result.success and "ZSVR input 'video': the file is empty (0 bytes): 'zsvr_empty.mp4'" in message
    assert str(host.input_dir) not in message and "Invalid data" not in message and "Errno" not in message


def _load(video: str) -> dict:
    return {"1": {"class_type": "ZSVR_LoadVideo", "inputs": {
        "video": video, "start_frame": 0, "frame_cap": 2, "every_nth": 1, "width": 0, "height": 0, "fit": "crop",
        "frame_rule": "any", "size_multiple": 8, "best_effort": False, "pad_frames": False}},
        "cap": {"class_type": "ZSVRTest_Capture", "inputs": {"value": ["1", 0], "key": "confined"}}}


def test_load_video_reads_only_inside_comfyuis_folders(host, tmp_path):
    """A server on a network must not hand out other files: an absolute path, a '..' escape, a NUL byte or a
    link that leads out of the input folder is refused at validation, naming the input; a clip in a subfolder
    of input, or annotated ``[output]``, still loads."""
    import shutil

    from zsvr.nodes import example_media

    clip = pathlib.Path(example_media.EXAMPLE_DIR) / example_media.EXAMPLE_VIDEO
    outside = tmp_path / "secret.mp4"
    shutil.copyfile(clip, outside)
    sub = host.input_dir / "zsvr_confined"
    sub.mkdir(exist_ok=True)
    shutil.copyfile(clip, sub / "ok.mp4")
    (sub / "leak.mp4").unlink(missing_ok=True)
    (sub / "leak.mp4").symlink_to(outside)
    escape = os.path.relpath(outside, host.input_dir)
    try:
        for name, says in ((str(outside), "is an absolute path"), (escape, "steps out of its folder with '..'"),
                           ("zsvr_confined/ok.mp4\0", "holds a NUL byte"),
                           ("zsvr_confined/leak.mp4", "leads out of ComfyUI's input, output and temp folders")):
            result = host.run(_load(name))
            assert not result.valid and "ZSVR input 'video'" in result.error_message, name
            assert says in result.error_message, (name, result.error_message)
        good = host.run(_load("zsvr_confined/ok.mp4"))
        assert good.success, good.error_message
        assert host.captured.pop("confined").shape[0] == 2
    finally:
        shutil.rmtree(sub)
