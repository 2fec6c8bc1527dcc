"""``kernels/color_match.py`` and the ``ZSVR_ColorMatch`` node: Lab colour transfer that keeps the restored detail."""

from __future__ import annotations

import kornia
import pytest
import torch

from zsvr.kernels import color_match
from zsvr.kernels.errors import ParameterError


def frames(seed=0, n=3, h=48, w=64):
    """Mid-range random frames (no Lab value near the gamut's edge, so nothing clips)."""
    return 0.3 + 0.4 * torch.rand(n, h, w, 3, generator=torch.Generator().manual_seed(seed))


def lab(x):
    return kornia.color.rgb_to_lab(x.movedim(-1, 1))


def from_lab(x):
    return kornia.color.lab_to_rgb(x).movedim(1, -1)


@pytest.mark.parametrize("method", color_match.METHODS)
def test_a_uniform_colour_shift_is_removed(method):
    """The shift a strong edit causes, modelled as a constant Lab offset: both methods undo it."""
    ref = frames()
    shifted = from_lab(lab(ref) + torch.tensor([6.0, 5.0, -7.0]).view(1, 3, 1, 1))
    assert (shifted - ref).abs().max() > 0.05
    out = color_match.color_match(shifted, ref, method)
    assert (out - ref).abs().max() < 1e-4


def test_low_frequency_keeps_the_images_fine_detail():
    """A 2-pixel checkerboard added to the image (detail the restoration made) survives the transfer."""
    ref = torch.full((2, 64, 64, 3), 0.5)
    checker = ((torch.arange(64).view(-1, 1) + torch.arange(64).view(1, -1)) % 2).float() * 0.1 - 0.05
    image = ref + checker[None, :, :, None]
    out = color_match.color_match(image, ref, "low_frequency")
    kept = ((out - ref) * checker[None, :, :, None]).sum() / (checker[None, :, :, None] ** 2).sum() / 3 / 2
    assert kept > 0.95  # the detail's amplitude, projected back, is kept


def test_low_frequency_takes_the_references_coarse_shading():
    """A left-to-right brightness ramp in the reference comes back over a flat image."""
    ramp = torch.linspace(0.3, 0.7, 64).view(1, 1, 64, 1).expand(2, 64, 64, 3).contiguous()
    flat = torch.full_like(ramp, 0.5)
    out = color_match.color_match(flat, ramp, "low_frequency")
    inner = (slice(None), slice(8, 56), slice(8, 56))
    assert (out[inner] - ramp[inner]).abs().max() < 0.02


def test_mean_std_matches_each_frames_lab_statistics():
    ref, image = frames(0), 0.6 * frames(1) + 0.1
    out = color_match.color_match(image, ref, "mean_std")
    lab_out, lab_ref = lab(out), lab(ref)
    torch.testing.assert_close(lab_out.mean(dim=(-2, -1)), lab_ref.mean(dim=(-2, -1)), rtol=0, atol=2e-3)
    torch.testing.assert_close(lab_out.std(dim=(-2, -1)), lab_ref.std(dim=(-2, -1)), rtol=0, atol=2e-3)


def test_strength_blends_and_zero_is_the_image_unchanged():
    ref = frames()
    shifted = from_lab(lab(ref) + torch.tensor([6.0, 0.0, 0.0]).view(1, 3, 1, 1))
    assert color_match.color_match(shifted, ref, strength=0.0) is shifted
    half = color_match.color_match(shifted, ref, strength=0.5)
    torch.testing.assert_close(lab(half)[:, 0], lab(ref)[:, 0] + 3.0, rtol=0, atol=1e-3)


def test_one_reference_frame_applies_to_all_and_other_sizes_are_resized():
    ref = frames(n=1, h=24, w=32)
    image = from_lab(lab(torch.nn.functional.interpolate(ref.movedim(-1, 1), size=(48, 64), mode="bilinear",
                                                         align_corners=False).movedim(1, -1).expand(4, -1, -1, -1))
                     + torch.tensor([0.0, 8.0, 0.0]).view(1, 3, 1, 1))
    out = color_match.color_match(image, ref, "mean_std")
    assert out.shape == (4, 48, 64, 3)
    assert abs(float(lab(out)[:, 1].mean() - lab(image)[:, 1].mean()) + 8.0) < 0.1


@pytest.mark.parametrize("kwargs, name, words", [
    ({"reference": torch.rand(2, 8, 8, 3)}, "reference", "has 2 frames but image has 3"),
    ({"image": torch.rand(3, 8, 8)}, "image", "IMAGE [frames, height, width, 3]"),
    ({"method": "wavelet"}, "method", "low_frequency, mean_std"),
    ({"strength": 1.5}, "strength", "from 0 (off) to 1"),
])
def test_bad_input_names_the_parameter(kwargs, name, words):
    args = {"image": torch.rand(3, 8, 8, 3), "reference": torch.rand(3, 8, 8, 3), **kwargs}
    with pytest.raises(ParameterError) as info:
        color_match.color_match(**args)
    assert info.value.parameter == name and words in str(info.value)


def test_node_in_a_prompt_equals_the_kernel_and_names_its_inputs(host):
    ref = frames()
    shifted = from_lab(lab(ref) + torch.tensor([4.0, -3.0, 5.0]).view(1, 3, 1, 1))
    host.store.update(image=shifted, reference=ref, short=ref[:2])
    prompt = {
        "1": {"class_type": "ZSVRTest_Inject", "inputs": {"key": "image"}},
        "2": {"class_type": "ZSVRTest_Inject", "inputs": {"key": "reference"}},
        "3": {"class_type": "ZSVR_ColorMatch", "inputs": {"image": ["1", 0], "reference": ["2", 0],
                                                           "method": "mean_std", "strength": 1.0}},
        "4": {"class_type": "ZSVRTest_Capture", "inputs": {"value": ["3", 0], "key": "matched"}},
    }
    result = host.run(prompt)
    assert result.success, result.error_message
    assert torch.equal(host.captured["matched"], color_match.color_match(shifted, ref, "mean_std"))
    assert (host.captured["matched"] - ref).abs().max() < 1e-4
    prompt["2"]["inputs"]["key"] = "short"
    result = host.run(prompt)
    assert not result.success and "ZSVR input 'reference': has 2 frames but image has 3" in result.error_message
