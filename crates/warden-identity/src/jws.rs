//! The one strict reader and writer of compact JWS (RFC 7515 §7.1) that every token type in this crate
//! goes through, and the claim checks they share (times with leeway, audiences, numeric dates).
//!
//! Why our own: the checks that matter are the ones done before any cryptography or JSON parsing —
//! size first ([`MAX_TOKEN_BYTES`]), exactly three non-empty parts, canonical unpadded base64url — and
//! they must be identical for every token type. Headers are parsed into per-type structs
//! (`deny_unknown_fields` where the producer is under our control), which also refuses duplicate
//! members; payloads are decoded only after the signature verified.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ed25519_dalek::Signer as _;
use serde::de::DeserializeOwned;
use serde_json::{Number, Value};

use crate::{LEEWAY_SECS, MAX_TOKEN_BYTES, TokenError};

/// A compact JWS split into its parts; the header and signature are decoded, the payload not yet.
pub(crate) struct Compact<'a> {
    /// `BASE64URL(header) '.' BASE64URL(payload)`: the bytes the signature covers.
    pub signing_input: &'a str,
    pub header: Vec<u8>,
    payload_b64: &'a str,
    signature_b64: &'a str,
    pub signature: Vec<u8>,
}

impl<'a> Compact<'a> {
    /// Splits `token` (`what` names it in errors: "token", "dpop proof", ...). Refuses oversized input
    /// before looking at it.
    pub fn split(token: &'a str, what: &'static str) -> Result<Self, TokenError> {
        let (signing_input, header_b64, payload_b64) = Self::split_unverified(token, what)?;
        let signature_b64 = &token[signing_input.len() + 1..];
        if signature_b64.is_empty() {
            return Err(TokenError::Malformed("the signature part is empty".into()));
        }
        Ok(Self {
            signing_input,
            header: b64_decode(header_b64, "header")?,
            payload_b64,
            signature_b64,
            signature: b64_decode(signature_b64, "signature")?,
        })
    }

    /// Splits without touching the signature part, for the unverified peeks (which issuer is this?).
    /// Returns (signing input, header part, payload part).
    fn split_unverified(
        token: &'a str,
        what: &'static str,
    ) -> Result<(&'a str, &'a str, &'a str), TokenError> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(TokenError::TooLarge {
                what,
                max: MAX_TOKEN_BYTES,
            });
        }
        let mut dots = token.match_indices('.').map(|(i, _)| i);
        let (Some(first), Some(second), None) = (dots.next(), dots.next(), dots.next()) else {
            return Err(TokenError::Malformed(
                "a compact JWS has exactly three parts separated by `.`".into(),
            ));
        };
        let header = &token[..first];
        let payload = &token[first + 1..second];
        if header.is_empty() || payload.is_empty() {
            return Err(TokenError::Malformed(
                "the header or payload part is empty".into(),
            ));
        }
        Ok((&token[..second], header, payload))
    }

    pub fn signature_b64(&self) -> &'a str {
        self.signature_b64
    }

    pub fn payload(&self) -> Result<Vec<u8>, TokenError> {
        b64_decode(self.payload_b64, "payload")
    }

    pub fn header_as<T: DeserializeOwned>(&self) -> Result<T, TokenError> {
        parse_json(&self.header, "header")
    }
}

/// Decodes the header and payload of a token WITHOUT verifying anything but its shape. Only for
/// choosing the key or issuer; nothing read here may be trusted.
pub(crate) fn peek<H: DeserializeOwned, P: DeserializeOwned>(
    token: &str,
    what: &'static str,
) -> Result<(H, P), TokenError> {
    let (_, header, payload) = Compact::split_unverified(token, what)?;
    let header = parse_json(&b64_decode(header, "header")?, "header")?;
    let payload = parse_json(&b64_decode(payload, "payload")?, "payload")?;
    Ok((header, payload))
}

fn b64_decode(part: &str, name: &str) -> Result<Vec<u8>, TokenError> {
    URL_SAFE_NO_PAD
        .decode(part)
        .map_err(|_| TokenError::Malformed(format!("the {name} is not canonical unpadded base64url")))
}

pub(crate) fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

pub(crate) fn b64_decode_field(value: &str, field: &str) -> Result<Vec<u8>, TokenError> {
    URL_SAFE_NO_PAD
        .decode(value)
        .map_err(|_| TokenError::InvalidKey(format!("`{field}` is not canonical unpadded base64url")))
}

/// Parses JSON into `T`. Type errors keep serde's wording (it names the field), escaped and cut short;
/// syntax errors say only where, never what.
pub(crate) fn parse_json<T: DeserializeOwned>(bytes: &[u8], part: &str) -> Result<T, TokenError> {
    serde_json::from_slice(bytes).map_err(|e| {
        use serde_json::error::Category;
        match e.classify() {
            Category::Data => TokenError::Malformed(format!("the {part}: {}", shorten(&e.to_string()))),
            Category::Io | Category::Syntax | Category::Eof => {
                TokenError::Malformed(format!("the {part} is not valid JSON"))
            }
        }
    })
}

/// Refuses a JSON document whose top-level object, or any object directly inside a top-level array,
/// has a member twice. `serde_json::Value` keeps the last of duplicate members silently; where a map is
/// read as a `Value` (external claims, `authorization_details`), this closes the parser differential
/// ("which `sub` did you read?"). Derived structs need no help: serde refuses duplicate fields.
pub(crate) fn reject_duplicate_members(bytes: &[u8]) -> Result<(), String> {
    use serde::de::{Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
    use std::collections::HashSet;

    /// Visits an object (checking its keys) or an array of values visited the same way one level down.
    struct Check {
        descend: bool,
    }
    impl<'de> Visitor<'de> for Check {
        type Value = ();
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("any JSON value")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
            let mut seen = HashSet::new();
            while let Some(key) = map.next_key::<String>()? {
                if !seen.insert(key.clone()) {
                    return Err(serde::de::Error::custom(format!(
                        "the member `{}` is given twice",
                        shorten(&key)
                    )));
                }
                map.next_value::<IgnoredAny>()?;
            }
            Ok(())
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
            if self.descend {
                while seq.next_element_seed(Check { descend: false })?.is_some() {}
            } else {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
            }
            Ok(())
        }
        fn visit_bool<E>(self, _: bool) -> Result<(), E> {
            Ok(())
        }
        fn visit_i64<E>(self, _: i64) -> Result<(), E> {
            Ok(())
        }
        fn visit_u64<E>(self, _: u64) -> Result<(), E> {
            Ok(())
        }
        fn visit_f64<E>(self, _: f64) -> Result<(), E> {
            Ok(())
        }
        fn visit_str<E>(self, _: &str) -> Result<(), E> {
            Ok(())
        }
        fn visit_unit<E>(self) -> Result<(), E> {
            Ok(())
        }
    }
    impl<'de> serde::de::DeserializeSeed<'de> for Check {
        type Value = ();
        fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
            d.deserialize_any(self)
        }
    }
    let mut de = serde_json::Deserializer::from_slice(bytes);
    de.deserialize_any(Check { descend: true }).map_err(|e| {
        let message = e.to_string();
        // serde_json appends " at line L column C"; the member name is what matters.
        message.split(" at line ").next().unwrap_or(&message).to_owned()
    })
}

/// Escapes control characters and cuts a message derived from untrusted input to a sane length.
pub(crate) fn shorten(s: &str) -> String {
    const MAX: usize = 160;
    let escaped: String = s.escape_debug().collect();
    if escaped.len() <= MAX {
        return escaped;
    }
    let mut end = MAX;
    while !escaped.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &escaped[..end])
}

/// Builds a compact JWS signed with Ed25519.
pub(crate) fn sign_ed25519(key: &ed25519_dalek::SigningKey, header: &[u8], payload: &[u8]) -> String {
    let mut out = String::with_capacity((header.len() + payload.len()) * 4 / 3 + 96);
    URL_SAFE_NO_PAD.encode_string(header, &mut out);
    out.push('.');
    URL_SAFE_NO_PAD.encode_string(payload, &mut out);
    let signature = key.sign(out.as_bytes());
    out.push('.');
    URL_SAFE_NO_PAD.encode_string(signature.to_bytes(), &mut out);
    out
}

/// Verifies an Ed25519 signature with `verify_strict` (RFC 8032 plus: no small-order keys, no
/// non-canonical `R`).
pub(crate) fn verify_ed25519(
    key: &ed25519_dalek::VerifyingKey,
    signing_input: &[u8],
    signature: &[u8],
) -> Result<(), TokenError> {
    let bytes: &[u8; 64] = signature.try_into().map_err(|_| TokenError::BadSignature)?;
    let signature = ed25519_dalek::Signature::from_bytes(bytes);
    key.verify_strict(signing_input, &signature)
        .map_err(|_| TokenError::BadSignature)
}

/// An RFC 7519 NumericDate as whole seconds. Integers are taken as they are; a fractional value (which
/// RFC 7519 allows) is rounded down; anything else is malformed.
pub(crate) fn numeric_date(value: &Number, claim: &'static str) -> Result<i64, TokenError> {
    if let Some(i) = value.as_i64() {
        return Ok(i);
    }
    match value.as_f64() {
        Some(f) if f.is_finite() && f.abs() < 1e15 => Ok(f.floor() as i64),
        _ => Err(TokenError::InvalidClaim {
            claim: claim.into(),
            message: "not a representable date".into(),
        }),
    }
}

pub(crate) fn required_date(value: Option<&Number>, claim: &'static str) -> Result<i64, TokenError> {
    numeric_date(value.ok_or(TokenError::MissingClaim(claim))?, claim)
}

/// `exp`: valid while `now < exp + leeway`.
pub(crate) fn check_exp(exp: i64, now: i64) -> Result<(), TokenError> {
    if now >= exp.saturating_add(LEEWAY_SECS) {
        return Err(TokenError::Expired);
    }
    Ok(())
}

/// `nbf`: valid once `now + leeway >= nbf`.
pub(crate) fn check_nbf(nbf: i64, now: i64) -> Result<(), TokenError> {
    if now.saturating_add(LEEWAY_SECS) < nbf {
        return Err(TokenError::NotYetValid);
    }
    Ok(())
}

/// `iat`: not after `now + leeway`.
pub(crate) fn check_iat(iat: i64, now: i64) -> Result<(), TokenError> {
    if iat > now.saturating_add(LEEWAY_SECS) {
        return Err(TokenError::IssuedInFuture);
    }
    Ok(())
}

/// `exp` after `iat`, and `exp - iat <= max_secs`.
pub(crate) fn check_lifetime(iat: i64, exp: i64, max_secs: i64) -> Result<(), TokenError> {
    if exp <= iat {
        return Err(TokenError::InvalidClaim {
            claim: "exp".into(),
            message: "must be after `iat`".into(),
        });
    }
    if exp.saturating_sub(iat) > max_secs {
        return Err(TokenError::LifetimeTooLong { max_secs });
    }
    Ok(())
}

/// `aud` (a string or an array of strings, RFC 7519 §4.1.3) contains one of `accepted`. A missing `aud`
/// is an error: every verifier in this crate requires one.
pub(crate) fn check_audience<'a>(
    aud: Option<&Value>,
    mut accepted: impl FnMut(&str) -> bool + 'a,
) -> Result<(), TokenError> {
    let bad = || TokenError::InvalidClaim {
        claim: "aud".into(),
        message: "must be a string or an array of strings".into(),
    };
    match aud {
        None | Some(Value::Null) => Err(TokenError::MissingClaim("aud")),
        Some(Value::String(s)) => accepted(s).then_some(()).ok_or(TokenError::WrongAudience),
        Some(Value::Array(items)) => {
            let mut found = false;
            for item in items {
                let s = item.as_str().ok_or_else(bad)?;
                found |= accepted(s);
            }
            found.then_some(()).ok_or(TokenError::WrongAudience)
        }
        Some(_) => Err(bad()),
    }
}

/// A `jti` of 1 to 256 characters without control characters.
pub(crate) fn check_jti(jti: Option<String>) -> Result<String, TokenError> {
    let jti = jti.ok_or(TokenError::MissingClaim("jti"))?;
    if jti.is_empty() || jti.len() > 256 || jti.chars().any(char::is_control) {
        return Err(TokenError::InvalidClaim {
            claim: "jti".into(),
            message: "must be 1 to 256 characters without control characters".into(),
        });
    }
    Ok(jti)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check_split(input: &str, expect: Result<(), &str>) {
        let got = Compact::split(input, "token")
            .map(|_| ())
            .map_err(|e| e.to_string());
        match (got, expect) {
            (Ok(()), Ok(())) => {}
            (Err(got), Err(want)) => assert!(got.contains(want), "{input:?}: `{got}` lacks `{want}`"),
            (got, want) => panic!("{input:?}: got {got:?}, want {want:?}"),
        }
    }

    #[test]
    fn splitting() {
        check_split("e30.e30.AAAA", Ok(()));
        check_split("e30.e30", Err("exactly three parts"));
        check_split("e30.e30.AAAA.AAAA", Err("exactly three parts"));
        check_split(".e30.AAAA", Err("empty"));
        check_split("e30..AAAA", Err("empty"));
        check_split("e30.e30.", Err("signature part is empty"));
        check_split("e30=.e30.AAAA", Err("header is not canonical"));
        check_split("e30.e30.AA+A", Err("signature is not canonical"));
        // `e31` has non-zero trailing bits: the same bytes as `e30` in a second spelling.
        check_split("e31.e30.AAAA", Err("header is not canonical"));
        check_split(&"a".repeat(MAX_TOKEN_BYTES + 1), Err("longer than 8192 bytes"));
    }

    #[test]
    fn times_with_leeway() {
        assert_eq!(check_exp(100, 129), Ok(()));
        assert_eq!(check_exp(100, 130), Err(TokenError::Expired));
        assert_eq!(check_exp(i64::MAX, 0), Ok(()));
        assert_eq!(check_exp(i64::MIN, 0), Err(TokenError::Expired));
        assert_eq!(check_nbf(130, 100), Ok(()));
        assert_eq!(check_nbf(131, 100), Err(TokenError::NotYetValid));
        assert_eq!(check_iat(130, 100), Ok(()));
        assert_eq!(check_iat(131, 100), Err(TokenError::IssuedInFuture));
        assert_eq!(check_lifetime(0, 300, 300), Ok(()));
        assert_eq!(
            check_lifetime(0, 301, 300),
            Err(TokenError::LifetimeTooLong { max_secs: 300 })
        );
        assert!(check_lifetime(5, 5, 300).is_err());
        assert!(check_lifetime(i64::MIN, i64::MAX, 300).is_err());
    }

    #[test]
    fn numeric_dates() {
        let n = |v: Value| match v {
            Value::Number(n) => n,
            _ => unreachable!(),
        };
        assert_eq!(numeric_date(&n(serde_json::json!(5)), "iat"), Ok(5));
        assert_eq!(numeric_date(&n(serde_json::json!(5.9)), "iat"), Ok(5));
        assert!(numeric_date(&n(serde_json::json!(1e300)), "iat").is_err());
        assert!(numeric_date(&n(serde_json::json!(u64::MAX)), "iat").is_err());
    }

    #[test]
    fn audiences() {
        let ok = |aud: Value| check_audience(Some(&aud), |a| a == "w");
        assert_eq!(ok(serde_json::json!("w")), Ok(()));
        assert_eq!(ok(serde_json::json!(["x", "w"])), Ok(()));
        assert_eq!(ok(serde_json::json!("x")), Err(TokenError::WrongAudience));
        assert_eq!(ok(serde_json::json!([])), Err(TokenError::WrongAudience));
        assert!(ok(serde_json::json!([1])).is_err());
        assert!(ok(serde_json::json!(1)).is_err());
        assert_eq!(
            check_audience(None, |_| true),
            Err(TokenError::MissingClaim("aud"))
        );
    }

    #[test]
    fn duplicate_members() {
        assert_eq!(reject_duplicate_members(br#"{"a":1,"b":{"a":1,"a":2}}"#), Ok(()));
        assert_eq!(reject_duplicate_members(br#"[{"a":1},{"a":2}]"#), Ok(()));
        assert_eq!(
            reject_duplicate_members(br#"{"sub":"a","x":[1],"sub":"b"}"#),
            Err("the member `sub` is given twice".into())
        );
        assert_eq!(
            reject_duplicate_members(br#"[{"tools":[],"tools":["x"]}]"#),
            Err("the member `tools` is given twice".into())
        );
        assert!(reject_duplicate_members(b"[1, \"x\", null, true, 2.5, -3]").is_ok());
        assert!(reject_duplicate_members(b"{").is_err());
    }

    #[test]
    fn messages_are_shortened_and_escaped() {
        assert_eq!(shorten("a\nb"), "a\\nb");
        let long = shorten(&"é".repeat(200));
        assert!(long.len() <= 164 && long.ends_with('…'));
    }
}
