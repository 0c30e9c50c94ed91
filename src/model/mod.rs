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

mod header;
mod index;

pub use header::{check_safetensors, is_safetensors};
pub use index::{check_index, is_index};

/// `--check-model`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CheckModel {
    /// Check `*.safetensors` headers before commit and `*.index.json` after the run.
    #[default]
    Auto,
    Off,
}

#[cfg(test)]
pub(crate) mod tests {
    use std::fs::File;

    use super::header::dtype_size;
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
        assert!(check_index(d.path(), &index).is_empty());
        write(serde_json::json!({"a.weight": "model-1.safetensors", "c": "model-2.safetensors"}));
        let p = check_index(d.path(), &index);
        assert!(p.len() == 1 && p[0].contains("model-2.safetensors, which is not in the destination"), "{p:?}");
        write(serde_json::json!({"zzz": "model-1.safetensors"}));
        assert!(check_index(d.path(), &index)[0].contains("does not hold it"));
        write(serde_json::json!({"a.weight": "../etc/passwd"}));
        assert!(check_index(d.path(), &index)[0].contains("not a file beside the index"));
        std::fs::write(&index, b"{\"no\": \"weight map\"}").unwrap();
        assert!(check_index(d.path(), &index).is_empty(), "not a weight index: nothing to check");
    }

    #[test]
    fn an_index_below_a_link_in_the_destination_is_not_checked_through_it() {
        let d = tempfile::tempdir().unwrap();
        let (dest, outside) = (d.path().join("dest"), d.path().join("outside"));
        std::fs::create_dir_all(&dest).unwrap();
        std::fs::create_dir_all(&outside).unwrap();
        std::fs::write(outside.join("model-1.safetensors"), safetensors(TENSORS, 0)).unwrap();
        let map = serde_json::json!({"metadata": {}, "weight_map": {"a.weight": "model-1.safetensors"}});
        std::fs::write(outside.join("model.safetensors.index.json"), map.to_string()).unwrap();
        assert!(check_index(&outside, &outside.join("model.safetensors.index.json")).is_empty(), "a good model");
        std::os::unix::fs::symlink(&outside, dest.join("sub")).unwrap();
        let p = check_index(&dest, &dest.join("sub/model.safetensors.index.json"));
        assert!(p.len() == 1 && p[0].contains("sub: is a symbolic link"), "{p:?}");
    }
}
