"""ZVRD SLR temporal attention kernel (eq. 5-7) without the host: neighbour attention, candidate selection,
trajectory attention."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from zsvr.kernels import temporal_attention as ta
from zsvr.kernels.errors import ParameterError
from zsvr.nodes.errors import InputError


def _linears(channels, gen):
    layers = [torch.nn.Linear(channels, channels, bias=bias) for bias in (False, True, True)]
    for lin in layers:
        torch.nn.init.normal_(lin.weight, std=channels ** -0.5, generator=gen)
        if lin.bias is not None:
            torch.nn.init.normal_(lin.bias, generator=gen)
    return layers


def _sdpa(q, k, v, heads):
    b, tq, inner = q.shape
    split = lambda t: t.view(b, t.shape[1], heads, -1).transpose(1, 2)  # noqa: E731
    return F.scaled_dot_product_attention(split(q), split(k), split(v)).transpose(1, 2).reshape(b, tq, inner)


# -- eq. 5 ----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("video,position", [
    ([0] * 6, list(range(6))),                      # one video
    ([0, 0, 0, 1, 1, 1], [0, 1, 2, 0, 1, 2]),       # two 3-frame videos in one batch
    ([1, 0, 1, 0, 1, 0], [2, 0, 0, 2, 1, 1]),       # two videos, rows shuffled
    ([0, 0, 1, 1, 1, 2], [0, 1, 0, 1, 2, 0]),       # 2-frame video, 3-frame video, single frame
])
def test_neighbour_attention_matches_eq_5(video, position):
    gen = torch.Generator().manual_seed(0)
    rows, tokens, channels, heads = len(video), 10, 32, 4
    h = torch.randn(rows, tokens, channels, generator=gen)
    to_q, to_k, to_v = _linears(channels, gen)
    with torch.no_grad():
        ref = ta.reference_neighbour_attention(to_q(h), to_k(h), to_v(h), heads, video, position)
        ctx = ta.neighbour_context(h, ta.plan_neighbours(video, position))
        assert ctx.shape == (rows, 2 * tokens, channels)
        fast = _sdpa(to_q(h), to_k(ctx), to_v(ctx), heads)
    assert float((fast - ref).abs().max()) < 1e-5
    assert float(ref.abs().max()) > 1e-2


def test_neighbour_plan_rows():
    plan = ta.plan_neighbours([0] * 4, [0, 1, 2, 3])
    assert plan.prev.tolist() == [1, 0, 1, 2] and plan.next.tolist() == [1, 2, 3, 2]  # one side at the ends
    plan = ta.plan_neighbours([0, 0, 0], [9, 0, 4])  # missing frames: nearest present positions
    assert plan.prev.tolist() == [2, 2, 1] and plan.next.tolist() == [2, 2, 0]
    assert ta.plan_neighbours([0, 1, 2], [0, 0, 0]).is_identity  # single-frame videos: plain self-attention
    assert not ta.plan_neighbours([0, 0], [0, 1]).is_identity


def test_identical_frames_give_plain_self_attention():
    gen = torch.Generator().manual_seed(1)
    h = torch.randn(1, 12, 16, generator=gen).expand(5, 12, 16).contiguous()
    to_q, to_k, to_v = _linears(16, gen)
    with torch.no_grad():
        ctx = ta.neighbour_context(h, ta.plan_neighbours([0] * 5, range(5)))
        plain = _sdpa(to_q(h), to_k(h), to_v(h), 2)
        slr = _sdpa(to_q(h), to_k(ctx), to_v(ctx), 2)
    assert float((slr - plain).abs().max()) < 1e-6


# -- eq. 6-7: trajectories and their attention ----------------------------------------------------------------
def test_trajectory_indices_chain_the_correspondences():
    fwd = [torch.tensor([1, 2, 0]), torch.tensor([2, 2, 1])]
    bwd = [torch.tensor([0, 0, 1]), torch.tensor([1, 1, 0])]
    idx = ta.trajectory_indices(fwd, bwd, 1, 3)
    assert idx[1].tolist() == [0, 1, 2]
    assert idx[2].tolist() == [2, 2, 1]          # forward from frame 1
    assert idx[0].tolist() == [0, 0, 1]          # backward from frame 1
    idx0 = ta.trajectory_indices(fwd, bwd, 0, 3)
    assert idx0[2].tolist() == [2, 1, 2]         # fwd[1][fwd[0][p]]


def test_trajectory_attention_matches_the_literal_eq_6_7():
    gen = torch.Generator().manual_seed(2)
    length, tokens, heads, d = 4, 9, 2, 4
    o = torch.randn(length, tokens, heads * d, generator=gen)
    fwd = [torch.randint(0, tokens, (tokens,), generator=gen) for _ in range(length - 1)]
    bwd = [torch.randint(0, tokens, (tokens,), generator=gen) for _ in range(length - 1)]
    got = ta.trajectory_attention(o, fwd, bwd, heads)
    ref = ta.reference_trajectory_attention(o, fwd, bwd, heads)
    assert float((got - ref).abs().max()) < 1e-5
    assert float((got - o).abs().max()) > 1e-2  # not the identity on a moving video


def test_trajectory_attention_is_the_identity_on_a_static_video():
    o = torch.randn(1, 16, 8).expand(5, 16, 8).contiguous()
    same = [torch.arange(16)] * 4
    assert torch.allclose(ta.trajectory_attention(o, same, same, 2), o, atol=1e-6, rtol=0)
    assert torch.equal(ta.trajectory_attention(o[:1], [], [], 2), o[:1])  # a single frame: nothing to attend to


def test_flow_targets_round_and_clamp():
    flow = torch.zeros(2, 2, 3)
    flow[0, 0, 0] = 1.4    # (0,0) -> x 1
    flow[0, 0, 2] = 5.0    # (2,0) -> clamped to x 2
    flow[1, 1, 1] = -2.6   # (1,1) -> y -1.6 -> clamped to 0
    assert ta.flow_targets(flow).tolist() == [1, 1, 2, 3, 1, 5]


def test_similarity_targets_find_the_permutation_in_blocks():
    gen = torch.Generator().manual_seed(3)
    fa = torch.randn(50, 8, generator=gen)
    perm = torch.randperm(50, generator=gen)
    fb = torch.empty_like(fa)
    fb[perm] = fa * 3.0  # cosine similarity ignores the scale
    a_to_b, b_to_a = ta.similarity_targets(fa, fb, max_elements=64)  # 1-row blocks
    assert torch.equal(a_to_b, perm)
    assert torch.equal(a_to_b[b_to_a], torch.arange(50))


def _moving_pair(shift_px=8, size=64, seed=4):
    """A noise texture and the same texture moved ``shift_px`` to the right (wrapping)."""
    gen = torch.Generator().manual_seed(seed)
    a = torch.rand(3, size, size, generator=gen)
    b = torch.roll(a, shifts=shift_px, dims=2)  # a(x) = b(x + shift)
    return a, b


def test_warp_error_picks_the_similarity_candidate_when_the_flow_is_corrupted():
    a, b = _moving_pair()
    h = w = 8  # 8x8 feature grid over a 64x64 guidance: 8x8 pixel patches, the paper's
    tok = torch.arange(h * w)
    truth = (tok // w) * w + (tok % w + 1) % w  # one feature pixel to the right
    gen = torch.Generator().manual_seed(5)
    corrupted_flow = torch.zeros(2, h, w)
    corrupted_flow[0] = torch.randint(-3, 4, (h, w), generator=gen).float()  # random, mostly wrong
    flow_cand = ta.flow_targets(corrupted_flow)
    feats_a = torch.randn(h * w, 16, generator=gen)
    feats_b = torch.empty_like(feats_a)
    feats_b[truth] = feats_a
    sim_cand, _ = ta.similarity_targets(feats_a, feats_b)
    assert torch.equal(sim_cand, truth)
    candidates = torch.stack([flow_cand, sim_cand])
    errors = ta.patch_errors(a, b, candidates, (h, w), patch=8)
    assert float(errors[1].max()) < 1e-10  # the true correspondence matches exactly
    chosen, index = ta.select_targets(candidates, errors)
    assert torch.equal(chosen, truth)
    wrong = flow_cand != truth
    assert bool(wrong.any()) and torch.equal(index[wrong], torch.ones_like(index[wrong]))


def test_warp_error_picks_the_historical_candidate_when_flow_and_similarity_are_wrong():
    a, b = _moving_pair(shift_px=16)  # two feature pixels per step
    h = w = 8
    tok = torch.arange(h * w)
    truth = (tok // w) * w + (tok % w + 2) % w
    gen = torch.Generator().manual_seed(6)
    flow_cand = tok.clone()  # zero flow: the video looks static to a corrupted estimator
    sim_cand = torch.randint(0, h * w, (h * w,), generator=gen)
    history = truth.clone()
    candidates = torch.stack([flow_cand, history, sim_cand])
    chosen, index = ta.select_targets(candidates, ta.patch_errors(a, b, candidates, (h, w), patch=8))
    assert torch.equal(chosen, truth)
    assert float((index == 1).float().mean()) > 0.95  # the few ties with a lucky random match are equally right


def test_patch_errors_at_a_latent_sized_guidance():
    """Guidance at the feature resolution (the x0 latent): the patch is a window of latent pixels around it."""
    gen = torch.Generator().manual_seed(7)
    a = torch.randn(4, 8, 8, generator=gen)
    b = torch.roll(a, shifts=1, dims=1)  # moved one pixel down
    tok = torch.arange(64)
    truth = ((tok // 8 + 1) % 8) * 8 + tok % 8
    errors = ta.patch_errors(a, b, torch.stack([tok, truth]), (8, 8), patch=3)
    interior = ((tok // 8) >= 1) & ((tok // 8) <= 5)  # rows whose 3x3 patches do not touch the wrap-around
    assert float(errors[1][interior].max()) < 1e-10
    assert bool((errors[0][interior] > errors[1][interior]).all())


def test_bad_inputs():
    with pytest.raises(ParameterError, match="^flow has shape") as info:  # the kernel's own parameter
        ta.flow_targets(torch.zeros(3, 4, 4))
    assert info.value.parameter == "flow" and not isinstance(info.value, InputError)
    with pytest.raises(ValueError):
        ta.patch_errors(torch.zeros(3, 8, 8), torch.zeros(3, 8, 9), torch.zeros(1, 4, dtype=torch.long), (2, 2), 4)
    with pytest.raises(ValueError):
        ta.neighbour_context(torch.zeros(3, 2, 2), ta.plan_neighbours([0, 0], [0, 1]))
