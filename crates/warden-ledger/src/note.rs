//! C2SP signed notes (c2sp.org/signed-note) with Ed25519, and the Go `sumdb/note` key strings.
//!
//! A note is a text ending in a newline, a blank line, then signature lines
//! `— <key name> <base64(key ID ‖ signature)>`. The key ID is the first four bytes (big-endian) of
//! `SHA-256(key name ‖ 0x0A ‖ 0x01 ‖ Ed25519 public key)`; the signature covers the text including its
//! final newline. Verification follows the spec and Go's `note.Open`:
//!
//! * the note must be valid UTF-8 with no control characters but newline, split at the *last* blank
//!   line, every signature line well formed (at most [`MAX_SIGNATURES`], [`MAX_NOTE_BYTES`] in all);
//! * signatures whose (name, key ID) is not a trusted key are ignored (witness cosignatures, rotated
//!   keys); a trusted key's signature that fails rejects the whole note;
//! * at least one trusted key must have signed, or the note is refused ([`NoteError::UnknownKey`]).
//!
//! Keys travel as Go-compatible strings: a verifier key is `<name>+<key ID hex>+<base64(0x01 ‖ public
//! key)>` (what `warden keys` prints and an auditor pins); a signer key is
//! `PRIVATE+KEY+<name>+<key ID hex>+<base64(0x01 ‖ seed)>`. The tests reproduce the published Go note
//! vector byte for byte.

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use ed25519_dalek::{Signature, Signer as _, SigningKey, VerifyingKey};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

/// Signature type byte of Ed25519 in signed notes.
pub const ALG_ED25519: u8 = 0x01;
/// The largest note accepted, in bytes.
pub const MAX_NOTE_BYTES: usize = 64 * 1024;
/// The most signature lines accepted in one note (the spec requires at least 16; Go allows 100).
pub const MAX_SIGNATURES: usize = 100;

const SIG_PREFIX: &str = "\u{2014} ";

/// Why a key or note was refused. Messages name keys (public) and never contain key material.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NoteError {
    #[error("the note is malformed: {0}")]
    Malformed(&'static str),
    #[error("the note is larger than {MAX_NOTE_BYTES} bytes")]
    TooLarge,
    #[error("the key is invalid: {0}")]
    InvalidKey(&'static str),
    #[error("the name is invalid: names are non-empty and contain no spaces or `+`")]
    InvalidName,
    #[error("the note is not signed by any trusted key")]
    UnknownKey,
    #[error("the signature of trusted key `{0}` does not verify")]
    BadSignature(String),
}

/// Is `name` a valid key name (non-empty, no Unicode space, no `+`, no control character)?
pub fn is_valid_name(name: &str) -> bool {
    !name.is_empty()
        && !name
            .chars()
            .any(|c| c.is_whitespace() || c == '+' || c.is_control())
}

/// The signed-note key ID of an Ed25519 key.
pub fn key_id(name: &str, public_key: &[u8; 32]) -> u32 {
    let mut h = Sha256::new();
    h.update(name.as_bytes());
    h.update([b'\n', ALG_ED25519]);
    h.update(public_key);
    let d = h.finalize();
    u32::from_be_bytes([d[0], d[1], d[2], d[3]])
}

/// A trusted public key: name, key ID, Ed25519 key.
#[derive(Clone, PartialEq, Eq)]
pub struct VerifierKey {
    name: String,
    id: u32,
    key: VerifyingKey,
}

impl fmt::Debug for VerifierKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "VerifierKey({self})")
    }
}

impl fmt::Display for VerifierKey {
    /// The `<name>+<hex id>+<base64>` form.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut data = [0u8; 33];
        data[0] = ALG_ED25519;
        data[1..].copy_from_slice(self.key.as_bytes());
        write!(f, "{}+{:08x}+{}", self.name, self.id, B64.encode(data))
    }
}

fn check_public_key(bytes: &[u8]) -> Result<VerifyingKey, NoteError> {
    let arr: [u8; 32] = bytes
        .try_into()
        .map_err(|_| NoteError::InvalidKey("an Ed25519 public key is 32 bytes"))?;
    let key = VerifyingKey::from_bytes(&arr).map_err(|_| NoteError::InvalidKey("not an Ed25519 point"))?;
    if key.is_weak() {
        return Err(NoteError::InvalidKey("small-order public key"));
    }
    Ok(key)
}

impl VerifierKey {
    pub fn new(name: &str, key: VerifyingKey) -> Result<Self, NoteError> {
        if !is_valid_name(name) {
            return Err(NoteError::InvalidName);
        }
        let key = check_public_key(key.as_bytes())?;
        Ok(Self {
            name: name.to_owned(),
            id: key_id(name, key.as_bytes()),
            key,
        })
    }

    /// Parses `<name>+<8 lowercase hex>+<base64(0x01 ‖ 32-byte key)>`; the ID must match.
    pub fn parse(s: &str) -> Result<Self, NoteError> {
        let (name, rest) = s
            .split_once('+')
            .ok_or(NoteError::InvalidKey("expected <name>+<id>+<key>"))?;
        let (id_hex, data) = rest
            .split_once('+')
            .ok_or(NoteError::InvalidKey("expected <name>+<id>+<key>"))?;
        if !is_valid_name(name) {
            return Err(NoteError::InvalidName);
        }
        let id = parse_id(id_hex)?;
        let data = B64
            .decode(data)
            .map_err(|_| NoteError::InvalidKey("the key is not base64"))?;
        let (&alg, public) = data
            .split_first()
            .ok_or(NoteError::InvalidKey("the key is empty"))?;
        if alg != ALG_ED25519 {
            return Err(NoteError::InvalidKey("not an Ed25519 key (type 0x01)"));
        }
        let key = check_public_key(public)?;
        if key_id(name, key.as_bytes()) != id {
            return Err(NoteError::InvalidKey("the key ID does not match the key"));
        }
        Ok(Self {
            name: name.to_owned(),
            id,
            key,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn id(&self) -> u32 {
        self.id
    }

    pub fn public_key(&self) -> &VerifyingKey {
        &self.key
    }
}

impl serde::Serialize for VerifierKey {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for VerifierKey {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        VerifierKey::parse(&s).map_err(serde::de::Error::custom)
    }
}

fn parse_id(hex8: &str) -> Result<u32, NoteError> {
    if hex8.len() != 8
        || !hex8
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        return Err(NoteError::InvalidKey("the key ID is not 8 lowercase hex digits"));
    }
    u32::from_str_radix(hex8, 16).map_err(|_| NoteError::InvalidKey("the key ID is not hex"))
}

/// A signing key with its note name. `Debug` shows the name and ID only.
#[derive(Clone)]
pub struct NoteSigner {
    name: String,
    id: u32,
    key: SigningKey,
}

impl fmt::Debug for NoteSigner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "NoteSigner({}+{:08x})", self.name, self.id)
    }
}

impl NoteSigner {
    pub fn new(name: &str, key: SigningKey) -> Result<Self, NoteError> {
        if !is_valid_name(name) {
            return Err(NoteError::InvalidName);
        }
        Ok(Self {
            name: name.to_owned(),
            id: key_id(name, key.verifying_key().as_bytes()),
            key,
        })
    }

    /// Parses Go's `PRIVATE+KEY+<name>+<hex id>+<base64(0x01 ‖ 32-byte seed)>`.
    pub fn parse(s: &str) -> Result<Self, NoteError> {
        let rest = s
            .strip_prefix("PRIVATE+KEY+")
            .ok_or(NoteError::InvalidKey("expected PRIVATE+KEY+<name>+<id>+<key>"))?;
        let (name, rest) = rest
            .split_once('+')
            .ok_or(NoteError::InvalidKey("expected PRIVATE+KEY+<name>+<id>+<key>"))?;
        let (id_hex, data) = rest
            .split_once('+')
            .ok_or(NoteError::InvalidKey("expected PRIVATE+KEY+<name>+<id>+<key>"))?;
        let id = parse_id(id_hex)?;
        let data = Zeroizing::new(
            B64.decode(data)
                .map_err(|_| NoteError::InvalidKey("the key is not base64"))?,
        );
        if data.len() != 33 || data[0] != ALG_ED25519 {
            return Err(NoteError::InvalidKey("not an Ed25519 seed (type 0x01, 32 bytes)"));
        }
        let mut seed = Zeroizing::new([0u8; 32]);
        seed.copy_from_slice(&data[1..]);
        let signer = Self::new(name, SigningKey::from_bytes(&seed))?;
        if signer.id != id {
            return Err(NoteError::InvalidKey("the key ID does not match the key"));
        }
        Ok(signer)
    }

    /// The key in Go's private-key form, for a key file ([`NoteSigner::parse`] reads it back). The
    /// buffer is wiped when dropped.
    pub fn to_private_string(&self) -> Zeroizing<String> {
        let mut data = Zeroizing::new(Vec::with_capacity(33));
        data.push(ALG_ED25519);
        data.extend_from_slice(self.key.as_bytes());
        Zeroizing::new(format!(
            "PRIVATE+KEY+{}+{:08x}+{}",
            self.name,
            self.id,
            B64.encode(data.as_slice())
        ))
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn id(&self) -> u32 {
        self.id
    }

    pub fn verifier_key(&self) -> VerifierKey {
        VerifierKey {
            name: self.name.clone(),
            id: self.id,
            key: self.key.verifying_key(),
        }
    }

    /// The signature line for `text` (with its trailing newline).
    fn signature_line(&self, text: &str) -> String {
        let sig = self.key.sign(text.as_bytes());
        let mut data = Vec::with_capacity(68);
        data.extend_from_slice(&self.id.to_be_bytes());
        data.extend_from_slice(&sig.to_bytes());
        format!("{SIG_PREFIX}{} {}\n", self.name, B64.encode(data))
    }
}

/// One signature line, parsed but not verified.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NoteSignature {
    pub name: String,
    pub key_id: u32,
    pub signature: Vec<u8>,
}

/// A note split into its text and signature lines (syntax checked, signatures not yet verified).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SignedNote {
    pub text: String,
    pub signatures: Vec<NoteSignature>,
}

fn check_text(text: &str) -> Result<(), NoteError> {
    if text.len() > MAX_NOTE_BYTES {
        return Err(NoteError::TooLarge);
    }
    if !text.ends_with('\n') {
        return Err(NoteError::Malformed("the text must end with a newline"));
    }
    if text.chars().any(|c| c < ' ' && c != '\n') {
        return Err(NoteError::Malformed("control character in the note"));
    }
    Ok(())
}

impl SignedNote {
    /// Splits and checks the syntax of a note.
    pub fn parse(note: &str) -> Result<Self, NoteError> {
        if note.len() > MAX_NOTE_BYTES {
            return Err(NoteError::TooLarge);
        }
        if note.chars().any(|c| c < ' ' && c != '\n') {
            return Err(NoteError::Malformed("control character in the note"));
        }
        let split = note
            .rfind("\n\n")
            .ok_or(NoteError::Malformed("no blank line before the signatures"))?;
        let text = &note[..=split];
        let sigs = &note[split + 2..];
        if sigs.is_empty() || !sigs.ends_with('\n') {
            return Err(NoteError::Malformed("no signature lines"));
        }
        let mut signatures = Vec::new();
        for line in sigs[..sigs.len() - 1].split('\n') {
            if signatures.len() >= MAX_SIGNATURES {
                return Err(NoteError::Malformed("too many signatures"));
            }
            let rest = line.strip_prefix(SIG_PREFIX).ok_or(NoteError::Malformed(
                "a signature line must start with an em dash and a space",
            ))?;
            let (name, b64) = rest
                .split_once(' ')
                .ok_or(NoteError::Malformed("a signature line is `— <name> <signature>`"))?;
            if !is_valid_name(name) || b64.is_empty() {
                return Err(NoteError::Malformed("invalid signature line"));
            }
            let data = B64
                .decode(b64)
                .map_err(|_| NoteError::Malformed("the signature is not base64"))?;
            if data.len() < 5 {
                return Err(NoteError::Malformed("the signature is too short"));
            }
            signatures.push(NoteSignature {
                name: name.to_owned(),
                key_id: u32::from_be_bytes([data[0], data[1], data[2], data[3]]),
                signature: data[4..].to_vec(),
            });
        }
        Ok(Self {
            text: text.to_owned(),
            signatures,
        })
    }

    /// Verifies against the trusted keys; returns the keys whose signatures verified.
    pub fn verify<'k>(&self, trusted: &'k [VerifierKey]) -> Result<Vec<&'k VerifierKey>, NoteError> {
        let mut verified: Vec<&VerifierKey> = Vec::new();
        for sig in &self.signatures {
            let Some(key) = trusted.iter().find(|k| k.name == sig.name && k.id == sig.key_id) else {
                continue; // unknown signer: ignored, per the spec
            };
            if verified.iter().any(|v| std::ptr::eq(*v, key)) {
                continue; // the same key twice: the first decided
            }
            let ok = <[u8; 64]>::try_from(sig.signature.as_slice())
                .ok()
                .map(|b| Signature::from_bytes(&b))
                .is_some_and(|s| key.key.verify_strict(self.text.as_bytes(), &s).is_ok());
            if !ok {
                return Err(NoteError::BadSignature(key.name.clone()));
            }
            verified.push(key);
        }
        if verified.is_empty() {
            return Err(NoteError::UnknownKey);
        }
        Ok(verified)
    }
}

impl fmt::Display for SignedNote {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)?;
        f.write_str("\n")?;
        for s in &self.signatures {
            let mut data = Vec::with_capacity(4 + s.signature.len());
            data.extend_from_slice(&s.key_id.to_be_bytes());
            data.extend_from_slice(&s.signature);
            writeln!(f, "{SIG_PREFIX}{} {}", s.name, B64.encode(data))?;
        }
        Ok(())
    }
}

/// Signs `text` (which must end in a newline) with every signer: the complete note.
pub fn sign_note(text: &str, signers: &[&NoteSigner]) -> Result<String, NoteError> {
    check_text(text)?;
    if signers.is_empty() {
        return Err(NoteError::Malformed("a note needs at least one signature"));
    }
    let mut out = String::with_capacity(text.len() + 1 + 120 * signers.len());
    out.push_str(text);
    out.push('\n');
    for s in signers {
        out.push_str(&s.signature_line(text));
    }
    if out.len() > MAX_NOTE_BYTES {
        return Err(NoteError::TooLarge);
    }
    Ok(out)
}

/// Parses and verifies a note; the text, if a trusted key signed it.
pub fn open_note(note: &str, trusted: &[VerifierKey]) -> Result<String, NoteError> {
    let parsed = SignedNote::parse(note)?;
    parsed.verify(trusted)?;
    Ok(parsed.text)
}

#[cfg(test)]
mod tests {
    use super::*;

    // golang.org/x/mod/sumdb/note: the example of the package documentation and its tests.
    #[test]
    fn private_string_round_trips() {
        let signer = NoteSigner::parse(GO_SKEY).unwrap();
        assert_eq!(signer.to_private_string().as_str(), GO_SKEY);
    }

    const GO_SKEY: &str = "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz";
    const GO_VKEY: &str = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW";
    const GO_TEXT: &str = "If you think cryptography is the answer to your problem,\nthen you don't know what your problem is.\n";
    const GO_NOTE: &str = "If you think cryptography is the answer to your problem,\nthen you don't know what your problem is.\n\n\u{2014} PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=\n";

    #[test]
    fn go_note_vector_signs_and_opens() {
        let signer = NoteSigner::parse(GO_SKEY).unwrap();
        let vkey = VerifierKey::parse(GO_VKEY).unwrap();
        assert_eq!(signer.verifier_key(), vkey);
        assert_eq!(vkey.to_string(), GO_VKEY);
        assert_eq!(sign_note(GO_TEXT, &[&signer]).unwrap(), GO_NOTE);
        assert_eq!(open_note(GO_NOTE, std::slice::from_ref(&vkey)).unwrap(), GO_TEXT);
        assert_eq!(SignedNote::parse(GO_NOTE).unwrap().to_string(), GO_NOTE);
        // Another text under the same signature.
        let forged = GO_NOTE.replace("cryptography", "cryptographY");
        assert_eq!(
            open_note(&forged, &[vkey]),
            Err(NoteError::BadSignature("PeterNeumann".into()))
        );
    }

    #[test]
    fn verifier_key_manglings_are_refused() {
        // As Go's TestNewVerifier: every substring and every byte+1 of the key is refused.
        let b = GO_VKEY.as_bytes();
        for i in 0..=b.len() {
            for j in i + 1..=b.len() {
                if i == 0 && j == b.len() {
                    continue;
                }
                if let Ok(s) = std::str::from_utf8(&b[i..j]) {
                    assert!(VerifierKey::parse(s).is_err(), "{s}");
                }
            }
        }
        for i in 0..b.len() {
            let mut m = b.to_vec();
            m[i] = m[i].wrapping_add(1);
            if let Ok(s) = std::str::from_utf8(&m) {
                assert!(VerifierKey::parse(s).is_err(), "{s}");
            }
        }
        assert!(VerifierKey::parse(&GO_VKEY.replace("c74f20a3", "C74F20A3")).is_err());
    }

    #[test]
    fn unknown_keys_are_ignored_but_one_trusted_is_required() {
        let a = NoteSigner::new("log.example/a", SigningKey::from_bytes(&[1u8; 32])).unwrap();
        let b = NoteSigner::new("witness.example", SigningKey::from_bytes(&[2u8; 32])).unwrap();
        let text = "hello\n";
        let note = sign_note(text, &[&b, &a]).unwrap();
        assert_eq!(open_note(&note, &[a.verifier_key()]).unwrap(), text);
        assert_eq!(open_note(&note, &[]), Err(NoteError::UnknownKey));
        // Same name, another key: unknown, not a bad signature.
        let imposter = NoteSigner::new("log.example/a", SigningKey::from_bytes(&[3u8; 32])).unwrap();
        let note2 = sign_note(text, &[&imposter]).unwrap();
        assert_eq!(open_note(&note2, &[a.verifier_key()]), Err(NoteError::UnknownKey));
        // A trusted key whose signature fails rejects the note even if another verifies.
        let mut parsed = SignedNote::parse(&note).unwrap();
        parsed.signatures[0].signature[0] ^= 1;
        let tampered = parsed.to_string();
        assert_eq!(
            open_note(&tampered, &[a.verifier_key(), b.verifier_key()]),
            Err(NoteError::BadSignature("witness.example".into()))
        );
    }

    #[test]
    fn malformed_notes_are_refused() {
        let a = NoteSigner::new("k", SigningKey::from_bytes(&[1u8; 32])).unwrap();
        let trusted = [a.verifier_key()];
        let good = sign_note("x\n", &[&a]).unwrap();
        let cases = [
            good.replace("\u{2014} ", "-- "),
            good.replace("\n\n", "\n"),
            good.trim_end().to_owned(),
            good.replace("x\n", "x\r\n"),
            good.replace(" k ", " k  "),
            format!("{good}\u{2014} k !!!\n"),
            format!("{good}\u{2014} k AAAA\n"),
            good.replace("\u{2014} k ", "\u{2014} k+1 "),
        ];
        for bad in cases {
            assert!(open_note(&bad, &trusted).is_err(), "{bad:?}");
        }
        let many: String = std::iter::repeat_n(
            format!("\u{2014} other {}\n", B64.encode([0u8; 68])),
            MAX_SIGNATURES + 1,
        )
        .collect();
        assert_eq!(
            SignedNote::parse(&format!("x\n\n{many}")),
            Err(NoteError::Malformed("too many signatures"))
        );
        assert!(sign_note("no newline", &[&a]).is_err());
        assert!(sign_note("x\n", &[]).is_err());
        assert!(NoteSigner::new("bad name", SigningKey::from_bytes(&[1u8; 32])).is_err());
        assert!(NoteSigner::new("bad+name", SigningKey::from_bytes(&[1u8; 32])).is_err());
    }

    #[test]
    fn signer_debug_hides_the_key() {
        let a = NoteSigner::new("k", SigningKey::from_bytes(&[0x5au8; 32])).unwrap();
        let dbg = format!("{a:?}");
        assert!(dbg.starts_with("NoteSigner(k+"));
        assert_eq!(dbg.len(), "NoteSigner(k+00000000)".len());
    }
}
