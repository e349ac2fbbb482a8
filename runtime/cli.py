"""The `ft` command. Commands that do not train never import torch, peft or trl."""

from __future__ import annotations

import argparse
import json
import os
import stat
import sys
from pathlib import Path
from typing import Any

from ftlang.runtime import userfiles
from ftlang.runtime.display import capable_terminal

from ftlang import __version__

EXIT_OK, EXIT_FAILED, EXIT_ERRORS = 0, 1, 2


def _color(args: argparse.Namespace, stream: Any) -> bool:
    mode = getattr(args, "color", "auto")
    if mode == "always":
        return True
    if mode == "never" or os.environ.get("NO_COLOR"):
        return False
    return capable_terminal(stream)


def _compile(args: argparse.Namespace) -> Any:
    """The checked program, or None after printing every diagnostic."""
    from ftlang.lang.diagnostics import FtError, render_all, to_json
    from ftlang.runtime.progcache import compile_cached

    path = Path(args.file)
    if not os.path.lexists(path):
        print(f"error: no such file: {args.file}", file=sys.stderr)
        return None
    try:
        # Served from .ft/progcache when nothing the compile read has changed (a no-op
        # `ft run` then imports neither lark, sqlglot nor networkx).
        program = compile_cached(path)
    except FtError as exc:
        text = ""
        try:  # for the source lines under each caret; a file that cannot be decoded still shows
            if stat.S_ISREG(os.stat(path).st_mode):  # a named pipe or a device is never read: it may block
                text = path.read_text(encoding="utf-8", errors="replace").removeprefix("\ufeff")
        except OSError:
            pass
        sources = {d.span.file: text for d in exc.diagnostics if d.span} | exc.sources
        if getattr(args, "format", "text") == "json":
            print(to_json(exc.diagnostics))
        else:
            print(render_all(exc.diagnostics, sources, _color(args, sys.stderr)), file=sys.stderr)
        return None
    if program.warnings and getattr(args, "format", "text") != "json":
        from ftlang.lang.diagnostics import render

        for w in program.warnings:
            print(render(w, program.sources, _color(args, sys.stderr)) + "\n", file=sys.stderr)
    return program


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


def _session(args: argparse.Namespace) -> Any:
    """The file's Session, or None after printing its diagnostics."""
    from ftlang.runtime.session import Session

    program = _compile(args)
    if program is not None and (problem := _distributed_options(program, args)):
        print(f"error: {problem}", file=sys.stderr)
        return None
    return None if program is None else Session.of(program)


def _distributed_options(program: Any, args: argparse.Namespace) -> str | None:
    """--processes / --nnodes / --node-rank / --rdzv (runtime/launch.py); light: no torch."""
    if not any(getattr(args, k, None) is not None for k in ("processes", "nnodes", "rdzv")):
        return None
    from ftlang.runtime import launch

    return launch.apply_options(program, args)


def cmd_plan(args: argparse.Namespace) -> int:
    from ftlang.runtime.session import SessionError

    session = _session(args)
    if session is None:
        return EXIT_ERRORS
    try:
        from ftlang.runtime.remote import RemoteError

        remote = session.remote(args.remote, warn=lambda m: print(m, file=sys.stderr)) \
            if getattr(args, "remote", None) is not False else None
        items = session.plan(args.select, args.force, remote=remote)
    except RemoteError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except SessionError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.code
    if args.json:
        print(json.dumps([i.to_json() for i in items], indent=1))
        return EXIT_OK
    width = max(len(i.node) for i in items) if items else 10
    for i in items:
        # A reason may carry detail lines (a query's diff): shown indented under the node.
        why = "; ".join(r.split("\n", 1)[0] for r in i.reasons)
        print(f"  {i.status:<8}{i.node:<{width}}  {why}".rstrip())
        for r in i.reasons:
            for detail in r.split("\n")[1:]:
                print(f"  {'':<8}{'':<{width}}    {detail}")
        if i.cost or i.device:
            where = f"on {i.device}" if i.device else ""
            print(f"  {'':<8}{'':<{width}}  {', '.join(x for x in (where, i.cost) if x)}")
        batch = _global_batch(session.program, i)
        if batch:
            print(f"  {'':<8}{'':<{width}}  {batch}")
    counts = {s: sum(1 for i in items if i.status == s) for s in ("cached", "run", "pending", "remote")}
    fetch = f", {counts['remote']} to fetch from the remote cache" if counts["remote"] else ""
    print(f"\n{counts['run']} to run, {counts['pending']} pending on upstream changes, "
          f"{counts['cached']} cached{fetch}")
    return EXIT_OK


def _global_batch(program: Any, item: Any) -> str:
    """A train step with `distributed { ... }` (or --processes): its global batch, for the plan."""
    node = program.nodes.get(item.node)
    if node is None or node.kind != "train" or item.status == "cached" or not node.params.get("distributed"):
        return ""
    from ftlang.stdlib import distributed

    total, parts = distributed.global_batch(node.params)
    return f"global batch {total} = {parts}"


def cmd_run(args: argparse.Namespace) -> int:
    import time

    from ftlang.lang.diagnostics import render_all
    from ftlang.runtime.display import Display, fmt_seconds, plural
    from ftlang.runtime.session import SessionError

    session = _session(args)
    if session is None:
        return EXIT_ERRORS
    if args.locked or not args.select:  # a run that reads or writes ft.lock: a foreign one stops it now
        from ftlang.runtime import lockfile

        try:
            lockfile.check(session.program)
        except lockfile.LockError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return EXIT_FAILED
    display = Display(color=_color(args, sys.stderr), quiet=args.quiet, verbose=args.verbose)
    t0 = time.monotonic()
    try:
        from ftlang.runtime.remotecmd import run_options

        options = run_options(args, session, display)
        result, lock_error = session.run(display, select=args.select, force=args.force,
                                         keep_going=args.keep_going, locked=args.locked, wait=not args.no_wait,
                                         options=options)
    except SessionError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.code
    except Exception as exc:  # a remote or Ray error: one line naming it, never a traceback
        from ftlang.runtime.remotecmd import run_error

        code = run_error(exc)
        if code is not None:
            return code
        if not isinstance(exc, OSError):
            raise
        # not the remote's: the cache folder itself (read-only, full, not ours)
        message, hint = _os_error(exc)
        print(f"error: cannot write the cache folder {_rel_cwd(session.store.root)}: {message}", file=sys.stderr)
        if hint:
            print(f"  = help: {hint}", file=sys.stderr)
        return EXIT_FAILED
    program = session.program
    if result.diagnostics:
        print("\n" + render_all(result.diagnostics, program.sources, _color(args, sys.stderr)), file=sys.stderr)
    ran, cached = result.count("ran"), result.count("cached")
    took = fmt_seconds(time.monotonic() - t0)
    if result.interrupted:
        return EXIT_SIGINT
    if ran == 0 and result.ok:
        display.text(f"nothing to do: {plural(cached, 'step')} cached ({took})")
    else:
        # A failed `assert` fails its eval node in the count too, not only in the diagnostics.
        failed = result.count("failed") + sum(
            1 for r in result.records if r.status != "failed" and isinstance(r.meta, dict)
            and any(not a.get("ok", True) for a in r.meta.get("asserts") or []))
        display.text(f"{ran} ran, {cached} cached, {failed} failed, "
                     f"{result.count('skipped')} skipped in {took} (run {result.run_id})")
    if lock_error:
        from ftlang.runtime.lockfile import ASIDE

        hint = "" if ASIDE in lock_error else "\n  = help: free some disk space and run again: nothing reruns"
        print(f"error: {lock_error}{hint}", file=sys.stderr)
        return EXIT_FAILED
    return EXIT_OK if result.ok else EXIT_FAILED


def cmd_fmt(args: argparse.Namespace) -> int:
    """Rewrites files in the canonical layout; --check only reports (for CI)."""
    from ftlang.lang.diagnostics import FtError, render_all
    from ftlang.lang.format import format_module, keeps_meaning
    from ftlang.lang.parser import parse, read_source

    code = EXIT_OK
    for name in args.files:
        path = Path(name)
        text = ""
        try:
            text = read_source(path, name)
            module = parse(text, name)
            new = format_module(module)
        except FtError as exc:
            print(render_all(exc.diagnostics, {name: text} | exc.sources, _color(args, sys.stderr)),
                  file=sys.stderr)
            code = EXIT_ERRORS
            continue
        if new == text:
            continue
        if not keeps_meaning(module, new, name):
            # A formatter bug must never cost the user their file: nothing is written.
            print(f"error: formatting {name} would change what it says; it is left as it is\n"
                  "  = help: this is a bug in ftlang's formatter: please report it with the file",
                  file=sys.stderr)
            code = max(code, EXIT_FAILED)
        elif args.check:
            print(f"would reformat {name}")
            code = max(code, EXIT_FAILED)
        else:
            raw = path.read_bytes()  # read_source reads CRLF as LF: a CRLF file is written back as one
            crlf = b"\r\n" in raw and raw.count(b"\n") == raw.count(b"\r\n")
            userfiles.replace(path, (new.replace("\n", "\r\n") if crlf else new).encode("utf-8"))
            print(f"reformatted {name}")
    return code


def cmd_status(args: argparse.Namespace) -> int:
    from ftlang.runtime import ledger

    args.select, args.json, args.force, args.remote = None, False, None, False
    code = cmd_plan(args)
    if code != EXIT_OK:
        return code
    try:  # the ledger beside the file (cmd_plan compiled it: no second compile)
        r = ledger.last_run(Path(args.file).resolve().parent / ".ft", file=args.file)
    except ledger.LedgerError as exc:
        print(f"last run: unknown ({exc})")
        return EXIT_OK
    if r is not None:
        print(f"last run {r['run_id']}: {r['status']} ({r['ran']} ran, {r['cached']} cached, {r['failed']} failed)")
    else:
        print("no runs yet")
    return EXIT_OK


def _rel_cwd(p: Path) -> str:
    try:
        return str(p.relative_to(Path.cwd()))
    except ValueError:
        return str(p)


class UsageError(Exception):
    """A bad argument: one line on stderr, exit 2 (main prints it)."""


def _root(args: argparse.Namespace) -> Path:
    """The .ft/ cache beside the file (or in the current folder when no file is given).
    UsageError unless the file is a regular .ft file: a wrong path must not read (or, with
    --repair, create) the cache of some other folder."""
    if not args.file:
        return Path.cwd() / ".ft"
    path = Path(args.file)
    try:
        mode = os.stat(path).st_mode
    except OSError:
        raise UsageError(f"no such file: {args.file}") from None
    if not stat.S_ISREG(mode):
        raise UsageError(f"{args.file} is a folder, not a .ft file" if stat.S_ISDIR(mode)
                         else f"{args.file} is not a regular file")
    if path.suffix != ".ft":
        raise UsageError(f"{args.file} is not a .ft file (its name does not end in .ft)")
    return path.resolve().parent / ".ft"


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
        sp.add_argument("--color", choices=("auto", "always", "never"), default="auto",
                        help="colour the output: auto (on a terminal, unless NO_COLOR is set or TERM=dumb), "
                             "always, never")
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
    from ftlang.runtime import history, launch  # light: torch is imported only when a worker starts

    launch.add_run_options(r)
    r.add_argument("--verbose", "-v", action="store_true", help="show step logs")
    r.add_argument("--jobs", "-j", type=int, default=1, metavar="N",
                   help="run up to N independent steps at once, each in its own process (default 1)")
    r.add_argument("--executor", choices=("local", "ray"), default="local",
                   help="local (this machine) or ray (each step a Ray task; pip install ftlang[ray])")
    r.add_argument("--address", metavar="ADDR", help="the Ray cluster (default: start a local one)")
    r.add_argument("--remote", metavar="URL", help="the shared remote cache (a folder, s3://..., any fsspec "
                   "URL); default: FT_REMOTE, else the file's cache { remote = ... }")
    r.add_argument("--remote-required", action="store_true",
                   help="fail instead of running locally when the remote cache is unreachable")
    pl = add("plan", cmd_plan, "show what a run would do, and why")
    pl.add_argument("--json", action="store_true", help="the plan as JSON (node, status, reasons, key, digest)")
    pl.add_argument("--select", "-s", action="append", metavar="NODE",
                    help="plan NODE and its ancestors; NODE+ adds its descendants")
    pl.add_argument("--force", action="append", metavar="NODE", help="plan as if NODE were forced to rerun")
    launch.add_run_options(pl)  # the same --processes / --nnodes give the same keys
    pl.add_argument("--remote", metavar="URL", help="also look in this remote cache (default: FT_REMOTE, "
                    "else the file's cache { remote = ... })")
    c = add("check", cmd_check, "compile only: report every error")
    c.add_argument("--format", choices=("text", "json"), default="text",
                   help="diagnostics as text (rustc-style) or JSON (for editors and CI)")
    g = add("graph", _lazy("ftlang.runtime.graphcmd:cmd_graph"), "print the dependency graph")
    g.add_argument("--format", choices=("mermaid", "dot", "svg", "png"), default="mermaid",
                   help="mermaid or DOT text, or SVG/PNG rendered by Graphviz")
    g.add_argument("--output", "-o", metavar="FILE", help="write the graph to FILE instead of stdout, marked as "
                   "ft graph's (a line `%%%% Written by ft graph` in mermaid, `// Written by ft graph` in DOT, "
                   "a comment in SVG, a tEXt chunk in PNG); only a file with that mark is replaced")
    f = sub.add_parser("fmt", help="format .ft files canonically", description="format .ft files canonically")
    f.add_argument("files", nargs="+", metavar="FILE", help="the .ft files to format in place")
    f.add_argument("--check", action="store_true", help="exit 1 if a file would change; write nothing")
    f.add_argument("--color", choices=("auto", "always", "never"), default="auto",
                   help="colour the diagnostics: auto, always, never")
    f.set_defaults(func=cmd_fmt)
    add("status", cmd_status, "what is cached, what is stale, and the last run")
    sh = add("show", _lazy("ftlang.runtime.history:cmd_show"), "one run: its nodes, timings and metrics")
    sh.add_argument("run", nargs="?", default="last", type=history.run_ref, help="a run id (prefix), last, or last~N")
    sh.add_argument("--json", action="store_true", help="the run's nodes as JSON")
    df = add("diff", _lazy("ftlang.runtime.history:cmd_diff"), "what changed between two runs")
    df.add_argument("run_a", type=history.run_ref, help="run id, last~1, ...")
    df.add_argument("run_b", nargs="?", default="last", type=history.run_ref, help="the second run (default: last)")
    ca = sub.add_parser("cache", help="list cached artifacts (ls) or their disk use (du)",
                        description="list cached artifacts (ls) or their disk use (du)")
    ca.add_argument("action", choices=("ls", "du"), help="ls: every artifact; du: disk use by step kind")
    ca.add_argument("file", nargs="?", default="", help="a .ft file whose folder's cache to read "
                    "(default: the .ft/ in the current folder)")
    ca.add_argument("--remote", nargs="?", const="", default=None, metavar="URL",
                    help="ls: list the remote cache instead (URL, else FT_REMOTE or the file's remote)")
    ca.set_defaults(func=_lazy("ftlang.runtime.remotecmd:cmd_cache"))
    for name, what in (("push", "upload what the file's nodes last resolved to into the remote cache"),
                       ("pull", "download what the file's nodes resolve to from the remote cache")):
        pp = add(name, _lazy(f"ftlang.runtime.remotecmd:cmd_{name}"), what)
        pp.add_argument("--remote", metavar="URL", help="the remote cache (default: FT_REMOTE, else the "
                        "file's cache { remote = ... })")
    gcp = add("gc", _lazy("ftlang.runtime.cachecmd:cmd_gc"), "delete artifacts the file and the last N runs do not use")
    gcp.add_argument("--keep-runs", type=history.count(0), default=5, metavar="N",
                     help="also keep what the last N runs produced or used (default 5)")
    gcp.add_argument("--dry-run", action="store_true", help="say what would be removed; remove nothing")
    vf = add("verify", _lazy("ftlang.runtime.cachecmd:cmd_verify"), "re-hash every artifact and report corruption")
    vf.add_argument("--repair", action="store_true",
                    help="move corrupt artifacts to .ft/quarantine/ and rebuild them with `ft run`")
    ck = add("checkpoints", _lazy("ftlang.runtime.checkpoints:cmd_checkpoints"),
             "list the checkpoints a train node kept (keep_checkpoints = N)")
    ck.add_argument("node", help="the node id, e.g. train.sft")
    rp = add("report", _lazy("ftlang.runtime.report:cmd_report"),
             "write a self-contained HTML report of a run")
    rp.add_argument("run", nargs="?", default="last", type=history.run_ref, help="a run id (prefix), last, or last~N")
    rp.add_argument("--output", "-o", help="the HTML file (default: .ft/reports/<run>.html)")
    cp = add("compare", _lazy("ftlang.runtime.compare:cmd_compare"),
             "metrics across runs and sweep points, side by side")
    cp.add_argument("runs", nargs="*", type=history.run_ref, help="run ids (default: the last 10)")
    fmt = cp.add_mutually_exclusive_group()
    fmt.add_argument("--json", action="store_true", help="the table as JSON")
    fmt.add_argument("--csv", action="store_true", help="the table as CSV")
    rn = add("runs", _lazy("ftlang.runtime.history:cmd_runs"), "list recorded runs")
    rn.add_argument("--limit", type=history.count(1), default=20, metavar="N", help="the last N runs (default 20)")
    rfmt = rn.add_mutually_exclusive_group()
    rfmt.add_argument("--json", action="store_true", help="the runs as JSON")
    rfmt.add_argument("--csv", action="store_true", help="the runs as CSV")
    launch.add_launch_parser(sub, _lazy)
    ls = sub.add_parser("lsp", help="the language server, over stdio (editors start it)",
                        description="the language server, over stdio (editors start it)")
    ls.set_defaults(func=_lazy("ftlang.runtime.lsp:cmd_lsp"))
    return p


EXIT_SIGINT, EXIT_SIGTERM = 130, 143
_terminated = False


def _on_sigterm(signum: int, frame: Any) -> None:
    """SIGTERM stops like Ctrl-C (committed work kept, a ledger row, a message), exit 143."""
    global _terminated
    _terminated = True
    raise KeyboardInterrupt


def _os_error(exc: OSError) -> tuple[str, str | None]:
    import errno

    where = f": {exc.filename}" if exc.filename else ""
    hints = {errno.ENOSPC: "free some disk space and run again; committed artifacts are intact",
             errno.EROFS: "the folder is read-only; run where ftlang may write its .ft/ cache",
             errno.EACCES: "check the folder's permissions",
             errno.EPERM: "check the folder's permissions",
             errno.ELOOP: "a symbolic link points at itself"}
    return f"{exc.strerror or exc}{where}", hints.get(exc.errno or 0)


def _fatal(exc: BaseException) -> int:
    """Any error that escaped a command, as one clear line: never a traceback."""
    from ftlang.runtime.ledger import LedgerError

    if isinstance(exc, LedgerError):
        message, hint = str(exc), "move the file aside (a new ledger is started); the cache is intact"
    elif isinstance(exc, OSError):
        message, hint = _os_error(exc)
    else:  # a bug in ftlang: the traceback goes to a file, the user gets one line
        import tempfile
        import traceback

        fd, log = tempfile.mkstemp(prefix="ft-crash-", suffix=".log")
        with os.fdopen(fd, "w") as f:
            f.write(traceback.format_exc())
        message = f"internal error: {type(exc).__name__}: {exc}"
        hint = f"this is a bug in ftlang; the traceback is in {log}"
    print(f"error: {message}", file=sys.stderr)
    if hint:
        print(f"  = help: {hint}", file=sys.stderr)
    return EXIT_FAILED


def main(argv: list[str] | None = None) -> int:
    import signal

    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "command", None):
        parser.print_help()
        return EXIT_OK
    global _terminated
    _terminated = False
    import threading

    main_thread = threading.current_thread() is threading.main_thread()  # signals: main thread only
    previous = signal.signal(signal.SIGTERM, _on_sigterm) if main_thread else None
    try:
        code = int(args.func(args))
        return EXIT_SIGTERM if _terminated and code == EXIT_SIGINT else code
    except KeyboardInterrupt:
        print("terminated" if _terminated else "interrupted", file=sys.stderr)
        return EXIT_SIGTERM if _terminated else EXIT_SIGINT
    except BrokenPipeError:
        return EXIT_OK
    except UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_ERRORS
    except Exception as exc:
        return _fatal(exc)
    finally:
        if main_thread:
            signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":
    sys.exit(main())
