"""Every `ft` option explains itself, and commands are written as the README writes them."""

from __future__ import annotations

import argparse
from pathlib import Path

from conftest import run_ft
from ftlang.runtime.cli import build_parser
from test_runtime import PIPELINE, write_rows


def test_every_option_and_argument_has_help() -> None:
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    missing = [f"{name} {a.dest}" for name, sp in sub.choices.items() for a in sp._actions
               if not isinstance(a, argparse._HelpAction) and not a.help]
    assert not missing, missing


def test_cache_ls_and_du_as_the_readme_writes_them(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    write_rows(tmp_path / "data" / "tasks.jsonl", 50)
    (tmp_path / "p.ft").write_text(PIPELINE)
    assert run_ft("run", "p.ft", cwd=tmp_path).returncode == 0
    ls = run_ft("cache", "ls", cwd=tmp_path)
    assert ls.returncode == 0 and "curate.clean" in ls.stdout, ls.stderr
    du = run_ft("cache", "du", "p.ft", cwd=tmp_path)
    assert du.returncode == 0 and "total" in du.stdout and "curate" in du.stdout, du.stderr
