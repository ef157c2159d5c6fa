//! Opening a block device or image file read-only.

use crate::{ReadAt, ioctl};
use nix::fcntl::{PosixFadviseAdvice, posix_fadvise};
use std::fs::File;
use std::io;
use std::ops::Range;
use std::os::unix::fs::{FileExt, FileTypeExt};
use std::path::{Path, PathBuf};

/// What kind of thing a [`Source`] is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SourceKind {
    /// A block device (`/dev/sda`, `/dev/loop0p1`).
    BlockDevice,
    /// A regular file holding a disk or partition image.
    ImageFile,
}

/// A block device or image file opened read-only: the thing imgstream reads and never writes.
#[derive(Debug)]
pub struct Source {
    file: File,
    path: PathBuf,
    kind: SourceKind,
    size: u64,
    sector_size: u32,
}

impl Source {
    /// Opens `path` read-only and learns its size (and sector size, for devices).
    pub fn open(path: &Path) -> io::Result<Self> {
        let context = |e: io::Error| io::Error::new(e.kind(), format!("{}: {e}", path.display()));
        let file = File::open(path).map_err(context)?;
        let file_type = file.metadata().map_err(context)?.file_type();
        let (kind, size, sector_size) = if file_type.is_block_device() {
            let size = ioctl::device_size(&file).map_err(context)?;
            let sector = ioctl::logical_sector_size(&file).map_err(context)?;
            (SourceKind::BlockDevice, size, sector)
        } else if file_type.is_file() {
            (SourceKind::ImageFile, file.metadata().map_err(context)?.len(), 512)
        } else {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{}: not a block device or regular file", path.display()),
            ));
        };
        // Advice only: a failure changes nothing about correctness.
        let _ = posix_fadvise(&file, 0, 0, PosixFadviseAdvice::POSIX_FADV_SEQUENTIAL);
        Ok(Self { file, path: path.to_owned(), kind, size, sector_size })
    }

    /// The path it was opened from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Block device or image file.
    pub fn kind(&self) -> SourceKind {
        self.kind
    }

    /// Logical sector size: from the device, 512 for image files.
    pub fn sector_size(&self) -> u32 {
        self.sector_size
    }

    /// The open file, for `fstat` and the mount check.
    pub fn file(&self) -> &File {
        &self.file
    }
}

impl Source {
    /// The source's size now, to tell a source that shrank while it was read from a bad offset.
    fn current_size(&self) -> io::Result<u64> {
        match self.kind {
            SourceKind::BlockDevice => ioctl::device_size(&self.file),
            SourceKind::ImageFile => Ok(self.file.metadata()?.len()),
        }
    }
}

impl ReadAt for Source {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.file.read_exact_at(buf, offset).map_err(|e| {
            let what = match e.kind() {
                io::ErrorKind::UnexpectedEof => match self.current_size() {
                    Ok(now) if now < self.size => {
                        format!("the source shrank from {} to {now} bytes while it was read", self.size)
                    }
                    _ => "unexpected end of file".into(),
                },
                _ => e.to_string(),
            };
            io::Error::new(
                e.kind(),
                format!("{}: read of {} bytes at byte {offset}: {what}", self.path.display(), buf.len()),
            )
        })
    }
    fn size(&self) -> u64 {
        self.size
    }
    fn drop_cache(&self, range: Range<u64>) {
        // Advice only: a failure leaves pages cached, nothing more.
        if let (Ok(start), Ok(len)) = (i64::try_from(range.start), i64::try_from(range.end - range.start)) {
            let _ = posix_fadvise(&self.file, start, len, PosixFadviseAdvice::POSIX_FADV_DONTNEED);
        }
    }
}
