"""What `ft run` prints: one line per node, a live progress line on a TTY."""

from __future__ import annotations

import os
import sys
import time
from typing import Any, TextIO

# Every status word a line may start with, and its colour. `line()` refuses a word that is
# not here, so a new status cannot crash only when colour is on (it once did: `export`).
STATUSES = {"cached": "\033[2m", "done": "\033[32m", "run": "\033[36m", "running": "\033[36m",
            "failed": "\033[1;31m", "skipped": "\033[33m", "pending": "\033[36m",
            "export": "\033[35m", "warning": "\033[33m", "remote": "\033[34m"}
_RESET = "\033[0m"
REDRAW_SECONDS = 0.1  # a live progress line is redrawn at most this often


def capable_terminal(stream: TextIO) -> bool:
    """A terminal that understands escape codes: a tty whose TERM is not "dumb"
    (an editor's shell buffer, a CI log viewer), where colour and redrawn lines would
    show as raw codes."""
    return stream.isatty() and os.environ.get("TERM") != "dumb"


class Display:
    def __init__(self, stream: TextIO | None = None, color: bool | None = None, quiet: bool = False,
                 verbose: bool = False) -> None:
        self.verbose = verbose
        self.stream = stream or sys.stderr
        self.tty = capable_terminal(self.stream)
        self.color = self.tty if color is None else color
        self.quiet = quiet
        self.width = 24
        self._live = False
        self._last_draw = 0.0
        # Off a terminal, a progress line at most this often (FT_PROGRESS_SECONDS to change it).
        self.every_s = float(os.environ.get("FT_PROGRESS_SECONDS", "30"))

    def _paint(self, status: str, text: str) -> str:
        return f"{STATUSES[status]}{text}{_RESET}" if self.color else text

    def _clear(self) -> None:
        if self._live:
            self.stream.write("\r\033[K")
            self._live = False

    def line(self, status: str, node: str, detail: str = "") -> None:
        if status not in STATUSES:
            raise ValueError(f"unknown status word {status!r}: add it to display.STATUSES")
        self._clear()
        tag = self._paint(status, f"{status:<8}")
        self.stream.write(f"  {tag}{node:<{self.width}} {detail}".rstrip() + "\n")
        self.stream.flush()

    def text(self, text: str) -> None:
        self._clear()
        self.stream.write(text + "\n")
        self.stream.flush()

    def log(self, node: str) -> Any:
        def _log(msg: str) -> None:
            if self.verbose and not self.quiet:
                self.text(f"          {node}: {msg}")
        return _log

    def progress(self, node: str) -> Any:
        """A step's progress: a live bar on a terminal; elsewhere (CI, a log file) one plain
        line every `every_s` seconds, so a long training is never minutes of silence."""
        start = time.monotonic()
        state = {"last_line": start, "calls": 0}

        def _progress(done: int, total: int | None = None, msg: str = "") -> None:
            if self.quiet:
                return
            now = time.monotonic()
            state["calls"] += 1
            elapsed = now - start
            frac = f"{done}/{total}" if total else str(done)
            eta = ""
            # No estimate from the first few updates: they include start-up, not the loop's pace.
            if total and done and state["calls"] > 3 and elapsed > 2 and done / total > 0.02:
                eta = f" eta {fmt_seconds(max(0.0, elapsed / done * (total - done)))}"
            if not self.tty:
                if now - state["last_line"] >= self.every_s and (total is None or done < total):
                    state["last_line"] = now
                    self.text(f"  {'running':<8}{node:<{self.width}} {frac} {msg} "
                              f"elapsed {fmt_seconds(elapsed)}{eta}".rstrip())
                return
            if now - self._last_draw < REDRAW_SECONDS and (total is None or done < total):
                return
            self._last_draw = now
            bar = ""
            if total:
                n = int(20 * done / total)
                bar = "[" + "#" * n + "." * (20 - n) + "] "
            self.stream.write(f"\r\033[K  {self._paint('running', 'running ')}{node:<{self.width}} {bar}{frac} {msg}{eta}")
            self.stream.flush()
            self._live = True
        return _progress


def plural(n: int, word: str) -> str:
    """"1 step", "2 steps"."""
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def fmt_seconds(s: float) -> str:
    return f"{s:.1f}s" if s < 60 else f"{int(s // 60)}m{s % 60:04.1f}s"


def table(headers: list[str], rows: list[list[Any]]) -> str:
    def cell(v: Any) -> str:
        if isinstance(v, float):
            return f"{v:.4g}" if abs(v) >= 1e-3 or v == 0 else f"{v:.2e}"
        return "" if v is None else str(v)

    body = [[cell(v) for v in r] for r in rows]
    widths = [max(len(h), *(len(r[i]) for r in body)) if body else len(h) for i, h in enumerate(headers)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths)).rstrip(),
             "  ".join("-" * w for w in widths)]
    lines += ["  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths))).rstrip()
              for r in body]
    return "\n".join(lines)
