//! A weight index (`*.index.json`): every shard it names present beside it,
//! and every tensor in its shard's header (see [`crate::model`]).

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::fs::File;
use std::io::{BufReader, Read};
use std::os::fd::OwnedFd;
use std::path::Path;

use rustix::fs::OFlags;

use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};

use super::header::{READ_BUFFER, check_safetensors, is_safetensors};
use crate::localfs::open::{self, OpenError};

/// The largest weight index read (a real one is a few MB: a name and a file
/// name per tensor).
const MAX_INDEX: u64 = 256 << 20;

/// Problems of one kind named one by one for an index; the rest are counted.
const MAX_PROBLEMS: usize = 20;

/// Whether a file name is a weight index (`model.safetensors.index.json`,
/// `diffusion_pytorch_model.safetensors.index.json`, `pytorch_model.bin.index.json`, ...).
pub fn is_index(name: &str) -> bool {
    name.ends_with(".index.json")
}

/// Opens `name` in the directory `dir` for reading without following a link
/// or blocking, and only if it is a regular file.
fn open_regular(dir: &OwnedFd, name: &str) -> Result<File, String> {
    open::regular_in(dir, name, OFlags::RDONLY).map_err(|e| match e {
        OpenError::Link => "is a symbolic link, not a file (links are not followed)".to_string(),
        OpenError::NotAFile => "is not a regular file".to_string(),
        OpenError::Io(e) if e.kind() == std::io::ErrorKind::NotFound => "is not in the destination".to_string(),
        OpenError::Io(e) => format!("cannot be opened: {e}"),
    })
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

/// Opens the directory `dir_path`: below `root` (the destination), one
/// directory at a time and never through a link, as the files were written.
fn open_index_dir(root: &Path, dir_path: &Path) -> Result<OwnedFd, String> {
    let Ok(rel) = dir_path.strip_prefix(root) else {
        return open::existing_dir(dir_path).map_err(|e| format!("{}: cannot be read: {e}", dir_path.display()));
    };
    let mut dir = open::existing_dir(root).map_err(|e| format!("{}: cannot be read: {e}", root.display()))?;
    let mut shown = root.to_path_buf();
    for c in rel.components() {
        shown.push(c);
        dir = open::existing_subdir(&dir, c).map_err(|e| match e {
            rustix::io::Errno::LOOP | rustix::io::Errno::NOTDIR => format!(
                "{}: is a symbolic link or a file where a directory of the destination is (links are not followed)",
                shown.display()
            ),
            e => format!("{}: cannot be read: {}", shown.display(), std::io::Error::from(e)),
        })?;
    }
    Ok(dir)
}

/// Checks the weight index at `path`, below the destination `root`, against
/// the files beside it. Returns what is wrong, one line each (empty: all
/// good).
pub fn check_index(root: &Path, path: &Path) -> Vec<String> {
    let name = path.display();
    let (Some(dir_path), Some(file_name)) = (path.parent(), path.file_name().and_then(|n| n.to_str())) else {
        return vec![format!("{name}: not a file name")];
    };
    let dir_path = open::or_dot(dir_path);
    let dir = match open_index_dir(open::or_dot(root), dir_path) {
        Ok(d) => d,
        Err(why) => return vec![why],
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
