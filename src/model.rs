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

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;

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
    let mut header = vec![0u8; header_len as usize];
    file.read_exact_at(&mut header, 8).map_err(|e| format!("reading the header: {e}"))?;
    let parsed: BTreeMap<String, serde_json::Value> =
        serde_json::from_slice(&header).map_err(|e| format!("its header is not a JSON object: {e}"))?;
    let data_len = len - 8 - header_len;
    let mut tensors: Vec<(u64, u64, &str)> = Vec::new();
    for (name, t) in parsed.iter().filter(|(k, _)| k.as_str() != "__metadata__") {
        let dtype = t["dtype"].as_str().ok_or_else(|| format!("tensor {name:?} has no dtype"))?;
        let size = dtype_size(dtype).ok_or_else(|| format!("tensor {name:?} has an unknown dtype {dtype:?}"))?;
        let shape: Vec<u64> = t["shape"]
            .as_array()
            .and_then(|s| s.iter().map(serde_json::Value::as_u64).collect())
            .ok_or_else(|| format!("tensor {name:?} has no valid shape"))?;
        let offsets: Vec<u64> = t["data_offsets"]
            .as_array()
            .and_then(|s| s.iter().map(serde_json::Value::as_u64).collect())
            .filter(|o: &Vec<u64>| o.len() == 2)
            .ok_or_else(|| format!("tensor {name:?} has no valid data_offsets"))?;
        let (begin, end) = (offsets[0], offsets[1]);
        if begin > end || end > data_len {
            return Err(format!(
                "tensor {name:?} lies at bytes {begin}..{end} of a data section of {data_len} bytes: truncated or corrupt"
            ));
        }
        let expected = shape.iter().try_fold(size, |acc, d| acc.checked_mul(*d));
        if expected != Some(end - begin) {
            return Err(format!(
                "tensor {name:?} ({dtype} {shape:?}) needs {} bytes but has {}",
                expected.map_or("more than 2^64".to_string(), |e| e.to_string()),
                end - begin
            ));
        }
        tensors.push((begin, end, name));
    }
    tensors.sort();
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
    Ok(tensors.into_iter().map(|(_, _, n)| n.to_string()).collect())
}

/// Checks the weight index at `path` against the files beside it. Returns
/// what is wrong, one line each (empty: all good).
pub fn check_index(path: &Path) -> Vec<String> {
    let name = path.display();
    let text = match std::fs::read(path) {
        Ok(t) => t,
        Err(e) => return vec![format!("{name}: cannot be read: {e}")],
    };
    let parsed: serde_json::Value = match serde_json::from_slice(&text) {
        Ok(v) => v,
        Err(e) => return vec![format!("{name}: not JSON: {e}")],
    };
    let Some(map) = parsed["weight_map"].as_object() else {
        return Vec::new(); // not a weight index
    };
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut shards: HashMap<&str, Vec<&str>> = HashMap::new();
    let mut problems = Vec::new();
    for (tensor, shard) in map {
        match shard.as_str() {
            Some(s) if !s.contains('/') && !s.starts_with('.') => shards.entry(s).or_default().push(tensor),
            _ => problems.push(format!("{name}: tensor {tensor:?} maps to {shard}, not a file beside the index")),
        }
    }
    let mut names: Vec<&&str> = shards.keys().collect();
    names.sort();
    for shard in names {
        let file = dir.join(shard);
        let Ok(f) = File::open(&file) else {
            problems.push(format!("{name}: names {shard}, which is not in the destination"));
            continue;
        };
        if !is_safetensors(shard) {
            continue;
        }
        let len = f.metadata().map(|m| m.len()).unwrap_or(0);
        match check_safetensors(&f, len) {
            Err(why) => problems.push(format!("{}: {why}", file.display())),
            Ok(present) => {
                let present: std::collections::HashSet<&str> = present.iter().map(String::as_str).collect();
                if let Some(missing) = shards[shard].iter().find(|t| !present.contains(**t)) {
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
    fn an_index_must_name_present_shards_that_hold_its_tensors() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("model-1.safetensors"), safetensors(TENSORS, 0)).unwrap();
        let index = d.path().join("model.safetensors.index.json");
        let write = |map: serde_json::Value| {
            std::fs::write(&index, serde_json::json!({"metadata": {}, "weight_map": map}).to_string()).unwrap()
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
