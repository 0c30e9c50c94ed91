//! One listing for all the shards of a run (`--shard K/N --run-id ID`).
//!
//! Shards start seconds or minutes apart (pods scheduled one by one, a pod
//! restarted), and the source may change meanwhile. Shares computed from
//! listings made at different times disagree: a key that moved from one
//! share to another between two listings is fetched by neither, and a file
//! one shard just fetched is stale to a shard that listed before it was
//! published. So the first shard of a run to get here lists the source and
//! records the listing in the destination (`.s3load/run-ID.listing`, written
//! whole, then renamed into place, under `.s3load/run-ID.lock`); every other
//! shard of the run, and a shard that restarts, reads it instead of listing.
//! The shares, the split of large objects (pinned to the recorded ETags), the
//! stale paths and the `--max-delete` count all come from that one listing.
//!
//! A listing recorded for the same run id with another source or another
//! shard count is a mistake in the manifests (two Jobs given one id): the
//! run fails naming both. So is a shard given other flags that decide who
//! fetches what (`--part-size`, `--no-split`, `--verify off`, `--include`,
//! `--exclude`) than
//! the shard that recorded the listing: its share, or its pieces of a split
//! object, would not fit the others', and objects would be fetched by no
//! shard. Recorded listings of other runs are removed after
//! a day.
//!
//! The file holds a header line, one JSON line per object (key, size, ETag,
//! time), one per refused key with its reason, and an end line with the
//! counts, so that a file cut short is never taken for a listing.

use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::os::fd::OwnedFd;
use std::path::Path;
use std::time::{Duration, SystemTime};

use rustix::fs::{AtFlags, FlockOperation, OFlags};
use serde_json::json;

use super::{RefusedKey, SourceListing};
use crate::error::Error;
use crate::localfs::open::{self, own_file};
use crate::refusal::{KeyProblem, Refusal};
use crate::shard::Shard;
use crate::store::{ObjectMeta, ObjectStore};
use crate::url::S3Url;

const FORMAT: &str = "s3load-run-listing-1";
/// Listings of other runs older than this are removed by a sharded run.
const KEEP_OTHERS: Duration = Duration::from_secs(24 * 3600);

/// Whether `id` may name a run: 1 to 128 letters, digits, `.`, `_` or `-`
/// (a Job's uid or name), not starting with `.`.
pub fn valid_run_id(id: &str) -> bool {
    (1..=128).contains(&id.len())
        && !id.starts_with('.')
        && id.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// The listing of run `run_id` for `url`: read from the destination where a
/// shard of the run recorded it, else listed now and recorded.
pub async fn shared(
    store: &dyn ObjectStore,
    url: &S3Url,
    dst: &Path,
    shard: Shard,
    run_id: &str,
    flags: &str,
) -> Result<SourceListing, Error> {
    let run = Run { url, shard, id: run_id, flags };
    let dir_path = dst.join(open::STATE_DIR);
    let dir = open::state_dir(dst)?;
    let name = format!("run-{run_id}.listing");
    let lock = own_file(&dir, &dir_path, &format!("run-{run_id}.lock"), OFlags::CREATE | OFlags::WRONLY)?;
    // Held while the listing is read or made: a shard that comes second
    // waits for the first to record it.
    let lock =
        tokio::task::spawn_blocking(move || rustix::fs::flock(&lock, FlockOperation::LockExclusive).map(|()| lock))
            .await
            .map_err(|e| Error::Internal(format!("waiting for the run's listing lock: {e}")))?
            .map_err(|e| Error::io(dir_path.join(format!("run-{run_id}.lock")), "locking", e.into()))?;
    remove_old_listings(&dir, &name);
    let recorded = match own_file(&dir, &dir_path, &name, OFlags::RDONLY) {
        Ok(f) => Some(f),
        Err(Error::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(e),
    };
    let listing = match recorded {
        Some(f) => {
            let listing = read(f, &run, &dir_path.join(&name))?;
            tracing::info!(
                run = run_id,
                objects = listing.objects.len(),
                "using the run's listing, recorded by another shard"
            );
            listing
        }
        None => {
            let listing = super::list_source(store, url).await?;
            write(&dir, &dir_path, &name, &listing, &run)?;
            tracing::info!(
                run = run_id,
                objects = listing.objects.len(),
                "listed the source and recorded it for the run's other shards"
            );
            listing
        }
    };
    drop(lock);
    Ok(listing)
}

/// Removes recorded listings (their locks, and what a crash left half
/// written) of other runs, older than a day. A Job whose pods start more
/// than a day apart lists again for its later pods.
fn remove_old_listings(dir: &OwnedFd, keep: &str) {
    let Ok(d) = rustix::fs::Dir::read_from(dir) else { return };
    let now = SystemTime::now();
    for entry in d.flatten() {
        let Ok(name) = entry.file_name().to_str().map(str::to_string) else { continue };
        let ours = [".listing", ".lock", ".tmp"].iter().any(|s| name.ends_with(s));
        if !(name.starts_with("run-") && ours) || name == keep {
            continue;
        }
        let Ok(st) = rustix::fs::statat(dir, name.as_str(), AtFlags::SYMLINK_NOFOLLOW) else { continue };
        let modified = SystemTime::UNIX_EPOCH + Duration::from_secs(st.st_mtime.max(0) as u64);
        if now.duration_since(modified).is_ok_and(|age| age > KEEP_OTHERS) {
            let _ = rustix::fs::unlinkat(dir, name.as_str(), AtFlags::empty());
        }
    }
}

/// What every shard of one run must agree on.
struct Run<'a> {
    url: &'a S3Url,
    shard: Shard,
    id: &'a str,
    /// The flags that decide who fetches what, as the caller spells them.
    flags: &'a str,
}

fn header(run: &Run) -> serde_json::Value {
    json!({"format": FORMAT, "run": run.id, "source": run.url.to_string(), "shards": run.shard.count, "flags": run.flags})
}

fn write(dir: &OwnedFd, shown: &Path, name: &str, listing: &SourceListing, run: &Run) -> Result<(), Error> {
    let tmp = format!("{name}.{}.tmp", crate::localfs::unique_suffix());
    let f = own_file(dir, shown, &tmp, OFlags::CREATE | OFlags::EXCL | OFlags::WRONLY)?;
    let written = (|| -> std::io::Result<()> {
        let mut w = BufWriter::with_capacity(1 << 20, &f);
        writeln!(w, "{}", header(run))?;
        for o in listing.objects.iter() {
            let t = o.last_modified.map(|t| crate::state::to_ns(t).to_string());
            writeln!(w, "{}", json!({"k": o.key, "s": o.size, "e": o.etag, "t": t}))?;
        }
        for r in &listing.refused {
            writeln!(w, "{}", json!({"refused": r.key, "why": r.problem.to_string()}))?;
        }
        let end = json!({"end": true, "objects": listing.objects.len(), "refused": listing.refused.len(), "markers": listing.markers});
        writeln!(w, "{end}")?;
        w.flush()?;
        drop(w);
        // On disk before it is in place: a shard on another node reads it.
        f.sync_all()
    })();
    let placed = written.map_err(|e| Error::io(shown.join(&tmp), "writing", e)).and_then(|()| {
        rustix::fs::renameat(dir, tmp.as_str(), dir, name)
            .map_err(|e| Error::io(shown.join(name), "recording the run's listing", e.into()))
    });
    if placed.is_err() {
        let _ = rustix::fs::unlinkat(dir, tmp.as_str(), AtFlags::empty());
    }
    placed
}

fn read(f: File, run: &Run, shown: &Path) -> Result<SourceListing, Error> {
    let (url, shard, run_id) = (run.url, run.shard, run.id);
    let bad = |why: &str| Error::from(Refusal::BadRunListing { path: shown.to_path_buf(), why: why.to_string() });
    let mut lines = BufReader::with_capacity(1 << 20, f).lines();
    let first = lines.next().transpose().map_err(|e| Error::io(shown, "reading", e))?.unwrap_or_default();
    let head: serde_json::Value = serde_json::from_str(&first).map_err(|_| bad("not a run listing"))?;
    if head["format"] != FORMAT {
        return Err(bad("not a listing this s3load writes"));
    }
    let (source, shards) = (head["source"].as_str().unwrap_or_default(), head["shards"].as_u64().unwrap_or(0));
    if source != url.to_string() || shards != u64::from(shard.count) {
        return Err(Refusal::OtherRun {
            run_id: run_id.to_string(),
            listed_source: source.to_string(),
            listed_shards: shards,
            run_source: url.to_string(),
            shards: shard.count,
        }
        .into());
    }
    let Some(flags) = head["flags"].as_str() else {
        return Err(Refusal::RunFlagsUnknown { run_id: run_id.to_string() }.into());
    };
    if flags != run.flags {
        return Err(Refusal::RunFlagsDiffer {
            run_id: run_id.to_string(),
            recorded: flags.to_string(),
            given: run.flags.to_string(),
        }
        .into());
    }
    let mut out = SourceListing::default();
    for line in lines {
        let line = line.map_err(|e| Error::io(shown, "reading", e))?;
        let v: serde_json::Value = serde_json::from_str(&line).map_err(|_| bad("a line is damaged"))?;
        if v["end"] == true {
            let counts = (v["objects"].as_u64(), v["refused"].as_u64());
            if counts != (Some(out.objects.len() as u64), Some(out.refused.len() as u64)) {
                return Err(bad("its counts do not match its lines"));
            }
            let markers = v["markers"].as_u64().unwrap_or(0) as usize;
            super::finish_listing(&mut out);
            out.markers += markers;
            let keys: Vec<&str> = out.objects.iter().map(|o| o.key).collect();
            if keys.windows(2).any(|w| w[0] == w[1]) {
                return Err(bad("it names a key twice"));
            }
            return Ok(out);
        }
        if let Some(key) = v["refused"].as_str() {
            let problem = KeyProblem::Recorded(v["why"].as_str().unwrap_or_default().to_string());
            out.refused.push(RefusedKey { key: key.to_string(), problem });
            continue;
        }
        let (Some(key), Some(size)) = (v["k"].as_str(), v["s"].as_u64()) else {
            return Err(bad("a line is damaged"));
        };
        // Read as the listing it stands for: a key outside the source, or
        // one that maps to no safe path, is what a listing would not give.
        if !key.starts_with(url.prefix.as_str()) || !url.matches(key) {
            return Err(bad(&format!("it names {key:?}, which is not under {url}")));
        }
        let last_modified = v["t"].as_str().and_then(|t| t.parse::<i128>().ok()).map(from_ns);
        let meta = ObjectMeta {
            key: key.to_string(),
            size,
            etag: v["e"].as_str().map(str::to_string),
            last_modified,
            checksum: None,
            etag_md5: false,
            version_id: None,
        };
        super::add_listed(url, meta, &mut out);
    }
    Err(bad("it was cut short (no end line)"))
}

fn from_ns(ns: i128) -> SystemTime {
    let d = Duration::from_nanos(ns.unsigned_abs().min(u128::from(u64::MAX)) as u64);
    if ns < 0 { SystemTime::UNIX_EPOCH - d } else { SystemTime::UNIX_EPOCH + d }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_ids_cannot_name_other_files() {
        for bad in ["", ".", "..", "../x", "a/b", ".hidden", "x y", "é", "a\0b", &"x".repeat(129)] {
            assert!(!valid_run_id(bad), "{bad:?}");
        }
        for good in ["8d3a8c7e-5b0e-4a51-9d55-3f2b1c0e7a11", "load-model.v2_1", &"x".repeat(128)] {
            assert!(valid_run_id(good), "{good:?}");
        }
    }
}
