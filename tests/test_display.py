"""The run display: every status word renders, with colour on and off."""

from __future__ import annotations

import io
import re
from pathlib import Path

import pytest
from ftlang.runtime.display import STATUSES, Display

RUNTIME = Path(__file__).resolve().parent.parent / "runtime"


@pytest.mark.parametrize("status", sorted(STATUSES))
@pytest.mark.parametrize("color", [True, False])
def test_every_status_word_renders(status: str, color: bool) -> None:
    out = io.StringIO()
    Display(stream=out, color=color).line(status, "train.sft", "detail")
    text = out.getvalue()
    assert re.sub(r"\x1b\[[0-9;]*m", "", text).split() == [status, "train.sft", "detail"]
    assert ("\x1b[" in text) == color


def test_every_status_word_the_runtime_prints_is_declared() -> None:
    used = set()
    for f in RUNTIME.glob("*.py"):
        used |= set(re.findall(r"\.line\(\s*\"(\w+)\"", f.read_text()))
    assert used and used <= set(STATUSES), used - set(STATUSES)


def test_an_undeclared_status_is_refused_even_without_colour() -> None:
    with pytest.raises(ValueError, match="STATUSES"):
        Display(stream=io.StringIO(), color=False).line("exported", "export.release")


def test_off_a_terminal_progress_is_a_line_every_few_seconds(monkeypatch: pytest.MonkeyPatch) -> None:
    import ftlang.runtime.display as display

    clock = [100.0]
    monkeypatch.setattr(display.time, "monotonic", lambda: clock[0])
    out = io.StringIO()
    d = Display(stream=out, color=False)
    d.every_s = 10
    tick = d.progress("train.sft")
    for step in range(1, 41):
        clock[0] += 1.0  # one step a second
        tick(step, 200, "loss 1.0")
    lines = out.getvalue().splitlines()
    assert len(lines) == 4, lines  # at 10, 20, 30, 40 s: never silent, never a flood
    assert lines[0].split()[:3] == ["running", "train.sft", "10/200"] and "eta" in lines[0]
    assert lines[-1].endswith("elapsed 40.0s eta 2m40.0s"), lines[-1]
