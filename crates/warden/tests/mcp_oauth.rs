//! An off-the-shelf MCP client with no Warden code, through a real `warden serve` (SQLite and
//! PostgreSQL) to the official reference server `@modelcontextprotocol/server-everything`: the
//! official MCP Python SDK's `PrivateKeyJWTOAuthProvider` (`tests/mcp/oauth_client.py`), given only
//! the endpoint's URL, the agent's id and its enrolled key as PEM (`warden agent enroll --pem-out`).
//!
//! The SDK finds everything else itself — the 401's `resource_metadata`, the protected resource's
//! metadata (RFC 9728), the authorization server's metadata (RFC 8414), the token endpoint — and
//! authenticates with `private_key_jwt` (RFC 7523, `EdDSA`, no `kid`), asking for the endpoint as
//! its resource (RFC 8707). The task gets the agent's default intent (`warden agent update
//! --default-intent`). Task tokens here live 3 seconds: the client's second call comes after its
//! token expired, and the SDK gets a new one by itself, in the same MCP session (the grant continues
//! the agent's live task, to which the session is bound).
//!
//! Needs python3 with the pinned `mcp` and the npm packages in `tests/mcp` (scripts/test installs
//! them); without them this fails and says so.
#![allow(clippy::expect_used, clippy::unwrap_used)]

#[macro_use]
mod common;

use std::path::Path;

use common::mcp::{EverythingServer, mcp_dir};
use common::{Backend, Server, Spawn};
use serde_json::{Value, json};

on_both_backends!(sdk_client_credentials_survive_token_expiry);

fn path_str(p: &Path) -> &str {
    p.to_str().expect("UTF-8 path")
}

/// Runs `oauth_client.py` with `args`; its JSON lines and its exit status.
async fn oauth_client(args: &[&str]) -> (Vec<Value>, bool, String) {
    let script = mcp_dir().join("oauth_client.py");
    let out = tokio::process::Command::new("python3")
        .arg(&script)
        .args(args)
        .env_remove("HTTP_PROXY")
        .env_remove("HTTPS_PROXY")
        .env_remove("ALL_PROXY")
        .output()
        .await
        .expect("python3 (with the pinned `mcp`; run scripts/test) runs oauth_client.py");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let lines = stdout
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    (
        lines,
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

async fn sdk_client_credentials_survive_token_expiry(backend: Backend) {
    let everything = EverythingServer::start().await;
    let s = Server::spawn(
        backend,
        Spawn {
            config: Some("[tokens]\ntask_token_ttl_secs = 3\n".into()),
            ..Default::default()
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
    let join = s.path("bot.jt");
    s.run(&[
        "agent",
        "register",
        "bot",
        "--owner",
        "alice@example.com",
        "--environment",
        "staging",
        "--model",
        "anthropic/claude-sonnet@4.5",
        "--upstream",
        "everything",
        "--join-token-out",
        path_str(&join),
    ])
    .await
    .ok();
    let key = s.path("bot.key");
    let pem = s.path("bot.pem");
    let enrolled = s
        .agent(&[
            "agent",
            "enroll",
            "--join-token-file",
            path_str(&join),
            "--key-out",
            path_str(&key),
            "--pem-out",
            path_str(&pem),
            "-o",
            "json",
        ])
        .await
        .ok()
        .json();
    let spiffe = enrolled["spiffe_id"].as_str().expect("spiffe_id").to_owned();
    let pem_text = std::fs::read_to_string(&pem).expect("the PEM file");
    assert!(
        pem_text.starts_with("-----BEGIN PRIVATE KEY-----\n"),
        "PKCS#8 PEM"
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&pem).expect("pem").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "the PEM file is the agent's alone");
    }
    s.run(&["agent", "activate", "bot"]).await.ok();
    let intent = json!([{"type": "warden_task", "purpose": "answer with echo", "task_type": "e2e",
                         "upstreams": ["everything"], "tools": ["echo"]}]);
    s.run(&["agent", "update", "bot", "--default-intent", &intent.to_string()])
        .await
        .ok();

    let url = s.endpoint("/mcp/everything");
    let issuer = s.url.trim_end_matches('/').to_owned();
    let (lines, ok, stderr) = oauth_client(&[
        "--url",
        &url,
        "--client-id",
        &spiffe,
        "--key-pem",
        path_str(&pem),
        "--issuer",
        &issuer,
        "--calls",
        "2",
        "--sleep",
        "5",
    ])
    .await;
    assert!(
        ok,
        "the SDK client failed: {lines:?}\nstderr:\n{stderr}\nwarden:\n{}",
        s.log()
    );
    let step = |name: &str| -> Vec<&Value> { lines.iter().filter(|l| l["step"] == name).collect() };
    assert_eq!(step("connect").len(), 1, "{lines:?}");
    assert_eq!(
        step("list_tools")[0]["tools"],
        json!(["echo"]),
        "only the default intent's tool"
    );
    let calls = step("call");
    assert_eq!(calls.len(), 2, "{lines:?}");
    for (n, call) in calls.iter().enumerate() {
        assert_eq!(call["isError"], false, "{call}");
        assert_eq!(call["text"], format!("Echo: call {}", n + 1), "{call}");
    }
    let http = step("http")[0];
    // One token at the start, one after the first expired: the SDK did it on its own, after 401s
    // that pointed it at the resource's metadata.
    assert!(http["token_requests"].as_u64().unwrap() >= 2, "{http}");
    assert!(http["unauthorized"].as_u64().unwrap() >= 2, "{http}");
    assert!(
        http["metadata_requests"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p == "/.well-known/oauth-protected-resource/mcp/everything"),
        "{http}"
    );

    // One task: the second token continued it (decided again, recorded as a renewal).
    let tasks = s.json(&["task", "list", "--agent", "bot"]).await;
    let tasks = tasks.as_array().expect("tasks");
    assert_eq!(tasks.len(), 1, "{tasks:?}");
    assert_eq!(tasks[0]["intent"][0]["tools"], json!(["echo"]));
    // Neither the key nor any token reached the server's log.
    let log = s.log();
    let pem_body: String = pem_text.lines().filter(|l| !l.starts_with("-----")).collect();
    assert!(!log.contains(&pem_body), "the key reached the log");
    assert!(
        !log.contains("eyJhbGciOiJFZERTQSIsInR5cCI6IkpXVCJ9."),
        "an assertion reached the log"
    );
    s.audit_verify().await;
}
