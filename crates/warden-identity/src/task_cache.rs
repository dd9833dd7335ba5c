//! An opt-in cache of task tokens whose signature has already been verified, for the gateway's hot
//! path.
//!
//! Why: an agent presents the same task token on every MCP message for the token's whole life
//! (minutes), and ~92% of verifying it is one Ed25519 signature check (`benches/tokens.rs`:
//! `breakdown/ed25519_verify_strict` vs `verify_task_token`). No parsing shortcut can remove that
//! cost; remembering that these exact bytes already verified can.
//!
//! What stays true with the cache (INVARIANT (cache soundness): a hit accepts exactly what a full
//! verification would accept):
//! * entries are made only from tokens that passed [`verify_task_token`](crate::verify_task_token);
//! * an entry is found only by the SHA-256 of the exact token bytes, so a different token (tampered,
//!   re-encoded) is a miss and gets the full verification;
//! * on every hit the signing key must still be returned by the caller's [`KeyLookup`] under its
//!   kid (a retired key stops its tokens at once), and issuer, audience, `iat` and `exp` are checked
//!   again against this call's arguments and `now`;
//! * the cache holds at most `capacity` entries; when full, expired entries are dropped, and if that
//!   is not enough, all of them (the next calls simply verify in full again).
//!
//! Like [`verify_task_token`](crate::verify_task_token), it does not check revocation: the caller
//! still checks the task id.

use std::collections::HashMap;
use std::fmt;
use std::sync::RwLock;

use chrono::{DateTime, Utc};
use sha2::{Digest as _, Sha256};

use crate::jws;
use crate::keys::{KeyLookup, PublicKey};
use crate::task::{TaskClaims, verify_with_key};
use crate::{LEEWAY_SECS, MAX_TOKEN_BYTES, TokenError};

struct Entry {
    claims: TaskClaims,
    /// The key that verified the signature (its kid is `key.kid()`).
    key: PublicKey,
}

/// Verifies task tokens like [`verify_task_token`](crate::verify_task_token), remembering the ones
/// that verified (see the module documentation for what that does and does not change). Share one per
/// process (`Arc`).
pub struct TaskTokenCache {
    entries: RwLock<HashMap<[u8; 32], Entry>>,
    capacity: usize,
}

impl TaskTokenCache {
    /// A cache holding at most `capacity` tokens (0: no caching). A few thousand entries use a few MiB.
    pub fn new(capacity: usize) -> Self {
        Self {
            entries: RwLock::new(HashMap::new()),
            capacity,
        }
    }

    /// Same contract and errors as [`verify_task_token`](crate::verify_task_token).
    pub fn verify(
        &self,
        token: &str,
        keys: &dyn KeyLookup,
        issuer: &str,
        audience: &str,
        now: DateTime<Utc>,
    ) -> Result<TaskClaims, TokenError> {
        self.verify_for(token, keys, issuer, &|aud| aud == audience, now)
    }

    /// [`Self::verify`] accepting every audience `accept` says yes to (see
    /// [`crate::task::verify_task_token_for`]); a cached token's audience is checked again on every
    /// hit, so a token cached where one audience was taken is not accepted where it is not.
    pub fn verify_for(
        &self,
        token: &str,
        keys: &dyn KeyLookup,
        issuer: &str,
        accept: &dyn Fn(&str) -> bool,
        now: DateTime<Utc>,
    ) -> Result<TaskClaims, TokenError> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(TokenError::TooLarge {
                what: "token",
                max: MAX_TOKEN_BYTES,
            });
        }
        let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        if let Some(hit) = self.lookup(&digest, keys, issuer, accept, now) {
            return hit;
        }
        let (claims, key) = verify_with_key(token, keys, issuer, accept, now)?;
        self.insert(digest, &claims, key, now);
        Ok(claims)
    }

    /// Some(result) on a hit whose key is still valid; None to verify in full.
    fn lookup(
        &self,
        digest: &[u8; 32],
        keys: &dyn KeyLookup,
        issuer: &str,
        accept: &dyn Fn(&str) -> bool,
        now: DateTime<Utc>,
    ) -> Option<Result<TaskClaims, TokenError>> {
        let entries = self.entries.read().ok()?;
        let entry = entries.get(digest)?;
        if keys.public_key(entry.key.kid()).as_ref() != Some(&entry.key) {
            // The key was retired or replaced: verify in full, which reports why.
            return None;
        }
        let claims = &entry.claims;
        let checked = if claims.iss != issuer {
            Err(TokenError::WrongIssuer)
        } else if !accept(&claims.aud) {
            Err(TokenError::WrongAudience)
        } else {
            let now = now.timestamp();
            jws::check_iat(claims.iat, now).and_then(|()| jws::check_exp(claims.exp, now))
        };
        Some(checked.map(|()| claims.clone()))
    }

    fn insert(&self, digest: [u8; 32], claims: &TaskClaims, key: PublicKey, now: DateTime<Utc>) {
        if self.capacity == 0 {
            return;
        }
        let Ok(mut entries) = self.entries.write() else {
            return;
        };
        if entries.len() >= self.capacity {
            let now = now.timestamp();
            entries.retain(|_, e| now < e.claims.exp.saturating_add(LEEWAY_SECS));
            if entries.len() >= self.capacity {
                entries.clear();
            }
        }
        entries.insert(
            digest,
            Entry {
                claims: claims.clone(),
                key,
            },
        );
    }

    /// Number of tokens remembered.
    pub fn len(&self) -> usize {
        self.entries.read().map_or(0, |e| e.len())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Forgets every token (e.g. after a key rotation, though retired keys are caught anyway).
    pub fn clear(&self) {
        if let Ok(mut entries) = self.entries.write() {
            entries.clear();
        }
    }
}

impl fmt::Debug for TaskTokenCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TaskTokenCache")
            .field("len", &self.len())
            .field("capacity", &self.capacity)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::*;
    use crate::{SigningKey, issue_task_token, verify_task_token};
    use std::collections::HashMap;

    fn keyring(keys: &[&SigningKey]) -> HashMap<String, PublicKey> {
        keys.iter().map(|k| (k.kid().to_owned(), k.public())).collect()
    }

    #[test]
    fn a_cached_token_is_audience_checked_on_every_hit() {
        let key = signing_key();
        let keys = keyring(&[&key]);
        let cache = TaskTokenCache::new(10);
        let mut claims = sample_claims(NOW);
        claims.aud = format!("{ISSUER}/mcp/crm");
        let token = issue_task_token(&key, &claims).expect("issued").into_inner();
        let crm = |aud: &str| aud == claims.aud;
        assert_eq!(
            cache.verify_for(&token, &keys, ISSUER, &crm, at(NOW)),
            Ok(claims.clone())
        );
        assert_eq!(cache.len(), 1);
        // Cached where `/mcp/crm` was taken; refused where it is not, hit or no hit.
        let erp = |aud: &str| aud == format!("{ISSUER}/mcp/erp");
        assert_eq!(
            cache.verify_for(&token, &keys, ISSUER, &erp, at(NOW)),
            Err(TokenError::WrongAudience)
        );
        assert_eq!(
            crate::verify_task_token_for(&token, &keys, ISSUER, &erp, at(NOW)),
            Err(TokenError::WrongAudience)
        );
        assert_eq!(
            cache.verify(&token, &keys, ISSUER, ISSUER, at(NOW)),
            Err(TokenError::WrongAudience)
        );
    }

    #[test]
    fn hits_give_the_same_answers_as_full_verification() {
        let key = signing_key();
        let keys = keyring(&[&key]);
        let cache = TaskTokenCache::new(10);
        let claims = sample_claims(NOW);
        let token = issue_task_token(&key, &claims).expect("issued").into_inner();
        assert_eq!(
            cache.verify(&token, &keys, ISSUER, AUDIENCE, at(NOW)),
            Ok(claims.clone())
        );
        assert_eq!(cache.len(), 1);
        // Every later call is a hit, and still checks time, issuer and audience.
        for now in [NOW, NOW + 300 + LEEWAY - 1, NOW - LEEWAY] {
            assert_eq!(
                cache.verify(&token, &keys, ISSUER, AUDIENCE, at(now)),
                Ok(claims.clone())
            );
        }
        let cases = [
            (ISSUER, AUDIENCE, NOW + 300 + LEEWAY),
            (ISSUER, AUDIENCE, NOW - LEEWAY - 1),
            ("https://other", AUDIENCE, NOW),
            (ISSUER, "other", NOW),
        ];
        for (issuer, audience, now) in cases {
            assert_eq!(
                cache.verify(&token, &keys, issuer, audience, at(now)),
                verify_task_token(&token, &keys, issuer, audience, at(now)),
                "{issuer} {audience} {now}"
            );
            assert!(cache.verify(&token, &keys, issuer, audience, at(now)).is_err());
        }
        assert_eq!(cache.len(), 1);
    }

    #[test]
    fn a_retired_key_stops_its_cached_tokens() {
        let key = signing_key();
        let other = signing_key();
        let cache = TaskTokenCache::new(10);
        let token = issue_task_token(&key, &sample_claims(NOW))
            .expect("issued")
            .into_inner();
        assert!(
            cache
                .verify(&token, &keyring(&[&key, &other]), ISSUER, AUDIENCE, at(NOW))
                .is_ok()
        );
        assert!(matches!(
            cache.verify(&token, &keyring(&[&other]), ISSUER, AUDIENCE, at(NOW)),
            Err(TokenError::UnknownKey { .. })
        ));
    }

    #[test]
    fn only_verified_tokens_are_remembered() {
        let key = signing_key();
        let keys = keyring(&[&key]);
        let cache = TaskTokenCache::new(10);
        let token = issue_task_token(&key, &sample_claims(NOW))
            .expect("issued")
            .into_inner();
        let mut tampered = token.clone().into_bytes();
        let i = token.find('.').expect("dot") + 5;
        tampered[i] = if tampered[i] == b'A' { b'B' } else { b'A' };
        let tampered = String::from_utf8(tampered).expect("ascii");
        assert_eq!(
            cache.verify(&tampered, &keys, ISSUER, AUDIENCE, at(NOW)),
            Err(TokenError::BadSignature)
        );
        assert_eq!(
            cache.verify(&token, &keys, ISSUER, "other", at(NOW)),
            Err(TokenError::WrongAudience)
        );
        assert!(cache.is_empty());
        let huge = "a".repeat(MAX_TOKEN_BYTES + 1);
        assert!(matches!(
            cache.verify(&huge, &keys, ISSUER, AUDIENCE, at(NOW)),
            Err(TokenError::TooLarge { .. })
        ));
    }

    #[test]
    fn capacity_is_a_hard_bound() {
        let key = signing_key();
        let keys = keyring(&[&key]);
        let cache = TaskTokenCache::new(3);
        for i in 0..10 {
            let token = issue_task_token(&key, &sample_claims(NOW + i))
                .expect("issued")
                .into_inner();
            assert!(cache.verify(&token, &keys, ISSUER, AUDIENCE, at(NOW + i)).is_ok());
            assert!(cache.len() <= 3);
        }
        // Expired entries go first.
        let old = issue_task_token(&key, &sample_claims(NOW))
            .expect("issued")
            .into_inner();
        let cache = TaskTokenCache::new(2);
        assert!(cache.verify(&old, &keys, ISSUER, AUDIENCE, at(NOW)).is_ok());
        let later = NOW + 400;
        for i in 0..2 {
            let token = issue_task_token(&key, &sample_claims(later + i))
                .expect("issued")
                .into_inner();
            assert!(
                cache
                    .verify(&token, &keys, ISSUER, AUDIENCE, at(later + i))
                    .is_ok()
            );
        }
        assert_eq!(cache.len(), 2);
        let none = TaskTokenCache::new(0);
        assert!(none.verify(&old, &keys, ISSUER, AUDIENCE, at(NOW)).is_ok());
        assert!(none.is_empty());
        cache.clear();
        assert!(cache.is_empty());
        assert!(format!("{cache:?}").contains("capacity: 2"));
    }
}
