"""mix: several datasets blended by ratio into one (the `mix` block's step).

In:  params["from"], dataset Artifacts (a list); params["ratios"], one fraction each, summing
     to 1; params["rows"], the total wanted (None: the largest total every input can fill
     without repeating a row); params["seed"].
Out: `data.parquet` holding the columns every input has, with a `source` column naming the
     input of each row when params["source_column"] is set; and {"rows_in": {input: n},
     "rows_out": n, "mix": {input: realised rows}, "repeated": {input: rows drawn twice or more}}.

A row's place is decided by hashing (seed, input, row content): the same seed and rows give
the same bytes, and adding rows to one input moves few of the rows already chosen. Counts
are realised by largest remainder, so they sum to `rows` exactly and each is within one row
of ratio x rows.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping
from typing import Any

from ftlang.lang.diagnostics import Diagnostic
from ftlang.stdlib.parquet_out import write_table
from ftlang.stdlib.spec import (
    REQUIRED,
    SEED_LIMIT,
    Artifact,
    Attr,
    BlockView,
    Signature,
    StepContext,
    StepError,
    StepSpec,
    error,
)


def rules(b: BlockView) -> list[Diagnostic]:
    """Ratios: one per input, each > 0, summing to 1 (FT0330, FT0331)."""
    inputs, ratios = b.params.get("from"), b.params.get("ratios")
    if not isinstance(inputs, list) or not isinstance(ratios, list):
        return []
    if len(inputs) != len(ratios):
        return [error("FT0331", f"{len(ratios)} ratio{'s' if len(ratios) != 1 else ''} for "
                      f"{len(inputs)} dataset{'s' if len(inputs) != 1 else ''}", b.at("ratios"),
                      "one ratio per dataset in `from`",
                      help="write one fraction per dataset, in the order of `from`")]
    if any(not isinstance(r, (int, float)) for r in ratios):
        return []
    bad = [r for r in ratios if not 0 < r <= 1]
    if bad:
        return [error("FT0332", f"a mixture ratio must be above 0 and at most 1, not {bad[0]:g}", b.at("ratios"),
                      "out of range", help="leave a dataset out of `from` rather than giving it 0")]
    total = sum(ratios)
    if not math.isclose(total, 1.0, abs_tol=1e-6):
        return [error("FT0330", f"mixture ratios sum to {total:g}, not 1", b.at("ratios"),
                      f"sums to {total:g}",
                      help="ratios are fractions of the mixed rows: make them sum to 1, e.g. "
                           + ", ".join(f"{r / total:.3g}" for r in ratios) if total > 0 else
                           "ratios are fractions of the mixed rows: make them sum to 1")]
    return []


def summary(meta: Mapping[str, Any]) -> str:
    mix = meta.get("mix")
    if not isinstance(mix, dict):
        return ""
    text = f"{meta.get('rows_out')} rows: " + ", ".join(f"{k} {v}" for k, v in mix.items())
    rep = {k: v for k, v in (meta.get("repeated") or {}).items() if v}
    return text + (" (repeated: " + ", ".join(f"{k} {v}" for k, v in rep.items()) + ")" if rep else "")


SPEC = StepSpec(
    kind="mix", version=1, output="dataset", run="ftlang.stdlib.mixing:run",
    signature=Signature("mix", (
        Attr("from", "list[dataset]", REQUIRED, "the datasets to mix", unique=True),
        Attr("ratios", "list[float]", REQUIRED, "the fraction of the mixed rows each dataset "
             "gives, in the order of `from`; they sum to 1"),
        Attr("rows", "int", None, "rows in the mixture; default: the most every dataset can give "
             "without repeating a row. More than a dataset has repeats its rows (oversampling)",
             ge=1, le=2**40),
        Attr("seed", "int", 0, "which rows are drawn", ge=0, le=SEED_LIMIT),
        Attr("source_column", "str", None, "add a column of this name holding each row's dataset"),
    ), "Several datasets mixed by ratio into one training set, reproducible for a seed; the "
       "realised counts are printed. Keeps the columns every dataset has."),
    rules=rules, summary=summary,
)


def _label(art: Artifact) -> str:
    name = art.node.split(".", 1)[1] if "." in art.node else art.node
    return name + (f".{art.port}" if art.port else "")


def counts(sizes: list[int], ratios: list[float], rows: int | None) -> list[int]:
    """Rows to take from each input: largest remainder over ratio x total."""
    if rows is None:  # the largest total no input has to repeat a row for
        rows = min(int(s / r) if r > 0 else 10**18 for s, r in zip(sizes, ratios))
        rows = 0 if rows >= 10**18 else rows
    exact = [r * rows for r in ratios]
    out = [math.floor(x) for x in exact]
    order = sorted(range(len(out)), key=lambda i: (-(exact[i] - out[i]), i))
    for i in order[:rows - sum(out)]:
        out[i] += 1
    return out


def _rank(seed: int, name: str, table: Any) -> list[int]:
    """Row indices in a seeded order that depends on each row's content, not its position."""
    rows = table.to_pylist()
    keys = [hashlib.sha256(f"{seed}\0{name}\0{sorted(r.items())!r}".encode()).digest() for r in rows]
    return sorted(range(len(rows)), key=lambda i: (keys[i], i))


def run(ctx: StepContext) -> dict[str, Any]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    p = ctx.params
    inputs: list[Artifact] = list(p["from"])
    ratios = [float(r) for r in p["ratios"]]
    seed = int(p["seed"])
    if len(inputs) != len(ratios) or not math.isclose(sum(ratios), 1.0, abs_tol=1e-6):
        raise StepError("mix needs one ratio per dataset, summing to 1")  # the compiler checks it too
    names = [_label(a) for a in inputs]
    if len(set(names)) != len(names):
        raise StepError(f"a dataset is listed twice in `from`: {', '.join(names)}")
    tables = [pq.read_table(a.dataset_file()) for a in inputs]
    common = [c for c in tables[0].column_names if all(c in t.column_names for t in tables[1:])]
    if not common:
        raise StepError("the datasets share no column: " + "; ".join(
            f"{n}({', '.join(t.column_names)})" for n, t in zip(names, tables)),
            hint="rename columns in a curate query so the datasets line up")
    want = counts([t.num_rows for t in tables], ratios, p["rows"])
    pieces, realised, repeated = [], {}, {}
    source = p["source_column"]
    for name, table, n in zip(names, tables, want):
        table = table.select(common)
        if n and table.num_rows == 0:
            raise StepError(f"{name} has no rows, but its ratio asks for {n}")
        order = _rank(seed, name, table)
        # Beyond the table's size the order repeats: oversampling, every row before any twice.
        idx = [order[i % len(order)] for i in range(n)] if n else []
        part = table.take(pa.array(idx, pa.int64()))
        if source:
            part = part.append_column(source, pa.array([name] * n, pa.string()))
        pieces.append(part)
        realised[name] = n
        repeated[name] = max(0, n - table.num_rows)
    schema = pieces[0].schema
    mixed = pa.concat_tables([t.cast(schema) for t in pieces])
    # Interleave by a seeded hash so the mixture is not in blocks per input (the trainer may
    # read it in order with shuffle = false).
    keys = [hashlib.sha256(f"{seed}\0{k}".encode()).digest() for k in range(mixed.num_rows)]
    mixed = mixed.take(pa.array(sorted(range(mixed.num_rows), key=lambda i: keys[i]), pa.int64()))
    write_table(mixed, ctx.out / "data.parquet")
    ctx.log("mixed " + ", ".join(f"{k} {v} ({r:.0%})" for (k, v), r in zip(realised.items(), ratios)))
    return {"rows_in": {n: t.num_rows for n, t in zip(names, tables)}, "rows_out": mixed.num_rows,
            "mix": realised, "repeated": repeated}
