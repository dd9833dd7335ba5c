//! Evidence bundles: one self-contained file an auditor verifies offline, with no server.
//!
//! # Format (`warden-evidence-bundle`, version 1)
//! JSON Lines (UTF-8, one JSON object per line, `\n`-terminated), each with a `type`, in this order:
//!
//! | `type` | count | members |
//! |---|---|---|
//! | `header` | 1 | `format` = `"warden-evidence-bundle"`, `version` = 1, `origin`, `created_at`, `tree_size` (the latest checkpoint's), `scope` (`complete`, and for filtered exports the filter: `since`, `until`, `agent`), optional `redaction_key` (fingerprint), `generator` |
//! | `key` | ≥ 0 | `vkey`: a verifier key `<name>+<id>+<base64>` |
//! | `policy` | ≥ 0 | `version`, `media_type`, `data` (base64): a policy set referenced by decisions; optional `activation`: the `policy_change` entry that activated it, with its inclusion proof against the latest checkpoint (an `entry` record's members) |
//! | `checkpoint` | ≥ 1 | `note`: a signed checkpoint, ascending tree size |
//! | `consistency` | one per consecutive pair | `from`, `to`, `proof` (hex hashes) |
//! | `entry` | ≥ 0 | `seq`, `leaf_hash` (hex), `canonical` (base64 of the exact hashed bytes), `entry` (the same, decoded, for reading), `inclusion` (hex hashes; filtered exports) |
//! | `end` | 1 | `entries`, `checkpoints`: counts, so a cut-off file is noticed |
//!
//! Line-oriented so that a million-entry export streams through the writer and the verifier in
//! constant memory, and so that `grep`/`jq` work on it.
//!
//! # Verification ([`verify_bundle`])
//! Keys: the auditor's own (pinned out of band) when given, else the bundle's (reported as such).
//! Every checkpoint is verified; consecutive checkpoints must be consistent (their proofs verify).
//! Every entry: its decoded copy must canonicalize to exactly its `canonical` bytes, which must
//! decode strictly, hash to `leaf_hash`, and carry its `seq`. Then:
//! * **complete** exports (`scope.complete`): entries `0..tree_size`, all of them, recomputed into the
//!   tree exactly as [`crate::verify_log`] does (every checkpoint root matched);
//! * **filtered** exports: entries in ascending `seq`, each with an inclusion proof against the latest
//!   checkpoint. A filtered export proves each entry is in the log at its position; it cannot prove
//!   that no other entry matched the filter (the report says whether the entries are contiguous).
//!
//! Policy sets ([`crate::policy::POLICY_SET_MEDIA_TYPE`]): the files must hash to the version the
//! record names, and the `activation` entry, when there is one, must be proven in the tree and name
//! that version (its recorded file hashes name an edited file). A decision naming a policy set (a
//! content hash) the bundle does not carry fails verification: the evidence of what decided is
//! missing. Other media types are carried opaquely.
//!
//! [`verify_bundle_expecting`] also checks the bundle against what the auditor knows from outside it
//! ([`Expected`]): a saved checkpoint must be one the bundle's tree reaches with the same root — for a
//! complete export, at any size; for a filtered one only at the sizes of its own checkpoints (it says
//! so otherwise: [`VerifyError::Unprovable`]) — and a minimum size must not exceed the latest
//! checkpoint's.

use std::io::{BufRead, Write};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::canonical;
use crate::checkpoint::{Checkpoint, CheckpointVerifier};
use crate::entry::{EncodedEntry, EntryKind};
use crate::hash::{Hash, leaf_hash};
use crate::merkle::{self, HashSource, MerkleError};
use crate::note::{SignedNote, VerifierKey};
use crate::policy;
use crate::verify::{
    Expected, LogRecord, LogVerifier, Progress, SeqProblem, VerifiedCheckpoint, VerifyError, VerifyOptions,
    verify_checkpoints,
};

pub const BUNDLE_FORMAT: &str = "warden-evidence-bundle";
pub const BUNDLE_VERSION: u64 = 1;
/// The longest line read (an entry is at most 1 MiB, ×4/3 in base64, plus its decoded copy).
pub const MAX_LINE_BYTES: usize = 4 << 20;

/// Why a bundle could not be written or read (the file, not the evidence: see [`VerifyError`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BundleError {
    #[error("io error: {0}")]
    Io(String),
    #[error("line {line}: longer than {MAX_LINE_BYTES} bytes")]
    LineTooLong { line: u64 },
    #[error("line {line}: {reason}")]
    Malformed { line: u64, reason: String },
    #[error("line {line}: a `{found}` record cannot come after `{after}` records")]
    Order {
        line: u64,
        found: &'static str,
        after: &'static str,
    },
    #[error("not a warden evidence bundle, or an unsupported version")]
    NotABundle,
    #[error("the file ends before its `end` record")]
    Truncated,
    #[error("the `end` record counts {claimed} {what} but the file has {found}")]
    CountMismatch {
        what: &'static str,
        claimed: u64,
        found: u64,
    },
    #[error("the bundle has no checkpoint")]
    NoCheckpoint,
    #[error("the header's tree size {header} is not the latest checkpoint's {latest}")]
    TreeSizeMismatch { header: u64, latest: u64 },
    #[error("the bundle is for log `{found}`, not `{expected}`")]
    WrongOrigin { expected: String, found: String },
    #[error("no trusted key: give the log's verifier keys or include them in the bundle")]
    NoKeys,
    #[error("cannot export: {0}")]
    Export(String),
}

impl From<std::io::Error> for BundleError {
    fn from(e: std::io::Error) -> Self {
        BundleError::Io(e.kind().to_string())
    }
}

/// What an export covers.
#[derive(Clone, Debug, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scope {
    /// Every entry up to the latest checkpoint.
    pub complete: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub until: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<String>,
}

/// The first line.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BundleHeader {
    pub format: String,
    pub version: u64,
    pub origin: String,
    pub created_at: DateTime<Utc>,
    pub tree_size: u64,
    pub scope: Scope,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redaction_key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generator: Option<String>,
}

/// A policy set version: for [`crate::policy::POLICY_SET_MEDIA_TYPE`], its files, checked against
/// the version; other media types are carried opaquely.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyBlob {
    pub version: String,
    pub media_type: String,
    #[serde(with = "b64")]
    pub data: Vec<u8>,
    /// The `policy_change` entry that activated this version, with its inclusion proof against the
    /// latest checkpoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub activation: Option<BundleEntry>,
}

/// A consistency proof between two checkpoints.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsistencyRecord {
    pub from: u64,
    pub to: u64,
    pub proof: Vec<Hash>,
}

/// An exported entry.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BundleEntry {
    pub seq: u64,
    pub leaf_hash: Hash,
    /// The exact canonical bytes that were hashed.
    #[serde(with = "b64")]
    pub canonical: Vec<u8>,
    /// The same entry decoded, for people and `jq`; verified to canonicalize to `canonical`.
    pub entry: Value,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inclusion: Option<Vec<Hash>>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum Line {
    Header(BundleHeader),
    Key { vkey: VerifierKey },
    Policy(PolicyBlob),
    Checkpoint { note: String },
    Consistency(ConsistencyRecord),
    Entry(BundleEntry),
    End { entries: u64, checkpoints: u64 },
}

impl Line {
    fn rank(&self) -> (u8, &'static str) {
        match self {
            Line::Header(_) => (0, "header"),
            Line::Key { .. } => (1, "key"),
            Line::Policy(_) => (2, "policy"),
            Line::Checkpoint { .. } => (3, "checkpoint"),
            Line::Consistency(_) => (4, "consistency"),
            Line::Entry(_) => (5, "entry"),
            Line::End { .. } => (6, "end"),
        }
    }
}

mod b64 {
    use super::*;
    pub fn serialize<S: serde::Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&B64.encode(v))
    }
    pub fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        B64.decode(s.as_bytes()).map_err(serde::de::Error::custom)
    }
}

/// Writes a bundle record by record, enforcing the order of the format.
#[derive(Debug)]
pub struct BundleWriter<W: Write> {
    out: W,
    rank: u8,
    entries: u64,
    checkpoints: u64,
    line: u64,
}

impl<W: Write> BundleWriter<W> {
    pub fn new(out: W, header: &BundleHeader) -> Result<Self, BundleError> {
        if header.format != BUNDLE_FORMAT || header.version != BUNDLE_VERSION {
            return Err(BundleError::NotABundle);
        }
        let mut w = Self {
            out,
            rank: 0,
            entries: 0,
            checkpoints: 0,
            line: 0,
        };
        w.write(&Line::Header(header.clone()))?;
        Ok(w)
    }

    fn write(&mut self, line: &Line) -> Result<(), BundleError> {
        let (rank, name) = line.rank();
        self.line += 1;
        if rank < self.rank || (rank == 0 && self.line > 1) {
            return Err(BundleError::Order {
                line: self.line,
                found: name,
                after: rank_name(self.rank),
            });
        }
        self.rank = rank;
        serde_json::to_writer(&mut self.out, line).map_err(|e| BundleError::Io(e.to_string()))?;
        self.out.write_all(b"\n")?;
        Ok(())
    }

    pub fn key(&mut self, key: &VerifierKey) -> Result<(), BundleError> {
        self.write(&Line::Key { vkey: key.clone() })
    }

    pub fn policy(&mut self, policy: &PolicyBlob) -> Result<(), BundleError> {
        self.write(&Line::Policy(policy.clone()))
    }

    pub fn checkpoint(&mut self, note: &str) -> Result<(), BundleError> {
        self.checkpoints += 1;
        self.write(&Line::Checkpoint {
            note: note.to_owned(),
        })
    }

    pub fn consistency(&mut self, record: &ConsistencyRecord) -> Result<(), BundleError> {
        self.write(&Line::Consistency(record.clone()))
    }

    pub fn entry(&mut self, entry: &EncodedEntry, inclusion: Option<Vec<Hash>>) -> Result<(), BundleError> {
        let decoded = entry
            .entry()
            .to_value()
            .map_err(|e| BundleError::Export(e.to_string()))?;
        self.entries += 1;
        self.write(&Line::Entry(BundleEntry {
            seq: entry.seq(),
            leaf_hash: entry.leaf_hash(),
            canonical: entry.bytes().to_vec(),
            entry: decoded,
            inclusion,
        }))
    }

    /// Writes the `end` record and flushes.
    pub fn finish(mut self) -> Result<W, BundleError> {
        let (entries, checkpoints) = (self.entries, self.checkpoints);
        self.write(&Line::End { entries, checkpoints })?;
        self.out.flush()?;
        Ok(self.out)
    }
}

fn rank_name(rank: u8) -> &'static str {
    [
        "header",
        "key",
        "policy",
        "checkpoint",
        "consistency",
        "entry",
        "end",
    ]
    .get(usize::from(rank))
    .copied()
    .unwrap_or("end")
}

/// What to export, besides the entries.
#[derive(Clone, Debug)]
pub struct ExportSpec {
    pub origin: String,
    pub created_at: DateTime<Utc>,
    pub scope: Scope,
    /// The log's verifier keys (every key that signed one of `checkpoints`).
    pub keys: Vec<VerifierKey>,
    /// Policy sets referenced by the exported decisions.
    pub policies: Vec<PolicyBlob>,
    /// Signed checkpoints to include; the largest decides the tree the entries are proven in.
    pub checkpoints: Vec<String>,
    pub redaction_key: Option<String>,
    pub generator: Option<String>,
}

/// Writes a bundle: header, keys, policies, the checkpoints (verified first with `spec.keys`),
/// consistency proofs between consecutive checkpoints and, for filtered exports, an inclusion proof
/// per entry — proofs read from `source`. For a complete export `entries` must be exactly
/// `0..tree_size` of the latest checkpoint.
pub fn export_bundle<W, S, I, E>(out: W, spec: &ExportSpec, source: &S, entries: I) -> Result<W, BundleError>
where
    W: Write,
    S: HashSource,
    S::Error: std::fmt::Display,
    I: IntoIterator<Item = Result<EncodedEntry, E>>,
    E: std::fmt::Display,
{
    let verifier = CheckpointVerifier::new(&spec.origin, spec.keys.clone())
        .map_err(|e| BundleError::Export(e.to_string()))?;
    let verified =
        verify_checkpoints(&spec.checkpoints, &verifier).map_err(|e| BundleError::Export(e.to_string()))?;
    let latest = verified
        .last()
        .map(|c| c.checkpoint.clone())
        .ok_or(BundleError::NoCheckpoint)?;
    let header = BundleHeader {
        format: BUNDLE_FORMAT.to_owned(),
        version: BUNDLE_VERSION,
        origin: spec.origin.clone(),
        created_at: spec.created_at,
        tree_size: latest.size,
        scope: spec.scope.clone(),
        redaction_key: spec.redaction_key.clone(),
        generator: spec.generator.clone(),
    };
    let mut w = BundleWriter::new(out, &header)?;
    for k in &spec.keys {
        w.key(k)?;
    }
    for p in &spec.policies {
        w.policy(p)?;
    }
    for c in &verified {
        w.checkpoint(&spec.checkpoints[c.position])?;
    }
    for pair in distinct_sizes(&verified).windows(2) {
        let (from, to) = (pair[0].size, pair[1].size);
        let proof =
            merkle::consistency_proof(source, from, to).map_err(|e| BundleError::Export(e.to_string()))?;
        w.consistency(&ConsistencyRecord { from, to, proof })?;
    }
    let mut expected = 0u64;
    for e in entries {
        let e = e.map_err(|e| BundleError::Export(e.to_string()))?;
        if e.seq() >= latest.size {
            return Err(BundleError::Export(format!(
                "entry {} is not covered by the latest checkpoint (size {})",
                e.seq(),
                latest.size
            )));
        }
        if spec.scope.complete {
            if e.seq() != expected {
                return Err(BundleError::Export(format!(
                    "a complete export needs entry {expected}, got {}",
                    e.seq()
                )));
            }
            w.entry(&e, None)?;
        } else {
            if e.seq() < expected {
                return Err(BundleError::Export("entries must be in ascending order".into()));
            }
            let proof = merkle::inclusion_proof(source, e.seq(), latest.size)
                .map_err(|e| BundleError::Export(e.to_string()))?;
            w.entry(&e, Some(proof))?;
        }
        expected = e.seq() + 1;
    }
    if spec.scope.complete && expected != latest.size {
        return Err(BundleError::Export(format!(
            "a complete export needs {} entries, got {expected}",
            latest.size
        )));
    }
    w.finish()
}

fn distinct_sizes(verified: &[VerifiedCheckpoint]) -> Vec<Checkpoint> {
    let mut out: Vec<Checkpoint> = Vec::new();
    for c in verified {
        if out.last().map(|l| l.size) != Some(c.checkpoint.size) {
            out.push(c.checkpoint.clone());
        }
    }
    out
}

/// A bundle read into memory (for inspection; [`verify_bundle`] streams instead).
#[derive(Clone, Debug, PartialEq)]
pub struct Bundle {
    pub header: BundleHeader,
    pub keys: Vec<VerifierKey>,
    pub policies: Vec<PolicyBlob>,
    pub checkpoints: Vec<String>,
    pub consistency: Vec<ConsistencyRecord>,
    pub entries: Vec<BundleEntry>,
}

/// Reads lines with a length limit, in the format's order.
struct LineReader<R: BufRead> {
    input: R,
    buf: Vec<u8>,
    line: u64,
    rank: u8,
    ended: bool,
}

impl<R: BufRead> LineReader<R> {
    fn new(input: R) -> Self {
        Self {
            input,
            buf: Vec::new(),
            line: 0,
            rank: 0,
            ended: false,
        }
    }

    /// The next record, or `None` at the end of the file.
    fn next(&mut self) -> Result<Option<Line>, BundleError> {
        self.buf.clear();
        loop {
            let available = self.input.fill_buf()?;
            if available.is_empty() {
                break;
            }
            let (take, done) = match available.iter().position(|&b| b == b'\n') {
                Some(i) => (i + 1, true),
                None => (available.len(), false),
            };
            if self.buf.len() + take > MAX_LINE_BYTES + 1 {
                return Err(BundleError::LineTooLong { line: self.line + 1 });
            }
            self.buf.extend_from_slice(&available[..take]);
            self.input.consume(take);
            if done {
                break;
            }
        }
        if self.buf.is_empty() {
            return Ok(None);
        }
        self.line += 1;
        let line = self.line;
        if self.ended {
            return Err(BundleError::Malformed {
                line,
                reason: "data after the `end` record".into(),
            });
        }
        if self.buf.last() != Some(&b'\n') {
            return Err(BundleError::Truncated);
        }
        self.buf.pop();
        let record: Line = serde_json::from_slice(&self.buf).map_err(|e| BundleError::Malformed {
            line,
            reason: format!("not a bundle record ({e})"),
        })?;
        let (rank, name) = record.rank();
        if line == 1 && rank != 0 {
            return Err(BundleError::NotABundle);
        }
        if rank < self.rank || (rank == 0 && line != 1) {
            return Err(BundleError::Order {
                line,
                found: name,
                after: rank_name(self.rank),
            });
        }
        self.rank = rank;
        if rank == 6 {
            self.ended = true;
        }
        Ok(Some(record))
    }
}

fn check_header(h: &BundleHeader) -> Result<(), BundleError> {
    if h.format != BUNDLE_FORMAT || h.version != BUNDLE_VERSION {
        return Err(BundleError::NotABundle);
    }
    Ok(())
}

/// Reads a whole bundle into memory, checking its structure (not its evidence).
pub fn read_bundle<R: BufRead>(input: R) -> Result<Bundle, BundleError> {
    let mut r = LineReader::new(input);
    let Some(Line::Header(header)) = r.next()? else {
        return Err(BundleError::NotABundle);
    };
    check_header(&header)?;
    let mut b = Bundle {
        header,
        keys: vec![],
        policies: vec![],
        checkpoints: vec![],
        consistency: vec![],
        entries: vec![],
    };
    loop {
        match r.next()? {
            None => return Err(BundleError::Truncated),
            Some(Line::Header(_)) => return Err(BundleError::NotABundle),
            Some(Line::Key { vkey }) => b.keys.push(vkey),
            Some(Line::Policy(p)) => b.policies.push(p),
            Some(Line::Checkpoint { note }) => b.checkpoints.push(note),
            Some(Line::Consistency(c)) => b.consistency.push(c),
            Some(Line::Entry(e)) => b.entries.push(e),
            Some(Line::End { entries, checkpoints }) => {
                check_counts(
                    entries,
                    b.entries.len() as u64,
                    checkpoints,
                    b.checkpoints.len() as u64,
                )?;
                if r.next()?.is_some() {
                    return Err(BundleError::Malformed {
                        line: r.line,
                        reason: "data after the `end` record".into(),
                    });
                }
                return Ok(b);
            }
        }
    }
}

fn check_counts(
    entries: u64,
    found_entries: u64,
    checkpoints: u64,
    found_cps: u64,
) -> Result<(), BundleError> {
    if entries != found_entries {
        return Err(BundleError::CountMismatch {
            what: "entries",
            claimed: entries,
            found: found_entries,
        });
    }
    if checkpoints != found_cps {
        return Err(BundleError::CountMismatch {
            what: "checkpoints",
            claimed: checkpoints,
            found: found_cps,
        });
    }
    Ok(())
}

/// Writes an in-memory bundle (proofs as they are; see [`export_bundle`] to make them).
pub fn write_bundle<W: Write>(out: W, bundle: &Bundle) -> Result<W, BundleError> {
    let mut w = BundleWriter::new(out, &bundle.header)?;
    for k in &bundle.keys {
        w.key(k)?;
    }
    for p in &bundle.policies {
        w.policy(p)?;
    }
    for c in &bundle.checkpoints {
        w.checkpoint(c)?;
    }
    for c in &bundle.consistency {
        w.consistency(c)?;
    }
    for e in &bundle.entries {
        w.entries += 1;
        w.write(&Line::Entry(e.clone()))?;
    }
    w.finish()
}

/// What the auditor trusts.
#[derive(Clone, Debug, Default)]
pub struct BundleTrust {
    /// The log's origin; `None`: the header's.
    pub origin: Option<String>,
    /// Verifier keys pinned out of band; `None`: the keys in the bundle (reported).
    pub keys: Option<Vec<VerifierKey>>,
}

/// What a verified bundle established.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BundleReport {
    pub origin: String,
    pub complete: bool,
    pub scope: Scope,
    pub entries: u64,
    /// The latest checkpoint: every entry is proven in this tree.
    pub latest_checkpoint: Checkpoint,
    pub checkpoints: usize,
    /// The keys came from the bundle itself, not from the auditor.
    pub keys_from_bundle: bool,
    pub first_seq: Option<u64>,
    pub last_seq: Option<u64>,
    /// The exported entries have consecutive sequence numbers.
    pub contiguous: bool,
    /// Policy versions that decisions in the bundle reference…
    pub policy_versions_referenced: Vec<String>,
    /// …and those of them the bundle does not carry (never a policy set's content hash: that fails).
    pub policy_versions_missing: Vec<String>,
    /// Policy sets whose files hash to their version…
    pub policy_versions_verified: Vec<String>,
    /// …and those of them bound to a proven activation entry.
    pub policy_versions_activated: Vec<String>,
    pub redaction_key: Option<String>,
    /// The size of the outside checkpoint the bundle was checked against, if one was given.
    pub known_checkpoint: Option<u64>,
}

/// Verifies a bundle from a reader, streaming (see the module documentation for what is checked).
pub fn verify_bundle<R: BufRead>(
    input: R,
    trust: &BundleTrust,
    progress: impl FnMut(&Progress),
) -> Result<BundleReport, VerifyError> {
    verify_bundle_expecting(input, trust, &Expected::default(), progress)
}

/// [`verify_bundle`], and the bundle checked against what the auditor knows from outside it.
pub fn verify_bundle_expecting<R: BufRead>(
    input: R,
    trust: &BundleTrust,
    expected: &Expected,
    mut progress: impl FnMut(&Progress),
) -> Result<BundleReport, VerifyError> {
    let mut r = LineReader::new(input);
    let Some(Line::Header(header)) = r.next()? else {
        return Err(BundleError::NotABundle.into());
    };
    check_header(&header)?;
    let origin = match &trust.origin {
        Some(o) if *o != header.origin => {
            return Err(BundleError::WrongOrigin {
                expected: o.clone(),
                found: header.origin.escape_debug().to_string(),
            }
            .into());
        }
        Some(o) => o.clone(),
        None => header.origin.clone(),
    };

    let mut keys = Vec::new();
    let mut blobs: Vec<PolicyBlob> = Vec::new();
    let mut notes = Vec::new();
    let mut consistency = Vec::new();
    let mut pending = r.next()?;
    loop {
        match pending {
            Some(Line::Key { vkey }) => keys.push(vkey),
            Some(Line::Policy(p)) => blobs.push(p),
            Some(Line::Checkpoint { note }) => notes.push(note),
            Some(Line::Consistency(c)) => consistency.push(c),
            _ => break,
        }
        pending = r.next()?;
    }

    // Checkpoints and their consistency.
    let keys_from_bundle = trust.keys.is_none();
    let trusted = trust.keys.clone().unwrap_or(keys);
    if trusted.is_empty() {
        return Err(BundleError::NoKeys.into());
    }
    let verifier = CheckpointVerifier::new(&origin, trusted).map_err(|e| BundleError::Malformed {
        line: 1,
        reason: e.to_string(),
    })?;
    let verified = verify_checkpoints(&notes, &verifier)?;
    let sizes = distinct_sizes(&verified);
    let latest = sizes.last().cloned().ok_or(BundleError::NoCheckpoint)?;
    if header.tree_size != latest.size {
        return Err(BundleError::TreeSizeMismatch {
            header: header.tree_size,
            latest: latest.size,
        }
        .into());
    }
    for pair in sizes.windows(2) {
        let (a, b) = (&pair[0], &pair[1]);
        let record = consistency
            .iter()
            .find(|c| c.from == a.size && c.to == b.size)
            .ok_or(VerifyError::MissingConsistency {
                from: a.size,
                to: b.size,
            })?;
        merkle::verify_consistency(a.size, b.size, &a.root, &b.root, &record.proof).map_err(|error| {
            VerifyError::Consistency {
                from: a.size,
                to: b.size,
                error,
            }
        })?;
    }

    // Policy sets: their text against their version, their activation in the tree.
    let checked = check_policies(&blobs, &latest)?;
    let policies: std::collections::BTreeSet<String> = blobs.into_iter().map(|b| b.version).collect();

    // Entries.
    let complete = header.scope.complete;
    let mut log = if complete {
        Some(LogVerifier::with_checkpoints(
            verified.clone(),
            VerifyOptions {
                decode_entries: false,
                progress_every: 0,
            },
        )?)
    } else {
        None
    };

    // What the auditor knows from outside the bundle.
    if let Some(min) = expected.min_size
        && latest.size < min
    {
        return Err(VerifyError::BelowMinimum {
            entries: latest.size,
            min,
        });
    }
    let known = match &expected.checkpoint {
        None => None,
        Some(k) => {
            let cp = k.verify(&verifier)?;
            if cp.size > latest.size {
                return Err(VerifyError::CutBack {
                    entries: latest.size,
                    size: cp.size,
                    known: k.known.clone(),
                });
            }
            if let Some(at) = sizes.iter().position(|c| c.size == cp.size) {
                if sizes[at].root != cp.root {
                    return Err(VerifyError::Rewritten {
                        size: cp.size,
                        first_unproven: at.checked_sub(1).map_or(0, |p| sizes[p].size),
                        known: k.known.clone(),
                    });
                }
            } else {
                match log.as_mut() {
                    Some(log) => log.require_checkpoint(cp.clone(), &k.known)?,
                    None => {
                        return Err(VerifyError::Unprovable {
                            known: k.known.clone(),
                            size: cp.size,
                            sizes: sizes
                                .iter()
                                .map(|c| c.size.to_string())
                                .collect::<Vec<_>>()
                                .join(", "),
                        });
                    }
                }
            }
            Some(cp.size)
        }
    };
    let mut count = 0u64;
    let (mut first_seq, mut last_seq): (Option<u64>, Option<u64>) = (None, None);
    let mut contiguous = true;
    let mut referenced = std::collections::BTreeSet::new();
    while let Some(Line::Entry(e)) = &pending {
        let index = e.seq;
        let encoded = check_entry(e)?;
        if encoded.entry().kind == EntryKind::Decision
            && let Some(v) = encoded.entry().body.get("policy_version").and_then(Value::as_str)
        {
            referenced.insert(v.to_owned());
        }
        if index >= latest.size {
            return Err(VerifyError::EntryBeyondCheckpoint {
                index,
                tree_size: latest.size,
            });
        }
        if let Some(prev) = last_seq {
            if index <= prev {
                return Err(VerifyError::Sequence {
                    index: prev + 1,
                    found: index,
                    problem: SeqProblem::Repeated,
                });
            }
            contiguous &= index == prev + 1;
        }
        match log.as_mut() {
            Some(log) => log.push(&LogRecord {
                seq: index,
                bytes: e.canonical.as_slice(),
                stored_hash: Some(e.leaf_hash),
            })?,
            None => {
                let proof = e.inclusion.as_deref().ok_or(VerifyError::Inclusion {
                    index,
                    error: MerkleError::WrongProofLength {
                        expected: merkle::inclusion_proof_len(index, latest.size),
                        got: 0,
                    },
                })?;
                merkle::verify_inclusion(&e.leaf_hash, index, latest.size, proof, &latest.root)
                    .map_err(|error| VerifyError::Inclusion { index, error })?;
            }
        }
        first_seq.get_or_insert(index);
        last_seq = Some(index);
        count += 1;
        if count.is_multiple_of(1 << 16) {
            progress(&Progress {
                entries: count,
                checkpoints_matched: verified.len(),
                checkpoints_total: verified.len(),
            });
        }
        pending = r.next()?;
    }
    match pending {
        Some(Line::End { entries, checkpoints }) => {
            check_counts(entries, count, checkpoints, notes.len() as u64)?
        }
        None => return Err(BundleError::Truncated.into()),
        Some(other) => {
            return Err(BundleError::Order {
                line: r.line,
                found: other.rank().1,
                after: "entry",
            }
            .into());
        }
    }
    if r.next()?.is_some() {
        return Err(BundleError::Malformed {
            line: r.line,
            reason: "data after the `end` record".into(),
        }
        .into());
    }
    if let Some(log) = log {
        log.finish()?;
    }
    progress(&Progress {
        entries: count,
        checkpoints_matched: verified.len(),
        checkpoints_total: verified.len(),
    });
    let missing: Vec<String> = referenced
        .iter()
        .filter(|v| !policies.contains(*v))
        .cloned()
        .collect();
    if let Some(v) = missing.iter().find(|v| policy::is_content_hash(v)) {
        return Err(VerifyError::Policy {
            version: v.clone(),
            problem: "decisions in the bundle were made under it, but the bundle does not carry it (or \
                      carries it under another version): the evidence of what decided is missing"
                .into(),
        });
    }
    Ok(BundleReport {
        origin,
        complete,
        scope: header.scope,
        entries: count,
        latest_checkpoint: latest,
        checkpoints: verified.len(),
        keys_from_bundle,
        first_seq,
        last_seq,
        contiguous,
        policy_versions_referenced: referenced.into_iter().collect(),
        policy_versions_missing: missing,
        policy_versions_verified: checked.verified,
        policy_versions_activated: checked.activated,
        redaction_key: header.redaction_key,
        known_checkpoint: known,
    })
}

/// Which policy sets [`check_policies`] verified.
struct CheckedPolicies {
    verified: Vec<String>,
    activated: Vec<String>,
}

/// Every policy-set blob: its activation entry (when carried) proven in the tree of `latest` and
/// naming its version; its files hashing to its version, else an error naming the changed files
/// (from the activation's recorded hashes) or, without them, every file it holds.
fn check_policies(blobs: &[PolicyBlob], latest: &Checkpoint) -> Result<CheckedPolicies, VerifyError> {
    let mut out = CheckedPolicies {
        verified: Vec::new(),
        activated: Vec::new(),
    };
    for blob in blobs {
        if blob.media_type != policy::POLICY_SET_MEDIA_TYPE {
            continue;
        }
        let fail = |problem: String| VerifyError::Policy {
            version: blob.version.escape_debug().to_string(),
            problem,
        };
        let recorded = match &blob.activation {
            None => None,
            Some(e) => {
                let index = e.seq;
                let encoded = check_entry(e)
                    .map_err(|err| fail(format!("its activation entry {index} is invalid: {err}")))?;
                let proof = e.inclusion.as_deref().unwrap_or_default();
                merkle::verify_inclusion(&e.leaf_hash, index, latest.size, proof, &latest.root).map_err(
                    |err| {
                        fail(format!(
                            "its activation entry {index} is not in the tree of the latest checkpoint: {err}"
                        ))
                    },
                )?;
                let Some((version, hashes)) = policy::activation_of(encoded.entry()) else {
                    return Err(fail(format!(
                        "entry {index}, given as its activation, is not a policy activation"
                    )));
                };
                if version != blob.version {
                    return Err(fail(format!(
                        "entry {index}, given as its activation, activated policy set {}",
                        version.escape_debug()
                    )));
                }
                out.activated.push(blob.version.clone());
                Some((index, hashes))
            }
        };
        let files = policy::decode_set(&blob.data).map_err(|e| fail(format!("its files are {e}")))?;
        let actual = policy::set_version(&files);
        if actual == blob.version {
            out.verified.push(blob.version.clone());
            continue;
        }
        let detail = match recorded {
            Some((index, Some(hashes))) => {
                let changed = policy::changed_files(&files, &hashes);
                if changed.is_empty() {
                    format!("the files match ledger entry {index}'s file hashes but not the version")
                } else {
                    format!(
                        "compared with the file hashes ledger entry {index} recorded: {}",
                        changed.join(", ")
                    )
                }
            }
            Some((index, None)) => format!(
                "ledger entry {index} that activated it records no file hashes, so the changed file cannot \
                 be named; the bundle's copy holds {}",
                file_list(&files)
            ),
            None => format!(
                "the bundle carries no activation entry for it, so the changed file cannot be named; the \
                 bundle's copy holds {}",
                file_list(&files)
            ),
        };
        return Err(fail(format!(
            "the policy text in the bundle does not hash to this version (it hashes to {actual}): it was \
             edited; {detail}"
        )));
    }
    Ok(out)
}

fn file_list(files: &std::collections::BTreeMap<String, String>) -> String {
    files
        .keys()
        .map(|n| format!("`{}`", n.escape_debug()))
        .collect::<Vec<_>>()
        .join(", ")
}

/// One exported entry: decoded copy = canonical bytes, strict decode, declared hash, declared seq.
fn check_entry(e: &BundleEntry) -> Result<EncodedEntry, VerifyError> {
    let index = e.seq;
    let shown = canonical::to_vec(&e.entry).map_err(|_| VerifyError::DecodedMismatch { index })?;
    if shown != e.canonical {
        return Err(VerifyError::DecodedMismatch { index });
    }
    if leaf_hash(&e.canonical) != e.leaf_hash {
        return Err(VerifyError::StoredHashMismatch { index });
    }
    let encoded = EncodedEntry::decode(e.canonical.clone())
        .map_err(|error| VerifyError::MalformedEntry { index, error })?;
    if encoded.seq() != index {
        return Err(VerifyError::EmbeddedSeqMismatch {
            index,
            found: encoded.seq(),
        });
    }
    Ok(encoded)
}

/// The checkpoint inside a note, without verifying the signature (for listing what a bundle holds).
pub fn peek_checkpoint(note: &str) -> Option<Checkpoint> {
    let parsed = SignedNote::parse(note).ok()?;
    Checkpoint::parse_body(&parsed.text).ok()
}
