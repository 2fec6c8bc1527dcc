"""``ZSVR_LoadCogVideoX``: a diffusers-format CogVideoX folder as a ComfyUI MODEL and VAE.

ComfyUI 0.3.64 has no CogVideoX of its own, and ZSVD's reference model is
CogVideoX-2b, so this node loads diffusers' implementation and wraps it in
ComfyUI's model objects. This module finds and checks the folder and assembles
the pieces; each piece is its own module:

* :mod:`.adapters.cogvideox_model`: the MODEL (``BaseModel`` around diffusers'
  transformer; ComfyUI's dtype choice, manual casting and low-VRAM loading; text fitting);
* :mod:`.adapters.cogvideox_format`: the latent format and the model sampling
  (v-prediction over :mod:`kernels.cogvideox_schedule`'s sigmas);
* :mod:`.adapters.cogvideox_vae`: the VAE for the core VAE Encode / Decode nodes;
* :mod:`.adapters.cogvideox`: the attention processors every block gets (the host's
  attention backend, ZSVD's attention switch).

The weight dtype (``dtype``; ``auto`` asks ComfyUI, which keeps the checkpoint's
fp16/bf16 on a GPU that supports it and uses fp32 on CPU) applies to the
transformer; the VAE gets ComfyUI's VAE dtype.
"""

from __future__ import annotations

import json
import math
import os

import torch

import comfy.model_base
import comfy.model_management as mm
import comfy.model_patcher
import comfy.ops
import folder_paths
from comfy_api.latest import io

from .errors import InputError
from .adapters.cogvideox import CogVideoXAdapter
from .adapters.cogvideox_format import (SUPPORTED_DTYPES, CogVideoXConfig, CogVideoXLatent, CogVideoXSamplingV,
                                        build_model_sampling, sampling_settings)
from .adapters.cogvideox_model import CogVideoXDiT, CogVideoXModel, use_comfy_ops
from .adapters.cogvideox_vae import CogVideoXVAE
from .types import CATEGORY

FOLDER_KINDS = ("diffusers", "diffusion_models")
"""ComfyUI model folder types searched for CogVideoX folders (``models/diffusers`` first)."""

DTYPES = {"auto": None, "bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
WEIGHT_FILES = ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.safetensors.index.json",
                "diffusion_pytorch_model.bin", "diffusion_pytorch_model.bin.index.json")
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


def _low_cpu_mem_usage() -> bool:
    """diffusers' ``low_cpu_mem_usage``: on only where ``accelerate`` is installed. Passing it keeps diffusers from
    suggesting ``pip install accelerate`` at every load (without it diffusers loads the same way, a little slower)."""
    try:
        from diffusers.utils import is_accelerate_available
    except ImportError:
        return False
    return bool(is_accelerate_available())


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

    transformer = transformer_cls.from_pretrained(os.path.join(folder, "transformer"), torch_dtype=unet_dtype,
                                               low_cpu_mem_usage=_low_cpu_mem_usage())
    transformer.eval().requires_grad_(False)
    use_comfy_ops(transformer, comfy.ops.manual_cast if manual_cast_dtype is not None else comfy.ops.disable_weight_init)
    CogVideoXAdapter.install_processors(transformer)

    model_config = CogVideoXConfig({"disable_unet_model_creation": True})
    model_config.set_inference_dtype(unet_dtype, manual_cast_dtype)
    model_config.latent_format = CogVideoXLatent(float(vae_config.get("scaling_factor", 1.15258426)),
                                                 vae_config.get("shift_factor"))
    model_config.sampling_settings = sampling_settings(scheduler_config)
    sampling = build_model_sampling(model_config, scheduler_config)
    model_type = comfy.model_base.ModelType.V_PREDICTION if isinstance(sampling, CogVideoXSamplingV) \
        else comfy.model_base.ModelType.EPS
    model = CogVideoXModel(model_config, CogVideoXDiT(transformer, unet_dtype), sampling, model_type)
    model = model.to(offload_device)
    patcher = comfy.model_patcher.ModelPatcher(model, load_device=load_device, offload_device=offload_device)

    vae_device = mm.vae_device()
    vae_dtype = mm.vae_dtype(vae_device, SUPPORTED_DTYPES)
    autoencoder = autoencoder_cls.from_pretrained(os.path.join(folder, "vae"), torch_dtype=vae_dtype,
                                               low_cpu_mem_usage=_low_cpu_mem_usage())
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
