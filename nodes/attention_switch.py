"""``ZSVR_AttentionSwitch``: ZSVD attention switching as a patched MODEL clone.

ZSVD (Varanka et al., WACV 2026, sec. 3.3): in the chosen blocks the remove
path's text keys and values are replaced by the null path's at the same block,
while the text stream keeps its own. Which model code is touched is the
family adapter's business (``nodes/adapters``); this node parses the inputs,
clones the model and asks the adapter to install the switch.
"""

from __future__ import annotations

from comfy_api.latest import io

from ..kernels.block_ranges import check_block_syntax, parse_blocks
from . import switch_protocol as protocol
from .errors import kernel_inputs
from .adapters import FAMILIES, adapter_for
from .shared_inputs import (blocks_check, check_finite, check_schedule_window, schedule_gate, schedule_window_inputs,
                            validate_window_widgets)
from .types import CATEGORY


def _families_help() -> str:
    return "; ".join(a.switch_help for a in FAMILIES if a.capabilities.text_key_switch)


class AttentionSwitch(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="ZSVR_AttentionSwitch",
            display_name="Attention Switch (ZSVR)",
            category=f"{CATEGORY}/zsvd",
            description=(
                "ZSVD attention switching: in the chosen blocks the remove prompt's text keys/values are replaced "
                "by the null prompt's, so the edit removes the unwanted content while keeping the rest. Use with "
                "ZSVR Negative Prompt Editor. The 'blocks' error names the valid range of the connected model. "
                f"Supported: {_families_help()}. HunyuanVideo is guidance-distilled and responds weakly to "
                "two-branch negative prompting: expect a smaller effect than on Wan or CogVideoX."
            ),
            inputs=[
                io.Model.Input("model", tooltip="The video model to patch (a patched copy is returned)."),
                io.String.Input("blocks", default="0-3,15-29",
                                tooltip="Blocks to switch: indices and ranges like 0-3,15-29 (ZSVD's choice for the "
                                        "30-block CogVideoX-2b), 'all', or empty for none."),
                *schedule_window_inputs("Switch"),
            ],
            outputs=[io.Model.Output(display_name="model")],
        )

    @classmethod
    def validate_inputs(cls, blocks=None, start_percent=None, end_percent=None):
        """Before anything runs: finite window ends in order, and a block list that parses (whether its blocks
        exist needs the model, so that is checked when the node runs)."""
        return validate_window_widgets(cls, start_percent, end_percent, blocks_check(blocks, check_block_syntax))

    @classmethod
    def execute(cls, model, blocks, start_percent, end_percent) -> io.NodeOutput:
        check_finite(cls, start_percent=start_percent, end_percent=end_percent)
        adapter = adapter_for(model)
        with kernel_inputs(text="blocks"):
            chosen = parse_blocks(blocks, adapter.num_blocks(model))
        check_schedule_window(start_percent, end_percent)
        patched = model.clone()
        if chosen:
            settings = protocol.SwitchSettings(chosen, adapter.family, schedule_gate(model, start_percent, end_percent))
            adapter.install_switch(patched, chosen, settings.is_active)
            patched.model_options.setdefault("transformer_options", {})[protocol.SWITCH_KEY] = settings
        return io.NodeOutput(patched)
