"""The test bed's own nodes (registered by the bench and the test into a booted ComfyUI, never by the pack).

* ``ZSVRTestbed_Prompt``: the fixed ``null`` or ``rain`` token embeddings as CONDITIONING
  (in place of a UMT5 text encoder, which cannot be made tiny);
* ``ZSVRTestbed_Clip``: a held-out clip (rainy or clean) as the LATENT a VAE Encode would
  give (:func:`testbed.latent.encode` with the host's ``Wan21`` latent format);
* ``ZSVRTestbed_Keep``: an output node that keeps any value in a dict under a key.

And :func:`zsvd_prompt`, the API-format ZSVD graph on the test-bed model: the pack's
``ZSVR_DDPMInvert`` (null on both sides), ``ZSVR_InversionSampler``, optionally
``ZSVR_AttentionSwitch``, ``ZSVR_NegativePromptEditor`` (null vs "rain") and core
``BasicScheduler`` / ``SamplerCustomAdvanced`` / ``UNETLoader``.
"""

from __future__ import annotations

import functools
import json
import pathlib

import torch

from . import heldout, latent
from .train import META, MODEL_DIR

CLIP_NODE = "ZSVRTestbed_Clip"
PROMPT_NODE = "ZSVRTestbed_Prompt"
KEEP_NODE = "ZSVRTestbed_Keep"


_model_dir = [MODEL_DIR]


def set_model_dir(path: pathlib.Path) -> None:
    """Use the test-bed model in ``path`` (default: the committed ``bench/testbed/model``)."""
    _model_dir[0] = pathlib.Path(path)


def model_dir() -> pathlib.Path:
    """The folder of the test-bed model in use (weights, prompts, ``testbed.json``)."""
    return _model_dir[0]


def testbed_meta() -> dict:
    """``testbed.json`` of the trained model (weights file, prompts file, the latent's normalisation)."""
    return _meta(str(model_dir()))


@functools.lru_cache(maxsize=None)
def _meta(folder: str) -> dict:
    return json.loads((pathlib.Path(folder) / META).read_text())


def prompts() -> dict[str, torch.Tensor]:
    """The two prompt embeddings the model was trained with."""
    return _prompts(str(model_dir()))


@functools.lru_cache(maxsize=None)
def _prompts(folder: str) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(pathlib.Path(folder) / _meta(folder)["prompts"]))


@functools.lru_cache(maxsize=None)
def heldout_clips() -> dict:
    """The committed held-out clips (:func:`testbed.heldout.load`)."""
    return heldout.load()


def latent_format():
    """The host's latent format of the detected model (WAN21_T2V: ``comfy.latent_formats.Wan21``)."""
    import comfy.latent_formats

    return comfy.latent_formats.Wan21()


def encode_clip(pixels: torch.Tensor) -> dict:
    """Pixels ``[T, 3, 32, 32]`` to the graph's LATENT."""
    meta = testbed_meta()
    return latent.encode(pixels, meta["pixel_mean"], meta["pixel_std"], latent_format())


def decode_latent(value: dict) -> torch.Tensor:
    """A graph's LATENT to pixels ``[T, 3, 32, 32]`` (not clamped)."""
    meta = testbed_meta()
    return latent.decode(value, meta["pixel_mean"], meta["pixel_std"], latent_format())[0]


def source_nodes(prompts, encode, clips) -> tuple[type, type]:
    """A test bed's Prompt (its fixed prompt embeddings as CONDITIONING) and Clip (a held-out clip, rainy or
    clean, as a LATENT) node classes: ``prompts()`` gives the embeddings by name, ``clips()`` the held-out
    clips, ``encode`` turns a clip's pixels into the LATENT."""

    class Prompt:
        """A fixed prompt embedding of the test-bed model as CONDITIONING."""

        CATEGORY = "ZSVR/testbed"
        RETURN_TYPES = ("CONDITIONING",)
        FUNCTION = "make"

        @classmethod
        def INPUT_TYPES(cls):
            return {"required": {"prompt": (["null", "rain"],)}}

        def make(self, prompt):
            return ([[prompts()[prompt][None].clone(), {}]],)

    class Clip:
        """A held-out clip (rainy or clean) as a LATENT."""

        CATEGORY = "ZSVR/testbed"
        RETURN_TYPES = ("LATENT",)
        FUNCTION = "make"

        @classmethod
        def INPUT_TYPES(cls):
            return {"required": {"index": ("INT", {"default": 0, "min": 0, "max": 1023}),
                                 "version": (["rainy", "clean"],)}}

        def make(self, index, version):
            return (encode(clips()[version][index]),)

    return Prompt, Clip


def register(nodes_module, sink: dict) -> None:
    """Add the test bed's nodes to ``nodes_module.NODE_CLASS_MAPPINGS``; ``ZSVRTestbed_Keep`` writes into ``sink``."""
    Prompt, Clip = source_nodes(prompts, encode_clip, heldout_clips)

    class Keep:
        """Keeps its input in the bench's dict under ``key``."""

        CATEGORY = "ZSVR/testbed"
        RETURN_TYPES = ()
        FUNCTION = "put"
        OUTPUT_NODE = True

        @classmethod
        def INPUT_TYPES(cls):
            return {"required": {"value": ("LATENT",), "key": ("STRING", {"default": "out"})}}

        def put(self, value, key):
            sink[key] = value
            return {}

    nodes_module.NODE_CLASS_MAPPINGS.update({PROMPT_NODE: Prompt, CLIP_NODE: Clip, KEEP_NODE: Keep})


def zsvd_prompt(index: int, *, strength: float, skip: int, steps: int = 100, blocks: str | None = None,
                rule: str = "ddpm", last_step: str = "exact", first_step: int = 0, seed: int = 0,
                key: str = "out", version: str = "rainy", shift: float | None = None) -> dict:
    """The ZSVD graph on held-out clip ``index``: invert (null / null), replay from ``skip`` with the editor
    (null vs "rain", ``strength``); ``blocks`` adds ``ZSVR_AttentionSwitch`` (None: no switch node); ``shift``
    adds core ``ModelSamplingSD3`` (None: the detected model's own sampling, WAN21's shift 8)."""
    weights = testbed_meta()["weights"]
    loader = {"class_type": "UNETLoader", "inputs": {"unet_name": weights, "weight_dtype": "default"}}
    g = {
        "m": loader if shift is None else {"class_type": "ModelSamplingSD3", "inputs": {"model": ["m0", 0],
                                                                                         "shift": shift}},
        "null": {"class_type": PROMPT_NODE, "inputs": {"prompt": "null"}},
        "rain": {"class_type": PROMPT_NODE, "inputs": {"prompt": "rain"}},
        "clip": {"class_type": CLIP_NODE, "inputs": {"index": index, "version": version}},
        "sig": {"class_type": "BasicScheduler", "inputs": {"model": ["m", 0], "scheduler": "simple", "steps": steps,
                                                           "denoise": 1.0}},
        "inv": {"class_type": "ZSVR_DDPMInvert", "inputs": {
            "model": ["m", 0], "positive": ["null", 0], "negative": ["null", 0], "cfg": 1.0, "latent": ["clip", 0],
            "sigmas": ["sig", 0], "inversion_seed": seed, "step_rule": rule, "first_step": first_step}},
        "rep": {"class_type": "ZSVR_InversionSampler", "inputs": {"inversion": ["inv", 0], "skip": skip,
                                                                   "start_noise": 0.0, "last_step": last_step}},
    }
    if shift is not None:
        g["m0"] = loader
    model = ["m", 0]
    if blocks is not None:
        g["sw"] = {"class_type": "ZSVR_AttentionSwitch", "inputs": {"model": model, "blocks": blocks,
                                                                    "start_percent": 0.0, "end_percent": 1.0}}
        model = ["sw", 0]
    g["gd"] = {"class_type": "ZSVR_NegativePromptEditor", "inputs": {"model": model, "null": ["null", 0],
                                                                     "remove": ["rain", 0], "strength": strength}}
    g["smp"] = {"class_type": "SamplerCustomAdvanced", "inputs": {
        "noise": ["rep", 0], "guider": ["gd", 0], "sampler": ["rep", 1], "sigmas": ["rep", 2],
        "latent_image": ["clip", 0]}}
    g["keep"] = {"class_type": KEEP_NODE, "inputs": {"value": ["smp", 0], "key": key}}
    return g
