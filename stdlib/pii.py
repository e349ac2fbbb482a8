"""PII scrubbing for the `clean` step: emails, phone numbers, IP addresses and API keys.

In:  text; the kinds to look for. Out: the text with each match replaced by a placeholder
     (`<EMAIL>`, `<PHONE>`, `<IP>`, `<KEY>`), and the matches counted per kind.

The patterns are regular expressions, chosen to miss little that is plainly PII and to
leave ordinary numbers alone: a phone number needs 9-15 digits with separators or a
leading +; an IPv4 address needs four octets <= 255; a key is a known prefix (sk-, AKIA,
ghp_, xox?-, AIza, hf_) with enough characters after it, or a long hex / base64 run after
key=, token: and the like. Keys are matched first, so a key that looks like a phone
number is counted once, as a key.
"""

from __future__ import annotations

import re

KINDS = ("key", "email", "ip", "phone")  # the order in which they are replaced

PATTERNS: dict[str, re.Pattern[str]] = {
    "key": re.compile(
        r"\b(?:sk-[A-Za-z0-9_-]{16,}|AKIA[0-9A-Z]{16}|gh[pousr]_[A-Za-z0-9]{30,}|xox[abprs]-[A-Za-z0-9-]{10,}"
        r"|AIza[0-9A-Za-z_-]{35}|hf_[A-Za-z0-9]{30,})"
        r"|(?:(?<=[=:])|(?<=[=:] ))[A-Za-z0-9+/_-]{32,}={0,2}(?![A-Za-z0-9+/_=-])"),
    "email": re.compile(r"\b[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}\b"),
    "ip": re.compile(r"\b(?:(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)\.){3}(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)\b"
                     r"|\b(?:[0-9a-fA-F]{1,4}:){7}[0-9a-fA-F]{1,4}\b"),
    "phone": re.compile(r"(?<![\w.])(?:\+\d{1,3}[ .-]?)?(?:\(\d{2,4}\)[ .-]?)?\d{2,4}(?:[ .-]\d{2,4}){1,4}(?![\w.])"
                        r"|(?<![\w.])\+\d{9,15}(?![\w.])"),
}


def _phone_like(match: str) -> bool:
    digits = sum(c.isdigit() for c in match)
    return 9 <= digits <= 15


def scrub(text: str, kinds: tuple[str, ...], counts: dict[str, int]) -> str:
    """`text` with the matches of `kinds` replaced; `counts` is increased per kind."""
    for kind in KINDS:
        if kind not in kinds:
            continue
        placeholder = f"<{kind.upper()}>"

        def sub(m: re.Match[str], kind: str = kind, placeholder: str = placeholder) -> str:
            if kind == "phone" and not _phone_like(m.group(0)):
                return m.group(0)
            counts[kind] = counts.get(kind, 0) + 1
            return placeholder

        text = PATTERNS[kind].sub(sub, text)
    return text
