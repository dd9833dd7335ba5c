//! `/v1/approvals`: approval requests opened by `needs_approval` decisions, for the humans who decide
//! them and the agents who wait on them.
//!
//! Approving or denying takes the `approver` role; the store refuses the agent's own owners
//! (separation of duties), a second vote by the same human, and requests that are decided or expired.
//! Each vote is recorded in the ledger before it is counted. An agent waits with its task token:
//! `GET /v1/approvals/{id}?wait=25` answers as soon as the request is decided (or the wait ends).

use std::time::Duration;

use axum::Json;
use axum::extract::{FromRequestParts, Request, State};
use axum::http::header;
use serde::Deserialize;
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;
use warden_core::{AgentName, Permission};
use warden_ledger::EntryKind;
use warden_store::{Approval, ApprovalFilter, ApprovalState, StoreError, Vote};

use crate::AppState;
use crate::auth::Caller;
use crate::error::{ApiError, ErrorBody};
use crate::json::{ApiPath, ApiQuery, OptionalJson};
use crate::tasks::TaskCaller;

/// Longest `wait`, seconds (below the default 30 s request timeout).
pub const MAX_WAIT_SECS: u64 = 25;
/// Longest comment on a vote.
pub const MAX_COMMENT_LEN: usize = 1000;

#[derive(Debug, serde::Serialize, ToSchema)]
pub struct ApprovalList {
    pub approvals: Vec<Approval>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    /// `pending`, `approved`, `denied` or `expired`.
    pub state: Option<String>,
    pub agent: Option<String>,
}

#[utoipa::path(
    get, path = "/v1/approvals", tag = "approvals", params(ListQuery),
    responses((status = 200, body = ApprovalList), (status = 400, body = ErrorBody)),
    security(("bearer" = []))
)]
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> Result<Json<ApprovalList>, ApiError> {
    caller.require(Permission::ReadRegistry)?;
    let filter = ApprovalFilter {
        state: q
            .state
            .as_deref()
            .map(|s| s.parse::<ApprovalState>())
            .transpose()
            .map_err(|m| ApiError::BadRequest {
                message: m,
                field: Some("state".into()),
            })?,
        agent: q.agent.as_deref().map(AgentName::parse).transpose()?,
    };
    Ok(Json(ApprovalList {
        approvals: state.store.list_approvals(&filter).await?,
    }))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct ShowQuery {
    /// Seconds to wait for a pending request to be decided (at most 25); `25s` is accepted too.
    pub wait: Option<String>,
}

fn parse_wait(raw: Option<&str>) -> Result<u64, ApiError> {
    let Some(raw) = raw else { return Ok(0) };
    let digits = raw.strip_suffix('s').unwrap_or(raw);
    let secs: u64 = digits.parse().map_err(|_| ApiError::BadRequest {
        message: format!(
            "wait must be a number of seconds (e.g. `25` or `25s`), not `{}`",
            raw.escape_debug()
        ),
        field: Some("wait".into()),
    })?;
    if secs > MAX_WAIT_SECS {
        return Err(ApiError::BadRequest {
            message: format!("wait must be at most {MAX_WAIT_SECS} seconds"),
            field: Some("wait".into()),
        });
    }
    Ok(secs)
}

async fn load(state: &AppState, id: Uuid) -> Result<Approval, ApiError> {
    state
        .store
        .get_approval(id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("approval request `{id}` not found")))
}

#[utoipa::path(
    get, path = "/v1/approvals/{id}", tag = "approvals",
    params(("id" = Uuid, Path, description = "Approval request id"), ShowQuery),
    responses(
        (status = 200, description = "The request; with `wait`, answered once it is decided or the wait ends", body = Approval),
        (status = 404, body = ErrorBody),
    ),
    security(("bearer" = []), ("task_token" = []))
)]
pub async fn show(State(state): State<AppState>, request: Request) -> Result<Json<Approval>, ApiError> {
    let (mut parts, _) = request.into_parts();
    let ApiPath(id) = ApiPath::<String>::from_request_parts(&mut parts, &state).await?;
    let id: Uuid = id.parse().map_err(|_| ApiError::BadRequest {
        message: format!("`{}` is not an approval request id", id.escape_debug()),
        field: Some("id".into()),
    })?;
    let ApiQuery(q) = ApiQuery::<ShowQuery>::from_request_parts(&mut parts, &state).await?;
    let wait = parse_wait(q.wait.as_deref())?;
    // A human's API token, or the waiting agent's task token (a JWT), which sees only its own task's
    // requests.
    let bearer = parts
        .headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' ').map(|(_, t)| t.trim()))
        .unwrap_or("");
    let task = if bearer.starts_with("eyJ") {
        let caller = TaskCaller::from_request_parts(&mut parts, &state)
            .await
            .map_err(|e| ApiError::Unauthorized(e.description))?;
        Some(caller.task.id)
    } else {
        let caller = Caller::from_request_parts(&mut parts, &state).await?;
        caller.require(Permission::ReadRegistry)?;
        None
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(wait);
    loop {
        let a = load(&state, id).await?;
        if let Some(task) = task
            && a.task_id != task
        {
            // Another task's request does not exist, as far as this token is concerned.
            return Err(ApiError::NotFound(format!("approval request `{id}` not found")));
        }
        let expired = a.state == ApprovalState::Pending && a.expires_at <= chrono::Utc::now();
        if a.state != ApprovalState::Pending || expired || tokio::time::Instant::now() >= deadline {
            let mut a = a;
            if expired {
                a.state = ApprovalState::Expired;
            }
            return Ok(Json(a));
        }
        // Votes may land on any node: the store is the one place to look.
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[derive(Debug, serde::Serialize, ToSchema)]
pub struct WebhookList {
    pub webhooks: Vec<crate::notify::WebhookStatus>,
}

#[utoipa::path(
    get, path = "/v1/approvals/webhooks", tag = "approvals",
    responses((status = 200, description = "Delivery counts and the last error of each webhook", body = WebhookList)),
    security(("bearer" = []))
)]
pub async fn webhooks(State(state): State<AppState>, caller: Caller) -> Result<Json<WebhookList>, ApiError> {
    caller.require(Permission::ReadRegistry)?;
    Ok(Json(WebhookList {
        webhooks: state.notifier.status(),
    }))
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VoteBody {
    /// Why (kept with the vote and in the ledger).
    #[serde(default)]
    pub comment: String,
}

async fn vote(
    state: AppState,
    caller: Caller,
    id: String,
    body: VoteBody,
    vote: Vote,
) -> Result<Json<Approval>, ApiError> {
    let permit = caller.require(Permission::DecideApprovals)?;
    let id: Uuid = id.parse().map_err(|_| ApiError::BadRequest {
        message: format!("`{}` is not an approval request id", id.escape_debug()),
        field: Some("id".into()),
    })?;
    if body.comment.len() > MAX_COMMENT_LEN || body.comment.chars().any(|c| c.is_control() && c != '\n') {
        return Err(ApiError::BadRequest {
            message: format!("comment must be at most {MAX_COMMENT_LEN} bytes without control characters"),
            field: Some("comment".into()),
        });
    }
    let before = load(&state, id).await?;
    let (kind, op) = match vote {
        Vote::Approve => (EntryKind::ApprovalGranted, "approval.approve"),
        Vote::Deny => (EntryKind::ApprovalDenied, "approval.deny"),
    };
    let mut details = crate::approvals::approval_body(&before);
    details["comment"] = body.comment.clone().into();
    let ctx = permit.record(&state, kind, op, &id.to_string(), details).await?;
    let grant_ttl = state.approvals.grant_ttl;
    let after = state
        .store
        .vote_approval(id, &caller.human.email, vote, &body.comment, ctx.at, grant_ttl)
        .await
        .map_err(|e| match e {
            // Decided, expired, voted already, or the agent's own owner: the vote is refused, and
            // the audit layer records the refusal after the vote's entry.
            StoreError::Conflict(m) => ApiError::Conflict(m),
            other => other.into(),
        })?;
    tracing::info!(approval = %id, by = %caller.human.email, vote = ?vote, state = after.state.as_str(), approvals = after.approvals, quorum = after.quorum, "approval vote");
    let by = Some(caller.human.email.as_str());
    match after.state {
        ApprovalState::Approved => {
            // The vote that completed the quorum made a grant: the entry names everyone who
            // approved and how long the grant lives. (The vote itself was recorded before it was
            // counted; a grant is never usable without that vote's entry.)
            let mut body = crate::approvals::approval_body(&after);
            body["approved_by"] = after
                .votes
                .iter()
                .filter(|v| v.vote == Vote::Approve)
                .map(|v| v.approver.as_str())
                .collect::<Vec<_>>()
                .into();
            let entry = crate::ledger::entry(EntryKind::GrantIssued, caller.human.email.as_str())
                .subject(id.to_string())
                .body(body);
            if let Err(e) = state.ledger.record_all(vec![entry]).await {
                tracing::error!(error = %e, approval = %id, "the grant of an approved request is not recorded in the audit ledger");
            }
            crate::approvals::notify(&state, &after, crate::notify::ApprovalEventKind::Approved, by);
        }
        ApprovalState::Denied => {
            crate::approvals::notify(&state, &after, crate::notify::ApprovalEventKind::Denied, by);
        }
        ApprovalState::Pending | ApprovalState::Expired => {}
    }
    Ok(Json(after))
}

#[utoipa::path(
    post, path = "/v1/approvals/{id}/approve", tag = "approvals", request_body(content = Option<VoteBody>),
    params(("id" = Uuid, Path, description = "Approval request id")),
    responses(
        (status = 200, description = "Counted; `approved` once the quorum is reached", body = Approval),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, description = "Decided, expired, already voted, or the agent's own owner", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn approve(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
    OptionalJson(body): OptionalJson<VoteBody>,
) -> Result<Json<Approval>, ApiError> {
    vote(state, caller, id, body, Vote::Approve).await
}

#[utoipa::path(
    post, path = "/v1/approvals/{id}/deny", tag = "approvals", request_body(content = Option<VoteBody>),
    params(("id" = Uuid, Path, description = "Approval request id")),
    responses(
        (status = 200, description = "Denied: one deny ends the request", body = Approval),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn deny(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
    OptionalJson(body): OptionalJson<VoteBody>,
) -> Result<Json<Approval>, ApiError> {
    vote(state, caller, id, body, Vote::Deny).await
}
