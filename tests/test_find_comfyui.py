"""The README's test command works where the README installs the pack (issue 16, item 6).

``python -m pytest -q`` run from ``ComfyUI/custom_nodes/comfyui-zsvr`` must find that ComfyUI (a copied pack
and a pack linked into custom_nodes), and CI (no ComfyUI) runs the same command. Host-free: the ComfyUI here is a
fake layout (``nodes.py`` and ``comfy/``), which is all the discovery looks at.
"""

from __future__ import annotations

import os
import pathlib
import shutil
import subprocess
import sys

import pytest

from host_harness import PACK_DIR, find_comfyui
from test_readme_commands import readme_commands


def _fake_comfyui(root: pathlib.Path) -> pathlib.Path:
    comfy = root / "ComfyUI"
    (comfy / "comfy").mkdir(parents=True)
    (comfy / "nodes.py").write_text("# a fake ComfyUI: discovery looks for nodes.py and comfy/\n")
    (comfy / "custom_nodes").mkdir()
    return comfy


def _env(**extra) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "COMFYUI_PATH"}
    env.update(extra)
    return env


def test_copied_pack_finds_the_comfyui_around_it(tmp_path, monkeypatch):
    comfy = _fake_comfyui(tmp_path)
    pack = comfy / "custom_nodes" / "comfyui-zsvr"
    (pack / "tests").mkdir(parents=True)
    shutil.copy(PACK_DIR / "tests" / "host_harness.py", pack / "tests" / "host_harness.py")
    monkeypatch.delenv("COMFYUI_PATH", raising=False)
    assert find_comfyui([pack]) == (comfy, "")
    # the copied harness, run from the copied pack's folder, finds it by itself
    out = subprocess.run([sys.executable, "-c", "import host_harness; print(host_harness.find_comfyui()[0])"],
                         cwd=pack / "tests", env=_env(PWD=str(pack / "tests"), PYTHONPATH=str(pack / "tests")),
                         capture_output=True, text=True, check=True).stdout.strip()
    assert out == str(comfy)


def test_the_old_readme_command_in_that_layout_says_what_to_do(tmp_path, monkeypatch):
    """``COMFYUI_PATH=../ComfyUI`` from the pack's folder points at custom_nodes/ComfyUI: the skip line now says
    the pack's own ComfyUI is found without it."""
    comfy = _fake_comfyui(tmp_path)
    pack = comfy / "custom_nodes" / "comfyui-zsvr"
    pack.mkdir()
    monkeypatch.setenv("COMFYUI_PATH", str(pack / ".." / "ComfyUI"))
    found, reason = find_comfyui([pack])
    assert found is None and f"the pack is installed in {comfy}" in reason and "unset it" in reason


@pytest.mark.skipif(not hasattr(os, "symlink"), reason="no symlinks")
def test_pack_linked_into_custom_nodes_runs_the_readme_command(tmp_path):
    """The README's command, from a pack folder that is a symlink in custom_nodes (a common development setup):
    the summary line names the ComfyUI the pack is installed in. The resolved path of the pack is its source
    folder, outside custom_nodes; the shell's PWD says where the user ran it."""
    comfy = _fake_comfyui(tmp_path)
    link = comfy / "custom_nodes" / "comfyui-zsvr"
    link.symlink_to(PACK_DIR, target_is_directory=True)
    command = readme_commands()[1].split()
    out = subprocess.run([sys.executable, *command[1:], "tests/test_errors.py"], cwd=link,
                         env=_env(PWD=str(link)), capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    assert f"ZSVR host tests: 0 ran (0 passed, 0 failed), 0 skipped; ComfyUI at {comfy}" in out.stdout
