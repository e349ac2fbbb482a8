"""Runs a compiled program node by node in topological order, reusing the cache.

A node's key is computed once its inputs are committed, so early cutoff falls out:
a node that reruns and yields the same bytes leaves its dependants' keys unchanged.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import shutil
import time
import traceback
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ftlang.compiler.ir import (
    DESCEND,
    EnvValue,
    FileValue,
    Node,
    OutPath,
    Program,
    RefValue,
    files_in,
    transform,
)
from ftlang.lang.diagnostics import Diagnostic, Label
from ftlang.runtime import asserts, estimate, ledger
from ftlang.runtime.display import Display, fmt_seconds, table
from ftlang.runtime.hashing import StatCache
from ftlang.runtime.publish import PublishError, check_target, publish
from ftlang.runtime.store import Entry, Store
from ftlang.runtime.worker import Job, WorkerError
from ftlang.stdlib.spec import Artifact, StepContext, StepError


@dataclass
class RunResult:
    run_id: str
    records: list[ledger.NodeRecord] = field(default_factory=list)
    diagnostics: list[Diagnostic] = field(default_factory=list)
    interrupted: bool = False

    @property
    def ok(self) -> bool:
        return not self.interrupted and not any(d.level == "error" for d in self.diagnostics)

    def count(self, status: str) -> int:
        return sum(1 for r in self.records if r.status == status)


def materialize(value: Any, entries: dict[str, Entry], store: Store) -> Any:
    """IR values -> what a step sees: Artifacts, Paths, Calls."""
    def fn(v: Any) -> Any:
        if isinstance(v, RefValue):
            e = entries[v.node]
            return Artifact(v.node, e.digest, store.object_path(e.digest), v.port, e.meta)
        if isinstance(v, (FileValue, OutPath)):
            return Path(v.abs)
        if isinstance(v, EnvValue):
            return v.value
        return DESCEND

    return transform(value, fn)


def load_step(spec_run: str) -> Any:
    module, _, func = spec_run.partition(":")
    return getattr(importlib.import_module(module), func)


def execute(program: Program, store: Store, stat: StatCache, order: list[str], display: Display,
            *, force: set[str] | None = None, keep_going: bool = False, command: str = "run",
            options: Any = None) -> RunResult:
    """Runs `order` (topological), reusing the cache. `options` (scheduler.Options) adds
    `--jobs`, `--executor ray` and the remote cache; without it, one node at a time in this
    process, as always. The scheduling itself is runtime/scheduler.py."""
    from ftlang.runtime.scheduler import Options, Scheduler
    from ftlang.stdlib import cputhreads

    cputhreads.prepare_env()  # before any step imports torch: idle threads must not spin
    return Scheduler(program, store, stat, order, display, force=force or set(), keep_going=keep_going,
                     command=command, options=options or Options()).run()


@contextlib.contextmanager
def quiet_libraries(verbose: bool) -> Iterator[None]:
    """Library warnings and info logs that mean nothing to a user stay hidden unless --verbose."""
    if verbose:
        yield
        return
    import logging
    import os
    import warnings

    old_env = {k: os.environ.get(k) for k in ("TRANSFORMERS_VERBOSITY", "DATASETS_VERBOSITY")}
    os.environ.update(TRANSFORMERS_VERBOSITY="error", DATASETS_VERBOSITY="error")
    old_disable = logging.root.manager.disable
    logging.disable(logging.WARNING)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        logging.disable(old_disable)
        for k, v in old_env.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def source_lines(node: Node, stat: StatCache) -> dict[str, int]:
    out = {}
    for f in files_in(node.params):
        n = stat.lines(Path(f.abs))
        if n is not None:
            out[f.rel] = n
    return out


def _run_node(node: Node, key: str, entries: dict[str, Entry], store: Store, program: Program,
              display: Display, reasons: list[str]) -> tuple[Entry | None, float, Diagnostic | None]:
    """Runs one node in this process and commits it (the sequential path, `--jobs 1`)."""
    t0 = time.monotonic()
    tmp: Path | None = None
    try:
        tmp, job = prepare_node(node, key, entries, store, program, display, reasons)
        meta = run_step(job, tmp, display)
        return complete_node(node, key, job, meta, entries, store, program), time.monotonic() - t0, None
    except KeyboardInterrupt:
        raise
    except Exception as exc:
        diag = diagnose(node, exc, store, program)
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
    display.line("failed", node.id, f"{fmt_seconds(time.monotonic() - t0)}")
    return None, time.monotonic() - t0, diag


def prepare_node(node: Node, key: str, entries: dict[str, Entry], store: Store, program: Program,
                 display: Display, reasons: list[str], tmp_out: list[Path] | None = None) -> tuple[Path, Job]:
    """The "run" line, the preflight, a tmp folder and the node's Job (in the driver)."""
    display.line("run", node.id, "; ".join(r.split("\n", 1)[0] for r in reasons))
    _preflight(node)
    tmp = store.new_tmp(node.id)
    if tmp_out is not None:
        tmp_out.append(tmp)  # so a caller can remove it even if building the Job fails
    job = Job(node=node.id, name=node.name, run=node.spec.run,
              params=materialize(node.params, entries, store), out=tmp / "out",
              project=program.project, cache=store.cache, key=key, verbose=display.verbose,
              events=tmp / "events.jsonl")
    return tmp, job


def complete_node(node: Node, key: str, job: Job, meta: dict[str, Any], entries: dict[str, Entry],
                  store: Store, program: Program) -> Entry:
    """The step finished: annotate its meta and commit `job.out` (always in the driver)."""
    meta = json.loads(json.dumps(estimate.annotate(meta, program, node, entries, store), default=str))
    return store.commit(key, node.id, job.out, meta)


def diagnose(node: Node, exc: BaseException, store: Store, program: Program) -> Diagnostic:
    """A failed step as one diagnostic; an unexpected exception's traceback goes to a log."""
    if isinstance(exc, (StepError, PublishError)):
        return _failure(node, str(exc), exc.hint)
    if isinstance(exc, WorkerError):
        return _failure(node, str(exc), f"the worker's output is in {_rel(exc.log, program.project)}"
                        if exc.log else None)
    if isinstance(exc, OSError) and exc.strerror:
        message = f"{exc.strerror}" + (f": {exc.filename}" if exc.filename else "")
    else:
        message = f"{type(exc).__name__}: {exc}"
    log = store.root / "logs" / f"{node.id}.log"
    try:
        log.parent.mkdir(parents=True, exist_ok=True)
        log.write_text("".join(traceback.format_exception(exc)))
        hint = f"the full traceback is in {_rel(log, program.project)}"
    except OSError as log_exc:  # a full disk must not turn a failed step into a crash
        hint = f"the traceback could not be written to {_rel(log, program.project)} ({log_exc.strerror})"
    return _failure(node, message, hint)


def run_step(job: Job, tmp: Path, display: Display) -> dict[str, Any]:
    """Runs a node's step and returns its meta; `job.out` holds the artifact afterwards.
    In this process by default; `runtime.worker` runs the same Job in another process, and
    a train step with `distributed { ... }` runs there under torchrun (runtime/launch.py)."""
    job.out.mkdir(parents=True, exist_ok=True)
    if job.name and _distributed(job):
        from ftlang.runtime import launch

        return launch.run_distributed(job, tmp, display)
    ctx = StepContext(node=job.node, name=job.name, params=job.params, out=job.out,
                      project=job.project, cache=job.cache, log=display.log(job.node),
                      progress=display.progress(job.node), key=job.key, verbose=job.verbose)
    with quiet_libraries(display.verbose):
        return load_step(job.run)(ctx) or {}


def _distributed(job: Job) -> bool:
    from ftlang.stdlib import distributed

    return job.run == "ftlang.stdlib.train:run" and distributed.launches(job.params)


def preflight_run(program: Program, order: list[str], run_id: str, display: Display) -> list[Diagnostic]:
    """Before any step runs: what would fail only after the work (an export's `push` that
    cannot reach the Hub: offline, no token). Also tells steps which run and file they
    belong to (trackers name their runs by it, model cards quote the source)."""
    import os

    os.environ.update(FTLANG_RUN_ID=run_id, FTLANG_SOURCE=str(Path(program.file).resolve()))
    out = []
    for nid in order:
        node = program.nodes[nid]
        if node.kind == "export" and node.params.get("push") is not None:
            from ftlang.stdlib import hub

            found = hub.problem()
            if found is not None:
                span = node.attr_spans.get("push", node.span)
                display.line("failed", nid, "not started: " + found[0])
                out.append(Diagnostic("FT0300", f"{nid}: {found[0]}", [Label(span, "push")],
                                      help=found[1], notes=["nothing was run"]))
    return out


def _preflight(node: Node) -> None:
    """Refuse early what would fail after the work: an export whose `to` cannot be replaced."""
    to = node.params.get("to")
    if node.kind == "export" and isinstance(to, OutPath):
        check_target(Path(to.abs))


def _rel(p: Path, base: Path) -> str:
    try:
        return str(p.relative_to(base))
    except ValueError:
        return str(p)


def _failure(node: Node, message: str, hint: str | None) -> Diagnostic:
    return Diagnostic("FT0201", f"step {node.id} failed: {message.splitlines()[0] if message else ''}",
                      [Label(node.span, "this step")], help=hint,
                      notes=message.splitlines()[1:6])


def _summary(node: Node, meta: dict[str, Any]) -> str:
    """The "done" line's result: the one-line summary the step kind declares (StepSpec.summary)."""
    text = node.spec.summary(meta)
    return f"  {text}" if text else ""


def read_metrics(entry: Entry, store: Store) -> dict[str, dict[str, float]]:
    path = store.object_path(entry.digest) / "metrics.json"
    if not path.exists():
        return {}
    return json.loads(path.read_text()).get("models", {})


def _show_metrics(node: Node, entry: Entry, store: Store, display: Display) -> None:
    if node.spec.output != "metrics":
        return
    metrics = read_metrics(entry, store)
    if not metrics:
        return
    from ftlang.stdlib.evaluate_spec import metric_key

    names = [metric_key(c) for c in node.params.get("metrics") or []]
    rows = [[model] + [vals.get(m) for m in names] for model, vals in metrics.items()]
    display.text("\n" + table(["model", *names], rows) + "\n")


def _after(node: Node, entry: Entry, store: Store, display: Display, result: RunResult) -> bool:
    """Work after a node is committed or found cached: assertions, publishing exports.
    False when one of its assertions failed."""
    passed = True
    if node.asserts:
        metrics = read_metrics(entry, store)
        outcomes = []
        for a in node.asserts:
            diag = asserts.check(a, metrics)
            outcomes.append({"text": a.text, "line": a.span.line, "ok": diag is None,
                             "detail": diag.labels[0].message if diag and diag.labels else None})
            if diag is not None:
                passed = False
                result.diagnostics.append(diag)
                display.line("failed", node.id, f"assert {a.text}")
        for rec in result.records:  # the ledger keeps what was actually checked
            if rec.node == node.id:
                rec.meta = {**rec.meta, "asserts": outcomes}
    to = node.params.get("to")
    if node.kind == "export" and isinstance(to, OutPath):
        _publish(node, entry, Path(to.abs), store, display, result)
    return passed


def _publish(node: Node, entry: Entry, dest: Path, store: Store, display: Display,
             result: RunResult) -> None:
    """Copies an export to its `to` folder; a refusal or an OS error fails the node, in one line."""
    try:
        if publish(store.object_path(entry.digest), dest, entry.digest, node.id):
            display.line("export", node.id, f"-> {_rel(dest, Path.cwd())}")
        return
    except PublishError as exc:
        message, hint = str(exc), exc.hint
    except OSError as exc:
        message, hint = f"could not publish to {dest}: {exc.strerror or exc}", \
            "free disk space or fix the folder's permissions, then run again: the cache is intact"
    result.diagnostics.append(_failure(node, message, hint))
    display.line("failed", node.id, "export not published")
    for rec in result.records:
        if rec.node == node.id:
            rec.status = "failed"
