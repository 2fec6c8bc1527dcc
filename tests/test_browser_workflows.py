"""Real-browser check: each shipped workflow opens in ComfyUI's web page cleanly and reads well.

Serves ComfyUI and the pack on 127.0.0.1 with each of two frontends: ``bundled``
(the ``comfyui-frontend-package`` ComfyUI pins) and ``newest`` (the one users run
after updating it: ``$ZSVR_FRONTEND_ROOT`` names its ``comfyui_frontend_package/static``
folder, served with ComfyUI's ``--front-end-root``; without the variable that
variant skips with one line). The server holds an empty file at each model path
the workflows' Notes name (``checkpoints/<file>.safetensors``), as a user who
followed them has. Each workflow opens in headless Chromium (Debian's
``chromium``, driven by the ``playwright`` Python package with
``executable_path``; no browser download) at 1920x1080, the commonest desktop
screen. It asserts:

* every node type is registered, every model file a loader names is in its list,
  no node is marked in error, no error dialog, toast or "issues found" overlay is
  shown, and the frontend's own ``graphToPrompt`` gives exactly the API prompt our
  converter (``headless/workflow_format.py``) gives;
* on drop (the frontend fits the graph into the window, as the files carry no
  saved view) the zoom is above the frontend's level-of-detail threshold, so
  titles and widgets are drawn; no two node boxes (title bar included) overlap;
  every node box lies inside the canvas and nothing covers it (the top menu, the
  side bar, the minimap, the zoom controls, or another node's preview): the page's
  own ``elementFromPoint`` at a grid of points over each box must hit the canvas or
  one of that node's own widgets; every title fits its node's width;
* the same after a clip is picked in Load Video, when the page adds the video's
  preview and the node grows;
* the pack's templates are listed by the server with a JPEG thumbnail each.

Pictures: with ``$ZSVR_SCREENSHOT_DIR`` set (``docs/screenshots``) each workflow is
saved on drop and after picking a clip, plus ``hero.png`` (the ZSVD nodes of the
Wan workflow, zoomed to 100 %); with ``$ZSVR_THUMBNAIL_DIR`` set (``workflows``)
each workflow's template thumbnail ``<name>.jpg`` is written; both from the
bundled frontend. Otherwise (and for the newest frontend) the screenshots go to
the test's temporary folder.

Skips with one line when ComfyUI, Chromium or playwright is missing.
"""

from __future__ import annotations

import importlib
import json
import re
import os
import pathlib
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request

import pytest

from host_harness import PACK_DIR, comfyui_or_skip

CHROMIUM = os.environ.get("ZSVR_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
WORKFLOWS = sorted((PACK_DIR / "workflows").glob("*.json"))
VIEWPORT = {"width": 1920, "height": 1080}
PICKED_CLIP = "my_rain_clip.mp4"  # put in the server's input folder, so the page can preview it
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# The frontends checked: ComfyUI's bundled one (its pinned comfyui-frontend-package) always; the newest one users
# run when $ZSVR_FRONTEND_ROOT names its static folder (served with ComfyUI's --front-end-root).
FRONTEND_ROOT_VAR = "ZSVR_FRONTEND_ROOT"
NO_NEWEST_FRONTEND = (f"{FRONTEND_ROOT_VAR} not set: newest-frontend browser check skipped (set it to the "
                      "comfyui_frontend_package/static folder of "
                      "`pip install --no-deps --target DIR comfyui-frontend-package`)")
FRONTENDS = ["bundled", pytest.param("newest", marks=() if os.environ.get(FRONTEND_ROOT_VAR)
                                     else pytest.mark.skip(reason=NO_NEWEST_FRONTEND))]

# Model files as the frontend tells them apart (newer frontends flag a loader whose model file is not in its list
# as a missing model: the node in error and an "issues found" overlay), and as each workflow's Note tells users
# where to put them ("checkpoints/<file>.safetensors"). The server gets an empty file at each such place, as a user
# who followed the Notes has them, and the check asserts every loader lists the file its workflow names.
MODEL_EXTENSIONS = ("safetensors", "ckpt", "pt", "pth", "bin", "sft", "onnx", "gguf")
NOTED_MODEL = re.compile(r"\b([a-z_]+)/([\w.+-]+\.(?:%s))\b" % "|".join(MODEL_EXTENSIONS))


def _noted_models() -> set[tuple[str, str]]:
    """(models folder, file name) for each model file the shipped workflows' Notes name."""
    found = set()
    for path in WORKFLOWS:
        for node in json.loads(path.read_text())["nodes"]:
            if node["type"] in ("Note", "MarkdownNote"):
                found.update(NOTED_MODEL.findall(" ".join(str(v) for v in node.get("widgets_values", []))))
    return found


@pytest.fixture(scope="module", params=FRONTENDS)
def frontend(request) -> str:
    return request.param


def _frontend_args(frontend: str) -> list[str]:
    """ComfyUI's command-line options that serve ``frontend``: none for the bundled one."""
    if frontend == "bundled":
        return []
    root = pathlib.Path(os.environ[FRONTEND_ROOT_VAR]).expanduser()
    if not (root / "index.html").is_file():
        pytest.fail(f"{FRONTEND_ROOT_VAR}={root} is not a frontend's static folder (no index.html)")
    return ["--front-end-root", str(root.resolve())]


@pytest.fixture(scope="module")
def server(frontend, tmp_path_factory):
    comfy_dir = comfyui_or_skip()
    if CHROMIUM is None:
        pytest.skip("Chromium not found: browser check skipped (apt-get install chromium, or set ZSVR_CHROMIUM)")
    pytest.importorskip("playwright.sync_api", reason="playwright not installed: browser check skipped")
    front_end = _frontend_args(frontend)
    base = tmp_path_factory.mktemp("comfy_server")
    (base / "custom_nodes").mkdir()
    (base / "custom_nodes" / "comfyui-zsvr").symlink_to(PACK_DIR)
    (base / "input").mkdir()
    for folder, name in _noted_models():
        (base / "models" / folder).mkdir(parents=True, exist_ok=True)
        (base / "models" / folder / name).touch()
    shutil.copy(PACK_DIR / "example_media" / "zsvr_example_rain.mp4", base / "input" / PICKED_CLIP)
    port = _free_port()
    log = open(base / "server.log", "w")
    proc = subprocess.Popen(
        [sys.executable, "main.py", "--cpu", "--listen", "127.0.0.1", "--port", str(port), "--disable-auto-launch",
         "--base-directory", str(base), "--database-url", "sqlite:///:memory:", "--disable-api-nodes", *front_end],
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
        # no first-run template browser over the canvas (the page opens it until the tutorial is marked done)
        urllib.request.urlopen(urllib.request.Request(url + "/settings/Comfy.TutorialCompleted", data=b"true",
                                                      method="POST"), timeout=10)
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


def _slug(path: pathlib.Path) -> str:
    """A file name without spaces for a workflow's pictures."""
    return re.sub(r"[^a-z0-9]+", "_", path.stem.lower()).strip("_")


def _open(browser, server, workflow: dict):
    page = browser.new_page(viewport=VIEWPORT)
    page.goto(server + "/", wait_until="networkidle")
    page.wait_for_function("window.app && window.app.graph && window.LiteGraph", timeout=90_000)
    page.wait_for_timeout(300)
    page.evaluate("(wf) => window.app.loadGraphData(wf)", workflow)
    page.wait_for_timeout(1000)
    return page


# Each node's box on screen (title bar included), what the page's top element is at a grid of points over it,
# and its title's drawn width, in the page's own terms.
LAYOUT_JS = """() => {
    const c = window.app.canvas, LG = window.LiteGraph, el = c.canvas, box = el.getBoundingClientRect();
    c.ctx.save(); c.ctx.font = c.title_text_font;
    const nodes = window.app.graph._nodes.map(n => {
        const g = [n.pos[0], n.pos[1] - LG.NODE_TITLE_HEIGHT, n.size[0], n.size[1] + LG.NODE_TITLE_HEIGHT];
        const tl = c.ds.convertOffsetToCanvas([g[0], g[1]]), br = c.ds.convertOffsetToCanvas([g[0] + g[2], g[1] + g[3]]);
        const s = [box.left + tl[0], box.top + tl[1], box.left + br[0], box.top + br[1]];
        const covered = [];
        for (let i = 0; i <= 6; i++) for (let j = 0; j <= 6; j++) {
            const x = s[0] + 3 + (s[2] - s[0] - 6) * i / 6, y = s[1] + 3 + (s[3] - s[1] - 6) * j / 6;
            const hit = document.elementFromPoint(x, y);
            if (hit === el) continue;
            if (hit) {  // one of this node's own DOM widgets (text box, video preview) is fine
                const r = hit.getBoundingClientRect();
                if (r.left >= s[0] - 2 && r.top >= s[1] - 2 && r.right <= s[2] + 2 && r.bottom <= s[3] + 2) continue;
            }
            covered.push([Math.round(x), Math.round(y), hit ? (hit.tagName + "." + hit.className).slice(0, 80) : "nothing"]);
        }
        return {id: n.id, type: n.type, title: n.title, graph: g, screen: s, covered: covered,
                title_px: c.ctx.measureText(n.title).width, width: n.size[0], height: n.size[1]};
    });
    c.ctx.restore();
    return {scale: c.ds.scale, low_quality: !!c.low_quality, lod_threshold: c._lowQualityZoomThreshold,
            canvas: [box.left, box.top, box.right, box.bottom], nodes: nodes};
}"""


def _overlaps(a, b) -> bool:
    return a[0] < b[0] + b[2] and b[0] < a[0] + a[2] and a[1] < b[1] + b[3] and b[1] < a[1] + a[3]


def _assert_reads_well(layout: dict, when: str) -> None:
    nodes = layout["nodes"]
    assert not layout["low_quality"], \
        f"{when}: zoom {layout['scale']:.2f} is below the page's level-of-detail threshold " \
        f"{layout['lod_threshold']:.2f}: titles and widgets are not drawn"
    pairs = [(a["title"], b["title"]) for i, a in enumerate(nodes) for b in nodes[i + 1:]
             if _overlaps(a["graph"], b["graph"])]
    assert not pairs, f"{when}: node boxes overlap: {pairs}"
    left, top, right, bottom = layout["canvas"]
    outside = [n["title"] for n in nodes
               if n["screen"][0] < left or n["screen"][1] < top or n["screen"][2] > right or n["screen"][3] > bottom]
    assert not outside, f"{when}: nodes outside the visible canvas: {outside}"
    covered = {n["title"]: n["covered"][:3] for n in nodes if n["covered"]}
    assert not covered, f"{when}: nodes covered by something else on the page: {covered}"
    cut = [(n["title"], round(n["title_px"]), n["width"]) for n in nodes if 30 + n["title_px"] + 12 > n["width"]]
    assert not cut, f"{when}: titles wider than their node (title, text px, node width): {cut}"


def _shot(page, out_dir: pathlib.Path, name: str, **kw) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    page.mouse.move(VIEWPORT["width"] // 2, VIEWPORT["height"] - 4)  # no hover highlight or tooltip in the picture
    page.screenshot(path=str(out_dir / name), **kw)


def _zoom_on(page, types: list[str], scale: float, box: tuple[int, int]) -> dict:
    """Centre the view on the nodes of ``types`` (``ZSVR_`` = the pack's nodes but the loader) at ``scale``;
    returns a screen clip (x, y, width, height) of size ``box`` around them."""
    return page.evaluate("""([types, scale, w, h]) => {
        const c = window.app.canvas, LG = window.LiteGraph, r = c.canvas.getBoundingClientRect();
        const ns = window.app.graph._nodes.filter(n => types.includes(n.type) ||
            (types.includes("ZSVR_") && n.type.startsWith("ZSVR_") && n.type !== "ZSVR_LoadVideo"));
        const x0 = Math.min(...ns.map(n => n.pos[0])), y0 = Math.min(...ns.map(n => n.pos[1] - LG.NODE_TITLE_HEIGHT));
        const x1 = Math.max(...ns.map(n => n.pos[0] + n.size[0])), y1 = Math.max(...ns.map(n => n.pos[1] + n.size[1]));
        c.ds.scale = scale;
        const cx = (x0 + x1) / 2, cy = (y0 + y1) / 2;
        c.ds.offset = [r.width / 2 / scale - cx, r.height / 2 / scale - cy];
        c.setDirty(true, true);
        return {x: r.left + r.width / 2 - w / 2, y: r.top + r.height / 2 - h / 2, width: w, height: h};
    }""", [types, scale, box[0], box[1]])


@pytest.fixture(params=WORKFLOWS, ids=lambda p: p.name)
def path(request) -> pathlib.Path:
    """Each shipped workflow (a fixture, not a mark, so the newest frontend's skip folds into one line)."""
    return request.param


def test_workflow_opens_cleanly_and_reads_well(host, frontend, server, browser, path, tmp_path):
    workflow = json.loads(path.read_text())
    page = _open(browser, server, workflow)
    # the committed pictures are the bundled frontend's; the newest one's go to the test's temporary folder
    pictures = frontend == "bundled"
    out_dir = pathlib.Path((os.environ.get("ZSVR_SCREENSHOT_DIR") if pictures else None) or tmp_path)
    try:
        state = page.evaluate("""(extensions) => {
            const reg = window.LiteGraph.registered_node_types;
            const model = new RegExp("[.](" + extensions.join("|") + ")$", "i");
            const listed = (w, n) => {
                const v = w.options && w.options.values;
                const values = typeof v === "function" ? v(w, n) : v;
                return Array.isArray(values) ? values : Object.keys(values || {});
            };
            return window.app.graph._nodes.map(n => ({
                id: n.id, type: n.type, registered: !!reg[n.type], errors: !!n.has_errors,
                widgets: Object.fromEntries((n.widgets || []).filter(w => w.name !== "upload" && w.type !== "button")
                                            .map(w => [w.name, w.value])),
                unlisted_models: (n.widgets || []).filter(w => typeof w.value === "string" && model.test(w.value)
                                                           && !listed(w, n).includes(w.value))
                                                  .map(w => w.name + "=" + w.value) }));
        }""", list(MODEL_EXTENSIONS))
        assert len(state) == len(workflow["nodes"])
        assert all(n["registered"] for n in state), [n["type"] for n in state if not n["registered"]]
        unlisted = {n["type"]: n["unlisted_models"] for n in state if n["unlisted_models"]}
        assert not unlisted, f"model files not listed by their loader, though placed where the Notes say: {unlisted}"
        assert not any(n["errors"] for n in state), [n["type"] for n in state if n["errors"]]
        # error dialogs, toasts, and the newer frontends' "N issues found" overlay
        shown = page.locator(".p-dialog, .p-toast-message, [data-testid=error-overlay]").all_inner_texts()
        dialogs = [t for t in shown if t.strip()]
        assert not any(re.search(r"missing|error|issue", t, re.I) for t in dialogs), dialogs
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

        # on drop: drawn in full, nothing overlapping, hidden or cut off
        _shot(page, out_dir, _slug(path) + ".jpg", type="jpeg", quality=85)
        _assert_reads_well(page.evaluate(LAYOUT_JS), "on drop")

        # after picking a clip: the page adds its preview to Load Video, which grows
        before = page.evaluate("() => window.app.graph._nodes.find(n => n.type === 'ZSVR_LoadVideo').size[1]")
        page.evaluate("""(clip) => {
            const n = window.app.graph._nodes.find(n => n.type === "ZSVR_LoadVideo");
            const w = n.widgets.find(w => w.name === "video");
            w.value = clip; if (w.callback) w.callback(clip, window.app.canvas, n);
        }""", PICKED_CLIP)
        page.wait_for_function("""(h) => {
            const n = window.app.graph._nodes.find(n => n.type === "ZSVR_LoadVideo");
            const v = document.querySelector("video");
            return n.size[1] > h + 50 && v && v.readyState >= 1;
        }""", arg=before, timeout=20_000)
        page.wait_for_timeout(600)
        _shot(page, out_dir, _slug(path) + "_clip_picked.jpg", type="jpeg", quality=85)
        _assert_reads_well(page.evaluate(LAYOUT_JS), f"after picking {PICKED_CLIP}")

        # the template browser's picture: the pack's nodes, close up
        if pictures and os.environ.get("ZSVR_THUMBNAIL_DIR"):
            clip = _zoom_on(page, ["ZSVR_"], 0.85, (640, 640))
            page.wait_for_timeout(400)
            _shot(page, pathlib.Path(os.environ["ZSVR_THUMBNAIL_DIR"]), path.stem + ".jpg", type="jpeg",
                  quality=80, clip=clip)
        if pictures and os.environ.get("ZSVR_SCREENSHOT_DIR") and path.name == WORKFLOWS_HERO:
            clip = _zoom_on(page, ["ZSVR_", "CLIPTextEncode"], 0.9, (1280, 640))
            page.wait_for_timeout(400)
            _shot(page, out_dir, "hero.png", clip=clip)
    finally:
        page.close()


WORKFLOWS_HERO = "ZSVD rain removal - Wan 2.1.json"


def test_templates_are_listed_with_a_thumbnail_each(server, browser):
    """ComfyUI's Templates browser lists the pack's workflows by file name and shows ``<name>.jpg`` beside each."""
    listed = json.loads(urllib.request.urlopen(server + "/workflow_templates", timeout=10).read())
    assert sorted(listed.get("comfyui-zsvr", [])) == sorted(p.stem for p in WORKFLOWS)
    for path in WORKFLOWS:
        url = f"{server}/api/workflow_templates/comfyui-zsvr/{urllib.parse.quote(path.stem)}.jpg"
        with urllib.request.urlopen(url, timeout=10) as reply:
            assert reply.headers["Content-Type"] == "image/jpeg", url
            assert reply.read(3) == b"\xff\xd8\xff", url
