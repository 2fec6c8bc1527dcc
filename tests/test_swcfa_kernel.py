"""SW-CFA kernel (TDM eq. 7-9) without the host: window means, layouts, and the affine shortcut."""

from __future__ import annotations

import pytest
import torch

from zsvr.kernels import cross_frame_attention as cfa
from zsvr.kernels.errors import ParameterError
from zsvr.nodes.errors import InputError


def _brute_mean(h: torch.Tensor, video, position, radius):
    out = torch.empty_like(h)
    for i in range(h.shape[0]):
        win = [j for j in range(h.shape[0]) if video[j] == video[i] and abs(position[j] - position[i]) <= radius]
        out[i] = torch.stack([h[j] for j in win]).mean(0)
    return out


def _layout(batch, fpv):
    v, p = cfa.video_layout(batch, fpv)
    return v.tolist(), p.tolist()


@pytest.mark.parametrize("batch,fpv", [(6, 0), (6, 3), (6, 2), (7, 0), (8, 4), (1, 0)])
@pytest.mark.parametrize("radius", [0, 1, 2, 3, 50])
def test_window_mean_is_the_clipped_window_average(batch, fpv, radius):
    h = torch.randn(batch, 5, 12, dtype=torch.float64, generator=torch.Generator().manual_seed(batch * 100 + radius))
    got = cfa.window_mean(h, fpv, radius)
    ref = _brute_mean(h, *_layout(batch, fpv), radius)
    assert got.dtype == h.dtype and got.shape == h.shape
    assert torch.allclose(got, ref, rtol=0, atol=1e-12)


def test_end_frames_and_large_radius():
    h = torch.randn(5, 3, 4, dtype=torch.float64)
    m = cfa.window_mean(h, 0, 2)
    assert torch.allclose(m[0], h[0:3].mean(0)) and torch.allclose(m[4], h[2:5].mean(0))  # clipped at both ends
    assert torch.allclose(m[2], h.mean(0))
    whole = cfa.window_mean(h, 0, 1000)  # radius beyond the video: the whole video
    assert torch.allclose(whole, h.mean(0, keepdim=True).expand_as(h))


def test_radius_zero_and_identical_frames_leave_frames_unchanged():
    h = torch.randn(6, 4, 8)
    assert torch.allclose(cfa.window_mean(h, 0, 0), h, rtol=0, atol=1e-6)
    same = h[:1].expand(6, 4, 8).contiguous()
    assert torch.allclose(cfa.window_mean(same, 0, 3), same, rtol=0, atol=1e-6)
    assert cfa.plan_windows([0] * 6, range(6), 0).is_identity
    assert cfa.plan_windows(range(6), [0] * 6, 5).is_identity  # six one-frame videos
    assert not cfa.plan_windows([0] * 6, range(6), 1).is_identity


def test_videos_do_not_mix():
    gen = torch.Generator().manual_seed(1)
    h = torch.randn(6, 4, 8, generator=gen)
    other = h.clone()
    other[3:] = torch.randn(3, 4, 8, generator=gen) * 10  # replace the second video only
    a, b = cfa.window_mean(h, 3, 2), cfa.window_mean(other, 3, 2)
    assert torch.equal(a[:3], b[:3])
    assert torch.allclose(a[:3], cfa.window_mean(h[:3], 0, 2), rtol=0, atol=1e-6)
    assert torch.allclose(a[3:], cfa.window_mean(h[3:], 0, 2), rtol=0, atol=1e-6)


def test_labelled_rows_in_any_order_and_with_missing_frames():
    gen = torch.Generator().manual_seed(2)
    h = torch.randn(8, 3, 5, dtype=torch.float64, generator=gen)
    # two chunks (cond/uncond) of a context window holding frames 9, 10, 0, 1 (a looped window), shuffled rows
    video = [0, 0, 0, 0, 1, 1, 1, 1]
    position = [9, 10, 0, 1, 9, 10, 0, 1]
    perm = torch.randperm(8, generator=gen).tolist()
    video = [video[i] for i in perm]
    position = [position[i] for i in perm]
    for radius in (0, 1, 2, 9, 10):
        got = cfa.window_mean_at(h, video, position, radius)
        assert torch.allclose(got, _brute_mean(h, video, position, radius), rtol=0, atol=1e-12), radius


def test_affine_projection_of_the_mean_is_eq_7_9():
    """softmax(Q (to_k mean h)^T) (to_v mean h) equals the literal mean-of-K / mean-of-V attention (fp32)."""
    gen = torch.Generator().manual_seed(3)
    frames, tokens, channels, heads = 6, 10, 32, 4
    h = torch.randn(frames, tokens, channels, generator=gen)
    to_q, to_k, to_v = (torch.nn.Linear(channels, channels, bias=bias) for bias in (False, True, True))
    for lin in (to_q, to_k, to_v):
        torch.nn.init.normal_(lin.weight, std=channels ** -0.5, generator=gen)
        if lin.bias is not None:
            torch.nn.init.normal_(lin.bias, generator=gen)
    with torch.no_grad():
        for fpv, radius in ((0, 1), (3, 2), (2, 5)):
            ref = cfa.reference_attention(to_q(h), to_k(h), to_v(h), heads, radius, frames_per_video=fpv)
            hbar = cfa.window_mean(h, fpv, radius)
            q = to_q(h).view(frames, tokens, heads, -1).transpose(1, 2)
            k = to_k(hbar).view(frames, tokens, heads, -1).transpose(1, 2)
            v = to_v(hbar).view(frames, tokens, heads, -1).transpose(1, 2)
            fast = torch.nn.functional.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(frames, tokens, -1)
            assert torch.allclose(fast, ref, rtol=0, atol=1e-5), (fpv, radius, float((fast - ref).abs().max()))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_keeps_its_dtype_and_accuracy(dtype):
    gen = torch.Generator().manual_seed(4)
    base = torch.randn(1, 16, 64, generator=gen) * 4
    h = (base + 0.1 * torch.randn(32, 16, 64, generator=gen)).to(dtype)  # similar frames, large common part
    got = cfa.window_mean(h, 0, 3)
    assert got.dtype == dtype
    ref = _brute_mean(h.double(), *_layout(32, 0), 3)
    eps = torch.finfo(dtype).eps
    assert float((got.double() - ref).abs().max()) <= 2 * eps * float(ref.abs().max())


def test_bad_inputs_name_the_input():
    with pytest.raises(ParameterError, match="^frames_per_video is 4, which does not divide the batch of 6") as info:
        cfa.window_mean(torch.zeros(6, 1, 1), 4, 1)
    assert not isinstance(info.value, InputError)  # kernels name their own parameters; nodes translate
    with pytest.raises(ParameterError, match="^radius is -1") as info:
        cfa.window_mean(torch.zeros(6, 1, 1), 0, -1)
    assert info.value.parameter == "radius"
    with pytest.raises(ParameterError, match="^frames_per_video is -2"):
        cfa.video_layout(6, -2)


@pytest.mark.parametrize("batch,fpv,radius", [(6, 3, 1), (7, 0, 2), (8, 4, 50)])
def test_window_mean_supports_autograd(batch, fpv, radius):
    """Gradient guidance (ZVRD eq. 8-10) runs the patched model outside inference mode. The window mean is
    linear, out_i = mean of x_j over window(i), so the gradient of sum_i <w_i, out_i> with respect to x_j is
    sum over the windows i holding j of w_i / |window(i)|: computed here from the layout alone."""
    gen = torch.Generator().manual_seed(batch)
    x = torch.randn(batch, 5, 4, dtype=torch.float64, generator=gen, requires_grad=True)
    w = torch.randn(batch, 5, 4, dtype=torch.float64, generator=gen)
    (cfa.window_mean(x, fpv, radius) * w).sum().backward()
    video, position = _layout(batch, fpv)
    want = torch.zeros_like(w)
    for i in range(batch):
        window = [j for j in range(batch) if video[j] == video[i] and abs(position[j] - position[i]) <= radius]
        for j in window:
            want[j] += w[i] / len(window)
    torch.testing.assert_close(x.grad, want, rtol=1e-12, atol=1e-12)
