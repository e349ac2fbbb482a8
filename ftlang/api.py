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
    def session(self) -> Any:
        from ftlang.runtime.session import Session

        return Session.of(self.program)

    @property
    def store(self) -> Any:
        return self.session.store

    @property
    def nodes(self) -> list[str]:
        return self.program.order()

    def plan(self, select: list[str] | None = None, force: list[str] | None = None) -> list[Any]:
        """PlanItems: node, status (cached/run/pending), reasons."""
        return self.session.plan(select, force)

    def run(self, select: list[str] | None = None, force: list[str] | None = None,
            keep_going: bool = False, quiet: bool = True) -> Any:
        """Runs (under the project lock) and returns the RunResult. `force` takes node names
        as `ft run --force` does (`"sft"`, `"train.sft"`, a sweep block's name)."""
        from ftlang.runtime.display import Display

        result, lock_error = self.session.run(Display(stream=sys.stderr, quiet=quiet), select=select,
                                              force=force, keep_going=keep_going, command="api")
        if lock_error:
            print(f"warning: {lock_error}", file=sys.stderr)
        return result

    def artifact(self, node: str) -> Any:
        """The committed Artifact of a node (its folder is `.path`), or None if not cached."""
        from ftlang.runtime.planner import matches
        from ftlang.stdlib.spec import Artifact

        nid = next((n for n in self.program.nodes if matches(self.program, n, node)), node)
        store = self.store
        for item in self.plan([nid]):
            if item.node == nid and item.entry is not None:
                e = item.entry
                return Artifact(nid, e.digest, store.object_path(e.digest), None, e.meta)
        return None


def load(path: str | Path) -> Pipeline:
    """Compiles a .ft file; raises PipelineError with every diagnostic rendered."""
    p = Path(path)
    try:
        return Pipeline(compile_file(p))
    except FtError as exc:
        raise PipelineError(render_all(exc.diagnostics, {str(p): p.read_text()} | exc.sources)) from None
