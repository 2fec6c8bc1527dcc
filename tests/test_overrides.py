"""``--set`` overrides (headless/overrides.py) called directly: matching, schema checks, and errors that list what works."""

from __future__ import annotations

import pytest

from zsvr.headless import overrides
from zsvr.headless.overrides import OverrideError

REGISTRY = {
    "ZSVR_LoadVideo": {"required": {
        "video": ("COMBO", {"options": ["a.mp4", "b.mp4"], "video_upload": True}),
        "frame_cap": ("INT", {"default": 0, "min": 0, "max": 1000}),
        "fit": ("COMBO", {"default": "crop", "options": ["crop", "pad", "stretch"]}),
        "best_effort": ("BOOLEAN", {"default": False}),
    }},
    "ZSVR_InversionSampler": {"required": {
        "inversion": ("ZSVR_INVERSION", {}),
        "skip": ("INT", {"default": 40, "min": 0, "max": 10000}),
        "start_noise": ("FLOAT", {"default": 0.0, "min": 0.0, "max": 1.0}),
    }},
    "KSamplerSelect": {"required": {"sampler_name": (["euler", "euler_ancestral", "ddim"],)}},
    "CLIPTextEncode": {"required": {"text": ("STRING", {"multiline": True}), "clip": ("CLIP", {})}},
}
DISPLAY = {"ZSVR_LoadVideo": "Load Video (ZSVR)", "ZSVR_InversionSampler": "Inversion Sampler (ZSVR)",
           "CLIPTextEncode": "CLIP Text Encode (Prompt)"}


def prompt():
    return {
        "1": {"class_type": "ZSVR_LoadVideo", "inputs": {"video": "a.mp4", "frame_cap": 49, "fit": "crop",
                                                         "best_effort": False}},
        "10": {"class_type": "ZSVR_InversionSampler", "inputs": {"inversion": ["9", 0], "skip": 40,
                                                                 "start_noise": 0.0}},
        "11": {"class_type": "KSamplerSelect", "inputs": {"sampler_name": "euler"}},
        "5": {"class_type": "CLIPTextEncode", "inputs": {"text": "", "clip": ["3", 0]},
              "_meta": {"title": "Null prompt"}},
        "6": {"class_type": "CLIPTextEncode", "inputs": {"text": "rain", "clip": ["3", 0]},
              "_meta": {"title": "Remove prompt"}},
    }


def run(*items, p=None):
    p = prompt() if p is None else p
    return p, overrides.apply(p, overrides.parse(items), REGISTRY.get, DISPLAY.get)


def refused(*items) -> str:
    p = prompt()
    with pytest.raises(OverrideError) as info:
        overrides.apply(p, overrides.parse(items), REGISTRY.get, DISPLAY.get)
    assert p == prompt(), "a refused --set must change nothing"
    return str(info.value)


@pytest.mark.parametrize("node", ["10", "ZSVR_InversionSampler", "Inversion Sampler (ZSVR)"])
def test_node_matched_by_id_type_or_display_name(node):
    p, changes = run(f"{node}.skip=30")
    assert p["10"]["inputs"]["skip"] == 30
    assert [(c.node_id, c.old, c.new) for c in changes] == [("10", 40, 30)]


def test_node_matched_by_title_changes_only_that_node():
    p, _ = run('Remove prompt.text=light rain, drizzle')
    assert p["6"]["inputs"]["text"] == "light rain, drizzle" and p["5"]["inputs"]["text"] == ""


def test_a_type_shared_by_two_nodes_changes_both():
    p, changes = run("CLIPTextEncode.text=fog")
    assert [p[i]["inputs"]["text"] for i in ("5", "6")] == ["fog", "fog"]
    assert sorted(c.node_id for c in changes) == ["5", "6"]


def test_node_title_with_dots_splits_at_the_last_dot():
    p = prompt()
    p["10"]["_meta"] = {"title": "Sampler v2.1"}
    p, _ = run("Sampler v2.1.skip=12", p=p)
    assert p["10"]["inputs"]["skip"] == 12


def test_unknown_node_lists_the_workflow_nodes_and_suggests():
    msg = refused("ZSVR_LoadVidoe.frame_cap=5")
    assert "no node matches 'ZSVR_LoadVidoe'" in msg
    assert "Did you mean 'ZSVR_LoadVideo'" in msg
    assert "1 (Load Video (ZSVR), ZSVR_LoadVideo)" in msg and "6 'Remove prompt'" in msg


def test_unknown_input_lists_the_widget_inputs():
    msg = refused("ZSVR_LoadVideo.framecap=5")
    assert "has no input 'framecap'" in msg and "Did you mean 'frame_cap'" in msg
    assert "Its widget inputs: video, frame_cap, fit, best_effort." in msg


def test_socket_input_is_not_settable():
    msg = refused("10.inversion=3")
    assert "'inversion'" in msg and "ZSVR_INVERSION socket" in msg and "widget values only" in msg


@pytest.mark.parametrize("item, expected", [
    ("ZSVR_LoadVideo.frame_cap=5.5", "'5.5' is not a whole number; use an integer from 0 to 1000."),
    ("ZSVR_LoadVideo.frame_cap=five", "'five' is not a whole number"),
    ("ZSVR_LoadVideo.frame_cap=true", "'true' is not a whole number"),
    ("ZSVR_LoadVideo.frame_cap=1001", "'1001' is out of range; use a value from 0 to 1000."),
    ("ZSVR_LoadVideo.frame_cap=-1", "'-1' is out of range"),
    ("10.start_noise=NaN", "'NaN' is not a finite number; use a number from 0.0 to 1.0."),
    ("10.start_noise=Infinity", "'Infinity' is not a finite number"),
    ("10.start_noise=nan", "'nan' is not a number"),
    ("10.start_noise=1.5", "'1.5' is out of range; use a value from 0.0 to 1.0."),
    ("ZSVR_LoadVideo.best_effort=yes", "'yes' is not a boolean; use true or false."),
    ("ZSVR_LoadVideo.fit=cover", "'cover' is not one of its options: crop, pad, stretch."),
    ("KSamplerSelect.sampler_name=eular", "Did you mean 'euler'"),
])
def test_values_the_schema_refuses(item, expected):
    msg = refused(item)
    assert expected in msg, msg
    assert msg.startswith(f"--set {item!r}: input "), msg


@pytest.mark.parametrize("item, node, name, value", [
    ("ZSVR_LoadVideo.frame_cap=49.0", "1", "frame_cap", 49),
    ("10.start_noise=1", "10", "start_noise", 1.0),
    ("ZSVR_LoadVideo.best_effort=True", "1", "best_effort", True),
    ("ZSVR_LoadVideo.fit=pad", "1", "fit", "pad"),
    ('ZSVR_LoadVideo.fit="stretch"', "1", "fit", "stretch"),
    ("KSamplerSelect.sampler_name=ddim", "11", "sampler_name", "ddim"),
    ("Remove prompt.text=42", "6", "text", "42"),
    ('Remove prompt.text="quoted"', "6", "text", "quoted"),
])
def test_values_the_schema_accepts_are_converted(item, node, name, value):
    p, _ = run(item)
    got = p[node]["inputs"][name]
    assert got == value and type(got) is type(value)


def test_nothing_is_applied_when_any_override_is_bad():
    p = prompt()
    with pytest.raises(OverrideError, match="frame_cap"):
        overrides.apply(p, overrides.parse(["10.skip=30", "ZSVR_LoadVideo.frame_cap=x"]), REGISTRY.get, DISPLAY.get)
    assert p["10"]["inputs"]["skip"] == 40


@pytest.mark.parametrize("item", ["nodot=5", "node.input", ".skip=5", "10.=5"])
def test_syntax_errors_show_the_expected_form(item):
    with pytest.raises(OverrideError, match=r"expected NODE\.INPUT=VALUE, e\.g\."):
        overrides.parse([item])


def test_unregistered_node_type_is_named():
    p = prompt()
    p["20"] = {"class_type": "VHS_VideoCombine", "inputs": {"frame_rate": 8}}
    with pytest.raises(OverrideError, match="not registered; install its node pack"):
        overrides.apply(p, overrides.parse(["VHS_VideoCombine.frame_rate=12"]), REGISTRY.get, DISPLAY.get)


def test_describe_says_what_changed():
    _, changes = run("10.skip=30", "Remove prompt.text=fog")
    lines = overrides.describe(changes)
    assert lines[0] == "--set 10.skip=30: node 10 (Inversion Sampler (ZSVR), ZSVR_InversionSampler) skip 40 -> 30"
    assert lines[1].endswith("text 'rain' -> 'fog'")
