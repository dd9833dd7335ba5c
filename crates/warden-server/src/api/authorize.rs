//! `POST /v1/authorize`: the policy decision point for enforcement points outside Warden (your own
//! services, sidecars). An agent (or a service acting for it) presents the task token; the action, the
//! resource and the arguments come in the body; the task's intent and delegation chain come from Warden's
//! own record of the task, never from the caller. The answer is the decision value.
//!
//! For a catalogued tool (`{"tool": "upstream/name"}`) the action class comes from the catalogue,
//! as at the gateway's `tools/call`: the caller may name a stricter class (`destructive` for a
//! `write` tool; read < write < destructive < admin) and is decided on it, but a weaker one is
//! raised to the catalogue's class — decided as that, and the answer's and the ledger entry's
//! `action_class` say which class was used and why (no 400: an enforcement point always gets a
//! decision it can act on). A tool the catalogue does not hold (after a re-read of the store) or
//! holds quarantined is denied (`unknown-tool`, `tool-quarantined`), as at the gateway.

use axum::Json;
use axum::extract::State;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use warden_core::{Decision, ToolState};
use warden_policy::{Action, ResourceRef};

use crate::AppState;
use crate::error::ApiError;
use crate::json::ApiJson;
use crate::pipeline;
use crate::tasks::TaskCaller;

/// Most requests in one batch.
pub const MAX_BATCH: usize = 100;

/// One question: may the token's agent do `action` to `resource`, with these arguments?
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AuthorizeRequest {
    /// `read`, `write`, `destructive` or `admin`. An unknown action is a deny, with the reason. For a
    /// catalogued tool, a class weaker than the catalogue's is raised to the catalogue's (see
    /// `action_class` in the answer); a stricter one stands.
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
pub const MAX_SENSITIVE: usize = pipeline::MAX_SENSITIVE;

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AuthorizeBatch {
    pub requests: Vec<AuthorizeRequest>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Decisions {
    pub decisions: Vec<AuthorizeResponse>,
}

/// One answer of the decision point: the decision, and for `needs_approval` (or an allow by a grant)
/// the approval request behind it.
#[derive(Debug, Serialize, ToSchema)]
pub struct AuthorizeResponse {
    #[serde(flatten)]
    pub decision: Decision,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub approval: Option<crate::approvals::ApprovalRef>,
    /// For a catalogued tool: the class asked for, the catalogue's, and the one decided on.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub action_class: Option<ActionClass>,
}

/// Which action class a catalogued tool was decided as, and why.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ActionClass {
    /// The action the request named.
    pub requested: String,
    /// The tool's class in the catalogue (an admin's classification, else the MCP hint).
    pub catalogued: String,
    /// The action decided: `requested` when it is at least as strict as `catalogued`, else
    /// `catalogued`.
    pub used: String,
    /// Why `used` is not `requested`, when it is not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// How strict an action class is: read < write < destructive < admin.
fn strictness(a: Action) -> u8 {
    match a {
        Action::Read => 0,
        Action::Write => 1,
        Action::Destructive => 2,
        Action::Admin | Action::TaskStart | Action::TaskDelegate => 3,
    }
}

/// The catalogue's word on a tool resource: its record as this node knows it, re-read from the
/// store when this node has not seen it (another node may have catalogued it). `Err`: the refusal.
async fn catalogued_tool(
    state: &AppState,
    resource: &ResourceRef,
) -> Option<Result<std::sync::Arc<warden_store::ToolRecord>, String>> {
    let ResourceRef::Tool(t) = resource else {
        return None;
    };
    let (upstream, name) = t.split_once('/').unwrap_or((t.as_str(), ""));
    let unknown = || {
        Err(format!(
            "unknown-tool: upstream `{}` does not list a tool `{}` (Warden knows a tool once it was listed through the gateway)",
            crate::ledger::clip_str(upstream, 100).escape_debug(),
            crate::ledger::clip_str(name, 200).escape_debug()
        ))
    };
    let tool = match state.policies.tool(upstream, name) {
        Some(t) => t,
        None => {
            let Ok(up) = warden_core::UpstreamName::parse(upstream) else {
                return Some(unknown());
            };
            match state.store.get_tool(&up, name).await {
                Ok(Some(rec)) => {
                    state.policies.tool_changed(&rec).await;
                    std::sync::Arc::new(rec)
                }
                Ok(None) => return Some(unknown()),
                Err(e) => {
                    tracing::warn!(upstream, error = %e, "the tool catalogue cannot be read");
                    return Some(Err(format!(
                        "unknown-tool: the tool catalogue cannot be read now, so the class of `{}` is unknown",
                        crate::ledger::clip_str(t, 300).escape_debug()
                    )));
                }
            }
        }
    };
    if tool.state == ToolState::Quarantined {
        return Some(Err(tool.quarantine_message()));
    }
    Some(Ok(tool))
}

/// Decides one request through the one decision pipeline ([`crate::pipeline`]): arguments scanned,
/// context from Warden's record of the task, policy, the approval gate; returns the answer and the
/// entries that record it.
async fn decide_one(
    state: &AppState,
    caller: &TaskCaller,
    req: AuthorizeRequest,
    request_id: Option<&str>,
) -> (AuthorizeResponse, Vec<warden_ledger::NewEntry>) {
    let started = std::time::Instant::now();
    let upstream = match &req.resource {
        ResourceRef::Upstream(u) => Some(u.to_string()),
        ResourceRef::Tool(t)
        | ResourceRef::Dataset(t)
        | ResourceRef::McpResource(t)
        | ResourceRef::Prompt(t) => t.split('/').next().map(str::to_owned),
        _ => None,
    };
    let mut facts = pipeline::Facts {
        upstream,
        request_id: request_id.map(str::to_owned),
        action_label: Some(req.action.clone()),
        body: serde_json::Map::new(),
    };
    let (mut action, mut malformed) = match req.action.parse::<Action>() {
        Ok(a) if a.is_task_action() => (
            Action::Read,
            Some(format!(
                "bad-request: `{}` is decided at the token endpoint, not here",
                a.as_str()
            )),
        ),
        Ok(a) => (a, None),
        Err(e) => (Action::Read, Some(format!("bad-request: {e}"))),
    };
    // A catalogued tool is decided on the catalogue's class, never a weaker one.
    let mut action_class = None;
    if malformed.is_none() {
        match catalogued_tool(state, &req.resource).await {
            None => {}
            Some(Err(refusal)) => {
                // Outside the task, the answer is the same whether the tool is catalogued or
                // not (see `pipeline::out_of_scope`).
                let scope = state
                    .identity
                    .task_contexts
                    .get(&caller.task)
                    .ok()
                    .and_then(|t| pipeline::out_of_scope(&t, &req.resource));
                malformed = Some(scope.unwrap_or(refusal));
            }
            Some(Ok(tool)) => {
                let catalogued = crate::gateway::inbound::class_action(tool.effective_class());
                let reason = (strictness(action) < strictness(catalogued)).then(|| {
                    format!(
                        "`{}` is weaker than the catalogued class `{}` of tool `{}/{}`: decided as `{}`",
                        action.as_str(),
                        catalogued.as_str(),
                        tool.upstream,
                        tool.name,
                        catalogued.as_str()
                    )
                });
                let requested = action;
                if reason.is_some() {
                    action = catalogued;
                }
                // The entry records the action decided, with the class note beside it.
                facts.action_label = None;
                let class = ActionClass {
                    requested: requested.as_str().to_owned(),
                    catalogued: catalogued.as_str().to_owned(),
                    used: action.as_str().to_owned(),
                    reason,
                };
                facts.body.insert(
                    "action_class".into(),
                    serde_json::to_value(&class).unwrap_or_default(),
                );
                action_class = Some(class);
            }
        }
    }
    let question = pipeline::Question {
        action,
        resource: req.resource,
        args: req.args,
        rest: None,
        sensitive: req.sensitive,
        mcp: None,
    };
    let verdict = match malformed {
        Some(reason) => pipeline::refusal(state, caller, &question, facts, reason, started),
        None => pipeline::decide(state, caller, question, facts, started).await,
    };
    let (decision, approval, entries) = verdict.into_entries();
    (
        AuthorizeResponse {
            decision,
            approval,
            action_class,
        },
        entries,
    )
}

pub fn policy_version(state: &AppState) -> String {
    pipeline::policy_version(state)
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
