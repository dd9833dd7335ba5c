//! Whole-log verification: recompute every leaf hash and every checkpointed root, check every
//! checkpoint signature, and name the first bad entry.
//!
//! [`LogVerifier`] is a streaming state machine (push one record at a time, in sequence order), so a
//! server can feed it from SQLite or PostgreSQL page by page, asynchronously, with constant memory;
//! [`verify_log`] drives it from an iterator. What is checked, in order:
//!
//! 1. every checkpoint: signed by a trusted key (no trusted signature failing), the right origin,
//!    well formed; two checkpoints of the same size with different roots are a fork and refused;
//! 2. per entry, at position `i`: its sequence number is `i` (a gap, a duplicate or a reordering is
//!    named), its bytes are within the size limit, their leaf hash equals the stored hash when the
//!    store keeps one, and the sequence number *inside* the hashed bytes is `i` too (so an entry
//!    moved with its bytes intact is caught at the exact position); with
//!    [`VerifyOptions::decode_entries`] the bytes must also decode strictly and be canonical;
//! 3. whenever the entries reach a checkpoint's size, the recomputed root must equal the signed root;
//! 4. at the end, no checkpoint may be larger than the log (truncation).
//!
//! What the log itself holds cannot show that its newest entries were cut off together with their
//! checkpoints: a log cut back to an earlier size, its head recomputed, still carries genuine
//! signatures. Only something kept outside it can — a checkpoint saved elsewhere (a witness's, an
//! auditor's, the server's own `ledger.checkpoint` file: [`KnownCheckpoint`]) or a size known by other
//! means. [`LogVerifier::require_checkpoint`] and [`LogVerifier::require_min_size`] add them: the log
//! must reach that size ([`VerifyError::CutBack`], [`VerifyError::BelowMinimum`]) and its root at the
//! checkpoint's size must be the checkpoint's root ([`VerifyError::Rewritten`]).
//!
//! Checkpoints that all match prefixes of one recomputed tree are consistent with each other, so no
//! consistency proofs are needed here (bundles of filtered exports carry and check them).
//!
//! When a signed root does not match but every entry's own checks passed, the tampered entry lies
//! between the last checkpoint that matched and this one: [`VerifyError::first_bad_index`] names the
//! first entry not covered by a matching checkpoint. Checkpoint often (the server signs one per
//! commit batch) and that range is one batch.

use crate::checkpoint::{Checkpoint, CheckpointError, CheckpointVerifier};
use crate::entry::{EncodedEntry, EntryError, MAX_ENTRY_BYTES, embedded_seq};
use crate::hash::{Hash, empty_root, leaf_hash};
use crate::merkle::{Frontier, MerkleError};

/// One stored entry as the verifier sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogRecord<B = Vec<u8>> {
    /// The sequence number the store has for it (its row key).
    pub seq: u64,
    /// The canonical bytes as stored.
    pub bytes: B,
    /// The leaf hash the store kept beside the bytes, if it keeps one.
    pub stored_hash: Option<Hash>,
}

/// How thorough, and how chatty, verification is.
#[derive(Clone, Debug)]
pub struct VerifyOptions {
    /// Decode every entry strictly and require canonical bytes (slower; the bundle verifier always
    /// does). Off: only the embedded sequence number is read.
    pub decode_entries: bool,
    /// Call the progress callback every this many entries (0: never).
    pub progress_every: u64,
}

impl Default for VerifyOptions {
    fn default() -> Self {
        Self {
            decode_entries: false,
            progress_every: 1 << 16,
        }
    }
}

/// Where a verification is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Progress {
    pub entries: u64,
    pub checkpoints_matched: usize,
    pub checkpoints_total: usize,
}

/// What a successful verification established.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifyReport {
    pub entries: u64,
    /// Root of all entries verified.
    pub root: Hash,
    /// The frontier after the last entry (a server can compare it with its persisted one).
    pub frontier: Frontier,
    /// Checkpoints verified (signature, origin, root).
    pub checkpoints: usize,
    pub latest_checkpoint: Option<Checkpoint>,
    /// Entries after the latest checkpoint: hashed and in order, but covered by no signature yet.
    pub unsigned_tail: u64,
}

/// How a sequence number was wrong.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SeqProblem {
    /// Larger than expected: the entries in between are missing.
    Gap,
    /// Smaller than expected: this number was already seen (a duplicate or a reordering).
    Repeated,
}

/// Why verification failed. [`VerifyError::first_bad_index`] names the first bad entry where there
/// is one. Messages never contain entry contents.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    #[error("checkpoint #{position} is not acceptable: {error}")]
    Checkpoint { position: usize, error: CheckpointError },
    #[error(
        "checkpoints #{first} and #{second} both sign tree size {size} with different roots: the log forked"
    )]
    ConflictingCheckpoints { size: u64, first: usize, second: usize },
    #[error("entry {index}: could not be read: {message}")]
    Source { index: u64, message: String },
    #[error("entry {index}: found sequence number {found}{}", match .problem {
        SeqProblem::Gap => format!(" (entries {index}..{found} are missing)"),
        SeqProblem::Repeated => " again (duplicate or out of order)".to_owned(),
    })]
    Sequence {
        index: u64,
        found: u64,
        problem: SeqProblem,
    },
    #[error("entry {index}: larger than {MAX_ENTRY_BYTES} bytes")]
    EntryTooLarge { index: u64 },
    #[error("entry {index}: its bytes do not hash to the stored leaf hash")]
    StoredHashMismatch { index: u64 },
    #[error("entry {index}: {error}")]
    MalformedEntry { index: u64, error: EntryError },
    #[error("entry {index}: its bytes say sequence number {found}")]
    EmbeddedSeqMismatch { index: u64, found: u64 },
    #[error("entry {index}: the decoded copy differs from the canonical bytes")]
    DecodedMismatch { index: u64 },
    #[error(
        "the checkpoint at tree size {size} does not match the entries: an entry in {first_unproven}..{size} was changed"
    )]
    RootMismatch { size: u64, first_unproven: u64 },
    #[error(
        "the log ends after {entries} entries but a signed checkpoint covers {checkpoint_size}: entries {entries}.. are missing"
    )]
    Truncated { entries: u64, checkpoint_size: u64 },
    #[error("entry {index}: not in the tree of size {tree_size} the latest checkpoint covers")]
    EntryBeyondCheckpoint { index: u64, tree_size: u64 },
    #[error("entry {index}: inclusion proof against the latest checkpoint fails: {error}")]
    Inclusion { index: u64, error: MerkleError },
    #[error("checkpoints at tree sizes {from} and {to} are not consistent: {error}")]
    Consistency { from: u64, to: u64, error: MerkleError },
    #[error("no consistency proof between the checkpoints at tree sizes {from} and {to}")]
    MissingConsistency { from: u64, to: u64 },
    #[error("the bundle is invalid: {0}")]
    Bundle(#[from] crate::bundle::BundleError),
    #[error("{known} is not acceptable: {error}")]
    KnownCheckpoint { known: String, error: CheckpointError },
    #[error(
        "the log holds {entries} entries but {known} covers {size}: the log was cut back (entries {entries}.. are missing)"
    )]
    CutBack { entries: u64, size: u64, known: String },
    #[error(
        "the log's tree of {size} entries is not the one {known} signed: its history was rewritten (an entry in {first_unproven}..{size} was changed)"
    )]
    Rewritten {
        size: u64,
        first_unproven: u64,
        known: String,
    },
    #[error(
        "the log holds {entries} entries, fewer than the required minimum of {min}: the log was cut back"
    )]
    BelowMinimum { entries: u64, min: u64 },
    #[error(
        "{known} (tree size {size}) cannot be checked against this bundle: a filtered export proves only the trees of its own checkpoints (sizes {sizes}); check it against a complete export or the database"
    )]
    Unprovable { known: String, size: u64, sizes: String },
    #[error("policy set {version}: {problem}")]
    Policy { version: String, problem: String },
}

/// A signed checkpoint kept outside the log — by a witness, an auditor, the server's own
/// `ledger.checkpoint` file — and a description of where (`the checkpoint in saved.cp`), for messages.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KnownCheckpoint {
    /// The C2SP signed note.
    pub note: String,
    pub known: String,
}

impl KnownCheckpoint {
    /// Its signature (by a key `verifier` trusts), origin and body.
    pub fn verify(&self, verifier: &CheckpointVerifier) -> Result<Checkpoint, VerifyError> {
        verifier
            .verify(&self.note)
            .map_err(|error| VerifyError::KnownCheckpoint {
                known: self.known.clone(),
                error,
            })
    }
}

/// What the log must hold besides what its own checkpoints prove.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Expected {
    /// A checkpoint kept outside the log: the log must reach its size with its root.
    pub checkpoint: Option<KnownCheckpoint>,
    /// The log must hold at least this many entries.
    pub min_size: Option<u64>,
}

impl VerifyError {
    /// The first entry that is (or, for a root mismatch, may be) bad; `None` for errors about
    /// checkpoints or the bundle file itself.
    pub fn first_bad_index(&self) -> Option<u64> {
        match self {
            VerifyError::Source { index, .. }
            | VerifyError::Sequence { index, .. }
            | VerifyError::EntryTooLarge { index }
            | VerifyError::StoredHashMismatch { index }
            | VerifyError::MalformedEntry { index, .. }
            | VerifyError::EmbeddedSeqMismatch { index, .. }
            | VerifyError::DecodedMismatch { index }
            | VerifyError::EntryBeyondCheckpoint { index, .. }
            | VerifyError::Inclusion { index, .. } => Some(*index),
            VerifyError::RootMismatch { first_unproven, .. }
            | VerifyError::Rewritten { first_unproven, .. } => Some(*first_unproven),
            VerifyError::Truncated { entries, .. }
            | VerifyError::CutBack { entries, .. }
            | VerifyError::BelowMinimum { entries, .. } => Some(*entries),
            VerifyError::Checkpoint { .. }
            | VerifyError::ConflictingCheckpoints { .. }
            | VerifyError::Consistency { .. }
            | VerifyError::MissingConsistency { .. }
            | VerifyError::Bundle(_)
            | VerifyError::KnownCheckpoint { .. }
            | VerifyError::Unprovable { .. }
            | VerifyError::Policy { .. } => None,
        }
    }
}

/// A checkpoint that verified, with its position in the caller's list.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifiedCheckpoint {
    pub position: usize,
    pub checkpoint: Checkpoint,
}

/// Verifies every note, then orders them by size and refuses forks (same size, different roots).
pub fn verify_checkpoints<S: AsRef<str>>(
    notes: &[S],
    verifier: &CheckpointVerifier,
) -> Result<Vec<VerifiedCheckpoint>, VerifyError> {
    let mut out = Vec::with_capacity(notes.len());
    for (position, note) in notes.iter().enumerate() {
        let checkpoint = verifier
            .verify(note.as_ref())
            .map_err(|error| VerifyError::Checkpoint { position, error })?;
        out.push(VerifiedCheckpoint { position, checkpoint });
    }
    out.sort_by_key(|c| (c.checkpoint.size, c.position));
    for pair in out.windows(2) {
        let (a, b) = (&pair[0], &pair[1]);
        if a.checkpoint.size == b.checkpoint.size && a.checkpoint.root != b.checkpoint.root {
            return Err(VerifyError::ConflictingCheckpoints {
                size: a.checkpoint.size,
                first: a.position,
                second: b.position,
            });
        }
    }
    Ok(out)
}

/// The streaming verifier. Push records in sequence order, then [`LogVerifier::finish`].
#[derive(Debug)]
pub struct LogVerifier {
    checkpoints: Vec<VerifiedCheckpoint>,
    next: usize,
    frontier: Frontier,
    last_proven: u64,
    options: VerifyOptions,
    /// A checkpoint from outside the log the entries must reach, and where it came from.
    required: Option<(Checkpoint, String)>,
    min_size: u64,
}

impl LogVerifier {
    /// Verifies the checkpoints (signatures, origin, forks) before any entry is read.
    pub fn new<S: AsRef<str>>(
        notes: &[S],
        verifier: &CheckpointVerifier,
        options: VerifyOptions,
    ) -> Result<Self, VerifyError> {
        Self::with_checkpoints(verify_checkpoints(notes, verifier)?, options)
    }

    /// From checkpoints already verified by [`verify_checkpoints`].
    pub fn with_checkpoints(
        checkpoints: Vec<VerifiedCheckpoint>,
        options: VerifyOptions,
    ) -> Result<Self, VerifyError> {
        let mut v = Self {
            checkpoints,
            next: 0,
            frontier: Frontier::new(),
            last_proven: 0,
            options,
            required: None,
            min_size: 0,
        };
        v.match_checkpoints()?;
        Ok(v)
    }

    /// Requires the log to reach `checkpoint` (verified by the caller: see [`KnownCheckpoint`]) with
    /// the same root; `known` says where it came from. Call it before pushing the entries it covers.
    pub fn require_checkpoint(&mut self, checkpoint: Checkpoint, known: &str) -> Result<(), VerifyError> {
        let size = self.frontier.size();
        if size > checkpoint.size {
            return Err(VerifyError::Unprovable {
                known: known.to_owned(),
                size: checkpoint.size,
                sizes: format!("{size} and up"),
            });
        }
        self.required = Some((checkpoint, known.to_owned()));
        self.match_required(self.last_proven)
    }

    /// Requires the log to hold at least `min` entries.
    pub fn require_min_size(&mut self, min: u64) {
        self.min_size = self.min_size.max(min);
    }

    /// Compares the root with the required checkpoint when the log has its size. `before`: the first
    /// entry no checkpoint proved before this size was reached.
    fn match_required(&mut self, before: u64) -> Result<(), VerifyError> {
        let size = self.frontier.size();
        let Some((cp, known)) = &self.required else {
            return Ok(());
        };
        if cp.size != size {
            return Ok(());
        }
        let root = if size == 0 {
            empty_root()
        } else {
            self.frontier.root()
        };
        if root != cp.root {
            return Err(VerifyError::Rewritten {
                size,
                first_unproven: before,
                known: known.clone(),
            });
        }
        self.last_proven = size;
        Ok(())
    }

    pub fn entries(&self) -> u64 {
        self.frontier.size()
    }

    pub fn progress(&self) -> Progress {
        Progress {
            entries: self.frontier.size(),
            checkpoints_matched: self.next,
            checkpoints_total: self.checkpoints.len(),
        }
    }

    /// Compares the root with every checkpoint of the current size.
    fn match_checkpoints(&mut self) -> Result<(), VerifyError> {
        let size = self.frontier.size();
        while let Some(cp) = self.checkpoints.get(self.next) {
            if cp.checkpoint.size != size {
                break;
            }
            let root = if size == 0 {
                empty_root()
            } else {
                self.frontier.root()
            };
            if root != cp.checkpoint.root {
                return Err(VerifyError::RootMismatch {
                    size,
                    first_unproven: self.last_proven,
                });
            }
            self.last_proven = size;
            self.next += 1;
        }
        Ok(())
    }

    /// Checks one record; it must be the next in sequence.
    pub fn push<B: AsRef<[u8]>>(&mut self, record: &LogRecord<B>) -> Result<(), VerifyError> {
        let index = self.frontier.size();
        if record.seq != index {
            return Err(VerifyError::Sequence {
                index,
                found: record.seq,
                problem: if record.seq > index {
                    SeqProblem::Gap
                } else {
                    SeqProblem::Repeated
                },
            });
        }
        let bytes = record.bytes.as_ref();
        if bytes.len() > MAX_ENTRY_BYTES {
            return Err(VerifyError::EntryTooLarge { index });
        }
        let h = leaf_hash(bytes);
        if let Some(stored) = &record.stored_hash
            && *stored != h
        {
            return Err(VerifyError::StoredHashMismatch { index });
        }
        let found = if self.options.decode_entries {
            EncodedEntry::decode(bytes.to_vec())
                .map_err(|error| VerifyError::MalformedEntry { index, error })?
                .seq()
        } else {
            embedded_seq(bytes).map_err(|error| VerifyError::MalformedEntry { index, error })?
        };
        if found != index {
            return Err(VerifyError::EmbeddedSeqMismatch { index, found });
        }
        self.frontier
            .append(h)
            .map_err(|_| VerifyError::EntryBeyondCheckpoint {
                index,
                tree_size: index,
            })?;
        let before = self.last_proven;
        self.match_checkpoints()?;
        self.match_required(before)
    }

    /// Ends the log: no checkpoint may be larger than what was pushed.
    pub fn finish(self) -> Result<VerifyReport, VerifyError> {
        let entries = self.frontier.size();
        if let Some(cp) = self.checkpoints.get(self.next) {
            return Err(VerifyError::Truncated {
                entries,
                checkpoint_size: cp.checkpoint.size,
            });
        }
        if let Some((cp, known)) = &self.required
            && entries < cp.size
        {
            return Err(VerifyError::CutBack {
                entries,
                size: cp.size,
                known: known.clone(),
            });
        }
        if entries < self.min_size {
            return Err(VerifyError::BelowMinimum {
                entries,
                min: self.min_size,
            });
        }
        let latest = self.checkpoints.last().map(|c| c.checkpoint.clone());
        let unsigned_tail = entries - latest.as_ref().map_or(0, |c| c.size);
        Ok(VerifyReport {
            entries,
            root: self.frontier.root(),
            frontier: self.frontier,
            checkpoints: self.checkpoints.len(),
            latest_checkpoint: latest,
            unsigned_tail,
        })
    }
}

/// Verifies a whole log: `records` in sequence order (a source error stops verification and is
/// reported at its position), `checkpoints` as the signed notes the store kept.
pub fn verify_log<I, B, E, S>(
    records: I,
    checkpoints: &[S],
    verifier: &CheckpointVerifier,
    options: VerifyOptions,
    mut progress: impl FnMut(&Progress),
) -> Result<VerifyReport, VerifyError>
where
    I: IntoIterator<Item = Result<LogRecord<B>, E>>,
    B: AsRef<[u8]>,
    E: std::fmt::Display,
    S: AsRef<str>,
{
    let every = options.progress_every;
    let mut v = LogVerifier::new(checkpoints, verifier, options)?;
    for record in records {
        let record = record.map_err(|e| VerifyError::Source {
            index: v.entries(),
            message: e.to_string(),
        })?;
        v.push(&record)?;
        if every > 0 && v.entries().is_multiple_of(every) {
            progress(&v.progress());
        }
    }
    progress(&v.progress());
    v.finish()
}
