"""Kernels name their own parameters; nodes name their inputs (issue 12, item 5)."""

from __future__ import annotations

import pathlib
import re

import pytest

from zsvr.kernels.errors import ParameterError
from zsvr.nodes.errors import InputError
from zsvr.kernels import block_ranges, inversion

PACK_DIR = pathlib.Path(__file__).resolve().parent.parent


def test_kernels_never_raise_the_user_facing_error():
    """A kernel raising InputError would show users a kernel parameter as if it were a node input."""
    offenders = [f"{p.name}:{i + 1}" for p in sorted((PACK_DIR / "kernels").glob("*.py")) if p.name != "errors.py"
                 for i, line in enumerate(p.read_text().splitlines()) if re.search(r"\bInputError\b", line)]
    assert offenders == []


def test_parameter_error_is_a_plain_value_error_naming_the_parameter():
    with pytest.raises(ValueError) as info:
        block_ranges.parse_blocks("0-9", 4)
    err = info.value
    assert isinstance(err, ParameterError) and not isinstance(err, InputError)
    assert err.parameter == "text" and str(err).startswith("text has '0-9', outside this model's blocks 0-3")


def test_nodes_translate_kernel_parameters_into_their_inputs():
    from zsvr.nodes import errors  # imports no ComfyUI code
    with pytest.raises(InputError) as info:
        with errors.kernel_inputs(text="blocks"):
            block_ranges.parse_blocks("x", 4)
    assert info.value.input_name == "blocks" and "ZSVR input 'blocks'" in str(info.value)
    with pytest.raises(InputError) as info:  # a parameter not listed keeps its name (it is the node input's)
        with errors.kernel_inputs(rule="step_rule"):
            inversion.validate_sigmas(__import__("torch").tensor([1.0]))
    assert info.value.input_name == "sigmas"
    with pytest.raises(InputError) as info:
        with errors.kernel_inputs(rule="step_rule"):
            inversion.step_coefficients("euler", 1.0, 2.0, 1.0, 1.0)
    assert info.value.input_name == "step_rule" and "euler" in str(info.value)
