"""docs/language.md and docs/errors.md are generated; a stale or incomplete file fails here.

Regenerate with:
    python -m ftlang.compiler.docgen > docs/language.md
    python -m ftlang.compiler.docgen errors > docs/errors.md
"""

from __future__ import annotations

import re

from conftest import ROOT
from ftlang.compiler import docgen
from ftlang.lang.diagnostics import CODES
from ftlang.stdlib import registry


def test_language_md_is_current() -> None:
    committed = (ROOT / "docs" / "language.md").read_text()
    assert committed == docgen.language(), f"docs/language.md is stale: run `{docgen.LANGUAGE_CMD}`"


def test_errors_md_is_current() -> None:
    committed = (ROOT / "docs" / "errors.md").read_text()
    assert committed == docgen.errors(), f"docs/errors.md is stale: run `{docgen.ERRORS_CMD}`"


def test_every_code_is_documented_with_an_example() -> None:
    text = (ROOT / "docs" / "errors.md").read_text()
    sections = dict(re.findall(r"^## (FT\d{4})\n(.*?)(?=^## |\Z)", text, re.S | re.M))
    for code in CODES:
        assert code in sections, f"{code} is not in docs/errors.md"
        assert "Example" in sections[code] and f"[{code}]" in sections[code], f"{code} has no example"
        assert CODES[code].explain, f"{code} has no explanation in lang.diagnostics.CODES"


def test_every_code_in_use_is_declared() -> None:
    """A code raised anywhere in lang/ or compiler/ must be in CODES (and so documented)."""
    used = set()
    for folder in ("lang", "compiler"):
        for path in (ROOT / folder).glob("*.py"):
            used |= set(re.findall(r'"(FT\d{4})"', path.read_text()))
    assert used <= set(CODES), sorted(used - set(CODES))


def test_language_md_covers_every_block_and_attribute() -> None:
    text = (ROOT / "docs" / "language.md").read_text()
    for kind, spec in registry.STEPS.items():
        assert f"### `{kind}`" in text
        for attr in spec.signature.attrs:
            assert f"| `{attr.name}` |" in text
    for table in registry.CALLS.values():
        for name in table:
            assert f"#### `{name}`" in text
    assert "stdlib.methods" in text and "method dora(" in text


def test_every_module_is_named_in_its_package_readme() -> None:
    root = ROOT
    missing = []
    for pkg in ("lang", "compiler", "runtime", "stdlib"):
        readme = (root / pkg / "README.md").read_text()
        missing += [f"{pkg}/{m.name}" for m in sorted((root / pkg).glob("*.py"))
                    if m.name != "__init__.py" and not re.search(rf"`{m.stem}(\.py)?[`.]", readme)]
    assert not missing, f"not in their package README: {missing}"


def test_the_readme_pipeline_compiles_as_printed(tmp_path) -> None:
    """The short pipeline in README.md is checked as written (a full run of it: 1m52s here,
    exact match 0.019 vs 0 for the base, so its assert holds)."""
    import shutil

    from ftlang.compiler import compile_source

    text = re.search(r"## A pipeline\n\n```\n(.*?)```", (ROOT / "README.md").read_text(), re.S).group(1)
    (tmp_path / "data").mkdir()
    shutil.copy(ROOT / "examples" / "data" / "tasks.jsonl", tmp_path / "data" / "tasks.jsonl")
    program = compile_source(text, "p.ft", tmp_path)
    assert set(program.nodes) == {"dataset.tasks", "curate.clean", "template.qa", "model.base", "train.sft",
                                  "eval.report", "export.release"}
