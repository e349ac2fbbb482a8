"""Text helpers of `ft report`: values in, escaped HTML text or short numbers out.

Shared by the charts, the graph and the sections, so they all print a number,
a duration or a clipped label the same way.
"""

from __future__ import annotations

import html
import math
from typing import Any


def esc(value: Any) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def fmt_num(v: Any) -> str:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return "" if v is None else str(v)
    if isinstance(v, int):
        return f"{v:,}"
    if v == 0:
        return "0"
    if abs(v) >= 1e5 or abs(v) < 1e-3:
        return f"{v:.3e}"
    return f"{v:.4g}"


def fmt_seconds(s: Any) -> str:
    if not isinstance(s, (int, float)) or s <= 0:
        return ""
    if s < 1:
        return f"{s * 1000:.0f} ms"
    if s < 60:
        return f"{s:.1f} s"
    m, sec = divmod(int(round(s)), 60)
    return f"{m} min {sec:02d} s" if m < 60 else f"{m // 60} h {m % 60:02d} min"


def finite(v: Any) -> bool:
    """A real number that can be plotted (bools, None, NaN and inf cannot)."""
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def clip(text: str, n: int) -> str:
    return text if len(text) <= n else text[: n - 1] + "…"
