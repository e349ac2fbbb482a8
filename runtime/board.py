"""The display of a parallel run: finished lines scroll above, and below them one live
status line per running node (on a terminal). Off a terminal nothing is redrawn: each
node prints its periodic `running` line, as a sequential run does.

`Board` wraps the run's `Display`: `line()`/`text()` first erase the live lines, print,
then redraw them, so a finished node's line always lands above the running ones.
Only the driver's thread calls it (jobs send their events through a queue).
"""

from __future__ import annotations

import time
from typing import Any

from ftlang.runtime.display import REDRAW_SECONDS, Display


class Board(Display):
    def __init__(self, base: Display) -> None:
        self.__dict__.update(base.__dict__)
        self.rows: dict[str, str] = {}  # running node -> its status text
        self.started_at: dict[str, float] = {}
        self._drawn = 0
        self._progress: dict[str, Any] = {}

    def _clear(self) -> None:
        if self._drawn:
            self.stream.write(f"\033[{self._drawn}F\033[J")  # up to the first live line, erase below
            self._drawn = 0

    def _draw(self) -> None:
        if not self.tty or self.quiet:
            return
        self._clear()
        now = time.monotonic()
        for nid, text in self.rows.items():
            took = now - self.started_at.get(nid, now)
            tag = self._paint("running", f"{'running':<8}")
            self.stream.write(f"  {tag}{nid:<{self.width}} {text} ({took:.0f}s)".rstrip() + "\n")
        self._drawn = len(self.rows)
        self.stream.flush()

    def line(self, status: str, node: str, detail: str = "") -> None:
        super().line(status, node, detail)
        self._draw()

    def text(self, text: str) -> None:
        super().text(text)
        self._draw()

    def started(self, nid: str) -> None:
        self.rows[nid] = ""
        self.started_at[nid] = time.monotonic()
        self._draw()

    def finished(self, nid: str) -> None:
        self.rows.pop(nid, None)
        self._progress.pop(nid, None)
        self._draw()

    def progress(self, node: str) -> Any:
        if not self.tty:  # the plain periodic line, one per node
            if node not in self._progress:
                self._progress[node] = Display.progress(self, node)
            return self._progress[node]

        def _progress(done: int, total: int | None = None, msg: str = "") -> None:
            if self.quiet or node not in self.rows:
                return
            bar = ""
            if total:
                n = int(20 * done / total)
                bar = "[" + "#" * n + "." * (20 - n) + "] "
            self.rows[node] = f"{bar}{done}/{total} {msg}" if total else f"{done} {msg}"
            if time.monotonic() - self._last_draw >= REDRAW_SECONDS or (total and done >= total):
                self._last_draw = time.monotonic()
                self._draw()
        return _progress


def board(display: Display) -> Display:
    return display if isinstance(display, Board) else Board(display)
