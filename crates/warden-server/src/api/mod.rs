//! The HTTP surface: routes, the OpenAPI document generated from the handlers, and `/healthz`.
//!
//! Layers, outermost first, each with its reason:
//! - request id: every log line of a request carries one id, and the client gets it back;
//! - trace: one span per request (method, path, status, latency); headers are not logged, so tokens
//!   never reach the log;
//! - timeout: a stuck store call cannot hold a connection forever;
//! - body limit: bounds the memory an unauthenticated client can make us buffer.

pub mod agents;
pub mod approvals;
pub mod audit;
pub mod authorize;
pub mod client_credentials;
pub mod gateway;
pub mod humans;
pub mod policies;
pub mod tasks;
pub mod tokens;
pub mod upstreams;

use axum::Json;
use axum::Router;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderName, StatusCode};
use axum::response::IntoResponse;
use axum::routing::{delete, get, post};
use serde::Serialize;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::TraceLayer;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi, ToSchema};

use crate::AppState;
use crate::error::{ApiError, ErrorBody};

pub use crate::config::HttpLimits;

/// `/v1/authorize` bodies may exceed the engine's argument limit (64 KiB) so that oversized arguments
/// get a decision (a deny, with the reason) rather than a 413.
const MAX_AUTHORIZE_BYTES: usize = 1024 * 1024;

#[derive(OpenApi)]
#[openapi(
    info(title = "Warden", description = "Runtime access governor for AI agents: admin API."),
    paths(
        health,
        agents::register, agents::list, agents::show, agents::update,
        agents::activate, agents::suspend, agents::retire, agents::join_token,
        upstreams::add, upstreams::list, upstreams::show, upstreams::remove,
        humans::whoami, humans::add, humans::list, humans::show, humans::remove,
        humans::create_token, humans::list_tokens, humans::revoke_token,
        tokens::enroll, tokens::token, tokens::jwks, tokens::metadata, tokens::authorization_endpoint,
        crate::resource::protected_resource_metadata,
        tasks::current, tasks::end_current, tasks::list, tasks::show, tasks::end, tasks::rotate_keys,
        authorize::authorize, authorize::authorize_batch,
        policies::status, policies::validate, policies::activate, policies::shadow, policies::clear_shadow,
        policies::explain,
        audit::checkpoint, audit::inclusion, audit::consistency, audit::entries,
        approvals::list, approvals::show, approvals::approve, approvals::deny, approvals::webhooks,
        gateway::list_tools, gateway::show_tool, gateway::classify_tool, gateway::approve_tool,
        gateway::list_secrets, gateway::create_secret, gateway::rotate_secret, gateway::delete_secret,
    ),
    components(schemas(ErrorBody, Health, crate::ledger::LedgerStatus)),
    modifiers(&BearerAuth),
    tags(
        (name = "agents", description = "Non-human identities"),
        (name = "upstreams", description = "Systems agents reach through Warden"),
        (name = "humans", description = "People and their API tokens"),
        (name = "identity", description = "Agent enrollment, RFC 8693 token exchange, signing keys"),
        (name = "tasks", description = "Tasks and their credentials"),
        (name = "policy", description = "Decisions, and the policy sets that make them"),
        (name = "health", description = "Liveness and store health"),
        (name = "audit", description = "The tamper-evident ledger: checkpoints, proofs, entries"),
        (name = "approvals", description = "Human approval requests and their grants"),
        (name = "gateway", description = "The MCP gateway's tool catalogue and upstream secrets"),
    )
)]
#[derive(Debug)]
pub struct ApiDoc;

#[derive(Debug)]
struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some("A human's API token"))
                    .build(),
            ),
        );
        components.add_security_scheme(
            "task_token",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "An agent's task token (with a DPoP proof when it is DPoP-bound)",
                    ))
                    .build(),
            ),
        );
    }
}

/// Builds the application router.
pub fn router(state: AppState, limits: HttpLimits) -> Router {
    let request_id = HeaderName::from_static("x-request-id");
    let v1 = Router::new()
        .route("/agents", post(agents::register).get(agents::list))
        .route("/agents/{name}", get(agents::show).patch(agents::update))
        .route("/agents/{name}/activate", post(agents::activate))
        .route("/agents/{name}/suspend", post(agents::suspend))
        .route("/agents/{name}/retire", post(agents::retire))
        .route("/agents/{name}/join-token", post(agents::join_token))
        .route("/enroll", post(tokens::enroll))
        .route("/token", post(tokens::token))
        .route("/task", get(tasks::current))
        .route("/task/end", post(tasks::end_current))
        .route("/tasks", get(tasks::list))
        .route("/tasks/{id}", get(tasks::show))
        .route("/tasks/{id}/end", post(tasks::end))
        .route("/keys/rotate", post(tasks::rotate_keys))
        .route(
            "/authorize",
            post(authorize::authorize).layer(DefaultBodyLimit::max(MAX_AUTHORIZE_BYTES)),
        )
        .route(
            "/authorize/batch",
            post(authorize::authorize_batch).layer(DefaultBodyLimit::max(MAX_AUTHORIZE_BYTES)),
        )
        .route("/policies", get(policies::status))
        .route(
            "/policies/validate",
            post(policies::validate).layer(DefaultBodyLimit::max(limits.max_policy_bytes)),
        )
        .route(
            "/policies/activate",
            post(policies::activate).layer(DefaultBodyLimit::max(limits.max_policy_bytes)),
        )
        .route(
            "/policies/shadow",
            axum::routing::put(policies::shadow)
                .delete(policies::clear_shadow)
                .layer(DefaultBodyLimit::max(limits.max_policy_bytes)),
        )
        .route(
            "/policies/explain",
            post(policies::explain).layer(DefaultBodyLimit::max(MAX_AUTHORIZE_BYTES)),
        )
        .route("/upstreams", post(upstreams::add).get(upstreams::list))
        .route(
            "/upstreams/{name}",
            get(upstreams::show).delete(upstreams::remove),
        )
        .route("/humans", post(humans::add).get(humans::list))
        .route("/humans/{email}", get(humans::show).delete(humans::remove))
        .route(
            "/humans/{email}/tokens",
            post(humans::create_token).get(humans::list_tokens),
        )
        .route("/tokens/{id}", delete(humans::revoke_token))
        .route("/whoami", get(humans::whoami))
        .route("/approvals", get(approvals::list))
        .route("/approvals/webhooks", get(approvals::webhooks))
        .route("/approvals/{id}", get(approvals::show))
        .route("/approvals/{id}/approve", post(approvals::approve))
        .route("/approvals/{id}/deny", post(approvals::deny))
        .route("/tools", get(gateway::list_tools))
        .route("/tools/{upstream}/{tool}", get(gateway::show_tool))
        .route("/tools/{upstream}/{tool}/classify", post(gateway::classify_tool))
        .route("/tools/{upstream}/{tool}/approve", post(gateway::approve_tool))
        .route(
            "/secrets",
            get(gateway::list_secrets).post(gateway::create_secret),
        )
        .route("/secrets/{name}", delete(gateway::delete_secret))
        .route("/secrets/{name}/rotate", post(gateway::rotate_secret))
        .route("/audit/checkpoint", get(audit::checkpoint))
        .route("/audit/proof/inclusion", get(audit::inclusion))
        .route("/audit/proof/consistency", get(audit::consistency))
        .route("/audit/entries", get(audit::entries))
        .route("/openapi.json", get(openapi));
    // The MCP gateway: its own body limit (messages, not REST bodies); the same audit layer.
    let mcp = Router::new()
        .route(
            "/mcp/{upstream}",
            post(crate::gateway::post)
                .get(crate::gateway::get)
                .delete(crate::gateway::delete),
        )
        .layer(DefaultBodyLimit::max(state.gateway.settings.limits.max_bytes));
    // The REST API answers within `http.request_timeout_secs`. The MCP gateway is not under that
    // limit: it has its own (`gateway.upstream_timeout_ms`, `idle_timeout_ms`, `answer_timeout_ms`),
    // which end in a JSON-RPC error and a recorded result rather than a bare 503.
    let rest = Router::new()
        .route("/healthz", get(health))
        .route("/.well-known/jwks.json", get(tokens::jwks))
        .route("/.well-known/oauth-authorization-server", get(tokens::metadata))
        .route("/oauth/authorize", get(tokens::authorization_endpoint))
        .route(
            "/.well-known/oauth-protected-resource/mcp/{upstream}",
            get(crate::resource::protected_resource_metadata),
        )
        .nest("/v1", v1)
        .fallback(not_found)
        .layer(TimeoutLayer::with_status_code(
            StatusCode::SERVICE_UNAVAILABLE,
            limits.request_timeout,
        ));
    Router::new()
        .merge(mcp)
        .merge(rest)
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            crate::audit::audit_refusals,
        ))
        .with_state(state)
        .layer(DefaultBodyLimit::max(limits.max_body_bytes))
        .layer(TraceLayer::new_for_http())
        .layer(PropagateRequestIdLayer::new(request_id.clone()))
        .layer(SetRequestIdLayer::new(request_id, MakeRequestUuid))
}

async fn not_found() -> ApiError {
    ApiError::NotFound("no such route".into())
}

async fn openapi() -> impl IntoResponse {
    Json(ApiDoc::openapi())
}

/// `/healthz` body.
#[derive(Debug, Serialize, ToSchema)]
pub struct Health {
    /// `ok` or `unavailable`.
    pub status: &'static str,
    /// `sqlite` or `postgres`.
    pub store: &'static str,
    pub version: &'static str,
    /// Why the store is unhealthy (no internals).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The audit ledger's writer. While it cannot commit, actions are denied and this endpoint
    /// answers 503.
    pub ledger: crate::ledger::LedgerStatus,
    /// Why a stored policy set was refused (its text does not match its content hash), while it is:
    /// the node keeps enforcing the sets it runs, and this endpoint answers 503.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub policy_error: Option<String>,
    /// Revocations the store could not take yet: enforced on this node, journaled, retried every
    /// second (0 normally).
    pub held_revocations: usize,
}

#[utoipa::path(
    get, path = "/healthz", tag = "health",
    responses((status = 200, body = Health), (status = 503, description = "The store is unavailable", body = Health))
)]
pub async fn health(State(state): State<AppState>) -> (StatusCode, Json<Health>) {
    let store = state.store.backend().as_str();
    let version = env!("CARGO_PKG_VERSION");
    // As long as a request waits for a connection (`[database] acquire_timeout_ms`): a database
    // that hangs is reported as fast as requests are refused.
    let limit = state.store_timeout;
    let result = tokio::time::timeout(limit, state.store.health()).await;
    let error = match result {
        Ok(Ok(())) => None,
        Ok(Err(e @ warden_store::StoreError::StorageFault(_))) => {
            tracing::warn!(error = %e, "health check: the store cannot be written");
            // The reason names the fault (disk full, I/O error) and when it began; never a path.
            Some(e.to_string())
        }
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "health check: store unhealthy");
            Some("the store did not answer a query".to_owned())
        }
        Err(_) => Some(format!(
            "the store did not answer within {} ms",
            limit.as_millis()
        )),
    };
    let ledger = state.ledger.status();
    let policy_error = state.policies.refused();
    let error = error
        .or_else(|| {
            (ledger.status != "ok").then(|| "the audit ledger cannot commit: actions are denied".to_owned())
        })
        .or_else(|| {
            policy_error
                .is_some()
                .then(|| "a stored policy set was refused: the node runs the sets it had".to_owned())
        });
    let (code, status) = if error.is_none() {
        (StatusCode::OK, "ok")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "unavailable")
    };
    (
        code,
        Json(Health {
            status,
            store,
            version,
            error,
            ledger,
            policy_error,
            held_revocations: state.revocations.held(),
        }),
    )
}
