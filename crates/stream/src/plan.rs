//! Cutting an image into segments: one block to read, or a run of zeros.

use imgstream_extents::RangeSet;
use std::ops::Range;

/// Zero runs are split at this size so that progress and cancellation stay responsive.
const MAX_ZERO_RUN: u64 = 256 << 20;

/// One step of the image, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Segment {
    /// A block holding at least one used byte: read its used parts, zero the rest.
    Data(Range<u64>),
    /// Bytes with no used byte in them: emitted as zeros, never read.
    Zeros(Range<u64>),
}

/// The segments of an image of `size` bytes: whole blocks of data (aligned to the block size,
/// the last one possibly short) and maximal zero runs between them.
#[derive(Clone, Debug)]
pub struct Plan<'a> {
    used: &'a RangeSet,
    size: u64,
    block: u64,
    offset: u64,
}

impl<'a> Plan<'a> {
    /// The plan for an image of `size` bytes in blocks of `block` bytes (non-zero).
    pub fn new(used: &'a RangeSet, size: u64, block: u64) -> Self {
        Self { used, size, block: block.max(1), offset: 0 }
    }
}

impl Iterator for Plan<'_> {
    type Item = Segment;

    fn next(&mut self) -> Option<Segment> {
        let start = self.offset;
        if start >= self.size {
            return None;
        }
        let block_end = (start / self.block + 1).saturating_mul(self.block).min(self.size);
        let next_used = self.used.overlapping(start..self.size).next().map_or(self.size, |r| r.start);
        let segment = if next_used < block_end {
            Segment::Data(start..block_end)
        } else {
            // Up to the block holding the next used byte, or to the end if there is none.
            let run_end =
                if next_used == self.size { self.size } else { (next_used / self.block * self.block).max(block_end) };
            Segment::Zeros(start..run_end.min(start.saturating_add(MAX_ZERO_RUN)))
        };
        self.offset = match &segment {
            Segment::Data(range) | Segment::Zeros(range) => range.end,
        };
        Some(segment)
    }
}
