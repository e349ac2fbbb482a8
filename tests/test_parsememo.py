"""The parse memo on disk (runtime/parsememo.py): `ft check` after an edit parses only the
edited block, reports errors at the right lines, and a damaged or foreign memo is ignored."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import run_ft
from ftlang.compiler import Memo
from ftlang.runtime import parsememo

BLOCK = 'dataset d{i} {{\n  source = jsonl("data/rows.jsonl")\n}}\n\n'


def _project(tmp_path: Path, n: int = 20) -> Path:
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "rows.jsonl").write_text('{"prompt": "a", "completion": "b"}\n')
    (tmp_path / "p.ft").write_text("ft 0.1\n\n" + "".join(BLOCK.format(i=i) for i in range(n)))
    return tmp_path / "p.ft"


def _memos(tmp_path: Path) -> list[Path]:
    return sorted((tmp_path / ".ft" / "progcache").glob("*.parse"))


def test_check_writes_the_memo_only_where_ft_exists_and_an_edit_reads_it(tmp_path: Path) -> None:
    path = _project(tmp_path)
    assert run_ft("check", "p.ft", cwd=tmp_path).returncode == 0
    assert not (tmp_path / ".ft").exists()  # a file never run: nothing written
    (tmp_path / ".ft").mkdir()
    assert run_ft("check", "p.ft", cwd=tmp_path).returncode == 0
    (memo_file,) = _memos(tmp_path)
    memo = parsememo.load(memo_file.with_suffix(".bin"), _package()).parse
    assert len(memo) == 21  # the version line and 20 blocks
    # A line inserted above block 15 and an error in block 17: the diagnostic's line is the
    # new one, though blocks 0-14 came from the memo.
    text = path.read_text().replace("dataset d15 {", "# moved\ndataset d15 {")
    text = text.replace('dataset d17 {\n  source = jsonl("data/rows.jsonl")',
                        'dataset d17 {\n  source = jsonl("data/rows.jsonl")\n  sorce = 1')
    path.write_text(text)
    out = run_ft("check", "p.ft", cwd=tmp_path)
    line = text.splitlines().index("  sorce = 1") + 1
    assert out.returncode != 0 and f"p.ft:{line}:3" in out.stderr, out.stderr
    memo = parsememo.load(memo_file.with_suffix(".bin"), _package()).parse
    assert any(key[1] == line - 2 for key in memo)  # the edited block, stored at its new line


def test_an_edit_writes_only_a_delta_until_too_much_has_changed(tmp_path: Path) -> None:
    path = _project(tmp_path, 100)
    (tmp_path / ".ft").mkdir()
    assert run_ft("check", "p.ft", cwd=tmp_path).returncode == 0
    (memo_file,) = _memos(tmp_path)
    entry, delta = memo_file.with_suffix(".bin"), memo_file.with_suffix(".delta")
    base = memo_file.read_bytes()
    path.write_text(path.read_text().replace("dataset d5 {", "dataset d5 { # edited"))
    assert run_ft("check", "p.ft", cwd=tmp_path).returncode == 0
    assert memo_file.read_bytes() == base  # the memo itself is not written again
    assert delta.is_file() and delta.stat().st_size * 20 < len(base)
    loaded = parsememo.load(entry, _package())
    assert len(loaded.parse) == 102  # 101 pieces in use and the old d5, until the next full save
    old_delta = delta.read_bytes()
    # One more edit: the delta holds both edited pieces (it replaces the last delta).
    path.write_text(path.read_text().replace("dataset d6 {", "dataset d6 { # edited"))
    assert run_ft("check", "p.ft", cwd=tmp_path).returncode == 0
    assert memo_file.read_bytes() == base and len(parsememo.load(entry, _package()).parse) == 103
    # Most blocks edited: the whole memo is written, only what is in use, and the delta goes.
    path.write_text(path.read_text().replace("{\n  source", "{ # again\n  source"))
    assert run_ft("check", "p.ft", cwd=tmp_path).returncode == 0
    assert memo_file.read_bytes() != base and not delta.exists()
    assert len(parsememo.load(entry, _package()).parse) == 101
    delta.write_bytes(old_delta)  # a delta of the memo that was replaced: never applied
    assert len(parsememo.load(entry, _package()).parse) == 101


def test_a_damaged_or_foreign_memo_is_ignored(tmp_path: Path) -> None:
    _project(tmp_path, 3)
    (tmp_path / ".ft").mkdir()
    assert run_ft("check", "p.ft", cwd=tmp_path).returncode == 0
    (memo_file,) = _memos(tmp_path)
    blob = bytearray(memo_file.read_bytes())
    blob[-5] ^= 0xFF
    memo_file.write_bytes(bytes(blob))
    assert parsememo.load(memo_file.with_suffix(".bin"), _package()) == Memo()
    assert parsememo.load(memo_file.with_suffix(".bin"), "another ftlang") == Memo()
    memo_file.write_bytes(b"ftparse1\n{}\n")  # another format (the last stop's)
    assert parsememo.load(memo_file.with_suffix(".bin"), _package()) == Memo()
    (tmp_path / "p.ft").write_text((tmp_path / "p.ft").read_text() + BLOCK.format(i=9))
    out = run_ft("check", "p.ft", cwd=tmp_path)
    assert out.returncode == 0 and "4 steps" in out.stdout
    # A pickle of anything but AST classes is refused, even with a matching digest.
    import hashlib
    import json
    import pickle

    payload = pickle.dumps({"parse": {("p.ft", 1, b"x"): (None, [Path("/")])}, "sql": {}})
    memo_file.write_bytes(parsememo.MAGIC + json.dumps(
        {"package": _package(), "payload": hashlib.sha256(payload).hexdigest()}).encode() + b"\n" + payload)
    assert parsememo.load(memo_file.with_suffix(".bin"), _package()) == Memo()


def _package() -> str:
    from ftlang.runtime.progcache import _package_fingerprint

    return _package_fingerprint()


SQL_FT = """ft 0.1
dataset rows {
  source = jsonl("data/rows.jsonl")
  schema { prompt: str, completion: str }
}
curate a { sql "SELECT prompt, length(completion) AS n FROM rows" }
curate b { sql "SELECT prompt, n + 1 AS m FROM a" }
"""


def test_a_compile_after_an_edit_asks_duckdb_only_about_what_changed(tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """compiler/sqlrules.py keeps DuckDB's answers (review, bind, created) under the query and
    its input columns: an edit elsewhere asks nothing; a changed query, or a changed input
    type, asks again; a wrong query found from the memo still gets its diagnostic."""
    from ftlang.compiler import compile_source, sqlrules
    from ftlang.lang.diagnostics import FtError

    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "rows.jsonl").write_text('{"prompt": "a", "completion": "b"}\n')
    asked: list[str] = []
    real = sqlrules.SqlChecker._bind
    monkeypatch.setattr(sqlrules.SqlChecker, "_bind", lambda self, sql, typed: asked.append(sql) or real(self, sql, typed))
    memo = Memo()
    prog = compile_source(SQL_FT, "p.ft", tmp_path, memo=memo)
    assert len(asked) == 2 and len(memo.sql) == 8  # review, shape, created and bind of each query
    first = dict(memo.sql)
    assert prog.nodes["curate.b"].params["sql"]
    asked.clear()
    compile_source(SQL_FT.replace('"data/rows.jsonl")', '"data/rows.jsonl")\n  # a comment'), "p.ft", tmp_path, memo=memo)
    assert asked == [] and dict(memo.sql) == first
    compile_source(SQL_FT.replace("n + 1 AS m", "n + 2 AS m"), "p.ft", tmp_path, memo=memo)
    assert asked == ["SELECT prompt, n + 2 AS m FROM a"]
    asked.clear()
    # a's output type changes (DOUBLE): b's text is as in the memo, and it is asked again.
    compile_source(SQL_FT.replace("n + 1 AS m", "n + 2 AS m").replace(
        "length(completion) AS n", "CAST(length(completion) AS DOUBLE) AS n"), "p.ft", tmp_path, memo=memo)
    assert asked == ["SELECT prompt, CAST(length(completion) AS DOUBLE) AS n FROM rows",
                     "SELECT prompt, n + 2 AS m FROM a"]
    wrong = SQL_FT.replace("n + 1 AS m", "no_such_fn(n) AS m")
    for _ in range(2):  # asked, then answered by the memo: the same error both times
        with pytest.raises(FtError) as err:
            compile_source(wrong, "p.ft", tmp_path, memo=memo)
        assert [d.code for d in err.value.diagnostics] == ["FT0129"]


def test_an_edit_that_changes_no_query_parses_no_sql(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """compiler/sqlshape.py's Shape of each query is kept in the memo, on disk too: a
    compile after an edit elsewhere calls sqlglot for no query, and finds the same columns
    (the unknown column in `b` is still reported, at the same place)."""
    from ftlang.compiler import Memo, compile_source, sqlshape
    from ftlang.lang.diagnostics import FtError
    from ftlang.runtime.progcache import _package_fingerprint

    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "rows.jsonl").write_text('{"prompt": "a", "completion": "b"}\n')
    (tmp_path / ".ft" / "progcache").mkdir(parents=True)
    wrong = SQL_FT.replace("n + 1 AS m", "nn + 1 AS m")
    parsed: list[str] = []
    real = sqlshape._parse.__wrapped__
    monkeypatch.setattr(sqlshape, "_parse", lambda sql: parsed.append(sql) or real(sql))

    def errors(text: str, memo: Memo) -> list[tuple[str, str, int, int]]:
        with pytest.raises(FtError) as err:
            compile_source(text, "p.ft", tmp_path, memo=memo)
        return [(d.code, d.message, d.span.line, d.span.col) for d in err.value.diagnostics]

    memo = Memo()
    first = errors(wrong, memo)
    assert first == [("FT0125", "no column `nn` in a", 7, 32)] and len(parsed) == 2
    entry = tmp_path / ".ft" / "progcache" / "p.bin"
    assert parsememo.save(entry, _package_fingerprint(), memo)
    parsed.clear()
    again = parsememo.load(entry, _package_fingerprint())  # as the next process reads it
    edited = wrong.replace('"data/rows.jsonl")', '"data/rows.jsonl")\n  # a comment')
    assert errors(edited, again) == [("FT0125", "no column `nn` in a", 8, 32)]  # one line down
    assert parsed == []
    assert errors(wrong.replace("FROM a", "FROM  a"), again) and parsed == ["SELECT prompt, nn + 1 AS m FROM  a"]
