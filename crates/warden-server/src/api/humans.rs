//! `/v1/humans` and `/v1/tokens`: the people who run Warden and their API tokens.

use crate::revocations::Settled;
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse as _, Response};
use chrono::Utc;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;
use warden_core::token::{self, NewApiToken};
use warden_core::{ApiTokenInfo, Email, Human, NewHuman, Permission};
use warden_store::TokenRecord;

use crate::AppState;
use crate::auth::Caller;
use crate::error::{ApiError, ErrorBody};
use crate::json::{ApiJson, ApiPath};
use warden_ledger::EntryKind;

#[derive(Debug, Serialize, ToSchema)]
pub struct HumanList {
    pub humans: Vec<Human>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct TokenList {
    pub tokens: Vec<ApiTokenInfo>,
}

/// A new token. `token` is shown this once; Warden keeps only its hash.
#[derive(Serialize, Deserialize, ToSchema)]
pub struct CreatedToken {
    pub token: String,
    pub info: ApiTokenInfo,
    /// The issued token this one claimed (now revoked), for a claim.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub claimed: Option<Uuid>,
    /// Set when the default lifetime was cut short: a token minted for its own holder never outlives
    /// the token that minted it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

impl std::fmt::Debug for CreatedToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CreatedToken")
            .field("token", &"REDACTED")
            .field("info", &self.info)
            .finish()
    }
}

/// The caller's own identity.
#[derive(Debug, Serialize, ToSchema)]
pub struct WhoAmI {
    pub human: Human,
    pub token: ApiTokenInfo,
}

fn parse_email(raw: &str) -> Result<Email, ApiError> {
    Ok(Email::parse(raw)?)
}

#[utoipa::path(
    get, path = "/v1/whoami", tag = "humans",
    responses((status = 200, body = WhoAmI), (status = 401, body = ErrorBody)), security(("bearer" = []))
)]
pub async fn whoami(caller: Caller) -> Json<WhoAmI> {
    Json(WhoAmI {
        human: caller.human,
        token: caller.token,
    })
}

#[utoipa::path(
    post, path = "/v1/humans", tag = "humans", request_body = NewHuman,
    responses(
        (status = 201, body = Human), (status = 400, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 409, body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn add(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(body): ApiJson<NewHuman>,
) -> Result<(StatusCode, Json<Human>), ApiError> {
    let permit = caller.require(Permission::ManageHumans)?;
    let ctx = permit
        .record(
            &state,
            EntryKind::RegistryChange,
            "human.add",
            body.email.as_str(),
            serde_json::to_value(&body).unwrap_or_default(),
        )
        .await?;
    let human = state.store.create_human(&body, &ctx).await?;
    tracing::info!(human = %human.email, roles = ?human.roles, by = %caller.human.email, "human added");
    Ok((StatusCode::CREATED, Json(human)))
}

#[utoipa::path(
    get, path = "/v1/humans", tag = "humans",
    responses((status = 200, body = HumanList)), security(("bearer" = []))
)]
pub async fn list(State(state): State<AppState>, caller: Caller) -> Result<Json<HumanList>, ApiError> {
    caller.require(Permission::ReadRegistry)?;
    Ok(Json(HumanList {
        humans: state.store.list_humans().await?,
    }))
}

#[utoipa::path(
    get, path = "/v1/humans/{email}", tag = "humans",
    params(("email" = String, Path)),
    responses((status = 200, body = Human), (status = 404, body = ErrorBody)), security(("bearer" = []))
)]
pub async fn show(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(email): ApiPath<String>,
) -> Result<Json<Human>, ApiError> {
    caller.require(Permission::ReadRegistry)?;
    let email = parse_email(&email)?;
    let human = state
        .store
        .get_human(&email)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("human `{email}` not found")))?;
    Ok(Json(human))
}

/// What removing a human did.
#[derive(Debug, Serialize, ToSchema)]
pub struct HumanRemoved {
    pub human: Human,
    pub revoked_api_tokens: usize,
    /// Agents left without an owner, now suspended.
    pub orphaned_agents: Vec<warden_core::AgentName>,
    pub revoked_tasks: usize,
}

#[utoipa::path(
    delete, path = "/v1/humans/{email}", tag = "humans",
    params(("email" = String, Path)),
    responses(
        (status = 200, description = "Removed (kept for audit): tokens revoked, owned agents without another owner suspended", body = HumanRemoved),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, description = "Already removed", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn remove(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(email): ApiPath<String>,
) -> Result<Json<HumanRemoved>, ApiError> {
    let permit = caller.require(Permission::ManageHumans)?;
    let email = parse_email(&email)?;
    if email == caller.human.email {
        return Err(ApiError::Conflict(
            "you cannot remove yourself; ask another admin".into(),
        ));
    }
    let revoking = permit
        .record_revocation(
            &state,
            EntryKind::RegistryChange,
            "human.remove",
            email.as_str(),
            serde_json::json!({}),
        )
        .await;
    let ctx = revoking.ctx.clone();
    let result = state.store.remove_human(&email, &revoking.ctx).await;
    // Not held when the store cannot take it (a 503 to retry); its entry is held when only the ledger
    // could not take it.
    let removal = match state.revocations.settle(revoking, None, result)? {
        Settled::Written(removal) => removal,
        Settled::Held(held) => return Err(ApiError::Unavailable(held.message)),
    };
    state.forget_tasks(&removal.revoked_tasks);
    super::agents::record_ended(
        &state,
        &ctx,
        "human.remove",
        email.as_str(),
        &removal.revoked_tasks,
        &format!("owner `{email}` removed"),
    )
    .await;
    // Owners changed for every agent the human owned; re-read them now for this node's policies.
    let owned: Vec<String> = removal.orphaned_agents.iter().map(ToString::to_string).collect();
    if let Err(e) = state.policies.refresh(state.store.as_ref(), &owned, &[]).await {
        tracing::warn!(error = %format!("{e:#}"), "cannot refresh policy data after a human's removal");
    }
    for agent in &removal.orphaned_agents {
        state.publish(crate::RegistryEvent::CredentialsInvalidated {
            agent: agent.clone(),
            reason: format!("last owner {email} removed"),
            revoked_tasks: removal.revoked_tasks.len(),
        });
    }
    tracing::info!(human = %email, by = %caller.human.email, orphaned = removal.orphaned_agents.len(), "human removed");
    Ok(Json(HumanRemoved {
        human: removal.human,
        revoked_api_tokens: removal.revoked_api_tokens,
        orphaned_agents: removal.orphaned_agents,
        revoked_tasks: removal.revoked_tasks.len(),
    }))
}

#[utoipa::path(
    post, path = "/v1/humans/{email}/tokens", tag = "humans",
    params(("email" = String, Path)), request_body = NewApiToken,
    responses(
        (status = 201, description = "The token, shown once", body = CreatedToken),
        (status = 400, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn create_token(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(email): ApiPath<String>,
    ApiJson(body): ApiJson<NewApiToken>,
) -> Result<(StatusCode, Json<CreatedToken>), ApiError> {
    let email = parse_email(&email)?;
    let permit = caller.require_self_or(&email, Permission::ManageOwnTokens, Permission::ManageHumans)?;
    let ttl = body.ttl()?;
    let now = Utc::now();
    let own = email == caller.human.email;
    let minting = &caller.token;
    if body.claim && !own {
        return Err(ApiError::BadRequest {
            message: format!(
                "claim is for your own tokens: `{}` cannot claim a token for `{email}`",
                caller.human.email
            ),
            field: Some("claim".into()),
        });
    }
    if body.claim && minting.personal {
        return Err(ApiError::BadRequest {
            message: format!(
                "claim: the token you are using (`{}`) is your own already; there is nothing to claim",
                minting.id
            ),
            field: Some("claim".into()),
        });
    }
    // A token minted for its own holder never outlives the token that minted it, so a short-lived
    // (or stolen) token cannot turn itself into a long-lived one. Tokens issued to someone else are an
    // admin's act (bounded by the 365-day maximum): were they bounded too, no token could ever live
    // longer than the bootstrap token and every deployment would lock itself out. They cannot vote,
    // and they die with the token that issued them until claimed.
    let mut note = None;
    let expires_at = if own {
        let wanted = now + ttl;
        if wanted <= minting.expires_at {
            wanted
        } else if body.ttl_seconds.is_some() {
            let most = (minting.expires_at - now).num_seconds().max(0);
            return Err(ApiError::BadRequest {
                message: format!(
                    "ttl_seconds: a token never outlives the token that minted it; the token you are using (`{}`) expires at {}, so ask for at most {most} seconds",
                    minting.id,
                    minting.expires_at.to_rfc3339()
                ),
                field: Some("ttl_seconds".into()),
            });
        } else {
            note = Some(format!(
                "expires with the token that minted it (`{}`): a token never outlives the token that minted it",
                minting.id
            ));
            minting.expires_at
        }
    } else {
        now + ttl
    };
    let (secret, hash) = token::generate();
    // The holder's own token: minted by the holder with their own token, or claiming an issued one.
    let personal = own && (minting.personal || body.claim);
    let claimed = (own && body.claim).then_some(minting.id);
    let record = TokenRecord {
        id: Uuid::new_v4(),
        human: email.clone(),
        label: body.label.clone(),
        hash,
        expires_at,
        minted_by: Some(minting.id),
        personal,
        claims: claimed,
    };
    let ctx = permit
        .record(
            &state,
            EntryKind::TokenIssued,
            "api_token.create",
            email.as_str(),
            serde_json::json!({
                "token_id": record.id,
                "label": record.label,
                "expires_at": record.expires_at,
                "minted_by": minting.id,
                "personal": personal,
                "claims": claimed,
            }),
        )
        .await?;
    let info = state.store.create_api_token(&record, &ctx).await?;
    tracing::info!(token_id = %info.id, human = %email, by = %caller.human.email, expires_at = %info.expires_at, "API token created");
    Ok((
        StatusCode::CREATED,
        Json(CreatedToken {
            token: secret.into_inner(),
            info,
            claimed,
            note,
        }),
    ))
}

#[utoipa::path(
    get, path = "/v1/humans/{email}/tokens", tag = "humans",
    params(("email" = String, Path)),
    responses((status = 200, body = TokenList), (status = 403, body = ErrorBody)), security(("bearer" = []))
)]
pub async fn list_tokens(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(email): ApiPath<String>,
) -> Result<Json<TokenList>, ApiError> {
    let email = parse_email(&email)?;
    caller.require_self_or(&email, Permission::ManageOwnTokens, Permission::ManageHumans)?;
    if state.store.get_human(&email).await?.is_none() {
        return Err(ApiError::NotFound(format!("human `{email}` not found")));
    }
    Ok(Json(TokenList {
        tokens: state.store.list_api_tokens(&email).await?,
    }))
}

#[utoipa::path(
    delete, path = "/v1/tokens/{id}", tag = "humans",
    params(("id" = Uuid, Path, description = "Token id (not the token)")),
    responses(
        (status = 200, description = "Revoked, with the tokens minted from it", body = warden_store::RevokedToken),
        (status = 202, description = "Held: the store could not take it", body = crate::revocations::HeldRevocation),
        (status = 404, body = ErrorBody), (status = 409, description = "Already revoked", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn revoke_token(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
) -> Result<Response, ApiError> {
    let id: Uuid = id.parse().map_err(|_| ApiError::BadRequest {
        message: format!("`{}` is not a token id (a UUID)", id.escape_debug()),
        field: Some("id".into()),
    })?;
    // Whose token it is decides which permission is needed; an unknown id is a 404 either way, but
    // only after the caller proved they may manage tokens at all.
    caller.require(Permission::ManageOwnTokens)?;
    let info = state
        .store
        .get_api_token(id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("token `{id}` not found")))?;
    let permit =
        caller.require_self_or(&info.human, Permission::ManageOwnTokens, Permission::ManageHumans)?;
    let revoking = permit
        .record_revocation(
            &state,
            EntryKind::TokenRevoked,
            "api_token.revoke",
            info.human.as_str(),
            serde_json::json!({"token_id": id}),
        )
        .await;
    let result = state.store.revoke_api_token(id, &revoking.ctx).await;
    let revocation = crate::revocations::Revocation::ApiToken { token: id };
    let revoked = match state.revocations.settle(revoking, Some(revocation), result)? {
        Settled::Written(revoked) => revoked,
        Settled::Held(held) => return Ok(held.into_response()),
    };
    tracing::info!(token_id = %id, human = %revoked.token.human, by = %caller.human.email, minted_revoked = ?revoked.minted_revoked, "API token revoked");
    Ok(Json(revoked).into_response())
}
