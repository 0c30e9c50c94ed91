//! Resume: what a resumable temporary file must hold to be picked up by a
//! later run, and the check of the ranges an earlier run recorded.
//!
//! An object in several ranges is written to a fixed temporary name with a
//! journal beside it (see [`crate::localfs::journal`]). The journal's header
//! names the object's identity (URL, ETag, size), the range layout and how
//! ranges are hashed; a later run with the same header re-reads each recorded
//! range from disk and trusts it only when its hash matches. Anything else
//! (another ETag, another layout, a range with no hash to check) starts over.

use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use super::engine::Engine;
use super::object::ObjectState;
use super::parts::Ranges;
use super::settings::WriteMode;
use crate::error::Error;
use crate::integrity::{self, DigestKind, PartSum};
use crate::localfs::{PieceOf, Recorded, TempFile};

/// What a resumable temporary file must hold to be resumed: the object's
/// identity, the part layout and how parts are hashed.
fn journal_header(object: &ObjectState) -> String {
    let job = &object.job;
    let last = object.parts.last().start;
    format!(
        "object {}\netag {}\nsize {}\nparts {} {} {}\ndigest {:?}",
        job.source_url(),
        job.etag.as_deref().unwrap_or("-"),
        job.size,
        object.parts.len(),
        object.parts.first().end,
        last,
        object.range_kind(),
    )
}

/// [`rehash_recorded`] on the blocking pool, for `object`'s ranges in `tmp`;
/// interrupted when the run is stopped meanwhile.
async fn rehash(
    engine: &Engine,
    object: &ObjectState,
    tmp: &Arc<TempFile>,
    recorded: Vec<Recorded>,
) -> Result<Vec<(usize, Option<PartSum>)>, Error> {
    let (t, parts, kind, stop) = (tmp.clone(), object.parts, object.range_kind(), engine.stop.clone());
    let checked = engine.blocking_io(move || rehash_recorded(&parts, kind, &t, recorded, &stop)).await;
    if engine.stop.is_cancelled() {
        return Err(Error::Interrupted(object.job.source_url()));
    }
    Ok(checked)
}

/// The name shared by every shard's run for the file of an object split in
/// `count` pieces: a hash of the object's identity and range layout (the
/// journal header) and the count, so that two versions, layouts or shard
/// counts never write into one file.
fn split_id(header: &str, count: u32) -> String {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(format!("{header}\npieces {count}").as_bytes());
    digest[..8].iter().map(|b| format!("{b:02x}")).collect()
}

/// Checks the parts an earlier run recorded by reading them back from disk and
/// hashing them; those that match are not fetched again.
///
/// A part whose hash cannot be checked (an object with nothing to verify it
/// against, or `--verify off`) is fetched again: after a machine crash a part
/// the journal calls done may be zeros on disk, and only a hash tells. Stops
/// early (returning what it checked so far) when `stop` is cancelled.
pub(super) fn rehash_recorded(
    parts: &Ranges,
    kind: Option<DigestKind>,
    tmp: &TempFile,
    recorded: Vec<Recorded>,
    stop: &CancellationToken,
) -> Vec<(usize, Option<PartSum>)> {
    let mut buf = vec![0u8; 1 << 20];
    let mut out = Vec::new();
    let Some(kind) = kind else { return out };
    for r in recorded {
        if r.part >= parts.len() {
            continue;
        }
        let range = parts.get(r.part);
        let mut d = integrity::PartDigest::new(kind);
        let mut at = range.start;
        let mut ok = true;
        while at < range.end {
            if stop.is_cancelled() {
                return out;
            }
            let n = ((range.end - at) as usize).min(buf.len());
            if tmp.read_at(&mut buf[..n], at).is_err() {
                ok = false;
                break;
            }
            d.update(&buf[..n]);
            at += n as u64;
        }
        let sum = d.finish();
        if ok && sum.to_string() == r.hash {
            out.push((r.part, Some(sum)));
        }
    }
    out
}

/// The object's temporary file, created by the first part to start. An object
/// in several parts gets a resumable file: ranges an earlier run finished are
/// checked ([`rehash_recorded`]) and marked restored.
pub(super) async fn open(engine: &Engine, object: &ObjectState) -> Result<Arc<TempFile>, Error> {
    if let Some(t) = object.file() {
        return Ok(t);
    }
    // Other parts of the same object wait on `create` only for this moment.
    let _create = object.create.lock().await;
    if let Some(t) = object.file() {
        return Ok(t);
    }
    let (root, dest, size) = (object.job.root.clone(), object.job.dest.clone(), object.job.size);
    let direct = engine.cfg.write_mode == WriteMode::Direct;
    let t = if object.parts.len() > 1 {
        let header = journal_header(object);
        let hold = engine.cfg.journal_hold;
        let (t, recorded) = match object.job.piece {
            Some(piece) => {
                let n = object.parts.len();
                let pieces: Vec<bool> = (0..piece.count)
                    .map(|index| !crate::shard::Piece { index, ..piece }.ranges(n).is_empty())
                    .collect();
                let of = PieceOf { id: split_id(&header, piece.count), header, pieces, index: piece.index as usize };
                engine
                    .blocking_io(move || with_direct(TempFile::open_piece(&root, &dest, size, of, hold), direct))
                    .await?
            }
            None => {
                let open = move || with_direct(TempFile::open_resumable(&root, &dest, size, &header, hold), direct);
                engine.blocking_io(open).await?
            }
        };
        let t = Arc::new(t);
        if !recorded.is_empty() {
            let checked = rehash(engine, object, &t, recorded).await?;
            let count = checked.len();
            let bytes = object.restore(checked);
            tracing::info!(object = %object.job.source_url(), parts = count, of = object.parts.len(), "resuming: parts already on disk");
            engine.hooks.reporter.bytes(&object.job, bytes);
        }
        t
    } else {
        let dirs = engine.dirs.clone();
        Arc::new(engine.blocking_io(move || TempFile::create_in(&dirs, &root, &dest, size, true)).await?)
    };
    object.set_file(t.clone());
    Ok(t)
}

/// A temporary file just opened, with its direct view when asked for.
fn with_direct<T>(opened: Result<(TempFile, T), Error>, direct: bool) -> Result<(TempFile, T), Error> {
    let (mut t, more) = opened?;
    if direct {
        t.open_direct();
    }
    Ok((t, more))
}

/// This run's piece of a split object is all written: flushes it and marks
/// its journal complete. Returns whether this run finishes the object (see
/// [`TempFile::finishes_split`]); if so, the other pieces' ranges have been
/// read back from the shared file, checked against their journals' hashes and
/// marked restored, and the object is ready to be verified whole. A range
/// missing or not matching fails the object with a mismatch, so that it is
/// fetched again whole by this run.
pub(super) async fn piece_done(engine: &Engine, object: &ObjectState, tmp: &Arc<TempFile>) -> Result<bool, Error> {
    let t = tmp.clone();
    engine.blocking_io(move || t.piece_done()).await?;
    let t = tmp.clone();
    let Some(recorded) = engine.blocking_io(move || t.finishes_split()).await? else { return Ok(false) };
    let other = |p: usize| p < object.parts.len() && !object.mine.contains(&p) && !object.parts.get(p).is_empty();
    let mut recorded: Vec<Recorded> = recorded.into_iter().filter(|r| other(r.part)).collect();
    recorded.sort_by_key(|r| r.part);
    recorded.dedup_by_key(|r| r.part);
    let checked = rehash(engine, object, tmp, recorded).await?;
    if let Some(p) = (0..object.parts.len()).find(|&p| other(p) && checked.binary_search_by_key(&p, |c| c.0).is_err()) {
        let r = object.parts.get(p);
        return Err(Error::Mismatch(format!(
            "{}: bytes {}-{}, written by another shard into the shared object, are missing or do not match the hash \
             its journal gives; fetching the object whole",
            object.job.source_url(),
            r.start,
            r.end - 1
        )));
    }
    object.restore(checked);
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::integrity::Algorithm;

    /// A resumable file of two 4-byte parts, both written and journalled.
    fn journalled(dir: &std::path::Path) -> (TempFile, Vec<Recorded>, Ranges) {
        let dest = dir.join("w.bin");
        let (t, _) = TempFile::open_resumable(dir, &dest, 8, "h", std::time::Duration::ZERO).unwrap();
        let parts = Ranges::split(8, 4);
        let kind = DigestKind::Crc(Algorithm::Crc64Nvme);
        let mut recorded = Vec::new();
        for (i, (r, bytes)) in parts.iter().zip([b"abcd", b"efgh"]).enumerate() {
            t.write_at(bytes, r.start).unwrap();
            let mut d = integrity::PartDigest::new(kind);
            d.update(bytes);
            recorded.push(Recorded { part: i, hash: d.finish().to_string() });
        }
        (t, recorded, parts)
    }

    #[test]
    fn resumed_parts_are_trusted_only_when_their_hash_checks() {
        let d = tempfile::tempdir().unwrap();
        let (t, recorded, parts) = journalled(d.path());
        let go = tokio_util::sync::CancellationToken::new();
        let kind = Some(DigestKind::Crc(Algorithm::Crc64Nvme));
        assert_eq!(rehash_recorded(&parts, kind, &t, recorded.clone(), &go).len(), 2);
        // Zeros on disk where the journal says "done" (a crash before write-back).
        t.write_at(&[0; 4], 4).unwrap();
        let kept: Vec<usize> =
            rehash_recorded(&parts, kind, &t, recorded.clone(), &go).into_iter().map(|(p, _)| p).collect();
        assert_eq!(kept, vec![0]);
        // Nothing to check them against: none is trusted, all are fetched again.
        let unhashed: Vec<Recorded> = recorded.iter().map(|r| Recorded { hash: String::new(), ..r.clone() }).collect();
        assert!(rehash_recorded(&parts, None, &t, unhashed, &go).is_empty());
    }

    #[test]
    fn rehashing_resumed_parts_stops_when_the_run_is_stopped() {
        let d = tempfile::tempdir().unwrap();
        let (t, recorded, parts) = journalled(d.path());
        let stop = tokio_util::sync::CancellationToken::new();
        stop.cancel();
        assert!(rehash_recorded(&parts, Some(DigestKind::Crc(Algorithm::Crc64Nvme)), &t, recorded, &stop).is_empty());
    }
}
