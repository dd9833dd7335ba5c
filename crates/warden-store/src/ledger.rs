//! Column conversions for the ledger tables (the statements are in `sql.rs`, like every other).
//!
//! The ledger's logic — numbering, hashing, the frontier, checkpoints — is `warden_ledger`'s; the
//! store only commits what [`warden_ledger::prepare_append`] prepared, in one transaction.

use warden_ledger::{AppendError, Frontier, Hash, LedgerEntry};

use crate::{Result, StoreError};

/// Rows per multi-row `INSERT` (at most 5 parameters a row: far below both backends' parameter
/// limits).
pub(crate) const INSERT_CHUNK: usize = 1024;

/// Interior Merkle nodes are stored from this level up (subtrees of 256 leaves). Storing every level
/// would add about one row per entry to each commit; a proof needs at most a few nodes below this
/// level, all inside one or two 256-leaf blocks, and hashes them from the stored leaf hashes
/// (≤ 255 SHA-256 compressions) instead.
pub(crate) const STORED_NODE_LEVEL: u8 = 8;

/// Row counts of the multi-row `INSERT`s an append uses. A batch is cut greedily into pieces of these
/// sizes, so that every statement has one of a few shapes and the driver's prepared-statement cache
/// serves it (a statement of 1,024 rows takes longer to prepare than to run).
const INSERT_SHAPES: [usize; 5] = [256, 64, 16, 4, 1];

/// `items` in pieces of the sizes of [`INSERT_SHAPES`], largest first.
pub(crate) fn shaped_chunks<T>(mut items: &[T]) -> Vec<&[T]> {
    let mut out = Vec::new();
    for shape in INSERT_SHAPES {
        while items.len() >= shape {
            let (head, rest) = items.split_at(shape);
            out.push(head);
            items = rest;
        }
    }
    out
}

/// Sequence numbers and sizes are below 2^53 (the tree's limit), so they always fit.
pub(crate) fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

pub(crate) fn seq_col(v: i64) -> Result<u64> {
    u64::try_from(v).map_err(|e| StoreError::corrupt("seq", e))
}

/// The persisted frontier; it must describe exactly `size` leaves.
pub(crate) fn frontier_col(size: i64, state: &str) -> Result<Frontier> {
    let frontier: Frontier =
        serde_json::from_str(state).map_err(|e| StoreError::corrupt("ledger_head.frontier", e))?;
    if i64::try_from(frontier.size()).ok() != Some(size) {
        return Err(StoreError::corrupt(
            "ledger_head.frontier",
            "the frontier does not describe the stored size",
        ));
    }
    Ok(frontier)
}

/// A stored hash column. A value that is not 32 bytes cannot be a SHA-256 value: it reads as all
/// zeros, a hash no entry has, so verification names the entry instead of failing the whole read.
pub(crate) fn stored_hash(bytes: &[u8]) -> Hash {
    <[u8; 32]>::try_from(bytes).map(Hash).unwrap_or_default()
}

/// The agent an entry concerns, for `--agent` filters: the `agent` member of its body, by the
/// convention every entry Warden writes about an agent follows.
pub(crate) fn agent_of(entry: &LedgerEntry) -> Option<String> {
    entry
        .body
        .get("agent")
        .and_then(serde_json::Value::as_str)
        .map(str::to_owned)
}

pub(crate) fn append_error(e: AppendError) -> StoreError {
    match e {
        AppendError::Full => StoreError::Unavailable("the ledger is full".into()),
        // The server builds every entry; one that does not encode is a bug, not bad input.
        AppendError::Entry { .. } => StoreError::Internal(format!("ledger entry rejected: {e}")),
    }
}

/// Why a proof could not be made.
#[derive(Debug, thiserror::Error)]
pub enum ProofError {
    /// The sizes or index asked for do not describe a proof (e.g. an index past the tree).
    #[error("{0}")]
    Request(#[from] warden_ledger::MerkleError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

async fn assemble(store: &dyn crate::Store, plan: warden_ledger::ProofPlan) -> Result<Vec<Hash>, ProofError> {
    let ids = plan.node_ids();
    let hashes = store.ledger_nodes(&ids).await?;
    let found: std::collections::HashMap<_, _> = ids.into_iter().zip(hashes).collect();
    plan.assemble(|id| {
        found.get(&id).copied().ok_or_else(|| {
            ProofError::Store(StoreError::not_found(
                "ledger node",
                format!("{}/{}", id.level, id.index),
            ))
        })
    })
}

/// The RFC 9162 inclusion proof of entry `index` in the tree of `size` entries, from stored nodes.
pub async fn inclusion_proof(
    store: &dyn crate::Store,
    index: u64,
    size: u64,
) -> Result<Vec<Hash>, ProofError> {
    assemble(store, warden_ledger::inclusion_plan(index, size)?).await
}

/// The RFC 9162 consistency proof between the trees of `first` and `second` entries.
pub async fn consistency_proof(
    store: &dyn crate::Store,
    first: u64,
    second: u64,
) -> Result<Vec<Hash>, ProofError> {
    assemble(store, warden_ledger::consistency_plan(first, second)?).await
}
