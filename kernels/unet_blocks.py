"""Parse a U-Net block selection ("all", "output", "input,output:3-11") into block ids per group.

ComfyUI numbers an SD U-Net's blocks per group: ``input_blocks[i]``, the
``middle_block`` (id 0) and ``output_blocks[i]``; attention patches see the
position as ``extra_options["block"] = (group, id)``. Pure Python.
"""

from __future__ import annotations

from .block_ranges import check_block_syntax, parse_blocks
from .errors import ParameterError

GROUPS = ("input", "middle", "output")
"""ComfyUI's U-Net block groups, in forward order."""


def parse_unet_blocks(text: str, counts: dict[str, int],
                      with_attention: dict[str, list[int]]) -> dict[str, frozenset[int]]:
    """The chosen blocks per group, keeping only blocks that have self-attention.

    ``"all"``: every block in ``with_attention``. ``"input,middle,output"`` / ``"output"``: whole groups.
    ``"output:3-11"`` / ``"input:4"``: ids of a group (indices and inclusive ranges, see
    :func:`~.block_ranges.parse_blocks`). ``""``: none. A selection whose blocks all lack self-attention gives an
    empty dict, like ``""`` (whether that is an error is the caller's call).

    Args:
        text: the selection.
        counts: block count of every group.
        with_attention: the ids of every group's blocks that hold self-attention.

    Returns:
        For each group with chosen self-attention blocks, their ids; empty when none is chosen.

    Raises:
        ParameterError: ``text`` names something other than a group, or ids that are malformed or outside
            ``counts``.
    """
    text = (text or "").strip().lower()
    if text == "":
        return {}
    if text == "all":
        return {g: frozenset(ids) for g, ids in with_attention.items() if ids}
    chosen: dict[str, set[int]] = {}
    for part, group, ids in _items(text):
        if ids == "":
            picked = with_attention.get(group, [])
        else:
            try:
                picked = parse_blocks(ids, counts.get(group, 0), input_name="text")
            except ParameterError as exc:  # about the ids of one item: say which item
                raise ParameterError("text", f"has '{part}' ({group} block ids: {exc.problem})", exc.fix) from None
        chosen.setdefault(group, set()).update(i for i in picked if i in with_attention.get(group, []))
    return {g: frozenset(ids) for g, ids in chosen.items() if ids}


def _items(text: str):
    """``(part, group, ids)`` of each item of a lower-cased selection other than ``""``/``"all"``, groups checked."""
    for part in text.split(","):
        part = part.strip()
        if part == "":
            continue
        group, _, ids = (s.strip() for s in part.partition(":"))
        if group not in GROUPS:
            raise ParameterError("text", f"has '{part}', which is not a U-Net block group ({', '.join(GROUPS)})",
                                 "write 'all', or a comma list of input, middle, output, each optionally with block "
                                 "ids like output:3-11; leave it empty for none")
        yield part, group, ids


def check_unet_block_syntax(text: str) -> None:
    """Raise :class:`ParameterError` (``text``) if the selection is malformed whatever the U-Net: a name other than
    a group, or malformed ids; whether the ids exist needs the model (:func:`parse_unet_blocks`).

    Args:
        text: the selection as typed.

    Returns:
        None.

    Raises:
        ParameterError: naming ``text``, for a name other than a group or malformed block ids.
    """
    text = (text or "").strip().lower()
    if text in ("", "all"):
        return
    for part, group, ids in _items(text):
        try:
            check_block_syntax(ids, input_name="text")
        except ParameterError as exc:
            raise ParameterError("text", f"has '{part}' ({group} block ids: {exc.problem})", exc.fix) from None
