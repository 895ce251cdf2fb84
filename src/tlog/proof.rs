//! The RFC 9162 (Certificate Transparency v2) Merkle tree hash, §2.1, as pure
//! functions: leaf and node hashes, proof generation over any source of
//! subtree hashes (§2.1.3.1 and §2.1.4.1), and the verification algorithms of
//! §2.1.3.2 and §2.1.4.2 exactly as the RFC states them. No storage here.
//!
//! - leaf hash = SHA-256(0x00 ‖ entry)
//! - node hash = SHA-256(0x01 ‖ left ‖ right)
//! - MTH({}) = SHA-256(""); MTH(D[n]) = node(MTH(D[0:k]), MTH(D[k:n])) with k
//!   the largest power of two smaller than n.

use crate::digest::Sha256;
use sha2::Digest;

/// The root of the empty tree: SHA-256 of the empty string.
pub const EMPTY_ROOT: Sha256 = Sha256([
    0xe3, 0xb0, 0xc4, 0x42, 0x98, 0xfc, 0x1c, 0x14, 0x9a, 0xfb, 0xf4, 0xc8, 0x99, 0x6f, 0xb9, 0x24,
    0x27, 0xae, 0x41, 0xe4, 0x64, 0x9b, 0x93, 0x4c, 0xa4, 0x95, 0x99, 0x1b, 0x78, 0x52, 0xb8, 0x55,
]);

/// SHA-256(0x00 ‖ entry).
pub fn leaf_hash(entry: &[u8]) -> Sha256 {
    let mut h = sha2::Sha256::new();
    h.update([0u8]);
    h.update(entry);
    Sha256(h.finalize().into())
}

/// SHA-256(0x01 ‖ left ‖ right).
pub fn node_hash(left: &Sha256, right: &Sha256) -> Sha256 {
    let mut buf = [0u8; 65];
    buf[0] = 1;
    buf[1..33].copy_from_slice(&left.0);
    buf[33..].copy_from_slice(&right.0);
    Sha256(sha2::Sha256::digest(buf).into())
}

/// The largest power of two strictly smaller than `n` (`n >= 2`).
pub fn split(n: u64) -> u64 {
    debug_assert!(n >= 2);
    1u64 << (63 - (n - 1).leading_zeros())
}

/// Where the hashes of complete ("perfect") subtrees come from: the subtree
/// of `2^level` leaves starting at leaf `index << level`. Every subtree the
/// algorithms below ask for is aligned that way.
pub trait Subtrees {
    type Error;
    fn perfect(&mut self, level: u32, index: u64) -> Result<Sha256, Self::Error>;
}

/// MTH(D[start:end]) for a range the RFC's recursion produces (start a
/// multiple of the largest power of two not above `end - start`).
pub fn mth<S: Subtrees>(s: &mut S, start: u64, end: u64) -> Result<Sha256, S::Error> {
    let n = end - start;
    if n == 0 {
        return Ok(EMPTY_ROOT);
    }
    if n.is_power_of_two() {
        let level = n.trailing_zeros();
        return s.perfect(level, start >> level);
    }
    let k = split(n);
    let left = mth(s, start, start + k)?;
    let right = mth(s, start + k, end)?;
    Ok(node_hash(&left, &right))
}

/// PATH(m, D[start:end]) (RFC 9162 §2.1.3.1), from the leaf up.
pub fn inclusion_path<S: Subtrees>(
    s: &mut S,
    m: u64,
    tree_size: u64,
) -> Result<Vec<Sha256>, S::Error> {
    let mut out = Vec::new();
    path(s, m, 0, tree_size, &mut out)?;
    Ok(out)
}

fn path<S: Subtrees>(
    s: &mut S,
    m: u64,
    start: u64,
    end: u64,
    out: &mut Vec<Sha256>,
) -> Result<(), S::Error> {
    let n = end - start;
    if n <= 1 {
        return Ok(());
    }
    let k = split(n);
    if m < k {
        path(s, m, start, start + k, out)?;
        out.push(mth(s, start + k, end)?);
    } else {
        path(s, m - k, start + k, end, out)?;
        out.push(mth(s, start, start + k)?);
    }
    Ok(())
}

/// PROOF(m, D[n]) (RFC 9162 §2.1.4.1) for `0 < m < n`; empty otherwise.
pub fn consistency_path<S: Subtrees>(s: &mut S, m: u64, n: u64) -> Result<Vec<Sha256>, S::Error> {
    let mut out = Vec::new();
    if 0 < m && m < n {
        subproof(s, m, 0, n, true, &mut out)?;
    }
    Ok(out)
}

fn subproof<S: Subtrees>(
    s: &mut S,
    m: u64,
    start: u64,
    end: u64,
    b: bool,
    out: &mut Vec<Sha256>,
) -> Result<(), S::Error> {
    let n = end - start;
    if m == n {
        if !b {
            out.push(mth(s, start, end)?);
        }
        return Ok(());
    }
    let k = split(n);
    if m <= k {
        subproof(s, m, start, start + k, b, out)?;
        out.push(mth(s, start + k, end)?);
    } else {
        subproof(s, m - k, start + k, end, false, out)?;
        out.push(mth(s, start, start + k)?);
    }
    Ok(())
}

/// Why a proof does not verify.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProofError {
    #[error("leaf index {leaf_index} is not below the tree size {tree_size}")]
    IndexBeyondTree { leaf_index: u64, tree_size: u64 },
    #[error("the proof has more hashes than a tree of this size needs")]
    TooLong,
    #[error("the proof has fewer hashes than a tree of this size needs")]
    TooShort,
    #[error("the proof does not lead to the root hash: computed {computed}, expected {expected}")]
    RootMismatch { computed: Sha256, expected: Sha256 },
    #[error("the proof does not lead to the first tree's root hash: computed {computed}, expected {expected}")]
    FirstRootMismatch { computed: Sha256, expected: Sha256 },
    #[error("a tree of size {first} cannot be consistent with a smaller tree of size {second}")]
    Shrunk { first: u64, second: u64 },
    #[error("trees of equal size {0} must have equal roots and an empty proof")]
    SameSize(u64),
    #[error("the empty tree is consistent with every tree, with an empty proof")]
    FromEmpty,
}

/// RFC 9162 §2.1.3.2: verifies that `leaf` is the leaf at `leaf_index` of the
/// tree of `tree_size` leaves whose root is `root`.
pub fn verify_inclusion(
    leaf_index: u64,
    tree_size: u64,
    leaf: &Sha256,
    path: &[Sha256],
    root: &Sha256,
) -> Result<(), ProofError> {
    // 1. leaf_index >= tree_size fails.
    if leaf_index >= tree_size {
        return Err(ProofError::IndexBeyondTree {
            leaf_index,
            tree_size,
        });
    }
    // 2. fn = leaf_index, sn = tree_size - 1; 3. r = hash.
    let (mut f, mut s) = (leaf_index, tree_size - 1);
    let mut r = *leaf;
    // 4. for each p in the path:
    for p in path {
        // a. sn == 0: fail.
        if s == 0 {
            return Err(ProofError::TooLong);
        }
        // b. LSB(fn) set or fn == sn
        if f & 1 == 1 || f == s {
            r = node_hash(p, &r);
            // ii. if LSB(fn) is not set, shift until it is or fn is 0.
            if f & 1 == 0 {
                while f & 1 == 0 && f != 0 {
                    f >>= 1;
                    s >>= 1;
                }
            }
        } else {
            r = node_hash(&r, p);
        }
        // c. shift once.
        f >>= 1;
        s >>= 1;
    }
    // 5. sn == 0 and r == root.
    if s != 0 {
        return Err(ProofError::TooShort);
    }
    if r != *root {
        return Err(ProofError::RootMismatch {
            computed: r,
            expected: *root,
        });
    }
    Ok(())
}

/// RFC 9162 §2.1.4.2: verifies that the tree of `first` leaves with root
/// `first_root` is a prefix of the tree of `second` leaves with root
/// `second_root`. The trivial cases the RFC's precondition `0 < first <
/// second` leaves out are decided as RFC 9162 §2.1.4 describes them: equal
/// sizes need equal roots and an empty proof; the empty tree is a prefix of
/// every tree (with an empty proof).
pub fn verify_consistency(
    first: u64,
    second: u64,
    first_root: &Sha256,
    second_root: &Sha256,
    path: &[Sha256],
) -> Result<(), ProofError> {
    if first > second {
        return Err(ProofError::Shrunk { first, second });
    }
    if first == second {
        return if path.is_empty() && first_root == second_root {
            Ok(())
        } else {
            Err(ProofError::SameSize(first))
        };
    }
    if first == 0 {
        return if path.is_empty() {
            Ok(())
        } else {
            Err(ProofError::FromEmpty)
        };
    }
    // 1. an empty path fails.
    if path.is_empty() {
        return Err(ProofError::TooShort);
    }
    // 2. if first is a power of 2, prepend first_hash.
    let mut it: Box<dyn Iterator<Item = &Sha256>> = if first.is_power_of_two() {
        Box::new(std::iter::once(first_root).chain(path.iter()))
    } else {
        Box::new(path.iter())
    };
    // 3. fn = first - 1, sn = second - 1.
    let (mut f, mut s) = (first - 1, second - 1);
    // 4. if LSB(fn) is set, shift both until it is not.
    while f & 1 == 1 {
        f >>= 1;
        s >>= 1;
    }
    // 5. fr = sr = the first value.
    let c0 = *it.next().expect("the path is not empty");
    let (mut fr, mut sr) = (c0, c0);
    // 6. for each subsequent c:
    for c in it {
        // a. sn == 0: fail.
        if s == 0 {
            return Err(ProofError::TooLong);
        }
        // b. LSB(fn) set or fn == sn
        if f & 1 == 1 || f == s {
            fr = node_hash(c, &fr);
            sr = node_hash(c, &sr);
            if f & 1 == 0 {
                while f & 1 == 0 && f != 0 {
                    f >>= 1;
                    s >>= 1;
                }
            }
        } else {
            sr = node_hash(&sr, c);
        }
        // c. shift once.
        f >>= 1;
        s >>= 1;
    }
    // 7. fr == first_hash, sr == second_hash, sn == 0.
    if s != 0 {
        return Err(ProofError::TooShort);
    }
    if fr != *first_root {
        return Err(ProofError::FirstRootMismatch {
            computed: fr,
            expected: *first_root,
        });
    }
    if sr != *second_root {
        return Err(ProofError::RootMismatch {
            computed: sr,
            expected: *second_root,
        });
    }
    Ok(())
}

/// Subtree hashes over leaf hashes held in memory (tests, small trees).
pub struct InMemory<'a>(pub &'a [Sha256]);

impl Subtrees for InMemory<'_> {
    type Error = std::convert::Infallible;
    fn perfect(&mut self, level: u32, index: u64) -> Result<Sha256, Self::Error> {
        let start = (index << level) as usize;
        Ok(perfect_of(&self.0[start..start + (1usize << level)]))
    }
}

/// The root of a perfect subtree over `leaves` (a power-of-two count).
pub(crate) fn perfect_of(leaves: &[Sha256]) -> Sha256 {
    if leaves.len() == 1 {
        return leaves[0];
    }
    let (l, r) = leaves.split_at(leaves.len() / 2);
    node_hash(&perfect_of(l), &perfect_of(r))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(s: &str) -> Sha256 {
        s.parse().unwrap()
    }

    /// RFC 6962 reference leaves and roots, as published by
    /// transparency-dev/merkle (testonly/constants.go).
    fn leaves() -> Vec<Sha256> {
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
        .map(|x| leaf_hash(&hex::decode(x).unwrap()))
        .collect()
    }

    const ROOTS: [&str; 9] = [
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
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
    fn roots_match_the_published_vectors() {
        let l = leaves();
        assert_eq!(EMPTY_ROOT, h(ROOTS[0]));
        for n in 0..=8 {
            assert_eq!(
                mth(&mut InMemory(&l), 0, n).unwrap(),
                h(ROOTS[n as usize]),
                "size {n}"
            );
        }
    }

    #[test]
    fn proofs_match_the_published_vectors() {
        let l = leaves();
        let mut s = InMemory(&l);
        // (leaf number from 1, tree size, proof) from transparency-dev/merkle proof/verify_test.go.
        let inclusion: [(u64, u64, &[&str]); 4] = [
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
                    "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
                    "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
                    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
                ],
            ),
            (
                3,
                3,
                &["fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125"],
            ),
            (
                2,
                5,
                &[
                    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
                    "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                    "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
                ],
            ),
        ];
        for (leaf, size, want) in inclusion {
            let want: Vec<Sha256> = want.iter().map(|x| h(x)).collect();
            assert_eq!(inclusion_path(&mut s, leaf - 1, size).unwrap(), want);
            let root = h(ROOTS[size as usize]);
            verify_inclusion(leaf - 1, size, &l[leaf as usize - 1], &want, &root).unwrap();
            assert!(verify_inclusion(leaf, size, &l[leaf as usize - 1], &want, &root).is_err());
        }
        let consistency: [(u64, u64, &[&str]); 4] = [
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
        for (m, n, want) in consistency {
            let want: Vec<Sha256> = want.iter().map(|x| h(x)).collect();
            assert_eq!(consistency_path(&mut s, m, n).unwrap(), want, "{m}->{n}");
            let (r1, r2) = (h(ROOTS[m as usize]), h(ROOTS[n as usize]));
            verify_consistency(m, n, &r1, &r2, &want).unwrap();
            assert!(verify_consistency(m, n, &r2, &r1, &want).is_err());
            assert!(verify_consistency(m, n, &r1, &r2, &want[1..]).is_err());
        }
    }

    #[test]
    fn every_proof_of_small_trees_verifies_and_tampering_fails() {
        let l: Vec<Sha256> = (0u32..40).map(|i| leaf_hash(&i.to_be_bytes())).collect();
        let mut s = InMemory(&l);
        for n in 1..=40u64 {
            let root = mth(&mut s, 0, n).unwrap();
            for i in 0..n {
                let p = inclusion_path(&mut s, i, n).unwrap();
                verify_inclusion(i, n, &l[i as usize], &p, &root).unwrap();
                if let Some(first) = p.first() {
                    let mut bad = p.clone();
                    bad[0] = node_hash(first, first);
                    assert!(verify_inclusion(i, n, &l[i as usize], &bad, &root).is_err());
                }
            }
            for m in 0..=n {
                let p = consistency_path(&mut s, m, n).unwrap();
                let r1 = mth(&mut s, 0, m).unwrap();
                verify_consistency(m, n, &r1, &root, &p).unwrap();
                if 0 < m && m < n {
                    let other = node_hash(&r1, &r1);
                    assert!(verify_consistency(m, n, &other, &root, &p).is_err());
                }
            }
        }
    }
}
