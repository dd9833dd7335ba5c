//! Outbound: the one filter every message from an upstream passes before an agent sees it — JSON
//! answers, SSE on a `POST`, the `GET` stream, resumed streams, stdio answers and streams, and
//! Warden's own catalogue fetch.
//!
//! INVARIANT (every byte out is filtered): the relays in `relay.rs` and `streams.rs` hand an agent
//! only what [`Outbound::message`] returned as [`Out::Send`]. For each message, in this order:
//!
//! 1. parsed within the limits (not JSON-RPC: dropped);
//! 2. the upstream's credentials scrubbed — the values injected into the request being answered and
//!    values rotated out within a day — on *decoded* JSON (every string and key, nested JSON text,
//!    base64/hex/percent forms, values split across strings; see `warden_gateway::credential`), so
//!    no escaping of the upstream's choosing survives;
//! 3. by kind: the answer to the request this stream carries is post-processed (`tools/list`
//!    catalogued and filtered to what the task may call, results scanned and redacted per
//!    `gateway.results`, the result recorded); an error answer has its message and data scanned;
//!    a response or error with any other id is dropped (an answer the agent did not ask for could
//!    carry anything past the filter); the upstream's own requests (`ping`, `sampling/createMessage`,
//!    `elicitation/create`, `roots/list`) are scanned and get a sealed id (so the agent's answer can
//!    go back only to them, see `inbound.rs`); notifications are scanned; anything else is dropped.

use std::sync::Arc;

use serde_json::{Value, json};
use warden_core::{ToolState, Upstream};
use warden_gateway::credential::Scrubber;
use warden_gateway::jsonrpc::{self, Id, Message};
use warden_ledger::EntryKind;
use warden_policy::{PolicyContext, PolicyRequest, ResourceRef};

use super::ResultPolicy;
use super::clearance::{After, Post};
use crate::AppState;
use crate::tasks::TaskCaller;

/// Requests an upstream may send a client.
pub const SERVER_REQUESTS: [&str; 4] = [
    "ping",
    "sampling/createMessage",
    "elicitation/create",
    "roots/list",
];

/// What the filter decided about one message.
#[derive(Debug)]
pub enum Out {
    /// Pass this (filtered) message on.
    Send(Value),
    /// Drop it, for this reason (logged).
    Drop(String),
}

/// The filter for one stream (or answer) from one upstream to one caller.
#[derive(Debug)]
pub struct Outbound {
    pub state: AppState,
    pub caller: Arc<TaskCaller>,
    pub upstream: Arc<Upstream>,
    /// The credentials injected into the request being answered (for a stdio session: its
    /// process's), and those rotated out recently.
    scrubbers: [Arc<Scrubber>; 2],
    /// The request whose answer this stream carries, if any.
    pub post: Option<Post>,
    /// The upstream session the stream belongs to (binds the ids of the upstream's requests).
    pub session: Option<String>,
}

impl Outbound {
    pub fn new(
        state: AppState,
        caller: Arc<TaskCaller>,
        upstream: Arc<Upstream>,
        injected: &Arc<Scrubber>,
        post: Option<Post>,
        session: Option<String>,
    ) -> Self {
        let retired = state.gateway.credentials.retired_scrubber(upstream.name.as_str());
        Self {
            scrubbers: [injected.clone(), retired],
            state,
            caller,
            upstream,
            post,
            session,
        }
    }

    /// Filters the bytes of one message.
    pub async fn bytes(&self, bytes: &[u8]) -> Out {
        match jsonrpc::parse(bytes, &self.state.gateway.settings.limits) {
            Ok(m) => self.message(m).await,
            Err(e) => {
                self.result("upstream_protocol_error", &[]);
                Out::Drop(format!("not a JSON-RPC message: {e}"))
            }
        }
    }

    /// Filters one message (see the module's doc for the steps).
    pub async fn message(&self, mut m: Message) -> Out {
        self.scrub(&mut m);
        let scanner = &self.state.gateway.scanner;
        match m {
            Message::Response(r) => match &self.post {
                Some(p) if p.id == r.id => Out::Send(self.answer(p, r.id, r.result).await),
                _ => {
                    self.result("upstream_foreign_id", &[]);
                    Out::Drop(format!(
                        "a response to `{}`, which this stream does not carry",
                        r.id
                    ))
                }
            },
            Message::Error(mut e) => match &self.post {
                // An error without an id is the upstream failing the request it was sent.
                Some(p) if e.id.is_none() || e.id.as_ref() == Some(&p.id) => {
                    let mut parts = json!({ "message": e.error.message, "data": e.error.data });
                    let report = scanner.redact(&mut parts);
                    if let Value::String(s) = parts["message"].take() {
                        e.error.message = s;
                    }
                    e.error.data = match parts["data"].take() {
                        Value::Null => None,
                        d => Some(d),
                    };
                    e.id = Some(p.id.clone());
                    self.result(
                        if report.findings.is_empty() {
                            "error"
                        } else {
                            "error_secrets_found"
                        },
                        &report.findings,
                    );
                    Out::Send(Message::Error(e).to_value())
                }
                _ => {
                    self.result("upstream_foreign_id", &[]);
                    Out::Drop("an error answering a request this stream does not carry".to_owned())
                }
            },
            Message::Request(mut r) => {
                if !SERVER_REQUESTS.contains(&r.method.as_str()) {
                    return Out::Drop(format!(
                        "the upstream sent a request MCP servers do not send (`{}`)",
                        crate::ledger::clip_str(&r.method, 128).escape_debug()
                    ));
                }
                if let Some(p) = r.params.take() {
                    let mut v = Value::Object(p);
                    scanner.redact(&mut v);
                    if let Value::Object(p) = v {
                        r.params = Some(p);
                    }
                }
                r.id = Id::String(self.state.gateway.keys.seal_server_request(
                    &r.id,
                    &r.method,
                    self.caller.task.id,
                    self.upstream.name.as_str(),
                    self.session.as_deref(),
                ));
                Out::Send(Message::Request(r).to_value())
            }
            Message::Notification(mut n) => {
                if !n.method.starts_with("notifications/") {
                    return Out::Drop(format!(
                        "the upstream sent a notification that is not one (`{}`)",
                        crate::ledger::clip_str(&n.method, 128).escape_debug()
                    ));
                }
                if let Some(p) = n.params.take() {
                    let mut v = Value::Object(p);
                    scanner.redact(&mut v);
                    if let Value::Object(p) = v {
                        n.params = Some(p);
                    }
                }
                Out::Send(Message::Notification(n).to_value())
            }
        }
    }

    /// Scrubs the upstream's credentials out of every string of the message (ids and method names
    /// included: an upstream chooses those too).
    fn scrub(&self, m: &mut Message) {
        if self.scrubbers.iter().all(|s| s.is_empty()) {
            return;
        }
        let scrub_value = |v: &mut Value| {
            for s in &self.scrubbers {
                s.scrub(v);
            }
        };
        let scrub_string = |s: &mut String| {
            let mut v = Value::String(std::mem::take(s));
            scrub_value(&mut v);
            if let Value::String(t) = v {
                *s = t;
            }
        };
        let scrub_id = |id: &mut Id| {
            if let Id::String(s) = id {
                scrub_string(s);
            }
        };
        let scrub_params = |p: &mut Option<serde_json::Map<String, Value>>| {
            if let Some(map) = p.take() {
                let mut v = Value::Object(map);
                scrub_value(&mut v);
                if let Value::Object(map) = v {
                    *p = Some(map);
                }
            }
        };
        match m {
            Message::Request(r) => {
                scrub_id(&mut r.id);
                scrub_string(&mut r.method);
                scrub_params(&mut r.params);
            }
            Message::Notification(n) => {
                scrub_string(&mut n.method);
                scrub_params(&mut n.params);
            }
            Message::Response(r) => {
                scrub_id(&mut r.id);
                scrub_value(&mut r.result);
            }
            Message::Error(e) => {
                if let Some(id) = &mut e.id {
                    scrub_id(id);
                }
                scrub_string(&mut e.error.message);
                if let Some(d) = &mut e.error.data {
                    scrub_value(d);
                }
            }
        }
    }

    /// The answer to the request this stream carries, post-processed.
    async fn answer(&self, p: &Post, id: Id, result: Value) -> Value {
        let result = match p.after {
            After::Nothing | After::Listen => result,
            After::ToolsList => tools_list(&self.state, &self.caller, &self.upstream, result).await,
            After::Result => {
                let settings = &self.state.gateway.settings;
                let scanner = &self.state.gateway.scanner;
                let mut result = result;
                let report = if settings.results == ResultPolicy::Pass {
                    scanner.scan(&result)
                } else {
                    scanner.redact(&mut result)
                };
                // 2026-07-28: an `input_required` result is an interim answer; its `requestState`
                // is the upstream's opaque data, scanned (and redacted) like the rest of it.
                let interim = result.get("resultType").and_then(Value::as_str) == Some("input_required");
                self.result(
                    match (interim, report.findings.is_empty()) {
                        (false, true) => "ok",
                        (false, false) => "ok_secrets_found",
                        (true, true) => "input_required",
                        (true, false) => "input_required_secrets_found",
                    },
                    &report.findings,
                );
                if !report.findings.is_empty() && settings.results == ResultPolicy::Deny {
                    return jsonrpc::error_response(
                        Some(&id),
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
        let mut result = result;
        if p.to_modern {
            super::revisions::modern_result(&p.method, &mut result);
        }
        jsonrpc::result_response(&id, result)
    }

    /// Records what the upstream answered to the request this stream carries (nothing for a stream
    /// that carries none).
    pub fn result(&self, status: &str, findings: &[warden_gateway::scan::Finding]) {
        if let Some(p) = &self.post {
            record_result((&self.state, &self.caller, &self.upstream), p, status, findings);
        }
    }
}

/// Records what the upstream answered to an allowed request (status, latency, where secrets were
/// found — never content). Committed with the next decision (within `RESULT_FLUSH`): the action
/// already happened, and its decision is durable.
pub fn record_result(
    (state, caller, upstream): (&AppState, &TaskCaller, &Upstream),
    p: &Post,
    status: &str,
    findings: &[warden_gateway::scan::Finding],
) {
    let tool = p.tool.as_deref();
    let entry = crate::ledger::entry(EntryKind::ActionResult, &caller.task.agent_spiffe_id)
        .subject(format!("{}/{}", upstream.name, tool.unwrap_or(&p.method)))
        .body(json!({
            "agent": caller.task.agent.as_str(),
            "task": caller.task.id,
            "upstream": upstream.name.as_str(),
            "method": p.method,
            "tool": tool,
            "status": status,
            "latency_us": u64::try_from(p.sent.elapsed().as_micros()).unwrap_or(u64::MAX),
            "secrets_found": findings.iter().map(|f| json!({"rule": f.rule, "pointer": f.pointer})).collect::<Vec<_>>(),
        }));
    state.gateway.queue_result(entry);
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
    if let Err(e) = super::catalog::observe(state, &upstream.name, &super::catalog::observed(&page)).await {
        // Fail closed: a catalogue that cannot be written shows nothing.
        tracing::error!(upstream = %upstream.name, error = %e, "tools cannot be catalogued; none are shown");
        return page.to_result(|_| false);
    }
    let now = chrono::Utc::now();
    let task = state.identity.task_contexts.get(&caller.task).ok();
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
            action: super::inbound::class_action(rec.effective_class()),
            resource: ResourceRef::tool(&upstream.name, t.name()),
            context: PolicyContext {
                task: task.clone(),
                ..Default::default()
            },
        };
        if state.policies.decide(&request, now).outcome != warden_core::Outcome::Deny {
            keep.push(t.name().to_owned());
        }
    }
    let mut out = page.to_result(|t| keep.iter().any(|k| k == t.name()));
    // 2026-07-28 caching hints pass as the upstream sent them, except the scope: this listing is
    // filtered for this task, so no shared cache may serve it to another (`public` → `private`).
    if let Some(scope) = out.get_mut("cacheScope") {
        *scope = Value::String("private".into());
    }
    out
}
