"""``ZSVR_SLRTemporalAttention``: ZVRD's short-long-range temporal attention as a patched MODEL clone.

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
   same frame pair, same cond/uncond pass).

The guidance is the optional ``image`` (the input video, one frame per latent
frame) or, without it, the previous step's x0 prediction, captured with a
post-CFG hook (``set_model_sampler_post_cfg_function``; it returns the
prediction unchanged). State (captured x0, history, flow cache) is reset at
the start of every sampling run by an ``OUTER_SAMPLE`` wrapper.

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
context windows (dim 0). Frames never mix across videos or chunks.
"""

from __future__ import annotations

import collections
import logging
import math

import torch

import comfy.patcher_extension
from comfy_api.latest import io

from ..kernels import optical_flow as of
from ..kernels import temporal_attention as ta
from ..kernels.errors import InputError
from .adapters.sd_unet import unet_adapter_for
from .frame_layout import (
    FRAMES_PER_VIDEO_TOOLTIP,
    batch_layout,
    current_sigma,
    layout_key,
    map_frame_kv,
    schedule_gate,
    schedule_window_inputs,
)
from .types import CATEGORY

log = logging.getLogger("zsvr")

PURPOSE = "SLR temporal attention"
WHO = "ZSVR SLR temporal attention"
WRAPPER_KEY = "zsvr_slr_temporal_attention"
IMAGE_PATCH = 8
LATENT_PATCH = 3
DIS_SHORT_SIDE = 256


class SLRPatch:
    """Everything the patched clone calls: the attn1 patch, the trajectory replace, the x0 capture, the run reset."""

    def __init__(self, frames_per_video: int, decoder_blocks: frozenset, gate=None,
                 trajectory_sigma: float | None = None, image: torch.Tensor | None = None, latent_rgb=None):
        self.frames_per_video = int(frames_per_video)
        self.decoder_blocks = frozenset(decoder_blocks)
        self.gate = gate
        self.trajectory_sigma = trajectory_sigma
        self.image = image  # [F, 3, H, W] float32 0..1 on the CPU, or None
        self.latent_rgb = latent_rgb  # (factors [C, 3], bias [3] | None) or None
        self.stats: collections.Counter = collections.Counter()
        self._plans: dict = {}
        self._warned: set = set()
        self._image_flows: dict = {}  # (a, b, grid) -> flow candidates (token indices), kept across runs
        self._image_on: tuple = (None, {})  # (device, {frame: frame on the device}) for the current window
        self.reset()

    # -- run state ------------------------------------------------------------------------------------------
    def reset(self) -> None:
        self.x0 = None
        self.x0_version = 0
        self._history: dict = {}
        self._x0_flows: dict = {}
        self._x0_rgb = None

    def outer_sample(self, executor, *args, **kwargs):
        """OUTER_SAMPLE wrapper: fresh state for every run; a mismatched ``image`` is refused before any step."""
        latent = kwargs.get("latent_image", args[1] if len(args) > 1 else None)
        if self.image is not None and isinstance(latent, torch.Tensor) and latent.dim() == 4:
            check_image_frames(self.image.shape[0], latent.shape[0])
        self.reset()  # only at the start: what the last run chose stays readable until the next one
        return executor(*args, **kwargs)

    def capture_x0(self, args):
        """Post-CFG hook: remember the step's x0 prediction (the guidance without ``image``); returns it unchanged."""
        denoised = args["denoised"]
        self.x0 = denoised.detach().clone()
        self.x0_version += 1
        self._x0_rgb = None
        return denoised

    def _warn_once(self, key: str, message: str) -> None:
        if key not in self._warned:
            self._warned.add(key)
            log.warning("%s: %s", WHO, message)

    # -- eq. 5: the attn1 patch -----------------------------------------------------------------------------
    def _in_decoder(self, extra_options) -> bool:
        block = extra_options.get("block")
        return block is not None and block[0] == "output" and block[1] in self.decoder_blocks

    def plan(self, rows: int, extra_options, device) -> ta.NeighbourPlan | None:
        key = layout_key(rows, extra_options, device)
        if key not in self._plans:
            layout = batch_layout(rows, extra_options, self.frames_per_video, who=WHO)
            plan = ta.plan_neighbours(layout.video, layout.position)
            if len(self._plans) > 64:
                self._plans.clear()
            self._plans[key] = None if plan.is_identity else plan.to(device)
        return self._plans[key]

    def __call__(self, n, context_attn1, value_attn1, extra_options):
        if not self._in_decoder(extra_options):
            return n, context_attn1, value_attn1
        if self.gate is not None and not self.gate(extra_options):
            return n, context_attn1, value_attn1
        rows = n.shape[0]
        plan = self.plan(rows, extra_options, n.device)
        if plan is None:
            return n, context_attn1, value_attn1
        context, value = map_frame_kv(context_attn1, value_attn1, rows,
                                      lambda h: ta.neighbour_context(h, plan))
        self.stats["neighbour"] += 1
        return n, context, value

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
        layout = batch_layout(rows, extra_options, self.frames_per_video, who=WHO)
        guide = self._guidance(extra_options, o.device, grid, len(set(layout.frame)))
        if guide is None:
            self.stats["fallback"] += 1
            return o
        kind, frame_of, patch, n_frames = guide
        groups: dict[tuple, list[int]] = {}
        for r in range(rows):
            groups.setdefault((layout.chunk[r], layout.video[r]), []).append(r)
        heads = extra_options["n_heads"]
        block = tuple(extra_options.get("block", ()))
        block_index = extra_options.get("block_index", 0)
        out = o
        for (chunk, _), members in groups.items():
            if len(members) < 2:
                continue
            members.sort(key=lambda r: layout.position[r])
            frames = [layout.frame[r] for r in members]
            if max(frames) >= n_frames:
                raise InputError("image", f"has {n_frames} frames but the latent batch has frame {max(frames)}",
                                 "connect the video the latent was encoded from, one frame per latent frame")
            forward, backward = [], []
            for s in range(len(members) - 1):
                ra, rb = members[s], members[s + 1]
                a, b = frames[s], frames[s + 1]
                key = (block, block_index, layout.chunk_values[chunk], a, b, grid)
                flows = self._flows(kind, a, b, grid, o.device)
                chosen = []
                sim = ta.similarity_targets(q[ra], q[rb])
                history = self._history.get(key)
                for direction, (ga, gb) in enumerate(((a, b), (b, a))):
                    cands, names = [], []
                    if flows is not None:
                        cands.append(flows[direction])
                        names.append("flow")
                    if history is not None:
                        cands.append(history[direction])
                        names.append("history")
                    cands.append(sim[direction])
                    names.append("similarity")
                    stacked = torch.stack(cands)
                    errors = ta.patch_errors(frame_of(ga), frame_of(gb), stacked, grid, patch)
                    pick, index = ta.select_targets(stacked, errors)
                    counts = torch.bincount(index, minlength=len(names)).tolist()
                    for name, c in zip(names, counts):
                        self.stats[f"chosen_{name}"] += c
                    chosen.append(pick)
                self._history[key] = (chosen[0], chosen[1])
                forward.append(chosen[0])
                backward.append(chosen[1])
            result = ta.trajectory_attention(o[members], forward, backward, heads)
            if out is o:
                out = o.clone()
            out[members] = result
        self.stats["trajectory"] += 1
        return out

    # -- guidance and flow ----------------------------------------------------------------------------------
    def _guidance(self, extra_options, device, grid, frames_in_call: int = 1):
        """``(kind, frame_of, patch, frame count)`` for the warp errors, or None (no source yet).

        ``frame_of(g)`` is guidance frame ``g`` ``[C, H, W]`` float32 on ``device``. The input video is moved to
        the device a frame at a time, and only the frames of the current call (a context window) are kept there.
        """
        if self.image is not None:
            where, kept = self._image_on
            if where != str(device):
                where, kept = str(device), {}
                self._image_on = (where, kept)
            image = self.image

            def frame_of(g: int) -> torch.Tensor:
                if g not in kept:
                    if len(kept) >= max(8, 2 * frames_in_call):
                        kept.clear()
                    kept[g] = image[g].to(device)
                return kept[g]

            footprint = image.shape[-2] / grid[0]
            return ("image", frame_of, max(IMAGE_PATCH, int(round(footprint))), image.shape[0])
        if self.x0 is None:
            sample_sigmas = extra_options.get("sample_sigmas")
            sigma = current_sigma(extra_options)
            first = (sample_sigmas is not None and sigma is not None and len(sample_sigmas) > 0
                     and math.isclose(float(sample_sigmas[0]), sigma, rel_tol=1e-5))
            if not first:
                self._warn_once("no_source", "no flow source: no 'image' is connected and no x0 prediction was "
                                "captured (the guider does not run ComfyUI's post-CFG hook); falling back to "
                                "cross-neighbour attention. Connect the input video to 'image' to enable "
                                "trajectory attention.")
            return None
        x0 = self.x0
        if x0.dim() != 4:
            self._warn_once("x0_shape", f"the x0 prediction has shape {tuple(x0.shape)}, not [frames, C, H, W]; "
                            "falling back to cross-neighbour attention")
            return None
        frames = x0.to(device=device, dtype=torch.float32)
        footprint = frames.shape[-2] / grid[0]
        return (("x0", self.x0_version), lambda g: frames[g], max(LATENT_PATCH, int(round(footprint))),
                frames.shape[0])

    def _flows(self, kind, a: int, b: int, grid, device):
        """Flow candidates ``(targets a->b, targets b->a)``: token indices on the feature grid, on ``device``;
        None when flow is unavailable. Estimated at the guidance's resolution, resized to the grid at once and
        cached as indices only (across runs for the input video; per step for the x0 preview)."""
        if kind == "image":
            cache = self._image_flows
        else:
            if self._x0_flows.get("version") != kind[1]:
                self._x0_flows = {"version": kind[1]}
            cache = self._x0_flows
        key = (a, b, grid)
        if key not in cache:
            try:
                source = self.image if kind == "image" else self._x0_preview()
                est = of.get_flow_estimator("dis")
                flow = est(torch.stack([source[a], source[b]]), torch.stack([source[b], source[a]])).float()
            except InputError:
                raise
            except Exception as exc:  # OpenCV missing or failing: keep the other candidates
                self._warn_once("flow_failed", f"optical flow failed ({exc!r}); trajectory attention uses the "
                                "feature-similarity and history candidates only")
                cache[key] = None
                return None
            targets = ta.flow_targets(of.resize_flow(flow, grid))
            cache[key] = (targets[0], targets[1])
        entry = cache[key]
        if entry is None:
            return None
        if entry[0].device != torch.device(device):
            entry = (entry[0].to(device), entry[1].to(device))
            cache[key] = entry
        return entry

    def _x0_preview(self) -> torch.Tensor:
        """The x0 prediction as images for DIS: ``[F, 3 or 1, H*u, W*u]`` in 0..1 on the CPU (cached per step)."""
        if self._x0_rgb is not None:
            return self._x0_rgb
        x0 = self.x0.detach().to("cpu", torch.float32)
        rgb = None
        if self.latent_rgb is not None:
            factors, bias = self.latent_rgb
            if factors.shape[0] == x0.shape[1]:
                rgb = torch.einsum("fchw,cr->frhw", x0, factors)
                if bias is not None:
                    rgb = rgb + bias.view(1, 3, 1, 1)
                rgb = ((rgb + 1.0) / 2.0).clamp(0.0, 1.0)
        if rgb is None:
            gray = x0.mean(dim=1, keepdim=True)
            lo, hi = gray.amin(), gray.amax()
            rgb = (gray - lo) / (hi - lo).clamp_min(1e-6)
        h, w = rgb.shape[-2:]
        up = max(1, min(8, math.ceil(DIS_SHORT_SIDE / max(1, min(h, w)))))
        if up > 1:
            rgb = torch.nn.functional.interpolate(rgb, scale_factor=up, mode="bilinear", align_corners=False)
            rgb = rgb.clamp(0.0, 1.0)
        self._x0_rgb = rgb
        return rgb


def check_image_frames(image_frames: int, latent_frames: int) -> None:
    if image_frames != latent_frames:
        raise InputError("image", f"has {image_frames} frames but the latent batch has {latent_frames}",
                         "connect the video the latent was encoded from (one IMAGE frame per latent frame), "
                         "or leave 'image' empty to estimate flow from the model's own x0 prediction")


def _latent_rgb(model_patcher):
    fmt = getattr(model_patcher.model, "latent_format", None)
    factors = getattr(fmt, "latent_rgb_factors", None)
    if not factors:
        return None
    bias = getattr(fmt, "latent_rgb_factors_bias", None)
    return (torch.tensor(factors, dtype=torch.float32),
            None if bias is None else torch.tensor(bias, dtype=torch.float32))


class SLRTemporalAttention(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="ZSVR_SLRTemporalAttention",
            display_name="SLR Temporal Attention (ZSVR)",
            category=f"{CATEGORY}/zvrd",
            description=(
                "ZVRD's short-long-range temporal attention for an image U-Net that denoises a video as a batch of "
                "frames: in the decoder's self-attention each frame attends to its previous and next frame "
                "(cross-neighbour attention), and, from trajectory_start on, the largest decoder layers attend "
                "along per-pixel motion trajectories chosen by optical flow, feature similarity or the previous "
                "step's choice, whichever matches best. Supported: SD1.5, SD2.x, SDXL."
            ),
            inputs=[
                io.Model.Input("model", tooltip="The image U-Net (SD1.5, SD2.x or SDXL) to patch; a patched copy "
                                                "is returned and the input model is left unchanged."),
                io.Float.Input("trajectory_start", default=0.5, min=0.0, max=1.0, step=0.01,
                               tooltip="T_TA: trajectory attention is on from this point of the schedule to the end "
                                       "(0 = every step, 0.5 = the second half, 1 = off; cross-neighbour attention "
                                       "runs at every step). The paper's T_TA is not published; 0.5 is our pick."),
                io.Int.Input("frames_per_video", default=0, min=0, max=1_000_000,
                             tooltip=FRAMES_PER_VIDEO_TOOLTIP),
                io.Image.Input("image", optional=True,
                               tooltip="Optional: the input video (one frame per latent frame). Its optical flow "
                                       "and 8x8 patches guide the trajectories. Without it they come from the "
                                       "model's own x0 prediction of the previous step."),
                *schedule_window_inputs("Apply SLR attention"),
            ],
            outputs=[io.Model.Output(display_name="model")],
        )

    @classmethod
    def execute(cls, model, trajectory_start, frames_per_video, image=None, start_percent=0.0,
                end_percent=1.0) -> io.NodeOutput:
        adapter = unet_adapter_for(model, PURPOSE)
        if not (0.0 <= trajectory_start <= 1.0):
            raise InputError("trajectory_start", f"is {trajectory_start}",
                             "use a fraction of the schedule between 0 (every step) and 1 (off)")
        if frames_per_video < 0:
            raise InputError("frames_per_video", f"is {frames_per_video}",
                             "use 0 (the whole batch is one video) or the frame count of each video")
        if start_percent > end_percent:
            raise InputError("start_percent", f"({start_percent}) is after end_percent ({end_percent})",
                             "make start_percent at most end_percent")
        frames = None
        if image is not None:
            frames = of.as_nchw(image, "image").detach().to("cpu", torch.float32).contiguous()
            if frames.shape[1] == 1:
                frames = frames.expand(-1, 3, -1, -1).contiguous()
        layers = adapter.self_attention_layers(model)
        decoder = [layer for layer in layers if layer[0] == "output"]
        if not decoder:
            raise InputError("model", "has no self-attention in its decoder (output blocks)",
                             "use an SD1.5, SD2.x or SDXL U-Net")
        top = min(layer[3] for layer in decoder)
        trajectory_layers = [layer for layer in decoder if layer[3] == top]
        sampling = model.get_model_object("model_sampling")
        trajectory_sigma = None if trajectory_start >= 1.0 else float(sampling.percent_to_sigma(trajectory_start))
        patch = SLRPatch(frames_per_video, frozenset(layer[1] for layer in decoder),
                         gate=schedule_gate(model, start_percent, end_percent), trajectory_sigma=trajectory_sigma,
                         image=frames, latent_rgb=_latent_rgb(model))
        patched = model.clone()
        adapter.install_attn1_patch(patched, patch)
        if trajectory_sigma is not None:
            for group, block_id, block_index, _ in trajectory_layers:
                adapter.install_attn1_replace(patched, patch.replace, group, block_id, block_index)
            if frames is None:
                patched.set_model_sampler_post_cfg_function(patch.capture_x0)
        patched.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.OUTER_SAMPLE, WRAPPER_KEY, patch.outer_sample)
        return io.NodeOutput(patched)
