"""Writes the shipped UI-format workflows in ``workflows/`` from a short description of each graph.

UI workflows store widget values by position; writing them by hand invites
off-by-one mistakes (seed control values, upload buttons). This builder asks
the live node registry for each node's widget order (the same rule as
``nodes/workflow_format.py``), so the files are right by construction, and a
host test checks that the committed files are exactly what it produces.

Regenerate (from the pack folder, with a ComfyUI checkout):

    COMFYUI_PATH=../ComfyUI python tests/workflow_builder.py
"""

from __future__ import annotations

import json
import pathlib

PACK_DIR = pathlib.Path(__file__).resolve().parent.parent
WORKFLOW_DIR = PACK_DIR / "workflows"

# ZSVD's eight rain phrases are not reproduced here; the paper found "light rain" the best single phrase.
RAIN_PROMPT = "light rain"


class Graph:
    def __init__(self, registry):
        self.registry = registry  # class_type -> INPUT_TYPES() dict, and RETURN_TYPES via output_types
        self.nodes: list[dict] = []
        self.links: list[list] = []

    def add(self, class_type: str, pos, widgets: dict | None = None, title: str | None = None, size=(320, 130)):
        types = self.registry.input_types(class_type)
        outputs = self.registry.output_types(class_type)
        widgets = dict(widgets or {})
        values = []
        for name, width in self.registry.widget_slots(types):
            spec = {**types.get("required", {}), **types.get("optional", {})}[name]
            value = widgets.pop(name) if name in widgets else self.registry.default(spec)
            values.append(value)
            if width == 2:
                opts = spec[1] if len(spec) > 1 else {}
                values.append("image" if any(opts.get(f) for f in ("image_upload", "video_upload", "audio_upload"))
                              else "fixed")
        if widgets:
            raise KeyError(f"{class_type} has no widget inputs {sorted(widgets)}")
        node = {
            "id": len(self.nodes) + 1,
            "type": class_type,
            "pos": list(pos),
            "size": list(size),
            "flags": {},
            "order": len(self.nodes),
            "mode": 0,
            "inputs": [],
            "outputs": [{"name": name, "type": kind, "links": [], "slot_index": i}
                        for i, (name, kind) in enumerate(outputs)],
            "properties": {"Node name for S&R": class_type},
            "widgets_values": values,
        }
        if title:
            node["title"] = title
        self.nodes.append(node)
        return node

    def connect(self, src: dict, slot: int, dst: dict, name: str):
        types = self.registry.input_types(dst["type"])
        spec = {**types.get("required", {}), **types.get("optional", {})}[name]
        kind = src["outputs"][slot]["type"]
        link_id = len(self.links) + 1
        entry = {"name": name, "type": kind if self.registry.is_widget(spec) else spec[0], "link": link_id}
        if self.registry.is_widget(spec):
            entry["widget"] = {"name": name}
        dst["inputs"].append(entry)
        src["outputs"][slot]["links"].append(link_id)
        self.links.append([link_id, src["id"], slot, dst["id"], len(dst["inputs"]) - 1, kind])

    def note(self, text: str, pos, size=(420, 220), title="Note"):
        node = {"id": len(self.nodes) + 1, "type": "Note", "pos": list(pos), "size": list(size), "flags": {},
                "order": len(self.nodes), "mode": 0, "inputs": [], "outputs": [], "title": title,
                "properties": {}, "widgets_values": [text], "color": "#432", "bgcolor": "#653"}
        self.nodes.append(node)
        return node

    def to_json(self) -> dict:
        return {
            "last_node_id": len(self.nodes),
            "last_link_id": len(self.links),
            "nodes": self.nodes,
            "links": self.links,
            "groups": [],
            "config": {},
            "extra": {"ds": {"scale": 0.6, "offset": [0, 0]}},
            "version": 0.4,
        }


def zsvd_wan21(g: Graph) -> Graph:
    """ZSVD deraining on Wan 2.1 T2V 1.3B (the model ComfyUI artists have)."""
    load = g.add("ZSVR_LoadVideo", (0, 0), {"video": "rain.mp4", "frame_cap": 49, "width": 832, "height": 480,
                                           "frame_rule": "4k+1", "size_multiple": 16}, size=(320, 380))
    unet = g.add("UNETLoader", (0, 420), {"unet_name": "wan2.1_t2v_1.3B_fp16.safetensors"})
    clip = g.add("CLIPLoader", (0, 580), {"clip_name": "umt5_xxl_fp8_e4m3fn_scaled.safetensors", "type": "wan"})
    vae = g.add("VAELoader", (0, 740), {"vae_name": "wan_2.1_vae.safetensors"})
    null = g.add("CLIPTextEncode", (380, 420), {"text": ""}, title="Null prompt (keep empty)")
    remove = g.add("CLIPTextEncode", (380, 600), {"text": RAIN_PROMPT}, title="Remove prompt")
    g.connect(clip, 0, null, "clip")
    g.connect(clip, 0, remove, "clip")
    enc = g.add("VAEEncode", (380, 0))
    g.connect(load, 0, enc, "pixels")
    g.connect(vae, 0, enc, "vae")
    sched = g.add("BasicScheduler", (380, 160), {"scheduler": "simple", "steps": 50, "denoise": 1.0})
    g.connect(unet, 0, sched, "model")
    inv = g.add("ZSVR_DDPMInvert", (760, 0), {"cfg": 1.0, "seed": 0, "step_rule": "ddpm", "first_step": 20},
                size=(340, 260))
    g.connect(unet, 0, inv, "model")
    g.connect(null, 0, inv, "positive")
    g.connect(null, 0, inv, "negative")
    g.connect(enc, 0, inv, "latent")
    g.connect(sched, 0, inv, "sigmas")
    rep = g.add("ZSVR_InversionSampler", (1140, 0), {"skip": 20, "start_noise": 0.0})
    g.connect(inv, 0, rep, "inversion")
    switch = g.add("ZSVR_AttentionSwitch", (760, 300), {"blocks": "0-3,15-29"})
    g.connect(unet, 0, switch, "model")
    editor = g.add("ZSVR_NegativePromptEditor", (1140, 300), {"strength": 15.0})
    g.connect(switch, 0, editor, "model")
    g.connect(null, 0, editor, "null")
    g.connect(remove, 0, editor, "remove")
    smp = g.add("SamplerCustomAdvanced", (1500, 0), size=(320, 330))
    g.connect(rep, 0, smp, "noise")
    g.connect(editor, 0, smp, "guider")
    g.connect(rep, 1, smp, "sampler")
    g.connect(rep, 2, smp, "sigmas")
    g.connect(enc, 0, smp, "latent_image")
    dec = g.add("VAEDecode", (1860, 0))
    g.connect(smp, 0, dec, "samples")
    g.connect(vae, 0, dec, "vae")
    video = g.add("CreateVideo", (1860, 160))
    g.connect(dec, 0, video, "images")
    g.connect(load, 1, video, "fps")
    save = g.add("SaveVideo", (2220, 0), {"filename_prefix": "zsvr/derained"}, size=(420, 380))
    g.connect(video, 0, save, "video")
    g.note(
        "ZSVD deraining on Wan 2.1 1.3B\n\n"
        "Models: diffusion_models/wan2.1_t2v_1.3B_fp16.safetensors, text_encoders/umt5_xxl_fp8_e4m3fn_scaled"
        ".safetensors, vae/wan_2.1_vae.safetensors.\n\n"
        "What to tweak:\n"
        "- skip (Inversion Sampler): steps skipped before editing. More keeps more of the video, less edits more. "
        "Keep first_step of the inversion at or below it (0 serves any skip).\n"
        "- strength (Negative Prompt Editor): 1 reproduces the input; the paper uses 15 (on CogVideoX).\n"
        "- blocks (Attention Switch): where the rain prompt's text is swapped for the null prompt's. "
        "The paper's choice 0-3,15-29 is for 30-block models (Wan 1.3B has 30 too).\n"
        "- Remove prompt: the paper found \"light rain\" the best single phrase.\n\n"
        "Paper defaults (CogVideoX-2b): 100 steps, skip 40, strength 15, blocks 0-3,15-29.",
        (760, 560), size=(520, 330), title="ZSVD: what to tweak")
    return g


WORKFLOWS = {
    "zsvd_derain_wan21.json": zsvd_wan21,
}


class Registry:
    """The live node registry seen the way the frontend sees it."""

    def __init__(self, host_nodes, workflow_format):
        self.nodes = host_nodes
        self.wf = workflow_format

    def input_types(self, class_type):
        return self.nodes.NODE_CLASS_MAPPINGS[class_type].INPUT_TYPES()

    def output_types(self, class_type):
        cls = self.nodes.NODE_CLASS_MAPPINGS[class_type]
        kinds = list(cls.RETURN_TYPES)
        names = list(getattr(cls, "RETURN_NAMES", None) or kinds)
        return [(n, str(k)) for n, k in zip(names, kinds)]

    def widget_slots(self, types):
        return self.wf.widget_slots(types)

    def is_widget(self, spec):
        return self.wf.is_widget(spec)

    def default(self, spec):
        return self.wf._default(spec)


def build_all(host_nodes, workflow_format) -> dict[str, dict]:
    registry = Registry(host_nodes, workflow_format)
    return {name: make(Graph(registry)).to_json() for name, make in WORKFLOWS.items()}


def dump(workflow: dict) -> str:
    return json.dumps(workflow, indent=1, ensure_ascii=False) + "\n"


if __name__ == "__main__":
    import importlib
    import os
    import sys

    sys.path.insert(0, str(PACK_DIR))
    from run_workflow import Host

    host = Host(pathlib.Path(os.environ.get("COMFYUI_PATH", PACK_DIR.parent.parent)).resolve(), cpu=True)
    wf = importlib.import_module(f"{host.pack.__name__}.nodes.workflow_format")
    for name, data in build_all(host.nodes, wf).items():
        (WORKFLOW_DIR / name).write_text(dump(data))
        print("wrote", WORKFLOW_DIR / name)
