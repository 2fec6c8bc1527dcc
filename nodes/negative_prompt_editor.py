"""``ZSVR_NegativePromptEditor``: the ZSVD editing guider.

The guider (the prediction, the tagged passes of a switched model) is
``nodes.engines.negative_prompt_guider``.
"""

from __future__ import annotations

from comfy_api.latest import io

from .errors import InputError
from . import host
from .engines.expert_pair import boundary_input, low_noise_input, make_pair
from .engines.negative_prompt_guider import NegativePromptGuider
from .shared_inputs import check_finite, validate_widgets
from .types import CATEGORY


class NegativePromptEditor(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="ZSVR_NegativePromptEditor",
            display_name="Negative Prompt Editor (ZSVR)",
            category=f"{CATEGORY}/zsvd",
            description=(
                "ZSVD editing guider: prediction = remove + strength * (null - remove). Strength 1 reproduces the "
                "inversion; larger strength removes more of what the remove prompt describes (ZSVD: 15 on CogVideoX-2b)."
            ),
            inputs=[
                io.Model.Input("model", tooltip="The model, optionally patched by ZSVR Attention Switch; with "
                               "model_low_noise, the high-noise expert (Wan 2.2 A14B)."),
                io.Conditioning.Input("null", tooltip="The null (empty) prompt: the same conditioning the inversion used."),
                io.Conditioning.Input("remove", tooltip="What to remove, e.g. \"light rain\" (the paper's best single phrase)."),
                io.Float.Input("strength", default=15.0, min=0.0, max=100.0, step=0.1, round=0.01,
                               tooltip="Editing strength s. 1 = plain reconstruction; ZSVD uses 15."),
                low_noise_input(),
                boundary_input(),
            ],
            outputs=[io.Guider.Output(display_name="guider")],
        )

    @classmethod
    def validate_inputs(cls, strength=None, expert_boundary=None):
        """Before anything runs: strength (NaN would edit to a black video) and expert_boundary are finite numbers
        in their ranges."""
        return validate_widgets(cls, strength=strength, expert_boundary=expert_boundary)

    @classmethod
    def execute(cls, model, null, remove, strength, model_low_noise=None, expert_boundary=0.5) -> io.NodeOutput:
        check_finite(cls, strength=strength, expert_boundary=expert_boundary)
        host.check_conditioning(null, "null", model)
        host.check_conditioning(remove, "remove", model)
        if strength < 0:
            raise InputError("strength", f"is {strength}", "use a value of 0 or more (1 reproduces the input)")
        pair = make_pair(model, model_low_noise, expert_boundary)
        guider = NegativePromptGuider(model)
        guider.set_experts(pair)
        guider.set_conds(null, remove)
        guider.set_cfg(strength)
        return io.NodeOutput(guider)
