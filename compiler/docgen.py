"""Generates docs/language.md from the step signatures and docs/errors.md from the
diagnostic codes and the error fixtures, so neither can drift from the code.

    python -m ftlang.compiler.docgen > docs/language.md
    python -m ftlang.compiler.docgen errors > docs/errors.md

tests/test_docs.py fails when a committed file differs from what this prints.
"""

from __future__ import annotations

import sys
from pathlib import Path

from ftlang.stdlib.spec import Attr, Signature, StepSpec

LANGUAGE_CMD = "python -m ftlang.compiler.docgen > docs/language.md"
ERRORS_CMD = "python -m ftlang.compiler.docgen errors > docs/errors.md"
REPO = Path(__file__).resolve().parent.parent

SYNTAX = '''\
## The file

```
ft 0.1                                   # the language version, first

use stdlib.methods { dora }              # presets from a stdlib .ft file
use "./shared.ft" { clean, chat }        # blocks and presets from a local file

dataset chats {                          # kind name { attributes }
  source = jsonl("data/chats.jsonl")
  schema { prompt: str, completion: str }  # `:` only ever means "has type"
}

template chat = chatml(system = "Be brief.")   # a one-line definition

method small(r: int = 8, alpha: int = 2 * r) = lora(r = r, alpha = alpha)  # a preset

train sft {
  from   = base
  data   = chats
  method = small(r = 16)
  lr     = sweep [1e-4, 2e-4]            # one node per value: train.sft[lr=1e-4], ...
  select = min loss on held              # later blocks use the winner
}
```

- **Attributes** are `name = value`, each at most once per block. Statements end at the
  end of the line; inside `( )` and `[ ]` new lines are free; `,` separates statements
  written on one line.
- **Values**: strings in double quotes (`"..."`, or `"""..."""` over several lines),
  numbers (`16`, `0.05`, `1e-4`), `true`/`false`, lists `[a, b]`, calls `lora(r = 16)`,
  arithmetic (`2 * r`, `base.loss - 0.01`) and references: a bare name (`base`) or a
  part (`clean.train`). Paths and hub ids are strings: `"org/name"`.
- **References** make the edges of the graph; block order is free. Block names are
  shared by all kinds.
- **`env("NAME", default)`** reads an environment variable when the file is compiled.
  A variable whose name looks like a credential (TOKEN, SECRET, KEY, PASSWORD, AUTH),
  or `env("NAME", secret = true)`, is a secret: its value reaches the step but never a
  cache key, a log or the ledger. A missing variable without a default is an error.
- **Sweeps**: `attr = sweep [a, b]`, or a swept call argument `lora(r = sweep [8, 16])`.
  Several sweeps in a block make their cartesian product; a block that refers to a
  swept block fans out too (`train.dpo[sft.lr=1e-4]`), except from a list of models
  (`eval models = [base, sft]`), which takes every point.
- **Select**: `select = min <metric> on <dataset>` in a swept train block adds a
  `select.<name>` step that measures each point (`loss`, `perplexity`: lower wins;
  `exact_match`: higher wins) and keeps the winner; other references mean the winner.
- **Presets** are typed pure functions written in `.ft`:
  `<family> name(param: type = default, ...) = call(...)`, with the family one of
  source, method, init, metric, template. A default may use the parameters before it.
  Parameter types: int, float, str, bool, path, ident, dataset, model, template, list[T].
- **Block presets** are the same with a block body: `<kind> name(params) { body }`, used
  as `<kind> x = name(arguments)`, which is the body with the arguments in place of the
  parameters (a parameter also replaces the head of `param.field`, as in asserts), e.g.
  `eval gate = forgetting(base = base, tuned = sft, data = general, template = chat)`
  from `stdlib.evals`. An error inside the body also points at the call.
- **`ft fmt`** rewrites a file in the one canonical layout (two-space indent, aligned
  `=` in runs of one-line attributes, one blank line around blocks, comments kept,
  numbers and strings as written); `ft fmt --check` only reports. It writes a file only
  when the new text parses to the same program with the same comments (else it says so
  and leaves the file as it is), and all at once: an interrupted `ft fmt` leaves the old
  file or the new one. A link stays a link and the file keeps its permissions.
'''


def _default(a: Attr) -> str:
    if a.required:
        return "**required**"
    if a.default is None:
        return "—"
    if isinstance(a.default, bool):
        return f"`{'true' if a.default else 'false'}`"
    if isinstance(a.default, str) and a.type in ("str", "path", "outpath", "any"):
        return "`" + repr(a.default).replace("'", '"').replace("|", "\\|") + "`"
    if isinstance(a.default, list):
        return "`[" + ", ".join(str(x) for x in a.default) + "]`"
    return f"`{a.default}`"


def _type(a: Attr) -> str:
    t = a.type
    if t == "enum" and a.choices:
        return " \\| ".join(f"`{c}`" for c in a.choices)
    if t.startswith("call[") or t.startswith("list[call["):
        return f"`{t}`"
    return f"`{t}`"


def _range(a: Attr) -> str:
    parts = []
    if a.gt is not None:
        parts.append(f"> {a.gt:g}")
    if a.ge is not None:
        parts.append(f">= {a.ge:g}")
    if a.le is not None:
        parts.append(f"<= {a.le:g}")
    return " and ".join(parts)


def _attr_table(sig: Signature) -> list[str]:
    if not sig.attrs:
        return ["No attributes."]
    out = ["| attribute | type | default | description |", "|---|---|---|---|"]
    for a in sig.attrs:
        notes = [a.doc.replace("|", "\\|")] if a.doc else []
        if _range(a):
            notes.append(f"({_range(a)})")
        if a.unique:
            notes.append("*(each entry at most once)*")
        if not a.semantic:
            notes.append("*(not part of the cache key)*")
        if a.name in sig.positional:
            notes.append("*(may be given without its name)*")
        out.append(f"| `{a.name}` | {_type(a)} | {_default(a)} | {' '.join(notes)} |")
    return out


def _step(spec: StepSpec, implicit: bool = False) -> list[str]:
    out = [f"### `{spec.kind}`" + (" (added by the compiler)" if implicit else ""), ""]
    sig = spec.signature
    if sig.doc:
        out += [sig.doc, ""]
    out += [f"Produces: a {spec.output}."
            + (" Training step: keys include the training environment." if spec.trains else ""), ""]
    out += _attr_table(sig) + [""]
    for name, sub in spec.subblocks.items():
        out += [f"Sub-block `{name} {{ ... }}`: {sub.doc}", ""]
        if sub.attrs:
            out += _attr_table(sub) + [""]
    for st in spec.statements:
        text = {"sql": 'The `sql """..."""` statement: a DuckDB query; each input is a table named '
                       "after its block. The tables it reads become inputs when `from` is left out.",
                "assert": "`assert <expression>` lines compare `model.metric` values; a false one "
                          "fails the run after the step."}.get(st, f"The `{st}` statement.")
        out += [text, ""]
    return out


def _family(name: str, table: dict[str, Signature]) -> list[str]:
    out = [f"### {name[:-1] + 'ies' if name.endswith('y') else name + 's'}", ""]
    for sig in table.values():
        out += [f"#### `{sig.name}`", ""]
        if sig.doc:
            out += [sig.doc, ""]
        out += _attr_table(sig) + [""]
    return out


def _stdlib_ft() -> list[str]:
    """The presets and definitions shipped as stdlib/*.ft, as written."""
    from importlib import resources

    from ftlang.lang import ast
    from ftlang.lang.format import format_module
    from ftlang.lang.parser import parse

    out = ["## Shipped `.ft` modules", ""]
    files = sorted((r for r in resources.files("ftlang.stdlib").iterdir() if r.name.endswith(".ft")),
                   key=lambda r: r.name)
    for res in files:
        module = parse(res.read_text(encoding="utf-8"), res.name)
        names = [i.name.name for i in module.items if isinstance(i, ast.Block | ast.Definition | ast.Preset)]
        out += [f"### `stdlib.{res.name[:-3]}`", "", f"`use stdlib.{res.name[:-3]} {{ {', '.join(names)} }}`", ""]
        for item in module.items:
            if not isinstance(item, ast.Block | ast.Definition | ast.Preset):
                continue
            one = ast.Module(module.file, module.source, None, [item])
            one.comments = []  # the block alone, without the file's comments
            out += ["```", format_module(one).rstrip("\n"), "```", ""]
    return out


def language() -> str:
    from ftlang.stdlib import registry
    from ftlang.stdlib.select import SPEC as SELECT

    out = ["# The ftlang language", "",
           f"<!-- Generated by `{LANGUAGE_CMD}` from ftlang.stdlib.registry; do not edit. -->", "",
           SYNTAX, "## Block kinds", ""]
    for spec in registry.STEPS.values():
        out += _step(spec)
    out += _step(SELECT, implicit=True)
    out += ["## File-wide settings", "", "Blocks written without a name (compiler/settings.py); never part of "
            "any key.", "", "### `cache`", "", "```", 'cache { remote = "s3://team-bucket/ftlang" }', "```", "",
            "| attribute | type | meaning |", "| --- | --- | --- |",
            "| `remote` | `str` | the shared remote cache: a folder (relative to the file) or any fsspec URL; "
            "`--remote` and `FT_REMOTE` override it (docs/scale.md) |", ""]
    out += ["## Call families", "", "Values written `name(args)`, or a bare `name` when every argument has "
            "a default.", ""]
    for name, table in registry.CALLS.items():
        out += _family(name, table)
    out += _stdlib_ft()
    out += ["## Diagnostics", "", "Every error code, with an example, is in [errors.md](errors.md).", ""]
    return "\n".join(out).rstrip("\n") + "\n"


# ---- errors.md ------------------------------------------------------------------------

# Codes only a run can produce: their examples are written here.
RUNTIME_EXAMPLES: dict[str, tuple[str, str]] = {
    "FT0201": ('dataset tasks {\n  source = jsonl("data/tasks.jsonl")\n}\n',
               "error[FT0201]: step dataset.tasks failed: data/tasks.jsonl:2: invalid JSON: Expecting "
               "value (column 31)\n --> p.ft:2:1\n  |\n2 | dataset tasks {\n  | ^^^^^^^^^^^^^ this step\n"),
    "FT0202": ("eval report {\n  models = [base, sft]\n  data = clean.heldout\n"
               "  assert sft.loss <= base.loss\n}\n",
               "error[FT0202]: assertion failed: sft.loss <= base.loss\n --> p.ft:4:3\n  |\n"
               "4 |   assert sft.loss <= base.loss\n  |   ^^^^^^^^^^^^^^^^^^^^^^^^^^^^ 2.913 <= 2.871 is false\n"
               "  |\n  = help: the trained artifacts are kept in the cache; fix the data or the settings "
               "and run again\n"),
}

def _fixture_examples() -> dict[str, tuple[str, str, str]]:
    """code -> (fixture name, .ft text, rendered diagnostics), the shortest fixture whose
    first diagnostic has the code (else any fixture that shows it)."""
    err = REPO / "tests" / "fixtures" / "err"
    if not err.is_dir():
        raise SystemExit("docgen errors: run it from a checkout (it reads tests/fixtures/err)")
    first: dict[str, list[Path]] = {}
    anywhere: dict[str, list[Path]] = {}
    for ft in sorted(err.glob("*.ft")):
        out = ft.with_suffix(".err").read_text() if ft.with_suffix(".err").exists() else ""
        codes = [line.split("[", 1)[1][:6] for line in out.splitlines()
                 if line.startswith(("error[", "warning["))]
        if codes:
            first.setdefault(codes[0], []).append(ft)
        for c in codes:
            anywhere.setdefault(c, []).append(ft)
    result: dict[str, tuple[str, str, str]] = {}
    for code in set(first) | set(anywhere):
        pool = first.get(code) or anywhere[code]
        ft = min(pool, key=lambda p: (len(p.read_text()), p.name))
        result[code] = (ft.name, ft.read_text(), ft.with_suffix(".err").read_text())
    return result


def errors() -> str:
    from ftlang.lang.diagnostics import CODES

    examples = _fixture_examples()
    out = ["# ftlang error codes", "",
           f"<!-- Generated by `{ERRORS_CMD}` from ftlang.lang.diagnostics.CODES and "
           "tests/fixtures/err; do not edit. -->", "",
           "Every diagnostic has a code. `ft check --format json` gives the same information for "
           "editors and CI. Levels: `error` stops the run, `warning` does not, `note` and `help` "
           "lines explain.", "",
           "| code | title |", "|---|---|"]
    out += [f"| [{c}](#{c.lower()}) | {t.title.replace('|', chr(92) + '|')} |" for c, t in CODES.items()]
    out.append("")
    for code, info in CODES.items():
        out += [f"## {code}", "", f"**{info.title}.** {info.explain}".rstrip(), ""]
        if code in examples:
            name, text, rendered = examples[code]
            out += [f"Example (`tests/fixtures/err/{name}`):", "", "```", text.rstrip("\n"), "```", "",
                    "```", rendered.rstrip("\n"), "```", ""]
        elif code in RUNTIME_EXAMPLES:
            text, rendered = RUNTIME_EXAMPLES[code]
            out += ["Example (reported by `ft run`):", "", "```", text.rstrip("\n"), "```", "",
                    "```", rendered.rstrip("\n"), "```", ""]
    return "\n".join(out).rstrip("\n") + "\n"


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    what = args[0] if args else "language"
    if what not in ("language", "errors"):
        print("usage: python -m ftlang.compiler.docgen [language|errors]", file=sys.stderr)
        return 2
    sys.stdout.write(language() if what == "language" else errors())
    return 0


if __name__ == "__main__":
    sys.exit(main())
