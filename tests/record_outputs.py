"""Record (or compare) what every node of the pack produces on the tiny models, for refactors that must not
change behaviour.

    COMFYUI_PATH=../ComfyUI python tests/record_outputs.py save  before.pt   # on the old tree
    COMFYUI_PATH=../ComfyUI python tests/record_outputs.py check before.pt   # on the new tree

Runs, through ComfyUI's executor: the four shipped workflows with their tiny substitutes (the final latent and
the decoded frames), the SLR workflow with temporal consistency guidance added (both modes), and the ZSVD chain
on the tiny Wan, HunyuanVideo, EPS and V zero-SNR models with the switch on one block and each step rule.
``check`` asserts every recorded tensor is bit-identical (``torch.equal``) and prints one line per case.
"""

from __future__ import annotations

import copy
import json
import pathlib
import runpy
import sys
import tempfile

import torch

TESTS = pathlib.Path(__file__).resolve().parent  # on sys.path: the script's own folder
runpy.run_path(str(TESTS.parent / "pack_import.py"))["import_pack"]()

import host_harness  # noqa: E402
import test_host_inversion as thi  # noqa: E402
import test_host_workflows as thw  # noqa: E402


def _capture_all(prompt: dict, prefix: str) -> list[str]:
    keys = []
    for node_id, node in list(prompt.items()):
        ct = node["class_type"]
        if ct in ("VAEDecode", "SamplerCustomAdvanced", "ZSVR_DDPMInvert"):
            key = f"{prefix}/{ct}/{node_id}"
            prompt[f"cap_{node_id}"] = {"class_type": "ZSVRTest_Capture", "inputs": {"value": [node_id, 0], "key": key}}
            keys.append(key)
        if ct == "ZSVR_DDPMInvert":
            prompt[f"capm_{node_id}"] = {"class_type": "ZSVRTest_Capture",
                                         "inputs": {"value": node["inputs"]["model"], "key": f"{prefix}/model"}}
    return keys


def _workflow_prompts(host, wf) -> dict[str, dict]:
    prompts = {}
    for path in thw.WORKFLOWS:
        data = json.loads(path.read_text())
        tiny = thw.TINY[path.name]
        prompt = thw._substitute_files(host, wf.ui_to_api(data, thw._input_types(host)), tiny)
        prompts[path.name] = thw._tiny_run_prompt(prompt, tiny)
    slr = prompts["ZVRD video restoration (SLR) - SD1.5.json"]
    slr_model = next(i for i, n in slr.items() if n["class_type"] == "ZSVR_SLRTemporalAttention")
    loader = next(i for i, n in slr.items() if n["class_type"] == "ZSVR_LoadVideo")
    ckpt = next(i for i, n in slr.items() if n["class_type"] == "CheckpointLoaderSimple")
    for mode in ("x0", "through model"):
        p = copy.deepcopy(slr)
        # through model: on the bare checkpoint model and without the ControlNet (neither can be differentiated)
        source = [slr_model, 0] if mode == "x0" else [ckpt, 0]
        p["tcg"] = {"class_type": "ZSVR_TemporalConsistencyGuidance", "inputs": {
            "model": source, "image": [loader, 0], "weight": 0.2, "mode": mode, "frames_per_video": 0,
            "start_percent": 0.0, "end_percent": 1.0}}
        for node_id, node in p.items():
            if node["class_type"] == "CFGGuider":
                node["inputs"]["model"] = ["tcg", 0]
                if mode != "x0":
                    cn = node["inputs"]["positive"][0]
                    node["inputs"]["positive"] = p[cn]["inputs"]["positive"]
                    node["inputs"]["negative"] = p[cn]["inputs"]["negative"]
        prompts[f"zvrd_slr_sd15+tcg_{mode}"] = p
    return prompts


def _chain_prompts(host) -> dict[str, tuple[dict, dict]]:
    cases = {}
    for family in ("wan", "hunyuan", "eps", "v_zsnr"):
        for rule in ("ddpm", "zsvd", "ddim"):
            g = thi._graph(host, family, rule, 2, steps=6, remove_seed=99, strength=4.0, capture="x")
            if family in ("wan", "hunyuan"):
                g["sw"] = {"class_type": "ZSVR_AttentionSwitch", "inputs": {"model": ["m", 0], "blocks": "1",
                                                                             "start_percent": 0.0, "end_percent": 1.0}}
                g["gd"]["inputs"]["model"] = ["sw", 0]
            cases[f"chain/{family}/{rule}"] = (g, thi._latent(family))
    return cases


def record() -> dict[str, torch.Tensor]:
    comfy_dir, reason = host_harness.find_comfyui()
    if comfy_dir is None:
        raise SystemExit(reason)
    import importlib

    host = host_harness.Host(comfy_dir, pathlib.Path(tempfile.mkdtemp(prefix="zsvr-record-")))
    import tiny_models

    cog = host.models_dir / "diffusers" / "tiny_cogvideox_wf"
    if not (cog / "transformer" / "config.json").is_file():
        tiny_models.write_tiny_cogvideox(cog)
    wf = importlib.import_module(f"{host.pack.__name__}.nodes.workflow_format") \
        if (host_harness.PACK_DIR / "nodes" / "workflow_format.py").is_file() \
        else importlib.import_module(f"{host.pack.__name__}.headless.workflow_format")
    out: dict[str, torch.Tensor] = {}
    for name, prompt in _workflow_prompts(host, wf).items():
        keys = _capture_all(prompt, name)
        res = host.run(prompt)
        if not res.success:
            raise SystemExit(f"{name}: {res.error_message}")
        for key in keys:
            value = host.captured[key]
            if "/ZSVR_DDPMInvert/" in key:
                _record_inversion(out, key.rsplit("/ZSVR_DDPMInvert/", 1)[0], value, host.captured[f"{name}/model"])
                continue
            out[key] = (value["samples"] if isinstance(value, dict) else value).detach().clone()
    for name, (g, latent) in _chain_prompts(host).items():
        host.store["lat"] = latent
        g["cap_inv"] = {"class_type": "ZSVRTest_Capture", "inputs": {"value": ["inv", 0], "key": "inv"}}
        g["cap_m"] = {"class_type": "ZSVRTest_Capture", "inputs": {"value": ["m", 0], "key": "m"}}
        res = host.run(g)
        if not res.success:
            raise SystemExit(f"{name}: {res.error_message}")
        out[name] = host.captured["x"]["samples"].detach().clone()
        _record_inversion(out, name, host.captured["inv"], host.captured["m"])
    return out


def _record_inversion(out: dict, case: str, inversion, model) -> None:
    """For a ``zsvd`` inversion, the residual its last step added before issue 13, in the sampler's output space
    (``process_latent_out`` is affine: ``out(x - r) = out(x) - (out(r) - out(0))``)."""
    if inversion.rule == "zsvd" and inversion.stored[-1] is not None:
        r = inversion.stored[-1].detach().float()
        base = model.model
        out[f"{case}/zsvd_last_residual"] = (base.process_latent_out(r.clone())
                                             - base.process_latent_out(torch.zeros_like(r))).clone()


def _matches_without_residual(key: str, before: dict, after: torch.Tensor) -> bool:
    """Issue 13: rule zsvd no longer adds the last step's residual; the new final latent must be the old one
    minus exactly that residual (to float rounding)."""
    case = key.split("/SamplerCustomAdvanced/")[0]
    residual = before.get(f"{case}/zsvd_last_residual")
    old = before.get(key)
    if residual is None or old is None or old.shape != after.shape:
        return False
    expected = old - residual.to(old.dtype)
    return float((after - expected).norm() / expected.norm()) < 1e-5


def main(argv: list[str]) -> int:
    if len(argv) != 3 or argv[1] not in ("save", "check"):
        print(__doc__)
        return 2
    outputs = record()
    path = pathlib.Path(argv[2])
    if argv[1] == "save":
        torch.save(outputs, path)
        print(f"saved {len(outputs)} tensors to {path}")
        return 0
    before = torch.load(path)
    bad = changed = 0
    cases = sorted(k for k in set(before) | set(outputs) if not k.endswith("/zsvd_last_residual"))
    for key in cases:
        a, b = before.get(key), outputs.get(key)
        same = a is not None and b is not None and a.shape == b.shape and torch.equal(a, b)
        case = key.split("/SamplerCustomAdvanced/")[0].split("/VAEDecode/")[0]
        if not same and f"{case}/zsvd_last_residual" in before:
            if "/VAEDecode/" in key or _matches_without_residual(key, before, b if b is not None else a):
                print(f"issue 13  {key}: the old output minus the old last-step residual"
                      + (" (decoded frames of that latent)" if "/VAEDecode/" in key else ""))
                changed += 1
                continue
        diff = "" if same or a is None or b is None or a.shape != b.shape else f" max|diff| {float((a - b).abs().max()):.3g}"
        print(f"{'identical' if same else 'DIFFERENT'}  {key}{diff}")
        bad += not same
    print(f"{len(cases) - bad - changed} of {len(cases)} outputs bit-identical; {changed} changed only by issue 13's "
          f"zsvd last step; {bad} different")
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv))
