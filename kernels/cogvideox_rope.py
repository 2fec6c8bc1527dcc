"""Where a CogVideoX 1.0 token grid sits in its RoPE base grid (pure arithmetic).

CogVideoX-5b (1.0) gives video tokens 3-D rotary position embeddings (Su et al.,
RoFormer, eq. 34; CogVideoX, Yang et al. ICLR 2025, sec. 2.2 "3D-RoPE") whose
spatial frequencies are laid out over a *base* grid, the training resolution
``(sample_height / p, sample_width / p)`` for patch size ``p``. A token grid of
another shape ``(h, w)`` is resized, keeping its aspect ratio, to fit the base
grid and centred in it; the positions it receives are those of that centred
region. This is the crop region diffusers' CogVideoX pipeline passes to
``get_3d_rotary_pos_embed`` as ``crops_coords``
(``get_resize_crop_region_for_grid``): with ``r = h / w`` and base ratio
``R = base_h / base_w``,

    r > R:  (new_h, new_w) = (base_h, round(base_h w / h))
    else:   (new_h, new_w) = (round(base_w h / w), base_w)
    top = round((base_h - new_h) / 2),  left = round((base_w - new_w) / 2)

CogVideoX 1.5 uses a sliced grid instead and needs no crop region.
"""

from __future__ import annotations

from .errors import ParameterError


def _positive_int(parameter: str, value, part: str = "") -> int:
    """``value`` if it is a positive integer; else :class:`ParameterError` naming ``parameter`` (and its ``part``)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ParameterError(parameter, f"{part + ' ' if part else ''}is {value!r}", "use a positive integer")
    return value


def crop_region(grid: tuple[int, int], base_w: int, base_h: int) -> tuple[tuple[int, int], tuple[int, int]]:
    """``((top, left), (bottom, right))`` of the centred region of the base grid a ``(h, w)`` token grid fills.

    Args:
        grid: the token grid ``(h, w)`` (latent height and width over the patch size).
        base_w: the base grid's width in tokens (``sample_width / patch_size``).
        base_h: the base grid's height in tokens (``sample_height / patch_size``).

    Returns:
        ``((top, left), (bottom, right))`` in base-grid tokens, bottom and right exclusive.

    Raises:
        ParameterError: ``grid`` is not a pair of positive integers, or ``base_w`` or ``base_h`` is not a
            positive integer.
    """
    if not isinstance(grid, (tuple, list)) or len(grid) != 2:
        raise ParameterError("grid", f"is {grid!r}", "pass a (height, width) pair of token counts")
    h, w = _positive_int("grid", grid[0], "height"), _positive_int("grid", grid[1], "width")
    base_w, base_h = _positive_int("base_w", base_w), _positive_int("base_h", base_h)
    if h / w > base_h / base_w:
        new_h, new_w = base_h, int(round(base_h / h * w))
    else:
        new_w, new_h = base_w, int(round(base_w / w * h))
    top, left = int(round((base_h - new_h) / 2.0)), int(round((base_w - new_w) / 2.0))
    return (top, left), (top + new_h, left + new_w)
