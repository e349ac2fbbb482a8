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


def replace(path: Path, data: bytes) -> None:
    target = path.resolve()
    tmp = target.with_name(f".{target.name}.ft-{os.getpid()}")
    try:
        tmp.write_bytes(data)
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


def mark_graph(data: bytes, fmt: str) -> bytes:
    """dot's SVG or PNG with GRAPH_MARK near its start: an XML comment after the first
    line, or a PNG tEXt chunk right after the header chunk."""
    if fmt == "svg":
        cut = data.find(b"\n") + 1
        return data[:cut] + b"<!-- " + GRAPH_MARK + b" -->\n" + data[cut:]
    chunk = b"tEXt" + b"Software\x00" + GRAPH_MARK
    text = struct.pack(">I", len(chunk) - 4) + chunk + struct.pack(">I", zlib.crc32(chunk))
    return data[:33] + text + data[33:]  # 8 signature bytes, then the 25 of IHDR
