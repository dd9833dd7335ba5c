//! Warden's tokens: who an agent is, and what it may do for which task.
//!
//! This crate turns credentials into verified values and back. It does no IO except reading and
//! writing Warden's own key files, and it never looks at the clock: every check takes `now`, so the
//! server decides the time once per request and tests can pin it.
//!
//! | module | what | standard |
//! |---|---|---|
//! | [`keys`] | Warden's Ed25519 signing keys, public keys, JWK thumbprints (the kid) | RFC 8037, RFC 7638 |
//! | [`assertion`] | agents prove who they are with a short-lived JWT signed by their enrolled key | RFC 7523 |
//! | [`federation`] | tokens from trusted external issuers (OIDC, SPIFFE JWT-SVID) mapped to agents | OIDC, SPIFFE |
//! | [`task`] | the task token Warden issues: agent + task + intent, EdDSA-signed | RFC 8693 `act`, RFC 9396 |
//! | [`task_cache`] | opt-in memory of task tokens already verified, for the gateway's hot path | |
//! | [`dpop`] | proof of possession of a key bound to a task token | RFC 9449 |
//! | [`exchange`] | parsing of the token-exchange request and the response body | RFC 8693 |
//!
//! # Design choices
//!
//! * **One strict JWS reader for everything** (`jws.rs`). Every token, proof and assertion goes
//!   through the same size limit ([`MAX_TOKEN_BYTES`], checked before any decoding), the same split
//!   into exactly three canonical base64url parts, and header structs that refuse duplicate members and
//!   `crit`. Claims are read only after the signature verified.
//! * **Warden's own tokens and agents' assertions are verified with `ed25519-dalek` directly**
//!   (`verify_strict`, which also refuses small-order keys and non-canonical signatures). These are the
//!   hot paths (every MCP message carries a task token) and have exactly one algorithm, so a general
//!   JWT library buys nothing but work and latitude; see `task.rs` for the measurements.
//! * **External tokens (federation, ES256 DPoP proofs) use `jsonwebtoken`'s crypto** for RSA, RSA-PSS
//!   and ECDSA, after this crate has checked the header, the algorithm allow-list and that the key type
//!   matches the algorithm. `jsonwebtoken`'s claim validation is not used: it reads the system clock.
//! * **Algorithm confusion is impossible by construction**: the algorithm comes from configuration or
//!   from the key type, never from the token alone; `none` and every HMAC algorithm are refused
//!   everywhere.
//! * **Errors never contain tokens or key material.** Values shown in messages are claim values that
//!   are identifiers (issuers, subjects, kids), always in backticks and escaped.
//! * **Replay and revocation are the caller's job.** Verifiers return the `jti` and `exp` a replay
//!   cache needs and the task id a revocation check needs; this crate keeps no state.

pub mod assertion;
pub mod dpop;
pub mod error;
pub mod exchange;
pub mod federation;
mod jws;
pub mod keys;
pub mod spiffe;
pub mod task;
pub mod task_cache;
#[cfg(test)]
mod test_support;

pub use assertion::{
    AssertionClaims, MAX_ASSERTION_LIFETIME_SECS, assertion_issuer, assertion_kid, client_assertion_issuer,
    create_assertion, verify_assertion, verify_client_assertion,
};
pub use dpop::{
    DPOP_MAX_AGE_SECS, DPOP_TYP, DpopProof, access_token_hash, create_dpop_proof, verify_dpop_proof,
};
pub use error::{KeyFileError, TokenError};
pub use exchange::{
    CLIENT_ASSERTION_TYPE_JWT_BEARER, ClientCredentialsRequest, GRANT_TYPE_CLIENT_CREDENTIALS,
    GRANT_TYPE_TOKEN_EXCHANGE, MAX_FORM_PARAMETERS, TOKEN_TYPE_ACCESS, TOKEN_TYPE_JWT, TOKEN_TYPE_TASK,
    TokenExchangeRequest, TokenExchangeResponse, grant_type_of,
};
pub use federation::{
    DEFAULT_MAX_FEDERATED_LIFETIME_SECS, FederatedIdentity, FederatedIssuer, FederationKind,
    MAX_FEDERATED_LIFETIME_SECS,
};
pub use keys::{KeyLookup, PublicKey, SigningKey, jwk_thumbprint, jwks};
pub use spiffe::{MAX_SPIFFE_ID_LEN, SpiffeId};
pub use task::{
    AUTHORIZATION_DETAILS_TYPE, Actor, Confirmation, MAX_AUTHORIZATION_DETAILS_BYTES, MAX_INTENT_ITEMS,
    MAX_TASK_DURATION_SECS, MAX_TASK_TOKEN_LIFETIME_SECS, TASK_TOKEN_TYP, TaskClaims, TaskIntent,
    issue_task_token, verify_task_token, verify_task_token_for,
};
pub use task_cache::TaskTokenCache;

/// Max size of any token/proof/assertion we parse; longer input is rejected before any decoding.
pub const MAX_TOKEN_BYTES: usize = 8 * 1024;

/// Clock skew tolerated on iat/nbf/exp, seconds.
pub const LEEWAY_SECS: i64 = 30;

/// The types a server shares between threads are `Send + Sync`.
#[cfg(test)]
const _: () = {
    const fn shareable<T: Send + Sync>() {}
    shareable::<SigningKey>();
    shareable::<PublicKey>();
    shareable::<FederatedIssuer>();
    shareable::<TaskTokenCache>();
    shareable::<TokenError>();
    shareable::<KeyFileError>();
};
