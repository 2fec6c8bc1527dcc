"""The shipped ZSVD graph removes rain on a model that knows rain (issue 17's test bed), on the real host.

The model is the committed ``bench/testbed/model/zsvr_testbed_wan21_t2v.safetensors`` (ComfyUI's
``WanModel``, 6 blocks, trained on this CPU by ``bench/testbed/train.py``: clean 32x32 clips under a
null prompt, rainy ones under "rain"), loaded by core ``UNETLoader`` (detected as WAN21_T2V). The clips
are committed held-out clips with unseen rain (``bench/testbed/heldout.safetensors``). The graph is the
pack's: ``ZSVR_DDPMInvert`` (null / null) -> ``ZSVR_InversionSampler`` -> ``ZSVR_NegativePromptEditor``
(null vs "rain") -> core ``SamplerCustomAdvanced``, at the bench's best point (strength 6, skip 40 of 100)
on a 25-step schedule (skip 10 of 25).

The margin comes from ``bench/results/testbed_cpu.json`` (family "short": this schedule and setting): on
clips 1, 4 and 8 the mean PSNR gain measured +2.57 dB (+1.89, +2.82, +2.99); the test asks for +1.8 dB.
"""

from __future__ import annotations

import pathlib
import sys

import pytest
import torch

BENCH_DIR = pathlib.Path(__file__).resolve().parent.parent / "bench"

CLIPS = (1, 4, 8)
STEPS = 25
SKIP = 10
STRENGTH = 6.0
MIN_GAIN_DB = 1.8  # measured +2.57 dB on these clips with this schedule (see the module docstring)


@pytest.fixture(scope="module")
def testbed(host):
    """The test bed's nodes registered into the host, its model folder added, and its helpers."""
    if str(BENCH_DIR) not in sys.path:
        sys.path.insert(0, str(BENCH_DIR))
    from testbed import host_nodes, metrics
    from testbed.train import MODEL_DIR

    sink: dict = {}
    host_nodes.register(host.nodes, sink)
    host.comfy.folder_paths.add_model_folder_path("diffusion_models", str(MODEL_DIR))
    return host_nodes, metrics, sink


def _run(host, testbed, index, **settings) -> torch.Tensor:
    host_nodes, _, sink = testbed
    result = host.run(host_nodes.zsvd_prompt(index, steps=STEPS, key="out", **settings))
    assert result.success, result.error_message
    return host_nodes.decode_latent(sink.pop("out"))


def test_the_committed_model_is_detected_as_wan21_t2v(host, testbed):
    """UNETLoader finds the committed file and the host builds a WAN21 flow model with 6 blocks from it."""
    import comfy.sd

    host_nodes, _, _ = testbed
    path = host.comfy.folder_paths.get_full_path_or_raise("diffusion_models", host_nodes.testbed_meta()["weights"])
    patcher = comfy.sd.load_diffusion_model(path)
    assert type(patcher.model.model_config).__name__ == "WAN21_T2V"
    assert len(patcher.model.diffusion_model.blocks) == 6
    assert float(patcher.model.model_sampling.shift) == 8.0


def test_derain_beats_the_rainy_input_and_strength_1_reconstructs(host, testbed):
    """Strength 6 from skip 10 of 25 raises the mean PSNR over the clean clips by at least MIN_GAIN_DB; strength 1
    returns the rainy input (the exact pixel-space latent makes it exact up to float rounding)."""
    host_nodes, metrics, _ = testbed
    data = host_nodes.heldout_clips()
    rainy_psnr, derained_psnr = [], []
    for i in CLIPS:
        clean, rainy = data["clean"][i], data["rainy"][i]
        recon = _run(host, testbed, i, strength=1.0, skip=SKIP)
        err = float((recon - rainy).abs().max())
        assert err < 2e-3, f"clip {i}: strength 1 moved a pixel by {err:.3g}"
        out = _run(host, testbed, i, strength=STRENGTH, skip=SKIP)
        rainy_psnr.append(metrics.psnr(rainy, clean))
        derained_psnr.append(metrics.psnr(out, clean))
    gain = sum(derained_psnr) / len(CLIPS) - sum(rainy_psnr) / len(CLIPS)
    assert gain > MIN_GAIN_DB, (f"derained {derained_psnr} vs rainy {rainy_psnr} dB: mean gain {gain:.2f} dB "
                                f"(needs > {MIN_GAIN_DB})")
