"""The pack's ComfyUI extension: every node class it registers, in the order the editor lists them."""

from comfy_api.latest import ComfyExtension, io

from .attention_switch import AttentionSwitch
from .chunk_output import ChunkOutput
from .color_match import ColorMatch
from .ddpm_invert import DDPMInvert
from .early_stop import EarlyStop
from .frame_padding import PadFrames, TrimPadding
from .inversion_sampler import InversionSampler
from .load_cogvideox import LoadCogVideoX
from .load_video import LoadVideo
from .negative_prompt_editor import NegativePromptEditor
from .noise_sharing import NoiseSharing
from .slr_temporal_attention import SLRTemporalAttention
from .swcfa import SWCFA
from .temporal_consistency_guidance import TemporalConsistencyGuidance

NODE_LIST: list[type[io.ComfyNode]] = [
    LoadVideo,
    DDPMInvert,
    InversionSampler,
    NegativePromptEditor,
    EarlyStop,
    AttentionSwitch,
    SWCFA,
    SLRTemporalAttention,
    NoiseSharing,
    TemporalConsistencyGuidance,
    LoadCogVideoX,
    ChunkOutput,  # run_workflow.py --servers --chunk-frames only (not a ZSVR_* contract node)
    ColorMatch,
    PadFrames,
    TrimPadding,
]


class ZSVRExtension(ComfyExtension):
    async def get_node_list(self) -> list[type[io.ComfyNode]]:
        return list(NODE_LIST)
