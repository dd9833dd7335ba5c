//! Warden's tamper-evident ledger, the pure core: what an entry is and how it is hashed, the Merkle
//! tree and its proofs, signed checkpoints, whole-log verification, evidence bundles and the OCSF
//! export. No IO except the readers and writers a caller passes in, and no clock (times come in), so
//! both storage backends, the CLI and an auditor's offline check run the same code.
//!
//! | module | what | standard |
//! |---|---|---|
//! | [`entry`] | [`LedgerEntry`]: envelope + body, canonical bytes, strict decoding | RFC 8785 (JCS) |
//! | [`canonical`] | the JCS encoder | RFC 8785 |
//! | [`redact`] | sensitive values as `hmac-sha256:<hex>` | RFC 2104 |
//! | [`hash`] | leaf and node hashes | RFC 6962 / RFC 9162 §2.1.1 |
//! | [`merkle`] | roots, the incremental [`Frontier`], proofs, their verifiers | RFC 9162 §2.1.3-2.1.4 |
//! | [`note`] | signed notes, verifier and signer key strings | c2sp.org/signed-note |
//! | [`checkpoint`] | signed tree heads | c2sp.org/tlog-checkpoint |
//! | [`append`] | numbering and encoding a batch for one commit | |
//! | [`verify`] | whole-log verification naming the first bad entry | |
//! | [`bundle`] | evidence bundles: export, read, offline verification | |
//! | [`ocsf`] | OCSF events for SIEMs | OCSF 1.3.0 |
//! | [`policy`] | policy sets as evidence: content hash, per-file hashes, activation entries | |
//!
//! # How the pieces fit
//! Appending (server): read the [`Frontier`] under the log's lock → [`prepare_append`] a batch of
//! [`NewEntry`] → write entries, nodes and the new frontier in one transaction → sign a
//! [`Checkpoint`] of the new size and store it → only then report the entries durable.
//! Verifying: [`LogVerifier`] / [`verify_log`] over the stored records and checkpoints. Exporting:
//! [`export_bundle`] with proofs from a [`HashSource`]; [`verify_bundle`] offline.

pub mod append;
pub mod bundle;
pub mod canonical;
pub mod checkpoint;
pub mod entry;
pub mod hash;
pub mod merkle;
pub mod note;
pub mod ocsf;
pub mod policy;
pub mod redact;
pub mod verify;

pub use append::{AppendError, PreparedAppend, prepare_append, prepare_append_encoded};
pub use bundle::{
    Bundle, BundleEntry, BundleError, BundleHeader, BundleReport, BundleTrust, BundleWriter,
    ConsistencyRecord, ExportSpec, PolicyBlob, Scope, export_bundle, read_bundle, verify_bundle,
    verify_bundle_expecting, write_bundle,
};
pub use checkpoint::{Checkpoint, CheckpointError, CheckpointVerifier};
pub use entry::{
    DecisionRecord, EncodedEntry, EntryError, EntryKind, LedgerEntry, NewEntry, Outcome, PreEncoded,
};
pub use hash::{Hash, empty_root, leaf_hash, node_hash};
pub use merkle::{
    Frontier, FrontierState, HashSource, MemoryTree, MerkleError, NodeId, ProofPlan, consistency_plan,
    consistency_proof, inclusion_plan, inclusion_proof, root, verify_consistency, verify_inclusion,
};
pub use note::{NoteError, NoteSigner, VerifierKey};
pub use ocsf::{OCSF_VERSION, OcsfOptions, to_ocsf, write_ocsf_lines};
pub use redact::{RedactionKey, Redactor};
pub use verify::{
    Expected, KnownCheckpoint, LogRecord, LogVerifier, Progress, SeqProblem, VerifyError, VerifyOptions,
    VerifyReport, verify_log,
};
