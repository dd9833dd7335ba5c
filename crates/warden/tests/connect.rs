//! `warden connect`, the stdio bridge for desktop and IDE MCP clients, driven by a real stdio MCP
//! client: the official MCP Python SDK (`tests/mcp/driver.py`) starts `warden connect` as its
//! stdio server, which relays through a real `warden serve` to server-everything.
//!
//! - [`an_ide_client_reaches_server_everything_through_warden_connect`]: initialize, `tools/list`
//!   (only the task's tools), a `tools/call`; with 2-second task tokens and a 6-second task, calls
//!   after the token expired (renewed) and after the task reached its maximum (a new task, the
//!   session re-initialized); stdin closing ends the task.
//! - [`a_call_needing_approval_surfaces_the_url_and_completes_once_approved`]: the client declared
//!   URL elicitation, so it is sent the approval's URL; an approver approves through the CLI; the
//!   call completes. The URL is logged on stderr too.
//! - [`a_key_file_readable_by_others_is_refused`]: mode 0644 is refused naming the file and the
//!   mode, and the key never shows.
//!
//! Needs python3 with the pinned `mcp` and the npm packages in `tests/mcp` (scripts/test installs
//! them).
#![allow(clippy::expect_used, clippy::unwrap_used)]

#[macro_use]
#[allow(unused_macros)]
mod common;

use std::path::Path;
use std::time::Duration;

use common::mcp::{EverythingServer, McpDriver, first_text};
use common::{Backend, Server, Spawn, WARDEN};
use serde_json::{Value, json};

fn path_str(p: &Path) -> &str {
    p.to_str().expect("UTF-8 path")
}

/// A server whose task tokens live 2 s, with server-everything registered as the production
/// upstream `everything` and the agent `bot` (staging) active on it. Returns the key file.
async fn setup() -> (Server, EverythingServer, std::path::PathBuf) {
    let everything = EverythingServer::start().await;
    let s = Server::spawn(
        Backend::Sqlite,
        Spawn {
            config: Some("[tokens]\ntask_token_ttl_secs = 2\n".into()),
            ..Spawn::default()
        },
    )
    .await;
    s.add_owner().await;
    s.run(&[
        "upstream",
        "add",
        "everything",
        "--kind",
        "mcp",
        "--url",
        &everything.url,
        "--environment",
        "production",
        "--owner",
        "alice@example.com",
        "--sensitivity",
        "internal",
    ])
    .await
    .ok();
    let key = s.active_agent("bot", &["everything"]).await;
    (s, everything, key)
}

/// `warden connect` as an MCP client's configuration runs it.
fn connect_argv(s: &Server, key: &Path, extra: &[&str]) -> Vec<String> {
    let mut argv: Vec<String> = [
        WARDEN,
        "connect",
        "--server",
        &s.url,
        "--upstream",
        "everything",
        "--agent-id",
        "bot",
        "--key",
        path_str(key),
        "--purpose",
        "help in the IDE",
        "--type",
        "ide",
        "--tool",
        "echo",
        "--tool",
        "toggle-simulated-logging",
    ]
    .iter()
    .map(|a| (*a).to_owned())
    .collect();
    argv.extend(extra.iter().map(|a| (*a).to_owned()));
    argv
}

/// The SDK's stdio client, with `warden connect` as its server.
async fn stdio_client(argv: Vec<String>, elicit: Option<&str>) -> McpDriver {
    let mut driver = McpDriver::spawn();
    let mut command = json!({"op": "connect", "command": argv});
    if let Some(e) = elicit {
        command["elicit"] = e.into();
    }
    let connected = driver.send(command).await;
    assert_eq!(
        connected["ok"],
        true,
        "connect through warden connect: {connected}\n{}",
        driver.stderr()
    );
    driver
}

#[track_caller]
fn called(answer: &Value) -> &str {
    assert_eq!(answer["ok"], true, "{answer}");
    assert_eq!(answer["result"]["isError"], false, "{answer}");
    first_text(&answer["result"])
}

async fn tasks_of_bot(s: &Server, state: Option<&str>) -> Vec<Value> {
    let mut args = vec!["task", "list", "--agent", "bot"];
    if let Some(st) = state {
        args.extend(["--state", st]);
    }
    let v = s.json(&args).await;
    v.as_array()
        .cloned()
        .or_else(|| v["tasks"].as_array().cloned())
        .unwrap_or_default()
}

#[tokio::test]
async fn an_ide_client_reaches_server_everything_through_warden_connect() {
    let (s, _everything, key) = setup().await;
    let mut driver = stdio_client(connect_argv(&s, &key, &["--duration", "6s"]), None).await;

    let mut names = driver.tool_names().await;
    names.sort();
    assert_eq!(
        names,
        ["echo", "toggle-simulated-logging"],
        "only the task's tools"
    );
    let answer = driver.call_tool("echo", json!({"message": "from the IDE"})).await;
    assert_eq!(called(&answer), "Echo: from the IDE");

    // The first token (2 s) has expired: it was renewed.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let answer = driver.call_tool("echo", json!({"message": "renewed"})).await;
    assert_eq!(called(&answer), "Echo: renewed", "{}", driver.stderr());
    assert!(driver.stderr().contains("token renewed"), "{}", driver.stderr());

    // The task (6 s) has reached its maximum: a new task, and a new session for it.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let answer = driver.call_tool("echo", json!({"message": "new task"})).await;
    assert_eq!(called(&answer), "Echo: new task", "{}", driver.stderr());
    assert!(
        tasks_of_bot(&s, None).await.len() >= 2,
        "a new task was started: {}",
        driver.stderr()
    );

    // stdin closes: the task ends.
    driver.ok(json!({"op": "close"})).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while tasks_of_bot(&s, Some("ended")).await.is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "the task was not ended: {}",
            driver.stderr()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Nothing secret reached the log.
    let log = driver.stderr();
    assert!(!log.contains("eyJ"), "a token in the log: {log}");
}

#[tokio::test]
async fn a_call_needing_approval_surfaces_the_url_and_completes_once_approved() {
    let (s, _everything, key) = setup().await;
    let mut driver = stdio_client(connect_argv(&s, &key, &[]), Some("accept")).await;
    let (carol, _) = s.human_with_own_token("carol@example.com", &["approver"]).await;

    // The production write needs a human: the call waits while an approver approves it.
    let call = driver.send(json!({"op": "call_tool", "name": "toggle-simulated-logging",
                                  "arguments": {}, "timeout": 60}));
    let approve = async {
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            let pending = s.json(&["approvals", "list", "--state", "pending"]).await;
            let id = pending
                .as_array()
                .or_else(|| pending["approvals"].as_array())
                .and_then(|a| a.first())
                .and_then(|a| a["id"].as_str())
                .map(str::to_owned);
            if let Some(id) = id {
                let approved = s
                    .run_as(&carol, &["approvals", "approve", &id, "-o", "json"])
                    .await
                    .ok()
                    .json();
                assert_eq!(approved["state"], "approved", "{approved}");
                return id;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "no approval request was opened"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    };
    let (answer, approval) = tokio::join!(call, approve);
    assert!(
        called(&answer).contains("simulated"),
        "{answer}\n{}",
        driver.stderr()
    );

    // The client was shown the approval's URL (URL-mode elicitation), and so was the log.
    let elicited = driver.ok(json!({"op": "elicitations"})).await;
    let first = &elicited["elicitations"][0];
    assert_eq!(first["mode"], "url", "{elicited}");
    assert!(
        first["url"]
            .as_str()
            .unwrap_or("")
            .ends_with(&format!("/v1/approvals/{approval}")),
        "{elicited}"
    );
    assert!(
        first["message"].as_str().unwrap_or("").contains(&approval),
        "{elicited}"
    );
    assert!(
        driver.stderr().contains(&format!("/v1/approvals/{approval}")),
        "{}",
        driver.stderr()
    );
}

#[tokio::test]
async fn a_key_file_readable_by_others_is_refused() {
    use std::os::unix::fs::PermissionsExt as _;
    let (s, _everything, key) = setup().await;
    let open = s.path("open.key");
    std::fs::copy(&key, &open).expect("copying the key");
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let argv = connect_argv(&s, &open, &[]);
    let args: Vec<&str> = argv[1..].iter().map(String::as_str).collect();
    let err = s.agent(&args).await.fails(1);
    assert!(
        err.contains(&format!("{}", open.display()))
            && err.contains("accessible by group or others (mode 644)"),
        "{err}"
    );
    let seed = serde_json::from_str::<Value>(&std::fs::read_to_string(&open).unwrap()).unwrap()["seed"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(!err.contains(&seed), "the key was printed");
    assert!(tasks_of_bot(&s, None).await.is_empty(), "no task was started");
}
