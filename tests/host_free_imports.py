"""Modules of a package whose ``__init__`` imports ComfyUI, imported without booting the host.

``zsvr.nodes.adapters/__init__.py`` imports ComfyUI, so a test that wants, say, the CogVideoX adapter alone
registers a bare ``zsvr.nodes.adapters`` package (its ``__init__`` not run) for the time it imports the module,
and every module under it that appeared meanwhile leaves ``sys.modules`` afterwards: the real package, imported
when ComfyUI loads the pack later in the same session, is never the bare one.
"""

from __future__ import annotations

import contextlib
import pathlib
import sys
import types

PACK_DIR = pathlib.Path(__file__).resolve().parent.parent


@contextlib.contextmanager
def bare_packages(*names: str):
    """Register ``names`` (``zsvr.nodes.adapters``, ...) as bare packages for the block.

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
