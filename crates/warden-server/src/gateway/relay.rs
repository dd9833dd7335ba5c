//! Relay: sending what a [`Clearance`] allows to an upstream (HTTP or stdio: one dispatch), and
//! handing the answer back through the outbound filter. Also the answers to refusals.

use std::sync::Arc;

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;
use warden_core::{Outcome, Upstream};
use warden_gateway::credential::Scrubber;
use warden_gateway::jsonrpc::{self, Id, Message};

use super::clearance::{Clearance, Post};
use super::outbound::{Out, Outbound, record_result};
use super::upstream::UpstreamError;
use super::{Route, SESSION_HEADER, is_stdio, rpc, stdio};
use crate::AppState;
use crate::pipeline::{Refused, Unexamined};
use crate::tasks::TaskCaller;

/// What came back from an upstream.
pub(super) enum Sent {
    Http {
        resp: reqwest::Response,
        injected: Arc<Scrubber>,
    },
    Stdio {
        reply: stdio::Reply,
        key: String,
        /// The process was spawned by this message (`initialize`).
        new: bool,
        injected: Arc<Scrubber>,
    },
}

/// The one dispatch to an upstream of either kind: sends what `clearance` allows.
pub(super) async fn send(
    state: &AppState,
    caller: &TaskCaller,
    upstream: &Upstream,
    route: &Route,
    clearance: &Clearance,
) -> Result<Sent, UpstreamError> {
    let gw = &state.gateway;
    if !is_stdio(upstream) {
        let (resp, injected) = gw.upstreams.send(state, upstream, route, clearance).await?;
        return Ok(Sent::Http {
            resp,
            injected: injected.scrubber().clone(),
        });
    }
    let name = upstream.name.as_str();
    let task = caller.task.id;
    let (key, new) = match route.session.as_deref() {
        Some(k) => (k.to_owned(), false),
        None => {
            let env = stdio::env_secrets(state, &upstream.name, &caller.task.agent_spiffe_id).await?;
            (
                gw.stdio
                    .spawn(clearance, name, task, &env, gw.settings.limits.max_bytes)?,
                true,
            )
        }
    };
    let injected = gw
        .stdio
        .secrets(&key)
        .map(|s| s.scrubber().clone())
        .unwrap_or_else(|| Arc::new(Scrubber::empty()));
    let reply = gw
        .stdio
        .send(&key, task, name, clearance, gw.settings.answer_timeout)
        .await;
    match reply {
        Ok(reply) => Ok(Sent::Stdio {
            reply,
            key,
            new,
            injected,
        }),
        Err(e) => {
            if new {
                gw.stdio.end(&key);
            }
            Err(e)
        }
    }
}

/// Sends an allowed message and relays the answer.
pub(super) async fn forward(
    state: AppState,
    caller: Arc<TaskCaller>,
    upstream: Arc<Upstream>,
    route: Route,
    clearance: Clearance,
) -> Response {
    let post = clearance.post().cloned();
    let initialize = clearance.method() == Some("initialize");
    let sent = send(&state, &caller, &upstream, &route, &clearance).await;
    relay_sent(state, caller, upstream, route, post, initialize, sent).await
}

/// Relays what came back from [`send`] (a request's answer, a notification's status) through the
/// outbound filter. `initialize`: the message sent was an `initialize` (a session is handed out).
pub(super) async fn relay_sent(
    state: AppState,
    caller: Arc<TaskCaller>,
    upstream: Arc<Upstream>,
    route: Route,
    post: Option<Post>,
    initialize: bool,
    sent: Result<Sent, UpstreamError>,
) -> Response {
    let fail = |e: &UpstreamError| {
        if let Some(p) = &post {
            record_result((&state, &caller, &upstream), p, &e.result_status(), &[]);
        }
        upstream_failed(post.as_ref().map(|p| &p.id), e)
    };
    match sent {
        Err(e) => fail(&e),
        Ok(Sent::Stdio {
            reply,
            key,
            new,
            injected,
        }) => {
            let mut out = match reply {
                stdio::Reply::Accepted => StatusCode::ACCEPTED.into_response(),
                stdio::Reply::Answer(m) => {
                    let filter = Outbound::new(
                        state.clone(),
                        caller.clone(),
                        upstream.clone(),
                        &injected,
                        post.clone(),
                        Some(key.clone()),
                    );
                    answer(filter.message(m).await, post.as_ref())
                }
            };
            if new
                && let Ok(v) = HeaderValue::from_str(&state.gateway.keys.seal_session_with(
                    &key,
                    caller.task.id,
                    upstream.name.as_str(),
                    route.caps,
                ))
            {
                out.headers_mut().insert(SESSION_HEADER, v);
            }
            out
        }
        Ok(Sent::Http { resp, injected }) => {
            let status = resp.status();
            // A session the upstream names in this answer, or (for `initialize`) one of Warden's
            // for an upstream without sessions: notifications are forwarded only inside a session
            // this task opened. Sealed only when there is a new one to hand out.
            // 2026-07-28 has no sessions: none is handed out on that wire.
            let new_session = resp
                .headers()
                .get(SESSION_HEADER)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
                // MCP session ids are visible ASCII; anything else is not sealed (nor mistaken
                // for one of Warden's translated sessions, whose marker holds a space).
                .filter(|s| super::revisions::visible_ascii(s))
                .filter(|s| route.session.as_deref() != Some(s.as_str()))
                .or_else(|| (initialize && route.session.is_none()).then(String::new))
                .filter(|_| route.hand_out_session);
            let sealed = new_session.as_deref().map(|s| {
                state
                    .gateway
                    .keys
                    .seal_session_with(s, caller.task.id, upstream.name.as_str(), route.caps)
            });
            let upstream_session = new_session.or_else(|| route.session.clone());
            let filter = Outbound::new(
                state.clone(),
                caller.clone(),
                upstream.clone(),
                &injected,
                post.clone(),
                upstream_session,
            );
            let mut out = http_answer(resp, filter).await;
            if status.is_success()
                && let Some(s) = sealed
                && let Ok(v) = HeaderValue::from_str(&s)
            {
                out.headers_mut().insert(SESSION_HEADER, v);
            }
            out
        }
    }
}

/// An HTTP upstream's answer, relayed through the filter: JSON, an event stream, or a status.
pub(super) async fn http_answer(resp: reqwest::Response, filter: Outbound) -> Response {
    let status = resp.status();
    let content_type = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_ascii_lowercase();
    let id = filter.post.as_ref().map(|p| p.id.clone());
    if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
        // The upstream refused Warden's credential: the agent's token is fine, so this is not a 401.
        filter.result("upstream_refused_credentials", &[]);
        return rpc(
            StatusCode::BAD_GATEWAY,
            jsonrpc::error_response(
                id.as_ref(),
                jsonrpc::UPSTREAM_UNAVAILABLE,
                &format!(
                    "upstream `{}` refused Warden's credentials ({status})",
                    filter.upstream.name
                ),
                None,
            ),
        );
    }
    if !status.is_success() {
        // The upstream's status as a JSON-RPC error (never its body: it may describe its
        // credentials). A 404 stays a 404: MCP's "this session is gone, initialize again".
        let e = UpstreamError::Http {
            upstream: filter.upstream.name.to_string(),
            status: status.as_u16(),
        };
        filter.result(&e.result_status(), &[]);
        tracing::warn!(error = %e, "upstream MCP server failed");
        return rpc(
            if status == StatusCode::NOT_FOUND {
                StatusCode::NOT_FOUND
            } else {
                StatusCode::BAD_GATEWAY
            },
            jsonrpc::error_response(
                id.as_ref(),
                jsonrpc::UPSTREAM_UNAVAILABLE,
                &e.to_string(),
                Some(json!({ "status": status.as_u16() })),
            ),
        );
    }
    if filter.post.is_none() && status == StatusCode::ACCEPTED {
        // A notification or a response is answered by the status alone (MCP: 202 Accepted, no
        // body). Some servers label that empty answer `application/json`; whatever it says, nothing
        // is read or relayed.
        filter.result(status.as_str(), &[]);
        return status.into_response();
    }
    if content_type.starts_with("text/event-stream") {
        return super::streams::sse_relay(resp, filter);
    }
    if content_type.starts_with("application/json") {
        let settings = &filter.state.gateway.settings;
        let sent = filter.post.as_ref().map_or_else(tokio::time::Instant::now, |p| {
            tokio::time::Instant::from_std(p.sent)
        });
        let times = super::upstream::AnswerLimits::new(settings, sent);
        let read = super::upstream::read_limited(
            resp,
            settings.limits.max_bytes,
            filter.upstream.name.as_str(),
            &times,
        );
        return match read.await {
            Err(e) => {
                filter.result(&e.result_status(), &[]);
                upstream_failed(id.as_ref(), &e)
            }
            Ok(bytes) => {
                let mut out = filter.bytes(&bytes).await;
                // A JSON body answering a request holds that request's answer and nothing else (the
                // upstream's own requests and notifications come on an event stream).
                if let (Out::Send(v), Some(p)) = (&out, &filter.post)
                    && !is_answer_to(v, &p.id)
                {
                    filter.result("upstream_protocol_error", &[]);
                    out = Out::Drop("a JSON answer that is not the answer to the request".to_owned());
                }
                let mut r = answer(out, filter.post.as_ref());
                if r.status() == StatusCode::OK {
                    *r.status_mut() = status;
                }
                r
            }
        };
    }
    if status.is_success() && status != StatusCode::ACCEPTED && filter.post.is_some() {
        // A request must be answered with JSON or an event stream.
        filter.result("upstream_protocol_error", &[]);
        return upstream_failed(
            id.as_ref(),
            &UpstreamError::Protocol(format!(
                "upstream `{}` answered a request with content type `{}`, not JSON or an event stream",
                filter.upstream.name,
                content_type.escape_debug()
            )),
        );
    }
    // 202 Accepted for notifications and responses, 204: the status alone.
    filter.result(status.as_str(), &[]);
    status.into_response()
}

/// Whether `v` is the response or error answering the request `id`.
pub(super) fn is_answer_to(v: &serde_json::Value, id: &Id) -> bool {
    v.get("id") == Some(&id.to_value()) && (v.get("result").is_some() || v.get("error").is_some())
}

/// The agent's answer to its request from what the filter let through: the message, or an error
/// saying why nothing usable came back.
pub(super) fn answer(out: Out, post: Option<&Post>) -> Response {
    match out {
        Out::Send(v) => rpc(StatusCode::OK, v),
        Out::Drop(why) => {
            tracing::warn!(why = %why, "an upstream answer was dropped by the outbound filter");
            upstream_failed(
                post.map(|p| &p.id),
                &UpstreamError::Protocol(format!("the upstream's answer was not relayed: {why}")),
            )
        }
    }
}

pub(super) fn upstream_failed(id: Option<&Id>, e: &UpstreamError) -> Response {
    tracing::warn!(error = %e, "upstream MCP server failed");
    rpc(
        StatusCode::BAD_GATEWAY,
        jsonrpc::error_response(id, jsonrpc::UPSTREAM_UNAVAILABLE, &e.to_string(), None),
    )
}

/// Warden's own request in the caller's session (the catalogue fetch): sent with its clearance, and
/// the answer to it read through the outbound filter.
pub(super) async fn fetch(
    state: &AppState,
    caller: &Arc<TaskCaller>,
    upstream: &Arc<Upstream>,
    route: &Route,
    clearance: Clearance,
) -> Result<Message, UpstreamError> {
    fetch_in_session(state, caller, upstream, route, clearance)
        .await
        .map(|(m, _)| m)
}

/// Largest error body read from an upstream's refusal of one of Warden's own requests.
const MAX_REFUSAL_BYTES: usize = 16 * 1024;
/// Longest time spent reading such a refusal, whole.
const REFUSAL_READ_LIMIT: std::time::Duration = std::time::Duration::from_secs(2);

/// Why an upstream refused one of Warden's own requests: its HTTP status, or — for a 400 whose
/// JSON-RPC error is MCP 2026-07-28's `UnsupportedProtocolVersion` (-32022) — the revisions it
/// supports, so the caller can retry at one of them. The body is read bounded and never relayed.
async fn refusal_of(upstream: &Upstream, resp: reqwest::Response) -> UpstreamError {
    let status = resp.status().as_u16();
    let http = UpstreamError::Http {
        upstream: upstream.name.to_string(),
        status,
    };
    if status != 400 {
        return http;
    }
    // Bounded in size and in time as a whole (a trickling peer cannot hold the caller).
    let read = async {
        let mut body = Vec::new();
        let mut resp = resp;
        while let Ok(Some(chunk)) = resp.chunk().await {
            if body.len() + chunk.len() > MAX_REFUSAL_BYTES {
                return None;
            }
            body.extend_from_slice(&chunk);
        }
        Some(body)
    };
    let Ok(Some(body)) = tokio::time::timeout(REFUSAL_READ_LIMIT, read).await else {
        return http;
    };
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(&body) else {
        return http;
    };
    if v["error"]["code"].as_i64() != Some(jsonrpc::UNSUPPORTED_PROTOCOL_VERSION) {
        return http;
    }
    let supported: Vec<String> = v["error"]["data"]["supported"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(serde_json::Value::as_str)
                .filter(|s| s.len() == 10 && s.bytes().all(|b| b.is_ascii_digit() || b == b'-'))
                .take(16)
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default();
    UpstreamError::VersionRefused {
        upstream: upstream.name.to_string(),
        supported,
    }
}

/// [`fetch`], with the session the upstream named in its answer (`Mcp-Session-Id`; HTTP only).
pub(super) async fn fetch_in_session(
    state: &AppState,
    caller: &Arc<TaskCaller>,
    upstream: &Arc<Upstream>,
    route: &Route,
    clearance: Clearance,
) -> Result<(Message, Option<String>), UpstreamError> {
    let protocol = |m: String| UpstreamError::Protocol(m);
    let post = clearance
        .post()
        .cloned()
        .ok_or_else(|| protocol("not a request".into()))?;
    let limits = state.gateway.settings.limits;
    let (filter, body) = match send(state, caller, upstream, route, &clearance).await? {
        Sent::Stdio {
            reply, key, injected, ..
        } => {
            let filter = Outbound::new(
                state.clone(),
                caller.clone(),
                upstream.clone(),
                &injected,
                Some(post),
                Some(key),
            );
            return match reply {
                stdio::Reply::Answer(m) => filtered(filter.message(m).await).map(|m| (m, None)),
                stdio::Reply::Accepted => Err(protocol("no answer".into())),
            };
        }
        Sent::Http { resp, injected } => {
            if !resp.status().is_success() {
                return Err(refusal_of(upstream, resp).await);
            }
            let filter = Outbound::new(
                state.clone(),
                caller.clone(),
                upstream.clone(),
                &injected,
                Some(post),
                route.session.clone(),
            );
            (filter, resp)
        }
    };
    let session = body
        .headers()
        .get(SESSION_HEADER)
        .and_then(|v| v.to_str().ok())
        .filter(|s| super::revisions::visible_ascii(s))
        .map(str::to_owned);
    let sse = body
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|c| c.starts_with("text/event-stream"));
    if !sse {
        let times = super::upstream::AnswerLimits::new(&state.gateway.settings, tokio::time::Instant::now());
        let bytes =
            super::upstream::read_limited(body, limits.max_bytes, upstream.name.as_str(), &times).await?;
        return filtered(filter.bytes(&bytes).await).map(|m| (m, session));
    }
    use futures_util::StreamExt as _;
    let mut parser = warden_gateway::sse::SseParser::new(Default::default());
    let mut stream = body.bytes_stream();
    let deadline = tokio::time::Instant::now() + state.gateway.settings.upstream_timeout;
    loop {
        let chunk = tokio::time::timeout_at(deadline, stream.next())
            .await
            .map_err(|_| protocol("no answer in time".into()))?;
        let Some(Ok(chunk)) = chunk else {
            return Err(protocol("the stream ended without an answer".into()));
        };
        for ev in parser.push(&chunk).map_err(|e| protocol(e.to_string()))? {
            if ev.data.is_empty() {
                continue;
            }
            if let Ok(m) = filtered(filter.bytes(ev.data.as_bytes()).await)
                && matches!(m, Message::Response(_) | Message::Error(_))
            {
                return Ok((m, session));
            }
        }
    }
}

fn filtered(out: Out) -> Result<Message, UpstreamError> {
    match out {
        Out::Send(v) => {
            let bytes = serde_json::to_vec(&v).map_err(|e| UpstreamError::Protocol(e.to_string()))?;
            jsonrpc::parse(&bytes, &Default::default()).map_err(|e| UpstreamError::Protocol(e.to_string()))
        }
        Out::Drop(why) => Err(UpstreamError::Protocol(why)),
    }
}

/// The answer to a refused message. A request gets its JSON-RPC error (HTTP 200, as MCP clients
/// read errors); a notification or response an HTTP error status with a JSON-RPC error body.
/// `pre`: the refusal came before policy, with this code.
pub(super) fn refused_answer(r: &Refused, reply_to: Option<&Id>, pre: Option<i64>) -> Response {
    let d = &r.decision;
    // Refused before policy: the code says why (too large to examine, malformed), not "denied".
    let pre = pre.or(match r.unexamined {
        Some(Unexamined::TooLarge) => Some(jsonrpc::TOO_LARGE_TO_EXAMINE),
        Some(Unexamined::BadRequest) => Some(jsonrpc::INVALID_PARAMS),
        Some(Unexamined::BadTask) => Some(jsonrpc::DENIED),
        None => None,
    });
    let code = pre.unwrap_or(match d.outcome {
        Outcome::NeedsApproval => jsonrpc::APPROVAL_REQUIRED,
        _ if r.ledger_unavailable => jsonrpc::LEDGER_UNAVAILABLE,
        _ if r.risk.secret_in_args => jsonrpc::SECRET_IN_ARGUMENTS,
        _ => jsonrpc::DENIED,
    });
    let message = if r.ledger_unavailable {
        "the audit ledger cannot record this decision, so nothing was forwarded".to_owned()
    } else if d.outcome == Outcome::NeedsApproval {
        format!(
            "approval required: {}",
            r.approval.as_ref().map_or_else(
                || "no approval request could be opened".to_owned(),
                |a| format!("approval request {} ({})", a.id, a.url)
            )
        )
    } else if pre.is_some() {
        format!("refused by Warden: {}", d.reasons.join("; "))
    } else {
        format!("denied by policy: {}", d.reasons.join("; "))
    };
    let mut data = json!({
        "outcome": d.outcome,
        "reasons": d.reasons,
        "policy_version": d.policy_version,
    });
    if let Some(a) = &r.approval {
        data["approval"] = json!(a);
    }
    if let Some(seq) = r.seq {
        data["ledger_seq"] = seq.into();
    }
    let status = if reply_to.is_some() {
        // MCP clients read a request's errors from a 200 answer (-32015 says what happened).
        StatusCode::OK
    } else if r.ledger_unavailable {
        StatusCode::SERVICE_UNAVAILABLE
    } else if matches!(
        pre,
        Some(jsonrpc::INVALID_REQUEST | jsonrpc::INVALID_PARAMS | jsonrpc::METHOD_NOT_FOUND)
    ) {
        StatusCode::BAD_REQUEST
    } else if pre == Some(jsonrpc::TOO_LARGE_TO_EXAMINE) {
        StatusCode::PAYLOAD_TOO_LARGE
    } else {
        StatusCode::FORBIDDEN
    };
    let mut resp = rpc(
        status,
        jsonrpc::error_response(reply_to, code, &message, Some(data)),
    );
    // Recorded by the gateway: the audit layer leaves it alone.
    resp.extensions_mut().insert(crate::audit::Recorded);
    resp
}
