"""Shot cuts in one graph on the real host (issue 26, item 3): ``ZSVR_LoadVideo``'s ``shot_cuts`` output and the
flow-based nodes' ``shot_cuts`` input (tiny SD1.5 U-Net, fp32, frames = latent batch).

The clip is three real shots joined (realrain 42, 152 and 437; 10 + 7 + 9 frames at 64x64, H.264), so its cuts
are known: frames 10 and 17.

* the loader finds exactly those cuts, also after start_frame / every_nth / padding, and says how many shots;
  shot_threshold 0 turns it off;
* "no blend across a cut": for each flow node (temporal consistency guidance, SLR temporal attention, noise
  sharing with lambda < 1), the joined clip sampled with shot_cuts gives, frame for frame, what each shot gives
  sampled alone, while the node does change the result (it is not trivially equal); an empty shot_cuts equals
  no shot_cuts bit for bit (the old behaviour). Without shot_cuts SLR attends across the cuts (the frames next
  to them differ from the shots alone by about 5 %); guidance and noise sharing measured no difference here,
  because the forward-backward flow check already marks every pixel between two unrelated shots occluded
  (shot_cuts makes that certain, also for similar-looking shots);
* a video latent (4x temporal compression): noise sharing's per-step noise of each shot equals that shot's alone,
  a latent that straddles a cut starting the new shot;
* bad shot_cuts (another clip's) are refused naming the input.
"""

from __future__ import annotations

import sys

import av
import numpy as np
import pytest
import torch

import long_clips
from host_harness import REALRAIN_DIR, add_sampling, rel_error, run_samples, sd15_sampling_inputs

pytestmark = pytest.mark.skipif(not REALRAIN_DIR.is_dir(), reason="shared/data/realrain not found")

SHOTS = (("42", 10), ("152", 7), ("437", 9))
CUTS = (10, 17)
TOTAL = 26
SIZE = 64
STEPS = 3


def _shot_frames(name: str, count: int) -> list[np.ndarray]:
    out = []
    with av.open(str(REALRAIN_DIR / f"{name}.mp4")) as container:
        for frame in container.decode(video=0):
            out.append(frame.reformat(width=SIZE, height=SIZE, format="rgb24", interpolation="AREA").to_ndarray())
            if len(out) == count:
                break
    return out


@pytest.fixture(scope="module")
def clip(host):
    frames = [f for name, count in SHOTS for f in _shot_frames(name, count)]
    return long_clips.write_clip(host.input_dir / "shots3.mp4", TOTAL, width=SIZE, height=SIZE, fps=8, gop=8,
                                 audio=None, frames=frames)


def _pack_module(host, name):
    return sys.modules[host.pack.__name__ + name]


def _loader(video="shots3.mp4", **over):
    inputs = {"video": video, "start_frame": 0, "frame_cap": 0, "every_nth": 1, "width": SIZE, "height": SIZE,
              "fit": "crop", "frame_rule": "any", "size_multiple": 8, "best_effort": False, "pad_frames": False}
    inputs.update(over)
    return {"class_type": "ZSVR_LoadVideo", "inputs": inputs}


def _load(host, key, **over):
    g = {"1": _loader(**over),
         "c0": {"class_type": "ZSVRTest_Capture", "inputs": {"value": ["1", 0], "key": key + "_images"}},
         "c4": {"class_type": "ZSVRTest_Capture", "inputs": {"value": ["1", 4], "key": key + "_cuts"}}}
    result = host.run(g)
    assert result.success, result.error_message
    return host.captured[key + "_images"], host.captured[key + "_cuts"], result


def _ui_text(result, node="1") -> list[str]:
    outputs = getattr(result, "outputs", None) or {}
    return list((outputs.get(node) or {}).get("text") or [])


# -- the loader ------------------------------------------------------------------------------------------------
def test_loader_outputs_the_cuts_of_a_joined_clip(host, clip):
    images, cuts, result = _load(host, "all")
    assert images.shape == (TOTAL, SIZE, SIZE, 3)
    assert cuts.cuts == CUTS and cuts.frames == TOTAL and cuts.shots == 3
    text = " ".join(_ui_text(result))
    if text:  # the host reports the node's UI text
        assert "3 shots: cuts at frames 10, 17" in text, text
    # after start_frame: indices of the loaded frames
    _, cuts, _ = _load(host, "start", start_frame=5, frame_cap=15)
    assert cuts.cuts == (5, 12) and cuts.frames == 15
    # every second frame: source 0,2,..,8 | 10,..,16 | 18,..,24 -> loaded cuts at 5 and 9
    _, cuts, _ = _load(host, "nth", every_nth=2)
    assert cuts.cuts == (5, 9) and cuts.frames == 13
    # padding to 4k+1 repeats the last frame: no extra cut
    images, cuts, _ = _load(host, "pad", frame_rule="4k+1", pad_frames=True)
    assert images.shape[0] == 29 and cuts.cuts == CUTS and cuts.frames == 29
    # threshold 0: off, one shot; a threshold above every cut's score: one shot too
    _, cuts, result = _load(host, "off", shot_threshold=0.0)
    assert cuts.cuts == () and cuts.shots == 1
    if _ui_text(result):
        assert "shot cuts off" in " ".join(_ui_text(result))
    _, cuts, _ = _load(host, "high", shot_threshold=1.0)
    assert cuts.cuts == ()
    # a single real clip has no cut
    _, cuts, _ = _load(host, "one", video="42.mp4", frame_cap=20)
    assert cuts.cuts == () and cuts.frames == 20


def test_loader_refuses_a_bad_threshold(host, clip):
    result = host.run({"1": _loader(shot_threshold=float("nan")),
                       "c": {"class_type": "ZSVRTest_Capture", "inputs": {"value": ["1", 4], "key": "bad"}}})
    assert not result.success and "shot_threshold" in result.error_message


# -- one sampling graph -----------------------------------------------------------------------------------------
def _graph(host, *, latent_key, flow_node=None, capture="out", sampler="euler", noise=None, steps=STEPS,
           denoise=0.6):
    """[flow node on the tiny SD1.5 U-Net] -> CFGGuider -> SamplerCustomAdvanced, every input injected.

    ``flow_node``: (class_type, inputs); inputs whose value is ``("inject", key)`` are injected, a value "MODEL" is
    the U-Net, "SAMPLER" the KSamplerSelect output. For ZSVR_NoiseSharing the node's NOISE and SAMPLER are used.
    """
    g = sd15_sampling_inputs(host, latent_key=latent_key, capture=capture)
    g["ks"] = {"class_type": "KSamplerSelect", "inputs": {"sampler_name": sampler}}
    model_ref, sampler_ref = ["m", 0], ["ks", 0]
    g["noise"] = {"class_type": "DisableNoise", "inputs": {}}
    noise_ref = ["noise", 0]
    if flow_node is not None:
        kind, given = flow_node
        inputs = {}
        for name, value in given.items():
            if isinstance(value, tuple) and value[0] == "inject":
                g[f"in_{name}"] = {"class_type": "ZSVRTest_Inject", "inputs": {"key": value[1]}}
                inputs[name] = [f"in_{name}", 0]
            elif value == "MODEL":
                inputs[name] = model_ref
            elif value == "SAMPLER":
                inputs[name] = sampler_ref
            else:
                inputs[name] = value
        g["flow"] = {"class_type": kind, "inputs": inputs}
        if kind == "ZSVR_NoiseSharing":
            noise_ref, sampler_ref = ["flow", 0], ["flow", 1]
        else:
            model_ref = ["flow", 0]
    return add_sampling(g, model=model_ref, noise=noise_ref, sampler=sampler_ref, steps=steps, denoise=denoise,
                        cfg=3.0)


def _latent_for(images: torch.Tensor, seed=0) -> torch.Tensor:
    """A latent [F, 4, 8, 8] that follows the frames (their 8x8 means, so flow-warped frames agree) plus noise."""
    gen = torch.Generator().manual_seed(seed)
    means = torch.nn.functional.avg_pool2d(images.permute(0, 3, 1, 2), 8)  # [F, 3, 8, 8]
    base = torch.cat([means, means.mean(1, keepdim=True)], 1) * 4 - 2
    return base + 0.8 * torch.randn(images.shape[0], 4, 8, 8, generator=gen)


def _shot_alone_check(host, clip, name, make_node, sampler="euler", denoise=0.6, expect_blend=True):
    """Joined with shot_cuts == each shot alone (frame for frame); joined without shot_cuts differs at the cuts;
    an empty shot_cuts equals none. ``make_node(image_key, cuts_key or None)`` -> (class_type, inputs)."""
    sc = _pack_module(host, ".kernels.shot_cuts")
    images, cuts, _ = _load(host, f"{name}_clip")
    assert cuts.cuts == CUTS
    latent = _latent_for(images)
    host.store[f"{name}_img"] = images
    host.store[f"{name}_lat"] = {"samples": latent}
    host.store[f"{name}_cuts"] = cuts
    host.store[f"{name}_nocuts"] = sc.ShotCuts((), TOTAL)
    kw = dict(sampler=sampler, denoise=denoise)
    joined = run_samples(host, _graph(host, latent_key=f"{name}_lat", flow_node=make_node(f"{name}_img", f"{name}_cuts"),
                                      capture=f"{name}_joined", **kw), f"{name}_joined")
    plain = run_samples(host, _graph(host, latent_key=f"{name}_lat", flow_node=make_node(f"{name}_img", None),
                                     capture=f"{name}_plain", **kw), f"{name}_plain")
    empty = run_samples(host, _graph(host, latent_key=f"{name}_lat", flow_node=make_node(f"{name}_img", f"{name}_nocuts"),
                                     capture=f"{name}_empty", **kw), f"{name}_empty")
    assert torch.equal(empty, plain)  # no cuts: exactly the node without shot_cuts
    alone = []
    for k, (start, end) in enumerate(sc.shot_bounds(list(cuts.cuts), TOTAL)):
        host.store[f"{name}_img{k}"] = images[start:end].clone()
        host.store[f"{name}_lat{k}"] = {"samples": latent[start:end].clone()}
        alone.append(run_samples(host, _graph(host, latent_key=f"{name}_lat{k}",
                                              flow_node=make_node(f"{name}_img{k}", None), capture=f"{name}_alone{k}", **kw),
                                 f"{name}_alone{k}"))
    alone = torch.cat(alone)
    worst = max(rel_error(joined[s:e], alone[s:e]) for s, e in sc.shot_bounds(list(CUTS), TOTAL))
    assert worst < 1e-5, worst  # no blend across a cut: every shot as if sampled alone
    at_cuts = [i for c in CUTS for i in (c - 1, c)]
    blended = max(rel_error(plain[i], alone[i]) for i in at_cuts)
    if expect_blend:
        assert blended > 1e-3, blended  # without shot_cuts the frames next to a cut are blended with the other shot
    unguided = run_samples(host, _graph(host, latent_key=f"{name}_lat", capture=f"{name}_none", **kw), f"{name}_none")
    assert rel_error(joined, unguided) > 1e-3  # the node acts on every shot: the equality above is not trivial
    print(f"{name}: joined with shot_cuts vs shots alone {worst:.1e}; without shot_cuts at the cuts {blended:.1e}")
    return joined, plain, alone


def test_temporal_consistency_guidance_never_guides_across_a_cut(host, clip):
    def node(image_key, cuts_key):
        inputs = {"model": "MODEL", "image": ("inject", image_key), "weight": 0.3, "mode": "x0",
                         "frames_per_video": 0, "start_percent": 0.0, "end_percent": 1.0}
        if cuts_key:
            inputs["shot_cuts"] = ("inject", cuts_key)
        return "ZSVR_TemporalConsistencyGuidance", inputs

    joined, plain, alone = _shot_alone_check(host, clip, "tcg", node, expect_blend=False)
    # between two unrelated shots the forward-backward flow check marks (nearly) every pixel occluded, so even
    # without shot_cuts the guidance hardly compares across these cuts; shot_cuts makes it certain


def test_slr_temporal_attention_never_attends_across_a_cut(host, clip):
    def node(image_key, cuts_key):
        inputs = {"model": "MODEL", "trajectory_start": 0.0, "frames_per_video": 0, "image": ("inject", image_key),
                         "start_percent": 0.0, "end_percent": 1.0}
        if cuts_key:
            inputs["shot_cuts"] = ("inject", cuts_key)
        return "ZSVR_SLRTemporalAttention", inputs

    _shot_alone_check(host, clip, "slr", node)


def test_noise_sharing_never_carries_noise_across_a_cut(host, clip):
    def node(image_key, cuts_key):
        inputs = {"noise_seed": 5, "sampler": "SAMPLER", "lambda": 0.3, "image": ("inject", image_key)}
        if cuts_key:
            inputs["shot_cuts"] = ("inject", cuts_key)
        return "ZSVR_NoiseSharing", inputs

    # as for the guidance, the occlusion check already keeps the noise from following the flow across these cuts
    _shot_alone_check(host, clip, "ns", node, sampler="euler_ancestral", denoise=1.0, expect_blend=False)


def test_the_loader_feeds_a_flow_node_in_one_graph(host, clip):
    """Load Video's images and shot_cuts straight into temporal consistency guidance: the same result as the
    injected cuts of the test above (the loader's output is a valid ``shot_cuts`` link)."""
    images, cuts, _ = _load(host, "graph_clip")
    host.store["graph_lat"] = {"samples": _latent_for(images)}
    g = _graph(host, latent_key="graph_lat", capture="graph_out")
    g["load"] = _loader()
    g["flow"] = {"class_type": "ZSVR_TemporalConsistencyGuidance", "inputs": {
        "model": ["m", 0], "image": ["load", 0], "weight": 0.3, "mode": "x0", "frames_per_video": 0,
        "start_percent": 0.0, "end_percent": 1.0, "shot_cuts": ["load", 4]}}
    for key in ("sig", "gd"):
        g[key]["inputs"]["model"] = ["flow", 0]
    out = run_samples(host, g, "graph_out")
    host.store["graph_img"], host.store["graph_cuts"] = images, cuts
    ref = _graph(host, latent_key="graph_lat", capture="graph_ref", flow_node=("ZSVR_TemporalConsistencyGuidance", {
        "model": "MODEL", "image": ("inject", "graph_img"), "weight": 0.3, "mode": "x0", "frames_per_video": 0,
        "start_percent": 0.0, "end_percent": 1.0, "shot_cuts": ("inject", "graph_cuts")}))
    assert torch.equal(out, run_samples(host, ref, "graph_ref"))


def test_noise_sharing_on_a_video_latent_maps_cuts_to_latent_frames(host):
    """4x temporal compression: 17 frames -> 5 latents (latent t >= 1 covers frames 4t-3..4t). A cut at frame 9
    starts latent 3 cleanly; one at frame 10 makes latent 3 straddle the cut, and it starts the new shot all the
    same. Each shot's per-step noise equals that shot's alone (its latents' representative frames)."""
    import comfy.samplers

    NS = _pack_module(host, ".nodes.engines.noise_sharing")
    sc = _pack_module(host, ".kernels.shot_cuts")
    gen = torch.Generator().manual_seed(3)
    textures = [torch.nn.functional.interpolate(torch.rand(1, 3, 8, 8, generator=gen), size=(64, 64),
                                                mode="bicubic", align_corners=False)[0].clamp(0, 1) for _ in range(2)]
    for cut in (9, 10):
        video = torch.stack([torch.roll(textures[0 if f < cut else 1], 2 * f, dims=2) for f in range(17)])
        like = torch.zeros(1, 16, 5, 8, 8)
        base = comfy.samplers.sampler_object("euler_ancestral")
        joined = NS.NoiseSharingSampler(base, 5, 0.3, video, sc.ShotCuts((cut,), 17)).noise_sampler_for(like, 2)
        first = NS.NoiseSharingSampler(base, 5, 0.3, video[:9]).noise_sampler_for(like[:, :, :3], 2)
        second = NS.NoiseSharingSampler(base, 5, 0.3, video[12:]).noise_sampler_for(like[:, :, 3:], 2)
        assert joined.shot_starts == (3,)
        for _ in range(3):
            (shared, z), (_, z1), (_, z2) = joined.draw(), first.draw(), second.draw()
            assert torch.equal(z[:, :, :3], z1) and torch.equal(z[:, :, 3:], z2)
            assert torch.equal(z[:, :, 3], shared[:, :, 3])  # the shot's first latent: its own noise, no blend
            assert not torch.equal(z[:, :, 4], shared[:, :, 4])  # inside a shot the noise does follow the flow
    assert sc.straddling_latents([10], 17, 5) == [3] and sc.straddling_latents([9], 17, 5) == []


def test_shot_cuts_of_another_clip_are_refused(host, clip):
    sc = _pack_module(host, ".kernels.shot_cuts")
    images, _, _ = _load(host, "bad_clip")
    host.store["bad_img"] = images
    host.store["bad_lat"] = {"samples": _latent_for(images)}
    host.store["bad_cuts"] = sc.ShotCuts((4,), 20)
    for kind, inputs in [
        ("ZSVR_TemporalConsistencyGuidance", {"model": "MODEL", "image": ("inject", "bad_img"), "weight": 0.3,
                                              "mode": "x0", "frames_per_video": 0, "start_percent": 0.0,
                                              "end_percent": 1.0}),
        ("ZSVR_SLRTemporalAttention", {"model": "MODEL", "trajectory_start": 0.0, "frames_per_video": 0,
                                              "start_percent": 0.0, "end_percent": 1.0}),
        ("ZSVR_NoiseSharing", {"noise_seed": 5, "sampler": "SAMPLER", "lambda": 0.3, "image": ("inject", "bad_img")}),
    ]:
        inputs["shot_cuts"] = ("inject", "bad_cuts")
        result = host.run(_graph(host, latent_key="bad_lat", flow_node=(kind, inputs), capture="bad_out",
                                 sampler="euler_ancestral"))
        assert not result.success
        assert "ZSVR input 'shot_cuts'" in result.error_message and "20-frame video" in result.error_message, \
            (kind, result.error_message)
    # not shot cuts at all
    host.store["not_cuts"] = [10, 17]
    result = host.run(_graph(host, latent_key="bad_lat", capture="bad_out2", flow_node=(
        "ZSVR_SLRTemporalAttention", {"model": "MODEL", "trajectory_start": 0.0, "frames_per_video": 0,
                                      "start_percent": 0.0, "end_percent": 1.0, "shot_cuts": ("inject", "not_cuts")})))
    assert not result.success and "ZSVR input 'shot_cuts'" in result.error_message
