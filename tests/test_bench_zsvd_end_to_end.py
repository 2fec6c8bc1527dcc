"""The end-to-end benchmark's official-schedule re-creation computes what the pack computes, only at its cost.

``bench/official_zsvd.py`` doubles the joint attention of switched blocks in
the official way (a second full attention with the remove row's text taken
from the null row). These checks, on a tiny diffusers CogVideoX in fp32 and
without ComfyUI, pin that down: with no switched block it is diffusers' stock
model exactly, and with switched blocks its null and remove rows equal the
pack's ``SwitchProcessor`` null and remove passes.
"""

from __future__ import annotations

import importlib.util
import pathlib
import sys

import pytest
import torch
from host_free_imports import bare_packages

pytest.importorskip("diffusers")

PACK_DIR = pathlib.Path(__file__).resolve().parent.parent

CONFIG = dict(num_attention_heads=2, attention_head_dim=16, in_channels=16, out_channels=16, time_embed_dim=32,
              text_embed_dim=32, num_layers=4, sample_width=8, sample_height=8, sample_frames=9, patch_size=2,
              max_text_seq_length=8)


def _load(name: str, path: pathlib.Path):
    """A module from a file, not registered in sys.modules (the adapter's relative imports reach ``zsvr.kernels``)."""
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# The adapter's relative imports (``zsvr.nodes.switch_protocol``, ``.capabilities``) resolve without ComfyUI
# (``host_free_imports``); these copies are this module's own and leave sys.modules afterwards.
import zsvr.nodes  # noqa: E402,F401  (the real package: it imports no ComfyUI code; its adapters do)

with bare_packages("zsvr.nodes.adapters"):
    official = _load("zsvr_bench_official_zsvd", PACK_DIR / "bench" / "official_zsvd.py")
    switch = _load("zsvr.nodes.adapters.cogvideox", PACK_DIR / "nodes" / "adapters" / "cogvideox.py")
    protocol = sys.modules["zsvr.nodes.switch_protocol"]


def _setup(rope: bool):
    from diffusers import CogVideoXTransformer3DModel
    from diffusers.models.embeddings import get_3d_rotary_pos_embed

    torch.manual_seed(0)
    model = CogVideoXTransformer3DModel(**CONFIG, use_rotary_positional_embeddings=rope).eval()
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(1, 3, 16, 8, 8, generator=gen).expand(2, -1, -1, -1, -1)  # the edit's two rows share x
    texts = torch.randn(2, 8, 32, generator=gen)  # [null, remove]
    t = torch.full((2,), 500, dtype=torch.long)
    rotary = get_3d_rotary_pos_embed(embed_dim=16, crops_coords=((0, 0), (4, 4)), grid_size=(4, 4),
                                     temporal_size=3) if rope else None
    stock = [block.attn1.processor for block in model.transformer_blocks]
    return model, x, texts, t, rotary, stock


def _forward(model, x, texts, t, rotary, kwargs):
    with torch.inference_mode():
        return model(hidden_states=x, encoder_hidden_states=texts, timestep=t, image_rotary_emb=rotary,
                     attention_kwargs=kwargs, return_dict=False)[0]


@pytest.mark.parametrize("rope", [False, True], ids=["2b", "5b-rope"])
def test_official_processor_without_switched_blocks_is_stock_diffusers(rope):
    model, x, texts, t, rotary, _ = _setup(rope)
    expected = _forward(model, x, texts, t, rotary, None)
    official.install(model, [])
    got = _forward(model, x, texts, t, rotary, {official.EDIT_KWARG: True})
    assert torch.equal(got, expected)


@pytest.mark.parametrize("rope", [False, True], ids=["2b", "5b-rope"])
def test_official_doubled_attention_equals_the_packs_switch(rope):
    model, x, texts, t, rotary, stock = _setup(rope)
    blocks = [0, 2]
    plain = _forward(model, x, texts, t, rotary, None)

    official.install(model, blocks)
    doubled = _forward(model, x, texts, t, rotary, {official.EDIT_KWARG: True})

    for index, block in enumerate(model.transformer_blocks):
        block.attn1.set_processor(switch.SwitchProcessor(index, stock[index]))
    base = {protocol.SWITCH_KEY: protocol.SwitchSettings(blocks, switch.CogVideoXAdapter.family, lambda options: True),
            protocol.CACHE_KEY: protocol.PassCache()}
    null = _forward(model, x[:1], texts[:1], t[:1], rotary,
                    {switch.OPTIONS_KWARG: dict(base, **{protocol.PASS_KEY: protocol.Pass.NULL})})
    remove = _forward(model, x[1:], texts[1:], t[1:], rotary,
                      {switch.OPTIONS_KWARG: dict(base, **{protocol.PASS_KEY: protocol.Pass.REMOVE})})

    torch.testing.assert_close(doubled[0:1], null, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(doubled[1:2], remove, rtol=1e-5, atol=1e-5)
    assert (doubled[1] - plain[1]).abs().max() > 1e-3  # the switch does change the remove row
