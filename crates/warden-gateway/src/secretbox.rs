//! AEAD sealing of upstream credentials at rest (XChaCha20-Poly1305).
//!
//! The gateway injects upstreams' real credentials (API keys, bearer tokens, headers) into the requests
//! it forwards; agents never see them. They are stored in the database sealed under a key that lives
//! only in a file (or the environment) on each node, never in the database, so a copy of the database
//! alone reveals nothing.
//!
//! * XChaCha20-Poly1305: 24-byte nonces are safe to draw at random for every seal (no counter to keep
//!   across nodes), and the tag authenticates ciphertext and associated data.
//! * The associated data binds a sealed value to where it belongs (e.g. `upstream/<name>/api-key`): a
//!   ciphertext copied to another row does not open there.
//! * Every sealed value names the key it was sealed with ([`SealingKey::key_id`], the first 16 hex
//!   characters of the key's SHA-256), so key rotation can tell which values need resealing, and a
//!   wrong key is a precise error rather than a generic failure.
//! * Key bytes are zeroized on drop; `Debug` shows only the key id; no error ever contains key or
//!   plaintext bytes; opened plaintext comes back as a zeroizing [`Secret`].

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use rand::RngCore;
use sha2::{Digest, Sha256};
use warden_core::Secret;
use zeroize::Zeroizing;

/// Nonce length of XChaCha20-Poly1305.
pub const NONCE_LEN: usize = 24;
/// Key length.
pub const KEY_LEN: usize = 32;

/// A key that seals and opens credentials.
pub struct SealingKey {
    key: Zeroizing<[u8; KEY_LEN]>,
    cipher: XChaCha20Poly1305, // zeroizes its key copy on drop
    key_id: String,
}

impl fmt::Debug for SealingKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SealingKey")
            .field("key_id", &self.key_id)
            .finish_non_exhaustive()
    }
}

/// Why a key file is refused. Never contains key bytes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("the key file is empty")]
    Empty,
    #[error(
        "the key file holds 32 printable characters, which is not a key: write 32 raw random bytes, 64 hex characters or the base64 of 32 bytes"
    )]
    LooksLikeText,
    #[error("the key file's base64 decodes to {len} bytes; a key is 32 bytes")]
    Base64Length { len: usize },
    #[error(
        "the key file must hold 32 raw bytes, 64 hex characters or the base64 of 32 bytes (a trailing newline is fine); it holds {len} bytes that are none of these"
    )]
    Format { len: usize },
    #[error("the key is all zeros")]
    AllZero,
}

/// Why sealing failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SealError {
    #[error("the plaintext is too large to seal")]
    TooLarge,
}

/// Why a sealed value does not open. Never contains plaintext or key bytes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OpenError {
    #[error("the value was sealed with key `{sealed_with}`, not with this key (`{this_key}`)")]
    WrongKey { sealed_with: String, this_key: String },
    #[error("the nonce is {len} bytes; XChaCha20-Poly1305 nonces are 24")]
    BadNonce { len: usize },
    #[error("the sealed value does not open: wrong associated data, or the ciphertext was altered")]
    Failed,
}

/// A sealed value: which key, the random nonce, and the ciphertext with its 16-byte tag.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sealed {
    pub key_id: String,
    pub nonce: Vec<u8>,
    pub ciphertext: Vec<u8>,
}

/// Why a stored sealed value's text form is unreadable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a sealed value must look like `v1:<key id>:<nonce, base64url>:<ciphertext, base64url>`: {0}")]
pub struct SealedFormatError(&'static str);

impl Sealed {
    /// One-line text form for storage: `v1:<key id>:<nonce>:<ciphertext>` (unpadded base64url).
    pub fn encode(&self) -> String {
        format!(
            "v1:{}:{}:{}",
            self.key_id,
            URL_SAFE_NO_PAD.encode(&self.nonce),
            URL_SAFE_NO_PAD.encode(&self.ciphertext)
        )
    }

    /// Reads [`Sealed::encode`]'s form back.
    pub fn decode(text: &str) -> Result<Sealed, SealedFormatError> {
        let mut parts = text.split(':');
        let (Some(version), Some(key_id), Some(nonce), Some(ciphertext), None) = (
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
        ) else {
            return Err(SealedFormatError("it needs exactly four parts separated by `:`"));
        };
        if version != "v1" {
            return Err(SealedFormatError("unknown version"));
        }
        if key_id.len() != 16 || !key_id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            return Err(SealedFormatError("the key id is not 16 lowercase hex characters"));
        }
        let nonce = URL_SAFE_NO_PAD
            .decode(nonce)
            .map_err(|_| SealedFormatError("the nonce is not base64url"))?;
        let ciphertext = URL_SAFE_NO_PAD
            .decode(ciphertext)
            .map_err(|_| SealedFormatError("the ciphertext is not base64url"))?;
        Ok(Sealed {
            key_id: key_id.to_owned(),
            nonce,
            ciphertext,
        })
    }
}

impl SealingKey {
    fn from_key(key: Zeroizing<[u8; KEY_LEN]>) -> Result<Self, KeyError> {
        if key.iter().all(|&b| b == 0) {
            return Err(KeyError::AllZero);
        }
        let digest = Sha256::digest(key.as_slice());
        let key_id = hex::encode(&digest[..8]);
        let cipher = XChaCha20Poly1305::new(key.as_slice().into());
        Ok(Self { key, cipher, key_id })
    }

    /// Reads a key file's contents: exactly 32 raw bytes, or 64 hex characters, or the base64
    /// (standard or URL-safe, padded or not) of 32 bytes; text forms may end in whitespace (a newline).
    /// 32 printable characters are refused as text rather than taken as a weak raw key.
    pub fn from_file_bytes(bytes: &[u8]) -> Result<Self, KeyError> {
        if bytes.is_empty() {
            return Err(KeyError::Empty);
        }
        let mut key = Zeroizing::new([0u8; KEY_LEN]);
        if bytes.len() == KEY_LEN {
            if bytes
                .iter()
                .all(|b| b.is_ascii_graphic() || b.is_ascii_whitespace())
            {
                return Err(KeyError::LooksLikeText);
            }
            key.copy_from_slice(bytes);
            return Self::from_key(key);
        }
        let text = bytes.trim_ascii_end();
        if text.len() == 2 * KEY_LEN && text.iter().all(u8::is_ascii_hexdigit) {
            hex::decode_to_slice(text, key.as_mut_slice())
                .map_err(|_| KeyError::Format { len: bytes.len() })?;
            return Self::from_key(key);
        }
        let decoded = [STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD]
            .iter()
            .find_map(|engine| engine.decode(text).ok())
            .map(Zeroizing::new);
        match decoded {
            Some(d) if d.len() == KEY_LEN => {
                key.copy_from_slice(&d);
                Self::from_key(key)
            }
            Some(d) if !text.is_empty() => Err(KeyError::Base64Length { len: d.len() }),
            _ => Err(KeyError::Format { len: bytes.len() }),
        }
    }

    /// A new random key (from the operating system's generator).
    pub fn generate() -> Self {
        loop {
            let mut key = Zeroizing::new([0u8; KEY_LEN]);
            rand::rngs::OsRng.fill_bytes(key.as_mut_slice());
            // All zeros is the only key `from_key` refuses; with 2^-256 odds, draw again.
            if let Ok(k) = Self::from_key(key) {
                return k;
            }
        }
    }

    /// The contents of a key file for this key: 64 hex characters and a newline. Write it with 0600
    /// permissions.
    pub fn to_file_contents(&self) -> Zeroizing<String> {
        let mut s = Zeroizing::new(hex::encode(self.key.as_slice()));
        s.push('\n');
        s
    }

    /// First 16 hex characters of the SHA-256 of the key: names the key without revealing it.
    pub fn key_id(&self) -> &str {
        &self.key_id
    }

    /// Seals `plaintext`, bound to `aad` (which is not stored: the caller supplies the same value
    /// to [`SealingKey::open`]). A fresh random nonce every time.
    pub fn seal(&self, plaintext: &[u8], aad: &[u8]) -> Result<Sealed, SealError> {
        let mut nonce = [0u8; NONCE_LEN];
        rand::rngs::OsRng.fill_bytes(&mut nonce);
        let ciphertext = self
            .cipher
            .encrypt(XNonce::from_slice(&nonce), Payload { msg: plaintext, aad })
            .map_err(|_| SealError::TooLarge)?;
        Ok(Sealed {
            key_id: self.key_id.clone(),
            nonce: nonce.to_vec(),
            ciphertext,
        })
    }

    /// Opens a sealed value with the same `aad` it was sealed with.
    pub fn open(&self, sealed: &Sealed, aad: &[u8]) -> Result<Secret<Zeroizing<Vec<u8>>>, OpenError> {
        if sealed.key_id != self.key_id {
            return Err(OpenError::WrongKey {
                sealed_with: sealed.key_id.chars().take(16).collect(),
                this_key: self.key_id.clone(),
            });
        }
        if sealed.nonce.len() != NONCE_LEN {
            return Err(OpenError::BadNonce {
                len: sealed.nonce.len(),
            });
        }
        let plaintext = self
            .cipher
            .decrypt(
                XNonce::from_slice(&sealed.nonce),
                Payload {
                    msg: &sealed.ciphertext,
                    aad,
                },
            )
            .map_err(|_| OpenError::Failed)?;
        Ok(Secret::new(Zeroizing::new(plaintext)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const HEX: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";

    fn key() -> SealingKey {
        SealingKey::from_file_bytes(HEX.as_bytes()).unwrap()
    }

    #[test]
    fn round_trip() {
        let k = key();
        let sealed = k.seal(b"sk_live_abc", b"upstream/github/token").unwrap();
        assert_eq!(sealed.key_id, k.key_id());
        assert_eq!(sealed.nonce.len(), NONCE_LEN);
        assert_eq!(sealed.ciphertext.len(), b"sk_live_abc".len() + 16);
        let opened = k.open(&sealed, b"upstream/github/token").unwrap();
        assert_eq!(opened.expose().as_slice(), b"sk_live_abc");
        assert_eq!(format!("{opened:?}"), "Secret(REDACTED)");
        // Fresh nonces: sealing twice gives different ciphertexts.
        assert_ne!(k.seal(b"x", b"").unwrap().nonce, k.seal(b"x", b"").unwrap().nonce);
        // Empty plaintext works.
        assert_eq!(
            k.open(&k.seal(b"", b"a").unwrap(), b"a")
                .unwrap()
                .expose()
                .as_slice(),
            b""
        );
        // Text form.
        let text = sealed.encode();
        assert!(text.starts_with(&format!("v1:{}:", k.key_id())));
        assert_eq!(Sealed::decode(&text).unwrap(), sealed);
        for bad in [
            "",
            "v1:a:b",
            "v2:0011223344556677:AA:AA",
            "v1:00112233445566ZZ:AA:AA",
            "v1:0011223344556677:!:AA",
            "v1:0011223344556677:AA:AA:AA",
        ] {
            assert!(Sealed::decode(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn tampering_aad_and_wrong_keys_are_refused() {
        let k = key();
        let sealed = k.seal(b"hunter2-secret", b"aad").unwrap();
        for i in 0..sealed.ciphertext.len() {
            let mut t = sealed.clone();
            t.ciphertext[i] ^= 1;
            assert_eq!(k.open(&t, b"aad").unwrap_err(), OpenError::Failed);
        }
        let mut t = sealed.clone();
        t.nonce[0] ^= 1;
        assert_eq!(k.open(&t, b"aad").unwrap_err(), OpenError::Failed);
        let mut t = sealed.clone();
        t.ciphertext.truncate(10);
        assert_eq!(k.open(&t, b"aad").unwrap_err(), OpenError::Failed);
        let mut t = sealed.clone();
        t.nonce.pop();
        assert_eq!(k.open(&t, b"aad").unwrap_err(), OpenError::BadNonce { len: 23 });
        let e = k.open(&sealed, b"other").unwrap_err();
        assert_eq!(e, OpenError::Failed);
        assert!(!e.to_string().contains("hunter2"));

        let other = SealingKey::generate();
        let e = other.open(&sealed, b"aad").unwrap_err();
        assert_eq!(
            e.to_string(),
            format!(
                "the value was sealed with key `{}`, not with this key (`{}`)",
                k.key_id(),
                other.key_id()
            )
        );
        // A forged key id does not help the wrong key.
        let mut forged = sealed.clone();
        forged.key_id = other.key_id().to_owned();
        assert_eq!(other.open(&forged, b"aad").unwrap_err(), OpenError::Failed);
    }

    #[test]
    fn key_file_forms() {
        let want = key().key_id().to_owned();
        assert_eq!(want, hex::encode(&Sha256::digest(hex::decode(HEX).unwrap())[..8]));
        let raw = hex::decode(HEX).unwrap();
        let b64 = STANDARD.encode(&raw);
        for form in [
            raw.clone(),
            format!("{HEX}\n").into_bytes(),
            format!("{HEX}\r\n").into_bytes(),
            HEX.to_uppercase().into_bytes(),
            b64.clone().into_bytes(),
            format!("{b64}\n").into_bytes(),
            URL_SAFE_NO_PAD.encode(&raw).into_bytes(),
        ] {
            assert_eq!(SealingKey::from_file_bytes(&form).unwrap().key_id(), want);
        }
        let err = |b: &[u8]| SealingKey::from_file_bytes(b).unwrap_err();
        assert_eq!(err(b""), KeyError::Empty);
        assert_eq!(err(&[0u8; 32]), KeyError::AllZero);
        assert_eq!(err(&"ab".repeat(16).into_bytes()), KeyError::LooksLikeText);
        assert_eq!(err(format!("{HEX}0").as_bytes()), KeyError::Format { len: 65 });
        assert_eq!(err(&raw[..31]), KeyError::Format { len: 31 });
        assert_eq!(
            err(STANDARD.encode([1u8; 16]).as_bytes()),
            KeyError::Base64Length { len: 16 }
        );
        let mut raw_nl = raw.clone();
        raw_nl.push(b'\n');
        assert_eq!(err(&raw_nl), KeyError::Format { len: 33 });
        assert_eq!(err(b"\n\n"), KeyError::Format { len: 2 });

        let g = SealingKey::generate();
        let again = SealingKey::from_file_bytes(g.to_file_contents().as_bytes()).unwrap();
        assert_eq!(again.key_id(), g.key_id());
        assert_eq!(
            format!("{g:?}"),
            format!("SealingKey {{ key_id: {:?}, .. }}", g.key_id())
        );
        assert!(!format!("{:?}", key()).contains(HEX));
    }

    proptest! {
        #[test]
        fn seal_open_round_trip(plaintext in prop::collection::vec(any::<u8>(), 0..256), aad in prop::collection::vec(any::<u8>(), 0..32)) {
            let k = key();
            let sealed = k.seal(&plaintext, &aad).unwrap();
            let opened = k.open(&sealed, &aad).unwrap();
            prop_assert_eq!(opened.expose().as_slice(), plaintext.as_slice());
            prop_assert_eq!(Sealed::decode(&sealed.encode()).unwrap(), sealed);
        }

        #[test]
        fn arbitrary_key_files_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..100)) {
            let _ = SealingKey::from_file_bytes(&bytes);
        }

        #[test]
        fn arbitrary_sealed_text_never_panics(s in "[v1:0-9a-fA-Z_-]{0,80}") {
            if let Ok(sealed) = Sealed::decode(&s) {
                let _ = key().open(&sealed, b"");
            }
        }
    }
}
