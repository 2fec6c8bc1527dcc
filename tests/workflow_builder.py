"""Writes the shipped UI-format workflows in ``workflows/`` from a short description of each graph.

UI workflows store widget values by position; writing them by hand invites
off-by-one mistakes (seed control values, upload buttons). This builder asks
the live node registry for each node's widget order (the same rule as
``headless/workflow_format.py``), so the files are right by construction, and a
host test checks that the committed files are exactly what it produces.

Regenerate (from the pack folder, with a ComfyUI checkout):

    COMFYUI_PATH=../ComfyUI python tests/workflow_builder.py
"""

from __future__ import annotations

import json
import pathlib

PACK_DIR = pathlib.Path(__file__).resolve().parent.parent
WORKFLOW_DIR = PACK_DIR / "workflows"

# The paper found "light rain" the best single phrase; the official script uses eight phrases.
RAIN_PROMPT = "light rain"
ZSVD_OFFICIAL_RAIN_PROMPT = "heavy rain, light rain, drizzle, sprinkle, shower, raindrops, rainstorm, streak"
# The pack's example clip (example_media/, listed by ZSVR_LoadVideo), so a workflow's first Run works as shipped.
VIDEO_FILE = "zsvr_example_rain.mp4"


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
                values.append("fixed")  # seed control: keep the inversion cached between runs
        if self.registry.has_upload_button(types):
            values.append("image")  # the upload button's value comes last
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
            "extra": {},  # no saved view: the frontend fits the whole graph into the window on open
            "version": 0.4,
        }


# Layout. Nodes sit in columns read left to right (inputs, conditioning, the method, output); the last column
# stays short, as the page's minimap covers the window's bottom-right corner. The frontend
# fits the whole graph into the window when a workflow opens (its files carry no saved view), so a compact
# graph opens large enough for its text to be drawn (above the frontend's level-of-detail zoom) on a
# 1920x1080 screen; tests/test_browser_workflows.py checks that nothing overlaps or hides under the toolbars.
TITLE_H = 30  # the frontend draws a node's title bar above its pos
GAP = 40  # between a node's bottom and the title bar of the node below, and between columns
VIDEO_PREVIEW = 260  # room under Load Video for the preview the page adds once a clip is picked


def columns(*widths: int) -> list[int]:
    """The x of each column, from the widest node of each (GAP between columns)."""
    xs, x = [], 0
    for w in widths:
        xs.append(x)
        x += w + GAP
    return xs


def stack(x: int, y: int, *nodes: dict) -> int:
    """Place ``nodes`` top-down in one column at ``x`` from ``y``; returns the y below the last one."""
    for node in nodes:
        node["pos"] = [x, y]
        y += node["size"][1] + GAP + TITLE_H
    return y


def arrange(load: dict, models: list[dict], *rest: list[dict]) -> tuple[int, int]:
    """The shipped layout: Load Video alone in the first column (room for its preview below), ``models`` in the
    second, then one column per list in ``rest``, each as wide as its widest node. Returns where the workflow's
    Note goes: under the first two columns."""
    cols = [[load], models, *rest]
    x = columns(*(max(n["size"][0] for n in col) for col in cols))
    for xi, col in zip(x[2:], rest):
        stack(xi, 0, *col)
    return x[0], max(stack(x[0], 0, load) + VIDEO_PREVIEW, stack(x[1], 0, *models))


# core tiled VAE nodes at their own defaults (512 px tiles overlapping 64 px; 64 frames overlapping 8 for video VAEs)
VAE_TILES = {"tile_size": 512, "overlap": 64, "temporal_size": 64, "temporal_overlap": 8}


def _sample_decode_save(g: Graph, noise, guider, sampler, sigmas, latent, vae, load, prefix: str, tiled=False,
                        pad=None):
    """SamplerCustomAdvanced -> VAEDecode (``tiled``: VAEDecodeTiled) -> CreateVideo (the loader's fps and audio)
    -> SaveVideo; returns those four nodes (for the caller to place).

    Every input is a (node, output slot) pair; ``load`` is the ZSVR_LoadVideo node. ``pad``: the ZSVR_PadFrames
    node the frames went through; a ZSVR_TrimPadding node between the decoder and CreateVideo then cuts the padding
    off (returned after the four).
    """
    smp = g.add("SamplerCustomAdvanced", (0, 0), size=(320, 230))
    g.connect(*noise, smp, "noise")
    g.connect(*guider, smp, "guider")
    g.connect(*sampler, smp, "sampler")
    g.connect(*sigmas, smp, "sigmas")
    g.connect(*latent, smp, "latent_image")
    dec = g.add("VAEDecodeTiled", (0, 0), VAE_TILES, size=(320, 160)) if tiled else \
        g.add("VAEDecode", (0, 0), size=(320, 60))
    g.connect(smp, 0, dec, "samples")
    g.connect(*vae, dec, "vae")
    trim = None
    if pad is not None:  # the decoded clip back to the source's frame count
        trim = g.add("ZSVR_TrimPadding", (0, 0), size=(320, 80))
        g.connect(dec, 0, trim, "images")
        g.connect(pad, 1, trim, "frame_count")
    video = g.add("CreateVideo", (0, 0), size=(320, 100))
    g.connect(dec if trim is None else trim, 0, video, "images")
    g.connect(load, 1, video, "fps")
    g.connect(load, 3, video, "audio")  # the source's sound under the loaded frames
    save = g.add("SaveVideo", (0, 0), {"filename_prefix": prefix}, size=(320, 320))
    g.connect(video, 0, save, "video")
    return (smp, dec, video, save) if trim is None else (smp, dec, video, save, trim)


def _zsvd_edit(g: Graph, load, model, vae, null, remove, *, loaders: list[dict], steps: int, cfg: float, rule: str,
               skip: int, prefix: str, tiled=False, pad_rule=None, blocks: str = "0-3,15-29", low_noise=None,
               beside_prompts: list[dict] = ()) -> tuple[int, int]:
    """The ZSVD chain shared by every ZSVD workflow: encode -> invert -> replay with switch + editor -> save.

    Lays the graph out in six columns: Load Video (room for its preview below); ``loaders`` (the caller's
    model nodes, top-down) and the encoder; the prompts and the scheduler; inversion, switch and editor; the
    inversion sampler and the sampler; decode, create video and save. Returns where the caller's Note goes
    (below the first two columns).

    ``model`` and ``vae`` are (node, output slot) pairs; ``tiled``: core VAEEncodeTiled / VAEDecodeTiled;
    ``pad_rule``: the frames are padded to this frame rule before encoding (ZSVR_PadFrames) and the padding is cut
    off after decoding (ZSVR_TrimPadding), so the video keeps every source frame.
    ``low_noise``: the (node, slot) of a second expert (Wan 2.2 A14B), wired into the inversion and, through its own
    attention switch, into the editor, as ``model_low_noise``; ``beside_prompts``: the caller's nodes placed above
    the prompts (the third column).
    """
    enc = g.add("VAEEncodeTiled", (0, 0), VAE_TILES, size=(320, 160)) if tiled else \
        g.add("VAEEncode", (0, 0), size=(320, 60))
    pad = None
    if pad_rule is not None:
        pad = g.add("ZSVR_PadFrames", (0, 0), {"frame_rule": pad_rule}, size=(320, 80))
        g.connect(load, 0, pad, "images")
    g.connect(load if pad is None else pad, 0, enc, "pixels")
    g.connect(*vae, enc, "vae")
    sched = g.add("BasicScheduler", (0, 0), {"scheduler": "simple", "steps": steps, "denoise": 1.0})
    g.connect(*model, sched, "model")
    inv = g.add("ZSVR_DDPMInvert", (0, 0), {"cfg": cfg, "inversion_seed": 0, "step_rule": rule, "first_step": skip},
                size=(340, 250))
    g.connect(*model, inv, "model")
    g.connect(null, 0, inv, "positive")
    g.connect(null, 0, inv, "negative")
    g.connect(enc, 0, inv, "latent")
    g.connect(sched, 0, inv, "sigmas")
    rep = g.add("ZSVR_InversionSampler", (0, 0), {"skip": skip, "start_noise": 0.0}, size=(340, 150))
    g.connect(inv, 0, rep, "inversion")
    switch = g.add("ZSVR_AttentionSwitch", (0, 0), {"blocks": blocks}, size=(340, 110),
                   title="Attention Switch (ZSVR): high-noise expert" if low_noise else None)
    g.connect(*model, switch, "model")
    switches = [switch]
    if low_noise:
        g.connect(*low_noise, inv, "model_low_noise")
        low_switch = g.add("ZSVR_AttentionSwitch", (0, 0), {"blocks": blocks}, size=(340, 110),
                           title="Attention Switch (ZSVR): low-noise expert")
        g.connect(*low_noise, low_switch, "model")
        switches.append(low_switch)
    editor = g.add("ZSVR_NegativePromptEditor", (0, 0), {"strength": 15.0}, size=(340, 140))
    g.connect(switch, 0, editor, "model")
    g.connect(null, 0, editor, "null")
    g.connect(remove, 0, editor, "remove")
    if low_noise:
        g.connect(switches[1], 0, editor, "model_low_noise")
    smp, dec, video, save, *trim = _sample_decode_save(g, (rep, 0), (editor, 0), (rep, 1), (rep, 2), (enc, 0), vae,
                                                       load, prefix, tiled=tiled, pad=pad)
    return arrange(load, [*loaders, *([] if tiled else [enc])],  # the tiled encoder is taller
                   [*beside_prompts, null, remove, sched, *([pad] if pad is not None else []), *([enc] if tiled else [])],
                   [inv, *switches, editor], [rep, smp, *trim], [dec, video, save])


def _load_video(g: Graph, frame_cap: int, width: int, height: int, frame_rule: str, size_multiple: int, **widgets):
    """Load Video of the pack's example clip at this size and frame rule (``widgets``: any other, e.g. fit)."""
    return g.add("ZSVR_LoadVideo", (0, 0), {"video": VIDEO_FILE, "frame_cap": frame_cap, "width": width,
                                           "height": height, "frame_rule": frame_rule, "size_multiple": size_multiple,
                                           **widgets}, size=(320, 380))


def _umt5_loader(g: Graph):
    """The UMT5 text encoder of every Wan model (fp8, as in ComfyUI's templates)."""
    return g.add("CLIPLoader", (0, 0), {"clip_name": "umt5_xxl_fp8_e4m3fn_scaled.safetensors", "type": "wan"},
                 size=(320, 110))


def _wan_inputs(g: Graph, frame_cap: int, frame_rule: str = "4k+1"):
    """Load Video (832x480, ``frame_rule`` frames) and the three Wan 2.1 1.3B loaders: (load, unet, clip, vae)."""
    load = _load_video(g, frame_cap, 832, 480, frame_rule, 16)
    unet = g.add("UNETLoader", (0, 0), {"unet_name": "wan2.1_t2v_1.3B_fp16.safetensors"}, size=(320, 100))
    clip = _umt5_loader(g)
    vae = g.add("VAELoader", (0, 0), {"vae_name": "wan_2.1_vae.safetensors"}, size=(320, 70))
    return load, unet, clip, vae


def _null_and(g: Graph, clip, text: str, title: str):
    """The empty null prompt and one prompt of ``text``, both encoded by ``clip`` (a (node, slot) pair)."""
    null = g.add("CLIPTextEncode", (0, 0), {"text": ""}, title="Null prompt (keep empty)")
    other = g.add("CLIPTextEncode", (0, 0), {"text": text}, title=title)
    g.connect(*clip, null, "clip")
    g.connect(*clip, other, "clip")
    return null, other


def zsvd_wan21(g: Graph) -> Graph:
    """ZSVD deraining on Wan 2.1 T2V 1.3B (the model ComfyUI artists have)."""
    load, unet, clip, vae = _wan_inputs(g, frame_cap=49)
    null, remove = _null_and(g, (clip, 0), RAIN_PROMPT, "Remove prompt")
    note_at = _zsvd_edit(g, load, (unet, 0), (vae, 0), null, remove, loaders=[unet, clip, vae], steps=50, cfg=1.0,
                         rule="ddpm", skip=20, prefix="zsvr/derained")
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
        note_at, size=(680, 300), title="ZSVD: what to tweak")
    return g


# Wan 2.1 was trained on 81-frame clips (21 latent frames); WanContextWindowsManual takes frames and converts them
WAN_WINDOW_FRAMES = 81
WAN_WINDOW_OVERLAP = 30  # the core node's default: 8 latent frames shared by neighbouring windows


def zsvd_wan21_long(g: Graph) -> Graph:
    """ZSVD on a whole clip in one graph: Wan 2.1 under core context windows of 81 frames, tiled VAE."""
    load, unet, clip, vae = _wan_inputs(g, frame_cap=0, frame_rule="any")  # every frame: padded to 4k+1, then cut
    windows = g.add("WanContextWindowsManual", (0, 0),
                    {"context_length": WAN_WINDOW_FRAMES, "context_overlap": WAN_WINDOW_OVERLAP,
                     "context_schedule": "standard_static", "fuse_method": "pyramid"}, size=(320, 190))
    g.connect(unet, 0, windows, "model")
    null, remove = _null_and(g, (clip, 0), RAIN_PROMPT, "Remove prompt")
    note_at = _zsvd_edit(g, load, (windows, 0), (vae, 0), null, remove, loaders=[unet, clip, vae, windows], steps=50,
                         cfg=1.0, rule="ddpm", skip=20, prefix="zsvr/derained_long", tiled=True,
                         pad_rule="4k+1")
    g.note(
        "ZSVD on a whole clip, in one graph (Wan 2.1 1.3B)\n\n"
        "Models: as ZSVD rain removal - Wan 2.1.json.\n\n"
        "How it works: Load Video reads the whole clip (frame_cap 0, every frame: frame_rule any). Pad Frames to "
        "Rule repeats the last frame up to the 4k+1 count the Wan VAE needs, and Trim Padding cuts those copies off "
        "after decoding, so the video has exactly the clip's frames, fps and sound. WAN Context Windows (Manual) makes the model "
        "denoise it in windows of 81 frames (21 latent frames, the length Wan 2.1 was trained on) that share 30 "
        "frames (8 latent frames) with their neighbours; every window's prediction is blended into the whole clip "
        "at every step, for the inversion and for the edit. VAE Encode/Decode (Tiled) code the clip in pieces of "
        "64 frames and 512 px.\n\n"
        "Memory: the GPU holds one window of the model plus the clip's latent (about 0.4 MB per latent frame at "
        "832x480); the inversion keeps its per-step noise on the CPU (0.2 MB per latent frame and inverted step, "
        "30 steps here). One latent frame is 4 video frames.\n\n"
        "What to tweak: as in ZSVD rain removal - Wan 2.1.json (skip, strength, blocks, remove prompt); context_overlap: "
        "more overlap blends windows more smoothly and costs more windows. Keep context_schedule standard_static "
        "for the same windows at every step.",
        note_at, size=(680, 360), title="ZSVD long clip: what to tweak")
    return g


# ComfyUI's Wan 2.2 templates: model files under diffusion_models/, the UMT5 text encoder, and ModelSamplingSD3
# shift 8 on every Wan 2.2 model
WAN22_HIGH_NOISE_FILE = "wan2.2_t2v_high_noise_14B_fp8_scaled.safetensors"
WAN22_LOW_NOISE_FILE = "wan2.2_t2v_low_noise_14B_fp8_scaled.safetensors"
WAN22_5B_FILE = "wan2.2_ti2v_5B_fp16.safetensors"
WAN22_SHIFT = 8.0


def _shifted(g: Graph, unet: dict) -> dict:
    """ModelSamplingSD3 at the Wan 2.2 templates' shift after a model loader."""
    node = g.add("ModelSamplingSD3", (0, 0), {"shift": WAN22_SHIFT}, size=(320, 60))
    g.connect(unet, 0, node, "model")
    return node


def zsvd_wan22_14b(g: Graph) -> Graph:
    """ZSVD deraining on Wan 2.2 A14B: the high-noise expert for the noisy half of the schedule, the low-noise one
    for the rest, in one inversion and one edit."""
    load = _load_video(g, 49, 832, 480, "4k+1", 16)
    high = g.add("UNETLoader", (0, 0), {"unet_name": WAN22_HIGH_NOISE_FILE}, size=(320, 100),
                 title="High-noise expert")
    low = g.add("UNETLoader", (0, 0), {"unet_name": WAN22_LOW_NOISE_FILE}, size=(320, 100), title="Low-noise expert")
    high_s, low_s = _shifted(g, high), _shifted(g, low)
    clip = _umt5_loader(g)
    vae = g.add("VAELoader", (0, 0), {"vae_name": "wan_2.1_vae.safetensors"}, size=(320, 70))
    null, remove = _null_and(g, (clip, 0), RAIN_PROMPT, "Remove prompt")
    note_at = _zsvd_edit(g, load, (high_s, 0), (vae, 0), null, remove,
                         loaders=[high, low, clip, vae], steps=40, cfg=1.0, rule="ddpm", skip=16,
                         prefix="zsvr/derained_wan22_14b", blocks="0-4,20-39", low_noise=(low_s, 0),
                         beside_prompts=[high_s, low_s])
    g.note(
        "ZSVD deraining on Wan 2.2 A14B (two experts)\n\n"
        f"Models: diffusion_models/{WAN22_HIGH_NOISE_FILE}, diffusion_models/{WAN22_LOW_NOISE_FILE}, text_encoders/"
        "umt5_xxl_fp8_e4m3fn_scaled.safetensors, vae/wan_2.1_vae.safetensors (the 14B models use the Wan 2.1 "
        "VAE). Both experts get ModelSamplingSD3 shift 8, as in ComfyUI's Wan 2.2 templates.\n\n"
        "How it runs: the high-noise expert denoises the noisy part of the schedule, the low-noise expert the rest, "
        "in the inversion and in the edit alike. expert_boundary (on DDPM Inversion and on the Editor: keep them "
        "equal) is where the low-noise expert takes over, as a fraction of the steps: 0.5 = the templates' switch "
        "at step 10 of 20; the official Wan code's boundary (timestep 875) is 0.533. Each expert is loaded when "
        "the run reaches it (14 GB each in fp8), so one GPU holds one at a time if it must.\n\n"
        "What to tweak: skip, strength, remove prompt as in ZSVD rain removal - Wan 2.1.json. blocks (one switch "
        "per expert, keep them equal): the 14B models have 40 blocks; 0-4,20-39 is the paper's 0-3,15-29 "
        "(30 blocks) scaled to 40.",
        note_at, size=(680, 300), title="ZSVD on Wan 2.2 14B: what to tweak")
    return g


def zsvd_wan22_5b(g: Graph) -> Graph:
    """ZSVD deraining on Wan 2.2 TI2V 5B (one model, the Wan 2.2 VAE's 48-channel latent)."""
    load = _load_video(g, 49, 1280, 704, "4k+1", 32)
    unet = g.add("UNETLoader", (0, 0), {"unet_name": WAN22_5B_FILE}, size=(320, 100))
    shifted = _shifted(g, unet)
    clip = _umt5_loader(g)
    vae = g.add("VAELoader", (0, 0), {"vae_name": "wan2.2_vae.safetensors"}, size=(320, 70))
    null, remove = _null_and(g, (clip, 0), RAIN_PROMPT, "Remove prompt")
    note_at = _zsvd_edit(g, load, (shifted, 0), (vae, 0), null, remove, loaders=[unet, clip, vae], steps=50,
                         cfg=1.0, rule="ddpm", skip=20, prefix="zsvr/derained_wan22_5b", beside_prompts=[shifted])
    g.note(
        "ZSVD deraining on Wan 2.2 TI2V 5B\n\n"
        f"Models: diffusion_models/{WAN22_5B_FILE}, text_encoders/umt5_xxl_fp8_e4m3fn_scaled.safetensors, "
        "vae/wan2.2_vae.safetensors (the 5B model's own VAE: 48 channels, 16x smaller frames). ModelSamplingSD3 "
        "shift 8 as in ComfyUI's template.\n\n"
        "Size: 1280x704 is the model's native size; width and height must be multiples of 32 (size_multiple). "
        "Frames: 4k+1 (each latent frame is 4 video frames).\n\n"
        "What to tweak: as in ZSVD rain removal - Wan 2.1.json (skip, strength, remove prompt); the 5B model has "
        "30 blocks like Wan 2.1 1.3B, so the paper's blocks 0-3,15-29 apply as they are. expert_boundary does "
        "nothing here (one model).",
        note_at, size=(680, 320), title="ZSVD on Wan 2.2 5B: what to tweak")
    return g


def _sd15_loaders(g: Graph):
    """The SD1.5 checkpoint and the tile ControlNet: (ckpt, cnet)."""
    ckpt = g.add("CheckpointLoaderSimple", (0, 0), {"ckpt_name": "v1-5-pruned-emaonly-fp16.safetensors"},
                 size=(320, 110))
    cnet = g.add("ControlNetLoader", (0, 0), {"control_net_name": "control_v11f1e_sd15_tile.pth"}, size=(320, 70))
    return ckpt, cnet


def _tile_control(g: Graph, positive, negative, cnet, load):
    """ControlNetApplyAdvanced at full strength over the whole schedule: the ``cnet`` ControlNet with the loaded
    frames as its hint, on the ``positive`` / ``negative`` prompt nodes."""
    control = g.add("ControlNetApplyAdvanced", (0, 0), {"strength": 1.0, "start_percent": 0.0, "end_percent": 1.0},
                    size=(320, 190))
    g.connect(positive, 0, control, "positive")
    g.connect(negative, 0, control, "negative")
    g.connect(cnet, 0, control, "control_net")
    g.connect(load, 0, control, "image")
    return control


def _cfg_guider(g: Graph, model, control, cfg: float, size):
    """CFGGuider at ``cfg`` on the ``model`` node, guided by both conditionings of the ``control`` node."""
    guider = g.add("CFGGuider", (0, 0), {"cfg": cfg}, size=size)
    g.connect(model, 0, guider, "model")
    g.connect(control, 0, guider, "positive")
    g.connect(control, 1, guider, "negative")
    return guider


TDM_TASK_PROMPT = "remove the rain"


def tdm_swcfa_sd15(g: Graph) -> Graph:
    """TDM on SD1.5: DDIM inversion (10 steps) -> 32-step DDIM sampling with tile ControlNet, task prompt, SW-CFA.

    The hand-over between the two step counts: ``ZSVR_InversionSampler``
    (skip 0) gives the NOISE and the replaying SAMPLER; the SIGMAS come from a
    32-step scheduler. Both schedules start at the model's largest sigma, which
    is an inverted level, so the sampler starts from the inverted latent there
    (x_T) and runs DDIM steps over the 32-step schedule. The inversion uses the
    plain model and the null prompt; only sampling gets ControlNet, the task
    prompt and SW-CFA.
    """
    load = _load_video(g, 16, 640, 384, "any", 8, fit="crop")
    ckpt, cnet = _sd15_loaders(g)
    null, task = _null_and(g, (ckpt, 1), TDM_TASK_PROMPT, "Task prompt")
    enc = g.add("VAEEncode", (0, 0), size=(320, 60))
    g.connect(load, 0, enc, "pixels")
    g.connect(ckpt, 2, enc, "vae")
    inv_sched = g.add("BasicScheduler", (0, 0), {"scheduler": "normal", "steps": 10, "denoise": 1.0},
                      title="Inversion schedule")
    g.connect(ckpt, 0, inv_sched, "model")
    inv = g.add("ZSVR_DDPMInvert", (0, 0), {"cfg": 1.0, "inversion_seed": 0, "step_rule": "ddim", "first_step": 0},
                size=(340, 250), title="DDIM Inversion (ZSVR)")
    g.connect(ckpt, 0, inv, "model")
    g.connect(null, 0, inv, "positive")
    g.connect(null, 0, inv, "negative")
    g.connect(enc, 0, inv, "latent")
    g.connect(inv_sched, 0, inv, "sigmas")
    rep = g.add("ZSVR_InversionSampler", (0, 0), {"skip": 0, "start_noise": 0.0}, size=(340, 150))
    g.connect(inv, 0, rep, "inversion")
    smp_sched = g.add("BasicScheduler", (0, 0), {"scheduler": "normal", "steps": 32, "denoise": 1.0},
                      title="Sampling schedule")
    g.connect(ckpt, 0, smp_sched, "model")
    control = _tile_control(g, task, null, cnet, load)
    swcfa = g.add("ZSVR_SWCFA", (0, 0), {"radius": 3, "frames_per_video": 0, "blocks": "all",
                                         "start_percent": 0.0, "end_percent": 1.0}, size=(380, 160))
    g.connect(ckpt, 0, swcfa, "model")
    guider = _cfg_guider(g, swcfa, control, 7.5, size=(380, 100))
    smp, dec, video, save = _sample_decode_save(g, (rep, 0), (guider, 0), (rep, 1), (smp_sched, 0), (enc, 0),
                                                (ckpt, 2), load, "zsvr/tdm_restored")
    note_at = arrange(load, [ckpt, cnet, enc], [null, task, control], [inv_sched, inv, rep, smp_sched],
                      [swcfa, guider, smp], [dec, video, save])
    g.note(
        "TDM video restoration on SD1.5 (frames are the batch)\n\n"
        "Models: checkpoints/v1-5-pruned-emaonly-fp16.safetensors, controlnet/control_v11f1e_sd15_tile.pth. "
        "TDM fine-tunes its own ControlNet with task prompts; the public tile ControlNet stands in for it "
        "(load TDM's ControlNet here if you have it).\n\n"
        "How it runs: DDIM inversion of the input (null prompt, Inversion schedule), then DDIM sampling over "
        "the Sampling schedule from the inverted latent at the first sigma, with the input frames as the "
        "ControlNet hint, the Task prompt and SW-CFA.\n\n"
        "What to tweak:\n"
        "- radius (SW-CFA): each frame's self-attention keys/values are the mean over frames i-r..i+r. "
        "Larger = smoother, more consistent video but blurrier detail; 0 = off (frames flicker independently).\n"
        "- Task prompt: one phrase per degradation, e.g. \"remove the rain\" or \"remove the haze\".\n"
        "- steps of the two schedules: they may differ (paper: 10 and 32). Use any scheduler but ddim_uniform "
        "for both: they must start at the same (largest) sigma, else the sampler stops with a message.\n"
        "- cfg (CFG Guider) and ControlNet strength: lower keeps more of the input.\n"
        "- frame_cap / size (Load Video): all frames are denoised as one batch, so memory grows with both.\n\n"
        "Paper defaults: DDIM inversion 10 steps, DDIM sampling 32 steps, SW-CFA radius 3.",
        note_at, size=(680, 420), title="TDM: what to tweak")
    return g


def zsvd_cogvideox(g: Graph) -> Graph:
    """ZSVD on CogVideoX-2b with the official settings (100 steps, skip 40, strength 15, blocks 0-3,15-29)."""
    load = _load_video(g, 49, 720, 480, "4k+1", 16)
    cog = g.add("ZSVR_LoadCogVideoX", (0, 0), {"model_folder": "CogVideoX-2b", "dtype": "auto"}, size=(320, 110))
    clip = g.add("CLIPLoader", (0, 0), {"clip_name": "t5xxl_fp16.safetensors", "type": "sd3"}, size=(320, 110))
    t5 = g.add("T5TokenizerOptions", (0, 0), {"min_padding": 0, "min_length": 226},
               title="T5 to 226 tokens (CogVideoX)", size=(320, 90))
    g.connect(clip, 0, t5, "clip")
    null, remove = _null_and(g, (t5, 0), ZSVD_OFFICIAL_RAIN_PROMPT, "Remove prompt")
    note_at = _zsvd_edit(g, load, (cog, 0), (cog, 1), null, remove, loaders=[cog, clip, t5], steps=100, cfg=3.5,
                         rule="zsvd", skip=40, prefix="zsvr/derained_cogvideox")
    g.note(
        "ZSVD on CogVideoX-2b, the paper's setup\n\n"
        "Models: models/diffusers/CogVideoX-2b (the diffusers folder: transformer/, vae/, scheduler/), "
        "text_encoders/t5xxl_fp16.safetensors (T5 v1.1 XXL; the T5 node pads it to CogVideoX's 226 tokens).\n\n"
        "Official settings: 49 frames at 720x480, 100 steps, skip 40, editing strength 15, inversion with the "
        "null prompt on both sides (cfg 3.5, which equals 1 there), switched blocks 0-3,15-29, step rule zsvd "
        "(the official code's DDIM mean + DDPM-sized noise). first_step 40 inverts only the 60 steps the edit "
        "replays (set it to 0 to try other skips without re-inverting).\n\n"
        "Remove prompt: the official eight phrases; the paper found \"light rain\" the best single phrase.\n\n"
        "What to tweak: skip (more = closer to the input), strength (more = stronger removal), blocks "
        "(all = no edit, empty = plain negative prompting).",
        note_at, size=(680, 320), title="ZSVD (CogVideoX): official settings")
    return g


def zvrd_slr_sd15(g: Graph) -> Graph:
    """ZVRD on SD1.5: SLR temporal attention, noise sharing and early stopping around a tile-ControlNet img2img."""
    load = _load_video(g, 16, 512, 512, "any", 8, fit="crop")
    ckpt, cnet = _sd15_loaders(g)
    pos = g.add("CLIPTextEncode", (0, 0), {"text": "a clear, sharp, high quality photo"}, title="Prompt")
    neg = g.add("CLIPTextEncode", (0, 0), {"text": "rain, noise, blur, low quality"}, title="Negative prompt")
    g.connect(ckpt, 1, pos, "clip")
    g.connect(ckpt, 1, neg, "clip")
    enc = g.add("VAEEncode", (0, 0), size=(320, 60))
    g.connect(load, 0, enc, "pixels")
    g.connect(ckpt, 2, enc, "vae")
    slr = g.add("ZSVR_SLRTemporalAttention", (0, 0), {"trajectory_start": 0.5, "frames_per_video": 0,
                                                    "start_percent": 0.0, "end_percent": 1.0}, size=(340, 160))
    g.connect(ckpt, 0, slr, "model")
    g.connect(load, 0, slr, "image")
    control = _tile_control(g, pos, neg, cnet, load)
    guider = _cfg_guider(g, slr, control, 7.0, size=(340, 100))
    select = g.add("KSamplerSelect", (0, 0), {"sampler_name": "euler_ancestral"}, size=(340, 70))
    share = g.add("ZSVR_NoiseSharing", (0, 0), {"noise_seed": 0, "lambda": 0.5}, size=(340, 130))
    g.connect(select, 0, share, "sampler")
    g.connect(load, 0, share, "image")
    stop = g.add("ZSVR_EarlyStop", (0, 0), {"stop_step": 0, "stop_percent": 0.8}, size=(340, 100))
    g.connect(share, 1, stop, "sampler")
    sched = g.add("BasicScheduler", (0, 0), {"scheduler": "normal", "steps": 30, "denoise": 0.6}, size=(340, 130))
    g.connect(ckpt, 0, sched, "model")
    smp, dec, video, save = _sample_decode_save(g, (share, 0), (guider, 0), (stop, 0), (sched, 0), (enc, 0),
                                                (ckpt, 2), load, "zsvr/zvrd_restored")
    note_at = arrange(load, [ckpt, cnet, enc], [pos, neg, control], [slr, guider, sched], [select, share, stop, smp],
                      [dec, video, save])
    g.note(
        "ZVRD on SD1.5 (frames are the batch)\n\n"
        "Models: checkpoints/v1-5-pruned-emaonly-fp16.safetensors, controlnet/control_v11f1e_sd15_tile.pth "
        "(the image restorer whose frames ZVRD makes consistent; swap in your own).\n\n"
        "What to tweak:\n"
        "- trajectory_start (SLR): from this point of the schedule on, attention also follows each pixel's "
        "trajectory (flow from the input frames). 1 = neighbour-frame attention only.\n"
        "- lambda (Noise Sharing): 1 = one noise for all frames; lower blends each frame's noise with the "
        "previous frame's along the flow (smoother motion, less frozen texture).\n"
        "- stop_percent (Early Stop): stop sampling early and keep that step's clean prediction: fewer "
        "flickering details; 1.0 = no early stop.\n"
        "- denoise (BasicScheduler): how much the restorer may change each frame.\n\n"
        "The paper does not publish T_TA, T_ES or lambda; these defaults (0.5, 0.8, 0.5) are ours.",
        note_at, size=(680, 320), title="ZVRD: what to tweak")
    return g


WORKFLOWS = {
    "ZSVD rain removal - Wan 2.1.json": zsvd_wan21,
    "ZSVD rain removal (whole long clip) - Wan 2.1.json": zsvd_wan21_long,
    "ZSVD rain removal - Wan 2.2 14B.json": zsvd_wan22_14b,
    "ZSVD rain removal - Wan 2.2 5B.json": zsvd_wan22_5b,
    "ZSVD rain removal (paper settings) - CogVideoX-2b.json": zsvd_cogvideox,
    "TDM video restoration (SW-CFA) - SD1.5.json": tdm_swcfa_sd15,
    "ZVRD video restoration (SLR) - SD1.5.json": zvrd_slr_sd15,
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

    def has_upload_button(self, types):
        return self.wf.has_upload_button(types)

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
    import os
    import runpy

    runpy.run_path(str(PACK_DIR / "pack_import.py"))["import_pack"]()
    from zsvr.headless import workflow_format as wf
    from zsvr.run_workflow import Host

    host = Host(pathlib.Path(os.environ.get("COMFYUI_PATH", PACK_DIR.parent.parent)).resolve(), cpu=True)
    for name, data in build_all(host.nodes, wf).items():
        (WORKFLOW_DIR / name).write_text(dump(data))
        print("wrote", WORKFLOW_DIR / name)
