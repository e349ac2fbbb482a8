"""stdlib/leansteps.py's callback dispatch: each event reaches only the callbacks that
define it, with the keyword arguments transformers' own dispatch passes, and a callback
added or replaced during training is seen. (The training numbers staying the same is
tests/test_train_loop_parity.py's.)"""

from __future__ import annotations

import os
from typing import Any

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
transformers = pytest.importorskip("transformers")

from ftlang.stdlib.leansteps import lean_call_event  # noqa: E402
from transformers import TrainerCallback, TrainerControl, TrainerState  # noqa: E402
from transformers.trainer_callback import CallbackHandler  # noqa: E402


class Records(TrainerCallback):  # type: ignore[misc]
    def __init__(self) -> None:
        self.calls: list[tuple[str, dict[str, Any]]] = []

    def on_step_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
        self.calls.append(("on_step_end", kw))


class Silent(TrainerCallback):  # type: ignore[misc]
    """Defines no event: every one is TrainerCallback's no-op."""


class Stops(TrainerCallback):  # type: ignore[misc]
    def on_step_end(self, args: Any, state: Any, control: Any, **kw: Any) -> Any:
        changed = TrainerControl()
        changed.should_training_stop = True
        return changed


def handler(*callbacks: Any) -> Any:
    h = CallbackHandler(list(callbacks), model="the model", processing_class="the tokenizer",
                        optimizer="the optimizer", lr_scheduler="the schedule")
    h.train_dataloader = "the loader"
    return h


def test_the_same_keyword_arguments_as_transformers_own_dispatch() -> None:
    own, lean = Records(), Records()
    handler(own).call_event("on_step_end", None, TrainerState(), TrainerControl(), extra=1)
    h = handler(lean)
    lean_call_event(h)("on_step_end", None, TrainerState(), TrainerControl(), extra=1)
    assert lean.calls == own.calls and own.calls  # every name, every value


def test_a_callback_without_the_event_is_not_called(monkeypatch: pytest.MonkeyPatch) -> None:
    reached: list[str] = []

    def base(self: Any, args: Any, state: Any, control: Any, **kw: Any) -> None:
        reached.append(type(self).__name__)

    monkeypatch.setattr(TrainerCallback, "on_step_begin", base)  # what Silent inherits
    h = handler(Silent(), Records())
    h.call_event("on_step_begin", None, TrainerState(), TrainerControl())
    assert reached == ["Silent", "Records"]  # transformers calls both no-ops
    reached.clear()
    lean_call_event(h)("on_step_begin", None, TrainerState(), TrainerControl())
    assert reached == []


def test_returned_control_and_callbacks_added_or_set_on_the_instance_count() -> None:
    rec = Records()
    h = handler(Silent(), rec)
    call = lean_call_event(h)
    control = TrainerControl()
    assert call("on_step_end", None, TrainerState(), control) is control
    h.add_callback(Stops())  # during training: the next call sees it
    assert call("on_step_end", None, TrainerState(), control).should_training_stop
    quiet = Silent()
    seen: list[str] = []
    quiet.on_log = lambda args, state, control, **kw: seen.append("instance")  # not the class's
    h.add_callback(quiet)
    call("on_log", None, TrainerState(), control, logs={})
    assert seen == ["instance"] and len(rec.calls) == 2


def test_training_dispatches_every_event_through_it() -> None:
    import sys

    from conftest import ROOT
    sys.path.insert(0, str(ROOT / "bench"))
    import train_loops

    callers: list[str] = []

    class Where(TrainerCallback):  # type: ignore[misc]
        def on_step_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            callers.append(sys._getframe(1).f_code.co_qualname)

    train_loops.ftlang_loop(train_loops.examples(16, 12), steps=3, batch=4, lr=1e-3, extra_callbacks=(Where(),))
    assert callers == ["lean_call_event.<locals>.call_event"] * 3
