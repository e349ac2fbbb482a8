"""`ft lsp`: a real LSP client (pygls's) drives the real server over stdio in a subprocess."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Any

import pytest
from conftest import ROOT, run_ft

lsp = pytest.importorskip("lsprotocol.types")
client_mod = pytest.importorskip("pygls.lsp.client")

LIB = 'ft 0.1\n\ndataset shared {\n  source = jsonl("data/tasks.jsonl")\n}\n'
BROKEN = """ft 0.1
use "./lib.ft" { shared }

model base {
  init = tiny(hidden = 64, layers = 2, heads = 4, data = shared)
}

train sft {
  from   = bse
  data   = shared
  method = lora(r = 8)
  lr     = 3e-3
}
"""
FIXED = BROKEN.replace("= bse", "= base")
# The server process: `ft lsp` itself (cli.main), recording at exit which modules it loaded.
SERVER = ("import atexit, sys\n"
          "atexit.register(lambda: open(sys.argv[1], 'w').write('\\n'.join(sorted(sys.modules))))\n"
          "from ftlang.runtime.cli import main\n"
          "sys.exit(main(['lsp']))\n")


def _pos(text: str, needle: str, delta: int = 0) -> Any:
    """The LSP position of `needle`'s first character (plus delta) in text."""
    i = text.index(needle) + delta
    line = text.count("\n", 0, i)
    return lsp.Position(line, i - (text.rfind("\n", 0, i) + 1))


async def _session(project: Path, modules: Path) -> dict[str, Any]:
    client = client_mod.LanguageClient("ft-test", "1")
    published: asyncio.Queue[Any] = asyncio.Queue()

    @client.feature(lsp.TEXT_DOCUMENT_PUBLISH_DIAGNOSTICS)
    def on_diagnostics(params: Any) -> None:
        published.put_nowait(params)

    await client.start_io(sys.executable, "-c", SERVER, str(modules), cwd=str(project))
    out: dict[str, Any] = {}
    uri = (project / "p.ft").as_uri()
    out["init"] = await asyncio.wait_for(client.initialize_async(lsp.InitializeParams(
        capabilities=lsp.ClientCapabilities(), root_uri=project.as_uri())), 60)
    client.initialized(lsp.InitializedParams())
    client.text_document_did_open(lsp.DidOpenTextDocumentParams(
        lsp.TextDocumentItem(uri, "ftlang", 1, BROKEN)))
    out["open"] = await asyncio.wait_for(published.get(), 60)
    client.text_document_did_change(lsp.DidChangeTextDocumentParams(
        lsp.VersionedTextDocumentIdentifier(version=2, uri=uri), [lsp.TextDocumentContentChangeWholeDocument(FIXED)]))
    out["change"] = await asyncio.wait_for(published.get(), 60)
    doc = lsp.TextDocumentIdentifier(uri)

    def ask(method: Any, pos: Any) -> Any:
        return asyncio.wait_for(method(pos), 60)

    # An attribute position: the start of the (indented) `lr` line of the train block.
    out["attrs"] = await ask(client.text_document_completion_async,
                             lsp.CompletionParams(doc, _pos(FIXED, "  lr", 2)))
    out["args"] = await ask(client.text_document_completion_async,
                            lsp.CompletionParams(doc, _pos(FIXED, "r = 8")))
    out["refs"] = await ask(client.text_document_completion_async,
                            lsp.CompletionParams(doc, _pos(FIXED, "base\n  data", 0)))
    out["hover"] = await ask(client.text_document_hover_async, lsp.HoverParams(doc, _pos(FIXED, "lr ")))
    out["hover_arg"] = await ask(client.text_document_hover_async, lsp.HoverParams(doc, _pos(FIXED, "r = 8")))
    out["def_local"] = await ask(client.text_document_definition_async,
                                 lsp.DefinitionParams(doc, _pos(FIXED, "= base", 3)))
    out["def_import"] = await ask(client.text_document_definition_async,
                                  lsp.DefinitionParams(doc, _pos(FIXED, "= shared", 3)))
    await asyncio.wait_for(client.shutdown_async(None), 60)
    client.exit(None)
    await asyncio.wait_for(client.stop(), 60)
    return out


@pytest.fixture(scope="module")
def session(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], Path]:
    project = tmp_path_factory.mktemp("lsp")
    (project / "data").mkdir()
    (project / "data" / "tasks.jsonl").write_text((ROOT / "examples" / "data" / "tasks.jsonl").read_text())
    (project / "lib.ft").write_text(LIB)
    (project / "p.ft").write_text(BROKEN)  # for `ft check`, to compare with
    modules = project / "modules.txt"
    return asyncio.run(_session(project, modules)), project


def test_initialize_announces_the_features(session: tuple[dict[str, Any], Path]) -> None:
    caps = session[0]["init"].capabilities
    assert caps.completion_provider is not None and caps.hover_provider and caps.definition_provider
    assert session[0]["init"].server_info.name == "ftlang"


def test_diagnostics_are_ft_checks(session: tuple[dict[str, Any], Path]) -> None:
    """didOpen of a broken file publishes the code and span `ft check --format json` reports."""
    out, project = session
    opened = out["open"].diagnostics
    check = run_ft("check", "p.ft", "--format", "json", cwd=project)
    assert check.returncode == 2
    expected = json.loads(check.stdout)
    assert [d.code for d in opened] == [d["code"] for d in expected] and "FT0102" in [d.code for d in opened]
    for got, want in zip(opened, expected):
        lb = want["labels"][0]
        assert (got.range.start.line, got.range.start.character) == (lb["line"] - 1, lb["col"] - 1)
        assert (got.range.end.line, got.range.end.character) == (lb["end_line"] - 1, lb["end_col"] - 1)
        assert got.message.startswith(want["message"])
    bse = next(d for d in opened if d.code == "FT0102")
    assert bse.severity == lsp.DiagnosticSeverity.Error and "did you mean `base`" in bse.message


def test_fixing_the_error_clears_it(session: tuple[dict[str, Any], Path]) -> None:
    """didChange with the fix: no error left (the FT0320 warning of a tiny base remains)."""
    left = session[0]["change"]
    assert left.version == 2
    assert [d.code for d in left.diagnostics] == ["FT0320"]
    assert all(d.severity == lsp.DiagnosticSeverity.Warning for d in left.diagnostics)


def test_completion_lists_the_declared_attributes(session: tuple[dict[str, Any], Path]) -> None:
    from ftlang.stdlib import registry

    labels = [i.label for i in session[0]["attrs"].items]
    assert labels[:len(registry.STEPS["train"].signature.attrs)] == registry.STEPS["train"].signature.names
    args = [i.label for i in session[0]["args"].items]
    assert args == registry.METHODS["lora"].names


def test_completion_of_references_by_kind(session: tuple[dict[str, Any], Path]) -> None:
    """`from = ` offers the blocks that produce a model, not datasets, and never the block itself."""
    labels = {i.label for i in session[0]["refs"].items}
    assert labels == {"base"}


def test_hover_shows_the_declared_doc_and_default(session: tuple[dict[str, Any], Path]) -> None:
    from ftlang.stdlib import registry

    lr = registry.STEPS["train"].signature.attr("lr")
    assert lr is not None and lr.doc in session[0]["hover"].contents.value
    r = registry.METHODS["lora"].attr("r")
    assert r is not None and r.doc in session[0]["hover_arg"].contents.value
    assert f"default `{r.default}`" in session[0]["hover_arg"].contents.value


def test_definition_jumps_to_the_block(session: tuple[dict[str, Any], Path]) -> None:
    out, project = session
    local = out["def_local"]
    assert local.uri == (project / "p.ft").as_uri()
    assert (local.range.start.line, local.range.start.character) == (3, 6)  # `base` in `model base {`
    imported = out["def_import"]
    assert imported.uri == (project / "lib.ft").resolve().as_uri()
    assert (imported.range.start.line, imported.range.start.character) == (2, 8)  # `shared` in lib.ft


def test_the_server_never_imports_torch(session: tuple[dict[str, Any], Path]) -> None:
    loaded = (session[1] / "modules.txt").read_text().split("\n")
    assert "ftlang.compiler.check" in loaded and "pygls" in loaded  # it did compile, as the server
    assert not {"torch", "peft", "trl", "transformers"} & set(loaded)


def test_context_survives_a_file_that_does_not_parse(tmp_path: Path) -> None:
    """Mid-typing, the buffer does not parse: completion still knows the block and call."""
    from ftlang.runtime.lsp_features import Document, check, complete

    (tmp_path / "lib.ft").write_text(LIB)
    doc = Document(tmp_path / "p.ft", FIXED)
    check(doc)  # the last good symbols
    doc.text = FIXED.replace("  lr     = 3e-3\n", "  lr     = 3e-3\n  method = lora(dropout = 0.1, \n")
    assert [d.code for d in check(doc)] == ["FT0001"]  # as the server does on didChange
    at = _pos(doc.text, "lora(dropout = 0.1, ", len("lora(dropout = 0.1, "))
    labels = [i.label for i in complete(doc, at.line, at.character)]
    assert "alpha" in labels and "from" not in labels
    at = _pos(doc.text, "data   = shared", len("data   = "))
    assert {i.label for i in complete(doc, at.line, at.character)} == {"shared"}  # from the last good parse


def test_the_vscode_extension_starts_ft_lsp() -> None:
    """editors/package.json names the client, which starts `ft lsp` over stdio."""
    import shutil
    import subprocess

    manifest = json.loads((ROOT / "editors" / "package.json").read_text())
    main = ROOT / "editors" / manifest["main"]
    assert main.is_file() and "onLanguage:ftlang" in manifest["activationEvents"]
    assert "vscode-languageclient" in manifest["dependencies"]
    assert manifest["contributes"]["configuration"]["properties"]["ftlang.server.args"]["default"] == ["lsp"]
    source = main.read_text()
    assert "TransportKind.stdio" in source and 'language: "ftlang"' in source
    if shutil.which("node"):
        check = subprocess.run(["node", "--check", str(main)], capture_output=True, text=True, timeout=60)
        assert check.returncode == 0, check.stderr


def _doc(tmp_path: Path, text: str) -> Any:
    from ftlang.runtime.lsp_features import Document, check

    (tmp_path / "data").mkdir(exist_ok=True)
    (tmp_path / "data" / "tasks.jsonl").write_text((ROOT / "examples" / "data" / "tasks.jsonl").read_text())
    (tmp_path / "lib.ft").write_text(LIB)
    doc = Document(tmp_path / "p.ft", text)
    return doc, check(doc)


def test_values_block_kinds_and_hover_of_a_kind(tmp_path: Path) -> None:
    """Values come from the declarations: enum choices, booleans, a family's calls and its
    presets from stdlib .ft modules; block kinds at the top level."""
    from ftlang.runtime.lsp_features import complete, hover
    from ftlang.stdlib import registry

    good = "ft 0.1\nuse stdlib.methods { dora }\n" + FIXED.split("\n", 2)[2]
    doc, _ = _doc(tmp_path, good)  # what parsed last: the symbols, `dora` among them
    text = doc.text = good.replace("  lr     = 3e-3\n", "  lr     = 3e-3\n  objective = \n  packing = \n  method = \n")

    def labels(needle: str) -> list[str]:
        at = _pos(text, needle, len(needle.rstrip("\n")))
        return [i.label for i in complete(doc, at.line, at.character)]

    assert labels("objective = ") == list(registry.STEPS["train"].signature.attr("objective").choices)
    assert labels("packing = ") == ["true", "false"]
    methods = labels("  method = \n")
    assert set(registry.METHODS) <= set(methods) and "dora" in methods  # the imported preset
    top = [i.label for i in complete(doc, 1, 0)]
    assert set(registry.STEPS) <= set(top)
    h = hover(doc, *_at(text, "train sft"))
    assert h is not None and registry.STEPS["train"].signature.doc in h.contents.value
    from ftlang.runtime.lsp_features import definition

    where = definition(doc, *_at(text, "dora }"))  # into the stdlib module that defines it
    assert where is not None and where.uri == (ROOT / "stdlib" / "methods.ft").resolve().as_uri()
    line = (ROOT / "stdlib" / "methods.ft").read_text().split("\n")[where.range.start.line]
    assert line.startswith("method dora(")


def _at(text: str, needle: str) -> tuple[int, int]:
    p = _pos(text, needle)
    return p.line, p.character


def test_an_error_in_an_imported_file_shows_on_its_use_line(tmp_path: Path) -> None:
    doc, _ = _doc(tmp_path, FIXED)
    (tmp_path / "lib.ft").write_text(LIB.replace("source", "sorce"))
    from ftlang.runtime.lsp_features import check

    found = check(doc)
    bad = [d for d in found if d.code == "FT0104"]
    assert bad and bad[0].message.startswith("lib.ft:4:3: ") and bad[0].range.start.line == 1  # `use` line


def test_ranges_count_utf16_units_as_lsp_does(tmp_path: Path) -> None:
    """A column after an astral character (two UTF-16 units) moves by two, not one."""
    from ftlang.lang.ast import Span
    from ftlang.runtime.lsp_features import span_range

    line = 'x = "\U0001F600" + bse'
    r = span_range(Span("p.ft", 1, line.index("bse") + 1, 1, line.index("bse") + 4), line)
    assert (r.start.character, r.end.character) == (line.index("bse") + 1, line.index("bse") + 4)


def test_without_pygls_ft_lsp_says_how_to_install_it() -> None:
    import subprocess

    code = ("import sys\nsys.modules['pygls'] = sys.modules['pygls.lsp'] = sys.modules['pygls.lsp.server'] = None\n"
            "from ftlang.runtime.cli import main\nsys.exit(main(['lsp']))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 1 and "Traceback" not in out.stderr
    assert "pip install 'ftlang[lsp]'" in out.stderr
