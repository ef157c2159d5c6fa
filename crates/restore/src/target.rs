//! Opening the destination: refuse a mounted one, start a file empty, hold a device exclusively.

use crate::Error;
use imgstream_blockio::{Source, ioctl, mounts};
use nix::fcntl::{PosixFadviseAdvice, posix_fadvise};
use std::fs::{File, OpenOptions as FsOpenOptions};
use std::io;
use std::ops::Range;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// What the target is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TargetKind {
    /// A regular file (created if missing, truncated if present).
    File,
    /// A block device.
    BlockDevice,
}

/// What happens to runs of zero pages in the stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ZeroMode {
    /// Written as zeros like any data.
    Write,
    /// Not written: a hole in a freshly truncated file, or a device promised to read as zeros.
    Skip,
    /// `BLKZEROOUT` on a block device (falls back to writing zeros where unsupported).
    ZeroOut,
}

/// How to open a target.
#[derive(Clone, Copy, Debug, Default)]
pub struct OpenOptions {
    /// Zero runs become holes (file) or `BLKZEROOUT` (device) instead of written zeros.
    pub sparse: bool,
    /// Block device only: the device already reads as zeros, so zero runs are skipped.
    pub assume_zeroed: bool,
    /// Regular file only: its final length, set at open (so a region can be written into it);
    /// `None` leaves the file empty until [`Target::finish`].
    pub file_len: Option<u64>,
}

/// An open destination.
#[derive(Debug)]
pub struct Target {
    pub(crate) file: File,
    pub(crate) path: PathBuf,
    kind: TargetKind,
    capacity: Option<u64>,
    pub(crate) zero_mode: ZeroMode,
}

impl Target {
    /// Opens `path` for writing. Refuses a mounted target (a read-write mount of the file's loop
    /// device, or a device in use by a mount, a holder or another exclusive opener).
    pub fn open(path: &Path, options: OpenOptions) -> Result<Self, Error> {
        let open_error = |source: io::Error| Error::Open { path: path.to_owned(), source };
        let refuse = |reason: String| Error::Refused { path: path.to_owned(), reason };
        let existing = match std::fs::metadata(path) {
            Ok(metadata) => Some(metadata.file_type()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => return Err(open_error(e)),
        };
        if let Some(file_type) = existing {
            if !file_type.is_file() && !file_type.is_block_device() {
                return Err(refuse("not a regular file or block device".into()));
            }
            let source = Source::open(path).map_err(open_error)?;
            let mounts = mounts::mounts_over(&source).map_err(open_error)?;
            if let Some(mount) = mounts.iter().find(|m| m.writable) {
                return Err(refuse(format!("{}: unmount it before restoring onto it", mount.describe())));
            }
        }
        if existing.is_some_and(|t| t.is_block_device()) {
            if options.file_len.is_some() {
                return Err(refuse("a length can only be set for a regular file".into()));
            }
            // O_EXCL on a block device: EBUSY if it (or a partition of it) is mounted or held.
            // Read access too: the partition table is read back and rewritten after a restore.
            let file = FsOpenOptions::new().read(true).write(true).custom_flags(libc::O_EXCL).open(path).map_err(
                |e| match e.raw_os_error() {
                    Some(libc::EBUSY) => refuse("in use (mounted, or held by another device or program)".into()),
                    _ => open_error(e),
                },
            )?;
            let capacity = ioctl::device_size(&file).map_err(open_error)?;
            let zero_mode = match (options.assume_zeroed, options.sparse) {
                (true, _) => ZeroMode::Skip,
                (false, true) => ZeroMode::ZeroOut,
                (false, false) => ZeroMode::Write,
            };
            return Ok(Self {
                file,
                path: path.to_owned(),
                kind: TargetKind::BlockDevice,
                capacity: Some(capacity),
                zero_mode,
            });
        }
        if options.assume_zeroed {
            return Err(refuse(
                "--assume-zeroed is for block devices; a file is truncated and reads as zeros anyway".into(),
            ));
        }
        // Truncated: nothing of the old contents may show through a hole.
        let file =
            FsOpenOptions::new().read(true).write(true).create(true).truncate(true).open(path).map_err(open_error)?;
        if let Some(len) = options.file_len {
            file.set_len(len).map_err(open_error)?;
        }
        let zero_mode = if options.sparse { ZeroMode::Skip } else { ZeroMode::Write };
        Ok(Self { file, path: path.to_owned(), kind: TargetKind::File, capacity: options.file_len, zero_mode })
    }

    /// File or device.
    pub fn kind(&self) -> TargetKind {
        self.kind
    }

    /// The device's size, or the file length given at open.
    pub fn capacity(&self) -> Option<u64> {
        self.capacity
    }

    /// How zero runs are written.
    pub fn zero_mode(&self) -> ZeroMode {
        self.zero_mode
    }

    /// The path it was opened as.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The open file, for a partition table rewrite after the data is in place.
    pub fn file(&self) -> &File {
        &self.file
    }

    /// Starts writing `range` out without waiting, and lets the page cache drop the pages of it
    /// that are already clean. Without this, a restore of many GB piles up dirty pages that are
    /// written out only by the final sync, after the stream has ended, instead of while it
    /// arrives; and it would push everything else out of the page cache.
    pub(crate) fn start_writeback(&self, range: Range<u64>) {
        // Linux's POSIX_FADV_DONTNEED starts asynchronous writeback of the dirty pages in the
        // range and drops the clean ones. Advice only: `finish` still syncs everything.
        if let (Ok(start), Ok(len)) = (i64::try_from(range.start), i64::try_from(range.end - range.start)) {
            let _ = posix_fadvise(&self.file, start, len, PosixFadviseAdvice::POSIX_FADV_DONTNEED);
        }
    }

    /// Completes the target: a file gets its exact final length `len` (trailing zeros are a
    /// hole otherwise), then everything is flushed to stable storage.
    pub fn finish(&self, len: u64) -> Result<(), Error> {
        let sync_error = |offset: u64, source: io::Error| Error::Write {
            path: self.path.clone(),
            what: "sync",
            offset,
            len: 0,
            source,
        };
        if self.kind == TargetKind::File {
            self.file.set_len(len).map_err(|e| sync_error(len, e))?;
        }
        self.file.sync_all().map_err(|e| sync_error(len, e))
    }
}
