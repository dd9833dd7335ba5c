//! Human approval gates through the real router, on SQLite and PostgreSQL, with the default policy
//! pack: a production write opens an approval request; approvers decide it (separation of duties,
//! one vote each, quorum, one deny ends it); the approved action is allowed within the grant's
//! window, for exactly that action; agents wait by long polling; every step is in the ledger.

#![allow(clippy::expect_used, clippy::unwrap_used)]

mod common;

use axum::http::{Method, StatusCode};
use serde_json::{Value, json};
use warden_core::Role;

use common::agents::*;
use common::{Api, mint};

api_tests!(
    a_production_write_waits_for_an_approval_and_runs_within_its_window,
    separation_of_duties_and_one_vote_each,
    destructive_actions_need_two_distinct_approvers,
    one_deny_ends_a_request,
    a_grant_allows_exactly_the_approved_action,
    bad_votes_are_refused_precisely,
    agents_wait_by_long_polling,
    webhooks_hear_requests_and_decisions,
    policy_narrows_who_may_approve,
);

/// A local webhook receiver: the events it got, as (X-Warden-Event, body).
async fn receiver() -> (String, std::sync::Arc<std::sync::Mutex<Vec<(String, Value)>>>) {
    let got = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let sink = got.clone();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |headers: axum::http::HeaderMap, body: axum::body::Bytes| {
            let sink = sink.clone();
            async move {
                let event = headers
                    .get("x-warden-event")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("")
                    .to_owned();
                let value: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                sink.lock().unwrap().push((event, value));
                StatusCode::OK
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{addr}/hook"), got)
}

async fn webhooks_hear_requests_and_decisions(api: Api) {
    let token = bot_with_task(&api).await;
    let (url, got) = receiver().await;
    let secret = api.dir.path().join("hook.key");
    {
        use std::io::Write as _;
        use std::os::unix::fs::OpenOptionsExt as _;
        let mut f = std::fs::OpenOptions::new()
            .create_new(true)
            .write(true)
            .mode(0o600)
            .open(&secret)
            .unwrap();
        f.write_all(b"0123456789abcdef0123456789abcdef").unwrap();
    }
    let config: warden_server::config::Config = toml::from_str(&format!(
        "[[notify.webhook]]\nname = \"approvals\"\nurl = \"{url}\"\nsecret_file = {:?}\nupstreams = [\"crm\"]\n",
        secret
    ))
    .unwrap();
    let mut state = api.state.clone();
    state.notifier = warden_server::notify::Notifier::new(&config.notify.webhook).unwrap();
    let api = Api {
        app: warden_server::router(state, warden_server::HttpLimits::default()),
        ..api
    };
    let (_, d) = authorize(&api, &token, write_crm()).await;
    let id = d["approval"]["id"].as_str().unwrap().to_owned();
    let ann = approver(&api, "ann@example.com").await;
    vote(&api, &ann, &id, "approve").await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while got.lock().unwrap().len() < 2 && std::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let mut events = got.lock().unwrap().clone();
    events.sort_by_key(|(e, _)| e.clone());
    assert_eq!(
        events.iter().map(|(e, _)| e.as_str()).collect::<Vec<_>>(),
        vec!["approval.approved", "approval.requested"]
    );
    for (_, body) in &events {
        assert_eq!(body["warden"]["approval_id"], id.as_str());
        assert!(body["text"].as_str().unwrap().contains("bot"), "{body}");
    }
    assert_eq!(events[0].1["warden"]["decided_by"], "ann@example.com");
    let (s, status) = api.admin(Method::GET, "/v1/approvals/webhooks", None).await;
    assert_eq!(s, StatusCode::OK, "{status}");
    assert_eq!(status["webhooks"][0]["delivered"], 2, "{status}");
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

fn write_crm() -> Value {
    json!({"action": "write", "resource": {"upstream": "crm"}, "args": {"invoice": 17, "amount": 120}})
}

async fn approver(api: &Api, email: &str) -> String {
    mint(&api.store, email, &[Role::Approver], chrono::Duration::hours(1)).await
}

async fn vote(api: &Api, token: &str, id: &str, verb: &str) -> (StatusCode, Value) {
    api.call(
        Method::POST,
        &format!("/v1/approvals/{id}/{verb}"),
        Some(token),
        Some(json!({"comment": format!("{verb} from a test")})),
    )
    .await
}

/// The default pack's scenario: `bot` (owned by owner@example.com) with a task on the production
/// upstream `crm`.
async fn bot_with_task(api: &Api) -> String {
    seed(api).await;
    let bot = enrolled(api, "bot", &["crm"]).await;
    started(api, &bot, &["crm"]).await.0
}

async fn ledger_kinds(api: &Api) -> Vec<(String, Value)> {
    common::ledger_entries(api).await
}

async fn a_production_write_waits_for_an_approval_and_runs_within_its_window(api: Api) {
    let token = bot_with_task(&api).await;
    let (s, d) = authorize(&api, &token, write_crm()).await;
    assert_eq!(
        (s, d["outcome"].as_str()),
        (StatusCode::OK, Some("needs_approval")),
        "{d}"
    );
    let id = d["approval"]["id"].as_str().expect("an approval id").to_owned();
    assert_eq!(
        d["approval"]["url"],
        format!("{}/v1/approvals/{id}", common::ISSUER)
    );
    assert_eq!(
        (d["approval"]["state"].as_str(), d["approval"]["quorum"].as_u64()),
        (Some("pending"), Some(1))
    );
    // Asking again reuses the pending request.
    let (_, again) = authorize(&api, &token, write_crm()).await;
    assert_eq!(again["approval"]["id"], id.as_str());
    // What the approver sees: the arguments, the reason, the quorum.
    let ann = approver(&api, "ann@example.com").await;
    let (s, shown) = api
        .call(Method::GET, &format!("/v1/approvals/{id}"), Some(&ann), None)
        .await;
    assert_eq!(s, StatusCode::OK, "{shown}");
    assert_eq!(shown["arguments"], json!({"invoice": 17, "amount": 120}));
    assert!(
        shown["reason"]
            .as_str()
            .unwrap()
            .contains("production-writes-need-approval"),
        "{shown}"
    );
    let (s, listed) = api
        .call(Method::GET, "/v1/approvals?state=pending", Some(&ann), None)
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(listed["approvals"].as_array().unwrap().len(), 1);

    let (s, a) = vote(&api, &ann, &id, "approve").await;
    assert_eq!(
        (s, a["state"].as_str()),
        (StatusCode::OK, Some("approved")),
        "{a}"
    );
    // The retried action is allowed, citing the grant.
    let (_, d) = authorize(&api, &token, write_crm()).await;
    assert_eq!(d["outcome"], "allow", "{d}");
    assert!(
        d["reasons"]
            .to_string()
            .contains(&format!("approval-granted: request {id}")),
        "{d}"
    );
    assert_eq!(d["approval"]["state"], "approved");

    // After the grant's window, the same action needs approval again (a new request).
    let mut short = api.state.clone();
    short.approvals.grant_ttl = chrono::Duration::seconds(1);
    let api = Api {
        app: warden_server::router(short, warden_server::HttpLimits::default()),
        ..api
    };
    let (_, d) = authorize(
        &api,
        &token,
        json!({"action": "write", "resource": {"upstream": "crm"}}),
    )
    .await;
    let id2 = d["approval"]["id"].as_str().unwrap().to_owned();
    vote(&api, &ann, &id2, "approve").await;
    let (_, d) = authorize(
        &api,
        &token,
        json!({"action": "write", "resource": {"upstream": "crm"}}),
    )
    .await;
    assert_eq!(d["outcome"], "allow", "within the window: {d}");
    tokio::time::sleep(std::time::Duration::from_millis(1300)).await;
    let (_, d) = authorize(
        &api,
        &token,
        json!({"action": "write", "resource": {"upstream": "crm"}}),
    )
    .await;
    assert_eq!(d["outcome"], "needs_approval", "after the window: {d}");
    assert_ne!(d["approval"]["id"], id2.as_str());

    // The ledger tells the story: requested, approved by whom, then the allowed action.
    let entries = ledger_kinds(&api).await;
    let requested = entries
        .iter()
        .position(|(k, b)| k == "approval_requested" && b["approval"] == id.as_str())
        .expect("approval_requested");
    let granted = entries
        .iter()
        .position(|(k, b)| k == "approval_vote" && b["approval"] == id.as_str())
        .expect("approval_vote");
    assert_eq!(
        (
            entries[granted].1["verdict"].as_str(),
            entries[granted].1["votes"].as_u64(),
            entries[granted].1["required"].as_u64()
        ),
        (Some("approve"), Some(1), Some(1))
    );
    assert!(entries[granted].1["token_id"].is_string());
    assert!(
        entries.iter().all(|(k, _)| k != "approval_granted"),
        "the legacy kind is never written"
    );
    let allowed = entries
        .iter()
        .position(|(k, b)| k == "decision" && b["outcome"] == "allow" && b["approval"] == id.as_str())
        .expect("the allowed decision names its approval");
    assert!(requested < granted && granted < allowed);
    assert_eq!(entries[granted].1["comment"], "approve from a test");
}

async fn separation_of_duties_and_one_vote_each(api: Api) {
    seed(&api).await;
    // `boss` owns `bot2` and is also an approver.
    let boss = mint(
        &api.store,
        "boss@example.com",
        &[Role::Owner, Role::Approver],
        chrono::Duration::hours(1),
    )
    .await;
    let mut body = common::agent_body("bot2");
    body["owners"] = json!(["boss@example.com"]);
    let (s, reg) = api.admin(Method::POST, "/v1/agents", Some(body)).await;
    assert_eq!(s, StatusCode::CREATED, "{reg}");
    let seed_bytes = rand_seed();
    let key = warden_identity::SigningKey::from_seed(&seed_bytes, chrono::Utc::now());
    let (s, _) = api
        .call(
            Method::POST,
            "/v1/enroll",
            None,
            Some(json!({"join_token": reg["join_token"], "public_key": key.public().to_jwk()})),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    api.admin(Method::POST, "/v1/agents/bot2/activate", None).await;
    let bot2 = Enrolled {
        spiffe: reg["spiffe_id"].as_str().unwrap().into(),
        key,
        seed: seed_bytes,
    };
    let (token, _) = started(&api, &bot2, &["crm"]).await;
    let (_, d) = authorize(&api, &token, write_crm()).await;
    let id = d["approval"]["id"].as_str().unwrap().to_owned();
    // The owner may not approve their own agent's request.
    let (s, e) = vote(&api, &boss, &id, "approve").await;
    assert_eq!(s, StatusCode::CONFLICT, "{e}");
    assert!(
        e["message"].as_str().unwrap().contains("separation of duties"),
        "{e}"
    );
    // A human without the approver role may not vote at all.
    let (s, _) = vote(&api, &api.admin.clone(), &id, "approve").await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    // Still pending: nothing counted.
    let ann = approver(&api, "ann@example.com").await;
    let (_, a) = api
        .call(Method::GET, &format!("/v1/approvals/{id}"), Some(&ann), None)
        .await;
    assert_eq!(
        (a["state"].as_str(), a["approvals"].as_u64()),
        (Some("pending"), Some(0)),
        "{a}"
    );
    // The refusal is in the ledger, after the attempt was.
    let entries = ledger_kinds(&api).await;
    assert!(
        entries.iter().any(|(k, b)| k == "approval_vote_refused"
            && b["reason"]
                .as_str()
                .is_some_and(|r| r.contains("separation of duties"))),
        "{entries:?}"
    );
    assert!(
        entries
            .iter()
            .all(|(k, _)| k != "approval_vote" && k != "approval_granted"),
        "a refused vote is not recorded as a vote: {entries:?}"
    );

    // Unless the policy explicitly allows it: `@self_approval("allowed")` on the approval policy.
    let mut files = std::collections::BTreeMap::new();
    for entry in std::fs::read_dir(common::default_policies()).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "cedar") {
            let text = std::fs::read_to_string(&path).unwrap().replace(
                "@id(\"production-writes-need-approval\")\n@approval(\"required\")",
                "@id(\"production-writes-need-approval\")\n@approval(\"required\")\n@self_approval(\"allowed\")",
            );
            files.insert(path.file_name().unwrap().to_string_lossy().into_owned(), text);
        }
    }
    let (s, b) = api
        .admin(
            Method::POST,
            "/v1/policies/activate",
            Some(json!({"files": files, "comment": "owners may approve writes"})),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let (_, d) = authorize(
        &api,
        &token,
        json!({"action": "write", "resource": {"upstream": "crm"}}),
    )
    .await;
    assert!(d["reasons"].to_string().contains("self-approval allowed"), "{d}");
    let own = d["approval"]["id"].as_str().unwrap().to_owned();
    let (s, a) = vote(&api, &boss, &own, "approve").await;
    assert_eq!(
        (s, a["state"].as_str()),
        (StatusCode::OK, Some("approved")),
        "{a}"
    );
    // Destructive actions still need people other than the owner.
    let (_, d) = authorize(
        &api,
        &token,
        json!({"action": "destructive", "resource": {"upstream": "crm"}}),
    )
    .await;
    let (s, _) = vote(&api, &boss, d["approval"]["id"].as_str().unwrap(), "approve").await;
    assert_eq!(s, StatusCode::CONFLICT);
}

async fn destructive_actions_need_two_distinct_approvers(api: Api) {
    let token = bot_with_task(&api).await;
    let destroy = json!({"action": "destructive", "resource": {"upstream": "crm"}});
    let (_, d) = authorize(&api, &token, destroy.clone()).await;
    assert_eq!(
        (d["outcome"].as_str(), d["approval"]["quorum"].as_u64()),
        (Some("needs_approval"), Some(2)),
        "{d}"
    );
    let id = d["approval"]["id"].as_str().unwrap().to_owned();
    let ann = approver(&api, "ann@example.com").await;
    let ben = approver(&api, "ben@example.com").await;
    let (_, a) = vote(&api, &ann, &id, "approve").await;
    assert_eq!(
        (a["state"].as_str(), a["approvals"].as_u64()),
        (Some("pending"), Some(1))
    );
    // The same person again does not count twice.
    let (s, e) = vote(&api, &ann, &id, "approve").await;
    assert_eq!(s, StatusCode::CONFLICT, "{e}");
    assert!(e["message"].as_str().unwrap().contains("already voted"), "{e}");
    let (_, d) = authorize(&api, &token, destroy.clone()).await;
    assert_eq!(
        (d["outcome"].as_str(), d["approval"]["id"].as_str()),
        (Some("needs_approval"), Some(id.as_str()))
    );
    let (_, a) = vote(&api, &ben, &id, "approve").await;
    assert_eq!(
        (a["state"].as_str(), a["approvals"].as_u64()),
        (Some("approved"), Some(2)),
        "{a}"
    );
    let (_, d) = authorize(&api, &token, destroy).await;
    assert_eq!(d["outcome"], "allow", "{d}");
}

async fn one_deny_ends_a_request(api: Api) {
    let token = bot_with_task(&api).await;
    let (_, d) = authorize(&api, &token, write_crm()).await;
    let id = d["approval"]["id"].as_str().unwrap().to_owned();
    let ann = approver(&api, "ann@example.com").await;
    let (s, a) = vote(&api, &ann, &id, "deny").await;
    assert_eq!((s, a["state"].as_str()), (StatusCode::OK, Some("denied")));
    let (_, d) = authorize(&api, &token, write_crm()).await;
    assert_eq!(d["outcome"], "needs_approval");
    assert_ne!(
        d["approval"]["id"],
        id.as_str(),
        "a denied request is not reopened; a new one is"
    );
    let entries = ledger_kinds(&api).await;
    assert!(
        entries
            .iter()
            .any(|(k, b)| k == "approval_denied" && b["approval"] == id.as_str())
    );
}

async fn a_grant_allows_exactly_the_approved_action(api: Api) {
    let token = bot_with_task(&api).await;
    let (_, d) = authorize(&api, &token, write_crm()).await;
    let id = d["approval"]["id"].as_str().unwrap().to_owned();
    let ann = approver(&api, "ann@example.com").await;
    vote(&api, &ann, &id, "approve").await;
    // Other arguments, another resource, another task: not this grant.
    let other_args =
        json!({"action": "write", "resource": {"upstream": "crm"}, "args": {"invoice": 17, "amount": 9999}});
    let (_, d) = authorize(&api, &token, other_args).await;
    assert_eq!(d["outcome"], "needs_approval", "{d}");
    assert_ne!(d["approval"]["id"], id.as_str());
    let (_, d) = authorize(
        &api,
        &token,
        json!({"action": "write", "resource": {"upstream": "db"}}),
    )
    .await;
    assert_ne!(d["outcome"], "allow", "{d}");
    let bot = enrolled(&api, "bot-b", &["crm"]).await;
    let (other_task, _) = started(&api, &bot, &["crm"]).await;
    let (_, d) = authorize(&api, &other_task, write_crm()).await;
    assert_eq!(d["outcome"], "needs_approval", "another agent's task: {d}");
    // The approved action itself: allowed.
    let (_, d) = authorize(&api, &token, write_crm()).await;
    assert_eq!(d["outcome"], "allow", "{d}");
}

async fn bad_votes_are_refused_precisely(api: Api) {
    let token = bot_with_task(&api).await;
    let ann = approver(&api, "ann@example.com").await;
    let (s, e) = vote(&api, &ann, &uuid::Uuid::new_v4().to_string(), "approve").await;
    assert_eq!(s, StatusCode::NOT_FOUND, "{e}");
    let (s, e) = vote(&api, &ann, "not-an-id", "approve").await;
    assert_eq!(
        (s, e["field"].as_str()),
        (StatusCode::BAD_REQUEST, Some("id")),
        "{e}"
    );
    // Decided: no more votes.
    let (_, d) = authorize(&api, &token, write_crm()).await;
    let id = d["approval"]["id"].as_str().unwrap().to_owned();
    vote(&api, &ann, &id, "approve").await;
    let ben = approver(&api, "ben@example.com").await;
    let (s, e) = vote(&api, &ben, &id, "deny").await;
    assert_eq!(s, StatusCode::CONFLICT, "{e}");
    assert!(e["message"].as_str().unwrap().contains("already approved"), "{e}");
    // Expired before anyone decided.
    let mut quick = api.state.clone();
    quick.approvals.request_ttl = chrono::Duration::milliseconds(200);
    let api = Api {
        app: warden_server::router(quick, warden_server::HttpLimits::default()),
        ..api
    };
    let (_, d) = authorize(
        &api,
        &token,
        json!({"action": "destructive", "resource": {"upstream": "crm"}}),
    )
    .await;
    let id = d["approval"]["id"].as_str().unwrap().to_owned();
    tokio::time::sleep(std::time::Duration::from_millis(400)).await;
    let (s, e) = vote(&api, &ann, &id, "approve").await;
    assert_eq!(s, StatusCode::CONFLICT, "{e}");
    assert!(e["message"].as_str().unwrap().contains("expired"), "{e}");
    // A malformed wait.
    let (s, e) = api
        .call(
            Method::GET,
            &format!("/v1/approvals/{id}?wait=forever"),
            Some(&ann),
            None,
        )
        .await;
    assert_eq!(
        (s, e["field"].as_str()),
        (StatusCode::BAD_REQUEST, Some("wait")),
        "{e}"
    );
}

async fn agents_wait_by_long_polling(api: Api) {
    let token = bot_with_task(&api).await;
    let (_, d) = authorize(&api, &token, write_crm()).await;
    let id = d["approval"]["id"].as_str().unwrap().to_owned();
    let ann = approver(&api, "ann@example.com").await;
    let voter = {
        let (app, id, ann) = (api.app.clone(), id.clone(), ann.clone());
        tokio::spawn(async move {
            tokio::time::sleep(std::time::Duration::from_millis(600)).await;
            use tower::ServiceExt as _;
            let req = axum::http::Request::post(format!("/v1/approvals/{id}/approve"))
                .header("authorization", format!("Bearer {ann}"))
                .body(axum::body::Body::empty())
                .unwrap();
            app.oneshot(req).await.unwrap().status()
        })
    };
    let started_at = std::time::Instant::now();
    let (s, a) = api
        .with_headers(
            Method::GET,
            &format!("/v1/approvals/{id}?wait=10"),
            &[("authorization", &format!("Bearer {token}"))],
            None,
        )
        .await;
    assert_eq!(
        (s, a["state"].as_str()),
        (StatusCode::OK, Some("approved")),
        "{a}"
    );
    assert!(started_at.elapsed() < std::time::Duration::from_secs(5));
    assert_eq!(voter.await.unwrap(), StatusCode::OK);
    // Another agent's task token does not see it.
    let other = enrolled(&api, "bot-c", &["crm"]).await;
    let (other_token, _) = started(&api, &other, &["crm"]).await;
    let (s, _) = api
        .with_headers(
            Method::GET,
            &format!("/v1/approvals/{id}"),
            &[("authorization", &format!("Bearer {other_token}"))],
            None,
        )
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
}

async fn policy_narrows_who_may_approve(api: Api) {
    let token = bot_with_task(&api).await;
    // Production writes: only ann may approve (`@approvers`).
    let mut files = common::default_pack();
    let writes = files.get_mut("writes.cedar").unwrap();
    let before = writes.clone();
    *writes = writes.replace(
        "@id(\"production-writes-need-approval\")\n@approval(\"required\")",
        "@id(\"production-writes-need-approval\")\n@approval(\"required\")\n@approvers(\"ann@example.com\")",
    );
    assert_ne!(*writes, before, "the pack's policy was found and changed");
    let (s, b) = api
        .admin(
            Method::POST,
            "/v1/policies/activate",
            Some(json!({"files": files, "comment": "ann approves"})),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let (_, d) = authorize(&api, &token, write_crm()).await;
    assert_eq!(d["outcome"], "needs_approval", "{d}");
    let reason = d["reasons"][0].as_str().unwrap();
    assert!(
        reason.contains("approvers: ann@example.com"),
        "the reason cites who may approve: {d}"
    );
    let id = d["approval"]["id"].as_str().unwrap().to_owned();
    let (_, shown) = api.admin(Method::GET, &format!("/v1/approvals/{id}"), None).await;
    assert_eq!(shown["approvers"], json!([["ann@example.com"]]), "{shown}");
    // Ben has the approver role but is not named: refused with a precise error, counted nowhere,
    // and the refusal is in the ledger.
    let ben = approver(&api, "ben@example.com").await;
    let (s, e) = vote(&api, &ben, &id, "approve").await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{e}");
    let msg = e["error"]["message"].as_str().unwrap_or_default().to_owned()
        + e["message"].as_str().unwrap_or_default();
    assert!(
        msg.contains("ben@example.com") && msg.contains("not among the approvers"),
        "{e}"
    );
    let (_, shown) = api.admin(Method::GET, &format!("/v1/approvals/{id}"), None).await;
    assert_eq!(
        (shown["approvals"].as_u64(), shown["state"].as_str()),
        (Some(0), Some("pending")),
        "{shown}"
    );
    let ann = approver(&api, "ann@example.com").await;
    let (s, a) = vote(&api, &ann, &id, "approve").await;
    assert_eq!(
        (s, a["state"].as_str()),
        (StatusCode::OK, Some("approved")),
        "{a}"
    );
    let (_, d) = authorize(&api, &token, write_crm()).await;
    assert_eq!(d["outcome"], "allow", "{d}");
    let entries = ledger_kinds(&api).await;
    let count = |kind: &str| {
        entries
            .iter()
            .filter(|(k, b)| k == kind && b["approval"] == id.as_str())
            .count()
    };
    assert_eq!(
        (count("approval_vote_refused"), count("approval_vote")),
        (1, 1),
        "the refused vote and the counted one, each recorded once as what it was"
    );
    let grant = entries
        .iter()
        .find(|(k, b)| k == "grant_issued" && b["approval"] == id.as_str())
        .expect("the grant is recorded");
    assert_eq!(
        grant.1["approved_by"],
        json!(["ann@example.com"]),
        "{:?}",
        grant.1
    );
    assert!(
        entries
            .iter()
            .any(|(_, b)| b.to_string().contains("not among the approvers")),
        "the refused vote is recorded"
    );
}
