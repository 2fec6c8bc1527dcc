"""Real-browser check: each shipped workflow opens in ComfyUI's web page without missing-node or widget errors.

Serves ComfyUI (with its installed ``comfyui-frontend-package``) and the pack on
127.0.0.1, opens each workflow in headless Chromium (Debian's ``chromium``,
driven by the ``playwright`` Python package with ``executable_path``; no
browser download), and asserts that every node type is registered, no node is
marked in error, no error dialog is open, and that the frontend's own
``graphToPrompt`` gives exactly the API prompt our converter
(``headless/workflow_format.py``) gives. A screenshot per workflow goes to
``$ZSVR_SCREENSHOT_DIR`` (the README's pictures: ``docs/screenshots``), else to
the test's temporary folder.

Skips with one line when ComfyUI, Chromium or playwright is missing.
"""

from __future__ import annotations

import importlib
import json
import os
import pathlib
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

from host_harness import PACK_DIR, find_comfyui

CHROMIUM = os.environ.get("ZSVR_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
WORKFLOWS = sorted((PACK_DIR / "workflows").glob("*.json"))
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    comfy_dir, reason = find_comfyui()
    if comfy_dir is None:
        pytest.skip(reason)
    if CHROMIUM is None:
        pytest.skip("Chromium not found: browser check skipped (apt-get install chromium, or set ZSVR_CHROMIUM)")
    pytest.importorskip("playwright.sync_api", reason="playwright not installed: browser check skipped")
    base = tmp_path_factory.mktemp("comfy_server")
    (base / "custom_nodes").mkdir()
    (base / "custom_nodes" / "comfyui-zsvr").symlink_to(PACK_DIR)
    port = _free_port()
    log = open(base / "server.log", "w")
    proc = subprocess.Popen(
        [sys.executable, "main.py", "--cpu", "--listen", "127.0.0.1", "--port", str(port), "--disable-auto-launch",
         "--base-directory", str(base), "--database-url", "sqlite:///:memory:", "--disable-api-nodes"],
        cwd=comfy_dir, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 120
        while True:
            try:
                urllib.request.urlopen(url + "/system_stats", timeout=2)
                break
            except OSError:
                if proc.poll() is not None or time.time() > deadline:
                    pytest.fail(f"ComfyUI server did not start; see {base / 'server.log'}")
                time.sleep(0.5)
        yield url
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
        log.close()


@pytest.fixture(scope="module")
def browser(server):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield b
        b.close()


def _open(browser, server, workflow: dict):
    page = browser.new_page(viewport={"width": 2400, "height": 1300})
    page.goto(server + "/", wait_until="networkidle")
    page.wait_for_function("window.app && window.app.graph && window.LiteGraph", timeout=90_000)
    page.keyboard.press("Escape")  # the first-run template browser
    page.wait_for_timeout(300)
    page.evaluate("(wf) => window.app.loadGraphData(wf)", workflow)
    page.wait_for_timeout(800)
    return page


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_workflow_opens_cleanly_in_the_browser(host, server, browser, path, tmp_path):
    workflow = json.loads(path.read_text())
    page = _open(browser, server, workflow)
    try:
        state = page.evaluate("""() => {
            const reg = window.LiteGraph.registered_node_types;
            return window.app.graph._nodes.map(n => ({
                id: n.id, type: n.type, registered: !!reg[n.type], errors: !!n.has_errors,
                widgets: Object.fromEntries((n.widgets || []).filter(w => w.name !== "upload" && w.type !== "button")
                                            .map(w => [w.name, w.value])) }));
        }""")
        assert len(state) == len(workflow["nodes"])
        assert all(n["registered"] for n in state), [n["type"] for n in state if not n["registered"]]
        assert not any(n["errors"] for n in state), [n["type"] for n in state if n["errors"]]
        dialogs = [t for t in page.locator(".p-dialog").all_inner_texts() if t.strip()]
        assert not any("missing" in t.lower() or "error" in t.lower() for t in dialogs), dialogs
        # the widget values the page shows are the ones the file means
        wf_format = importlib.import_module(f"{host.pack.__name__}.headless.workflow_format")
        ours = wf_format.ui_to_api(workflow, lambda t: host.nodes.NODE_CLASS_MAPPINGS[t].INPUT_TYPES()
                                   if t in host.nodes.NODE_CLASS_MAPPINGS else None)
        for node in state:
            if str(node["id"]) not in ours:
                continue
            for name, value in node["widgets"].items():
                if name == "control_after_generate":
                    continue
                assert ours[str(node["id"])]["inputs"].get(name, value) == value or \
                    isinstance(ours[str(node["id"])]["inputs"].get(name), list), (node["type"], name, value)
        # the frontend's own UI->API conversion equals ours
        theirs = page.evaluate("async () => (await window.app.graphToPrompt()).output")
        assert set(theirs) == set(ours)
        for node_id, entry in theirs.items():
            assert entry["class_type"] == ours[node_id]["class_type"]
            assert entry["inputs"] == ours[node_id]["inputs"], (entry["class_type"], entry["inputs"], ours[node_id]["inputs"])
        # a picture of the whole graph for the README
        page.mouse.click(1200, 650)
        page.keyboard.press(".")  # fit view
        page.evaluate("""async () => { try { await window.app.extensionManager.setting.set(
            "LiteGraph.Canvas.LowQualityRenderingZoomThreshold", 0.1) } catch (e) {} }""")
        page.wait_for_timeout(800)
        out_dir = pathlib.Path(os.environ.get("ZSVR_SCREENSHOT_DIR", tmp_path))
        out_dir.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(out_dir / (path.stem + ".png")))
    finally:
        page.close()
