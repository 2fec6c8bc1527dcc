"""The runner's console reporter (headless/console.py) on recorded executor event sequences."""

from __future__ import annotations

import io
import logging

import pytest

from zsvr.headless import console

# The tiny ZVRD workflow as the runner saw it (ids, types, titles), and the events and progress
# the host reported for one clip with ZSVR_EarlyStop at 0.75 of 4 steps (recorded from a real run).
PROMPT = {
    "1": {"class_type": "ZSVR_LoadVideo"}, "2": {"class_type": "CheckpointLoaderSimple"},
    "4": {"class_type": "CLIPTextEncode", "_meta": {"title": "Prompt"}},
    "5": {"class_type": "CLIPTextEncode", "_meta": {"title": "Negative prompt"}},
    "6": {"class_type": "VAEEncode"}, "12": {"class_type": "ZSVR_EarlyStop"},
    "14": {"class_type": "SamplerCustomAdvanced"}, "15": {"class_type": "VAEDecode"},
    "17": {"class_type": "SaveVideo"},
}
DISPLAY = {"ZSVR_LoadVideo": "Load Video (ZSVR)", "CheckpointLoaderSimple": "Load Checkpoint",
           "VAEEncode": "VAE Encode", "VAEDecode": "VAE Decode", "SaveVideo": "Save Video",
           "ZSVR_EarlyStop": "Early Stop (ZSVR)", "CLIPTextEncode": "CLIP Text Encode (Prompt)"}
RECORDED = [
    ("event", "execution_start", {}), ("event", "execution_cached", {"nodes": []}),
    ("event", "executing", {"node": "1"}),
    ("progress", "1", 1, 4), ("progress", "1", 2, 4), ("progress", "1", 3, 4), ("progress", "1", 4, 4),
    ("event", "executing", {"node": "2"}), ("event", "executing", {"node": "6"}),
    ("event", "executing", {"node": "12"}), ("event", "executing", {"node": "5"}),
    ("event", "executing", {"node": "4"}), ("event", "executing", {"node": "14"}),
    ("progress", "14", 1, 3), ("progress", "14", 2, 3), ("progress", "14", 3, 3),
    ("event", "executing", {"node": "15"}), ("event", "executing", {"node": "17"}),
    ("event", "executed", {"node": "17"}), ("event", "execution_success", {}),
]


class Clock:
    """Test time: one second passes before each recorded event (so a node's time is its number of events)."""

    def __init__(self):
        self.t = 0.0

    def __call__(self):
        return self.t


def play(events, tty=False, names=None):
    out = io.StringIO()
    clock = Clock()
    rep = console.ConsoleReporter(names or console.node_names(PROMPT, DISPLAY.get), stream=out, tty=tty,
                                  clock=clock)
    rep.clip_start(1, 2, "rain.mp4")
    for item in events:
        clock.t += 1.0
        if item[0] == "event":
            rep.on_event(item[1], item[2])
        else:
            rep.on_progress(*item[1:])
    return rep, out


def test_recorded_run_into_a_file_is_one_line_per_event_with_names():
    rep, out = play(RECORDED)
    rep.clip_end(True, "out/rain/rain_00001_.mp4", frames=4)
    assert out.getvalue().splitlines() == [
        "[1/2] rain.mp4",
        "  Load Video (ZSVR): reading the video",
        "    Load Video (ZSVR): [#####...............] 1/4  25%",
        "    Load Video (ZSVR): [##########..........] 2/4  50%",
        "    Load Video (ZSVR): [###############.....] 3/4  75%",
        "    Load Video (ZSVR): [####################] 4/4 100%",
        "  Load Checkpoint: loading the model",
        "  VAE Encode: encoding frames (VAE)",
        "  Early Stop (ZSVR)",
        "  Negative prompt: encoding the text",
        "  Prompt: encoding the text",
        "  SamplerCustomAdvanced: sampling",
        "    SamplerCustomAdvanced: [######..............] 1/3  33%",
        "    SamplerCustomAdvanced: [#############.......] 2/3  66%",
        "    SamplerCustomAdvanced: [####################] 3/3 100%",
        "  VAE Decode: decoding frames (VAE)",
        "  Save Video: saving",
        "  ok: 4 frames in 20.0 s -> out/rain/rain_00001_.mp4",
    ]


def test_recorded_run_on_a_terminal_keeps_one_line_per_node():
    rep, out = play(RECORDED, tty=True)
    lines = out.getvalue().split("\n")
    final = [line.rsplit("\r", 1)[-1].replace("\x1b[K", "") for line in lines if line]
    assert final[0] == "[1/2] rain.mp4"
    assert final[1] == "  Load Video (ZSVR): reading the video  [####################] 4/4 100%  (5.0 s)"  # events 3 to 8
    assert final[2] == "  Load Checkpoint: loading the model  (1.0 s)"
    assert final[7] == "  SamplerCustomAdvanced: sampling  [####################] 3/3 100%  (4.0 s)"
    assert len(final) == 10  # the clip line and one line per executed node
    for line in lines:  # every redraw of a line differs from the one before it
        draws = line.split("\r")
        assert all(a != b for a, b in zip(draws, draws[1:])), line


@pytest.mark.parametrize("tty", [False, True])
def test_early_stop_ends_the_bar_at_100_percent_and_says_where(tty):
    """The sampler's total shrinks when ZSVR_EarlyStop cuts the run (4 -> 3 steps), or the node simply ends
    after step 3 of 4: either way the node ended on purpose, so the bar ends full and names the step."""
    for events in ([("progress", "14", 1, 4), ("progress", "14", 2, 4), ("progress", "14", 3, 3)],
                   [("progress", "14", 1, 4), ("progress", "14", 2, 4), ("progress", "14", 3, 4)]):
        _, out = play([("event", "executing", {"node": "14"}), *events, ("event", "executing", {"node": "15"})],
                      tty=tty)
        last_bar = [line for line in out.getvalue().replace("\r", "\n").splitlines() if "SamplerCustomAdvanced" in line][-1]
        assert "[####################] 3/3 100% (ended early at step 3 of 4)" in last_bar, out.getvalue()


@pytest.mark.parametrize("event", ["execution_error", "execution_interrupted"])
def test_a_failed_node_keeps_its_bar_where_it_stopped(event):
    rep, out = play([("event", "executing", {"node": "14"}), ("progress", "14", 1, 4), ("progress", "14", 2, 4),
                     ("event", event, {"node_id": "14"})])
    rep.clip_end(False, "node 14 (SamplerCustomAdvanced): boom")
    text = out.getvalue()
    assert "100%" not in text and "2/4  50%" in text
    assert text.splitlines()[-1] == "  FAILED after 4.0 s: node 14 (SamplerCustomAdvanced): boom"


def test_repeated_progress_prints_nothing_new_and_phases_restart():
    _, out = play([("event", "executing", {"node": "15"}),
                   ("progress", "15", 2, 2), ("progress", "15", 2, 2),  # the same report twice
                   ("progress", "15", 1, 8), ("progress", "15", 8, 8),  # a second loop in the same node
                   ("event", "execution_success", {})])
    assert out.getvalue().splitlines()[1:] == [
        "  VAE Decode: decoding frames (VAE)",
        "    VAE Decode: [####################] 2/2 100%",
        "    VAE Decode: [####################] 8/8 100%",  # 1/8 is below the first quarter
    ]


def test_cached_nodes_are_one_line_by_name():
    _, out = play([("event", "execution_cached", {"nodes": ["2", "4", "5"]})])
    assert out.getvalue().splitlines()[1] == "  cached from the previous run: Load Checkpoint, Prompt, Negative prompt"


def test_node_names_prefer_title_then_display_name_and_tell_twins_apart():
    names = console.node_names({"3": {"class_type": "CLIPTextEncode"}, "4": {"class_type": "CLIPTextEncode"},
                                "5": {"class_type": "KSamplerSelect"}, "6": {"class_type": "VAEDecode",
                                                                             "_meta": {"title": "Decode"}}},
                               DISPLAY.get)
    assert names == {"3": ("CLIP Text Encode (Prompt) #3", "encoding the text"),
                     "4": ("CLIP Text Encode (Prompt) #4", "encoding the text"),
                     "5": ("KSamplerSelect", ""), "6": ("Decode", "decoding frames (VAE)")}


@pytest.mark.parametrize("class_type, words", [
    ("UNETLoader", "loading the model"), ("ZSVR_LoadCogVideoX", "loading the model"),
    ("CheckpointLoaderSimple", "loading the model"), ("VAEEncodeTiled", "encoding frames (VAE)"),
    ("VAEDecodeTiled", "decoding frames (VAE)"), ("ZSVR_DDPMInvert", "inverting the video"),
    ("KSampler", "sampling"), ("KSamplerSelect", ""), ("VHS_VideoCombine", "saving"),
    ("VHS_LoadVideo", "reading the video"), ("LoadImage", "reading the input"),
])
def test_activity_words(class_type, words):
    assert console.activity(class_type) == words


def test_log_records_never_split_a_bar_and_repeats_collapse():
    rep, out = play([("event", "executing", {"node": "14"}), ("progress", "14", 1, 4)], tty=True)
    handler = console.ConsoleLogHandler(rep)
    logger = logging.getLogger("zsvr-console-test")
    logger.propagate = False
    logger.addHandler(handler)
    try:
        logger.warning("torchaudio missing")
        logger.warning("torchaudio missing")
        logger.info("not shown at WARNING")
    finally:
        logger.removeHandler(handler)
    rep.on_progress("14", 2, 4)
    lines = out.getvalue().split("\n")
    assert lines[2] == "WARNING: torchaudio missing"  # on its own line, once
    assert lines[3].startswith("\r  SamplerCustomAdvanced: sampling  [##########") and "not shown" not in out.getvalue()
