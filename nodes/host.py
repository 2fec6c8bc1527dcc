"""Small adapters between ComfyUI objects and the pure kernels (no node classes here)."""

from __future__ import annotations

import torch

import comfy.model_management
import comfy.utils

from ..kernels import inversion as inv_kernel
from ..kernels.errors import a_or_an
from .errors import InputError
from .adapters import family_of


def model_family(model_patcher) -> dict:
    """What an inversion records about its model, to refuse a mismatched use later."""
    base = model_patcher.model
    sampling = model_patcher.get_model_object("model_sampling")
    return {
        "model_class": type(base).__name__,
        "diffusion_model": type(getattr(base, "diffusion_model", None)).__name__,
        "model_sampling": _sampling_kind(sampling),
    }


def _sampling_kind(sampling) -> str:
    """The parameterisation and schedule classes ComfyUI composed the model sampling from."""
    names = [c.__name__ for c in type(sampling).__mro__[1:] if c.__module__.startswith("comfy.")]
    return "+".join(n for n in names if n not in ("Module", "object"))


def check_family(recorded: dict, inner_model, input_name: str = "model") -> None:
    current = {
        "model_class": type(inner_model).__name__,
        "diffusion_model": type(getattr(inner_model, "diffusion_model", None)).__name__,
        "model_sampling": _sampling_kind(inner_model.model_sampling),
    }
    if any(recorded.get(k) != v for k, v in current.items()):
        raise InputError(
            input_name,
            f"is {a_or_an(current['model_class'])} ({current['model_sampling']}) but the inversion was made with "
            f"{a_or_an(recorded['model_class'])} ({recorded['model_sampling']})",
            "sample with the model (or a patched copy of it) that the inversion was made with",
        )


def path_for(model_sampling, sigmas: torch.Tensor) -> tuple[list[float], list[float]]:
    """(a, b) of ``x = a x0 + b eps`` at each sigma, read off the host's noise_scaling."""
    return inv_kernel.path_coefficients(model_sampling.noise_scaling, sigmas.detach().to("cpu", torch.float64))


def conditioning_equal(a, b) -> bool:
    """True when two CONDITIONING values are the same object or hold identical tensors and options."""
    if a is b:
        return True
    if not isinstance(a, list) or not isinstance(b, list) or len(a) != len(b):
        return False
    for (ta, da), (tb, db) in zip(a, b):
        if ta is not tb:
            if ta.shape != tb.shape or not torch.equal(ta, tb):
                return False
        if set(da) != set(db):
            return False
        for key in da:
            va, vb = da[key], db[key]
            if va is vb:
                continue
            if isinstance(va, torch.Tensor) and isinstance(vb, torch.Tensor):
                if va.shape != vb.shape or not torch.equal(va, vb):
                    return False
            elif va != vb:
                return False
    return True


def check_conditioning(cond, input_name: str, model=None) -> None:
    """A CONDITIONING value, and (given the ``model``) one that model can use.

    A model family that needs a pooled text vector declares, as ``pooled_text_encoder``, what produces one; a
    conditioning without it (e.g. Wan's UMT5 text into HunyuanVideo) would otherwise fail deep in the host with a
    bare ``KeyError: 'pooled_output'``.
    """
    if not isinstance(cond, list) or len(cond) == 0:
        raise InputError(input_name, "is empty", "connect a text encode node's CONDITIONING (an empty prompt is fine)")
    for item in cond:
        if not (isinstance(item, (list, tuple)) and len(item) == 2 and isinstance(item[1], dict)):
            raise InputError(input_name, "is not a CONDITIONING value", "connect a CLIP Text Encode (or similar) output")
    family = family_of(model) if model is not None else None
    encoder = getattr(family, "pooled_text_encoder", None)
    if encoder and any(item[1].get("pooled_output") is None for item in cond):
        raise InputError(input_name, f"has no pooled text vector, which {family.family} needs (this conditioning "
                         "comes from a text encoder without one, such as Wan's UMT5 or a T5)",
                         f"encode the prompt with {encoder}")


def check_batch(cond, latent: torch.Tensor, input_name: str) -> None:
    """A conditioning's batch must be 1 or divide the latent's batch (ComfyUI repeats it)."""
    batch = latent.shape[0]
    for t, _ in cond:
        if t is None:
            continue
        cb = t.shape[0]
        if cb != 1 and batch % cb != 0:
            raise InputError(input_name, f"has batch size {cb}, which does not divide the latent's batch of {batch}",
                             "use one prompt per latent (batch 1) or a batch that divides the latent batch")


def interrupt_check() -> None:
    comfy.model_management.throw_exception_if_processing_interrupted()


def progress_step():
    """A ``step(done, total)`` callback for a kernel's per-item loop: it stops the run when the user cancels
    (:func:`interrupt_check`) and drives one ComfyUI progress bar, made at the first call, when the total is known."""
    bar: list = []

    def step(done: int, total: int) -> None:
        interrupt_check()
        if not bar:
            bar.append(comfy.utils.ProgressBar(total))
        bar[0].update_absolute(done, total)

    return step
