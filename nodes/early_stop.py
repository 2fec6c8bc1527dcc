"""``ZSVR_EarlyStop``: stop any SAMPLER at a chosen step and return its clean-latent prediction there.

ZVRD (Cao et al., AAAI 2025) stops sampling at T_ES and outputs the x0
prediction of that step.

ZVRD setting: the paper does not publish T_ES. We suggest ``stop_percent`` 0.8
(``stop_step`` 0): the last fifth of a schedule only adds fine, frame-by-frame
independent detail (the noise level there is far below the content's), which
is where temporal flicker comes from, while the x0 prediction at 80 % is
already sharp; stopping there also saves 20 % of the steps. Lower it (0.6-0.7)
for more stability, raise it for more detail. The node's default stays 1.0 (no
early stop) so that existing workflows keep their meaning.

The SAMPLER that stops (the sampler callback it relies on) is ``nodes.engines.early_stop``.
"""

from __future__ import annotations

import comfy.samplers
from comfy_api.latest import io

from .errors import InputError
from .engines.early_stop import EarlyStopSampler
from .shared_inputs import check_finite, validate_widgets
from .types import CATEGORY


class EarlyStop(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="ZSVR_EarlyStop",
            display_name="Early Stop (ZSVR)",
            category=f"{CATEGORY}/sampling",
            description=("Stops a sampler at a step and outputs the clean prediction made there (ZVRD early "
                         "stopping). ZVRD setting: stop_percent 0.8 (our pick; the paper does not publish T_ES): "
                         "the last steps only add frame-by-frame detail, which flickers in a video."),
            inputs=[
                io.Sampler.Input("sampler", tooltip="Any SAMPLER (KSamplerSelect, ZSVR Inversion Sampler, ...)."),
                io.Int.Input("stop_step", default=0, min=0, max=10000,
                             tooltip="Stop at this step (1-based) and return its prediction. 0 = use stop_percent."),
                io.Float.Input("stop_percent", default=1.0, min=0.0, max=1.0, step=0.01,
                               tooltip="Stop after this fraction of the steps (1.0 = no early stop). For ZVRD "
                                       "use 0.8 (T_ES is not published; 0.8 keeps the sharp x0 prediction and "
                                       "skips the last, flicker-prone steps)."),
            ],
            outputs=[io.Sampler.Output(display_name="sampler")],
        )

    @classmethod
    def validate_inputs(cls, stop_percent=None):
        """Before anything runs: stop_percent is a finite number in 0..1."""
        return validate_widgets(cls, stop_percent=stop_percent)

    @classmethod
    def execute(cls, sampler, stop_step, stop_percent) -> io.NodeOutput:
        check_finite(cls, stop_percent=stop_percent)
        if not isinstance(sampler, comfy.samplers.Sampler) and not hasattr(sampler, "sample"):
            raise InputError("sampler", "is not a SAMPLER", "connect a sampler node's output")
        return io.NodeOutput(EarlyStopSampler(sampler, stop_step, stop_percent))
