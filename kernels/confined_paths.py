"""Names that stay inside the folders they are meant for: the pack's one path check (standard library only).

A ComfyUI server may listen on a network, and the runner takes file names from servers' answers, so every name
that comes from outside (a node's ``video`` input, a server's ``filename`` and ``subfolder``, a manifest's
``file``) is checked here before it is joined onto a folder:

* :func:`check_relative_name`: no NUL, no absolute path, no drive letter, no ``..`` step (and, for a plain file
  name, no folder separator at all);
* :func:`inside`: after following every symbolic link, the path lies in one of the allowed folders (a link that
  leads out is caught here, not by the name check).

Written by hand: ``os.path`` and ``pathlib`` give the pieces (``realpath``, ``commonpath``), not the policy.
"""

from __future__ import annotations

import os
import re

from .errors import ParameterError

_DRIVE = re.compile(r"^[A-Za-z]:")


def check_relative_name(name, parameter: str, folders: bool = True) -> str:
    """Check that ``name`` is a relative name that cannot leave the folder it is joined onto.

    Args:
        name: the name to check (a file name, or with ``folders`` a '/'-separated path below a folder).
        parameter: the caller's parameter name, for the error.
        folders: whether ``name`` may hold subfolders (``a/b.mp4``); when False any separator is refused.

    Returns:
        ``name`` with Windows separators turned into '/'.

    Raises:
        ParameterError: ``name`` is not a string, is empty, holds a NUL byte, is absolute, starts with a drive
            letter, has a ``..`` step, or (``folders`` False) holds a separator.
    """
    if not isinstance(name, str):
        raise ParameterError(parameter, f"is a {type(name).__name__}, not a name", "give a file name")
    fix = "give a name inside the folder (a subfolder is fine), not a path that leads out of it"
    if "\0" in name:
        raise ParameterError(parameter, f"holds a NUL byte: {name!r}", fix)
    text = name.replace("\\", "/")
    if not text.strip():
        raise ParameterError(parameter, "is empty", "give a file name")
    if text.startswith("/") or _DRIVE.match(text) or os.path.isabs(name):
        raise ParameterError(parameter, f"is an absolute path: {name!r}", fix)
    parts = text.split("/")
    if ".." in parts:
        raise ParameterError(parameter, f"steps out of its folder with '..': {name!r}", fix)
    if not folders and len(parts) > 1:
        raise ParameterError(parameter, f"holds a folder separator: {name!r}", "give a plain file name")
    return text


def inside(path, folders) -> bool:
    """Whether ``path``, with every symbolic link followed, lies in one of ``folders`` (also followed).

    Args:
        path: the path to check (need not exist: its existing part is resolved, the rest taken as written).
        folders: the allowed folders.

    Returns:
        True when the resolved path is one of the folders or below one.
    """
    real = os.path.realpath(path)
    for folder in folders:
        root = os.path.realpath(folder)
        try:
            if os.path.commonpath([real, root]) == root:
                return True
        except ValueError:  # different drives on Windows
            continue
    return False
