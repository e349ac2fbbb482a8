"""No input gives a Python traceback: generated and mutated .ft texts through the parser,
the checker and the formatter; only diagnostics (FtError) may come out.

The normal suite runs a few thousand deterministic cases in seconds. For a deeper run:
    FT_FUZZ_EXAMPLES=20000 FT_FUZZ_RANDOM=1 pytest tests/test_fuzz.py
"""

from __future__ import annotations

import os

from conftest import FIXTURES, ROOT, example_files
from ftlang.compiler import compile_source
from ftlang.lang.diagnostics import FtError, render_all, to_json
from ftlang.lang.format import format_source
from ftlang.lang.parser import parse
from ftlang.stdlib import registry
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_fmt import shape

SCALE = int(os.environ.get("FT_FUZZ_EXAMPLES", "0")) or None
FUZZ = settings(
    max_examples=SCALE or 600,
    deadline=None,
    derandomize=not os.environ.get("FT_FUZZ_RANDOM"),  # the normal suite must not flake
    suppress_health_check=list(HealthCheck),
    database=None,
)
PROJECT = FIXTURES / "ok"

# ---- generated programs ---------------------------------------------------------------

NAMES = ["tasks", "corpus", "clean", "base", "sft", "chat", "report", "x", "train", "model",
         "sweep", "min", "on", "ft", "use", "r", "alpha", "lora", "tiny", "env"]
KINDS = [*registry.STEPS, "modle", "method", "template", "select", "source", "metric", "ft"]
ATTRS = sorted({a.name for s in registry.STEPS.values() for a in s.signature.attrs}
               | {a.name for t in registry.CALLS.values() for s in t.values() for a in s.attrs}
               | {"select", "sql", "schema", "split", "lr:", "by", "seed", "train", "heldout"})
CALLS = sorted({n for t in registry.CALLS.values() for n in t} | {"env", "dora", "qlora", "foo"})

ident = st.sampled_from(NAMES)
dotted = st.lists(ident, min_size=1, max_size=3).map(".".join)
number = st.one_of(st.integers(-5, 70000).map(str),
                   st.sampled_from(["1e-4", "2e-4", "0.5", "0.05", "0.95", "1.0", ".5", "1e400",
                                    "0", "16", "2e-6", "1E3", "007", "99999999999999999999"]))
string = st.sampled_from(['"data/tasks.jsonl"', '"data/corpus.jsonl"', '"x"', '""', '"org/name"',
                          '"${HOME}"', '"a\\"b"', '"\\\\"', '"prompt"', '"out/x"', '"q_proj"',
                          '"""SELECT * FROM tasks"""', '"""\n  SELECT prompt, completion\n  FROM tasks\n"""',
                          '"""SELECT prompt FROM nowhere WHERE"""', '"HOME"', '"FT_UNSET_VAR_XYZ"'])
atom = st.one_of(number, string, st.sampled_from(["true", "false", "yes", "none", "cosine"]), dotted)


def _exprs(children: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    args = st.lists(st.one_of(children, st.tuples(ident, children).map(lambda t: f"{t[0]} = {t[1]}")),
                    max_size=4).map(", ".join)
    return st.one_of(
        st.lists(children, max_size=4).map(lambda xs: "[" + ", ".join(xs) + "]"),
        st.tuples(st.sampled_from(CALLS), args).map(lambda t: f"{t[0]}({t[1]})"),
        st.tuples(children, st.sampled_from(["+", "-", "*", "/", ">=", "<", "=="]), children)
        .map(lambda t: f"{t[0]} {t[1]} {t[2]}"),
        children.map(lambda x: f"-{x}"),
        children.map(lambda x: f"({x})"),
        st.lists(children, min_size=0, max_size=3).map(lambda xs: "sweep [" + ", ".join(xs) + "]"),
        st.tuples(st.sampled_from(["min", "max"]), ident, dotted).map(lambda t: f"{t[0]} {t[1]} on {t[2]}"),
    )


expr = st.recursive(atom, _exprs, max_leaves=8)
attr = st.tuples(st.sampled_from(ATTRS), expr).map(lambda t: f"{t[0]} = {t[1]}")
schema = st.lists(st.tuples(ident, st.sampled_from(["str", "int", "float", "bool", "text"])),
                  max_size=3).map(lambda cs: "schema { " + ", ".join(f"{a}: {b}" for a, b in cs) + " }")
split = st.lists(st.tuples(st.sampled_from(["train", "heldout", "by", "seed", "test"]), atom),
                 max_size=4).map(lambda ps: "split { " + ", ".join(f"{a} = {b}" for a, b in ps) + " }")
stmt = st.one_of(attr, attr, attr, schema, split, string.map(lambda s: f"sql {s}"),
                 expr.map(lambda e: f"assert {e}"))
body = st.lists(stmt, max_size=6).map(lambda ss: "{\n  " + "\n  ".join(ss) + "\n}")
param = st.tuples(ident, st.sampled_from(["int", "float", "str", "bool", "list[str]", "dataset"]),
                  st.one_of(st.none(), expr)).map(
    lambda t: f"{t[0]}: {t[1]}" + (f" = {t[2]}" if t[2] is not None else ""))
item = st.one_of(
    st.tuples(st.sampled_from(KINDS), ident, body).map(lambda t: f"{t[0]} {t[1]} {t[2]}"),
    st.tuples(st.sampled_from(KINDS), ident, body).map(lambda t: f"{t[0]} {t[1]} {t[2]}"),
    st.tuples(st.sampled_from(KINDS), ident, expr).map(lambda t: f"{t[0]} {t[1]} = {t[2]}"),
    st.tuples(st.sampled_from(["method", "template", "source", "train"]), ident,
              st.lists(param, max_size=3), expr).map(
        lambda t: f"{t[0]} {t[1]}({', '.join(t[2])}) = {t[3]}"),
    st.tuples(st.sampled_from(["stdlib.methods", "stdlib.templates", "stdlib.nope", '"./lib.ft"',
                               '"./missing.ft"', '"../ok/full.ft"', "stdlib"]),
              st.lists(ident, min_size=1, max_size=3)).map(lambda t: f"use {t[0]} {{ {', '.join(t[1])} }}"),
)
program = st.tuples(st.sampled_from(["ft 0.1\n", "", "ft 9.9\n"]), st.lists(item, max_size=7)).map(
    lambda t: t[0] + "\n".join(t[1]) + "\n")


def check_text(text: str) -> None:
    """Parse, compile and format `text`; anything but an FtError fails the test."""
    try:
        module = parse(text, "f.ft")
    except FtError as exc:
        _render(exc, text)
        return
    once = format_source(text, "f.ft")
    assert format_source(once, "f.ft") == once, f"fmt not idempotent on:\n{text}"
    assert shape(parse(once, "f.ft")) == shape(module), f"fmt changed the meaning of:\n{text}"
    try:
        compile_source(text, "f.ft", PROJECT)
    except FtError as exc:
        _render(exc, text)


def _render(exc: FtError, text: str) -> None:
    assert exc.diagnostics, "an FtError without diagnostics"
    out = render_all(exc.diagnostics, {"f.ft": text, **exc.sources})
    assert "error" in out
    to_json(exc.diagnostics)


@FUZZ
@given(program)
def test_generated_programs_give_only_diagnostics(text: str) -> None:
    check_text(text)


# ---- generated pipelines: mostly well-formed, so the later passes run -------------------------

SQLS = ["SELECT prompt, completion FROM {t}", "SELECT * FROM {t}", "SELECT text FROM {t}",
        "SELECT prompt, completion AS answer FROM {t} WHERE length(prompt) > 1",
        "SELECT DISTINCT ON (prompt) * FROM {t}", "SELECT x FROM {t}", "SELECT * FROM {t} JOIN {t} USING (prompt)",
        "SELECT * EXCLUDE (prompt) FROM {t}", "SELECT a FROM", "WITH w AS (SELECT * FROM {t}) SELECT * FROM w"]


@st.composite
def pipeline(draw: st.DrawFn) -> str:
    n = draw(st.integers(1, 7))
    kinds = draw(st.lists(st.sampled_from(["dataset", "curate", "model", "train", "train", "eval",
                                           "export", "template", "preset"]), min_size=n, max_size=n))
    names = [f"{k[0]}{i}" for i, k in enumerate(kinds)]
    # A valid base the generated blocks mostly build on.
    base = ['dataset base_d { source = jsonl("data/tasks.jsonl") }',
            'curate base_c {\n  sql "SELECT prompt, completion FROM base_d"\n'
            '  split { train = 0.5, heldout = 0.5, by = prompt }\n}',
            "model base_m { init = tiny(data = base_d) }"]
    names += ["base_d", "base_c", "base_m"]
    kinds += ["dataset", "curate", "model"]
    produces = {"dataset": "data", "curate": "data", "model": "model", "train": "model", "export": "model",
                "template": "template", "eval": "", "preset": ""}
    anything = st.sampled_from(names + ["nope"])

    def of(kind: str) -> st.SearchStrategy[str]:
        # Mostly a block of the right kind, so that the later passes get to run.
        right = [nm for nm, k in zip(names, kinds) if produces[k] == kind]
        return st.sampled_from(right * 30 + names + ["nope"]) if right else anything

    pick = anything
    data, model, template = of("data"), of("model"), of("template")
    sweep = st.one_of(st.just("sweep [1e-4, 2e-4]"), st.just("sweep [1e-4, 2e-4, 5e-4]"),
                      st.lists(st.sampled_from(["1e-4", "2e-4", "0", "x"]), max_size=3).map(
                          lambda xs: "sweep [" + ", ".join(xs) + "]"))
    out = ["ft 0.1", "use stdlib.methods { dora, rslora }", *base]
    for kind, name in zip(kinds[:n], names[:n]):
        lines: list[str] = []
        opt = lambda p=0.5: draw(st.booleans()) if p == 0.5 else draw(st.floats(0, 1)) < p  # noqa: E731
        if kind == "dataset":
            lines.append(f'source = jsonl("data/{draw(st.sampled_from(["tasks"] * 4 + ["corpus"] * 4 + ["nope"]))}.jsonl")')
            if opt():
                lines.append("schema { " + draw(st.sampled_from(["prompt: str", "text: str", "x: int"])) + " }")
        elif kind == "curate":
            t = draw(data)
            if opt():
                lines.append(f"from = {t}")
            lines.append(f'sql "{draw(st.sampled_from(SQLS)).format(t=t)}"')
            if opt():
                lines.append(f"split {{ train = 0.5, heldout = 0.5, by = {draw(st.sampled_from(['prompt', 'x']))} }}")
        elif kind == "model":
            lines.append(draw(st.sampled_from([f"init = tiny(data = {draw(data)})",
                                               'hub = "org/x", revision = "abc"', 'path = "data"'])))
        elif kind == "train":
            lines += [f"from = {draw(model)}",
                      f"data = {draw(st.one_of(st.just('base_c.train'), data, st.just('base_c.train')))}"]
            if opt():
                lines.append(f"lr = {draw(sweep) if opt() else '1e-4'}")
            if opt():
                lines.append("method = " + draw(st.sampled_from(
                    ["lora(r = sweep [4, 8])", "dora(r = 8)", "rslora()", "full", "mine(r = 2)",
                     "dora(r = sweep [2, 4], alpha = sweep [1, 2])", "lora(r = 0)"])))
            if opt(0.2):
                lines.append(f"objective = {draw(st.sampled_from(['sft', 'clm']))}")
            if opt(0.3):
                lines.append(f"select = {draw(st.sampled_from(['min', 'max']))} "
                             f"{draw(st.sampled_from(['loss', 'loss', 'bleu', 'exact_match']))} on "
                             f"{draw(st.sampled_from(['base_c'] * 4 + names))}.heldout")
            if opt(0.3):
                lines.append(f"template = {draw(template)}")
        elif kind == "eval":
            lines.append(f"models = [{', '.join(draw(st.lists(model, max_size=3)))}]")
            lines.append(f"data = {draw(st.one_of(st.just('base_c.heldout'), data))}")
            if opt():
                lines.append(f"assert {draw(model)}.loss <= {draw(pick)}.loss")
        elif kind == "export":
            lines += [f"model = {draw(model)}", 'to = "out/x"']
        elif kind == "template":
            out.append(f'template {name} = {draw(st.sampled_from(["chatml()", "plain()", "mine()", "tpl()"]))}')
            continue
        else:
            out.append(draw(st.sampled_from([
                "method mine(r: int = 4, alpha: int = 2 * r) = lora(r = r, alpha = alpha)",
                'template tpl(system: str = "x") = chatml(system = system)',
                "method mine(r: int) = dora(r = r, alpha = r - 1)"])))
            continue
        out.append(f"{kind} {name} {{\n  " + "\n  ".join(lines) + "\n}")
    return "\n".join(out) + "\n"


@FUZZ
@given(pipeline())
def test_generated_pipelines_give_only_diagnostics(text: str) -> None:
    check_text(text)


@st.composite
def swept_pipeline(draw: st.DrawFn) -> str:
    """Valid pipelines full of sweeps, selections and fan-out: the expansion pass must hold."""
    out = ["ft 0.1", "use stdlib.methods { dora }",
           'dataset d { source = jsonl("data/tasks.jsonl") }',
           'curate c {\n  sql "SELECT prompt, completion FROM d"\n  split { train = 0.5, heldout = 0.5, by = prompt }\n}',
           "model m { init = tiny(data = d, seed = " + draw(st.sampled_from(["0", "sweep [0, 1]"])) + ") }"]
    models = ["m"]
    for i in range(draw(st.integers(1, 4))):
        attrs = [f"from = {draw(st.sampled_from(models))}", "data = c.train"]
        for a in draw(st.lists(st.sampled_from(["lr", "epochs", "seed", "method", "dora"]), max_size=3, unique=True)):
            attrs.append({"lr": "lr = sweep [1e-4, 2e-4]", "epochs": "epochs = sweep [1, 2, 3]",
                          "seed": "seed = sweep [1, 2]", "method": "method = lora(r = sweep [4, 8])",
                          "dora": "method = dora(r = sweep [2, 4])"}[a])
        if draw(st.booleans()):
            attrs.append("select = min loss on c.heldout")
        out.append(f"train t{i} {{\n  " + "\n  ".join(dict.fromkeys(
            a for a in attrs if not (a.startswith("method") and any(b.startswith("method") for b in attrs[:attrs.index(a)]))))
            + "\n}")
        models.append(f"t{i}")
    for j in range(draw(st.integers(0, 2))):
        chosen = draw(st.lists(st.sampled_from(models), min_size=1, max_size=3, unique=True))
        out.append(f"eval e{j} {{\n  models = [{', '.join(chosen)}]\n  data = c.heldout\n"
                   + (f"  assert {chosen[0]}.loss < 10\n" if draw(st.booleans()) else "") + "}")
    if draw(st.booleans()):
        out.append(f'export x {{\n  model = {draw(st.sampled_from(models))}\n  to = "out/x"\n}}')
    return "\n".join(out) + "\n"


@FUZZ
@given(swept_pipeline())
def test_swept_pipelines_expand_consistently(text: str) -> None:
    try:
        program = compile_source(text, "f.ft", PROJECT)
    except FtError as exc:
        assert {d.code for d in exc.diagnostics if d.level == "error"} <= {"FT0118", "FT0121"}, exc.diagnostics
        return
    for nid, node in program.nodes.items():
        assert "/" not in nid and nid.split("[", 1)[0] == node.block
        assert set(program.graph.predecessors(nid)) == {r.node for r in node.refs()}
        assert all(r.node in program.nodes for r in node.refs())
    assert format_source(text) == format_source(format_source(text))


# ---- mutated real files -----------------------------------------------------------------

CORPUS = [p.read_text() for p in sorted([*(FIXTURES / "ok").glob("*.ft"), *(FIXTURES / "err").glob("*.ft"),
                                         *(FIXTURES / "fmt").glob("*.ft"),
                                         *example_files(), *(ROOT / "stdlib").glob("*.ft")])]
SNIPPETS = ["{", "}", "(", ")", "[", "]", "=", ":", ",", "\n", '"', '"""', "#", "${", "'", "-", ".",
            "sweep", "min", "on", "sql", "assert", "use", "ft", "true", "1e-4", "x", "\t", "\r\n",
            "\\", "é", "\x00", "0.", "..", "= =", "yes", "model", "train", "env(", "lora("]


@st.composite
def mutated(draw: st.DrawFn) -> str:
    text = draw(st.sampled_from(CORPUS))
    for _ in range(draw(st.integers(1, 4))):
        if not text:
            break
        i = draw(st.integers(0, len(text)))
        op = draw(st.sampled_from(["insert", "delete", "replace", "dupline", "dropline"]))
        if op == "insert":
            text = text[:i] + draw(st.sampled_from(SNIPPETS)) + text[i:]
        elif op == "delete":
            text = text[:i] + text[i + draw(st.integers(1, 12)):]
        elif op == "replace":
            text = text[:i] + draw(st.sampled_from(SNIPPETS)) + text[i + 1:]
        else:
            lines = text.split("\n")
            k = draw(st.integers(0, max(0, len(lines) - 1)))
            if op == "dupline":
                lines.insert(k, lines[k])
            else:
                del lines[k]
            text = "\n".join(lines)
    return text


@FUZZ
@given(mutated())
def test_mutated_files_give_only_diagnostics(text: str) -> None:
    check_text(text)


@settings(FUZZ, max_examples=SCALE or 800)
@given(st.lists(st.sampled_from(SNIPPETS + list("abcxyz_09 ")), max_size=40).map("".join))
def test_token_soup_gives_only_diagnostics(text: str) -> None:
    check_text(text)


@settings(FUZZ, max_examples=SCALE or 300)
@given(st.text(max_size=40))
def test_arbitrary_unicode_gives_only_diagnostics(text: str) -> None:
    check_text(text)


def test_every_corpus_file_survives() -> None:
    for text in CORPUS:
        check_text(text)
