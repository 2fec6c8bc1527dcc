"""``kernels/frame_padding.py``: a clip padded to a frame rule and cut back gives exactly its own frames."""

from __future__ import annotations

import pytest
import torch

from zsvr.kernels import frame_padding
from zsvr.kernels.errors import ParameterError


def _clip(frames: int) -> torch.Tensor:
    return torch.arange(frames, dtype=torch.float32).view(frames, 1, 1, 1).expand(frames, 2, 3, 3).clone() / 100


@pytest.mark.parametrize("frames, rule, padded", [(60, "4k+1", 61), (57, "4k+1", 57), (1, "4k+1", 5),
                                                  (10, "8k+1", 17), (60, "any", 60)])
def test_pad_then_trim_gives_back_every_frame(frames, rule, padded):
    clip = _clip(frames)
    out, count = frame_padding.pad_to_rule(clip, rule)
    assert count == frames and out.shape[0] == padded
    assert torch.equal(out[:frames], clip)
    assert torch.equal(out[frames:], clip[-1:].expand(padded - frames, 2, 3, 3))  # copies of the last frame
    kept, removed = frame_padding.trim_padding(out, count)
    assert removed == padded - frames and torch.equal(kept, clip)


def test_fewer_frames_back_than_the_source_had_is_an_error_not_a_repeat():
    with pytest.raises(ParameterError) as err:
        frame_padding.trim_padding(_clip(57), 60)
    assert err.value.parameter == "frame_count" and "dropped 3" in str(err.value)


def test_bad_inputs_name_the_input():
    with pytest.raises(ParameterError) as err:
        frame_padding.pad_to_rule(torch.zeros(0, 2, 2, 3), "4k+1")
    assert err.value.parameter == "images"
    with pytest.raises(ParameterError) as err:
        frame_padding.pad_to_rule(_clip(3), "3k+1")
    assert err.value.parameter == "frame_rule"
    with pytest.raises(ParameterError) as err:
        frame_padding.trim_padding(_clip(3), 0)
    assert err.value.parameter == "frame_count"
