//! Opening a block device or image file read-only.

use crate::{ReadAt, ioctl};
use nix::errno::Errno;
use nix::fcntl::{PosixFadviseAdvice, posix_fadvise};
use nix::unistd::{Whence, lseek};
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
        self.advise(range, PosixFadviseAdvice::POSIX_FADV_DONTNEED);
    }
    fn prefetch(&self, range: Range<u64>) {
        self.advise(range, PosixFadviseAdvice::POSIX_FADV_WILLNEED);
    }
    fn data_in(&self, range: Range<u64>) -> Vec<Range<u64>> {
        match self.kind {
            // A device has no holes to ask about.
            SourceKind::BlockDevice => vec![range],
            // A filesystem that cannot answer (or an error) leaves all of it data: never less safe.
            SourceKind::ImageFile => self.file_data_in(range.clone()).unwrap_or_else(|_| vec![range]),
        }
    }
}

impl Source {
    /// The data extents of an image file inside `range`, from `lseek(SEEK_DATA / SEEK_HOLE)`
    /// (which move the file offset: harmless, every read is positional).
    fn file_data_in(&self, range: Range<u64>) -> io::Result<Vec<Range<u64>>> {
        let seek = |offset: u64, whence: Whence| -> io::Result<Option<u64>> {
            let offset = i64::try_from(offset).map_err(io::Error::other)?;
            match lseek(&self.file, offset, whence) {
                Ok(found) => Ok(Some(u64::try_from(found).map_err(io::Error::other)?)),
                Err(Errno::ENXIO) => Ok(None), // only a hole from `offset` to the end
                Err(e) => Err(e.into()),
            }
        };
        let mut data = Vec::new();
        let mut offset = range.start;
        // Each step passes one data extent: bounded by the file's extent count.
        while offset < range.end {
            let Some(start) = seek(offset, Whence::SeekData)?.filter(|&start| start < range.end) else { break };
            let end = seek(start, Whence::SeekHole)?.unwrap_or(range.end).min(range.end);
            if end <= start.max(offset) {
                return Err(io::Error::other("lseek(SEEK_HOLE) did not move forward"));
            }
            data.push(start.max(offset)..end);
            offset = end;
        }
        Ok(data)
    }

    /// Advice only: a failure leaves the page cache as it was, nothing more.
    fn advise(&self, range: Range<u64>, advice: PosixFadviseAdvice) {
        if let (Ok(start), Ok(len)) = (i64::try_from(range.start), i64::try_from(range.end.saturating_sub(range.start)))
        {
            let _ = posix_fadvise(&self.file, start, len, advice);
        }
    }
}

#[cfg(test)]
#[allow(clippy::indexing_slicing)] // test code: a panic is a failed test
mod tests {
    use super::*;
    use crate::Window;

    #[test]
    fn a_sparse_files_holes_are_not_data_and_a_window_shifts_them() {
        let file = tempfile::NamedTempFile::new().unwrap();
        file.as_file().set_len(8 << 20).unwrap();
        file.as_file().write_all_at(&[7u8; 4096], 4 << 20).unwrap();
        let source = Source::open(file.path()).unwrap();
        let data = source.data_in(0..8 << 20);
        // The filesystem may round to its blocks, never drop the written bytes.
        assert!(data.iter().any(|r| r.start <= 4 << 20 && r.end >= (4 << 20) + 4096), "{data:?}");
        assert!(data.iter().all(|r| r.start >= 1 << 20 && r.end <= 7 << 20), "holes reported as data: {data:?}");
        let window = Window::new(&source, 3 << 20, 2 << 20).unwrap();
        let shifted = window.data_in(0..2 << 20);
        assert!(shifted.iter().any(|r| r.start <= 1 << 20 && r.end >= (1 << 20) + 4096), "{shifted:?}");
        assert!(source.data_in(0..1 << 20).is_empty());
        let inside = 4 << 20..(4 << 20) + 100;
        assert_eq!(source.data_in(inside.clone()), vec![inside]);
    }
}
