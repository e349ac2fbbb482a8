"""judge_pairs: RLAIF, preference pairs judged by a model instead of people.

In:  params["from"] (prompts: a dataset with `prompt_field`), params["policy"] (and
     optionally params["rival"]): the model(s) that write the two candidates,
     params["judge"]: any model artifact, either a reward model (a sequence classifier:
     each candidate scored by generate.RewardModel) or a causal LM asked `rubric` (with
     {prompt}, {a}, {b} filled in) and scored by the logits of the two `answers` tokens
     (safety.Judge, the one judge-by-answer-token implementation), sampling settings.
Out: `data.parquet` with columns prompt, chosen, rejected, margin (what dpo / kto /
     reward_model read like any dataset), and {"rows_in", "rows_out", "ties", "sampled_rows",
     "judged_rows"} for the ledger.

Candidates: A from `policy`, B from `rival`, or, without a rival, two samples of `policy`
(the row's seed and the next one). Each row is seeded from the step's seed and its prompt
alone, so a row's candidates do not depend on the other rows.
Margin: a reward model's score(chosen) - score(rejected); an LM judge's P(chosen is better)
- P(rejected is better), asked in both orders (A/B swapped) and averaged, which cancels the
judge's position bias. Pairs whose margin is not above `min_margin` (identical candidates
have margin 0) are ties and dropped.

Cache, two levels under <cache>/rlaif/: candidates per (prompt x policy digests x template x
sampling settings x seed), and verdicts per (prompt, a, b) x judge digest x rubric x answers.
Adding prompts samples and judges only the new ones; changing the judge or the rubric
re-judges without sampling again.
"""

from __future__ import annotations

import hashlib
import json
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

RUBRIC = ("Which response answers the request better?\nRequest: {prompt}\nResponse A: {a}\nResponse B: {b}\n"
          "Answer A or B.")
COLUMNS = ("prompt", "chosen", "rejected", "margin")
DIGITS = 6


def fill(rubric: str, prompt: str, a: str, b: str) -> str:
    """The pairwise rubric with {prompt}, {a} and {b} replaced (other braces are left alone)."""
    return rubric.replace("{prompt}", prompt).replace("{a}", a).replace("{b}", b)


def _is_reward_model(view: BlockView, name: Any) -> bool | None:
    written = view.lookup(name) if isinstance(name, str) else None
    if written is None:
        return None
    method = written.calls.get("method")
    return written.kind == "train" and method is not None and method[0] == "reward_model"


def rules(b: BlockView) -> list[Diagnostic]:
    out = []
    rubric = b.params.get("rubric")
    if isinstance(rubric, str):
        missing = [m for m in ("{prompt}", "{a}", "{b}") if m not in rubric]
        if missing:
            out.append(error("FT0420", f"the rubric has no {', '.join(missing)}", b.at("rubric"),
                             "the judge would not see both candidates",
                             help="write the request as {prompt} and the two candidates as {a} and {b}"))
    answers = b.params.get("answers")
    if isinstance(answers, list) and (len(answers) != 2 or len(set(answers)) != 2 or "" in answers):
        out.append(error("FT0421", f"a pairwise judge needs two distinct answers, got {answers}",
                         b.at("answers"), "not two answers", help='answers = ["A", "B"]: the first means {a}'))
    if b.params.get("rival") is None and b.params.get("temperature") == 0:
        out.append(error("FT0422", "greedy sampling of one policy writes the same candidate twice",
                         b.at("temperature"), "temperature = 0 without a rival",
                         help="sample (temperature > 0) or give a second model: rival = <model>"))
    judge = getattr(b.params.get("judge"), "node", None)
    if judge is not None and _is_reward_model(b, judge.split(".", 1)[-1]) and \
            (b.given("rubric") or b.given("answers")):
        which = "rubric" if b.given("rubric") else "answers"
        out.append(error("FT0423", "a reward-model judge scores each candidate; it reads no rubric",
                         b.at(which), f"`{which}` is unused with a reward model",
                         help="drop it, or judge with a causal LM"))
    return out


def needs(p: Mapping[str, Any]) -> list[Need]:
    return [Need("from", ((p.get("prompt_field"), "prompt_field"),))]


def columns(p: Mapping[str, Any]) -> dict[str | None, tuple[str, ...]]:
    return {None: COLUMNS}


def summary(meta: Mapping[str, Any]) -> str:
    if not isinstance(meta.get("rows_out"), int):
        return ""
    return (f"{meta['rows_out']} pairs, {meta.get('ties', 0)} ties dropped, "
            f"{meta.get('judged_rows', 0)} judged")


SPEC = StepSpec(
    kind="judge_pairs", version=1, output="dataset", run="ftlang.stdlib.rlaif:run",
    signature=Signature("judge_pairs", (
        Attr("from", "dataset", REQUIRED, "the prompts"),
        Attr("policy", "model", REQUIRED, "the model that writes the candidates"),
        Attr("rival", "model", None, "a second model writing candidate B (default: a second sample of "
             "`policy`)"),
        Attr("judge", "model", REQUIRED, "a reward model (sequence classifier) or a causal LM asked `rubric`"),
        Attr("rubric", "str", RUBRIC, "an LM judge's question, with {prompt}, {a} and {b} filled in"),
        Attr("answers", "list[str]", ["A", "B"], "an LM judge's two answers (each one token of its "
             "vocabulary): the first means {a} is better"),
        Attr("prompt_field", "str", "prompt", "the column holding the prompt"),
        Attr("template", "template", None, "how the policies' prompts are rendered (default: the "
             "policy's own, else plain)"),
        Attr("min_margin", "float", 0.0, "pairs whose margin is not above it are ties, dropped", ge=0),
        Attr("seed", "int", 0, "sampling seed (each row's candidates are seeded from it and the row)",
             ge=0, le=SEED_LIMIT),
        Attr("temperature", "float", 1.0, "sampling temperature; 0 is greedy (needs a rival)", ge=0, le=100),
        Attr("top_p", "float", 1.0, "nucleus sampling", gt=0, le=1),
        Attr("max_new_tokens", "int", 64, "tokens per candidate", ge=1, le=TOKENS_LIMIT),
    ), "RLAIF: two candidates per prompt from a policy (or a policy and a rival), judged by a "
       "model (a reward model, or an LM asked a rubric and scored by the logits of its two "
       "answer tokens, in both orders); a preference dataset (prompt, chosen, rejected, margin) "
       "out. Cached per row: adding prompts samples and judges only the new ones."),
    rules=rules, needs=needs, summary=summary, columns=columns,
)


# ---- the step ------------------------------------------------------------------------------

def row_seed(seed: int, h: str) -> int:
    return int(hashlib.sha256(f"{seed}:{h}".encode()).hexdigest()[:8], 16)


def _sha(*parts: str) -> str:
    return hashlib.sha256(json.dumps(parts).encode()).hexdigest()


def load_cache(path: Any) -> dict[str, list[Any]]:
    """A {hash: list} cache file (a damaged one is only a cache: empty)."""
    if not path.is_file():
        return {}
    try:
        return dict(json.loads(path.read_text(encoding="utf-8")))
    except (OSError, ValueError, TypeError):
        return {}


def save_cache(path: Any, cached: Mapping[str, Any]) -> None:
    import os

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(cached, sort_keys=True), encoding="utf-8")
    os.replace(tmp, path)


def writer(model: Artifact, tpl: dict[str, Any], p: Mapping[str, Any], n: int) -> Any:
    """generate's row writer (synth.Writer: generate.generate, every adapter kind, loaded on
    first use) with these sampling settings and `n` samples per call."""
    from ftlang.stdlib.synth import Writer

    return Writer(model, tpl, {"temperature": p["temperature"], "top_p": p["top_p"],
                               "max_new_tokens": p["max_new_tokens"], "n": n})


class Verdicts:
    """The judge, loaded on first use: P(a is better) - P(b is better) for each pair."""

    def __init__(self, judge: Artifact, p: Mapping[str, Any]) -> None:
        self.art, self.p = judge, p
        self.impl: Any = None
        self.reward = None

    def margins(self, prompts: list[str], a: list[str], b: list[str]) -> list[float]:
        from ftlang.stdlib import modelio

        if self.reward is None:
            self.reward = modelio.is_classifier(self.art)
        if self.reward:
            from ftlang.stdlib.generate import RewardModel

            if self.impl is None:
                import torch

                self.impl = RewardModel(self.art, "cuda" if torch.cuda.is_available() else "cpu")
            sa, sb = self.impl.score(prompts, a), self.impl.score(prompts, b)
            return [x - y for x, y in zip(sa, sb)]
        from ftlang.stdlib.safety import Judge

        if self.impl is None:
            self.impl = Judge(self.art)
        answers, rubric = [str(x) for x in self.p["answers"]], str(self.p["rubric"])
        ab = self.impl.answer_probabilities([fill(rubric, q, x, y) for q, x, y in zip(prompts, a, b)], answers)
        ba = self.impl.answer_probabilities([fill(rubric, q, y, x) for q, x, y in zip(prompts, a, b)], answers)
        # P(a better) from both orders: answers[0] when a is shown first, answers[1] when second.
        return [(f[0] + s[1]) / 2 - (f[1] + s[0]) / 2 for f, s in zip(ab, ba)]


def run(ctx: StepContext) -> dict[str, Any]:
    import pyarrow as pa
    import pyarrow.parquet as pq
    from ftlang.stdlib import modelio
    from ftlang.stdlib import template as templates
    from ftlang.stdlib.parquet_out import write_table
    from ftlang.stdlib.tokencache import namespace

    p = ctx.params
    src: Artifact = p["from"]
    policy: Artifact = p["policy"]
    rival: Artifact | None = p["rival"]
    judge: Artifact = p["judge"]
    table = pq.read_table(src.dataset_file())
    field = p["prompt_field"]
    if field not in table.column_names:
        raise StepError(f"the dataset {src.node} has no column {field!r} (it has {', '.join(table.column_names)})")
    prompts = ["" if x is None else str(x) for x in table.column(field).to_pylist()]
    tpl = templates.load(p["template"]) if p["template"] is not None else \
        (modelio.template_of(policy) or templates.load(None))
    sampled_ns = namespace(policy=policy.digest, rival=rival.digest if rival is not None else None, template=tpl,
                           seed=p["seed"], temperature=p["temperature"], top_p=p["top_p"],
                           max_new_tokens=p["max_new_tokens"], what="rlaif-candidates")
    judged_ns = namespace(judge=judge.digest, rubric=p["rubric"], answers=p["answers"], what="rlaif-verdicts")
    cpath = ctx.cache / "rlaif" / f"{sampled_ns}.json"
    vpath = ctx.cache / "rlaif" / f"{judged_ns}.json"
    candidates, verdicts = load_cache(cpath), load_cache(vpath)
    hashes = [hashlib.sha256(q.encode()).hexdigest() for q in prompts]
    first = {h: i for i, h in reversed(list(enumerate(hashes)))}
    todo = [h for h in dict.fromkeys(hashes) if h not in candidates]
    a_writer = writer(policy, tpl, p, 1 if rival is not None else 2)
    b_writer = writer(rival, tpl, p, 1) if rival is not None else None
    sampled = 0
    try:
        for k, h in enumerate(todo):
            seed = row_seed(int(p["seed"]), h)
            texts = a_writer.samples(prompts[first[h]], seed)
            if b_writer is not None:
                texts = [texts[0], b_writer.samples(prompts[first[h]], seed + 1)[0]]
            candidates[h] = texts
            sampled += 1
            ctx.progress(k + 1, len(todo), "rows sampled")
    finally:
        if sampled:  # what was sampled before a failure is kept
            save_cache(cpath, candidates)
    pair = {h: _sha(prompts[first[h]], *candidates[h]) for h in dict.fromkeys(hashes)}
    unjudged = [h for h in dict.fromkeys(hashes) if pair[h] not in verdicts]
    if unjudged:
        margins = Verdicts(judge, p).margins([prompts[first[h]] for h in unjudged],
                                             [candidates[h][0] for h in unjudged],
                                             [candidates[h][1] for h in unjudged])
        for h, m in zip(unjudged, margins):
            verdicts[pair[h]] = [round(float(m), DIGITS)]
        save_cache(vpath, verdicts)
    rows: list[dict[str, Any]] = []
    ties = 0
    for q, h in zip(prompts, hashes):
        a, b = candidates[h]
        m = verdicts[pair[h]][0]
        if a == b or abs(m) <= float(p["min_margin"]):
            ties += 1
            continue
        chosen, rejected = (a, b) if m > 0 else (b, a)
        rows.append({"prompt": q, "chosen": chosen, "rejected": rejected, "margin": abs(m)})
    schema = pa.schema([pa.field("prompt", pa.string()), pa.field("chosen", pa.string()),
                        pa.field("rejected", pa.string()), pa.field("margin", pa.float64())])
    write_table(pa.Table.from_pylist(rows, schema=schema), ctx.out / "data.parquet")
    name = src.node.split(".", 1)[-1] + (f".{src.port}" if src.port else "")
    ctx.log(f"sampled {sampled} rows, judged {len(unjudged)} ({len(prompts) - len(unjudged)} cached); "
            f"{len(rows)} pairs, {ties} ties dropped")
    return {"rows_in": {name: len(prompts)}, "rows_out": len(rows), "ties": ties, "sampled_rows": sampled,
            "judged_rows": len(unjudged)}
