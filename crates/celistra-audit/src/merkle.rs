//! The RFC 6962 Merkle tree over the log's entries: tree hashes for any size, inclusion and
//! consistency proofs, and their verification as RFC 9162 §2.1.3.2 and §2.1.4.2 describe it.
//!
//! The tree keeps every complete subtree's hash, level by level (level 0 the leaves, level k the
//! hashes of aligned runs of 2^k leaves): about two hashes per leaf, and any range's hash is at most
//! one lookup per level.

use crate::digest::{Hash, sha256};

/// SHA-256(0x00 ‖ data): the hash of a leaf whose data is `data`.
pub fn leaf_hash(data: &[u8]) -> Hash {
    sha256(&[&[0x00], data])
}

/// SHA-256(0x01 ‖ left ‖ right): the hash of an interior node.
pub fn node_hash(left: &Hash, right: &Hash) -> Hash {
    sha256(&[&[0x01], left, right])
}

/// The root of the empty tree: SHA-256 of nothing.
pub fn empty_root() -> Hash {
    sha256(&[])
}

/// An append-only Merkle tree of leaf hashes.
#[derive(Debug, Clone)]
pub struct MerkleTree {
    levels: Vec<Vec<Hash>>,
}

impl Default for MerkleTree {
    fn default() -> Self {
        MerkleTree {
            levels: vec![Vec::new()],
        }
    }
}

impl MerkleTree {
    /// Adds a leaf (already hashed with [`leaf_hash`]) and every subtree it completes.
    pub fn push(&mut self, leaf: Hash) {
        self.levels[0].push(leaf);
        let mut level = 0;
        while self.levels[level].len().is_multiple_of(2) {
            let nodes = &self.levels[level];
            let parent = node_hash(&nodes[nodes.len() - 2], &nodes[nodes.len() - 1]);
            if self.levels.len() == level + 1 {
                self.levels.push(Vec::new());
            }
            self.levels[level + 1].push(parent);
            level += 1;
        }
    }

    /// The number of leaves.
    pub fn size(&self) -> u64 {
        self.levels[0].len() as u64
    }

    /// Leaf `index`'s hash.
    pub fn leaf(&self, index: u64) -> Option<&Hash> {
        self.levels[0].get(usize::try_from(index).ok()?)
    }

    /// The tree hash of the first `size` leaves; `None` if the tree is smaller.
    pub fn root(&self, size: u64) -> Option<Hash> {
        match size {
            0 => Some(empty_root()),
            _ if size > self.size() => None,
            _ => Some(self.range_hash(0, size)),
        }
    }

    /// The audit path of leaf `index` in the tree of the first `size` leaves (RFC 6962 §2.1.1),
    /// nearest the leaf first; `None` unless `index < size <= self.size()`.
    pub fn inclusion_proof(&self, index: u64, size: u64) -> Option<Vec<Hash>> {
        if index >= size || size > self.size() {
            return None;
        }
        let mut proof = Vec::new();
        self.path(index, 0, size, &mut proof);
        Some(proof)
    }

    /// The proof that the tree of `old_size` leaves is a prefix of the tree of `new_size` leaves
    /// (RFC 6962 §2.1.2); empty when `old_size` is 0 or equals `new_size`; `None` unless
    /// `old_size <= new_size <= self.size()`.
    pub fn consistency_proof(&self, old_size: u64, new_size: u64) -> Option<Vec<Hash>> {
        if old_size > new_size || new_size > self.size() {
            return None;
        }
        let mut proof = Vec::new();
        if old_size > 0 && old_size < new_size {
            self.subproof(old_size, 0, new_size, true, &mut proof);
        }
        Some(proof)
    }

    /// MTH(D[lo:hi]) for `lo < hi <= size`.
    fn range_hash(&self, lo: u64, hi: u64) -> Hash {
        let count = hi - lo;
        if count.is_power_of_two() && lo.is_multiple_of(count) {
            let level = count.trailing_zeros() as usize;
            // A complete aligned subtree below the tree's size was stored when its last leaf came.
            return self.levels[level][(lo >> level) as usize];
        }
        let split = largest_power_of_two_below(count);
        node_hash(
            &self.range_hash(lo, lo + split),
            &self.range_hash(lo + split, hi),
        )
    }

    /// PATH(m, D[lo:hi]), appending to `proof`.
    fn path(&self, index: u64, lo: u64, hi: u64, proof: &mut Vec<Hash>) {
        let count = hi - lo;
        if count == 1 {
            return;
        }
        let split = largest_power_of_two_below(count);
        if index < split {
            self.path(index, lo, lo + split, proof);
            proof.push(self.range_hash(lo + split, hi));
        } else {
            self.path(index - split, lo + split, hi, proof);
            proof.push(self.range_hash(lo, lo + split));
        }
    }

    /// SUBPROOF(m, D[lo:hi], b), appending to `proof`.
    fn subproof(
        &self,
        old_size: u64,
        lo: u64,
        hi: u64,
        whole_old_tree: bool,
        proof: &mut Vec<Hash>,
    ) {
        let count = hi - lo;
        if old_size == count {
            if !whole_old_tree {
                proof.push(self.range_hash(lo, hi));
            }
            return;
        }
        let split = largest_power_of_two_below(count);
        if old_size <= split {
            self.subproof(old_size, lo, lo + split, whole_old_tree, proof);
            proof.push(self.range_hash(lo + split, hi));
        } else {
            self.subproof(old_size - split, lo + split, hi, false, proof);
            proof.push(self.range_hash(lo, lo + split));
        }
    }
}

/// The largest power of two strictly below `n` (n >= 2).
fn largest_power_of_two_below(n: u64) -> u64 {
    1 << (63 - (n - 1).leading_zeros())
}

/// The root that an inclusion proof for `leaf` at `index` in a tree of `size` leaves implies
/// (RFC 9162 §2.1.3.2); `None` when the proof has the wrong shape for that index and size.
pub fn root_from_inclusion_proof(
    leaf: &Hash,
    index: u64,
    size: u64,
    proof: &[Hash],
) -> Option<Hash> {
    if index >= size {
        return None;
    }
    let (mut fn_, mut sn) = (index, size - 1);
    let mut root = *leaf;
    for sibling in proof {
        if sn == 0 {
            return None;
        }
        if fn_ & 1 == 1 || fn_ == sn {
            root = node_hash(sibling, &root);
            while fn_ & 1 == 0 && fn_ != 0 {
                fn_ >>= 1;
                sn >>= 1;
            }
        } else {
            root = node_hash(&root, sibling);
        }
        fn_ >>= 1;
        sn >>= 1;
    }
    (sn == 0).then_some(root)
}

/// Whether `proof` shows `leaf` at `index` in the tree of `size` leaves whose root is `root`.
pub fn verify_inclusion_proof(
    leaf: &Hash,
    index: u64,
    size: u64,
    proof: &[Hash],
    root: &Hash,
) -> bool {
    root_from_inclusion_proof(leaf, index, size, proof).is_some_and(|computed| computed == *root)
}

/// Whether `proof` shows the tree (`old_size`, `old_root`) to be a prefix of (`new_size`,
/// `new_root`) (RFC 9162 §2.1.4.2, with the empty and equal sizes handled as RFC 6962 defines them).
pub fn verify_consistency_proof(
    old_size: u64,
    new_size: u64,
    old_root: &Hash,
    new_root: &Hash,
    proof: &[Hash],
) -> bool {
    if old_size > new_size {
        return false;
    }
    if old_size == new_size {
        return proof.is_empty() && old_root == new_root;
    }
    if old_size == 0 {
        return proof.is_empty();
    }
    // When the old tree is a complete subtree, its root is the proof's implicit first node.
    let (first, rest) = if old_size.is_power_of_two() {
        (old_root, proof)
    } else {
        match proof.split_first() {
            Some(split) => split,
            None => return false,
        }
    };
    let (mut fn_, mut sn) = (old_size - 1, new_size - 1);
    while fn_ & 1 == 1 {
        fn_ >>= 1;
        sn >>= 1;
    }
    let (mut old_hash, mut new_hash) = (*first, *first);
    for node in rest {
        if sn == 0 {
            return false;
        }
        if fn_ & 1 == 1 || fn_ == sn {
            old_hash = node_hash(node, &old_hash);
            new_hash = node_hash(node, &new_hash);
            while fn_ & 1 == 0 && fn_ != 0 {
                fn_ >>= 1;
                sn >>= 1;
            }
        } else {
            new_hash = node_hash(&new_hash, node);
        }
        fn_ >>= 1;
        sn >>= 1;
    }
    sn == 0 && old_hash == *old_root && new_hash == *new_root
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::digest::{hash_from_hex, to_hex};
    use proptest::prelude::*;

    // The certificate-transparency / transparency-dev RFC 6962 vectors: eight leaves of data, the
    // root of every prefix, and known inclusion and consistency proofs.
    const LEAF_DATA: [&[u8]; 8] = [
        b"",
        b"\x00",
        b"\x10",
        b"\x20\x21",
        b"\x30\x31",
        b"\x40\x41\x42\x43",
        b"\x50\x51\x52\x53\x54\x55\x56\x57",
        b"\x60\x61\x62\x63\x64\x65\x66\x67\x68\x69\x6a\x6b\x6c\x6d\x6e\x6f",
    ];
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
    /// (leaf index, tree size, proof).
    const INCLUSION: &[(u64, u64, &[&str])] = &[
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
    /// (old size, new size, proof).
    const CONSISTENCY: &[(u64, u64, &[&str])] = &[
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

    fn vector_tree() -> MerkleTree {
        let mut tree = MerkleTree::default();
        LEAF_DATA.iter().for_each(|data| tree.push(leaf_hash(data)));
        tree
    }

    fn hashes(hex: &[&str]) -> Vec<Hash> {
        hex.iter().map(|h| hash_from_hex(h).unwrap()).collect()
    }

    fn root_of(size: u64) -> Hash {
        hash_from_hex(ROOTS[size as usize - 1]).unwrap()
    }

    #[test]
    fn roots_of_every_prefix_match_the_vectors() {
        let tree = vector_tree();
        assert_eq!(
            to_hex(&tree.root(0).unwrap()),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        for size in 1..=8 {
            assert_eq!(
                to_hex(&tree.root(size).unwrap()),
                ROOTS[size as usize - 1],
                "size {size}"
            );
        }
        assert_eq!(tree.root(9), None);
    }

    #[test]
    fn inclusion_proofs_match_and_verify_against_the_vectors() {
        let tree = vector_tree();
        for &(index, size, proof) in INCLUSION {
            let expected = hashes(proof);
            assert_eq!(
                tree.inclusion_proof(index, size).unwrap(),
                expected,
                "leaf {index} of {size}"
            );
            let leaf = leaf_hash(LEAF_DATA[index as usize]);
            assert!(verify_inclusion_proof(
                &leaf,
                index,
                size,
                &expected,
                &root_of(size)
            ));
            assert!(!verify_inclusion_proof(
                &leaf,
                index + 1,
                size,
                &expected,
                &root_of(size)
            ));
            assert!(!verify_inclusion_proof(
                &leaf,
                index,
                size * 2,
                &expected,
                &root_of(size)
            ));
            let mut longer = expected.clone();
            longer.push(root_of(size));
            assert!(!verify_inclusion_proof(
                &leaf,
                index,
                size,
                &longer,
                &root_of(size)
            ));
            if let Some((_, shorter)) = expected.split_last() {
                assert!(!verify_inclusion_proof(
                    &leaf,
                    index,
                    size,
                    shorter,
                    &root_of(size)
                ));
            }
        }
    }

    #[test]
    fn consistency_proofs_match_and_verify_against_the_vectors() {
        let tree = vector_tree();
        for &(old, new, proof) in CONSISTENCY {
            let expected = hashes(proof);
            assert_eq!(
                tree.consistency_proof(old, new).unwrap(),
                expected,
                "{old} -> {new}"
            );
            assert!(verify_consistency_proof(
                old,
                new,
                &root_of(old),
                &root_of(new),
                &expected
            ));
            if old != new {
                assert!(!verify_consistency_proof(
                    old,
                    new,
                    &root_of(new),
                    &root_of(old),
                    &expected
                ));
                assert!(!verify_consistency_proof(
                    old,
                    new,
                    &root_of(old),
                    &root_of(new),
                    &[]
                ));
                assert!(!verify_consistency_proof(
                    old + 1,
                    new,
                    &root_of(old),
                    &root_of(new),
                    &expected
                ));
            }
        }
    }

    #[test]
    fn edge_sizes_follow_rfc_6962() {
        let tree = vector_tree();
        let (a, b) = (root_of(1), root_of(2));
        assert!(verify_consistency_proof(
            0,
            3,
            &empty_root(),
            &root_of(3),
            &[]
        ));
        assert!(!verify_consistency_proof(
            0,
            3,
            &empty_root(),
            &root_of(3),
            &[a]
        ));
        assert!(!verify_consistency_proof(2, 1, &b, &a, &[]));
        assert!(!verify_consistency_proof(1, 1, &a, &b, &[]));
        assert!(!verify_inclusion_proof(&a, 0, 0, &[], &a));
        assert_eq!(tree.inclusion_proof(8, 8), None);
        assert_eq!(tree.consistency_proof(5, 4), None);
        assert_eq!(tree.consistency_proof(0, 8), Some(Vec::new()));
    }

    /// MTH as RFC 6962 defines it, recursively over the leaves, to check the stored levels against.
    fn reference_root(leaves: &[Hash]) -> Hash {
        match leaves.len() {
            0 => empty_root(),
            1 => leaves[0],
            n => {
                let split = largest_power_of_two_below(n as u64) as usize;
                node_hash(
                    &reference_root(&leaves[..split]),
                    &reference_root(&leaves[split..]),
                )
            }
        }
    }

    fn tree_of(size: u64) -> (MerkleTree, Vec<Hash>) {
        let leaves: Vec<Hash> = (0..size).map(|i| leaf_hash(&i.to_be_bytes())).collect();
        let mut tree = MerkleTree::default();
        leaves.iter().for_each(|leaf| tree.push(*leaf));
        (tree, leaves)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(200))]

        #[test]
        fn every_inclusion_proof_verifies_and_a_flipped_bit_fails(size in 1u64..300, pick in any::<u64>(), bit in 0usize..256) {
            let (tree, leaves) = tree_of(size);
            let index = pick % size;
            let root = tree.root(size).unwrap();
            prop_assert_eq!(root, reference_root(&leaves));
            let mut proof = tree.inclusion_proof(index, size).unwrap();
            prop_assert!(verify_inclusion_proof(&leaves[index as usize], index, size, &proof, &root));
            if !proof.is_empty() {
                let node = bit % proof.len();
                proof[node][(bit / 8) % 32] ^= 1 << (bit % 8);
                prop_assert!(!verify_inclusion_proof(&leaves[index as usize], index, size, &proof, &root));
            }
        }

        #[test]
        fn every_consistency_proof_verifies_and_a_flipped_bit_fails(new in 1u64..300, pick in any::<u64>(), bit in 0usize..256) {
            let (tree, leaves) = tree_of(new);
            let old = 1 + pick % new;
            let (old_root, new_root) = (tree.root(old).unwrap(), tree.root(new).unwrap());
            prop_assert_eq!(old_root, reference_root(&leaves[..old as usize]));
            let mut proof = tree.consistency_proof(old, new).unwrap();
            prop_assert!(verify_consistency_proof(old, new, &old_root, &new_root, &proof));
            if !proof.is_empty() {
                let node = bit % proof.len();
                proof[node][(bit / 8) % 32] ^= 1 << (bit % 8);
                prop_assert!(!verify_consistency_proof(old, new, &old_root, &new_root, &proof));
            }
        }
    }
}
