"""Optical-flow kernel (ZVRD flow, warp, occlusion): synthetic textures with known motion."""

import math

import cv2  # a declared test dependency (tests/requirements.txt): fail loudly, never skip
import numpy as np
import pytest
import torch

from zsvr.kernels import optical_flow as of
from zsvr.kernels.errors import ParameterError
from zsvr.nodes.errors import InputError

H, W = 96, 128


def texture(h, w, seed, sigma=2.0):
    """Smooth random RGB texture in 0..1 (float32, [h, w, 3])."""
    rng = np.random.default_rng(seed)
    t = cv2.GaussianBlur(rng.standard_normal((h, w, 3)).astype(np.float32), (0, 0), sigma)
    return (t - t.min()) / (t.max() - t.min())


def image_pair(first, second):
    """Two [h, w, 3] arrays as a ComfyUI IMAGE [2, h, w, 3]."""
    return torch.from_numpy(np.stack([first, second]))


def translated_pair(dx, dy, seed=0):
    """Frame t and frame t+1 = frame t moved by (dx, dy) px, cut from a larger canvas (no wrap-around).

    frame_t(p) = frame_{t+1}(p + (dx, dy)), so the true forward flow is (dx, dy).
    """
    pad = 20
    canvas = texture(H + 2 * pad, W + 2 * pad, seed)
    ys, xs = np.mgrid[0:H, 0:W].astype(np.float32)
    first = canvas[pad : pad + H, pad : pad + W]
    second = cv2.remap(canvas, xs + pad - dx, ys + pad - dy, cv2.INTER_CUBIC)
    return image_pair(first, second)


def endpoint_error(flow, dx, dy):
    return torch.sqrt((flow[:, 0] - dx) ** 2 + (flow[:, 1] - dy) ** 2)


@pytest.mark.parametrize("dx, dy", [(3.0, -2.0), (2.5, -1.25)])
def test_flow_recovers_translation(dx, dy):
    frames = translated_pair(dx, dy)
    fw = of.flow_pairs(frames)
    bw = of.flow_pairs(frames, forward=False)
    assert fw.shape == (1, 2, H, W) and fw.dtype == torch.float32
    assert endpoint_error(fw, dx, dy).median() < 0.5
    assert endpoint_error(bw, -dx, -dy).median() < 0.5


def test_flow_accepts_channels_first_and_gray():
    frames = translated_pair(3.0, -2.0)
    nchw = frames.permute(0, 3, 1, 2)
    assert torch.equal(of.flow_pairs(frames), of.flow_pairs(nchw))
    gray = (nchw * torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)).sum(1, keepdim=True)
    assert endpoint_error(of.flow_pairs(gray), 3.0, -2.0).median() < 0.5


def moving_object_pair(move=8):
    """Static textured background, a textured square moving right by ``move`` px.

    Returns (frames, uncovered, covered, near): ``uncovered`` is the background band of
    frame t+1 that the square hid in frame t; ``covered`` the band of frame t that the
    square hides in frame t+1; ``near`` everything within 4 px of the object's path.
    """
    bg, obj = texture(H, W, 1), texture(H, W, 2, sigma=1.5)
    x0, y0, size = 40, 30, 36
    first, second = bg.copy(), bg.copy()
    first[y0 : y0 + size, x0 : x0 + size] = obj[:size, :size]
    second[y0 : y0 + size, x0 + move : x0 + move + size] = obj[:size, :size]
    uncovered = torch.zeros(H, W, dtype=torch.bool)
    uncovered[y0 : y0 + size, x0 : x0 + move] = True
    covered = torch.zeros(H, W, dtype=torch.bool)
    covered[y0 : y0 + size, x0 + size : x0 + size + move] = True
    near = torch.zeros(H, W, dtype=torch.bool)
    near[y0 - 4 : y0 + size + 4, x0 - 4 : x0 + size + move + 4] = True
    return image_pair(first, second), uncovered, covered, near


def test_occlusion_mask_flags_uncovered_and_covered_bands():
    frames, uncovered, covered, near = moving_object_pair()
    fw, bw = of.flow_pairs(frames), of.flow_pairs(frames, forward=False)
    occ_next = of.occlusion_mask(bw, fw)[0, 0]  # pixels of frame t+1
    occ_first = of.occlusion_mask(fw, bw)[0, 0]  # pixels of frame t
    assert occ_next.dtype == torch.bool
    assert occ_next[uncovered].float().mean() > 0.7
    assert occ_first[covered].float().mean() > 0.7
    assert occ_next[~near].float().mean() < 0.05
    assert occ_first[~near].float().mean() < 0.05


def test_occlusion_mask_flags_fresh_border_band():
    """Whole frame moves left by 8 px; frame t+1's right band is new texture."""
    shift = 8
    first = texture(H, W, 3)
    second = np.empty_like(first)
    second[:, : W - shift] = first[:, shift:]
    second[:, W - shift :] = texture(H, shift, 4)
    frames = image_pair(first, second)
    fw, bw = of.flow_pairs(frames), of.flow_pairs(frames, forward=False)
    occ_next = of.occlusion_mask(bw, fw)[0, 0]
    band = torch.zeros(H, W, dtype=torch.bool)
    band[:, W - shift :] = True
    rest = torch.zeros(H, W, dtype=torch.bool)
    rest[:, : W - shift - 4] = True
    assert occ_next[band].float().mean() > 0.7
    assert occ_next[rest].float().mean() < 0.05


def test_occlusion_formula_on_handmade_flows():
    fw = torch.zeros(1, 2, 4, 6)
    fw[:, 0] = 1.0
    bw = -fw.clone()
    bw[0, 0, 1, 3] = 2.0  # pixel (x=2, y=1) lands on (3, 1): |1 + 2|^2 = 9 > 0.01 * 5 + 0.5
    occ = of.occlusion_mask(fw, bw)[0, 0]
    assert occ[1, 2]
    assert occ[:, -1].all()  # target x = 6 leaves the frame
    occ[1, 2] = False
    occ[:, -1] = False
    assert not occ.any()
    assert not of.occlusion_mask(fw, bw, out_of_frame=False)[0, 0, :, -1].any()


def test_warp_next_frame_matches_current_away_from_occlusions():
    frames, _, _, _ = moving_object_pair()
    fw, bw = of.flow_pairs(frames), of.flow_pairs(frames, forward=False)
    occ = of.occlusion_mask(fw, bw)[0, 0]
    nchw = frames.permute(0, 3, 1, 2)
    warped = of.warp(nchw[1:], fw)
    err = (warped - nchw[:1]).abs().mean(1)[0]
    assert occ.float().mean() < 0.15
    assert err[~occ].mean() < 0.01
    assert err[~occ].mean() < 0.3 * (nchw[1] - nchw[0]).abs().mean()  # far below the unwarped difference


def test_warp_identity_and_integer_shift():
    img = torch.rand(2, 3, 10, 12)
    zero = torch.zeros(2, 2, 10, 12)
    assert torch.allclose(of.warp(img, zero), img, atol=1e-6)
    assert torch.equal(of.warp(img, zero, mode="nearest"), img)
    shift = torch.zeros(2, 2, 10, 12)
    shift[:, 0] = 2.0
    shift[:, 1] = -1.0
    out = of.warp(img, shift)
    assert torch.allclose(out[:, :, 1:, :-2], img[:, :, :-1, 2:], atol=1e-5)  # out(x, y) = img(x + 2, y - 1)


def test_nearest_warp_preserves_value_set():
    gen = torch.Generator().manual_seed(0)
    noise = torch.randn(2, 4, 24, 32, generator=gen)
    flow = torch.randn(2, 2, 24, 32, generator=gen) * 3.0
    for padding in ("border", "reflection"):
        out = of.warp(noise, flow, mode="nearest", padding_mode=padding)
        assert torch.isin(out, noise).all()
    bilinear = of.warp(noise, flow + 0.5, mode="bilinear", padding_mode="border")
    assert bilinear.std() < 0.9 * noise.std()  # why noise is warped with nearest


def test_resize_flow_scales_vectors():
    flow = torch.empty(2, 2, H, W)
    flow[:, 0] = 3.0
    flow[:, 1] = -2.0
    small = of.resize_flow(flow, (H // 8, W // 8))
    assert small.shape == (2, 2, 12, 16)
    assert torch.allclose(small[:, 0], torch.full_like(small[:, 0], 3.0 / 8))
    assert torch.allclose(small[:, 1], torch.full_like(small[:, 1], -2.0 / 8))
    odd = of.resize_flow(flow, (48, 32))  # y halved, x quartered
    assert torch.allclose(odd[:, 0], torch.full_like(odd[:, 0], 3.0 * 32 / W))
    assert torch.allclose(odd[:, 1], torch.full_like(odd[:, 1], -2.0 * 48 / H))
    big = of.resize_flow(flow, (2 * H, 2 * W))
    assert torch.allclose(big[:, 0], torch.full_like(big[:, 0], 6.0))


def test_resized_flow_warps_resized_frames():
    frames = translated_pair(8.0, -8.0)
    fw = of.flow_pairs(frames)
    nchw = frames.permute(0, 3, 1, 2)
    small = torch.nn.functional.interpolate(nchw, size=(H // 4, W // 4), mode="area")
    small_flow = of.resize_flow(fw, (H // 4, W // 4))
    assert endpoint_error(small_flow, 2.0, -2.0).median() < 0.15
    err = (of.warp(small[1:], small_flow) - small[:1]).abs()[..., 2:, :-2]  # out(x, y) = next(x + 2, y - 2)
    assert err.mean() < 0.02


def test_resize_mask():
    mask = torch.zeros(1, 1, 16, 16, dtype=torch.bool)
    mask[..., :8, :4] = True
    small = of.resize_mask(mask, (4, 4))
    assert small[0, 0, :2, 0].all() and not small[0, 0, 2:].any() and not small[0, 0, :, 1:].any()
    assert of.resize_mask(mask, (32, 32)).float().mean() == mask.float().mean()


def test_estimator_registry_seam():
    assert "dis" in of.flow_estimators()
    calls = []

    class Constant:
        def __call__(self, source, target):
            calls.append(source.shape)
            out = torch.zeros(source.shape[0], 2, *source.shape[-2:])
            out[:, 0] = 1.0
            return out

    assert isinstance(Constant(), of.FlowEstimator)
    of.register_flow_estimator("test-constant", Constant)
    try:
        frames = torch.rand(3, 8, 10, 3)
        flow = of.flow_pairs(frames, method="test-constant")
        assert flow.shape == (2, 2, 8, 10) and calls == [(2, 3, 8, 10)]
        assert torch.equal(of.flow_pairs(frames, method=Constant()), flow)
        with pytest.raises(ParameterError, match="^name 'test-constant' is already registered"):
            of.register_flow_estimator("test-constant", Constant)
    finally:
        of._REGISTRY.pop("test-constant", None)
    assert isinstance(of.get_flow_estimator("dis", preset="fast"), of.DISFlow)


@pytest.mark.parametrize(
    "call, name",
    [
        (lambda: of.flow_pairs(torch.rand(1, 8, 8, 3)), "frames"),
        (lambda: of.flow_pairs(torch.rand(2, 8, 8, 5)), "frames"),
        (lambda: of.flow_pairs(torch.rand(2, 8, 8, 3), method="nope"), "method"),
        (lambda: of.get_flow_estimator("dis", preset="fine"), "preset"),
        (lambda: of.as_nchw(torch.rand(8, 8, 3)), "frames"),
        (lambda: of.latent_flow(torch.rand(3, 8, 8, 3), 5, (4, 4)), "frames"),
        (lambda: of.warp(torch.rand(1, 3, 8, 8), torch.zeros(1, 2, 4, 4)), "flow"),
        (lambda: of.warp(torch.rand(1, 3, 8, 8), torch.zeros(1, 2, 8, 8), mode="bicubic"), "mode"),
        (lambda: of.occlusion_mask(torch.zeros(1, 2, 8, 8), torch.zeros(1, 2, 4, 4)), "flow_bw"),
        (lambda: of.occlusion_mask(torch.zeros(1, 2, 8, 8), torch.zeros(1, 2, 8, 8), alpha2=math.nan), "alpha2"),
        (lambda: of.resize_flow(torch.zeros(1, 3, 8, 8), (4, 4)), "flow"),
        (lambda: of.resize_flow(torch.zeros(1, 2, 8, 8), (0, 4)), "size"),
    ],
)
def test_bad_input_names_the_input(call, name):
    with pytest.raises(ParameterError) as info:
        call()
    assert info.value.parameter == name and str(info.value).startswith(name + " ")
    assert not isinstance(info.value, InputError)  # kernels name their own parameters; nodes translate
