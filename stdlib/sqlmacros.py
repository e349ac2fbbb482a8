"""Quality filters as SQL macros: DuckDB macros every curate query may call.

In:  a DuckDB connection (curate's, and the compiler's bind connection in sqlrules.py).
Out: the macros below defined on it (`define`); `used(sql)` names the ones a query calls and
     `digest(names)` their definitions' digest, which enters the curate node's key only when
     the query calls one (runtime/keys.py), so keys of queries that call none stay as they were.

    ft_words(s)             words (whitespace-separated), NULL for NULL
    ft_repetition(s, n := 3) share of the word n-grams of s that repeat an earlier one:
                            0 for all-distinct text, -> 1 for "a b a b a b ..."
    ft_non_alpha(s)         share of the characters that are neither letters nor whitespace
    ft_mean_word(s)         mean word length in characters

    WHERE ft_words(completion) BETWEEN 3 AND 400
      AND ft_repetition(completion) < 0.3
      AND ft_non_alpha(completion) < 0.25

Language identification is not a macro: no classifier runs inside DuckDB. The `clean`
step's `language = langid(keep = [...])` runs py3langid's offline model (see clean.py).
"""

from __future__ import annotations

import hashlib
import re
from typing import Any

_WORDS = r"string_split_regex(lower(trim(s)), '\s+')"

MACROS: dict[str, str] = {
    "ft_words": "CREATE MACRO ft_words(s) AS CASE WHEN s IS NULL THEN NULL WHEN trim(s) = '' THEN 0 "
                r"ELSE len(string_split_regex(trim(s), '\s+')) END",
    "ft_repetition": "CREATE MACRO ft_repetition(s, n := 3) AS CASE WHEN s IS NULL THEN NULL ELSE "
                     f"coalesce(1 - len(list_distinct(list_transform(range(1, len({_WORDS}) - n + 2), "
                     f"lambda i: array_to_string({_WORDS}[i:i + n - 1], ' ')))) "
                     f"/ nullif(greatest(len({_WORDS}) - n + 1, 0), 0)::DOUBLE, 0.0) END",
    "ft_non_alpha": "CREATE MACRO ft_non_alpha(s) AS CASE WHEN s IS NULL THEN NULL WHEN length(s) = 0 "
                    r"THEN 0.0 ELSE length(regexp_replace(s, '[\p{L}\s]', '', 'g')) / length(s)::DOUBLE END",
    "ft_mean_word": "CREATE MACRO ft_mean_word(s) AS CASE WHEN s IS NULL THEN NULL WHEN trim(s) = '' THEN 0.0 "
                    r"ELSE length(regexp_replace(s, '\s', '', 'g')) / len(string_split_regex(trim(s), '\s+'))"
                    "::DOUBLE END",
}

_CALL = re.compile(r"\b(" + "|".join(MACROS) + r")\s*\(", re.IGNORECASE)


def define(con: Any) -> None:
    """Create every macro on `con` (before the user's SQL runs)."""
    for text in MACROS.values():
        con.execute(text)


def used(sql: str) -> list[str]:
    """The macros `sql` calls, sorted."""
    return sorted({m.group(1).lower() for m in _CALL.finditer(sql)})


def digest(names: list[str]) -> str:
    return hashlib.sha256("\n".join(MACROS[n] for n in names).encode()).hexdigest()[:16]
