"""CogVideoX on the real host: ZSVR_LoadCogVideoX, its schedule, the ZSVD loop and the joint-attention switch.

Tiny random diffusers CogVideoX folders (3 blocks, 2 heads of 16, 16 latent channels, text width 32,
max_text_seq_length 8) are written into a ``diffusers`` model folder at the start of the module.
"""

from __future__ import annotations

import math
import sys
import types

import pytest
import torch

import tiny_models as tm
from host_harness import rel_error
from test_host_inversion import _graph as _inv_graph

FOLDER = "tiny-cogvideox"
ROPE_FOLDER = "tiny-cogvideox-rope"
NO_SCHEDULER = "broken/no-scheduler"
NO_WEIGHTS = "broken/no-weights"
TOKENS = 6  # fewer than max_text_seq_length: the model pads them


@pytest.fixture(scope="module")
def cog(host):
    """Writes the tiny folders and registers them as ComfyUI's ``diffusers`` model folder."""
    import folder_paths

    root = host.models_dir / "diffusers"
    tm.write_tiny_cogvideox(root / FOLDER)
    tm.write_tiny_cogvideox(root / ROPE_FOLDER, seed=3, rope=True)
    tm.write_tiny_cogvideox(root / NO_SCHEDULER, components=("transformer", "vae"))
    tm.write_tiny_cogvideox(root / NO_WEIGHTS)
    (root / NO_WEIGHTS / "transformer" / "diffusion_pytorch_model.safetensors").unlink()
    folder_paths.add_model_folder_path("diffusers", str(root), is_default=True)
    return root


def _loader(folder=FOLDER):
    return {"class_type": "ZSVR_LoadCogVideoX", "inputs": {"model_folder": folder, "dtype": "fp32"}}


def _cond(seed):
    return {"class_type": "ZSVRTest_RandomConditioning",
            "inputs": {"seed": seed, "tokens": TOKENS, "width": tm.COGVIDEOX_TEXT_DIM, "scale": 1.0}}


def _latent(seed=0, shape=(1, 16, 3, 8, 8)):
    return {"samples": torch.randn(shape, generator=torch.Generator().manual_seed(seed))}


def _graph(host, rule, skip, *, steps=10, remove_seed=None, strength=1.0, guider="editor", capture="out", blocks=None):
    """Invert with the null prompt, replay from ``skip`` with the editor (or core CFG), optionally switched."""
    g = _inv_graph(host, "wan", rule, skip, remove_seed=remove_seed, strength=strength, guider=guider,
                   capture=capture, steps=steps)
    g["m"] = _loader()
    g["null"] = _cond(7)
    if remove_seed is not None:
        g["rm"] = _cond(remove_seed)
    if blocks is not None:
        g["sw"] = {"class_type": "ZSVR_AttentionSwitch", "inputs": {"model": ["m", 0], "blocks": blocks,
                                                                     "start_percent": 0.0, "end_percent": 1.0}}
        g["gd"]["inputs"]["model"] = ["sw", 0]
    return g


def _load(host, folder=FOLDER):
    res = host.run({"m": _loader(folder), "cap": {"class_type": "ZSVRTest_Capture", "inputs": {"value": ["m", 0], "key": "model"}},
                    "capv": {"class_type": "ZSVRTest_Capture", "inputs": {"value": ["m", 1], "key": "vae"}}})
    assert res.success, res.error_message
    return host.captured["model"], host.captured["vae"]


def _module(host, name):
    return sys.modules[f"{host.pack.__name__}.nodes.{name}"]


# -- loader, schedule, wrapper ------------------------------------------------------------------
def test_loader_lists_folders_and_builds_a_comfy_model(host, cog):
    import comfy.model_base
    import comfy.model_patcher

    options = host.nodes.NODE_CLASS_MAPPINGS["ZSVR_LoadCogVideoX"].INPUT_TYPES()["required"]["model_folder"]
    names = options[0] if isinstance(options[0], list) else options[1]["options"]
    assert FOLDER in names and ROPE_FOLDER in names and NO_SCHEDULER in names
    model, vae = _load(host)
    assert isinstance(model, comfy.model_patcher.ModelPatcher)
    assert isinstance(model.model, comfy.model_base.BaseModel)
    assert model.model.model_type == comfy.model_base.ModelType.V_PREDICTION
    assert model.model.latent_format.latent_channels == 16 and model.model.latent_format.scale_factor == 0.7
    assert _module(host, "adapters.cogvideox").CogVideoXAdapter.matches(model.model.diffusion_model)
    assert not _module(host, "adapters.cogvideox").CogVideoXAdapter.matches(torch.nn.Linear(1, 1))
    assert vae.latent_channels == 16 and vae.latent_dim == 3


def test_loading_does_not_suggest_installing_accelerate(host, cog, capfd, monkeypatch):
    """diffusers versions whose ``low_cpu_mem_usage`` defaults to True suggest ``pip install accelerate`` at every
    model load (twice per CogVideoX: transformer and VAE) where accelerate is missing. The loader passes what
    this install can do (True only with accelerate), so no version prints the hint (issue 25 item 7)."""
    import diffusers
    from diffusers.utils import is_accelerate_available

    asked = []
    for cls in (diffusers.CogVideoXTransformer3DModel, diffusers.AutoencoderKLCogVideoX):
        real = cls.from_pretrained

        def spy(klass, *args, _real=real, **kwargs):
            asked.append(kwargs.get("low_cpu_mem_usage", "not passed"))
            return _real(*args, **kwargs)

        monkeypatch.setattr(cls, "from_pretrained", classmethod(spy))
    capfd.readouterr()
    _module(host, "load_cogvideox").load_cogvideox(str(cog / FOLDER), "fp32")
    out, err = capfd.readouterr()
    assert asked == [is_accelerate_available()] * 2
    assert "accelerate" not in out + err


def test_schedule_is_diffusers_cogvideox_ddim(host, cog):
    """alphas_cumprod (SNR shift 3 + zero-terminal-SNR rescale) and the 'simple' = trailing timesteps."""
    import comfy.samplers
    from diffusers import CogVideoXDDIMScheduler

    model, _ = _load(host)
    ms = model.get_model_object("model_sampling")
    sched = CogVideoXDDIMScheduler.from_pretrained(str(cog / FOLDER / "scheduler"))
    ac = 1.0 / (ms.sigmas.double() ** 2 + 1.0)
    ref = sched.alphas_cumprod.double()
    assert torch.allclose(ac[:-1], ref[:-1], rtol=1e-5, atol=0)
    assert float(ref[-1]) == 0.0 and float(ac[-1]) < 1e-7  # ComfyUI keeps the terminal SNR at ~5e-8, not 0
    sigmas = comfy.samplers.calculate_sigmas(ms, "simple", 50)
    sched.set_timesteps(50)
    assert torch.equal(ms.timestep(sigmas[:-1]).long(), sched.timesteps.long())


@pytest.mark.parametrize("kind", ["scaled_linear", "linear", "squaredcos_cap_v2"])
@pytest.mark.parametrize("zsnr", [False, True])
def test_schedule_kernel_equals_comfys_schedule_math(host, kind, zsnr):
    """The pure-torch schedule (kernels/cogvideox_schedule.py) gives bit for bit the sigmas of ComfyUI's own beta
    schedules and zero-terminal-SNR rescale, so ComfyUI's timestep lookup sees the same table."""
    import comfy.model_sampling
    from comfy.ldm.modules.diffusionmodules.util import make_beta_schedule
    from zsvr.kernels.cogvideox_schedule import schedule_sigmas

    comfy_names = {"scaled_linear": "linear", "linear": "sqrt_linear", "squaredcos_cap_v2": "squaredcos_cap_v2"}
    config = dict(tm.COGVIDEOX_SCHEDULER_CONFIG, beta_schedule=kind, rescale_betas_zero_snr=zsnr)
    betas = torch.as_tensor(make_beta_schedule(comfy_names[kind], 1000, linear_start=0.00085, linear_end=0.012),
                            dtype=torch.float64)
    abar = torch.cumprod(1.0 - betas, dim=0)
    want = ((1.0 - abar) / abar).sqrt() * math.sqrt(3.0)
    if zsnr:
        want = comfy.model_sampling.rescale_zero_terminal_snr_sigmas(want)
    got = schedule_sigmas(config)
    assert got.dtype == torch.float64 and torch.equal(got, want)


def test_schedule_kernel_errors_name_their_parameter():
    from zsvr.kernels.cogvideox_schedule import betas, rescale_zero_terminal_snr, schedule_sigmas

    with pytest.raises(ValueError, match="scheduler_config has beta_schedule 'cosine'"):
        schedule_sigmas(dict(tm.COGVIDEOX_SCHEDULER_CONFIG, beta_schedule="cosine"))
    with pytest.raises(ValueError, match="scheduler_config has trained_betas"):
        schedule_sigmas(dict(tm.COGVIDEOX_SCHEDULER_CONFIG, trained_betas=[0.1, 0.2]))
    with pytest.raises(ValueError, match="snr_shift_scale"):
        schedule_sigmas(dict(tm.COGVIDEOX_SCHEDULER_CONFIG, snr_shift_scale=0))
    with pytest.raises(TypeError, match="scheduler_config must be a mapping"):
        schedule_sigmas([("beta_schedule", "linear")])
    with pytest.raises(ValueError, match="num_train_timesteps"):
        betas("linear", 1, 0.1, 0.2)
    with pytest.raises(ValueError, match="sigmas must be"):
        rescale_zero_terminal_snr(torch.ones(1))
    # no snr_shift_scale: 3.0 for diffusers' CogVideoX schedulers, none for other scheduler classes
    plain = {k: v for k, v in tm.COGVIDEOX_SCHEDULER_CONFIG.items()
             if k not in ("snr_shift_scale", "rescale_betas_zero_snr")}
    ratio = (schedule_sigmas(dict(plain, _class_name="CogVideoXDDIMScheduler"))
             / schedule_sigmas(dict(plain, _class_name="DDIMScheduler")))
    assert torch.allclose(ratio, torch.full_like(ratio, math.sqrt(3.0)), rtol=1e-12, atol=0)


def test_unsupported_scheduler_is_a_model_folder_error(host):
    fmt = _module(host, "adapters.cogvideox_format")
    with pytest.raises(ValueError, match="'model_folder'.*beta_schedule 'cosine'"):
        fmt.build_model_sampling(None, dict(tm.COGVIDEOX_SCHEDULER_CONFIG, beta_schedule="cosine"))
    with pytest.raises(ValueError, match="'model_folder'.*prediction_type 'sample'"):
        fmt.build_model_sampling(None, dict(tm.COGVIDEOX_SCHEDULER_CONFIG, prediction_type="sample"))


def test_rope_crop_region():
    """diffusers' get_resize_crop_region_for_grid: the grid keeps its aspect ratio, fitted and centred in the base."""
    from zsvr.kernels.cogvideox_rope import crop_region

    assert crop_region((30, 45), 45, 30) == ((0, 0), (30, 45))  # the training grid itself
    assert crop_region((2, 2), 4, 4) == ((0, 0), (4, 4))  # same ratio, smaller: scaled up to the whole base
    assert crop_region((3, 5), 4, 4) == ((1, 0), (3, 4))  # wider than the base: full width, centred rows
    assert crop_region((5, 3), 4, 4) == ((0, 1), (4, 3))  # taller: full height, centred columns
    for bad in (((0, 2), 4, 4), ((2, 2), 0, 4), ((2,), 4, 4), ((2, 2), 4, 2.0)):
        with pytest.raises(ValueError, match="grid|base_w|base_h"):
            crop_region(*bad)


def test_adapter_installs_the_processors_and_declares_its_capabilities(host, cog):
    """The loader gives every block the adapter's processor (once, over diffusers' stock one); the switch node's
    settings are all the switch needs, so install_switch patches nothing."""
    adapter_mod = _module(host, "adapters.cogvideox")
    model, _ = _load(host)
    blocks = model.model.diffusion_model.transformer.transformer_blocks
    procs = [b.attn1.processor for b in blocks]
    assert all(type(p).__name__ == "SwitchProcessor" for p in procs) and [p.block for p in procs] == [0, 1, 2]
    assert all(type(p.stock).__name__ == "CogVideoXAttnProcessor2_0" for p in procs)
    assert all(p.attention is adapter_mod.host_attention for p in procs)
    adapter_mod.CogVideoXAdapter.install_processors(model.model.diffusion_model.transformer)  # again: still one layer
    assert all(type(b.attn1.processor.stock).__name__ == "CogVideoXAttnProcessor2_0" for b in blocks)
    caps = adapter_mod.CogVideoXAdapter.capabilities
    assert (caps.text_key_switch, caps.frame_axis, caps.self_attention_patch, caps.latent_is_video,
            caps.context_windows) == (True, "time", False, True, True)  # windows: tests/test_host_context_windows.py
    clone = model.clone()
    before = dict(clone.model_options.get("transformer_options", {}))
    adapter_mod.CogVideoXAdapter().install_switch(clone, [0, 1], None)
    assert clone.model_options.get("transformer_options", {}) == before and not clone.patches


@pytest.mark.parametrize("folder,shape", [(FOLDER, (2, 16, 3, 8, 8)), (ROPE_FOLDER, (1, 16, 2, 6, 10))])
def test_model_prediction_equals_diffusers(host, cog, folder, shape):
    """ComfyUI's denoised x0 equals diffusers' transformer + v-prediction at the same timestep (2b and 5b layouts)."""
    from diffusers import CogVideoXDDIMScheduler, CogVideoXTransformer3DModel
    from diffusers.pipelines.cogvideo.pipeline_cogvideox import CogVideoXPipeline

    model, _ = _load(host, folder)
    ms = model.get_model_object("model_sampling")
    ref = CogVideoXTransformer3DModel.from_pretrained(str(cog / folder / "transformer")).eval()
    sched = CogVideoXDDIMScheduler.from_pretrained(str(cog / folder / "scheduler"))
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(shape, generator=gen) * 3
    ctx = torch.randn(shape[0], TOKENS, tm.COGVIDEOX_TEXT_DIM, generator=gen)
    t = 700
    sigma = ms.sigmas[t].reshape(1).expand(shape[0])
    with torch.no_grad():
        ours = model.model.apply_model(x, sigma, c_crossattn=ctx)
        ac = sched.alphas_cumprod[t].float()
        x_t = x / (float(ms.sigmas[t]) ** 2 + 1) ** 0.5
        rope = None
        if ref.config.use_rotary_positional_embeddings:
            pipe = types.SimpleNamespace(transformer=ref, vae_scale_factor_spatial=8)
            rope = CogVideoXPipeline._prepare_rotary_positional_embeddings(pipe, shape[3] * 8, shape[4] * 8, shape[2], "cpu")
        padded = torch.nn.functional.pad(ctx, (0, 0, 0, tm.COGVIDEOX_TEXT_LEN - TOKENS))
        v = ref(hidden_states=x_t.movedim(1, 2), encoder_hidden_states=padded, timestep=torch.full((shape[0],), t),
                image_rotary_emb=rope, return_dict=False)[0].movedim(2, 1)
        x0 = ac.sqrt() * x_t - (1 - ac).sqrt() * v
    assert rel_error(ours, x0) < 1e-5


def test_bf16_weights_compute_through_comfy_manual_cast(host, cog):
    """dtype bf16 on a device without bf16 compute: ComfyUI's cast-on-the-fly ops run it in fp32."""
    import comfy.ops

    res = host.run({"m": {"class_type": "ZSVR_LoadCogVideoX", "inputs": {"model_folder": FOLDER, "dtype": "bf16"}},
                    "cap": {"class_type": "ZSVRTest_Capture", "inputs": {"value": ["m", 0], "key": "bf16"}}})
    assert res.success, res.error_message
    half, (full, _) = host.captured["bf16"], _load(host)
    dit = half.model.diffusion_model
    assert dit.dtype == torch.bfloat16 and dit.transformer.proj_out.weight.dtype == torch.bfloat16
    assert half.model.manual_cast_dtype == torch.float32
    assert isinstance(dit.transformer.proj_out, comfy.ops.manual_cast.Linear)
    gen = torch.Generator().manual_seed(5)
    x, ctx = torch.randn(1, 16, 3, 8, 8, generator=gen), torch.randn(1, TOKENS, tm.COGVIDEOX_TEXT_DIM, generator=gen)
    sigma = full.get_model_object("model_sampling").sigmas[500].reshape(1)
    with torch.no_grad():
        a = half.model.apply_model(x, sigma, c_crossattn=ctx)
        b = full.model.apply_model(x, sigma, c_crossattn=ctx)
    assert a.dtype == torch.float32 and 0 < rel_error(a, b) < 0.05


def test_loaded_model_samples_with_core_ksampler(host, cog):
    host.store["cog_lat"] = _latent(shape=(1, 16, 3, 8, 8))
    host.store["cog_lat"]["samples"].zero_()
    g = {"m": _loader(), "pos": _cond(1), "neg": _cond(2),
         "lat": {"class_type": "ZSVRTest_Inject", "inputs": {"key": "cog_lat"}},
         "ks": {"class_type": "KSampler", "inputs": {"model": ["m", 0], "seed": 0, "steps": 2, "cfg": 4.0,
                                                     "sampler_name": "euler", "scheduler": "simple",
                                                     "positive": ["pos", 0], "negative": ["neg", 0],
                                                     "latent_image": ["lat", 0], "denoise": 1.0}},
         "cap": {"class_type": "ZSVRTest_Capture", "inputs": {"value": ["ks", 0], "key": "ks"}}}
    res = host.run(g)
    assert res.success, res.error_message
    out = host.captured["ks"]["samples"]
    assert out.shape == (1, 16, 3, 8, 8) and torch.isfinite(out).all() and out.abs().max() > 0


def test_core_vae_encode_decode(host, cog):
    from diffusers import AutoencoderKLCogVideoX

    frames = torch.rand(9, 64, 64, 3, generator=torch.Generator().manual_seed(2))
    host.store["cog_px"] = frames
    g = {"m": _loader(), "px": {"class_type": "ZSVRTest_Inject", "inputs": {"key": "cog_px"}},
         "enc": {"class_type": "VAEEncode", "inputs": {"pixels": ["px", 0], "vae": ["m", 1]}},
         "dec": {"class_type": "VAEDecode", "inputs": {"samples": ["enc", 0], "vae": ["m", 1]}},
         "c1": {"class_type": "ZSVRTest_Capture", "inputs": {"value": ["enc", 0], "key": "enc"}},
         "c2": {"class_type": "ZSVRTest_Capture", "inputs": {"value": ["dec", 0], "key": "dec"}}}
    res = host.run(g)
    assert res.success, res.error_message
    latent, images = host.captured["enc"]["samples"], host.captured["dec"]
    assert latent.shape == (1, 16, 3, 8, 8) and images.shape == (9, 64, 64, 3)
    ref = AutoencoderKLCogVideoX.from_pretrained(str(cog / FOLDER / "vae")).eval()
    with torch.no_grad():
        want = ref.encode(frames.movedim(-1, 0).unsqueeze(0) * 2 - 1).latent_dist.mode()
    assert rel_error(latent, want) < 1e-5


def test_core_tiled_vae_nodes_code_in_tiles(host, cog):
    """Core VAEEncodeTiled / VAEDecodeTiled (ComfyUI's own tiling, also its out-of-memory fallback) run the
    CogVideoX VAE tile by tile at any frame size; a tile as large as the frame is the plain pass.

    With overlap 0 the tiles are disjoint (no blending), so each tile of the result must be diffusers' VAE
    applied to that crop alone: 72 x 168 px in 64 px tiles is rows 64 + 8 and columns 64 + 64 + 40 (latent
    8 + 1 and 8 + 8 + 5). That checks the loader's compression ratios and tile index formulas, which place
    each tile, against a reference assembled here from diffusers directly."""
    from diffusers import AutoencoderKLCogVideoX

    frames = torch.rand(9, 72, 168, 3, generator=torch.Generator().manual_seed(3))
    host.store["cog_px_tiled"] = frames

    def coded(tile, overlap):
        sizes = {"tile_size": tile, "overlap": overlap, "temporal_size": 64, "temporal_overlap": 8}
        key = f"{tile}_{overlap}"
        g = {"m": _loader(), "px": {"class_type": "ZSVRTest_Inject", "inputs": {"key": "cog_px_tiled"}},
             "enc": {"class_type": "VAEEncodeTiled", "inputs": dict(sizes, pixels=["px", 0], vae=["m", 1])},
             "dec": {"class_type": "VAEDecodeTiled", "inputs": dict(sizes, samples=["enc", 0], vae=["m", 1])},
             "plain": {"class_type": "VAEDecode", "inputs": {"samples": ["enc", 0], "vae": ["m", 1]}},
             "c1": {"class_type": "ZSVRTest_Capture", "inputs": {"value": ["enc", 0], "key": f"tenc{key}"}},
             "c2": {"class_type": "ZSVRTest_Capture", "inputs": {"value": ["dec", 0], "key": f"tdec{key}"}},
             "c3": {"class_type": "ZSVRTest_Capture", "inputs": {"value": ["plain", 0], "key": f"tplain{key}"}}}
        res = host.run(g)
        assert res.success, res.error_message
        return host.captured[f"tenc{key}"]["samples"], host.captured[f"tdec{key}"], host.captured[f"tplain{key}"]

    latent, tiled, _ = coded(64, 0)  # 2 x 3 disjoint tiles
    assert latent.shape == (1, 16, 3, 9, 21) and tiled.shape == (9, 72, 168, 3)
    ref = AutoencoderKLCogVideoX.from_pretrained(str(cog / FOLDER / "vae")).eval()
    video = frames.movedim(-1, 0).unsqueeze(0) * 2 - 1  # [1, 3, F, H, W] in -1..1
    want_latent = torch.zeros_like(latent)
    want_pixels = torch.zeros_like(tiled)
    with torch.no_grad():
        for y0, y1 in ((0, 64), (64, 72)):
            for x0, x1 in ((0, 64), (64, 128), (128, 168)):
                crop = video[..., y0:y1, x0:x1]
                want_latent[..., y0 // 8:y1 // 8, x0 // 8:x1 // 8] = ref.encode(crop).latent_dist.mode()
                part = ref.decode(latent[..., y0 // 8:y1 // 8, x0 // 8:x1 // 8]).sample  # the node's own latent
                want_pixels[:, y0:y1, x0:x1] = ((part[0].movedim(0, -1) + 1) / 2).clamp(0, 1)
    assert rel_error(latent, want_latent) < 1e-5, f"tiled encode vs per-tile diffusers: {rel_error(latent, want_latent):.3g}"
    err = float((tiled - want_pixels).abs().max())
    assert err < 1e-5, f"tiled decode vs per-tile diffusers: max abs error {err:.3g}"
    _, tiled_one, plain_one = coded(512, 32)  # one tile: the plain pass
    assert torch.equal(tiled_one, plain_one)


# -- ZSVD loop -------------------------------------------------------------------------------------
@pytest.mark.parametrize("rule", ["ddpm", "zsvd"])
def test_invert_then_replay_reproduces_the_latent(host, cog, rule):
    host.store["lat"] = _latent()
    for skip in (0, 5):
        res = host.run(_graph(host, rule, skip, capture=f"cog_rec_{rule}_{skip}"))
        assert res.success, res.error_message
        err = rel_error(host.captured[f"cog_rec_{rule}_{skip}"]["samples"], host.store["lat"]["samples"])
        if rule == "ddpm":
            assert err < 1e-4, f"{rule}/skip {skip}: relative error {err:.3g}"
    if rule == "zsvd":  # the official last step: every level above it exact, the end is the prediction there
        res = host.run(_graph(host, rule, 9, capture="cog_rec_zsvd_last"))
        assert res.success, res.error_message
        last = host.captured["cog_rec_zsvd_last"]["samples"]
        for skip in (0, 5):
            assert rel_error(host.captured[f"cog_rec_zsvd_{skip}"]["samples"], last) < 1e-4
        assert rel_error(last, host.store["lat"]["samples"]) > 1e-6


def test_switch_all_blocks_is_reconstruction_and_no_blocks_is_negative_prompting(host, cog):
    host.store["lat"] = _latent(seed=1)
    kw = dict(steps=8, remove_seed=99, strength=6.0)
    runs = {"all": "all", "none": "", "one": "1", "plain": None}
    for key, blocks in runs.items():
        res = host.run(_graph(host, "ddpm", 2, capture=f"cog_sw_{key}", blocks=blocks, **kw))
        assert res.success, res.error_message
    out = {k: host.captured[f"cog_sw_{k}"]["samples"] for k in runs}
    latent = host.store["lat"]["samples"]
    assert rel_error(out["all"], latent) < 1e-4
    assert torch.equal(out["none"], out["plain"])
    assert rel_error(out["plain"], latent) > 1e-3  # the edit does change the latent
    assert rel_error(out["one"], out["plain"]) > 1e-4 and rel_error(out["one"], latent) > 1e-4


def test_switched_model_in_the_inverter_inverts_exactly(host, cog):
    """The inverter marks its passes, so a switched CogVideoX stays unswitched there."""
    host.store["lat"] = _latent(seed=2)
    g = _graph(host, "ddpm", 2, steps=6, remove_seed=99, strength=6.0, capture="cog_sw_inv", blocks="all")
    g["inv"]["inputs"]["model"] = ["sw", 0]
    res = host.run(g)
    assert res.success, res.error_message
    assert rel_error(host.captured["cog_sw_inv"]["samples"], host.store["lat"]["samples"]) < 1e-4


def test_switch_without_the_editor_is_refused(host, cog):
    host.store["lat"] = _latent()
    res = host.run(_graph(host, "ddpm", 2, steps=4, remove_seed=99, strength=3.0, guider="cfg", blocks="all"))
    assert not res.success and "Negative Prompt Editor" in res.error_message


def test_switch_blocks_outside_the_model(host, cog):
    host.store["lat"] = _latent()
    res = host.run(_graph(host, "ddpm", 2, steps=4, remove_seed=99, blocks="0-5"))
    assert not res.success and "'blocks'" in res.error_message and "0-2" in res.error_message


def test_joint_attention_switch_matches_the_papers_rule(host, cog):
    """Block 1's processor, two passes on hand-made states, against a hand-written softmax attention."""
    from diffusers.models.embeddings import apply_rotary_emb, get_3d_rotary_pos_embed

    model, _ = _load(host)
    patched = host.nodes.NODE_CLASS_MAPPINGS["ZSVR_AttentionSwitch"].execute(model, "1", 0.0, 1.0).result[0]
    options = patched.model_options["transformer_options"]
    protocol = _module(host, "switch_protocol")
    cache = protocol.PassCache()
    blocks = patched.model.diffusion_model.transformer.transformer_blocks
    attn = blocks[1].attn1
    gen = torch.Generator().manual_seed(4)
    dim = attn.heads * 16
    video_null, video_rm = torch.randn(2, 12, dim, generator=gen), torch.randn(2, 12, dim, generator=gen)
    text_null, text_rm = torch.randn(2, 5, dim, generator=gen), torch.randn(2, 7, dim, generator=gen)
    rope = get_3d_rotary_pos_embed(embed_dim=16, crops_coords=((0, 0), (2, 2)), grid_size=(2, 2), temporal_size=3)

    with torch.no_grad():
        null_opts = dict(options, **{protocol.PASS_KEY: protocol.Pass.NULL, protocol.CACHE_KEY: cache})
        remove_opts = dict(options, **{protocol.PASS_KEY: protocol.Pass.REMOVE, protocol.CACHE_KEY: cache})
        vid_null, txt_null = attn(hidden_states=video_null, encoder_hidden_states=text_null, image_rotary_emb=rope,
                                  zsvr_options=null_opts)
        vid_rm, txt_rm = attn(hidden_states=video_rm, encoder_hidden_states=text_rm, image_rotary_emb=rope,
                              zsvr_options=remove_opts)
        stock_rm = attn(hidden_states=video_rm, encoder_hidden_states=text_rm, image_rotary_emb=rope)
        stock_null = attn(hidden_states=video_null, encoder_hidden_states=text_null, image_rotary_emb=rope)
        # an unswitched block of the same model and pass is diffusers' processor
        other = blocks[0].attn1(hidden_states=video_rm, encoder_hidden_states=text_rm, image_rotary_emb=rope,
                                zsvr_options=remove_opts)

        def qkv(text, video):
            joint = torch.cat((text, video), dim=1)
            q, k, v = (f(joint).view(2, -1, attn.heads, 16).transpose(1, 2) for f in (attn.to_q, attn.to_k, attn.to_v))
            q, k = attn.norm_q(q), attn.norm_k(k)
            n = text.shape[1]
            q = torch.cat((q[:, :, :n], apply_rotary_emb(q[:, :, n:], rope)), dim=2)
            k = torch.cat((k[:, :, :n], apply_rotary_emb(k[:, :, n:], rope)), dim=2)
            return q, k, v

        def attend(q, k, v):
            return torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1]), dim=-1) @ v

        def project(out):
            return attn.to_out[0](out.transpose(1, 2).reshape(2, -1, dim))

        qn, kn, vn = qkv(text_null, video_null)
        qr, kr, vr = qkv(text_rm, video_rm)
        ref_null = project(attend(qn, kn, vn))
        ref_txt = project(attend(qr[:, :, :7], kr, vr))  # text queries: their own keys/values
        ref_vid = project(attend(qr[:, :, 7:], torch.cat((kn[:, :, :5], kr[:, :, 7:]), dim=2),
                                 torch.cat((vn[:, :, :5], vr[:, :, 7:]), dim=2)))  # video: null text + own video

    assert rel_error(vid_null, ref_null[:, 5:]) < 1e-5 and rel_error(txt_null, ref_null[:, :5]) < 1e-5
    assert rel_error(vid_rm, ref_vid) < 1e-5 and rel_error(txt_rm, ref_txt) < 1e-5
    assert rel_error(vid_null, stock_null[0]) < 1e-6 and rel_error(txt_rm, stock_rm[1]) < 1e-5
    assert rel_error(vid_rm, stock_rm[0]) > 1e-3  # the switch did change the video rows
    # an unswitched block is diffusers' attention, computed with the host's attention backend
    assert rel_error(other[0], blocks[0].attn1(hidden_states=video_rm, encoder_hidden_states=text_rm,
                                               image_rotary_emb=rope)[0]) < 1e-6


def test_every_block_uses_the_hosts_attention_and_a_users_override(host, cog):
    """A user's ``optimized_attention_override`` (a Sage/Flash patch) sees every CogVideoX attention call,
    switched blocks included (text and video queries), and the edit is unchanged when it forwards."""
    calls = []

    def override(func, *args, **kwargs):
        calls.append(args[0].shape[2])  # query length
        return func(*args, **kwargs)

    host.store["lat"] = _latent(seed=5)
    model, _ = _load(host)
    user = model.clone()
    user.model_options.setdefault("transformer_options", {})["optimized_attention_override"] = override
    outputs = []
    for key, source in (("plain", model), ("user", user)):
        host.store[key] = source
        g = _graph(host, "zsvd", 4, steps=6, remove_seed=9, strength=3.0, blocks="0,2", capture=f"cog_ov_{key}")
        g["m"] = {"class_type": "ZSVRTest_Inject", "inputs": {"key": key}}
        calls.clear()
        res = host.run(g)
        assert res.success, res.error_message
        outputs.append(host.captured[f"cog_ov_{key}"]["samples"])
    assert torch.equal(outputs[0], outputs[1])
    # rule zsvd: the inversion calls the model at step 4 only (one row; the official last step needs no
    # residual, issue 13); the edit calls it at steps 4 and 5 (a null pass, then a remove pass); in the remove
    # pass switched blocks 0 and 2 attend twice: the text queries alone, then the video queries alone; every
    # other call is a whole joint attention
    text_len, video_len = tm.COGVIDEOX_TEXT_LEN, 3 * 4 * 4
    assert calls.count(text_len) == 2 * 2 and calls.count(video_len) == 2 * 2
    whole = [n for n in calls if n not in (text_len, video_len)]
    assert set(whole) == {text_len + video_len} and len(whole) == 1 * 3 + 2 * (3 + 1)


# -- bad input -------------------------------------------------------------------------------------
@pytest.mark.parametrize("folder,missing", [(NO_SCHEDULER, "scheduler/scheduler_config.json"),
                                            (NO_WEIGHTS, "transformer/diffusion_pytorch_model.safetensors")])
def test_missing_component_is_named(host, cog, folder, missing):
    res = host.run({"m": _loader(folder), "cap": {"class_type": "ZSVRTest_Capture", "inputs": {"value": ["m", 0], "key": "x"}}})
    assert not res.success and missing in res.error_message and "'model_folder'" in res.error_message


def test_missing_diffusers_says_how_to_install(host, monkeypatch):
    loader = _module(host, "load_cogvideox")
    monkeypatch.setitem(sys.modules, "diffusers", None)
    with pytest.raises(ValueError, match="pip install diffusers"):
        loader._import_diffusers()


# -- issue 13: the whole zsvd edit against a hand-written reference of the official ZSVD loop ---------------
def _official_zsvd_reference(transformer, scheduler_config, x0, null_text, remove_text, *, steps, skip, strength,
                             blocks, seed):
    """The official ZSVD reverse process, written from its description (our own code), in CogVideoX's VP space.

    CogVideoXDDIMScheduler tables; timesteps ``t_i`` (trailing); ``prev_t = t - 1000 // steps`` with the final
    alpha 1 (``set_alpha_to_one``); v-prediction. Inversion: ``x_i = sqrt(abar_i) x0 + sqrt(1 - abar_i) eps_i``
    with the injected ``eps_i`` (the pack's per-level noise), ``z_i = (x_{i+1} - mu_i) / std_i`` where
    ``mu_i`` is the DDIM mean and ``std_i`` the DDPM posterior spread; the last step has ``std = 0`` and ``z = 0``.
    Edit from ``skip``: ``v = v_remove + s (v_null - v_remove)`` with the switched blocks' doubled attention,
    ``x <- mu(x, v) + std z``; the output is ``x`` after the last step.
    """
    from test_bench_zsvd_end_to_end import official

    scheduler = official.make_scheduler(scheduler_config)
    scheduler.set_timesteps(steps, device="cpu")
    timesteps = [int(t) for t in scheduler.timesteps]
    abar = scheduler.alphas_cumprod.to(torch.float64)
    levels = []
    for t in timesteps:
        prev = t - scheduler.config.num_train_timesteps // steps
        levels.append((float(abar[t]), float(abar[prev]) if prev >= 0 else float(scheduler.final_alpha_cumprod)))
    official.install(transformer, blocks)

    def v_pred(x, text, t, edit):
        ts = torch.full((x.shape[0],), t, dtype=torch.long)
        out = transformer(hidden_states=x.movedim(1, 2), encoder_hidden_states=text, timestep=ts,
                          attention_kwargs={official.EDIT_KWARG: edit}, return_dict=False)[0]
        return out.movedim(2, 1)

    def step(x, v, i):
        a_t, a_prev = levels[i]
        x0_hat = a_t ** 0.5 * x - (1 - a_t) ** 0.5 * v
        eps_hat = (1 - a_t) ** 0.5 * x + a_t ** 0.5 * v
        std = max((1 - a_prev) / (1 - a_t) * (1 - a_t / a_prev), 0.0) ** 0.5
        return a_prev ** 0.5 * x0_hat + (1 - a_prev) ** 0.5 * eps_hat, std

    from zsvr.kernels.inversion import level_noise

    xs = [levels[i][0] ** 0.5 * x0 + (1 - levels[i][0]) ** 0.5 * level_noise(seed, i, x0.shape)
          for i in range(steps)] + [x0]
    zs = {}
    for i in range(skip, steps):
        mean, std = step(xs[i], v_pred(xs[i], null_text, timesteps[i], False), i)
        zs[i] = (xs[i + 1] - mean) / std if std > 0 else torch.zeros_like(mean)
    x = xs[skip]
    texts = torch.cat((null_text, remove_text))
    for i in range(skip, steps):
        v_null, v_remove = v_pred(torch.cat((x, x)), texts, timesteps[i], True).chunk(2)
        mean, std = step(x, v_remove + strength * (v_null - v_remove), i)
        x = mean + std * zs[i]
    return x


@torch.no_grad()
def test_zsvd_edit_equals_the_official_loop_including_its_last_step(host, cog):
    """Issue 13: rule zsvd, skip 4 of 10, strength 15, switched blocks 0 and 2, injected noise: the pack's whole
    edit (inversion, replay, editor, switch, last step) equals the reference's final latent to 1e-5 (fp32)."""
    import json

    from diffusers import CogVideoXTransformer3DModel

    steps, skip, strength, seed = 10, 4, 15.0, 11
    host.store["lat"] = _latent(seed=5)
    g = _graph(host, "zsvd", skip, steps=steps, remove_seed=99, strength=strength, blocks="0,2", capture="cog_off")
    g["inv"]["inputs"]["inversion_seed"] = seed
    g["cn"] = {"class_type": "ZSVRTest_Capture", "inputs": {"value": ["null", 0], "key": "cog_off_null"}}
    g["cr"] = {"class_type": "ZSVRTest_Capture", "inputs": {"value": ["rm", 0], "key": "cog_off_rm"}}
    g["cm"] = {"class_type": "ZSVRTest_Capture", "inputs": {"value": ["m", 0], "key": "cog_off_model"}}
    res = host.run(g)
    assert res.success, res.error_message
    pack_out = host.captured["cog_off"]["samples"]

    base = host.captured["cog_off_model"].model
    folder = cog / FOLDER
    transformer = CogVideoXTransformer3DModel.from_pretrained(str(folder / "transformer")).float().eval()
    scheduler_config = json.loads((folder / "scheduler" / "scheduler_config.json").read_text())
    length = transformer.config.max_text_seq_length
    null_text, remove_text = (torch.nn.functional.pad(host.captured[k][0][0], (0, 0, 0, length - TOKENS))
                              for k in ("cog_off_null", "cog_off_rm"))
    x0 = base.process_latent_in(host.store["lat"]["samples"]).float()
    ref = _official_zsvd_reference(transformer, scheduler_config, x0, null_text, remove_text, steps=steps, skip=skip,
                                   strength=strength, blocks=[0, 2], seed=seed)
    ref_out = base.process_latent_out(ref)
    err = rel_error(pack_out, ref_out)
    print(f"zsvd edit vs the official loop (10 steps, skip 4, strength 15, blocks 0,2): relative error {err:.3g}")
    assert err < 1e-5
    # the old ending (the stored residual added back) would be far from it: the last step matters here
    assert rel_error(pack_out, host.store["lat"]["samples"]) > 1e-3
