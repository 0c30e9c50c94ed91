//! The sync record in memory: one packed entry per path in one buffer, found
//! through a hash table of offsets.
//!
//! A [`Record`] as a struct is 200-odd bytes plus four strings, each its own
//! allocation; a `HashMap<String, Box<Record>>` of a million of them took
//! about 440 bytes a path. Packed, a path's entry is its bytes once, numbers
//! as varints, an MD5 ETag as 16 bytes, and the source URL as a shared base
//! (`s3://bucket/prefix/`) plus the path it ends with: about 70 bytes, and 9
//! more in the table. Entries are decoded into a [`Record`] when asked for.
//!
//! A path written again gets a new entry at the end of the buffer; the old
//! one stays as dead bytes until the table is dropped. A run writes each path
//! at most once or twice, so the buffer grows at most by what it records.

use std::borrow::Cow;
use std::hash::BuildHasher;

use hashbrown::HashTable;

use super::record::{Record, boot_id};

/// Set on an entry this run recorded (or forgot).
const TOUCHED: u8 = 1;
const REMOVED: u8 = 2;
/// Set on an entry whose file this run found at the destination.
const PRESENT: u8 = 4;

/// Records by path, packed.
#[derive(Default)]
pub struct Table {
    buf: Vec<u8>,
    /// Offsets into `buf` of each path's live entry.
    index: HashTable<usize>,
    hasher: std::collections::hash_map::RandomState,
    /// Sources' shared beginnings (`s3://bucket/prefix/`): a handful.
    bases: Vec<Box<str>>,
    /// An entry being encoded.
    scratch: Vec<u8>,
}

impl std::fmt::Debug for Table {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Table").field("entries", &self.index.len()).field("bytes", &self.buf.len()).finish()
    }
}

impl Table {
    pub fn len(&self) -> usize {
        self.index.len()
    }

    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    pub fn get(&self, path: &str) -> Option<Record> {
        self.find(path).map(|at| self.at(at))
    }

    /// Sets `rec` as `path`'s entry (a removal too: see [`Table::remove`]).
    /// A path already recorded is written over in place when its new entry
    /// is no longer than the old (the usual case: a file written again from
    /// a new version of its object encodes to the same length), so a run
    /// that writes every file again does not grow the buffer by a copy.
    pub fn insert(&mut self, rec: &Record, touched: bool) {
        let mut entry = std::mem::take(&mut self.scratch);
        entry.clear();
        self.encode(rec, touched, &mut entry);
        let hash = self.hasher.hash_one(rec.path.as_bytes());
        let old = self.index.find(hash, |&o| path_at(&self.buf, o) == rec.path.as_bytes()).copied();
        match old {
            Some(at) if self.decode(at).1 - at >= entry.len() => {
                self.buf[at..at + entry.len()].copy_from_slice(&entry);
            }
            _ => {
                let at = self.buf.len();
                crate::packed::reserve(&mut self.buf, entry.len());
                self.buf.extend_from_slice(&entry);
                let (buf, hasher) = (&self.buf, &self.hasher);
                match self.index.find_mut(hash, |&o| path_at(buf, o) == rec.path.as_bytes()) {
                    Some(slot) => *slot = at,
                    None => {
                        self.index.insert_unique(hash, at, |&o| hasher.hash_one(path_at(buf, o)));
                    }
                }
            }
        }
        self.scratch = entry;
    }

    /// Drops `path`'s entry.
    pub fn remove(&mut self, path: &str) {
        let hash = self.hasher.hash_one(path.as_bytes());
        let buf = &self.buf;
        if let Ok(e) = self.index.find_entry(hash, |&o| path_at(buf, o) == path.as_bytes()) {
            e.remove();
        }
    }

    /// Every entry's offset, in no order.
    pub fn offsets(&self) -> impl Iterator<Item = usize> + '_ {
        self.index.iter().copied()
    }

    pub fn path(&self, at: usize) -> &str {
        // Encoded from a `String`.
        std::str::from_utf8(path_at(&self.buf, at)).unwrap_or_default()
    }

    pub fn is_removed(&self, at: usize) -> bool {
        self.buf[at] & REMOVED != 0
    }

    pub fn is_touched(&self, at: usize) -> bool {
        self.buf[at] & TOUCHED != 0
    }

    /// Whether this run recorded the entry's file or found it on disk.
    pub fn is_here(&self, at: usize) -> bool {
        self.buf[at] & (TOUCHED | PRESENT) != 0
    }

    /// Notes that `path`'s file was found at the destination (in place: the
    /// entry is not written again).
    pub fn mark_present(&mut self, path: &str) {
        if let Some(at) = self.find(path) {
            self.buf[at] |= PRESENT;
        }
    }

    pub fn find(&self, path: &str) -> Option<usize> {
        let hash = self.hasher.hash_one(path.as_bytes());
        self.index.find(hash, |&o| path_at(&self.buf, o) == path.as_bytes()).copied()
    }

    /// Appends `r`'s entry to `b`.
    fn encode(&mut self, r: &Record, touched: bool, b: &mut Vec<u8>) {
        let flags = if touched { TOUCHED } else { 0 } | if r.removed { REMOVED } else { 0 };
        let base = r.source.strip_suffix(r.path.as_str()).filter(|_| !r.path.is_empty()).map(|base| self.base(base));
        let checksum =
            r.checksum.as_deref().map(|c| (c, packed_checksum(c).map(|(alg, hex, n)| (self.base(alg), hex, n))));
        b.push(flags);
        put_str(b, &r.path);
        put_var(b, u128::from(r.size));
        put_var(b, zigzag(r.mtime_ns));
        match base {
            Some(k) => put_var(b, k as u128 + 1),
            None => {
                put_var(b, 0);
                put_str(b, &r.source);
            }
        }
        match r.etag.as_deref().map(md5_etag) {
            None => b.push(0),
            Some(Some((digest, None))) => {
                b.push(2);
                b.extend_from_slice(&digest);
            }
            Some(Some((digest, Some(parts)))) => {
                b.push(3);
                b.extend_from_slice(&digest);
                put_var(b, u128::from(parts));
            }
            Some(None) => {
                b.push(1);
                put_str(b, r.etag.as_deref().unwrap_or_default());
            }
        }
        put_opt_str(b, r.version_id.as_deref());
        match checksum {
            None => b.push(0),
            Some((text, None)) => {
                b.push(1);
                put_str(b, text);
            }
            Some((_, Some((alg, hex, parts)))) => {
                b.push(2);
                put_var(b, alg as u128);
                put_var(b, hex.len() as u128);
                for pair in hex.as_bytes().chunks(2) {
                    b.push(pair.iter().fold(0, |acc, &c| (acc << 4) | nibble(c)) << (4 * (2 - pair.len())));
                }
                put_var(b, parts.map_or(0, |n| u128::from(n) + 1));
            }
        }
        match r.last_modified_ns {
            None => b.push(0),
            Some(t) => {
                b.push(1);
                put_var(b, zigzag(t));
            }
        }
        match r.boot.as_deref() {
            None => b.push(0),
            Some(id) if id == boot_id() => b.push(1),
            Some(id) => {
                b.push(2);
                put_str(b, id);
            }
        }
    }

    pub fn at(&self, at: usize) -> Record {
        self.decode(at).0
    }

    /// The entry at `at`, and where it ends.
    fn decode(&self, at: usize) -> (Record, usize) {
        let mut c = Cursor { buf: &self.buf, at };
        let flags = c.byte();
        let path = c.string();
        let size = c.var() as u64;
        let mtime_ns = unzigzag(c.var());
        let source = match c.var() {
            0 => c.string(),
            k => format!("{}{path}", self.bases[k as usize - 1]),
        };
        let etag = match c.byte() {
            0 => None,
            1 => Some(c.string()),
            tag => {
                let digest = c.take(16);
                let mut hex = String::with_capacity(40);
                hex.push('"');
                for d in digest {
                    hex.push_str(&format!("{d:02x}"));
                }
                if tag == 3 {
                    hex.push_str(&format!("-{}", c.var()));
                }
                hex.push('"');
                Some(hex)
            }
        };
        let version_id = c.opt_string();
        let checksum = match c.byte() {
            0 => None,
            1 => Some(c.string()),
            _ => {
                let alg = &self.bases[c.var() as usize];
                let digits = c.var() as usize;
                let mut text = String::with_capacity(alg.len() + digits + 8);
                text.push_str(alg);
                for (k, byte) in c.take(digits.div_ceil(2)).iter().enumerate() {
                    text.push(HEX[usize::from(byte >> 4)] as char);
                    if 2 * k + 1 < digits {
                        text.push(HEX[usize::from(byte & 15)] as char);
                    }
                }
                match c.var() {
                    0 => {}
                    n => text.push_str(&format!("-{}", n - 1)),
                }
                Some(text)
            }
        };
        let last_modified_ns = match c.byte() {
            0 => None,
            _ => Some(unzigzag(c.var())),
        };
        let boot = match c.byte() {
            0 => None,
            1 => Some(Cow::Borrowed(boot_id())),
            _ => Some(Cow::Owned(c.string())),
        };
        let rec = Record {
            path,
            removed: flags & REMOVED != 0,
            size,
            mtime_ns,
            source,
            etag,
            version_id,
            checksum,
            last_modified_ns,
            boot,
        };
        (rec, c.at)
    }

    fn base(&mut self, base: &str) -> usize {
        match self.bases.iter().position(|b| &**b == base) {
            Some(k) => k,
            None => {
                self.bases.push(base.into());
                self.bases.len() - 1
            }
        }
    }
}

/// `"<32 lowercase hex>"` or `"<32 lowercase hex>-N"`: the digest and N.
/// Anything else (upper case, other lengths, leading zeros in N) is kept as
/// text, so that every ETag decodes to exactly what was encoded.
fn md5_etag(etag: &str) -> Option<([u8; 16], Option<u64>)> {
    let inner = etag.strip_prefix('"')?.strip_suffix('"')?;
    let (hex, parts) = match inner.split_once('-') {
        Some((hex, n)) if !n.starts_with('0') && !n.is_empty() && n.bytes().all(|c| c.is_ascii_digit()) => {
            (hex, Some(n.parse().ok()?))
        }
        Some(_) => return None,
        None => (inner, None),
    };
    if hex.len() != 32 || !hex.bytes().all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f')) {
        return None;
    }
    let mut digest = [0u8; 16];
    for (i, d) in digest.iter_mut().enumerate() {
        *d = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).ok()?;
    }
    Some((digest, parts))
}

const HEX: &[u8; 16] = b"0123456789abcdef";

fn nibble(c: u8) -> u8 {
    match c {
        b'0'..=b'9' => c - b'0',
        _ => c - b'a' + 10,
    }
}

/// `ALGORITHM:hex` or `ALGORITHM:hex-N` (see [`super::checksum_text`]):
/// `ALGORITHM:`, the lowercase hex digits and N. Anything else is kept as text.
fn packed_checksum(text: &str) -> Option<(&str, &str, Option<u64>)> {
    let colon = text.find(':')?;
    let (alg, rest) = (&text[..=colon], &text[colon + 1..]);
    let (hex, parts) = match rest.split_once('-') {
        Some((hex, n)) if !n.is_empty() && !n.starts_with('0') && n.bytes().all(|c| c.is_ascii_digit()) => {
            (hex, Some(n.parse().ok()?))
        }
        Some(_) => return None,
        None => (rest, None),
    };
    let lower_hex = |c: u8| matches!(c, b'0'..=b'9' | b'a'..=b'f');
    (!hex.is_empty() && hex.bytes().all(lower_hex)).then_some((alg, hex, parts))
}

fn zigzag(v: i128) -> u128 {
    ((v << 1) ^ (v >> 127)) as u128
}

fn unzigzag(v: u128) -> i128 {
    ((v >> 1) as i128) ^ -((v & 1) as i128)
}

fn put_var(b: &mut Vec<u8>, mut v: u128) {
    while v >= 0x80 {
        b.push((v as u8) | 0x80);
        v >>= 7;
    }
    b.push(v as u8);
}

fn put_str(b: &mut Vec<u8>, s: &str) {
    put_var(b, s.len() as u128);
    b.extend_from_slice(s.as_bytes());
}

fn put_opt_str(b: &mut Vec<u8>, s: Option<&str>) {
    match s {
        None => put_var(b, 0),
        Some(s) => {
            put_var(b, s.len() as u128 + 1);
            b.extend_from_slice(s.as_bytes());
        }
    }
}

/// The path of the entry at `at` (after its flags byte).
fn path_at(buf: &[u8], at: usize) -> &[u8] {
    let mut c = Cursor { buf, at: at + 1 };
    let n = c.var() as usize;
    c.take(n)
}

struct Cursor<'a> {
    buf: &'a [u8],
    at: usize,
}

impl<'a> Cursor<'a> {
    fn byte(&mut self) -> u8 {
        self.at += 1;
        self.buf[self.at - 1]
    }

    fn var(&mut self) -> u128 {
        let (mut v, mut shift) = (0u128, 0);
        loop {
            let b = self.byte();
            v |= u128::from(b & 0x7f) << shift;
            if b < 0x80 {
                return v;
            }
            shift += 7;
        }
    }

    fn take(&mut self, n: usize) -> &'a [u8] {
        self.at += n;
        &self.buf[self.at - n..self.at]
    }

    fn string(&mut self) -> String {
        let n = self.var() as usize;
        String::from_utf8_lossy(self.take(n)).into_owned()
    }

    fn opt_string(&mut self) -> Option<String> {
        match self.var() as usize {
            0 => None,
            n => Some(String::from_utf8_lossy(self.take(n - 1)).into_owned()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::SUSPECT_MTIME;

    fn rec(path: &str) -> Record {
        Record {
            path: path.into(),
            removed: false,
            size: 1 << 40,
            mtime_ns: 1_700_000_000_123_456_789,
            source: format!("s3://b/p/{path}"),
            etag: Some("\"0123456789abcdef0123456789abcdef\"".into()),
            version_id: None,
            checksum: Some("CRC64NVME:1f".into()),
            last_modified_ns: Some(-5),
            boot: None,
        }
    }

    impl Table {
        fn touched(&self, path: &str) -> bool {
            self.find(path).is_some_and(|at| self.is_touched(at))
        }
    }

    #[test]
    fn every_record_decodes_to_what_was_encoded() {
        let mut t = Table::default();
        let other_boot = Record { boot: Some("another".into()), ..rec("b") };
        let cases = vec![
            rec("a"),
            other_boot,
            Record { boot: Some(boot_id().into()), mtime_ns: SUSPECT_MTIME, ..rec("c") },
            Record { etag: Some("\"0123456789abcdef0123456789abcdef-17\"".into()), ..rec("d") },
            // ETags kept as text: upper case, a leading zero, no quotes, short.
            Record { etag: Some("\"0123456789ABCDEF0123456789abcdef\"".into()), ..rec("e") },
            Record { etag: Some("\"0123456789abcdef0123456789abcdef-07\"".into()), ..rec("f") },
            Record { etag: Some("0123456789abcdef0123456789abcdef".into()), ..rec("g") },
            Record { etag: Some("\"x\"".into()), version_id: Some("v1".into()), ..rec("h") },
            // A source that does not end with the path.
            Record { source: "/local/elsewhere".into(), etag: None, last_modified_ns: None, ..rec("i") },
            Record { path: "é/ü".into(), source: "s3://b/é/ü".into(), ..rec("") },
            Record { path: String::new(), source: "s3://b/".into(), ..rec("") },
            Record { removed: true, ..Record::empty() },
            Record { size: u64::MAX, mtime_ns: i128::MAX, last_modified_ns: Some(i128::MIN), ..rec("j") },
            // Checksums packed (odd and even digits, parts) or kept as text.
            Record { checksum: Some("CRC32:0".into()), ..rec("k") },
            Record { checksum: Some("CRC32C:abc-3".into()), ..rec("l") },
            Record { checksum: Some(format!("SHA256:{}-12", "0f".repeat(32))), ..rec("m") },
            Record { checksum: Some("CRC32:ABC".into()), ..rec("n") },
            Record { checksum: Some("CRC32:12-03".into()), ..rec("o") },
            Record { checksum: Some("CRC32:".into()), ..rec("p") },
            Record { checksum: Some("no colon".into()), ..rec("q") },
            Record { checksum: Some("a:b:c".into()), ..rec("r") },
            Record { checksum: Some("CRC32:1-".into()), ..rec("s") },
        ];
        for (i, r) in cases.iter().enumerate() {
            let r = Record { path: format!("{i}/{}", r.path), ..r.clone() };
            t.insert(&r, i % 2 == 0);
            assert_eq!(t.get(&r.path).as_ref(), Some(&r));
            assert_eq!(t.touched(&r.path), i % 2 == 0);
        }
        assert_eq!(t.len(), cases.len());
    }

    #[test]
    fn a_later_entry_replaces_the_earlier_and_removal_drops_it() {
        let mut t = Table::default();
        for i in 0..10_000 {
            t.insert(&rec(&format!("k{i}")), false);
        }
        t.insert(&Record { size: 7, ..rec("k5") }, true);
        assert_eq!(t.len(), 10_000);
        assert_eq!(t.get("k5").unwrap().size, 7);
        assert!(t.touched("k5") && !t.touched("k6"));
        t.remove("k6");
        t.remove("absent");
        assert!(t.get("k6").is_none());
        assert_eq!(t.len(), 9_999);
        let mut paths: Vec<&str> = t.offsets().map(|at| t.path(at)).collect();
        paths.sort_unstable();
        assert_eq!(paths[..3], ["k0", "k1", "k10"]);
        assert!(t.buf.len() < 10_003 * 80, "packed: {} bytes", t.buf.len());
    }

    #[test]
    fn a_file_written_again_is_recorded_in_place_and_a_longer_entry_moves() {
        let mut t = Table::default();
        for i in 0..1000 {
            t.insert(&rec(&format!("k{i}")), false);
        }
        let len = t.buf.len();
        // Every file written again from a new version: a new ETag, time and
        // checksum of the same lengths.
        for i in 0..1000 {
            let new = Record {
                etag: Some("\"ffffffffffffffffffffffffffffffff\"".into()),
                mtime_ns: 1_700_000_999_000_000_000,
                checksum: Some("CRC64NVME:2e".into()),
                ..rec(&format!("k{i}"))
            };
            t.insert(&new, true);
            assert_eq!(t.get(&new.path), Some(new));
        }
        assert_eq!(t.buf.len(), len, "written over in place");
        assert!(t.offsets().all(|at| t.is_touched(at)));
        // Shorter (no checksum) stays in place; longer moves, and its
        // neighbours are untouched.
        t.insert(&Record { checksum: None, ..rec("k1") }, false);
        assert_eq!(t.buf.len(), len);
        let long = Record { version_id: Some("v".repeat(300)), ..rec("k2") };
        t.insert(&long, false);
        assert!(t.buf.len() > len);
        assert_eq!(t.get("k2"), Some(long));
        assert_eq!(t.get("k1"), Some(Record { checksum: None, ..rec("k1") }));
        assert_eq!(t.get("k3").unwrap().checksum.as_deref(), Some("CRC64NVME:2e"));
    }
}
