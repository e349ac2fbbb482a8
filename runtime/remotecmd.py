"""`ft push`, `ft pull`, `ft cache ls --remote`, and the remote/--jobs/--executor options
of `ft run` (what `cli.py` needs from them, kept here so cli.py stays small).

In: parsed arguments and the file's Session. Out: uploads and downloads through
runtime/remote.py, one line per outcome, and exit codes (0 ok, 1 failed, 2 usage).
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from ftlang.runtime.display import plural


def run_options(args: argparse.Namespace, session: Any, display: Any) -> Any:
    """`ft run`'s scheduling options; a bad value is a SessionError with exit code 2."""
    from ftlang.runtime.scheduler import Options
    from ftlang.runtime.session import SessionError

    for name, default in (("jobs", 1), ("executor", "local"), ("address", None), ("remote", None),
                          ("remote_required", False)):
        if not hasattr(args, name):  # a command that runs through cmd_run (`ft verify --repair`)
            setattr(args, name, default)
    if args.jobs < 1:
        raise SessionError(f"--jobs must be at least 1 (got {args.jobs})", code=2)
    if args.address and args.executor != "ray":
        raise SessionError("--address is the Ray cluster's: use it with --executor ray", code=2)
    if args.executor == "ray":
        try:
            import ray  # noqa: F401 - only to say what to install, before any work
        except ImportError:
            raise SessionError("--executor ray needs Ray, which is not installed: pip install 'ftlang[ray]' "
                               "(or pip install ray)", code=2) from None
    remote = session.remote(args.remote, required=args.remote_required, warn=display.text)
    return Options(jobs=args.jobs, executor=args.executor, address=args.address, remote=remote,
                   remote_required=args.remote_required)


def run_error(exc: Exception) -> int | None:
    """A remote or Ray error escaping a run, as one line; None for anything else."""
    from ftlang.runtime.remote import RemoteError

    hint = None
    if isinstance(exc, RemoteError):
        hint = exc.hint
    elif type(exc).__module__.startswith("ray") or type(exc).__name__ == "RayUnavailable":
        pass
    else:
        return None
    print(f"error: {exc}", file=sys.stderr)
    if hint:
        print(f"  = help: {hint}", file=sys.stderr)
    return 1


def _open(args: argparse.Namespace) -> tuple[Any, Any] | int:
    from ftlang.runtime.cli import EXIT_ERRORS, EXIT_FAILED, _session
    from ftlang.runtime.session import SessionError

    session = _session(args)
    if session is None:
        return EXIT_ERRORS
    try:
        remote = session.remote(args.remote, required=True)
    except SessionError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.code if exc.code != 1 else EXIT_FAILED
    return session, remote


def cmd_push(args: argparse.Namespace) -> int:
    """Uploads what each node of the file last resolved to (its state), if still cached."""
    from ftlang.runtime.remote import RemoteError, human

    opened = _open(args)
    if isinstance(opened, int):
        return opened
    session, remote = opened
    store = session.store
    store.ensure()
    sent = there = 0
    try:
        for nid in session.program.order():
            state = store.read_state(nid) or {}
            entry = store.lookup(state.get("key", "")) if state.get("key") else None
            if entry is None or store.check(entry.digest, entry.files) is not None:
                continue  # never run, gone, or corrupt: nothing true to share
            if remote.upload(entry, store):
                sent += 1
                print(f"  pushed   {nid}")
            else:
                there += 1
    except RemoteError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"{plural(sent, 'artifact')} pushed ({human(remote.transfer.up)}), {there} already on {remote.url}")
    return 0


def cmd_pull(args: argparse.Namespace) -> int:
    """Downloads every node the remote holds that this cache lacks (what `ft plan` calls remote)."""
    from ftlang.runtime.remote import RemoteError, human

    opened = _open(args)
    if isinstance(opened, int):
        return opened
    session, remote = opened
    session.store.ensure()
    got = 0
    try:
        items = session.plan(remote=remote)
        for item in items:
            if item.status != "remote":
                continue
            hit = remote.lookup(item.key)
            if hit is not None:
                remote.fetch(hit, session.store)
                got += 1
                print(f"  pulled   {item.node}")
    except RemoteError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    left = sum(1 for i in items if i.status in ("run", "pending"))
    print(f"{plural(got, 'artifact')} pulled ({human(remote.transfer.down)}); {left} still to run")
    return 0


def cmd_cache(args: argparse.Namespace) -> int:
    """`ft cache ls|du` as before; `ft cache ls --remote [URL]` lists the remote's keys."""
    from ftlang.runtime import cachecmd

    if args.remote is None:
        return int(cachecmd.cmd_cache(args))
    from ftlang.runtime.display import table
    from ftlang.runtime.remote import Remote, RemoteError, human, resolve_url

    if args.action != "ls":
        print("error: --remote goes with `ft cache ls`", file=sys.stderr)
        return 2
    program_remote = None
    if args.file:
        from ftlang.runtime.cli import _compile

        program = _compile(argparse.Namespace(file=args.file, format="text", color="never"))
        if program is None:
            return 2
        program_remote = getattr(program, "remote", None)
    url = resolve_url(args.remote or None, program_remote)
    if url is None:
        print("error: no remote cache: give --remote URL, set FT_REMOTE, or add cache { remote = ... }",
              file=sys.stderr)
        return 2
    try:
        remote = Remote(url)
        entries = remote.keys()
    except RemoteError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    rows = [[e.node, e.key[:12], e.digest[:12], human(e.size)] for e in sorted(entries, key=lambda e: e.node)]
    print(table(["node", "key", "digest", "size"], rows))
    print(f"\n{plural(len(entries), 'key')} on {url}")
    return 0
