"""YAML habits and near-misses, each with its targeted diagnostic (issue 3, part 3)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from conftest import FIXTURES
from ftlang.compiler import compile_source
from ftlang.lang.diagnostics import FtError

HEAD = '''ft 0.1
dataset corpus { source = jsonl("data/corpus.jsonl") }
model base { init = tiny(data = corpus) }
'''


@pytest.fixture
def project(tmp_path: Path) -> Path:
    shutil.copytree(FIXTURES / "ok" / "data", tmp_path / "data")
    return tmp_path


def first(project: Path, body: str) -> tuple[str, str, str | None]:
    with pytest.raises(FtError) as info:
        compile_source(HEAD + body, "p.ft", project)
    d = info.value.diagnostics[0]
    return d.code, d.message, d.help


@pytest.mark.parametrize("word, fixed", [("yes", "true"), ("no", "false"), ("on", "true"), ("off", "false"),
                                         ("True", "true"), ("FALSE", "false")])
def test_yaml_booleans(project: Path, word: str, fixed: str) -> None:
    code, message, help_ = first(project, f'export e {{\n  model = base\n  merge = {word}\n  to = "out/x"\n}}\n')
    assert code in ("FT0116", "FT0001"), message
    if code == "FT0116":
        assert help_ == f"write `{fixed}`: only true and false are booleans"


@pytest.mark.parametrize("body, code, help_part", [
    ("train t {\n  lr: 2e-4\n}\n", "FT0005", "write `lr = 2e-4`"),
    ('model m {\n  hub = Qwen/Qwen2.5-0.5B\n  revision = "4e20de3"\n}\n', "FT0116", 'write `hub = "Qwen/Qwen2.5-0.5B"`'),
    ('model m {\n  hub = meta-llama/Llama-3.2-1B\n  revision = "4e20de3"\n}\n', "FT0116", "meta-llama/Llama-3.2-1B"),
    ("train t {\n  data = ${DATA}\n}\n", "FT0007", 'env("DATA")'),
    ('model m {\n  hub = "${HUB}/x"\n  revision = "4e20de3"\n}\n', "FT0007", 'env("HUB")'),
    ("train t {\n  lr =\n}\n", "FT0006", "write a value"),
    ("train t {\n  from = base\n  from = base\n}\n", "FT0108", "keep one"),
    ("train t {\n  lr = \"2e-4\"\n}\n", "FT0106", "without quotes"),
    ('train t {\n  from = "base"\n  data = corpus\n}\n', "FT0106", "references are bare names"),
    ("train t {\n  from = base\n  data = corpus\n  template = chatml()\n}\n", "FT0106", "template chat"),
    ("train t {\n  from = corpus\n  data = corpus\n}\n", "FT0109", None),
    ("train t {\n  from = base\n  data = corpus\n  method = \"lora\"\n}\n", "FT0106", "without quotes"),
    ("train t {\n  from = base\n  data = corpus\n  objective = clm\n  epoch = 2\n}\n", "FT0104", "did you mean `epochs`?"),
    ("trian t {\n  from = base\n}\n", "FT0101", "did you mean `train`?"),
    ("train t {\n  lr = 1e-4;\n}\n", "FT0003", "no `;` is needed"),
    ("model m {\n  hub = 'x/y'\n}\n", "FT0009", 'write "..."'),
])
def test_habits(project: Path, body: str, code: str, help_part: str | None) -> None:
    with pytest.raises(FtError) as info:
        compile_source(HEAD + body, "p.ft", project)
    found = [d for d in info.value.diagnostics if d.code == code]
    assert found, [d.message for d in info.value.diagnostics]
    help_ = found[0].help
    if help_part is not None:
        assert help_ is not None and help_part in help_, help_


def test_duplicate_block_names_show_both_places(project: Path) -> None:
    with pytest.raises(FtError) as info:
        compile_source(HEAD + 'model base { hub = "a/b", revision = "4e20de3" }\n', "p.ft", project)
    (d,) = info.value.diagnostics
    assert d.code == "FT0103" and [lb.span.line for lb in d.labels] == [4, 3]


def test_all_errors_are_reported_together(project: Path) -> None:
    with pytest.raises(FtError) as info:
        compile_source(HEAD + "train t {\n  from = bsae\n  data = corpus\n  lr = -1\n  epochz = 2\n}\n"
                       "eval e {\n  models = [t]\n  data = corpus\n}\n", "p.ft", project)
    codes = [d.code for d in info.value.diagnostics]
    assert codes[:3] == ["FT0102", "FT0107", "FT0104"] and "FT0125" in codes
