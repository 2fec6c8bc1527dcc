"""The shipped workflow files as files: template names, thumbnails, no saved view, no overlapping boxes.

Needs no ComfyUI (the browser check, ``test_browser_workflows.py``, judges the same files as the page draws them).
"""

from __future__ import annotations

import json
import pathlib
import re

import pytest

PACK_DIR = pathlib.Path(__file__).resolve().parent.parent
WORKFLOWS = sorted((PACK_DIR / "workflows").glob("*.json"))
TITLE_H = 30  # the frontend draws the title bar above a node's pos


def test_workflows_are_shipped():
    assert len(WORKFLOWS) >= 5, WORKFLOWS


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_template_name_and_thumbnail(path):
    # ComfyUI's Templates browser shows the file name as the title and <name>.jpg as the picture;
    # the name must survive a URL and a quoted shell argument
    assert re.fullmatch(r"[A-Za-z0-9 ._()-]+\.json", path.name), path.name
    assert path.stem[:4] in ("ZSVD", "TDM ", "ZVRD"), f"{path.name}: a template name starts with its method"
    thumb = path.with_suffix(".jpg")
    assert thumb.is_file(), f"no thumbnail {thumb.name}"
    data = thumb.read_bytes()
    assert data[:3] == b"\xff\xd8\xff", f"{thumb.name} is not a JPEG"
    assert 10_000 < len(data) < 150_000, (thumb.name, len(data))


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_layout_fits_on_open_and_boxes_do_not_overlap(path):
    workflow = json.loads(path.read_text())
    # no saved view: the page fits the whole graph into the window on open
    assert "ds" not in workflow.get("extra", {}), "a saved view opens wherever it was saved, often under the toolbar"
    boxes = [(n.get("title") or n["type"], n["pos"][0], n["pos"][1] - TITLE_H, n["size"][0], n["size"][1] + TITLE_H)
             for n in workflow["nodes"]]
    clashes = [(a[0], b[0]) for i, a in enumerate(boxes) for b in boxes[i + 1:]
               if a[1] < b[1] + b[3] and b[1] < a[1] + a[3] and a[2] < b[2] + b[4] and b[2] < a[2] + a[4]]
    assert not clashes, clashes
    # room under Load Video for the preview the page adds when a clip is picked
    load = next(n for n in workflow["nodes"] if n["type"] == "ZSVR_LoadVideo")
    below = [b for b in boxes if b[1] < load["pos"][0] + load["size"][0] and load["pos"][0] < b[1] + b[3]
             and b[2] >= load["pos"][1] + load["size"][1]]
    assert all(b[2] >= load["pos"][1] + load["size"][1] + 240 for b in below), below
