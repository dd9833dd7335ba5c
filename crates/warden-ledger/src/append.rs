//! Appending, as a pure step the store commits: number a batch of new entries, encode them, extend
//! the frontier, and list the Merkle nodes the batch completes. Nothing changes until the caller has
//! written all of it in one transaction; if that fails, the prepared batch is dropped and the old
//! frontier still stands (fail closed: no decision is "recorded" that is not durable).
//!
//! Group commit: the server queues the entries of many concurrent requests, prepares them as one
//! batch against the frontier read under the log's lock, writes rows + nodes + new frontier (+ a
//! checkpoint) in one transaction, one fsync, and only then answers every request of the batch.

use crate::checkpoint::{Checkpoint, CheckpointError};
use crate::entry::{EncodedEntry, EntryError, NewEntry, PreEncoded};
use crate::hash::Hash;
use crate::merkle::{Frontier, MAX_TREE_SIZE, NodeId};
use crate::note::NoteSigner;

/// A batch ready to be written.
#[derive(Clone, Debug)]
pub struct PreparedAppend {
    /// The entries, numbered from the old frontier's size, with canonical bytes and leaf hashes.
    pub entries: Vec<EncodedEntry>,
    /// Interior nodes (level ≥ 1) the batch completes, for a store that keeps them for proofs.
    /// Leaf hashes (level 0) are in `entries`.
    pub nodes: Vec<(NodeId, Hash)>,
    /// The frontier after the batch: persist it in the same transaction.
    pub frontier: Frontier,
}

impl PreparedAppend {
    pub fn first_seq(&self) -> u64 {
        self.frontier.size() - self.entries.len() as u64
    }

    pub fn tree_size(&self) -> u64 {
        self.frontier.size()
    }

    pub fn root(&self) -> Hash {
        self.frontier.root()
    }

    /// The checkpoint of the tree after this batch, signed (one signature per batch is cheap:
    /// ~20 µs).
    pub fn sign_checkpoint(&self, origin: &str, signers: &[&NoteSigner]) -> Result<String, CheckpointError> {
        Checkpoint::new(origin, self.tree_size(), self.root())?.sign(signers)
    }
}

/// Why a batch could not be prepared; nothing was changed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AppendError {
    #[error("entry {index} of the batch: {error}")]
    Entry { index: usize, error: EntryError },
    #[error("the log is full ({MAX_TREE_SIZE} entries)")]
    Full,
}

/// Numbers and encodes `batch` after the entries `frontier` covers.
pub fn prepare_append(frontier: &Frontier, batch: Vec<NewEntry>) -> Result<PreparedAppend, AppendError> {
    let pre = batch
        .into_iter()
        .enumerate()
        .map(|(index, new)| {
            new.pre_encode()
                .map_err(|error| AppendError::Entry { index, error })
        })
        .collect::<Result<Vec<_>, _>>()?;
    prepare_append_encoded(frontier, pre)
}

/// Numbers a batch of entries encoded ahead ([`NewEntry::pre_encode`]) after the entries `frontier`
/// covers: what a commit does under the log's lock (splice the number, hash, extend the frontier).
pub fn prepare_append_encoded(
    frontier: &Frontier,
    batch: Vec<PreEncoded>,
) -> Result<PreparedAppend, AppendError> {
    let mut next = frontier.clone();
    let mut entries = Vec::with_capacity(batch.len());
    let mut nodes = Vec::new();
    for (index, pre) in batch.into_iter().enumerate() {
        let seq = next.size();
        let encoded = pre
            .at_seq(seq)
            .map_err(|error| AppendError::Entry { index, error })?;
        next.append_with(encoded.leaf_hash(), |id, hash| {
            if id.level > 0 {
                nodes.push((id, *hash));
            }
        })
        .map_err(|_| AppendError::Full)?;
        entries.push(encoded);
    }
    Ok(PreparedAppend {
        entries,
        nodes,
        frontier: next,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::entry::{EncodedEntry, EntryKind};
    use crate::merkle::{MemoryTree, root};
    use chrono::Utc;
    use serde_json::json;

    fn new(i: u64) -> NewEntry {
        NewEntry::new(Utc::now(), EntryKind::Decision, "a").body(json!({"i": i}))
    }

    #[test]
    fn batches_chain_and_report_nodes() {
        let mut frontier = Frontier::new();
        let mut all = Vec::new();
        let mut nodes = Vec::new();
        for batch in [3usize, 1, 5, 7] {
            let p = prepare_append(&frontier, (0..batch as u64).map(new).collect()).unwrap();
            assert_eq!(p.first_seq(), frontier.size());
            for (i, e) in p.entries.iter().enumerate() {
                assert_eq!(e.seq(), frontier.size() + i as u64);
            }
            all.extend(p.entries.iter().map(|e| e.leaf_hash()));
            nodes.extend(p.nodes.iter().copied());
            frontier = p.frontier;
        }
        assert_eq!(frontier.root(), root(&all));
        let tree = MemoryTree::from_leaves(all.iter().copied()).unwrap();
        use crate::merkle::HashSource;
        for (id, h) in nodes {
            assert_eq!(tree.node_hash(id).unwrap(), h);
        }
    }

    #[test]
    fn pre_encoding_gives_the_canonical_bytes() {
        let odd = NewEntry::new(Utc::now(), EntryKind::Other("x.y_z".into()), "é\u{1F600}\"\\\n").body(
            json!({"b": [1, 2.5, -0.0, 1e300, "\u{7f}"], "a": {"z": null, "é": true, "\u{1F600}": false}}),
        );
        for (seq, entry) in [
            (0u64, new(1)),
            (7, new(2).subject("task-7")),
            (1 << 40, odd.clone()),
            ((1 << 53) - 1, odd.subject("s")),
        ] {
            let pre = entry.clone().pre_encode().unwrap().at_seq(seq).unwrap();
            let whole = entry.at_seq(seq).encode().unwrap();
            assert_eq!(pre, whole);
            // (Decoding reads -0.0 back as 0: compare what it re-encodes to.)
            assert_eq!(
                EncodedEntry::decode(pre.bytes().to_vec()).unwrap().bytes(),
                whole.bytes()
            );
        }
        assert!(new(3).pre_encode().unwrap().at_seq((1 << 53) + 1).is_err());
    }

    #[test]
    fn a_bad_entry_changes_nothing() {
        let frontier = Frontier::new();
        let mut bad = new(1);
        bad.actor.clear();
        let err = prepare_append(&frontier, vec![new(0), bad]).unwrap_err();
        assert!(matches!(err, AppendError::Entry { index: 1, .. }));
        assert_eq!(frontier.size(), 0);
    }
}
