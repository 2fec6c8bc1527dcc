"""The README's two commands, right after Install, work as written (the test command is the one CI runs)."""

from __future__ import annotations

import os
import re
import subprocess
import sys


from host_harness import PACK_DIR

README = (PACK_DIR / "README.md").read_text()


def readme_commands() -> list[str]:
    """The one-line commands of the section that follows Install."""
    sections = re.split(r"^## ", README, flags=re.M)
    names = [section.split("\n", 1)[0].strip() for section in sections]
    following = sections[names.index("Install") + 1]
    assert following.startswith("The two commands"), names
    blocks = re.findall(r"```bash\n(.*?)```", following, flags=re.S)
    assert all(len(block.strip().splitlines()) == 1 for block in blocks), blocks
    return [block.strip() for block in blocks]


def test_the_two_commands_follow_install_and_ci_runs_the_test_command():
    assert readme_commands() == ["python main.py", "python -m pytest -q"]
    ci = (PACK_DIR / ".ci" / "run").read_text()
    assert re.search(r'cd "\$TEST_DIR" && python -m pytest -q\)', ci)


def test_python_main_py_loads_the_pack(host, tmp_path):
    """``python main.py`` from the ComfyUI folder (``--cpu`` here, as the README says for a machine without a GPU)
    loads the pack with no import failure. ``--quick-test-for-ci`` stops it once the nodes are loaded; its
    folders are a temporary base directory holding the pack in ``custom_nodes/``, so nothing is written into the
    ComfyUI checkout."""
    (tmp_path / "custom_nodes").mkdir()
    (tmp_path / "custom_nodes" / "comfyui-zsvr").symlink_to(PACK_DIR)
    command = readme_commands()[0].split() + ["--cpu", "--quick-test-for-ci", "--disable-api-nodes",
                                            "--base-directory", str(tmp_path), "--database-url", "sqlite:///:memory:"]
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    done = subprocess.run([sys.executable, *command[1:]], cwd=host.comfy_dir, env=env, capture_output=True,
                          text=True, timeout=300)
    log = done.stdout + done.stderr
    assert done.returncode == 0, log[-3000:]
    loaded = [line for line in log.splitlines() if line.rstrip().endswith("comfyui-zsvr")]
    assert loaded and all("IMPORT FAILED" not in line for line in loaded), log[-3000:]
