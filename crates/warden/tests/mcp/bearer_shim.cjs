// A header-adding reverse proxy on 127.0.0.1 for the conformance test (../conformance.rs): the MCP
// conformance client knows nothing of Warden's task tokens, so it talks to this shim, which forwards
// every request (any method: POST, GET with an SSE stream, DELETE) to $TARGET (an origin such as
// http://127.0.0.1:41234) with the same method, path, headers and body, plus
// `Authorization: Bearer <the token in $TOKEN_FILE>` (read at each request, so a test may renew it by
// rewriting the file), and streams the answer back as it arrives (status, headers, body).
//
//   TARGET=http://127.0.0.1:41234 TOKEN_FILE=/tmp/task.token PORT=0 node bearer_shim.cjs
//
// Prints `bearer-shim: listening on http://127.0.0.1:<port>` once it listens (PORT=0: any free port).
// Bodies pass through untouched; Node re-frames them (chunked or Content-Length) as HTTP/1.1 requires.
'use strict';

const http = require('node:http');
const fs = require('node:fs');

const target = new URL(process.env.TARGET || '');
const tokenFile = process.env.TOKEN_FILE || '';
if (target.protocol !== 'http:' || !tokenFile) {
  console.error('bearer-shim: set TARGET=http://host:port and TOKEN_FILE=/path/to/token');
  process.exit(2);
}
// One connection per request: no pooled connection outlives a stream the client closed.
const agent = new http.Agent({ keepAlive: false });

const server = http.createServer((req, res) => {
  let token;
  try {
    token = fs.readFileSync(tokenFile, 'utf8').trim();
  } catch (e) {
    res.writeHead(500, { 'content-type': 'text/plain' }).end(`bearer-shim: cannot read the token: ${e}\n`);
    return;
  }
  // The client's headers as sent (Host and Origin included: the DNS-rebinding scenario sets them),
  // minus any Authorization of its own, plus the task token.
  const headers = [];
  for (let i = 0; i < req.rawHeaders.length; i += 2) {
    if (req.rawHeaders[i].toLowerCase() !== 'authorization') {
      headers.push(req.rawHeaders[i], req.rawHeaders[i + 1]);
    }
  }
  headers.push('Authorization', `Bearer ${token}`);
  const upstream = http.request(
    { host: target.hostname, port: target.port, method: req.method, path: req.url, headers, agent },
    (answer) => {
      res.writeHead(answer.statusCode, answer.statusMessage, answer.rawHeaders);
      res.flushHeaders(); // an SSE stream's headers go out before its first event
      answer.pipe(res);
    },
  );
  upstream.on('error', (e) => {
    if (!res.headersSent) {
      res.writeHead(502, { 'content-type': 'text/plain' }).end(`bearer-shim: ${e}\n`);
    } else {
      res.destroy();
    }
  });
  // The client gone (a closed SSE stream, an aborted request): so is the forwarded request.
  res.on('close', () => upstream.destroy());
  req.pipe(upstream);
});

server.listen(Number(process.env.PORT || 0), '127.0.0.1', () => {
  console.log(`bearer-shim: listening on http://127.0.0.1:${server.address().port}`);
});
