//! What the end-to-end tests share: starting a real `warden serve` as a child process (SQLite in a
//! temporary data directory, or PostgreSQL through `warden_store::testing`; with a config file, or as a
//! second node on another node's database), and running `warden` commands as separate processes
//! against it.
//!
//! The MCP parts (the reference servers, the official Python SDK client) are in [`mcp`]; traffic
//! that records what was acknowledged (for crash tests) in [`load`]; an MCP upstream that fails on
//! request in [`faulty`].
//!
//! Each test binary uses a different part of this module.
#![allow(dead_code)]

pub mod faulty;
pub mod load;
pub mod mcp;

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use serde_json::Value;

pub const WARDEN: &str = env!("CARGO_BIN_EXE_warden");
pub const READY_TIMEOUT: Duration = Duration::from_secs(30);
pub const READY_LINE: &str = "warden: listening on ";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// Turns each scenario `async fn name(Backend)` into `name::sqlite` and `name::postgres` tests.
#[allow(unused_macros)]
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

/// The repository's default policy pack.
pub fn default_policies_dir() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../policies/default")
}

/// A running `warden serve`, killed when dropped.
pub struct Server {
    child: Child,
    pub backend: Backend,
    /// e.g. `http://127.0.0.1:41234`
    pub url: String,
    /// Holds `warden-data/` (the server's data directory) and `cwd/` (where CLI commands run).
    pub dir: tempfile::TempDir,
    /// The bootstrap admin's token: in this server's data directory, or another node's (see
    /// [`Spawn::admin_token_file`]).
    pub admin_token_file: PathBuf,
    /// Everything the server printed, for failure messages.
    log: Arc<Mutex<String>>,
    /// The arguments it was started with (for [`Server::restart`]).
    args: Vec<std::ffi::OsString>,
    /// A tmpfs mounted on the data directory, unmounted on drop.
    mounted: Option<PathBuf>,
    /// Passed to every CLI run as `--ca-file` (see [`Spawn::ca_file`]).
    pub ca_file: Option<PathBuf>,
}

/// How to start a server, beyond the defaults of [`Server::start`].
#[derive(Debug, Default)]
pub struct Spawn {
    /// The PostgreSQL URL to use (e.g. another node's); default: a fresh database for
    /// `Backend::Postgres`, the embedded SQLite for `Backend::Sqlite`.
    pub database: Option<String>,
    /// The contents of a config file passed with `--config`.
    pub config: Option<String>,
    /// The admin token of an already bootstrapped store (a second node): this server writes none, so
    /// start does not wait for one.
    pub admin_token_file: Option<PathBuf>,
    /// Put the data directory on a tmpfs of this size (e.g. `"16m"`), mounted for this server and
    /// unmounted when it is dropped: a disk the test can fill. Needs root (`mount`).
    pub tmpfs_data_dir: Option<&'static str>,
    /// A CA file every CLI run passes with `--ca-file` (a server with `[tls]`).
    pub ca_file: Option<PathBuf>,
}

/// Whether this process may mount a tmpfs (the disk-full test needs it): root, with the capability
/// to mount (a container may deny it even to root). Tried for real on a scratch directory.
pub fn can_mount() -> bool {
    let Ok(dir) = tempfile::tempdir() else {
        return false;
    };
    let mounted = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=1m", "tmpfs"])
        .arg(dir.path())
        .output()
        .is_ok_and(|o| o.status.success());
    if mounted {
        let _ = std::process::Command::new("umount").arg(dir.path()).status();
    }
    mounted
}

/// What a CLI run produced.
#[derive(Debug)]
pub struct Out {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
    pub args: Vec<String>,
}

impl Out {
    /// Asserts success and returns self.
    #[track_caller]
    pub fn ok(self) -> Self {
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
    pub fn fails(self, code: i32) -> String {
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
    pub fn json(&self) -> Value {
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
pub const WARDEN_ENV: &[&str] = &[
    "WARDEN_TOKEN",
    "WARDEN_TOKEN_FILE",
    "WARDEN_SERVER",
    "WARDEN_DATABASE_URL",
    "WARDEN_JOIN_TOKEN",
    "WARDEN_CA_FILE",
    "WARDEN_CLIENT_CERT",
    "WARDEN_CLIENT_KEY",
];

pub fn clean_env(cmd: &mut Command) -> &mut Command {
    for var in WARDEN_ENV {
        cmd.env_remove(var);
    }
    cmd
}

/// Spawns `warden <args>` in `dir`, its output drained into `log`; the receiver gets the URL once it
/// listens.
fn launch(
    dir: &Path,
    args: &[std::ffi::OsString],
    log: &Arc<Mutex<String>>,
) -> (Child, mpsc::Receiver<String>) {
    let mut cmd = Command::new(WARDEN);
    let mut child = clean_env(&mut cmd)
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawning `warden serve`");
    let (tx, rx) = mpsc::channel();
    drain(
        child.stderr.take().expect("stderr is piped"),
        log.clone(),
        Some(tx),
    );
    drain(child.stdout.take().expect("stdout is piped"), log.clone(), None);
    (child, rx)
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
    /// Starts `warden serve` on `backend` with the default configuration, and waits for it to listen
    /// and to write the bootstrap admin token.
    pub async fn start(backend: Backend) -> Server {
        Self::spawn(backend, Spawn::default()).await
    }

    /// Starts `warden serve` as `how` says.
    pub async fn spawn(backend: Backend, how: Spawn) -> Server {
        let dir = tempfile::tempdir().expect("temporary directory");
        let data_dir = dir.path().join("warden-data");
        std::fs::create_dir(dir.path().join("cwd")).expect("cwd");
        let mounted = how.tmpfs_data_dir.map(|size| {
            std::fs::create_dir(&data_dir).expect("data dir");
            let out = std::process::Command::new("mount")
                .args(["-t", "tmpfs", "-o", &format!("size={size},mode=0700"), "tmpfs"])
                .arg(&data_dir)
                .output()
                .expect("running mount");
            assert!(
                out.status.success(),
                "cannot mount a tmpfs on {}: {}",
                data_dir.display(),
                String::from_utf8_lossy(&out.stderr)
            );
            data_dir.clone()
        });
        let mut cmd = Command::new(WARDEN);
        clean_env(&mut cmd)
            .arg("serve")
            .arg("--data-dir")
            .arg(&data_dir)
            .args(["--listen", "127.0.0.1:0"]);
        // Every test server activates the repository's default policy pack on first start (as the
        // quickstart does), unless the test's own config says otherwise.
        let policy = format!("\n[policy]\nbootstrap_dir = {:?}\n", default_policies_dir());
        let config = match &how.config {
            Some(c) if c.contains("[policy]") => c.clone(),
            Some(c) => format!("{c}{policy}"),
            None => policy,
        };
        let path = dir.path().join("warden.toml");
        std::fs::write(&path, config).expect("writing the config file");
        cmd.arg("--config").arg(path);
        match (&how.database, backend) {
            (Some(url), _) => {
                cmd.arg("--database").arg(url);
            }
            (None, Backend::Postgres) => {
                cmd.arg("--database")
                    .arg(warden_store::testing::fresh_postgres_url().await);
            }
            (None, Backend::Sqlite) => {}
        }
        let args: Vec<std::ffi::OsString> = cmd.get_args().map(|a| a.to_owned()).collect();
        let log = Arc::new(Mutex::new(String::new()));
        let (child, rx) = launch(dir.path(), &args, &log);

        let wait_for_bootstrap = how.admin_token_file.is_none();
        let mut server = Server {
            child,
            backend,
            url: String::new(),
            admin_token_file: how
                .admin_token_file
                .unwrap_or_else(|| data_dir.join("admin.token")),
            dir,
            log,
            args,
            mounted,
            ca_file: how.ca_file,
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
        while wait_for_bootstrap && !server.admin_token_file.exists() {
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

    /// The `--database` URL it was started with (PostgreSQL), if any.
    pub fn database_url(&self) -> Option<String> {
        let at = self.args.iter().position(|a| a == "--database")?;
        self.args.get(at + 1).map(|u| u.to_string_lossy().into_owned())
    }

    /// The server process's id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// How many file descriptors the server process has open now (`/proc/<pid>/fd`).
    pub fn open_fds(&self) -> usize {
        let dir = format!("/proc/{}/fd", self.pid());
        std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("reading {dir}: {e}"))
            .count()
    }

    /// Kills the server with SIGKILL (no shutdown of any kind), as a crash would.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Starts `warden serve` again with the same arguments, data directory and database (after
    /// [`Server::kill9`]), on the same address — so that its URL, the issuer of the task tokens it
    /// signed, stays the same — and waits until it listens.
    pub fn restart(&mut self) {
        let address = self
            .url
            .strip_prefix("http://")
            .expect("an http:// URL")
            .trim_end_matches('/')
            .to_owned();
        if let Some(at) = self.args.iter().position(|a| a == "--listen") {
            self.args[at + 1] = address.into();
        }
        let (child, rx) = launch(self.dir.path(), &self.args, &self.log);
        self.child = child;
        match rx.recv_timeout(READY_TIMEOUT) {
            Ok(url) => self.url = url,
            Err(e) => panic!(
                "restarted `warden serve` did not listen ({e}); output:\n{}",
                self.log()
            ),
        }
    }

    /// Starts `warden serve` again (after [`Server::kill9`]) expecting it to refuse to start: waits
    /// for it to exit and returns its exit code and what this start printed.
    pub fn restart_refused(&mut self) -> (Option<i32>, String) {
        let before = self.log().len();
        let (child, rx) = launch(self.dir.path(), &self.args, &self.log);
        self.child = child;
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Ok(url) = rx.try_recv() {
                panic!("`warden serve` started on {url}; output:\n{}", self.log());
            }
            if let Some(status) = self.child.try_wait().expect("waiting for `warden serve`") {
                // The pipes may still hold the last lines: wait until the output stops growing.
                let mut seen = self.log().len();
                for _ in 0..20 {
                    std::thread::sleep(Duration::from_millis(100));
                    let now = self.log().len();
                    if now == seen {
                        break;
                    }
                    seen = now;
                }
                return (status.code(), self.log()[before..].to_owned());
            }
            assert!(
                Instant::now() < deadline,
                "`warden serve` neither started nor exited; output:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The server's data directory.
    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("warden-data")
    }

    pub fn log(&self) -> String {
        self.log.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Runs `warden <args>` in `cwd` with nothing but `--server`: no token unless `args` gives one.
    pub async fn run_in(&self, cwd: &Path, args: &[&str]) -> Out {
        self.run_env(cwd, args, &[]).await
    }

    /// Runs `warden <args>` in `cwd` with `--server` and the environment variables `env`.
    pub async fn run_env(&self, cwd: &Path, args: &[&str], env: &[(&str, &str)]) -> Out {
        let mut cmd = tokio::process::Command::new(WARDEN);
        for var in WARDEN_ENV {
            cmd.env_remove(var);
        }
        if let Some(ca) = &self.ca_file {
            cmd.arg("--ca-file").arg(ca);
        }
        let output = cmd
            .envs(env.iter().copied())
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

    pub fn cwd(&self) -> PathBuf {
        self.dir.path().join("cwd")
    }

    /// Runs `warden --token-file <token_file> <args>`.
    pub async fn run_as(&self, token_file: &Path, args: &[&str]) -> Out {
        let token_file = token_file.to_str().expect("UTF-8 path");
        let all: Vec<&str> = ["--token-file", token_file]
            .into_iter()
            .chain(args.iter().copied())
            .collect();
        self.run_in(&self.cwd(), &all).await
    }

    /// Runs `warden <args>` as the bootstrap admin.
    pub async fn run(&self, args: &[&str]) -> Out {
        self.run_as(&self.admin_token_file, args).await
    }

    /// Runs `warden <args> -o json` as the bootstrap admin, asserts success and returns the JSON.
    pub async fn json(&self, args: &[&str]) -> Value {
        let all: Vec<&str> = args.iter().copied().chain(["-o", "json"]).collect();
        self.run(&all).await.ok().json()
    }

    pub fn admin_token(&self) -> String {
        std::fs::read_to_string(&self.admin_token_file)
            .expect("admin token")
            .trim()
            .to_owned()
    }

    /// Writes `token` to a new file and returns its path.
    pub fn token_file(&self, name: &str, token: &str) -> PathBuf {
        let path = self.dir.path().join(format!("{name}.token"));
        std::fs::write(&path, format!("{token}\n")).expect("writing token file");
        path
    }

    /// Adds a human with one role and returns a file holding a fresh token of theirs.
    pub async fn human_with_token(&self, email: &str, role: &str) -> PathBuf {
        self.run(&["human", "add", email, "--name", "Test Human", "--role", role])
            .await
            .ok();
        let created = self
            .json(&["human", "token", "create", email, "--label", "test"])
            .await;
        let token = created["token"].as_str().expect("token in the response");
        self.token_file(email, token)
    }

    /// A human (added with `roles` by the admin) holding a token of their own: the admin issues one
    /// (written to `<email>.issued`), and the human claims it (`human token create --claim`), which
    /// revokes the issued one. Returns the own token's file and the issued token's file.
    pub async fn human_with_own_token(&self, email: &str, roles: &[&str]) -> (PathBuf, PathBuf) {
        let mut args = vec!["human", "add", email, "--name", "Test Human"];
        for r in roles {
            args.extend(["--role", r]);
        }
        self.run(&args).await.ok();
        let issued = self
            .json(&["human", "token", "create", email, "--label", "issued"])
            .await;
        let issued = self.token_file(
            &format!("{email}.issued"),
            issued["token"].as_str().expect("token"),
        );
        let own = self
            .run_as(
                &issued,
                &[
                    "human", "token", "create", email, "--claim", "--label", "own", "-o", "json",
                ],
            )
            .await
            .ok()
            .json();
        (
            self.token_file(email, own["token"].as_str().expect("token")),
            issued,
        )
    }

    /// The bootstrap admin's owner, a registered human to own agents and upstreams.
    pub async fn add_owner(&self) {
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

    /// An owner (alice), an upstream `crm` in `environment`, the agent `bot` registered, enrolled (its
    /// key in `cwd/bot.key`) and active, and a task on `crm` (its token in `cwd/bot.task`). Returns the
    /// task token file, the key file and the agent's name.
    pub async fn bot_with_task(&self, environment: &str) -> (PathBuf, PathBuf, &'static str) {
        self.add_owner().await;
        self.run(&[
            "upstream",
            "add",
            "crm",
            "--kind",
            "mcp",
            "--url",
            "https://crm.example.com/mcp",
            "--environment",
            environment,
            "--owner",
            "alice@example.com",
            "--sensitivity",
            "internal",
        ])
        .await
        .ok();
        let join = self.path("bot.jt");
        let join_s = join.to_str().expect("UTF-8 path");
        self.run(&[
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
            "crm",
            "--join-token-out",
            join_s,
        ])
        .await
        .ok();
        let key = self.path("bot.key");
        let key_s = key.to_str().expect("UTF-8 path");
        self.agent(&["agent", "enroll", "--join-token-file", join_s, "--key-out", key_s])
            .await
            .ok();
        self.run(&["agent", "activate", "bot"]).await.ok();
        let task = self.path("bot.task");
        self.agent(&[
            "task",
            "start",
            "--key",
            key_s,
            "--agent-id",
            "bot",
            "--purpose",
            "fix invoices",
            "--type",
            "billing",
            "--upstream",
            "crm",
            "--token-out",
            task.to_str().expect("UTF-8 path"),
        ])
        .await
        .ok();
        (task, key, "bot")
    }

    /// Registers the MCP upstream `name` at `url` (staging, internal), owned by alice (see
    /// [`Server::add_owner`], which must have run).
    pub async fn add_mcp_upstream(&self, name: &str, url: &str) {
        self.run(&[
            "upstream",
            "add",
            name,
            "--kind",
            "mcp",
            "--url",
            url,
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

    /// The agent `name` (staging, owned by alice, allowed on `upstreams`), registered, enrolled (its
    /// key in `cwd/<name>.key`) and active. Returns the key file.
    pub async fn active_agent(&self, name: &str, upstreams: &[&str]) -> PathBuf {
        let join = self.path(&format!("{name}.jt"));
        let join_s = join.to_str().expect("UTF-8 path");
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
            "--join-token-out",
            join_s,
        ];
        for u in upstreams {
            args.extend(["--upstream", u]);
        }
        self.run(&args).await.ok();
        let key = self.path(&format!("{name}.key"));
        let key_s = key.to_str().expect("UTF-8 path");
        self.agent(&["agent", "enroll", "--join-token-file", join_s, "--key-out", key_s])
            .await
            .ok();
        self.run(&["agent", "activate", name]).await.ok();
        key
    }

    /// A task of the agent `name` (key file `key`) on `upstream`, declaring `tools`, started with
    /// `warden task start` (plus `extra` flags). Returns the task id and the task token.
    pub async fn start_task(
        &self,
        name: &str,
        key: &Path,
        upstream: &str,
        tools: &[&str],
        extra: &[&str],
    ) -> (String, String) {
        let token_file = self.path(&format!("{name}-{}.task", uuid::Uuid::new_v4().simple()));
        let mut args = vec![
            "task",
            "start",
            "--key",
            key.to_str().expect("UTF-8 path"),
            "--agent-id",
            name,
            "--purpose",
            "survive faults",
            "--type",
            "faults",
            "--upstream",
            upstream,
            "--token-out",
            token_file.to_str().expect("UTF-8 path"),
            "-o",
            "json",
        ];
        for tool in tools {
            args.extend(["--tool", tool]);
        }
        args.extend(extra);
        let started = self.agent(&args).await.ok().json();
        let id = started["task_id"].as_str().expect("task_id").to_owned();
        let token = std::fs::read_to_string(&token_file)
            .expect("the task token file")
            .trim()
            .to_owned();
        (id, token)
    }

    /// Every entry of the ledger, through `GET /v1/audit/entries` as the bootstrap admin: each
    /// `{"seq", "leaf_hash", "canonical", "entry": {"kind", "body", ...}}`, in order.
    pub async fn ledger(&self) -> Vec<Value> {
        let http = reqwest::Client::new();
        let admin = self.admin_token();
        let mut entries: Vec<Value> = Vec::new();
        loop {
            let url = self.endpoint(&format!("/v1/audit/entries?from={}&limit=1000", entries.len()));
            let resp = http
                .get(&url)
                .bearer_auth(&admin)
                .send()
                .await
                .unwrap_or_else(|e| panic!("GET {url}: {e}"));
            let status = resp.status();
            let page: Value = resp.json().await.unwrap_or_else(|e| panic!("GET {url}: {e}"));
            assert_eq!(status, 200, "GET {url}: {page}");
            let page = page["entries"].as_array().expect("entries").clone();
            if page.is_empty() {
                return entries;
            }
            entries.extend(page);
        }
    }

    /// Where `warden audit` finds this server's ledger: `--data-dir`, and `--database` on PostgreSQL.
    pub fn ledger_location(&self) -> Vec<String> {
        let data_dir = self.dir.path().join("warden-data");
        let mut args = vec![
            "--data-dir".to_owned(),
            data_dir.to_str().expect("UTF-8 path").to_owned(),
        ];
        if let Some(url) = self.database_url() {
            args.extend(["--database".to_owned(), url]);
        }
        args
    }

    /// `warden audit verify` over the whole ledger, straight from the database (no server); asserts
    /// it passes and returns its report.
    pub async fn audit_verify(&self) -> Value {
        let location = self.ledger_location();
        let mut args = vec!["audit", "verify", "-o", "json"];
        args.extend(location.iter().map(String::as_str));
        let v = self.agent(&args).await.ok().json();
        assert_eq!(v["verified"], true, "`warden audit verify`: {v}");
        v
    }

    pub fn endpoint(&self, path: &str) -> String {
        format!("{}{path}", self.url.trim_end_matches('/'))
    }

    /// Runs `warden <args>` with no API token (the agent-side verbs), in `cwd/`.
    pub async fn agent(&self, args: &[&str]) -> Out {
        self.run_in(&self.cwd(), args).await
    }

    /// A path in `cwd/`, where the agent-side verbs run.
    pub fn path(&self, name: &str) -> PathBuf {
        self.cwd().join(name)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some(dir) = &self.mounted {
            let _ = std::process::Command::new("umount").arg("-l").arg(dir).status();
        }
        if std::thread::panicking() {
            eprintln!(
                "--- output of `warden serve` ({:?}) ---\n{}",
                self.backend,
                self.log()
            );
        }
    }
}
