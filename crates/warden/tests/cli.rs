//! End-to-end tests of the `warden` binary, driven exactly as a user drives it: each test starts a real
//! `warden serve` as a child process (SQLite in a temporary data directory, or PostgreSQL through
//! `warden_store::testing`), then runs `warden` commands as separate processes against it.
//!
//! Every scenario is an `async fn(Backend)`; [`on_both_backends!`] turns it into two tests,
//! `<scenario>::sqlite` and `<scenario>::postgres` (filter with `cargo test -p warden --test cli sqlite`).
//! The PostgreSQL tests need PostgreSQL installed (or `WARDEN_TEST_PG_URL`); without it they fail and
//! say so, they never skip.

// Test code: a failed `expect` is a failed test, with its message.
#![allow(clippy::expect_used, clippy::unwrap_used)]
#[macro_use]
mod common;

use std::process::Command;

use serde_json::{Value, json};

use common::{Backend, Server, WARDEN, clean_env};

on_both_backends!(
    checked_by_flow,
    upstreams_and_humans,
    bad_flags_are_refused_before_sending,
    server_refusals_change_nothing,
    authentication,
    roles,
    raw_http_bad_input,
    token_lifecycle,
);

const REGISTER: &[&str] = &[
    "agent",
    "register",
    "billing-bot",
    "--owner",
    "alice@example.com",
    "--environment",
    "staging",
    "--model",
    "anthropic/claude-sonnet@4.5",
];

/// The entry named `name` in a JSON array of records.
#[track_caller]
fn named<'a>(list: &'a Value, name: &str) -> &'a Value {
    list.as_array()
        .expect("a JSON array")
        .iter()
        .find(|a| a["name"] == name)
        .unwrap_or_else(|| panic!("no `{name}` in {list:#}"))
}

// ----------------------------------------------------------------------------------------------------
// Scenarios

/// Register → listed with its SPIFFE ID, pending review → activate → a model change sends it back to
/// review → history shows every step → retire → still listed.
async fn checked_by_flow(backend: Backend) {
    let s = Server::start(backend).await;
    s.add_owner().await;
    s.run(&[
        "upstream",
        "add",
        "crm",
        "--kind",
        "mcp",
        "--url",
        "https://crm.example.com/mcp",
        "--environment",
        "staging",
        "--owner",
        "alice@example.com",
        "--sensitivity",
        "confidential",
    ])
    .await
    .ok();

    let mut args = REGISTER.to_vec();
    args.extend([
        "--upstream",
        "crm",
        "--description",
        "Pays invoices",
        "-o",
        "json",
    ]);
    let agent = s.run(&args).await.ok().json();
    assert_eq!(agent["name"], "billing-bot");
    assert_eq!(agent["state"], "pending_review");

    let list = s.json(&["agent", "list"]).await;
    let listed = named(&list, "billing-bot");
    assert_eq!(listed["spiffe_id"], "spiffe://warden.local/agent/billing-bot");
    assert_eq!(listed["state"], "pending_review");
    assert_eq!(listed["owners"], json!(["alice@example.com"]));
    assert_eq!(listed["allowed_upstreams"], json!(["crm"]));
    assert_eq!(listed["model"], "anthropic/claude-sonnet@4.5");
    assert_eq!(listed["description"], "Pays invoices");

    let table = s.run(&["agent", "list"]).await.ok().stdout;
    assert!(table.starts_with("NAME "), "{table}");
    assert!(
        table.contains("billing-bot") && table.contains("spiffe://warden.local/agent/billing-bot"),
        "{table}"
    );

    let active = s
        .json(&[
            "agent",
            "activate",
            "billing-bot",
            "--reason",
            "reviewed by security",
        ])
        .await;
    assert_eq!(active["state"], "active");

    let updated = s
        .json(&[
            "agent",
            "update",
            "billing-bot",
            "--model",
            "anthropic/claude-sonnet@5",
        ])
        .await;
    assert_eq!(updated["model"], "anthropic/claude-sonnet@5");
    assert_eq!(
        updated["state"], "pending_review",
        "a new model needs a new review"
    );

    let detail = s.json(&["agent", "show", "billing-bot"]).await;
    assert_eq!(
        detail["name"], "billing-bot",
        "agent fields are flattened into the detail"
    );
    assert_eq!(detail["state"], "pending_review");
    let history = detail["history"].as_array().expect("history");
    let steps: Vec<(&Value, &Value)> = history.iter().map(|h| (&h["from"], &h["to"])).collect();
    assert_eq!(
        steps,
        [
            (&Value::Null, &json!("pending_review")),
            (&json!("pending_review"), &json!("active")),
            (&json!("active"), &json!("pending_review")),
        ],
        "{detail:#}"
    );
    assert_eq!(history[1]["reason"], "reviewed by security");

    let shown = s.run(&["agent", "show", "billing-bot"]).await.ok().stdout;
    assert!(
        shown.contains("state:") && shown.contains("pending_review"),
        "{shown}"
    );
    assert!(
        shown.contains("history:") && shown.contains("reviewed by security"),
        "{shown}"
    );

    let retired = s.json(&["agent", "retire", "billing-bot"]).await;
    assert_eq!(retired["state"], "retired");
    let list = s.json(&["agent", "list"]).await;
    assert_eq!(
        named(&list, "billing-bot")["state"],
        "retired",
        "a retired agent stays listed"
    );
    assert_eq!(
        s.json(&["agent", "list", "--state", "retired"])
            .await
            .as_array()
            .map(Vec::len),
        Some(1)
    );
    assert_eq!(s.json(&["agent", "list", "--state", "active"]).await, json!([]));
    assert_eq!(
        s.json(&["agent", "list", "--owner", "alice@example.com"])
            .await
            .as_array()
            .map(Vec::len),
        Some(1)
    );
    assert_eq!(
        s.json(&["agent", "list", "--owner", "nobody@example.com"]).await,
        json!([])
    );

    // A retired agent is frozen.
    let e = s.run(&["agent", "activate", "billing-bot"]).await.fails(1);
    assert!(e.contains("HTTP 409"), "{e}");
}

/// The other registry verbs: upstream list/show/remove, human list/show, agent update of lists.
async fn upstreams_and_humans(backend: Backend) {
    let s = Server::start(backend).await;
    s.add_owner().await;
    for (name, kind, url) in [
        ("crm", "mcp", "https://crm.example.com/mcp"),
        ("ledger", "postgres", "postgres://db.internal:5432/ledger"),
    ] {
        s.run(&[
            "upstream",
            "add",
            name,
            "--kind",
            kind,
            "--url",
            url,
            "--environment",
            "production",
            "--owner",
            "alice@example.com",
            "--sensitivity",
            "regulated",
            "--description",
            "test upstream",
        ])
        .await
        .ok();
    }
    let ups = s.json(&["upstream", "list"]).await;
    assert_eq!(named(&ups, "ledger")["kind"], "postgres");
    assert_eq!(named(&ups, "crm")["url"], "https://crm.example.com/mcp");
    let table = s.run(&["upstream", "list"]).await.ok().stdout;
    assert!(table.starts_with("NAME ") && table.contains("ledger"), "{table}");
    let crm = s.json(&["upstream", "show", "crm"]).await;
    assert_eq!(
        (crm["sensitivity"].as_str(), crm["owner"].as_str()),
        (Some("regulated"), Some("alice@example.com"))
    );
    let shown = s.run(&["upstream", "show", "crm"]).await.ok().stdout;
    assert!(
        shown.contains("sensitivity:") && shown.contains("regulated"),
        "{shown}"
    );

    let removed = s.json(&["upstream", "remove", "ledger"]).await;
    assert_eq!(removed["name"], "ledger");
    assert!(
        s.json(&["upstream", "list"])
            .await
            .as_array()
            .is_some_and(|a| a.len() == 1)
    );
    let e = s.run(&["upstream", "show", "ledger"]).await.fails(1);
    assert!(e.contains("HTTP 404"), "{e}");

    let humans = s.json(&["human", "list"]).await;
    assert_eq!(
        named_by(&humans, "email", "alice@example.com")["roles"],
        json!(["owner"])
    );
    let alice = s.json(&["human", "show", "Alice@Example.com"]).await;
    assert_eq!(alice["display_name"], "Alice Example");
    let table = s.run(&["human", "list"]).await.ok().stdout;
    assert!(
        table.starts_with("EMAIL ") && table.contains("alice@example.com"),
        "{table}"
    );

    let mut args = REGISTER.to_vec();
    args.extend(["--upstream", "crm"]);
    s.run(&args).await.ok();
    let updated = s
        .json(&[
            "agent",
            "update",
            "billing-bot",
            "--no-upstreams",
            "--description",
            "quiet",
        ])
        .await;
    assert_eq!(updated["allowed_upstreams"], json!([]));
    assert_eq!(updated["description"], "quiet");
    assert_eq!(updated["state"], "pending_review");
    let updated = s
        .json(&["agent", "update", "billing-bot", "--upstream", "crm"])
        .await;
    assert_eq!(updated["allowed_upstreams"], json!(["crm"]));
}

/// The entry of a JSON array whose `key` is `value`.
#[track_caller]
fn named_by<'a>(list: &'a Value, key: &str, value: &str) -> &'a Value {
    list.as_array()
        .expect("a JSON array")
        .iter()
        .find(|a| a[key] == value)
        .unwrap_or_else(|| panic!("no {key} `{value}` in {list:#}"))
}

/// Flag values the client can check itself: refused with exit code 2, naming the flag, nothing sent.
async fn bad_flags_are_refused_before_sending(backend: Backend) {
    let s = Server::start(backend).await;
    s.add_owner().await;

    let mut args = REGISTER.to_vec();
    args[2] = "Billing_Bot";
    let e = s.run(&args).await.fails(2);
    assert!(e.contains("NAME: agent name `Billing_Bot` contains `B`"), "{e}");

    let mut args = REGISTER.to_vec();
    args[6] = "prod";
    let e = s.run(&args).await.fails(2);
    assert!(
        e.contains("error: --environment: unknown environment `prod`; expected one of"),
        "{e}"
    );

    let mut args = REGISTER.to_vec();
    args[8] = "claude-sonnet";
    let e = s.run(&args).await.fails(2);
    assert!(e.contains("error: --model: "), "{e}");

    let mut args = REGISTER.to_vec();
    args.extend(["--owner", "ALICE@example.com"]);
    let e = s.run(&args).await.fails(2);
    assert!(
        e.contains("error: --owner: `alice@example.com` is listed twice"),
        "{e}"
    );

    let e = s
        .run(&[
            "upstream",
            "add",
            "db",
            "--kind",
            "postgres",
            "--url",
            "postgres://app:hunter2@db/app",
            "--environment",
            "staging",
            "--owner",
            "alice@example.com",
            "--sensitivity",
            "internal",
        ])
        .await
        .fails(2);
    assert!(e.contains("error: --url: ") && !e.contains("hunter2"), "{e}");

    let e = s
        .run(&[
            "upstream",
            "add",
            "db",
            "--kind",
            "postgres",
            "--url",
            "postgres://db/app",
            "--environment",
            "staging",
            "--owner",
            "alice@example.com",
            "--sensitivity",
            "secret",
        ])
        .await
        .fails(2);
    assert!(
        e.contains("error: --sensitivity: unknown sensitivity `secret`"),
        "{e}"
    );

    let e = s
        .run(&["human", "token", "create", "alice@example.com", "--ttl", "400d"])
        .await
        .fails(2);
    assert!(e.contains("error: --ttl: "), "{e}");
    let e = s.run(&["agent", "update", "billing-bot"]).await.fails(2);
    assert!(e.contains("changes nothing"), "{e}");
    s.run(&["human", "token", "revoke", "not-a-uuid"]).await.fails(2);

    assert_eq!(s.json(&["agent", "list"]).await, json!([]));
    assert_eq!(s.json(&["upstream", "list"]).await, json!([]));
}

/// Requests the server refuses: exit code 1, the server's message, and nothing written.
async fn server_refusals_change_nothing(backend: Backend) {
    let s = Server::start(backend).await;
    s.add_owner().await;

    // One known owner and one unknown: the whole registration is refused.
    let mut args = REGISTER.to_vec();
    args.extend(["--owner", "nobody@example.com"]);
    let e = s.run(&args).await.fails(1);
    assert!(e.contains("HTTP 400") && e.contains("nobody@example.com"), "{e}");
    assert_eq!(
        s.json(&["agent", "list"]).await,
        json!([]),
        "a refused registration writes nothing"
    );

    let mut args = REGISTER.to_vec();
    args.extend(["--upstream", "missing"]);
    let e = s.run(&args).await.fails(1);
    assert!(e.contains("HTTP 400") && e.contains("missing"), "{e}");
    assert_eq!(s.json(&["agent", "list"]).await, json!([]));

    s.run(REGISTER).await.ok();
    let e = s.run(REGISTER).await.fails(1);
    assert!(e.contains("HTTP 409"), "{e}");
    assert_eq!(s.json(&["agent", "list"]).await.as_array().map(Vec::len), Some(1));

    let e = s.run(&["agent", "show", "ghost"]).await.fails(1);
    assert!(e.contains("HTTP 404"), "{e}");
    let e = s
        .run(&[
            "human",
            "add",
            "alice@example.com",
            "--name",
            "Again",
            "--role",
            "owner",
        ])
        .await
        .fails(1);
    assert!(e.contains("HTTP 409"), "{e}");
    let shown = s.run(&["agent", "suspend", "billing-bot"]).await.ok().stdout;
    assert!(shown.contains("suspended"), "{shown}");
    let e = s.run(&["agent", "suspend", "billing-bot"]).await.fails(1);
    assert!(e.contains("HTTP 409") && e.contains("already suspended"), "{e}");
}

/// No token, a wrong token, a malformed token, an unreadable token file: exit code 1, the token never
/// printed; the bootstrap token is found in `./warden-data/admin.token`.
async fn authentication(backend: Backend) {
    let s = Server::start(backend).await;

    let me = s.json(&["whoami"]).await;
    assert!(
        me["human"]["roles"]
            .as_array()
            .is_some_and(|r| r.contains(&json!("admin"))),
        "{me:#}"
    );
    let table = s.run(&["whoami"]).await.ok().stdout;
    assert!(table.contains("roles:") && table.contains("admin"), "{table}");

    // No token anywhere (the CLI runs in an empty directory): refused before sending.
    let e = s.run_in(&s.cwd(), &["whoami"]).await.fails(1);
    assert!(e.contains("no API token"), "{e}");

    // The fallback: ./warden-data/admin.token, from the directory the server was started in.
    let fallback = s
        .run_in(s.dir.path(), &["whoami", "-o", "json"])
        .await
        .ok()
        .json();
    assert_eq!(fallback["human"]["email"], me["human"]["email"]);

    // A well-formed token the server does not know, and a malformed one.
    let unknown = format!("wdn_at_{}", "A".repeat(43));
    for (name, token) in [("unknown", unknown.as_str()), ("malformed", "not-a-token")] {
        let file = s.token_file(name, token);
        let e = s.run_as(&file, &["agent", "list"]).await.fails(1);
        assert!(e.contains("HTTP 401"), "{name}: {e}");
        assert!(!e.contains(token), "{name}: the token is printed: {e}");
    }

    let e = s
        .run_as(&s.dir.path().join("no-such.token"), &["whoami"])
        .await
        .fails(1);
    assert!(e.contains("reading the token file"), "{e}");

    // The admin token never shows in an error either.
    let admin = s.admin_token();
    let e = s.run(&["agent", "show", "ghost"]).await.fails(1);
    assert!(!e.contains(&admin), "{e}");

    // Without any Authorization header the API answers 401 itself.
    let r = reqwest::get(s.endpoint("/v1/whoami")).await.expect("request");
    assert_eq!(r.status().as_u16(), 401);
    let body: Value = r.json().await.expect("JSON error body");
    assert_eq!(body["error"], "unauthorized", "{body:#}");
}

/// An auditor reads but cannot write: 403, exit code 1, nothing written.
async fn roles(backend: Backend) {
    let s = Server::start(backend).await;
    s.add_owner().await;
    let auditor = s.human_with_token("audrey@example.com", "auditor").await;

    let me = s.run_as(&auditor, &["whoami", "-o", "json"]).await.ok().json();
    assert_eq!(me["human"]["roles"], json!(["auditor"]));
    s.run_as(&auditor, &["agent", "list"]).await.ok();

    let e = s.run_as(&auditor, REGISTER).await.fails(1);
    assert!(e.contains("HTTP 403"), "{e}");
    let e = s
        .run_as(
            &auditor,
            &[
                "human",
                "add",
                "eve@example.com",
                "--name",
                "Eve",
                "--role",
                "admin",
            ],
        )
        .await
        .fails(1);
    assert!(e.contains("HTTP 403"), "{e}");
    assert_eq!(s.json(&["agent", "list"]).await, json!([]));
    let humans = s.json(&["human", "list"]).await;
    assert!(!humans.to_string().contains("eve@example.com"), "{humans:#}");
}

/// Bad requests that the CLI cannot send, sent with a plain HTTP client.
async fn raw_http_bad_input(backend: Backend) {
    let s = Server::start(backend).await;
    s.add_owner().await;
    let http = reqwest::Client::new();
    let admin = s.admin_token();
    let agents = s.endpoint("/v1/agents");
    let post = |body: Vec<u8>, content_type: &str| {
        http.post(&agents)
            .bearer_auth(&admin)
            .header("content-type", content_type)
            .body(body)
            .send()
    };
    let valid = json!({
        "name": "billing-bot", "owners": ["alice@example.com"], "environment": "staging",
        "model": "anthropic/claude-sonnet@4.5",
    });

    let health: Value = http
        .get(s.endpoint("/healthz"))
        .send()
        .await
        .expect("healthz")
        .json()
        .await
        .expect("JSON");
    assert_eq!(health["status"], "ok");
    let store = if backend == Backend::Sqlite {
        "sqlite"
    } else {
        "postgres"
    };
    assert_eq!(health["store"], store, "{health:#}");

    let r = post(b"{\"name\": \"billing-bot\",".to_vec(), "application/json")
        .await
        .expect("request");
    assert_eq!(r.status().as_u16(), 400);
    let body: Value = r.json().await.expect("JSON error body");
    assert_eq!(body["error"], "invalid_request", "{body:#}");

    let mut big = valid.clone();
    big["description"] = json!("x".repeat(70 * 1024));
    let r = post(serde_json::to_vec(&big).expect("JSON"), "application/json")
        .await
        .expect("request");
    assert_eq!(r.status().as_u16(), 413);
    let body: Value = r.json().await.expect("JSON error body");
    assert_eq!(body["error"], "payload_too_large", "{body:#}");

    let mut unknown = valid.clone();
    unknown["colour"] = json!("blue");
    let r = post(serde_json::to_vec(&unknown).expect("JSON"), "application/json")
        .await
        .expect("request");
    assert_eq!(r.status().as_u16(), 400);
    let body: Value = r.json().await.expect("JSON error body");
    assert_eq!(body["error"], "invalid_request", "{body:#}");
    assert!(
        body["field"] == "colour" || body["message"].as_str().is_some_and(|m| m.contains("colour")),
        "the error names the unknown field: {body:#}"
    );

    let r = post(serde_json::to_vec(&valid).expect("JSON"), "text/plain")
        .await
        .expect("request");
    assert_eq!(r.status().as_u16(), 415);

    assert_eq!(s.json(&["agent", "list"]).await, json!([]), "nothing was written");
    let r = post(serde_json::to_vec(&valid).expect("JSON"), "application/json")
        .await
        .expect("request");
    assert_eq!(
        r.status().as_u16(),
        201,
        "the same body, well formed, is accepted"
    );
}

/// A token is shown once, works, and stops working when revoked; other tokens keep working.
async fn token_lifecycle(backend: Backend) {
    let s = Server::start(backend).await;
    s.run(&[
        "human",
        "add",
        "bob@example.com",
        "--name",
        "Bob Example",
        "--role",
        "approver",
    ])
    .await
    .ok();

    // Table mode: a notice on stderr, the token alone on stdout.
    let out = s
        .run(&[
            "human",
            "token",
            "create",
            "bob@example.com",
            "--label",
            "laptop",
            "--ttl",
            "1h",
        ])
        .await
        .ok();
    assert!(out.stderr.contains("shown only once"), "{}", out.stderr);
    assert_eq!(out.stdout.lines().count(), 1, "{}", out.stdout);
    let laptop_token = out.stdout.trim().to_owned();
    assert!(laptop_token.starts_with("wdn_at_"), "{laptop_token}");
    let laptop = s.token_file("laptop", &laptop_token);

    let me = s.run_as(&laptop, &["whoami", "-o", "json"]).await.ok().json();
    assert_eq!(me["human"]["email"], "bob@example.com");
    assert_eq!(me["token"]["label"], "laptop");
    let lifetime =
        chrono::DateTime::parse_from_rfc3339(me["token"]["expires_at"].as_str().expect("expires_at"))
            .expect("RFC 3339")
            - chrono::DateTime::parse_from_rfc3339(me["token"]["created_at"].as_str().expect("created_at"))
                .expect("RFC 3339");
    assert!(
        (3_599..=3_601).contains(&lifetime.num_seconds()),
        "--ttl 1h gave {lifetime}"
    );
    let laptop_id = me["token"]["id"].as_str().expect("token id").to_owned();

    // JSON mode: the whole response.
    let created = s
        .json(&["human", "token", "create", "bob@example.com", "--label", "ci"])
        .await;
    let ci = s.token_file("ci", created["token"].as_str().expect("token"));
    assert_eq!(created["info"]["label"], "ci");
    assert_eq!(created["info"]["human"], "bob@example.com");

    // --token-out: the token goes to a new 0600 file, never to stdout (the README's example).
    let file = s.cwd().join("bob.token");
    let out = s
        .run(&[
            "human",
            "token",
            "create",
            "bob@example.com",
            "--label",
            "file",
            "--token-out",
            "bob.token",
        ])
        .await
        .ok();
    assert!(
        !out.stdout.contains("wdn_at_") && !out.stderr.contains("wdn_at_"),
        "{out:?}"
    );
    use std::os::unix::fs::PermissionsExt as _;
    assert_eq!(
        std::fs::metadata(&file).expect("token file").permissions().mode() & 0o777,
        0o600
    );
    s.run_as(&file, &["whoami"]).await.ok();
    s.run(&[
        "human",
        "token",
        "create",
        "bob@example.com",
        "--token-out",
        "bob.token",
    ])
    .await
    .fails(1);

    let tokens = s.json(&["human", "token", "list", "bob@example.com"]).await;
    assert_eq!(tokens.as_array().map(Vec::len), Some(3), "{tokens:#}");
    assert!(
        !tokens.to_string().contains("wdn_at_"),
        "a listing never shows tokens: {tokens:#}"
    );

    let revoked = s.json(&["human", "token", "revoke", &laptop_id]).await;
    assert!(!revoked["revoked_at"].is_null(), "{revoked:#}");

    let e = s.run_as(&laptop, &["whoami"]).await.fails(1);
    assert!(e.contains("HTTP 401"), "{e}");
    assert!(!e.contains(&laptop_token), "{e}");
    s.run_as(&ci, &["whoami"]).await.ok();

    let table = s
        .run(&["human", "token", "list", "bob@example.com"])
        .await
        .ok()
        .stdout;
    assert!(table.contains("revoked") && table.contains("active"), "{table}");
}

// ----------------------------------------------------------------------------------------------------
// Without a server

#[tokio::test]
async fn connection_refused_names_the_server() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("http://127.0.0.1:{}", listener.local_addr().expect("addr").port());
    drop(listener);
    let dir = tempfile::tempdir().expect("temporary directory");
    let output = clean_env(&mut Command::new(WARDEN))
        .args(["--server", &url, "agent", "list"])
        .env("WARDEN_TOKEN", format!("wdn_at_{}", "B".repeat(43)))
        .current_dir(dir.path())
        .output()
        .expect("running warden");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.starts_with(&format!("error: cannot connect to the Warden server at {url}/")),
        "{stderr}"
    );
    assert!(!stderr.contains("BBBB"), "{stderr}");
}

#[test]
fn help_documents_exit_codes() {
    let output = clean_env(&mut Command::new(WARDEN))
        .arg("--help")
        .output()
        .expect("running warden");
    assert_eq!(output.status.code(), Some(0));
    let help = String::from_utf8_lossy(&output.stdout);
    assert!(
        help.contains("Exit codes:") && help.contains("./warden-data/admin.token"),
        "{help}"
    );

    let output = clean_env(&mut Command::new(WARDEN))
        .args(["agent", "frobnicate"])
        .output()
        .expect("running warden");
    assert_eq!(output.status.code(), Some(2));
}
