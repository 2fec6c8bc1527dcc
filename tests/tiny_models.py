"""Tiny random-weight models that ComfyUI's own loaders detect.

No pretrained weights exist on a test machine, and none belong in the repo, so
the test session builds these at start-up and saves them as safetensors into a
temporary ComfyUI model folder:

| file | folder | loader | detected as |
| --- | --- | --- | --- |
| ``tiny_wan21_t2v.safetensors`` | diffusion_models | ``UNETLoader`` | ``WAN21_T2V`` (flow, shift 8) |
| ``tiny_wan21_t2v_low_noise.safetensors`` | diffusion_models | ``UNETLoader`` | ``WAN21_T2V``, other weights: the second expert of a Wan 2.2 A14B-style pair |
| ``tiny_sd15_unet.safetensors`` | diffusion_models | ``UNETLoader`` | ``SD15`` (EPS) |
| ``tiny_hunyuan_video.safetensors`` | diffusion_models | ``UNETLoader`` | ``HunyuanVideo`` (flow) |
| ``tiny_taesd.safetensors`` | vae | ``VAELoader`` | TAESD (4 latent channels, 8x) |
| ``rand_wan21_vae.safetensors`` | vae | ``VAELoader`` | Wan 2.1 VAE (full size: the loader accepts no smaller; bf16, 254 MB) |
| ``tiny_wan22_ti2v_5b.safetensors`` | diffusion_models | ``UNETLoader`` | ``WAN22_T2V`` (Wan 2.2 TI2V 5B's class: 48-channel latent) |
| ``rand_wan22_vae.safetensors`` | vae | ``VAELoader`` | Wan 2.2 VAE (48 channels, 16x; full size: the loader hard-codes dim 160; bf16, 1.4 GB) |
| ``tiny_sd15_all.safetensors`` | checkpoints | ``CheckpointLoaderSimple`` | SD15 (the tiny U-Net) + TAESD VAE + random full-size CLIP-L (fp16, 345 MB) |
| ``tiny_controlnet_sd15.safetensors`` | controlnet | ``ControlNetLoader`` | ``cldm.ControlNet`` of the tiny SD15 U-Net (21 M params, fp16) |

The two Wan 2.2 5B files are large (the VAE) and only the Wan 2.2 tests need them, so they are written on
first use (:func:`write_wan22`), not by :func:`write_all`.

Each architecture is built by ComfyUI's own model classes (so the layouts are
exactly what the loaders expect), initialised here with a seeded generator
(ComfyUI's ops skip weight initialisation), and saved. Sizes are at the
detection floor: Wan's head dim is fixed at 128 by detection, so the tiny Wan
has dim 128 (one head) and 2 blocks; SD15 detection fixes 320 channels and a
768-wide context, so the tiny U-Net has 2 levels of 320 channels with 1 res
block and one transformer each (44 M parameters, stored as fp16).

The module is importable only inside a ComfyUI process (the host fixture
imports it after ComfyUI is on ``sys.path``).
"""

from __future__ import annotations

import math
import pathlib

import torch
from safetensors.torch import save_file

WAN_FILE = "tiny_wan21_t2v.safetensors"
WAN_LOW_NOISE_FILE = "tiny_wan21_t2v_low_noise.safetensors"
WAN_LOW_NOISE_SEED = 1
"""The low-noise expert of the tiny pair: the tiny Wan's architecture with other random weights (Wan 2.2 A14B's
two experts are both the Wan 2.1 architecture to ComfyUI)."""
SD15_FILE = "tiny_sd15_unet.safetensors"
TAESD_FILE = "tiny_taesd.safetensors"

WAN_TEXT_DIM = 4096
SD15_TEXT_DIM = 768

WAN_UNET_CONFIG = {
    "image_model": "wan2.1",
    "model_type": "t2v",
    "dim": 128,
    "out_dim": 16,
    "num_heads": 1,
    "ffn_dim": 256,
    "num_layers": 2,
    "patch_size": (1, 2, 2),
    "freq_dim": 256,
    "window_size": (-1, -1),
    "qk_norm": True,
    "cross_attn_norm": True,
    "eps": 1e-6,
    "in_dim": 16,
}

SD15_UNET_CONFIG = {
    "use_checkpoint": False,
    "image_size": 32,
    "use_spatial_transformer": True,
    "legacy": False,
    "adm_in_channels": None,
    "in_channels": 4,
    "out_channels": 4,
    "model_channels": 320,
    "num_res_blocks": [1, 1],
    "transformer_depth": [1, 1],
    "transformer_depth_output": [1, 1, 1, 1],
    "channel_mult": [1, 1],
    "transformer_depth_middle": 1,
    "use_linear_in_transformer": False,
    "context_dim": SD15_TEXT_DIM,
    "use_temporal_resblock": False,
    "use_temporal_attention": False,
}


def randomize_(module: torch.nn.Module, seed: int, gain: float = 1.0) -> torch.nn.Module:
    """Give every parameter a seeded random value of a sane scale.

    Matrices and kernels get N(0, gain^2 / fan_in) (variance-preserving);
    normalisation scales get 1; other vectors (biases, modulations) get N(0, 0.02^2).
    """
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            if p.dim() >= 2:
                fan_in = p[0].numel()
                p.copy_(torch.randn(p.shape, generator=gen) * (gain / math.sqrt(fan_in)))
            elif ("norm" in name and name.endswith("weight")) or name.endswith("gamma"):
                p.fill_(1.0)
            else:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.02)
    return module


def _build(config_name: str, unet_config: dict, seed: int):
    """Build a ``model_base`` model from a ``comfy.supported_models`` config, random weights, fp32."""
    import comfy.supported_models

    config = getattr(comfy.supported_models, config_name)(dict(unet_config))
    config.set_inference_dtype(torch.float32, None)
    model = config.get_model({})
    randomize_(model.diffusion_model, seed)
    return model


def build_wan21(seed: int = 0):
    """A ``model_base.WAN21`` (flow) with the tiny config."""
    return _build("WAN21_T2V", WAN_UNET_CONFIG, seed)


def build_sd15(seed: int = 0):
    """A ``model_base.BaseModel`` (SD15, EPS) with the tiny U-Net."""
    return _build("SD15", SD15_UNET_CONFIG, seed)


HUNYUAN_FILE = "tiny_hunyuan_video.safetensors"
HUNYUAN_TEXT_DIM = 64

HUNYUAN_UNET_CONFIG = {
    "image_model": "hunyuan_video",
    "in_channels": 16,
    "out_channels": 16,
    "patch_size": [1, 2, 2],
    "vec_in_dim": 768,  # detection tells HunyuanVideo from HunyuanImage 2.1 by the CLIP vector input
    "axes_dim": [16, 56, 56],
    "meanflow": False,
    "context_in_dim": HUNYUAN_TEXT_DIM,
    "hidden_size": 128,
    "mlp_ratio": 4.0,
    "num_heads": 1,
    "depth": 2,
    "depth_single_blocks": 2,
    "theta": 256,
    "qkv_bias": True,
    "byt5": False,
    "guidance_embed": False,
}


def build_hunyuan_video(seed: int = 0):
    """A ``model_base.HunyuanVideo`` (flow): 2 double + 2 single blocks, head dim 128 (fixed by detection)."""
    return _build("HunyuanVideo", HUNYUAN_UNET_CONFIG, seed)


WAN_VAE_FILE = "rand_wan21_vae.safetensors"


def build_wan21_vae(seed: int = 0):
    """The full-size Wan 2.1 VAE architecture (VAELoader hard-codes dim 96), random weights."""
    import comfy.ldm.wan.vae

    vae = comfy.ldm.wan.vae.WanVAE(dim=96, z_dim=16, dim_mult=[1, 2, 4, 4], num_res_blocks=2, attn_scales=[],
                                   temperal_downsample=[False, True, True], dropout=0.0)
    return randomize_(vae, seed, gain=0.5)


def build_taesd(seed: int = 0):
    import comfy.taesd.taesd

    vae = comfy.taesd.taesd.TAESD(latent_channels=4)
    randomize_(vae, seed, gain=0.5)
    with torch.no_grad():
        vae.vae_scale.fill_(1.0)
        vae.vae_shift.fill_(0.0)
    return vae


def _save(module: torch.nn.Module, path: pathlib.Path, dtype: torch.dtype | None = None) -> None:
    state = {}
    for k, v in module.state_dict().items():
        v = v.detach()
        if dtype is not None and v.is_floating_point():
            v = v.to(dtype)
        state[k] = v.contiguous().clone()
    save_file(state, str(path))


WAN22_FILE = "tiny_wan22_ti2v_5b.safetensors"
WAN22_VAE_FILE = "rand_wan22_vae.safetensors"
WAN22_UNET_CONFIG = dict(WAN_UNET_CONFIG, in_dim=48, out_dim=48)
"""Wan 2.2 TI2V 5B's layout at the tiny size: a Wan 2.1 block stack on the 48-channel latent of the Wan 2.2 VAE
(ComfyUI detects ``out_dim`` 48 as ``WAN22_T2V``)."""


def build_wan22(seed: int = 2):
    """A ``model_base.WAN22`` (flow, shift 8, ``Wan22`` latent format) with the tiny config."""
    return _build("WAN22_T2V", WAN22_UNET_CONFIG, seed)


def build_wan22_vae(seed: int = 0):
    """The full-size Wan 2.2 VAE architecture (VAELoader hard-codes dim 160: 705 M parameters), random weights."""
    import comfy.ldm.wan.vae2_2

    vae = comfy.ldm.wan.vae2_2.WanVAE(dim=160, z_dim=48, dim_mult=[1, 2, 4, 4], num_res_blocks=2, attn_scales=[],
                                      temperal_downsample=[False, True, True], dropout=0.0)
    return randomize_(vae, seed, gain=0.5)


def write_wan22(models_dir: pathlib.Path) -> dict[str, pathlib.Path]:
    """Write the tiny Wan 2.2 5B model and the random Wan 2.2 VAE into ``models_dir/<folder>/`` (on first use)."""
    out = {"wan22": models_dir / "diffusion_models" / WAN22_FILE, "wan22_vae": models_dir / "vae" / WAN22_VAE_FILE}
    for path in out.values():
        path.parent.mkdir(parents=True, exist_ok=True)
    _save(build_wan22().diffusion_model, out["wan22"])
    vae = build_wan22_vae()
    _save(vae, out["wan22_vae"], torch.bfloat16)
    del vae
    return out


def write_all(models_dir: pathlib.Path) -> dict[str, pathlib.Path]:
    """Write every tiny model into ``models_dir/<folder>/`` and return their paths."""
    out = {}
    diffusion = models_dir / "diffusion_models"
    vae_dir = models_dir / "vae"
    diffusion.mkdir(parents=True, exist_ok=True)
    vae_dir.mkdir(parents=True, exist_ok=True)
    out["wan"] = diffusion / WAN_FILE
    _save(build_wan21().diffusion_model, out["wan"])
    out["wan_low"] = diffusion / WAN_LOW_NOISE_FILE
    _save(build_wan21(WAN_LOW_NOISE_SEED).diffusion_model, out["wan_low"])
    out["sd15"] = diffusion / SD15_FILE
    # fp16 on disk halves the file (88 MB); loaders upcast to the fp32 compute dtype.
    _save(build_sd15().diffusion_model, out["sd15"], torch.float16)
    out["hunyuan"] = diffusion / HUNYUAN_FILE
    _save(build_hunyuan_video().diffusion_model, out["hunyuan"])
    out["wan_vae"] = vae_dir / WAN_VAE_FILE
    _save(build_wan21_vae(), out["wan_vae"], torch.bfloat16)
    out["taesd"] = vae_dir / TAESD_FILE
    _save(build_taesd(), out["taesd"])
    out.update(write_sd15_checkpoint_and_controlnet(models_dir))
    return out


COGVIDEOX_TEXT_DIM = 32
COGVIDEOX_TEXT_LEN = 8

COGVIDEOX_TRANSFORMER_CONFIG = {
    "num_attention_heads": 2,
    "attention_head_dim": 16,
    "in_channels": 16,
    "out_channels": 16,
    "time_embed_dim": 32,
    "text_embed_dim": COGVIDEOX_TEXT_DIM,
    "num_layers": 3,
    "sample_width": 8,
    "sample_height": 8,
    "sample_frames": 9,  # (3 latent frames - 1) * 4 + 1
    "patch_size": 2,
    "max_text_seq_length": COGVIDEOX_TEXT_LEN,
}

# CogVideoX-2b's scheduler/scheduler_config.json (diffusers CogVideoXDDIMScheduler)
COGVIDEOX_SCHEDULER_CONFIG = {
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "clip_sample": False,
    "num_train_timesteps": 1000,
    "prediction_type": "v_prediction",
    "rescale_betas_zero_snr": True,
    "set_alpha_to_one": True,
    "snr_shift_scale": 3.0,
    "steps_offset": 0,
    "timestep_spacing": "trailing",
}


def build_tiny_cogvideox_transformer(seed: int = 0, rope: bool = False):
    """A 3-block diffusers CogVideoXTransformer3DModel (2b layout; ``rope`` gives the 5b layout), fp32."""
    from diffusers import CogVideoXTransformer3DModel

    config = dict(COGVIDEOX_TRANSFORMER_CONFIG, use_rotary_positional_embeddings=rope)
    return randomize_(CogVideoXTransformer3DModel(**config), seed).eval()


def build_tiny_cogvideox_vae(seed: int = 0, scaling_factor: float = 0.7):
    """A 4-level diffusers AutoencoderKLCogVideoX (8x spatial, 4x temporal, 16 channels) with 8 channels a level."""
    from diffusers import AutoencoderKLCogVideoX

    vae = AutoencoderKLCogVideoX(block_out_channels=(8, 8, 8, 8), layers_per_block=1, norm_num_groups=4,
                                 latent_channels=16, sample_height=64, sample_width=64, scaling_factor=scaling_factor)
    return randomize_(vae, seed, gain=0.5).eval()


def write_tiny_cogvideox(folder: pathlib.Path, seed: int = 0, rope: bool = False,
                         components=("transformer", "vae", "scheduler")) -> pathlib.Path:
    """Save a tiny CogVideoX laid out like a diffusers repo: transformer/, vae/, scheduler/scheduler_config.json."""
    import json

    folder = pathlib.Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    if "transformer" in components:
        build_tiny_cogvideox_transformer(seed, rope).save_pretrained(str(folder / "transformer"))
    if "vae" in components:
        build_tiny_cogvideox_vae(seed + 1).save_pretrained(str(folder / "vae"))
    if "scheduler" in components:
        (folder / "scheduler").mkdir(exist_ok=True)
        config = dict(COGVIDEOX_SCHEDULER_CONFIG, _class_name="CogVideoXDDIMScheduler")
        (folder / "scheduler" / "scheduler_config.json").write_text(json.dumps(config, indent=2))
    return folder


SD15_CKPT_FILE = "tiny_sd15_all.safetensors"
CONTROLNET_SD15_FILE = "tiny_controlnet_sd15.safetensors"


def build_clip_l(seed: int = 0):
    """SD1.5's text encoder at its real size, random weights.

    The checkpoint loader builds CLIP-L from the fixed ``sd1_clip_config.json``
    (124 M parameters), so no smaller one loads. Measured on the 2-core test
    machine: build + fp16 save 1.5 s, ``CheckpointLoaderSimple`` 0.3 s,
    one ``CLIPTextEncode`` 0.1 s, which is cheap enough to run the shipped
    workflows' text encoders for real.
    """
    import comfy.sd1_clip

    return randomize_(comfy.sd1_clip.SDClipModel(device="cpu", dtype=torch.float32), seed)


def build_sd15_controlnet(seed: int = 0, zero_conv_gain: float = 0.1):
    """A ``comfy.cldm.cldm.ControlNet`` of the tiny SD15 U-Net (image hint, 3 channels), random weights.

    ``load_controlnet_state_dict`` re-detects this config from the
    ``control_model.``-prefixed keys (the ``.pth`` layout of the ControlNet 1.1
    releases). The zero convolutions, zero in a fresh ControlNet, get small
    random weights (``zero_conv_gain``) so the control visibly but mildly acts.
    """
    import comfy.cldm.cldm
    import comfy.ops
    import comfy.supported_models

    config = dict(comfy.supported_models.SD15(dict(SD15_UNET_CONFIG)).unet_config)
    config.pop("out_channels")
    net = comfy.cldm.cldm.ControlNet(hint_channels=3, dtype=torch.float32, device="cpu",
                                     operations=comfy.ops.disable_weight_init, **config)
    randomize_(net, seed)
    with torch.no_grad():
        for name, p in net.named_parameters():
            if name.startswith(("zero_convs.", "middle_block_out.")):
                p.mul_(zero_conv_gain)
    return net


def write_sd15_checkpoint_and_controlnet(models_dir: pathlib.Path) -> dict[str, pathlib.Path]:
    """``checkpoints/tiny_sd15_all`` and ``controlnet/tiny_controlnet_sd15`` (fp16 on disk).

    The checkpoint holds ``model.diffusion_model.*`` (the same U-Net as
    ``tiny_sd15_unet``), ``first_stage_model.*`` (the same TAESD as
    ``tiny_taesd``) and ``cond_stage_model.*`` (:func:`build_clip_l`), the
    layout ``CheckpointLoaderSimple`` detects as SD15 with a TAESD VAE.
    """
    ckpt_dir = models_dir / "checkpoints"
    cn_dir = models_dir / "controlnet"
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    cn_dir.mkdir(parents=True, exist_ok=True)
    out = {"sd15_ckpt": ckpt_dir / SD15_CKPT_FILE, "controlnet_sd15": cn_dir / CONTROLNET_SD15_FILE}
    state = {}
    parts = (("model.diffusion_model.", lambda: build_sd15().diffusion_model, torch.float16),
             ("first_stage_model.", build_taesd, None),
             ("cond_stage_model.", build_clip_l, torch.float16))
    for prefix, build, dtype in parts:  # one fp32 module alive at a time
        module = build()
        for k, v in module.state_dict().items():
            v = v.detach()
            if dtype is not None and v.is_floating_point():
                v = v.to(dtype)
            state[prefix + k] = v.contiguous().clone()
        del module
    save_file(state, str(out["sd15_ckpt"]))
    del state
    net = build_sd15_controlnet()
    save_file({"control_model." + k: v.detach().to(torch.float16).contiguous().clone()
               for k, v in net.state_dict().items()}, str(out["controlnet_sd15"]))
    return out
