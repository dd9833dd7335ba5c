//! Checking task credentials: signature, then whether the task is still live, through a cache that
//! revocation events keep honest.
//!
//! INVARIANT (revocation reaches every node at once): a task's credentials verify only while the
//! store says the task is active and unexpired. Nodes cache that answer; every change that stops a task
//! is announced by a [`StoreEvent::TasksRevoked`] (in-process on the node that made it, by PostgreSQL
//! `NOTIFY` to every other node, both at commit) and the cache forgets the task as soon as it hears.
//! Should an event be lost, the listener reports a [`StoreEvent::Resync`] and the cache empties; and no
//! cached answer is trusted longer than the configured TTL (default 2 s) in any case.
//!
//! A cache fill races a revocation: the fill read the task as active, the event arrived while the
//! answer was in flight. A generation counter, bumped by every event, makes the fill drop its answer if
//! any event arrived since it started.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::RwLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::extract::{FromRef, FromRequestParts};
use axum::http::header;
use axum::http::request::Parts;
use chrono::{DateTime, Utc};
use uuid::Uuid;
use warden_core::{Secret, Task};
use warden_identity::{TaskClaims, TokenError};
use warden_store::{Store, StoreEvent};

use crate::AppState;
use crate::oauth::OAuthError;
use crate::resource::Presented;

/// Most tasks a node keeps cached; past this the cache starts over (it is only a cache).
const MAX_ENTRIES: usize = 100_000;

#[derive(Debug)]
struct Entry {
    task: Arc<Task>,
    fetched: Instant,
}

/// The revocation-aware cache of task states.
#[derive(Debug)]
pub struct TaskCache {
    /// Revocations the store could not take yet, enforced here (see `crate::revocations`).
    pub held: Arc<crate::revocations::HeldSet>,
    entries: RwLock<HashMap<Uuid, Entry>>,
    generation: AtomicU64,
    ttl: Duration,
}

/// Why a task's credential does not work.
#[derive(Debug)]
pub enum TaskRefused {
    Unknown,
    NotLive(String),
    Store(warden_store::StoreError),
}

impl TaskCache {
    pub fn new(ttl: Duration) -> Self {
        Self {
            held: Default::default(),
            entries: RwLock::new(HashMap::new()),
            generation: AtomicU64::new(0),
            ttl,
        }
    }

    /// The task, if its credentials may be used at `now`.
    pub async fn live_task(
        &self,
        store: &dyn Store,
        id: Uuid,
        now: DateTime<Utc>,
    ) -> Result<Arc<Task>, TaskRefused> {
        let cached = self.entries.read().ok().and_then(|m| {
            m.get(&id)
                .filter(|e| e.fetched.elapsed() < self.ttl)
                .map(|e| e.task.clone())
        });
        let task = match cached {
            Some(t) => t,
            None => {
                let generation = self.generation.load(Ordering::Acquire);
                let task = Arc::new(
                    store
                        .get_task(id)
                        .await
                        .map_err(TaskRefused::Store)?
                        .ok_or(TaskRefused::Unknown)?,
                );
                if let Ok(mut m) = self.entries.write() {
                    // Only if no event arrived while we were reading (see the module docs).
                    if self.generation.load(Ordering::Acquire) == generation {
                        if m.len() >= MAX_ENTRIES {
                            m.clear();
                        }
                        m.insert(
                            id,
                            Entry {
                                task: task.clone(),
                                fetched: Instant::now(),
                            },
                        );
                    }
                }
                task
            }
        };
        if task.is_live_at(now) {
            match self.held.task_refusal(store, &task).await {
                None => Ok(task),
                Some(why) => Err(TaskRefused::NotLive(why)),
            }
        } else if now >= task.expires_at {
            Err(TaskRefused::NotLive(format!("task `{id}` has expired")))
        } else {
            Err(TaskRefused::NotLive(format!("task `{id}` is {}", task.state)))
        }
    }

    /// Applies a store event.
    pub fn apply(&self, event: &StoreEvent) {
        match event {
            StoreEvent::TasksRevoked { ids } => {
                self.generation.fetch_add(1, Ordering::AcqRel);
                if let Ok(mut m) = self.entries.write() {
                    for id in ids {
                        m.remove(id);
                    }
                }
            }
            StoreEvent::Resync => {
                self.generation.fetch_add(1, Ordering::AcqRel);
                if let Ok(mut m) = self.entries.write() {
                    m.clear();
                }
            }
            StoreEvent::SigningKeysChanged
            | StoreEvent::PoliciesChanged
            | StoreEvent::RegistryChanged { .. } => {}
        }
    }
}

/// An agent authenticated by a live task token (and its DPoP proof when the token is bound).
#[derive(Debug)]
pub struct TaskCaller {
    pub claims: TaskClaims,
    pub task: Arc<Task>,
    pub token: Secret<String>,
}

/// Verifies a task token presented at `method url` (signature, issuer, audience — the ones `at`
/// takes, see [`crate::resource`] —, expiry, then task liveness, then the DPoP binding). Used by the
/// token endpoint for renewals and delegations too.
pub async fn verify_task_credential(
    state: &AppState,
    token: &Secret<String>,
    dpop_proof: Option<&str>,
    method: &str,
    url: &str,
    at: Presented<'_>,
    now: DateTime<Utc>,
) -> Result<(TaskClaims, Arc<Task>), OAuthError> {
    let id = &state.identity;
    let issuer = id.settings.issuer.as_str();
    let known = |aud: &str| crate::resource::known_audience(issuer, aud);
    // The verified-token cache: an agent presents the same token on every message; its signature
    // is checked once per node (revocation is still checked below, on every use). The audience is
    // checked on every use too, cached or not.
    let verify = || {
        id.tokens
            .verify_for(token.expose(), &id.keys.lookup(now), issuer, &known, now)
    };
    let claims = match verify() {
        Err(TokenError::UnknownKey { .. }) => {
            id.keys.reload_for_unknown_kid().await;
            verify()
        }
        other => other,
    }
    .map_err(|e| OAuthError::from_resource(&e))?;
    at.check(issuer, &claims.aud)?;
    let task = id
        .tasks
        .live_task(state.store.as_ref(), claims.task_id, now)
        .await
        .map_err(|e| match e {
            TaskRefused::Unknown => OAuthError::invalid_token("the token's task is not known"),
            TaskRefused::NotLive(why) => OAuthError::invalid_token(why),
            TaskRefused::Store(e) => e.into(),
        })?;
    if task.agent_spiffe_id != claims.sub {
        return Err(OAuthError::invalid_token(
            "the token's subject does not match its task",
        ));
    }
    match (&claims.cnf, dpop_proof) {
        (None, None) => {}
        (None, Some(_)) => {
            return Err(OAuthError::invalid_request(
                "a DPoP proof was sent with a token that is not DPoP-bound",
            ));
        }
        (Some(_), None) => {
            return Err(
                OAuthError::invalid_token("the token is DPoP-bound; send a DPoP proof").with_dpop(true),
            );
        }
        (Some(cnf), Some(proof)) => {
            let p = warden_identity::verify_dpop_proof(proof, method, url, Some(token.expose()), now)
                .map_err(|e| OAuthError::from_resource(&e).with_dpop(true))?;
            if p.jkt != cnf.jkt {
                return Err(OAuthError::invalid_token(
                    "the DPoP proof is signed by another key than the token is bound to",
                )
                .with_dpop(true));
            }
            remember_proof(state, &p).await.map_err(|e| e.with_dpop(true))?;
        }
    }
    Ok((claims, task))
}

/// Refuses a DPoP proof whose `jti` was seen before (on any node).
pub async fn remember_proof(state: &AppState, p: &warden_identity::DpopProof) -> Result<(), OAuthError> {
    // Proofs older than the verifier's window are refused anyway; remember them that long.
    let until =
        DateTime::<Utc>::from_timestamp(p.iat, 0).unwrap_or_else(Utc::now) + chrono::Duration::seconds(120);
    let fresh = state
        .store
        .remember_jti(&format!("dpop:{}", p.jkt), &p.jti, until)
        .await?;
    if fresh {
        Ok(())
    } else {
        Err(OAuthError::new(
            axum::http::StatusCode::UNAUTHORIZED,
            "invalid_dpop_proof",
            "the DPoP proof was already used",
        ))
    }
}

/// Reads `Authorization: Bearer <token>` or `Authorization: DPoP <token>` and the `DPoP` header.
pub fn presented_task_token(parts: &Parts) -> Result<(Secret<String>, Option<String>), OAuthError> {
    let value = parts
        .headers
        .get(header::AUTHORIZATION)
        .ok_or_else(|| OAuthError::invalid_token("missing `Authorization: Bearer <task token>` header"))?;
    if value.len() > warden_identity::MAX_TOKEN_BYTES + 16 {
        return Err(OAuthError::invalid_token("the Authorization header is too long"));
    }
    let value = value
        .to_str()
        .map_err(|_| OAuthError::invalid_token("the Authorization header is not ASCII"))?;
    let (scheme, rest) = value.split_once(' ').unwrap_or((value, ""));
    let dpop_scheme = scheme.eq_ignore_ascii_case("dpop");
    if !dpop_scheme && !scheme.eq_ignore_ascii_case("bearer") {
        return Err(OAuthError::invalid_token(
            "the Authorization scheme must be `Bearer` or `DPoP`",
        ));
    }
    let proofs: Vec<_> = parts.headers.get_all("dpop").iter().collect();
    if proofs.len() > 1 {
        return Err(OAuthError::invalid_request("more than one DPoP header"));
    }
    let proof = match proofs.first() {
        Some(v) => Some(
            v.to_str()
                .map_err(|_| OAuthError::invalid_request("the DPoP header is not ASCII"))?
                .to_owned(),
        ),
        None => None,
    };
    if dpop_scheme && proof.is_none() {
        return Err(OAuthError::invalid_token("the DPoP scheme needs a DPoP proof header").with_dpop(true));
    }
    Ok((Secret::new(rest.trim().to_owned()), proof))
}

impl<S> FromRequestParts<S> for TaskCaller
where
    S: Send + Sync,
    AppState: FromRef<S>,
{
    type Rejection = OAuthError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, OAuthError> {
        let state = AppState::from_ref(state);
        TaskCaller::authenticate(parts, &state, Presented::Api).await
    }
}

impl TaskCaller {
    /// The caller of the gateway endpoint of `upstream`: its token must be unbound or for that
    /// resource, and a 401 points at the resource's metadata (RFC 9728 §5.1) so a standard OAuth
    /// client can find where to get one.
    pub async fn at_mcp(parts: &mut Parts, state: &AppState, upstream: &str) -> Result<Self, OAuthError> {
        TaskCaller::authenticate(parts, state, Presented::Mcp(upstream))
            .await
            .map_err(|e| {
                e.with_resource_metadata(crate::resource::metadata_url(
                    &state.identity.settings.issuer,
                    upstream,
                ))
            })
    }

    async fn authenticate(
        parts: &mut Parts,
        state: &AppState,
        at: Presented<'_>,
    ) -> Result<Self, OAuthError> {
        let state = state.clone();
        let (token, proof) = presented_task_token(parts)?;
        // Nested routers see the path without their prefix; the DPoP `htu` names the full one.
        let path = parts
            .extensions
            .get::<axum::extract::OriginalUri>()
            .map_or_else(|| parts.uri.path().to_owned(), |u| u.0.path().to_owned());
        let url = format!("{}{path}", state.identity.settings.issuer);
        let (claims, task) = verify_task_credential(
            &state,
            &token,
            proof.as_deref(),
            parts.method.as_str(),
            &url,
            at,
            Utc::now(),
        )
        .await?;
        crate::audit::set_actor(&parts.extensions, &task.agent_spiffe_id);
        // Over mutual TLS, a task token is accepted only over its own agent's connection.
        crate::tls::check_peer_binding(&parts.extensions, &task.agent_spiffe_id)
            .map_err(OAuthError::invalid_token)?;
        Ok(TaskCaller { claims, task, token })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_bump_the_generation() {
        let cache = TaskCache::new(Duration::from_secs(2));
        let g0 = cache.generation.load(Ordering::Acquire);
        cache.apply(&StoreEvent::TasksRevoked {
            ids: vec![Uuid::new_v4()],
        });
        cache.apply(&StoreEvent::Resync);
        assert_eq!(cache.generation.load(Ordering::Acquire), g0 + 2);
        cache.apply(&StoreEvent::SigningKeysChanged);
        assert_eq!(cache.generation.load(Ordering::Acquire), g0 + 2);
    }
}
