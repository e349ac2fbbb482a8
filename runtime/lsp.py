"""`ft lsp`: the language server (pygls, over stdio), for any LSP editor.

Diagnostics as you type (the compiler's own, so the codes and spans of `ft check`),
completion of block kinds, attributes, call arguments and references, hover with each
attribute's doc and default, go-to-definition (into `use`d files too). The answers are in
lsp_features.py; this module only wires them to the protocol. Never imports torch.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

try:
    from lsprotocol import types as lsp
    from pygls.lsp.server import LanguageServer
except ImportError as exc:  # an optional extra: say how to get it, not a traceback
    raise SystemExit(f"error: `ft lsp` needs pygls ({exc.name} is not installed)\n"
                     "  = help: pip install 'ftlang[lsp]'") from None

from ftlang.runtime import lsp_features as features

from ftlang import __version__


class FtServer(LanguageServer):
    def __init__(self) -> None:
        super().__init__("ftlang", __version__)
        self.docs: dict[str, features.Document] = {}

    def document(self, uri: str) -> features.Document:
        """The buffer's Document, its text brought up to date from the workspace."""
        td = self.workspace.get_text_document(uri)
        doc = self.docs.setdefault(uri, features.Document(Path(td.path)))
        doc.text = td.source
        return doc

    def publish(self, uri: str, version: int | None = None) -> None:
        doc = self.document(uri)
        try:
            found = features.check(doc)
        except Exception as exc:  # a compiler bug must not take the editor's server down
            found = [lsp.Diagnostic(lsp.Range(lsp.Position(0, 0), lsp.Position(0, 0)),
                                    f"ftlang internal error: {type(exc).__name__}: {exc}", source="ftlang")]
        self.text_document_publish_diagnostics(lsp.PublishDiagnosticsParams(uri, found, version))


def build_server() -> FtServer:
    server = FtServer()

    @server.feature(lsp.TEXT_DOCUMENT_DID_OPEN)
    def did_open(ls: FtServer, params: lsp.DidOpenTextDocumentParams) -> None:
        ls.publish(params.text_document.uri, params.text_document.version)

    @server.feature(lsp.TEXT_DOCUMENT_DID_CHANGE)
    def did_change(ls: FtServer, params: lsp.DidChangeTextDocumentParams) -> None:
        ls.publish(params.text_document.uri, params.text_document.version)

    @server.feature(lsp.TEXT_DOCUMENT_DID_SAVE)
    def did_save(ls: FtServer, params: lsp.DidSaveTextDocumentParams) -> None:
        ls.publish(params.text_document.uri)  # an imported file or a data file may have changed

    @server.feature(lsp.WORKSPACE_DID_CHANGE_WATCHED_FILES)
    def files_changed(ls: FtServer, params: lsp.DidChangeWatchedFilesParams) -> None:
        for uri in list(ls.docs):  # an imported .ft file changed on disk: check every open buffer again
            ls.publish(uri)

    @server.feature(lsp.TEXT_DOCUMENT_DID_CLOSE)
    def did_close(ls: FtServer, params: lsp.DidCloseTextDocumentParams) -> None:
        ls.docs.pop(params.text_document.uri, None)
        ls.text_document_publish_diagnostics(lsp.PublishDiagnosticsParams(params.text_document.uri, []))

    @server.feature(lsp.TEXT_DOCUMENT_COMPLETION,
                    lsp.CompletionOptions(trigger_characters=["(", ",", ".", "["]))
    def completion(ls: FtServer, params: lsp.CompletionParams) -> lsp.CompletionList:
        doc = ls.document(params.text_document.uri)
        items = features.complete(doc, params.position.line, params.position.character)
        return lsp.CompletionList(is_incomplete=False, items=items)

    @server.feature(lsp.TEXT_DOCUMENT_HOVER)
    def hover(ls: FtServer, params: lsp.HoverParams) -> lsp.Hover | None:
        doc = ls.document(params.text_document.uri)
        return features.hover(doc, params.position.line, params.position.character)

    @server.feature(lsp.TEXT_DOCUMENT_DEFINITION)
    def definition(ls: FtServer, params: lsp.DefinitionParams) -> lsp.Location | None:
        doc = ls.document(params.text_document.uri)
        return features.definition(doc, params.position.line, params.position.character)

    return server


def cmd_lsp(args: argparse.Namespace) -> int:
    """Serves LSP on stdin/stdout until the client says exit."""
    out: Any = sys.stdout.buffer
    sys.stdout = sys.stderr  # stray prints must never corrupt the JSON-RPC stream
    build_server().start_io(sys.stdin.buffer, out)
    return 0
