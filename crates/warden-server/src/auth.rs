//! Authentication of humans on the admin API: `Authorization: Bearer <API token>`.
//!
//! The presented token's shape is checked first (no store lookup for garbage), then its SHA-256 is looked
//! up; an unknown, expired or revoked token is a 401 that says which, without echoing the token. A store
//! failure is a 503: unauthenticated requests are never let through because the store is down.

use axum::extract::{FromRef, FromRequestParts};
use axum::http::header;
use axum::http::request::Parts;
use chrono::Utc;
use warden_core::token::{self, TokenHash};
use warden_core::{ApiTokenInfo, ChangeContext, Email, Human, Permission, Secret};

use crate::AppState;
use crate::audit::AuditSlot;
use crate::error::ApiError;
use warden_ledger::EntryKind;

/// Longest Authorization header we read; anything longer is refused before parsing.
const MAX_AUTH_HEADER: usize = 1024;

/// An authenticated human. Handlers receive it as an extractor and must ask it for a permission
/// before acting ([`Caller::require`]).
#[derive(Debug, Clone)]
pub struct Caller {
    pub human: Human,
    pub token: ApiTokenInfo,
    audit: AuditSlot,
}

/// Proof that the caller holds a permission. The only way for a handler to get the [`ChangeContext`]
/// every store write needs is from a permit, so nothing is written without an authorization decision.
#[derive(Debug, Clone)]
pub struct Permit {
    permission: Permission,
    actor: String,
    audit: AuditSlot,
}

impl Permit {
    /// Records the change about to be made in the audit ledger and waits until the entry is durable;
    /// only then does the handler get the [`ChangeContext`] the store write needs (fail closed: if
    /// the ledger cannot record, nothing is changed). `op` names the change (`agent.register`),
    /// `subject` what it is about, `details` what is asked (never a secret). If the change then
    /// fails, the audit layer appends an entry saying so.
    pub async fn record(
        &self,
        state: &AppState,
        kind: EntryKind,
        op: &str,
        subject: &str,
        details: serde_json::Value,
    ) -> Result<ChangeContext, ApiError> {
        let at = Utc::now();
        let entry = self.entry(at, kind.clone(), op, subject, details);
        let seq = state.ledger.record(entry).await?;
        self.audit.set_change(seq, kind, op);
        Ok(ChangeContext::new(self.actor.clone(), at))
    }

    /// Like [`Permit::record`], for changes that take privileges away (suspending, ending a task,
    /// revoking a token, removing a human): those must work even while the ledger cannot record —
    /// refusing a revocation would fail open. The entry is still written first when it can be; when
    /// it cannot, the change goes ahead, and the entry is held with the revocation (see
    /// [`crate::revocations`]) until the ledger takes it, with its original time.
    pub async fn record_revocation(
        &self,
        state: &AppState,
        kind: EntryKind,
        op: &str,
        subject: &str,
        details: serde_json::Value,
    ) -> crate::revocations::Revoking {
        let at = Utc::now();
        let entry = self.entry(at, kind.clone(), op, subject, details);
        let unrecorded = match state.ledger.record(entry.clone()).await {
            Ok(seq) => {
                self.audit.set_change(seq, kind, op);
                None
            }
            Err(e) => {
                tracing::error!(%op, %subject, by = %self.actor, error = ?e, "revocation not recorded in the audit ledger yet; it goes ahead and its entry is held until the ledger takes it");
                Some(crate::revocations::PendingEntry::of(&entry))
            }
        };
        crate::revocations::Revoking {
            ctx: ChangeContext::new(self.actor.clone(), at),
            unrecorded,
        }
    }

    fn entry(
        &self,
        at: chrono::DateTime<Utc>,
        kind: EntryKind,
        op: &str,
        subject: &str,
        mut details: serde_json::Value,
    ) -> warden_ledger::NewEntry {
        if !details.is_object() {
            details = serde_json::json!({ "details": details });
        }
        details["op"] = op.into();
        details["permission"] = format!("{:?}", self.permission).into();
        warden_ledger::NewEntry::new(at, kind, self.actor.clone())
            .subject(subject)
            .body(details)
    }

    pub fn permission(&self) -> Permission {
        self.permission
    }
}

impl Caller {
    /// Checks a permission against the caller's roles.
    pub fn require(&self, permission: Permission) -> Result<Permit, ApiError> {
        if permission.is_granted_to(&self.human.roles) {
            Ok(Permit {
                permission,
                actor: self.human.email.to_string(),
                audit: self.audit.clone(),
            })
        } else {
            let roles = permission
                .granted_by()
                .iter()
                .map(|r| format!("`{r}`"))
                .collect::<Vec<_>>()
                .join(" or ");
            Err(ApiError::Forbidden(format!(
                "`{}` may not {}; that needs the {roles} role",
                self.human.email,
                permission.describe()
            )))
        }
    }

    /// Like [`Caller::require`], but a human always may act on their own records.
    pub fn require_self_or(
        &self,
        email: &Email,
        own: Permission,
        others: Permission,
    ) -> Result<Permit, ApiError> {
        if &self.human.email == email {
            self.require(own)
        } else {
            self.require(others)
        }
    }
}

impl<S> FromRequestParts<S> for Caller
where
    S: Send + Sync,
    AppState: FromRef<S>,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let state = AppState::from_ref(state);
        let presented = bearer(parts)?;
        token::check_shape(presented.expose()).map_err(|m| ApiError::Unauthorized(m.into()))?;
        let found = state.store.find_token(&TokenHash::of(&presented)).await?;
        let Some(owner) = found else {
            return Err(ApiError::Unauthorized("the token is not known".into()));
        };
        if owner.human.disabled_at.is_some() {
            return Err(ApiError::Unauthorized(
                "the token's human has been removed".into(),
            ));
        }
        if state.revocations.set.token_revoked(owner.token.id) {
            tracing::info!(token_id = %owner.token.id, human = %owner.human.email, "refused API token: revocation held");
            return Err(ApiError::Unauthorized("the token was revoked".into()));
        }
        if let Some(why) = owner.token.unusable_at(Utc::now()) {
            tracing::info!(token_id = %owner.token.id, human = %owner.human.email, why, "refused API token");
            return Err(ApiError::Unauthorized(why.into()));
        }
        let audit = parts.extensions.get::<AuditSlot>().cloned().unwrap_or_default();
        audit.set_actor(owner.human.email.as_str());
        Ok(Caller {
            human: owner.human,
            token: owner.token,
            audit,
        })
    }
}

fn bearer(parts: &Parts) -> Result<Secret<String>, ApiError> {
    let Some(value) = parts.headers.get(header::AUTHORIZATION) else {
        return Err(ApiError::Unauthorized(
            "missing `Authorization: Bearer <token>` header".into(),
        ));
    };
    if value.len() > MAX_AUTH_HEADER {
        return Err(ApiError::Unauthorized(
            "the Authorization header is too long".into(),
        ));
    }
    let value = value
        .to_str()
        .map_err(|_| ApiError::Unauthorized("the Authorization header is not ASCII".into()))?;
    let (scheme, rest) = value.split_once(' ').unwrap_or((value, ""));
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(ApiError::Unauthorized(
            "the Authorization scheme must be `Bearer`".into(),
        ));
    }
    Ok(Secret::new(rest.trim().to_owned()))
}
