//! Agent assertions (RFC 7523 style): an agent proves who it is with a short-lived JWT it signs with
//! the Ed25519 key it enrolled. No shared secret ever leaves the agent.
//!
//! The server finds the agent from the unverified `iss` ([`assertion_issuer`]), loads that agent's
//! enrolled key, and only then verifies ([`verify_assertion`]). The assertion names the agent by SPIFFE
//! ID in both `iss` and `sub` (RFC 7523 §3: the client is the subject), is for Warden's token endpoint
//! (`aud`), lives at most [`MAX_ASSERTION_LIFETIME_SECS`], and has a `jti` for the caller's replay
//! cache. Verification uses `ed25519-dalek` directly, like task tokens (see `task.rs` for why).

use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::{Number, Value, json};
use uuid::Uuid;
use warden_core::Secret;

use crate::TokenError;
use crate::jws::{self, Compact};
use crate::keys::{PublicKey, SigningKey};
use crate::spiffe::SpiffeId;

pub const MAX_ASSERTION_LIFETIME_SECS: i64 = 300;

/// What a verified assertion says. `jti`/`exp` are for the caller's replay cache (keep the `jti` until
/// `exp + LEEWAY_SECS`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AssertionClaims {
    pub spiffe_id: String,
    pub jti: String,
    pub iat: i64,
    pub exp: i64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AssertionHeader {
    alg: String,
    #[serde(default)]
    typ: Option<String>,
    #[serde(default)]
    kid: Option<String>,
}

/// The claims we read; others are ignored (RFC 7519 §4: unknown claims are not an error).
#[derive(Deserialize)]
struct AssertionPayload {
    #[serde(default)]
    iss: Option<String>,
    #[serde(default)]
    sub: Option<String>,
    #[serde(default)]
    aud: Option<Value>,
    #[serde(default)]
    exp: Option<Number>,
    #[serde(default)]
    iat: Option<Number>,
    #[serde(default)]
    nbf: Option<Number>,
    #[serde(default)]
    jti: Option<String>,
}

/// The `typ` of an assertion: absent or `JWT` (RFC 7519 §5.1; compared case-insensitively as media
/// types are). Anything else is refused, notably `wdn-task+jwt` and `dpop+jwt`: a task token or a DPoP
/// proof can never pass as an assertion.
fn check_typ(typ: Option<&str>) -> Result<(), TokenError> {
    match typ {
        None => Ok(()),
        Some(t) if t.eq_ignore_ascii_case("JWT") => Ok(()),
        Some(t) => Err(TokenError::WrongType {
            expected: "JWT",
            found: jws::shorten(t),
        }),
    }
}

/// Reads `iss` WITHOUT verifying, only to find which agent key to use. Still enforces the size limit,
/// the JWS structure, the header shape, and that `iss` is a SPIFFE ID.
pub fn assertion_issuer(token: &str) -> Result<String, TokenError> {
    let (header, payload): (AssertionHeader, AssertionPayload) = jws::peek(token, "assertion")?;
    check_typ(header.typ.as_deref())?;
    let iss = payload.iss.ok_or(TokenError::MissingClaim("iss"))?;
    SpiffeId::parse(&iss).map_err(|e| TokenError::InvalidClaim {
        claim: "iss".into(),
        message: e.message,
    })?;
    Ok(iss)
}

/// Reads the header's `kid` WITHOUT verifying (None if the assertion has none), for an agent with
/// several enrolled keys. Same structural checks as [`assertion_issuer`].
pub fn assertion_kid(token: &str) -> Result<Option<String>, TokenError> {
    let (header, _): (AssertionHeader, Value) = jws::peek(token, "assertion")?;
    Ok(header.kid)
}

/// Verifies an agent assertion: EdDSA with the agent's enrolled key (a header `kid`, if present, must
/// be that key's kid); `typ` absent or `JWT`; `iss == sub`, a SPIFFE ID; `aud` contains `audience`
/// (string or array); `exp` and `iat` required, `exp - iat <= 300 s`, not expired and not issued in
/// the future (both with `LEEWAY_SECS`); `nbf` honored if present; `jti` required (1 to 256
/// characters).
///
/// The caller must check that the returned `spiffe_id` is the agent whose key it passed (it is when the
/// key was looked up by [`assertion_issuer`]), and must reject a replayed `jti`.
pub fn verify_assertion(
    token: &str,
    agent_key: &PublicKey,
    audience: &str,
    now: DateTime<Utc>,
) -> Result<AssertionClaims, TokenError> {
    let jws = Compact::split(token, "assertion")?;
    let header: AssertionHeader = jws.header_as()?;
    if header.alg != "EdDSA" {
        return Err(TokenError::UnsupportedAlgorithm(jws::shorten(&header.alg)));
    }
    check_typ(header.typ.as_deref())?;
    if let Some(kid) = &header.kid
        && kid != agent_key.kid()
    {
        return Err(TokenError::UnknownKey {
            kid: jws::shorten(kid),
        });
    }
    jws::verify_ed25519(
        agent_key.verifying_key(),
        jws.signing_input.as_bytes(),
        &jws.signature,
    )?;

    let claims: AssertionPayload = jws::parse_json(&jws.payload()?, "payload")?;
    let iss = claims.iss.clone().ok_or(TokenError::MissingClaim("iss"))?;
    SpiffeId::parse(&iss).map_err(|e| TokenError::InvalidClaim {
        claim: "iss".into(),
        message: e.message,
    })?;
    check_claims(claims, &|a| a == audience, now)
}

/// The claim checks every assertion gets, after its signature verified: `iss == sub`, `aud`
/// accepted, `exp`/`iat` required and within the lifetime and the clock, `nbf` honored, `jti`.
fn check_claims(
    claims: AssertionPayload,
    accept_audience: &dyn Fn(&str) -> bool,
    now: DateTime<Utc>,
) -> Result<AssertionClaims, TokenError> {
    let iss = claims.iss.ok_or(TokenError::MissingClaim("iss"))?;
    let sub = claims.sub.ok_or(TokenError::MissingClaim("sub"))?;
    if iss != sub {
        return Err(TokenError::InvalidClaim {
            claim: "sub".into(),
            message: "must equal `iss`: an agent asserts its own identity".into(),
        });
    }
    jws::check_audience(claims.aud.as_ref(), accept_audience)?;
    let exp = jws::required_date(claims.exp.as_ref(), "exp")?;
    let iat = jws::required_date(claims.iat.as_ref(), "iat")?;
    let jti = jws::check_jti(claims.jti)?;
    let now = now.timestamp();
    jws::check_lifetime(iat, exp, MAX_ASSERTION_LIFETIME_SECS)?;
    jws::check_iat(iat, now)?;
    jws::check_exp(exp, now)?;
    if let Some(nbf) = &claims.nbf {
        jws::check_nbf(jws::numeric_date(nbf, "nbf")?, now)?;
    }
    Ok(AssertionClaims {
        spiffe_id: iss,
        jti,
        iat,
        exp,
    })
}

/// Reads `iss` WITHOUT verifying, for a client assertion that came without `client_id` (RFC 7523
/// §3: `iss` is then the client). Same structural checks as [`assertion_issuer`], but `iss` may be an
/// agent's plain name as well as its SPIFFE ID (the caller looks it up either way).
pub fn client_assertion_issuer(token: &str) -> Result<String, TokenError> {
    let (header, payload): (AssertionHeader, AssertionPayload) = jws::peek(token, "client_assertion")?;
    check_typ(header.typ.as_deref())?;
    payload.iss.ok_or(TokenError::MissingClaim("iss"))
}

/// Verifies a client assertion (RFC 7523 §2.2 and §3, `private_key_jwt`): an agent authenticating
/// as an OAuth client with its enrolled key, e.g. an off-the-shelf MCP client.
///
/// * `EdDSA` only (agents' keys are Ed25519); `typ` absent or `JWT`;
/// * a header `kid` must be one of `keys`; an assertion without `kid` (common in OAuth client
///   libraries) is checked against every key in `keys` — the agent's current keys only, so a key the
///   agent rotated away never verifies;
/// * `iss` and `sub` both exactly `client_id` (the identifier the client sent; the caller maps it
///   to the agent whose keys it passed);
/// * `aud` (string or array) holds a value `accept_audience` takes (the token endpoint or the
///   issuer);
/// * `exp`, `iat` required, at most [`MAX_ASSERTION_LIFETIME_SECS`] apart, within the clock leeway;
///   `nbf` honored; `jti` required (the caller refuses a replay).
pub fn verify_client_assertion(
    token: &str,
    keys: &[PublicKey],
    client_id: &str,
    accept_audience: &dyn Fn(&str) -> bool,
    now: DateTime<Utc>,
) -> Result<AssertionClaims, TokenError> {
    let jws = Compact::split(token, "client_assertion")?;
    let header: AssertionHeader = jws.header_as()?;
    if header.alg != "EdDSA" {
        return Err(TokenError::UnsupportedAlgorithm(jws::shorten(&header.alg)));
    }
    check_typ(header.typ.as_deref())?;
    let candidates: Vec<&PublicKey> = match &header.kid {
        Some(kid) => {
            let key = keys
                .iter()
                .find(|k| k.kid() == kid)
                .ok_or_else(|| TokenError::UnknownKey {
                    kid: jws::shorten(kid),
                })?;
            vec![key]
        }
        None => keys.iter().collect(),
    };
    if candidates.is_empty() {
        return Err(TokenError::InvalidKey(
            "the client has no enrolled key to verify with".into(),
        ));
    }
    let verified = candidates.iter().any(|k| {
        jws::verify_ed25519(k.verifying_key(), jws.signing_input.as_bytes(), &jws.signature).is_ok()
    });
    if !verified {
        return Err(TokenError::BadSignature);
    }
    let claims: AssertionPayload = jws::parse_json(&jws.payload()?, "payload")?;
    match claims.iss.as_deref() {
        None => return Err(TokenError::MissingClaim("iss")),
        Some(iss) if iss != client_id => {
            return Err(TokenError::InvalidClaim {
                claim: "iss".into(),
                message: format!(
                    "must be the client_id `{}` (RFC 7523 §3)",
                    jws::shorten(client_id)
                ),
            });
        }
        Some(_) => {}
    }
    check_claims(claims, accept_audience, now)
}

/// Creates an assertion (used by the `warden` CLI acting as an agent, and by tests): header
/// `{"alg":"EdDSA","typ":"JWT","kid":..}`, claims `iss`/`sub` = `spiffe_id`, `aud`, `iat` = now,
/// `exp` = now + `lifetime_secs` (1 to 300), a random `jti`.
pub fn create_assertion(
    key: &SigningKey,
    spiffe_id: &str,
    audience: &str,
    now: DateTime<Utc>,
    lifetime_secs: i64,
) -> Result<Secret<String>, TokenError> {
    SpiffeId::parse(spiffe_id).map_err(|e| TokenError::InvalidClaim {
        claim: "iss".into(),
        message: e.message,
    })?;
    if audience.is_empty() {
        return Err(TokenError::InvalidClaim {
            claim: "aud".into(),
            message: "must not be empty".into(),
        });
    }
    let iat = now.timestamp();
    let exp = iat.saturating_add(lifetime_secs);
    jws::check_lifetime(iat, exp, MAX_ASSERTION_LIFETIME_SECS)?;
    let header = format!(r#"{{"alg":"EdDSA","typ":"JWT","kid":"{}"}}"#, key.kid());
    let payload = json!({
        "iss": spiffe_id,
        "sub": spiffe_id,
        "aud": audience,
        "iat": iat,
        "exp": exp,
        "jti": Uuid::new_v4().to_string(),
    });
    Ok(Secret::new(jws::sign_ed25519(
        key.dalek(),
        header.as_bytes(),
        payload.to_string().as_bytes(),
    )))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::TASK_TOKEN_TYP;
    use crate::test_support::*;
    use proptest::prelude::*;

    fn agent_key() -> &'static SigningKey {
        test_key()
    }

    fn verify(token: &str, now: i64) -> Result<AssertionClaims, TokenError> {
        verify_assertion(token, &agent_key().public(), AUDIENCE, at(now))
    }

    fn claims(iat: i64, exp: i64) -> Value {
        json!({"iss": AGENT, "sub": AGENT, "aud": AUDIENCE, "iat": iat, "exp": exp, "jti": "j-1"})
    }

    fn header() -> Value {
        json!({"alg": "EdDSA", "typ": "JWT", "kid": agent_key().kid()})
    }

    fn signed(claims: &Value) -> String {
        forge(&header(), claims, agent_key())
    }

    #[test]
    fn create_then_verify() {
        let token = create_assertion(agent_key(), AGENT, AUDIENCE, at(NOW), 60).expect("created");
        let claims = verify(token.expose(), NOW).expect("verified");
        assert_eq!(claims.spiffe_id, AGENT);
        assert_eq!((claims.iat, claims.exp), (NOW, NOW + 60));
        assert!(!claims.jti.is_empty());
        assert_eq!(assertion_issuer(token.expose()), Ok(AGENT.to_owned()));
        assert_eq!(
            assertion_kid(token.expose()),
            Ok(Some(agent_key().kid().to_owned()))
        );
        // Two assertions never share a jti.
        let again = create_assertion(agent_key(), AGENT, AUDIENCE, at(NOW), 60).expect("created");
        assert_ne!(verify(again.expose(), NOW).expect("verified").jti, claims.jti);
    }

    #[test]
    fn create_refuses_bad_input() {
        assert!(create_assertion(agent_key(), "billing-bot", AUDIENCE, at(NOW), 60).is_err());
        assert!(create_assertion(agent_key(), AGENT, "", at(NOW), 60).is_err());
        assert_eq!(
            create_assertion(agent_key(), AGENT, AUDIENCE, at(NOW), 301).map(|_| ()),
            Err(TokenError::LifetimeTooLong { max_secs: 300 })
        );
        assert!(create_assertion(agent_key(), AGENT, AUDIENCE, at(NOW), 0).is_err());
    }

    #[test]
    fn accepted_variants() {
        let mut c = claims(NOW, NOW + 300);
        c["aud"] = json!(["https://other", AUDIENCE]);
        c["nbf"] = json!(NOW);
        c["extra"] = json!({"anything": true});
        assert!(verify(&signed(&c), NOW).is_ok());
        let no_typ_no_kid = forge(&json!({"alg": "EdDSA"}), &claims(NOW, NOW + 60), agent_key());
        assert!(verify(&no_typ_no_kid, NOW).is_ok());
        assert_eq!(assertion_kid(&no_typ_no_kid), Ok(None));
        let lower_typ = forge(
            &json!({"alg": "EdDSA", "typ": "jwt"}),
            &claims(NOW, NOW + 60),
            agent_key(),
        );
        assert!(verify(&lower_typ, NOW).is_ok());
    }

    #[test]
    fn time_refusals() {
        let token = signed(&claims(NOW, NOW + 300));
        assert_eq!(verify(&token, NOW + 300 + LEEWAY), Err(TokenError::Expired));
        assert!(verify(&token, NOW + 300 + LEEWAY - 1).is_ok());
        assert_eq!(verify(&token, NOW - LEEWAY - 1), Err(TokenError::IssuedInFuture));
        let mut c = claims(NOW, NOW + 60);
        c["nbf"] = json!(NOW + 100);
        assert_eq!(verify(&signed(&c), NOW), Err(TokenError::NotYetValid));
        assert_eq!(
            verify(&signed(&claims(NOW, NOW + 301)), NOW),
            Err(TokenError::LifetimeTooLong { max_secs: 300 })
        );
        assert!(matches!(
            verify(&signed(&claims(NOW, NOW)), NOW),
            Err(TokenError::InvalidClaim { .. })
        ));
        // Fractional NumericDates are read (rounded down).
        let mut c = claims(NOW, NOW + 60);
        c["iat"] = json!(NOW as f64 + 0.5);
        assert!(verify(&signed(&c), NOW).is_ok());
    }

    #[test]
    fn claim_refusals() {
        let without = |name: &str| {
            let mut c = claims(NOW, NOW + 60);
            c.as_object_mut().expect("object").remove(name);
            verify(&signed(&c), NOW)
        };
        assert_eq!(without("jti"), Err(TokenError::MissingClaim("jti")));
        assert_eq!(without("exp"), Err(TokenError::MissingClaim("exp")));
        assert_eq!(without("iat"), Err(TokenError::MissingClaim("iat")));
        assert_eq!(without("aud"), Err(TokenError::MissingClaim("aud")));
        assert_eq!(without("iss"), Err(TokenError::MissingClaim("iss")));
        assert_eq!(without("sub"), Err(TokenError::MissingClaim("sub")));
        let with = |name: &str, value: Value| {
            let mut c = claims(NOW, NOW + 60);
            c[name] = value;
            verify(&signed(&c), NOW)
        };
        assert_eq!(
            with("aud", json!("https://other")),
            Err(TokenError::WrongAudience)
        );
        assert_eq!(with("aud", json!(["a", "b"])), Err(TokenError::WrongAudience));
        assert!(matches!(
            with("jti", json!("")),
            Err(TokenError::InvalidClaim { .. })
        ));
        assert!(matches!(
            with("jti", json!("x".repeat(257))),
            Err(TokenError::InvalidClaim { .. })
        ));
        assert!(matches!(with("jti", json!(5)), Err(TokenError::Malformed(_))));
        assert!(matches!(
            with("sub", json!("spiffe://warden.local/agent/other")),
            Err(TokenError::InvalidClaim { claim, .. }) if claim == "sub"
        ));
        let mut c = claims(NOW, NOW + 60);
        c["iss"] = json!("billing-bot");
        c["sub"] = json!("billing-bot");
        assert!(
            matches!(verify(&signed(&c), NOW), Err(TokenError::InvalidClaim { claim, .. }) if claim == "iss")
        );
        assert!(assertion_issuer(&signed(&c)).is_err());
    }

    #[test]
    fn key_and_signature_refusals() {
        let token = signed(&claims(NOW, NOW + 60));
        let other = signing_key();
        // Right kid in the header, wrong key given: the kid check fails first.
        assert!(matches!(
            verify_assertion(&token, &other.public(), AUDIENCE, at(NOW)),
            Err(TokenError::UnknownKey { .. })
        ));
        // No kid, signed by another key.
        let token = forge(&json!({"alg":"EdDSA"}), &claims(NOW, NOW + 60), &other);
        assert_eq!(verify(&token, NOW), Err(TokenError::BadSignature));
        // Tampered payload.
        let token = signed(&claims(NOW, NOW + 60));
        let mut parts: Vec<String> = token.split('.').map(str::to_owned).collect();
        let mut c = claims(NOW, NOW + 60);
        c["sub"] = json!("spiffe://warden.local/agent/admin");
        c["iss"] = json!("spiffe://warden.local/agent/admin");
        parts[1] = jws::b64(c.to_string().as_bytes());
        assert_eq!(verify(&parts.join("."), NOW), Err(TokenError::BadSignature));
        // One flipped bit in the signature.
        let token = signed(&claims(NOW, NOW + 60));
        let (head, sig) = token.rsplit_once('.').expect("three parts");
        let mut sig =
            base64::Engine::decode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, sig).expect("b64");
        sig[17] ^= 0x01;
        assert_eq!(
            verify(&format!("{head}.{}", jws::b64(&sig)), NOW),
            Err(TokenError::BadSignature)
        );
    }

    #[test]
    fn header_refusals() {
        let c = claims(NOW, NOW + 60);
        let none = format!(
            "{}.{}.AAAA",
            jws::b64(br#"{"alg":"none"}"#),
            jws::b64(c.to_string().as_bytes())
        );
        assert_eq!(
            verify(&none, NOW),
            Err(TokenError::UnsupportedAlgorithm("none".into()))
        );
        let key_bytes = agent_key().public().verifying_key().to_bytes();
        let hs = hs256(&json!({"alg":"HS256","typ":"JWT"}), &c, &key_bytes);
        assert_eq!(
            verify(&hs, NOW),
            Err(TokenError::UnsupportedAlgorithm("HS256".into()))
        );
        let hs = hs256(
            &json!({"alg":"HS256"}),
            &c,
            agent_key().public().x_b64().as_bytes(),
        );
        assert_eq!(
            verify(&hs, NOW),
            Err(TokenError::UnsupportedAlgorithm("HS256".into()))
        );
        let dpop_typ = forge(&json!({"alg":"EdDSA","typ":"dpop+jwt"}), &c, agent_key());
        assert!(matches!(
            verify(&dpop_typ, NOW),
            Err(TokenError::WrongType { .. })
        ));
        let jwk = forge(
            &json!({"alg":"EdDSA","jwk":agent_key().public().to_jwk()}),
            &c,
            agent_key(),
        );
        assert!(matches!(verify(&jwk, NOW), Err(TokenError::Malformed(_))));
        let huge = format!("{}.{}.AAAA", "e".repeat(5000), "e".repeat(5000));
        assert!(matches!(verify(&huge, NOW), Err(TokenError::TooLarge { .. })));
        assert!(matches!(
            assertion_issuer(&huge),
            Err(TokenError::TooLarge { .. })
        ));
    }

    #[test]
    fn a_task_token_is_not_an_assertion() {
        // Even if the verifier were handed Warden's own key, a task token is refused by its `typ`.
        let mut c = sample_claims(NOW);
        c.sub = AGENT.into();
        let task = crate::issue_task_token(agent_key(), &c).expect("issued");
        assert_eq!(
            verify(task.expose(), NOW),
            Err(TokenError::WrongType {
                expected: "JWT",
                found: TASK_TOKEN_TYP.into()
            })
        );
        assert!(matches!(
            assertion_issuer(task.expose()),
            Err(TokenError::WrongType { .. })
        ));
    }

    proptest! {
        #[test]
        fn never_panics(s in "\\PC{0,400}") {
            let _ = verify(&s, NOW);
            let _ = assertion_issuer(&s);
            let _ = assertion_kid(&s);
        }

        #[test]
        fn never_panics_on_signed_garbage(
            iss in prop::option::of("\\PC{0,30}"),
            aud in prop::option::of(prop_oneof![Just(json!(AUDIENCE)), Just(json!([AUDIENCE, 1])), Just(json!(null))]),
            iat in prop::option::of(any::<i64>()),
            exp in prop::option::of(prop_oneof![any::<i64>().prop_map(|v| json!(v)), any::<f64>().prop_map(|v| json!(v))]),
            jti in prop::option::of("\\PC{0,5}"),
        ) {
            let mut c = serde_json::Map::new();
            if let Some(iss) = iss { c.insert("iss".into(), json!(iss)); c.insert("sub".into(), json!(iss)); }
            if let Some(aud) = aud { c.insert("aud".into(), aud); }
            if let Some(iat) = iat { c.insert("iat".into(), json!(iat)); }
            if let Some(exp) = exp { c.insert("exp".into(), exp); }
            if let Some(jti) = jti { c.insert("jti".into(), json!(jti)); }
            let token = signed(&Value::Object(c));
            let _ = verify(&token, NOW);
            let _ = assertion_issuer(&token);
        }
    }

    mod client_assertions {
        use super::*;

        const CLIENT: &str = AGENT;

        fn kidless(claims: &Value, key: &SigningKey) -> String {
            forge(&json!({"alg": "EdDSA", "typ": "JWT"}), claims, key)
        }

        fn accept(aud: &str) -> bool {
            aud == AUDIENCE
        }

        fn check(token: &str, keys: &[PublicKey], client: &str) -> Result<AssertionClaims, TokenError> {
            verify_client_assertion(token, keys, client, &accept, at(NOW))
        }

        #[test]
        fn kidless_assertions_verify_against_the_current_keys() {
            let token = kidless(&claims(NOW, NOW + 60), agent_key());
            let other = signing_key();
            let got = check(&token, &[other.public(), agent_key().public()], CLIENT).expect("one key fits");
            assert_eq!((got.spiffe_id.as_str(), got.jti.as_str()), (CLIENT, "j-1"));
            assert_eq!(client_assertion_issuer(&token), Ok(CLIENT.to_owned()));
            // A key the agent no longer has (rotated away) is not among the keys passed: refused.
            assert_eq!(
                check(&token, &[other.public()], CLIENT),
                Err(TokenError::BadSignature)
            );
            assert!(matches!(
                check(&token, &[], CLIENT),
                Err(TokenError::InvalidKey(_))
            ));
        }

        #[test]
        fn a_kid_must_be_one_of_the_keys() {
            let token = signed(&claims(NOW, NOW + 60));
            assert!(check(&token, &[agent_key().public()], CLIENT).is_ok());
            let other = signing_key();
            assert!(matches!(
                check(&token, &[other.public()], CLIENT),
                Err(TokenError::UnknownKey { .. })
            ));
        }

        #[test]
        fn claims_are_checked() {
            let key = agent_key();
            let keys = [key.public()];
            let mut c = claims(NOW, NOW + 60);
            c["iss"] = "spiffe://warden.local/agent/other".into();
            c["sub"] = "spiffe://warden.local/agent/other".into();
            let e = check(&kidless(&c, key), &keys, CLIENT).expect_err("iss is not the client");
            assert!(e.to_string().contains("client_id"), "{e}");
            // A plain name works when it is the client_id (iss = sub = client_id).
            let mut c = claims(NOW, NOW + 60);
            c["iss"] = "billing-bot".into();
            c["sub"] = "billing-bot".into();
            assert!(check(&kidless(&c, key), &keys, "billing-bot").is_ok());
            let mut c = claims(NOW, NOW + 60);
            c["sub"] = "billing-bot".into();
            assert!(matches!(
                check(&kidless(&c, key), &keys, CLIENT),
                Err(TokenError::InvalidClaim { .. })
            ));
            let mut c = claims(NOW, NOW + 60);
            c["aud"] = "https://elsewhere.example".into();
            assert_eq!(
                check(&kidless(&c, key), &keys, CLIENT),
                Err(TokenError::WrongAudience)
            );
            assert_eq!(
                check(&kidless(&claims(NOW, NOW + 3600), key), &keys, CLIENT),
                Err(TokenError::LifetimeTooLong { max_secs: 300 })
            );
            assert_eq!(
                check(&kidless(&claims(NOW - 400, NOW - 300), key), &keys, CLIENT),
                Err(TokenError::Expired)
            );
            let mut c = claims(NOW, NOW + 60);
            c.as_object_mut().expect("object").remove("jti");
            assert_eq!(
                check(&kidless(&c, key), &keys, CLIENT),
                Err(TokenError::MissingClaim("jti"))
            );
            for alg in ["RS256", "HS256", "none", "ES256"] {
                let t = forge(&json!({"alg": alg, "typ": "JWT"}), &claims(NOW, NOW + 60), key);
                assert!(matches!(
                    check(&t, &keys, CLIENT),
                    Err(TokenError::UnsupportedAlgorithm(_))
                ));
            }
            let t = forge(
                &json!({"alg": "EdDSA", "typ": TASK_TOKEN_TYP}),
                &claims(NOW, NOW + 60),
                key,
            );
            assert!(matches!(
                check(&t, &keys, CLIENT),
                Err(TokenError::WrongType { .. })
            ));
        }

        #[test]
        fn errors_never_show_the_assertion() {
            let token = kidless(&claims(NOW, NOW + 60), agent_key());
            let e = check(&token, &[signing_key().public()], CLIENT).expect_err("wrong key");
            assert!(!e.to_string().contains(&token));
        }
    }
}
