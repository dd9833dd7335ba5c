//! The errors of this crate: why a token, proof, assertion or request was refused ([`TokenError`]),
//! and what is wrong with a key file ([`KeyFileError`]).
//!
//! `TokenError`'s `Display` is the `error_description` the HTTP layer returns, so it never contains a
//! token, a signature or key material: only identifiers (claim names, kids, issuers, subjects), in
//! backticks and escaped.

use std::path::PathBuf;

/// Why a token/assertion/proof/request was refused. [`TokenError::oauth_code`] gives the RFC
/// 6749/9396/9449 error code of the token endpoint, [`TokenError::bearer_error_code`] the RFC 6750/9449
/// code of a protected resource; `Display` is the description.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// Longer than the limit for its kind; refused before any decoding.
    #[error("the {what} is longer than {max} bytes")]
    TooLarge { what: &'static str, max: usize },
    /// Not a compact JWS, not base64url, not JSON, or a member of the wrong JSON type.
    #[error("the token is malformed: {0}")]
    Malformed(String),
    /// The header's `alg` is not on the allow-list of this verifier (`none` and `HS*` never are).
    #[error("the algorithm `{0}` is not accepted here")]
    UnsupportedAlgorithm(String),
    /// The key selected for the token cannot be used with the token's algorithm (e.g. `RS256` with an
    /// EC key): refused before any signature check, so no algorithm confusion is possible.
    #[error("the key `{kid}` cannot verify `{alg}` signatures: {message}")]
    KeyAlgorithmMismatch {
        alg: String,
        kid: String,
        message: String,
    },
    /// No key with the token's `kid` is known (or the token has no `kid` where one is required).
    #[error("no key with kid `{kid}` is known")]
    UnknownKey { kid: String },
    #[error("the signature is invalid")]
    BadSignature,
    /// `exp` has passed (beyond the leeway).
    #[error("the token has expired")]
    Expired,
    /// `nbf` is in the future (beyond the leeway).
    #[error("the token is not valid yet")]
    NotYetValid,
    /// `iat` is in the future (beyond the leeway).
    #[error("the token was issued in the future")]
    IssuedInFuture,
    /// A proof whose `iat` is older than its verifier accepts (DPoP).
    #[error("the token is too old: it was issued more than {max_age_secs} seconds ago")]
    TooOld { max_age_secs: i64 },
    /// `exp - iat` is longer than allowed for this kind of token.
    #[error("the token's lifetime exceeds {max_secs} seconds")]
    LifetimeTooLong { max_secs: i64 },
    #[error("the token is not meant for this audience")]
    WrongAudience,
    #[error("the token was not issued by the expected issuer")]
    WrongIssuer,
    /// A SPIFFE ID outside the trust domain this issuer vouches for.
    #[error("the subject `{found}` is not in the trust domain `{expected}`")]
    WrongTrustDomain { expected: String, found: String },
    /// The header's `typ` is not this kind of token (e.g. an assertion presented as a task token).
    #[error("{}", wrong_type(expected, found))]
    WrongType { expected: &'static str, found: String },
    #[error("the claim `{0}` is missing")]
    MissingClaim(&'static str),
    #[error("the claim `{claim}` is invalid: {message}")]
    InvalidClaim { claim: String, message: String },
    /// A federated token whose mapping claim names no registered agent.
    #[error("the value `{value}` of claim `{claim}` is not mapped to any agent")]
    UnmappedIdentity { claim: String, value: String },
    /// A public key (JWK or stored key) that cannot be used.
    #[error("invalid key: {0}")]
    InvalidKey(String),
    /// The DPoP proof was refused; the inner error says why.
    #[error("invalid dpop proof: {0}")]
    DpopProof(Box<TokenError>),
    /// A token-endpoint request that is missing, repeats or misspells a parameter.
    #[error("{0}")]
    InvalidRequest(String),
    #[error(
        "the grant type `{0}` is not supported; use `urn:ietf:params:oauth:grant-type:token-exchange` or `client_credentials`"
    )]
    UnsupportedGrantType(String),
    /// `authorization_details` that do not describe a valid Warden task.
    #[error("{field}: {message}")]
    InvalidAuthorizationDetails { field: String, message: String },
    /// A delegation asked for more than the delegating task holds.
    #[error("{field}: `{item}` is outside the delegating task's scope")]
    ScopeWidened { field: String, item: String },
    /// A federated issuer's configuration is unusable (reported at startup or on JWKS refresh).
    #[error("invalid federation configuration: {0}")]
    InvalidConfig(String),
    /// Something that cannot happen with valid inputs (e.g. serializing claims failed).
    #[error("internal error: {0}")]
    Internal(String),
}

fn wrong_type(expected: &str, found: &str) -> String {
    if found.is_empty() {
        format!("the token has no `typ`; expected `{expected}`")
    } else {
        format!("the token type is `{found}`; expected `{expected}`")
    }
}

impl TokenError {
    /// The error code for the token endpoint (`POST /v1/token`): `invalid_request` for a request that
    /// is missing, repeats or misspells a parameter; `invalid_grant` for a presented credential
    /// (assertion, federated token, subject or actor token) that is invalid for any reason;
    /// `unsupported_grant_type`; `invalid_authorization_details` (RFC 9396 §5) for an unusable intent
    /// or one that widens a delegation; `invalid_dpop_proof` (RFC 9449 §5); `server_error`.
    ///
    /// Note: RFC 8693 §2.2.2 names `invalid_request` for an invalid subject/actor token; Warden uses
    /// the RFC 6749 §5.2 `invalid_grant`, as most deployments do, so that clients can tell "fix the
    /// request" from "get a new credential".
    pub fn oauth_code(&self) -> &'static str {
        match self {
            Self::InvalidRequest(_) => "invalid_request",
            Self::UnsupportedGrantType(_) => "unsupported_grant_type",
            Self::InvalidAuthorizationDetails { .. } | Self::ScopeWidened { .. } => {
                "invalid_authorization_details"
            }
            Self::DpopProof(_) => "invalid_dpop_proof",
            Self::InvalidConfig(_) | Self::Internal(_) => "server_error",
            _ => "invalid_grant",
        }
    }

    /// The error code for a protected resource (the MCP gateway, `/v1/authorize`), for the
    /// `WWW-Authenticate: Bearer error="..."` (or `DPoP error="..."`) header: RFC 6750 §3.1 and RFC 9449
    /// §7.1. Token problems are `invalid_token`; request problems `invalid_request`.
    pub fn bearer_error_code(&self) -> &'static str {
        match self {
            Self::DpopProof(_) => "invalid_dpop_proof",
            Self::InvalidRequest(_)
            | Self::UnsupportedGrantType(_)
            | Self::InvalidAuthorizationDetails { .. }
            | Self::ScopeWidened { .. } => "invalid_request",
            Self::InvalidConfig(_) | Self::Internal(_) => "server_error",
            _ => "invalid_token",
        }
    }

    /// Wraps an error found while checking a DPoP proof (idempotent).
    pub(crate) fn in_dpop_proof(self) -> Self {
        match self {
            Self::DpopProof(_) => self,
            other => Self::DpopProof(Box::new(other)),
        }
    }
}

/// A key file that cannot be written or read. Every variant names the file; none contains key
/// material (a JSON syntax error is reported by line and column only).
#[derive(Debug, thiserror::Error)]
pub enum KeyFileError {
    #[error("cannot {action} key file `{}`: {source}", path.display())]
    Io {
        path: PathBuf,
        action: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("key file `{}` already exists; refusing to overwrite it", path.display())]
    AlreadyExists { path: PathBuf },
    #[error(
        "key file `{}` is accessible by group or others (mode {mode:o}); run `chmod 600` on it",
        path.display()
    )]
    Permissions { path: PathBuf, mode: u32 },
    #[error("key file `{}` is corrupt: {reason}", path.display())]
    Corrupt { path: PathBuf, reason: String },
    #[error("key file `{}` says kid `{stored}` but its key's kid is `{actual}`", path.display())]
    KidMismatch {
        path: PathBuf,
        stored: String,
        actual: String,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_follow_the_rfcs() {
        assert_eq!(TokenError::Expired.oauth_code(), "invalid_grant");
        assert_eq!(TokenError::Malformed("x".into()).oauth_code(), "invalid_grant");
        assert_eq!(
            TokenError::InvalidRequest("x".into()).oauth_code(),
            "invalid_request"
        );
        assert_eq!(
            TokenError::InvalidRequest("x".into()).bearer_error_code(),
            "invalid_request"
        );
        assert_eq!(TokenError::Expired.bearer_error_code(), "invalid_token");
        assert_eq!(
            TokenError::UnsupportedGrantType("password".into()).oauth_code(),
            "unsupported_grant_type"
        );
        let dpop = TokenError::BadSignature.in_dpop_proof();
        assert_eq!(dpop.oauth_code(), "invalid_dpop_proof");
        assert_eq!(dpop.bearer_error_code(), "invalid_dpop_proof");
        assert_eq!(dpop.clone().in_dpop_proof(), dpop);
        assert_eq!(dpop.to_string(), "invalid dpop proof: the signature is invalid");
        assert_eq!(
            TokenError::ScopeWidened {
                field: "tools[0]".into(),
                item: "x".into()
            }
            .oauth_code(),
            "invalid_authorization_details"
        );
        assert_eq!(TokenError::Internal("x".into()).oauth_code(), "server_error");
    }

    #[test]
    fn wrong_type_reads_well() {
        let e = TokenError::WrongType {
            expected: "dpop+jwt",
            found: String::new(),
        };
        assert_eq!(e.to_string(), "the token has no `typ`; expected `dpop+jwt`");
        let e = TokenError::WrongType {
            expected: "dpop+jwt",
            found: "JWT".into(),
        };
        assert_eq!(e.to_string(), "the token type is `JWT`; expected `dpop+jwt`");
    }
}
