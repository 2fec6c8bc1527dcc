"""Parse the block lists users type into attention-patch nodes ("0-3,15-29", "all", "")."""

from __future__ import annotations

from .errors import ParameterError


def _ranges(text: str, input_name: str):
    """``(part, lo, hi)`` for each item of a comma list, its syntax checked (not against a block count).

    Returns None for ``"all"``; an empty list for an empty string.
    """
    text = (text or "").strip().lower()
    if text == "":
        return []
    if text == "all":
        return None
    ranges = []
    for part in text.replace(" ", "").split(","):
        if part == "":
            continue
        try:
            if "-" in part[1:]:
                lo_s, hi_s = part.split("-", 1) if not part.startswith("-") else ("-" + part[1:].split("-", 1)[0], part[1:].split("-", 1)[1])
                lo, hi = int(lo_s), int(hi_s)
            else:
                lo = hi = int(part)
        except ValueError:
            raise ParameterError(input_name, f"has '{part}', which is not a block index or range",
                             "write indices and ranges like 0-3,15-29, or 'all', or leave it empty for none") from None
        if lo > hi:
            raise ParameterError(input_name, f"has the range '{part}' whose start is after its end", f"write it as {hi}-{lo}")
        if lo < 0:
            raise ParameterError(input_name, f"has '{part}', a negative block index", "block indices start at 0")
        ranges.append((part, lo, hi))
    return ranges


def check_block_syntax(text: str, input_name: str = "text") -> None:
    """Raise :class:`ParameterError` if ``text`` is not a valid block list whatever the model (malformed items,
    reversed or negative ranges); whether the blocks exist needs the model (:func:`parse_blocks`).

    Args:
        text: the list as typed.
        input_name: the parameter name a :class:`ParameterError` names (default ``text``).

    Returns:
        None.

    Raises:
        ParameterError: naming ``input_name``, for a malformed item or a reversed or negative range.
    """
    _ranges(text, input_name)


def parse_blocks(text: str, num_blocks: int, input_name: str = "text") -> list[int]:
    """Sorted block indices from a comma list of indices and inclusive ranges.

    ``"all"`` is every block, an empty string is none. ZSVD's reference for the
    30-block CogVideoX-2b is ``"0-3,15-29"``.

    Args:
        text: the list as typed.
        num_blocks: how many blocks the model has (indices 0..num_blocks-1).
        input_name: the parameter name a :class:`ParameterError` names (default ``text``; a caller parsing one
            field of a larger spec passes that field's name).

    Returns:
        The chosen block indices, sorted, without repeats.

    Raises:
        ParameterError: naming ``input_name``, for a malformed list or a block at or past ``num_blocks``.
    """
    ranges = _ranges(text, input_name)
    if ranges is None:
        return list(range(num_blocks))
    chosen: set[int] = set()
    for part, lo, hi in ranges:
        if hi >= num_blocks:
            raise ParameterError(input_name, f"has '{part}', outside this model's blocks 0-{num_blocks - 1}",
                             f"use indices from 0 to {num_blocks - 1}")
        chosen.update(range(lo, hi + 1))
    return sorted(chosen)
