//! `Sha256`: the one digest type of Leviathan (event hashes, artifact addresses,
//! bundle and state digests). It owns parsing and printing of lowercase hex and
//! nothing else.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::Digest;
use std::fmt;
use std::str::FromStr;

/// A SHA-256 digest.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Sha256(pub [u8; 32]);

impl Sha256 {
    /// Digest of `bytes`.
    pub fn of(bytes: &[u8]) -> Self {
        Sha256(sha2::Sha256::digest(bytes).into())
    }

    /// Digest of the concatenation of `parts`.
    pub fn of_parts(parts: &[&[u8]]) -> Self {
        let mut h = sha2::Sha256::new();
        for p in parts {
            h.update(p);
        }
        Sha256(h.finalize().into())
    }

    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// From exactly 32 raw bytes.
    pub fn from_slice(bytes: &[u8]) -> Option<Self> {
        <[u8; 32]>::try_from(bytes).ok().map(Sha256)
    }

    /// Lowercase hex, 64 characters.
    pub fn to_hex(&self) -> String {
        let mut out = Vec::with_capacity(64);
        self.write_hex(&mut out);
        String::from_utf8(out).expect("hex digits are ASCII")
    }

    /// Appends the lowercase hex (64 characters) to `out`, a table lookup
    /// per nibble (`hex::encode` goes through a char iterator and a
    /// `String`: ~1 % of the writer thread, once per event record).
    pub fn write_hex(&self, out: &mut Vec<u8>) {
        const DIGITS: &[u8; 16] = b"0123456789abcdef";
        let mut buf = [0u8; 64];
        for (pair, b) in buf.chunks_exact_mut(2).zip(self.0) {
            pair[0] = DIGITS[usize::from(b >> 4)];
            pair[1] = DIGITS[usize::from(b & 0x0f)];
        }
        out.extend_from_slice(&buf);
    }
}

impl fmt::Display for Sha256 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for Sha256 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Sha256({})", self.to_hex())
    }
}

/// Why a string is not a SHA-256 hex digest.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("expected 64 hexadecimal characters (a SHA-256 digest), got {0:?}")]
pub struct ParseSha256Error(pub String);

impl FromStr for Sha256 {
    type Err = ParseSha256Error;
    /// Accepts upper or lower case hex; always prints lower case.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut out = [0u8; 32];
        if s.len() != 64 || hex::decode_to_slice(s, &mut out).is_err() {
            let shown: String = s.chars().take(80).collect();
            return Err(ParseSha256Error(shown));
        }
        Ok(Sha256(out))
    }
}

impl Serialize for Sha256 {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_hex())
    }
}

impl<'de> Deserialize<'de> for Sha256 {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trip_and_case() {
        let d = Sha256::of(b"abc");
        assert_eq!(
            d.to_hex(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        let upper = d.to_hex().to_uppercase();
        assert_eq!(upper.parse::<Sha256>().unwrap(), d);
        assert!("abc".parse::<Sha256>().is_err());
        assert!("zz".repeat(32).parse::<Sha256>().is_err());
    }

    #[test]
    fn hex_is_the_hex_crates_for_every_byte_value() {
        // Digests covering all 256 byte values in both nibble positions.
        for i in 0..8u8 {
            let mut bytes = [0u8; 32];
            for (j, b) in bytes.iter_mut().enumerate() {
                *b = i.wrapping_mul(32).wrapping_add(j as u8);
            }
            let d = Sha256(bytes);
            let mut out = b"x".to_vec();
            d.write_hex(&mut out);
            assert_eq!(&out[1..], hex::encode(bytes).as_bytes());
            assert_eq!(d.to_hex(), hex::encode(bytes));
        }
    }
}
