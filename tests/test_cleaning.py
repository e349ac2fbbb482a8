"""clean: PII scrubbing with counts per kind, MinHash near-duplicates, language filter,
decontamination against an eval set; the quality macros in curate; the report's funnel."""

from __future__ import annotations

import json
from pathlib import Path

import duckdb
import pyarrow.parquet as pq
import pytest
from conftest import run_ft
from ftlang.stdlib import clean, dedup, pii, sqlmacros
from ftlang.stdlib.spec import Call
from stepkit import Store

BASE = ("the quick brown fox jumps over the lazy dog near the river bank today while "
        "the farmer watches from the old wooden fence")


def test_pii_is_replaced_and_counted_per_kind() -> None:
    counts: dict[str, int] = {}
    text = ("mail bob.smith@example.com or ann@mail.org, call +1 415-555-0134 or (020) 7946 0958, "
            "server 192.168.10.254, key sk-abcdefghijklmnopqrstuvwx12 and token: "
            "Zm9vYmFyYmF6cXV4cXV1eGNvcmdlZ3JhdWx0Z2FycGx5, on 2024-01-15 version 1.2.3, 300 apples")
    out = pii.scrub(text, pii.KINDS, counts)
    assert counts == {"email": 2, "phone": 2, "ip": 1, "key": 2}
    assert "example.com" not in out and "192.168" not in out and "sk-" not in out and "415" not in out
    assert "2024-01-15" in out and "1.2.3" in out and "300 apples" in out  # not PII
    assert "<EMAIL>" in out and "<PHONE>" in out and "<IP>" in out and "<KEY>" in out


def test_minhash_drops_near_duplicates_and_keeps_the_first() -> None:
    texts = [BASE, BASE.replace("fence", "gate"), "an entirely different sentence about cooking pasta with garlic",
             BASE.upper(), "the quick brown fox"]
    dropped = dedup.near_duplicates(texts, threshold=0.7, ngram=3, num_perm=128)
    assert dropped == {1: 0, 3: 0}
    # a stricter threshold keeps the one-word edit
    assert dedup.near_duplicates(texts, threshold=0.95, ngram=3, num_perm=128) == {3: 0}


def test_overlap_finds_rows_that_share_eval_ngrams() -> None:
    hits = dedup.overlaps(["what is the capital of france answer paris", "add 2 and 3", "unrelated words here"],
                          ["question: what is the capital of france?"], n=4, min_overlap=1)
    assert list(hits) == [0] and hits[0] == 3


@pytest.fixture()
def store(tmp_path: Path) -> Store:
    return Store(tmp_path)


def test_the_step_removes_rows_and_says_why(store: Store) -> None:
    rows = [{"prompt": BASE, "completion": "a"}, {"prompt": BASE.replace("fence", "gate"), "completion": "a"},
            {"prompt": "write to jo@example.com about the plan", "completion": "ok"},
            {"prompt": "what is the capital of france exactly", "completion": "Paris"},
            {"prompt": "ceci est une phrase en français sur les chats et les chiens", "completion": "oui"},
            {"prompt": "count the apples in the basket please", "completion": "3"}]
    data = store.dataset("dataset.d", rows)
    bench = store.dataset("dataset.bench", [{"prompt": "What is the capital of France?", "completion": "Paris"}])
    art, meta = store.run(clean.run, "clean.tidy", {
        "from": data, "columns": ["prompt"],
        "pii": Call("scrub", {"kinds": list(pii.KINDS), "action": "redact"}),
        "dedup": Call("minhash", {"threshold": 0.7, "ngram": 3, "num_perm": 128, "seed": 1}),
        "language": Call("langid", {"keep": ["en"]}),
        "decontaminate": Call("overlap", {"against": bench, "n": 4, "min_overlap": 1})})
    kept = pq.read_table(art.dataset_file()).to_pylist()
    assert [r["prompt"] for r in kept] == [BASE, "write to <EMAIL> about the plan",
                                           "count the apples in the basket please"]
    assert meta["removed"] == {"near-duplicate": 1, "other language": 1, "overlaps eval set": 1}
    assert meta["pii"]["email"] == 1 and meta["overlap_ngrams"] == 3
    assert meta["funnel"] == [["input", 6], ["pii", 6], ["dedup", 5], ["language", 4], ["decontaminate", 3]]
    line = clean.summary(meta)
    assert line == ("3 rows; removed: near-duplicate 1, other language 1, overlaps eval set 1 (3 n-grams); "
                    "pii: email 1")


def test_quality_macros() -> None:
    con = duckdb.connect()
    sqlmacros.define(con)
    got = con.sql("SELECT ft_words(s), round(ft_repetition(s), 3), round(ft_non_alpha(s), 3), ft_mean_word(s) "
                  "FROM (VALUES ('a b c a b c a b c'), ('the quick brown fox'), ('12345 ab!!'), (''), ('x')) t(s)").fetchall()
    assert got == [(9, 0.571, 0.0, 1.0), (4, 0.0, 0.0, 4.0), (2, 0.0, 0.7, 4.5), (0, 0.0, 0.0, 0.0), (1, 0.0, 0.0, 1.0)]
    assert sqlmacros.used("SELECT * FROM t WHERE FT_WORDS(x) > 2 AND ft_repetition (x) < .2") == \
        ["ft_repetition", "ft_words"]


FT = """ft 0.1
dataset d { source = jsonl("d.jsonl") }
dataset bench { source = jsonl("bench.jsonl") }
curate q {
  sql "SELECT * FROM d WHERE ft_words(prompt) >= 3 AND ft_repetition(prompt, n := 1) < 0.5"
}
clean tidy {
  from = q
  pii = scrub()
  dedup = minhash(threshold = 0.7, ngram = 3)
  decontaminate = overlap(bench, n = 4)
}
"""


def test_ft_run_shows_each_stage_and_the_report_shows_the_funnel(tmp_path: Path) -> None:
    rows = [{"prompt": BASE}, {"prompt": BASE.replace("fence", "gate")}, {"prompt": "spam spam spam spam"},
            {"prompt": "two words"}, {"prompt": "call me at 415-555-0134 tomorrow"},
            {"prompt": "what is the capital of france now"}]
    (tmp_path / "d.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "bench.jsonl").write_text(json.dumps({"prompt": "What is the capital of France?"}) + "\n")
    (tmp_path / "p.ft").write_text(FT)
    r = run_ft("run", "p.ft", cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    out = r.stdout + r.stderr
    assert "4 rows" in out  # curate: the macros dropped the repetitive and the short row
    assert "2 rows; removed: near-duplicate 1, overlaps eval set 1 (3 n-grams); pii: phone 1" in out
    r = run_ft("report", "p.ft", "-o", "report.html", cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    html = (tmp_path / "report.html").read_text()
    assert "input 4 → pii 4 → dedup 3 → decontaminate 2" in html
    assert "removed: near-duplicate 1, overlaps eval set 1" in html and "pii: phone 1" in html


def test_a_macro_enters_the_key_only_of_queries_that_call_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from ftlang.compiler import compile_source
    from ftlang.runtime import keys
    from ftlang.runtime.hashing import StatCache
    from ftlang.runtime.store import Entry

    (tmp_path / "d.jsonl").write_text(json.dumps({"prompt": "a b c"}) + "\n")
    src = ('ft 0.1\ndataset d { source = jsonl("d.jsonl") }\n'
           'curate plain { sql "SELECT * FROM d WHERE length(prompt) > 2" }\n'
           'curate filtered { sql "SELECT * FROM d WHERE ft_words(prompt) > 2" }\n')
    nodes = compile_source(src, "p.ft", tmp_path).nodes
    inputs = {"dataset.d": Entry(key="k", node="dataset.d", digest="0" * 64, files={}, meta={})}
    stat = StatCache(tmp_path / "stat.json")

    def comp(nid: str) -> dict:
        return keys.components(nodes[nid], inputs, stat)

    before = {nid: comp(nid) for nid in ("curate.plain", "curate.filtered")}
    assert "macros" not in before["curate.plain"] and "macros" in before["curate.filtered"]
    monkeypatch.setitem(sqlmacros.MACROS, "ft_words", sqlmacros.MACROS["ft_words"].replace("0 ELSE", "-1 ELSE"))
    assert comp("curate.plain") == before["curate.plain"]
    assert comp("curate.filtered") != before["curate.filtered"]  # a changed macro reruns its queries
