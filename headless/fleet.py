"""The fleet scheduler of a ``--servers`` run: it hands units to ComfyUI servers and gets their outputs back.

:class:`Fleet` checks the servers at start, runs ``depth`` pull workers per server (a worker takes the next
unit, runs it to the end and takes another), does every HTTP and websocket call of an attempt through
``headless/server_client.py`` (upload, queue, events, history, ``/view``), takes a faulty server out,
re-queues its units and probes it back, and on cancelling deletes and interrupts the runner's prompts on the
servers. The behaviour is described in ``headless/servers.py``'s module docstring; the units it runs are
``headless/fleet_units.py``'s and the verdicts of its checks ``headless/fleet_preflight.py``'s.
"""

from __future__ import annotations

import asyncio
import collections
import copy
import dataclasses
import pathlib
import re
import sys
import threading
import time
import uuid
from typing import Callable, Iterable, Optional

from ..kernels import confined_paths
from ..kernels.errors import ParameterError
from . import server_client
from .fleet_preflight import PACK_NODE, Registry, ServerCheck, missing_on
from .fleet_units import SAVE_PREFIX_INPUTS, Attempt, Unit, UnitResult, classify_error, error_line
from .server_client import AccessDenied, PromptRejected, ServerClient, ServerError, ServerFault

DEFAULT_DEPTH = 2
"""The runner's prompts a server holds at once (one running, one waiting)."""
MAX_ATTEMPTS = 3
"""Times a unit is tried before it fails (server faults only; an input error is never retried)."""
ALL_DOWN_GIVE_UP_S = 60.0
"""When every server has been out this long, the units left fail."""
PROBE_DELAYS_S = (0.5, 1.0, 2.0, 4.0, 8.0)
"""Waits between probes of a server that is out (the last repeats)."""
RUNNER_FOLDER = "zsvr_runner"
"""Subfolder of each server's input and output folders that the runner writes to."""


class _Job:
    """One attempt in flight on a server."""

    def __init__(self, task: "_Task", attempt: Attempt, token: str):
        self.task = task
        self.attempt = attempt
        self.token = token
        self.started: Optional[float] = None
        self.end: asyncio.Future = asyncio.get_running_loop().create_future()
        self.node: Optional[str] = None
        self.server_name = ""
        self.abandoned = False

    def finish(self, kind: str, data: dict) -> None:
        if not self.end.done():
            self.end.set_result((kind, data))


@dataclasses.dataclass
class _Task:
    unit: Unit
    result: UnitResult
    faulted_on: set = dataclasses.field(default_factory=set)
    finished: bool = False


class _Server:
    def __init__(self, url: str, token: Optional[str]):
        self.client = ServerClient(url, token)
        self.url = self.client.url
        self.name = self.client.name
        self.client_id = "zsvr-runner-" + uuid.uuid4().hex
        self.up = False
        self.reason = "not checked"
        self.down_since: Optional[float] = time.monotonic()
        self.ready: Optional[asyncio.Event] = None  # set while the websocket is open
        self.jobs: dict[str, _Job] = {}
        self.uploads: dict[str, str] = {}
        self.upload_locks: dict[str, asyncio.Lock] = {}
        self.abandoned: set[str] = set()
        self.excluded = False
        """Failed the checks at start: never used nor probed in this run."""
        self.done = 0
        self.compute_s = 0.0
        self.faults: list[str] = []


class Fleet:
    """Several ComfyUI servers running the runner's units (see ``headless/servers.py``'s module docstring).

    Args:
        urls: the servers (``parse_servers`` output; only these are contacted).
        token: bearer token for every request (from ``$ZSVR_SERVER_TOKEN``), or None.
        depth: the runner's prompts each server holds at once (1 or 2 make sense).
        unit_timeout: seconds a unit may run on a server (from its ``execution_start``); None: no limit.
        max_attempts: tries per unit for server faults.
        listener: ``listener(event, info)`` for progress (``fleet_console.FleetConsole``) and tests; events are
            ``queued``, ``started``, ``node``, ``progress``, ``done``, ``failed``, ``requeued``,
            ``server_down``, ``server_up``; ``info`` holds ``unit``, ``server`` and the event's details.
        group_done: ``group_done(group, results)`` once every unit of a group is final (in a worker thread).
    """

    def __init__(self, urls: list[str], token: Optional[str] = None, depth: int = DEFAULT_DEPTH,
                 unit_timeout: Optional[float] = None, max_attempts: int = MAX_ATTEMPTS,
                 listener: Optional[Callable[[str, dict], None]] = None,
                 group_done: Optional[Callable[[str, list], None]] = None):
        if depth < 1:
            raise ValueError(f"depth {depth}: a server must hold at least one unit")
        if unit_timeout is not None and unit_timeout <= 0:
            raise ValueError(f"--unit-timeout {unit_timeout}: give seconds above 0")
        self.servers = [_Server(u, token) for u in urls]
        self.depth = depth
        self.unit_timeout = unit_timeout
        self.max_attempts = max_attempts
        self.listener = listener
        self.group_done = group_done
        self.checks: list[ServerCheck] = []
        self._pending: collections.deque = collections.deque()
        self._open = 0
        self._changed: Optional[asyncio.Event] = None
        self._lock = threading.Lock()
        self._reserved: set[str] = set()

    # -- small helpers --------------------------------------------------------------
    def _emit(self, event: str, **info) -> None:
        if self.listener is not None:
            try:
                self.listener(event, info)
            except Exception as exc:  # the display must never stop the run
                print(f"warning: progress display failed on {event}: {exc}", file=sys.stderr)

    def _notify(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    async def _wait_change(self, timeout: float = 1.0) -> None:
        event = self._changed
        try:
            await asyncio.wait_for(event.wait(), timeout)
        except asyncio.TimeoutError:
            pass

    async def close(self) -> None:
        for s in self.servers:
            await s.client.close()

    # -- checks ---------------------------------------------------------------------
    async def check(self) -> list[ServerCheck]:
        """Ask every server whether it answers and has the pack; the ones that do are used (``ServerCheck.ok``)."""

        async def one(s: _Server) -> ServerCheck:
            try:
                stats = await s.client.system_stats()
                info = await s.client.object_info()
            except AccessDenied as exc:
                return ServerCheck(s.url, False, str(exc))
            except ServerError as exc:
                return ServerCheck(s.url, False, f"does not answer ({exc})")
            system = (stats or {}).get("system") or {}
            devices = (stats or {}).get("devices") or [{}]
            check = ServerCheck(s.url, True, version=str(system.get("comfyui_version", "")),
                                device=str(devices[0].get("name", "")), registry=Registry(info))
            if PACK_NODE not in check.registry:
                check.ok = False
                check.problem = ("does not have the ZSVR pack (no ZSVR_LoadVideo in /object_info): install "
                                 "comfyui-zsvr into its custom_nodes folder and restart it")
            return check

        self.checks = list(await asyncio.gather(*(one(s) for s in self.servers)))
        for s, c in zip(self.servers, self.checks):
            s.up, s.reason, s.excluded = c.ok, c.problem, not c.ok
        return self.checks

    def check_prompt(self, prompt: dict, uploaded: Iterable[tuple] = ()) -> list[ServerCheck]:
        """Take out every checked server that lacks a node type or model file ``prompt`` needs; returns the checks."""
        uploaded = list(uploaded)
        for s, c in zip(self.servers, self.checks):
            if not c.ok:
                continue
            problems = missing_on(c.registry, prompt, uploaded)
            if problems:
                c.ok, c.problem = False, "lacks what the workflow needs: " + "; ".join(problems)
                s.up, s.reason, s.excluded = False, c.problem, True
        return self.checks

    # -- running --------------------------------------------------------------------
    async def run(self, units: list[Unit]) -> list[UnitResult]:
        """Run every unit on the servers that passed the checks; returns one result per unit, in order.

        Servers not checked yet are checked first. Cancelling cleans up on the servers and re-raises.
        """
        if not self.checks:
            await self.check()
        keys = [u.key for u in units]
        if len(set(keys)) != len(keys):
            raise ValueError("unit keys must be unique in a run")
        self._changed = asyncio.Event()
        tasks = [_Task(u, UnitResult(u)) for u in units]
        self._pending = collections.deque(tasks)
        self._open = len(tasks)
        groups: dict[str, list[_Task]] = collections.defaultdict(list)
        for t in tasks:
            groups[t.unit.group].append(t)
        self._groups = groups
        self._group_jobs: list[asyncio.Task] = []
        now = time.monotonic()
        for s in self.servers:
            s.ready = asyncio.Event()
            s.down_since = None if s.up else now
        background = []
        for s in self.servers:
            background.append(asyncio.create_task(self._listen(s)))
            for _ in range(self.depth):
                background.append(asyncio.create_task(self._worker(s)))
        try:
            while self._open > 0:
                self._give_up_if_all_down()
                await self._wait_change(0.5)
            if self._group_jobs:
                await asyncio.gather(*self._group_jobs)
        except asyncio.CancelledError:
            await asyncio.shield(self._cancel_on_servers())
            raise
        finally:
            for b in background:
                b.cancel()
            await asyncio.gather(*background, return_exceptions=True)
            await self.close()
        return [t.result for t in tasks]

    def _give_up_if_all_down(self) -> None:
        if any(s.up for s in self.servers) or not self._pending:
            return
        since = max((s.down_since or 0.0) for s in self.servers)
        if time.monotonic() - since < ALL_DOWN_GIVE_UP_S:
            return
        reasons = "; ".join(f"{s.url}: {s.reason}" for s in self.servers)
        while self._pending:
            task = self._pending.popleft()
            self._final(task, False, f"no server left to run it ({reasons})")

    def _take(self, s: _Server) -> Optional[_Task]:
        """The next unit for ``s``: the first one that has not failed on ``s``, unless every live server failed it."""
        up = {x.url for x in self.servers if x.up}
        for task in self._pending:
            if s.url not in task.faulted_on or up <= task.faulted_on:
                self._pending.remove(task)
                return task
        return None

    def _forget_faults(self, s: _Server) -> None:
        """A server back after it was taken out is a new process (restarted, or reconnected): the units that failed
        on it before may go to it again, rather than wait for a busy server while it idles."""
        for task in self._pending:
            task.faulted_on.discard(s.url)

    async def _worker(self, s: _Server) -> None:
        while self._open > 0:
            if not s.up or not s.ready.is_set():
                await self._wait_change()
                continue
            task = self._take(s)
            if task is None:
                await self._wait_change()
                continue
            await self._attempt(s, task)

    def _final(self, task: _Task, ok: bool, error: Optional[str] = None, input_error: bool = False) -> None:
        r = task.result
        r.ok, r.error, r.input_error = ok, error, input_error
        task.finished = True
        self._open -= 1
        self._emit("done" if ok else "failed", unit=task.unit, server=r.server, result=r)
        group = self._groups[task.unit.group]
        if self.group_done is not None and all(t.finished for t in group):
            results = [t.result for t in group]
            self._group_jobs.append(asyncio.create_task(asyncio.to_thread(self.group_done, task.unit.group, results)))
        self._notify()

    # -- one attempt ----------------------------------------------------------------
    async def _upload(self, s: _Server, path: pathlib.Path) -> str:
        key = str(path.resolve())
        lock = s.upload_locks.setdefault(key, asyncio.Lock())
        async with lock:
            if key not in s.uploads:
                digest = await asyncio.to_thread(server_client.file_digest, path)
                name = f"{path.stem}.{digest[:12]}{path.suffix}"
                s.uploads[key] = await s.client.upload(path, name, RUNNER_FOLDER)
            return s.uploads[key]

    def _server_prompt(self, unit: Unit, names: dict, token: str) -> dict:
        prompt = copy.deepcopy(unit.prompt)
        for up in unit.uploads:
            for node_id, name in up.targets:
                prompt[node_id]["inputs"][name] = names[str(up.path)]
        for node in prompt.values():
            for key in SAVE_PREFIX_INPUTS:
                value = node.get("inputs", {}).get(key)
                if isinstance(value, str):
                    node["inputs"][key] = f"{RUNNER_FOLDER}/{token}/{value}"
        return prompt

    def _user_text(self, unit: Unit, names: dict, text: str) -> str:
        """Server-side upload names in a message replaced by the user's own paths."""
        for local, remote in names.items():
            for form in (remote, remote.rsplit("/", 1)[-1]):
                text = text.replace(form, local)
        return text

    async def _attempt(self, s: _Server, task: _Task) -> None:
        unit = task.unit
        prompt_id = str(uuid.uuid4())
        attempt = Attempt(s.url, prompt_id)
        task.result.attempts.append(attempt)
        job = _Job(task, attempt, prompt_id.split("-")[0])
        names: dict[str, str] = {}
        try:
            t0 = time.monotonic()
            for up in unit.uploads:
                names[str(up.path)] = await self._upload(s, pathlib.Path(up.path))
            attempt.upload_s = time.monotonic() - t0
            prompt = self._server_prompt(unit, names, job.token)
            if not s.up:
                raise ServerFault(s.url, s.reason)
            s.jobs[prompt_id] = job
            t1 = time.monotonic()
            await s.client.queue_prompt(prompt, prompt_id, s.client_id)
            attempt.queue_s = time.monotonic() - t1
            if not s.up and not job.abandoned:  # it went out while the prompt was being queued
                job.abandoned = True
                s.abandoned.add(prompt_id)
                asyncio.create_task(self._abandon(s, [job]))
                job.finish("down", {"reason": s.reason})
            self._emit("queued", unit=unit, server=s.url)
            kind, data = await self._wait_job(s, job)
            if kind == "done":
                attempt.compute_s = time.monotonic() - (job.started or t1)
                t2 = time.monotonic()
                files, outputs = await self._fetch(s, job)
                attempt.fetch_s = time.monotonic() - t2
                task.result.files, task.result.outputs, task.result.server = files, outputs, s.url
                if unit.collect is not None:
                    try:
                        await asyncio.to_thread(unit.collect, task.result)
                    except Exception as exc:  # the caller's collecting failed: not the server's doing
                        attempt.outcome, attempt.reason = "input error", f"collecting the outputs: {exc}"
                        self._final(task, False, attempt.reason, input_error=True)
                        return
                attempt.outcome = "ok"
                s.done += 1
                s.compute_s += attempt.compute_s
                self._final(task, True)
            elif kind == "error" and classify_error(data) == "input":
                attempt.outcome, attempt.reason = "input error", self._user_text(unit, names, error_line(data))
                task.result.server = s.url
                self._final(task, False, attempt.reason, input_error=True)
            elif kind == "error":
                self._requeue(s, task, attempt, "server fault", error_line(data))
            elif kind == "interrupted":
                self._requeue(s, task, attempt, "server fault", "the prompt was interrupted on the server")
            elif kind == "timeout":
                self._requeue(s, task, attempt, "timeout", f"ran longer than --unit-timeout {self.unit_timeout:g} s")
                self._take_out(s, f"a unit ran longer than --unit-timeout {self.unit_timeout:g} s")
            else:  # the server went out while the job was in flight
                self._requeue(s, task, attempt, "server fault", data.get("reason", "it went out"))
        except PromptRejected as exc:
            attempt.outcome = "input error"
            attempt.reason = self._user_text(unit, names, f"the workflow does not validate: {exc}")
            task.result.server = s.url
            self._final(task, False, attempt.reason, input_error=True)
        except ServerFault as exc:
            self._requeue(s, task, attempt, "server fault", str(exc))
            self._take_out(s, str(exc))
        except AccessDenied as exc:
            self._requeue(s, task, attempt, "server fault", str(exc))
            self._take_out(s, str(exc))
        except ServerError as exc:  # a 4xx other than 401/403/400-validation, e.g. 413 on the upload
            attempt.outcome, attempt.reason = "input error", f"{s.name}: {exc}"
            self._final(task, False, attempt.reason, input_error=True)
        except asyncio.CancelledError:
            attempt.outcome = "cancelled"
            raise
        finally:
            s.jobs.pop(prompt_id, None)

    async def _wait_job(self, s: _Server, job: _Job) -> tuple[str, dict]:
        while True:
            wait = 1.0
            if self.unit_timeout is not None and job.started is not None:
                left = job.started + self.unit_timeout - time.monotonic()
                if left <= 0:
                    return "timeout", {}
                wait = min(wait, left)
            try:
                return await asyncio.wait_for(asyncio.shield(job.end), wait)
            except asyncio.TimeoutError:
                continue

    def _requeue(self, s: _Server, task: _Task, attempt: Attempt, outcome: str, why: str) -> None:
        """Put a unit that failed because of server ``s`` back at the front of the queue (or fail it at the limit)."""
        attempt.outcome, attempt.reason = outcome, f"{s.name}: {why}"
        task.faulted_on.add(s.url)
        s.faults.append(why)
        tries = sum(1 for a in task.result.attempts if a.outcome in ("server fault", "timeout"))
        if tries >= self.max_attempts:
            reasons = "; ".join(a.reason for a in task.result.rerun_after)
            self._final(task, False, f"failed {tries} times on servers: {reasons}")
            return
        self._pending.appendleft(task)
        self._emit("requeued", unit=task.unit, server=s.url, reason=attempt.reason)
        self._notify()

    async def _fetch(self, s: _Server, job: _Job) -> tuple[list, dict]:
        entry = None
        for delay in (0.0, 0.1, 0.3, 1.0, 2.0):  # the history is written before the last event; be patient anyway
            await asyncio.sleep(delay)
            entry = await s.client.history(job.attempt.prompt_id)
            if entry is not None:
                break
        if entry is None:
            raise ServerFault(s.url, "the finished prompt has no history on the server")
        outputs = entry.get("outputs") if isinstance(entry, dict) else None
        if not isinstance(outputs, dict):
            raise ServerFault(s.url, "the finished prompt's history has no outputs table")
        prefix = f"{RUNNER_FOLDER}/{job.token}"
        wanted, listed = [], 0  # every name is checked before anything is downloaded
        for node_id in sorted(outputs, key=_node_order):
            node_outputs = outputs[node_id]
            if not isinstance(node_outputs, dict):
                raise ServerFault(s.url, f"its history's outputs of node {node_id} are a JSON "
                                         f"{type(node_outputs).__name__}, not a table")
            for key, items in node_outputs.items():
                if isinstance(items, dict) and "filename" in items:
                    raise ServerFault(s.url, f"its history's '{key}' of node {node_id} is one table, not a list")
                for item in items if isinstance(items, list) else []:
                    listed += isinstance(item, dict) and "filename" in item
                    if not (isinstance(item, dict) and "filename" in item and item.get("type", "output") == "output"):
                        continue
                    wanted.append((item, self._local_path(s, job.task.unit.output_dir, prefix, item)))
        saving = [n for n, node in job.task.unit.prompt.items()
                  if isinstance(node, dict) and "filename_prefix" in (node.get("inputs") or {})]
        if saving and not listed:  # a saving node that lists nothing at all (a temp file still counts)
            raise ServerFault(s.url, f"its history lists no output file, though node {saving[0]} saves one")
        files = []
        for item, local in wanted:
            dest = self._free_name(local)
            try:
                await s.client.download(item, dest)
            finally:
                with self._lock:
                    self._reserved.discard(str(dest))
            files.append(dest)
        return files, outputs

    @staticmethod
    def _local_path(s: "_Server", output_dir: pathlib.Path, prefix: str, item: dict) -> pathlib.Path:
        """Where a file the server reports goes: ``output_dir / <subfolder less the run's prefix> / <filename>``.

        The names come from the server's ``/history`` and are trusted no further than the output folder: a
        filename with a separator, a subfolder that is absolute or steps out with ``..``, a NUL byte, or a path
        that leads out through a link is the server's fault (the unit is run elsewhere); nothing is written.
        """
        try:
            filename = confined_paths.check_relative_name(item.get("filename"), "filename", folders=False)
            sub = confined_paths.check_relative_name(item.get("subfolder") or ".", "subfolder")
        except ParameterError as exc:
            raise ServerFault(s.url, f"its history names an unsafe output file ({exc})") from None
        sub = "" if sub == "." else sub
        local_sub = sub[len(prefix):].lstrip("/") if sub == prefix or sub.startswith(prefix + "/") else sub
        dest = output_dir / local_sub / filename
        if not confined_paths.inside(dest, [output_dir]):
            raise ServerFault(s.url, f"its history names an output file that leads out of {output_dir} "
                              f"({local_sub}/{filename}) through a link")
        return dest

    def _free_name(self, dest: pathlib.Path) -> pathlib.Path:
        """``dest``, or the next free name like ComfyUI's counter (``x_00002_.mp4``) when it is taken."""
        with self._lock:
            candidate, n = dest, 1
            while candidate.exists() or str(candidate) in self._reserved:
                n += 1
                m = re.fullmatch(r"(.*_)(\d{5})(_\.[^.]+)", dest.name)
                name = (f"{m.group(1)}{int(m.group(2)) + n - 1:05d}{m.group(3)}" if m
                        else f"{dest.stem} ({n - 1}){dest.suffix}")
                candidate = dest.with_name(name)
            self._reserved.add(str(candidate))
            return candidate

    # -- servers going out and coming back ------------------------------------------
    def _take_out(self, s: _Server, reason: str) -> None:
        """Stop sending work to ``s``: its jobs end as faults, its leftovers are cleaned up, a probe brings it back."""
        if not s.up:
            return
        s.up, s.reason, s.down_since = False, reason, time.monotonic()
        s.uploads.clear()
        if s.ready is not None:
            s.ready.clear()
        jobs = list(s.jobs.values())
        for job in jobs:
            job.abandoned = True
            s.abandoned.add(job.attempt.prompt_id)
            job.finish("down", {"reason": reason})
        self._emit("server_down", server=s.url, reason=reason)
        asyncio.create_task(self._abandon(s, jobs))
        self._notify()

    async def _abandon(self, s: _Server, jobs: list) -> None:
        """Best effort: delete what ``s`` still queues of these jobs, interrupt the one it runs."""
        try:
            await asyncio.wait_for(self._stop_jobs(s, jobs), 5.0)
        except (ServerError, asyncio.TimeoutError):
            pass

    async def _stop_jobs(self, s: _Server, jobs: list) -> None:
        ids = [j.attempt.prompt_id for j in jobs]
        await s.client.delete_queued(ids)  # first, so that a waiting one cannot start once the running one stops
        for pid in ids:  # only the one running is affected (a start may not have reached us yet)
            await s.client.interrupt(pid)

    async def _listen(self, s: _Server) -> None:
        """The server's websocket: events to jobs; a dropped socket takes the server out; probes bring it back."""
        if s.excluded:
            return
        delays = iter(PROBE_DELAYS_S)
        while self._open > 0:
            if not s.up:
                await asyncio.sleep(next(delays, PROBE_DELAYS_S[-1]))
                if await self._probe(s):
                    s.up, s.down_since = True, None
                    self._forget_faults(s)
                    self._emit("server_up", server=s.url)
                continue
            delays = iter(PROBE_DELAYS_S)
            try:
                ws = await s.client.websocket(s.client_id)
            except ServerError as exc:
                self._take_out(s, f"the websocket cannot be opened ({exc})")
                continue
            s.ready.set()
            self._notify()
            try:
                async for msg in ws:
                    decoded = server_client.decode_message(msg)
                    if decoded is not None:
                        self._dispatch(s, *decoded)
            except (asyncio.TimeoutError, ConnectionError) as exc:
                reason = f"the websocket failed ({type(exc).__name__})"
            else:
                reason = "the websocket was dropped (the server stopped or the network failed)"
            finally:
                await ws.close()
            if self._open > 0:
                self._take_out(s, reason)

    async def _probe(self, s: _Server) -> bool:
        """True when ``s`` answers again and runs nothing of ours (an abandoned prompt stuck there keeps it out)."""
        try:
            await s.client.system_stats()
            running, pending = await s.client.queue_state()
        except ServerError:
            return False
        stuck = s.abandoned & set(running + pending)
        if stuck:
            try:
                await s.client.delete_queued(sorted(stuck))
                for pid in stuck & set(running):
                    await s.client.interrupt(pid)
            except ServerError:
                pass
            return False
        s.abandoned.clear()
        return True

    def _dispatch(self, s: _Server, kind: str, data: dict) -> None:
        job = s.jobs.get(str(data.get("prompt_id")))
        if job is None or job.abandoned:
            return
        unit = job.task.unit
        if kind == "execution_start":
            job.started = time.monotonic()
            self._emit("started", unit=unit, server=s.url)
        elif kind == "executing":
            node = data.get("node")
            if node is None:
                job.finish("done", data)
            else:
                job.node = str(node)
                self._emit("node", unit=unit, server=s.url, node=job.node)
        elif kind == "progress":
            self._emit("progress", unit=unit, server=s.url, node=str(data.get("node") or job.node),
                       value=int(data.get("value") or 0), total=int(data.get("max") or 1))
        elif kind == "execution_error":
            job.finish("error", data)
        elif kind == "execution_interrupted":
            job.finish("interrupted", data)

    async def _cancel_on_servers(self) -> None:
        """Delete the runner's queued prompts on every server, then interrupt its running ones."""

        async def one(s: _Server):
            jobs = list(s.jobs.values())
            for job in jobs:
                job.abandoned = True
                job.attempt.outcome = "cancelled"
            if jobs:
                try:
                    await asyncio.wait_for(self._stop_jobs(s, jobs), 5.0)
                except (ServerError, asyncio.TimeoutError):
                    pass

        await asyncio.gather(*(one(s) for s in self.servers))


def _node_order(node_id: str):
    return (0, int(node_id)) if str(node_id).isdigit() else (1, str(node_id))
