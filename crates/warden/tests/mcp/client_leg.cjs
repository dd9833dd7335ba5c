// The "client command" that the MCP conformance suite's client scenarios run (../conformance.rs):
// `conformance client --command "node client_leg.cjs" --scenario <name>` starts the scenario's test
// server and runs this with the server's URL appended. It does not talk MCP itself: it hands the URL
// to the test and waits, while the test drives a real client at that URL (the SDK client directly, or
// the SDK client through `warden serve`, so that the scenario server sees Warden's upstream client).
//
// It writes {"url", "scenario", "protocolVersion"} to $LEG_DIR/leg.json (the conformance CLI's
// MCP_CONFORMANCE_SCENARIO and MCP_CONFORMANCE_PROTOCOL_VERSION), then polls for $LEG_DIR/done and
// exits with the number in it (0 when empty). The CLI's own --timeout kills it if the test never
// answers.
'use strict';

const fs = require('node:fs');
const path = require('node:path');

const dir = process.env.LEG_DIR || '';
const url = process.argv[process.argv.length - 1] || '';
if (!dir || !/^https?:\/\//.test(url)) {
  console.error('client-leg: set LEG_DIR and pass the scenario server URL as the last argument');
  process.exit(2);
}
const leg = {
  url,
  scenario: process.env.MCP_CONFORMANCE_SCENARIO || '',
  protocolVersion: process.env.MCP_CONFORMANCE_PROTOCOL_VERSION || '',
};
// Written under another name and renamed, so the test never reads half a file.
fs.writeFileSync(path.join(dir, 'leg.json.tmp'), JSON.stringify(leg));
fs.renameSync(path.join(dir, 'leg.json.tmp'), path.join(dir, 'leg.json'));

const done = path.join(dir, 'done');
const timer = setInterval(() => {
  let text;
  try {
    text = fs.readFileSync(done, 'utf8').trim();
  } catch {
    return; // not yet
  }
  clearInterval(timer);
  process.exit(Number(text || '0') || 0);
}, 50);
