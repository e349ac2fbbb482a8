"""`ft run --jobs N`: independent nodes at once, each in a worker process (kept warm); same artifacts,
same failure semantics, readable output, no orphan after Ctrl-C or SIGKILL."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
from conftest import ft_bin, run_ft
from ftlang.runtime import resources

pytestmark = pytest.mark.e2e


def branches(n: int = 4, bad: int | None = None) -> str:
    """A dataset and n independent curate branches (each a worker process under --jobs)."""
    s = 'ft 0.1\ndataset tasks {\n  source = jsonl("data/tasks.jsonl")\n  schema { prompt: str, completion: str }\n}\n'
    for i in range(n):
        src = "missing_table" if i == bad else "tasks"
        s += (f'curate c{i} {{\n  from = tasks\n  sql "SELECT prompt, completion, md5(prompt || \'{i}\') AS h '
              f'FROM {src}"\n  split {{ train = 0.8, heldout = 0.2, by = h, seed = {i} }}\n}}\n')
    return s


def project(root: Path, text: str, rows: int = 2000) -> Path:
    (root / "data").mkdir(parents=True, exist_ok=True)
    with (root / "data" / "tasks.jsonl").open("w") as f:
        for i in range(rows):
            f.write(json.dumps({"prompt": f"question {i} about {i % 97}", "completion": str(i * 7)}) + "\n")
    (root / "p.ft").write_text(text)
    return root


def objects(root: Path) -> set[str]:
    return {p.name for p in (root / ".ft" / "objects").iterdir()}


def test_jobs_2_runs_branches_at_once_with_the_same_artifacts_as_jobs_1(tmp_path: Path) -> None:
    one = project(tmp_path / "one", branches(3))
    two = project(tmp_path / "two", branches(3))
    r1 = run_ft("run", "p.ft", cwd=one)
    r2 = run_ft("run", "p.ft", "--jobs", "2", cwd=two)
    assert r1.returncode == 0 and r2.returncode == 0, r2.stderr
    assert objects(one) == objects(two) and len(objects(one)) == 4
    lines = [ln.split()[:2] for ln in r2.stderr.splitlines() if ln.strip().startswith(("run ", "done "))]
    # Two branches start before either is done: they ran at the same time.
    first_done = next(i for i, ln in enumerate(lines) if ln[0] == "done" and ln[1] != "dataset.tasks")
    started = [ln[1] for ln in lines[:first_done] if ln[0] == "run" and ln[1].startswith("curate.")]
    assert len(started) == 2, r2.stderr
    seq = [ln.split()[:2] for ln in r1.stderr.splitlines() if ln.strip().startswith(("run ", "done "))]
    assert all(seq[i][0] == "run" and seq[i + 1] == ["done", seq[i][1]] for i in range(0, len(seq), 2))
    again = run_ft("run", "p.ft", "--jobs", "2", cwd=two)
    assert "nothing to do: 4 steps cached" in again.stderr


def test_jobs_2_reuses_its_two_workers_for_four_jobs(tmp_path: Path) -> None:
    # the dataset, then three branches two at a time: each job after the first two runs in a
    # worker that a finished job left warm (runtime/warmpool.py), not in a new process
    p = project(tmp_path, branches(3))
    r = run_ft("run", "p.ft", "--jobs", "2", "-v", cwd=p)
    assert r.returncode == 0, r.stderr
    assert "4 jobs ran in 2 worker processes" in r.stderr, r.stderr


def test_jobs_0_is_a_usage_error(tmp_path: Path) -> None:
    p = project(tmp_path, branches(1))
    r = run_ft("run", "p.ft", "--jobs", "0", cwd=p)
    assert r.returncode == 2 and "--jobs must be at least 1" in r.stderr
    assert "Traceback" not in r.stderr and not (p / ".ft" / "objects").exists()


def test_a_failure_skips_its_dependants_and_keep_going_runs_the_rest(tmp_path: Path) -> None:
    text = branches(2) + ('dataset bad {\n  source = jsonl("data/bad.jsonl")\n  schema { prompt: str, completion: str }\n}\n'
                          'curate after {\n  from = bad\n  sql "SELECT prompt FROM bad"\n}\n')
    p = project(tmp_path, text)
    good = (p / "data" / "tasks.jsonl").read_text().splitlines()[:300]
    (p / "data" / "bad.jsonl").write_text("\n".join(good) + "\n{not json\n")  # found at run time
    r = run_ft("run", "p.ft", "--jobs", "2", "--keep-going", cwd=p)
    assert r.returncode == 1, r.stderr
    assert "step dataset.bad failed" in r.stderr
    assert "skipped curate.after upstream dataset.bad failed" in " ".join(r.stderr.split()), r.stderr
    assert ", 1 failed, 1 skipped" in r.stderr
    done = {ln.split()[1] for ln in r.stderr.splitlines() if ln.strip().startswith("done ")}
    assert {"curate.c0", "curate.c1"} <= done
    stop = run_ft("run", "p.ft", "--jobs", "2", "--force", "c0", "--force", "c1", cwd=p)
    assert stop.returncode == 1, stop.stderr
    # Without -k nothing new starts once the failure is seen; a step that had not started by
    # then says so. (Whether curate.c1 started before dataset.bad failed is the machine's
    # timing: on a loaded machine curate.c0 can finish first and free the slot.)
    rows = [ln.split() for ln in stop.stderr.splitlines() if ln.startswith("  ") and ln.split()]
    failed_at = next(i for i, ln in enumerate(rows) if ln[:2] == ["failed", "dataset.bad"])
    assert not [ln for ln in rows[failed_at:] if ln[0] == "run"], stop.stderr
    started = {ln[1] for ln in rows if ln[0] == "run"}
    flat = " ".join(stop.stderr.split())
    assert all(c in started or f"skipped {c} an earlier step failed" in flat for c in ("curate.c0", "curate.c1"))


def test_threads_and_gpus_are_split_between_jobs() -> None:
    pool = resources.Pool(2, gpus=["0", "1", "2"])
    pool.threads = 8 // 2
    a = pool.take(resources.Need(gpus=2, processes=2), 2)
    assert a is not None and a.env["CUDA_VISIBLE_DEVICES"] == "0,1" and a.env["OMP_NUM_THREADS"] == "4"
    assert pool.take(resources.Need(gpus=2), 2) is None  # one GPU left: the job waits
    b = pool.take(resources.Need(gpus=0), 2)
    assert b is not None and b.env["CUDA_VISIBLE_DEVICES"] == ""  # a CPU job sees no GPU
    assert pool.take(resources.Need(), 2) is None  # both slots taken
    pool.give(a)
    c = pool.take(resources.Need(gpus=2), 2)
    assert c is not None and c.gpus == ["0", "1"]


def _workers(project_dir: Path) -> list[int]:
    """Worker processes (python -m ftlang.runtime.worker) of this project's run: one-job
    workers name the job file, warm ones (`--serve`) run in the project's folder."""
    out = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            cmd = (d / "cmdline").read_bytes().split(b"\0")
            here = os.readlink(d / "cwd") == str(project_dir)
        except OSError:
            continue
        if b"ftlang.runtime.worker" in cmd and (here or any(str(project_dir).encode() in c for c in cmd)):
            out.append(int(d.name))
    return out


def _alive(pid: int) -> bool:
    try:
        return b"zombie" not in Path(f"/proc/{pid}/status").read_bytes().lower()
    except OSError:
        return False


@pytest.mark.parametrize("sig", [pytest.param(signal.SIGINT, marks=pytest.mark.slow), signal.SIGKILL])
def test_ctrl_c_or_sigkill_leaves_no_worker_behind(tmp_path: Path, sig: int) -> None:
    heavy = branches(2).replace("md5(prompt || '0')", "md5(repeat(prompt, 400) || '0')") \
        .replace("md5(prompt || '1')", "md5(repeat(prompt, 400) || '1')")
    p = project(tmp_path, heavy, rows=150_000)
    proc = subprocess.Popen([*ft_bin(), "run", "p.ft", "--jobs", "2"], cwd=p, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, env=dict(os.environ, NO_COLOR="1"))
    deadline = time.monotonic() + 120
    pids: list[int] = []
    while len(pids) < 2:
        assert proc.poll() is None, "ft run ended before both branches started: make them slower"
        assert time.monotonic() < deadline, "the two workers never ran together"
        time.sleep(0.05)
        pids = _workers(p)
    os.kill(proc.pid, sig)
    proc.wait(timeout=60)
    end = time.monotonic() + 15  # PR_SET_PDEATHSIG (SIGKILL) or the process-group kill (Ctrl-C)
    while any(_alive(w) for w in pids) and time.monotonic() < end:
        time.sleep(0.1)
    assert not [w for w in pids if _alive(w)], "a worker outlived ft run"
    if sig == signal.SIGINT:
        assert proc.returncode == 130 and "interrupted" in proc.stderr.read().decode()
    r = run_ft("run", "p.ft", "--jobs", "2", cwd=p)  # what was committed is whole; the rest reruns
    assert r.returncode == 0, r.stderr


@pytest.mark.slow
def test_a_4_point_training_sweep_with_jobs_2_gives_the_artifacts_of_jobs_1(tmp_path: Path,
                                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """torch's CPU reductions depend on the thread count, and each of 2 jobs on 2 cores gets
    cores // 2 threads: the sequential run is given the same count, so the bytes must match."""
    from test_ray import SWEEP, sweep_project

    text = SWEEP.replace("lr = sweep [1e-3, 3e-3]", "lr = sweep [1e-3, 2e-3, 3e-3, 4e-3]")
    one, two = sweep_project(tmp_path / "one"), sweep_project(tmp_path / "two")
    (one / "p.ft").write_text(text)
    (two / "p.ft").write_text(text)
    threads = str(max(1, resources.cores() // 2))
    monkeypatch.setenv("OMP_NUM_THREADS", threads)
    monkeypatch.setenv("MKL_NUM_THREADS", threads)
    a = run_ft("run", "p.ft", cwd=one)
    b = run_ft("run", "p.ft", "--jobs", "2", cwd=two)
    assert a.returncode == 0 and b.returncode == 0, b.stderr
    assert objects(one) == objects(two) and len(objects(one)) == 6
