//! A push-based tar reader that counts WebDataset samples.
//!
//! Bytes arrive in arbitrary chunks from a network stream, so the parser is a small state
//! machine over 512-byte blocks rather than a `Read`-based iterator: it never buffers more than
//! one header (or one GNU long-name / pax record, capped at [`MAX_META_RECORD`]).
//!
//! Sample grouping follows the WebDataset reference implementation: only regular files count;
//! a member's key is its path up to the first `.` of its file name and the rest is the field
//! name; consecutive members with the same key form one sample; a repeated field inside one
//! sample is an error; names like `__meta__` at top level are skipped.

use super::{ScanOutput, ShardScanner};
use crate::error::{Error, Result};
use arrow_schema::{DataType, Field, Schema};
use std::collections::BTreeMap;

const BLOCK: usize = 512;
/// Longest GNU long-name or pax header we accept; real ones are a few hundred bytes.
const MAX_META_RECORD: u64 = 1 << 20;

/// Counts samples and collects field names of a (decompressed) tar stream.
pub struct TarScanner {
    path: String,
    state: State,
    /// Partial header or metadata record being assembled.
    buf: Vec<u8>,
    /// Name carried over from a GNU `L` record or a pax `path=` for the next member.
    pending_name: Option<String>,
    current_key: Option<String>,
    current_fields: Vec<String>,
    samples: u64,
    /// Field name → number of samples carrying it (to mark optional fields nullable).
    fields: BTreeMap<String, u64>,
    offset: u64,
}

enum State {
    Header,
    /// Skipping `remaining` bytes of member data plus padding.
    Skip {
        remaining: u64,
    },
    /// Reading a metadata record (long name or pax) of `len` bytes, then `pad` bytes of padding.
    Meta {
        kind: MetaKind,
        len: u64,
        pad: u64,
    },
    /// Saw one zero block; a second ends the archive.
    OneZeroBlock,
    End,
}

#[derive(Clone, Copy)]
enum MetaKind {
    GnuLongName,
    Pax,
    Ignored,
}

impl TarScanner {
    pub fn new(path: impl Into<String>) -> Self {
        Self {
            path: path.into(),
            state: State::Header,
            buf: Vec::with_capacity(BLOCK),
            pending_name: None,
            current_key: None,
            current_fields: Vec::new(),
            samples: 0,
            fields: BTreeMap::new(),
            offset: 0,
        }
    }

    fn malformed(&self, reason: impl Into<String>) -> Error {
        Error::MalformedTar {
            path: self.path.clone(),
            reason: reason.into(),
        }
    }

    fn on_header(&mut self, block: &[u8]) -> Result<()> {
        if block.iter().all(|&b| b == 0) {
            self.state = State::OneZeroBlock;
            return Ok(());
        }
        verify_checksum(block)
            .map_err(|r| self.malformed(format!("{r} at byte {}", self.offset)))?;
        let size = parse_size(&block[124..136])
            .ok_or_else(|| self.malformed(format!("bad size field at byte {}", self.offset)))?;
        let padded = size.div_ceil(BLOCK as u64) * BLOCK as u64;
        let typeflag = block[156];
        match typeflag {
            b'L' | b'x' => {
                if size > MAX_META_RECORD {
                    return Err(self.malformed(format!("metadata record of {size} bytes")));
                }
                let kind = if typeflag == b'L' {
                    MetaKind::GnuLongName
                } else {
                    MetaKind::Pax
                };
                self.state = State::Meta {
                    kind,
                    len: size,
                    pad: padded - size,
                };
            }
            b'g' | b'K' => {
                self.state = State::Meta {
                    kind: MetaKind::Ignored,
                    len: size.min(MAX_META_RECORD),
                    pad: padded - size.min(MAX_META_RECORD),
                };
            }
            _ => {
                let name = match self.pending_name.take() {
                    Some(n) => n,
                    None => header_name(block),
                };
                // Regular files only ('0', NUL, and '7' contiguous files), as tarfile's isreg().
                if matches!(typeflag, b'0' | 0 | b'7') {
                    self.on_member(&name)?;
                }
                self.state = State::Skip { remaining: padded };
            }
        }
        Ok(())
    }

    fn on_member(&mut self, name: &str) -> Result<()> {
        let Some((key, field)) = split_key(name) else {
            return Ok(());
        };
        if !key.contains('/') && key.starts_with("__") && field.ends_with("__") {
            return Ok(());
        }
        if self.current_key.as_deref() != Some(key) {
            self.close_sample();
            self.current_key = Some(key.to_string());
        }
        if self.current_fields.iter().any(|f| f == field) {
            return Err(self.malformed(format!("duplicate file name {name:?} in one sample")));
        }
        self.current_fields.push(field.to_string());
        Ok(())
    }

    fn close_sample(&mut self) {
        if self.current_key.take().is_some() {
            self.samples += 1;
            for f in self.current_fields.drain(..) {
                *self.fields.entry(f).or_default() += 1;
            }
        }
    }

    fn on_meta(&mut self, kind: MetaKind, record: &[u8]) -> Result<()> {
        match kind {
            MetaKind::GnuLongName => {
                let end = record.iter().position(|&b| b == 0).unwrap_or(record.len());
                self.pending_name = Some(String::from_utf8_lossy(&record[..end]).into_owned());
            }
            MetaKind::Pax => {
                if let Some(path) = pax_path(record).map_err(|r| self.malformed(r))? {
                    self.pending_name = Some(path);
                }
            }
            MetaKind::Ignored => {}
        }
        Ok(())
    }
}

impl ShardScanner for TarScanner {
    fn feed(&mut self, mut data: &[u8]) -> Result<()> {
        while !data.is_empty() {
            match &mut self.state {
                State::End => return Ok(()),
                State::Skip { remaining } => {
                    let n = (*remaining).min(data.len() as u64);
                    *remaining -= n;
                    data = &data[n as usize..];
                    self.offset += n;
                    if *remaining == 0 {
                        self.state = State::Header;
                    }
                }
                State::Header | State::OneZeroBlock => {
                    let need = BLOCK - self.buf.len();
                    let n = need.min(data.len());
                    self.buf.extend_from_slice(&data[..n]);
                    data = &data[n..];
                    if self.buf.len() < BLOCK {
                        continue;
                    }
                    let block = std::mem::take(&mut self.buf);
                    let was_zero = matches!(self.state, State::OneZeroBlock);
                    if was_zero && block.iter().all(|&b| b == 0) {
                        self.state = State::End;
                    } else {
                        self.state = State::Header;
                        self.on_header(&block)?;
                    }
                    self.offset += BLOCK as u64;
                    self.buf = block;
                    self.buf.clear();
                }
                State::Meta { kind, len, pad } => {
                    let (kind, len, pad) = (*kind, *len, *pad);
                    let want = len as usize - self.buf.len();
                    let n = want.min(data.len());
                    self.buf.extend_from_slice(&data[..n]);
                    data = &data[n..];
                    self.offset += n as u64;
                    if self.buf.len() == len as usize {
                        let record = std::mem::take(&mut self.buf);
                        self.on_meta(kind, &record)?;
                        self.state = if pad == 0 {
                            State::Header
                        } else {
                            State::Skip { remaining: pad }
                        };
                    }
                }
            }
        }
        Ok(())
    }

    fn finish(mut self: Box<Self>) -> Result<ScanOutput> {
        match self.state {
            State::Header if self.buf.is_empty() => {}
            State::OneZeroBlock | State::End => {}
            State::Header => return Err(self.malformed("truncated in a header")),
            State::Skip { remaining } => {
                return Err(self.malformed(format!(
                    "truncated: {remaining} bytes of member data missing at the end"
                )))
            }
            State::Meta { .. } => return Err(self.malformed("truncated in a metadata record")),
        }
        if self.offset == 0 {
            return Err(self.malformed("empty file"));
        }
        self.close_sample();
        let samples = self.samples;
        let mut fields = vec![Field::new("__key__", DataType::Utf8, false)];
        fields.extend(
            self.fields
                .iter()
                .map(|(name, &count)| Field::new(name, DataType::Binary, count < samples)),
        );
        Ok(ScanOutput {
            num_samples: samples,
            schema: Schema::new(fields),
        })
    }
}

// Header helpers, shared with the loader's tar decoder (one parser for both readings).

/// WebDataset's `base_plus_ext`: key = directory + file name up to its first dot.
pub fn split_key(name: &str) -> Option<(&str, &str)> {
    let slash = name.rfind('/').map_or(0, |i| i + 1);
    let dot = name[slash..].find('.')? + slash;
    if dot == slash {
        return None;
    }
    Some((&name[..dot], &name[dot + 1..]))
}

/// A member's path from its 512-byte header (ustar prefix included).
pub fn header_name(block: &[u8]) -> String {
    let cstr = |b: &[u8]| {
        let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
        String::from_utf8_lossy(&b[..end]).into_owned()
    };
    let name = cstr(&block[0..100]);
    // POSIX ustar keeps a path prefix at 345..500; GNU tar ("ustar  ") uses that space otherwise.
    if &block[257..263] == b"ustar\0" {
        let prefix = cstr(&block[345..500]);
        if !prefix.is_empty() {
            return format!("{prefix}/{name}");
        }
    }
    name
}

/// An octal (or GNU base-256) numeric header field.
pub fn parse_size(field: &[u8]) -> Option<u64> {
    if field[0] & 0x80 != 0 {
        // GNU base-256 for sizes of 8 GiB and more.
        let mut v: u64 = u64::from(field[0] & 0x7f);
        for &b in &field[1..] {
            v = v.checked_mul(256)?.checked_add(u64::from(b))?;
        }
        return Some(v);
    }
    let text = std::str::from_utf8(field).ok()?;
    let text = text.trim_matches(|c: char| c == '\0' || c == ' ');
    if text.is_empty() {
        return Some(0);
    }
    u64::from_str_radix(text, 8).ok()
}

/// Checks a header block's checksum (unsigned or legacy signed sums).
pub fn verify_checksum(block: &[u8]) -> std::result::Result<(), String> {
    let stored = parse_size(&block[148..156]).ok_or("unreadable header checksum")?;
    let sum: u64 = block
        .iter()
        .enumerate()
        .map(|(i, &b)| {
            if (148..156).contains(&i) {
                32
            } else {
                u64::from(b)
            }
        })
        .sum();
    // Some old writers summed signed bytes; accept either.
    let signed: i64 = block
        .iter()
        .enumerate()
        .map(|(i, &b)| {
            if (148..156).contains(&i) {
                32
            } else {
                i64::from(b as i8)
            }
        })
        .sum();
    if stored == sum || stored as i64 == signed {
        Ok(())
    } else {
        Err("header checksum mismatch (not a tar file, or corrupt)".into())
    }
}

/// Extracts `path` from a pax extended header ("LEN key=value\n" records).
pub fn pax_path(mut record: &[u8]) -> std::result::Result<Option<String>, String> {
    let mut path = None;
    while !record.is_empty() {
        let space = record
            .iter()
            .position(|&b| b == b' ')
            .ok_or("bad pax record")?;
        let len: usize = std::str::from_utf8(&record[..space])
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or("bad pax record length")?;
        if len <= space + 1 || len > record.len() {
            return Err("bad pax record length".into());
        }
        let kv = &record[space + 1..len - 1];
        if let Some(v) = kv.strip_prefix(b"path=") {
            path = Some(String::from_utf8_lossy(v).into_owned());
        }
        record = &record[len..];
    }
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tar_of(members: &[(&str, &[u8])]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (name, data) in members {
            let mut h = tar::Header::new_gnu();
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            h.set_cksum();
            b.append_data(&mut h, name, *data).unwrap();
        }
        b.into_inner().unwrap()
    }

    fn scan(bytes: &[u8], chunk: usize) -> Result<ScanOutput> {
        let mut s = Box::new(TarScanner::new("t.tar"));
        for c in bytes.chunks(chunk.max(1)) {
            s.feed(c)?;
        }
        s.finish()
    }

    #[test]
    fn groups_consecutive_members_by_key() {
        let t = tar_of(&[
            ("a/000.jpg", b"x"),
            ("a/000.cls", b"1"),
            ("a/001.jpg", b"y"),
            ("a/002.jpg", b"z"),
            ("a/002.json", b"{}"),
        ]);
        for chunk in [1, 7, 512, 100_000] {
            let out = scan(&t, chunk).unwrap();
            assert_eq!(out.num_samples, 3);
            let names: Vec<_> = out
                .schema
                .fields()
                .iter()
                .map(|f| f.name().clone())
                .collect();
            assert_eq!(names, ["__key__", "cls", "jpg", "json"]);
            assert!(!out.schema.field_with_name("jpg").unwrap().is_nullable());
            assert!(out.schema.field_with_name("cls").unwrap().is_nullable());
        }
    }

    #[test]
    fn long_names_are_followed() {
        let long = format!("{}/sample.txt", "d".repeat(150));
        let t = tar_of(&[(long.as_str(), b"1"), ("x/other.txt", b"2")]);
        assert_eq!(scan(&t, 64).unwrap().num_samples, 2);
    }

    #[test]
    fn truncation_is_detected() {
        let t = tar_of(&[("a.txt", &[7u8; 3000]), ("b.txt", b"2")]);
        let err = scan(&t[..1500], 100).unwrap_err();
        assert!(err.to_string().contains("truncated"), "{err}");
        let err = scan(&t[..700], 100).unwrap_err();
        assert!(err.to_string().contains("truncated"), "{err}");
    }

    #[test]
    fn garbage_is_rejected() {
        let err = scan(&[b'x'; 2048], 512).unwrap_err();
        assert!(matches!(err, Error::MalformedTar { .. }), "{err}");
        let err = scan(&[], 512).unwrap_err();
        assert!(err.to_string().contains("empty"), "{err}");
    }

    #[test]
    fn duplicate_field_is_an_error() {
        let t = tar_of(&[("s/1.txt", b"a"), ("s/1.txt", b"b")]);
        assert!(scan(&t, 512).is_err());
    }

    #[test]
    fn keys_follow_webdataset() {
        assert_eq!(split_key("a/b.c.d"), Some(("a/b", "c.d")));
        assert_eq!(split_key("a.b/c"), None);
        assert_eq!(split_key("a/.hidden"), None);
        assert_eq!(split_key("x.jpg"), Some(("x", "jpg")));
    }

    proptest::proptest! {
        #[test]
        fn never_panics_on_arbitrary_bytes(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..4096), chunk in 1usize..700) {
            let _ = scan(&bytes, chunk);
        }
    }
}
