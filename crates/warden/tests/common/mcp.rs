//! What the MCP tests share: the official reference servers (`@modelcontextprotocol/server-everything`
//! over streamable HTTP on a free loopback port, `server-filesystem`'s stdio command line), pinned in
//! `tests/mcp/package.json`, [`McpDriver`], the official MCP Python SDK client driven one JSON
//! command at a time through `tests/mcp/driver.py` (its docstring lists the commands and answers),
//! and [`ts_sdk_client`], the official TypeScript SDK client run once through `tests/mcp/ts_client.mjs`.
//!
//! scripts/test installs all of it (`pip install -r tests/mcp/requirements.txt`, `npm ci` in
//! `tests/mcp`). Nothing here skips when a part is missing: the test fails and says to run
//! scripts/test. Every child process is killed when its handle is dropped, and its output is printed
//! when that happens during a panic.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers: a failure is a failed test

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

/// How long a reference server may take to accept connections.
pub const MCP_READY_TIMEOUT: Duration = Duration::from_secs(30);
/// What [`McpDriver::send`] waits beyond the command's own `timeout` (default 30 s) before it fails
/// the test: the driver answers every command by then, unless it hangs.
pub const DRIVER_GRACE: Duration = Duration::from_secs(15);
const INSTALL_HINT: &str = "run scripts/test, which installs the MCP test dependencies (or by hand: \
     `python3 -m pip install -r crates/warden/tests/mcp/requirements.txt` and `npm ci` in crates/warden/tests/mcp)";

/// `crates/warden/tests/mcp`: package.json, driver.py, node_modules.
pub fn mcp_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/mcp")
}

/// `node`'s absolute path (from PATH), so that the command lines here work with any environment.
pub fn node() -> PathBuf {
    static NODE: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    NODE.get_or_init(|| {
        let path = std::env::var_os("PATH").unwrap_or_default();
        std::env::split_paths(&path)
            .map(|dir| dir.join("node"))
            .find(|candidate| candidate.is_file())
            .ok_or_else(|| {
                format!("the MCP tests need Node.js (`node` on PATH) for the reference servers; install Node.js 20 or later with npm, then {INSTALL_HINT}")
            })
    })
    .clone()
    .unwrap_or_else(|e| panic!("{e}"))
}

/// The version of `package` that package.json pins.
fn pinned_npm_version(package: &str) -> String {
    let manifest: Value = serde_json::from_str(
        &std::fs::read_to_string(mcp_dir().join("package.json")).expect("tests/mcp/package.json"),
    )
    .expect("tests/mcp/package.json is JSON");
    manifest["dependencies"][package]
        .as_str()
        .unwrap_or_else(|| panic!("tests/mcp/package.json pins no {package}"))
        .to_owned()
}

/// The entry point of an installed reference server, checked to be the pinned version.
fn reference_server(package: &str) -> PathBuf {
    npm_package(package).join("dist/index.js")
}

/// The directory of an installed npm package of `tests/mcp/package.json`, checked to be the pinned
/// version.
pub fn npm_package(package: &str) -> PathBuf {
    let root = mcp_dir().join("node_modules").join(package);
    let installed = std::fs::read_to_string(root.join("package.json"))
        .ok()
        .and_then(|text| serde_json::from_str::<Value>(&text).ok())
        .and_then(|manifest| manifest["version"].as_str().map(str::to_owned));
    let pinned = pinned_npm_version(package);
    match installed {
        None => panic!("{package} is not installed in crates/warden/tests/mcp/node_modules: {INSTALL_HINT}"),
        Some(v) if v != pinned => {
            panic!("{package} {v} is installed, but package.json pins {pinned}: {INSTALL_HINT}")
        }
        Some(_) => root,
    }
}

/// Copies lines from a child's pipe into `log`.
fn drain(pipe: impl std::io::Read + Send + 'static, log: Arc<Mutex<String>>) {
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(pipe).lines() {
            let Ok(line) = line else { break };
            let mut log = log.lock().unwrap_or_else(|e| e.into_inner());
            log.push_str(&line);
            log.push('\n');
        }
    });
}

/// `@modelcontextprotocol/server-everything` serving streamable HTTP on a free 127.0.0.1 port,
/// killed when dropped.
#[derive(Debug)]
pub struct EverythingServer {
    child: Child,
    /// e.g. `http://127.0.0.1:41234/mcp`
    pub url: String,
    pub port: u16,
    log: Arc<Mutex<String>>,
}

impl EverythingServer {
    /// Starts the server and waits until it accepts connections.
    pub async fn start() -> EverythingServer {
        Self::start_with_env(&[]).await
    }

    /// Starts it with these environment variables besides PATH and PORT (its environment is
    /// otherwise empty: its `get-env` tool returns all of it, so a test can plant a fake secret
    /// there and see what a gateway does with a result carrying it).
    pub async fn start_with_env(env: &[(&str, &str)]) -> EverythingServer {
        let script = reference_server("@modelcontextprotocol/server-everything");
        let mut last_failure = String::new();
        // The free port is found by binding port 0 and letting it go; another process may take it
        // before the server binds it, so a server that exits at once is tried again on another.
        for _ in 0..3 {
            let port = std::net::TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .expect("a free loopback port")
                .port();
            let mut child = Command::new(node())
                .arg("--require")
                .arg(mcp_dir().join("loopback.cjs"))
                .arg(&script)
                .arg("streamableHttp")
                .env_clear()
                .env("PATH", std::env::var_os("PATH").unwrap_or_default())
                .env("PORT", port.to_string())
                .envs(env.iter().copied())
                .current_dir(mcp_dir())
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("spawning node (server-everything)");
            let log = Arc::new(Mutex::new(String::new()));
            drain(child.stdout.take().expect("piped"), log.clone());
            drain(child.stderr.take().expect("piped"), log.clone());
            let mut server = EverythingServer {
                child,
                url: format!("http://127.0.0.1:{port}/mcp"),
                port,
                log,
            };
            let deadline = Instant::now() + MCP_READY_TIMEOUT;
            loop {
                if tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_ok() {
                    return server;
                }
                if let Ok(Some(status)) = server.child.try_wait() {
                    last_failure = format!("exited with {status}; output:\n{}", server.log());
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "server-everything did not accept connections on port {port} within {MCP_READY_TIMEOUT:?}; output:\n{}",
                    server.log()
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        panic!("server-everything did not start: {last_failure}");
    }

    pub fn log(&self) -> String {
        self.log.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Kills the server now (a dead upstream, mid-session).
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for EverythingServer {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            eprintln!(
                "--- output of server-everything ({}) ---\n{}",
                self.url,
                self.log()
            );
        }
    }
}

/// `@modelcontextprotocol/server-filesystem`, an MCP server on stdio: whoever speaks MCP over stdio
/// (Warden for a stdio upstream, or [`McpDriver`] with `{"op":"connect","command":argv}`) spawns it.
#[derive(Debug)]
pub struct FilesystemServer;

impl FilesystemServer {
    /// `[/abs/node, /abs/.../server-filesystem/dist/index.js, dir]`: serves the files under `dir`.
    pub fn argv(dir: &Path) -> Vec<String> {
        let script = reference_server("@modelcontextprotocol/server-filesystem");
        [node().as_path(), script.as_path(), dir]
            .iter()
            .map(|p| p.to_str().expect("UTF-8 path").to_owned())
            .collect()
    }
}

/// `tests/mcp/changing_server.py`: an MCP server made with the official Python SDK's server side
/// (`MCPServer`), streamable HTTP on a free 127.0.0.1 port, with two read-only tools, `lookup` and
/// `stable`. `lookup`'s description is read from a file at every `tools/list`, so
/// [`ChangingToolServer::set_description`] changes the tool's definition under open sessions.
/// With an API key, it answers 401 to every request without that `X-Api-Key`. Killed when dropped.
#[derive(Debug)]
pub struct ChangingToolServer {
    child: Child,
    /// e.g. `http://127.0.0.1:41234/mcp`
    pub url: String,
    description_file: tempfile::NamedTempFile,
    log: Arc<Mutex<String>>,
}

impl ChangingToolServer {
    /// Starts the server with `lookup` described as `description`, requiring `X-Api-Key: api_key`
    /// when given; waits until it accepts connections.
    pub async fn start(description: &str, api_key: Option<&str>) -> ChangingToolServer {
        Self::start_pinned(description, api_key, None).await
    }

    /// [`ChangingToolServer::start`], pinned to one era (`$PROTOCOL_ERA`: `modern` for 2026-07-28
    /// only, `legacy` for 2025 only; `None`: both).
    pub async fn start_pinned(
        description: &str,
        api_key: Option<&str>,
        era: Option<&str>,
    ) -> ChangingToolServer {
        require_python_sdk();
        let description_file = tempfile::NamedTempFile::new().expect("a temporary file");
        std::fs::write(description_file.path(), description).expect("writing the description");
        let mut last_failure = String::new();
        // As for server-everything: the free port may be taken before the server binds it.
        for _ in 0..3 {
            let port = std::net::TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .expect("a free loopback port")
                .port();
            let mut cmd = Command::new("python3");
            cmd.arg(mcp_dir().join("changing_server.py"))
                .env("PORT", port.to_string())
                .env("TOOL_DESCRIPTION_FILE", description_file.path())
                .env("PYTHONUNBUFFERED", "1")
                .env_remove("REQUIRED_API_KEY")
                .env_remove("PROTOCOL_ERA")
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped());
            if let Some(key) = api_key {
                cmd.env("REQUIRED_API_KEY", key);
            }
            if let Some(era) = era {
                cmd.env("PROTOCOL_ERA", era);
            }
            let mut child = cmd.spawn().expect("spawning python3 changing_server.py");
            let log = Arc::new(Mutex::new(String::new()));
            drain(child.stdout.take().expect("piped"), log.clone());
            drain(child.stderr.take().expect("piped"), log.clone());
            let output = |log: &Arc<Mutex<String>>| log.lock().unwrap_or_else(|e| e.into_inner()).clone();
            let deadline = Instant::now() + MCP_READY_TIMEOUT;
            loop {
                if tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_ok() {
                    return ChangingToolServer {
                        child,
                        url: format!("http://127.0.0.1:{port}/mcp"),
                        description_file,
                        log,
                    };
                }
                if let Ok(Some(status)) = child.try_wait() {
                    last_failure = format!("exited with {status}; output:\n{}", output(&log));
                    break;
                }
                if Instant::now() > deadline {
                    let _ = child.kill();
                    panic!(
                        "changing_server.py did not accept connections on port {port} within {MCP_READY_TIMEOUT:?}; output:\n{}",
                        output(&log)
                    );
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        panic!("changing_server.py did not start: {last_failure}");
    }

    /// Changes `lookup`'s description: the next `tools/list` shows the new definition.
    pub fn set_description(&self, description: &str) {
        std::fs::write(self.description_file.path(), description).expect("writing the description");
    }

    pub fn log(&self) -> String {
        self.log.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

impl Drop for ChangingToolServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!(
                "--- output of changing_server.py ({}) ---\n{}",
                self.url,
                self.log()
            );
        }
    }
}

/// The pinned SDK version (requirements.txt's `mcp==X`), checked once to be what python3 imports.
fn require_python_sdk() {
    static CHECKED: OnceLock<Result<(), String>> = OnceLock::new();
    CHECKED
        .get_or_init(|| {
            let requirements = std::fs::read_to_string(mcp_dir().join("requirements.txt"))
                .expect("tests/mcp/requirements.txt");
            let pinned = requirements
                .lines()
                .find_map(|l| l.trim().strip_prefix("mcp=="))
                .expect("requirements.txt pins mcp==VERSION")
                .trim()
                .to_owned();
            let out = Command::new("python3")
                .args([
                    "-c",
                    "import mcp, importlib.metadata as m; print(m.version('mcp'))",
                ])
                .output()
                .map_err(|e| format!("the MCP tests need python3 ({e}): install Python 3.10 or later, then {INSTALL_HINT}"))?;
            let found = String::from_utf8_lossy(&out.stdout).trim().to_owned();
            if !out.status.success() {
                return Err(format!(
                    "the MCP tests need the official MCP Python SDK (mcp=={pinned}) for python3: {INSTALL_HINT}\n{}",
                    String::from_utf8_lossy(&out.stderr)
                ));
            }
            if found != pinned {
                return Err(format!(
                    "python3 has the MCP Python SDK {found}, but the tests pin mcp=={pinned}: {INSTALL_HINT}"
                ));
            }
            Ok(())
        })
        .clone()
        .unwrap_or_else(|e| panic!("{e}"))
}

/// The official MCP Python SDK client, one session at a time, driven by JSON commands
/// (`tests/mcp/driver.py`); killed when dropped.
#[derive(Debug)]
pub struct McpDriver {
    child: tokio::process::Child,
    stdin: tokio::process::ChildStdin,
    stdout: tokio::io::Lines<BufReader<tokio::process::ChildStdout>>,
    stderr: Arc<Mutex<String>>,
    /// Every command and answer so far, for failure messages.
    transcript: String,
}

impl McpDriver {
    /// Starts `python3 driver.py` (after checking the pinned SDK is installed).
    pub fn spawn() -> McpDriver {
        require_python_sdk();
        let mut child = tokio::process::Command::new("python3")
            .arg(mcp_dir().join("driver.py"))
            .env("PYTHONUNBUFFERED", "1")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("spawning python3 driver.py");
        let stderr = Arc::new(Mutex::new(String::new()));
        let mut pipe = BufReader::new(child.stderr.take().expect("piped")).lines();
        let log = stderr.clone();
        tokio::spawn(async move {
            while let Ok(Some(line)) = pipe.next_line().await {
                let mut log = log.lock().unwrap_or_else(|e| e.into_inner());
                log.push_str(&line);
                log.push('\n');
            }
        });
        McpDriver {
            stdin: child.stdin.take().expect("piped"),
            stdout: BufReader::new(child.stdout.take().expect("piped")).lines(),
            child,
            stderr,
            transcript: String::new(),
        }
    }

    /// Sends one command and returns its answer (`{"ok":true,"result":...}` or
    /// `{"ok":false,"kind":...}`). Fails the test when the driver dies or does not answer within the
    /// command's `timeout` (default 30 s) plus [`DRIVER_GRACE`].
    pub async fn send(&mut self, command: Value) -> Value {
        let line = format!("{command}\n");
        self.transcript.push_str(&format!("> {command}\n"));
        if let Err(e) = self.stdin.write_all(line.as_bytes()).await {
            panic!("the MCP driver is gone ({e}){}", self.context());
        }
        let _ = self.stdin.flush().await;
        let wait = Duration::from_secs_f64(command["timeout"].as_f64().unwrap_or(30.0)) + DRIVER_GRACE;
        match tokio::time::timeout(wait, self.stdout.next_line()).await {
            Ok(Ok(Some(answer))) => {
                self.transcript.push_str(&format!("< {answer}\n"));
                serde_json::from_str(&answer)
                    .unwrap_or_else(|e| panic!("the MCP driver answered no JSON ({e}){}", self.context()))
            }
            Ok(Ok(None)) | Ok(Err(_)) => {
                let status = self.child.try_wait();
                panic!(
                    "the MCP driver exited ({status:?}) without answering {command}{}",
                    self.context()
                )
            }
            Err(_) => panic!(
                "the MCP driver did not answer {command} within {wait:?}: it hangs{}",
                self.context()
            ),
        }
    }

    /// Sends a command that must succeed; returns its `result`.
    pub async fn ok(&mut self, command: Value) -> Value {
        let answer = self.send(command.clone()).await;
        assert_eq!(answer["ok"], true, "{command} failed: {answer}{}", self.context());
        answer["result"].clone()
    }

    /// Opens a streamable-HTTP session at `url`, with `Authorization: Bearer TOKEN` when given;
    /// returns the answer (check `ok`).
    pub async fn connect(&mut self, url: &str, token: Option<&str>) -> Value {
        let headers = match token {
            Some(t) => json!({"Authorization": format!("Bearer {t}")}),
            None => json!({}),
        };
        self.send(json!({"op": "connect", "url": url, "headers": headers}))
            .await
    }

    /// `tools/list`; returns the tools' names.
    pub async fn tool_names(&mut self) -> Vec<String> {
        let result = self.ok(json!({"op": "list_tools"})).await;
        result["tools"]
            .as_array()
            .expect("tools")
            .iter()
            .map(|t| t["name"].as_str().expect("a tool's name").to_owned())
            .collect()
    }

    /// `tools/call`; returns the answer (ok with the result, a tool error included, or not ok).
    pub async fn call_tool(&mut self, name: &str, arguments: Value) -> Value {
        self.send(json!({"op": "call_tool", "name": name, "arguments": arguments}))
            .await
    }

    /// Every command sent and every answer received so far, one line each (`> command`,
    /// `< answer`): everything the MCP client was told.
    pub fn transcript(&self) -> &str {
        &self.transcript
    }

    /// What the driver printed on stderr (the SDK's warnings, a traceback).
    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn context(&self) -> String {
        format!(
            "\n--- driver transcript ---\n{}--- driver stderr ---\n{}",
            self.transcript,
            self.stderr()
        )
    }
}

impl Drop for McpDriver {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
        if std::thread::panicking() {
            eprintln!("--- MCP driver ---{}", self.context());
        }
    }
}

/// How long [`ts_sdk_client`] may take: connect, list, and a few calls.
pub const TS_CLIENT_TIMEOUT: Duration = Duration::from_secs(60);

/// The official MCP TypeScript SDK client (`@modelcontextprotocol/client`, pinned in
/// `tests/mcp/package.json`) run once by `tests/mcp/ts_client.mjs`: `config` goes to its stdin (the
/// URL, the bearer token, the revision, the call to make and the calls expected to be refused; its
/// header comment has the shape), and its one JSON line of results is returned (check `ok`). Fails
/// the test when the script prints no JSON line within [`TS_CLIENT_TIMEOUT`], with its stderr.
pub async fn ts_sdk_client(config: Value) -> Value {
    npm_package("@modelcontextprotocol/client");
    let mut child = tokio::process::Command::new(node())
        .arg(mcp_dir().join("ts_client.mjs"))
        .current_dir(mcp_dir())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawning node ts_client.mjs");
    let mut stdin = child.stdin.take().expect("piped");
    stdin
        .write_all(config.to_string().as_bytes())
        .await
        .expect("writing the TypeScript client's config");
    drop(stdin);
    let output = tokio::time::timeout(TS_CLIENT_TIMEOUT, child.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("the TypeScript SDK client did not finish within {TS_CLIENT_TIMEOUT:?}"))
        .expect("waiting for node ts_client.mjs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    stdout
        .lines()
        .find_map(|line| serde_json::from_str::<Value>(line).ok())
        .unwrap_or_else(|| {
            panic!(
                "the TypeScript SDK client printed no JSON line ({}):\n--- stdout ---\n{stdout}--- stderr ---\n{stderr}",
                output.status
            )
        })
}

/// The text of a tool result's first content item.
#[track_caller]
pub fn first_text(result: &Value) -> &str {
    result["content"][0]["text"]
        .as_str()
        .unwrap_or_else(|| panic!("no text content in {result}"))
}
