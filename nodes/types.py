"""Socket types the pack declares. ``ZSVR_INVERSION`` is declared here and only here."""

from comfy_api.latest import io

Inversion = io.Custom("ZSVR_INVERSION")
"""An inverted latent: what ``ZSVR_DDPMInvert`` makes and ``ZSVR_InversionSampler`` replays."""

CATEGORY = "ZSVR"
