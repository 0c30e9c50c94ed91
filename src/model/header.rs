//! A `*.safetensors` file's header, read as hostile and checked against the
//! file's length (see [`crate::model`]).

use std::fmt;
use std::fs::File;
use std::io::{BufReader, Read};
use std::os::unix::fs::FileExt;

use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};

/// The largest header accepted: the safetensors format's own limit.
const MAX_HEADER: u64 = 100_000_000;

/// Buffer for reading a header or an index as it is parsed.
pub(super) const READ_BUFFER: usize = 64 << 10;

/// Whether a file name is one this module checks as a safetensors file.
pub fn is_safetensors(name: &str) -> bool {
    name.ends_with(".safetensors")
}

pub(super) fn dtype_size(dtype: &str) -> Option<u64> {
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
