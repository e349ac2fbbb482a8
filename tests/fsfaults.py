"""Real filesystem faults for tests: a small tmpfs that fills up, a folder made read-only.

Mounting needs root (CI and the dev machines run as root); elsewhere the tests that need
a mount skip with a message. A read-only folder falls back to chmod for non-root users
(root ignores permission bits, so it needs the mount).
"""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest


def _mount(*args: str) -> bool:
    return subprocess.run(["mount", *args], capture_output=True).returncode == 0


@contextlib.contextmanager
def small_disk(where: Path, size_kb: int) -> Iterator[Path]:
    """A tmpfs of `size_kb` mounted at `where` (created), unmounted afterwards."""
    where.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0 or not _mount("-t", "tmpfs", "-o", f"size={size_kb}k", "tmpfs", str(where)):
        pytest.skip("cannot mount a small tmpfs here (needs root and mount rights)")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], capture_output=True)


def fill(disk: Path, leave_bytes: int) -> Path:
    """Writes a filler file so that about `leave_bytes` stay free; returns it (delete to free)."""
    filler = disk / "filler.bin"
    filler.unlink(missing_ok=True)
    st = os.statvfs(disk)
    free = st.f_bavail * st.f_frsize
    with filler.open("wb") as f:
        remaining = max(0, free - leave_bytes)
        chunk = b"\0" * (1 << 16)
        while remaining > 0:
            try:
                remaining -= f.write(chunk[: min(len(chunk), remaining)])
            except OSError:
                break
    return filler


@contextlib.contextmanager
def read_only(folder: Path) -> Iterator[None]:
    """Makes `folder` read-only for the duration: a read-only bind mount as root, chmod otherwise."""
    if os.geteuid() == 0:
        if not (_mount("--bind", str(folder), str(folder))
                and _mount("-o", "remount,ro,bind", str(folder))):
            subprocess.run(["umount", "-l", str(folder)], capture_output=True)
            pytest.skip("cannot make a read-only bind mount here")
        try:
            yield
        finally:
            subprocess.run(["umount", "-l", str(folder)], capture_output=True)
        return
    modes = {p: p.stat().st_mode for p in [folder, *folder.rglob("*")]}
    for p in modes:
        p.chmod(modes[p] & ~0o222)
    try:
        yield
    finally:
        for p, m in modes.items():
            p.chmod(m)
