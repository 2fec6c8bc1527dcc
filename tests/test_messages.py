"""Messages that used to mislead (issue 16, item 7), host-free: the kernels' part."""

from __future__ import annotations

import av
import numpy as np
import pytest

from zsvr.kernels import block_ranges, unet_blocks, video_io
from zsvr.kernels.errors import ParameterError, a_or_an
from zsvr.nodes.errors import InputError


def test_error_types_read_as_plain_names():
    """ComfyUI shows ``module.qualname``; the pack's module is its folder path, so the classes name themselves."""
    for cls in (InputError, ParameterError):
        shown = f"{cls.__module__}.{cls.__qualname__}"
        assert shown == f"ZSVR.{cls.__name__}" and "/" not in shown


def test_articles():
    assert a_or_an("EarlyStopSampler") == "an EarlyStopSampler"
    assert a_or_an("KSAMPLER") == "a KSAMPLER" and a_or_an("ACEStep") == "an ACEStep"


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    """12 frames of 64x48 (H.264)."""
    path = tmp_path_factory.mktemp("msg") / "twelve.mp4"
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=8)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        for i in range(12):
            frame = av.VideoFrame.from_ndarray(np.full((48, 64, 3), i * 20, np.uint8), format="rgb24")
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path


def test_empty_file_says_it_is_empty_with_its_name_only(tmp_path):
    empty = tmp_path / "server-only-folder" / "clip.mp4"
    empty.parent.mkdir()
    empty.write_bytes(b"")
    with pytest.raises(ParameterError) as info:
        video_io.load_video(str(empty))
    text = str(info.value)
    assert info.value.parameter == "path" and "the file is empty (0 bytes): 'clip.mp4'" in text
    assert "server-only-folder" not in text and "Invalid data" not in text and "Errno" not in text


def test_unreadable_file_names_ffmpegs_reason_without_the_servers_path(tmp_path):
    junk = tmp_path / "server-only-folder" / "junk.mp4"
    junk.parent.mkdir()
    junk.write_bytes(b"not a video" * 100)
    with pytest.raises(ParameterError) as info:
        video_io.load_video(str(junk))
    text = str(info.value)
    assert "'junk.mp4' cannot be opened as a video" in text and "server-only-folder" not in text


def _memory_error(clip, **kwargs) -> ParameterError:
    with pytest.raises(ParameterError) as info:
        video_io.load_video(str(clip), **kwargs)
    return info.value


def test_memory_advice_is_a_frame_cap_the_frame_rule_accepts(clip):
    """Room for 7 frames: under 4k+1 the advice is 5 (7 would be trimmed to 5 anyway, and 5 then loads)."""
    per_frame = video_io.estimate_output_bytes(1, 48, 64)
    e = _memory_error(clip, frame_rule="4k+1", memory_limit=7 * per_frame)
    assert e.parameter == "frame_cap" and "set frame_cap to at most 5 at 64x48" in str(e)
    assert video_io.load_video(str(clip), frame_rule="4k+1", frame_cap=5, memory_limit=7 * per_frame).frame_count == 5
    e = _memory_error(clip, frame_rule="any", memory_limit=7 * per_frame)  # no rule: as many as fit
    assert "set frame_cap to at most 7 at 64x48" in str(e)


def test_memory_advice_when_not_even_the_rules_fewest_frames_fit(clip):
    """The huge-width case: 16384 px wide leaves room for 3 frames, fewer than the 5 that 4k+1 needs, so no
    frame_cap can help (frame_cap 3 is refused by the rule): the advice is a size, with a pixel budget that fits
    5 frames and is the largest that does."""
    per_frame = video_io.estimate_output_bytes(1, 8, 16384)
    limit = 3 * per_frame
    e = _memory_error(clip, frame_rule="4k+1", width=16384, height=8, memory_limit=limit)
    text = str(e)
    assert e.parameter == "width" and "frame_cap to at most" not in text
    assert "5 frames (the fewest frame_rule '4k+1' allows) fit only at up to" in text
    pixels = int(text.split("fit only at up to ")[1].split(" pixels")[0].replace(",", ""))
    assert video_io.estimate_output_bytes(5, 1, pixels) <= limit < video_io.estimate_output_bytes(5, 1, pixels + 1)


@pytest.mark.parametrize("text", ["", "all", "0-3,15-29", "7", "0 - 2, 4"])
def test_block_syntax_accepts_what_parse_blocks_accepts(text):
    block_ranges.check_block_syntax(text)
    block_ranges.parse_blocks(text, 30)


@pytest.mark.parametrize("text,needle", [("0-3,x", "'x', which is not a block index"),
                                         ("5-2", "whose start is after its end"),
                                         ("-2", "a negative block index")])
def test_block_syntax_refuses_malformed_lists_without_a_model(text, needle):
    with pytest.raises(ParameterError) as info:
        block_ranges.check_block_syntax(text, input_name="blocks")
    assert info.value.parameter == "blocks" and needle in str(info.value)


def test_block_syntax_does_not_need_the_block_count():
    """Block 99 may exist: only parse_blocks, which knows the model, refuses it."""
    block_ranges.check_block_syntax("0-99")
    with pytest.raises(ParameterError, match="outside this model's blocks 0-29"):
        block_ranges.parse_blocks("0-99", 30)


def test_unet_block_syntax():
    unet_blocks.check_unet_block_syntax("input, middle, output:3-11")
    for text, needle in (("outptu", "not a U-Net block group"), ("input:1-x", "input block ids")):
        with pytest.raises(ParameterError, match=needle):
            unet_blocks.check_unet_block_syntax(text)
