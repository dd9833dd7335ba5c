//! `warden connect`: a local bridge that a desktop or IDE MCP client runs as a stdio MCP server. It
//! acts as one agent (its key file) on one upstream (`--upstream`), through Warden's Streamable HTTP
//! endpoint `<server>/mcp/<upstream>`.
//!
//! - **Credentials.** The agent's key is loaded once (refused when group or others may read it) and
//!   never printed; it signs the assertions of the task's start and renewals (RFC 8693, the code of
//!   `warden task start|renew`). Task tokens live in memory only.
//! - **Renewal.** The token is renewed when a third of its lifetime is left. When the task reaches
//!   its maximum duration, a new task with the same intent is started and the MCP session is
//!   re-initialized for it (Warden's sessions are sealed with their task) by replaying the client's
//!   own `initialize`; subscriptions and the upstream's session state do not carry over. A task
//!   that someone *ended* (a revocation) is not replaced: ending it is how an admin stops this
//!   agent, so every later request is answered with an error saying so, and the bridge keeps
//!   running until the client stops it.
//! - **Relay.** stdin and stdout carry newline-delimited JSON-RPC (MCP's stdio transport). Each
//!   message from the client is POSTed with the task token, `Accept: application/json,
//!   text/event-stream`, the `Mcp-Session-Id` Warden returned and the negotiated
//!   `MCP-Protocol-Version`; JSON and SSE answers are written to stdout, one message per line. The
//!   `GET` stream for server-initiated messages is opened after `notifications/initialized` (when
//!   Warden answers 405 there is none). A line longer than the JSON-RPC limit is answered with a
//!   parse error and skipped, never buffered whole.
//! - **Approvals.** A `tools/call` answered with -32011 (approval required), or with -32042 (URL
//!   elicitation required, naming an approval) is shown to the user:
//!   as an `elicitation/create` request in URL mode when the client declared
//!   `capabilities.elicitation.url`, and always on stderr; the bridge then waits on the approval
//!   (`GET /v1/approvals/ID?wait=25`) and, once granted, sends the call again and relays that
//!   answer. A denial or expiry answers the call with -32010 naming the approval; a user who
//!   declines the elicitation, or a client that cancels the request, ends the wait.
//! - **Shutdown.** On EOF on stdin the session is deleted and the task ended (the safe default: no
//!   task outlives the client that needed it).
//!
//! stdout carries only protocol messages; logs go to stderr and never hold a token or the key.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, anyhow};
use futures_util::StreamExt as _;
use reqwest::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE, HeaderValue};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _};
use tokio::sync::{Mutex, mpsc, oneshot};
use tokio::time::Instant;
use warden_core::Secret;
use warden_gateway::jsonrpc::{self, Id, Message};
use warden_gateway::sse::{SseLimits, SseParser};
use warden_identity::{GRANT_TYPE_TOKEN_EXCHANGE, SigningKey, TOKEN_TYPE_JWT, TOKEN_TYPE_TASK};

use crate::agent::{Discovery, assertion, exchange, load_key};
use crate::cli::ConnectArgs;
use crate::client::{ApiError, Client, Server, printable};
use crate::request::{self, UsageError};

/// How long one wait on an approval lasts (the server's maximum).
const APPROVAL_WAIT_SECS: &str = "25";
/// Longest a POST may take to start answering (Warden's own upstream limits fire before).
const ANSWER_START: Duration = Duration::from_secs(120);
/// Longest silence inside an answer's event stream.
const STREAM_IDLE: Duration = Duration::from_secs(300);

fn log(msg: impl AsRef<str>) {
    eprintln!("warden connect: {}", msg.as_ref());
}

/// `warden connect`.
pub async fn run(server: &Server, args: ConnectArgs) -> anyhow::Result<()> {
    let [upstream] = args.intent.upstreams.as_slice() else {
        return Err(UsageError(
            "--upstream: give exactly one upstream, the one the client reaches through Warden".into(),
        )
        .into());
    };
    let upstream = upstream.clone();
    let intent = request::task_intent(&args.intent, None)?;
    let key = load_key(&args.agent.key, "--key")?;
    let api = Client::anonymous(server)?;
    let discovery = Discovery::fetch(&api).await?;
    let spiffe = discovery.spiffe_id(&args.agent.agent_id)?;
    let http = crate::client::http_builder(server)?
        .build()
        .context("setting up the HTTP client")?;
    let mcp_url = crate::client::endpoint(&server.url, &["mcp", upstream.as_str()], &[])?;
    let (out_tx, out_rx) = mpsc::channel::<Value>(256);
    let bridge = Arc::new(Bridge {
        http,
        api,
        discovery,
        key,
        spiffe,
        details: intent.to_authorization_details().to_string(),
        mcp_url,
        out: out_tx,
        task: Mutex::new(None),
        session: std::sync::Mutex::new(Session::default()),
        elicitations: std::sync::Mutex::new(HashMap::new()),
        waits: std::sync::Mutex::new(HashMap::new()),
        next_id: std::sync::atomic::AtomicU64::new(1),
    });
    bridge.start_task().await?;
    let writer = tokio::spawn(write_stdout(out_rx));
    let renewer = tokio::spawn(bridge.clone().renew_loop());
    let result = bridge.clone().read_stdin().await;
    renewer.abort();
    bridge.shutdown().await;
    drop(bridge);
    // Everything queued is written before the process exits.
    let _ = writer.await;
    result
}

/// Writes each message as one line on stdout, flushed.
async fn write_stdout(mut rx: mpsc::Receiver<Value>) {
    let mut stdout = tokio::io::stdout();
    while let Some(v) = rx.recv().await {
        let mut line = v.to_string().into_bytes();
        line.push(b'\n');
        if stdout.write_all(&line).await.is_err() || stdout.flush().await.is_err() {
            log("stdout is closed; stopping");
            return;
        }
    }
}

/// The task this bridge acts in.
struct Task {
    id: String,
    token: Secret<String>,
    /// When the token expires.
    expires: Instant,
    /// The token's lifetime when issued (to renew a third before its end).
    lifetime: Duration,
    /// When the task itself ends (its maximum duration), if Warden said.
    ends: Option<Instant>,
    /// Someone ended the task: no new one is started.
    revoked: Option<String>,
    /// Bumped for each new task: sessions of an older one are re-initialized.
    generation: u64,
}

/// The MCP session with Warden, and what the client said when it opened it.
#[derive(Default)]
struct Session {
    id: Option<String>,
    protocol_version: Option<String>,
    /// The client's `initialize` params, replayed for a new task's session.
    initialize: Option<Value>,
    /// The task generation the session belongs to.
    generation: u64,
    /// The client declared URL-mode elicitation.
    url_elicitation: bool,
    /// The GET stream's task, while one runs.
    stream: Option<tokio::task::JoinHandle<()>>,
}

struct Bridge {
    http: reqwest::Client,
    api: Client,
    discovery: Discovery,
    key: SigningKey,
    spiffe: String,
    details: String,
    mcp_url: url::Url,
    out: mpsc::Sender<Value>,
    task: Mutex<Option<Task>>,
    session: std::sync::Mutex<Session>,
    /// Our `elicitation/create` requests to the client, by id, waiting for its answer.
    elicitations: std::sync::Mutex<HashMap<String, oneshot::Sender<Value>>>,
    /// Approval waits, by the client's request id (a `notifications/cancelled` ends one).
    waits: std::sync::Mutex<HashMap<String, tokio::task::AbortHandle>>,
    next_id: std::sync::atomic::AtomicU64,
}

/// What a POST came back with, for the message's sender.
enum Posted {
    /// The answer to the request (already filtered out of what was written to stdout).
    Answer(Value),
    /// Nothing to answer (a notification or response, accepted).
    Accepted,
}

/// Why a POST failed.
enum PostError {
    /// 401: the token is not accepted (expired, or the task ended).
    Unauthorized,
    /// 404 inside a session: the session is gone.
    SessionGone,
    /// Anything else, with a message for the client.
    Other(String),
}

fn key_of(id: &Id) -> String {
    id.to_value().to_string()
}

impl Bridge {
    fn lock_session(&self) -> std::sync::MutexGuard<'_, Session> {
        self.session.lock().unwrap_or_else(|p| p.into_inner())
    }

    async fn send_out(&self, v: Value) {
        let _ = self.out.send(v).await;
    }

    // ---- The task and its token ----

    /// Starts a task (as `warden task start`) and makes it the current one.
    async fn start_task(&self) -> anyhow::Result<()> {
        let subject = assertion(&self.key, &self.spiffe, &self.discovery)?;
        let form = [
            ("grant_type", GRANT_TYPE_TOKEN_EXCHANGE),
            ("subject_token", subject.expose().as_str()),
            ("subject_token_type", TOKEN_TYPE_JWT),
            ("requested_token_type", TOKEN_TYPE_TASK),
            ("authorization_details", self.details.as_str()),
        ];
        let v = exchange(&self.api, &form, None)
            .await
            .context("starting the task")?;
        let (token, lifetime, id) = issued(&v)?;
        let max = v["authorization_details"][0]["max_duration_secs"].as_u64();
        let mut task = self.task.lock().await;
        let generation = task.as_ref().map_or(1, |t| t.generation + 1);
        log(format!(
            "task {id} started as {} (token valid {} s{})",
            self.spiffe,
            lifetime.as_secs(),
            max.map(|m| format!(", task at most {m} s")).unwrap_or_default()
        ));
        *task = Some(Task {
            id,
            token,
            expires: Instant::now() + lifetime,
            lifetime,
            ends: max.map(|m| Instant::now() + Duration::from_secs(m)),
            revoked: None,
            generation,
        });
        Ok(())
    }

    /// Renews the current task's token; `Err` with the server's refusal (or a transport error).
    async fn renew(&self) -> anyhow::Result<()> {
        let mut guard = self.task.lock().await;
        let Some(task) = guard.as_mut() else {
            return Err(anyhow!("no task"));
        };
        let actor = assertion(&self.key, &self.spiffe, &self.discovery)?;
        let form = [
            ("grant_type", GRANT_TYPE_TOKEN_EXCHANGE),
            ("subject_token", task.token.expose().as_str()),
            ("subject_token_type", TOKEN_TYPE_TASK),
            ("actor_token", actor.expose().as_str()),
            ("actor_token_type", TOKEN_TYPE_JWT),
            ("requested_token_type", TOKEN_TYPE_TASK),
        ];
        let v = exchange(&self.api, &form, None).await?;
        let (token, lifetime, _) = issued(&v)?;
        task.token = token;
        task.expires = Instant::now() + lifetime;
        log(format!(
            "task {} token renewed (valid {} s)",
            task.id,
            lifetime.as_secs()
        ));
        Ok(())
    }

    /// The token is no longer good (renewal refused, or a 401): a task at its maximum duration is
    /// replaced by a new one; one ended before it is marked revoked. Returns whether there is a
    /// usable task now.
    async fn recover(&self) -> bool {
        match self.renew().await {
            Ok(()) => return true,
            Err(e) => {
                let refused = e.downcast_ref::<ApiError>().is_some();
                if !refused {
                    log(format!("renewing the task token failed: {e:#}"));
                    return false;
                }
                let mut guard = self.task.lock().await;
                let Some(task) = guard.as_mut() else { return false };
                // At (or within a few seconds of) its maximum: a routine end.
                let at_end = task
                    .ends
                    .is_some_and(|end| Instant::now() + Duration::from_secs(5) >= end);
                if !at_end {
                    let why = format!(
                        "task {} was ended or revoked ({e:#}); warden connect does not start another \
                         (restart the MCP server in your client to start a new task)",
                        task.id
                    );
                    log(&why);
                    task.revoked = Some(why);
                    return false;
                }
                log(format!(
                    "task {} reached its maximum duration; starting a new task",
                    task.id
                ));
            }
        }
        match self.start_task().await {
            Ok(()) => true,
            Err(e) => {
                log(format!("starting a new task failed: {e:#}"));
                false
            }
        }
    }

    /// Renews the token a third of its lifetime before it expires; starts a new task when the
    /// task's end comes first.
    async fn renew_loop(self: Arc<Self>) {
        loop {
            let (at, ends_first, revoked) = {
                let guard = self.task.lock().await;
                let Some(t) = guard.as_ref() else { return };
                let margin = (t.lifetime / 3).max(Duration::from_millis(500));
                let at = t.expires.checked_sub(margin).unwrap_or_else(Instant::now);
                let ends_first = t.ends.is_some_and(|end| end <= t.expires);
                (at, ends_first, t.revoked.is_some())
            };
            if revoked {
                return;
            }
            tokio::time::sleep_until(at).await;
            if ends_first {
                // This token is the task's last: the next one belongs to a new task, started when
                // the token expires (or a request finds it refused).
                let expires = self.task.lock().await.as_ref().map(|t| t.expires);
                if let Some(e) = expires {
                    tokio::time::sleep_until(e).await;
                }
                log("the task reached its maximum duration; starting a new task");
                if let Err(e) = self.start_task().await {
                    log(format!("starting a new task failed: {e:#}; retrying in 5 s"));
                    tokio::time::sleep(Duration::from_secs(5)).await;
                }
                continue;
            }
            if !self.recover().await {
                if self
                    .task
                    .lock()
                    .await
                    .as_ref()
                    .is_some_and(|t| t.revoked.is_some())
                {
                    return;
                }
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
        }
    }

    /// The current token and its task's generation, or why there is none.
    async fn token(&self) -> Result<(Secret<String>, u64), String> {
        let guard = self.task.lock().await;
        match guard.as_ref() {
            Some(t) if t.revoked.is_some() => Err(t.revoked.clone().unwrap_or_default()),
            Some(t) => Ok((t.token.clone(), t.generation)),
            None => Err("no task".into()),
        }
    }

    // ---- stdin ----

    /// Reads the client's messages until EOF, each line at most the JSON-RPC limit.
    async fn read_stdin(self: Arc<Self>) -> anyhow::Result<()> {
        let limits = jsonrpc::Limits::default();
        let mut stdin = tokio::io::BufReader::new(tokio::io::stdin());
        let mut line = Vec::new();
        loop {
            line.clear();
            let mut too_long = false;
            // Bounded: read at most the limit (plus the newline), then skip to the line's end.
            let n = (&mut stdin)
                .take(limits.max_bytes as u64 + 1)
                .read_until(b'\n', &mut line)
                .await
                .context("reading stdin")?;
            if n == 0 {
                return Ok(());
            }
            if line.last() != Some(&b'\n') && line.len() > limits.max_bytes {
                too_long = true;
                let mut rest = Vec::new();
                loop {
                    rest.clear();
                    let m = (&mut stdin)
                        .take(64 * 1024)
                        .read_until(b'\n', &mut rest)
                        .await
                        .context("reading stdin")?;
                    if m == 0 || rest.last() == Some(&b'\n') {
                        break;
                    }
                }
            }
            if too_long {
                log(format!(
                    "a message on stdin is longer than {} bytes; refused",
                    limits.max_bytes
                ));
                self.send_out(jsonrpc::error_response(
                    None,
                    jsonrpc::PARSE_ERROR,
                    &format!("message longer than {} bytes", limits.max_bytes),
                    None,
                ))
                .await;
                continue;
            }
            while line.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
                line.pop();
            }
            if line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            let msg = match jsonrpc::parse(&line, &limits) {
                Ok(m) => m,
                Err(e) => {
                    log(format!("a message on stdin is not valid JSON-RPC: {e}"));
                    self.send_out(e.to_response()).await;
                    continue;
                }
            };
            let bridge = self.clone();
            let body = line.clone();
            tokio::spawn(async move { bridge.handle(msg, body).await });
        }
    }

    /// One message from the client.
    async fn handle(self: Arc<Self>, msg: Message, body: Vec<u8>) {
        match &msg {
            Message::Response(_) | Message::Error(_) => {
                // The answer to our own elicitation?
                let waiting = msg.id().and_then(|id| {
                    self.elicitations
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .remove(&key_of(id))
                });
                if let Some(tx) = waiting {
                    let _ = tx.send(msg.to_value());
                    return;
                }
            }
            Message::Notification(n) if n.method == "notifications/cancelled" => {
                if let Some(id) = n.params.as_ref().and_then(|p| p.get("requestId")) {
                    let wait = self
                        .waits
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .remove(&id.to_string());
                    if let Some(w) = wait {
                        w.abort();
                    }
                }
            }
            Message::Request(r) if r.method == "initialize" => {
                let params = r.params.clone().map(Value::Object).unwrap_or(Value::Null);
                let mut s = self.lock_session();
                s.url_elicitation = params["capabilities"]["elicitation"]["url"].is_object();
                s.initialize = Some(params);
            }
            _ => {}
        }
        let request = match &msg {
            Message::Request(r) => Some(r.clone()),
            _ => None,
        };
        let answer = self.forward(&body, request.as_ref().map(|r| &r.id)).await;
        let Some(req) = request else {
            if let Err(e) = answer {
                log(format!("a message was not delivered: {e}"));
            }
            return;
        };
        let answer = match answer {
            Ok(Posted::Answer(v)) => v,
            Ok(Posted::Accepted) => return,
            Err(e) => jsonrpc::error_response(Some(&req.id), jsonrpc::INTERNAL_ERROR, &e, None),
        };
        if req.method == "initialize"
            && let Some(v) = answer["result"]["protocolVersion"].as_str()
        {
            self.lock_session().protocol_version = Some(v.to_owned());
        }
        // -32011, or -32042 (URL elicitation required) when Warden saw the client declare URL
        // elicitation at initialize: either way an approval to surface and wait for.
        let code = answer["error"]["code"].as_i64();
        let waits_for_approval = code == Some(jsonrpc::APPROVAL_REQUIRED)
            || (code == Some(jsonrpc::URL_ELICITATION_REQUIRED)
                && answer["error"]["data"]["approval"]["id"].is_string());
        if req.method == "tools/call" && waits_for_approval {
            let key = key_of(&req.id);
            let bridge = self.clone();
            let handle = tokio::spawn(async move {
                let v = bridge.approval(&req, &body, answer).await;
                bridge
                    .waits
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .remove(&key_of(&req.id));
                bridge.send_out(v).await;
            });
            self.waits
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(key, handle.abort_handle());
            return;
        }
        self.send_out(answer).await;
    }

    /// POSTs one client message, recovering once from an expired token (renewed, or a new task)
    /// and from a session that is gone (re-initialized). Messages other than the answer to `id`
    /// are written to stdout as they arrive.
    async fn forward(self: &Arc<Self>, body: &[u8], id: Option<&Id>) -> Result<Posted, String> {
        let is_initialize = self.is_initialize(body);
        for attempt in 0..2 {
            let (token, generation) = self.token().await?;
            if !is_initialize {
                self.ensure_session(generation).await?;
            }
            match self.post(body, id, &token).await {
                Ok(p) => {
                    if is_initialize {
                        self.lock_session().generation = generation;
                    }
                    if !is_initialize && body_is(body, "notifications/initialized") {
                        self.open_stream();
                    }
                    return Ok(p);
                }
                Err(PostError::Unauthorized) if attempt == 0 => {
                    if !self.recover().await {
                        return Err(self.token().await.err().unwrap_or_else(|| {
                            "Warden refused the task token and it could not be renewed".into()
                        }));
                    }
                }
                Err(PostError::SessionGone) if attempt == 0 && !is_initialize => {
                    log("Warden no longer knows the MCP session; re-initializing it");
                    self.lock_session().id = None;
                    self.lock_session().generation = 0;
                }
                Err(PostError::Unauthorized) => return Err("Warden refused the task token".into()),
                Err(PostError::SessionGone) => return Err("Warden no longer knows the MCP session".into()),
                Err(PostError::Other(m)) => return Err(m),
            }
        }
        Err("the message could not be delivered".into())
    }

    fn is_initialize(&self, body: &[u8]) -> bool {
        body_is(body, "initialize")
    }

    /// Makes sure the session belongs to task `generation`: a session of an older task (or one
    /// Warden forgot) is re-opened by replaying the client's `initialize`.
    async fn ensure_session(self: &Arc<Self>, generation: u64) -> Result<(), String> {
        let params = {
            let s = self.lock_session();
            if s.generation == generation || s.initialize.is_none() {
                return Ok(());
            }
            s.initialize.clone()
        };
        let Some(params) = params else { return Ok(()) };
        let (token, _) = self.token().await?;
        self.lock_session().id = None;
        let id = Id::String(format!(
            "warden-connect-{}",
            self.next_id.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        ));
        let init = json!({"jsonrpc": "2.0", "id": id.to_value(), "method": "initialize", "params": params});
        match self.post(init.to_string().as_bytes(), Some(&id), &token).await {
            Ok(Posted::Answer(v)) if v["result"].is_object() => {}
            Ok(Posted::Answer(v)) => {
                return Err(format!("re-initializing the session was refused: {}", v["error"]));
            }
            Ok(Posted::Accepted) => return Err("re-initializing the session got no answer".into()),
            Err(_) => return Err("re-initializing the session failed".into()),
        }
        self.lock_session().generation = generation;
        let done = json!({"jsonrpc": "2.0", "method": "notifications/initialized"});
        if self
            .post(done.to_string().as_bytes(), None, &token)
            .await
            .is_err()
        {
            return Err("re-initializing the session failed".into());
        }
        log(format!(
            "MCP session re-initialized for the task (generation {generation})"
        ));
        self.open_stream();
        Ok(())
    }

    /// One POST to `/mcp/<upstream>`.
    async fn post(&self, body: &[u8], id: Option<&Id>, token: &Secret<String>) -> Result<Posted, PostError> {
        let (session, version) = {
            let s = self.lock_session();
            (s.id.clone(), s.protocol_version.clone())
        };
        let mut req = self
            .http
            .post(self.mcp_url.clone())
            .header(ACCEPT, "application/json, text/event-stream")
            .header(CONTENT_TYPE, "application/json")
            .body(body.to_vec());
        req = req.header(AUTHORIZATION, bearer(token).map_err(PostError::Other)?);
        if let Some(s) = &session {
            req = req.header("mcp-session-id", s);
        }
        if let Some(v) = &version {
            req = req.header("mcp-protocol-version", v);
        }
        let resp = match tokio::time::timeout(ANSWER_START, req.send()).await {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => return Err(PostError::Other(format!("cannot reach Warden: {e}"))),
            Err(_) => return Err(PostError::Other("Warden did not answer in time".into())),
        };
        let status = resp.status();
        if let Some(sid) = resp.headers().get("mcp-session-id").and_then(|v| v.to_str().ok()) {
            self.lock_session().id = Some(sid.to_owned());
        }
        if status == StatusCode::UNAUTHORIZED {
            return Err(PostError::Unauthorized);
        }
        if status == StatusCode::NOT_FOUND && session.is_some() {
            return Err(PostError::SessionGone);
        }
        let is_sse = resp
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|c| c.starts_with("text/event-stream"));
        if status.is_success() && is_sse {
            return self.relay_sse(resp, id).await;
        }
        let bytes = match tokio::time::timeout(STREAM_IDLE, resp.bytes()).await {
            Ok(Ok(b)) => b,
            _ => {
                return Err(PostError::Other(format!(
                    "reading Warden's answer (HTTP {status}) failed"
                )));
            }
        };
        if bytes.is_empty() {
            if status.is_success() {
                return Ok(Posted::Accepted);
            }
            return Err(PostError::Other(format!("Warden answered HTTP {status}")));
        }
        match serde_json::from_slice::<Value>(&bytes) {
            // A JSON-RPC answer (an error one too, as Warden refuses notifications with a status).
            Ok(v) if v.get("jsonrpc").is_some() => {
                if id.is_some_and(|i| v.get("id") == Some(&i.to_value())) {
                    Ok(Posted::Answer(v))
                } else if status.is_success() {
                    self.send_out(v).await;
                    Ok(Posted::Accepted)
                } else {
                    Err(PostError::Other(format!(
                        "Warden answered HTTP {status}: {}",
                        printable(v["error"]["message"].as_str().unwrap_or_default())
                    )))
                }
            }
            _ => {
                let text: String = String::from_utf8_lossy(&bytes).chars().take(300).collect();
                Err(PostError::Other(format!(
                    "Warden answered HTTP {status}: {}",
                    printable(&text)
                )))
            }
        }
    }

    /// Relays an answer's event stream: every message to stdout, except the answer to `id`,
    /// which is returned.
    async fn relay_sse(&self, resp: reqwest::Response, id: Option<&Id>) -> Result<Posted, PostError> {
        let mut parser = SseParser::new(SseLimits::default());
        let mut stream = resp.bytes_stream();
        let want = id.map(Id::to_value);
        loop {
            let chunk = match tokio::time::timeout(STREAM_IDLE, stream.next()).await {
                Ok(Some(Ok(c))) => c,
                Ok(Some(Err(e))) => {
                    return Err(PostError::Other(format!("Warden's event stream failed: {e}")));
                }
                Ok(None) => {
                    return match want {
                        Some(_) => Err(PostError::Other(
                            "Warden's event stream ended without the answer".into(),
                        )),
                        None => Ok(Posted::Accepted),
                    };
                }
                Err(_) => return Err(PostError::Other("Warden's event stream went silent".into())),
            };
            let events = parser
                .push(&chunk)
                .map_err(|e| PostError::Other(format!("Warden's event stream: {e}")))?;
            for ev in events {
                if ev.data.is_empty() {
                    continue;
                }
                let Ok(v) = serde_json::from_str::<Value>(&ev.data) else {
                    log("an event that is not JSON was dropped");
                    continue;
                };
                let is_answer = want.is_some()
                    && v.get("id") == want.as_ref()
                    && (v.get("result").is_some() || v.get("error").is_some());
                if is_answer {
                    return Ok(Posted::Answer(v));
                }
                self.send_out(v).await;
            }
        }
    }

    /// Opens the GET stream for server-initiated messages (replacing one already open).
    fn open_stream(self: &Arc<Self>) {
        let bridge = self.clone();
        let handle = tokio::spawn(async move { bridge.get_stream().await });
        if let Some(old) = self.lock_session().stream.replace(handle) {
            old.abort();
        }
    }

    async fn get_stream(self: Arc<Self>) {
        let mut last_event: Option<String> = None;
        let mut failures = 0u32;
        loop {
            let Ok((token, _)) = self.token().await else {
                return;
            };
            let (session, version) = {
                let s = self.lock_session();
                (s.id.clone(), s.protocol_version.clone())
            };
            let Some(session) = session else { return };
            let Ok(auth) = bearer(&token) else { return };
            let mut req = self
                .http
                .get(self.mcp_url.clone())
                .header(ACCEPT, "text/event-stream")
                .header(AUTHORIZATION, auth)
                .header("mcp-session-id", session);
            if let Some(v) = version {
                req = req.header("mcp-protocol-version", v);
            }
            if let Some(id) = &last_event {
                req = req.header("last-event-id", id);
            }
            match req.send().await {
                Ok(resp) if resp.status() == StatusCode::METHOD_NOT_ALLOWED => return,
                Ok(resp) if resp.status() == StatusCode::NOT_FOUND => return,
                Ok(resp) if resp.status().is_success() => {
                    failures = 0;
                    let mut parser = SseParser::new(SseLimits::default());
                    let mut stream = resp.bytes_stream();
                    while let Some(Ok(chunk)) = stream.next().await {
                        let Ok(events) = parser.push(&chunk) else { break };
                        for ev in events {
                            if let Some(id) = ev.id.filter(|i| !i.is_empty()) {
                                last_event = Some(id);
                            }
                            if let Ok(v) = serde_json::from_str::<Value>(&ev.data) {
                                self.send_out(v).await;
                            }
                        }
                    }
                }
                Ok(resp) => {
                    failures += 1;
                    if resp.status() != StatusCode::UNAUTHORIZED && failures > 3 {
                        log(format!(
                            "the event stream for server messages is refused (HTTP {})",
                            resp.status()
                        ));
                        return;
                    }
                }
                Err(_) => failures += 1,
            }
            tokio::time::sleep(Duration::from_secs(u64::from(failures.min(5)))).await;
        }
    }

    // ---- Approvals ----

    /// A call needing approval: shows the approval to the user, waits for it, and answers the call:
    /// the call's answer once granted, else a denial naming the approval.
    async fn approval(self: &Arc<Self>, req: &jsonrpc::Request, body: &[u8], refusal: Value) -> Value {
        let approval = &refusal["error"]["data"]["approval"];
        let (Some(id), Some(url)) = (approval["id"].as_str(), approval["url"].as_str()) else {
            return refusal;
        };
        let (id, url) = (id.to_owned(), url.to_owned());
        let (id, url) = (id.as_str(), url.as_str());
        let tool = req
            .params
            .as_ref()
            .and_then(|p| p.get("name"))
            .and_then(Value::as_str)
            .unwrap_or("?");
        let message = format!(
            "Warden needs a human to approve this call of `{}` before it runs: approval request {id} ({url}). \
             An approver approves it with `warden approvals approve {id}`; the call is retried once it is approved.",
            printable(tool)
        );
        log(&message);
        let declined = if self.lock_session().url_elicitation {
            Some(self.elicit(id, url, &message).await)
        } else {
            None
        };
        let wait = self.wait_approval(id);
        let state = match declined {
            Some(answer) => {
                tokio::pin!(wait);
                tokio::select! {
                    s = &mut wait => s,
                    a = answer => match a.ok().and_then(|v| v["result"]["action"].as_str().map(str::to_owned)) {
                        Some(action) if action != "accept" => {
                            log(format!("the user answered `{action}` to approval {id}; not waiting"));
                            return refusal;
                        }
                        _ => wait.await,
                    },
                }
            }
            None => wait.await,
        };
        match state {
            Ok(s) if s == "approved" => {
                log(format!("approval {id} granted; sending the call again"));
                match self.forward(body, Some(&req.id)).await {
                    Ok(Posted::Answer(v)) => v,
                    Ok(Posted::Accepted) => {
                        jsonrpc::error_response(Some(&req.id), jsonrpc::INTERNAL_ERROR, "no answer", None)
                    }
                    Err(e) => jsonrpc::error_response(Some(&req.id), jsonrpc::INTERNAL_ERROR, &e, None),
                }
            }
            Ok(s) => {
                log(format!("approval {id} ended {s}"));
                jsonrpc::error_response(
                    Some(&req.id),
                    jsonrpc::DENIED,
                    &format!("approval request {id} was {s}; the call was not made"),
                    Some(json!({"approval": {"id": id, "url": url, "state": s}})),
                )
            }
            Err(e) => {
                log(format!("waiting on approval {id} failed: {e}"));
                refusal
            }
        }
    }

    /// Sends the client an `elicitation/create` in URL mode; the receiver gets the client's answer.
    async fn elicit(&self, approval: &str, url: &str, message: &str) -> oneshot::Receiver<Value> {
        let n = self.next_id.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let id = Id::String(format!("warden-connect-elicit-{n}"));
        let (tx, rx) = oneshot::channel();
        self.elicitations
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(key_of(&id), tx);
        self.send_out(json!({
            "jsonrpc": "2.0",
            "id": id.to_value(),
            "method": "elicitation/create",
            "params": {"mode": "url", "message": message, "url": url, "elicitationId": approval},
        }))
        .await;
        rx
    }

    /// Long-polls the approval until it is decided: its final state.
    async fn wait_approval(&self, id: &str) -> Result<String, String> {
        loop {
            let (token, _) = self.token().await?;
            let url = self
                .api
                .url(&["v1", "approvals", id], &[("wait", APPROVAL_WAIT_SECS)])
                .map_err(|e| e.to_string())?;
            let (mut req, _) = self
                .api
                .request(Method::GET, &["v1", "approvals", id])
                .map_err(|e| e.to_string())?;
            req = req
                .query(&[("wait", APPROVAL_WAIT_SECS)])
                .header(AUTHORIZATION, bearer(&token)?);
            match self.api.execute(&Method::GET, &url, req, None).await {
                Ok(v) => match v["state"].as_str() {
                    Some("pending") | None => continue,
                    Some(s) => return Ok(s.to_owned()),
                },
                Err(e)
                    if e.downcast_ref::<ApiError>()
                        .is_some_and(|a| a.status == StatusCode::UNAUTHORIZED) =>
                {
                    if !self.recover().await {
                        return Err(format!("{e:#}"));
                    }
                }
                Err(e) => {
                    log(format!("waiting on approval {id}: {e:#}; retrying"));
                    tokio::time::sleep(Duration::from_secs(2)).await;
                }
            }
        }
    }

    // ---- Shutdown ----

    /// stdin closed: ends the session and the task.
    async fn shutdown(&self) {
        let handles: Vec<_> = self
            .waits
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .drain()
            .map(|(_, h)| h)
            .collect();
        for h in handles {
            h.abort();
        }
        let (session, stream) = {
            let mut s = self.lock_session();
            (s.id.take(), s.stream.take())
        };
        if let Some(s) = stream {
            s.abort();
        }
        let Ok((token, _)) = self.token().await else {
            return;
        };
        let Ok(auth) = bearer(&token) else { return };
        if let Some(session) = session {
            let _ = tokio::time::timeout(
                Duration::from_secs(5),
                self.http
                    .delete(self.mcp_url.clone())
                    .header(AUTHORIZATION, auth.clone())
                    .header("mcp-session-id", session)
                    .send(),
            )
            .await;
        }
        let id = self
            .task
            .lock()
            .await
            .as_ref()
            .map(|t| t.id.clone())
            .unwrap_or_default();
        let ended = async {
            let (req, url) = self.api.request(Method::POST, &["v1", "task", "end"])?;
            let req = req
                .header(AUTHORIZATION, auth)
                .json(&json!({"reason": "warden connect: the MCP client closed the connection"}));
            self.api.execute(&Method::POST, &url, req, None).await
        };
        match tokio::time::timeout(Duration::from_secs(10), ended).await {
            Ok(Ok(_)) => log(format!("task {id} ended")),
            Ok(Err(e)) => log(format!("ending task {id} failed: {e:#}")),
            Err(_) => log(format!("ending task {id} timed out")),
        }
    }
}

/// `Bearer <token>`, marked sensitive.
fn bearer(token: &Secret<String>) -> Result<HeaderValue, String> {
    let mut v = HeaderValue::from_str(&format!("Bearer {}", token.expose()))
        .map_err(|_| "the task token cannot be sent in an HTTP header".to_owned())?;
    v.set_sensitive(true);
    Ok(v)
}

/// Whether the JSON-RPC message `body` has `method` (a cheap check on bytes already parsed).
fn body_is(body: &[u8], method: &str) -> bool {
    serde_json::from_slice::<Value>(body)
        .ok()
        .is_some_and(|v| v.get("method").and_then(Value::as_str) == Some(method))
}

/// The token, its lifetime and the task id of a token exchange's answer.
fn issued(v: &Value) -> anyhow::Result<(Secret<String>, Duration, String)> {
    let token = v["access_token"]
        .as_str()
        .ok_or_else(|| anyhow!("the token exchange answer has no access_token"))?;
    let lifetime = v["expires_in"]
        .as_u64()
        .ok_or_else(|| anyhow!("the token exchange answer has no expires_in"))?;
    let id = v["task_id"].as_str().unwrap_or_default().to_owned();
    Ok((
        Secret::new(token.to_owned()),
        Duration::from_secs(lifetime.max(1)),
        id,
    ))
}
