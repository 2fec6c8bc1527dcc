"""A client of one running ComfyUI server, through its own HTTP and websocket API (aiohttp).

Only the endpoints ComfyUI's ``server.py`` serves are used, each on the one
base URL the user named (nothing else is ever contacted):

* ``GET /system_stats``: does it answer (and its version and device);
* ``GET /object_info``: the node registry (``input`` is each class's
  ``INPUT_TYPES()`` as JSON, plus ``display_name``);
* ``POST /upload/image``: any file into the input folder (the handler does not
  look at the type); with the same name and the same bytes already there it
  keeps the file and answers the same name, otherwise it picks a free name, so
  the answered ``name`` is the one to use;
* ``POST /prompt`` ``{"prompt", "prompt_id", "client_id"}``: queues an API prompt;
  a prompt that fails validation is answered 400 with ``error`` and ``node_errors``;
* ``GET /ws?clientId=``: the events of the prompts queued under that client id
  (``execution_start``, ``executing``, ``progress``, ``executed``,
  ``execution_error``, ``execution_interrupted``, ``execution_success``); a
  prompt is finished when ``executing`` arrives with ``node`` None, which the
  server sends after it has written the prompt's history;
* ``GET /history/<prompt_id>``, ``GET /view?filename=&subfolder=&type=``: the outputs;
* ``POST /queue {"delete": [...]}``, ``POST /interrupt {"prompt_id"}``: cancelling.

A server behind a token gets it as ``Authorization: Bearer <token>`` on every
request, the websocket included. The token is read from the environment by
the caller (``ZSVR_SERVER_TOKEN``), never from the command line, and this
module never puts it in a message.

Failures are sorted for the scheduler (``headless/servers.py``):
:class:`ServerFault` (the server could not do it: refused connection, dropped
socket, a 5xx, a timeout; the work may run elsewhere) and
:class:`PromptRejected` (the server read the prompt and refused it: validation,
the input's fault). :class:`AccessDenied` is a 401/403 (a wrong or missing token).

What a server answers is bounded before it is believed: a JSON answer is read
up to ``MAX_JSON_BYTES`` and must be of the type the endpoint answers (a table
where ComfyUI sends one); a file from ``/view`` is streamed into a staged
``.part`` file (created fresh, never through a link) and renamed to its final
name only when complete, up to ``MAX_DOWNLOAD_BYTES`` and the free space of the
disk it lands on less ``DISK_RESERVE_BYTES`` (a ``Content-Length`` above that is
refused before a byte is read). Every body must keep arriving: a silence longer
than the read timeout, or a trickle slower than ``MIN_TRANSFER_RATE`` once
``TRANSFER_READ_TIMEOUT_S`` has passed, ends it. Each of these is the server's
fault (:class:`ServerFault`), and nothing of the answer is kept.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import pathlib
import shutil
import time
import urllib.parse

import aiohttp

TOKEN_ENV = "ZSVR_SERVER_TOKEN"
"""The environment variable holding a bearer token for servers behind an authenticating proxy."""

CONNECT_TIMEOUT_S = 10.0
REQUEST_TIMEOUT_S = 60.0
TRANSFER_READ_TIMEOUT_S = 300.0
"""Longest silence while a file is being uploaded or downloaded."""
MAX_JSON_BYTES = 64 * 1024**2
"""Largest JSON answer read (64 MiB; ``/object_info`` of a ComfyUI with many node packs is a few MB)."""
MAX_DOWNLOAD_BYTES = 64 * 1024**3
"""Largest output file fetched from ``/view`` (64 GiB); the disk's free space less ``DISK_RESERVE_BYTES``
also caps it."""
DISK_RESERVE_BYTES = 1024**3
"""Free space a download leaves on the disk it is written to."""
MIN_TRANSFER_RATE = 64 * 1024
"""Slowest average rate (bytes/s) an answer may arrive at once ``TRANSFER_READ_TIMEOUT_S`` has passed."""
WS_HEARTBEAT_S = 20.0
"""Websocket ping interval: a server that stops answering pings (a dead machine) drops the socket."""


class ServerError(Exception):
    """Something went wrong talking to a server; ``server`` is its URL."""

    def __init__(self, server: str, message: str):
        self.server = server
        super().__init__(message)


class ServerFault(ServerError):
    """The server could not do it (not the input's fault): the work may be run on another server."""


class AccessDenied(ServerError):
    """The server (or a proxy in front of it) answered 401/403: a wrong or missing token."""


class PromptRejected(ServerError):
    """``POST /prompt`` answered 400: the prompt does not validate. ``error`` and ``node_errors`` as sent."""

    def __init__(self, server: str, error: dict, node_errors: dict):
        self.error = error or {}
        self.node_errors = node_errors or {}
        super().__init__(server, validation_text(self.error, self.node_errors))


def validation_text(error: dict, node_errors: dict) -> str:
    """One line from ComfyUI's validation answer (the same parts as ``Execution.error_text``)."""
    parts = [error.get("message", ""), error.get("details", "")]
    for node_id, err in (node_errors or {}).items():
        for e in err.get("errors", []):
            parts.append(f"node {node_id}: {e.get('details') or e.get('message')}")
    return " | ".join(p for p in parts if p) or "the server refused the prompt"


def normalise_url(url: str) -> str:
    """``host:port`` or ``http(s)://host:port[/prefix]`` -> ``http(s)://host:port[/prefix]`` (no trailing slash).

    Raises ValueError for another scheme, a missing host, a query or a fragment.
    """
    text = url.strip()
    if "://" not in text:
        text = "http://" + text
    parts = urllib.parse.urlsplit(text)
    if parts.scheme not in ("http", "https"):
        raise ValueError(f"server {url!r}: use an http:// or https:// URL, e.g. http://127.0.0.1:8188")
    if not parts.hostname:
        raise ValueError(f"server {url!r}: no host; e.g. http://127.0.0.1:8188")
    if parts.query or parts.fragment or parts.username or parts.password:
        raise ValueError(f"server {url!r}: give only scheme, host, port and path (a token goes in ${TOKEN_ENV})")
    try:
        parts.port
    except ValueError as exc:
        raise ValueError(f"server {url!r}: {exc}") from None
    return urllib.parse.urlunsplit((parts.scheme, parts.netloc, parts.path.rstrip("/"), "", ""))


def parse_servers(text: str) -> list[str]:
    """The ``--servers`` value: comma-separated URLs, normalised, each once (order kept)."""
    urls = []
    for item in (text or "").split(","):
        if item.strip():
            url = normalise_url(item)
            if url not in urls:
                urls.append(url)
    if not urls:
        raise ValueError("--servers: name at least one server, e.g. --servers http://127.0.0.1:8188")
    return urls


def file_digest(path: pathlib.Path) -> str:
    """SHA-256 of a file's bytes (hex), read in blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


class ServerClient:
    """The API of one ComfyUI server at ``url`` (see the module docstring). Use inside ``async with``."""

    def __init__(self, url: str, token: str | None = None):
        self.url = normalise_url(url)
        self.name = urllib.parse.urlsplit(self.url).netloc + urllib.parse.urlsplit(self.url).path
        self._headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._session: aiohttp.ClientSession | None = None

    def __repr__(self):  # never shows the token
        return f"ServerClient({self.url!r})"

    async def __aenter__(self):
        await self.open()
        return self

    async def __aexit__(self, *exc):
        await self.close()

    async def open(self):
        if self._session is None or self._session.closed:
            timeout = aiohttp.ClientTimeout(total=None, connect=CONNECT_TIMEOUT_S, sock_read=REQUEST_TIMEOUT_S)
            self._session = aiohttp.ClientSession(timeout=timeout, headers=self._headers)

    async def close(self):
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _endpoint(self, path: str, query: dict | None = None) -> str:
        return self.url + path + ("?" + urllib.parse.urlencode(query) if query else "")

    def _fault(self, what: str, exc: BaseException) -> ServerFault:
        if isinstance(exc, aiohttp.ClientConnectorError):
            why = f"connection refused or unreachable ({exc.os_error.strerror or exc.os_error})" \
                if exc.os_error is not None else "unreachable"
        elif isinstance(exc, (asyncio.TimeoutError, aiohttp.ServerTimeoutError)):
            why = "no answer in time"
        elif isinstance(exc, aiohttp.ServerDisconnectedError):
            why = "the connection was dropped"
        else:
            why = f"{type(exc).__name__}: {exc}"
        return ServerFault(self.url, f"{what}: {why}")

    async def _check(self, resp: aiohttp.ClientResponse, what: str) -> None:
        if 300 <= resp.status < 400:  # never followed: the token goes only to the servers named on the command line
            raise ServerFault(self.url, f"{what}: HTTP {resp.status}: the server redirects elsewhere; redirects are "
                                        "not followed (give the address the server really answers on)")
        if resp.status in (401, 403):
            raise AccessDenied(self.url, f"{what}: HTTP {resp.status}: the server refused access; set "
                                         f"${TOKEN_ENV} to its token" + (" (the one set was refused)"
                                                                          if self._headers else ""))
        if resp.status >= 500:
            raise ServerFault(self.url, f"{what}: HTTP {resp.status} ({(await resp.text())[:200].strip()})")
        if resp.status >= 400:
            raise ServerError(self.url, f"{what}: HTTP {resp.status} ({(await resp.text())[:200].strip()})")

    async def _body(self, resp: aiohttp.ClientResponse, what: str, cap: int, sink) -> int:
        """Stream ``resp``'s body into ``sink(block)``: at most ``cap`` bytes, never slower than ``MIN_TRANSFER_RATE``
        once ``TRANSFER_READ_TIMEOUT_S`` has passed (a silence is the session's read timeout). Returns the bytes read;
        raises :class:`ServerFault` for a body (or a declared ``Content-Length``) above ``cap`` or a trickle."""
        if resp.content_length is not None and resp.content_length > cap:
            raise ServerFault(self.url, f"{what}: the answer claims {resp.content_length:,} bytes, more than the "
                                        f"{cap:,} accepted")
        size, start = 0, time.monotonic()
        async for block in resp.content.iter_chunked(1 << 20):
            size += len(block)
            if size > cap:
                raise ServerFault(self.url, f"{what}: the answer goes on past the {cap:,} bytes accepted")
            elapsed = time.monotonic() - start
            if elapsed > TRANSFER_READ_TIMEOUT_S + size / MIN_TRANSFER_RATE:
                raise ServerFault(self.url, f"{what}: the answer arrives too slowly ({size:,} bytes in "
                                            f"{elapsed:.0f} s)")
            sink(block)
        return size

    async def _json(self, method: str, path: str, what: str, expect: type | None = dict, **kwargs):
        """The JSON answer of ``method path`` (at most ``MAX_JSON_BYTES``); it must be an ``expect`` (None: anything,
        and a non-JSON answer is None)."""
        await self.open()
        try:
            async with self._session.request(method, self._endpoint(path), allow_redirects=False, **kwargs) as resp:
                await self._check(resp, what)
                if resp.content_type != "application/json" and expect is None:
                    return None
                parts: list[bytes] = []
                await self._body(resp, what, MAX_JSON_BYTES, parts.append)
        except ServerError:
            raise
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
            raise self._fault(what, exc) from exc
        try:
            data = json.loads(b"".join(parts))
        except (ValueError, UnicodeDecodeError):
            if expect is None:
                return None
            raise ServerFault(self.url, f"{what}: the answer is not JSON") from None
        if expect is not None and not isinstance(data, expect):
            raise ServerFault(self.url, f"{what}: the answer is a JSON {type(data).__name__}, not a "
                                        f"{'table' if expect is dict else expect.__name__}")
        return data

    # -- read ---------------------------------------------------------------------
    async def system_stats(self) -> dict:
        return await self._json("GET", "/system_stats", "GET /system_stats")

    async def object_info(self) -> dict:
        return await self._json("GET", "/object_info", "GET /object_info")

    async def history(self, prompt_id: str) -> dict | None:
        """The prompt's history entry (``outputs``, ``status``), or None while the server has none."""
        data = await self._json("GET", f"/history/{urllib.parse.quote(prompt_id)}", "GET /history")
        entry = data.get(prompt_id)
        if entry is not None and not isinstance(entry, dict):
            raise ServerFault(self.url, f"GET /history: the prompt's entry is a JSON {type(entry).__name__}, "
                                        "not a table")
        return entry

    async def queue_state(self) -> tuple[list[str], list[str]]:
        """Prompt ids running and pending on the server (``GET /queue``)."""
        data = await self._json("GET", "/queue", "GET /queue")

        def ids(key: str) -> list[str]:
            items = data.get(key, [])
            if not isinstance(items, list) or not all(isinstance(i, list) and len(i) > 1 for i in items):
                raise ServerFault(self.url, f"GET /queue: '{key}' is not a list of queue entries")
            return [item[1] for item in items]

        return ids("queue_running"), ids("queue_pending")

    # -- files --------------------------------------------------------------------
    async def upload(self, path: pathlib.Path, name: str, subfolder: str = "") -> str:
        """Upload ``path`` into the server's input folder as ``subfolder/name``; returns the name to use in a prompt.

        A 413 means the file is above the server's ``--max-upload-size`` (100 MB unless set).
        """
        await self.open()
        what = f"uploading {path.name}"
        size = path.stat().st_size
        try:
            with open(path, "rb") as f:
                form = aiohttp.FormData()
                form.add_field("image", f, filename=name, content_type="application/octet-stream")
                form.add_field("type", "input")
                form.add_field("subfolder", subfolder)
                timeout = aiohttp.ClientTimeout(total=None, connect=CONNECT_TIMEOUT_S,
                                                sock_read=TRANSFER_READ_TIMEOUT_S)
                async with self._session.post(self._endpoint("/upload/image"), data=form, timeout=timeout,
                                              allow_redirects=False) as resp:
                    if resp.status == 413:
                        raise ServerError(self.url, f"{what}: the file ({size / 2**20:.0f} MB) is larger than the "
                                                    "server accepts; start that ComfyUI with a larger "
                                                    f"--max-upload-size (in MB, e.g. {int(size / 2**20) + 100})")
                    await self._check(resp, what)
                    answer = await resp.json()
        except ServerError:
            raise
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
            raise self._fault(what, exc) from exc
        stored = answer.get("name") or name
        return f"{answer.get('subfolder')}/{stored}" if answer.get("subfolder") else stored

    async def download(self, item: dict, dest: pathlib.Path) -> int:
        """Fetch an output (``{"filename", "subfolder", "type"}`` from the history) into ``dest``; returns bytes.

        The body goes into ``dest.part`` (created anew, never through a link) and is renamed to ``dest`` only when
        complete; see the module docstring for the bounds. On any failure the staged file is removed and ``dest``
        is not written.
        """
        await self.open()
        query = {"filename": item["filename"], "subfolder": item.get("subfolder", ""),
                 "type": item.get("type", "output")}
        what = f"fetching {item['filename']}"
        dest.parent.mkdir(parents=True, exist_ok=True)
        partial = dest.with_name(dest.name + ".part")
        cap = min(MAX_DOWNLOAD_BYTES, max(0, shutil.disk_usage(dest.parent).free - DISK_RESERVE_BYTES))
        done = False
        try:
            timeout = aiohttp.ClientTimeout(total=None, connect=CONNECT_TIMEOUT_S, sock_read=TRANSFER_READ_TIMEOUT_S)
            async with self._session.get(self._endpoint("/view", query), timeout=timeout,
                                         allow_redirects=False) as resp:
                if resp.status == 404:
                    raise ServerFault(self.url, f"{what}: the server has no such output file any more")
                await self._check(resp, what)
                partial.unlink(missing_ok=True)
                flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_BINARY", 0)
                try:
                    f = os.fdopen(os.open(partial, flags, 0o644), "wb")
                except OSError as exc:
                    raise ServerError(self.url, f"{what}: cannot write {partial}: {exc.strerror or exc}") from None
                with f:
                    size = await self._body(resp, what, cap, f.write)
            os.replace(partial, dest)
            done = True
        except ServerError:
            raise
        except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
            raise self._fault(what, exc) from exc
        except OSError as exc:  # the local disk (full, read-only): not the server's doing
            raise ServerError(self.url, f"{what}: writing {partial} failed: {exc.strerror or exc}") from exc
        finally:
            if not done:
                partial.unlink(missing_ok=True)
        return size

    # -- prompts ------------------------------------------------------------------
    async def queue_prompt(self, prompt: dict, prompt_id: str, client_id: str) -> None:
        """``POST /prompt``; raises :class:`PromptRejected` when the server's validation refuses it."""
        await self.open()
        body = {"prompt": prompt, "prompt_id": prompt_id, "client_id": client_id}
        try:
            async with self._session.post(self._endpoint("/prompt"), json=body, allow_redirects=False) as resp:
                if resp.status == 400:
                    try:
                        answer = await resp.json(content_type=None)
                    except (ValueError, aiohttp.ContentTypeError):
                        answer = {"error": {"message": (await resp.text())[:300]}}
                    raise PromptRejected(self.url, answer.get("error") or {}, answer.get("node_errors") or {})
                await self._check(resp, "POST /prompt")
        except ServerError:
            raise
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
            raise self._fault("POST /prompt", exc) from exc

    async def delete_queued(self, prompt_ids: list[str]) -> None:
        """Remove prompts that have not started from the server's queue (``POST /queue {"delete": [...]}``)."""
        if prompt_ids:
            await self._json("POST", "/queue", "POST /queue", expect=None, json={"delete": list(prompt_ids)})

    async def interrupt(self, prompt_id: str) -> None:
        """Stop ``prompt_id`` if it is the one running (``POST /interrupt {"prompt_id"}``; others are untouched)."""
        await self._json("POST", "/interrupt", "POST /interrupt", expect=None, json={"prompt_id": prompt_id})

    async def websocket(self, client_id: str) -> aiohttp.ClientWebSocketResponse:
        """The event socket for prompts queued under ``client_id`` (pinged every ``WS_HEARTBEAT_S``)."""
        await self.open()
        base = urllib.parse.urlsplit(self.url)
        scheme = "wss" if base.scheme == "https" else "ws"
        url = urllib.parse.urlunsplit((scheme, base.netloc, base.path + "/ws", urllib.parse.urlencode(
            {"clientId": client_id}), ""))
        try:
            return await self._session.ws_connect(url, heartbeat=WS_HEARTBEAT_S, max_msg_size=0)
        except aiohttp.WSServerHandshakeError as exc:
            if exc.status in (401, 403):
                raise AccessDenied(self.url, f"GET /ws: HTTP {exc.status}: the server refused access; set "
                                             f"${TOKEN_ENV} to its token") from exc
            raise self._fault("GET /ws", exc) from exc
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
            raise self._fault("GET /ws", exc) from exc


def decode_message(msg: aiohttp.WSMessage) -> tuple[str, dict] | None:
    """A websocket text message as ``(type, data)``; None for previews (binary) and anything unreadable."""
    if msg.type != aiohttp.WSMsgType.TEXT:
        return None
    try:
        body = json.loads(msg.data)
    except ValueError:
        return None
    if not isinstance(body, dict) or "type" not in body:
        return None
    data = body.get("data")
    return str(body["type"]), data if isinstance(data, dict) else {}
