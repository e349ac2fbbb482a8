"""Running one step by hand in tests: a stand-in for the runtime's temp dir + commit."""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ftlang.stdlib.spec import Artifact, StepContext


def digest(folder: Path) -> str:
    h = hashlib.sha256()
    for f in sorted(folder.rglob("*")):
        if f.is_file():
            h.update(str(f.relative_to(folder)).encode() + b"\0" + f.read_bytes())
    return h.hexdigest()[:24]


def files(folder: Path) -> dict[str, bytes]:
    return {str(f.relative_to(folder)): f.read_bytes() for f in sorted(folder.rglob("*")) if f.is_file()}


class Store:
    """Run a step in a temp dir, commit it by digest under objects/ (as the runtime does)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        (root / "objects").mkdir(parents=True, exist_ok=True)
        self.logs: list[str] = []
        self.n = 0

    def ctx(self, node: str, params: dict[str, Any]) -> StepContext:
        self.n += 1
        out = self.root / f"tmp{self.n}"
        out.mkdir()
        return StepContext(node=node, name=node.split(".", 1)[1], params=params, out=out,
                           project=self.root, cache=self.root / "cache", log=self.logs.append)

    def commit(self, ctx: StepContext, port: str | None = None) -> Artifact:
        d = digest(ctx.out)
        dest = self.root / "objects" / d
        if dest.exists():
            shutil.rmtree(ctx.out)
        else:
            ctx.out.rename(dest)
        return Artifact(ctx.node, d, dest, port)

    def run(self, step: Callable[[StepContext], dict[str, Any]], node: str,
            params: dict[str, Any]) -> tuple[Artifact, dict[str, Any]]:
        ctx = self.ctx(node, params)
        meta = step(ctx)
        json.dumps(meta)  # metadata must be JSON-serialisable
        return self.commit(ctx), meta

    def dataset(self, node: str, rows: list[dict[str, Any]]) -> Artifact:
        import pyarrow as pa
        import pyarrow.parquet as pq

        ctx = self.ctx(node, {})
        pq.write_table(pa.Table.from_pylist(rows), ctx.out / "data.parquet")
        return self.commit(ctx)
