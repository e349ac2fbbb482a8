"""Golden fixtures: tests/fixtures/ok compile; tests/fixtures/err give the exact diagnostics.

Regenerate after an intended change: FT_UPDATE_GOLDEN=1 pytest tests/test_golden.py
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from conftest import FIXTURES
from ftlang.compiler import compile_source
from ftlang.lang.diagnostics import FtError, render_all

OK = sorted((FIXTURES / "ok").glob("*.ft"))
ERR = sorted((FIXTURES / "err").glob("*.ft"))


def diagnostics_text(path: Path) -> str:
    text = path.read_text()
    try:
        program = compile_source(text, path.name, path.parent)
    except FtError as exc:
        return render_all(exc.diagnostics, {path.name: text, **exc.sources}) + "\n"
    return render_all(program.warnings, {path.name: text}) + "\n"


@pytest.mark.parametrize("path", OK, ids=lambda p: p.stem)
def test_ok_fixture_compiles(path: Path) -> None:
    program = compile_source(path.read_text(), path.name, path.parent)
    assert program.nodes


@pytest.mark.parametrize("path", ERR, ids=lambda p: p.stem)
def test_err_fixture_diagnostics(path: Path) -> None:
    got = diagnostics_text(path)
    expected_file = path.with_suffix(".err")
    if os.environ.get("FT_UPDATE_GOLDEN"):
        expected_file.write_text(got)
    assert expected_file.exists(), f"missing {expected_file.name}; run with FT_UPDATE_GOLDEN=1"
    assert got == expected_file.read_text()
    assert ("error[FT" in got or "warning[FT" in got) and "Traceback" not in got


def test_every_error_fixture_has_a_distinct_story() -> None:
    codes = set()
    for path in ERR:
        for line in path.with_suffix(".err").read_text().splitlines():
            if line.startswith("error[FT"):
                codes.add(line[6:12])
    # The fixtures cover most of the compile-time codes documented in lang/diagnostics.py.
    assert len(codes) >= 18, sorted(codes)
