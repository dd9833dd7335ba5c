//! The OAuth client-credentials grant at `POST /v1/token` (RFC 6749 §4.4), for off-the-shelf MCP
//! clients: the agent authenticates as an OAuth client with `private_key_jwt` (RFC 7523 §2.2: a JWT
//! signed by its enrolled Ed25519 key, `EdDSA`) and gets a task token — no Warden code on its side.
//!
//! * **Client.** `client_id` is the agent's SPIFFE ID or its name (absent: the assertion's `iss`).
//!   The assertion's `iss` and `sub` are exactly the `client_id`; its `aud` is Warden's token
//!   endpoint or its issuer (with or without a trailing slash, as OAuth client libraries render a
//!   root issuer: RFC 7523bis names the issuer); it lives at most 300 s; its `jti` is one-time on
//!   every node (the store's replay memory, shared with the agents' token-exchange assertions). A
//!   header `kid` must be the agent's current key; without one, the assertion is checked against the
//!   agent's current keys — never a key it rotated away. Every failure here is `invalid_client`
//!   (401): unknown client, no key, bad signature, wrong claims, replay, an agent that is not active.
//! * **Intent.** `authorization_details` (a `warden_task` object, as in token exchange); or `scope`,
//!   which narrows the agent's default intent (space-separated `upstream:NAME`, `tool:NAME`,
//!   `dataset:NAME`, `prompt:NAME`, `resource:PATTERN`; nothing outside the default); or nothing,
//!   and the task gets the agent's default intent (`warden agent update NAME --default-intent …`).
//!   Neither an intent nor a default: `invalid_scope` (RFC 6749 §3.3).
//! * **Resource.** `resource` (RFC 8707) binds the token to one gateway endpoint (see
//!   `crate::resource`) and narrows the intent's upstreams to it.
//! * **Decision.** Every grant is a task start decided by policy through `decide::task_start`, with
//!   its `decision` entry. When this agent already has a live task with exactly this intent (started
//!   without DPoP, or with the same key), the grant gives that task a new token (`token_renewed`)
//!   instead of starting another one: an MCP client that fetches a new token when its token expired
//!   keeps its session, which is bound to the task. Otherwise a new task starts (`token_issued`).

use chrono::{DateTime, Duration, Utc};
use warden_core::{Agent, AgentName, AgentState, TaskState};
use warden_identity::{ClientCredentialsRequest, PublicKey, TaskIntent};
use warden_store::TaskFilter;

use super::tokens::{Issued, begin_task, bind_resource, token_endpoint_proof};
use crate::AppState;
use crate::oauth::OAuthError;

pub(super) async fn grant(
    state: &AppState,
    req: &ClientCredentialsRequest,
    proof: Option<&str>,
    peer: &crate::tls::PeerIdentity,
    now: DateTime<Utc>,
) -> Result<Issued, OAuthError> {
    let agent = authenticate_client(state, req, now).await?;
    // Over mutual TLS: only the agent the client certificate names.
    peer.check(&agent.spiffe_id).map_err(OAuthError::invalid_client)?;
    refuse_inactive_client(state, &agent)?;
    let intent = requested_intent(&agent, req)?;
    let (intent, aud) = bind_resource(state, intent, req.resource.as_deref()).await?;
    let jkt = match proof {
        Some(p) => Some(token_endpoint_proof(state, p, now).await?),
        None => None,
    };
    let reuse = live_task_with(state, &agent, &intent, jkt.as_deref(), now).await?;
    begin_task(state, &agent, intent, &aud, jkt, reuse, now).await
}

fn shown(s: &str) -> String {
    s.chars().take(200).collect::<String>().escape_debug().to_string()
}

/// RFC 7523 §2.2 client authentication with the agent's enrolled key.
async fn authenticate_client(
    state: &AppState,
    req: &ClientCredentialsRequest,
    now: DateTime<Utc>,
) -> Result<Agent, OAuthError> {
    let token = req.client_assertion.expose();
    let client_id = match &req.client_id {
        Some(c) => c.clone(),
        None => warden_identity::client_assertion_issuer(token)
            .map_err(|e| OAuthError::invalid_client(format!("client_assertion: {e}")))?,
    };
    let found = if client_id.starts_with("spiffe://") {
        state.store.agent_by_spiffe_id(&client_id).await?
    } else {
        match AgentName::parse(&client_id) {
            Ok(name) => match state.store.get_agent(&name).await? {
                Some(agent) => state.store.agent_by_spiffe_id(&agent.spiffe_id).await?,
                None => None,
            },
            Err(_) => None,
        }
    };
    let (agent, key) = found.ok_or_else(|| {
        OAuthError::invalid_client(format!(
            "client_id `{}` is not a registered agent (its SPIFFE ID or its name)",
            shown(&client_id)
        ))
    })?;
    let key = key.ok_or_else(|| {
        OAuthError::invalid_client(format!(
            "agent `{}` has not enrolled a key (`warden agent enroll`)",
            agent.name
        ))
    })?;
    let public = PublicKey::from_x_b64(Some(&key.kid), &key.public_x).map_err(|e| {
        tracing::error!(agent = %agent.name, error = %e, "stored agent key is unreadable");
        OAuthError::new(
            axum::http::StatusCode::INTERNAL_SERVER_ERROR,
            "server_error",
            "internal error; the server log has the details",
        )
    })?;
    let s = &state.identity.settings;
    let accept = |aud: &str| {
        aud == s.token_endpoint || aud == s.issuer || aud.strip_suffix('/') == Some(s.issuer.as_str())
    };
    let claims = warden_identity::verify_client_assertion(token, &[public], &client_id, &accept, now)
        .map_err(|e| OAuthError::invalid_client(format!("client_assertion: {e}")))?;
    let until = DateTime::<Utc>::from_timestamp(claims.exp, 0).unwrap_or(now)
        + Duration::seconds(warden_identity::LEEWAY_SECS);
    // One namespace per agent, whichever form of its id the assertion used, shared with the
    // token-exchange assertions: a jti is spent once.
    if !state
        .store
        .remember_jti(&agent.spiffe_id, &claims.jti, until)
        .await?
    {
        return Err(OAuthError::invalid_client(
            "client_assertion: the assertion was already used (replay); sign a new one with a new `jti`",
        ));
    }
    tracing::info!(agent = %agent.name, "agent authenticated as an OAuth client (private_key_jwt)");
    Ok(agent)
}

/// An agent that is not active is not a client that may get tokens.
fn refuse_inactive_client(state: &AppState, agent: &Agent) -> Result<(), OAuthError> {
    if state.identity.tasks.held.agent_stopped(&agent.name) {
        return Err(OAuthError::invalid_client(format!(
            "agent `{}` was stopped (held revocation); only active agents get task tokens",
            agent.name
        )));
    }
    if agent.state == AgentState::Active {
        Ok(())
    } else {
        Err(OAuthError::invalid_client(format!(
            "agent `{}` is {}; only active agents get task tokens",
            agent.name, agent.state
        )))
    }
}

/// The intent the request asks for: `authorization_details`, or the default narrowed by `scope`, or
/// the default.
fn requested_intent(agent: &Agent, req: &ClientCredentialsRequest) -> Result<TaskIntent, OAuthError> {
    if let Some(intent) = &req.intent {
        if req.scope.is_some() {
            return Err(OAuthError::invalid_request(
                "send the task's intent either in `authorization_details` or as `scope` (narrowing the \
                 agent's default intent), not both",
            ));
        }
        return Ok(intent.clone());
    }
    let default = agent
        .default_intent
        .as_ref()
        .map(|v| TaskIntent::from_authorization_details(&v.to_string()))
        .transpose()
        .map_err(|e| {
            tracing::error!(agent = %agent.name, error = %e, "stored default intent is unreadable");
            OAuthError::new(
                axum::http::StatusCode::INTERNAL_SERVER_ERROR,
                "server_error",
                "internal error; the server log has the details",
            )
        })?;
    let Some(default) = default else {
        return Err(OAuthError::invalid_scope(format!(
            "no intent: the request has neither `authorization_details` nor `scope`, and agent `{}` has no \
             default intent (`warden agent update {} --default-intent …`)",
            agent.name, agent.name
        )));
    };
    match req.scope.as_deref() {
        None => Ok(default),
        Some(scope) => narrow_by_scope(&default, scope, agent),
    }
}

/// `scope` values narrow the default intent; naming anything outside it is `invalid_scope`.
fn narrow_by_scope(default: &TaskIntent, scope: &str, agent: &Agent) -> Result<TaskIntent, OAuthError> {
    let mut requested = TaskIntent {
        upstreams: vec![],
        tools: vec![],
        datasets: vec![],
        resources: vec![],
        prompts: vec![],
        max_duration_secs: None,
        ..default.clone()
    };
    for value in scope.split(' ').filter(|v| !v.is_empty()) {
        let (kind, item) = value.split_once(':').ok_or_else(|| {
            OAuthError::invalid_scope(format!(
                "scope value `{}` is not one of Warden's: `upstream:NAME`, `tool:NAME`, `dataset:NAME`, \
                 `prompt:NAME` or `resource:PATTERN`, each narrowing the agent's default intent",
                shown(value)
            ))
        })?;
        let list = match kind {
            "upstream" => {
                let name = warden_core::UpstreamName::parse(item)
                    .map_err(|e| OAuthError::invalid_scope(format!("scope value `{}`: {e}", shown(value))))?;
                if !requested.upstreams.contains(&name) {
                    requested.upstreams.push(name);
                }
                continue;
            }
            "tool" => &mut requested.tools,
            "dataset" => &mut requested.datasets,
            "prompt" => &mut requested.prompts,
            "resource" => &mut requested.resources,
            _ => {
                return Err(OAuthError::invalid_scope(format!(
                    "scope value `{}`: unknown kind `{}` (expected upstream, tool, dataset, prompt or resource)",
                    shown(value),
                    shown(kind)
                )));
            }
        };
        if item.is_empty() {
            return Err(OAuthError::invalid_scope(format!(
                "scope value `{}` names nothing",
                shown(value)
            )));
        }
        if !list.iter().any(|i| i == item) {
            list.push(item.to_owned());
        }
    }
    default
        .narrow(&requested, &agent.allowed_upstreams)
        .map_err(|e| OAuthError::invalid_scope(format!("scope: {e} (the agent's default intent)")))
}

/// A live task of this agent, started by itself (not delegated), with exactly `intent` (its duration
/// aside) and the same DPoP binding, with at least a full token lifetime left: the one a new
/// client-credentials token continues. Read from the store, then through the revocation-aware cache.
async fn live_task_with(
    state: &AppState,
    agent: &Agent,
    intent: &TaskIntent,
    jkt: Option<&str>,
    now: DateTime<Utc>,
) -> Result<Option<std::sync::Arc<warden_core::Task>>, OAuthError> {
    let wanted = TaskIntent {
        max_duration_secs: None,
        ..intent.clone()
    };
    let min_left = state.identity.settings.task_token_ttl;
    let tasks = state
        .store
        .list_tasks(&TaskFilter {
            agent: Some(agent.name.clone()),
            state: Some(TaskState::Active),
        })
        .await?;
    for task in tasks {
        if task.parent_id.is_some()
            || task.depth != 0
            || task.cnf_jkt.as_deref() != jkt
            || task.expires_at - now < min_left
        {
            continue;
        }
        let Ok(recorded) = TaskIntent::from_authorization_details(&task.intent.to_string()) else {
            continue;
        };
        if (TaskIntent {
            max_duration_secs: None,
            ..recorded
        }) != wanted
        {
            continue;
        }
        match state
            .identity
            .tasks
            .live_task(state.store.as_ref(), task.id, now)
            .await
        {
            Ok(live) => return Ok(Some(live)),
            Err(crate::tasks::TaskRefused::Store(e)) => return Err(e.into()),
            Err(_) => continue,
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn agent(default: Option<serde_json::Value>) -> Agent {
        let now = Utc::now();
        Agent {
            id: uuid::Uuid::new_v4(),
            name: AgentName::parse("bot").expect("valid"),
            spiffe_id: "spiffe://warden.local/agent/bot".into(),
            owners: vec![],
            environment: warden_core::Environment::Staging,
            model: warden_core::Model::parse("p/m@1").expect("valid"),
            description: warden_core::Description::default(),
            allowed_upstreams: vec![
                warden_core::UpstreamName::parse("crm").expect("valid"),
                warden_core::UpstreamName::parse("erp").expect("valid"),
            ],
            state: AgentState::Active,
            state_changed_at: now,
            state_changed_by: "x".into(),
            created_at: now,
            created_by: "x".into(),
            updated_at: now,
            updated_by: "x".into(),
            default_intent: default,
        }
    }

    fn default_intent() -> serde_json::Value {
        serde_json::json!([{
            "type": "warden_task", "purpose": "support", "task_type": "support",
            "upstreams": ["crm", "erp"], "tools": ["search", "update"], "datasets": []
        }])
    }

    fn req(scope: Option<&str>, details: Option<&str>) -> ClientCredentialsRequest {
        ClientCredentialsRequest {
            client_id: None,
            client_assertion: warden_core::Secret::new("x".into()),
            resource: None,
            scope: scope.map(str::to_owned),
            intent: details.map(|d| TaskIntent::from_authorization_details(d).expect("valid")),
        }
    }

    #[test]
    fn no_intent_and_no_default_is_invalid_scope_naming_the_fix() {
        let e = requested_intent(&agent(None), &req(None, None)).expect_err("nothing");
        assert_eq!(e.code, "invalid_scope");
        assert!(e.description.contains("--default-intent"), "{}", e.description);
        let e =
            requested_intent(&agent(None), &req(Some("tool:search"), None)).expect_err("nothing to narrow");
        assert_eq!(e.code, "invalid_scope");
    }

    #[test]
    fn the_default_applies_and_scope_narrows_it() {
        let a = agent(Some(default_intent()));
        let i = requested_intent(&a, &req(None, None)).expect("default");
        assert_eq!(i.tools, ["search", "update"]);
        let i = requested_intent(&a, &req(Some("tool:search upstream:crm"), None)).expect("narrowed");
        assert_eq!(i.tools, ["search"]);
        assert_eq!(i.upstreams.len(), 1);
        for bad in ["tool:delete", "upstream:billing", "search", "color:red", "tool:"] {
            let e = requested_intent(&a, &req(Some(bad), None)).expect_err(bad);
            assert_eq!(e.code, "invalid_scope", "{bad}");
        }
    }

    #[test]
    fn explicit_details_win_and_exclude_scope() {
        let a = agent(Some(default_intent()));
        let d = r#"[{"type":"warden_task","purpose":"p","task_type":"t","upstreams":["crm"]}]"#;
        assert_eq!(
            requested_intent(&a, &req(None, Some(d)))
                .expect("details")
                .task_type,
            "t"
        );
        let e = requested_intent(&a, &req(Some("tool:search"), Some(d))).expect_err("both");
        assert_eq!(e.code, "invalid_request");
    }
}
