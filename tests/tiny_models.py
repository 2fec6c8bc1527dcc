"""Tiny random-weight models that ComfyUI's own loaders detect.

No pretrained weights exist on a test machine, and none belong in the repo, so
the test session builds these at start-up and saves them as safetensors into a
temporary ComfyUI model folder:

| file | folder | loader | detected as |
| --- | --- | --- | --- |
| ``tiny_wan21_t2v.safetensors`` | diffusion_models | ``UNETLoader`` | ``WAN21_T2V`` (flow, shift 8) |
| ``tiny_sd15_unet.safetensors`` | diffusion_models | ``UNETLoader`` | ``SD15`` (EPS) |
| ``tiny_hunyuan_video.safetensors`` | diffusion_models | ``UNETLoader`` | ``HunyuanVideo`` (flow) |
| ``tiny_taesd.safetensors`` | vae | ``VAELoader`` | TAESD (4 latent channels, 8x) |
| ``rand_wan21_vae.safetensors`` | vae | ``VAELoader`` | Wan 2.1 VAE (full size: the loader accepts no smaller; bf16, 254 MB) |

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


def write_all(models_dir: pathlib.Path) -> dict[str, pathlib.Path]:
    """Write every tiny model into ``models_dir/<folder>/`` and return their paths."""
    out = {}
    diffusion = models_dir / "diffusion_models"
    vae_dir = models_dir / "vae"
    diffusion.mkdir(parents=True, exist_ok=True)
    vae_dir.mkdir(parents=True, exist_ok=True)
    out["wan"] = diffusion / WAN_FILE
    _save(build_wan21().diffusion_model, out["wan"])
    out["sd15"] = diffusion / SD15_FILE
    # fp16 on disk halves the file (88 MB); loaders upcast to the fp32 compute dtype.
    _save(build_sd15().diffusion_model, out["sd15"], torch.float16)
    out["hunyuan"] = diffusion / HUNYUAN_FILE
    _save(build_hunyuan_video().diffusion_model, out["hunyuan"])
    out["wan_vae"] = vae_dir / WAN_VAE_FILE
    _save(build_wan21_vae(), out["wan_vae"], torch.bfloat16)
    out["taesd"] = vae_dir / TAESD_FILE
    _save(build_taesd(), out["taesd"])
    return out
