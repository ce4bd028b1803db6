//! RFC 6962 / RFC 9162 Merkle tree hashing for the audit log: leaf and node
//! hashes, tree heads, the compact range (right-edge frontier) of a growing
//! log, and inclusion and consistency proofs with their verifiers. Pure: no
//! IO, no clock, no randomness.
//!
//! Proof generation follows the recursive definitions of RFC 9162 §2.1.3.1
//! (PATH) and §2.1.4.1 (SUBPROOF) literally; verification follows the
//! iterative algorithms of §2.1.3.2 and §2.1.4.2 literally. The two are
//! written independently on purpose, so the tests can check one against the
//! other as well as against published vectors.
//!
//! What a proof does *not* prove: an inclusion or consistency proof binds a
//! root hash, not a tree size. For some pairs of sizes the verifier does
//! exactly the same hashing (for example leaf 0 of a 6-leaf tree and of a
//! 7-leaf tree), so the same proof and root verify for both. The size is
//! bound to the root by the signed checkpoint, which is why a verifier must
//! take both from one checkpoint, never the size from elsewhere.

use sha2::{Digest, Sha256};

/// A SHA-256 hash: of a leaf, of an interior node, or a tree head (the
/// store's type, so stored leaf hashes are these without conversion).
pub use crate::store::log::Hash;

/// RFC 6962 §2.1 domain separation: a leaf can never be read as a node.
const LEAF_PREFIX: u8 = 0x00;
const NODE_PREFIX: u8 = 0x01;

/// The largest tree a [`CompactRange`] is built from parts with. Tree sizes
/// are stored as SQLite INTEGERs (i64), and staying below 2^63 leaves 2^63
/// further appends before the u64 size could overflow, which no log reaches.
pub const MAX_TREE_SIZE: u64 = i64::MAX as u64;

/// Why a proof, or a frontier, was refused. Each variant names one check.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MerkleError {
    #[error("leaf index {index} is out of range for a tree of size {size}")]
    IndexOutOfRange { index: u64, size: u64 },
    #[error("old tree size {old_size} is greater than new tree size {new_size}")]
    OldSizeExceedsNewSize { old_size: u64, new_size: u64 },
    #[error("proof has {got} hashes where {expected} are expected")]
    WrongProofLength { got: usize, expected: usize },
    #[error("the inclusion proof does not lead to the expected root")]
    RootMismatch,
    #[error("the consistency proof does not lead to the old root")]
    OldRootMismatch,
    #[error("the consistency proof does not lead to the new root")]
    NewRootMismatch,
    #[error("a frontier of {hashes} hashes does not fit a tree of size {size}")]
    InvalidFrontier { size: u64, hashes: usize },
}

/// `H(0x00 || entry)`: the hash of one log entry as a tree leaf.
pub fn leaf_hash(entry: &[u8]) -> Hash {
    let mut h = Sha256::new();
    h.update([LEAF_PREFIX]);
    h.update(entry);
    h.finalize().into()
}

/// `H(0x01 || left || right)`: the hash of an interior node.
pub fn node_hash(left: &Hash, right: &Hash) -> Hash {
    let mut h = Sha256::new();
    h.update([NODE_PREFIX]);
    h.update(left);
    h.update(right);
    h.finalize().into()
}

/// The root of the empty tree: SHA-256 of the empty string.
pub fn empty_root() -> Hash {
    Sha256::digest([]).into()
}

/// The largest power of two strictly less than `n`; `n` must be at least 2.
/// This is the `k` at which RFC 6962 §2.1 splits a tree of `n` leaves.
fn split(n: usize) -> usize {
    debug_assert!(n >= 2);
    1 << (usize::BITS - 1 - (n - 1).leading_zeros())
}

/// MTH(D[n]) over leaf hashes (RFC 6962 §2.1), for the empty tree too.
pub fn root(leaves: &[Hash]) -> Hash {
    if leaves.is_empty() {
        empty_root()
    } else {
        subtree_root(leaves)
    }
}

/// MTH of a non-empty run of leaves. Recursion depth is at most 64.
fn subtree_root(leaves: &[Hash]) -> Hash {
    match leaves {
        [] => empty_root(),
        [one] => *one,
        _ => {
            let k = split(leaves.len());
            node_hash(&subtree_root(&leaves[..k]), &subtree_root(&leaves[k..]))
        }
    }
}

/// The right edge of a growing tree: the roots of its perfect subtrees, one
/// per set bit of the size, largest (leftmost) first. Enough to append a
/// leaf and to compute the root in O(log n) hashes and memory, so the node
/// never needs the whole log in memory to sign a checkpoint.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CompactRange {
    size: u64,
    // Invariant: hashes.len() == size.count_ones().
    hashes: Vec<Hash>,
}

impl CompactRange {
    /// The frontier of the empty tree.
    pub fn new() -> Self {
        Self::default()
    }

    /// The frontier of the tree with these leaf hashes.
    pub fn from_leaves(leaves: &[Hash]) -> Self {
        let mut range = Self::new();
        for leaf in leaves {
            range.push(leaf);
        }
        range
    }

    /// Rebuilds a frontier from a stored size and [`hashes`](Self::hashes),
    /// refusing a list that cannot belong to a tree of that size.
    pub fn from_parts(size: u64, hashes: Vec<Hash>) -> Result<Self, MerkleError> {
        if size > MAX_TREE_SIZE || hashes.len() != size.count_ones() as usize {
            return Err(MerkleError::InvalidFrontier {
                size,
                hashes: hashes.len(),
            });
        }
        Ok(CompactRange { size, hashes })
    }

    /// Appends one leaf hash.
    pub fn push(&mut self, leaf: &Hash) {
        // Adding 1 to the size carries through its trailing one bits: each
        // carry merges the two perfect subtrees of that height into one.
        let mut merged = *leaf;
        let mut carry = self.size;
        while carry & 1 == 1 {
            // The invariant puts one hash here for every set bit; the `else`
            // is unreachable and only keeps this free of panics.
            let Some(left) = self.hashes.pop() else {
                break;
            };
            merged = node_hash(&left, &merged);
            carry >>= 1;
        }
        self.hashes.push(merged);
        self.size += 1;
    }

    /// The number of leaves.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The frontier hashes, leftmost (largest subtree) first.
    pub fn hashes(&self) -> &[Hash] {
        &self.hashes
    }

    /// MTH of the tree. The right edge folds from the smallest subtree up:
    /// for 7 leaves, H(h[0..4], H(h[4..6], h[6])), which is what the
    /// recursive definition gives, since each split point is the next set
    /// bit of the size.
    pub fn root(&self) -> Hash {
        let mut from_right = self.hashes.iter().rev();
        match from_right.next() {
            None => empty_root(),
            Some(last) => from_right.fold(*last, |acc, left| node_hash(left, &acc)),
        }
    }
}

/// The inclusion proof (audit path) of leaf `index` in the tree made of
/// `leaves`: RFC 9162 §2.1.3.1 PATH(m, D[n]). For a past tree of size `s`,
/// pass `&leaves[..s]`.
pub fn inclusion_proof(leaves: &[Hash], index: u64) -> Result<Vec<Hash>, MerkleError> {
    let size = leaves.len() as u64;
    let m = usize::try_from(index)
        .ok()
        .filter(|m| *m < leaves.len())
        .ok_or(MerkleError::IndexOutOfRange { index, size })?;
    let mut proof = Vec::new();
    path(m, leaves, &mut proof);
    Ok(proof)
}

/// PATH(m, D[n]), appending to `out` bottom-up. Each sibling subtree root is
/// hashed once, and siblings are disjoint, so this is O(n) hashing.
fn path(m: usize, leaves: &[Hash], out: &mut Vec<Hash>) {
    if leaves.len() <= 1 {
        return;
    }
    let k = split(leaves.len());
    if m < k {
        path(m, &leaves[..k], out);
        out.push(subtree_root(&leaves[k..]));
    } else {
        path(m - k, &leaves[k..], out);
        out.push(subtree_root(&leaves[..k]));
    }
}

/// The consistency proof from the tree of the first `old_size` leaves to
/// the tree made of all `leaves`: RFC 9162 §2.1.4.1 PROOF(m, D[n]). Empty
/// when `old_size` is 0 or equals the new size: any tree extends the empty
/// one, and a tree is consistent with itself.
pub fn consistency_proof(leaves: &[Hash], old_size: u64) -> Result<Vec<Hash>, MerkleError> {
    let new_size = leaves.len() as u64;
    if old_size > new_size {
        return Err(MerkleError::OldSizeExceedsNewSize { old_size, new_size });
    }
    let mut proof = Vec::new();
    if old_size == 0 || old_size == new_size {
        return Ok(proof);
    }
    // old_size < leaves.len(), so it fits a usize.
    let m = usize::try_from(old_size)
        .map_err(|_| MerkleError::OldSizeExceedsNewSize { old_size, new_size })?;
    subproof(m, leaves, true, &mut proof);
    Ok(proof)
}

/// SUBPROOF(m, D[n], b), appending to `out`. `complete` is the RFC's `b`:
/// true while the subtree being walked is the old tree's own root, whose
/// hash the verifier already holds and so is left out of the proof.
fn subproof(m: usize, leaves: &[Hash], complete: bool, out: &mut Vec<Hash>) {
    let n = leaves.len();
    if m == n {
        if !complete {
            out.push(subtree_root(leaves));
        }
        return;
    }
    // Here 0 < m < n, so n >= 2.
    let k = split(n);
    if m <= k {
        subproof(m, &leaves[..k], complete, out);
        out.push(subtree_root(&leaves[k..]));
    } else {
        subproof(m - k, &leaves[k..], false, out);
        out.push(subtree_root(&leaves[..k]));
    }
}

/// A run of leaves, `start..end` (0-based), whose subtree root is one hash
/// of a proof.
pub type Span = std::ops::Range<u64>;

/// The runs of leaves whose roots, in this order, are the inclusion proof
/// of `index` in the tree of `size` leaves: what [`inclusion_proof`] hashes,
/// without the leaves, so a node can compute each root by reading just that
/// run of its log.
pub fn inclusion_spans(index: u64, size: u64) -> Result<Vec<Span>, MerkleError> {
    if index >= size {
        return Err(MerkleError::IndexOutOfRange { index, size });
    }
    let mut out = Vec::new();
    path_spans(index, 0, size, &mut out);
    Ok(out)
}

/// PATH(m, D[start..start + n]) as spans (see [`path`]).
fn path_spans(m: u64, start: u64, n: u64, out: &mut Vec<Span>) {
    if n <= 1 {
        return;
    }
    let k = split64(n);
    if m < k {
        path_spans(m, start, k, out);
        out.push(start + k..start + n);
    } else {
        path_spans(m - k, start + k, n - k, out);
        out.push(start..start + k);
    }
}

/// The runs of leaves whose roots, in this order, are the consistency
/// proof from `old_size` to `new_size` (see [`consistency_proof`]).
pub fn consistency_spans(old_size: u64, new_size: u64) -> Result<Vec<Span>, MerkleError> {
    if old_size > new_size {
        return Err(MerkleError::OldSizeExceedsNewSize { old_size, new_size });
    }
    let mut out = Vec::new();
    if old_size > 0 && old_size < new_size {
        subproof_spans(old_size, 0, new_size, true, &mut out);
    }
    Ok(out)
}

/// SUBPROOF(m, D[start..start + n], b) as spans (see [`subproof`]).
fn subproof_spans(m: u64, start: u64, n: u64, complete: bool, out: &mut Vec<Span>) {
    if m == n {
        if !complete {
            out.push(start..start + n);
        }
        return;
    }
    let k = split64(n);
    if m <= k {
        subproof_spans(m, start, k, complete, out);
        out.push(start + k..start + n);
    } else {
        subproof_spans(m - k, start + k, n - k, false, out);
        out.push(start..start + k);
    }
}

/// [`split`] for sizes beyond `usize`.
fn split64(n: u64) -> u64 {
    debug_assert!(n >= 2);
    1 << (u64::BITS - 1 - (n - 1).leading_zeros())
}

/// The number of hashes in the inclusion proof of `index` in a tree of
/// `size` leaves (`index < size`): one per level below the point where the
/// paths to `index` and to the last leaf part (`inner`), plus one per
/// left sibling above it (`border`).
fn inclusion_proof_len(index: u64, size: u64) -> usize {
    let inner = u64::BITS - (index ^ (size - 1)).leading_zeros();
    let border = index.checked_shr(inner).unwrap_or(0).count_ones();
    (inner + border) as usize
}

/// The number of hashes in the consistency proof from `old_size` to
/// `new_size` (`0 < old_size < new_size`): the inclusion proof length of
/// the old tree's last leaf, less the levels inside the old tree's
/// rightmost perfect subtree, plus that subtree's own root unless the old
/// tree is a perfect tree, whose root the verifier already holds.
fn consistency_proof_len(old_size: u64, new_size: u64) -> usize {
    let shift = old_size.trailing_zeros();
    let last = old_size - 1;
    let inner = u64::BITS - (last ^ (new_size - 1)).leading_zeros();
    let border = last.checked_shr(inner).unwrap_or(0).count_ones();
    let seed = u32::from(!old_size.is_power_of_two());
    (seed + inner.saturating_sub(shift) + border) as usize
}

/// Verifies that `leaf` (a leaf hash) is at `index` in the tree of `size`
/// leaves whose root is `root`: RFC 9162 §2.1.3.2, after a length check
/// that names the expected length.
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
    let wrong_length = MerkleError::WrongProofLength {
        got: proof.len(),
        expected,
    };
    if proof.len() != expected {
        return Err(wrong_length);
    }
    // Steps 2 and 3.
    let mut f_n = index;
    let mut s_n = size - 1;
    let mut r = *leaf;
    // Step 4.
    for p in proof {
        // 4a.
        if s_n == 0 {
            return Err(wrong_length);
        }
        // 4b.
        if f_n & 1 == 1 || f_n == s_n {
            r = node_hash(p, &r);
            if f_n & 1 == 0 {
                while f_n & 1 == 0 && f_n != 0 {
                    f_n >>= 1;
                    s_n >>= 1;
                }
            }
        } else {
            r = node_hash(&r, p);
        }
        // 4c.
        f_n >>= 1;
        s_n >>= 1;
    }
    // Step 5.
    if s_n != 0 {
        return Err(wrong_length);
    }
    if r != *root {
        return Err(MerkleError::RootMismatch);
    }
    Ok(())
}

/// Verifies that the tree of `new_size` leaves with root `new_root` extends
/// the tree of `old_size` leaves with root `old_root`: RFC 9162 §2.1.4.2,
/// after a length check that names the expected length.
///
/// The trivial cases follow the usual convention, strictly: equal sizes
/// need an empty proof and equal roots; old size 0 needs an empty proof
/// and `old_root` equal to [`empty_root`] (a checkpoint of the empty tree
/// claiming another root is refused, not waved through).
pub fn verify_consistency(
    old_size: u64,
    new_size: u64,
    old_root: &Hash,
    new_root: &Hash,
    proof: &[Hash],
) -> Result<(), MerkleError> {
    if old_size > new_size {
        return Err(MerkleError::OldSizeExceedsNewSize { old_size, new_size });
    }
    if old_size == 0 || old_size == new_size {
        if !proof.is_empty() {
            return Err(MerkleError::WrongProofLength {
                got: proof.len(),
                expected: 0,
            });
        }
        if old_size == 0 && *old_root != empty_root() {
            return Err(MerkleError::OldRootMismatch);
        }
        if old_size == new_size && old_root != new_root {
            return Err(MerkleError::NewRootMismatch);
        }
        return Ok(());
    }
    let expected = consistency_proof_len(old_size, new_size);
    let wrong_length = MerkleError::WrongProofLength {
        got: proof.len(),
        expected,
    };
    // Step 1 (an empty proof) is covered here, as expected >= 1.
    if proof.len() != expected || proof.is_empty() {
        return Err(wrong_length);
    }
    // Step 2: a perfect old tree's root is the first hash of the walk.
    let seed = old_size.is_power_of_two().then_some(old_root);
    let mut walk = seed.into_iter().chain(proof);
    // Step 3.
    let mut f_n = old_size - 1;
    let mut s_n = new_size - 1;
    // Step 4.
    while f_n & 1 == 1 {
        f_n >>= 1;
        s_n >>= 1;
    }
    // Step 5.
    let Some(first) = walk.next() else {
        return Err(wrong_length);
    };
    let mut fr = *first;
    let mut sr = *first;
    // Step 6.
    for c in walk {
        // 6a.
        if s_n == 0 {
            return Err(wrong_length);
        }
        // 6b.
        if f_n & 1 == 1 || f_n == s_n {
            fr = node_hash(c, &fr);
            sr = node_hash(c, &sr);
            if f_n & 1 == 0 {
                while f_n & 1 == 0 && f_n != 0 {
                    f_n >>= 1;
                    s_n >>= 1;
                }
            }
        } else {
            sr = node_hash(&sr, c);
        }
        // 6c.
        f_n >>= 1;
        s_n >>= 1;
    }
    // Step 7.
    if s_n != 0 {
        return Err(wrong_length);
    }
    if fr != *old_root {
        return Err(MerkleError::OldRootMismatch);
    }
    if sr != *new_root {
        return Err(MerkleError::NewRootMismatch);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spans_name_exactly_the_subtrees_the_proofs_hash() {
        let leaves: Vec<Hash> = (0u32..70).map(|i| leaf_hash(&i.to_be_bytes())).collect();
        let roots = |spans: Vec<Span>| -> Vec<Hash> {
            spans
                .into_iter()
                .map(|s| root(&leaves[s.start as usize..s.end as usize]))
                .collect()
        };
        for size in 1..=leaves.len() {
            let tree = &leaves[..size];
            for index in 0..size as u64 {
                assert_eq!(
                    roots(inclusion_spans(index, size as u64).unwrap()),
                    inclusion_proof(tree, index).unwrap(),
                    "inclusion of {index} in {size}"
                );
            }
            for old in 0..=size as u64 {
                assert_eq!(
                    roots(consistency_spans(old, size as u64).unwrap()),
                    consistency_proof(tree, old).unwrap(),
                    "consistency {old} → {size}"
                );
            }
        }
        assert!(inclusion_spans(5, 5).is_err());
        assert!(consistency_spans(6, 5).is_err());
        // Far beyond memory: the spans are still computed, and cover the
        // tree without overlap.
        let big = inclusion_spans(123_456_789_012, 1 << 40).unwrap();
        assert_eq!(
            big.iter().map(|s| s.end - s.start).sum::<u64>(),
            (1 << 40) - 1
        );
    }
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    fn leaves(n: u64) -> Vec<Hash> {
        (0..n).map(|i| leaf_hash(&i.to_be_bytes())).collect()
    }

    fn random_leaves(rng: &mut StdRng, n: u64) -> Vec<Hash> {
        (0..n)
            .map(|_| {
                let mut entry = [0u8; 16];
                rng.fill(&mut entry);
                leaf_hash(&entry)
            })
            .collect()
    }

    fn flip(h: &Hash, bit: usize) -> Hash {
        let mut out = *h;
        out[bit / 8] ^= 1 << (bit % 8);
        out
    }

    #[test]
    fn hashes_are_domain_separated() {
        assert_eq!(
            hex::encode(empty_root()),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        // The empty leaf is H(0x00), not H("").
        assert_eq!(
            hex::encode(leaf_hash(b"")),
            "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d"
        );
        let a = leaf_hash(b"a");
        let b = leaf_hash(b"b");
        let mut both = Vec::new();
        both.extend_from_slice(&a);
        both.extend_from_slice(&b);
        assert_ne!(node_hash(&a, &b), leaf_hash(&both));
        assert_ne!(node_hash(&a, &b), node_hash(&b, &a));
    }

    #[test]
    fn split_is_the_largest_power_of_two_below() {
        for (n, k) in [(2, 1), (3, 2), (4, 2), (5, 4), (8, 4), (9, 8), (300, 256)] {
            assert_eq!(split(n), k, "n = {n}");
        }
    }

    #[test]
    fn small_roots_follow_the_definition() {
        let l = leaves(3);
        assert_eq!(root(&[]), empty_root());
        assert_eq!(root(&l[..1]), l[0]);
        assert_eq!(root(&l[..2]), node_hash(&l[0], &l[1]));
        assert_eq!(root(&l), node_hash(&node_hash(&l[0], &l[1]), &l[2]));
    }

    #[test]
    fn compact_range_matches_the_root_at_every_size() {
        let all = leaves(300);
        let mut range = CompactRange::new();
        assert_eq!(range.root(), empty_root());
        for (i, leaf) in all.iter().enumerate() {
            range.push(leaf);
            let n = i + 1;
            assert_eq!(range.size(), n as u64);
            assert_eq!(range.hashes().len(), n.count_ones() as usize);
            assert_eq!(range.root(), root(&all[..n]), "size {n}");
            assert_eq!(CompactRange::from_leaves(&all[..n]), range);
        }
    }

    #[test]
    fn compact_range_rebuilds_from_its_parts() {
        let all = leaves(77);
        let range = CompactRange::from_leaves(&all[..70]);
        let mut again = CompactRange::from_parts(range.size(), range.hashes().to_vec()).unwrap();
        for leaf in &all[70..] {
            again.push(leaf);
        }
        assert_eq!(again.root(), root(&all));
        assert_eq!(
            CompactRange::from_parts(70, vec![[0; 32]; 2]),
            Err(MerkleError::InvalidFrontier {
                size: 70,
                hashes: 2
            })
        );
        assert!(CompactRange::from_parts(0, vec![[0; 32]]).is_err());
        assert!(CompactRange::from_parts(u64::MAX, vec![[0; 32]; 64]).is_err());
        assert_eq!(
            CompactRange::from_parts(0, vec![]).unwrap().root(),
            empty_root()
        );
    }

    #[test]
    fn proofs_refuse_out_of_range_arguments() {
        let l = leaves(5);
        assert_eq!(
            inclusion_proof(&l, 5),
            Err(MerkleError::IndexOutOfRange { index: 5, size: 5 })
        );
        assert_eq!(
            inclusion_proof(&[], 0),
            Err(MerkleError::IndexOutOfRange { index: 0, size: 0 })
        );
        assert!(inclusion_proof(&l, u64::MAX).is_err());
        assert_eq!(
            consistency_proof(&l, 6),
            Err(MerkleError::OldSizeExceedsNewSize {
                old_size: 6,
                new_size: 5
            })
        );
        assert_eq!(consistency_proof(&l, 0), Ok(vec![]));
        assert_eq!(consistency_proof(&l, 5), Ok(vec![]));
        assert_eq!(consistency_proof(&[], 0), Ok(vec![]));
        assert_eq!(inclusion_proof(&l[..1], 0), Ok(vec![]));
    }

    #[test]
    fn verifiers_name_what_is_wrong() {
        let l = leaves(5);
        let r = root(&l);
        let proof = inclusion_proof(&l, 2).unwrap();
        assert_eq!(verify_inclusion(&l[2], 2, 5, &proof, &r), Ok(()));
        assert_eq!(
            verify_inclusion(&l[2], 5, 5, &proof, &r),
            Err(MerkleError::IndexOutOfRange { index: 5, size: 5 })
        );
        assert_eq!(
            verify_inclusion(&l[2], 0, 0, &[], &empty_root()),
            Err(MerkleError::IndexOutOfRange { index: 0, size: 0 })
        );
        assert_eq!(
            verify_inclusion(&l[2], 2, 5, &proof[..2], &r),
            Err(MerkleError::WrongProofLength {
                got: 2,
                expected: 3
            })
        );
        assert_eq!(
            verify_inclusion(&l[3], 2, 5, &proof, &r),
            Err(MerkleError::RootMismatch)
        );

        let old = root(&l[..3]);
        let proof = consistency_proof(&l, 3).unwrap();
        assert_eq!(verify_consistency(3, 5, &old, &r, &proof), Ok(()));
        assert_eq!(
            verify_consistency(5, 3, &old, &r, &proof),
            Err(MerkleError::OldSizeExceedsNewSize {
                old_size: 5,
                new_size: 3
            })
        );
        assert_eq!(
            verify_consistency(3, 5, &r, &r, &proof),
            Err(MerkleError::OldRootMismatch)
        );
        assert_eq!(
            verify_consistency(3, 5, &old, &old, &proof),
            Err(MerkleError::NewRootMismatch)
        );
        assert_eq!(
            verify_consistency(3, 5, &old, &r, &[]),
            Err(MerkleError::WrongProofLength {
                got: 0,
                expected: proof.len()
            })
        );
    }

    #[test]
    fn trivial_consistency_is_strict() {
        let l = leaves(4);
        let r = root(&l);
        let e = empty_root();
        assert_eq!(verify_consistency(0, 0, &e, &e, &[]), Ok(()));
        assert_eq!(verify_consistency(0, 4, &e, &r, &[]), Ok(()));
        assert_eq!(verify_consistency(4, 4, &r, &r, &[]), Ok(()));
        assert_eq!(
            verify_consistency(0, 4, &r, &r, &[]),
            Err(MerkleError::OldRootMismatch)
        );
        assert_eq!(
            verify_consistency(0, 0, &r, &r, &[]),
            Err(MerkleError::OldRootMismatch)
        );
        assert_eq!(
            verify_consistency(4, 4, &r, &e, &[]),
            Err(MerkleError::NewRootMismatch)
        );
        assert_eq!(
            verify_consistency(4, 4, &r, &r, &[e]),
            Err(MerkleError::WrongProofLength {
                got: 1,
                expected: 0
            })
        );
        assert_eq!(
            verify_consistency(0, 4, &e, &r, &[e]),
            Err(MerkleError::WrongProofLength {
                got: 1,
                expected: 0
            })
        );
    }

    /// Documents the limit stated in the module doc: a proof binds a root,
    /// not a size. These pairs of sizes hash identically in the verifier.
    #[test]
    fn a_proof_does_not_bind_the_tree_size() {
        let l = leaves(6);
        let r = root(&l);
        let proof = inclusion_proof(&l, 0).unwrap();
        assert_eq!(verify_inclusion(&l[0], 0, 6, &proof, &r), Ok(()));
        assert_eq!(verify_inclusion(&l[0], 0, 7, &proof, &r), Ok(()));

        let l = leaves(5);
        let proof = consistency_proof(&l, 4).unwrap();
        let (old, new) = (root(&l[..4]), root(&l));
        assert_eq!(verify_consistency(4, 5, &old, &new, &proof), Ok(()));
        assert_eq!(verify_consistency(4, 6, &old, &new, &proof), Ok(()));
    }

    #[test]
    fn proof_lengths_match_the_recursive_definitions() {
        for n in 1..=130u64 {
            let l = leaves(n);
            for i in 0..n {
                let got = inclusion_proof(&l, i).unwrap().len();
                assert_eq!(inclusion_proof_len(i, n), got, "PATH({i}, {n})");
            }
            for m in 1..n {
                let got = consistency_proof(&l, m).unwrap().len();
                assert_eq!(consistency_proof_len(m, n), got, "PROOF({m}, {n})");
            }
        }
        // Extreme sizes do not overflow the length arithmetic.
        assert_eq!(inclusion_proof_len(0, u64::MAX), 64);
        assert_eq!(inclusion_proof_len(u64::MAX - 1, u64::MAX), 63);
        assert!(consistency_proof_len(u64::MAX - 1, u64::MAX) > 0);
        assert!(verify_inclusion(&[0; 32], 1 << 63, u64::MAX, &[], &[0; 32]).is_err());
    }

    // ---- Property tests -------------------------------------------------
    //
    // A deterministic random loop (StdRng with fixed seeds) instead of a
    // property-testing crate. Trees have distinct random leaves, so no two
    // subtrees share a hash by accident.
    //
    // Single-bit changes to a size or index are judged by an oracle rather
    // than assumed to fail, because some legitimately verify (see the
    // module doc). The oracle works on sizes alone: from the recursive
    // definitions it derives which subtree (leaf range) each proof hash
    // stands for, then writes the root(s) the verifier must compute as
    // expressions over the proof positions. The verifier must accept
    // exactly when the altered parameters give the same expressions as the
    // true ones, since then it does the same hashing.

    /// Leaf ranges `[lo, hi)` of PATH(m, D[lo..hi]).
    fn path_ranges(m: u64, lo: u64, hi: u64, out: &mut Vec<(u64, u64)>) {
        if hi - lo <= 1 {
            return;
        }
        let k = split((hi - lo) as usize) as u64;
        if m < k {
            path_ranges(m, lo, lo + k, out);
            out.push((lo + k, hi));
        } else {
            path_ranges(m - k, lo + k, hi, out);
            out.push((lo, lo + k));
        }
    }

    /// Leaf ranges of SUBPROOF(m, D[lo..hi], complete).
    fn subproof_ranges(m: u64, lo: u64, hi: u64, complete: bool, out: &mut Vec<(u64, u64)>) {
        if m == hi - lo {
            if !complete {
                out.push((lo, hi));
            }
            return;
        }
        let k = split((hi - lo) as usize) as u64;
        if m <= k {
            subproof_ranges(m, lo, lo + k, complete, out);
            out.push((lo + k, hi));
        } else {
            subproof_ranges(m - k, lo + k, hi, false, out);
            out.push((lo, lo + k));
        }
    }

    /// MTH of leaves `[lo, hi)` as an expression over named ranges.
    fn expr(lo: u64, hi: u64, named: &[((u64, u64), String)]) -> String {
        if let Some((_, name)) = named.iter().find(|(r, _)| *r == (lo, hi)) {
            return name.clone();
        }
        if hi - lo <= 1 {
            return "?".into();
        }
        let k = split((hi - lo) as usize) as u64;
        format!("({},{})", expr(lo, lo + k, named), expr(lo + k, hi, named))
    }

    fn proof_names(ranges: &[(u64, u64)]) -> Vec<((u64, u64), String)> {
        ranges
            .iter()
            .enumerate()
            .map(|(j, r)| (*r, format!("p{j}")))
            .collect()
    }

    /// The root expression the inclusion verifier computes for (index, size)
    /// with a proof of `len` hashes, or None if it must refuse outright.
    fn inclusion_expr(index: u64, size: u64, len: usize) -> Option<String> {
        if index >= size {
            return None;
        }
        let mut ranges = Vec::new();
        path_ranges(index, 0, size, &mut ranges);
        if ranges.len() != len {
            return None;
        }
        let mut named = proof_names(&ranges);
        named.push(((index, index + 1), "leaf".into()));
        Some(expr(0, size, &named))
    }

    /// The (old, new) root expressions the consistency verifier computes
    /// for non-trivial sizes with a proof of `len` hashes, the supplied old
    /// root standing for `seed`; None if it must refuse outright.
    fn consistency_exprs(
        old_size: u64,
        new_size: u64,
        len: usize,
        seed: &str,
    ) -> Option<(String, String)> {
        if old_size == 0 || old_size >= new_size {
            return None;
        }
        let mut ranges = Vec::new();
        subproof_ranges(old_size, 0, new_size, true, &mut ranges);
        if ranges.len() != len {
            return None;
        }
        let mut named = proof_names(&ranges);
        if old_size.is_power_of_two() {
            named.push(((0, old_size), seed.to_owned()));
        }
        Some((expr(0, old_size, &named), expr(0, new_size, &named)))
    }

    fn check_inclusion_flips(
        leaves: &[Hash],
        index: u64,
        accepted_flips: &mut usize,
    ) -> Result<(), String> {
        let size = leaves.len() as u64;
        let r = root(leaves);
        let leaf = leaves[index as usize];
        let proof = inclusion_proof(leaves, index).map_err(|e| e.to_string())?;
        let ok = |leaf: &Hash, i: u64, s: u64, p: &[Hash], r: &Hash| {
            verify_inclusion(leaf, i, s, p, r).is_ok()
        };
        if !ok(&leaf, index, size, &proof, &r) {
            return Err(format!("honest proof ({index}, {size}) refused"));
        }
        for bit in 0..256 {
            if ok(&flip(&leaf, bit), index, size, &proof, &r) {
                return Err(format!("leaf bit {bit} flipped, ({index}, {size})"));
            }
            if ok(&leaf, index, size, &proof, &flip(&r, bit)) {
                return Err(format!("root bit {bit} flipped, ({index}, {size})"));
            }
            for j in 0..proof.len() {
                let mut bad = proof.clone();
                bad[j] = flip(&bad[j], bit);
                if ok(&leaf, index, size, &bad, &r) {
                    return Err(format!("proof[{j}] bit {bit}, ({index}, {size})"));
                }
            }
        }
        // Dropping, adding or repeating a hash.
        if !proof.is_empty() && ok(&leaf, index, size, &proof[1..], &r) {
            return Err(format!("truncated proof, ({index}, {size})"));
        }
        let mut longer = proof.clone();
        longer.push(r);
        if ok(&leaf, index, size, &longer, &r) {
            return Err(format!("extended proof, ({index}, {size})"));
        }
        let honest = inclusion_expr(index, size, proof.len());
        for bit in 0..64 {
            for (i, s, what) in [
                (index ^ (1 << bit), size, "index"),
                (index, size ^ (1 << bit), "size"),
            ] {
                let want = inclusion_expr(i, s, proof.len()).is_some_and(|e| Some(e) == honest);
                if ok(&leaf, i, s, &proof, &r) != want {
                    return Err(format!(
                        "{what} bit {bit} flipped: ({index}, {size}) -> ({i}, {s}), expected accepted = {want}"
                    ));
                }
                *accepted_flips += usize::from(want);
            }
        }
        Ok(())
    }

    fn check_consistency_flips(
        leaves: &[Hash],
        old_size: u64,
        accepted_flips: &mut usize,
    ) -> Result<(), String> {
        let new_size = leaves.len() as u64;
        let old = root(&leaves[..old_size as usize]);
        let new = root(leaves);
        let proof = consistency_proof(leaves, old_size).map_err(|e| e.to_string())?;
        let ok = |m: u64, n: u64, o: &Hash, r: &Hash, p: &[Hash]| {
            verify_consistency(m, n, o, r, p).is_ok()
        };
        if !ok(old_size, new_size, &old, &new, &proof) {
            return Err(format!("honest proof ({old_size}, {new_size}) refused"));
        }
        if proof.is_empty() {
            return Ok(());
        }
        for bit in 0..256 {
            if ok(old_size, new_size, &flip(&old, bit), &new, &proof) {
                return Err(format!("old root bit {bit}, ({old_size}, {new_size})"));
            }
            if ok(old_size, new_size, &old, &flip(&new, bit), &proof) {
                return Err(format!("new root bit {bit}, ({old_size}, {new_size})"));
            }
            for j in 0..proof.len() {
                let mut bad = proof.clone();
                bad[j] = flip(&bad[j], bit);
                if ok(old_size, new_size, &old, &new, &bad) {
                    return Err(format!("proof[{j}] bit {bit}, ({old_size}, {new_size})"));
                }
            }
        }
        if ok(old_size, new_size, &new, &old, &proof) {
            return Err(format!("swapped roots, ({old_size}, {new_size})"));
        }
        if ok(old_size, new_size, &old, &new, &proof[1..]) {
            return Err(format!("truncated proof, ({old_size}, {new_size})"));
        }
        let mut longer = proof.clone();
        longer.push(new);
        if ok(old_size, new_size, &old, &new, &longer) {
            return Err(format!("extended proof, ({old_size}, {new_size})"));
        }
        // The supplied old root is a value the honest expressions already
        // name: the seed when the old tree is perfect, else its expression.
        let (honest_old, honest_new) = consistency_exprs(old_size, new_size, proof.len(), "old")
            .ok_or_else(|| format!("oracle cannot express ({old_size}, {new_size})"))?;
        for bit in 0..64 {
            for (m, n, what) in [
                (old_size ^ (1 << bit), new_size, "old size"),
                (old_size, new_size ^ (1 << bit), "new size"),
            ] {
                let want = consistency_exprs(m, n, proof.len(), &honest_old)
                    .is_some_and(|(o, r)| o == honest_old && r == honest_new);
                if ok(m, n, &old, &new, &proof) != want {
                    return Err(format!(
                        "{what} bit {bit} flipped: ({old_size}, {new_size}) -> ({m}, {n}), expected accepted = {want}"
                    ));
                }
                *accepted_flips += usize::from(want);
            }
        }
        Ok(())
    }

    #[test]
    fn property_every_proof_verifies() {
        let mut rng = StdRng::seed_from_u64(0x6962_0001);
        for _ in 0..300 {
            let n = rng.gen_range(1..=300u64);
            let l = random_leaves(&mut rng, n);
            let r = root(&l);
            assert_eq!(CompactRange::from_leaves(&l).root(), r);
            // Every index of small trees, a sample of larger ones.
            let indices: Vec<u64> = if n <= 40 {
                (0..n).collect()
            } else {
                (0..24).map(|_| rng.gen_range(0..n)).collect()
            };
            for i in indices {
                let proof = inclusion_proof(&l, i).unwrap();
                assert_eq!(
                    verify_inclusion(&l[i as usize], i, n, &proof, &r),
                    Ok(()),
                    "inclusion ({i}, {n})"
                );
            }
            for _ in 0..8 {
                let m = rng.gen_range(0..=n);
                let proof = consistency_proof(&l, m).unwrap();
                let old = root(&l[..m as usize]);
                assert_eq!(
                    verify_consistency(m, n, &old, &r, &proof),
                    Ok(()),
                    "consistency ({m}, {n})"
                );
            }
        }
    }

    #[test]
    fn property_every_single_bit_change_is_caught() {
        let mut rng = StdRng::seed_from_u64(0x6962_0002);
        let mut accepted_inclusion = 0;
        let mut accepted_consistency = 0;
        for case in 0..128 {
            let n = rng.gen_range(1..=300u64);
            let l = random_leaves(&mut rng, n);
            let i = rng.gen_range(0..n);
            if let Err(e) = check_inclusion_flips(&l, i, &mut accepted_inclusion) {
                panic!("case {case}: {e}");
            }
            if n >= 2 {
                let m = rng.gen_range(1..n);
                if let Err(e) = check_consistency_flips(&l, m, &mut accepted_consistency) {
                    panic!("case {case}: {e}");
                }
            }
        }
        // The oracle did meet size changes the verifier rightly accepts;
        // were it never to, this test would not exercise that branch.
        assert!(accepted_inclusion > 0);
        assert!(accepted_consistency > 0);
    }

    /// Exhaustive for small trees: every index and every old size.
    #[test]
    fn property_small_trees_exhaustively() {
        let mut rng = StdRng::seed_from_u64(0x6962_0003);
        let mut accepted = 0;
        for n in 1..=17u64 {
            let l = random_leaves(&mut rng, n);
            for i in 0..n {
                check_inclusion_flips(&l, i, &mut accepted).unwrap();
            }
            for m in 0..=n {
                check_consistency_flips(&l, m, &mut accepted).unwrap();
            }
        }
    }
}
