//! A FUSE filesystem that does not tell letter case or Unicode forms apart,
//! for the tests of s3load's name-collision check (reliability case 29). It
//! stands in for a case-insensitive, normalising destination (macOS, SMB,
//! some NFS/ONTAP volume settings), which Linux's own filesystems here cannot
//! be made into (no CONFIG_UNICODE, no vfat). Every name is stored folded
//! (NFC, lower case) in a backing directory, so `Model.bin` and `model.bin`,
//! or `é` composed and decomposed, are one file. Names are not preserved:
//! they read back folded.
//!
//! It runs in the test process ([`mount`]), on the `fuser` crate's own FUSE
//! protocol code: no libfuse, no helper program, nothing to install. Mounting
//! needs `/dev/fuse` and root (as the tests' other mounts do).
//!
//! Node ids are given per path as the kernel names it (the way libfuse's
//! path-based layer does), so `Model.bin` and `model.bin` are two nodes over
//! one backing file; the kernel caches nothing (zero TTLs), so a name removed
//! through one spelling is gone through the other at once.
//!
//! It can also hold reads ([`mount_holding`]): reads of files of one name
//! wait, each on a thread of its own, until the test releases them, which is
//! what a hung network filesystem does to a process reading it.

use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, FileExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, SystemTime};

use fuser::{
    Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo, LockOwner, MountOption,
    OpenFlags, RenameFlags, ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory, ReplyEmpty, ReplyEntry, ReplyOpen,
    ReplyStatfs, ReplyWrite, Request, TimeOrNow, WriteFlags,
};
use unicode_normalization::UnicodeNormalization;

/// Nothing cached by the kernel: every name is looked up again.
const TTL: Duration = Duration::ZERO;

/// A name as this filesystem stores it.
fn fold(name: &OsStr) -> OsString {
    match name.to_str() {
        Some(s) => s.nfc().collect::<String>().to_lowercase().into(),
        None => name.to_os_string(),
    }
}

/// The mounted filesystem; unmounted when dropped.
pub struct Mounted {
    session: Option<fuser::BackgroundSession>,
    hold: Option<Arc<Hold>>,
}

impl Drop for Mounted {
    fn drop(&mut self) {
        if let Some(h) = &self.hold {
            h.release();
        }
        if let Some(s) = self.session.take() {
            let _ = s.umount_and_join();
        }
    }
}

/// Mounts a folding filesystem over `backing` at `mountpoint` (both existing
/// directories), served by a thread of this process until the result is dropped.
pub fn mount(backing: &Path, mountpoint: &Path) -> io::Result<Mounted> {
    mount_with(backing, mountpoint, None)
}

/// As [`mount`], and every read of a file named `name` (in any directory)
/// waits until the returned [`Hold`] is released (or the mount is dropped).
pub fn mount_holding(backing: &Path, mountpoint: &Path, name: &str) -> io::Result<(Mounted, Arc<Hold>)> {
    let hold = Arc::new(Hold { name: fold(OsStr::new(name)), state: Mutex::default(), changed: Condvar::new() });
    Ok((mount_with(backing, mountpoint, Some(hold.clone()))?, hold))
}

fn mount_with(backing: &Path, mountpoint: &Path, hold: Option<Arc<Hold>>) -> io::Result<Mounted> {
    let fs = FoldFs { backing: backing.to_path_buf(), state: Mutex::default(), hold: hold.clone() };
    let mut config = fuser::Config::default();
    config.mount_options = vec![MountOption::FSName("foldfs".into()), MountOption::DefaultPermissions];
    let session = fuser::spawn_mount(fs, mountpoint, &config)?;
    Ok(Mounted { session: Some(session), hold })
}

/// Reads of one file name held until released.
pub struct Hold {
    name: OsString,
    /// (released, reads waiting now)
    state: Mutex<(bool, usize)>,
    changed: Condvar,
}

impl Hold {
    /// How many reads are waiting now.
    pub fn waiting(&self) -> usize {
        self.state.lock().unwrap().1
    }

    /// Lets every held read, and every later one, through.
    pub fn release(&self) {
        self.state.lock().unwrap().0 = true;
        self.changed.notify_all();
    }

    fn wait(&self) {
        let mut s = self.state.lock().unwrap();
        s.1 += 1;
        while !s.0 {
            s = self.changed.wait(s).unwrap();
        }
        s.1 -= 1;
    }
}

#[derive(Default)]
struct State {
    /// Node id -> path below the mount, as the kernel named it.
    paths: HashMap<u64, PathBuf>,
    ids: HashMap<PathBuf, u64>,
    next_id: u64,
    files: HashMap<u64, Arc<File>>,
    next_fh: u64,
}

impl State {
    fn path(&self, ino: INodeNo) -> Result<PathBuf, Errno> {
        if ino == INodeNo::ROOT {
            return Ok(PathBuf::new());
        }
        self.paths.get(&ino.0).cloned().ok_or(Errno::ENOENT)
    }

    fn id(&mut self, path: &Path) -> INodeNo {
        if path.as_os_str().is_empty() {
            return INodeNo::ROOT;
        }
        if let Some(id) = self.ids.get(path) {
            return INodeNo(*id);
        }
        self.next_id += 1;
        let id = self.next_id + 1; // 1 is the root
        self.paths.insert(id, path.to_path_buf());
        self.ids.insert(path.to_path_buf(), id);
        INodeNo(id)
    }

    fn forget_path(&mut self, path: &Path) {
        if let Some(id) = self.ids.remove(path) {
            self.paths.remove(&id);
        }
    }

    /// After a rename: `from` and everything below it are now below `to`.
    fn moved(&mut self, from: &Path, to: &Path) {
        self.forget_path(to);
        let moved: Vec<(u64, PathBuf)> = self
            .paths
            .iter()
            .filter_map(|(id, p)| p.strip_prefix(from).ok().map(|rest| (*id, to.join(rest))))
            .collect();
        for (id, new) in moved {
            if let Some(old) = self.paths.insert(id, new.clone()) {
                self.ids.remove(&old);
            }
            self.ids.insert(new, id);
        }
    }

    fn open(&mut self, f: File) -> FileHandle {
        self.next_fh += 1;
        self.files.insert(self.next_fh, Arc::new(f));
        FileHandle(self.next_fh)
    }

    fn file(&self, fh: FileHandle) -> Result<Arc<File>, Errno> {
        self.files.get(&fh.0).cloned().ok_or(Errno::EBADF)
    }
}

struct FoldFs {
    backing: PathBuf,
    state: Mutex<State>,
    hold: Option<Arc<Hold>>,
}

impl FoldFs {
    /// The backing path of a path below the mount: every component folded.
    fn real(&self, path: &Path) -> PathBuf {
        path.components().fold(self.backing.clone(), |p, c| p.join(fold(c.as_os_str())))
    }

    fn child(&self, parent: INodeNo, name: &OsStr) -> Result<PathBuf, Errno> {
        Ok(self.state.lock().unwrap().path(parent)?.join(name))
    }

    fn attr(&self, ino: INodeNo, meta: &std::fs::Metadata) -> FileAttr {
        let time = |s: i64, ns: i64| {
            let since = Duration::new(s.unsigned_abs(), ns as u32);
            if s >= 0 { SystemTime::UNIX_EPOCH + since } else { SystemTime::UNIX_EPOCH - since }
        };
        let t = meta.file_type();
        let kind = FileType::from_std(t).unwrap_or(FileType::RegularFile);
        FileAttr {
            ino,
            size: meta.len(),
            blocks: meta.blocks(),
            atime: time(meta.atime(), meta.atime_nsec()),
            mtime: time(meta.mtime(), meta.mtime_nsec()),
            ctime: time(meta.ctime(), meta.ctime_nsec()),
            crtime: time(meta.ctime(), meta.ctime_nsec()),
            kind,
            perm: (meta.mode() & 0o7777) as u16,
            nlink: meta.nlink() as u32,
            uid: meta.uid(),
            gid: meta.gid(),
            rdev: meta.rdev() as u32,
            blksize: meta.blksize() as u32,
            flags: 0,
        }
    }

    /// The attributes of `path` (below the mount), with its node id.
    fn entry(&self, path: &Path) -> Result<FileAttr, Errno> {
        let meta = std::fs::symlink_metadata(self.real(path))?;
        let ino = self.state.lock().unwrap().id(path);
        Ok(self.attr(ino, &meta))
    }

    fn set_attr(&self, ino: INodeNo, set: SetAttr) -> Result<FileAttr, Errno> {
        let (path, file) = {
            let s = self.state.lock().unwrap();
            (s.path(ino)?, set.fh.map(|fh| s.file(fh)).transpose()?)
        };
        let real = self.real(&path);
        if let Some(mode) = set.mode {
            std::fs::set_permissions(&real, std::os::unix::fs::PermissionsExt::from_mode(mode & 0o7777))?;
        }
        if set.uid.is_some() || set.gid.is_some() {
            std::os::unix::fs::lchown(&real, set.uid, set.gid)?;
        }
        if let Some(size) = set.size {
            match &file {
                Some(f) => f.set_len(size)?,
                None => OpenOptions::new().write(true).open(&real)?.set_len(size)?,
            }
        }
        if set.atime.is_some() || set.mtime.is_some() {
            let at = |t: TimeOrNow| match t {
                TimeOrNow::SpecificTime(t) => t,
                TimeOrNow::Now => SystemTime::now(),
            };
            let mut times = std::fs::FileTimes::new();
            if let Some(a) = set.atime {
                times = times.set_accessed(at(a));
            }
            if let Some(m) = set.mtime {
                times = times.set_modified(at(m));
            }
            File::open(&real)?.set_times(times)?;
        }
        let meta = match &file {
            Some(f) => f.metadata()?,
            None => std::fs::symlink_metadata(&real)?,
        };
        Ok(self.attr(ino, &meta))
    }

    fn open_file(&self, real: &Path, flags: i32, create: Option<u32>) -> io::Result<File> {
        let mut o = OpenOptions::new();
        match flags & libc::O_ACCMODE {
            libc::O_WRONLY => o.write(true),
            libc::O_RDWR => o.read(true).write(true),
            _ => o.read(true),
        };
        if let Some(mode) = create {
            o.create_new(true).mode(mode).write(true);
        }
        o.truncate(flags & libc::O_TRUNC != 0)
            .custom_flags(flags & (libc::O_APPEND | libc::O_SYNC | libc::O_DSYNC))
            .open(real)
    }
}

/// What a `setattr` asks to change.
struct SetAttr {
    mode: Option<u32>,
    uid: Option<u32>,
    gid: Option<u32>,
    size: Option<u64>,
    atime: Option<TimeOrNow>,
    mtime: Option<TimeOrNow>,
    fh: Option<FileHandle>,
}

impl Filesystem for FoldFs {
    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        match self.child(parent, name).and_then(|p| self.entry(&p)) {
            Ok(attr) => reply.entry(&TTL, &attr, Generation(0)),
            Err(e) => reply.error(e),
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, fh: Option<FileHandle>, reply: ReplyAttr) {
        let meta = || -> Result<std::fs::Metadata, Errno> {
            let s = self.state.lock().unwrap();
            match fh {
                Some(fh) => Ok(s.file(fh)?.metadata()?),
                None => Ok(std::fs::symlink_metadata(self.real(&s.path(ino)?))?),
            }
        };
        match meta() {
            Ok(m) => reply.attr(&TTL, &self.attr(ino, &m)),
            Err(e) => reply.error(e),
        }
    }

    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        match self.set_attr(ino, SetAttr { mode, uid, gid, size, atime, mtime, fh }) {
            Ok(attr) => reply.attr(&TTL, &attr),
            Err(e) => reply.error(e),
        }
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        let path = self.state.lock().unwrap().path(ino);
        match path.and_then(|p| Ok(std::fs::read_link(self.real(&p))?)) {
            Ok(target) => reply.data(target.as_os_str().as_bytes()),
            Err(e) => reply.error(e),
        }
    }

    fn mkdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, mode: u32, umask: u32, reply: ReplyEntry) {
        let made = self.child(parent, name).and_then(|p| {
            std::fs::DirBuilder::new().mode(mode & !umask).create(self.real(&p))?;
            self.entry(&p)
        });
        match made {
            Ok(attr) => reply.entry(&TTL, &attr, Generation(0)),
            Err(e) => reply.error(e),
        }
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let gone = self.child(parent, name).and_then(|p| {
            std::fs::remove_file(self.real(&p))?;
            self.state.lock().unwrap().forget_path(&p);
            Ok(())
        });
        match gone {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let gone = self.child(parent, name).and_then(|p| {
            std::fs::remove_dir(self.real(&p))?;
            self.state.lock().unwrap().forget_path(&p);
            Ok(())
        });
        match gone {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn symlink(&self, _req: &Request, parent: INodeNo, link_name: &OsStr, target: &Path, reply: ReplyEntry) {
        let made = self.child(parent, link_name).and_then(|p| {
            std::os::unix::fs::symlink(target, self.real(&p))?;
            self.entry(&p)
        });
        match made {
            Ok(attr) => reply.entry(&TTL, &attr, Generation(0)),
            Err(e) => reply.error(e),
        }
    }

    fn rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        let renamed = (|| -> Result<(), Errno> {
            let (from, to) = (self.child(parent, name)?, self.child(newparent, newname)?);
            let (real_from, real_to) = (self.real(&from), self.real(&to));
            if flags.contains(RenameFlags::RENAME_EXCHANGE) || flags.contains(RenameFlags::RENAME_WHITEOUT) {
                return Err(Errno::EINVAL);
            }
            if flags.contains(RenameFlags::RENAME_NOREPLACE) && std::fs::symlink_metadata(&real_to).is_ok() {
                return Err(Errno::EEXIST);
            }
            std::fs::rename(&real_from, &real_to)?;
            self.state.lock().unwrap().moved(&from, &to);
            Ok(())
        })();
        match renamed {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        let opened = (|| -> Result<FileHandle, Errno> {
            let path = self.state.lock().unwrap().path(ino)?;
            let f = self.open_file(&self.real(&path), flags.0, None)?;
            Ok(self.state.lock().unwrap().open(f))
        })();
        match opened {
            Ok(fh) => reply.opened(fh, FopenFlags::empty()),
            Err(e) => reply.error(e),
        }
    }

    fn create(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        let created = (|| -> Result<(FileAttr, FileHandle), Errno> {
            let path = self.child(parent, name)?;
            let f = self.open_file(&self.real(&path), flags, Some(mode & !umask))?;
            let attr = self.entry(&path)?;
            Ok((attr, self.state.lock().unwrap().open(f)))
        })();
        match created {
            Ok((attr, fh)) => reply.created(&TTL, &attr, Generation(0), fh, FopenFlags::empty()),
            Err(e) => reply.error(e),
        }
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let (f, path) = {
            let s = self.state.lock().unwrap();
            (s.file(fh), s.path(ino))
        };
        let f = match f {
            Ok(f) => f,
            Err(e) => return reply.error(e),
        };
        let read = move || {
            let mut buf = vec![0u8; size as usize];
            let mut got = 0;
            while got < buf.len() {
                match f.read_at(&mut buf[got..], offset + got as u64) {
                    Ok(0) => break,
                    Ok(n) => got += n,
                    Err(e) => return reply.error(e.into()),
                }
            }
            reply.data(&buf[..got]);
        };
        let held = path.ok().and_then(|p| p.file_name().map(fold));
        match &self.hold {
            // On a thread of its own: the filesystem goes on answering
            // everything else (the kernel interrupts, the process exits).
            Some(hold) if held.as_ref() == Some(&hold.name) => {
                let hold = hold.clone();
                std::thread::spawn(move || {
                    hold.wait();
                    read();
                });
            }
            _ => read(),
        }
    }

    fn write(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        let written = (|| -> Result<(), Errno> {
            let f = self.state.lock().unwrap().file(fh)?;
            f.write_all_at(data, offset)?;
            Ok(())
        })();
        match written {
            Ok(()) => reply.written(data.len() as u32),
            Err(e) => reply.error(e),
        }
    }

    fn flush(&self, _req: &Request, _ino: INodeNo, _fh: FileHandle, _owner: LockOwner, reply: ReplyEmpty) {
        reply.ok();
    }

    fn release(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        self.state.lock().unwrap().files.remove(&fh.0);
        reply.ok();
    }

    fn fsync(&self, _req: &Request, _ino: INodeNo, fh: FileHandle, datasync: bool, reply: ReplyEmpty) {
        let synced = (|| -> Result<(), Errno> {
            let f = self.state.lock().unwrap().file(fh)?;
            if datasync {
                f.sync_data()?;
            } else {
                f.sync_all()?;
            }
            Ok(())
        })();
        match synced {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn readdir(&self, _req: &Request, ino: INodeNo, _fh: FileHandle, offset: u64, mut reply: ReplyDirectory) {
        let listed = (|| -> Result<Vec<(INodeNo, FileType, OsString)>, Errno> {
            let path = self.state.lock().unwrap().path(ino)?;
            let mut names: Vec<(OsString, FileType)> = std::fs::read_dir(self.real(&path))?
                .map(|e| {
                    let e = e?;
                    let kind = FileType::from_std(e.file_type()?).unwrap_or(FileType::RegularFile);
                    Ok((e.file_name(), kind))
                })
                .collect::<io::Result<_>>()?;
            names.sort_by(|a, b| a.0.cmp(&b.0));
            let mut s = self.state.lock().unwrap();
            let mut out = vec![(ino, FileType::Directory, ".".into()), (ino, FileType::Directory, "..".into())];
            out.extend(names.into_iter().map(|(n, kind)| (s.id(&path.join(&n)), kind, n)));
            Ok(out)
        })();
        match listed {
            Ok(entries) => {
                for (i, (id, kind, name)) in entries.into_iter().enumerate().skip(offset as usize) {
                    if reply.add(id, i as u64 + 1, kind, &name) {
                        break;
                    }
                }
                reply.ok();
            }
            Err(e) => reply.error(e),
        }
    }

    fn fsyncdir(&self, _req: &Request, _ino: INodeNo, _fh: FileHandle, _datasync: bool, reply: ReplyEmpty) {
        reply.ok();
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        match rustix::fs::statvfs(&self.backing) {
            Ok(s) => reply.statfs(
                s.f_blocks,
                s.f_bfree,
                s.f_bavail,
                s.f_files,
                s.f_ffree,
                s.f_bsize as u32,
                s.f_namemax as u32,
                s.f_frsize as u32,
            ),
            Err(e) => reply.error(Errno::from(io::Error::from(e))),
        }
    }
}
