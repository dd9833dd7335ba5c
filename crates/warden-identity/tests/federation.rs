//! Federation end to end through the public API: tokens signed by RSA and EC keys of "external"
//! issuers (an OIDC provider, a SPIFFE trust domain), verified by `FederatedIssuer`, and every way such a
//! token must be refused.
//!
//! The RSA and EC test keys are checked-in test vectors (`tests/vectors/federation.json`) because
//! generating a 2048-bit RSA key in an unoptimized test build takes seconds to minutes. They are test
//! keys only, made by `regenerate_vectors` below:
//! `cargo test -p warden-identity --test federation -- --ignored regenerate_vectors`.

#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::collections::BTreeMap;

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use chrono::{DateTime, Utc};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use proptest::prelude::*;
use serde_json::{Value, json};
use warden_core::AgentName;
use warden_identity::{FederatedIssuer, FederationKind, TokenError};

const VECTORS: &str = include_str!("vectors/federation.json");
const NOW: i64 = 1_750_000_000;
const GITHUB: &str = "https://token.actions.githubusercontent.com";
const AUDIENCE: &str = "https://warden.example.com";
const REPO_SUB: &str = "repo:acme/app:ref:refs/heads/main";

fn at(secs: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(secs, 0).expect("in range")
}

struct Vectors {
    rsa_der: Vec<u8>,
    rsa_jwk: Value,
    ec_der: Vec<u8>,
    ec_jwk: Value,
}

fn vectors() -> Vectors {
    let v: Value = serde_json::from_str(VECTORS).expect("vectors are JSON");
    let der = |k: &str, f: &str| {
        STANDARD
            .decode(v[k][f].as_str().expect("string"))
            .expect("base64")
    };
    Vectors {
        rsa_der: der("rsa_2048", "private_pkcs1_der"),
        rsa_jwk: v["rsa_2048"]["public_jwk"].clone(),
        ec_der: der("ec_p256", "private_pkcs8_der"),
        ec_jwk: v["ec_p256"]["public_jwk"].clone(),
    }
}

fn with_kid(jwk: &Value, kid: &str) -> Value {
    let mut jwk = jwk.clone();
    jwk["kid"] = json!(kid);
    jwk
}

fn jwks(v: &Vectors) -> Value {
    json!({"keys": [with_kid(&v.rsa_jwk, "rsa-1"), with_kid(&v.ec_jwk, "ec-1")]})
}

fn agent(name: &str) -> AgentName {
    AgentName::parse(name).expect("valid")
}

fn oidc(algorithms: &[&str]) -> FederatedIssuer {
    let v = vectors();
    FederatedIssuer::new(
        "github",
        FederationKind::Oidc,
        Some(GITHUB.into()),
        None,
        vec![AUDIENCE.into()],
        &algorithms.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
        &jwks(&v),
        "sub".into(),
        [(REPO_SUB.to_string(), agent("deploy-bot"))].into(),
    )
    .expect("valid issuer")
}

fn claims() -> Value {
    json!({
        "iss": GITHUB,
        "sub": REPO_SUB,
        "aud": AUDIENCE,
        "iat": NOW,
        "nbf": NOW,
        "exp": NOW + 300,
        "jti": "gh-1",
        "repository": "acme/app",
    })
}

fn sign(alg: Algorithm, kid: Option<&str>, claims: &Value) -> String {
    let v = vectors();
    let key = match alg {
        Algorithm::ES256 => EncodingKey::from_ec_der(&v.ec_der),
        _ => EncodingKey::from_rsa_der(&v.rsa_der),
    };
    let mut header = Header::new(alg);
    header.kid = kid.map(str::to_owned);
    jsonwebtoken::encode(&header, claims, &key).expect("signed")
}

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

#[test]
fn rs256_and_es256_tokens_map_to_agents() {
    let issuer = oidc(&["RS256", "ES256"]);
    for (alg, kid) in [(Algorithm::RS256, "rsa-1"), (Algorithm::ES256, "ec-1")] {
        let token = sign(alg, Some(kid), &claims());
        assert!(issuer.claims_token(&token));
        let id = issuer.verify(&token, at(NOW)).expect("verified");
        assert_eq!(id.agent.as_str(), "deploy-bot");
        assert_eq!(id.issuer, GITHUB);
        assert_eq!(id.subject, REPO_SUB);
        assert_eq!(id.jti.as_deref(), Some("gh-1"));
        assert_eq!(id.exp, NOW + 300);
    }
}

#[test]
fn rsa_pss_works_when_allowed() {
    let token = sign(Algorithm::PS256, Some("rsa-1"), &claims());
    assert_eq!(
        oidc(&["RS256"]).verify(&token, at(NOW)),
        Err(TokenError::UnsupportedAlgorithm("PS256".into()))
    );
    assert!(oidc(&["PS256"]).verify(&token, at(NOW)).is_ok());
}

#[test]
fn algorithm_not_on_the_allow_list_is_refused() {
    let token = sign(Algorithm::RS256, Some("rsa-1"), &claims());
    assert_eq!(
        oidc(&["ES256"]).verify(&token, at(NOW)),
        Err(TokenError::UnsupportedAlgorithm("RS256".into()))
    );
}

#[test]
fn key_type_mismatch_is_refused_before_any_cryptography() {
    let issuer = oidc(&["RS256", "ES256"]);
    // RS256 header naming the EC key.
    let token = sign(Algorithm::RS256, Some("ec-1"), &claims());
    let err = issuer.verify(&token, at(NOW)).expect_err("refused");
    assert!(matches!(&err, TokenError::KeyAlgorithmMismatch { .. }), "{err}");
    assert!(err.to_string().contains("EC P-256"), "{err}");
    // ES256 header naming the RSA key.
    let token = sign(Algorithm::ES256, Some("rsa-1"), &claims());
    assert!(matches!(
        issuer.verify(&token, at(NOW)),
        Err(TokenError::KeyAlgorithmMismatch { .. })
    ));
}

#[test]
fn a_jwk_alg_pins_the_algorithm() {
    let v = vectors();
    let mut rsa = with_kid(&v.rsa_jwk, "rsa-1");
    rsa["alg"] = json!("RS256");
    let issuer = FederatedIssuer::new(
        "pinned",
        FederationKind::Oidc,
        Some(GITHUB.into()),
        None,
        vec![AUDIENCE.into()],
        &["RS256".into(), "PS256".into()],
        &json!({"keys": [rsa]}),
        "sub".into(),
        [(REPO_SUB.to_string(), agent("deploy-bot"))].into(),
    )
    .expect("valid");
    assert!(
        issuer
            .verify(&sign(Algorithm::RS256, Some("rsa-1"), &claims()), at(NOW))
            .is_ok()
    );
    let err = issuer
        .verify(&sign(Algorithm::PS256, Some("rsa-1"), &claims()), at(NOW))
        .expect_err("refused");
    assert!(err.to_string().contains("the key is for `RS256` only"), "{err}");
}

#[test]
fn algorithm_confusion_and_none_are_refused() {
    let issuer = oidc(&["RS256", "ES256"]);
    let v = vectors();
    let n = URL_SAFE_NO_PAD.decode(v.rsa_jwk["n"].as_str().unwrap()).unwrap();
    for secret in [
        n,
        v.rsa_jwk.to_string().into_bytes(),
        v.ec_jwk.to_string().into_bytes(),
    ] {
        let mut header = Header::new(Algorithm::HS256);
        header.kid = Some("rsa-1".into());
        let token = jsonwebtoken::encode(&header, &claims(), &EncodingKey::from_secret(&secret)).unwrap();
        assert_eq!(
            issuer.verify(&token, at(NOW)),
            Err(TokenError::UnsupportedAlgorithm("HS256".into()))
        );
    }
    let none = format!(
        "{}.{}.",
        b64(br#"{"alg":"none","kid":"rsa-1"}"#),
        b64(claims().to_string().as_bytes())
    );
    assert!(issuer.verify(&none, at(NOW)).is_err());
    assert_eq!(
        issuer.verify(&format!("{none}AAAA"), at(NOW)),
        Err(TokenError::UnsupportedAlgorithm("none".into()))
    );
}

#[test]
fn unknown_kid_missing_kid_and_tampering() {
    let issuer = oidc(&["RS256", "ES256"]);
    let token = sign(Algorithm::RS256, Some("rsa-2"), &claims());
    assert_eq!(
        issuer.verify(&token, at(NOW)),
        Err(TokenError::UnknownKey { kid: "rsa-2".into() })
    );
    let token = sign(Algorithm::RS256, None, &claims());
    assert!(
        matches!(issuer.verify(&token, at(NOW)), Err(TokenError::Malformed(m)) if m.contains("no `kid`"))
    );

    let token = sign(Algorithm::RS256, Some("rsa-1"), &claims());
    let (head, sig) = token.rsplit_once('.').unwrap();
    let (header, _) = head.split_once('.').unwrap();
    let mut other = claims();
    other["sub"] = json!("repo:acme/app:ref:refs/heads/evil");
    let tampered = format!("{header}.{}.{sig}", b64(other.to_string().as_bytes()));
    assert_eq!(issuer.verify(&tampered, at(NOW)), Err(TokenError::BadSignature));
    let mut sig_bytes = URL_SAFE_NO_PAD.decode(sig).unwrap();
    sig_bytes[10] ^= 1;
    let tampered = format!("{head}.{}", b64(&sig_bytes));
    assert_eq!(issuer.verify(&tampered, at(NOW)), Err(TokenError::BadSignature));
    // The same for EC.
    let token = sign(Algorithm::ES256, Some("ec-1"), &claims());
    let (head, sig) = token.rsplit_once('.').unwrap();
    let mut sig_bytes = URL_SAFE_NO_PAD.decode(sig).unwrap();
    sig_bytes[40] ^= 1;
    assert_eq!(
        issuer.verify(&format!("{head}.{}", b64(&sig_bytes)), at(NOW)),
        Err(TokenError::BadSignature)
    );
}

#[test]
fn claim_refusals() {
    let issuer = oidc(&["RS256"]);
    let verify = |change: &dyn Fn(&mut Value)| {
        let mut c = claims();
        change(&mut c);
        issuer.verify(&sign(Algorithm::RS256, Some("rsa-1"), &c), at(NOW))
    };
    assert!(verify(&|_| {}).is_ok());
    assert_eq!(
        verify(&|c| c["sub"] = json!("repo:acme/other:ref:refs/heads/main")),
        Err(TokenError::UnmappedIdentity {
            claim: "sub".into(),
            value: "repo:acme/other:ref:refs/heads/main".into()
        })
    );
    assert_eq!(
        verify(&|c| c["iss"] = json!("https://evil.example.com")),
        Err(TokenError::WrongIssuer)
    );
    assert_eq!(
        verify(&|c| c["aud"] = json!("https://other.example.com")),
        Err(TokenError::WrongAudience)
    );
    assert!(verify(&|c| c["aud"] = json!(["x", AUDIENCE])).is_ok());
    assert_eq!(verify(&|c| c["exp"] = json!(NOW - 31)), Err(TokenError::Expired));
    assert_eq!(
        verify(&|c| c["nbf"] = json!(NOW + 31)),
        Err(TokenError::NotYetValid)
    );
    assert_eq!(
        verify(&|c| c["iat"] = json!(NOW + 31)),
        Err(TokenError::IssuedInFuture)
    );
    assert_eq!(
        verify(&|c| {
            c.as_object_mut().unwrap().remove("exp");
        }),
        Err(TokenError::MissingClaim("exp"))
    );
    assert_eq!(
        verify(&|c| {
            c.as_object_mut().unwrap().remove("aud");
        }),
        Err(TokenError::MissingClaim("aud"))
    );
    assert!(matches!(
        verify(&|c| c["sub"] = json!(42)),
        Err(TokenError::InvalidClaim { .. })
    ));
    // A token of another issuer is not this issuer's to try.
    let mut c = claims();
    c["iss"] = json!("https://evil.example.com");
    assert!(!issuer.claims_token(&sign(Algorithm::RS256, Some("rsa-1"), &c)));
    assert!(!issuer.claims_token("garbage"));
}

#[test]
fn duplicate_claims_are_refused() {
    // `{"sub": <mapped>, ..., "sub": <other>}`: which one would a log reader see? Refuse instead.
    let payload = format!(
        r#"{{"iss":"{GITHUB}","sub":"{REPO_SUB}","aud":"{AUDIENCE}","exp":{},"sub":"repo:acme/other"}}"#,
        NOW + 300
    );
    let input = format!(
        "{}.{}",
        b64(br#"{"alg":"RS256","kid":"rsa-1"}"#),
        b64(payload.as_bytes())
    );
    let key = EncodingKey::from_rsa_der(&vectors().rsa_der);
    let sig = jsonwebtoken::crypto::sign(input.as_bytes(), &key, Algorithm::RS256).unwrap();
    let err = oidc(&["RS256"])
        .verify(&format!("{input}.{sig}"), at(NOW))
        .expect_err("refused");
    assert!(
        err.to_string().contains("the member `sub` is given twice"),
        "{err}"
    );
}

#[test]
fn warden_token_types_are_not_federated_tokens() {
    let issuer = oidc(&["RS256"]);
    for typ in ["wdn-task+jwt", "dpop+jwt"] {
        let mut header = Header::new(Algorithm::RS256);
        header.kid = Some("rsa-1".into());
        header.typ = Some(typ.into());
        let token =
            jsonwebtoken::encode(&header, &claims(), &EncodingKey::from_rsa_der(&vectors().rsa_der)).unwrap();
        assert!(
            matches!(issuer.verify(&token, at(NOW)), Err(TokenError::WrongType { .. })),
            "{typ}"
        );
    }
}

#[test]
fn json_pointer_claims() {
    let v = vectors();
    let issuer = FederatedIssuer::new(
        "k8s",
        FederationKind::Oidc,
        Some("https://kubernetes.default.svc".into()),
        None,
        vec!["warden".into()],
        &["RS256".into()],
        &jwks(&v),
        "/kubernetes.io/serviceaccount/name".into(),
        [("billing".to_string(), agent("billing-bot"))].into(),
    )
    .expect("valid");
    let mut c = json!({
        "iss": "https://kubernetes.default.svc",
        "sub": "system:serviceaccount:prod:billing",
        "aud": ["warden"],
        "iat": NOW,
        "exp": NOW + 600,
        "kubernetes.io": {"namespace": "prod", "serviceaccount": {"name": "billing", "uid": "1"}}
    });
    let id = issuer
        .verify(&sign(Algorithm::RS256, Some("rsa-1"), &c), at(NOW))
        .expect("verified");
    assert_eq!(id.agent.as_str(), "billing-bot");
    c["kubernetes.io"]["serviceaccount"]["name"] = json!("other");
    assert!(matches!(
        issuer.verify(&sign(Algorithm::RS256, Some("rsa-1"), &c), at(NOW)),
        Err(TokenError::UnmappedIdentity { .. })
    ));
    c["kubernetes.io"] = json!({});
    assert!(matches!(
        issuer.verify(&sign(Algorithm::RS256, Some("rsa-1"), &c), at(NOW)),
        Err(TokenError::InvalidClaim { message, .. }) if message == "is missing"
    ));
}

fn spiffe_issuer() -> FederatedIssuer {
    let v = vectors();
    let mapping: BTreeMap<String, AgentName> = [(
        "spiffe://prod.example.com/ns/billing/sa/worker".to_string(),
        agent("billing-worker"),
    )]
    .into();
    FederatedIssuer::new(
        "prod-spire",
        FederationKind::Spiffe,
        None,
        Some("prod.example.com".into()),
        vec!["warden".into()],
        &["ES256".into(), "RS256".into()],
        &jwks(&v),
        "sub".into(),
        mapping,
    )
    .expect("valid")
}

#[test]
fn spiffe_jwt_svids() {
    let issuer = spiffe_issuer();
    let svid = |sub: &str| json!({"sub": sub, "aud": ["warden"], "exp": NOW + 300, "iat": NOW});
    let token = sign(
        Algorithm::ES256,
        Some("ec-1"),
        &svid("spiffe://prod.example.com/ns/billing/sa/worker"),
    );
    assert!(issuer.claims_token(&token));
    let id = issuer.verify(&token, at(NOW)).expect("verified");
    assert_eq!(id.agent.as_str(), "billing-worker");
    assert_eq!(id.issuer, "spiffe://prod.example.com");
    assert_eq!(id.jti, None);

    let foreign = sign(
        Algorithm::ES256,
        Some("ec-1"),
        &svid("spiffe://staging.example.com/ns/billing/sa/worker"),
    );
    assert!(!issuer.claims_token(&foreign));
    assert_eq!(
        issuer.verify(&foreign, at(NOW)),
        Err(TokenError::WrongTrustDomain {
            expected: "prod.example.com".into(),
            found: "spiffe://staging.example.com/ns/billing/sa/worker".into()
        })
    );
    let unmapped = sign(
        Algorithm::ES256,
        Some("ec-1"),
        &svid("spiffe://prod.example.com/ns/billing/sa/other"),
    );
    assert!(matches!(
        issuer.verify(&unmapped, at(NOW)),
        Err(TokenError::UnmappedIdentity { .. })
    ));
    let not_spiffe = sign(Algorithm::ES256, Some("ec-1"), &svid("worker"));
    assert!(matches!(
        issuer.verify(&not_spiffe, at(NOW)),
        Err(TokenError::InvalidClaim { .. })
    ));
    let no_kid = sign(
        Algorithm::ES256,
        None,
        &svid("spiffe://prod.example.com/ns/billing/sa/worker"),
    );
    assert!(matches!(
        issuer.verify(&no_kid, at(NOW)),
        Err(TokenError::Malformed(_))
    ));
}

#[test]
fn jwks_refresh() {
    let v = vectors();
    let mut issuer = oidc(&["RS256", "ES256"]);
    let rsa_token = sign(Algorithm::RS256, Some("rsa-1"), &claims());
    let ec_token = sign(Algorithm::ES256, Some("ec-1"), &claims());
    issuer
        .replace_jwks(&json!({"keys": [with_kid(&v.ec_jwk, "ec-1")]}))
        .expect("replaced");
    assert_eq!(
        issuer.verify(&rsa_token, at(NOW)),
        Err(TokenError::UnknownKey { kid: "rsa-1".into() })
    );
    assert!(issuer.verify(&ec_token, at(NOW)).is_ok());
    // A bad refresh keeps the keys in use.
    assert!(issuer.replace_jwks(&json!({"keys": []})).is_err());
    assert!(issuer.verify(&ec_token, at(NOW)).is_ok());
}

#[test]
fn construction_errors() {
    let v = vectors();
    let build = |kind: FederationKind, issuer: Option<&str>, td: Option<&str>, algs: &[&str], jwks: Value| {
        FederatedIssuer::new(
            "x",
            kind,
            issuer.map(str::to_owned),
            td.map(str::to_owned),
            vec![AUDIENCE.into()],
            &algs.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
            &jwks,
            "sub".into(),
            [(REPO_SUB.to_string(), agent("deploy-bot"))].into(),
        )
        .map(|_| ())
        .map_err(|e| e.to_string())
    };
    let check = |got: Result<(), String>, want: &str| {
        let err = got.expect_err(want);
        assert!(err.contains(want), "`{err}` lacks `{want}`");
    };
    check(
        build(FederationKind::Oidc, None, None, &["RS256"], jwks(&v)),
        "needs `issuer`",
    );
    check(
        build(
            FederationKind::Oidc,
            Some(GITHUB),
            Some("td"),
            &["RS256"],
            jwks(&v),
        ),
        "only for `spiffe`",
    );
    check(
        build(FederationKind::Spiffe, None, None, &["RS256"], jwks(&v)),
        "needs `trust_domain`",
    );
    check(
        build(FederationKind::Spiffe, None, Some("Bad!"), &["RS256"], jwks(&v)),
        "trust domain",
    );
    check(
        build(
            FederationKind::Oidc,
            Some(GITHUB),
            None,
            &["RS256", "HS256"],
            jwks(&v),
        ),
        "symmetric",
    );
    check(
        build(FederationKind::Oidc, Some(GITHUB), None, &["none"], jwks(&v)),
        "never accepted",
    );
    let mut private = v.rsa_jwk.clone();
    private["d"] = json!("AQAB");
    check(
        build(
            FederationKind::Oidc,
            Some(GITHUB),
            None,
            &["RS256"],
            json!({"keys": [private]}),
        ),
        "private or symmetric key material",
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn verify_never_panics(s in "\\PC{0,300}", h in "[A-Za-z0-9_-]{0,80}", p in "[A-Za-z0-9_-]{0,120}") {
        let issuer = oidc(&["RS256", "ES256"]);
        let _ = issuer.verify(&s, at(NOW));
        let _ = issuer.claims_token(&s);
        let token = format!("{h}.{p}.{h}");
        let _ = issuer.verify(&token, at(NOW));
        let _ = issuer.claims_token(&token);
    }

    #[test]
    fn odd_jwks_never_panic(kty in "(RSA|EC|OKP|oct|[a-z]{0,3})", crv in "(P-256|P-384|Ed25519|[A-Z]{0,3})",
                            n in "[A-Za-z0-9_-]{0,400}", e in "[A-Za-z0-9_-]{0,8}", x in "[A-Za-z0-9_-]{0,70}") {
        let jwk = json!({"kty": kty, "crv": crv, "n": n, "e": e, "x": x, "y": x, "kid": "k"});
        if let Ok(issuer) = FederatedIssuer::new(
            "x", FederationKind::Oidc, Some(GITHUB.into()), None, vec![AUDIENCE.into()],
            &["RS256".into(), "ES256".into(), "ES384".into(), "EdDSA".into()],
            &json!({"keys": [jwk]}), "sub".into(), [(REPO_SUB.to_string(), agent("deploy-bot"))].into(),
        ) {
            for alg in [Algorithm::RS256, Algorithm::ES256] {
                let _ = issuer.verify(&sign(alg, Some("k"), &claims()), at(NOW));
            }
            let forged = format!("{}.{}.AAAA", b64(br#"{"alg":"ES384","kid":"k"}"#), b64(claims().to_string().as_bytes()));
            let _ = issuer.verify(&forged, at(NOW));
            let forged = format!("{}.{}.AAAA", b64(br#"{"alg":"EdDSA","kid":"k"}"#), b64(claims().to_string().as_bytes()));
            let _ = issuer.verify(&forged, at(NOW));
        }
    }
}

/// Regenerates `tests/vectors/federation.json`: a fresh RSA-2048 and EC P-256 key pair. Test keys only.
#[test]
#[ignore = "regenerates the checked-in test vectors"]
fn regenerate_vectors() {
    use p256::pkcs8::EncodePrivateKey as _;
    use rsa::pkcs1::EncodeRsaPrivateKey as _;
    use rsa::traits::PublicKeyParts as _;

    let mut rng = rand::rngs::OsRng;
    let rsa = rsa::RsaPrivateKey::new(&mut rng, 2048).expect("rsa key");
    let ec = p256::ecdsa::SigningKey::random(&mut rng);
    let point = ec.verifying_key().to_encoded_point(false);
    let vectors = json!({
        "_comment": "TEST KEYS ONLY, for tests/federation.rs. Regenerate with: cargo test -p warden-identity --test federation -- --ignored regenerate_vectors",
        "rsa_2048": {
            "private_pkcs1_der": STANDARD.encode(rsa.to_pkcs1_der().expect("der").as_bytes()),
            "public_jwk": {"kty": "RSA", "n": b64(&rsa.n().to_bytes_be()), "e": b64(&rsa.e().to_bytes_be())},
        },
        "ec_p256": {
            "private_pkcs8_der": STANDARD.encode(ec.to_pkcs8_der().expect("der").as_bytes()),
            "public_jwk": {
                "kty": "EC",
                "crv": "P-256",
                "x": b64(point.x().expect("uncompressed")),
                "y": b64(point.y().expect("uncompressed")),
            },
        },
    });
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/vectors/federation.json");
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&path, serde_json::to_string_pretty(&vectors).unwrap() + "\n").unwrap();
}
