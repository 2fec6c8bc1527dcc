"""TDM sliding-window cross-frame attention on the real host (tiny SD1.5 U-Net, fp32, frames = latent batch)."""

from __future__ import annotations

import pytest
import torch

from host_harness import add_sampling, input_error, rel_error, run_samples, sd15_sampling_inputs
from unet_layers import LayerCapture, assert_refuses_other_than_image_unets, attn1_module
from zsvr.kernels import cross_frame_attention as cfa

LAYER = ("input", 1)  # the first U-Net block with a transformer (tiny SD1.5: input blocks 1 and 3)
STEPS = 2


def _sample_graph(host, *, model="m", swcfa=None, neg_tokens=6, cfg=3.0, latent_key="lat", capture="out", steps=STEPS,
                  denoise=0.5):
    """UNETLoader (or an injected model) [-> ZSVR_SWCFA] -> CFGGuider -> SamplerCustomAdvanced (no added noise)."""
    g = sd15_sampling_inputs(host, model=None if model == "m" else model, latent_key=latent_key, capture=capture,
                             neg_tokens=neg_tokens)
    g["noise"] = {"class_type": "DisableNoise", "inputs": {}}
    g["smp_sel"] = {"class_type": "KSamplerSelect", "inputs": {"sampler_name": "euler"}}
    model_ref = ["m", 0]
    if swcfa is not None:
        inputs = {"model": model_ref, "radius": 2, "frames_per_video": 0, "blocks": "all", "start_percent": 0.0,
                  "end_percent": 1.0}
        inputs.update(swcfa)
        g["sw"] = {"class_type": "ZSVR_SWCFA", "inputs": inputs}
        model_ref = ["sw", 0]
    return add_sampling(g, model=model_ref, noise=["noise", 0], sampler=["smp_sel", 0], steps=steps, denoise=denoise,
                        cfg=cfg)


def _latent(batch=6, seed=0, identical=False):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn((1 if identical else batch), 4, 8, 8, generator=gen) * 3
    return {"samples": x.expand(batch, 4, 8, 8).contiguous() if identical else x}


@pytest.fixture(scope="module")
def unet(host):
    import comfy.sd

    return comfy.sd.load_diffusion_model(str(host.models["sd15"]))


def _swcfa(host, model, radius=2, frames_per_video=0, blocks="all", start=0.0, end=1.0):
    node = host.nodes.NODE_CLASS_MAPPINGS["ZSVR_SWCFA"]
    return node.execute(model, radius, frames_per_video, blocks, start, end).result[0]






def _reference_output(attn, call, radius, frames_per_video):
    """to_out(eq. 7-9) for every row of a captured call, rows labelled from ComfyUI's batch layout."""
    n = call["n"]
    chunks = len(call["cond_or_uncond"])
    chunk = n.shape[0] // chunks
    frames = call["index_list"] or list(range(chunk))
    fpv = frames_per_video
    video = [0] * chunk if fpv == 0 else [f // fpv for f in frames]
    position = list(frames) if fpv == 0 else [f % fpv for f in frames]
    video = [c * 1000 + v for c in range(chunks) for v in video]
    with torch.no_grad():
        ref = cfa.reference_attention(attn.to_q(n), attn.to_k(n), attn.to_v(n), call["heads"], radius,
                                      video=video, position=position * chunks)
        return attn.to_out(ref)


# -- equalities with the unpatched model ------------------------------------------------------------------
def test_radius_zero_equals_the_unpatched_model(host):
    host.store["lat"] = _latent()
    plain = run_samples(host, _sample_graph(host, capture="plain"), "plain")
    r0 = run_samples(host, _sample_graph(host, swcfa={"radius": 0}, capture="r0"), "r0")
    assert torch.equal(r0, plain)
    r2 = run_samples(host, _sample_graph(host, swcfa={"radius": 2}, capture="r2"), "r2")
    assert rel_error(r2, plain) > 1e-3  # the patch is active on distinct frames


def test_identical_frames_give_the_unpatched_output(host):
    host.store["same"] = _latent(identical=True)
    plain = run_samples(host, _sample_graph(host, latent_key="same", capture="same_plain"), "same_plain")
    for fpv in (0, 3):
        out = run_samples(host, _sample_graph(host, latent_key="same", swcfa={"radius": 3, "frames_per_video": fpv},
                                              capture=f"same_sw{fpv}"), f"same_sw{fpv}")
        assert rel_error(out, plain) < 1e-5, fpv


def test_empty_block_list_equals_the_unpatched_model(host):
    host.store["lat"] = _latent()
    plain = run_samples(host, _sample_graph(host, capture="plain_b"), "plain_b")
    out = run_samples(host, _sample_graph(host, swcfa={"blocks": ""}, capture="noblocks"), "noblocks")
    assert torch.equal(out, plain)


# -- one layer against the literal eq. 7-9 ----------------------------------------------------------------
@pytest.mark.parametrize("neg_tokens,radius,fpv", [
    (6, 1, 0),   # cond and uncond in one batch, one video
    (7, 2, 0),   # 6 vs 7 tokens (lcm padding > 4x): ComfyUI runs cond and uncond as separate batches
    (6, 2, 3),   # a batch of two 3-frame videos, cond/uncond batched (4 videos in one call)
    (7, 5, 3),   # two videos, separate batches, radius beyond the video (clipped)
])
def test_one_layer_matches_eq_7_9(host, unet, neg_tokens, radius, fpv):
    cap = LayerCapture(LAYER)
    model = cap.install(_swcfa(host, unet, radius=radius, frames_per_video=fpv))
    host.store["patched"] = model
    host.store["lat"] = _latent(seed=3)
    run_samples(host, _sample_graph(host, model="patched", neg_tokens=neg_tokens, capture="layer"), "layer")
    layouts = [len(c["cond_or_uncond"]) for c in cap.calls]
    assert layouts == ([1] * 2 * STEPS if neg_tokens != 6 else [2] * STEPS), layouts
    attn = attn1_module(unet, LAYER)
    worst = scale = 0.0
    for call in cap.calls:
        assert call["n"].dtype == torch.float32
        assert not torch.equal(call["context"], call["n"])  # keys/values were replaced
        ref = _reference_output(attn, call, radius, fpv)
        err = (call["out"] - ref).abs().amax(dim=(1, 2))  # per row, so the end frames are checked one by one
        assert float(err.max()) < 1e-5, err
        assert float(ref.abs().max()) > 1e-2  # not vacuous
        worst, scale = max(worst, float(err.max())), max(scale, float(ref.abs().max()))
    print(f"SW-CFA layer {LAYER} vs literal eq. 7-9 (radius {radius}, frames_per_video {fpv}, "
          f"cond_or_uncond layouts {layouts}): max abs error {worst:.2e} (outputs up to {scale:.2f})")


def test_core_context_windows_use_the_windows_frames(host, unet):
    """With ContextWindowsManual (dim 0) each call holds a window's frames; SW-CFA must label rows by them.

    5 steps for 6 frames: ComfyUI 0.3.64's ``IndexListContextHandler.set_step`` compares ``sample_sigmas``
    (steps + 1) with the per-frame timestep (batch), which only broadcasts when the two lengths agree.
    """
    node = host.nodes.NODE_CLASS_MAPPINGS["ContextWindowsManual"]
    windowed = node.execute(unet, 4, 2, "standard_static", 1, False, "flat", 0).result[0]
    cap = LayerCapture(LAYER)
    host.store["windowed"] = cap.install(_swcfa(host, windowed, radius=1, frames_per_video=3))
    host.store["lat"] = _latent(seed=4)
    run_samples(host, _sample_graph(host, model="windowed", capture="cw", steps=5), "cw")
    windows = {tuple(c["index_list"]) for c in cap.calls}
    assert windows == {(0, 1, 2, 3), (2, 3, 4, 5)}, windows  # windows straddle the two videos' boundary
    attn = attn1_module(unet, LAYER)
    for call in cap.calls:
        ref = _reference_output(attn, call, 1, 3)
        assert float((call["out"] - ref).abs().max()) < 1e-5


# -- videos, blocks, schedule -----------------------------------------------------------------------------
def test_two_videos_in_one_batch_do_not_mix(host):
    host.store["lat"] = _latent(seed=5)
    both = run_samples(host, _sample_graph(host, swcfa={"radius": 2, "frames_per_video": 3}, capture="two"), "two")
    as_one = run_samples(host, _sample_graph(host, swcfa={"radius": 2, "frames_per_video": 0}, capture="one"), "one")
    for k, rows in enumerate((slice(0, 3), slice(3, 6))):
        host.store[f"vid{k}"] = {"samples": host.store["lat"]["samples"][rows].clone()}
        alone = run_samples(host, _sample_graph(host, latent_key=f"vid{k}", swcfa={"radius": 2}, capture=f"alone{k}"), f"alone{k}")
        assert rel_error(both[rows], alone) < 1e-5, k
        assert rel_error(as_one[rows], alone) > 1e-3, k  # one 6-frame video does mix across the boundary


def test_blocks_and_schedule_select_where_the_patch_acts(host, unet):
    seen: list[tuple] = []

    def probe(n, context, value, extra):
        seen.append((tuple(extra["block"]), float(extra["sigmas"].flatten()[0]), not torch.equal(context, n)))
        return n, context, value

    model = _swcfa(host, unet, radius=1, blocks="output:2-3, middle", start=0.5, end=1.0)
    model.set_model_attn1_patch(probe)
    host.store["probe"] = model
    host.store["lat"] = _latent(seed=6)
    run_samples(host, _sample_graph(host, model="probe", capture="probe_out", denoise=1.0), "probe_out")
    sigma_start = unet.get_model_object("model_sampling").percent_to_sigma(0.5)
    sigmas = sorted({s for _, s, _ in seen})
    assert len(sigmas) == STEPS and sigmas[0] < sigma_start < sigmas[-1]  # one step on each side
    chosen = {("output", 2), ("output", 3), ("middle", 0)}
    assert {b for b, _, _ in seen} >= chosen | {("input", 1), ("output", 0)}
    for block, sigma, changed in seen:
        assert changed == (block in chosen and sigma <= sigma_start), (block, sigma, changed)
    assert sum(changed for *_, changed in seen) > 0


def test_the_input_model_is_left_untouched(host, unet):
    before = repr(unet.model_options)
    patched = _swcfa(host, unet)
    assert patched is not unet and repr(unet.model_options) == before
    assert len(patched.model_options["transformer_options"]["patches"]["attn1_patch"]) == 1


# -- bad input --------------------------------------------------------------------------------------------
def test_bad_input_frames_per_video_that_does_not_divide_the_batch(host):
    host.store["lat"] = _latent()
    res = host.run(_sample_graph(host, swcfa={"frames_per_video": 4}, capture="bad"))
    assert not res.success
    assert "'frames_per_video'" in res.error_message and "batch of 6" in res.error_message


def test_bad_input_negative_radius(host, unet):
    InputError = input_error(host)
    with pytest.raises(InputError, match="'radius'"):
        _swcfa(host, unet, radius=-1)
    res = host.run(_sample_graph(host, swcfa={"radius": -1}, capture="bad"))
    assert not res.valid and "radius" in res.error_message


@pytest.mark.parametrize("blocks,needle", [("decoder", "not a U-Net block group"), ("input:9", "outside"),
                                           ("input:0", "selects no block with self-attention")])
def test_bad_input_blocks(host, unet, blocks, needle):
    InputError = input_error(host)
    with pytest.raises(InputError, match="'blocks'") as info:
        _swcfa(host, unet, blocks=blocks)
    assert needle in str(info.value)


def test_bad_input_video_model_and_other_models(host):
    assert_refuses_other_than_image_unets(host, lambda model: _swcfa(host, model), ".*SD1.5 / SD2.x / SDXL")


# -- TDM: a 10-step DDIM inversion handed to a sampling schedule of another length ------------------------
INV_STEPS = 10  # TDM inverts in 10 DDIM steps and samples in 32; 16 here keeps the test small


def _tdm_graph(host, smp_steps, *, capture, scheduler="normal", radius=0, fresh_noise=False):
    """DDIM inversion (null prompt, 10 steps) -> InversionSampler(skip 0) NOISE/SAMPLER + SIGMAS of another scheduler.

    ``fresh_noise``: the same sampling without the inversion (RandomNoise + core ``ddim`` from the input latent).
    """
    g = {
        "m": {"class_type": "ZSVRTest_Inject", "inputs": {"key": "tdm_model"}},
        "null": {"class_type": "ZSVRTest_RandomConditioning", "inputs": {"seed": 7, "tokens": 6, "width": 768, "scale": 1.0}},
        "lat": {"class_type": "ZSVRTest_Inject", "inputs": {"key": "tdm_lat"}},
        "inv_sig": {"class_type": "BasicScheduler", "inputs": {"model": ["m", 0], "scheduler": "normal", "steps": INV_STEPS, "denoise": 1.0}},
        "inv": {"class_type": "ZSVR_DDPMInvert", "inputs": {
            "model": ["m", 0], "positive": ["null", 0], "negative": ["null", 0], "cfg": 1.0, "latent": ["lat", 0],
            "sigmas": ["inv_sig", 0], "inversion_seed": 0, "step_rule": "ddim", "first_step": 0}},
        "rep": {"class_type": "ZSVR_InversionSampler", "inputs": {"inversion": ["inv", 0], "skip": 0, "start_noise": 0.0}},
        "smp_sig": {"class_type": "BasicScheduler", "inputs": {"model": ["m", 0], "scheduler": scheduler, "steps": smp_steps, "denoise": 1.0}},
        "cap_inv": {"class_type": "ZSVRTest_Capture", "inputs": {"value": ["inv", 0], "key": "tdm_inversion"}},
        "cap": {"class_type": "ZSVRTest_Capture", "inputs": {"value": ["smp", 0], "key": capture}},
    }
    model = ["m", 0]
    if radius:
        g["sw"] = {"class_type": "ZSVR_SWCFA", "inputs": {"model": model, "radius": radius, "frames_per_video": 0,
                                                          "blocks": "all", "start_percent": 0.0, "end_percent": 1.0}}
        model = ["sw", 0]
    g["gd"] = {"class_type": "CFGGuider", "inputs": {"model": model, "positive": ["null", 0], "negative": ["null", 0], "cfg": 1.0}}
    noise, sampler = ["rep", 0], ["rep", 1]
    if fresh_noise:
        g["noise"] = {"class_type": "RandomNoise", "inputs": {"noise_seed": 5}}
        g["ddim"] = {"class_type": "KSamplerSelect", "inputs": {"sampler_name": "ddim"}}
        noise, sampler = ["noise", 0], ["ddim", 0]
    g["smp"] = {"class_type": "SamplerCustomAdvanced", "inputs": {
        "noise": noise, "guider": ["gd", 0], "sampler": sampler, "sigmas": ["smp_sig", 0], "latent_image": ["lat", 0]}}
    return g


def test_ddim_inversion_hands_its_x_T_to_a_sampling_schedule_of_another_length(host, unet):
    """TDM inverts with 10 DDIM steps and samples with 32. ``ZSVR_InversionSampler``'s SAMPLER (rule ``ddim``)
    accepts any SIGMAS whose first value is an inverted level; every core scheduler but ddim_uniform starts at
    sigma_max for any step count, so a 16-step schedule starts from the inversion's x_T (its latent at sigma_max)
    and runs DDIM steps over the new schedule.

    What is honest to assert with random weights: the first model call of the sampling sees exactly the inverted
    x_T at sigma_max; the output is finite; it reproduces the input about as well as replaying the inversion's own
    10-step schedule (the error is the 10-step DDIM inversion's own, not the hand-over's; the same schedule is not
    reliably better: the stored final residual corrects only the last step, and on this tiny model 32 or 64
    sampling steps came out slightly better than 10), and far better than the same sampling from fresh noise. SW-CFA (radius 3) runs on the same hand-over. A schedule that starts elsewhere is
    refused with a message naming the inverted levels.
    """
    calls: list[tuple] = []

    def record(apply_model, args):
        if args["c"].get("transformer_options", {}).get("zsvr_pass") != "inversion":
            calls.append((args["input"].detach().clone(), float(args["timestep"].flatten()[0])))
        return apply_model(args["input"], args["timestep"], **args["c"])

    model = unet.clone()
    model.set_model_unet_function_wrapper(record)
    host.store["tdm_model"] = model
    x = torch.randn(3, 4, 8, 8, generator=torch.Generator().manual_seed(11))
    host.store["tdm_lat"] = {"samples": x}
    sigma_max = float(unet.get_model_object("model_sampling").sigma_max)

    errors, outputs = {}, {}
    for name, steps, kwargs in (("same", INV_STEPS, {}), ("other", 16, {}), ("fresh", 16, {"fresh_noise": True}),
                                ("swcfa", 16, {"radius": 3})):
        calls.clear()
        out = run_samples(host, _tdm_graph(host, steps, capture=f"tdm_{name}", **kwargs), f"tdm_{name}")
        assert torch.isfinite(out).all(), name
        assert len(calls) == steps, (name, len(calls))
        outputs[name], errors[name] = out, rel_error(out, x)
        inversion = host.captured["tdm_inversion"]
        assert inversion.rule == "ddim" and inversion.steps == INV_STEPS
        first_input, first_sigma = calls[0]
        assert first_sigma == pytest.approx(sigma_max, rel=1e-5), name
        if name != "fresh":  # the hand-over: the sampler's first model input is the inverted latent at sigma_max
            assert torch.equal(first_input, inversion.trajectory[0].to(first_input.dtype)), name
    print("TDM hand-over, relative error to the input latent: " +
          ", ".join(f"{k} {v:.3g}" for k, v in errors.items()) +
          f" (inversion {INV_STEPS} steps; same = {INV_STEPS}-step sampling, other/swcfa = 16 steps, "
          "fresh = 16 DDIM steps from new noise)")
    assert errors["other"] < 0.3
    assert errors["other"] < 1.5 * errors["same"]
    assert errors["fresh"] > 10 * errors["other"]
    assert rel_error(outputs["swcfa"], outputs["other"]) > 1e-3  # SW-CFA acts on the handed-over trajectory

    res = host.run(_tdm_graph(host, 16, capture="tdm_bad", scheduler="ddim_uniform"))
    assert not res.success
    assert "'sigmas'" in res.error_message and "not a level of the DDIM inversion" in res.error_message


def test_the_schedule_gate_reads_the_sigma_once_per_model_call(host):
    """Every attention layer of one model call gets the same ``sigmas`` tensor; reading it is a device sync,
    so the gate reads it once per call, not once per layer."""
    import sys

    frame_layout = sys.modules[f"{host.pack.__name__}.nodes.frame_layout"]

    class Sigmas:  # stands for the GPU tensor ComfyUI puts in transformer_options["sigmas"]
        def __init__(self, value):
            self.value, self.reads = value, 0

        def detach(self):
            self.reads += 1
            return torch.tensor([self.value])

    first, second = Sigmas(3.0), Sigmas(2.0)
    assert [frame_layout.current_sigma({"sigmas": first}) for _ in range(16)] == [3.0] * 16
    assert frame_layout.current_sigma({"sigmas": second}) == 2.0 and frame_layout.current_sigma({}) is None
    assert first.reads == 1 and second.reads == 1


def test_the_frame_patches_share_one_plan_cache_and_one_gated_key_value_mapping(host):
    """``frame_layout.cached_plan`` makes a plan once per layout, keeps an identity plan as None and is emptied past
    64 layouts; ``frame_layout.gated_frame_kv`` (the work of the SW-CFA and SLR ``attn1_patch``) maps only the
    key/value inputs laid out like the frames, and returns None outside the window or for an identity plan."""
    import sys

    frame_layout = sys.modules[f"{host.pack.__name__}.nodes.frame_layout"]
    plans, made = {}, []

    def make(radius):
        made.append(radius)
        return cfa.plan_windows([0, 0, 0, 0], [0, 1, 2, 3], radius)

    opts = {"cond_or_uncond": [0]}
    first = frame_layout.cached_plan(plans, 4, opts, "cpu", lambda: make(1))
    again = frame_layout.cached_plan(plans, 4, opts, "cpu", lambda: make(2))
    assert again is first and made == [1] and torch.equal(first.count, torch.tensor([2, 3, 3, 2]))
    assert frame_layout.cached_plan(plans, 4, {"cond_or_uncond": [0, 1]}, "cpu", lambda: make(0)) is None
    assert made == [1, 0] and len(plans) == 2
    for rows in range(100, 164):
        frame_layout.cached_plan(plans, rows, opts, "cpu", lambda: make(0))
    # 2 + 63 layouts fill it to 65; the 64th new layout finds it over 64, empties it and is its only entry
    assert list(plans) == [(163, 1, None, 0, "cpu")] and made == [1, 0] + [0] * 64

    h = torch.arange(4 * 2 * 3, dtype=torch.float32).reshape(4, 2, 3)
    text = torch.ones(1, 5, 3)  # a cross-attention context: another batch, passed through
    plan_for = lambda rows, extra_options, device: first if rows == 4 else None  # noqa: E731
    n, context, value = frame_layout.gated_frame_kv(h, h, text, opts, None, plan_for, cfa.apply_plan)
    assert n is h and value is text and torch.allclose(context[1], h[0:3].mean(0)) and torch.allclose(
        context[0], h[0:2].mean(0))
    assert frame_layout.gated_frame_kv(h, h, h, opts, lambda o: False, plan_for, cfa.apply_plan) is None
    single = h[:1]
    assert frame_layout.gated_frame_kv(single, single, single, opts, lambda o: True, plan_for, cfa.apply_plan) is None
