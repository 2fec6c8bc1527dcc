"""Seeded rain renderer: bright, thin, slanted streaks that move consistently across frames.

Every streak is an anti-aliased line segment (rendered at 2x supersampling, then
area-averaged), tapered at both ends, whose centre moves along the rain direction by
``speed`` pixels per frame and wraps around a margin outside the frame, so a streak keeps
its length, angle, width and brightness from frame to frame. Streaks are composited as
light (screen blend): ``rainy = 1 - (1 - clean) * (1 - alpha)``.
"""

from __future__ import annotations

import dataclasses

import torch


@dataclasses.dataclass(frozen=True)
class RainParams:
    """One clip's rain. Lengths, widths and speeds are in output pixels; angle in degrees from vertical."""

    density: int          # streaks per frame
    angle: float          # mean direction (positive leans right as it falls)
    angle_jitter: float   # per-streak spread of the direction
    length: tuple         # (min, max) streak length
    width: tuple          # (min, max) streak width
    brightness: tuple     # (min, max) peak opacity
    speed: tuple          # (min, max) pixels per frame along the direction


TRAIN_RANGES = dict(density=(8, 40), angle=(-25.0, 25.0), length=(5.0, 14.0), width=(0.6, 1.4),
                    brightness=(0.35, 0.8), speed=(3.0, 8.0))
"""The ranges training draws each clip's rain from (held-out clips draw from the same ranges, other seeds)."""


def _uniform(gen: torch.Generator, lo: float, hi: float) -> float:
    return lo + (hi - lo) * float(torch.rand((), generator=gen))


def sample_params(gen: torch.Generator, ranges: dict = TRAIN_RANGES) -> RainParams:
    """Draw one clip's rain from ``ranges`` with ``gen``."""
    density = int(round(_uniform(gen, *ranges["density"])))
    angle = _uniform(gen, *ranges["angle"])
    length_lo = _uniform(gen, ranges["length"][0], ranges["length"][1] * 0.7)
    width_lo = _uniform(gen, ranges["width"][0], ranges["width"][1] * 0.8)
    bright_lo = _uniform(gen, ranges["brightness"][0], ranges["brightness"][1] * 0.8)
    speed = _uniform(gen, *ranges["speed"])
    return RainParams(
        density=density, angle=angle, angle_jitter=_uniform(gen, 0.0, 4.0),
        length=(length_lo, min(ranges["length"][1], length_lo * 1.6)),
        width=(width_lo, min(ranges["width"][1], width_lo * 1.4)),
        brightness=(bright_lo, min(ranges["brightness"][1], bright_lo * 1.4)),
        speed=(speed, speed * 1.25),
    )


def render_alpha(params: RainParams, frames: int, height: int, width: int, gen: torch.Generator,
                 supersample: int = 2) -> torch.Tensor:
    """The rain's opacity, ``[frames, 1, height, width]`` in [0, 1], drawn with ``gen``."""
    n = max(int(params.density), 0)
    if n == 0:
        return torch.zeros(frames, 1, height, width)

    def draw(lo_hi):
        lo, hi = lo_hi
        return lo + (hi - lo) * torch.rand(n, generator=gen)

    length = draw(params.length)
    line_width = draw(params.width)
    bright = draw(params.brightness)
    speed = draw(params.speed)
    theta = torch.deg2rad(params.angle + params.angle_jitter * torch.randn(n, generator=gen))
    direction = torch.stack([torch.sin(theta), torch.cos(theta)], dim=1)  # (x, y); y points down
    margin = float(length.max()) + 2.0
    box = torch.tensor([width + 2 * margin, height + 2 * margin])
    start = torch.rand(n, 2, generator=gen) * box - margin

    s = supersample
    ys = (torch.arange(height * s, dtype=torch.float32) + 0.5) / s
    xs = (torch.arange(width * s, dtype=torch.float32) + 0.5) / s
    grid = torch.stack(torch.meshgrid(xs, ys, indexing="xy"), dim=-1).reshape(1, -1, 2)  # [1, P, 2]
    out = []
    for f in range(frames):
        centre = torch.remainder(start + margin + f * speed[:, None] * direction, box) - margin  # [n, 2]
        rel = grid - centre[:, None, :]                                         # [n, P, 2]
        along = (rel * direction[:, None, :]).sum(-1)                           # [n, P]
        half = (length / 2)[:, None]
        clamped = along.clamp(-half, half)
        across = (rel - clamped[..., None] * direction[:, None, :]).norm(dim=-1)
        coverage = (line_width[:, None] / 2 + 0.5 / s - across).clamp(0, 1.0 / s) * s
        taper = (1 - (along / half).clamp(-1, 1).pow(2)).clamp(min=0).sqrt()
        a = (bright[:, None] * coverage * taper).clamp(0, 1)
        alpha = 1 - torch.prod(1 - a, dim=0)                                   # [P]
        alpha = alpha.reshape(1, 1, height * s, width * s)
        out.append(torch.nn.functional.avg_pool2d(alpha, s) if s > 1 else alpha)
    return torch.cat(out, dim=0)


def composite(clean: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
    """Rain as light over ``clean`` ``[T, 3, H, W]`` in [0, 1] (screen blend)."""
    return 1 - (1 - clean) * (1 - alpha)


def add_rain(clean: torch.Tensor, gen: torch.Generator, ranges: dict = TRAIN_RANGES):
    """Rainy version of ``clean`` ``[T, 3, H, W]``: (rainy, alpha, params), all drawn with ``gen``."""
    params = sample_params(gen, ranges)
    alpha = render_alpha(params, clean.shape[0], clean.shape[2], clean.shape[3], gen)
    return composite(clean, alpha), alpha, params


def _self_check() -> None:  # pragma: no cover - a quick look: python -m testbed.rain
    gen = torch.Generator().manual_seed(0)
    a = render_alpha(sample_params(gen), 5, 32, 32, gen)
    print(a.shape, float(a.mean()), float(a.max()))


if __name__ == "__main__":  # pragma: no cover
    _self_check()
