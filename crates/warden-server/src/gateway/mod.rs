//! The MCP gateway: `/mcp/{upstream}`, where agents' MCP clients meet Warden.
//!
//! An agent points its MCP client (streamable HTTP, protocol 2025-06-18, 2025-11-25 or 2026-07-28;
//! translated to the upstream's revision by `revisions.rs`) at
//! `<warden>/mcp/<upstream>` with its task token. Two invariants hold by construction:
//!
//! 1. **Every message in is decided** (`inbound.rs`, `clearance.rs`, [`crate::pipeline`]). Each
//!    request, notification, response to the upstream's own request, `GET` stream, `DELETE`, stdio
//!    process spawn and Warden's own catalogue fetch is classified into a policy question (or
//!    refused before policy, with the reason), decided, recorded durably, and sent only with the
//!    [`clearance::Clearance`] that a durable allow yields — the upstream clients' one send
//!    operation takes nothing else.
//! 2. **Every byte out is filtered** (`outbound.rs`, `streams.rs`). Everything an upstream sends —
//!    JSON answers, SSE on a `POST`, the `GET` stream, resumed streams, errors, notifications, its
//!    own requests — passes one filter: credentials scrubbed on decoded JSON, secrets redacted,
//!    `tools/list` catalogued and filtered, answers to anything but the request being answered
//!    dropped, results recorded. Event ids are sealed, so a resumed stream is filtered as the
//!    original; a resume Warden cannot filter is refused.
//!
//! Before any of that, the `Origin` and `Host` headers are checked (403 on a foreign one: DNS
//! rebinding), the task token is authenticated (401 with `WWW-Authenticate`), and the message is
//! parsed within limits (400 naming what is wrong). Sessions: the upstream's `Mcp-Session-Id` is
//! sealed with the task and upstream into Warden's own (an upstream without sessions gets one of
//! Warden's too), so a session cannot move to another task or upstream, and any node that shares the
//! deployment's key serves it. A long-lived stream is cut as soon as its task stops being live.

pub mod catalog;
pub mod clearance;
pub mod credentials;
pub mod inbound;
pub mod input_required;
pub mod outbound;
pub mod relay;
pub mod revisions;
pub mod stdio;
pub mod streams;
pub mod upstream;

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::Value;
use warden_core::{ToolState, Upstream, UpstreamKind, UpstreamName};
use warden_gateway::jsonrpc::{self, Id, Message};
use warden_gateway::scan::Scanner;
use warden_ledger::NewEntry;
use warden_policy::McpKind;

use crate::AppState;
use crate::pipeline::Ruling;
use crate::tasks::TaskCaller;

use clearance::{Clearance, Outgoing};
use outbound::Outbound;

pub use credentials::GatewayKeys;

/// How the gateway behaves (`[gateway]`).
#[derive(Clone, Debug)]
pub struct GatewaySettings {
    /// Bounds on every JSON-RPC message, both directions.
    pub limits: jsonrpc::Limits,
    /// How long an upstream may take to start answering (its response headers).
    pub upstream_timeout: Duration,
    /// Longest silence inside an answer to a request once it started.
    pub idle_timeout: Duration,
    /// Longest an agent's message may take to arrive (its request body).
    pub message_timeout: Duration,
    /// Longest a whole answer to one request may take.
    pub answer_timeout: Duration,
    /// The state of a tool seen for the first time: `active` (trust on first use) or `quarantined`
    /// (an admin approves every new tool).
    pub new_tools: ToolState,
    /// What to do with secrets found in tool results.
    pub results: ResultPolicy,
    /// `Origin`s allowed besides Warden's own (its public URL) and loopback ones, e.g.
    /// `https://console.example.com`. A request with any other `Origin` is refused (403).
    pub allowed_origins: Vec<String>,
    /// `Host` names (with `:port` when not the default) allowed besides Warden's own public host
    /// and loopback names. A request for any other host is refused (403).
    pub allowed_hosts: Vec<String>,
}

impl Default for GatewaySettings {
    fn default() -> Self {
        Self {
            limits: jsonrpc::Limits::default(),
            upstream_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(60),
            message_timeout: Duration::from_secs(30),
            answer_timeout: Duration::from_secs(600),
            new_tools: ToolState::Active,
            results: ResultPolicy::Redact,
            allowed_origins: Vec::new(),
            allowed_hosts: Vec::new(),
        }
    }
}

pub use crate::config::ResultPolicy;

impl From<&crate::config::GatewayConfig> for GatewaySettings {
    fn from(c: &crate::config::GatewayConfig) -> Self {
        Self {
            limits: jsonrpc::Limits {
                max_bytes: c.max_message_bytes,
                max_depth: c.max_depth,
            },
            upstream_timeout: Duration::from_millis(c.upstream_timeout_ms),
            idle_timeout: Duration::from_millis(c.idle_timeout_ms),
            message_timeout: Duration::from_millis(c.message_timeout_ms),
            answer_timeout: Duration::from_millis(c.answer_timeout_ms),
            new_tools: c.new_tools,
            results: c.results,
            allowed_origins: c.allowed_origins.clone(),
            allowed_hosts: c.allowed_hosts.clone(),
        }
    }
}

/// The gateway's shared parts.
#[derive(Debug)]
pub struct Gateway {
    pub settings: GatewaySettings,
    pub keys: Arc<GatewayKeys>,
    pub scanner: Scanner,
    pub upstreams: upstream::Client,
    pub credentials: credentials::Credentials,
    /// What each upstream speaks, and the sessions held for 2026-07-28 clients (`revisions.rs`).
    pub revisions: revisions::Revisions,
    /// The stdio servers this node spawns (`[[gateway.stdio]]`).
    pub stdio: stdio::StdioServers,
    /// Registered MCP upstreams by name, briefly cached: a message should not cost a database read.
    /// Dropped on registry events; [`UPSTREAM_CACHE_TTL`] bounds staleness if one is lost.
    upstream_cache: std::sync::RwLock<std::collections::HashMap<String, (Instant, Arc<Upstream>)>>,
    /// `action_result` entries waiting to be committed with the next decision (or by the flusher
    /// within [`RESULT_FLUSH`]): a result is recorded after its action, so it need not cost a commit
    /// of its own.
    pending_results: std::sync::Mutex<Vec<NewEntry>>,
    /// The upstream requests this node relayed an agent's answer to, and when: an answer goes on
    /// once (see [`Gateway::first_answer`]).
    answered: std::sync::Mutex<std::collections::HashMap<String, Instant>>,
    /// One catalogue fetch at a time per upstream (see `catalog::catalogue_on_miss`).
    catalogue_locks: std::sync::Mutex<std::collections::HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

/// How long a cached upstream record is used without re-reading it.
const UPSTREAM_CACHE_TTL: Duration = Duration::from_secs(5);
/// How long an answered upstream request is remembered (an answer replayed later is refused by
/// the seal's session binding only).
const ANSWER_MEMORY: Duration = Duration::from_secs(3600);
/// Most answered upstream requests remembered.
const MAX_ANSWERS: usize = 100_000;
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

    /// The lock that makes catalogue fetches for `upstream` one at a time on this node.
    pub fn catalogue_lock(&self, upstream: &str) -> Arc<tokio::sync::Mutex<()>> {
        match self.catalogue_locks.lock() {
            Ok(mut m) => m.entry(upstream.to_owned()).or_default().clone(),
            // A poisoned map: no sharing, but no refusal either.
            Err(_) => Arc::default(),
        }
    }

    /// Whether this is the first answer to the upstream's request `id` in this task's session
    /// (remembered for [`ANSWER_MEMORY`]; the sealed id binds task, upstream and session).
    pub fn first_answer(&self, task: uuid::Uuid, upstream: &str, session: Option<&str>, id: &Id) -> bool {
        let key = serde_json::json!([task, upstream, session, id]).to_string();
        let Ok(mut seen) = self.answered.lock() else {
            return false;
        };
        if seen.len() >= MAX_ANSWERS {
            seen.retain(|_, at| at.elapsed() < ANSWER_MEMORY);
            // Still full within the hour: start over rather than grow (a replayed answer then
            // reaches an upstream that already has one; the seal still binds it to its session).
            if seen.len() >= MAX_ANSWERS {
                seen.clear();
            }
        }
        match seen.get(&key) {
            Some(at) if at.elapsed() < ANSWER_MEMORY => false,
            _ => {
                seen.insert(key, Instant::now());
                true
            }
        }
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
            answered: Default::default(),
            catalogue_locks: Default::default(),
            revisions: Default::default(),
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
pub const PROTOCOL_VERSIONS: [&str; 3] = jsonrpc::SUPPORTED_PROTOCOL_VERSIONS;

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
    refused_with(status, id, code, message, None)
}

/// [`refused`] with the error's `data`.
fn refused_with(
    status: StatusCode,
    id: Option<&Id>,
    code: i64,
    message: String,
    data: Option<Value>,
) -> Response {
    let mut resp = rpc(status, jsonrpc::error_response(id, code, &message, data));
    resp.extensions_mut().insert(crate::audit::Refusal {
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
            resp.extensions_mut().insert(crate::audit::Refusal {
                status: 503,
                code: "store_unavailable",
                message,
            });
            Err(resp)
        }
    }
}

/// Where a message goes: the headers for an HTTP upstream, and the upstream's session (an HTTP
/// upstream's own session id — empty for an upstream without sessions — or a stdio session's key).
#[derive(Debug)]
pub struct Route {
    headers: HeaderMap,
    session: Option<String>,
    /// The message travels on the 2026-07-28 wire: the HTTP client derives `Mcp-Method`,
    /// `Mcp-Name` and `Mcp-Param-*` from the cleared body (never from the agent's headers).
    modern: bool,
    /// For a `tools/call` on the 2026-07-28 wire: the called tool's catalogued `inputSchema`, whose
    /// `x-mcp-header` annotations say which arguments are mirrored into `Mcp-Param-*`.
    tool_schema: Option<Value>,
    /// What the client declared at `initialize` (this message's, or its session's), sealed into
    /// any session id handed out with the answer.
    caps: credentials::SessionCaps,
    /// A new upstream session may be sealed and handed to the agent (not on the 2026-07-28 wire,
    /// and not for a session Warden holds itself: see `revisions.rs`).
    hand_out_session: bool,
}

impl Route {
    fn new(incoming: &HeaderMap, session: Option<String>) -> Self {
        let modern = incoming
            .get(warden_gateway::wire::PROTOCOL_VERSION_HEADER)
            .and_then(|v| v.to_str().ok())
            .is_some_and(warden_gateway::wire::is_modern);
        Self {
            headers: upstream::forwarded_headers(incoming, session.as_deref()),
            session,
            modern,
            tool_schema: None,
            caps: credentials::SessionCaps::default(),
            hand_out_session: !modern,
        }
    }

    /// The route of a message Warden translated between revisions (or sends itself): only the
    /// headers Warden chose — `MCP-Protocol-Version: version` and the upstream `session` — and no
    /// session handed to the agent.
    pub(super) fn translated(session: Option<String>, version: &str, modern: bool) -> Self {
        let mut incoming = HeaderMap::new();
        if let Ok(v) = axum::http::HeaderValue::from_str(version) {
            incoming.insert(warden_gateway::wire::PROTOCOL_VERSION_HEADER, v);
        }
        Self {
            headers: upstream::forwarded_headers(&incoming, session.as_deref()),
            session,
            modern,
            tool_schema: None,
            caps: credentials::SessionCaps::default(),
            hand_out_session: false,
        }
    }

    /// The parameters of a request Warden sends on its own (the catalogue fetch): on the
    /// 2026-07-28 wire with the per-request `_meta` that revision requires.
    pub(super) fn own_params(
        &self,
        params: Option<serde_json::Map<String, Value>>,
    ) -> Option<serde_json::Map<String, Value>> {
        if !self.modern {
            return params;
        }
        let mut params = params.unwrap_or_default();
        params.insert("_meta".into(), modern_meta());
        Some(params)
    }
}

/// The `_meta` of a 2026-07-28 request Warden makes itself.
fn modern_meta() -> Value {
    use warden_gateway::wire;
    serde_json::json!({
        wire::META_PROTOCOL_VERSION: wire::MODERN_PROTOCOL_VERSIONS[0],
        wire::META_CLIENT_CAPABILITIES: {},
        wire::META_CLIENT_INFO: {"name": "warden", "version": env!("CARGO_PKG_VERSION")},
    })
}

fn is_stdio(upstream: &Upstream) -> bool {
    upstream.url.starts_with("stdio://")
}

fn request_id(headers: &HeaderMap) -> Option<String> {
    headers
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .map(|s| crate::ledger::clip_str(s, 128))
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

/// DNS-rebinding protection (MCP transport, 2025-11-25): a request whose `Origin` is not Warden's
/// own (its public URL), a loopback origin or one in `gateway.allowed_origins`, or whose `Host` is
/// not Warden's own host, a loopback name or one in `gateway.allowed_hosts`, is refused with 403.
/// Requests without `Origin` (non-browser clients) pass the origin check.
#[expect(
    clippy::result_large_err,
    reason = "the error is the response itself, built once on the refusal path"
)]
fn check_origin(state: &AppState, headers: &HeaderMap) -> Result<(), Response> {
    match foreign_origin(&state.identity.settings.issuer, &state.gateway.settings, headers) {
        None => Ok(()),
        Some((what, value)) => Err(refused(
            StatusCode::FORBIDDEN,
            None,
            jsonrpc::INVALID_REQUEST,
            format!(
                "{what} `{}` is not allowed here (gateway.allowed_{what}s)",
                crate::ledger::clip_str(&value, 200).escape_debug()
            ),
        )),
    }
}

/// The header (`origin` or `host`) and value [`check_origin`] refuses, if any.
fn foreign_origin(
    issuer: &str,
    settings: &GatewaySettings,
    headers: &HeaderMap,
) -> Option<(&'static str, String)> {
    let own = url::Url::parse(issuer).ok();
    // Warden's own authority, and the same with its scheme's default port spelled out (a client
    // may send either).
    let own_hosts: Vec<String> = own
        .as_ref()
        .and_then(|u| {
            let host = u.host_str()?;
            let port = u.port_or_known_default()?;
            Some(match u.port() {
                Some(p) => vec![format!("{host}:{p}")],
                None => vec![host.to_owned(), format!("{host}:{port}")],
            })
        })
        .unwrap_or_default();
    let loopback = |host: &str| {
        let name = host
            .strip_prefix('[')
            .and_then(|h| h.split_once(']'))
            .map_or_else(|| host.rsplit_once(':').map_or(host, |(h, _)| h), |(h, _)| h);
        name.eq_ignore_ascii_case("localhost")
            || name.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
    };
    if let Some(origin) = headers.get(header::ORIGIN) {
        let origin = origin.to_str().unwrap_or("\u{fffd}");
        let ok = url::Url::parse(origin).ok().is_some_and(|o| {
            let same = own.as_ref().is_some_and(|u| u.origin() == o.origin());
            same || o.host_str().is_some_and(loopback)
                || settings
                    .allowed_origins
                    .iter()
                    .any(|a| url::Url::parse(a).is_ok_and(|a| a.origin() == o.origin()))
        });
        if !ok {
            return Some(("origin", origin.to_owned()));
        }
    }
    if let Some(host) = headers.get(header::HOST) {
        let host = host.to_str().unwrap_or("\u{fffd}");
        let ok = loopback(host)
            || own_hosts.iter().any(|h| h.eq_ignore_ascii_case(host))
            || settings
                .allowed_hosts
                .iter()
                .any(|h| h.eq_ignore_ascii_case(host));
        if !ok {
            return Some(("host", host.to_owned()));
        }
    }
    None
}

/// What every handler starts with: the `Origin`/`Host` check, the task token, the upstream, the
/// session.
async fn admit(
    state: &AppState,
    name: &str,
    parts: &mut axum::http::request::Parts,
) -> Result<(Arc<TaskCaller>, Arc<Upstream>, Option<String>), Response> {
    check_origin(state, &parts.headers)?;
    check_protocol_version(&parts.headers)?;
    // The endpoint is an OAuth protected resource: its token must be unbound or for it (RFC 8707),
    // and a 401 names its metadata (RFC 9728).
    let caller = TaskCaller::at_mcp(parts, state, name)
        .await
        .map_err(IntoResponse::into_response)?;
    let upstream = resolve_upstream(state, name).await?;
    let session = session_of(&state.gateway, &parts.headers, &caller, &upstream)?;
    Ok((Arc::new(caller), upstream, session))
}

/// Every MCP revision there is: the values `MCP-Protocol-Version` may take. Which one a session uses
/// is between the client and the upstream (negotiated at `initialize`, or declared on every request
/// from 2026-07-28 on); Warden checks the header is a real revision before it forwards it.
const KNOWN_PROTOCOL_REVISIONS: [&str; 5] = [
    "2024-11-05",
    "2025-03-26",
    "2025-06-18",
    "2025-11-25",
    "2026-07-28",
];

/// `MCP-Protocol-Version`, when sent, must be an MCP revision: it is forwarded to the upstream, so an
/// unchecked value would reach it as the agent wrote it (MCP: 400 for an invalid or unsupported
/// version).
#[expect(
    clippy::result_large_err,
    reason = "the error is the response itself, built once on the refusal path"
)]
fn check_protocol_version(headers: &axum::http::HeaderMap) -> Result<(), Response> {
    let Some(v) = headers.get("mcp-protocol-version") else {
        return Ok(());
    };
    match v.to_str() {
        Ok(v) if KNOWN_PROTOCOL_REVISIONS.contains(&v) => Ok(()),
        _ => Err(refused(
            StatusCode::BAD_REQUEST,
            None,
            jsonrpc::INVALID_REQUEST,
            format!(
                "unsupported MCP-Protocol-Version; MCP revisions are {}",
                KNOWN_PROTOCOL_REVISIONS.join(", ")
            ),
        )),
    }
}

/// A message must be `Content-Type: application/json` (MCP Streamable HTTP): anything else is a
/// 415, before the body is read.
#[expect(
    clippy::result_large_err,
    reason = "the error is the response itself, built once on the refusal path"
)]
fn check_content_type(headers: &axum::http::HeaderMap) -> Result<(), Response> {
    let ok = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|t| t.trim().eq_ignore_ascii_case("application/json"));
    if ok {
        Ok(())
    } else {
        Err(refused(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            None,
            jsonrpc::INVALID_REQUEST,
            "a message to /mcp must be sent with `Content-Type: application/json`".to_owned(),
        ))
    }
}

/// `POST /mcp/{upstream}`: one JSON-RPC message from the agent.
pub async fn post(State(state): State<AppState>, Path(name): Path<String>, request: Request) -> Response {
    let started = Instant::now();
    let (mut parts, body) = request.into_parts();
    if let Err(resp) = check_content_type(&parts.headers) {
        return resp;
    }
    let (caller, upstream, session) = match admit(&state, &name, &mut parts).await {
        Ok(a) => a,
        Err(resp) => return resp,
    };
    let gw = state.gateway.clone();
    let limits = gw.settings.limits;
    // The REST request timeout does not cover `/mcp` (see `api::router`): the agent's message
    // must arrive within its own limit, or a slow sender holds a connection for ever.
    let read = tokio::time::timeout(
        gw.settings.message_timeout,
        axum::body::to_bytes(body, limits.max_bytes),
    );
    let bytes = match read.await {
        Ok(Ok(b)) => b,
        Err(_) => {
            return refused(
                StatusCode::REQUEST_TIMEOUT,
                None,
                jsonrpc::INVALID_REQUEST,
                format!(
                    "the message did not arrive within {} ms (gateway.message_timeout_ms)",
                    gw.settings.message_timeout.as_millis()
                ),
            );
        }
        Ok(Err(_)) => {
            return refused(
                StatusCode::PAYLOAD_TOO_LARGE,
                None,
                jsonrpc::INVALID_REQUEST,
                format!("the message is larger than {} bytes", limits.max_bytes),
            );
        }
    };
    let mut message = match jsonrpc::parse(&bytes, &limits) {
        Ok(m) => m,
        Err(e) => {
            return refused(StatusCode::BAD_REQUEST, e.id(), e.code(), e.to_string());
        }
    };
    // The 2026-07-28 wire: the body decides; the headers mirroring it must agree with it.
    let modern = match modern_wire(&parts.headers, &message) {
        Ok(m) => m,
        Err(resp) => return resp,
    };
    if modern.is_some() && is_stdio(&upstream) {
        return refused(
            StatusCode::BAD_REQUEST,
            message.id(),
            jsonrpc::INVALID_REQUEST,
            format!(
                "upstream `{}` is a stdio server, which Warden speaks to at 2025-06-18 or 2025-11-25 (initialize, then the session); MCP 2026-07-28 is not translated to stdio",
                upstream.name
            ),
        );
    }
    if is_stdio(&upstream)
        && session.is_none()
        && !matches!(&message, Message::Request(r) if r.method == "initialize")
    {
        return refused(
            StatusCode::BAD_REQUEST,
            message.id(),
            jsonrpc::INVALID_REQUEST,
            "a stdio upstream needs the Mcp-Session-Id of an initialized session".to_owned(),
        );
    }
    // 2026-07-28 has no sessions: an `Mcp-Session-Id` on that wire is ignored, as the revision says.
    let session = if modern.is_some() { None } else { session };
    // What the client can take when a call waits for approval (and, on the 2026-07-28 wire, a
    // request state of Warden's taken off the retry: see `input_required`).
    let caps = match &message {
        Message::Request(r) if r.method == "initialize" => credentials::SessionCaps {
            url_elicitation: r
                .params
                .as_ref()
                .and_then(|p| p.get("capabilities"))
                .and_then(|c| c.get("elicitation"))
                .and_then(|e| e.get("url"))
                .is_some(),
        },
        _ => parts
            .headers
            .get(SESSION_HEADER)
            .and_then(|v| v.to_str().ok())
            .map(|raw| gw.keys.session_caps(raw, caller.task.id, upstream.name.as_str()))
            .unwrap_or_default(),
    };
    let ask = input_required::prepare(
        &mut message,
        modern.is_some(),
        caps,
        parts
            .headers
            .get(warden_gateway::wire::PROTOCOL_VERSION_HEADER)
            .and_then(|v| v.to_str().ok()),
    );
    let request_id = request_id(&parts.headers);
    // Each leg speaks its own revision: how this message crosses (`revisions.rs`).
    let plan = revisions::plan(
        &state,
        &caller,
        &upstream,
        &parts.headers,
        modern.is_some(),
        session,
        message,
        request_id.clone(),
        started,
    )
    .await;
    let revisions::Plan {
        message,
        mut route,
        translation,
        session,
    } = match plan {
        Ok(p) => p,
        Err(resp) => return resp,
    };
    route.caps = caps;
    // A call naming a tool this node has not catalogued: Warden lists the tools first (itself
    // decided and recorded), so the call is decided on the tool's class.
    if let Message::Request(req) = &message
        && req.method == "tools/call"
        && let Ok(call) = req.tool_call()
        && state.policies.tool(upstream.name.as_str(), call.name).is_none()
    {
        let tool = call.name.to_owned();
        catalog::catalogue_on_miss(&state, &caller, &upstream, &route, &tool, request_id.clone()).await;
    }
    // `Mcp-Param-*`: checked against the arguments by the catalogued schema before anything
    // relies on them; what the upstream gets is derived from the body by the same schema.
    if let (Some(headers), Message::Request(req)) = (&modern, &message)
        && req.method == "tools/call"
        && let Ok(call) = req.tool_call()
    {
        let tool = state.policies.tool(upstream.name.as_str(), call.name);
        let schema = tool
            .as_ref()
            .and_then(|t| t.definition.as_ref())
            .and_then(|d| d.get("inputSchema"))
            .cloned();
        if let Err(e) =
            warden_gateway::wire::check_param_headers(call.name, schema.as_ref(), call.arguments, headers)
        {
            return wire_refused(message.id(), e);
        }
        route.tool_schema = schema;
    }
    // Translated to the 2026-07-28 wire: `Mcp-Param-*` derived from the arguments by the schema.
    if matches!(translation, revisions::Translation::ToModern)
        && let Message::Request(req) = &message
        && req.method == "tools/call"
        && let Ok(call) = req.tool_call()
    {
        route.tool_schema = state
            .policies
            .tool(upstream.name.as_str(), call.name)
            .as_ref()
            .and_then(|t| t.definition.as_ref())
            .and_then(|d| d.get("inputSchema"))
            .cloned();
    }
    let planned = inbound::classify(
        &state,
        &caller,
        &upstream,
        session.as_deref(),
        message,
        request_id.clone(),
    );
    let inbound::Planned {
        question,
        mut facts,
        reply_to,
        action,
    } = planned;
    let (message, mut post) = match action {
        Ok(a) => a,
        Err(r) => {
            let v = crate::pipeline::refusal(&state, &caller, &question, facts, r.reason, started);
            return match crate::pipeline::commit(&state, v, gw.take_results()).await {
                Ruling::Refused(refused) => relay::refused_answer(&refused, reply_to.as_ref(), Some(r.code)),
                // A refusal is never an allow; the arm exists for the type.
                Ruling::Cleared(..) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
            };
        }
    };
    // The retry of a call that waited for approval, with Warden's request state: checked, spent
    // and held while the approval is pending; a bad one is refused before policy, recorded.
    if let Some(ask) = &ask
        && let Some(presented) = &ask.presented
    {
        match input_required::redeem(&state, &caller, &upstream, ask, presented).await {
            Ok(r) => {
                facts.body.insert(
                    "request_state".into(),
                    serde_json::json!({"id": r.jti, "approval": r.approval}),
                );
            }
            Err(refusal) => {
                let v = crate::pipeline::refusal(&state, &caller, &question, facts, refusal.reason, started);
                return match crate::pipeline::commit(&state, v, gw.take_results()).await {
                    Ruling::Refused(r) => relay::refused_answer(&r, reply_to.as_ref(), Some(refusal.code)),
                    // A refusal is never an allow; the arm exists for the type.
                    Ruling::Cleared(..) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
                };
            }
        }
    }
    if let (revisions::Translation::ToLegacy(_), Some(p)) = (&translation, post.as_mut()) {
        p.to_modern = true;
    }
    let verdict = crate::pipeline::decide(&state, &caller, question, facts, started).await;
    match crate::pipeline::commit(&state, verdict, gw.take_results()).await {
        Ruling::Cleared(cleared, _) => {
            let clearance = Clearance::new(cleared, Outgoing::Message(message), post);
            revisions::forward(state, caller, upstream, route, clearance, translation, request_id).await
        }
        Ruling::Refused(r) => {
            input_required::answer(&state, &caller, &upstream, ask.as_ref(), &r, reply_to.as_ref())
        }
    }
}

/// The request-metadata headers of a message on the 2026-07-28 wire (`None`: an earlier revision),
/// checked against the body. A message is on that wire when its `MCP-Protocol-Version` says so or
/// its `_meta` declares a protocol version (which an earlier revision's message never does).
#[expect(
    clippy::result_large_err,
    reason = "the error is the response itself, built once on the refusal path"
)]
fn modern_wire(
    headers: &HeaderMap,
    message: &Message,
) -> Result<Option<warden_gateway::wire::MetaHeaders>, Response> {
    use warden_gateway::wire;
    let by_header = headers
        .get(wire::PROTOCOL_VERSION_HEADER)
        .and_then(|v| v.to_str().ok())
        .is_some_and(wire::is_modern);
    if !by_header && wire::declared_version(message).is_none() {
        return Ok(None);
    }
    let meta = wire::MetaHeaders::read(headers.iter().map(|(n, v)| (n.as_str(), v.as_bytes())))
        .and_then(|h| wire::check_request(&h, message).map(|_| h));
    match meta {
        Ok(h) => Ok(Some(h)),
        Err(e) => Err(wire_refused(message.id(), e)),
    }
}

/// The refusal of a message on the 2026-07-28 wire: 400 (404 for a removed method) with the
/// JSON-RPC error, recorded by the audit layer.
fn wire_refused(id: Option<&Id>, e: warden_gateway::wire::WireError) -> Response {
    let status = StatusCode::from_u16(e.http_status()).unwrap_or(StatusCode::BAD_REQUEST);
    let code = match e.code {
        jsonrpc::HEADER_MISMATCH => "header_mismatch",
        jsonrpc::UNSUPPORTED_PROTOCOL_VERSION => "unsupported_protocol_version",
        jsonrpc::METHOD_NOT_FOUND => "method_not_found",
        _ => "invalid_request",
    };
    let message = e.message.clone();
    let mut resp = refused_with(status, id, e.code, e.message, e.data);
    resp.extensions_mut().insert(crate::audit::Refusal {
        status: status.as_u16(),
        code,
        message,
    });
    resp
}

/// `GET` and `DELETE` do not exist on the 2026-07-28 wire (no standing stream, no session): 405.
#[expect(
    clippy::result_large_err,
    reason = "the error is the response itself, built once on the refusal path"
)]
fn no_modern_http(headers: &HeaderMap, what: &str) -> Result<(), Response> {
    let modern = headers
        .get(warden_gateway::wire::PROTOCOL_VERSION_HEADER)
        .and_then(|v| v.to_str().ok())
        .is_some_and(warden_gateway::wire::is_modern);
    if modern {
        return Err(refused(
            StatusCode::METHOD_NOT_ALLOWED,
            None,
            jsonrpc::INVALID_REQUEST,
            format!("MCP 2026-07-28 has no {what}"),
        ));
    }
    Ok(())
}

/// The decision on opening a stream or ending a session (`GET`, `DELETE`): a read of the
/// upstream, recorded. `Err`: the answer refusing it.
async fn decide_http(
    state: &AppState,
    caller: &TaskCaller,
    upstream: &Upstream,
    method: &str,
    headers: &HeaderMap,
    started: Instant,
) -> Result<crate::pipeline::Cleared, Response> {
    let (question, facts) = inbound::upstream_read(upstream, method, McpKind::Stream, request_id(headers));
    let verdict = crate::pipeline::decide(state, caller, question, facts, started).await;
    match crate::pipeline::commit(state, verdict, state.gateway.take_results()).await {
        Ruling::Cleared(c, _) => Ok(c),
        Ruling::Refused(r) => Err(relay::refused_answer(&r, None, None)),
    }
}

/// `GET /mcp/{upstream}`: the server's own stream (notifications and requests to the client), or
/// the resumption of an interrupted one (`Last-Event-ID`), relayed through the outbound filter
/// while the task is live.
pub async fn get(State(state): State<AppState>, Path(name): Path<String>, request: Request) -> Response {
    let started = Instant::now();
    let (mut parts, _) = request.into_parts();
    if let Err(resp) = no_modern_http(&parts.headers, "GET stream: open one with `subscriptions/listen`") {
        return resp;
    }
    let (caller, upstream, session) = match admit(&state, &name, &mut parts).await {
        Ok(a) => a,
        Err(resp) => return resp,
    };
    // A resume only with an event id Warden handed out: the seal says how to filter the replay.
    let resume = match parts.headers.get("last-event-id") {
        None => None,
        Some(raw) => {
            let opened = raw.to_str().ok().and_then(|raw| {
                state
                    .gateway
                    .keys
                    .open_event(raw, caller.task.id, upstream.name.as_str())
            });
            match opened {
                Some(r) => Some(r),
                None => {
                    return refused(
                        StatusCode::BAD_REQUEST,
                        None,
                        jsonrpc::INVALID_REQUEST,
                        "Last-Event-ID is not an event id Warden handed out for this task and upstream; the stream cannot be resumed (open a new one)".to_owned(),
                    );
                }
            }
        }
    };
    if session
        .as_deref()
        .and_then(revisions::translated_session)
        .is_some()
    {
        return refused(
            StatusCode::METHOD_NOT_ALLOWED,
            None,
            jsonrpc::INVALID_REQUEST,
            format!(
                "upstream `{}` speaks only MCP 2026-07-28, translated by Warden for this session: the GET stream is not translated (its notifications come on `subscriptions/listen`, which a 2025 client does not send)",
                upstream.name
            ),
        );
    }
    let method = if resume.is_some() {
        "stream/resume"
    } else {
        "stream/open"
    };
    let cleared = match decide_http(&state, &caller, &upstream, method, &parts.headers, started).await {
        Ok(c) => c,
        Err(resp) => return resp,
    };
    let (last_event_id, post) = match resume {
        Some((event, post)) => (Some(event), post),
        None => (None, None),
    };
    if is_stdio(&upstream) {
        let Some(events) = session.as_deref().and_then(|k| {
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
        let key = session.unwrap_or_default();
        let scrubber = streams::stdio_scrubber(&state, &key);
        let filter = Outbound::new(state.clone(), caller, upstream, &scrubber, None, Some(key));
        return streams::stdio_stream(events, filter);
    }
    let route = Route::new(&parts.headers, session);
    let clearance = Clearance::new(cleared, Outgoing::OpenStream { last_event_id }, None);
    match relay::send(&state, &caller, &upstream, &route, &clearance).await {
        Ok(relay::Sent::Http { resp, injected }) => {
            let filter = Outbound::new(state.clone(), caller, upstream, &injected, post, route.session);
            relay::http_answer(resp, filter).await
        }
        Ok(relay::Sent::Stdio { .. }) => StatusCode::METHOD_NOT_ALLOWED.into_response(),
        Err(e) => relay::upstream_failed(None, &e),
    }
}

/// `DELETE /mcp/{upstream}`: ends the session at the upstream.
pub async fn delete(State(state): State<AppState>, Path(name): Path<String>, request: Request) -> Response {
    let started = Instant::now();
    let (mut parts, _) = request.into_parts();
    if let Err(resp) = no_modern_http(&parts.headers, "sessions to end with DELETE") {
        return resp;
    }
    let (caller, upstream, session) = match admit(&state, &name, &mut parts).await {
        Ok(a) => a,
        Err(resp) => return resp,
    };
    let Some(session) = session else {
        return refused(
            StatusCode::BAD_REQUEST,
            None,
            jsonrpc::INVALID_REQUEST,
            "DELETE needs the Mcp-Session-Id header".to_owned(),
        );
    };
    let cleared = match decide_http(
        &state,
        &caller,
        &upstream,
        "session/delete",
        &parts.headers,
        started,
    )
    .await
    {
        Ok(c) => c,
        Err(resp) => return resp,
    };
    let gw = state.gateway.clone();
    // A session Warden answered itself: nothing at the upstream to end.
    if revisions::translated_session(&session).is_some() {
        return StatusCode::NO_CONTENT.into_response();
    }
    if is_stdio(&upstream) {
        return if gw.stdio.knows(&session, caller.task.id, upstream.name.as_str()) && gw.stdio.end(&session) {
            StatusCode::NO_CONTENT.into_response()
        } else {
            StatusCode::NOT_FOUND.into_response()
        };
    }
    let route = Route::new(&parts.headers, Some(session));
    let clearance = Clearance::new(cleared, Outgoing::EndSession, None);
    match relay::send(&state, &caller, &upstream, &route, &clearance).await {
        Ok(relay::Sent::Http { resp, .. }) => resp.status().into_response(),
        Ok(relay::Sent::Stdio { .. }) => StatusCode::METHOD_NOT_ALLOWED.into_response(),
        Err(e) => relay::upstream_failed(None, &e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, v.parse().expect("header value"));
        }
        h
    }

    /// Regression (issue 15): `text/plain` was accepted on `/mcp`, and any `MCP-Protocol-Version`
    /// was forwarded to the upstream as the agent wrote it.
    #[test]
    fn messages_need_json_and_a_known_protocol_version() {
        for ok in [
            "application/json",
            "application/json; charset=utf-8",
            "Application/JSON",
        ] {
            assert!(
                check_content_type(&headers(&[("content-type", ok)])).is_ok(),
                "{ok}"
            );
        }
        for bad in [
            "text/plain",
            "application/x-www-form-urlencoded",
            "application/jsonx",
        ] {
            let r = check_content_type(&headers(&[("content-type", bad)])).expect_err(bad);
            assert_eq!(r.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
        }
        assert!(check_content_type(&HeaderMap::new()).is_err(), "no content type");
        assert!(
            check_protocol_version(&HeaderMap::new()).is_ok(),
            "absent: the client's choice"
        );
        for v in PROTOCOL_VERSIONS {
            assert!(
                check_protocol_version(&headers(&[("mcp-protocol-version", v)])).is_ok(),
                "{v}"
            );
        }
        for bad in ["2099-01-01", "2024-13-45", "x"] {
            let r = check_protocol_version(&headers(&[("mcp-protocol-version", bad)])).expect_err(bad);
            assert_eq!(r.status(), StatusCode::BAD_REQUEST);
        }
    }

    /// Whether [`foreign_origin`] lets these headers through, for a Warden at
    /// `https://warden.example.com`.
    fn check(pairs: &[(&'static str, &str)], allowed_origins: &[&str], allowed_hosts: &[&str]) -> bool {
        let settings = GatewaySettings {
            allowed_origins: allowed_origins.iter().map(|s| (*s).to_owned()).collect(),
            allowed_hosts: allowed_hosts.iter().map(|s| (*s).to_owned()).collect(),
            ..GatewaySettings::default()
        };
        foreign_origin("https://warden.example.com", &settings, &headers(pairs)).is_none()
    }

    #[test]
    fn origins_and_hosts_are_checked_against_dns_rebinding() {
        // No Origin (a non-browser client) and no Host (HTTP/2 without :authority) pass.
        assert!(check(&[], &[], &[]));
        for ok in [
            "https://warden.example.com",
            "http://localhost:3000",
            "http://127.0.0.1:8700",
            "http://[::1]:8700",
        ] {
            assert!(check(&[("origin", ok)], &[], &[]), "{ok}");
        }
        for bad in [
            "http://evil.example",
            "https://warden.example.com.evil.example",
            "null",
            "http://warden.example.com",
        ] {
            assert!(!check(&[("origin", bad)], &[], &[]), "{bad}");
        }
        assert!(check(
            &[("origin", "https://console.example.com")],
            &["https://console.example.com"],
            &[]
        ));
        for ok in [
            "warden.example.com",
            "WARDEN.example.com:443",
            "localhost:8700",
            "127.0.0.1",
            "[::1]:9",
        ] {
            assert!(check(&[("host", ok)], &[], &[]), "{ok}");
        }
        for bad in [
            "evil.example",
            "warden.example.com:8443",
            "127.0.0.2.evil.example",
        ] {
            assert!(!check(&[("host", bad)], &[], &[]), "{bad}");
        }
        assert!(check(
            &[("host", "mcp.internal:8700")],
            &[],
            &["mcp.internal:8700"]
        ));
    }
}
