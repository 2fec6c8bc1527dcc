"""Hard cuts in a clip: where one shot ends and the next begins, by a documented frame-difference rule.

No library among the pack's dependencies finds shot cuts, so this module implements its own rule (a
classic one from the shot-boundary literature: colour-histogram difference plus a spatial difference,
with an adaptive local threshold; e.g. Hanjalic, "Shot-boundary detection: unraveled and resolved?",
IEEE TCSVT 12(2), 2002, which argues for a threshold relative to the local distance statistics).

Signature (:func:`frame_signature`, one frame at a time, so a runner can compute it while decoding):

* a hue histogram (``HUE_BINS`` bins, each pixel weighted by its saturation, so grey pixels with an
  undefined hue do not vote), a saturation histogram and a value histogram (``SV_BINS`` bins each),
  each normalised to sum 1;
* a luma thumbnail (``THUMB x THUMB`` area means of Rec.601 luma, 0..1);

computed on the frame area-averaged to at most ``WORK_SIDE`` pixels on its longer side.

Distance between two signatures (:func:`signature_distance`, 0..1):
``d = HIST_WEIGHT * mean(TV(hue), TV(sat), TV(value)) + (1 - HIST_WEIGHT) * min(1, THUMB_GAIN * mean|dluma|)``
where ``TV(p, q) = 0.5 * sum|p - q|`` is the total-variation distance of two histograms (0 equal, 1 disjoint).
Histograms ignore where things are (robust to motion and pans); the thumbnail sees layout changes between
shots of similar colours.

Rule (:func:`cuts_from_signatures`): with ``d[i]`` the distance between frames ``i-1`` and ``i``, a new shot
starts at frame ``i`` when

1. **peak**: ``d[i] - median(d[j] for j in i-LOCAL_WINDOW..i+LOCAL_WINDOW, j != i) > threshold``: the change is
   large *relative to its neighbours*, so steady fast motion, a camera pan or rain streaks inside a shot (which
   raise every ``d`` of the shot, not one) do not make a cut; and
2. **not a flash**: there are no frames ``a < i <= b`` with ``2 <= b - a <= FLASH_FRAMES + 1`` that match each
   other (``dist(a, b) <= FLASH_MATCH * d[i]`` and ``dist(a, b) <= threshold``): a frame or two that differ from
   their neighbours while the neighbours match each other (a camera flash, lightning, a dropped frame) is a
   transient, not a new shot. Both its edges are rejected.

``threshold`` is on the distance's 0..1 scale: higher finds fewer cuts. ``DEFAULT_THRESHOLD`` (0.25) separates
the joined real clips of the tests (cut excess 0.4 or more) from within-shot changes (excess below 0.1) with a
wide margin; 0 or less is not a threshold (callers use 0 to mean "off" and skip the kernel).

Limits (documented, tested as such): a **dissolve** or a fade spreads the change over many frames, so no single
``d[i]`` peaks and it is not found (a hard cut only); a cut between two shots of near-identical colour and layout
(the same scene from almost the same place) has a small ``d`` and can be missed; a shot of at most
``FLASH_FRAMES`` frames between two shots that match each other reads as a flash; a flash on the first or
last frame of a shot reads as a one-frame shot (its neighbours belong to different shots, so they cannot match).
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import torch

from .errors import ParameterError

HUE_BINS = 16
"""Hue histogram bins (saturation-weighted)."""
SV_BINS = 8
"""Saturation and value histogram bins each."""
THUMB = 8
"""Side of the luma thumbnail (``THUMB x THUMB`` cells)."""
WORK_SIDE = 128
"""Frames whose longer side exceeds this are first area-averaged by a whole factor down to at most it (speed:
a 720x480 frame costs about 100x less; histograms of a shrunk frame are nearly the same)."""
SIGNATURE_SIZE = HUE_BINS + 2 * SV_BINS + THUMB * THUMB
"""Length of a :func:`frame_signature`."""
HIST_WEIGHT = 0.5
"""Share of the histogram term in :func:`signature_distance` (the rest is the thumbnail term)."""
THUMB_GAIN = 4.0
"""Gain on the thumbnail's mean absolute luma difference (a difference of 0.25 already counts as complete)."""
LOCAL_WINDOW = 4
"""Neighbours each side whose median is the local baseline of the peak test."""
FLASH_FRAMES = 2
"""Longest transient (frames) the flash test rejects."""
FLASH_MATCH = 0.5
"""Frames on both sides of a transient match when their distance is at most this share of the edge's distance."""
DEFAULT_THRESHOLD = 0.25
"""Default cut threshold, on the 0..1 distance scale (higher = fewer cuts)."""


def _check_threshold(threshold) -> float:
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)):
        raise ParameterError("threshold", f"is {threshold!r} ({type(threshold).__name__})",
                             f"pass a number in (0, 1], e.g. {DEFAULT_THRESHOLD}")
    t = float(threshold)
    if not (t > 0.0 and t <= 1.0):
        raise ParameterError("threshold", f"is {threshold}",
                             f"pass a number in (0, 1] (higher finds fewer cuts; default {DEFAULT_THRESHOLD})")
    return t


def _as_float_frame(frame, name: str) -> torch.Tensor:
    if not isinstance(frame, torch.Tensor):
        raise ParameterError(name, f"is {type(frame).__name__}", "pass a torch tensor H x W x C (ComfyUI IMAGE layout)")
    if frame.dim() != 3 or frame.shape[-1] not in (1, 3, 4) or frame.shape[0] < 1 or frame.shape[1] < 1:
        raise ParameterError(name, f"has shape {tuple(frame.shape)}",
                             "pass one frame H x W x C with C = 3 (RGB), 4 (RGBA) or 1 (grey)")
    if frame.dtype == torch.uint8:
        x = frame.float() / 255.0
    elif frame.is_floating_point():
        x = frame.float()  # checked for NaN and clamped to 0..1 after shrinking (cheaper; NaN survives the mean)
    else:
        raise ParameterError(name, f"has dtype {frame.dtype}", "pass float values in 0..1 or uint8 values in 0..255")
    x = x[..., :3] if x.shape[-1] >= 3 else x.expand(-1, -1, 3)
    return x


def frame_signature(frame: torch.Tensor) -> torch.Tensor:
    """The signature of one frame: HSV histograms and a luma thumbnail (see the module docstring).

    Args:
        frame: one frame ``H x W x C`` (ComfyUI IMAGE layout): float in 0..1 (values outside are clamped) or
            uint8 0..255; ``C`` 3 (RGB), 4 (RGBA, alpha ignored) or 1 (grey).

    Returns:
        A 1-D float32 CPU tensor of ``SIGNATURE_SIZE`` values.

    Raises:
        ParameterError: naming ``frame`` (not a tensor, wrong shape or dtype, non-finite values).
    """
    x = _as_float_frame(frame, "frame").detach().to("cpu")
    factor = -(-max(x.shape[0], x.shape[1]) // WORK_SIDE)
    if factor > 1:
        x = torch.nn.functional.avg_pool2d(x.permute(2, 0, 1)[None], factor, ceil_mode=True)[0].permute(1, 2, 0)
    if not bool(torch.isfinite(x).all()):
        raise ParameterError("frame", "has NaN or infinite values", "pass a decoded frame with values in 0..1")
    x = x.clamp(0.0, 1.0)
    r, g, b = x[..., 0].reshape(-1), x[..., 1].reshape(-1), x[..., 2].reshape(-1)
    mx = torch.maximum(torch.maximum(r, g), b)
    mn = torch.minimum(torch.minimum(r, g), b)
    delta = mx - mn
    sat = torch.where(mx > 0, delta / mx.clamp_min(1e-8), torch.zeros_like(mx))
    safe = delta.clamp_min(1e-8)
    hue = torch.where(mx == r, ((g - b) / safe) % 6.0,
                      torch.where(mx == g, (b - r) / safe + 2.0, (r - g) / safe + 4.0)) / 6.0  # 0..1
    hue = torch.where(delta > 0, hue, torch.zeros_like(hue))

    def hist(values: torch.Tensor, bins: int, weights: torch.Tensor | None = None) -> torch.Tensor:
        idx = (values * bins).long().clamp(0, bins - 1)
        w = torch.ones_like(values) if weights is None else weights
        h = torch.zeros(bins, dtype=torch.float32).index_add_(0, idx, w.float())
        total = float(h.sum())
        return h / total if total > 0 else torch.full((bins,), 1.0 / bins)

    h_hue = hist(hue, HUE_BINS, sat)
    h_sat = hist(sat, SV_BINS)
    h_val = hist(mx, SV_BINS)
    luma = 0.299 * x[..., 0] + 0.587 * x[..., 1] + 0.114 * x[..., 2]
    thumb = torch.nn.functional.adaptive_avg_pool2d(luma[None, None], (THUMB, THUMB)).reshape(-1)
    return torch.cat([h_hue, h_sat, h_val, thumb.float()]).to(torch.float32)


def _check_signatures(signatures) -> torch.Tensor:
    if isinstance(signatures, torch.Tensor):
        sig = signatures
    else:
        try:
            items = list(signatures)
        except TypeError:
            raise ParameterError("signatures", f"is {type(signatures).__name__}",
                                 "pass a T x D tensor or a sequence of frame_signature() results") from None
        if not items:
            return torch.zeros(0, SIGNATURE_SIZE)
        if not all(isinstance(s, torch.Tensor) and s.dim() == 1 for s in items):
            raise ParameterError("signatures", "holds something other than 1-D tensors",
                                 "pass the results of frame_signature(), one per frame")
        if any(s.shape[0] != SIGNATURE_SIZE for s in items):
            raise ParameterError("signatures", f"holds signatures not of length {SIGNATURE_SIZE}",
                                 "pass the results of frame_signature(), one per frame")
        sig = torch.stack([s.detach().to("cpu", torch.float32) for s in items])
    if sig.dim() != 2 or sig.shape[1] != SIGNATURE_SIZE:
        raise ParameterError("signatures", f"has shape {tuple(sig.shape)}",
                             f"pass T x {SIGNATURE_SIZE} (one frame_signature() per frame)")
    sig = sig.detach().to("cpu", torch.float32)
    if not bool(torch.isfinite(sig).all()):
        raise ParameterError("signatures", "has NaN or infinite values", "pass the results of frame_signature()")
    return sig


def signature_distance(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Distance (0..1) between signatures ``a`` and ``b`` (``[..., SIGNATURE_SIZE]``, broadcast); see the module
    docstring for the formula."""
    h1, s1, v1 = HUE_BINS, HUE_BINS + SV_BINS, HUE_BINS + 2 * SV_BINS
    diff = (a - b).abs()
    tv = (diff[..., :h1].sum(-1) + diff[..., h1:s1].sum(-1) + diff[..., s1:v1].sum(-1)) * 0.5 / 3.0
    thumb = (diff[..., v1:].mean(-1) * THUMB_GAIN).clamp(max=1.0)
    return HIST_WEIGHT * tv + (1.0 - HIST_WEIGHT) * thumb


def consecutive_distances(signatures) -> torch.Tensor:
    """``d`` of length T (``d[0] = 0``; ``d[i]`` the distance between frames ``i-1`` and ``i``).

    Args:
        signatures: a ``T x SIGNATURE_SIZE`` tensor or a sequence of :func:`frame_signature` results.
    """
    sig = _check_signatures(signatures)
    d = torch.zeros(sig.shape[0])
    if sig.shape[0] > 1:
        d[1:] = signature_distance(sig[1:], sig[:-1])
    return d


def cut_scores(signatures) -> torch.Tensor:
    """Per frame, the peak-test excess ``d[i] - local median`` (0 at frame 0): a cut needs it above the threshold.

    Useful to choose a threshold: print it for a clip and pick a value between the cuts' and the rest's.
    """
    d = consecutive_distances(signatures)
    t = d.shape[0]
    out = torch.zeros(t)
    for i in range(1, t):
        lo, hi = max(1, i - LOCAL_WINDOW), min(t - 1, i + LOCAL_WINDOW)
        neigh = [float(d[j]) for j in range(lo, hi + 1) if j != i]
        base = float(torch.tensor(neigh).median()) if neigh else 0.0
        out[i] = float(d[i]) - base
    return out


def _is_flash_edge(sig: torch.Tensor, d: torch.Tensor, i: int, threshold: float) -> bool:
    t = sig.shape[0]
    for a in range(i - 1, max(-1, i - 2 - FLASH_FRAMES), -1):
        for b in range(i, min(t, a + FLASH_FRAMES + 2)):
            if b - a < 2:
                continue
            dab = float(signature_distance(sig[a], sig[b]))
            if dab <= FLASH_MATCH * float(d[i]) and dab <= threshold:
                return True
    return False


def cuts_from_signatures(signatures: Sequence[torch.Tensor] | torch.Tensor,
                         threshold: float = DEFAULT_THRESHOLD) -> list[int]:
    """The frames where a new shot starts, from per-frame signatures (no frames needed: stream-friendly).

    Args:
        signatures: one :func:`frame_signature` per frame, in order: a ``T x SIGNATURE_SIZE`` tensor or a
            sequence of 1-D tensors.
        threshold: the peak-test threshold on the 0..1 distance scale (higher = fewer cuts), in (0, 1].

    Returns:
        Sorted frame indices ``i`` in ``1..T-1``: frame ``i`` is the first frame of a new shot. Empty for fewer
        than 2 frames.

    Raises:
        ParameterError: naming ``threshold`` (not a number in (0, 1]) or ``signatures`` (wrong shape/contents).
    """
    thr = _check_threshold(threshold)
    sig = _check_signatures(signatures)
    if sig.shape[0] < 2:
        return []
    d = consecutive_distances(sig)
    scores = cut_scores(sig)
    return [i for i in range(1, sig.shape[0])
            if float(scores[i]) > thr and not _is_flash_edge(sig, d, i, thr)]


def find_cuts(frames: torch.Tensor, threshold: float = DEFAULT_THRESHOLD) -> list[int]:
    """The frames of ``frames`` where a new shot starts (:func:`frame_signature` + :func:`cuts_from_signatures`).

    Args:
        frames: ``T x H x W x C`` (ComfyUI IMAGE; float 0..1 or uint8).
        threshold: see :func:`cuts_from_signatures`.

    Returns:
        Sorted frame indices in ``1..T-1``.

    Raises:
        ParameterError: naming ``frames`` (not a T x H x W x C tensor) or ``threshold``.
    """
    _check_threshold(threshold)
    if not isinstance(frames, torch.Tensor) or frames.dim() != 4:
        shape = tuple(frames.shape) if isinstance(frames, torch.Tensor) else type(frames).__name__
        raise ParameterError("frames", f"is {shape}", "pass a T x H x W x C tensor (ComfyUI IMAGE)")
    try:
        sigs = [frame_signature(frames[i]) for i in range(frames.shape[0])]
    except ParameterError as e:
        raise ParameterError("frames", e.problem, e.fix) from None
    return cuts_from_signatures(sigs, threshold) if sigs else []


def check_cuts(cuts, total: int, name: str = "cuts") -> list[int]:
    """``cuts`` as a sorted list of ints in ``1..total-1`` without duplicates, or a ParameterError naming ``name``."""
    if isinstance(total, bool) or int(total) != total or total < 0:
        raise ParameterError("total", f"is {total!r}", "pass the clip's frame count (0 or more)")
    try:
        items = [c for c in cuts]
    except TypeError:
        raise ParameterError(name, f"is {type(cuts).__name__}", "pass a list of frame indices") from None
    out = []
    for c in items:
        if isinstance(c, bool) or not isinstance(c, int) and not (hasattr(c, "__index__")):
            raise ParameterError(name, f"holds {c!r}", "pass whole frame indices")
        out.append(int(c))
    if any(c < 1 or c >= total for c in out):
        raise ParameterError(name, f"is {out}, with an index outside 1..{total - 1} for {total} frames",
                             "pass the frames where a new shot starts (not 0, less than the frame count)")
    if out != sorted(set(out)):
        raise ParameterError(name, f"is {out}, not sorted or with a repeat", "pass sorted distinct frame indices")
    return out


def shot_bounds(cuts: list[int], total: int) -> list[tuple[int, int]]:
    """The shots ``[(start, end_exclusive), ...]`` that ``cuts`` split ``0..total`` into (one shot without cuts).

    Args:
        cuts: sorted distinct frame indices in ``1..total-1`` (as :func:`find_cuts` returns).
        total: the clip's frame count.

    Returns:
        Consecutive ranges covering ``0..total`` exactly; empty for ``total == 0``.

    Raises:
        ParameterError: naming ``cuts`` (unsorted, repeated or out of range) or ``total`` (negative).
    """
    c = check_cuts(cuts, total)
    if total == 0:
        return []
    edges = [0] + c + [int(total)]
    return [(edges[k], edges[k + 1]) for k in range(len(edges) - 1)]


@dataclasses.dataclass(frozen=True)
class ShotCuts:
    """Where the shots of a loaded clip change: the value of the ``ZSVR_SHOT_CUTS`` socket.

    ``cuts`` are the frames (indices into the ``frames`` frames of the loaded IMAGE, after its start frame, frame
    cap, every-nth and padding) where a new shot starts; ``frames`` is that IMAGE's frame count, so a node can map
    the cuts onto a latent (:func:`latent_shot_starts`). Empty ``cuts``: one shot.
    """

    cuts: tuple
    frames: int

    def __post_init__(self):
        object.__setattr__(self, "cuts", tuple(check_cuts(list(self.cuts), self.frames)))

    @property
    def shots(self) -> int:
        return len(self.cuts) + 1 if self.frames > 0 else 0


def latent_shot_starts(cuts: Sequence[int], image_frames: int, latent_frames: int) -> list[int]:
    """The latent frames where a new shot starts, from the cuts of the ``image_frames``-frame video it encodes.

    * ``image_frames == latent_frames`` (an image model: one latent per frame): the cuts themselves.
    * ``image_frames == (latent_frames - 1) * r + 1`` (a causal video VAE with temporal compression ``r``: Wan,
      HunyuanVideo, CogVideoX 1.5 use 4): latent 0 is frame 0 alone and latent ``t >= 1`` covers frames
      ``r(t-1)+1 .. rt``. A cut at frame ``c`` starts a shot at latent ``ceil(c / r)``: the latent that holds
      frame ``c``. When ``c = r(t-1)+1`` that latent begins exactly at the cut. Otherwise it **straddles** the
      cut: its first frames are the old shot's, its last ones the new shot's. It is counted with the new shot
      (the shot it ends in; its representative frame ``rt``, the one the flow is measured on
      (``optical_flow.image_frames_for``), is the new shot's), so nothing is warped or shared into it from the
      old shot; the VAE has already mixed both shots inside it, which nothing downstream can undo (cut the clip
      at a frame ``4k+1`` to avoid it). Two cuts inside one latent frame give one start (the short shot between
      them lives only inside that latent).

    Args:
        cuts: sorted frame indices in ``1..image_frames-1`` where a shot starts (:func:`find_cuts`).
        image_frames: the video's frame count.
        latent_frames: the latent's frame count.

    Returns:
        Sorted distinct latent frame indices in ``1..latent_frames-1``.

    Raises:
        ParameterError: naming ``cuts`` (out of range) or ``latent_frames`` (no mapping from ``image_frames``).
    """
    c = check_cuts(cuts, image_frames)
    if isinstance(latent_frames, bool) or int(latent_frames) != latent_frames or latent_frames < 1:
        raise ParameterError("latent_frames", f"is {latent_frames!r}", "pass the latent's frame count (1 or more)")
    if image_frames == latent_frames:
        return c
    if latent_frames > 1 and image_frames > latent_frames and (image_frames - 1) % (latent_frames - 1) == 0:
        r = (image_frames - 1) // (latent_frames - 1)
        return sorted({-(-x // r) for x in c})
    if latent_frames == 1:
        return []
    raise ParameterError("latent_frames", f"is {latent_frames}, which does not fit a video of {image_frames} frames",
                         f"the shot cuts must come from the video the latent was encoded from: {latent_frames} "
                         f"frames (one per latent frame) or (T-1)*r+1 frames for a video VAE with temporal "
                         f"compression r (e.g. {4 * (latent_frames - 1) + 1} for r = 4)")


def straddling_latents(cuts: Sequence[int], image_frames: int, latent_frames: int) -> list[int]:
    """The latent frames that hold frames of two shots (see :func:`latent_shot_starts`); empty for 1:1."""
    c = check_cuts(cuts, image_frames)
    starts = latent_shot_starts(c, image_frames, latent_frames)
    if image_frames == latent_frames or not starts:
        return []
    r = (image_frames - 1) // (latent_frames - 1)
    return sorted({-(-x // r) for x in c if (x - 1) % r != 0})


def check_shot_starts(shot_starts) -> list[int]:
    """``shot_starts`` (frame indices where shots start, for the kernels that keep shots apart) as ints.

    Raises ParameterError naming ``shot_starts`` unless it is an iterable of whole numbers."""
    try:
        starts = list(shot_starts)
    except TypeError:
        starts = None
    if starts is None or any(isinstance(i, bool) or not isinstance(i, int) and not hasattr(i, "__index__")
                             for i in starts):
        raise ParameterError("shot_starts", f"is {shot_starts!r}", "pass whole frame indices where shots start")
    return [int(i) for i in starts]
