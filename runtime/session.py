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

    def plan(self, select: list[str] | None = None, force: list[str] | None = None) -> list[Any]:
        from ftlang.runtime.planner import plan

        return plan(self.program, self.store, self.stat, self.nodes(select), self.force_ids(force))

    def run(self, display: Any, *, select: list[str] | None = None, force: list[str] | None = None,
            keep_going: bool = False, locked: bool = False, wait: bool = True,
            command: str = "run") -> tuple[Any, str | None]:
        """Runs under the project lock; returns the RunResult and an ft.lock write error, if any."""
        from ftlang.runtime import lockfile
        from ftlang.runtime.executor import execute

        order, forced = self.nodes(select), self.force_ids(force)
        self.store.ensure()
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
                             keep_going=keep_going, command=command)
            lock_error = None
            if result.ok and not select:
                try:
                    lockfile.write(self.program, facts, {r.node: r.key for r in result.records if r.key})
                except OSError as exc:  # the artifacts are committed; only the record of them is missing
                    lock_error = f"could not write {lockfile.path_for(self.program).name}: {exc.strerror or exc}"
            return result, lock_error
        finally:
            lock.release()
