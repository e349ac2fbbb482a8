"""`ft plan` names exactly what changed: only the upstream that reran, a query's diff."""

from __future__ import annotations

import json
from pathlib import Path

from conftest import run_ft

PIPELINE = '''ft 0.1
dataset a { source = jsonl("a.jsonl") }
dataset b { source = jsonl("b.jsonl") }
curate both {
  from = [a, b]
  sql """
    SELECT text FROM a
    UNION ALL
    SELECT text FROM b
  """
}
'''


def rows(path: Path, n: int) -> None:
    path.write_text("".join(json.dumps({"text": f"{path.stem} {i}"}) + "\n" for i in range(n)))


def test_only_the_changed_upstream_is_named(tmp_path: Path) -> None:
    rows(tmp_path / "a.jsonl", 3)
    rows(tmp_path / "b.jsonl", 3)
    (tmp_path / "p.ft").write_text(PIPELINE)
    assert run_ft("run", "p.ft", cwd=tmp_path).returncode == 0
    rows(tmp_path / "b.jsonl", 4)
    assert run_ft("run", "p.ft", "--select", "b", cwd=tmp_path).returncode == 0
    plan = run_ft("plan", "p.ft", cwd=tmp_path).stdout
    line = next(x for x in plan.splitlines() if "curate.both" in x)
    assert "upstream b changed" in line and "upstream a changed" not in line, plan


def test_a_changed_query_shows_a_diff(tmp_path: Path) -> None:
    rows(tmp_path / "a.jsonl", 3)
    rows(tmp_path / "b.jsonl", 3)
    (tmp_path / "p.ft").write_text(PIPELINE)
    assert run_ft("run", "p.ft", cwd=tmp_path).returncode == 0
    (tmp_path / "p.ft").write_text(PIPELINE.replace("SELECT text FROM b", "SELECT upper(text) AS text FROM b"))
    plan = run_ft("plan", "p.ft", cwd=tmp_path).stdout.splitlines()
    i = next(k for k, x in enumerate(plan) if "curate.both" in x)
    assert plan[i].rstrip().endswith("sql changed:"), plan
    assert [x.strip() for x in plan[i + 1:i + 5]] == ["@@ -2,2 +2,2 @@", "UNION ALL", "-SELECT text FROM b",
                                                       "+SELECT upper(text) AS text FROM b"], plan
