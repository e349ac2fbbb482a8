"""Row-level tokenization cache: appending rows tokenizes only the new rows."""

from __future__ import annotations

import json
from pathlib import Path

from conftest import run_ft
from ftlang.stdlib import tokencache

FT = '''ft 0.1
dataset tasks { source = jsonl("data/tasks.jsonl") }
dataset vocab { source = jsonl("data/vocab.jsonl") }
model base {
  init = tiny(hidden = 32, layers = 1, heads = 2, vocab = 200, context = 64, data = vocab)
}
train sft {
  from = base
  data = tasks
  method = lora(r = 2)
  max_steps = 2
  max_length = 32
}
'''


def _rows(path: Path, start: int, n: int) -> None:
    with path.open("a") as f:
        for i in range(start, start + n):
            f.write(json.dumps({"prompt": f"Add {i} and 1", "completion": str(i + 1)}) + "\n")


def test_encode_rows_counts_only_new_rows(tmp_path: Path) -> None:
    calls: list[int] = []

    def encode(batch: list[dict]) -> list[dict[str, list[int]]]:
        calls.append(len(batch))
        return [{"ids": [len(r["t"]), 1]} for r in batch]

    rows = [{"t": f"row {i}"} for i in range(1000)]
    ns = tokencache.namespace(tokenizer="x", template="plain", max_length=64)
    enc, stats = tokencache.encode_rows(rows, ["t"], encode, ns, tmp_path)
    assert stats.tokenized == 1000 and enc[5] == {"ids": [5, 1]}
    more = rows + [{"t": f"new row {i}"} for i in range(10)]
    enc2, stats2 = tokencache.encode_rows(more, ["t"], encode, ns, tmp_path)
    assert stats2.tokenized == 10 and stats2.fraction < 0.011
    assert enc2[:1000] == enc and enc2[-1] == {"ids": [len("new row 9"), 1]}
    # Another tokenizer or template is another namespace: nothing is reused.
    _, stats3 = tokencache.encode_rows(rows, ["t"], encode, tokencache.namespace(tokenizer="y"), tmp_path)
    assert stats3.tokenized == 1000


def test_appending_one_percent_tokenizes_one_percent(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    _rows(tmp_path / "data" / "tasks.jsonl", 0, 500)
    _rows(tmp_path / "data" / "vocab.jsonl", 0, 100)  # the tokenizer stays the same
    (tmp_path / "p.ft").write_text(FT)
    assert run_ft("run", "p.ft", cwd=tmp_path).returncode == 0
    first = json.loads(run_ft("show", "p.ft", "--json", cwd=tmp_path).stdout)
    sft = next(n for n in first if n["node"] == "train.sft")
    assert sft["meta"]["tokenized_rows"] == 500
    _rows(tmp_path / "data" / "tasks.jsonl", 500, 5)  # +1%
    out = run_ft("run", "p.ft", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    second = json.loads(run_ft("show", "p.ft", "--json", cwd=tmp_path).stdout)
    sft2 = next(n for n in second if n["node"] == "train.sft")
    assert sft2["status"] == "ran" and sft2["meta"]["tokenized_rows"] == 5


def _encode_len(batch: list[dict]) -> list[dict[str, list[int]]]:
    return [{"ids": [len(r["p"]), len(r["c"])], "n": [ord(r["p"][-1])]} for r in batch]


def test_new_rows_are_a_new_segment_and_many_segments_fold_into_one(tmp_path: Path) -> None:
    ns = "seg"
    rows = [{"p": f"prompt {i}", "c": f"c{i}"} for i in range(50)]
    folder = tmp_path / "tokens"
    out, st = tokencache.encode_rows(rows[:10], ["p", "c"], _encode_len, ns, tmp_path)
    assert st.tokenized == 10 and [p.name for p in folder.iterdir()] == [f"{ns}.h3.arrow"]
    for k in range(1, tokencache.SEGMENTS):  # each run with new rows adds one segment
        out, st = tokencache.encode_rows(rows[:10 + k], ["p", "c"], _encode_len, ns, tmp_path)
        assert st.tokenized == 1 and len(list(folder.glob("*.arrow"))) == k + 1
    assert [dict(o) for o in out] == _encode_len(rows[:10 + tokencache.SEGMENTS - 1])  # served in order
    out, st = tokencache.encode_rows(rows, ["p", "c"], _encode_len, ns, tmp_path)  # past SEGMENTS: fold
    assert [p.name for p in folder.glob("*.arrow")] == [f"{ns}.h3.arrow"]
    out, st = tokencache.encode_rows(rows, ["p", "c"], _encode_len, ns, tmp_path)
    assert st.tokenized == 0 and [dict(o) for o in out] == _encode_len(rows)


def test_a_damaged_segment_costs_only_its_rows(tmp_path: Path) -> None:
    rows = [{"p": f"prompt {i}", "c": f"c{i}"} for i in range(20)]
    tokencache.encode_rows(rows[:10], ["p", "c"], _encode_len, "d", tmp_path)
    tokencache.encode_rows(rows, ["p", "c"], _encode_len, "d", tmp_path)
    (second,) = (p for p in (tmp_path / "tokens").glob("d.h3.*.arrow"))
    second.write_bytes(b"not parquet")
    out, st = tokencache.encode_rows(rows, ["p", "c"], _encode_len, "d", tmp_path)
    assert st.tokenized == 10 and [dict(o) for o in out] == _encode_len(rows)


def test_row_hashes_are_row_hash() -> None:
    rows = [{"p": "a", "c": "b"}, {"p": "a\0", "c": "b"}, {"p": 3, "c": "b"}, {"p": "x", "c": None}]
    assert tokencache.row_hashes(rows, ["p", "c"]) == [tokencache.row_hash(r, ["p", "c"]) for r in rows]
    one = [{"t": "a"}, {"t": "a\0b"}, {"t": ["x"]}]
    assert tokencache.row_hashes(one, ["t"]) == [tokencache.row_hash(r, ["t"]) for r in one]
    # all plain text: the batch path (one NUL anywhere, or one missing key, sends all rows the row path)
    for fields in (["t"], ["p", "c"], ["a", "b", "c"]):
        plain = [{f: f"{f}{i}" for f in fields} for i in range(50)]
        assert tokencache.row_hashes(plain, fields) == [tokencache.row_hash(r, fields) for r in plain]
        assert len(set(tokencache.row_hashes(plain, fields))) == 50
    assert tokencache.row_hashes([{"p": "x"}], ["p", "c"]) == [tokencache.row_hash({"p": "x"}, ["p", "c"])]


def test_rows_are_encoded_and_served_with_the_cyclic_gc_paused_then_restored(tmp_path: Path) -> None:
    """The GC's passes over a process holding a tokenizer cost 4x the cache's own work
    (bench/bench_tokens.py); it is off while rows are encoded and served, and back after,
    also when the tokenizer raises."""
    import gc

    import pytest

    seen: list[bool] = []

    def encode(batch: list[dict]) -> list[dict[str, list[int]]]:
        seen.append(gc.isenabled())
        return [{"ids": [1]} for _ in batch]

    assert gc.isenabled()
    tokencache.encode_rows([{"t": "a"}], ["t"], encode, "ns", tmp_path)
    assert seen == [False] and gc.isenabled()

    def broken(batch: list[dict]) -> list[dict[str, list[int]]]:
        raise RuntimeError("tokenizer failed")

    with pytest.raises(RuntimeError):
        tokencache.encode_rows([{"t": "b"}], ["t"], broken, "ns", tmp_path)
    assert gc.isenabled()


def test_served_rows_are_the_encoded_lists_also_empty_and_from_a_foreign_segment(tmp_path: Path) -> None:
    """Rows served from a segment are the lists that went in (read from the flat columns by
    offset), empty lists too, across record batches; a segment of another list type (written by
    another tool) is read the general way, with the same result."""
    import pyarrow as pa
    import pyarrow.feather as feather

    rows = [{"p": f"prompt {i}", "c": "c" * (i % 4)} for i in range(3000)]

    def encode(batch: list[dict]) -> list[dict[str, list[int]]]:
        return [{"ids": [ord(ch) for ch in r["c"]], "n": [len(r["p"]), -len(r["p"])]} for r in batch]

    want = encode(rows)
    tokencache.encode_rows(rows, ["p", "c"], encode, "flat", tmp_path)
    out, st = tokencache.encode_rows(rows, ["p", "c"], encode, "flat", tmp_path)
    assert st.tokenized == 0 and [dict(o) for o in out] == want and out[0]["ids"] == []
    seg = tmp_path / "tokens" / "flat.h3.arrow"
    table = feather.read_table(seg)
    feather.write_feather(table, seg, chunksize=700)  # several record batches: chunks when read
    out, _ = tokencache.encode_rows(rows, ["p", "c"], encode, "flat", tmp_path)
    assert [dict(o) for o in out] == want
    wide = table.set_column(1, "ids", table.column("ids").cast(pa.list_(pa.int64())))
    feather.write_feather(wide, seg)
    out, st = tokencache.encode_rows(rows, ["p", "c"], encode, "flat", tmp_path)
    assert st.tokenized == 0 and [dict(o) for o in out] == want
