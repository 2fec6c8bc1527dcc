"""``ZSVR_NoiseSharing``: ZVRD's spatial-temporal noise sharing (eq. 11) as a NOISE and a SAMPLER.

The node checks its inputs and wraps the given KSAMPLER; the NOISE, the SAMPLER, their per-step noise stream,
flow and choices are in ``nodes.engines.noise_sharing``.
"""

from __future__ import annotations

import math

import comfy.samplers
from comfy_api.latest import io

from ..kernels.errors import a_or_an
from .errors import InputError
from .engines.noise_sharing import NoiseSharingSampler, SharedNoise
from .shared_inputs import check_shot_cuts, shot_cuts_input, video_frames
from .types import CATEGORY

WORKS_WITH = ("a KSAMPLER: KSamplerSelect or any core Sampler... node (euler_ancestral, dpmpp_2s_ancestral, "
              "dpmpp_sde, dpmpp_2m_sde, ddpm, lcm, er_sde, ...)")


def check_lambda(value) -> float:
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if not number or not math.isfinite(value) or not 0.0 <= value <= 1.0:
        raise InputError("lambda", f"is {value!r}",
                         "use a number between 0 (the noise follows the flow) and 1 (shared noise, no blending)")
    return float(value)


class NoiseSharing(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="ZSVR_NoiseSharing",
            display_name="Noise Sharing (ZSVR)",
            category=f"{CATEGORY}/zvrd",
            description=(
                "ZVRD's spatial-temporal noise sharing: every frame of the video gets the same initial noise "
                "(NOISE) and the same per-step noise (SAMPLER); with lambda < 1 and the input video connected, the "
                "per-step noise also follows the optical flow where it is reliable (eq. 11). Image U-Nets: the "
                "frames are the latent batch; video models: the latent's time axis."
            ),
            inputs=[
                io.Int.Input("noise_seed", default=0, min=0, max=0xFFFFFFFFFFFFFFFF, control_after_generate=True,
                             tooltip="Seed of the shared noise (initial noise and the per-step noise stream)."),
                io.Sampler.Input("sampler", tooltip="A KSAMPLER (KSamplerSelect or a core sampler node) whose "
                                                    "per-step noise gets shared. Put ZSVR Early Stop after this node."),
                io.Float.Input("lambda", default=1.0, min=0.0, max=1.0, step=0.01,
                               tooltip="Eq. 11's weight of a frame's own noise: 1 = shared noise only (default); "
                                       "below 1 the noise of each frame is blended with the previous frame's "
                                       "noise moved along the optical flow (needs 'image'); 0 = noise follows "
                                       "the flow. The paper's value is not published. The noise moves by "
                                       "whole latent pixels (exactly unit variance), so lambda acts only where "
                                       "the motion is at least half a latent pixel per frame (4 image pixels "
                                       "for an 8x VAE): on a static shot or sub-pixel motion it changes nothing."),
                io.Image.Input("image", optional=True,
                               tooltip="Optional: the input video, for the flow of lambda < 1. One frame per "
                                       "latent frame, or (T-1)*r+1 frames for a video VAE with temporal "
                                       "compression r (e.g. 4k+1 frames for Wan)."),
                shot_cuts_input("carry noise along the flow (lambda < 1)"),
            ],
            outputs=[io.Noise.Output(display_name="noise"), io.Sampler.Output(display_name="sampler")],
        )

    @classmethod
    def execute(cls, noise_seed, sampler, image=None, shot_cuts=None, **kwargs) -> io.NodeOutput:
        lam = check_lambda(kwargs.get("lambda", 1.0))
        if not isinstance(sampler, comfy.samplers.KSAMPLER):
            raise InputError("sampler", f"is {a_or_an(type(sampler).__name__)}, which has no per-step noise hook",
                             f"connect {WORKS_WITH}; wrap the result in ZSVR Early Stop afterwards if needed")
        frames = None if image is None else video_frames(image, "image")
        cuts = check_shot_cuts(shot_cuts)
        return io.NodeOutput(SharedNoise(noise_seed), NoiseSharingSampler(sampler, noise_seed, lam, frames, cuts))
