"""clean: PII scrubbing, near-duplicate removal, language filter and decontamination.

In:  params["from"] (a dataset Artifact); params["columns"] (the text columns looked at;
     None: every string column); and the stages, each None (off) or a call:
     `pii = scrub(kinds, action)`, `dedup = minhash(threshold, ngram, num_perm, seed)`,
     `language = langid(keep)`, `decontaminate = overlap(against, n, min_overlap)`.
Out: `data.parquet` (the kept rows, same columns, same order) and {"rows_in": {table: n},
     "rows_out": n, "removed": {why: rows}, "pii": {kind: matches}, "overlap_ngrams": n,
     "funnel": [[stage, rows after it], ...]}.

The stages run in that fixed order: scrubbing first, so two rows that differ only in an
email address are duplicates; decontamination last, so its count is of rows that would
otherwise have been trained on. Exact duplicates stay SQL (`SELECT DISTINCT`), and length,
repetition and character filters are the stdlib's SQL macros (stdlib/sqlmacros.py).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ftlang.lang.diagnostics import Diagnostic
from ftlang.stdlib import dedup, pii
from ftlang.stdlib.parquet_out import write_table
from ftlang.stdlib.spec import (
    REQUIRED,
    SEED_LIMIT,
    Artifact,
    Attr,
    BlockView,
    Call,
    Signature,
    StepContext,
    StepError,
    StepSpec,
    error,
)

PII = {"scrub": Signature("scrub", (
    Attr("kinds", "list[enum]", list(pii.KINDS), "what to find", choices=pii.KINDS),
    Attr("action", "enum", "redact", "redact replaces each match with <EMAIL>, <PHONE>, <IP> or "
         "<KEY>; drop removes the row", choices=("redact", "drop")),
), "Find emails, phone numbers, IP addresses and API keys; counted per kind.")}

DEDUPS = {"minhash": Signature("minhash", (
    Attr("threshold", "float", 0.8, "estimated Jaccard similarity of word n-grams at which a row "
         "is a near-duplicate of an earlier one", gt=0, le=1),
    Attr("ngram", "int", 5, "words per shingle", ge=1, le=64),
    Attr("num_perm", "int", 128, "MinHash permutations: more is more exact, slower", ge=16, le=4096),
    Attr("seed", "int", 1, "the MinHash permutations", ge=0, le=SEED_LIMIT),
), "Near-duplicate removal with MinHash LSH (datasketch); the first row of a group is kept.")}

LANGUAGES = {"langid": Signature("langid", (
    Attr("keep", "list[str]", REQUIRED, "ISO 639-1 codes of the languages kept, e.g. [\"en\"]"),
), "Keep rows whose text py3langid's offline model classifies as one of `keep`.")}

DECONTAMS = {"overlap": Signature("overlap", (
    Attr("against", "dataset", REQUIRED, "the eval rows that must not be trained on"),
    Attr("n", "int", 13, "words per n-gram (13 as in GPT-3's decontamination; smaller for "
         "short rows)", ge=1, le=256),
    Attr("min_overlap", "int", 1, "shared n-grams that make a row contaminated", ge=1, le=10**6),
), "Drop training rows that share word n-grams with an eval set.", positional=("against",))}

REASONS = {"pii": "PII (action = drop)", "dedup": "near-duplicate", "language": "other language",
           "decontaminate": "overlaps eval set"}


def rules(b: BlockView) -> list[Diagnostic]:
    stages = [s for s in REASONS if b.params.get(s) is not None]
    if not stages and all(b.given(s) is False for s in REASONS):
        return [error("FT0334", f"clean `{b.name}` has no stage", b.span, "does nothing",
                      help="add pii = scrub(), dedup = minhash(threshold = 0.8), language = "
                           "langid(keep = [\"en\"]) or decontaminate = overlap(<eval dataset>)")]
    call = b.params.get("language")
    if isinstance(call, Call) and isinstance(call.args.get("keep"), list) and not call.args["keep"]:
        return [error("FT0334", "langid(keep = []) keeps nothing", b.at("language"), "empty",
                      help='name the languages to keep: keep = ["en"]')]
    return []


def summary(meta: Mapping[str, Any]) -> str:
    """`2 rows; removed: near-duplicate 1, overlaps eval set 1 (3 n-grams); pii: phone 1`."""
    if not isinstance(meta.get("rows_out"), int):
        return ""
    bits = [f"{meta['rows_out']} rows"]
    removed = [f"{why} {n}" + (f" ({meta['overlap_ngrams']} n-grams)" if why == REASONS["decontaminate"]
                               and isinstance(meta.get("overlap_ngrams"), int) else "")
               for why, n in (meta.get("removed") or {}).items()]
    if removed:
        bits.append("removed: " + ", ".join(removed))
    found = {k: v for k, v in (meta.get("pii") or {}).items() if v}
    if isinstance(meta.get("pii"), dict):
        bits.append("pii: " + (", ".join(f"{k} {v}" for k, v in found.items()) or "none found"))
    return "; ".join(bits)


SPEC = StepSpec(
    kind="clean", version=1, output="dataset", run="ftlang.stdlib.clean:run",
    signature=Signature("clean", (
        Attr("from", "dataset", REQUIRED, "the rows to clean"),
        Attr("columns", "list[str]", None, "the text columns looked at (default: every string column)"),
        Attr("pii", "call[pii]", None, "scrub(kinds = [email, phone, ip, key], action = redact | drop)"),
        Attr("dedup", "call[dedup]", None, "minhash(threshold = 0.8, ngram = 5, num_perm = 128)"),
        Attr("language", "call[language]", None, "langid(keep = [\"en\"])"),
        Attr("decontaminate", "call[decontam]", None, "overlap(<eval dataset>, n = 13)"),
    ), "Clean a dataset: PII scrubbing, near-duplicate removal (MinHash LSH), a language "
       "filter and decontamination against an eval set, in that order; each stage's removed "
       "rows are counted (the done line, `ft report`'s funnel)."),
    rules=rules, summary=summary,
)


def _label(art: Artifact) -> str:
    name = art.node.split(".", 1)[1] if "." in art.node else art.node
    return name + (f".{art.port}" if art.port else "")


def _text_columns(table: Any, given: list[str] | None, art: Artifact) -> list[str]:
    import pyarrow as pa

    strings = [f.name for f in table.schema if pa.types.is_string(f.type) or pa.types.is_large_string(f.type)]
    if given is None:
        if not strings:
            raise StepError(f"{_label(art)} has no text column", hint="name them: columns = [\"text\"]")
        return strings
    for c in given:
        if c not in table.column_names:
            raise StepError(f"{_label(art)} has no column {c!r} (it has {', '.join(table.column_names)})")
        if c not in strings:
            raise StepError(f"column {c!r} of {_label(art)} is not text")
    return list(given)


def _joined(rows: list[dict[str, Any]], cols: list[str]) -> list[str]:
    return ["\n".join(str(r[c]) for c in cols if r.get(c) is not None) for r in rows]


def run(ctx: StepContext) -> dict[str, Any]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    p = ctx.params
    src: Artifact = p["from"]
    table = pq.read_table(src.dataset_file())
    cols = _text_columns(table, p["columns"], src)
    rows = table.to_pylist()
    funnel: list[list[Any]] = [["input", len(rows)]]
    removed: dict[str, int] = {}
    meta: dict[str, Any] = {"rows_in": {_label(src): len(rows)}}

    def keep(drop: set[int], stage: str) -> None:
        nonlocal rows
        rows = [r for i, r in enumerate(rows) if i not in drop]
        removed[REASONS[stage]] = removed.get(REASONS[stage], 0) + len(drop)
        funnel.append([stage, len(rows)])
        ctx.log(f"{stage}: removed {len(drop)} rows ({REASONS[stage]}), {len(rows)} left")

    scrub: Call | None = p["pii"]
    if scrub is not None:
        counts: dict[str, int] = {k: 0 for k in scrub["kinds"]}
        hit: set[int] = set()
        for i, r in enumerate(rows):
            before = sum(counts.values())
            for c in cols:
                if isinstance(r.get(c), str):
                    r[c] = pii.scrub(r[c], tuple(scrub["kinds"]), counts)
            if sum(counts.values()) > before:
                hit.add(i)
        meta["pii"] = counts
        ctx.log("pii: " + ", ".join(f"{k} {v}" for k, v in counts.items()) + f" in {len(hit)} rows")
        if scrub["action"] == "drop":
            keep(hit, "pii")
        else:
            funnel.append(["pii", len(rows)])
    near: Call | None = p["dedup"]
    if near is not None:
        twins = dedup.near_duplicates(_joined(rows, cols), threshold=float(near["threshold"]),
                                      ngram=int(near["ngram"]), num_perm=int(near["num_perm"]),
                                      seed=int(near["seed"]))
        keep(set(twins), "dedup")
    lang: Call | None = p["language"]
    if lang is not None:
        keep(_other_language(_joined(rows, cols), list(lang["keep"])), "language")
    decontam: Call | None = p["decontaminate"]
    if decontam is not None:
        against: Artifact = decontam["against"]
        bench = pq.read_table(against.dataset_file())
        bench_cols = [c for c in _text_columns(bench, None, against)]
        hits = dedup.overlaps(_joined(rows, cols), _joined(bench.to_pylist(), bench_cols),
                              n=int(decontam["n"]), min_overlap=int(decontam["min_overlap"]))
        meta["overlap_ngrams"] = sum(hits.values())
        keep(set(hits), "decontaminate")
    out = pa.Table.from_pylist(rows, schema=table.schema) if rows else table.slice(0, 0)
    write_table(out, ctx.out / "data.parquet")
    meta.update(rows_out=len(rows), removed=removed, funnel=funnel)
    return meta


def _other_language(texts: list[str], keep: list[str]) -> set[int]:
    try:
        import py3langid
    except ImportError:
        raise StepError("language = langid(...) needs the py3langid package",
                        hint="pip install 'ftlang[langid]' (an offline model, no download)") from None
    wanted = set(keep)
    return {i for i, t in enumerate(texts) if py3langid.classify(t)[0] not in wanted}
