// Preloaded into the reference servers by the tests (`node --require ./loopback.cjs ...`, see
// ../common/mcp.rs): a server that listens on a port alone (server-everything's `app.listen(PORT)`)
// listens on 127.0.0.1 instead of every interface. The tests talk to loopback only, and
// server-everything has tools (get-env) that nobody outside this machine should reach.
"use strict";
const net = require("node:net");
const listen = net.Server.prototype.listen;
net.Server.prototype.listen = function (...args) {
  const port = args[0];
  const portOnly = typeof port === "number" || (typeof port === "string" && /^\d+$/.test(port));
  if (portOnly && (args.length === 1 || typeof args[1] === "function")) {
    args.splice(1, 0, "127.0.0.1");
  }
  return listen.apply(this, args);
};
