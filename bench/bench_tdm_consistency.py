"""TDM temporal-consistency figure: warping error of consecutive output frames with and without SW-CFA (CPU).

Run (from the pack folder, with a ComfyUI checkout):

    COMFYUI_PATH=../ComfyUI python bench/bench_tdm_consistency.py [--frames 12] [--radii 0,1,3] [--json PATH]

**The U-Net is random-initialised** (no pretrained weights exist on the test
machine): the tiny SD1.5 U-Net of ``tests/tiny_models.py`` (2 levels of 320
channels, built in-process). The figure therefore shows the *mechanism* of
SW-CFA (how the window changes the frame-to-frame agreement of the sampled
frames along the clip's motion), not restoration quality, and it says nothing
about how a trained SD1.5 + ControlNet would score.

No VAE: a random TAESD maps every frame to almost the same latent (its deep
conv stack shrinks the signal), which would make every frame identical and
SW-CFA a no-op. The stand-in "VAE" is linear and spatially local: each 8x8
RGB patch becomes its first 4 principal components over the clip (PCA of the
patches), scaled so the latent has SD1.5's latent spread (model-space std 1);
decoding is the PCA reconstruction. Motion in the clip is motion in this
latent, which is what the metric needs.

Pipeline, as in ``workflows/TDM video restoration (SW-CFA) - SD1.5.json`` but built in-process from the
same node classes (ComfyUI booted like ``run_workflow.Host``): the real rain
clip ``shared/data/realrain/42.mp4`` (first ``--frames`` frames, resized to
``--width`` x ``--height``) -> patch-PCA encode -> ``ZSVR_DDPMInvert`` (rule ddim,
``--inv-steps`` steps of the ``normal`` schedule, null prompt both sides) ->
``ZSVR_InversionSampler`` (skip 0) with a ``--steps``-step ``normal`` schedule
(both start at sigma_max: the inverted x_T is handed over) -> ``CFGGuider``
(random "task prompt" conditioning, ``--cfg``) on the model patched by
``ZSVR_SWCFA`` with each radius (0 = off) -> ``SamplerCustomAdvanced`` ->
patch-PCA decode. No ControlNet: it acts per frame, identically in every arm, and the
figure isolates SW-CFA.

Metric (Lai et al., ECCV 2018 style, mean absolute error): optical flow of the
*input* clip (``kernels.optical_flow``: OpenCV DIS, computed at
``--flow-width`` x ``--flow-height`` and resized), forward-backward occlusion
mask; for every consecutive pair ``(t, t+1)`` the output frame ``t+1`` is
warped onto frame ``t``'s grid with the flow ``t -> t+1`` and
``WE_t = sum_p M(p) mean_c |O_t(p) - warp(O_{t+1})(p)| / sum_p M(p)`` over the
visible pixels ``M``; the table gives the mean over pairs, on the sampled
latents (flow resized to the latent grid) and on the decoded frames (0..1).
Reference rows: the input clip itself and its patch-PCA round trip (encode/
decode, no diffusion). ``WE edit`` is the same metric on what sampling changed
(sampled latent minus input latent): the inversion pins most of each frame to
the input, so the flicker SW-CFA is meant to remove lives in this part.
``change`` is the relative L2 difference of the sampled latent to the input
latent.

With cfg 1 (task prompt alone) the random U-Net barely departs from the
inverted trajectory (change ~0.06) and SW-CFA has no measurable effect on any
column; the default cfg 7.5 (the shipped workflow's) makes the model's own
per-frame contribution large enough to see the window act. Timings are of a
shared 2-core CPU and vary by 2-3x between runs.

Writes the table to stdout and JSON to ``bench/results/tdm_consistency_cpu.json``.
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
import time

PACK_DIR = pathlib.Path(__file__).resolve().parent.parent
TESTS_DIR = PACK_DIR / "tests"
runpy.run_path(str(PACK_DIR / "pack_import.py"))["import_pack"]()  # the pack as `zsvr`, its folder off sys.path
SHARED_DIR = pathlib.Path(os.environ.get("ZSVR_SHARED", PACK_DIR.parent / "shared"))
RANDOM_NOTE = ("the U-Net's weights are random-initialised (tiny SD1.5 U-Net; linear patch-PCA stand-in for the "
               "VAE): the figure shows the mechanism of SW-CFA, not restoration quality")
SD15_LATENT_SCALE = 0.18215  # SD1.5's latent scale factor: model-space latent = 0.18215 * VAE latent


def _boot(comfy_dir: pathlib.Path):
    """ComfyUI in this process with the pack loaded (CPU), and the pack's kernels."""
    if str(TESTS_DIR) not in sys.path:
        sys.path.insert(0, str(TESTS_DIR))  # the tests' tiny_models (imported by name after the boot)
    from zsvr.run_workflow import Host

    host = Host(comfy_dir, cpu=True)
    from zsvr.kernels import optical_flow as flow
    from zsvr.kernels import video_io

    return host, flow, video_io


def warping_error(flow_mod, frames, flow_fw, visible) -> list[float]:
    """Per pair t: masked mean |O_t - warp(O_{t+1}, flow t->t+1)| (frames [F,C,H,W], flow/visible at that size)."""
    out = []
    for t in range(frames.shape[0] - 1):
        warped = flow_mod.warp(frames[t + 1: t + 2].float(), flow_fw[t: t + 1], padding_mode="border")
        diff = (frames[t: t + 1].float() - warped).abs().mean(1, keepdim=True)
        m = visible[t: t + 1].float()
        out.append(float((diff * m).sum() / m.sum().clamp_min(1.0)))
    return out


class PatchPCA:
    """Linear stand-in VAE: 8x8 RGB patch <-> its first ``k`` principal components over the clip."""

    def __init__(self, frames_nchw, k: int = 4):
        import torch
        import torch.nn.functional as F

        self.F = F
        flat = self._flat(frames_nchw)
        self.mean = flat.mean(0)
        _, _, vh = torch.linalg.svd(flat - self.mean, full_matrices=False)
        self.comps = vh[:k]  # [k, 192]
        z = (flat - self.mean) @ self.comps.T
        self.scale = 1.0 / (SD15_LATENT_SCALE * z.std(0))  # model space (x 0.18215) gets unit spread per channel

    def _flat(self, x):
        patches = self.F.pixel_unshuffle(x * 2 - 1, 8)  # [F, 192, h, w]
        self.grid = patches.shape[-2:]
        return patches.permute(0, 2, 3, 1).reshape(-1, patches.shape[1])

    def encode(self, frames_nchw):
        n = frames_nchw.shape[0]
        z = (self._flat(frames_nchw) - self.mean) @ self.comps.T * self.scale
        h, w = self.grid
        return z.reshape(n, h, w, -1).permute(0, 3, 1, 2).contiguous()

    def decode(self, latent):
        n, k, h, w = latent.shape
        flat = (latent.permute(0, 2, 3, 1).reshape(-1, k) / self.scale) @ self.comps + self.mean
        patches = flat.reshape(n, h, w, -1).permute(0, 3, 1, 2)
        return ((self.F.pixel_shuffle(patches, 8) + 1) / 2).clamp(0, 1)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clip", type=pathlib.Path, default=SHARED_DIR / "data" / "realrain" / "42.mp4")
    parser.add_argument("--frames", type=int, default=12)
    parser.add_argument("--width", type=int, default=96)
    parser.add_argument("--height", type=int, default=64)
    parser.add_argument("--flow-width", type=int, default=360)
    parser.add_argument("--flow-height", type=int, default=240)
    parser.add_argument("--inv-steps", type=int, default=10, help="DDIM inversion steps (TDM: 10)")
    parser.add_argument("--steps", type=int, default=32, help="DDIM sampling steps (TDM: 32)")
    parser.add_argument("--radii", default="0,1,3", help="SW-CFA radii to compare; 0 = off (TDM: 3)")
    parser.add_argument("--cfg", type=float, default=7.5,
                        help="CFG of the task prompt vs the null prompt (7.5 as in the shipped workflow)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random weights and conditionings")
    parser.add_argument("--json", type=pathlib.Path, default=PACK_DIR / "bench" / "results" / "tdm_consistency_cpu.json")
    parser.add_argument("--comfyui", type=pathlib.Path,
                        default=pathlib.Path(os.environ.get("COMFYUI_PATH", PACK_DIR.parent.parent)))
    args = parser.parse_args()
    radii = [int(r) for r in args.radii.split(",") if r.strip()]

    print(f"NOTE: {RANDOM_NOTE}.")
    t_start = time.perf_counter()
    host, flow_mod, video_io = _boot(args.comfyui.resolve())
    import torch

    import comfy.model_patcher
    import comfy.samplers
    import tiny_models

    torch.manual_seed(args.seed)
    mapping = host.nodes.NODE_CLASS_MAPPINGS

    # -- the clip, its flow and occlusions ------------------------------------------------------------------
    clip = video_io.load_video(str(args.clip), frame_cap=args.frames, width=args.width, height=args.height,
                               fit="crop").images
    big = video_io.load_video(str(args.clip), frame_cap=args.frames, width=args.flow_width,
                              height=args.flow_height, fit="crop").images
    t0 = time.perf_counter()
    flow_fw = flow_mod.flow_pairs(big, forward=True)
    flow_bw = flow_mod.flow_pairs(big, forward=False)
    occluded = flow_mod.occlusion_mask(flow_fw, flow_bw)
    flow_s = time.perf_counter() - t0

    def at(size):
        return flow_mod.resize_flow(flow_fw, size), ~flow_mod.resize_mask(occluded, size, threshold=0.01)

    pix_size, lat_size = (args.height, args.width), (args.height // 8, args.width // 8)
    pix_flow, pix_visible = at(pix_size)
    lat_flow, lat_visible = at(lat_size)

    # -- tiny random models, built in-process ---------------------------------------------------------------
    cpu = torch.device("cpu")
    model = comfy.model_patcher.ModelPatcher(tiny_models.build_sd15(args.seed), load_device=cpu, offload_device=cpu)
    pixels = clip.permute(0, 3, 1, 2).contiguous()
    vae = PatchPCA(pixels)
    gen = torch.Generator().manual_seed(args.seed + 1)
    null = [[torch.randn(1, 77, 768, generator=gen), {}]]
    task = [[torch.randn(1, 77, 768, generator=gen), {}]]  # stands for CLIPTextEncode("remove the rain")

    latent = {"samples": vae.encode(pixels)}
    ms = model.get_model_object("model_sampling")
    inv_sigmas = comfy.samplers.calculate_sigmas(ms, "normal", args.inv_steps)
    smp_sigmas = comfy.samplers.calculate_sigmas(ms, "normal", args.steps)
    t0 = time.perf_counter()
    inversion = mapping["ZSVR_DDPMInvert"].execute(model, null, null, 1.0, latent, inv_sigmas, 0, "ddim", 0).result[0]
    invert_s = time.perf_counter() - t0
    noise, sampler, _ = mapping["ZSVR_InversionSampler"].execute(inversion, 0, 0.0).result

    def row(name, lat, pix, seconds=None, radius=None):
        we_lat = warping_error(flow_mod, lat, lat_flow, lat_visible)
        we_pix = warping_error(flow_mod, pix, pix_flow, pix_visible)
        we_edit = warping_error(flow_mod, lat - latent["samples"], lat_flow, lat_visible)
        return {"name": name, "radius": radius, "we_latent": sum(we_lat) / len(we_lat),
                "we_pixels": sum(we_pix) / len(we_pix), "we_edit": sum(we_edit) / len(we_edit),
                "we_latent_per_pair": we_lat, "we_pixels_per_pair": we_pix, "we_edit_per_pair": we_edit,
                "change": None if lat is latent["samples"] else float((lat - latent["samples"]).norm()
                                                                     / latent["samples"].norm()),
                "seconds": seconds}

    rows = [row("input clip (latent: its encoding)", latent["samples"], pixels),
            row("encode/decode round trip (no diffusion)", latent["samples"], vae.decode(latent["samples"]))]
    for r in radii:
        patched = mapping["ZSVR_SWCFA"].execute(model, r, 0, "all", 0.0, 1.0).result[0]
        guider = comfy.samplers.CFGGuider(patched)
        guider.set_conds(task, null)
        guider.set_cfg(args.cfg)
        t0 = time.perf_counter()
        out = mapping["SamplerCustomAdvanced"]().sample(noise, guider, sampler, smp_sigmas, latent)[0]["samples"]
        seconds = time.perf_counter() - t0
        if not torch.isfinite(out).all():
            raise SystemExit(f"radius {r}: non-finite output")
        label = "SW-CFA off" if r == 0 else f"SW-CFA radius {r}" + (" (TDM)" if r == 3 else "")
        rows.append(row(f"sampled, {label}", out, vae.decode(out), seconds, r))

    # -- report ---------------------------------------------------------------------------------------------
    visible = float((~occluded).float().mean())
    header = (f"TDM temporal consistency on {args.clip.name}: {clip.shape[0]} frames at {args.width}x{args.height} "
              f"(latent {lat_size[1]}x{lat_size[0]}), DDIM inversion {args.inv_steps} steps -> sampling "
              f"{args.steps} steps, cfg {args.cfg}; flow: DIS at {args.flow_width}x{args.flow_height}, "
              f"{visible:.0%} of pixels visible")
    print(header)
    print(f"NOTE: {RANDOM_NOTE}.")
    print(f"{'':42s} {'WE latent':>10s} {'WE pixels':>10s} {'WE edit':>10s} {'change':>8s} {'time s':>7s}")
    for r in rows:
        change = "" if r["change"] is None else f"{r['change']:.3f}"
        secs = "" if r["seconds"] is None else f"{r['seconds']:.1f}"
        edit = "" if r["change"] is None else f"{r['we_edit']:.4f}"
        print(f"{r['name']:42s} {r['we_latent']:10.4f} {r['we_pixels']:10.4f} {edit:>10s} {change:>8s} {secs:>7s}")
    off = next((r for r in rows if r["radius"] == 0), None)
    if off is not None:
        for r in rows:
            if r["radius"]:
                print(f"radius {r['radius']}: warping error {r['we_latent'] / off['we_latent']:.2f}x (latent), "
                      f"{r['we_pixels'] / off['we_pixels']:.2f}x (pixels), {r['we_edit'] / off['we_edit']:.2f}x "
                      "(edit) of SW-CFA off")
    total_s = time.perf_counter() - t_start
    print(f"inversion {invert_s:.1f} s, flow {flow_s:.2f} s, total {total_s:.1f} s")

    import cv2

    result = {
        "benchmark": "tdm_consistency",
        "note": RANDOM_NOTE,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "device": "cpu",
        "python": platform.python_version(),
        "torch": torch.__version__,
        "opencv": cv2.__version__,
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "clip": args.clip.name,
        "frames": int(clip.shape[0]),
        "size": [args.width, args.height],
        "latent_size": [lat_size[1], lat_size[0]],
        "flow": {"method": "dis (medium)", "size": [args.flow_width, args.flow_height],
                 "visible_fraction": visible, "seconds": flow_s},
        "inversion_steps": args.inv_steps,
        "sampling_steps": args.steps,
        "scheduler": "normal",
        "cfg": args.cfg,
        "seed": args.seed,
        "metric": "mean over consecutive pairs of the occlusion-masked mean |O_t - warp(O_{t+1}, flow_in t->t+1)|; "
                  "latent: sampled latents, flow resized to the latent grid; pixels: decoded frames in 0..1",
        "inversion_seconds": invert_s,
        "total_seconds": total_s,
        "rows": rows,
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    import torch

    with torch.inference_mode():  # as ComfyUI's executor runs every node
        sys.exit(main())
