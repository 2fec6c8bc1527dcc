"""Kernel tests for ``kernels/shot_cuts.py`` (hard-cut detection), on clips joined from the real rain footage.

The six clips of ``shared/data/realrain`` (720x480, 8 fps, 49 frames, one shot each, no cut inside: checked
below) are decoded small (96x64) with the pack's decoder and joined into multi-shot clips whose cuts are known
by construction. Each test checks computed cut lists against those known positions:

* every cut of joined clips is found and none inside a shot, at several thresholds around the default;
* a one- and two-frame flash (a near-white frame or two, like lightning) is not a cut; three frames are
  (longer than ``FLASH_FRAMES``: documented);
* a fast camera pan inside a shot (a window sliding across a larger frame) is not a cut, while a cut
  between two panning shots still is;
* a dissolve is not found (the documented limit), the hard cut next to it is;
* streaming signatures (one frame at a time, uint8 or float) give the same cuts as the batch call;
* bad ``threshold`` / ``frames`` / ``signatures`` / ``cuts`` raise ParameterError naming them;
* ``shot_bounds`` covers the clip exactly.
"""

from __future__ import annotations

import os
import pathlib

import pytest
import torch

from zsvr.kernels import shot_cuts as sc
from zsvr.kernels import video_io
from zsvr.kernels.errors import ParameterError

PACK_DIR = pathlib.Path(__file__).resolve().parent.parent
SHARED_DIR = pathlib.Path(os.environ.get("ZSVR_SHARED", PACK_DIR.parent / "shared"))
REALRAIN_DIR = SHARED_DIR / "data" / "realrain"
NAMES = ["152", "262", "307", "367", "42", "437"]

needs_realrain = pytest.mark.skipif(not all((REALRAIN_DIR / f"{n}.mp4").is_file() for n in NAMES),
                                    reason="shared/data/realrain not found")
THRESHOLDS = [0.1, 0.2, sc.DEFAULT_THRESHOLD, 0.35, 0.45]


@pytest.fixture(scope="module")
def clips() -> dict[str, torch.Tensor]:
    return {n: video_io.load_video(str(REALRAIN_DIR / f"{n}.mp4"), width=96, height=64, frame_cap=30).images
            for n in NAMES}


def join(parts: list[torch.Tensor]) -> tuple[torch.Tensor, list[int]]:
    """The parts one after another, and the frame where each part after the first starts."""
    cuts, at = [], 0
    for p in parts[:-1]:
        at += p.shape[0]
        cuts.append(at)
    return torch.cat(parts), cuts


@needs_realrain
def test_each_real_clip_is_one_shot(clips):
    for n, frames in clips.items():
        assert sc.find_cuts(frames, 0.05) == [], n
        assert float(sc.cut_scores(torch.stack([sc.frame_signature(f) for f in frames])).max()) < 0.05, n


@needs_realrain
@pytest.mark.parametrize("threshold", THRESHOLDS)
def test_every_cut_found_none_inside(clips, threshold):
    # all six shots in a row, with shot lengths 3..30 (a short shot between two long ones included)
    lengths = [12, 30, 3, 17, 8, 25]
    frames, cuts = join([clips[n][:k] for n, k in zip(NAMES, lengths)])
    assert sc.find_cuts(frames, threshold) == cuts
    # the reverse order and another mix: each ordered pair of clips meets at a cut somewhere
    frames, cuts = join([clips[n][5:15] for n in reversed(NAMES)])
    assert sc.find_cuts(frames, threshold) == cuts
    frames, cuts = join([clips[n][:9] for n in ["152", "307", "262", "42", "367", "437", "152", "367", "262"]])
    assert sc.find_cuts(frames, threshold) == cuts


@needs_realrain
def test_threshold_scale(clips):
    frames, cuts = join([clips["152"][:10], clips["42"][:10]])
    scores = sc.cut_scores(torch.stack([sc.frame_signature(f) for f in frames]))
    at_cut = float(scores[10])
    assert 0.3 < at_cut <= 1.0
    # just below the cut's score finds it, just above does not: higher = fewer cuts
    assert sc.find_cuts(frames, at_cut - 0.01) == [10]
    assert sc.find_cuts(frames, min(1.0, at_cut + 0.01)) == []
    assert sc.find_cuts(frames, 1.0) == []


@needs_realrain
def test_flash_is_not_a_cut(clips):
    a = clips["367"][:20]

    def flashed(first: int, count: int) -> torch.Tensor:
        out = a.clone()
        out[first:first + count] = out[first:first + count] * 0.2 + 0.8  # lightning: near-white frames
        return out

    for count in (1, 2):
        assert sc.find_cuts(flashed(9, count)) == [], count
    # a flash next to a real cut: the cut is still found, the flash still is not
    b = clips["42"][:12]
    frames = torch.cat([flashed(9, 1), b])
    assert sc.find_cuts(frames) == [20]
    # three frames are longer than FLASH_FRAMES: two cuts (documented)
    assert sc.FLASH_FRAMES == 2
    assert sc.find_cuts(flashed(9, 3)) == [9, 12]


@needs_realrain
def test_fast_pan_inside_a_shot_is_not_a_cut():
    big = video_io.load_video(str(REALRAIN_DIR / "152.mp4"), width=384, height=256, frame_cap=16).images
    big2 = video_io.load_video(str(REALRAIN_DIR / "437.mp4"), width=384, height=256, frame_cap=16).images

    def pan(src: torch.Tensor, step: int, n: int) -> torch.Tensor:
        return torch.stack([src[i % src.shape[0], 64:128, i * step:i * step + 96] for i in range(n)])

    for step in (6, 12, 18):  # 6..19 % of the frame width per frame
        frames = pan(big, step, (384 - 96) // step)
        d = sc.consecutive_distances(torch.stack([sc.frame_signature(f) for f in frames]))
        assert float(d[1:].median()) > 0.03  # the pan really moves the picture (a still shot: about 0.01)
        assert sc.find_cuts(frames) == [], step
    # a cut between two panning shots is still found
    frames, cuts = join([pan(big, 12, 14), pan(big2, 12, 14)])
    assert sc.find_cuts(frames) == cuts == [14]


@needs_realrain
def test_dissolve_is_a_documented_limit(clips):
    a, b, c = clips["152"], clips["42"], clips["307"]
    w = torch.linspace(0, 1, 12)[:, None, None, None]
    frames = torch.cat([a[:8], a[8:20] * (1 - w) + b[:12] * w, b[12:20], c[:10]])
    # the 12-frame dissolve (frames 8..19) makes no cut; the hard cut at 28 is found
    assert sc.find_cuts(frames) == [28]


@needs_realrain
def test_streaming_equals_batch(clips):
    frames, cuts = join([clips["262"][:11], clips["307"][:7], clips["437"][:13]])
    # the runner's way: one frame at a time as decoded (uint8), keeping only the signatures
    streamed = []
    for f in frames:
        streamed.append(sc.frame_signature((f * 255).round().to(torch.uint8)))
    assert sc.cuts_from_signatures(streamed) == sc.find_cuts(frames) == cuts
    assert sc.cuts_from_signatures(torch.stack(streamed)) == cuts
    # uint8 and float frames give near-equal signatures
    fs = torch.stack([sc.frame_signature(f) for f in frames])
    assert torch.allclose(torch.stack(streamed), fs, atol=0.02)


def test_signature_and_distance():
    black = torch.zeros(16, 16, 3)
    white = torch.ones(16, 16, 3)
    red = torch.zeros(16, 16, 3)
    red[..., 0] = 1.0
    s_black, s_white, s_red = (sc.frame_signature(x) for x in (black, white, red))
    assert s_black.shape == (sc.SIGNATURE_SIZE,) and s_black.dtype == torch.float32
    assert float(sc.signature_distance(s_black, s_black)) == 0.0
    # black vs white: value histograms disjoint (1/3 of the histogram term), thumbnail difference 1 (clamped)
    assert float(sc.signature_distance(s_black, s_white)) == pytest.approx(0.5 * (1 / 3) + 0.5, abs=1e-6)
    # RGBA and grey frames are accepted; alpha is ignored
    rgba = torch.cat([red, torch.zeros(16, 16, 1)], -1)
    assert torch.equal(sc.frame_signature(rgba), s_red)
    assert torch.equal(sc.frame_signature(torch.ones(16, 16, 1)), s_white)
    assert sc.find_cuts(torch.stack([black] * 6 + [white] * 6)) == [6]
    assert sc.find_cuts(torch.zeros(1, 8, 8, 3)) == []
    assert sc.find_cuts(torch.zeros(0, 8, 8, 3)) == []


def test_shot_bounds():
    assert sc.shot_bounds([], 5) == [(0, 5)]
    assert sc.shot_bounds([2, 7], 10) == [(0, 2), (2, 7), (7, 10)]
    assert sc.shot_bounds([], 0) == []
    bounds = sc.shot_bounds([1, 4, 9], 10)
    assert bounds[0][0] == 0 and bounds[-1][1] == 10
    assert all(bounds[k][1] == bounds[k + 1][0] for k in range(len(bounds) - 1))


@pytest.mark.parametrize("call, name", [
    (lambda: sc.find_cuts(torch.zeros(4, 8, 8, 3), 0.0), "threshold"),
    (lambda: sc.find_cuts(torch.zeros(4, 8, 8, 3), 1.5), "threshold"),
    (lambda: sc.find_cuts(torch.zeros(4, 8, 8, 3), float("nan")), "threshold"),
    (lambda: sc.find_cuts(torch.zeros(4, 8, 8, 3), "0.3"), "threshold"),
    (lambda: sc.find_cuts(torch.zeros(8, 8, 3)), "frames"),
    (lambda: sc.find_cuts([[0.0]]), "frames"),
    (lambda: sc.find_cuts(torch.zeros(4, 8, 8, 2)), "frames"),
    (lambda: sc.find_cuts(torch.full((2, 8, 8, 3), float("nan"))), "frames"),
    (lambda: sc.frame_signature(torch.zeros(8, 8, 3, dtype=torch.int32)), "frame"),
    (lambda: sc.frame_signature(torch.zeros(2, 8, 8, 3)), "frame"),
    (lambda: sc.cuts_from_signatures(torch.zeros(4, 7)), "signatures"),
    (lambda: sc.cuts_from_signatures([torch.zeros(3)]), "signatures"),
    (lambda: sc.cuts_from_signatures(5), "signatures"),
    (lambda: sc.cuts_from_signatures(torch.zeros(4, sc.SIGNATURE_SIZE), -0.1), "threshold"),
    (lambda: sc.shot_bounds([0, 3], 5), "cuts"),
    (lambda: sc.shot_bounds([3, 2], 5), "cuts"),
    (lambda: sc.shot_bounds([5], 5), "cuts"),
    (lambda: sc.shot_bounds([2, 2], 5), "cuts"),
    (lambda: sc.shot_bounds([1.5], 5), "cuts"),
    (lambda: sc.shot_bounds([], -1), "total"),
])
def test_parameter_errors(call, name):
    with pytest.raises(ParameterError) as info:
        call()
    assert info.value.parameter == name
    assert str(info.value).startswith(name) and info.value.fix


@needs_realrain
def test_full_size_frames_are_shrunk_first():
    # 720x480 source frames are area-averaged below WORK_SIDE before the histograms: same cuts, close signatures
    big = [video_io.load_video(str(REALRAIN_DIR / f"{n}.mp4"), frame_cap=8).images for n in ("42", "152", "437")]
    assert big[0].shape[1:] == (480, 720, 3)
    frames, cuts = join(big)
    assert sc.find_cuts(frames) == cuts == [8, 16]
    small = torch.nn.functional.interpolate(frames.permute(0, 3, 1, 2), size=(80, 120), mode="area")
    s_big = torch.stack([sc.frame_signature(f) for f in frames])
    s_small = torch.stack([sc.frame_signature(f) for f in small.permute(0, 2, 3, 1)])
    assert float(sc.signature_distance(s_big, s_small).max()) < 0.02


def test_latent_shot_starts():
    # one latent per frame (image models): the cuts themselves
    assert sc.latent_shot_starts([3, 7], 10, 10) == [3, 7]
    # 4x temporal compression, first frame alone: latent t >= 1 covers frames 4t-3..4t
    assert sc.latent_shot_starts([5], 49, 13) == [2]  # frame 5 is latent 2's first frame: no straddle
    assert sc.straddling_latents([5], 49, 13) == []
    assert sc.latent_shot_starts([12], 49, 13) == [3]  # latent 3 = frames 9..12: straddles, counted with the new shot
    assert sc.straddling_latents([12], 49, 13) == [3]
    assert sc.latent_shot_starts([1], 49, 13) == [1]  # a cut right after frame 0 (latent 0 is frame 0 alone)
    assert sc.latent_shot_starts([10, 11], 49, 13) == [3]  # two cuts inside one latent: one start
    assert sc.latent_shot_starts([48], 49, 13) == [12]
    assert sc.latent_shot_starts([], 49, 13) == []
    assert sc.latent_shot_starts([2], 9, 1) == []
    with pytest.raises(ParameterError) as info:
        sc.latent_shot_starts([5], 48, 13)
    assert info.value.parameter == "latent_frames" and "49" in info.value.fix
    with pytest.raises(ParameterError) as info:
        sc.latent_shot_starts([60], 49, 13)
    assert info.value.parameter == "cuts"


def test_shot_cuts_value():
    value = sc.ShotCuts([4, 9], 12)
    assert value.cuts == (4, 9) and value.frames == 12 and value.shots == 3
    assert sc.ShotCuts((), 5).shots == 1
    with pytest.raises(ParameterError) as info:
        sc.ShotCuts([12], 12)
    assert info.value.parameter == "cuts"


def test_shot_starts_in_the_flow_kernels():
    from zsvr.kernels import frame_layout, noise_sharing, temporal_consistency_guidance as tcg

    # batch layout: each shot a video of its own, positions from its first frame; with cond/uncond chunks
    layout = frame_layout.batch_layout(12, [0, 1], 0, shot_starts=[2, 4])
    assert layout.video[:6] == [0, 0, 1, 1, 2, 2] and layout.position[:6] == [0, 1, 0, 1, 0, 1]
    assert layout.video[6:] == [3, 3, 4, 4, 5, 5]
    # with frames_per_video 3 (videos 0-2, 3-5) and a cut at 4: segments 0-2 | 3 | 4-5
    layout = frame_layout.batch_layout(6, [0], 3, shot_starts=[4])
    assert layout.video == [0, 0, 0, 1, 2, 2] and layout.position == [0, 1, 2, 0, 0, 1]
    # a context window (frames 2..5 of the batch) that straddles the cut at 4
    layout = frame_layout.batch_layout(4, [0], 0, window=[2, 3, 4, 5], shot_starts=[4])
    assert layout.video == [0, 0, 1, 1] and layout.position == [2, 3, 0, 1]
    # temporal consistency guidance: the pair across a cut is left out
    prev, cur = tcg.consecutive_pairs(6, 0, shot_starts=[3])
    assert prev.tolist() == [0, 1, 3, 4] and cur.tolist() == [1, 2, 4, 5]
    # noise sharing: a shot's first frame keeps its own noise; the rest equals the shot blended alone
    gen = torch.Generator().manual_seed(0)
    z = torch.randn(6, 2, 4, 4, generator=gen)
    flow = torch.full((5, 2, 4, 4), -1.0)
    joined = noise_sharing.blend_noise(z, flow, None, 0.3, 0, shot_starts=[3])
    assert torch.equal(joined[3], z[3])
    assert torch.equal(joined[:3], noise_sharing.blend_noise(z[:3], flow[:2], None, 0.3, 0))
    assert torch.equal(joined[3:], noise_sharing.blend_noise(z[3:], flow[:2], None, 0.3, 0))
    assert not torch.equal(noise_sharing.blend_noise(z, flow, None, 0.3, 0)[3], z[3])
    for call in (lambda: frame_layout.batch_layout(4, [0], 0, shot_starts=[1.5]),
                 lambda: tcg.consecutive_pairs(4, 0, shot_starts=["2"]),
                 lambda: noise_sharing.blend_noise(z, flow, None, 0.3, 0, shot_starts=[True])):
        with pytest.raises(ParameterError) as info:
            call()
        assert info.value.parameter == "shot_starts"
