"""Loading a user's Python function named in a .ft file (custom metrics, reward functions).

The file's content enters the node key (it is a `path` argument), so a module is
imported under a name unique to its content: an edited file is imported afresh.
"""

from __future__ import annotations

import hashlib
import importlib.util
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ftlang.stdlib.spec import StepError

SIGNATURES = {"metric": "def FUNCTION(predictions, references, prompts) -> float",
              "reward": "def FUNCTION(prompts, completions, **columns) -> list[float]"}


def load_function(file: Path, function: str, what: str = "metric") -> Callable[..., Any]:
    """`function` from the Python file `file`; `what` names it in errors (metric, reward)."""
    file = Path(file)
    if not file.is_file():
        raise StepError(f"the {what} file does not exist", path=file)
    source = file.read_bytes()
    name = f"ftlang_{what}_" + hashlib.sha256(source).hexdigest()[:16]
    module = sys.modules.get(name)
    if module is None:
        spec = importlib.util.spec_from_file_location(name, file)
        if spec is None or spec.loader is None:
            raise StepError(f"cannot import the {what} file", path=file)
        module = importlib.util.module_from_spec(spec)
        try:
            spec.loader.exec_module(module)
        except Exception as e:
            raise StepError(f"importing the {what} file failed: {type(e).__name__}: {e}", path=file,
                            hint=where_in(e, file)) from e
        sys.modules[name] = module
    fn = getattr(module, function, None)
    if not callable(fn):
        names = sorted(n for n, v in vars(module).items() if callable(v) and not n.startswith("_")
                       and getattr(v, "__module__", None) == name)
        raise StepError(f"the {what} file has no function {function!r}", path=file,
                        hint=f"functions in it: {', '.join(names)}" if names else
                        f"define {SIGNATURES.get(what, 'the function')}")
    return fn


def where_in(exc: BaseException, file: Path) -> str | None:
    """`file:line` of the innermost frame of `exc` inside the user's file."""
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if Path(f.filename) == file]
    if not frames:
        return None
    f = frames[-1]
    return f"at {file.name}:{f.lineno}: {f.line}" if f.line else f"at {file.name}:{f.lineno}"
