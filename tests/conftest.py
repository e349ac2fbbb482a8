"""Shared test setup: never reach a model hub; keep HF caches inside the test tmp dir."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
if os.environ.get("PYTEST_XDIST_WORKER"):
    # `make test` runs one pytest worker per core: one torch thread each (and in every `ft` they
    # start), or the workers' OpenMP threads oversubscribe the cores and spin-wait on each other.
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    os.environ.setdefault("FT_TORCH_THREADS", "1")

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = Path(__file__).resolve().parent / "fixtures"


def ft_bin() -> list[str]:
    exe = Path(sys.executable).parent / "ft"
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "ftlang"]


@pytest.fixture(autouse=True)
def _hf_home(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HOME", str(tmp_path_factory.getbasetemp() / "hf-home"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def run_ft(*args: str, cwd: Path, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    """Runs the real `ft` command, as a user would."""
    env = dict(os.environ, NO_COLOR="1")
    return subprocess.run([*ft_bin(), *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, env=env)


def copy_tree(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns(".ft", "out", "__pycache__"))
    return dst


def example_files() -> list[Path]:
    """The shipped examples/**/*.ft files (not the `.ft/` cache folders a run leaves)."""
    return sorted(p for p in (ROOT / "examples").rglob("*.ft")
                  if p.is_file() and ".ft" not in p.parent.relative_to(ROOT).parts)
