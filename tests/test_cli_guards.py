"""What `ft` does with inputs it must refuse: a foreign ft.lock, a named pipe as the .ft file,
a path that is not a .ft file, negative counts and empty run refs, a wrong-shaped ledger
journal line, -o for text graphs and a report -o whose folder is missing. Each is one clear
error (never a traceback, never "internal error"), and nothing ftlang did not write is
replaced, deleted or created."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from conftest import run_ft

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"

PIPELINE = 'ft 0.1\ndataset d {\n  source = jsonl("d.jsonl")\n  schema { text: str }\n}\n'


def _project(root: Path) -> Path:
    (root / "p.ft").write_text(PIPELINE)
    (root / "d.jsonl").write_text('{"text": "a"}\n{"text": "b"}\n')
    return root


@pytest.fixture
def ran(tmp_path: Path) -> Path:
    """A project with two recorded runs."""
    root = _project(tmp_path)
    for _ in range(2):
        out = run_ft("run", "p.ft", cwd=root)
        assert out.returncode == 0, out.stderr
    return root


def _one_clear_error(err: str) -> None:
    assert "Traceback" not in err and "internal error" not in err, err
    assert err.startswith("error: ") or ": error: " in err, err


# ---- 1. ft.lock ---------------------------------------------------------------------

@pytest.mark.parametrize("text", ["my notes\n", "[1,2]\n", '{"p.ft": 5}\n', "", '{"p.ft": {"nodes": []}}'])
@pytest.mark.parametrize("locked", [False, True])
def test_a_foreign_ft_lock_is_never_replaced(tmp_path: Path, text: str, locked: bool) -> None:
    root = _project(tmp_path)
    (root / "ft.lock").write_text(text)
    out = run_ft("run", "p.ft", *(["--locked"] if locked else []), cwd=root)
    assert out.returncode == 1
    _one_clear_error(out.stderr)
    assert "ft.lock is not an ftlang lock" in out.stderr and "move it aside" in out.stderr
    assert (root / "ft.lock").read_text() == text
    assert [p.name for p in root.iterdir() if p.name.startswith(".ft.lock")] == []


def test_ft_lock_is_still_written_and_kept_up_to_date(tmp_path: Path) -> None:
    root = _project(tmp_path)
    assert run_ft("run", "p.ft", cwd=root).returncode == 0
    lock = json.loads((root / "ft.lock").read_text())
    assert set(lock) == {"p.ft"} and "dataset.d" in lock["p.ft"]["nodes"]
    (root / "q.ft").write_text(PIPELINE)
    assert run_ft("run", "q.ft", cwd=root).returncode == 0  # a second file's section is added
    assert set(json.loads((root / "ft.lock").read_text())) == {"p.ft", "q.ft"}
    assert run_ft("run", "p.ft", "--locked", cwd=root).returncode == 0
    assert sorted(p.name for p in root.iterdir() if "lock" in p.name) == ["ft.lock"]  # no temp left


# ---- 2. a named pipe as the .ft file ----------------------------------------------------

@pytest.mark.parametrize("command", ["check", "run", "plan", "status", "graph"])
def test_a_named_pipe_as_the_ft_file_is_an_error_not_a_hang(tmp_path: Path, command: str) -> None:
    os.mkfifo(tmp_path / "fifo.ft")
    out = run_ft(command, "fifo.ft", cwd=tmp_path, timeout=60)  # a hang raises TimeoutExpired
    assert out.returncode == 2 and "FT0131" in out.stderr and "Traceback" not in out.stderr


# ---- 3. a path that is not a .ft file ---------------------------------------------------

@pytest.mark.parametrize("args", [
    ("verify", "--repair", "{nonexist}/x.ft"), ("verify", "nonexist.ft"), ("verify", "somedir"),
    ("verify", "/dev/null"), ("runs", "nonexist.ft"), ("show", "nonexist.ft"), ("diff", "nonexist.ft", "last"),
    ("cache", "du", "/etc/passwd"), ("cache", "ls", "somedir"), ("checkpoints", "fifo.ft", "train.t"),
])
def test_cache_and_ledger_commands_need_a_regular_ft_file(tmp_path: Path, args: tuple[str, ...]) -> None:
    (tmp_path / "somedir").mkdir()
    os.mkfifo(tmp_path / "fifo.ft")
    nonexist = tmp_path / "nonexist"
    out = run_ft(*(a.format(nonexist=nonexist) for a in args), cwd=tmp_path, timeout=60)
    assert out.returncode == 2 and out.stdout == "", out.stdout
    _one_clear_error(out.stderr)
    assert len(out.stderr.strip().splitlines()) == 1, out.stderr
    assert not nonexist.exists() and not (tmp_path / ".ft").exists()  # no folder created


# ---- 4. negative counts, empty refs -----------------------------------------------------

@pytest.mark.parametrize("args", [
    ("gc", "p.ft", "--keep-runs", "-1"), ("show", "p.ft", "last~-1"), ("runs", "p.ft", "--limit", "0"),
    ("runs", "p.ft", "--limit", "-5"), ("show", "p.ft", ""), ("diff", "p.ft", "", "last"),
    ("report", "p.ft", ""), ("report", "p.ft", "last~-2"), ("compare", "p.ft", ""),
])
def test_negative_counts_and_empty_refs_are_argument_errors(ran: Path, args: tuple[str, ...]) -> None:
    out = run_ft(*args, cwd=ran)
    assert out.returncode == 2, out.stdout
    _one_clear_error(out.stderr)
    assert "ledger" not in out.stderr and "move the file aside" not in out.stderr
    assert len(json.loads(run_ft("runs", "p.ft", "--json", cwd=ran).stdout)) == 2  # history intact
    assert not (ran / ".ft" / "reports").exists()


# ---- 5. a wrong-shaped journal line ----------------------------------------------------

def test_a_wrong_shaped_journal_line_is_skipped_with_one_warning(ran: Path) -> None:
    journal = ran / ".ft" / "ledger.journal"
    bad = ['{"run": 5, "nodes": "x"}', '{"run": ["r", "p.ft", "run", 1, 2, "ok", 0, 0, 0], "nodes": [[1]]}']
    with journal.open("a") as f:
        f.write("\n".join(bad) + "\n")
    status = run_ft("status", "p.ft", cwd=ran)
    assert status.returncode == 0 and "last run" in status.stdout, status.stderr
    runs = run_ft("runs", "p.ft", "--json", cwd=ran)
    assert runs.returncode == 0 and len(json.loads(runs.stdout)) == 2, runs.stderr
    assert runs.stderr.count("warning:") == 1 and "ledger.journal" in runs.stderr
    # Not lines ftlang wrote: kept, beside the journal, never deleted.
    assert (ran / ".ft" / "ledger.journal.rejected").read_text().splitlines() == bad
    for args in (("runs", "p.ft"), ("show", "p.ft"), ("report", "p.ft"), ("status", "p.ft")):
        out = run_ft(*args, cwd=ran)
        assert out.returncode == 0 and "warning" not in out.stderr and "error" not in out.stderr, out.stderr


# ---- 6. ft graph -o for mermaid and DOT ---------------------------------------------------

@pytest.mark.parametrize(("fmt", "mark"), [("mermaid", "%% Written by ft graph"), ("dot", "// Written by ft graph")])
def test_graph_o_writes_text_formats_marked_and_replaces_only_its_own(tmp_path: Path, fmt: str, mark: str) -> None:
    root = _project(tmp_path)
    printed = run_ft("graph", "p.ft", "--format", fmt, cwd=root).stdout
    out = run_ft("graph", "p.ft", "--format", fmt, "-o", "g.txt", cwd=root)
    assert out.returncode == 0 and out.stdout == "", out.stderr
    lines = (root / "g.txt").read_text().splitlines()
    assert lines[1].strip() == mark and [ln for ln in lines if ln.strip() != mark] == printed.splitlines()
    assert run_ft("graph", "p.ft", "--format", fmt, "-o", "g.txt", cwd=root).returncode == 0  # its own
    (root / "notes.txt").write_text("flowchart LR\nmine\n")
    out = run_ft("graph", "p.ft", "--format", fmt, "-o", "notes.txt", cwd=root)
    assert out.returncode == 1 and "was not written by ft graph; not overwritten" in out.stderr
    assert (root / "notes.txt").read_text() == "flowchart LR\nmine\n"


def test_graph_help_names_the_marks() -> None:
    out = run_ft("graph", "--help", cwd=Path.cwd())
    assert "% Written by ft graph" in out.stdout and "// Written by ft graph" in out.stdout


# ---- 7. -o with a missing folder, -o '' ---------------------------------------------------

@pytest.mark.parametrize("command", ["report", "graph"])
def test_o_into_a_missing_folder_or_empty_is_an_error(ran: Path, command: str) -> None:
    out = run_ft(command, "p.ft", "-o", "nonexist/x.html", cwd=ran)
    assert out.returncode == 1 and "no such folder" in out.stderr and "nonexist/x.html" in out.stderr
    assert ".ft-" not in out.stderr and not (ran / "nonexist").exists()
    _one_clear_error(out.stderr)
    out = run_ft(command, "p.ft", "-o", "", cwd=ran)
    assert out.returncode == 1 and "-o needs a file name" in out.stderr and out.stdout == ""
    assert not (ran / ".ft" / "reports").exists()


def test_a_failed_write_names_the_users_file_not_the_temporary_one(tmp_path: Path) -> None:
    from ftlang.runtime import userfiles

    target = tmp_path / "gone" / "g.svg"
    with pytest.raises(FileNotFoundError) as exc:
        userfiles.replace(target, b"x")
    assert exc.value.filename == str(target)
    assert userfiles.refusal(str(target), userfiles.GRAPH_MARK, "ft graph") is not None


def test_the_lock_write_itself_refuses_a_foreign_lock(tmp_path: Path) -> None:
    """A lock that turns foreign during a run (or a run through the Python API): the write
    refuses it too, as an OSError the session reports, and the file is left as it is."""
    from ftlang.compiler import compile_file
    from ftlang.runtime import lockfile

    program = compile_file(_project(tmp_path) / "p.ft")
    lockfile.write(program, {"sources": {}}, {"dataset.d": "k"})
    assert lockfile.read(program) == {"sources": {}, "nodes": {"dataset.d": "k"}}
    (tmp_path / "ft.lock").write_text("my notes\n")
    with pytest.raises(OSError, match="not an ftlang lock"):
        lockfile.write(program, {}, {})
    with pytest.raises(lockfile.LockError):
        lockfile.read(program)
    assert (tmp_path / "ft.lock").read_text() == "my notes\n"


# ---- 8. ft checkpoints names a train step of the file ----------------------------------

def test_checkpoints_of_a_step_the_file_lacks_is_an_error_with_the_train_steps(tmp_path: Path) -> None:
    root = tmp_path / "q"
    shutil.copytree(EXAMPLES / "data", root / "data")
    shutil.copy(EXAMPLES / "quickstart.ft", root / "quickstart.ft")
    out = run_ft("checkpoints", "quickstart.ft", "train.stf", cwd=root)
    assert out.returncode == 2 and out.stdout == "", out.stdout
    _one_clear_error(out.stderr)
    assert "has no step named train.stf" in out.stderr and "did you mean train.sft?" in out.stderr
    assert "train.pretrained, train.sft" in out.stderr and "no kept checkpoints" not in out.stderr
    out = run_ft("checkpoints", "quickstart.ft", "dataset.corpus", cwd=root)
    assert out.returncode == 2 and "dataset.corpus is a dataset step" in out.stderr, out.stderr
    out = run_ft("checkpoints", "quickstart.ft", "train.sft", cwd=root)  # a train step: none kept yet
    assert out.returncode == 1 and "train.sft: no kept checkpoints" in out.stderr, out.stderr
