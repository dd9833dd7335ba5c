//! `/v1/tools` and `/v1/secrets`: what admins manage for the MCP gateway.
//!
//! Tools are catalogued by the gateway itself; admins list them, override the class the MCP hints
//! suggest (`classify`, hints are untrusted), and approve a quarantined tool's new definition by its
//! digest (`approve`: the digest they looked at, nothing else) — or, with the digest approved before,
//! restore the approved definition (an upstream that changed a tool and changed it back). Secrets
//! are upstream credentials: their values arrive once, are sealed with the gateway key before the
//! store sees them, and are never returned — listing shows metadata only.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::Deserialize;
use utoipa::ToSchema;
use warden_core::{Injection, Permission, Secret, SecretName, ToolClass, UpstreamName};
use warden_ledger::EntryKind;
use warden_store::{NewSecret, SecretInfo, ToolApproval, ToolRecord};

use crate::AppState;
use crate::auth::Caller;
use crate::error::{ApiError, ErrorBody};
use crate::json::{ApiJson, ApiPath, ApiQuery};

/// Longest secret value accepted.
pub const MAX_SECRET_BYTES: usize = 8 * 1024;

#[derive(Debug, serde::Serialize, ToSchema)]
pub struct ToolList {
    pub tools: Vec<ToolRecord>,
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct ToolQuery {
    pub upstream: Option<String>,
}

#[utoipa::path(
    get, path = "/v1/tools", tag = "gateway", params(ToolQuery),
    responses((status = 200, body = ToolList), (status = 400, body = ErrorBody)), security(("bearer" = []))
)]
pub async fn list_tools(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(q): ApiQuery<ToolQuery>,
) -> Result<Json<ToolList>, ApiError> {
    caller.require(Permission::ReadRegistry)?;
    let up = q.upstream.as_deref().map(UpstreamName::parse).transpose()?;
    Ok(Json(ToolList {
        tools: state.store.list_tools(up.as_ref()).await?,
    }))
}

fn tool_path(upstream: &str, name: &str) -> Result<UpstreamName, ApiError> {
    let up = UpstreamName::parse(upstream)?;
    warden_core::gateway::check_tool_name("tool", name)?;
    Ok(up)
}

#[utoipa::path(
    get, path = "/v1/tools/{upstream}/{tool}", tag = "gateway",
    params(("upstream" = String, Path), ("tool" = String, Path)),
    responses((status = 200, body = ToolRecord), (status = 404, body = ErrorBody)), security(("bearer" = []))
)]
pub async fn show_tool(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath((upstream, name)): ApiPath<(String, String)>,
) -> Result<Json<ToolRecord>, ApiError> {
    caller.require(Permission::ReadRegistry)?;
    let up = tool_path(&upstream, &name)?;
    state
        .store
        .get_tool(&up, &name)
        .await?
        .map(Json)
        .ok_or_else(|| ApiError::NotFound(format!("tool `{up}/{name}` is not catalogued")))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ClassifyBody {
    /// `read`, `write`, `destructive` or `admin`; `null` goes back to the MCP hints.
    pub class: Option<ToolClass>,
}

#[utoipa::path(
    post, path = "/v1/tools/{upstream}/{tool}/classify", tag = "gateway", request_body = ClassifyBody,
    params(("upstream" = String, Path), ("tool" = String, Path)),
    responses((status = 200, body = ToolRecord), (status = 404, body = ErrorBody)), security(("bearer" = []))
)]
pub async fn classify_tool(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath((upstream, name)): ApiPath<(String, String)>,
    ApiJson(body): ApiJson<ClassifyBody>,
) -> Result<Json<ToolRecord>, ApiError> {
    let permit = caller.require(Permission::WriteRegistry)?;
    let up = tool_path(&upstream, &name)?;
    let ctx = permit
        .record(
            &state,
            EntryKind::RegistryChange,
            "tool.classify",
            &format!("{up}/{name}"),
            serde_json::json!({ "class": body.class }),
        )
        .await?;
    let t = state.store.classify_tool(&up, &name, body.class, &ctx).await?;
    state.policies.tool_changed(&t).await;
    tracing::info!(tool = %t.key(), class = %t.effective_class(), by = %caller.human.email, "tool classified");
    Ok(Json(t))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ApproveToolBody {
    /// The pending definition's digest, as `warden tool show` printed it; or the approved digest, to
    /// restore the approved definition and drop the pending one.
    pub digest: String,
}

#[utoipa::path(
    post, path = "/v1/tools/{upstream}/{tool}/approve", tag = "gateway", request_body = ApproveToolBody,
    params(("upstream" = String, Path), ("tool" = String, Path)),
    responses(
        (status = 200, description = "The tool, active; `restored`: the approved definition was restored", body = ToolApproval),
        (status = 404, body = ErrorBody),
        (status = 409, description = "Neither the pending nor the approved digest, or nothing pending", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn approve_tool(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath((upstream, name)): ApiPath<(String, String)>,
    ApiJson(body): ApiJson<ApproveToolBody>,
) -> Result<Json<ToolApproval>, ApiError> {
    let permit = caller.require(Permission::WriteRegistry)?;
    let up = tool_path(&upstream, &name)?;
    if body.digest.len() != 64 || !body.digest.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(ApiError::BadRequest {
            message: "digest must be 64 hexadecimal characters (SHA-256)".into(),
            field: Some("digest".into()),
        });
    }
    let key = format!("{up}/{name}");
    // The entry says what the approval will do, as the tool stands now: approve the pending
    // definition, or restore the approved one (`restored`), dropping the pending digest it names.
    let before = state
        .store
        .get_tool(&up, &name)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("tool `{key}` is not catalogued")))?;
    let restoring = restores(&before, &body.digest);
    let ctx = permit
        .record(
            &state,
            EntryKind::RegistryChange,
            "tool.approve",
            &key,
            serde_json::json!({
                "digest": body.digest,
                "restored": restoring,
                "approved_digest": before.digest,
                "pending_digest": before.pending_digest,
            }),
        )
        .await?;
    let approval = state.store.approve_tool(&up, &name, &body.digest, &ctx).await?;
    if approval.restored != restoring {
        // The tool changed between the read above and the approval (another admin approved, the
        // upstream changed it again): the entry's `restored` is wrong, so a second entry corrects it.
        let entry = crate::ledger::entry(EntryKind::RegistryChange, caller.human.email.as_str())
            .subject(key.as_str())
            .body(serde_json::json!({
                "op": "tool.approve",
                "outcome": "corrected",
                "digest": body.digest,
                "restored": approval.restored,
                "why": "the tool changed while the approval was being recorded",
            }));
        if let Err(e) = state.ledger.record_all(vec![entry]).await {
            tracing::error!(error = %e, tool = %key, restored = approval.restored, "the outcome of a tool approval is not recorded in the audit ledger");
        }
    }
    state.policies.tool_changed(&approval.tool).await;
    if approval.restored {
        tracing::info!(tool = %key, digest = %body.digest, dropped = ?before.pending_digest, by = %caller.human.email, "tool restored to its approved definition");
    } else {
        tracing::info!(tool = %key, digest = %body.digest, by = %caller.human.email, "tool definition approved");
    }
    Ok(Json(approval))
}

/// Whether approving `digest` would restore `t`'s approved definition (rather than approve its
/// pending one): something is pending, and `digest` is the approved digest, not the pending one.
fn restores(t: &ToolRecord, digest: &str) -> bool {
    t.pending_digest.as_deref().is_some_and(|p| p != digest) && t.digest.as_deref() == Some(digest)
}

#[derive(Debug, serde::Serialize, ToSchema)]
pub struct SecretList {
    pub secrets: Vec<SecretInfo>,
}

#[utoipa::path(
    get, path = "/v1/secrets", tag = "gateway",
    responses((status = 200, description = "Metadata only; values are never returned", body = SecretList)),
    security(("bearer" = []))
)]
pub async fn list_secrets(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<SecretList>, ApiError> {
    caller.require(Permission::WriteRegistry)?;
    Ok(Json(SecretList {
        secrets: state.store.list_secrets().await?,
    }))
}

/// A new upstream secret. `value` is sealed before it is stored and never shown again.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SecretBody {
    #[schema(value_type = String)]
    pub name: SecretName,
    #[schema(value_type = String)]
    pub upstream: UpstreamName,
    /// `{"kind": "header", "name": "Authorization", "prefix": "Bearer "}` or
    /// `{"kind": "env", "var": "API_KEY"}`. An `env` variable must be on the `allow_env` list of the
    /// upstream's `[[gateway.stdio]]` entry (variables that load code, such as `NODE_OPTIONS` or
    /// `PYTHONPATH`, also on its `allow_code_loading_env`); otherwise 400 on `injection.var`.
    pub injection: Injection,
    #[schema(value_type = String)]
    pub value: Secret<String>,
}

impl std::fmt::Debug for SecretBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecretBody")
            .field("name", &self.name)
            .field("upstream", &self.upstream)
            .field("injection", &self.injection)
            .finish_non_exhaustive()
    }
}

fn check_value(v: &Secret<String>) -> Result<(), ApiError> {
    let v = v.expose();
    // A shorter value could not be scrubbed from answers without mangling them (every answer
    // holding that byte sequence by chance): see `warden_gateway::credential`.
    const MIN: usize = warden_gateway::credential::MIN_CREDENTIAL_LEN;
    if v.len() < MIN || v.len() > MAX_SECRET_BYTES {
        return Err(ApiError::BadRequest {
            message: format!(
                "value must be {MIN} to {MAX_SECRET_BYTES} bytes (it is {}): a shorter secret cannot be told apart from ordinary text in answers",
                v.len()
            ),
            field: Some("value".into()),
        });
    }
    // Injected into a header: no control characters (a newline would split the header).
    if v.chars().any(char::is_control) {
        return Err(ApiError::BadRequest {
            message: "value must not contain control characters (newlines included)".into(),
            field: Some("value".into()),
        });
    }
    Ok(())
}

/// A secret of kind `env` only as a variable the upstream's `[[gateway.stdio]]` entry allows
/// (`allow_env`, and for a variable that loads code also `allow_code_loading_env`): the names a
/// spawned server receives are the operator's, set in the configuration file, never the API's.
fn check_injection(state: &AppState, body: &SecretBody) -> Result<(), ApiError> {
    let Injection::Env { var } = &body.injection else {
        return Ok(());
    };
    let refusal = match state.gateway.stdio.config(body.upstream.as_str()) {
        Some(cfg) => cfg.env_refusal(var.as_str()),
        None => Some(format!(
            "upstream `{}` has no [[gateway.stdio]] entry in this node's configuration: a secret of kind `env` is injected only into a stdio server, as a variable its entry lists in allow_env",
            body.upstream
        )),
    };
    match refusal {
        None => Ok(()),
        Some(message) => Err(ApiError::BadRequest {
            message,
            field: Some("injection.var".into()),
        }),
    }
}

#[utoipa::path(
    post, path = "/v1/secrets", tag = "gateway", request_body = SecretBody,
    responses(
        (status = 201, body = SecretInfo), (status = 400, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 409, body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn create_secret(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(body): ApiJson<SecretBody>,
) -> Result<(StatusCode, Json<SecretInfo>), ApiError> {
    let permit = caller.require(Permission::WriteRegistry)?;
    check_value(&body.value)?;
    check_injection(&state, &body)?;
    let ctx = permit
        .record(
            &state,
            EntryKind::RegistryChange,
            "secret.create",
            body.name.as_str(),
            serde_json::json!({ "upstream": body.upstream.as_str(), "injection": body.injection }),
        )
        .await?;
    let sealed = state
        .gateway
        .keys
        .seal_secret(
            body.name.as_str(),
            body.upstream.as_str(),
            body.value.expose().as_bytes(),
        )
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    let info = state
        .store
        .create_secret(
            &NewSecret {
                name: body.name,
                upstream: body.upstream,
                injection: body.injection,
                key_id: sealed.key_id,
                nonce: sealed.nonce,
                ciphertext: sealed.ciphertext,
            },
            &ctx,
        )
        .await?;
    state.gateway.credentials.invalidate(info.upstream.as_str());
    tracing::info!(secret = %info.name, upstream = %info.upstream, by = %caller.human.email, "upstream secret created");
    Ok((StatusCode::CREATED, Json(info)))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RotateBody {
    #[schema(value_type = String)]
    pub value: Secret<String>,
}

impl std::fmt::Debug for RotateBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RotateBody { .. }")
    }
}

async fn secret_info(state: &AppState, name: &SecretName) -> Result<SecretInfo, ApiError> {
    state
        .store
        .list_secrets()
        .await?
        .into_iter()
        .find(|s| &s.name == name)
        .ok_or_else(|| ApiError::NotFound(format!("secret `{name}` not found")))
}

#[utoipa::path(
    post, path = "/v1/secrets/{name}/rotate", tag = "gateway", request_body = RotateBody,
    params(("name" = String, Path)),
    responses((status = 200, body = SecretInfo), (status = 404, body = ErrorBody)), security(("bearer" = []))
)]
pub async fn rotate_secret(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(name): ApiPath<String>,
    ApiJson(body): ApiJson<RotateBody>,
) -> Result<Json<SecretInfo>, ApiError> {
    let permit = caller.require(Permission::WriteRegistry)?;
    let name = SecretName::parse(&name)?;
    check_value(&body.value)?;
    let current = secret_info(&state, &name).await?;
    let ctx = permit
        .record(
            &state,
            EntryKind::RegistryChange,
            "secret.rotate",
            name.as_str(),
            serde_json::json!({ "upstream": current.upstream.as_str() }),
        )
        .await?;
    let sealed = state
        .gateway
        .keys
        .seal_secret(
            name.as_str(),
            current.upstream.as_str(),
            body.value.expose().as_bytes(),
        )
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    let info = state
        .store
        .rotate_secret(&name, &sealed.key_id, &sealed.nonce, &sealed.ciphertext, &ctx)
        .await?;
    state.gateway.credentials.invalidate(info.upstream.as_str());
    tracing::info!(secret = %info.name, version = info.version, by = %caller.human.email, "upstream secret rotated");
    Ok(Json(info))
}

#[utoipa::path(
    delete, path = "/v1/secrets/{name}", tag = "gateway",
    params(("name" = String, Path)),
    responses((status = 204), (status = 404, body = ErrorBody)), security(("bearer" = []))
)]
pub async fn delete_secret(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(name): ApiPath<String>,
) -> Result<StatusCode, ApiError> {
    let permit = caller.require(Permission::WriteRegistry)?;
    let name = SecretName::parse(&name)?;
    let current = secret_info(&state, &name).await?;
    let ctx = permit
        .record(
            &state,
            EntryKind::RegistryChange,
            "secret.delete",
            name.as_str(),
            serde_json::json!({ "upstream": current.upstream.as_str() }),
        )
        .await?;
    state.store.delete_secret(&name, &ctx).await?;
    state.gateway.credentials.invalidate(current.upstream.as_str());
    tracing::info!(secret = %name, by = %caller.human.email, "upstream secret deleted");
    Ok(StatusCode::NO_CONTENT)
}
