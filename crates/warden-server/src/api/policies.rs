//! `/v1/policies`: the policy lifecycle. Upload a set of `.cedar` files to validate it, to make it the
//! active set (validated, versioned by content hash, swapped atomically on every node, history kept),
//! or to run it in shadow beside the active one; read the current sets and their history; explain a
//! decision policy by policy.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;

use axum::Json;
use axum::extract::State;
use chrono::Utc;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use warden_core::{AgentName, Permission};
use warden_policy::{Action, Approval, PolicyContext, PolicyError, PolicyRequest, ResourceRef, TaskContext};
use warden_store::{PolicyActivation, PolicyRole};

use crate::AppState;
use crate::auth::Caller;
use crate::error::{ApiError, ErrorBody, LocatedError};
use crate::json::{ApiJson, OptionalJson};
use warden_ledger::EntryKind;

/// Most history entries returned.
const HISTORY: u32 = 50;

/// A policy set to upload: file name (`*.cedar`) → text.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PolicyUpload {
    pub files: BTreeMap<String, String>,
    /// Why, for the history.
    #[serde(default)]
    pub comment: String,
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Comment {
    #[serde(default)]
    pub comment: String,
}

/// A compiled set.
#[derive(Debug, Serialize, ToSchema)]
pub struct PolicySetInfo {
    /// SHA-256 of the files (names and contents), hex.
    pub version: String,
    pub policies: usize,
    pub files: Vec<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ShadowStatus {
    pub version: Option<String>,
    /// Decisions made with the shadow set since this node loaded it.
    pub evaluated: u64,
    /// Of those, how many differed from the active set's (outcome or quorum).
    pub differed: u64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct PolicyStatus {
    /// The active set's version, as this node has it loaded. `null`: none, every decision is deny.
    pub active: Option<String>,
    pub shadow: ShadowStatus,
    #[schema(value_type = Vec<Object>)]
    pub history: Vec<PolicyActivation>,
}

fn located(errors: Vec<PolicyError>) -> ApiError {
    let message = match errors.first() {
        Some(first) if errors.len() == 1 => format!("the policy set does not compile: {first}"),
        Some(first) => format!(
            "the policy set does not compile: {first} (and {} more)",
            errors.len() - 1
        ),
        None => "the policy set does not compile".to_owned(),
    };
    ApiError::Invalid {
        message,
        errors: errors
            .into_iter()
            .map(|e| LocatedError {
                file: e.file,
                line: e.line,
                column: e.column,
                policy_id: e.policy_id,
                message: e.message,
            })
            .collect(),
    }
}

fn check_comment(comment: &str) -> Result<(), ApiError> {
    if comment.len() > 1_000 || comment.chars().any(|c| c.is_control() && c != '\n') {
        return Err(ApiError::BadRequest {
            message: "comment must be at most 1000 bytes without control characters".into(),
            field: Some("comment".into()),
        });
    }
    Ok(())
}

#[utoipa::path(
    get, path = "/v1/policies", tag = "policy",
    responses((status = 200, body = PolicyStatus), (status = 403, body = ErrorBody)), security(("bearer" = []))
)]
pub async fn status(State(state): State<AppState>, caller: Caller) -> Result<Json<PolicyStatus>, ApiError> {
    caller.require(Permission::ReadPolicies)?;
    let (active, shadow) = state.policies.versions();
    let history = state.store.policy_history(HISTORY).await?;
    Ok(Json(PolicyStatus {
        active,
        shadow: ShadowStatus {
            version: shadow,
            evaluated: state.policies.shadow.evaluated.load(Ordering::Relaxed),
            differed: state.policies.shadow.differed.load(Ordering::Relaxed),
        },
        history,
    }))
}

#[utoipa::path(
    post, path = "/v1/policies/validate", tag = "policy", request_body = PolicyUpload,
    responses(
        (status = 200, description = "Compiles: parsed, annotated, valid against the schema in strict mode", body = PolicySetInfo),
        (status = 400, description = "Every problem, with file, line and column", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn validate(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(upload): ApiJson<PolicyUpload>,
) -> Result<Json<PolicySetInfo>, ApiError> {
    caller.require(Permission::ReadPolicies)?;
    let names = upload.files.keys().cloned().collect();
    let (version, compiled) = crate::policy::compile_files(
        upload.files,
        &caller.human.email.to_string(),
        Utc::now(),
        &state.policies.tool_types(),
    )
    .map_err(located)?;
    Ok(Json(PolicySetInfo {
        version: version.version,
        policies: compiled.len(),
        files: names,
    }))
}

async fn install(
    state: &AppState,
    caller: &Caller,
    upload: PolicyUpload,
    role: PolicyRole,
) -> Result<Json<PolicySetInfo>, ApiError> {
    let permit = caller.require(Permission::ManagePolicies)?;
    check_comment(&upload.comment)?;
    let names: Vec<String> = upload.files.keys().cloned().collect();
    let (version, compiled) = crate::policy::compile_files(
        upload.files,
        caller.human.email.as_str(),
        chrono::Utc::now(),
        &state.policies.tool_types(),
    )
    .map_err(located)?;
    // A version stored before is activated as stored: its stored text must still be this one.
    if let Some(stored) = state.store.policy_version(&version.version).await? {
        crate::policy::check_stored(&stored, "").map_err(|e| {
            ApiError::Conflict(format!(
                "{e}; it cannot be activated until the stored text is restored"
            ))
        })?;
    }
    let ctx = permit
        .record(
            state,
            EntryKind::PolicyChange,
            &format!("policy.{}", role.as_str()),
            &version.version,
            crate::policy::activation_body(&version, &upload.comment),
        )
        .await?;
    state
        .store
        .activate_policies(&version, role, &upload.comment, &ctx)
        .await?;
    // This node at once; the others when the store's event arrives.
    reload(state).await?;
    tracing::info!(version = %version.version, role = role.as_str(), policies = compiled.len(), by = %caller.human.email, "policy set installed");
    Ok(Json(PolicySetInfo {
        version: version.version,
        policies: compiled.len(),
        files: names,
    }))
}

#[utoipa::path(
    post, path = "/v1/policies/activate", tag = "policy", request_body = PolicyUpload,
    responses(
        (status = 200, description = "Validated, recorded and active on every node", body = PolicySetInfo),
        (status = 400, description = "Does not compile; nothing changed", body = ErrorBody),
        (status = 403, body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn activate(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(upload): ApiJson<PolicyUpload>,
) -> Result<Json<PolicySetInfo>, ApiError> {
    install(&state, &caller, upload, PolicyRole::Active).await
}

#[utoipa::path(
    put, path = "/v1/policies/shadow", tag = "policy", request_body = PolicyUpload,
    responses(
        (status = 200, description = "Evaluated beside the active set from now on; never enforced", body = PolicySetInfo),
        (status = 400, description = "Does not compile; nothing changed", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn shadow(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(upload): ApiJson<PolicyUpload>,
) -> Result<Json<PolicySetInfo>, ApiError> {
    install(&state, &caller, upload, PolicyRole::Shadow).await
}

#[utoipa::path(
    delete, path = "/v1/policies/shadow", tag = "policy", request_body(content = Option<Comment>),
    responses((status = 200, description = "Shadow evaluation stopped"), (status = 403, body = ErrorBody)),
    security(("bearer" = []))
)]
pub async fn clear_shadow(
    State(state): State<AppState>,
    caller: Caller,
    OptionalJson(body): OptionalJson<Comment>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let permit = caller.require(Permission::ManagePolicies)?;
    check_comment(&body.comment)?;
    state
        .store
        .clear_shadow_policies(
            &body.comment,
            &permit
                .record(
                    &state,
                    EntryKind::PolicyChange,
                    "policy.shadow_clear",
                    "shadow",
                    serde_json::json!({"comment": body.comment}),
                )
                .await?,
        )
        .await?;
    reload(&state).await?;
    Ok(Json(serde_json::json!({ "shadow": null })))
}

/// Loads the stored sets after a change on this node. A stored set whose text no longer matches its
/// hash is refused (409, naming it; the running sets are kept); anything else is internal.
async fn reload(state: &AppState) -> Result<(), ApiError> {
    state
        .policies
        .reload_policies(state.store.as_ref(), false)
        .await
        .map_err(|e| match e.downcast_ref::<crate::policy::TamperedPolicy>() {
            Some(t) => ApiError::Conflict(t.to_string()),
            None => ApiError::Internal(format!("{e:#}")),
        })
}

/// A hypothetical request to explain.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ExplainRequest {
    /// The agent acting.
    #[schema(value_type = String)]
    pub principal: AgentName,
    /// `read`, `write`, `destructive`, `admin`, `task.start` or `task.delegate`.
    pub action: String,
    #[schema(value_type = Object)]
    pub resource: ResourceRef,
    /// The task context; `task_id` takes it from a recorded task instead.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub task: Option<TaskContext>,
    #[serde(default)]
    pub task_id: Option<uuid::Uuid>,
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub approval: Option<Approval>,
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub args: Option<serde_json::Value>,
}

#[utoipa::path(
    post, path = "/v1/policies/explain", tag = "policy", request_body = ExplainRequest,
    responses(
        (status = 200, description = "The decision and, policy by policy, what was considered and what matched"),
        (status = 400, body = ErrorBody), (status = 403, body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn explain(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(req): ApiJson<ExplainRequest>,
) -> Result<Json<serde_json::Value>, ApiError> {
    caller.require(Permission::ReadPolicies)?;
    let action: Action =
        req.action
            .parse()
            .map_err(|e: warden_policy::UnknownAction| ApiError::BadRequest {
                message: e.to_string(),
                field: Some("action".into()),
            })?;
    let task = match (req.task, req.task_id) {
        (Some(_), Some(_)) => {
            return Err(ApiError::BadRequest {
                message: "give task or task_id, not both".into(),
                field: Some("task".into()),
            });
        }
        (Some(t), None) => Some(t),
        (None, Some(id)) => {
            let t = state
                .store
                .get_task(id)
                .await?
                .ok_or_else(|| ApiError::NotFound(format!("task `{id}` not found")))?;
            if t.agent != req.principal {
                return Err(ApiError::BadRequest {
                    message: format!(
                        "task `{id}` belongs to agent `{}`, not `{}`",
                        t.agent, req.principal
                    ),
                    field: Some("task_id".into()),
                });
            }
            Some(crate::pipeline::task_context(&t).map_err(ApiError::Internal)?)
        }
        (None, None) => None,
    };
    let request = PolicyRequest {
        principal: req.principal,
        action,
        resource: req.resource,
        context: PolicyContext {
            task,
            approval: req.approval.unwrap_or_default(),
            args: req.args,
            ..Default::default()
        },
    };
    let explanation = state
        .policies
        .explain(&request, Utc::now())
        .ok_or_else(|| ApiError::Conflict("no policy set is active; every decision is deny".into()))?;
    serde_json::to_value(&explanation)
        .map(Json)
        .map_err(|e| ApiError::Internal(e.to_string()))
}
