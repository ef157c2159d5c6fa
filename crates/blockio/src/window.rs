//! A partition: a byte range of a larger device, seen as a volume of its own.

use crate::{ReadAt, past_end};
use std::io;
use std::ops::Range;

/// `[start, start + len)` of `inner`, addressed from 0.
#[derive(Clone, Copy, Debug)]
pub struct Window<R> {
    inner: R,
    start: u64,
    len: u64,
}

impl<R: ReadAt> Window<R> {
    /// A window over `inner`; fails if it does not lie inside `inner`.
    pub fn new(inner: R, start: u64, len: u64) -> io::Result<Self> {
        match start.checked_add(len) {
            Some(end) if end <= inner.size() => Ok(Self { inner, start, len }),
            _ => Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("range of {len} bytes at byte {start} lies outside the source ({} bytes)", inner.size()),
            )),
        }
    }

    /// Where the window starts in `inner`.
    pub fn start(&self) -> u64 {
        self.start
    }

    /// `range`, clipped to the window, in `inner`'s offsets (advice only: never an error).
    fn inner_range(&self, range: Range<u64>) -> Option<Range<u64>> {
        let end = range.end.min(self.len);
        (range.start < end).then(|| self.start + range.start..self.start + end)
    }
}

impl<R: ReadAt> ReadAt for Window<R> {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        match offset.checked_add(buf.len() as u64) {
            Some(end) if end <= self.len => self.inner.read_exact_at(buf, self.start + offset),
            _ => Err(past_end(offset, buf.len(), self.len)),
        }
    }
    fn size(&self) -> u64 {
        self.len
    }
    fn drop_cache(&self, range: Range<u64>) {
        if let Some(inner) = self.inner_range(range) {
            self.inner.drop_cache(inner);
        }
    }
    fn prefetch(&self, range: Range<u64>) {
        if let Some(inner) = self.inner_range(range) {
            self.inner.prefetch(inner);
        }
    }
    fn data_in(&self, range: Range<u64>) -> Vec<Range<u64>> {
        let Some(inner) = self.inner_range(range) else { return Vec::new() };
        self.inner.data_in(inner).into_iter().map(|r| r.start - self.start..r.end - self.start).collect()
    }
}
