"""ZSVD's editing guider (Varanka et al., WACV 2026, sec. 3): the GUIDER of ``ZSVR_NegativePromptEditor``.

Prediction: ``remove + strength * (null - remove)`` (``kernels.guidance``). The
null path is ComfyUI's positive row and the remove path its negative row, so
with no attention patch the result is exactly core ``CFGGuider`` with
positive = null, negative = remove, cfg = strength. A model switched by
``ZSVR_AttentionSwitch`` is run as two tagged passes per step, null then
remove, that share one pass cache (``switch_protocol``): host batch splitting
can then never separate the two rows the switch relates.
"""

from __future__ import annotations

import comfy.samplers
import comfy.model_patcher

from ...kernels.guidance import negative_prompt_edit
from .. import switch_protocol as protocol
from ..adapters import require_context_windows
from .expert_pair import ExpertPairGuiderMixin, same_windows


class NegativePromptGuider(ExpertPairGuiderMixin, comfy.samplers.CFGGuider):
    """CFGGuider over (null, remove) that names its rows for attention patches.

    With a pair of experts (``set_experts``, Wan 2.2 A14B) every call goes to the expert owning its noise level
    (``expert_pair``), each with its own switch.

    Under core context windows the host splits each of the two passes of a switched step into one model call per
    window (all of the null pass, then all of the remove pass); the pass cache keeps one set of null values per
    window (``switch_protocol.window_key``), so the edit of every window is the edit that window alone would get.
    """

    def sample(self, noise, latent_image, sampler, sigmas, *args, **kwargs):
        if protocol.settings(self.model_options.get("transformer_options")) is not None:
            require_context_windows(self.model_patcher, self.model_options, "ZSVR attention switching")
        if self.experts is not None:
            low = self.experts.low_noise
            if protocol.settings(low.model_options.get("transformer_options")) is not None:
                require_context_windows(low, low.model_options, "ZSVR attention switching", "model_low_noise")
            same_windows(self.model_options, low.model_options, latent_image)
        return super().sample(noise, latent_image, sampler, sigmas, *args, **kwargs)

    def predict_noise(self, x, timestep, model_options={}, seed=None):
        null_cond = self.conds.get("positive")
        remove_cond = self.conds.get("negative")
        switched = protocol.settings(model_options.get("transformer_options")) is not None
        if switched:
            model_options = comfy.model_patcher.create_model_options_clone(model_options)
            model_options["transformer_options"][protocol.CACHE_KEY] = protocol.PassCache()
        if self.cfg == 1.0 and not model_options.get("disable_cfg1_optimization", False):
            # strength 1 is the null prediction alone: one row, as the host would do
            if switched:
                return self._one_pass(null_cond, protocol.Pass.NULL, x, timestep, model_options)
            return comfy.samplers.calc_cond_batch(self.inner_model, [null_cond], x, timestep, model_options)[0]
        if switched:
            pred_null = self._one_pass(null_cond, protocol.Pass.NULL, x, timestep, model_options)
            pred_remove = self._one_pass(remove_cond, protocol.Pass.REMOVE, x, timestep, model_options)
        else:
            pred_null, pred_remove = comfy.samplers.calc_cond_batch(
                self.inner_model, [null_cond, remove_cond], x, timestep, model_options)
        if "sampler_cfg_function" in model_options or model_options.get("sampler_post_cfg_function"):
            # honour other nodes' cfg hooks exactly as the host's CFG would
            return comfy.samplers.cfg_function(self.inner_model, pred_null, pred_remove, self.cfg, x, timestep,
                                               model_options=model_options, cond=null_cond, uncond=remove_cond)
        return negative_prompt_edit(pred_null, pred_remove, self.cfg)


    @staticmethod
    def _one_pass_options(model_options, which: protocol.Pass) -> dict:
        """The options of one tagged pass; both passes of a step hold the same pass-cache object."""
        options = comfy.model_patcher.create_model_options_clone(model_options)
        protocol.mark_pass(options["transformer_options"], which)
        return options

    def _one_pass(self, cond, which, x, timestep, model_options):
        options = self._one_pass_options(model_options, which)
        return comfy.samplers.calc_cond_batch(self.inner_model, [cond], x, timestep, options)[0]
