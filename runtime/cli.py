"""The `ft` command. Commands that do not train never import torch, peft or trl."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from ftlang import __version__

EXIT_OK, EXIT_FAILED, EXIT_ERRORS = 0, 1, 2


def _color(args: argparse.Namespace, stream: Any) -> bool:
    mode = getattr(args, "color", "auto")
    if mode == "always":
        return True
    if mode == "never" or os.environ.get("NO_COLOR"):
        return False
    return stream.isatty()


def _compile(args: argparse.Namespace) -> Any:
    """The checked program, or None after printing every diagnostic."""
    from ftlang.compiler import compile_file
    from ftlang.lang.diagnostics import FtError, render_all, to_json

    path = Path(args.file)
    if not path.is_file():
        print(f"error: no such file: {args.file}", file=sys.stderr)
        return None
    try:
        program = compile_file(path)
    except FtError as exc:
        text = path.read_text(encoding="utf-8")
        sources = {d.span.file: text for d in exc.diagnostics if d.span} | exc.sources
        if getattr(args, "format", "text") == "json":
            print(to_json(exc.diagnostics))
        else:
            print(render_all(exc.diagnostics, sources, _color(args, sys.stderr)), file=sys.stderr)
        return None
    except UnicodeDecodeError as exc:
        print(f"error: {args.file} is not UTF-8 text ({exc.reason})", file=sys.stderr)
        return None
    if program.warnings and getattr(args, "format", "text") != "json":
        from ftlang.lang.diagnostics import render

        for w in program.warnings:
            print(render(w, program.sources, _color(args, sys.stderr)) + "\n", file=sys.stderr)
    return program


def _store(program: Any) -> Any:
    from ftlang.runtime.store import Store

    return Store(program.project / ".ft")


def cmd_check(args: argparse.Namespace) -> int:
    program = _compile(args)
    if program is None:
        return EXIT_ERRORS
    if args.format == "json":
        from ftlang.lang.diagnostics import to_json

        print(to_json(program.warnings))
    else:
        print(f"{args.file}: ok, {len(program.nodes)} steps")
    return EXIT_OK


def cmd_plan(args: argparse.Namespace) -> int:
    from ftlang.runtime.hashing import StatCache
    from ftlang.runtime.planner import plan, select

    program = _compile(args)
    if program is None:
        return EXIT_ERRORS
    store = _store(program)
    stat = StatCache(store.root / "stat.json")
    try:
        order = select(program, args.select)
    except KeyError as exc:
        print(f"error: --select: no node named {exc}", file=sys.stderr)
        return EXIT_ERRORS
    items = plan(program, store, stat, order, set(_force(args, program)))
    if args.json:
        print(json.dumps([i.to_json() for i in items], indent=1))
        return EXIT_OK
    width = max(len(i.node) for i in items) if items else 10
    for i in items:
        why = "; ".join(i.reasons)
        print(f"  {i.status:<8}{i.node:<{width}}  {why}".rstrip())
        if i.cost:
            print(f"  {'':<8}{'':<{width}}  {i.cost}")
    counts = {s: sum(1 for i in items if i.status == s) for s in ("cached", "run", "pending")}
    print(f"\n{counts['run']} to run, {counts['pending']} pending on upstream changes, "
          f"{counts['cached']} cached")
    return EXIT_OK


def _force(args: argparse.Namespace, program: Any) -> list[str]:
    out = []
    for name in getattr(args, "force", None) or []:
        from ftlang.runtime.planner import matches

        out += [n for n in program.nodes if matches(program, n, name)]
    return out


def cmd_run(args: argparse.Namespace) -> int:
    from ftlang.lang.diagnostics import render_all
    from ftlang.runtime.display import Display, fmt_seconds
    from ftlang.runtime.executor import execute
    from ftlang.runtime.hashing import StatCache
    from ftlang.runtime.planner import select
    from ftlang.runtime.store import ProjectLock

    program = _compile(args)
    if program is None:
        return EXIT_ERRORS
    store = _store(program)
    store.ensure()
    lock = ProjectLock(store.root)
    display = Display(color=_color(args, sys.stderr), quiet=args.quiet, verbose=args.verbose)

    def waiting(holder: str) -> None:
        display.text(f"waiting for another ft run on this project (pid {holder}) to finish...")

    if not lock.acquire(wait=not args.no_wait, on_wait=waiting):
        print(f"error: another ft run holds {store.root / 'lock'} (pid {lock.holder()}); "
              "run again when it finishes, or drop --no-wait to wait", file=sys.stderr)
        return EXIT_FAILED
    from ftlang.runtime import lockfile

    stat = StatCache(store.root / "stat.json")
    facts = lockfile.resolve(program, stat)
    if args.locked:
        diffs = lockfile.differences(lockfile.read(program), facts)
        if diffs:
            lock.release()
            print("error: --locked: the inputs differ from ft.lock:\n  " + "\n  ".join(diffs), file=sys.stderr)
            return EXIT_FAILED
    try:
        store.clean_tmp()
        try:
            order = select(program, args.select)
        except KeyError as exc:
            print(f"error: --select: no node named {exc}", file=sys.stderr)
            return EXIT_ERRORS
        import time

        t0 = time.monotonic()
        result = execute(program, store, stat, order, display,
                         force=set(_force(args, program)), keep_going=args.keep_going)
        if result.ok and not args.select:
            lockfile.write(program, facts, {r.node: r.key for r in result.records if r.key})
    finally:
        lock.release()
    if result.diagnostics:
        print("\n" + render_all(result.diagnostics, program.sources, _color(args, sys.stderr)), file=sys.stderr)
    ran, cached = result.count("ran"), result.count("cached")
    took = fmt_seconds(time.monotonic() - t0)
    if result.interrupted:
        return 130
    if ran == 0 and result.ok:
        display.text(f"nothing to do: {cached} steps cached ({took})")
    else:
        display.text(f"{ran} ran, {cached} cached, {result.count('failed')} failed, "
                     f"{result.count('skipped')} skipped in {took} (run {result.run_id})")
    return EXIT_OK if result.ok else EXIT_FAILED


def cmd_fmt(args: argparse.Namespace) -> int:
    """Rewrites files in the canonical layout; --check only reports (for CI)."""
    from ftlang.lang.diagnostics import FtError, render_all
    from ftlang.lang.format import format_source

    code = EXIT_OK
    for name in args.files:
        path = Path(name)
        text = path.read_text(encoding="utf-8")
        try:
            new = format_source(text, name)
        except FtError as exc:
            print(render_all(exc.diagnostics, {name: text} | exc.sources, _color(args, sys.stderr)),
                  file=sys.stderr)
            code = EXIT_ERRORS
            continue
        if new == text:
            continue
        if args.check:
            print(f"would reformat {name}")
            code = max(code, EXIT_FAILED)
        else:
            path.write_text(new, encoding="utf-8")
            print(f"reformatted {name}")
    return code


def graph_dot(program: Any) -> str:
    lines = ["digraph ft {", "  rankdir=LR;", '  node [shape=box, style="rounded,filled", fillcolor="#eef3fb"];']
    for n in program.order():
        lines.append(f'  "{n}";')
    for u, v, d in program.graph.edges(data=True):
        label = f' [label="{d["port"]}"]' if d.get("port") else ""
        lines.append(f'  "{u}" -> "{v}"{label};')
    lines.append("}")
    return "\n".join(lines)


def cmd_graph(args: argparse.Namespace) -> int:
    program = _compile(args)
    if program is None:
        return EXIT_ERRORS
    g = program.graph
    order = program.order()
    if args.format in ("svg", "png"):
        import shutil
        import subprocess

        dot = shutil.which("dot")
        if dot is None:
            print("error: rendering SVG/PNG needs Graphviz's `dot` program; install it "
                  "(Debian/Ubuntu: apt-get install graphviz; macOS: brew install graphviz), "
                  "or use --format dot / --format mermaid", file=sys.stderr)
            return EXIT_FAILED
        out = subprocess.run([dot, f"-T{args.format}"], input=graph_dot(program).encode(),
                             capture_output=True, check=False)
        if out.returncode != 0:
            print(f"error: dot failed: {out.stderr.decode(errors='replace')}", file=sys.stderr)
            return EXIT_FAILED
        if args.output:
            Path(args.output).write_bytes(out.stdout)
        else:
            sys.stdout.buffer.write(out.stdout)
        return EXIT_OK
    if args.format == "dot":
        print(graph_dot(program))
        return EXIT_OK
    ids = {n: f"n{i}" for i, n in enumerate(order)}
    print("flowchart LR")
    for n in order:
        print(f'  {ids[n]}["{n}"]')
    for u, v, d in g.edges(data=True):
        label = f'|{d["port"]}|' if d.get("port") else ""
        print(f"  {ids[u]} -->{label} {ids[v]}")
    return EXIT_OK


def cmd_status(args: argparse.Namespace) -> int:
    from ftlang.runtime import ledger

    args.select, args.json, args.force = None, False, None
    code = cmd_plan(args)
    if code != EXIT_OK:
        return code
    program = _compile(argparse.Namespace(file=args.file, format="json", color="never"))
    runs = ledger.runs(program.project / ".ft", limit=1)
    if runs:
        r = runs[0]
        print(f"last run {r['run_id']}: {r['status']} ({r['ran']} ran, {r['cached']} cached, {r['failed']} failed)")
    else:
        print("no runs yet")
    return EXIT_OK


def cmd_runs(args: argparse.Namespace) -> int:
    from ftlang.runtime import ledger
    from ftlang.runtime.display import table

    root = Path(args.file).resolve().parent / ".ft"
    rows = ledger.runs(root, limit=args.limit)
    if args.json:
        print(json.dumps(rows, indent=1, default=str))
        return EXIT_OK
    if args.csv:
        import csv

        writer = csv.writer(sys.stdout)
        writer.writerow(["run", "file", "started", "finished", "status", "ran", "cached", "failed"])
        for r in rows:
            writer.writerow([r["run_id"], r["file"], r["started"], r["finished"], r["status"], r["ran"],
                             r["cached"], r["failed"]])
        return EXIT_OK
    if not rows:
        print("no runs yet")
        return EXIT_OK
    print(table(["run", "started", "status", "ran", "cached", "failed"],
                [[r["run_id"], str(r["started"])[:19], r["status"], r["ran"], r["cached"], r["failed"]]
                 for r in rows]))
    return EXIT_OK


def _root(args: argparse.Namespace) -> Path:
    return Path(args.file).resolve().parent / ".ft"


def cmd_show(args: argparse.Namespace) -> int:
    from ftlang.runtime import ledger
    from ftlang.runtime.display import table

    nodes = ledger.run_nodes(_root(args), args.run)
    if not nodes:
        print(f"error: no run matches {args.run!r}", file=sys.stderr)
        return EXIT_FAILED
    if args.json:
        print(json.dumps(nodes, indent=1, default=str))
        return EXIT_OK
    print(f"run {nodes[0]['run_id']}")
    print(table(["node", "status", "seconds", "key", "digest", "why"],
                [[n["node"], n["status"], n["seconds"], (n["key"] or "")[:12], (n["digest"] or "")[:12],
                  "; ".join(n["reasons"])] for n in nodes]))
    for n in nodes:
        models = n["meta"].get("models") if isinstance(n["meta"], dict) else None
        if isinstance(models, dict) and models:
            names = sorted({m for v in models.values() if isinstance(v, dict) for m in v})
            print(f"\n{n['node']}")
            print(table(["model", *names], [[k, *(v.get(m) for m in names)] for k, v in models.items()]))
    return EXIT_OK


def _flat(prefix: str, value: Any, out: dict[str, Any]) -> dict[str, Any]:
    if isinstance(value, dict) and not ({"ref", "file", "env"} & set(value)):
        for k, v in value.items():
            _flat(f"{prefix}.{k}" if prefix else k, v, out)
    else:
        out[prefix] = value
    return out


def cmd_diff(args: argparse.Namespace) -> int:
    """What changed between two runs: data, params, step versions, environment, metrics."""
    from ftlang.runtime import ledger

    root = _root(args)
    a, b = ledger.run_nodes(root, args.run_a), ledger.run_nodes(root, args.run_b)
    if not a or not b:
        print("error: both runs must exist (see `ft runs`)", file=sys.stderr)
        return EXIT_FAILED
    na, nb = {n["node"]: n for n in a}, {n["node"]: n for n in b}
    lines: list[str] = []
    for node in sorted(set(na) | set(nb)):
        x, y = na.get(node), nb.get(node)
        if x is None or y is None:
            lines.append(f"{node}: only in {'B' if x is None else 'A'}")
            continue
        changes = []
        px, py = _flat("", x["params"], {}), _flat("", y["params"], {})
        for k in sorted(set(px) | set(py)):
            if px.get(k) != py.get(k):
                vx, vy = px.get(k), py.get(k)
                if isinstance(vx, dict) and "file" in vx:
                    changes.append(f"data {k} changed")
                elif isinstance(vx, dict) and "ref" in vx:
                    changes.append(f"input {k} changed")
                else:
                    changes.append(f"{k}: {vx} -> {vy}")
        mx = _flat("", x["meta"].get("models", {}), {}) if isinstance(x["meta"], dict) else {}
        my = _flat("", y["meta"].get("models", {}), {}) if isinstance(y["meta"], dict) else {}
        for k in sorted(set(mx) | set(my)):
            if mx.get(k) != my.get(k):
                fx, fy = mx.get(k), my.get(k)
                delta = f" ({fy - fx:+.4g})" if isinstance(fx, (int, float)) and isinstance(fy, (int, float)) else ""
                changes.append(f"metric {k}: {fx} -> {fy}{delta}")
        if x["digest"] != y["digest"] and not changes:
            changes.append("output changed")
        if changes:
            lines.append(f"{node}:")
            lines += [f"  {c}" for c in changes]
    print("\n".join(lines) if lines else "no differences")
    return EXIT_OK


def cmd_cache(args: argparse.Namespace) -> int:
    from ftlang.runtime import cachecmd
    from ftlang.runtime.display import table
    from ftlang.runtime.store import Store

    store = Store(_root(args))
    objs = cachecmd.objects(store)
    if args.action == "du":
        total = sum(o["size"] for o in objs.values())
        by_kind: dict[str, int] = {}
        for o in objs.values():
            kind = o["nodes"][0].split(".")[0] if o["nodes"] else "(unreferenced)"
            by_kind[kind] = by_kind.get(kind, 0) + o["size"]
        print(table(["kind", "size"], [[k, cachecmd.human(v)] for k, v in sorted(by_kind.items())]))
        print(f"\ntotal {cachecmd.human(total)} in {len(objs)} artifacts under {store.root}")
        return EXIT_OK
    print(table(["digest", "size", "nodes"], [[d[:16], cachecmd.human(o["size"]), ", ".join(o["nodes"])]
                                              for d, o in objs.items()]))
    return EXIT_OK


def cmd_gc(args: argparse.Namespace) -> int:
    from ftlang.runtime import cachecmd, ledger
    from ftlang.runtime.store import ProjectLock, Store

    program = _compile(args)
    if program is None:
        return EXIT_ERRORS
    store = Store(program.project / ".ft")
    keep = {st["digest"] for nid in program.nodes if (st := store.read_state(nid)) and st.get("digest")}
    keep |= ledger.referenced_digests(store.root, args.keep_runs)
    lock = ProjectLock(store.root)
    lock.acquire(wait=True)
    try:
        removed, freed = cachecmd.gc(store, keep, dry_run=args.dry_run)
    finally:
        lock.release()
    verb = "would remove" if args.dry_run else "removed"
    print(f"{verb} {removed} artifacts, {cachecmd.human(freed)}; kept {len(keep)} referenced by "
          f"{args.file} and the last {args.keep_runs} runs")
    return EXIT_OK


def cmd_verify(args: argparse.Namespace) -> int:
    from ftlang.runtime import cachecmd
    from ftlang.runtime.store import Store

    store = Store(_root(args))
    problems = cachecmd.verify(store)
    for p in problems:
        print(f"corrupt: {p}")
    n = len(cachecmd.objects(store))
    print(f"{n} artifacts checked, {len(problems)} problem{'s' if len(problems) != 1 else ''}")
    return EXIT_FAILED if problems else EXIT_OK


def _lazy(target: str) -> Any:
    """A command implemented in another module, imported only when it runs."""

    def run(args: argparse.Namespace) -> int:
        import importlib

        module, _, func = target.partition(":")
        return int(getattr(importlib.import_module(module), func)(args))

    return run


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="ft", description="ftlang: declarative, incremental LLM fine-tuning pipelines.")
    p.add_argument("--version", action="version", version=f"ftlang {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    def add(name: str, func: Any, help: str) -> argparse.ArgumentParser:
        sp = sub.add_parser(name, help=help, description=help)
        sp.add_argument("file", help="the .ft file")
        sp.add_argument("--color", choices=("auto", "always", "never"), default="auto")
        sp.set_defaults(func=func)
        return sp

    r = add("run", cmd_run, "run the pipeline; cached steps are reused")
    r.add_argument("--select", "-s", action="append", metavar="NODE",
                   help="run NODE and its ancestors; NODE+ adds its descendants")
    r.add_argument("--force", action="append", metavar="NODE", help="rerun NODE even if cached")
    r.add_argument("--keep-going", "-k", action="store_true", help="after a failure, run independent steps")
    r.add_argument("--no-wait", action="store_true", help="fail instead of waiting for another run's lock")
    r.add_argument("--locked", action="store_true", help="refuse to run if inputs differ from ft.lock")
    r.add_argument("--quiet", "-q", action="store_true", help="no progress display")
    r.add_argument("--verbose", "-v", action="store_true", help="show step logs")
    pl = add("plan", cmd_plan, "show what a run would do, and why")
    pl.add_argument("--json", action="store_true")
    pl.add_argument("--select", "-s", action="append", metavar="NODE")
    pl.add_argument("--force", action="append", metavar="NODE")
    c = add("check", cmd_check, "compile only: report every error")
    c.add_argument("--format", choices=("text", "json"), default="text")
    g = add("graph", cmd_graph, "print the dependency graph")
    g.add_argument("--format", choices=("mermaid", "dot", "svg", "png"), default="mermaid")
    g.add_argument("--output", "-o", help="write the SVG/PNG here instead of stdout")
    f = sub.add_parser("fmt", help="format .ft files canonically", description="format .ft files canonically")
    f.add_argument("files", nargs="+", metavar="FILE")
    f.add_argument("--check", action="store_true", help="exit 1 if a file would change; write nothing")
    f.add_argument("--color", choices=("auto", "always", "never"), default="auto")
    f.set_defaults(func=cmd_fmt)
    add("status", cmd_status, "what is cached, what is stale, and the last run")
    sh = add("show", cmd_show, "one run: its nodes, timings and metrics")
    sh.add_argument("run", nargs="?", default="last", help="a run id (prefix), last, or last~N")
    sh.add_argument("--json", action="store_true")
    df = add("diff", cmd_diff, "what changed between two runs")
    df.add_argument("run_a", help="run id, last~1, ...")
    df.add_argument("run_b", nargs="?", default="last")
    ca = add("cache", cmd_cache, "list cached artifacts (ls) or their disk use (du)")
    ca.add_argument("action", choices=("ls", "du"), nargs="?", default="ls")
    gcp = add("gc", cmd_gc, "delete artifacts the file and the last N runs do not use")
    gcp.add_argument("--keep-runs", type=int, default=5)
    gcp.add_argument("--dry-run", action="store_true")
    add("verify", cmd_verify, "re-hash every artifact and report corruption")
    rp = add("report", _lazy("ftlang.runtime.report:cmd_report"),
             "write a self-contained HTML report of a run")
    rp.add_argument("run", nargs="?", default="last", help="a run id (prefix), last, or last~N")
    rp.add_argument("--output", "-o", help="the HTML file (default: .ft/reports/<run>.html)")
    cp = add("compare", _lazy("ftlang.runtime.compare:cmd_compare"),
             "metrics across runs and sweep points, side by side")
    cp.add_argument("runs", nargs="*", help="run ids (default: the last 10)")
    fmt = cp.add_mutually_exclusive_group()
    fmt.add_argument("--json", action="store_true")
    fmt.add_argument("--csv", action="store_true")
    rn = add("runs", cmd_runs, "list recorded runs")
    rn.add_argument("--limit", type=int, default=20)
    rfmt = rn.add_mutually_exclusive_group()
    rfmt.add_argument("--json", action="store_true")
    rfmt.add_argument("--csv", action="store_true")
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "command", None):
        parser.print_help()
        return EXIT_OK
    try:
        return int(args.func(args))
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
