"""A file saved with CRLF line ends says what the same file with LF says: the same values
(multi-line SQL and prompts, so the same cache keys) and the same diagnostics."""

from __future__ import annotations

from pathlib import Path

from conftest import run_ft
from ftlang.compiler import compile_source
from ftlang.lang.parser import parse, read_source

PIPELINE = '''ft 0.1

dataset tasks {
  source = jsonl("tasks.jsonl")
  schema { prompt: str, completion: str }
}

curate clean {
  from = tasks
  sql """SELECT prompt, completion FROM tasks WHERE length(completion) < 40
  AND COLUMN > 1"""
}
'''


def _project(root: Path, name: str, text: str, newline: str) -> Path:
    root.mkdir()
    (root / "tasks.jsonl").write_text('{"prompt": "a", "completion": "b"}\n')
    path = root / name
    path.write_bytes(text.replace("\n", newline).encode())
    return path


def test_crlf_values_equal_lf(tmp_path: Path) -> None:
    text = PIPELINE.replace("COLUMN", "length(prompt)")
    lf = _project(tmp_path / "lf", "p.ft", text, "\n")
    crlf = _project(tmp_path / "crlf", "p.ft", text, "\r\n")
    sql = [compile_source(read_source(p, "p.ft"), str(p), p.parent).nodes["curate.clean"].params["sql"]
           for p in (lf, crlf)]
    assert "\r" not in sql[1] and sql[0] == sql[1]
    assert parse(crlf.read_bytes().decode(), "p.ft").items[1].span == parse(text, "p.ft").items[1].span


def test_crlf_diagnostic_points_where_lf_does(tmp_path: Path) -> None:
    text = PIPELINE.replace("COLUMN", "nosuch")
    outs = []
    for newline, folder in (("\n", "lf"), ("\r\n", "crlf")):
        path = _project(tmp_path / folder, "p.ft", text, newline)
        done = run_ft("check", "p.ft", cwd=path.parent)
        assert done.returncode != 0
        outs.append(done.stdout + done.stderr)
    assert "p.ft:11:7" in outs[0], outs[0]
    assert outs[0] == outs[1]
    assert "\r" not in outs[1]


def test_fmt_keeps_a_crlf_file_crlf(tmp_path: Path) -> None:
    messy = PIPELINE.replace("COLUMN", "length(prompt)").replace("from = tasks", "from   =   tasks")
    path = _project(tmp_path / "p", "p.ft", messy, "\r\n")
    done = run_ft("fmt", "p.ft", cwd=path.parent)
    assert done.returncode == 0 and "reformatted" in done.stdout, done.stdout + done.stderr
    data = path.read_bytes()
    assert b"from = tasks" in data and data.count(b"\n") == data.count(b"\r\n")
    assert run_ft("fmt", "--check", "p.ft", cwd=path.parent).returncode == 0  # canonical now, CRLF kept
