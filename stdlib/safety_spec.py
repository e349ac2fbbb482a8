"""Declarations of the safety metrics (refusal_rate, judge, toxicity) and their
compile-time rules; evaluate_spec.py lists them with the other metrics, safety.py runs them.

In:  an eval block's checked metric calls (through its BlockView).
Out: the Metric declarations, and diagnostics: no way to detect a refusal (FT0240), a
     rubric without {response} (FT0242), fewer than two distinct answers (FT0243).
Whether each answer is one token of the judge's vocabulary is known only once the judge
is loaded: that is a step error naming the answer.
"""

from __future__ import annotations

from ftlang.lang.diagnostics import Diagnostic
from ftlang.stdlib.spec import REQUIRED, Attr, BlockView, Call, Metric, Signature, error, points

SAFETY_METRICS = (
    Metric(Signature("refusal_rate", (
        Attr("patterns", "list[str]", None, "regular expressions (case-insensitive) that mark a refusal; "
             "default: common English refusal phrases (stdlib/safety.py REFUSAL_PATTERNS)", regex=True),
        Attr("judge", "model", None, "a causal LM asked whether each response refuses (Yes/No logits); "
             "a response counts when a pattern matches or the judge says Yes"),
    ), "Share of responses that refuse (measure it on a red-team prompt set). "
       "Higher is safer there; on benign prompts it measures over-refusal."),
        higher_is_better=True, generates=True),
    Metric(Signature("judge", (
        Attr("model", "model", REQUIRED, "the judge: any local causal LM (Llama Guard, ShieldGemma, "
             "WildGuard, or a model trained in this file)"),
        Attr("rubric", "str", REQUIRED, "the question to the judge, with {prompt} and {response} in it"),
        Attr("answers", "list[str]", ["safe", "unsafe"], "the classes, each a single token of the judge's "
             "vocabulary; the first is the good one"),
    ), "Share of responses the judge classes as answers[0], by the logits of the answer tokens "
       "after the rubric."), higher_is_better=True, generates=True),
    Metric(Signature("toxicity", (
        Attr("model", "model", REQUIRED, "a sequence classifier (one logit, or a label named toxic)"),
    ), "Mean probability of the toxic class over the responses.", positional=("model",)),
        higher_is_better=False, generates=True),
)


def rules(b: BlockView) -> list[Diagnostic]:
    out: list[Diagnostic] = []
    for c in b.params.get("metrics") or []:
        if not isinstance(c, Call):
            continue
        if c.name == "refusal_rate" and c.args.get("patterns") == [] and c.args.get("judge") is None:
            out.append(error("FT0240", "refusal_rate has no patterns and no judge", b.at("metrics"),
                             "nothing detects a refusal",
                             help="leave `patterns` out (common refusal phrases), or give judge = a model"))
        if c.name != "judge":
            continue
        for rubric in points(c.args.get("rubric")):
            if isinstance(rubric, str) and "{response}" not in rubric:
                out.append(error("FT0242", "the judge's rubric does not show it the response", b.at("metrics"),
                                 "no {response} in the rubric",
                                 help='write {response} (and {prompt}) where they go: rubric = "Is this '
                                      'reply to {prompt} safe? {response}"'))
        for answers in points(c.args.get("answers")):
            if isinstance(answers, list) and (len(answers) < 2 or len(set(map(str, answers))) != len(answers)):
                out.append(error("FT0243", f"judge answers {answers!r}: it needs two or more distinct answers",
                                 b.at("metrics"), "not a choice", help='e.g. answers = ["safe", "unsafe"]'))
    return out
