//! The on-disk format of one entry file: the payload followed by a fixed-size trailer.
//!
//! ```text
//! offset 0          payload (exactly the bytes `fetch` returned)
//! offset len        payload_len  u64 LE   must equal file size - TRAILER_LEN (catches truncation)
//! offset len+8      crc32        u32 LE   CRC-32 (IEEE, crc32fast) of the payload
//! offset len+12     version      u32 LE   FORMAT_VERSION
//! offset len+16     key hash     [u8; 32] CacheKey::hash, so a misplaced file never serves
//! offset len+48     magic        [u8; 8]  MAGIC, last so that a truncated file never ends with it
//! ```
//!
//! The trailer comes after the payload (not before) so the writer can stream the payload and
//! append the trailer once the length and CRC are known, and so that a file cut short anywhere
//! lacks a valid trailer.

pub(crate) const MAGIC: [u8; 8] = *b"SSCACHE\x01";
pub(crate) const FORMAT_VERSION: u32 = 1;
pub(crate) const TRAILER_LEN: usize = 8 + 4 + 4 + 32 + 8;

/// The decoded trailer of an entry file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Trailer {
    pub payload_len: u64,
    pub crc: u32,
}

pub(crate) fn encode_trailer(payload_len: u64, crc: u32, key_hash: &[u8; 32]) -> [u8; TRAILER_LEN] {
    let mut t = [0u8; TRAILER_LEN];
    t[0..8].copy_from_slice(&payload_len.to_le_bytes());
    t[8..12].copy_from_slice(&crc.to_le_bytes());
    t[12..16].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
    t[16..48].copy_from_slice(key_hash);
    t[48..56].copy_from_slice(&MAGIC);
    t
}

/// Checks the trailer at the end of `file` (the whole entry file) against `key_hash`.
/// The CRC is returned, not checked: see [`crc_matches`].
pub(crate) fn parse_trailer(file: &[u8], key_hash: &[u8; 32]) -> Result<Trailer, String> {
    if file.len() < TRAILER_LEN {
        return Err(format!(
            "file is {} bytes, shorter than the {TRAILER_LEN}-byte trailer (truncated)",
            file.len()
        ));
    }
    let t = &file[file.len() - TRAILER_LEN..];
    if t[48..56] != MAGIC {
        return Err("trailer magic missing (truncated or not a cache entry)".into());
    }
    let version = u32::from_le_bytes(fixed(&t[12..16]));
    if version != FORMAT_VERSION {
        return Err(format!(
            "entry format version {version}, expected {FORMAT_VERSION}"
        ));
    }
    let payload_len = u64::from_le_bytes(fixed(&t[0..8]));
    let actual = (file.len() - TRAILER_LEN) as u64;
    if payload_len != actual {
        return Err(format!(
            "trailer says {payload_len} payload bytes, file holds {actual}"
        ));
    }
    if t[16..48] != key_hash[..] {
        return Err("entry belongs to a different key".into());
    }
    Ok(Trailer {
        payload_len,
        crc: u32::from_le_bytes(fixed(&t[8..12])),
    })
}

pub(crate) fn crc_matches(payload: &[u8], trailer: &Trailer) -> bool {
    crc32fast::hash(payload) == trailer.crc
}

fn fixed<const N: usize>(s: &[u8]) -> [u8; N] {
    let mut a = [0u8; N];
    a.copy_from_slice(s);
    a
}
