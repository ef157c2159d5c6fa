//! A volume assembled from pieces of a larger source: an LVM logical volume read through its
//! segment map, without device-mapper.
//!
//! The volume is a sequence of [`Stretch`]es. A stretch lays its bytes over one or more columns
//! of the source: with one column it is a plain linear piece; with N it is dm-stripe's layout,
//! chunks dealt out round-robin (chunk `c` of the stretch is chunk `c / N` of column `c % N`).
//! [`Mapped::source_ranges`] maps a range of the volume back to source ranges, so that a
//! filesystem's used set found through the view can be placed in the source.

use crate::{ReadAt, past_end};
use std::io;
use std::ops::Range;

/// `len` bytes of a mapped volume, striped over `columns` (source offsets) in `chunk`-byte chunks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stretch {
    /// Length in bytes; each column holds `len / columns.len()` of them.
    pub len: u64,
    /// Chunk size in bytes (ignored for one column).
    pub chunk: u64,
    /// Where each column starts in the source.
    pub columns: Vec<u64>,
}

impl Stretch {
    /// A linear piece: `len` bytes at source offset `start`.
    pub fn linear(start: u64, len: u64) -> Self {
        Self { len, chunk: len, columns: vec![start] }
    }

    fn column_len(&self) -> u64 {
        self.len / self.columns.len().max(1) as u64
    }

    /// The source range holding stretch offset `offset`, cut at the end of its chunk and at `end`.
    fn locate(&self, offset: u64, end: u64) -> Range<u64> {
        let count = self.columns.len().max(1) as u64;
        if count == 1 {
            let start = self.columns.first().copied().unwrap_or(0) + offset;
            return start..start + (end - offset);
        }
        let chunk = offset / self.chunk;
        let within = offset % self.chunk;
        let column = self.columns.get((chunk % count) as usize).copied().unwrap_or(0);
        let start = column + (chunk / count) * self.chunk + within;
        start..start + (self.chunk - within).min(end - offset)
    }
}

/// A [`ReadAt`] made of stretches of `inner`, addressed from 0.
#[derive(Clone, Debug)]
pub struct Mapped<R> {
    inner: R,
    /// Each stretch with its first offset in the volume.
    stretches: Vec<(u64, Stretch)>,
    size: u64,
}

impl<R: ReadAt> Mapped<R> {
    /// The volume made of `stretches` in order. Fails unless every stretch has a column, its
    /// length divides evenly into columns and (striped) into whole chunks, and every column lies
    /// inside `inner`.
    pub fn new(inner: R, stretches: Vec<Stretch>) -> io::Result<Self> {
        let invalid = |what: String| io::Error::new(io::ErrorKind::InvalidInput, what);
        let mut placed = Vec::with_capacity(stretches.len());
        let mut size = 0u64;
        for stretch in stretches {
            let count = stretch.columns.len() as u64;
            let column_len = stretch.column_len();
            if count == 0
                || stretch.len % count != 0
                || (count > 1 && (stretch.chunk == 0 || column_len % stretch.chunk != 0))
            {
                return Err(invalid(format!(
                    "a stretch of {} bytes over {count} columns in chunks of {} bytes",
                    stretch.len, stretch.chunk
                )));
            }
            for &column in &stretch.columns {
                if column.checked_add(column_len).is_none_or(|end| end > inner.size()) {
                    return Err(invalid(format!(
                        "{column_len} bytes at byte {column} lie outside the source ({} bytes)",
                        inner.size()
                    )));
                }
            }
            let start = size;
            size = size.checked_add(stretch.len).ok_or_else(|| invalid("stretches exceed 2^64 bytes".into()))?;
            placed.push((start, stretch));
        }
        Ok(Self { inner, stretches: placed, size })
    }

    /// Calls `visit` with the source range of each piece of `range` (volume offsets), in order.
    pub fn source_ranges(&self, range: Range<u64>, mut visit: impl FnMut(Range<u64>)) {
        let end = range.end.min(self.size);
        let mut offset = range.start;
        let first = self.stretches.partition_point(|(start, s)| start + s.len <= offset);
        for (start, stretch) in self.stretches.get(first..).unwrap_or_default() {
            while offset < end && offset < start + stretch.len {
                let piece = stretch.locate(offset - start, end.min(start + stretch.len) - start);
                offset += piece.end - piece.start;
                visit(piece);
            }
            if offset >= end {
                break;
            }
        }
    }
}

impl<R: ReadAt> ReadAt for Mapped<R> {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        let end = offset.checked_add(buf.len() as u64).filter(|end| *end <= self.size);
        let Some(end) = end else { return Err(past_end(offset, buf.len(), self.size)) };
        let mut filled = 0usize;
        let mut result = Ok(());
        self.source_ranges(offset..end, |piece| {
            let len = (piece.end - piece.start) as usize;
            if result.is_ok() {
                if let Some(target) = buf.get_mut(filled..filled + len) {
                    result = self.inner.read_exact_at(target, piece.start);
                }
            }
            filled += len;
        });
        result
    }
    fn size(&self) -> u64 {
        self.size
    }
}

#[cfg(test)]
#[allow(clippy::indexing_slicing)] // test code: a panic is a failed test, with its message
mod tests {
    use super::*;

    /// A source whose every byte is its own offset modulo 251, so that any misplaced read shows.
    fn source(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i % 251) as u8).collect()
    }

    #[test]
    fn linear_and_striped_stretches_read_like_dm_linear_and_dm_stripe() {
        let inner = source(4096);
        // 256 bytes at 1000, then 512 bytes striped over columns at 2000 and 3000 in 64-byte chunks.
        let mapped = Mapped::new(
            &inner,
            vec![Stretch::linear(1000, 256), Stretch { len: 512, chunk: 64, columns: vec![2000, 3000] }],
        )
        .unwrap();
        assert_eq!(mapped.size(), 768);
        let mut all = vec![0u8; 768];
        mapped.read_exact_at(&mut all, 0).unwrap();
        let mut expected = inner[1000..1256].to_vec();
        for chunk in 0..8usize {
            let column = if chunk % 2 == 0 { 2000 } else { 3000 };
            let at = column + chunk / 2 * 64;
            expected.extend_from_slice(&inner[at..at + 64]);
        }
        assert_eq!(all, expected);
        // A read straddling the stretches, and one chunk boundary, at odd offsets.
        let mut part = vec![0u8; 100];
        mapped.read_exact_at(&mut part, 200).unwrap();
        assert_eq!(part, expected[200..300]);
        assert!(mapped.read_exact_at(&mut part, 700).is_err());
        let mut pieces = Vec::new();
        mapped.source_ranges(250..350, |r| pieces.push(r));
        assert_eq!(pieces, vec![1250..1256, 2000..2064, 3000..3030]);
    }

    #[test]
    fn stretches_that_do_not_fit_are_refused() {
        let inner = source(4096);
        assert!(Mapped::new(&inner, vec![Stretch::linear(4000, 200)]).is_err());
        assert!(Mapped::new(&inner, vec![Stretch { len: 500, chunk: 64, columns: vec![0, 1000] }]).is_err());
        assert!(Mapped::new(&inner, vec![Stretch { len: 512, chunk: 0, columns: vec![0, 1000] }]).is_err());
        assert!(Mapped::new(&inner, vec![Stretch { len: 512, chunk: 64, columns: vec![] }]).is_err());
    }
}
