"""The incremental runtime on data-only pipelines (real DuckDB, real files, no torch)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from conftest import ft_bin, run_ft
from ftlang.compiler import compile_file
from ftlang.runtime.hashing import StatCache
from ftlang.runtime.keys import components, node_key
from ftlang.runtime.planner import plan
from ftlang.runtime.store import Store

PIPELINE = '''ft 0.1
dataset tasks {
  source = jsonl("data/tasks.jsonl")
  schema { prompt: str, completion: str }
}
curate clean {
  from = tasks
  sql """SELECT prompt, completion FROM tasks WHERE length(completion) < 5"""
  split { train = 0.8, heldout = 0.2, by = prompt, seed = 1 }
}
curate longest {
  from = clean.train
  sql "SELECT prompt, completion FROM clean ORDER BY length(prompt) DESC, prompt LIMIT 5"
}
template chat = chatml(system = "Be brief.")
'''


def write_rows(path: Path, n: int, start: int = 0) -> None:
    with path.open("a") as f:
        for i in range(start, start + n):
            f.write(json.dumps({"prompt": f"Add {i} and {i + 1}", "completion": str(2 * i + 1)}) + "\n")


@pytest.fixture
def project(tmp_path: Path) -> Path:
    (tmp_path / "data").mkdir()
    write_rows(tmp_path / "data" / "tasks.jsonl", 200)
    (tmp_path / "p.ft").write_text(PIPELINE)
    return tmp_path


def statuses(out: str) -> dict[str, str]:
    import re

    res = {}
    for line in re.sub(r"\x1b\[[0-9;]*[A-Za-z]", "", out).splitlines():
        parts = line.split()
        if len(parts) >= 2 and parts[0] in ("cached", "done", "failed", "skipped", "run", "pending"):
            if parts[0] == "run":
                continue
            res[parts[1]] = parts[0]
    return res


def test_second_run_is_all_cached(project: Path) -> None:
    first = run_ft("run", "p.ft", cwd=project)
    assert first.returncode == 0, first.stderr
    assert set(statuses(first.stderr).values()) == {"done"}
    second = run_ft("run", "p.ft", cwd=project)
    assert second.returncode == 0
    assert set(statuses(second.stderr).values()) == {"cached"}
    assert "nothing to do" in second.stderr


def test_appending_rows_the_filter_drops_is_cut_off_early(project: Path) -> None:
    assert run_ft("run", "p.ft", cwd=project).returncode == 0
    with (project / "data" / "tasks.jsonl").open("a") as f:
        f.write(json.dumps({"prompt": "long one", "completion": "far too long to keep"}) + "\n")
    plan_out = run_ft("plan", "p.ft", cwd=project).stdout
    assert "data/tasks.jsonl changed" in plan_out
    assert "pending curate.clean" in " ".join(plan_out.split())  # honest: not "cached"
    out = run_ft("run", "p.ft", cwd=project)
    st = statuses(out.stderr)
    assert st["dataset.tasks"] == "done" and st["curate.clean"] == "done"
    assert st["curate.longest"] == "cached"  # same rows out of clean: nothing below reruns


def test_touch_without_change_reruns_nothing(project: Path) -> None:
    assert run_ft("run", "p.ft", cwd=project).returncode == 0
    src = project / "data" / "tasks.jsonl"
    src.write_bytes(src.read_bytes())  # new mtime, same content
    out = run_ft("run", "p.ft", cwd=project)
    assert set(statuses(out.stderr).values()) == {"cached"}


def test_stat_shortcut_avoids_rehashing(project: Path) -> None:
    stat = StatCache(project / "stat.json")
    src = project / "data" / "tasks.jsonl"
    import os
    import time

    old = time.time_ns() - 10_000_000_000
    os.utime(src, ns=(old, old))
    d1 = stat.digest(src)
    stat.save()
    stat2 = StatCache(project / "stat.json")
    assert stat2.digest(src) == d1 and stat2.hashed == []
    write_rows(src, 1, start=999)
    assert stat2.digest(src) != d1 and stat2.hashed == [str(src.resolve())]


def test_key_ignores_non_semantic_attributes_and_paths(project: Path) -> None:
    prog = compile_file(project / "p.ft")
    store = Store(project / ".ft")
    stat = StatCache(project / "stat.json")
    node = prog.nodes["dataset.tasks"]
    key1 = node_key(components(node, {}, stat))
    # The same content under another path gives the same key.
    (project / "data" / "copy.jsonl").write_bytes((project / "data" / "tasks.jsonl").read_bytes())
    (project / "p2.ft").write_text(PIPELINE.replace("data/tasks.jsonl", "data/copy.jsonl"))
    prog2 = compile_file(project / "p2.ft")
    assert node_key(components(prog2.nodes["dataset.tasks"], {}, stat)) == key1
    assert plan(prog, store, stat)[0].status == "run"


def test_param_change_is_explained(project: Path) -> None:
    assert run_ft("run", "p.ft", cwd=project).returncode == 0
    (project / "p.ft").write_text(PIPELINE.replace("seed = 1", "seed = 2"))
    out = run_ft("plan", "p.ft", cwd=project).stdout
    assert "split" in out and "curate.clean" in out
    line = next(ln for ln in out.splitlines() if "curate.clean" in ln)
    assert line.split()[0] == "run"


def test_bad_row_fails_with_file_and_line_and_commits_nothing(project: Path) -> None:
    with (project / "data" / "tasks.jsonl").open("a") as f:
        f.write('{"prompt": "x", "completion": \n')
    out = run_ft("run", "p.ft", cwd=project)
    assert out.returncode == 1
    assert "data/tasks.jsonl:201" in out.stderr
    assert "--> p.ft:2:" in out.stderr  # the .ft line of the failing block
    assert "Traceback" not in out.stderr
    st = statuses(out.stderr)
    assert st["dataset.tasks"] == "failed" and st["curate.clean"] == "skipped"
    assert not any((project / ".ft" / "keys").rglob("*.json")) or st.get("template.chat") != "done"
    assert list((project / ".ft" / "tmp").iterdir()) == []


def test_keep_going_runs_independent_branches(project: Path) -> None:
    with (project / "data" / "tasks.jsonl").open("a") as f:
        f.write("not json\n")
    out = run_ft("run", "p.ft", "--keep-going", cwd=project)
    assert out.returncode == 1
    st = statuses(out.stderr)
    assert st["dataset.tasks"] == "failed" and st["template.chat"] == "done"


def test_broken_ft_exits_2_without_traceback(project: Path) -> None:
    (project / "bad.ft").write_text("ft 0.1\ndataset x {\n  source: jsonl(\"a\")\n}\n")
    out = run_ft("run", "bad.ft", cwd=project)
    assert out.returncode == 2
    assert "error[FT0005]" in out.stderr and "--> bad.ft:3:3" in out.stderr
    assert "Traceback" not in out.stderr


def test_missing_data_file_names_file_and_line(project: Path) -> None:
    (project / "m.ft").write_text('ft 0.1\ndataset x {\n  source = jsonl("data/nope.jsonl")\n}\n')
    out = run_ft("check", "m.ft", cwd=project)
    assert out.returncode == 2
    assert "file not found: data/nope.jsonl" in out.stderr and "--> m.ft:3:18" in out.stderr


def test_check_json_format(project: Path) -> None:
    (project / "bad.ft").write_text("ft 0.1\ntrian x { }\n")
    out = run_ft("check", "bad.ft", "--format", "json", cwd=project)
    assert out.returncode == 2
    diags = json.loads(out.stdout)
    assert diags[0]["code"] == "FT0101" and diags[0]["labels"][0]["line"] == 2


def test_second_run_waits_or_fails_fast_on_the_lock(project: Path) -> None:
    from ftlang.runtime.store import ProjectLock

    (project / ".ft").mkdir()
    lock = ProjectLock(project / ".ft")
    assert lock.acquire(wait=False)
    try:
        out = run_ft("run", "p.ft", "--no-wait", cwd=project)
        assert out.returncode == 1 and "another ft run" in out.stderr
        proc = subprocess.Popen([*ft_bin(), "run", "p.ft"], cwd=project, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        with pytest.raises(subprocess.TimeoutExpired):
            proc.wait(timeout=1.5)  # blocked on the lock
    finally:
        lock.release()
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0 and "waiting for another ft run" in err


def test_select_runs_node_with_ancestors_only(project: Path) -> None:
    out = run_ft("run", "p.ft", "--select", "clean", cwd=project)
    st = statuses(out.stderr)
    assert set(st) == {"dataset.tasks", "curate.clean"}
    out = run_ft("run", "p.ft", "--select", "clean+", cwd=project)
    st = statuses(out.stderr)
    assert st["curate.longest"] == "done" and "template.chat" not in st


def test_force_reruns_a_node(project: Path) -> None:
    run_ft("run", "p.ft", cwd=project)
    out = run_ft("run", "p.ft", "--force", "clean", cwd=project)
    st = statuses(out.stderr)
    assert st["curate.clean"] == "done" and st["curate.longest"] == "cached"


def test_graph_formats(project: Path) -> None:
    mer = run_ft("graph", "p.ft", cwd=project).stdout
    assert mer.startswith("flowchart LR") and "|train|" in mer
    dot = run_ft("graph", "p.ft", "--format", "dot", cwd=project).stdout
    assert '"curate.clean" -> "curate.longest" [label="train"];' in dot


def test_ledger_records_runs(project: Path) -> None:
    run_ft("run", "p.ft", cwd=project)
    run_ft("run", "p.ft", cwd=project)
    out = run_ft("runs", "p.ft", "--json", cwd=project)
    rows = json.loads(out.stdout)
    assert len(rows) == 2 and rows[0]["cached"] == 4 and rows[1]["ran"] == 4


def test_python_api_plan_run_artifact(project: Path) -> None:
    import ftlang

    p = ftlang.load(project / "p.ft")
    assert {i.status for i in p.plan()} <= {"run", "pending"}
    assert p.artifact("clean") is None
    result = p.run()
    assert result.ok and result.count("ran") == 4
    art = p.artifact("clean")
    assert art is not None and (art.path / "train.parquet").exists()
    assert {i.status for i in p.plan()} == {"cached"}


def test_python_api_reports_diagnostics(project: Path) -> None:
    import ftlang
    from ftlang.api import PipelineError

    (project / "bad.ft").write_text("ft 0.1\ntrian x { }\n")
    with pytest.raises(PipelineError, match="FT0101"):
        ftlang.load(project / "bad.ft")


def test_lockfile_and_locked_runs(project: Path) -> None:
    assert run_ft("run", "p.ft", cwd=project).returncode == 0
    lock = json.loads((project / "ft.lock").read_text())["p.ft"]
    assert "data/tasks.jsonl" in lock["sources"] and lock["packages"]["torch"]
    assert run_ft("run", "p.ft", "--locked", cwd=project).returncode == 0
    write_rows(project / "data" / "tasks.jsonl", 1, start=500)
    out = run_ft("run", "p.ft", "--locked", cwd=project)
    assert out.returncode == 1 and "data/tasks.jsonl" in out.stderr and "differ from ft.lock" in out.stderr


def test_show_diff_gc_verify(project: Path) -> None:
    assert run_ft("run", "p.ft", cwd=project).returncode == 0
    (project / "p.ft").write_text(PIPELINE.replace("seed = 1", "seed = 2"))
    assert run_ft("run", "p.ft", cwd=project).returncode == 0
    diff = run_ft("diff", "p.ft", "last~1", "last", cwd=project).stdout
    row = next(line.split() for line in diff.splitlines() if "split.seed" in line)
    assert row == ["curate.clean", "param", "split.seed", "1", "2"], diff
    assert not any(len(w) >= 40 and all(c in "0123456789abcdef" for c in w) for w in diff.split()), diff
    show = run_ft("show", "p.ft", cwd=project).stdout
    assert "curate.clean" in show and "ran" in show
    gc = run_ft("gc", "p.ft", "--keep-runs", "1", cwd=project)
    assert gc.returncode == 0 and "removed" in gc.stdout
    assert run_ft("verify", "p.ft", cwd=project).returncode == 0
    # Corrupt one artifact: verify reports it.
    obj = next((project / ".ft" / "objects").iterdir())
    victim = next(f for f in obj.rglob("*") if f.is_file())
    victim.write_bytes(victim.read_bytes() + b"x")
    out = run_ft("verify", "p.ft", cwd=project)
    assert out.returncode == 1 and "corrupt" in out.stdout


def test_runs_as_csv(project: Path) -> None:
    run_ft("run", "p.ft", cwd=project)
    out = run_ft("runs", "p.ft", "--csv", cwd=project).stdout.splitlines()
    assert out[0].startswith("run,file,started") and len(out) == 2 and ",ok,4,0,0" in out[1]
