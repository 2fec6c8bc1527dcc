"""ZVRD on the real host (tiny SD1.5 U-Net, fp32, frames = latent batch [4, 4, 8, 8]): SLR temporal attention,
noise sharing and early stop."""

from __future__ import annotations

import logging
import sys

import pytest
import torch

from host_harness import add_sampling, input_error, rel_error, run_samples, sd15_sampling_inputs
from unet_layers import LayerCapture, Observer, assert_refuses_other_than_image_unets, attn1_module
from zsvr.kernels import noise_sharing as ns
from zsvr.kernels import optical_flow as of
from zsvr.kernels import temporal_attention as ta

FRAMES = 4
STEPS = 2
NEIGHBOUR_LAYER = ("output", 0)    # tiny SD1.5: output blocks 0-1 at half resolution (4x4 tokens)
TRAJECTORY_LAYER = ("output", 2)   # output blocks 2-3 at latent resolution (8x8 tokens): trajectory layers


# -- helpers --------------------------------------------------------------------------------------------------
def _graph(host, *, model="m", slr=None, latent_key="lat", capture="out", steps=STEPS, denoise=0.5, cfg=3.0,
           neg_tokens=6, sampler="euler", noise=None, sharing=None, early=None):
    """[UNETLoader | injected model] [-> ZSVR_SLRTemporalAttention] -> CFGGuider -> SamplerCustomAdvanced.

    ``noise``: None = DisableNoise, "random" = RandomNoise(0), "shared" = the NoiseSharing node's NOISE.
    ``sharing``: inputs of a ZSVR_NoiseSharing wrapping the sampler; ``early``: inputs of a ZSVR_EarlyStop after it.
    """
    g = sd15_sampling_inputs(host, model=None if model == "m" else model, latent_key=latent_key, capture=capture,
                             neg_tokens=neg_tokens)
    model_ref = ["m", 0]
    if slr is not None:
        inputs = {"model": model_ref, "trajectory_start": 0.0, "frames_per_video": 0, "start_percent": 0.0,
                  "end_percent": 1.0}
        inputs.update({k: v for k, v in slr.items() if k != "image"})
        if slr.get("image"):
            g["slr_img"] = {"class_type": "ZSVRTest_Inject", "inputs": {"key": slr["image"]}}
            inputs["image"] = ["slr_img", 0]
        g["slr"] = {"class_type": "ZSVR_SLRTemporalAttention", "inputs": inputs}
        model_ref = ["slr", 0]
    if isinstance(sampler, str):
        g["smp_sel"] = {"class_type": "KSamplerSelect", "inputs": {"sampler_name": sampler}}
    else:
        g["smp_sel"] = {"class_type": "ZSVRTest_Inject", "inputs": {"key": sampler["inject"]}}
    sampler_ref = ["smp_sel", 0]
    if sharing is not None:
        inputs = {"noise_seed": 7, "sampler": sampler_ref, "lambda": 1.0}
        inputs.update({k: v for k, v in sharing.items() if k != "image"})
        if sharing.get("image"):
            g["ns_img"] = {"class_type": "ZSVRTest_Inject", "inputs": {"key": sharing["image"]}}
            inputs["image"] = ["ns_img", 0]
        g["ns"] = {"class_type": "ZSVR_NoiseSharing", "inputs": inputs}
        g["cap_ns"] = {"class_type": "ZSVRTest_Capture", "inputs": {"value": ["ns", 1], "key": capture + "_sampler"}}
        sampler_ref = ["ns", 1]
    if early is not None:
        g["es"] = {"class_type": "ZSVR_EarlyStop", "inputs": {"sampler": sampler_ref, **early}}
        sampler_ref = ["es", 0]
    if noise is None:
        g["noise"] = {"class_type": "DisableNoise", "inputs": {}}
        noise_ref = ["noise", 0]
    elif noise == "random":
        g["noise"] = {"class_type": "RandomNoise", "inputs": {"noise_seed": 0}}
        noise_ref = ["noise", 0]
    else:
        noise_ref = ["ns", 0]
    return add_sampling(g, model=model_ref, noise=noise_ref, sampler=sampler_ref, steps=steps, denoise=denoise,
                        cfg=cfg)


def _latent(seed=0, identical=False, size=8):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(1 if identical else FRAMES, 4, size, size, generator=gen) * 3
    return {"samples": x.expand(FRAMES, 4, size, size).contiguous() if identical else x}


def _video(frames=FRAMES, size=64, shift=8, seed=0, static=False):
    """IMAGE [F, size, size, 3]: a noise texture moving ``shift`` px to the right per frame (wrapping)."""
    gen = torch.Generator().manual_seed(seed)
    base = torch.rand(3, size // 8, size // 8, generator=gen)  # smooth enough for DIS at 64 px
    base = torch.nn.functional.interpolate(base[None], size=(size, size), mode="bicubic", align_corners=False)[0]
    base = base.clamp(0, 1)
    out = [torch.roll(base, shifts=0 if static else shift * t, dims=2) for t in range(frames)]
    return torch.stack(out).permute(0, 2, 3, 1).contiguous()


def _pack_module(host, name):
    return sys.modules[host.pack.__name__ + name]


@pytest.fixture(scope="module")
def unet(host):
    import comfy.sd

    return comfy.sd.load_diffusion_model(str(host.models["sd15"]))


def _slr(host, model, trajectory_start=0.0, frames_per_video=0, image=None, start=0.0, end=1.0):
    node = host.nodes.NODE_CLASS_MAPPINGS["ZSVR_SLRTemporalAttention"]
    return node.execute(model, trajectory_start, frames_per_video, image, start, end).result[0]


def _patch_of(model):
    return model.model_options["transformer_options"]["patches"]["attn1_patch"][0]


def _observe(host, model):
    """Install a debug observer on ``model`` (the pack's ``run_state.OBSERVER_KEY``); returns it."""
    observer = Observer()
    observer.install(model, _pack_module(host, ".nodes.run_state").OBSERVER_KEY)
    return observer






def _labels(call, fpv):
    chunks = len(call["cond_or_uncond"])
    chunk = call["n"].shape[0] // chunks
    per = chunk if fpv == 0 else fpv
    video = [c * 1000 + r // per for c in range(chunks) for r in range(chunk)]
    position = [r % per for _ in range(chunks) for r in range(chunk)]
    return video, position


# -- SLR: equalities with the unpatched model --------------------------------------------------------------------
def test_slr_on_identical_frames_equals_the_unpatched_model(host, unet):
    host.store["same"] = _latent(identical=True)
    host.store["static_video"] = _video(static=True)
    plain = run_samples(host, _graph(host, latent_key="same", capture="plain"), "plain")
    # through the executor, with the input video as guidance
    out = run_samples(host, _graph(host, latent_key="same", slr={"image": "static_video"}, capture="slr_img"), "slr_img")
    assert rel_error(out, plain) < 1e-5
    # guidance from the model's own x0 prediction; check that trajectory attention really ran
    model = _slr(host, unet, trajectory_start=0.0)
    observer = _observe(host, model)
    host.store["slr_x0"] = model
    out = run_samples(host, _graph(host, model="slr_x0", latent_key="same", capture="slr_x0_out"), "slr_x0_out")
    assert rel_error(out, plain) < 1e-5
    stats = observer.events
    assert stats["slr.trajectory"] > 0 and stats["slr.neighbour"] > 0 and stats["slr.fallback"] > 0  # step 1: no x0


# -- SLR: one real layer against the literal eq. 5 (and eq. 6-7) --------------------------------------------------
@pytest.mark.parametrize("neg_tokens,fpv", [(6, 0), (7, 2)])  # cond/uncond batched, one video | separate, two videos
def test_neighbour_attention_in_a_real_layer_matches_eq_5(host, unet, neg_tokens, fpv):
    caps = {b: LayerCapture(b) for b in (NEIGHBOUR_LAYER, TRAJECTORY_LAYER)}
    model = _slr(host, unet, trajectory_start=0.99, frames_per_video=fpv)  # trajectory replace installed, inactive
    for cap in caps.values():
        cap.install(model)
    host.store["slr_eq5"] = model
    host.store["lat"] = _latent(seed=3)
    run_samples(host, _graph(host, model="slr_eq5", neg_tokens=neg_tokens, capture="eq5"), "eq5")
    trajectory_sigma = _patch_of(model).trajectory_sigma
    worst = 0.0
    for block, cap in caps.items():
        attn = attn1_module(unet, block)
        assert len(cap.calls) == (STEPS if neg_tokens == 6 else 2 * STEPS)
        # the trajectory layer's replace computes eq. 5 itself until T_TA (the last step is past 0.99 here)
        calls = [c for c in cap.calls if block != TRAJECTORY_LAYER or c["sigma"] > trajectory_sigma]
        assert calls
        for call in calls:
            n = call["n"]
            assert call["context"].shape[1] == 2 * n.shape[1]  # [h_prev ; h_next]
            video, position = _labels(call, fpv)
            with torch.no_grad():
                ref = attn.to_out(ta.reference_neighbour_attention(attn.to_q(n), attn.to_k(n), attn.to_v(n),
                                                                   call["heads"], video, position))
            err = float((call["out"] - ref).abs().max())
            assert err < 1e-5, (block, err)
            assert float(ref.abs().max()) > 1e-2
            worst = max(worst, err)
    print(f"SLR eq. 5 in layers {NEIGHBOUR_LAYER} and {TRAJECTORY_LAYER}: max abs error {worst:.2e}")


def test_trajectory_attention_in_a_real_layer_matches_eq_6_7(host, unet):
    """Moving input video as guidance: the trajectory layer's output is to_out(eq. 6-7 on eq. 5) with the
    correspondences the node chose, and flow-based ones were chosen."""
    cap = LayerCapture(TRAJECTORY_LAYER)
    host.store["moving"] = _video(seed=1)
    model = cap.install(_slr(host, unet, trajectory_start=0.0, image=host.store["moving"]))
    observer = _observe(host, model)
    host.store["slr_traj"] = model
    host.store["lat"] = _latent(seed=4)
    out = run_samples(host, _graph(host, model="slr_traj", capture="traj"), "traj")
    neighbour_only = run_samples(host, _graph(host, slr={"trajectory_start": 1.0}, capture="traj_off"), "traj_off")
    assert rel_error(out, neighbour_only) > 1e-4  # trajectory attention changes the result
    assert observer.events["slr.trajectory"] > 0 and observer.chosen()["flow"] > 0
    history = observer.runs[-1].history  # the run's state: the last step's choices
    call = cap.calls[-1]  # the last step
    attn = attn1_module(unet, TRAJECTORY_LAYER)
    n = call["n"]
    video, position = _labels(call, 0)
    with torch.no_grad():
        o = ta.reference_neighbour_attention(attn.to_q(n), attn.to_k(n), attn.to_v(n), call["heads"], video, position)
        for c, value in enumerate(call["cond_or_uncond"]):
            rows = list(range(c * FRAMES, (c + 1) * FRAMES))
            chosen = [history[(TRAJECTORY_LAYER, 0, value, a, a + 1, (8, 8))] for a in range(FRAMES - 1)]
            o[rows] = ta.trajectory_attention(o[rows], [f for f, _ in chosen], [b for _, b in chosen], call["heads"])
        ref = attn.to_out(o)
    assert float((call["out"] - ref).abs().max()) < 1e-5


def test_core_context_windows_use_the_windows_frames(host, unet):
    """ContextWindowsManual (dim 0, windows 0-3 and 2-5 of 6 frames): neighbours are the window's frames, and the
    trajectories read the full-batch x0 prediction at the window's frame indices.

    5 steps for 6 frames: ComfyUI 0.3.64's context handler only broadcasts when steps + 1 equals the batch."""
    node = host.nodes.NODE_CLASS_MAPPINGS["ContextWindowsManual"]
    windowed = node.execute(unet, 4, 2, "standard_static", 1, False, "flat", 0).result[0]
    cap = LayerCapture(NEIGHBOUR_LAYER)
    model = cap.install(_slr(host, windowed, trajectory_start=0.0))
    observer = _observe(host, model)
    host.store["slr_cw"] = model
    gen = torch.Generator().manual_seed(9)
    host.store["lat6"] = {"samples": torch.randn(6, 4, 8, 8, generator=gen) * 3}
    run_samples(host, _graph(host, model="slr_cw", latent_key="lat6", capture="cw", steps=5), "cw")
    assert observer.events["slr.trajectory"] > 0
    attn = attn1_module(unet, NEIGHBOUR_LAYER)
    for k, call in enumerate(cap.calls):
        window = (0, 1, 2, 3) if k % 2 == 0 else (2, 3, 4, 5)  # the handler runs the windows in order
        chunks = len(call["cond_or_uncond"])
        video = [c for c in range(chunks) for _ in window]
        with torch.no_grad():
            n = call["n"]
            ref = attn.to_out(ta.reference_neighbour_attention(attn.to_q(n), attn.to_k(n), attn.to_v(n),
                                                               call["heads"], video, list(window) * chunks))
        assert float((call["out"] - ref).abs().max()) < 1e-5


def test_missing_flow_source_falls_back_and_warns_once(host, unet, caplog):
    """Once per run: the patch looks its run state up in the call's options, where the OUTER_SAMPLE wrapper put it."""
    SLR = _pack_module(host, ".nodes.engines.slr_temporal_attention")
    patch = _patch_of(_slr(host, unet, trajectory_start=0.0))
    q = torch.randn(FRAMES, 64, 320)
    o = torch.randn(FRAMES, 64, 320)
    extra = {"cond_or_uncond": [0], "n_heads": 1, "activations_shape": [FRAMES, 320, 8, 8],
             "sigmas": torch.tensor([1.0]), "sample_sigmas": torch.tensor([5.0, 1.0, 0.0]),
             "block": TRAJECTORY_LAYER, "block_index": 0, patch.key: SLR.SLRRun()}
    with caplog.at_level(logging.WARNING, logger="zsvr"):
        for _ in range(3):
            assert torch.equal(patch.trajectory(q, o, extra), o)
    warnings = [r for r in caplog.records if "no flow source" in r.getMessage()]
    assert len(warnings) == 1
    caplog.clear()
    extra["sigmas"] = torch.tensor([5.0])  # the first step of a run: expected, silent
    extra[patch.key] = SLR.SLRRun()
    with caplog.at_level(logging.WARNING, logger="zsvr"):
        patch.trajectory(q, o, extra)
    assert not caplog.records


def test_the_input_model_is_left_untouched(host, unet):
    before = repr(unet.model_options)
    patched = _slr(host, unet, image=_video())
    assert patched is not unet and repr(unet.model_options) == before
    replaces = patched.model_options["transformer_options"]["patches_replace"]["attn1"]
    assert set(replaces) == {("output", 2, 0), ("output", 3, 0)}  # the largest decoder resolution only


# -- noise sharing -----------------------------------------------------------------------------------------------
def _recording_sampler(store):
    import comfy.samplers

    def record(model, x, sigmas, extra_args=None, callback=None, disable=None, noise_sampler=None):
        store.append((x.clone(), [noise_sampler(sigmas[0], sigmas[1]) for _ in range(3)]))
        return x

    return comfy.samplers.KSAMPLER(record)


def test_noise_sharing_noise_and_step_noise_are_shared(host):
    seen: list = []
    host.store["rec"] = _recording_sampler(seen)
    host.store["zeros"] = {"samples": torch.zeros(FRAMES, 4, 8, 8)}  # an empty latent: x_T is the scaled noise
    run_samples(host, _graph(host, sampler={"inject": "rec"}, latent_key="zeros", noise="shared", sharing={"noise_seed": 11},
                             denoise=1.0, capture="rec_out"), "rec_out")
    x_t, zs = seen[-1]
    assert all(torch.equal(x_t[i], x_t[0]) for i in range(FRAMES))  # same x_T (noise-scaled) for every frame
    for z in zs:
        assert z.shape == (FRAMES, 4, 8, 8) and z.dtype == torch.float32
        assert all(torch.equal(z[i], z[0]) for i in range(FRAMES))  # same z for every frame
    assert not torch.equal(zs[0], zs[1])  # a fresh draw per step
    # the NOISE output on an image latent and on a video latent [B, C, T, H, W]
    noise = host.captured["rec_out_sampler"]
    node = host.nodes.NODE_CLASS_MAPPINGS["ZSVR_NoiseSharing"]
    noise_obj = node.execute(11, noise, **{"lambda": 1.0}).result[0]
    video = noise_obj.generate_noise({"samples": torch.zeros(2, 16, 5, 4, 4)})
    assert all(torch.equal(video[:, :, t], video[:, :, 0]) for t in range(5))
    assert not torch.equal(video[0], video[1])  # batch items of a video latent keep their own noise
    first = noise_obj.generate_noise({"samples": torch.zeros(FRAMES, 4, 8, 8)})
    assert torch.equal(first, noise_obj.generate_noise({"samples": torch.zeros(FRAMES, 4, 8, 8)}))  # reproducible
    assert all(torch.equal(first[i], first[0]) for i in range(FRAMES))


def test_noise_sharing_lambda_one_is_unchanged_and_blending_is_wired(host):
    NS = _pack_module(host, ".nodes.engines.noise_sharing")
    host.store["moving"] = _video(seed=2)
    runs = {}
    for name, sharing in {"plain": {}, "lam1": {"image": "moving"}, "blend": {"image": "moving", "lambda": 0.5}}.items():
        seen: list = []
        host.store["rec"] = _recording_sampler(seen)
        host.store["lat"] = _latent(seed=6)
        run_samples(host, _graph(host, sampler={"inject": "rec"}, noise="shared", sharing=sharing, capture=f"ns_{name}"),
                    f"ns_{name}")
        runs[name] = (seen[-1][1], host.captured[f"ns_{name}_sampler"])
    plain, lam1, blend = (torch.stack(runs[k][0]) for k in ("plain", "lam1", "blend"))
    assert torch.equal(lam1, plain)  # lambda 1 leaves the shared noise unchanged, image or not
    assert torch.equal(blend[:, 0], plain[:, 0])  # frame 0 is never changed
    assert not torch.equal(blend[:, 1:], plain[:, 1:])
    flow, valid = of.latent_flow(host.store["moving"], FRAMES, (8, 8))
    assert float(flow[:, 0].median()) == pytest.approx(-1.0, abs=0.1)  # 8 px right per frame = 1 latent px back
    for k in range(plain.shape[0]):  # exactly eq. 11 of the kernel on the shared noise
        assert torch.equal(blend[k], ns.blend_noise(plain[k], flow, valid, 0.5, 0))
    sampler = runs["blend"][1].noise_sampler_for(torch.zeros(FRAMES, 4, 8, 8), 0)  # the same wiring, drawn many
    draws = torch.stack([sampler()[1:] for _ in range(40)])  # times: unit variance
    assert 0.95 < float(draws.std()) < 1.05
    assert float(valid.float().mean()) > 0.5


def test_noise_sharing_on_a_video_latent_maps_image_frames_to_latent_time(host):
    import comfy.samplers

    NS = _pack_module(host, ".nodes.engines.noise_sharing")
    assert of.image_frames_for(5, 5) == [0, 1, 2, 3, 4]
    assert of.image_frames_for(17, 5) == [0, 4, 8, 12, 16]  # (T-1)*4+1 frames of a causal video VAE
    assert of.image_frames_for(6, 5) is None and of.image_frames_for(4, 5) is None
    video = _video(frames=17, shift=2).permute(0, 3, 1, 2).contiguous()  # 2 px per frame: 8 px per latent step
    sampler = NS.NoiseSharingSampler(comfy.samplers.sampler_object("euler_ancestral"), 5, 0.5, video)
    noise = sampler.noise_sampler_for(torch.zeros(2, 16, 5, 8, 8), 2)
    shared, z = noise.draw()
    assert z.shape == (2, 16, 5, 8, 8) and torch.equal(z[:, :, 0], shared[:, :, 0])
    assert all(torch.equal(shared[:, :, t], shared[:, :, 0]) for t in range(5))
    assert noise.flow.shape == (4, 2, 8, 8) and float(noise.flow[:, 0].median()) == pytest.approx(-1.0, abs=0.1)
    assert not torch.equal(z[:, :, 1:], shared[:, :, 1:])
    InputError = input_error(host)
    with pytest.raises(InputError, match="'image'.*17 frames for a latent with 6 frames"):
        sampler.noise_sampler_for(torch.zeros(1, 16, 6, 8, 8), 2)


def test_early_stop_at_the_last_step_equals_no_early_stop_with_shared_noise(host):
    host.store["same"] = _latent(seed=7, identical=True)
    kw = dict(latent_key="same", sampler="euler_ancestral", noise="shared", sharing={"noise_seed": 3}, denoise=1.0)
    plain = run_samples(host, _graph(host, capture="es_none", **kw), "es_none")
    by_percent = run_samples(host, _graph(host, early={"stop_step": 0, "stop_percent": 1.0}, capture="es_pct", **kw), "es_pct")
    by_step = run_samples(host, _graph(host, early={"stop_step": STEPS, "stop_percent": 0.5}, capture="es_step", **kw),
                          "es_step")
    assert torch.equal(by_percent, plain) and torch.equal(by_step, plain)
    early = run_samples(host, _graph(host, early={"stop_step": 1, "stop_percent": 1.0}, capture="es_1", **kw), "es_1")
    assert not torch.equal(early, plain)
    # shared x_T and z on identical frames with a frame-independent model: identical frames out
    assert all(rel_error(plain[i], plain[0]) < 1e-6 for i in range(FRAMES))
    random = run_samples(host, _graph(host, capture="es_rand", **{**kw, "noise": "random"}), "es_rand")
    assert rel_error(random[1], random[0]) > 1e-2


# -- bad input ---------------------------------------------------------------------------------------------------
def test_bad_input_image_frame_count(host, unet):
    host.store["lat"] = _latent(seed=8)
    host.store["short"] = _video(frames=3)
    res = host.run(_graph(host, slr={"image": "short"}, capture="bad_slr"))
    assert not res.success and "'image'" in res.error_message and "3 frames" in res.error_message
    seen: list = []
    host.store["rec"] = _recording_sampler(seen)
    res = host.run(_graph(host, sampler={"inject": "rec"}, noise="shared", sharing={"image": "short", "lambda": 0.5},
                          capture="bad_ns"))
    assert not res.success and "'image'" in res.error_message and "3 frames" in res.error_message


def test_bad_input_lambda_and_sampler(host):
    import comfy.samplers

    InputError = input_error(host)
    node = host.nodes.NODE_CLASS_MAPPINGS["ZSVR_NoiseSharing"]
    ks = comfy.samplers.sampler_object("euler_ancestral")
    for lam in (-0.1, 1.5, float("nan")):
        with pytest.raises(InputError, match="'lambda'"):
            node.execute(0, ks, **{"lambda": lam})
    res = host.run(_graph(host, sharing={"lambda": 1.5}, capture="bad_lam"))
    assert not res.valid and "lambda" in res.error_message
    early = host.nodes.NODE_CLASS_MAPPINGS["ZSVR_EarlyStop"].execute(ks, 0, 0.8).result[0]
    with pytest.raises(InputError, match="'sampler'.*KSAMPLER"):
        node.execute(0, early, **{"lambda": 1.0})


def test_bad_input_slr_model_and_settings(host, unet):
    InputError = input_error(host)
    assert_refuses_other_than_image_unets(host, lambda model: _slr(host, model))
    with pytest.raises(InputError, match="'trajectory_start'"):
        _slr(host, unet, trajectory_start=1.5)
    with pytest.raises(InputError, match="'start_percent'"):
        _slr(host, unet, start=0.8, end=0.2)
    host.store["lat"] = _latent()
    res = host.run(_graph(host, slr={"frames_per_video": 3}, capture="bad_fpv"))
    assert not res.success and "'frames_per_video'" in res.error_message


# -- clones, run state and host syncs (issue 12, items 1 and 9) ----------------------------------------------------
def _fresh_latent(host, key, samples):
    """A new LATENT object under ``key`` (its id changes, so the executor runs the sampler again); the old one is
    kept alive so its id is never reused."""
    host.store.setdefault("_kept", []).append(host.store.get(key))
    host.store[key] = {"samples": samples.clone()}


def _swcfa_after(host, model, radius=0):
    """Another patch node after the SLR patch: ZSVR_SWCFA clones the model (radius 0 installs nothing)."""
    node = host.nodes.NODE_CLASS_MAPPINGS["ZSVR_SWCFA"]
    return node.execute(model, radius, 0, "all", 0.0, 1.0).result[0]


@pytest.mark.parametrize("guidance", ["x0", "image"])
def test_slr_clones_sample_like_the_patched_model_run_after_run(host, unet, guidance):
    """ModelPatcher.clone() deep-copies model_options: a clone made after the patch (by a LoRA loader, another
    patch node, ...) must not carry a copy of the run state (captured x0, history) into its second run."""
    host.store["moving"] = _video(seed=5)
    kw = {"trajectory_start": 0.0, "image": host.store["moving"] if guidance == "image" else None}
    latent = _latent(seed=12)["samples"]
    key = f"slr_clone_{guidance}"
    host.store[key] = _slr(host, unet, **kw)
    _fresh_latent(host, "lat", latent)
    reference = run_samples(host, _graph(host, model=key, capture=key), key)
    patched = _slr(host, unet, **kw)
    for name, model in (("clone", patched.clone()), ("chained", _swcfa_after(host, patched))):
        observer = _observe(host, model)
        host.store[key] = model
        for run in range(2):
            _fresh_latent(host, "lat", latent)
            out = run_samples(host, _graph(host, model=key, capture=key), key)
            assert torch.equal(out, reference), (guidance, name, run)
        assert len(observer.runs) == 2 and observer.runs[0] is not observer.runs[1]  # a fresh state per run
        assert observer.events["slr.trajectory"] > 0
    # the configuration is shared, not copied: every clone's hooks reach the one patch object
    assert _patch_of(patched.clone()) is _patch_of(patched)


class _SyncCounter:
    """Counts ``Tensor.item`` / ``tolist`` / ``cpu`` calls made by the pack's code while one of the wrapped
    attention patches runs (the calls that read a device tensor back to the host)."""

    METHODS = ("item", "tolist", "cpu")

    def __init__(self, monkeypatch, pack_dir):
        import inspect

        self.depth = 0
        self.calls: list[tuple[str, str, int]] = []
        for name in self.METHODS:
            original = getattr(torch.Tensor, name)

            def counted(tensor, *args, _original=original, _name=name, **kwargs):
                if self.depth > 0:
                    caller = inspect.currentframe().f_back
                    if caller is not None and caller.f_code.co_filename.startswith(pack_dir):
                        self.calls.append((_name, caller.f_code.co_filename, caller.f_lineno))
                return _original(tensor, *args, **kwargs)

            monkeypatch.setattr(torch.Tensor, name, counted)

    def scoped(self, fn):
        def inside(*args, **kwargs):
            self.depth += 1
            try:
                return fn(*args, **kwargs)
            finally:
                self.depth -= 1

        return inside

    def wrap_attention_patches(self, model):
        """Run every attn1 patch and attn1 replace of ``model`` inside the counting scope."""
        patches = model.model_options["transformer_options"]
        attn1 = patches["patches"]["attn1_patch"]
        attn1[:] = [self.scoped(p) for p in attn1]
        replaces = patches.get("patches_replace", {}).get("attn1", {})
        for block in list(replaces):
            replaces[block] = self.scoped(replaces[block])
        return model


def test_attention_patches_make_no_host_syncs(host, unet, monkeypatch):
    """SLR (cross-neighbour and trajectory attention, x0 and image guidance) and SW-CFA read nothing back to the
    host in their per-layer paths; only the debug observer's statistics do."""
    import os

    pack_dir = os.path.dirname(host.pack.__file__)
    host.store["moving"] = _video(seed=6)
    latent = _latent(seed=13)["samples"]
    counter = _SyncCounter(monkeypatch, pack_dir)
    for name, image in (("x0", None), ("image", host.store["moving"])):
        model = _swcfa_after(host, _slr(host, unet, trajectory_start=0.0, image=image), radius=2)
        counter.wrap_attention_patches(model)
        host.store["sync_model"] = model
        _fresh_latent(host, "lat", latent)
        run_samples(host, _graph(host, model="sync_model", capture="sync"), "sync")
        assert counter.calls == [], (name, counter.calls)
    # the debug observer's statistics are the one place that reads back (bincount(...).tolist())
    model = _swcfa_after(host, _slr(host, unet, trajectory_start=0.0, image=host.store["moving"]), radius=2)
    counter.wrap_attention_patches(model)
    observer = _observe(host, model)
    host.store["sync_model"] = model
    _fresh_latent(host, "lat", latent)
    run_samples(host, _graph(host, model="sync_model", capture="sync"), "sync")
    assert observer.chosen() and any(call[0] == "tolist" for call in counter.calls)


def test_noise_sharing_takes_the_frame_axis_from_the_sampled_model(host, unet):
    """The SAMPLER asks the model-family registry about the model the run samples (``model_wrap.inner_model``)."""
    import types

    import comfy.sd

    NS = _pack_module(host, ".nodes.engines.noise_sharing")
    InputError = input_error(host)
    wan = comfy.sd.load_diffusion_model(str(host.models["wan"]))
    image_run = types.SimpleNamespace(inner_model=unet.model)
    video_run = types.SimpleNamespace(inner_model=wan.model)
    assert NS.model_frame_axis(image_run, torch.zeros(FRAMES, 4, 8, 8)) == 0
    assert NS.model_frame_axis(video_run, torch.zeros(1, 16, 5, 8, 8)) == 2
    with pytest.raises(InputError, match="'latent_image'.*the model samples latents \\[B, C, T, H, W\\]"):
        NS.model_frame_axis(video_run, torch.zeros(FRAMES, 16, 8, 8))


# -- state that outlives a run ----------------------------------------------------------------------------------
def _live(kind) -> list:
    import gc

    gc.collect()
    return [o for o in gc.get_objects() if isinstance(o, kind)]


def _live_tensor_bytes() -> int:
    return sum(t.untyped_storage().nbytes() for t in _live(torch.Tensor) if t.device.type == "cpu")


def test_a_series_of_runs_on_different_clips_keeps_memory_flat(host):
    """Eight runs of SLR (with the clip) and noise sharing (lambda 0.5, with the clip), each on a different clip:
    only the last prompt's patch objects stay alive (ComfyUI's cache holds its outputs), and the tensors alive
    after the eighth run take no more memory than after the second (no cache keyed by clip, no module-level
    tensor, no flow of an earlier clip kept)."""
    SLR = _pack_module(host, ".nodes.engines.slr_temporal_attention")
    NS = _pack_module(host, ".nodes.engines.noise_sharing")
    kinds = (SLR.SLRPatch, NS.NoiseSharingSampler)
    before = {id(o) for kind in kinds for o in _live(kind)}  # earlier tests' objects, held by their fixtures
    sizes = []
    for i in range(8):
        host.store[f"clip_{i}"] = _video(seed=100 + i)
        host.store["lat_series"] = _latent(seed=100 + i)
        graph = _graph(host, slr={"image": f"clip_{i}"}, sharing={"image": f"clip_{i}", "lambda": 0.5},
                       noise="shared", latent_key="lat_series", capture="series")
        run_samples(host, graph, "series")
        del host.store[f"clip_{i}"]
        assert [len([o for o in _live(kind) if id(o) not in before]) for kind in kinds] == [1, 1], i
        sizes.append(_live_tensor_bytes())
    host.captured.pop("series", None)
    host.captured.pop("series_sampler", None)
    assert max(sizes[2:]) <= sizes[1] * 1.02 + 65536, sizes


def test_a_flow_cache_is_bounded_and_keeps_the_most_recently_used():
    from zsvr.nodes.run_state import BoundedCache  # comfy-free: no host needed
    cache, made = BoundedCache(2), []

    def make(key):
        made.append(key)
        return key * 10

    assert [cache.get(k, lambda k=k: make(k)) for k in (1, 2, 1, 3, 1, 2)] == [10, 20, 10, 30, 10, 20]
    assert made == [1, 2, 3, 2] and len(cache) == 2 and 1 in cache and 2 in cache and 3 not in cache
    with pytest.raises(ValueError, match="maxsize is 0"):
        BoundedCache(0)
