//! The audit layer: every refused request (authentication, authorization, malformed input — a
//! decision too) becomes a ledger entry, and a change recorded before it was made that then failed
//! gets a follow-up entry. Handlers mark their responses with [`Refusal`] (what was refused and
//! why) or [`Recorded`] (already in the ledger); the authentication extractors name the actor in
//! the request's [`AuditSlot`]. Kept apart from `ledger.rs` (the writer), which knows nothing of
//! HTTP.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use warden_ledger::EntryKind;

use crate::ledger::{BUILTIN_REQUEST_CHECKS, MAX_REASON_BYTES, clip, entry};

/// A refused request, as the error response describes it (a response extension the audit layer
/// reads). Set for 400, 401, 403, 405, 413 and 415: authentication and authorization refusals, and
/// malformed input, are decisions too.
#[derive(Debug, Clone)]
pub struct Refusal {
    pub status: u16,
    pub code: &'static str,
    pub message: String,
}

impl Refusal {
    pub(crate) fn of(
        status: axum::http::StatusCode,
        code: &'static str,
        e: &crate::error::ApiError,
    ) -> Option<Self> {
        use crate::error::ApiError as E;
        let message = match e {
            E::BadRequest { message, field } => match field {
                Some(f) => format!("{f}: {message}"),
                None => message.clone(),
            },
            E::Invalid { message, .. } => message.clone(),
            E::Unauthorized(m) | E::Forbidden(m) | E::PayloadTooLarge(m) | E::UnsupportedMediaType(m) => {
                m.clone()
            }
            _ => return None,
        };
        Some(Self {
            status: status.as_u16(),
            code,
            message: warden_core::redact::credentials_redacted(&message),
        })
    }
}

/// The OAuth endpoints answer errors in RFC 6749's shape (`error`, `error_description`); the rest
/// of the API in Warden's (`error`, `message`).
fn is_oauth_path(path: &str) -> bool {
    matches!(path, "/v1/token" | "/v1/enroll")
}

/// A refusal the framework answered before any handler ran (405 with an empty body, 413 and 415 as
/// plain text from the body extractors, …) becomes JSON in the API's one error shape, with a
/// [`Refusal`] so that it is recorded like every other.
fn json_refusal(
    resp: axum::response::Response,
    method: &axum::http::Method,
    path: &str,
) -> axum::response::Response {
    use axum::http::{StatusCode, header};
    let status = resp.status();
    let is_json = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !(status.is_client_error() || status.is_server_error())
        || is_json
        || resp.extensions().get::<Refusal>().is_some()
        || path.starts_with("/mcp/") && resp.headers().get(header::CONTENT_TYPE).is_some()
    {
        return resp;
    }
    let (code, message) = match status {
        StatusCode::METHOD_NOT_ALLOWED => {
            let allow = resp
                .headers()
                .get(header::ALLOW)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_owned();
            (
                "method_not_allowed",
                format!("`{method}` is not allowed here; allowed: {allow}"),
            )
        }
        StatusCode::PAYLOAD_TOO_LARGE => (
            "payload_too_large",
            "the request body is larger than this endpoint accepts".to_owned(),
        ),
        StatusCode::UNSUPPORTED_MEDIA_TYPE => (
            "unsupported_media_type",
            "the request body's content type is not accepted here".to_owned(),
        ),
        StatusCode::NOT_FOUND => ("not_found", "no such route".to_owned()),
        s if s.is_client_error() => (
            "invalid_request",
            s.canonical_reason().unwrap_or("refused").to_owned(),
        ),
        // The REST request timeout answers 503 with an empty body.
        StatusCode::SERVICE_UNAVAILABLE => (
            "unavailable",
            "the server could not answer in time (http.request_timeout_secs); try again".to_owned(),
        ),
        _ => (
            "internal",
            "internal error; the server log has the details".to_owned(),
        ),
    };
    let body = if is_oauth_path(path) {
        let code = match status {
            StatusCode::METHOD_NOT_ALLOWED
            | StatusCode::PAYLOAD_TOO_LARGE
            | StatusCode::UNSUPPORTED_MEDIA_TYPE => "invalid_request",
            _ => code,
        };
        serde_json::json!({"error": code, "error_description": message})
    } else {
        serde_json::json!({"error": code, "message": message})
    };
    let (mut parts, _) = resp.into_parts();
    parts.headers.insert(
        header::CONTENT_TYPE,
        axum::http::HeaderValue::from_static("application/json"),
    );
    parts.headers.remove(header::CONTENT_LENGTH);
    let mut out = axum::response::Response::from_parts(parts, axum::body::Body::from(body.to_string()));
    if status.is_client_error() {
        out.extensions_mut().insert(Refusal {
            status: status.as_u16(),
            code,
            message,
        });
    }
    out
}

/// Marks a response whose decision the handler already recorded.
#[derive(Debug, Clone, Copy)]
pub struct Recorded;

/// What the audit layer learns while a request runs: who it turned out to be from (filled in by the
/// authentication extractors) and which change it recorded before acting (by [`crate::auth::Permit`]),
/// so that a refusal names its actor and a change that then fails gets a follow-up entry.
#[derive(Debug, Clone, Default)]
pub struct AuditSlot(Arc<Mutex<SlotState>>);

#[derive(Debug, Clone, Default)]
struct SlotState {
    actor: Option<String>,
    change: Option<(u64, EntryKind, String)>,
}

impl AuditSlot {
    pub fn set_actor(&self, actor: &str) {
        if let Ok(mut a) = self.0.lock() {
            a.actor = Some(actor.to_owned());
        }
    }

    pub fn set_change(&self, seq: u64, kind: EntryKind, op: &str) {
        if let Ok(mut a) = self.0.lock() {
            a.change = Some((seq, kind, op.to_owned()));
        }
    }

    fn get(&self) -> SlotState {
        self.0.lock().map(|a| a.clone()).unwrap_or_default()
    }
}

/// Names the actor in the request's [`AuditSlot`], if the audit layer put one there.
pub fn set_actor(extensions: &axum::http::Extensions, actor: &str) {
    if let Some(slot) = extensions.get::<AuditSlot>() {
        slot.set_actor(actor);
    }
}

/// The audit layer: every refused request (see [`Refusal`]) becomes a `decision` entry with outcome
/// `deny`, the route, the status and the reason, unless the handler recorded it already; a change
/// recorded before it was made that then failed gets a follow-up entry saying so.
pub async fn audit_refusals(
    axum::extract::State(state): axum::extract::State<crate::AppState>,
    mut req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let slot = AuditSlot::default();
    req.extensions_mut().insert(slot.clone());
    // Cheap clones (shared buffers): the strings are built only for a response this layer records,
    // not on every request.
    let method = req.method().clone();
    let uri = req.uri().clone();
    let request_id = req.headers().get("x-request-id").cloned();
    let started = Instant::now();
    let resp = json_refusal(next.run(req).await, &method, uri.path());
    // A token pasted into a path is not stored in the append-only ledger.
    let path = || warden_core::redact::credentials_redacted(&clip(uri.path(), MAX_REASON_BYTES));
    let request_id = request_id.and_then(|v| v.to_str().ok().map(str::to_owned));
    let seen = slot.get();
    let actor = seen.actor.unwrap_or_else(|| "anonymous".to_owned());
    let status = resp.status();
    if let Some((seq, kind, op)) = seen.change
        && !status.is_success()
    {
        let message = resp
            .extensions()
            .get::<Refusal>()
            .map(|r| clip(&r.message, MAX_REASON_BYTES));
        let body = serde_json::json!({
            "op": op,
            "kind": kind.as_str(),
            "outcome": "failed",
            "recorded_as": seq,
            "status": status.as_u16(),
            "error": message,
            "request_id": request_id,
        });
        let e = entry(EntryKind::ChangeFailed, &actor).subject(path()).body(body);
        if let Err(e) = state.ledger.record(e).await {
            tracing::warn!(error = %e, "a failed change could not be recorded in the audit ledger");
        }
        return resp;
    }
    let Some(refusal) = resp.extensions().get::<Refusal>().cloned() else {
        return resp;
    };
    if resp.extensions().get::<Recorded>().is_some() {
        return resp;
    }
    let reason = format!("{}: {}", refusal.code, clip(&refusal.message, MAX_REASON_BYTES));
    let record = warden_ledger::DecisionRecord {
        outcome: warden_ledger::Outcome::Deny,
        reasons: vec![reason],
        policy_version: BUILTIN_REQUEST_CHECKS.to_owned(),
        action: format!("http:{method}"),
        upstream: None,
        resource: Some(path()),
        task: None,
        request_id,
        arguments: None,
        errors: Vec::new(),
        latency_us: u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX),
    };
    let mut body = record.to_body();
    body["status"] = refusal.status.into();
    let e = entry(EntryKind::Decision, &actor).subject(path()).body(body);
    if let Err(e) = state.ledger.record(e).await {
        tracing::warn!(error = %e, "a refused request could not be recorded in the audit ledger");
    }
    resp
}
