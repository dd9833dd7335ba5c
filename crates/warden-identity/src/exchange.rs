//! The RFC 8693 token-exchange request (`POST /v1/token`, form-encoded) parsed into a typed value, and
//! the success response body.
//!
//! The HTTP layer decodes the form into pairs; this module applies the protocol's rules so the handler
//! receives a request that is complete and consistent, with secrets already wrapped in `Secret`.
//! Parsing checks shape only: the tokens inside are verified later, by the verifier for their type.

use std::collections::BTreeMap;
use std::fmt;

use serde::Serialize;
use serde_json::Value;
use uuid::Uuid;
use warden_core::Secret;

use crate::jws::shorten;
use crate::task::MAX_AUTHORIZATION_DETAILS_BYTES;
use crate::{MAX_TOKEN_BYTES, TaskIntent, TokenError};

pub const GRANT_TYPE_TOKEN_EXCHANGE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
/// RFC 6749 §4.4: an agent authenticating as an OAuth client (with `private_key_jwt`) gets a task
/// token for its requested or default intent.
pub const GRANT_TYPE_CLIENT_CREDENTIALS: &str = "client_credentials";
/// RFC 7523 §2.2: `client_assertion` is a JWT.
pub const CLIENT_ASSERTION_TYPE_JWT_BEARER: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";
pub const TOKEN_TYPE_JWT: &str = "urn:ietf:params:oauth:token-type:jwt";
pub const TOKEN_TYPE_ACCESS: &str = "urn:ietf:params:oauth:token-type:access_token";
pub const TOKEN_TYPE_TASK: &str = "urn:warden:params:oauth:token-type:task";
/// Most form parameters accepted in one request.
pub const MAX_FORM_PARAMETERS: usize = 64;

/// A parsed token-exchange request (form body). Secrets inside are `Secret<String>`.
#[derive(Clone, Debug)]
pub struct TokenExchangeRequest {
    pub subject_token: Secret<String>,
    /// [`TOKEN_TYPE_JWT`] (an agent assertion or a federated token) or [`TOKEN_TYPE_TASK`] (a parent
    /// task token, for delegation).
    pub subject_token_type: String,
    pub actor_token: Option<Secret<String>>,
    /// [`TOKEN_TYPE_JWT`] when `actor_token` is present.
    pub actor_token_type: Option<String>,
    /// `actor_dpop` (Warden's extension for delegation): a DPoP proof (RFC 9449) of the key the
    /// delegated token is to be bound to, made for `POST` the token endpoint without `ath`. Needed
    /// when the parent's token is DPoP-bound: the `DPoP` header then proves the parent's key, and one
    /// header cannot prove two keys. Only with `actor_token`.
    pub actor_dpop: Option<String>,
    /// [`TOKEN_TYPE_TASK`] or [`TOKEN_TYPE_ACCESS`], if given.
    pub requested_token_type: Option<String>,
    pub audience: Option<String>,
    /// RFC 8707 resource indicator (RFC 8693 §2.1): the task token is for this resource only.
    pub resource: Option<String>,
    pub scope: Option<String>,
    /// From `authorization_details`.
    pub intent: Option<TaskIntent>,
}

fn invalid(message: String) -> TokenError {
    TokenError::InvalidRequest(message)
}

impl TokenExchangeRequest {
    /// From the decoded form pairs. Rules:
    /// * at most [`MAX_FORM_PARAMETERS`] pairs; a parameter given twice is `invalid_request` (RFC 6749
    ///   §3.2); a parameter with an empty value counts as omitted (RFC 6749 §3.1); unknown parameters
    ///   are ignored;
    /// * each value at most [`MAX_TOKEN_BYTES`] (`authorization_details`: 16 KiB);
    /// * `grant_type` must be the token-exchange URN (else `unsupported_grant_type`);
    /// * `subject_token` and `subject_token_type` required, the type [`TOKEN_TYPE_JWT`] or
    ///   [`TOKEN_TYPE_TASK`]; `actor_token_type` required iff `actor_token` is present, and
    ///   [`TOKEN_TYPE_JWT`]; `actor_dpop` only with `actor_token`; `requested_token_type`, if present,
    ///   [`TOKEN_TYPE_TASK`] or [`TOKEN_TYPE_ACCESS`];
    /// * `authorization_details` is parsed by [`TaskIntent::from_authorization_details`].
    ///
    /// Errors name the parameter.
    pub fn from_form(pairs: &[(String, String)]) -> Result<Self, TokenError> {
        let params = form_params(pairs)?;
        let get = |name: &str| params.get(name).copied().filter(|v| !v.is_empty());
        let required = |name: &str| get(name).ok_or_else(|| invalid(format!("missing parameter `{name}`")));
        let one_of = |name: &str, value: &str, allowed: &[&str]| -> Result<String, TokenError> {
            if allowed.contains(&value) {
                Ok(value.to_owned())
            } else {
                let allowed: Vec<String> = allowed.iter().map(|a| format!("`{a}`")).collect();
                Err(invalid(format!(
                    "parameter `{name}` is `{}`; expected {}",
                    shorten(value),
                    allowed.join(" or ")
                )))
            }
        };

        let grant_type = required("grant_type")?;
        if grant_type != GRANT_TYPE_TOKEN_EXCHANGE {
            return Err(TokenError::UnsupportedGrantType(shorten(grant_type)));
        }
        let subject_token = Secret::new(required("subject_token")?.to_owned());
        let subject_token_type = one_of(
            "subject_token_type",
            required("subject_token_type")?,
            &[TOKEN_TYPE_JWT, TOKEN_TYPE_TASK],
        )?;
        let (actor_token, actor_token_type) = match (get("actor_token"), get("actor_token_type")) {
            (Some(token), Some(typ)) => (
                Some(Secret::new(token.to_owned())),
                Some(one_of("actor_token_type", typ, &[TOKEN_TYPE_JWT])?),
            ),
            (Some(_), None) => {
                return Err(invalid(
                    "missing parameter `actor_token_type` (required with `actor_token`)".into(),
                ));
            }
            (None, Some(_)) => {
                return Err(invalid(
                    "parameter `actor_token_type` is given without `actor_token`".into(),
                ));
            }
            (None, None) => (None, None),
        };
        let actor_dpop = get("actor_dpop").map(str::to_owned);
        if actor_dpop.is_some() && actor_token.is_none() {
            return Err(invalid(
                "parameter `actor_dpop` is given without `actor_token` (it proves the key of a delegated \
                 token; to bind a new task's token, send the proof in the `DPoP` header)"
                    .into(),
            ));
        }
        let requested_token_type = get("requested_token_type")
            .map(|t| one_of("requested_token_type", t, &[TOKEN_TYPE_TASK, TOKEN_TYPE_ACCESS]))
            .transpose()?;
        let text = |name: &str| -> Result<Option<String>, TokenError> {
            match get(name) {
                Some(v) if v.chars().any(char::is_control) => Err(invalid(format!(
                    "parameter `{name}` contains a control character"
                ))),
                v => Ok(v.map(str::to_owned)),
            }
        };
        let audience = text("audience")?;
        let resource = text("resource")?;
        let scope = text("scope")?;
        let intent = get("authorization_details")
            .map(TaskIntent::from_authorization_details)
            .transpose()?;
        Ok(Self {
            subject_token,
            subject_token_type,
            actor_token,
            actor_token_type,
            actor_dpop,
            requested_token_type,
            audience,
            resource,
            scope,
            intent,
        })
    }
}

/// The generic checks of a token request's form: at most [`MAX_FORM_PARAMETERS`] pairs, no
/// parameter twice, each value within its size limit. Names map to values (empty values kept; the
/// readers treat them as omitted).
fn form_params(pairs: &[(String, String)]) -> Result<BTreeMap<&str, &str>, TokenError> {
    if pairs.len() > MAX_FORM_PARAMETERS {
        return Err(invalid(format!(
            "the request has {} parameters; the limit is {MAX_FORM_PARAMETERS}",
            pairs.len()
        )));
    }
    let mut params: BTreeMap<&str, &str> = BTreeMap::new();
    for (name, value) in pairs {
        let limit = if name == "authorization_details" {
            MAX_AUTHORIZATION_DETAILS_BYTES
        } else {
            MAX_TOKEN_BYTES
        };
        if value.len() > limit {
            return Err(invalid(format!(
                "parameter `{}` is longer than {limit} bytes",
                shorten(name)
            )));
        }
        if params.insert(name, value).is_some() {
            return Err(invalid(format!(
                "parameter `{}` is given more than once",
                shorten(name)
            )));
        }
    }
    Ok(params)
}

/// The request's `grant_type` (after the generic form checks), so the endpoint can pick the parser.
pub fn grant_type_of(pairs: &[(String, String)]) -> Result<String, TokenError> {
    let params = form_params(pairs)?;
    params
        .get("grant_type")
        .copied()
        .filter(|v| !v.is_empty())
        .map(str::to_owned)
        .ok_or_else(|| invalid("missing parameter `grant_type`".into()))
}

/// A client-credentials request (RFC 6749 §4.4) authenticated with `private_key_jwt` (RFC 7523
/// §2.2). Secrets inside are `Secret<String>`.
#[derive(Clone, Debug)]
pub struct ClientCredentialsRequest {
    /// The agent's SPIFFE ID or name, when sent (RFC 7523 §3: then `iss`/`sub` must be it).
    pub client_id: Option<String>,
    pub client_assertion: Secret<String>,
    /// RFC 8707 resource indicator: the task token is for this resource only.
    pub resource: Option<String>,
    /// Space-separated scope values (Warden's: narrowing of the agent's default intent).
    pub scope: Option<String>,
    /// From `authorization_details`.
    pub intent: Option<TaskIntent>,
}

impl ClientCredentialsRequest {
    /// From the decoded form pairs: the generic rules of [`TokenExchangeRequest::from_form`];
    /// `grant_type` must be `client_credentials`; `client_assertion_type` must be
    /// [`CLIENT_ASSERTION_TYPE_JWT_BEARER`] and `client_assertion` present (the only client
    /// authentication Warden takes: no shared secrets); `client_secret` is refused; `resource` at
    /// most once (one resource per token); `authorization_details` is parsed as a task intent.
    /// Errors name the parameter.
    pub fn from_form(pairs: &[(String, String)]) -> Result<Self, TokenError> {
        let params = form_params(pairs)?;
        let get = |name: &str| params.get(name).copied().filter(|v| !v.is_empty());
        let grant_type = get("grant_type").ok_or_else(|| invalid("missing parameter `grant_type`".into()))?;
        if grant_type != GRANT_TYPE_CLIENT_CREDENTIALS {
            return Err(TokenError::UnsupportedGrantType(shorten(grant_type)));
        }
        if get("client_secret").is_some() {
            return Err(invalid(
                "parameter `client_secret` is not accepted: agents authenticate with `private_key_jwt` \
                 (`client_assertion` signed by their enrolled key)"
                    .into(),
            ));
        }
        match get("client_assertion_type") {
            None => {
                return Err(invalid(format!(
                    "missing parameter `client_assertion_type` (expected `{CLIENT_ASSERTION_TYPE_JWT_BEARER}`)"
                )));
            }
            Some(t) if t != CLIENT_ASSERTION_TYPE_JWT_BEARER => {
                return Err(invalid(format!(
                    "parameter `client_assertion_type` is `{}`; expected `{CLIENT_ASSERTION_TYPE_JWT_BEARER}`",
                    shorten(t)
                )));
            }
            Some(_) => {}
        }
        let client_assertion = Secret::new(
            get("client_assertion")
                .ok_or_else(|| invalid("missing parameter `client_assertion`".into()))?
                .to_owned(),
        );
        let text = |name: &str| -> Result<Option<String>, TokenError> {
            match get(name) {
                Some(v) if v.chars().any(char::is_control) => Err(invalid(format!(
                    "parameter `{name}` contains a control character"
                ))),
                v => Ok(v.map(str::to_owned)),
            }
        };
        let intent = get("authorization_details")
            .map(TaskIntent::from_authorization_details)
            .transpose()?;
        Ok(Self {
            client_id: text("client_id")?,
            client_assertion,
            resource: text("resource")?,
            scope: text("scope")?,
            intent,
        })
    }
}

/// The RFC 8693 §2.2.1 success body (plus `task_id` and the granted `authorization_details`, RFC 9396
/// §7). `Debug` redacts the token.
#[derive(Clone, Serialize)]
pub struct TokenExchangeResponse {
    pub access_token: String,
    /// [`TOKEN_TYPE_TASK`] or [`TOKEN_TYPE_ACCESS`].
    pub issued_token_type: &'static str,
    /// `Bearer`, or `DPoP` when the token is bound to a DPoP key.
    pub token_type: &'static str,
    pub expires_in: i64,
    pub task_id: Uuid,
    pub authorization_details: Vec<Value>,
}

impl fmt::Debug for TokenExchangeResponse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenExchangeResponse")
            .field("access_token", &"REDACTED")
            .field("issued_token_type", &self.issued_token_type)
            .field("token_type", &self.token_type)
            .field("expires_in", &self.expires_in)
            .field("task_id", &self.task_id)
            .field("authorization_details", &self.authorization_details)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::sample_intent;
    use proptest::prelude::*;

    fn form(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn base() -> Vec<(&'static str, &'static str)> {
        vec![
            ("grant_type", GRANT_TYPE_TOKEN_EXCHANGE),
            ("subject_token", "a.b.c"),
            ("subject_token_type", TOKEN_TYPE_JWT),
        ]
    }

    fn check(pairs: &[(&str, &str)], want: &str) {
        let err = TokenExchangeRequest::from_form(&form(pairs)).expect_err("refused");
        assert!(err.to_string().contains(want), "`{err}` lacks `{want}`");
        assert!(!err.to_string().contains("a.b.c"), "`{err}` shows the token");
    }

    fn with<'a>(extra: &[(&'a str, &'a str)]) -> Vec<(&'a str, &'a str)> {
        let mut pairs: Vec<(&str, &str)> = base();
        pairs.extend_from_slice(extra);
        pairs
    }

    #[test]
    fn minimal_and_full_requests() {
        let req = TokenExchangeRequest::from_form(&form(&base())).expect("valid");
        assert_eq!(req.subject_token.expose(), "a.b.c");
        assert_eq!(req.subject_token_type, TOKEN_TYPE_JWT);
        assert!(req.actor_token.is_none() && req.intent.is_none() && req.audience.is_none());

        let details = sample_intent().to_authorization_details().to_string();
        let pairs = vec![
            ("grant_type", GRANT_TYPE_TOKEN_EXCHANGE),
            ("subject_token", "parent.task.token"),
            ("subject_token_type", TOKEN_TYPE_TASK),
            ("actor_token", "child.assertion.x"),
            ("actor_token_type", TOKEN_TYPE_JWT),
            ("actor_dpop", "child.proof.x"),
            ("requested_token_type", TOKEN_TYPE_TASK),
            ("audience", "https://warden.example.com"),
            ("scope", "mcp"),
            ("authorization_details", &details),
            ("client_id", "ignored"),
            ("resource", ""),
        ];
        let req = TokenExchangeRequest::from_form(&form(&pairs)).expect("valid");
        assert_eq!(
            req.actor_token.as_ref().map(|t| t.expose().as_str()),
            Some("child.assertion.x")
        );
        assert_eq!(req.actor_token_type.as_deref(), Some(TOKEN_TYPE_JWT));
        assert_eq!(req.actor_dpop.as_deref(), Some("child.proof.x"));
        assert_eq!(req.requested_token_type.as_deref(), Some(TOKEN_TYPE_TASK));
        assert_eq!(req.scope.as_deref(), Some("mcp"));
        assert_eq!(req.intent, Some(sample_intent()));
        let debug = format!("{req:?}");
        assert!(
            !debug.contains("parent.task.token") && !debug.contains("child.assertion.x"),
            "{debug}"
        );
    }

    #[test]
    fn refusals() {
        check(&base()[1..], "missing parameter `grant_type`");
        let err = TokenExchangeRequest::from_form(&form(&[("grant_type", "password")])).expect_err("refused");
        assert_eq!(err.oauth_code(), "unsupported_grant_type");
        assert!(err.to_string().contains("`password`"));
        check(&[base()[0], base()[2]], "missing parameter `subject_token`");
        check(&base()[..2], "missing parameter `subject_token_type`");
        check(
            &[base()[0], base()[1], ("subject_token_type", TOKEN_TYPE_ACCESS)],
            "parameter `subject_token_type` is `urn:ietf:params:oauth:token-type:access_token`",
        );
        check(
            &with(&[("actor_token", "x.y.z")]),
            "missing parameter `actor_token_type`",
        );
        check(
            &with(&[("actor_token_type", TOKEN_TYPE_JWT)]),
            "without `actor_token`",
        );
        check(
            &with(&[("actor_token", "x.y.z"), ("actor_token_type", TOKEN_TYPE_TASK)]),
            "parameter `actor_token_type` is",
        );
        check(
            &with(&[("actor_dpop", "x.y.z")]),
            "`actor_dpop` is given without `actor_token`",
        );
        check(
            &with(&[("requested_token_type", TOKEN_TYPE_JWT)]),
            "parameter `requested_token_type` is",
        );
        check(
            &with(&[("subject_token", "again")]),
            "parameter `subject_token` is given more than once",
        );
        check(
            &with(&[("foo", "1"), ("foo", "2")]),
            "parameter `foo` is given more than once",
        );
        check(
            &with(&[("audience", "a\nb")]),
            "parameter `audience` contains a control character",
        );
        check(
            &with(&[("authorization_details", "[]")]),
            "authorization_details: must hold exactly one",
        );
        let err = TokenExchangeRequest::from_form(&form(&with(&[("authorization_details", "[1]")])))
            .expect_err("refused");
        assert_eq!(err.oauth_code(), "invalid_authorization_details");
        let big = "x".repeat(MAX_TOKEN_BYTES + 1);
        check(
            &with(&[("scope", &big)]),
            "parameter `scope` is longer than 8192 bytes",
        );
        let many: Vec<(String, String)> = (0..65).map(|i| (format!("p{i}"), "v".into())).collect();
        assert!(TokenExchangeRequest::from_form(&many).is_err());
        // Empty values count as omitted.
        check(
            &[base()[0], ("subject_token", ""), base()[2]],
            "missing parameter `subject_token`",
        );
        let err = TokenExchangeRequest::from_form(&form(&base()[1..])).expect_err("refused");
        assert_eq!(err.oauth_code(), "invalid_request");
    }

    #[test]
    fn response_debug_redacts_the_token() {
        let response = TokenExchangeResponse {
            access_token: "secret.token.value".into(),
            issued_token_type: TOKEN_TYPE_TASK,
            token_type: "DPoP",
            expires_in: 300,
            task_id: Uuid::nil(),
            authorization_details: vec![],
        };
        assert!(!format!("{response:?}").contains("secret.token.value"));
        let json = serde_json::to_value(&response).expect("serializes");
        assert_eq!(json["access_token"], "secret.token.value");
        assert_eq!(json["token_type"], "DPoP");
    }

    proptest! {
        #[test]
        fn from_form_never_panics(pairs in prop::collection::vec(("\\PC{0,25}", "\\PC{0,40}"), 0..12)) {
            let _ = TokenExchangeRequest::from_form(&pairs);
        }

        #[test]
        fn from_form_never_panics_near_valid(
            extra in prop::collection::vec((
                prop_oneof![
                    Just("actor_token".to_string()), Just("actor_token_type".to_string()),
                    Just("requested_token_type".to_string()), Just("authorization_details".to_string()),
                    Just("subject_token".to_string()), "[a-z_]{1,12}"
                ],
                prop_oneof![Just(TOKEN_TYPE_JWT.to_string()), Just(TOKEN_TYPE_TASK.to_string()), "\\PC{0,30}"],
            ), 0..5)
        ) {
            let mut pairs = form(&base());
            pairs.extend(extra);
            let _ = TokenExchangeRequest::from_form(&pairs);
        }
    }

    mod client_credentials {
        use super::*;

        const ASSERTION: &str = "h.p.s";

        fn base() -> Vec<(&'static str, &'static str)> {
            vec![
                ("grant_type", GRANT_TYPE_CLIENT_CREDENTIALS),
                ("client_assertion_type", CLIENT_ASSERTION_TYPE_JWT_BEARER),
                ("client_assertion", ASSERTION),
            ]
        }

        fn refused(pairs: &[(&str, &str)], want: &str) {
            let e = ClientCredentialsRequest::from_form(&form(pairs)).expect_err("refused");
            assert!(e.to_string().contains(want), "`{e}` lacks `{want}`");
            assert!(!e.to_string().contains(ASSERTION), "`{e}` shows the assertion");
        }

        #[test]
        fn parses_what_oauth_clients_send() {
            let mut pairs = base();
            let details = sample_intent().to_authorization_details().to_string();
            pairs.extend([
                ("client_id", "spiffe://warden.local/agent/bot"),
                ("resource", "https://warden.example.com/mcp/crm"),
                ("scope", "tool:search"),
                ("authorization_details", details.as_str()),
            ]);
            let r = ClientCredentialsRequest::from_form(&form(&pairs)).expect("parsed");
            assert_eq!(r.client_id.as_deref(), Some("spiffe://warden.local/agent/bot"));
            assert_eq!(r.client_assertion.expose(), ASSERTION);
            assert_eq!(r.resource.as_deref(), Some("https://warden.example.com/mcp/crm"));
            assert_eq!(r.scope.as_deref(), Some("tool:search"));
            assert_eq!(r.intent, Some(sample_intent()));
            assert!(
                !format!("{r:?}").contains(ASSERTION),
                "Debug redacts the assertion"
            );
            let r = ClientCredentialsRequest::from_form(&form(&base())).expect("minimal");
            assert!(r.client_id.is_none() && r.resource.is_none() && r.intent.is_none());
            assert_eq!(
                grant_type_of(&form(&base())).as_deref(),
                Ok(GRANT_TYPE_CLIENT_CREDENTIALS)
            );
        }

        #[test]
        fn refusals_name_the_parameter() {
            let without = |name: &str| -> Vec<(&'static str, &'static str)> {
                base().into_iter().filter(|(k, _)| *k != name).collect()
            };
            refused(&without("client_assertion_type"), "client_assertion_type");
            refused(&without("client_assertion"), "client_assertion");
            let mut p = without("client_assertion_type");
            p.push(("client_assertion_type", "urn:other"));
            refused(&p, "client_assertion_type");
            let mut p = base();
            p.push(("client_secret", "s3cr3t-s3cr3t"));
            refused(&p, "client_secret");
            let mut p = base();
            p.push(("resource", "https://a.example/mcp/x"));
            p.push(("resource", "https://a.example/mcp/y"));
            refused(&p, "more than once");
            let mut p = base();
            p.push(("scope", "tool:a\ntool:b"));
            refused(&p, "control character");
            let mut p = without("grant_type");
            p.push(("grant_type", "password"));
            assert!(matches!(
                ClientCredentialsRequest::from_form(&form(&p)),
                Err(TokenError::UnsupportedGrantType(_))
            ));
            assert!(grant_type_of(&form(&without("grant_type"))).is_err());
        }

        #[test]
        fn token_exchange_takes_a_resource() {
            let mut pairs = super::base();
            pairs.push(("resource", "https://warden.example.com/mcp/crm"));
            let r = TokenExchangeRequest::from_form(&form(&pairs)).expect("parsed");
            assert_eq!(r.resource.as_deref(), Some("https://warden.example.com/mcp/crm"));
        }
    }
}
