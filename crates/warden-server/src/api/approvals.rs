//! `/v1/approvals`: approval requests opened by `needs_approval` decisions, for the humans who decide
//! them and the agents who wait on them.
//!
//! Approving or denying takes the `approver` role and the voter's own API token (not one an admin
//! issued them: see `ApiTokenInfo::personal`); the store refuses the owners of any agent in the
//! request's delegation chain (separation of duties), a second vote by the same human, and requests
//! that are decided or expired. A refused vote is recorded as `approval_vote_refused` with the reason;
//! a vote that may count is recorded as `approval_vote` (verdict, voter, token id, tally) before it is
//! counted; the request's outcome follows as `grant_issued` (quorum reached) or `approval_denied`. An agent waits with its task token:
//! `GET /v1/approvals/{id}?wait=25` answers as soon as the request is decided (or the wait ends).

use std::time::Duration;

use axum::Json;
use axum::extract::{FromRequestParts, Request, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
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

/// Votes on one node are counted one at a time, so the tally an `approval_vote` entry states (written
/// before the vote is counted) is the one the store then makes; votes cast at the same moment on two
/// nodes may both state the same tally, and the store (which locks the request) still counts each
/// once — `grant_issued` names everyone whose vote made the quorum.
static VOTES: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn verdict(vote: Vote) -> &'static str {
    match vote {
        Vote::Approve => "approve",
        Vote::Deny => "deny",
    }
}

/// Records a refused vote as `approval_vote_refused` (with the reason; and `vote_entry`, when the
/// vote's own entry was already written) and answers with the refusal, marked recorded so the audit
/// layer does not record it a second time.
async fn refused(
    state: &AppState,
    caller: &Caller,
    id: &str,
    vote: Vote,
    error: ApiError,
    vote_entry: Option<u64>,
) -> Response {
    let reason = match &error {
        ApiError::Forbidden(m) | ApiError::Conflict(m) | ApiError::NotFound(m) => m.clone(),
        ApiError::BadRequest { message, .. } => message.clone(),
        other => format!("{other:?}"),
    };
    let entry = crate::ledger::entry(EntryKind::ApprovalVoteRefused, caller.human.email.as_str())
        .subject(id)
        .body(serde_json::json!({
            "approval": id,
            "verdict": verdict(vote),
            "voter": caller.human.email.as_str(),
            "token_id": caller.token.id,
            "reason": warden_core::redact::credentials_redacted(&reason),
            "vote_entry": vote_entry,
        }));
    let recorded = match state.ledger.record(entry).await {
        Ok(_) => true,
        Err(e) => {
            tracing::error!(error = %e, approval = %id, "a refused vote could not be recorded in the audit ledger");
            false
        }
    };
    tracing::info!(approval = %id, by = %caller.human.email, token_id = %caller.token.id, vote = verdict(vote), %reason, "approval vote refused");
    let mut resp = error.into_response();
    if recorded {
        resp.extensions_mut().insert(crate::audit::Recorded);
    }
    resp
}

async fn vote(
    state: AppState,
    caller: Caller,
    id: String,
    body: VoteBody,
    vote: Vote,
) -> Result<Json<Approval>, Response> {
    let raw_id = id;
    let id: Uuid = raw_id.parse().map_err(|_| {
        ApiError::BadRequest {
            message: format!("`{}` is not an approval request id", raw_id.escape_debug()),
            field: Some("id".into()),
        }
        .into_response()
    })?;
    if body.comment.len() > MAX_COMMENT_LEN || body.comment.chars().any(|c| c.is_control() && c != '\n') {
        return Err(ApiError::BadRequest {
            message: format!("comment must be at most {MAX_COMMENT_LEN} bytes without control characters"),
            field: Some("comment".into()),
        }
        .into_response());
    }
    let subject = id.to_string();
    let permit = match caller.require(Permission::DecideApprovals) {
        Ok(p) => p,
        Err(e) => return Err(refused(&state, &caller, &subject, vote, e, None).await),
    };
    let before = load(&state, id).await.map_err(IntoResponse::into_response)?;
    // A vote is bound to its holder: an API token someone else issued (an admin for this human, the
    // bootstrap file) has been seen by whoever issued it, so it does not vote, nor does any token
    // minted from it without a claim.
    if !caller.token.personal {
        let t = &caller.token;
        let e = ApiError::Forbidden(format!(
            "API token `{}` was issued to `{}` by `{}` and is not their own: only a token its holder minted for themselves votes. \
             Claim it first (`warden human token create {} --claim`; the issued token is then revoked) and vote with the new token",
            t.id, t.human, t.created_by, t.human
        ));
        return Err(refused(&state, &caller, &subject, vote, e, None).await);
    }
    let _one_at_a_time = VOTES.lock().await;
    let now = chrono::Utc::now();
    let check = match state.store.check_vote(id, &caller.human.email, vote, now).await {
        Ok(c) => c,
        Err(e @ (StoreError::Conflict(_) | StoreError::Forbidden(_))) => {
            return Err(refused(&state, &caller, &subject, vote, e.into(), None).await);
        }
        Err(e) => return Err(ApiError::from(e).into_response()),
    };
    // Recorded before it is counted: a vote that is not in the ledger is never counted.
    let mut details = crate::approvals::approval_body(&before);
    // The tally is `votes` of `required`; the request's state is what the outcome entry says.
    if let Some(o) = details.as_object_mut() {
        o.remove("approvals");
        o.remove("state");
    }
    details["op"] = format!("approval.{}", verdict(vote)).into();
    details["permission"] = format!("{:?}", permit.permission()).into();
    details["verdict"] = verdict(vote).into();
    details["voter"] = caller.human.email.as_str().into();
    details["token_id"] = caller.token.id.to_string().into();
    details["votes"] = check.approvals.into();
    details["required"] = check.quorum.into();
    details["chain"] = check.chain.iter().map(|a| a.as_str()).collect::<Vec<_>>().into();
    details["comment"] = body.comment.clone().into();
    let entry = crate::ledger::entry(EntryKind::ApprovalVote, caller.human.email.as_str())
        .subject(subject.clone())
        .body(details);
    let seq = state
        .ledger
        .record(entry)
        .await
        .map_err(|e| ApiError::from(e).into_response())?;
    let voter = warden_store::Voter {
        email: caller.human.email.clone(),
        token_id: caller.token.id,
    };
    let grant_ttl = state.approvals.grant_ttl;
    let after = match state
        .store
        .vote_approval(id, &voter, vote, &body.comment, now, grant_ttl)
        .await
    {
        Ok(a) => a,
        // Lost a race since the check (another node's vote closed it, say): the recorded vote was
        // not counted, and the ledger says so.
        Err(e @ (StoreError::Conflict(_) | StoreError::Forbidden(_))) => {
            return Err(refused(&state, &caller, &subject, vote, e.into(), Some(seq)).await);
        }
        Err(e) => {
            let e = ApiError::from(e);
            let reason = ApiError::Conflict("the store could not count the vote; vote again".into());
            let _ = refused(&state, &caller, &subject, vote, reason, Some(seq)).await;
            return Err(e.into_response());
        }
    };
    tracing::info!(approval = %id, by = %caller.human.email, token_id = %caller.token.id, vote = ?vote, state = after.state.as_str(), approvals = after.approvals, quorum = after.quorum, "approval vote");
    let by = Some(caller.human.email.as_str());
    let outcome = |kind: EntryKind, extra: &[(&str, serde_json::Value)]| {
        let mut body = crate::approvals::approval_body(&after);
        body["vote_entry"] = seq.into();
        for (k, v) in extra {
            body[*k] = v.clone();
        }
        crate::ledger::entry(kind, caller.human.email.as_str())
            .subject(subject.clone())
            .body(body)
    };
    match after.state {
        ApprovalState::Approved => {
            // The vote that completed the quorum made a grant: the entry names everyone who
            // approved, with the tokens they voted with, and how long the grant lives. (The votes
            // were recorded before they were counted; a grant is never usable without them.)
            let approved: Vec<&warden_store::ApprovalVote> =
                after.votes.iter().filter(|v| v.vote == Vote::Approve).collect();
            let entry = outcome(
                EntryKind::GrantIssued,
                &[
                    (
                        "approved_by",
                        approved
                            .iter()
                            .map(|v| v.approver.as_str())
                            .collect::<Vec<_>>()
                            .into(),
                    ),
                    (
                        "token_ids",
                        approved
                            .iter()
                            .map(|v| v.token_id.map(|t| t.to_string()))
                            .collect::<Vec<_>>()
                            .into(),
                    ),
                ],
            );
            if let Err(e) = state.ledger.record_all(vec![entry]).await {
                tracing::error!(error = %e, approval = %id, "the grant of an approved request is not recorded in the audit ledger");
            }
            crate::approvals::notify(&state, &after, crate::notify::ApprovalEventKind::Approved, by);
        }
        ApprovalState::Denied => {
            let entry = outcome(
                EntryKind::ApprovalDenied,
                &[("denied_by", caller.human.email.as_str().into())],
            );
            if let Err(e) = state.ledger.record_all(vec![entry]).await {
                tracing::error!(error = %e, approval = %id, "the denial of an approval request is not recorded in the audit ledger");
            }
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
        (status = 409, description = "Decided, expired, already voted, or an owner of an agent in the request's delegation chain", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn approve(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
    OptionalJson(body): OptionalJson<VoteBody>,
) -> Result<Json<Approval>, Response> {
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
) -> Result<Json<Approval>, Response> {
    vote(state, caller, id, body, Vote::Deny).await
}
