"""Foundation host tests: the pack loads through ComfyUI's registry and core graphs run on tiny models."""

import math

import pytest
import torch

from host_harness import REALRAIN_DIR, rel_error

EXPECTED_NODES = {"ZSVR_LoadVideo", "ZSVR_DDPMInvert", "ZSVR_InversionSampler", "ZSVR_NegativePromptEditor", "ZSVR_EarlyStop"}


def test_every_zsvr_node_is_registered_with_tooltips(host):
    registered = set(host.zsvr_node_ids())
    assert EXPECTED_NODES <= registered
    for node_id in registered:
        cls = host.nodes.NODE_CLASS_MAPPINGS[node_id]
        info = cls.INPUT_TYPES()
        for group in ("required", "optional"):
            for name, spec in info.get(group, {}).items():
                options = spec[1] if len(spec) > 1 else {}
                assert options.get("tooltip"), f"{node_id}.{name} has no tooltip"
        assert cls.CATEGORY.startswith("ZSVR"), node_id


def _euler_reference(model_patcher, empty_latent, seed, steps, scheduler, cfg, positive, negative):
    """KSampler's euler sampling written out from the model's own pieces (its denoiser ``apply_model``, noise
    scaling and latent format), without ComfyUI's sampler, guider or k-diffusion code."""
    import comfy.samplers

    model = model_patcher.model
    ms = model.model_sampling
    sigmas = comfy.samplers.calculate_sigmas(ms, scheduler, steps).float()
    noise = torch.randn(empty_latent.shape, generator=torch.manual_seed(seed))  # comfy.sample.prepare_noise
    start = model.latent_format.process_in(empty_latent)
    full = math.isclose(float(ms.sigma_max), float(sigmas[0]), rel_tol=1e-5)
    x = ms.noise_scaling(sigmas[0], noise, start, max_denoise=full)

    def denoised(x, sigma, context):  # the sampler hands the text batch repeated to the latent batch
        return model.apply_model(x, sigma.expand(x.shape[0]), c_crossattn=context.repeat(x.shape[0], 1, 1))

    with torch.no_grad():
        for i in range(steps):
            cond = denoised(x, sigmas[i], positive)
            pred = cond if cfg == 1.0 else (lambda u: u + (cond - u) * cfg)(denoised(x, sigmas[i], negative))
            x = x + (x - pred) / sigmas[i] * (sigmas[i + 1] - sigmas[i])  # euler: d = (x - x0) / sigma
    return model.latent_format.process_out(ms.inverse_noise_scaling(sigmas[-1], x))


def test_wan_tiny_model_samples_two_steps_with_core_ksampler(host):
    prompt = {
        "1": {"class_type": "UNETLoader", "inputs": {"unet_name": host.models["wan"].name, "weight_dtype": "default"}},
        "2": {"class_type": "ZSVRTest_RandomConditioning", "inputs": {"seed": 1, "tokens": 8, "width": 4096, "scale": 1.0}},
        "3": {"class_type": "ZSVRTest_RandomConditioning", "inputs": {"seed": 2, "tokens": 8, "width": 4096, "scale": 1.0}},
        "4": {"class_type": "EmptyHunyuanLatentVideo", "inputs": {"width": 32, "height": 32, "length": 5, "batch_size": 1}},
        "5": {"class_type": "KSampler", "inputs": {
            "model": ["1", 0], "positive": ["2", 0], "negative": ["3", 0], "latent_image": ["4", 0],
            "seed": 0, "steps": 2, "cfg": 3.0, "sampler_name": "euler", "scheduler": "simple", "denoise": 1.0}},
        "6": {"class_type": "ZSVRTest_Capture", "inputs": {"value": ["5", 0], "key": "wan_ks"}},
        "7": {"class_type": "ZSVRTest_Capture", "inputs": {"value": ["1", 0], "key": "wan_model"}},
        "8": {"class_type": "ZSVRTest_Capture", "inputs": {"value": ["2", 0], "key": "wan_pos"}},
        "9": {"class_type": "ZSVRTest_Capture", "inputs": {"value": ["3", 0], "key": "wan_neg"}},
    }
    result = host.run(prompt)
    assert result.success, result.error_message
    samples = host.captured["wan_ks"]["samples"]
    assert samples.shape == (1, 16, 2, 4, 4)
    # the same two euler steps (cfg 3 over two different prompts) computed by hand from the tiny model
    want = _euler_reference(host.captured["wan_model"], torch.zeros(1, 16, 2, 4, 4), 0, 2, "simple", 3.0,
                            host.captured["wan_pos"][0][0], host.captured["wan_neg"][0][0])
    err = rel_error(samples, want)
    assert err < 1e-5, f"KSampler output differs from the hand-written euler steps: relative error {err:.3g}"
    # the sampler reported its two steps through ComfyUI's progress hook
    assert any(total == 2 for _, _, total in result.progress)


def test_sd15_tiny_unet_and_taesd_decode(host):
    prompt = {
        "1": {"class_type": "UNETLoader", "inputs": {"unet_name": host.models["sd15"].name, "weight_dtype": "default"}},
        "2": {"class_type": "ZSVRTest_RandomConditioning", "inputs": {"seed": 1, "tokens": 8, "width": 768, "scale": 1.0}},
        "4": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 2}},
        "5": {"class_type": "KSampler", "inputs": {
            "model": ["1", 0], "positive": ["2", 0], "negative": ["2", 0], "latent_image": ["4", 0],
            "seed": 0, "steps": 2, "cfg": 1.0, "sampler_name": "euler", "scheduler": "normal", "denoise": 1.0}},
        "7": {"class_type": "VAELoader", "inputs": {"vae_name": host.models["taesd"].name}},
        "8": {"class_type": "VAEDecode", "inputs": {"samples": ["5", 0], "vae": ["7", 0]}},
        "9": {"class_type": "ZSVRTest_Capture", "inputs": {"value": ["8", 0], "key": "sd_img"}},
        "10": {"class_type": "ZSVRTest_Capture", "inputs": {"value": ["5", 0], "key": "sd_latent"}},
        "11": {"class_type": "ZSVRTest_Capture", "inputs": {"value": ["1", 0], "key": "sd_model"}},
        "12": {"class_type": "ZSVRTest_Capture", "inputs": {"value": ["7", 0], "key": "sd_taesd"}},
        "13": {"class_type": "ZSVRTest_Capture", "inputs": {"value": ["2", 0], "key": "sd_pos"}},
    }
    result = host.run(prompt)
    assert result.success, result.error_message
    image, latent = host.captured["sd_img"], host.captured["sd_latent"]["samples"]
    assert image.shape == (2, 64, 64, 3)
    want = _euler_reference(host.captured["sd_model"], torch.zeros(2, 4, 8, 8), 0, 2, "normal", 1.0,
                            host.captured["sd_pos"][0][0], None)
    err = rel_error(latent, want)
    assert err < 1e-5, f"KSampler output differs from the hand-written euler steps: relative error {err:.3g}"
    # TAESD's decoder on that latent, mapped from -1..1 to the 0..1 IMAGE range
    with torch.no_grad():
        decoded = ((host.captured["sd_taesd"].first_stage_model.decode(latent) + 1) / 2).clamp(0, 1).movedim(1, -1)
    assert torch.allclose(image, decoded, rtol=0, atol=1e-6)
    assert float(image.std()) > 0.001  # not a constant image


def _load_video(video="42.mp4", **overrides):
    inputs = {"video": video, "start_frame": 0, "frame_cap": 9, "every_nth": 1, "width": 96, "height": 64,
              "fit": "crop", "frame_rule": "4k+1", "size_multiple": 8, "best_effort": False, "pad_frames": False}
    inputs.update(overrides)
    return {"class_type": "ZSVR_LoadVideo", "inputs": inputs}


def _first_frames_by_pyav(path, count, width, height):
    """The first ``count`` frames decoded with PyAV and scaled by FFmpeg's area filter, as 8-bit RGB / 255
    (42.mp4 is 720x480, so 96x64 keeps the aspect ratio and the crop fit crops nothing)."""
    import av

    out = []
    with av.open(str(path)) as container:
        for frame in container.decode(video=0):
            rgb = frame.reformat(width=width, height=height, format="rgb24", interpolation="AREA").to_ndarray()
            out.append(torch.from_numpy(rgb).float() / 255.0)
            if len(out) == count:
                break
    return torch.stack(out)


@pytest.mark.skipif(not REALRAIN_DIR.is_dir(), reason="shared/data/realrain not found")
def test_load_video_vae_encode_decode_round_trip(host):
    prompt = {
        "1": _load_video(),
        "2": {"class_type": "VAELoader", "inputs": {"vae_name": host.models["taesd"].name}},
        "3": {"class_type": "VAEEncode", "inputs": {"pixels": ["1", 0], "vae": ["2", 0]}},
        "4": {"class_type": "VAEDecode", "inputs": {"samples": ["3", 0], "vae": ["2", 0]}},
        "5": {"class_type": "ZSVRTest_Capture", "inputs": {"value": ["4", 0], "key": "decoded"}},
        "6": {"class_type": "ZSVRTest_Capture", "inputs": {"value": ["1", 0], "key": "frames"}},
        "7": {"class_type": "ZSVRTest_Capture", "inputs": {"value": ["1", 1], "key": "fps"}},
        "8": {"class_type": "ZSVRTest_Capture", "inputs": {"value": ["1", 2], "key": "count"}},
        "9": {"class_type": "ZSVRTest_Capture", "inputs": {"value": ["3", 0], "key": "latent"}},
        "10": {"class_type": "ZSVRTest_Capture", "inputs": {"value": ["2", 0], "key": "rt_taesd"}},
    }
    result = host.run(prompt)
    assert result.success, result.error_message
    frames = host.captured["frames"]
    assert frames.shape == (9, 64, 96, 3) and frames.dtype == torch.float32
    assert torch.equal(frames, _first_frames_by_pyav(REALRAIN_DIR / "42.mp4", 9, 96, 64))
    assert host.captured["fps"] == pytest.approx(8.0)
    assert host.captured["count"] == 9
    latent, decoded = host.captured["latent"]["samples"], host.captured["decoded"]
    assert latent.shape == (9, 4, 8, 12) and decoded.shape == (9, 64, 96, 3)
    # the frames through TAESD's encoder and decoder directly (IMAGE 0..1 <-> the VAE's -1..1)
    taesd = host.captured["rt_taesd"].first_stage_model
    with torch.no_grad():
        want_latent = taesd.encode(frames.movedim(-1, 1) * 2 - 1)
        want_decoded = ((taesd.decode(latent) + 1) / 2).clamp(0, 1).movedim(1, -1)
    assert torch.allclose(latent, want_latent, rtol=0, atol=1e-5)
    assert torch.allclose(decoded, want_decoded, rtol=0, atol=1e-6)
    # the loader reported per-frame progress through the host's hook
    assert any(node == "1" for node, _, _ in result.progress)


def test_load_video_missing_file_is_a_validation_error(host):
    result = host.run({"1": _load_video("no_such_clip.mp4"),
                       "2": {"class_type": "ZSVRTest_Capture", "inputs": {"value": ["1", 0], "key": "x"}}})
    assert not result.valid
    assert "no_such_clip.mp4" in result.error_message


@pytest.mark.skipif(not REALRAIN_DIR.is_dir(), reason="shared/data/realrain not found")
def test_load_video_size_not_on_the_grid_names_the_multiple(host):
    result = host.run({"1": _load_video(width=100, size_multiple=16),
                       "2": {"class_type": "ZSVRTest_Capture", "inputs": {"value": ["1", 0], "key": "x"}}})
    assert not result.success
    assert "16" in result.error_message and "width" in result.error_message
