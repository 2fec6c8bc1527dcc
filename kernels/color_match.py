"""Colour transfer from a reference video to a restored one (``ZSVR_ColorMatch``, chunked runs): torch and kornia only.

Restoration re-generates every frame, and its colours drift: a high editing
strength shifts them, and chunks of a long clip restored one by one come out
with slightly different casts, which shows as a jump at every chunk boundary.
This module puts the reference's (the source video's) colour back while
keeping the restored detail. Both methods work in CIE Lab (kornia's
``rgb_to_lab`` / ``lab_to_rgb``, sRGB D65), where lightness and the two colour
axes are separate and distances are roughly perceptual:

* ``low_frequency``: replace the image's coarse band with the reference's,
  ``out = image + lowpass(reference - image)`` in Lab. The low-pass is linear,
  so this is the same as swapping the two images' low-frequency components;
  it keeps every edge and texture of the image and takes the reference's
  colour and shading at the scale of about a sixteenth of the frame's shorter
  side. The low-pass is an area downsample to a grid of about 16 cells on the
  shorter side, a Gaussian blur of one cell (kornia ``gaussian_blur2d``,
  reflected borders) and a bilinear upsample: cheap at any resolution, and
  the same relative scale at 32 px and at 4K.
* ``mean_std``: per frame and per Lab channel, move the image's mean and
  standard deviation to the reference's (``(x - mu_x) * sd_r / sd_x + mu_r``).
  Global: it corrects a colour cast or a brightness/contrast change and leaves
  local colour alone.

``strength`` blends the correction in Lab (0: the image unchanged, returned
as it is; 1: the full correction). Frames are paired one to one (a one-frame
reference applies to every frame); a reference of another size is resized to
the image's (area when shrinking, bilinear when enlarging). Frames are
processed ``batch`` at a time, so the extra memory is a few frames' worth.
Bad input raises :class:`~.errors.ParameterError` naming ``image``,
``reference``, ``method`` or ``strength``.

What it changes, in words: the restored video's colours and large-scale
brightness follow the reference again. That also brings back anything
large-scale the restoration removed on purpose (a haze or a global veil of
rain), so use ``mean_std`` or a lower ``strength`` when such a change is the point.
"""

from __future__ import annotations

import kornia
import torch
import torch.nn.functional as F

from .errors import ParameterError

METHODS = ("low_frequency", "mean_std")

LOW_FREQUENCY_CELLS = 16
"""Cells of the low-pass grid along the frame's shorter side (the correction's spatial scale)."""

_EPS = 1e-5


def _check_images(image: torch.Tensor, reference: torch.Tensor) -> None:
    for name, value in (("image", image), ("reference", reference)):
        if not isinstance(value, torch.Tensor) or value.ndim != 4 or value.shape[-1] != 3:
            shape = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
            raise ParameterError(name, f"has shape {shape}", "pass an IMAGE [frames, height, width, 3]")
        if value.shape[0] == 0:
            raise ParameterError(name, "has no frames", "pass at least one frame")
    if reference.shape[0] not in (1, image.shape[0]):
        raise ParameterError(
            "reference",
            f"has {reference.shape[0]} frames but image has {image.shape[0]}",
            "connect the frames the image was restored from (same frame_cap and frame rule), or a single frame",
        )


def _resize(frames: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """``[B, 3, h, w]`` to ``[B, 3, height, width]``: area when shrinking, bilinear when enlarging."""
    if frames.shape[-2:] == (height, width):
        return frames
    shrink = frames.shape[-2] >= height and frames.shape[-1] >= width
    if shrink:
        return F.interpolate(frames, size=(height, width), mode="area")
    return F.interpolate(frames, size=(height, width), mode="bilinear", align_corners=False)


def low_pass(lab: torch.Tensor) -> torch.Tensor:
    """The coarse band of ``[B, C, H, W]``: area down to ~16 cells, one-cell Gaussian blur, bilinear back up.

    Args:
        lab: ``[B, C, H, W]`` images (Lab in this module).

    Returns:
        The low-pass band, ``lab``'s shape.
    """
    height, width = lab.shape[-2:]
    cell = max(1, min(height, width) // LOW_FREQUENCY_CELLS)
    coarse = lab
    if cell > 1:
        coarse = F.avg_pool2d(lab, kernel_size=cell, stride=cell, ceil_mode=True, count_include_pad=False)
    if min(coarse.shape[-2:]) >= 3:
        coarse = kornia.filters.gaussian_blur2d(coarse, (5, 5), (1.0, 1.0), border_type="reflect")
    return F.interpolate(coarse, size=(height, width), mode="bilinear", align_corners=False)


def _target_lab(lab_x: torch.Tensor, lab_r: torch.Tensor, method: str) -> torch.Tensor:
    if method == "low_frequency":
        return lab_x + low_pass(lab_r - lab_x)
    mu_x = lab_x.mean(dim=(-2, -1), keepdim=True)
    mu_r = lab_r.mean(dim=(-2, -1), keepdim=True)
    sd_x = lab_x.std(dim=(-2, -1), keepdim=True, unbiased=False)
    sd_r = lab_r.std(dim=(-2, -1), keepdim=True, unbiased=False)
    return (lab_x - mu_x) * (sd_r / sd_x.clamp_min(_EPS)) + mu_r


def color_match(
    image: torch.Tensor,
    reference: torch.Tensor,
    method: str = "low_frequency",
    strength: float = 1.0,
    batch: int = 8,
) -> torch.Tensor:
    """``image`` ``[F, H, W, 3]`` in 0..1 with ``reference``'s colour (see the module docstring); float32 0..1.

    Args:
        image: the restored IMAGE ``[F, H, W, 3]`` in 0..1.
        reference: the IMAGE whose colour to take, ``F`` frames (frame by frame) or one (for all); resized to
            ``image``'s size.
        method: one of :data:`METHODS`.
        strength: 0 (``image`` unchanged) to 1 (full correction).
        batch: frames converted at a time (memory).

    Returns:
        float32 ``[F, H, W, 3]`` in 0..1 (``image`` itself when ``strength`` is 0).

    Raises:
        ParameterError: ``image`` or ``reference`` is not an IMAGE with frames, ``reference``'s frame count is
            neither 1 nor ``image``'s, or ``method`` or ``strength`` is out of range.
    """
    _check_images(image, reference)
    if method not in METHODS:
        raise ParameterError("method", f"is {method!r}", f"use one of {', '.join(METHODS)}")
    if not 0.0 <= float(strength) <= 1.0:
        raise ParameterError("strength", f"is {strength}", "use a value from 0 (off) to 1 (full correction)")
    if float(strength) == 0.0:
        return image
    frames, height, width = image.shape[0], image.shape[1], image.shape[2]
    out = torch.empty((frames, height, width, 3), dtype=torch.float32, device=image.device)
    for lo in range(0, frames, max(1, int(batch))):
        hi = min(frames, lo + max(1, int(batch)))
        x = image[lo:hi].to(torch.float32).clamp(0, 1).movedim(-1, 1)
        ref = reference[lo:hi] if reference.shape[0] > 1 else reference[:1]
        r = _resize(ref.to(device=x.device, dtype=torch.float32).clamp(0, 1).movedim(-1, 1), height, width)
        lab_x = kornia.color.rgb_to_lab(x)
        lab_r = kornia.color.rgb_to_lab(r).expand_as(lab_x)
        target = _target_lab(lab_x, lab_r, method)
        lab = lab_x + float(strength) * (target - lab_x)
        out[lo:hi] = kornia.color.lab_to_rgb(lab, clip=True).movedim(1, -1)
    return out
