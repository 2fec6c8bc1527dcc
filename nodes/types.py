"""Socket types the pack declares. ``ZSVR_INVERSION`` and ``ZSVR_SHOT_CUTS`` are declared here and only here."""

from comfy_api.latest import io

Inversion = io.Custom("ZSVR_INVERSION")
"""An inverted latent: what ``ZSVR_DDPMInvert`` makes and ``ZSVR_InversionSampler`` replays."""

ShotCuts = io.Custom("ZSVR_SHOT_CUTS")
"""Where a loaded clip's shots change: a ``kernels.shot_cuts.ShotCuts`` (the frames where a new shot starts and the
clip's frame count). ``ZSVR_LoadVideo`` makes it; the flow-based nodes (noise sharing, SLR temporal attention,
temporal consistency guidance) take it so that they never warp, share or blend across a cut."""

CATEGORY = "ZSVR"
