"""Colour and redrawn lines only where the terminal understands escape codes.

The real `ft` runs with its stderr on a pseudo-terminal (a tty, as a user's shell gives
it); TERM=dumb (an editor's shell buffer, some CI log viewers) gets plain text.
"""

from __future__ import annotations

import os
import pty
import subprocess
from pathlib import Path

import pytest
from conftest import ft_bin

pytestmark = pytest.mark.e2e

BAD = 'ft 0.1\n\ndataset d {\n  source = jsonl("nope.jsonl")\n}\n'
GOOD = 'ft 0.1\n\ndataset d {\n  source = jsonl("d.jsonl")\n}\n'


def on_a_tty(cwd: Path, term: str, *args: str) -> str:
    """What `ft ARGS` wrote to its terminal (stdout and stderr both on the pty)."""
    master, slave = pty.openpty()
    env = {k: v for k, v in os.environ.items() if k not in ("NO_COLOR", "FORCE_COLOR")}
    env["TERM"] = term
    proc = subprocess.Popen([*ft_bin(), *args], cwd=cwd, stdin=subprocess.DEVNULL, stdout=slave,
                            stderr=slave, env=env)
    os.close(slave)
    chunks = []
    while True:
        try:
            data = os.read(master, 65536)
        except OSError:  # EIO: the child closed its end
            break
        if not data:
            break
        chunks.append(data)
    os.close(master)
    assert proc.wait(timeout=300) in (0, 1, 2)
    return b"".join(chunks).decode("utf-8", "replace")


@pytest.fixture
def project(tmp_path: Path) -> Path:
    (tmp_path / "bad.ft").write_text(BAD)
    (tmp_path / "good.ft").write_text(GOOD)
    (tmp_path / "d.jsonl").write_text('{"text": "a"}\n{"text": "b"}\n')
    return tmp_path


def test_a_colour_terminal_gets_colour(project: Path) -> None:
    out = on_a_tty(project, "xterm-256color", "check", "bad.ft")
    assert "FT0111" in out and "\x1b[" in out, out


@pytest.mark.parametrize("args", [("check", "bad.ft"), ("run", "good.ft")])
def test_term_dumb_gets_no_escape_codes(project: Path, args: tuple[str, ...]) -> None:
    out = on_a_tty(project, "dumb", *args)
    assert out.strip() and "\x1b" not in out, repr(out)
    assert "Traceback" not in out
