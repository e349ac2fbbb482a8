"""generate: synthetic rows from a model over an input dataset (the `generate` block's step).

In:  params["model"] (a model Artifact), params["from"] (a dataset Artifact),
     params["prompt"] (a template with `{column}` placeholders), sampling settings (`n`,
     `seed`, `temperature`, `top_p`, `max_new_tokens`), params["parse"] (json(fields) |
     regex(pattern) | text(column)) and params["keep"] (input columns copied to each row).
Out: `data.parquet` with the kept input columns, then the parsed columns, one row per sample
     that parsed; and {"rows_in": {table: n}, "rows_out": n, "samples": n, "unparsable": n,
     "generated_rows": rows that were not in the cache}.

Cache: one Parquet file per (model digest, template, sampling settings) under
<cache>/synth/, holding each rendered prompt's hash and its `n` texts. A row's samples are
drawn with a seed derived from the step's seed and the row's prompt, one row at a time, so
they do not depend on the other rows: adding 1% of rows generates 1%, and changing the
parse rule re-parses without generating. (stdlib/generate.py is eval's batched generation;
this module calls it one row at a time.)

A parse rule that matches none of the samples fails the step, showing three outputs.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import string
from collections.abc import Mapping
from typing import Any

from ftlang.lang.diagnostics import Diagnostic
from ftlang.stdlib.spec import (
    COUNT_LIMIT,
    REQUIRED,
    SEED_LIMIT,
    TOKENS_LIMIT,
    Artifact,
    Attr,
    BlockView,
    Call,
    Need,
    Signature,
    StepContext,
    StepError,
    StepSpec,
    error,
)

PARSERS = {
    "json": Signature("json", (
        Attr("fields", "list[str]", REQUIRED, "the keys read from the first JSON object in the text; "
             "each becomes a column (a sample without all of them is unparsable)"),
    ), "Read a JSON object from the generated text."),
    "regex": Signature("regex", (
        Attr("pattern", "str", REQUIRED, "a Python regular expression searched in the text; each "
             "named group (?P<name>...) becomes a column"),
    ), "Match a regular expression; its named groups are the columns.", positional=("pattern",)),
    "text": Signature("text", (
        Attr("column", "str", "text", "the column holding the whole generated text"),
    ), "The generated text itself, stripped (paraphrases, rewrites)."),
}


def placeholders(prompt: str) -> list[str]:
    """The `{column}` names of a prompt template; ValueError when it is malformed."""
    names = []
    for _, field, spec, conv in string.Formatter().parse(prompt):
        if field is None:
            continue
        if not field.isidentifier() or spec or conv:
            raise ValueError(f"`{{{field}{'!' + conv if conv else ''}{':' + spec if spec else ''}}}` is not "
                             "a plain {column} placeholder")
        names.append(field)
    return list(dict.fromkeys(names))


def columns_of(parse: Call) -> list[str]:
    if parse.name == "json":
        return list(parse["fields"])
    if parse.name == "regex":
        return list(re.compile(parse["pattern"]).groupindex)
    return [parse["column"]]


def rules(b: BlockView) -> list[Diagnostic]:
    out = []
    prompt = b.params.get("prompt")
    if isinstance(prompt, str):
        try:
            placeholders(prompt)
        except ValueError as e:
            out.append(error("FT0336", f"the prompt template is malformed: {e}", b.at("prompt"), "here",
                             help="write columns as {name}; a literal brace is {{ or }}"))
    parse = b.params.get("parse")
    if isinstance(parse, Call) and parse.name == "regex" and isinstance(parse.args.get("pattern"), str):
        try:
            groups = re.compile(parse["pattern"]).groupindex
        except re.error as e:
            out.append(error("FT0335", f"the parse pattern is not a regular expression: {e}", b.at("parse"),
                             "bad pattern", help="Python `re` syntax; name the captured columns: (?P<answer>.+)"))
        else:
            if not groups:
                out.append(error("FT0335", "the parse pattern names no group, so it makes no column",
                                 b.at("parse"), "no (?P<name>...) group",
                                 help="name each captured column: regex(\"Q: (?P<question>.+)\\nA: (?P<answer>.+)\")"))
    if isinstance(parse, Call) and parse.name == "json" and parse.args.get("fields") == []:
        out.append(error("FT0335", "json(fields = []) makes no column", b.at("parse"), "no fields",
                         help='name the keys to read: json(fields = ["instruction", "response"])'))
    return out


def needs(p: Mapping[str, Any]) -> list[Need]:
    """The prompt's placeholders and `keep` are columns of `from`."""
    prompt = p.get("prompt")
    try:
        cols = placeholders(prompt) if isinstance(prompt, str) else []
    except ValueError:
        cols = []
    keep = [k for k in (p.get("keep") or []) if isinstance(k, str)]
    wanted = tuple(dict.fromkeys([*((c, "prompt") for c in cols), *((k, "keep") for k in keep)]))
    return [Need("from", wanted)] if wanted else []


def summary(meta: Mapping[str, Any]) -> str:
    if not isinstance(meta.get("rows_out"), int):
        return ""
    text = f"{meta['rows_out']} rows"
    if meta.get("unparsable"):
        text += f", {meta['unparsable']} unparsable dropped"
    if isinstance(meta.get("generated_rows"), int):
        n = meta["generated_rows"]
        text += f", {n} row{'s' if n != 1 else ''} generated"
    return text


SPEC = StepSpec(
    kind="generate", version=1, output="dataset", run="ftlang.stdlib.synth:run",
    signature=Signature("generate", (
        Attr("model", "model", REQUIRED, "the model that writes the rows"),
        Attr("from", "dataset", REQUIRED, "the input rows: one prompt each"),
        Attr("prompt", "str", REQUIRED, "the prompt, with {column} placeholders filled from each row"),
        Attr("parse", "call[parse]", REQUIRED, "json(fields = [...]), regex(\"...(?P<col>...)\") or text()"),
        Attr("template", "template", None, "how the prompt is rendered (default: the model's own, "
             "else plain)"),
        Attr("n", "int", 1, "samples per input row", ge=1, le=COUNT_LIMIT),
        Attr("seed", "int", 0, "sampling seed (each row's samples are seeded from it and the row)",
             ge=0, le=SEED_LIMIT),
        Attr("temperature", "float", 0.8, "sampling temperature; 0 is greedy", ge=0, le=100),
        Attr("top_p", "float", 0.95, "nucleus sampling", gt=0, le=1),
        Attr("max_new_tokens", "int", 64, "tokens generated per sample", ge=1, le=TOKENS_LIMIT),
        Attr("keep", "list[str]", [], "input columns copied to each generated row"),
    ), "Synthetic data: a model writes rows from a prompt template over an input dataset "
       "(self-instruct pairs, paraphrases, rewrites); samples that do not parse are counted "
       "and dropped. Cached per input row, model, template and seed."),
    rules=rules, needs=needs, summary=summary,
)


# ---- the step ------------------------------------------------------------------------------

def parse_text(text: str, parse: Call) -> dict[str, Any] | None:
    """The columns of one sample, or None when it does not parse."""
    if parse.name == "text":
        return {parse["column"]: text.strip()} if text.strip() else None
    if parse.name == "regex":
        m = re.search(parse["pattern"], text, re.DOTALL)
        return m.groupdict() if m is not None else None
    fields = list(parse["fields"])
    decoder = json.JSONDecoder()
    for start in [i for i, c in enumerate(text) if c == "{"]:
        try:
            obj, _ = decoder.raw_decode(text, start)
        except json.JSONDecodeError:
            continue
        if isinstance(obj, dict) and all(f in obj for f in fields):
            return {f: obj[f] if isinstance(obj[f], str) or obj[f] is None else json.dumps(obj[f])
                    for f in fields}
    return None


def _row_seed(seed: int, h: str) -> int:
    return int(hashlib.sha256(f"{seed}:{h}".encode()).hexdigest()[:8], 16)


def _load_cache(path: Any) -> dict[str, list[str]]:
    import pyarrow.parquet as pq

    if not path.exists():
        return {}
    try:
        data = pq.read_table(path).to_pydict()
        return dict(zip(data["h"], data["texts"]))
    except (OSError, ValueError, KeyError):  # a damaged cache is only a cache (ArrowInvalid is a ValueError)
        return {}


def _save_cache(path: Any, cached: dict[str, list[str]]) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    path.parent.mkdir(parents=True, exist_ok=True)
    keys = sorted(cached)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    pq.write_table(pa.table({"h": keys, "texts": pa.array([cached[k] for k in keys], pa.list_(pa.string()))}), tmp)
    os.replace(tmp, path)


class Writer:
    """A model loaded on first use: a rerun whose rows are all cached loads nothing."""

    def __init__(self, model: Artifact, tpl: dict[str, Any], p: Mapping[str, Any]) -> None:
        self.model, self.tpl, self.p = model, tpl, p
        self.lm: Any = None
        self.tokenizer: Any = None

    def samples(self, prompt: str, seed: int) -> list[str]:
        from ftlang.stdlib import generate, modelio

        if self.lm is None:
            self.tokenizer = modelio.load_tokenizer(self.model)
            self.lm = modelio.load_model(self.model, merged=True)
        temperature = float(self.p["temperature"])
        sampling = generate.Sampling(max_new_tokens=int(self.p["max_new_tokens"]), do_sample=temperature > 0,
                                     temperature=temperature or 1.0, top_p=float(self.p["top_p"]), seed=seed)
        context = int(getattr(self.lm.config, "max_position_embeddings", 2048) or 2048)
        n = int(self.p["n"])
        return generate.generate(self.lm, self.tokenizer, self.tpl, [prompt] * n, sampling, n, context)


def run(ctx: StepContext) -> dict[str, Any]:
    import pyarrow as pa
    import pyarrow.parquet as pq
    from ftlang.stdlib import modelio
    from ftlang.stdlib import template as templates
    from ftlang.stdlib.parquet_out import write_table
    from ftlang.stdlib.tokencache import namespace

    p = ctx.params
    model: Artifact = p["model"]
    src: Artifact = p["from"]
    parse: Call = p["parse"]
    table = pq.read_table(src.dataset_file())
    names = placeholders(p["prompt"])
    keep = list(p["keep"])
    for c in [*names, *keep]:
        if c not in table.column_names:
            raise StepError(f"the dataset {src.node} has no column {c!r} (it has {', '.join(table.column_names)})")
    tpl = templates.load(p["template"]) if p["template"] is not None else \
        (modelio.template_of(model) or templates.load(None))
    ns = namespace(model=model.digest, template=tpl, n=p["n"], seed=p["seed"], temperature=p["temperature"],
                   top_p=p["top_p"], max_new_tokens=p["max_new_tokens"], what="synth")
    path = ctx.cache / "synth" / f"{ns}.parquet"
    cached = _load_cache(path)
    rows = table.to_pylist()
    prompts = [p["prompt"].format_map({c: "" if r[c] is None else r[c] for c in names}) for r in rows]
    hashes = [hashlib.sha256(text.encode()).hexdigest() for text in prompts]
    todo = list(dict.fromkeys(h for h in hashes if h not in cached))
    first = {h: i for i, h in reversed(list(enumerate(hashes)))}
    writer = Writer(model, tpl, p)
    fresh = 0
    try:
        for k, h in enumerate(todo):
            cached[h] = writer.samples(prompts[first[h]], _row_seed(int(p["seed"]), h))
            fresh += 1
            ctx.progress(k + 1, len(todo), "rows generated")
    finally:
        if fresh:  # what was generated before a failure is kept
            _save_cache(path, cached)
    out_cols = columns_of(parse)
    clash = sorted(set(out_cols) & set(keep))
    if clash:
        raise StepError(f"column {clash[0]!r} is both kept from the input and parsed from the output",
                        hint="drop it from `keep`, or name the parsed column differently")
    made: list[dict[str, Any]] = []
    failed: list[str] = []
    total = 0
    for r, h in zip(rows, hashes):
        for text in cached[h]:
            total += 1
            cols = parse_text(text, parse)
            if cols is None:
                failed.append(text)
                continue
            made.append({**{c: r[c] for c in keep}, **cols})
    if total and not made:
        shown = "\n".join(f"  {i + 1}. {json.dumps(t[:200])}" for i, t in enumerate(failed[:3]))
        raise StepError(f"the parse rule {parse.name}(...) matched none of the {total} outputs; for example:\n"
                        + shown, hint="check the rule against these outputs, or ask for that format in the prompt")
    fields = [pa.field(c, table.schema.field(c).type) for c in keep] + [pa.field(c, pa.string()) for c in out_cols]
    result = pa.Table.from_pylist(made, schema=pa.schema(fields))
    write_table(result, ctx.out / "data.parquet")
    name = src.node.split(".", 1)[-1] + (f".{src.port}" if src.port else "")
    ctx.log(f"generated {fresh} rows ({len(rows) - fresh} cached); {total} samples, {len(failed)} unparsable "
            f"dropped, {len(made)} rows out")
    return {"rows_in": {name: len(rows)}, "rows_out": len(made), "samples": total,
            "unparsable": len(failed), "generated_rows": fresh}
