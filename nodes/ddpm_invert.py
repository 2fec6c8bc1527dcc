"""``ZSVR_DDPMInvert``: edit-friendly DDPM (or DDIM) inversion of a latent (ZSVD, TDM).

The model is driven through ComfyUI's own ``CFGGuider`` with a ``Sampler``
whose ``sample`` runs the inversion loop of ``kernels.inversion``
(``nodes.engines.inversion.InversionRunner``), so model loading,
conditioning, patches and wrappers are exactly the host's.
"""

from __future__ import annotations

import torch

import comfy.samplers
import comfy.sample
import comfy.utils
import latent_preview
from comfy_api.latest import io

from ..kernels import inversion as inv_kernel
from .errors import InputError
from . import host
from . import switch_protocol as protocol
from .engines.expert_pair import ExpertPairCFGGuider, boundary_input, low_noise_input, make_pair, same_windows
from .engines.inversion import InversionRunner
from .errors import kernel_inputs
from .shared_inputs import check_finite, validate_widgets
from .frame_layout import window_settings
from .types import CATEGORY, Inversion


class DDPMInvert(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="ZSVR_DDPMInvert",
            display_name="DDPM Inversion (ZSVR)",
            category=f"{CATEGORY}/inversion",
            description=(
                "Inverts a video latent so that re-sampling it reproduces the input: edit-friendly DDPM inversion "
                "(ZSVD) or deterministic DDIM inversion (TDM). Run it once; change skip, strength or attention "
                "settings downstream without re-running it."
            ),
            inputs=[
                io.Model.Input("model", tooltip="The diffusion model (Wan, HunyuanVideo, CogVideoX, SD...); with "
                               "model_low_noise, the high-noise expert (Wan 2.2 A14B)."),
                io.Conditioning.Input("positive", tooltip="Inversion prompt. ZSVD inverts with the null (empty) prompt."),
                io.Conditioning.Input("negative", tooltip="Inversion negative prompt. ZSVD uses the null prompt here too; "
                                      "when it equals positive the model runs once per step."),
                io.Float.Input("cfg", default=1.0, min=0.0, max=100.0, step=0.1, round=0.01,
                               tooltip="Guidance scale during inversion. With positive == negative any value equals 1 "
                                       "(the ZSVD reference's 3.5 on null/null is the same as 1)."),
                io.Latent.Input("latent", tooltip="The encoded video (VAE Encode of ZSVR Load Video)."),
                io.Sigmas.Input("sigmas", tooltip="The noise schedule from any scheduler node (ZSVD: 100 steps). "
                                "The edit must use the same schedule (ZSVR Inversion Sampler outputs it); with "
                                "step_rule ddim it may use another step count that starts at the same first sigma "
                                "(TDM: 10 inversion steps, 32 sampling steps; any scheduler but ddim_uniform)."),
                io.Int.Input("inversion_seed", default=0, min=0, max=0xFFFFFFFFFFFFFFFF,
                             tooltip="Seed of the per-step noise x_t drawn during inversion. Fixed on purpose (no "
                                     "randomize-after-run control): a new seed would re-run the inversion every time."),
                io.Combo.Input("step_rule", options=list(inv_kernel.RULES), default="ddpm",
                               tooltip="ddpm: edit-friendly DDPM posterior (any model). zsvd: the official ZSVD "
                                       "code's step (DDIM mean + DDPM-sized noise), ending like it on the guided "
                                       "clean prediction (one model call fewer). ddim: deterministic DDIM "
                                       "inversion (TDM). Replay always uses the same rule."),
                io.Int.Input("first_step", default=0, min=0, max=10000,
                             tooltip="Invert only from this step on (saves model calls). The sampler's skip must be "
                                     "at least this; 0 serves every skip."),
                low_noise_input(),
                boundary_input(),
            ],
            outputs=[Inversion.Output(display_name="inversion")],
        )

    @classmethod
    def validate_inputs(cls, cfg=None, expert_boundary=None):
        """Before anything runs: cfg and expert_boundary are finite numbers in their ranges."""
        return validate_widgets(cls, cfg=cfg, expert_boundary=expert_boundary)

    @classmethod
    def execute(cls, model, positive, negative, cfg, latent, sigmas, inversion_seed, step_rule, first_step,
                model_low_noise=None, expert_boundary=0.5) -> io.NodeOutput:
        check_finite(cls, cfg=cfg, expert_boundary=expert_boundary)
        seed = inversion_seed
        host.check_conditioning(positive, "positive", model)
        host.check_conditioning(negative, "negative", model)
        if not isinstance(latent, dict) or not isinstance(latent.get("samples"), torch.Tensor):
            raise InputError("latent", "is not a LATENT", "connect a VAE Encode output")
        with kernel_inputs():
            inv_kernel.validate_sigmas(sigmas)
        steps = len(sigmas) - 1
        if first_step >= steps:
            raise InputError("first_step", f"is {first_step}, but the schedule has {steps} steps",
                             f"use a value from 0 to {steps - 1}")
        samples = comfy.sample.fix_empty_latent_channels(model, latent["samples"])
        host.check_batch(positive, samples, "positive")
        host.check_batch(negative, samples, "negative")
        same = host.conditioning_equal(positive, negative)
        # mark the passes as inversion: an attention switch on this model stays inactive here
        model = model.clone()
        protocol.mark_pass(model.model_options.setdefault("transformer_options", {}), protocol.Pass.INVERSION)
        pair = None
        if model_low_noise is not None:
            low = model_low_noise.clone()
            protocol.mark_pass(low.model_options.setdefault("transformer_options", {}), protocol.Pass.INVERSION)
            pair = make_pair(model, low, expert_boundary)
            same_windows(model.model_options, low.model_options, samples)
        guider = ExpertPairCFGGuider(model)
        guider.set_experts(pair)
        # equal conds: CFG is the identity for any scale, and scale 1 lets the host skip the second row
        guider.set_conds(positive, positive if same else negative)
        guider.set_cfg(1.0 if same else cfg)
        # z_t live on the CPU in the model's dtype (16-bit models) or fp32
        model_dtype = model.model_dtype()
        store_dtype = model_dtype if model_dtype in (torch.float16, torch.bfloat16) else torch.float32
        runner = InversionRunner(step_rule, seed, first_step, store_dtype)
        total = steps - first_step + (1 if step_rule == "ddim" else 0) \
            - (1 if step_rule == "zsvd" and float(sigmas[-1]) == 0.0 else 0)
        callback = latent_preview.prepare_callback(model, total)
        noise = torch.zeros_like(samples)
        with kernel_inputs(rule="step_rule", noise_scaling="model"):
            guider.sample(noise, samples, runner, sigmas, callback=callback,
                          disable_pbar=not comfy.utils.PROGRESS_BAR_ENABLED, seed=seed)
        result = runner.result
        result.meta = dict(host.model_family(model), latent_shape=tuple(samples.shape), cfg=1.0 if same else cfg,
                           context_windows=window_settings(model.model_options, samples))
        if pair is not None:
            result.meta["experts"] = pair.describe()
        return io.NodeOutput(result)

