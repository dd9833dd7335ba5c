//! Ledger entries and their canonical bytes, the leaves of the Merkle tree.
//!
//! An entry is an envelope (sequence number, time, kind, actor, subject) around a structured `body`.
//! Its leaf data is the RFC 8785 canonical JSON of the envelope (see [`crate::canonical`]):
//!
//! ```text
//! {"actor":"spiffe://acme/agent/bot","at":"2025-06-01T12:00:00.000001Z","body":{…},"kind":"decision","seq":41,"subject":"task-7","v":1}
//! ```
//!
//! * `v` is the envelope version (1). A reader refuses versions and members it does not know, so an
//!   entry never means less to an old verifier than to the writer.
//! * `at` is UTC with exactly six fractional digits and `Z` (microseconds: what PostgreSQL keeps);
//!   times are truncated to the microsecond when an entry is made.
//! * `subject` is omitted when absent; `body` is always an object.
//! * The sequence number is inside the hashed bytes, so moving an entry to another position changes
//!   what the tree commits to, and a verifier names the exact entry that moved.
//!
//! No chain of `prev_hash` fields: the tree already commits to the order, and a hash chain protects
//! nothing a signed checkpoint does not (whoever can rewrite an entry can rewrite the chain after it).
//!
//! Secrets never belong in an entry; values that are sensitive but must stay matchable go through a
//! [`crate::Redactor`] first.

use chrono::{DateTime, Datelike, SubsecRound, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::canonical::{self, CanonicalError};
use crate::hash::{Hash, leaf_hash};

/// The envelope version this crate writes and reads.
pub const ENTRY_VERSION: u64 = 1;

/// The largest canonical entry accepted, in bytes.
pub const MAX_ENTRY_BYTES: usize = 1 << 20;

/// The longest `actor` or `subject`, in bytes.
pub const MAX_NAME_BYTES: usize = 1024;

/// Why an entry cannot be encoded or decoded. Messages name fields, never their values.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EntryError {
    #[error("the entry has no canonical form: {0}")]
    Canonical(#[from] CanonicalError),
    #[error("the entry is {size} bytes, more than the {max} allowed")]
    TooLarge { size: usize, max: usize },
    #[error("the entry is malformed: {0}")]
    Malformed(String),
    #[error("field `{field}` is invalid: {reason}")]
    InvalidField {
        field: &'static str,
        reason: &'static str,
    },
    #[error("the entry is valid but its bytes are not in canonical form")]
    NotCanonical,
}

macro_rules! kinds {
    ($($variant:ident => $name:literal, $doc:literal;)*) => {
        /// What an entry records. Serialized as its snake_case name; names this version does not
        /// know are kept as [`EntryKind::Other`] so that newer logs still verify.
        #[derive(Clone, Debug, PartialEq, Eq, Hash)]
        pub enum EntryKind {
            $(#[doc = $doc] $variant,)*
            /// A kind added after this version (`[a-z][a-z0-9_.]*`, at most 64 bytes).
            Other(String),
        }

        impl EntryKind {
            pub const KNOWN: &'static [&'static str] = &[$($name),*];

            pub fn as_str(&self) -> &str {
                match self {
                    $(EntryKind::$variant => $name,)*
                    EntryKind::Other(s) => s,
                }
            }

            pub fn parse(s: &str) -> Result<Self, EntryError> {
                Ok(match s {
                    $($name => EntryKind::$variant,)*
                    other => {
                        let ok = !other.is_empty()
                            && other.len() <= 64
                            && other.as_bytes()[0].is_ascii_lowercase()
                            && other.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'.');
                        if !ok {
                            return Err(EntryError::InvalidField { field: "kind", reason: "not a snake_case name" });
                        }
                        EntryKind::Other(other.to_owned())
                    }
                })
            }
        }
    };
}

kinds! {
    Decision => "decision", "A policy decision on an action (allow, deny, needs_approval).";
    TokenIssued => "token_issued", "A credential was issued: a task token (task start or delegation), or a human's API token (`op: api_token.create`, with `minted_by`, `personal`, `claims`).";
    TokenRenewed => "token_renewed", "A task credential was renewed.";
    TokenRevoked => "token_revoked", "A credential was revoked before its expiry.";
    TaskEnded => "task_ended", "A task ended (by the agent, an admin, expiry, or a revocation cascade).";
    Enrollment => "enrollment", "An agent enrolled its key with a join token.";
    ApprovalRequested => "approval_requested", "An action needs a human: an approval request was opened.";
    ApprovalVote => "approval_vote", "A vote on an approval request, written before it is counted: `verdict` (approve or deny), the voter (actor), `token_id`, and the tally it makes (`votes`, `required`).";
    ApprovalVoteRefused => "approval_vote_refused", "A vote that was not counted, with the `reason` (separation of duties, not an approver, not the holder's own token, decided or expired, voted already) and, if it lost a race after its `approval_vote` was written, that entry's `vote_entry`.";
    ApprovalDenied => "approval_denied", "An approval request was denied: a counted deny vote ended it. (In logs before `approval_vote` existed: a deny vote, before it was counted.)";
    ApprovalExpired => "approval_expired", "An approval request or grant expired unused.";
    GrantIssued => "grant_issued", "An approval request reached its quorum: a grant for exactly the approved action is live until it expires.";
    ApprovalGrantedLegacy => "approval_granted", "Legacy, no longer written: an approve vote recorded before it was counted, in logs before `approval_vote` existed (a refused one was followed by an entry of this kind with `outcome: failed`). The quorum is `grant_issued`.";
    SecretWithheld => "secret_withheld", "A stored secret was not injected into a stdio server's environment: its variable is not on the server's `allow_env`.";
    ChangeFailed => "change_failed", "A change recorded before it was made failed: `recorded_as` names the entry that recorded it, with `op`, `status` and `error`. (In older logs: an entry of the change's own kind with `outcome: failed`.)";
    ActionResult => "action_result", "What an upstream answered to an allowed action: status, latency and where secrets were found (never the content).";
    RegistryChange => "registry_change", "An agent, upstream, human or tool changed in the registry.";
    PolicyChange => "policy_change", "A policy set was activated, shadowed or retired.";
    KeyChange => "key_change", "A signing key was added, rotated or retired.";
    EmergencyStop => "emergency_stop", "An emergency stop suspended agents or access to an upstream.";
}

impl std::fmt::Display for EntryKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for EntryKind {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for EntryKind {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        EntryKind::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// One record of the ledger, decoded.
#[derive(Clone, Debug, PartialEq)]
pub struct LedgerEntry {
    /// Position in the log, from 0; the leaf index in the tree.
    pub seq: u64,
    /// When it happened (UTC, microseconds).
    pub at: DateTime<Utc>,
    pub kind: EntryKind,
    /// Who acted: an agent's SPIFFE ID, a human's email, `system`.
    pub actor: String,
    /// What it is about, when that is not the actor: a task id, an agent, an upstream, a policy set.
    pub subject: Option<String>,
    /// The structured fields of this kind (see [`DecisionRecord`] for decisions). An object.
    pub body: Value,
}

/// An entry before it has a position: what the server builds; [`crate::prepare_append`] numbers it.
#[derive(Clone, Debug, PartialEq)]
pub struct NewEntry {
    pub at: DateTime<Utc>,
    pub kind: EntryKind,
    pub actor: String,
    pub subject: Option<String>,
    pub body: Value,
}

impl NewEntry {
    pub fn new(at: DateTime<Utc>, kind: EntryKind, actor: impl Into<String>) -> Self {
        Self {
            at: at.trunc_subsecs(6),
            kind,
            actor: actor.into(),
            subject: None,
            body: Value::Object(Map::new()),
        }
    }

    pub fn subject(mut self, subject: impl Into<String>) -> Self {
        self.subject = Some(subject.into());
        self
    }

    pub fn body(mut self, body: Value) -> Self {
        self.body = body;
        self
    }

    pub fn at_seq(self, seq: u64) -> LedgerEntry {
        LedgerEntry {
            seq,
            at: self.at.trunc_subsecs(6),
            kind: self.kind,
            actor: self.actor,
            subject: self.subject,
            body: self.body,
        }
    }
}

fn format_time(at: &DateTime<Utc>) -> Result<String, EntryError> {
    if !(0..=9999).contains(&at.year()) {
        return Err(EntryError::InvalidField {
            field: "at",
            reason: "the year must be between 0 and 9999",
        });
    }
    Ok(at.trunc_subsecs(6).format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string())
}

fn check_name(field: &'static str, value: &str) -> Result<(), EntryError> {
    if value.is_empty() {
        return Err(EntryError::InvalidField {
            field,
            reason: "must not be empty",
        });
    }
    if value.len() > MAX_NAME_BYTES {
        return Err(EntryError::InvalidField {
            field,
            reason: "longer than 1024 bytes",
        });
    }
    Ok(())
}

impl LedgerEntry {
    fn check(&self) -> Result<(), EntryError> {
        check_name("actor", &self.actor)?;
        if let Some(s) = &self.subject {
            check_name("subject", s)?;
        }
        if !self.body.is_object() {
            return Err(EntryError::InvalidField {
                field: "body",
                reason: "must be a JSON object",
            });
        }
        if self.seq > canonical::MAX_SAFE_INTEGER {
            return Err(EntryError::InvalidField {
                field: "seq",
                reason: "larger than 2^53",
            });
        }
        Ok(())
    }

    /// The envelope without `body`.
    fn envelope(&self) -> Result<Map<String, Value>, EntryError> {
        self.check()?;
        let mut m = Map::new();
        m.insert("v".into(), Value::from(ENTRY_VERSION));
        m.insert("seq".into(), Value::from(self.seq));
        m.insert("at".into(), Value::String(format_time(&self.at)?));
        m.insert("kind".into(), Value::String(self.kind.as_str().to_owned()));
        m.insert("actor".into(), Value::String(self.actor.clone()));
        if let Some(s) = &self.subject {
            m.insert("subject".into(), Value::String(s.clone()));
        }
        Ok(m)
    }

    /// The envelope as a JSON value (what gets canonicalized).
    pub fn to_value(&self) -> Result<Value, EntryError> {
        let mut m = self.envelope()?;
        m.insert("body".into(), self.body.clone());
        Ok(Value::Object(m))
    }

    /// The canonical bytes: the leaf data of this entry.
    pub fn canonical_bytes(&self) -> Result<Vec<u8>, EntryError> {
        let bytes = canonical::to_vec(&self.to_value()?)?;
        check_size(&bytes)?;
        Ok(bytes)
    }

    /// Encodes the entry: canonical bytes and leaf hash.
    pub fn encode(mut self) -> Result<EncodedEntry, EntryError> {
        self.at = self.at.trunc_subsecs(6);
        let mut m = self.envelope()?;
        // Lend the body to the envelope instead of copying it.
        m.insert("body".into(), std::mem::take(&mut self.body));
        let value = Value::Object(m);
        let bytes = canonical::to_vec(&value);
        if let Value::Object(mut m) = value
            && let Some(body) = m.remove("body")
        {
            self.body = body;
        }
        let bytes = bytes?;
        check_size(&bytes)?;
        let leaf_hash = leaf_hash(&bytes);
        Ok(EncodedEntry {
            entry: self,
            bytes,
            leaf_hash,
        })
    }

    /// Reads an envelope from a JSON value, strictly: every member known, every type right, the
    /// time in its canonical spelling.
    pub fn from_value(value: &Value) -> Result<Self, EntryError> {
        Self::from_value_owned(value.clone())
    }

    fn from_value_owned(value: Value) -> Result<Self, EntryError> {
        let Value::Object(mut m) = value else {
            return Err(EntryError::Malformed("not a JSON object".into()));
        };
        for key in m.keys() {
            if !matches!(
                key.as_str(),
                "v" | "seq" | "at" | "kind" | "actor" | "subject" | "body"
            ) {
                return Err(EntryError::Malformed(format!(
                    "unknown member `{}`",
                    key.escape_debug()
                )));
            }
        }
        let mut take = |k: &'static str| {
            m.remove(k)
                .ok_or_else(|| EntryError::Malformed(format!("missing member `{k}`")))
        };
        match take("v")?.as_u64() {
            Some(ENTRY_VERSION) => {}
            _ => {
                return Err(EntryError::InvalidField {
                    field: "v",
                    reason: "unsupported envelope version",
                });
            }
        }
        let seq = take("seq")?.as_u64().ok_or(EntryError::InvalidField {
            field: "seq",
            reason: "not an unsigned integer",
        })?;
        let at_text = take("at")?;
        let at = at_text
            .as_str()
            .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
            .ok_or(EntryError::InvalidField {
                field: "at",
                reason: "not an RFC 3339 time",
            })?
            .with_timezone(&Utc);
        if at_text.as_str() != Some(format_time(&at)?.as_str()) {
            return Err(EntryError::InvalidField {
                field: "at",
                reason: "not in the form YYYY-MM-DDTHH:MM:SS.ffffffZ",
            });
        }
        let kind = EntryKind::parse(take("kind")?.as_str().ok_or(EntryError::InvalidField {
            field: "kind",
            reason: "not a string",
        })?)?;
        let Value::String(actor) = take("actor")? else {
            return Err(EntryError::InvalidField {
                field: "actor",
                reason: "not a string",
            });
        };
        let body = take("body")?;
        let subject = match m.remove("subject") {
            None => None,
            Some(Value::String(s)) => Some(s),
            Some(_) => {
                return Err(EntryError::InvalidField {
                    field: "subject",
                    reason: "not a string",
                });
            }
        };
        let entry = LedgerEntry {
            seq,
            at,
            kind,
            actor,
            subject,
            body,
        };
        entry.check()?;
        Ok(entry)
    }
}

fn check_size(bytes: &[u8]) -> Result<(), EntryError> {
    if bytes.len() > MAX_ENTRY_BYTES {
        return Err(EntryError::TooLarge {
            size: bytes.len(),
            max: MAX_ENTRY_BYTES,
        });
    }
    Ok(())
}

/// A new entry encoded but for its sequence number: the canonical bytes before and after the
/// number. The envelope's members sort as `actor, at, body, kind, seq, subject, v`, so the number
/// sits between two fixed byte strings, and the expensive part of encoding (the body) can be done by
/// whoever makes the entry, in parallel, before the commit that numbers it.
#[derive(Clone, Debug, PartialEq)]
pub struct PreEncoded {
    entry: LedgerEntry,
    prefix: Vec<u8>,
    suffix: Vec<u8>,
}

/// Longest decimal sequence number (2^53 has 16 digits).
const MAX_SEQ_DIGITS: usize = 16;

impl NewEntry {
    /// Encodes everything but the sequence number (see [`PreEncoded`]). Fails as
    /// [`LedgerEntry::encode`] would.
    pub fn pre_encode(self) -> Result<PreEncoded, EntryError> {
        let entry = self.at_seq(0);
        entry.check()?;
        let mut prefix = Vec::with_capacity(256);
        prefix.extend_from_slice(b"{\"actor\":");
        canonical::write_string(&mut prefix, &entry.actor);
        prefix.extend_from_slice(b",\"at\":");
        canonical::write_string(&mut prefix, &format_time(&entry.at)?);
        prefix.extend_from_slice(b",\"body\":");
        // The body sits one level inside the envelope, as in a whole-value encoding.
        canonical::write_value(&mut prefix, &entry.body, 1)?;
        prefix.extend_from_slice(b",\"kind\":");
        canonical::write_string(&mut prefix, entry.kind.as_str());
        prefix.extend_from_slice(b",\"seq\":");
        let mut suffix = Vec::with_capacity(48);
        if let Some(s) = &entry.subject {
            suffix.extend_from_slice(b",\"subject\":");
            canonical::write_string(&mut suffix, s);
        }
        suffix.extend_from_slice(format!(",\"v\":{ENTRY_VERSION}}}").as_bytes());
        if prefix.len() + MAX_SEQ_DIGITS + suffix.len() > MAX_ENTRY_BYTES {
            return Err(EntryError::TooLarge {
                size: prefix.len() + suffix.len(),
                max: MAX_ENTRY_BYTES,
            });
        }
        Ok(PreEncoded {
            entry,
            prefix,
            suffix,
        })
    }
}

impl PreEncoded {
    /// The entry at `seq` (at most 2^53 − 1), with its canonical bytes and leaf hash.
    pub fn at_seq(self, seq: u64) -> Result<EncodedEntry, EntryError> {
        if seq > canonical::MAX_SAFE_INTEGER {
            return Err(EntryError::InvalidField {
                field: "seq",
                reason: "larger than 2^53",
            });
        }
        let mut bytes = self.prefix;
        bytes.extend_from_slice(seq.to_string().as_bytes());
        bytes.extend_from_slice(&self.suffix);
        let leaf_hash = leaf_hash(&bytes);
        let mut entry = self.entry;
        entry.seq = seq;
        Ok(EncodedEntry {
            entry,
            bytes,
            leaf_hash,
        })
    }

    pub fn entry(&self) -> &LedgerEntry {
        &self.entry
    }
}

/// An entry with its canonical bytes and leaf hash, which always agree (only [`LedgerEntry::encode`],
/// [`PreEncoded::at_seq`] and [`EncodedEntry::decode`] make one).
#[derive(Clone, Debug, PartialEq)]
pub struct EncodedEntry {
    entry: LedgerEntry,
    bytes: Vec<u8>,
    leaf_hash: Hash,
}

impl EncodedEntry {
    /// Decodes canonical bytes: size limit, JSON, strict envelope, and the bytes must be exactly the
    /// canonical encoding of what they decode to.
    pub fn decode(bytes: Vec<u8>) -> Result<Self, EntryError> {
        if bytes.len() > MAX_ENTRY_BYTES {
            return Err(EntryError::TooLarge {
                size: bytes.len(),
                max: MAX_ENTRY_BYTES,
            });
        }
        let value: Value = serde_json::from_slice(&bytes)
            .map_err(|e| EntryError::Malformed(format!("not JSON ({})", e.classify_name())))?;
        // The bytes are the canonical form of what they parse to (whitespace, member order,
        // escapes, number spelling), and what they parse to is a valid envelope whose own
        // re-encoding is that same value (from_value_owned checks the one member whose value has
        // several spellings, the time).
        if canonical::to_vec(&value)? != bytes {
            return Err(EntryError::NotCanonical);
        }
        let entry = LedgerEntry::from_value_owned(value)?;
        let leaf_hash = leaf_hash(&bytes);
        Ok(Self {
            entry,
            bytes,
            leaf_hash,
        })
    }

    pub fn entry(&self) -> &LedgerEntry {
        &self.entry
    }

    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    pub fn leaf_hash(&self) -> Hash {
        self.leaf_hash
    }

    pub fn seq(&self) -> u64 {
        self.entry.seq
    }

    pub fn into_parts(self) -> (LedgerEntry, Vec<u8>, Hash) {
        (self.entry, self.bytes, self.leaf_hash)
    }
}

trait ClassifyName {
    fn classify_name(&self) -> &'static str;
}

impl ClassifyName for serde_json::Error {
    fn classify_name(&self) -> &'static str {
        match self.classify() {
            serde_json::error::Category::Io => "io",
            serde_json::error::Category::Syntax => "syntax error",
            serde_json::error::Category::Data => "wrong type",
            serde_json::error::Category::Eof => "truncated",
        }
    }
}

/// The sequence number inside canonical entry bytes, read without building the entry (the whole-log
/// verifier's per-entry check). Also checks the bytes are JSON and the envelope version.
pub fn embedded_seq(bytes: &[u8]) -> Result<u64, EntryError> {
    #[derive(Deserialize)]
    struct SeqOnly {
        v: u64,
        seq: u64,
    }
    let s: SeqOnly = serde_json::from_slice(bytes)
        .map_err(|e| EntryError::Malformed(format!("not an entry ({})", e.classify_name())))?;
    if s.v != ENTRY_VERSION {
        return Err(EntryError::InvalidField {
            field: "v",
            reason: "unsupported envelope version",
        });
    }
    Ok(s.seq)
}

/// The outcome of a decision, as recorded.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Allow,
    Deny,
    NeedsApproval,
}

/// The body of a `decision` entry: the inputs that matter, the decision, its reasons, the policy
/// version and the latency. Field names here are what [`crate::ocsf`] maps; extra members are kept.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DecisionRecord {
    pub outcome: Outcome,
    /// Ids of the policies or rules that decided.
    pub reasons: Vec<String>,
    /// Content hash (or built-in name) of the policy set that decided.
    pub policy_version: String,
    /// `read`, `write`, `destructive`, `admin`, `task.start`, …
    pub action: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upstream: Option<String>,
    /// Tool, route or dataset acted on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task: Option<String>,
    /// The request's id, to correlate with server logs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    /// Arguments that mattered, with sensitive values already redacted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arguments: Option<Value>,
    /// Evaluation errors (a decision with errors never allows).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<String>,
    /// Time spent deciding, in microseconds.
    pub latency_us: u64,
}

impl DecisionRecord {
    pub fn to_body(&self) -> Value {
        // A struct of strings, integers and JSON values always serializes.
        serde_json::to_value(self).unwrap_or(Value::Null)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use serde_json::json;

    fn sample(seq: u64) -> LedgerEntry {
        NewEntry::new(
            Utc.with_ymd_and_hms(2025, 6, 1, 12, 0, 0).unwrap() + chrono::Duration::nanoseconds(1_234_567),
            EntryKind::Decision,
            "spiffe://acme.test/agent/bot",
        )
        .subject("task-7")
        .body(json!({"outcome": "allow", "reasons": ["p1"], "latency_us": 12}))
        .at_seq(seq)
    }

    #[test]
    fn envelope_is_canonical_and_stable() {
        let e = sample(41).encode().unwrap();
        assert_eq!(
            std::str::from_utf8(e.bytes()).unwrap(),
            r#"{"actor":"spiffe://acme.test/agent/bot","at":"2025-06-01T12:00:00.001234Z","body":{"latency_us":12,"outcome":"allow","reasons":["p1"]},"kind":"decision","seq":41,"subject":"task-7","v":1}"#
        );
        assert_eq!(e.leaf_hash(), leaf_hash(e.bytes()));
        let back = EncodedEntry::decode(e.bytes().to_vec()).unwrap();
        assert_eq!(back, e);
        assert_eq!(embedded_seq(e.bytes()).unwrap(), 41);
    }

    #[test]
    fn decode_is_strict() {
        let e = sample(1).encode().unwrap();
        let text = std::str::from_utf8(e.bytes()).unwrap();
        // Not canonical: whitespace.
        assert_eq!(
            EncodedEntry::decode(text.replacen(",", ", ", 1).into_bytes()),
            Err(EntryError::NotCanonical)
        );
        // The same instant spelled differently.
        for at in [
            "2025-06-01T12:00:00.001234+00:00",
            "2025-06-01T12:00:00.001234000Z",
            "2025-06-01t12:00:00.001234z",
        ] {
            let bad = text.replace("2025-06-01T12:00:00.001234Z", at);
            assert!(matches!(
                EncodedEntry::decode(bad.into_bytes()),
                Err(EntryError::InvalidField { field: "at", .. })
            ));
        }
        assert!(EncodedEntry::decode(text.replace("\"v\":1", "\"v\":1.0").into_bytes()).is_err());
        let reordered =
            r#"{"v":1,"seq":1,"at":"2025-06-01T12:00:00.001234Z","kind":"decision","actor":"a","body":{}}"#;
        assert_eq!(
            EncodedEntry::decode(reordered.into()),
            Err(EntryError::NotCanonical)
        );
        assert!(matches!(
            EncodedEntry::decode(text.replace("\"v\":1", "\"v\":2").into_bytes()),
            Err(EntryError::InvalidField { field: "v", .. })
        ));
        assert!(matches!(
            EncodedEntry::decode(text.replace("\"kind\"", "\"extra\":1,\"kind\"").into_bytes()),
            Err(EntryError::Malformed(_))
        ));
        assert!(matches!(
            EncodedEntry::decode(b"{".to_vec()),
            Err(EntryError::Malformed(_))
        ));
        assert!(matches!(
            EncodedEntry::decode(vec![b' '; MAX_ENTRY_BYTES + 1]),
            Err(EntryError::TooLarge { .. })
        ));
    }

    #[test]
    fn invalid_entries_are_refused() {
        let mut e = sample(0);
        e.actor.clear();
        assert!(matches!(
            e.encode(),
            Err(EntryError::InvalidField { field: "actor", .. })
        ));
        let mut e = sample(0);
        e.body = json!([1]);
        assert!(matches!(
            e.encode(),
            Err(EntryError::InvalidField { field: "body", .. })
        ));
        let mut e = sample(0);
        e.body = json!({"n": u64::MAX});
        assert!(matches!(e.encode(), Err(EntryError::Canonical(_))));
        let mut e = sample(0);
        e.seq = (1 << 53) + 1;
        assert!(e.encode().is_err());
        assert!(EntryKind::parse("Bad Kind").is_err());
        assert_eq!(
            EntryKind::parse("grant_used").unwrap(),
            EntryKind::Other("grant_used".into())
        );
        for k in EntryKind::KNOWN {
            assert_eq!(EntryKind::parse(k).unwrap().as_str(), *k);
        }
    }

    fn arb_json() -> impl proptest::strategy::Strategy<Value = Value> {
        use proptest::prelude::*;
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            (-(1i64 << 53)..=(1i64 << 53)).prop_map(Value::from),
            any::<f64>()
                .prop_filter("finite", |f| f.is_finite())
                .prop_map(|f| json!(f)),
            (-1e6f64..1e6).prop_map(|f| json!(f)),
            any::<String>().prop_map(Value::String),
        ];
        leaf.prop_recursive(4, 48, 6, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
                proptest::collection::btree_map(any::<String>(), inner, 0..5)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest::proptest! {
        /// Any body (unicode keys and strings, control characters, integers up to 2^53, any finite
        /// double): the canonical bytes decode, and decoding then encoding gives the same bytes.
        #[test]
        fn canonical_bytes_round_trip(body in arb_json(), seq in 0u64..=(1 << 53)) {
            let entry = NewEntry::new(Utc::now(), EntryKind::Decision, "a")
                .body(json!({ "x": body }))
                .at_seq(seq);
            let encoded = entry.encode().unwrap();
            let decoded = EncodedEntry::decode(encoded.bytes().to_vec()).unwrap();
            proptest::prop_assert_eq!(decoded.bytes(), encoded.bytes());
            let again = decoded.entry().clone().encode().unwrap();
            proptest::prop_assert_eq!(again.bytes(), encoded.bytes());
            proptest::prop_assert_eq!(embedded_seq(encoded.bytes()).unwrap(), seq);
        }
    }

    #[test]
    fn unknown_kinds_round_trip() {
        let mut e = sample(3);
        e.kind = EntryKind::Other("grant_used".into());
        let enc = e.clone().encode().unwrap();
        assert_eq!(EncodedEntry::decode(enc.bytes().to_vec()).unwrap().entry(), &e);
    }

    #[test]
    fn decision_record_body() {
        let r = DecisionRecord {
            outcome: Outcome::NeedsApproval,
            reasons: vec!["approve-writes".into()],
            policy_version: "sha256:abc".into(),
            action: "write".into(),
            upstream: Some("crm".into()),
            resource: Some("update_contact".into()),
            task: Some("t1".into()),
            request_id: None,
            arguments: Some(json!({"email": "hmac-sha256:00"})),
            errors: vec![],
            latency_us: 42,
        };
        let body = r.to_body();
        assert_eq!(body["outcome"], "needs_approval");
        assert!(body.get("request_id").is_none());
        assert_eq!(serde_json::from_value::<DecisionRecord>(body).unwrap(), r);
    }
}
