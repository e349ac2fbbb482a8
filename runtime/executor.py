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
import uuid
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
from ftlang.runtime.keys import components, node_key
from ftlang.runtime.planner import decide
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
            *, force: set[str] | None = None, keep_going: bool = False, command: str = "run") -> RunResult:
    force = force or set()
    run_id = time.strftime("%Y%m%d-%H%M%S") + "-" + uuid.uuid4().hex[:6]
    result = RunResult(run_id)
    entries: dict[str, Entry] = {}
    broken: dict[str, str] = {}  # node -> why it produced nothing
    started = time.time()
    display.width = max([len(n) for n in order] + [16])
    stop = False
    try:
        for nid in order:
            node = program.nodes[nid]
            ups = sorted({r.node for r in node.refs()})
            bad = [u for u in ups if u in broken]
            if stop or bad:
                why = f"upstream {bad[0]} {broken[bad[0]]}" if bad else "an earlier step failed"
                broken[nid] = "was skipped"
                display.line("skipped", nid, why)
                result.records.append(ledger.NodeRecord(nid, node.kind, "skipped", reasons=[why]))
                continue
            comp = components(node, {u: entries[u] for u in ups}, stat, run_id=run_id)
            key = node_key(comp)
            decision = decide(node, comp, key, store, stat, nid in force)
            entry, reasons = decision.entry, decision.reasons
            if decision.corrupt_digest is not None:
                moved = store.quarantine(decision.corrupt_digest)
                display.line("warning", nid, f"cached artifact is corrupt: {decision.corrupt}; moved to "
                             f"{_rel(moved, program.project)}")
            if entry is not None:
                display.line("cached", nid)
                result.records.append(ledger.NodeRecord(nid, node.kind, "cached", key, entry.digest,
                                                        meta=entry.meta, params=comp))
            else:
                entry, seconds, diag = _run_node(node, key, entries, store, program, display, reasons)
                if entry is None:
                    assert diag is not None
                    result.diagnostics.append(diag)
                    broken[nid] = "failed"
                    result.records.append(ledger.NodeRecord(nid, node.kind, "failed", key, None, seconds,
                                                            reasons, {"error": diag.message}, comp))
                    stop = not keep_going
                    continue
                display.line("done", nid, f"{fmt_seconds(seconds)}{_summary(node, entry.meta)}")
                result.records.append(ledger.NodeRecord(nid, node.kind, "ran", key, entry.digest, seconds,
                                                        reasons, entry.meta, comp))
                _show_metrics(node, entry, store, display)
            try:  # state only explains the next plan and roots gc: losing it loses no artifact
                store.write_state(nid, {"key": key, "components": comp, "digest": entry.digest,
                                        "lines": source_lines(node, stat)})
            except OSError as exc:
                display.line("warning", nid, f"could not record its state: {exc.strerror or exc}")
            entries[nid] = entry
            _after(node, entry, store, display, result)
    except KeyboardInterrupt:
        result.interrupted = True
        display.text("interrupted: committed results are kept; run again to resume")
    finally:
        try:
            stat.save()
        except OSError as exc:  # only a shortcut: the next run re-hashes the sources
            display.text(f"warning: could not save the stat cache: {exc.strerror or exc}")
        status = "interrupted" if result.interrupted else ("ok" if result.ok else "failed")
        try:
            ledger.record(store.root, run_id, Path(program.file).name, command, started, time.time(), status,
                          result.records)
        except Exception as exc:  # the ledger must never turn a good run into a crash
            display.text(f"warning: could not write the run ledger: {exc}")
    return result


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
    display.line("run", node.id, "; ".join(r.split("\n", 1)[0] for r in reasons))
    t0 = time.monotonic()
    tmp: Path | None = None
    try:
        _preflight(node)
        tmp = store.new_tmp(node.id)
        job = Job(node=node.id, name=node.name, run=node.spec.run,
                  params=materialize(node.params, entries, store), out=tmp / "out",
                  project=program.project, cache=store.cache, key=key, verbose=display.verbose,
                  events=tmp / "events.jsonl")
        meta = run_step(job, tmp, display)
        meta = json.loads(json.dumps(estimate.annotate(meta, program, node, entries, store), default=str))
        entry = store.commit(key, node.id, tmp / "out", meta)
        return entry, time.monotonic() - t0, None
    except StepError as exc:
        diag = _failure(node, str(exc), exc.hint)
    except PublishError as exc:
        diag = _failure(node, str(exc), exc.hint)
    except WorkerError as exc:
        diag = _failure(node, str(exc), f"the worker's output is in {_rel(exc.log, program.project)}"
                        if exc.log else None)
    except KeyboardInterrupt:
        raise
    except Exception as exc:
        if isinstance(exc, OSError) and exc.strerror:
            message = f"{exc.strerror}" + (f": {exc.filename}" if exc.filename else "")
        else:
            message = f"{type(exc).__name__}: {exc}"
        log = store.root / "logs" / f"{node.id}.log"
        try:
            log.parent.mkdir(parents=True, exist_ok=True)
            log.write_text(traceback.format_exc())
            hint = f"the full traceback is in {_rel(log, program.project)}"
        except OSError as log_exc:  # a full disk must not turn a failed step into a crash
            hint = f"the traceback could not be written to {_rel(log, program.project)} ({log_exc.strerror})"
        diag = _failure(node, message, hint)
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
    display.line("failed", node.id, f"{fmt_seconds(time.monotonic() - t0)}")
    return None, time.monotonic() - t0, diag


def run_step(job: Job, tmp: Path, display: Display) -> dict[str, Any]:
    """Runs a node's step and returns its meta; `job.out` holds the artifact afterwards.
    In this process by default; `runtime.worker` runs the same Job in another process."""
    job.out.mkdir(parents=True, exist_ok=True)
    ctx = StepContext(node=job.node, name=job.name, params=job.params, out=job.out,
                      project=job.project, cache=job.cache, log=display.log(job.node),
                      progress=display.progress(job.node), key=job.key, verbose=job.verbose)
    with quiet_libraries(display.verbose):
        return load_step(job.run)(ctx) or {}


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


def _after(node: Node, entry: Entry, store: Store, display: Display, result: RunResult) -> None:
    """Work after a node is committed or found cached: assertions, publishing exports."""
    if node.asserts:
        metrics = read_metrics(entry, store)
        outcomes = []
        for a in node.asserts:
            diag = asserts.check(a, metrics)
            outcomes.append({"text": a.text, "line": a.span.line, "ok": diag is None,
                             "detail": diag.labels[0].message if diag and diag.labels else None})
            if diag is not None:
                result.diagnostics.append(diag)
                display.line("failed", node.id, f"assert {a.text}")
        for rec in result.records:  # the ledger keeps what was actually checked
            if rec.node == node.id:
                rec.meta = {**rec.meta, "asserts": outcomes}
    to = node.params.get("to")
    if node.kind == "export" and isinstance(to, OutPath):
        _publish(node, entry, Path(to.abs), store, display, result)


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
