//! `/v1/agents`: register, list, show, update, and move agents through their lifecycle.

use crate::revocations::Settled;
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse as _, Response};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use warden_core::{
    Agent, AgentDetail, AgentName, AgentRegistration, AgentState, AgentUpdate, ChangeContext, Email,
    LifecycleAction, Permission,
};
use warden_store::{AgentChange, AgentFilter, JoinTokenRecord};

use crate::auth::Caller;
use crate::error::{ApiError, ErrorBody};
use crate::json::{ApiJson, ApiPath, ApiQuery, OptionalJson};
use crate::{AppState, RegistryEvent};
use warden_ledger::EntryKind;

/// Longest lifecycle reason we record.
const MAX_REASON_LEN: usize = 1_000;

#[derive(Debug, Serialize, ToSchema)]
pub struct AgentList {
    pub agents: Vec<Agent>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct AgentListQuery {
    /// Only agents in this state.
    pub state: Option<AgentState>,
    /// Only agents this human owns.
    pub owner: Option<Email>,
}

/// The body of a lifecycle command.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LifecycleRequest {
    /// Why, for the record (recorded in the agent's history).
    #[serde(default)]
    pub reason: String,
}

pub(crate) fn parse_name(raw: &str) -> Result<AgentName, ApiError> {
    Ok(AgentName::parse(raw)?)
}

/// A registered agent and its one-time join token.
#[derive(Serialize, ToSchema)]
pub struct AgentRegistered {
    #[serde(flatten)]
    pub agent: Agent,
    /// Shown once: the agent enrolls its own key with it (`warden agent enroll`). Single use.
    pub join_token: String,
    pub join_token_expires_at: chrono::DateTime<chrono::Utc>,
}

impl std::fmt::Debug for AgentRegistered {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentRegistered")
            .field("agent", &self.agent)
            .field("join_token", &"REDACTED")
            .finish()
    }
}

/// A fresh join token.
#[derive(Serialize, ToSchema)]
pub struct JoinToken {
    pub join_token: String,
    pub expires_at: chrono::DateTime<chrono::Utc>,
}

impl std::fmt::Debug for JoinToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JoinToken")
            .field("join_token", &"REDACTED")
            .field("expires_at", &self.expires_at)
            .finish()
    }
}

fn new_join(state: &AppState) -> (warden_core::Secret<String>, JoinTokenRecord) {
    let (secret, hash) = warden_core::token::generate_join();
    let expires_at = chrono::Utc::now() + state.identity.settings.join_token_ttl;
    (secret, JoinTokenRecord { hash, expires_at })
}

#[utoipa::path(
    post, path = "/v1/agents", tag = "agents",
    request_body = AgentRegistration,
    responses(
        (status = 201, description = "Registered, in `pending_review`, with a one-time join token", body = AgentRegistered),
        (status = 400, description = "Invalid field", body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 409, description = "Name taken (also by a retired agent)", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn register(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(body): ApiJson<AgentRegistration>,
) -> Result<(StatusCode, Json<AgentRegistered>), ApiError> {
    let permit = caller.require(Permission::WriteRegistry)?;
    let (secret, join) = new_join(&state);
    let agent = state
        .store
        .create_agent(
            &body,
            &state.trust_domain,
            &join,
            &permit
                .record(
                    &state,
                    EntryKind::RegistryChange,
                    "agent.register",
                    body.name.as_str(),
                    serde_json::to_value(&body).unwrap_or_default(),
                )
                .await?,
        )
        .await?;
    state.policies.agent_changed(&agent);
    tracing::info!(agent = %agent.name, spiffe_id = %agent.spiffe_id, by = %caller.human.email, "agent registered");
    Ok((
        StatusCode::CREATED,
        Json(AgentRegistered {
            agent,
            join_token: secret.into_inner(),
            join_token_expires_at: join.expires_at,
        }),
    ))
}

#[utoipa::path(
    post, path = "/v1/agents/{name}/join-token", tag = "agents",
    params(("name" = String, Path, description = "Agent name")),
    responses(
        (status = 201, description = "A new join token (older unused ones stop working); enrolling with it replaces the agent's key", body = JoinToken),
        (status = 404, body = ErrorBody), (status = 409, description = "The agent is retired", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn join_token(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(name): ApiPath<String>,
) -> Result<(StatusCode, Json<JoinToken>), ApiError> {
    let permit = caller.require(Permission::WriteRegistry)?;
    let name = parse_name(&name)?;
    let (secret, join) = new_join(&state);
    let ctx = permit
        .record(
            &state,
            EntryKind::RegistryChange,
            "agent.join_token",
            name.as_str(),
            serde_json::json!({"agent": name.as_str(), "expires_at": join.expires_at}),
        )
        .await?;
    state.store.issue_join_token(&name, &join, &ctx).await?;
    tracing::info!(agent = %name, by = %caller.human.email, "join token issued");
    Ok((
        StatusCode::CREATED,
        Json(JoinToken {
            join_token: secret.into_inner(),
            expires_at: join.expires_at,
        }),
    ))
}

#[utoipa::path(
    get, path = "/v1/agents", tag = "agents", params(AgentListQuery),
    responses((status = 200, body = AgentList), (status = 401, body = ErrorBody)),
    security(("bearer" = []))
)]
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(q): ApiQuery<AgentListQuery>,
) -> Result<Json<AgentList>, ApiError> {
    caller.require(Permission::ReadRegistry)?;
    let agents = state
        .store
        .list_agents(&AgentFilter {
            state: q.state,
            owner: q.owner,
        })
        .await?;
    Ok(Json(AgentList { agents }))
}

#[utoipa::path(
    get, path = "/v1/agents/{name}", tag = "agents",
    params(("name" = String, Path, description = "Agent name")),
    responses((status = 200, body = AgentDetail), (status = 404, body = ErrorBody)),
    security(("bearer" = []))
)]
pub async fn show(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(name): ApiPath<String>,
) -> Result<Json<AgentDetail>, ApiError> {
    caller.require(Permission::ReadRegistry)?;
    let name = parse_name(&name)?;
    let agent = state
        .store
        .get_agent(&name)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("agent `{name}` not found")))?;
    let history = state.store.agent_history(&name).await?;
    Ok(Json(AgentDetail { agent, history }))
}

#[utoipa::path(
    patch, path = "/v1/agents/{name}", tag = "agents",
    params(("name" = String, Path, description = "Agent name")),
    request_body = AgentUpdate,
    responses(
        (status = 200, description = "Updated; a model or environment change returns an active agent to `pending_review`", body = Agent),
        (status = 400, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, description = "The agent is retired", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn update(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(name): ApiPath<String>,
    ApiJson(mut body): ApiJson<AgentUpdate>,
) -> Result<Json<Agent>, ApiError> {
    let permit = caller.require(Permission::WriteRegistry)?;
    let name = parse_name(&name)?;
    body.validate()?;
    // A default intent is parsed by the token endpoint's own parser and stored in its canonical form,
    // so a task started with it gets exactly what the token endpoint would have accepted.
    if let Some(v) = body.default_intent.as_ref().filter(|v| !v.is_null()) {
        let intent =
            warden_identity::TaskIntent::from_authorization_details(&v.to_string()).map_err(|e| {
                ApiError::BadRequest {
                    message: format!("default_intent: {e}"),
                    field: Some("default_intent".into()),
                }
            })?;
        body.default_intent = Some(intent.to_authorization_details());
    }
    let mut details = serde_json::to_value(&body).unwrap_or_default();
    details["agent"] = name.as_str().into();
    let ctx = permit
        .record(
            &state,
            EntryKind::RegistryChange,
            "agent.update",
            name.as_str(),
            details,
        )
        .await?;
    let change = state.store.update_agent(&name, &body, &ctx).await?;
    record_tasks_ended(&state, &ctx, "agent.update", &change).await;
    Ok(Json(publish(&state, change)))
}

/// Most task ids one `task_ended` entry names (the count is always there).
const MAX_TASK_IDS_PER_ENTRY: usize = 1_000;

/// Records the live tasks a registry change ended (a narrowing, a suspension, a retirement, a model or
/// environment change): one `task_ended` entry naming them, why, and the change that caused it. When
/// the ledger cannot take it now, it is held like a revocation's entry and recorded later with its
/// original time.
pub(crate) async fn record_tasks_ended(
    state: &AppState,
    ctx: &ChangeContext,
    cause: &str,
    change: &AgentChange,
) {
    if let Some(reason) = change.tasks_ended.as_deref() {
        record_ended(
            state,
            ctx,
            cause,
            change.agent.name.as_str(),
            &change.revoked_tasks,
            reason,
        )
        .await;
    }
}

/// Records that `tasks` ended because of the change `cause` to `subject` (see [`record_tasks_ended`]).
pub(crate) async fn record_ended(
    state: &AppState,
    ctx: &ChangeContext,
    cause: &str,
    subject: &str,
    tasks: &[uuid::Uuid],
    reason: &str,
) {
    if tasks.is_empty() {
        return;
    }
    let ids: Vec<String> = tasks
        .iter()
        .take(MAX_TASK_IDS_PER_ENTRY)
        .map(ToString::to_string)
        .collect();
    let entry = warden_ledger::NewEntry::new(ctx.at, EntryKind::TaskEnded, ctx.actor.clone())
        .subject(subject)
        .body(serde_json::json!({
            "cause": cause,
            "subject": subject,
            "reason": reason,
            "count": tasks.len(),
            "tasks": ids,
        }));
    if let Err(e) = state.ledger.record(entry.clone()).await {
        tracing::error!(%subject, error = ?e, "the tasks a registry change ended are not recorded in the audit ledger yet; the entry is held until the ledger takes it");
        state.revocations.hold(crate::revocations::Held {
            id: uuid::Uuid::new_v4(),
            revocation: None,
            actor: ctx.actor.clone(),
            at: ctx.at,
            entry: Some(crate::revocations::PendingEntry::of(&entry)),
        });
    }
}

async fn lifecycle(
    state: AppState,
    caller: Caller,
    name: String,
    body: LifecycleRequest,
    action: LifecycleAction,
) -> Result<Response, ApiError> {
    let permit = caller.require(Permission::WriteRegistry)?;
    let name = parse_name(&name)?;
    let reason = body.reason;
    if reason.len() > MAX_REASON_LEN || reason.chars().any(|c| c.is_control() && c != '\n') {
        return Err(ApiError::BadRequest {
            message: format!("reason must be at most {MAX_REASON_LEN} bytes without control characters"),
            field: Some("reason".into()),
        });
    }
    let op = format!("agent.{}", action.as_str());
    let details = serde_json::json!({"agent": name.as_str(), "reason": reason});
    let change = if action == LifecycleAction::Activate {
        let ctx = permit
            .record(
                &state,
                EntryKind::RegistryChange,
                "agent.activate",
                name.as_str(),
                details,
            )
            .await?;
        state.store.transition_agent(&name, action, &reason, &ctx).await?
    } else {
        let revoking = permit
            .record_revocation(&state, EntryKind::RegistryChange, &op, name.as_str(), details)
            .await;
        let revoking_ctx = revoking.ctx.clone();
        let result = state
            .store
            .transition_agent(&name, action, &reason, &revoking.ctx)
            .await;
        // Suspending and retiring stop the agent's credentials: held when the store cannot take them.
        let revocation = matches!(action, LifecycleAction::Suspend | LifecycleAction::Retire).then(|| {
            crate::revocations::Revocation::Agent {
                agent: name.clone(),
                action,
                reason: reason.clone(),
            }
        });
        match state.revocations.settle(revoking, revocation, result)? {
            Settled::Written(change) => {
                record_tasks_ended(&state, &revoking_ctx, &op, &change).await;
                change
            }
            Settled::Held(held) => return Ok(held.into_response()),
        }
    };
    tracing::info!(agent = %name, state = %change.agent.state, by = %caller.human.email, "agent lifecycle change");
    Ok(Json(publish(&state, change)).into_response())
}

/// Publishes the revocation hook when a change invalidates the agent's credentials.
pub(crate) fn publish(state: &AppState, change: AgentChange) -> Agent {
    state.forget_tasks(&change.revoked_tasks);
    state.policies.agent_changed(&change.agent);
    if let Some(reason) = change.credentials_invalidated {
        state.publish(RegistryEvent::CredentialsInvalidated {
            agent: change.agent.name.clone(),
            reason,
            revoked_tasks: change.revoked_tasks.len(),
        });
    }
    change.agent
}

macro_rules! lifecycle_handler {
    ($fn:ident, $action:expr, $path:literal, $doc:literal) => {
        #[doc = $doc]
        #[utoipa::path(
                    post, path = $path, tag = "agents",
                    params(("name" = String, Path, description = "Agent name")),
                    request_body(content = Option<LifecycleRequest>, description = "Optional reason"),
                    responses(
                        (status = 200, body = Agent),
                        (status = 202, description = "Suspend or retire held: the store could not take it", body = crate::revocations::HeldRevocation),
                        (status = 404, body = ErrorBody),
                        (status = 409, description = "Not allowed from the current state", body = ErrorBody),
                    ),
                    security(("bearer" = []))
                )]
        pub async fn $fn(
            State(state): State<AppState>,
            caller: Caller,
            ApiPath(name): ApiPath<String>,
            OptionalJson(body): OptionalJson<LifecycleRequest>,
        ) -> Result<Response, ApiError> {
            lifecycle(state, caller, name, body, $action).await
        }
    };
}

lifecycle_handler!(
    activate,
    LifecycleAction::Activate,
    "/v1/agents/{name}/activate",
    "Activates a reviewed or suspended agent."
);
lifecycle_handler!(
    suspend,
    LifecycleAction::Suspend,
    "/v1/agents/{name}/suspend",
    "Suspends an agent; its credentials stop working."
);
lifecycle_handler!(
    retire,
    LifecycleAction::Retire,
    "/v1/agents/{name}/retire",
    "Retires an agent for good; it is kept for audit."
);
