//! The decision point and the policy lifecycle through the real router, on SQLite and PostgreSQL, with
//! the default policy pack active: `/v1/authorize` (and batch) on real task tokens, and
//! `/v1/policies` validate, activate, shadow, explain.

#![allow(clippy::expect_used, clippy::unwrap_used)]

mod common;

use std::collections::BTreeMap;

use axum::http::{Method, StatusCode};
use serde_json::{Value, json};

use common::agents::*;
use common::{Api, agent_body};

api_tests!(
    write_to_production_needs_one_approval,
    prototype_agent_reading_production_is_denied_by_id,
    bad_requests_are_denials_with_reasons,
    batch_answers_in_order,
    activation_validates_versions_and_swaps,
    shadow_counts_differences_without_enforcing,
    explain_names_the_policy,
    no_active_set_denies_everything,
);

/// The default pack's files, as an upload.
fn pack() -> BTreeMap<String, String> {
    common::default_pack()
}

async fn authorize(api: &Api, token: &str, body: Value) -> (StatusCode, Value) {
    api.with_headers(
        Method::POST,
        "/v1/authorize",
        &[("authorization", &format!("Bearer {token}"))],
        Some(body),
    )
    .await
}

/// A staging upstream `wiki`, besides the production `crm` and `db` of `seed`.
async fn staging_upstream(api: &Api) {
    let (s, b) = api
        .admin(
            Method::POST,
            "/v1/upstreams",
            Some(json!({"name": "wiki", "kind": "http", "url": "https://wiki.internal", "environment": "staging",
                        "owner": "owner@example.com", "sensitivity": "internal"})),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{b}");
}

async fn write_to_production_needs_one_approval(api: Api) {
    seed(&api).await;
    let bot = enrolled(&api, "bot", &["crm"]).await;
    let (token, _) = started(&api, &bot, &["crm"]).await;
    let (s, d) = authorize(
        &api,
        &token,
        json!({"action": "write", "resource": {"upstream": "crm"}}),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{d}");
    assert_eq!(d["outcome"], "needs_approval", "{d}");
    assert_eq!(d["quorum"], 1);
    assert!(
        d["reasons"]
            .to_string()
            .contains("production-writes-need-approval"),
        "{d}"
    );
    assert_eq!(
        d["policy_version"].as_str().map(str::len),
        Some(64),
        "the content hash of the active set"
    );
    let (_, d) = authorize(
        &api,
        &token,
        json!({"action": "destructive", "resource": {"upstream": "crm"}}),
    )
    .await;
    assert_eq!(
        (d["outcome"].as_str(), d["quorum"].as_u64()),
        (Some("needs_approval"), Some(2)),
        "{d}"
    );
    let (_, d) = authorize(
        &api,
        &token,
        json!({"action": "read", "resource": {"upstream": "crm"}}),
    )
    .await;
    assert_eq!(d["outcome"], "allow", "a read within the task's scope: {d}");
    let (_, d) = authorize(
        &api,
        &token,
        json!({"action": "read", "resource": {"upstream": "db"}}),
    )
    .await;
    assert_eq!(d["outcome"], "deny", "a read outside the task's scope: {d}");
    let (_, d) = authorize(
        &api,
        &token,
        json!({"action": "admin", "resource": {"upstream": "crm"}}),
    )
    .await;
    assert_eq!(d["outcome"], "deny", "{d}");
    assert!(d["reasons"].to_string().contains("agents-never-admin"), "{d}");
}

async fn prototype_agent_reading_production_is_denied_by_id(api: Api) {
    seed(&api).await;
    staging_upstream(&api).await;
    let mut body = agent_body("proto");
    body["environment"] = json!("prototype");
    body["allowed_upstreams"] = json!(["wiki", "crm"]);
    let (s, reg) = api.admin(Method::POST, "/v1/agents", Some(body)).await;
    assert_eq!(s, StatusCode::CREATED, "{reg}");
    let key = warden_identity::SigningKey::generate(chrono::Utc::now());
    let (s, _) = api
        .call(
            Method::POST,
            "/v1/enroll",
            None,
            Some(json!({"join_token": reg["join_token"], "public_key": key.public().to_jwk()})),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    api.admin(Method::POST, "/v1/agents/proto/activate", None).await;
    let proto = Enrolled {
        spiffe: "spiffe://warden.local/agent/proto".into(),
        key,
        seed: [0; 32],
    };
    // Declaring the production upstream is refused at task start already...
    let (s, b) = start(&api, &proto, &intent(&["wiki", "crm"], &[]), None).await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{b}");
    assert!(
        b["error_description"]
            .as_str()
            .unwrap_or_default()
            .contains("prototype-never-production"),
        "{b}"
    );
    // ...and a task on staging cannot read production either, for the same named reason.
    let (token, _) = started(&api, &proto, &["wiki"]).await;
    let (_, d) = authorize(
        &api,
        &token,
        json!({"action": "read", "resource": {"upstream": "wiki"}}),
    )
    .await;
    assert_eq!(d["outcome"], "allow", "{d}");
    let (_, d) = authorize(
        &api,
        &token,
        json!({"action": "read", "resource": {"upstream": "crm"}}),
    )
    .await;
    assert_eq!(d["outcome"], "deny", "{d}");
    assert!(
        d["reasons"].to_string().contains("prototype-never-production"),
        "the policy id is the reason: {d}"
    );
}

async fn bad_requests_are_denials_with_reasons(api: Api) {
    seed(&api).await;
    let bot = enrolled(&api, "bot", &["crm"]).await;
    let (token, _) = started(&api, &bot, &["crm"]).await;
    let (s, d) = authorize(
        &api,
        &token,
        json!({"action": "launch-missiles", "resource": {"upstream": "crm"}}),
    )
    .await;
    assert_eq!((s, d["outcome"].as_str()), (StatusCode::OK, Some("deny")), "{d}");
    assert!(
        d["reasons"][0]
            .as_str()
            .unwrap_or_default()
            .contains("launch-missiles"),
        "{d}"
    );
    let (_, d) = authorize(
        &api,
        &token,
        json!({"action": "task.start", "resource": {"upstream": "crm"}}),
    )
    .await;
    assert_eq!(d["outcome"], "deny", "{d}");
    let mut deep = json!("leaf");
    for _ in 0..40 {
        deep = json!({ "n": deep });
    }
    let (s, d) = authorize(
        &api,
        &token,
        json!({"action": "read", "resource": {"upstream": "crm"}, "args": deep}),
    )
    .await;
    assert_eq!((s, d["outcome"].as_str()), (StatusCode::OK, Some("deny")), "{d}");
    assert!(d["reasons"].to_string().contains("limit-exceeded"), "{d}");
    // Oversized arguments reach the engine (the route accepts more than the engine does) and are a deny.
    let big = json!({ "blob": "x".repeat(100 * 1024) });
    let (s, d) = authorize(
        &api,
        &token,
        json!({"action": "read", "resource": {"upstream": "crm"}, "args": big}),
    )
    .await;
    assert_eq!((s, d["outcome"].as_str()), (StatusCode::OK, Some("deny")), "{d}");
    assert!(d["reasons"].to_string().contains("limit-exceeded"), "{d}");
    let (_, d) = authorize(
        &api,
        &token,
        json!({"action": "read", "resource": {"tool": "crm/unknown"}}),
    )
    .await;
    assert_eq!(d["outcome"], "deny", "an unknown entity: {d}");
    let (s, b) = authorize(
        &api,
        &token,
        json!({"action": "read", "resource": {"planet": "mars"}}),
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "a malformed body is a 400: {b}");
    let (s, _) = api
        .call(
            Method::POST,
            "/v1/authorize",
            None,
            Some(json!({"action": "read", "resource": {"upstream": "crm"}})),
        )
        .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED, "no task token");
    let (s, _) = authorize(
        &api,
        &api.admin.clone(),
        json!({"action": "read", "resource": {"upstream": "crm"}}),
    )
    .await;
    assert_eq!(
        s,
        StatusCode::UNAUTHORIZED,
        "a human's API token is not a task token"
    );
}

async fn batch_answers_in_order(api: Api) {
    seed(&api).await;
    let bot = enrolled(&api, "bot", &["crm"]).await;
    let (token, _) = started(&api, &bot, &["crm"]).await;
    let auth = format!("Bearer {token}");
    let reqs = json!({"requests": [
        {"action": "read", "resource": {"upstream": "crm"}},
        {"action": "write", "resource": {"upstream": "crm"}},
        {"action": "read", "resource": {"upstream": "db"}},
    ]});
    let (s, b) = api
        .with_headers(
            Method::POST,
            "/v1/authorize/batch",
            &[("authorization", &auth)],
            Some(reqs),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let outcomes: Vec<_> = b["decisions"]
        .as_array()
        .expect("decisions")
        .iter()
        .map(|d| d["outcome"].clone())
        .collect();
    assert_eq!(outcomes, [json!("allow"), json!("needs_approval"), json!("deny")]);
    let many: Vec<Value> = (0..101)
        .map(|_| json!({"action": "read", "resource": {"upstream": "crm"}}))
        .collect();
    let (s, b) = api
        .with_headers(
            Method::POST,
            "/v1/authorize/batch",
            &[("authorization", &auth)],
            Some(json!({ "requests": many })),
        )
        .await;
    assert_eq!(
        (s, b["field"].as_str()),
        (StatusCode::BAD_REQUEST, Some("requests")),
        "{b}"
    );
}

async fn activation_validates_versions_and_swaps(api: Api) {
    seed(&api).await;
    let bot = enrolled(&api, "bot", &["crm"]).await;
    let (token, _) = started(&api, &bot, &["crm"]).await;
    let (_, before) = api.admin(Method::GET, "/v1/policies", None).await;
    let v1 = before["active"].as_str().expect("active").to_owned();
    // A broken set: located errors, nothing activated.
    let mut broken = pack();
    broken.insert(
        "zz.cedar".into(),
        "@id(\"bad\")\npermit (principal, action, resource)\nwhen { resource.no_such_attribute };".into(),
    );
    broken.insert(
        "yy.cedar".into(),
        "permit (principal, action, resource) when {".into(),
    );
    let (s, b) = api
        .admin(
            Method::POST,
            "/v1/policies/activate",
            Some(json!({"files": broken, "comment": "oops"})),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{b}");
    let errors = b["errors"].as_array().expect("located errors");
    assert!(
        errors
            .iter()
            .any(|e| e["file"] == "yy.cedar" && e["line"] == 1 && e["column"].as_u64() > Some(0)),
        "{b}"
    );
    // Parsed but invalid against the schema: located too.
    let mut invalid = pack();
    invalid.insert(
        "zz.cedar".into(),
        "@id(\"bad\")\npermit (principal, action, resource)\nwhen { resource.no_such_attribute };".into(),
    );
    let (s, b) = api
        .admin(
            Method::POST,
            "/v1/policies/activate",
            Some(json!({"files": invalid, "comment": "oops"})),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{b}");
    let errors = b["errors"].as_array().expect("located errors");
    assert!(
        errors.iter().any(|e| e["file"] == "zz.cedar" && e["line"] == 3),
        "{b}"
    );
    let (_, same) = api.admin(Method::GET, "/v1/policies", None).await;
    assert_eq!(same["active"], v1, "nothing activated");
    let (s, v) = api
        .admin(
            Method::POST,
            "/v1/policies/validate",
            Some(json!({"files": broken})),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    // A stricter set: reads of crm forbidden.
    let mut stricter = pack();
    stricter.insert(
        "zz.cedar".into(),
        "@id(\"crm-frozen\")\nforbid (principal, action == Warden::Action::\"read\", resource == Warden::Upstream::\"crm\");".into(),
    );
    let (s, v) = api
        .admin(
            Method::POST,
            "/v1/policies/validate",
            Some(json!({"files": stricter})),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let (_, d) = authorize(
        &api,
        &token,
        json!({"action": "read", "resource": {"upstream": "crm"}}),
    )
    .await;
    assert_eq!(d["outcome"], "allow");
    let (s, a) = api
        .admin(
            Method::POST,
            "/v1/policies/activate",
            Some(json!({"files": stricter, "comment": "freeze crm"})),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{a}");
    let (_, d) = authorize(
        &api,
        &token,
        json!({"action": "read", "resource": {"upstream": "crm"}}),
    )
    .await;
    assert_eq!(d["outcome"], "deny", "the new set decides at once: {d}");
    assert_eq!(d["policy_version"], a["version"]);
    assert!(d["reasons"].to_string().contains("crm-frozen"), "{d}");
    let (_, after) = api.admin(Method::GET, "/v1/policies", None).await;
    assert_eq!(after["active"], a["version"]);
    assert_eq!(after["history"][0]["comment"], "freeze crm");
    // Only admins activate.
    let auditor = common::mint(
        &api.store,
        "aud@example.com",
        &[warden_core::Role::Auditor],
        chrono::Duration::hours(1),
    )
    .await;
    let (s, _) = api
        .call(
            Method::POST,
            "/v1/policies/activate",
            Some(&auditor),
            Some(json!({"files": pack()})),
        )
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let (s, _) = api.call(Method::GET, "/v1/policies", Some(&auditor), None).await;
    assert_eq!(s, StatusCode::OK, "auditors read policies");
}

async fn shadow_counts_differences_without_enforcing(api: Api) {
    seed(&api).await;
    let bot = enrolled(&api, "bot", &["crm"]).await;
    let (token, _) = started(&api, &bot, &["crm"]).await;
    let mut candidate = pack();
    candidate.insert(
        "zz.cedar".into(),
        "@id(\"crm-frozen\")\nforbid (principal, action == Warden::Action::\"read\", resource == Warden::Upstream::\"crm\");".into(),
    );
    let (s, b) = api
        .admin(
            Method::PUT,
            "/v1/policies/shadow",
            Some(json!({"files": candidate, "comment": "try"})),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    for _ in 0..3 {
        let (_, d) = authorize(
            &api,
            &token,
            json!({"action": "read", "resource": {"upstream": "crm"}}),
        )
        .await;
        assert_eq!(d["outcome"], "allow", "the shadow set is never enforced: {d}");
    }
    let (_, st) = api.admin(Method::GET, "/v1/policies", None).await;
    assert_eq!(st["shadow"]["version"], b["version"]);
    assert!(st["shadow"]["evaluated"].as_u64() >= Some(3), "{st}");
    assert!(st["shadow"]["differed"].as_u64() >= Some(3), "{st}");
    let (s, _) = api.admin(Method::DELETE, "/v1/policies/shadow", None).await;
    assert_eq!(s, StatusCode::OK);
    let (_, st) = api.admin(Method::GET, "/v1/policies", None).await;
    assert_eq!(st["shadow"]["version"], Value::Null);
}

async fn explain_names_the_policy(api: Api) {
    seed(&api).await;
    enrolled(&api, "bot", &["crm"]).await;
    let (s, e) = api
        .admin(
            Method::POST,
            "/v1/policies/explain",
            Some(json!({"principal": "bot", "action": "write", "resource": {"upstream": "crm"},
                        "task": {"id": "t1", "purpose": "p", "task_type": "t", "upstreams": ["crm"], "tools": [], "datasets": [],
                                 "depth": 0, "chain": []}})),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{e}");
    assert_eq!(e["decision"]["outcome"], "needs_approval", "{e}");
    let hit = e["matched"]
        .as_array()
        .expect("matched")
        .iter()
        .chain(e["with_approval"].as_array().expect("with_approval"))
        .find(|m| m["id"] == "production-writes-need-approval");
    let hit = hit.unwrap_or_else(|| panic!("explanation lacks the approval policy: {e}"));
    assert_eq!(hit["file"], "writes.cedar");
    assert!(hit["line"].as_u64() > Some(0));
    let (s, b) = api
        .admin(
            Method::POST,
            "/v1/policies/explain",
            Some(json!({"principal": "bot", "action": "fly", "resource": {"upstream": "crm"}})),
        )
        .await;
    assert_eq!(
        (s, b["field"].as_str()),
        (StatusCode::BAD_REQUEST, Some("action")),
        "{b}"
    );
}

async fn no_active_set_denies_everything(api: Api) {
    // A fresh policy state with nothing active: the store's set is present, so load one that is empty.
    let empty = warden_server::policy::Policies::default();
    let req = warden_policy::PolicyRequest {
        principal: warden_core::AgentName::parse("bot").expect("name"),
        action: warden_policy::Action::Read,
        resource: warden_policy::ResourceRef::Upstream(
            warden_core::UpstreamName::parse("crm").expect("name"),
        ),
        context: Default::default(),
    };
    let d = empty.decide(&req, chrono::Utc::now());
    assert_eq!(d.outcome, warden_core::Outcome::Deny);
    assert!(d.reasons[0].starts_with("no-active-policy-set"), "{d:?}");
    drop(api);
}
