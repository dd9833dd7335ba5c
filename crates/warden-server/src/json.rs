//! Request extractors that turn every malformed input into a precise `400`/`413`/`415` with the
//! offending field, instead of axum's plain-text rejections.

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::header;
use serde::de::DeserializeOwned;

use crate::error::ApiError;

/// A JSON body, deserialized with the path of the failing field reported (`owners[1]`).
#[derive(Debug)]
pub struct ApiJson<T>(pub T);

impl<S, T> FromRequest<S> for ApiJson<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        if !json_content_type(&req) {
            return Err(ApiError::UnsupportedMediaType(
                "the request body must be `application/json`".into(),
            ));
        }
        let bytes = read_body(req, state).await?;
        parse_json(&bytes).map(ApiJson)
    }
}

/// A JSON body that may be absent: an empty body is `T::default()`; a non-empty one must be JSON.
#[derive(Debug)]
pub struct OptionalJson<T>(pub T);

impl<S, T> FromRequest<S> for OptionalJson<T>
where
    S: Send + Sync,
    T: DeserializeOwned + Default,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let is_json = json_content_type(&req);
        let bytes = read_body(req, state).await?;
        if bytes.is_empty() {
            return Ok(OptionalJson(T::default()));
        }
        if !is_json {
            return Err(ApiError::UnsupportedMediaType(
                "the request body must be `application/json`".into(),
            ));
        }
        parse_json(&bytes).map(OptionalJson)
    }
}

fn json_content_type(req: &Request) -> bool {
    req.headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|mime| {
            let mime = mime.trim().to_ascii_lowercase();
            mime == "application/json" || (mime.starts_with("application/") && mime.ends_with("+json"))
        })
}

/// Reads the body within the router's limit (DefaultBodyLimit), mapping an oversized one to 413.
async fn read_body<S: Send + Sync>(req: Request, state: &S) -> Result<Bytes, ApiError> {
    Bytes::from_request(req, state)
        .await
        .map_err(|e: BytesRejection| {
            if e.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::PayloadTooLarge("the request body is larger than the server accepts".into())
            } else {
                ApiError::bad_request(format!("could not read the request body: {}", e.body_text()))
            }
        })
}

/// Parses JSON, naming the field that failed. Public for the property test.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let de = &mut serde_json::Deserializer::from_slice(bytes);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        let message = if inner.is_syntax() || inner.is_eof() {
            format!("the request body is not valid JSON: {inner}")
        } else {
            // serde's messages for our validating types already name the problem precisely.
            let text = inner.to_string();
            strip_position(&text).to_owned()
        };
        let field = (path != "." && !inner.is_syntax() && !inner.is_eof()).then_some(path);
        ApiError::BadRequest { message, field }
    })
}

/// serde_json appends ` at line L column C`; the field name says more, so drop it.
fn strip_position(text: &str) -> &str {
    match text.rfind(" at line ") {
        Some(i) => &text[..i],
        None => text,
    }
}

/// Query parameters, with a 400 naming the problem.
#[derive(Debug)]
pub struct ApiQuery<T>(pub T);

impl<S, T> FromRequestParts<S> for ApiQuery<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut axum::http::request::Parts, state: &S) -> Result<Self, ApiError> {
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|q| ApiQuery(q.0))
            .map_err(|e: QueryRejection| {
                ApiError::bad_request(format!("invalid query string: {}", e.body_text()))
            })
    }
}

/// A path parameter, with a 400 naming the problem.
#[derive(Debug)]
pub struct ApiPath<T>(pub T);

impl<S, T> FromRequestParts<S> for ApiPath<T>
where
    S: Send + Sync,
    T: DeserializeOwned + Send,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut axum::http::request::Parts, state: &S) -> Result<Self, ApiError> {
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|p| ApiPath(p.0))
            .map_err(|e: PathRejection| ApiError::bad_request(format!("invalid path: {}", e.body_text())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use warden_core::AgentRegistration;

    fn bad(body: &str) -> (String, Option<String>) {
        match parse_json::<AgentRegistration>(body.as_bytes()) {
            Err(ApiError::BadRequest { message, field }) => (message, field),
            other => panic!("expected a bad request for {body}, got {other:?}"),
        }
    }

    #[test]
    fn errors_name_the_field() {
        let base = r#""owners":["a@x.io"],"environment":"staging","model":"p/m@1""#;
        let (m, f) = bad(&format!(r#"{{"name":"Bad",{base}}}"#));
        assert_eq!(f.as_deref(), Some("name"));
        assert!(m.contains("contains `B`"), "{m}");
        let (m, f) =
            bad(r#"{"name":"ok","owners":["a@x.io","nope"],"environment":"staging","model":"p/m@1"}"#);
        assert_eq!(f.as_deref(), Some("owners[1]"));
        assert!(m.contains("no `@`"), "{m}");
        let (m, f) = bad(r#"{"name":"ok","owners":["a@x.io"],"environment":"prod","model":"p/m@1"}"#);
        assert_eq!(f.as_deref(), Some("environment"));
        assert!(m.contains("unknown variant `prod`"), "{m}");
        let (m, f) = bad(&format!(r#"{{"name":"ok",{base},"colour":"red"}}"#));
        assert!(m.contains("unknown field `colour`"), "{m} {f:?}");
        let (m, f) = bad(r#"{"name":"ok""#);
        assert_eq!(f, None);
        assert!(m.contains("not valid JSON"), "{m}");
        let (m, _) = bad(r#"{"name":"ok"}"#);
        assert!(m.contains("missing field `owners`"), "{m}");
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = parse_json::<AgentRegistration>(&bytes);
        }

        #[test]
        fn arbitrary_json_text_never_panics(s in "\\PC{0,300}") {
            let _ = parse_json::<warden_core::AgentUpdate>(s.as_bytes());
            let _ = parse_json::<warden_core::NewUpstream>(s.as_bytes());
            let _ = parse_json::<warden_core::NewHuman>(s.as_bytes());
        }
    }
}
