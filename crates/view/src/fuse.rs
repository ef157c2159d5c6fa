//! The view mounted as a read-only FUSE filesystem: one directory, one regular file per
//! [`ViewFile`](crate::ViewFile).
//!
//! fuser mounts with `mount(2)` itself when run as root (no libfuse, no helper), else through
//! `fusermount3`. `lseek(SEEK_DATA/SEEK_HOLE)` is answered from the used set: the kernel passes
//! both to the server, so borg `--sparse` learns the holes and reads only data. Two server
//! threads answer reads, in one of two ways ([`Reading`]).

mod ahead;
mod idle;

use crate::View;
use ahead::ReadAhead;
use fuser::{
    BackgroundSession, Config, Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, INodeNo, LockOwner,
    MountOption, OpenFlags, ReplyAttr, ReplyData, ReplyDirectory, ReplyEntry, ReplyLseek, ReplyOpen, Request,
};
use nix::mount::{MntFlags, umount2};
use std::cell::RefCell;
use std::ffi::OsStr;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

/// The files never change while mounted.
const TTL: Duration = Duration::from_secs(3600);
/// Readahead for a cached mount's backing device: borg reads 4 MiB chunks.
const READ_AHEAD_KB: u32 = 4096;
/// Requests wholly inside a hole are answered from here, without a copy into a buffer.
static ZEROS: [u8; 1 << 20] = [0; 1 << 20];

thread_local! {
    /// Each server thread's read buffer, reused across requests.
    static BUFFER: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// How the kernel reads the mounted files.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reading {
    /// Through its page cache, which it fills ahead of the reader (the mount's readahead is
    /// raised to 4 MiB, on its own backing device only): any access pattern, mmap too.
    Cached,
    /// Once, front to back, as a backup reads: direct I/O, each request answered from blocks
    /// that a thread reads ahead while the reader works. The copy into FUSE's page cache, and
    /// the reader's copy out of it, are saved; a reader that skips holes (borg `--sparse`) is
    /// not stalled at the start of every data range, as the kernel's readahead stalls it.
    Streamed,
}

/// A mounted view; dropping it unmounts.
pub struct Mounted {
    session: Option<BackgroundSession>,
    path: PathBuf,
    /// A streamed mount's read-ahead, and its thread.
    ahead: Option<(Arc<ReadAhead>, JoinHandle<()>)>,
}

impl Mounted {
    /// Where it is mounted.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// True once the server has stopped (someone unmounted it).
    pub fn is_finished(&self) -> bool {
        self.session.as_ref().is_none_or(|s| s.guard.is_finished())
    }

    /// Unmounts and waits for the server; a busy mount is detached, so none stays behind.
    pub fn unmount(mut self) -> io::Result<()> {
        self.stop_read_ahead();
        self.session.take().map_or(Ok(()), |session| unmount(session, &self.path))
    }

    fn stop_read_ahead(&mut self) {
        if let Some((ahead, thread)) = self.ahead.take() {
            ahead.stop();
            let _ = thread.join();
        }
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        self.stop_read_ahead();
        if let Some(session) = self.session.take() {
            let _ = unmount(session, &self.path);
        }
    }
}

/// Unmounts `session`'s mount at `path` and waits for its server.
/// - Busy (a process has a file open or its working directory inside): detached instead
///   (`MNT_DETACH`), so that no mount stays behind; the server then answers that process until
///   this one exits, and it loses access then.
/// - Already unmounted by someone else (`umount MOUNTPOINT`): fuser 0.18 does not notice (its
///   mount check reads the device's POLLERR the wrong way round) and unmounts again, which
///   finds nothing mounted there.
fn unmount(session: BackgroundSession, path: &Path) -> io::Result<()> {
    let unmounted_already = session.guard.is_finished();
    match session.umount_and_join() {
        Err(e) if unmounted_already && e.raw_os_error() == Some(libc::EINVAL) => Ok(()),
        Err(e) if e.raw_os_error() == Some(libc::EBUSY) => Ok(umount2(path, MntFlags::MNT_DETACH)?),
        result => result,
    }
}

/// Mounts `view` read-only on the empty directory `mountpoint`, read as `reading` says.
pub fn mount(view: Arc<View>, mountpoint: &Path, reading: Reading) -> io::Result<Mounted> {
    let owner = std::fs::metadata(mountpoint)?;
    let ahead = (reading == Reading::Streamed).then(|| Arc::new(ReadAhead::default()));
    let filesystem = ViewFs { view: Arc::clone(&view), ahead: ahead.clone(), uid: owner.uid(), gid: owner.gid() };
    let mut config = Config::default();
    config.mount_options = vec![
        MountOption::RO,
        MountOption::NoDev,
        MountOption::NoSuid,
        MountOption::NoExec,
        MountOption::FSName("imgstream".into()),
    ];
    config.n_threads = Some(2);
    config.clone_fd = true;
    let session = fuser::spawn_mount(filesystem, mountpoint, &config)?;
    let mut mounted = Mounted { session: Some(session), path: mountpoint.to_owned(), ahead: None };
    match ahead {
        Some(ahead) => {
            let thread_ahead = Arc::clone(&ahead);
            let thread = std::thread::Builder::new().name("read-ahead".into()).spawn(move || {
                idle::run_when_idle();
                thread_ahead.run(&view);
            })?;
            mounted.ahead = Some((ahead, thread));
        }
        None => raise_read_ahead(mountpoint),
    }
    Ok(mounted)
}

/// Advice only: a smaller readahead is slower, not wrong (and needs root to change).
fn raise_read_ahead(mountpoint: &Path) {
    if let Ok(metadata) = std::fs::metadata(mountpoint) {
        let dev = metadata.dev();
        // Linux's dev_t encoding (glibc's gnu_dev_major/minor).
        let major = ((dev >> 8) & 0xfff) | ((dev >> 32) & !0xfff);
        let minor = (dev & 0xff) | ((dev >> 12) & !0xff);
        let knob = format!("/sys/class/bdi/{major}:{minor}/read_ahead_kb");
        let _ = std::fs::write(knob, READ_AHEAD_KB.to_string());
    }
}

struct ViewFs {
    view: Arc<View>,
    /// A streamed mount's read-ahead.
    ahead: Option<Arc<ReadAhead>>,
    uid: u32,
    gid: u32,
}

impl ViewFs {
    /// File index of an inode: the root is 1, file i is i + 2.
    fn index(ino: INodeNo) -> Option<usize> {
        usize::try_from(u64::from(ino).checked_sub(2)?).ok()
    }

    fn attr(&self, ino: INodeNo) -> Option<FileAttr> {
        let time = self.view.created();
        let mut attr = FileAttr {
            ino,
            size: 0,
            blocks: 0,
            atime: time,
            mtime: time,
            ctime: time,
            crtime: time,
            kind: FileType::Directory,
            perm: 0o555,
            nlink: 2,
            uid: self.uid,
            gid: self.gid,
            rdev: 0,
            blksize: 4096,
            flags: 0,
        };
        if ino != INodeNo::ROOT {
            let index = Self::index(ino)?;
            let file = self.view.files().get(index)?;
            attr.kind = FileType::RegularFile;
            attr.perm = 0o444;
            attr.nlink = 1;
            attr.size = file.size();
            attr.blocks = self.view.used(index).map_or(0, |u| u.total().div_ceil(512));
        }
        Some(attr)
    }
}

impl Filesystem for ViewFs {
    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let found = (parent == INodeNo::ROOT)
            .then(|| self.view.files().iter().position(|f| OsStr::new(&f.name) == name))
            .flatten()
            .and_then(|index| self.attr(INodeNo(index as u64 + 2)));
        match found {
            Some(attr) => reply.entry(&TTL, &attr, fuser::Generation(0)),
            None => reply.error(Errno::ENOENT),
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match self.attr(ino) {
            Some(attr) => reply.attr(&TTL, &attr),
            None => reply.error(Errno::ENOENT),
        }
    }

    fn open(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        match Self::index(ino).filter(|&i| i < self.view.files().len()) {
            Some(_) if self.ahead.is_some() => reply.opened(FileHandle(0), FopenFlags::FOPEN_DIRECT_IO),
            Some(_) => reply.opened(FileHandle(0), FopenFlags::FOPEN_KEEP_CACHE),
            None => reply.error(Errno::EISDIR),
        }
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let Some((index, file)) = Self::index(ino).and_then(|i| Some((i, self.view.files().get(i)?))) else {
            return reply.error(Errno::ENOENT);
        };
        let end = offset.saturating_add(u64::from(size)).min(file.size());
        let len = end.saturating_sub(offset) as usize;
        let hole = self.view.is_hole(index, offset, end);
        if hole && len <= ZEROS.len() {
            return reply.data(ZEROS.get(..len).unwrap_or_default());
        }
        if let Some(lent) = self.ahead.as_ref().filter(|_| !hole).and_then(|a| a.lend(&self.view, index, offset..end)) {
            return reply.data(lent.bytes());
        }
        BUFFER.with_borrow_mut(|buffer| {
            buffer.resize(len, 0);
            match self.view.read_at(index, offset, buffer) {
                Ok(()) => reply.data(buffer),
                Err(_) => reply.error(Errno::EIO),
            }
        });
    }

    fn lseek(&self, _req: &Request, ino: INodeNo, _fh: FileHandle, offset: i64, whence: i32, reply: ReplyLseek) {
        let (Some(index), Ok(offset)) = (Self::index(ino), u64::try_from(offset)) else {
            return reply.error(Errno::EINVAL);
        };
        let answer = match whence {
            libc::SEEK_DATA => self.view.seek_data(index, offset),
            libc::SEEK_HOLE => self.view.seek_hole(index, offset),
            // The kernel handles SEEK_SET, SEEK_CUR and SEEK_END itself.
            _ => return reply.error(Errno::EINVAL),
        };
        match answer.and_then(|a| i64::try_from(a).ok()) {
            Some(position) => reply.offset(position),
            None => reply.error(Errno::ENXIO),
        }
    }

    fn readdir(&self, _req: &Request, ino: INodeNo, _fh: FileHandle, offset: u64, mut reply: ReplyDirectory) {
        if ino != INodeNo::ROOT {
            return reply.error(Errno::ENOTDIR);
        }
        let dots = [(INodeNo::ROOT, FileType::Directory, "."), (INodeNo::ROOT, FileType::Directory, "..")];
        let files = self
            .view
            .files()
            .iter()
            .enumerate()
            .map(|(i, f)| (INodeNo(i as u64 + 2), FileType::RegularFile, f.name.as_str()));
        for (position, (ino, kind, name)) in dots.into_iter().chain(files).enumerate().skip(offset as usize) {
            // `add` answers true when the reply buffer is full.
            if reply.add(ino, position as u64 + 1, kind, name) {
                break;
            }
        }
        reply.ok();
    }
}
