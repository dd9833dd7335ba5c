//! Warden's MCP gateway core: the protocol pieces of the gateway that need no IO.
//!
//! The HTTP proxy in `warden-server` (issue 7) sits between an agent's MCP client and a tool server and
//! decides every message. Everything it has to understand about the bytes it relays lives here, pure
//! and separately testable, so that the proxy is only plumbing:
//!
//! * [`jsonrpc`] — JSON-RPC 2.0 messages as MCP (2025-06-18, 2025-11-25, 2026-07-28) uses them: a bounded parser
//!   (size and nesting checked before serde_json recurses), method classification, typed parameter
//!   views, response builders and Warden's stable error codes;
//! * [`sse`] — an incremental Server-Sent Events parser (WHATWG) and encoder for streamable HTTP
//!   responses, with bounded buffering;
//! * [`tools`] — tool definitions from `tools/list`: limits, the pinning digest, the default class
//!   from MCP annotations, and rebuilding a filtered list;
//! * [`scan`] — secret detection and redaction in JSON values (tool arguments and results);
//! * [`credential`] — scrubbing an upstream's injected credential out of its answers, in every
//!   spelling JSON, base64, hex and percent-encoding give it;
//! * [`secretbox`] — XChaCha20-Poly1305 sealing of upstream credentials at rest;
//! * [`wire`] — MCP 2026-07-28 on HTTP: the per-request `_meta` envelope, removed methods, and the
//!   `Mcp-Method` / `Mcp-Name` / `Mcp-Param-*` headers checked against the body.
//!
//! Every parser here takes untrusted input and never panics on it (each has property tests).

pub mod credential;
pub mod jsonrpc;
pub mod scan;
pub mod secretbox;
pub mod sse;
pub mod tools;
pub mod wire;
