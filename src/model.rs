//! Model structure checks (`--check-model auto`): a checksum proves the bytes
//! are the store's, not that the store holds a whole model. A truncated or
//! padded `*.safetensors` shard (uploaded that way, with a checksum of its
//! wrong bytes, or with none) loads as zeros where tensors are missing.
//!
//! - [`check_safetensors`] reads only the 8-byte header length and the JSON
//!   header, and compares them with the file's length: the header must fit,
//!   every tensor's `data_offsets` must lie in the data section, in order,
//!   without gaps or overlaps, the last ending exactly at the end of the file,
//!   and each tensor's byte length must be its shape's product times its
//!   dtype's size. Tensor data is never read.
//! - [`check_index`] reads a `*.index.json` (`weight_map`: tensor -> shard
//!   file) and checks that every shard it names is present beside it, and, for
//!   a safetensors shard, that the tensor is in that shard's header.
//!
//! Headers and indexes come from the store, so they are read as hostile:
//! both are parsed as they stream from the file, one entry at a time (no
//! JSON tree is built: a 17 MB header of 300,000 tensors and its index once
//! took 834 MiB that way). What is kept is each tensor's name and offsets, and a shape is
//! folded into its product as it is read, so a header of a million
//! dimensions costs nothing. Files named by an index are opened below the
//! index's directory without following links or blocking (`O_NOFOLLOW |
//! O_NONBLOCK`) and must be regular files: a FIFO or a planted link where a
//! shard should be is a problem reported, never a hang.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::fs::File;
use std::io::{BufReader, Read};
use std::os::unix::fs::FileExt;
use std::path::Path;

use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};

/// `--check-model`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CheckModel {
    /// Check `*.safetensors` headers before commit and `*.index.json` after the run.
    #[default]
    Auto,
    Off,
}

/// The largest header accepted: the safetensors format's own limit.
const MAX_HEADER: u64 = 100_000_000;

/// The largest weight index read (a real one is a few MB: a name and a file
/// name per tensor).
const MAX_INDEX: u64 = 256 << 20;

/// Problems of one kind named one by one for an index; the rest are counted.
const MAX_PROBLEMS: usize = 20;

/// Buffer for reading a header or an index as it is parsed.
const READ_BUFFER: usize = 64 << 10;

/// Whether a file name is one this module checks as a safetensors file.
pub fn is_safetensors(name: &str) -> bool {
    name.ends_with(".safetensors")
}

/// Whether a file name is a weight index (`model.safetensors.index.json`,
/// `diffusion_pytorch_model.safetensors.index.json`, `pytorch_model.bin.index.json`, ...).
pub fn is_index(name: &str) -> bool {
    name.ends_with(".index.json")
}

fn dtype_size(dtype: &str) -> Option<u64> {
    Some(match dtype {
        "BOOL" | "U8" | "I8" | "F8_E5M2" | "F8_E4M3" | "F8_E8M0" | "F4" | "F6_E2M3" | "F6_E3M2" => 1,
        "I16" | "U16" | "F16" | "BF16" => 2,
        "I32" | "U32" | "F32" => 4,
        "I64" | "U64" | "F64" | "C64" => 8,
        _ => return None,
    })
}

/// A tensor as its header entry describes it, read field by field.
struct Tensor {
    dtype: Option<String>,
    /// The product of the shape's dimensions (`None`: above 2^64), and the
    /// shape as text for messages (the first dimensions only).
    shape: Option<(Option<u64>, String)>,
    offsets: Option<(u64, u64)>,
}

/// A shape: the product of its dimensions, never the dimensions themselves.
struct ShapeSeed;

impl<'de> DeserializeSeed<'de> for ShapeSeed {
    type Value = (Option<u64>, String);
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for ShapeSeed {
    type Value = (Option<u64>, String);
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a list of dimensions")
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let (mut product, mut text, mut n) = (Some(1u64), String::from("["), 0usize);
        while let Some(d) = seq.next_element::<u64>()? {
            product = product.and_then(|p| p.checked_mul(d));
            n += 1;
            if n <= 8 {
                text.push_str(&format!("{}{d}", if n == 1 { "" } else { ", " }));
            } else if n == 9 {
                text.push_str(", ...");
            }
        }
        text.push(']');
        Ok((product, text))
    }
}

/// Two offsets, `[begin, end]`.
struct OffsetsSeed;

impl<'de> DeserializeSeed<'de> for OffsetsSeed {
    type Value = Option<(u64, u64)>;
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for OffsetsSeed {
    type Value = Option<(u64, u64)>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("two offsets")
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let begin = seq.next_element::<u64>()?;
        let end = seq.next_element::<u64>()?;
        let more = seq.next_element::<IgnoredAny>()?.is_some();
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(match (begin, end, more) {
            (Some(b), Some(e), false) => Some((b, e)),
            _ => None,
        })
    }
}

struct TensorSeed;

impl<'de> DeserializeSeed<'de> for TensorSeed {
    type Value = Tensor;
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Tensor, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for TensorSeed {
    type Value = Tensor;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a tensor's dtype, shape and data_offsets")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Tensor, A::Error> {
        let mut t = Tensor { dtype: None, shape: None, offsets: None };
        while let Some(field) = map.next_key::<String>()? {
            match field.as_str() {
                "dtype" => t.dtype = Some(map.next_value()?),
                "shape" => t.shape = Some(map.next_value_seed(ShapeSeed)?),
                "data_offsets" => t.offsets = map.next_value_seed(OffsetsSeed)?,
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(t)
    }
}

/// The header's entries, each checked as it is read; keeps (begin, end,
/// name) per tensor for the tiling check. A problem found in an entry is
/// kept in `problem` (the parser's own message would add a position).
struct HeaderVisitor<'a> {
    data_len: u64,
    tensors: &'a mut Vec<(u64, u64, String)>,
    problem: &'a mut Option<String>,
}

impl<'de> Visitor<'de> for HeaderVisitor<'_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON object of tensors")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while let Some(name) = map.next_key::<String>()? {
            if name == "__metadata__" {
                map.next_value::<IgnoredAny>()?;
                continue;
            }
            let t = map.next_value_seed(TensorSeed)?;
            if let Err(why) = check_tensor(&name, &t, self.data_len) {
                *self.problem = Some(why);
                return Err(de::Error::custom("a tensor is not valid"));
            }
            let (begin, end) = t.offsets.unwrap_or_default();
            self.tensors.push((begin, end, name));
        }
        Ok(())
    }
}

fn check_tensor(name: &str, t: &Tensor, data_len: u64) -> Result<(), String> {
    let dtype = t.dtype.as_deref().ok_or_else(|| format!("tensor {name:?} has no dtype"))?;
    let size = dtype_size(dtype).ok_or_else(|| format!("tensor {name:?} has an unknown dtype {dtype:?}"))?;
    let (product, shape) = t.shape.as_ref().ok_or_else(|| format!("tensor {name:?} has no valid shape"))?;
    let (begin, end) = t.offsets.ok_or_else(|| format!("tensor {name:?} has no valid data_offsets"))?;
    if begin > end || end > data_len {
        return Err(format!(
            "tensor {name:?} lies at bytes {begin}..{end} of a data section of {data_len} bytes: truncated or corrupt"
        ));
    }
    let expected = product.and_then(|p| p.checked_mul(size));
    if expected != Some(end - begin) {
        return Err(format!(
            "tensor {name:?} ({dtype} {shape}) needs {} bytes but has {}",
            expected.map_or("more than 2^64".to_string(), |e| e.to_string()),
            end - begin
        ));
    }
    Ok(())
}

/// The tensors a safetensors header names, after checking it against a file
/// of `len` bytes. Errors say what is wrong, for the user.
pub fn check_safetensors(file: &File, len: u64) -> Result<Vec<String>, String> {
    if len < 8 {
        return Err(format!("{len} bytes: shorter than the 8-byte header length"));
    }
    let mut n = [0u8; 8];
    file.read_exact_at(&mut n, 0).map_err(|e| format!("reading the header length: {e}"))?;
    let header_len = u64::from_le_bytes(n);
    if header_len > MAX_HEADER {
        return Err(format!("its header length {header_len} is above the format's limit of {MAX_HEADER} bytes"));
    }
    if 8 + header_len > len {
        return Err(format!("its header of {header_len} bytes runs past the end of the file ({len} bytes): truncated"));
    }
    let data_len = len - 8 - header_len;
    let header = BufReader::with_capacity(READ_BUFFER, ReadAt { file, at: 8, end: 8 + header_len });
    let (mut tensors, mut problem) = (Vec::new(), None);
    let mut de = serde_json::Deserializer::from_reader(header);
    let parsed = de::Deserializer::deserialize_map(
        &mut de,
        HeaderVisitor { data_len, tensors: &mut tensors, problem: &mut problem },
    )
    .and_then(|()| de.end());
    if let Some(why) = problem {
        return Err(why);
    }
    parsed.map_err(|e| format!("its header is not a JSON object: {e}"))?;
    tensors.sort_unstable();
    let mut at = 0;
    for (begin, end, name) in &tensors {
        if *begin != at {
            let what = if *begin < at { "overlaps the tensor before it" } else { "leaves a gap before it" };
            return Err(format!("tensor {name:?} at byte {begin} {what} (expected {at})"));
        }
        at = *end;
    }
    if at != data_len {
        return Err(format!(
            "its tensors end at byte {at} of a data section of {data_len} bytes: {} bytes of padding or a lost tensor",
            data_len - at
        ));
    }
    Ok(tensors.into_iter().map(|(_, _, n)| n).collect())
}

/// Bytes `at..end` of a file, read by position (the file's offset, which
/// another handle may share, is never moved).
struct ReadAt<'a> {
    file: &'a File,
    at: u64,
    end: u64,
}

impl Read for ReadAt<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let want = buf.len().min(usize::try_from(self.end - self.at).unwrap_or(usize::MAX));
        if want == 0 {
            return Ok(0);
        }
        let n = self.file.read_at(&mut buf[..want], self.at)?;
        if n == 0 {
            return Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "the file ended inside its header"));
        }
        self.at += n as u64;
        Ok(n)
    }
}

/// Opens `name` in the directory `dir` for reading without following a link
/// or blocking, and only if it is a regular file.
fn open_regular(dir: &File, name: &str) -> Result<File, String> {
    use rustix::fs::{FileType, Mode, OFlags};
    let flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC;
    let fd = rustix::fs::openat(dir, name, flags, Mode::empty()).map_err(|e| match e {
        rustix::io::Errno::LOOP => "is a symbolic link, not a file (links are not followed)".to_string(),
        rustix::io::Errno::NOENT => "is not in the destination".to_string(),
        e => format!("cannot be opened: {}", std::io::Error::from(e)),
    })?;
    let st = rustix::fs::fstat(&fd).map_err(|e| format!("cannot be read: {}", std::io::Error::from(e)))?;
    if FileType::from_raw_mode(st.st_mode) != FileType::RegularFile {
        return Err("is not a regular file".to_string());
    }
    Ok(File::from(fd))
}

/// A weight index, read as it streams: its `weight_map` grouped by shard.
#[derive(Default)]
struct WeightMap {
    /// Shard file -> its tensors.
    shards: HashMap<String, Vec<String>>,
    /// Tensors mapped to something that is not a file beside the index.
    outside: Vec<(String, String)>,
    present: bool,
}

struct IndexVisitor<'a>(&'a mut WeightMap);

impl<'de> Visitor<'de> for IndexVisitor<'_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON object")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while let Some(key) = map.next_key::<String>()? {
            if key == "weight_map" {
                self.0.present = true;
                map.next_value_seed(WeightMapSeed(self.0))?;
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(())
    }
}

/// What a `weight_map` entry maps a tensor to: a file name, or anything
/// else, skipped as it is read (an array of a million entries costs nothing).
enum ShardName {
    Name(String),
    Other,
}

impl<'de> serde::Deserialize<'de> for ShardName {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = ShardName;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a shard's file name")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<ShardName, E> {
                Ok(ShardName::Name(v.to_string()))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<ShardName, E> {
                Ok(ShardName::Name(v))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<ShardName, A::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(ShardName::Other)
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<ShardName, A::Error> {
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(ShardName::Other)
            }
            fn visit_bool<E: de::Error>(self, _: bool) -> Result<ShardName, E> {
                Ok(ShardName::Other)
            }
            fn visit_i64<E: de::Error>(self, _: i64) -> Result<ShardName, E> {
                Ok(ShardName::Other)
            }
            fn visit_u64<E: de::Error>(self, _: u64) -> Result<ShardName, E> {
                Ok(ShardName::Other)
            }
            fn visit_f64<E: de::Error>(self, _: f64) -> Result<ShardName, E> {
                Ok(ShardName::Other)
            }
            fn visit_unit<E: de::Error>(self) -> Result<ShardName, E> {
                Ok(ShardName::Other)
            }
        }
        d.deserialize_any(V)
    }
}

struct WeightMapSeed<'a>(&'a mut WeightMap);

impl<'de> DeserializeSeed<'de> for WeightMapSeed<'_> {
    type Value = ();
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for WeightMapSeed<'_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a map of tensor names to shard files")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while let Some(tensor) = map.next_key::<String>()? {
            match map.next_value::<ShardName>()? {
                ShardName::Name(s) if !s.contains('/') && !s.starts_with('.') && !s.is_empty() => {
                    self.0.shards.entry(s).or_default().push(tensor);
                }
                ShardName::Name(s) => self.0.outside.push((tensor, format!("{s:?}"))),
                ShardName::Other => self.0.outside.push((tensor, "something that is not a file name".into())),
            }
        }
        Ok(())
    }
}

/// Checks the weight index at `path` against the files beside it. Returns
/// what is wrong, one line each (empty: all good).
pub fn check_index(path: &Path) -> Vec<String> {
    let name = path.display();
    let (Some(dir_path), Some(file_name)) = (path.parent(), path.file_name().and_then(|n| n.to_str())) else {
        return vec![format!("{name}: not a file name")];
    };
    let dir_path = if dir_path.as_os_str().is_empty() { Path::new(".") } else { dir_path };
    let dir = match File::open(dir_path) {
        Ok(d) => d,
        Err(e) => return vec![format!("{}: cannot be read: {e}", dir_path.display())],
    };
    let index = match open_regular(&dir, file_name) {
        Ok(f) => f,
        Err(why) => return vec![format!("{name}: {why}")],
    };
    let size = index.metadata().map(|m| m.len()).unwrap_or(0);
    if size > MAX_INDEX {
        return vec![format!(
            "{name}: {size} bytes, more than a weight index holds ({MAX_INDEX} at most): not checked"
        )];
    }
    let mut map = WeightMap::default();
    let mut de = serde_json::Deserializer::from_reader(BufReader::with_capacity(READ_BUFFER, index.take(MAX_INDEX)));
    let parsed = de::Deserializer::deserialize_map(&mut de, IndexVisitor(&mut map)).and_then(|()| de.end());
    if let Err(e) = parsed {
        return vec![format!("{name}: not JSON: {e}")];
    }
    if !map.present {
        return Vec::new(); // not a weight index
    }
    let mut problems: Vec<String> = map
        .outside
        .iter()
        .take(MAX_PROBLEMS)
        .map(|(tensor, shard)| format!("{name}: tensor {tensor:?} maps to {shard}, not a file beside the index"))
        .collect();
    if map.outside.len() > MAX_PROBLEMS {
        problems.push(format!(
            "{name}: and {} more tensors that map to no file beside the index",
            map.outside.len() - MAX_PROBLEMS
        ));
    }
    let mut names: Vec<&String> = map.shards.keys().collect();
    names.sort();
    for shard in names {
        let f = match open_regular(&dir, shard) {
            Ok(f) => f,
            Err(why) if why.starts_with("is not in") => {
                problems.push(format!("{name}: names {shard}, which is not in the destination"));
                continue;
            }
            Err(why) => {
                problems.push(format!("{name}: names {shard}, which {why}"));
                continue;
            }
        };
        if !is_safetensors(shard) {
            continue;
        }
        let len = f.metadata().map(|m| m.len()).unwrap_or(0);
        match check_safetensors(&f, len) {
            Err(why) => problems.push(format!("{}: {why}", dir_path.join(shard).display())),
            Ok(present) => {
                let present: HashSet<&str> = present.iter().map(String::as_str).collect();
                if let Some(missing) = map.shards[shard].iter().find(|t| !present.contains(t.as_str())) {
                    problems.push(format!("{name}: maps tensor {missing:?} to {shard}, which does not hold it"));
                }
            }
        }
    }
    problems
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A safetensors file: `tensors` as (name, dtype, shape), data laid out in
    /// order; `data_extra` bytes appended (negative: cut).
    pub fn safetensors(tensors: &[(&str, &str, &[u64])], data_extra: i64) -> Vec<u8> {
        let mut header = serde_json::Map::new();
        let mut at = 0u64;
        for (name, dtype, shape) in tensors {
            let len = shape.iter().product::<u64>() * dtype_size(dtype).unwrap();
            header.insert(
                name.to_string(),
                serde_json::json!({"dtype": dtype, "shape": shape, "data_offsets": [at, at + len]}),
            );
            at += len;
        }
        header.insert("__metadata__".into(), serde_json::json!({"format": "pt"}));
        let h = serde_json::to_vec(&header).unwrap();
        let mut out = (h.len() as u64).to_le_bytes().to_vec();
        out.extend_from_slice(&h);
        let data_len = (at as i64 + data_extra).max(0) as usize;
        out.extend((0..data_len).map(|i| i as u8));
        out
    }

    fn check(bytes: &[u8]) -> Result<Vec<String>, String> {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("m.safetensors");
        std::fs::write(&p, bytes).unwrap();
        check_safetensors(&File::open(&p).unwrap(), bytes.len() as u64)
    }

    const TENSORS: &[(&str, &str, &[u64])] = &[("a.weight", "BF16", &[4, 8]), ("b.bias", "F32", &[8])];

    #[test]
    fn a_well_formed_file_passes_and_names_its_tensors() {
        assert_eq!(check(&safetensors(TENSORS, 0)).unwrap(), vec!["a.weight", "b.bias"]);
    }

    #[test]
    fn truncated_padded_and_lying_files_are_refused_with_what_is_wrong() {
        let cut = check(&safetensors(TENSORS, -10)).unwrap_err();
        assert!(cut.contains("truncated"), "{cut}");
        let padded = check(&safetensors(TENSORS, 300)).unwrap_err();
        assert!(padded.contains("padding"), "{padded}");
        let mut past = safetensors(TENSORS, 0);
        past[..8].copy_from_slice(&(1u64 << 20).to_le_bytes());
        assert!(check(&past).unwrap_err().contains("runs past the end"));
        let mut huge = safetensors(TENSORS, 0);
        huge[..8].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(check(&huge).unwrap_err().contains("limit"));
        assert!(check(&[1, 2, 3]).unwrap_err().contains("shorter"));
        // A header that is not JSON.
        let mut garbage = 4u64.to_le_bytes().to_vec();
        garbage.extend_from_slice(b"nope");
        assert!(check(&garbage).unwrap_err().contains("JSON"));
    }

    #[test]
    fn offsets_must_match_shapes_and_tile_the_data_section() {
        let header = |json: &str, data: usize| {
            let mut out = (json.len() as u64).to_le_bytes().to_vec();
            out.extend_from_slice(json.as_bytes());
            out.extend(std::iter::repeat_n(0u8, data));
            out
        };
        let overlap = r#"{"a":{"dtype":"U8","shape":[4],"data_offsets":[0,4]},"b":{"dtype":"U8","shape":[4],"data_offsets":[2,6]}}"#;
        assert!(check(&header(overlap, 6)).unwrap_err().contains("overlaps"));
        let gap = r#"{"a":{"dtype":"U8","shape":[4],"data_offsets":[0,4]},"b":{"dtype":"U8","shape":[2],"data_offsets":[6,8]}}"#;
        assert!(check(&header(gap, 8)).unwrap_err().contains("gap"));
        let shape = r#"{"a":{"dtype":"F32","shape":[4],"data_offsets":[0,4]}}"#;
        assert!(check(&header(shape, 4)).unwrap_err().contains("needs 16 bytes"));
        let overflow = r#"{"a":{"dtype":"F64","shape":[4294967296,4294967296],"data_offsets":[0,4]}}"#;
        assert!(check(&header(overflow, 4)).unwrap_err().contains("more than 2^64"));
        let dtype = r#"{"a":{"dtype":"Q4","shape":[4],"data_offsets":[0,4]}}"#;
        assert!(check(&header(dtype, 4)).unwrap_err().contains("unknown dtype"));
        let reversed = r#"{"a":{"dtype":"U8","shape":[0],"data_offsets":[4,0]}}"#;
        assert!(check(&header(reversed, 4)).is_err());
    }

    #[test]
    fn hostile_headers_are_refused_without_holding_their_parts() {
        let header = |json: &str, data: usize| {
            let mut out = (json.len() as u64).to_le_bytes().to_vec();
            out.extend_from_slice(json.as_bytes());
            out.extend(std::iter::repeat_n(0u8, data));
            out
        };
        // A shape of a million dimensions is folded into its product as it is read.
        let dims = vec!["1"; 1_000_000].join(",");
        let wide = format!(r#"{{"a":{{"dtype":"U8","shape":[{dims}],"data_offsets":[0,1]}}}}"#);
        assert_eq!(check(&header(&wide, 1)).unwrap(), vec!["a"]);
        let wrong = format!(r#"{{"a":{{"dtype":"U8","shape":[{dims},2],"data_offsets":[0,1]}}}}"#);
        let e = check(&header(&wrong, 1)).unwrap_err();
        assert!(e.contains("needs 2 bytes") && e.contains("...") && e.len() < 200, "{e}");
        // Trailing bytes after the object, a header that is an array, offsets of three.
        assert!(check(&header(r#"{} x"#, 0)).unwrap_err().contains("JSON"));
        assert!(check(&header(r#"[1,2]"#, 0)).unwrap_err().contains("JSON"));
        let three = r#"{"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1,2]}}"#;
        assert!(check(&header(three, 1)).unwrap_err().contains("no valid data_offsets"));
        // A header whose stated length runs into the data: not JSON, refused.
        let mut cut = header(r#"{"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]}}"#, 1);
        cut[..8].copy_from_slice(&20u64.to_le_bytes());
        assert!(check(&cut).is_err());
    }

    #[test]
    fn an_index_must_name_present_shards_that_hold_its_tensors() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("model-1.safetensors"), safetensors(TENSORS, 0)).unwrap();
        let index = d.path().join("model.safetensors.index.json");
        let write = |map: serde_json::Value| {
            std::fs::write(&index, serde_json::json!({"metadata": {}, "weight_map": map}).to_string()).unwrap();
        };
        write(serde_json::json!({"a.weight": "model-1.safetensors", "b.bias": "model-1.safetensors"}));
        assert!(check_index(&index).is_empty());
        write(serde_json::json!({"a.weight": "model-1.safetensors", "c": "model-2.safetensors"}));
        let p = check_index(&index);
        assert!(p.len() == 1 && p[0].contains("model-2.safetensors, which is not in the destination"), "{p:?}");
        write(serde_json::json!({"zzz": "model-1.safetensors"}));
        assert!(check_index(&index)[0].contains("does not hold it"));
        write(serde_json::json!({"a.weight": "../etc/passwd"}));
        assert!(check_index(&index)[0].contains("not a file beside the index"));
        std::fs::write(&index, b"{\"no\": \"weight map\"}").unwrap();
        assert!(check_index(&index).is_empty(), "not a weight index: nothing to check");
    }
}
