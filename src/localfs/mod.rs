//! The local filesystem layer: everything s3load does to the destination (or
//! upload source) directory goes through here.
//!
//! - [`dirs`]: directories below a root, created and opened without following
//!   symlinks, and `--delete`'s file removal through them;
//! - [`tempfile`]: the temporary file beside each destination, written with
//!   positional writes and renamed into place when complete and verified;
//!   leftovers of killed runs ([`remove_orphans`]);
//! - [`journal`]: the resume journal beside a resumable temporary file;
//! - [`filesystem`]: the destination's filesystem as a whole (free space,
//!   how it compares names, the end-of-run `syncfs`);
//! - [`open`]: every other directory and file opened by handle (the
//!   destination's root, `DEST/.s3load/` and its files, an upload's source
//!   files, a model check's files), never through a planted link or FIFO;
//! - [`iobuf`]: page-aligned write buffers;
//! - [`versions`]: the versions directory of `sync --atomic` (link, lock,
//!   history, switch, hard-linked trees, pruning).

pub mod dirs;
pub mod filesystem;
pub mod iobuf;
pub mod journal;
mod names;
pub mod open;
mod orphans;
mod split;
pub mod tempfile;
pub mod versions;

pub use dirs::{Dirs, remove_file};
pub use filesystem::{
    NameFolding, check_space, local_only_locks, name_folding, sync_filesystem, unique_suffix, writes_are_local,
};
pub use iobuf::{ALIGN, IoBuf};
pub use journal::{Recorded, SpentJournal};
pub use names::is_temp_name;
pub use open::STATE_DIR;
pub use orphans::remove_orphans;
pub use split::{PieceOf, remove_unneeded_splits};
pub use tempfile::{CACHE_WRITE, TempFile};

/// Raises this process's soft limit of open files to its hard limit, as Go
/// programs (s5cmd among them) do at start: a run keeps a file open per
/// object written or uploaded and a socket per request in flight, and the
/// soft limit a shell or container starts with (1024, or 256 on some
/// systems) is easily reached by a run of small files. Returns the limit now
/// in force (`None` if it could not be read).
pub fn raise_open_files_limit() -> Option<u64> {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let now = getrlimit(Resource::Nofile);
    match (now.current, now.maximum) {
        (Some(soft), Some(hard)) if soft < hard => {
            let raised = rustix::process::Rlimit { current: Some(hard), maximum: Some(hard) };
            Some(if setrlimit(Resource::Nofile, raised).is_ok() { hard } else { soft })
        }
        (Some(soft), None) => {
            // No hard limit: a soft one as high as Linux allows a process.
            let raised = rustix::process::Rlimit { current: Some(1 << 20), maximum: None };
            Some(if setrlimit(Resource::Nofile, raised).is_ok() { 1 << 20 } else { soft })
        }
        (soft, _) => soft,
    }
}
