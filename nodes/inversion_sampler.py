"""``ZSVR_InversionSampler``: NOISE, SAMPLER and SIGMAS that replay an inversion from a skip step.

Wire them into core ``SamplerCustomAdvanced`` with any GUIDER (the inversion's
own prompt reproduces the input; ``ZSVR_NegativePromptEditor`` edits it).
The NOISE and the SAMPLER are ``nodes.engines.inversion``'s.
"""

from __future__ import annotations

import math

from comfy_api.latest import io

from ..kernels import inversion as inv_kernel
from .errors import InputError
from .engines.inversion import InversionNoise, ReplaySampler
from .shared_inputs import check_finite, validate_widgets
from .types import CATEGORY, Inversion


def _noise_at(inversion: inv_kernel.InversionResult, level: int) -> str:
    """The equivalent EPS sigma b/a of ``level``, rounded down to 4 significant digits (so that a start_noise of
    the printed value starts at that level, not the one before it)."""
    a, b = inversion.a[level], inversion.b[level]
    if a == 0:
        return "inf"
    value = b / a
    if value <= 0:
        return "0"
    scale = 10 ** (3 - math.floor(math.log10(value)))
    return f"{math.floor(value * scale) / scale:g}"


class InversionSampler(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="ZSVR_InversionSampler",
            display_name="Inversion Sampler (ZSVR)",
            category=f"{CATEGORY}/inversion",
            description=(
                "Replays an inversion from a skip step: connect NOISE, SAMPLER and SIGMAS to SamplerCustomAdvanced "
                "(with the inverted LATENT). With the inversion's own prompt it reproduces the input; with the "
                "Negative Prompt Editor it removes what the remove prompt describes. After a ddim inversion (TDM) "
                "the SAMPLER also takes SIGMAS from your own scheduler with another step count (e.g. invert in 10 "
                "steps, sample in 32): sampling starts from the inverted latent at the schedule's first sigma (x_T "
                "when it is the largest) and takes DDIM steps over your schedule. The first sigma must be one the "
                "inversion passed through: every core scheduler except ddim_uniform starts at the model's largest "
                "sigma for any step count."
            ),
            inputs=[
                Inversion.Input("inversion", tooltip="From ZSVR DDPM Inversion."),
                io.Int.Input("skip", default=40, min=0, max=10000,
                             tooltip="Steps of the schedule skipped: the edit starts at step `skip` (ZSVD: 40 of 100). "
                                     "More skip keeps more of the input; less skip edits more. After a ddim "
                                     "inversion with SIGMAS from another scheduler, sampling starts where those "
                                     "SIGMAS start instead (TDM: skip 0)."),
                io.Float.Input("start_noise", default=0.0, min=0.0, max=1000.0, step=0.01,
                               tooltip="Optional start as a noise level instead of a step: the equivalent EPS sigma "
                                       "b/a (k-diffusion sigma; flow sigma s means s/(1-s)). ZSVD official: 4.55 "
                                       "(flow sigma 0.82). 0 = use skip."),
                io.Combo.Input("last_step", options=list(inv_kernel.LAST_STEPS), default="exact", optional=True,
                               tooltip="How the last step (to a clean latent) ends, for step rules ddpm and ddim. "
                                       "exact: add the residual the inversion stored, so strength 1 gives the input "
                                       "back exactly; it is the fine detail the model did not predict, which can "
                                       "include thin rain streaks, so it may put some rain back. prediction: end on "
                                       "the edited clean prediction, like the official ZSVD code (a little detail "
                                       "is lost, no rain is added back). Rule zsvd always ends like the official "
                                       "code. Changing this does not re-run the inversion."),
            ],
            outputs=[
                io.Noise.Output(display_name="noise"),
                io.Sampler.Output(display_name="sampler"),
                io.Sigmas.Output(display_name="sigmas"),
            ],
        )

    @classmethod
    def validate_inputs(cls, start_noise=None):
        """Before anything runs: start_noise is a finite number in its range."""
        return validate_widgets(cls, start_noise=start_noise)

    @classmethod
    def execute(cls, inversion, skip, start_noise, last_step="exact") -> io.NodeOutput:
        check_finite(cls, start_noise=start_noise)
        if not isinstance(inversion, inv_kernel.InversionResult):
            raise InputError("inversion", "is not a ZSVR inversion", "connect ZSVR DDPM Inversion's output")
        steps = inversion.steps
        start = inversion.level_for_noise(start_noise) if start_noise > 0 else skip
        name = "start_noise" if start_noise > 0 else "skip"
        if start >= steps:
            raise InputError(name, f"starts at step {start}, but the schedule has only {steps} steps",
                             f"use a skip below {steps}" if name == "skip" else "use a larger noise level")
        if start < inversion.first_step:
            raise InputError(name, f"starts at step {start}, but the inversion was only computed from step "
                             f"{inversion.first_step}", f"set the inverter's first_step to {start} or less, or "
                             + ("skip more" if name == "skip" else
                                f"lower start_noise to {_noise_at(inversion, inversion.first_step)} or less"))
        sigmas = inversion.sigmas[start:].clone()
        if last_step not in inv_kernel.LAST_STEPS:
            raise InputError("last_step", f"is {last_step!r}", f"use one of: {', '.join(inv_kernel.LAST_STEPS)}")
        return io.NodeOutput(InversionNoise(inversion, start), ReplaySampler(inversion, start, last_step), sigmas)
