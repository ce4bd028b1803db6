//! Known-answer tests of `alertrelay::audit::merkle` against the published
//! RFC 6962 reference vectors of the Certificate Transparency projects.
//!
//! Where the vectors come from (copied by hand, as data):
//!
//! - google/certificate-transparency, file cpp/merkletree/merkle_tree_test.cc:
//!   `kInputs` (the 8 leaf inputs), `kSHA256EmptyTreeHash`, `kSHA256Roots`
//!   (roots of sizes 1..=8), `kSHA256Paths` (inclusion proofs; leaf numbers
//!   there are 1-based, converted to 0-based indices here) and
//!   `kSHA256Proofs` (consistency proofs), plus the corrupted-proof probes
//!   of its `VerifierCheck` and `VerifierConsistencyCheck`.
//! - transparency-dev/merkle, file proof/verify_test.go: the same vectors
//!   (its `inclusionProofs`, `consistencyProofs`, `roots`, `leaves`) and
//!   one more consistency proof, 6 -> 7.
//! - transparency-dev/merkle, file testonly/constants.go: `NodeHashes()`
//!   (every complete subtree of the 8-leaf tree), `RootHashes()` and
//!   `CompactTrees()` (the compact range after each leaf).
//! - transparency-dev/merkle, file proof/proof_test.go: `TestInclusion` and
//!   `TestConsistency` give, for trees up to 8 leaves, which nodes make up
//!   each proof (as node IDs; a "rehash" there means two nodes hashed into
//!   one, written below as `node_hash` of the two published node hashes).

use alertrelay::audit::merkle::{
    CompactRange, Hash, MerkleError, consistency_proof, empty_root, inclusion_proof, leaf_hash,
    node_hash, root, verify_consistency, verify_inclusion,
};

const INPUTS: [&str; 8] = [
    "",
    "00",
    "10",
    "2021",
    "3031",
    "40414243",
    "5051525354555657",
    "606162636465666768696a6b6c6d6e6f",
];

const EMPTY_TREE: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

/// Roots of the trees of the first 1..=8 inputs (`kSHA256Roots`).
const ROOTS: [&str; 8] = [
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
];

/// `NodeHashes()`: level, then index within the level.
const NODES: [&[&str]; 4] = [
    &[
        "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
        "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
        "0298d122906dcfc10892cb53a73992fc5b9f493ea4c9badb27b791b4127a7fe7",
        "07506a85fd9dd2f120eb694f86011e5bb4662e5c415a62917033d4a9624487e7",
        "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
        "4271a26be0d8a84f0bd54c8c302e7cb3a3b5d1fa6780a40bcce2873477dab658",
        "b08693ec2e721597130641e8211e7eedccb4c26413963eee6c1e2ed16ffb1a5f",
        "46f6ffadd3d06a09ff3c5860d2755c8b9819db7df44251788c7d8e3180de8eb1",
    ],
    &[
        "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
        "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
        "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
        "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
    ],
    &[
        "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
    ],
    &["5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328"],
];

/// `kSHA256Paths`, with 0-based leaf index: (index, tree size, path).
/// (The C++ table's first entry, leaf 0 of size 0, is its "invalid path".)
const PATHS: [(u64, u64, &[&str]); 5] = [
    (0, 1, &[]),
    (
        0,
        8,
        &[
            "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
        ],
    ),
    (
        5,
        8,
        &[
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        ],
    ),
    (
        2,
        3,
        &["fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125"],
    ),
    (
        1,
        5,
        &[
            "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
        ],
    ),
];

/// `kSHA256Proofs` and, last, verify_test.go's 6 -> 7: (old, new, proof).
const PROOFS: [(u64, u64, &[&str]); 5] = [
    (1, 1, &[]),
    (
        1,
        8,
        &[
            "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
        ],
    ),
    (
        6,
        8,
        &[
            "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        ],
    ),
    (
        2,
        5,
        &[
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
        ],
    ),
    (
        6,
        7,
        &[
            "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
            "b08693ec2e721597130641e8211e7eedccb4c26413963eee6c1e2ed16ffb1a5f",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        ],
    ),
];

fn h(s: &str) -> Hash {
    hex::decode(s).unwrap().try_into().unwrap()
}

fn hashes(list: &[&str]) -> Vec<Hash> {
    list.iter().map(|s| h(s)).collect()
}

fn leaves() -> Vec<Hash> {
    INPUTS
        .iter()
        .map(|s| leaf_hash(&hex::decode(s).unwrap()))
        .collect()
}

/// A published node hash: `n(level, index)` as in proof_test.go's `id`.
fn n(level: usize, index: usize) -> Hash {
    h(NODES[level][index])
}

/// The published root of the tree of the first `size` inputs.
fn root_of(size: u64) -> Hash {
    if size == 0 {
        h(EMPTY_TREE)
    } else {
        h(ROOTS[size as usize - 1])
    }
}

#[test]
fn empty_tree_and_leaf_hashes() {
    assert_eq!(empty_root(), h(EMPTY_TREE));
    assert_eq!(root(&[]), h(EMPTY_TREE));
    assert_eq!(CompactRange::new().root(), h(EMPTY_TREE));
    assert_eq!(leaves(), hashes(NODES[0]));
}

#[test]
fn every_published_node_hash() {
    let l = leaves();
    for (level, nodes) in NODES.iter().enumerate() {
        let width = 1 << level;
        for (i, node) in nodes.iter().enumerate() {
            assert_eq!(
                root(&l[i * width..(i + 1) * width]),
                h(node),
                "level {level} index {i}"
            );
        }
    }
    for (level, nodes) in NODES.iter().enumerate().skip(1) {
        for i in 0..nodes.len() {
            assert_eq!(
                node_hash(&n(level - 1, 2 * i), &n(level - 1, 2 * i + 1)),
                n(level, i)
            );
        }
    }
}

#[test]
fn roots_at_every_size() {
    let l = leaves();
    let mut range = CompactRange::new();
    for size in 1..=8u64 {
        let want = root_of(size);
        assert_eq!(root(&l[..size as usize]), want, "root, size {size}");
        range.push(&l[size as usize - 1]);
        assert_eq!(range.size(), size);
        assert_eq!(range.root(), want, "incremental, size {size}");
        assert_eq!(
            CompactRange::from_leaves(&l[..size as usize]).root(),
            want,
            "from leaves, size {size}"
        );
    }
}

/// `CompactTrees()`: the frontier after each leaf, leftmost first.
#[test]
fn compact_ranges_at_every_size() {
    let want: [Vec<Hash>; 9] = [
        vec![],
        vec![n(0, 0)],
        vec![n(1, 0)],
        vec![n(1, 0), n(0, 2)],
        vec![n(2, 0)],
        vec![n(2, 0), n(0, 4)],
        vec![n(2, 0), n(1, 2)],
        vec![n(2, 0), n(1, 2), n(0, 6)],
        vec![n(3, 0)],
    ];
    let l = leaves();
    for (size, frontier) in want.iter().enumerate() {
        let range = CompactRange::from_leaves(&l[..size]);
        assert_eq!(range.hashes(), frontier.as_slice(), "size {size}");
        let rebuilt = CompactRange::from_parts(size as u64, frontier.clone()).unwrap();
        assert_eq!(rebuilt.root(), root_of(size as u64), "size {size}");
    }
}

#[test]
fn published_inclusion_proofs() {
    let l = leaves();
    for (index, size, path) in PATHS {
        let tree = &l[..size as usize];
        let want = hashes(path);
        assert_eq!(
            inclusion_proof(tree, index).unwrap(),
            want,
            "PATH({index}, {size})"
        );
        let leaf = l[index as usize];
        let r = root_of(size);
        assert_eq!(verify_inclusion(&leaf, index, size, &want, &r), Ok(()));
        corrupted_inclusion_probes_fail(&leaf, index, size, &want, &r);
    }
}

/// The probes of merkle_tree_test.cc `VerifierCheck` (and verify_test.go
/// `corruptInclusionProof`), each of which must be refused.
fn corrupted_inclusion_probes_fail(leaf: &Hash, index: u64, size: u64, proof: &[Hash], r: &Hash) {
    let refused = |leaf: &Hash, i: u64, s: u64, p: &[Hash], r: &Hash, what: &str| {
        assert!(
            verify_inclusion(leaf, i, s, p, r).is_err(),
            "({index}, {size}) accepted with {what}"
        );
    };
    refused(leaf, index.wrapping_sub(1), size, proof, r, "index - 1");
    refused(leaf, index + 1, size, proof, r, "index + 1");
    refused(leaf, index ^ 2, size, proof, r, "index ^ 2");
    refused(leaf, index, size * 2, proof, r, "size * 2");
    refused(leaf, index, size / 2, proof, r, "size / 2");
    refused(
        &leaf_hash(b"WrongLeaf"),
        index,
        size,
        proof,
        r,
        "wrong leaf",
    );
    refused(leaf, index, size, proof, &h(EMPTY_TREE), "empty root");
    let some = h("abacaba000000000000000000000000000000000000000000060061e00123456");
    refused(leaf, index, size, proof, &some, "random root");
    for j in 0..proof.len() {
        let mut bad = proof.to_vec();
        bad[j] = h(EMPTY_TREE);
        refused(leaf, index, size, &bad, r, "a replaced element");
        let mut bad = proof.to_vec();
        bad[j][0] ^= 8;
        refused(leaf, index, size, &bad, r, "a flipped bit");
    }
    let mut longer = proof.to_vec();
    longer.push(*r);
    refused(leaf, index, size, &longer, r, "trailing root");
    let mut longer = vec![*r];
    longer.extend_from_slice(proof);
    refused(leaf, index, size, &longer, r, "preceding root");
    if let Some((_, shorter)) = proof.split_last() {
        refused(leaf, index, size, shorter, r, "removed component");
    }
    if proof.len() > 1 {
        let mut inserted = vec![proof[0], some];
        inserted.extend_from_slice(&proof[1..]);
        refused(leaf, index, size, &inserted, r, "inserted component");
    }
}

#[test]
fn published_consistency_proofs() {
    let l = leaves();
    for (old, new, proof) in PROOFS {
        let want = hashes(proof);
        assert_eq!(
            consistency_proof(&l[..new as usize], old).unwrap(),
            want,
            "PROOF({old}, {new})"
        );
        let (r1, r2) = (root_of(old), root_of(new));
        assert_eq!(verify_consistency(old, new, &r1, &r2, &want), Ok(()));
        if !want.is_empty() {
            corrupted_consistency_probes_fail(old, new, &r1, &r2, &want);
        }
    }
}

/// The probes of merkle_tree_test.cc `VerifierConsistencyCheck` (and
/// verify_test.go `corruptConsistencyProof`), each of which must be refused.
fn corrupted_consistency_probes_fail(old: u64, new: u64, r1: &Hash, r2: &Hash, proof: &[Hash]) {
    let refused = |m: u64, n: u64, r1: &Hash, r2: &Hash, p: &[Hash], what: &str| {
        assert!(
            verify_consistency(m, n, r1, r2, p).is_err(),
            "({old}, {new}) accepted with {what}"
        );
    };
    refused(old - 1, new, r1, r2, proof, "old size - 1");
    refused(old + 1, new, r1, r2, proof, "old size + 1");
    refused(old ^ 2, new, r1, r2, proof, "old size ^ 2");
    refused(old, new * 2, r1, r2, proof, "new size * 2");
    refused(old, new / 2, r1, r2, proof, "new size / 2");
    let wrong = leaf_hash(b"WrongRoot");
    refused(old, new, &wrong, r2, proof, "wrong old root");
    refused(old, new, r1, &wrong, proof, "wrong new root");
    refused(old, new, r2, r1, proof, "swapped roots");
    refused(old, new, r1, r2, &[], "empty proof");
    for j in 0..proof.len() {
        let mut bad = proof.to_vec();
        bad[j] = h(EMPTY_TREE);
        refused(old, new, r1, r2, &bad, "a replaced element");
        let mut bad = proof.to_vec();
        bad[j][0] ^= 16;
        refused(old, new, r1, r2, &bad, "a flipped bit");
    }
    for extra in [*r1, *r2, proof[proof.len() - 1]] {
        let mut longer = proof.to_vec();
        longer.push(extra);
        refused(old, new, r1, r2, &longer, "a trailing hash");
    }
    for extra in [*r1, *r2, proof[0]] {
        let mut longer = vec![extra];
        longer.extend_from_slice(proof);
        refused(old, new, r1, r2, &longer, "a preceding hash");
    }
    refused(
        old,
        new,
        r1,
        r2,
        &proof[..proof.len() - 1],
        "truncated proof",
    );
}

/// proof_test.go `TestInclusion` for trees of up to 8 leaves: which
/// published nodes make up each proof.
#[test]
fn inclusion_proofs_from_node_ids() {
    // l = hash(i, j) in proof_test.go's size-7 tree: leaves 4..6.
    let l7 = node_hash(&n(1, 2), &n(0, 6));
    let cases: [(u64, u64, Vec<Hash>); 15] = [
        (1, 0, vec![]),
        (2, 0, vec![n(0, 1)]),
        (2, 1, vec![n(0, 0)]),
        (3, 1, vec![n(0, 0), n(0, 2)]),
        (7, 0, vec![n(0, 1), n(1, 1), l7]),
        (7, 1, vec![n(0, 0), n(1, 1), l7]),
        (7, 2, vec![n(0, 3), n(1, 0), l7]),
        (7, 3, vec![n(0, 2), n(1, 0), l7]),
        (7, 4, vec![n(0, 5), n(0, 6), n(2, 0)]),
        (7, 5, vec![n(0, 4), n(0, 6), n(2, 0)]),
        (7, 6, vec![n(1, 2), n(2, 0)]),
        (4, 2, vec![n(0, 3), n(1, 0)]),
        (5, 3, vec![n(0, 2), n(1, 0), n(0, 4)]),
        (6, 3, vec![n(0, 2), n(1, 0), n(1, 2)]),
        (6, 4, vec![n(0, 5), n(2, 0)]),
    ];
    let l = leaves();
    for (size, index, want) in cases {
        let tree = &l[..size as usize];
        assert_eq!(
            inclusion_proof(tree, index).unwrap(),
            want,
            "PATH({index}, {size})"
        );
        assert_eq!(
            verify_inclusion(&l[index as usize], index, size, &want, &root_of(size)),
            Ok(())
        );
    }
    // TestInclusion's error cases.
    for (size, index) in [(0, 0), (0, 1), (1, 2), (0, 3), (7, 8)] {
        assert_eq!(
            inclusion_proof(&l[..size as usize], index),
            Err(MerkleError::IndexOutOfRange { index, size })
        );
    }
}

/// proof_test.go `TestConsistency` for trees of up to 8 leaves.
#[test]
fn consistency_proofs_from_node_ids() {
    let l7 = node_hash(&n(1, 2), &n(0, 6));
    let cases: [(u64, u64, Vec<Hash>); 21] = [
        (1, 2, vec![n(0, 1)]),
        (1, 4, vec![n(0, 1), n(1, 1)]),
        (1, 6, vec![n(0, 1), n(1, 1), n(1, 2)]),
        (2, 3, vec![n(0, 2)]),
        (2, 8, vec![n(1, 1), n(2, 1)]),
        (3, 7, vec![n(0, 2), n(0, 3), n(1, 0), l7]),
        (4, 7, vec![l7]),
        (5, 7, vec![n(0, 4), n(0, 5), n(0, 6), n(2, 0)]),
        (6, 7, vec![n(1, 2), n(0, 6), n(2, 0)]),
        (7, 8, vec![n(0, 6), n(0, 7), n(1, 2), n(2, 0)]),
        (1, 1, vec![]),
        (2, 2, vec![]),
        (3, 3, vec![]),
        (4, 4, vec![]),
        (5, 5, vec![]),
        (7, 7, vec![]),
        (8, 8, vec![]),
        (2, 4, vec![n(1, 1)]),
        (3, 5, vec![n(0, 2), n(0, 3), n(1, 0), n(0, 4)]),
        (3, 6, vec![n(0, 2), n(0, 3), n(1, 0), n(1, 2)]),
        (4, 6, vec![n(1, 2)]),
    ];
    let l = leaves();
    for (old, new, want) in cases {
        assert_eq!(
            consistency_proof(&l[..new as usize], old).unwrap(),
            want,
            "PROOF({old}, {new})"
        );
        assert_eq!(
            verify_consistency(old, new, &root_of(old), &root_of(new), &want),
            Ok(())
        );
    }
    // (1, 7) is b h l: its last element is again the rehashed l.
    assert_eq!(
        consistency_proof(&l[..7], 1).unwrap(),
        vec![n(0, 1), n(1, 1), l7]
    );
    // TestConsistency's error cases.
    assert_eq!(
        consistency_proof(&l[..0], 5),
        Err(MerkleError::OldSizeExceedsNewSize {
            old_size: 5,
            new_size: 0
        })
    );
    assert_eq!(
        consistency_proof(&l[..8], 9),
        Err(MerkleError::OldSizeExceedsNewSize {
            old_size: 9,
            new_size: 8
        })
    );
}

/// merkle_tree_test.cc `VerifyPath` and verify_test.go `TestVerifyInclusion`:
/// proofs against empty trees and out-of-range indices are refused.
#[test]
fn invalid_inclusion_parameters() {
    let some = h("abacaba000000000000000000000000000000000000000000060061e00123456");
    for (index, size) in [(0, 0), (0, 1), (1, 0), (2, 1)] {
        for (leaf, r) in [(some, h(EMPTY_TREE)), (h(EMPTY_TREE), some)] {
            assert!(
                verify_inclusion(&leaf, index, size, &[], &r).is_err(),
                "({index}, {size})"
            );
        }
    }
    // A one-leaf tree's root is its leaf hash, with an empty proof.
    let leaf = leaf_hash(b"data");
    assert_eq!(verify_inclusion(&leaf, 0, 1, &[], &leaf), Ok(()));
    assert!(verify_inclusion(&leaf, 0, 1, &[], &some).is_err());
}

/// merkle_tree_test.cc `VerifyConsistencyProof` and verify_test.go
/// `TestVerifyConsistency`, trivial sizes. One deliberate difference: those
/// accept any "don't care" root for a tree of size 0; this crate requires
/// the empty-tree root there.
#[test]
fn trivial_consistency_parameters() {
    let e = h(EMPTY_TREE);
    let r1 = root_of(1);
    let r2 = root_of(2);
    // Always consistent.
    assert_eq!(verify_consistency(0, 0, &e, &e, &[]), Ok(()));
    assert_eq!(verify_consistency(0, 1, &e, &r1, &[]), Ok(()));
    assert_eq!(verify_consistency(1, 1, &r1, &r1, &[]), Ok(()));
    // Time travel to the past.
    assert!(verify_consistency(1, 0, &r1, &e, &[]).is_err());
    assert!(verify_consistency(2, 1, &r2, &r1, &[]).is_err());
    // Empty proof.
    assert!(verify_consistency(1, 2, &r1, &r2, &[]).is_err());
    // Roots don't match.
    assert!(verify_consistency(0, 0, &e, &r2, &[]).is_err());
    assert!(verify_consistency(1, 1, &r1, &r2, &[]).is_err());
    // Roots match but the proof is not empty.
    assert!(verify_consistency(0, 0, &e, &e, &[e]).is_err());
    assert!(verify_consistency(0, 1, &e, &e, &[e]).is_err());
    assert!(verify_consistency(1, 1, &e, &e, &[e]).is_err());
    // The stricter rule for size 0.
    assert_eq!(
        verify_consistency(0, 1, &r2, &r1, &[]),
        Err(MerkleError::OldRootMismatch)
    );
}
