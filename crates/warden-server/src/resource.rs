//! Warden's MCP endpoints as OAuth protected resources: RFC 9728 metadata, RFC 8707 resource
//! indicators, and which audience a task token may carry where.
//!
//! Each gateway endpoint `/mcp/<upstream>` is its own resource, identified by
//! `<public URL>/mcp/<upstream>`; its metadata is served at
//! `/.well-known/oauth-protected-resource/mcp/<upstream>` (RFC 9728 §3.1: the well-known segment goes
//! between the host and the resource's path) and names Warden's issuer as its only authorization
//! server. A 401 from the endpoint points at that document (`WWW-Authenticate: Bearer
//! resource_metadata="…"`), which is how an off-the-shelf MCP client finds the token endpoint.
//!
//! INVARIANT (a task token is for one resource): a task token requested with `resource` carries that
//! resource as its `aud` and is accepted only there: at `/mcp/<that upstream>`, and at the token
//! endpoint to renew or delegate it (the new token keeps the same `aud`). Everywhere else — another
//! upstream, `/v1/authorize`, the task and approval endpoints — it is a 401 `invalid_token` naming the
//! resource it is for. A token requested without `resource` has Warden's issuer as its `aud` and is
//! accepted wherever task tokens are, as before.
//!
//! The metadata is served for any well-formed upstream name, registered or not: whether an upstream
//! exists is not something an unauthenticated caller learns here (the gateway answers an unknown one
//! only after the token was checked).

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use warden_core::UpstreamName;

use crate::AppState;
use crate::oauth::OAuthError;

/// The path under which the gateway serves upstreams.
const MCP_PATH: &str = "/mcp/";

/// The resource identifier of the gateway endpoint of `upstream`.
pub fn mcp_resource(issuer: &str, upstream: &str) -> String {
    format!("{issuer}{MCP_PATH}{upstream}")
}

/// Where the RFC 9728 metadata of the gateway endpoint of `upstream` is served.
pub fn metadata_url(issuer: &str, upstream: &str) -> String {
    format!("{issuer}/.well-known/oauth-protected-resource{MCP_PATH}{upstream}")
}

/// The upstream whose gateway endpoint `aud` identifies, if it is one of this server's resources.
pub fn resource_upstream<'a>(issuer: &str, aud: &'a str) -> Option<&'a str> {
    aud.strip_prefix(issuer)?
        .strip_prefix(MCP_PATH)
        .filter(|name| UpstreamName::parse(name).is_ok())
}

/// Whether a task token with audience `aud` may be verified at all here: Warden's issuer, or one of
/// its resources. Which of them a given place accepts is [`Presented::check`]'s business.
pub fn known_audience(issuer: &str, aud: &str) -> bool {
    aud == issuer || resource_upstream(issuer, aud).is_some()
}

/// Where a task token was presented, for the audience check.
#[derive(Clone, Copy, Debug)]
pub enum Presented<'a> {
    /// A REST endpoint (`/v1/authorize`, the task and approval endpoints): only tokens bound to no
    /// resource.
    Api,
    /// The gateway endpoint of this upstream: unbound tokens and tokens for this resource.
    Mcp(&'a str),
    /// The token endpoint (renewal, delegation): any of this server's audiences; the new token keeps it.
    TokenEndpoint,
}

impl Presented<'_> {
    /// Refuses a verified token whose audience this place does not take, naming both.
    pub fn check(self, issuer: &str, aud: &str) -> Result<(), OAuthError> {
        if aud == issuer {
            return Ok(());
        }
        match self {
            Presented::TokenEndpoint => Ok(()),
            Presented::Mcp(upstream) if resource_upstream(issuer, aud) == Some(upstream) => Ok(()),
            Presented::Mcp(upstream) => Err(OAuthError::invalid_token(format!(
                "the token's audience is the resource `{}`, not `{}` (RFC 8707: a task token is for one resource)",
                shown(aud),
                mcp_resource(issuer, upstream)
            ))),
            Presented::Api => Err(OAuthError::invalid_token(format!(
                "the token's audience is the resource `{}`; it is accepted only there (RFC 8707), not at Warden's API",
                shown(aud)
            ))),
        }
    }
}

fn shown(s: &str) -> String {
    s.chars().take(300).collect::<String>().escape_debug().to_string()
}

/// RFC 8707 §2: the error for a `resource` that is not one of this server's.
pub fn invalid_target(description: impl Into<String>) -> OAuthError {
    OAuthError::new(StatusCode::BAD_REQUEST, "invalid_target", description)
}

/// Parses a `resource` parameter: exactly `<public URL>/mcp/<upstream>` (no query, no fragment, no
/// trailing slash), naming a registered upstream.
pub async fn requested_upstream(state: &AppState, resource: &str) -> Result<UpstreamName, OAuthError> {
    let issuer = &state.identity.settings.issuer;
    let name = resource_upstream(issuer, resource).ok_or_else(|| {
        invalid_target(format!(
            "resource `{}` is not one of Warden's: a resource is `{}` (an MCP endpoint of this server)",
            shown(resource),
            mcp_resource(issuer, "<upstream>")
        ))
    })?;
    let name = UpstreamName::parse(name).map_err(|e| invalid_target(format!("resource: {e}")))?;
    if state.store.get_upstream(&name).await?.is_none() {
        return Err(invalid_target(format!(
            "resource `{}`: no upstream `{name}` is registered",
            shown(resource)
        )));
    }
    Ok(name)
}

#[utoipa::path(get, path = "/.well-known/oauth-protected-resource/mcp/{upstream}", tag = "identity",
    params(("upstream" = String, Path, description = "The upstream's name")),
    responses(
        (status = 200, description = "RFC 9728 metadata of the gateway endpoint `/mcp/{upstream}`"),
        (status = 404, description = "Not an upstream name"),
    ))]
pub async fn protected_resource_metadata(
    State(state): State<AppState>,
    Path(upstream): Path<String>,
) -> Response {
    let Ok(name) = UpstreamName::parse(&upstream) else {
        return (
            StatusCode::NOT_FOUND,
            Json(serde_json::json!({
                "error": "not_found",
                "message": "no protected resource here: the path names no valid upstream",
            })),
        )
            .into_response();
    };
    let issuer = &state.identity.settings.issuer;
    let mut resp = Json(serde_json::json!({
        "resource": mcp_resource(issuer, name.as_str()),
        "authorization_servers": [issuer],
        "bearer_methods_supported": ["header"],
        "resource_signing_alg_values_supported": ["EdDSA"],
        "dpop_signing_alg_values_supported": ["EdDSA", "ES256"],
        "resource_name": format!("Warden MCP gateway: {name}"),
        "resource_documentation": format!("{issuer}/v1/openapi.json"),
    }))
    .into_response();
    resp.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=300"),
    );
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    const ISS: &str = "https://warden.example.com";

    #[test]
    fn resources_are_exactly_the_gateway_endpoints() {
        assert_eq!(mcp_resource(ISS, "crm"), "https://warden.example.com/mcp/crm");
        assert_eq!(
            metadata_url(ISS, "crm"),
            "https://warden.example.com/.well-known/oauth-protected-resource/mcp/crm"
        );
        assert_eq!(
            resource_upstream(ISS, "https://warden.example.com/mcp/crm"),
            Some("crm")
        );
        for not in [
            "https://warden.example.com/mcp/crm/",
            "https://warden.example.com/mcp/crm?x=1",
            "https://warden.example.com/mcp/crm#f",
            "https://warden.example.com/mcp/",
            "https://warden.example.com/mcp/CRM",
            "https://warden.example.com/v1/token",
            "https://warden.example.com.evil/mcp/crm",
            "https://other.example.com/mcp/crm",
            "https://warden.example.com",
        ] {
            assert_eq!(resource_upstream(ISS, not), None, "{not}");
        }
        assert!(known_audience(ISS, ISS));
        assert!(known_audience(ISS, "https://warden.example.com/mcp/crm"));
        assert!(!known_audience(ISS, "https://warden.example.com/"));
    }

    #[test]
    fn each_place_takes_its_audiences() {
        let a = "https://warden.example.com/mcp/a";
        assert!(Presented::Mcp("a").check(ISS, a).is_ok());
        assert!(
            Presented::Mcp("a").check(ISS, ISS).is_ok(),
            "unbound tokens work everywhere"
        );
        let e = Presented::Mcp("b").check(ISS, a).expect_err("another resource");
        assert_eq!((e.status, e.code), (StatusCode::UNAUTHORIZED, "invalid_token"));
        assert!(
            e.description.contains("/mcp/a") && e.description.contains("/mcp/b"),
            "{}",
            e.description
        );
        let e = Presented::Api.check(ISS, a).expect_err("not at the API");
        assert_eq!(e.code, "invalid_token");
        assert!(Presented::Api.check(ISS, ISS).is_ok());
        assert!(Presented::TokenEndpoint.check(ISS, a).is_ok());
    }
}
