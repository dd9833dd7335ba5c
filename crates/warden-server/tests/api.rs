//! The HTTP API without sockets: requests go through the real router (`Router::oneshot`) onto a real
//! store, once on SQLite and once on PostgreSQL (`api_tests!`). Every bad-input case checks both the
//! answer and that nothing was written.

// Test code: a failed expectation should panic with its message.
#![allow(clippy::expect_used, clippy::unwrap_used)]

mod common;

use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use chrono::Duration;
use serde_json::{Value, json};
use warden_core::token;
use warden_core::{Email, Role};
use warden_server::RegistryEvent;

use common::{Api, agent_body, mint};

api_tests!(
    health_and_openapi,
    authentication_failures_are_401_and_say_why,
    wrong_role_is_403_and_writes_nothing,
    register_list_show_agent,
    bad_agent_input_is_400_naming_the_field_and_writes_nothing,
    duplicate_agent_is_409,
    body_limits_and_content_type,
    framework_refusals_are_json_and_recorded,
    an_auditor_is_not_accepted_as_an_agent_owner,
    tokens_pasted_into_paths_are_never_echoed_or_recorded,
    lifecycle_publishes_revocation_hook,
    model_change_returns_agent_to_review,
    tokens_create_use_revoke,
    upstream_rules,
    store_down_is_503_not_500,
);

async fn health_and_openapi(api: Api) {
    let (s, b) = api.call(Method::GET, "/healthz", None, None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(b["status"], "ok");
    assert_eq!(b["store"], api.store.backend().as_str());
    let (s, doc) = api.call(Method::GET, "/v1/openapi.json", None, None).await;
    assert_eq!(s, StatusCode::OK);
    for path in [
        "/v1/agents",
        "/v1/agents/{name}",
        "/v1/agents/{name}/retire",
        "/v1/upstreams/{name}",
        "/v1/humans/{email}/tokens",
        "/v1/tokens/{id}",
        "/healthz",
    ] {
        assert!(doc["paths"].get(path).is_some(), "openapi lacks {path}");
    }
    assert!(doc["components"]["schemas"].get("AgentRegistration").is_some());
    assert!(doc["components"]["securitySchemes"].get("bearer").is_some());
    let (s, b) = api.call(Method::GET, "/v1/nope", None, None).await;
    assert_eq!(
        (s, b["error"].as_str()),
        (StatusCode::NOT_FOUND, Some("not_found"))
    );
}

async fn authentication_failures_are_401_and_say_why(api: Api) {
    let check = |token: Option<String>, want: &'static str| {
        let api = &api;
        async move {
            let (s, b) = api.call(Method::GET, "/v1/agents", token.as_deref(), None).await;
            assert_eq!(s, StatusCode::UNAUTHORIZED, "{b}");
            assert_eq!(b["error"], "unauthorized");
            let msg = b["message"].as_str().expect("message");
            assert!(msg.contains(want), "`{msg}` lacks `{want}`");
            if let Some(t) = token {
                assert!(!msg.contains(&t), "the token is echoed");
            }
        }
    };
    check(None, "missing").await;
    check(Some("not-a-token".into()), "malformed").await;
    let (unknown, _) = token::generate();
    check(Some(unknown.expose().clone()), "not known").await;
    let expired = mint(
        &api.store,
        "old@example.com",
        &[Role::Admin],
        Duration::seconds(-1),
    )
    .await;
    check(Some(expired), "expired").await;
    let revoked = mint(&api.store, "gone@example.com", &[Role::Admin], Duration::hours(1)).await;
    let id = api
        .store
        .find_token(&token::TokenHash::of(&revoked.clone().into()))
        .await
        .expect("find")
        .expect("found")
        .token
        .id;
    let (s, _) = api.admin(Method::DELETE, &format!("/v1/tokens/{id}"), None).await;
    assert_eq!(s, StatusCode::OK);
    check(Some(revoked), "revoked").await;
    // Wrong scheme.
    let req = Request::builder()
        .uri("/v1/agents")
        .header(header::AUTHORIZATION, format!("Basic {}", api.admin))
        .body(Body::empty())
        .expect("req");
    let (s, b) = api.raw(req).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    assert!(b["message"].as_str().expect("msg").contains("Bearer"));
}

async fn wrong_role_is_403_and_writes_nothing(api: Api) {
    api.seed().await;
    let auditor = mint(
        &api.store,
        "aud@example.com",
        &[Role::Auditor],
        Duration::hours(1),
    )
    .await;
    let (s, b) = api
        .call(
            Method::POST,
            "/v1/agents",
            Some(&auditor),
            Some(agent_body("bot")),
        )
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{b}");
    assert!(
        b["message"]
            .as_str()
            .expect("msg")
            .contains("needs the `admin` role"),
        "{b}"
    );
    assert_eq!(api.agent_count().await, 0);
    let (s, _) = api
        .call(
            Method::POST,
            "/v1/humans",
            Some(&auditor),
            Some(json!({"email": "x@example.com", "display_name": "X", "roles": ["admin"]})),
        )
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    assert!(
        api.store
            .get_human(&Email::parse("x@example.com").expect("valid"))
            .await
            .expect("get")
            .is_none()
    );
    // Reading is allowed.
    let (s, _) = api.call(Method::GET, "/v1/agents", Some(&auditor), None).await;
    assert_eq!(s, StatusCode::OK);
}

async fn register_list_show_agent(api: Api) {
    api.seed().await;
    let (s, a) = api
        .admin(Method::POST, "/v1/agents", Some(agent_body("billing-bot")))
        .await;
    assert_eq!(s, StatusCode::CREATED, "{a}");
    assert_eq!(a["spiffe_id"], "spiffe://warden.local/agent/billing-bot");
    assert_eq!(a["state"], "pending_review");
    assert_eq!(a["created_by"], "admin@example.com");
    let (s, l) = api.admin(Method::GET, "/v1/agents", None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(l["agents"].as_array().expect("array").len(), 1);
    let (_, l) = api.admin(Method::GET, "/v1/agents?state=active", None).await;
    assert_eq!(l["agents"].as_array().expect("array").len(), 0);
    let (s, b) = api.admin(Method::GET, "/v1/agents?state=bogus", None).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{b}");
    let (s, d) = api.admin(Method::GET, "/v1/agents/billing-bot", None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(d["history"][0]["to"], "pending_review");
    assert_eq!(d["name"], "billing-bot");
    let (s, _) = api.admin(Method::GET, "/v1/agents/nobody", None).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, b) = api.admin(Method::GET, "/v1/agents/Bad..Name", None).await;
    assert_eq!((s, b["field"].as_str()), (StatusCode::BAD_REQUEST, Some("name")));
}

async fn bad_agent_input_is_400_naming_the_field_and_writes_nothing(api: Api) {
    api.seed().await;
    let cases: Vec<(Value, &str, &str)> = vec![
        (
            json!({"name": "Bad_Name", "owners": ["owner@example.com"], "environment": "staging", "model": "a/b@1"}),
            "name",
            "contains `B`",
        ),
        (
            json!({"name": "bot", "owners": ["ghost@example.com"], "environment": "staging", "model": "a/b@1"}),
            "owners[0]",
            "not a registered human",
        ),
        (
            json!({"name": "bot", "owners": [], "environment": "staging", "model": "a/b@1"}),
            "owners",
            "at least one",
        ),
        (
            json!({"name": "bot", "owners": ["not-an-email"], "environment": "staging", "model": "a/b@1"}),
            "owners[0]",
            "no `@`",
        ),
        (
            json!({"name": "bot", "owners": ["owner@example.com"], "environment": "prod", "model": "a/b@1"}),
            "environment",
            "unknown variant `prod`",
        ),
        (
            json!({"name": "bot", "owners": ["owner@example.com"], "environment": "staging", "model": "gpt"}),
            "model",
            "provider/name@version",
        ),
        (
            json!({"name": "bot", "owners": ["owner@example.com"], "environment": "staging", "model": "a/b@1", "allowed_upstreams": ["nope"]}),
            "allowed_upstreams[0]",
            "not registered",
        ),
        (
            json!({"name": "bot", "owners": ["owner@example.com"], "environment": "staging", "model": "a/b@1", "role": "admin"}),
            "",
            "unknown field `role`",
        ),
        (
            json!({"owners": ["owner@example.com"], "environment": "staging", "model": "a/b@1"}),
            "",
            "missing field `name`",
        ),
        (
            json!({"name": 7, "owners": ["owner@example.com"], "environment": "staging", "model": "a/b@1"}),
            "name",
            "invalid type",
        ),
    ];
    for (body, field, want) in cases {
        let (s, b) = api.admin(Method::POST, "/v1/agents", Some(body.clone())).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{body} -> {b}");
        assert_eq!(b["error"], "invalid_request");
        if !field.is_empty() {
            assert_eq!(b["field"], field, "{body} -> {b}");
        }
        assert!(
            b["message"].as_str().expect("msg").contains(want),
            "{body} -> {b}"
        );
    }
    let req = Request::builder()
        .method(Method::POST)
        .uri("/v1/agents")
        .header(header::AUTHORIZATION, format!("Bearer {}", api.admin))
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from("{\"name\": \"bot\", "))
        .expect("req");
    let (s, b) = api.raw(req).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(
        b["message"].as_str().expect("msg").contains("not valid JSON"),
        "{b}"
    );
    assert_eq!(api.agent_count().await, 0, "nothing written");
}

async fn duplicate_agent_is_409(api: Api) {
    api.seed().await;
    let (s, _) = api
        .admin(Method::POST, "/v1/agents", Some(agent_body("bot")))
        .await;
    assert_eq!(s, StatusCode::CREATED);
    let (s, b) = api
        .admin(Method::POST, "/v1/agents", Some(agent_body("bot")))
        .await;
    assert_eq!(s, StatusCode::CONFLICT, "{b}");
    assert_eq!(b["error"], "conflict");
    assert_eq!(api.agent_count().await, 1);
}

/// Regression (issue 15): an auditor was accepted as an agent owner (accountable for it, and an
/// owner's say in its approvals).
async fn an_auditor_is_not_accepted_as_an_agent_owner(api: Api) {
    api.seed().await;
    let (s, b) = api
        .admin(
            Method::POST,
            "/v1/humans",
            Some(json!({"email": "audit@example.com", "display_name": "Audit", "roles": ["auditor"]})),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{b}");
    let mut body = agent_body("bot");
    body["owners"] = json!(["owner@example.com", "audit@example.com"]);
    let (s, b) = api.admin(Method::POST, "/v1/agents", Some(body)).await;
    assert_eq!(
        (s, b["field"].as_str()),
        (StatusCode::BAD_REQUEST, Some("owners[1]")),
        "{b}"
    );
    assert!(b["message"].as_str().unwrap().contains("`owner`"), "{b}");
    assert_eq!(api.agent_count().await, 0);
}

/// Regression (issue 15): a 405 had an empty body, a 413 on `/v1/token` and `/v1/enroll` was plain
/// text, and none of them was recorded.
async fn framework_refusals_are_json_and_recorded(api: Api) {
    api.seed().await;
    let send = |method: Method, uri: &str, ct: &str, body: Vec<u8>| {
        Request::builder()
            .method(method)
            .uri(uri)
            .header(header::CONTENT_TYPE, ct)
            .body(Body::from(body))
            .unwrap()
    };
    let (s, b) = api
        .raw(send(
            Method::PUT,
            "/v1/agents",
            "application/json",
            b"{}".to_vec(),
        ))
        .await;
    assert_eq!(
        (s, b["error"].as_str()),
        (StatusCode::METHOD_NOT_ALLOWED, Some("method_not_allowed")),
        "{b}"
    );
    let (s, b) = api
        .raw(send(Method::DELETE, "/v1/token", "application/json", Vec::new()))
        .await;
    assert_eq!(s, StatusCode::METHOD_NOT_ALLOWED, "{b}");
    assert_eq!(
        b["error"], "invalid_request",
        "OAuth shape on the token endpoint: {b}"
    );
    assert!(b["error_description"].as_str().unwrap().contains("DELETE"), "{b}");
    let big = vec![b'a'; 300 * 1024];
    for uri in ["/v1/token", "/v1/enroll"] {
        let ct = if uri == "/v1/token" {
            "application/x-www-form-urlencoded"
        } else {
            "application/json"
        };
        let (s, b) = api.raw(send(Method::POST, uri, ct, big.clone())).await;
        assert_eq!(s, StatusCode::PAYLOAD_TOO_LARGE, "{uri}: {b}");
        assert!(
            b["error_description"].as_str().is_some(),
            "{uri}: JSON, OAuth shape: {b}"
        );
    }
    let entries = common::ledger_entries(&api).await;
    let refused: Vec<(u64, String)> = entries
        .iter()
        .filter(|(k, b)| k == "decision" && b["outcome"] == "deny")
        .map(|(_, b)| {
            (
                b["status"].as_u64().unwrap_or(0),
                b["resource"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect();
    for want in [
        (405, "/v1/agents"),
        (405, "/v1/token"),
        (413, "/v1/token"),
        (413, "/v1/enroll"),
    ] {
        assert!(
            refused.iter().any(|(s, r)| (*s, r.as_str()) == want),
            "{want:?} is not recorded: {refused:?}"
        );
    }
}

/// Regression (issue 15): a token pasted where a name goes was echoed in the error and stored in the
/// append-only ledger.
async fn tokens_pasted_into_paths_are_never_echoed_or_recorded(api: Api) {
    api.seed().await;
    let pasted = "wdn_at_4lhs85nN4f9VKdSOGvMAAUhOJxWzzdFREobqZDM8CL8";
    for uri in [
        format!("/v1/agents/{pasted}"),
        format!("/v1/agents/{pasted}/suspend"),
        format!("/v1/tasks/{pasted}"),
    ] {
        let method = if uri.ends_with("/suspend") {
            Method::POST
        } else {
            Method::GET
        };
        let (s, b) = api.admin(method, &uri, None).await;
        assert!(s.is_client_error(), "{uri}: {s} {b}");
        assert!(
            !b.to_string().contains("4lhs85nN4f9"),
            "{uri}: the token is echoed: {b}"
        );
    }
    let all = common::ledger_entries(&api).await;
    let text = serde_json::to_string(&all).unwrap();
    assert!(!text.contains("4lhs85nN4f9"), "the token is in the ledger");
    assert!(text.contains("[redacted]"), "the refusals are recorded, redacted");
}

async fn body_limits_and_content_type(api: Api) {
    api.seed().await;
    let mut big = agent_body("bot");
    big["description"] = Value::String("x".repeat(70 * 1024));
    let (s, b) = api.admin(Method::POST, "/v1/agents", Some(big)).await;
    assert_eq!(s, StatusCode::PAYLOAD_TOO_LARGE, "{b}");
    assert_eq!(b["error"], "payload_too_large");
    let mut long = agent_body("bot");
    long["description"] = Value::String("x".repeat(3000));
    let (s, b) = api.admin(Method::POST, "/v1/agents", Some(long)).await;
    assert_eq!(
        (s, b["field"].as_str()),
        (StatusCode::BAD_REQUEST, Some("description")),
        "{b}"
    );
    let req = Request::builder()
        .method(Method::POST)
        .uri("/v1/agents")
        .header(header::AUTHORIZATION, format!("Bearer {}", api.admin))
        .header(header::CONTENT_TYPE, "text/plain")
        .body(Body::from(agent_body("bot").to_string()))
        .expect("req");
    let (s, _) = api.raw(req).await;
    assert_eq!(s, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert_eq!(api.agent_count().await, 0);
}

async fn lifecycle_publishes_revocation_hook(api: Api) {
    api.seed().await;
    let mut events = api.state.events.subscribe();
    api.admin(Method::POST, "/v1/agents", Some(agent_body("bot")))
        .await;
    let (s, a) = api.admin(Method::POST, "/v1/agents/bot/activate", None).await;
    assert_eq!((s, a["state"].as_str()), (StatusCode::OK, Some("active")), "{a}");
    assert!(events.try_recv().is_err(), "activation revokes nothing");
    let (s, a) = api
        .admin(
            Method::POST,
            "/v1/agents/bot/suspend",
            Some(json!({"reason": "incident 7"})),
        )
        .await;
    assert_eq!(
        (s, a["state"].as_str()),
        (StatusCode::OK, Some("suspended")),
        "{a}"
    );
    match events.try_recv() {
        Ok(RegistryEvent::CredentialsInvalidated { agent, reason, .. }) => {
            assert_eq!(agent.as_str(), "bot");
            assert!(reason.contains("suspended"), "{reason}");
        }
        other => panic!("expected a revocation event, got {other:?}"),
    }
    let (s, b) = api.admin(Method::POST, "/v1/agents/bot/suspend", None).await;
    assert_eq!(s, StatusCode::CONFLICT, "{b}");
    let (s, b) = api
        .admin(
            Method::POST,
            "/v1/agents/bot/retire",
            Some(json!({"reason": "x", "force": true})),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{b}");
    let (s, _) = api
        .admin(
            Method::POST,
            "/v1/agents/bot/retire",
            Some(json!({"reason": "decommissioned"})),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    let (_, d) = api.admin(Method::GET, "/v1/agents/bot", None).await;
    let reasons: Vec<_> = d["history"]
        .as_array()
        .expect("history")
        .iter()
        .map(|h| h["reason"].as_str().unwrap_or("").to_owned())
        .collect();
    assert_eq!(reasons, ["registered", "", "incident 7", "decommissioned"]);
}

async fn model_change_returns_agent_to_review(api: Api) {
    api.seed().await;
    let mut events = api.state.events.subscribe();
    api.admin(Method::POST, "/v1/agents", Some(agent_body("bot")))
        .await;
    api.admin(Method::POST, "/v1/agents/bot/activate", None).await;
    let (s, a) = api
        .admin(
            Method::PATCH,
            "/v1/agents/bot",
            Some(json!({"model": "anthropic/claude-opus@5"})),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{a}");
    assert_eq!(a["state"], "pending_review");
    assert!(matches!(
        events.try_recv(),
        Ok(RegistryEvent::CredentialsInvalidated { .. })
    ));
    let (s, b) = api.admin(Method::PATCH, "/v1/agents/bot", Some(json!({}))).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{b}");
    let (s, b) = api
        .admin(
            Method::PATCH,
            "/v1/agents/bot",
            Some(json!({"owners": ["ghost@example.com"]})),
        )
        .await;
    assert_eq!(
        (s, b["field"].as_str()),
        (StatusCode::BAD_REQUEST, Some("owners[0]")),
        "{b}"
    );
}

async fn tokens_create_use_revoke(api: Api) {
    let (s, _) = api
        .admin(
            Method::POST,
            "/v1/humans",
            Some(json!({"email": "Bob@Example.com", "display_name": "Bob", "roles": ["approver"]})),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED);
    let (s, b) = api
        .admin(
            Method::POST,
            "/v1/humans",
            Some(json!({"email": "bob@example.com", "display_name": "Bob", "roles": ["approver"]})),
        )
        .await;
    assert_eq!(s, StatusCode::CONFLICT, "emails are case-insensitive: {b}");
    let (s, b) = api
        .admin(
            Method::POST,
            "/v1/humans",
            Some(json!({"email": "c@example.com", "display_name": "C", "roles": ["root"]})),
        )
        .await;
    assert_eq!(
        (s, b["field"].as_str()),
        (StatusCode::BAD_REQUEST, Some("roles[0]")),
        "{b}"
    );
    let (s, created) = api
        .admin(
            Method::POST,
            "/v1/humans/bob@example.com/tokens",
            Some(json!({"label": "laptop", "ttl_seconds": 3600})),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{created}");
    let bob = created["token"].as_str().expect("token").to_owned();
    assert!(bob.starts_with("wdn_at_"));
    let (s, me) = api.call(Method::GET, "/v1/whoami", Some(&bob), None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(me["human"]["email"], "bob@example.com");
    assert!(!me.to_string().contains(&bob), "whoami must not return the token");
    // Bob may create his own token, not Alice's.
    let (s, _) = api
        .call(
            Method::POST,
            "/v1/humans/bob@example.com/tokens",
            Some(&bob),
            Some(json!({})),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED);
    let (s, _) = api
        .call(
            Method::POST,
            "/v1/humans/admin@example.com/tokens",
            Some(&bob),
            Some(json!({})),
        )
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let (s, b) = api
        .admin(
            Method::POST,
            "/v1/humans/bob@example.com/tokens",
            Some(json!({"ttl_seconds": 0})),
        )
        .await;
    assert_eq!(
        (s, b["field"].as_str()),
        (StatusCode::BAD_REQUEST, Some("ttl_seconds"))
    );
    let (s, list) = api
        .call(Method::GET, "/v1/humans/bob@example.com/tokens", Some(&bob), None)
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(list["tokens"].as_array().expect("tokens").len(), 2);
    assert!(
        !list.to_string().contains("wdn_at_"),
        "listings never hold token values"
    );
    let id = created["info"]["id"].as_str().expect("id");
    let (s, r) = api.admin(Method::DELETE, &format!("/v1/tokens/{id}"), None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(r["revoked_by"], "admin@example.com");
    let (s, _) = api.call(Method::GET, "/v1/whoami", Some(&bob), None).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    let (s, _) = api.admin(Method::DELETE, &format!("/v1/tokens/{id}"), None).await;
    assert_eq!(s, StatusCode::CONFLICT);
    let (s, b) = api.admin(Method::DELETE, "/v1/tokens/not-a-uuid", None).await;
    assert_eq!((s, b["field"].as_str()), (StatusCode::BAD_REQUEST, Some("id")));
}

async fn upstream_rules(api: Api) {
    api.seed().await;
    let (s, b) = api
        .admin(
            Method::POST,
            "/v1/upstreams",
            Some(json!({"name": "db", "kind": "postgres", "url": "postgres://app:hunter2@db/app", "environment": "production",
                        "owner": "owner@example.com", "sensitivity": "regulated"})),
        )
        .await;
    assert_eq!(
        (s, b["field"].as_str()),
        (StatusCode::BAD_REQUEST, Some("url")),
        "{b}"
    );
    assert!(
        !b.to_string().contains("hunter2"),
        "the error must not echo the password"
    );
    let (s, b) = api
        .admin(
            Method::POST,
            "/v1/upstreams",
            Some(json!({"name": "db", "kind": "mysql", "url": "x", "environment": "production", "owner": "owner@example.com", "sensitivity": "regulated"})),
        )
        .await;
    assert_eq!(
        (s, b["field"].as_str()),
        (StatusCode::BAD_REQUEST, Some("kind")),
        "{b}"
    );
    assert_eq!(api.store.list_upstreams().await.expect("list").len(), 1);
    api.admin(Method::POST, "/v1/agents", Some(agent_body("bot")))
        .await;
    let (s, b) = api.admin(Method::DELETE, "/v1/upstreams/crm", None).await;
    assert_eq!(s, StatusCode::CONFLICT, "{b}");
    let (s, u) = api.admin(Method::GET, "/v1/upstreams/crm", None).await;
    assert_eq!((s, u["kind"].as_str()), (StatusCode::OK, Some("mcp")));
}

async fn store_down_is_503_not_500(api: Api) {
    api.store.close().await;
    let (s, b) = api.call(Method::GET, "/healthz", None, None).await;
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE, "{b}");
    assert_eq!(b["status"], "unavailable");
    // Authentication cannot be checked: refused, not let through.
    let (s, b) = api.admin(Method::GET, "/v1/agents", None).await;
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE, "{b}");
    assert_eq!(b["error"], "unavailable");
}
