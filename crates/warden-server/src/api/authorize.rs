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
    /// JSON pointers (RFC 6901) into `args` whose values are sensitive: the ledger keeps them only as
    /// HMAC-SHA256 with the deployment's key (matchable, not readable). A pointer that does not
    /// exist is a deny (a typo must not put a secret into the ledger in clear).
    #[serde(default)]
    pub sensitive: Vec<String>,
}

/// Most sensitive pointers per request.
pub const MAX_SENSITIVE: usize = 64;

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AuthorizeBatch {
    pub requests: Vec<AuthorizeRequest>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Decisions {
    pub decisions: Vec<AuthorizeResponse>,
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
        resources: intent.resources,
        prompts: intent.prompts,
        depth: task.depth,
        chain,
    })
}

/// One answer of the decision point: the decision, and for `needs_approval` (or an allow by a grant)
/// the approval request behind it.
#[derive(Debug, Serialize, ToSchema)]
pub struct AuthorizeResponse {
    #[serde(flatten)]
    pub decision: Decision,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub approval: Option<crate::approvals::ApprovalRef>,
}

/// Decides one request (through the approval gate when it needs approval) and builds its ledger
/// entries: the decision, and an opened approval request.
async fn decide_one(
    state: &AppState,
    caller: &TaskCaller,
    req: AuthorizeRequest,
    request_id: Option<&str>,
) -> (AuthorizeResponse, Vec<warden_ledger::NewEntry>) {
    let started = std::time::Instant::now();
    let now = Utc::now();
    let resource = req.resource.to_string();
    let upstream = match &req.resource {
        ResourceRef::Upstream(u) => Some(u.to_string()),
        ResourceRef::Tool(t) | ResourceRef::Dataset(t) => t.split('/').next().map(str::to_owned),
        _ => None,
    };
    let action = req.action.clone();
    let recorded = match &req.args {
        None if req.sensitive.is_empty() => Ok(None),
        None => Err("bad-request: `sensitive` names arguments, but there are none".to_owned()),
        Some(_) if req.sensitive.len() > MAX_SENSITIVE => {
            Err(format!("bad-request: at most {MAX_SENSITIVE} sensitive pointers"))
        }
        Some(args) => state
            .ledger
            .recorded_arguments(args, &req.sensitive)
            .map(Some)
            .map_err(|e| format!("bad-request: {e}")),
    };
    let mut approval = None;
    let mut more = Vec::new();
    let (decision, arguments) = match recorded {
        Err(reason) => (Decision::deny(reason, policy_version(state)), None),
        Ok(arguments) => match build_request(state, caller, req) {
            Err(deny) => (deny, arguments),
            Ok(request) => {
                let d = state.policies.decide(&request, now);
                if d.outcome == warden_core::Outcome::NeedsApproval {
                    let gate = crate::approvals::gate(
                        state,
                        caller,
                        &request,
                        d,
                        arguments.clone(),
                        upstream.clone(),
                        &resource,
                        now,
                    )
                    .await;
                    approval = gate.approval;
                    more = gate.entries;
                    (gate.decision, arguments)
                } else {
                    (d, arguments)
                }
            }
        },
    };
    // Every decision, refusals of malformed requests included, leaves a trace.
    tracing::info!(
        agent = %caller.task.agent, task = %caller.task.id, action = %action.escape_debug(), %resource,
        outcome = ?decision.outcome, reasons = ?decision.reasons, policy = %decision.policy_version,
        approval = ?approval.as_ref().map(|a| a.id),
        "authorize"
    );
    let facts = crate::ledger::DecisionFacts {
        actor: caller.task.agent_spiffe_id.clone(),
        agent: caller.task.agent.to_string(),
        task: Some(caller.task.id.to_string()),
        action: crate::ledger::clip_str(&action, 64),
        upstream,
        resource: Some(resource),
        arguments,
        request_id: request_id.map(str::to_owned),
    };
    let mut entry = crate::ledger::decision_entry(facts, &decision, started.elapsed());
    if let Some(a) = &approval {
        entry.body["approval"] = a.id.to_string().into();
        entry.body["approval_state"] = a.state.as_str().into();
    }
    let mut entries = vec![entry];
    entries.extend(more);
    (AuthorizeResponse { decision, approval }, entries)
}

pub fn policy_version(state: &AppState) -> String {
    state
        .policies
        .versions()
        .0
        .unwrap_or_else(|| crate::policy::NO_POLICY.to_owned())
}

fn request_id(headers: &axum::http::HeaderMap) -> Option<&str> {
    headers.get("x-request-id").and_then(|v| v.to_str().ok())
}

/// The response of a recorded decision: the ledger sequence number of its (first) entry rides in a
/// header, so an enforcement point can cite the evidence.
fn recorded<T: Serialize>(body: T, seq: u64) -> axum::response::Response {
    use axum::response::IntoResponse as _;
    let mut resp = Json(body).into_response();
    resp.headers_mut()
        .insert(LEDGER_SEQ_HEADER, axum::http::HeaderValue::from(seq));
    resp
}

/// Response header carrying the ledger sequence number of the decision.
pub const LEDGER_SEQ_HEADER: &str = "warden-ledger-seq";

/// The policy request for an authorize request, or the deny that answers it when it is malformed.
fn build_request(
    state: &AppState,
    caller: &TaskCaller,
    req: AuthorizeRequest,
) -> Result<PolicyRequest, Decision> {
    let version = || policy_version(state);
    let action = match req.action.parse::<Action>() {
        Ok(a) if a.is_task_action() => {
            return Err(Decision::deny(
                format!(
                    "bad-request: `{}` is decided at the token endpoint, not here",
                    a.as_str()
                ),
                version(),
            ));
        }
        Ok(a) => a,
        Err(e) => return Err(Decision::deny(format!("bad-request: {e}"), version())),
    };
    let task = match task_context(&caller.task) {
        Ok(t) => t,
        Err(e) => return Err(Decision::deny(format!("bad-task: {e}"), version())),
    };
    Ok(PolicyRequest {
        principal: caller.task.agent.clone(),
        action,
        resource: req.resource,
        context: PolicyContext {
            task: Some(task),
            args: req.args,
            ..Default::default()
        },
    })
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
    headers: axum::http::HeaderMap,
    caller: TaskCaller,
    ApiJson(req): ApiJson<AuthorizeRequest>,
) -> Result<axum::response::Response, ApiError> {
    let (answer, entries) = decide_one(&state, &caller, req, request_id(&headers)).await;
    // Fail closed: no answer (least of all an allow) before the decision is durable.
    let seq = state.ledger.record_all(entries).await?;
    Ok(recorded(answer, seq))
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
    headers: axum::http::HeaderMap,
    caller: TaskCaller,
    ApiJson(batch): ApiJson<AuthorizeBatch>,
) -> Result<axum::response::Response, ApiError> {
    if batch.requests.is_empty() || batch.requests.len() > MAX_BATCH {
        return Err(ApiError::BadRequest {
            message: format!(
                "a batch holds 1 to {MAX_BATCH} requests, not {}",
                batch.requests.len()
            ),
            field: Some("requests".into()),
        });
    }
    let mut decisions = Vec::with_capacity(batch.requests.len());
    let mut entries = Vec::new();
    for r in batch.requests {
        let (answer, more) = decide_one(&state, &caller, r, request_id(&headers)).await;
        decisions.push(answer);
        entries.extend(more);
    }
    let seq = state.ledger.record_all(entries).await?;
    Ok(recorded(Decisions { decisions }, seq))
}
