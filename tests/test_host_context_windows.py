"""Whole clips in one graph: every ZSVR node under core context windows (tiny random models, fp32).

The model is wrapped by core ``ContextWindowsManual`` on the latent's frame axis: dim 2 (time) for the video
models (Wan, HunyuanVideo, CogVideoX), dim 0 (the batch) for the SD1.5 U-Net that denoises a video as a batch of
frames. The video cases run 8 latent frames in windows of 4 with overlap 2, i.e. the three windows (0-3), (2-5),
(4-7) of ``standard_static`` (the uniform schedules place them by step); the SD cases 4 frames in windows of 2
with overlap 1, the three windows (0-1), (1-2), (2-3).

ComfyUI 0.3.64's context handler finds a call's step by comparing the schedule with the per-row timestep, which
on dim 0 only works when the batch (4 frames) equals the schedule's length: the SD cases sample 3 steps (the
nodes refuse other counts with a clear error, tested below).
"""

from __future__ import annotations

import dataclasses
import sys

import pytest
import torch

import test_host_zvrd as zvrd
from host_harness import rel_error, run_samples
from test_host_cogvideox import _graph as _cog_graph, _load as _cog_load, cog  # noqa: F401  (cog: a fixture)
from test_host_inversion import _graph as _zsvd_graph
from unet_layers import Observer

VIDEO = ["wan", "hunyuan"]
FRAMES = 8
WINDOWS = {(0, 1, 2, 3), (2, 3, 4, 5), (4, 5, 6, 7)}
SD_FRAMES = 4
SD_STEPS = SD_FRAMES - 1


def _windows(model_ref, dim, length=4, overlap=2, schedule="standard_static", fuse="pyramid"):
    return {"class_type": "ContextWindowsManual", "inputs": {
        "model": model_ref, "context_length": length, "context_overlap": overlap, "context_schedule": schedule,
        "context_stride": 1, "closed_loop": False, "fuse_method": fuse, "dim": dim}}


def _module(host, name):
    return sys.modules[f"{host.pack.__name__}.{name}"]


def _video_latent(seed=0, frames=FRAMES, size=4):
    gen = torch.Generator().manual_seed(seed)
    return {"samples": torch.randn((1, 16, frames, size, size), generator=gen)}


def _windowed_zsvd(g, **kw):
    """Route the inverter's and the guider's model (and the scheduler's) through one ContextWindowsManual (dim 2)."""
    g["cw"] = _windows(["m", 0], 2, **kw)
    for node in ("inv", "gd", "sig"):
        if node in g and g[node]["inputs"].get("model") == ["m", 0]:
            g[node]["inputs"]["model"] = ["cw", 0]
    return g


def _switched(g, blocks, source=("cw", 0)):
    g["sw"] = {"class_type": "ZSVR_AttentionSwitch", "inputs": {"model": list(source), "blocks": blocks,
                                                                 "start_percent": 0.0, "end_percent": 1.0}}
    g["gd"]["inputs"]["model"] = ["sw", 0]
    return g


def _cog_zsvd(host, skip, *, blocks=None, remove_seed=None, strength=1.0, capture="out", steps=6):
    g = _cog_graph(host, "ddpm", skip, steps=steps, remove_seed=remove_seed, strength=strength, capture=capture,
                   blocks=blocks)
    g["cw"] = _windows(["m", 0], 2)
    g["inv"]["inputs"]["model"] = ["cw", 0]
    g["sig"]["inputs"]["model"] = ["cw", 0]
    g["sw" if blocks is not None else "gd"]["inputs"]["model"] = ["cw", 0]
    return g


# -- ZSVD on the video families (dim 2) ----------------------------------------------------------------------------
@pytest.mark.parametrize("family", VIDEO)
@pytest.mark.parametrize("schedule", ["standard_static", "standard_uniform", "looped_uniform"])
def test_invert_then_replay_reproduces_the_latent_under_windows(host, family, schedule):
    """Strength 1, rule ddpm, from skip 0 and from skip 3: the windowed model is the denoiser of both the inversion
    and the replay, so the latent comes back. The uniform schedules move their windows with the step number; the
    replay numbers its steps like the inversion (the inversion's whole schedule as ``sample_sigmas``)."""
    host.store["lat"] = _video_latent()
    for skip in (0, 3):
        res = host.run(_windowed_zsvd(_zsvd_graph(host, family, "ddpm", skip, steps=6, capture=f"cw_rec{skip}"),
                                      schedule=schedule))
        assert res.success, res.error_message
        err = rel_error(host.captured[f"cw_rec{skip}"]["samples"], host.store["lat"]["samples"])
        print(f"{family}/{schedule}/skip {skip}: replay relative error {err:.3g}")
        assert err < 1e-4


def test_invert_then_replay_reproduces_the_latent_under_windows_cogvideox(host, cog):
    host.store["lat"] = _video_latent(2, size=8)
    for skip in (0, 3):
        res = host.run(_cog_zsvd(host, skip, capture=f"cog_rec{skip}"))
        assert res.success, res.error_message
        err = rel_error(host.captured[f"cog_rec{skip}"]["samples"], host.store["lat"]["samples"])
        print(f"cogvideox/skip {skip}: replay relative error {err:.3g}")
        assert err < 1e-4


@pytest.mark.parametrize("family", [*VIDEO, "cogvideox"])
def test_switch_over_all_blocks_makes_the_edit_the_reconstruction_under_windows(host, family, request):
    """Every window's remove pass reads its own window's null text keys/values, so over all blocks the remove path is
    the null path in every window and the edit (strength 6) is the reconstruction."""
    if family == "cogvideox":
        request.getfixturevalue("cog")
        host.store["lat"] = _video_latent(1, size=8)
        g = _cog_zsvd(host, 2, blocks="all", remove_seed=99, strength=6.0, capture="cw_sw")
    else:
        host.store["lat"] = _video_latent(1)
        g = _switched(_windowed_zsvd(_zsvd_graph(host, family, "ddpm", 2, steps=6, remove_seed=99, strength=6.0,
                                                 capture="cw_sw")), "all")
    res = host.run(g)
    assert res.success, res.error_message
    err = rel_error(host.captured["cw_sw"]["samples"], host.store["lat"]["samples"])
    print(f"{family}: switch over all blocks, edit vs input {err:.3g}")
    assert err < 1e-4
    # and the switch does act: one block switched is neither the reconstruction nor plain negative prompting
    if family != "cogvideox":
        g = _switched(_windowed_zsvd(_zsvd_graph(host, family, "ddpm", 2, steps=6, remove_seed=99, strength=6.0,
                                                 capture="cw_one")), "1")
        res = host.run(g)
        assert res.success, res.error_message
        assert rel_error(host.captured["cw_one"]["samples"], host.store["lat"]["samples"]) > 1e-3


class _AttentionRecorder:
    """An ``optimized_attention_override`` that records every switched-pass attention call, then computes it.

    Installed under the ZSVR switch (which chains to it), it sees the keys each call really attends to."""

    def __init__(self, pass_key):
        self.pass_key = pass_key
        self.calls: list[dict] = []

    def __call__(self, func, q, k, v, heads, *args, **kwargs):
        opts = kwargs.get("transformer_options") or {}
        which = opts.get(self.pass_key)
        window = opts.get("context_window")
        if which is not None and window is not None:
            self.calls.append({"pass": str(which.value), "window": tuple(window.index_list), "q_len": q.shape[2],
                               "k_len": k.shape[2], "k": k.detach().clone()})
        return func(q, k, v, heads, *args, **kwargs)

    def __deepcopy__(self, memo):
        return self


@pytest.mark.parametrize("family", ["hunyuan", "cogvideox"])
def test_each_window_reads_its_own_null_text_keys(host, family, request):
    """Joint attention: the null pass's text keys depend on the window's video tokens. Recorded at every switched
    block and step: (1) the windows' null text keys differ (from block 1 on); (2) the video queries of every
    window's remove pass attend to exactly the text keys the null pass computed for that same window."""
    import comfy.sd

    protocol = _module(host, "nodes.switch_protocol")
    recorder = _AttentionRecorder(protocol.PASS_KEY)
    if family == "cogvideox":
        request.getfixturevalue("cog")
        model, _ = _cog_load(host)
        n_blocks, text_len, text_first = 3, 8, True  # tiny CogVideoX: 3 blocks, text fitted to 8 tokens, [text, video]
        host.store["lat"] = _video_latent(3, size=8)
    else:
        model = comfy.sd.load_diffusion_model(str(host.models[family]))
        n_blocks, text_len, text_first = 4, 6, False  # tiny HunyuanVideo: 2 double + 2 single blocks, [video, text]
        host.store["lat"] = _video_latent(3)
    user = model.clone()
    user.model_options.setdefault("transformer_options", {})["optimized_attention_override"] = recorder
    host.store["rec_model"] = user
    g = _zsvd_graph(host, "hunyuan", "ddpm", 4, steps=6, remove_seed=99, strength=6.0, capture="rec_out")
    if family == "cogvideox":  # CogVideoX's text width
        cog_graph = _cog_graph(host, "ddpm", 4, remove_seed=99)
        g["null"], g["rm"] = cog_graph["null"], cog_graph["rm"]
    g["m"] = {"class_type": "ZSVRTest_Inject", "inputs": {"key": "rec_model"}}
    g = _switched(_windowed_zsvd(g), "all")
    res = host.run(g)
    assert res.success, res.error_message

    def text(k):
        return k[:, :, :text_len] if text_first else k[:, :, -text_len:]

    null_keys: dict = {}
    counters: dict = {}
    previous = None
    checked = differ = 0
    for call in recorder.calls:
        if call["k_len"] == text_len:
            continue  # HunyuanVideo's text token refiner: attention among the text tokens, before the blocks
        where = (call["pass"], call["window"])
        if where != previous:
            counters[where] = 0
            previous = where
        index = counters[where]
        counters[where] += 1
        if call["pass"] == "null":
            null_keys[(call["window"], index)] = text(call["k"])
            continue
        if call["pass"] != "remove" or call["q_len"] == text_len:
            continue  # the inversion's calls, and the remove pass's text queries (their own keys)
        block = index // 2
        own = null_keys[(call["window"], block)]
        assert torch.equal(text(call["k"]), own), (call["window"], block)
        checked += 1
        for other in WINDOWS - {call["window"]}:
            if block >= 1 and not torch.allclose(null_keys[(other, block)], own, rtol=1e-4, atol=1e-6):
                differ += 1
    assert {c["window"] for c in recorder.calls} == WINDOWS
    assert checked == 2 * 3 * n_blocks  # 2 edit steps x 3 windows x every block
    assert differ == 2 * 3 * 2 * (n_blocks - 1)  # from block 1 on, each window's null text keys are its own
    print(f"{family}: {checked} remove-pass calls read their own window's null text keys; {differ} window pairs differ")


def test_the_input_models_are_untouched(host):
    """Core windows and the switch each clone; sampling through them leaves every input MODEL as it was."""
    import comfy.sd

    base = comfy.sd.load_diffusion_model(str(host.models["hunyuan"]))
    windows = host.nodes.NODE_CLASS_MAPPINGS["ContextWindowsManual"]
    switch = host.nodes.NODE_CLASS_MAPPINGS["ZSVR_AttentionSwitch"]
    windowed = windows.execute(base, 4, 2, "standard_static", 1, False, "pyramid", 2).result[0]
    switched = switch.execute(windowed, "all", 0.0, 1.0).result[0]
    models = (("base", base), ("windowed", windowed), ("switched", switched))
    before = {name: repr(m.model_options) for name, m in models}
    host.store.update(base_m=base, windowed_m=windowed, switched_m=switched, lat=_video_latent(4))
    g = _zsvd_graph(host, "hunyuan", "ddpm", 2, steps=4, remove_seed=99, strength=6.0, capture="untouched")
    g["m"] = {"class_type": "ZSVRTest_Inject", "inputs": {"key": "windowed_m"}}
    g["swm"] = {"class_type": "ZSVRTest_Inject", "inputs": {"key": "switched_m"}}
    g["gd"]["inputs"]["model"] = ["swm", 0]
    res = host.run(g)
    assert res.success, res.error_message
    assert rel_error(host.captured["untouched"]["samples"], host.store["lat"]["samples"]) < 1e-4
    for name, m in models:
        assert repr(m.model_options) == before[name], name
        assert "context_window" not in m.model_options.get("transformer_options", {}), name
    assert "context_handler" not in base.model_options


def test_switch_order_does_not_matter(host):
    """The switch may come before or after the Context Windows node: both give the reconstruction over all blocks."""
    host.store["lat"] = _video_latent(5)
    g = _zsvd_graph(host, "hunyuan", "ddpm", 2, steps=6, remove_seed=99, strength=6.0, capture="sw_first")
    g["sw"] = {"class_type": "ZSVR_AttentionSwitch", "inputs": {"model": ["m", 0], "blocks": "all",
                                                                 "start_percent": 0.0, "end_percent": 1.0}}
    g["cw"] = _windows(["sw", 0], 2)
    g["gd"]["inputs"]["model"] = ["cw", 0]
    g["cwi"] = _windows(["m", 0], 2)
    g["inv"]["inputs"]["model"] = ["cwi", 0]
    res = host.run(g)
    assert res.success, res.error_message
    assert rel_error(host.captured["sw_first"]["samples"], host.store["lat"]["samples"]) < 1e-4


def test_inversion_and_edit_under_different_windows_are_refused(host):
    """The inversion and its replay must see the same windows (or none): the windows node wired to the guider only
    (or to the inverter only) is refused with an error that says which windows each side had."""
    host.store["lat"] = _video_latent(6)
    for side in ("gd", "inv"):
        g = _zsvd_graph(host, "wan", "ddpm", 2, steps=4, capture="mismatch")
        g["cw"] = _windows(["m", 0], 2)
        g[side]["inputs"]["model"] = ["cw", 0]
        res = host.run(g)
        assert not res.success, side
        message = res.error_message
        assert "'model'" in message and "the inversion was made" in message, message
        windowed = "under context windows (dim 2, length 4, overlap 2, standard_static"
        plain = "without context windows"
        assert (message.index(windowed) < message.index(plain)) == (side == "gd"), message


def test_family_without_window_support_is_refused_clearly(host):
    """A family whose switch cannot run window by window (``Capabilities.context_windows`` false) is refused with
    an error naming the model, the windows and what to do; every registered family supports windows today, so the
    capability is switched off here for the test."""
    adapters = _module(host, "nodes.adapters")
    wan = adapters.WanAdapter
    saved = wan.capabilities
    wan.capabilities = dataclasses.replace(saved, context_windows=False)
    try:
        host.store["lat"] = _video_latent(6)
        res = host.run(_switched(_windowed_zsvd(_zsvd_graph(host, "wan", "ddpm", 2, steps=4, remove_seed=99,
                                                            strength=6.0, capture="refused")), "all"))
    finally:
        wan.capabilities = saved
    assert not res.success
    message = res.error_message
    assert "'model'" in message and "context windows" in message and "window by window" in message
    assert "Long clips" in message and "HunyuanVideo" in message


def test_inversion_memory_is_per_step_latents_on_the_cpu_in_the_model_dtype(host):
    """A bf16 Wan under windows: every stored z_t is one latent on the CPU in bf16, i.e. C*h*w*2 bytes per latent
    frame and step; nothing else of clip length is kept (``x0`` once, fp32, on the CPU)."""
    import comfy.sd

    model = comfy.sd.load_diffusion_model(str(host.models["wan"]), model_options={"dtype": torch.bfloat16})
    assert model.model_dtype() == torch.bfloat16
    host.store.update(bf16_wan=model, lat=_video_latent(7))
    g = _windowed_zsvd(_zsvd_graph(host, "wan", "ddpm", 2, steps=6, first_step=2, capture="mem_out"))
    g["m"] = {"class_type": "ZSVRTest_Inject", "inputs": {"key": "bf16_wan"}}
    g["cap_inv"] = {"class_type": "ZSVRTest_Capture", "inputs": {"value": ["inv", 0], "key": "mem_inv"}}
    res = host.run(g)
    assert res.success, res.error_message
    inv = host.captured["mem_inv"]
    latent = host.store["lat"]["samples"]
    per_frame = latent.shape[1] * latent.shape[3] * latent.shape[4] * 2  # C * h * w * 2 bytes
    stored = [s for s in inv.stored if s is not None]
    assert len(stored) == 4 and inv.stored[:2] == [None, None]  # steps 2..5 only
    for s in stored:
        assert s.device.type == "cpu" and s.dtype == torch.bfloat16 and s.shape == latent.shape
        assert s.numel() * s.element_size() == per_frame * FRAMES
    assert inv.x0.device.type == "cpu" and not inv.trajectory


# -- frames as batch: the SD1.5 U-Net under windows on dim 0 -------------------------------------------------------
def _sd_windowed(g, dim=0, source="m"):
    """Insert ContextWindowsManual (windows of 2, overlap 1) after node ``source``: every other input that read its
    MODEL reads the windows."""
    g["cw"] = _windows([source, 0], dim, length=2, overlap=1)
    for name, node in g.items():
        if name == "cw":
            continue
        for key, value in node["inputs"].items():
            if value == [source, 0] and key == "model":
                node["inputs"][key] = ["cw", 0]
    return g


def _sd_latent(seed=0, videos=False):
    """[4, 4, 8, 8]; ``videos``: two 2-frame videos, each of one repeated frame (a static video)."""
    gen = torch.Generator().manual_seed(seed)
    if videos:
        frames = torch.randn(2, 4, 8, 8, generator=gen) * 3
        return {"samples": frames.repeat_interleave(SD_FRAMES // 2, dim=0).contiguous()}
    return {"samples": torch.randn(SD_FRAMES, 4, 8, 8, generator=gen) * 3}


@pytest.mark.parametrize("rule", ["ddpm", "ddim"])
def test_sd_inversion_and_replay_under_windows(host, rule):
    """ddpm: invert then replay reproduces the latent (skip 0 and 2). ddim (TDM): the windowed run equals the plain
    run, because the plain U-Net treats every frame alone and the windows' predictions of a frame are fused with
    weights that sum to 1; this also takes ddim's one call below the schedule (sigma_floor) through the windows."""
    host.store["lat"] = _sd_latent(1)
    if rule == "ddpm":
        for skip in (0, 2):
            g = _zsvd_graph(host, "eps", rule, skip, steps=SD_STEPS, capture=f"sd_ddpm_{skip}")
            res = host.run(_sd_windowed(g))
            assert res.success, res.error_message
            err = rel_error(host.captured[f"sd_ddpm_{skip}"]["samples"], host.store["lat"]["samples"])
            print(f"sd/ddpm/skip {skip}: windowed replay relative error {err:.3g}")
            assert err < 1e-4
        return
    for windowed in (True, False):
        g = _zsvd_graph(host, "eps", rule, 0, steps=SD_STEPS, capture=f"sd_ddim_{windowed}")
        res = host.run(_sd_windowed(g) if windowed else g)
        assert res.success, res.error_message
    out, plain = host.captured["sd_ddim_True"]["samples"], host.captured["sd_ddim_False"]["samples"]
    err = rel_error(out, host.store["lat"]["samples"])
    print(f"sd/ddim: windowed vs plain {rel_error(out, plain):.3g}; replay relative error {err:.3g}")
    assert rel_error(out, plain) < 1e-5


def test_sd_windows_with_a_step_count_the_host_cannot_sample_are_refused(host):
    host.store["lat"] = _sd_latent(1)
    res = host.run(_sd_windowed(_zsvd_graph(host, "eps", "ddpm", 0, steps=5, capture="bad_steps")))
    assert not res.success
    message = res.error_message
    assert "'model'" in message and "dim 0" in message and "4 frames" in message and "sample 3 steps" in message


def _sd_graph(host, **kw):
    kw.setdefault("steps", SD_STEPS)
    kw.setdefault("denoise", 1.0)
    return zvrd._graph(host, **kw)


@pytest.mark.parametrize("node", ["swcfa", "slr"])
def test_frame_attention_keeps_two_static_videos_apart_in_every_window(host, node):
    """Two static 2-frame videos (frames 0-1 one image, 2-3 another); window (1-2) holds a frame of each. With
    frames_per_video 2 the patch must label the window's rows by their frames of the clip: each video's frames then
    only meet copies of themselves, and SW-CFA (mean of identical keys) and SLR (neighbours and trajectories over
    identical frames) equal the unpatched windowed model. As one 4-frame video (frames_per_video 0) the middle
    window mixes the two images, so the result differs."""
    host.store["two"] = _sd_latent(2, videos=True)
    plain = run_samples(host, _sd_windowed(_sd_graph(host, latent_key="two", capture="fa_plain")), "fa_plain")
    outs = {}
    for fpv in (2, 0):
        g = _sd_graph(host, latent_key="two", capture=f"fa_{node}_{fpv}")
        if node == "slr":
            g["slr"] = {"class_type": "ZSVR_SLRTemporalAttention", "inputs": {
                "model": ["m", 0], "trajectory_start": 0.0, "frames_per_video": fpv, "start_percent": 0.0,
                "end_percent": 1.0}}
        else:
            g["slr"] = {"class_type": "ZSVR_SWCFA", "inputs": {
                "model": ["m", 0], "radius": 3, "frames_per_video": fpv, "blocks": "all", "start_percent": 0.0,
                "end_percent": 1.0}}
        for name in ("sig", "gd"):
            g[name]["inputs"]["model"] = ["slr", 0]
        outs[fpv] = run_samples(host, _sd_windowed(g), f"fa_{node}_{fpv}")
    print(f"{node}: two static videos under windows, vs unpatched {rel_error(outs[2], plain):.3g}; "
          f"as one video {rel_error(outs[0], plain):.3g}")
    assert rel_error(outs[2], plain) < 1e-5
    assert rel_error(outs[0], plain) > 1e-3


def _observed(host, key, observer):
    """The tiny SD1.5 U-Net under windows with a debug observer installed, stored as ``key``."""
    import comfy.sd

    model = comfy.sd.load_diffusion_model(str(host.models["sd15"]))
    observer.install(model, _module(host, "nodes.run_state").OBSERVER_KEY)
    host.store[key] = model
    return model


def test_noise_sharing_under_windows(host):
    """The noise (x_T and every step's z) is drawn for the whole clip, outside the windows: on identical frames
    with euler_ancestral the frames stay identical, and the windowed run equals the plain one (the plain U-Net
    treats every frame alone). Independent noise (RandomNoise, plain sampler) makes the frames differ."""
    gen = torch.Generator().manual_seed(8)
    frame = torch.randn(1, 4, 8, 8, generator=gen) * 3
    host.store["same4"] = {"samples": frame.expand(SD_FRAMES, 4, 8, 8).contiguous()}
    outs = {}
    for windowed in (True, False):
        g = _sd_graph(host, latent_key="same4", capture=f"ns_{windowed}", sampler="euler_ancestral", noise="shared",
                      sharing={}, denoise=0.8)
        outs[windowed] = run_samples(host, _sd_windowed(g) if windowed else g, f"ns_{windowed}")
    shared = outs[True]
    assert rel_error(shared, outs[False]) < 1e-5
    assert float((shared - shared[:1]).abs().max()) <= 1e-5 * float(shared.abs().max())
    g = _sd_graph(host, latent_key="same4", capture="ns_indep", sampler="euler_ancestral", noise="random", denoise=0.8)
    indep = run_samples(host, _sd_windowed(g), "ns_indep")
    assert float((indep - indep[:1]).abs().max()) > 1e-2


def test_temporal_consistency_guidance_under_windows(host):
    """TCG's post-CFG hook sees the fused prediction of the whole clip once per step (not per window): the windowed
    run equals the plain run, is guided once per step, and differs from the unguided run."""
    host.store["img4"] = zvrd._video(frames=SD_FRAMES)
    host.store["lat"] = _sd_latent(9)
    outs, counts = {}, {}
    for windowed in (True, False):
        observer = Observer()
        _observed(host, f"tcg_m_{windowed}", observer)
        g = _sd_graph(host, model=f"tcg_m_{windowed}", capture=f"tcg_{windowed}", denoise=0.6)
        g["img"] = {"class_type": "ZSVRTest_Inject", "inputs": {"key": "img4"}}
        g["tcg"] = {"class_type": "ZSVR_TemporalConsistencyGuidance", "inputs": {
            "model": ["m", 0], "image": ["img", 0], "weight": 0.3, "mode": "x0", "frames_per_video": 0,
            "start_percent": 0.0, "end_percent": 1.0}}
        for name in ("sig", "gd"):
            g[name]["inputs"]["model"] = ["tcg", 0]
        outs[windowed] = run_samples(host, _sd_windowed(g) if windowed else g, f"tcg_{windowed}")
        counts[windowed] = observer.events["tcg.guided"]
    unguided = run_samples(host, _sd_windowed(_sd_graph(host, capture="tcg_none", denoise=0.6)), "tcg_none")
    assert rel_error(outs[True], outs[False]) < 1e-5
    assert counts[True] == counts[False] == SD_STEPS
    assert rel_error(outs[True], unguided) > 1e-3


def test_early_stop_under_windows(host):
    """Early stop at the last step equals no early stop; at step 1 it returns the windowed clip's prediction there,
    which equals the plain run's (frames alone) and differs from the full run."""
    host.store["lat"] = _sd_latent(10)
    kw = {"noise": "random", "denoise": 0.6}
    full = run_samples(host, _sd_windowed(_sd_graph(host, capture="es_full", **kw)), "es_full")
    at_last = {"stop_step": SD_STEPS, "stop_percent": 1.0}
    last = run_samples(host, _sd_windowed(_sd_graph(host, capture="es_last", early=at_last, **kw)), "es_last")
    assert torch.equal(last, full)
    outs = {}
    for windowed in (True, False):
        g = _sd_graph(host, capture=f"es1_{windowed}", early={"stop_step": 1, "stop_percent": 1.0}, **kw)
        outs[windowed] = run_samples(host, _sd_windowed(g) if windowed else g, f"es1_{windowed}")
    print(f"early stop at step 1 under windows: vs plain {rel_error(outs[True], outs[False]):.3g}, "
          f"vs the full run {rel_error(outs[True], full):.3g}")
    assert rel_error(outs[True], outs[False]) < 1e-5
    assert rel_error(outs[True], full) > 1e-3
