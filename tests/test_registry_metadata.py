"""What the ComfyUI Registry reads from ``pyproject.toml`` (``comfy node validate`` runs in ``.ci/run``)."""

from __future__ import annotations

import pathlib
import re

import pytest

tomllib = pytest.importorskip("tomllib")  # Python 3.11+

from host_harness import comfyui_or_skip  # noqa: E402

PACK_DIR = pathlib.Path(__file__).resolve().parent.parent
PYPROJECT = tomllib.loads((PACK_DIR / "pyproject.toml").read_text())


def _requirements() -> list[str]:
    lines = (PACK_DIR / "requirements.txt").read_text().splitlines()
    return [line.split("#")[0].strip() for line in lines if line.split("#")[0].strip()]


def test_the_registry_fields_are_set_and_the_icon_is_in_the_repo():
    comfy = PYPROJECT["tool"]["comfy"]
    assert comfy["PublisherId"] and comfy["DisplayName"]
    icon = re.fullmatch(r"https://raw\.githubusercontent\.com/zsvr/comfyui-zsvr/main/(.+)", comfy["Icon"])
    assert icon and (PACK_DIR / icon.group(1)).is_file(), comfy["Icon"]
    assert re.fullmatch(r">=\d+\.\d+\.\d+", comfy["requires-comfyui"])


def test_the_registry_installs_what_the_readme_installs():
    """ComfyUI-Manager and the README install ``requirements.txt``; the Registry reads ``dependencies``."""
    assert PYPROJECT["project"]["dependencies"] == _requirements()
    assert not any(re.match(r"torch\b|comfyui-frontend-package", dep) for dep in _requirements())


def test_requires_comfyui_admits_the_comfyui_the_tests_run_on():
    comfy_dir = comfyui_or_skip()
    text = (comfy_dir / "comfyui_version.py").read_text()
    found = tuple(int(x) for x in re.search(r'__version__ = "(\d+)\.(\d+)\.(\d+)"', text).groups())
    least = tuple(int(x) for x in PYPROJECT["tool"]["comfy"]["requires-comfyui"].lstrip(">=").split("."))
    assert found >= least, (found, least)
