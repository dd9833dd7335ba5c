//! Criterion benchmarks of the token hot paths: issuing and verifying task tokens (every MCP message
//! carries one), verifying agent assertions and DPoP proofs (every task start / bound request), with a
//! realistic intent (3 upstreams, 5 tools, 2 datasets).
//!
//! `verify_task_token_cached_hit` is the same token verified again through `TaskTokenCache` (what the
//! gateway sees: one token, many messages). The `breakdown/*` entries split `verify_task_token` into
//! its parts (the Ed25519 signature check alone, strict and not; the claims JSON parse alone) and
//! measure `jsonwebtoken::decode` on the same token, which is what the custom path in `task.rs`
//! replaces.
//!
//! Run: `cargo bench -p warden-identity --bench tokens -- --warm-up-time 1 --measurement-time 3`

#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::collections::HashMap;
use std::hint::black_box;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use criterion::{Criterion, criterion_group, criterion_main};
use serde_json::json;
use uuid::Uuid;
use warden_identity::{
    PublicKey, SigningKey, TaskClaims, TaskIntent, create_assertion, create_dpop_proof, issue_task_token,
    verify_assertion, verify_dpop_proof, verify_task_token,
};

const ISSUER: &str = "https://warden.example.com";
const AGENT: &str = "spiffe://prod.example.com/agent/billing-bot";

fn intent() -> TaskIntent {
    serde_json::from_value(json!({
        "purpose": "refund order 1234 after a duplicate charge reported by the customer",
        "task_type": "billing.refund",
        "upstreams": ["stripe", "orders-db", "mail"],
        "tools": ["get_charge", "create_refund", "list_orders", "send_email", "get_customer"],
        "datasets": ["orders", "customers"],
        "max_duration_secs": 900
    }))
    .expect("valid intent")
}

fn claims(now: i64, jkt: &str) -> TaskClaims {
    TaskClaims {
        iss: ISSUER.into(),
        sub: AGENT.into(),
        aud: ISSUER.into(),
        iat: now,
        exp: now + 300,
        jti: Uuid::new_v4().to_string(),
        task_id: Uuid::new_v4(),
        depth: 0,
        authorization_details: intent()
            .to_authorization_details()
            .as_array()
            .expect("array")
            .clone(),
        act: None,
        cnf: Some(warden_identity::Confirmation { jkt: jkt.to_owned() }),
    }
}

fn benches(c: &mut Criterion) {
    let now: DateTime<Utc> = Utc::now();
    let warden_key = SigningKey::generate(now);
    let previous_key = SigningKey::generate(now);
    let agent_key = SigningKey::generate(now);
    let keys: HashMap<String, PublicKey> = [
        (warden_key.kid().to_owned(), warden_key.public()),
        (previous_key.kid().to_owned(), previous_key.public()),
    ]
    .into();
    let claims = claims(now.timestamp(), agent_key.kid());
    let token = issue_task_token(&warden_key, &claims)
        .expect("issued")
        .into_inner();
    println!("task token: {} bytes", token.len());

    c.bench_function("issue_task_token", |b| {
        b.iter(|| issue_task_token(&warden_key, black_box(&claims)).expect("issued"))
    });
    c.bench_function("verify_task_token", |b| {
        b.iter(|| verify_task_token(black_box(&token), &keys, ISSUER, ISSUER, now).expect("verified"))
    });

    // The gateway's hot path with the opt-in cache: the same token again (a hit).
    let cache = warden_identity::TaskTokenCache::new(10_000);
    cache
        .verify(&token, &keys, ISSUER, ISSUER, now)
        .expect("verified");
    c.bench_function("verify_task_token_cached_hit", |b| {
        b.iter(|| {
            cache
                .verify(black_box(&token), &keys, ISSUER, ISSUER, now)
                .expect("verified")
        })
    });

    // Where the time of verify_task_token goes.
    let (signing_input, signature) = token.rsplit_once('.').expect("three parts");
    let signature: [u8; 64] = URL_SAFE_NO_PAD
        .decode(signature)
        .expect("b64")
        .try_into()
        .expect("64 bytes");
    let signature = ed25519_dalek::Signature::from_bytes(&signature);
    // The crate does not expose dalek types; rebuild the verifying key from the public key bytes.
    let x = URL_SAFE_NO_PAD.decode(warden_key.public().x_b64()).expect("b64");
    let verifying_key =
        ed25519_dalek::VerifyingKey::from_bytes(&x.try_into().expect("32 bytes")).expect("key");
    c.bench_function("breakdown/ed25519_verify_strict", |b| {
        b.iter(|| {
            verifying_key
                .verify_strict(black_box(signing_input.as_bytes()), &signature)
                .expect("valid")
        })
    });
    c.bench_function("breakdown/ed25519_verify_non_strict", |b| {
        b.iter(|| {
            ed25519_dalek::Verifier::verify(&verifying_key, black_box(signing_input.as_bytes()), &signature)
                .expect("valid")
        })
    });
    let payload = URL_SAFE_NO_PAD
        .decode(signing_input.split_once('.').expect("two parts").1)
        .expect("b64");
    c.bench_function("breakdown/claims_json_parse", |b| {
        b.iter(|| serde_json::from_slice::<TaskClaims>(black_box(&payload)).expect("parsed"))
    });
    let decoding_key =
        jsonwebtoken::DecodingKey::from_ed_components(&warden_key.public().x_b64()).expect("key");
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::EdDSA);
    validation.validate_exp = false; // it would read the system clock; ours takes `now`
    validation.required_spec_claims.clear();
    validation.set_audience(&[ISSUER]);
    validation.set_issuer(&[ISSUER]);
    c.bench_function("breakdown/jsonwebtoken_decode_same_token", |b| {
        b.iter(|| {
            jsonwebtoken::decode::<TaskClaims>(black_box(&token), &decoding_key, &validation)
                .expect("decoded")
        })
    });

    let assertion = create_assertion(&agent_key, AGENT, ISSUER, now, 60)
        .expect("created")
        .into_inner();
    let agent_public = agent_key.public();
    c.bench_function("verify_assertion", |b| {
        b.iter(|| verify_assertion(black_box(&assertion), &agent_public, ISSUER, now).expect("verified"))
    });

    let url = "https://warden.example.com/mcp/stripe";
    let proof = create_dpop_proof(&agent_key, "POST", url, Some(&token), now)
        .expect("created")
        .into_inner();
    c.bench_function("verify_dpop_proof", |b| {
        b.iter(|| verify_dpop_proof(black_box(&proof), "POST", url, Some(&token), now).expect("verified"))
    });
}

criterion_group!(tokens, benches);
criterion_main!(tokens);
