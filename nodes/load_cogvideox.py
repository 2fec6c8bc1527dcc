"""``ZSVR_LoadCogVideoX``: a diffusers-format CogVideoX folder as a ComfyUI MODEL and VAE.

ComfyUI 0.3.64 has no CogVideoX of its own, and ZSVD's reference model is
CogVideoX-2b, so this node wraps diffusers' implementation in ComfyUI's model
objects instead of re-implementing it:

MODEL
    A ``comfy.model_patcher.ModelPatcher`` around :class:`CogVideoXModel`
    (a ``comfy.model_base.BaseModel``) whose ``diffusion_model`` is
    :class:`CogVideoXDiT`, a thin module around diffusers'
    ``CogVideoXTransformer3DModel``. It takes ComfyUI's ``(x [B, C, T, H, W],
    timestep, context, transformer_options)`` and calls diffusers with
    ``hidden_states`` [B, T, C, H, W], ``encoder_hidden_states=context`` and the
    timestep, plus the rotary embeddings the diffusers pipeline would compute
    (5b / 1.5 only). ComfyUI's model management applies as for its own models:
    load and offload devices, the weight dtype (``dtype``; ``auto`` asks
    ComfyUI, which keeps the checkpoint's fp16/bf16 on a GPU that supports it
    and uses fp32 on CPU), manual casting where the device cannot compute in
    the weight dtype, and partial (low-VRAM) loading: the transformer's
    Linear / Conv / LayerNorm modules are switched to ComfyUI's cast-on-the-fly
    op classes, which compute exactly like torch's when fully loaded.

Sampling (checked against diffusers' ``CogVideoXDDIMScheduler`` source):
    CogVideoX predicts v. Its scheduler builds betas from
    ``beta_start``/``beta_end``/``beta_schedule``/``num_train_timesteps``, then
    shifts the SNR, ``abar <- abar / (s + (1 - s) abar)`` with
    ``s = snr_shift_scale`` (3.0 for 2b, 1.0 for 5b), then, with
    ``rescale_betas_zero_snr``, rescales to zero terminal SNR. In ComfyUI's
    sigma = sqrt((1 - abar) / abar) the shift is exactly ``sigma <- sqrt(s) sigma``,
    so the model sampling is ``ModelSamplingDiscrete`` + ``V_PREDICTION`` with
    those sigmas, followed by ComfyUI's own zero-SNR rescale
    (``rescale_zero_terminal_snr_sigmas``, the same algorithm; it keeps the last
    abar at 4.9e-8 instead of 0, i.e. sigma_max ~ 4.5e3 instead of infinity).
    ComfyUI maps sigma to the nearest of the 1000 training sigmas and passes
    that index as the timestep, which is diffusers' integer timestep; the
    ``simple`` scheduler picks indices 999, 999 - 1000/n, ..., which is
    diffusers' ``timestep_spacing="trailing"`` used by CogVideoX.

Latents
    16 channels, [B, 16, (F - 1) / 4 + 1, H / 8, W / 8] (``EmptyHunyuanLatentVideo``
    makes this shape), scaled by the VAE config's ``scaling_factor`` (2b 1.15258426,
    5b 0.7) on the way into the model, as ComfyUI does for every model.

VAE
    ComfyUI's ``comfy.sd.VAE`` recognises architectures from a state dict and
    knows no CogVideoX VAE. :class:`CogVideoXVAE` is a subclass that sets the
    attributes ``VAE``'s methods read (compression 4x8x8, causal first frame,
    16 channels, -1..1 pixels) around diffusers' ``AutoencoderKLCogVideoX``,
    so the core ``VAEEncode`` / ``VAEDecode`` (and their tiled variants and
    out-of-memory fallback) work unchanged; no extra pack nodes are needed.
    Encoding returns the posterior mean (deterministic, as inversion wants).

Text
    CogVideoX was trained on T5 v1.1 XXL embeddings of exactly 226 tokens
    [1, 226, 4096]: the prompt, ``</s>``, then pad tokens, with *no* attention
    mask in the encoder. ComfyUI's loaders give: ``sd3`` (T5 only) 77 tokens,
    unmasked; ``mochi`` 256 masked; ``ltxv`` 128 masked. The exact match is
    ``CLIPLoader`` (t5xxl_fp16 / t5xxl_fp8 file, type ``sd3``) -> core
    ``T5TokenizerOptions`` (min_padding 0, min_length 226) -> ``CLIPTextEncode``.
    Anything else still runs: the model fits the text to 226 tokens (zero
    padding, or truncation with a warning), which CogVideoX-2b's positional
    embedding requires, at some cost in fidelity.
"""

from __future__ import annotations

import json
import logging
import math
import os

import torch

import comfy.conds
import comfy.latent_formats
import comfy.ldm.common_dit
import comfy.ldm.modules.attention
import comfy.model_base
import comfy.model_management as mm
import comfy.model_patcher
import comfy.model_sampling
import comfy.ops
import comfy.patcher_extension
import comfy.sd
import comfy.supported_models_base
import folder_paths
from comfy_api.latest import io

from ..kernels.errors import InputError
from .adapters.cogvideox import FAMILY_MARK, OPTIONS_KWARG, SwitchProcessor
from .types import CATEGORY

log = logging.getLogger("zsvr")

FOLDER_KINDS = ("diffusers", "diffusion_models")
"""ComfyUI model folder types searched for CogVideoX folders (``models/diffusers`` first)."""

DTYPES = {"auto": None, "bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
SUPPORTED_DTYPES = [torch.bfloat16, torch.float16, torch.float32]
WEIGHT_FILES = ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.safetensors.index.json",
                "diffusion_pytorch_model.bin", "diffusion_pytorch_model.bin.index.json")
# diffusers' beta_schedule names -> ComfyUI's make_beta_schedule names (ComfyUI's "linear" is diffusers' scaled_linear)
BETA_SCHEDULES = {"scaled_linear": "linear", "linear": "sqrt_linear", "squaredcos_cap_v2": "squaredcos_cap_v2"}
MAX_DEPTH = 3


# -- finding folders ------------------------------------------------------------------
def _roots() -> list[str]:
    roots = []
    for kind in FOLDER_KINDS:
        try:
            paths = folder_paths.get_folder_paths(kind)
        except KeyError:
            continue
        for p in paths:
            if os.path.isdir(p) and p not in roots:
                roots.append(p)
    return roots


def list_model_folders() -> list[str]:
    """Sub-folders (relative, '/'-separated) of the model roots that hold transformer/config.json."""
    found: list[str] = []
    for root in _roots():
        for dirpath, dirnames, _ in os.walk(root, followlinks=True):
            rel = os.path.relpath(dirpath, root)
            depth = 0 if rel == "." else rel.count(os.sep) + 1
            if depth > 0 and os.path.isfile(os.path.join(dirpath, "transformer", "config.json")):
                name = rel.replace(os.sep, "/")
                if name not in found:
                    found.append(name)
                dirnames[:] = []
                continue
            dirnames[:] = [] if depth >= MAX_DEPTH else sorted(d for d in dirnames if not d.startswith("."))
    return sorted(found)


def resolve_folder(name: str) -> str:
    for root in _roots():
        path = os.path.normpath(os.path.join(root, name))
        if os.path.commonpath([path, os.path.normpath(root)]) == os.path.normpath(root) and os.path.isdir(path):
            return path
    raise InputError("model_folder", f"'{name}' is not a folder in ComfyUI's {' or '.join(FOLDER_KINDS)} model folders",
                     "put the diffusers-format CogVideoX folder (transformer/, vae/, scheduler/) in models/diffusers "
                     "and refresh the node list")


def check_components(folder: str) -> None:
    """Raise an InputError naming every missing component of a diffusers CogVideoX folder."""
    missing = []
    for component, names in (("transformer", ("config.json",)), ("transformer", WEIGHT_FILES),
                             ("vae", ("config.json",)), ("vae", WEIGHT_FILES),
                             ("scheduler", ("scheduler_config.json",))):
        if not any(os.path.isfile(os.path.join(folder, component, n)) for n in names):
            missing.append(f"{component}/{names[0]}")
    if missing:
        raise InputError("model_folder", f"'{folder}' lacks {', '.join(missing)}",
                         "use a complete diffusers-format CogVideoX folder (as downloaded from THUDM/CogVideoX-2b "
                         "or -5b; text_encoder/ and tokenizer/ are not needed)")


def _read_json(folder: str, rel: str) -> dict:
    try:
        with open(os.path.join(folder, rel), encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError) as exc:
        raise InputError("model_folder", f"cannot read {rel} ({exc})", "re-download that file") from exc


def _weights_info(component_dir: str) -> tuple[int, torch.dtype | None]:
    """(parameter count, dtype of the first tensor) from safetensors headers; (0, None) if unknown."""
    files = []
    index = os.path.join(component_dir, "diffusion_pytorch_model.safetensors.index.json")
    single = os.path.join(component_dir, "diffusion_pytorch_model.safetensors")
    if os.path.isfile(single):
        files = [single]
    elif os.path.isfile(index):
        with open(index, encoding="utf-8") as f:
            files = sorted({os.path.join(component_dir, v) for v in json.load(f).get("weight_map", {}).values()})
    if not files:
        return 0, None
    from safetensors import safe_open

    params, dtype = 0, None
    for path in files:
        with safe_open(path, framework="pt") as f:
            for key in f.keys():
                sl = f.get_slice(key)
                params += math.prod(sl.get_shape())
                if dtype is None:
                    dtype = {"F16": torch.float16, "BF16": torch.bfloat16, "F32": torch.float32}.get(sl.get_dtype())
    return params, dtype


# -- model sampling and latent format ---------------------------------------------------
class CogVideoXSamplingV(comfy.model_sampling.ModelSamplingDiscrete, comfy.model_sampling.V_PREDICTION):
    """v-prediction over CogVideoX's SNR-shifted (zero-terminal-SNR) discrete schedule."""


class CogVideoXSamplingEps(comfy.model_sampling.ModelSamplingDiscrete, comfy.model_sampling.EPS):
    """The same schedule for an epsilon-predicting checkpoint."""


def schedule_sigmas(scheduler_config: dict) -> torch.Tensor:
    """ComfyUI sigmas (ascending, float64) of a diffusers CogVideoX scheduler config (see module doc)."""
    from comfy.ldm.modules.diffusionmodules.util import make_beta_schedule

    if scheduler_config.get("trained_betas") is not None:
        raise InputError("model_folder", "has a scheduler with trained_betas, which is not supported",
                         "use the scheduler_config.json of the original CogVideoX repository")
    kind = scheduler_config.get("beta_schedule", "scaled_linear")
    if kind not in BETA_SCHEDULES:
        raise InputError("model_folder", f"has beta_schedule '{kind}' in scheduler/scheduler_config.json",
                         f"use one of {', '.join(BETA_SCHEDULES)}")
    steps = int(scheduler_config.get("num_train_timesteps", 1000))
    betas = make_beta_schedule(BETA_SCHEDULES[kind], steps, linear_start=float(scheduler_config.get("beta_start", 0.00085)),
                               linear_end=float(scheduler_config.get("beta_end", 0.012)))
    betas = torch.as_tensor(betas, dtype=torch.float64)
    alphas_cumprod = torch.cumprod(1.0 - betas, dim=0)
    # diffusers' CogVideoX schedulers default snr_shift_scale to 3.0; other scheduler classes have no shift
    default_shift = 3.0 if str(scheduler_config.get("_class_name", "CogVideoX")).startswith("CogVideoX") else 1.0
    shift = float(scheduler_config.get("snr_shift_scale", default_shift))
    sigmas = ((1.0 - alphas_cumprod) / alphas_cumprod).sqrt() * math.sqrt(shift)
    if scheduler_config.get("rescale_betas_zero_snr", False):
        sigmas = comfy.model_sampling.rescale_zero_terminal_snr_sigmas(sigmas)
    return sigmas


def build_model_sampling(model_config, scheduler_config: dict):
    prediction = scheduler_config.get("prediction_type", "epsilon")
    if prediction not in ("v_prediction", "epsilon"):
        raise InputError("model_folder", f"has prediction_type '{prediction}' in scheduler/scheduler_config.json",
                         "use a v_prediction (CogVideoX) or epsilon scheduler config")
    cls = CogVideoXSamplingV if prediction == "v_prediction" else CogVideoXSamplingEps
    sampling = cls(model_config)
    sampling.set_sigmas(schedule_sigmas(scheduler_config))
    return sampling


class CogVideoXLatent(comfy.latent_formats.LatentFormat):
    latent_channels = 16
    latent_dimensions = 3

    def __init__(self, scale_factor: float = 1.15258426, shift_factor: float | None = None):
        self.scale_factor = scale_factor
        self.shift_factor = shift_factor or 0.0

    def process_in(self, latent):
        return (latent - self.shift_factor) * self.scale_factor

    def process_out(self, latent):
        return latent / self.scale_factor + self.shift_factor


class CogVideoXConfig(comfy.supported_models_base.BASE):
    """The ``model_config`` ComfyUI's BaseModel needs; the network itself comes from diffusers."""

    unet_config = {}
    unet_extra_config = {}
    supported_inference_dtypes = SUPPORTED_DTYPES
    memory_usage_factor = 2.0


# -- the diffusion model ----------------------------------------------------------------
def fit_text(context: torch.Tensor, length: int) -> torch.Tensor:
    """Zero-pad or truncate text embeddings [B, L, D] to ``length`` tokens (CogVideoX trains on 226)."""
    have = context.shape[1]
    if have == length:
        return context
    if have > length:
        log.warning("ZSVR CogVideoX: the text conditioning has %d tokens; using the first %d (CogVideoX's "
                    "max_text_seq_length)", have, length)
        return context[:, :length]
    return torch.nn.functional.pad(context, (0, 0, 0, length - have))


def _crop_region(grid: tuple[int, int], base_w: int, base_h: int):
    """The centred region of the base grid that a (h, w) token grid is resized into (CogVideoX 1.0 RoPE)."""
    h, w = grid
    if h / w > base_h / base_w:
        new_h, new_w = base_h, int(round(base_h / h * w))
    else:
        new_w, new_h = base_w, int(round(base_w / w * h))
    top, left = int(round((base_h - new_h) / 2.0)), int(round((base_w - new_w) / 2.0))
    return (top, left), (top + new_h, left + new_w)


def host_attention(q, k, v, transformer_options):
    """ComfyUI's optimized attention on [B, heads, L, head_dim]: the backend the host was started with
    (SDPA, ``--use-sage-attention``, ``--use-flash-attention``, ...) and any ``optimized_attention_override``
    in the call's ``transformer_options``."""
    return comfy.ldm.modules.attention.optimized_attention(q, k, v, q.shape[1], skip_reshape=True, skip_output_reshape=True,
                                                           transformer_options=transformer_options)


class CogVideoXDiT(torch.nn.Module):
    """ComfyUI-facing diffusion model around diffusers' ``CogVideoXTransformer3DModel``."""

    zsvr_family = FAMILY_MARK

    def __init__(self, transformer, dtype: torch.dtype):
        super().__init__()
        self.transformer = transformer
        self.dtype = dtype
        self._rope_cache: dict = {}
        for index, block in enumerate(transformer.transformer_blocks):
            block.attn1.set_processor(SwitchProcessor(index, block.attn1.processor, attention=host_attention))

    def forward(self, x, timestep, context=None, control=None, transformer_options={}, **kwargs):
        return comfy.patcher_extension.WrapperExecutor.new_class_executor(
            self._forward, self,
            comfy.patcher_extension.get_all_wrappers(comfy.patcher_extension.WrappersMP.DIFFUSION_MODEL,
                                                     transformer_options),
        ).execute(x, timestep, context, control, transformer_options, **kwargs)

    def _forward(self, x, timestep, context, control, transformer_options, **kwargs):
        cfg = self.transformer.config
        if context is None:
            raise RuntimeError("ZSVR CogVideoX: the model was called without text conditioning")
        batch, _, frames, height, width = x.shape
        p, p_t = cfg.patch_size, cfg.patch_size_t
        if p_t is not None and frames % p_t:
            raise InputError("latent", f"has {frames} latent frames; this CogVideoX 1.5 model needs a multiple of {p_t}",
                             "use a frame count of 8k+5 (e.g. 85 frames -> 22 latent frames)")
        x = comfy.ldm.common_dit.pad_to_patch_size(x, (1, p, p))
        self._buffers_to(x.device)
        rotary = self._rotary(x.shape[2], x.shape[3], x.shape[4], x.device) \
            if cfg.use_rotary_positional_embeddings else None
        timestep = timestep.reshape(-1)
        if timestep.shape[0] != batch:
            timestep = timestep.expand(batch)
        out = self.transformer(
            hidden_states=x.movedim(1, 2), encoder_hidden_states=fit_text(context, cfg.max_text_seq_length),
            timestep=timestep, image_rotary_emb=rotary, attention_kwargs={OPTIONS_KWARG: transformer_options},
            return_dict=False,
        )[0]
        return out.movedim(2, 1)[:, :, :frames, :height, :width]

    def _buffers_to(self, device) -> None:
        # buffers of non-leaf modules (the sincos position table) are not moved by ComfyUI's partial loading
        for module in self.transformer.modules():
            for name, buf in list(module._buffers.items()):
                if buf is not None and buf.device != device:
                    module._buffers[name] = buf.to(device)

    def _rotary(self, frames: int, height: int, width: int, device):
        key = (frames, height, width, str(device))
        if key not in self._rope_cache:
            from diffusers.models.embeddings import get_3d_rotary_pos_embed

            cfg = self.transformer.config
            p = cfg.patch_size
            grid = (height // p, width // p)
            base_w, base_h = cfg.sample_width // p, cfg.sample_height // p
            if cfg.patch_size_t is None:  # CogVideoX 1.0 (5b)
                rope = get_3d_rotary_pos_embed(embed_dim=cfg.attention_head_dim, crops_coords=_crop_region(grid, base_w, base_h),
                                               grid_size=grid, temporal_size=frames, device=device)
            else:  # CogVideoX 1.5
                rope = get_3d_rotary_pos_embed(embed_dim=cfg.attention_head_dim, crops_coords=None, grid_size=grid,
                                               temporal_size=(frames + cfg.patch_size_t - 1) // cfg.patch_size_t,
                                               grid_type="slice", max_size=(base_h, base_w), device=device)
            self._rope_cache.clear()
            self._rope_cache[key] = rope
        return self._rope_cache[key]


class CogVideoXModel(comfy.model_base.BaseModel):
    """ComfyUI BaseModel whose diffusion model is :class:`CogVideoXDiT`."""

    def __init__(self, model_config, diffusion_model: CogVideoXDiT, model_sampling, model_type, device=None):
        super().__init__(model_config, model_type, device=device)
        self.diffusion_model = diffusion_model
        self.model_sampling = model_sampling
        self.text_length = int(diffusion_model.transformer.config.max_text_seq_length)

    def extra_conds(self, **kwargs):
        out = super().extra_conds(**kwargs)
        cross_attn = kwargs.get("cross_attn", None)
        if cross_attn is not None:
            # one token count for every prompt, so ComfyUI batches them without repeating tokens
            out["c_crossattn"] = comfy.conds.CONDCrossAttn(fit_text(cross_attn, self.text_length))
        return out


def _use_comfy_ops(module: torch.nn.Module, ops) -> None:
    """Switch torch layers to ComfyUI's op classes (same math; adds cast-on-the-fly for low VRAM)."""
    swap = {torch.nn.Linear: ops.Linear, torch.nn.Conv2d: ops.Conv2d, torch.nn.Conv3d: ops.Conv3d,
            torch.nn.LayerNorm: ops.LayerNorm, torch.nn.GroupNorm: ops.GroupNorm}
    for m in module.modules():
        new = swap.get(type(m))
        if new is not None:
            m.__class__ = new


# -- the VAE ------------------------------------------------------------------------------
class _AutoencoderAdapter(torch.nn.Module):
    """What ``comfy.sd.VAE`` calls: encode(pixels -1..1 [B,3,F,H,W]) -> mean latent; decode(latent) -> pixels."""

    def __init__(self, autoencoder):
        super().__init__()
        self.autoencoder = autoencoder

    def encode(self, x):
        return self.autoencoder.encode(x).latent_dist.mode()

    def decode(self, z, **kwargs):
        return self.autoencoder.decode(z).sample


class CogVideoXVAE(comfy.sd.VAE):
    """A ComfyUI VAE around diffusers' ``AutoencoderKLCogVideoX`` (see the module doc)."""

    def __init__(self, autoencoder, device=None, dtype=None):
        # VAE.__init__ only detects architectures from a state dict; set what its methods read instead
        self.memory_used_encode = lambda shape, dtype: 8000 * shape[3] * shape[4] * mm.dtype_size(dtype)
        self.memory_used_decode = lambda shape, dtype: 12000 * shape[3] * shape[4] * 64 * mm.dtype_size(dtype)
        self.upscale_ratio = (lambda a: max(0, a * 4 - 3), 8, 8)
        self.upscale_index_formula = (4, 8, 8)
        self.downscale_ratio = (lambda a: max(0, math.floor((a + 3) / 4)), 8, 8)
        self.downscale_index_formula = (4, 8, 8)
        self.latent_channels = int(autoencoder.config.latent_channels)
        self.latent_dim = 3
        self.output_channels = 3
        self.process_input = lambda image: image * 2.0 - 1.0
        self.process_output = lambda image: torch.clamp((image + 1.0) / 2.0, min=0.0, max=1.0)
        self.working_dtypes = list(SUPPORTED_DTYPES)
        self.disable_offload = True  # diffusers' layers cannot be partially loaded
        self.not_video = False
        self.extra_1d_channel = None
        self.crop_input = True
        self.first_stage_model = _AutoencoderAdapter(autoencoder).eval()
        self.device = device if device is not None else mm.vae_device()
        self.vae_dtype = dtype if dtype is not None else mm.vae_dtype(self.device, self.working_dtypes)
        self.first_stage_model.to(self.vae_dtype)
        self.output_device = mm.intermediate_device()
        self.patcher = comfy.model_patcher.ModelPatcher(self.first_stage_model, load_device=self.device,
                                                        offload_device=mm.vae_offload_device())


# -- the node -------------------------------------------------------------------------------
def _import_diffusers():
    try:
        import diffusers  # noqa: F401
        from diffusers import AutoencoderKLCogVideoX, CogVideoXTransformer3DModel
    except ImportError as exc:
        raise InputError("model_folder", f"needs the diffusers package, which could not be imported ({exc})",
                         "pip install diffusers (0.30 or newer) into ComfyUI's Python environment, then restart "
                         "ComfyUI") from exc
    return CogVideoXTransformer3DModel, AutoencoderKLCogVideoX


def load_cogvideox(folder: str, dtype_name: str = "auto"):
    """(ModelPatcher, CogVideoXVAE) from a diffusers-format CogVideoX folder."""
    check_components(folder)
    transformer_config = _read_json(folder, "transformer/config.json")
    vae_config = _read_json(folder, "vae/config.json")
    scheduler_config = _read_json(folder, "scheduler/scheduler_config.json")
    name = transformer_config.get("_class_name", "CogVideoXTransformer3DModel")
    if name != "CogVideoXTransformer3DModel":
        raise InputError("model_folder", f"has a {name} in transformer/config.json, not a CogVideoXTransformer3DModel",
                         "choose a CogVideoX folder")
    in_ch, out_ch = transformer_config.get("in_channels", 16), transformer_config.get("out_channels", 16)
    if in_ch != out_ch:
        raise InputError("model_folder", f"is an image-to-video CogVideoX ({in_ch} input channels), which "
                         "ZSVR does not support", "use a text-to-video CogVideoX (2b, 5b or 1.5-5b)")
    transformer_cls, autoencoder_cls = _import_diffusers()

    load_device = mm.get_torch_device()
    offload_device = mm.unet_offload_device()
    params, weight_dtype = _weights_info(os.path.join(folder, "transformer"))
    unet_dtype = DTYPES[dtype_name]
    if unet_dtype is None:
        unet_dtype = mm.unet_dtype(model_params=params, supported_dtypes=SUPPORTED_DTYPES, weight_dtype=weight_dtype)
    manual_cast_dtype = mm.unet_manual_cast(unet_dtype, load_device, SUPPORTED_DTYPES)

    transformer = transformer_cls.from_pretrained(os.path.join(folder, "transformer"), torch_dtype=unet_dtype)
    transformer.eval().requires_grad_(False)
    _use_comfy_ops(transformer, comfy.ops.manual_cast if manual_cast_dtype is not None else comfy.ops.disable_weight_init)

    model_config = CogVideoXConfig({"disable_unet_model_creation": True})
    model_config.set_inference_dtype(unet_dtype, manual_cast_dtype)
    model_config.latent_format = CogVideoXLatent(float(vae_config.get("scaling_factor", 1.15258426)),
                                                 vae_config.get("shift_factor"))
    model_config.sampling_settings = {"beta_schedule": BETA_SCHEDULES.get(scheduler_config.get("beta_schedule"), "linear"),
                                      "linear_start": float(scheduler_config.get("beta_start", 0.00085)),
                                      "linear_end": float(scheduler_config.get("beta_end", 0.012)),
                                      "timesteps": int(scheduler_config.get("num_train_timesteps", 1000))}
    sampling = build_model_sampling(model_config, scheduler_config)
    model_type = comfy.model_base.ModelType.V_PREDICTION if isinstance(sampling, CogVideoXSamplingV) \
        else comfy.model_base.ModelType.EPS
    model = CogVideoXModel(model_config, CogVideoXDiT(transformer, unet_dtype), sampling, model_type)
    model = model.to(offload_device)
    patcher = comfy.model_patcher.ModelPatcher(model, load_device=load_device, offload_device=offload_device)

    vae_device = mm.vae_device()
    vae_dtype = mm.vae_dtype(vae_device, SUPPORTED_DTYPES)
    autoencoder = autoencoder_cls.from_pretrained(os.path.join(folder, "vae"), torch_dtype=vae_dtype)
    autoencoder.eval().requires_grad_(False)
    vae = CogVideoXVAE(autoencoder, device=vae_device, dtype=vae_dtype)
    return patcher, vae


class LoadCogVideoX(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        # Input order is a public contract: append new inputs at the end, never reorder or rename.
        return io.Schema(
            node_id="ZSVR_LoadCogVideoX",
            display_name="Load CogVideoX (ZSVR)",
            category=f"{CATEGORY}/loaders",
            description=(
                "Loads a diffusers-format CogVideoX folder (transformer/, vae/, scheduler/; e.g. THUDM/CogVideoX-2b) "
                "from models/diffusers or models/diffusion_models as a MODEL (v-prediction, CogVideoX's zero-SNR "
                "schedule; use the 'simple' scheduler for CogVideoX's trailing timesteps) and a VAE for the core VAE "
                "Encode/Decode nodes. Text: CLIPLoader (T5-XXL, type sd3) -> T5TokenizerOptions (min_length 226) -> "
                "CLIP Text Encode gives the 226-token embeddings CogVideoX expects. Needs the diffusers package."
            ),
            inputs=[
                io.Combo.Input("model_folder", options=list_model_folders(),
                               tooltip="A diffusers-format CogVideoX folder (one holding transformer/config.json) in "
                                       "models/diffusers or models/diffusion_models."),
                io.Combo.Input("dtype", options=list(DTYPES), default="auto",
                               tooltip="Weight dtype of the transformer. auto: ComfyUI's choice for this device "
                                       "(keeps the checkpoint's fp16/bf16 where supported; CogVideoX-2b was trained "
                                       "in fp16, 5b in bf16)."),
            ],
            outputs=[io.Model.Output(display_name="model"), io.Vae.Output(display_name="vae")],
        )

    @classmethod
    def execute(cls, model_folder, dtype) -> io.NodeOutput:
        if dtype not in DTYPES:
            raise InputError("dtype", f"is '{dtype}'", f"use one of {', '.join(DTYPES)}")
        patcher, vae = load_cogvideox(resolve_folder(model_folder), dtype)
        return io.NodeOutput(patcher, vae)
