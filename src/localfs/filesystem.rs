//! The destination filesystem as a whole: room before a run, durability after it.
//!
//! Before downloading, s3load compares the bytes it is about to write with the
//! space available to this user on the destination's filesystem, so a run that
//! cannot fit fails at once with the figures instead of after filling the disk.
//! After the last file is renamed into place, one `syncfs` puts every written
//! file and directory entry on disk before the exit code reports success: one
//! call for the whole run, where per-file `fsync` costs a round trip to the
//! device for each of thousands of small files.

use std::path::{Path, PathBuf};

use rustix::fs::{AtFlags, Mode, OFlags};

use crate::error::Error;
use crate::refusal::Refusal;

/// The nearest existing directory at or above `path` (the destination may not
/// exist yet; its filesystem is that of its closest existing ancestor).
fn existing_ancestor(path: &Path) -> PathBuf {
    let mut p = if path.as_os_str().is_empty() { Path::new(".") } else { path };
    loop {
        if p.is_dir() {
            return p.to_path_buf();
        }
        match p.parent() {
            Some(parent) if !parent.as_os_str().is_empty() => p = parent,
            _ => return PathBuf::from("."),
        }
    }
}

/// Why `flock` on the destination's filesystem would not reach other
/// machines, when it would not: an NFS mount with `local_lock=flock|all` or
/// `nolock`, or a CIFS mount with `nobrl`, takes locks on this machine only.
/// `None` when the locks are shared (local filesystems, NFSv4 by default) or
/// the mount table cannot be read. Objects are split across shards (`--shard`)
/// only where the locks are shared.
pub fn local_only_locks(dest: &Path) -> Option<String> {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    let dir = std::fs::canonicalize(existing_ancestor(dest)).ok()?;
    local_only_locks_in(&mountinfo, &dir)
}

fn local_only_locks_in(mountinfo: &str, dir: &Path) -> Option<String> {
    // The mount whose mount point is the longest prefix of `dir` (the last
    // listed wins a tie: it is mounted over the earlier one).
    let mut best: Option<(usize, &str, &str, String)> = None;
    for line in mountinfo.lines() {
        let Some((left, right)) = line.split_once(" - ") else { continue };
        let Some(point) = left.split(' ').nth(4) else { continue };
        let point = unescape_mount_path(point);
        if !dir.starts_with(&point) {
            continue;
        }
        let mut r = right.split(' ');
        let (Some(fstype), Some(_source), Some(options)) = (r.next(), r.next(), r.next()) else { continue };
        let depth = Path::new(&point).components().count();
        if best.as_ref().is_none_or(|b| depth >= b.0) {
            best = Some((depth, fstype, options, point));
        }
    }
    let (_, fstype, options, point) = best?;
    let has = |o: &str| options.split(',').any(|x| x == o);
    let local = match fstype {
        "nfs" | "nfs4" => has("nolock") || has("local_lock=flock") || has("local_lock=all"),
        "cifs" | "smb3" => has("nobrl"),
        _ => false,
    };
    local.then(|| format!("{point} is mounted {fstype} with locks local to this machine ({options})"))
}

/// Whether the destination's filesystem keeps what is written on this
/// machine (a local disk or memory: ext2/3/4, XFS, btrfs, F2FS, ZFS, tmpfs,
/// ramfs, overlayfs), so that a write into the page cache takes microseconds
/// and may run on the async threads (see `transfer::Engine::write_io`).
/// Network and user-space filesystems (NFS, EFS, Lustre, SMB, FUSE), and any
/// the kernel names otherwise, are not: a write there can wait on a server.
pub fn writes_are_local(dest: &Path) -> bool {
    const LOCAL: [u64; 8] = [
        0xEF53,      // ext2, ext3, ext4
        0x5846_5342, // XFS
        0x9123_683E, // btrfs
        0xF2F5_2010, // F2FS
        0x2FC1_2FC1, // ZFS
        0x0102_1994, // tmpfs
        0x794C_7630, // overlayfs
        0x8584_58F6, // ramfs
    ];
    rustix::fs::statfs(existing_ancestor(dest)).is_ok_and(|s| LOCAL.contains(&(s.f_type as u64)))
}

/// A mount point as `/proc/self/mountinfo` writes it: space, tab, newline and
/// backslash as three octal digits.
fn unescape_mount_path(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let octal = b.get(i + 1..i + 4).filter(|d| b[i] == b'\\' && d.iter().all(|c| (b'0'..=b'7').contains(c)));
        match octal {
            Some(d) => {
                out.push((d[0] - b'0') * 64 + (d[1] - b'0') * 8 + (d[2] - b'0'));
                i += 4;
            }
            None => {
                out.push(b[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Which names the destination's filesystem takes for the same name.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NameFolding {
    /// `Model.bin` is `model.bin` (macOS, Windows shares, some NAS volumes).
    pub case: bool,
    /// `é` composed and decomposed are one name (macOS, some SMB/ONTAP settings).
    pub unicode: bool,
}

impl NameFolding {
    pub fn any(self) -> bool {
        self.case || self.unicode
    }

    /// What the filesystem makes of `name`: two names with the same fold are one file.
    pub fn fold(self, name: &str) -> String {
        use unicode_normalization::UnicodeNormalization;
        let n: String = if self.unicode { name.nfc().collect() } else { name.to_string() };
        if self.case { n.to_lowercase() } else { n }
    }
}

/// Asks the filesystem of `dir` (an existing directory s3load may write in)
/// whether it tells letter case and Unicode forms apart: creates a probe file
/// and looks it up under another case and another normal form. Reads as
/// byte-exact (ext4, xfs) when the probe cannot be made.
pub fn name_folding(dir: &Path) -> NameFolding {
    let Ok(d) = super::open::existing_dir(dir) else { return NameFolding::default() };
    let stem = format!(".s3load-probe-{}-", unique_suffix());
    let probe = format!("{stem}a\u{e9}");
    let create = OFlags::CREATE | OFlags::EXCL | OFlags::WRONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    if rustix::fs::openat(&d, probe.as_str(), create, Mode::from_raw_mode(0o600)).is_err() {
        tracing::debug!(dir = %dir.display(), "could not probe how the filesystem compares names");
        return NameFolding::default();
    }
    let exists = |name: &str| rustix::fs::statat(&d, name, AtFlags::SYMLINK_NOFOLLOW).is_ok();
    let folding = NameFolding { case: exists(&format!("{stem}A\u{e9}")), unicode: exists(&format!("{stem}ae\u{301}")) };
    let _ = rustix::fs::unlinkat(&d, probe.as_str(), AtFlags::empty());
    folding
}

/// 16 random hex digits, for the names of files s3load makes beside others'
/// (a probe, a new link): every pod's main process is PID 1, so a PID does
/// not tell two pods on one volume apart. Callers still create with `O_EXCL`
/// (or `symlink`, which never replaces).
pub fn unique_suffix() -> String {
    let mut b = [0u8; 8];
    if rustix::rand::getrandom(&mut b, rustix::rand::GetRandomFlags::empty()).map_or(true, |n| n < b.len()) {
        // No random source: the time and PID differ between runs in practice.
        let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        b = (t.as_nanos() as u64 ^ (u64::from(std::process::id()) << 40)).to_le_bytes();
    }
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Fails when `needed` bytes do not fit in the space available at `dest`.
pub fn check_space(dest: &Path, needed: u64) -> Result<(), Error> {
    let dir = existing_ancestor(dest);
    let st = rustix::fs::statvfs(&dir).map_err(|e| Error::io(&dir, "reading free space", e.into()))?;
    let available = st.f_bavail.saturating_mul(st.f_frsize);
    if needed > available {
        return Err(Refusal::NoSpace { dir: dir.clone(), needed, available }.into());
    }
    Ok(())
}

/// Flushes the whole filesystem holding `dest` to disk (`syncfs`).
pub fn sync_filesystem(dest: &Path) -> Result<(), Error> {
    let dir = existing_ancestor(dest);
    let fd = super::open::existing_dir(&dir).map_err(|e| Error::io(&dir, "opening for syncfs", e))?;
    rustix::fs::syncfs(&fd).map_err(|e| Error::io(&dir, "flushing the filesystem to disk (syncfs)", e.into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_are_local_on_a_local_disk_or_tmpfs_and_not_elsewhere() {
        let dir = tempfile::tempdir().unwrap();
        // Whatever holds the temporary directory here (ext4, overlayfs, tmpfs).
        assert!(writes_are_local(dir.path()), "{}", dir.path().display());
        // A destination that does not exist yet: its nearest existing ancestor.
        assert!(writes_are_local(&dir.path().join("not/yet")));
        // Not a filesystem that keeps data (procfs): the blocking pool.
        assert!(!writes_are_local(Path::new("/proc/self")));
    }

    #[test]
    fn the_name_probe_is_named_at_random_and_leaves_another_processs_probe_alone() {
        let d = tempfile::tempdir().unwrap();
        // Another pod's probe in the making, named as PID-based names were
        // (every pod's main process is PID 1, so it would have been ours too).
        let theirs = d.path().join(format!(".s3load-probe-{}-a\u{e9}", std::process::id()));
        std::fs::write(&theirs, b"").unwrap();
        let folding = name_folding(d.path());
        assert_eq!((folding.case, folding.unicode), (false, false), "ext4 or tmpfs here: names are byte-exact");
        assert!(theirs.exists(), "the other probe is left in place");
        let left: Vec<_> = std::fs::read_dir(d.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(left.len(), 1, "this probe removed its own file and only it: {left:?}");
        // Names differ from call to call, and are 16 hex digits.
        let (a, b) = (unique_suffix(), unique_suffix());
        assert_ne!(a, b);
        assert!(a.len() == 16 && a.chars().all(|c| c.is_ascii_hexdigit()), "{a}");
    }

    #[test]
    fn locks_local_to_one_machine_are_told_from_the_mount_table() {
        let table = "\
22 1 252:1 / / rw,relatime shared:1 - ext4 /dev/vda rw,discard
40 22 0:45 / /mnt/efs rw,relatime shared:2 - nfs4 fs-1.efs:/ rw,vers=4.1,rsize=1048576,hard,local_lock=none,addr=10.0.0.1
41 22 0:46 / /mnt/old rw,relatime shared:3 - nfs 10.0.0.2:/export rw,vers=3,nolock,addr=10.0.0.2
42 22 0:47 / /mnt/flock rw,relatime shared:4 - nfs4 10.0.0.3:/ rw,vers=4.2,local_lock=flock
43 42 0:48 / /mnt/flock/inner rw,relatime shared:5 - ext4 /dev/vdb rw
44 22 0:49 / /mnt/with\\040space rw - cifs //nas/share rw,nobrl
";
        let at = |p: &str| local_only_locks_in(table, Path::new(p));
        assert_eq!(at("/work/model"), None, "a local disk");
        assert_eq!(at("/mnt/efs/models/m"), None, "NFSv4 carries flock to the server");
        assert!(at("/mnt/old/m").unwrap().contains("nolock"));
        assert!(at("/mnt/flock").unwrap().contains("/mnt/flock is mounted nfs4"));
        assert_eq!(at("/mnt/flock/inner/m"), None, "the mount deepest in the path counts");
        assert_eq!(at("/mnt/flockish"), None, "a prefix of a name is not a parent");
        assert!(at("/mnt/with space/m").unwrap().contains("cifs"));
        assert_eq!(local_only_locks_in("garbage\n\n- - -", Path::new("/x")), None);
    }

    #[test]
    fn the_filesystem_of_a_missing_destination_is_its_nearest_ancestors() {
        let dir = tempfile::tempdir().unwrap();
        let deep = dir.path().join("a/b/c");
        assert_eq!(existing_ancestor(&deep), dir.path());
        assert_eq!(existing_ancestor(Path::new("no-such-relative-dir/x")), PathBuf::from("."));
    }

    #[test]
    fn space_check_refuses_what_cannot_fit_and_names_the_figures() {
        let dir = tempfile::tempdir().unwrap();
        check_space(dir.path(), 1).unwrap();
        let err = check_space(&dir.path().join("new"), u64::MAX / 2).unwrap_err().to_string();
        assert!(err.contains("not enough space") && err.contains("available"), "{err}");
        sync_filesystem(&dir.path().join("new/x")).unwrap();
    }
}
