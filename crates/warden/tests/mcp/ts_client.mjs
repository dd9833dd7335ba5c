// The official MCP TypeScript SDK client (@modelcontextprotocol/client, v2), driven once.
//
// Reads one JSON object on stdin:
//   {"url": "http://127.0.0.1:8080/mcp/everything",
//    "token": "<bearer token, sent as Authorization: Bearer ...>",
//    "revision": "2025-11-25" | "2026-07-28",
//    "call": {"name": "echo", "arguments": {"message": "hi"}},
//    "deny": [{"name": "get-env", "arguments": {}}, ...]}
// and writes one JSON line on stdout:
//   {"ok": true, "protocolVersion": "...", "era": "...", "serverInfo": {...},
//    "tools": ["echo", ...],                       (names, sorted)
//    "call": {"ok": true, "result": {...}} | {"ok": false, ...},
//    "deny": [{"ok": false, "kind": "jsonrpc", "code": -32010, "message": "...", "data": {...}}, ...]}
// or, when connecting or listing fails, {"ok": false, "stage": "...", "error": "..."} (exit 1).
//
// "2025-11-25" is the SDK's default connect (`versionNegotiation` `legacy`): the `initialize`
// handshake at its latest 2025 revision, 2025-11-25. "2026-07-28" pins the client to that revision
// (`versionNegotiation: {mode: {pin: "2026-07-28"}}`): a `server/discover` that must offer it, no
// `initialize`, no fallback; the SDK then sends the 2026 `_meta` envelope on every request.
import { Client, ProtocolError, StreamableHTTPClientTransport } from "@modelcontextprotocol/client";

function readStdin() {
  return new Promise((resolve, reject) => {
    let text = "";
    process.stdin.setEncoding("utf8");
    process.stdin.on("data", (chunk) => (text += chunk));
    process.stdin.on("end", () => resolve(text));
    process.stdin.on("error", reject);
  });
}

function describe(err) {
  if (err instanceof ProtocolError) {
    return { ok: false, kind: "jsonrpc", code: err.code, message: err.message, data: err.data ?? null };
  }
  return { ok: false, kind: "exception", type: err?.constructor?.name ?? typeof err, message: String(err?.message ?? err) };
}

async function callTool(client, { name, arguments: args }) {
  try {
    return { ok: true, result: await client.callTool({ name, arguments: args ?? {} }) };
  } catch (err) {
    return describe(err);
  }
}

function out(value) {
  process.stdout.write(JSON.stringify(value) + "\n");
}

const config = JSON.parse(await readStdin());
const modes = { "2025-11-25": "legacy", "2026-07-28": { pin: "2026-07-28" } };
if (!(config.revision in modes)) {
  out({ ok: false, stage: "config", error: `unknown revision ${config.revision}` });
  process.exit(1);
}
const client = new Client(
  { name: "warden-ts-sdk-test", version: "1.0.0" },
  { versionNegotiation: { mode: modes[config.revision] } },
);
const transport = new StreamableHTTPClientTransport(new URL(config.url), {
  requestInit: { headers: { Authorization: `Bearer ${config.token}` } },
});

let stage = "connect";
try {
  await client.connect(transport);
  stage = "tools/list";
  const tools = [];
  let cursor;
  do {
    const page = await client.listTools(cursor === undefined ? {} : { cursor });
    tools.push(...page.tools.map((t) => t.name));
    cursor = page.nextCursor;
  } while (cursor);
  tools.sort();
  stage = "tools/call";
  const call = await callTool(client, config.call);
  const deny = [];
  for (const d of config.deny ?? []) deny.push(await callTool(client, d));
  out({
    ok: true,
    protocolVersion: client.getNegotiatedProtocolVersion() ?? null,
    era: client.getProtocolEra() ?? null,
    serverInfo: client.getServerVersion() ?? null,
    tools,
    call,
    deny,
  });
} catch (err) {
  out({ stage, ...describe(err), ok: false, error: String(err?.stack ?? err) });
  process.exitCode = 1;
} finally {
  await client.close().catch(() => {});
}
