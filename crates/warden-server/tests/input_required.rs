//! Approval inside the protocol, through the real router on SQLite and PostgreSQL, against the
//! hostile upstream (`common::hostile`) with the default policy pack (a write to a production
//! upstream needs one approver): a 2026-07-28 client that declares URL-mode elicitation gets an
//! `InputRequiredResult` pointing at the approval; its retry carries a sealed request state that
//! is good once, for exactly that call, and only lets the call through once the grant exists; a
//! 2025-11-25 session that declared URL-mode elicitation gets -32042; everyone else -32011.

#![allow(clippy::expect_used, clippy::unwrap_used)]

mod common;

use std::time::Duration;

use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use serde_json::{Value, json};
use tower::ServiceExt as _;
use warden_core::Role;

use common::agents::{enrolled, seed, start};
use common::hostile::{Config, Hostile, default_tools};
use common::{Api, mint};

api_tests!(
    a_modern_client_completes_an_approval_inside_the_protocol,
    request_states_for_anything_else_are_refused,
    clients_without_url_elicitation_are_told_as_before,
    a_2025_11_25_session_with_url_elicitation_gets_url_elicitation_required,
    a_denied_approval_ends_the_retry,
    a_request_state_from_another_policy_version_is_refused,
);

const MODERN: &str = "2026-07-28";
const CRED: &str = "hk/9Qx&Zr+T4mW/8Lp&Vn+2c";

struct Env {
    api: Api,
    token: String,
    hostile: Hostile,
    bot: common::agents::Enrolled,
}

/// The hostile upstream `tools` (production) with two write tools, `update` and `refund`, the
/// agent `bot` with a task declaring them; retries are held at most `wait` while pending.
async fn setup(api: Api, wait: Duration) -> Env {
    seed(&api).await;
    let mut tools = default_tools();
    for name in ["update", "refund"] {
        tools.push(
            json!({"name": name, "description": "changes an invoice", "inputSchema": {"type": "object"},
                          "annotations": {"readOnlyHint": false, "destructiveHint": false}}),
        );
    }
    let hostile = Hostile::start(Config {
        tools,
        ..Config::default()
    })
    .await;
    let (s, b) = api
        .admin(
            Method::POST,
            "/v1/upstreams",
            Some(
                json!({"name": "tools", "kind": "mcp", "url": hostile.url, "environment": "production",
                        "owner": "owner@example.com", "sensitivity": "confidential"}),
            ),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{b}");
    let (s, b) = api
        .admin(
            Method::POST,
            "/v1/secrets",
            Some(json!({"name": "tools-key", "upstream": "tools",
                        "injection": {"kind": "header", "name": "Authorization", "prefix": "Bearer "},
                        "value": CRED})),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{b}");
    let mut state = api.state.clone();
    state.approvals.in_protocol_wait = wait;
    let api = Api {
        app: warden_server::router(state, warden_server::HttpLimits::default()),
        ..api
    };
    let bot = enrolled(&api, "bot", &["tools"]).await;
    let token = task(&api, &bot).await;
    Env {
        api,
        token,
        hostile,
        bot,
    }
}

/// A new task of `bot` declaring `tools` and its tools.
async fn task(api: &Api, bot: &common::agents::Enrolled) -> String {
    let details = json!([{"type": "warden_task", "purpose": "fix invoices", "task_type": "billing",
                          "upstreams": ["tools"], "tools": ["echo", "update", "refund"]}])
    .to_string();
    let (s, t) = start(api, bot, &details, None).await;
    assert_eq!(s, StatusCode::OK, "{t}");
    t["access_token"].as_str().unwrap().to_owned()
}

/// A 2026-07-28 `tools/call` whose client declares `elicitation` (or nothing), with a request
/// state and the answer to Warden's elicitation when given.
fn modern_call(
    id: i64,
    tool: &str,
    args: Value,
    elicitation: Option<Value>,
    state: Option<&str>,
    answer: Option<&str>,
) -> Value {
    let caps = elicitation.map_or_else(|| json!({}), |e| json!({"elicitation": e}));
    let mut params = json!({"name": tool, "arguments": args,
        "_meta": {"io.modelcontextprotocol/protocolVersion": MODERN,
                  "io.modelcontextprotocol/clientCapabilities": caps,
                  "io.modelcontextprotocol/clientInfo": {"name": "agent", "version": "1"}}});
    if let Some(s) = state {
        params["requestState"] = s.into();
    }
    if let Some(a) = answer {
        params["inputResponses"] = json!({"warden_approval": {"action": a}});
    }
    json!({"jsonrpc": "2.0", "id": id, "method": "tools/call", "params": params})
}

fn url_only() -> Option<Value> {
    Some(json!({"url": {}}))
}

/// POSTs `msg` to `/mcp/tools` with `headers` (besides the token and content type): status and body.
async fn post(
    api: &Api,
    token: &str,
    headers: &[(&str, &str)],
    msg: &Value,
) -> (StatusCode, Option<String>, Value) {
    let mut req = Request::builder()
        .method(Method::POST)
        .uri("/mcp/tools")
        .header(header::ACCEPT, "application/json, text/event-stream")
        .header(header::AUTHORIZATION, format!("Bearer {token}"))
        .header(header::CONTENT_TYPE, "application/json");
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = api
        .app
        .clone()
        .oneshot(req.body(Body::from(msg.to_string())).unwrap())
        .await
        .unwrap();
    let status = resp.status();
    let session = resp
        .headers()
        .get("mcp-session-id")
        .map(|v| v.to_str().unwrap().to_owned());
    let bytes = http_body_util::BodyExt::collect(resp.into_body())
        .await
        .unwrap()
        .to_bytes();
    let body =
        serde_json::from_slice(&bytes).unwrap_or_else(|_| json!({"raw": String::from_utf8_lossy(&bytes)}));
    (status, session, body)
}

/// A conforming 2026-07-28 `tools/call`.
async fn modern(env: &Env, token: &str, msg: &Value) -> (StatusCode, Value) {
    let name = msg["params"]["name"].as_str().unwrap().to_owned();
    let (s, _, b) = post(
        &env.api,
        token,
        &[
            ("mcp-protocol-version", MODERN),
            ("mcp-method", "tools/call"),
            ("mcp-name", &name),
        ],
        msg,
    )
    .await;
    (s, b)
}

/// The `update` calls that reached the upstream.
fn executed(env: &Env, tool: &str) -> usize {
    env.hostile.executed().iter().filter(|e| e.tool == tool).count()
}

async fn approve(api: &Api, id: &str) {
    let ann = mint(
        &api.store,
        "ann@example.com",
        &[Role::Approver],
        chrono::Duration::hours(1),
    )
    .await;
    let (s, b) = api
        .call(
            Method::POST,
            &format!("/v1/approvals/{id}/approve"),
            Some(&ann),
            Some(json!({"comment": "fine"})),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
}

async fn deny(api: &Api, id: &str) {
    let ann = mint(
        &api.store,
        "ann@example.com",
        &[Role::Approver],
        chrono::Duration::hours(1),
    )
    .await;
    let (s, b) = api
        .call(
            Method::POST,
            &format!("/v1/approvals/{id}/deny"),
            Some(&ann),
            Some(json!({"comment": "no"})),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
}

/// The approval id and request state of an `InputRequiredResult` (asserting its shape).
fn input_required(v: &Value) -> (String, String) {
    let r = &v["result"];
    assert_eq!(r["resultType"], "input_required", "{v}");
    let approval = r["_meta"]["dev.warden/approval"]["approval"]["id"]
        .as_str()
        .unwrap_or_else(|| panic!("the approval: {v}"))
        .to_owned();
    let state = r["requestState"].as_str().expect("a request state").to_owned();
    assert!(!state.contains(&approval), "the state is opaque: {state}");
    (approval, state)
}

/// The decision entries whose reasons have one starting with `prefix`.
async fn recorded(api: &Api, prefix: &str) -> Vec<Value> {
    common::ledger_entries(api)
        .await
        .into_iter()
        .filter(|(k, b)| {
            k == "decision"
                && b["reasons"].as_array().is_some_and(|r| {
                    r.iter()
                        .any(|r| r.as_str().is_some_and(|r| r.starts_with(prefix)))
                })
        })
        .map(|(_, b)| b)
        .collect()
}

async fn a_modern_client_completes_an_approval_inside_the_protocol(api: Api) {
    let env = setup(api, Duration::from_millis(300)).await;
    let args = json!({"invoice": 17, "amount": 120});
    let (s, v) = modern(
        &env,
        &env.token,
        &modern_call(1, "update", args.clone(), url_only(), None, None),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let (approval, first) = input_required(&v);
    let ask = &v["result"]["inputRequests"]["warden_approval"];
    assert_eq!(ask["method"], "elicitation/create", "{v}");
    assert_eq!(ask["params"]["mode"], "url", "{v}");
    let url = ask["params"]["url"].as_str().unwrap();
    assert!(url.ends_with(&format!("/v1/approvals/{approval}")), "{url}");
    assert!(
        ask["params"]["message"].as_str().unwrap().contains("update"),
        "{v}"
    );
    assert_eq!(executed(&env, "update"), 0);

    // The user opened the approval; nobody decided yet: held (briefly here), then still waiting —
    // without asking the user again — with a new state.
    let (s, v) = modern(
        &env,
        &env.token,
        &modern_call(
            2,
            "update",
            args.clone(),
            url_only(),
            Some(&first),
            Some("accept"),
        ),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let (same, second) = input_required(&v);
    assert_eq!(same, approval, "the same approval request: {v}");
    assert_ne!(second, first, "a fresh state each round");
    assert!(v["result"].get("inputRequests").is_none(), "not asked again: {v}");
    assert_eq!(executed(&env, "update"), 0);

    approve(&env.api, &approval).await;
    let retry = modern_call(3, "update", args.clone(), url_only(), Some(&second), None);
    let (s, v) = modern(&env, &env.token, &retry).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["result"]["content"][0]["text"], "ran update", "{v}");
    assert_eq!(executed(&env, "update"), 1, "reached the upstream once");
    // What reached the upstream carries neither Warden's state nor the answer to its elicitation.
    let sent = env
        .hostile
        .seen()
        .into_iter()
        .map(|s| s.message())
        .find(|m| m["method"] == "tools/call")
        .unwrap();
    assert!(sent["params"].get("requestState").is_none(), "{sent}");
    assert!(sent["params"].get("inputResponses").is_none(), "{sent}");
    assert_eq!(sent["params"]["arguments"], args);

    // The same state again: refused, recorded, nothing forwarded.
    let (s, v) = modern(&env, &env.token, &retry).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["error"]["code"], -32602, "{v}");
    let m = v["error"]["message"].as_str().unwrap();
    assert!(m.contains("request-state-replayed"), "{v}");
    assert_eq!(executed(&env, "update"), 1);
    assert!(!recorded(&env.api, "request-state-replayed").await.is_empty());
    // The allow names the grant and the state it redeemed.
    let allows: Vec<Value> = common::ledger_entries(&env.api)
        .await
        .into_iter()
        .filter(|(k, b)| k == "decision" && b["outcome"] == "allow" && b["method"] == "tools/call")
        .map(|(_, b)| b)
        .collect();
    assert_eq!(allows.len(), 1, "{allows:?}");
    assert_eq!(allows[0]["approval"], approval.as_str(), "{allows:?}");
    assert_eq!(
        allows[0]["request_state"]["approval"],
        approval.as_str(),
        "{allows:?}"
    );
}

async fn request_states_for_anything_else_are_refused(api: Api) {
    let env = setup(api, Duration::ZERO).await;
    let args = json!({"invoice": 17});
    let (_, v) = modern(
        &env,
        &env.token,
        &modern_call(1, "update", args.clone(), url_only(), None, None),
    )
    .await;
    let (approval, state) = input_required(&v);
    approve(&env.api, &approval).await;
    let refused = |v: &Value, what: &str| {
        assert_eq!(v["error"]["code"], -32602, "{what}: {v}");
        v["error"]["message"].as_str().unwrap().to_owned()
    };

    // Altered.
    let mut bytes = state.clone().into_bytes();
    let at = bytes.len() - 3;
    bytes[at] = if bytes[at] == b'A' { b'B' } else { b'A' };
    let tampered = String::from_utf8(bytes).unwrap();
    let (_, v) = modern(
        &env,
        &env.token,
        &modern_call(
            2,
            "update",
            args.clone(),
            url_only(),
            Some(&tampered),
            Some("accept"),
        ),
    )
    .await;
    assert!(refused(&v, "tampered").contains("request-state-invalid"), "{v}");
    // Not Warden's at all, under Warden's prefix.
    let (_, v) = modern(
        &env,
        &env.token,
        &modern_call(
            3,
            "update",
            args.clone(),
            url_only(),
            Some("wdnq1.AAAA.BBBB"),
            None,
        ),
    )
    .await;
    assert!(refused(&v, "forged").contains("request-state-invalid"), "{v}");
    // Other arguments.
    let (_, v) = modern(
        &env,
        &env.token,
        &modern_call(
            4,
            "update",
            json!({"invoice": 18}),
            url_only(),
            Some(&state),
            Some("accept"),
        ),
    )
    .await;
    let m = refused(&v, "other arguments");
    assert!(
        m.contains("request-state-mismatch") && m.contains("other arguments"),
        "{v}"
    );
    // Another tool.
    let (_, v) = modern(
        &env,
        &env.token,
        &modern_call(
            5,
            "refund",
            args.clone(),
            url_only(),
            Some(&state),
            Some("accept"),
        ),
    )
    .await;
    let m = refused(&v, "another tool");
    assert!(
        m.contains("request-state-mismatch") && m.contains("another tool"),
        "{v}"
    );
    // Another task of the same agent.
    let other = task(&env.api, &env.bot).await;
    let (_, v) = modern(
        &env,
        &other,
        &modern_call(
            6,
            "update",
            args.clone(),
            url_only(),
            Some(&state),
            Some("accept"),
        ),
    )
    .await;
    let m = refused(&v, "another task");
    assert!(
        m.contains("request-state-mismatch") && m.contains("another task"),
        "{v}"
    );
    assert_eq!(
        executed(&env, "update") + executed(&env, "refund"),
        0,
        "nothing forwarded"
    );
    for reason in ["request-state-invalid", "request-state-mismatch"] {
        assert!(!recorded(&env.api, reason).await.is_empty(), "{reason} recorded");
    }
    // None of those spent it (they were refused before it was): the genuine retry goes through.
    let (_, v) = modern(
        &env,
        &env.token,
        &modern_call(7, "update", args, url_only(), Some(&state), Some("accept")),
    )
    .await;
    assert_eq!(v["result"]["content"][0]["text"], "ran update", "{v}");
    assert_eq!(executed(&env, "update"), 1);
}

async fn clients_without_url_elicitation_are_told_as_before(api: Api) {
    let env = setup(api, Duration::ZERO).await;
    // A 2026-07-28 client without elicitation: -32011 with the approval, as before.
    let (s, v) = modern(
        &env,
        &env.token,
        &modern_call(1, "update", json!({"n": 1}), None, None, None),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["error"]["code"], -32011, "{v}");
    assert!(v["error"]["data"]["approval"]["url"].as_str().is_some(), "{v}");
    // Form-only elicitation: the capability it lacks, named (400, -32021), with the approval.
    let (s, v) = modern(
        &env,
        &env.token,
        &modern_call(
            2,
            "update",
            json!({"n": 2}),
            Some(json!({"form": {}})),
            None,
            None,
        ),
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    assert_eq!(v["error"]["code"], -32021, "{v}");
    assert_eq!(
        v["error"]["data"]["requiredCapabilities"],
        json!({"elicitation": {"url": {}}}),
        "{v}"
    );
    assert!(v["error"]["data"]["approval"]["id"].as_str().is_some(), "{v}");
    // An empty elicitation object is form mode.
    let (s, v) = modern(
        &env,
        &env.token,
        &modern_call(3, "update", json!({"n": 2}), Some(json!({})), None, None),
    )
    .await;
    assert_eq!(
        (s, v["error"]["code"].as_i64()),
        (StatusCode::BAD_REQUEST, Some(-32021)),
        "{v}"
    );
    // A 2025-06-18 session: -32011.
    let init = json!({"jsonrpc": "2.0", "id": 1, "method": "initialize",
        "params": {"protocolVersion": "2025-06-18", "capabilities": {},
                   "clientInfo": {"name": "agent", "version": "1"}}});
    let (s, session, v) = post(
        &env.api,
        &env.token,
        &[("mcp-protocol-version", "2025-06-18")],
        &init,
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let session = session.expect("a session");
    let call = json!({"jsonrpc": "2.0", "id": 2, "method": "tools/call",
                      "params": {"name": "update", "arguments": {"n": 3}}});
    let (_, _, v) = post(
        &env.api,
        &env.token,
        &[
            ("mcp-protocol-version", "2025-06-18"),
            ("mcp-session-id", &session),
        ],
        &call,
    )
    .await;
    assert_eq!(v["error"]["code"], -32011, "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("approval request"),
        "{v}"
    );
    assert_eq!(executed(&env, "update"), 0);
}

async fn a_2025_11_25_session_with_url_elicitation_gets_url_elicitation_required(api: Api) {
    let env = setup(api, Duration::ZERO).await;
    let v1125 = [("mcp-protocol-version", "2025-11-25")];
    let init = json!({"jsonrpc": "2.0", "id": 1, "method": "initialize",
        "params": {"protocolVersion": "2025-11-25", "capabilities": {"elicitation": {"form": {}, "url": {}}},
                   "clientInfo": {"name": "agent", "version": "1"}}});
    let (s, session, v) = post(&env.api, &env.token, &v1125, &init).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let session = session.expect("a session");
    let call = json!({"jsonrpc": "2.0", "id": 2, "method": "tools/call",
                      "params": {"name": "update", "arguments": {"invoice": 5}}});
    let headers = [
        ("mcp-protocol-version", "2025-11-25"),
        ("mcp-session-id", session.as_str()),
    ];
    let (s, _, v) = post(&env.api, &env.token, &headers, &call).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["error"]["code"], -32042, "{v}");
    let e = &v["error"]["data"]["elicitations"][0];
    assert_eq!(e["mode"], "url", "{v}");
    let id = e["elicitationId"].as_str().unwrap().to_owned();
    assert_eq!(v["error"]["data"]["approval"]["id"], id.as_str(), "{v}");
    assert!(
        e["url"]
            .as_str()
            .unwrap()
            .ends_with(&format!("/v1/approvals/{id}")),
        "{v}"
    );
    assert_eq!(executed(&env, "update"), 0);
    // Another session's capabilities are its own: one without URL elicitation gets -32011.
    let plain = json!({"jsonrpc": "2.0", "id": 1, "method": "initialize",
        "params": {"protocolVersion": "2025-11-25", "capabilities": {"elicitation": {}},
                   "clientInfo": {"name": "agent", "version": "1"}}});
    let (_, other, _) = post(&env.api, &env.token, &v1125, &plain).await;
    let other = other.expect("a session");
    let (_, _, v) = post(
        &env.api,
        &env.token,
        &[("mcp-protocol-version", "2025-11-25"), ("mcp-session-id", &other)],
        &call,
    )
    .await;
    assert_eq!(v["error"]["code"], -32011, "{v}");
    // Approved: the retry is decided again and the grant allows it.
    approve(&env.api, &id).await;
    let (_, _, v) = post(&env.api, &env.token, &headers, &call).await;
    assert_eq!(v["result"]["content"][0]["text"], "ran update", "{v}");
    assert_eq!(executed(&env, "update"), 1);
}

async fn a_denied_approval_ends_the_retry(api: Api) {
    let env = setup(api, Duration::from_secs(10)).await;
    let args = json!({"invoice": 9});
    let (_, v) = modern(
        &env,
        &env.token,
        &modern_call(1, "update", args.clone(), url_only(), None, None),
    )
    .await;
    let (approval, state) = input_required(&v);
    // Denied while the retry is held: the retry ends at once with the denial, recorded.
    let api = Api {
        app: env.api.app.clone(),
        state: env.api.state.clone(),
        store: env.api.store.clone(),
        admin: env.api.admin.clone(),
        dir: tempfile::tempdir().unwrap(),
    };
    let id = approval.clone();
    let denier = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(500)).await;
        deny(&api, &id).await;
    });
    let started = std::time::Instant::now();
    let (_, v) = modern(
        &env,
        &env.token,
        &modern_call(2, "update", args, url_only(), Some(&state), Some("accept")),
    )
    .await;
    denier.await.unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "held only until decided"
    );
    assert_eq!(v["error"]["code"], -32010, "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("approval-denied"),
        "{v}"
    );
    assert!(!recorded(&env.api, "approval-denied").await.is_empty());
    assert_eq!(executed(&env, "update"), 0);
}

/// A request state is bound to the policy version that asked for the approval: once another set is
/// active, its retry is refused (-32602, recorded, nothing forwarded) and the agent must call
/// again, to be decided under the policy in force.
async fn a_request_state_from_another_policy_version_is_refused(api: Api) {
    let env = setup(api, Duration::ZERO).await;
    let args = json!({"invoice": 21});
    let (_, v) = modern(
        &env,
        &env.token,
        &modern_call(1, "update", args.clone(), url_only(), None, None),
    )
    .await;
    let (approval, state) = input_required(&v);
    approve(&env.api, &approval).await;
    // Another set becomes active (the default pack and one more, harmless forbid).
    let mut files = common::default_pack();
    files.insert(
        "zz_freeze.cedar".into(),
        "@id(\"freeze-nothing\")\nforbid (principal, action, resource) when { false };".into(),
    );
    let (s, b) = env
        .api
        .admin(
            Method::POST,
            "/v1/policies/activate",
            Some(json!({"files": files, "comment": "a new version"})),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let (_, v) = modern(
        &env,
        &env.token,
        &modern_call(2, "update", args, url_only(), Some(&state), Some("accept")),
    )
    .await;
    assert_eq!(v["error"]["code"], -32602, "{v}");
    let m = v["error"]["message"].as_str().unwrap_or_default();
    assert!(
        m.contains("request-state-mismatch") && m.contains("policy version"),
        "{v}"
    );
    assert_eq!(executed(&env, "update"), 0, "nothing forwarded");
    assert!(!recorded(&env.api, "request-state-mismatch").await.is_empty());
}
