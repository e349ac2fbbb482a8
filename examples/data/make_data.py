"""Write the quickstart's small data sets, deterministically (no downloads).

    python examples/data/make_data.py

corpus.jsonl  {"text": ...}                  short English-like paragraphs mixing words and
                                            numbers, mostly sums and reversed word lists, so
                                            that continued pretraining teaches the skills the
                                            task below asks for (never its exact rows).
tasks.jsonl   {"prompt": ..., "completion": ...}  a synthetic instruction task:
                                            "Add 12 and 35" -> "47",
                                            "Reverse: cat dog sun" -> "sun dog cat".

The same seed always gives the same bytes: the files are committed beside this script
and their content digests enter the pipeline's cache keys.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

SEED = 17
HERE = Path(__file__).resolve().parent

NOUNS = ("cat", "dog", "sun", "moon", "tree", "bird", "fish", "star", "boat", "rock",
         "hat", "cup", "book", "door", "lamp", "road", "ship", "king", "frog", "bell",
         "cake", "rain", "wind", "milk", "coin", "key", "box", "pen", "egg", "fox")
ADJECTIVES = ("red", "big", "small", "old", "new", "quiet", "happy", "tall", "cold", "warm",
              "green", "dark", "bright", "slow", "fast")
VERBS = ("saw", "found", "kept", "lost", "counted", "carried", "painted", "sold", "made", "took")
PLACES = ("river", "market", "garden", "school", "harbor", "forest", "village", "station")
NAMES = ("Ana", "Ben", "Cleo", "Dan", "Eva", "Finn", "Gus", "Hana", "Ivo", "Jun")


def _plural(noun: str) -> str:
    return noun + ("es" if noun.endswith(("x", "sh", "ch", "s")) else "s")


def _words(rng: random.Random) -> tuple[str, ...]:
    # 2-3 distinct words: reversing them must move a word.
    return tuple(rng.sample(NOUNS, rng.randint(2, 3)))


def _addends(rng: random.Random) -> tuple[int, int]:
    """Two numbers below 100 whose sum needs no carry ("Add 12 and 35" -> "47").

    Without carries each digit of the sum depends on two digits only: a pattern a
    model of a few hundred thousand weights picks up in seconds of CPU training.
    """
    a = rng.randint(0, 99)
    tens, units = divmod(a, 10)
    return a, 10 * rng.randint(0, 9 - tens) + rng.randint(0, 9 - units)


def task_row(rng: random.Random) -> tuple[tuple[Any, ...], dict[str, str]]:
    """One instruction row and its key (the numbers or words it is about)."""
    if rng.random() < 0.5:
        a, b = _addends(rng)
        return ("add", a, b), {"prompt": f"Add {a} and {b}", "completion": str(a + b)}
    words = _words(rng)
    return ("rev", *words), {"prompt": f"Reverse: {' '.join(words)}",
                             "completion": " ".join(reversed(words))}


def _sum_sentence(rng: random.Random, a: int, b: int) -> str:
    name, noun = rng.choice(NAMES), _plural(rng.choice(NOUNS))
    return rng.choice((
        f"{a} plus {b} is {a + b}.",
        f"If you add {a} and {b} you get {a + b}.",
        f"Add {a} and {b} to get {a + b}.",
        f"The sum of {a} and {b} is {a + b}.",
        f"{name} had {a} {noun} and found {b} more, so {name} had {a + b}.",
    ))


def _reverse_sentence(rng: random.Random, words: tuple[str, ...]) -> str:
    w, r = " ".join(words), " ".join(reversed(words))
    return rng.choice((
        f"The list {w} backwards is {r}.",
        f"Reverse {w} and you get {r}.",
        f"Read {w} from the end: {r}.",
        f"{rng.choice(NAMES)} said {w}, and the echo said {r}.",
    ))


def _plain_sentence(rng: random.Random) -> str:
    noun, place = rng.choice(NOUNS), rng.choice(PLACES)
    return rng.choice((
        f"The {rng.choice(ADJECTIVES)} {noun} {rng.choice(VERBS)} {rng.randint(0, 99)} {_plural(rng.choice(NOUNS))} near the {place}.",
        f"In the {place} there were {rng.randint(0, 99)} {rng.choice(ADJECTIVES)} {_plural(noun)}.",
        f"{rng.choice(NAMES)} walked to the {place} with a {rng.choice(ADJECTIVES)} {noun}.",
    ))


def corpus_paragraph(rng: random.Random, taken: set[tuple[Any, ...]]) -> str:
    """1-3 sentences on lines of their own, mostly sums and reversed lists.

    Sums and word lists that any task row uses are skipped: whichever rows the
    pipeline holds out, the corpus never shows their answers.
    """
    lines = []
    for _ in range(rng.randint(1, 3)):
        kind = rng.random()
        if kind < 0.45:
            a, b = _addends(rng)
            while ("add", a, b) in taken:
                a, b = _addends(rng)
            lines.append(_sum_sentence(rng, a, b))
        elif kind < 0.9:
            words = _words(rng)
            while ("rev", *words) in taken:
                words = _words(rng)
            lines.append(_reverse_sentence(rng, words))
        else:
            lines.append(_plain_sentence(rng))
    return "\n".join(lines)


def main(corpus_rows: int = 6000, task_rows: int = 4000) -> None:
    rng = random.Random(SEED)
    tasks: dict[tuple[Any, ...], dict[str, str]] = {}
    # Unique prompts: a held-out split by prompt then never sees a training prompt.
    while len(tasks) < task_rows:
        key, row = task_row(rng)
        tasks.setdefault(key, row)
    taken = set(tasks)
    corpus = [corpus_paragraph(rng, taken) for _ in range(corpus_rows)]
    with (HERE / "corpus.jsonl").open("w", encoding="utf-8", newline="\n") as f:
        f.writelines(json.dumps({"text": t}) + "\n" for t in corpus)
    with (HERE / "tasks.jsonl").open("w", encoding="utf-8", newline="\n") as f:
        f.writelines(json.dumps(r) + "\n" for r in tasks.values())


if __name__ == "__main__":
    main()
