"""Simulate the GPU machine's Python packages on this machine: hide every package it does not have.

The device machine (see bench/device/README.md) has Python 3.12 with PyTorch and
a fixed set of packages (``DEVICE_PACKAGES``, read off the workplace's notes on
that image); everything else must travel as wheels. To check here that the
carried wheels suffice, :func:`install` replaces importlib's ``PathFinder`` in
``sys.meta_path`` by a filter that finds a top-level module only when it is

* in the standard library of Python 3.12 (this interpreter's list, less the
  modules 3.12 removed),
* one of ``DEVICE_PACKAGES``, or
* found under an allowed root: the carried wheels' folder
  (``ZSVR_DEVICE_SITE``), ComfyUI's folder (``COMFYUI_PATH``) and this
  repository,

and reports anything else as not installed. Hidden names are listed on
stderr at exit, so a missing wheel shows up as a hidden name that mattered.

It is enabled by ``bench/device/sitecustomize.py`` when ``ZSVR_DEVICE_SIM=1``
(``PYTHONPATH=bench/device:<wheel folder>``), so it is active from interpreter
start. Versions are not simulated: a device package is allowed in whatever
version this machine has.
"""

from __future__ import annotations

import atexit
import importlib.machinery
import os
import sys

# pip names of the device image's packages (the workplace's package list for the 'cuda' image, 2026-11-17)
DEVICE_PACKAGES = """
absl-py accelerate aiofiles aiohappyeyeballs aiohttp aiosignal annotated-doc anyio attrs botorch build certifi
charset-normalizer chex click cloudpickle cmake colorama contourpy coverage cuda-bindings cuda-core cuda-pathfinder
cuda-toolkit cupy-cuda13x cycler cython diffrax e3nn einops equinox etils execnet filelock flatbuffers flax fonttools
formulaic frozenlist fsspec gpytorch grpcio h11 h5py hf-xet httpcore httpx huggingface-hub humanize hypothesis idna
imageio iniconfig interface-meta jax jax-cuda13-pjrt jax-cuda13-plugin jaxlib jaxtyping jinja2 joblib kiwisolver
lazy-loader lightning lightning-utilities linear-operator lineax llvmlite lxml markdown markdown-it-py markupsafe
matplotlib mdurl meson ml-dtypes mpi4py mpmath msgpack multidict multipledispatch mypy-extensions nanobind narwhals
networkx ninja numba numba-cuda numpy numpyro nvidia-ml-py onnx onnx-ir onnxruntime onnxscript opencv-python-headless
optax opt-einsum opt-einsum-fx optimistix orbax-checkpoint packaging pandas pathspec patsy peft pillow pip pluggy
portalocker prometheus-client propcache protobuf psutil pyarrow pybind11 py-cpuinfo pygments pyparsing pyproject-hooks
pyre-extensions pytest pytest-benchmark pytest-cov pytest-mock pytest-timeout pytest-xdist python-dateutil
pytorch-lightning pyyaml regex requests rich sacrebleu safetensors scikit-build-core scikit-image scikit-learn scipy
seaborn sentencepiece sentence-transformers setuptools shellingham simplejson six sortedcontainers statsmodels sympy
tabulate tensorboard tensorboard-data-server tensorstore threadpoolctl tifffile tiktoken timm tokenizers toolz torch
torchaudio torchdiffeq torch-geometric torchmetrics torchvision tqdm transformers treescope triton typer
typing-extensions typing-inspect urllib3 uvloop wadler-lindig werkzeug wheel wrapt xarray xxhash yarl zipp
""".split()

# import names that differ from the pip name (or that a package adds beside its own)
IMPORT_NAMES = {
    "absl-py": ["absl"], "attrs": ["attr", "attrs"], "cuda-bindings": ["cuda"], "cuda-core": ["cuda"],
    "cuda-pathfinder": ["cuda"], "cupy-cuda13x": ["cupy", "cupyx", "cupy_backends"], "hf-xet": ["hf_xet"],
    "huggingface-hub": ["huggingface_hub"], "markdown-it-py": ["markdown_it"], "nvidia-ml-py": ["pynvml"],
    "opencv-python-headless": ["cv2"], "pillow": ["PIL"], "protobuf": ["google"], "py-cpuinfo": ["cpuinfo"],
    "python-dateutil": ["dateutil"], "pyyaml": ["yaml", "_yaml"], "scikit-image": ["skimage"],
    "scikit-learn": ["sklearn"], "setuptools": ["setuptools", "pkg_resources", "_distutils_hack"],
    "torch": ["torch", "torchgen", "functorch"], "pytorch-lightning": ["pytorch_lightning"],
    "lightning-utilities": ["lightning_utilities"], "torch-geometric": ["torch_geometric"],
    "jax-cuda13-pjrt": ["jax_plugins"], "jax-cuda13-plugin": ["jax_cuda13_plugin", "jax_plugins"],
    "tensorboard-data-server": ["tensorboard_data_server"], "pytest": ["pytest", "_pytest", "py"],
    "typing-extensions": ["typing_extensions"], "mypy-extensions": ["mypy_extensions"],
    "sentence-transformers": ["sentence_transformers"], "prometheus-client": ["prometheus_client"],
    "pyproject-hooks": ["pyproject_hooks"], "scikit-build-core": ["scikit_build_core"],
    "opt-einsum-fx": ["opt_einsum_fx"], "orbax-checkpoint": ["orbax"], "pyre-extensions": ["pyre_extensions"],
    "interface-meta": ["interface_meta"], "lazy-loader": ["lazy_loader"], "ml-dtypes": ["ml_dtypes"],
    "onnx-ir": ["onnx_ir"], "typing-inspect": ["typing_inspect"], "wadler-lindig": ["wadler_lindig"],
    "pytest-benchmark": ["pytest_benchmark"], "pytest-cov": ["pytest_cov"], "pytest-mock": ["pytest_mock"],
    "pytest-timeout": ["pytest_timeout"], "pytest-xdist": ["xdist"],
}
# torch's CUDA wheels bring these top-level packages on the device
EXTRA_DEVICE_MODULES = {"nvidia", "triton"}
# this machine's newer versions of device packages import these renamed dependencies (huggingface_hub 2.x:
# httpx2/httpcore2/truststore; the device's huggingface_hub 1.33 uses httpx/httpcore, which it has): allowed as stand-ins
LOCAL_VERSION_STAND_INS = {"httpx2", "httpcore2", "truststore"}
# removed from the standard library in Python 3.12 (the device's version)
REMOVED_IN_312 = {"distutils", "imp", "asynchat", "asyncore", "smtpd"}
STDLIB = os.path.realpath(os.path.dirname(os.__file__))
SITE_DIRS = ("site-packages", "dist-packages")


def device_modules() -> set[str]:
    names = set(EXTRA_DEVICE_MODULES) | LOCAL_VERSION_STAND_INS
    for package in DEVICE_PACKAGES:
        names.update(IMPORT_NAMES.get(package, [package.replace("-", "_")]))
    return names


class DeviceImportBlocker:
    """Stands in for ``importlib.machinery.PathFinder`` in ``sys.meta_path`` and finds nothing the device lacks.

    Returning None (rather than raising) keeps the semantics of a module that is
    not installed: ``importlib.util.find_spec`` probes see None, imports raise
    the usual ``ModuleNotFoundError``.
    """

    def __init__(self, allowed_roots: list[str]):
        self.allowed_roots = [os.path.realpath(r) for r in allowed_roots if r]
        self.allowed_names = device_modules() | (set(sys.stdlib_module_names) - REMOVED_IN_312)
        self.hidden: set[str] = set()

    @staticmethod
    def _places(spec) -> list[str]:
        places = []
        if spec.origin and spec.origin not in ("built-in", "frozen", "namespace"):
            places.append(spec.origin)
        places.extend(spec.submodule_search_locations or [])
        return [os.path.realpath(p) for p in places]

    def _under_allowed_root(self, spec) -> bool:
        for real in self._places(spec):
            if any(real == root or real.startswith(root + os.sep) for root in self.allowed_roots):
                return True
            if real.startswith(STDLIB + os.sep) and not any(part in real for part in SITE_DIRS):
                return True  # private standard-library modules (_sysconfigdata_*, ...)
        return False

    def find_spec(self, name, path=None, target=None):
        spec = importlib.machinery.PathFinder.find_spec(name, path, target)
        if spec is None or path is not None or "." in name or os.sep in name:
            return spec  # submodules follow their package; ComfyUI names packs by path
        if self._under_allowed_root(spec):
            return spec
        if name in self.allowed_names and name not in REMOVED_IN_312:
            return spec
        self.hidden.add(name)
        return None

    def invalidate_caches(self):
        importlib.machinery.PathFinder.invalidate_caches()

    def find_distributions(self, *args, **kwargs):
        # metadata stays visible (a hidden package's metadata alone imports nothing)
        return importlib.machinery.PathFinder.find_distributions(*args, **kwargs)

    def report(self):
        if self.hidden:
            print(f"[device import blocker] hid: {', '.join(sorted(self.hidden))}", file=sys.stderr)


def install() -> DeviceImportBlocker:
    here = os.path.dirname(os.path.abspath(__file__))
    repo = os.path.dirname(os.path.dirname(here))
    roots = [repo, os.environ.get("COMFYUI_PATH", "")]
    roots += [p for p in os.environ.get("ZSVR_DEVICE_SITE", "").split(os.pathsep) if p]
    blocker = DeviceImportBlocker(roots)
    sys.meta_path[:] = [blocker if f is importlib.machinery.PathFinder else f for f in sys.meta_path]
    if blocker not in sys.meta_path:
        raise RuntimeError("device import blocker: importlib's PathFinder is not in sys.meta_path")
    atexit.register(blocker.report)
    return blocker
