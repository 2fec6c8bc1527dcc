"""Foundation host tests: the pack loads through ComfyUI's registry and core graphs run on tiny models."""

import pytest
import torch

from host_harness import REALRAIN_DIR

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
    }
    result = host.run(prompt)
    assert result.success, result.error_message
    samples = host.captured["wan_ks"]["samples"]
    assert samples.shape == (1, 16, 2, 4, 4)
    assert torch.isfinite(samples).all()
    assert samples.abs().sum() > 0
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
    }
    result = host.run(prompt)
    assert result.success, result.error_message
    image = host.captured["sd_img"]
    assert image.shape == (2, 64, 64, 3)
    assert float(image.min()) >= 0.0 and float(image.max()) <= 1.0


def _load_video(video="42.mp4", **overrides):
    inputs = {"video": video, "start_frame": 0, "frame_cap": 9, "every_nth": 1, "width": 96, "height": 64,
              "fit": "crop", "frame_rule": "4k+1", "size_multiple": 8, "best_effort": False, "pad_frames": False}
    inputs.update(overrides)
    return {"class_type": "ZSVR_LoadVideo", "inputs": inputs}


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
    }
    result = host.run(prompt)
    assert result.success, result.error_message
    frames = host.captured["frames"]
    assert frames.shape == (9, 64, 96, 3) and frames.dtype == torch.float32
    assert 0.0 <= float(frames.min()) and float(frames.max()) <= 1.0 and float(frames.std()) > 0.01
    assert host.captured["fps"] == pytest.approx(8.0)
    assert host.captured["count"] == 9
    assert host.captured["latent"]["samples"].shape == (9, 4, 8, 12)
    assert host.captured["decoded"].shape == (9, 64, 96, 3)
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
