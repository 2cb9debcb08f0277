// What an editor shows for a tokend config: a minimal LSP client for the real YAML language
// server (the one VS Code's Red Hat YAML extension, Neovim's yamlls and JetBrains' LSP clients run).
//
//   node yaml-ls-check.mjs /path/to/config.yaml
//
// Opens the file in the server, waits for its diagnostics and prints each as `LINE:COL message`
// (1-based). The schema comes from the file's own modeline, as in an editor:
//   # yaml-language-server: $schema=/absolute/path/tokend-config.schema.json
// (the server turns an absolute path into a file:// URI, and resolves a relative one against the
// file's directory). Exits 0 once diagnostics arrive (none printed means the file is clean), 1 on
// a timeout or a server that dies.
import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

const file = process.argv[2];
if (!file) {
  console.error('usage: node yaml-ls-check.mjs CONFIG.yaml');
  process.exit(2);
}
const here = dirname(fileURLToPath(import.meta.url));
const path = resolve(file);
const uri = pathToFileURL(path).href;
const text = readFileSync(path, 'utf8');
const workspace = mkdtempSync(join(tmpdir(), 'tokend-yamlls-'));

const server = spawn(
  process.execPath,
  [join(here, 'node_modules/yaml-language-server/bin/yaml-language-server'), '--stdio'],
  { stdio: ['pipe', 'pipe', 'inherit'] },
);

function finish(code, why) {
  if (why) console.error(`yaml-ls-check: ${why}`);
  server.kill();
  rmSync(workspace, { recursive: true, force: true });
  process.exit(code);
}
const timer = setTimeout(() => finish(1, `no diagnostics for ${uri} within 20 s`), 20_000);
server.on('exit', (code, signal) => finish(1, `server exited (${code ?? signal})`));

function send(message) {
  const body = Buffer.from(JSON.stringify({ jsonrpc: '2.0', ...message }), 'utf8');
  server.stdin.write(`Content-Length: ${body.length}\r\n\r\n`);
  server.stdin.write(body);
}
let nextId = 1;
const pending = new Map();
function request(method, params) {
  const id = nextId++;
  send({ id, method, params });
  return new Promise((ok) => pending.set(id, ok));
}
const notify = (method, params) => send({ method, params });

function receive(message) {
  if (message.id !== undefined && message.method === undefined) {
    const ok = pending.get(message.id);
    pending.delete(message.id);
    if (message.error) finish(1, `${JSON.stringify(message.error)}`);
    ok?.(message.result);
  } else if (message.id !== undefined) {
    // A request from the server (client/registerCapability, workspace/configuration, ...).
    const settings = { validate: true, schemas: {}, schemaStore: { enable: false } };
    const result =
      message.method === 'workspace/configuration'
        ? message.params.items.map((i) => (i.section === 'yaml' ? settings : null))
        : null;
    send({ id: message.id, result });
  } else if (message.method === 'textDocument/publishDiagnostics' && message.params.uri === uri) {
    clearTimeout(timer);
    for (const d of message.params.diagnostics) {
      const { line, character } = d.range.start;
      console.log(`${line + 1}:${character + 1} ${d.message}`);
    }
    finish(0);
  }
}

let buffer = Buffer.alloc(0);
server.stdout.on('data', (chunk) => {
  buffer = Buffer.concat([buffer, chunk]);
  for (;;) {
    const end = buffer.indexOf('\r\n\r\n');
    if (end < 0) return;
    const length = Number(/Content-Length: *(\d+)/i.exec(buffer.subarray(0, end).toString())?.[1]);
    if (buffer.length < end + 4 + length) return;
    const body = buffer.subarray(end + 4, end + 4 + length).toString('utf8');
    buffer = buffer.subarray(end + 4 + length);
    receive(JSON.parse(body));
  }
});

const folder = pathToFileURL(workspace).href;
await request('initialize', {
  processId: process.pid,
  clientInfo: { name: 'tokend-yaml-ls-check' },
  rootUri: folder,
  workspaceFolders: [{ uri: folder, name: 'tokend' }],
  capabilities: {
    textDocument: {
      synchronization: { dynamicRegistration: false },
      publishDiagnostics: { relatedInformation: true },
    },
    workspace: { workspaceFolders: true, configuration: true },
  },
});
notify('initialized', {});
notify('workspace/didChangeConfiguration', {
  settings: { yaml: { validate: true, schemas: {}, schemaStore: { enable: false } } },
});
notify('textDocument/didOpen', { textDocument: { uri, languageId: 'yaml', version: 1, text } });
