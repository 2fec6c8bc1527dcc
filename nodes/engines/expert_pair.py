"""Wan 2.2 A14B's two experts in one sampling run: a guider that sends every model call to the expert owning its
noise level, loading each expert through ComfyUI's model management when the run first needs it.

Wan 2.2 A14B (Wan team, "Wan 2.2", 2025: a mixture of two experts split by signal-to-noise ratio) denoises the
noisy levels with a high-noise expert and the rest with a low-noise expert. ComfyUI's own A14B templates run the
first half of the steps on the first and the second half on the second (two ``KSamplerAdvanced``, 20 steps,
``end_at_step`` / ``start_at_step`` 10, both experts under ``ModelSamplingSD3`` shift 8). The official code
switches on the timestep instead (``boundary`` 0.875 of 1000 for t2v, 0.900 for i2v).

The boundary here is a fraction of the schedule, ``expert_boundary``, the same as the templates' switch step
divided by their step count (10 / 20 = 0.5), turned into a sigma by the model's own ``percent_to_sigma``
(ComfyUI's rule for ``start_percent``-style inputs; for the ``simple`` scheduler fraction f of the steps is the
sigma at ``percent_to_sigma(f)`` for any step count). A model call whose sigma is above the boundary sigma goes to
the high-noise expert; one at or below it (within a relative 1e-5, the float32 rounding of the schedule) goes to
the low-noise expert, as the templates' second sampler starts at the switch step. At shift 8 fraction 0.5 is sigma
0.889; the official t2v boundary 0.875 is fraction 0.533 and the i2v one 0.900 is 0.471. Fraction 0 sends every
level to the low-noise expert and 1 every level to the high-noise one (exactly one model).

Every call goes to its level's expert, in the inversion (``ZSVR_DDPMInvert``) and in the edit
(``ZSVR_NegativePromptEditor``), so the inversion and its replay agree level by level and strength 1 still gives
the clip back. Each expert runs with its own model options (its attention switch, context windows, wrappers) and
is loaded by ``comfy.sampler_helpers.prepare_sampling`` the first time the run reaches it: ComfyUI unloads the
other expert only if the memory is needed, so both sit on the GPU only if ComfyUI chooses so. The inversion loop
reaches the low-noise levels first and the replay the high-noise ones first, so either run loads each expert once.
"""

from __future__ import annotations

import dataclasses

import comfy.model_patcher
import comfy.patcher_extension
import comfy.sampler_helpers
import comfy.samplers

from ..errors import InputError
from .. import host
from ..frame_layout import describe_windows, window_settings

HIGH = "high_noise"
LOW = "low_noise"
SAME_LEVEL_RTOL = 1e-5
"""A level within this relative distance of the boundary sigma counts as at the boundary (the low-noise expert's)."""


@dataclasses.dataclass(frozen=True)
class ExpertPair:
    """The low-noise expert and where it takes over (immutable; the high-noise expert is the guider's model)."""

    low_noise: object  # the low-noise expert's ModelPatcher
    boundary: float  # fraction of the schedule where the low-noise expert takes over (0..1)
    boundary_sigma: float  # the same as a sigma of the models' sampling

    def expert_for(self, sigma: float) -> str:
        """Which expert owns noise level ``sigma``: :data:`HIGH` above the boundary sigma, else :data:`LOW`."""
        return HIGH if sigma > self.boundary_sigma * (1.0 + SAME_LEVEL_RTOL) else LOW

    def describe(self) -> dict:
        """What an inversion records, so that its replay can refuse another pair or boundary."""
        return {"boundary": round(float(self.boundary), 6), "boundary_sigma": round(float(self.boundary_sigma), 6)}


def _sampling_signature(model_patcher) -> tuple:
    sampling = model_patcher.get_model_object("model_sampling")
    table = getattr(sampling, "sigmas", None)
    values = tuple(round(float(v), 6) for v in table[:: max(1, len(table) // 16)]) if table is not None else ()
    return (float(sampling.sigma_min), float(sampling.sigma_max), values)


def make_pair(high_noise, low_noise, boundary: float, input_name: str = "model_low_noise") -> ExpertPair | None:
    """The :class:`ExpertPair` of a node's inputs, or None without a low-noise expert.

    Raises:
        InputError: naming ``input_name``, when the low-noise expert is not the same kind of model as ``model``
            (class, latent, noise schedule and shift), or ``expert_boundary`` is outside 0..1.
    """
    if low_noise is None:
        return None
    if not 0.0 <= boundary <= 1.0:
        raise InputError("expert_boundary", f"is {boundary}", "use a fraction of the schedule from 0 to 1 "
                         "(0.5: the Wan 2.2 templates' switch at step 10 of 20)")
    mine, theirs = host.model_family(high_noise), host.model_family(low_noise)
    if mine != theirs:
        raise InputError(input_name, f"is {theirs['model_class']} ({theirs['model_sampling']}) but model is "
                         f"{mine['model_class']} ({mine['model_sampling']})",
                         "connect the two experts of one model (Wan 2.2 A14B: the high-noise one to model, the "
                         "low-noise one here)")
    if _sampling_signature(high_noise) != _sampling_signature(low_noise):
        raise InputError(input_name, "has another noise schedule (shift) than model, so the two experts would not "
                         "agree on the noise levels", "give both experts the same ModelSamplingSD3 shift (the Wan "
                         "2.2 templates: 8)")
    sampling = high_noise.get_model_object("model_sampling")
    return ExpertPair(low_noise, float(boundary), float(sampling.percent_to_sigma(float(boundary))))


def same_windows(high_options, low_options, latent) -> None:
    """Both experts must denoise in the same core context windows (else one of them would take the whole clip, and
    a replay would not retrace the inversion)."""
    mine, theirs = window_settings(high_options, latent), window_settings(low_options, latent)
    if mine != theirs:
        raise InputError("model_low_noise", f"samples {describe_windows(theirs)}, but model samples "
                         f"{describe_windows(mine)}", "wrap both experts in the same Context Windows node settings")


class _Expert:
    """One expert during a run: its patcher and its run's model options."""

    def __init__(self, patcher, options):
        self.patcher = patcher
        self.options = options


class ExpertPairGuiderMixin:
    """Mixed into a ``CFGGuider`` (before it): with :attr:`experts` set, every model call of a run goes to the
    expert owning its sigma. Without one the guider is exactly the host's."""

    experts: ExpertPair | None = None

    def set_experts(self, experts: ExpertPair | None) -> None:
        self.experts = experts

    # -- one run -------------------------------------------------------------------------------------------------
    def outer_sample(self, noise, latent_image, sampler, sigmas, denoise_mask=None, callback=None,
                     disable_pbar=False, seed=None):
        if self.experts is None:
            return super().outer_sample(noise, latent_image, sampler, sigmas, denoise_mask, callback, disable_pbar,
                                        seed)
        high, low = self.model_patcher, self.experts.low_noise
        low_options = comfy.model_patcher.create_model_options_clone(low.model_options)
        comfy.sampler_helpers.prepare_model_patcher(low, self.conds, low_options)
        device = high.load_device
        # the memory estimate and the additional models (ControlNets...) of the conds as given
        self._raw_conds = {k: list(v) for k, v in self.conds.items()}
        self._noise_shape = noise.shape
        self._run = {HIGH: _Expert(high, self.model_options), LOW: _Expert(low, low_options)}
        self._current = None  # the expert the last call went to
        self.loaded_models = []
        self.inner_model = high.model  # loaded when the run first calls it (:meth:`_enter`)
        if denoise_mask is not None:
            denoise_mask = comfy.sampler_helpers.prepare_mask(denoise_mask, noise.shape, device)
        noise, latent_image, sigmas = noise.to(device), latent_image.to(device), sigmas.to(device)
        comfy.samplers.cast_to_load_options(self.model_options, device=device, dtype=high.model_dtype())
        comfy.samplers.cast_to_load_options(low_options, device=device, dtype=low.model_dtype())
        try:
            high.pre_run()
            low.pre_run()
            output = self.inner_sample(noise, latent_image, device, sampler, sigmas, denoise_mask, callback,
                                       disable_pbar, seed)
        finally:
            high.cleanup()
            low.cleanup()
            comfy.samplers.cast_to_load_options(low_options, device=low.offload_device)
            low.restore_hook_patches()
        comfy.sampler_helpers.cleanup_models(self.conds, self.loaded_models)
        del self.inner_model, self.loaded_models, self._run, self._raw_conds, self._current
        return output

    def _enter(self, which: str) -> _Expert:
        """The expert ``which``, loaded through ComfyUI's model management when the run turns to it
        (``prepare_sampling``, which also reloads an expert ComfyUI unloaded to make room for the other)."""
        expert = self._run[which]
        if self._current != which:
            _, _, models = comfy.sampler_helpers.prepare_sampling(expert.patcher, self._noise_shape, self._raw_conds,
                                                                  expert.options)
            self.loaded_models.extend(m for m in models if m not in self.loaded_models)
            self._current = which
        return expert

    def outer_predict_noise(self, x, timestep, model_options={}, seed=None):
        if self.experts is None:
            return super().outer_predict_noise(x, timestep, model_options, seed)
        which = self.experts.expert_for(float(timestep.detach().flatten()[0]))
        expert = self._enter(which)
        options = model_options if which == HIGH else self._call_options(expert.options, model_options)
        self.inner_model = expert.patcher.model
        try:
            return comfy.patcher_extension.WrapperExecutor.new_class_executor(
                self.predict_noise, self,
                comfy.patcher_extension.get_all_wrappers(comfy.patcher_extension.WrappersMP.PREDICT_NOISE,
                                                         expert.options, is_model_options=True),
            ).execute(x, timestep, options, seed)
        finally:
            self.inner_model = self.model_patcher.model

    @staticmethod
    def _call_options(expert_options: dict, passed: dict) -> dict:
        """The low-noise expert's options for one call: its own (its patches, switch, windows), plus the schedule
        the run hands every call (``sample_sigmas``, which the samplers may name anew)."""
        options = comfy.model_patcher.create_model_options_clone(expert_options)
        schedule = (passed.get("transformer_options") or {}).get("sample_sigmas")
        if schedule is not None:
            options.setdefault("transformer_options", {})["sample_sigmas"] = schedule
        return options


class ExpertPairCFGGuider(ExpertPairGuiderMixin, comfy.samplers.CFGGuider):
    """Core ``CFGGuider`` over a pair of experts (the inversion's guider)."""


def boundary_input():
    """The ``expert_boundary`` input of the nodes that call the model (one declaration, one tooltip)."""
    from comfy_api.latest import io

    return io.Float.Input(
        "expert_boundary", default=0.5, min=0.0, max=1.0, step=0.001, round=0.001, optional=True,
        tooltip="With model_low_noise: the fraction of the schedule where the low-noise expert takes over. 0.5 = "
                "ComfyUI's Wan 2.2 A14B templates (two KSamplerAdvanced, switch at step 10 of 20; sigma 0.889 at "
                "shift 8). The official Wan 2.2 boundary (sigma 0.875, t2v) is 0.533 at shift 8, for i2v (0.900) "
                "0.471. 0 = the low-noise expert alone, 1 = model alone. Use the same value on ZSVR DDPM Inversion "
                "and ZSVR Negative Prompt Editor.")


def low_noise_input():
    """The ``model_low_noise`` input of the nodes that call the model."""
    from comfy_api.latest import io

    return io.Model.Input(
        "model_low_noise", optional=True,
        tooltip="Optional second expert (Wan 2.2 A14B: the low-noise model; model is then the high-noise one). "
                "Levels past expert_boundary go to it. Give it its own ZSVR Attention Switch (and the same "
                "context windows) as model. Each expert is loaded when the run reaches it.")


def experts_of(guider) -> dict | None:
    """What a guider's pair looks like (:meth:`ExpertPair.describe`), or None for one model."""
    pair = getattr(guider, "experts", None)
    return None if pair is None else pair.describe()


__all__ = ["ExpertPair", "same_windows", "ExpertPairGuiderMixin", "ExpertPairCFGGuider", "make_pair", "boundary_input",
           "low_noise_input", "experts_of", "HIGH", "LOW"]