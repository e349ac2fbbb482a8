// VS Code client for ftlang: starts `ft lsp` (the language server) over stdio.
// The command is the setting `ftlang.server.command` (default: `ft` on PATH, e.g. the
// project's .venv/bin/ft), with `ftlang.server.args` (default: ["lsp"]).
"use strict";

const vscode = require("vscode");
const { LanguageClient, TransportKind } = require("vscode-languageclient/node");

let client;

function activate(context) {
  const config = vscode.workspace.getConfiguration("ftlang");
  const command = config.get("server.command", "ft");
  const args = config.get("server.args", ["lsp"]);
  const server = { command, args, transport: TransportKind.stdio };
  client = new LanguageClient(
    "ftlang",
    "ftlang language server",
    { run: server, debug: server },
    {
      documentSelector: [{ scheme: "file", language: "ftlang" }],
      synchronize: { fileEvents: vscode.workspace.createFileSystemWatcher("**/*.ft") },
    }
  );
  context.subscriptions.push({ dispose: () => client && client.stop() });
  return client.start();
}

function deactivate() {
  return client ? client.stop() : undefined;
}

module.exports = { activate, deactivate };
