"""A non-editable install carries the board files: build a wheel, install it, load a board.

The wheel is built from a copy of the sources (so no build/ or egg-info lands in the
tree) without build isolation (setuptools is already installed; no network). The
installed copy is imported with `python -S` from another directory, so neither the
editable install in site-packages nor the working tree can supply the files.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
BOARDS = sorted(p.name for p in (REPO / "node" / "boards").glob("*.toml"))


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A wheel of the project, built from a clean copy of its sources."""
    src = tmp_path_factory.mktemp("src")
    skip = shutil.ignore_patterns("__pycache__", "*.egg-info", "*.tflite")
    for name in ("node", "planner"):
        shutil.copytree(REPO / name, src / name, ignore=skip)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, src / name)
    out = tmp_path_factory.mktemp("wheel")
    r = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps",
                        "--no-build-isolation", "-q", str(src), "-w", str(out)],
                       capture_output=True, text=True, timeout=120, cwd=src)
    assert r.returncode == 0, r.stderr
    wheels = list(out.glob("tilefleet-*.whl"))
    assert len(wheels) == 1, wheels
    return wheels[0]


def test_wheel_holds_every_board_file(wheel: Path) -> None:
    assert len(BOARDS) >= 7  # rpi3, rpi4, rpi5, jetson_nano, coral_devboard, edge_server, laptop
    with zipfile.ZipFile(wheel) as z:
        names = set(z.namelist())
    assert {f"node/boards/{b}" for b in BOARDS} <= names
    for b in BOARDS:  # byte for byte the files of the tree
        with zipfile.ZipFile(wheel) as z:
            assert z.read(f"node/boards/{b}") == (REPO / "node" / "boards" / b).read_bytes()


def test_installed_copy_loads_rpi4(wheel: Path, tmp_path: Path) -> None:
    target = tmp_path / "site"
    r = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q",
                        "--no-index", "--target", str(target), str(wheel)],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    code = ("import node.config as c; cfg = c.for_board('rpi4'); "
            "print(c.__file__); print(cfg.source); print(cfg.board.name, cfg.board.cores, "
            "cfg.agent.threads); print(','.join(c.boards()))")
    r = subprocess.run([sys.executable, "-S", "-c", code], capture_output=True, text=True,
                       timeout=60, cwd=elsewhere,
                       env={"PYTHONPATH": str(target), "PATH": "/usr/bin:/bin"})
    assert r.returncode == 0, r.stderr
    module, source, facts, names = r.stdout.splitlines()
    assert Path(module).is_relative_to(target)  # the installed copy, not the tree
    assert Path(source).is_relative_to(target) and source.endswith("node/boards/rpi4.toml")
    assert facts == "rpi4 4 4"
    assert names.split(",") == [b.removesuffix(".toml") for b in BOARDS]
