"""Metric implementations: plain functions over lists of generations and references.

Each text metric takes `predictions` and `references` (equal-length lists of str)
and returns one float for the whole list. `compute(call, ...)` dispatches a metric
call from a `.ft` file (see evaluate_spec.METRICS for the declarations). Metrics
that need a model (loss, perplexity, reward, win_rate) are computed in
ftlang.stdlib.evaluate; `win_rate` here only compares two lists of scores.

Nothing here imports torch; sacrebleu is imported only by bleu and chrf.
"""

from __future__ import annotations

import inspect
import math
import re
import unicodedata
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from ftlang.stdlib.evaluate_spec import METRICS
from ftlang.stdlib.pyfunc import load_function, where_in
from ftlang.stdlib.spec import Call, StepError

_SPACE = re.compile(r"\s+")
_WORD = re.compile(r"\w+")


# ---- normalisation ------------------------------------------------------------------

def normalize_text(text: str, *, strip: bool = True, casefold: bool = True,
                   collapse_whitespace: bool = False, strip_punctuation: bool = False) -> str:
    """`text` with the chosen normalisations applied (punctuation first, then spaces)."""
    if strip_punctuation:
        text = "".join(ch for ch in text if not unicodedata.category(ch).startswith("P"))
    if collapse_whitespace:
        text = _SPACE.sub(" ", text)
    if strip:
        text = text.strip()
    if casefold:
        text = text.casefold()
    return text


def normalizer(args: dict[str, Any]) -> Callable[[str], str]:
    """The normalisation an exact_match/contains call asks for (`normalize = false`: none).

    A call's arguments are complete; an option missing from a hand-built dict takes its
    declared default (evaluate_spec), not a second copy of it.
    """
    opts = {a.name: bool(args.get(a.name, a.default)) for a in METRICS["exact_match"].attrs}
    if not opts.pop("normalize"):
        return lambda s: s
    return lambda s: normalize_text(s, **opts)


def _check(predictions: Sequence[str], references: Sequence[str]) -> None:
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions for {len(references)} references")


# ---- matching -------------------------------------------------------------------------

def exact_match(predictions: Sequence[str], references: Sequence[str],
                norm: Callable[[str], str] = lambda s: s) -> float:
    """Share of predictions equal to their reference after `norm`."""
    _check(predictions, references)
    if not references:
        return 0.0
    return sum(norm(p) == norm(r) for p, r in zip(predictions, references)) / len(references)


def contains(predictions: Sequence[str], references: Sequence[str],
             norm: Callable[[str], str] = lambda s: s) -> float:
    """Share of predictions that contain their reference after `norm`."""
    _check(predictions, references)
    if not references:
        return 0.0
    return sum(norm(r) in norm(p) for p, r in zip(predictions, references)) / len(references)


def compile_pattern(pattern: str, ignore_case: bool = False) -> re.Pattern[str]:
    try:
        return re.compile(pattern, re.IGNORECASE if ignore_case else 0)
    except re.error as e:
        raise StepError(f"regex: invalid pattern {pattern!r}: {e}",
                        hint="a Python regular expression; in a .ft string write \\d as \\d "
                             "and a literal quote as \\\"") from e


def regex_match(predictions: Sequence[str], references: Sequence[str], pattern: str = "",
                fullmatch: bool = False, ignore_case: bool = False) -> float:
    """Share of predictions the pattern matches.

    - pattern "": each reference is the pattern for its prediction;
    - a pattern with a capturing group: group 1 of the first match must equal the
      reference (both stripped and casefolded): extraction, then comparison;
    - a pattern without groups: a match anywhere (or of the whole stripped prediction
      with fullmatch) is a hit; the reference is not read.
    """
    _check(predictions, references)
    if not references:
        return 0.0
    fixed = compile_pattern(pattern, ignore_case) if pattern else None
    hits = 0
    for pred, ref in zip(predictions, references):
        rx = fixed if fixed is not None else compile_pattern(ref, ignore_case)
        text = pred.strip() if fullmatch else pred
        m = rx.fullmatch(text) if fullmatch else rx.search(text)
        if m is None:
            continue
        if fixed is not None and rx.groups:
            got = m.group(1) or ""
            hits += got.strip().casefold() == ref.strip().casefold()
        else:
            hits += 1
    return hits / len(references)


# ---- overlap ----------------------------------------------------------------------------

def _sacrebleu() -> Any:
    try:
        import sacrebleu
    except ImportError as e:
        raise StepError("bleu and chrf need the sacrebleu package",
                        hint="pip install sacrebleu") from e
    return sacrebleu


def bleu(predictions: Sequence[str], references: Sequence[str], tokenize: str = "13a",
         lowercase: bool = False) -> float:
    """Corpus BLEU (sacrebleu, one reference per row), 0-100."""
    _check(predictions, references)
    if not references:
        return 0.0
    metric = _sacrebleu().metrics.BLEU(tokenize=tokenize, lowercase=lowercase)
    return float(metric.corpus_score(list(predictions), [list(references)]).score)


def chrf(predictions: Sequence[str], references: Sequence[str], char_order: int = 6,
         word_order: int = 0, beta: float = 2.0, lowercase: bool = False) -> float:
    """Corpus chrF (chrF++ with word_order = 2) from sacrebleu, 0-100."""
    _check(predictions, references)
    if not references:
        return 0.0
    metric = _sacrebleu().metrics.CHRF(char_order=char_order, word_order=word_order, beta=beta,
                                       lowercase=lowercase)
    return float(metric.corpus_score(list(predictions), [list(references)]).score)


def lcs_length(a: Sequence[str], b: Sequence[str]) -> int:
    """Length of the longest common subsequence of two token lists (O(len(a) * len(b)))."""
    if len(a) < len(b):
        a, b = b, a
    prev = [0] * (len(b) + 1)
    for x in a:
        cur = [0]
        for j, y in enumerate(b):
            cur.append(prev[j] + 1 if x == y else max(prev[j + 1], cur[j]))
        prev = cur
    return prev[-1]


def rouge_l_pair(prediction: str, reference: str, lowercase: bool = True) -> float:
    """ROUGE-L F1 of one pair over word tokens (\\w+); 0 when either side has no token."""
    if lowercase:
        prediction, reference = prediction.lower(), reference.lower()
    p, r = _WORD.findall(prediction), _WORD.findall(reference)
    if not p or not r:
        return 0.0
    lcs = lcs_length(p, r)
    if lcs == 0:
        return 0.0
    precision, recall = lcs / len(p), lcs / len(r)
    return 2 * precision * recall / (precision + recall)


def rouge_l(predictions: Sequence[str], references: Sequence[str], lowercase: bool = True) -> float:
    """Mean ROUGE-L F1 over rows, 0-1."""
    _check(predictions, references)
    if not references:
        return 0.0
    return sum(rouge_l_pair(p, r, lowercase) for p, r in zip(predictions, references)) / len(references)


# ---- preference -------------------------------------------------------------------------

def win_rate(scores: Sequence[float], against: Sequence[float]) -> float:
    """Share of rows where `scores` beats `against` (a tie counts half)."""
    if len(scores) != len(against):
        raise ValueError(f"{len(scores)} scores against {len(against)}")
    if not scores:
        return 0.0
    return sum(1.0 if a > b else 0.5 if a == b else 0.0 for a, b in zip(scores, against)) / len(scores)


# ---- custom Python metrics ----------------------------------------------------------------


def _arity(fn: Callable[..., Any]) -> int:
    """How many positional arguments to pass: 3 (predictions, references, prompts) or fewer."""
    try:
        params = list(inspect.signature(fn).parameters.values())
    except (TypeError, ValueError):
        return 3
    if any(p.kind is p.VAR_POSITIONAL for p in params):
        return 3
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    return max(1, min(3, len(positional)))


def custom(file: Path, function: str, predictions: Sequence[str], references: Sequence[str],
           prompts: Sequence[str]) -> float:
    """Calls fn(predictions, references, prompts) (or the first 1-2 of them, as it accepts)."""
    fn = load_function(file, function)
    args = (list(predictions), list(references), list(prompts))[:_arity(fn)]
    try:
        value = fn(*args)
    except StepError:
        raise
    except Exception as e:
        raise StepError(f"the metric {function} raised {type(e).__name__}: {e}", path=Path(file),
                        hint=where_in(e, Path(file))) from e
    try:
        number = float(value)  # ints, numpy scalars, 0-d tensors
    except (TypeError, ValueError):
        raise StepError(f"the metric {function} returned {type(value).__name__}, not a number",
                        path=Path(file), hint="return one float for the whole list") from None
    if not math.isfinite(number):
        raise StepError(f"the metric {function} returned {number}", path=Path(file),
                        hint="return a finite float")
    return number


# ---- dispatch ----------------------------------------------------------------------------

TEXT_METRICS = ("exact_match", "contains", "regex", "bleu", "chrf", "rouge_l", "py")


def compute(call: Call, predictions: Sequence[str], references: Sequence[str],
            prompts: Sequence[str]) -> float:
    """The value of one text metric call (see TEXT_METRICS) over the rows."""
    a = call.args
    if call.name == "exact_match":
        return exact_match(predictions, references, normalizer(a))
    if call.name == "contains":
        return contains(predictions, references, normalizer(a))
    if call.name == "regex":
        return regex_match(predictions, references, str(a["pattern"]), bool(a["fullmatch"]),
                           bool(a["ignore_case"]))
    if call.name == "bleu":
        return bleu(predictions, references, str(a["tokenize"]), bool(a["lowercase"]))
    if call.name == "chrf":
        return chrf(predictions, references, int(a["char_order"]), int(a["word_order"]), float(a["beta"]),
                    bool(a["lowercase"]))
    if call.name == "rouge_l":
        return rouge_l(predictions, references, bool(a["lowercase"]))
    if call.name == "py":
        return custom(Path(a["file"]), str(a["function"]), predictions, references, prompts)
    raise StepError(f"unknown metric {call.name!r}", hint=f"text metrics: {', '.join(TEXT_METRICS)}")
