//! Standard OAuth for agents through the real router, on SQLite and PostgreSQL: the MCP endpoints as
//! protected resources (RFC 9728 metadata, `resource_metadata` on 401), RFC 8707 resource-bound task
//! tokens, and the client-credentials grant with `private_key_jwt` (RFC 7523) — with every refusal a
//! security engineer would try.

#![allow(clippy::expect_used, clippy::unwrap_used)]

mod common;

use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use chrono::Utc;
use http_body_util::BodyExt as _;
use serde_json::{Value, json};
use tower::ServiceExt as _;
use warden_identity::SigningKey;

use common::agents::*;
use common::{Api, ISSUER, agent_body, ledger_entries};

api_tests!(
    metadata_documents_lead_a_client_to_the_token_endpoint,
    unauthenticated_mcp_answers_with_resource_metadata,
    client_credentials_with_default_intent_and_resource,
    client_id_may_be_the_name_and_scope_narrows_the_default,
    token_for_one_upstream_is_refused_at_another,
    resource_bound_token_is_refused_at_the_api,
    replayed_client_assertion_is_refused,
    another_agents_key_is_invalid_client,
    rotated_key_is_refused_without_kid,
    suspended_agent_is_refused,
    missing_default_intent_is_precise,
    bad_client_assertions_are_invalid_client,
    bad_resources_are_invalid_target,
    token_exchange_takes_a_resource_and_renewal_keeps_it,
);

const CLIENT_ASSERTION_TYPE: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

fn resource(upstream: &str) -> String {
    format!("{ISSUER}/mcp/{upstream}")
}

/// A client assertion as OAuth libraries make them: `{"alg":"EdDSA","typ":"JWT"}`, no `kid`.
fn client_assertion(seed: &[u8; 32], client_id: &str, aud: &str, jti: &str) -> String {
    let now = Utc::now().timestamp();
    signed(
        seed,
        &json!({"alg": "EdDSA", "typ": "JWT"}),
        &json!({"iss": client_id, "sub": client_id, "aud": aud, "iat": now, "exp": now + 300, "jti": jti}),
    )
}

fn signed(seed: &[u8; 32], header: &Value, claims: &Value) -> String {
    use base64::Engine as _;
    use ed25519_dalek::Signer as _;
    let b64 = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
    let input = format!(
        "{}.{}",
        b64(header.to_string().as_bytes()),
        b64(claims.to_string().as_bytes())
    );
    let sig = ed25519_dalek::SigningKey::from_bytes(seed).sign(input.as_bytes());
    format!("{input}.{}", b64(&sig.to_bytes()))
}

fn jti() -> String {
    uuid::Uuid::new_v4().to_string()
}

async fn client_credentials(api: &Api, extra: &[(&str, &str)]) -> (StatusCode, Value) {
    let mut pairs = vec![
        ("grant_type", "client_credentials"),
        ("client_assertion_type", CLIENT_ASSERTION_TYPE),
    ];
    pairs.extend_from_slice(extra);
    api.form("/v1/token", &pairs, &[]).await
}

/// A kid-less assertion by `agent` for itself, `aud` = the issuer (what the MCP SDK sends).
async fn cc(api: &Api, agent: &Enrolled, extra: &[(&str, &str)]) -> (StatusCode, Value) {
    let a = client_assertion(&agent.seed, &agent.spiffe, ISSUER, &jti());
    let mut pairs = vec![
        ("client_id", agent.spiffe.as_str()),
        ("client_assertion", a.as_str()),
    ];
    pairs.extend_from_slice(extra);
    client_credentials(api, &pairs).await
}

fn default_intent() -> Value {
    json!([{"type": "warden_task", "purpose": "answer support tickets", "task_type": "support",
            "upstreams": ["crm", "erp"], "tools": ["search", "update"], "datasets": []}])
}

/// Seeds owner, `crm` (mcp), `db`, and a second MCP upstream `erp`.
async fn setup(api: &Api) {
    seed(api).await;
    let (s, b) = api
        .admin(
            Method::POST,
            "/v1/upstreams",
            Some(json!({"name": "erp", "kind": "mcp", "url": "https://erp.example.com/mcp", "environment": "production",
                        "owner": "owner@example.com", "sensitivity": "confidential"})),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{b}");
}

async fn with_default(api: &Api, name: &str) -> Enrolled {
    let agent = enrolled(api, name, &["crm", "erp"]).await;
    let (s, b) = api
        .admin(
            Method::PATCH,
            &format!("/v1/agents/{name}"),
            Some(json!({"default_intent": default_intent()})),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(b["default_intent"][0]["task_type"], "support");
    agent
}

/// A request through the router, with its headers.
async fn send(api: &Api, req: Request<Body>) -> (StatusCode, axum::http::HeaderMap, Value) {
    let resp = api.app.clone().oneshot(req).await.expect("infallible");
    let status = resp.status();
    let headers = resp.headers().clone();
    let bytes = resp.into_body().collect().await.expect("body").to_bytes();
    (
        status,
        headers,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

/// `POST /mcp/{upstream}` with a body that is not JSON: past authentication it is a 400, so any 401
/// is the token's.
async fn mcp_post(
    api: &Api,
    upstream: &str,
    token: Option<&str>,
) -> (StatusCode, axum::http::HeaderMap, Value) {
    let mut req = Request::builder()
        .method(Method::POST)
        .uri(format!("/mcp/{upstream}"))
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::ACCEPT, "application/json, text/event-stream");
    if let Some(t) = token {
        req = req.header(header::AUTHORIZATION, format!("Bearer {t}"));
    }
    send(api, req.body(Body::from("not json")).expect("request")).await
}

fn www(headers: &axum::http::HeaderMap) -> String {
    headers
        .get(header::WWW_AUTHENTICATE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned()
}

async fn metadata_documents_lead_a_client_to_the_token_endpoint(api: Api) {
    setup(&api).await;
    let (s, prm) = api
        .call(
            Method::GET,
            "/.well-known/oauth-protected-resource/mcp/crm",
            None,
            None,
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{prm}");
    assert_eq!(prm["resource"], resource("crm"));
    assert_eq!(prm["authorization_servers"], json!([ISSUER]));
    assert_eq!(prm["bearer_methods_supported"], json!(["header"]));
    // Served for any well-formed name (registered or not: nothing to learn here), never for a bad one.
    let (s, prm) = api
        .call(
            Method::GET,
            "/.well-known/oauth-protected-resource/mcp/nosuch",
            None,
            None,
        )
        .await;
    assert_eq!(
        (s, prm["resource"].clone()),
        (StatusCode::OK, json!(resource("nosuch")))
    );
    let (s, _) = api
        .call(
            Method::GET,
            "/.well-known/oauth-protected-resource/mcp/Bad_Name",
            None,
            None,
        )
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);

    let (s, meta) = api
        .call(Method::GET, "/.well-known/oauth-authorization-server", None, None)
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(meta["issuer"], ISSUER);
    assert_eq!(meta["token_endpoint"], TOKEN_ENDPOINT);
    let has = |field: &str, v: &str| meta[field].as_array().expect(field).iter().any(|x| x == v);
    assert!(has("grant_types_supported", "client_credentials"), "{meta}");
    assert!(has(
        "grant_types_supported",
        "urn:ietf:params:oauth:grant-type:token-exchange"
    ));
    assert!(has("token_endpoint_auth_methods_supported", "private_key_jwt"));
    assert!(has("token_endpoint_auth_signing_alg_values_supported", "EdDSA"));
    assert_eq!(meta["authorization_response_iss_parameter_supported"], true);
    // The authorization endpoint OAuth libraries insist on exists and refuses, without redirecting.
    let (s, b) = api
        .call(
            Method::GET,
            "/oauth/authorize?response_type=code&redirect_uri=https://evil.example",
            None,
            None,
        )
        .await;
    assert_oauth(
        s,
        &b,
        StatusCode::BAD_REQUEST,
        "unsupported_response_type",
        "token",
    );
}

async fn unauthenticated_mcp_answers_with_resource_metadata(api: Api) {
    setup(&api).await;
    for upstream in ["crm", "x"] {
        let (s, h, b) = mcp_post(&api, upstream, None).await;
        assert_eq!(s, StatusCode::UNAUTHORIZED, "{b}");
        let w = www(&h);
        let url = format!("{ISSUER}/.well-known/oauth-protected-resource/mcp/{upstream}");
        assert!(w.starts_with("Bearer "), "{w}");
        assert!(w.contains(&format!("resource_metadata=\"{url}\"")), "{w}");
        assert!(w.contains("error=\"invalid_token\""), "{w}");
        // The URL serves metadata naming exactly that resource.
        let path = url.strip_prefix(ISSUER).expect("ours");
        let (s, prm) = api.call(Method::GET, path, None, None).await;
        assert_eq!(
            (s, prm["resource"].clone()),
            (StatusCode::OK, json!(resource(upstream)))
        );
    }
    // A garbage token gets the same pointer.
    let (s, h, _) = mcp_post(&api, "crm", Some("not.a.token")).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    assert!(www(&h).contains("resource_metadata="), "{}", www(&h));
}

async fn client_credentials_with_default_intent_and_resource(api: Api) {
    setup(&api).await;
    let bot = with_default(&api, "bot").await;
    let crm = resource("crm");
    let (s, t) = cc(&api, &bot, &[("resource", &crm)]).await;
    assert_eq!(s, StatusCode::OK, "{t}");
    assert_eq!(t["token_type"], "Bearer");
    assert!(t["expires_in"].as_i64().expect("expires_in") > 0);
    // The default intent, narrowed to the resource's upstream.
    assert_eq!(t["authorization_details"][0]["upstreams"], json!(["crm"]));
    assert_eq!(
        t["authorization_details"][0]["tools"],
        json!(["search", "update"])
    );
    let token = t["access_token"].as_str().expect("token").to_owned();
    let claims = claims_of(&token);
    assert_eq!(claims["aud"], crm);
    assert_eq!(claims["sub"], bot.spiffe);
    // Accepted at its resource (past authentication the non-JSON body is a 400).
    let (s, _, b) = mcp_post(&api, "crm", Some(&token)).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{b}");
    let entries = ledger_entries(&api).await;
    let kinds: Vec<&str> = entries.iter().map(|(k, _)| k.as_str()).collect();
    let start = kinds
        .iter()
        .rposition(|k| *k == "token_issued")
        .expect("token_issued");
    assert_eq!(kinds[start - 1], "decision");
    assert_eq!(entries[start].1["audience"], crm);
    assert_eq!(
        entries[start - 1].1["outcome"],
        "allow",
        "{}",
        entries[start - 1].1
    );

    // A second grant (the client's token expired) continues the same live task: decided again,
    // recorded as a renewal; the MCP session bound to the task survives.
    let (s, t2) = cc(&api, &bot, &[("resource", &crm)]).await;
    assert_eq!(s, StatusCode::OK, "{t2}");
    assert_eq!(t2["task_id"], t["task_id"]);
    let entries = ledger_entries(&api).await;
    let (last_kind, last) = entries.last().expect("entries");
    assert_eq!(last_kind, "token_renewed");
    assert_eq!(last["grant"], "client_credentials");
    assert_eq!(entries[entries.len() - 2].0, "decision");
    // A different resource is a different intent: a new task.
    let (s, t3) = cc(&api, &bot, &[("resource", &resource("erp"))]).await;
    assert_eq!(s, StatusCode::OK, "{t3}");
    assert_ne!(t3["task_id"], t["task_id"]);
    // No resource: the issuer as audience, the whole default intent.
    let (s, t4) = cc(&api, &bot, &[]).await;
    assert_eq!(s, StatusCode::OK, "{t4}");
    assert_eq!(
        claims_of(t4["access_token"].as_str().expect("token"))["aud"],
        ISSUER
    );
    assert_eq!(t4["authorization_details"][0]["upstreams"], json!(["crm", "erp"]));
    // After the task ends, the next grant starts a new one.
    let (s, b) = api
        .admin(
            Method::POST,
            &format!("/v1/tasks/{}/end", t["task_id"].as_str().expect("id")),
            None,
        )
        .await;
    assert!(s.is_success(), "{s} {b}");
    let (s, t5) = cc(&api, &bot, &[("resource", &crm)]).await;
    assert_eq!(s, StatusCode::OK, "{t5}");
    assert_ne!(t5["task_id"], t["task_id"]);
}

async fn client_id_may_be_the_name_and_scope_narrows_the_default(api: Api) {
    setup(&api).await;
    let bot = with_default(&api, "bot").await;
    let a = client_assertion(&bot.seed, "bot", &format!("{ISSUER}/"), &jti());
    let (s, t) = client_credentials(
        &api,
        &[
            ("client_id", "bot"),
            ("client_assertion", &a),
            ("scope", "tool:search upstream:crm"),
        ],
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{t}");
    assert_eq!(t["authorization_details"][0]["tools"], json!(["search"]));
    assert_eq!(t["authorization_details"][0]["upstreams"], json!(["crm"]));
    // Without client_id the assertion's iss names the client; aud may be the token endpoint.
    let a = client_assertion(&bot.seed, &bot.spiffe, TOKEN_ENDPOINT, &jti());
    let (s, t) = client_credentials(&api, &[("client_assertion", &a)]).await;
    assert_eq!(s, StatusCode::OK, "{t}");
    // A scope outside the default is refused naming it.
    let (s, b) = cc(&api, &bot, &[("scope", "tool:delete_everything")]).await;
    assert_oauth(
        s,
        &b,
        StatusCode::BAD_REQUEST,
        "invalid_scope",
        "delete_everything",
    );
    // authorization_details are taken as asked (policy decides).
    let (s, t) = cc(
        &api,
        &bot,
        &[("authorization_details", &intent(&["crm"], &["search"]))],
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{t}");
    assert_eq!(t["authorization_details"][0]["task_type"], "billing");
}

async fn token_for_one_upstream_is_refused_at_another(api: Api) {
    setup(&api).await;
    let bot = with_default(&api, "bot").await;
    let (s, t) = cc(&api, &bot, &[("resource", &resource("crm"))]).await;
    assert_eq!(s, StatusCode::OK, "{t}");
    let token = t["access_token"].as_str().expect("token");
    for other in ["erp", "db", "nosuch"] {
        let (s, h, b) = mcp_post(&api, other, Some(token)).await;
        assert_oauth(s, &b, StatusCode::UNAUTHORIZED, "invalid_token", &resource("crm"));
        assert!(
            b["error_description"]
                .as_str()
                .expect("desc")
                .contains(&resource(other)),
            "{b}"
        );
        let w = www(&h);
        assert!(
            w.contains(&format!(
                "resource_metadata=\"{ISSUER}/.well-known/oauth-protected-resource/mcp/{other}\""
            )),
            "{w}"
        );
    }
    // An unbound token (token exchange without `resource`) still works at every endpoint.
    let (plain, _) = started(&api, &bot, &["crm"]).await;
    let (s, _, b) = mcp_post(&api, "crm", Some(&plain)).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{b}");
}

async fn resource_bound_token_is_refused_at_the_api(api: Api) {
    setup(&api).await;
    let bot = with_default(&api, "bot").await;
    let (_, t) = cc(&api, &bot, &[("resource", &resource("crm"))]).await;
    let token = t["access_token"].as_str().expect("token");
    let (s, b) = task_with(&api, token).await;
    assert_oauth(s, &b, StatusCode::UNAUTHORIZED, "invalid_token", "resource");
    let (s, b) = api
        .with_headers(
            Method::POST,
            "/v1/authorize",
            &[("authorization", &format!("Bearer {token}"))],
            Some(json!({"action": "read", "resource": {"upstream": "crm", "tool": "search"}})),
        )
        .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED, "{b}");
}

async fn replayed_client_assertion_is_refused(api: Api) {
    setup(&api).await;
    let bot = with_default(&api, "bot").await;
    let a = client_assertion(&bot.seed, &bot.spiffe, ISSUER, &jti());
    let pairs = [
        ("client_id", bot.spiffe.as_str()),
        ("client_assertion", a.as_str()),
    ];
    let (s, t) = client_credentials(&api, &pairs).await;
    assert_eq!(s, StatusCode::OK, "{t}");
    let (s, b) = client_credentials(&api, &pairs).await;
    assert_oauth(s, &b, StatusCode::UNAUTHORIZED, "invalid_client", "replay");
    // The same jti as a token-exchange assertion is spent too (one namespace per agent).
    let j = jti();
    let a = client_assertion(&bot.seed, &bot.spiffe, ISSUER, &j);
    let (s, _) = client_credentials(&api, &[("client_assertion", &a)]).await;
    assert_eq!(s, StatusCode::OK);
    let now = Utc::now().timestamp();
    let again = hand_signed(
        &bot,
        json!({"iss": bot.spiffe, "sub": bot.spiffe, "aud": ISSUER, "iat": now, "exp": now + 60, "jti": j}),
    );
    let (s, b) = api
        .form(
            "/v1/token",
            &[
                ("grant_type", "urn:ietf:params:oauth:grant-type:token-exchange"),
                ("subject_token", &again),
                ("subject_token_type", "urn:ietf:params:oauth:token-type:jwt"),
                ("authorization_details", &intent(&["crm"], &[])),
            ],
            &[],
        )
        .await;
    assert_oauth(s, &b, StatusCode::UNAUTHORIZED, "invalid_grant", "replay");
}

async fn another_agents_key_is_invalid_client(api: Api) {
    setup(&api).await;
    let bot = with_default(&api, "bot").await;
    let evil = with_default(&api, "evil").await;
    // evil signs an assertion claiming to be bot, with and without its own kid.
    let a = client_assertion(&evil.seed, &bot.spiffe, ISSUER, &jti());
    let (s, b) = client_credentials(&api, &[("client_id", &bot.spiffe), ("client_assertion", &a)]).await;
    assert_oauth(s, &b, StatusCode::UNAUTHORIZED, "invalid_client", "signature");
    let now = Utc::now().timestamp();
    let with_kid = signed(
        &evil.seed,
        &json!({"alg": "EdDSA", "typ": "JWT", "kid": evil.key.kid()}),
        &json!({"iss": bot.spiffe, "sub": bot.spiffe, "aud": ISSUER, "iat": now, "exp": now + 60, "jti": jti()}),
    );
    let (s, b) = client_credentials(
        &api,
        &[("client_id", &bot.spiffe), ("client_assertion", &with_kid)],
    )
    .await;
    assert_oauth(s, &b, StatusCode::UNAUTHORIZED, "invalid_client", "kid");
    // evil's own valid assertion, sent under bot's client_id: iss is not the client_id.
    let a = client_assertion(&evil.seed, &evil.spiffe, ISSUER, &jti());
    let (s, b) = client_credentials(&api, &[("client_id", &bot.spiffe), ("client_assertion", &a)]).await;
    assert_oauth(s, &b, StatusCode::UNAUTHORIZED, "invalid_client", "");
    // Nothing was issued to anyone.
    let (_, listed) = api.admin(Method::GET, "/v1/tasks?agent=bot", None).await;
    assert_eq!(listed["tasks"], json!([]));
}

async fn rotated_key_is_refused_without_kid(api: Api) {
    setup(&api).await;
    let bot = with_default(&api, "bot").await;
    let (s, jt) = api.admin(Method::POST, "/v1/agents/bot/join-token", None).await;
    assert_eq!(s, StatusCode::CREATED, "{jt}");
    let seed2 = rand_seed();
    let key2 = SigningKey::from_seed(&seed2, Utc::now());
    let (s, b) = api
        .call(
            Method::POST,
            "/v1/enroll",
            None,
            Some(json!({"join_token": jt["join_token"], "public_key": key2.public().to_jwk()})),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    api.admin(Method::POST, "/v1/agents/bot/activate", None).await;
    let (s, b) = cc(&api, &bot, &[]).await;
    assert_oauth(s, &b, StatusCode::UNAUTHORIZED, "invalid_client", "signature");
    let rotated = Enrolled {
        spiffe: bot.spiffe.clone(),
        key: key2,
        seed: seed2,
    };
    let (s, t) = cc(&api, &rotated, &[]).await;
    assert_eq!(s, StatusCode::OK, "{t}");
}

async fn suspended_agent_is_refused(api: Api) {
    setup(&api).await;
    let bot = with_default(&api, "bot").await;
    let (s, _) = api.admin(Method::POST, "/v1/agents/bot/suspend", None).await;
    assert_eq!(s, StatusCode::OK);
    let (s, b) = cc(&api, &bot, &[]).await;
    assert_oauth(s, &b, StatusCode::UNAUTHORIZED, "invalid_client", "suspended");
    // Unknown agents too, by either form of id.
    for id in ["spiffe://warden.local/agent/ghost", "ghost", "not a name"] {
        let a = client_assertion(&bot.seed, id, ISSUER, &jti());
        let (s, b) = client_credentials(&api, &[("client_id", id), ("client_assertion", &a)]).await;
        assert_oauth(
            s,
            &b,
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            "not a registered agent",
        );
    }
}

async fn missing_default_intent_is_precise(api: Api) {
    setup(&api).await;
    let bot = enrolled(&api, "bot", &["crm"]).await;
    let (s, b) = cc(&api, &bot, &[]).await;
    assert_oauth(
        s,
        &b,
        StatusCode::BAD_REQUEST,
        "invalid_scope",
        "--default-intent",
    );
    let (s, b) = cc(&api, &bot, &[("scope", "tool:search")]).await;
    assert_oauth(s, &b, StatusCode::BAD_REQUEST, "invalid_scope", "default intent");
    // A bad default intent is refused at the API, naming the field; null removes it.
    let (s, b) = api
        .admin(
            Method::PATCH,
            "/v1/agents/bot",
            Some(json!({"default_intent": [{"type": "warden_task"}]})),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{b}");
    assert_eq!(b["field"], "default_intent", "{b}");
    let (s, b) = api
        .admin(
            Method::PATCH,
            "/v1/agents/bot",
            Some(json!({"default_intent": "tools please"})),
        )
        .await;
    assert_eq!(
        (s, b["field"].clone()),
        (StatusCode::BAD_REQUEST, json!("default_intent")),
        "{b}"
    );
    let (s, _) = api
        .admin(
            Method::PATCH,
            "/v1/agents/bot",
            Some(json!({"default_intent": default_intent()})),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    let (s, shown) = api.admin(Method::GET, "/v1/agents/bot", None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(shown["default_intent"][0]["purpose"], "answer support tickets");
    let (s, b) = api
        .admin(
            Method::PATCH,
            "/v1/agents/bot",
            Some(json!({"default_intent": null})),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert!(b.get("default_intent").is_none(), "{b}");
    let (s, b) = cc(&api, &bot, &[]).await;
    assert_oauth(s, &b, StatusCode::BAD_REQUEST, "invalid_scope", "default intent");
}

async fn bad_client_assertions_are_invalid_client(api: Api) {
    setup(&api).await;
    let bot = with_default(&api, "bot").await;
    let now = Utc::now().timestamp();
    let claims = |aud: &str, iat: i64, exp: i64| json!({"iss": bot.spiffe, "sub": bot.spiffe, "aud": aud, "iat": iat, "exp": exp, "jti": jti()});
    let eddsa = json!({"alg": "EdDSA", "typ": "JWT"});
    let cases: Vec<(String, &str)> = vec![
        (
            signed(
                &bot.seed,
                &eddsa,
                &claims("https://elsewhere.example", now, now + 60),
            ),
            "audience",
        ),
        (
            signed(&bot.seed, &eddsa, &claims(ISSUER, now - 600, now - 300)),
            "expired",
        ),
        (
            signed(&bot.seed, &eddsa, &claims(ISSUER, now, now + 3600)),
            "lifetime",
        ),
        (
            signed(
                &bot.seed,
                &json!({"alg": "RS256", "typ": "JWT"}),
                &claims(ISSUER, now, now + 60),
            ),
            "RS256",
        ),
        (
            signed(&bot.seed, &json!({"alg": "none"}), &claims(ISSUER, now, now + 60)),
            "none",
        ),
        (
            signed(
                &bot.seed,
                &eddsa,
                &json!({"iss": bot.spiffe, "sub": "spiffe://warden.local/agent/other", "aud": ISSUER, "iat": now, "exp": now + 60, "jti": jti()}),
            ),
            "sub",
        ),
        (
            signed(
                &bot.seed,
                &eddsa,
                &json!({"iss": bot.spiffe, "sub": bot.spiffe, "aud": ISSUER, "iat": now, "exp": now + 60}),
            ),
            "jti",
        ),
        ("garbage".to_owned(), ""),
    ];
    for (assertion, says) in cases {
        let (s, b) = client_credentials(
            &api,
            &[("client_id", &bot.spiffe), ("client_assertion", &assertion)],
        )
        .await;
        assert_oauth(s, &b, StatusCode::UNAUTHORIZED, "invalid_client", says);
        let desc = b["error_description"].as_str().unwrap_or_default();
        assert!(
            !desc.contains(&assertion) || assertion == "garbage",
            "the assertion is echoed: {desc}"
        );
    }
    // Request errors name the parameter.
    let a = client_assertion(&bot.seed, &bot.spiffe, ISSUER, &jti());
    let (s, b) = api
        .form(
            "/v1/token",
            &[("grant_type", "client_credentials"), ("client_assertion", &a)],
            &[],
        )
        .await;
    assert_oauth(
        s,
        &b,
        StatusCode::BAD_REQUEST,
        "invalid_request",
        "client_assertion_type",
    );
    let (s, b) = cc(&api, &bot, &[("client_secret", "hunter2hunter2")]).await;
    assert_oauth(s, &b, StatusCode::BAD_REQUEST, "invalid_request", "client_secret");
    let (s, b) = client_credentials(&api, &[("client_id", &bot.spiffe)]).await;
    assert_oauth(
        s,
        &b,
        StatusCode::BAD_REQUEST,
        "invalid_request",
        "client_assertion",
    );
    let (s, b) = api.form("/v1/token", &[("grant_type", "password")], &[]).await;
    assert_oauth(
        s,
        &b,
        StatusCode::BAD_REQUEST,
        "unsupported_grant_type",
        "client_credentials",
    );
    // Every refusal is in the ledger; no assertion is.
    let entries = ledger_entries(&api).await;
    assert!(
        entries
            .iter()
            .any(|(k, b)| k == "decision" && b.to_string().contains("invalid_client"))
    );
    assert!(
        !entries.iter().any(|(_, b)| b.to_string().contains(&a)),
        "an assertion reached the ledger"
    );
}

async fn bad_resources_are_invalid_target(api: Api) {
    setup(&api).await;
    let bot = with_default(&api, "bot").await;
    for (r, says) in [
        ("https://evil.example/mcp/crm", "not one of Warden's"),
        ("http://warden.test/mcp/crm/", "not one of Warden's"),
        ("http://warden.test/mcp/crm?x=1", "not one of Warden's"),
        ("http://warden.test/v1/token", "not one of Warden's"),
        ("http://warden.test/mcp/nosuch", "no upstream `nosuch`"),
        ("http://warden.test/mcp/db", "does not name upstream `db`"),
    ] {
        let (s, b) = cc(&api, &bot, &[("resource", r)]).await;
        assert_oauth(s, &b, StatusCode::BAD_REQUEST, "invalid_target", says);
    }
}

async fn token_exchange_takes_a_resource_and_renewal_keeps_it(api: Api) {
    setup(&api).await;
    let bot = enrolled(&api, "bot", &["crm", "erp"]).await;
    let a = assertion(&bot);
    let crm = resource("crm");
    let (s, t) = api
        .form(
            "/v1/token",
            &[
                ("grant_type", "urn:ietf:params:oauth:grant-type:token-exchange"),
                ("subject_token", a.expose()),
                ("subject_token_type", "urn:ietf:params:oauth:token-type:jwt"),
                ("authorization_details", &intent(&["crm", "erp"], &["search"])),
                ("resource", &crm),
            ],
            &[],
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{t}");
    let token = t["access_token"].as_str().expect("token");
    assert_eq!(claims_of(token)["aud"], crm);
    assert_eq!(t["authorization_details"][0]["upstreams"], json!(["crm"]));
    // Renewal at the token endpoint takes the bound token and keeps its audience.
    let (s, r) = exchange(&api, token, &bot, None, None).await;
    assert_eq!(s, StatusCode::OK, "{r}");
    assert_eq!(claims_of(r["access_token"].as_str().expect("token"))["aud"], crm);
    let (s, b) = api
        .form(
            "/v1/token",
            &[
                ("grant_type", "urn:ietf:params:oauth:grant-type:token-exchange"),
                ("subject_token", token),
                ("subject_token_type", "urn:warden:params:oauth:token-type:task"),
                ("actor_token", assertion(&bot).expose()),
                ("actor_token_type", "urn:ietf:params:oauth:token-type:jwt"),
                ("resource", &resource("erp")),
            ],
            &[],
        )
        .await;
    assert_oauth(s, &b, StatusCode::BAD_REQUEST, "invalid_target", "audience");
    let _ = agent_body("unused");
}
