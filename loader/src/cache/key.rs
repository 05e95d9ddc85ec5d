//! Cache keys and their stable file names.

use std::ops::Range;

use sha2::{Digest, Sha256};

/// Identifies one cached object or byte range of an object.
///
/// Every field takes part in the entry's name, so a shard whose etag or size changed in the
/// store never matches bytes cached for its old version.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct CacheKey {
    /// The object's URL (or path) as the manifest names it.
    pub url: String,
    /// The object's etag when the store reports one.
    pub etag: Option<String>,
    /// The whole object's size in bytes.
    pub size: u64,
    /// The cached byte range (e.g. one Parquet row group); `None` for the whole object.
    pub range: Option<Range<u64>>,
}

/// Bumped whenever the encoding in [`CacheKey::hash`] changes, so old entries never match.
const KEY_ENCODING: &[u8] = b"shardstream-cache-key-v1\0";

impl CacheKey {
    /// A key for a whole object.
    pub fn whole(url: impl Into<String>, etag: Option<String>, size: u64) -> CacheKey {
        CacheKey {
            url: url.into(),
            etag,
            size,
            range: None,
        }
    }

    /// SHA-256 of an unambiguous encoding of all fields (length-prefixed strings and explicit
    /// presence tags, so that e.g. `url="a", etag="bc"` and `url="ab", etag="c"` differ).
    pub fn hash(&self) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update(KEY_ENCODING);
        h.update((self.url.len() as u64).to_le_bytes());
        h.update(self.url.as_bytes());
        match &self.etag {
            Some(etag) => {
                h.update([1u8]);
                h.update((etag.len() as u64).to_le_bytes());
                h.update(etag.as_bytes());
            }
            None => h.update([0u8]),
        }
        h.update(self.size.to_le_bytes());
        match &self.range {
            Some(r) => {
                h.update([1u8]);
                h.update(r.start.to_le_bytes());
                h.update(r.end.to_le_bytes());
            }
            None => h.update([0u8]),
        }
        h.finalize().into()
    }

    /// Stable file name of this key's entry: the 256-bit [`hash`](Self::hash) in lowercase hex
    /// (64 characters). Stable across processes, runs and platforms.
    pub fn file_name(&self) -> String {
        hex(&self.hash())
    }

    /// Payload length this key describes: the range's length, or the whole object's size.
    pub fn expected_len(&self) -> u64 {
        match &self.range {
            Some(r) => r.end.saturating_sub(r.start),
            None => self.size,
        }
    }
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[(b >> 4) as usize] as char);
        s.push(DIGITS[(b & 0xf) as usize] as char);
    }
    s
}
