//! The credential endpoints agents use: enrollment (`POST /v1/enroll`), RFC 8693 token exchange
//! (`POST /v1/token`: start a task, renew its token, delegate part of it), the JWKS and the RFC 8414
//! discovery document.
//!
//! Start: `subject_token` is the agent's own assertion (RFC 7523 style, signed with its enrolled key) or
//! a token from a trusted issuer; `authorization_details` carries the task's intent. Renewal:
//! `subject_token` is the task token, `actor_token` the same agent's assertion. Delegation:
//! `subject_token` is the parent's task token, `actor_token` the child agent's assertion; the child's
//! scope is the parent's narrowed to what the child may do, and the chain goes into `act`.
//!
//! DPoP (RFC 9449): a proof sent when starting a task binds the task's tokens to its key (`cnf.jkt`).
//! A bound task token must come with a proof by that key, at renewal as everywhere. Delegation keeps
//! proof of possession: the child of a bound parent is bound to the child's key, proven by a second
//! proof in the `actor_dpop` form parameter (the `DPoP` header proves the parent's key, with `ath` of
//! the parent's token); a delegation from a bound parent without it is refused, so a bound token never
//! yields a bearer token. From an unbound parent the child's proof may come in either place, and
//! binding stays optional.

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;
use warden_core::token::{self, TokenHash};
use warden_core::{Agent, AgentState, Allowed, ChangeContext, Secret, Task};
use warden_identity::{
    Actor, Confirmation, PublicKey, TOKEN_TYPE_ACCESS, TOKEN_TYPE_JWT, TOKEN_TYPE_TASK, TaskClaims,
    TaskIntent, TokenError, TokenExchangeRequest, TokenExchangeResponse,
};
use warden_ledger::EntryKind;
use warden_store::{AgentKey, NewTask, StoreError};

use crate::oauth::{OAuthError, OAuthErrorBody};
use crate::tasks::{remember_proof, verify_task_credential};
use crate::{AppState, decide};

/// Largest token request body (form-encoded); tokens are at most 8 KiB each, intents 16 KiB.
const MAX_TOKEN_REQUEST_BYTES: usize = 48 * 1024;

// ---------------------------------------------------------------------------------------------------
// Enrollment

/// An agent's enrollment: the one-time join token and its own public key.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EnrollRequest {
    /// The join token `agent register` returned (`wdn_jt_…`).
    pub join_token: String,
    /// The agent's Ed25519 public key as a JWK (`{"kty":"OKP","crv":"Ed25519","x":…}`).
    #[schema(value_type = Object)]
    pub public_key: serde_json::Value,
}

impl std::fmt::Debug for EnrollRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EnrollRequest")
            .field("join_token", &"REDACTED")
            .field("public_key", &self.public_key)
            .finish()
    }
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Enrolled {
    pub agent: String,
    pub spiffe_id: String,
    /// The key id Warden recorded (RFC 7638 thumbprint).
    pub kid: String,
    /// The audience assertions must name (`aud`), and the `iss` of task tokens.
    pub issuer: String,
    pub token_endpoint: String,
}

#[utoipa::path(
    post, path = "/v1/enroll", tag = "identity", request_body = EnrollRequest,
    responses(
        (status = 200, description = "Enrolled; from now on the agent authenticates with assertions signed by this key", body = Enrolled),
        (status = 400, body = OAuthErrorBody),
        (status = 401, description = "Unknown, used or expired join token", body = OAuthErrorBody),
    )
)]
pub async fn enroll(State(state): State<AppState>, body: Bytes) -> Result<Json<Enrolled>, OAuthError> {
    let req: EnrollRequest = serde_json::from_slice(&body)
        .map_err(|e| OAuthError::invalid_request(format!("the enrollment request is not valid: {e}")))?;
    let join = Secret::new(req.join_token);
    token::check_join_shape(join.expose())
        .map_err(|m| OAuthError::invalid_grant(format!("join token: {m}")))?;
    let key = PublicKey::from_jwk(&req.public_key)
        .map_err(|e| OAuthError::invalid_request(format!("public_key: {e}")))?;
    let now = Utc::now();
    let record = AgentKey {
        kid: key.kid().to_owned(),
        public_x: key.x_b64(),
        created_at: now,
    };
    let agent = state
        .store
        .enroll_agent(&TokenHash::of(&join), &record, now)
        .await
        .map_err(|e| match e {
            StoreError::NotFound { .. } => {
                OAuthError::invalid_grant("the join token is not known (or was replaced by a newer one)")
            }
            StoreError::Conflict(m) => OAuthError::invalid_grant(m),
            other => other.into(),
        })?;
    tracing::info!(agent = %agent.name, kid = key.kid(), "agent enrolled");
    // The join token is spent and the key stored: the enrollment must be in the ledger before the
    // agent hears it worked (if it cannot be, the agent is told to retry later; its key is kept).
    state
        .ledger
        .record(
            crate::ledger::entry(EntryKind::Enrollment, &agent.spiffe_id)
                .subject(agent.name.to_string())
                .body(serde_json::json!({"agent": agent.name.to_string(), "kid": key.kid()})),
        )
        .await?;
    let s = &state.identity.settings;
    Ok(Json(Enrolled {
        agent: agent.name.to_string(),
        spiffe_id: agent.spiffe_id,
        kid: key.kid().to_owned(),
        issuer: s.issuer.clone(),
        token_endpoint: s.token_endpoint.clone(),
    }))
}

// ---------------------------------------------------------------------------------------------------
// Discovery and keys

#[utoipa::path(get, path = "/.well-known/jwks.json", tag = "identity",
    responses((status = 200, description = "Public keys task tokens are signed with (JWK Set)")))]
pub async fn jwks(State(state): State<AppState>) -> Response {
    let mut resp = Json(state.identity.keys.jwks(Utc::now())).into_response();
    resp.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=60"),
    );
    resp
}

#[utoipa::path(get, path = "/.well-known/oauth-authorization-server", tag = "identity",
    responses((status = 200, description = "RFC 8414 metadata")))]
pub async fn metadata(State(state): State<AppState>) -> Json<serde_json::Value> {
    let s = &state.identity.settings;
    Json(serde_json::json!({
        "issuer": s.issuer,
        "token_endpoint": s.token_endpoint,
        "jwks_uri": format!("{}/.well-known/jwks.json", s.issuer),
        "grant_types_supported": [
            warden_identity::GRANT_TYPE_TOKEN_EXCHANGE,
            warden_identity::GRANT_TYPE_CLIENT_CREDENTIALS,
        ],
        // `none` for token exchange (the agent's assertion is the subject token); `private_key_jwt`
        // (RFC 7523 §2.2, signed by the agent's enrolled Ed25519 key) for client credentials.
        "token_endpoint_auth_methods_supported": ["private_key_jwt", "none"],
        "token_endpoint_auth_signing_alg_values_supported": ["EdDSA"],
        // RFC 8414 requires an authorization endpoint when any grant uses one; none of Warden's does,
        // but OAuth client libraries require the member. It answers every request with
        // `unsupported_response_type` and no redirect: there is no interactive authorization.
        "authorization_endpoint": format!("{}/oauth/authorize", s.issuer),
        "response_types_supported": [],
        // RFC 9207: any authorization response from Warden would carry `iss`; a client that gets
        // one without it (a mix-up attack) refuses it.
        "authorization_response_iss_parameter_supported": true,
        "dpop_signing_alg_values_supported": ["EdDSA", "ES256"],
        "authorization_details_types_supported": ["warden_task"],
        "warden_trust_domain": state.trust_domain.as_str(),
        "warden_enroll_endpoint": format!("{}/v1/enroll", s.issuer),
        "warden_task_token_type": TOKEN_TYPE_TASK,
    }))
}

#[utoipa::path(get, path = "/oauth/authorize", tag = "identity",
    responses((status = 400, description = "Always `unsupported_response_type`: agents get tokens at the token endpoint", body = OAuthErrorBody)))]
pub async fn authorization_endpoint(State(state): State<AppState>) -> OAuthError {
    OAuthError::new(
        StatusCode::BAD_REQUEST,
        "unsupported_response_type",
        format!(
            "Warden has no interactive authorization: agents get task tokens at {} (client credentials \
             with private_key_jwt, or token exchange)",
            state.identity.settings.token_endpoint
        ),
    )
}

// ---------------------------------------------------------------------------------------------------
// Token exchange

#[utoipa::path(
    post, path = "/v1/token", tag = "identity",
    request_body(content_type = "application/x-www-form-urlencoded", description = "RFC 8693 token exchange"),
    responses(
        (status = 200, description = "A task token"),
        (status = 400, body = OAuthErrorBody), (status = 401, body = OAuthErrorBody),
        (status = 403, description = "Not allowed: agent not active, outside its scope, delegation limits", body = OAuthErrorBody),
    )
)]
pub async fn token(
    State(state): State<AppState>,
    peer: crate::tls::PeerIdentity,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, OAuthError> {
    let form_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|m| m.trim().eq_ignore_ascii_case("application/x-www-form-urlencoded"));
    if !form_type {
        return Err(OAuthError::invalid_request(
            "the token request must be `application/x-www-form-urlencoded`",
        ));
    }
    if body.len() > MAX_TOKEN_REQUEST_BYTES {
        return Err(OAuthError::invalid_request(format!(
            "the token request is larger than {MAX_TOKEN_REQUEST_BYTES} bytes"
        )));
    }
    let pairs: Vec<(String, String)> = url::form_urlencoded::parse(&body).into_owned().collect();
    let grant_type = warden_identity::grant_type_of(&pairs).map_err(|e| OAuthError::from_grant(&e))?;
    if grant_type == warden_identity::GRANT_TYPE_CLIENT_CREDENTIALS {
        let req = warden_identity::ClientCredentialsRequest::from_form(&pairs)
            .map_err(|e| OAuthError::from_grant(&e))?;
        let proof = dpop_header(&headers)?;
        let issued =
            super::client_credentials::grant(&state, &req, proof.as_deref(), &peer, Utc::now()).await?;
        let mut resp = Json(serde_json::json!({
            "access_token": issued.token.expose(),
            "token_type": if issued.bound { "DPoP" } else { "Bearer" },
            "expires_in": issued.expires_in,
            "task_id": issued.task_id,
            "authorization_details": issued.authorization_details,
        }))
        .into_response();
        resp.headers_mut()
            .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        resp.headers_mut()
            .insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
        return Ok(resp);
    }
    let req = TokenExchangeRequest::from_form(&pairs).map_err(|e| OAuthError::from_grant(&e))?;
    let proof = dpop_header(&headers)?;
    let now = Utc::now();
    let issued = match req.subject_token_type.as_str() {
        TOKEN_TYPE_JWT => start_task(&state, &req, proof.as_deref(), &peer, now).await?,
        TOKEN_TYPE_TASK => renew_or_delegate(&state, &req, proof.as_deref(), &peer, now).await?,
        other => {
            return Err(OAuthError::invalid_request(format!(
                "subject_token_type `{}` is not supported",
                other.escape_debug()
            )));
        }
    };
    let mut resp = Json(TokenExchangeResponse {
        access_token: issued.token.into_inner(),
        issued_token_type: if req.requested_token_type.as_deref() == Some(TOKEN_TYPE_TASK) {
            TOKEN_TYPE_TASK
        } else {
            TOKEN_TYPE_ACCESS
        },
        token_type: if issued.bound { "DPoP" } else { "Bearer" },
        expires_in: issued.expires_in,
        task_id: issued.task_id,
        authorization_details: issued.authorization_details,
    })
    .into_response();
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp.headers_mut()
        .insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    Ok(resp)
}

pub(super) struct Issued {
    pub(super) token: Secret<String>,
    pub(super) bound: bool,
    pub(super) expires_in: i64,
    pub(super) task_id: Uuid,
    pub(super) authorization_details: Vec<serde_json::Value>,
}

fn dpop_header(headers: &HeaderMap) -> Result<Option<String>, OAuthError> {
    let mut all = headers.get_all("dpop").iter();
    let first = all.next();
    if all.next().is_some() {
        return Err(OAuthError::invalid_request("more than one DPoP header"));
    }
    first
        .map(|v| {
            v.to_str()
                .map(str::to_owned)
                .map_err(|_| OAuthError::invalid_request("the DPoP header is not ASCII"))
        })
        .transpose()
}

/// Verifies a DPoP proof made for the token endpoint (no access token in it) and remembers its jti.
pub(super) async fn token_endpoint_proof(
    state: &AppState,
    proof: &str,
    now: DateTime<Utc>,
) -> Result<String, OAuthError> {
    let p =
        warden_identity::verify_dpop_proof(proof, "POST", &state.identity.settings.token_endpoint, None, now)
            .map_err(|e| OAuthError::from_grant(&e))?;
    remember_proof(state, &p).await?;
    Ok(p.jkt)
}

/// Authenticates the agent behind an assertion or a federated token, refusing replays.
async fn authenticate_agent(
    state: &AppState,
    presented: &Secret<String>,
    now: DateTime<Utc>,
) -> Result<Agent, OAuthError> {
    let token = presented.expose();
    if let Some(result) = state.identity.federation.verify(token, now) {
        let fed = result.map_err(|e| OAuthError::from_grant(&e))?;
        // Every federated token is one-time, with or without a `jti` (see `one_time_id`); it is
        // remembered until it expires, which the issuer's maximum lifetime bounds.
        let (namespace, id) = fed.one_time_id();
        let until = DateTime::<Utc>::from_timestamp(fed.exp, 0).unwrap_or(now)
            + Duration::seconds(warden_identity::LEEWAY_SECS);
        if !state.store.remember_jti(&namespace, &id, until).await? {
            return Err(OAuthError::invalid_grant("the token was already used (replay)"));
        }
        let agent = state.store.get_agent(&fed.agent).await?.ok_or_else(|| {
            OAuthError::invalid_grant(format!(
                "the token maps to agent `{}`, which is not registered",
                fed.agent
            ))
        })?;
        tracing::info!(agent = %agent.name, issuer = %fed.issuer, subject = %fed.subject, "agent authenticated by a federated token");
        return Ok(agent);
    }
    let iss = warden_identity::assertion_issuer(token).map_err(|e| OAuthError::from_grant(&e))?;
    let shown: String = iss
        .chars()
        .take(200)
        .collect::<String>()
        .escape_debug()
        .to_string();
    let (agent, key) = state
        .store
        .agent_by_spiffe_id(&iss)
        .await?
        .ok_or_else(|| OAuthError::invalid_grant(format!("no agent has the SPIFFE ID `{shown}`")))?;
    let key = key
        .ok_or_else(|| OAuthError::invalid_grant(format!("agent `{}` has not enrolled a key", agent.name)))?;
    let public = PublicKey::from_x_b64(Some(&key.kid), &key.public_x).map_err(|e| {
        tracing::error!(agent = %agent.name, error = %e, "stored agent key is unreadable");
        OAuthError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "server_error",
            "internal error; the server log has the details",
        )
    })?;
    let s = &state.identity.settings;
    let claims = match warden_identity::verify_assertion(token, &public, &s.token_endpoint, now) {
        Err(TokenError::WrongAudience) => warden_identity::verify_assertion(token, &public, &s.issuer, now),
        other => other,
    }
    .map_err(|e| OAuthError::from_grant(&e))?;
    let until = DateTime::<Utc>::from_timestamp(claims.exp, 0).unwrap_or(now)
        + Duration::seconds(warden_identity::LEEWAY_SECS);
    if !state
        .store
        .remember_jti(&claims.spiffe_id, &claims.jti, until)
        .await?
    {
        return Err(OAuthError::invalid_grant(
            "the assertion was already used (replay)",
        ));
    }
    Ok(agent)
}

pub(super) fn refuse_inactive(state: &AppState, agent: &Agent) -> Result<(), OAuthError> {
    if state.identity.tasks.held.agent_stopped(&agent.name) {
        return Err(OAuthError::access_denied(format!(
            "agent `{}` was stopped (held revocation); only active agents get task tokens",
            agent.name
        )));
    }
    if agent.state == AgentState::Active {
        Ok(())
    } else {
        Err(OAuthError::access_denied(format!(
            "agent `{}` is {}; only active agents get task tokens",
            agent.name, agent.state
        )))
    }
}

/// Acts on an allow: creates the task. Taking the [`Allowed`] makes "no task without a decision" a
/// type-level fact.
async fn create_task(
    state: &AppState,
    _allowed: &Allowed,
    new: NewTask,
    actor: &str,
    now: DateTime<Utc>,
) -> Result<Task, OAuthError> {
    state
        .store
        .create_task(&new, &ChangeContext::new(actor, now))
        .await
        .map_err(|e| match e {
            StoreError::Conflict(m) => OAuthError::access_denied(m),
            StoreError::NotFound { .. } => OAuthError::invalid_grant("the parent task no longer exists"),
            other => other.into(),
        })
}

async fn start_task(
    state: &AppState,
    req: &TokenExchangeRequest,
    proof: Option<&str>,
    peer: &crate::tls::PeerIdentity,
    now: DateTime<Utc>,
) -> Result<Issued, OAuthError> {
    if req.actor_token.is_some() {
        return Err(OAuthError::invalid_request(
            "actor_token is only used with a task token as subject_token",
        ));
    }
    let agent = authenticate_agent(state, &req.subject_token, now).await?;
    // Over mutual TLS: only the agent the client certificate names.
    peer.check(&agent.spiffe_id).map_err(OAuthError::invalid_grant)?;
    refuse_inactive(state, &agent)?;
    let intent = req.intent.clone().ok_or_else(|| {
        OAuthError::invalid_request("authorization_details (the task's intent) is required to start a task")
    })?;
    let (intent, aud) = bind_resource(state, intent, req.resource.as_deref()).await?;
    let jkt = match proof {
        Some(p) => Some(token_endpoint_proof(state, p, now).await?),
        None => None,
    };
    begin_task(state, &agent, intent, &aud, jkt, None, now).await
}

/// The audience of a new task token and the intent it gets: without `resource`, Warden's issuer
/// and the intent as asked; with one (RFC 8707), that resource, and the intent narrowed to its
/// upstream — which the intent must name, else the token could do nothing there.
pub(super) async fn bind_resource(
    state: &AppState,
    mut intent: TaskIntent,
    resource: Option<&str>,
) -> Result<(TaskIntent, String), OAuthError> {
    let issuer = &state.identity.settings.issuer;
    let Some(resource) = resource else {
        return Ok((intent, issuer.clone()));
    };
    let upstream = crate::resource::requested_upstream(state, resource).await?;
    if !intent.upstreams.contains(&upstream) {
        return Err(crate::resource::invalid_target(format!(
            "resource `{}`: the task's intent does not name upstream `{upstream}` (it names: {})",
            crate::resource::mcp_resource(issuer, upstream.as_str()),
            if intent.upstreams.is_empty() {
                "none".to_owned()
            } else {
                intent
                    .upstreams
                    .iter()
                    .map(|u| format!("`{u}`"))
                    .collect::<Vec<_>>()
                    .join(", ")
            }
        )));
    }
    intent.upstreams = vec![upstream.clone()];
    Ok((intent, crate::resource::mcp_resource(issuer, upstream.as_str())))
}

/// Decides a task start and acts on it: a new task (recorded `decision` + `token_issued`), or —
/// when `reuse` names a live task of this agent with exactly this intent (the client-credentials
/// grant, see `client_credentials.rs`) — a new token for that task (recorded `decision` +
/// `token_renewed`). Either way the decision is policy's, through [`decide::task_start`].
pub(super) async fn begin_task(
    state: &AppState,
    agent: &Agent,
    intent: TaskIntent,
    aud: &str,
    jkt: Option<String>,
    reuse: Option<std::sync::Arc<Task>>,
    now: DateTime<Utc>,
) -> Result<Issued, OAuthError> {
    let task_id = reuse.as_ref().map_or_else(Uuid::new_v4, |t| t.id);
    let started = std::time::Instant::now();
    let decision = decide::task_start(&state.policies, agent, &task_id.to_string(), &intent, now);
    tracing::info!(agent = %agent.name, outcome = ?decision.outcome, reasons = ?decision.reasons, policy = %decision.policy_version, "task start decided");
    let decided = decision_entry(agent, task_id, "task.start", &decision, started);
    let allowed = match decision.allowed() {
        Ok(a) => a,
        Err(d) => return Err(refuse(state, decided, d).await),
    };
    if let Some(task) = reuse {
        // The task goes on: a new token for it, decided and recorded like a start.
        state
            .ledger
            .record_all(vec![
                decided,
                crate::ledger::entry(EntryKind::TokenRenewed, &agent.spiffe_id)
                    .subject(task.id.to_string())
                    .body(serde_json::json!({
                        "agent": agent.name.to_string(),
                        "task": task.id.to_string(),
                        "task_expires_at": task.expires_at,
                        "grant": "client_credentials",
                        "audience": aud,
                    })),
            ])
            .await?;
        let issued = issue(state, &task, None, aud, now)?;
        tracing::info!(agent = %agent.name, task = %task.id, "task token issued for a live task (client credentials)");
        return Ok(issued);
    }
    let s = &state.identity.settings;
    let duration = clamp_duration(intent.max_duration_secs, s.task_max_duration);
    let expires_at = now + duration;
    let new = NewTask {
        id: task_id,
        agent: agent.name.clone(),
        parent_id: None,
        depth: 0,
        intent: serde_json::Value::Array(intent_details(&effective(intent, now, expires_at))),
        act: None,
        cnf_jkt: jkt,
        expires_at,
    };
    // The decision and the credential it grants are durable before the task exists.
    let mut issued_record = issued_entry(agent, &new, None);
    if aud != s.issuer {
        issued_record.body["audience"] = aud.into();
    }
    state.ledger.record_all(vec![decided, issued_record]).await?;
    let task = create_task(state, &allowed, new, &agent.spiffe_id, now).await?;
    tracing::info!(agent = %agent.name, task = %task.id, expires_at = %task.expires_at, bound = task.cnf_jkt.is_some(), "task started");
    issue(state, &task, None, aud, now)
}

async fn renew_or_delegate(
    state: &AppState,
    req: &TokenExchangeRequest,
    proof: Option<&str>,
    peer: &crate::tls::PeerIdentity,
    now: DateTime<Utc>,
) -> Result<Issued, OAuthError> {
    let actor_token = req.actor_token.as_ref().ok_or_else(|| {
        OAuthError::invalid_request(
            "actor_token (the acting agent's assertion) is required with a task token",
        )
    })?;
    let s = &state.identity.settings;
    // Peek at the binding: a proof goes to the subject token if it is bound, else to the new token.
    let subject_bound = warden_identity::verify_task_token_for(
        req.subject_token.expose(),
        &state.identity.keys.lookup(now),
        &s.issuer,
        &|aud| crate::resource::known_audience(&s.issuer, aud),
        now,
    )
    .map(|c| c.cnf.is_some())
    .unwrap_or(true);
    let subject_proof = if subject_bound { proof } else { None };
    let (claims, parent) = verify_task_credential(
        state,
        &req.subject_token,
        subject_proof,
        "POST",
        &s.token_endpoint,
        crate::resource::Presented::TokenEndpoint,
        now,
    )
    .await?;
    let actor = authenticate_agent(state, actor_token, now).await?;
    // Over mutual TLS: the acting agent (the renewing agent, or the delegate) is the one the client
    // certificate names.
    peer.check(&actor.spiffe_id).map_err(OAuthError::invalid_grant)?;
    refuse_inactive(state, &actor)?;
    if actor.spiffe_id == claims.sub {
        if req.actor_dpop.is_some() {
            return Err(OAuthError::invalid_request(
                "`actor_dpop` is only for delegation; a renewed token stays bound to its task's key",
            ));
        }
        if req.intent.is_some() {
            return Err(OAuthError::invalid_request(
                "a renewal cannot change the task's intent; start a new task",
            ));
        }
        if proof.is_some() && !subject_bound {
            return Err(OAuthError::invalid_request(
                "a DPoP proof was sent to renew a token that is not DPoP-bound",
            ));
        }
        if req.resource.as_deref().is_some_and(|r| r != claims.aud) {
            return Err(crate::resource::invalid_target(
                "a renewed token keeps its audience: `resource` must be the one the token is for, or absent",
            ));
        }
        state
            .ledger
            .record(
                crate::ledger::entry(EntryKind::TokenRenewed, &actor.spiffe_id)
                    .subject(parent.id.to_string())
                    .body(serde_json::json!({
                        "agent": actor.name.to_string(),
                        "task": parent.id.to_string(),
                        "task_expires_at": parent.expires_at,
                    })),
            )
            .await?;
        let issued = issue(state, &parent, claims.act.clone(), &claims.aud, now)?;
        tracing::info!(agent = %actor.name, task = %parent.id, "task token renewed");
        return Ok(issued);
    }
    // Delegation. The child's key: from a bound parent it must be proven in `actor_dpop` (the header
    // proved the parent's key); from an unbound parent a proof in either place binds the child.
    let child_proof = match (subject_bound, proof, req.actor_dpop.as_deref()) {
        (false, Some(_), Some(_)) => {
            return Err(OAuthError::invalid_request(
                "two proofs of the delegated token's key: the parent's token is not DPoP-bound, so send \
                 the child's proof either in the `DPoP` header or in `actor_dpop`, not both",
            ));
        }
        (_, _, Some(p)) => Some(p),
        (true, _, None) => {
            return Err(OAuthError::invalid_request(format!(
                "the parent's task token is DPoP-bound, so the delegated token must be bound too: send a \
                 DPoP proof of the child agent's key (`htm` POST, `htu` {}, no `ath`) in the `actor_dpop` \
                 parameter; the `DPoP` header proves the parent's key",
                s.token_endpoint
            )));
        }
        (false, p, None) => p,
    };
    let jkt = match child_proof {
        Some(p) => Some(token_endpoint_proof(state, p, now).await?),
        None => None,
    };
    if subject_bound && jkt.is_none() {
        // Unreachable by the match above; kept so no later edit can issue a bearer child of a bound
        // parent.
        return Err(OAuthError::invalid_request(
            "the parent's task token is DPoP-bound; the delegated token must be bound too",
        ));
    }
    let depth = claims.depth.saturating_add(1);
    let parent_intent = TaskIntent::from_authorization_details(&parent.intent.to_string()).map_err(|e| {
        tracing::error!(task = %parent.id, error = %e, "stored task intent is unreadable");
        OAuthError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "server_error",
            "internal error; the server log has the details",
        )
    })?;
    let requested = req.intent.clone().unwrap_or_else(|| TaskIntent {
        upstreams: vec![],
        tools: vec![],
        datasets: vec![],
        resources: vec![],
        prompts: vec![],
        max_duration_secs: None,
        ..parent_intent.clone()
    });
    let narrowed = parent_intent
        .narrow(&requested, &actor.allowed_upstreams)
        .map_err(|e| OAuthError::access_denied(format!("delegation beyond the parent's scope: {e}")))?;
    // The child's audience: the parent's, never wider. A child of a token bound to one resource is
    // bound to it too; a child of an unbound token may be bound by `resource`.
    let (narrowed, aud) = match req.resource.as_deref() {
        None if claims.aud == s.issuer => (narrowed, claims.aud.clone()),
        None => {
            let upstream = crate::resource::resource_upstream(&s.issuer, &claims.aud).unwrap_or_default();
            let mut n = narrowed;
            n.upstreams.retain(|u| u.as_str() == upstream);
            (n, claims.aud.clone())
        }
        Some(r) if claims.aud != s.issuer && r != claims.aud => {
            return Err(crate::resource::invalid_target(format!(
                "the parent's token is for the resource `{}`; a delegated token cannot be for another",
                claims.aud
            )));
        }
        Some(r) => bind_resource(state, narrowed, Some(r)).await?,
    };
    let task_id = Uuid::new_v4();
    let chain = delegation_chain(&claims);
    let started = std::time::Instant::now();
    let decision = decide::delegation(
        &state.policies,
        &actor,
        &task_id.to_string(),
        &narrowed,
        depth,
        s.max_delegation_depth,
        chain,
        now,
    );
    tracing::info!(parent = %claims.sub, child = %actor.name, depth, outcome = ?decision.outcome, reasons = ?decision.reasons, "delegation decided");
    let decided = decision_entry(&actor, task_id, "task.delegate", &decision, started);
    let allowed = match decision.allowed() {
        Ok(a) => a,
        Err(d) => return Err(refuse(state, decided, d).await),
    };
    let act = Actor {
        sub: claims.sub.clone(),
        act: claims.act.clone().map(Box::new),
    };
    let duration = clamp_duration(narrowed.max_duration_secs, s.task_max_duration);
    let expires_at = (now + duration).min(parent.expires_at);
    let new = NewTask {
        id: task_id,
        agent: actor.name.clone(),
        parent_id: Some(parent.id),
        depth,
        intent: serde_json::Value::Array(intent_details(&effective(narrowed, now, expires_at))),
        act: Some(serde_json::to_value(&act).map_err(|e| {
            OAuthError::new(StatusCode::INTERNAL_SERVER_ERROR, "server_error", e.to_string())
        })?),
        cnf_jkt: jkt,
        expires_at,
    };
    let mut issued_record = issued_entry(&actor, &new, Some(&claims.sub));
    if aud != s.issuer {
        issued_record.body["audience"] = aud.as_str().into();
    }
    state.ledger.record_all(vec![decided, issued_record]).await?;
    let task = create_task(state, &allowed, new, &actor.spiffe_id, now).await?;
    tracing::info!(parent_task = %parent.id, task = %task.id, child = %actor.name, depth, "task delegated");
    issue(state, &task, Some(act), &aud, now)
}

/// The `decision` entry of a task start or delegation.
fn decision_entry(
    agent: &Agent,
    task_id: Uuid,
    action: &str,
    decision: &warden_core::Decision,
    started: std::time::Instant,
) -> warden_ledger::NewEntry {
    let facts = crate::ledger::DecisionFacts {
        actor: agent.spiffe_id.clone(),
        agent: agent.name.to_string(),
        task: Some(task_id.to_string()),
        action: action.to_owned(),
        ..Default::default()
    };
    crate::ledger::decision_entry(facts, decision, started.elapsed())
}

/// The `token_issued` entry of a new task's first credential.
fn issued_entry(agent: &Agent, task: &NewTask, delegated_by: Option<&str>) -> warden_ledger::NewEntry {
    let mut body = serde_json::json!({
        "agent": agent.name.to_string(),
        "task": task.id.to_string(),
        "depth": task.depth,
        "intent": task.intent,
        "task_expires_at": task.expires_at,
        "dpop_bound": task.cnf_jkt.is_some(),
    });
    if let (Some(parent), Some(by)) = (task.parent_id, delegated_by) {
        body["parent_task"] = parent.to_string().into();
        body["delegated_by"] = by.into();
    }
    crate::ledger::entry(EntryKind::TokenIssued, &agent.spiffe_id)
        .subject(task.id.to_string())
        .body(body)
}

/// A refusal by policy: recorded (best effort: it is a refusal either way), then reported.
async fn refuse(state: &AppState, decided: warden_ledger::NewEntry, d: warden_core::Decision) -> OAuthError {
    if let Err(e) = state.ledger.record(decided).await {
        tracing::warn!(error = %e, "a denied credential request could not be recorded in the audit ledger");
    }
    OAuthError::access_denied(d.reasons.join("; ")).recorded()
}

/// The agents that delegated, nearest first, from the token's `sub` and `act` chain.
fn delegation_chain(claims: &TaskClaims) -> Vec<warden_core::AgentName> {
    let mut chain = Vec::new();
    let mut next = Some(claims.sub.as_str());
    let mut act = claims.act.as_ref();
    while let Some(spiffe) = next {
        if let Some(name) = spiffe
            .rsplit('/')
            .next()
            .and_then(|n| warden_core::AgentName::parse(n).ok())
        {
            chain.push(name);
        }
        next = act.map(|a| a.sub.as_str());
        act = act.and_then(|a| a.act.as_deref());
    }
    chain
}

fn clamp_duration(requested: Option<u64>, cap: Duration) -> Duration {
    match requested {
        Some(secs) => Duration::seconds(i64::try_from(secs).unwrap_or(i64::MAX).max(1)).min(cap),
        None => cap,
    }
}

/// The intent as recorded: its `max_duration_secs` is the task's real maximum (from `now` to
/// `expires_at`: the request, capped by `tokens.task_max_duration_secs` and, for a delegation, by
/// the parent's expiry), not what was asked for. A child of a 1-hour parent that asked for 30 days
/// shows at most the hour its parent had left.
fn effective(
    mut intent: TaskIntent,
    now: chrono::DateTime<Utc>,
    expires_at: chrono::DateTime<Utc>,
) -> TaskIntent {
    let secs = (expires_at - now).num_seconds().max(1);
    intent.max_duration_secs = Some(u64::try_from(secs).unwrap_or(1));
    intent
}

fn intent_details(intent: &TaskIntent) -> Vec<serde_json::Value> {
    match intent.to_authorization_details() {
        serde_json::Value::Array(v) => v,
        other => vec![other],
    }
}

/// Signs a task token for `task` with audience `aud` (Warden's issuer, or one resource: RFC 8707):
/// lifetime capped by the task's own end.
fn issue(
    state: &AppState,
    task: &Task,
    act: Option<Actor>,
    aud: &str,
    now: DateTime<Utc>,
) -> Result<Issued, OAuthError> {
    let s = &state.identity.settings;
    let exp = (now + s.task_token_ttl).min(task.expires_at);
    if exp <= now + Duration::seconds(1) {
        return Err(OAuthError::invalid_grant(format!(
            "task `{}` ends now; start a new task",
            task.id
        )));
    }
    let details = match &task.intent {
        serde_json::Value::Array(v) => v.clone(),
        other => vec![other.clone()],
    };
    let claims = TaskClaims {
        iss: s.issuer.clone(),
        sub: task.agent_spiffe_id.clone(),
        aud: aud.to_owned(),
        iat: now.timestamp(),
        exp: exp.timestamp(),
        jti: Uuid::new_v4().to_string(),
        task_id: task.id,
        depth: task.depth,
        authorization_details: details.clone(),
        act,
        cnf: task.cnf_jkt.clone().map(|jkt| Confirmation { jkt }),
    };
    let token = warden_identity::issue_task_token(&state.identity.keys.active(), &claims).map_err(|e| {
        tracing::error!(error = %e, "cannot sign a task token");
        OAuthError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "server_error",
            "internal error; the server log has the details",
        )
    })?;
    Ok(Issued {
        token,
        bound: task.cnf_jkt.is_some(),
        expires_in: (exp - now).num_seconds().max(0),
        task_id: task.id,
        authorization_details: details,
    })
}
