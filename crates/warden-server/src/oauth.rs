//! OAuth-style errors for the token endpoint and for requests made with task tokens:
//! `{"error": code, "error_description": text}` (RFC 6749 §5.2, RFC 6750 §3, RFC 9449 §7), with
//! `WWW-Authenticate` on 401 and `Cache-Control: no-store` always.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;
use warden_identity::TokenError;
use warden_store::StoreError;

#[derive(Debug, Clone)]
pub struct OAuthError {
    pub status: StatusCode,
    pub code: &'static str,
    pub description: String,
    /// Answer 401s with the `DPoP` scheme (the token was DPoP-bound).
    pub dpop: bool,
    /// The handler recorded this refusal in the ledger itself (with the policy decision).
    pub recorded: bool,
    /// A 401 from a protected resource: its RFC 9728 metadata URL, for `WWW-Authenticate`.
    pub resource_metadata: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct OAuthErrorBody {
    pub error: &'static str,
    pub error_description: String,
}

impl OAuthError {
    pub fn new(status: StatusCode, code: &'static str, description: impl Into<String>) -> Self {
        Self {
            status,
            code,
            description: description.into(),
            dpop: false,
            recorded: false,
            resource_metadata: None,
        }
    }

    /// RFC 6749 §5.2: client authentication failed (unknown client, bad or replayed assertion,
    /// inactive agent).
    pub fn invalid_client(description: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "invalid_client", description)
    }

    /// RFC 6749 §5.2: the requested scope is invalid, unknown, or exceeds what the client may ask.
    pub fn invalid_scope(description: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_scope", description)
    }

    /// Points a 401 at the protected resource's metadata (RFC 9728 §5.1).
    pub fn with_resource_metadata(mut self, url: String) -> Self {
        self.resource_metadata = Some(url);
        self
    }

    pub fn invalid_request(description: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_request", description)
    }

    /// A presented credential (assertion, federated token, subject or actor token, join token) is not
    /// good. RFC 6749 §5.2's `invalid_grant` rather than RFC 8693's `invalid_request`, as most
    /// deployments do, so a client can tell "get a new credential" from "fix the request" (see
    /// `warden_identity::TokenError::oauth_code`).
    pub fn invalid_grant(description: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "invalid_grant", description)
    }

    pub fn invalid_token(description: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "invalid_token", description)
    }

    /// Authenticated, but not allowed (agent not active, policy, delegation limits).
    pub fn access_denied(description: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "access_denied", description)
    }

    /// Marks the refusal as already in the ledger.
    pub fn recorded(mut self) -> Self {
        self.recorded = true;
        self
    }

    pub fn with_dpop(mut self, dpop: bool) -> Self {
        self.dpop = dpop;
        self
    }

    /// Maps a token error found while checking a request at the token endpoint: 401 when a presented
    /// credential did not verify, 400 when the request itself is malformed.
    pub fn from_grant(e: &TokenError) -> Self {
        let code = e.oauth_code();
        let status = match code {
            "server_error" => StatusCode::INTERNAL_SERVER_ERROR,
            "unsupported_grant_type" | "invalid_authorization_details" | "invalid_dpop_proof" => {
                StatusCode::BAD_REQUEST
            }
            _ if e.bearer_error_code() == "invalid_token" => StatusCode::UNAUTHORIZED,
            _ => StatusCode::BAD_REQUEST,
        };
        Self::new(status, code, e.to_string())
    }

    /// Maps a token error found while checking a task token presented to a resource (RFC 6750 §3.1,
    /// RFC 9449 §7.1).
    pub fn from_resource(e: &TokenError) -> Self {
        match e.bearer_error_code() {
            "invalid_dpop_proof" => {
                Self::new(StatusCode::UNAUTHORIZED, "invalid_dpop_proof", e.to_string()).with_dpop(true)
            }
            "invalid_request" => Self::invalid_request(e.to_string()),
            "server_error" => Self::new(StatusCode::INTERNAL_SERVER_ERROR, "server_error", e.to_string()),
            _ => Self::invalid_token(e.to_string()),
        }
    }
}

impl From<StoreError> for OAuthError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Unavailable(detail)
            | StoreError::StorageFault(detail)
            | StoreError::Unreachable(detail) => {
                tracing::warn!(%detail, "store unavailable");
                Self::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "temporarily_unavailable",
                    "the store is unavailable; nothing was issued, try again later",
                )
            }
            other => {
                tracing::error!(detail = %other, "store error on the token path");
                Self::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "server_error",
                    "internal error; the server log has the details",
                )
            }
        }
    }
}

impl IntoResponse for OAuthError {
    fn into_response(self) -> Response {
        // Every refusal is recorded, not only at the trace layer's debug level. The description never
        // holds a token (see `warden_identity::TokenError`).
        if self.status.is_client_error() {
            tracing::info!(status = self.status.as_u16(), error = self.code, description = %self.description, "credential request refused");
        }
        let description = warden_core::redact::credentials_redacted(&self.description);
        let mut resp = (
            self.status,
            Json(OAuthErrorBody {
                error: self.code,
                error_description: description.clone(),
            }),
        )
            .into_response();
        if self.recorded {
            resp.extensions_mut().insert(crate::audit::Recorded);
        }
        if self.status.is_client_error() {
            resp.extensions_mut().insert(crate::audit::Refusal {
                status: self.status.as_u16(),
                code: self.code,
                message: description,
            });
        }
        let h = resp.headers_mut();
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        if self.status == StatusCode::UNAUTHORIZED {
            let scheme = if self.dpop { "DPoP" } else { "Bearer" };
            // Quotes and backslashes would break the header's quoted-string; drop them.
            let desc: String = self
                .description
                .chars()
                .filter(|c| *c != '"' && *c != '\\' && !c.is_control())
                .collect();
            let mut value = format!(
                "{scheme} realm=\"warden\", error=\"{}\", error_description=\"{desc}\"",
                self.code
            );
            if let Some(url) = self
                .resource_metadata
                .as_deref()
                .filter(|u| !u.contains(['"', '\\']))
            {
                value.push_str(&format!(", resource_metadata=\"{url}\""));
            }
            let fallback = || {
                let mut v = format!("{scheme} realm=\"warden\", error=\"{}\"", self.code);
                if let Some(url) = &self.resource_metadata {
                    v.push_str(&format!(", resource_metadata=\"{url}\""));
                }
                HeaderValue::from_str(&v)
                    .unwrap_or_else(|_| HeaderValue::from_static("Bearer realm=\"warden\""))
            };
            h.insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_str(&value).unwrap_or_else(|_| fallback()),
            );
        }
        resp
    }
}

impl From<crate::ledger::LedgerError> for OAuthError {
    fn from(e: crate::ledger::LedgerError) -> Self {
        OAuthError::new(
            axum::http::StatusCode::SERVICE_UNAVAILABLE,
            "temporarily_unavailable",
            format!("{e}; no credential was issued"),
        )
    }
}
