"""Node-side modules that need no ComfyUI, imported for kernel-level tests without booting the host.

``zsvr.nodes/__init__.py`` imports ComfyUI's API, so a test that wants, say, ``nodes/errors.py`` alone
registers a bare ``zsvr.nodes`` package (its ``__init__`` not run) for the time it imports the module, and
every ``zsvr.nodes*`` module that appeared meanwhile leaves ``sys.modules`` afterwards: the real package,
imported when ComfyUI loads the pack later in the same session, is never the bare one.
"""

from __future__ import annotations

import contextlib
import importlib
import pathlib
import sys
import types

PACK_DIR = pathlib.Path(__file__).resolve().parent.parent


@contextlib.contextmanager
def bare_packages(*names: str):
    """Register ``names`` (``zsvr.nodes``, ``zsvr.nodes.adapters``, ...) as bare packages for the block.

    On exit every module whose name starts with one of ``names`` and that was not loaded before is removed
    from ``sys.modules`` (the objects the block imported keep working).
    """
    before = set(sys.modules)
    for name in names:
        if name not in sys.modules:
            package = types.ModuleType(name)
            package.__path__ = [str(PACK_DIR.joinpath(*name.split(".")[1:]))]
            sys.modules[name] = package
    try:
        yield
    finally:
        for name in set(sys.modules) - before:
            if any(name == n or name.startswith(n + ".") for n in names):
                del sys.modules[name]


def node_module(name: str):
    """``zsvr.nodes.<name>`` imported without ComfyUI (the real one when the host already loaded it)."""
    full = f"zsvr.nodes.{name}"
    if "zsvr.nodes" in sys.modules:
        return importlib.import_module(full)
    with bare_packages("zsvr.nodes"):
        return importlib.import_module(full)
