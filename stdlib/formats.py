"""Data formats people have: JSON-array files, and the Alpaca and ShareGPT row shapes.

In:  a JSON file's path (`json("x.json")`), or a table read by the dataset step and the
     `shape` its block names.
Out: an Arrow table: the array's objects as rows; Alpaca rows (instruction, input, output)
     as prompt/completion; ShareGPT rows (conversations: [{from, value}]) as messages
     ([{role, content}]), the rest of the columns kept. `is_json_array` tells a jsonl()
     source that its file is one array (the dataset step then names json()).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ftlang.stdlib import locate
from ftlang.stdlib.spec import StepError


@dataclass(frozen=True)
class Shape:
    reads: tuple[str, ...]  # columns the rows must have
    makes: tuple[str, ...]  # columns it writes (in place of `reads`)
    doc: str


SHAPES = {
    "alpaca": Shape(("instruction", "output"), ("prompt", "completion"),
                    "instruction (+ input, joined by a blank line) -> prompt, output -> completion"),
    "sharegpt": Shape(("conversations",), ("messages",),
                      "conversations [{from, value}] -> messages [{role, content}]; from: human -> user, "
                      "gpt -> assistant, system; a `system` column becomes the first message"),
}
ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant",
         "chatgpt": "assistant", "system": "system"}


def is_json_array(path: Path) -> bool:
    """The file's first non-blank character (after a UTF-8 BOM) is `[`."""
    with path.open("rb") as f:
        head = f.read(4096).lstrip(b"\xef\xbb\xbf").lstrip()
    return head.startswith(b"[")


def read_json(path: Path, shown: str) -> Any:
    """The rows of a JSON file holding one array of objects, as a pyarrow table."""
    import pyarrow as pa

    raw = path.read_bytes()
    try:
        data = json.loads(raw.decode("utf-8-sig"))
    except UnicodeDecodeError as e:
        raise StepError(f"not UTF-8 at byte {e.start}", path=shown) from None
    except json.JSONDecodeError as e:
        raise StepError(f"not valid JSON: {e.msg} (column {e.colno})", path=shown, row=e.lineno) from None
    except RecursionError:  # Python's parser gives out near 1000 levels
        # + 2: the array and the row object are levels of the text but not of a column's value
        raise locate.too_deep_error(shown, locate.too_deep_line(raw, locate.MAX_DEPTH + 2)) from None
    if isinstance(data, dict) and len(data) == 1 and isinstance(next(iter(data.values())), list):
        key = next(iter(data))
        raise StepError(f"the file is an object whose {key!r} holds the rows, not an array",
                        path=shown, hint=f"write the array itself at the top level (the value of {key!r})")
    if not isinstance(data, list):
        raise StepError(f"json() reads an array of objects; the file holds a JSON {type(data).__name__}",
                        path=shown, hint="one object per line is JSON Lines: source = jsonl(...)")
    bad = next((i for i, row in enumerate(data) if not isinstance(row, dict)), None)
    if bad is not None:
        raise StepError(f"element {bad} of the array is a {type(data[bad]).__name__}, not an object",
                        path=shown, hint="every row is an object: {\"prompt\": ..., \"completion\": ...}")
    if not data:
        raise StepError("the file has no rows: the array is empty", path=shown)
    # Every key of every object (from_pylist would keep only the first object's keys).
    names = dict.fromkeys(k for row in data for k in row)
    try:
        table = pa.Table.from_pydict({n: [row.get(n) for row in data] for n in names})
    except (pa.ArrowInvalid, pa.ArrowTypeError, RecursionError) as e:
        # The slow pass names the row and column; pyarrow's message names neither.
        raise locate.array_rows(data, raw, shown) or StepError(
            f"the rows do not share one type per column: {e}", path=shown,
            hint="a column (or nested field) needs one JSON type in every row") from None
    # json reads 1e400 as inf (pyarrow's JSON Lines reader refuses it): both checks look at
    # the table, not at every value, and only a hit re-reads the rows to name one.
    if locate.type_depth(table.schema) > locate.MAX_DEPTH or locate.has_inf(table):
        marked = json.loads(raw.decode("utf-8-sig"), parse_float=locate.parse_float)
        problem = locate.array_rows(marked, raw, shown)
        if problem or locate.type_depth(table.schema) > locate.MAX_DEPTH:
            raise problem or locate.too_deep_error(shown)
    return table  # an inf the rows hold is a literal Infinity, as in a JSON Lines file


def reshape(table: Any, shape: str, shown: str) -> Any:
    """`table` in ftlang's columns (see SHAPES); StepError naming the row for a bad value."""
    import pyarrow as pa

    spec = SHAPES[shape]
    missing = [c for c in spec.reads if c not in table.column_names]
    if missing:
        raise StepError(f"shape = {shape} reads the columns {', '.join(spec.reads)}; the rows have no "
                        f"{', '.join(missing)} (they have {', '.join(table.column_names)})", path=shown)
    rows = table.to_pylist()
    if shape == "alpaca":
        new = {"prompt": [_alpaca_prompt(r) for r in rows], "completion": [r["output"] for r in rows]}
        drop = {"instruction", "input", "output"}
    else:
        new = {"messages": [_sharegpt(r, i, shown) for i, r in enumerate(rows, 1)]}
        drop = {"conversations", "system"}
    kept = [c for c in table.column_names if c not in drop and c not in new]
    out = {**{c: table.column(c) for c in kept}, **{k: pa.array(v) for k, v in new.items()}}
    return pa.table(out)


def _alpaca_prompt(row: dict[str, Any]) -> str | None:
    if row.get("instruction") is None:
        return None
    extra = row.get("input")
    return f"{row['instruction']}\n\n{extra}" if extra else str(row["instruction"])


def _sharegpt(row: dict[str, Any], i: int, shown: str) -> list[dict[str, str]]:
    turns = row.get("conversations")
    if not isinstance(turns, list):
        raise StepError("`conversations` is not a list of {from, value}", path=shown, row=i)
    out = [{"role": "system", "content": str(row["system"])}] if row.get("system") else []
    for k, t in enumerate(turns):
        who = t.get("from") if isinstance(t, dict) else None
        if who not in ROLES:
            raise StepError(f"conversations[{k}].from is {who!r}", path=shown, row=i,
                            hint=f"ftlang reads the roles {', '.join(ROLES)}; map others in a curate query")
        out.append({"role": ROLES[who], "content": str(t.get("value") or "")})
    return out
