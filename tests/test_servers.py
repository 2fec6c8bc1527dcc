"""``run_workflow.py --servers``: the runner as a client of running ComfyUI servers (headless/servers.py).

Two kinds of test:

* against :mod:`fake_comfy` (ComfyUI's API with scripted prompts, on
  127.0.0.1, no ComfyUI needed): units, uploads, outputs, pull scheduling,
  every fault and how it is retried or not, cancelling, tokens, the checks at
  start, the console and the summary table; each asserts what the runner
  computed or asked of the servers, never how long anything took;
* against real ComfyUI servers (host tests, further down): the tiny Wan
  workflow through two servers equals the in-process run frame for frame, a
  server killed while it holds a unit, a server without the pack.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import os
import pathlib
import shutil
import sys

import pytest

pytest.importorskip("aiohttp")

from fake_comfy import PROMPT, FakeComfy, expected_output  # noqa: E402
from host_harness import PACK_DIR, REALRAIN_DIR  # noqa: E402
import long_clips  # noqa: E402
from zsvr.headless import fleet_console, fleet_preflight, fleet_units, server_client, servers  # noqa: E402
from zsvr.headless import fleet as scheduler  # noqa: E402  (`fleet` names a Fleet in the tests)
from zsvr.headless.clip_job import ChunkOptions  # noqa: E402
from zsvr.headless.fleet import Fleet  # noqa: E402


def _clips(folder: pathlib.Path, names=("a", "b", "c", "d")) -> list[pathlib.Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, name in enumerate(names):
        p = folder / f"{name}.mp4"
        p.write_bytes(f"clip {name} {i}".encode() * 10)
        paths.append(p)
    return paths


async def _until(condition, what: str, limit: float = 20.0) -> None:
    """Wait for ``condition()`` (an event in the run), failing the test if it never comes."""
    loop = asyncio.get_running_loop()
    end = loop.time() + limit
    while not condition():
        if loop.time() > end:
            raise AssertionError(f"never happened: {what}")
        await asyncio.sleep(0.01)


@contextlib.asynccontextmanager
async def _serving(*fakes: FakeComfy):
    """Start the fake servers, hand them to the block, and stop them when it ends (also when it fails)."""
    try:
        yield [await f.start() for f in fakes]
    finally:
        for f in fakes:
            await f.stop()


def _in_background(fleet: Fleet, clips, out: pathlib.Path) -> asyncio.Task:
    """``fleet`` running one unit of :data:`PROMPT` per clip, as a task: the scenario acts while it runs."""
    return asyncio.create_task(fleet.run(fleet_units.clip_units(PROMPT, clips, out)))


# ---------------------------------------------------------------------------
# Pure parts.
# ---------------------------------------------------------------------------


def test_server_urls_are_normalised_and_checked():
    assert server_client.parse_servers("127.0.0.1:8188, http://gpu2:8189/,https://farm.example/comfy,127.0.0.1:8188") \
        == ["http://127.0.0.1:8188", "http://gpu2:8189", "https://farm.example/comfy"]
    for bad, words in [("ftp://x:1", "http:// or https://"), ("http://u:pw@x:1", "ZSVR_SERVER_TOKEN"),
                       ("http://x:1/?token=3", "ZSVR_SERVER_TOKEN"), ("http://:80", "no host"),
                       ("http://x:99999", "[Pp]ort out of range")]:
        with pytest.raises(ValueError, match=words.replace("$", r"\$")):
            server_client.parse_servers(bad)
    with pytest.raises(ValueError, match="at least one server"):
        server_client.parse_servers(" , ")


def test_execution_errors_are_sorted_into_server_and_input_faults():
    server = [("torch.OutOfMemoryError", "CUDA out of memory. Tried to allocate 2.00 GiB"),
              ("RuntimeError", "CUDA error: an illegal memory access was encountered"),
              ("MemoryError", ""), ("RuntimeError", "[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: "
                                                    "can't allocate memory: you tried to allocate 123 bytes. "
                                                    "Error code 12 (Cannot allocate memory) out of memory")]
    inputs = [("ValueError", "ZSVR input 'video': 'x.mp4' cannot be opened. Fix: choose another file."),
              ("RuntimeError", "mat1 and mat2 shapes cannot be multiplied (5x4 and 3x2)"),
              ("KeyError", "'model'")]
    assert [fleet_units.classify_error({"exception_type": t, "exception_message": m}) for t, m in server] == ["server"] * 4
    assert [fleet_units.classify_error({"exception_type": t, "exception_message": m}) for t, m in inputs] == ["input"] * 3
    assert fleet_units.error_line({"node_id": "7", "node_type": "VAEDecode", "exception_message": "boom\nTIPS: x"}) == \
        "node 7 (VAEDecode): boom"


def test_a_server_lacking_node_types_or_model_files_is_found_from_its_registry():
    reg = fleet_preflight.Registry({"ZSVR_LoadVideo": {"input": {"required": {
        "video": ["COMBO", {"options": ["other.mp4"], "video_upload": True}]}}, "display_name": "Load Video (ZSVR)"},
        "UNETLoader": {"input": {"required": {"unet_name": [["a.safetensors"]], "weight_dtype": [["default"]]}},
                       "display_name": "UNETLoader"}})
    prompt = {"1": {"class_type": "ZSVR_LoadVideo", "inputs": {"video": "mine.mp4"}},
              "2": {"class_type": "UNETLoader", "inputs": {"unet_name": "wan.safetensors", "weight_dtype": "default"}},
              "3": {"class_type": "VHS_VideoCombine", "inputs": {}}}
    problems = fleet_preflight.missing_on(reg, prompt, uploaded=[("1", "video")])
    assert problems == ["no node type VHS_VideoCombine (install the node pack that provides it)",
                        "node 2 (UNETLoader) unet_name 'wan.safetensors' is not among its options (a model file "
                        "missing there? copy it into that server's models folder)"]
    assert reg.display_name("ZSVR_LoadVideo") == "Load Video (ZSVR)" and reg.display_name("UNETLoader") is None
    assert reg.input_types("Nope") is None and "UNETLoader" in reg


def test_clip_units_prepare_each_clip_like_the_in_process_runner(tmp_path):
    clips = _clips(tmp_path / "in", ("rain",))
    (unit,) = fleet_units.clip_units(PROMPT, clips, tmp_path / "out")
    assert unit.key == unit.group == "rain.mp4"
    assert unit.prompt["2"]["inputs"]["filename_prefix"] == "rain/rain"
    assert [(u.path, u.targets) for u in unit.uploads] == [(clips[0], [("1", "video")])]
    assert PROMPT["2"]["inputs"]["filename_prefix"] == "video/x"  # the template is not changed
    with pytest.raises(ValueError, match="no ZSVR_LoadVideo"):
        fleet_units.clip_units({"1": {"class_type": "SaveVideo", "inputs": {}}}, clips, tmp_path)


# ---------------------------------------------------------------------------
# Against the fake API.
# ---------------------------------------------------------------------------


def test_units_are_uploaded_once_per_server_queued_and_their_outputs_fetched(tmp_path):
    clips = _clips(tmp_path / "in")
    out = tmp_path / "out"
    (out / "a").mkdir(parents=True)
    (out / "a" / "a_00001_.mp4").write_bytes(b"an older result")  # a name already taken is not overwritten

    async def scenario():
        async with _serving(FakeComfy("A"), FakeComfy("B")) as fakes:
            units = fleet_units.clip_units(PROMPT, clips, out)
            # a second unit on the same clip (as chunks are): the clip is uploaded once per server all the same
            units.append(fleet_units.Unit("a.mp4 again", json.loads(json.dumps(units[0].prompt)), units[0].uploads,
                                          out, group="a.mp4"))
            results = await Fleet([f.url for f in fakes]).run(units)
        return fakes, results

    fakes, results = asyncio.run(scenario())
    assert [r.ok for r in results] == [True] * 5
    by_clip = {c.name: c.read_bytes() for c in clips}
    for r in results:
        (file,) = r.files
        assert file.read_bytes() == expected_output(by_clip[r.unit.group], "2")
        assert file.parent == out / pathlib.Path(r.unit.group).stem
        assert len(r.attempts) == 1 and r.attempts[0].outcome == "ok" and r.server in [f.url for f in fakes]
    assert sorted(str(r.files[0].relative_to(out)) for r in results) == [
        "a/a_00002_.mp4", "a/a_00003_.mp4", "b/b_00001_.mp4", "c/c_00001_.mp4", "d/d_00001_.mp4"]
    assert (out / "a" / "a_00001_.mp4").read_bytes() == b"an older result"
    for f in fakes:
        # each clip went to this server at most once, under input/zsvr_runner/<stem>.<sha256[:12]>.mp4
        assert f.upload_count == len(f.uploads) and f.upload_count <= 4
        for name, data in f.uploads.items():
            folder, file = name.split("/")
            stem = file.split(".")[0]
            assert folder == "zsvr_runner" and data == by_clip[f"{stem}.mp4"]
            assert file == f"{stem}.{server_client.file_digest(tmp_path / 'in' / (stem + '.mp4'))[:12]}.mp4"
        # only the API's own endpoints were asked, without a token (none was set)
        assert {path for _, path, _ in f.requests} <= {"/system_stats", "/object_info", "/upload/image", "/prompt",
                                                       "/ws", "/view", "/queue"} | {f"/history/{p}" for p in f.executed}
        assert all(auth is None for _, _, auth in f.requests)
        # outputs were saved on the server under zsvr_runner/<attempt>/, apart from any other run's
        assert all(sub.startswith("zsvr_runner/") for sub, _ in f.files)
    assert sum(len(f.executed) for f in fakes) == 5


def test_pull_scheduling_keeps_at_most_two_units_on_a_busy_server_and_the_rest_go_to_the_free_one(tmp_path):
    clips = _clips(tmp_path / "in", ("a", "b", "c", "d", "e", "f", "g", "h"))

    async def scenario():
        async with _serving(FakeComfy("slow"), FakeComfy("fast")) as (slow, fast):
            slow.gate, fast.gate = asyncio.Event(), asyncio.Event()
            fleet = Fleet([slow.url, fast.url], depth=2)
            run = _in_background(fleet, clips, tmp_path / "out")
            await _until(lambda: slow.held() == 2 and fast.held() == 2, "both servers hold two units")
            fast.gate.set()  # the fast GPU runs; the slow one stays on its first unit
            await _until(lambda: len(fast.executed) == 6, "the fast server ran the other six units")
            assert slow.held() == 2 and not slow.executed  # it never got more than its two
            slow.gate.set()
            results = await run
        return slow, fast, fleet, results

    slow, fast, fleet, results = asyncio.run(scenario())
    assert all(r.ok for r in results)
    assert slow.most_held == 2 and fast.most_held == 2
    assert (len(slow.executed), len(fast.executed)) == (2, 6)
    assert [(s.url, s.done) for s in fleet.servers] == [(slow.url, 2), (fast.url, 6)]
    table = fleet_console.format_summary(results, fleet)
    shares = {line.split()[0]: line.split()[1:3] for line in table.splitlines() if line.startswith("127.0.0.1:")}
    assert shares == {slow.url[7:]: ["2", "25%"], fast.url[7:]: ["6", "75%"]}, table
    assert table.splitlines()[-1] == "8 ok, 0 failed", table


def test_depth_one_holds_a_single_unit_per_server(tmp_path):
    clips = _clips(tmp_path / "in", ("a", "b", "c"))

    async def scenario():
        async with _serving(FakeComfy("one")) as (fake,):
            results = await Fleet([fake.url], depth=1).run(fleet_units.clip_units(PROMPT, clips, tmp_path / "out"))
        return fake, results

    fake, results = asyncio.run(scenario())
    assert all(r.ok for r in results) and fake.most_held == 1 and len(fake.executed) == 3


def test_an_out_of_memory_error_reruns_the_unit_on_another_server(tmp_path):
    clips = _clips(tmp_path / "in", ("a",))

    def oom(fake, pid, prompt):
        return ("error", "torch.OutOfMemoryError", "CUDA out of memory. Tried to allocate 20.00 GiB\n"
                "This error means you ran out of memory on your GPU.")

    async def scenario():
        async with _serving(FakeComfy("small", script=oom), FakeComfy("big")) as (small, big):
            big.ws_gate = asyncio.Event()  # the big card joins once the unit has failed on the small one
            fleet = Fleet([small.url, big.url], depth=1)
            run = _in_background(fleet, clips, tmp_path / "out")
            await _until(lambda: small.history, "the unit ran out of memory on the small card")
            big.ws_gate.set()
            results = await run
        return small, big, fleet, results

    small, big, fleet, results = asyncio.run(scenario())
    (r,) = results
    assert r.ok and r.server == big.url
    assert [(a.server, a.outcome) for a in r.attempts] == [(small.url, "server fault"), (big.url, "ok")]
    assert r.attempts[0].reason == (f"{small.url[7:]}: node 1 (ZSVR_LoadVideo): CUDA out of memory. Tried to "
                                    "allocate 20.00 GiB")
    # an OOM does not take the server out; its own row lists the fault
    assert fleet.servers[0].up and fleet.servers[0].faults == [r.attempts[0].reason.split(': ', 1)[1]]
    row = [line for line in fleet_console.format_summary(results, fleet).splitlines() if line.startswith("a.mp4")][0]
    assert row.split()[1:4] == ["ok", big.url[7:], "2"] and f"re-run after: {r.attempts[0].reason} -> " in row
    assert len(big.executed) == 1 and not small.executed


def test_input_errors_are_reported_once_and_not_retried(tmp_path):
    clips = _clips(tmp_path / "in", ("bad", "broken", "wrong"))

    def script(fake, pid, prompt):
        video = prompt["1"]["inputs"]["video"]
        if "bad" in video:
            return ("error", "ValueError", f"ZSVR input 'video': '{video}' cannot be opened (Invalid data). "
                                           "Fix: choose another file.")
        return ("error", "RuntimeError", "mat1 and mat2 shapes cannot be multiplied (5x4 and 3x2)")

    async def scenario():
        async with _serving(FakeComfy("A", script=script), FakeComfy("B", script=script)) as fakes:
            units = fleet_units.clip_units(PROMPT, clips, tmp_path / "out")
            units[2].prompt["1"]["inputs"]["frame_cap"] = -1  # refused by /prompt's validation
            fleet = Fleet([f.url for f in fakes])
            results = await fleet.run(units)
        return fakes, fleet, results

    fakes, fleet, results = asyncio.run(scenario())
    bad, broken, wrong = results
    assert not any(r.ok for r in results) and all(r.input_error for r in results)
    assert [len(r.attempts) for r in results] == [1, 1, 1]
    assert sum(len(f.history) for f in fakes) == 2  # the invalid one never ran
    # the error names the user's file, not the uploaded copy
    assert bad.error == (f"node 1 (ZSVR_LoadVideo): ZSVR input 'video': '{clips[0]}' cannot be opened (Invalid "
                         "data). Fix: choose another file.")
    assert broken.error == "node 1 (ZSVR_LoadVideo): mat1 and mat2 shapes cannot be multiplied (5x4 and 3x2)"
    assert wrong.error == ("the workflow does not validate: Prompt outputs failed validation | node 1: Value -1 "
                           "smaller than min of 0")
    assert all(s.up and not s.faults for s in fleet.servers)
    assert fleet_console.format_summary(results, fleet).splitlines()[-1] == "0 ok, 3 failed"


def test_a_server_that_dies_holding_a_unit_is_taken_out_and_the_unit_runs_elsewhere(tmp_path):
    clips = _clips(tmp_path / "in", ("a", "b", "c", "d"))
    events = []

    async def scenario():
        doomed = FakeComfy("doomed", script=lambda f, pid, p: "die")
        async with _serving(doomed, FakeComfy("healthy")) as (doomed, healthy):
            healthy.gate = asyncio.Event()
            fleet = Fleet([doomed.url, healthy.url], listener=lambda e, info: events.append((e, info.get("server"))))
            run = _in_background(fleet, clips, tmp_path / "out")
            await _until(lambda: not doomed.alive, "the doomed server died")
            healthy.gate.set()
            results = await run
        return doomed, healthy, fleet, results

    doomed, healthy, fleet, results = asyncio.run(scenario())
    assert all(r.ok and r.server == healthy.url for r in results)
    rerun = [r for r in results if r.rerun_after]
    assert 1 <= len(rerun) <= 2  # the unit it ran, and the one it held in its queue
    for r in rerun:
        assert r.attempts[0].server == doomed.url and r.attempts[0].outcome == "server fault"
        assert "websocket was dropped" in r.attempts[0].reason or "refused" in r.attempts[0].reason
    assert ("server_down", doomed.url) in events
    table = fleet_console.format_summary(results, fleet)
    assert table.splitlines()[-1] == f"4 ok, 0 failed; {len(rerun)} unit{'s' if len(rerun) > 1 else ''} re-run on " \
                                     "another server after a server fault", table
    assert any(line.startswith(doomed.url[7:]) and " 0 " in line and "websocket" in line for line in table.splitlines())


HOSTILE_OUTPUTS = [
    {"9": {"images": [{"filename": "x.mp4", "subfolder": "../../escaped", "type": "output"}]}},
    {"9": {"images": [{"filename": "x.mp4", "subfolder": "/tmp/zsvr-escaped", "type": "output"}]}},
    {"9": {"images": [{"filename": "../x.mp4", "subfolder": "", "type": "output"}]}},
    {"9": {"images": [{"filename": "a/../../x.mp4", "subfolder": "", "type": "output"}]}},
    {"9": {"images": [{"filename": "x\0.mp4", "subfolder": "", "type": "output"}]}},
    {"9": {"images": [{"filename": "x.mp4", "subfolder": "C:\\Windows", "type": "output"}]}},
    {"9": {"images": [{"filename": 7, "subfolder": "", "type": "output"}]}},
    {"9": {"images": [{"filename": "x.mp4", "subfolder": "out_link", "type": "output"}]}},  # a link leading out
    ["not", "a", "table"],
    {"9": "not a table"},  # wrong JSON types where ComfyUI sends tables and lists
    {"9": {"images": {"filename": "x.mp4", "subfolder": "", "type": "output"}}},
    {"9": {"images": [{"filename": "x.mp4", "subfolder": ["a"], "type": "output"}]}},
    {"9": {"images": [{"filename": ["x.mp4"], "subfolder": "", "type": "output"}]}},
    {},  # no file at all, though the prompt saves one
]


@pytest.mark.parametrize("outputs", HOSTILE_OUTPUTS, ids=[f"case{i}" for i in range(len(HOSTILE_OUTPUTS))])
def test_a_server_answering_with_unsafe_file_names_writes_nothing_outside_output(tmp_path, outputs):
    """A server whose /history names files outside ``--output`` (absolute, '..', a drive, a NUL, a separator in a
    file name, a subfolder that is a link leading out, a history of the wrong type) is at fault: nothing is
    written, the unit is run on the other server, which restores it."""
    clips = _clips(tmp_path / "in", ("a",))
    out, outside = tmp_path / "work" / "out", tmp_path / "outside"
    out.mkdir(parents=True)
    outside.mkdir()
    (out / "out_link").symlink_to(outside, target_is_directory=True)

    async def scenario():
        hostile = FakeComfy("hostile", script=lambda fake, pid, prompt: ("outputs", outputs))
        async with _serving(hostile, FakeComfy("good")) as (hostile, good):
            good.gate = asyncio.Event()
            run = _in_background(Fleet([hostile.url, good.url], depth=1), clips, out)
            await _until(lambda: hostile.executed, "the hostile server answered")
            good.gate.set()
            return await run

    (result,) = asyncio.run(scenario())
    assert result.ok and result.attempts[0].outcome != "ok" and "history" in result.attempts[0].reason
    assert list(outside.iterdir()) == [] and not (tmp_path / "escaped").exists()
    assert not pathlib.Path("/tmp/zsvr-escaped").exists()
    written = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    assert written == ["a/a_00001_.mp4"], written  # only the good server's file


HOSTILE_ANSWERS = [
    ("history", "claims-huge"), ("history", "endless"), ("history", "trickle"), ("history", "silent"),
    ("history", "not-json"), ("history", ("json", ["a", "list"])), ("history", ("json", lambda pid: {pid: "text"})),
    ("history", ("json", lambda pid: {pid: {"outputs": 5}})),
    ("view", "claims-huge"), ("view", "endless"), ("view", "trickle"), ("view", "silent"), ("view", "cut"),
]


@pytest.mark.parametrize("endpoint,how", HOSTILE_ANSWERS, ids=[f"{e}-{h if isinstance(h, str) else 'json' + str(i)}"
                                                              for i, (e, h) in enumerate(HOSTILE_ANSWERS)])
def test_a_server_answering_huge_endless_slow_or_mistyped_bodies_is_at_fault(tmp_path, monkeypatch, endpoint, how):
    """/history and /view answers that claim 10^12 bytes, never end, trickle, fall silent, break off or have the
    wrong JSON types: the server is at fault (reported, the unit run on the other server), memory and disk stay
    bounded (the caps are made small here), no staged or partial file is left, nothing is written outside
    ``--output``, and the result is the good server's."""
    monkeypatch.setattr(server_client, "MAX_JSON_BYTES", 1 << 20)
    monkeypatch.setattr(server_client, "MAX_DOWNLOAD_BYTES", 1 << 20)
    monkeypatch.setattr(server_client, "TRANSFER_READ_TIMEOUT_S", 0.5)
    monkeypatch.setattr(server_client, "REQUEST_TIMEOUT_S", 0.5)
    clips = _clips(tmp_path / "in", ("a",))
    out = tmp_path / "work" / "out"
    out.mkdir(parents=True)

    async def scenario():
        async with _serving(FakeComfy("hostile"), FakeComfy("good")) as (hostile, good):
            setattr(hostile, f"{endpoint}_answer", how)
            good.gate = asyncio.Event()
            run = _in_background(Fleet([hostile.url, good.url], depth=1), clips, out)
            await _until(lambda: hostile.executed, "the hostile server ran the unit")
            await _until(lambda: any(r[1] == f"/{endpoint}" or r[1].startswith(f"/{endpoint}/")
                                     for r in hostile.requests), "the runner asked the hostile server")
            await asyncio.sleep(0.2)
            good.gate.set()
            results = await asyncio.wait_for(run, 30)
        return results, good.url

    (result,), good_url = asyncio.run(scenario())
    first = result.attempts[0]
    assert result.ok and result.server == good_url
    assert first.outcome == "server fault", first
    assert ("history" in first.reason) if endpoint == "history" else ("fetching" in first.reason), first.reason
    assert result.attempts[-1].outcome == "ok"
    everything = sorted(p.relative_to(tmp_path / "work").as_posix() for p in (tmp_path / "work").rglob("*")
                        if p.is_file())
    assert everything == ["out/a/a_00001_.mp4"], everything  # the good server's file only; no .part left
    assert (out / "a" / "a_00001_.mp4").read_bytes() == expected_output(clips[0].read_bytes(), "2")


def test_a_dropped_websocket_reruns_the_unit_and_the_server_comes_back(tmp_path):
    clips = _clips(tmp_path / "in", ("a", "b"))
    events = []

    async def scenario():
        async with _serving(FakeComfy("flaky"), FakeComfy("other")) as (flaky, other):
            flaky.gate = asyncio.Event()
            other.gate = asyncio.Event()
            fleet = Fleet([flaky.url, other.url], depth=1, listener=lambda e, info: events.append(e))
            run = _in_background(fleet, clips, tmp_path / "out")
            await _until(lambda: flaky.running is not None and other.running is not None, "both run a unit")
            lost = flaky.running
            await flaky.drop_sockets()
            await _until(lambda: lost in flaky.interrupted, "the abandoned prompt was interrupted")
            flaky.gate.set()
            await _until(lambda: "server_up" in events, "the flaky server is probed back")
            # the other server is still busy: the unit lost on the flaky one goes back to it once it is up again
            await _until(lambda: events.count("done") == 1, "the lost unit is done while the other server is busy")
            other.gate.set()
            results = await run
        return flaky, other, lost, results

    flaky, other, lost, results = asyncio.run(scenario())
    assert all(r.ok for r in results)
    (r,) = [r for r in results if r.rerun_after]
    assert r.attempts[0].prompt_id == lost and "websocket was dropped" in r.attempts[0].reason
    assert [a.server for a in r.attempts] == [flaky.url, flaky.url] and r.server == flaky.url
    assert lost in flaky.deleted and lost in flaky.interrupted
    assert events.index("server_down") < events.index("server_up")


def test_a_unit_past_the_timeout_is_interrupted_and_rerun_elsewhere(tmp_path):
    clips = _clips(tmp_path / "in", ("a",))

    async def scenario():
        async with _serving(FakeComfy("stuck", script=lambda f, pid, p: "hang"), FakeComfy("spare")) as (stuck, spare):
            spare.ws_gate = asyncio.Event()  # the spare joins once the unit runs on the stuck server
            run = _in_background(Fleet([stuck.url, spare.url], depth=1, unit_timeout=0.3), clips, tmp_path / "out")
            await _until(lambda: stuck.running is not None, "the unit started on the stuck server")
            spare.ws_gate.set()
            results = await run
        return stuck, spare, results

    stuck, spare, results = asyncio.run(scenario())
    (r,) = results
    assert r.ok and r.server == spare.url
    assert [(a.server, a.outcome) for a in r.attempts] == [(stuck.url, "timeout"), (spare.url, "ok")]
    assert r.attempts[0].reason == f"{stuck.url[7:]}: ran longer than --unit-timeout 0.3 s"
    assert stuck.interrupted == [r.attempts[0].prompt_id] and not stuck.executed


def test_a_unit_failing_on_every_server_stops_after_the_fixed_number_of_attempts(tmp_path):
    clips = _clips(tmp_path / "in", ("a",))
    oom = lambda f, pid, p: ("error", "torch.OutOfMemoryError", "CUDA out of memory")  # noqa: E731

    async def scenario():
        async with _serving(FakeComfy("A", script=oom), FakeComfy("B", script=oom)) as fakes:
            results = await Fleet([f.url for f in fakes]).run(fleet_units.clip_units(PROMPT, clips, tmp_path / "o"))
        return fakes, results

    fakes, (r,) = asyncio.run(scenario())
    assert not r.ok and not r.input_error and len(r.attempts) == scheduler.MAX_ATTEMPTS == 3
    assert r.error.startswith("failed 3 times on servers: ") and r.error.count("CUDA out of memory") == 3
    assert {a.server for a in r.attempts} == {f.url for f in fakes}  # it was moved between the two


def test_when_every_server_is_gone_the_remaining_units_fail_with_each_reason(tmp_path, monkeypatch):
    monkeypatch.setattr(scheduler, "ALL_DOWN_GIVE_UP_S", 0.2)
    monkeypatch.setattr(scheduler, "PROBE_DELAYS_S", (0.05,))
    clips = _clips(tmp_path / "in", ("a", "b", "c"))

    async def scenario():
        async with _serving(FakeComfy("only", script=lambda f, pid, p: "die")) as (fake,):
            results = await Fleet([fake.url], depth=1).run(fleet_units.clip_units(PROMPT, clips, tmp_path / "o"))
        return fake, results

    fake, results = asyncio.run(scenario())
    assert not any(r.ok for r in results)
    assert results[0].attempts[0].outcome == "server fault"
    assert all(r.error.startswith(f"no server left to run it ({fake.url}: ") for r in results[1:])


def test_cancelling_deletes_the_queued_prompts_and_interrupts_the_running_ones(tmp_path):
    clips = _clips(tmp_path / "in", ("a", "b", "c", "d", "e"))

    async def scenario():
        async with _serving(FakeComfy("A"), FakeComfy("B")) as fakes:
            for f in fakes:
                f.gate = asyncio.Event()
            run = _in_background(Fleet([f.url for f in fakes]), clips, tmp_path / "out")
            await _until(lambda: all(f.held() == 2 for f in fakes), "each server holds two units")
            held = [(f.running, [p for p, _, _ in f.pending]) for f in fakes]
            run.cancel()  # what Ctrl-C does to asyncio.run's main task
            with pytest.raises(asyncio.CancelledError):
                await run
        return fakes, held

    fakes, held = asyncio.run(scenario())
    for fake, (running, pending) in zip(fakes, held):
        assert set(pending) <= set(fake.deleted) and running in fake.interrupted
        assert not fake.executed  # nothing ran on after the cancel


def test_a_token_from_the_environment_is_sent_on_every_request_and_never_shown(tmp_path, monkeypatch):
    clips = _clips(tmp_path / "in", ("a",))
    secret = "s3cret-Token-value"
    lines = []

    async def scenario(token):
        async with _serving(FakeComfy("guarded", token=secret)) as (fake,):
            run = await servers.run_remote_async(PROMPT, clips, tmp_path / "out", [], [fake.url],
                                                 say=lines.append, stream=io.StringIO())
        return fake, run.code, run.results

    monkeypatch.setenv("ZSVR_SERVER_TOKEN", secret)
    fake, code, results = asyncio.run(scenario(secret))
    assert code == 0 and results[0].ok
    assert fake.requests and all(auth == f"Bearer {secret}" for _, _, auth in fake.requests)
    assert "/ws" in [p for _, p, _ in fake.requests]
    monkeypatch.delenv("ZSVR_SERVER_TOKEN")
    lines.clear()
    fake, code, results = asyncio.run(scenario(None))
    assert code == 2 and results == []
    assert lines[0] == (f"server {fake.url}: NOT USED: GET /system_stats: HTTP 401: the server refused access; set "
                        "$ZSVR_SERVER_TOKEN to its token")
    assert all(secret not in line for line in lines)
    assert secret not in repr(Fleet([fake.url], secret).servers[0].client)


def test_a_server_that_redirects_gets_no_token_sent_on(tmp_path, monkeypatch):
    """A server (or anything on its address) answering with a redirect to another host is not followed: the
    token reaches only the servers named on the command line, and the line says why the server is not used."""
    from aiohttp import web

    secret = "s3cret-Token-value"
    lines = []

    async def scenario():
        async with _serving(FakeComfy("elsewhere")) as (elsewhere,):

            async def bounce(request):
                raise web.HTTPFound(elsewhere.url + request.path_qs)

            app = web.Application()
            app.router.add_route("*", "/{tail:.*}", bounce)
            runner = web.AppRunner(app)
            await runner.setup()
            site = web.TCPSite(runner, "127.0.0.1", 0)
            await site.start()
            port = site._server.sockets[0].getsockname()[1]
            run = await servers.run_remote_async(PROMPT, _clips(tmp_path / "in", ("a",)), tmp_path / "out", [],
                                                 [f"http://127.0.0.1:{port}"], say=lines.append, stream=io.StringIO())
            await runner.cleanup()
        return elsewhere, run.code

    monkeypatch.setenv("ZSVR_SERVER_TOKEN", secret)
    elsewhere, code = asyncio.run(scenario())
    assert code == 2 and elsewhere.requests == []
    assert "redirects elsewhere; redirects are not followed" in lines[0]
    assert all(secret not in line for line in lines)


def test_servers_without_the_pack_or_unreachable_are_reported_at_start_and_not_used(tmp_path):
    clips = _clips(tmp_path / "in", ("a", "b"))
    lines = []

    async def scenario():
        fakes = FakeComfy("good"), FakeComfy("bare", has_pack=False), FakeComfy("gone")
        async with _serving(*fakes) as (good, bare, gone):
            await gone.stop()
            prompt = json.loads(json.dumps(PROMPT))
            prompt["3"] = {"class_type": "UNETLoader", "inputs": {"unet_name": "tiny.safetensors"}}
            run = await servers.run_remote_async(prompt, clips, tmp_path / "out", [], [good.url, bare.url, gone.url],
                                                 say=lines.append, stream=io.StringIO())
        return good, bare, gone, run.code, run.results, run.fleet

    good, bare, gone, code, results, fleet = asyncio.run(scenario())
    assert code == 0 and all(r.server == good.url for r in results)
    assert lines[0] == f"server {good.url}: ok (ComfyUI fake, good)"
    assert lines[1] == (f"server {bare.url}: NOT USED: does not have the ZSVR pack (no ZSVR_LoadVideo in "
                        "/object_info): install comfyui-zsvr into its custom_nodes folder and restart it")
    assert lines[2].startswith(f"server {gone.url}: NOT USED: does not answer (GET /system_stats: connection refused")
    assert [p for _, p, _ in bare.requests] == ["/system_stats", "/object_info"]  # nothing was sent to it after
    assert "not used: does not have the ZSVR pack" in fleet_console.format_summary(results, fleet)


def test_a_server_lacking_a_model_file_is_reported_and_none_left_is_an_error(tmp_path):
    clips = _clips(tmp_path / "in", ("a",))
    lines = []

    async def scenario():
        async with _serving(FakeComfy("nomodel")) as (fake,):
            prompt = json.loads(json.dumps(PROMPT))
            prompt["3"] = {"class_type": "UNETLoader", "inputs": {"unet_name": "wan.safetensors"}}
            run = await servers.run_remote_async(prompt, clips, tmp_path / "out", [], [fake.url], say=lines.append)
        return fake, run

    fake, run = asyncio.run(scenario())
    assert run.code == 2 and run.results == []
    assert lines == [f"server {fake.url}: ok (ComfyUI fake, nomodel)",
                     f"server {fake.url}: NOT USED: lacks what the workflow needs: node 3 (UNETLoader) unet_name "
                     "'wan.safetensors' is not among its options (a model file missing there? copy it into that "
                     "server's models folder)",
                     "error: no server can run the workflow (see above)"]


def test_set_overrides_and_conversion_use_the_servers_registry(tmp_path):
    clips = _clips(tmp_path / "in", ("a",))
    lines = []
    ui = {"nodes": [{"id": 1, "type": "ZSVR_LoadVideo", "mode": 0, "widgets_values": ["", 2, "video"],
                     "outputs": [{"name": "images", "type": "IMAGE", "links": [1]}]},
                    {"id": 2, "type": "SaveVideo", "mode": 0, "widgets_values": ["video/x", "auto"],
                     "inputs": [{"name": "video", "type": "VIDEO", "link": 1}]},
                    {"id": 3, "type": "Note", "mode": 0, "widgets_values": ["hi"]}],
          "links": [[1, 1, 0, 2, 0, "VIDEO"]]}

    async def scenario(sets):
        async with _serving(FakeComfy("reg")) as (fake,):
            run = await servers.run_remote_async(ui, clips, tmp_path / "out", sets, [fake.url], say=lines.append,
                                                 stream=io.StringIO())
        return fake, run

    fake, run = asyncio.run(scenario(["Load Video (ZSVR).frame_cap=4"]))
    assert run.code == 0 and run.results[0].ok
    assert "--set Load Video (ZSVR).frame_cap=4: node 1 (Load Video (ZSVR), ZSVR_LoadVideo) frame_cap 2 -> 4" in lines
    (sent,) = [r.unit.prompt for r in run.results]
    assert sent["1"]["inputs"]["frame_cap"] == 4 and set(sent) == {"1", "2"}
    lines.clear()
    fake, run = asyncio.run(scenario(["ZSVR_LoadVideo.framecap=4"]))
    assert run.code == 2 and lines[-1].startswith("error: --set 'ZSVR_LoadVideo.framecap=4': node 1") and \
        "Did you mean 'frame_cap'?" in lines[-1]
    assert "/prompt" not in [p for _, p, _ in fake.requests]


def test_console_prints_a_line_per_event_and_quarter_bars_into_a_file():
    names = {"1": ("Load Video (ZSVR)", "reading the video"), "2": ("Save Video", "saving")}
    out = io.StringIO()
    display = fleet_console.FleetConsole(2, names, stream=out, tty=False)
    unit = fleet_units.Unit("a.mp4", PROMPT, [], pathlib.Path("."), group="a.mp4")
    result = fleet_units.UnitResult(unit, ok=True, server="http://h:1",
                                attempts=[fleet_units.Attempt("http://h:1", "p", "ok", compute_s=2.5, upload_s=0.25,
                                                          queue_s=0.05, fetch_s=0.2)])
    display("queued", {"unit": unit, "server": "http://h:1"})
    display("node", {"unit": unit, "server": "http://h:1", "node": "1"})
    for v in (1, 2, 3, 4):
        display("progress", {"unit": unit, "server": "http://h:1", "node": "1", "value": v, "total": 4})
    display("requeued", {"unit": unit, "server": "http://h:1", "reason": "h:1: the websocket was dropped"})
    display("server_down", {"server": "http://h:1", "reason": "the websocket was dropped"})
    display("done", {"unit": unit, "server": "http://h:2", "result": result})
    assert out.getvalue().splitlines() == [
        "a.mp4 -> h:1",
        "  a.mp4 @ h:1: Load Video (ZSVR): reading the video",
        "  a.mp4 @ h:1: Load Video (ZSVR)  [#####...............] 1/4  25%",
        "  a.mp4 @ h:1: Load Video (ZSVR)  [##########..........] 2/4  50%",
        "  a.mp4 @ h:1: Load Video (ZSVR)  [###############.....] 3/4  75%",
        "  a.mp4 @ h:1: Load Video (ZSVR)  [####################] 4/4 100%",
        "a.mp4: re-queued for another server (h:1: the websocket was dropped)",
        "server h:1 is out: the websocket was dropped",
        "a.mp4: ok on h:2 in 2.5 s (+0.5 s transfer)",
        "overall [##########..........] 1/2  50% units",
    ]
    tty = io.StringIO()
    display = fleet_console.FleetConsole(1, names, stream=tty, tty=True)
    display("queued", {"unit": unit, "server": "http://h:1"})
    display("progress", {"unit": unit, "server": "http://h:1", "node": "1", "value": 1, "total": 2})
    text = tty.getvalue()
    # the block (one line per unit in flight, then the overall bar) is redrawn in place: cursor up, clear, draw
    assert text.endswith("\x1b[2F\x1b[J  a.mp4 @ h:1: Load Video (ZSVR)  [##########..........] 1/2  50%\x1b[K\n"
                         "overall [....................] 0/1   0% units\x1b[K\n")


# ---------------------------------------------------------------------------
# run_workflow.py --servers, the command itself (a subprocess against the fake API).
# ---------------------------------------------------------------------------


class FakeInThread:
    """A :class:`FakeComfy` served from its own thread and event loop, so that a subprocess can talk to it."""

    def __init__(self, **kwargs):
        import threading

        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.fake = self.call(self._start(kwargs))

    async def _start(self, kwargs):
        return await FakeComfy(**kwargs).start()

    def call(self, coro):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout=30)

    def read(self, fn):
        async def get():
            return fn(self.fake)
        return self.call(get())

    def close(self):
        self.call(self.fake.stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)


def _runner_cmd(tmp_path, clips, url, *extra):
    workflow = tmp_path / "wf.json"
    workflow.write_text(json.dumps(PROMPT))
    return [sys.executable, str(PACK_DIR / "run_workflow.py"), str(workflow), "--input", str(clips[0].parent),
            "--output", str(tmp_path / "out"), "--servers", url, "--comfyui", str(tmp_path / "no-comfyui"), *extra]


def test_the_command_runs_a_folder_on_a_server_without_a_local_comfyui(tmp_path):
    import subprocess

    clips = _clips(tmp_path / "in", ("a", "b"))
    served = FakeInThread(name="gpu0", token="tok-123")
    try:
        env = {k: v for k, v in os.environ.items() if k != "COMFYUI_PATH"}
        env["ZSVR_SERVER_TOKEN"] = "tok-123"
        proc = subprocess.run(_runner_cmd(tmp_path, clips, served.fake.url, "--set", "1.frame_cap=3"),
                              capture_output=True, text=True, env=env, timeout=120)
        requests = served.read(lambda f: list(f.requests))
    finally:
        served.close()
    assert proc.returncode == 0, proc.stdout + proc.stderr
    log = proc.stderr.splitlines()
    assert log[0] == f"server {served.fake.url}: ok (ComfyUI fake, gpu0)"
    assert "--set 1.frame_cap=3: node 1 (Load Video (ZSVR), ZSVR_LoadVideo) frame_cap 5 -> 3" in log
    assert proc.stdout.splitlines()[-1] == "2 ok, 0 failed"
    for name in ("a", "b"):  # the same layout as in-process runs: <output>/<clip>.mp4 and its record
        assert (tmp_path / "out" / f"{name}.mp4").read_bytes() == expected_output(
            (tmp_path / "in" / f"{name}.mp4").read_bytes(), "2")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a.mp4", "a.zsvr.json", "b.mp4", "b.zsvr.json"]
    assert "tok-123" not in proc.stdout + proc.stderr
    assert all(auth == "Bearer tok-123" for _, _, auth in requests)


def test_a_rerun_on_servers_skips_finished_clips_and_force_sends_them_again(tmp_path):
    """Issue 25 item 3 over ``--servers``: a rerun sends nothing for clips recorded as done and says so; a changed
    ``--set`` or ``--force`` sends them again, and the output is replaced under the same name."""
    import subprocess

    clips = _clips(tmp_path / "in", ("a", "b"))
    served = FakeInThread(name="gpu0")
    env = {k: v for k, v in os.environ.items() if k != "COMFYUI_PATH"}
    runs = []
    try:
        for extra in ((), (), ("--set", "1.frame_cap=3"), ("--force", "--set", "1.frame_cap=3")):
            proc = subprocess.run(_runner_cmd(tmp_path, clips, served.fake.url, *extra), capture_output=True,
                                  text=True, env=env, timeout=120)
            assert proc.returncode == 0, proc.stdout + proc.stderr
            runs.append((proc.stdout, served.read(lambda f: len(f.executed))))
    finally:
        served.close()
    (first, n1), (second, n2), (changed, n3), (forced, n4) = runs
    assert (n1, n2, n3, n4) == (2, 2, 4, 6)  # prompts the server ran, counted after each run
    assert second.count("skipped (done)") == 3 and second.splitlines()[-1] == (
        "2 clips skipped (done) (--force runs them again)"), second
    assert "skipped" not in changed + forced
    for name in ("a", "b"):
        assert (tmp_path / "out" / f"{name}.mp4").read_bytes() == expected_output(
            (tmp_path / "in" / f"{name}.mp4").read_bytes(), "2")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a.mp4", "a.zsvr.json", "b.mp4", "b.zsvr.json"]


@pytest.mark.parametrize("signame, code", [("SIGINT", 130), ("SIGTERM", 143), ("SIGHUP", 129)])
def test_ctrl_c_deletes_the_queued_prompts_and_interrupts_the_running_one(tmp_path, signame, code):
    """Ctrl-C, SIGTERM and SIGHUP alike (``headless/stop_signals.py``): queued prompts deleted, running one
    interrupted, exit 128 + the signal's number, one line, no traceback."""
    import signal
    import subprocess
    import time

    clips = _clips(tmp_path / "in", ("a", "b", "c"))
    served = FakeInThread(name="gpu0")
    try:
        served.call(_set_gate(served.fake))
        proc = subprocess.Popen(_runner_cmd(tmp_path, clips, served.fake.url), stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        end = time.monotonic() + 60
        while served.read(lambda f: f.held()) < 2:  # one running, one waiting in the server's queue
            assert time.monotonic() < end and proc.poll() is None, "the runner never queued two units"
            time.sleep(0.05)
        running, pending = served.read(lambda f: (f.running, [p for p, _, _ in f.pending]))
        proc.send_signal(getattr(signal, signame))
        out, err = proc.communicate(timeout=60)
        deleted, interrupted, executed = served.read(lambda f: (list(f.deleted), list(f.interrupted), list(f.executed)))
    finally:
        served.close()
    assert proc.returncode == code, out + err
    assert len(pending) == 1 and pending[0] in deleted and interrupted == [running] or running in interrupted
    assert not executed and not (tmp_path / "out").exists()
    assert err.splitlines()[-1] == (f"stopped by {signame}: the runner's queued prompts were deleted from the "
                                    "servers and the running ones interrupted")
    assert "Traceback" not in out + err


async def _set_gate(fake):
    fake.gate = asyncio.Event()


# ---------------------------------------------------------------------------
# Against real ComfyUI servers (host tests).
# ---------------------------------------------------------------------------

WAN = "ZSVD rain removal - Wan 2.1.json"
CLIP_NAMES = ("42.mp4", "152.mp4", "262.mp4")


class ComfyServer:
    """``python main.py`` on 127.0.0.1 in its own process group, with its own base folder (HOST_NOTES section 1)."""

    def __init__(self, comfy_dir: pathlib.Path, base: pathlib.Path, models: pathlib.Path | None, with_pack: bool):
        import socket

        self.base = base
        nodes_dir = base / "custom_nodes"
        nodes_dir.mkdir(parents=True)
        (base / "input").mkdir()
        if with_pack:
            os.symlink(PACK_DIR, nodes_dir / "comfyui-zsvr")
            (nodes_dir / "zsvr_test_nodes").mkdir()
            # the harness's RandomConditioning as a stand-in pack, so server and in-process runs draw the same
            shutil.copy(pathlib.Path(__file__).with_name("random_conditioning.py"),
                        nodes_dir / "zsvr_test_nodes" / "__init__.py")
        if models is not None:
            os.symlink(models, base / "models")
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = base / "server.log"
        self.comfy_dir = comfy_dir
        self.cmd = [sys.executable, "main.py", "--cpu", "--listen", "127.0.0.1", "--port", str(self.port),
                    "--disable-auto-launch", "--base-directory", str(base), "--database-url", "sqlite:///:memory:",
                    "--disable-api-nodes"]
        self._launch()

    def _launch(self) -> None:
        import subprocess

        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(self.cmd, cwd=self.comfy_dir, stdout=log, stderr=subprocess.STDOUT,
                                         start_new_session=True)

    def restart(self) -> None:
        """Start the server again on the same port and base folder once its process is gone (after :meth:`kill`);
        call :meth:`wait_ready` to wait for it to answer."""
        self.proc.wait(timeout=30)
        self._launch()

    def wait_ready(self, limit: float = 240.0) -> None:
        import time
        import urllib.request

        end = time.monotonic() + limit
        while time.monotonic() < end:
            if self.proc.poll() is not None:
                raise RuntimeError(f"ComfyUI on port {self.port} exited: {self.log.read_text()[-2000:]}")
            try:
                with urllib.request.urlopen(self.url + "/system_stats", timeout=2):
                    return
            except OSError:
                time.sleep(0.5)
        raise RuntimeError(f"ComfyUI on port {self.port} did not answer in {limit} s: {self.log.read_text()[-2000:]}")

    def kill(self, sig=None) -> None:
        """Signal the server's whole process group (SIGKILL by default), as a crash would end it."""
        import signal

        try:
            os.killpg(self.proc.pid, sig or signal.SIGKILL)
        except ProcessLookupError:
            pass

    def stop(self) -> None:
        import signal
        import subprocess

        self.kill(signal.SIGTERM)
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.kill()
            self.proc.wait(timeout=20)



@pytest.fixture(scope="module")
def comfy_servers(host, tmp_path_factory):
    """Two ComfyUI servers with the pack and the tiny models, and one without the pack; stopped afterwards."""
    root = tmp_path_factory.mktemp("servers")
    started = []
    try:
        for name, with_pack in (("a", True), ("b", True), ("bare", False)):
            started.append(ComfyServer(host.comfy_dir, root / name, host.models_dir if with_pack else None, with_pack))
        for s in started:
            s.wait_ready()
        yield dict(zip(("a", "b", "bare"), started))
    finally:
        for s in started:
            s.stop()


@pytest.fixture(scope="module")
def wan_prompt(host):
    from test_host_workflows import TINY, _substitute_files, _tiny_run_prompt

    ui = json.loads((PACK_DIR / "workflows" / WAN).read_text())
    api = host.comfy.to_api(ui)
    return _tiny_run_prompt(_substitute_files(host, api, TINY[WAN]), TINY[WAN])


def _frames(path: pathlib.Path):
    import av
    import numpy as np

    with av.open(str(path)) as container:
        video = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    return np.stack(video)


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    if not REALRAIN_DIR.is_dir():
        pytest.skip("shared/data/realrain not found")
    folder = tmp_path_factory.mktemp("clips")
    import shutil

    for name in CLIP_NAMES:
        shutil.copyfile(REALRAIN_DIR / name, folder / name)
    return [folder / n for n in CLIP_NAMES]


@pytest.fixture(scope="module")
def in_process_frames(host, wan_prompt, clips):
    """The same workflow run in-process (``run_workflow.run_batch``): decoded frames per clip."""
    from zsvr import run_workflow

    rows = run_workflow.run_batch(host.comfy, wan_prompt, clips, host.work_dir / "output", progress=False)
    assert all(r["ok"] for r in rows), rows
    return {r["video"]: _frames(pathlib.Path(r["outputs"][0])) for r in rows}


def test_wan22_14b_pair_workflow_runs_on_a_server(host, comfy_servers, clips, tmp_path):
    """The shipped Wan 2.2 14B workflow (the tiny pair of experts) as a --servers unit: the server runs both
    experts through its inversion and edit and the fetched video has the clip's 5 frames."""
    from test_host_workflows import TINY, _substitute_files, _tiny_run_prompt

    name = "ZSVD rain removal - Wan 2.2 14B.json"
    prompt = _tiny_run_prompt(_substitute_files(host, host.comfy.to_api(json.loads(
        (PACK_DIR / "workflows" / name).read_text())), TINY[name]), TINY[name])
    lines = []
    run = asyncio.run(servers.run_remote_async(prompt, clips[:1], tmp_path / "out", [], [comfy_servers["a"].url],
                                               say=lines.append, stream=io.StringIO()))
    assert run.code == 0, lines[-1]
    ((file,),) = [r.files for r in run.results]
    assert _frames(file).shape == (5, 32, 32, 3)


def test_two_servers_restore_a_folder_like_the_in_process_run(comfy_servers, wan_prompt, clips, in_process_frames,
                                                               tmp_path):
    """Whole-clip units: the workflow's own Save Video output, fetched, matches the in-process one (up to H.264)."""
    a, b = comfy_servers["a"], comfy_servers["b"]
    lines = []
    run = asyncio.run(servers.run_remote_async(
        wan_prompt, clips, tmp_path / "out", [], [a.url, b.url], say=lines.append, stream=io.StringIO()))
    table, results = lines[-1], run.results
    print(table)
    assert run.code == 0, table
    for r in results:
        (file,) = r.files
        assert file == tmp_path / "out" / f"{pathlib.Path(r.unit.key).stem}.mp4"
        frames = _frames(file)
        assert frames.shape == (5, 32, 32, 3)
        assert long_clips.same_up_to_the_encoder(frames, in_process_frames[r.unit.key]), r.unit.key
    rows = {line.split()[0]: line.split()[1:3] for line in table.splitlines() if line.startswith("127.0.0.1:")}
    done = {url[7:]: sum(r.server == url for r in results) for url in (a.url, b.url)}
    assert rows == {name: [str(n), f"{100 * n / 3:.0f}%"] for name, n in done.items()}, table
    assert all(n >= 1 for n in done.values()), table  # a server holds at most two of the three at a time
    assert table.splitlines()[-1] == "3 ok, 0 failed", table


def test_a_server_without_the_pack_is_reported_at_start(comfy_servers):
    a, bare = comfy_servers["a"], comfy_servers["bare"]
    checks = asyncio.run(Fleet([a.url, bare.url]).check())
    assert [c.ok for c in checks] == [True, False]
    assert checks[0].line() == f"server {a.url}: ok (ComfyUI 0.3.64, cpu)"
    assert checks[1].line() == (f"server {bare.url}: NOT USED: does not have the ZSVR pack (no ZSVR_LoadVideo in "
                                "/object_info): install comfyui-zsvr into its custom_nodes folder and restart it")


def _post_prompt(url: str, prompt: dict) -> tuple[int, dict]:
    import urllib.error
    import urllib.request

    request = urllib.request.Request(url + "/prompt", data=json.dumps({"prompt": prompt}).encode(),
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=30) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_hostile_video_names_through_post_prompt_are_refused_and_the_server_keeps_serving(comfy_servers, tmp_path):
    """A real server's ``POST /prompt`` with ``video`` an absolute path, a '..' escape, a NUL byte or a link in input/
    leading out: 400 with node_errors naming ``video`` (nothing runs); the server still answers, and a clip in a
    subfolder of input then loads and runs."""
    import time
    import urllib.request

    from zsvr.nodes import example_media

    a = comfy_servers["a"]
    input_dir = a.base / "input"
    clip = pathlib.Path(example_media.EXAMPLE_DIR) / example_media.EXAMPLE_VIDEO
    outside = tmp_path / "secret.mp4"
    shutil.copyfile(clip, outside)
    sub = input_dir / "zsvr_confined"
    sub.mkdir()
    shutil.copyfile(clip, sub / "ok.mp4")
    (sub / "leak.mp4").symlink_to(outside)

    def prompt(video: str) -> dict:
        return {"1": {"class_type": "ZSVR_LoadVideo", "inputs": {
            "video": video, "start_frame": 0, "frame_cap": 2, "every_nth": 1, "width": 64, "height": 64, "fit": "crop",
            "frame_rule": "any", "size_multiple": 8, "best_effort": False, "pad_frames": False}},
            "2": {"class_type": "PreviewImage", "inputs": {"images": ["1", 0]}}}

    hostile = {str(outside): "is an absolute path", os.path.relpath(outside, input_dir): "steps out of its folder",
               "zsvr_confined/ok.mp4\0": "holds a NUL byte",
               "zsvr_confined/leak.mp4": "leads out of ComfyUI's input, output and temp folders"}
    for video, says in hostile.items():
        status, answer = _post_prompt(a.url, prompt(video))
        assert status == 400, (video, answer)
        (error,) = answer["node_errors"]["1"]["errors"]
        assert error["extra_info"]["input_name"] == "video" and "ZSVR input 'video'" in error["details"], error
        assert says in error["details"], (video, error["details"])
    with urllib.request.urlopen(a.url + "/system_stats", timeout=10) as resp:
        assert resp.status == 200
    status, answer = _post_prompt(a.url, prompt("zsvr_confined/ok.mp4"))
    assert status == 200 and answer["node_errors"] == {}, answer
    pid, entry = answer["prompt_id"], None
    end = time.monotonic() + 60
    while time.monotonic() < end and not entry:
        with urllib.request.urlopen(f"{a.url}/history/{pid}", timeout=10) as resp:
            entry = json.loads(resp.read()).get(pid)
        time.sleep(0.2)
    assert entry and entry["status"]["status_str"] == "success", entry
    assert len(entry["outputs"]["2"]["images"]) == 2  # two previews: the two frames loaded


CHUNKS = {"chunk_frames": 5, "overlap": 2}
"""11-frame clips in chunks of 5 (frame rule 4k+1) overlapping by 2: chunks at frames 0-4, 3-7, 6-10."""


@pytest.fixture(scope="module")
def chunk_clips(tmp_path_factory):
    """Two 11-frame clips with AAC sound (``tests/long_clips.py``), each a different stretch of realrain."""
    if not REALRAIN_DIR.is_dir():
        pytest.skip("shared/data/realrain not found")
    import long_clips

    folder = tmp_path_factory.mktemp("chunk_clips")
    frames = long_clips.realrain_frames(22, 48, 32)
    return [long_clips.write_clip(folder / f"rain{i}.mp4", 11, width=48, height=32, gop=4, frames=frames[11 * i:])
            for i in range(2)]


@pytest.fixture(scope="module")
def in_process_chunked(host, wan_prompt, chunk_clips, tmp_path_factory):
    """The in-process chunked run of the same workflow and chunks (chunk files kept): (folder, rows)."""
    from zsvr import run_workflow

    out = tmp_path_factory.mktemp("in_process_chunked")
    rows = run_workflow.run_batch(host.comfy, wan_prompt, chunk_clips, out, progress=False,
                                  chunks=ChunkOptions(**CHUNKS, keep_chunks=True))
    assert all(r["ok"] and r["chunks"] == 3 for r in rows), rows
    return out, rows


def test_two_servers_run_two_clips_in_three_chunks_each_bit_identically_to_in_process(
        comfy_servers, wan_prompt, chunk_clips, in_process_chunked, tmp_path):
    """6 units (2 clips x 3 chunks) over two servers, stitched here: bit-identical chunks and stitched frames, the
    same sound, and the encoded video within H.264's run-to-run noise of the in-process one."""
    import long_clips
    import numpy as np
    from zsvr.headless import stitch

    a, b = comfy_servers["a"], comfy_servers["b"]
    reference, _ = in_process_chunked
    lines = []
    run = asyncio.run(servers.run_remote_async(
        wan_prompt, chunk_clips, tmp_path / "out", [], [a.url, b.url], say=lines.append, stream=io.StringIO(),
        chunks=ChunkOptions(**CHUNKS, keep_chunks=True)))
    table = lines[-1]
    print(table)
    assert run.code == 0, table
    assert sorted(r.unit.key for r in run.results) == sorted(f"{c.name} chunk {i}/3" for c in chunk_clips
                                                             for i in (1, 2, 3))
    for clip, state in zip(chunk_clips, run.clips):
        mine = sorted((tmp_path / "out" / f"{clip.stem}.zsvr-chunks").glob("chunk_*.mkv"))
        theirs = sorted((reference / f"{clip.stem}.zsvr-chunks").glob("chunk_*.mkv"))
        # the same names (the manifest keys are the in-process ones) and, frame for frame, the same chunks
        assert [f.name for f in mine] == [f.name for f in theirs] and len(mine) == 3
        for m, t in zip(mine, theirs):
            assert np.array_equal(np.stack(list(stitch.iter_chunk(m))), np.stack(list(stitch.iter_chunk(t)))), m.name
        stitched = np.stack(list(stitch.iter_stitched(state.plan, mine)))
        assert stitched.shape == (11, 32, 32, 3)
        assert np.array_equal(stitched, np.stack(list(stitch.iter_stitched(state.plan, theirs)))), clip.name
        video, ref_video = tmp_path / "out" / f"{clip.stem}.mp4", reference / f"{clip.stem}.mp4"
        assert long_clips.same_up_to_the_encoder(long_clips.decode_frames(video), long_clips.decode_frames(ref_video))
        (sound, rate), (ref_sound, ref_rate) = long_clips.decode_audio(video), long_clips.decode_audio(ref_video)
        assert rate == ref_rate and np.array_equal(sound, ref_sound), clip.name
        record = json.loads((tmp_path / "out" / f"{clip.stem}.zsvr.json").read_text())
        assert record["output"]["frames"] == 11 and len(record["chunks"]) == 3
    # the per-server share: each server's units and percentage, computed from where the units ran
    rows = {line.split()[0]: line.split()[1:3] for line in table.splitlines() if line.startswith("127.0.0.1:")}
    done = {url[7:]: sum(r.server == url for r in run.results) for url in (a.url, b.url)}
    assert sum(done.values()) == 6 and min(done.values()) >= 1, table
    assert rows == {name: [str(n), f"{100 * n / 6:.0f}%"] for name, n in done.items()}, table
    clip_rows = [line.split()[:7] for line in table.splitlines() if line.startswith("rain")
                 and " chunk " not in line]
    assert clip_rows == [[c.name, "ok", "11", "1", "3", "3", "0"] for c in chunk_clips], table  # one shot each
    assert table.splitlines()[-2:] == ["6 ok, 0 failed", "clips: 2 ok, 0 failed"], table


def test_the_resume_manifest_is_shared_by_the_in_process_and_the_server_runs(
        comfy_servers, wan_prompt, chunk_clips, in_process_chunked, tmp_path):
    """Chunks restored in-process count on the servers (same keys): only a missing chunk is sent, then stitched."""
    import shutil

    import long_clips
    import numpy as np
    from zsvr.headless import stitch

    a = comfy_servers["a"]
    reference, _ = in_process_chunked
    clip = chunk_clips[1]
    out = tmp_path / "out"
    out.mkdir()
    for path in reference.glob(f"{clip.stem}*"):
        (shutil.copytree if path.is_dir() else shutil.copyfile)(path, out / path.name)
    expected = long_clips.decode_frames(out / f"{clip.stem}.mp4")
    (out / f"{clip.stem}.mp4").unlink()
    # the manifest written in-process is read by the server run as it is
    chunk_files = sorted((out / f"{clip.stem}.zsvr-chunks").glob("chunk_*.mkv"))
    assert len(chunk_files) == 3
    chunk_files[1].unlink()  # the middle chunk is lost: it alone must run again
    lines = []
    run = asyncio.run(servers.run_remote_async(
        wan_prompt, [clip], out, [], [a.url], say=lines.append, stream=io.StringIO(),
        chunks=ChunkOptions(**CHUNKS, keep_chunks=True)))
    assert run.code == 0, lines[-1]
    assert [r.unit.key for r in run.results] == [f"{clip.name} chunk 2/3"]
    (again,) = run.results[0].files  # fetched under the in-process name, with the in-process frames
    assert again == chunk_files[1] and np.array_equal(np.stack(list(stitch.iter_chunk(again))), np.stack(
        list(stitch.iter_chunk(reference / f"{clip.stem}.zsvr-chunks" / again.name))))
    assert long_clips.same_up_to_the_encoder(long_clips.decode_frames(out / f"{clip.stem}.mp4"), expected)
    assert [line.split()[:7] for line in lines[-1].splitlines()
            if line.startswith(clip.name + " ") and " chunk " not in line] == [
        [clip.name, "ok", "11", "1", "3", "1", "2"]]
    # and once the output is there, a second run sends nothing at all
    lines.clear()
    run = asyncio.run(servers.run_remote_async(
        wan_prompt, [clip], out, [], [a.url], say=lines.append, stream=io.StringIO(), chunks=ChunkOptions(**CHUNKS)))
    assert run.code == 0 and run.results == [] and run.clips[0].reused_output, lines[-1]


def test_a_server_killed_while_it_holds_a_unit_leaves_the_run_complete(comfy_servers, wan_prompt, tmp_path):
    """Runs last: server b is killed (SIGKILL to its process group) at its first progress event.

    Clips the servers have not seen yet: a clip run before comes back from ComfyUI's cache without progress.
    """
    import shutil

    a, b = comfy_servers["a"], comfy_servers["b"]
    fresh = []
    for name in ("307.mp4", "367.mp4", "437.mp4"):
        shutil.copyfile(REALRAIN_DIR / name, tmp_path / name)
        fresh.append(tmp_path / name)
    killed = []

    def kill_b(event, info):
        if event == "progress" and info["server"] == b.url and not killed:
            killed.append(info["unit"].key)
            b.kill()

    lines = []
    run = asyncio.run(servers.run_remote_async(
        wan_prompt, fresh, tmp_path / "out", [], [a.url, b.url], say=lines.append, stream=io.StringIO(),
        listener=kill_b))
    table, results = lines[-1], run.results
    print(table)
    assert killed and run.code == 0, table
    (victim,) = [r for r in results if r.unit.key == killed[0]]
    assert [(x.server, x.outcome) for x in victim.attempts] == [(b.url, "server fault"), (a.url, "ok")]
    assert "websocket was dropped" in victim.attempts[0].reason or "refused" in victim.attempts[0].reason
    assert all(r.ok and r.server == a.url for r in results if r.rerun_after)
    for r in results:  # every output is there, whole
        (file,) = r.files
        assert file == tmp_path / "out" / f"{pathlib.Path(r.unit.key).stem}.mp4" and _frames(file).shape == (5, 32, 32, 3)
    rerun = sum(1 for r in results if r.rerun_after)
    assert table.splitlines()[-1] == (f"3 ok, 0 failed; {rerun} unit{'s' if rerun > 1 else ''} re-run on another "
                                      "server after a server fault"), table
    assert f"re-run after: {b.url[7:]}: " in table
