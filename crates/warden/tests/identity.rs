//! End-to-end tests of agent identity and task credentials through the real `warden` binary: an admin
//! registers an agent, the agent enrolls its own key and starts, renews, delegates and ends tasks with
//! the CLI, and admins inspect and end them; on SQLite and PostgreSQL.
//!
//! Also here, because they need real processes:
//! - interop: a task token verified by an independent JWT implementation (Python's PyJWT) from nothing
//!   but the JWK Set (`tests/interop/verify_task_token.py`);
//! - federation: tokens of an external OIDC issuer, made by Python (`tests/interop/federated_tokens.py`),
//!   exchanged for task tokens, and forgeries, unmapped subjects and replays refused;
//! - two nodes on one PostgreSQL database: a task ended on one node stops working on the other.
//!
//! The Python tests need `python3` with PyJWT (`python3 -m pip install 'pyjwt[crypto]>=2.8'`, which
//! `scripts/test` does when it is missing); without it they fail and say so, they never skip.

// Test code: a failed `expect` is a failed test, with its message.
#![allow(clippy::expect_used, clippy::unwrap_used)]

#[macro_use]
mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::{Value, json};

use common::{Backend, Server, Spawn};

on_both_backends!(
    enroll_start_end,
    delegation_narrows_and_cascades,
    dpop_binds_tasks_to_the_agent_key,
    key_rotation_and_human_removal,
    task_token_verifies_with_pyjwt,
);

const PYJWT_INSTALL: &str = "python3 -m pip install 'pyjwt[crypto]>=2.8'";

// ----------------------------------------------------------------------------------------------------
// Helpers

/// An owner and two upstreams, `crm` and `db`.
async fn setup(s: &Server) {
    s.add_owner().await;
    for name in ["crm", "db"] {
        s.run(&[
            "upstream",
            "add",
            name,
            "--kind",
            "mcp",
            "--url",
            &format!("https://{name}.example.com/mcp"),
            "--environment",
            "staging",
            "--owner",
            "alice@example.com",
            "--sensitivity",
            "internal",
        ])
        .await
        .ok();
    }
}

fn register_args<'a>(name: &'a str, upstreams: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec![
        "agent",
        "register",
        name,
        "--owner",
        "alice@example.com",
        "--environment",
        "staging",
        "--model",
        "anthropic/claude-sonnet@4.5",
    ];
    for u in upstreams {
        args.extend(["--upstream", u]);
    }
    args
}

/// An enrolled agent: its name, SPIFFE ID and key file.
struct Agent {
    name: String,
    spiffe: String,
    key: PathBuf,
    kid: String,
}

impl Agent {
    fn key(&self) -> &str {
        self.key.to_str().expect("UTF-8 path")
    }
}

fn path_str(p: &Path) -> &str {
    p.to_str().expect("UTF-8 path")
}

/// Registers `name` (the join token written to a file), enrolls it with the CLI, and activates it.
async fn onboard(s: &Server, name: &str, upstreams: &[&str]) -> Agent {
    let join = s.path(&format!("{name}.jt"));
    let mut args = register_args(name, upstreams);
    args.extend(["--join-token-out", path_str(&join), "-o", "json"]);
    let reg = s.run(&args).await.ok().json();
    assert!(reg.get("join_token").is_none(), "{reg:#}");
    assert_eq!(reg["join_token_file"], path_str(&join));
    assert_eq!(file_mode(&join), 0o600);
    let key = s.path(&format!("{name}.key"));
    let enrolled = s
        .agent(&[
            "agent",
            "enroll",
            "--join-token-file",
            path_str(&join),
            "--key-out",
            path_str(&key),
            "-o",
            "json",
        ])
        .await
        .ok()
        .json();
    s.run(&["agent", "activate", name]).await.ok();
    Agent {
        name: name.to_owned(),
        spiffe: enrolled["spiffe_id"].as_str().expect("spiffe_id").to_owned(),
        key,
        kid: enrolled["kid"].as_str().expect("kid").to_owned(),
    }
}

/// `task start` as `agent` with `extra` flags, the token written to `out` (in `cwd/`); the JSON answer.
async fn start(s: &Server, agent: &Agent, out: &str, extra: &[&str]) -> Value {
    let args = start_args(s, agent, out, extra);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    check_started(s.agent(&args).await.ok().json(), s, out)
}

fn start_args(s: &Server, agent: &Agent, out: &str, extra: &[&str]) -> Vec<String> {
    let out = s.path(out);
    let mut args: Vec<String> = [
        "task",
        "start",
        "--key",
        agent.key(),
        "--agent-id",
        &agent.name,
        "--purpose",
        "reconcile invoices",
        "--type",
        "billing",
        "--token-out",
        path_str(&out),
        "-o",
        "json",
    ]
    .map(str::to_owned)
    .to_vec();
    args.extend(extra.iter().map(|a| (*a).to_owned()));
    args
}

/// Checks what `task start` printed (the token went to the file, mode 0600).
fn check_started(started: Value, s: &Server, out: &str) -> Value {
    let out = s.path(out);
    assert!(started.get("access_token").is_none(), "{started:#}");
    assert_eq!(started["token_file"], path_str(&out));
    assert_eq!(file_mode(&out), 0o600);
    started
}

fn file_mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o777
}

fn read_token(path: &Path) -> String {
    std::fs::read_to_string(path)
        .expect("token file")
        .trim()
        .to_owned()
}

/// The claims of a compact JWS, unverified.
fn claims_of(token: &str) -> Value {
    let payload = token.split('.').nth(1).expect("a JWS has a payload");
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .expect("base64url");
    serde_json::from_slice(&bytes).expect("JSON claims")
}

fn header_of(token: &str) -> Value {
    let header = token.split('.').next().expect("a JWS has a header");
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(header)
        .expect("base64url");
    serde_json::from_slice(&bytes).expect("JSON header")
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .unwrap_or_else(|| panic!("not an array: {v}"))
        .iter()
        .map(|s| s.as_str().expect("a string").to_owned())
        .collect()
}

/// `task current` with a task token file: the JSON answer.
async fn current(s: &Server, token_file: &Path) -> Value {
    s.agent(&[
        "task",
        "current",
        "--task-token-file",
        path_str(token_file),
        "-o",
        "json",
    ])
    .await
    .ok()
    .json()
}

/// `python3`, checked to have PyJWT and cryptography; a failed test that says how to install them
/// otherwise.
fn python3() -> Command {
    let check = Command::new("python3")
        .args(["-c", "import jwt, cryptography"])
        .output();
    match check {
        Err(e) => panic!(
            "these tests need python3 ({e}); install Python 3, then run `{PYJWT_INSTALL}` (scripts/test \
             installs PyJWT when python3 is there)"
        ),
        Ok(o) if !o.status.success() => panic!(
            "these tests need PyJWT and cryptography for python3: run `{PYJWT_INSTALL}` (scripts/test does \
             this when they are missing)\n{}",
            String::from_utf8_lossy(&o.stderr)
        ),
        Ok(_) => Command::new("python3"),
    }
}

fn interop_script(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/interop")
        .join(name)
}

// ----------------------------------------------------------------------------------------------------
// Scenarios on both backends

/// Register (join token shown once) → enroll with the CLI (key 0600, join token single use) → refused
/// while pending review → activate → `task start` → `task current` → `task end ID` → `task current`
/// fails, saying the task ended; a suspended agent's `task start` is denied.
async fn enroll_start_end(backend: Backend) {
    let s = Server::start(backend).await;
    setup(&s).await;

    // Table mode: the agent on stdout, the join token labelled on stderr.
    let out = s.run(&register_args("bot", &["crm"])).await.ok();
    assert!(
        out.stdout.contains("name:") && out.stdout.contains("bot"),
        "{}",
        out.stdout
    );
    assert!(
        !out.stdout.contains("wdn_jt_"),
        "stdout stays the agent: {}",
        out.stdout
    );
    assert!(
        out.stderr.contains("join token for bot (shown only once"),
        "{}",
        out.stderr
    );
    let join = out
        .stderr
        .lines()
        .last()
        .expect("the token line")
        .trim()
        .to_owned();
    assert!(join.starts_with("wdn_jt_"), "{}", out.stderr);

    // Enrollment reads the join token from the environment (never argv) and writes a new 0600 key.
    let key = s.path("bot.key");
    let enrolled = s
        .run_env(
            &s.cwd(),
            &["agent", "enroll", "--key-out", path_str(&key), "-o", "json"],
            &[("WARDEN_JOIN_TOKEN", &join)],
        )
        .await
        .ok()
        .json();
    assert_eq!(enrolled["agent"], "bot");
    assert_eq!(enrolled["spiffe_id"], "spiffe://warden.local/agent/bot");
    assert_eq!(enrolled["key_file"], path_str(&key));
    assert_eq!(file_mode(&key), 0o600);
    let key_text = std::fs::read_to_string(&key).expect("key file");

    // The join token is single use; the refused enrollment leaves no key file behind.
    let join_file = s.token_file("bot-join", &join);
    let key2 = s.path("bot2.key");
    let e = s
        .agent(&[
            "agent",
            "enroll",
            "--join-token-file",
            path_str(&join_file),
            "--key-out",
            path_str(&key2),
        ])
        .await
        .fails(1);
    assert!(
        e.contains("already been used") && e.contains("invalid_grant"),
        "{e}"
    );
    assert!(!e.contains(&join), "the join token is never printed: {e}");
    assert!(!key2.exists(), "a failed enrollment leaves no key");

    // An existing key file is never overwritten.
    let fresh = s
        .run(&[
            "agent",
            "join-token",
            "bot",
            "--out",
            path_str(&s.path("fresh.jt")),
        ])
        .await
        .ok();
    assert!(fresh.stdout.contains("join_token_file:"), "{}", fresh.stdout);
    let e = s
        .agent(&[
            "agent",
            "enroll",
            "--join-token-file",
            path_str(&s.path("fresh.jt")),
            "--key-out",
            path_str(&key),
        ])
        .await
        .fails(1);
    assert!(e.contains("already exists"), "{e}");
    assert_eq!(std::fs::read_to_string(&key).expect("key"), key_text);

    let bot = Agent {
        name: "bot".into(),
        spiffe: "spiffe://warden.local/agent/bot".into(),
        key: key.clone(),
        kid: enrolled["kid"].as_str().expect("kid").into(),
    };
    let start_args = |out: &'static str| {
        vec![
            "task",
            "start",
            "--key",
            path_str(&key),
            "--agent-id",
            "bot",
            "--purpose",
            "reconcile invoices",
            "--type",
            "billing",
            "--upstream",
            "crm",
            "--token-out",
            out,
        ]
    };

    // Not yet reviewed: no task.
    let e = s.agent(&start_args("early.tt")).await.fails(1);
    assert!(e.contains("access_denied") && e.contains("pending_review"), "{e}");
    assert!(
        !s.path("early.tt").exists(),
        "a refused start leaves no token file"
    );
    s.run(&["agent", "activate", "bot"]).await.ok();

    // Bad intent flags are refused before anything is sent.
    let mut bad = start_args("bad.tt");
    bad[9] = "Billing Run";
    let e = s.agent(&bad).await.fails(2);
    assert!(e.contains("--type: "), "{e}");
    let mut bad = start_args("bad.tt");
    bad.extend(["--tool", "search", "--tool", "search"]);
    let e = s.agent(&bad).await.fails(2);
    assert!(e.contains("--tool: `search` is listed twice"), "{e}");
    assert_eq!(s.json(&["task", "list"]).await, json!([]));

    let started = start(&s, &bot, "bot.tt", &["--upstream", "crm", "--tool", "search"]).await;
    assert_eq!(started["token_type"], "Bearer");
    assert_eq!(started["authorization_details"][0]["upstreams"], json!(["crm"]));
    let task_id = started["task_id"].as_str().expect("task_id").to_owned();
    let token_file = s.path("bot.tt");
    let token = read_token(&token_file);
    assert_eq!(claims_of(&token)["sub"], bot.spiffe);

    let cur = current(&s, &token_file).await;
    assert_eq!(cur["task"]["id"], task_id.as_str());
    assert_eq!(cur["task"]["state"], "active");
    assert_eq!(cur["sub"], bot.spiffe);
    let table = s
        .agent(&["task", "current", "--task-token-file", path_str(&token_file)])
        .await
        .ok()
        .stdout;
    assert!(table.contains("state:") && table.contains("active"), "{table}");
    assert!(!table.contains(&token), "{table}");

    // Admins see it.
    let listed = s
        .json(&["task", "list", "--agent", "bot", "--state", "active"])
        .await;
    assert_eq!(listed[0]["id"], task_id.as_str(), "{listed:#}");
    let shown = s.json(&["task", "show", &task_id]).await;
    assert_eq!(shown["agent"], "bot");
    let table = s.run(&["task", "list"]).await.ok().stdout;
    assert!(table.starts_with("ID ") && table.contains(&task_id), "{table}");

    // Without --token-out, table mode prints the token alone on stdout, once, and a notice on stderr.
    let mut args = start_args("unused");
    args.truncate(args.len() - 2);
    let out = s.agent(&args).await.ok();
    assert_eq!(out.stdout.lines().count(), 1, "{}", out.stdout);
    assert_eq!(claims_of(out.stdout.trim())["sub"], bot.spiffe);
    assert!(out.stderr.contains("shown only once"), "{}", out.stderr);

    // An admin ends the task: its token stops working, and the CLI says why.
    let ended = s
        .json(&["task", "end", &task_id, "--reason", "done for today"])
        .await;
    assert_eq!(ended["stopped"], json!([task_id]));
    let e = s
        .agent(&["task", "current", "--task-token-file", path_str(&token_file)])
        .await
        .fails(1);
    assert!(e.contains("ended") && e.contains("HTTP 401"), "{e}");
    assert!(!e.contains(&token), "the token is never printed: {e}");
    let shown = s.json(&["task", "show", &task_id]).await;
    assert_eq!(shown["state"], "ended");
    assert_eq!(shown["end_reason"], "done for today");
    let e = s.run(&["task", "end", &task_id]).await.fails(1);
    assert!(e.contains("HTTP 409"), "ending twice: {e}");

    // A suspended agent gets no task.
    s.run(&["agent", "suspend", "bot"]).await.ok();
    let e = s.agent(&start_args("late.tt")).await.fails(1);
    assert!(e.contains("access_denied") && e.contains("suspended"), "{e}");
}

/// A delegation via the CLI narrows the scope to the parent's and the child's own allowed upstreams,
/// records the chain, cannot widen, and dies with its parent.
async fn delegation_narrows_and_cascades(backend: Backend) {
    let s = Server::start(backend).await;
    setup(&s).await;
    let planner = onboard(&s, "planner", &["crm", "db"]).await;
    let worker = onboard(&s, "worker", &["crm"]).await;

    let parent = start(
        &s,
        &planner,
        "planner.tt",
        &[
            "--upstream",
            "crm",
            "--upstream",
            "db",
            "--tool",
            "search",
            "--tool",
            "update",
            "--dataset",
            "invoices",
        ],
    )
    .await;
    let parent_id = parent["task_id"].as_str().expect("task_id").to_owned();
    let parent_file = s.path("planner.tt");

    let child = s
        .agent(&[
            "task",
            "delegate",
            "--key",
            worker.key(),
            "--agent-id",
            &worker.spiffe,
            "--task-token-file",
            path_str(&parent_file),
            "--tool",
            "search",
            "--token-out",
            path_str(&s.path("worker.tt")),
            "-o",
            "json",
        ])
        .await
        .ok()
        .json();
    let child_id = child["task_id"].as_str().expect("task_id").to_owned();
    assert_ne!(child_id, parent_id);
    let child_token = read_token(&s.path("worker.tt"));
    let claims = claims_of(&child_token);
    assert_eq!(claims["sub"], worker.spiffe);
    assert_eq!(claims["act"]["sub"], planner.spiffe, "the chain is recorded");
    let scope = &claims["authorization_details"][0];
    let ups = strings(&scope["upstreams"]);
    assert!(!ups.is_empty(), "{claims:#}");
    for u in &ups {
        assert!(
            ["crm", "db"].contains(&u.as_str()),
            "`{u}` is not in the parent's scope"
        );
        assert_eq!(u, "crm", "`{u}` is not among the worker's allowed upstreams");
    }
    assert_eq!(strings(&scope["tools"]), ["search"]);
    assert_eq!(
        scope["purpose"], "reconcile invoices",
        "inherited from the parent"
    );
    assert_eq!(child["authorization_details"], claims["authorization_details"]);

    let cur = current(&s, &s.path("worker.tt")).await;
    assert_eq!(cur["task"]["parent_id"], parent_id.as_str());
    assert_eq!(cur["task"]["depth"], 1);
    assert_eq!(cur["act"]["sub"], planner.spiffe);

    // A delegation never widens.
    let e = s
        .agent(&[
            "task",
            "delegate",
            "--key",
            worker.key(),
            "--agent-id",
            "worker",
            "--task-token-file",
            path_str(&parent_file),
            "--tool",
            "delete_everything",
        ])
        .await
        .fails(1);
    assert!(
        e.contains("access_denied") && e.contains("delete_everything"),
        "{e}"
    );
    // Renewal is for the token's own agent only.
    let e = s
        .agent(&[
            "task",
            "renew",
            "--key",
            worker.key(),
            "--agent-id",
            "worker",
            "--task-token-file",
            path_str(&parent_file),
        ])
        .await
        .fails(1);
    assert!(e.contains("only its own agent renews"), "{e}");

    // The parent renews: same task, a fresh token.
    let renewed = s
        .agent(&[
            "task",
            "renew",
            "--key",
            planner.key(),
            "--agent-id",
            "planner",
            "--task-token-file",
            path_str(&parent_file),
            "--token-out",
            path_str(&s.path("planner2.tt")),
            "-o",
            "json",
        ])
        .await
        .ok()
        .json();
    assert_eq!(renewed["task_id"], parent_id.as_str());
    assert_ne!(read_token(&s.path("planner2.tt")), read_token(&parent_file));

    // The planner ends its task itself; the delegated task dies with it.
    let ended = s
        .agent(&[
            "task",
            "end",
            "--task-token-file",
            path_str(&s.path("planner2.tt")),
            "--reason",
            "handed off",
            "-o",
            "json",
        ])
        .await
        .ok()
        .json();
    let stopped = strings(&ended["stopped"]);
    assert!(
        stopped.contains(&parent_id) && stopped.contains(&child_id),
        "{ended:#}"
    );
    let e = s
        .agent(&[
            "task",
            "current",
            "--task-token-file",
            path_str(&s.path("worker.tt")),
        ])
        .await
        .fails(1);
    assert!(e.contains("revoked") && e.contains("HTTP 401"), "{e}");
    assert_eq!(s.json(&["task", "show", &child_id]).await["state"], "revoked");
}

/// `task start --dpop` binds the task to the agent's key: the token alone is refused, the CLI makes a
/// proof with `--key` (and refuses another key before sending), renewals stay bound, and a task
/// delegated from it is bound to the child's key.
async fn dpop_binds_tasks_to_the_agent_key(backend: Backend) {
    let s = Server::start(backend).await;
    setup(&s).await;
    let bot = onboard(&s, "bot", &["crm"]).await;
    let other = onboard(&s, "other", &["crm"]).await;
    let started = start(&s, &bot, "bound.tt", &["--upstream", "crm", "--dpop"]).await;
    assert_eq!(started["token_type"], "DPoP");
    let file = s.path("bound.tt");
    let token = read_token(&file);
    assert_eq!(claims_of(&token)["cnf"]["jkt"], bot.kid.as_str());

    let e = s
        .agent(&["task", "current", "--task-token-file", path_str(&file)])
        .await
        .fails(1);
    assert!(e.contains("DPoP-bound") && e.contains("--key"), "{e}");
    let e = s
        .agent(&[
            "task",
            "current",
            "--task-token-file",
            path_str(&file),
            "--key",
            other.key(),
        ])
        .await
        .fails(1);
    assert!(e.contains(&other.kid), "{e}");
    let cur = s
        .agent(&[
            "task",
            "current",
            "--task-token-file",
            path_str(&file),
            "--key",
            bot.key(),
            "-o",
            "json",
        ])
        .await
        .ok()
        .json();
    assert_eq!(cur["task"]["cnf_jkt"], bot.kid.as_str());

    // Stolen, the token alone is useless.
    let r = reqwest::Client::new()
        .get(s.endpoint("/v1/task"))
        .bearer_auth(&token)
        .send()
        .await
        .expect("request");
    assert_eq!(r.status().as_u16(), 401);

    let renewed = s
        .agent(&[
            "task",
            "renew",
            "--key",
            bot.key(),
            "--agent-id",
            "bot",
            "--task-token-file",
            path_str(&file),
            "--token-out",
            path_str(&s.path("bound2.tt")),
            "-o",
            "json",
        ])
        .await
        .ok()
        .json();
    assert_eq!(renewed["token_type"], "DPoP");

    // Delegating from a bound token needs the parent's key for the proof, and (issue 15: delegation
    // used to drop DPoP) the child is bound to the child's key: the CLI sends the child's proof made
    // with --key, and the child token is useless without that key.
    let child_file = s.path("child.tt");
    let mut args = vec![
        "task",
        "delegate",
        "--key",
        other.key(),
        "--agent-id",
        "other",
        "--task-token-file",
        path_str(&file),
        "--token-out",
        path_str(&child_file),
        "-o",
        "json",
    ];
    let e = s.agent(&args).await.fails(1);
    assert!(e.contains("DPoP-bound") && e.contains("--parent-key"), "{e}");
    args.extend(["--parent-key", bot.key()]);
    let child = s.agent(&args).await.ok().json();
    assert_eq!(child["token_type"], "DPoP", "{child:#}");
    let child_token = read_token(&child_file);
    assert_eq!(claims_of(&child_token)["cnf"]["jkt"], other.kid.as_str());
    let r = reqwest::Client::new()
        .get(s.endpoint("/v1/task"))
        .bearer_auth(&child_token)
        .send()
        .await
        .expect("request");
    assert_eq!(r.status().as_u16(), 401, "a stolen child token alone is useless");
    let e = s
        .agent(&[
            "task",
            "current",
            "--task-token-file",
            path_str(&child_file),
            "--key",
            bot.key(),
        ])
        .await
        .fails(1);
    assert!(e.contains(&other.kid), "the parent's key is not the child's: {e}");
    let cur = s
        .agent(&[
            "task",
            "current",
            "--task-token-file",
            path_str(&child_file),
            "--key",
            other.key(),
            "-o",
            "json",
        ])
        .await
        .ok()
        .json();
    assert_eq!(cur["task"]["cnf_jkt"], other.kid.as_str());
    assert_eq!(cur["task"]["id"], child["task_id"]);

    let ended = s
        .agent(&[
            "task",
            "end",
            "--task-token-file",
            path_str(&s.path("bound2.tt")),
            "--key",
            bot.key(),
            "-o",
            "json",
        ])
        .await
        .ok()
        .json();
    let mut stopped = strings(&ended["stopped"]);
    stopped.sort();
    let mut want = vec![
        started["task_id"].as_str().expect("id").to_owned(),
        child["task_id"].as_str().expect("id").to_owned(),
    ];
    want.sort();
    assert_eq!(stopped, want, "the delegated task ends with its parent");
}

/// `keys rotate` keeps tokens signed before valid and signs new ones with the new key; `human remove`
/// suspends the agents the human was the last owner of and kills their tasks.
async fn key_rotation_and_human_removal(backend: Backend) {
    let s = Server::start(backend).await;
    setup(&s).await;
    let bot = onboard(&s, "bot", &["crm"]).await;
    start(&s, &bot, "before.tt", &[]).await;
    let before = read_token(&s.path("before.tt"));

    let rotated = s.json(&["keys", "rotate"]).await;
    let (old_kid, new_kid) = (
        rotated["old_kid"].as_str().expect("old_kid"),
        rotated["new_kid"].as_str().expect("new_kid"),
    );
    assert_ne!(old_kid, new_kid);
    assert_eq!(header_of(&before)["kid"], old_kid);
    current(&s, &s.path("before.tt")).await;
    start(&s, &bot, "after.tt", &[]).await;
    assert_eq!(header_of(&read_token(&s.path("after.tt")))["kid"], new_kid);
    let table = s.run(&["keys", "rotate"]).await.ok().stdout;
    assert!(table.contains("old_kid:") && table.contains(new_kid), "{table}");

    let removed = s.json(&["human", "remove", "alice@example.com"]).await;
    assert_eq!(removed["orphaned_agents"], json!(["bot"]), "{removed:#}");
    assert_eq!(removed["revoked_tasks"], 2, "{removed:#}");
    for file in ["before.tt", "after.tt"] {
        let e = s
            .agent(&["task", "current", "--task-token-file", path_str(&s.path(file))])
            .await
            .fails(1);
        assert!(e.contains("revoked"), "{e}");
    }
    assert_eq!(s.json(&["agent", "show", "bot"]).await["state"], "suspended");
    let e = s.run(&["human", "remove", "alice@example.com"]).await.fails(1);
    assert!(e.contains("HTTP 409"), "{e}");
}

/// A task token verifies with PyJWT, from the JWK Set alone: signature (EdDSA), `iss`, `aud`, `exp`.
async fn task_token_verifies_with_pyjwt(backend: Backend) {
    let mut python = python3();
    let s = Server::start(backend).await;
    setup(&s).await;
    let bot = onboard(&s, "bot", &["crm"]).await;
    let started = start(&s, &bot, "bot.tt", &["--upstream", "crm"]).await;
    let file = s.path("bot.tt");

    let out = python
        .arg(interop_script("verify_task_token.py"))
        .args(["--server", &s.url, "--issuer", &s.url, "--token-file"])
        .arg(&file)
        .output()
        .expect("running python3");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "PyJWT refused the token: {stderr}");
    let claims: Value = serde_json::from_slice(&out.stdout).expect("claims as JSON");
    assert_eq!(claims["sub"], bot.spiffe);
    assert_eq!(claims["task_id"], started["task_id"]);
    assert_eq!(claims["iss"], s.url.as_str());

    // The script does check: a token with a changed signature, or for another issuer, is refused.
    let token = read_token(&file);
    let (signed, sig) = token.rsplit_once('.').expect("JWS");
    let flipped = if sig.starts_with('A') { "B" } else { "A" };
    let forged = s.token_file("forged", &format!("{signed}.{flipped}{}", &sig[1..]));
    for (token_file, issuer) in [(&forged, s.url.as_str()), (&file, "http://elsewhere.test")] {
        let out = python3()
            .arg(interop_script("verify_task_token.py"))
            .args(["--server", &s.url, "--issuer", issuer, "--token-file"])
            .arg(token_file)
            .output()
            .expect("running python3");
        assert_eq!(
            out.status.code(),
            Some(1),
            "{}",
            String::from_utf8_lossy(&out.stdout)
        );
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("does not verify"),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

// ----------------------------------------------------------------------------------------------------
// Federation (SQLite: the issuer is configuration, the store is not involved beyond jti memory)

const FEDERATED_ISSUER: &str = "https://k8s.example.test";
const FEDERATED_SUB: &str = "system:serviceaccount:ns:bot";

/// Tokens of a trusted OIDC issuer (ES256, made by Python) are exchanged for task tokens; a token
/// signed by another key, one whose subject maps to no agent, and a replayed one are refused (401).
/// Issue 15: a token without `jti` is accepted once — replayed as is, or with its ECDSA signature
/// rewritten, it is refused — and a token without `iat` or valid longer than the issuer's
/// `max_token_lifetime_secs` (here 600 s; a 30-day token) is refused, naming the claim.
#[tokio::test]
async fn federated_identity_via_oidc_issuer() {
    let mut python = python3();
    let keys = tempfile::tempdir().expect("temporary directory");
    let jwks = keys.path().join("jwks.json");
    let out = python
        .arg(interop_script("federated_tokens.py"))
        .args(["--jwks-out", path_str(&jwks)])
        .args(["--issuer", FEDERATED_ISSUER, "--audience", "warden"])
        .args([
            "--sub",
            FEDERATED_SUB,
            "--unmapped-sub",
            "system:serviceaccount:ns:intruder",
        ])
        .output()
        .expect("running python3");
    assert!(
        out.status.success(),
        "federated_tokens.py failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let tokens: Value = serde_json::from_slice(&out.stdout).expect("tokens as JSON");
    let config = format!(
        r#"
[[federation]]
name = "cluster"
kind = "oidc"
issuer = "{FEDERATED_ISSUER}"
audiences = ["warden"]
algorithms = ["ES256"]
jwks_file = "{}"
claim = "sub"
max_token_lifetime_secs = 600
mapping = {{ "{FEDERATED_SUB}" = "bot" }}
"#,
        jwks.display()
    );
    let s = Server::spawn(
        Backend::Sqlite,
        Spawn {
            config: Some(config),
            ..Spawn::default()
        },
    )
    .await;
    setup(&s).await;
    // A registered, active agent; it never enrolls a key of its own.
    s.run(&register_args("bot", &["crm"])).await.ok();
    s.run(&["agent", "activate", "bot"]).await.ok();

    let http = reqwest::Client::new();
    let details = json!([{"type": "warden_task", "purpose": "nightly sync", "task_type": "sync",
                          "upstreams": ["crm"]}])
    .to_string();
    let exchange = |token: &str| {
        http.post(s.endpoint("/v1/token"))
            .form(&[
                ("grant_type", "urn:ietf:params:oauth:grant-type:token-exchange"),
                ("subject_token", token),
                ("subject_token_type", "urn:ietf:params:oauth:token-type:jwt"),
                ("authorization_details", details.as_str()),
            ])
            .send()
    };
    let token = |name: &str| tokens[name].as_str().expect("token").to_owned();

    let r = exchange(&token("good")).await.expect("request");
    assert_eq!(r.status().as_u16(), 200);
    let issued: Value = r.json().await.expect("JSON");
    let task_token = issued["access_token"].as_str().expect("access_token");
    assert_eq!(claims_of(task_token)["sub"], "spiffe://warden.local/agent/bot");
    assert_eq!(issued["authorization_details"][0]["upstreams"], json!(["crm"]));
    let task_file = s.token_file("federated-task", task_token);
    let cur = current(&s, &task_file).await;
    assert_eq!(cur["task"]["agent"], "bot");
    assert_eq!(cur["task"]["id"], issued["task_id"]);

    for (name, why) in [
        ("good", "replay"),
        ("other_key", "signature"),
        ("unmapped", "intruder"),
    ] {
        let r = exchange(&token(name)).await.expect("request");
        let status = r.status().as_u16();
        let body: Value = r.json().await.expect("OAuth error body");
        assert_eq!(status, 401, "{name}: {body:#}");
        assert_eq!(body["error"], "invalid_grant", "{name}: {body:#}");
        let desc = body["error_description"].as_str().unwrap_or_default();
        assert!(
            desc.to_lowercase().contains(why),
            "{name}: `{desc}` does not mention `{why}`"
        );
    }

    // Without `jti`: accepted once, then remembered by what was signed.
    let r = exchange(&token("no_jti")).await.expect("request");
    assert_eq!(r.status().as_u16(), 200, "{}", r.text().await.unwrap_or_default());
    for name in ["no_jti", "no_jti_malleated"] {
        let r = exchange(&token(name)).await.expect("request");
        let status = r.status().as_u16();
        let body: Value = r.json().await.expect("OAuth error body");
        assert_eq!(
            (status, &body["error"]),
            (401, &json!("invalid_grant")),
            "{name}: {body:#}"
        );
        let desc = body["error_description"].as_str().unwrap_or_default();
        assert!(desc.contains("replay"), "{name}: `{desc}`");
    }
    // Lifetime: `iat` required, `exp - iat` at most the configured 600 s.
    for (name, want) in [
        ("no_iat", vec!["`iat`", "missing"]),
        (
            "thirty_days",
            vec!["`exp`", "2592000 s", "at most 600 s", "max_token_lifetime_secs"],
        ),
    ] {
        let r = exchange(&token(name)).await.expect("request");
        let status = r.status().as_u16();
        let body: Value = r.json().await.expect("OAuth error body");
        assert_eq!(body["error"], "invalid_grant", "{name}: {body:#}");
        assert!((400..500).contains(&status), "{name}: {status}");
        let desc = body["error_description"].as_str().unwrap_or_default();
        for w in want {
            assert!(desc.contains(w), "{name}: `{desc}` lacks `{w}`");
        }
    }
    let listed = s.json(&["task", "list"]).await;
    assert_eq!(
        listed.as_array().map(Vec::len),
        Some(2),
        "refusals created nothing"
    );
}

// ----------------------------------------------------------------------------------------------------
// Two nodes on one PostgreSQL database

/// Both nodes' configuration: one public URL (the issuer and audience of every token, as behind a load
/// balancer), and a revocation cache trusted for a whole minute, so a node that notices an ended task
/// within seconds can only have learned it from the store's event, not from its cache expiring.
const CLUSTER_CONFIG: &str = r#"
public_url = "http://warden.cluster.test"

[tokens]
revocation_cache_ttl_ms = 60000
"#;

/// A task started on node A works on both nodes; ended on A (admin API), it stops working on node B,
/// measured by polling B (at most 5 s; the benchmark `examples/revocation_propagation.rs` measures the
/// distribution).
#[tokio::test]
async fn two_nodes_share_revocation() {
    let database = warden_store::testing::fresh_postgres_url().await;
    let a = Server::spawn(
        Backend::Postgres,
        Spawn {
            database: Some(database.clone()),
            config: Some(CLUSTER_CONFIG.into()),
            ..Spawn::default()
        },
    )
    .await;
    let b = Server::spawn(
        Backend::Postgres,
        Spawn {
            database: Some(database),
            config: Some(CLUSTER_CONFIG.into()),
            admin_token_file: Some(a.admin_token_file.clone()),
            ..Default::default()
        },
    )
    .await;
    setup(&a).await;

    // Registered on A, enrolled on B: one registry.
    let join = a.path("bot.jt");
    let mut args = register_args("bot", &["crm"]);
    args.extend(["--join-token-out", path_str(&join)]);
    a.run(&args).await.ok();
    let key = a.path("bot.key");
    let enrolled = b
        .agent(&[
            "agent",
            "enroll",
            "--join-token-file",
            path_str(&join),
            "--key-out",
            path_str(&key),
            "-o",
            "json",
        ])
        .await
        .ok()
        .json();
    assert_eq!(enrolled["issuer"], "http://warden.cluster.test");
    b.run(&["agent", "activate", "bot"]).await.ok();
    let bot = Agent {
        name: "bot".into(),
        spiffe: enrolled["spiffe_id"].as_str().expect("spiffe_id").into(),
        key,
        kid: enrolled["kid"].as_str().expect("kid").into(),
    };

    // B activated the agent; A learns it from the store's event, and refuses the start until then
    // (fail closed). Wait for A to take it, boundedly.
    let args = start_args(&a, &bot, "bot.tt", &["--upstream", "crm"]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let started = loop {
        let out = a.agent(&args).await;
        if out.code == 0 || std::time::Instant::now() > deadline {
            break check_started(out.ok().json(), &a, "bot.tt");
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    let task_id = started["task_id"].as_str().expect("task_id").to_owned();
    let file = a.path("bot.tt");
    assert_eq!(claims_of(&read_token(&file))["iss"], "http://warden.cluster.test");
    for node in [&a, &b] {
        assert_eq!(current(node, &file).await["task"]["id"], task_id.as_str());
    }

    // End on A through the admin API, then poll B until it refuses the token.
    let http = reqwest::Client::new();
    let token = read_token(&file);
    let on_b = || http.get(b.endpoint("/v1/task")).bearer_auth(&token).send();
    assert_eq!(on_b().await.expect("request").status().as_u16(), 200);
    let r = http
        .post(a.endpoint(&format!("/v1/tasks/{task_id}/end")))
        .bearer_auth(a.admin_token())
        .json(&json!({"reason": "two-node test"}))
        .send()
        .await
        .expect("request");
    assert_eq!(r.status().as_u16(), 200);
    let ended_at = Instant::now();
    let deadline = ended_at + Duration::from_secs(5);
    let mut polls = 0u32;
    let status = loop {
        polls += 1;
        let status = on_b().await.expect("request").status().as_u16();
        if status != 200 || Instant::now() >= deadline {
            break status;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    };
    let elapsed = ended_at.elapsed();
    eprintln!(
        "revocation propagation A -> B: {:.3} ms after A acknowledged the end ({polls} polls of B)",
        elapsed.as_secs_f64() * 1e3
    );
    assert_eq!(
        status, 401,
        "node B still accepted the ended task's token {elapsed:?} after node A ended it"
    );

    let e = b
        .agent(&["task", "current", "--task-token-file", path_str(&file)])
        .await
        .fails(1);
    assert!(e.contains("ended"), "{e}");

    // Narrowing the agent on A (its upstream taken away) stops its live task on B the same way.
    let args = start_args(&a, &bot, "bot2.tt", &["--upstream", "crm"]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    check_started(a.agent(&args).await.ok().json(), &a, "bot2.tt");
    let token = read_token(&a.path("bot2.tt"));
    let on_b = || http.get(b.endpoint("/v1/task")).bearer_auth(&token).send();
    assert_eq!(on_b().await.expect("request").status().as_u16(), 200);
    a.run(&["agent", "update", "bot", "--no-upstreams"]).await.ok();
    let narrowed_at = Instant::now();
    let status = loop {
        let status = on_b().await.expect("request").status().as_u16();
        if status != 200 || narrowed_at.elapsed() >= Duration::from_secs(5) {
            break status;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    };
    assert_eq!(
        status,
        401,
        "node B still accepted the narrowed task's token {:?} after node A narrowed the agent",
        narrowed_at.elapsed()
    );
}
