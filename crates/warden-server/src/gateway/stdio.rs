//! MCP servers that speak over stdio, spawned by Warden: one process per MCP session.
//!
//! An upstream registered as `stdio://<name>` is served by the command of its `[[gateway.stdio]]`
//! entry. Commands come only from the configuration file — the operator's — never from the API:
//! an API that starts programs would be remote code execution for anyone who holds an admin token.
//!
//! `initialize` spawns the process (environment cleared but for Warden's own `PATH`, `HOME`,
//! `LANG`, the entry's `env` and the upstream's secrets of kind `env`), and the session id Warden
//! hands out is sealed like an HTTP upstream's.
//!
//! The names a secret may be injected as are an allow-list in the entry (`allow_env`), never set
//! through the API: a secret named `NODE_OPTIONS` or `PYTHONPATH` would make the server run code
//! of the admin's choosing as Warden's user (and read `gateway.key`). Names that load code are
//! refused on `allow_env` at startup unless the entry also lists them in `allow_code_loading_env`;
//! `/v1/secrets` refuses a name the entry does not allow (400 on `injection.var`); and a spawn
//! injects only allowed names — a secret stored before the configuration changed is withheld,
//! logged as an error and recorded (`secret_withheld`). Messages are newline-delimited JSON-RPC on stdin/stdout (stderr goes to
//! the log at debug level). Answers to requests are matched by id; everything else the server sends
//! (notifications, its own requests) goes to the session's `GET` stream. A session's process is
//! killed on `DELETE`, when its task stops being live, after `idle_secs` without a message, or when
//! it breaks the protocol (a line past the message limit, invalid JSON-RPC).
//!
//! The limit this sets: a stdio session lives on the node that spawned it. Behind a load balancer,
//! route by `Mcp-Session-Id` (sticky sessions); another node answers 404 and the client starts a new
//! session, as MCP prescribes.

use std::collections::HashMap;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::process::{Child, ChildStdin, Command};
use tokio::sync::{broadcast, oneshot};
use uuid::Uuid;
use warden_core::{Injection, UpstreamName};
use warden_gateway::jsonrpc::{self, Id, Message};

use super::clearance::{Clearance, Outgoing};
use super::upstream::UpstreamError;

pub use crate::config::StdioConfig;

/// What answers a message sent to a stdio session.
#[derive(Debug)]
pub enum Reply {
    /// The answer to a request.
    Answer(Message),
    /// A notification or a response was delivered (HTTP 202).
    Accepted,
}

/// One spawned server.
#[derive(Debug)]
struct Session {
    upstream: String,
    task: Uuid,
    child: Mutex<Option<Child>>,
    stdin: tokio::sync::Mutex<ChildStdin>,
    pending: Mutex<HashMap<Id, oneshot::Sender<Message>>>,
    /// Server-initiated messages, for the session's GET stream.
    events: broadcast::Sender<Value>,
    last_used: Mutex<Instant>,
    idle: Duration,
    /// The credentials given to the process, cut out of everything it writes (by the outbound
    /// filter).
    secrets: Arc<super::credentials::Injected>,
}

impl Session {
    fn kill(&self) {
        if let Ok(mut c) = self.child.lock()
            && let Some(mut child) = c.take()
        {
            let _ = child.start_kill();
        }
        if let Ok(mut p) = self.pending.lock() {
            p.clear();
        }
    }

    fn touch(&self) {
        if let Ok(mut t) = self.last_used.lock() {
            *t = Instant::now();
        }
    }
}

/// The stdio servers this node runs.
#[derive(Debug, Default)]
pub struct StdioServers {
    configs: HashMap<String, StdioConfig>,
    sessions: Mutex<HashMap<String, Arc<Session>>>,
}

impl StdioServers {
    pub fn new(configs: &[StdioConfig]) -> Self {
        Self {
            configs: configs.iter().map(|c| (c.upstream.clone(), c.clone())).collect(),
            sessions: Mutex::new(HashMap::new()),
        }
    }

    /// The `[[gateway.stdio]]` entry of `upstream`, if this node has one.
    pub fn config(&self, upstream: &str) -> Option<&StdioConfig> {
        self.configs.get(upstream)
    }

    fn session(&self, key: &str, task: Uuid, upstream: &str) -> Option<Arc<Session>> {
        let s = self.sessions.lock().ok()?.get(key).cloned()?;
        (s.task == task && s.upstream == upstream).then_some(s)
    }

    /// Whether `key` names a live session of this node for `task` at `upstream`.
    pub fn knows(&self, key: &str, task: Uuid, upstream: &str) -> bool {
        self.session(key, task, upstream).is_some()
    }

    /// Spawns a server for a new session; returns its key. Only for an allowed, recorded
    /// `initialize` request: the clearance says so.
    pub fn spawn(
        &self,
        clearance: &Clearance,
        upstream: &str,
        task: Uuid,
        env_secrets: &[(String, String)],
        max_line: usize,
    ) -> Result<String, UpstreamError> {
        match clearance.outgoing() {
            Outgoing::Message(Message::Request(r)) if r.method == "initialize" => {}
            _ => {
                return Err(UpstreamError::Protocol(
                    "a stdio server is started only by an `initialize` request".into(),
                ));
            }
        }
        let cfg = self.configs.get(upstream).ok_or_else(|| {
            UpstreamError::Protocol(format!(
                "upstream `{upstream}` is a stdio server, but this node has no [[gateway.stdio]] entry for it"
            ))
        })?;
        // Only names the entry allows (`env_secrets` has withheld and recorded the others; this
        // is the last check before the process sees them).
        let env_secrets: Vec<&(String, String)> = env_secrets
            .iter()
            .filter(|(var, _)| match cfg.env_refusal(var) {
                None => true,
                Some(why) => {
                    tracing::error!(upstream, var = %var, %why, "a secret was withheld from a stdio server");
                    false
                }
            })
            .collect();
        let values: Vec<&[u8]> = env_secrets.iter().map(|(_, v)| v.as_bytes()).collect();
        let secrets = Arc::new(super::credentials::Injected::for_values(&values).map_err(|e| {
            tracing::error!(upstream, error = %e, "a stdio server's secret is too short to be scrubbed from its output; set a longer one");
            UpstreamError::Credentials(upstream.into())
        })?);
        {
            let sessions = self
                .sessions
                .lock()
                .map_err(|_| UpstreamError::Unreachable(upstream.into()))?;
            if sessions.values().filter(|s| s.upstream == upstream).count() >= cfg.max_sessions {
                return Err(UpstreamError::Protocol(format!(
                    "upstream `{upstream}` already runs {} sessions (gateway.stdio max_sessions)",
                    cfg.max_sessions
                )));
            }
        }
        let mut cmd = Command::new(&cfg.command[0]);
        cmd.args(&cfg.command[1..])
            .env_clear()
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        for var in ["PATH", "HOME", "LANG"] {
            if let Ok(v) = std::env::var(var) {
                cmd.env(var, v);
            }
        }
        cmd.envs(&cfg.env);
        for (k, v) in &env_secrets {
            cmd.env(k, v);
        }
        if let Some(dir) = &cfg.cwd {
            cmd.current_dir(dir);
        }
        let mut child = cmd.spawn().map_err(|e| {
            tracing::error!(upstream, program = %cfg.command[0], error = %e, "cannot start the stdio MCP server");
            UpstreamError::Unreachable(upstream.into())
        })?;
        let (Some(stdin), Some(stdout), Some(stderr)) =
            (child.stdin.take(), child.stdout.take(), child.stderr.take())
        else {
            let _ = child.start_kill();
            return Err(UpstreamError::Unreachable(upstream.into()));
        };
        let key = format!("stdio-{}", Uuid::new_v4());
        let (events, _) = broadcast::channel(256);
        let session = Arc::new(Session {
            upstream: upstream.to_owned(),
            task,
            child: Mutex::new(Some(child)),
            stdin: tokio::sync::Mutex::new(stdin),
            pending: Mutex::new(HashMap::new()),
            events,
            last_used: Mutex::new(Instant::now()),
            idle: Duration::from_secs(cfg.idle_secs),
            secrets,
        });
        // Stdout: answers to their waiters, everything else to the GET stream.
        let reader = session.clone();
        let limits = jsonrpc::Limits {
            max_bytes: max_line,
            ..Default::default()
        };
        tokio::spawn(async move {
            let mut lines = BufReader::new(stdout);
            let mut line = Vec::new();
            loop {
                line.clear();
                let n = match read_line_limited(&mut lines, &mut line, max_line).await {
                    Ok(n) => n,
                    Err(why) => {
                        tracing::warn!(upstream = %reader.upstream, %why, "stdio MCP server broke the protocol; session ended");
                        break;
                    }
                };
                if n == 0 {
                    break;
                }
                let text = trim_line(&line);
                if text.is_empty() {
                    continue;
                }
                let msg = match jsonrpc::parse(text, &limits) {
                    Ok(m) => m,
                    Err(e) => {
                        tracing::warn!(upstream = %reader.upstream, error = %e, "stdio MCP server wrote something that is not JSON-RPC; session ended");
                        break;
                    }
                };
                let waiter = match &msg {
                    Message::Response(r) => reader.pending.lock().ok().and_then(|mut p| p.remove(&r.id)),
                    Message::Error(e) => {
                        e.id.as_ref()
                            .and_then(|id| reader.pending.lock().ok().and_then(|mut p| p.remove(id)))
                    }
                    _ => None,
                };
                match waiter {
                    Some(w) => {
                        let _ = w.send(msg);
                    }
                    None => {
                        let _ = reader.events.send(msg.to_value());
                    }
                }
            }
            reader.kill();
        });
        let name = upstream.to_owned();
        tokio::spawn(async move {
            let mut lines = BufReader::new(stderr).lines();
            while let Ok(Some(l)) = lines.next_line().await {
                tracing::debug!(upstream = %name, stderr = %l.chars().take(500).collect::<String>(), "stdio MCP server");
            }
        });
        if let Ok(mut s) = self.sessions.lock() {
            s.insert(key.clone(), session);
        }
        tracing::info!(upstream, %task, session = %key, "stdio MCP server started");
        Ok(key)
    }

    /// Sends the message `clearance` allows to a session and, for a request, waits for its answer.
    pub async fn send(
        &self,
        key: &str,
        task: Uuid,
        upstream: &str,
        clearance: &Clearance,
        timeout: Duration,
    ) -> Result<Reply, UpstreamError> {
        let Outgoing::Message(message) = clearance.outgoing() else {
            return Err(UpstreamError::Protocol(
                "only messages are sent to a stdio server".into(),
            ));
        };
        let session = self.session(key, task, upstream).ok_or_else(|| {
            UpstreamError::Protocol("the stdio session has ended; initialize a new one".into())
        })?;
        session.touch();
        let waiter = match message {
            Message::Request(r) => {
                let (tx, rx) = oneshot::channel();
                if let Ok(mut p) = session.pending.lock() {
                    p.insert(r.id.clone(), tx);
                }
                Some((r.id.clone(), rx))
            }
            _ => None,
        };
        let mut line = message.to_value().to_string().into_bytes();
        line.push(b'\n');
        {
            let mut stdin = session.stdin.lock().await;
            if stdin.write_all(&line).await.is_err() || stdin.flush().await.is_err() {
                self.end(key);
                return Err(UpstreamError::Unreachable(upstream.into()));
            }
        }
        let Some((id, rx)) = waiter else {
            return Ok(Reply::Accepted);
        };
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(m)) => Ok(Reply::Answer(m)),
            Ok(Err(_)) => {
                self.end(key);
                Err(UpstreamError::Unreachable(upstream.into()))
            }
            Err(_) => {
                if let Ok(mut p) = session.pending.lock() {
                    p.remove(&id);
                }
                Err(UpstreamError::Timeout {
                    upstream: upstream.into(),
                    limit: super::upstream::TimeLimit::Answer,
                    limit_ms: u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX),
                })
            }
        }
    }

    /// The credentials given to a session's process (to scrub its answers of them).
    pub fn secrets(&self, key: &str) -> Option<Arc<super::credentials::Injected>> {
        let sessions = self.sessions.lock().ok()?;
        sessions.get(key).map(|s| s.secrets.clone())
    }

    /// The session's server-initiated messages.
    pub fn subscribe(&self, key: &str, task: Uuid, upstream: &str) -> Option<broadcast::Receiver<Value>> {
        self.session(key, task, upstream).map(|s| s.events.subscribe())
    }

    /// Ends a session (kills its process).
    pub fn end(&self, key: &str) -> bool {
        let s = self.sessions.lock().ok().and_then(|mut m| m.remove(key));
        match s {
            Some(s) => {
                s.kill();
                tracing::info!(upstream = %s.upstream, task = %s.task, session = %key, "stdio MCP server stopped");
                true
            }
            None => false,
        }
    }

    /// Sessions to reap: idle too long, or whose process is gone.
    fn stale(&self) -> Vec<(String, Uuid)> {
        let Ok(s) = self.sessions.lock() else {
            return Vec::new();
        };
        s.iter()
            .filter(|(_, s)| {
                let idle = s.last_used.lock().map(|t| t.elapsed() > s.idle).unwrap_or(true);
                let dead = s.child.lock().map(|c| c.is_none()).unwrap_or(true);
                idle || dead
            })
            .map(|(k, s)| (k.clone(), s.task))
            .collect()
    }

    fn tasks(&self) -> Vec<(String, Uuid)> {
        self.sessions
            .lock()
            .map(|s| s.iter().map(|(k, s)| (k.clone(), s.task)).collect())
            .unwrap_or_default()
    }
}

/// Ends sessions whose task is no longer live, that sat idle, or whose process died; every `every`.
pub fn spawn_reaper(state: crate::AppState, every: Duration) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let servers = &state.gateway.stdio;
            for (key, _) in servers.stale() {
                servers.end(&key);
            }
            for (key, task) in servers.tasks() {
                let live = state
                    .identity
                    .tasks
                    .live_task(state.store.as_ref(), task, chrono::Utc::now())
                    .await
                    .is_ok();
                if !live {
                    servers.end(&key);
                }
            }
        }
    });
}

/// The upstream's secrets of kind `env` that its `[[gateway.stdio]]` entry allows, opened. A
/// secret whose variable the entry does not allow (the configuration changed after the secret was
/// created) is withheld: never opened, logged as an error, and recorded in the ledger
/// (`secret_withheld`, by `actor`: the agent whose session spawns the server).
pub async fn env_secrets(
    state: &crate::AppState,
    upstream: &UpstreamName,
    actor: &str,
) -> Result<Vec<(String, String)>, UpstreamError> {
    let sealed = state.store.upstream_secrets(upstream).await.map_err(|e| {
        tracing::warn!(%upstream, error = %e, "upstream secrets cannot be read");
        UpstreamError::Credentials(upstream.to_string())
    })?;
    let cfg = state.gateway.stdio.config(upstream.as_str());
    let mut out = Vec::new();
    for s in &sealed {
        let Injection::Env { var } = &s.injection else {
            continue;
        };
        let refusal = match cfg {
            Some(cfg) => cfg.env_refusal(var.as_str()),
            None => Some(format!(
                "upstream `{upstream}` has no [[gateway.stdio]] entry on this node"
            )),
        };
        if let Some(why) = refusal {
            tracing::error!(%upstream, secret = %s.name, var = %var, %why, "a secret was withheld from a stdio server: its variable is not allowed by the configuration");
            let mut entry = crate::ledger::entry(warden_ledger::EntryKind::SecretWithheld, actor);
            entry.body = serde_json::json!({
                "upstream": upstream.as_str(),
                "secret": s.name.as_str(),
                "var": var.as_str(),
                "reason": why,
            });
            if let Err(e) = state.ledger.record(entry).await {
                tracing::error!(%upstream, secret = %s.name, error = %e, "the withheld secret could not be recorded in the ledger");
            }
            continue;
        }
        let value = state.gateway.keys.open_secret(s).map_err(|e| {
            tracing::error!(%upstream, secret = %s.name, error = %e, "an upstream secret does not open with this node's gateway key");
            UpstreamError::Credentials(upstream.to_string())
        })?;
        let value = String::from_utf8(value).map_err(|_| UpstreamError::Credentials(upstream.to_string()))?;
        out.push((var.as_str().to_owned(), value));
    }
    Ok(out)
}

/// Reads one line of at most `max` bytes (without buffering more than that).
async fn read_line_limited<R: tokio::io::AsyncBufRead + Unpin>(
    r: &mut R,
    out: &mut Vec<u8>,
    max: usize,
) -> Result<usize, String> {
    let mut total = 0;
    loop {
        let buf = r.fill_buf().await.map_err(|e| e.to_string())?;
        if buf.is_empty() {
            return Ok(total);
        }
        let (take, done) = match buf.iter().position(|b| *b == b'\n') {
            Some(i) => (i + 1, true),
            None => (buf.len(), false),
        };
        if out.len() + take > max + 1 {
            return Err(format!("a line longer than {max} bytes"));
        }
        out.extend_from_slice(&buf[..take]);
        r.consume(take);
        total += take;
        if done {
            return Ok(total);
        }
    }
}

fn trim_line(line: &[u8]) -> &[u8] {
    let mut end = line.len();
    while end > 0 && matches!(line[end - 1], b'\n' | b'\r') {
        end -= 1;
    }
    &line[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn lines_are_bounded() {
        let data = b"short\nthis line is far too long\n".to_vec();
        let mut r = BufReader::new(&data[..]);
        let mut line = Vec::new();
        assert_eq!(read_line_limited(&mut r, &mut line, 10).await, Ok(6));
        assert_eq!(trim_line(&line), b"short");
        line.clear();
        assert!(read_line_limited(&mut r, &mut line, 10).await.is_err());
    }

    #[test]
    fn configs_are_checked() {
        let ok = StdioConfig {
            upstream: "fs".into(),
            command: vec!["node".into()],
            env: HashMap::new(),
            allow_env: vec!["API_TOKEN".into()],
            allow_code_loading_env: vec![],
            cwd: None,
            max_sessions: 16,
            idle_secs: 600,
        };
        assert!(ok.validate(0).is_ok());
        assert!(
            StdioConfig {
                command: vec![],
                ..ok.clone()
            }
            .validate(0)
            .is_err()
        );
        assert!(
            StdioConfig {
                upstream: "Not Valid".into(),
                ..ok.clone()
            }
            .validate(0)
            .is_err()
        );
        assert!(
            StdioConfig {
                max_sessions: 0,
                ..ok
            }
            .validate(0)
            .is_err()
        );
    }

    fn gateway(toml_text: &str) -> anyhow::Result<()> {
        let c: crate::config::Config = toml::from_str(toml_text).expect("parses");
        c.gateway.validate()
    }

    #[test]
    fn code_loading_names_on_allow_env_are_a_startup_error() {
        for var in [
            "NODE_OPTIONS",
            "PYTHONPATH",
            "BASH_ENV",
            "HOME",
            "JAVA_TOOL_OPTIONS",
        ] {
            let e = gateway(&format!(
                "[[gateway.stdio]]\nupstream = \"files\"\ncommand = [\"node\"]\nallow_env = [\"API_TOKEN\", \"{var}\"]\n"
            ))
            .expect_err(var)
            .to_string();
            assert!(
                e.contains("gateway.stdio[0] (`files`)")
                    && e.contains(&format!("allow_env `{var}`"))
                    && e.contains("allow_code_loading_env"),
                "{var}: {e}"
            );
        }
        // Marked explicitly: the operator's decision.
        gateway(
            "[[gateway.stdio]]\nupstream = \"files\"\ncommand = [\"python3\"]\nallow_env = [\"PYTHONPATH\"]\nallow_code_loading_env = [\"PYTHONPATH\"]\n",
        )
        .expect("marked");
        // The loader's variables and PATH are never a secret's, marked or not.
        let e = gateway(
            "[[gateway.stdio]]\nupstream = \"files\"\ncommand = [\"node\"]\nallow_env = [\"LD_PRELOAD\"]\nallow_code_loading_env = [\"LD_PRELOAD\"]\n",
        )
        .expect_err("LD_PRELOAD")
        .to_string();
        assert!(e.contains("allow_env `LD_PRELOAD`: environment variable `LD_PRELOAD` controls how the server program is loaded"), "{e}");
        // A mark for a name not on allow_env is a mistake, and a name must be a variable name.
        let e = gateway(
            "[[gateway.stdio]]\nupstream = \"files\"\ncommand = [\"node\"]\nallow_code_loading_env = [\"NODE_OPTIONS\"]\n",
        )
        .expect_err("unlisted mark")
        .to_string();
        assert!(
            e.contains("allow_code_loading_env `NODE_OPTIONS` is not on allow_env"),
            "{e}"
        );
        let e = gateway(
            "[[gateway.stdio]]\nupstream = \"files\"\ncommand = [\"node\"]\nallow_env = [\"api_token\"]\n",
        )
        .expect_err("lowercase")
        .to_string();
        assert!(
            e.contains("gateway.stdio[0] (`files`): allow_env `api_token`"),
            "{e}"
        );
        // The second entry is named as such.
        let e = gateway(
            "[[gateway.stdio]]\nupstream = \"a\"\ncommand = [\"x\"]\n[[gateway.stdio]]\nupstream = \"b\"\ncommand = [\"x\"]\nallow_env = [\"NODE_PATH\"]\n",
        )
        .expect_err("second")
        .to_string();
        assert!(e.contains("gateway.stdio[1] (`b`)"), "{e}");
    }

    #[test]
    fn only_allowed_names_are_injectable() {
        let c: crate::config::Config = toml::from_str(
            "[[gateway.stdio]]\nupstream = \"files\"\ncommand = [\"python3\"]\nallow_env = [\"API_TOKEN\", \"PYTHONPATH\"]\nallow_code_loading_env = [\"PYTHONPATH\"]\n",
        )
        .expect("parses");
        let cfg = &c.gateway.stdio[0];
        assert_eq!(cfg.env_refusal("API_TOKEN"), None);
        assert_eq!(cfg.env_refusal("PYTHONPATH"), None, "marked");
        let why = cfg.env_refusal("NODE_OPTIONS").expect("not listed");
        assert!(
            why.contains("not on the allow_env list of upstream `files`")
                && why.contains("API_TOKEN, PYTHONPATH"),
            "{why}"
        );
        // A config that was never validated still does not let a code-loading name through.
        let raw = StdioConfig {
            allow_env: vec!["NODE_OPTIONS".into()],
            allow_code_loading_env: vec![],
            ..cfg.clone()
        };
        assert!(
            raw.env_refusal("NODE_OPTIONS")
                .expect("unmarked")
                .contains("load or run other code")
        );
        let none = StdioConfig {
            allow_env: vec![],
            ..cfg.clone()
        };
        assert!(
            none.env_refusal("API_TOKEN")
                .expect("empty")
                .contains("the list is empty")
        );
    }
}
