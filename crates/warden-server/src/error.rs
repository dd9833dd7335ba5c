//! The one error type of the HTTP API. Each variant maps to a status and a safe JSON body
//! `{"error": code, "message": text, "field": name?}`; internals (database messages, IO errors) go to the
//! log, never to the client.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;
use warden_core::ValidationError;
use warden_store::StoreError;

#[derive(Debug)]
pub enum ApiError {
    /// 400: the request is malformed or a value is invalid.
    BadRequest {
        message: String,
        field: Option<String>,
    },
    /// 401: no usable credentials. The message says why (missing, malformed, expired, revoked, unknown).
    Unauthorized(String),
    /// 403: authenticated, but not allowed.
    Forbidden(String),
    NotFound(String),
    Conflict(String),
    PayloadTooLarge(String),
    UnsupportedMediaType(String),
    /// 503: a dependency (the store) is down. Nothing was done.
    Unavailable(String),
    /// 503: the audit ledger cannot record, so the action was not taken (fail closed).
    LedgerUnavailable(String),
    /// 500: a bug or corrupt data. The detail is logged, the client gets a generic message.
    Internal(String),
    /// 400 with a list of located problems (policy files that do not compile).
    Invalid {
        message: String,
        errors: Vec<LocatedError>,
    },
}

/// A problem in an uploaded file, where it is.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct LocatedError {
    pub file: String,
    /// 1-based; 0 when unknown.
    pub line: usize,
    /// 1-based; 0 when unknown.
    pub column: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub policy_id: Option<String>,
    pub message: String,
}

/// The JSON body of every error response.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    /// A stable code: `invalid_request`, `unauthorized`, `forbidden`, `not_found`, `conflict`,
    /// `payload_too_large`, `unsupported_media_type`, `unavailable`, `ledger_unavailable`, `internal`.
    pub error: &'static str,
    pub message: String,
    /// The request field the error is about, when there is one (e.g. `owners[1]`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    /// Located problems (policy files), when there are several.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<LocatedError>,
}

impl ApiError {
    pub fn bad_request(message: impl Into<String>) -> Self {
        ApiError::BadRequest {
            message: message.into(),
            field: None,
        }
    }

    fn parts(&self) -> (StatusCode, &'static str) {
        match self {
            ApiError::BadRequest { .. } | ApiError::Invalid { .. } => {
                (StatusCode::BAD_REQUEST, "invalid_request")
            }
            ApiError::Unauthorized(_) => (StatusCode::UNAUTHORIZED, "unauthorized"),
            ApiError::Forbidden(_) => (StatusCode::FORBIDDEN, "forbidden"),
            ApiError::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
            ApiError::Conflict(_) => (StatusCode::CONFLICT, "conflict"),
            ApiError::PayloadTooLarge(_) => (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large"),
            ApiError::UnsupportedMediaType(_) => {
                (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type")
            }
            ApiError::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
            ApiError::LedgerUnavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "ledger_unavailable"),
            ApiError::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        }
    }
}

impl From<ValidationError> for ApiError {
    fn from(e: ValidationError) -> Self {
        let field = (!e.field.is_empty()).then_some(e.field);
        ApiError::BadRequest {
            message: e.message,
            field,
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound { .. } => ApiError::NotFound(e.to_string()),
            StoreError::Conflict(m) => ApiError::Conflict(m),
            StoreError::Forbidden(m) => ApiError::Forbidden(m),
            StoreError::Invalid(v) => v.into(),
            StoreError::Unavailable(_) | StoreError::StorageFault(_) | StoreError::Unreachable(_) => {
                ApiError::Unavailable(e.to_string())
            }
            StoreError::Config(_) | StoreError::Corrupt(_) | StoreError::Internal(_) => {
                ApiError::Internal(e.to_string())
            }
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code) = self.parts();
        // Authentication and authorization refusals are recorded; other 4xx are the client's typos.
        if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
            let message = match &self {
                ApiError::Unauthorized(m) | ApiError::Forbidden(m) => m.as_str(),
                _ => "",
            };
            tracing::info!(status = status.as_u16(), error = code, %message, "request refused");
        }
        let refusal = crate::audit::Refusal::of(status, code, &self);
        let mut errors = Vec::new();
        let (message, field) = match self {
            ApiError::BadRequest { message, field } => (message, field),
            ApiError::Invalid {
                message,
                errors: list,
            } => {
                errors = list;
                (message, None)
            }
            ApiError::Internal(detail) => {
                tracing::error!(%detail, "internal error");
                ("internal error; the server log has the details".to_owned(), None)
            }
            ApiError::Unavailable(detail) => {
                tracing::warn!(%detail, "store unavailable");
                (
                    "the store is unavailable; nothing was changed, try again later".to_owned(),
                    None,
                )
            }
            ApiError::LedgerUnavailable(m)
            | ApiError::Unauthorized(m)
            | ApiError::Forbidden(m)
            | ApiError::NotFound(m)
            | ApiError::Conflict(m)
            | ApiError::PayloadTooLarge(m)
            | ApiError::UnsupportedMediaType(m) => (m, None),
        };
        // A token pasted where an id or a name goes is never echoed back.
        let message = warden_core::redact::credentials_redacted(&message);
        let mut resp = (
            status,
            Json(ErrorBody {
                error: code,
                message,
                field,
                errors,
            }),
        )
            .into_response();
        if status == StatusCode::UNAUTHORIZED {
            resp.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"warden\""),
            );
        }
        if let Some(r) = refusal {
            resp.extensions_mut().insert(r);
        }
        resp
    }
}

impl From<crate::ledger::LedgerError> for ApiError {
    fn from(e: crate::ledger::LedgerError) -> Self {
        ApiError::LedgerUnavailable(format!("{e}; the action was not taken"))
    }
}
