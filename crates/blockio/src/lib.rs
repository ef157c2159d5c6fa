//! Positional, read-only access to what imgstream images.
//!
//! Parsers and the streaming engine see a volume only through [`ReadAt`]: `&self` reads at an
//! absolute offset, so reader threads share one file descriptor without locks. [`Source`] opens
//! a block device or image file read-only; [`Window`] narrows any `ReadAt` to one partition;
//! [`Mapped`] assembles a volume from stretches of a source (an LVM logical volume);
//! [`Cursor`] adapts a `ReadAt` to `Read + Seek` for crates that want one (the ntfs crate);
//! [`Rescue`] turns unreadable sectors into zeros and remembers where they were (`--rescue`).

mod cursor;
pub mod ioctl;
mod mapped;
pub mod mounts;
mod rescue;
mod source;
mod window;

pub use cursor::Cursor;
pub use mapped::{Mapped, Stretch};
pub use rescue::Rescue;
pub use source::{Source, SourceKind};
pub use window::Window;

use std::io;
use std::ops::Range;

/// Exact positional reads over a byte range `[0, size())`.
pub trait ReadAt: Send + Sync {
    /// Fills `buf` from `offset`; a read past `size()` fails with `UnexpectedEof`.
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()>;

    /// Length in bytes.
    fn size(&self) -> u64;

    /// Advice: `range` was read and will not be read again soon, so the page cache may drop it
    /// (a backup of a large disk would otherwise evict everything else). No-op by default.
    fn drop_cache(&self, _range: Range<u64>) {}

    /// Advice: `range` will be read soon, so the kernel may start reading it now (a reader that
    /// asks for one piece at a time then still keeps the device busy). No-op by default.
    fn prefetch(&self, _range: Range<u64>) {}

    /// The parts of `range` that may hold anything but zeros: all of it, unless the source
    /// knows its holes (a sparse image file's holes read as zeros, and need no reading).
    fn data_in(&self, range: Range<u64>) -> Vec<Range<u64>> {
        vec![range]
    }
}

impl<T: ReadAt + ?Sized> ReadAt for &T {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        (**self).read_exact_at(buf, offset)
    }
    fn size(&self) -> u64 {
        (**self).size()
    }
    fn drop_cache(&self, range: Range<u64>) {
        (**self).drop_cache(range);
    }
    fn prefetch(&self, range: Range<u64>) {
        (**self).prefetch(range);
    }
    fn data_in(&self, range: Range<u64>) -> Vec<Range<u64>> {
        (**self).data_in(range)
    }
}

/// An in-memory volume, for tests and fuzzing.
impl ReadAt for [u8] {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        let source = usize::try_from(offset)
            .ok()
            .and_then(|start| self.get(start..start.checked_add(buf.len())?))
            .ok_or_else(|| past_end(offset, buf.len(), self.len() as u64))?;
        buf.copy_from_slice(source);
        Ok(())
    }
    fn size(&self) -> u64 {
        self.len() as u64
    }
}

impl ReadAt for Vec<u8> {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.as_slice().read_exact_at(buf, offset)
    }
    fn size(&self) -> u64 {
        self.len() as u64
    }
}

/// The error for a read that would cross the end of a volume.
pub(crate) fn past_end(offset: u64, len: usize, size: u64) -> io::Error {
    io::Error::new(
        io::ErrorKind::UnexpectedEof,
        format!("read of {len} bytes at byte {offset} goes past the end ({size} bytes)"),
    )
}
