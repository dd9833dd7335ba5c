//! Federated identity: tokens from external issuers Warden is configured to trust — an OIDC issuer
//! (e.g. a CI system's or a cloud's workload identity tokens) or a SPIFFE trust domain (JWT-SVIDs) —
//! verified against the issuer's JWK Set and mapped, by one claim, to a registered agent.
//!
//! Defenses, in the order they apply:
//! * the algorithm allow-list is configuration, fixed at construction; `none` and every `HS*` are
//!   refused there, so a public key can never be used as an HMAC secret;
//! * the key is chosen by `kid` (JWT-SVIDs must have one; an OIDC token may omit it only when the
//!   issuer has a single key), and must be of the type the token's algorithm needs (`RS256` with an EC
//!   key is refused before any cryptography), and agree with the JWK's own `alg` if it has one;
//! * header members that point elsewhere for keys (`jku`, `x5u`, `jwk`, `x5c`) are ignored: keys come
//!   only from the configured JWK Set; `crit` is refused;
//! * RSA keys must be 2048 to 4096 bits; JWK Sets with private or symmetric key material are refused;
//! * `exp` and `iat` are required and `exp − iat` may not exceed the issuer's maximum lifetime
//!   ([`DEFAULT_MAX_FEDERATED_LIFETIME_SECS`] unless configured), so a long-lived token a CI system or
//!   a cloud minted for something else cannot become a standing credential for Warden;
//! * every accepted token is one-time: [`FederatedIdentity::one_time_id`] is what the caller remembers
//!   until the token expires (its `jti`, or, without one, a digest of what was signed).
//!
//! Signatures are checked with `jsonwebtoken`'s crypto (RSA, RSA-PSS, ECDSA) and `ed25519-dalek`
//! (EdDSA). Claims are checked here, against the caller's `now`: `jsonwebtoken`'s validation reads the
//! system clock.
//!
//! # Which claim maps to an agent
//!
//! `claim` is either a top-level claim name taken literally (`sub`, `email`,
//! `https://example.com/agent`), or, when it starts with `/`, an RFC 6901 JSON Pointer into the claims
//! (`/kubernetes.io/serviceaccount/name`; `~1` escapes a `/` inside a name, `~0` a `~`). The value
//! found must be a string; it is looked up exactly (case-sensitive) in the mapping.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr as _;

use chrono::{DateTime, Utc};
use jsonwebtoken::{Algorithm, DecodingKey};
use serde::Deserialize;
use serde_json::{Map, Value};
use warden_core::{AgentName, TrustDomain};

use crate::jws::{self, Compact};
use crate::keys::PublicKey;
use crate::spiffe::SpiffeId;
use crate::{DPOP_TYP, TASK_TOKEN_TYP, TokenError};

/// Most keys read from one JWK Set.
const MAX_JWKS_KEYS: usize = 100;
const MIN_RSA_BITS: usize = 2048;
const MAX_RSA_BITS: usize = 4096;
/// The longest a federated token may be valid (`exp − iat`) unless the issuer's configuration says
/// otherwise: one hour. Workload identity tokens are minutes long; a token valid for days is a
/// standing credential, and the replay memory keeps each token until it expires.
pub const DEFAULT_MAX_FEDERATED_LIFETIME_SECS: u64 = 3600;
/// The most an issuer may be configured to accept: one day.
pub const MAX_FEDERATED_LIFETIME_SECS: u64 = 86_400;

/// What kind of issuer this is.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FederationKind {
    /// An OIDC issuer: tokens are accepted when their `iss` is exactly the configured issuer.
    Oidc,
    /// A SPIFFE trust domain: JWT-SVIDs are accepted when their `sub` is a SPIFFE ID in the trust domain
    /// (and, if an issuer is configured too, their `iss` is it).
    Spiffe,
}

/// An external issuer Warden trusts (from config): an OIDC issuer or a SPIFFE trust domain (JWT-SVID).
/// `Clone` so a JWKS refresh can build the new value beside the one in use and swap it in.
#[derive(Clone)]
pub struct FederatedIssuer {
    name: String,
    kind: FederationKind,
    issuer: Option<String>,
    trust_domain: Option<TrustDomain>,
    audiences: Vec<String>,
    algorithms: Vec<Algorithm>,
    keys: Vec<FederatedKey>,
    claim: String,
    mapping: BTreeMap<String, AgentName>,
    /// The longest `exp − iat` accepted, in seconds.
    max_lifetime_secs: i64,
}

#[derive(Clone, Debug)]
struct FederatedKey {
    kid: Option<String>,
    /// The JWK's own `alg`, if it names one.
    alg: Option<Algorithm>,
    material: KeyMaterial,
}

#[derive(Clone, Debug)]
enum KeyMaterial {
    Rsa { key: DecodingKey, bits: usize },
    P256(DecodingKey),
    P384(DecodingKey),
    Ed25519(PublicKey),
}

impl KeyMaterial {
    fn accepts(&self, alg: Algorithm) -> bool {
        use Algorithm::*;
        match self {
            Self::Rsa { .. } => matches!(alg, RS256 | RS384 | RS512 | PS256 | PS384 | PS512),
            Self::P256(_) => alg == ES256,
            Self::P384(_) => alg == ES384,
            Self::Ed25519(_) => alg == EdDSA,
        }
    }

    fn describe(&self) -> String {
        match self {
            Self::Rsa { bits, .. } => format!("an RSA {bits}-bit key"),
            Self::P256(_) => "an EC P-256 key".into(),
            Self::P384(_) => "an EC P-384 key".into(),
            Self::Ed25519(_) => "an Ed25519 key".into(),
        }
    }
}

/// Who a verified federated token says the caller is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FederatedIdentity {
    /// The registered agent the token maps to.
    pub agent: AgentName,
    /// The token's `iss`; for a SPIFFE issuer whose JWT-SVID has no `iss`, `spiffe://<trust-domain>`.
    pub issuer: String,
    /// The token's `sub`.
    pub subject: String,
    /// The token's `jti`, if any.
    pub jti: Option<String>,
    /// Hex SHA-256 of the token's signing input (`header.payload`, the part the signature covers).
    pub signed_digest: String,
    pub exp: i64,
}

impl FederatedIdentity {
    /// What the caller's replay cache must remember until `exp` (plus leeway), as `(namespace, id)`:
    /// the token is accepted once, on every node.
    ///
    /// A token with a `jti` is remembered by it under its issuer. A token without one is not refused —
    /// common workload issuers (Google ID tokens, SPIRE's JWT-SVIDs, older Kubernetes service-account
    /// tokens) issue none, and refusing them would make federation unusable with them — but remembered
    /// by the SHA-256 of its signing input, under a namespace of its own so no `jti` can collide with a
    /// digest. The digest covers what was signed, not the signature: ECDSA signatures are malleable
    /// (`(r, n − s)` verifies as well as `(r, s)`), so a digest of the whole token would let a replay
    /// with a rewritten signature through. The maximum lifetime bounds how long either is kept.
    pub fn one_time_id(&self) -> (String, String) {
        match &self.jti {
            Some(jti) => (self.issuer.clone(), jti.clone()),
            None => (
                format!("federated-digest:{}", self.issuer),
                self.signed_digest.clone(),
            ),
        }
    }
}

fn config(message: impl Into<String>) -> TokenError {
    TokenError::InvalidConfig(message.into())
}

/// Parses a configured algorithm name; `none` and `HS*` are refused with the reason.
fn parse_algorithm(name: &str) -> Result<Algorithm, TokenError> {
    if name.eq_ignore_ascii_case("none") {
        return Err(config(
            "algorithm `none` is never accepted: federated tokens must be signed",
        ));
    }
    if name.to_ascii_uppercase().starts_with("HS") {
        return Err(config(format!(
            "algorithm `{}` is refused: with a symmetric algorithm anyone who can verify can also mint tokens; \
             use RS256, PS256, ES256 or EdDSA",
            jws::shorten(name)
        )));
    }
    Algorithm::from_str(name).map_err(|_| {
        config(format!(
            "unknown algorithm `{}`; use RS256/384/512, PS256/384/512, ES256/384 or EdDSA",
            jws::shorten(name)
        ))
    })
}

impl FederatedIssuer {
    /// Builds an issuer from configuration.
    ///
    /// * `issuer`: the exact `iss` value; required for `Oidc`. For `Spiffe` optional (JWT-SVIDs may
    ///   carry any `iss`); what is checked instead is that `sub` is a SPIFFE ID in `trust_domain`.
    /// * `trust_domain`: required for `Spiffe`, refused for `Oidc`.
    /// * `audiences`: accepted `aud` values (at least one).
    /// * `algorithms`: allow-list, names like `RS256`, `ES256`, `EdDSA`, `PS256`; `none` and every
    ///   `HS*` are refused with a clear error.
    /// * `jwks`: the JWK Set JSON (`{"keys": [...]}`), from a file or URL, fetched by the caller. Keys
    ///   for encryption, of unsupported types or curves, or with an unknown `alg` are skipped; at least
    ///   one usable key must remain. Private or symmetric key material is an error.
    /// * `claim`: the claim whose string value maps to an agent: a top-level name, or an RFC 6901 JSON
    ///   Pointer when it starts with `/` (see the module docs).
    /// * `mapping`: claim value → agent name (at least one entry).
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        name: &str,
        kind: FederationKind,
        issuer: Option<String>,
        trust_domain: Option<String>,
        audiences: Vec<String>,
        algorithms: &[String],
        jwks: &Value,
        claim: String,
        mapping: BTreeMap<String, AgentName>,
    ) -> Result<Self, TokenError> {
        if name.is_empty() || name.len() > 100 || name.chars().any(char::is_control) {
            return Err(config(
                "the issuer's name must be 1 to 100 characters without control characters",
            ));
        }
        let named = |m: String| config(format!("issuer `{name}`: {m}"));
        let issuer = issuer.filter(|i| !i.is_empty());
        let trust_domain = match (&kind, trust_domain) {
            (FederationKind::Oidc, Some(_)) => {
                return Err(named("`trust_domain` is only for `spiffe` issuers".into()));
            }
            (FederationKind::Oidc, None) => {
                if issuer.is_none() {
                    return Err(named(
                        "an `oidc` issuer needs `issuer` (the exact `iss` of its tokens)".into(),
                    ));
                }
                None
            }
            (FederationKind::Spiffe, None) => {
                return Err(named("a `spiffe` issuer needs `trust_domain`".into()));
            }
            (FederationKind::Spiffe, Some(td)) => {
                Some(TrustDomain::parse(&td).map_err(|e| named(e.message))?)
            }
        };
        if audiences.is_empty() || audiences.iter().any(String::is_empty) {
            return Err(named(
                "`audiences` must list at least one non-empty audience".into(),
            ));
        }
        if algorithms.is_empty() {
            return Err(named("`algorithms` must list at least one algorithm".into()));
        }
        let algorithms = algorithms
            .iter()
            .map(|a| parse_algorithm(a).map_err(|e| named(e.to_string())))
            .collect::<Result<Vec<_>, _>>()?;
        if claim.is_empty() {
            return Err(named("`claim` must name the claim that maps to an agent".into()));
        }
        if mapping.is_empty() {
            return Err(named("`mapping` maps no claim value to an agent".into()));
        }
        let keys = parse_jwks(jwks).map_err(|e| named(e.to_string()))?;
        Ok(Self {
            name: name.to_owned(),
            kind,
            issuer,
            trust_domain,
            audiences,
            algorithms,
            keys,
            claim,
            mapping,
            max_lifetime_secs: DEFAULT_MAX_FEDERATED_LIFETIME_SECS as i64,
        })
    }

    /// Sets the longest validity (`exp − iat`, seconds) accepted from this issuer: 1 to
    /// [`MAX_FEDERATED_LIFETIME_SECS`]; the default is [`DEFAULT_MAX_FEDERATED_LIFETIME_SECS`].
    pub fn with_max_lifetime(mut self, secs: u64) -> Result<Self, TokenError> {
        if !(1..=MAX_FEDERATED_LIFETIME_SECS).contains(&secs) {
            return Err(config(format!(
                "issuer `{}`: `max_token_lifetime_secs` must be between 1 and {MAX_FEDERATED_LIFETIME_SECS}",
                self.name
            )));
        }
        self.max_lifetime_secs = secs as i64;
        Ok(self)
    }

    /// The longest validity (`exp − iat`, seconds) accepted from this issuer.
    pub fn max_lifetime_secs(&self) -> i64 {
        self.max_lifetime_secs
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn kind(&self) -> &FederationKind {
        &self.kind
    }

    /// Replaces the keys (JWKS refresh). On error the current keys stay.
    pub fn replace_jwks(&mut self, jwks: &Value) -> Result<(), TokenError> {
        self.keys = parse_jwks(jwks).map_err(|e| config(format!("issuer `{}`: {e}", self.name)))?;
        Ok(())
    }

    /// Whether this issuer should try the token (its `iss`, or for `Spiffe` its `sub`'s trust domain),
    /// judged from the unverified payload. Cheap enough to ask every configured issuer in turn.
    pub fn claims_token(&self, token: &str) -> bool {
        let Ok((_, payload)) = jws::peek::<Value, Map<String, Value>>(token, "token") else {
            return false;
        };
        let iss = payload.get("iss").and_then(Value::as_str);
        if let Some(expected) = &self.issuer
            && iss != Some(expected.as_str())
        {
            return false;
        }
        match (&self.kind, &self.trust_domain) {
            (FederationKind::Spiffe, Some(td)) => payload
                .get("sub")
                .and_then(Value::as_str)
                .and_then(|sub| SpiffeId::parse(sub).ok())
                .is_some_and(|id| id.trust_domain() == td.as_str()),
            _ => true,
        }
    }

    /// Verifies the signature (key by `kid` from the JWKS; the algorithm must be on the allow-list AND
    /// match the key type), `iss` (or the SPIFFE trust domain of `sub`), `aud`, `exp` and `iat`
    /// (required, with `LEEWAY_SECS`; `exp − iat` at most the issuer's maximum lifetime), `nbf` (if
    /// present), then maps the claim to an agent. An unmapped claim value is an error.
    pub fn verify(&self, token: &str, now: DateTime<Utc>) -> Result<FederatedIdentity, TokenError> {
        #[derive(Deserialize)]
        struct Header {
            alg: String,
            #[serde(default)]
            kid: Option<String>,
            #[serde(default)]
            typ: Option<String>,
            #[serde(default)]
            crit: Option<Value>,
        }
        let jws = Compact::split(token, "token")?;
        let header: Header = jws.header_as()?;
        if header.crit.is_some() {
            return Err(TokenError::Malformed(
                "the header has `crit`; no extension is supported".into(),
            ));
        }
        self.check_typ(header.typ.as_deref())?;
        let alg = Algorithm::from_str(&header.alg)
            .ok()
            .filter(|a| self.algorithms.contains(a))
            .ok_or_else(|| TokenError::UnsupportedAlgorithm(jws::shorten(&header.alg)))?;
        let key = self.select_key(header.kid.as_deref(), alg)?;
        match &key.material {
            KeyMaterial::Ed25519(k) => {
                jws::verify_ed25519(k.verifying_key(), jws.signing_input.as_bytes(), &jws.signature)?
            }
            KeyMaterial::Rsa { key, .. } | KeyMaterial::P256(key) | KeyMaterial::P384(key) => {
                let ok =
                    jsonwebtoken::crypto::verify(jws.signature_b64(), jws.signing_input.as_bytes(), key, alg)
                        .unwrap_or(false);
                if !ok {
                    return Err(TokenError::BadSignature);
                }
            }
        }

        let payload = jws.payload()?;
        let claims: Map<String, Value> = jws::parse_json(&payload, "payload")?;
        jws::reject_duplicate_members(&payload)
            .map_err(|m| TokenError::Malformed(format!("the payload: {m}")))?;
        let string = |name: &'static str| -> Result<Option<String>, TokenError> {
            match claims.get(name) {
                None | Some(Value::Null) => Ok(None),
                Some(Value::String(s)) => Ok(Some(s.clone())),
                Some(_) => Err(TokenError::InvalidClaim {
                    claim: name.into(),
                    message: "must be a string".into(),
                }),
            }
        };
        let date = |name: &'static str| -> Result<Option<i64>, TokenError> {
            match claims.get(name) {
                None | Some(Value::Null) => Ok(None),
                Some(Value::Number(n)) => jws::numeric_date(n, name).map(Some),
                Some(_) => Err(TokenError::InvalidClaim {
                    claim: name.into(),
                    message: "must be a number".into(),
                }),
            }
        };
        let iss = string("iss")?;
        let sub = string("sub")?.ok_or(TokenError::MissingClaim("sub"))?;
        if let Some(expected) = &self.issuer {
            match &iss {
                None => return Err(TokenError::MissingClaim("iss")),
                Some(iss) if iss != expected => return Err(TokenError::WrongIssuer),
                Some(_) => {}
            }
        }
        if let Some(td) = &self.trust_domain {
            let id = SpiffeId::parse(&sub).map_err(|e| TokenError::InvalidClaim {
                claim: "sub".into(),
                message: e.message,
            })?;
            if id.trust_domain() != td.as_str() {
                return Err(TokenError::WrongTrustDomain {
                    expected: td.to_string(),
                    found: jws::shorten(&sub),
                });
            }
        }
        jws::check_audience(claims.get("aud"), |a| self.audiences.iter().any(|x| x == a))?;
        let exp = date("exp")?.ok_or(TokenError::MissingClaim("exp"))?;
        let now = now.timestamp();
        jws::check_exp(exp, now)?;
        if let Some(nbf) = date("nbf")? {
            jws::check_nbf(nbf, now)?;
        }
        // Without `iat` the lifetime cannot be known, and a token that may live for weeks is refused.
        let iat = date("iat")?.ok_or(TokenError::MissingClaim("iat"))?;
        jws::check_iat(iat, now)?;
        let lifetime = exp.saturating_sub(iat);
        if lifetime <= 0 {
            return Err(TokenError::InvalidClaim {
                claim: "exp".into(),
                message: "is not after `iat`".into(),
            });
        }
        if lifetime > self.max_lifetime_secs {
            return Err(TokenError::InvalidClaim {
                claim: "exp".into(),
                message: format!(
                    "the token is valid for {lifetime} s (`exp` − `iat`); issuer `{}` accepts at most {} s \
                     (`max_token_lifetime_secs`)",
                    self.name, self.max_lifetime_secs
                ),
            });
        }
        let jti = string("jti")?;
        if jti.as_deref() == Some("") {
            return Err(TokenError::InvalidClaim {
                claim: "jti".into(),
                message: "is empty".into(),
            });
        }
        let signed_digest = hex_sha256(jws.signing_input.as_bytes());

        let value = if self.claim.starts_with('/') {
            Value::Object(claims.clone()).pointer(&self.claim).cloned()
        } else {
            claims.get(&self.claim).cloned()
        };
        let value = match value {
            Some(Value::String(s)) => s,
            None | Some(Value::Null) => {
                return Err(TokenError::InvalidClaim {
                    claim: self.claim.clone(),
                    message: "is missing".into(),
                });
            }
            Some(_) => {
                return Err(TokenError::InvalidClaim {
                    claim: self.claim.clone(),
                    message: "must be a string".into(),
                });
            }
        };
        let agent = self
            .mapping
            .get(&value)
            .cloned()
            .ok_or_else(|| TokenError::UnmappedIdentity {
                claim: self.claim.clone(),
                value: jws::shorten(&value),
            })?;
        let issuer = match (iss, &self.trust_domain) {
            (Some(iss), _) => iss,
            (None, Some(td)) => format!("spiffe://{td}"),
            (None, None) => return Err(TokenError::MissingClaim("iss")),
        };
        Ok(FederatedIdentity {
            agent,
            issuer,
            subject: sub,
            jti,
            signed_digest,
            exp,
        })
    }

    /// JWT-SVIDs: `typ` absent, `JWT` or `JOSE` (JWT-SVID spec §2.3). OIDC: anything but Warden's own
    /// token types, so neither a task token nor a DPoP proof can pass as a federated token.
    fn check_typ(&self, typ: Option<&str>) -> Result<(), TokenError> {
        let Some(typ) = typ else { return Ok(()) };
        let ok = match self.kind {
            FederationKind::Spiffe => typ.eq_ignore_ascii_case("JWT") || typ.eq_ignore_ascii_case("JOSE"),
            FederationKind::Oidc => {
                !(typ.eq_ignore_ascii_case(TASK_TOKEN_TYP) || typ.eq_ignore_ascii_case(DPOP_TYP))
            }
        };
        if ok {
            Ok(())
        } else {
            Err(TokenError::WrongType {
                expected: "JWT",
                found: jws::shorten(typ),
            })
        }
    }

    fn select_key(&self, kid: Option<&str>, alg: Algorithm) -> Result<&FederatedKey, TokenError> {
        let usable = |k: &&FederatedKey| k.material.accepts(alg) && k.alg.is_none_or(|a| a == alg);
        let mismatch = |k: &FederatedKey, kid: &str| TokenError::KeyAlgorithmMismatch {
            alg: format!("{alg:?}"),
            kid: jws::shorten(kid),
            message: match k.alg {
                Some(a) if k.material.accepts(alg) => format!("the key is for `{a:?}` only"),
                _ => format!("the key is {}", k.material.describe()),
            },
        };
        match kid {
            Some(kid) => {
                let mut candidates = self
                    .keys
                    .iter()
                    .filter(|k| k.kid.as_deref() == Some(kid))
                    .peekable();
                let first = *candidates.peek().ok_or_else(|| TokenError::UnknownKey {
                    kid: jws::shorten(kid),
                })?;
                candidates.find(usable).ok_or_else(|| mismatch(first, kid))
            }
            None if self.kind == FederationKind::Spiffe => Err(TokenError::Malformed(
                "a JWT-SVID must have a `kid` in its header".into(),
            )),
            None => match self.keys.as_slice() {
                [only] => Some(only).filter(usable).ok_or_else(|| mismatch(only, "")),
                _ => Err(TokenError::Malformed(
                    "the token has no `kid` and the issuer has several keys".into(),
                )),
            },
        }
    }
}

impl fmt::Debug for FederatedIssuer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FederatedIssuer")
            .field("name", &self.name)
            .field("kind", &self.kind)
            .field("issuer", &self.issuer)
            .field("trust_domain", &self.trust_domain)
            .field("audiences", &self.audiences)
            .field("algorithms", &self.algorithms)
            .field(
                "kids",
                &self.keys.iter().map(|k| k.kid.as_deref()).collect::<Vec<_>>(),
            )
            .field("claim", &self.claim)
            .field("mapping", &self.mapping)
            .field("max_lifetime_secs", &self.max_lifetime_secs)
            .finish()
    }
}

/// Members that only private or symmetric keys have.
const PRIVATE_MEMBERS: &[&str] = &["d", "p", "q", "dp", "dq", "qi", "oth", "k"];

fn parse_jwks(jwks: &Value) -> Result<Vec<FederatedKey>, TokenError> {
    let keys = jwks
        .get("keys")
        .and_then(Value::as_array)
        .ok_or_else(|| config("the JWK Set must be an object with a `keys` array"))?;
    if keys.len() > MAX_JWKS_KEYS {
        return Err(config(format!(
            "the JWK Set has {} keys; the limit is {MAX_JWKS_KEYS}",
            keys.len()
        )));
    }
    let mut out = Vec::new();
    for (i, jwk) in keys.iter().enumerate() {
        let at = |m: String| config(format!("JWK Set key {i}: {m}"));
        let obj = jwk.as_object().ok_or_else(|| at("not a JSON object".into()))?;
        if let Some(m) = PRIVATE_MEMBERS.iter().find(|m| obj.contains_key(**m)) {
            return Err(at(format!(
                "contains private or symmetric key material (`{m}`); a JWK Set must hold public keys only"
            )));
        }
        if let Some(key) = parse_jwk(obj).map_err(|e| at(e.to_string()))? {
            out.push(key);
        }
    }
    if out.is_empty() {
        return Err(config("the JWK Set holds no usable signing key"));
    }
    Ok(out)
}

/// One JWK; Ok(None) for a key that is not for us (encryption, unsupported type or curve).
fn parse_jwk(obj: &Map<String, Value>) -> Result<Option<FederatedKey>, TokenError> {
    let string = |name: &str| -> Result<Option<&str>, TokenError> {
        match obj.get(name) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(_) => Err(TokenError::InvalidKey(format!("`{name}` must be a string"))),
        }
    };
    let required = |name: &str| -> Result<&str, TokenError> {
        string(name)?.ok_or_else(|| TokenError::InvalidKey(format!("`{name}` is missing")))
    };
    if string("use")?.is_some_and(|u| u != "sig") {
        return Ok(None);
    }
    let alg = match string("alg")? {
        None => None,
        Some(a) => match Algorithm::from_str(a) {
            Ok(a) if !matches!(a, Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512) => Some(a),
            _ => return Ok(None),
        },
    };
    let kid = string("kid")?.map(str::to_owned);
    let decode = |name: &str| jws::b64_decode_field(required(name)?, name);
    let ec = |len: usize| -> Result<DecodingKey, TokenError> {
        let (x, y) = (decode("x")?, decode("y")?);
        if x.len() != len || y.len() != len {
            return Err(TokenError::InvalidKey(format!(
                "`x` and `y` must be {len} bytes for this curve"
            )));
        }
        DecodingKey::from_ec_components(required("x")?, required("y")?)
            .map_err(|_| TokenError::InvalidKey("not an EC public key".into()))
    };
    let material = match required("kty")? {
        "RSA" => {
            let n = decode("n")?;
            let e = decode("e")?;
            let n = strip_leading_zeros(&n);
            let bits = n.first().map_or(0, |b| n.len() * 8 - b.leading_zeros() as usize);
            if !(MIN_RSA_BITS..=MAX_RSA_BITS).contains(&bits) {
                return Err(TokenError::InvalidKey(format!(
                    "an RSA key of {bits} bits; {MIN_RSA_BITS} to {MAX_RSA_BITS} are accepted"
                )));
            }
            let e = strip_leading_zeros(&e);
            let odd = e.last().is_some_and(|b| b & 1 == 1);
            let e_value = e.iter().fold(0u64, |acc, b| {
                acc.saturating_mul(256).saturating_add(u64::from(*b))
            });
            if e.len() > 5 || !odd || !(3..(1u64 << 33)).contains(&e_value) {
                return Err(TokenError::InvalidKey(
                    "the RSA public exponent is not acceptable".into(),
                ));
            }
            KeyMaterial::Rsa {
                key: DecodingKey::from_rsa_raw_components(n, e),
                bits,
            }
        }
        "EC" => match required("crv")? {
            "P-256" => KeyMaterial::P256(ec(32)?),
            "P-384" => KeyMaterial::P384(ec(48)?),
            _ => return Ok(None),
        },
        "OKP" => match required("crv")? {
            "Ed25519" => KeyMaterial::Ed25519(PublicKey::from_x_b64(None, required("x")?)?),
            _ => return Ok(None),
        },
        _ => return Ok(None),
    };
    if let Some(a) = alg
        && !material.accepts(a)
    {
        return Err(TokenError::InvalidKey(format!(
            "its `alg` is `{a:?}` but it is {}",
            material.describe()
        )));
    }
    if let KeyMaterial::P256(key) | KeyMaterial::P384(key) = &material {
        // Building a verifier checks that the point is on the curve; the signature does not matter.
        let alg = if matches!(material, KeyMaterial::P256(_)) {
            Algorithm::ES256
        } else {
            Algorithm::ES384
        };
        if jsonwebtoken::crypto::verify("AA", b"", key, alg).is_err() {
            return Err(TokenError::InvalidKey("the EC point is not on the curve".into()));
        }
    }
    Ok(Some(FederatedKey { kid, alg, material }))
}

fn hex_sha256(bytes: &[u8]) -> String {
    use sha2::{Digest as _, Sha256};
    Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

fn strip_leading_zeros(bytes: &[u8]) -> &[u8] {
    let start = bytes.iter().position(|b| *b != 0).unwrap_or(bytes.len());
    &bytes[start..]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::*;
    use serde_json::json;

    fn ed_issuer(kind: FederationKind, algorithms: &[&str]) -> Result<FederatedIssuer, TokenError> {
        let mut jwk = test_key().public().to_jwk();
        jwk["kid"] = json!("ed-1");
        let (issuer, td) = match kind {
            FederationKind::Oidc => (Some("https://idp.example.com".to_string()), None),
            FederationKind::Spiffe => (None, Some("prod.example.com".to_string())),
        };
        FederatedIssuer::new(
            "test",
            kind,
            issuer,
            td,
            vec!["warden".into()],
            &algorithms.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
            &json!({"keys": [jwk]}),
            "sub".into(),
            [(
                "spiffe://prod.example.com/ns/a/sa/bot".to_string(),
                AgentName::parse("bot").expect("valid"),
            )]
            .into(),
        )
    }

    #[test]
    fn construction_refuses_unsafe_algorithms() {
        for bad in ["none", "None", "HS256", "HS384", "HS512", "hs256"] {
            let err = ed_issuer(FederationKind::Oidc, &["EdDSA", bad])
                .expect_err(bad)
                .to_string();
            assert!(
                err.contains("never accepted") || err.contains("symmetric"),
                "{bad}: {err}"
            );
        }
        let err = ed_issuer(FederationKind::Oidc, &["RS257"])
            .expect_err("unknown")
            .to_string();
        assert!(err.contains("unknown algorithm `RS257`"), "{err}");
        assert!(ed_issuer(FederationKind::Oidc, &[]).is_err());
        assert!(ed_issuer(FederationKind::Oidc, &["EdDSA"]).is_ok());
    }

    #[test]
    fn jwks_rules() {
        let ed = test_key().public().to_jwk();
        assert!(parse_jwks(&json!({"keys": [ed]})).is_ok());
        assert!(parse_jwks(&json!([ed])).is_err());
        assert!(parse_jwks(&json!({"keys": []})).is_err());
        let mut private = ed.clone();
        private["d"] = json!("AAAA");
        assert!(
            parse_jwks(&json!({"keys": [private]}))
                .expect_err("private")
                .to_string()
                .contains("`d`")
        );
        assert!(parse_jwks(&json!({"keys": [{"kty":"oct","k":"c2VjcmV0"}]})).is_err());
        // Keys not for signing, or of unknown types, are skipped.
        let mut enc = ed.clone();
        enc["use"] = json!("enc");
        let skipped = json!({"kty":"EC","crv":"secp256k1","x":"AA","y":"AA"});
        assert_eq!(
            parse_jwks(&json!({"keys": [enc, skipped, ed]})).map(|k| k.len()),
            Ok(1)
        );
        let mut ed_rs = ed.clone();
        ed_rs["alg"] = json!("RS256");
        assert!(parse_jwks(&json!({"keys": [ed_rs]})).is_err());
        let small_rsa = json!({"kty":"RSA","n": jws::b64(&[0xff; 128]),"e":"AQAB"});
        assert!(
            parse_jwks(&json!({"keys": [small_rsa]}))
                .expect_err("small")
                .to_string()
                .contains("1024 bits")
        );
        let even_e = json!({"kty":"RSA","n": jws::b64(&[0xff; 256]),"e":"AQAA"});
        assert!(parse_jwks(&json!({"keys": [even_e]})).is_err());
        let off_curve = json!({"kty":"EC","crv":"P-256","x": jws::b64(&[1; 32]),"y": jws::b64(&[1; 32])});
        assert!(
            parse_jwks(&json!({"keys": [off_curve]}))
                .expect_err("off curve")
                .to_string()
                .contains("not on the curve")
        );
        let too_many: Vec<Value> = (0..101).map(|_| ed.clone()).collect();
        assert!(parse_jwks(&json!({"keys": too_many})).is_err());
    }

    fn svid(sub: &str) -> Value {
        json!({"sub": sub, "aud": ["warden"], "exp": NOW + 300, "iat": NOW})
    }

    #[test]
    fn spiffe_svids() {
        let issuer = ed_issuer(FederationKind::Spiffe, &["EdDSA"]).expect("valid");
        let header = json!({"alg":"EdDSA","kid":"ed-1","typ":"JWT"});
        let token = forge(
            &header,
            &svid("spiffe://prod.example.com/ns/a/sa/bot"),
            test_key(),
        );
        assert!(issuer.claims_token(&token));
        let id = issuer.verify(&token, at(NOW)).expect("verified");
        assert_eq!(id.agent.as_str(), "bot");
        assert_eq!(id.issuer, "spiffe://prod.example.com");
        assert_eq!(id.subject, "spiffe://prod.example.com/ns/a/sa/bot");

        let other = forge(
            &header,
            &svid("spiffe://evil.example.com/ns/a/sa/bot"),
            test_key(),
        );
        assert!(!issuer.claims_token(&other));
        assert!(matches!(
            issuer.verify(&other, at(NOW)),
            Err(TokenError::WrongTrustDomain { .. })
        ));
        let unmapped = forge(
            &header,
            &svid("spiffe://prod.example.com/ns/a/sa/other"),
            test_key(),
        );
        assert!(matches!(
            issuer.verify(&unmapped, at(NOW)),
            Err(TokenError::UnmappedIdentity { .. })
        ));
        let no_kid = forge(
            &json!({"alg":"EdDSA"}),
            &svid("spiffe://prod.example.com/ns/a/sa/bot"),
            test_key(),
        );
        assert!(matches!(
            issuer.verify(&no_kid, at(NOW)),
            Err(TokenError::Malformed(_))
        ));
        let task_typ = forge(
            &json!({"alg":"EdDSA","kid":"ed-1","typ":TASK_TOKEN_TYP}),
            &svid("spiffe://prod.example.com/ns/a/sa/bot"),
            test_key(),
        );
        assert!(matches!(
            issuer.verify(&task_typ, at(NOW)),
            Err(TokenError::WrongType { .. })
        ));
    }

    fn oidc(claims: Value) -> String {
        forge(&json!({"alg":"EdDSA","kid":"ed-1"}), &claims, test_key())
    }

    fn bot_claims() -> Value {
        json!({"iss": "https://idp.example.com", "sub": "spiffe://prod.example.com/ns/a/sa/bot",
               "aud": "warden", "iat": NOW, "exp": NOW + 300})
    }

    /// Issue 15: a token without `iat` has no knowable lifetime; it is refused, naming the claim.
    #[test]
    fn a_federated_token_without_iat_is_refused() {
        let issuer = ed_issuer(FederationKind::Oidc, &["EdDSA"]).expect("valid");
        let mut claims = bot_claims();
        claims.as_object_mut().expect("object").remove("iat");
        let err = issuer.verify(&oidc(claims), at(NOW)).expect_err("no iat");
        assert_eq!(err, TokenError::MissingClaim("iat"));
        assert_eq!(err.to_string(), "the claim `iat` is missing");
        assert!(issuer.verify(&oidc(bot_claims()), at(NOW)).is_ok());
    }

    /// Issue 15: a 30-day federated token was accepted. `exp − iat` is capped (1 h by default); the
    /// refusal names `exp`, the lifetime, the limit and the config key. An issue date in the past does
    /// not get around it, nor does `exp` before `iat`.
    #[test]
    fn a_30_day_federated_token_is_refused() {
        let issuer = ed_issuer(FederationKind::Oidc, &["EdDSA"]).expect("valid");
        assert_eq!(
            issuer.max_lifetime_secs(),
            DEFAULT_MAX_FEDERATED_LIFETIME_SECS as i64
        );
        let month = 30 * 86_400;
        let mut claims = bot_claims();
        claims["exp"] = json!(NOW + month);
        let err = issuer
            .verify(&oidc(claims.clone()), at(NOW))
            .expect_err("30 days");
        assert!(
            matches!(&err, TokenError::InvalidClaim { claim, .. } if claim == "exp"),
            "{err:?}"
        );
        let msg = err.to_string();
        assert!(
            msg.contains("`exp`")
                && msg.contains(&format!("{month} s"))
                && msg.contains("at most 3600 s")
                && msg.contains("max_token_lifetime_secs"),
            "{msg}"
        );
        // Backdated: issued a month ago, expiring in five minutes: still a month-long token.
        let mut backdated = bot_claims();
        backdated["iat"] = json!(NOW - month);
        assert!(issuer.verify(&oidc(backdated), at(NOW)).is_err());
        // Exactly the limit is accepted; one second more is not.
        let mut limit = bot_claims();
        limit["exp"] = json!(NOW + 3600);
        assert!(issuer.verify(&oidc(limit.clone()), at(NOW)).is_ok());
        limit["exp"] = json!(NOW + 3601);
        assert!(issuer.verify(&oidc(limit), at(NOW)).is_err());
        let mut inverted = bot_claims();
        inverted["iat"] = json!(NOW + 10);
        inverted["exp"] = json!(NOW + 5);
        assert!(
            issuer
                .verify(&oidc(inverted), at(NOW))
                .expect_err("exp before iat")
                .to_string()
                .contains("`exp`")
        );
    }

    #[test]
    fn the_maximum_lifetime_is_configurable_within_bounds() {
        let issuer = ed_issuer(FederationKind::Oidc, &["EdDSA"])
            .expect("valid")
            .with_max_lifetime(7200)
            .expect("2 h is allowed");
        let mut claims = bot_claims();
        claims["exp"] = json!(NOW + 7200);
        assert!(issuer.verify(&oidc(claims.clone()), at(NOW)).is_ok());
        let short = issuer.clone().with_max_lifetime(60).expect("1 min is allowed");
        assert!(short.verify(&oidc(claims), at(NOW)).is_err());
        for bad in [0, MAX_FEDERATED_LIFETIME_SECS + 1] {
            let err = issuer
                .clone()
                .with_max_lifetime(bad)
                .expect_err("out of bounds")
                .to_string();
            assert!(err.contains("max_token_lifetime_secs"), "{err}");
        }
    }

    /// Issue 15: tokens without `jti` could be replayed. Every accepted token now has a one-time id:
    /// its `jti` under its issuer, else the digest of its signing input under a namespace of its own
    /// (so the signature, which ECDSA lets anyone rewrite, does not change it).
    #[test]
    fn every_federated_token_has_a_one_time_id() {
        let issuer = ed_issuer(FederationKind::Oidc, &["EdDSA"]).expect("valid");
        let mut with_jti = bot_claims();
        with_jti["jti"] = json!("abc");
        let id = issuer.verify(&oidc(with_jti), at(NOW)).expect("valid");
        assert_eq!(
            id.one_time_id(),
            ("https://idp.example.com".to_owned(), "abc".to_owned())
        );

        let token = oidc(bot_claims());
        let id = issuer.verify(&token, at(NOW)).expect("valid");
        let signed = &token[..token.rfind('.').expect("compact JWS")];
        let (namespace, digest) = id.one_time_id();
        assert_eq!(namespace, "federated-digest:https://idp.example.com");
        assert_eq!(digest, hex_sha256(signed.as_bytes()));
        assert_eq!(digest.len(), 64);
        // Another token (other claims) has another id.
        let mut later = bot_claims();
        later["iat"] = json!(NOW + 1);
        let other = issuer.verify(&oidc(later), at(NOW)).expect("valid");
        assert_ne!(other.one_time_id().1, digest);
        // An empty `jti` is not a one-time id.
        let mut empty = bot_claims();
        empty["jti"] = json!("");
        assert!(
            issuer
                .verify(&oidc(empty), at(NOW))
                .expect_err("empty jti")
                .to_string()
                .contains("`jti`")
        );
    }

    #[test]
    fn debug_lists_kids_not_keys() {
        let issuer = ed_issuer(FederationKind::Oidc, &["EdDSA"]).expect("valid");
        let debug = format!("{issuer:?}");
        assert!(
            debug.contains("ed-1") && !debug.contains(&test_key().public().x_b64()),
            "{debug}"
        );
    }
}
