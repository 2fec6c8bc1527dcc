"""Kernel errors into node errors: the one place a kernel parameter name becomes a node input name."""

from __future__ import annotations

import contextlib

from ..kernels.errors import InputError, ParameterError


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
