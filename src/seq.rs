//! `Seq`: the position of an event in the log (1, 2, 3 ...). Owns its key
//! encoding (big-endian, so byte order is log order) and nothing else.

use serde::{Deserialize, Serialize};
use std::fmt;

/// Position of an event in the log. The first event is `Seq(1)`; `Seq(0)` means
/// "before the first event" (an empty log's head).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Seq(pub u64);

impl Seq {
    pub const ZERO: Seq = Seq(0);

    pub fn next(self) -> Seq {
        Seq(self.0 + 1)
    }

    /// 8-byte big-endian key: sorts in log order.
    pub(crate) fn to_key(self) -> [u8; 8] {
        self.0.to_be_bytes()
    }

    pub(crate) fn from_key(bytes: &[u8]) -> Option<Seq> {
        <[u8; 8]>::try_from(bytes)
            .ok()
            .map(|b| Seq(u64::from_be_bytes(b)))
    }
}

impl fmt::Display for Seq {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl fmt::Debug for Seq {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Seq({})", self.0)
    }
}
