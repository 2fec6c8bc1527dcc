"""ZVRD's short-long-range temporal attention (eq. 5-7) as a MODEL patch: the engine of ``ZSVR_SLRTemporalAttention``.

ZVRD (Cao, Yue, Liu, Yang, AAAI 2025) replaces the self-attention of an image
U-Net's decoder, which denoises a video as a batch of frames, by:

* **cross-neighbour-frame attention** (eq. 5) in every decoder (output block)
  self-attention layer: frame ``i``'s keys and values come from frames ``i-1``
  and ``i+1`` concatenated along the tokens (one side at the ends), its query
  stays its own. Implemented as an ``attn1_patch`` that hands the attention the
  concatenated neighbour hidden states as its key/value input
  (``kernels.temporal_attention.neighbour_context``); K and V are linear in
  them, so this is eq. 5 exactly, on the host's own attention backend;
* **self-corrected trajectory attention** (eq. 6-7) in the decoder layers at the
  largest attention resolution, once the schedule has passed T_TA
  (``trajectory_start``): every feature pixel attends along its trajectory
  through the video with the cross-neighbour output as the query. Implemented as
  an ``attn1`` replace for those layers (ComfyUI projects q, k, v and applies
  ``to_out``; the replace runs the cross-neighbour attention with the host's
  ``optimized_attention`` and then the trajectory attention on its output).

Per frame pair and direction, each pixel's correspondence is chosen among three
candidates by the warp error of the matching guidance patch:

1. **flow**: OpenCV DIS optical flow between the guidance frames, resized to the
   feature grid;
2. **similarity**: the best-matching feature pixel of the neighbour frame
   (cosine similarity of the layer's own-frame queries);
3. **history**: the correspondence chosen at the previous step (same layer,
   same frame pair, same cond/uncond pass, same core context window).

The guidance is the optional ``image`` (the input video, one frame per latent
frame) or, without it, the previous step's x0 prediction, captured with a
post-CFG hook (``set_model_sampler_post_cfg_function``; it returns the
prediction unchanged).

Run state and clones: the patch object (:class:`SLRPatch`) is configuration
only, shared by every clone of the patched MODEL (``nodes.run_state``). The
captured x0, the history and the x0 flows live in an :class:`SLRRun` that the
``OUTER_SAMPLE`` wrapper creates at the start of every sampling run and puts in
that run's ``transformer_options``; the hooks look it up there. So a clone
(a LoRA loader or another patch node after this one) samples exactly like the
patched model, run after run. Flow of the input ``image`` is a function of the
configuration and stays cached on the patch across runs.

Choices the paper leaves open (T_TA, T_ES, lambda, patch size and trajectory
sampling are not recoverable from it); what this node does and why
----------------------------------------------------------------------------
* **T_TA** = ``trajectory_start``, a fraction of the schedule, default 0.5:
  trajectory attention is active for every step whose sigma is at or below
  ``model_sampling.percent_to_sigma(trajectory_start)`` (the later, detail
  steps; 1.0 turns it off, 0.0 runs it from the first step on).
* **Layers.** Cross-neighbour attention: all decoder self-attention layers
  (every transformer block of every output block). Trajectory attention: the
  decoder layers whose feature map is the largest one with attention (SD1.5 /
  SD2.x: output blocks 9-11 at latent resolution; SDXL: output blocks 3-5 at
  half latent resolution); found from the U-Net's Downsample/Upsample layers,
  not hard-coded.
* **Trajectory attention math** (see ``kernels.temporal_attention``): the query
  is the cross-neighbour output ``O_i(p)``; keys and values are the
  cross-neighbour outputs ``O_j(p_j)`` along the trajectory (all frames of the
  video present in the batch), per head, scaled dot product; it replaces the
  layer's attention output (cascade, as in ComfyUI-FLATTEN's flow-guided
  attention, our closest public design; no code from it is used). For a
  static video it is the identity.
* **Flow on the x0 prediction.** The x0 prediction is a latent; it is not
  decoded (the MODEL has no VAE, and decoding every step would cost more than
  the step). Flow is estimated with DIS on its RGB preview (the latent format's
  ``latent_rgb_factors``, as ComfyUI's previews do; mean of channels where a
  format has none), upscaled so the short side is about 256 px (at most 8x)
  because DIS is unreliable on 64 px images. Flow from ``image`` is estimated
  once at the image's resolution and cached.
* **Patch size.** With ``image``: ``max(8, footprint)`` image pixels, i.e. the
  8x8 patch of the paper, which is exactly one latent pixel's footprint for an
  8x VAE at latent resolution. Without it the patch is measured on the x0
  latent itself (its 4+ channels carry more than an RGB preview):
  ``max(3, footprint)`` latent pixels, because one latent pixel *is* the
  paper's 8x8 image patch but a 1x1 comparison is too noisy; 3x3 adds one
  latent pixel of context on each side.
* **Trajectory sampling.** Nearest pixel: correspondences are token indices
  (flow rounded, clamped into the grid), trajectories chained through them.
* **No flow source.** At the very first step of a run with no ``image`` there
  is no previous x0 yet: that step uses cross-neighbour attention only (no
  warning; it is expected). If later steps still have no source (a guider
  that bypasses ComfyUI's CFG function, so no x0 is captured), or OpenCV's
  flow fails, the node falls back (to cross-neighbour attention, or to the
  similarity and history candidates) and logs a warning once.

Which batch rows are which frames is read at every call (``frame_layout``,
shared with ``ZSVR_SWCFA``): cond/uncond chunks, ``frames_per_video``, core
context windows (dim 0). Frames never mix across videos or chunks. Under
core context windows (dim 0) a window's rows are frames of the whole clip:
the neighbours are the window's, the trajectories read the input video (or
the whole clip's x0 prediction, which the post-CFG hook sees after the
windows are fused) at the window's frame indices, and the history (the
previous step's choice) is kept per window: a frame pair that two
overlapping windows share has one history in each. Windows on a spatial axis
cut every frame and are refused by trajectory attention.

Shot cuts (``shot_cuts``, from ``ZSVR_LoadVideo``, one per latent frame): every
shot is a video of its own in the batch layout (``frame_layout.batch_layout``'s
``shot_starts``), so a shot's first frame takes only its next frame as a
neighbour (and its last only its previous), and trajectories end at the cut;
this holds inside a core context window that straddles a cut too. Each shot
then gets exactly the attention it gets as a video of its own.
"""

from __future__ import annotations

import logging
import math

import torch

from ...kernels import frame_layout as fl
from ...kernels import optical_flow as of
from ...kernels import temporal_attention as ta
from ..errors import InputError
from .. import run_state
from ..frame_layout import (
    cached_plan,
    call_layout,
    check_core_sampler_windows,
    current_sigma,
    gated_frame_kv,
    spatial_window,
)

log = logging.getLogger("zsvr")

WHO = "ZSVR SLR temporal attention"
IMAGE_PATCH = 8
LATENT_PATCH = 3
DIS_SHORT_SIDE = 256
DIS_MAX_SCALE = 8
IMAGE_FLOW_ENTRIES = 4096  # input-video flow pairs kept on a patch (indices, a few KB each)


class SLRRun:
    """One sampling run's state: the captured x0 prediction, the chosen correspondences and the x0 flows."""

    def __init__(self):
        self.x0: torch.Tensor | None = None  # the latest x0 prediction, on the model's device
        self.x0_cpu: torch.Tensor | None = None  # the same in float32 on the CPU: the flow source (DIS runs there)
        self.x0_version = 0
        self.x0_rgb: torch.Tensor | None = None  # its preview for DIS, made when first needed
        self.x0_flows: dict = {}  # (a, b, grid) -> flow candidates of the current x0 version
        self.image_flows_on: dict = {}  # (a, b, grid, device) -> the input video's flow candidates on the device
        self.history: dict = {}  # (block, block_index, cond/uncond, a, b, grid) -> (a->b, b->a) chosen last
        self.image_on: tuple = (None, {})  # (device, {frame: input-video frame on the device}) for the current window
        self.first_sigma: tuple | None = None  # (sample_sigmas, its first value): read once per run
        self.warned: set = set()

    def capture(self, denoised: torch.Tensor) -> None:
        self.x0 = denoised.detach().clone()
        self.x0_cpu = self.x0.to("cpu", torch.float32)  # once per step, outside the attention layers
        self.x0_version += 1
        self.x0_rgb = None


class SLRPatch(run_state.Config):
    """The configuration of one patched MODEL: the attn1 patch, the trajectory replace, the x0 capture and the
    OUTER_SAMPLE wrapper that starts each run's :class:`SLRRun`. Shared by every clone (see the module docstring)."""

    def __init__(self, frames_per_video: int, decoder_blocks: frozenset, gate=None,
                 trajectory_sigma: float | None = None, image: torch.Tensor | None = None, latent_rgb=None,
                 shot_cuts=None):
        self.frames_per_video = int(frames_per_video)
        self.shot_cuts = shot_cuts  # kernels.shot_cuts.ShotCuts or None: frames of the latent batch, one to one
        self.shot_starts = tuple(shot_cuts.cuts) if shot_cuts is not None else ()
        self.decoder_blocks = frozenset(decoder_blocks)
        self.gate = gate
        self.trajectory_sigma = trajectory_sigma
        self.image = image  # [F, 3, H, W] float32 0..1 on the CPU, or None
        self.latent_rgb = latent_rgb  # (factors [C, 3], bias [3] | None) or None
        self.key = run_state.new_key("slr")
        # caches that are functions of the configuration only
        self._plans: dict = {}
        # (a, b, grid) -> flow candidates of the input video (token indices on the CPU), kept across runs; device
        # copies live in the run state. Bounded: a long clip has one entry per neighbouring pair and grid.
        self._image_flows = run_state.BoundedCache(IMAGE_FLOW_ENTRIES)

    # -- the run ----------------------------------------------------------------------------------------------
    def outer_sample(self, executor, *args, **kwargs):
        """OUTER_SAMPLE wrapper: a fresh :class:`SLRRun` for the run; a mismatched ``image`` is refused first."""
        latent = kwargs.get("latent_image", args[1] if len(args) > 1 else None)
        if self.image is not None and isinstance(latent, torch.Tensor):
            check_image_frames(self.image.shape[0], latent.shape[0])
        if self.shot_cuts is not None and isinstance(latent, torch.Tensor):
            check_shot_frames(self.shot_cuts.frames, latent.shape[0])
        check_core_sampler_windows(kwargs.get("sampler", args[2] if len(args) > 2 else None),
                                   run_state.run_options(executor), latent,
                                   kwargs.get("sigmas", args[3] if len(args) > 3 else None), WHO)
        state = SLRRun()
        with run_state.run_with(executor, self.key, state):
            options = run_state.run_options(executor) or {}
            run_state.notify(options.get("transformer_options"), "slr.run", patch=self, state=state)
            return executor(*args, **kwargs)

    def state(self, extra_options) -> SLRRun:
        """The run's state; outside a sampling run (no OUTER_SAMPLE) a fresh one for this call only."""
        return run_state.state_of(extra_options, self.key) or SLRRun()

    def capture_x0(self, args):
        """Post-CFG hook: remember the step's x0 prediction (the guidance without ``image``); returns it unchanged."""
        denoised = args["denoised"]
        state = run_state.post_cfg_state(args, self.key)
        if state is not None:
            state.capture(denoised)
        return denoised

    @staticmethod
    def _warn_once(state: SLRRun, key: str, message: str) -> None:
        if key not in state.warned:
            state.warned.add(key)
            log.warning("%s: %s", WHO, message)

    # -- eq. 5: the attn1 patch -----------------------------------------------------------------------------
    def _in_decoder(self, extra_options) -> bool:
        block = extra_options.get("block")
        return block is not None and block[0] == "output" and block[1] in self.decoder_blocks

    def plan(self, rows: int, extra_options, device) -> ta.NeighbourPlan | None:
        def make() -> ta.NeighbourPlan:
            layout = call_layout(rows, extra_options, self.frames_per_video, who=WHO, shot_starts=self.shot_starts)
            return ta.plan_neighbours(layout.video, layout.position)

        return cached_plan(self._plans, rows, extra_options, device, make)

    def __call__(self, n, context_attn1, value_attn1, extra_options):
        if not self._in_decoder(extra_options):
            return n, context_attn1, value_attn1
        patched = gated_frame_kv(n, context_attn1, value_attn1, extra_options, self.gate, self.plan,
                                 ta.neighbour_context)
        if patched is None:
            return n, context_attn1, value_attn1
        run_state.notify(extra_options, "slr.neighbour")
        return patched

    # -- eq. 6-7: the attn1 replace of the largest-resolution decoder layers --------------------------------
    def replace(self, q, k, v, extra_options):
        from comfy.ldm.modules import attention

        heads = extra_options["n_heads"]
        out = attention.optimized_attention(q, k, v, heads, attn_precision=extra_options.get("attn_precision"),
                                            transformer_options=extra_options)
        if not self.trajectory_active(extra_options):
            return out
        return self.trajectory(q, out, extra_options)

    def trajectory_active(self, extra_options) -> bool:
        if self.trajectory_sigma is None:
            return False
        if self.gate is not None and not self.gate(extra_options):
            return False
        sigma = current_sigma(extra_options)
        return sigma is not None and sigma <= self.trajectory_sigma

    def trajectory(self, q: torch.Tensor, o: torch.Tensor, extra_options) -> torch.Tensor:
        """Eq. 6-7 on the cross-neighbour output ``o`` ``[rows, T, inner]`` of one layer call."""
        rows, tokens, _ = o.shape
        grid = ta.feature_grid(tokens, extra_options.get("activations_shape"))
        if grid is None:
            return o
        spatial = spatial_window(extra_options)
        if spatial is not None:
            raise InputError("model", f"runs core context windows on dim {spatial[0]}, which cut every frame into "
                             "strips; trajectory attention follows pixels through whole frames",
                             "set the Context Windows node's dim to 0 (the frames of the batch), or "
                             "trajectory_start to 1 (off)")
        state = self.state(extra_options)
        observer = run_state.observer_of(extra_options)
        layout = call_layout(rows, extra_options, self.frames_per_video, who=WHO, shot_starts=self.shot_starts)
        guide = self._guidance(state, extra_options, o.device, grid, len(set(layout.frame)))
        if guide is None:
            run_state.notify(extra_options, "slr.fallback")
            return o
        kind, frame_of, patch, n_frames = guide
        heads = extra_options["n_heads"]
        block = tuple(extra_options.get("block", ()))
        block_index = extra_options.get("block_index", 0)
        # the history is a per-step cache: under core context windows each window keeps its own choices
        window = () if layout.window is None else (layout.window,)
        out = o
        for chunk, members in fl.video_runs(layout):
            if len(members) < 2:
                continue
            frames = [layout.frame[r] for r in members]
            if max(frames) >= n_frames:
                raise InputError("image", f"has {n_frames} frames but the latent batch has frame {max(frames)}",
                                 "connect the video the latent was encoded from, one frame per latent frame")
            forward, backward = [], []
            for s in range(len(members) - 1):
                ra, rb = members[s], members[s + 1]
                a, b = frames[s], frames[s + 1]
                key = (block, block_index, layout.chunk_values[chunk], a, b, grid) + window
                flows = self._flows(state, kind, a, b, grid, o.device)
                sim = ta.similarity_targets(q[ra], q[rb])
                chosen, index, names = ta.select_correspondences(frame_of(a), frame_of(b), grid, patch, sim,
                                                                 flow=flows, history=state.history.get(key))
                if observer is not None:  # statistics read the choices back to the host: debug only
                    counts = {name: 0 for name in names}
                    for which in index:
                        for name, c in zip(names, torch.bincount(which, minlength=len(names)).tolist()):
                            counts[name] += c
                    observer("slr.chosen", {"counts": counts, "key": key})
                state.history[key] = chosen
                forward.append(chosen[0])
                backward.append(chosen[1])
            result = ta.trajectory_attention(o[members], forward, backward, heads)
            if out is o:
                out = o.clone()
            out[members] = result
        run_state.notify(extra_options, "slr.trajectory")
        return out

    # -- guidance and flow ----------------------------------------------------------------------------------
    def _guidance(self, state: SLRRun, extra_options, device, grid, frames_in_call: int = 1):
        """``(kind, frame_of, patch, frame count)`` for the warp errors, or None (no source yet).

        ``frame_of(g)`` is guidance frame ``g`` ``[C, H, W]`` float32 on ``device``. The input video is moved to
        the device a frame at a time, and only the frames of the current call (a context window) are kept there.
        """
        if self.image is not None:
            where, kept = state.image_on
            if where != str(device):
                where, kept = str(device), {}
                state.image_on = (where, kept)
            image = self.image

            def frame_of(g: int) -> torch.Tensor:
                if g not in kept:
                    if len(kept) >= max(8, 2 * frames_in_call):
                        kept.clear()
                    kept[g] = image[g].to(device)
                return kept[g]

            footprint = image.shape[-2] / grid[0]
            return ("image", frame_of, max(IMAGE_PATCH, int(round(footprint))), image.shape[0])
        if state.x0 is None:
            sample_sigmas = extra_options.get("sample_sigmas")
            sigma = current_sigma(extra_options)
            first = (sample_sigmas is not None and sigma is not None and len(sample_sigmas) > 0
                     and math.isclose(_first_sigma(state, sample_sigmas), sigma, rel_tol=1e-5))
            if not first:
                self._warn_once(state, "no_source", "no flow source: no 'image' is connected and no x0 prediction "
                                "was captured (the guider does not run ComfyUI's post-CFG hook); falling back to "
                                "cross-neighbour attention. Connect the input video to 'image' to enable "
                                "trajectory attention.")
            return None
        x0 = state.x0
        if x0.dim() != 4:
            self._warn_once(state, "x0_shape", f"the x0 prediction has shape {tuple(x0.shape)}, not "
                            "[frames, C, H, W]; falling back to cross-neighbour attention")
            return None
        frames = x0.to(device=device, dtype=torch.float32)
        footprint = frames.shape[-2] / grid[0]
        return (("x0", state.x0_version), lambda g: frames[g], max(LATENT_PATCH, int(round(footprint))),
                frames.shape[0])

    def _flows(self, state: SLRRun, kind, a: int, b: int, grid, device):
        """Flow candidates ``(targets a->b, targets b->a)``: token indices on the feature grid, on ``device``;
        None when flow is unavailable. Estimated at the guidance's resolution (on the CPU, from the input video or
        the x0 preview the post-CFG hook downloaded), resized to the grid at once and cached as indices only
        (on the patch for the input video; per step in the run state for the x0 preview)."""
        key = (a, b, grid)

        def estimate():
            try:
                source = self.image if kind == "image" else self._x0_preview(state)
                est = of.get_flow_estimator("dis")
                flow = est(torch.stack([source[a], source[b]]), torch.stack([source[b], source[a]])).float()
            except Exception as exc:  # OpenCV missing or failing: keep the other candidates
                self._warn_once(state, "flow_failed", f"optical flow failed ({exc!r}); trajectory attention uses "
                                "the feature-similarity and history candidates only")
                return None
            targets = ta.flow_targets(of.resize_flow(flow, grid))
            return targets[0], targets[1]

        if kind == "image":
            entry = self._image_flows.get(key, estimate)
            on_device = state.image_flows_on
        else:
            if state.x0_flows.get("version") != kind[1]:
                state.x0_flows = {"version": kind[1]}
            if key not in state.x0_flows:
                state.x0_flows[key] = estimate()
            entry = state.x0_flows[key]
            on_device = state.x0_flows
        if entry is None or entry[0].device == torch.device(device):
            return entry
        dkey = key + (str(device),)
        if dkey not in on_device:
            on_device[dkey] = (entry[0].to(device), entry[1].to(device))
        return on_device[dkey]

    def _x0_preview(self, state: SLRRun) -> torch.Tensor:
        """The x0 prediction as images for DIS: ``[F, 3 or 1, H*u, W*u]`` in 0..1 on the CPU (cached per step)."""
        if state.x0_rgb is None:
            factors, bias = self.latent_rgb if self.latent_rgb is not None else (None, None)
            state.x0_rgb = ta.latent_preview(state.x0_cpu, factors, bias, DIS_SHORT_SIDE, DIS_MAX_SCALE)
        return state.x0_rgb


def _first_sigma(state: SLRRun, sample_sigmas: torch.Tensor) -> float:
    """The run's first sigma (one read of ``sample_sigmas`` per run, kept in the run state)."""
    if state.first_sigma is None or state.first_sigma[0] is not sample_sigmas:
        state.first_sigma = (sample_sigmas, float(sample_sigmas[0]))
    return state.first_sigma[1]


def check_image_frames(image_frames: int, latent_frames: int) -> None:
    if image_frames != latent_frames:
        raise InputError("image", f"has {image_frames} frames but the latent batch has {latent_frames}",
                         "connect the video the latent was encoded from (one IMAGE frame per latent frame), "
                         "or leave 'image' empty to estimate flow from the model's own x0 prediction")


def check_shot_frames(cut_frames: int, latent_frames: int) -> None:
    """The shot cuts must index the latent batch's frames one to one (an image U-Net: one latent per frame)."""
    if cut_frames != latent_frames:
        raise InputError("shot_cuts", f"are the cuts of a {cut_frames}-frame video but the latent batch has "
                         f"{latent_frames} frames", "connect the shot_cuts of the video the latent was encoded from "
                         "(the same Load Video settings), one frame per latent frame")
