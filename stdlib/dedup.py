"""Near-duplicate removal (MinHash LSH, datasketch) and n-gram decontamination, for `clean`.

In:  texts (one string per row, in row order). Out: the indices to drop, each with the row
     it duplicates or the number of eval n-grams it shares.

- `near_duplicates`: each text's word n-grams (its shingles) are MinHashed with `num_perm`
  permutations (seeded: the same texts always give the same signatures) and looked up in a
  MinHashLSH index built at `threshold`. A candidate counts only when its estimated Jaccard
  similarity is >= threshold (LSH alone lets some lower pairs through). The first of a group
  is kept, later ones dropped: the result depends on the rows' order, which curate and the
  dataset step fix.
- `overlaps`: word n-grams of the eval texts in a set; a training text sharing at least
  `min_overlap` of them is contaminated.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

_WORD = re.compile(r"\w+", re.UNICODE)


def words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


def ngrams(text: str, n: int) -> set[str]:
    """The word n-grams of `text`; a text shorter than n words is one n-gram of all its words."""
    w = words(text)
    if not w:
        return set()
    if len(w) < n:
        return {" ".join(w)}
    return {" ".join(w[i:i + n]) for i in range(len(w) - n + 1)}


def near_duplicates(texts: list[str], *, threshold: float, ngram: int, num_perm: int,
                    seed: int = 1) -> dict[int, int]:
    """{dropped row: the kept row it nearly duplicates}."""
    from datasketch import MinHash, MinHashLSH

    lsh = MinHashLSH(threshold=threshold, num_perm=num_perm)
    kept: dict[int, MinHash] = {}
    dropped: dict[int, int] = {}
    for i, text in enumerate(texts):
        shingles = ngrams(text, ngram)
        m = MinHash(num_perm=num_perm, seed=seed)
        m.update_batch([s.encode("utf-8") for s in sorted(shingles)])
        hits = sorted(int(k) for k in lsh.query(m)) if kept else []
        twin = next((j for j in hits if kept[j].jaccard(m) >= threshold), None)
        if twin is not None:
            dropped[i] = twin
            continue
        lsh.insert(str(i), m)
        kept[i] = m
    return dropped


def overlaps(texts: list[str], against: Iterable[str], *, n: int, min_overlap: int) -> dict[int, int]:
    """{contaminated row: how many of the eval set's n-grams it shares}."""
    bank: set[str] = set()
    for t in against:
        bank |= ngrams(t, n)
    out = {}
    for i, text in enumerate(texts):
        shared = len(ngrams(text, n) & bank)
        if shared >= min_overlap:
            out[i] = shared
    return out
