"""ftlang: a declarative language for LLM fine-tuning pipelines.

    import ftlang
    p = ftlang.load("examples/quickstart.ft")
    p.plan(); p.run(); p.artifact("train.sft").path
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"


def load(path: Any) -> Any:
    """Compile a .ft file into a Pipeline (imports stay lazy: nothing heavy at import)."""
    from ftlang.api import load as _load

    return _load(path)
