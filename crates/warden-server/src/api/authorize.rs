//! `POST /v1/authorize`: the policy decision point for enforcement points outside Warden (your own
//! services, sidecars). An agent (or a service acting for it) presents the task token; the action, the
//! resource and the arguments come in the body; the task's intent and delegation chain come from Warden's
//! own record of the task, never from the caller. The answer is the decision value.

use axum::Json;
use axum::extract::State;
use chrono::Utc;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use warden_core::{Decision, Task};
use warden_identity::TaskIntent;
use warden_policy::{Action, PolicyContext, PolicyRequest, ResourceRef, TaskContext};

use crate::AppState;
use crate::error::ApiError;
use crate::json::ApiJson;
use crate::tasks::TaskCaller;

/// Most requests in one batch.
pub const MAX_BATCH: usize = 100;

/// One question: may the token's agent do `action` to `resource`, with these arguments?
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AuthorizeRequest {
    /// `read`, `write`, `destructive` or `admin`. An unknown action is a deny, with the reason.
    pub action: String,
    /// `{"upstream": "crm"}`, `{"tool": "crm/search"}` or `{"dataset": "crm/invoices"}`.
    #[schema(value_type = Object)]
    pub resource: ResourceRef,
    /// Tool arguments, as JSON (bounded: size, depth, keys; beyond the bounds, deny).
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub args: Option<serde_json::Value>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AuthorizeBatch {
    pub requests: Vec<AuthorizeRequest>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Decisions {
    pub decisions: Vec<Decision>,
}

/// The task context a decision sees: what Warden recorded for the task.
pub fn task_context(task: &Task) -> Result<TaskContext, String> {
    let intent = TaskIntent::from_authorization_details(&task.intent.to_string())
        .map_err(|e| format!("the task's recorded intent is unreadable: {e}"))?;
    let mut chain = Vec::new();
    let mut act = task.act.as_ref();
    while let Some(a) = act {
        if let Some(name) = a
            .get("sub")
            .and_then(|s| s.as_str())
            .and_then(|s| s.rsplit('/').next())
            .and_then(|n| warden_core::AgentName::parse(n).ok())
        {
            chain.push(name);
        }
        act = a.get("act");
    }
    Ok(TaskContext {
        id: task.id.to_string(),
        purpose: intent.purpose,
        task_type: intent.task_type,
        upstreams: intent.upstreams,
        tools: intent.tools,
        datasets: intent.datasets,
        depth: task.depth,
        chain,
    })
}

fn decide_one(state: &AppState, caller: &TaskCaller, req: AuthorizeRequest) -> Decision {
    let resource = req.resource.to_string();
    let action = req.action.clone();
    let decision = decide_request(state, caller, req);
    // Every decision, refusals of malformed requests included, leaves a trace.
    tracing::info!(
        agent = %caller.task.agent, task = %caller.task.id, action = %action.escape_debug(), %resource,
        outcome = ?decision.outcome, reasons = ?decision.reasons, policy = %decision.policy_version,
        "authorize"
    );
    decision
}

fn decide_request(state: &AppState, caller: &TaskCaller, req: AuthorizeRequest) -> Decision {
    let version = || {
        state
            .policies
            .versions()
            .0
            .unwrap_or_else(|| crate::policy::NO_POLICY.to_owned())
    };
    let action = match req.action.parse::<Action>() {
        Ok(a) if a.is_task_action() => {
            return Decision::deny(
                format!(
                    "bad-request: `{}` is decided at the token endpoint, not here",
                    a.as_str()
                ),
                version(),
            );
        }
        Ok(a) => a,
        Err(e) => return Decision::deny(format!("bad-request: {e}"), version()),
    };
    let task = match task_context(&caller.task) {
        Ok(t) => t,
        Err(e) => return Decision::deny(format!("bad-task: {e}"), version()),
    };
    let request = PolicyRequest {
        principal: caller.task.agent.clone(),
        action,
        resource: req.resource,
        context: PolicyContext {
            task: Some(task),
            args: req.args,
            ..Default::default()
        },
    };
    state.policies.decide(&request, Utc::now())
}

#[utoipa::path(
    post, path = "/v1/authorize", tag = "policy", request_body = AuthorizeRequest,
    responses(
        (status = 200, description = "The decision (allow, deny or needs_approval) with reasons and the policy version", body = Decision),
        (status = 400, description = "Malformed request"),
        (status = 401, description = "Missing, invalid, expired or revoked task token"),
    ),
    security(("task_token" = []))
)]
pub async fn authorize(
    State(state): State<AppState>,
    caller: TaskCaller,
    ApiJson(req): ApiJson<AuthorizeRequest>,
) -> Json<Decision> {
    Json(decide_one(&state, &caller, req))
}

#[utoipa::path(
    post, path = "/v1/authorize/batch", tag = "policy", request_body = AuthorizeBatch,
    responses(
        (status = 200, description = "One decision per request, in order", body = Decisions),
        (status = 400, description = "Malformed request, or more than 100 requests"),
        (status = 401, description = "Missing, invalid, expired or revoked task token"),
    ),
    security(("task_token" = []))
)]
pub async fn authorize_batch(
    State(state): State<AppState>,
    caller: TaskCaller,
    ApiJson(batch): ApiJson<AuthorizeBatch>,
) -> Result<Json<Decisions>, ApiError> {
    if batch.requests.is_empty() || batch.requests.len() > MAX_BATCH {
        return Err(ApiError::BadRequest {
            message: format!(
                "a batch holds 1 to {MAX_BATCH} requests, not {}",
                batch.requests.len()
            ),
            field: Some("requests".into()),
        });
    }
    let decisions = batch
        .requests
        .into_iter()
        .map(|r| decide_one(&state, &caller, r))
        .collect();
    Ok(Json(Decisions { decisions }))
}
