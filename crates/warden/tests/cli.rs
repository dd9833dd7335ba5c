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

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

const WARDEN: &str = env!("CARGO_BIN_EXE_warden");
const READY_TIMEOUT: Duration = Duration::from_secs(30);
const READY_LINE: &str = "warden: listening on ";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Backend {
    Sqlite,
    Postgres,
}

/// Turns each scenario `async fn name(Backend)` into `name::sqlite` and `name::postgres` tests.
macro_rules! on_both_backends {
    ($($scenario:ident),+ $(,)?) => {$(
        mod $scenario {
            #[tokio::test]
            async fn sqlite() {
                super::$scenario(super::Backend::Sqlite).await
            }

            #[tokio::test]
            async fn postgres() {
                super::$scenario(super::Backend::Postgres).await
            }
        }
    )+};
}

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

/// A running `warden serve`, killed when dropped.
struct Server {
    child: Child,
    backend: Backend,
    /// e.g. `http://127.0.0.1:41234`
    url: String,
    /// Holds `warden-data/` (the server's data directory) and `cwd/` (where CLI commands run).
    dir: tempfile::TempDir,
    admin_token_file: PathBuf,
    /// Everything the server printed, for failure messages.
    log: Arc<Mutex<String>>,
}

/// What a CLI run produced.
#[derive(Debug)]
struct Out {
    code: i32,
    stdout: String,
    stderr: String,
    args: Vec<String>,
}

impl Out {
    /// Asserts success and returns self.
    #[track_caller]
    fn ok(self) -> Self {
        assert_eq!(
            self.code,
            0,
            "`warden {}` failed:\nstdout: {}\nstderr: {}",
            self.args.join(" "),
            self.stdout,
            self.stderr
        );
        self
    }

    /// Asserts the exit code and returns stderr.
    #[track_caller]
    fn fails(self, code: i32) -> String {
        assert_eq!(
            self.code,
            code,
            "`warden {}`: wrong exit code\nstdout: {}\nstderr: {}",
            self.args.join(" "),
            self.stdout,
            self.stderr
        );
        assert!(
            self.stderr.starts_with("error: "),
            "`warden {}`: stderr: {}",
            self.args.join(" "),
            self.stderr
        );
        self.stderr
    }

    #[track_caller]
    fn json(&self) -> Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| {
            panic!(
                "`warden {}` printed no JSON ({e}): {}",
                self.args.join(" "),
                self.stdout
            )
        })
    }
}

/// Environment variables `warden` reads; removed so that only what a test passes counts.
const WARDEN_ENV: &[&str] = &[
    "WARDEN_TOKEN",
    "WARDEN_TOKEN_FILE",
    "WARDEN_SERVER",
    "WARDEN_DATABASE_URL",
];

fn clean_env(cmd: &mut Command) -> &mut Command {
    for var in WARDEN_ENV {
        cmd.env_remove(var);
    }
    cmd
}

/// Copies lines from a child's pipe into `log`, sending the server URL once the ready line appears.
fn drain(pipe: impl Read + Send + 'static, log: Arc<Mutex<String>>, ready: Option<mpsc::Sender<String>>) {
    std::thread::spawn(move || {
        for line in BufReader::new(pipe).lines() {
            let Ok(line) = line else { break };
            if let (Some(tx), Some(at)) = (&ready, line.find(READY_LINE)) {
                let _ = tx.send(line[at + READY_LINE.len()..].trim().to_owned());
            }
            let mut log = log.lock().unwrap_or_else(|e| e.into_inner());
            log.push_str(&line);
            log.push('\n');
        }
    });
}

impl Server {
    async fn start(backend: Backend) -> Server {
        let dir = tempfile::tempdir().expect("temporary directory");
        let data_dir = dir.path().join("warden-data");
        std::fs::create_dir(dir.path().join("cwd")).expect("cwd");
        let mut cmd = Command::new(WARDEN);
        clean_env(&mut cmd)
            .arg("serve")
            .arg("--data-dir")
            .arg(&data_dir)
            .args(["--listen", "127.0.0.1:0"]);
        if backend == Backend::Postgres {
            cmd.arg("--database")
                .arg(warden_store::testing::fresh_postgres_url().await);
        }
        let mut child = cmd
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawning `warden serve`");
        let log = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = mpsc::channel();
        drain(
            child.stderr.take().expect("stderr is piped"),
            log.clone(),
            Some(tx),
        );
        drain(child.stdout.take().expect("stdout is piped"), log.clone(), None);

        let mut server = Server {
            child,
            backend,
            url: String::new(),
            admin_token_file: data_dir.join("admin.token"),
            dir,
            log,
        };
        match rx.recv_timeout(READY_TIMEOUT) {
            Ok(url) => server.url = url,
            Err(e) => panic!(
                "`warden serve` ({backend:?}) did not print `{READY_LINE}...` ({e}); exit status: {:?}; output:\n{}",
                server.child.try_wait(),
                server.log()
            ),
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while !server.admin_token_file.exists() {
            assert!(
                Instant::now() < deadline,
                "no {} after start; output:\n{}",
                server.admin_token_file.display(),
                server.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        server
    }

    fn log(&self) -> String {
        self.log.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Runs `warden <args>` in `cwd` with nothing but `--server`: no token unless `args` gives one.
    async fn run_in(&self, cwd: &Path, args: &[&str]) -> Out {
        let mut cmd = tokio::process::Command::new(WARDEN);
        for var in WARDEN_ENV {
            cmd.env_remove(var);
        }
        let output = cmd
            .args(["--server", &self.url])
            .args(args)
            .current_dir(cwd)
            .stdin(Stdio::null())
            .output()
            .await
            .expect("running warden");
        Out {
            code: output.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
            args: args.iter().map(|s| s.to_string()).collect(),
        }
    }

    fn cwd(&self) -> PathBuf {
        self.dir.path().join("cwd")
    }

    /// Runs `warden --token-file <token_file> <args>`.
    async fn run_as(&self, token_file: &Path, args: &[&str]) -> Out {
        let token_file = token_file.to_str().expect("UTF-8 path");
        let all: Vec<&str> = ["--token-file", token_file]
            .into_iter()
            .chain(args.iter().copied())
            .collect();
        self.run_in(&self.cwd(), &all).await
    }

    /// Runs `warden <args>` as the bootstrap admin.
    async fn run(&self, args: &[&str]) -> Out {
        self.run_as(&self.admin_token_file, args).await
    }

    /// Runs `warden <args> -o json` as the bootstrap admin, asserts success and returns the JSON.
    async fn json(&self, args: &[&str]) -> Value {
        let all: Vec<&str> = args.iter().copied().chain(["-o", "json"]).collect();
        self.run(&all).await.ok().json()
    }

    fn admin_token(&self) -> String {
        std::fs::read_to_string(&self.admin_token_file)
            .expect("admin token")
            .trim()
            .to_owned()
    }

    /// Writes `token` to a new file and returns its path.
    fn token_file(&self, name: &str, token: &str) -> PathBuf {
        let path = self.dir.path().join(format!("{name}.token"));
        std::fs::write(&path, format!("{token}\n")).expect("writing token file");
        path
    }

    /// Adds a human with one role and returns a file holding a fresh token of theirs.
    async fn human_with_token(&self, email: &str, role: &str) -> PathBuf {
        self.run(&["human", "add", email, "--name", "Test Human", "--role", role])
            .await
            .ok();
        let created = self
            .json(&["human", "token", "create", email, "--label", "test"])
            .await;
        let token = created["token"].as_str().expect("token in the response");
        self.token_file(email, token)
    }

    /// The bootstrap admin's owner, a registered human to own agents and upstreams.
    async fn add_owner(&self) {
        self.run(&[
            "human",
            "add",
            "alice@example.com",
            "--name",
            "Alice Example",
            "--role",
            "owner",
        ])
        .await
        .ok();
    }

    fn endpoint(&self, path: &str) -> String {
        format!("{}{path}", self.url.trim_end_matches('/'))
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!(
                "--- output of `warden serve` ({:?}) ---\n{}",
                self.backend,
                self.log()
            );
        }
    }
}

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

    let tokens = s.json(&["human", "token", "list", "bob@example.com"]).await;
    assert_eq!(tokens.as_array().map(Vec::len), Some(2), "{tokens:#}");
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
