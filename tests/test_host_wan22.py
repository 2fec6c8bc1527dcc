"""Wan 2.2 A14B's pair of experts through one inversion and one edit, on the real host (tiny random models, fp32).

The pair is two tiny Wan 2.1-architecture models with different random weights (``tiny_wan21_t2v`` as the
high-noise expert, ``tiny_wan21_t2v_low_noise`` as the low-noise one). The reference is written here by hand:
the ComfyUI templates' rule (the first ``boundary * steps`` steps on the high-noise expert, the rest on the
low-noise one, as two ``KSamplerAdvanced`` with end/start step), each expert called directly through its
``apply_model``, and the inversion and replay steps of ``kernels.inversion``.
"""

from __future__ import annotations

import pytest
import torch

from host_harness import rel_error
from random_conditioning import RandomConditioning
from test_host_inversion import _graph, _latent

STEPS = 8
NULL_SEED, REMOVE_SEED, INVERSION_SEED = 7, 99, 11


@pytest.fixture(scope="module")
def experts(host):
    """(high, low): the two tiny experts as MODELs, each recording its calls into ``calls``."""
    import comfy.sd

    calls = []

    def recorder(name):
        def record(apply_model, args):
            calls.append((name, round(float(args["timestep"].flatten()[0]), 6), args["input"].shape[0]))
            return apply_model(args["input"], args["timestep"], **args["c"])
        return record

    pair = []
    for name, key in (("high", "wan"), ("low", "wan_low")):
        model = comfy.sd.load_diffusion_model(str(host.models[key]))
        model.set_model_unet_function_wrapper(recorder(name))
        pair.append(model)
    host.store["high"], host.store["low"] = pair
    return pair[0], pair[1], calls


def _pair_graph(host, rule, skip, boundary, *, strength=1.0, remove_seed=None, capture="out", pair=True):
    g = _graph(host, "wan", rule, skip, first_step=0, steps=STEPS, remove_seed=remove_seed, strength=strength,
               capture=capture)
    g["m"] = {"class_type": "ZSVRTest_Inject", "inputs": {"key": "high"}}
    g["ml"] = {"class_type": "ZSVRTest_Inject", "inputs": {"key": "low"}}
    if pair:
        for node in ("inv", "gd"):
            g[node]["inputs"].update(model_low_noise=["ml", 0], expert_boundary=boundary)
    return g


def _cond(seed):
    return RandomConditioning().make(seed, 6, 4096, 1.0)[0][0][0]


@torch.no_grad()
def _reference(high, low, rule, skip, switch_step, strength, remove_seed, latent):
    """The inversion and the edit, written out: steps before ``switch_step`` on ``high``, the rest on ``low``."""
    from zsvr.kernels import inversion as k
    import comfy.samplers

    sampling = high.get_model_object("model_sampling")
    sigmas = comfy.samplers.calculate_sigmas(sampling, "simple", STEPS)
    a, b = k.path_coefficients(sampling.noise_scaling, sigmas)
    x0 = high.model.process_latent_in(latent)
    null = _cond(NULL_SEED)
    remove = null if remove_seed is None else _cond(remove_seed)

    def predict(step, x, cond):
        expert = high if step < switch_step else low
        return expert.model.apply_model(x, sigmas[step].reshape(1), c_crossattn=cond)

    n = STEPS
    last_official = rule == "zsvd"  # the official loop stores nothing for the step to sigma 0
    stored = [None] * n
    for i in range(0, n - 1 if last_official else n):
        x_i = k.noisy_level(x0, a[i], b[i], INVERSION_SEED, i)
        x_next = k.noisy_level(x0, a[i + 1], b[i + 1], INVERSION_SEED, i + 1)
        c = k.step_coefficients(rule, a[i], b[i], a[i + 1], b[i + 1])
        d = x_next - k.apply_step(x_i, predict(i, x_i, null), c, None)
        stored[i] = d / c.std if c.std > 0 else d
    x = k.noisy_level(x0, a[skip], b[skip], INVERSION_SEED, skip)
    for j in range(skip, n):
        pred_null = predict(j, x, null)
        pred = pred_null if strength == 1.0 else \
            predict(j, x, remove) + strength * (pred_null - predict(j, x, remove))
        x = k.apply_step(x, pred, k.step_coefficients(rule, a[j], b[j], a[j + 1], b[j + 1]), stored[j])
    return high.model.process_latent_out(x)


@pytest.mark.parametrize("rule", ["ddpm", "zsvd"])
@pytest.mark.parametrize("boundary,switch_step", [(0.5, 4), (0.25, 2)])
def test_pair_inversion_and_edit_equal_a_two_model_reference(host, experts, rule, boundary, switch_step):
    """Every call goes to the expert owning its level (the templates' rule: boundary 0.5 of 8 steps = step 4), and
    the edit equals the hand-written two-model inversion and replay to 1e-5."""
    high, low, calls = experts
    host.store["lat"] = _latent("wan", seed=3)
    calls.clear()
    g = _pair_graph(host, rule, 1, boundary, strength=5.0, remove_seed=REMOVE_SEED, capture="pair_edit")
    g["inv"]["inputs"]["inversion_seed"] = INVERSION_SEED
    res = host.run(g)
    assert res.success, res.error_message
    import comfy.samplers

    schedule = comfy.samplers.calculate_sigmas(high.get_model_object("model_sampling"), "simple", STEPS)
    sigmas = [round(float(s), 6) for s in schedule]
    level = {s: i for i, s in enumerate(sigmas)}
    owner = {i: "high" if i < switch_step else "low" for i in range(STEPS)}
    assert calls and all(name == owner[level[s]] for name, s, _ in calls), calls
    inverted = STEPS - 1 if rule == "zsvd" else STEPS
    assert sorted(level[s] for _, s, rows in calls[:inverted]) == list(range(inverted))
    assert {level[s] for _, s, _ in calls[inverted:]} == set(range(1, STEPS))  # the edit, from skip 1
    ref = _reference(high, low, rule, 1, switch_step, 5.0, REMOVE_SEED, host.store["lat"]["samples"])
    out = host.captured["pair_edit"]["samples"]
    assert rel_error(out, ref) < 1e-5, rel_error(out, ref)
    # the pair matters: either expert alone gives another edit
    alone = _reference(high, low, rule, 1, STEPS, 5.0, REMOVE_SEED, host.store["lat"]["samples"])
    assert rel_error(out, alone) > 1e-3


@pytest.mark.parametrize("skip", [0, 3, 6])
def test_pair_strength_one_reconstructs(host, experts, skip):
    host.store["lat"] = _latent("wan", seed=5)
    res = host.run(_pair_graph(host, "ddpm", skip, 0.5, capture=f"pair_rec{skip}"))
    assert res.success, res.error_message
    assert rel_error(host.captured[f"pair_rec{skip}"]["samples"], host.store["lat"]["samples"]) < 1e-5


@pytest.mark.parametrize("rule", ["ddpm", "zsvd"])
def test_boundary_at_either_end_is_one_model_exactly(host, experts, rule):
    """Boundary 1: the high-noise expert alone (the low one is never called); 0: the low-noise one alone. Both
    bit-identical to the one-model graph."""
    high, low, calls = experts
    host.store["lat"] = _latent("wan", seed=6)
    outs = {}
    for key, boundary, pair, model in (("b1", 1.0, True, "high"), ("one_high", None, False, "high"),
                                       ("b0", 0.0, True, "low"), ("one_low", None, False, "low")):
        g = _pair_graph(host, rule, 2, boundary, strength=4.0, remove_seed=REMOVE_SEED, capture=key, pair=pair)
        if not pair:
            g["m"]["inputs"]["key"] = model
        calls.clear()
        res = host.run(g)
        assert res.success, res.error_message
        assert calls and {c[0] for c in calls} == {model}, (key, calls)
        outs[key] = host.captured[key]["samples"]
    assert torch.equal(outs["b1"], outs["one_high"])
    assert torch.equal(outs["b0"], outs["one_low"])


def test_each_expert_is_loaded_once_per_run_low_first_for_the_inversion(host, experts, monkeypatch):
    """The inversion reaches the low-noise levels first, the replay the high-noise ones: each run asks ComfyUI's
    model management for one expert, then the other, never for both at once."""
    import comfy.model_management

    high, low, _ = experts
    loads = []
    real = comfy.model_management.load_models_gpu

    def record(models, *args, **kwargs):
        loads.append(["high" if m.model is high.model else "low" if m.model is low.model else "other" for m in models])
        return real(models, *args, **kwargs)

    monkeypatch.setattr(comfy.model_management, "load_models_gpu", record)
    host.store["lat"] = _latent("wan", seed=8)
    g = _pair_graph(host, "ddpm", 2, 0.5, strength=3.0, remove_seed=REMOVE_SEED, capture="loads")
    g["inv"]["inputs"]["inversion_seed"] = 4242  # not cached
    res = host.run(g)
    assert res.success, res.error_message
    assert loads == [["low"], ["high"], ["high"], ["low"]], loads


def test_switch_on_both_experts_makes_the_edit_the_reconstruction(host, experts):
    """One ZSVR Attention Switch per expert: over all blocks of both, the edit is the reconstruction; on the
    high-noise expert alone it is not (the low-noise levels are edited)."""
    host.store["lat"] = _latent("wan", seed=9)
    for key, both in (("sw_both", True), ("sw_high", False)):
        g = _pair_graph(host, "ddpm", 2, 0.5, strength=6.0, remove_seed=REMOVE_SEED, capture=key)
        g["sw"] = {"class_type": "ZSVR_AttentionSwitch", "inputs": {"model": ["m", 0], "blocks": "all",
                                                                     "start_percent": 0.0, "end_percent": 1.0}}
        g["gd"]["inputs"]["model"] = ["sw", 0]
        if both:
            g["swl"] = {"class_type": "ZSVR_AttentionSwitch", "inputs": {"model": ["ml", 0], "blocks": "all",
                                                                          "start_percent": 0.0, "end_percent": 1.0}}
            g["gd"]["inputs"]["model_low_noise"] = ["swl", 0]
        res = host.run(g)
        assert res.success, res.error_message
    assert rel_error(host.captured["sw_both"]["samples"], host.store["lat"]["samples"]) < 1e-5
    assert rel_error(host.captured["sw_high"]["samples"], host.store["lat"]["samples"]) > 1e-4


def test_changing_skip_or_strength_keeps_the_pair_inversion_cached(host, experts):
    host.store["lat"] = _latent("wan", seed=10)
    first = host.run(_pair_graph(host, "ddpm", 2, 0.5, strength=3.0, remove_seed=REMOVE_SEED, capture="c1"))
    assert first.success, first.error_message
    second = host.run(_pair_graph(host, "ddpm", 4, 0.5, strength=5.0, remove_seed=REMOVE_SEED, capture="c2"))
    assert second.success, second.error_message
    assert "inv" not in second.executed and "inv" in second.cached
    third = host.run(_pair_graph(host, "ddpm", 4, 0.6, strength=5.0, remove_seed=REMOVE_SEED, capture="c3"))
    assert third.success, third.error_message
    assert "inv" in third.executed  # the boundary is part of what the inversion is


def test_bad_input_replay_with_another_pair_or_boundary(host, experts):
    host.store["lat"] = _latent("wan", seed=11)
    g = _pair_graph(host, "ddpm", 2, 0.5, capture="bad1")
    g["gd"]["inputs"]["expert_boundary"] = 0.25
    res = host.run(g)
    assert not res.success and "model_low_noise" in res.error_message and "0.5" in res.error_message, \
        res.error_message
    g = _pair_graph(host, "ddpm", 2, 0.5, capture="bad2")
    del g["gd"]["inputs"]["model_low_noise"]
    res = host.run(g)
    assert not res.success and "one model" in res.error_message, res.error_message


def test_bad_input_low_noise_expert_of_another_kind(host, experts):
    host.store["lat"] = _latent("wan", seed=12)
    g = _pair_graph(host, "ddpm", 2, 0.5, capture="bad3")
    g["shift"] = {"class_type": "ModelSamplingSD3", "inputs": {"model": ["ml", 0], "shift": 3.0}}
    g["inv"]["inputs"]["model_low_noise"] = ["shift", 0]
    res = host.run(g)
    assert not res.success and "'model_low_noise'" in res.error_message and "shift" in res.error_message, \
        res.error_message


# -- the pair under core context windows ---------------------------------------------------------------------------

def _windows(model_ref, length=4, overlap=2):
    return {"class_type": "ContextWindowsManual", "inputs": {
        "model": model_ref, "context_length": length, "context_overlap": overlap,
        "context_schedule": "standard_static", "context_stride": 1, "closed_loop": False, "fuse_method": "pyramid",
        "dim": 2}}


def test_pair_under_context_windows_reconstructs_and_needs_the_same_windows(host, experts):
    """Both experts in the same windows (8 latent frames in windows of 4): switched over all blocks, the edit
    is the reconstruction. Windows on one expert only are refused, naming model_low_noise."""
    host.store["lat"] = {"samples": torch.randn((1, 16, 8, 4, 4), generator=torch.Generator().manual_seed(13))}
    g = _pair_graph(host, "ddpm", 2, 0.5, strength=6.0, remove_seed=REMOVE_SEED, capture="pair_cw")
    g["cw"], g["cwl"] = _windows(["m", 0]), _windows(["ml", 0])
    for node in ("inv", "sig"):
        g[node]["inputs"]["model"] = ["cw", 0]
    g["inv"]["inputs"]["model_low_noise"] = ["cwl", 0]
    g["sw"] = {"class_type": "ZSVR_AttentionSwitch", "inputs": {"model": ["cw", 0], "blocks": "all",
                                                                 "start_percent": 0.0, "end_percent": 1.0}}
    g["swl"] = {"class_type": "ZSVR_AttentionSwitch", "inputs": {"model": ["cwl", 0], "blocks": "all",
                                                                  "start_percent": 0.0, "end_percent": 1.0}}
    g["gd"]["inputs"].update(model=["sw", 0], model_low_noise=["swl", 0])
    res = host.run(g)
    assert res.success, res.error_message
    assert rel_error(host.captured["pair_cw"]["samples"], host.store["lat"]["samples"]) < 1e-5
    g["inv"]["inputs"]["model_low_noise"] = ["ml", 0]
    res = host.run(g)
    assert not res.success and "'model_low_noise'" in res.error_message and "context windows" in res.error_message, \
        res.error_message


# -- Wan 2.2 TI2V 5B: WAN22_T2V, 48-channel latent, the Wan 2.2 VAE -----------------------------------------------

@pytest.fixture(scope="module")
def wan22(host):
    from host_harness import wan22_models

    return wan22_models(host)


def _graph_5b(host, skip, *, blocks=None, strength=1.0, windows=False, capture="out", steps=6):
    g = _graph(host, "wan", "ddpm", skip, first_step=0, steps=steps, remove_seed=REMOVE_SEED if blocks is not None
               or strength != 1.0 else None, strength=strength, capture=capture)
    g["m"]["inputs"]["unet_name"] = host.models["wan22"].name
    source = ["m", 0]
    if windows:
        g["cw"] = _windows(["m", 0])
        source = ["cw", 0]
        for node in ("inv", "sig", "gd"):
            g[node]["inputs"]["model"] = source
    if blocks is not None:
        g["sw"] = {"class_type": "ZSVR_AttentionSwitch", "inputs": {"model": source, "blocks": blocks,
                                                                     "start_percent": 0.0, "end_percent": 1.0}}
        g["gd"]["inputs"]["model"] = ["sw", 0]
    return g


def test_5b_is_wan22_with_48_latent_channels(host, wan22):
    import comfy.latent_formats
    import comfy.sd

    model = comfy.sd.load_diffusion_model(str(wan22["wan22"]))
    assert type(model.model).__name__ == "WAN22"
    assert type(model.model.latent_format) is comfy.latent_formats.Wan22
    assert model.model.latent_format.latent_channels == 48
    assert type(model.model.model_config).__name__ == "WAN22_T2V"


@pytest.mark.parametrize("windows", [False, True], ids=["whole", "context-windows"])
def test_5b_zsvd_chain_and_switch_reconstruct(host, wan22, windows):
    """The ZSVD chain on the 5B model (48-channel latent, 8 latent frames): strength 1 reconstructs; switched over
    all blocks the edit is the reconstruction; over one block it is an edit. With windows of 4 latent frames too."""
    frames = 8 if windows else 3
    host.store["lat"] = {"samples": torch.randn((1, 48, frames, 4, 4), generator=torch.Generator().manual_seed(14))}
    tag = "cw" if windows else "whole"
    for key, blocks, strength in ((f"5b_rec_{tag}", None, 1.0), (f"5b_all_{tag}", "all", 6.0),
                                  (f"5b_one_{tag}", "1", 6.0)):
        res = host.run(_graph_5b(host, 2, blocks=blocks, strength=strength, windows=windows, capture=key))
        assert res.success, res.error_message
    lat = host.store["lat"]["samples"]
    assert rel_error(host.captured[f"5b_rec_{tag}"]["samples"], lat) < 1e-5
    assert rel_error(host.captured[f"5b_all_{tag}"]["samples"], lat) < 1e-5
    assert rel_error(host.captured[f"5b_one_{tag}"]["samples"], lat) > 1e-4


def test_wan22_vae_frame_rule_and_latent(host, wan22):
    """The Wan 2.2 VAE: 4k+1 frames to k+1 latent frames of 48 channels at 1/16 size, and back to 4k+1 frames; the
    5B model inverts and replays its latent exactly."""
    host.store["frames"] = torch.rand((9, 32, 32, 3), generator=torch.Generator().manual_seed(15))
    g = _graph_5b(host, 2, capture="vae_rec")
    g["vae"] = {"class_type": "VAELoader", "inputs": {"vae_name": wan22["wan22_vae"].name}}
    g["img"] = {"class_type": "ZSVRTest_Inject", "inputs": {"key": "frames"}}
    g["lat"] = {"class_type": "VAEEncode", "inputs": {"pixels": ["img", 0], "vae": ["vae", 0]}}
    g["dec"] = {"class_type": "VAEDecode", "inputs": {"samples": ["smp", 0], "vae": ["vae", 0]}}
    g["cap_lat"] = {"class_type": "ZSVRTest_Capture", "inputs": {"value": ["lat", 0], "key": "vae_lat"}}
    g["cap_img"] = {"class_type": "ZSVRTest_Capture", "inputs": {"value": ["dec", 0], "key": "vae_img"}}
    res = host.run(g)
    assert res.success, res.error_message
    latent = host.captured["vae_lat"]["samples"]
    assert tuple(latent.shape) == (1, 48, 3, 2, 2)
    assert rel_error(host.captured["vae_rec"]["samples"], latent) < 1e-5
    decoded = host.captured["vae_img"]
    assert tuple(decoded.shape) == (9, 32, 32, 3) and torch.isfinite(decoded).all()
