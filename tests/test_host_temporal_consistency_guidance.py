"""ZVRD temporal consistency guidance on the real host (tiny SD1.5 U-Net, fp32, frames = latent batch [4, 4, 8, 8])."""

from __future__ import annotations

import sys

import pytest
import torch

from host_harness import add_sampling, input_error, rel_error, run_samples, sd15_sampling_inputs
from unet_layers import Observer
from zsvr.kernels import optical_flow as of
from zsvr.kernels import temporal_consistency_guidance as tcg

FRAMES = 4
STEPS = 3
NODE = "ZSVR_TemporalConsistencyGuidance"


# -- helpers --------------------------------------------------------------------------------------------------
def _graph(host, *, tcg_inputs=None, latent_key="lat", image_key="img", capture="out", steps=STEPS, denoise=0.6,
           cfg=3.0, noise="random", control=False, model=None):
    """UNETLoader (or the injected ``model``) [-> ZSVR_TemporalConsistencyGuidance] -> CFGGuider [+ tile ControlNet]
    -> SamplerCustomAdvanced."""
    g = sd15_sampling_inputs(host, model=model, latent_key=latent_key, capture=capture)
    model_ref = ["m", 0]
    if tcg_inputs is not None:
        inputs = {"model": model_ref, "weight": 0.2, "mode": "x0", "frames_per_video": 0, "start_percent": 0.0,
                  "end_percent": 1.0}
        inputs.update(tcg_inputs)
        g["img"] = {"class_type": "ZSVRTest_Inject", "inputs": {"key": image_key}}
        inputs["image"] = ["img", 0]
        g["tcg"] = {"class_type": NODE, "inputs": inputs}
        g["cap_model"] = {"class_type": "ZSVRTest_Capture", "inputs": {"value": ["tcg", 0], "key": capture + "_model"}}
        model_ref = ["tcg", 0]
    positive, negative = ["pos", 0], ["neg", 0]
    if control:
        g["cn"] = {"class_type": "ControlNetLoader", "inputs": {"control_net_name": host.models["controlnet_sd15"].name}}
        g["hint"] = {"class_type": "ZSVRTest_Inject", "inputs": {"key": image_key}}
        g["apply"] = {"class_type": "ControlNetApplyAdvanced", "inputs": {
            "positive": positive, "negative": negative, "control_net": ["cn", 0], "image": ["hint", 0],
            "strength": 1.0, "start_percent": 0.0, "end_percent": 1.0}}
        positive, negative = ["apply", 0], ["apply", 1]
    g["noise"] = ({"class_type": "RandomNoise", "inputs": {"noise_seed": 0}} if noise == "random"
                  else {"class_type": "DisableNoise", "inputs": {}})
    g["ks"] = {"class_type": "KSamplerSelect", "inputs": {"sampler_name": "euler"}}
    return add_sampling(g, model=model_ref, noise=["noise", 0], sampler=["ks", 0], steps=steps, denoise=denoise,
                        cfg=cfg, positive=positive, negative=negative)


def _flickering_latent(seed=0, amount=1.5):
    gen = torch.Generator().manual_seed(seed)
    base = torch.randn(1, 4, 8, 8, generator=gen) * 2
    return {"samples": base + amount * torch.randn(FRAMES, 4, 1, 1, generator=gen)  # per-frame brightness flicker
            + 0.5 * amount * torch.randn(FRAMES, 4, 8, 8, generator=gen)}  # and per-pixel flicker


def _static_video(frames=FRAMES, size=64, seed=0):
    gen = torch.Generator().manual_seed(seed)
    base = torch.rand(3, size // 8, size // 8, generator=gen)
    base = torch.nn.functional.interpolate(base[None], size=(size, size), mode="bicubic", align_corners=False)[0]
    return base.clamp(0, 1).permute(1, 2, 0)[None].expand(frames, size, size, 3).contiguous()


def _pack_module(host, name):
    return sys.modules[host.pack.__name__ + name]


def _inconsistency(host, samples, image):
    """The guidance's own loss (eq. 8) on a latent, with the flow and occlusion of ``image`` at latent size."""
    flow, valid = of.latent_flow(image, samples.shape[0], samples.shape[-2:])
    return float(tcg.temporal_loss(samples.float(), flow, valid))


def _patch_of(model):
    return model.model_options["sampler_post_cfg_function"][0].__self__


def _observed(host, unet):
    """A clone of the plain U-Net with a debug observer; the TCG node's clone of it keeps the observer."""
    model = unet.clone()
    observer = Observer()
    observer.install(model, _pack_module(host, ".nodes.run_state").OBSERVER_KEY)
    host.store["observed_unet"] = model
    return observer


@pytest.fixture(scope="module")
def unet(host):
    import comfy.sd

    return comfy.sd.load_diffusion_model(str(host.models["sd15"]))


def _node(host):
    return host.nodes.NODE_CLASS_MAPPINGS[NODE]


# -- weight 0 and the input model ------------------------------------------------------------------------------
@pytest.mark.parametrize("mode", ["x0", "through model"])
def test_weight_zero_equals_the_unpatched_model_exactly(host, mode):
    host.store["lat"] = _flickering_latent(seed=1)
    host.store["img"] = _static_video()
    plain = run_samples(host, _graph(host, capture="w0_plain"), "w0_plain")
    off = run_samples(host, _graph(host, tcg_inputs={"weight": 0.0, "mode": mode}, capture="w0_off"), "w0_off")
    assert torch.equal(off, plain)
    assert "sampler_post_cfg_function" not in host.captured["w0_off_model"].model_options


def test_the_input_model_is_left_untouched(host, unet):
    before_options = repr(unet.model_options)
    before_uuid = unet.patches_uuid
    node = _node(host)
    host.store["lat"] = _flickering_latent(seed=2)
    host.store["img"] = _static_video()
    for mode in ("x0", "through model"):
        patched = node.execute(unet, host.store["img"], 0.2, mode, 0, 0.0, 1.0).result[0]
        assert patched is not unet
        assert len(patched.model_options["sampler_post_cfg_function"]) == 1
        assert bool(patched.weight_wrapper_patches) == (mode == "through model")
        observer = Observer()
        observer.install(patched, _pack_module(host, ".nodes.run_state").OBSERVER_KEY)
        host.store["tcg_direct"] = patched
        graph = _graph(host, capture="direct", model="tcg_direct")
        run_samples(host, graph, "direct")
        assert observer.events["tcg.guided"] == STEPS
    assert repr(unet.model_options) == before_options and unet.patches_uuid == before_uuid
    assert not unet.weight_wrapper_patches and "sampler_post_cfg_function" not in unet.model_options
    # the shared module carries no leftover weight functions once the plain model is loaded again
    host.store["plain_direct"] = unet
    graph = _graph(host, capture="direct_plain", model="plain_direct")
    again = run_samples(host, graph, "direct_plain")
    assert not any(getattr(m, "weight_function", []) for m in unet.model.modules())
    assert torch.equal(again, run_samples(host, _graph(host, capture="loader_plain"), "loader_plain"))


# -- the guidance works ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("mode", ["x0", "through model"])
def test_guidance_reduces_the_temporal_inconsistency_of_the_sampled_latent(host, unet, mode):
    host.store["lat"] = _flickering_latent(seed=3)
    host.store["img"] = _static_video()
    plain = run_samples(host, _graph(host, capture="g_plain"), "g_plain")
    observer = _observed(host, unet)
    guided = run_samples(host, _graph(host, tcg_inputs={"weight": 0.2, "mode": mode}, capture=f"g_{mode}",
                                      model="observed_unet"), f"g_{mode}")
    before = _inconsistency(host, host.store["lat"]["samples"], host.store["img"])
    loss_plain = _inconsistency(host, plain, host.store["img"])
    loss_guided = _inconsistency(host, guided, host.store["img"])
    print(f"TCG {mode}: temporal loss of the input {before:.1f}, sampled {loss_plain:.1f} unguided, "
          f"{loss_guided:.1f} guided (weight 0.2, {STEPS} steps)")
    assert loss_guided < 0.5 * loss_plain
    patch = _patch_of(host.captured[f"g_{mode}_model"])
    assert observer.events["tcg.guided"] == STEPS and observer.events["tcg.flow_estimated"] == 1
    losses = [d["loss"] for d in observer.data["tcg.guided"]]
    assert len(losses) == STEPS and all(loss > 0 for loss in losses)
    # the flow is cached on the patch: a second run with the same MODEL estimates nothing again
    host.store["lat"] = _flickering_latent(seed=4)
    run_samples(host, _graph(host, tcg_inputs={"weight": 0.2, "mode": mode}, capture=f"g_{mode}", model="observed_unet"),
                f"g_{mode}")
    assert _patch_of(host.captured[f"g_{mode}_model"]) is patch and observer.events["tcg.flow_estimated"] == 1


def test_schedule_window_limits_the_guided_steps(host, unet):
    host.store["lat"] = _flickering_latent(seed=5)
    host.store["img"] = _static_video()
    observer = _observed(host, unet)
    run_samples(host, _graph(host, tcg_inputs={"start_percent": 0.0, "end_percent": 0.3}, steps=4, denoise=1.0,
                             capture="window", model="observed_unet"), "window")
    assert 0 < observer.events["tcg.guided"] < 4


def test_through_model_gradient_goes_through_the_model(host, unet):
    """The extra forward reproduces the step's prediction exactly, and its gradient is J^T grad L, close to but not
    equal to the x0 gradient (J ~ I - sigma d eps/dx), the gap shrinking with sigma."""
    host.store["lat"] = _flickering_latent(seed=3)
    host.store["img"] = _static_video()
    patched = _node(host).execute(unet, host.store["img"], 0.2, "through model", 0, 0.0, 1.0).result[0]
    patch = _patch_of(patched)
    seen = []
    through_model = patch._through_model

    def spy(args, flow, valid):
        grad, loss = through_model(args, flow, valid)
        grad_x0, loss_x0 = tcg.x0_gradient(args["denoised"], flow, valid)
        seen.append((float(args["sigma"][0]), rel_error(grad, grad_x0),
                     float((grad * grad_x0).sum() / (grad.norm() * grad_x0.norm())), float(loss), float(loss_x0)))
        return grad, loss

    patch._through_model = spy
    host.store["tcg_spy"] = patched
    graph = _graph(host, capture="spy", model="tcg_spy")
    run_samples(host, graph, "spy")
    assert len(seen) == STEPS
    for sigma, gap, cosine, loss, loss_x0 in seen:
        assert loss == pytest.approx(loss_x0, rel=1e-5)  # the recomputed prediction is the step's own
        assert cosine > 0.9
    assert seen[0][1] > 1e-3 and seen[0][1] > seen[-1][1]  # a real Jacobian, nearer I as sigma falls


def test_frames_per_video_keeps_two_videos_apart(host):
    """Two videos of two frames: with frames_per_video 2 the second video's result does not depend on the first."""
    host.store["img"] = _static_video()
    lat = _flickering_latent(seed=6)["samples"]
    other = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(7)) * 3
    results = {}
    for fpv in (2, 0):
        for name, first in (("a", lat[:2]), ("b", other)):
            host.store["lat"] = {"samples": torch.cat([first, lat[2:]])}
            results[fpv, name] = run_samples(host, _graph(host, tcg_inputs={"frames_per_video": fpv}, noise="disable",
                                                          capture="fpv"), "fpv")
    a, b = results[2, "a"], results[2, "b"]
    assert torch.allclose(a[2:], b[2:], atol=1e-5) and not torch.allclose(a[:2], b[:2])
    # as one video (frames_per_video 0) frame 2 is compared with frame 1, so the first frames matter
    assert not torch.allclose(results[0, "a"][2:], results[0, "b"][2:], atol=1e-3)


# -- bad input -------------------------------------------------------------------------------------------------
def test_mismatched_image_frame_count_is_refused_through_the_executor(host):
    host.store["lat"] = _flickering_latent(seed=8)
    host.store["short"] = _static_video(frames=3)
    res = host.run(_graph(host, tcg_inputs={}, image_key="short", capture="bad_frames"))
    assert not res.success
    message = res.error_message
    assert "ZSVR input 'image'" in message and "has 3 frames but the latent batch has 4" in message
    assert "Fix: connect the video the latent was encoded from" in message


def test_bad_settings_are_refused(host, unet):
    import comfy.sd

    InputError = input_error(host)
    node = _node(host)
    image = _static_video()
    with pytest.raises(InputError, match="'weight'"):
        node.execute(unet, image, -0.1, "x0", 0, 0.0, 1.0)
    with pytest.raises(InputError, match="'mode'"):
        node.execute(unet, image, 0.1, "pixels", 0, 0.0, 1.0)
    with pytest.raises(InputError, match="'start_percent'"):
        node.execute(unet, image, 0.1, "x0", 0, 0.8, 0.2)
    wan = comfy.sd.load_diffusion_model(str(host.models["wan"]))
    with pytest.raises(InputError, match="'model'.*video model.*SD1.5, SD2.x, SDXL"):
        node.execute(wan, image, 0.1, "x0", 0, 0.0, 1.0)
    host.store["lat"] = _flickering_latent(seed=9)
    host.store["img"] = image
    res = host.run(_graph(host, tcg_inputs={"weight": -1.0}, capture="bad_weight"))
    assert not res.valid and "weight" in res.error_message
    res = host.run(_graph(host, tcg_inputs={"frames_per_video": 3}, capture="bad_fpv"))
    assert not res.success and "'frames_per_video'" in res.error_message and "does not divide" in res.error_message


def test_through_model_with_a_controlnet_says_to_use_x0(host):
    host.store["lat"] = _flickering_latent(seed=10)
    host.store["img"] = _static_video()
    res = host.run(_graph(host, tcg_inputs={"mode": "through model"}, control=True, capture="cn_tm"))
    assert not res.success
    message = res.error_message
    assert message.startswith("ZSVR input 'mode'") and "loaded for inference only" in message
    assert "Fix: use mode 'x0'" in message
    x0 = host.run(_graph(host, tcg_inputs={"mode": "x0"}, control=True, capture="cn_x0"))
    assert x0.success, x0.error_message


# -- clones (issue 12, item 1) ---------------------------------------------------------------------------------
@pytest.mark.parametrize("mode", ["x0", "through model"])
def test_clones_sample_like_the_patched_model_run_after_run(host, unet, mode):
    """A clone made after the guidance (a LoRA loader, another patch node...) and sampled twice gives the patched
    model's own result both times; the clones share the patch and its flow cache (estimated once)."""
    host.store["img"] = _static_video()
    latent = _flickering_latent(seed=11)
    node = _node(host)
    host.store["tcg_fresh"] = node.execute(unet, host.store["img"], 0.2, mode, 0, 0.0, 1.0).result[0]
    host.store["lat"] = {"samples": latent["samples"].clone()}
    kept = [host.store["lat"]]
    reference = run_samples(host, _graph(host, noise="disable", model="tcg_fresh", capture="tcg_clone"), "tcg_clone")
    patched = node.execute(unet, host.store["img"], 0.2, mode, 0, 0.0, 1.0).result[0]
    swcfa = host.nodes.NODE_CLASS_MAPPINGS["ZSVR_SWCFA"]
    for name, model in (("clone", patched.clone()), ("chained", swcfa.execute(patched, 0, 0, "all", 0.0, 1.0).result[0])):
        observer = Observer()
        observer.install(model, _pack_module(host, ".nodes.run_state").OBSERVER_KEY)
        host.store["tcg_clone_model"] = model
        for run in range(2):
            host.store["lat"] = {"samples": latent["samples"].clone()}  # a new LATENT: the sampler runs again
            kept.append(host.store["lat"])
            out = run_samples(host, _graph(host, noise="disable", model="tcg_clone_model", capture="tcg_clone"), "tcg_clone")
            assert torch.equal(out, reference), (mode, name, run)
        assert observer.events["tcg.guided"] == 2 * STEPS
        assert observer.events["tcg.flow_estimated"] == (1 if name == "clone" else 0)  # cached on the shared patch
    assert _patch_of(patched.clone()) is _patch_of(patched)
