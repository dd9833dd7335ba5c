//! Keys: Warden's own Ed25519 signing keys (generated, saved to and loaded from key files), public keys
//! with their kid, JWK conversion, the RFC 7638 thumbprint, and the [`KeyLookup`] seam through which
//! verifiers find keys.
//!
//! A kid is always the RFC 7638 JWK thumbprint of the public key (base64url SHA-256). It is therefore
//! derived, never chosen: two nodes that load the same key agree on its kid, a kid cannot be reused for
//! a different key, and a key file whose recorded kid does not match its key is refused as corrupt.
//!
//! Key material lives only in [`SigningKey`], whose `Debug` prints the kid and creation time, and which
//! ed25519-dalek zeroizes on drop; intermediate copies (the base64 seed, the file bytes) are zeroized
//! too.

use std::collections::HashMap;
use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{Read as _, Write as _};
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};
use zeroize::Zeroizing;

use crate::jws::{b64, b64_decode_field};
use crate::{KeyFileError, TokenError};

/// Marks the key file layout, so a later layout can be told apart.
const KEY_FILE_FORMAT: &str = "warden-ed25519-signing-key-v1";
/// A key file is ~200 bytes; anything much larger is not one.
const MAX_KEY_FILE_BYTES: u64 = 4096;

/// An Ed25519 signing key with its kid (= RFC 7638 JWK thumbprint, base64url) and creation time.
/// `Debug` never prints key material; the key is zeroized on drop (ed25519-dalek's `zeroize`).
/// Not `Clone`: share it with an `Arc`, so there is one copy of the secret.
pub struct SigningKey {
    inner: ed25519_dalek::SigningKey,
    public: PublicKey,
    created_at: DateTime<Utc>,
}

impl SigningKey {
    /// A fresh key from the OS CSPRNG.
    pub fn generate(created_at: DateTime<Utc>) -> Self {
        Self::from_dalek(
            ed25519_dalek::SigningKey::generate(&mut rand::rngs::OsRng),
            created_at,
        )
    }

    /// A key from its 32-byte seed (RFC 8032 private key). For test vectors and tools; production keys
    /// come from [`SigningKey::generate`] or [`SigningKey::load`].
    pub fn from_seed(seed: &[u8; 32], created_at: DateTime<Utc>) -> Self {
        Self::from_dalek(ed25519_dalek::SigningKey::from_bytes(seed), created_at)
    }

    fn from_dalek(inner: ed25519_dalek::SigningKey, created_at: DateTime<Utc>) -> Self {
        let public = PublicKey::from_verifying_key(inner.verifying_key());
        Self {
            inner,
            public,
            created_at,
        }
    }

    pub fn kid(&self) -> &str {
        self.public.kid()
    }

    pub fn created_at(&self) -> DateTime<Utc> {
        self.created_at
    }

    pub fn public(&self) -> PublicKey {
        self.public.clone()
    }

    pub(crate) fn dalek(&self) -> &ed25519_dalek::SigningKey {
        &self.inner
    }

    /// The private key as PKCS#8 PEM (RFC 8410: `-----BEGIN PRIVATE KEY-----`), the form OAuth client
    /// libraries take for `private_key_jwt` with `EdDSA` (e.g. the MCP Python SDK's
    /// `SignedJWTParameters`). A secret: zeroized on drop, never logged.
    pub fn to_pkcs8_pem(&self) -> Zeroizing<String> {
        use base64::Engine as _;
        // RFC 8410 §7: SEQUENCE { INTEGER 0, SEQUENCE { OID 1.3.101.112 }, OCTET STRING { OCTET STRING seed } }
        const PREFIX: [u8; 16] = [
            0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20,
        ];
        let mut der = Zeroizing::new(Vec::with_capacity(48));
        der.extend_from_slice(&PREFIX);
        der.extend_from_slice(self.inner.as_bytes());
        let body = Zeroizing::new(base64::engine::general_purpose::STANDARD.encode(der.as_slice()));
        let mut pem = Zeroizing::new(String::with_capacity(128));
        pem.push_str("-----BEGIN PRIVATE KEY-----\n");
        pem.push_str(&body);
        pem.push_str("\n-----END PRIVATE KEY-----\n");
        pem
    }

    /// Writes the key as a small JSON file (format, kid, created_at, base64url seed) with mode 0600,
    /// `create_new` (never overwrites), fsynced, and the directory fsynced so the name is durable too.
    /// A file left half-written by a failed write is removed.
    pub fn save(&self, path: &Path) -> Result<(), KeyFileError> {
        #[derive(Serialize)]
        struct KeyFileOut<'a> {
            format: &'a str,
            kid: &'a str,
            created_at: DateTime<Utc>,
            seed: &'a str,
        }
        let io = |action: &'static str| {
            move |source| KeyFileError::Io {
                path: path.to_path_buf(),
                action,
                source,
            }
        };
        let seed = Zeroizing::new(b64(self.inner.as_bytes()));
        let mut contents = Zeroizing::new(
            serde_json::to_vec_pretty(&KeyFileOut {
                format: KEY_FILE_FORMAT,
                kid: self.kid(),
                created_at: self.created_at,
                seed: &seed,
            })
            .map_err(|e| KeyFileError::Corrupt {
                path: path.to_path_buf(),
                reason: e.to_string(),
            })?,
        );
        contents.push(b'\n');

        let mut options = OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt as _;
            options.mode(0o600);
        }
        let mut file = options.open(path).map_err(|source| {
            if source.kind() == std::io::ErrorKind::AlreadyExists {
                KeyFileError::AlreadyExists {
                    path: path.to_path_buf(),
                }
            } else {
                io("create")(source)
            }
        })?;
        if let Err(e) = file.write_all(&contents).and_then(|()| file.sync_all()) {
            drop(file);
            let _ = std::fs::remove_file(path);
            return Err(io("write")(e));
        }
        #[cfg(unix)]
        {
            let dir = match path.parent() {
                Some(p) if !p.as_os_str().is_empty() => p,
                _ => Path::new("."),
            };
            File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(|source| KeyFileError::Io {
                    path: dir.to_path_buf(),
                    action: "sync the directory of",
                    source,
                })?;
        }
        Ok(())
    }

    /// Reads a key file written by [`SigningKey::save`]. Refuses a file that group or others may access
    /// (`mode & 0o077 != 0`), anything that is not a regular file, and a file whose kid does not
    /// match its key.
    pub fn load(path: &Path) -> Result<Self, KeyFileError> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct KeyFileIn {
            format: String,
            kid: String,
            created_at: DateTime<Utc>,
            seed: String,
        }
        let io = |action: &'static str| {
            move |source| KeyFileError::Io {
                path: path.to_path_buf(),
                action,
                source,
            }
        };
        let corrupt = |reason: String| KeyFileError::Corrupt {
            path: path.to_path_buf(),
            reason,
        };

        let file = File::open(path).map_err(io("open"))?;
        // Checked on the open handle, not the path: no window in which the file could be swapped.
        let meta = file.metadata().map_err(io("inspect"))?;
        if !meta.is_file() {
            return Err(corrupt("not a regular file".into()));
        }
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = meta.permissions().mode() & 0o7777;
            if mode & 0o077 != 0 {
                return Err(KeyFileError::Permissions {
                    path: path.to_path_buf(),
                    mode,
                });
            }
        }
        if meta.len() > MAX_KEY_FILE_BYTES {
            return Err(corrupt(format!("larger than {MAX_KEY_FILE_BYTES} bytes")));
        }
        let mut bytes = Zeroizing::new(Vec::new());
        file.take(MAX_KEY_FILE_BYTES + 1)
            .read_to_end(&mut bytes)
            .map_err(io("read"))?;
        let parsed: KeyFileIn = serde_json::from_slice(&bytes).map_err(|e| {
            // Only messages that cannot echo a value (the seed) are passed on.
            let message = e.to_string();
            if message.starts_with("missing field") || message.starts_with("unknown field") {
                corrupt(crate::jws::shorten(&message))
            } else {
                corrupt(format!(
                    "unexpected content at line {}, column {}",
                    e.line(),
                    e.column()
                ))
            }
        })?;
        let seed_b64 = Zeroizing::new(parsed.seed);
        if parsed.format != KEY_FILE_FORMAT {
            return Err(corrupt(format!(
                "unknown format `{}`; expected `{KEY_FILE_FORMAT}`",
                crate::jws::shorten(&parsed.format)
            )));
        }
        let seed = Zeroizing::new(
            b64_decode_field(&seed_b64, "seed").map_err(|_| corrupt("`seed` is not base64url".into()))?,
        );
        let seed: Zeroizing<[u8; 32]> = Zeroizing::new(
            seed.as_slice()
                .try_into()
                .map_err(|_| corrupt(format!("`seed` is {} bytes; expected 32", seed.len())))?,
        );
        let key = Self::from_seed(&seed, parsed.created_at);
        if key.kid() != parsed.kid {
            return Err(KeyFileError::KidMismatch {
                path: path.to_path_buf(),
                stored: crate::jws::shorten(&parsed.kid),
                actual: key.kid().to_owned(),
            });
        }
        Ok(key)
    }

    /// Where [`SigningKey::save`] would put the key with this kid inside `dir` (`<kid>.key.json`).
    /// A kid is base64url, so it is always a safe file name.
    pub fn file_name_in(&self, dir: &Path) -> PathBuf {
        dir.join(format!("{}.key.json", self.kid()))
    }
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigningKey")
            .field("kid", &self.kid())
            .field("created_at", &self.created_at)
            .finish_non_exhaustive()
    }
}

/// An Ed25519 public key with its kid.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PublicKey {
    key: ed25519_dalek::VerifyingKey,
    kid: String,
}

impl PublicKey {
    fn from_verifying_key(key: ed25519_dalek::VerifyingKey) -> Self {
        let kid = ed25519_thumbprint(&b64(key.as_bytes()));
        Self { key, kid }
    }

    pub fn kid(&self) -> &str {
        &self.kid
    }

    pub(crate) fn verifying_key(&self) -> &ed25519_dalek::VerifyingKey {
        &self.key
    }

    /// The public JWK: `{"kty":"OKP","crv":"Ed25519","x":..,"kid":..,"alg":"EdDSA","use":"sig"}`.
    pub fn to_jwk(&self) -> Value {
        json!({
            "kty": "OKP",
            "crv": "Ed25519",
            "x": self.x_b64(),
            "kid": self.kid,
            "alg": "EdDSA",
            "use": "sig",
        })
    }

    /// base64url of the 32 key bytes (for storage).
    pub fn x_b64(&self) -> String {
        b64(self.key.as_bytes())
    }

    /// Rebuilds a key from [`PublicKey::x_b64`]. With `kid`, checks that it is this key's thumbprint.
    /// Refuses points that are not on the curve and small-order ("weak") keys.
    pub fn from_x_b64(kid: Option<&str>, x: &str) -> Result<Self, TokenError> {
        let bytes = b64_decode_field(x, "x")?;
        let bytes: &[u8; 32] = bytes
            .as_slice()
            .try_into()
            .map_err(|_| TokenError::InvalidKey(format!("`x` is {} bytes; expected 32", bytes.len())))?;
        let key = ed25519_dalek::VerifyingKey::from_bytes(bytes)
            .map_err(|_| TokenError::InvalidKey("`x` is not an Ed25519 public key".into()))?;
        if key.is_weak() {
            return Err(TokenError::InvalidKey(
                "`x` is a small-order (weak) Ed25519 key".into(),
            ));
        }
        let key = Self::from_verifying_key(key);
        if let Some(kid) = kid
            && kid != key.kid
        {
            return Err(TokenError::InvalidKey(format!(
                "kid `{}` is not the key's RFC 7638 thumbprint `{}`",
                crate::jws::shorten(kid),
                key.kid
            )));
        }
        Ok(key)
    }

    /// Reads a public JWK; only OKP/Ed25519. Refuses private members (`d`), an `alg` other than
    /// `EdDSA`, a `use` other than `sig`, `key_ops` without `verify`, and a `kid` that is not the key's
    /// thumbprint (kids are always thumbprints; leave `kid` out to have it computed).
    pub fn from_jwk(jwk: &Value) -> Result<Self, TokenError> {
        let obj = jwk
            .as_object()
            .ok_or_else(|| TokenError::InvalidKey("a JWK is a JSON object".into()))?;
        let member = |name: &str| -> Result<Option<&str>, TokenError> {
            match obj.get(name) {
                None => Ok(None),
                Some(Value::String(s)) => Ok(Some(s)),
                Some(_) => Err(TokenError::InvalidKey(format!("`{name}` must be a string"))),
            }
        };
        if obj.contains_key("d") {
            return Err(TokenError::InvalidKey(
                "the JWK contains the private key (`d`); send only the public key".into(),
            ));
        }
        match (member("kty")?, member("crv")?) {
            (Some("OKP"), Some("Ed25519")) => {}
            (kty, crv) => {
                return Err(TokenError::InvalidKey(format!(
                    "only Ed25519 keys (`kty` `OKP`, `crv` `Ed25519`) are accepted, not `kty` `{}` `crv` `{}`",
                    crate::jws::shorten(kty.unwrap_or("")),
                    crate::jws::shorten(crv.unwrap_or(""))
                )));
            }
        }
        if let Some(alg) = member("alg")?
            && alg != "EdDSA"
        {
            return Err(TokenError::InvalidKey(format!(
                "`alg` is `{}`; an Ed25519 key is for `EdDSA`",
                crate::jws::shorten(alg)
            )));
        }
        if let Some(usage) = member("use")?
            && usage != "sig"
        {
            return Err(TokenError::InvalidKey("`use` must be `sig`".into()));
        }
        if let Some(ops) = obj.get("key_ops") {
            let verifies = ops
                .as_array()
                .is_some_and(|ops| ops.iter().any(|op| op.as_str() == Some("verify")));
            if !verifies {
                return Err(TokenError::InvalidKey("`key_ops` must include `verify`".into()));
            }
        }
        let x = member("x")?.ok_or_else(|| TokenError::InvalidKey("`x` is missing".into()))?;
        Self::from_x_b64(member("kid")?, x)
    }
}

/// The JWK Set document for `/.well-known/jwks.json`: `{"keys": [<public JWK>, ...]}`.
pub fn jwks(keys: &[PublicKey]) -> Value {
    json!({ "keys": keys.iter().map(PublicKey::to_jwk).collect::<Vec<_>>() })
}

fn ed25519_thumbprint(x_b64: &str) -> String {
    // RFC 7638 §3.2 canonical form for OKP keys (RFC 8037 §2): crv, kty, x in that order, no spaces.
    // `x` is base64url, which needs no JSON escaping.
    let canonical = format!(r#"{{"crv":"Ed25519","kty":"OKP","x":"{x_b64}"}}"#);
    b64(&Sha256::digest(canonical.as_bytes()))
}

/// RFC 7638 thumbprint of a JWK (OKP, EC, RSA and oct keys, with the members RFC 7638 §3.2 and RFC 8037
/// §2 require), base64url SHA-256. Only the required members count; others are ignored.
pub fn jwk_thumbprint(jwk: &Value) -> Result<String, TokenError> {
    let obj = jwk
        .as_object()
        .ok_or_else(|| TokenError::InvalidKey("a JWK is a JSON object".into()))?;
    let kty = obj
        .get("kty")
        .and_then(Value::as_str)
        .ok_or_else(|| TokenError::InvalidKey("`kty` is missing or not a string".into()))?;
    let members: &[&str] = match kty {
        "OKP" => &["crv", "kty", "x"],
        "EC" => &["crv", "kty", "x", "y"],
        "RSA" => &["e", "kty", "n"],
        "oct" => &["k", "kty"],
        other => {
            return Err(TokenError::InvalidKey(format!(
                "unsupported key type `{}`",
                crate::jws::shorten(other)
            )));
        }
    };
    let mut canonical = String::from("{");
    for (i, name) in members.iter().enumerate() {
        let value = obj
            .get(*name)
            .and_then(Value::as_str)
            .ok_or_else(|| TokenError::InvalidKey(format!("`{name}` is missing or not a string")))?;
        if i > 0 {
            canonical.push(',');
        }
        // serde_json writes exactly the JSON string escaping RFC 7638 §3.3 asks for.
        canonical.push_str(&format!(
            "\"{name}\":{}",
            serde_json::to_string(value).map_err(|e| TokenError::Internal(e.to_string()))?
        ));
    }
    canonical.push('}');
    Ok(b64(&Sha256::digest(canonical.as_bytes())))
}

/// Where verifiers find public keys by kid.
pub trait KeyLookup {
    fn public_key(&self, kid: &str) -> Option<PublicKey>;
}

impl KeyLookup for HashMap<String, PublicKey> {
    fn public_key(&self, kid: &str) -> Option<PublicKey> {
        self.get(kid).cloned()
    }
}

impl KeyLookup for Vec<PublicKey> {
    fn public_key(&self, kid: &str) -> Option<PublicKey> {
        self.iter().find(|k| k.kid == kid).cloned()
    }
}

/// A single key: found only by its own kid.
impl KeyLookup for PublicKey {
    fn public_key(&self, kid: &str) -> Option<PublicKey> {
        (self.kid == kid).then(|| self.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> DateTime<Utc> {
        DateTime::from_timestamp(1_700_000_000, 0).expect("valid")
    }

    #[test]
    fn pkcs8_pem_holds_the_key_for_other_libraries() {
        use base64::Engine as _;
        let key = SigningKey::generate(now());
        let pem = key.to_pkcs8_pem();
        let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
        assert!(pem.starts_with("-----BEGIN PRIVATE KEY-----\n"));
        assert!(pem.ends_with("-----END PRIVATE KEY-----\n"));
        let der = base64::engine::general_purpose::STANDARD
            .decode(&body)
            .expect("base64");
        assert_eq!(der.len(), 48);
        // Another implementation reads the PKCS#8 document and signs what our public key verifies
        // (the end-to-end test has PyJWT read the PEM itself).
        let encoding = jsonwebtoken::EncodingKey::from_ed_der(&der);
        let token = jsonwebtoken::encode(
            &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::EdDSA),
            &serde_json::json!({"x": 1}),
            &encoding,
        )
        .expect("signed");
        let (input, sig) = token.rsplit_once('.').expect("jws");
        let sig = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(sig)
            .expect("b64");
        let sig = ed25519_dalek::Signature::from_slice(&sig).expect("64 bytes");
        key.public()
            .verifying_key()
            .verify_strict(input.as_bytes(), &sig)
            .expect("the PEM is this key");
    }

    #[test]
    fn rfc_8037_appendix_a_thumbprint() {
        // RFC 8037 Appendix A.3: the thumbprint of the A.2 public key.
        let jwk = json!({"kty":"OKP","crv":"Ed25519","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"});
        assert_eq!(
            jwk_thumbprint(&jwk).expect("valid"),
            "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k"
        );
        let key = PublicKey::from_jwk(&jwk).expect("valid");
        assert_eq!(key.kid(), "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k");
        // RFC 8037 A.1 private key: the seed gives the same public key and kid.
        let seed = b64_decode_field("nWGxne_9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2A", "d").expect("b64");
        let key = SigningKey::from_seed(&seed.try_into().expect("32 bytes"), now());
        assert_eq!(key.kid(), "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k");
    }

    #[test]
    fn rfc_7638_rsa_thumbprint() {
        // RFC 7638 §3.1 example.
        let jwk = json!({
            "kty": "RSA",
            "n": "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw",
            "e": "AQAB",
            "alg": "RS256",
            "kid": "2011-04-29"
        });
        assert_eq!(
            jwk_thumbprint(&jwk).expect("valid"),
            "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"
        );
        assert!(jwk_thumbprint(&json!({"kty":"EC","crv":"P-256","x":"a"})).is_err());
        assert!(jwk_thumbprint(&json!({"kty":"XYZ"})).is_err());
        assert!(jwk_thumbprint(&json!({"kty":"RSA","n":1,"e":"AQAB"})).is_err());
        assert!(jwk_thumbprint(&json!([])).is_err());
    }

    #[test]
    fn public_key_round_trips() {
        let key = SigningKey::generate(now());
        let public = key.public();
        assert_eq!(public.kid(), key.kid());
        assert_eq!(PublicKey::from_jwk(&public.to_jwk()), Ok(public.clone()));
        assert_eq!(
            PublicKey::from_x_b64(Some(key.kid()), &public.x_b64()),
            Ok(public.clone())
        );
        assert_eq!(PublicKey::from_x_b64(None, &public.x_b64()), Ok(public.clone()));
        assert_eq!(jwk_thumbprint(&public.to_jwk()).as_deref(), Ok(key.kid()));
        assert!(PublicKey::from_x_b64(Some("other"), &public.x_b64()).is_err());
        assert_eq!(
            jwks(std::slice::from_ref(&public))["keys"][0]["kid"],
            json!(key.kid())
        );
    }

    #[test]
    fn bad_public_keys_are_refused() {
        let key = SigningKey::generate(now()).public();
        let mut jwk = key.to_jwk();
        let check = |jwk: &Value, want: &str| {
            let got = PublicKey::from_jwk(jwk).expect_err("refused").to_string();
            assert!(got.contains(want), "`{got}` lacks `{want}`");
        };
        jwk["d"] = json!("AAAA");
        check(&jwk, "private key");
        let mut jwk = key.to_jwk();
        jwk["crv"] = json!("X25519");
        check(&jwk, "only Ed25519 keys");
        let mut jwk = key.to_jwk();
        jwk["alg"] = json!("RS256");
        check(&jwk, "`alg` is `RS256`");
        let mut jwk = key.to_jwk();
        jwk["use"] = json!("enc");
        check(&jwk, "`use` must be `sig`");
        let mut jwk = key.to_jwk();
        jwk["key_ops"] = json!(["sign"]);
        check(&jwk, "`key_ops`");
        let mut jwk = key.to_jwk();
        jwk["kid"] = json!("my-key");
        check(&jwk, "not the key's RFC 7638 thumbprint");
        check(&json!({"kty":"OKP","crv":"Ed25519"}), "`x` is missing");
        check(&json!({"kty":"OKP","crv":"Ed25519","x":"AAAA"}), "expected 32");
        check(
            &json!({"kty":"OKP","crv":"Ed25519","x":"not base64!"}),
            "base64url",
        );
        check(&json!("key"), "JSON object");
        // The identity point is a small-order key: every signature would "verify" under some schemes.
        let mut identity = [0u8; 32];
        identity[0] = 1;
        assert!(PublicKey::from_x_b64(None, &b64(&identity)).is_err());
    }

    #[test]
    fn debug_shows_no_key_material() {
        let seed = [7u8; 32];
        let key = SigningKey::from_seed(&seed, now());
        let debug = format!("{key:?}");
        assert!(debug.contains(key.kid()));
        assert!(!debug.contains(&b64(&seed)));
        assert!(!debug.contains("7, 7"));
    }

    #[test]
    fn lookups() {
        let a = SigningKey::generate(now()).public();
        let b = SigningKey::generate(now()).public();
        let map: HashMap<String, PublicKey> =
            [(a.kid().to_owned(), a.clone()), (b.kid().to_owned(), b.clone())].into();
        assert_eq!(map.public_key(b.kid()), Some(b.clone()));
        assert_eq!(map.public_key("nope"), None);
        assert_eq!(vec![a.clone()].public_key(a.kid()), Some(a.clone()));
        assert_eq!(a.public_key(b.kid()), None);
    }

    proptest::proptest! {
        #[test]
        fn jwk_parsing_never_panics(
            kty in "(OKP|EC|RSA|oct|\\PC{0,3})",
            crv in "(Ed25519|P-256|\\PC{0,3})",
            x in "[A-Za-z0-9_-]{0,50}",
            kid in proptest::option::of("\\PC{0,10}"),
        ) {
            let mut jwk = json!({"kty": kty, "crv": crv, "x": x, "y": x, "n": x, "e": "AQAB", "k": x});
            if let Some(kid) = kid {
                jwk["kid"] = json!(kid);
            }
            let _ = jwk_thumbprint(&jwk);
            if let Ok(key) = PublicKey::from_jwk(&jwk) {
                proptest::prop_assert_eq!(jwk_thumbprint(&key.to_jwk()), Ok(key.kid().to_owned()));
            }
        }
    }

    #[cfg(unix)]
    mod files {
        use super::*;
        use std::os::unix::fs::PermissionsExt as _;

        #[test]
        fn save_then_load_round_trips() {
            let dir = tempfile::tempdir().expect("tempdir");
            let key = SigningKey::generate(now());
            let path = key.file_name_in(dir.path());
            key.save(&path).expect("saved");
            let mode = std::fs::metadata(&path).expect("exists").permissions().mode() & 0o777;
            assert_eq!(mode, 0o600);
            let loaded = SigningKey::load(&path).expect("loaded");
            assert_eq!(loaded.kid(), key.kid());
            assert_eq!(loaded.created_at(), key.created_at());
            assert_eq!(loaded.public(), key.public());
        }

        #[test]
        fn save_never_overwrites() {
            let dir = tempfile::tempdir().expect("tempdir");
            let path = dir.path().join("k.json");
            SigningKey::generate(now()).save(&path).expect("saved");
            let before = std::fs::read(&path).expect("read");
            let err = SigningKey::generate(now()).save(&path).expect_err("refused");
            assert!(matches!(err, KeyFileError::AlreadyExists { .. }), "{err}");
            assert!(err.to_string().contains("refusing to overwrite"), "{err}");
            assert_eq!(std::fs::read(&path).expect("read"), before);
        }

        #[test]
        fn load_refuses_files_others_can_read() {
            let dir = tempfile::tempdir().expect("tempdir");
            let path = dir.path().join("k.json");
            SigningKey::generate(now()).save(&path).expect("saved");
            for mode in [0o644, 0o640, 0o604, 0o660] {
                std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).expect("chmod");
                let err = SigningKey::load(&path).expect_err("refused");
                assert!(matches!(err, KeyFileError::Permissions { .. }), "{err}");
                assert!(err.to_string().contains("chmod 600"), "{err}");
            }
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o400)).expect("chmod");
            SigningKey::load(&path).expect("0400 is fine");
        }

        fn write_0600(path: &Path, contents: &str) {
            std::fs::write(path, contents).expect("write");
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        }

        #[test]
        fn load_refuses_corrupt_files_without_echoing_them() {
            let dir = tempfile::tempdir().expect("tempdir");
            let path = dir.path().join("k.json");
            let key = SigningKey::generate(now());
            key.save(&path).expect("saved");
            let good: Value = serde_json::from_slice(&std::fs::read(&path).expect("read")).expect("json");
            let seed = good["seed"].as_str().expect("seed").to_owned();

            let check = |contents: String, want: &str| {
                std::fs::remove_file(&path).expect("rm");
                write_0600(&path, &contents);
                let err = SigningKey::load(&path).expect_err("refused").to_string();
                assert!(err.contains(want), "`{err}` lacks `{want}`");
                assert!(!err.contains(&seed), "`{err}` shows the seed");
                assert!(err.contains("k.json"), "`{err}` does not name the file");
            };
            let mut other = good.clone();
            other["kid"] = json!("not-the-kid");
            check(other.to_string(), "says kid `not-the-kid`");
            let mut other = good.clone();
            other["seed"] = json!(seed[..20]);
            check(other.to_string(), "`seed` is 15 bytes");
            let mut other = good.clone();
            other["format"] = json!("v0");
            check(other.to_string(), "unknown format `v0`");
            let mut other = good.clone();
            other.as_object_mut().expect("object").remove("seed");
            check(other.to_string(), "missing field `seed`");
            let mut other = good.clone();
            other["seed"] = json!(12345);
            check(other.to_string(), "unexpected content at line 1");
            check(format!("{{\"seed\": \"{seed}"), "unexpected content");
            check("x".repeat(5000), "larger than 4096 bytes");
            let err = SigningKey::load(&dir.path().join("missing.json")).expect_err("refused");
            assert!(err.to_string().starts_with("cannot open key file"), "{err}");
            let err = SigningKey::load(dir.path()).expect_err("refused");
            assert!(err.to_string().contains("not a regular file"), "{err}");
        }
    }
}
