"""Imbalance and order: the `balance` and `order` attributes of a train block.

In:  a train step's complete params: `data` (a dataset Artifact), `balance` (None or
     by(column, strategy)), `order` (None, curriculum(by, stages) or length(of, stages)),
     `seed`.
Out: the rows rearranged into a Parquet file under <cache>/arranged/ (keyed by the data's
     digest and the settings, so a rerun reuses it), a new `data` Artifact pointing at it,
     `shuffle` turned off when an order is given, and ledger metadata {"balance": {label:
     rows after}, "order": {...}}.

Both act on rows before any method reads them, so every method (sft, dpo, grpo, ...)
trains on the same rearranged rows; with an order the trainer reads them sequentially
(TrainingArguments.train_sampling_strategy = "sequential", see trainer.trainer_settings),
each epoch in the same order. A curriculum sorts by its column, cuts the rows into
`stages` consecutive stages of (nearly) equal size and shuffles within each stage with the
seed; without `stages` the order is the sorted order itself. Ties keep a content-hash order,
so the result does not depend on the input's row order.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
from collections.abc import Mapping
from typing import Any

from ftlang.lang.diagnostics import Diagnostic
from ftlang.stdlib.spec import (
    REQUIRED,
    Artifact,
    Attr,
    BlockView,
    Call,
    Need,
    Signature,
    StepContext,
    StepError,
    error,
)

STRATEGIES = ("oversample", "undersample", "weights")

BALANCES = {
    "by": Signature("by", (
        Attr("column", "ident", REQUIRED, "the label column whose values are balanced"),
        Attr("strategy", "enum", "oversample", "oversample repeats rows of the smaller labels up to "
             "the largest; undersample keeps as many rows of each label as the smallest has; weights "
             "draws as many rows as there are, with replacement, each with probability 1 / (rows "
             "of its label): weighted sampling fixed by the seed", choices=STRATEGIES),
    ), "Rebalance the training rows by a label column.", positional=("column",)),
}

ORDERS = {
    "curriculum": Signature("curriculum", (
        Attr("by", "ident", REQUIRED, "the column to sort by (a number or a string): easy first"),
        Attr("stages", "int", None, "cut the sorted rows into this many stages and shuffle within "
             "each (seeded); default: the exact sorted order", ge=1, le=10_000),
        Attr("descending", "bool", False, "largest first"),
    ), "Curriculum order: the trainer reads the rows sorted by a column, in stages."),
    "length": Signature("length", (
        Attr("of", "ident", REQUIRED, "the text column whose length (characters) orders the rows"),
        Attr("stages", "int", None, "as in curriculum(...)", ge=1, le=10_000),
        Attr("descending", "bool", False, "longest first"),
    ), "Shortest rows first (or longest, with descending = true).", positional=("of",)),
}

ATTRS = (
    Attr("balance", "call[balance]", None, "rebalance rows by a label column: "
         "by(label, strategy = oversample | undersample | weights)"),
    Attr("order", "call[order]", None, "the order the trainer reads rows in: curriculum(by = "
         "difficulty, stages = 3) or length(of = completion); turns shuffling off"),
)


def _column(call: Any) -> str | None:
    if not isinstance(call, Call):
        return None
    col = call.args.get("column", call.args.get("by", call.args.get("of")))
    return col if isinstance(col, str) else None


def needs(p: Mapping[str, Any]) -> list[Need]:
    """The label / order columns must be columns of `data` (compiler/contracts.py)."""
    cols = tuple((c, a) for a in ("balance", "order") if (c := _column(p.get(a))))
    return [Need("data", cols)] if cols else []


def rules(b: BlockView) -> list[Diagnostic]:
    if isinstance(b.params.get("order"), Call) and b.given("shuffle") and b.params.get("shuffle") is True:
        return [error("FT0333", "`shuffle = true` would shuffle the `order` away", b.at("shuffle"),
                      "conflicts with `order`", help="remove `shuffle`: with an order the trainer "
                      "reads rows sequentially (curriculum stages shuffle within themselves)")]
    return []


def _hash(row: Mapping[str, Any]) -> str:
    return hashlib.sha256(json.dumps(row, sort_keys=True, default=str).encode()).hexdigest()


def _sort_key(v: Any) -> tuple[int, Any]:
    if v is None:
        return (2, 0)  # missing values last
    if isinstance(v, (int, float, bool)):
        return (0, float(v))
    return (1, str(v))


def balanced(rows: list[dict[str, Any]], call: Call, seed: int) -> tuple[list[int], dict[str, int]]:
    """Row indices after rebalancing, and the rows per label after it."""
    col, strategy = call["column"], call["strategy"]
    rng = random.Random(seed)
    groups: dict[str, list[int]] = {}
    for i in sorted(range(len(rows)), key=lambda i: (_hash(rows[i]), i)):
        groups.setdefault(json.dumps(rows[i].get(col), default=str), []).append(i)
    labels = sorted(groups)
    if strategy == "weights":
        weights = [1.0 / len(groups[json.dumps(rows[i].get(col), default=str)]) for i in range(len(rows))]
        idx = rng.choices(range(len(rows)), weights=weights, k=len(rows))
    else:
        target = (max if strategy == "oversample" else min)(len(g) for g in groups.values())
        idx = []
        for label in labels:
            g = groups[label]
            take = rng.sample(g, target) if target <= len(g) else \
                g * (target // len(g)) + rng.sample(g, target % len(g))
            idx += take
        rng.shuffle(idx)  # labels interleaved; a later `order` sorts anyway
    after: dict[str, int] = {}
    for i in idx:
        key = str(rows[i].get(col))
        after[key] = after.get(key, 0) + 1
    return idx, dict(sorted(after.items()))


def ordered(rows: list[dict[str, Any]], idx: list[int], call: Call, seed: int) -> list[int]:
    """`idx` in the order the call says."""
    col = _column(call)
    assert col is not None

    def value(i: int) -> Any:
        v = rows[i].get(col)
        return len(v) if call.name == "length" and isinstance(v, str) else v

    nulls = [i for i in idx if value(i) is None]
    keyed = sorted((i for i in idx if value(i) is not None),
                   key=lambda i: (_sort_key(value(i)), _hash(rows[i]), i), reverse=bool(call["descending"]))
    out = keyed + sorted(nulls, key=lambda i: (_hash(rows[i]), i))  # missing values last
    stages = call["stages"]
    if not stages or stages <= 1:
        return out
    rng = random.Random(seed)
    staged: list[int] = []
    for s in range(stages):
        part = out[len(out) * s // stages: len(out) * (s + 1) // stages]
        rng.shuffle(part)
        staged += part
    return staged


def arrange(ctx: StepContext) -> dict[str, Any]:
    """Rearrange `data` as `balance` and `order` say; ctx.params changes in place."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    p = ctx.params
    balance, order = p["balance"], p["order"]
    if balance is None and order is None:
        return {}
    data: Artifact = p["data"]
    seed = int(p["seed"])
    table = pq.read_table(data.dataset_file())
    rows = table.to_pylist()
    meta: dict[str, Any] = {}
    for call in (balance, order):
        col = _column(call)
        if col is not None and col not in table.column_names:
            raise StepError(f"the dataset {data.node} has no column {col!r} for {call.name}(...) "
                            f"(it has {', '.join(table.column_names)})")
    idx = list(range(len(rows)))
    if balance is not None:
        idx, after = balanced(rows, balance, seed)
        meta["balance"] = after
        ctx.log(f"balance by {balance['column']} ({balance['strategy']}): {len(rows)} -> {len(idx)} rows, "
                + ", ".join(f"{k} {v}" for k, v in after.items()))
    if order is not None:
        idx = ordered(rows, idx, order, seed)
        meta["order"] = {"by": _column(order), "kind": order.name, "stages": order["stages"]}
        p["shuffle"] = False  # the order is the point: the trainer reads rows sequentially
        ctx.log(f"order: {order.name} by {_column(order)}"
                + (f" in {order['stages']} stages" if order["stages"] else "") + ", sequential reads")
    tag = hashlib.sha256(json.dumps([data.digest, data.port, repr(balance), repr(order), seed]).encode())
    folder = ctx.cache / "arranged" / tag.hexdigest()[:32]
    file = folder / "data.parquet"
    if not file.is_file():
        folder.mkdir(parents=True, exist_ok=True)
        tmp = folder / f".data.{os.getpid()}.tmp"
        pq.write_table(table.take(pa.array(idx, pa.int64())), tmp)
        os.replace(tmp, file)
    p["data"] = Artifact(data.node, data.digest, folder, None, data.meta)
    return meta
