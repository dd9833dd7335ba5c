//! Humans' API tokens: generation, the shape check done before any lookup, and the hash that is all the
//! store ever keeps.
//!
//! A token is `wdn_at_` followed by 43 base64url characters (32 random bytes from the OS CSPRNG). The
//! prefix lets secret scanners recognise a leaked Warden token. The store keeps SHA-256 of the whole
//! token: with 256 bits of entropy a fast hash is enough (a slow password hash protects low-entropy
//! secrets, which these are not), and it keeps authentication to one indexed lookup.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::Duration;
use rand::RngCore as _;
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use utoipa::ToSchema;

use crate::{Secret, ValidationError};

pub const TOKEN_PREFIX: &str = "wdn_at_";
/// Prefix of agents' one-time enrollment (join) tokens: same shape, another kind, so one is never
/// mistaken for the other.
pub const JOIN_TOKEN_PREFIX: &str = "wdn_jt_";
const TOKEN_RANDOM_BYTES: usize = 32;
/// Length of a well-formed token; anything else is rejected before hashing.
pub const TOKEN_LEN: usize = TOKEN_PREFIX.len() + 43;

/// Default and longest lifetime of an API token.
pub const DEFAULT_TOKEN_TTL: Duration = Duration::days(30);
pub const MAX_TOKEN_TTL: Duration = Duration::days(365);
/// Longest token label.
pub const MAX_LABEL_LEN: usize = 100;

/// The SHA-256 of a token, hex-encoded: what the store indexes and keeps.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct TokenHash(String);

impl TokenHash {
    pub fn of(token: &Secret<String>) -> Self {
        Self(hex_lower(&Sha256::digest(token.expose().as_bytes())))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Rebuilds a hash read back from the store.
    pub fn from_stored(hex: String) -> Self {
        Self(hex)
    }
}

fn hex_lower(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

/// Makes a fresh API token. The caller shows it once and stores only its hash.
pub fn generate() -> (Secret<String>, TokenHash) {
    generate_with(TOKEN_PREFIX)
}

/// Makes a fresh join token for an agent's enrollment.
pub fn generate_join() -> (Secret<String>, TokenHash) {
    generate_with(JOIN_TOKEN_PREFIX)
}

fn generate_with(prefix: &str) -> (Secret<String>, TokenHash) {
    let mut bytes = [0u8; TOKEN_RANDOM_BYTES];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    let token = Secret::new(format!("{prefix}{}", URL_SAFE_NO_PAD.encode(bytes)));
    let hash = TokenHash::of(&token);
    (token, hash)
}

/// Checks the shape of a presented API token. A wrong shape is rejected without a store lookup, and
/// the error never repeats the presented value.
pub fn check_shape(presented: &str) -> Result<(), &'static str> {
    check_shape_with(presented, TOKEN_PREFIX)
}

/// Checks the shape of a presented join token.
pub fn check_join_shape(presented: &str) -> Result<(), &'static str> {
    check_shape_with(presented, JOIN_TOKEN_PREFIX)
}

fn check_shape_with(presented: &str, prefix: &str) -> Result<(), &'static str> {
    if presented.len() != TOKEN_LEN || !presented.starts_with(prefix) {
        return Err("the token is malformed");
    }
    let body = &presented[prefix.len()..];
    if !body
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return Err("the token is malformed");
    }
    Ok(())
}

/// A request to create an API token.
#[derive(Clone, Debug, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewApiToken {
    /// A label for the token, e.g. `laptop`.
    #[serde(default)]
    pub label: String,
    /// Lifetime in seconds; default 30 days, at most 365 days. A token minted for its own holder
    /// never outlives the token that minted it: a longer one is refused, and the default is cut to
    /// the minting token's remaining lifetime.
    #[serde(default)]
    pub ttl_seconds: Option<u64>,
    /// Claim a token someone else issued to you: the new token is your own (it may vote on approval
    /// requests) and the issued token you are authenticated with is revoked in the same change. Only
    /// for your own tokens, and only with an issued token.
    #[serde(default)]
    pub claim: bool,
}

impl NewApiToken {
    /// The token's lifetime, or an error naming the field.
    pub fn ttl(&self) -> Result<Duration, ValidationError> {
        if self.label.len() > MAX_LABEL_LEN || self.label.chars().any(char::is_control) {
            return Err(ValidationError::new(
                "label",
                format!("label must be at most {MAX_LABEL_LEN} bytes without control characters"),
            ));
        }
        let Some(secs) = self.ttl_seconds else {
            return Ok(DEFAULT_TOKEN_TTL);
        };
        let max = MAX_TOKEN_TTL.num_seconds().unsigned_abs();
        if secs == 0 || secs > max {
            return Err(ValidationError::new(
                "ttl_seconds",
                format!("ttl_seconds must be between 1 and {max} (365 days), not {secs}"),
            ));
        }
        Ok(Duration::seconds(i64::try_from(secs).unwrap_or(i64::MAX)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn generated_tokens_have_the_documented_shape_and_differ() {
        let (a, ha) = generate();
        let (b, hb) = generate();
        assert_eq!(a.expose().len(), TOKEN_LEN);
        assert!(check_shape(a.expose()).is_ok());
        assert_ne!(a.expose(), b.expose());
        assert_ne!(ha, hb);
        assert_eq!(ha, TokenHash::of(&a));
        assert_eq!(ha.as_str().len(), 64);
        assert!(!format!("{a:?}").contains(TOKEN_PREFIX));
    }

    #[test]
    fn join_tokens_are_a_different_kind() {
        let (j, _) = generate_join();
        assert!(j.expose().starts_with(JOIN_TOKEN_PREFIX));
        assert!(check_join_shape(j.expose()).is_ok());
        assert!(
            check_shape(j.expose()).is_err(),
            "a join token is not an API token"
        );
        let (a, _) = generate();
        assert!(
            check_join_shape(a.expose()).is_err(),
            "an API token is not a join token"
        );
    }

    #[test]
    fn shape_errors() {
        assert!(check_shape("").is_err());
        assert!(check_shape("Bearer x").is_err());
        let (t, _) = generate();
        let mut s = t.expose().clone();
        s.replace_range(10..11, "!");
        assert!(check_shape(&s).is_err());
        assert!(check_shape(&format!("{}x", t.expose())).is_err());
    }

    #[test]
    fn ttl_bounds() {
        assert_eq!(NewApiToken::default().ttl(), Ok(DEFAULT_TOKEN_TTL));
        let t = |s| {
            NewApiToken {
                label: String::new(),
                ttl_seconds: Some(s),
                claim: false,
            }
            .ttl()
        };
        assert!(t(0).is_err());
        assert!(t(60).is_ok());
        assert!(
            t(366 * 86_400)
                .expect_err("too long")
                .message
                .contains("between 1 and")
        );
        let bad = NewApiToken {
            label: "a\u{1b}[31m".into(),
            ttl_seconds: None,
            claim: false,
        }
        .ttl();
        assert_eq!(bad.expect_err("control").field, "label");
    }

    proptest! {
        #[test]
        fn check_shape_never_panics(s in "\\PC{0,100}") {
            let _ = check_shape(&s);
        }
    }
}
