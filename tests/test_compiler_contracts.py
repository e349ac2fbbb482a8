"""Dataset contracts: columns from schemas, files and SQL, checked against what consumers need."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from conftest import FIXTURES
from ftlang.compiler import compile_source, sqlshape
from ftlang.compiler.ir import RefValue
from ftlang.lang.diagnostics import FtError

HEAD = '''ft 0.1
dataset tasks { source = jsonl("data/tasks.jsonl") }
dataset corpus { source = jsonl("data/corpus.jsonl") }
model base { init = tiny(data = corpus) }
'''


@pytest.fixture
def project(tmp_path: Path) -> Path:
    shutil.copytree(FIXTURES / "ok" / "data", tmp_path / "data")
    (tmp_path / "data" / "pairs.csv").write_text("question,answer\nq,a\n")
    (tmp_path / "data" / "late.jsonl").write_text("")
    return tmp_path


def compile_(project: Path, body: str):  # noqa: ANN201
    return compile_source(HEAD + body, "p.ft", project)


def errors(project: Path, body: str) -> list[tuple[str, str, int, int]]:
    with pytest.raises(FtError) as info:
        compile_(project, body)
    return [(d.code, d.message, d.span.line - HEAD.count("\n"), d.span.col) for d in info.value.diagnostics]


def test_from_is_inferred_from_the_query_and_becomes_an_edge(project: Path) -> None:
    p = compile_(project, 'curate c {\n  sql "SELECT prompt, completion FROM tasks"\n}\n'
                          "train t { from = base, data = c }\n")
    assert p.nodes["curate.c"].params["from"] == [RefValue("dataset.tasks")]
    assert ("dataset.tasks", "curate.c") in p.graph.edges


def test_cte_names_are_not_tables(project: Path) -> None:
    p = compile_(project, 'curate c { sql "WITH w AS (SELECT * FROM tasks) SELECT prompt, completion FROM w" }\n')
    assert [r.node for r in p.nodes["curate.c"].params["from"]] == ["dataset.tasks"]


def test_table_mistakes(project: Path) -> None:
    got = errors(project, 'curate c { sql "SELECT * FROM taks" }\n'
                          'curate d {\n  from = tasks\n  sql "SELECT * FROM tasks JOIN corpus USING (text)"\n}\n'
                          'curate s {\n  from = tasks\n  sql "SELECT * FROM tasks"\n'
                          "  split { a = 0.5, b = 0.5, by = prompt }\n}\n"
                          'curate e { sql "SELECT * FROM s" }\n')
    assert ("FT0102", "the query reads `taks`, but no block has that name", 1, 31) in got
    assert ("FT0102", "the query reads `corpus`, which is not in `from`", 4, 33) in got
    assert any(code == "FT0102" and "say which part" in msg for code, msg, *_ in got)


def test_unknown_column_points_into_the_sql(project: Path) -> None:
    got = errors(project, 'curate c {\n  sql """\n    SELECT prompt,\n           completon\n    FROM tasks\n  """\n}\n')
    assert got == [("FT0125", "no column `completon` in tasks", 4, 12)]


def test_unknown_column_on_a_single_line_query(project: Path) -> None:
    got = errors(project, 'curate c { sql "SELECT promt FROM tasks" }\n')
    assert got == [("FT0125", "no column `promt` in tasks", 1, 24)]


def test_syntax_error_points_into_the_sql(project: Path) -> None:
    got = errors(project, 'curate c {\n  from = tasks\n  sql """\n    SELECT prompt\n    FROM tasks WHERE (\n  """\n}\n')
    assert got == [("FT0126", "SQL syntax error: incomplete expression near `(`", 5, 22)]


def test_duckdb_is_the_judge_when_sqlglot_disagrees(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert sqlshape._duckdb_accepts("SELECT 1 FROM t")
    assert not sqlshape._duckdb_accepts("SELECT FROM WHERE (")
    monkeypatch.setattr(sqlshape, "_parse", lambda sql: sqlshape.SqlError("nope", 0, 1, "here"))
    p = compile_(project, 'curate c {\n  from = tasks\n  sql "SELECT prompt FROM tasks"\n}\n')
    assert "curate.c" in p.nodes  # columns unknown, no error


def test_star_and_aliases_flow_downstream(project: Path) -> None:
    got = errors(project, 'curate c { sql "SELECT * EXCLUDE (completion) FROM tasks" }\n'
                          "train t { from = base, data = c }\n")
    assert got == [("FT0125", "train `t` needs column `completion`, which c does not have", 2, 31)]
    compile_(project, 'curate c { sql "SELECT prompt AS p, completion AS c FROM tasks" }\n'
                      'train t { from = base, data = c, prompt_field = "p", completion_field = "c" }\n')


def test_split_by_must_be_a_column(project: Path) -> None:
    got = errors(project, 'curate c {\n  sql "SELECT prompt, completion FROM tasks"\n'
                          "  split { a = 0.5, b = 0.5, by = prompts }\n}\n")
    assert got == [("FT0125", "split by `prompts`, but the query returns no such column", 3, 34)]


def test_consumer_contracts(project: Path) -> None:
    got = errors(project, 'dataset pairs { source = csv("data/pairs.csv") }\n'
                          "train sft { from = base, data = pairs }\n"
                          "train pre { from = base, data = tasks, objective = clm }\n"
                          "eval e { models = [base], data = corpus }\n")
    assert [g[:2] for g in got] == [
        ("FT0125", "train `sft` needs columns `prompt`, `completion`, which pairs does not have"),
        ("FT0125", "train `pre` needs column `text`, which tasks does not have"),
        ("FT0125", "eval `e` needs columns `prompt`, `completion`, which corpus does not have"),
    ]
    compile_(project, 'dataset pairs { source = csv("data/pairs.csv") }\n'
                      'train sft { from = base, data = pairs, prompt_field = "question", completion_field = "answer" }\n')


def test_help_names_the_column_to_use(project: Path) -> None:
    with pytest.raises(FtError) as info:
        compile_(project, 'dataset pairs { source = csv("data/pairs.csv") }\n'
                          'train sft { from = base, data = pairs, prompt_field = "question" }\n')
    assert info.value.diagnostics[0].help.startswith('set completion_field = "answer"')


def test_select_data_needs_the_train_fields(project: Path) -> None:
    got = errors(project, "train sft { from = base, data = tasks, lr = sweep [1e-4, 2e-4],"
                          " select = min loss on corpus }\n")
    assert [g[:2] for g in got] == [
        ("FT0125", "train `sft` (its select) needs columns `prompt`, `completion`, which corpus does not have")]


def test_a_schema_alone_is_a_lower_bound(project: Path) -> None:
    # The file is empty: only the schema is known, and other columns may pass through.
    compile_(project, 'dataset late {\n  source = jsonl("data/late.jsonl")\n  schema { question: str }\n}\n'
                      "train sft { from = base, data = late }\n")


def test_complex_queries_are_not_second_guessed(project: Path) -> None:
    compile_(project, 'curate c { sql "SELECT COLUMNS(\'p.*\') FROM tasks" }\ntrain t { from = base, data = c }\n')
    # DuckDB 2.0's lambda syntax (`x -> x + 1` is a bind error: tests/test_curate_determinism.py)
    compile_(project, 'curate c { sql "SELECT list_transform([1], lambda x: x + 1) AS prompt, completion FROM tasks" }\n')
