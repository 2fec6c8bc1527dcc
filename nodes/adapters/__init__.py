"""The model-family registry: which family a MODEL is, and what the pack can do with it (docs/layout.md).

Every family adapter declares ``family`` (a display name), ``capabilities``
(:class:`~.capabilities.Capabilities`), ``pooled_text_encoder`` and
``matches(diffusion_model)``; the families that support ZSVD attention switching
also ``switch_help``, ``num_blocks`` and ``install_switch``, the frames-as-batch
U-Net its layer lookup and attn1 hooks. :mod:`.interface` declares these as
protocols (:class:`~.interface.FamilyAdapter`, :class:`~.interface.TextKeySwitchFamily`,
:class:`~.interface.SelfAttentionPatchFamily`), so a new family shows what it must provide.
A node asks :func:`require` for the capability it needs and never checks model
classes or tensor ranks itself; an unsupported model gets one error naming the
families that do support it.
"""

from __future__ import annotations

import types

from ..errors import InputError
from .capabilities import Capabilities
from .cogvideox import CogVideoXAdapter
from .hunyuan_video import HunyuanVideoAdapter
from .interface import FamilyAdapter, SelfAttentionPatchFamily, TextKeySwitchFamily
from .sd_unet import SDUNetAdapter
from .wan import WanAdapter

FAMILIES = (SDUNetAdapter, WanAdapter, HunyuanVideoAdapter, CogVideoXAdapter)
"""Every family the pack knows, in the order they are tried."""

__all__ = ["FAMILIES", "Capabilities", "FamilyAdapter", "TextKeySwitchFamily", "SelfAttentionPatchFamily",
           "family_of", "require", "frame_axis", "adapter_for", "require_context_windows"]


def _diffusion_model(model_patcher):
    return getattr(getattr(model_patcher, "model", None), "diffusion_model", None)


def family_of(model_patcher):
    """The adapter (an instance) of the model's family, or None for a model no adapter knows."""
    diffusion_model = _diffusion_model(model_patcher)
    for adapter in FAMILIES:
        if adapter.matches(diffusion_model):
            return adapter()
    return None


def model_name(model_patcher) -> str:
    """``BaseModel (diffusion model)`` class names, for messages."""
    base = getattr(model_patcher, "model", None)
    return f"{type(base).__name__} ({type(_diffusion_model(model_patcher)).__name__})"


def latent_is_video(model_patcher) -> bool:
    """True for a video latent: the family says so, or (unknown family) the host's latent format has 3 dimensions."""
    family = family_of(model_patcher)
    if family is not None:
        return family.capabilities.latent_is_video
    latent_format = getattr(getattr(model_patcher, "model", None), "latent_format", None)
    return getattr(latent_format, "latent_dimensions", 2) == 3


def frame_axis(model_patcher) -> str:
    """Where the video's frames are in the model's latent: ``"batch"`` or ``"time"`` (axis 2).

    A family the registry knows answers for itself; any other model is judged by the host's own latent format
    (3 latent dimensions: a video model, frames on the time axis)."""
    family = family_of(model_patcher)
    if family is not None:
        return family.capabilities.frame_axis
    return "time" if latent_is_video(model_patcher) else "batch"


def require(model_patcher, capability: str, purpose: str, input_name: str = "model"):
    """The model's family adapter if it has ``capability``; else an InputError naming the families that do.

    Args:
        model_patcher: the MODEL input.
        capability: a :class:`Capabilities` field that must be true (``"text_key_switch"``, ``"self_attention_patch"``...).
        purpose: what the node does, for the message (e.g. "ZSVR attention switching").
        input_name: the node input the model came from.
    """
    if capability not in Capabilities.__dataclass_fields__:
        raise ValueError(f"capability must be a Capabilities field, got {capability!r}")
    family = family_of(model_patcher)
    if family is not None and getattr(family.capabilities, capability):
        return family
    supported = [a for a in FAMILIES if getattr(a.capabilities, capability)]
    names = ", ".join(a.family for a in supported)
    name = model_name(model_patcher)
    if capability == "self_attention_patch" and latent_is_video(model_patcher):
        raise InputError(
            input_name,
            f"is a video model, {name}, which already attends across frames, so {purpose} is not needed "
            "(it is for image U-Nets that denoise a video as a batch of frames)",
            f"connect the video model straight to the sampler, or use {purpose} with {names}",
        )
    raise InputError(input_name, f"is a {name}, which {purpose} does not support", f"use one of: {names}")


def adapter_for(model_patcher, input_name: str = "model"):
    """The family adapter ZSVD attention switching uses."""
    return require(model_patcher, "text_key_switch", "ZSVR attention switching", input_name)


def frame_axis_of_base_model(base_model) -> str:
    """:func:`frame_axis` for a BaseModel instead of a MODEL: what a SAMPLER sees of the model it samples
    (``model_wrap.inner_model`` in ``Sampler.sample``), for nodes without a MODEL input (ZSVR Noise Sharing)."""
    return frame_axis(types.SimpleNamespace(model=base_model))


def require_context_windows(model_patcher, model_options, purpose: str, input_name: str = "model") -> None:
    """Refuse a model wrapped by core context windows (``model_options["context_handler"]``) whose family's ZSVR
    patches cannot run window by window (:attr:`Capabilities.context_windows`); nothing without windows.

    Args:
        model_patcher: the MODEL.
        model_options: the options the run samples with (the MODEL's own, or a guider's).
        purpose: what needs the windows to work, for the message (e.g. "ZSVR attention switching").
        input_name: the node input the model came from.
    """
    if (model_options or {}).get("context_handler") is None:
        return
    family = family_of(model_patcher)
    if family is not None and family.capabilities.context_windows:
        return
    supported = ", ".join(a.family for a in FAMILIES if a.capabilities.context_windows)
    raise InputError(
        input_name,
        f"is a {model_name(model_patcher)} wrapped by core context windows, and {purpose} cannot run on it window "
        "by window",
        f"remove the Context Windows node and restore the clip in chunks (see the README's Long clips), or use one "
        f"of: {supported}",
    )
