"""``run_workflow.py --servers``: the runner as a client of running ComfyUI servers (docs/servers.md).

Studios run one ComfyUI per GPU or per machine; this module hands them the
runner's units of work through ComfyUI's own prompt queue API
(``headless/server_client.py``). It adds no server and no scheduler framework:
each server's own queue does the running, and this module only decides which
server gets the next unit.

**Units.** A :class:`Unit` is one API-format prompt, the local files it needs
uploaded (:class:`Upload`: which node inputs receive the uploaded name), the
folder its outputs go to, and an optional ``collect`` callback that receives
the fetched files (a chunked run stitches there). A whole clip is one unit
(:func:`clip_units`); a chunk of a clip under ``--chunk-frames`` is one unit
too, built the same way with the loader's ``start_frame``/``frame_cap`` set.
For one attempt on one server:

1. each upload is sent once per server (``POST /upload/image`` into
   ``input/zsvr_runner/``, named ``<stem>.<sha256[:12]><suffix>`` so that
   uploading the same clip again is a no-op on the server);
2. the prompt is queued (``POST /prompt``, a prompt id chosen here, the
   runner's client id for that server), with every ``filename_prefix`` moved
   under ``zsvr_runner/<attempt>/`` in the server's output folder, so attempts
   never share files;
3. its events arrive on the server's websocket (one per server, opened before
   anything is queued): ``execution_start``, ``executing``, ``progress``, and
   ``executing`` with node None once the history is written;
4. its outputs (every ``type: output`` file in ``/history/<id>``) are fetched
   through ``/view`` into ``Unit.output_dir``, under the subfolder the
   workflow's prefix names (``<clip>/<clip>_00001_.mp4``), on a free name if
   one exists already. A whole clip's unit fetches into a passing folder of
   ``--output`` and its ``collect`` moves the files to their final names and
   records the clip (``headless/whole_clips.py``: ``<output>/<clip>.mp4`` and
   ``<clip>.zsvr.json``, as in-process runs write); a clip recorded as done is
   not sent (``--force`` sends it).

**Pull scheduling.** Each server runs ``depth`` workers (default 2): a worker
takes the next unit, runs it to the end and takes another, so a server holds at
most ``depth`` of the runner's prompts in its queue: one running, one waiting,
so the GPU does not idle while the runner uploads and fetches. A fast GPU
simply comes back for work more often than a slow one, and the tail of the run
is at most one unit per server.

**Faults.** A server that refuses connections, drops its websocket, answers
5xx, or runs one unit past ``unit_timeout`` (counted from that unit's
``execution_start``) is taken out: its in-flight units go back to the front of
the queue for the other servers, what it still holds of ours is deleted or
interrupted (best effort), and it is probed with backoff; it is back once it
answers and nothing of ours is still running there. An execution error caused
by the server (out of memory, a CUDA error; :func:`classify_error`) or an
interruption nobody here asked for re-queues the unit elsewhere without taking
the server out. A unit is tried at most ``max_attempts`` times (3). An error
caused by the input is reported once and not retried: a prompt refused by
``/prompt``'s validation, a ``ZSVR input`` error, and any other node error
(the same workflow would fail the same way anywhere). When every server has
been out for ``ALL_DOWN_GIVE_UP_S``, the units left fail with each server's
reason.

**Cancelling.** Cancelling :meth:`Fleet.run` (Ctrl-C under ``asyncio.run``)
deletes the runner's queued prompts from each server (``POST /queue
{"delete"}``), then interrupts its running ones (``POST /interrupt
{"prompt_id"}``), and re-raises.

**Checks at start** (:meth:`Fleet.check`): each server must answer, have the
pack (``ZSVR_LoadVideo`` in ``/object_info``), every node type the workflow
uses, and every model file its combos name; a server that does not is
reported with the reason and left out. The UI-to-API conversion and ``--set``
checks use the registry of the first server that passed (:class:`Registry`),
so ``--servers`` needs no ComfyUI in this process.

Only the URLs given are contacted; a token comes from ``$ZSVR_SERVER_TOKEN``.

**Where each part lives.** This module is the command-line orchestration only (:func:`run_remote`: check the
servers, prepare the units, run them, show the table); the unit model and error classification are
``headless/fleet_units.py``, the checks' verdicts (:class:`Registry`, :func:`missing_on`, :func:`to_api`)
``headless/fleet_preflight.py``, the scheduler and its HTTP calls ``headless/fleet.py``, chunked units
``headless/remote_chunks.py`` and the display ``headless/fleet_console.py``; import each name from its module.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import pathlib
from typing import Callable, Optional

from . import console, fleet_console, overrides, server_client
from .fleet import DEFAULT_DEPTH, Fleet
from .fleet_preflight import to_api
from .fleet_units import clip_units
from .workflow_format import WorkflowError


def token_from_env() -> Optional[str]:
    """The bearer token from ``$ZSVR_SERVER_TOKEN`` (None when unset or empty)."""
    return os.environ.get(server_client.TOKEN_ENV) or None


@dataclasses.dataclass
class RemoteRun:
    """What :func:`run_remote_async` did: exit status, unit results, the clips of a chunked run, the fleet."""

    code: int
    results: list
    fleet: Fleet
    clips: list = dataclasses.field(default_factory=list)
    """``clip_job.ClipJob`` per clip of a chunked run (empty otherwise)."""


def whole_clip_units(prompt: dict, videos: list, output_dir: pathlib.Path, passing: pathlib.Path,
                     force: bool = False) -> tuple[list, list]:
    """The units of a whole-clip ``--servers`` run, and a ``(video, WholeClip or None, error)`` per clip.

    Each unit's outputs are fetched into ``passing`` and its ``collect`` puts them under their final names and
    records the clip; clips recorded as done (unless ``force``) and clips refused get no unit."""
    from ..nodes.errors import InputError
    from . import manifest, whole_clips

    manifest.check_stems(videos)
    units, clips = [], []
    for video in map(pathlib.Path, videos):
        try:
            clip = whole_clips.open_clip(prompt, video, output_dir, force)
        except (InputError, OSError) as exc:
            clips.append((video, None, str(exc)))
            continue
        clips.append((video, clip, None))
        if clip.done is None:
            (unit,) = clip_units(prompt, [video], passing)

            def collect(result, clip=clip):
                result.files = clip.place(result.files)

            unit.collect = collect
            units.append(unit)
    return units, clips


def _whole_clip_lines(clips: list) -> list[str]:
    """Table lines for the clips a whole-clip run did not send: skipped (done) or refused."""
    lines = []
    for video, clip, error in clips:
        if error is not None:
            lines.append(f"{video.name:<24} FAILED          {error}")
        elif clip.done is not None:
            lines.append(f"{video.name:<24} skipped (done)  {', '.join(map(str, clip.done))}")
    return lines


async def run_remote_async(workflow: dict, videos: list, output_dir: pathlib.Path, sets, urls: list[str],
                           unit_timeout: Optional[float] = None, say: Callable[[str], None] = print,
                           depth: int = DEFAULT_DEPTH, chunks=None, listener=None, stream=None,
                           table: Callable[[str], None] = None, force: bool = False) -> RemoteRun:
    """Check the servers, prepare the units, run them, show the table (see the module docstring).

    ``say`` gets the progress lines, ``table`` the summary table (default: ``say``); ``chunks`` the
    ``--chunk-frames`` options (``clip_job.ChunkOptions``) or None for whole clips;
    ``listener(event, info)`` sees every fleet event too; ``force`` redoes clips (and chunks) recorded as done.
    Exit status 0 when every clip is done, 1 when one failed, 2 when no server can run the workflow or the
    workflow, ``--set`` or chunk options are wrong.
    """
    from . import whole_clips

    fleet = Fleet(urls, token_from_env(), depth=depth, unit_timeout=unit_timeout)
    clips: list = []
    wholes: list = []
    whole_clips.sweep_stale(output_dir)
    passing = whole_clips.passing_folder(output_dir)
    try:
        checks = await fleet.check()
        for c in checks:
            say(c.line())
        usable = [c for c in checks if c.ok]
        if not usable:
            say("error: no server can run the workflow (see above)")
            return RemoteRun(2, [], fleet)
        registry = usable[0].registry
        try:
            prompt = to_api(workflow, registry)
            parsed = [s if isinstance(s, overrides.Override) else overrides.parse([s])[0] for s in sets or ()]
            for line in overrides.describe(overrides.apply(prompt, parsed, registry.input_types,
                                                           registry.display_name)):
                say(line)
            if chunks is None:
                units, wholes = await asyncio.to_thread(whole_clip_units, prompt, videos, output_dir, passing, force)
            else:
                from . import remote_chunks  # deferred: it imports torch and av (..kernels), which only chunks need

                units, clips = await asyncio.to_thread(remote_chunks.plan_units, registry, prompt, videos,
                                                       output_dir, chunks)
                by_clip = {c.video.name: c for c in clips}
                fleet.group_done = lambda group, results: remote_chunks.stitch_clip(by_clip[group], results,
                                                                                   chunks.keep_chunks)
        except (WorkflowError, overrides.OverrideError, ValueError) as exc:
            say(f"error: {exc}")
            return RemoteRun(2, [], fleet)
        uploaded = {tuple(t) for u in units for up in u.uploads for t in up.targets}
        before = {c.url for c in checks if c.ok}
        for c in fleet.check_prompt(units[0].prompt if units else prompt, uploaded):
            if c.url in before and not c.ok:
                say(c.line())
        if not any(c.ok for c in fleet.checks):
            say("error: no server can run the workflow (see above)")
            return RemoteRun(2, [], fleet, clips)
        display = fleet_console.FleetConsole(len(units), console.node_names(units[0].prompt if units else prompt,
                                                              registry.display_name), stream=stream)

        def both(event, info):
            display(event, info)
            if listener is not None:
                listener(event, info)

        fleet.listener = both
        try:
            results = await fleet.run(units) if units else []
        finally:
            display.close()
        text = fleet_console.format_summary(results, fleet)
        ok = all(r.ok for r in results)
        others = _whole_clip_lines(wholes)
        if others:
            ok = ok and all(error is None for _, _, error in wholes)
            done = sum(1 for _, clip, _ in wholes if clip is not None and clip.done is not None)
            text = "\n".join(others) + "\n\n" + text + (f"\n{done} clip{'s' if done != 1 else ''} skipped (done)"
                                                     " (--force runs them again)" if done else "")
        if chunks is not None:
            waiting = [c for c in clips if c.error is None and c.frames is None]
            for clip in waiting:  # every chunk was done before this run: only the stitching is left
                await asyncio.to_thread(remote_chunks.finish_clip, clip, chunks.keep_chunks)
            failed = sum(c.error is not None for c in clips)
            ok = failed == 0
            text = (remote_chunks.format_clips(clips) + "\n\n" + text
                    + f"\nclips: {len(clips) - failed} ok, {failed} failed")
        (table or say)(text)
        return RemoteRun(0 if ok else 1, results, fleet, clips)
    finally:
        await fleet.close()
        whole_clips.drop_passing(passing)


def run_remote(workflow: dict, videos: list, output_dir: pathlib.Path, sets, servers: str,
               unit_timeout: Optional[float] = None, say: Callable[[str], None] = print, **kwargs) -> int:
    """:func:`run_remote_async` under ``asyncio.run``; Ctrl-C, SIGTERM or SIGHUP cleans up on the servers and
    returns 130, 143 or 129 (``headless/stop_signals.py``)."""
    try:
        urls = server_client.parse_servers(servers)
    except ValueError as exc:
        say(f"error: {exc}")
        return 2
    from . import stop_signals

    stop_signals.forward_to_sigint()  # SIGTERM / SIGHUP cancel like Ctrl-C (headless/stop_signals.py)
    try:
        code = asyncio.run(run_remote_async(workflow, videos, output_dir, sets, urls, unit_timeout, say,
                                            **kwargs)).code
    except KeyboardInterrupt:
        say(f"stopped by {stop_signals.forwarded_name()}: the runner's queued prompts were deleted from the servers "
            "and the running ones interrupted")
        return stop_signals.exit_code()
    return code
