//! `Read + Seek` over a [`ReadAt`], for crates whose API wants a stream (the ntfs crate).

use crate::ReadAt;
use std::io::{self, Read, Seek, SeekFrom};

/// A stream position over a `ReadAt`. Reads stop at the end of the volume (short read, then 0).
#[derive(Debug)]
pub struct Cursor<R> {
    inner: R,
    position: u64,
}

impl<R: ReadAt> Cursor<R> {
    /// A cursor at position 0.
    pub fn new(inner: R) -> Self {
        Self { inner, position: 0 }
    }
}

impl<R: ReadAt> Read for Cursor<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let remaining = self.inner.size().saturating_sub(self.position);
        let len = usize::try_from(remaining).map_or(buf.len(), |r| r.min(buf.len()));
        let Some(target) = buf.get_mut(..len) else { return Ok(0) };
        self.inner.read_exact_at(target, self.position)?;
        self.position += len as u64;
        Ok(len)
    }
}

impl<R: ReadAt> Seek for Cursor<R> {
    fn seek(&mut self, to: SeekFrom) -> io::Result<u64> {
        let target = match to {
            SeekFrom::Start(offset) => Some(offset),
            SeekFrom::Current(delta) => self.position.checked_add_signed(delta),
            SeekFrom::End(delta) => self.inner.size().checked_add_signed(delta),
        };
        self.position =
            target.ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "seek before byte 0 or past 2^64"))?;
        Ok(self.position)
    }
}
