"""Real-host test harness: runs API-format prompts through ComfyUI's own executor.

Finding the host: ``COMFYUI_PATH`` (a ComfyUI checkout), or the pack being
installed as ``ComfyUI/custom_nodes/<pack>``. Without one, every test that asks
for the ``host`` fixture is skipped with one line saying how to enable it, and
the terminal summary says how many host tests ran and were skipped.

Why in-process rather than a server on 127.0.0.1: the server's /prompt handler
does nothing but ``execution.validate_prompt`` followed by
``execution.PromptExecutor.execute`` on a worker thread; calling those two
directly exercises the same validation, caching, progress and interrupt code,
and the same pack-loading function (``nodes.load_custom_node``), while a prompt
costs about 0.1 s instead of 0.4-0.9 s over HTTP and the server's 5-8 s
start-up is avoided (figures measured on this 2-core machine, see
shared/HOST_NOTES.md). In-process also lets a test read the tensors a node
produced through the test-only ``ZSVRTest_Capture`` node.

The boot itself is the pack's own (``headless/comfy_boot.py``, shared with
``run_workflow.py`` and the benches); this harness adds the tiny models, the
realrain clips, the test-only nodes and a progress recorder that can interrupt.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import os
import pathlib
import shutil

import pytest

PACK_DIR = pathlib.Path(__file__).resolve().parent.parent
TESTS_DIR = pathlib.Path(__file__).resolve().parent
SHARED_DIR = pathlib.Path(os.environ.get("ZSVR_SHARED", PACK_DIR.parent / "shared"))
REALRAIN_DIR = SHARED_DIR / "data" / "realrain"

SKIP_LINE = (
    "ComfyUI not found: host tests skipped (set COMFYUI_PATH to a ComfyUI checkout, "
    "or install the pack in ComfyUI/custom_nodes, to run them)"
)


def _is_comfyui(path: pathlib.Path) -> bool:
    return (path / "nodes.py").is_file() and (path / "comfy").is_dir()


def pack_locations(pack_dir: pathlib.Path = PACK_DIR) -> list[pathlib.Path]:
    """The pack's folder as the user reached it, then as it really is.

    A pack linked into ``ComfyUI/custom_nodes`` (``ln -s ~/src/comfyui-zsvr custom_nodes/``) resolves to its
    source folder, which is not inside ``custom_nodes``; the shell's ``PWD`` (run from the pack's folder, or a
    folder below it, through the link) and this file's unresolved path still show where ComfyUI loads it from.
    """
    found: list[pathlib.Path] = []
    pwd = os.environ.get("PWD")
    if pwd:
        for folder in (pathlib.Path(pwd), *pathlib.Path(pwd).parents):
            try:
                if folder.resolve() == pack_dir:
                    found.append(folder)
                    break
            except OSError:
                break
    found.append(pathlib.Path(os.path.abspath(__file__)).parent.parent)
    found.append(pack_dir)
    return list(dict.fromkeys(found))


def find_comfyui(locations: list[pathlib.Path] | None = None) -> tuple[pathlib.Path | None, str]:
    """Return (ComfyUI directory, reason it was not found).

    ``COMFYUI_PATH`` names a checkout; without it, the ComfyUI whose ``custom_nodes`` holds the pack
    (:func:`pack_locations`, or the given ``locations``) is used.
    """
    locations = pack_locations() if locations is None else locations
    installed = next((p.parent.parent for p in locations
                      if p.parent.name == "custom_nodes" and _is_comfyui(p.parent.parent)), None)
    env = os.environ.get("COMFYUI_PATH")
    if env:
        path = pathlib.Path(env).expanduser().resolve()
        if _is_comfyui(path):
            return path, ""
        hint = (f"; the pack is installed in {installed}, which is found without COMFYUI_PATH: unset it"
                if installed else "")
        return None, f"COMFYUI_PATH={env} is not a ComfyUI checkout (no nodes.py and comfy/): host tests skipped{hint}"
    if installed is not None:
        return installed, ""
    return None, SKIP_LINE


def comfyui_or_skip() -> pathlib.Path:
    """The ComfyUI checkout to run against (:func:`find_comfyui`); skips the calling test or fixture, saying why,
    when there is none."""
    comfy_dir, reason = find_comfyui()
    if comfy_dir is None:
        pytest.skip(reason)
    return comfy_dir


class AnyType(str):
    """A socket type string that validation accepts against any other type."""

    def __ne__(self, other):  # validate_node_input compares with !=
        return False

    __hash__ = str.__hash__


ANY = AnyType("*")


def inject_node(store: dict, category: str = "ZSVR/testing", output=ANY):
    """A node class that outputs ``store[key]``: hands an object made outside the graph (a latent, sigmas, ...)
    to a prompt. ``IS_CHANGED`` follows the object's identity, so a new object under the same key reruns the
    node and everything after it (shared by the harness's ``ZSVRTest_Inject`` and the benches)."""

    class Inject:
        CATEGORY = category
        RETURN_TYPES = (output,)
        FUNCTION = "get"

        @classmethod
        def INPUT_TYPES(cls):
            return {"required": {"key": ("STRING", {"default": ""})}}

        @classmethod
        def IS_CHANGED(cls, key):
            return str(id(store.get(key)))

        def get(self, key):
            return (store[key],)

    return Inject


@functools.lru_cache(maxsize=None)
def _run_result_class():
    from zsvr.headless.comfy_boot import Execution

    @dataclasses.dataclass
    class RunResult(Execution):
        """The host's :class:`Execution` of a prompt plus the progress events it reported."""

        progress: list = dataclasses.field(default_factory=list)

        @property
        def error_message(self) -> str:
            if self.error is not None:
                return self.error.get("exception_message", "")
            if self.validation_error is not None:
                parts = [self.validation_error.get("message", ""), self.validation_error.get("details", "")]
                for node in (self.node_errors or {}).values():
                    for err in node.get("errors", []):
                        parts.append(err.get("details", "") or err.get("message", ""))
                return " | ".join(p for p in parts if p)
            return ""

    return RunResult


class Host:
    """A booted in-process ComfyUI with the pack loaded and tiny models on disk."""

    def __init__(self, comfy_dir: pathlib.Path, work_dir: pathlib.Path):
        self.comfy_dir = comfy_dir
        self.work_dir = work_dir
        self.store: dict[str, object] = {}
        self.captured: dict[str, object] = {}
        self.progress: list[tuple] = []
        self._interrupt_after: int | None = None
        self._boot()

    # -- boot -----------------------------------------------------------------
    def _boot(self) -> None:
        """The pack's own in-process boot (``headless/comfy_boot.py``) on tiny models and the realrain clips.

        ComfyUI boots first (for the CPU, before anything imports ``comfy``); the tiny models, which are built
        by ComfyUI's own model classes, are written into its model folders after.
        """
        from zsvr.headless.comfy_boot import ComfyHost

        self.models_dir = self.work_dir / "models"
        self.input_dir = self.work_dir / "input"
        self.input_dir.mkdir(parents=True, exist_ok=True)
        if REALRAIN_DIR.is_dir():
            for clip in sorted(REALRAIN_DIR.glob("*.mp4")):
                target = self.input_dir / clip.name
                if not target.exists():
                    shutil.copyfile(clip, target)
        kinds = ("diffusion_models", "vae", "checkpoints", "text_encoders", "controlnet", "diffusers")
        self.comfy = ComfyHost(self.comfy_dir, cpu=True, output_dir=self.work_dir / "output",
                               input_dir=self.input_dir, temp_dir=self.work_dir / "temp",
                               model_folders=[(kind, self.models_dir / kind) for kind in kinds], client_id="pytest")
        self.models = _tiny_models(self.models_dir)
        self.nodes = self.comfy.nodes
        self.execution = self.comfy.execution
        self.model_management = self.comfy.model_management
        self.pack = self.comfy.pack
        self.server = self.comfy.server
        self.executor = self.comfy.executor
        self.comfy.progress_listener = self._on_progress
        self._register_test_nodes()

    def _on_progress(self, node_id, value, total):
        self.progress.append((node_id, value, total))
        if self._interrupt_after is not None and len(self.progress) >= self._interrupt_after:
            self.nodes.interrupt_processing(True)

    def _register_test_nodes(self) -> None:
        from random_conditioning import RandomConditioning

        host = self
        Inject = inject_node(host.store)

        class Capture:
            """Stores its input in ``host.captured[key]`` so a test can read what a node produced."""

            CATEGORY = "ZSVR/testing"
            RETURN_TYPES = ()
            FUNCTION = "put"
            OUTPUT_NODE = True

            @classmethod
            def INPUT_TYPES(cls):
                return {"required": {"value": (ANY, {}), "key": ("STRING", {"default": "out"})}}

            def put(self, value, key):
                host.captured[key] = value
                return {}

        for name, cls in {
            "ZSVRTest_RandomConditioning": RandomConditioning,
            "ZSVRTest_Inject": Inject,
            "ZSVRTest_Capture": Capture,
        }.items():
            self.nodes.NODE_CLASS_MAPPINGS[name] = cls

    # -- running prompts ------------------------------------------------------
    def zsvr_node_ids(self) -> list[str]:
        return sorted(k for k in self.nodes.NODE_CLASS_MAPPINGS if k.startswith("ZSVR_"))

    def execution_validate(self, prompt: dict):
        """The host's own prompt validation: (ok, error, outputs, node_errors)."""
        return self.comfy.validate(prompt)

    def run(self, prompt: dict, interrupt_after_progress: int | None = None):
        """Validate and execute an API-format prompt; never raises for a node's error."""
        self.progress = []
        self._interrupt_after = interrupt_after_progress
        try:
            done = self.comfy.execute(prompt)
        finally:
            self._interrupt_after = None
        fields = {f.name: getattr(done, f.name) for f in dataclasses.fields(done)}
        return _run_result_class()(**fields, progress=list(self.progress))


# -- prompt pieces shared by the host tests ---------------------------------------
def run_samples(host: Host, prompt: dict, key: str):
    """Run ``prompt``, which must succeed, and return what its ``ZSVRTest_Capture`` stored under ``key``: a
    latent's ``samples`` tensor, or the captured value itself when it is not a latent dict."""
    result = host.run(prompt)
    assert result.success, result.error_message
    value = host.captured[key]
    return value["samples"] if isinstance(value, dict) else value


def rel_error(a, b) -> float:
    """The relative error ``||a - b|| / ||b||`` of tensor ``a`` against the reference ``b``."""
    return float((a - b).norm() / b.norm())


def input_error(host: Host) -> type:
    """The pack's ``InputError`` class as ComfyUI loaded it (the pack's module name there differs from ``zsvr``)."""
    import sys

    return sys.modules[host.pack.__name__ + ".nodes.errors"].InputError


def inject(host: Host, prompt: dict, key: str, value) -> list:
    """Hand ``value`` (made outside the graph) to ``prompt`` as the ``ZSVRTest_Inject`` node ``key``; returns the
    reference to its output, ``[key, 0]``."""
    host.store[key] = value
    prompt[key] = {"class_type": "ZSVRTest_Inject", "inputs": {"key": key}}
    return [key, 0]


def sd15_sampling_inputs(host: Host, *, model: str | None = None, latent_key: str = "lat", capture: str = "out",
                         neg_tokens: int = 6) -> dict:
    """The nodes a sampling prompt on the tiny SD1.5 U-Net starts from: the model "m" (its ``UNETLoader``, or
    the model injected from ``host.store[model]``), random CLIP-L-wide conditionings "pos" (seed 1, 6 tokens)
    and "neg" (seed 2, ``neg_tokens`` tokens), the latent "lat" injected from ``host.store[latent_key]``, and
    "cap", the capture under ``capture`` of the output of the sampler "smp" (:func:`add_sampling` adds it)."""
    return {
        "m": ({"class_type": "UNETLoader",
               "inputs": {"unet_name": host.models["sd15"].name, "weight_dtype": "default"}}
              if model is None else {"class_type": "ZSVRTest_Inject", "inputs": {"key": model}}),
        "pos": {"class_type": "ZSVRTest_RandomConditioning",
                "inputs": {"seed": 1, "tokens": 6, "width": 768, "scale": 1.0}},
        "neg": {"class_type": "ZSVRTest_RandomConditioning",
                "inputs": {"seed": 2, "tokens": neg_tokens, "width": 768, "scale": 1.0}},
        "lat": {"class_type": "ZSVRTest_Inject", "inputs": {"key": latent_key}},
        "cap": {"class_type": "ZSVRTest_Capture", "inputs": {"value": ["smp", 0], "key": capture}},
    }


def add_sampling(prompt: dict, *, model: list, noise: list, sampler: list, steps: int, denoise: float, cfg: float,
                 positive: list | None = None, negative: list | None = None) -> dict:
    """Complete a sampling prompt: the schedule "sig" (``BasicScheduler``, normal, ``steps``, ``denoise``) and the
    guider "gd" (``CFGGuider``, ``cfg``, on ``positive`` and ``negative``: the "pos" and "neg" nodes unless given),
    both on ``model``, and the sampler "smp" (``SamplerCustomAdvanced``) on ``noise``, ``sampler`` and the latent
    "lat". Each node argument is a ``[node id, output slot]`` reference. Returns ``prompt``."""
    prompt["sig"] = {"class_type": "BasicScheduler", "inputs": {"model": model, "scheduler": "normal", "steps": steps,
                                                                "denoise": denoise}}
    prompt["gd"] = {"class_type": "CFGGuider", "inputs": {"model": model, "positive": positive or ["pos", 0],
                                                          "negative": negative or ["neg", 0], "cfg": cfg}}
    prompt["smp"] = {"class_type": "SamplerCustomAdvanced", "inputs": {
        "noise": noise, "guider": ["gd", 0], "sampler": sampler, "sigmas": ["sig", 0], "latent_image": ["lat", 0]}}
    return prompt


def _tiny_models(models_dir: pathlib.Path) -> dict[str, pathlib.Path]:
    """Write the tiny models into ``models_dir`` (ComfyUI must be booted: they are built by its model classes).

    They are generated afresh for every session (a few seconds), so a run never depends on files an earlier
    one left behind. ``$ZSVR_TEST_CACHE``, when set, names a folder where a developer keeps them between
    runs, keyed by this generator's source and the ComfyUI version.
    """
    import tiny_models

    _write_cached(models_dir, "tiny-models", tiny_models.write_all)
    return {
        "wan": models_dir / "diffusion_models" / tiny_models.WAN_FILE,
        "wan_low": models_dir / "diffusion_models" / tiny_models.WAN_LOW_NOISE_FILE,
        "sd15": models_dir / "diffusion_models" / tiny_models.SD15_FILE,
        "hunyuan": models_dir / "diffusion_models" / tiny_models.HUNYUAN_FILE,
        "taesd": models_dir / "vae" / tiny_models.TAESD_FILE,
        "wan_vae": models_dir / "vae" / tiny_models.WAN_VAE_FILE,
        "sd15_ckpt": models_dir / "checkpoints" / tiny_models.SD15_CKPT_FILE,
        "controlnet_sd15": models_dir / "controlnet" / tiny_models.CONTROLNET_SD15_FILE,
    }


def _write_cached(models_dir: pathlib.Path, tag: str, write) -> None:
    """``write(folder)`` into ``models_dir``, through the developer's cache ``$ZSVR_TEST_CACHE`` when it is set
    (keyed by ``tag``, this generator's source and the ComfyUI version)."""
    import comfyui_version

    cache_root = os.environ.get("ZSVR_TEST_CACHE")
    if not cache_root:
        write(models_dir)
        return
    source = (TESTS_DIR / "tiny_models.py").read_bytes() + comfyui_version.__version__.encode()
    cache = pathlib.Path(cache_root) / f"{tag}-{hashlib.sha256(source).hexdigest()[:16]}"
    if not (cache / "done").is_file():
        tmp = cache.with_name(cache.name + f".tmp{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        write(tmp)
        (tmp / "done").write_text("ok")
        shutil.rmtree(cache, ignore_errors=True)
        tmp.rename(cache)
    shutil.copytree(cache, models_dir, dirs_exist_ok=True, ignore=shutil.ignore_patterns("done"),
                    copy_function=os.link if _same_fs(cache, models_dir) else shutil.copy2)


def wan22_models(host: "Host") -> dict[str, pathlib.Path]:
    """The tiny Wan 2.2 5B model and the random Wan 2.2 VAE in the host's model folders, written on first use
    (1.4 GB: only the Wan 2.2 tests need them); also added to ``host.models``."""
    import tiny_models

    paths = {"wan22": host.models_dir / "diffusion_models" / tiny_models.WAN22_FILE,
             "wan22_vae": host.models_dir / "vae" / tiny_models.WAN22_VAE_FILE}
    if not all(p.is_file() for p in paths.values()):
        _write_cached(host.models_dir, "wan22-models", tiny_models.write_wan22)
    host.models.update(paths)
    return paths


def _same_fs(a: pathlib.Path, b: pathlib.Path) -> bool:
    b.parent.mkdir(parents=True, exist_ok=True)
    return os.stat(a).st_dev == os.stat(b.parent).st_dev


# -- pytest plumbing --------------------------------------------------------------
_HOST: Host | None = None
_HOST_FAILURE: str | None = None
_HOST_OUTCOMES = {"passed": 0, "failed": 0, "skipped": 0}
_HOST_ITEMS: set[str] = set()


def pytest_configure(config):
    config.addinivalue_line("markers", "host: needs a real ComfyUI (the `host` fixture)")


def pytest_collection_modifyitems(session, config, items):
    for item in items:
        if "host" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.host)
            _HOST_ITEMS.add(item.nodeid)


def pytest_runtest_logreport(report):
    if report.nodeid not in _HOST_ITEMS:
        return
    if report.when == "call":
        _HOST_OUTCOMES["passed" if report.passed else "failed"] += 1
    elif report.skipped:
        _HOST_OUTCOMES["skipped"] += 1
    elif report.failed:
        _HOST_OUTCOMES["failed"] += 1


def pytest_terminal_summary(terminalreporter):
    ran = _HOST_OUTCOMES["passed"] + _HOST_OUTCOMES["failed"]
    comfy_dir, reason = find_comfyui()
    where = f"ComfyUI at {comfy_dir}" if comfy_dir else reason
    terminalreporter.write_line(
        f"ZSVR host tests: {ran} ran ({_HOST_OUTCOMES['passed']} passed, {_HOST_OUTCOMES['failed']} failed), "
        f"{_HOST_OUTCOMES['skipped']} skipped; {where}"
    )


@pytest.fixture(scope="session")
def host(tmp_path_factory) -> Host:
    """The booted in-process ComfyUI (session-wide: one executor, so its cache spans tests)."""
    global _HOST, _HOST_FAILURE
    comfy_dir = comfyui_or_skip()
    if _HOST_FAILURE is not None:
        pytest.fail(_HOST_FAILURE)
    if _HOST is None:
        try:
            _HOST = Host(comfy_dir, tmp_path_factory.mktemp("comfy"))
        except Exception as exc:  # a broken host install fails loudly, once
            _HOST_FAILURE = f"booting ComfyUI at {comfy_dir} failed: {exc!r}"
            raise
    return _HOST


@pytest.fixture(scope="session")
def runner():
    """The pack's runner module (``run_workflow.py``), for the tests that drive ``run_batch`` on the booted host."""
    from zsvr import run_workflow

    return run_workflow
