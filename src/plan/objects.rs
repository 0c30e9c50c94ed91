//! A listing held packed: every key and ETag in one buffer, and a small
//! fixed-size entry per object.
//!
//! An [`ObjectMeta`] with its path is about 180 bytes plus three strings,
//! each its own allocation: some 290 bytes an object, held through planning
//! and, since jobs are made from it as the engine takes them, through the
//! transfer. Packed, an object is its key and ETag once (its path is the end
//! of its key) and 48 bytes: about 100 bytes for a typical key.

use std::time::{Duration, SystemTime};

use crate::integrity::Stated;
use crate::packed;
use crate::store::ObjectMeta;

/// What few objects have (a HEAD's checksum and version id): boxed, so
/// that the many without pay one pointer.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Extra {
    checksum: Option<Stated>,
    etag_md5: bool,
    version_id: Option<String>,
}

/// An unknown time.
const NO_TIME: i64 = i64::MIN;

#[derive(Debug, Clone)]
struct Entry {
    /// The key's offset in the buffer; its ETag follows it.
    at: usize,
    key_len: u32,
    /// Where the path starts in the key.
    rel_start: u32,
    /// `u32::MAX`: no ETag.
    etag_len: u32,
    size: u64,
    /// Nanoseconds since the epoch; [`NO_TIME`] when not known.
    modified: i64,
    extra: Option<Box<Extra>>,
}

/// Listed objects, each with its path below the destination (a suffix of
/// its key), in the order pushed until sorted.
#[derive(Debug, Default, Clone)]
pub struct Objects {
    buf: Vec<u8>,
    entries: Vec<Entry>,
}

/// One object, borrowed from [`Objects`].
#[derive(Debug, Clone, Copy)]
pub struct Object<'a> {
    pub key: &'a str,
    /// `/`-separated path relative to the destination directory (checked:
    /// no empty, `.` or `..` component; see [`super::paths`]).
    pub rel: &'a str,
    pub size: u64,
    /// As S3 returns it, without quotes.
    pub etag: Option<&'a str>,
    pub last_modified: Option<SystemTime>,
    extra: Option<&'a Extra>,
}

impl Object<'_> {
    /// The object as the store described it.
    pub fn meta(&self) -> ObjectMeta {
        ObjectMeta {
            key: self.key.to_string(),
            size: self.size,
            etag: self.etag.map(str::to_string),
            last_modified: self.last_modified,
            checksum: self.extra.and_then(|e| e.checksum),
            etag_md5: self.extra.is_some_and(|e| e.etag_md5),
            version_id: self.extra.and_then(|e| e.version_id.clone()),
        }
    }
}

impl Objects {
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Adds `meta`, whose path is the last `rel_len` bytes of its key.
    pub fn push(&mut self, meta: ObjectMeta, rel_len: usize) {
        let at = self.buf.len();
        packed::reserve(&mut self.buf, meta.key.len() + meta.etag.as_ref().map_or(0, String::len));
        packed::reserve(&mut self.entries, 1);
        self.buf.extend_from_slice(meta.key.as_bytes());
        let etag_len = match &meta.etag {
            Some(e) => {
                self.buf.extend_from_slice(e.as_bytes());
                e.len() as u32
            }
            None => u32::MAX,
        };
        let modified = meta.last_modified.map_or(NO_TIME, |t| {
            // Nanoseconds since the epoch; times past 2262 (or before 1677)
            // are held as the nearest that fits.
            let ns = crate::state::to_ns(t).clamp(i128::from(NO_TIME + 1), i128::from(i64::MAX));
            ns as i64
        });
        let extra = (meta.checksum.is_some() || meta.etag_md5 || meta.version_id.is_some())
            .then(|| Box::new(Extra { checksum: meta.checksum, etag_md5: meta.etag_md5, version_id: meta.version_id }));
        self.entries.push(Entry {
            at,
            key_len: meta.key.len() as u32,
            rel_start: (meta.key.len() - rel_len.min(meta.key.len())) as u32,
            etag_len,
            size: meta.size,
            modified,
            extra,
        });
    }

    pub fn get(&self, i: usize) -> Object<'_> {
        let e = &self.entries[i];
        let key_end = e.at + e.key_len as usize;
        let key = str_of(&self.buf[e.at..key_end]);
        let etag = (e.etag_len != u32::MAX).then(|| str_of(&self.buf[key_end..key_end + e.etag_len as usize]));
        let last_modified = (e.modified != NO_TIME).then(|| {
            let d = Duration::from_nanos(e.modified.unsigned_abs());
            if e.modified < 0 { SystemTime::UNIX_EPOCH - d } else { SystemTime::UNIX_EPOCH + d }
        });
        Object { key, rel: &key[e.rel_start as usize..], size: e.size, etag, last_modified, extra: e.extra.as_deref() }
    }

    pub fn rel(&self, i: usize) -> &str {
        let e = &self.entries[i];
        str_of(&self.buf[e.at + e.rel_start as usize..e.at + e.key_len as usize])
    }

    pub fn size(&self, i: usize) -> u64 {
        self.entries[i].size
    }

    pub fn iter(&self) -> impl ExactSizeIterator<Item = Object<'_>> + '_ {
        (0..self.len()).map(|i| self.get(i))
    }

    /// Sorts by path (byte order).
    pub fn sort(&mut self) {
        let buf = &self.buf;
        let rel = |e: &Entry| &buf[e.at + e.rel_start as usize..e.at + e.key_len as usize];
        self.entries.sort_unstable_by(|a, b| rel(a).cmp(rel(b)));
        self.entries.shrink_to_fit();
        self.buf.shrink_to_fit();
    }

    /// Keeps the objects for which `keep` (given the index and the object)
    /// holds; their bytes stay in the buffer.
    pub fn retain(&mut self, mut keep: impl FnMut(usize, Object<'_>) -> bool) {
        let mut i = 0;
        let keeps: Vec<bool> = self.iter().enumerate().map(|(i, o)| keep(i, o)).collect();
        self.entries.retain(|_| {
            i += 1;
            keeps[i - 1]
        });
    }
}

/// Written from a `&str`, sliced at its ends or at a suffix of it.
fn str_of(b: &[u8]) -> &str {
    std::str::from_utf8(b).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(key: &str, etag: Option<&str>, t: Option<SystemTime>) -> ObjectMeta {
        ObjectMeta {
            key: key.into(),
            size: 7,
            etag: etag.map(str::to_string),
            last_modified: t,
            checksum: None,
            etag_md5: false,
            version_id: None,
        }
    }

    #[test]
    fn objects_read_back_as_pushed_and_sort_by_path() {
        let epoch = SystemTime::UNIX_EPOCH;
        let times = [
            Some(epoch + Duration::new(1_700_000_000, 123_456_789)),
            Some(epoch - Duration::new(5, 250)),
            Some(epoch - Duration::new(5, 0)),
            None,
        ];
        let mut o = Objects::default();
        let mut want = Vec::new();
        for (i, t) in times.iter().enumerate() {
            let key = format!("pre/fix/{}-é", 9 - i);
            let etag = (i != 2).then(|| format!("e{i}"));
            let m = meta(&key, etag.as_deref(), *t);
            o.push(m.clone(), key.len() - "pre/".len());
            want.push(m);
        }
        let headed = ObjectMeta { version_id: Some("v".into()), etag_md5: true, ..meta("pre/x", Some(""), None) };
        o.push(headed.clone(), 1);
        want.push(headed);
        for (i, m) in want.iter().enumerate() {
            assert_eq!(o.get(i).meta(), *m);
        }
        assert_eq!(o.get(0).rel, "fix/9-é");
        assert_eq!(o.get(4).rel, "x");
        o.sort();
        let rels: Vec<&str> = o.iter().map(|x| x.rel).collect();
        assert_eq!(rels, ["fix/6-é", "fix/7-é", "fix/8-é", "fix/9-é", "x"]);
        o.retain(|_, x| x.etag.is_some() && x.rel != "x");
        let rels: Vec<&str> = (0..o.len()).map(|i| o.rel(i)).collect();
        assert_eq!(rels, ["fix/6-é", "fix/8-é", "fix/9-é"]);
        assert_eq!(o.size(0), 7);
        assert!(std::mem::size_of::<Entry>() <= 48, "{} bytes an entry", std::mem::size_of::<Entry>());
    }
}
