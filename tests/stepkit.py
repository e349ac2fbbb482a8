"""Running one step by hand in tests: a stand-in for the runtime's temp dir + commit."""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ftlang.stdlib.spec import Artifact, Call, Signature, StepContext


def complete(kind: str, params: dict[str, Any]) -> dict[str, Any]:
    """`params` with every declared default filled in, call arguments included, as the
    compiler passes them (StepContext.params is complete: steps read p["name"])."""
    from ftlang.stdlib.registry import STEPS
    from ftlang.stdlib.select import SPEC as SELECT

    spec = SELECT if kind == "select" else STEPS.get(kind)
    if spec is None:
        return dict(params)
    out = _fill(spec.signature, params)
    for sub in spec.subblocks:
        out.setdefault(sub, None)
    return out


def _fill(sig: Signature, given: dict[str, Any]) -> dict[str, Any]:
    from ftlang.compiler.types import default_value

    out = dict(given)
    for a in sig.attrs:
        if a.name in out:
            out[a.name] = _fill_value(a.type, out[a.name])
        elif not a.required:  # a missing required one fails in the step, as it should
            out[a.name] = default_value(a)
    return out


def _fill_value(t: str, value: Any) -> Any:
    """Calls nested anywhere in a value (lora inside dpo, py(...) in a reward list)."""
    from ftlang.stdlib.registry import CALLS

    if t.startswith("list[") and isinstance(value, list):
        return [_fill_value(t[5:-1], v) for v in value]
    if t.startswith("call[") and isinstance(value, (str, Call)):
        call = value if isinstance(value, Call) else Call(value, {})  # a bare name: `method = full`
        sig = CALLS[t[5:-1]].get(call.name)
        return Call(call.name, _fill(sig, call.args), t[5:-1]) if sig is not None else call
    return value


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
        """A context for the step of `node`'s kind ("train.sft": train), defaults filled."""
        self.n += 1
        out = self.root / f"tmp{self.n}"
        out.mkdir()
        kind, name = node.split(".", 1)
        return StepContext(node=node, name=name, params=complete(kind, params), out=out,
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
