"""A file the user names after -o is replaced only when the same command wrote it: `ft graph
-o` (through a stand-in `dot` on PATH: what is tested is the write, not Graphviz) and the
marks it leaves in SVG and PNG output. `ft report -o` is tests/test_report.py's."""

from __future__ import annotations

import os
import struct
import subprocess
import sys
import zlib
from pathlib import Path

from conftest import ft_bin

FAKE_DOT = f'''#!{sys.executable}
import struct, sys, zlib
sys.stdin.read()
if sys.argv[1] == "-Tsvg":
    sys.stdout.write('<?xml version="1.0"?>\\n<svg xmlns="http://www.w3.org/2000/svg"></svg>\\n')
else:
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", 1, 1, 8, 0, 0, 0, 0)
    png = b"\\x89PNG\\r\\n\\x1a\\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\\x00\\x00")) + chunk(b"IEND", b"")
    sys.stdout.buffer.write(png)
'''

PIPELINE = 'ft 0.1\ndataset d {\n  source = jsonl("d.jsonl")\n}\n'


def graph(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, NO_COLOR="1", PATH=f"{root / 'bin'}{os.pathsep}{os.environ['PATH']}")
    return subprocess.run([*ft_bin(), "graph", "p.ft", *args], cwd=root, capture_output=True, text=True,
                          timeout=300, env=env)


def project(root: Path) -> Path:
    (root / "bin").mkdir()
    dot = root / "bin" / "dot"
    dot.write_text(FAKE_DOT)
    dot.chmod(0o755)
    (root / "p.ft").write_text(PIPELINE)
    (root / "d.jsonl").write_text('{"text": "a"}\n')
    return root


def png_chunks(data: bytes) -> list[tuple[bytes, bytes]]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    out, at = [], 8
    while at < len(data):
        (n,) = struct.unpack(">I", data[at:at + 4])
        kind, body = data[at + 4:at + 8], data[at + 8:at + 8 + n]
        assert struct.unpack(">I", data[at + 8 + n:at + 12 + n])[0] == zlib.crc32(kind + body)
        out.append((kind, body))
        at += 12 + n
    return out


def test_graph_o_writes_marked_files_and_replaces_only_its_own(tmp_path: Path) -> None:
    root = project(tmp_path)
    assert graph(root, "--format", "svg", "-o", "g.svg").returncode == 0
    svg = (root / "g.svg").read_bytes()
    assert svg.startswith(b'<?xml version="1.0"?>\n<!-- Written by ft graph -->\n<svg')
    assert graph(root, "--format", "svg", "-o", "g.svg").returncode == 0  # its own: replaced
    assert graph(root, "--format", "png", "-o", "g.png").returncode == 0
    chunks = png_chunks((root / "g.png").read_bytes())  # every CRC checked: still a valid PNG
    assert [k for k, _ in chunks] == [b"IHDR", b"tEXt", b"IDAT", b"IEND"]
    assert chunks[1][1] == b"Software\x00Written by ft graph"
    thesis = root / "thesis.png"
    thesis.write_bytes(b"\x89PNG\r\n\x1a\nyears of work")
    out = graph(root, "--format", "png", "-o", "thesis.png")
    assert out.returncode == 1 and "was not written by ft graph; not overwritten" in out.stderr
    assert thesis.read_bytes() == b"\x89PNG\r\n\x1a\nyears of work"
    assert sorted(p.name for p in root.iterdir()) == ["bin", "d.jsonl", "g.png", "g.svg", "p.ft", "thesis.png"]
