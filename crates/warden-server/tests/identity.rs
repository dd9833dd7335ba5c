//! Agent identity and task credentials through the real router, on SQLite and PostgreSQL: enrollment,
//! RFC 8693 token exchange (start, renew, delegate), DPoP binding, revocation, key rotation, and every
//! refusal the issue lists — each answered with an OAuth error body and nothing issued.

#![allow(clippy::expect_used, clippy::unwrap_used)]

mod common;

use axum::http::{Method, StatusCode};
use chrono::{Duration, Utc};
use serde_json::{Value, json};
use warden_core::TaskState;
use warden_identity::{
    GRANT_TYPE_TOKEN_EXCHANGE, KeyLookup, PublicKey, SigningKey, TOKEN_TYPE_JWT, create_assertion,
    create_dpop_proof,
};

use common::agents::*;
use common::{Api, ISSUER, agent_body};

api_tests!(
    enroll_start_use_end,
    token_verifies_with_only_the_jwks,
    join_token_is_single_use_and_checked,
    bad_assertions_are_refused,
    inactive_agents_get_nothing,
    task_outside_allowed_upstreams_is_denied,
    renewal_keeps_the_task_and_its_end,
    revocation_is_immediate,
    delegation_narrows_records_and_cascades,
    delegation_beyond_depth_or_scope_is_refused,
    dpop_binds_the_token,
    delegation_from_a_dpop_bound_parent_stays_dpop_bound,
    key_rotation_keeps_old_tokens_valid,
    removing_the_last_owner_kills_credentials,
    malformed_token_requests,
    recorded_intents_show_the_real_maximum_duration,
);

async fn task_dpop(api: &Api, auth: &str, proof: &str) -> (StatusCode, Value) {
    api.with_headers(
        Method::GET,
        "/v1/task",
        &[("authorization", auth), ("dpop", proof)],
        None,
    )
    .await
}

async fn enroll_start_use_end(api: Api) {
    seed(&api).await;
    let bot = enrolled(&api, "bot", &["crm"]).await;
    let (s, t) = start(&api, &bot, &intent(&["crm"], &["search"]), None).await;
    assert_eq!(s, StatusCode::OK, "{t}");
    assert_eq!(t["token_type"], "Bearer");
    assert!(t["expires_in"].as_i64().expect("expires_in") <= 300);
    assert_eq!(t["authorization_details"][0]["upstreams"], json!(["crm"]));
    let token = t["access_token"].as_str().expect("token");
    let claims = claims_of(token);
    assert_eq!(claims["sub"], "spiffe://warden.local/agent/bot");
    assert_eq!(
        (claims["iss"].as_str(), claims["aud"].as_str()),
        (Some(ISSUER), Some(ISSUER))
    );
    assert!(claims["exp"].as_i64().expect("exp") - claims["iat"].as_i64().expect("iat") <= 300);
    let (s, cur) = task_with(&api, token).await;
    assert_eq!(s, StatusCode::OK, "{cur}");
    assert_eq!(cur["task"]["id"], t["task_id"]);
    assert_eq!(cur["task"]["state"], "active");
    let (s, ended) = api
        .with_headers(
            Method::POST,
            "/v1/task/end",
            &[("authorization", &format!("Bearer {token}"))],
            None,
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{ended}");
    let (s, b) = task_with(&api, token).await;
    assert_oauth(s, &b, StatusCode::UNAUTHORIZED, "invalid_token", "ended");
    let (_, listed) = api.admin(Method::GET, "/v1/tasks?agent=bot", None).await;
    assert_eq!(listed["tasks"][0]["state"], "ended");
}

async fn token_verifies_with_only_the_jwks(api: Api) {
    seed(&api).await;
    let bot = enrolled(&api, "bot", &["crm"]).await;
    let (token, _) = started(&api, &bot, &["crm"]).await;
    let (s, jwks) = api.call(Method::GET, "/.well-known/jwks.json", None, None).await;
    assert_eq!(s, StatusCode::OK);
    let keys: std::collections::HashMap<String, PublicKey> = jwks["keys"]
        .as_array()
        .expect("keys")
        .iter()
        .map(|k| {
            let p = PublicKey::from_jwk(k).expect("jwk");
            (p.kid().to_owned(), p)
        })
        .collect();
    let claims =
        warden_identity::verify_task_token(&token, &keys, ISSUER, ISSUER, Utc::now()).expect("verifies");
    assert!(keys.public_key(&claims.sub).is_none());
    let (s, meta) = api
        .call(Method::GET, "/.well-known/oauth-authorization-server", None, None)
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(meta["token_endpoint"], TOKEN_ENDPOINT);
    assert_eq!(meta["warden_trust_domain"], "warden.local");
}

async fn join_token_is_single_use_and_checked(api: Api) {
    seed(&api).await;
    let (_, reg) = api
        .admin(Method::POST, "/v1/agents", Some(agent_body("bot")))
        .await;
    let join = reg["join_token"].as_str().expect("join").to_owned();
    let key = SigningKey::generate(Utc::now());
    let body = json!({"join_token": join, "public_key": key.public().to_jwk()});
    let (s, _) = api
        .call(Method::POST, "/v1/enroll", None, Some(body.clone()))
        .await;
    assert_eq!(s, StatusCode::OK);
    let (s, b) = api.call(Method::POST, "/v1/enroll", None, Some(body)).await;
    assert_oauth(
        s,
        &b,
        StatusCode::UNAUTHORIZED,
        "invalid_grant",
        "already been used",
    );
    let (s, b) = api
        .call(
            Method::POST,
            "/v1/enroll",
            None,
            Some(json!({"join_token": "wdn_jt_short", "public_key": key.public().to_jwk()})),
        )
        .await;
    assert_oauth(s, &b, StatusCode::UNAUTHORIZED, "invalid_grant", "malformed");
    let (fresh, _) = warden_core::token::generate_join();
    let (s, b) = api
        .call(
            Method::POST,
            "/v1/enroll",
            None,
            Some(json!({"join_token": fresh.expose(), "public_key": key.public().to_jwk()})),
        )
        .await;
    assert_oauth(s, &b, StatusCode::UNAUTHORIZED, "invalid_grant", "not known");
    let (s, b) = api
        .call(
            Method::POST,
            "/v1/enroll",
            None,
            Some(json!({"join_token": fresh.expose(), "public_key": {"kty": "RSA"}})),
        )
        .await;
    assert_oauth(s, &b, StatusCode::BAD_REQUEST, "invalid_request", "public_key");
    // A new join token replaces the key; the old key's assertions stop working.
    let (s, jt) = api.admin(Method::POST, "/v1/agents/bot/join-token", None).await;
    assert_eq!(s, StatusCode::CREATED, "{jt}");
    let key2 = SigningKey::generate(Utc::now());
    let (s, _) = api
        .call(
            Method::POST,
            "/v1/enroll",
            None,
            Some(json!({"join_token": jt["join_token"], "public_key": key2.public().to_jwk()})),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    api.admin(Method::POST, "/v1/agents/bot/activate", None).await;
    let old = Enrolled {
        spiffe: "spiffe://warden.local/agent/bot".into(),
        key,
        seed: [0; 32],
    };
    let (s, b) = start(&api, &old, &intent(&["crm"], &[]), None).await;
    assert_oauth(s, &b, StatusCode::UNAUTHORIZED, "invalid_grant", "");
    let new = Enrolled { key: key2, ..old };
    let (s, b) = start(&api, &new, &intent(&["crm"], &[]), None).await;
    assert_eq!(s, StatusCode::OK, "{b}");
}

async fn bad_assertions_are_refused(api: Api) {
    seed(&api).await;
    let bot = enrolled(&api, "bot", &["crm"]).await;
    let details = intent(&["crm"], &[]);
    let try_with = |token: String| {
        let api = &api;
        let details = details.clone();
        async move {
            api.form(
                "/v1/token",
                &[
                    ("grant_type", GRANT_TYPE_TOKEN_EXCHANGE),
                    ("subject_token", &token),
                    ("subject_token_type", TOKEN_TYPE_JWT),
                    ("authorization_details", &details),
                ],
                &[],
            )
            .await
        }
    };
    let now = Utc::now();
    let mk = |at, life, aud: &str| {
        create_assertion(&bot.key, &bot.spiffe, aud, at, life)
            .expect("assertion")
            .expose()
            .clone()
    };
    let (s, b) = try_with(mk(now - Duration::minutes(10), 60, TOKEN_ENDPOINT)).await;
    assert_oauth(s, &b, StatusCode::UNAUTHORIZED, "invalid_grant", "expired");
    let (s, b) = try_with(mk(now + Duration::minutes(10), 60, TOKEN_ENDPOINT)).await;
    assert_eq!(
        (s, b["error"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("invalid_grant")),
        "{b}"
    );
    // An assertion living an hour, signed by hand with the agent's own key (the helper refuses to make one).
    let long = hand_signed(
        &bot,
        json!({"iss": bot.spiffe, "sub": bot.spiffe, "aud": TOKEN_ENDPOINT, "iat": now.timestamp(),
               "exp": now.timestamp() + 3600, "jti": "long-lived"}),
    );
    let (s, b) = try_with(long).await;
    assert_oauth(s, &b, StatusCode::UNAUTHORIZED, "invalid_grant", "300");
    let no_jti = hand_signed(
        &bot,
        json!({"iss": bot.spiffe, "sub": bot.spiffe, "aud": TOKEN_ENDPOINT, "iat": now.timestamp(), "exp": now.timestamp() + 60}),
    );
    let (s, b) = try_with(no_jti).await;
    assert_oauth(s, &b, StatusCode::UNAUTHORIZED, "invalid_grant", "jti");
    let (s, b) = try_with(mk(now, 60, "https://elsewhere.example")).await;
    assert_oauth(s, &b, StatusCode::UNAUTHORIZED, "invalid_grant", "aud");
    // Replay: the same assertion twice.
    let once = mk(now, 60, TOKEN_ENDPOINT);
    let (s, _) = try_with(once.clone()).await;
    assert_eq!(s, StatusCode::OK);
    let (s, b) = try_with(once.clone()).await;
    assert_oauth(s, &b, StatusCode::UNAUTHORIZED, "invalid_grant", "replay");
    // Tampered signature and payload.
    let fresh = mk(now, 60, TOKEN_ENDPOINT);
    let mut parts: Vec<String> = fresh.split('.').map(str::to_owned).collect();
    let sig = parts[2].clone();
    let flipped = match sig.strip_prefix('A') {
        Some(rest) => format!("B{rest}"),
        None => format!("A{}", sig.get(1..).unwrap_or_default()),
    };
    parts[2] = flipped;
    let (s, b) = try_with(parts.join(".")).await;
    assert_eq!(
        (s, b["error"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("invalid_grant")),
        "{b}"
    );
    // alg: none, unsigned.
    use base64::Engine as _;
    let b64 = |v: &Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
    let none = format!(
        "{}.{}.",
        b64(&json!({"alg": "none", "typ": "JWT"})),
        b64(
            &json!({"iss": bot.spiffe, "sub": bot.spiffe, "aud": TOKEN_ENDPOINT, "iat": now.timestamp(), "exp": now.timestamp() + 60, "jti": "x"})
        )
    );
    let (s, b) = try_with(none).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED, "alg none: {b}");
    // Someone else's key, and an unknown agent.
    let other = SigningKey::generate(now);
    let forged = create_assertion(&other, &bot.spiffe, TOKEN_ENDPOINT, now, 60).expect("assertion");
    let (s, b) = try_with(forged.expose().clone()).await;
    assert_eq!(
        (s, b["error"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("invalid_grant")),
        "{b}"
    );
    let ghost = create_assertion(
        &other,
        "spiffe://warden.local/agent/ghost",
        TOKEN_ENDPOINT,
        now,
        60,
    )
    .expect("assertion");
    let (s, b) = try_with(ghost.expose().clone()).await;
    assert_oauth(
        s,
        &b,
        StatusCode::UNAUTHORIZED,
        "invalid_grant",
        "no agent has the SPIFFE ID",
    );
    // Oversized.
    let (s, b) = try_with("a".repeat(9 * 1024)).await;
    assert!(
        s == StatusCode::BAD_REQUEST || s == StatusCode::UNAUTHORIZED,
        "{s} {b}"
    );
    // Nothing was issued for any of these: one task only (from the accepted assertion).
    let (_, listed) = api.admin(Method::GET, "/v1/tasks", None).await;
    assert_eq!(listed["tasks"].as_array().expect("tasks").len(), 1);
}

async fn inactive_agents_get_nothing(api: Api) {
    seed(&api).await;
    let bot = enrolled(&api, "bot", &["crm"]).await;
    api.admin(Method::POST, "/v1/agents/bot/suspend", None).await;
    let (s, b) = start(&api, &bot, &intent(&["crm"], &[]), None).await;
    assert_oauth(s, &b, StatusCode::FORBIDDEN, "access_denied", "suspended");
    let (_, listed) = api.admin(Method::GET, "/v1/tasks", None).await;
    assert!(listed["tasks"].as_array().expect("tasks").is_empty());
}

async fn task_outside_allowed_upstreams_is_denied(api: Api) {
    seed(&api).await;
    let bot = enrolled(&api, "bot", &["crm"]).await;
    let (s, b) = start(&api, &bot, &intent(&["crm", "db"], &[]), None).await;
    assert_oauth(
        s,
        &b,
        StatusCode::FORBIDDEN,
        "access_denied",
        "task-upstreams-must-be-allowed",
    );
    let (s, b) = start(&api, &bot, "[{\"type\": \"other\"}]", None).await;
    assert_eq!(
        (s, b["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_authorization_details")),
        "{b}"
    );
}

async fn renewal_keeps_the_task_and_its_end(api: Api) {
    seed(&api).await;
    let bot = enrolled(&api, "bot", &["crm"]).await;
    let details = json!([{"type": "warden_task", "purpose": "p", "task_type": "t", "upstreams": ["crm"], "max_duration_secs": 60}]).to_string();
    let (s, t) = start(&api, &bot, &details, None).await;
    assert_eq!(s, StatusCode::OK, "{t}");
    assert!(
        t["expires_in"].as_i64().expect("exp") <= 60,
        "a token never outlives its task: {t}"
    );
    let token = t["access_token"].as_str().expect("token");
    let (s, r) = exchange(&api, token, &bot, None, None).await;
    assert_eq!(s, StatusCode::OK, "{r}");
    assert_eq!(r["task_id"], t["task_id"], "a renewal keeps the task");
    assert!(r["expires_in"].as_i64().expect("exp") <= 60);
    assert_ne!(r["access_token"], t["access_token"]);
    let (s, b) = exchange(&api, token, &bot, Some(&intent(&["crm"], &[])), None).await;
    assert_oauth(s, &b, StatusCode::BAD_REQUEST, "invalid_request", "cannot change");
}

async fn revocation_is_immediate(api: Api) {
    seed(&api).await;
    let bot = enrolled(&api, "bot", &["crm"]).await;
    let (token, _) = started(&api, &bot, &["crm"]).await;
    assert_eq!(task_with(&api, &token).await.0, StatusCode::OK, "cached as live");
    api.admin(
        Method::PATCH,
        "/v1/agents/bot",
        Some(json!({"model": "anthropic/claude-opus@5"})),
    )
    .await;
    let (s, b) = task_with(&api, &token).await;
    assert_oauth(s, &b, StatusCode::UNAUTHORIZED, "invalid_token", "revoked");
    api.admin(Method::POST, "/v1/agents/bot/activate", None).await;
    let (token, task) = started(&api, &bot, &["crm"]).await;
    assert_eq!(task_with(&api, &token).await.0, StatusCode::OK);
    // No body at all is fine: the reason defaults.
    let (s, ended) = api
        .admin(Method::POST, &format!("/v1/tasks/{task}/end"), None)
        .await;
    assert_eq!(s, StatusCode::OK, "{ended}");
    assert_eq!(s, StatusCode::OK);
    assert_eq!(task_with(&api, &token).await.0, StatusCode::UNAUTHORIZED);
    api.admin(Method::POST, "/v1/agents/bot/activate", None).await;
    let (token, _) = started(&api, &bot, &["crm"]).await;
    assert_eq!(task_with(&api, &token).await.0, StatusCode::OK);
    api.admin(Method::POST, "/v1/agents/bot/suspend", None).await;
    assert_eq!(task_with(&api, &token).await.0, StatusCode::UNAUTHORIZED);
}

async fn delegation_narrows_records_and_cascades(api: Api) {
    seed(&api).await;
    let parent = enrolled(&api, "planner", &["crm", "db"]).await;
    let child = enrolled(&api, "worker", &["crm"]).await;
    let (ptoken, ptask) = started(&api, &parent, &["crm", "db"]).await;
    let (s, c) = exchange(&api, &ptoken, &child, None, None).await;
    assert_eq!(s, StatusCode::OK, "{c}");
    assert_ne!(c["task_id"].as_str(), Some(ptask.as_str()));
    assert_eq!(
        c["authorization_details"][0]["upstreams"],
        json!(["crm"]),
        "narrowed to what the child may do"
    );
    let ctoken = c["access_token"].as_str().expect("token").to_owned();
    let claims = claims_of(&ctoken);
    assert_eq!(claims["sub"], child.spiffe);
    assert_eq!(claims["act"]["sub"], parent.spiffe, "the chain is recorded");
    assert_eq!(claims["depth"], 1);
    let (s, cur) = task_with(&api, &ctoken).await;
    assert_eq!(s, StatusCode::OK, "{cur}");
    assert_eq!(cur["task"]["parent_id"].as_str(), Some(ptask.as_str()));
    // The child may ask for less.
    let (s, c2) = exchange(&api, &ptoken, &child, Some(&intent(&["crm"], &["search"])), None).await;
    assert_eq!(s, StatusCode::OK, "{c2}");
    assert_eq!(c2["authorization_details"][0]["tools"], json!(["search"]));
    // Ending the parent kills both children.
    let (s, _) = api
        .with_headers(
            Method::POST,
            "/v1/task/end",
            &[("authorization", &format!("Bearer {ptoken}"))],
            None,
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(task_with(&api, &ctoken).await.0, StatusCode::UNAUTHORIZED);
    assert_eq!(
        task_with(&api, c2["access_token"].as_str().expect("t")).await.0,
        StatusCode::UNAUTHORIZED
    );
    let (_, t) = api
        .admin(
            Method::GET,
            &format!("/v1/tasks/{}", c["task_id"].as_str().expect("id")),
            None,
        )
        .await;
    assert_eq!(t["state"], TaskState::Revoked.as_str());
}

async fn delegation_beyond_depth_or_scope_is_refused(api: Api) {
    seed(&api).await;
    let a = enrolled(&api, "a", &["crm", "db"]).await;
    let b = enrolled(&api, "b", &["crm", "db"]).await;
    let c = enrolled(&api, "c", &["crm", "db"]).await;
    let d = enrolled(&api, "d", &["crm", "db"]).await;
    let (ta, _) = started(&api, &a, &["crm"]).await;
    let (s, e) = exchange(&api, &ta, &b, Some(&intent(&["crm", "db"], &[])), None).await;
    assert_oauth(s, &e, StatusCode::FORBIDDEN, "access_denied", "beyond the parent");
    let (s, e) = exchange(
        &api,
        &ta,
        &b,
        Some(&intent(&["crm"], &["delete_everything"])),
        None,
    )
    .await;
    assert_oauth(s, &e, StatusCode::FORBIDDEN, "access_denied", "beyond the parent");
    let (s, tb) = exchange(&api, &ta, &b, None, None).await;
    assert_eq!(s, StatusCode::OK, "{tb}");
    let (s, tc) = exchange(&api, tb["access_token"].as_str().expect("t"), &c, None, None).await;
    assert_eq!(s, StatusCode::OK, "depth 2 is allowed: {tc}");
    let (s, e) = exchange(&api, tc["access_token"].as_str().expect("t"), &d, None, None).await;
    assert_oauth(
        s,
        &e,
        StatusCode::FORBIDDEN,
        "access_denied",
        "max_delegation_depth",
    );
    let (_, listed) = api.admin(Method::GET, "/v1/tasks", None).await;
    assert_eq!(
        listed["tasks"].as_array().expect("tasks").len(),
        3,
        "refusals created nothing"
    );
}

async fn dpop_binds_the_token(api: Api) {
    seed(&api).await;
    let bot = enrolled(&api, "bot", &["crm"]).await;
    let holder = SigningKey::generate(Utc::now());
    let proof = create_dpop_proof(&holder, "POST", TOKEN_ENDPOINT, None, Utc::now()).expect("proof");
    let (s, t) = start(&api, &bot, &intent(&["crm"], &[]), Some(proof.expose())).await;
    assert_eq!(s, StatusCode::OK, "{t}");
    assert_eq!(t["token_type"], "DPoP");
    let token = t["access_token"].as_str().expect("token").to_owned();
    assert!(claims_of(&token)["cnf"]["jkt"].is_string());
    // The same proof again: replay.
    let (s, b) = start(&api, &bot, &intent(&["crm"], &[]), Some(proof.expose())).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED, "{b}");
    // Without a proof the bound token is refused.
    let (s, b) = task_with(&api, &token).await;
    assert_oauth(s, &b, StatusCode::UNAUTHORIZED, "invalid_token", "DPoP");
    let url = format!("{ISSUER}/v1/task");
    let good = create_dpop_proof(&holder, "GET", &url, Some(&token), Utc::now()).expect("proof");
    let auth = format!("DPoP {token}");
    let (s, b) = task_dpop(&api, &auth, good.expose()).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let (s, _) = task_dpop(&api, &auth, good.expose()).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED, "a proof is single use");
    let thief = SigningKey::generate(Utc::now());
    let stolen = create_dpop_proof(&thief, "GET", &url, Some(&token), Utc::now()).expect("proof");
    let (s, b) = task_dpop(&api, &auth, stolen.expose()).await;
    assert_oauth(s, &b, StatusCode::UNAUTHORIZED, "invalid_token", "another key");
    let wrong_url = create_dpop_proof(
        &holder,
        "GET",
        "http://elsewhere/v1/task",
        Some(&token),
        Utc::now(),
    )
    .expect("proof");
    let (s, _) = task_dpop(&api, &auth, wrong_url.expose()).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    // Renewal of a bound token needs the holder's proof.
    let (s, _) = exchange(&api, &token, &bot, None, None).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    let renew_proof =
        create_dpop_proof(&holder, "POST", TOKEN_ENDPOINT, Some(&token), Utc::now()).expect("proof");
    let (s, r) = exchange(&api, &token, &bot, None, Some(renew_proof.expose())).await;
    assert_eq!(s, StatusCode::OK, "{r}");
    assert_eq!(r["token_type"], "DPoP");
}

/// Issue 15: "Delegation drops DPoP: a token delegated from a DPoP-bound parent is a plain bearer
/// token." A stolen child token was as good as the key. Now the delegation must prove the child's key
/// (`actor_dpop`), is refused without it (nothing created), and the child's token and task are bound to
/// that key: refused without a proof, refused with the parent's key, accepted with the child's.
async fn delegation_from_a_dpop_bound_parent_stays_dpop_bound(api: Api) {
    seed(&api).await;
    let parent = enrolled(&api, "planner", &["crm", "db"]).await;
    let child = enrolled(&api, "worker", &["crm"]).await;
    let parent_key = SigningKey::generate(Utc::now());
    let child_key = SigningKey::generate(Utc::now());
    let at_token_endpoint = |key: &SigningKey, token: Option<&str>| {
        create_dpop_proof(key, "POST", TOKEN_ENDPOINT, token, Utc::now())
            .expect("proof")
            .expose()
            .clone()
    };
    let (s, t) = start(
        &api,
        &parent,
        &intent(&["crm", "db"], &[]),
        Some(&at_token_endpoint(&parent_key, None)),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{t}");
    let ptoken = t["access_token"].as_str().expect("token").to_owned();
    assert_eq!(claims_of(&ptoken)["cnf"]["jkt"], parent_key.kid());

    // The bug: the parent's proof alone used to yield a bearer child token. Now refused, naming what
    // is missing, and nothing is created.
    let parent_proof = at_token_endpoint(&parent_key, Some(&ptoken));
    let (s, b) = exchange(&api, &ptoken, &child, None, Some(&parent_proof)).await;
    assert_oauth(s, &b, StatusCode::BAD_REQUEST, "invalid_request", "DPoP-bound");
    let desc = b["error_description"].as_str().unwrap_or_default();
    assert!(desc.contains("`actor_dpop`") && desc.contains("child"), "{desc}");
    let (_, listed) = api.admin(Method::GET, "/v1/tasks", None).await;
    assert_eq!(listed["tasks"].as_array().map(Vec::len), Some(1), "{listed}");

    // The parent's own proof (it carries `ath`) does not pass as the child's.
    let (s, b) = exchange_with_actor_dpop(
        &api,
        &ptoken,
        &child,
        None,
        Some(&at_token_endpoint(&parent_key, Some(&ptoken))),
        Some(&at_token_endpoint(&parent_key, Some(&ptoken))),
    )
    .await;
    assert_oauth(s, &b, StatusCode::BAD_REQUEST, "invalid_dpop_proof", "ath");
    // A child proof for another URL is refused.
    let elsewhere =
        create_dpop_proof(&child_key, "POST", "http://elsewhere/v1/token", None, Utc::now()).expect("proof");
    let (s, b) = exchange_with_actor_dpop(
        &api,
        &ptoken,
        &child,
        None,
        Some(&at_token_endpoint(&parent_key, Some(&ptoken))),
        Some(elsewhere.expose()),
    )
    .await;
    assert_oauth(s, &b, StatusCode::BAD_REQUEST, "invalid_dpop_proof", "htu");

    // With both proofs: a bound child.
    let child_proof = at_token_endpoint(&child_key, None);
    let (s, c) = exchange_with_actor_dpop(
        &api,
        &ptoken,
        &child,
        None,
        Some(&at_token_endpoint(&parent_key, Some(&ptoken))),
        Some(&child_proof),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{c}");
    assert_eq!(c["token_type"], "DPoP");
    let ctoken = c["access_token"].as_str().expect("token").to_owned();
    let claims = claims_of(&ctoken);
    assert_eq!(claims["cnf"]["jkt"], child_key.kid(), "bound to the child's key");
    assert_eq!(claims["act"]["sub"], parent.spiffe);
    let (_, task) = api
        .admin(
            Method::GET,
            &format!("/v1/tasks/{}", c["task_id"].as_str().expect("id")),
            None,
        )
        .await;
    assert_eq!(
        task["cnf_jkt"],
        child_key.kid(),
        "the task records the binding: {task}"
    );

    // The child proof again: a replay.
    let (s, b) = exchange_with_actor_dpop(
        &api,
        &ptoken,
        &child,
        None,
        Some(&at_token_endpoint(&parent_key, Some(&ptoken))),
        Some(&child_proof),
    )
    .await;
    assert_oauth(
        s,
        &b,
        StatusCode::UNAUTHORIZED,
        "invalid_dpop_proof",
        "already used",
    );

    // The child token is not a bearer token.
    let (s, b) = task_with(&api, &ctoken).await;
    assert_oauth(s, &b, StatusCode::UNAUTHORIZED, "invalid_token", "DPoP");
    let url = format!("{ISSUER}/v1/task");
    let auth = format!("DPoP {ctoken}");
    let by_parent = create_dpop_proof(&parent_key, "GET", &url, Some(&ctoken), Utc::now()).expect("proof");
    let (s, b) = task_dpop(&api, &auth, by_parent.expose()).await;
    assert_oauth(s, &b, StatusCode::UNAUTHORIZED, "invalid_token", "another key");
    let by_child = create_dpop_proof(&child_key, "GET", &url, Some(&ctoken), Utc::now()).expect("proof");
    let (s, b) = task_dpop(&api, &auth, by_child.expose()).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(b["task"]["id"], c["task_id"]);

    // Renewing the child needs the child's proof and stays bound; `actor_dpop` has no place there.
    let (s, b) = exchange_with_actor_dpop(
        &api,
        &ctoken,
        &child,
        None,
        Some(&at_token_endpoint(&child_key, Some(&ctoken))),
        Some(&at_token_endpoint(&child_key, None)),
    )
    .await;
    assert_oauth(
        s,
        &b,
        StatusCode::BAD_REQUEST,
        "invalid_request",
        "only for delegation",
    );
    let (s, r) = exchange(
        &api,
        &ctoken,
        &child,
        None,
        Some(&at_token_endpoint(&child_key, Some(&ctoken))),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{r}");
    assert_eq!(r["token_type"], "DPoP");
    assert_eq!(
        claims_of(r["access_token"].as_str().expect("token"))["cnf"]["jkt"],
        child_key.kid()
    );

    // From an unbound parent, binding stays optional: `actor_dpop` alone binds, both places is
    // ambiguous and refused.
    let (utoken, _) = started(&api, &parent, &["crm"]).await;
    let (s, b) = exchange_with_actor_dpop(
        &api,
        &utoken,
        &child,
        None,
        Some(&at_token_endpoint(&child_key, None)),
        Some(&at_token_endpoint(&child_key, None)),
    )
    .await;
    assert_oauth(s, &b, StatusCode::BAD_REQUEST, "invalid_request", "not both");
    let (s, u) = exchange_with_actor_dpop(
        &api,
        &utoken,
        &child,
        None,
        None,
        Some(&at_token_endpoint(&child_key, None)),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{u}");
    assert_eq!(
        claims_of(u["access_token"].as_str().expect("token"))["cnf"]["jkt"],
        child_key.kid()
    );
}

async fn key_rotation_keeps_old_tokens_valid(api: Api) {
    seed(&api).await;
    let bot = enrolled(&api, "bot", &["crm"]).await;
    let (old_token, _) = started(&api, &bot, &["crm"]).await;
    let (s, r) = api.admin(Method::POST, "/v1/keys/rotate", None).await;
    assert_eq!(s, StatusCode::OK, "{r}");
    let (_, jwks) = api.call(Method::GET, "/.well-known/jwks.json", None, None).await;
    assert_eq!(
        jwks["keys"].as_array().expect("keys").len(),
        2,
        "old and new during the overlap"
    );
    assert_eq!(
        task_with(&api, &old_token).await.0,
        StatusCode::OK,
        "tokens signed before rotation still work"
    );
    let (new_token, _) = started(&api, &bot, &["crm"]).await;
    use base64::Engine as _;
    let header: Value = serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(new_token.split('.').next().expect("h"))
            .expect("b64"),
    )
    .expect("json");
    assert_eq!(header["kid"], r["new_kid"]);
    assert_eq!(header["typ"], "wdn-task+jwt");
    let auditor = common::mint(
        &api.store,
        "aud@example.com",
        &[warden_core::Role::Auditor],
        Duration::hours(1),
    )
    .await;
    let (s, _) = api
        .call(Method::POST, "/v1/keys/rotate", Some(&auditor), None)
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
}

async fn removing_the_last_owner_kills_credentials(api: Api) {
    seed(&api).await;
    let bot = enrolled(&api, "bot", &["crm"]).await;
    let (token, _) = started(&api, &bot, &["crm"]).await;
    let (s, r) = api
        .admin(Method::DELETE, "/v1/humans/owner@example.com", None)
        .await;
    assert_eq!(s, StatusCode::OK, "{r}");
    assert_eq!(r["orphaned_agents"], json!(["bot"]));
    assert_eq!(task_with(&api, &token).await.0, StatusCode::UNAUTHORIZED);
    let (_, a) = api.admin(Method::GET, "/v1/agents/bot", None).await;
    assert_eq!(a["state"], "suspended");
    let (s, b) = start(&api, &bot, &intent(&["crm"], &[]), None).await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{b}");
}

async fn malformed_token_requests(api: Api) {
    let (s, b) = api.form("/v1/token", &[("grant_type", "password")], &[]).await;
    assert_oauth(s, &b, StatusCode::BAD_REQUEST, "unsupported_grant_type", "");
    let (s, b) = api
        .form("/v1/token", &[("grant_type", GRANT_TYPE_TOKEN_EXCHANGE)], &[])
        .await;
    assert_oauth(s, &b, StatusCode::BAD_REQUEST, "invalid_request", "subject_token");
    let (s, b) = api
        .form(
            "/v1/token",
            &[
                ("grant_type", GRANT_TYPE_TOKEN_EXCHANGE),
                ("grant_type", GRANT_TYPE_TOKEN_EXCHANGE),
            ],
            &[],
        )
        .await;
    assert_oauth(s, &b, StatusCode::BAD_REQUEST, "invalid_request", "grant_type");
    let (s, b) = api
        .call(
            Method::POST,
            "/v1/token",
            None,
            Some(json!({"grant_type": GRANT_TYPE_TOKEN_EXCHANGE})),
        )
        .await;
    assert_oauth(
        s,
        &b,
        StatusCode::BAD_REQUEST,
        "invalid_request",
        "x-www-form-urlencoded",
    );
    let (s, b) = task_with(&api, "not.a.token").await;
    assert_eq!(
        (s, b["error"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("invalid_token")),
        "{b}"
    );
    let (s, _) = api.call(Method::GET, "/v1/task", None, None).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
}

/// Issue 15: a child's recorded intent showed the 30-day maximum it asked for while it could live at
/// most as long as its parent. The recorded intent (the task record, the token's
/// `authorization_details`) carries the real maximum: the request, capped by the server's task
/// maximum and, for a child, by what its parent has left.
async fn recorded_intents_show_the_real_maximum_duration(api: Api) {
    seed(&api).await;
    let parent = enrolled(&api, "planner", &["crm"]).await;
    let child = enrolled(&api, "worker", &["crm"]).await;
    let month = 30 * 24 * 3600;
    let details = |secs: u64| {
        json!([{"type": "warden_task", "purpose": "p", "task_type": "t", "upstreams": ["crm"], "max_duration_secs": secs}])
            .to_string()
    };
    let (s, p) = start(&api, &parent, &details(month), None).await;
    assert_eq!(s, StatusCode::OK, "{p}");
    let ptoken = p["access_token"].as_str().expect("token").to_owned();
    let (_, cur) = task_with(&api, &ptoken).await;
    let expires =
        chrono::DateTime::parse_from_rfc3339(cur["task"]["expires_at"].as_str().expect("exp")).expect("time");
    let created =
        chrono::DateTime::parse_from_rfc3339(cur["task"]["created_at"].as_str().expect("at")).expect("time");
    let lifetime = (expires - created).num_seconds();
    assert!(lifetime < month as i64, "the server caps a task: {cur}");
    let recorded = cur["task"]["intent"][0]["max_duration_secs"]
        .as_i64()
        .expect("recorded maximum");
    assert!(
        (recorded - lifetime).abs() <= 1,
        "recorded {recorded} s, lives {lifetime} s: {cur}"
    );
    assert_eq!(
        p["authorization_details"][0]["max_duration_secs"].as_i64(),
        Some(recorded),
        "{p}"
    );

    let (s, c) = exchange(&api, &ptoken, &child, Some(&details(month)), None).await;
    assert_eq!(s, StatusCode::OK, "{c}");
    let shown = c["authorization_details"][0]["max_duration_secs"]
        .as_i64()
        .expect("child's maximum");
    assert!(
        shown <= recorded,
        "the child shows {shown} s, its parent has {recorded} s: {c}"
    );
    let ctoken = c["access_token"].as_str().expect("token");
    let (_, ccur) = task_with(&api, ctoken).await;
    assert_eq!(
        ccur["task"]["intent"][0]["max_duration_secs"].as_i64(),
        Some(shown),
        "{ccur}"
    );
    assert!(ccur["task"]["expires_at"].as_str() <= cur["task"]["expires_at"].as_str());

    // A short request is recorded as asked.
    let (s, short) = start(&api, &parent, &details(60), None).await;
    assert_eq!(s, StatusCode::OK, "{short}");
    assert_eq!(
        short["authorization_details"][0]["max_duration_secs"], 60,
        "{short}"
    );
}
