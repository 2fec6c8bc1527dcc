"""Noise sharing kernel (ZVRD eq. 11): shared noise, flow-blended noise stays unit variance."""

import math

import pytest
import torch

from zsvr.kernels import noise_sharing as ns
from zsvr.kernels import optical_flow as of
from zsvr.kernels.errors import ParameterError
from zsvr.nodes.errors import InputError


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def random_flow(frames, h, w, scale=3.0, seed=1):
    return torch.randn(frames - 1, 2, h, w, generator=gen(seed)) * scale


def shaky_flow(frames, h, w):
    """Backward flows whose trajectories come back to their start (the correlated case) plus static parts."""
    flow = torch.zeros(frames - 1, 2, h, w)
    flow[0, 0] = 1.0  # frame 1 <- frame 0 moved by one pixel
    flow[1, 0] = -1.0  # ... and back: frame 2's trajectory passes through its own pixel of the shared field
    flow[2, 1] = 1.0
    flow[3, 0, :, : w // 2] = 0.0  # half static
    flow[3, 1, :, w // 2 :] = -1.0
    return flow[: frames - 1]


@pytest.mark.parametrize("shape, axis", [((5, 4, 6, 7), 0), ((2, 4, 5, 6, 7), 2), ((2, 4, 5, 6, 7), -3)])
def test_shared_noise_is_identical_across_frames(shape, axis):
    z = ns.shared_noise(shape, axis, gen())
    assert z.shape == shape and z.dtype == torch.float32 and z.is_contiguous()
    frames = z.movedim(axis, 0)
    for i in range(1, frames.shape[0]):
        assert torch.equal(frames[i], frames[0])
    assert not torch.equal(frames[0][..., 0, 0], frames[0][..., 1, 1])  # not a constant
    assert torch.equal(z, ns.shared_noise(shape, axis, gen()))  # reproducible from the generator


def exact_variance(lam, flow, mask, shared, frames, h, w):
    """Per-element variance of the blend, computed exactly through linearity.

    The blend is linear in the raw noise for a fixed flow and mask, and acts on
    every channel alike, so feeding one channel per independent base sample (a
    one-hot) gives the columns of the linear map; the variance of an output
    element is the sum of its squared coefficients.
    """
    n_pix = h * w
    if shared:  # one field, copied to every frame
        basis = torch.eye(n_pix, dtype=torch.float64).view(n_pix, h, w)
        z = basis.unsqueeze(0).expand(frames, -1, -1, -1).contiguous()
    else:  # an independent field per frame
        z = torch.zeros(frames, frames * n_pix, h, w, dtype=torch.float64)
        for f in range(frames):
            z[f, f * n_pix : (f + 1) * n_pix] = torch.eye(n_pix, dtype=torch.float64).view(n_pix, h, w)
    out = ns.blend_noise(z, flow, mask, lam, 0)
    return out.square().sum(1)  # [F, H, W]


@pytest.mark.parametrize("shared", [True, False])
@pytest.mark.parametrize("lam", [0.0, 0.3, 0.5, 0.7])
@pytest.mark.parametrize("flow_kind", ["shaky", "random", "zero"])
def test_blend_is_exactly_unit_variance(shared, lam, flow_kind):
    frames, h, w = 5, 6, 8
    flow = {
        "shaky": shaky_flow(frames, h, w),
        "random": random_flow(frames, h, w, scale=1.5),
        "zero": torch.zeros(frames - 1, 2, h, w),
    }[flow_kind]
    mask = torch.rand(frames - 1, 1, h, w, generator=gen(2)) > 0.2
    for m in (None, mask, mask.float() * 0.5):
        var = exact_variance(lam, flow, m, shared, frames, h, w)
        assert torch.allclose(var, torch.ones_like(var), atol=1e-9), (m is None, var.min(), var.max())


def test_naive_normaliser_would_be_wrong_for_shared_noise():
    """Why the normaliser is per pixel: with shared noise and zero flow the warped sample IS z_i."""
    z = ns.shared_noise((4, 4, 32, 32), 0, gen())
    out = ns.blend_noise(z, torch.zeros(3, 2, 32, 32), None, 0.5, 0)
    assert torch.allclose(out, z, atol=1e-6)  # static scene: the noise stays shared
    naive = (0.5 * z[1] + 0.5 * z[0]) / math.sqrt(0.5)
    assert naive.std() > 1.3


def test_first_blend_of_independent_noise_is_eq11_with_sqrt_normaliser():
    lam, h, w = 0.3, 12, 16
    z = torch.randn(2, 4, h, w, generator=gen())
    flow = torch.zeros(1, 2, h, w)
    flow[:, 0] = 2.0
    flow[:, 1] = -1.0
    out = ns.blend_noise(z, flow, None, lam, 0)
    warped = of.warp(z[:1], flow, mode="nearest")
    expected = (lam * z[1] + (1 - lam) * warped[0]) / math.sqrt(lam**2 + (1 - lam) ** 2)
    inside = torch.zeros(h, w, dtype=torch.bool)
    inside[1:, : w - 2] = True  # sources inside the frame; elsewhere M is taken as 0
    assert torch.allclose(out[1][:, inside], expected[:, inside], atol=1e-6)
    assert torch.equal(out[1][:, ~inside], z[1][:, ~inside])
    assert torch.equal(out[0], z[0])


@pytest.mark.parametrize("lam", [0.3, 0.5, 0.7])
def test_blend_keeps_unit_std_on_large_tensor(lam):
    f, c, h, w = 6, 4, 96, 96
    z = ns.shared_noise((f, c, h, w), 0, gen())
    out = ns.blend_noise(z, random_flow(f, h, w), torch.ones(f - 1, 1, h, w), lam, 0)
    std = out.std(dim=(1, 2, 3))
    assert torch.all((std - 1).abs() < 0.02), std
    assert abs(out.mean().item()) < 0.02
    assert not torch.equal(out[1], z[1])


def test_video_layout_matches_frames_as_batch():
    b, c, t, h, w = 1, 4, 5, 10, 12
    z = ns.shared_noise((b, c, t, h, w), 2, gen())
    flow, mask = random_flow(t, h, w), torch.rand(t - 1, 1, h, w, generator=gen(3)) > 0.3
    video = ns.blend_noise(z, flow, mask, 0.4, 2)
    batch = ns.blend_noise(z[0].permute(1, 0, 2, 3).contiguous(), flow, mask, 0.4, 0)
    assert torch.allclose(video[0].permute(1, 0, 2, 3), batch)


def test_lambda_one_and_mask_zero_leave_noise_unchanged():
    f, h, w = 4, 16, 16
    z = torch.randn(f, 4, h, w, generator=gen())
    flow = random_flow(f, h, w)
    assert torch.equal(ns.blend_noise(z, flow, None, 1.0, 0), z)
    assert torch.equal(ns.blend_noise(z, flow, torch.zeros(f - 1, 1, h, w, dtype=torch.bool), 0.5, 0), z)
    mask = torch.rand(f - 1, 1, h, w, generator=gen(4)) > 0.5
    out = ns.blend_noise(z, flow, mask, 0.5, 0)
    off = ~mask[:, 0]
    assert torch.equal(out[1:].permute(1, 0, 2, 3)[:, off], z[1:].permute(1, 0, 2, 3)[:, off])
    shared = ns.shared_noise((1, 4, 3, h, w), 2, gen())
    assert torch.equal(ns.blend_noise(shared, flow[:2], None, 1, 2), shared)


def test_lambda_zero_transports_noise_without_new_values():
    """Nearest warping copies samples: pure transport keeps the value set, matches warp(mode='nearest')."""
    f, h, w = 4, 16, 20
    z = torch.randn(f, 3, h, w, generator=gen())
    flow = random_flow(f, h, w, scale=2.0)
    out = ns.blend_noise(z, flow, None, 0.0, 0)
    assert torch.isin(out, z).all()
    flow_in = torch.full((1, 2, h, w), 0.3)  # every source inside the frame
    first = ns.blend_noise(z[:2], flow_in, None, 0.0, 0)
    assert torch.equal(first[1], of.warp(z[:1], flow_in, mode="nearest")[0])


def test_dtype_and_device_kept():
    z = ns.shared_noise((3, 4, 8, 8), 0, gen(), dtype=torch.float16)
    out = ns.blend_noise(z, random_flow(3, 8, 8), None, 0.5, 0)
    assert out.dtype == torch.float16 and out.shape == z.shape and out.device == z.device


@pytest.mark.parametrize("lam", [-0.1, 1.5, math.nan, math.inf, "0.5", True])
def test_bad_lambda_raises(lam):
    z = torch.randn(3, 4, 8, 8)
    with pytest.raises(ParameterError) as info:
        ns.blend_noise(z, torch.zeros(2, 2, 8, 8), None, lam, 0)
    assert info.value.parameter == "lam" and str(info.value).startswith("lam ")
    assert not isinstance(info.value, InputError)


@pytest.mark.parametrize(
    "call, name",
    [
        (lambda: ns.blend_noise(torch.randn(3, 4, 8, 8), torch.zeros(3, 2, 8, 8), None, 0.5, 0), "flow_bw"),
        (lambda: ns.blend_noise(torch.randn(3, 4, 8, 8), torch.zeros(2, 2, 4, 4), None, 0.5, 0), "flow_bw"),
        (lambda: ns.blend_noise(torch.randn(3, 4, 8, 8), torch.zeros(2, 2, 8, 8), torch.ones(2, 1, 4, 4), 0.5, 0), "mask"),
        (lambda: ns.blend_noise(torch.randn(3, 4, 8, 8), torch.zeros(2, 2, 8, 8), torch.full((2, 8, 8), 2.0), 0.5, 0), "mask"),
        (lambda: ns.blend_noise(torch.randn(3, 4, 8, 8), torch.zeros(2, 2, 8, 8), None, 0.5, 3), "frame_axis"),
        (lambda: ns.blend_noise(torch.randn(3, 4, 8, 8), torch.zeros(2, 2, 8, 8), None, 0.5, 5), "frame_axis"),
        (lambda: ns.shared_noise((3, 4, 8, 8), 4, gen()), "frame_axis"),
        (lambda: ns.shared_noise((3, 0, 8, 8), 0, gen()), "shape"),
    ],
)
def test_bad_input_names_the_input(call, name):
    with pytest.raises(ParameterError) as info:
        call()
    assert info.value.parameter == name and str(info.value).startswith(name + " ")
    assert not isinstance(info.value, InputError)


def test_step_seed_is_one_lcg_step():
    assert ns.step_seed(0) == 1442695040888963407
    assert ns.step_seed(7) == (7 * 6364136223846793005 + 1442695040888963407) % (1 << 64)
    assert 0 <= ns.step_seed(0xFFFFFFFFFFFFFFFF) < 1 << 64 and ns.step_seed(3) != 3


def test_lambda_changes_nothing_under_sub_pixel_motion():
    """What the lambda tooltip and README say: the nearest warp moves noise by whole latent pixels, so a flow
    below half a pixel everywhere leaves the shared noise as it is (to float rounding: 0.7 z + 0.3 z), whatever
    lambda; half a pixel or more blends it."""
    z = ns.shared_noise((5, 4, 8, 8), 0, torch.Generator().manual_seed(3))
    slow = torch.full((4, 2, 8, 8), 0.49)
    assert float((ns.blend_noise(z, slow, None, 0.3, frame_axis=0) - z).abs().max()) < 1e-6
    fast = torch.full((4, 2, 8, 8), 0.51)
    assert float((ns.blend_noise(z, fast, None, 0.3, frame_axis=0) - z).abs().max()) > 0.5
