//! The MCP gateway: `/mcp/{upstream}`, where agents' MCP clients meet Warden.
//!
//! An agent points its MCP client (streamable HTTP, protocol 2025-06-18 or 2025-11-25) at
//! `<warden>/mcp/<upstream>` with its task token. For every message Warden, in this order:
//!
//! 1. **authenticates** the task token (and its DPoP proof when bound) — 401 with `WWW-Authenticate`
//!    otherwise, recorded by the audit layer;
//! 2. **parses** the JSON-RPC message within limits (size, depth) — 400 with a JSON-RPC error naming
//!    what is wrong, recorded;
//! 3. **decides** requests with the policy engine: `tools/call` on the tool's class (`read`, `write`,
//!    `destructive`, `admin`) and its arguments, `resources/read` and `prompts/get` as reads of the
//!    upstream with the URI or prompt as arguments, `initialize` and the list methods as reads of the
//!    upstream; arguments are scanned for secrets first (`context.risk.secret_in_args`);
//! 4. **records** the decision in the ledger and waits until it is durable (record before act);
//! 5. only then **forwards** the message — re-serialized from what was decided, so the upstream parses
//!    exactly what policy saw — with the upstream's own credential injected from the secret store
//!    (the agent never sees it), and
//! 6. **post-processes** the answer: `tools/list` is catalogued (digest pinning; a changed definition
//!    quarantines the tool) and filtered to the tools this task may call; tool results are scanned
//!    and secrets redacted; the upstream's credentials are cut out of anything it sends back; the
//!    result's status and latency are recorded.
//!
//! Notifications, responses to server-to-client requests and `ping` pass through authenticated but
//! undecided. Methods Warden does not know are refused (fail closed). Sessions: the upstream's
//! `Mcp-Session-Id` is sealed (AEAD, [`credentials::GatewayKeys`]) with the task and upstream into
//! Warden's own session id, so a session cannot move to another task or upstream, and any node that
//! shares the deployment's key serves it (no session table). A long-lived stream (SSE answer or
//! `GET`) is cut as soon as its task stops being live.

pub mod catalog;
pub mod credentials;
pub mod stdio;
pub mod upstream;

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{FromRequestParts, Path, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::Utc;
use serde_json::{Value, json};
use warden_core::{Decision, Outcome, ToolState, Upstream, UpstreamKind, UpstreamName};
use warden_gateway::jsonrpc::{self, Id, Message, Method};
use warden_gateway::scan::Scanner;
use warden_ledger::{EntryKind, NewEntry};
use warden_policy::{Action, PolicyContext, PolicyRequest, ResourceRef, Risk};

use crate::AppState;
use crate::tasks::TaskCaller;

pub use credentials::GatewayKeys;

/// How the gateway behaves (`[gateway]`).
#[derive(Clone, Debug)]
pub struct GatewaySettings {
    /// Bounds on every JSON-RPC message, both directions.
    pub limits: jsonrpc::Limits,
    /// How long an upstream may take to answer (to start answering, for streams).
    pub upstream_timeout: Duration,
    /// The state of a tool seen for the first time: `active` (trust on first use) or `quarantined`
    /// (an admin approves every new tool).
    pub new_tools: ToolState,
    /// What to do with secrets found in tool results.
    pub results: ResultPolicy,
}

impl Default for GatewaySettings {
    fn default() -> Self {
        Self {
            limits: jsonrpc::Limits::default(),
            upstream_timeout: Duration::from_secs(30),
            new_tools: ToolState::Active,
            results: ResultPolicy::Redact,
        }
    }
}

/// Secrets in what an upstream answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ResultPolicy {
    /// Replace each found secret with `[REDACTED:<rule>]` and record where (the default).
    Redact,
    /// Replace the whole result with an error.
    Deny,
    /// Pass results unchanged (findings are still recorded).
    Pass,
}

/// The gateway's shared parts.
#[derive(Debug)]
pub struct Gateway {
    pub settings: GatewaySettings,
    pub keys: Arc<GatewayKeys>,
    pub scanner: Scanner,
    pub upstreams: upstream::Client,
    pub credentials: credentials::Credentials,
    /// The stdio servers this node spawns (`[[gateway.stdio]]`).
    pub stdio: stdio::StdioServers,
    /// Registered MCP upstreams by name, briefly cached: a message should not cost a database read.
    /// Dropped on registry events; [`UPSTREAM_CACHE_TTL`] bounds staleness if one is lost.
    upstream_cache: std::sync::RwLock<std::collections::HashMap<String, (Instant, Arc<Upstream>)>>,
    /// `action_result` entries waiting to be committed with the next decision (or by the flusher
    /// within [`RESULT_FLUSH`]): a result is recorded after its action, so it need not cost a commit
    /// of its own.
    pending_results: std::sync::Mutex<Vec<NewEntry>>,
    /// The policy view of each task seen (parsing the recorded intent per message showed in the
    /// profile), valid for exactly the task record it was made from.
    task_contexts: std::sync::RwLock<TaskContexts>,
}

type TaskContexts =
    std::collections::HashMap<uuid::Uuid, (Arc<warden_core::Task>, warden_policy::TaskContext)>;

/// How long a cached upstream record is used without re-reading it.
const UPSTREAM_CACHE_TTL: Duration = Duration::from_secs(5);
/// Longest a result entry waits for a decision to ride with.
pub const RESULT_FLUSH: Duration = Duration::from_millis(200);

impl Gateway {
    fn cached_upstream(&self, name: &str) -> Option<Arc<Upstream>> {
        let c = self.upstream_cache.read().ok()?;
        let (at, u) = c.get(name)?;
        (at.elapsed() < UPSTREAM_CACHE_TTL).then(|| u.clone())
    }

    /// Forgets cached upstream records (`None`: all of them).
    pub fn forget_upstream(&self, name: Option<&str>) {
        if let Ok(mut c) = self.upstream_cache.write() {
            match name {
                Some(n) => {
                    c.remove(n);
                }
                None => c.clear(),
            }
        }
    }

    /// [`crate::api::authorize::task_context`], remembered per task record: a task's intent and
    /// delegation chain never change, and a re-read record (another `Arc`) is parsed again.
    fn task_context(&self, task: &Arc<warden_core::Task>) -> Result<warden_policy::TaskContext, String> {
        if let Ok(m) = self.task_contexts.read()
            && let Some((seen, ctx)) = m.get(&task.id)
            && Arc::ptr_eq(seen, task)
        {
            return Ok(ctx.clone());
        }
        let ctx = crate::api::authorize::task_context(task)?;
        if let Ok(mut m) = self.task_contexts.write() {
            if m.len() >= 10_000 {
                m.clear();
            }
            m.insert(task.id, (task.clone(), ctx.clone()));
        }
        Ok(ctx)
    }

    fn queue_result(&self, entry: NewEntry) {
        if let Ok(mut p) = self.pending_results.lock() {
            p.push(entry);
        }
    }

    /// The result entries waiting to be committed.
    pub fn take_results(&self) -> Vec<NewEntry> {
        self.pending_results
            .lock()
            .map(|mut p| std::mem::take(&mut *p))
            .unwrap_or_default()
    }

    /// Commits waiting result entries now (the flusher, and shutdown).
    pub async fn flush_results(&self, ledger: &crate::ledger::Ledger) {
        let entries = self.take_results();
        if !entries.is_empty()
            && let Err(e) = ledger.record_all(entries).await
        {
            tracing::error!(error = %e, "upstream results are not recorded in the audit ledger");
        }
    }
}

impl Gateway {
    pub fn new(
        settings: GatewaySettings,
        keys: GatewayKeys,
        scanner: Scanner,
        stdio: &[stdio::StdioConfig],
    ) -> anyhow::Result<Self> {
        let keys = Arc::new(keys);
        Ok(Self {
            upstream_cache: Default::default(),
            pending_results: Default::default(),
            task_contexts: Default::default(),
            stdio: stdio::StdioServers::new(stdio),
            upstreams: upstream::Client::new(settings.upstream_timeout)?,
            credentials: credentials::Credentials::new(keys.clone()),
            settings,
            keys,
            scanner,
        })
    }

    /// A gateway with a fresh random key and default settings (tests, and states built without
    /// `run`).
    pub fn ephemeral() -> Self {
        #[expect(
            clippy::expect_used,
            reason = "the built-in rules and a default client always build"
        )]
        Self::new(
            GatewaySettings::default(),
            GatewayKeys::generate(),
            Scanner::new(&[]).expect("built-in scanner rules compile"),
            &[],
        )
        .expect("default HTTP client")
    }
}

/// Drops cached upstream records and credentials when they change on any node (store events; the
/// caches' short lifetimes bound staleness when an event is lost), and commits waiting result
/// entries every [`RESULT_FLUSH`].
pub fn spawn_event_listener(
    store: Arc<dyn warden_store::Store>,
    gateway: Arc<Gateway>,
    ledger: Arc<crate::ledger::Ledger>,
) {
    let mut events = store.events();
    let flusher = gateway.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(RESULT_FLUSH);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            flusher.flush_results(&ledger).await;
        }
    });
    tokio::spawn(async move {
        loop {
            match events.recv().await {
                Ok(warden_store::StoreEvent::RegistryChanged {
                    secrets, upstreams, ..
                }) => {
                    for key in &secrets {
                        let upstream = key.split_once('/').map_or(key.as_str(), |(u, _)| u);
                        gateway.credentials.invalidate(upstream);
                    }
                    for u in &upstreams {
                        gateway.forget_upstream(Some(u));
                    }
                }
                Ok(warden_store::StoreEvent::Resync)
                | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                    gateway.credentials.invalidate_all();
                    gateway.forget_upstream(None);
                }
                Ok(_) => {}
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
            }
        }
    });
}

/// The MCP protocol versions the gateway speaks.
pub const PROTOCOL_VERSIONS: [&str; 2] = jsonrpc::SUPPORTED_PROTOCOL_VERSIONS;

const SESSION_HEADER: &str = "mcp-session-id";

/// A JSON-RPC answer with an HTTP status. MCP clients read JSON-RPC errors from a 200 response.
fn rpc(status: StatusCode, body: Value) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

/// A refusal before any decision (malformed message, unknown upstream): JSON-RPC error, recorded by
/// the audit layer like every other refused request.
fn refused(status: StatusCode, id: Option<&Id>, code: i64, message: String) -> Response {
    let mut resp = rpc(status, jsonrpc::error_response(id, code, &message, None));
    resp.extensions_mut().insert(crate::ledger::Refusal {
        status: status.as_u16(),
        code: "invalid_request",
        message,
    });
    resp
}

/// The upstream of `/mcp/{name}`: registered, and an MCP server.
async fn resolve_upstream(state: &AppState, name: &str) -> Result<Arc<Upstream>, Response> {
    let not_found = |m: String| refused(StatusCode::NOT_FOUND, None, jsonrpc::INVALID_REQUEST, m);
    let name = UpstreamName::parse(name)
        .map_err(|e| not_found(format!("`{}` is not an upstream name: {e}", name.escape_debug())))?;
    if let Some(u) = state.gateway.cached_upstream(name.as_str()) {
        return Ok(u);
    }
    match state.store.get_upstream(&name).await {
        Ok(Some(u)) if u.kind == UpstreamKind::Mcp => {
            let u = Arc::new(u);
            if let Ok(mut c) = state.gateway.upstream_cache.write() {
                if c.len() >= 10_000 {
                    c.clear();
                }
                c.insert(name.to_string(), (Instant::now(), u.clone()));
            }
            Ok(u)
        }
        Ok(Some(u)) => Err(not_found(format!(
            "upstream `{}` is of kind `{}`, not `mcp`",
            u.name, u.kind
        ))),
        Ok(None) => Err(not_found(format!("upstream `{name}` is not registered"))),
        Err(e) => {
            tracing::warn!(error = %e, "the store cannot be read; gateway request refused");
            let message = "the store is unavailable".to_owned();
            let mut resp = rpc(
                StatusCode::SERVICE_UNAVAILABLE,
                jsonrpc::error_response(None, jsonrpc::UPSTREAM_UNAVAILABLE, &message, None),
            );
            // Recorded like every refusal (when the ledger can still write).
            resp.extensions_mut().insert(crate::ledger::Refusal {
                status: 503,
                code: "store_unavailable",
                message,
            });
            Err(resp)
        }
    }
}

/// What one request becomes: the policy question, and what to do with the answer.
struct Plan {
    action: Action,
    resource: ResourceRef,
    /// Arguments as policy sees them.
    args: Option<Value>,
    after: After,
    /// A tool call's tool name.
    tool: Option<String>,
}

/// Post-processing of the upstream's answer to a request.
#[derive(Clone, Debug)]
enum After {
    Nothing,
    /// Catalogue and filter the tools.
    ToolsList,
    /// Scan the result for secrets; record status and latency.
    Result,
}

/// `POST /mcp/{upstream}`: one JSON-RPC message from the agent.
pub async fn post(State(state): State<AppState>, Path(name): Path<String>, request: Request) -> Response {
    let started = Instant::now();
    let (mut parts, body) = request.into_parts();
    let caller = match TaskCaller::from_request_parts(&mut parts, &state).await {
        Ok(c) => c,
        Err(e) => return e.into_response(),
    };
    let upstream = match resolve_upstream(&state, &name).await {
        Ok(u) => u,
        Err(resp) => return resp,
    };
    let gw = state.gateway.clone();
    let limits = gw.settings.limits;
    let bytes = match axum::body::to_bytes(body, limits.max_bytes).await {
        Ok(b) => b,
        Err(_) => {
            return refused(
                StatusCode::PAYLOAD_TOO_LARGE,
                None,
                jsonrpc::INVALID_REQUEST,
                format!("the message is larger than {} bytes", limits.max_bytes),
            );
        }
    };
    let message = match jsonrpc::parse(&bytes, &limits) {
        Ok(m) => m,
        Err(e) => {
            return refused(StatusCode::BAD_REQUEST, e.id(), e.code(), e.to_string());
        }
    };
    let session = match session_of(&gw, &parts.headers, &caller, &upstream) {
        Ok(s) => s,
        Err(resp) => return resp,
    };
    let route = Route {
        headers: upstream::forwarded_headers(&parts.headers, session.as_deref()),
        session,
    };
    match message {
        Message::Request(req) => {
            handle_request(
                state,
                caller,
                upstream,
                req,
                route,
                started,
                request_id(&parts.headers),
            )
            .await
        }
        // Notifications, and answers to the server's own requests (sampling, elicitation, roots):
        // authenticated and bound to the session, passed through undecided.
        other => forward(state, caller, upstream, route, other, Clearance::Undecided).await,
    }
}

/// Where a message goes: the headers for an HTTP upstream, and the upstream's session (an HTTP
/// upstream's own session id, or a stdio session's key).
#[derive(Debug)]
struct Route {
    headers: HeaderMap,
    session: Option<String>,
}

fn is_stdio(upstream: &Upstream) -> bool {
    upstream.url.starts_with("stdio://")
}

/// Why a message may go on to the upstream. A request that acts reaches an upstream only with the
/// [`warden_core::Allowed`] an allowing decision yields; what acts on nothing (notifications,
/// answers to the server's own requests, `ping`) passes undecided — and has no [`Post`], so
/// nothing about it is post-processed as an action.
enum Clearance {
    Allowed(warden_core::Allowed, Post),
    Undecided,
}

/// Sends a message on and relays the answer.
async fn forward(
    state: AppState,
    caller: TaskCaller,
    upstream: Arc<Upstream>,
    route: Route,
    message: Message,
    clearance: Clearance,
) -> Response {
    let post = match clearance {
        Clearance::Allowed(allowed, post) => {
            tracing::debug!(upstream = %upstream.name, method = %post.method, reasons = ?allowed.decision().reasons, "forwarding an allowed request");
            Some(post)
        }
        Clearance::Undecided => None,
    };
    if is_stdio(&upstream) {
        return forward_stdio(state, caller, upstream, route.session, message, post).await;
    }
    let body = message.to_value().to_string().into_bytes();
    match state
        .gateway
        .upstreams
        .post(&state, &upstream, route.headers, body)
        .await
    {
        Ok((resp, injected)) => relay(state, caller, upstream, resp, injected, post).await,
        Err(e) => {
            if let Some(p) = &post {
                record_result(
                    (&state, &caller, &upstream),
                    &p.method,
                    p.tool.as_deref(),
                    "upstream_unavailable",
                    p.sent.elapsed(),
                    &[],
                );
            }
            upstream_failed(post.as_ref().map(|p| &p.id), &e)
        }
    }
}

/// [`forward`] to a stdio server: `initialize` without a session spawns one.
async fn forward_stdio(
    state: AppState,
    caller: TaskCaller,
    upstream: Arc<Upstream>,
    session: Option<String>,
    message: Message,
    post: Option<Post>,
) -> Response {
    let gw = state.gateway.clone();
    let name = upstream.name.as_str();
    let task = caller.task.id;
    let fail =
        |e: &upstream::UpstreamError, post: &Option<Post>| upstream_failed(post.as_ref().map(|p| &p.id), e);
    let (key, new) = match session {
        Some(k) => (k, false),
        None if message.method() == Some("initialize") => {
            let env = match stdio::env_secrets(&state, &upstream.name).await {
                Ok(env) => env,
                Err(e) => return fail(&e, &post),
            };
            match gw.stdio.spawn(name, task, &env, gw.settings.limits.max_bytes) {
                Ok(k) => (k, true),
                Err(e) => return fail(&e, &post),
            }
        }
        None => {
            return refused(
                StatusCode::BAD_REQUEST,
                message.id(),
                jsonrpc::INVALID_REQUEST,
                "a stdio upstream needs the Mcp-Session-Id of an initialized session".to_owned(),
            );
        }
    };
    let reply = gw
        .stdio
        .send(&key, task, name, &message, gw.settings.upstream_timeout)
        .await;
    let mut out = match reply {
        Ok(stdio::Reply::Accepted) => StatusCode::ACCEPTED.into_response(),
        Ok(stdio::Reply::Answer(m)) => {
            let body = after(&state, &caller, &upstream, m, post.as_ref()).await;
            rpc(StatusCode::OK, body)
        }
        Err(e) => {
            if new {
                gw.stdio.end(&key);
            }
            if let Some(p) = &post {
                record_result(
                    (&state, &caller, &upstream),
                    &p.method,
                    p.tool.as_deref(),
                    "upstream_unavailable",
                    p.sent.elapsed(),
                    &[],
                );
            }
            return fail(&e, &post);
        }
    };
    if new && let Ok(v) = HeaderValue::from_str(&gw.keys.seal_session(&key, task, name)) {
        out.headers_mut().insert(SESSION_HEADER, v);
    }
    out
}

fn request_id(headers: &HeaderMap) -> Option<String> {
    headers
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

/// The upstream's session id behind Warden's, checked to belong to this task and upstream.
#[expect(
    clippy::result_large_err,
    reason = "the error is the response itself, built once on the refusal path"
)]
fn session_of(
    gw: &Gateway,
    headers: &HeaderMap,
    caller: &TaskCaller,
    upstream: &Upstream,
) -> Result<Option<String>, Response> {
    let Some(raw) = headers.get(SESSION_HEADER) else {
        return Ok(None);
    };
    let raw = raw.to_str().unwrap_or("");
    let opened = gw
        .keys
        .open_session(raw, caller.task.id, upstream.name.as_str())
        // A stdio session lives on the node that spawned its process.
        .filter(|s| !is_stdio(upstream) || gw.stdio.knows(s, caller.task.id, upstream.name.as_str()));
    match opened {
        Some(s) => Ok(Some(s)),
        // MCP: an unknown session is a 404, after which the client starts a new one.
        None => Err(refused(
            StatusCode::NOT_FOUND,
            None,
            jsonrpc::INVALID_REQUEST,
            "unknown Mcp-Session-Id for this task and upstream; initialize a new session".to_owned(),
        )),
    }
}

fn deny(reason: String, state: &AppState) -> Decision {
    Decision::deny(reason, crate::api::authorize::policy_version(state))
}

/// What a request becomes before policy is asked.
enum Planned {
    /// A policy question.
    Decide(Plan),
    /// `ping`: acts on nothing; answered by the upstream undecided.
    PassThrough,
    /// Refused outright, with the JSON-RPC error code: malformed parameters, an unknown or
    /// quarantined tool, a method Warden does not govern.
    Refuse(Decision, i64),
}

/// Turns a request into its policy question, or the decision that refuses it outright.
fn plan(state: &AppState, upstream: &Upstream, req: &jsonrpc::Request) -> Planned {
    let read_upstream = |after| Plan {
        action: Action::Read,
        resource: ResourceRef::Upstream(upstream.name.clone()),
        args: None,
        after,
        tool: None,
    };
    let bad = |e: jsonrpc::ParamsError| Planned::Refuse(deny(format!("bad-request: {e}"), state), e.code());
    match req.kind() {
        Method::Initialize | Method::ResourcesList | Method::ResourcesTemplatesList | Method::PromptsList => {
            Planned::Decide(read_upstream(After::Nothing))
        }
        Method::ToolsList => Planned::Decide(read_upstream(After::ToolsList)),
        Method::ToolsCall => {
            let call = match req.tool_call() {
                Ok(c) => c,
                Err(e) => return bad(e),
            };
            let Some(tool) = state.policies.tool(upstream.name.as_str(), call.name) else {
                return Planned::Refuse(
                    deny(
                        format!(
                            "unknown-tool: upstream `{1}` does not list a tool `{0}`",
                            call.name.escape_debug(),
                            upstream.name
                        ),
                        state,
                    ),
                    jsonrpc::DENIED,
                );
            };
            if tool.state == ToolState::Quarantined {
                return Planned::Refuse(
                    deny(
                        format!(
                            "tool-quarantined: the definition of `{}` changed; an admin must approve digest {} (`warden tool approve`)",
                            tool.name,
                            tool.pending_digest.as_deref().unwrap_or("-")
                        ),
                        state,
                    ),
                    jsonrpc::TOOL_QUARANTINED,
                );
            }
            Planned::Decide(Plan {
                action: class_action(tool.effective_class()),
                resource: ResourceRef::tool(&upstream.name, call.name),
                args: Some(Value::Object(call.arguments.cloned().unwrap_or_default())),
                after: After::Result,
                tool: Some(call.name.to_owned()),
            })
        }
        Method::ResourcesRead => {
            let read = match req.resource_read() {
                Ok(r) => r,
                Err(e) => return bad(e),
            };
            Planned::Decide(Plan {
                args: Some(json!({ "uri": read.uri })),
                ..read_upstream(After::Result)
            })
        }
        Method::PromptsGet => {
            let get = match req.prompt_get() {
                Ok(g) => g,
                Err(e) => return bad(e),
            };
            Planned::Decide(Plan {
                args: Some(json!({ "prompt": get.name, "arguments": get.arguments })),
                ..read_upstream(After::Result)
            })
        }
        Method::Ping => Planned::PassThrough,
        Method::Notification(m) | Method::Other(m) => Planned::Refuse(
            deny(
                format!(
                    "method-not-governed: Warden does not govern `{}`, so it is not forwarded",
                    m.escape_debug()
                ),
                state,
            ),
            jsonrpc::METHOD_NOT_FOUND,
        ),
    }
}

fn class_action(class: warden_core::ToolClass) -> Action {
    match class {
        warden_core::ToolClass::Read => Action::Read,
        warden_core::ToolClass::Write => Action::Write,
        warden_core::ToolClass::Destructive => Action::Destructive,
        warden_core::ToolClass::Admin => Action::Admin,
    }
}

async fn handle_request(
    state: AppState,
    caller: TaskCaller,
    upstream: Arc<Upstream>,
    req: jsonrpc::Request,
    route: Route,
    started: Instant,
    request_id: Option<String>,
) -> Response {
    let gw = state.gateway.clone();
    let now = Utc::now();
    let method = req.method.clone();
    if req.kind() == Method::ToolsCall
        && let Ok(call) = req.tool_call()
        && state.policies.tool(upstream.name.as_str(), call.name).is_none()
    {
        let name = call.name.to_owned();
        catalogue_on_miss(&state, &caller, &upstream, &route, &name, now).await;
    }
    let plan = match plan(&state, &upstream, &req) {
        Planned::Decide(p) => p,
        Planned::PassThrough => {
            return forward(
                state,
                caller,
                upstream,
                route,
                Message::Request(req),
                Clearance::Undecided,
            )
            .await;
        }
        Planned::Refuse(d, code) => {
            let refusal = Refusal {
                decision: d,
                code,
                recorded: None,
                approval: None,
                more: Vec::new(),
            };
            return answer_denied(
                &state, &caller, &upstream, &req.id, &method, None, refusal, started, request_id,
            )
            .await;
        }
    };
    // Secrets in the arguments are a risk signal for policy; the ledger only ever sees the
    // redacted copy (scanned once, here).
    let (recorded, risk) = match &plan.args {
        None => (None, Risk::default()),
        Some(args) => {
            let mut copy = args.clone();
            let report = gw.scanner.redact(&mut copy);
            let found = !report.findings.is_empty() || report.incomplete;
            (
                Some(copy),
                Risk {
                    secret_in_args: found,
                    score: if found { 100 } else { 0 },
                },
            )
        }
    };
    // Every refusal below: recorded with the plan, answered with its JSON-RPC error.
    let refuse = async |refusal: Refusal| {
        answer_denied(
            &state,
            &caller,
            &upstream,
            &req.id,
            &method,
            Some(&plan),
            refusal,
            started,
            request_id.clone(),
        )
        .await
    };
    let task = match gw.task_context(&caller.task) {
        Ok(t) => t,
        Err(e) => {
            return refuse(Refusal {
                decision: deny(format!("bad-task: {e}"), &state),
                code: jsonrpc::DENIED,
                recorded,
                approval: None,
                more: Vec::new(),
            })
            .await;
        }
    };
    let request = PolicyRequest {
        principal: caller.task.agent.clone(),
        action: plan.action,
        resource: plan.resource.clone(),
        context: PolicyContext {
            task: Some(task),
            args: plan.args.clone(),
            risk,
            ..Default::default()
        },
    };
    let d = state.policies.decide(&request, now);
    let (decision, approval, more) = if d.outcome == Outcome::NeedsApproval {
        let resource = plan.resource.to_string();
        let gate = crate::approvals::gate(
            &state,
            &caller,
            &request,
            d,
            recorded.clone(),
            Some(upstream.name.to_string()),
            &resource,
            now,
        )
        .await;
        (gate.decision, gate.approval, gate.entries)
    } else {
        (d, None, Vec::new())
    };
    let allowed = match decision.allowed() {
        Ok(a) => a,
        Err(decision) => {
            let code = match decision.outcome {
                Outcome::NeedsApproval => jsonrpc::APPROVAL_REQUIRED,
                _ if risk.secret_in_args => jsonrpc::SECRET_IN_ARGUMENTS,
                _ => jsonrpc::DENIED,
            };
            return refuse(Refusal {
                decision,
                code,
                recorded,
                approval,
                more,
            })
            .await;
        }
    };
    // Record before act: nothing is forwarded until the decision is durable.
    let mut entries = vec![decision_entry(
        &caller,
        &upstream,
        &method,
        &plan,
        allowed.decision(),
        recorded,
        approval.as_ref(),
        started,
        request_id.as_deref(),
    )];
    entries.extend(more);
    entries.extend(gw.take_results());
    if let Err(e) = state.ledger.record_all(entries).await {
        tracing::error!(error = %e, "gateway decision not recorded; the message is not forwarded");
        return rpc(
            StatusCode::OK,
            jsonrpc::error_response(
                Some(&req.id),
                jsonrpc::LEDGER_UNAVAILABLE,
                "the audit ledger cannot record this decision, so nothing was forwarded",
                None,
            ),
        );
    }
    let post = Post {
        id: req.id.clone(),
        method,
        after: plan.after,
        tool: plan.tool,
        sent: Instant::now(),
    };
    forward(
        state,
        caller,
        upstream,
        route,
        Message::Request(req),
        Clearance::Allowed(allowed, post),
    )
    .await
}

/// A refused request: the decision, its JSON-RPC code, the arguments as recorded (redacted), and
/// the approval request and entries behind a `needs_approval`.
struct Refusal {
    decision: Decision,
    code: i64,
    recorded: Option<Value>,
    approval: Option<crate::approvals::ApprovalRef>,
    more: Vec<NewEntry>,
}

#[expect(clippy::too_many_arguments, reason = "one value per fact of the decision")]
fn decision_entry(
    caller: &TaskCaller,
    upstream: &Upstream,
    method: &str,
    plan: &Plan,
    decision: &Decision,
    arguments: Option<Value>,
    approval: Option<&crate::approvals::ApprovalRef>,
    started: Instant,
    request_id: Option<&str>,
) -> NewEntry {
    let facts = crate::ledger::DecisionFacts {
        actor: caller.task.agent_spiffe_id.clone(),
        agent: caller.task.agent.to_string(),
        task: Some(caller.task.id.to_string()),
        action: plan.action.as_str().to_owned(),
        upstream: Some(upstream.name.to_string()),
        resource: Some(plan.resource.to_string()),
        arguments,
        request_id: request_id.map(str::to_owned),
    };
    let mut entry = crate::ledger::decision_entry(facts, decision, started.elapsed());
    entry.body["via"] = "mcp".into();
    entry.body["method"] = crate::ledger::clip_str(method, 128).into();
    if let Some(a) = approval {
        entry.body["approval"] = a.id.to_string().into();
        entry.body["approval_state"] = a.state.as_str().into();
    }
    entry
}

/// Records a refusal decision and answers with its JSON-RPC error.
/// Records a refusal and answers with its JSON-RPC error (the refusal stands even when the ledger
/// cannot record it; the answer then carries no `ledger_seq`).
#[expect(clippy::too_many_arguments, reason = "one value per fact of the request")]
async fn answer_denied(
    state: &AppState,
    caller: &TaskCaller,
    upstream: &Upstream,
    id: &Id,
    method: &str,
    plan: Option<&Plan>,
    refusal: Refusal,
    started: Instant,
    request_id: Option<String>,
) -> Response {
    let Refusal {
        decision,
        code,
        recorded,
        approval,
        more,
    } = refusal;
    let fallback = Plan {
        action: Action::Read,
        resource: ResourceRef::Upstream(upstream.name.clone()),
        args: None,
        after: After::Nothing,
        tool: None,
    };
    let plan = plan.unwrap_or(&fallback);
    let mut entries = vec![decision_entry(
        caller,
        upstream,
        method,
        plan,
        &decision,
        recorded,
        approval.as_ref(),
        started,
        request_id.as_deref(),
    )];
    entries.extend(more);
    entries.extend(state.gateway.take_results());
    let seq = match state.ledger.record_all(entries).await {
        Ok(seq) => Some(seq),
        Err(e) => {
            // A refusal stands without its record; the error says so.
            tracing::error!(error = %e, "gateway refusal not recorded in the audit ledger");
            None
        }
    };
    tracing::info!(
        agent = %caller.task.agent, task = %caller.task.id, upstream = %upstream.name, method = %method.escape_debug(),
        outcome = ?decision.outcome, reasons = ?decision.reasons, policy = %decision.policy_version,
        "mcp request refused"
    );
    let (message, mut data) = match decision.outcome {
        Outcome::NeedsApproval => (
            format!(
                "approval required: {}",
                approval.as_ref().map_or_else(
                    || "no approval request could be opened".to_owned(),
                    |a| format!("approval request {} ({})", a.id, a.url)
                )
            ),
            json!({ "approval": approval }),
        ),
        _ => (
            format!("denied by policy: {}", decision.reasons.join("; ")),
            json!({}),
        ),
    };
    data["outcome"] = json!(decision.outcome);
    data["reasons"] = json!(decision.reasons);
    data["policy_version"] = decision.policy_version.clone().into();
    if let Some(seq) = seq {
        data["ledger_seq"] = seq.into();
    }
    rpc(
        StatusCode::OK,
        jsonrpc::error_response(Some(id), code, &message, Some(data)),
    )
}

fn upstream_failed(id: Option<&Id>, e: &upstream::UpstreamError) -> Response {
    tracing::warn!(error = %e, "upstream MCP server failed");
    rpc(
        StatusCode::BAD_GATEWAY,
        jsonrpc::error_response(id, jsonrpc::UPSTREAM_UNAVAILABLE, &e.to_string(), None),
    )
}

/// What to do with the answer to a forwarded request.
#[derive(Debug)]
struct Post {
    id: Id,
    method: String,
    after: After,
    tool: Option<String>,
    sent: Instant,
}

/// Records what the upstream answered to an allowed action (status, latency, where secrets were
/// found — never content). Not awaited by the response: the action already happened, and its
/// decision is durable.
fn record_result(
    (state, caller, upstream): (&AppState, &TaskCaller, &Upstream),
    method: &str,
    tool: Option<&str>,
    status: &str,
    latency: Duration,
    findings: &[warden_gateway::scan::Finding],
) {
    let entry = crate::ledger::entry(EntryKind::ActionResult, &caller.task.agent_spiffe_id)
        .subject(format!("{}/{}", upstream.name, tool.unwrap_or(method)))
        .body(json!({
            "agent": caller.task.agent.as_str(),
            "task": caller.task.id,
            "upstream": upstream.name.as_str(),
            "method": method,
            "tool": tool,
            "status": status,
            "latency_us": u64::try_from(latency.as_micros()).unwrap_or(u64::MAX),
            "secrets_found": findings.iter().map(|f| json!({"rule": f.rule, "pointer": f.pointer})).collect::<Vec<_>>(),
        }));
    state.gateway.queue_result(entry);
}

/// Relays the upstream's HTTP answer: JSON or an SSE stream, each message post-processed.
async fn relay(
    state: AppState,
    caller: TaskCaller,
    upstream: Arc<Upstream>,
    resp: reqwest::Response,
    injected: Arc<credentials::Injected>,
    post: Option<Post>,
) -> Response {
    let status = resp.status();
    let session = resp
        .headers()
        .get(SESSION_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(|s| {
            state
                .gateway
                .keys
                .seal_session(s, caller.task.id, upstream.name.as_str())
        });
    let content_type = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_ascii_lowercase();
    let mut out = if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
        // The upstream refused Warden's credential: the agent's token is fine, so this is not a 401.
        if let Some(p) = &post {
            record_result(
                (&state, &caller, &upstream),
                &p.method,
                p.tool.as_deref(),
                "upstream_refused_credentials",
                p.sent.elapsed(),
                &[],
            );
        }
        rpc(
            StatusCode::BAD_GATEWAY,
            jsonrpc::error_response(
                post.as_ref().map(|p| &p.id),
                jsonrpc::UPSTREAM_UNAVAILABLE,
                &format!(
                    "upstream `{}` refused Warden's credentials ({status})",
                    upstream.name
                ),
                None,
            ),
        )
    } else if content_type.starts_with("text/event-stream") {
        sse_relay(state.clone(), caller, upstream.clone(), resp, injected, post)
    } else if content_type.starts_with("application/json") {
        let limit = state.gateway.settings.limits.max_bytes;
        match upstream::read_limited(resp, limit).await {
            Err(e) => upstream_failed(post.as_ref().map(|p| &p.id), &e),
            Ok(bytes) => {
                let bytes = state
                    .gateway
                    .credentials
                    .scrub(upstream.name.as_str(), &injected, &bytes);
                let body = match jsonrpc::parse(&bytes, &state.gateway.settings.limits) {
                    Ok(m) => {
                        let m = after(&state, &caller, &upstream, m, post.as_ref()).await;
                        m.to_string()
                    }
                    Err(e) => {
                        return upstream_failed(
                            post.as_ref().map(|p| &p.id),
                            &upstream::UpstreamError::Protocol(format!(
                                "the upstream's answer is not a JSON-RPC message: {e}"
                            )),
                        );
                    }
                };
                (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
            }
        }
    } else if status.is_success() && status != StatusCode::ACCEPTED && post.is_some() {
        // A request must be answered with JSON or an event stream.
        if let Some(p) = &post {
            record_result(
                (&state, &caller, &upstream),
                &p.method,
                p.tool.as_deref(),
                "upstream_protocol_error",
                p.sent.elapsed(),
                &[],
            );
        }
        upstream_failed(
            post.as_ref().map(|p| &p.id),
            &upstream::UpstreamError::Protocol(format!(
                "upstream `{}` answered a request with content type `{}`, not JSON or an event stream",
                upstream.name,
                content_type.escape_debug()
            )),
        )
    } else {
        // 202 Accepted for notifications and responses, 204, 404 for a lost session, and errors:
        // the status alone, never the upstream's body (it may describe its credentials).
        if let Some(p) = &post {
            record_result(
                (&state, &caller, &upstream),
                &p.method,
                p.tool.as_deref(),
                status.as_str(),
                p.sent.elapsed(),
                &[],
            );
        }
        status.into_response()
    };
    if let Some(s) = session
        && let Ok(v) = HeaderValue::from_str(&s)
    {
        out.headers_mut().insert(SESSION_HEADER, v);
    }
    out
}

/// Post-processes one message from the upstream: the answer to our request (tools catalogued and
/// filtered, results scanned), anything else passed through.
async fn after(
    state: &AppState,
    caller: &TaskCaller,
    upstream: &Upstream,
    m: Message,
    post: Option<&Post>,
) -> Value {
    let Some(p) = post else {
        return m.to_value();
    };
    match m {
        Message::Response(r) if r.id == p.id => {
            let result = match p.after {
                After::Nothing => r.result,
                After::ToolsList => crate::gateway::tools_list(state, caller, upstream, r.result).await,
                After::Result => {
                    let mut result = r.result;
                    let report = if state.gateway.settings.results == ResultPolicy::Pass {
                        state.gateway.scanner.scan(&result)
                    } else {
                        state.gateway.scanner.redact(&mut result)
                    };
                    let status = if report.findings.is_empty() {
                        "ok"
                    } else {
                        "ok_secrets_found"
                    };
                    record_result(
                        (state, caller, upstream),
                        &p.method,
                        p.tool.as_deref(),
                        status,
                        p.sent.elapsed(),
                        &report.findings,
                    );
                    if !report.findings.is_empty() && state.gateway.settings.results == ResultPolicy::Deny {
                        return jsonrpc::error_response(
                            Some(&r.id),
                            jsonrpc::SECRET_IN_ARGUMENTS,
                            "the upstream's result held a secret, and `gateway.results` is `deny`",
                            Some(
                                json!({"rules": report.findings.iter().map(|f| f.rule.clone()).collect::<Vec<_>>()}),
                            ),
                        );
                    }
                    result
                }
            };
            jsonrpc::result_response(&r.id, result)
        }
        Message::Error(e) if e.id.as_ref() == Some(&p.id) => {
            if matches!(p.after, After::Result) {
                record_result(
                    (state, caller, upstream),
                    &p.method,
                    p.tool.as_deref(),
                    "error",
                    p.sent.elapsed(),
                    &[],
                );
            }
            Message::Error(e).to_value()
        }
        other => other.to_value(),
    }
}

fn observed(page: &warden_gateway::tools::ToolsPage) -> Vec<warden_store::ObservedTool> {
    page.tools
        .iter()
        .map(|t| warden_store::ObservedTool {
            name: t.name().to_owned(),
            digest: t.digest().to_owned(),
            definition: t.value().clone(),
            hint_class: convert_class(warden_gateway::tools::hint_class(t)),
        })
        .collect()
}

/// Most `tools/list` pages Warden reads on its own when a call names a tool it has not seen.
const MAX_CATALOGUE_PAGES: usize = 10;

/// A call names a tool this node has not catalogued (the client never listed tools, or another
/// node did): Warden lists the upstream's tools itself, in the caller's session, and catalogues
/// them, so the decision can know the tool's class. Failures leave the tool unknown (denied).
async fn catalogue_on_miss(
    state: &AppState,
    caller: &TaskCaller,
    upstream: &Upstream,
    route: &Route,
    tool: &str,
    now: chrono::DateTime<Utc>,
) {
    // Another node may have catalogued it; its event may not have arrived yet.
    match state.store.get_tool(&upstream.name, tool).await {
        Ok(Some(t)) => {
            state.policies.tool_changed(&t).await;
            return;
        }
        Ok(None) => {}
        Err(e) => {
            tracing::warn!(upstream = %upstream.name, error = %e, "the tool catalogue cannot be read");
            return;
        }
    }
    // Listing is a read of the upstream: only for a task that may read it (as its own tools/list).
    let may_list = crate::api::authorize::task_context(&caller.task).is_ok_and(|task| {
        let request = PolicyRequest {
            principal: caller.task.agent.clone(),
            action: Action::Read,
            resource: ResourceRef::Upstream(upstream.name.clone()),
            context: PolicyContext {
                task: Some(task),
                ..Default::default()
            },
        };
        state.policies.decide(&request, now).outcome == Outcome::Allow
    });
    if !may_list {
        return;
    }
    let mut cursor: Option<String> = None;
    for _ in 0..MAX_CATALOGUE_PAGES {
        let id = Id::String(format!("warden-catalogue-{}", uuid::Uuid::new_v4()));
        let params = cursor.as_ref().map(|c| {
            let mut m = serde_json::Map::new();
            m.insert("cursor".into(), c.clone().into());
            m
        });
        let msg = Message::Request(jsonrpc::Request {
            id: id.clone(),
            method: "tools/list".into(),
            params,
        });
        let answer = match fetch(state, caller, upstream, route, &msg, &id).await {
            Ok(Message::Response(r)) => r.result,
            Ok(other) => {
                tracing::warn!(upstream = %upstream.name, answer = ?other.method(), "the upstream refused Warden's own tools/list");
                return;
            }
            Err(e) => {
                tracing::warn!(upstream = %upstream.name, error = %e, "Warden's own tools/list failed");
                return;
            }
        };
        let page = match warden_gateway::tools::parse_tools_list(&answer, &Default::default()) {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(upstream = %upstream.name, error = %e, "tools/list answer refused");
                return;
            }
        };
        if let Err(e) = catalog::observe(state, &upstream.name, &observed(&page)).await {
            tracing::error!(upstream = %upstream.name, error = %e, "tools cannot be catalogued");
            return;
        }
        match page.next_cursor {
            Some(c) => cursor = Some(c),
            None => return,
        }
    }
}

/// Sends a request of Warden's own in the caller's session and returns the upstream's answer to it
/// (from JSON, an event stream, or a stdio server).
async fn fetch(
    state: &AppState,
    caller: &TaskCaller,
    upstream: &Upstream,
    route: &Route,
    msg: &Message,
    id: &Id,
) -> Result<Message, upstream::UpstreamError> {
    let gw = &state.gateway;
    let limits = gw.settings.limits;
    let protocol = |m: String| upstream::UpstreamError::Protocol(m);
    if is_stdio(upstream) {
        let key = route
            .session
            .as_deref()
            .ok_or_else(|| protocol("no stdio session".into()))?;
        return match gw
            .stdio
            .send(
                key,
                caller.task.id,
                upstream.name.as_str(),
                msg,
                gw.settings.upstream_timeout,
            )
            .await?
        {
            stdio::Reply::Answer(m) => Ok(m),
            stdio::Reply::Accepted => Err(protocol("no answer".into())),
        };
    }
    let body = msg.to_value().to_string().into_bytes();
    let (resp, injected) = gw
        .upstreams
        .post(state, upstream, route.headers.clone(), body)
        .await?;
    if !resp.status().is_success() {
        return Err(protocol(format!("status {}", resp.status())));
    }
    let sse = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|c| c.starts_with("text/event-stream"));
    if !sse {
        let bytes = upstream::read_limited(resp, limits.max_bytes).await?;
        let bytes = gw.credentials.scrub(upstream.name.as_str(), &injected, &bytes);
        return jsonrpc::parse(&bytes, &limits).map_err(|e| protocol(e.to_string()));
    }
    use futures_util::StreamExt as _;
    let mut parser = warden_gateway::sse::SseParser::new(Default::default());
    let mut stream = resp.bytes_stream();
    let deadline = tokio::time::Instant::now() + gw.settings.upstream_timeout;
    loop {
        let chunk = tokio::time::timeout_at(deadline, stream.next())
            .await
            .map_err(|_| protocol("no answer in time".into()))?;
        let Some(Ok(chunk)) = chunk else {
            return Err(protocol("the stream ended without an answer".into()));
        };
        for ev in parser.push(&chunk).map_err(|e| protocol(e.to_string()))? {
            let data = gw
                .credentials
                .scrub(upstream.name.as_str(), &injected, ev.data.as_bytes());
            if let Ok(m) = jsonrpc::parse(&data, &limits)
                && m.id() == Some(id)
            {
                return Ok(m);
            }
        }
    }
}

/// `tools/list`: every tool catalogued (new ones recorded; changed ones quarantined and recorded),
/// then only the tools this task may call are shown — a denied or quarantined tool is invisible.
pub async fn tools_list(state: &AppState, caller: &TaskCaller, upstream: &Upstream, result: Value) -> Value {
    let page = match warden_gateway::tools::parse_tools_list(&result, &Default::default()) {
        Ok(p) => p,
        Err(e) => {
            tracing::warn!(upstream = %upstream.name, error = %e, "tools/list answer refused");
            return json!({ "tools": [] });
        }
    };
    if let Err(e) = catalog::observe(state, &upstream.name, &observed(&page)).await {
        // Fail closed: a catalogue that cannot be written shows nothing.
        tracing::error!(upstream = %upstream.name, error = %e, "tools cannot be catalogued; none are shown");
        return page.to_result(|_| false);
    }
    let now = Utc::now();
    let task = crate::api::authorize::task_context(&caller.task).ok();
    let mut keep = Vec::new();
    for t in &page.tools {
        let Some(rec) = state.policies.tool(upstream.name.as_str(), t.name()) else {
            continue;
        };
        if rec.state != ToolState::Active || rec.digest.as_deref() != Some(t.digest()) {
            continue;
        }
        let request = PolicyRequest {
            principal: caller.task.agent.clone(),
            action: class_action(rec.effective_class()),
            resource: ResourceRef::tool(&upstream.name, t.name()),
            context: PolicyContext {
                task: task.clone(),
                ..Default::default()
            },
        };
        if state.policies.decide(&request, now).outcome != Outcome::Deny {
            keep.push(t.name().to_owned());
        }
    }
    page.to_result(|t| keep.iter().any(|k| k == t.name()))
}

fn convert_class(c: warden_gateway::tools::ToolClass) -> warden_core::ToolClass {
    use warden_gateway::tools::ToolClass as G;
    match c {
        G::Read => warden_core::ToolClass::Read,
        G::Write => warden_core::ToolClass::Write,
        G::Destructive => warden_core::ToolClass::Destructive,
        G::Admin => warden_core::ToolClass::Admin,
    }
}

/// Relays an SSE answer event by event (each JSON-RPC message post-processed), and ends it when
/// the task stops being live.
fn sse_relay(
    state: AppState,
    caller: TaskCaller,
    upstream: Arc<Upstream>,
    resp: reqwest::Response,
    injected: Arc<credentials::Injected>,
    post: Option<Post>,
) -> Response {
    use futures_util::StreamExt as _;
    let (tx, rx) = tokio::sync::mpsc::channel::<bytes::Bytes>(16);
    tokio::spawn(async move {
        let mut parser = warden_gateway::sse::SseParser::new(Default::default());
        let mut stream = resp.bytes_stream();
        let ended = task_ended(state.clone(), caller.task.id);
        tokio::pin!(ended);
        loop {
            tokio::select! {
                chunk = stream.next() => {
                    let Some(Ok(chunk)) = chunk else { break };
                    let events = match parser.push(&chunk) {
                        Ok(ev) => ev,
                        Err(e) => {
                            tracing::warn!(upstream = %upstream.name, error = %e, "the upstream's event stream is malformed; closed");
                            break;
                        }
                    };
                    for mut ev in events {
                        let data = state.gateway.credentials.scrub(upstream.name.as_str(), &injected, ev.data.as_bytes());
                        if !data.is_empty() {
                            ev.data = match jsonrpc::parse(&data, &state.gateway.settings.limits) {
                                Ok(m) => after(&state, &caller, &upstream, m, post.as_ref()).await.to_string(),
                                Err(e) => {
                                    tracing::warn!(upstream = %upstream.name, error = %e, "an upstream event is not a JSON-RPC message; dropped");
                                    continue;
                                }
                            };
                        }
                        if tx.send(bytes::Bytes::from(warden_gateway::sse::encode(&ev))).await.is_err() {
                            return;
                        }
                    }
                }
                () = &mut ended => {
                    tracing::info!(task = %caller.task.id, upstream = %upstream.name, "task no longer live; MCP stream closed");
                    return;
                }
            }
        }
    });
    sse_response(rx)
}

/// `GET /mcp/{upstream}`: the server's own stream (notifications and requests to the client),
/// relayed while the task is live.
pub async fn get(State(state): State<AppState>, Path(name): Path<String>, request: Request) -> Response {
    let (mut parts, _) = request.into_parts();
    let caller = match TaskCaller::from_request_parts(&mut parts, &state).await {
        Ok(c) => c,
        Err(e) => return e.into_response(),
    };
    let upstream = match resolve_upstream(&state, &name).await {
        Ok(u) => u,
        Err(resp) => return resp,
    };
    let gw = state.gateway.clone();
    let session = match session_of(&gw, &parts.headers, &caller, &upstream) {
        Ok(s) => s,
        Err(resp) => return resp,
    };
    if is_stdio(&upstream) {
        return stdio_stream(state, caller, upstream, session);
    }
    let headers = upstream::forwarded_headers(&parts.headers, session.as_deref());
    match gw.upstreams.get(&state, &upstream, headers).await {
        Ok((resp, injected)) => relay(state, caller, upstream, resp, injected, None).await,
        Err(e) => upstream_failed(None, &e),
    }
}

/// A stdio session's server-initiated messages as an event stream, while the task is live.
fn stdio_stream(
    state: AppState,
    caller: TaskCaller,
    upstream: Arc<Upstream>,
    session: Option<String>,
) -> Response {
    let Some(mut events) = session.as_deref().and_then(|k| {
        state
            .gateway
            .stdio
            .subscribe(k, caller.task.id, upstream.name.as_str())
    }) else {
        return refused(
            StatusCode::NOT_FOUND,
            None,
            jsonrpc::INVALID_REQUEST,
            "unknown Mcp-Session-Id for this task and upstream; initialize a new session".to_owned(),
        );
    };
    let (tx, rx) = tokio::sync::mpsc::channel::<bytes::Bytes>(16);
    tokio::spawn(async move {
        let ended = task_ended(state.clone(), caller.task.id);
        tokio::pin!(ended);
        loop {
            tokio::select! {
                ev = events.recv() => {
                    let data = match ev {
                        Ok(v) => v.to_string(),
                        Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                            tracing::warn!(upstream = %upstream.name, missed = n, "a slow MCP client missed server messages");
                            continue;
                        }
                        Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                    };
                    let ev = warden_gateway::sse::SseEvent { event: Some("message".into()), data, id: None, retry: None };
                    if tx.send(bytes::Bytes::from(warden_gateway::sse::encode(&ev))).await.is_err() {
                        return;
                    }
                }
                () = &mut ended => return,
            }
        }
    });
    sse_response(rx)
}

/// How often a stream checks that its task is still live.
const LIVENESS_CHECK: Duration = Duration::from_millis(500);

/// Resolves once the task's credentials stop working (ended, revoked, expired): every stream held
/// for it ends then, on every node (the task cache follows the store's revocation events).
async fn task_ended(state: AppState, task: uuid::Uuid) {
    let mut tick = tokio::time::interval(LIVENESS_CHECK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if state
            .identity
            .tasks
            .live_task(state.store.as_ref(), task, Utc::now())
            .await
            .is_err()
        {
            return;
        }
    }
}

/// The response that streams what the relay task sends.
fn sse_response(rx: tokio::sync::mpsc::Receiver<bytes::Bytes>) -> Response {
    let body = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|b| (Ok::<_, std::convert::Infallible>(b), rx))
    });
    (
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, "text/event-stream"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        Body::from_stream(body),
    )
        .into_response()
}

/// `DELETE /mcp/{upstream}`: ends the session at the upstream.
pub async fn delete(State(state): State<AppState>, Path(name): Path<String>, request: Request) -> Response {
    let (mut parts, _) = request.into_parts();
    let caller = match TaskCaller::from_request_parts(&mut parts, &state).await {
        Ok(c) => c,
        Err(e) => return e.into_response(),
    };
    let upstream = match resolve_upstream(&state, &name).await {
        Ok(u) => u,
        Err(resp) => return resp,
    };
    let gw = state.gateway.clone();
    let session = match session_of(&gw, &parts.headers, &caller, &upstream) {
        Ok(Some(s)) => s,
        Ok(None) => {
            return refused(
                StatusCode::BAD_REQUEST,
                None,
                jsonrpc::INVALID_REQUEST,
                "DELETE needs the Mcp-Session-Id header".to_owned(),
            );
        }
        Err(resp) => return resp,
    };
    if is_stdio(&upstream) {
        return if gw.stdio.knows(&session, caller.task.id, upstream.name.as_str()) && gw.stdio.end(&session) {
            StatusCode::NO_CONTENT.into_response()
        } else {
            StatusCode::NOT_FOUND.into_response()
        };
    }
    let headers = upstream::forwarded_headers(&parts.headers, Some(&session));
    match gw.upstreams.delete(&state, &upstream, headers).await {
        Ok(status) => status.into_response(),
        Err(e) => upstream_failed(None, &e),
    }
}
