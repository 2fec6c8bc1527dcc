"""Pure kernels the frame patches share: the batch layout, U-Net block selection, correspondence selection and
the latent preview (issue 12, item 5: pure logic in kernels, errors naming the kernel's own parameters)."""

from __future__ import annotations

import pytest
import torch

from zsvr.kernels import frame_layout as fl
from zsvr.kernels import optical_flow as of
from zsvr.kernels import temporal_attention as ta
from zsvr.kernels.errors import ParameterError
from zsvr.nodes.errors import InputError
from zsvr.kernels.unet_blocks import parse_unet_blocks


# -- batch layout -------------------------------------------------------------------------------------------------
def test_batch_layout_chunks_and_videos():
    layout = fl.batch_layout(12, [1, 0], 3)  # cond/uncond batched, two 3-frame videos each
    assert layout.chunks == 2 and layout.chunk_rows == 6 and layout.chunk_values == (1, 0)
    assert layout.chunk == [0] * 6 + [1] * 6
    assert layout.video == [0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3]  # unique across chunks
    assert layout.position == [0, 1, 2] * 4 and layout.frame == list(range(6)) * 2 and layout.window is None
    one = fl.batch_layout(4, [], 0)  # no cond_or_uncond: one chunk, one video
    assert one.chunks == 1 and one.video == [0] * 4 and one.position == [0, 1, 2, 3]


def test_batch_layout_under_a_context_window():
    layout = fl.batch_layout(8, [0, 1], 0, window=(2, 3, 4, 5))
    assert layout.window == (2, 3, 4, 5) and layout.frame == [2, 3, 4, 5] * 2
    assert layout.position == [2, 3, 4, 5] * 2 and layout.video == [0] * 4 + [1] * 4
    split = fl.batch_layout(4, [0], 4, window=(2, 3, 4, 5))  # videos are 4 consecutive frames of the full batch
    assert split.video == [0, 0, 1, 1] and split.position == [2, 3, 0, 1]
    other = fl.batch_layout(4, [0], 0, window=(0, 1))  # not this call's window (length differs): ignored
    assert other.window is None and other.frame == [0, 1, 2, 3]


def test_video_runs_sort_by_position():
    layout = fl.batch_layout(8, [0, 1], 0, window=(5, 4, 6, 7))
    runs = fl.video_runs(layout)
    assert runs == [(0, [1, 0, 2, 3]), (1, [5, 4, 6, 7])]


def test_batch_layout_errors_name_its_parameters():
    with pytest.raises(ParameterError, match="^frames_per_video is 4, which does not divide the batch of 6") as info:
        fl.batch_layout(6, [0], 4)
    assert not isinstance(info.value, InputError)
    with pytest.raises(ParameterError, match="^frames_per_video is -1"):
        fl.batch_layout(6, [0], -1)
    with pytest.raises(ValueError, match="chunk"):
        fl.batch_layout(5, [0, 1], 0)


# -- U-Net block selection ----------------------------------------------------------------------------------------
COUNTS = {"input": 4, "middle": 1, "output": 4}
ATTENTION = {"input": [1, 3], "middle": [0], "output": [0, 1, 2, 3]}


def test_parse_unet_blocks():
    assert parse_unet_blocks("", COUNTS, ATTENTION) == {}
    assert parse_unet_blocks("all", COUNTS, ATTENTION) == {g: frozenset(ids) for g, ids in ATTENTION.items()}
    assert parse_unet_blocks("input, output:2-3", COUNTS, ATTENTION) == {"input": frozenset({1, 3}),
                                                                       "output": frozenset({2, 3})}
    assert parse_unet_blocks("input:0", COUNTS, ATTENTION) == {}  # no self-attention there: the caller decides


@pytest.mark.parametrize("text,needle", [("decoder", "not a U-Net block group"), ("input:9", "outside"),
                                         ("output:3-1", "start is after its end"), ("output:x", "not a block index")])
def test_parse_unet_blocks_errors_name_text(text, needle):
    with pytest.raises(ParameterError) as info:
        parse_unet_blocks(text, COUNTS, ATTENTION)
    assert info.value.parameter == "text" and needle in info.value.problem and info.value.fix
    assert not isinstance(info.value, InputError)


# -- correspondence selection and the x0 preview -----------------------------------------------------------------
def test_select_correspondences_is_select_targets_per_direction():
    gen = torch.Generator().manual_seed(0)
    a, b = torch.rand(3, 16, 16, generator=gen), torch.rand(3, 16, 16, generator=gen)
    grid, tokens = (4, 4), 16

    def pair():
        return (torch.randint(0, tokens, (tokens,), generator=gen), torch.randint(0, tokens, (tokens,), generator=gen))

    flow, history, sim = pair(), pair(), pair()
    chosen, index, names = ta.select_correspondences(a, b, grid, 4, sim, flow=flow, history=history)
    assert names == ("flow", "history", "similarity")
    for d, (ga, gb) in enumerate(((a, b), (b, a))):
        stacked = torch.stack([flow[d], history[d], sim[d]])
        want, which = ta.select_targets(stacked, ta.patch_errors(ga, gb, stacked, grid, 4))
        assert torch.equal(chosen[d], want) and torch.equal(index[d], which)
    chosen, index, names = ta.select_correspondences(a, b, grid, 4, sim)  # similarity only
    assert names == ("similarity",) and torch.equal(chosen[0], sim[0]) and int(index[1].max()) == 0


def test_latent_preview():
    gen = torch.Generator().manual_seed(1)
    latent = torch.randn(2, 4, 8, 16, generator=gen)
    factors = torch.randn(4, 3, generator=gen) * 0.3
    rgb = ta.latent_preview(latent, factors, torch.tensor([0.1, 0.0, -0.1]))
    assert rgb.shape == (2, 3, 64, 128)  # 8x at most and float(rgb.min()) >= 0.0 and float(rgb.max()) <= 1.0
    small = ta.latent_preview(latent, factors, None, short_side=8)  # 8 px short side: no upscaling
    want = ((torch.einsum("fchw,cr->frhw", latent, factors) + 1.0) / 2.0).clamp(0.0, 1.0)
    assert torch.equal(small, want)
    gray = ta.latent_preview(latent, torch.randn(16, 3), short_side=8)  # factors of another latent format
    assert gray.shape == (2, 1, 8, 16) and float(gray.min()) == 0.0 and float(gray.max()) == pytest.approx(1.0)
    with pytest.raises(ParameterError, match="^latent has shape"):
        ta.latent_preview(latent[0])


def test_neighbour_plan_from_python_labels():
    plan = ta.plan_neighbours([1, 0, 1, 0, 2], [1, 0, 0, 1, 3])
    assert plan.prev.tolist() == [2, 3, 0, 1, 4] and plan.next.tolist() == [2, 3, 0, 1, 4]
    assert ta.plan_neighbours(torch.tensor([0, 0, 0]), torch.tensor([2, 0, 1])).prev.tolist() == [2, 2, 1]


def test_image_frames_for_and_latent_flow_frame_counts():
    assert of.image_frames_for(9, 3) == [0, 4, 8] and of.image_frames_for(3, 3) == [0, 1, 2]
    assert of.image_frames_for(8, 3) is None
    with pytest.raises(ParameterError, match="^frames has 8 frames for a latent with 3 frames"):
        of.latent_flow(torch.rand(8, 16, 16, 3), 3, (4, 4))
