//! Talking to an upstream MCP server over streamable HTTP.
//!
//! Only what the protocol needs crosses: the agent's `MCP-Protocol-Version`, the upstream's own
//! session id and event id (unsealed from Warden's). There is one send operation, and it takes a
//! [`Clearance`] (see `clearance.rs`). The agent's
//! `Authorization` (its Warden task token) never reaches the upstream; Warden's credential for the
//! upstream is injected instead. Redirects are not followed: a redirect would carry the injected
//! credential to wherever the upstream points.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use axum::http::{HeaderMap, HeaderName, HeaderValue, header};
use warden_core::Upstream;

use super::clearance::{Clearance, Outgoing};
use super::credentials::Injected;
use crate::AppState;

/// Why the upstream gave no usable answer. Messages never include credentials or upstream bodies.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("upstream `{0}` cannot be reached")]
    Unreachable(String),
    #[error(
        "upstream `{upstream}` exceeded the {} limit of {} ms (gateway.{})",
        limit.name(), limit_ms, limit.setting()
    )]
    Timeout {
        upstream: String,
        limit: TimeLimit,
        limit_ms: u64,
    },
    #[error("upstream `{upstream}` answered HTTP {status}")]
    Http { upstream: String, status: u16 },
    /// MCP 2026-07-28's `UnsupportedProtocolVersion` (-32022): the upstream refused the revision
    /// the request was sent at, naming those it supports (at most 16, each a revision's date).
    #[error("upstream `{upstream}` refused the MCP revision (it supports {})", supported.join(", "))]
    VersionRefused {
        upstream: String,
        supported: Vec<String>,
    },
    #[error("the upstream's answer is larger than {0} bytes")]
    TooLarge(usize),
    #[error("{0}")]
    Protocol(String),
    #[error("the credentials for upstream `{0}` cannot be opened (see the server log)")]
    Credentials(String),
}

/// Which time limit an upstream exceeded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeLimit {
    /// No response headers in time (`gateway.upstream_timeout_ms`).
    FirstByte,
    /// Silence inside an answer that had started (`gateway.idle_timeout_ms`).
    Idle,
    /// The whole answer took too long (`gateway.answer_timeout_ms`).
    Answer,
}

impl TimeLimit {
    pub fn name(self) -> &'static str {
        match self {
            TimeLimit::FirstByte => "first-byte",
            TimeLimit::Idle => "idle",
            TimeLimit::Answer => "answer",
        }
    }

    pub fn setting(self) -> &'static str {
        match self {
            TimeLimit::FirstByte => "upstream_timeout_ms",
            TimeLimit::Idle => "idle_timeout_ms",
            TimeLimit::Answer => "answer_timeout_ms",
        }
    }
}

impl UpstreamError {
    /// The status of the result entry recording this failure.
    pub fn result_status(&self) -> String {
        match self {
            UpstreamError::Timeout { limit, .. } => {
                format!("upstream_timeout_{}", limit.name().replace('-', "_"))
            }
            UpstreamError::Http { status, .. } => format!("upstream_http_{status}"),
            UpstreamError::VersionRefused { .. } => "upstream_version_refused".to_owned(),
            UpstreamError::TooLarge(_) => "upstream_too_large".to_owned(),
            UpstreamError::Protocol(_) => "upstream_protocol_error".to_owned(),
            UpstreamError::Unreachable(_) => "upstream_unreachable".to_owned(),
            UpstreamError::Credentials(_) => "upstream_credentials_unavailable".to_owned(),
        }
    }

    fn timeout(upstream: &str, limit: TimeLimit, d: Duration) -> Self {
        UpstreamError::Timeout {
            upstream: upstream.to_owned(),
            limit,
            limit_ms: u64::try_from(d.as_millis()).unwrap_or(u64::MAX),
        }
    }
}

/// The time limits of one answer: its deadline and the longest silence inside it.
#[derive(Debug, Clone, Copy)]
pub struct AnswerLimits {
    pub idle: Duration,
    pub total: Duration,
    pub deadline: tokio::time::Instant,
}

impl AnswerLimits {
    /// Limits for an answer whose request was sent at `sent`.
    pub fn new(settings: &super::GatewaySettings, sent: tokio::time::Instant) -> Self {
        Self {
            idle: settings.idle_timeout,
            total: settings.answer_timeout,
            deadline: sent + settings.answer_timeout,
        }
    }

    /// Waits for `next` within the limits: the idle limit from now, never past the deadline.
    pub async fn within<T>(
        &self,
        upstream: &str,
        next: impl std::future::Future<Output = T>,
    ) -> Result<T, UpstreamError> {
        let now = tokio::time::Instant::now();
        let idle_end = now + self.idle;
        let (end, limit, d) = if idle_end < self.deadline {
            (idle_end, TimeLimit::Idle, self.idle)
        } else {
            (self.deadline, TimeLimit::Answer, self.total)
        };
        tokio::time::timeout_at(end, next)
            .await
            .map_err(|_| UpstreamError::timeout(upstream, limit, d))
    }
}

/// The HTTP client all upstream requests share (connection pooling per upstream).
#[derive(Debug, Clone)]
pub struct Client {
    http: reqwest::Client,
    timeout: Duration,
    /// Upstream URLs, parsed once (a parse per message showed in the gateway's profile).
    urls: Arc<RwLock<HashMap<String, reqwest::Url>>>,
}

/// An upstream's answer, with the credentials injected into the request it answers (to scrub
/// them from the answer).
pub type Answer<T> = Result<(T, Arc<Injected>), UpstreamError>;

impl Client {
    pub fn new(timeout: Duration) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .redirect(reqwest::redirect::Policy::none())
            .pool_idle_timeout(Duration::from_secs(60))
            .build()?;
        Ok(Self {
            http,
            timeout,
            urls: Default::default(),
        })
    }

    /// The upstream's URL, parsed (cached per URL text).
    fn url(&self, upstream: &Upstream) -> Result<reqwest::Url, UpstreamError> {
        if let Some(u) = self.urls.read().ok().and_then(|m| m.get(&upstream.url).cloned()) {
            return Ok(u);
        }
        let url = reqwest::Url::parse(&upstream.url).map_err(|_| {
            UpstreamError::Protocol(format!("upstream `{}` has an unusable URL", upstream.name))
        })?;
        if let Ok(mut m) = self.urls.write() {
            if m.len() >= 10_000 {
                m.clear();
            }
            m.insert(upstream.url.clone(), url.clone());
        }
        Ok(url)
    }

    /// The one way anything reaches an HTTP upstream: what `clearance` allows — one message
    /// (`POST`), the server's stream (`GET`, resuming after the upstream's own event id), or the end
    /// of a session (`DELETE`) — with the upstream's credentials injected.
    ///
    /// On the 2026-07-28 wire the request-metadata headers are derived here from the cleared
    /// message — `Mcp-Method` from its method, `Mcp-Name` from its name or URI, `Mcp-Param-*` from
    /// its arguments by the catalogued schema — so they cannot say anything the body does not.
    pub async fn send(
        &self,
        state: &AppState,
        upstream: &Upstream,
        route: &super::Route,
        clearance: &Clearance,
    ) -> Answer<reqwest::Response> {
        let url = self.url(upstream)?;
        let mut headers = route.headers.clone();
        if route.modern
            && let Outgoing::Message(m) = clearance.outgoing()
        {
            modern_headers(&mut headers, m, route.tool_schema.as_ref());
        }
        let builder = match clearance.outgoing() {
            Outgoing::Message(m) => self
                .http
                .post(url)
                .headers(headers)
                .header(header::CONTENT_TYPE, "application/json")
                .body(m.to_value().to_string()),
            Outgoing::OpenStream { last_event_id } => {
                headers.insert(header::ACCEPT, HeaderValue::from_static("text/event-stream"));
                headers.remove("last-event-id");
                if let Some(id) = last_event_id {
                    let v = HeaderValue::from_str(id).map_err(|_| {
                        UpstreamError::Protocol("the stream cannot be resumed at that event".into())
                    })?;
                    headers.insert(HeaderName::from_static("last-event-id"), v);
                }
                self.http.get(url).headers(headers)
            }
            Outgoing::EndSession => self.http.delete(url).headers(headers),
        };
        let injected = state
            .gateway
            .credentials
            .for_upstream(state.store.as_ref(), &upstream.name)
            .await?;
        let mut builder = builder;
        for (name, value) in injected.headers() {
            builder = builder.header(name.clone(), value.clone());
        }
        tracing::debug!(upstream = %upstream.name, seq = clearance.seq(), method = ?clearance.method(), "sending to the upstream");
        match tokio::time::timeout(self.timeout, builder.send()).await {
            Err(_) => Err(UpstreamError::timeout(
                upstream.name.as_str(),
                TimeLimit::FirstByte,
                self.timeout,
            )),
            Ok(Err(e)) => {
                // reqwest's error text can include the URL; log it, answer without it.
                tracing::warn!(upstream = %upstream.name, error = %e.without_url(), "upstream request failed");
                Err(UpstreamError::Unreachable(upstream.name.to_string()))
            }
            Ok(Ok(resp)) => Ok((resp, injected)),
        }
    }
}

/// The 2026-07-28 request-metadata headers of `m`, derived from the message itself.
fn modern_headers(
    headers: &mut HeaderMap,
    m: &warden_gateway::jsonrpc::Message,
    tool_schema: Option<&serde_json::Value>,
) {
    use warden_gateway::jsonrpc::Message;
    use warden_gateway::wire;
    let Message::Request(r) = m else { return };
    let mut put = |name: &str, value: &str| {
        if let (Ok(n), Ok(v)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(value),
        ) {
            headers.insert(n, v);
        }
    };
    put(wire::METHOD_HEADER, &r.method);
    if let Some(name) = wire::name_header(&r.method, r.params.as_ref()) {
        put(wire::NAME_HEADER, &name);
    }
    if r.method == "tools/call" {
        let args = r
            .params
            .as_ref()
            .and_then(|p| p.get("arguments"))
            .and_then(serde_json::Value::as_object);
        for (name, value) in wire::param_headers(tool_schema, args) {
            put(&name, &value);
        }
    }
}

/// The headers forwarded to the upstream: the agent's protocol version, and the upstream's own
/// session id. (`Last-Event-ID` is never forwarded as the agent sent it: Warden hands out sealed
/// event ids, and a resume sends the upstream's own id from inside the seal.)
pub fn forwarded_headers(incoming: &HeaderMap, session: Option<&str>) -> HeaderMap {
    let mut out = HeaderMap::new();
    out.insert(
        header::ACCEPT,
        HeaderValue::from_static("application/json, text/event-stream"),
    );
    for name in ["mcp-protocol-version"] {
        if let Some(v) = incoming.get(name) {
            out.insert(HeaderName::from_static(name), v.clone());
        }
    }
    // An empty session is Warden's own for an upstream without sessions: nothing to send.
    if let Some(s) = session.filter(|s| !s.is_empty())
        && let Ok(v) = HeaderValue::from_str(s)
    {
        out.insert(HeaderName::from_static("mcp-session-id"), v);
    }
    out
}

/// Reads a whole (non-streaming) answer, refusing more than `limit` bytes and waiting no longer
/// than `times` allow (dropping the response on a refusal closes the connection).
pub async fn read_limited(
    mut resp: reqwest::Response,
    limit: usize,
    upstream: &str,
    times: &AnswerLimits,
) -> Result<Vec<u8>, UpstreamError> {
    if resp.content_length().is_some_and(|n| n > limit as u64) {
        return Err(UpstreamError::TooLarge(limit));
    }
    let mut out = Vec::new();
    loop {
        match times.within(upstream, resp.chunk()).await? {
            Ok(Some(chunk)) => {
                if out.len() + chunk.len() > limit {
                    return Err(UpstreamError::TooLarge(limit));
                }
                out.extend_from_slice(&chunk);
            }
            Ok(None) => return Ok(out),
            Err(e) => {
                tracing::warn!(error = %e.without_url(), "reading the upstream's answer failed");
                return Err(UpstreamError::Protocol(
                    "the upstream's answer was cut off".into(),
                ));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_protocol_headers_are_forwarded() {
        let mut h = HeaderMap::new();
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer task-token"),
        );
        h.insert("cookie", HeaderValue::from_static("a=b"));
        h.insert("mcp-protocol-version", HeaderValue::from_static("2025-06-18"));
        h.insert("mcp-session-id", HeaderValue::from_static("wardens-own"));
        let out = forwarded_headers(&h, Some("upstream-session"));
        assert!(
            out.get(header::AUTHORIZATION).is_none(),
            "the task token stays with Warden"
        );
        assert!(out.get("cookie").is_none());
        assert_eq!(out["mcp-protocol-version"], "2025-06-18");
        assert_eq!(out["mcp-session-id"], "upstream-session");
    }
}
