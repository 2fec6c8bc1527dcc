"""Kernel tests for ``kernels/video_io.py`` (the ZSVR_LoadVideo decoder), without ComfyUI.

Two kinds of input:
* the real clips in ``shared/data/realrain`` (720x480, 8 fps, 49 frames, H.264),
  found through ``ZSVR_SHARED`` or ``<repo>/../shared``; skipped if absent;
* clips generated here with PyAV: a 64x48, 30-frame, 30 fps clip whose frame i
  is a flat grey of level ``4 + 8*i`` (so the frame index can be read back),
  a lossless FFV1/MKV clip with coloured bands (geometry of crop/pad/stretch;
  MKV stores no frame count), noise clips cut or truncated to make corrupt
  files, a text file named .mp4, an audio-only file and a video with no frames.
"""

from __future__ import annotations

import fractions
import os
import pathlib

import av
import numpy as np
import pytest
import torch

from zsvr.kernels import video_io
from zsvr.kernels.errors import ParameterError

PACK_DIR = pathlib.Path(__file__).resolve().parent.parent
SHARED_DIR = pathlib.Path(os.environ.get("ZSVR_SHARED", PACK_DIR.parent / "shared"))
REALRAIN_DIR = SHARED_DIR / "data" / "realrain"
REALRAIN = sorted(REALRAIN_DIR.glob("*.mp4")) if REALRAIN_DIR.is_dir() else []
needs_realrain = pytest.mark.skipif(
    not REALRAIN, reason=f"real clips not found in {REALRAIN_DIR} (set ZSVR_SHARED to the shared folder)"
)

N_INDEX = 30  # frames in the generated index clip


# ---------------------------------------------------------------------------
# Clip generation.
# ---------------------------------------------------------------------------


def write_clip(path, frames, codec="libx264", rate=30, pix_fmt="yuv420p", options=None, faststart=False):
    """Encode ``frames`` (uint8 [H, W, 3] arrays) with PyAV; return the path."""
    kwargs = {"options": {"movflags": "faststart"}} if faststart else {}
    container = av.open(str(path), "w", **kwargs)
    stream = container.add_stream(codec, rate=rate)
    stream.height, stream.width = frames[0].shape[:2]
    stream.pix_fmt = pix_fmt
    if options:
        stream.options = options
    for array in frames:
        for packet in stream.encode(av.VideoFrame.from_ndarray(array, format="rgb24")):
            container.mux(packet)
    for packet in stream.encode():
        container.mux(packet)
    container.close()
    return pathlib.Path(path)


def grey_level(i: int) -> int:
    return 4 + 8 * i


def frame_index(image: torch.Tensor) -> int:
    """Read back the index painted into a frame of the index clip."""
    return int(round((float(image.mean()) * 255 - 4) / 8))


@pytest.fixture(scope="session")
def clips(tmp_path_factory):
    d = tmp_path_factory.mktemp("clips")
    rng = np.random.default_rng(0)
    out = {}
    index_frames = [np.full((48, 64, 3), grey_level(i), np.uint8) for i in range(N_INDEX)]
    out["index"] = write_clip(d / "index.mp4", index_frames, options={"qp": "0"})
    # 64x32 bands: red | green (middle half) | blue, lossless RGB, no frame count in MKV.
    band = np.zeros((32, 64, 3), np.uint8)
    band[:, :16] = (255, 0, 0)
    band[:, 16:48] = (0, 255, 0)
    band[:, 48:] = (0, 0, 255)
    out["bands"] = write_clip(d / "bands.mkv", [band] * 6, codec="ffv1", pix_fmt="bgr0")
    # Noise clip, moov atom first, for corruption tests.
    noise = [rng.integers(0, 256, (48, 64, 3), dtype=np.uint8) for _ in range(N_INDEX)]
    good = write_clip(d / "noise.mp4", noise, faststart=True)
    data = good.read_bytes()
    n = len(data)
    out["noise"] = good
    (d / "cut.mp4").write_bytes(data[: n // 3] + data[n // 2 :])  # bytes cut out of the middle
    out["cut"] = d / "cut.mp4"
    (d / "truncated.mp4").write_bytes(data[: n // 2])  # tail missing
    out["truncated"] = d / "truncated.mp4"
    mdat = data.find(b"mdat")
    (d / "zeroed.mp4").write_bytes(data[: mdat + 4] + bytes(n - mdat - 4))  # every frame destroyed
    out["zeroed"] = d / "zeroed.mp4"
    # Default mp4 (index at the end) with bytes cut from the middle: cannot be opened at all.
    plain = write_clip(d / "plain.mp4", noise[:10])
    pdata = plain.read_bytes()
    (d / "cut_plain.mp4").write_bytes(pdata[: len(pdata) // 3] + pdata[len(pdata) // 2 :])
    out["cut_plain"] = d / "cut_plain.mp4"
    (d / "text.mp4").write_text("this is not a video\n" * 50)
    out["text"] = d / "text.mp4"
    out["audio"] = _audio_only(d / "audio.mp4")
    out["empty"] = _no_frames(d / "empty.avi")
    return out


def _audio_only(path):
    container = av.open(str(path), "w")
    stream = container.add_stream("aac", rate=8000)
    stream.layout = "mono"
    for i in range(4):
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
        frame.sample_rate = 8000
        frame.pts = i * 1024
        for packet in stream.encode(frame):
            container.mux(packet)
    for packet in stream.encode():
        container.mux(packet)
    container.close()
    return path


def _no_frames(path):
    """An AVI with a video stream and not a single frame."""
    container = av.open(str(path), "w")
    stream = container.add_stream("mpeg4", rate=30)
    stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
    container.start_encoding()
    container.close()
    return path


def load(path, **kw):
    kw.setdefault("memory_limit", 2 * 1024**3)
    return video_io.load_video(str(path), **kw)


def error_of(path, **kw) -> ParameterError:
    with pytest.raises(ParameterError) as info:
        load(path, **kw)
    return info.value


# ---------------------------------------------------------------------------
# Real clips.
# ---------------------------------------------------------------------------


@needs_realrain
@pytest.mark.parametrize("clip", REALRAIN, ids=[p.name for p in REALRAIN])
def test_realrain_native(clip):
    r = load(clip)
    assert r.images.shape == (49, 480, 720, 3)
    assert r.images.dtype == torch.float32 and r.images.is_contiguous()
    assert 0.0 <= float(r.images.min()) and float(r.images.max()) <= 1.0
    assert float(r.images.std()) > 0.02  # real picture content, not a blank buffer
    assert r.fps == pytest.approx(8.0) and r.frame_count == 49 and r.decoded == 49
    assert (r.source.width, r.source.height, r.source.declared_frames) == (720, 480, 49)


@needs_realrain
def test_realrain_resize_rule_and_selection():
    clip = REALRAIN[0]
    full = load(clip)
    r = load(clip, width=480, height=320, every_nth=2, frame_rule="8k+1")
    # 25 frames selected (0, 2, ..., 48) is already 8*3+1.
    assert r.images.shape == (25, 320, 480, 3) and r.frame_count == 25
    assert r.fps == pytest.approx(4.0)
    # Same aspect ratio: a plain downscale of the matching source frame.
    ref = torch.nn.functional.interpolate(
        full.images[10:11].permute(0, 3, 1, 2), size=(320, 480), mode="bilinear", antialias=True
    ).permute(0, 2, 3, 1)[0]
    assert float((r.images[5] - ref).abs().mean()) < 0.02
    assert float((r.images[5] - r.images[6]).abs().mean()) > 0  # different frames
    # frame_cap 48 with 4k+1 -> 45; the kept frames are the first 45.
    r = load(clip, frame_cap=48, frame_rule="4k+1")
    assert r.frame_count == 45 and torch.equal(r.images, full.images[:45])
    # Only the width given: the height follows the aspect ratio (720x480 -> 360x240).
    r = load(clip, width=360, frame_cap=2)
    assert r.images.shape == (2, 240, 360, 3)


@needs_realrain
def test_realrain_crop_is_centre_of_cover_scale():
    clip = REALRAIN[1]
    full = load(clip, frame_cap=1)
    r = load(clip, width=240, height=240, fit="crop", frame_cap=1)
    # Cover scale: 720x480 -> 360x240, then the centre 240 columns (60..300).
    ref = torch.nn.functional.interpolate(
        full.images.permute(0, 3, 1, 2), size=(240, 360), mode="bilinear", antialias=True
    ).permute(0, 2, 3, 1)[0, :, 60:300]
    assert r.images.shape == (1, 240, 240, 3)
    assert float((r.images[0] - ref).abs().mean()) < 0.02


@needs_realrain
def test_realrain_absurd_size_refused_with_byte_count():
    e = error_of(REALRAIN[0], width=16384, height=16384, size_multiple=8)
    need = 49 * 16384 * 16384 * 3 * 4
    assert e.parameter == "width"  # an upscale: the size is at fault, not the count
    assert f"{need:,}" in str(e) and "memory limit" in str(e)


# ---------------------------------------------------------------------------
# Selection: start frame, every-nth, cap, frame rule, padding.
# ---------------------------------------------------------------------------


def test_all_frames_in_order(clips):
    r = load(clips["index"])
    assert r.frame_count == N_INDEX and r.images.shape == (N_INDEX, 48, 64, 3)
    assert [frame_index(f) for f in r.images] == list(range(N_INDEX))
    assert r.fps == pytest.approx(30.0)


def test_start_every_nth_and_cap_pick_the_right_frames(clips):
    r = load(clips["index"], start_frame=5, every_nth=3, frame_cap=4)
    assert [frame_index(f) for f in r.images] == [5, 8, 11, 14]
    assert r.fps == pytest.approx(10.0) and r.frame_count == 4
    assert r.decoded == 15  # stopped right after frame 14


def test_frame_cap_zero_means_all_and_large_cap_is_clamped(clips):
    assert load(clips["index"], frame_cap=0).frame_count == N_INDEX
    assert load(clips["index"], frame_cap=1000).frame_count == N_INDEX
    assert load(clips["index"], start_frame=29).frame_count == 1


@pytest.mark.parametrize(
    "rule, expected", [("any", 30), ("4k+1", 29), ("8k+1", 25)]
)
def test_frame_rule_trims_from_the_end(clips, rule, expected):
    r = load(clips["index"], frame_rule=rule)
    assert r.frame_count == expected == r.images.shape[0]
    assert [frame_index(f) for f in r.images] == list(range(expected))


@pytest.mark.parametrize("rule, expected", [("4k+1", 33), ("8k+1", 33)])
def test_pad_frames_repeats_the_last_frame(clips, rule, expected):
    r = load(clips["index"], frame_rule=rule, pad_frames=True)
    assert r.frame_count == expected
    assert [frame_index(f) for f in r.images] == list(range(N_INDEX)) + [N_INDEX - 1] * (expected - N_INDEX)
    assert torch.equal(r.images[-1], r.images[N_INDEX - 1])


def test_pad_frames_rescues_a_short_selection(clips):
    r = load(clips["index"], start_frame=27, frame_rule="4k+1", pad_frames=True)
    assert [frame_index(f) for f in r.images] == [27, 28, 29, 29, 29]
    r = load(clips["index"], frame_cap=3, frame_rule="8k+1", pad_frames=True)
    assert [frame_index(f) for f in r.images] == [0, 1, 2] + [2] * 6


def test_pad_frames_off_never_invents_frames(clips):
    r = load(clips["index"], frame_rule="any", pad_frames=True)
    assert r.frame_count == N_INDEX


def test_rule_count_table():
    assert [video_io.rule_count(n, "4k+1") for n in (0, 1, 4, 5, 8, 9, 49, 50)] == [0, 0, 0, 5, 5, 9, 49, 49]
    assert [video_io.rule_count(n, "8k+1") for n in (8, 9, 16, 17, 49)] == [0, 9, 9, 17, 49]
    assert [video_io.rule_count(n, "4k+1", pad=True) for n in (1, 5, 6, 49, 50)] == [5, 5, 9, 49, 53]
    assert video_io.rule_count(7, "any") == 7
    assert (video_io.rule_minimum("any"), video_io.rule_minimum("4k+1"), video_io.rule_minimum("8k+1")) == (1, 5, 9)


# ---------------------------------------------------------------------------
# Size and fit.
# ---------------------------------------------------------------------------


def test_fit_crop_keeps_the_centre(clips):
    r = load(clips["bands"], width=32, height=32, fit="crop", size_multiple=16)
    assert r.images.shape == (6, 32, 32, 3)
    green = r.images[0]
    assert float(green[..., 1].min()) > 0.95 and float(green[..., 0].max()) < 0.05 and float(green[..., 2].max()) < 0.05


def test_fit_pad_adds_black_bars(clips):
    r = load(clips["bands"], width=64, height=64, fit="pad")
    img = r.images[0]
    assert img.shape == (64, 64, 3)
    assert float(img[:16].max()) == 0.0 and float(img[48:].max()) == 0.0  # bars
    assert img[32, 2].tolist() == pytest.approx([1.0, 0.0, 0.0], abs=0.02)  # red band kept whole
    assert img[32, 61].tolist() == pytest.approx([0.0, 0.0, 1.0], abs=0.02)


def test_fit_stretch_keeps_everything_distorted(clips):
    r = load(clips["bands"], width=32, height=32, fit="stretch")
    img = r.images[0]
    assert img[16, 2].tolist() == pytest.approx([1.0, 0.0, 0.0], abs=0.02)  # red band now 8 px wide
    assert img[16, 16].tolist() == pytest.approx([0.0, 1.0, 0.0], abs=0.02)
    assert img[16, 29].tolist() == pytest.approx([0.0, 0.0, 1.0], abs=0.02)


def test_upscale_works(clips):
    r = load(clips["index"], width=128, height=96, frame_cap=2)
    assert r.images.shape == (2, 96, 128, 3)
    assert [frame_index(f) for f in r.images] == [0, 1]


def test_target_size_rules():
    assert video_io.target_size(720, 480, 0, 0, 16) == (720, 480)
    assert video_io.target_size(1920, 1080, 0, 0, 16) == (1920, 1088)  # derived sizes are rounded
    assert video_io.target_size(720, 480, 480, 0, 8) == (480, 320)
    assert video_io.target_size(720, 480, 0, 240, 8) == (360, 240)
    assert video_io.target_size(720, 480, 512, 512, 16) == (512, 512)
    plan = video_io.plan_resize(720, 480, 240, 240, "crop")
    assert (plan.scaled_w, plan.scaled_h) == (360, 240)
    plan = video_io.plan_resize(720, 480, 240, 240, "pad")
    assert (plan.scaled_w, plan.scaled_h) == (240, 160)


# ---------------------------------------------------------------------------
# Streaming.
# ---------------------------------------------------------------------------


def test_streaming_stops_once_the_cap_is_reached(clips, monkeypatch):
    """With frame_cap=3 only 3 frames are decoded and converted, and few packets are pulled."""
    pulled = []
    converted = []
    real_open = video_io.av.open
    real_convert = video_io._frame_to_uint8

    class Counting:
        def __init__(self, container):
            self._c = container

        def __getattr__(self, name):
            return getattr(self._c, name)

        def demux(self, *args, **kwargs):
            for packet in self._c.demux(*args, **kwargs):
                pulled.append(packet.size)
                yield packet

    monkeypatch.setattr(video_io.av, "open", lambda *a, **k: Counting(real_open(*a, **k)))
    monkeypatch.setattr(video_io, "_frame_to_uint8", lambda *a: converted.append(1) or real_convert(*a))
    r = video_io.load_video(str(clips["index"]), frame_cap=3, memory_limit=2**30)
    assert [frame_index(f) for f in r.images] == [0, 1, 2]
    assert r.decoded == 3 and len(converted) == 3
    # Frame threading lets the decoder run a few packets ahead, never the whole file.
    assert 3 <= len(pulled) <= 10 < N_INDEX


def test_skipped_frames_are_never_converted(clips, monkeypatch):
    converted = []
    real_convert = video_io._frame_to_uint8
    monkeypatch.setattr(video_io, "_frame_to_uint8", lambda *a: converted.append(1) or real_convert(*a))
    r = load(clips["index"], start_frame=10, every_nth=5)
    assert [frame_index(f) for f in r.images] == [10, 15, 20, 25]
    assert len(converted) == 4 and r.decoded == N_INDEX


def test_progress_callback_per_frame_and_interrupt(clips):
    calls = []
    load(clips["index"], frame_cap=5, start_frame=2, progress=lambda d, t: calls.append((d, t)))
    assert calls == [(i, 7) for i in range(1, 8)]  # frames 0..6 decoded, 7 expected

    class Interrupted(Exception):
        pass

    def stop(done, total):
        if done == 4:
            raise Interrupted()

    with pytest.raises(Interrupted):  # passed through unchanged, not reported as a corrupt file
        load(clips["index"], progress=stop)


# ---------------------------------------------------------------------------
# Memory estimate.
# ---------------------------------------------------------------------------


def test_memory_estimate_refuses_before_decoding(clips):
    per_frame = 48 * 64 * 3 * 4
    calls = []
    with pytest.raises(ParameterError) as info:
        video_io.load_video(str(clips["index"]), memory_limit=10 * per_frame, progress=lambda d, t: calls.append(d))
    e = info.value
    assert e.parameter == "frame_cap"
    assert f"{30 * per_frame:,} bytes" in str(e) and "frame_cap to at most 10" in str(e)
    assert calls == []  # refused from the container's frame count, nothing decoded
    assert video_io.estimate_output_bytes(49, 480, 720) == 49 * 480 * 720 * 12
    # Fits exactly: allowed.
    assert video_io.load_video(str(clips["index"]), frame_cap=10, memory_limit=10 * per_frame).frame_count == 10


def test_memory_estimate_from_cap_when_count_unknown(clips):
    per_frame = 32 * 64 * 3 * 4
    assert video_io.probe(str(clips["bands"])).declared_frames is None  # MKV: no frame count
    calls = []
    with pytest.raises(ParameterError) as info:
        video_io.load_video(str(clips["bands"]), frame_cap=5, memory_limit=4 * per_frame, progress=lambda d, t: calls.append(d))
    assert f"{5 * per_frame:,}" in str(info.value) and calls == []


def test_memory_guard_while_decoding_when_nothing_is_known(clips):
    per_frame = 32 * 64 * 3 * 4
    calls = []
    with pytest.raises(ParameterError) as info:
        video_io.load_video(str(clips["bands"]), memory_limit=3 * per_frame, progress=lambda d, t: calls.append(d))
    assert "more than" in str(info.value) and "at least 4 frames" in str(info.value)
    assert len(calls) == 3  # stopped at the 4th frame, before keeping it


def test_default_memory_limit_is_half_the_available_ram_and_load_video_uses_it(clips, monkeypatch):
    import sys
    import types

    per_frame = 48 * 64 * 3 * 4  # the index clip: 30 frames declared in the container
    fake = types.SimpleNamespace(virtual_memory=lambda: types.SimpleNamespace(available=2 * 10 * per_frame + 1))
    monkeypatch.setitem(sys.modules, "psutil", fake)
    assert video_io.default_memory_limit() == 10 * per_frame  # int(available * 0.5)
    with pytest.raises(ParameterError) as info:  # no memory_limit given: the default applies
        video_io.load_video(str(clips["index"]))
    assert info.value.parameter == "frame_cap" and "frame_cap to at most 10" in str(info.value)
    monkeypatch.setitem(sys.modules, "psutil", None)  # psutil missing: the fixed 16 GiB
    assert video_io.default_memory_limit() == 16 * 1024**3
    assert video_io.format_bytes(3 * 1024**3) == "3.0 GiB (3,221,225,472 bytes)"
    assert video_io.format_bytes(1536) == "1.5 KiB (1,536 bytes)"
    assert video_io.format_bytes(1023) == "1023 bytes"


# ---------------------------------------------------------------------------
# Bad input: each a clear ParameterError naming the input.
# ---------------------------------------------------------------------------


def test_missing_file(tmp_path):
    e = error_of(tmp_path / "nope.mp4")
    assert e.parameter == "path" and "not found" in str(e) and "nope.mp4" in str(e)
    e = error_of(tmp_path)
    assert e.parameter == "path" and "not a file" in str(e)


def test_text_file_is_not_a_video(clips):
    e = error_of(clips["text"])
    assert e.parameter == "path" and "cannot be opened as a video" in str(e)


def test_audio_only_file_has_no_video_stream(clips):
    e = error_of(clips["audio"])
    assert e.parameter == "path" and "no video stream" in str(e) and "audio" in str(e)


def test_cut_plain_mp4_cannot_be_opened(clips):
    e = error_of(clips["cut_plain"])
    assert e.parameter == "path" and "cannot be opened" in str(e)


def test_zero_decodable_frames(clips):
    e = error_of(clips["empty"])
    assert e.parameter == "path" and "zero decodable frames" in str(e)
    e = error_of(clips["empty"], best_effort=True)
    assert "zero decodable frames" in str(e)
    # Every frame destroyed: corrupt at frame 0, and even best_effort has nothing to return.
    e = error_of(clips["zeroed"])
    assert "corrupt" in str(e) and "frame 0" in str(e)
    e = error_of(clips["zeroed"], best_effort=True)
    assert "zero decodable frames" in str(e)


def test_corrupt_mid_file_errors_unless_best_effort(clips, caplog):
    assert load(clips["noise"]).frame_count == N_INDEX  # the intact original decodes
    e = error_of(clips["cut"])
    assert e.parameter == "path" and "corrupt" in str(e) and "best_effort" in str(e)
    reached = int(str(e).split("failed at frame ")[1].split()[0])
    assert 0 < reached < N_INDEX
    with caplog.at_level("WARNING", logger="zsvr"):
        r = load(clips["cut"], best_effort=True)
    assert r.frame_count == reached and r.images.shape[0] == reached
    assert r.warnings and f"using the {reached} frames" in r.warnings[0]
    assert any("best_effort" in m for m in caplog.messages)
    # A frame rule still applies to what was rescued.
    assert load(clips["cut"], best_effort=True, frame_rule="4k+1").frame_count == video_io.rule_count(reached, "4k+1")


def test_truncated_file_detected_from_declared_count(clips):
    e = error_of(clips["truncated"])
    assert e.parameter == "path" and "declares 30 frames" in str(e)
    r = load(clips["truncated"], best_effort=True)
    assert 0 < r.frame_count < N_INDEX and r.warnings
    # A cap reached before the damage is not an error: decoding stops first.
    assert load(clips["truncated"], frame_cap=3).frame_count == 3


def test_size_not_a_multiple_names_the_multiple_and_nearest_sizes(clips):
    e = error_of(clips["index"], width=500, height=320, size_multiple=8)
    assert e.parameter == "width" and "multiple of 8" in str(e) and "496 or 504" in str(e)
    e = error_of(clips["index"], width=64, height=40, size_multiple=16)
    assert e.parameter == "height" and "multiple of 16" in str(e) and "32 or 48" in str(e)
    assert load(clips["index"], width=60, height=40, size_multiple=1, frame_cap=1).images.shape == (1, 40, 60, 3)


def test_frame_rule_leaving_no_frames(clips):
    e = error_of(clips["index"], start_frame=27, frame_rule="4k+1")
    assert e.parameter == "frame_rule" and "at least 5" in str(e) and "has 3" in str(e)
    e = error_of(clips["index"], every_nth=4, start_frame=0, frame_cap=0, frame_rule="8k+1")  # 8 frames < 9
    assert "at least 9" in str(e) and "has 8" in str(e)
    e = error_of(clips["index"], frame_cap=3, frame_rule="4k+1")
    assert e.parameter == "frame_cap" and "at least 5" in str(e)


def test_start_frame_past_the_end(clips):
    e = error_of(clips["index"], start_frame=30)
    assert e.parameter == "start_frame" and "has 30 frames" in str(e)
    e = error_of(clips["bands"], start_frame=6)  # count unknown until decoded
    assert e.parameter == "start_frame" and "6 decodable frames" in str(e)


@pytest.mark.parametrize(
    "kw, name",
    [
        ({"start_frame": -1}, "start_frame"),
        ({"frame_cap": -2}, "frame_cap"),
        ({"every_nth": 0}, "every_nth"),
        ({"width": -8}, "width"),
        ({"fit": "zoom"}, "fit"),
        ({"frame_rule": "3k+1"}, "frame_rule"),
        ({"size_multiple": 0}, "size_multiple"),
    ],
)
def test_bad_parameters_name_their_input(clips, kw, name):
    assert error_of(clips["index"], **kw).parameter == name


# ---------------------------------------------------------------------------
# Seeking to start_frame, the audio span, the whole-clip probe (chunked runs).
# ---------------------------------------------------------------------------


def _index_frames(n, h=48, w=64):
    return [np.full((h, w, 3), grey_level(i % 31), np.uint8) for i in range(n)]


def _vfr_clip(path, n=24):
    """Frame i shown at 0, 125, 375, 500, 625, 875, ... ms (every third frame lasts twice as long)."""
    container = av.open(str(path), "w")
    stream = container.add_stream("libx264", rate=8)
    stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
    stream.codec_context.time_base = stream.time_base = fractions.Fraction(1, 1000)
    stream.options = {"g": "4", "qp": "0"}
    t = 0
    for i, array in enumerate(_index_frames(n)):
        frame = av.VideoFrame.from_ndarray(array, format="rgb24")
        frame.pts, frame.time_base = t, fractions.Fraction(1, 1000)  # ms (the muxer changes the stream's)
        t += 250 if i % 3 == 2 else 125
        for packet in stream.encode(frame):
            container.mux(packet)
    for packet in stream.encode():
        container.mux(packet)
    container.close()
    return pathlib.Path(path)


@pytest.fixture(scope="module")
def seek_clips(tmp_path_factory):
    """Clips with keyframes every few frames: H.264 (GOP 5, B-frames), FFV1 (all intra), variable timing."""
    d = tmp_path_factory.mktemp("seek")
    return {
        "gop5": write_clip(d / "gop5.mp4", _index_frames(N_INDEX),
                           options={"g": "5", "keyint_min": "5", "bf": "2", "qp": "0"}),
        "ffv1": write_clip(d / "intra.mkv", _index_frames(N_INDEX), codec="ffv1", pix_fmt="bgr0"),
        "vfr": _vfr_clip(d / "vfr.mp4"),
    }


def _linear(monkeypatch, path, **kw):
    """load_video with the keyframe seek switched off (decode from the first frame)."""
    with monkeypatch.context() as m:
        m.setattr(video_io, "_decode_from_keyframe", lambda *a, **k: None)
        return load(path, **kw)


def test_start_frame_seeks_to_the_keyframe_before_it(seek_clips):
    """GOP 5: start 17 decodes from the keyframe at 15 (6 frames for 4 kept), not the 21 frames before it."""
    r = load(seek_clips["gop5"], start_frame=17, frame_cap=4)
    assert [frame_index(f) for f in r.images] == [17, 18, 19, 20]
    assert r.decoded == 6


@pytest.mark.parametrize("name", ["gop5", "ffv1", "vfr"])
@pytest.mark.parametrize("start, cap, nth", [(1, 5, 1), (7, 0, 1), (12, 4, 2), (19, 3, 1)])
def test_seek_gives_the_frames_decoding_from_the_start_gives(seek_clips, monkeypatch, name, start, cap, nth):
    seeked = load(seek_clips[name], start_frame=start, frame_cap=cap, every_nth=nth)
    linear = _linear(monkeypatch, seek_clips[name], start_frame=start, frame_cap=cap, every_nth=nth)
    assert torch.equal(seeked.images, linear.images)
    assert seeked.decoded <= linear.decoded
    if name != "vfr":
        assert frame_index(seeked.images[0]) == start


def test_seek_on_a_single_keyframe_clip_decodes_from_frame_0(clips):
    r = load(clips["index"], start_frame=20, frame_cap=3)
    assert [frame_index(f) for f in r.images] == [20, 21, 22] and r.decoded == 23


def test_seek_refused_when_timestamps_cannot_be_trusted_falls_back(seek_clips, monkeypatch):
    """Packets without timestamps: no seek, the frames come from decoding from the start."""
    monkeypatch.setattr(video_io, "_presentation_order", lambda *a, **k: None)
    r = load(seek_clips["gop5"], start_frame=17, frame_cap=4)
    assert [frame_index(f) for f in r.images] == [17, 18, 19, 20] and r.decoded == 21


@pytest.fixture(scope="module")
def sound_clips(tmp_path_factory):
    from long_clips import write_clip as write_sound_clip

    d = tmp_path_factory.mktemp("sound")
    frames = _index_frames(40)
    return {kind: write_sound_clip(d / f"{kind}.{'mkv' if kind == 'pcm' else 'mp4'}", 40, 64, 48, fps=8, gop=8,
                                   audio=None if kind == "silent" else kind, frames=frames)
            for kind in ("aac", "pcm", "broken", "silent")}


@pytest.mark.parametrize("kind", ["aac", "pcm"])
@pytest.mark.parametrize("start, cap", [(0, 9), (11, 9), (25, 0)])
def test_audio_is_the_tracks_samples_under_the_selected_frames(sound_clips, kind, start, cap):
    """The AUDIO span starts at the first frame's time and lasts the output's duration; the samples are the
    full track's (decoded independently with PyAV) at those times."""
    from long_clips import decode_audio

    full, rate = decode_audio(sound_clips[kind])
    r = load(sound_clips[kind], start_frame=start, frame_cap=cap, audio=True)
    first = round(start / 8 * rate)
    expected = full[:, first:first + round(r.frame_count / 8 * rate)]
    assert r.audio.sample_rate == rate == 44100
    assert tuple(r.audio.waveform.shape) == (1, 2, expected.shape[1])
    assert np.abs(r.audio.waveform[0].numpy() - expected).max() < 1e-4
    assert float(np.abs(expected).max()) > 0.1  # there is sound in the span


def test_audio_that_cannot_be_decoded_warns_and_frames_still_load(sound_clips):
    r = load(sound_clips["broken"], frame_cap=9, audio=True)
    assert r.audio is None and r.frame_count == 9
    assert any("cannot be decoded" in w and "without sound" in w for w in r.warnings)


def test_clip_without_audio_has_none_and_no_warning(sound_clips):
    r = load(sound_clips["silent"], frame_cap=9, audio=True)
    assert r.audio is None and r.warnings == []


def test_probe_counts_frames_and_checks_their_timing(seek_clips, sound_clips):
    p = video_io.probe_clip(seek_clips["gop5"])
    assert (p.frames, p.rate, p.constant_rate, p.audio) == (N_INDEX, 30, True, None)
    v = video_io.probe_clip(seek_clips["vfr"])
    assert v.frames == 24 and not v.constant_rate and v.frame_durations == (0.125, 0.25)
    a = video_io.probe_clip(sound_clips["aac"])
    assert (a.audio.codec, a.audio.sample_rate, a.audio.channels, a.audio.error) == ("aac", 44100, 2, None)
    b = video_io.probe_clip(sound_clips["broken"])
    assert b.audio.error and b.frames == 40


@pytest.mark.skipif(not REALRAIN, reason="shared/data/realrain not found")
def test_thumbnails_stream_every_frame_small_and_in_order():
    """iter_thumbnails (the shot scan's decode): every frame, in the loader's order, shrunk to 64 on the longer
    side, equal to the loader's own frames at that size (both AREA through swscale); bad input names itself."""
    path = REALRAIN[0]
    thumbs = list(video_io.iter_thumbnails(str(path), 64))
    loaded = video_io.load_video(str(path), width=64, height=43, fit="stretch", size_multiple=1)
    assert len(thumbs) == loaded.images.shape[0] == video_io.probe_clip(str(path)).frames
    assert all(t.dtype == torch.uint8 and tuple(t.shape) == (43, 64, 3) for t in thumbs)
    assert torch.equal(torch.stack(thumbs), (loaded.images * 255).round().to(torch.uint8))
    with pytest.raises(ParameterError) as info:
        next(video_io.iter_thumbnails(str(path), 0))
    assert info.value.parameter == "longest_side"
    with pytest.raises(ParameterError) as info:
        next(video_io.iter_thumbnails(str(path.with_suffix(".none")), 64))
    assert info.value.parameter == "path"
