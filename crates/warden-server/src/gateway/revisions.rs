//! Translation between MCP revisions: each leg (agent ↔ Warden, Warden ↔ upstream) speaks its own
//! revision, and Warden translates where the semantics allow.
//!
//! **Learning an upstream's revision.** Warden's own `server/discover` at 2026-07-28 — decided and
//! recorded like every message (`initiator: warden`), sent only with its clearance, its answer
//! filtered — then, by the rules of 2026-07-28 (Versioning, "Backward Compatibility"): a
//! `DiscoverResult` naming 2026-07-28 means modern; anything else but a transport failure or a
//! refusal of Warden's credentials (an HTTP 4xx, a JSON-RPC error, garbage) means the upstream
//! speaks the `initialize` handshake. Cached per upstream on each node for [`LEARNED_TTL`], and
//! learned again when a translated message fails.
//!
//! **A 2026-07-28 agent to a 2025 upstream** ([`Translation::ToLegacy`]). Warden holds an upstream
//! session per (task, upstream) on this node: its own `initialize` (the agent's capabilities as far
//! as Warden can carry them, [`carried_capabilities`]) and `notifications/initialized`, each decided
//! and recorded. Each request leaves without the 2026-07-28 envelope (`_meta`
//! protocol version, client capabilities and info, log level), in the held session, at the
//! negotiated revision. An upstream that forgot the session (404) gets a new one and the same
//! decided message once more. `server/discover` is answered by Warden from the held session's
//! `initialize` result (through the outbound filter). `subscriptions/listen` is refused precisely.
//!
//! **A 2025 agent to a 2026-07-28 upstream** ([`Translation::ToModern`]). The agent's `initialize`
//! is sent as it is first (an upstream that speaks both keeps every 2025 feature); when the upstream
//! refuses it and its `server/discover` names 2026-07-28, Warden answers the `initialize` itself
//! from that result and hands the agent a session of its own (sealed like every session, marked
//! translated). Each later request goes out in the 2026-07-28 form: the `_meta` envelope (the
//! revision, the capabilities Warden carries), `Mcp-Method`/`Mcp-Name`/`Mcp-Param-*` derived from
//! the decided body. `ping` and `notifications/initialized` are answered by Warden (after their
//! decision); what 2026-07-28 removed (`logging/setLevel`, `resources/subscribe`, …), other client
//! notifications and the `GET` stream are refused precisely.
//!
//! Every message of either direction — the agent's and Warden's own — is decided by the one
//! pipeline and sent only with its [`Clearance`]; every answer, including the ones Warden builds,
//! passes the one outbound filter.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};
use uuid::Uuid;
use warden_core::Upstream;
use warden_gateway::jsonrpc::{self, Id, Message};
use warden_gateway::wire;
use warden_policy::McpKind;

use super::clearance::{After, Clearance, Outgoing, Post};
use super::outbound::Outbound;
use super::relay::{self, Sent};
use super::upstream::UpstreamError;
use super::{Route, SESSION_HEADER, is_stdio};
use crate::AppState;
use crate::pipeline::Ruling;
use crate::tasks::TaskCaller;

/// How long a learned revision is used before it is learned again.
pub const LEARNED_TTL: Duration = Duration::from_secs(600);
/// How long a held upstream session is kept without use.
pub const HELD_IDLE: Duration = Duration::from_secs(1800);
/// Most upstreams / held sessions remembered on a node.
const MAX_REMEMBERED: usize = 10_000;
/// Most bytes of client capabilities carried in a translated session.
const MAX_CARRIED_CAPABILITIES: usize = 1024;
/// The 2025 revision Warden proposes in its own `initialize`.
const LEGACY_VERSION: &str = "2025-11-25";
/// The 2025 revisions Warden translates.
const LEGACY_VERSIONS: [&str; 2] = ["2025-06-18", "2025-11-25"];
/// The 2026-07-28 revision.
const MODERN: &str = wire::MODERN_PROTOCOL_VERSIONS[0];
/// `_meta` members of the 2026-07-28 envelope, which a 2025 upstream does not know.
const ENVELOPE: [&str; 4] = [
    wire::META_PROTOCOL_VERSION,
    wire::META_CLIENT_CAPABILITIES,
    wire::META_CLIENT_INFO,
    "io.modelcontextprotocol/logLevel",
];
/// The start of the upstream session inside a sealed session Warden answered itself (a 2025
/// agent to a 2026-07-28 upstream). It holds a space, which no MCP session id does.
pub const TRANSLATED: &str = "translated to 2026-07-28 ";

/// What an upstream speaks.
#[derive(Debug, Clone)]
pub enum Era {
    /// It answered `server/discover` naming 2026-07-28: that (filtered) result. `refuses_initialize`:
    /// it also refused an agent's `initialize`.
    Modern {
        discover: Value,
        refuses_initialize: bool,
    },
    /// It speaks the `initialize` handshake only.
    Legacy,
}

/// A session Warden holds at a 2025 upstream for one task.
#[derive(Debug, Clone)]
pub struct Held {
    /// The upstream's `Mcp-Session-Id` (empty: the upstream keeps no sessions).
    pub session: String,
    /// The negotiated revision.
    pub version: String,
    /// The upstream's (filtered) `initialize` result.
    pub result: Value,
}

/// The revisions learned and the sessions held on this node.
#[derive(Debug, Default)]
pub struct Revisions {
    learned: Mutex<HashMap<String, (Instant, Era)>>,
    held: Mutex<HashMap<(Uuid, String), (Instant, Held)>>,
    locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

impl Revisions {
    fn cached(&self, upstream: &str) -> Option<Era> {
        let m = self.learned.lock().ok()?;
        let (at, era) = m.get(upstream)?;
        (at.elapsed() < LEARNED_TTL).then(|| era.clone())
    }

    fn remember(&self, upstream: &str, era: Era) {
        if let Ok(mut m) = self.learned.lock() {
            if m.len() >= MAX_REMEMBERED {
                m.retain(|_, (at, _)| at.elapsed() < LEARNED_TTL);
                if m.len() >= MAX_REMEMBERED {
                    m.clear();
                }
            }
            m.insert(upstream.to_owned(), (Instant::now(), era));
        }
    }

    /// Forgets what `upstream` speaks (it is learned again on its next message).
    pub fn forget(&self, upstream: &str) {
        if let Ok(mut m) = self.learned.lock() {
            m.remove(upstream);
        }
    }

    fn held(&self, task: Uuid, upstream: &str) -> Option<Held> {
        let mut m = self.held.lock().ok()?;
        let key = (task, upstream.to_owned());
        match m.get_mut(&key) {
            Some((at, h)) if at.elapsed() < HELD_IDLE => {
                *at = Instant::now();
                Some(h.clone())
            }
            Some(_) => {
                m.remove(&key);
                None
            }
            None => None,
        }
    }

    fn hold(&self, task: Uuid, upstream: &str, held: Held) {
        if let Ok(mut m) = self.held.lock() {
            if m.len() >= MAX_REMEMBERED {
                m.retain(|_, (at, _)| at.elapsed() < HELD_IDLE);
                if m.len() >= MAX_REMEMBERED {
                    m.clear();
                }
            }
            m.insert((task, upstream.to_owned()), (Instant::now(), held));
        }
    }

    /// Drops the session held for `task` at `upstream` (the upstream forgot it).
    pub fn release(&self, task: Uuid, upstream: &str) {
        if let Ok(mut m) = self.held.lock() {
            m.remove(&(task, upstream.to_owned()));
        }
    }

    fn lock(&self, key: String) -> Arc<tokio::sync::Mutex<()>> {
        match self.locks.lock() {
            Ok(mut m) => {
                if m.len() >= MAX_REMEMBERED {
                    m.retain(|_, l| Arc::strong_count(l) > 1);
                }
                m.entry(key).or_default().clone()
            }
            Err(_) => Arc::default(),
        }
    }
}

/// Whether `s` could be an MCP session id (visible ASCII, 0x21–0x7E, at most 1024 bytes).
pub fn visible_ascii(s: &str) -> bool {
    s.len() <= 1024 && s.bytes().all(|b| (0x21..=0x7e).contains(&b))
}

/// How one message crosses revisions.
#[derive(Debug)]
pub(super) enum Translation {
    /// Both legs speak the same revision.
    None,
    /// A 2026-07-28 agent, a 2025 upstream: in the session Warden holds.
    ToLegacy(Held),
    /// A 2025 agent in a session Warden answered itself, a 2026-07-28 upstream.
    ToModern,
    /// A 2025 agent's `initialize`: sent as it is; refused, Warden answers it from `server/discover`.
    Initialize { version: String, capabilities: Value },
    /// A 2025 agent's `initialize` to an upstream known to refuse it: Warden answers it.
    AnswerInitialize {
        version: String,
        capabilities: Value,
        discover: Value,
    },
}

/// What [`plan`] settled: the message to classify, where it goes, how it was translated, and the
/// session the agent's message arrived in (as classification sees it).
#[derive(Debug)]
pub(super) struct Plan {
    pub message: Message,
    pub route: Route,
    pub translation: Translation,
    pub session: Option<String>,
}

/// The client capabilities Warden carries across revisions: `experimental` only, when small.
/// `sampling`, `elicitation` and `roots` need requests from the server that Warden does not
/// translate between the 2025 stream and 2026-07-28 `input_required` results, `tasks` and
/// `extensions` change what answers mean; none of them is declared on the agent's behalf.
pub fn carried_capabilities(caps: Option<&Value>) -> Value {
    let mut out = Map::new();
    if let Some(e) = caps.and_then(|c| c.get("experimental")).filter(|e| e.is_object())
        && e.to_string().len() <= MAX_CARRIED_CAPABILITIES
    {
        out.insert("experimental".into(), e.clone());
    }
    Value::Object(out)
}

/// The server capabilities that survive translation: tools, prompts, resources, completions and
/// `experimental`, without `listChanged` and `subscribe` (change notifications and resource
/// subscriptions are not translated), without `logging` (its level is not translated) and without
/// `tasks` and `extensions`.
pub fn translated_server_capabilities(caps: Option<&Value>) -> Value {
    let mut out = Map::new();
    let Some(Value::Object(caps)) = caps else {
        return Value::Object(out);
    };
    for key in ["tools", "prompts", "resources", "completions"] {
        if let Some(Value::Object(c)) = caps.get(key) {
            let mut c = c.clone();
            c.remove("listChanged");
            c.remove("subscribe");
            out.insert(key.into(), Value::Object(c));
        }
    }
    if let Some(e) = caps.get("experimental").filter(|e| e.is_object()) {
        out.insert("experimental".into(), e.clone());
    }
    Value::Object(out)
}

/// Removes the 2026-07-28 envelope from a request's `_meta` (a 2025 upstream does not know it).
pub fn strip_envelope(params: &mut Option<Map<String, Value>>) {
    if let Some(p) = params.as_mut()
        && let Some(Value::Object(meta)) = p.get_mut("_meta")
    {
        for k in ENVELOPE {
            meta.remove(k);
        }
        if meta.is_empty() {
            p.remove("_meta");
        }
    }
}

/// Puts Warden's 2026-07-28 envelope into a request's `_meta` (replacing any the agent wrote).
pub fn add_envelope(params: &mut Option<Map<String, Value>>, capabilities: &Value) {
    let p = params.get_or_insert_with(Map::new);
    let meta = p.entry("_meta").or_insert_with(|| Value::Object(Map::new()));
    if !meta.is_object() {
        *meta = Value::Object(Map::new());
    }
    if let Value::Object(meta) = meta {
        meta.insert(wire::META_PROTOCOL_VERSION.into(), MODERN.into());
        meta.insert(wire::META_CLIENT_CAPABILITIES.into(), capabilities.clone());
        meta.insert(
            wire::META_CLIENT_INFO.into(),
            json!({"name": "warden", "version": env!("CARGO_PKG_VERSION")}),
        );
    }
}

/// The revision and carried capabilities of a translated session (`None`: not one).
pub fn translated_session(session: &str) -> Option<(String, Value)> {
    let v: Value = serde_json::from_str(session.strip_prefix(TRANSLATED)?).ok()?;
    let version = v["v"]
        .as_str()
        .filter(|v| LEGACY_VERSIONS.contains(v))?
        .to_owned();
    Some((version, carried_capabilities(Some(&v["c"]))))
}

fn translated_session_id(version: &str, capabilities: &Value) -> String {
    format!("{TRANSLATED}{}", json!({"v": version, "c": capabilities}))
}

/// The refusal of a message Warden cannot translate: recorded through the pipeline (before
/// policy), answered with `code` and a message naming the feature.
#[expect(clippy::too_many_arguments, reason = "the parts of one refusal")]
pub(super) async fn untranslatable(
    state: &AppState,
    caller: &TaskCaller,
    upstream: &Upstream,
    message: &Message,
    request_id: Option<String>,
    reason: String,
    code: i64,
    started: Instant,
) -> Response {
    let kind = match message {
        Message::Request(_) => McpKind::Request,
        Message::Notification(_) => McpKind::Notification,
        _ => McpKind::Response,
    };
    let method = message.method().unwrap_or("");
    let (q, mut facts) = super::inbound::upstream_read(upstream, method, kind, request_id);
    facts.body.insert("translation".into(), "refused".into());
    let v = crate::pipeline::refusal(state, caller, &q, facts, reason, started);
    let reply_to = match message {
        Message::Request(r) => Some(r.id.clone()),
        _ => None,
    };
    match crate::pipeline::commit(state, v, state.gateway.take_results()).await {
        Ruling::Refused(r) => relay::refused_answer(&r, reply_to.as_ref(), Some(code)),
        // A refusal is never an allow; the arm exists for the type.
        Ruling::Cleared(..) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

/// Settles how the agent's message crosses to `upstream`. `Err`: the answer (a refusal, or a
/// failure learning the upstream's revision).
#[expect(clippy::too_many_arguments, reason = "the parts of one POST")]
pub(super) async fn plan(
    state: &AppState,
    caller: &Arc<TaskCaller>,
    upstream: &Arc<Upstream>,
    headers: &HeaderMap,
    modern: bool,
    session: Option<String>,
    message: Message,
    request_id: Option<String>,
    started: Instant,
) -> Result<Plan, Response> {
    let same = |message, session: Option<String>| Plan {
        message,
        route: Route::new(headers, session.clone()),
        translation: Translation::None,
        session,
    };
    if is_stdio(upstream) {
        return Ok(same(message, session));
    }
    let name = upstream.name.as_str();
    if modern {
        // A 2026-07-28 agent: the upstream's revision decides.
        if let Era::Modern { .. } =
            learn(state, caller, upstream, request_id.clone(), message.id(), false).await?
        {
            return Ok(same(message, None));
        }
        let Message::Request(mut req) = message else {
            // The 2026-07-28 wire carries requests only (checked before this).
            return Ok(same(message, None));
        };
        if req.method == "subscriptions/listen" {
            let m = Message::Request(req);
            return Err(untranslatable(
                state,
                caller,
                upstream,
                &m,
                request_id,
                format!(
                    "not-translated: `subscriptions/listen` cannot be translated for upstream `{name}`, which speaks only MCP 2025 (initialize and a session): its change notifications come on the session's GET stream, which Warden does not carry to a 2026-07-28 client; list again instead"
                ),
                jsonrpc::METHOD_NOT_FOUND,
                started,
            )
            .await);
        }
        let caps = req
            .params
            .as_ref()
            .and_then(|p| p.get("_meta"))
            .and_then(|m| m.get(wire::META_CLIENT_CAPABILITIES))
            .cloned();
        let held = hold(state, caller, upstream, caps.as_ref(), request_id, Some(&req.id)).await?;
        strip_envelope(&mut req.params);
        let route = Route::translated(Some(held.session.clone()), &held.version, false);
        return Ok(Plan {
            message: Message::Request(req),
            session: route.session.clone(),
            route,
            translation: Translation::ToLegacy(held),
        });
    }
    // A 2025 agent in a session Warden answered itself: the upstream speaks 2026-07-28.
    if let Some((version, caps)) = session.as_deref().and_then(translated_session) {
        let refuse = |why: String| format!("not-translated: {why}");
        let why = match &message {
            Message::Notification(n) if n.method == "notifications/initialized" => None,
            Message::Notification(n) => Some(refuse(format!(
                "`{}` cannot be translated for upstream `{name}`, which speaks only MCP 2026-07-28 (it takes no client notifications)",
                crate::ledger::clip_str(&n.method, 128).escape_debug()
            ))),
            Message::Request(r) if r.method == "ping" => None,
            Message::Request(r) if r.method == "initialize" => Some(refuse(format!(
                "this session is already initialized (MCP {version}, translated to 2026-07-28 for upstream `{name}`); initialize without an Mcp-Session-Id to start a new one"
            ))),
            Message::Request(r) => wire::removed(&r.method).map(|why| {
                refuse(format!(
                    "`{}` cannot be translated for upstream `{name}`, which speaks only MCP 2026-07-28: {why}",
                    r.method
                ))
            }),
            Message::Response(_) | Message::Error(_) => Some(refuse(format!(
                "upstream `{name}` speaks only MCP 2026-07-28, whose servers send no requests to answer"
            ))),
        };
        if let Some(why) = why {
            let code = if matches!(message, Message::Request(_)) {
                jsonrpc::METHOD_NOT_FOUND
            } else {
                jsonrpc::INVALID_REQUEST
            };
            return Err(
                untranslatable(state, caller, upstream, &message, request_id, why, code, started).await,
            );
        }
        let mut message = message;
        if let Message::Request(r) = &mut message
            && r.method != "ping"
        {
            add_envelope(&mut r.params, &caps);
        }
        return Ok(Plan {
            message,
            route: Route::translated(None, MODERN, true),
            translation: Translation::ToModern,
            session,
        });
    }
    // A 2025 agent's `initialize`.
    if session.is_none()
        && let Message::Request(r) = &message
        && r.method == "initialize"
    {
        let param = |k: &str| r.params.as_ref().and_then(|p| p.get(k));
        let version = param("protocolVersion")
            .and_then(Value::as_str)
            .filter(|v| LEGACY_VERSIONS.contains(v))
            .unwrap_or(LEGACY_VERSION)
            .to_owned();
        let capabilities = carried_capabilities(param("capabilities"));
        let translation = match state.gateway.revisions.cached(name) {
            Some(Era::Modern {
                discover,
                refuses_initialize: true,
            }) => Translation::AnswerInitialize {
                version,
                capabilities,
                discover,
            },
            _ => Translation::Initialize {
                version,
                capabilities,
            },
        };
        return Ok(Plan {
            route: Route::new(headers, None),
            message,
            translation,
            session: None,
        });
    }
    Ok(same(message, session))
}

/// What `upstream` speaks: cached, else learned by Warden's own `server/discover` (`force`: learned
/// again). `Err`: the agent's answer (Warden's discover refused, or the upstream unreachable).
pub(super) async fn learn(
    state: &AppState,
    caller: &Arc<TaskCaller>,
    upstream: &Arc<Upstream>,
    request_id: Option<String>,
    reply_to: Option<&Id>,
    force: bool,
) -> Result<Era, Response> {
    let name = upstream.name.as_str();
    let revisions = &state.gateway.revisions;
    if !force && let Some(era) = revisions.cached(name) {
        return Ok(era);
    }
    let lock = revisions.lock(format!("learn {name}"));
    let _one_at_a_time = lock.lock().await;
    if !force && let Some(era) = revisions.cached(name) {
        return Ok(era);
    }
    // An upstream may refuse a first request's revision (-32022) to make the client choose again
    // from what it supports: one more discover when that list names 2026-07-28.
    let mut era = discover_once(state, caller, upstream, request_id.clone(), reply_to, force).await;
    if let Err(Retry::Modern) = era {
        era = discover_once(state, caller, upstream, request_id, reply_to, force).await;
    }
    let era = match era {
        Ok(era) | Err(Retry::Settled(era)) => era,
        Err(Retry::Modern) => Era::Legacy,
        Err(Retry::Answer(resp)) => return Err(resp),
    };
    tracing::info!(upstream = %name, modern = matches!(era, Era::Modern { .. }), "learned the upstream's MCP revision");
    revisions.remember(name, era.clone());
    Ok(era)
}

/// Why one discover did not settle the revision.
enum Retry {
    /// The upstream refused the revision but supports 2026-07-28: ask again.
    Modern,
    /// Settled without a discover result.
    Settled(Era),
    /// The agent's answer (Warden's discover refused, or the upstream unreachable).
    Answer(Response),
}

/// One `server/discover` of Warden's, decided and recorded.
async fn discover_once(
    state: &AppState,
    caller: &Arc<TaskCaller>,
    upstream: &Arc<Upstream>,
    request_id: Option<String>,
    reply_to: Option<&Id>,
    force: bool,
) -> Result<Era, Retry> {
    let started = Instant::now();
    let id = Id::String(format!("warden-discover-{}", Uuid::new_v4()));
    let (question, mut facts) =
        super::inbound::upstream_read(upstream, "server/discover", McpKind::Request, request_id);
    facts.body.insert("initiator".into(), "warden".into());
    facts
        .body
        .insert("purpose".into(), "learn the upstream's MCP revision".into());
    let verdict = crate::pipeline::decide(state, caller, question, facts, started).await;
    let cleared = match crate::pipeline::commit(state, verdict, state.gateway.take_results()).await {
        Ruling::Cleared(c, _) => c,
        Ruling::Refused(r) => return Err(Retry::Answer(relay::refused_answer(&r, reply_to, None))),
    };
    let route = Route::translated(None, MODERN, true);
    let msg = Message::Request(jsonrpc::Request {
        id: id.clone(),
        method: "server/discover".into(),
        params: route.own_params(None),
    });
    let post = own_post(id, "server/discover");
    let clearance = Clearance::new(cleared, Outgoing::Message(msg), Some(post));
    match relay::fetch(state, caller, upstream, &route, clearance).await {
        Ok(Message::Response(r))
            if r.result["supportedVersions"]
                .as_array()
                .is_some_and(|v| v.iter().any(|v| v.as_str() == Some(MODERN))) =>
        {
            Ok(Era::Modern {
                discover: r.result,
                refuses_initialize: force,
            })
        }
        Err(UpstreamError::VersionRefused { supported, .. }) if supported.iter().any(|v| v == MODERN) => {
            Err(Retry::Modern)
        }
        Ok(_)
        | Err(
            UpstreamError::Protocol(_) | UpstreamError::TooLarge(_) | UpstreamError::VersionRefused { .. },
        ) => Err(Retry::Settled(Era::Legacy)),
        Err(UpstreamError::Http { status, .. }) if status != 401 && status != 403 => {
            Err(Retry::Settled(Era::Legacy))
        }
        Err(e) => Err(Retry::Answer(relay::upstream_failed(reply_to, &e))),
    }
}

fn own_post(id: Id, method: &str) -> Post {
    Post {
        id,
        method: method.into(),
        after: After::Nothing,
        tool: None,
        sent: Instant::now(),
        to_modern: false,
    }
}

/// Results 2026-07-28 makes cacheable (`ttlMs` and `cacheScope` required).
const CACHEABLE: [&str; 6] = [
    "server/discover",
    "tools/list",
    "prompts/list",
    "resources/list",
    "resources/templates/list",
    "resources/read",
];

/// A 2025 upstream's result to `method` as a 2026-07-28 client reads it: `resultType` (complete)
/// and, on cacheable results, `ttlMs` 0 and `cacheScope` private (immediately stale, never shared)
/// where the upstream sent none.
pub fn modern_result(method: &str, result: &mut Value) {
    let Value::Object(r) = result else { return };
    r.entry("resultType").or_insert_with(|| "complete".into());
    if CACHEABLE.contains(&method) {
        r.entry("ttlMs").or_insert_with(|| 0.into());
        r.entry("cacheScope").or_insert_with(|| "private".into());
    }
}

/// The session Warden holds for this task at a 2025 upstream, opened when there is none: Warden's
/// own `initialize` and `notifications/initialized`, each decided and recorded.
async fn hold(
    state: &AppState,
    caller: &Arc<TaskCaller>,
    upstream: &Arc<Upstream>,
    capabilities: Option<&Value>,
    request_id: Option<String>,
    reply_to: Option<&Id>,
) -> Result<Held, Response> {
    let name = upstream.name.as_str();
    let task = caller.task.id;
    let revisions = &state.gateway.revisions;
    if let Some(h) = revisions.held(task, name) {
        return Ok(h);
    }
    let lock = revisions.lock(format!("hold {task} {name}"));
    let _one_at_a_time = lock.lock().await;
    if let Some(h) = revisions.held(task, name) {
        return Ok(h);
    }
    let own = |method: &str, kind| {
        let (q, mut facts) = super::inbound::upstream_read(upstream, method, kind, request_id.clone());
        facts.body.insert("initiator".into(), "warden".into());
        facts.body.insert(
            "purpose".into(),
            "the upstream session Warden holds for a 2026-07-28 client".into(),
        );
        (q, facts)
    };
    let failed = |why: String| relay::upstream_failed(reply_to, &UpstreamError::Protocol(why));
    // `initialize`.
    let started = Instant::now();
    let (q, facts) = own("initialize", McpKind::Request);
    let verdict = crate::pipeline::decide(state, caller, q, facts, started).await;
    let cleared = match crate::pipeline::commit(state, verdict, state.gateway.take_results()).await {
        Ruling::Cleared(c, _) => c,
        Ruling::Refused(r) => return Err(relay::refused_answer(&r, reply_to, None)),
    };
    let id = Id::String(format!("warden-initialize-{}", Uuid::new_v4()));
    let mut params = Map::new();
    params.insert("protocolVersion".into(), LEGACY_VERSION.into());
    params.insert("capabilities".into(), carried_capabilities(capabilities));
    params.insert(
        "clientInfo".into(),
        json!({"name": "warden", "version": env!("CARGO_PKG_VERSION")}),
    );
    let msg = Message::Request(jsonrpc::Request {
        id: id.clone(),
        method: "initialize".into(),
        params: Some(params),
    });
    let route = Route::translated(None, LEGACY_VERSION, false);
    let clearance = Clearance::new(cleared, Outgoing::Message(msg), Some(own_post(id, "initialize")));
    let (answer, session) = match relay::fetch_in_session(state, caller, upstream, &route, clearance).await {
        Ok(a) => a,
        Err(e) => {
            revisions.forget(name);
            return Err(relay::upstream_failed(reply_to, &e));
        }
    };
    let result = match answer {
        Message::Response(r) => r.result,
        Message::Error(e) => {
            revisions.forget(name);
            return Err(failed(format!(
                "upstream `{name}` refused Warden's initialize ({}): {}",
                e.error.code,
                crate::ledger::clip_str(&e.error.message, 200)
            )));
        }
        _ => {
            return Err(failed(format!(
                "upstream `{name}` did not answer Warden's initialize"
            )));
        }
    };
    let Some(version) = result["protocolVersion"]
        .as_str()
        .filter(|v| LEGACY_VERSIONS.contains(v))
        .map(str::to_owned)
    else {
        return Err(relay::upstream_failed(
            reply_to,
            &UpstreamError::Protocol(format!(
                "upstream `{name}` negotiated MCP `{}`, which Warden does not translate to 2026-07-28 (it translates {})",
                crate::ledger::clip_str(result["protocolVersion"].as_str().unwrap_or("?"), 32).escape_debug(),
                LEGACY_VERSIONS.join(", ")
            )),
        ));
    };
    let session = session.unwrap_or_default();
    // `notifications/initialized`, in the new session.
    let started = Instant::now();
    let (q, facts) = own("notifications/initialized", McpKind::Notification);
    let verdict = crate::pipeline::decide(state, caller, q, facts, started).await;
    let cleared = match crate::pipeline::commit(state, verdict, state.gateway.take_results()).await {
        Ruling::Cleared(c, _) => c,
        Ruling::Refused(r) => return Err(relay::refused_answer(&r, reply_to, None)),
    };
    let note = Message::Notification(jsonrpc::Notification {
        method: "notifications/initialized".into(),
        params: None,
    });
    let route = Route::translated(Some(session.clone()), &version, false);
    let clearance = Clearance::new(cleared, Outgoing::Message(note), None);
    match relay::send(state, caller, upstream, &route, &clearance).await {
        Ok(Sent::Http { resp, .. }) if resp.status().is_success() => {}
        Ok(Sent::Http { resp, .. }) => {
            return Err(relay::upstream_failed(
                reply_to,
                &UpstreamError::Http {
                    upstream: name.to_owned(),
                    status: resp.status().as_u16(),
                },
            ));
        }
        Ok(Sent::Stdio { .. }) => return Err(failed("stdio upstreams are not translated".into())),
        Err(e) => return Err(relay::upstream_failed(reply_to, &e)),
    }
    let held = Held {
        session,
        version,
        result,
    };
    tracing::info!(upstream = %name, task = %task, version = %held.version, "holding an upstream session for a 2026-07-28 client");
    revisions.hold(task, name, held.clone());
    Ok(held)
}

/// Sends what `clearance` allows as `translation` says, and relays the answer (or answers itself
/// where Warden stands in for a revision's feature). Only ever after the message's decision.
pub(super) async fn forward(
    state: AppState,
    caller: Arc<TaskCaller>,
    upstream: Arc<Upstream>,
    mut route: Route,
    clearance: Clearance,
    translation: Translation,
    request_id: Option<String>,
) -> Response {
    let post = clearance.post().cloned();
    let method = clearance.method().unwrap_or("").to_owned();
    let name = upstream.name.to_string();
    match translation {
        Translation::None => relay::forward(state, caller, upstream, route, clearance).await,
        Translation::ToLegacy(held) => {
            if method == "server/discover" {
                let result = discover_from_initialize(&held.result);
                return answer_here(&state, &caller, &upstream, post, result, route.session.clone()).await;
            }
            let mut sent = relay::send(&state, &caller, &upstream, &route, &clearance).await;
            if let Ok(Sent::Http { resp, .. }) = &sent
                && resp.status() == StatusCode::NOT_FOUND
            {
                // The upstream forgot the session, so it did not take the message: a new session,
                // then the same decided message once more.
                state.gateway.revisions.release(caller.task.id, &name);
                let id = post.as_ref().map(|p| p.id.clone());
                let held = match hold(&state, &caller, &upstream, None, request_id, id.as_ref()).await {
                    Ok(h) => h,
                    Err(resp) => return resp,
                };
                route = Route::translated(Some(held.session.clone()), &held.version, false);
                sent = relay::send(&state, &caller, &upstream, &route, &clearance).await;
            }
            forget_on_refusal(&state, &name, &sent);
            relay::relay_sent(state, caller, upstream, route, post, false, sent).await
        }
        Translation::ToModern => {
            if method == "ping" {
                return answer_here(&state, &caller, &upstream, post, json!({}), None).await;
            }
            if method == "notifications/initialized" {
                return StatusCode::ACCEPTED.into_response();
            }
            let sent = relay::send(&state, &caller, &upstream, &route, &clearance).await;
            forget_on_refusal(&state, &name, &sent);
            relay::relay_sent(state, caller, upstream, route, post, false, sent).await
        }
        Translation::Initialize {
            version,
            capabilities,
        } => {
            let sent = relay::send(&state, &caller, &upstream, &route, &clearance).await;
            let refused = matches!(&sent, Ok(Sent::Http { resp, .. }) if refuses_handshake(resp.status()));
            if refused {
                let id = post.as_ref().map(|p| p.id.clone());
                if let Ok(Era::Modern { discover, .. }) =
                    learn(&state, &caller, &upstream, request_id, id.as_ref(), true).await
                {
                    return answer_initialize(
                        &state,
                        &caller,
                        &upstream,
                        post,
                        &version,
                        &capabilities,
                        &discover,
                    )
                    .await;
                }
            }
            relay::relay_sent(state, caller, upstream, route, post, true, sent).await
        }
        Translation::AnswerInitialize {
            version,
            capabilities,
            discover,
        } => {
            answer_initialize(
                &state,
                &caller,
                &upstream,
                post,
                &version,
                &capabilities,
                &discover,
            )
            .await
        }
    }
}

/// The statuses with which an upstream refuses a 2025 `initialize` it does not speak (2026-07-28:
/// a 400; some answer 404, 405, 406, 415 or 422).
fn refuses_handshake(status: StatusCode) -> bool {
    matches!(status.as_u16(), 400 | 404 | 405 | 406 | 415 | 422)
}

/// A translated message the upstream refused as malformed (400): what it speaks is learned again.
fn forget_on_refusal(state: &AppState, upstream: &str, sent: &Result<Sent, UpstreamError>) {
    if let Ok(Sent::Http { resp, .. }) = sent
        && resp.status() == StatusCode::BAD_REQUEST
    {
        state.gateway.revisions.forget(upstream);
    }
}

/// A 2026-07-28 `DiscoverResult` from a 2025 upstream's `initialize` result.
pub fn discover_from_initialize(init: &Value) -> Value {
    let mut result = json!({
        "supportedVersions": [MODERN],
        "capabilities": translated_server_capabilities(init.get("capabilities")),
        "resultType": "complete",
    });
    if let Some(i) = init.get("instructions").filter(|i| i.is_string()) {
        result["instructions"] = i.clone();
    }
    if let Some(info) = init.get("serverInfo").filter(|i| i.is_object()) {
        result["_meta"] = json!({ wire::META_SERVER_INFO: info });
    }
    result
}

/// A 2025 `initialize` result from a 2026-07-28 upstream's `DiscoverResult`, at `version`.
pub fn initialize_from_discover(discover: &Value, version: &str, upstream: &str) -> Value {
    let info = discover
        .get("_meta")
        .and_then(|m| m.get(wire::META_SERVER_INFO))
        .filter(|i| i["name"].is_string() && i["version"].is_string())
        .cloned()
        .unwrap_or_else(|| json!({"name": upstream, "version": "unknown"}));
    let mut result = json!({
        "protocolVersion": version,
        "capabilities": translated_server_capabilities(discover.get("capabilities")),
        "serverInfo": info,
    });
    if let Some(i) = discover.get("instructions").filter(|i| i.is_string()) {
        result["instructions"] = i.clone();
    }
    result
}

/// Answers the agent's `initialize` from the upstream's `server/discover` (through the outbound
/// filter), with a session of Warden's own, marked translated.
async fn answer_initialize(
    state: &AppState,
    caller: &Arc<TaskCaller>,
    upstream: &Arc<Upstream>,
    post: Option<Post>,
    version: &str,
    capabilities: &Value,
    discover: &Value,
) -> Response {
    let result = initialize_from_discover(discover, version, upstream.name.as_str());
    let mut out = answer_here(state, caller, upstream, post, result, None).await;
    if out.status() == StatusCode::OK {
        let sealed = state.gateway.keys.seal_session(
            &translated_session_id(version, capabilities),
            caller.task.id,
            upstream.name.as_str(),
        );
        if let Ok(v) = HeaderValue::from_str(&sealed) {
            out.headers_mut().insert(SESSION_HEADER, v);
        }
    }
    out
}

/// An answer Warden makes itself, standing in for the upstream: through the outbound filter, like
/// everything an agent receives.
async fn answer_here(
    state: &AppState,
    caller: &Arc<TaskCaller>,
    upstream: &Arc<Upstream>,
    post: Option<Post>,
    result: Value,
    session: Option<String>,
) -> Response {
    let Some(p) = post else {
        return StatusCode::ACCEPTED.into_response();
    };
    let empty = Arc::new(warden_gateway::credential::Scrubber::empty());
    let filter = Outbound::new(
        state.clone(),
        caller.clone(),
        upstream.clone(),
        &empty,
        Some(p.clone()),
        session,
    );
    let m = Message::Response(jsonrpc::Response {
        id: p.id.clone(),
        result,
    });
    let out = filter.message(m).await;
    relay::answer(out, Some(&p))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_envelope_is_stripped_and_added() {
        let mut p = Some(
            json!({"name": "x", "_meta": {
                wire::META_PROTOCOL_VERSION: MODERN,
                wire::META_CLIENT_CAPABILITIES: {"sampling": {}},
                wire::META_CLIENT_INFO: {"name": "a", "version": "1"},
                "progressToken": 7}})
            .as_object()
            .cloned()
            .unwrap_or_default(),
        );
        strip_envelope(&mut p);
        assert_eq!(
            Value::Object(p.clone().unwrap_or_default()),
            json!({"name": "x", "_meta": {"progressToken": 7}})
        );
        let mut q = Some(
            json!({"_meta": {wire::META_PROTOCOL_VERSION: MODERN}})
                .as_object()
                .cloned()
                .unwrap_or_default(),
        );
        strip_envelope(&mut q);
        assert_eq!(Value::Object(q.unwrap_or_default()), json!({}));
        add_envelope(&mut p, &json!({}));
        let meta = &p.unwrap_or_default()["_meta"];
        assert_eq!(meta[wire::META_PROTOCOL_VERSION], MODERN);
        assert_eq!(meta["progressToken"], 7);
        let mut none = None;
        add_envelope(&mut none, &json!({}));
        assert!(none.is_some_and(|p| p["_meta"][wire::META_CLIENT_CAPABILITIES] == json!({})));
    }

    #[test]
    fn only_carryable_capabilities_cross() {
        let caps = json!({"sampling": {}, "elicitation": {}, "roots": {"listChanged": true},
                          "experimental": {"x": {}}, "extensions": {"io.modelcontextprotocol/ui": {}}});
        assert_eq!(
            carried_capabilities(Some(&caps)),
            json!({"experimental": {"x": {}}})
        );
        let big = json!({"experimental": {"x": "y".repeat(2000)}});
        assert_eq!(carried_capabilities(Some(&big)), json!({}));
        let server = json!({"tools": {"listChanged": true}, "resources": {"subscribe": true, "listChanged": true},
                            "logging": {}, "tasks": {}, "prompts": {}});
        assert_eq!(
            translated_server_capabilities(Some(&server)),
            json!({"tools": {}, "resources": {}, "prompts": {}})
        );
    }

    #[test]
    fn translated_sessions_are_marked_and_never_an_upstream_id() {
        let id = translated_session_id("2025-06-18", &json!({"experimental": {}}));
        assert!(!visible_ascii(&id), "the marker holds a space");
        assert_eq!(
            translated_session(&id),
            Some(("2025-06-18".to_owned(), json!({"experimental": {}})))
        );
        assert_eq!(translated_session("hostile-session-1"), None);
        assert_eq!(
            translated_session(&format!("{TRANSLATED}{{\"v\":\"2099-01-01\"}}")),
            None
        );
    }

    #[test]
    fn results_for_a_modern_client_carry_what_2026_requires() {
        let mut r = json!({"tools": []});
        modern_result("tools/list", &mut r);
        assert_eq!(
            r,
            json!({"tools": [], "resultType": "complete", "ttlMs": 0, "cacheScope": "private"})
        );
        let mut r = json!({"content": [], "resultType": "input_required"});
        modern_result("tools/call", &mut r);
        assert_eq!(
            r,
            json!({"content": [], "resultType": "input_required"}),
            "kept as sent"
        );
    }

    #[test]
    fn results_translate_both_ways() {
        let init = json!({"protocolVersion": "2025-06-18", "capabilities": {"tools": {"listChanged": true}},
                          "serverInfo": {"name": "s", "version": "1"}, "instructions": "be nice"});
        let d = discover_from_initialize(&init);
        assert_eq!(d["supportedVersions"], json!([MODERN]));
        assert_eq!(d["capabilities"], json!({"tools": {}}));
        assert_eq!(d["_meta"][wire::META_SERVER_INFO]["name"], "s");
        let back = initialize_from_discover(&d, "2025-11-25", "u");
        assert_eq!(back["protocolVersion"], "2025-11-25");
        assert_eq!(back["serverInfo"], json!({"name": "s", "version": "1"}));
        assert_eq!(back["instructions"], "be nice");
        let bare = initialize_from_discover(&json!({"supportedVersions": [MODERN]}), "2025-06-18", "u");
        assert_eq!(bare["serverInfo"], json!({"name": "u", "version": "unknown"}));
    }
}
