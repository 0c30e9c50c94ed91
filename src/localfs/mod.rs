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
//! - [`iobuf`]: page-aligned write buffers;
//! - [`versions`]: the versions directory of `sync --atomic` (link, lock,
//!   history, switch, hard-linked trees, pruning).

/// The directory below the destination's root that holds s3load's own files
/// (the sync record, its locks, a sharded run's listing).
pub const STATE_DIR: &str = ".s3load";

pub mod dirs;
pub mod filesystem;
pub mod iobuf;
pub mod journal;
pub mod tempfile;
pub mod versions;

pub use dirs::{Dirs, remove_file};
pub use filesystem::{
    NameFolding, check_space, local_only_locks, name_folding, sync_filesystem, unique_suffix, writes_are_local,
};
pub use iobuf::{ALIGN, IoBuf};
pub use journal::{Recorded, SpentJournal};
pub use tempfile::{PieceOf, TempFile, is_temp_name, remove_orphans, remove_unneeded_splits};
