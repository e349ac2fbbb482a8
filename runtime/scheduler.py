"""Runs a program's nodes as their inputs become ready: one at a time in this process
(`--jobs 1`, the default, exactly as before), or several at once, each in a worker
process (`--jobs N`; a worker is kept warm for the next job of the same environment:
runtime/warmpool.py) or as a Ray task (`--executor ray`), with a shared remote cache.

A node's key is computed once its inputs are committed, so early cutoff falls out: a node
that reruns and yields the same bytes leaves its dependants' keys unchanged. Everything
that touches the store (decide, commit, state, ledger, uploads) happens here, in the driver;
jobs only write their tmp `out` folder.

Resources (runtime/resources.py): `--jobs N` CPU slots, and the visible GPUs. A job that
needs GPUs gets its own `CUDA_VISIBLE_DEVICES`; a CPU job gets none; every job gets
`cores // jobs` threads (OMP_NUM_THREADS), so N jobs never oversubscribe the machine.
"""

from __future__ import annotations

import queue
import shutil
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ftlang.compiler.ir import Program, refs_in
from ftlang.runtime import ledger, resources
from ftlang.runtime.board import board
from ftlang.runtime.display import Display, fmt_seconds
from ftlang.runtime.executor import (
    RunResult,
    _after,
    _rel,
    _show_metrics,
    _summary,
    complete_node,
    diagnose,
    prepare_node,
    run_step,
    source_lines,
)
from ftlang.runtime.hashing import StatCache
from ftlang.runtime.keys import components, node_key
from ftlang.runtime.planner import decide
from ftlang.runtime.store import Entry, Store
from ftlang.stdlib import distributed

if TYPE_CHECKING:
    from ftlang.runtime.warmpool import WarmPool


@dataclass
class Options:
    jobs: int = 1
    executor: str = "local"  # local | ray
    address: str | None = None  # a Ray cluster; None starts a local one
    remote: Any = None  # a runtime.remote.Remote, already probed
    remote_required: bool = False


@dataclass
class _Running:
    nid: str
    key: str
    comp: dict[str, Any]
    reasons: list[str]
    tmp: Path
    job: Any
    grant: resources.Grant
    t0: float
    thread: threading.Thread
    ckpt: Any = None  # remote checkpoint uploader, for training nodes


@dataclass
class _Ready:
    nid: str
    key: str
    comp: dict[str, Any]
    reasons: list[str]
    need: resources.Need = field(default_factory=resources.Need)


def export_gates(program: Program, in_run: set[str]) -> dict[str, list[str]]:
    """export -> the evals of this run that measure its model and assert something: the export
    waits for them and is not published when one of their asserts fails. Not an input: the
    export's key is unchanged (an eval that reads the export itself never gates it)."""
    nodes = program.nodes
    evals = [n for n in nodes.values() if n.kind == "eval" and n.asserts and n.id in in_run]
    gates: dict[str, list[str]] = {}
    for ex in nodes.values():
        model = ex.params.get("model") if ex.kind == "export" else None
        target = getattr(model, "node", None)
        if target is None:
            continue
        found = [e.id for e in evals if any(r.node == target for r in refs_in(e.params.get("models")))
                 and all(r.node != ex.id for r in e.refs())]
        if found:
            gates[ex.id] = found
    return gates


class Scheduler:
    def __init__(self, program: Program, store: Store, stat: StatCache, order: list[str],
                 display: Display, *, force: set[str], keep_going: bool, command: str,
                 options: Options) -> None:
        self.program, self.store, self.stat, self.order = program, store, stat, order
        self.force, self.keep_going, self.command, self.opts = force, keep_going, command, options
        self.parallel = options.jobs > 1 or options.executor == "ray"
        self.display = board(display) if self.parallel else display
        self.run_id = time.strftime("%Y%m%d-%H%M%S") + "-" + uuid.uuid4().hex[:6]
        self.result = RunResult(self.run_id)
        self.entries: dict[str, Entry] = {}
        self.broken: dict[str, str] = {}  # node -> why it produced nothing
        self.gates = export_gates(program, set(order))
        self.asserts_failed: set[str] = set()  # evals with a failing assert: they block exports
        self.stop = False
        self.events: queue.Queue[tuple[Any, ...]] = queue.Queue()
        self.cancel = threading.Event()
        self.running: dict[str, _Running] = {}
        self.ready: list[_Ready] = []
        self.pool = resources.Pool(options.jobs)
        self.ray_gpus = 0
        self.warm: WarmPool | None = None  # --jobs N: workers kept warm across jobs
        if self.parallel and options.executor != "ray":
            from ftlang.runtime.warmpool import WarmPool

            self.warm = WarmPool()

    # ---- the loop ---------------------------------------------------------------
    def run(self) -> RunResult:
        from ftlang.runtime.executor import preflight_run

        # Before any node: what would fail only after the work (an export's hub push offline).
        early = preflight_run(self.program, self.order, self.run_id, self.display)
        if early:  # nothing ran: no ledger row, no state
            self.result.diagnostics.extend(early)
            return self.result
        started = time.time()
        self.display.width = max([len(n) for n in self.order] + [16])
        waiting = list(self.order)
        try:
            if self.opts.executor == "ray":
                from ftlang.runtime import ray_executor

                slots, self.ray_gpus = ray_executor.connect(self.opts.address, self.display)
                if self.opts.jobs == 1:  # Ray places the tasks: as many in flight as it has CPUs
                    self.opts.jobs = slots
                self.pool = resources.Pool(self.opts.jobs, gpus=[])
            while waiting or self.ready or self.running:
                waiting = self._advance(waiting)
                self._start_ready()
                if self.running:
                    self._handle(self._next_event())
                elif not self.ready and waiting:  # unreachable with a topological order
                    raise RuntimeError(f"nothing can run: {waiting[0]} waits on nodes outside the run")
        except KeyboardInterrupt:
            self.result.interrupted = True
            self._stop_all()
            self.display.text("interrupted: committed results are kept; run again to resume")
        except _Fatal as fatal:  # wrong credentials, --remote-required: nothing more starts
            self._stop_all()
            self.result.interrupted = True
            raise fatal.error from None
        finally:
            self._stop_all()
            if self.warm is not None:
                self.warm.close()
                if self.display.verbose and self.warm.jobs:
                    self.display.text(f"{self.warm.jobs} jobs ran in {self.warm.started} worker processes")
            try:
                self.stat.save()
            except OSError as exc:  # only a shortcut: the next run re-hashes the sources
                self.display.text(f"warning: could not save the stat cache: {exc.strerror or exc}")
            status = "interrupted" if self.result.interrupted else ("ok" if self.result.ok else "failed")
            try:
                ledger.record(self.store.root, self.run_id, Path(self.program.file).name, self.command,
                              started, time.time(), status, self.result.records)
            except Exception as exc:  # the ledger must never turn a good run into a crash
                self.display.text(f"warning: could not write the run ledger: {exc}")
        return self.result

    def _next_event(self) -> tuple[Any, ...]:
        while True:
            try:
                return self.events.get(timeout=0.5)
            except queue.Empty:
                continue

    def _advance(self, waiting: list[str]) -> list[str]:
        """Resolves every waiting node whose inputs are settled: skipped, cached, fetched, or
        ready to run (sequentially: run now, in order, exactly as the old loop did)."""
        pending = set(waiting) | {r.nid for r in self.ready} | set(self.running)
        progressed = True
        while progressed:
            progressed = False
            for nid in waiting:
                ups = self._ups(nid)
                if any(u in pending for u in ups):
                    continue
                waiting = [n for n in waiting if n != nid]
                pending.discard(nid)
                ready = self._resolve(nid, ups)
                if ready is not None:
                    if self.parallel:
                        self.ready.append(ready)
                        pending.add(nid)
                    else:
                        self._run_here(ready)
                progressed = True
                break
        return waiting

    def _ups(self, nid: str) -> list[str]:
        """What `nid` waits for: its inputs and, for an export, the evals that gate it."""
        return sorted({r.node for r in self.program.nodes[nid].refs()} | set(self.gates.get(nid, ())))

    def _resolve(self, nid: str, ups: list[str]) -> _Ready | None:
        node = self.program.nodes[nid]
        bad = [u for u in ups if u in self.broken]
        if self.stop or bad:
            self._skip(nid, f"upstream {bad[0]} {self.broken[bad[0]]}" if bad else "an earlier step failed")
            return None
        gate = next((g for g in self.gates.get(nid, ()) if g in self.asserts_failed), None)
        if gate is not None:
            self._skip(nid, f"an assert of {gate} failed: not published")
            return None
        comp = components(node, {u: self.entries[u] for u in ups}, self.stat, run_id=self.run_id)
        key = node_key(comp)
        decision = decide(node, comp, key, self.store, self.stat, nid in self.force)
        if decision.corrupt_digest is not None:
            moved = self.store.quarantine(decision.corrupt_digest)
            self.display.line("warning", nid, f"cached artifact is corrupt: {decision.corrupt}; moved to "
                              f"{_rel(moved, self.program.project)}")
        if decision.entry is not None:
            self.display.line("cached", nid)
            self.result.records.append(ledger.NodeRecord(nid, node.kind, "cached", key, decision.entry.digest,
                                                         meta=decision.entry.meta, params=comp))
            self._settle(nid, key, comp, decision.entry)
            return None
        if self.opts.remote is not None and nid not in self.force and "nonce" not in comp:
            entry = self._fetch(nid, key)
            if entry is not None:
                self.result.records.append(ledger.NodeRecord(nid, node.kind, "cached", key, entry.digest,
                                                             reasons=["fetched from the remote cache"],
                                                             meta=entry.meta, params=comp))
                self._settle(nid, key, comp, entry)
                return None
        return _Ready(nid, key, comp, decision.reasons, resources.need(node, self.pool))

    def _skip(self, nid: str, why: str) -> None:
        self.broken[nid] = "was skipped"
        self.display.line("skipped", nid, why)
        self.result.records.append(ledger.NodeRecord(nid, self.program.nodes[nid].kind, "skipped",
                                                     reasons=[why]))

    def _settle(self, nid: str, key: str, comp: dict[str, Any], entry: Entry) -> None:
        """A node has its artifact (cached, fetched or just run): state, then after-work."""
        node = self.program.nodes[nid]
        try:  # state only explains the next plan and roots gc: losing it loses no artifact
            self.store.write_state(nid, {"key": key, "components": comp, "digest": entry.digest,
                                         "lines": source_lines(node, self.stat)})
        except OSError as exc:
            self.display.line("warning", nid, f"could not record its state: {exc.strerror or exc}")
        self.entries[nid] = entry
        if not _after(node, entry, self.store, self.display, self.result):
            self.asserts_failed.add(nid)

    def _failed(self, nid: str, key: str, comp: dict[str, Any], reasons: list[str], seconds: float,
                diag: Any) -> None:
        node = self.program.nodes[nid]
        self.result.diagnostics.append(diag)
        self.broken[nid] = "failed"
        self.result.records.append(ledger.NodeRecord(nid, node.kind, "failed", key, None, seconds, reasons,
                                                     {"error": diag.message}, comp))
        self.stop = self.stop or not self.keep_going

    def _ran(self, nid: str, key: str, comp: dict[str, Any], reasons: list[str], seconds: float,
             entry: Entry) -> None:
        node = self.program.nodes[nid]
        self.display.line("done", nid, f"{fmt_seconds(seconds)}{_summary(node, entry.meta)}")
        self.result.records.append(ledger.NodeRecord(nid, node.kind, "ran", key, entry.digest, seconds,
                                                     reasons, entry.meta, comp))
        _show_metrics(node, entry, self.store, self.display)
        self._upload(nid, entry)
        self._settle(nid, key, comp, entry)

    # ---- the remote cache -------------------------------------------------------
    def _remote_failed(self, exc: Any) -> None:
        """An unreachable remote mid-run: one warning, then local only (or fail when required)."""
        from ftlang.runtime.remote import RemoteError

        assert isinstance(exc, RemoteError)
        if exc.kind == "auth" or self.opts.remote_required:
            raise _Fatal(exc)
        self.display.text(f"warning: {exc}; continuing without it")
        self.opts.remote = None

    def _fetch(self, nid: str, key: str) -> Entry | None:
        from ftlang.runtime.remote import RemoteError, human

        remote = self.opts.remote
        try:
            hit = remote.lookup(key)
            if hit is None:
                return None
            t0 = time.monotonic()
            entry = remote.fetch(hit, self.store)
        except RemoteError as exc:
            if exc.kind == "corrupt":
                self.display.line("warning", nid, str(exc))
                return None
            self._remote_failed(exc)
            return None
        self.display.line("remote", nid, f"fetched {human(hit.size)} in {fmt_seconds(time.monotonic() - t0)}")
        return entry

    def _checkpoints(self, node: Any, key: str) -> Any:
        from ftlang.runtime.remote import CheckpointSync, RemoteError

        if self.opts.remote is None or node.kind != "train":
            return None
        from ftlang.runtime.launch import FLAGS
        from ftlang.stdlib import distributed

        nodes = distributed.world(node.params)[1]  # several machines: each node rank's own
        try:
            return CheckpointSync(self.opts.remote, self.store, key,
                                  lambda msg: self.display.line("remote", node.id, msg),
                                  node_rank=FLAGS.node_rank, nodes=nodes)
        except RemoteError as exc:
            self._remote_failed(exc)
            return None

    def _upload(self, nid: str, entry: Entry) -> None:
        from ftlang.runtime.remote import RemoteError

        if self.opts.remote is None:
            return
        try:
            self.opts.remote.upload(entry, self.store)
            self.opts.remote.drop_checkpoints(entry.key)
        except RemoteError as exc:
            if exc.kind == "auth" or self.opts.remote_required:
                raise _Fatal(exc) from None
            self.display.line("warning", nid, f"not uploaded: {exc}")

    # ---- running ----------------------------------------------------------------
    def _run_here(self, r: _Ready) -> None:
        """`--jobs 1`: in this process, as ftlang always ran a node."""
        from ftlang.runtime.executor import _run_node

        node = self.program.nodes[r.nid]
        ckpt = self._checkpoints(node, r.key)
        try:
            entry, seconds, diag = _run_node(node, r.key, self.entries, self.store, self.program, self.display,
                                             r.reasons)
        finally:
            if ckpt is not None:
                ckpt.close()
        if entry is None:
            self._failed(r.nid, r.key, r.comp, r.reasons, seconds, diag)
        else:
            self._ran(r.nid, r.key, r.comp, r.reasons, seconds, entry)

    def _start_ready(self) -> None:
        for r in list(self.ready):
            if self.stop:
                self.ready.remove(r)
                self._skip(r.nid, "an earlier step failed")
                continue
            grant = self.pool.take(r.need, self.opts.jobs)
            if grant is None:
                continue  # waits for a slot or a GPU
            self.ready.remove(r)
            self._start(r, grant)

    def _start(self, r: _Ready, grant: resources.Grant) -> None:
        node = self.program.nodes[r.nid]
        t0 = time.monotonic()
        made: list[Path] = []
        try:
            tmp, job = prepare_node(node, r.key, self.entries, self.store, self.program, self.display,
                                    r.reasons, made)
        except Exception as exc:  # a refused export target, a full disk: the node fails here
            for t in made:
                shutil.rmtree(t, ignore_errors=True)
            self.pool.give(grant)
            self.display.line("failed", r.nid, fmt_seconds(time.monotonic() - t0))
            self._failed(r.nid, r.key, r.comp, r.reasons, time.monotonic() - t0,
                         diagnose(node, exc, self.store, self.program))
            return
        job.env.update(grant.env)
        ckpt = self._checkpoints(node, r.key)
        thread = threading.Thread(target=self._work, args=(r.nid, job, tmp, grant), daemon=True,
                                  name=f"ft-{r.nid}")
        self.running[r.nid] = _Running(r.nid, r.key, r.comp, r.reasons, tmp, job, grant, t0, thread, ckpt)
        self.display.started(r.nid)
        thread.start()

    def _work(self, nid: str, job: Any, tmp: Path, grant: resources.Grant) -> None:
        """In a thread: waits on the job's process (or Ray task); events go to the driver."""
        def log(msg: str) -> None:
            self.events.put(("log", nid, msg))

        def progress(*a: Any) -> None:
            self.events.put(("progress", nid, a))

        try:
            if self.opts.executor == "ray":
                from ftlang.runtime import ray_executor

                node = self.program.nodes[nid]
                gpus = grant.processes if self.ray_gpus and node.kind in resources.GPU_KINDS else 0
                meta = ray_executor.run(job, tmp / "job.pkl", log=log, progress=progress, cancel=self.cancel,
                                        gpus=min(gpus, self.ray_gpus))
            elif distributed.launches(self.program.nodes[nid].params):
                # A distributed node (torchrun): run_step owns how it is launched.
                meta = run_step(job, tmp, _Relay(self.events, nid, self.display.verbose))
            else:
                from ftlang.runtime.worker import run_job

                meta = run_job(job, tmp / "job.pkl", log=log, progress=progress, cancel=self.cancel,
                               pool=self.warm)
            self.events.put(("done", nid, meta, None))
        except BaseException as exc:  # noqa: BLE001 - handed to the driver, which decides
            self.events.put(("done", nid, None, exc))

    def _handle(self, ev: tuple[Any, ...]) -> None:
        kind, nid = ev[0], ev[1]
        if kind == "log":
            self.display.log(nid)(ev[2])
            return
        if kind == "progress":
            self.display.progress(nid)(*ev[2])
            return
        run = self.running.pop(nid)
        meta, exc = ev[2], ev[3]
        self.pool.give(run.grant)
        if run.ckpt is not None:
            run.ckpt.close()
        node = self.program.nodes[nid]
        try:
            if exc is not None:
                raise exc
            entry = complete_node(node, run.key, run.job, meta, self.entries, self.store, self.program)
        except KeyboardInterrupt:
            if self.cancel.is_set():
                return
            raise
        except Exception as err:
            self.display.line("failed", nid, fmt_seconds(time.monotonic() - run.t0))
            self._failed(nid, run.key, run.comp, run.reasons, time.monotonic() - run.t0,
                         diagnose(node, err, self.store, self.program))
            return
        finally:
            shutil.rmtree(run.tmp, ignore_errors=True)
            self.display.finished(nid)
        self._ran(nid, run.key, run.comp, run.reasons, time.monotonic() - run.t0, entry)

    def _stop_all(self) -> None:
        """Ctrl-C, SIGTERM or a fatal error: every job's process group is killed (run_job does
        it when `cancel` is set), and the driver waits for them before it returns."""
        if not self.running:
            return
        self.cancel.set()
        for run in list(self.running.values()):
            run.thread.join(timeout=30)
            if run.ckpt is not None:
                run.ckpt.close()
            shutil.rmtree(run.tmp, ignore_errors=True)
            self.display.finished(run.nid)
        self.running.clear()


class _Fatal(Exception):
    """A remote error that ends the run (wrong credentials, --remote-required)."""

    def __init__(self, exc: Exception) -> None:
        super().__init__(str(exc))
        self.error = exc


class _Relay:
    """A Display stand-in for a step run by `run_step` in a job thread: its logs and
    progress go through the driver's event queue, like a worker's."""

    def __init__(self, events: queue.Queue[tuple[Any, ...]], nid: str, verbose: bool) -> None:
        self.events, self.nid, self.verbose = events, nid, verbose

    def log(self, node: str) -> Any:
        return lambda msg: self.events.put(("log", self.nid, msg))

    def progress(self, node: str) -> Any:
        return lambda *a: self.events.put(("progress", self.nid, a))
