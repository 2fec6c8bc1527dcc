"""End-to-end cost of ZSVD: the pack's ComfyUI graph vs the official schedule (issue 8's benchmark).

Everything runs in one process on one GPU, in the order (a), (b)+(d), (c),
(e), with random-initialised models of the real sizes (figures are costs, not
quality):

(a) **official** — :mod:`official_zsvd`: diffusers' ``CogVideoXTransformer3DModel``
    (2b config) and ``AutoencoderKLCogVideoX``; VAE encode of a random
    49x480x720 clip, 100 inversion forwards at batch 2 with identical rows, 60
    edit forwards at batch 2 in which blocks 0-3,15-29 run their whole joint
    attention twice, scheduler arithmetic on the side, VAE decode.
(b) **pack** — ComfyUI booted in-process (``run_workflow.Host``: the server's own
    validate + execute path) runs the API-format equivalent of
    ``workflows/ZSVD rain removal (paper settings) - CogVideoX-2b.json`` on the *same* random weights,
    saved as a diffusers folder and read by ``ZSVR_LoadCogVideoX``:
    VAEEncode -> ZSVR_DDPMInvert (null/null, BasicScheduler simple 100 steps,
    rule zsvd, first_step 40: 60 forwards at batch 1) -> ZSVR_InversionSampler
    (skip 40) -> ZSVR_AttentionSwitch(0-3,15-29) -> ZSVR_NegativePromptEditor
    (15) -> SamplerCustomAdvanced -> VAEDecode (or VAEDecodeTiled, --decode).
    The T5 text encoders are replaced by random [1, 226, 4096] conditioning and
    the video loader by a random clip (bench-local nodes), so text encoding and
    video file I/O are excluded on both sides. Each node is timed from the
    executor's own "executing" events with the GPU synchronised at each one.
(c) **switch_overhead** — ``bench_switch_overhead.py`` (imported and run, its
    logic is not repeated here): per-step cost of the pack's switched edit step
    vs plain two-row CFG. The official side's own ratio (its edit step vs a
    plain two-row CFG step) is reported beside it as ``official_switch_overhead``.
(d) **peak VRAM** of the pack's whole workflow (VAE encode/decode included):
    ``torch.cuda.max_memory_allocated`` (and ``..._reserved``) after a reset
    just before the prompt. ``--vram-cap-gb 12`` simulates a 12 GB card: the
    process is capped with ``torch.cuda.set_per_process_memory_fraction`` and
    ComfyUI's model management is told the same through its
    ``EXTRA_RESERVED_VRAM`` (what ``--reserve-vram`` sets), so it plans
    loading, offloading and its out-of-memory fallback to tiled VAE decoding
    as on such a card: those decisions subtract the reserve from the driver's
    free memory. (How many prompt rows it batches per call reads the raw
    figure; every ZSVD pass here is one row, so that does not matter.) The
    JSON keeps ComfyUI's load/offload messages.
(e) ``--wan``: Wan 2.1 1.3B (ComfyUI's own ``WanModel``, random weights saved
    as a checkpoint ``UNETLoader`` detects, random Wan 2.1 VAE) at 81x480x832
    (latent 21x60x104): the pack's ZSVD graph (100 steps, skip 40, rule ddpm)
    and, in the same prompt from the same inversion, a plain two-row CFG
    baseline (core ``CFGGuider``, cfg 15) over the same 60 steps.
(f) ``--wan22``: the Wan 2.2 A14B way of running, two experts through one inversion and one edit
    (``model_low_noise``, ``expert_boundary`` 0.5, one switch per expert), at the 1.3B size so that two random
    experts fit the device's disk: the second expert is the same architecture with other random weights. With
    ``--vram-cap-gb`` below two experts' weights it shows ComfyUI swapping them: the JSON keeps the model loads
    per run (ComfyUI's "Requested to load" lines), the pair's times and, after ``--wan``, the ratio to one model.

Totals exclude model building/loading from disk on both sides; the pack's
times include ComfyUI moving weights to the GPU inside the first node that needs
them (the official side keeps its models on the GPU throughout).
``zsvd_ratio`` = pack / official, end to end with the VAE;
``zsvd_ratio_vae_excluded`` the same for the transformer parts alone.

Writes ``<out>/zsvd_end_to_end_<device>.json`` (``..._cpu_small.json`` with
``--small``) after every phase, so a run stopped part-way keeps what it measured.

    python bench/bench_zsvd_end_to_end.py --vram-cap-gb 12       # GPU, real size
    python bench/bench_zsvd_end_to_end.py --small --wan          # CPU check, under a minute
"""

from __future__ import annotations

import argparse
import datetime
import gc
import hashlib
import json
import logging
import math
import os
import pathlib
import platform
import runpy
import shutil
import sys
import tempfile
import time

PACK_DIR = pathlib.Path(__file__).resolve().parent.parent
BENCH_DIR = PACK_DIR / "bench"
RESULTS = BENCH_DIR / "results"
runpy.run_path(str(PACK_DIR / "pack_import.py"))["import_pack"]()  # the pack as `zsvr`, its folder off sys.path
COG_FOLDER = "zsvr-bench-cogvideox"
WAN_FILE = "zsvr_bench_wan21_1.3b_random.safetensors"
WAN_VAE_FILE = "zsvr_bench_wan21_vae_random.safetensors"
WAN_LOW_FILE = "zsvr_bench_wan21_1.3b_random_low_noise.safetensors"  # (f): the second expert
WAN_LOW_SEED_OFFSET = 7

# CogVideoX-2b's scheduler/scheduler_config.json (diffusers CogVideoXDDIMScheduler)
COG_SCHEDULER = {
    "_class_name": "CogVideoXDDIMScheduler", "beta_start": 0.00085, "beta_end": 0.012,
    "beta_schedule": "scaled_linear", "clip_sample": False, "num_train_timesteps": 1000,
    "prediction_type": "v_prediction", "rescale_betas_zero_snr": True, "set_alpha_to_one": True,
    "snr_shift_scale": 3.0, "steps_offset": 0, "timestep_spacing": "trailing",
}

# real sizes: diffusers' defaults are CogVideoX-2b (30 blocks, 30 heads x 64, text 226 x 4096) and its VAE
FULL = {
    "cog_transformer": {}, "cog_vae": {}, "video": (49, 480, 720), "text": (226, 4096),
    "wan": {"dim": 1536, "ffn_dim": 8960, "num_heads": 12, "num_layers": 30}, "wan_video": (81, 480, 832),
    "wan_text": (512, 4096), "wan_blocks": "0-3,15-29",
}
# --small: the tiny test models' scale (30 blocks, so the official block list still applies)
SMALL = {
    "cog_transformer": dict(num_attention_heads=2, attention_head_dim=16, num_layers=30, text_embed_dim=32,
                            time_embed_dim=32, sample_frames=9, sample_height=16, sample_width=16,
                            max_text_seq_length=16),
    "cog_vae": dict(block_out_channels=(8, 8, 8, 8), layers_per_block=1, norm_num_groups=4, latent_channels=16,
                    sample_height=128, sample_width=128),
    "video": (9, 128, 128), "text": (16, 32),
    "wan": {"dim": 128, "ffn_dim": 256, "num_heads": 1, "num_layers": 2}, "wan_video": (9, 64, 64),
    "wan_text": (16, 4096), "wan_blocks": "0-1",
}
WAN_BASE = {"image_model": "wan2.1", "model_type": "t2v", "out_dim": 16, "in_dim": 16, "patch_size": (1, 2, 2),
            "freq_dim": 256, "window_size": (-1, -1), "qk_norm": True, "cross_attn_norm": True, "eps": 1e-6}


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


# -- random weights --------------------------------------------------------------------------
def randomize_(module, seed: int, gain: float = 1.0):
    """Seeded, variance-preserving random values for every parameter (matrices N(0, gain^2/fan_in),
    norm scales 1, other vectors N(0, 0.02^2)), generated on the parameter's own device."""
    import torch

    gens = {}
    with torch.no_grad():
        for name, p in module.named_parameters():
            gen = gens.setdefault(p.device, torch.Generator(p.device).manual_seed(seed))
            if p.dim() >= 2:
                p.copy_(torch.randn(p.shape, generator=gen, device=p.device, dtype=torch.float32)
                        * (gain / math.sqrt(p[0].numel())))
            elif ("norm" in name and name.endswith("weight")) or name.endswith("gamma"):
                p.fill_(1.0)
            else:
                p.copy_(torch.randn(p.shape, generator=gen, device=p.device, dtype=torch.float32) * 0.02)
    return module


def _digest(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def build_cogvideox(folder: pathlib.Path, sizes: dict, device, dtype, seed: int = 0):
    """The diffusers folder ZSVR_LoadCogVideoX reads (transformer/, vae/, scheduler/), random weights in
    ``dtype``; reused when ``folder`` already holds the same build. Returns (transformer, vae, seconds, built)."""
    import torch
    from diffusers import AutoencoderKLCogVideoX, CogVideoXTransformer3DModel

    stamp = {"transformer": sizes["cog_transformer"], "vae": sizes["cog_vae"], "dtype": str(dtype), "seed": seed}
    marker = folder / "zsvr_bench_build.json"
    start = time.perf_counter()
    if marker.is_file() and json.loads(marker.read_text()).get("digest") == _digest(stamp):
        transformer = CogVideoXTransformer3DModel.from_pretrained(str(folder / "transformer"), torch_dtype=dtype)
        vae = AutoencoderKLCogVideoX.from_pretrained(str(folder / "vae"), torch_dtype=dtype)
        return transformer.to(device).eval(), vae.to(device).eval(), time.perf_counter() - start, False
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    with torch.device(device):
        transformer = CogVideoXTransformer3DModel(**sizes["cog_transformer"])
    randomize_(transformer, seed).to(dtype).eval()
    transformer.save_pretrained(str(folder / "transformer"), safe_serialization=True, max_shard_size="20GB")
    with torch.device(device):
        vae = AutoencoderKLCogVideoX(**sizes["cog_vae"])
    randomize_(vae, seed + 1, gain=0.5).to(dtype).eval()
    vae.save_pretrained(str(folder / "vae"), safe_serialization=True)
    (folder / "scheduler").mkdir()
    (folder / "scheduler" / "scheduler_config.json").write_text(json.dumps(COG_SCHEDULER, indent=2))
    marker.write_text(json.dumps({"digest": _digest(stamp), "stamp": stamp}, default=str))
    return transformer, vae, time.perf_counter() - start, True


def build_wan_low_noise(models_dir: pathlib.Path, sizes: dict, device, dtype, seed: int = 0) -> tuple[float, bool]:
    """(f)'s second expert: the Wan checkpoint of :func:`build_wan` with other random weights."""
    from safetensors.torch import save_file

    import comfy.supported_models

    unet_file = models_dir / "diffusion_models" / WAN_LOW_FILE
    stamp = {"wan": sizes["wan"], "dtype": str(dtype), "seed": seed + WAN_LOW_SEED_OFFSET}
    marker = models_dir / "zsvr_bench_wan_low.json"
    if marker.is_file() and json.loads(marker.read_text()).get("digest") == _digest(stamp) and unet_file.is_file():
        return 0.0, False
    start = time.perf_counter()
    unet_file.parent.mkdir(parents=True, exist_ok=True)
    config = comfy.supported_models.WAN21_T2V(dict(WAN_BASE, **sizes["wan"]))
    config.set_inference_dtype(dtype, None)
    model = config.get_model({}, device=device)
    randomize_(model.diffusion_model, seed + WAN_LOW_SEED_OFFSET)
    save_file({k: v.detach().to(dtype).contiguous().cpu() for k, v in model.diffusion_model.state_dict().items()},
              str(unet_file))
    del model
    marker.write_text(json.dumps({"digest": _digest(stamp)}))
    return time.perf_counter() - start, True


def build_wan(models_dir: pathlib.Path, sizes: dict, device, dtype, seed: int = 0) -> tuple[float, bool]:
    """A random Wan 2.1 t2v checkpoint UNETLoader detects (ComfyUI's own WanModel) and a random Wan 2.1 VAE."""
    import torch
    from safetensors.torch import save_file

    import comfy.ldm.wan.vae
    import comfy.supported_models

    unet_file = models_dir / "diffusion_models" / WAN_FILE
    vae_file = models_dir / "vae" / WAN_VAE_FILE
    stamp = {"wan": sizes["wan"], "dtype": str(dtype), "seed": seed}
    marker = models_dir / "zsvr_bench_wan.json"
    if marker.is_file() and json.loads(marker.read_text()).get("digest") == _digest(stamp) \
            and unet_file.is_file() and vae_file.is_file():
        return 0.0, False
    start = time.perf_counter()
    unet_file.parent.mkdir(parents=True, exist_ok=True)
    vae_file.parent.mkdir(parents=True, exist_ok=True)
    config = comfy.supported_models.WAN21_T2V(dict(WAN_BASE, **sizes["wan"]))
    config.set_inference_dtype(dtype, None)
    model = config.get_model({}, device=device)
    randomize_(model.diffusion_model, seed)
    save_file({k: v.detach().to(dtype).contiguous().cpu() for k, v in model.diffusion_model.state_dict().items()},
              str(unet_file))
    del model
    vae = comfy.ldm.wan.vae.WanVAE(dim=96, z_dim=16, dim_mult=[1, 2, 4, 4], num_res_blocks=2, attn_scales=[],
                                   temperal_downsample=[False, True, True], dropout=0.0)
    randomize_(vae, seed + 1, gain=0.5)
    save_file({k: v.detach().to(torch.bfloat16).contiguous() for k, v in vae.state_dict().items()}, str(vae_file))
    marker.write_text(json.dumps({"digest": _digest(stamp)}))
    return time.perf_counter() - start, True


# -- ComfyUI side ------------------------------------------------------------------------------
def register_bench_nodes(nodes_module, sink: dict) -> None:
    """Bench-only stand-ins for the text encoders and the video loader, and sinks that end the graph."""

    class RandomVideo:
        CATEGORY = "ZSVR/bench"
        RETURN_TYPES = ("IMAGE",)
        FUNCTION = "make"

        @classmethod
        def INPUT_TYPES(cls):
            return {"required": {"frames": ("INT", {"default": 49, "min": 1, "max": 4096}),
                                 "height": ("INT", {"default": 480, "min": 8, "max": 8192}),
                                 "width": ("INT", {"default": 720, "min": 8, "max": 8192}),
                                 "seed": ("INT", {"default": 0, "min": 0, "max": 2**31})}}

        def make(self, frames, height, width, seed):
            import torch

            return (torch.rand(frames, height, width, 3, generator=torch.Generator().manual_seed(seed)),)

    class RandomConditioning:
        CATEGORY = "ZSVR/bench"
        RETURN_TYPES = ("CONDITIONING",)
        FUNCTION = "make"

        @classmethod
        def INPUT_TYPES(cls):
            return {"required": {"seed": ("INT", {"default": 0, "min": 0, "max": 2**31}),
                                 "tokens": ("INT", {"default": 226, "min": 1, "max": 4096}),
                                 "width": ("INT", {"default": 4096, "min": 1, "max": 8192})}}

        def make(self, seed, tokens, width):
            import torch

            return ([[torch.randn(1, tokens, width, generator=torch.Generator().manual_seed(seed)), {}]],)

    def sink_class(kind):
        class Sink:
            CATEGORY = "ZSVR/bench"
            RETURN_TYPES = ()
            FUNCTION = "put"
            OUTPUT_NODE = True

            @classmethod
            def INPUT_TYPES(cls):
                return {"required": {"value": (kind,), "key": ("STRING", {"default": "out"})}}

            def put(self, value, key):
                import torch

                tensor = value["samples"] if isinstance(value, dict) else value
                sink[key] = {"shape": list(tensor.shape), "finite": bool(torch.isfinite(tensor).all())}
                return {}

        return Sink

    nodes_module.NODE_CLASS_MAPPINGS.update({
        "ZSVRBench_RandomVideo": RandomVideo, "ZSVRBench_RandomConditioning": RandomConditioning,
        "ZSVRBench_ImageSink": sink_class("IMAGE"), "ZSVRBench_LatentSink": sink_class("LATENT"),
    })


def _link(node, slot=0):
    return [str(node), slot]


def zsvd_prompt(loader: dict, video, text, args, blocks: str, rule: str, baseline: bool, decode: str,
                inversion_cfg: float) -> dict:
    """API-format prompt of the pack's ZSVD workflow (plus an optional plain-CFG branch from the same inversion).

    ``loader`` holds the model/VAE source nodes: {"nodes": {...}, "model": link, "vae": link}, and for a pair of
    experts (f) "low_noise": the second expert's link (wired as ``model_low_noise``, with its own switch).
    """
    frames, height, width = video
    tokens, text_width = text
    p = dict(loader["nodes"])
    model, vae = loader["model"], loader["vae"]
    p["video"] = {"class_type": "ZSVRBench_RandomVideo", "inputs": {"frames": frames, "height": height,
                                                                    "width": width, "seed": args.seed}}
    for name, seed in (("null", 1), ("remove", 2)):
        p[name] = {"class_type": "ZSVRBench_RandomConditioning",
                   "inputs": {"seed": seed, "tokens": tokens, "width": text_width}}
    p["encode"] = {"class_type": "VAEEncode", "inputs": {"pixels": _link("video"), "vae": vae}}
    p["scheduler"] = {"class_type": "BasicScheduler",
                      "inputs": {"model": model, "scheduler": "simple", "steps": args.steps, "denoise": 1.0}}
    p["invert"] = {"class_type": "ZSVR_DDPMInvert", "inputs": {
        "model": model, "positive": _link("null"), "negative": _link("null"), "cfg": inversion_cfg,
        "latent": _link("encode"), "sigmas": _link("scheduler"), "inversion_seed": args.seed,
        "step_rule": rule, "first_step": args.skip}}
    p["replay"] = {"class_type": "ZSVR_InversionSampler",
                   "inputs": {"inversion": _link("invert"), "skip": args.skip, "start_noise": 0.0}}
    p["switch"] = {"class_type": "ZSVR_AttentionSwitch",
                   "inputs": {"model": model, "blocks": blocks, "start_percent": 0.0, "end_percent": 1.0}}
    p["editor"] = {"class_type": "ZSVR_NegativePromptEditor", "inputs": {
        "model": _link("switch"), "null": _link("null"), "remove": _link("remove"), "strength": args.strength}}
    low = loader.get("low_noise")
    if low is not None:
        p["invert"]["inputs"].update(model_low_noise=low, expert_boundary=0.5)
        p["switch_low"] = {"class_type": "ZSVR_AttentionSwitch",
                           "inputs": {"model": low, "blocks": blocks, "start_percent": 0.0, "end_percent": 1.0}}
        p["editor"]["inputs"].update(model_low_noise=_link("switch_low"), expert_boundary=0.5)
    p["edit"] = {"class_type": "SamplerCustomAdvanced", "inputs": {
        "noise": _link("replay", 0), "guider": _link("editor"), "sampler": _link("replay", 1),
        "sigmas": _link("replay", 2), "latent_image": _link("encode")}}
    if decode == "tiled":
        p["decode"] = {"class_type": "VAEDecodeTiled", "inputs": {
            "samples": _link("edit"), "vae": vae, "tile_size": 256, "overlap": 64, "temporal_size": 64,
            "temporal_overlap": 8}}
    else:
        p["decode"] = {"class_type": "VAEDecode", "inputs": {"samples": _link("edit"), "vae": vae}}
    p["out"] = {"class_type": "ZSVRBench_ImageSink", "inputs": {"value": _link("decode"), "key": "zsvd"}}
    if baseline:
        p["cfg_guider"] = {"class_type": "CFGGuider", "inputs": {
            "model": model, "positive": _link("null"), "negative": _link("remove"), "cfg": args.strength}}
        p["cfg_edit"] = {"class_type": "SamplerCustomAdvanced", "inputs": {
            "noise": _link("replay", 0), "guider": _link("cfg_guider"), "sampler": _link("replay", 1),
            "sigmas": _link("replay", 2), "latent_image": _link("encode")}}
        p["cfg_out"] = {"class_type": "ZSVRBench_LatentSink", "inputs": {"value": _link("cfg_edit"), "key": "cfg"}}
    return p


class MemoryLog(logging.Handler):
    """Keeps ComfyUI's model-loading and out-of-memory messages; echoes warnings to stderr."""

    KEEP = ("loaded completely", "loaded partially", "Ran out of memory", "Requested to load", "unloaded",
            "lowvram")

    def __init__(self):
        super().__init__(logging.INFO)
        self.lines: list[str] = []

    def emit(self, record):
        message = record.getMessage()
        if any(k in message for k in self.KEEP):
            self.lines.append(message.strip()[:300])
        if record.levelno >= logging.WARNING:
            print(f"{record.levelname}: {message}", file=sys.stderr, flush=True)


def run_timed(host, prompt: dict, device) -> dict:
    """Execute ``prompt`` once; per-node seconds and peak GPU memory from the executor's "executing" events.

    At each event the GPU is synchronised, the clock read, and the peak-memory
    counters of the node that just ended read and reset.
    """
    import torch

    cuda = device.type == "cuda"
    server = host.executor.server
    marks: list[tuple[str, float]] = []
    peaks: list[tuple[float, float]] = []  # (allocated, reserved) GiB of the window that ends at each mark
    original = server.send_sync

    def read_peaks():
        if not cuda:
            return 0.0, 0.0
        torch.cuda.synchronize(device)
        out = (torch.cuda.max_memory_allocated(device) / 2**30, torch.cuda.max_memory_reserved(device) / 2**30)
        torch.cuda.reset_peak_memory_stats(device)
        return out

    def send_sync(event, data, sid=None):
        if event == "executing" and isinstance(data, dict) and data.get("node") is not None:
            peaks.append(read_peaks())
            marks.append((str(data["node"]), time.perf_counter()))
        return original(event, data, sid)

    read_peaks()
    server.send_sync = send_sync
    start = time.perf_counter()
    try:
        result = host.execute(prompt)
    finally:
        server.send_sync = original
    peaks.append(read_peaks())
    end = time.perf_counter()
    seconds, node_alloc, node_reserved = {}, {}, {}
    for i, (node, t) in enumerate(marks):
        seconds[node] = (marks[i + 1][1] if i + 1 < len(marks) else end) - t
        node_alloc[node], node_reserved[node] = peaks[i + 1]
    out = {"ok": result.success, "error": result.error_text() or None, "wall_s": end - start, "node_s": seconds,
           "order": [m[0] for m in marks]}
    if cuda:
        out["node_peak_gb"] = node_alloc
        out["peak_allocated_gb"] = max(a for a, _ in peaks)
        out["peak_reserved_gb"] = max(b for _, b in peaks)
    return out


def apply_vram_cap(mm, device, cap_gb: float) -> dict:
    """Cap this process at ``cap_gb`` and make ComfyUI's model management plan for a card of that size."""
    import torch

    index = torch.device(device).index
    index = torch.cuda.current_device() if index is None else index  # set_per_process_memory_fraction needs one
    total = torch.cuda.get_device_properties(index).total_memory
    cap = int(cap_gb * 2**30)
    if cap >= total:
        raise SystemExit(f"--vram-cap-gb {cap_gb}: this GPU has only {total / 2**30:.1f} GiB")
    torch.cuda.set_per_process_memory_fraction(cap / total, index)
    default_reserve = mm.EXTRA_RESERVED_VRAM
    # ComfyUI reads free memory from the driver (mem_get_info): reserving the rest of the card leaves it
    # exactly the capped size to plan with, plus its usual reserve
    mm.EXTRA_RESERVED_VRAM = int(total - cap) + default_reserve
    return {"vram_cap_gb": cap_gb, "device_total_gb": round(total / 2**30, 2),
            "comfy_extra_reserved_gb": round(mm.EXTRA_RESERVED_VRAM / 2**30, 3),
            "comfy_default_reserve_gb": round(default_reserve / 2**30, 3)}


def release_vram_cap(mm, device, info: dict | None) -> None:
    import torch

    if info:
        torch.cuda.set_per_process_memory_fraction(1.0, torch.device(device).index or torch.cuda.current_device())
        mm.EXTRA_RESERVED_VRAM = int(info["comfy_default_reserve_gb"] * 2**30)


def free_everything(host=None) -> None:
    import torch

    if host is not None:
        host.model_management.unload_all_models()
        host.executor.reset()
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


# -- the run ---------------------------------------------------------------------------------------
def device_slug(name: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in name.lower()).strip("_")


def r(x, n=3):
    return None if x is None else round(float(x), n)


def summarise_pack(timed: dict, names: dict) -> dict:
    """Transformer / VAE / total seconds of a timed ZSVD prompt (``names``: part -> node ids)."""
    s = timed["node_s"]
    part = {k: sum(s.get(n, 0.0) for n in ids) for k, ids in names.items()}
    out = {f"{k}_s": r(v) for k, v in part.items()}
    out["transformer_s"] = r(part["inversion"] + part["edit"])
    out["vae_s"] = r(part["vae_encode"] + part["vae_decode"])
    out["total_vae_excluded_s"] = out["transformer_s"]
    out["total_s"] = r(part["inversion"] + part["edit"] + part["vae_encode"] + part["vae_decode"])
    out["prompt_wall_s"] = r(timed["wall_s"])
    out["node_s"] = {k: r(v) for k, v in s.items()}
    if "node_peak_gb" in timed:
        out["node_peak_allocated_gb"] = {k: r(v) for k, v in timed["node_peak_gb"].items()}
    return out


def run_pack_prompt(host, mm, prompt: dict, device, cap: dict | None, memlog, sink: dict, result: dict, save,
                    error_key: str, label: str) -> dict:
    """Run one of the pack's prompts timed (:func:`run_timed`) with fresh memory-log and sink, then lift the VRAM
    cap; a failed prompt is recorded as ``result[error_key]``, saved, and ends the bench naming ``label``."""
    memlog.lines.clear()
    sink.clear()
    timed = run_timed(host, prompt, device)
    release_vram_cap(mm, device, cap)
    if not timed["ok"]:
        result[error_key] = timed["error"]
        save()
        raise SystemExit(f"{label} workflow failed: {timed['error']}")
    return timed


def cap_figures(timed: dict, cap: dict | None, cap_gb: float) -> dict:
    """A CUDA run's reserved peak and, under a cap, the cap and whether the run stayed under it."""
    out = {"peak_reserved_gb": r(timed["peak_reserved_gb"], 2)}
    if cap:
        out["vram_cap_gb"] = cap_gb
        out["ran_under_cap"] = bool(timed["peak_reserved_gb"] <= cap_gb)
    return out


def wan_settings(sizes: dict, **extra) -> dict:
    """The settings recorded with a Wan run (the ZSVD graph at ``sizes``, rule ddpm)."""
    return {"video_frames_h_w": list(sizes["wan_video"]), "text_tokens_width": list(sizes["wan_text"]),
            "blocks": sizes["wan_blocks"], "inversion_rule": "ddpm", "model": sizes["wan"], **extra}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--small", action="store_true", help="tiny models and clip (a CPU check of the script)")
    parser.add_argument("--work", type=pathlib.Path, default=None,
                        help="folder for the random models, reused across runs (default: a temporary folder)")
    parser.add_argument("--out", type=pathlib.Path, default=RESULTS, help="where the JSON goes (default bench/results)")
    parser.add_argument("--comfyui", type=pathlib.Path, default=None, help="ComfyUI's folder (default: COMFYUI_PATH)")
    parser.add_argument("--dtype", default="bf16", choices=["bf16", "fp16"], help="weights and compute (GPU)")
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--skip", type=int, default=40)
    parser.add_argument("--strength", type=float, default=15.0)
    parser.add_argument("--blocks", default="0-3,15-29", help="switched CogVideoX blocks")
    parser.add_argument("--vram-cap-gb", type=float, default=0.0,
                        help="simulate a card of this size for the pack's workflow (0: no cap)")
    parser.add_argument("--decode", default="auto", choices=["auto", "tiled"],
                        help="pack: core VAEDecode (falls back to tiles on out-of-memory) or VAEDecodeTiled")
    parser.add_argument("--wan", action="store_true", help="also run (e): Wan 2.1 1.3B")
    parser.add_argument("--wan22", action="store_true", help="also run (f): a pair of experts, Wan 2.2 A14B's way")
    parser.add_argument("--no-cogvideox", action="store_true", help="skip (a)-(d) (with --wan: Wan only)")
    parser.add_argument("--no-switch-bench", action="store_true", help="skip (c)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    import torch

    cuda = torch.cuda.is_available()
    if not cuda and not args.small:
        print("no GPU: use --small for a CPU check", file=sys.stderr)
        return 2
    comfy_dir = args.comfyui or (pathlib.Path(os.environ["COMFYUI_PATH"]) if os.environ.get("COMFYUI_PATH")
                                 else PACK_DIR.parent.parent)
    comfy_dir = comfy_dir.expanduser().resolve()
    if not (comfy_dir / "nodes.py").is_file():
        print(f"no ComfyUI at {comfy_dir}: pass --comfyui or set COMFYUI_PATH", file=sys.stderr)
        return 2
    if not 0 <= args.skip < args.steps:
        parser.error("--skip must be in 0..steps-1")
    try:
        import diffusers
    except ImportError as exc:
        print(f"diffusers is needed for the CogVideoX models ({exc})", file=sys.stderr)
        return 2

    if not cuda:
        # a CPU check only: one thread, because two OpenMP threads on a shared 2-core machine were measured
        # 90x slower (3.6 s vs 0.04 s for one tiny forward)
        torch.set_num_threads(1)
    device = torch.device("cuda" if cuda else "cpu")
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}[args.dtype] if cuda else torch.float32
    sizes = SMALL if args.small else FULL
    device_name = torch.cuda.get_device_name(device) if cuda else "cpu"
    name = "zsvd_end_to_end_cpu_small.json" if args.small else f"zsvd_end_to_end_{device_slug(device_name)}.json"
    if args.no_cogvideox and (args.wan or args.wan22):
        name = name.replace("zsvd_end_to_end_", "zsvd_end_to_end_wan_")
    out_path = args.out / name
    args.out.mkdir(parents=True, exist_ok=True)
    temp_work = args.work is None
    work = pathlib.Path(tempfile.mkdtemp(prefix="zsvr-e2e-")) if temp_work else args.work.resolve()
    models_dir = work / "models"

    result = {
        "device": device_name, "torch": torch.__version__, "diffusers": diffusers.__version__,
        "python": platform.python_version(), "dtype": str(dtype).replace("torch.", ""),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": "python3 " + " ".join([str(pathlib.Path(sys.argv[0]).as_posix())] + sys.argv[1:]),
        "note": ("random-initialised weights (costs, not quality); text encoding excluded on both sides (random "
                 "[1, tokens, width] embeddings, 226 x 4096 for CogVideoX-2b); video file I/O excluded (random "
                 "clip); model building and loading from disk excluded; the pack's node times include ComfyUI "
                 "moving weights to the GPU") + ("; --small: tiny models on a CPU with one thread, a check of the "
                                                 "script whose figures say nothing about the GPU" if args.small else ""),
        "settings": {"steps": args.steps, "skip": args.skip, "strength": args.strength, "blocks": args.blocks,
                     "video_frames_h_w": list(sizes["video"]), "text_tokens_width": list(sizes["text"]),
                     "small": args.small, "decode": args.decode, "inversion_rule_cogvideox": "zsvd"},
        "complete": False,
    }

    def save():
        out_path.write_text(json.dumps(result, indent=1) + "\n")

    memlog = MemoryLog()
    logging.getLogger().addHandler(memlog)
    logging.getLogger().setLevel(logging.INFO)
    for handler in logging.getLogger().handlers:  # keep ComfyUI's INFO chatter off the console
        if handler is not memlog and isinstance(handler, logging.StreamHandler):
            handler.setLevel(logging.WARNING)

    log(f"booting ComfyUI from {comfy_dir} ({device_name}, torch {torch.__version__})")
    t = time.perf_counter()
    from zsvr import run_workflow

    host = run_workflow.Host(comfy_dir, cpu=not cuda, output_dir=work / "output")
    for handler in logging.getLogger().handlers:
        if handler is not memlog and isinstance(handler, logging.StreamHandler):
            handler.setLevel(logging.WARNING)
    import comfyui_version

    result["comfyui"] = comfyui_version.__version__
    sink: dict = {}
    register_bench_nodes(host.nodes, sink)
    for kind in ("diffusers", "diffusion_models", "vae"):
        (models_dir / kind).mkdir(parents=True, exist_ok=True)
        host.folder_paths.add_model_folder_path(kind, str(models_dir / kind), is_default=True)
    result["comfyui_boot_s"] = r(time.perf_counter() - t, 2)
    mm = host.model_management
    try:
        if not args.no_cogvideox:
            run_cogvideox(args, host, mm, sizes, device, dtype, models_dir, result, sink, memlog, save)
        if args.wan:
            run_wan(args, host, mm, sizes, device, dtype, models_dir, result, sink, memlog, save)
        if args.wan22:
            run_wan22_pair(args, host, mm, sizes, device, dtype, models_dir, result, sink, memlog, save)
    finally:
        if temp_work:
            shutil.rmtree(work, ignore_errors=True)
    result["complete"] = True
    save()
    print_table(result)
    log(f"wrote {out_path}")
    return 0


def run_cogvideox(args, host, mm, sizes, device, dtype, models_dir, result, sink, memlog, save) -> None:
    import torch

    import official_zsvd

    cuda = device.type == "cuda"
    folder = models_dir / "diffusers" / COG_FOLDER
    log("building the random CogVideoX folder (transformer, VAE, scheduler)")
    transformer, vae, seconds, built = build_cogvideox(folder, sizes, device, dtype, args.seed)
    result["cogvideox_build_s"] = r(seconds, 2)
    result["cogvideox_build"] = "built" if built else "reused"
    result["cogvideox_params_m"] = r(sum(p.numel() for p in transformer.parameters()) / 1e6, 1)
    blocks = official_zsvd.parse_blocks(args.blocks, len(transformer.transformer_blocks))
    frames, height, width = sizes["video"]
    tokens, text_width = sizes["text"]
    gen = torch.Generator(device).manual_seed(args.seed)
    video = (torch.rand(1, 3, frames, height, width, generator=gen, device=device) * 2 - 1).to(dtype)
    null_text = torch.randn(1, tokens, text_width, generator=gen, device=device).to(dtype)
    remove_text = torch.randn(1, tokens, text_width, generator=gen, device=device).to(dtype)

    # (a) official schedule; a warm-up forward and a small VAE round trip first, so that neither side pays
    # for CUDA's first kernels (the pack runs after it in the same process)
    log("official schedule: warm-up")
    with torch.inference_mode():
        small = torch.zeros(1, 3, 9, 64, 64, device=device, dtype=dtype)
        vae.decode(vae.encode(small).latent_dist.mode()).sample
        official_zsvd.install(transformer, blocks)
        lat = (frames - 1) // 4 + 1, height // 8, width // 8
        transformer(hidden_states=torch.zeros(2, lat[0], 16, lat[1], lat[2], device=device, dtype=dtype),
                    encoder_hidden_states=torch.cat((null_text, null_text)),
                    timestep=torch.full((2,), 500, device=device, dtype=torch.long), return_dict=False)
    if cuda:
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
    log(f"official schedule: {args.steps} inversion + {args.steps - args.skip} edit forwards at batch 2")
    official = official_zsvd.run_official(transformer, vae, video, null_text, remove_text, COG_SCHEDULER,
                                          steps=args.steps, skip=args.skip, strength=args.strength,
                                          blocks=blocks, seed=args.seed)
    if cuda:
        official["peak_allocated_gb"] = torch.cuda.max_memory_allocated(device) / 2**30
    result["official"] = {k: (r(v) if isinstance(v, float) else v) for k, v in official.items()}
    result["official_switch_overhead"] = r(official["official_switch_overhead"], 4)
    save()
    log(f"official: transformer {official['transformer_s']:.1f} s, VAE {official['vae_s']:.1f} s")
    del transformer, vae, video, null_text, remove_text
    free_everything()

    # (b) + (d) the pack's workflow, optionally under a simulated smaller card
    cap = apply_vram_cap(mm, device, args.vram_cap_gb) if (cuda and args.vram_cap_gb > 0) else None
    if cap:
        result["vram_cap"] = cap
    loader = {"nodes": {"loader": {"class_type": "ZSVR_LoadCogVideoX",
                                   "inputs": {"model_folder": COG_FOLDER, "dtype": args.dtype if cuda else "fp32"}}},
              "model": _link("loader", 0), "vae": _link("loader", 1)}
    prompt = zsvd_prompt(loader, sizes["video"], sizes["text"], args, args.blocks, "zsvd", baseline=False,
                         decode=args.decode, inversion_cfg=3.5)
    log(f"pack workflow: ZSVD graph, {args.steps - args.skip} inversion forwards + {args.steps - args.skip} "
        "switched edit steps" + (f", capped at {args.vram_cap_gb} GB" if cap else ""))
    timed = run_pack_prompt(host, mm, prompt, device, cap, memlog, sink, result, save, "pack_error", "pack")
    pack = summarise_pack(timed, {"inversion": ["invert"], "edit": ["edit"], "vae_encode": ["encode"],
                                  "vae_decode": ["decode"], "load": ["loader"]})
    pack["output"] = sink.get("zsvd")
    pack["comfy_memory_log"] = memlog.lines[:40]
    pack["vae_decode_fell_back_to_tiles"] = any("Ran out of memory when regular VAE decoding" in m
                                                for m in memlog.lines)
    pack["vae_encode_fell_back_to_tiles"] = any("Ran out of memory when regular VAE encoding" in m
                                                for m in memlog.lines)
    result["pack"] = pack
    off = result["official"]
    result["zsvd_ratio"] = r(pack["total_s"] / off["total_s"], 4)
    result["zsvd_ratio_vae_excluded"] = r(pack["transformer_s"] / off["transformer_s"], 4)
    if cuda:
        result["peak_vram_gb_cogvideox2b"] = r(timed["peak_allocated_gb"], 2)
        result["peak_vram_reserved_gb_cogvideox2b"] = r(timed["peak_reserved_gb"], 2)
        if cap:
            result["ran_under_cap"] = bool(timed["peak_reserved_gb"] <= args.vram_cap_gb)
    save()
    free_everything(host)

    # (c) per-step switch overhead: bench_switch_overhead.py, run as it is, its JSON read back
    if not args.no_switch_bench:
        log("switch overhead (bench_switch_overhead.py)")
        import bench_switch_overhead

        with tempfile.TemporaryDirectory() as tmp:
            bench_switch_overhead.RESULTS = pathlib.Path(tmp)
            argv = ["--small"] if args.small else ["--dtype", args.dtype]
            bench_switch_overhead.main(argv)
            produced = sorted(pathlib.Path(tmp).glob("switch_overhead_*.json"))
            switch = json.loads(produced[0].read_text())
        result["switch_overhead"] = switch["switch_overhead"]
        result["switch_overhead_detail"] = {k: switch[k] for k in ("cfg_step_ms", "switched_step_ms", "dtype",
                                                                   "latent_t_h_w", "switched_blocks", "command")}
        save()
        free_everything()


def run_wan_prompt(args, host, mm, sizes, device, result, sink, memlog, save, pair: bool):
    """(e) (``pair`` False: one Wan 2.1 model, with the plain-CFG baseline in the same prompt) or (f) (a pair of
    experts, no baseline): the ZSVD graph run timed, under the VRAM cap if one is asked for.
    Returns (the timed run, its :func:`summarise_pack` figures, the cap or None)."""
    cuda = device.type == "cuda"
    cap = apply_vram_cap(mm, device, args.vram_cap_gb) if (cuda and args.vram_cap_gb > 0) else None
    nodes = {"unet": {"class_type": "UNETLoader", "inputs": {"unet_name": WAN_FILE, "weight_dtype": "default"}}}
    if pair:
        nodes["unet_low"] = {"class_type": "UNETLoader",
                             "inputs": {"unet_name": WAN_LOW_FILE, "weight_dtype": "default"}}
    nodes["vae_loader"] = {"class_type": "VAELoader", "inputs": {"vae_name": WAN_VAE_FILE}}
    loader = {"nodes": nodes, "model": _link("unet", 0), "vae": _link("vae_loader", 0)}
    if pair:
        loader["low_noise"] = _link("unet_low", 0)
    prompt = zsvd_prompt(loader, sizes["wan_video"], sizes["wan_text"], args, sizes["wan_blocks"], "ddpm",
                         baseline=not pair, decode=args.decode, inversion_cfg=1.0)
    what, error_key, label = (("a pair of Wan experts (Wan 2.2 A14B's way): one inversion, one edit",
                               "wan22_pair_error", "Wan pair") if pair else
                              ("Wan 2.1: ZSVD edit and plain two-row CFG from one inversion", "wan_error", "Wan"))
    log(f"pack workflow on {what}")
    timed = run_pack_prompt(host, mm, prompt, device, cap, memlog, sink, result, save, error_key, label)
    figures = summarise_pack(timed, {"inversion": ["invert"], "edit": ["edit"], "vae_encode": ["encode"],
                                     "vae_decode": ["decode"], "load": list(nodes)})
    return timed, figures, cap


def run_wan(args, host, mm, sizes, device, dtype, models_dir, result, sink, memlog, save) -> None:
    cuda = device.type == "cuda"
    log("building the random Wan 2.1 checkpoint and VAE")
    seconds, built = build_wan(models_dir, sizes, device, dtype, args.seed)
    result["wan_build_s"] = r(seconds, 2)
    timed, wan, cap = run_wan_prompt(args, host, mm, sizes, device, result, sink, memlog, save, pair=False)
    s = timed["node_s"]
    wan["plain_cfg_edit_s"] = r(s.get("cfg_edit"))
    wan["edit_vs_plain_cfg"] = r(s["edit"] / s["cfg_edit"], 4) if s.get("cfg_edit") else None
    wan["settings"] = wan_settings(sizes)
    wan["output"] = sink.get("zsvd")
    wan["comfy_memory_log"] = memlog.lines[:40]
    if cuda:
        result["peak_vram_gb_wan21_1_3b"] = r(timed["peak_allocated_gb"], 2)
        wan.update(cap_figures(timed, cap, args.vram_cap_gb))
    result["wan21_1_3b"] = wan
    save()
    free_everything(host)


def expert_loads(lines: list[str]) -> dict:
    """From ComfyUI's log of one prompt: how often an expert (``WAN21``) was asked for, and how often that moved
    its weights to the device ("loaded completely/partially"; an expert already there logs no such line)."""
    requested = moved = 0
    for i, line in enumerate(lines):
        if line.startswith("Requested to load WAN21"):
            requested += 1
            following = lines[i + 1] if i + 1 < len(lines) else ""
            moved += following.startswith(("loaded completely", "loaded partially"))
    return {"expert_load_requests": requested, "expert_loads_moving_weights": moved}


def run_wan22_pair(args, host, mm, sizes, device, dtype, models_dir, result, sink, memlog, save) -> None:
    """(f): two experts through one inversion and one edit; the loads per run and the cost over one model."""
    cuda = device.type == "cuda"
    log("building the random Wan checkpoints (two experts) and VAE")
    seconds = build_wan(models_dir, sizes, device, dtype, args.seed)[0]
    seconds += build_wan_low_noise(models_dir, sizes, device, dtype, args.seed)[0]
    result["wan22_pair_build_s"] = r(seconds, 2)
    timed, pair, cap = run_wan_prompt(args, host, mm, sizes, device, result, sink, memlog, save, pair=True)
    pair.update(expert_loads(memlog.lines))
    pair["settings"] = wan_settings(sizes, expert_boundary=0.5)
    one = result.get("wan21_1_3b")
    if one:
        pair["transformer_vs_one_model"] = r(pair["transformer_s"] / one["transformer_s"], 4)
    pair["comfy_memory_log"] = memlog.lines[:40]
    if cuda:
        pair["peak_allocated_gb"] = r(timed["peak_allocated_gb"], 2)
        pair.update(cap_figures(timed, cap, args.vram_cap_gb))
    result["wan22_pair_1_3b_size"] = pair
    save()
    free_everything(host)


def print_table(result: dict) -> None:
    rows = []
    off, pack, wan = result.get("official"), result.get("pack"), result.get("wan21_1_3b")
    for model, side, part in (("CogVideoX-2b", "official", off), ("CogVideoX-2b", "pack", pack),
                              ("Wan 2.1 1.3B", "pack ZSVD", wan),
                              ("Wan pair", "pack ZSVD", result.get("wan22_pair_1_3b_size"))):
        if part:
            rows.append((model, side, part["inversion_s"], part["edit_s"], part["transformer_s"], part["vae_s"],
                         part["total_s"]))
    if wan:
        rows.append(("Wan 2.1 1.3B", "plain CFG edit", None, wan["plain_cfg_edit_s"], None, None, None))
    fmt = lambda v: f"{v:>10.1f}" if isinstance(v, (int, float)) else f"{'-':>10}"
    print(f"{'model':<14}{'side':<16}{'invert s':>10}{'edit s':>10}{'no-VAE s':>10}{'VAE s':>10}{'total s':>10}")
    for model, side, *values in rows:
        print(f"{model:<14}{side:<16}" + "".join(fmt(v) for v in values))
    for key in ("zsvd_ratio", "zsvd_ratio_vae_excluded", "switch_overhead", "official_switch_overhead",
                "peak_vram_gb_cogvideox2b", "peak_vram_reserved_gb_cogvideox2b", "ran_under_cap",
                "peak_vram_gb_wan21_1_3b"):
        if key in result:
            print(f"{key} = {result[key]}")
    pair = result.get("wan22_pair_1_3b_size")
    if pair:
        print(f"wan pair expert_load_requests = {pair['expert_load_requests']}, expert_loads_moving_weights = "
              f"{pair['expert_loads_moving_weights']}, transformer_vs_one_model = {pair.get('transformer_vs_one_model')}")
    if wan and wan.get("edit_vs_plain_cfg") is not None:
        print(f"wan edit_vs_plain_cfg = {wan['edit_vs_plain_cfg']}")
    print(f"({result['device']}, {result['dtype']}, torch {result['torch']}; {result['note'].split(';')[0]})")


if __name__ == "__main__":
    sys.exit(main())
