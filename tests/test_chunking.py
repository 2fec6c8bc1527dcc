"""Kernel tests for ``kernels/chunking.py``: chunk plans, raised-cosine crossfade weights, exact stitching."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from zsvr.kernels import chunking
from zsvr.kernels.errors import ParameterError
from zsvr.kernels.video_io import rule_count


def spans(plan):
    return [(c.start, c.frames, c.run_frames, c.lead, c.trail) for c in plan]


def test_plan_for_150_frames_in_49_frame_chunks_with_8_overlap():
    """Chunks every 41 frames; the last is the shortest 4k+1 length that reaches frame 149 (29, overlap 10)."""
    plan = chunking.plan_chunks(150, 49, 8, "4k+1")
    assert spans(plan) == [(0, 49, 49, 0, 8), (41, 49, 49, 8, 8), (82, 49, 49, 8, 10), (121, 29, 29, 10, 0)]


def test_plan_without_overlap_and_for_a_short_clip():
    assert spans(chunking.plan_chunks(150, 49, 0, "4k+1")) == [
        (0, 49, 49, 0, 0), (49, 49, 49, 0, 0), (98, 49, 49, 0, 2), (145, 5, 5, 2, 0)]
    # shorter than one chunk: one chunk, run on the last frame repeated up to 33 (4k+1); 30 frames used
    (only,) = chunking.plan_chunks(30, 49, 8, "4k+1")
    assert (only.start, only.frames, only.run_frames, only.padded) == (0, 30, 33, True)
    (exact,) = chunking.plan_chunks(49, 49, 8, "4k+1")
    assert (exact.frames, exact.run_frames, exact.padded) == (49, 49, False)


@pytest.mark.parametrize("rule, chunk", [("any", 7), ("any", 16), ("4k+1", 9), ("4k+1", 49), ("8k+1", 17)])
def test_plans_cover_every_frame_with_rule_lengths_and_at_least_the_overlap(rule, chunk):
    for total, overlap in itertools.product(range(1, 130, 7), range(0, chunk, 3)):
        plan = chunking.plan_chunks(total, chunk, overlap, rule)
        covered = np.zeros(total, int)
        for c in plan:
            covered[c.start:c.end] += 1
            assert rule_count(c.run_frames, rule) == c.run_frames and c.run_frames <= max(chunk, c.run_frames)
            assert c.frames <= chunk
        assert covered.min() >= 1 and plan[0].start == 0 and plan[-1].end == total
        for a, b in zip(plan, plan[1:]):
            assert a.start < b.start and b.lead == a.trail == a.end - b.start >= overlap


def test_crossfade_weights_are_raised_cosine_and_sum_to_one():
    w = chunking.crossfade_weights(3)
    np.testing.assert_allclose(w, [0.1464466094067262, 0.5, 0.8535533905932737], rtol=0, atol=1e-15)
    for n in (1, 2, 8, 29):
        w = chunking.crossfade_weights(n)
        assert np.all(np.diff(w) > 0) and 0 < w.min() and w.max() < 1
        np.testing.assert_allclose(w + w[::-1], 1.0, rtol=0, atol=1e-15)  # incoming + outgoing = 1
    np.testing.assert_allclose(chunking.crossfade_weights(1), [0.5], rtol=0, atol=1e-15)


@pytest.mark.parametrize("total, chunk, overlap, rule", [(150, 49, 8, "4k+1"), (40, 9, 8, "8k+1"), (23, 5, 3, "any")])
def test_weights_on_every_frame_sum_to_one(total, chunk, overlap, rule):
    plan = chunking.plan_chunks(total, chunk, overlap, rule)
    weights = [chunking.chunk_weights(c) for c in plan]
    raw = np.zeros(total)
    for c, w in zip(plan, weights):
        raw[c.start:c.end] += w
    pairwise = all(b.start >= a.end for a, b in zip(plan, plan[2:]))
    if pairwise:  # only neighbours overlap: the raised-cosine weights sum to 1 as they are
        np.testing.assert_allclose(raw, 1.0, rtol=0, atol=1e-12)
    for frame in range(total):
        assert abs(sum(w for _, _, w in chunking.frame_sources(plan, frame, weights)) - 1.0) < 1e-12


@pytest.mark.parametrize("total, chunk, overlap, rule", [(150, 49, 8, "4k+1"), (150, 49, 0, "4k+1"), (40, 9, 8, "8k+1"),
                                                          (30, 49, 8, "4k+1")])
def test_stitching_chunks_that_equal_their_input_is_the_identity(total, chunk, overlap, rule):
    """Exact, bit for bit: the blend is a running weighted mean, and (x - out) is 0 where the chunks agree."""
    clip = torch.rand(total, 6, 5, 3, generator=torch.Generator().manual_seed(total))
    plan = chunking.plan_chunks(total, chunk, overlap, rule)
    outputs = []
    for c in plan:
        part = clip[c.start:c.end]
        if c.padded:  # as the loader pads: the last frame repeated
            part = torch.cat([part, part[-1:].expand(c.run_frames - c.frames, -1, -1, -1)])
        outputs.append(part.clone())
    assert torch.equal(chunking.stitch(plan, outputs), clip)


def test_crossfade_between_two_flat_chunks_follows_the_weights():
    plan = chunking.plan_chunks(12, 8, 4, "any")  # (0, 8) and (4, 8): overlap frames 4..7
    assert spans(plan) == [(0, 8, 8, 0, 4), (4, 8, 8, 4, 0)]
    a, b = torch.full((8, 1, 1, 1), 10.0), torch.full((8, 1, 1, 1), 50.0)
    out = chunking.stitch(plan, [a, b]).flatten()
    w = torch.tensor(chunking.crossfade_weights(4), dtype=torch.float32)
    assert torch.equal(out[:4], torch.full((4,), 10.0)) and torch.equal(out[8:], torch.full((4,), 50.0))
    torch.testing.assert_close(out[4:8], 10.0 + (50.0 - 10.0) * w, rtol=0, atol=1e-5)


@pytest.mark.parametrize("chunk, overlap, rule, name, words", [
    (49, 49, "4k+1", "overlap", "not below chunk_frames (49)"),
    (49, 60, "4k+1", "overlap", "at most 48"),
    (49, -1, "4k+1", "overlap", "is -1"),
    (48, 8, "4k+1", "chunk_frames", "use 45 or 49"),
    (12, 2, "8k+1", "chunk_frames", "use 9 or 17"),
    (3, 1, "4k+1", "chunk_frames", "use 5"),
    (0, 0, "any", "chunk_frames", "is 0"),
])
def test_bad_chunking_names_the_parameter_and_the_fix(chunk, overlap, rule, name, words):
    with pytest.raises(ParameterError) as info:
        chunking.plan_chunks(150, chunk, overlap, rule)
    assert info.value.parameter == name and words in str(info.value)


def test_stitch_refuses_a_short_chunk_output():
    plan = chunking.plan_chunks(20, 9, 4, "any")
    outputs = [torch.zeros(c.frames, 2, 2, 3) for c in plan]
    outputs[1] = outputs[1][:5]
    with pytest.raises(ParameterError, match="chunk 1 has 5 frames, the plan needs 9"):
        chunking.stitch(plan, outputs)
