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


# -- per-shot plans (issue 26 item 2): chunks never straddle a cut, crossfades stay inside shots -----------------

def _random_cases(count=400, seed=26):
    """(total, cuts, chunk, overlap, rule): clips of 1..160 frames, 0..6 random cuts (shots of 1 frame included)."""
    rng = np.random.default_rng(seed)
    options = {"any": [1, 2, 5, 7, 16], "4k+1": [5, 9, 13, 49], "8k+1": [9, 17, 25]}
    for _ in range(count):
        rule = str(rng.choice(list(options)))
        chunk = int(rng.choice(options[rule]))
        overlap = int(rng.integers(0, chunk))
        total = int(rng.integers(1, 161))
        k = int(rng.integers(0, min(6, total - 1) + 1))
        cuts = sorted(int(c) for c in rng.choice(np.arange(1, total), size=k, replace=False)) if k else []
        yield total, cuts, chunk, overlap, rule


def _shot_of(cuts, frame):
    return int(np.searchsorted(np.asarray(cuts, dtype=int), frame, side="right"))


def test_shot_plans_obey_the_rule_and_never_straddle_a_cut():
    """Many random cut lists: every chunk inside one shot, of a rule length (padded only for a short shot), the
    chunks in order and covering each shot; neighbours in a shot overlap by at least ``overlap``, neighbours
    across a cut abut with no shared frame and no crossfade."""
    for total, cuts, chunk, overlap, rule in _random_cases():
        plan = chunking.plan_shot_chunks(total, cuts, chunk, overlap, rule)
        case = (total, cuts, chunk, overlap, rule)
        assert [c.index for c in plan] == list(range(len(plan))), case
        assert plan[0].start == 0 and plan[-1].end == total, case
        bounds = [0, *cuts, total]
        for c in plan:
            assert _shot_of(cuts, c.start) == _shot_of(cuts, c.end - 1), (case, c)  # no chunk crosses a cut
            assert not any(c.start < cut < c.end for cut in cuts), (case, c)
            assert rule_count(c.run_frames, rule) == c.run_frames and c.frames <= chunk, (case, c)
            shot = _shot_of(cuts, c.start)
            shot_len = bounds[shot + 1] - bounds[shot]
            if c.padded:  # only a shot shorter than one chunk runs padded, and then it is one chunk
                assert c.start == bounds[shot] and c.frames == shot_len, (case, c)
                assert c.run_frames == max(rule_count(c.frames, rule, pad=True), chunking.rule_minimum(rule)), case
        for a, b in zip(plan, plan[1:]):
            assert a.start < b.start, case
            if b.start in cuts:  # the first chunk of a new shot
                assert a.end == b.start and a.trail == 0 and b.lead == 0, (case, a, b)
            else:
                assert b.lead == a.trail == a.end - b.start >= overlap, (case, a, b)
        for first, end in zip(bounds, bounds[1:]):  # each shot alone is planned as plan_chunks plans a clip
            inside = [(c.start - first, c.frames, c.run_frames, c.lead, c.trail) for c in plan if first <= c.start < end]
            assert inside == spans(chunking.plan_chunks(end - first, chunk, overlap, rule)), case


def test_stitched_shot_plans_give_every_frame_once_from_its_own_shot():
    """Chunks equal to their input stitch back to the clip bit for bit; each frame's sources are chunks of its own
    shot only (weights summing to 1), so no frame of one shot is ever blended into another."""
    for n, (total, cuts, chunk, overlap, rule) in enumerate(_random_cases(count=150, seed=7)):
        plan = chunking.plan_shot_chunks(total, cuts, chunk, overlap, rule)
        clip = torch.rand(total, 2, 3, 3, generator=torch.Generator().manual_seed(n))
        outputs = []
        for c in plan:
            part = clip[c.start:c.end]
            if c.padded:
                part = torch.cat([part, part[-1:].expand(c.run_frames - c.frames, -1, -1, -1)])
            outputs.append(part.clone())
        assert torch.equal(chunking.stitch(plan, outputs), clip), (total, cuts, chunk, overlap, rule)
        weights = [chunking.chunk_weights(c) for c in plan]
        for frame in range(total):
            sources = chunking.frame_sources(plan, frame, weights)
            assert {_shot_of(cuts, plan[i].start) for i, _, _ in sources} == {_shot_of(cuts, frame)}
            assert abs(sum(w for _, _, w in sources) - 1.0) < 1e-12
        # a constant per shot: any weight leaking across a cut would change a frame
        flat = [torch.full((c.run_frames, 1, 1, 1), float(_shot_of(cuts, c.start))) for c in plan]
        expected = torch.tensor([float(_shot_of(cuts, f)) for f in range(total)])
        assert torch.equal(chunking.stitch(plan, flat).flatten(), expected)


def test_a_changed_cut_replans_only_the_shots_it_touches():
    """Chunk ranges depend only on their shot's range: adding or moving one cut keeps every chunk of the shots it
    does not touch (so their keys, hence their files, are reused)."""
    total, chunk, overlap, rule = 200, 17, 4, "8k+1"
    before = chunking.plan_shot_chunks(total, [40, 90, 150], chunk, overlap, rule)
    after = chunking.plan_shot_chunks(total, [40, 90, 120, 150], chunk, overlap, rule)  # shot 90..149 split
    ranges = lambda plan, lo, hi: [(c.start, c.frames, c.run_frames) for c in plan if lo <= c.start < hi]
    for lo, hi in ((0, 40), (40, 90), (150, 200)):
        assert ranges(before, lo, hi) == ranges(after, lo, hi) and ranges(before, lo, hi)
    assert ranges(before, 90, 150) != ranges(after, 90, 150)
    assert chunking.plan_shot_chunks(total, [], chunk, overlap, rule) == chunking.plan_chunks(total, chunk, overlap, rule)


def test_a_short_shot_is_one_padded_chunk_between_abutting_neighbours():
    plan = chunking.plan_shot_chunks(30, [12, 14], 9, 4, "4k+1")
    # shots 0-11 (two chunks), 12-13 (two frames, run on 5 for 4k+1), 14-29 (chunks every 5, the last placed to end
    # at 29); no chunk shares a frame with another shot's
    assert spans(plan) == [(0, 9, 9, 0, 6), (3, 9, 9, 6, 0), (12, 2, 5, 0, 0), (14, 9, 9, 0, 4), (19, 9, 9, 4, 7),
                           (21, 9, 9, 7, 0)]
    assert plan[2].padded and not plan[1].padded


@pytest.mark.parametrize("cuts, words", [([5, 5], "repeat"), ([0], "outside"), ([30], "outside"), ([7, 3], "sorted")])
def test_bad_cuts_name_the_parameter(cuts, words):
    with pytest.raises(ParameterError) as info:
        chunking.plan_shot_chunks(30, cuts, 9, 4, "4k+1")
    assert info.value.parameter == "cuts" and words in str(info.value)


def test_streamed_stitch_of_abutting_chunk_files_keeps_each_shot(tmp_path):
    """headless/stitch.iter_stitched over lossless chunk files of a per-shot plan: chunks that abut at a cut (no
    shared frame) stitch back to the source exactly, the padded short shot trimmed back."""
    from zsvr.headless import stitch
    from zsvr.kernels import chunk_files

    total, cuts = 23, [10, 12]
    plan = chunking.plan_shot_chunks(total, cuts, 9, 3, "4k+1")
    clip = torch.rand(total, 8, 8, 3, generator=torch.Generator().manual_seed(3))
    clip = (clip * 255).round() / 255  # 8-bit values: the chunk files keep them exactly
    paths = []
    for c in plan:
        part = clip[c.start:c.end]
        if c.padded:
            part = torch.cat([part, part[-1:].expand(c.run_frames - c.frames, -1, -1, -1)])
        paths.append(tmp_path / f"c{c.index}.mkv")
        chunk_files.write_chunk(paths[-1], part, 8.0)
    frames = np.stack(list(stitch.iter_stitched(plan, paths)))
    assert frames.shape == (total, 8, 8, 3)
    assert np.array_equal(frames, (clip * 255).round().to(torch.uint8).numpy())
