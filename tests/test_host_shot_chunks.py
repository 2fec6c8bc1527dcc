"""Chunked runs respect shot cuts (issue 26 item 2), on the live host with the shipped Wan workflow (tiny models).

A 30-frame clip of three shots joined from three realrain clips (11, 6 and 13 frames; cuts at 11 and 17), and
each shot alone as its own clip, all written losslessly (H.264 at CRF 0: the same frames decode to the same
pixels in every file). 9-frame chunks (frame rule 4k+1) overlapping by 4:

* with cuts on (the default) the scan finds both cuts, the plan is per shot (the 6-frame shot one chunk run
  padded to 9 and trimmed back), the manifest records the cuts and the threshold, and the stitched frames of the
  joined clip (``--keep-chunks``: the lossless chunk files) equal, bit for bit, the stitched frames of the chunked
  runs of each shot alone: nothing of one shot reached another;
* with ``--no-scene-cuts`` chunks straddle the cuts and the frames next to them differ from the single-shot runs;
* the same command again scans nothing and runs nothing; a threshold between the two cuts' scores drops one cut
  and re-runs only the chunks of the shots it joins (the other shot's chunks keep their keys);
* the ``--servers`` executor plans the same per-shot chunks (the one clip job), down to the chunk keys.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

import long_clips
from host_harness import REALRAIN_DIR
from test_host_long_clips import Counting, tiny_wan
from zsvr.headless import shots, stitch
from zsvr.headless.clip_job import ChunkOptions
from zsvr.kernels import chunking, shot_cuts, video_io

pytestmark = pytest.mark.skipif(not REALRAIN_DIR.is_dir(), reason="shared/data/realrain not found")

SHOTS = [("152", 11), ("307", 6), ("42", 13)]
CUTS = [11, 17]
CHUNKS = {"chunk_frames": 9, "overlap": 4, "keep_chunks": True}
NEAR_CUT_FLOOR = 4
"""Grey levels (of 255): the least a frame next to a cut must move when a chunk straddles the cut. Measured (the
test prints it): 68 and 40 at frames 10-11, 53 and 58 at frames 16-17; with cuts on every frame moves 0."""


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    d = tmp_path_factory.mktemp("shots")
    parts = [long_clips.clip_frames(name, count, 64, 48, first=3) for name, count in SHOTS]
    joined = long_clips.write_clip(d / "three_shots.mp4", 30, 64, 48, audio=None, crf=0,
                                   frames=[f for part in parts for f in part])
    singles = [long_clips.write_clip(d / f"shot{k}.mp4", len(part), 64, 48, audio=None, crf=0, frames=part)
               for k, part in enumerate(parts)]
    return {"joined": joined, "singles": singles}


def run(runner, host, prompt, videos, out, **options):
    return runner.run_batch(host.comfy, prompt, list(videos), out, (), progress=False,
                            chunks=ChunkOptions(**{**CHUNKS, **options}))


def stitched(out, stem):
    """The clip's stitched 8-bit frames from its kept lossless chunk files, per the manifest's plan."""
    manifest = json.loads((out / f"{stem}.zsvr.json").read_text())
    entries = sorted(manifest["chunks"].values(), key=lambda c: c["start"])
    frames = manifest["source"]["frames"]
    cuts = manifest["shots"]["cuts"]
    plan = chunking.plan_shot_chunks(frames, cuts, CHUNKS["chunk_frames"], CHUNKS["overlap"], "4k+1")
    assert [(c["start"], c["frames"]) for c in entries] == [(c.start, c.frames) for c in plan]
    return np.stack(list(stitch.iter_stitched(plan, [out / c["file"] for c in entries]))), manifest


def test_the_lossless_clips_hold_the_same_frames(clips):
    joined = long_clips.decode_frames(clips["joined"])
    alone = np.concatenate([long_clips.decode_frames(p) for p in clips["singles"]])
    assert joined.shape == (30, 48, 64, 3) and np.array_equal(joined, alone)


def test_chunks_follow_the_shots_and_match_each_shot_run_alone(host, runner, clips, tmp_path):
    prompt = tiny_wan(host)
    out = tmp_path / "out"
    with Counting(host) as count:
        (row,) = run(runner, host, prompt, [clips["joined"]], out)
    assert row["ok"], row["error"]
    assert row["shots"] == 3 and (row["chunks"], row["chunks_run"]) == (5, 5) and count.calls == 6  # check + 5
    assert "3 shots (new shot at frame 11, 17; --scene-threshold 0.25)" in row["warnings"][0], row["warnings"]
    assert "frames 11-16 on 9" in row["warnings"][1], row["warnings"]  # the 6-frame shot, run padded
    joined, manifest = stitched(out, "three_shots")
    assert manifest["shots"] == {"scene_cuts": True, "threshold": shot_cuts.DEFAULT_THRESHOLD, "scan": 1,
                                 "count": 3, "cuts": CUTS, "bounds": [[0, 11], [11, 17], [17, 30]]}
    assert long_clips.video_info(out / "three_shots.mp4")["frames"] == 30

    alone_out = tmp_path / "alone"
    rows = run(runner, host, prompt, clips["singles"], alone_out)
    assert all(r["ok"] and r["shots"] == 1 for r in rows), rows
    alone = np.concatenate([stitched(alone_out, p.stem)[0] for p in clips["singles"]])
    assert joined.shape == alone.shape == (30, 32, 32, 3)
    for cut in CUTS:  # the frames at each cut, then every frame: bit for bit
        assert np.array_equal(joined[cut - 1:cut + 1], alone[cut - 1:cut + 1]), cut
    assert np.array_equal(joined, alone)

    flat_out = tmp_path / "flat"
    (flat,) = run(runner, host, prompt, [clips["joined"]], flat_out, scene_cuts=False)
    assert flat["ok"] and flat["shots"] == 1 and flat["chunks"] == 6, flat
    straddled, flat_manifest = stitched(flat_out, "three_shots")
    assert flat_manifest["shots"] == {"scene_cuts": False, "count": 1, "cuts": []}
    moved = [int(np.abs(straddled[f].astype(int) - alone[f].astype(int)).max()) for f in range(30)]
    print(f"--no-scene-cuts: max grey-level difference per frame against the single-shot runs: {moved}")
    for cut in CUTS:  # chunks 5-13 and 15-23 straddle the cuts: the frames beside each cut change
        assert moved[cut - 1] > NEAR_CUT_FLOOR and moved[cut] > NEAR_CUT_FLOOR, (cut, moved)


def test_resume_reuses_the_scan_and_a_changed_threshold_reruns_only_the_joined_shots(host, runner, clips, tmp_path,
                                                                                    monkeypatch):
    prompt = tiny_wan(host)
    out = tmp_path / "out"
    scans = []
    real_scan = shots.scan_cuts
    monkeypatch.setattr(shots, "scan_cuts", lambda *a: scans.append(a[1]) or real_scan(*a))
    (row,) = run(runner, host, prompt, [clips["joined"]], out)
    assert row["ok"] and row["chunks_run"] == 5 and scans == [shot_cuts.DEFAULT_THRESHOLD], (row, scans)
    with Counting(host) as count:  # the same command: the manifest's cuts, nothing scanned, no chunk run
        (row,) = run(runner, host, prompt, [clips["joined"]], out)
    assert row["ok"] and count.calls == 1 and row["chunks_reused"] == 5 and len(scans) == 1, row  # the model check

    # a threshold between the two cuts' scores keeps the clearer cut only
    signatures = [shot_cuts.frame_signature(f) for f in video_io.iter_thumbnails(str(clips["joined"]), shots.SCAN_SIDE)]
    scores = shot_cuts.cut_scores(signatures)
    low, high = sorted(CUTS, key=lambda c: float(scores[c]))
    assert float(scores[high]) - float(scores[low]) > 0.05, scores[CUTS]
    threshold = round((float(scores[low]) + float(scores[high])) / 2, 4)
    kept = [high]
    with Counting(host) as count:
        (row,) = run(runner, host, prompt, [clips["joined"]], out, scene_threshold=threshold)
    assert row["ok"], row["error"]
    manifest = json.loads((out / "three_shots.zsvr.json").read_text())
    assert manifest["shots"]["cuts"] == kept and manifest["shots"]["threshold"] == threshold and len(scans) == 2
    # the shot the dropped cut does not touch keeps its chunks, and so does any chunk of the joined shots whose range
    # happens to be the same (its key depends on its range and settings only); the rest is planned and run afresh
    untouched = (0, 11) if kept == [11] else (17, 30)
    before = {(c.start, c.frames, c.run_frames) for c in chunking.plan_shot_chunks(30, CUTS, 9, 4, "4k+1")}
    after = chunking.plan_shot_chunks(30, kept, 9, 4, "4k+1")
    same = [c for c in after if (c.start, c.frames, c.run_frames) in before]
    assert {(c.start, c.frames, c.run_frames) for c in after if untouched[0] <= c.start < untouched[1]} <= \
        {(c.start, c.frames, c.run_frames) for c in same}
    assert len(same) < len(after)
    assert (row["chunks"], row["chunks_reused"], row["chunks_run"]) == (len(after), len(same), len(after) - len(same))
    assert count.calls == 1 + len(after) - len(same)  # the model check, then only the re-planned chunks
    reused = {(c["start"], c["frames"]) for c in manifest["chunks"].values()}
    assert reused == {(c.start, c.frames) for c in after}


def test_the_server_executor_plans_the_same_shot_chunks(host, clips, tmp_path):
    """``remote_chunks.plan_units`` (no server needed to plan): one unit per chunk of the per-shot plan, each unit's
    loader set to its chunk (the short shot padded), under the keys the in-process run uses."""
    from zsvr.headless import chunked_run, clip_job, remote_chunks
    from zsvr.headless.fleet_preflight import Registry

    prompt = tiny_wan(host)
    registry = Registry({name: {"output_node": bool(getattr(cls, "OUTPUT_NODE", False))}
                         for name, cls in host.nodes.NODE_CLASS_MAPPINGS.items()})
    options = ChunkOptions(**CHUNKS)
    units, (job,) = remote_chunks.plan_units(registry, prompt, [clips["joined"]], tmp_path / "remote", options)
    plan = chunking.plan_shot_chunks(30, CUTS, 9, 4, "4k+1")
    assert job.plan == plan and job.shots == 3 and len(units) == len(plan) == 5
    loaders = [nid for nid, n in prompt.items() if n["class_type"] == "ZSVR_LoadVideo"]
    for unit, chunk in zip(units, plan):
        for nid in loaders:
            inputs = unit.prompt[nid]["inputs"]
            assert (inputs["start_frame"], inputs["frame_cap"], inputs["pad_frames"]) == \
                (chunk.start, chunk.frames, chunk.padded)
    local = clip_job.open_job(chunked_run.prepare(host.comfy, prompt, options), clips["joined"], tmp_path / "local",
                              options)
    assert local.plan == job.plan and local.keys == job.keys
