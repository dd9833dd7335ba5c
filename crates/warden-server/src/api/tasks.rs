//! Tasks: what an agent sees of its own task (`/v1/task`, with its task token), and what admins and
//! owners see and do (`/v1/tasks`), plus signing-key rotation.

use crate::revocations::Settled;
use axum::Json;
use axum::extract::State;
use axum::response::{IntoResponse as _, Response};

use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;
use warden_core::{AgentName, Permission, Task, TaskState};
use warden_store::TaskFilter;

use crate::AppState;
use crate::auth::Caller;
use crate::error::{ApiError, ErrorBody};
use crate::json::{ApiPath, ApiQuery, OptionalJson};
use crate::oauth::{OAuthError, OAuthErrorBody};
use crate::tasks::TaskCaller;
use warden_ledger::EntryKind;

/// Longest reason recorded when a task ends.
const MAX_REASON_LEN: usize = 1_000;

#[derive(Debug, Serialize, ToSchema)]
pub struct TaskList {
    pub tasks: Vec<Task>,
}

/// What the presenting agent's task token says, and its task.
#[derive(Debug, Serialize, ToSchema)]
pub struct CurrentTask {
    pub task: Task,
    /// The token's subject (the agent's SPIFFE ID).
    pub sub: String,
    /// The delegation chain, if any.
    #[schema(value_type = Option<Object>)]
    pub act: Option<serde_json::Value>,
    /// When this token expires (Unix seconds).
    pub exp: i64,
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EndTask {
    #[serde(default)]
    pub reason: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct TaskEnded {
    /// The task and every task delegated from it that stopped with it.
    pub stopped: Vec<Uuid>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct TaskListQuery {
    pub agent: Option<AgentName>,
    pub state: Option<TaskState>,
}

fn check_reason(reason: &str) -> Result<(), ApiError> {
    if reason.len() > MAX_REASON_LEN || reason.chars().any(|c| c.is_control() && c != '\n') {
        return Err(ApiError::BadRequest {
            message: format!("reason must be at most {MAX_REASON_LEN} bytes without control characters"),
            field: Some("reason".into()),
        });
    }
    Ok(())
}

#[utoipa::path(
    get, path = "/v1/task", tag = "tasks",
    responses((status = 200, body = CurrentTask), (status = 401, description = "Missing, invalid, expired or revoked task token", body = OAuthErrorBody)),
    security(("task_token" = []))
)]
pub async fn current(caller: TaskCaller) -> Json<CurrentTask> {
    let act = caller
        .claims
        .act
        .as_ref()
        .and_then(|a| serde_json::to_value(a).ok());
    Json(CurrentTask {
        task: (*caller.task).clone(),
        sub: caller.claims.sub,
        act,
        exp: caller.claims.exp,
    })
}

#[utoipa::path(
    post, path = "/v1/task/end", tag = "tasks", request_body(content = Option<EndTask>),
    responses((status = 200, body = TaskEnded), (status = 202, description = "Held: the store could not take it", body = crate::revocations::HeldRevocation), (status = 401, body = OAuthErrorBody)),
    security(("task_token" = []))
)]
pub async fn end_current(
    State(state): State<AppState>,
    caller: TaskCaller,
    body: axum::body::Bytes,
) -> Result<Response, OAuthError> {
    let reason = if body.is_empty() {
        String::new()
    } else {
        serde_json::from_slice::<EndTask>(&body)
            .map_err(|e| OAuthError::invalid_request(format!("invalid body: {e}")))?
            .reason
    };
    check_reason(&reason)
        .map_err(|_| OAuthError::invalid_request("reason is too long or has control characters"))?;
    let reason = if reason.is_empty() {
        "ended by the agent".to_owned()
    } else {
        reason
    };
    // Ending a task takes privileges away: it goes ahead even if the ledger cannot record it (the
    // entry is then held until it can), and is held when the store cannot take it.
    let entry = crate::ledger::entry(EntryKind::TaskEnded, &caller.claims.sub)
        .subject(caller.task.id.to_string())
        .body(serde_json::json!({
            "op": "task.end",
            "agent": caller.task.agent.as_str(),
            "task": caller.task.id,
            "reason": reason,
        }));
    let unrecorded = match state.ledger.record(entry.clone()).await {
        Ok(_) => None,
        Err(e) => {
            tracing::error!(task = %caller.task.id, error = %e, "task end not recorded in the audit ledger yet; it goes ahead and the entry is held");
            Some(crate::revocations::PendingEntry::of(&entry))
        }
    };
    let revoking = crate::revocations::Revoking {
        ctx: warden_core::ChangeContext::new(caller.claims.sub.clone(), entry.at),
        unrecorded,
    };
    let result = state.store.end_task(caller.task.id, &reason, &revoking.ctx).await;
    let revocation = crate::revocations::Revocation::TaskEnd {
        task: caller.task.id,
        reason: reason.clone(),
    };
    let stopped = match state.revocations.settle(revoking, Some(revocation), result) {
        Ok(Settled::Written(stopped)) => stopped,
        Ok(Settled::Held(held)) => return Ok(held.into_response()),
        Err(warden_store::StoreError::Conflict(m)) => return Err(OAuthError::invalid_token(m)),
        Err(other) => return Err(other.into()),
    };
    state.forget_tasks(&stopped);
    tracing::info!(task = %caller.task.id, agent = %caller.task.agent, stopped = stopped.len(), "task ended by its agent");
    Ok(Json(TaskEnded { stopped }).into_response())
}

#[utoipa::path(
    get, path = "/v1/tasks", tag = "tasks", params(TaskListQuery),
    responses((status = 200, body = TaskList), (status = 401, body = ErrorBody)), security(("bearer" = []))
)]
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(q): ApiQuery<TaskListQuery>,
) -> Result<Json<TaskList>, ApiError> {
    caller.require(Permission::ReadRegistry)?;
    let tasks = state
        .store
        .list_tasks(&TaskFilter {
            agent: q.agent,
            state: q.state,
        })
        .await?;
    Ok(Json(TaskList { tasks }))
}

fn parse_id(raw: &str) -> Result<Uuid, ApiError> {
    raw.parse().map_err(|_| ApiError::BadRequest {
        message: format!("`{}` is not a task id (a UUID)", raw.escape_debug()),
        field: Some("id".into()),
    })
}

#[utoipa::path(
    get, path = "/v1/tasks/{id}", tag = "tasks", params(("id" = Uuid, Path)),
    responses((status = 200, body = Task), (status = 404, body = ErrorBody)), security(("bearer" = []))
)]
pub async fn show(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<Task>, ApiError> {
    caller.require(Permission::ReadRegistry)?;
    let id = parse_id(&id)?;
    let task = state
        .store
        .get_task(id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("task `{id}` not found")))?;
    Ok(Json(task))
}

#[utoipa::path(
    post, path = "/v1/tasks/{id}/end", tag = "tasks", params(("id" = Uuid, Path)), request_body = EndTask,
    responses(
        (status = 200, body = TaskEnded), (status = 202, description = "Held: the store could not take it", body = crate::revocations::HeldRevocation), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, description = "Not active", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn end(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
    OptionalJson(body): OptionalJson<EndTask>,
) -> Result<Response, ApiError> {
    let id = parse_id(&id)?;
    check_reason(&body.reason)?;
    // Admins may end any task; an agent's owners may end its tasks.
    let task = state
        .store
        .get_task(id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("task `{id}` not found")))?;
    let owns = match state.store.get_agent(&task.agent).await? {
        Some(agent) => agent.owners.contains(&caller.human.email),
        None => false,
    };
    let permit = if owns {
        caller.require(Permission::ManageOwnAgents)?
    } else {
        caller.require(Permission::WriteRegistry)?
    };
    let reason = if body.reason.is_empty() {
        format!("ended by {}", caller.human.email)
    } else {
        body.reason
    };
    let revoking = permit
        .record_revocation(
            &state,
            EntryKind::TaskEnded,
            "task.end",
            &id.to_string(),
            serde_json::json!({"agent": task.agent.as_str(), "task": id, "reason": reason}),
        )
        .await;
    let result = state.store.end_task(id, &reason, &revoking.ctx).await;
    let revocation = crate::revocations::Revocation::TaskEnd {
        task: id,
        reason: reason.clone(),
    };
    let stopped = match state.revocations.settle(revoking, Some(revocation), result)? {
        Settled::Written(stopped) => stopped,
        Settled::Held(held) => return Ok(held.into_response()),
    };
    state.forget_tasks(&stopped);
    tracing::info!(task = %id, by = %caller.human.email, stopped = stopped.len(), "task ended");
    Ok(Json(TaskEnded { stopped }).into_response())
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Rotated {
    pub old_kid: String,
    pub new_kid: String,
}

#[utoipa::path(
    post, path = "/v1/keys/rotate", tag = "identity",
    responses((status = 200, description = "This node signs with a new key; the old one verifies until the overlap ends", body = Rotated), (status = 403, body = ErrorBody)),
    security(("bearer" = []))
)]
pub async fn rotate_keys(State(state): State<AppState>, caller: Caller) -> Result<Json<Rotated>, ApiError> {
    let permit = caller.require(Permission::WriteRegistry)?;
    permit
        .record(
            &state,
            EntryKind::KeyChange,
            "keys.rotate",
            "token-signing-key",
            serde_json::json!({}),
        )
        .await?;
    let (old_kid, new_kid) = state
        .identity
        .keys
        .rotate()
        .await
        .map_err(|e| ApiError::Internal(format!("{e:#}")))?;
    tracing::info!(by = %caller.human.email, %old_kid, %new_kid, "signing key rotation requested");
    Ok(Json(Rotated { old_kid, new_kid }))
}
