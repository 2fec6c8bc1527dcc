"""What a ``--servers`` run shows: a bar per unit in flight and one overall, then a table with each server's share.

Pure Python, driven by :class:`headless.fleet.Fleet`'s events (``listener(event, info)``);
the tests feed it recorded events.
"""

from __future__ import annotations

import sys
import threading
from typing import TYPE_CHECKING, Callable, Optional

if TYPE_CHECKING:
    from .fleet import Fleet
    from .fleet_units import UnitResult


class FleetConsole:
    """Progress of a ``--servers`` run: a bar per unit in flight and one for the whole run.

    On a terminal the bars are a block of lines redrawn in place (events print
    above it); into a file or pipe each event is one line and a unit's bar is
    printed at each quarter, so nothing is printed twice.

    Args:
        total: units in the run.
        names: node id -> (name, activity) (``console.node_names``), for the node a unit is in.
        stream: where to write (default ``sys.stderr``); tty: redraw in place (default ``stream.isatty()``).
    """

    def __init__(self, total: int, names: Optional[dict] = None, stream=None, tty: Optional[bool] = None,
                 short: Optional[Callable[[str], str]] = None):
        self.total = total
        self.names = dict(names or {})
        self.stream = stream if stream is not None else sys.stderr
        self.tty = bool(tty if tty is not None else getattr(self.stream, "isatty", lambda: False)())
        self.short = short or (lambda url: url.split("://", 1)[-1])
        self.finished = 0
        self.failed = 0
        self.active: dict[str, dict] = {}
        self._drawn = 0
        self._lock = threading.RLock()

    def _write(self, text: str) -> None:
        self.stream.write(text)
        self.stream.flush()

    @staticmethod
    def bar(value: int, total: int, width: int = 20) -> str:
        total = max(total, 1)
        filled = int(width * min(value, total) / total)
        return f"[{'#' * filled}{'.' * (width - filled)}] {value}/{total} {int(100 * min(value, total) / total):3d}%"

    def overall(self) -> str:
        tail = f", {self.failed} failed" if self.failed else ""
        return f"overall {self.bar(self.finished, self.total)} units{tail}"

    def _unit_line(self, key: str, state: dict) -> str:
        node = state.get("node")
        label = self.names.get(node, (f"node {node}", ""))[0] if node else "waiting in the server's queue"
        text = f"  {key} @ {self.short(state['server'])}: {label}"
        if state.get("total"):
            text += "  " + self.bar(state["value"], state["total"])
        return text

    def _clear(self) -> None:
        if self.tty and self._drawn:
            self._write(f"\x1b[{self._drawn}F\x1b[J")
            self._drawn = 0

    def _draw(self) -> None:
        if not self.tty:
            return
        lines = [self._unit_line(k, st) for k, st in self.active.items()] + [self.overall()]
        self._write("".join(line + "\x1b[K\n" for line in lines))
        self._drawn = len(lines)

    def line(self, text: str) -> None:
        with self._lock:
            self._clear()
            self._write(text + "\n")
            self._draw()

    def __call__(self, event: str, info: dict) -> None:
        with self._lock:
            unit = info.get("unit")
            key = unit.key if unit is not None else ""
            server = self.short(info.get("server") or "")
            if event == "queued":
                self.active[key] = {"server": info["server"], "node": None, "value": 0, "total": 0, "printed": 0}
                self.line(f"{key} -> {server}")
            elif event == "started":
                self._redraw()
            elif event == "node" and key in self.active:
                st = self.active[key]
                st.update(node=info["node"], value=0, total=0, printed=0)
                if not self.tty:
                    name = self.names.get(info["node"], (f"node {info['node']}", ""))
                    self.line(f"  {key} @ {server}: {name[0]}" + (f": {name[1]}" if name[1] else ""))
                else:
                    self._redraw()
            elif event == "progress" and key in self.active:
                st = self.active[key]
                st.update(node=info["node"], value=info["value"], total=info["total"])
                if self.tty:
                    self._redraw()
                else:
                    pct = int(100 * min(info["value"], info["total"]) / max(info["total"], 1))
                    quarter = max((q for q in (25, 50, 75, 100) if pct >= q), default=0)
                    if quarter > st["printed"]:
                        st["printed"] = quarter
                        self.line(self._unit_line(key, st))
            elif event == "requeued":
                self.active.pop(key, None)
                self.line(f"{key}: re-queued for another server ({info['reason']})")
            elif event == "server_down":
                self.line(f"server {server} is out: {info['reason']}")
            elif event == "server_up":
                self.line(f"server {server} is back")
            elif event in ("done", "failed"):
                self.active.pop(key, None)
                self.finished += 1
                result = info["result"]
                if event == "failed":
                    self.failed += 1
                    self.line(f"{key}: FAILED: {result.error}")
                else:
                    a = result.final
                    self.line(f"{key}: ok on {server} in {a.compute_s:.1f} s (+{result.overhead_s:.1f} s transfer)")
                if not self.tty:
                    self.line(self.overall())

    def _redraw(self) -> None:
        if self.tty:
            self._clear()
            self._draw()

    def close(self) -> None:
        with self._lock:
            self._clear()


def trimmed_frames(outputs) -> list[str]:
    """The notes of ``ZSVR_LoadVideo`` nodes (their UI text in the server's history) on frames their frame rule
    trimmed: a unit that lost frames that way says so in its row."""
    return [text for out in (outputs or {}).values() if isinstance(out, dict)
            for text in out.get("text") or [] if isinstance(text, str) and " trimmed the last " in text]


def format_summary(results: list[UnitResult], fleet: Fleet) -> str:
    """The table after a ``--servers`` run: a row per unit, then each server's share of the units."""
    short = lambda url: (url or "-").split("://", 1)[-1]  # noqa: E731
    width = max([24] + [len(r.unit.key) + 1 for r in results])
    lines = [f"{'unit':<{width}} {'status':<7} {'server':<22} {'tries':>5} {'compute s':>9} {'transfer s':>10}  detail"]
    for r in results:
        a = r.final
        shown = [str(f) if f.exists() else f"{f.name} (stitched, removed)" for f in r.files]
        detail = ", ".join(shown) if r.ok else (r.error or "")
        if r.ok:
            detail += "".join(f" (warning: {note})" for note in trimmed_frames(r.outputs))
        if r.rerun_after:
            detail = "re-run after: " + "; ".join(x.reason for x in r.rerun_after) + (" -> " + detail if detail else "")
        compute = f"{a.compute_s:9.2f}" if r.ok and a else f"{'-':>9}"
        transfer = f"{r.overhead_s:10.2f}" if r.ok and a else f"{'-':>10}"
        lines.append(f"{r.unit.key:<{width}} {'ok' if r.ok else 'FAILED':<7} {short(r.server):<22} "
                     f"{len(r.attempts):>5} {compute} {transfer}  {detail}")
    done = sum(r.ok for r in results)
    lines.append("")
    lines.append(f"{'server':<24} {'units':>5} {'share':>6} {'compute s':>9}  faults")
    for s in fleet.servers:
        share = f"{100 * s.done / done:5.0f}%" if done else f"{'-':>6}"
        faults = f"{len(s.faults)}: " + "; ".join(s.faults) if s.faults else "0"
        if not any(c.url == s.url and c.ok for c in fleet.checks):
            faults = "not used: " + s.reason
        lines.append(f"{short(s.url):<24} {s.done:>5} {share} {s.compute_s:9.2f}  {faults}")
    failed = len(results) - done
    rerun = sum(1 for r in results if r.rerun_after)
    lines.append(f"{done} ok, {failed} failed" + (f"; {rerun} unit{'s' if rerun != 1 else ''} re-run on another "
                                                  "server after a server fault" if rerun else ""))
    return "\n".join(lines)
