"""ir.walk / ir.transform: the one walk every pass uses over resolved values."""

from __future__ import annotations

from ftlang.compiler.ir import (
    DESCEND,
    FileValue,
    RefValue,
    Splice,
    SweepValue,
    files_in,
    refs_in,
    transform,
    walk,
)
from ftlang.stdlib.spec import Call

VALUE = {
    "data": RefValue("curate.clean", "train"),
    "method": Call("lora", {"r": SweepValue((8, 16), ("8", "16"), name="rank"), "target_modules": ("q", "v")}),
    "models": [RefValue("model.base", many=True), RefValue("train.sft", many=True)],
    "source": Call("jsonl", {"path": FileValue("d.jsonl", "/p/d.jsonl")}),
}


def test_walk_visits_everything_with_the_name_it_sits_at() -> None:
    seen = [(n, v) for n, v in walk(VALUE) if not isinstance(v, (dict, list, tuple, Call))]
    assert ("data", RefValue("curate.clean", "train")) in seen
    assert ("rank", 8) in seen and ("rank", 16) in seen  # a sweep's own name wins
    assert ("target_modules", "q") in seen and ("models", RefValue("train.sft", many=True)) in seen
    assert [f.rel for f in files_in(VALUE)] == ["d.jsonl"]
    assert [r.node for r in refs_in(VALUE)] == ["curate.clean", "model.base", "train.sft"]


def test_walk_order_and_the_finders_agree_with_a_recursive_walk() -> None:
    """walk is a stack, files_in / refs_in a direct search: both give what the plain
    recursion gives, in its order (a reference inside a sweep inside a call included)."""
    def recursive(value: object, name: str = "") -> list[tuple[str, object]]:
        out = [(name, value)]
        if isinstance(value, SweepValue):
            for v in value.values:
                out += recursive(v, value.name or name)
        elif isinstance(value, Call):
            for k, v in value.args.items():
                out += recursive(v, k)
        elif isinstance(value, dict):
            for k, v in value.items():
                out += recursive(v, k)
        elif isinstance(value, (list, tuple)):
            for v in value:
                out += recursive(v, name)
        return out

    nested = {**VALUE, "extra": [Call("f", {"x": SweepValue((RefValue("dataset.a"), RefValue("dataset.b")),
                                                                ("a", "b"))}), (FileValue("e.py", "/p/e.py"),)]}
    assert list(walk(nested, "top")) == recursive(nested, "top")
    assert refs_in(nested) == [v for _, v in recursive(nested) if isinstance(v, RefValue)]
    assert [f.rel for f in files_in(nested)] == ["d.jsonl", "e.py"]


def test_transform_rebuilds_keeps_shapes_and_splices() -> None:
    def fn(v: object) -> object:
        if isinstance(v, RefValue) and v.many:
            return Splice([v, v])
        if isinstance(v, SweepValue):
            return v.values[0]
        return DESCEND

    out = transform(VALUE, fn)
    assert out["method"] == Call("lora", {"r": 8, "target_modules": ("q", "v")})  # tuples stay tuples
    assert [r.node for r in out["models"]] == ["model.base"] * 2 + ["train.sft"] * 2
    assert out["data"] is VALUE["data"] and VALUE["method"].args["r"].values == (8, 16)  # input untouched


def test_passes_are_the_tuple_that_runs_in_the_readme_order(monkeypatch) -> None:
    import re
    from dataclasses import replace

    import ftlang.compiler as compiler
    from conftest import FIXTURES, ROOT

    ran: list[str] = []
    wrapped = tuple(replace(p, run=lambda c, p=p: (ran.append(p.name), p.run(c))) for p in compiler.PASSES)
    monkeypatch.setattr(compiler, "PASSES", wrapped)
    path = FIXTURES / "ok" / "sweeps.ft" if (FIXTURES / "ok" / "sweeps.ft").exists() else \
        sorted((FIXTURES / "ok").glob("*.ft"))[0]
    compiler.compile_source(path.read_text(), path.name, path.parent)
    assert ran == [p.name for p in compiler.PASSES]
    readme = (ROOT / "compiler" / "README.md").read_text()
    listed = re.findall(r"^\d+\. `([\w.]+)`", readme, re.M)
    assert ["lang.parser.parse", *listed] == ran


def test_attribute_types_are_parsed_once_where_declared() -> None:
    import pytest
    from ftlang.stdlib.spec import Attr, parse_type

    te = Attr("metrics", "list[call[metric]]").of
    assert (te.kind, te.item.kind, te.item.family) == ("list", "call", "metric")
    assert parse_type("list[ call[metric] ]") is te  # cached: one parse per distinct type
    with pytest.raises(ValueError, match="unknown attribute type"):
        Attr("x", "lst[int]")  # a typo in a declaration fails at import, not on first use
