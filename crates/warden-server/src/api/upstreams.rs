//! `/v1/upstreams`: the systems agents reach through Warden.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::Serialize;
use utoipa::ToSchema;
use warden_core::{NewUpstream, Permission, Upstream, UpstreamName};

use crate::AppState;
use crate::auth::Caller;
use crate::error::{ApiError, ErrorBody};
use crate::json::{ApiJson, ApiPath};
use warden_ledger::EntryKind;

#[derive(Debug, Serialize, ToSchema)]
pub struct UpstreamList {
    pub upstreams: Vec<Upstream>,
}

#[utoipa::path(
    post, path = "/v1/upstreams", tag = "upstreams", request_body = NewUpstream,
    responses(
        (status = 201, body = Upstream), (status = 400, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 409, body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn add(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(body): ApiJson<NewUpstream>,
) -> Result<(StatusCode, Json<Upstream>), ApiError> {
    let permit = caller.require(Permission::WriteRegistry)?;
    let ctx = permit
        .record(
            &state,
            EntryKind::RegistryChange,
            "upstream.add",
            body.name.as_str(),
            serde_json::to_value(&body).unwrap_or_default(),
        )
        .await?;
    let up = state.store.create_upstream(&body, &ctx).await?;
    state.policies.upstream_changed(&up.name, Some(&up));
    tracing::info!(upstream = %up.name, kind = %up.kind, by = %caller.human.email, "upstream added");
    Ok((StatusCode::CREATED, Json(up)))
}

#[utoipa::path(
    get, path = "/v1/upstreams", tag = "upstreams",
    responses((status = 200, body = UpstreamList)), security(("bearer" = []))
)]
pub async fn list(State(state): State<AppState>, caller: Caller) -> Result<Json<UpstreamList>, ApiError> {
    caller.require(Permission::ReadRegistry)?;
    Ok(Json(UpstreamList {
        upstreams: state.store.list_upstreams().await?,
    }))
}

#[utoipa::path(
    get, path = "/v1/upstreams/{name}", tag = "upstreams",
    params(("name" = String, Path, description = "Upstream name")),
    responses((status = 200, body = Upstream), (status = 404, body = ErrorBody)), security(("bearer" = []))
)]
pub async fn show(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(name): ApiPath<String>,
) -> Result<Json<Upstream>, ApiError> {
    caller.require(Permission::ReadRegistry)?;
    let name = UpstreamName::parse(&name)?;
    let up = state
        .store
        .get_upstream(&name)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("upstream `{name}` not found")))?;
    Ok(Json(up))
}

#[utoipa::path(
    delete, path = "/v1/upstreams/{name}", tag = "upstreams",
    params(("name" = String, Path, description = "Upstream name")),
    responses(
        (status = 200, description = "Removed; the removed record is returned", body = Upstream),
        (status = 404, body = ErrorBody),
        (status = 409, description = "Still allowed for a non-retired agent", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn remove(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(name): ApiPath<String>,
) -> Result<Json<Upstream>, ApiError> {
    let permit = caller.require(Permission::WriteRegistry)?;
    let name = UpstreamName::parse(&name)?;
    let ctx = permit
        .record(
            &state,
            EntryKind::RegistryChange,
            "upstream.remove",
            name.as_str(),
            serde_json::json!({}),
        )
        .await?;
    let up = state.store.remove_upstream(&name, &ctx).await?;
    state.policies.upstream_changed(&up.name, None);
    state.gateway.forget_upstream(Some(up.name.as_str()));
    tracing::info!(upstream = %up.name, by = %caller.human.email, "upstream removed");
    Ok(Json(up))
}
