"""The Python API for notebooks: ftlang.load("x.ft").plan() / .run() / .artifact("train.sft")."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ftlang.compiler import compile_file
from ftlang.compiler.ir import Program
from ftlang.lang.diagnostics import FtError, render_all


class PipelineError(Exception):
    """The .ft file has errors; str() is the rendered diagnostics."""


@dataclass
class Pipeline:
    program: Program

    @property
    def store(self) -> Any:
        from ftlang.runtime.store import Store

        return Store(self.program.project / ".ft")

    @property
    def nodes(self) -> list[str]:
        return self.program.order()

    def _stat(self) -> Any:
        from ftlang.runtime.hashing import StatCache

        return StatCache(self.store.root / "stat.json")

    def plan(self, select: list[str] | None = None) -> list[Any]:
        """PlanItems: node, status (cached/run/pending), reasons."""
        from ftlang.runtime.planner import plan
        from ftlang.runtime.planner import select as sel

        return plan(self.program, self.store, self._stat(), sel(self.program, select))

    def run(self, select: list[str] | None = None, force: list[str] | None = None,
            keep_going: bool = False, quiet: bool = True) -> Any:
        """Runs (under the project lock) and returns the RunResult."""
        from ftlang.runtime.display import Display
        from ftlang.runtime.executor import execute
        from ftlang.runtime.planner import select as sel
        from ftlang.runtime.store import ProjectLock

        store = self.store
        store.ensure()
        lock = ProjectLock(store.root)
        lock.acquire(wait=True)
        try:
            store.clean_tmp()
            return execute(self.program, store, self._stat(), sel(self.program, select),
                           Display(stream=sys.stderr, quiet=quiet), force=set(force or []),
                           keep_going=keep_going, command="api")
        finally:
            lock.release()

    def artifact(self, node: str) -> Any:
        """The committed Artifact of a node (its folder is `.path`), or None if not cached."""
        from ftlang.stdlib.spec import Artifact

        nid = node if node in self.program.nodes else next(
            (n for n in self.program.nodes if n.split(".", 1)[1] == node), node)
        for item in self.plan([nid]):
            if item.node == nid and item.entry is not None:
                e = item.entry
                return Artifact(nid, e.digest, self.store.object_path(e.digest), None, e.meta)
        return None


def load(path: str | Path) -> Pipeline:
    """Compiles a .ft file; raises PipelineError with every diagnostic rendered."""
    p = Path(path)
    try:
        return Pipeline(compile_file(p))
    except FtError as exc:
        raise PipelineError(render_all(exc.diagnostics, {str(p): p.read_text()} | exc.sources)) from None
