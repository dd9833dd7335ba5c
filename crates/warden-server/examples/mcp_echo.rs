//! A minimal, fast MCP server over streamable HTTP: the upstream of the MCP gateway benchmark
//! (`mcp_load` against it directly and through Warden), and a controllable upstream for the
//! gateway's tests (credential injection with `--api-key`, a changed tool definition with
//! `--echo-description`).
//!
//! ```sh
//! cargo run --release -p warden-server --example mcp_echo                        # JSON responses, a free port
//! cargo run --release -p warden-server --example mcp_echo -- --port 8800 --sse   # SSE responses
//! MCP_ECHO_API_KEY=k cargo run --release -p warden-server --example mcp_echo     # or --api-key k
//! ```
//!
//! It listens on 127.0.0.1 only and prints its endpoint URL (`http://127.0.0.1:PORT/mcp`) as the
//! first line on stdout. `POST /mcp` takes one JSON-RPC message:
//!
//! - `initialize`: answers with the client's `protocolVersion` when it is one of 2025-11-25,
//!   2025-06-18 or 2025-03-26 (else 2025-11-25), `serverInfo`, `capabilities.tools`, and a new
//!   session in the `Mcp-Session-Id` header. Every other message needs that header: 400 without it,
//!   404 for a session that is unknown or ended.
//! - notifications and responses (no `id`, or no `method`): 202 Accepted, no body.
//! - `tools/list`: `echo` (`readOnlyHint: true`), `write_note` (`readOnlyHint: false,
//!   destructiveHint: false`) and `delete_note` (no annotations: by the MCP defaults a
//!   destructive tool), with input schemas.
//! - `tools/call`: `echo {"text"}` returns the text; `write_note {"title","body"}` and
//!   `delete_note {"title"}` return a line saying what they did (nothing is stored). An argument
//!   of the wrong type is a tool error (`isError: true`); an unknown tool is JSON-RPC -32602.
//! - `ping`: `{}`. Any other method: JSON-RPC -32601.
//!
//! Responses are `application/json`, or with `--sse` a `text/event-stream` of one `message` event.
//! `GET /mcp` is 405 (no server-initiated stream); `DELETE /mcp` ends the session. With an API key,
//! every request without `Authorization: Bearer KEY` gets 401 with `WWW-Authenticate: Bearer`.

use std::collections::HashSet;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};

use anyhow::{Context, bail};
use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::{Value, json};

const SESSION_HEADER: &str = "mcp-session-id";
const SUPPORTED_VERSIONS: &[&str] = &["2025-11-25", "2025-06-18", "2025-03-26"];
const LATEST_VERSION: &str = "2025-11-25";
const USAGE: &str = "usage: mcp_echo [--port N] [--sse] [--api-key KEY] [--echo-description TEXT]
  --port N                  port on 127.0.0.1 (default 0: any free port)
  --sse                     answer requests with text/event-stream instead of application/json
  --api-key KEY             require `Authorization: Bearer KEY` (or set MCP_ECHO_API_KEY)
  --echo-description TEXT   the echo tool's description (change it to change the tool's definition)";

#[derive(Debug)]
struct Options {
    port: u16,
    sse: bool,
    api_key: Option<String>,
    echo_description: String,
}

fn parse_args() -> anyhow::Result<Options> {
    let mut options = Options {
        port: 0,
        sse: false,
        api_key: std::env::var("MCP_ECHO_API_KEY").ok().filter(|k| !k.is_empty()),
        echo_description: "Echoes back the text it is given.".to_owned(),
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = |name: &str| {
            args.next()
                .with_context(|| format!("{name} needs a value\n{USAGE}"))
        };
        match arg.as_str() {
            "--port" => options.port = value("--port")?.parse().context("--port: not a port number")?,
            "--sse" => options.sse = true,
            "--api-key" => options.api_key = Some(value("--api-key")?),
            "--echo-description" => options.echo_description = value("--echo-description")?,
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            other => bail!("unknown argument {other:?}\n{USAGE}"),
        }
    }
    Ok(options)
}

#[derive(Debug)]
struct Echo {
    sse: bool,
    /// `Bearer KEY`, when a key is required.
    expected_authorization: Option<String>,
    /// The `tools/list` result, built once.
    tools: Value,
    sessions: Mutex<HashSet<String>>,
}

fn tools(echo_description: &str) -> Value {
    json!({"tools": [
        {
            "name": "echo",
            "description": echo_description,
            "inputSchema": {
                "type": "object",
                "properties": {"text": {"type": "string", "description": "What to echo."}},
                "required": ["text"]
            },
            "annotations": {"title": "Echo", "readOnlyHint": true}
        },
        {
            "name": "write_note",
            "description": "Writes a note (pretends to: nothing is stored).",
            "inputSchema": {
                "type": "object",
                "properties": {
                    "title": {"type": "string"},
                    "body": {"type": "string"}
                },
                "required": ["title", "body"]
            },
            "annotations": {"title": "Write a note", "readOnlyHint": false, "destructiveHint": false}
        },
        {
            "name": "delete_note",
            "description": "Deletes a note (pretends to). No annotations: by the MCP defaults, destructive.",
            "inputSchema": {
                "type": "object",
                "properties": {"title": {"type": "string"}},
                "required": ["title"]
            }
        }
    ]})
}

/// Errors end the program with one line on stderr (no backtrace, whatever RUST_BACKTRACE says).
fn main() -> std::process::ExitCode {
    let run = tokio::runtime::Runtime::new()
        .map_err(anyhow::Error::from)
        .and_then(|rt| rt.block_on(run()));
    match run {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("mcp_echo: error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run() -> anyhow::Result<()> {
    let options = parse_args()?;
    let state = Arc::new(Echo {
        sse: options.sse,
        expected_authorization: options.api_key.as_ref().map(|k| format!("Bearer {k}")),
        tools: tools(&options.echo_description),
        sessions: Mutex::new(HashSet::new()),
    });
    let app = Router::new()
        .route("/mcp", post(handle_post).get(handle_get).delete(handle_delete))
        .with_state(state);
    let listener = tokio::net::TcpListener::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, options.port)))
        .await
        .with_context(|| format!("binding 127.0.0.1:{}", options.port))?;
    let addr = listener.local_addr()?;
    // The first line on stdout, for whoever started us (stdout is line-buffered: flushed here).
    println!("http://{addr}/mcp");
    axum::serve(listener, app).await.context("serving")?;
    Ok(())
}

fn status(code: StatusCode, message: &str) -> Response {
    (code, [(header::CONTENT_TYPE, "text/plain")], message.to_owned()).into_response()
}

/// A JSON-RPC error sent with an HTTP status (for failures before the message is dispatched).
fn http_error(code: StatusCode, rpc_code: i64, message: &str) -> Response {
    let body = json!({"jsonrpc": "2.0", "id": null, "error": {"code": rpc_code, "message": message}});
    (
        code,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

impl Echo {
    /// The 401 for a request without the key (when one is required), else None.
    fn refuse_auth(&self, headers: &HeaderMap) -> Option<Response> {
        let expected = self.expected_authorization.as_ref()?;
        let given = headers.get(header::AUTHORIZATION).map(HeaderValue::as_bytes);
        if given == Some(expected.as_bytes()) {
            return None;
        }
        let mut response = status(StatusCode::UNAUTHORIZED, "missing or wrong API key");
        response
            .headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        Some(response)
    }

    /// The refusal of a request outside a live session: 400 without the header, 404 for an
    /// unknown or ended session; None for a live one.
    fn refuse_session(&self, headers: &HeaderMap) -> Option<Response> {
        let Some(id) = headers.get(SESSION_HEADER).and_then(|v| v.to_str().ok()) else {
            return Some(http_error(
                StatusCode::BAD_REQUEST,
                -32000,
                "Bad Request: no Mcp-Session-Id header",
            ));
        };
        let known = self
            .sessions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains(id);
        (!known).then(|| http_error(StatusCode::NOT_FOUND, -32001, "Session not found"))
    }

    /// One JSON-RPC response, as JSON or as a one-event SSE stream.
    fn reply(&self, message: Value, session: Option<String>) -> Response {
        let (content_type, body) = if self.sse {
            (
                "text/event-stream",
                format!("event: message\ndata: {message}\n\n"),
            )
        } else {
            ("application/json", message.to_string())
        };
        let mut response = Response::new(Body::from(body));
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
        if self.sse {
            headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
        }
        if let Some(value) = session.and_then(|s| HeaderValue::from_str(&s).ok()) {
            headers.insert(SESSION_HEADER, value);
        }
        response
    }
}

async fn handle_post(State(echo): State<Arc<Echo>>, headers: HeaderMap, body: Bytes) -> Response {
    if let Some(response) = echo.refuse_auth(&headers) {
        return response;
    }
    let Ok(message) = serde_json::from_slice::<Value>(&body) else {
        return http_error(StatusCode::BAD_REQUEST, -32700, "Parse error");
    };
    let Some(object) = message.as_object() else {
        return http_error(
            StatusCode::BAD_REQUEST,
            -32600,
            "Invalid Request: one JSON-RPC message per POST",
        );
    };
    let method = object.get("method").and_then(Value::as_str);
    let id = object.get("id").cloned();

    if method == Some("initialize") {
        let Some(id) = id else {
            return http_error(StatusCode::BAD_REQUEST, -32600, "initialize needs an id");
        };
        let asked = message.pointer("/params/protocolVersion").and_then(Value::as_str);
        let version = asked
            .filter(|v| SUPPORTED_VERSIONS.contains(v))
            .unwrap_or(LATEST_VERSION);
        let session = uuid::Uuid::new_v4().to_string();
        echo.sessions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(session.clone());
        let result = json!({
            "protocolVersion": version,
            "capabilities": {"tools": {"listChanged": false}},
            "serverInfo": {"name": "warden-mcp-echo", "version": env!("CARGO_PKG_VERSION")},
        });
        return echo.reply(
            json!({"jsonrpc": "2.0", "id": id, "result": result}),
            Some(session),
        );
    }

    if let Some(response) = echo.refuse_session(&headers) {
        return response;
    }
    let (Some(method), Some(id)) = (method, id) else {
        // A notification, or a response to a request of ours (we send none).
        return StatusCode::ACCEPTED.into_response();
    };
    let outcome = match method {
        "ping" => Ok(json!({})),
        "tools/list" => Ok(echo.tools.clone()),
        "tools/call" => call_tool(object.get("params")),
        _ => Err((-32601, format!("Method not found: {method}"))),
    };
    let message = match outcome {
        Ok(result) => json!({"jsonrpc": "2.0", "id": id, "result": result}),
        Err((code, text)) => {
            json!({"jsonrpc": "2.0", "id": id, "error": {"code": code, "message": text}})
        }
    };
    echo.reply(message, None)
}

fn text_result(text: String, is_error: bool) -> Value {
    json!({"content": [{"type": "text", "text": text}], "isError": is_error})
}

/// `tools/call`: the result, or a JSON-RPC error (code, message).
fn call_tool(params: Option<&Value>) -> Result<Value, (i64, String)> {
    let name = params
        .and_then(|p| p.get("name"))
        .and_then(Value::as_str)
        .ok_or((-32602, "tools/call needs params.name".to_owned()))?;
    let empty = serde_json::Map::new();
    let args = params
        .and_then(|p| p.get("arguments"))
        .and_then(Value::as_object)
        .unwrap_or(&empty);
    let text = |key: &str| args.get(key).and_then(Value::as_str);
    Ok(match name {
        "echo" => match text("text") {
            Some(t) => text_result(t.to_owned(), false),
            None => text_result("echo needs a string `text`".to_owned(), true),
        },
        "write_note" => match (text("title"), text("body")) {
            (Some(title), Some(body)) => {
                text_result(format!("wrote note {title:?} ({} bytes)", body.len()), false)
            }
            _ => text_result("write_note needs strings `title` and `body`".to_owned(), true),
        },
        "delete_note" => match text("title") {
            Some(title) => text_result(format!("deleted note {title:?}"), false),
            None => text_result("delete_note needs a string `title`".to_owned(), true),
        },
        other => return Err((-32602, format!("Unknown tool: {other}"))),
    })
}

async fn handle_get(State(echo): State<Arc<Echo>>, headers: HeaderMap) -> Response {
    if let Some(response) = echo.refuse_auth(&headers) {
        return response;
    }
    let mut response = status(
        StatusCode::METHOD_NOT_ALLOWED,
        "this server offers no server-initiated stream",
    );
    response
        .headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static("POST, DELETE"));
    response
}

async fn handle_delete(State(echo): State<Arc<Echo>>, headers: HeaderMap) -> Response {
    if let Some(response) = echo.refuse_auth(&headers) {
        return response;
    }
    if let Some(response) = echo.refuse_session(&headers) {
        return response;
    }
    if let Some(id) = headers.get(SESSION_HEADER).and_then(|v| v.to_str().ok()) {
        echo.sessions.lock().unwrap_or_else(|e| e.into_inner()).remove(id);
    }
    StatusCode::NO_CONTENT.into_response()
}
