"""The pack has one import name, ``zsvr``, and its folder shadows no top-level module.

The pack's sub-packages are called ``kernels``, ``nodes``, ``headless``, ``tests`` and ``bench``. PyPI has a
``kernels`` (transformers 5 and diffusers import it) and ComfyUI has a top-level ``nodes``: with the pack's
folder on ``sys.path`` they would be the pack's. These tests check that the test run, the runner and the
CogVideoX loader's diffusers import see the real ones, with a stand-in ``kernels`` importable from a
site folder as a new user's machine has PyPI's.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import pathlib
import subprocess
import sys
import textwrap

import pytest

PACK_DIR = pathlib.Path(__file__).resolve().parent.parent
SHADOWABLE = ("kernels", "nodes", "headless", "tests", "bench")


def _inside_pack(origin: str | None) -> bool:
    return origin is not None and pathlib.Path(origin).resolve().is_relative_to(PACK_DIR)


def test_the_pack_is_the_package_zsvr_and_its_folder_is_not_on_sys_path():
    zsvr = sys.modules["zsvr"]
    assert pathlib.Path(zsvr.__file__).resolve() == PACK_DIR / "__init__.py"
    assert [p for p in sys.path if pathlib.Path(p or os.getcwd()).resolve() == PACK_DIR] == []
    for name in SHADOWABLE:
        spec = importlib.util.find_spec(name) if name not in sys.modules else sys.modules[name].__spec__
        assert spec is None or not _inside_pack(spec.origin), f"top-level {name!r} is the pack's: {spec.origin}"
    import zsvr.kernels.errors

    assert zsvr.kernels.errors.__name__ == "zsvr.kernels.errors"


def test_pypi_kernels_and_diffusers_cogvideox_import_beside_the_pack():
    """Where PyPI's ``kernels`` is installed (transformers 5 brings it), it is the one imported, and diffusers'
    CogVideoX classes (``ZSVR_LoadCogVideoX``) import through transformers' use of it."""
    try:
        importlib.metadata.version("kernels")
    except importlib.metadata.PackageNotFoundError:
        pytest.skip("PyPI's kernels is not installed here")
    import kernels

    assert not _inside_pack(kernels.__file__), kernels.__file__
    pytest.importorskip("diffusers")
    from diffusers import AutoencoderKLCogVideoX, CogVideoXTransformer3DModel  # noqa: F401


@pytest.fixture()
def stand_in_site(tmp_path) -> pathlib.Path:
    """A site folder holding top-level ``kernels`` and ``headless`` modules that say they are the stand-ins."""
    site = tmp_path / "site"
    for name in ("kernels", "headless"):
        (site / name).mkdir(parents=True)
        (site / name / "__init__.py").write_text("STAND_IN = True\n")
    return site


def _env(site: pathlib.Path) -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(site), *filter(None, [env.get("PYTHONPATH")])])
    env["ZSVR_STAND_IN_SITE"] = str(site)
    env.pop("COMFYUI_PATH", None)
    return env


PROBE = "tests/test_pack_import.py::test_probe_a_stand_in_kernels_is_the_one_imported"


@pytest.mark.skipif(not os.environ.get("ZSVR_STAND_IN_SITE"), reason="run by the subprocess test below only")
def test_probe_a_stand_in_kernels_is_the_one_imported():
    import headless
    import kernels
    import zsvr.kernels

    assert getattr(kernels, "STAND_IN", False) and getattr(headless, "STAND_IN", False)
    assert zsvr.kernels is not kernels


def test_the_readme_test_command_imports_a_site_kernels_not_the_packs(stand_in_site):
    """``python -m pytest`` from the pack's folder (which Python puts first on ``sys.path``)."""
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", PROBE],
                          cwd=PACK_DIR, env=_env(stand_in_site), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and "1 passed" in done.stdout, done.stdout + done.stderr


def test_the_runner_imports_a_site_kernels_not_the_packs(stand_in_site):
    """``python run_workflow.py`` has the pack's folder first on ``sys.path``; the runner takes it off before it
    imports anything of the pack or of ComfyUI."""
    probe = textwrap.dedent("""
        import runpy, sys
        sys.argv = ["run_workflow.py", "--help"]
        runpy.run_path("run_workflow.py")
        import headless, kernels, zsvr.kernels
        assert kernels.STAND_IN and headless.STAND_IN, (kernels, headless)
        assert zsvr.kernels is not kernels
        print("stand-ins imported")
    """)
    done = subprocess.run([sys.executable, "-c", probe], cwd=PACK_DIR, env=_env(stand_in_site),
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and "stand-ins imported" in done.stdout, done.stdout + done.stderr


def _exec_init(init: pathlib.Path, name: str):
    spec = importlib.util.spec_from_file_location(name, init, submodule_search_locations=[str(init.parent)])
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_comfyuis_module_for_the_folder_joins_the_loaded_pack_and_a_second_copy_is_refused(tmp_path):
    """ComfyUI loads the folder under a path-made name; that module keeps ``zsvr`` as it is (same folder), and
    a copy of the pack in another folder fails to load with a message saying what to do."""
    zsvr = sys.modules["zsvr"]
    same = _exec_init(PACK_DIR / "__init__.py", str(PACK_DIR).replace(".", "_x_"))
    assert sys.modules["zsvr"] is zsvr and same is not zsvr
    other = tmp_path / "custom_nodes" / "comfyui-zsvr-copy"
    other.mkdir(parents=True)
    (other / "__init__.py").write_text((PACK_DIR / "__init__.py").read_text())
    with pytest.raises(ImportError, match=r"two copies of ZSVR are installed: .* Remove or disable one"):
        _exec_init(other / "__init__.py", str(other).replace(".", "_x_"))
    assert sys.modules["zsvr"] is zsvr


def _relative_imports(path: pathlib.Path) -> set[str]:
    """The pack's top-level folders a module imports from (``from ..kernels import x`` -> ``kernels``)."""
    import ast

    found = set()
    package = path.relative_to(PACK_DIR).parts[:-1]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level:
            base = list(package[:len(package) - node.level + 1])
            target = base + (node.module.split(".") if node.module else [])
            if target:
                found.add(target[0])
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
            found.update(n.split(".")[1] for n in names if n.startswith("zsvr.") and "." in n)
    return found


@pytest.mark.parametrize("room, never", [("nodes", {"headless", "bench", "tests"}),
                                         ("kernels", {"nodes", "headless", "bench", "tests"})])
def test_no_upward_import(room, never):
    """``nodes/`` never imports ``headless/``; ``kernels/`` imports neither (nor the tests or benches)."""
    offenders = {str(p.relative_to(PACK_DIR)): sorted(_relative_imports(p) & never)
                 for p in sorted((PACK_DIR / room).rglob("*.py")) if _relative_imports(p) & never}
    assert offenders == {}


def _module_name(path: pathlib.Path) -> str:
    parts = list(path.relative_to(PACK_DIR).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _module_level_imports(path: pathlib.Path, modules: set[str]) -> set[str]:
    """The pack modules ``path`` imports when it is imported (statements at module level)."""
    import ast

    name = _module_name(path)
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    found = set()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.ImportFrom) and node.level:
            base = package[:len(package) - node.level + 1]
            target = ".".join(base + ([node.module] if node.module else []))
            for alias in node.names:  # `from .x import y`: the module x.y, else the module x
                found.update([f"{target}.{alias.name}"] if f"{target}.{alias.name}" in modules else
                             [target] if target in modules else [])
    return found - {name}


def test_no_import_cycle_among_the_packs_modules():
    files = [p for room in ("kernels", "nodes", "headless") for p in (PACK_DIR / room).rglob("*.py")]
    modules = {_module_name(p) for p in files}
    graph = {_module_name(p): _module_level_imports(p, modules) for p in files}
    cycles, state = [], {}

    def visit(node, trail):
        state[node] = "open"
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == "open":
                cycles.append(trail[trail.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt, trail + [nxt])
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    assert sum(len(v) for v in graph.values()) > 50  # the graph was read
    assert cycles == []
