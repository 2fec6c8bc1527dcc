"""The runner's stop: SIGINT, SIGTERM and SIGHUP stop a run the first time, cleanly, in every mode.

Rule implemented (issue 25 item 2): the first signal asks the run to stop, a second one ends the process at once.
Exit status follows the shell's convention 128 + signal number: 130 for SIGINT, 143 for SIGTERM, 129 for SIGHUP.

* In-process runs (:meth:`RunnerStop.install`): the first signal only sets a flag and starts a thread that sets
  ComfyUI's interrupt flag every 50 ms (ComfyUI clears that flag when a prompt starts, so setting it once can be
  lost); the running prompt ends at its next progress step, the runner's own ``finally`` blocks remove the staged
  copies, the batch loop stops before the next clip (:attr:`RunnerStop.requested`), and ``run_workflow.py`` prints
  one line (:meth:`RunnerStop.line`) and returns the code. No exception is raised from the handler, so no
  traceback. A second signal calls ``os._exit`` with the same code. Before ComfyUI has booted nothing is staged,
  so the first signal ends the process at once (with its line).
* ``--servers`` runs (:func:`forward_to_sigint`): asyncio already turns Ctrl-C into cancelling the run, which
  deletes the runner's queued prompts and interrupts its running ones; SIGTERM and SIGHUP are re-raised as
  SIGINT so they take that same path, and :func:`exit_code` gives the code of the signal that came first.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from typing import Callable, Optional

SIGNALS = tuple(s for s in (getattr(signal, "SIGINT", None), getattr(signal, "SIGTERM", None),
                            getattr(signal, "SIGHUP", None)) if s is not None)
REPEAT_SECONDS = 0.05


def code_for(signum: int) -> int:
    """The exit status of a run stopped by ``signum`` (128 + its number)."""
    return 128 + int(signum)


def name_of(signum: int) -> str:
    """``SIGINT``, ``SIGTERM``, ...."""
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


class RunnerStop:
    """The in-process runner's stop: first signal interrupts and asks the loop to stop, second exits at once."""

    def __init__(self, say: Callable[[str], None] = print):
        self.say = say
        self.signum: Optional[int] = None
        self.interrupt: Optional[Callable[[], None]] = None  # sets ComfyUI's interrupt flag; None before boot
        self._done = threading.Event()
        self._thread: Optional[threading.Thread] = None

    @property
    def requested(self) -> bool:
        return self.signum is not None

    @property
    def code(self) -> int:
        return code_for(self.signum) if self.signum is not None else 0

    def line(self, detail: str) -> str:
        return f"stopped by {name_of(self.signum)}: {detail}"

    def install(self) -> "RunnerStop":
        for s in SIGNALS:
            signal.signal(s, self._handle)
        return self

    def _handle(self, signum, frame) -> None:
        if self.signum is not None:  # the second signal: out now, same code, no traceback
            sys.stderr.write(f"{name_of(signum)} again: exiting at once\n")
            sys.stderr.flush()
            os._exit(self.code)
        self.signum = signum
        if self.interrupt is None:  # ComfyUI not booted yet: nothing staged, nothing to finish
            self.say(self.line("before any clip ran"))
            sys.stdout.flush()
            os._exit(self.code)
        self._thread = threading.Thread(target=self._keep_interrupting, name="zsvr-stop", daemon=True)
        self._thread.start()

    def _keep_interrupting(self) -> None:
        while not self._done.is_set():
            try:
                self.interrupt()
            except Exception:  # noqa: BLE001 - a failing setter must not kill the stop
                pass
            self._done.wait(REPEAT_SECONDS)

    def release(self) -> None:
        """Stop re-setting the interrupt flag (the run is over)."""
        self._done.set()


class _Forwarded:
    signum: Optional[int] = None


_forwarded = _Forwarded()


def forward_to_sigint() -> None:
    """``--servers``: SIGTERM and SIGHUP take Ctrl-C's path (cancel: delete queued prompts, interrupt running)."""
    _forwarded.signum = None

    def handle(signum, frame):
        if _forwarded.signum is not None:
            os._exit(code_for(_forwarded.signum))
        _forwarded.signum = signum
        signal.raise_signal(signal.SIGINT)

    for s in SIGNALS:
        if s != signal.SIGINT:
            signal.signal(s, handle)


def exit_code() -> int:
    """The code of a ``--servers`` run cancelled by a signal: the forwarded one's, else SIGINT's 130."""
    return code_for(_forwarded.signum if _forwarded.signum is not None else signal.SIGINT)


def forwarded_name() -> str:
    return name_of(_forwarded.signum if _forwarded.signum is not None else signal.SIGINT)
