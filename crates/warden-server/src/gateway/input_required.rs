//! Approval inside the protocol: how a call that waits for a human's approval is answered to an
//! MCP client that can send its user to the approval, and how that client's retry is let through.
//!
//! A `tools/call`, `resources/read` or `prompts/get` whose decision is `needs_approval` is answered
//! by what the client declared it can take:
//!
//! | client | answer |
//! |---|---|
//! | 2026-07-28, `_meta` client capabilities with `elicitation.url` | an `InputRequiredResult` (`resultType: "input_required"`, MCP 2026-07-28 *Multi Round-Trip Requests*) whose one input request is a URL-mode `elicitation/create` pointing at the approval request, and a sealed `requestState` |
//! | 2026-07-28, elicitation without `url` (form only) | `-32021` MissingRequiredClientCapability (HTTP 400), `requiredCapabilities: {elicitation: {url: {}}}` — the revision forbids a mode the client did not declare, and a clickable URL in a form — with the approval id and URL |
//! | 2025-11-25 session whose `initialize` declared `elicitation.url` | `-32042` URLElicitationRequiredError carrying the URL-mode elicitation of the approval |
//! | anything else | `-32011` with the approval id and URL, as before |
//!
//! The retry of a 2026-07-28 client carries the `requestState` and the elicitation's result. A
//! request state is **sealed** (XChaCha20-Poly1305 under the gateway key, with associated data and
//! a prefix of its own, so no other sealed value of Warden's opens as one), **bound** (agent, task,
//! upstream, method, the called tool / resource / prompt, a digest of every parameter but `_meta`,
//! `requestState` and `inputResponses`, the policy version, the approval request, an expiry) and
//! **single-use** (its id is remembered in the store until it expires, so on every node). A state
//! that is altered, expired, presented for anything else, or presented twice is refused before
//! policy, precisely, and recorded. A good one is taken off the message (the upstream never sees
//! Warden's state or the client's answer to Warden's elicitation) and the call is then decided like
//! any other by the one pipeline: only a grant for exactly that action makes it an allow. While the
//! approval is pending the retry is held up to `approvals.in_protocol_wait_secs` (the revision's URL
//! flow: the server "may need to block until the request is fulfilled"), then answered with
//! another `InputRequiredResult` — without a new prompt when the user already accepted to open the
//! approval.
//!
//! A `requestState` that does not carry Warden's prefix is the upstream's own (its multi-round-trip
//! requests) and passes untouched.

use std::time::Duration;

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use uuid::Uuid;
use warden_core::{Outcome, Upstream};
use warden_gateway::jsonrpc::{self, Id, Message};
use warden_gateway::wire;
use warden_store::ApprovalState;

use super::credentials::{STATE_PREFIX, SessionCaps};
use super::relay;
use crate::AppState;
use crate::approvals::ApprovalRef;
use crate::pipeline::Refused;
use crate::tasks::TaskCaller;

/// `URLElicitationRequiredError` (MCP 2025-11-25 only; 2026-07-28 retired the code).
pub use warden_gateway::jsonrpc::URL_ELICITATION_REQUIRED;
/// The key of Warden's input request in an `InputRequiredResult` (and of the client's answer to it
/// in the retry's `inputResponses`).
pub const INPUT_KEY: &str = "warden_approval";
/// Warden's member of a result's `_meta`: the approval behind an `InputRequiredResult`.
pub const META_APPROVAL: &str = "dev.warden/approval";
/// Where the store remembers used request states (the one-time ids' namespace).
const USED_STATES: &str = "warden:mcp-request-state";
/// The request-state format this code writes and reads.
const VERSION: u8 = 1;
/// How often a held retry looks at its approval again.
const POLL: Duration = Duration::from_millis(250);

/// What the agent's client can take when its call waits for approval.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Elicits {
    /// 2026-07-28 with `elicitation.url`: an `InputRequiredResult`.
    ModernUrl,
    /// 2026-07-28 with elicitation in form mode only: -32021.
    ModernFormOnly,
    /// A 2025-11-25 session that declared `elicitation.url`: -32042.
    LegacyUrl,
    /// Nothing Warden can use: -32011.
    No,
}

/// A request that may be answered with an input request: what the client takes, what a request
/// state for it is bound to, and the state (and answer) it presented.
#[derive(Debug)]
pub struct Ask {
    pub elicits: Elicits,
    method: String,
    /// The tool, resource URI or prompt the request names.
    target: String,
    /// SHA-256 of the request's parameters without `_meta`, `requestState`, `inputResponses`.
    digest: String,
    pub presented: Option<Presented>,
}

/// A request state of Warden's that came back with a retry, and the client's answer to Warden's
/// elicitation.
#[derive(Debug)]
pub struct Presented {
    raw: String,
    /// `accept`, `decline` or `cancel` (anything else as given, clipped); `None`: no answer.
    answer: Option<String>,
}

/// What a request state says (sealed; never shown to anyone).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Claims {
    v: u8,
    /// The one-time id.
    jti: Uuid,
    agent: String,
    task: Uuid,
    upstream: String,
    method: String,
    /// SHA-256 (hex) of the tool name, resource URI or prompt name.
    target: String,
    /// See [`Ask::digest`].
    digest: String,
    policy: String,
    approval: Uuid,
    /// Unix seconds.
    exp: i64,
    /// The user already accepted to open the approval: a retry without an answer is not asked again.
    #[serde(default)]
    opened: bool,
}

/// A request state redeemed: what the decision entry records about it.
#[derive(Debug)]
pub struct Redeemed {
    pub jti: Uuid,
    pub approval: Uuid,
}

/// A refusal of a presented request state, before policy: the reason (recorded) and the code.
#[derive(Debug)]
pub struct StateRefusal {
    pub reason: String,
    pub code: i64,
}

fn invalid(reason: String) -> StateRefusal {
    StateRefusal {
        reason,
        code: jsonrpc::INVALID_PARAMS,
    }
}

/// The methods that may be answered with an `InputRequiredResult` (MCP 2026-07-28, *Supported
/// Requests*), and the parameter naming what each reaches.
fn target_param(method: &str) -> Option<&'static str> {
    match method {
        "tools/call" | "prompts/get" => Some("name"),
        "resources/read" => Some("uri"),
        _ => None,
    }
}

/// Reads what `message` says about input requests and, on the 2026-07-28 wire, takes a request
/// state of Warden's (and the answers to Warden's input requests) off it: the upstream gets the
/// message without them. `caps`: what a 2025-11-25 session declared at `initialize`; `version`:
/// the request's `MCP-Protocol-Version`.
pub fn prepare(message: &mut Message, modern: bool, caps: SessionCaps, version: Option<&str>) -> Option<Ask> {
    let Message::Request(req) = message else {
        return None;
    };
    let param = target_param(&req.method)?;
    let params = req.params.as_mut()?;
    let target = params.get(param).and_then(Value::as_str)?.to_owned();
    let elicits = if modern {
        let declared = params
            .get("_meta")
            .and_then(|m| m.get(wire::META_CLIENT_CAPABILITIES))
            .and_then(|c| c.get("elicitation"));
        match declared {
            Some(Value::Object(e)) if e.contains_key("url") => Elicits::ModernUrl,
            // An empty `elicitation` object means form mode (both revisions say so).
            Some(Value::Object(_)) => Elicits::ModernFormOnly,
            _ => Elicits::No,
        }
    } else if caps.url_elicitation && version == Some("2025-11-25") {
        Elicits::LegacyUrl
    } else {
        Elicits::No
    };
    let presented = if modern {
        match params.get("requestState") {
            Some(Value::String(s)) if s.starts_with(STATE_PREFIX) => {
                let raw = s.clone();
                params.remove("requestState");
                let responses = params.remove("inputResponses");
                let answer = responses
                    .as_ref()
                    .and_then(|r| r.get(INPUT_KEY))
                    .and_then(|a| a.get("action"))
                    .map(|a| crate::ledger::clip_str(a.as_str().unwrap_or("?"), 16));
                Some(Presented { raw, answer })
            }
            _ => None,
        }
    } else {
        None
    };
    let mut salient = params.clone();
    for k in ["_meta", "requestState", "inputResponses"] {
        salient.remove(k);
    }
    Some(Ask {
        elicits,
        method: req.method.clone(),
        target,
        digest: digest(&Value::Object(salient)),
        presented,
    })
}

fn digest(v: &Value) -> String {
    let bytes = warden_ledger::canonical::to_vec(v).unwrap_or_else(|_| v.to_string().into_bytes());
    hex::encode(Sha256::digest(bytes))
}

fn sha(s: &str) -> String {
    hex::encode(Sha256::digest(s.as_bytes()))
}

/// What a method's target is called in a refusal.
fn target_kind(method: &str) -> &'static str {
    match method {
        "resources/read" => "resource",
        "prompts/get" => "prompt",
        _ => "tool",
    }
}

/// Checks a presented request state against this request, spends it (once, on every node), and
/// holds the retry while its approval is pending. `Err`: the refusal to record and answer.
pub async fn redeem(
    state: &AppState,
    caller: &TaskCaller,
    upstream: &Upstream,
    ask: &Ask,
    presented: &Presented,
) -> Result<Redeemed, StateRefusal> {
    let now = Utc::now();
    let claims = open(state, caller, upstream, ask, presented, now)?;
    let until = DateTime::<Utc>::from_timestamp(claims.exp, 0).unwrap_or(now);
    match state
        .store
        .remember_jti(USED_STATES, &claims.jti.to_string(), until)
        .await
    {
        Ok(true) => {}
        Ok(false) => {
            return Err(invalid(
                "request-state-replayed: this requestState was presented before; each is good for one retry (call again without it)"
                    .to_owned(),
            ));
        }
        Err(e) => {
            tracing::warn!(error = %e, "a request state cannot be spent; the retry is refused");
            return Err(StateRefusal {
                reason: "request-state-unverifiable: whether this requestState was used before cannot be checked (the store is unavailable); retry later".to_owned(),
                code: jsonrpc::DENIED,
            });
        }
    }
    let accepted = claims.opened || presented.answer.as_deref() == Some("accept");
    let wait = if accepted {
        state
            .approvals
            .in_protocol_wait
            .min(state.gateway.settings.answer_timeout)
    } else {
        Duration::ZERO
    };
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        let a = match state.store.get_approval(claims.approval).await {
            Ok(Some(a)) if a.task_id == caller.task.id => a,
            Ok(_) => {
                return Err(invalid(format!(
                    "request-state-mismatch: approval request {} is not this task's",
                    claims.approval
                )));
            }
            Err(e) => {
                tracing::warn!(error = %e, "an approval request cannot be read; the retry is refused");
                return Err(StateRefusal {
                    reason: format!(
                        "request-state-unverifiable: approval request {} cannot be read (the store is unavailable); retry later",
                        claims.approval
                    ),
                    code: jsonrpc::DENIED,
                });
            }
        };
        match a.state {
            ApprovalState::Denied => {
                let by: Vec<&str> = a
                    .votes
                    .iter()
                    .filter(|v| v.vote == warden_store::Vote::Deny)
                    .map(|v| v.approver.as_str())
                    .collect();
                return Err(StateRefusal {
                    reason: format!(
                        "approval-denied: approval request {} was denied{}",
                        a.id,
                        if by.is_empty() {
                            String::new()
                        } else {
                            format!(" by {}", by.join(", "))
                        }
                    ),
                    code: jsonrpc::DENIED,
                });
            }
            ApprovalState::Expired => {
                return Err(StateRefusal {
                    reason: format!(
                        "approval-expired: approval request {} expired undecided; call again without the requestState to open a new one",
                        a.id
                    ),
                    code: jsonrpc::DENIED,
                });
            }
            ApprovalState::Pending if a.expires_at > Utc::now() && tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(POLL.min(deadline - tokio::time::Instant::now())).await;
            }
            // Approved (the pipeline finds the grant), or still pending when the wait ends (the
            // pipeline asks again).
            _ => break,
        }
    }
    Ok(Redeemed {
        jti: claims.jti,
        approval: claims.approval,
    })
}

/// Opens and checks a presented state (nothing spent yet).
fn open(
    state: &AppState,
    caller: &TaskCaller,
    upstream: &Upstream,
    ask: &Ask,
    presented: &Presented,
    now: DateTime<Utc>,
) -> Result<Claims, StateRefusal> {
    let claims = state
        .gateway
        .keys
        .open_request_state(&presented.raw)
        .and_then(|v| serde_json::from_value::<Claims>(v).ok())
        .filter(|c| c.v == VERSION)
        .ok_or_else(|| {
            invalid(
                "request-state-invalid: the requestState is not one Warden issued, or it was altered; call again without it"
                    .to_owned(),
            )
        })?;
    if claims.exp <= now.timestamp() {
        let at = DateTime::<Utc>::from_timestamp(claims.exp, 0)
            .map_or_else(|| claims.exp.to_string(), |t| t.to_rfc3339());
        return Err(invalid(format!(
            "request-state-expired: the requestState expired at {at}; call again without it"
        )));
    }
    let mismatch = |what: String| {
        invalid(format!(
            "request-state-mismatch: the requestState was issued {what}"
        ))
    };
    if claims.agent != caller.task.agent.as_str() || claims.task != caller.task.id {
        return Err(mismatch(
            "to another task; it is good only for the retry of the call it answered".to_owned(),
        ));
    }
    if claims.upstream != upstream.name.as_str() {
        return Err(mismatch(format!("for another upstream than `{}`", upstream.name)));
    }
    if claims.method != ask.method {
        return Err(mismatch(format!(
            "for `{}`, not `{}`",
            crate::ledger::clip_str(&claims.method, 64),
            ask.method
        )));
    }
    if claims.target != sha(&ask.target) {
        return Err(mismatch(format!(
            "for another {} than `{}`",
            target_kind(&ask.method),
            crate::ledger::clip_str(&ask.target, 200).escape_debug()
        )));
    }
    if claims.digest != ask.digest {
        return Err(mismatch(
            "for other arguments; a retry must resend the request exactly as first sent".to_owned(),
        ));
    }
    let active = crate::pipeline::policy_version(state);
    if claims.policy != active {
        return Err(mismatch(format!(
            "under policy version {}, and version {active} is active now; call again without it",
            crate::ledger::clip_str(&claims.policy, 80)
        )));
    }
    Ok(claims)
}

/// The answer to a refused request that may carry an input request: an `InputRequiredResult`,
/// -32021 or -32042 for a call waiting for approval, per what the client takes; anything else as
/// [`relay::refused_answer`] answers it.
pub fn answer(
    state: &AppState,
    caller: &TaskCaller,
    upstream: &Upstream,
    ask: Option<&Ask>,
    r: &Refused,
    reply_to: Option<&Id>,
) -> Response {
    let fallback = || relay::refused_answer(r, reply_to, None);
    let (Some(ask), Some(approval), Some(id)) = (ask, r.approval.as_ref(), reply_to) else {
        return fallback();
    };
    if r.decision.outcome != Outcome::NeedsApproval || r.ledger_unavailable || r.unexamined.is_some() {
        return fallback();
    }
    let message = format!(
        "Warden: `{}` on `{}` waits for a human's approval ({}). Open approval request {} for an approver to decide it; the call goes ahead once it is approved.",
        crate::ledger::clip_str(&ask.target, 200).escape_debug(),
        upstream.name,
        r.decision.reasons.join("; "),
        approval.id
    );
    let mut data = json!({
        "outcome": r.decision.outcome,
        "reasons": r.decision.reasons,
        "policy_version": r.decision.policy_version,
        "approval": approval,
    });
    if let Some(seq) = r.seq {
        data["ledger_seq"] = seq.into();
    }
    let (status, body) = match ask.elicits {
        Elicits::No => return fallback(),
        Elicits::ModernUrl => {
            if ask
                .presented
                .as_ref()
                .and_then(|p| p.answer.as_deref())
                .is_some_and(|a| a != "accept")
            {
                // The user declined (or dismissed) opening the approval: not asked again in a loop;
                // the request stays open for approvers, and the answer says where.
                return fallback();
            }
            let opened = ask
                .presented
                .as_ref()
                .is_some_and(|p| p.answer.as_deref() == Some("accept") || opened(state, &p.raw));
            let request_state = seal(state, caller, upstream, ask, r, approval, opened);
            let mut result = json!({
                "resultType": "input_required",
                "requestState": request_state,
                "_meta": { META_APPROVAL: data },
            });
            if !opened {
                result["inputRequests"] = json!({
                    INPUT_KEY: {
                        "method": "elicitation/create",
                        "params": {"mode": "url", "url": approval.url, "message": message},
                    }
                });
            }
            (
                StatusCode::OK,
                Message::Response(jsonrpc::Response {
                    id: id.clone(),
                    result,
                })
                .to_value(),
            )
        }
        Elicits::ModernFormOnly => {
            // MCP 2026-07-28 (client/elicitation, Capabilities): servers MUST NOT send a mode the
            // client did not declare, and SHOULD NOT put a clickable URL in a form; a request that
            // needs a capability the client lacks is -32021 (HTTP 400), naming it.
            data["requiredCapabilities"] = json!({"elicitation": {"url": {}}});
            let text = format!(
                "approval required: approval request {} ({}); Warden sends the user to it with URL-mode elicitation, which this client does not declare (`elicitation.url`); an approver can decide it there, then call again",
                approval.id, approval.url
            );
            (
                StatusCode::BAD_REQUEST,
                jsonrpc::error_response(
                    Some(id),
                    jsonrpc::MISSING_REQUIRED_CLIENT_CAPABILITY,
                    &text,
                    Some(data),
                ),
            )
        }
        Elicits::LegacyUrl => {
            // MCP 2025-11-25, client/elicitation, "URL Elicitation Required Error": a request that
            // cannot be processed until a URL-mode elicitation completes is answered with -32042
            // listing it (with an `elicitationId`); the client retries once it is done. Chosen over
            // a server-initiated `elicitation/create` on the request's stream: the call is not
            // held open for as long as an approval takes, and the retry is decided afresh.
            data["elicitations"] = json!([{
                "mode": "url",
                "elicitationId": approval.id.to_string(),
                "url": approval.url,
                "message": message,
            }]);
            let text = format!(
                "approval required: approval request {} ({}); retry once it is approved",
                approval.id, approval.url
            );
            (
                StatusCode::OK,
                jsonrpc::error_response(Some(id), URL_ELICITATION_REQUIRED, &text, Some(data)),
            )
        }
    };
    let mut resp = (
        status,
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response();
    // Recorded by the pipeline: the audit layer leaves it alone.
    resp.extensions_mut().insert(crate::audit::Recorded);
    resp
}

/// Whether the (already checked) state `raw` says the user accepted to open the approval.
fn opened(state: &AppState, raw: &str) -> bool {
    state
        .gateway
        .keys
        .open_request_state(raw)
        .and_then(|v| v.get("opened").and_then(Value::as_bool))
        .unwrap_or(false)
}

/// A new request state for the retry of `ask`, bound to everything a retry must match. It lasts
/// until the approval request could no longer be decided plus a grant's lifetime, never past the
/// task.
fn seal(
    state: &AppState,
    caller: &TaskCaller,
    upstream: &Upstream,
    ask: &Ask,
    r: &Refused,
    approval: &ApprovalRef,
    opened: bool,
) -> String {
    let exp = (approval.expires_at + state.approvals.grant_ttl).min(caller.task.expires_at);
    let claims = Claims {
        v: VERSION,
        jti: Uuid::new_v4(),
        agent: caller.task.agent.to_string(),
        task: caller.task.id,
        upstream: upstream.name.to_string(),
        method: ask.method.clone(),
        target: sha(&ask.target),
        digest: ask.digest.clone(),
        policy: r.decision.policy_version.clone(),
        approval: approval.id,
        exp: exp.timestamp(),
        opened,
    };
    serde_json::to_value(&claims)
        .map(|v| state.gateway.keys.seal_request_state(&v))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(params: Value) -> Message {
        let bytes = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": params}).to_string();
        jsonrpc::parse(bytes.as_bytes(), &Default::default()).expect("a request")
    }

    fn caps(elicitation: Value) -> Value {
        json!({wire::META_PROTOCOL_VERSION: "2026-07-28", wire::META_CLIENT_CAPABILITIES: {"elicitation": elicitation}})
    }

    #[test]
    fn what_a_client_takes_is_read_from_what_it_declares() {
        let cases = [
            (json!({"url": {}}), Elicits::ModernUrl),
            (json!({"form": {}, "url": {}}), Elicits::ModernUrl),
            (json!({"form": {}}), Elicits::ModernFormOnly),
            (json!({}), Elicits::ModernFormOnly),
            (json!(true), Elicits::No),
        ];
        for (e, want) in cases {
            let mut m = call(json!({"name": "t", "arguments": {}, "_meta": caps(e.clone())}));
            let ask = prepare(&mut m, true, SessionCaps::default(), None).expect("a call");
            assert_eq!(ask.elicits, want, "{e}");
        }
        let url = SessionCaps {
            url_elicitation: true,
        };
        let mut m = call(json!({"name": "t"}));
        assert_eq!(
            prepare(&mut m, false, url, Some("2025-11-25")).map(|a| a.elicits),
            Some(Elicits::LegacyUrl)
        );
        assert_eq!(
            prepare(&mut m, false, url, Some("2025-06-18")).map(|a| a.elicits),
            Some(Elicits::No)
        );
        assert_eq!(
            prepare(&mut m, false, SessionCaps::default(), Some("2025-11-25")).map(|a| a.elicits),
            Some(Elicits::No)
        );
    }

    #[test]
    fn wardens_state_is_taken_off_and_an_upstreams_is_left() {
        let mut m = call(
            json!({"name": "t", "arguments": {"a": 1}, "requestState": "wdnq1.x.y",
                                "inputResponses": {INPUT_KEY: {"action": "accept"}}}),
        );
        let ask = prepare(&mut m, true, SessionCaps::default(), None).expect("a call");
        let p = ask.presented.as_ref().expect("presented");
        assert_eq!(
            (p.raw.as_str(), p.answer.as_deref()),
            ("wdnq1.x.y", Some("accept"))
        );
        let Message::Request(r) = &m else { panic!() };
        let params = r.params.as_ref().expect("params");
        assert!(!params.contains_key("requestState") && !params.contains_key("inputResponses"));
        // The digest covers what the upstream gets, not the state.
        let mut plain = call(json!({"name": "t", "arguments": {"a": 1}}));
        assert_eq!(
            prepare(&mut plain, true, SessionCaps::default(), None).map(|a| a.digest),
            Some(ask.digest.clone())
        );
        let mut other = call(json!({"name": "t", "arguments": {"a": 2}}));
        assert_ne!(
            prepare(&mut other, true, SessionCaps::default(), None).map(|a| a.digest),
            Some(ask.digest)
        );
        // The upstream's own state passes, with its answers.
        let mut up = call(json!({"name": "t", "requestState": "upstream-state",
                                 "inputResponses": {"k": {"action": "accept"}}}));
        let ask = prepare(&mut up, true, SessionCaps::default(), None).expect("a call");
        assert!(ask.presented.is_none());
        let Message::Request(r) = &up else { panic!() };
        let params = r.params.as_ref().expect("params");
        assert!(params.contains_key("requestState") && params.contains_key("inputResponses"));
        // Not on the 2025 wires.
        let mut old = call(json!({"name": "t", "requestState": "wdnq1.x.y"}));
        assert!(
            prepare(&mut old, false, SessionCaps::default(), None)
                .expect("a call")
                .presented
                .is_none()
        );
    }

    #[test]
    fn a_request_state_is_its_own_purpose() {
        let keys = super::super::GatewayKeys::generate();
        let session = keys.seal_session("s", Uuid::new_v4(), "u");
        assert!(keys.open_request_state(&session).is_none());
        let forged = session.replacen("wdn1.", STATE_PREFIX, 1);
        assert!(
            keys.open_request_state(&forged).is_none(),
            "a session's seal under the state prefix"
        );
        let state = keys.seal_request_state(&json!({"v": 1}));
        assert_eq!(keys.open_request_state(&state), Some(json!({"v": 1})));
        let task = Uuid::new_v4();
        assert!(keys.open_session(&state, task, "u").is_none());
        let mut altered = state.clone().into_bytes();
        let last = altered.len() - 2;
        altered[last] = if altered[last] == b'A' { b'B' } else { b'A' };
        assert!(
            keys.open_request_state(&String::from_utf8(altered).expect("ascii"))
                .is_none()
        );
    }
}
