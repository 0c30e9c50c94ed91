//! Files in the record's directory (`DEST/.s3load/`), opened through its
//! handle: never through a link, never a FIFO, only regular files.

use std::fs::File;
use std::os::fd::OwnedFd;
use std::path::Path;

use rustix::fs::{Mode, OFlags};
use rustix::io::Errno;

use crate::error::Error;
use crate::refusal::{Place, Refusal};

pub(super) const DIR_FLAGS: OFlags = OFlags::DIRECTORY.union(OFlags::RDONLY).union(OFlags::CLOEXEC);

/// A planted symlink (or a file where the directory should be) in `.s3load/`.
pub(crate) fn planted(path: &Path) -> Error {
    Refusal::Planted { path: path.to_path_buf(), place: Place::RecordDir }.into()
}

/// Opens `name` in `dir` with `flags` and `O_NOFOLLOW`.
pub(crate) fn open_in(dir: &OwnedFd, shown: &Path, name: &str, flags: OFlags) -> Result<File, Error> {
    let path = shown.join(name);
    // Never blocks (a FIFO planted here would hang the run, lock held) and
    // never follows a link; only a regular file is s3load's.
    let flags = flags | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC;
    match rustix::fs::openat(dir, name, flags, Mode::from_raw_mode(0o644)) {
        Ok(fd) => match rustix::fs::fstat(&fd) {
            Ok(st) if rustix::fs::FileType::from_raw_mode(st.st_mode) == rustix::fs::FileType::RegularFile => {
                Ok(File::from(fd))
            }
            Ok(_) => Err(planted(&path)),
            Err(e) => Err(Error::io(&path, "reading", e.into())),
        },
        Err(Errno::LOOP | Errno::NOTDIR | Errno::ISDIR | Errno::NXIO) => Err(planted(&path)),
        Err(e) => Err(Error::io(&path, "opening", e.into())),
    }
}
