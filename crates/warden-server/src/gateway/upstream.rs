//! Talking to an upstream MCP server over streamable HTTP.
//!
//! Only what the protocol needs crosses: the agent's `Accept`, `MCP-Protocol-Version` and
//! `Last-Event-ID`, and the upstream's own session id (unsealed from Warden's). The agent's
//! `Authorization` (its Warden task token) never reaches the upstream; Warden's credential for the
//! upstream is injected instead. Redirects are not followed: a redirect would carry the injected
//! credential to wherever the upstream points.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use warden_core::Upstream;

use super::credentials::Injected;
use crate::AppState;

/// Why the upstream gave no usable answer. Messages never include credentials or upstream bodies.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("upstream `{0}` cannot be reached")]
    Unreachable(String),
    #[error("upstream `{upstream}` did not answer within {secs} s")]
    Timeout { upstream: String, secs: u64 },
    #[error("the upstream's answer is larger than {0} bytes")]
    TooLarge(usize),
    #[error("{0}")]
    Protocol(String),
    #[error("the credentials for upstream `{0}` cannot be opened (see the server log)")]
    Credentials(String),
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

    async fn send(
        &self,
        state: &AppState,
        upstream: &Upstream,
        builder: reqwest::RequestBuilder,
    ) -> Answer<reqwest::Response> {
        let injected = state
            .gateway
            .credentials
            .for_upstream(state.store.as_ref(), &upstream.name)
            .await?;
        let mut builder = builder;
        for (name, value) in injected.headers() {
            builder = builder.header(name.clone(), value.clone());
        }
        match tokio::time::timeout(self.timeout, builder.send()).await {
            Err(_) => Err(UpstreamError::Timeout {
                upstream: upstream.name.to_string(),
                secs: self.timeout.as_secs(),
            }),
            Ok(Err(e)) => {
                // reqwest's error text can include the URL; log it, answer without it.
                tracing::warn!(upstream = %upstream.name, error = %e.without_url(), "upstream request failed");
                Err(UpstreamError::Unreachable(upstream.name.to_string()))
            }
            Ok(Ok(resp)) => Ok((resp, injected)),
        }
    }

    /// POSTs one JSON-RPC message.
    pub async fn post(
        &self,
        state: &AppState,
        upstream: &Upstream,
        headers: HeaderMap,
        body: Vec<u8>,
    ) -> Answer<reqwest::Response> {
        let b = self
            .http
            .post(self.url(upstream)?)
            .headers(headers)
            .header(header::CONTENT_TYPE, "application/json")
            .body(body);
        self.send(state, upstream, b).await
    }

    /// Opens the server's event stream.
    pub async fn get(
        &self,
        state: &AppState,
        upstream: &Upstream,
        mut headers: HeaderMap,
    ) -> Answer<reqwest::Response> {
        headers.insert(header::ACCEPT, HeaderValue::from_static("text/event-stream"));
        let b = self.http.get(self.url(upstream)?).headers(headers);
        self.send(state, upstream, b).await
    }

    /// Ends a session.
    pub async fn delete(
        &self,
        state: &AppState,
        upstream: &Upstream,
        headers: HeaderMap,
    ) -> Result<StatusCode, UpstreamError> {
        let b = self.http.delete(self.url(upstream)?).headers(headers);
        Ok(self.send(state, upstream, b).await?.0.status())
    }
}

/// The headers forwarded to the upstream: protocol headers from the agent, and the upstream's own
/// session id.
pub fn forwarded_headers(incoming: &HeaderMap, session: Option<&str>) -> HeaderMap {
    let mut out = HeaderMap::new();
    out.insert(
        header::ACCEPT,
        HeaderValue::from_static("application/json, text/event-stream"),
    );
    for name in ["mcp-protocol-version", "last-event-id"] {
        if let Some(v) = incoming.get(name) {
            out.insert(HeaderName::from_static(name), v.clone());
        }
    }
    if let Some(s) = session
        && let Ok(v) = HeaderValue::from_str(s)
    {
        out.insert(HeaderName::from_static("mcp-session-id"), v);
    }
    out
}

/// Reads a whole (non-streaming) answer, refusing more than `limit` bytes.
pub async fn read_limited(mut resp: reqwest::Response, limit: usize) -> Result<Vec<u8>, UpstreamError> {
    if resp.content_length().is_some_and(|n| n > limit as u64) {
        return Err(UpstreamError::TooLarge(limit));
    }
    let mut out = Vec::new();
    loop {
        match resp.chunk().await {
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
