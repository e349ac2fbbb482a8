"""critique: constitutional self-critique (Bai et al. 2022, arXiv:2212.08073).

In:  params["model"] (a model Artifact), params["from"] (prompts: a dataset with
     `prompt_field`), the principles (`principles = [...]` in the .ft, or `principles_file`:
     one principle per non-empty line), the two prompt templates and sampling settings.
Out: two parts. `sft.parquet` (prompt, completion = the revision) for sft training, and
     `prefs.parquet` (prompt, chosen = the revision, rejected = the original response,
     critique) for dpo / reward_model; {"rows_in", "rows_out", "unchanged", "generated_rows"}.

For each prompt, three generations by the same model, each through generate.py (so every
adapter kind decodes correctly), each seeded from the step's seed and the prompt:
  1. response = model(prompt)
  2. critique = model(critique_prompt with {prompt}, {response}, {principles})
  3. revision = model(revision_prompt with {prompt}, {response}, {principles}, {critique})
{principles} is the list, one "- principle" per line. A revision equal to the response
teaches nothing: such rows are counted as unchanged and left out of both parts.

Cache: one file per (model digest x template x principles x prompts x sampling x seed)
under <cache>/critique/, holding each prompt's [response, critique, revision]: adding
prompts generates only the new ones.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any

from ftlang.lang.diagnostics import Diagnostic
from ftlang.stdlib.spec import (
    REQUIRED,
    SEED_LIMIT,
    TOKENS_LIMIT,
    Artifact,
    Attr,
    BlockView,
    Need,
    Signature,
    StepContext,
    StepError,
    StepSpec,
    error,
)

CRITIQUE_PROMPT = ("Request: {prompt}\nResponse: {response}\nPrinciples:\n{principles}\n"
                   "Critique the response against the principles.")
REVISION_PROMPT = ("Request: {prompt}\nResponse: {response}\nPrinciples:\n{principles}\nCritique: {critique}\n"
                   "Rewrite the response so that it follows the principles.")
SLOTS = {"critique_prompt": ("{prompt}", "{response}", "{principles}"),
         "revision_prompt": ("{prompt}", "{response}", "{critique}")}
PARTS = {"sft": ("prompt", "completion"), "prefs": ("prompt", "chosen", "rejected", "critique")}


def fill(text: str, **values: str) -> str:
    """`text` with each {name} replaced (other braces are left alone)."""
    for k, v in values.items():
        text = text.replace("{" + k + "}", v)
    return text


def listed(principles: list[str]) -> str:
    return "\n".join(f"- {p}" for p in principles)


def rules(b: BlockView) -> list[Diagnostic]:
    out = []
    given = b.params.get("principles")
    if b.given("principles") == b.given("principles_file"):
        out.append(error("FT0424", "give the principles either as a list or as a file, once",
                         b.at("principles") if b.given("principles") else b.span,
                         "both" if b.given("principles") else "no principles",
                         help='principles = ["Be honest.", "Refuse harmful requests."] or '
                              'principles_file = "constitution.txt" (one per line)'))
    elif isinstance(given, list) and (not given or any(not str(x).strip() for x in given)):
        out.append(error("FT0424", "the principles list is empty or has an empty principle", b.at("principles"),
                         "no principle", help="write each principle as a non-empty string"))
    for attr, slots in SLOTS.items():
        text = b.params.get(attr)
        missing = [s for s in slots if isinstance(text, str) and s not in text]
        if missing:
            out.append(error("FT0425", f"the {attr.replace('_', ' ')} has no {', '.join(missing)}", b.at(attr),
                             "the model would not see it",
                             help=f"the {attr.replace('_', ' ')} fills in {', '.join(slots)}"))
    return out


def needs(p: Mapping[str, Any]) -> list[Need]:
    return [Need("from", ((p.get("prompt_field"), "prompt_field"),))]


def columns(p: Mapping[str, Any]) -> dict[str | None, tuple[str, ...]]:
    return dict(PARTS)


def summary(meta: Mapping[str, Any]) -> str:
    if not isinstance(meta.get("rows_out"), int):
        return ""
    return f"{meta['rows_out']} revised, {meta.get('unchanged', 0)} unchanged, {meta.get('generated_rows', 0)} generated"


SPEC = StepSpec(
    kind="critique", version=1, output="dataset", run="ftlang.stdlib.critique:run", ports=tuple(PARTS),
    signature=Signature("critique", (
        Attr("model", "model", REQUIRED, "the model that responds, critiques and revises"),
        Attr("from", "dataset", REQUIRED, "the prompts"),
        Attr("principles", "list[str]", None, "the constitution, in the .ft"),
        Attr("principles_file", "path", None, "or a text file of principles, one per non-empty line"),
        Attr("prompt_field", "str", "prompt", "the column holding the prompt"),
        Attr("critique_prompt", "str", CRITIQUE_PROMPT, "asks for the critique: {prompt}, {response}, "
             "{principles} filled in"),
        Attr("revision_prompt", "str", REVISION_PROMPT, "asks for the revision: {prompt}, {response}, "
             "{principles}, {critique} filled in"),
        Attr("template", "template", None, "how the prompts are rendered (default: the model's own, else plain)"),
        Attr("seed", "int", 0, "sampling seed (each row is seeded from it and the row)", ge=0, le=SEED_LIMIT),
        Attr("temperature", "float", 0.7, "sampling temperature; 0 is greedy", ge=0, le=100),
        Attr("top_p", "float", 1.0, "nucleus sampling", gt=0, le=1),
        Attr("max_new_tokens", "int", 64, "tokens per response, critique and revision", ge=1, le=TOKENS_LIMIT),
    ), "Constitutional self-critique: for each prompt the model responds, critiques its response "
       "against the principles and revises it. Parts: `sft` (prompt, completion = revision) and "
       "`prefs` (prompt, chosen = revision, rejected = original, critique). Cached per row."),
    rules=rules, needs=needs, summary=summary, columns=columns,
)


# ---- the step ------------------------------------------------------------------------------

def principles_of(p: Mapping[str, Any]) -> list[str]:
    if p["principles"] is not None:
        return [str(x) for x in p["principles"]]
    path = p["principles_file"]
    try:
        lines = [line.strip() for line in open(path, encoding="utf-8").read().splitlines()]  # noqa: SIM115
    except (OSError, UnicodeDecodeError) as e:
        raise StepError(f"cannot read the principles: {e}", path=path) from e
    out = [line for line in lines if line]
    if not out:
        raise StepError("the principles file has no principle", path=path, hint="one principle per line")
    return out


def chain(w: Any, prompt: str, principles: str, p: Mapping[str, Any], seed: int) -> list[str]:
    """[response, critique, revision] for one prompt (the prompts documented in the module)."""
    response = w.samples(prompt, seed)[0]
    critique = w.samples(fill(p["critique_prompt"], prompt=prompt, response=response, principles=principles),
                         seed + 1)[0]
    revision = w.samples(fill(p["revision_prompt"], prompt=prompt, response=response, principles=principles,
                              critique=critique), seed + 2)[0]
    return [response, critique, revision]


def run(ctx: StepContext) -> dict[str, Any]:
    import pyarrow as pa
    import pyarrow.parquet as pq
    from ftlang.stdlib import modelio
    from ftlang.stdlib import template as templates
    from ftlang.stdlib.parquet_out import write_table
    from ftlang.stdlib.rlaif import load_cache, row_seed, save_cache, writer
    from ftlang.stdlib.tokencache import namespace

    p = ctx.params
    src: Artifact = p["from"]
    model: Artifact = p["model"]
    table = pq.read_table(src.dataset_file())
    field = p["prompt_field"]
    if field not in table.column_names:
        raise StepError(f"the dataset {src.node} has no column {field!r} (it has {', '.join(table.column_names)})")
    prompts = ["" if x is None else str(x) for x in table.column(field).to_pylist()]
    principles = listed(principles_of(p))
    tpl = templates.load(p["template"]) if p["template"] is not None else \
        (modelio.template_of(model) or templates.load(None))
    ns = namespace(model=model.digest, template=tpl, principles=principles, critique=p["critique_prompt"],
                   revision=p["revision_prompt"], seed=p["seed"], temperature=p["temperature"], top_p=p["top_p"],
                   max_new_tokens=p["max_new_tokens"], what="critique")
    path = ctx.cache / "critique" / f"{ns}.json"
    cached = load_cache(path)
    hashes = [hashlib.sha256(q.encode()).hexdigest() for q in prompts]
    first = {h: i for i, h in reversed(list(enumerate(hashes)))}
    todo = [h for h in dict.fromkeys(hashes) if h not in cached]
    w = writer(model, tpl, p, 1)
    fresh = 0
    try:
        for k, h in enumerate(todo):
            cached[h] = chain(w, prompts[first[h]], principles, p, row_seed(int(p["seed"]), h))
            fresh += 1
            ctx.progress(k + 1, len(todo), "rows revised")
    finally:
        if fresh:  # what was generated before a failure is kept
            save_cache(path, cached)
    sft: list[dict[str, Any]] = []
    prefs: list[dict[str, Any]] = []
    unchanged = 0
    for q, h in zip(prompts, hashes):
        response, critique, revision = cached[h]
        if revision.strip() == response.strip():
            unchanged += 1
            continue
        sft.append({"prompt": q, "completion": revision})
        prefs.append({"prompt": q, "chosen": revision, "rejected": response, "critique": critique})
    for part, rows in (("sft", sft), ("prefs", prefs)):
        schema = pa.schema([pa.field(c, pa.string()) for c in PARTS[part]])
        write_table(pa.Table.from_pylist(rows, schema=schema), ctx.out / f"{part}.parquet")
    name = src.node.split(".", 1)[-1] + (f".{src.port}" if src.port else "")
    ctx.log(f"revised {fresh} rows ({len(prompts) - fresh} cached); {len(sft)} rows out, {unchanged} unchanged")
    return {"rows_in": {name: len(prompts)}, "rows_out": len(sft), "unchanged": unchanged, "generated_rows": fresh,
            "parts": {"sft": len(sft), "prefs": len(prefs)}}
