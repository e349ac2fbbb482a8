"""Curate output is a function of its inputs (issue 9 item 6, issue 10 item 6).

The real `ft check` / `ft plan` / `ft run` on real .ft files: nondeterministic SQL and
session-changing statements are compile errors placed in the .ft file, `deterministic = false`
reruns every time, a seeded random() repeats, binder errors come at compile time, and no
curate query can take the driver down.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
from conftest import ROOT, ft_bin, run_ft

HEADER = '''ft 0.1

dataset tasks {
  source = jsonl("data/tasks.jsonl")
  schema { prompt: str, completion: str }
}
'''


def project(root: Path, body: str, rows: int = 300) -> Path:
    (root / "data").mkdir(parents=True, exist_ok=True)
    with (root / "data" / "tasks.jsonl").open("w") as f:
        for i in range(rows):
            f.write(json.dumps({"prompt": f"Add {i} and {i % 7}", "completion": str(i + i % 7)}) + "\n")
    (root / "p.ft").write_text(HEADER + body)
    return root


def curate_block(name: str, sql: str, extra: str = "") -> str:
    lines = "\n".join(f"    {line}" for line in sql.split("\n"))
    return f'\ncurate {name} {{\n  from = tasks\n{extra}  sql """\n{lines}\n  """\n}}\n'


def check_json(root: Path) -> list[dict[str, Any]]:
    res = run_ft("check", "p.ft", "--format", "json", cwd=root)
    assert res.returncode in (0, 2), res.stderr  # 2: compile errors
    assert "Traceback" not in res.stderr
    return json.loads(res.stdout) if res.stdout.strip() else []


def plan_json(root: Path) -> dict[str, dict[str, Any]]:
    res = run_ft("plan", "p.ft", "--json", cwd=root)
    assert res.returncode == 0, res.stdout + res.stderr
    return {item["node"]: item for item in json.loads(res.stdout)}


def caret(root: Path, name: str, text: str) -> tuple[int, int]:
    """(line, col) of `text` inside curate block `name` of p.ft."""
    lines = (root / "p.ft").read_text().split("\n")
    start = next(i for i, ln in enumerate(lines) if ln.startswith(f"curate {name} "))
    for i in range(start + 1, len(lines)):
        if text in lines[i]:
            return i + 1, lines[i].index(text) + 1
    raise AssertionError(f"{text!r} not in curate {name}")


# ---- refused at compile time -------------------------------------------------------------

# (block, sql, code, the text under the caret, a piece of the help line)
REFUSED = [
    ("rand", "SELECT prompt FROM tasks ORDER BY random() LIMIT 20", "FT0127", "random", "setseed(0.42)"),
    ("clock", "SELECT prompt, now() AS t FROM tasks", "FT0127", "now", "deterministic = false"),
    ("bare_clock", "SELECT prompt FROM tasks\nWHERE current_date > DATE '2024-01-01'", "FT0127", "current_date",
     "fixed value"),
    ("uuid", "SELECT gen_random_uuid() AS id, prompt FROM tasks", "FT0127", "gen_random_uuid", "setseed"),
    ("settings", "SELECT name, value FROM duckdb_settings()", "FT0127", "duckdb_settings", "`from` tables"),
    ("setting", "SELECT current_setting('temp_directory') AS d FROM tasks", "FT0127", "current_setting",
     "`from` tables"),
    ("version", "SELECT version() AS v, prompt FROM tasks", "FT0127", "version", "deterministic = false"),
    ("sample", "SELECT * FROM tasks USING SAMPLE 10 ROWS", "FT0127", "USING SAMPLE", "REPEATABLE (42)"),
    ("age", "SELECT age(TIMESTAMP '2020-01-01') AS a FROM tasks", "FT0127", "age", "age(TIMESTAMP"),
    ("late_seed", "SELECT setseed(0.1) AS s, prompt FROM tasks", "FT0127", "setseed", "its own statement"),
    ("set", "SET threads = 4;\nSELECT prompt FROM tasks", "FT0128", "SET threads = 4", "fixed settings"),
    ("reset", "RESET threads;\nSELECT prompt FROM tasks", "FT0128", "RESET threads", "fixed settings"),
    ("pragma", "PRAGMA threads = 2;\nSELECT prompt FROM tasks", "FT0128", "PRAGMA threads = 2", "fixed settings"),
    ("attach", "ATTACH ':memory:' AS m;\nSELECT prompt FROM tasks", "FT0128", "ATTACH ':memory:' AS m",
     "allowed before the query"),
    ("install", "INSTALL httpfs;\nSELECT prompt FROM tasks", "FT0128", "INSTALL httpfs", "fixed settings"),
    ("load", "LOAD json;\nSELECT prompt FROM tasks", "FT0128", "LOAD json", "fixed settings"),
    ("copy", "COPY tasks TO 'rows.csv';\nSELECT prompt FROM tasks", "FT0128", "COPY tasks TO 'rows.csv'",
     "allowed before the query"),
    ("export", "EXPORT DATABASE 'dump';\nSELECT prompt FROM tasks", "FT0128", "EXPORT DATABASE 'dump'",
     "allowed before the query"),
    ("logging", "CALL enable_logging(storage = 'file', storage_path = 'logs');\nSELECT prompt FROM tasks",
     "FT0128", "CALL enable_logging(storage = 'file', storage_path = 'logs')", "fixed settings"),
    ("logging_fn", "SELECT * FROM enable_logging()", "FT0128", "enable_logging", "fixed settings"),
    ("read_csv", "SELECT * FROM read_csv('data/other.csv')", "FT0128", "read_csv", "dataset blocks"),
    ("dynamic", "SELECT * FROM query('SELECT now()')", "FT0128", "query", "into the query itself"),
    ("not_query", "SELECT 1;\nCREATE TABLE x AS SELECT * FROM tasks", "FT0128",
     "CREATE TABLE x AS SELECT * FROM tasks", "SELECT"),
]


@pytest.fixture(scope="module")
def refused(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[dict[str, Any]]]:
    root = project(tmp_path_factory.mktemp("refused"), "".join(curate_block(n, sql) for n, sql, *_ in REFUSED))
    return root, check_json(root)


@pytest.mark.parametrize(("name", "sql", "code", "under", "help_"), REFUSED, ids=[r[0] for r in REFUSED])
def test_refused_sql_is_a_compile_error_in_the_ft_file(refused: tuple[Path, list[dict[str, Any]]], name: str,
                                                        sql: str, code: str, under: str, help_: str) -> None:
    root, diags = refused
    line, col = caret(root, name, under)
    here = [d for d in diags if d["labels"][0]["line"] == line]
    assert [d["code"] for d in here] == [code], here
    label = here[0]["labels"][0]
    assert (label["col"], label["end_col"] - label["col"]) == (col, len(under))
    assert help_ in here[0]["help"]


def test_the_refusals_are_errors_that_stop_the_run(refused: tuple[Path, list[dict[str, Any]]]) -> None:
    root, diags = refused
    assert len(diags) == len(REFUSED)
    res = run_ft("run", "p.ft", cwd=root)
    assert res.returncode == 2 and "error[FT0128]" in res.stdout + res.stderr  # 2: compile errors
    assert not (root / ".ft" / "objects").exists() or not any((root / ".ft" / "objects").iterdir())


def test_allowed_setup_and_seeded_randomness_compile(tmp_path: Path) -> None:
    body = curate_block("ok", "SET VARIABLE cutoff = 3;\nCREATE MACRO twice(x) AS x || x;\n"
                              "CREATE TEMP TABLE picked AS SELECT * FROM tasks WHERE length(completion) < 3;\n"
                              "SELECT setseed(0.42);\n"
                              "SELECT twice(prompt) AS prompt, random() AS r, gen_random_uuid() AS id FROM picked\n"
                              "WHERE length(completion) < getvariable('cutoff')\nUSING SAMPLE 10 ROWS")
    body += curate_block("seeded_sample", "SELECT * FROM tasks USING SAMPLE 10% (bernoulli, 42)")
    body += curate_block("quoted", "SELECT prompt AS \"now\", 'random()' AS note FROM tasks -- now()")
    root = project(tmp_path, body)
    assert check_json(root) == []
    res = run_ft("run", "p.ft", cwd=root)  # the set-up statements run, each drained
    assert res.returncode == 0, res.stdout + res.stderr
    digest = plan_json(root)["curate.ok"]["digest"]
    rows = pq.read_table(root / ".ft" / "objects" / digest / "data.parquet")
    assert rows.num_rows == 10 and rows.column("prompt")[0].as_py().count("Add") == 2


def test_every_volatile_duckdb_function_was_considered() -> None:
    import duckdb
    from ftlang.stdlib import sqlpolicy as p

    listed = {*p.NONDETERMINISTIC_FUNCTIONS, *p.REFUSED_FUNCTIONS, *p.ALLOWED_FUNCTIONS}
    rows = duckdb.connect().execute(
        "SELECT DISTINCT function_name FROM duckdb_functions() WHERE function_type = 'table' "
        "OR (function_type = 'scalar' AND stability <> 'CONSISTENT')").fetchall()
    missing = sorted(n for (n,) in rows if n not in listed and not n.startswith(p.NONDETERMINISTIC_PREFIXES))
    assert missing == [], f"decide for each: refuse, or allow with a reason (stdlib/sqlpolicy.py): {missing}"


# ---- deterministic = false --------------------------------------------------------------


def test_deterministic_false_allows_it_and_reruns_every_time(tmp_path: Path) -> None:
    body = curate_block("live", "SELECT prompt, random() AS r, now() AS at FROM tasks\nORDER BY random() LIMIT 5",
                        extra="  deterministic = false\n")
    body += "\ncurate counted {\n  sql \"SELECT count(*) AS n FROM live\"\n}\n"
    root = project(tmp_path, body)
    assert check_json(root) == []
    first = run_ft("run", "p.ft", cwd=root)
    assert first.returncode == 0, first.stdout + first.stderr
    plan = plan_json(root)
    assert plan["dataset.tasks"]["status"] == "cached"
    assert plan["curate.live"]["status"] == "run"
    assert plan["curate.live"]["reasons"] == ["deterministic = false: reruns every time"]
    assert plan["curate.counted"]["status"] == "pending"  # honest: it runs if live's rows change
    text = run_ft("plan", "p.ft", cwd=root).stdout
    assert "deterministic = false: reruns every time" in text
    second = run_ft("run", "p.ft", cwd=root)
    assert second.returncode == 0
    shown = second.stdout + second.stderr
    assert "done    curate.live" in shown and "cached  dataset.tasks" in shown


# quickstart's curate nodes as `ft plan --json` showed them before `deterministic` existed:
# (key, output digest). The default adds nothing to a key, and the sandbox changes no bytes.
# The digests are those of DuckDB's Parquet writer (curate.write_parts), which replaced
# pyarrow's: the same rows in the same order, another encoding; the keys did not change.
QUICKSTART = {
    "curate.task_split": ("02d8f36029172561b6948bcef4e5744968a4c437a527a30987f80ccaeb23dd24",
                          "5b6d41624e4fe7f9659c30489a6b4faea00bc9c3d984e1cc4ead58de93e878cc"),
    "curate.vocab_text": ("4f877b7b08285a002439848ee1e3903f1b5707dd9b97ddfe2dbd4a08ff3b033c",
                          "0f555c4ca3ecf5b30a33b34a098ff3ad9a3457df90e21ca9aca76a3a39611277"),
}


def test_deterministic_true_keeps_the_keys_it_had(tmp_path: Path) -> None:
    root = tmp_path / "ex"
    root.mkdir()
    shutil.copytree(ROOT / "examples" / "data", root / "data")
    shutil.copy(ROOT / "examples" / "quickstart.ft", root / "p.ft")
    res = run_ft("run", "p.ft", "-s", "task_split", "-s", "vocab_text", cwd=root)
    assert res.returncode == 0, res.stdout + res.stderr
    plan = plan_json(root)
    assert {n: (plan[n]["key"], plan[n]["digest"]) for n in QUICKSTART} == QUICKSTART


# ---- seeded randomness runs, and repeats ---------------------------------------------------

SEEDED = "SELECT setseed({seed});\nSELECT prompt, completion FROM tasks ORDER BY random() LIMIT 20"


def _digest(root: Path, node: str) -> str:
    res = run_ft("run", "p.ft", cwd=root)
    assert res.returncode == 0, res.stdout + res.stderr
    return str(plan_json(root)[node]["digest"])


def test_seeded_random_runs_and_gives_the_same_digest_four_times(tmp_path: Path) -> None:
    digests = {_digest(project(tmp_path / f"r{i}", curate_block("pick", SEEDED.format(seed=0.42))), "curate.pick")
               for i in range(4)}
    assert len(digests) == 1
    other = _digest(project(tmp_path / "other", curate_block("pick", SEEDED.format(seed=0.43))), "curate.pick")
    assert other not in digests  # the seed matters: the rows really are drawn at random
    rows = pq.read_table(tmp_path / "r0" / ".ft" / "objects" / digests.pop() / "data.parquet")
    assert rows.num_rows == 20


def test_timestamptz_does_not_depend_on_the_machine_time_zone(tmp_path: Path) -> None:
    root = project(tmp_path, curate_block(
        "hours", "SELECT strftime(TIMESTAMPTZ '2024-01-01 00:00:00+00', '%H') AS h, prompt FROM tasks LIMIT 1"))
    env = dict(os.environ, NO_COLOR="1", TZ="Asia/Tokyo")
    res = subprocess.run([*ft_bin(), "run", "p.ft"], cwd=root, capture_output=True, text=True, env=env,
                         timeout=300)
    assert res.returncode == 0, res.stdout + res.stderr
    digest = plan_json(root)["curate.hours"]["digest"]
    assert pq.read_table(root / ".ft" / "objects" / digest / "data.parquet").column("h").to_pylist() == ["00"]


# ---- nothing takes the driver down -------------------------------------------------------

CRASH = '''
import sys
from pathlib import Path
import pyarrow as pa, pyarrow.parquet as pq
from ftlang.stdlib import curate, sqlpolicy
from ftlang.stdlib.spec import Artifact, StepContext, StepError

root = Path(sys.argv[1])
(root / "obj").mkdir()
pq.write_table(pa.table({"prompt": ["a", "b"]}), root / "obj" / "data.parquet")
if sys.argv[2] == "bypass":
    sqlpolicy.review = lambda *a, **k: []  # as if the review missed it: the sandbox must hold
sql = "CALL enable_logging(storage = 'file', storage_path = '" + str(root / "logs") + "'); SELECT prompt FROM tasks"
ctx = StepContext("curate.c", "c", {"from": [Artifact("dataset.tasks", "d", root / "obj")], "sql": sql,
                  "split": None, "deterministic": True}, root / "out", root, root / "cache")
(root / "out").mkdir()
try:
    curate.run(ctx)
except StepError as e:
    print("STEPERROR", e, "|", e.hint)
'''


@pytest.mark.parametrize("mode", ["review", "bypass"])
def test_enable_logging_is_a_step_error_not_a_process_abort(tmp_path: Path, mode: str) -> None:
    res = subprocess.run([sys.executable, "-c", CRASH, str(tmp_path), mode], capture_output=True, text=True,
                         timeout=120)
    assert res.returncode == 0, (res.returncode, res.stderr[-500:])  # 134: DuckDB's C++ terminate
    assert "STEPERROR" in res.stdout
    assert ("SQL refused" if mode == "review" else "configuration has been locked") in res.stdout


def test_enable_logging_through_ft_is_refused_before_it_runs(tmp_path: Path) -> None:
    root = project(tmp_path, curate_block(
        "logs", "CALL enable_logging(storage = 'file', storage_path = 'logs');\nSELECT prompt FROM tasks"))
    for cmd in ("check", "run"):
        res = run_ft(cmd, "p.ft", cwd=root)
        assert res.returncode == 2, (cmd, res.returncode, res.stderr[-300:])  # compile errors, not 134
        assert "error[FT0128]" in res.stdout + res.stderr
    assert not (root / "logs").exists()


# ---- what DuckDB's binder rejects, at compile time ---------------------------------------

# (block, sql, the text under the caret, a piece of the message, a piece of the help)
BIND = [
    ("arrow", "SELECT prompt, list_transform([1, 2], x -> x + 1) AS steps\nFROM tasks", "->",
     "Deprecated lambda arrow", "lambda x: x + 1"),
    ("unknown_fn", "SELECT prompt,\n  nosuchfn(completion) AS c\nFROM tasks", "nosuchfn",
     "nosuchfn does not exist", "did you mean"),
    ("type", "SELECT abs(prompt) AS a FROM tasks", "abs", "abs(VARCHAR)", "add a cast"),
    ("group", "SELECT prompt, count(*) AS n FROM tasks GROUP BY completion", "prompt", "GROUP BY", "ANY_VALUE"),
    ("cte_column", "WITH t AS (SELECT prompt FROM tasks)\nSELECT promt FROM t", "promt", '"promt" not found',
     "did you mean `prompt`"),
    ("downstream", "SELECT upper(n) AS u FROM lengths", "upper", "upper(BIGINT)", "add a cast"),
]


@pytest.fixture(scope="module")
def bound(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[dict[str, Any]]]:
    body = "".join(curate_block(n, sql) for n, sql, *_ in BIND if n != "downstream")
    body += '\ncurate lengths {\n  sql "SELECT prompt, length(completion) AS n FROM tasks"\n}\n'
    body += '\ncurate downstream {\n  sql """\n    SELECT upper(n) AS u FROM lengths\n  """\n}\n'
    # columns of unknown type bind as NULL: abs(NULL) binds, year(NULL) cannot choose an
    # overload; neither proves the query wrong, so neither is reported
    body += '\ndataset loose {\n  source = jsonl("data/tasks.jsonl")\n}\n'
    body += '\ncurate untyped {\n  sql "SELECT abs(prompt) AS a, year(prompt) AS y, prompt FROM loose"\n}\n'
    root = project(tmp_path_factory.mktemp("bind"), body)
    return root, check_json(root)


@pytest.mark.parametrize(("name", "sql", "under", "message", "help_"), BIND, ids=[b[0] for b in BIND])
def test_binder_errors_come_at_compile_time_with_the_line(bound: tuple[Path, list[dict[str, Any]]], name: str,
                                                          sql: str, under: str, message: str, help_: str) -> None:
    root, diags = bound
    line, col = caret(root, name, under)
    here = [d for d in diags if d["labels"][0]["line"] == line]
    assert [d["code"] for d in here] == ["FT0129"], here
    assert message in here[0]["message"] and help_ in here[0]["help"]
    label = here[0]["labels"][0]
    assert (label["col"], label["end_col"] - label["col"]) == (col, len(under))


def test_untyped_columns_are_not_second_guessed(bound: tuple[Path, list[dict[str, Any]]]) -> None:
    root, diags = bound
    assert len(diags) == len(BIND)
    line, _ = caret(root, "untyped", "abs")
    assert not [d for d in diags if d["labels"][0]["line"] == line]
