//! Helpers shared by the unit tests: a fixed clock, a fixed test key, sample claims, and forgers that
//! sign arbitrary headers and payloads (the refusal tests need tokens no honest issuer would make).

use std::sync::OnceLock;

use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::jws;
use crate::{SigningKey, TASK_TOKEN_TYP, TaskClaims, TaskIntent};

pub const NOW: i64 = 1_750_000_000;
pub const LEEWAY: i64 = crate::LEEWAY_SECS;
pub const ISSUER: &str = "https://warden.example.com";
pub const AUDIENCE: &str = "https://warden.example.com";
pub const AGENT: &str = "spiffe://warden.local/agent/billing-bot";

pub fn at(secs: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(secs, 0).expect("in range")
}

pub fn signing_key() -> SigningKey {
    SigningKey::generate(at(NOW))
}

/// One key for the whole test run (key generation is cheap, but a shared key lets helpers be simple).
pub fn test_key() -> &'static SigningKey {
    static KEY: OnceLock<SigningKey> = OnceLock::new();
    KEY.get_or_init(signing_key)
}

pub fn sample_intent() -> TaskIntent {
    serde_json::from_value(json!({
        "purpose": "refund order 1234 after a duplicate charge",
        "task_type": "billing.refund",
        "upstreams": ["stripe", "orders-db", "mail"],
        "tools": ["get_charge", "create_refund", "list_orders", "send_email", "get_customer"],
        "datasets": ["orders", "customers"],
        "max_duration_secs": 900
    }))
    .expect("valid intent")
}

pub fn sample_claims(now: i64) -> TaskClaims {
    TaskClaims {
        iss: ISSUER.into(),
        sub: AGENT.into(),
        aud: AUDIENCE.into(),
        iat: now,
        exp: now + 300,
        jti: Uuid::new_v4().to_string(),
        task_id: Uuid::new_v4(),
        depth: 0,
        authorization_details: vec![sample_intent().to_authorization_details()[0].clone()],
        act: None,
        cnf: None,
    }
}

pub fn task_header(key: &SigningKey) -> Value {
    json!({"alg": "EdDSA", "typ": TASK_TOKEN_TYP, "kid": key.kid()})
}

/// Signs any header and payload with Ed25519.
pub fn forge(header: &Value, payload: &Value, key: &SigningKey) -> String {
    forge_raw(header.to_string().as_bytes(), payload.to_string().as_bytes(), key)
}

pub fn forge_raw(header: &[u8], payload: &[u8], key: &SigningKey) -> String {
    jws::sign_ed25519(key.dalek(), header, payload)
}

/// Signs any header and payload with HMAC-SHA256 under `secret` (algorithm-confusion tests).
pub fn hs256(header: &Value, payload: &Value, secret: &[u8]) -> String {
    let input = format!(
        "{}.{}",
        jws::b64(header.to_string().as_bytes()),
        jws::b64(payload.to_string().as_bytes())
    );
    let sig = jsonwebtoken::crypto::sign(
        input.as_bytes(),
        &jsonwebtoken::EncodingKey::from_secret(secret),
        jsonwebtoken::Algorithm::HS256,
    )
    .expect("hmac");
    format!("{input}.{sig}")
}
