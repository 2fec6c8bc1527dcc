#!/usr/bin/env python
"""Scale-out of ``run_workflow.py --servers`` on this machine: units per minute with one and with two ComfyUI servers.

What it measures (issue 15), with the runner's own client (``headless/servers.py``)
and real ComfyUI servers started here, each on 127.0.0.1 and pinned to its own
CPU core (``taskset -c``, one torch thread each: ``OMP_NUM_THREADS=1``):

* **Units per minute** with one server (core 0) and with two (cores 0 and 1),
  over the same ``--units`` units: whole clips of the shipped Wan workflow with
  the tests' tiny-model substitution (5 frames at 32x32), each clip a
  different stretch of the realrain clips (so no unit is answered from
  ComfyUI's cache). Every server first runs one warm-up unit of its own (model
  loading), which is not counted. The **ratio** two/one says how much of the
  second core the runner turns into throughput (2.0 would be perfect).
* **The runner's overhead per unit** against the unit's compute, both from the
  runner's records of each successful attempt: upload (first use of a clip on
  a server) + queue (``POST /prompt``) + fetch (``/history`` + ``/view``),
  seconds, against compute (``execution_start`` to the end, on the server).
  Each server holds two of the runner's units at a time (one running, one
  queued), so upload and queue of the next unit overlap the running one;
  ``servers_busy`` (the units' compute over servers x wall time) says how
  much of the run the servers were computing.

On this shared 2-core CPU the other processes on the machine take their share
of both cores, so the figures are this machine's, at the load average
recorded in the JSON; they are not GPU figures. Servers are stopped (their
process groups) before the script exits, also on an error.

Usage (from the pack's folder, with a ComfyUI checkout)::

    COMFYUI_PATH=../ComfyUI python bench/bench_scale_out.py            # 8 units per configuration
    COMFYUI_PATH=../ComfyUI python bench/bench_scale_out.py --small    # 4 units (checks the script works)

Prints a table and writes ``bench/results/scale_out_cpu[_small].json``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import pathlib
import platform
import runpy
import shutil
import statistics
import sys
import tempfile
import time

BENCH_DIR = pathlib.Path(__file__).resolve().parent
PACK_DIR = BENCH_DIR.parent
TESTS_DIR = PACK_DIR / "tests"
RESULTS = BENCH_DIR / "results"
WAN = "ZSVD rain removal - Wan 2.1.json"

runpy.run_path(str(PACK_DIR / "pack_import.py"))["import_pack"]()  # the pack as `zsvr`, its folder off sys.path
if str(TESTS_DIR) not in sys.path:
    sys.path.insert(0, str(TESTS_DIR))  # the tests' helpers (host_harness, long_clips, ...) import one another by name


def pinned_server(comfy_dir: pathlib.Path, base: pathlib.Path, models: pathlib.Path, core: int):
    """The tests' ComfyUI server (``tests/test_servers.py``'s ``ComfyServer``: ``python main.py --cpu`` on
    127.0.0.1 in its own process group, with the pack and the tests' RandomConditioning as a stand-in pack) pinned
    to CPU core ``core`` (``taskset -c``) with one torch thread (``OMP_NUM_THREADS=1``, ``MKL_NUM_THREADS=1``)."""
    from test_servers import ComfyServer

    class PinnedServer(ComfyServer):
        def _launch(self) -> None:
            if self.cmd[0] != "taskset":  # the first launch; a restart keeps the pinned command
                self.cmd = ["taskset", "-c", str(core), "env", "OMP_NUM_THREADS=1", "MKL_NUM_THREADS=1", *self.cmd]
            super()._launch()

    server = PinnedServer(comfy_dir, base, models, with_pack=True)
    return server


def tiny_models(comfy_dir: pathlib.Path, target: pathlib.Path) -> pathlib.Path:
    """The tests' tiny models (from their per-user cache, written once if missing) hard-linked into ``target``."""
    if str(comfy_dir) not in sys.path:
        sys.path.insert(0, str(comfy_dir))
    import comfy.cli_args

    comfy.cli_args.args.cpu = True  # before anything imports comfy.model_management (tiny_models may)
    import host_harness

    host_harness._tiny_models(target)
    (target / "text_encoders").mkdir(exist_ok=True)
    return target


def wan_prompt(registry, folder: pathlib.Path) -> dict:
    """The shipped Wan workflow with the tests' tiny substitution, converted with a server's registry."""
    import types

    from test_host_workflows import TINY, _substitute_files, _tiny_run_prompt

    from zsvr.headless import fleet_preflight

    files = types.SimpleNamespace(models_dir=folder, models={
        "wan": folder / "diffusion_models" / "tiny_wan21_t2v.safetensors",
        "wan_vae": folder / "vae" / "rand_wan21_vae.safetensors"})
    api = fleet_preflight.to_api(json.loads((PACK_DIR / "workflows" / WAN).read_text()), registry)
    return _tiny_run_prompt(_substitute_files(files, api, TINY[WAN]), TINY[WAN])


def make_clips(folder: pathlib.Path, count: int) -> list[pathlib.Path]:
    """``count`` 5-frame clips, each a different stretch of the realrain frames (294 of them: up to 58 clips)."""
    import long_clips

    folder.mkdir(parents=True, exist_ok=True)
    frames = long_clips.realrain_frames(5 * count, 48, 32)
    return [long_clips.write_clip(folder / f"u{i:02d}.mp4", 5, width=48, height=32, gop=5, audio=None,
                                  frames=frames[5 * i:]) for i in range(count)]


async def run_units(urls: list[str], prompt: dict, clips: list, out: pathlib.Path) -> tuple[float, list]:
    from zsvr.headless import fleet, fleet_units

    servers = fleet.Fleet(urls)
    await servers.check()
    units = fleet_units.clip_units(prompt, clips, out)
    start = time.perf_counter()
    results = await servers.run(units)
    wall = time.perf_counter() - start
    failed = [r for r in results if not r.ok]
    if failed:
        raise RuntimeError(f"{len(failed)} units failed: {failed[0].error}")
    return wall, results


def measure(urls, prompt, clips, warm, out: pathlib.Path) -> dict:
    for url, clip in zip(urls, warm):  # model loading on each server, not counted
        asyncio.run(run_units([url], prompt, [clip], out / "warm"))
    wall, results = asyncio.run(run_units(urls, prompt, clips, out / "run"))
    attempts = [r.final for r in results]
    compute = [a.compute_s for a in attempts]
    overhead = [a.upload_s + a.queue_s + a.fetch_s for a in attempts]
    share = {u: sum(r.server == u for r in results) for u in urls}
    return {
        "servers": len(urls),
        "units": len(results),
        "wall_s": round(wall, 2),
        "units_per_minute": round(60 * len(results) / wall, 2),
        "units_per_server": list(share.values()),
        "compute_s_mean": round(statistics.mean(compute), 3),
        "overhead_s_mean": round(statistics.mean(overhead), 4),
        "upload_s_mean": round(statistics.mean(a.upload_s for a in attempts), 4),
        "queue_s_mean": round(statistics.mean(a.queue_s for a in attempts), 4),
        "fetch_s_mean": round(statistics.mean(a.fetch_s for a in attempts), 4),
        "overhead_over_compute": round(statistics.mean(overhead) / statistics.mean(compute), 4),
        "servers_busy": round(sum(compute) / (len(urls) * wall), 3),
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--small", action="store_true", help="4 units per configuration (checks the script works)")
    parser.add_argument("--units", type=int, default=None, help="units per configuration (default 8, --small 4)")
    parser.add_argument("--comfyui", type=pathlib.Path, default=None, help="ComfyUI folder (default: COMFYUI_PATH)")
    args = parser.parse_args(argv)
    comfy_dir = (args.comfyui or pathlib.Path(os.environ.get("COMFYUI_PATH", ""))).resolve()
    if not (comfy_dir / "main.py").is_file():
        parser.error("name a ComfyUI checkout with --comfyui or COMFYUI_PATH")
    if shutil.which("taskset") is None or (os.cpu_count() or 1) < 2:
        parser.error("needs taskset and at least two CPU cores (one per server)")
    units = args.units or (4 if args.small else 8)

    from zsvr.headless import fleet, fleet_preflight, server_client

    started: list = []
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="zsvr-scale-out-") as tmp:
        work = pathlib.Path(tmp)
        try:
            models = tiny_models(comfy_dir, work / "models")
            clips = make_clips(work / "clips", 2 * units + 2)  # 2 warm-up, then a set per configuration
            warm, first, second = clips[:2], clips[2:2 + units], clips[2 + units:]
            started = [pinned_server(comfy_dir, work / f"s{core}", models, core) for core in (0, 1)]
            for s in started:
                s.wait_ready(300.0)

            async def registry():
                async with server_client.ServerClient(started[0].url) as client:
                    return fleet_preflight.Registry(await client.object_info())

            prompt = wan_prompt(asyncio.run(registry()), models)
            one = measure([started[0].url], prompt, first, warm[:1], work / "one")
            two = measure([s.url for s in started], prompt, second, warm, work / "two")
        finally:
            for s in started:
                s.stop()
    load_after = os.getloadavg()
    result = {
        "bench": "scale_out",
        "machine": {"platform": platform.platform(), "cpu_count": os.cpu_count(), "python": platform.python_version(),
                    "load_average_before": [round(x, 2) for x in load_before],
                    "load_average_after": [round(x, 2) for x in load_after]},
        "setup": {"workflow": WAN, "frames": 5, "size": "32x32", "models": "tests' tiny random models",
                  "server_threads": 1, "depth": fleet.DEFAULT_DEPTH, "units": units},
        "one_server": one,
        "two_servers": two,
        "ratio_two_over_one": round(two["units_per_minute"] / one["units_per_minute"], 3),
    }
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"scale_out_cpu{'_small' if args.small else ''}.json"
    path.write_text(json.dumps(result, indent=1) + "\n")
    print(f"{'servers':>7} {'units':>5} {'wall s':>7} {'units/min':>9} {'compute s':>9} {'overhead s':>10} "
          f"{'overhead/compute':>16} {'busy':>5}  per server")
    for row in (one, two):
        print(f"{row['servers']:>7} {row['units']:>5} {row['wall_s']:>7.1f} {row['units_per_minute']:>9.2f} "
              f"{row['compute_s_mean']:>9.2f} {row['overhead_s_mean']:>10.3f} {row['overhead_over_compute']:>16.4f}"
              f" {row['servers_busy']:>5.2f}  {row['units_per_server']}")
    print(f"ratio two/one: {result['ratio_two_over_one']:.2f}  (load average {load_before[0]:.1f} -> "
          f"{load_after[0]:.1f}); written to {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
