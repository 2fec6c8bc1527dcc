"""A stand-in for ComfyUI's prompt-queue API (aiohttp, 127.0.0.1), scripted per prompt, for the ``--servers`` tests.

It serves the endpoints ``headless/server_client.py`` uses, with ComfyUI's
message shapes (``server.py``, ``execution.py``, ``main.py`` of 0.3.64), and
runs its queue one prompt at a time like ComfyUI's prompt worker. What a
prompt does is decided by ``script(fake, prompt_id, prompt)``:

* ``"ok"``: every node with a ``filename_prefix`` "saves" one file whose bytes
  are computed from the uploaded clip it reads (:func:`expected_output`);
* ``("error", exception_type, message)``: an ``execution_error``;
* ``"hang"``: runs until ``POST /interrupt`` names it, then ``execution_interrupted``;
* ``"die"``: the server stops (sockets closed, connections refused), like a killed process.

* ``("outputs", table)``: succeeds with ``table`` as the history's ``outputs`` (hostile or broken answers).

Hostile answers of the endpoints themselves: ``history_answer`` (see :data:`HOSTILE_BODIES`; a JSON value is sent
as the whole ``/history`` answer) and ``view_answer`` (one of :data:`HOSTILE_BODIES`, for every ``/view``).

``gate`` (an ``asyncio.Event``) holds every execution before it starts
running nodes until the test sets it; ``ws_gate`` holds the websocket
handshake (the runner sends a server nothing before its socket is open). Everything asked of it is recorded
(``requests``, ``uploads``, ``deleted``, ``interrupted``), and so is the most
prompts of one client it held at once (``most_held``).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os

from aiohttp import WSMsgType, web

PROMPT = {
    "1": {"class_type": "ZSVR_LoadVideo", "inputs": {"video": "", "frame_cap": 5}},
    "2": {"class_type": "SaveVideo", "inputs": {"video": ["1", 0], "filename_prefix": "video/x", "format": "auto"}},
}

REGISTRY = {
    "ZSVR_LoadVideo": {"input": {"required": {
        "video": ["COMBO", {"options": [], "video_upload": True}],
        "frame_cap": ["INT", {"default": 0, "min": 0, "max": 100}]}},
        "display_name": "Load Video (ZSVR)", "output_node": False},
    "SaveVideo": {"input": {"required": {
        "video": ["VIDEO", {}], "filename_prefix": ["STRING", {"default": "video/ComfyUI"}],
        "format": ["COMBO", {"options": ["auto", "mp4"]}]}},
        "display_name": "Save Video", "output_node": True},
    "UNETLoader": {"input": {"required": {"unet_name": [["tiny.safetensors"]]}},
                   "display_name": "Load Diffusion Model", "output_node": False},
}


HOSTILE_BODIES = {
    "claims-huge": "a Content-Length of 10^12, then a few bytes and the connection closed",
    "endless": "a body without end, as fast as the client reads it",
    "trickle": "one byte every 50 ms, without end",
    "silent": "the headers, then nothing",
    "cut": "a Content-Length of 100000, then 10 bytes and the connection closed",
    "not-json": "bytes that are not JSON, labelled application/json",
}
"""Hostile ways to answer a request (``FakeComfy.history_answer`` / ``view_answer``)."""


async def hostile_body(request, how: str) -> web.StreamResponse:
    """Answer ``request`` the hostile way ``how`` (a key of :data:`HOSTILE_BODIES`)."""
    resp = web.StreamResponse(headers={"Content-Type": "application/json"})
    if how == "claims-huge":
        resp.content_length = 10**12
    elif how == "cut":
        resp.content_length = 100_000
    await resp.prepare(request)
    try:
        if how in ("claims-huge", "cut"):
            await resp.write(b"0123456789")
            request.transport.close()
        elif how == "endless":
            block = b"[" * 65536
            while True:
                await resp.write(block)
        elif how == "trickle":
            while True:
                await resp.write(b"[")
                await asyncio.sleep(0.05)
        elif how == "silent":
            while request.transport is not None and not request.transport.is_closing():
                await asyncio.sleep(0.05)
        elif how == "not-json":
            await resp.write(b"<html>not json</html>")
            await resp.write_eof()
    except (ConnectionError, RuntimeError, asyncio.CancelledError):
        pass  # the client gave up on it, as it should
    return resp


def expected_output(clip_bytes: bytes, node_id: str) -> bytes:
    """What the fake saves for node ``node_id`` run on a clip with these bytes."""
    return b"restored:" + hashlib.sha256(clip_bytes).hexdigest().encode() + b":" + node_id.encode()


class FakeComfy:
    def __init__(self, name: str = "fake", has_pack: bool = True, token: str | None = None, script=None):
        self.name = name
        self.has_pack = has_pack
        self.token = token
        self.script = script or (lambda fake, pid, prompt: "ok")
        self.gate: asyncio.Event | None = None
        self.ws_gate: asyncio.Event | None = None
        self.requests: list[tuple[str, str, str | None]] = []
        self.uploads: dict[str, bytes] = {}
        self.upload_count = 0
        self.pending: list[tuple[str, dict, str]] = []
        self.running: str | None = None
        self.history: dict[str, dict] = {}
        self.files: dict[tuple[str, str], bytes] = {}
        self.sockets: dict[str, web.WebSocketResponse] = {}
        self.deleted: list[str] = []
        self.interrupted: list[str] = []
        self.executed: list[str] = []
        self.most_held = 0
        self.history_answer = None
        """None: ComfyUI's answer; a :data:`HOSTILE_BODIES` key, or a ``("json", value)`` sent as the answer."""
        self.view_answer: str | None = None
        """None: the file; a :data:`HOSTILE_BODIES` key for every ``/view``."""
        self._interrupt: dict[str, asyncio.Event] = {}
        self._wake = asyncio.Event()
        self._worker: asyncio.Task | None = None
        self._runner: web.AppRunner | None = None
        self.port = None
        self.alive = False

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    # -- life ---------------------------------------------------------------------
    async def start(self, port: int = 0) -> "FakeComfy":
        app = web.Application(middlewares=[self._record])
        app.router.add_get("/system_stats", self._system_stats)
        app.router.add_get("/object_info", self._object_info)
        app.router.add_post("/upload/image", self._upload)
        app.router.add_post("/prompt", self._prompt)
        app.router.add_get("/ws", self._ws)
        app.router.add_get("/history/{pid}", self._history)
        app.router.add_get("/view", self._view)
        app.router.add_get("/queue", self._queue_get)
        app.router.add_post("/queue", self._queue_post)
        app.router.add_post("/interrupt", self._interrupt_post)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", port)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]
        self.alive = True
        self._worker = asyncio.create_task(self._work())
        return self

    async def stop(self) -> None:
        """Stop like a killed process: sockets closed, the port refuses connections, the queue is lost."""
        if not self.alive:
            return
        self.alive = False
        if self._worker is not None:
            self._worker.cancel()
        for ws in list(self.sockets.values()):
            await ws.close()
        self.sockets.clear()
        self.pending.clear()
        self.running = None
        await self._runner.cleanup()

    async def drop_sockets(self) -> None:
        """Close every websocket, leaving the server itself running."""
        for ws in list(self.sockets.values()):
            await ws.close()

    # -- plumbing -----------------------------------------------------------------
    @web.middleware
    async def _record(self, request, handler):
        auth = request.headers.get("Authorization")
        self.requests.append((request.method, request.path, auth))
        if self.token is not None and auth != f"Bearer {self.token}":
            return web.Response(status=401, text="unauthorized")
        return await handler(request)

    async def _send(self, client_id: str, kind: str, data: dict) -> None:
        ws = self.sockets.get(client_id)
        if ws is not None and not ws.closed:
            await ws.send_str(json.dumps({"type": kind, "data": data}))

    # -- endpoints ----------------------------------------------------------------
    async def _system_stats(self, request):
        return web.json_response({"system": {"comfyui_version": "fake"}, "devices": [{"name": self.name}]})

    async def _object_info(self, request):
        info = dict(REGISTRY)
        if not self.has_pack:
            info = {k: v for k, v in info.items() if not k.startswith("ZSVR_")}
        return web.json_response(info)

    async def _upload(self, request):
        post = await request.post()
        image = post["image"]
        subfolder = post.get("subfolder", "")
        name = f"{subfolder}/{image.filename}" if subfolder else image.filename
        self.uploads[name] = image.file.read()
        self.upload_count += 1
        return web.json_response({"name": image.filename, "subfolder": subfolder, "type": "input"})

    async def _prompt(self, request):
        body = await request.json()
        prompt, pid, client = body["prompt"], body["prompt_id"], body.get("client_id", "")
        video = prompt["1"]["inputs"].get("video")
        if prompt["1"]["inputs"].get("frame_cap", 0) < 0 or video not in self.uploads:
            message = ("ZSVR input 'video': file not found: " + str(video) if video not in self.uploads
                       else "Value -1 smaller than min of 0")
            return web.json_response({"error": {"type": "prompt_outputs_failed_validation",
                                                "message": "Prompt outputs failed validation", "details": ""},
                                      "node_errors": {"1": {"errors": [{"message": message, "details": message}]}}},
                                     status=400)
        self.pending.append((pid, prompt, client))
        self.most_held = max(self.most_held, self.held(client))
        self._wake.set()
        return web.json_response({"prompt_id": pid, "number": 0, "node_errors": {}})

    def held(self, client: str | None = None) -> int:
        """Prompts of ``client`` (any client when None) pending or running here."""
        mine = [p for p, _, c in self.pending if client is None or c == client]
        return len(mine) + (1 if self.running is not None else 0)

    async def _ws(self, request):
        if self.ws_gate is not None:
            await self.ws_gate.wait()
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        client = request.query.get("clientId", "")
        self.sockets[client] = ws
        await ws.send_str(json.dumps({"type": "status", "data": {"sid": client}}))
        try:
            async for msg in ws:
                if msg.type == WSMsgType.ERROR:
                    break
        finally:
            if self.sockets.get(client) is ws:
                self.sockets.pop(client, None)
        return ws

    async def _history(self, request):
        pid = request.match_info["pid"]
        if isinstance(self.history_answer, tuple):
            value = self.history_answer[1]
            return web.json_response(value(pid) if callable(value) else value)
        if self.history_answer is not None:
            return await hostile_body(request, self.history_answer)
        return web.json_response({pid: self.history[pid]} if pid in self.history else {})

    async def _view(self, request):
        key = (request.query.get("subfolder", ""), request.query["filename"])
        if self.view_answer is not None:
            return await hostile_body(request, self.view_answer)
        if key not in self.files:
            return web.Response(status=404)
        return web.Response(body=self.files[key], content_type="application/octet-stream")

    async def _queue_get(self, request):
        return web.json_response({"queue_running": [[0, self.running]] if self.running else [],
                                  "queue_pending": [[0, p] for p, _, _ in self.pending]})

    async def _queue_post(self, request):
        body = await request.json()
        for pid in body.get("delete", []):
            self.deleted.append(pid)
            self.pending = [item for item in self.pending if item[0] != pid]
        return web.Response(status=200)

    async def _interrupt_post(self, request):
        body = await request.json()
        pid = body.get("prompt_id")
        self.interrupted.append(pid)
        if pid is not None and pid == self.running and pid in self._interrupt:
            self._interrupt[pid].set()
        return web.Response(status=200)

    # -- the prompt worker ----------------------------------------------------------
    async def _work(self):
        while True:
            while not self.pending:
                self._wake.clear()
                await self._wake.wait()
            pid, prompt, client = self.pending.pop(0)
            self.running = pid
            self._interrupt[pid] = asyncio.Event()
            await self._send(client, "execution_start", {"prompt_id": pid})
            if self.gate is not None:
                await self.gate.wait()
            await self._send(client, "executing", {"node": "1", "prompt_id": pid})
            for value in (1, 2):
                await self._send(client, "progress", {"value": value, "max": 2, "node": "1", "prompt_id": pid})
            outcome = self.script(self, pid, prompt)
            if outcome == "die":
                asyncio.create_task(self.stop())
                return
            if outcome == "hang":
                await self._interrupt[pid].wait()
                await self._send(client, "execution_interrupted", {"prompt_id": pid, "node_id": "1",
                                                                    "node_type": "ZSVR_LoadVideo"})
                self.history[pid] = {"outputs": {}, "status": {"status_str": "error"}}
            elif isinstance(outcome, tuple) and outcome[0] == "outputs":  # a hostile or broken history answer
                self.history[pid] = {"outputs": outcome[1], "status": {"status_str": "success", "completed": True}}
                await self._send(client, "execution_success", {"prompt_id": pid})
                self.executed.append(pid)
            elif isinstance(outcome, tuple) and outcome[0] == "error":
                await self._send(client, "execution_error", {
                    "prompt_id": pid, "node_id": "1", "node_type": "ZSVR_LoadVideo", "exception_type": outcome[1],
                    "exception_message": outcome[2], "traceback": [], "current_inputs": {}, "current_outputs": []})
                self.history[pid] = {"outputs": {}, "status": {"status_str": "error"}}
            else:
                clip = self.uploads[prompt["1"]["inputs"]["video"]]
                outputs = {}
                for node_id, node in prompt.items():
                    prefix = node["inputs"].get("filename_prefix")
                    if isinstance(prefix, str):
                        subfolder, base = os.path.split(prefix)
                        filename = f"{base}_00001_.mp4"
                        self.files[(subfolder, filename)] = expected_output(clip, node_id)
                        outputs[node_id] = {"images": [{"filename": filename, "subfolder": subfolder,
                                                        "type": "output"}], "animated": [True]}
                        await self._send(client, "executed", {"node": node_id, "output": outputs[node_id],
                                                              "prompt_id": pid})
                self.history[pid] = {"outputs": outputs, "status": {"status_str": "success", "completed": True}}
                await self._send(client, "execution_success", {"prompt_id": pid})
                self.executed.append(pid)
            self.running = None
            await self._send(client, "executing", {"node": None, "prompt_id": pid})
