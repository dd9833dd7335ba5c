//! Checkpoints: signed tree heads in the C2SP tlog-checkpoint format (c2sp.org/tlog-checkpoint).
//!
//! The note text is exactly three lines: the log's origin, the tree size in decimal (no leading
//! zeros), the base64 root hash. Warden writes no extension lines and refuses checkpoints that carry
//! some (they would be signed but unauditable, which the spec calls NOT RECOMMENDED). The signature
//! is a C2SP signed note ([`crate::note`]); the key name should be the origin.
//!
//! A [`CheckpointVerifier`] knows the one origin it accepts and the keys it trusts (every node's
//! ledger key, old keys kept while their checkpoints are still in the log).

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;

use crate::hash::Hash;
use crate::note::{self, NoteError, NoteSigner, SignedNote, VerifierKey};

/// Why a checkpoint was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CheckpointError {
    #[error(transparent)]
    Note(#[from] NoteError),
    #[error("the checkpoint is malformed: {0}")]
    Malformed(&'static str),
    #[error("the checkpoint is for log `{found}`, not `{expected}`")]
    WrongOrigin { expected: String, found: String },
    #[error("an origin is non-empty and has no spaces, `+` or control characters")]
    InvalidOrigin,
}

/// A tree head: which log, how many leaves, which root.
#[derive(Clone, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct Checkpoint {
    pub origin: String,
    pub size: u64,
    pub root: Hash,
}

impl Checkpoint {
    pub fn new(origin: &str, size: u64, root: Hash) -> Result<Self, CheckpointError> {
        if !note::is_valid_name(origin) {
            return Err(CheckpointError::InvalidOrigin);
        }
        Ok(Self {
            origin: origin.to_owned(),
            size,
            root,
        })
    }

    /// The note text: `<origin>\n<size>\n<base64 root>\n`.
    pub fn body(&self) -> String {
        format!("{}\n{}\n{}\n", self.origin, self.size, B64.encode(self.root.0))
    }

    /// Parses a note text strictly.
    pub fn parse_body(text: &str) -> Result<Self, CheckpointError> {
        let body = text
            .strip_suffix('\n')
            .ok_or(CheckpointError::Malformed("the text must end with a newline"))?;
        let mut lines = body.split('\n');
        let (Some(origin), Some(size), Some(root)) = (lines.next(), lines.next(), lines.next()) else {
            return Err(CheckpointError::Malformed("fewer than three lines"));
        };
        if lines.next().is_some() {
            return Err(CheckpointError::Malformed(
                "extension lines are not accepted in Warden checkpoints",
            ));
        }
        if origin.is_empty() {
            return Err(CheckpointError::Malformed("empty origin"));
        }
        let size_ok = !size.is_empty()
            && size.bytes().all(|b| b.is_ascii_digit())
            && (size == "0" || !size.starts_with('0'));
        if !size_ok {
            return Err(CheckpointError::Malformed(
                "the tree size is not a decimal number without leading zeros",
            ));
        }
        let size: u64 = size
            .parse()
            .map_err(|_| CheckpointError::Malformed("the tree size is too large"))?;
        let root_bytes = B64
            .decode(root)
            .map_err(|_| CheckpointError::Malformed("the root hash is not base64"))?;
        let root = Hash::from_slice(&root_bytes)
            .ok_or(CheckpointError::Malformed("the root hash is not 32 bytes"))?;
        Ok(Self {
            origin: origin.to_owned(),
            size,
            root,
        })
    }

    /// The signed note of this checkpoint.
    pub fn sign(&self, signers: &[&NoteSigner]) -> Result<String, CheckpointError> {
        if !note::is_valid_name(&self.origin) {
            return Err(CheckpointError::InvalidOrigin);
        }
        Ok(note::sign_note(&self.body(), signers)?)
    }
}

/// Accepts checkpoints of one log signed by trusted keys.
#[derive(Clone, Debug)]
pub struct CheckpointVerifier {
    origin: String,
    keys: Vec<VerifierKey>,
}

impl CheckpointVerifier {
    pub fn new(origin: &str, keys: Vec<VerifierKey>) -> Result<Self, CheckpointError> {
        if !note::is_valid_name(origin) {
            return Err(CheckpointError::InvalidOrigin);
        }
        Ok(Self {
            origin: origin.to_owned(),
            keys,
        })
    }

    pub fn origin(&self) -> &str {
        &self.origin
    }

    pub fn keys(&self) -> &[VerifierKey] {
        &self.keys
    }

    /// Signature first (a trusted key must have signed, no trusted signature may fail), then the
    /// body, then the origin.
    pub fn verify(&self, note: &str) -> Result<Checkpoint, CheckpointError> {
        let parsed = SignedNote::parse(note)?;
        parsed.verify(&self.keys)?;
        let cp = Checkpoint::parse_body(&parsed.text)?;
        if cp.origin != self.origin {
            return Err(CheckpointError::WrongOrigin {
                expected: self.origin.clone(),
                found: cp.origin.escape_debug().to_string(),
            });
        }
        Ok(cp)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hash::leaf_hash;
    use ed25519_dalek::SigningKey;

    fn signer(name: &str, seed: u8) -> NoteSigner {
        NoteSigner::new(name, SigningKey::from_bytes(&[seed; 32])).unwrap()
    }

    #[test]
    fn c2sp_example_body_parses() {
        let text = "example.com/behind-the-sofa\n20852163\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n";
        let cp = Checkpoint::parse_body(text).unwrap();
        assert_eq!(cp.origin, "example.com/behind-the-sofa");
        assert_eq!(cp.size, 20852163);
        assert_eq!(cp.body(), text);
    }

    #[test]
    fn sign_and_verify() {
        let s = signer("warden.test/ledger", 9);
        let cp = Checkpoint::new("warden.test/ledger", 42, leaf_hash(b"r")).unwrap();
        let note = cp.sign(&[&s]).unwrap();
        assert!(note.starts_with("warden.test/ledger\n42\n"));
        let v = CheckpointVerifier::new("warden.test/ledger", vec![s.verifier_key()]).unwrap();
        assert_eq!(v.verify(&note).unwrap(), cp);

        // Another log's checkpoint signed by a trusted key.
        let other = Checkpoint::new("other.test/log", 42, cp.root).unwrap();
        assert!(matches!(
            v.verify(&other.sign(&[&s]).unwrap()),
            Err(CheckpointError::WrongOrigin { .. })
        ));
        // Edited size or root: the signature fails.
        for edited in [note.replace("\n42\n", "\n43\n"), {
            let b64 = B64.encode(cp.root.0);
            let mut other = b64.clone().into_bytes();
            other[0] = if other[0] == b'A' { b'B' } else { b'A' };
            note.replace(&b64, std::str::from_utf8(&other).unwrap())
        }] {
            assert!(matches!(
                v.verify(&edited),
                Err(CheckpointError::Note(NoteError::BadSignature(_)))
            ));
        }
        // Signed by another key only.
        let stranger = signer("warden.test/ledger", 10);
        assert!(matches!(
            v.verify(&cp.sign(&[&stranger]).unwrap()),
            Err(CheckpointError::Note(NoteError::UnknownKey))
        ));
    }

    #[test]
    fn bodies_are_strict() {
        let root = B64.encode([0u8; 32]);
        for bad in [
            format!("o\n01\n{root}\n"),
            format!("o\n-1\n{root}\n"),
            format!("o\n1\n{root}"),
            format!("o\n1\n{root}\next\n"),
            format!("\n1\n{root}\n"),
            "o\n1\nAAAA\n".to_owned(),
            format!("o\n18446744073709551616\n{root}\n"),
            "o\n1\n".to_owned(),
        ] {
            assert!(Checkpoint::parse_body(&bad).is_err(), "{bad:?}");
        }
        assert_eq!(
            Checkpoint::parse_body(&format!("o\n0\n{root}\n")).unwrap().size,
            0
        );
        assert!(Checkpoint::new("has space", 0, Hash::default()).is_err());
    }
}
