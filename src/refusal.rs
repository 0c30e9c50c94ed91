//! Why s3load will not go on with an object, a path or the whole run: each
//! refusal carries what it is about (the key, the path, the figures) and says
//! what is wrong and what to do. Code decides on the variant; users read its
//! message.

use std::path::PathBuf;

use crate::units::human_bytes;

/// A refusal: s3load stops short of doing something unsafe or impossible.
#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    /// A listed key that cannot be a file at the destination (the line that
    /// reports it names `object`, its URL).
    #[error("{problem}")]
    Key { object: String, problem: KeyProblem },
    /// A key the store would not delete, with the store's reason.
    #[error("{reason}")]
    NotDeleted { key: String, reason: String },
    /// Nothing in the source matched (`what`: "objects" or "files").
    #[error("no {what} match {given}{hint}")]
    NothingMatched { what: &'static str, given: String, hint: String },
    /// Something s3load did not make, where it writes, deletes or keeps its
    /// own files: never followed, written through or replaced.
    #[error("{}{}{}", path.display(), if *place == Place::RecordDir { " " } else { ": " }, place.message())]
    Planted { path: PathBuf, place: Place },
    /// DEST of `--atomic` exists and is not a link `--atomic` made.
    #[error(
        "{}: {what}; --atomic only switches a link it made (to {dir_name}/<version>): move it away, or run without --atomic",
        link.display()
    )]
    NotOurLink { link: PathBuf, what: String, dir_name: String },
    /// A path that is not plain and relative (a key mapped wrongly).
    #[error("{path}: not a plain relative path")]
    NotPlainPath { path: String },
    /// A path without a file name.
    #[error("{}: no file name", path.display())]
    NoFileName { path: PathBuf },
    /// The temporary file was replaced or removed while the object was written.
    #[error(
        "{}: the temporary file was replaced or removed by something else while the object was written; not moving \
         it into place (is another program writing into this directory?)",
        path.display()
    )]
    TempFileReplaced { path: PathBuf },
    /// Another run holds the lock on this piece of a split object.
    #[error("{}: another run is writing {piece} of this object; are two shards given the same index?", path.display())]
    PieceInUse { path: PathBuf, piece: String },
    /// A split object's file holds more bytes than the object.
    #[error("{}: holds {on_disk} bytes, more than the object's {size}; remove it and run again", path.display())]
    LargerThanObject { path: PathBuf, on_disk: u64, size: u64 },
    /// The destination's filesystem cannot hold the run.
    #[error(
        "not enough space on the filesystem holding {}: {} to download, {} available ({} short); free space or \
         choose another destination",
        dir.display(),
        human_bytes(*needed),
        human_bytes(*available),
        human_bytes(needed.saturating_sub(*available))
    )]
    NoSpace { dir: PathBuf, needed: u64, available: u64 },
    /// The store states a size no S3 object has (`url`'s); nothing was
    /// fetched or written.
    #[error(
        "{url}: the store states a size of {size} bytes, above the largest object S3 allows (5 TiB); nothing was \
         {done} (check the endpoint: it is not answering as S3 does)"
    )]
    ImpossibleSize { url: String, size: u64, done: &'static str },
    /// An object changed between its listing and its fetch, where the run
    /// must hold what it listed (an `--atomic` version).
    #[error(
        "{url}: changed since it was listed (ETag {now} now, {listed} listed); a version holds exactly what it was \
         named after, so this one is not switched: run again to build the new content"
    )]
    ChangedSinceListed { url: String, now: String, listed: String },
    /// A local file changed (or shrank) while it was uploaded.
    #[error("{}: {}; run again once it is complete", path.display(), if *shorter { "the file is shorter than when it was listed" } else { "the file changed while it was uploaded" })]
    FileChanged { path: PathBuf, shorter: bool },
    /// A multipart upload was completed or aborted by someone else.
    #[error(
        "{url}: CompleteMultipartUpload answered NoSuchUpload and the object now at the key is not this upload (size \
         or checksum differ): another writer, or the upload was aborted; run again"
    )]
    UploadLost { url: String },
    /// A recorded run listing that cannot be read.
    #[error(
        "{}: {why}; remove it to list the source again (every shard of the run must then start again)",
        path.display()
    )]
    BadRunListing { path: PathBuf, why: String },
    /// `--run-id` names a run of another source or shard count.
    #[error(
        "run {run_id} was listed for {listed_source} in {listed_shards} shards, and this run is {run_source} in \
         {shards}: each Job (each source and shard count) needs its own --run-id (for example the Job's uid from \
         the downward API)"
    )]
    OtherRun { run_id: String, listed_source: String, listed_shards: u64, run_source: String, shards: u32 },
    /// The run's listing does not say which flags its first shard had.
    #[error(
        "run {run_id}'s listing was recorded by an older s3load, which did not record its flags: give every shard of \
         a run the same s3load, or start the whole run again with a new --run-id"
    )]
    RunFlagsUnknown { run_id: String },
    /// Shards of one run given different flags that decide who fetches what.
    #[error(
        "run {run_id}'s listing was recorded by a shard given {recorded}, and this shard is given {given}: every shard \
         of a run needs the same --part-size, --no-split, --verify off, --include and --exclude (they decide which \
         shard fetches what); start this shard again with the flags the others had, or start the whole run again \
         with a new --run-id"
    )]
    RunFlagsDiffer { run_id: String, recorded: String, given: String },
    /// `rollback` with nothing to go back to (`kept`: DEST has a version,
    /// none before it is kept).
    #[error("{}: {}", dest.display(), if *kept { "no earlier version is kept to roll back to (see s3load versions)" } else { "no version to roll back from" })]
    NoRollback { dest: PathBuf, kept: bool },
}

impl Refusal {
    /// The object a refusal is about, where it is about one (its URL).
    pub fn object(&self) -> Option<&str> {
        match self {
            Refusal::Key { object, .. } => Some(object),
            _ => None,
        }
    }
}

/// Where a [`Refusal::Planted`] thing was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Place {
    /// A symlink where a file of the destination goes.
    DestinationFile,
    /// A symlink or a file where a directory of the destination goes.
    DestinationDir,
    /// A symlink or a file where a listed directory is deleted from.
    DeletedDir,
    /// In `DEST/.s3load/`, the sync record's directory.
    RecordDir,
    /// Where `--atomic` keeps a file of its own.
    VersionFile,
    /// Where a temporary file, a journal or a split object's shared file
    /// goes, beside a destination file.
    TempFile,
    /// Where `--atomic` keeps its versions.
    VersionsDir,
}

impl Place {
    fn message(self) -> &'static str {
        match self {
            Place::DestinationFile => {
                "is a symlink; s3load never writes through symlinks in the destination (remove it)"
            }
            Place::DestinationDir => {
                "is a symlink or a file where a directory is needed; s3load never writes through symlinks (remove it \
                 or choose another destination)"
            }
            Place::DeletedDir => "is a symlink or a file where a directory was listed; not deleting through it",
            Place::RecordDir => {
                "is a symlink or not what s3load created there; s3load never follows links in its record directory \
                 (remove it, and check who put it there)"
            }
            Place::TempFile => {
                "is not a file s3load made (a link, a FIFO or a directory) where it keeps a temporary file or its \
                 journal; remove it, and check who put it there"
            }
            Place::VersionFile => {
                "is not a file s3load made (a link, a FIFO or a directory); remove it, and check who put it there"
            }
            Place::VersionsDir => {
                "is a symlink or a file where s3load keeps versions; it never writes or switches through links \
                 (remove it, and check who put it there)"
            }
        }
    }
}

/// Why a listed key cannot be a file at the destination.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyProblem {
    /// Its path would escape the destination or cannot be a file name (`has`
    /// says what it has).
    #[error("key maps to an unsafe local path: it has {has}")]
    UnsafePath { has: &'static str },
    /// Its first component is the sync record's directory.
    #[error("the name {name} is reserved for s3load's sync record at the destination's root")]
    Reserved { name: &'static str },
    /// Its name has the form of s3load's own files beside a download.
    #[error(
        "the name has the form of s3load's own temporary, resume or journal files ('.NAME.s3load-tmp', \
         '.NAME.s3load-resume', '.NAME.s3load-journal', '.NAME.ID.s3load-split', '.NAME.ID.K.s3load-piece'), which \
         another object's download uses beside it; rename the object"
    )]
    LikeOwnFiles,
    /// The store states a size no S3 object has.
    #[error(
        "the store states a size of {size} bytes, above the largest object S3 allows (5 TiB); nothing was fetched \
         (check the endpoint: it is not answering as S3 does)"
    )]
    ImpossibleSize { size: u64 },
    /// Keys that would be one file on this destination.
    #[error(
        "keys {} would be one file on this destination, whose filesystem does not tell {differing} apart; rename all \
         but one of them, or use a destination on a filesystem that keeps names as they are",
        keys.iter().map(|k| format!("{k:?}")).collect::<Vec<_>>().join(" and ")
    )]
    OneFile { keys: Vec<String>, differing: &'static str },
    /// A key that is also the directory of other keys.
    #[error(
        "key collides with the keys below '{dir}/': a path cannot be both a file and a directory; the objects below \
         it are kept"
    )]
    FileAndDirectory { dir: String },
    /// Refused by the shard that recorded the run's listing, in its words.
    #[error("{0}")]
    Recorded(String),
}
