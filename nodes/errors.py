"""What users see when an input is wrong: :class:`InputError`, and the one place a kernel's parameter name
becomes a node input's name (:func:`kernel_inputs`).

ComfyUI shows an :class:`InputError`'s message in its error dialog, so a user reads which input, what was wrong
and what to do, never a stack trace from deep inside torch, and never the name of a parameter no node has. The
headless runner raises it for its own options too. It sets ``__module__ = "ZSVR"``: ComfyUI shows an error's
type as ``module.qualname``, so the dialog says ``ZSVR.InputError``.

This module imports no ComfyUI code.
"""

from __future__ import annotations

import contextlib

from ..kernels.errors import ParameterError


class InputError(ValueError):
    """A user-facing error about one node input.

    ``InputError("frame_cap", "is -3", "use 0 for all frames or a positive count")``
    reads ``ZSVR input 'frame_cap': is -3. Fix: use 0 for all frames or a positive count.``
    """

    __module__ = "ZSVR"  # what ComfyUI shows as the error's type: ZSVR.InputError, not a server path

    def __init__(self, input_name: str, problem: str, fix: str = ""):
        self.input_name = input_name
        self.problem = problem
        self.fix = fix
        message = f"ZSVR input '{input_name}': {problem}."
        if fix:
            message += f" Fix: {fix}."
        super().__init__(message)


@contextlib.contextmanager
def kernel_inputs(**input_for):
    """Re-raise a kernel's :class:`ParameterError` as an :class:`InputError` naming the node's input.

    ``input_for`` maps a kernel parameter to the node input it comes from
    (``with kernel_inputs(x0="image"): ...``); a parameter not listed has the
    same name as the node input it comes from.
    """
    try:
        yield
    except ParameterError as exc:
        raise InputError(input_for.get(exc.parameter, exc.parameter), exc.problem, exc.fix) from None
