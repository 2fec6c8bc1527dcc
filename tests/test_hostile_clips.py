"""Hostile clips into ``ZSVR_LoadVideo``'s kernel: each ends in a clear error or a correct result, in bounded time
and memory, and never crashes the process (issue 23 item 4, the kernel part of the sweep).

Seeded mutations of the pack's example clip (truncated, bytes flipped, blocks overwritten with 0xFF, which in an
MP4's boxes claims huge sizes and counts) are decoded at 64x64 by ``video_io.load_video`` in one child process,
capped in address space (``tests/hostile_media.py``), so a crash in the decoder or an allocation for a claimed size
is caught as the case it happened on instead of killing the test run. A case passes
when it gives finite frames in 0..1 of the asked size, or raises ``ParameterError`` naming ``path`` with a fix.
"""

from __future__ import annotations

import hostile_media
from hostile_media import CLIP, decode_in_child, mutations

CASES = 36
SECONDS_PER_CASE = 20.0
EXTRA_MEMORY_MB = 1500  # the child's address space above its size after the imports: 64x64 frames need a few MB


def test_hostile_variants_of_the_example_clip_end_in_a_clear_error_or_correct_frames(tmp_path):
    cases = []
    for i, (name, data) in enumerate(mutations(CLIP.read_bytes(), CASES)):
        path = tmp_path / f"case{i:02d}.mp4"
        path.write_bytes(data)
        cases.append((str(path), name))
    names = dict(cases)
    results, crashed, stderr = decode_in_child(list(names), EXTRA_MEMORY_MB, SECONDS_PER_CASE * CASES + 60)
    assert crashed is None, f"the decoder crashed on {names.get(crashed, crashed)}: {stderr}"
    assert len(results) == CASES
    bad = [(names[r["case"]], r) for r in results if r["outcome"] not in ("frames", "clear error")]
    assert bad == []
    slow = [(names[r["case"]], r["seconds"]) for r in results if r["seconds"] > SECONDS_PER_CASE]
    assert slow == []
    counts = {o: sum(r["outcome"] == o for r in results) for o in ("frames", "clear error")}
    print(f"hostile clips: {CASES} cases, {counts['clear error']} clear errors, {counts['frames']} correct results, "
          "0 crashes")
    assert counts["clear error"] > 0  # the mutations do break clips (the sweep is not vacuous)


def test_headers_claiming_huge_frames_or_counts_end_in_a_clear_error_or_correct_frames(tmp_path):
    """Claimed sizes (65536x65536, 16000x16000, 10^9 frames) never size an allocation: the child's address space is
    capped at 1.5 GB above its imports, and each case ends in an error naming the file and the claimed size with
    what is supported, or in the clip's real frames; a real 8K frame still loads."""
    clip = CLIP.read_bytes()
    avi = hostile_media.mjpeg_avi(tmp_path / "real.avi")
    cases = {
        "y4m 65536x65536": ("y4m", hostile_media.y4m_clip(65536, 65536, 3, frame_bytes=4608)),
        "y4m 16000x16000": ("y4m", hostile_media.y4m_clip(16000, 16000, 3, frame_bytes=4608)),
        "y4m 12000x9000": ("y4m", hostile_media.y4m_clip(12000, 9000, 1, frame_bytes=4608)),
        "y4m 8K, real": ("y4m", hostile_media.y4m_clip(7680, 4320, 1, value=200)),
        "mp4 10^9 frames": ("mp4", hostile_media.claim_mp4_frames(clip, 10**9)),
        "mp4 65535x65535": ("mp4", hostile_media.claim_mp4_dims(clip, 65535, 65535)),
        "avi 10^9 frames": ("avi", hostile_media.claim_avi_frames(avi, 10**9)),
        "avi jpeg 65535x65535": ("avi", hostile_media.claim_jpeg_dims(avi, 65535, 65535)),
        "avi jpeg 16000x16000": ("avi", hostile_media.claim_jpeg_dims(avi, 16000, 16000)),
    }
    paths = {}
    for i, (label, (ext, data)) in enumerate(cases.items()):
        path = tmp_path / f"claim{i}.{ext}"
        path.write_bytes(data)
        paths[str(path)] = label
    results, crashed, stderr = decode_in_child(list(paths), EXTRA_MEMORY_MB, 120)
    assert crashed is None, f"the decoder crashed on {paths.get(crashed, crashed)}: {stderr}"
    got = {paths[r["case"]]: r for r in results}
    assert set(got) == set(cases)
    outcomes = {label: r["outcome"] for label, r in got.items()}
    assert outcomes == {
        "y4m 65536x65536": "clear error",  # FFmpeg itself refuses to open it
        "y4m 16000x16000": "clear error",
        "y4m 12000x9000": "clear error",
        "y4m 8K, real": "frames",
        "mp4 10^9 frames": "frames",  # the count is ignored (the file cannot hold it), the 49 real frames load
        "mp4 65535x65535": "frames",  # H.264's SPS decides the size, not the container
        "avi 10^9 frames": "frames",
        "avi jpeg 65535x65535": "clear error",
        "avi jpeg 16000x16000": "clear error",
    }
    for label in ("y4m 16000x16000", "y4m 12000x9000"):
        message = got[label]["message"]
        size = label.split()[1]
        assert f"'claim{list(cases).index(label)}.y4m'" in message and size in message, message
        assert "16384 pixels a side" in message and "67,108,864 pixels a frame" in message, message
    assert got["y4m 8K, real"]["frames"] == 1 and abs(got["y4m 8K, real"]["mean"] * 255 - 200) < 30
    assert got["mp4 10^9 frames"]["frames"] == 49
    assert any("declares 1,000,000,000 frames" in w for w in got["mp4 10^9 frames"]["warnings"])
    assert got["avi 10^9 frames"]["frames"] == 5
    assert got["mp4 65535x65535"]["frames"] == 49
    for label, r in got.items():
        assert r["seconds"] < SECONDS_PER_CASE, (label, r["seconds"])
