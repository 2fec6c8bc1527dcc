"""What the headless runner prints while it works: one line per event, nodes by name, bars that end at 100 %.

The runner feeds this reporter the events ComfyUI's executor sends
(``execution_start``, ``execution_cached``, ``executing``, ``execution_success``,
``execution_error``, ``execution_interrupted``) and the progress its global hook
reports (``node_id, value, total``); the reporter turns them into lines:

* a line per clip (``[1/3] rain.mp4``) and its outcome (``ok: 49 frames in
  812.4 s`` or ``FAILED: ...``);
* a status line per node as it starts, by its title or display name (never a bare
  id) and what it is doing, so model loading, text and VAE encoding/decoding show
  up too: ``Load Checkpoint: loading the model``;
* a progress bar for a node that reports steps. On a terminal it is drawn on the
  node's own line and redrawn in place; into a file or pipe it is one line per
  quarter (25/50/75/100 %), so nothing is ever printed twice;
* a node that ends normally ends its bar at 100 %: a sampler stopped on purpose
  (``ZSVR_EarlyStop``) says where it stopped (``ended early at step 3 of 4``)
  instead of leaving a bar at 75 %. A failed or interrupted node keeps its bar
  where it was.

Log records are written through the same reporter (:class:`ConsoleLogHandler`),
so a warning never lands in the middle of a bar. ComfyUI's own tqdm bars must be
off (``comfy.utils.set_progress_bar_enabled(False)``; ``ComfyHost`` does it with
``core_progress_bars=False``), or they interleave stale copies of the sampler's bar.

Pure Python (no ComfyUI import): tests drive it with a recorded event sequence.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from typing import Callable, TextIO

BAR_WIDTH = 20
QUARTERS = (25, 50, 75, 100)

SAMPLING_NODES = {"KSampler", "KSamplerAdvanced", "SamplerCustom", "SamplerCustomAdvanced"}


def activity(class_type: str) -> str:
    """What a node of this type is doing while it runs, in words ("" when nothing useful can be said)."""
    low = (class_type or "").lower()
    if "loadvideo" in low:
        return "reading the video"
    if "loader" in low or class_type == "ZSVR_LoadCogVideoX" or ("checkpoint" in low and "load" in low):
        return "loading the model"
    if low.startswith("load"):
        return "reading the input"
    if "textencode" in low or "cliptext" in low:
        return "encoding the text"
    if "vaeencode" in low:
        return "encoding frames (VAE)"
    if "vaedecode" in low:
        return "decoding frames (VAE)"
    if class_type == "ZSVR_DDPMInvert":
        return "inverting the video"
    if class_type in SAMPLING_NODES or ("ksampler" in low and "select" not in low):
        return "sampling"
    if "controlnetapply" in low:
        return "applying the ControlNet"
    if "upscale" in low:
        return "upscaling"
    if low.startswith("save") or "videocombine" in low:
        return "saving"
    if low == "createvideo":
        return "assembling the video"
    return ""


def node_names(prompt: dict, display_name: Callable[[str], str | None] = lambda _: None) -> dict:
    """node id -> (name, activity): the title, else the display name, else the type; ``#id`` added when two share one."""
    names = {}
    for node_id, node in prompt.items():
        class_type = node.get("class_type", "?")
        name = (node.get("_meta") or {}).get("title") or display_name(class_type) or class_type
        names[str(node_id)] = [name, activity(class_type)]
    counts: dict[str, int] = {}
    for name, _ in names.values():
        counts[name] = counts.get(name, 0) + 1
    for node_id, entry in names.items():
        if counts[entry[0]] > 1:
            entry[0] = f"{entry[0]} #{node_id}"
    return {node_id: tuple(entry) for node_id, entry in names.items()}


class _Bar:
    def __init__(self, total: int):
        self.value = 0
        self.total = total
        self.most = total  # the largest total seen: an early stop shrinks the total
        self.printed = 0  # last quarter printed (file mode)


class ConsoleReporter:
    """Turns executor events and progress into console lines (see the module docstring).

    Args:
        names: node id -> (name, activity), from :func:`node_names`.
        stream: where to write (default ``sys.stderr``).
        tty: draw bars in place (default: ``stream.isatty()``).
        clock: seconds, for the per-node and per-clip times.
        enabled: False makes every call a no-op.
    """

    def __init__(self, names: dict | None = None, stream: TextIO | None = None, tty: bool | None = None,
                 clock: Callable[[], float] = time.monotonic, enabled: bool = True):
        self.names = dict(names or {})
        self.stream = stream if stream is not None else sys.stderr
        self.tty = bool(tty if tty is not None else getattr(self.stream, "isatty", lambda: False)())
        self.clock = clock
        self.enabled = enabled
        self._lock = threading.RLock()
        self._node: str | None = None  # the node running now
        self._node_start = 0.0
        self._bar: _Bar | None = None
        self._open = False  # a terminal line without its newline yet
        self._shown = ""  # the text of that line
        self._clip_start = 0.0

    # -- writing ------------------------------------------------------------------
    def _write(self, text: str) -> None:
        self.stream.write(text)
        self.stream.flush()

    def line(self, text: str) -> None:
        """Write a whole line (after closing a bar line that is still open)."""
        if not self.enabled:
            return
        with self._lock:
            if self._open:
                self._write("\n")
                self._open = False
            self._write(text + "\n")

    def _label(self, node_id: str) -> str:
        name, what = self.names.get(str(node_id), (f"node {node_id}", ""))
        return f"{name}: {what}" if what else name

    def _bar_text(self, bar: _Bar) -> str:
        total = max(bar.total, 1)
        filled = int(BAR_WIDTH * min(bar.value, total) / total)
        percent = int(100 * min(bar.value, total) / total)
        return f"[{'#' * filled}{'.' * (BAR_WIDTH - filled)}] {bar.value}/{bar.total} {percent:3d}%"

    def _draw(self, tail: str = "") -> None:
        text = "  " + self._label(self._node)
        if self._bar is not None:
            text += "  " + self._bar_text(self._bar)
        if self._open and text + tail == self._shown:
            return  # nothing new: a terminal redraw of the same text is not an event
        self._write("\r" + text + tail + "\x1b[K")
        self._open, self._shown = True, text + tail

    # -- clips --------------------------------------------------------------------
    def clip_start(self, index: int, count: int, name: str) -> None:
        """``[index/count] name``, before a clip's prompt runs (index is 1-based)."""
        self._clip_start = self.clock()
        self._node, self._bar = None, None
        self.line(f"[{index}/{count}] {name}")

    def clip_end(self, ok: bool, detail: str = "", frames=None) -> None:
        """The clip's outcome: ``ok: 5 frames in 3.2 s -> files`` or ``FAILED after 3.2 s: why``."""
        self._finish(completed=ok)
        seconds = self.clock() - self._clip_start
        if ok:
            what = f"{frames} frames" if frames is not None else "done"
            self.line(f"  ok: {what} in {seconds:.1f} s" + (f" -> {detail}" if detail else ""))
        else:
            self.line(f"  FAILED after {seconds:.1f} s: {detail}")

    # -- executor events ----------------------------------------------------------
    def on_event(self, event: str, data) -> None:
        """An executor event (``send_sync``'s event and data)."""
        if not self.enabled:
            return
        with self._lock:
            data = data if isinstance(data, dict) else {}
            if event == "execution_cached":
                cached = [self.names.get(str(n), (f"node {n}",))[0] for n in data.get("nodes") or []]
                if cached:
                    shown = ", ".join(cached[:8]) + (f", ... ({len(cached) - 8} more)" if len(cached) > 8 else "")
                    self.line(f"  cached from the previous run: {shown}")
            elif event == "executing":
                node = data.get("node")
                if node is None:
                    self._finish(completed=True)
                elif str(node) != self._node:
                    self._start(str(node))
            elif event == "execution_success":
                self._finish(completed=True)
            elif event in ("execution_error", "execution_interrupted"):
                self._finish(completed=False)

    def on_progress(self, node_id, value, total) -> None:
        """The global progress hook's report: ``value`` of ``total`` for ``node_id``."""
        if not self.enabled:
            return
        with self._lock:
            node = str(node_id) if node_id is not None else self._node
            if node is None:
                return
            if node != self._node:
                self._start(node)
            value, total = int(value), max(int(total), 1)
            bar = self._bar
            if bar is not None and (value < bar.value or total > bar.most):
                self._complete_bar()  # a second phase in the same node (another loop, a new total)
                bar = None
            if bar is None:
                bar = self._bar = _Bar(total)
            bar.total, bar.value = total, value
            if self.tty:
                self._draw()
            else:
                percent = int(100 * min(value, total) / total)
                reached = max((q for q in QUARTERS if percent >= q), default=0)
                if reached > bar.printed:
                    bar.printed = reached
                    self.line(f"    {self.names.get(node, (f'node {node}',))[0]}: {self._bar_text(bar)}")

    # -- node bookkeeping -----------------------------------------------------------
    def _start(self, node: str) -> None:
        self._finish(completed=True)
        self._node, self._bar, self._node_start = node, None, self.clock()
        if self.tty:
            self._draw()
        else:
            self.line("  " + self._label(node))

    def _complete_bar(self) -> str:
        """End the current bar at 100 % (the node or phase ended normally); returns the early-stop note."""
        bar, note = self._bar, ""
        if bar is None:
            return note
        if 0 < bar.value < bar.most:
            note = f" (ended early at step {bar.value} of {bar.most})"
        if bar.value > 0:
            bar.total = bar.value  # what ran is the whole run: the bar shows it full
        else:
            bar.value = bar.total
        if not self.tty and (bar.printed < 100 or note):
            bar.printed = 100
            self.line(f"    {self.names.get(self._node, (f'node {self._node}',))[0]}: {self._bar_text(bar)}{note}")
        return note

    def _finish(self, completed: bool) -> None:
        """The running node ended: its bar completes (when it ended normally) and its line closes."""
        if self._node is None:
            return
        note = self._complete_bar() if completed else ""
        if self.tty:
            tail = note + (f"  ({self.clock() - self._node_start:.1f} s)" if completed else "")
            self._draw(tail)
            self._write("\n")
            self._open = False
        self._node, self._bar = None, None


class ConsoleLogHandler(logging.Handler):
    """Log records as whole lines through the reporter (so they never split a bar line)."""

    def __init__(self, reporter: ConsoleReporter, level=logging.WARNING):
        super().__init__(level)
        self.reporter = reporter
        self.setFormatter(logging.Formatter("%(levelname)s: %(message)s"))
        self._last = None

    def emit(self, record):
        try:
            text = self.format(record)
            if text == self._last:  # the same warning from two places is one event on screen
                return
            self._last = text
            self.reporter.line(text)
        except Exception:  # logging must never break the run
            self.handleError(record)


class QuietNodeErrors(logging.Filter):
    """Drops the executor's own error log (``execution.py``: the ``!!! Exception during processing !!!`` block
    with its traceback, the ``Failed to validate prompt`` list): the runner reports every failure itself, in one
    line naming the user's file. ``--verbose`` keeps them."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.levelno >= logging.ERROR and record.module == "execution")


def route_logging(reporter: ConsoleReporter, verbose: bool = False) -> ConsoleLogHandler:
    """Make the reporter the root logger's only console handler (INFO with ``verbose``, else WARNING, without
    the executor's error blocks: :class:`QuietNodeErrors`)."""
    root = logging.getLogger()
    handler = ConsoleLogHandler(reporter, logging.INFO if verbose else logging.WARNING)
    if not verbose:
        handler.addFilter(QuietNodeErrors())
    root.handlers = [h for h in root.handlers if not isinstance(h, logging.StreamHandler)] + [handler]
    root.setLevel(logging.INFO if verbose else logging.WARNING)
    return handler
