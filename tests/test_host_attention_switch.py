"""ZSVD attention switching on the real host (tiny Wan, fp32)."""

import pytest
import torch

from host_harness import rel_error
from test_host_inversion import _graph, _latent

FAMILIES = ["wan", "hunyuan"]


def _switched(g, blocks, into="gd"):
    g["sw"] = {"class_type": "ZSVR_AttentionSwitch", "inputs": {"model": ["m", 0], "blocks": blocks,
                                                                 "start_percent": 0.0, "end_percent": 1.0}}
    g[into]["inputs"]["model"] = ["sw", 0]
    return g


@pytest.mark.parametrize("family", FAMILIES)
def test_switch_over_all_blocks_makes_the_edit_the_reconstruction(host, family):
    host.store["lat"] = _latent(family)
    g = _switched(_graph(host, family, "ddpm", 2, steps=8, remove_seed=99, strength=6.0, capture="sw_all"), "all")
    res = host.run(g)
    assert res.success, res.error_message
    assert rel_error(host.captured["sw_all"]["samples"], host.store["lat"]["samples"]) < 1e-4


@pytest.mark.parametrize("family", FAMILIES)
def test_switch_over_no_blocks_is_plain_negative_prompting(host, family):
    host.store["lat"] = _latent(family)
    res = host.run(_switched(_graph(host, family, "ddpm", 2, steps=8, remove_seed=99, strength=6.0, capture="sw_none"), ""))
    assert res.success, res.error_message
    res = host.run(_graph(host, family, "ddpm", 2, steps=8, remove_seed=99, strength=6.0, capture="plain"))
    assert res.success, res.error_message
    assert torch.equal(host.captured["sw_none"]["samples"], host.captured["plain"]["samples"])
    # one switched block: differs from both
    res = host.run(_switched(_graph(host, family, "ddpm", 2, steps=8, remove_seed=99, strength=6.0, capture="sw_one"), "1"))
    assert res.success, res.error_message
    one = host.captured["sw_one"]["samples"]
    assert rel_error(one, host.captured["plain"]["samples"]) > 1e-4 and rel_error(one, host.store["lat"]["samples"]) > 1e-4


def test_switch_leaves_the_input_model_untouched(host):
    import comfy.sd

    node = host.nodes.NODE_CLASS_MAPPINGS["ZSVR_AttentionSwitch"]
    model = comfy.sd.load_diffusion_model(str(host.models["wan"]))
    before = repr(model.model_options)
    patched = node.execute(model, "all", 0.0, 1.0).result[0]
    assert patched is not model
    assert repr(model.model_options) == before
    assert len(patched.model_options["transformer_options"]["patches_replace"]["dit"]) == 2


def test_switched_model_with_the_inverter_inverts_exactly(host):
    """The inverter marks its passes, so feeding it the switched model is harmless."""
    host.store["lat"] = _latent("wan")
    g = _switched(_graph(host, "wan", "ddpm", 2, steps=8, remove_seed=99, strength=6.0, capture="sw_inv"), "all")
    g["inv"]["inputs"]["model"] = ["sw", 0]
    res = host.run(g)
    assert res.success, res.error_message
    assert rel_error(host.captured["sw_inv"]["samples"], host.store["lat"]["samples"]) < 1e-4


def test_bad_input_blocks_outside_the_model(host):
    host.store["lat"] = _latent("wan")
    res = host.run(_switched(_graph(host, "wan", "ddpm", 2, steps=6, remove_seed=99), "0-5"))
    assert not res.success and "'blocks'" in res.error_message and "0-1" in res.error_message


def test_bad_input_model_without_an_adapter(host):
    host.store["lat"] = _latent("eps")
    res = host.run(_switched(_graph(host, "eps", "ddpm", 2, steps=6, remove_seed=99), "all"))
    assert not res.success and "does not support" in res.error_message and "Wan" in res.error_message


def test_bad_input_switch_without_the_editor(host):
    host.store["lat"] = _latent("wan")
    g = _switched(_graph(host, "wan", "ddpm", 2, steps=6, remove_seed=99, guider="cfg", strength=3.0), "all")
    res = host.run(g)
    assert not res.success and "Negative Prompt Editor" in res.error_message


def test_hunyuan_switch_of_single_blocks_only_and_with_text_masks(host):
    """Single blocks need the video length recorded upstream; masked null text must be honoured."""
    host.store["lat"] = _latent("hunyuan")
    g = _graph(host, "hunyuan", "ddpm", 2, steps=6, remove_seed=99, strength=6.0, capture="hy_single")
    g["null"]["inputs"]["masked_tokens"] = 2
    g = _switched(g, "2-3")  # the two single blocks
    res = host.run(g)
    assert res.success, res.error_message
    g2 = _switched(_graph(host, "hunyuan", "ddpm", 2, steps=6, remove_seed=99, strength=6.0, capture="hy_all_m"), "all")
    g2["null"]["inputs"]["masked_tokens"] = 2
    res = host.run(g2)
    assert res.success, res.error_message
    assert rel_error(host.captured["hy_all_m"]["samples"], host.store["lat"]["samples"]) < 1e-4
    assert rel_error(host.captured["hy_single"]["samples"], host.store["lat"]["samples"]) > 1e-4


def test_hunyuan_switch_chains_to_an_existing_attention_override(host):
    """optimized_attention_override is one key: the switch must call a user's override, not replace it."""
    import comfy.sd

    node = host.nodes.NODE_CLASS_MAPPINGS["ZSVR_AttentionSwitch"]
    model = comfy.sd.load_diffusion_model(str(host.models["hunyuan"]))
    calls = []

    def user_override(func, *args, **kwargs):
        calls.append(args[0].shape[2])
        return func(*args, **kwargs)

    user = model.clone()
    user.model_options.setdefault("transformer_options", {})["optimized_attention_override"] = user_override
    patched = node.execute(user, "all", 0.0, 1.0).result[0]
    override = patched.model_options["transformer_options"]["optimized_attention_override"]
    assert override is not user_override and override.previous is user_override
    host.store["chained"] = patched
    host.store["lat"] = _latent("hunyuan")
    g = _graph(host, "hunyuan", "ddpm", 2, steps=4, remove_seed=99, strength=6.0, capture="hy_chain")
    g["chained"] = {"class_type": "ZSVRTest_Inject", "inputs": {"key": "chained"}}
    g["gd"]["inputs"]["model"] = ["chained", 0]
    res = host.run(g)
    assert res.success, res.error_message
    assert calls, "the user's override was never called"
    assert rel_error(host.captured["hy_chain"]["samples"], host.store["lat"]["samples"]) < 1e-4
