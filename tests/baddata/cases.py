"""The bad-data corpus: each case is one broken (or tricky) input and what `ft` must do with it.

A case builds a small project folder (a `.ft` file and its data): the tiny text files are
committed next to this module (data/), the rest is generated here (Latin-1 bytes, Parquet,
a named pipe, a symlink loop, a file without read permission, very deep `.ft` files).
The outcome is either a correct read (exit 0) or a clear error: exit code, and the texts the
output must show (the file and row for data, file:line:col for `.ft`), never a traceback.

`CASES` is the list; `build(case, folder)` makes its project. tests/test_baddata.py runs
every case with the real `ft`; a reliability runner can iterate them the same way:

    for case in CASES:
        project = build(case, Path(tmp) / case.name)
        ... run `ft <case.command> <case.ft>` in project, compare with case.exit / case.expect
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

DATA = Path(__file__).resolve().parent / "data"


@dataclass(frozen=True)
class Case:
    name: str
    command: str  # "check" or "run"
    ft: str  # the .ft file in the project
    data: str  # the offending file, as the output names it
    exit: int  # 0: read correctly; 1: a step failed; 2: compile-time diagnostics
    expect: tuple[str, ...]  # every one must appear in stdout + stderr
    make: Callable[[Path], None]
    forbid: tuple[str, ...] = ()  # none may appear (besides "Traceback", always forbidden)
    needs: str = ""  # "fifo" / "symlink" / "unprivileged": how the case can be built
    pending: str = ""  # the fix lives in a file this change could not edit (see the reason)


def _dataset_ft(source: str, schema: str = "") -> str:
    body = f"  source = {source}\n" + (f"  schema {{ {schema} }}\n" if schema else "")
    return f"ft 0.1\n\ndataset d {{\n{body}}}\n"


def _consumer_ft(source: str) -> str:
    """A dataset read by a train block: `ft check` compares the columns it needs with the file's."""
    return _dataset_ft(source) + (
        "\nmodel m {\n  init = tiny(hidden = 32, layers = 1, heads = 2, vocab = 256, context = 64, data = d)\n}\n"
        "\ntrain t {\n  from = m\n  data = d\n  max_steps = 1\n}\n")


def _write(project: Path, name: str, text: str | bytes) -> None:
    path = project / name
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")


def _committed(name: str, ft: str) -> Callable[[Path], None]:
    def make(project: Path) -> None:
        (project / "data").mkdir(parents=True, exist_ok=True)
        shutil.copyfile(DATA / name, project / "data" / name)
        _write(project, "pipeline.ft", ft)
    return make


def _latin1_csv(ft: str) -> Callable[[Path], None]:
    def make(project: Path) -> None:
        rows = "prompt,completion\n" + "".join(f"q{i},caf\xe9 {i}\n" for i in range(5))
        _write(project, "data/latin1.csv", rows.encode("latin-1"))
        _write(project, "pipeline.ft", ft)
    return make


def _latin1_jsonl(project: Path) -> None:
    _write(project, "data/latin1.jsonl", '{"prompt": "a", "completion": "b"}\n'
           '{"prompt": "caf\xe9", "completion": "c"}\n'.encode("latin-1"))
    _write(project, "pipeline.ft", _dataset_ft('jsonl("data/latin1.jsonl")'))


def _struct_parquet(project: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    (project / "data").mkdir(parents=True, exist_ok=True)
    table = pa.table({"prompt": [{"text": "q0", "lang": "en"}, {"text": "q1", "lang": "en"}],
                      "completion": ["a0", "a1"]})
    pq.write_table(table, project / "data" / "struct.parquet")
    _write(project, "pipeline.ft", _dataset_ft('parquet("data/struct.parquet")', "prompt: str, completion: str"))


def _special(kind: str) -> Callable[[Path], None]:
    """A data file that exists but is no regular readable file."""
    def make(project: Path) -> None:
        data = project / "data"
        data.mkdir(parents=True, exist_ok=True)
        if kind == "fifo":
            os.mkfifo(data / "pipe.jsonl")
        elif kind == "loop":
            os.symlink("loop_b.jsonl", data / "loop_a.jsonl")
            os.symlink("loop_a.jsonl", data / "loop_b.jsonl")
        elif kind == "folder":
            (data / "folder.jsonl").mkdir()
        elif kind == "noperm":
            (data / "secret.jsonl").write_text('{"prompt": "a", "completion": "b"}\n')
            (data / "secret.jsonl").chmod(0)
        name = {"fifo": "pipe.jsonl", "loop": "loop_a.jsonl", "folder": "folder.jsonl",
                "noperm": "secret.jsonl"}[kind]
        _write(project, "pipeline.ft", _dataset_ft(f'jsonl("data/{name}")'))
    return make


def _ft_text(text: str | bytes) -> Callable[[Path], None]:
    def make(project: Path) -> None:
        _write(project, "data/ok.jsonl", '{"prompt": "a", "completion": "b"}\n')
        _write(project, "pipeline.ft", text)
    return make


_OK_DATASET = _dataset_ft('jsonl("data/ok.jsonl")')
_NESTED = _OK_DATASET + "\ntrain t {\n  lr = " + "[" * 600 + "1e-4" + "]" * 600 + "\n}\n"
_LONG_SUM = _OK_DATASET + "\ntrain t {\n  lr = " + " + ".join(["1e-9"] * 3000) + "\n}\n"
_FLAT_LIST = _OK_DATASET + (
    "\nmodel m {\n  init = tiny(hidden = 32, layers = 1, heads = 2, vocab = 256, context = 64, data = d)\n}\n"
    "\neval e {\n  models = [" + ", ".join(["m"] * 3000) + "]\n  data = d\n}\n")
_FLAT_PATTERNS = _OK_DATASET + (
    "\nmodel m {\n  init = tiny(hidden = 32, layers = 1, heads = 2, vocab = 256, context = 64, data = d)\n}\n"
    "\ntrain t {\n  from = m\n  data = d\n  method = full\n  trainable = ["
    + ", ".join(f'"layer{i}.*"' for i in range(3000)) + "]\n}\n")

CASES: list[Case] = [
    Case("csv_unclosed_quote", "run", "pipeline.ft", "data/unclosed_quote.csv", 1,
         ("data/unclosed_quote.csv:4:", "never closed"),
         _committed("unclosed_quote.csv", _dataset_ft('csv("data/unclosed_quote.csv")'))),
    Case("csv_latin1_no_schema", "run", "pipeline.ft", "data/latin1.csv", 1,
         ("data/latin1.csv:2:", "not valid UTF-8", "0xe9"),
         _latin1_csv(_dataset_ft('csv("data/latin1.csv")')), forbid=("b'",)),
    Case("csv_latin1_schema", "run", "pipeline.ft", "data/latin1.csv", 1,
         ("data/latin1.csv:2:", "not valid UTF-8"),
         _latin1_csv(_dataset_ft('csv("data/latin1.csv")', "prompt: str, completion: str"))),
    Case("jsonl_latin1", "run", "pipeline.ft", "data/latin1.jsonl", 1,
         ("data/latin1.jsonl:2:", "not valid UTF-8"), _latin1_jsonl),
    Case("parquet_struct_column", "run", "pipeline.ft", "data/struct.parquet", 1,
         ("data/struct.parquet:", "column 'prompt' has type struct", "the schema says str"),
         _struct_parquet),
    Case("jsonl_big_int", "run", "pipeline.ft", "data/big_int.jsonl", 1,
         ("data/big_int.jsonl:2:", "100000000000000000000000", "64 bits"),
         _committed("big_int.jsonl", _dataset_ft('jsonl("data/big_int.jsonl")'))),
    Case("jsonl_lone_surrogate", "run", "pipeline.ft", "data/lone_surrogate.jsonl", 1,
         ("data/lone_surrogate.jsonl:3:", "\\ud800", "surrogate"),
         _committed("lone_surrogate.jsonl", _dataset_ft('jsonl("data/lone_surrogate.jsonl")'))),
    Case("csv_semicolon_check", "check", "pipeline.ft", "data/semicolon.csv", 2,
         ("error[FT0125]", "pipeline.ft:4:16", "data/semicolon.csv", "delimiter", 'delimiter = ";"'),
         _committed("semicolon.csv", _consumer_ft('csv("data/semicolon.csv")')),
         forbid=('prompt_field = "prompt;completion"', 'completion_field = "prompt;completion"')),
    Case("csv_semicolon_run", "run", "pipeline.ft", "data/semicolon.csv", 2,
         ("error[FT0125]", "pipeline.ft:4:16", 'delimiter = ";"'),  # `ft run` checks first
         _committed("semicolon.csv", _dataset_ft('csv("data/semicolon.csv")'))),
    Case("csv_bom_check", "check", "pipeline.ft", "data/bom.csv", 0, ("pipeline.ft: ok",),
         _committed("bom.csv", _consumer_ft('csv("data/bom.csv")')), forbid=("\ufeff", "error")),
    Case("csv_bom_run", "run", "pipeline.ft", "data/bom.csv", 0, ("2 rows",),
         _committed("bom.csv", _dataset_ft('csv("data/bom.csv")', "prompt: str")), forbid=("\ufeff",)),
    Case("ft_bom", "check", "pipeline.ft", "pipeline.ft", 0, ("pipeline.ft: ok",),
         _ft_text(("\ufeff" + _OK_DATASET).encode("utf-8"))),
    Case("ft_latin1", "check", "pipeline.ft", "pipeline.ft", 2,
         ("error[FT0131]", "pipeline.ft:2:4", "not UTF-8"),
         _ft_text(("ft 0.1\n# r\xe9sum\xe9\n" + _OK_DATASET[7:]).encode("latin-1"))),
    Case("data_no_permission", "check", "pipeline.ft", "data/secret.jsonl", 2,
         ("error[FT0131]", "pipeline.ft:4:18", "data/secret.jsonl", "permission denied"),
         _special("noperm"), needs="unprivileged"),
    Case("data_symlink_loop", "check", "pipeline.ft", "data/loop_a.jsonl", 2,
         ("error[FT0131]", "pipeline.ft:4:18", "data/loop_a.jsonl", "loops back on itself"),
         _special("loop"), needs="symlink"),
    Case("data_fifo_check", "check", "pipeline.ft", "data/pipe.jsonl", 2,
         ("error[FT0131]", "pipeline.ft:4:18", "data/pipe.jsonl", "named pipe"), _special("fifo"), needs="fifo"),
    Case("data_fifo_run", "run", "pipeline.ft", "data/pipe.jsonl", 2,
         ("error[FT0131]", "data/pipe.jsonl", "named pipe"), _special("fifo"), needs="fifo"),
    Case("data_folder", "check", "pipeline.ft", "data/folder.jsonl", 2,
         ("error[FT0131]", "pipeline.ft:4:18", "data/folder.jsonl", "a folder"), _special("folder")),
    Case("ft_nested_600", "check", "pipeline.ft", "pipeline.ft", 2,
         ("error[FT0130]", "pipeline.ft:8:", "nested too deeply"), _ft_text(_NESTED),
         forbid=("RecursionError",)),
    Case("ft_sum_3000_terms", "check", "pipeline.ft", "pipeline.ft", 2,
         ("error[FT0130]", "pipeline.ft:8:8", "3000 terms"), _ft_text(_LONG_SUM), forbid=("RecursionError",)),
    Case("ft_flat_list_3000", "check", "pipeline.ft", "pipeline.ft", 0, ("pipeline.ft: ok",),
         _ft_text(_FLAT_PATTERNS)),
    # one mistake repeated 2999 times is one diagnostic, not 2999 copies of a 9000-column line
    Case("ft_flat_list_3000_repeats", "check", "pipeline.ft", "pipeline.ft", 2,
         ("error[FT0108]", "`m` is listed 3000 times in `models`", "1 error found"), _ft_text(_FLAT_LIST)),
]


def build(case: Case, folder: Path) -> Path:
    """The case's project folder, created (empty beforehand)."""
    folder.mkdir(parents=True, exist_ok=True)
    case.make(folder)
    return folder
