//! DPoP (RFC 9449): proof that the presenter of a task token holds the private key the token is bound
//! to (`cnf.jkt`), so a stolen token alone is useless.
//!
//! A proof is a JWT with `typ: dpop+jwt`, the public key in the header (`jwk`), signed by that key,
//! claiming the HTTP method and URL of this request (`htm`, `htu`), when (`iat`), a unique `jti`, and
//! with a token, `ath` = its SHA-256. The verifier returns the key's RFC 7638 thumbprint; the caller
//! compares it with the token's `cnf.jkt` and keeps the `jti` in its replay cache. Errors are all
//! [`TokenError::DpopProof`], whose code is `invalid_dpop_proof`.
//!
//! Algorithms: EdDSA (verified with `ed25519-dalek`) and ES256 (with `jsonwebtoken`'s ECDSA). The key
//! type must match the algorithm; anything else, including every HMAC algorithm, is refused.

use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::{Map, Number, Value, json};
use sha2::{Digest as _, Sha256};
use uuid::Uuid;
use warden_core::Secret;

use crate::jws::{self, Compact};
use crate::keys::{PublicKey, SigningKey, jwk_thumbprint};
use crate::{LEEWAY_SECS, TokenError};

pub const DPOP_TYP: &str = "dpop+jwt";
/// A proof older than this (by its `iat`) is refused: RFC 9449 §11.1 asks for a short window, and a
/// proof is made for one request.
pub const DPOP_MAX_AGE_SECS: i64 = 60;

/// What a verified proof says. `jkt` is the RFC 7638 thumbprint of the proof's key; `jti`/`iat` are for
/// the caller's replay cache (keep the `jti` for `DPOP_MAX_AGE_SECS + LEEWAY_SECS`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DpopProof {
    pub jkt: String,
    pub jti: String,
    pub iat: i64,
}

/// Header members other than these are ignored, except `crit` (no extension is understood).
#[derive(Deserialize)]
struct DpopHeader {
    #[serde(default)]
    typ: Option<String>,
    alg: String,
    #[serde(default)]
    jwk: Option<Value>,
    #[serde(default)]
    crit: Option<Value>,
}

#[derive(Deserialize)]
struct DpopClaims {
    #[serde(default)]
    jti: Option<String>,
    #[serde(default)]
    htm: Option<String>,
    #[serde(default)]
    htu: Option<String>,
    #[serde(default)]
    iat: Option<Number>,
    #[serde(default)]
    ath: Option<String>,
}

/// JWK members that hold private key material (RFC 7518 §6.2.2, §6.3.2, §6.4; RFC 8037 §2).
const PRIVATE_MEMBERS: &[&str] = &["d", "p", "q", "dp", "dq", "qi", "oth", "k"];

/// Verifies a DPoP proof JWT: typ `dpop+jwt`; alg EdDSA or ES256; a public `jwk` in the header (private
/// members like `d` are refused) of the type the algorithm needs; the signature by that jwk; `htm` ==
/// `method` (case-sensitive); `htu` == `url` compared without query and fragment and after RFC 3986
/// §6.2.2/§6.2.3 normalization (case of scheme and host, default port, empty path, percent-encoding);
/// `iat` at most `LEEWAY_SECS` ahead and at most [`DPOP_MAX_AGE_SECS`] old; `jti` required; `ath`
/// required and equal to base64url(SHA-256(access_token)) when `access_token` is Some, and refused
/// when it is None. Returns the RFC 7638 thumbprint of the jwk as `jkt`. Replay (`jti`) is the caller's
/// job.
///
/// `url` is the request's absolute URL as the client addressed it (Warden's public base URL + path).
pub fn verify_dpop_proof(
    proof: &str,
    method: &str,
    url: &str,
    access_token: Option<&str>,
    now: DateTime<Utc>,
) -> Result<DpopProof, TokenError> {
    verify(proof, method, url, access_token, now).map_err(TokenError::in_dpop_proof)
}

fn verify(
    proof: &str,
    method: &str,
    url: &str,
    access_token: Option<&str>,
    now: DateTime<Utc>,
) -> Result<DpopProof, TokenError> {
    let jws = Compact::split(proof, "dpop proof")?;
    let header: DpopHeader = jws.header_as()?;
    let typ = header.typ.unwrap_or_default();
    if !typ.eq_ignore_ascii_case(DPOP_TYP) {
        return Err(TokenError::WrongType {
            expected: DPOP_TYP,
            found: jws::shorten(&typ),
        });
    }
    if header.crit.is_some() {
        return Err(TokenError::Malformed(
            "the header has `crit`; no extension is supported".into(),
        ));
    }
    let alg = header.alg.as_str();
    if alg != "EdDSA" && alg != "ES256" {
        return Err(TokenError::UnsupportedAlgorithm(jws::shorten(alg)));
    }
    let jwk = header
        .jwk
        .ok_or_else(|| TokenError::Malformed("the header has no `jwk`".into()))?;
    let obj = jwk
        .as_object()
        .ok_or_else(|| TokenError::InvalidKey("`jwk` must be a JSON object".into()))?;
    if let Some(member) = PRIVATE_MEMBERS.iter().find(|m| obj.contains_key(**m)) {
        return Err(TokenError::InvalidKey(format!(
            "`jwk` contains private key material (`{member}`); a proof carries only the public key"
        )));
    }
    let kty = obj.get("kty").and_then(Value::as_str).unwrap_or("");
    let crv = obj.get("crv").and_then(Value::as_str).unwrap_or("");
    let mismatch = |needed: &str| TokenError::KeyAlgorithmMismatch {
        alg: alg.to_owned(),
        kid: "jwk".into(),
        message: format!(
            "`{alg}` needs {needed}, the key is `kty` `{}` `crv` `{}`",
            jws::shorten(kty),
            jws::shorten(crv)
        ),
    };
    match alg {
        "EdDSA" => {
            if (kty, crv) != ("OKP", "Ed25519") {
                return Err(mismatch("an Ed25519 key"));
            }
            let key = PublicKey::from_x_b64(None, string_member(obj, "x")?)?;
            jws::verify_ed25519(key.verifying_key(), jws.signing_input.as_bytes(), &jws.signature)?;
        }
        _ => {
            if (kty, crv) != ("EC", "P-256") {
                return Err(mismatch("a P-256 key"));
            }
            verify_es256(obj, &jws)?;
        }
    }
    let jkt = jwk_thumbprint(&jwk)?;

    let claims: DpopClaims = jws::parse_json(&jws.payload()?, "payload")?;
    let jti = jws::check_jti(claims.jti)?;
    let htm = claims.htm.ok_or(TokenError::MissingClaim("htm"))?;
    if htm != method {
        return Err(TokenError::InvalidClaim {
            claim: "htm".into(),
            message: format!("`{}` is not the request method `{method}`", jws::shorten(&htm)),
        });
    }
    let htu = claims.htu.ok_or(TokenError::MissingClaim("htu"))?;
    match (normalize_htu(&htu), normalize_htu(url)) {
        (Some(a), Some(b)) if a == b => {}
        _ => {
            return Err(TokenError::InvalidClaim {
                claim: "htu".into(),
                message: format!("`{}` is not the request URL", jws::shorten(&htu)),
            });
        }
    }
    let iat = jws::required_date(claims.iat.as_ref(), "iat")?;
    let now = now.timestamp();
    jws::check_iat(iat, now)?;
    if now.saturating_sub(iat) > DPOP_MAX_AGE_SECS {
        return Err(TokenError::TooOld {
            max_age_secs: DPOP_MAX_AGE_SECS,
        });
    }
    match (access_token, claims.ath) {
        (Some(token), Some(ath)) => {
            if ath != access_token_hash(token) {
                return Err(TokenError::InvalidClaim {
                    claim: "ath".into(),
                    message: "does not match the access token".into(),
                });
            }
        }
        (Some(_), None) => return Err(TokenError::MissingClaim("ath")),
        (None, Some(_)) => {
            return Err(TokenError::InvalidClaim {
                claim: "ath".into(),
                message: "is present but no access token came with the proof".into(),
            });
        }
        (None, None) => {}
    }
    Ok(DpopProof { jkt, jti, iat })
}

fn string_member<'a>(obj: &'a Map<String, Value>, name: &str) -> Result<&'a str, TokenError> {
    obj.get(name)
        .and_then(Value::as_str)
        .ok_or_else(|| TokenError::InvalidKey(format!("`jwk.{name}` is missing or not a string")))
}

fn verify_es256(jwk: &Map<String, Value>, jws: &Compact<'_>) -> Result<(), TokenError> {
    let (x, y) = (string_member(jwk, "x")?, string_member(jwk, "y")?);
    for (name, value) in [("x", x), ("y", y)] {
        if jws::b64_decode_field(value, name)?.len() != 32 {
            return Err(TokenError::InvalidKey(format!(
                "`jwk.{name}` is not a P-256 coordinate"
            )));
        }
    }
    if jws.signature.len() != 64 {
        return Err(TokenError::BadSignature);
    }
    let key = jsonwebtoken::DecodingKey::from_ec_components(x, y)
        .map_err(|_| TokenError::InvalidKey("`jwk` is not a P-256 public key".into()))?;
    match jsonwebtoken::crypto::verify(
        jws.signature_b64(),
        jws.signing_input.as_bytes(),
        &key,
        jsonwebtoken::Algorithm::ES256,
    ) {
        Ok(true) => Ok(()),
        Ok(false) => Err(TokenError::BadSignature),
        // The point is not on the curve (checked when the verifier is built).
        Err(_) => Err(TokenError::InvalidKey("`jwk` is not a P-256 public key".into())),
    }
}

/// `ath` for a token: base64url(SHA-256(ASCII token)) (RFC 9449 §4.2).
pub fn access_token_hash(access_token: &str) -> String {
    jws::b64(&Sha256::digest(access_token.as_bytes()))
}

/// `htu` comparison form (RFC 9449 §4.3 step 9 and RFC 3986 §6.2.2, §6.2.3): query and fragment
/// dropped; scheme and host lowercased; the scheme's default port dropped; an empty path is `/`;
/// percent-encodings uppercased, and decoded where they encode an unreserved character. None if the
/// value is not an absolute `http(s)` URL.
fn normalize_htu(url: &str) -> Option<String> {
    let url = url.split(['#', '?']).next().unwrap_or("");
    let (scheme, rest) = url.split_once("://")?;
    let scheme = scheme.to_ascii_lowercase();
    let default_port = match scheme.as_str() {
        "https" => ":443",
        "http" => ":80",
        _ => return None,
    };
    let (authority, path) = rest.find('/').map_or((rest, ""), |i| rest.split_at(i));
    if authority.is_empty() || authority.contains('@') {
        return None;
    }
    let mut authority = authority.to_ascii_lowercase();
    if authority.ends_with(default_port) {
        authority.truncate(authority.len() - default_port.len());
    } else if authority.ends_with(':') {
        authority.pop();
    }
    let mut out = format!("{scheme}://{authority}");
    if path.is_empty() {
        out.push('/');
        return Some(out);
    }
    let bytes = path.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = path.get(i + 1..i + 3)?;
            let value = u8::from_str_radix(hex, 16).ok()?;
            if value.is_ascii_alphanumeric() || b"-._~".contains(&value) {
                out.push(char::from(value));
            } else {
                out.push('%');
                out.push_str(&hex.to_ascii_uppercase());
            }
            i += 3;
        } else {
            let c = path[i..].chars().next()?;
            out.push(c);
            i += c.len_utf8();
        }
    }
    Some(out)
}

/// Creates a proof (for the CLI and tests), signed with an Ed25519 key: header `typ`, `alg` EdDSA,
/// `jwk` (the public key); claims a random `jti`, `htm`, `htu` (`url` without query and fragment),
/// `iat`, and `ath` when `access_token` is given. The resulting `jkt` is `key.kid()`.
pub fn create_dpop_proof(
    key: &SigningKey,
    method: &str,
    url: &str,
    access_token: Option<&str>,
    now: DateTime<Utc>,
) -> Result<Secret<String>, TokenError> {
    if method.is_empty() || !method.bytes().all(|b| b.is_ascii_alphabetic()) {
        return Err(TokenError::InvalidClaim {
            claim: "htm".into(),
            message: "not an HTTP method".into(),
        });
    }
    if normalize_htu(url).is_none() {
        return Err(TokenError::InvalidClaim {
            claim: "htu".into(),
            message: "not an absolute http(s) URL".into(),
        });
    }
    let public = key.public();
    let header = json!({
        "typ": DPOP_TYP,
        "alg": "EdDSA",
        "jwk": {"kty": "OKP", "crv": "Ed25519", "x": public.x_b64()},
    });
    let mut claims = json!({
        "jti": Uuid::new_v4().to_string(),
        "htm": method,
        "htu": url.split(['#', '?']).next().unwrap_or(url),
        "iat": now.timestamp(),
    });
    if let (Some(token), Some(obj)) = (access_token, claims.as_object_mut()) {
        obj.insert("ath".into(), json!(access_token_hash(token)));
    }
    Ok(Secret::new(jws::sign_ed25519(
        key.dalek(),
        header.to_string().as_bytes(),
        claims.to_string().as_bytes(),
    )))
}

const _: () = assert!(DPOP_MAX_AGE_SECS > LEEWAY_SECS);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::*;
    use p256::ecdsa::signature::Signer as _;
    use proptest::prelude::*;

    const URL: &str = "https://warden.example.com/mcp/crm";
    const TOKEN: &str = "the.access.token";

    fn verify(proof: &str, now: i64) -> Result<DpopProof, TokenError> {
        verify_dpop_proof(proof, "POST", URL, Some(TOKEN), at(now))
    }

    fn unwrap_dpop(e: TokenError) -> TokenError {
        match e {
            TokenError::DpopProof(inner) => *inner,
            other => panic!("not wrapped: {other:?}"),
        }
    }

    fn ed_header(key: &SigningKey) -> Value {
        json!({"typ": DPOP_TYP, "alg": "EdDSA", "jwk": {"kty":"OKP","crv":"Ed25519","x": key.public().x_b64()}})
    }

    fn claims(iat: i64) -> Value {
        json!({"jti": "p-1", "htm": "POST", "htu": URL, "iat": iat, "ath": access_token_hash(TOKEN)})
    }

    fn refusal(header: &Value, claims: &Value) -> TokenError {
        unwrap_dpop(verify(&forge(header, claims, test_key()), NOW).expect_err("refused"))
    }

    #[test]
    fn create_then_verify() {
        let key = test_key();
        let proof = create_dpop_proof(key, "POST", URL, Some(TOKEN), at(NOW)).expect("created");
        let verified = verify(proof.expose(), NOW).expect("verified");
        assert_eq!(verified.jkt, key.kid());
        assert_eq!(verified.iat, NOW);
        // Without a token (at the token endpoint).
        let proof = create_dpop_proof(key, "POST", "https://warden.example.com/v1/token", None, at(NOW))
            .expect("created");
        let verified = verify_dpop_proof(
            proof.expose(),
            "POST",
            "https://warden.example.com/v1/token",
            None,
            at(NOW),
        )
        .expect("verified");
        assert_eq!(verified.jkt, key.kid());
        assert!(create_dpop_proof(key, "", URL, None, at(NOW)).is_err());
        assert!(create_dpop_proof(key, "POST", "/relative", None, at(NOW)).is_err());
    }

    #[test]
    fn htm_and_htu() {
        let proof = create_dpop_proof(test_key(), "POST", URL, Some(TOKEN), at(NOW)).expect("created");
        let p = proof.expose();
        let check = |method: &str, url: &str| verify_dpop_proof(p, method, url, Some(TOKEN), at(NOW));
        assert!(
            matches!(check("post", URL).map_err(unwrap_dpop), Err(TokenError::InvalidClaim { claim, .. }) if claim == "htm")
        );
        assert!(
            matches!(check("GET", URL).map_err(unwrap_dpop), Err(TokenError::InvalidClaim { claim, .. }) if claim == "htm")
        );
        for other in [
            "https://warden.example.com/mcp/db",
            "https://evil.example.com/mcp/crm",
            "http://warden.example.com/mcp/crm",
            "https://warden.example.com:8443/mcp/crm",
            "https://warden.example.com/mcp/crm/",
            "https://warden.example.com/MCP/crm",
        ] {
            let err = check("POST", other).map_err(unwrap_dpop).expect_err(other);
            assert!(
                matches!(&err, TokenError::InvalidClaim { claim, .. } if claim == "htu"),
                "{other}: {err}"
            );
        }
        for same in [
            "https://warden.example.com/mcp/crm?session=1",
            "https://warden.example.com/mcp/crm#frag",
            "HTTPS://Warden.Example.COM/mcp/crm",
            "https://warden.example.com:443/mcp/crm",
            "https://warden.example.com/mcp/%63rm",
        ] {
            assert!(check("POST", same).is_ok(), "{same}");
        }
    }

    #[test]
    fn normalization() {
        assert_eq!(
            normalize_htu("https://a.example").as_deref(),
            Some("https://a.example/")
        );
        assert_eq!(normalize_htu("http://a:80/x").as_deref(), Some("http://a/x"));
        assert_eq!(normalize_htu("http://a:/x").as_deref(), Some("http://a/x"));
        assert_eq!(
            normalize_htu("https://[::1]:443/x").as_deref(),
            Some("https://[::1]/x")
        );
        assert_eq!(
            normalize_htu("https://a/%2f%7e%41").as_deref(),
            Some("https://a/%2F~A")
        );
        assert_eq!(normalize_htu("https://a/é").as_deref(), Some("https://a/é"));
        for bad in [
            "",
            "a/b",
            "ftp://a/b",
            "https:///x",
            "https://u@a/x",
            "https://a/%zz",
            "https://a/%4",
        ] {
            assert_eq!(normalize_htu(bad), None, "{bad}");
        }
    }

    #[test]
    fn ath() {
        let key = test_key();
        let proof = create_dpop_proof(key, "POST", URL, Some("another.token"), at(NOW)).expect("created");
        assert!(
            matches!(unwrap_dpop(verify(proof.expose(), NOW).expect_err("refused")), TokenError::InvalidClaim { claim, .. } if claim == "ath")
        );
        let proof = create_dpop_proof(key, "POST", URL, None, at(NOW)).expect("created");
        assert_eq!(
            unwrap_dpop(verify(proof.expose(), NOW).expect_err("refused")),
            TokenError::MissingClaim("ath")
        );
        let proof = create_dpop_proof(key, "POST", URL, Some(TOKEN), at(NOW)).expect("created");
        let err = verify_dpop_proof(proof.expose(), "POST", URL, None, at(NOW)).expect_err("refused");
        assert!(matches!(unwrap_dpop(err), TokenError::InvalidClaim { claim, .. } if claim == "ath"));
    }

    #[test]
    fn time_refusals() {
        let proof = forge(&ed_header(test_key()), &claims(NOW), test_key());
        assert!(verify(&proof, NOW + DPOP_MAX_AGE_SECS).is_ok());
        assert_eq!(
            unwrap_dpop(verify(&proof, NOW + DPOP_MAX_AGE_SECS + 1).expect_err("stale")),
            TokenError::TooOld { max_age_secs: 60 }
        );
        assert!(verify(&proof, NOW - LEEWAY).is_ok());
        assert_eq!(
            unwrap_dpop(verify(&proof, NOW - LEEWAY - 1).expect_err("future")),
            TokenError::IssuedInFuture
        );
        let mut c = claims(NOW);
        c.as_object_mut().expect("object").remove("iat");
        assert_eq!(
            refusal(&ed_header(test_key()), &c),
            TokenError::MissingClaim("iat")
        );
    }

    #[test]
    fn claim_refusals() {
        let h = ed_header(test_key());
        let mut c = claims(NOW);
        c.as_object_mut().expect("object").remove("jti");
        assert_eq!(refusal(&h, &c), TokenError::MissingClaim("jti"));
        let mut c = claims(NOW);
        c.as_object_mut().expect("object").remove("htu");
        assert_eq!(refusal(&h, &c), TokenError::MissingClaim("htu"));
        let mut c = claims(NOW);
        c.as_object_mut().expect("object").remove("htm");
        assert_eq!(refusal(&h, &c), TokenError::MissingClaim("htm"));
    }

    #[test]
    fn header_refusals() {
        let key = test_key();
        let c = claims(NOW);
        let mut h = ed_header(key);
        h["jwk"]["d"] = json!(jws::b64(&[1u8; 32]));
        assert!(
            matches!(refusal(&h, &c), TokenError::InvalidKey(m) if m.contains("private key material (`d`)"))
        );
        let mut h = ed_header(key);
        h["typ"] = json!("JWT");
        assert!(matches!(refusal(&h, &c), TokenError::WrongType { .. }));
        let mut h = ed_header(key);
        h.as_object_mut().expect("object").remove("typ");
        assert!(matches!(refusal(&h, &c), TokenError::WrongType { .. }));
        let mut h = ed_header(key);
        h.as_object_mut().expect("object").remove("jwk");
        assert!(matches!(refusal(&h, &c), TokenError::Malformed(_)));
        let mut h = ed_header(key);
        h["crit"] = json!(["x"]);
        assert!(matches!(refusal(&h, &c), TokenError::Malformed(_)));
        let mut h = ed_header(key);
        h["alg"] = json!("RS256");
        assert_eq!(refusal(&h, &c), TokenError::UnsupportedAlgorithm("RS256".into()));
        // ES256 claimed over an Ed25519 key.
        let mut h = ed_header(key);
        h["alg"] = json!("ES256");
        assert!(matches!(refusal(&h, &c), TokenError::KeyAlgorithmMismatch { .. }));
        // Signed by another key than the one in the header.
        let other = signing_key();
        let proof = forge(&ed_header(key), &c, &other);
        assert_eq!(
            unwrap_dpop(verify(&proof, NOW).expect_err("refused")),
            TokenError::BadSignature
        );
        // alg none and HS256 keyed with the public key.
        let mut h = ed_header(key);
        h["alg"] = json!("none");
        let none = format!(
            "{}.{}.AAAA",
            jws::b64(h.to_string().as_bytes()),
            jws::b64(c.to_string().as_bytes())
        );
        assert_eq!(
            unwrap_dpop(verify(&none, NOW).expect_err("refused")),
            TokenError::UnsupportedAlgorithm("none".into())
        );
        h["alg"] = json!("HS256");
        let hs = hs256(&h, &c, key.public().x_b64().as_bytes());
        assert_eq!(
            unwrap_dpop(verify(&hs, NOW).expect_err("refused")),
            TokenError::UnsupportedAlgorithm("HS256".into())
        );
        let huge = "a".repeat(crate::MAX_TOKEN_BYTES + 1);
        assert!(matches!(
            unwrap_dpop(verify(&huge, NOW).expect_err("refused")),
            TokenError::TooLarge {
                what: "dpop proof",
                ..
            }
        ));
    }

    fn es256_key() -> (p256::ecdsa::SigningKey, Value) {
        let key = p256::ecdsa::SigningKey::random(&mut rand::rngs::OsRng);
        let point = key.verifying_key().to_encoded_point(false);
        let jwk = json!({
            "kty": "EC",
            "crv": "P-256",
            "x": jws::b64(point.x().expect("uncompressed")),
            "y": jws::b64(point.y().expect("uncompressed")),
        });
        (key, jwk)
    }

    fn es256_proof(key: &p256::ecdsa::SigningKey, header: &Value, claims: &Value) -> String {
        let input = format!(
            "{}.{}",
            jws::b64(header.to_string().as_bytes()),
            jws::b64(claims.to_string().as_bytes())
        );
        let sig: p256::ecdsa::Signature = key.sign(input.as_bytes());
        format!("{input}.{}", jws::b64(&sig.to_bytes()))
    }

    #[test]
    fn es256_proofs() {
        let (key, jwk) = es256_key();
        let header = json!({"typ": DPOP_TYP, "alg": "ES256", "jwk": jwk});
        let proof = es256_proof(&key, &header, &claims(NOW));
        let verified = verify(&proof, NOW).expect("verified");
        assert_eq!(verified.jkt, jwk_thumbprint(&jwk).expect("thumbprint"));
        // Tampered claims.
        let mut c = claims(NOW);
        c["htu"] = json!("https://warden.example.com/mcp/db");
        let other = es256_proof(&key, &header, &c);
        let tampered = format!(
            "{}.{}",
            other.rsplit_once('.').expect("parts").0,
            proof.rsplit_once('.').expect("parts").1
        );
        assert_eq!(
            unwrap_dpop(verify(&tampered, NOW).expect_err("refused")),
            TokenError::BadSignature
        );
        // EdDSA claimed over an EC key.
        let mut h = header.clone();
        h["alg"] = json!("EdDSA");
        let proof = es256_proof(&key, &h, &claims(NOW));
        assert!(matches!(
            unwrap_dpop(verify(&proof, NOW).expect_err("refused")),
            TokenError::KeyAlgorithmMismatch { .. }
        ));
        // A P-256 "key" that is not on the curve.
        let mut h = header.clone();
        h["jwk"]["y"] = json!(jws::b64(&[1u8; 32]));
        let proof = es256_proof(&key, &h, &claims(NOW));
        assert!(matches!(
            unwrap_dpop(verify(&proof, NOW).expect_err("refused")),
            TokenError::InvalidKey(_)
        ));
        // P-384 keys are not accepted for ES256.
        let mut h = header.clone();
        h["jwk"]["crv"] = json!("P-384");
        let proof = es256_proof(&key, &h, &claims(NOW));
        assert!(matches!(
            unwrap_dpop(verify(&proof, NOW).expect_err("refused")),
            TokenError::KeyAlgorithmMismatch { .. }
        ));
    }

    proptest! {
        #[test]
        fn never_panics(s in "\\PC{0,400}", method in "[A-Z]{0,7}", url in "\\PC{0,60}", token in prop::option::of("\\PC{0,20}")) {
            let _ = verify_dpop_proof(&s, &method, &url, token.as_deref(), at(NOW));
            let _ = normalize_htu(&url);
        }

        #[test]
        fn never_panics_on_signed_proofs_with_odd_keys(
            kty in prop_oneof![Just("OKP".to_string()), Just("EC".to_string()), Just("RSA".to_string()), "\\PC{0,4}"],
            crv in prop_oneof![Just("Ed25519".to_string()), Just("P-256".to_string()), "\\PC{0,6}"],
            x in "[A-Za-z0-9_-]{0,50}",
            y in "[A-Za-z0-9_-]{0,50}",
            alg in prop_oneof![Just("EdDSA"), Just("ES256")],
            htu in "\\PC{0,40}",
        ) {
            let header = json!({"typ": DPOP_TYP, "alg": alg, "jwk": {"kty": kty, "crv": crv, "x": x, "y": y}});
            let mut c = claims(NOW);
            c["htu"] = json!(htu);
            let _ = verify(&forge(&header, &c, test_key()), NOW);
        }
    }
}
