"""ZVRD temporal consistency guidance kernel (eq. 8-10, pixel term): loss, gradients, videos, inference mode."""

import pytest
import torch

from zsvr.kernels import optical_flow as of
from zsvr.kernels import temporal_consistency_guidance as tcg
from zsvr.kernels.errors import ParameterError
from zsvr.nodes.errors import InputError

C, H, W = 4, 16, 16


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def zero_flow(frames, h=H, w=W):
    return torch.zeros(frames - 1, 2, h, w), torch.ones(frames - 1, 1, h, w, dtype=torch.bool)


def static_video(frames=4, seed=0):
    return torch.randn(1, C, H, W, generator=gen(seed)).expand(frames, C, H, W).contiguous()


def near_zero(loss, x0):
    """The loss is zero up to float32 warp rounding (a zero flow moves a sample by ~1e-6 px)."""
    return float(loss) < 1e-9 * float(0.5 * x0.square().sum())


def flickering_video(frames=4, seed=0, amount=0.5):
    return static_video(frames, seed) + amount * torch.randn(frames, C, H, W, generator=gen(seed + 100))


def translated_video(frames=4, shift=2, seed=0):
    """Content moving ``shift`` latent pixels right per frame, with the flow and occlusion mask that match it."""
    base = torch.randn(C, H, W, generator=gen(seed))
    x0 = torch.stack([torch.roll(base, shifts=shift * t, dims=2) for t in range(frames)])
    flow_bw = torch.zeros(frames - 1, 2, H, W)
    flow_bw[:, 0] = -shift  # frame i's pixel p came from p - shift in frame i-1
    flow_fw = -flow_bw
    valid = ~of.occlusion_mask(flow_bw, flow_fw)  # the wrapped-in columns leave the frame: masked out
    return x0, flow_bw, valid


# -- the loss ---------------------------------------------------------------------------------------------------
def test_loss_is_zero_for_a_static_video():
    x0 = static_video()
    flow, valid = zero_flow(4)
    assert near_zero(tcg.temporal_loss(x0, flow, valid), x0)
    grad, loss = tcg.x0_gradient(x0, flow, valid)
    assert near_zero(loss, x0) and float(grad.abs().max()) < 1e-4


def test_loss_is_zero_for_a_translated_copy_warped_consistently():
    x0, flow_bw, valid = translated_video()
    assert 0.5 < float(valid.float().mean()) < 1.0  # the two wrapped-in columns per pair are occluded
    assert near_zero(tcg.temporal_loss(x0, flow_bw, valid), x0)
    grad, _ = tcg.x0_gradient(x0, flow_bw, valid)
    assert float(grad.abs().max()) < 1e-4
    # the same video compared without its motion, or without the occlusion mask, is inconsistent
    flow0, valid0 = zero_flow(4)
    assert float(tcg.temporal_loss(x0, flow0, valid0)) > 100.0
    assert float(tcg.temporal_loss(x0, flow_bw, None)) > 10.0


def test_loss_is_positive_for_a_flickering_video_and_is_half_the_squared_masked_difference():
    flow, valid = zero_flow(4)
    offsets = torch.tensor([0.0, 0.3, -0.2, 0.1])
    x0 = static_video() + offsets.view(4, 1, 1, 1)
    expected = 0.5 * float((offsets[1:] - offsets[:-1]).square().sum()) * C * H * W
    assert float(tcg.temporal_loss(x0, flow, valid)) == pytest.approx(expected, rel=1e-5)
    expected_l1 = float((offsets[1:] - offsets[:-1]).abs().sum()) * C * H * W
    assert float(tcg.temporal_loss(x0, flow, valid, norm="l1")) == pytest.approx(expected_l1, rel=1e-5)
    half = valid.clone()
    half[..., : W // 2] = False  # the mask removes what it covers
    assert float(tcg.temporal_loss(x0, flow, half)) == pytest.approx(expected / 2, rel=1e-5)


def test_one_frame_has_nothing_to_compare():
    x0 = torch.randn(1, C, H, W)
    flow, valid = torch.zeros(0, 2, H, W), torch.ones(0, 1, H, W, dtype=torch.bool)
    grad, loss = tcg.x0_gradient(x0, flow, valid)
    assert float(loss) == 0.0 and grad.shape == x0.shape and float(grad.abs().max()) == 0.0


# -- the guided update ------------------------------------------------------------------------------------------
def test_one_x0_step_with_a_small_weight_decreases_the_loss():
    x0 = flickering_video(frames=6)
    flow, valid = zero_flow(6)
    grad, loss = tcg.x0_gradient(x0, flow, valid)
    assert float(loss) > 0
    for weight in (0.01, 0.1, 0.25):
        after = tcg.temporal_loss(tcg.guided(x0, grad, weight), flow, valid)
        assert float(after) < float(loss), weight
    # also along real motion (translated video plus flicker)
    moving, flow_bw, valid_bw = translated_video(frames=5)
    moving = moving + 0.3 * torch.randn(moving.shape, generator=gen(5))
    grad, loss = tcg.x0_gradient(moving, flow_bw, valid_bw)
    assert float(tcg.temporal_loss(tcg.guided(moving, grad, 0.1), flow_bw, valid_bw)) < 0.8 * float(loss)


def test_weight_one_half_makes_an_isolated_pair_agree():
    x0 = flickering_video(frames=2)
    flow, valid = zero_flow(2)
    grad, _ = tcg.x0_gradient(x0, flow, valid)
    out = tcg.guided(x0, grad, 0.5)
    assert near_zero(tcg.temporal_loss(out, flow, valid), x0)
    assert torch.allclose(out[0], x0.mean(0), atol=1e-4)  # both frames move to their mean
    assert torch.equal(tcg.guided(x0, grad, 0.0), x0)


def test_guided_keeps_the_prediction_dtype_and_device():
    x0 = flickering_video().half()
    flow, valid = zero_flow(4)
    grad, _ = tcg.x0_gradient(x0, flow, valid)
    assert grad.dtype == torch.float32
    assert tcg.guided(x0, grad, 0.1).dtype == torch.float16


# -- videos in one batch ----------------------------------------------------------------------------------------
def test_frames_of_different_videos_are_never_compared():
    a, b = static_video(3, seed=1), static_video(3, seed=2)  # two static videos that differ from each other
    x0 = torch.cat([a, b])
    flow, valid = zero_flow(6)
    assert near_zero(tcg.temporal_loss(x0, flow, valid, frames_per_video=3), x0)
    assert float(tcg.temporal_loss(x0, flow, valid, frames_per_video=0)) > 100.0  # one video: the cut is compared
    prev, cur = tcg.consecutive_pairs(6, 3)
    assert prev.tolist() == [0, 1, 3, 4] and cur.tolist() == [1, 2, 4, 5]
    # flicker in the first video only: each video's gradient and loss are what it gets on its own
    x0 = torch.cat([flickering_video(3, seed=1), b])
    grad, loss = tcg.x0_gradient(x0, flow, valid, frames_per_video=3)
    grad_a, loss_a = tcg.x0_gradient(x0[:3], flow[:2], valid[:2])
    grad_b, loss_b = tcg.x0_gradient(x0[3:], flow[3:], valid[3:])
    assert torch.equal(grad[:3], grad_a) and torch.equal(grad[3:], grad_b)
    assert float(grad_a.abs().max()) > 0.1 and float(grad_b.abs().max()) < 1e-4
    alone = loss_a + loss_b
    assert float(loss) == pytest.approx(float(alone), rel=1e-6)
    # garbage flow across the boundary (entry 2 = pair (2, 3)) is never read
    flow_bad = flow.clone()
    flow_bad[2] = float("nan")
    assert float(tcg.temporal_loss(x0, flow_bad, valid, frames_per_video=3)) == pytest.approx(float(alone), rel=1e-6)
    with pytest.raises(ParameterError, match="^frames_per_video is 4"):
        tcg.temporal_loss(x0, flow, valid, frames_per_video=4)


# -- gradient modes and inference mode --------------------------------------------------------------------------
def test_through_model_gradient_is_the_chain_rule():
    x = flickering_video()
    flow, valid = zero_flow(4)
    g_id, loss_id = tcg.through_model_gradient(lambda t: t, x, flow, valid)
    g_x0, loss_x0 = tcg.x0_gradient(x, flow, valid)
    assert torch.allclose(g_id, g_x0) and float(loss_id) == pytest.approx(float(loss_x0))
    # a linear "denoiser" A x: the gradient is A^T grad L(A x)
    conv = torch.nn.Conv2d(C, C, 3, padding=1, bias=False)
    with torch.no_grad():
        pred = conv(x)
        g_pred, _ = tcg.x0_gradient(pred, flow, valid)
        expected = torch.nn.functional.conv_transpose2d(g_pred, conv.weight, padding=1)
    g, _ = tcg.through_model_gradient(conv, x, flow, valid)
    assert torch.allclose(g, expected, atol=1e-5)
    assert conv.weight.grad is None  # only the input's gradient is taken


def test_gradients_work_inside_inference_mode():
    conv = torch.nn.Conv2d(C, C, 3, padding=1)  # a "model" whose weights were made outside inference mode
    x0, flow_bw, valid = translated_video()
    x0 = x0 + 0.2 * torch.randn(x0.shape, generator=gen(3))
    ref_x0 = tcg.x0_gradient(x0, flow_bw, valid)
    ref_model = tcg.through_model_gradient(conv, x0, flow_bw, valid)
    with torch.inference_mode():
        x0_i, flow_i, valid_i = x0.clone(), flow_bw.clone(), valid.clone()  # inference tensors, like ComfyUI's
        assert x0_i.is_inference()
        got_x0 = tcg.x0_gradient(x0_i, flow_i, valid_i)
        got_model = tcg.through_model_gradient(conv, x0_i, flow_i, valid_i)
        out = tcg.guided(x0_i, got_x0[0], 0.1)
        assert torch.is_inference_mode_enabled()  # the mode is restored
    for (g, loss), (g_ref, loss_ref) in ((got_x0, ref_x0), (got_model, ref_model)):
        assert float(loss) > 0 and torch.allclose(g, g_ref) and float(loss) == pytest.approx(float(loss_ref))
    assert float(tcg.temporal_loss(out, flow_bw, valid)) < float(ref_x0[1])


def test_feature_loss_seam():
    """A later CLIP term plugs in through ``feature_loss``: it sees the same-video pairs and its gradient adds."""
    x0 = flickering_video(frames=4)
    flow, valid = zero_flow(4)
    seen = []

    def feature(x, prev, cur):
        seen.append((prev.tolist(), cur.tolist()))
        return (x[cur].mean(dim=(1, 2, 3)) - x[prev].mean(dim=(1, 2, 3))).square().sum()

    pixel = tcg.temporal_loss(x0, flow, valid, frames_per_video=2)
    both = tcg.temporal_loss(x0, flow, valid, frames_per_video=2, feature_loss=feature)
    assert seen == [([0, 2], [1, 3])]
    assert float(both) > float(pixel)
    g_pixel, _ = tcg.x0_gradient(x0, flow, valid, frames_per_video=2)
    g_both, _ = tcg.x0_gradient(x0, flow, valid, frames_per_video=2, feature_loss=feature)
    assert not torch.allclose(g_pixel, g_both)


def test_bad_inputs_name_the_input():
    x0 = flickering_video()
    flow, valid = zero_flow(4)
    with pytest.raises(ParameterError, match="^flow_bw has shape.*expected") as info:
        tcg.temporal_loss(x0, flow[:2], valid)
    assert not isinstance(info.value, InputError)  # kernels name their own parameters; nodes translate
    with pytest.raises(ParameterError, match="^valid has shape.*expected"):
        tcg.temporal_loss(x0, flow, valid[:, :, :8])
    with pytest.raises(ParameterError, match="^norm is"):
        tcg.temporal_loss(x0, flow, valid, norm="l3")
    with pytest.raises(ParameterError, match="^x0 has shape"):
        tcg.x0_gradient(x0[0], flow, valid)
    with pytest.raises(ParameterError, match="^x has shape"):
        tcg.through_model_gradient(lambda x: x, x0[0], flow, valid)
