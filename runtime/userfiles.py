"""Writing a file the user named (`ft fmt`'s file, `ft graph -o`, `ft report -o`, `ft launch`).

In:  a path and the bytes to put there.
Out: the file, written all at once (a crash leaves the old file or the new one, never a
     part), a link kept a link (its target is rewritten), the old file's permissions kept;
     and `may_replace`, which says whether a file there is one the same command wrote
     (it carries that command's mark near its start): no command overwrites a file ftlang
     did not write.
"""

from __future__ import annotations

import os
import stat
import struct
import zlib
from pathlib import Path

GRAPH_MARK = b"Written by ft graph"  # in what `ft graph -o` writes
REPORT_MARK = b'<meta name="generator" content="ft report">'  # in what `ft report` writes
LAUNCH_MARK = b"Written by `ft launch"  # the first comment of launch.py's job files


def refusal(name: str, mark: bytes, command: str) -> str | None:
    """Why `command` must not write the file the user named (a line, and a help line for a
    file of someone else's), None when it may: an empty name, a folder that is not there
    (never created), a folder named, a file without `mark`."""
    if not name.strip():
        return "-o needs a file name"
    path = Path(name)
    parent = path.resolve().parent
    if not parent.is_dir():
        return f"cannot write {name}: {'no such folder' if not parent.exists() else 'not a folder'}: {parent}"
    if path.is_dir():
        return f"{name} is a folder; name a file in it"
    if not may_replace(path, mark):
        return f"{name} exists and was not written by {command}; not overwritten\n" \
            "  = help: name a new file, or move that one aside"
    return None


def replace(path: Path, data: bytes) -> None:
    target = path.resolve()
    tmp = target.with_name(f".{target.name}.ft-{os.getpid()}")
    try:
        try:
            tmp.write_bytes(data)
        except OSError as exc:  # name the user's file, not the temporary one beside it
            raise type(exc)(exc.errno, exc.strerror, str(path)) from None
        if target.exists():
            os.chmod(tmp, stat.S_IMODE(os.stat(target).st_mode))
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


def may_replace(path: Path, mark: bytes) -> bool:
    """True when nothing is at `path`, or a file whose first 512 bytes hold `mark`."""
    if not (path.is_symlink() or path.exists()):
        return True
    try:
        with path.open("rb") as f:
            return mark in f.read(512)
    except OSError:  # a dangling link, a folder, no permission: not ours to replace
        return False


# The comment each text format carries GRAPH_MARK in, on the line after its first.
GRAPH_COMMENTS = {"svg": b"<!-- %s -->", "mermaid": b"%%%% %s", "dot": b"  // %s"}


def mark_graph(data: bytes, fmt: str) -> bytes:
    """A graph with GRAPH_MARK near its start: a comment after the first line (SVG, mermaid,
    DOT), or a PNG tEXt chunk right after the header chunk."""
    if fmt in GRAPH_COMMENTS:
        cut = data.find(b"\n") + 1
        return data[:cut] + GRAPH_COMMENTS[fmt] % GRAPH_MARK + b"\n" + data[cut:]
    chunk = b"tEXt" + b"Software\x00" + GRAPH_MARK
    text = struct.pack(">I", len(chunk) - 4) + chunk + struct.pack(">I", zlib.crc32(chunk))
    return data[:33] + text + data[33:]  # 8 signature bytes, then the 25 of IHDR
