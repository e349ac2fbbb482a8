"""One runtime session: what `ft` and the Python API both do with a .ft file.

`Session.open(path)` compiles the file and opens its store (with that file's own node
state) and the stat cache. `nodes` turns selectors into node ids, `force_ids` names into
node ids (the same matching everywhere), `plan` says what a run would do, and `run` runs
under the project lock and writes ft.lock. The CLI adds only printing and exit codes.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ftlang.compiler.ir import Program
from ftlang.runtime.hashing import StatCache
from ftlang.runtime.store import ProjectLock, Store, for_file


class SessionError(Exception):
    """A request the session cannot carry out (no such node, --locked mismatch, lock held)."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


@dataclass
class Session:
    program: Program
    store: Store
    stat: StatCache

    @classmethod
    def open(cls, path: str | Path) -> Session:
        """Compiles `path`; raises FtError (every diagnostic) when it does not compile."""
        from ftlang.compiler import compile_file

        return cls.of(compile_file(Path(path)))

    @classmethod
    def of(cls, program: Program) -> Session:
        store = for_file(program.project / Path(program.file).name)
        return cls(program, store, StatCache(store.root / "stat.json"))

    @property
    def file_name(self) -> str:
        return Path(self.program.file).name

    def nodes(self, select: list[str] | None = None) -> list[str]:
        """Node ids in run order: all, or what the selectors (`x`, `+x`, `x+`) pick."""
        if not select:  # the stored order: a cached program needs no graph library for it
            return self.program.order()
        from ftlang.runtime.planner import select as pick

        try:
            return pick(self.program, select)
        except KeyError as exc:
            raise SessionError(f"--select: no node named {exc}", code=2) from None

    def force_ids(self, names: list[str] | None) -> set[str]:
        """The node ids that `--force NAME` (or `force=[...]`) means; an unknown name is an error."""
        from ftlang.runtime.planner import matches

        out: set[str] = set()
        for name in names or []:
            ids = {n for n in self.program.nodes if matches(self.program, n, name)}
            if not ids:
                raise SessionError(f"--force: no node named {name!r}", code=2)
            out |= ids
        return out

    def plan(self, select: list[str] | None = None, force: list[str] | None = None,
             remote: Any = None) -> list[Any]:
        """`remote` (a runtime.remote.Remote): nodes it holds plan as `remote`, with their size."""
        from ftlang.runtime.planner import plan

        return plan(self.program, self.store, self.stat, self.nodes(select), self.force_ids(force),
                    remote=remote)

    def remote(self, url: str | None = None, *, required: bool = False, warn: Any = None) -> Any:
        """The remote cache (--remote, else FT_REMOTE, else the file's `cache { remote }`),
        probed once: None when there is none, or (with a warning) when it is unreachable.
        Wrong credentials, or an unreachable remote with `required`, raise SessionError."""
        from ftlang.runtime.remote import Remote, RemoteError, resolve_url

        in_file = getattr(self.program, "remote", None)
        if in_file and "://" not in in_file and not Path(in_file).is_absolute():
            in_file = str(self.program.project / in_file)  # a folder in the .ft: beside the file
        url = resolve_url(url, in_file)
        if url is None:
            if required:
                raise SessionError("--remote-required: no remote cache is configured (--remote, FT_REMOTE "
                                   "or cache { remote = ... } in the file)", code=2)
            return None
        try:
            remote = Remote(url)
            remote.probe()
            return remote
        except RemoteError as exc:
            if exc.kind != "unreachable" or required:
                raise SessionError(str(exc) + (f"\n  = help: {exc.hint}" if exc.hint else "")) from None
            if warn is not None:
                warn(f"warning: {exc}; running with the local cache only")
            return None

    def run(self, display: Any, *, select: list[str] | None = None, force: list[str] | None = None,
            keep_going: bool = False, locked: bool = False, wait: bool = True,
            command: str = "run", options: Any = None) -> tuple[Any, str | None]:
        """Runs under the project lock; returns the RunResult and an ft.lock write error, if any."""
        from ftlang.runtime import lockfile
        from ftlang.runtime.executor import execute

        order, forced = self.nodes(select), self.force_ids(force)
        self.store.ensure()
        from ftlang.runtime import progcache

        if not isinstance(self.program, progcache.CachedProgram):
            progcache.save(self.program)  # the first run creates .ft/: the next one skips compiling
        lock = ProjectLock(self.store.root)

        def waiting(holder: str) -> None:
            display.text(f"waiting for another ft run on this project (pid {holder}) to finish...")

        if not lock.acquire(wait=wait, on_wait=waiting):
            raise SessionError(f"another ft run holds {self.store.root / 'lock'} (pid {lock.holder()}); "
                               "run again when it finishes, or drop --no-wait to wait")
        try:
            facts = lockfile.resolve(self.program, self.stat)
            if locked:
                diffs = lockfile.differences(lockfile.read(self.program), facts)
                if diffs:
                    raise SessionError("--locked: the inputs differ from ft.lock:\n  " + "\n  ".join(diffs))
            self.store.clean_tmp()
            result = execute(self.program, self.store, self.stat, order, display, force=forced,
                             keep_going=keep_going, command=command, options=options)
            lock_error = None
            if result.ok and not select:
                try:
                    lockfile.write(self.program, facts, {r.node: r.key for r in result.records if r.key})
                except OSError as exc:  # the artifacts are committed; only the record of them is missing
                    lock_error = f"could not write {lockfile.path_for(self.program).name}: {exc.strerror or exc}"
            return result, lock_error
        finally:
            lock.release()
