// Starts `streamc lsp` for .sdl files (and their hooks modules and test files, whose
// diagnostics the server publishes too). Everything else comes from the server.
"use strict";

const vscode = require("vscode");
const { LanguageClient } = require("vscode-languageclient/node");

let client;

function activate(context) {
  const command = vscode.workspace.getConfiguration("streamc").get("path", "streamc");
  const server = { command, args: ["lsp"] };
  client = new LanguageClient(
    "streamc",
    "streamc",
    { run: server, debug: server },
    {
      documentSelector: [
        { scheme: "file", language: "streamc" },
        { scheme: "file", pattern: "**/*.test.yaml" },
        { scheme: "file", language: "python" },
      ],
    },
  );
  context.subscriptions.push(client);
  return client.start();
}

function deactivate() {
  return client ? client.stop() : undefined;
}

module.exports = { activate, deactivate };
