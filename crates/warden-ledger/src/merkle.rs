//! The RFC 6962 / RFC 9162 Merkle tree: roots, the incremental [`Frontier`], proof generation from any
//! [`HashSource`], and the two verifiers.
//!
//! # Nodes
//! A tree of `n` leaves is made of *perfect* subtrees (2^level leaves, aligned). [`NodeId`] names one:
//! `level` and `index` cover leaves `[index·2^level, (index+1)·2^level)`; level 0 is a leaf hash. Once
//! complete, a perfect node never changes, so a store can keep them by id. Everything else (the root
//! of a size that is not a power of two, the right edge of a proof) is recomputed from perfect nodes.
//!
//! # Proofs
//! Generation follows RFC 9162 §2.1.3.1 (`PATH`) and §2.1.4.1 (`SUBPROOF`) literally, but in two steps:
//! [`inclusion_plan`] / [`consistency_plan`] say which perfect nodes a proof needs (pure, no data), and
//! [`ProofPlan::assemble`] fetches and combines them. An asynchronous store can therefore fetch the
//! nodes of a plan in one query and assemble from the answer, without implementing [`HashSource`].
//!
//! Verification is RFC 9162 §2.1.3.2 and §2.1.4.2 step for step (the lesson of immudb
//! GHSA-672p-m5jq-mrh8: a verifier that skips a step can be fooled). In addition, and before any
//! hashing, the proof length must equal the length the algorithm implies for the sizes and index, so
//! a padded or truncated proof is refused as such. Edge cases: an index ≥ size is refused; a
//! consistency proof between equal sizes must be empty and the roots equal; from size 0 it must be
//! empty and the first root must be the empty-tree root.

use crate::hash::{Hash, empty_root, node_hash};

/// The largest tree this crate builds: sequence numbers are canonical-JSON integers, which are exact
/// only up to 2^53 (RFC 8785 §3.2.2.3 reads every number as a double).
pub const MAX_TREE_SIZE: u64 = 1 << 53;

/// A perfect subtree: `2^level` leaves starting at leaf `index << level`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeId {
    pub level: u8,
    pub index: u64,
}

impl NodeId {
    pub fn new(level: u8, index: u64) -> Self {
        Self { level, index }
    }

    pub fn leaf(index: u64) -> Self {
        Self { level: 0, index }
    }

    /// The first leaf covered and one past the last (`None` if that is beyond `u64`).
    pub fn leaf_range(&self) -> Option<(u64, u64)> {
        let width = 1u64.checked_shl(u32::from(self.level))?;
        let start = self.index.checked_mul(width)?;
        Some((start, start.checked_add(width)?))
    }
}

/// Why a tree operation or a proof was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MerkleError {
    #[error("leaf index {index} is not in a tree of size {size}")]
    IndexOutOfRange { index: u64, size: u64 },
    #[error("tree size {first} is larger than tree size {second}")]
    SizeOrder { first: u64, second: u64 },
    #[error("the tree is full ({max} leaves)")]
    TreeFull { max: u64 },
    #[error("the proof has {got} hashes where {expected} are required")]
    WrongProofLength { expected: usize, got: usize },
    #[error("the proof does not lead to the expected root")]
    RootMismatch,
    #[error("the proof does not lead to the first tree's root")]
    FirstRootMismatch,
    #[error("node at level {} index {} is not available", .0.level, .0.index)]
    MissingNode(NodeId),
    #[error("frontier state is invalid: {0}")]
    InvalidFrontier(&'static str),
}

/// Where proof generation reads perfect-subtree hashes from. Level 0 nodes are leaf hashes.
pub trait HashSource {
    type Error: From<MerkleError>;
    fn node_hash(&self, id: NodeId) -> Result<Hash, Self::Error>;
}

/// The largest power of two strictly smaller than `n` (`n ≥ 2`): RFC 9162's `k`.
fn split_point(n: u64) -> u64 {
    debug_assert!(n >= 2);
    1u64 << (63 - (n - 1).leading_zeros())
}

/// The perfect subtrees that make up leaves `[start, end)`, left to right. `start` must be aligned as
/// every range of the RFC recursion is (a multiple of the largest power of two ≤ `end - start`).
pub fn range_nodes(start: u64, end: u64) -> Vec<NodeId> {
    let mut out = Vec::new();
    let mut pos = start;
    let mut len = end.saturating_sub(start);
    while len > 0 {
        let level = 63 - len.leading_zeros();
        out.push(NodeId {
            level: level as u8,
            index: pos >> level,
        });
        pos += 1u64 << level;
        len -= 1u64 << level;
    }
    out
}

/// Which perfect nodes a proof needs: each element of the proof is the Merkle hash of a range, the
/// fold (right to left) of the listed perfect nodes.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct ProofPlan {
    pub elements: Vec<Vec<NodeId>>,
}

impl ProofPlan {
    /// Every node the plan reads, deduplicated, in a stable order (for one batched fetch).
    pub fn node_ids(&self) -> Vec<NodeId> {
        let mut ids: Vec<NodeId> = self.elements.iter().flatten().copied().collect();
        ids.sort_unstable();
        ids.dedup();
        ids
    }

    /// Builds the proof, reading each node through `fetch`.
    pub fn assemble<E>(&self, mut fetch: impl FnMut(NodeId) -> Result<Hash, E>) -> Result<Vec<Hash>, E>
    where
        E: From<MerkleError>,
    {
        let mut proof = Vec::with_capacity(self.elements.len());
        for element in &self.elements {
            proof.push(fold_nodes(element, &mut fetch)?);
        }
        Ok(proof)
    }
}

fn fold_nodes<E>(ids: &[NodeId], fetch: &mut impl FnMut(NodeId) -> Result<Hash, E>) -> Result<Hash, E>
where
    E: From<MerkleError>,
{
    let Some((last, rest)) = ids.split_last() else {
        return Ok(empty_root());
    };
    let mut acc = fetch(*last)?;
    for id in rest.iter().rev() {
        acc = node_hash(&fetch(*id)?, &acc);
    }
    Ok(acc)
}

/// RFC 9162 §2.1.3.1 `PATH(index, D[0:size])`, as a plan.
pub fn inclusion_plan(index: u64, size: u64) -> Result<ProofPlan, MerkleError> {
    if index >= size {
        return Err(MerkleError::IndexOutOfRange { index, size });
    }
    let mut elements = Vec::new();
    let (mut off, mut n, mut m) = (0u64, size, index);
    while n > 1 {
        let k = split_point(n);
        if m < k {
            // PATH(m, D[0:k]) : MTH(D[k:n])
            elements.push(range_nodes(off + k, off + n));
            n = k;
        } else {
            // PATH(m - k, D[k:n]) : MTH(D[0:k])
            elements.push(range_nodes(off, off + k));
            off += k;
            m -= k;
            n -= k;
        }
    }
    elements.reverse();
    Ok(ProofPlan { elements })
}

/// RFC 9162 §2.1.4.1 `PROOF(first, D[0:second])`, as a plan. Empty when `first == 0` or
/// `first == second`.
pub fn consistency_plan(first: u64, second: u64) -> Result<ProofPlan, MerkleError> {
    if first > second {
        return Err(MerkleError::SizeOrder { first, second });
    }
    if first == 0 || first == second {
        return Ok(ProofPlan::default());
    }
    let mut elements = Vec::new();
    let (mut off, mut n, mut m, mut whole) = (0u64, second, first, true);
    loop {
        if m == n {
            // SUBPROOF(m, D[m], b): {} when b, else MTH(D[m]).
            if !whole {
                elements.push(range_nodes(off, off + n));
            }
            break;
        }
        let k = split_point(n);
        if m <= k {
            // SUBPROOF(m, D[0:k], b) : MTH(D[k:n])
            elements.push(range_nodes(off + k, off + n));
            n = k;
        } else {
            // SUBPROOF(m - k, D[k:n], false) : MTH(D[0:k])
            elements.push(range_nodes(off, off + k));
            off += k;
            m -= k;
            n -= k;
            whole = false;
        }
    }
    elements.reverse();
    Ok(ProofPlan { elements })
}

/// The inclusion proof of leaf `index` in the tree of the first `size` leaves.
pub fn inclusion_proof<S: HashSource>(source: &S, index: u64, size: u64) -> Result<Vec<Hash>, S::Error> {
    inclusion_plan(index, size)?.assemble(|id| source.node_hash(id))
}

/// The consistency proof between the trees of the first `first` and `second` leaves.
pub fn consistency_proof<S: HashSource>(source: &S, first: u64, second: u64) -> Result<Vec<Hash>, S::Error> {
    consistency_plan(first, second)?.assemble(|id| source.node_hash(id))
}

/// The root of the tree of the first `size` leaves, from perfect nodes.
pub fn root_from_source<S: HashSource>(source: &S, size: u64) -> Result<Hash, S::Error> {
    fold_nodes(&range_nodes(0, size), &mut |id| source.node_hash(id))
}

/// The root of a tree over these leaf hashes (MTH, RFC 9162 §2.1.1).
pub fn root(leaves: &[Hash]) -> Hash {
    let mut frontier = Frontier::new();
    for leaf in leaves {
        // A slice cannot exceed MAX_TREE_SIZE on any real machine; stop rather than panic if it did.
        if frontier.append(*leaf).is_err() {
            break;
        }
    }
    frontier.root()
}

/// Proof length RFC 9162 §2.1.3.2 implies for `index` in a tree of `size` (0 when `index ≥ size`:
/// no proof exists).
pub fn inclusion_proof_len(index: u64, size: u64) -> usize {
    if index >= size {
        return 0;
    }
    let inner = 64 - (index ^ (size - 1)).leading_zeros();
    let border = (index >> inner).count_ones();
    (inner + border) as usize
}

/// Proof length RFC 9162 §2.1.4.2 implies for `0 < first < second` (0 otherwise: the proof is
/// empty, or there is none).
pub fn consistency_proof_len(first: u64, second: u64) -> usize {
    if first == 0 || first >= second {
        return 0;
    }
    let shift = first.trailing_zeros();
    let (f, s) = ((first - 1) >> shift, (second - 1) >> shift);
    let inner = 64 - (f ^ s).leading_zeros();
    let border = (f >> inner).count_ones();
    let seed = usize::from(!first.is_power_of_two());
    (inner + border) as usize + seed
}

/// RFC 9162 §2.1.3.2: does `proof` show the leaf `leaf` at `index` in the tree of `size` with `root`?
pub fn verify_inclusion(
    leaf: &Hash,
    index: u64,
    size: u64,
    proof: &[Hash],
    root: &Hash,
) -> Result<(), MerkleError> {
    // Step 1.
    if index >= size {
        return Err(MerkleError::IndexOutOfRange { index, size });
    }
    let expected = inclusion_proof_len(index, size);
    if proof.len() != expected {
        return Err(MerkleError::WrongProofLength {
            expected,
            got: proof.len(),
        });
    }
    // Steps 2-3.
    let (mut fn_, mut sn) = (index, size - 1);
    let mut r = *leaf;
    // Step 4.
    for p in proof {
        if sn == 0 {
            return Err(MerkleError::WrongProofLength {
                expected,
                got: proof.len(),
            });
        }
        if fn_ & 1 == 1 || fn_ == sn {
            r = node_hash(p, &r);
            if fn_ & 1 == 0 {
                while fn_ & 1 == 0 && fn_ != 0 {
                    fn_ >>= 1;
                    sn >>= 1;
                }
            }
        } else {
            r = node_hash(&r, p);
        }
        fn_ >>= 1;
        sn >>= 1;
    }
    // Step 5.
    if sn != 0 {
        return Err(MerkleError::WrongProofLength {
            expected,
            got: proof.len(),
        });
    }
    if r != *root {
        return Err(MerkleError::RootMismatch);
    }
    Ok(())
}

/// RFC 9162 §2.1.4.2: does `proof` show that the tree of `first` leaves with `first_root` is a prefix
/// of the tree of `second` leaves with `second_root`?
pub fn verify_consistency(
    first: u64,
    second: u64,
    first_root: &Hash,
    second_root: &Hash,
    proof: &[Hash],
) -> Result<(), MerkleError> {
    if first > second {
        return Err(MerkleError::SizeOrder { first, second });
    }
    if first == second {
        if !proof.is_empty() {
            return Err(MerkleError::WrongProofLength {
                expected: 0,
                got: proof.len(),
            });
        }
        return if first_root == second_root {
            Ok(())
        } else {
            Err(MerkleError::RootMismatch)
        };
    }
    if first == 0 {
        // Every tree extends the empty tree; its root is fixed, so a claimed one is checked too.
        if !proof.is_empty() {
            return Err(MerkleError::WrongProofLength {
                expected: 0,
                got: proof.len(),
            });
        }
        return if *first_root == empty_root() {
            Ok(())
        } else {
            Err(MerkleError::FirstRootMismatch)
        };
    }
    let expected = consistency_proof_len(first, second);
    // Step 1 (an empty proof) is covered: `expected` is at least 1 here.
    if proof.len() != expected {
        return Err(MerkleError::WrongProofLength {
            expected,
            got: proof.len(),
        });
    }
    // Step 2: when `first` is a power of two, its root is the first node of the path.
    let (seed, rest) = if first.is_power_of_two() {
        (*first_root, proof)
    } else {
        match proof.split_first() {
            Some((seed, rest)) => (*seed, rest),
            None => {
                return Err(MerkleError::WrongProofLength { expected, got: 0 });
            }
        }
    };
    // Steps 3-4.
    let (mut fn_, mut sn) = (first - 1, second - 1);
    while fn_ & 1 == 1 {
        fn_ >>= 1;
        sn >>= 1;
    }
    // Step 5.
    let (mut fr, mut sr) = (seed, seed);
    // Step 6.
    for c in rest {
        if sn == 0 {
            return Err(MerkleError::WrongProofLength {
                expected,
                got: proof.len(),
            });
        }
        if fn_ & 1 == 1 || fn_ == sn {
            fr = node_hash(c, &fr);
            sr = node_hash(c, &sr);
            if fn_ & 1 == 0 {
                while fn_ & 1 == 0 && fn_ != 0 {
                    fn_ >>= 1;
                    sn >>= 1;
                }
            }
        } else {
            sr = node_hash(&sr, c);
        }
        fn_ >>= 1;
        sn >>= 1;
    }
    // Step 7.
    if sn != 0 {
        return Err(MerkleError::WrongProofLength {
            expected,
            got: proof.len(),
        });
    }
    if fr != *first_root {
        return Err(MerkleError::FirstRootMismatch);
    }
    if sr != *second_root {
        return Err(MerkleError::RootMismatch);
    }
    Ok(())
}

/// The compact range `[0, size)`: one perfect-subtree hash per set bit of `size`, largest first.
/// Appending a leaf and computing the root are O(log n); the state is a size and at most 53 hashes,
/// small enough to persist beside the log after every append and to resume from after a restart.
#[derive(Clone, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(try_from = "FrontierState", into = "FrontierState")]
pub struct Frontier {
    size: u64,
    nodes: Vec<Hash>,
}

/// The serialized form of a [`Frontier`]: `{"size": n, "nodes": ["<hex>", …]}`.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FrontierState {
    pub size: u64,
    pub nodes: Vec<Hash>,
}

impl TryFrom<FrontierState> for Frontier {
    type Error = MerkleError;
    fn try_from(state: FrontierState) -> Result<Self, MerkleError> {
        Frontier::from_parts(state.size, state.nodes)
    }
}

impl From<Frontier> for FrontierState {
    fn from(f: Frontier) -> Self {
        FrontierState {
            size: f.size,
            nodes: f.nodes,
        }
    }
}

impl std::fmt::Debug for Frontier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Frontier")
            .field("size", &self.size)
            .field("root", &self.root())
            .finish()
    }
}

impl Frontier {
    pub fn new() -> Self {
        Self::default()
    }

    /// Restores a frontier; the node count must be the number of set bits of `size`.
    pub fn from_parts(size: u64, nodes: Vec<Hash>) -> Result<Self, MerkleError> {
        if size > MAX_TREE_SIZE {
            return Err(MerkleError::InvalidFrontier("size exceeds the largest tree"));
        }
        if nodes.len() != size.count_ones() as usize {
            return Err(MerkleError::InvalidFrontier("node count does not match the size"));
        }
        Ok(Self { size, nodes })
    }

    /// Rebuilds the frontier of the first `size` leaves from stored perfect nodes (e.g. when the
    /// persisted state is lost, or to cross-check it).
    pub fn from_source<S: HashSource>(source: &S, size: u64) -> Result<Self, S::Error> {
        if size > MAX_TREE_SIZE {
            return Err(MerkleError::TreeFull { max: MAX_TREE_SIZE }.into());
        }
        let nodes = Self::node_ids(size)
            .into_iter()
            .map(|id| source.node_hash(id))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self { size, nodes })
    }

    /// The perfect nodes a frontier of `size` holds, largest first.
    pub fn node_ids(size: u64) -> Vec<NodeId> {
        range_nodes(0, size)
    }

    pub fn size(&self) -> u64 {
        self.size
    }

    pub fn nodes(&self) -> &[Hash] {
        &self.nodes
    }

    pub fn state(&self) -> FrontierState {
        self.clone().into()
    }

    /// Appends one leaf hash.
    pub fn append(&mut self, leaf: Hash) -> Result<(), MerkleError> {
        self.append_with(leaf, |_, _| {})
    }

    /// Appends one leaf hash and reports every perfect node it completes, the leaf itself (level 0)
    /// first, then each parent up to the largest one finished by this leaf.
    pub fn append_with(
        &mut self,
        leaf: Hash,
        mut completed: impl FnMut(NodeId, &Hash),
    ) -> Result<(), MerkleError> {
        if self.size >= MAX_TREE_SIZE {
            return Err(MerkleError::TreeFull { max: MAX_TREE_SIZE });
        }
        let index = self.size;
        completed(NodeId::leaf(index), &leaf);
        let mut acc = leaf;
        let mut level = 0u8;
        while (index >> level) & 1 == 1 {
            let Some(left) = self.nodes.pop() else {
                // Unreachable: from_parts keeps one node per set bit of the size.
                return Err(MerkleError::InvalidFrontier("node count does not match the size"));
            };
            acc = node_hash(&left, &acc);
            level += 1;
            completed(
                NodeId {
                    level,
                    index: index >> level,
                },
                &acc,
            );
        }
        self.nodes.push(acc);
        self.size += 1;
        Ok(())
    }

    /// The root of the tree of all leaves appended so far.
    pub fn root(&self) -> Hash {
        let Some((last, rest)) = self.nodes.split_last() else {
            return empty_root();
        };
        let mut acc = *last;
        for n in rest.iter().rev() {
            acc = node_hash(n, &acc);
        }
        acc
    }
}

/// Every perfect node of a tree, in memory: the [`HashSource`] for tests, benchmarks, and exports that
/// load a log's leaf hashes once. About 64 bytes per leaf.
#[derive(Clone, Default)]
pub struct MemoryTree {
    levels: Vec<Vec<Hash>>,
    frontier: Frontier,
}

impl std::fmt::Debug for MemoryTree {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryTree").field("size", &self.size()).finish()
    }
}

impl MemoryTree {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn from_leaves(leaves: impl IntoIterator<Item = Hash>) -> Result<Self, MerkleError> {
        let mut tree = Self::new();
        for leaf in leaves {
            tree.push(leaf)?;
        }
        Ok(tree)
    }

    pub fn push(&mut self, leaf: Hash) -> Result<(), MerkleError> {
        let levels = &mut self.levels;
        self.frontier.append_with(leaf, |id, hash| {
            let level = usize::from(id.level);
            if levels.len() <= level {
                levels.resize_with(level + 1, Vec::new);
            }
            levels[level].push(*hash);
        })
    }

    pub fn size(&self) -> u64 {
        self.frontier.size()
    }

    pub fn root(&self) -> Hash {
        self.frontier.root()
    }

    pub fn frontier(&self) -> &Frontier {
        &self.frontier
    }

    pub fn leaf(&self, index: u64) -> Option<Hash> {
        self.levels
            .first()
            .and_then(|l| usize::try_from(index).ok().and_then(|i| l.get(i)))
            .copied()
    }

    /// The root of the first `size` leaves.
    pub fn root_at(&self, size: u64) -> Result<Hash, MerkleError> {
        if size > self.size() {
            return Err(MerkleError::IndexOutOfRange {
                index: size,
                size: self.size(),
            });
        }
        root_from_source(self, size)
    }

    pub fn inclusion_proof(&self, index: u64, size: u64) -> Result<Vec<Hash>, MerkleError> {
        if size > self.size() {
            return Err(MerkleError::IndexOutOfRange {
                index: size,
                size: self.size(),
            });
        }
        inclusion_proof(self, index, size)
    }

    pub fn consistency_proof(&self, first: u64, second: u64) -> Result<Vec<Hash>, MerkleError> {
        if second > self.size() {
            return Err(MerkleError::IndexOutOfRange {
                index: second,
                size: self.size(),
            });
        }
        consistency_proof(self, first, second)
    }
}

impl HashSource for MemoryTree {
    type Error = MerkleError;
    fn node_hash(&self, id: NodeId) -> Result<Hash, MerkleError> {
        self.levels
            .get(usize::from(id.level))
            .and_then(|l| usize::try_from(id.index).ok().and_then(|i| l.get(i)))
            .copied()
            .ok_or(MerkleError::MissingNode(id))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hash::leaf_hash;
    use proptest::prelude::*;

    fn hx(s: &str) -> Hash {
        Hash::from_hex(s).unwrap()
    }

    // --- naive reference: RFC 9162 §2.1.1-2.1.4.1 recursions, written as in the RFC ---------------

    fn mth(leaves: &[Hash]) -> Hash {
        match leaves.len() {
            0 => empty_root(),
            1 => leaves[0],
            n => {
                let k = split_point(n as u64) as usize;
                node_hash(&mth(&leaves[..k]), &mth(&leaves[k..]))
            }
        }
    }

    fn path(m: usize, leaves: &[Hash]) -> Vec<Hash> {
        let n = leaves.len();
        if n <= 1 {
            return vec![];
        }
        let k = split_point(n as u64) as usize;
        if m < k {
            let mut p = path(m, &leaves[..k]);
            p.push(mth(&leaves[k..]));
            p
        } else {
            let mut p = path(m - k, &leaves[k..]);
            p.push(mth(&leaves[..k]));
            p
        }
    }

    fn subproof(m: usize, leaves: &[Hash], b: bool) -> Vec<Hash> {
        let n = leaves.len();
        if m == n {
            return if b { vec![] } else { vec![mth(leaves)] };
        }
        let k = split_point(n as u64) as usize;
        if m <= k {
            let mut p = subproof(m, &leaves[..k], b);
            p.push(mth(&leaves[k..]));
            p
        } else {
            let mut p = subproof(m - k, &leaves[k..], false);
            p.push(mth(&leaves[..k]));
            p
        }
    }

    fn leaves(n: usize) -> Vec<Hash> {
        (0..n).map(|i| leaf_hash(&(i as u64).to_be_bytes())).collect()
    }

    // --- RFC 6962 reference vectors (certificate-transparency / transparency-dev/merkle) ----------

    fn ct_leaves() -> Vec<Hash> {
        [
            "",
            "00",
            "10",
            "2021",
            "3031",
            "40414243",
            "5051525354555657",
            "606162636465666768696a6b6c6d6e6f",
        ]
        .iter()
        .map(|h| leaf_hash(&hex::decode(h).unwrap()))
        .collect()
    }

    const CT_ROOTS: [&str; 8] = [
        "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
        "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
        "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
        "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
        "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
        "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
        "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
    ];

    #[test]
    fn rfc6962_roots() {
        let l = ct_leaves();
        assert_eq!(root(&[]), empty_root());
        for (n, want) in CT_ROOTS.iter().enumerate() {
            assert_eq!(root(&l[..=n]), hx(want), "size {}", n + 1);
            assert_eq!(mth(&l[..=n]), hx(want), "naive size {}", n + 1);
        }
    }

    #[test]
    fn rfc6962_inclusion_vectors() {
        // (index, size, proof): testonly/reference_test.go TestRefInclusionProof (0-based).
        let cases: Vec<(u64, u64, Vec<&str>)> = vec![
            (0, 1, vec![]),
            (
                0,
                2,
                vec!["96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7"],
            ),
            (
                1,
                2,
                vec!["6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d"],
            ),
            (
                2,
                3,
                vec!["fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125"],
            ),
            (
                1,
                5,
                vec![
                    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
                    "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                    "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
                ],
            ),
            (
                0,
                8,
                vec![
                    "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
                    "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                    "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
                ],
            ),
            (
                5,
                8,
                vec![
                    "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
                    "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
                    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
                ],
            ),
        ];
        let l = ct_leaves();
        let tree = MemoryTree::from_leaves(l.iter().copied()).unwrap();
        for (index, size, want) in cases {
            let want: Vec<Hash> = want.into_iter().map(hx).collect();
            assert_eq!(tree.inclusion_proof(index, size).unwrap(), want, "{index}/{size}");
            let r = hx(CT_ROOTS[size as usize - 1]);
            verify_inclusion(&l[index as usize], index, size, &want, &r).unwrap();
        }
    }

    #[test]
    fn rfc6962_consistency_vectors() {
        let cases: Vec<(u64, u64, Vec<&str>)> = vec![
            (1, 1, vec![]),
            (
                1,
                8,
                vec![
                    "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
                    "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                    "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
                ],
            ),
            (
                6,
                8,
                vec![
                    "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
                    "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
                    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
                ],
            ),
            (
                2,
                5,
                vec![
                    "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                    "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
                ],
            ),
        ];
        let tree = MemoryTree::from_leaves(ct_leaves()).unwrap();
        for (m, n, want) in cases {
            let want: Vec<Hash> = want.into_iter().map(hx).collect();
            assert_eq!(tree.consistency_proof(m, n).unwrap(), want, "{m}->{n}");
            let (rm, rn) = (hx(CT_ROOTS[m as usize - 1]), hx(CT_ROOTS[n as usize - 1]));
            verify_consistency(m, n, &rm, &rn, &want).unwrap();
            if m != n {
                assert!(verify_consistency(m, n, &rn, &rm, &want).is_err());
            }
        }
    }

    /// Golden roots of transparency-dev/merkle compact/range_test.go (TestGetRootHashGolden): leaf i's
    /// data is the two bytes `[i & 0xff, (i >> 8) & 0xff]`; roots in base64.
    #[test]
    fn compact_range_golden_roots() {
        use base64::Engine as _;
        let golden = [
            (10u64, "VjWMPSYNtCuCNlF/RLnQy6HcwSk6CIipfxm+hettA+4="),
            (15, "j4SulYmocFuxdeyp12xXCIgK6PekBcxzAIj4zbQzNEI="),
            (16, "c+4Uc6BCMOZf/v3NZK1kqTUJe+bBoFtOhP+P3SayKRE="),
            (100, "dUh9hYH88p0CMoHkdr1wC2szbhcLAXOejWpINIooKUY="),
            (255, "SmdsuKUqiod3RX2jyF2M6JnbdE4QuTwwipfAowI4/i0="),
            (256, "qFI0t/tZ1MdOYgyPpPzHFiZVw86koScXy9q3FU5casA="),
            (1000, "RXrgb8xHd55Y48FbfotJwCbV82Kx22LZfEbmBGAvwlQ="),
            (4095, "cWRFdQhPcjn9WyBXE/r1f04ejxIm5lvg40DEpRBVS0w="),
            (4096, "6uU/phfHg1n/GksYT6TO9aN8EauMCCJRl3dIK0HDs2M="),
            (10000, "VZcav65F9haHVRk3wre2axFoBXRNeUh/1d9d5FQfxIg="),
            (65535, "iPuVYJhP6SEE4gUFp8qbafd2rYv9YTCDYqAxCj8HdLM="),
        ];
        let mut f = Frontier::new();
        let mut tree = MemoryTree::new();
        for (size, want) in golden {
            while f.size() < size {
                let i = f.size();
                let h = leaf_hash(&[(i & 0xff) as u8, ((i >> 8) & 0xff) as u8]);
                f.append(h).unwrap();
                tree.push(h).unwrap();
            }
            let want = base64::engine::general_purpose::STANDARD.decode(want).unwrap();
            assert_eq!(f.root().0.as_slice(), want.as_slice(), "size {size}");
            assert_eq!(tree.root_at(size).unwrap().0.as_slice(), want.as_slice());
        }
    }

    #[test]
    fn node_ranges() {
        assert_eq!(NodeId::new(3, 2).leaf_range(), Some((16, 24)));
        assert_eq!(NodeId::leaf(5).leaf_range(), Some((5, 6)));
        assert_eq!(NodeId::new(70, 0).leaf_range(), None);
        assert_eq!(NodeId::new(40, u64::MAX).leaf_range(), None);
        assert_eq!(inclusion_proof_len(3, 0), 0);
        assert_eq!(consistency_proof_len(0, 9), 0);
        assert_eq!(consistency_proof_len(9, 9), 0);
    }

    #[test]
    fn edge_cases() {
        let l = leaves(5);
        let r5 = root(&l);
        assert_eq!(
            verify_inclusion(&l[0], 5, 5, &[], &r5),
            Err(MerkleError::IndexOutOfRange { index: 5, size: 5 })
        );
        assert!(verify_inclusion(&l[0], 0, 0, &[], &empty_root()).is_err());
        // size 1: the leaf is the root, the proof empty.
        verify_inclusion(&l[0], 0, 1, &[], &l[0]).unwrap();
        assert!(verify_inclusion(&l[0], 0, 1, &[l[1]], &l[0]).is_err());
        // m == n
        verify_consistency(5, 5, &r5, &r5, &[]).unwrap();
        assert!(verify_consistency(5, 5, &r5, &r5, &[r5]).is_err());
        assert!(verify_consistency(5, 5, &r5, &l[0], &[]).is_err());
        // m == 0
        verify_consistency(0, 5, &empty_root(), &r5, &[]).unwrap();
        assert!(verify_consistency(0, 5, &r5, &r5, &[]).is_err());
        assert!(verify_consistency(0, 5, &empty_root(), &r5, &[r5]).is_err());
        verify_consistency(0, 0, &empty_root(), &empty_root(), &[]).unwrap();
        // m > n
        assert!(verify_consistency(6, 5, &r5, &r5, &[]).is_err());
        assert!(consistency_plan(6, 5).is_err());
        assert!(inclusion_plan(5, 5).is_err());
    }

    #[test]
    fn frontier_state_round_trips_and_is_validated() {
        let mut f = Frontier::new();
        for h in leaves(13) {
            f.append(h).unwrap();
        }
        let json = serde_json::to_string(&f).unwrap();
        let back: Frontier = serde_json::from_str(&json).unwrap();
        assert_eq!(back, f);
        assert_eq!(back.root(), root(&leaves(13)));
        let bad = serde_json::json!({"size": 13, "nodes": [Hash::default()]});
        assert!(serde_json::from_value::<Frontier>(bad).is_err());
        assert!(Frontier::from_parts(MAX_TREE_SIZE + 1, vec![]).is_err());
    }

    #[test]
    fn frontier_reports_completed_nodes_and_rebuilds_from_them() {
        let l = leaves(23);
        let tree = MemoryTree::from_leaves(l.iter().copied()).unwrap();
        for size in 0..=23u64 {
            let f = Frontier::from_source(&tree, size).unwrap();
            assert_eq!(f.root(), mth(&l[..size as usize]));
            assert_eq!(f.size(), size);
        }
        // The nodes reported are exactly the perfect subtrees.
        let mut f = Frontier::new();
        let mut seen = Vec::new();
        for h in &l[..8] {
            f.append_with(*h, |id, hash| seen.push((id, *hash))).unwrap();
        }
        assert!(seen.contains(&(NodeId::new(3, 0), mth(&l[..8]))));
        assert!(seen.contains(&(NodeId::new(1, 3), mth(&l[6..8]))));
        assert_eq!(seen.len(), 15);
    }

    #[test]
    fn plans_batch_their_node_ids() {
        let plan = inclusion_plan(5, 13).unwrap();
        let ids = plan.node_ids();
        assert!(ids.windows(2).all(|w| w[0] < w[1]));
        let tree = MemoryTree::from_leaves(leaves(13)).unwrap();
        let fetched: std::collections::HashMap<NodeId, Hash> =
            ids.iter().map(|id| (*id, tree.node_hash(*id).unwrap())).collect();
        let proof = plan
            .assemble(|id| fetched.get(&id).copied().ok_or(MerkleError::MissingNode(id)))
            .unwrap();
        assert_eq!(proof, tree.inclusion_proof(5, 13).unwrap());
    }

    #[test]
    fn exhaustive_small_trees() {
        // Every (index, size) and (m, n) up to 40 leaves, against the naive recursion.
        let l = leaves(40);
        let tree = MemoryTree::from_leaves(l.iter().copied()).unwrap();
        for n in 1..=40usize {
            let r = mth(&l[..n]);
            assert_eq!(tree.root_at(n as u64).unwrap(), r);
            for i in 0..n {
                let p = tree.inclusion_proof(i as u64, n as u64).unwrap();
                assert_eq!(p, path(i, &l[..n]), "path {i}/{n}");
                assert_eq!(p.len(), inclusion_proof_len(i as u64, n as u64));
                verify_inclusion(&l[i], i as u64, n as u64, &p, &r).unwrap();
            }
            for m in 1..n {
                let p = tree.consistency_proof(m as u64, n as u64).unwrap();
                assert_eq!(p, subproof(m, &l[..n], true), "proof {m}/{n}");
                assert_eq!(p.len(), consistency_proof_len(m as u64, n as u64));
                verify_consistency(m as u64, n as u64, &mth(&l[..m]), &r, &p).unwrap();
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// A valid proof verifies; every mutation of the proof, the leaf, the index, the size or the
        /// root is refused. A changed size is paired with the *true* root of that size (a root
        /// alone does not say its size: that is what the signed checkpoint binds), and a mutation
        /// that happens to state another true fact is not a forgery.
        #[test]
        fn inclusion_proofs_verify_and_every_mutation_fails(size in 1u64..=300, seed in any::<u64>()) {
            let l = leaves(2 * size as usize + 2);
            let tree = MemoryTree::from_leaves(l.iter().copied()).unwrap();
            let index = seed % size;
            let leaf = l[index as usize];
            let r = tree.root_at(size).unwrap();
            let p = tree.inclusion_proof(index, size).unwrap();
            prop_assert_eq!(&p, &path(index as usize, &l[..size as usize]));
            verify_inclusion(&leaf, index, size, &p, &r).unwrap();

            let true_root = |n: u64| tree.root_at(n).unwrap_or_default();
            let genuine = |h: &Hash, i: u64, n: u64, q: &[Hash], root: &Hash| {
                i < n && n <= tree.size() && tree.leaf(i) == Some(*h) && root == &true_root(n)
                    && tree.inclusion_proof(i, n).map(|g| g == q).unwrap_or(false)
            };
            let mut cases: Vec<(Hash, u64, u64, Vec<Hash>, Hash, String)> = Vec::new();
            for i2 in [index.wrapping_sub(1), index + 1, index ^ 1, index ^ 2, size, u64::MAX] {
                cases.push((leaf, i2, size, p.clone(), r, format!("index {i2}")));
            }
            for n2 in [size - 1, size + 1, size * 2, size / 2, 0] {
                cases.push((leaf, index, n2, p.clone(), true_root(n2), format!("size {n2}")));
            }
            for bit in [0usize, 7, 130, 255] {
                let mut r2 = r;
                r2.0[bit / 8] ^= 1 << (bit % 8);
                cases.push((leaf, index, size, p.clone(), r2, format!("root bit {bit}")));
                let mut l2 = leaf;
                l2.0[bit / 8] ^= 1 << (bit % 8);
                cases.push((l2, index, size, p.clone(), r, format!("leaf bit {bit}")));
            }
            cases.push((leaf, index, size, p.clone(), empty_root(), "empty root".into()));
            let mut q = p.clone(); q.push(Hash::default());
            cases.push((leaf, index, size, q, r, "trailing garbage".into()));
            let mut q = p.clone(); q.push(r);
            cases.push((leaf, index, size, q, r, "trailing root".into()));
            let mut q = vec![Hash::default()]; q.extend_from_slice(&p);
            cases.push((leaf, index, size, q, r, "preceding garbage".into()));
            for i in 0..p.len() {
                for bit in [0usize, 3, 100, 255] {
                    let mut q = p.clone();
                    q[i].0[bit / 8] ^= 1 << (bit % 8);
                    cases.push((leaf, index, size, q, r, format!("proof[{i}] bit {bit}")));
                }
                let mut q = p.clone(); q.remove(i);
                cases.push((leaf, index, size, q, r, format!("removed {i}")));
                let mut q = p.clone(); q.insert(i, leaf);
                cases.push((leaf, index, size, q, r, format!("inserted at {i}")));
            }
            if p.len() > 1 {
                let mut q = p.clone(); q.swap(0, p.len() - 1);
                cases.push((leaf, index, size, q, r, "swapped".into()));
            }
            for (h, i, n, q, root, what) in cases {
                if genuine(&h, i, n, &q, &root) {
                    continue;
                }
                prop_assert!(
                    verify_inclusion(&h, i, n, &q, &root).is_err(),
                    "mutation {} accepted (index {}, size {})", what, index, size
                );
            }
        }

        /// Same for consistency proofs. Changed sizes come with the true roots of those sizes.
        #[test]
        fn consistency_proofs_verify_and_every_mutation_fails(n in 1u64..=300, seed in any::<u64>()) {
            let l = leaves(2 * n as usize + 2);
            let tree = MemoryTree::from_leaves(l.iter().copied()).unwrap();
            let m = seed % (n + 1);
            let true_root = |k: u64| tree.root_at(k).unwrap_or_default();
            let (rm, rn) = (true_root(m), true_root(n));
            let p = tree.consistency_proof(m, n).unwrap();
            if m > 0 {
                prop_assert_eq!(&p, &subproof(m as usize, &l[..n as usize], true));
            }
            verify_consistency(m, n, &rm, &rn, &p).unwrap();

            // True statements: proofs the tree itself produces (for m2 = 0 the second root is
            // unconstrained: every tree extends the empty one).
            let genuine = |m2: u64, n2: u64, r1: &Hash, r2: &Hash, q: &[Hash]| {
                m2 <= n2 && n2 <= tree.size() && *r1 == true_root(m2)
                    && (m2 == 0 || *r2 == true_root(n2))
                    && tree.consistency_proof(m2, n2).map(|g| g == q).unwrap_or(false)
            };
            let mut cases: Vec<(u64, u64, Hash, Hash, Vec<Hash>, String)> = Vec::new();
            for (m2, n2) in [
                (m + 1, n), (m.wrapping_sub(1), n), (m, n + 1), (m, n.wrapping_sub(1)),
                (m ^ 2, n), (m, n * 2), (m / 2, n), (n, m), (m, 0),
            ] {
                if m2 > 2 * n + 2 || n2 > 2 * n + 2 {
                    cases.push((m2, n2, rm, rn, p.clone(), format!("sizes {m2} {n2}")));
                } else {
                    cases.push((m2, n2, true_root(m2), true_root(n2), p.clone(), format!("sizes {m2} {n2}")));
                }
            }
            for bit in [0usize, 9, 200, 255] {
                let mut r1 = rm;
                r1.0[bit / 8] ^= 1 << (bit % 8);
                cases.push((m, n, r1, rn, p.clone(), format!("first root bit {bit}")));
                let mut r2 = rn;
                r2.0[bit / 8] ^= 1 << (bit % 8);
                cases.push((m, n, rm, r2, p.clone(), format!("second root bit {bit}")));
            }
            let mut q = p.clone(); q.push(Hash::default());
            cases.push((m, n, rm, rn, q, "trailing garbage".into()));
            let mut q = vec![Hash::default()]; q.extend_from_slice(&p);
            cases.push((m, n, rm, rn, q, "preceding garbage".into()));
            for i in 0..p.len() {
                for bit in [0usize, 9, 200, 255] {
                    let mut q = p.clone();
                    q[i].0[bit / 8] ^= 1 << (bit % 8);
                    cases.push((m, n, rm, rn, q, format!("proof[{i}] bit {bit}")));
                }
                let mut q = p.clone(); q.remove(i);
                cases.push((m, n, rm, rn, q, format!("removed {i}")));
                let mut q = p.clone(); q.insert(i, rm);
                cases.push((m, n, rm, rn, q, format!("inserted at {i}")));
            }
            for (m2, n2, r1, r2, q, what) in cases {
                if genuine(m2, n2, &r1, &r2, &q) {
                    continue;
                }
                prop_assert!(
                    verify_consistency(m2, n2, &r1, &r2, &q).is_err(),
                    "mutation {} accepted (m {}, n {})", what, m, n
                );
            }
        }

        #[test]
        fn frontier_equals_naive_root_at_every_size(n in 0usize..=300) {
            let l = leaves(n);
            let mut f = Frontier::new();
            prop_assert_eq!(f.root(), empty_root());
            for (i, h) in l.iter().enumerate() {
                f.append(*h).unwrap();
                prop_assert_eq!(f.root(), mth(&l[..=i]));
            }
            let back: Frontier = serde_json::from_str(&serde_json::to_string(&f).unwrap()).unwrap();
            prop_assert_eq!(back.root(), mth(&l));
        }
    }
}
