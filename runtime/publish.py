"""Publishing an export: copying a committed artifact to the user's `to` folder.

The only place ftlang writes outside `.ft/`. It replaces a folder only when that
folder is one ftlang published itself and still holds exactly what it wrote: the
marker file records the digest and every file's sha256, and the folder is re-hashed
against it before anything is moved. Anything else (a user's folder, a file, an
export the user has edited since) is refused with a clear error, never moved.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from pathlib import Path

from ftlang.runtime.hashing import tree_digest, tree_files, walk_files

MARKER = ".ftlang-export"


class PublishError(Exception):
    """Publishing refused or failed; the message says why, the hint what to do."""

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.hint = hint


def read_marker(folder: Path) -> dict | None:
    """What ftlang recorded when it published `folder`, or None if it did not."""
    try:
        text = (folder / MARKER).read_text()
    except OSError:
        return None
    try:
        data = json.loads(text)
    except ValueError:  # the first format: the digest alone on one line
        data = {"digest": text.strip()}
    return data if isinstance(data, dict) and isinstance(data.get("digest"), str) else None


def _holds_what_we_wrote(folder: Path, marker: dict) -> bool:
    files = tree_files(folder)
    files.pop(MARKER, None)
    if "files" in marker:
        return files == marker["files"]
    return tree_digest(files) == marker["digest"]


def _stats(folder: Path) -> dict[str, list[int]]:
    """relative path -> [size, mtime_ns] of every file below `folder` but the marker."""
    return {rel: [(st := full.lstat()).st_size, st.st_mtime_ns]
            for rel, full in walk_files(folder) if rel != MARKER}


def up_to_date(dest: Path, digest: str) -> bool:
    """True when `dest` already holds the export `digest`, exactly as ftlang wrote it.

    Cheap on a no-op rerun: the files' sizes and mtimes against the marker's; only
    when they moved is the folder re-hashed. An export edited since it was published
    is refused (PublishError), never reported as up to date and never replaced.
    """
    marker = read_marker(dest) if dest.is_dir() else None
    if marker is None or marker["digest"] != digest:
        return False
    if marker.get("stat") != _stats(dest):
        check_target(dest)  # re-hashes: raises when the bytes changed, passes when only touched
    return True


def check_target(dest: Path) -> None:
    """Raises PublishError unless `dest` is new, an empty folder, or an untouched export."""
    if dest.is_symlink():
        raise PublishError(f"the export target {dest} is a symbolic link",
                           "point `to` at a real folder path")
    if not dest.exists():
        return
    if not dest.is_dir():
        raise PublishError(f"the export target {dest} exists and is not a folder",
                           "choose a new or empty folder for `to`")
    if not any(dest.iterdir()):
        return
    marker = read_marker(dest)
    if marker is None:
        raise PublishError(f"the export target {dest} is a non-empty folder that ftlang did not write",
                           "choose a new or empty folder for `to`; ftlang never replaces a folder "
                           "it did not publish")
    if not _holds_what_we_wrote(dest, marker):
        raise PublishError(f"the export target {dest} was changed after ftlang published it",
                           "move your changes elsewhere (or delete the folder) and run again")


def publish(src: Path, dest: Path, digest: str, node: str) -> bool:
    """Copies the artifact at `src` to `dest`; False when `dest` already holds it.

    The copy goes to a sibling temp folder (same filesystem) and is swapped in by
    rename, so a reader sees the old export or the new one, never a mix; on any error
    the old export is put back and the temp folder removed.
    """
    if up_to_date(dest, digest):  # a no-op rerun: a stat of each file, no re-hash of a big model
        return False
    check_target(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tag = uuid.uuid4().hex[:8]
    tmp = dest.with_name(f".{dest.name}.tmp-{tag}")
    old = dest.with_name(f".{dest.name}.old-{tag}")
    moved = False
    try:
        shutil.copytree(src, tmp)
        files = tree_files(tmp)
        marker = {"digest": digest, "node": node, "files": files, "stat": _stats(tmp)}
        (tmp / MARKER).write_text(json.dumps(marker, sort_keys=True, indent=1) + "\n")
        if dest.exists():
            os.rename(dest, old)
            moved = True
        os.rename(tmp, dest)
    except BaseException:
        if moved and not dest.exists():
            os.rename(old, dest)
            moved = False
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if moved:
        shutil.rmtree(old, ignore_errors=True)
    return True
