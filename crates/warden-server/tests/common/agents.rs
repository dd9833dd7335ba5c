//! Agents for router tests: registered, enrolled with their own key, activated; assertions, task
//! starts and token exchanges as an agent would make them.

#![allow(dead_code, clippy::expect_used, clippy::unwrap_used)]

use axum::http::{Method, StatusCode};
use chrono::Utc;
use serde_json::{Value, json};
use warden_core::Secret;
use warden_identity::{
    GRANT_TYPE_TOKEN_EXCHANGE, SigningKey, TOKEN_TYPE_JWT, TOKEN_TYPE_TASK, create_assertion,
};

use super::{Api, ISSUER, agent_body};

pub const TOKEN_ENDPOINT: &str = "http://warden.test/v1/token";

/// An enrolled, active agent and its key (and the key's seed, to sign by hand).
pub struct Enrolled {
    pub spiffe: String,
    pub key: SigningKey,
    pub seed: [u8; 32],
}

/// A compact JWS signed with the agent's key, for claims the library helpers refuse to produce.
pub fn hand_signed(agent: &Enrolled, claims: Value) -> String {
    use base64::Engine as _;
    use ed25519_dalek::Signer as _;
    let b64 = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
    let header = json!({"alg": "EdDSA", "typ": "JWT", "kid": agent.key.kid()});
    let input = format!(
        "{}.{}",
        b64(header.to_string().as_bytes()),
        b64(claims.to_string().as_bytes())
    );
    let sig = ed25519_dalek::SigningKey::from_bytes(&agent.seed).sign(input.as_bytes());
    format!("{input}.{}", b64(&sig.to_bytes()))
}

pub async fn enrolled(api: &Api, name: &str, upstreams: &[&str]) -> Enrolled {
    let mut body = agent_body(name);
    body["allowed_upstreams"] = json!(upstreams);
    let (s, reg) = api.admin(Method::POST, "/v1/agents", Some(body)).await;
    assert_eq!(s, StatusCode::CREATED, "{reg}");
    let join = reg["join_token"].as_str().expect("join token").to_owned();
    assert!(join.starts_with("wdn_jt_"));
    let seed: [u8; 32] = rand_seed();
    let key = SigningKey::from_seed(&seed, Utc::now());
    let (s, e) = api
        .call(
            Method::POST,
            "/v1/enroll",
            None,
            Some(json!({"join_token": join, "public_key": key.public().to_jwk()})),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{e}");
    assert_eq!(e["kid"], key.kid());
    assert_eq!(e["issuer"], ISSUER);
    let (s, a) = api
        .admin(Method::POST, &format!("/v1/agents/{name}/activate"), None)
        .await;
    assert_eq!(s, StatusCode::OK, "{a}");
    Enrolled {
        spiffe: reg["spiffe_id"].as_str().expect("spiffe").into(),
        key,
        seed,
    }
}

pub fn rand_seed() -> [u8; 32] {
    *uuid::Uuid::new_v4()
        .as_bytes()
        .repeat(2)
        .first_chunk::<32>()
        .expect("32 bytes")
}

pub async fn seed(api: &Api) {
    api.seed().await;
    let (s, b) = api
        .admin(
            Method::POST,
            "/v1/upstreams",
            Some(json!({"name": "db", "kind": "postgres", "url": "postgres://db.internal/app", "environment": "production",
                        "owner": "owner@example.com", "sensitivity": "regulated"})),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{b}");
}

pub fn assertion(agent: &Enrolled) -> Secret<String> {
    create_assertion(&agent.key, &agent.spiffe, TOKEN_ENDPOINT, Utc::now(), 60).expect("assertion")
}

pub fn intent(upstreams: &[&str], tools: &[&str]) -> String {
    json!([{"type": "warden_task", "purpose": "reconcile invoices", "task_type": "billing",
            "upstreams": upstreams, "tools": tools, "datasets": ["invoices"]}])
    .to_string()
}

pub async fn start(api: &Api, agent: &Enrolled, details: &str, dpop: Option<&str>) -> (StatusCode, Value) {
    let a = assertion(agent);
    let headers: Vec<(&str, &str)> = dpop.map(|p| vec![("dpop", p)]).unwrap_or_default();
    api.form(
        "/v1/token",
        &[
            ("grant_type", GRANT_TYPE_TOKEN_EXCHANGE),
            ("subject_token", a.expose()),
            ("subject_token_type", TOKEN_TYPE_JWT),
            ("authorization_details", details),
        ],
        &headers,
    )
    .await
}

pub async fn started(api: &Api, agent: &Enrolled, upstreams: &[&str]) -> (String, String) {
    let (s, t) = start(api, agent, &intent(upstreams, &["search", "update"]), None).await;
    assert_eq!(s, StatusCode::OK, "{t}");
    (
        t["access_token"].as_str().expect("token").to_owned(),
        t["task_id"].as_str().expect("task").to_owned(),
    )
}

pub async fn exchange(
    api: &Api,
    subject: &str,
    actor: &Enrolled,
    details: Option<&str>,
    dpop: Option<&str>,
) -> (StatusCode, Value) {
    exchange_with_actor_dpop(api, subject, actor, details, dpop, None).await
}

/// [`exchange`] with a proof of the delegated token's key in `actor_dpop`.
pub async fn exchange_with_actor_dpop(
    api: &Api,
    subject: &str,
    actor: &Enrolled,
    details: Option<&str>,
    dpop: Option<&str>,
    actor_dpop: Option<&str>,
) -> (StatusCode, Value) {
    let a = assertion(actor);
    let mut pairs = vec![
        ("grant_type", GRANT_TYPE_TOKEN_EXCHANGE),
        ("subject_token", subject),
        ("subject_token_type", TOKEN_TYPE_TASK),
        ("actor_token", a.expose()),
        ("actor_token_type", TOKEN_TYPE_JWT),
    ];
    if let Some(d) = details {
        pairs.push(("authorization_details", d));
    }
    if let Some(p) = actor_dpop {
        pairs.push(("actor_dpop", p));
    }
    let headers: Vec<(&str, &str)> = dpop.map(|p| vec![("dpop", p)]).unwrap_or_default();
    api.form("/v1/token", &pairs, &headers).await
}

pub async fn task_with(api: &Api, token: &str) -> (StatusCode, Value) {
    api.with_headers(
        Method::GET,
        "/v1/task",
        &[("authorization", &format!("Bearer {token}"))],
        None,
    )
    .await
}

pub fn assert_oauth(
    status: StatusCode,
    body: &Value,
    want_status: StatusCode,
    want_code: &str,
    want_text: &str,
) {
    assert_eq!(status, want_status, "{body}");
    assert_eq!(body["error"], want_code, "{body}");
    let desc = body["error_description"].as_str().unwrap_or_default();
    assert!(desc.contains(want_text), "`{desc}` lacks `{want_text}`");
}

pub fn claims_of(token: &str) -> Value {
    use base64::Engine as _;
    let payload = token.split('.').nth(1).expect("payload");
    serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload)
            .expect("b64"),
    )
    .expect("json")
}
