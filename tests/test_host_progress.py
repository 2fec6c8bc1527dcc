"""Progress in the page and Cancel on the pack's long stages (issue 16, item 4): the CogVideoX VAE in core VAE
Encode/Decode (plain and tiled), ZSVR Load Video. (ZSVR DDPM Inversion: test_host_inversion.py.)"""

from __future__ import annotations

import contextlib

import pytest
import torch

from test_host_cogvideox import _load, _loader, cog  # noqa: F401  (cog: the tiny CogVideoX folders fixture)


def _node_progress(result, node_id: str) -> list[tuple]:
    return [p for p in result.progress if p[0] == node_id]


@contextlib.contextmanager
def _counting(module: torch.nn.Module):
    """Counts the forward calls of ``module`` (diffusers' encoder or decoder: one call per frame chunk)."""
    calls = []
    handle = module.register_forward_hook(lambda *args: calls.append(1))
    try:
        yield calls
    finally:
        handle.remove()


def _coded(frames: torch.Tensor, key: str, tiled: dict | None = None) -> dict:
    encode = {"class_type": "VAEEncode", "inputs": {"pixels": ["px", 0], "vae": ["m", 1]}}
    decode = {"class_type": "VAEDecode", "inputs": {"samples": ["enc", 0], "vae": ["m", 1]}}
    if tiled is not None:
        encode = {"class_type": "VAEEncodeTiled", "inputs": dict(tiled, pixels=["px", 0], vae=["m", 1])}
        decode = {"class_type": "VAEDecodeTiled", "inputs": dict(tiled, samples=["enc", 0], vae=["m", 1])}
    return {"m": _loader(), "px": {"class_type": "ZSVRTest_Inject", "inputs": {"key": key}},
            "enc": encode, "dec": decode,
            "cap": {"class_type": "ZSVRTest_Capture", "inputs": {"value": ["dec", 0], "key": key}}}


def test_cogvideox_vae_reports_each_frame_chunk(host, cog):
    """17 frames: diffusers encodes 8 frames per call (the first chunk takes the extra frame: 9 + 8) and decodes
    2 latent frames per call (5 latent frames: 3 + 2), so core VAE Encode and VAE Decode each report 1/2, 2/2."""
    _, vae = _load(host)
    ae = vae.first_stage_model.autoencoder
    host.store["cog_px17"] = torch.rand(17, 16, 16, 3, generator=torch.Generator().manual_seed(4))
    with _counting(ae.encoder) as enc_calls, _counting(ae.decoder) as dec_calls:
        result = host.run(_coded(host.store["cog_px17"], "cog_px17"))
    assert result.success, result.error_message
    assert len(enc_calls) == 2 and len(dec_calls) == 2
    assert _node_progress(result, "enc") == [("enc", 1, 2), ("enc", 2, 2)]
    assert _node_progress(result, "dec") == [("dec", 1, 2), ("dec", 2, 2)]
    assert host.captured["cog_px17"].shape == (17, 16, 16, 3)


def test_cogvideox_tiled_pass_has_one_bar_over_all_tiles(host, cog):
    """Core's tiled nodes call the VAE once per tile: one bar counts every chunk of every tile, ending at its
    total (the decoder calls counted here), instead of restarting at each tile."""
    _, vae = _load(host)
    ae = vae.first_stage_model.autoencoder
    host.store["cog_px_t"] = torch.rand(17, 72, 72, 3, generator=torch.Generator().manual_seed(5))
    tiled = {"tile_size": 64, "overlap": 0, "temporal_size": 64, "temporal_overlap": 8}
    with _counting(ae.encoder) as enc_calls, _counting(ae.decoder) as dec_calls:
        result = host.run(_coded(host.store["cog_px_t"], "cog_px_t", tiled))
    assert result.success, result.error_message
    assert len(enc_calls) == len(dec_calls) == 8  # 2 x 2 tiles (64 + 8 px each way), 2 chunks each
    for node, calls in (("enc", enc_calls), ("dec", dec_calls)):
        steps = _node_progress(result, node)
        assert steps == [(node, k, len(calls)) for k in range(1, len(calls) + 1)], steps


def test_cancel_during_the_vae_encode_stops_the_run(host, cog):
    host.store["cog_px17b"] = torch.rand(17, 16, 16, 3, generator=torch.Generator().manual_seed(6))
    host.captured.pop("cog_px17b", None)
    result = host.run(_coded(host.store["cog_px17b"], "cog_px17b"), interrupt_after_progress=1)
    assert result.interrupted and not result.success
    assert _node_progress(result, "enc") == [("enc", 1, 2)] and _node_progress(result, "dec") == []
    assert "cog_px17b" not in host.captured


def test_cogvideox_vae_checks_cancel_before_each_chunk(host, cog):
    """The adapter asks ComfyUI before every chunk, not only through the progress hook: with Cancel already
    pressed, no chunk runs."""
    import comfy.model_management

    _, vae = _load(host)
    ae = vae.first_stage_model.autoencoder
    pixels = torch.rand(9, 16, 16, 3, generator=torch.Generator().manual_seed(7))
    host.nodes.interrupt_processing(True)
    try:
        with _counting(ae.encoder) as calls, pytest.raises(comfy.model_management.InterruptProcessingException):
            vae.encode(pixels)
    finally:
        host.nodes.interrupt_processing(False)
    assert calls == []


def test_cancel_while_loading_a_video_stops_the_run(host):
    from host_harness import REALRAIN_DIR

    if not (REALRAIN_DIR / "42.mp4").is_file():
        pytest.skip("shared/data/realrain not found")
    g = {"1": {"class_type": "ZSVR_LoadVideo", "inputs": {
        "video": "42.mp4", "start_frame": 0, "frame_cap": 20, "every_nth": 1, "width": 96, "height": 64,
        "fit": "crop", "frame_rule": "any", "size_multiple": 8, "best_effort": False, "pad_frames": False}},
         "cap": {"class_type": "ZSVRTest_Capture", "inputs": {"value": ["1", 0], "key": "cancel_load"}}}
    host.captured.pop("cancel_load", None)
    result = host.run(g, interrupt_after_progress=3)
    assert result.interrupted and not result.success and "cancel_load" not in host.captured
    assert [p[1] for p in _node_progress(result, "1")] == [1, 2, 3]  # stopped at the third frame of 20
