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
use crate::error::ApiError;

/// Longest Authorization header we read; anything longer is refused before parsing.
const MAX_AUTH_HEADER: usize = 1024;

/// An authenticated human. Handlers receive it as an extractor and must ask it for a permission
/// before acting ([`Caller::require`]).
#[derive(Debug, Clone)]
pub struct Caller {
    pub human: Human,
    pub token: ApiTokenInfo,
}

/// Proof that the caller holds a permission. The only way for a handler to get the [`ChangeContext`]
/// every store write needs is from a permit, so nothing is written without an authorization decision.
#[derive(Debug, Clone)]
pub struct Permit {
    permission: Permission,
    actor: String,
}

impl Permit {
    /// Who is acting, and when, for the store.
    pub fn context(&self) -> ChangeContext {
        ChangeContext::new(self.actor.clone(), Utc::now())
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
        if let Some(why) = owner.token.unusable_at(Utc::now()) {
            tracing::info!(token_id = %owner.token.id, human = %owner.human.email, why, "refused API token");
            return Err(ApiError::Unauthorized(why.into()));
        }
        Ok(Caller {
            human: owner.human,
            token: owner.token,
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
