//! The MCP test harness proven against the official parts directly, with no Warden in between: the
//! official MCP Python SDK client (through `tests/mcp/driver.py`) against the reference servers
//! `server-everything` (streamable HTTP) and `server-filesystem` (stdio). What the gateway's tests
//! will build on: a session kept across commands, results and the three kinds of failure (a JSON-RPC
//! error, an HTTP status, a dead upstream) reported as such, never a hang.
//!
//! Needs python3 with the pinned `mcp` and the npm packages in `tests/mcp`: scripts/test installs
//! them; without them these tests fail and say so.
#![allow(clippy::expect_used, clippy::unwrap_used)]

mod common;

use std::io::{Read, Write};

use common::mcp::{EverythingServer, FilesystemServer, McpDriver, first_text};
use serde_json::json;

#[tokio::test]
async fn python_sdk_against_server_everything() {
    let server = EverythingServer::start().await;
    let mut driver = McpDriver::spawn();

    // Before any session: an answer, not a hang.
    let answer = driver.send(json!({"op": "list_tools"})).await;
    assert_eq!(answer["kind"], "closed", "{answer}");

    let connected = driver.connect(&server.url, Some("not-checked-here")).await;
    assert_eq!(connected["ok"], true, "{connected}");
    let info = &connected["result"];
    assert!(
        ["2025-06-18", "2025-11-25"].contains(&info["protocolVersion"].as_str().unwrap()),
        "{info}"
    );
    assert_eq!(info["serverInfo"]["name"], "mcp-servers/everything");
    assert!(info["capabilities"]["tools"].is_object(), "{info}");

    let tools = driver.ok(json!({"op": "list_tools"})).await;
    let echo = tools["tools"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "echo")
        .unwrap_or_else(|| panic!("no echo tool in {tools}"));
    assert_eq!(echo["annotations"]["readOnlyHint"], true, "{echo}");
    assert_eq!(echo["inputSchema"]["properties"]["message"]["type"], "string");
    let names = driver.tool_names().await;
    for name in ["get-sum", "get-env", "gzip-file-as-resource"] {
        assert!(names.contains(&name.to_owned()), "{name} not in {names:?}");
    }

    // The session carries on across commands.
    let answer = driver.call_tool("echo", json!({"message": "hello warden"})).await;
    assert_eq!(answer["ok"], true, "{answer}");
    assert_eq!(answer["result"]["isError"], false);
    assert_eq!(first_text(&answer["result"]), "Echo: hello warden");
    let sum = driver.call_tool("get-sum", json!({"a": 2, "b": 40})).await;
    assert!(first_text(&sum["result"]).contains("42"), "{sum}");

    // server-everything reports an unknown tool as a tool error (isError: true, ok for the
    // driver), not as a JSON-RPC error.
    let answer = driver.call_tool("no-such-tool", json!({})).await;
    assert_eq!(answer["ok"], true, "{answer}");
    assert_eq!(answer["result"]["isError"], true, "{answer}");
    assert!(
        first_text(&answer["result"]).contains("no-such-tool not found"),
        "{answer}"
    );
    // ... and arguments that fail the input schema likewise.
    let answer = driver.call_tool("get-sum", json!({"a": "two"})).await;
    assert_eq!(answer["result"]["isError"], true, "{answer}");

    // An unknown prompt is a JSON-RPC error: the code and message come through.
    let answer = driver
        .send(json!({"op": "get_prompt", "name": "no-such-prompt"}))
        .await;
    assert_eq!(answer["ok"], false, "{answer}");
    assert_eq!(answer["kind"], "jsonrpc", "{answer}");
    assert_eq!(answer["code"], -32602, "{answer}");

    let prompt = driver
        .ok(json!({"op": "get_prompt", "name": "args-prompt", "arguments": {"city": "Paris"}}))
        .await;
    assert!(
        prompt["messages"][0]["content"]["text"]
            .as_str()
            .unwrap()
            .contains("Paris"),
        "{prompt}"
    );
    let resources = driver.ok(json!({"op": "list_resources"})).await;
    let uri = resources["resources"][0]["uri"].as_str().unwrap().to_owned();
    let read = driver.ok(json!({"op": "read_resource", "uri": uri})).await;
    assert_eq!(read["contents"][0]["uri"], uri.as_str(), "{read}");

    // A renewed token mid-session (the server ignores it; the session goes on).
    driver
        .ok(json!({"op": "set_header", "name": "Authorization", "value": "Bearer renewed"}))
        .await;
    driver.ok(json!({"op": "ping"})).await;

    // A command that times out fails alone; the session survives it.
    let answer = driver
        .send(
            json!({"op": "call_tool", "name": "trigger-long-running-operation",
                     "arguments": {"duration": 5, "steps": 5}, "timeout": 0.5}),
        )
        .await;
    assert_eq!(answer["kind"], "timeout", "{answer}");
    driver.ok(json!({"op": "ping"})).await;

    // Bad input is an answer too.
    let answer = driver.send(json!({"op": "frobnicate"})).await;
    assert_eq!(answer["kind"], "driver", "{answer}");

    driver.ok(json!({"op": "close"})).await;
    let answer = driver.call_tool("echo", json!({"message": "x"})).await;
    assert_eq!(answer["kind"], "closed", "{answer}");

    // The SDK's default mode (probe `server/discover`, fall back to initialize) connects as well.
    let connected = driver
        .send(json!({"op": "connect", "url": server.url, "mode": "auto"}))
        .await;
    assert_eq!(connected["ok"], true, "{connected}");
    let answer = driver.call_tool("echo", json!({"message": "auto"})).await;
    assert_eq!(first_text(&answer["result"]), "Echo: auto");
}

/// A dead upstream mid-session: the command fails as `connection`, later ones as `closed`.
#[tokio::test]
async fn a_dead_server_is_reported_not_hung_on() {
    let mut server = EverythingServer::start().await;
    let mut driver = McpDriver::spawn();
    assert_eq!(driver.connect(&server.url, None).await["ok"], true);
    server.kill();
    let answer = driver
        .send(json!({"op": "call_tool", "name": "echo", "arguments": {"message": "x"}, "timeout": 10}))
        .await;
    assert_eq!(answer["ok"], false, "{answer}");
    assert_eq!(answer["kind"], "connection", "{answer}");
    let answer = driver.send(json!({"op": "list_tools"})).await;
    assert_eq!(answer["kind"], "closed", "{answer}");
    // The driver itself lives on: a new session to a new server works.
    let server = EverythingServer::start().await;
    assert_eq!(driver.connect(&server.url, None).await["ok"], true);
    assert!(driver.tool_names().await.contains(&"echo".to_owned()));
}

/// A server that answers every request with `401` and `WWW-Authenticate` (what a gateway does
/// without a valid task token): the driver reports the status, not just the SDK's stand-in error.
#[tokio::test]
async fn http_401_is_reported_with_its_status() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/mcp", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { break };
            std::thread::spawn(move || {
                let mut request = Vec::new();
                let mut buf = [0u8; 4096];
                // Headers, then as much body as Content-Length says.
                while let Ok(n) = stream.read(&mut buf) {
                    if n == 0 {
                        return;
                    }
                    request.extend_from_slice(&buf[..n]);
                    let text = String::from_utf8_lossy(&request).to_string();
                    if let Some(end) = text.find("\r\n\r\n") {
                        let length = text[..end]
                            .lines()
                            .find_map(|l| {
                                let (k, v) = l.split_once(':')?;
                                k.eq_ignore_ascii_case("content-length")
                                    .then(|| v.trim().parse::<usize>().ok())?
                            })
                            .unwrap_or(0);
                        if request.len() >= end + 4 + length {
                            break;
                        }
                    }
                }
                let _ = stream.write_all(
                    b"HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Bearer realm=\"test\"\r\n\
                      Content-Type: text/plain\r\nContent-Length: 12\r\nConnection: close\r\n\r\nunauthorized",
                );
            });
        }
    });
    let mut driver = McpDriver::spawn();
    let answer = driver.connect(&url, Some("wrong")).await;
    assert_eq!(answer["ok"], false, "{answer}");
    assert_eq!(answer["kind"], "http", "{answer}");
    assert_eq!(answer["status"], 401, "{answer}");
    assert_eq!(answer["www_authenticate"], "Bearer realm=\"test\"", "{answer}");
    // The token sent is never echoed back.
    assert!(!answer.to_string().contains("wrong"), "{answer}");
    let answer = driver.send(json!({"op": "list_tools"})).await;
    assert_eq!(answer["kind"], "closed", "{answer}");
}

/// server-filesystem over stdio, spawned from [`FilesystemServer::argv`].
#[tokio::test]
async fn python_sdk_against_server_filesystem_on_stdio() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("note.txt"), "filed by the harness\n").unwrap();
    // The server resolves symlinks in its allowed directories; so must the path we ask for.
    let root = dir.path().canonicalize().unwrap();
    let mut driver = McpDriver::spawn();
    let connected = driver
        .send(json!({"op": "connect", "command": FilesystemServer::argv(&root)}))
        .await;
    assert_eq!(connected["ok"], true, "{connected}");
    let names = driver.tool_names().await;
    for name in ["read_text_file", "write_file", "list_directory"] {
        assert!(names.contains(&name.to_owned()), "{name} not in {names:?}");
    }
    let path = root.join("note.txt");
    let answer = driver.call_tool("read_text_file", json!({"path": path})).await;
    assert_eq!(answer["ok"], true, "{answer}");
    assert_eq!(first_text(&answer["result"]), "filed by the harness\n");
    // Outside the allowed directory: a tool error.
    let answer = driver
        .call_tool("read_text_file", json!({"path": "/etc/hostname"}))
        .await;
    assert_eq!(answer["result"]["isError"], true, "{answer}");
    driver.ok(json!({"op": "close"})).await;
}
