//! `RangeSet`: the used byte ranges of a volume, kept sorted, disjoint and coalesced.
//!
//! Every filesystem crate answers "which bytes are in use" with a `RangeSet`; the streaming
//! engine reads exactly those and emits zeros elsewhere. Pure data structure, no I/O.

#![forbid(unsafe_code)]

use std::ops::Range;

/// A set of half-open `u64` ranges, sorted, pairwise disjoint and never adjacent
/// (touching ranges are merged), so that equal sets have equal representations.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RangeSet {
    ranges: Vec<Range<u64>>,
}

impl RangeSet {
    /// An empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// The set holding exactly `range` (empty if the range is empty).
    pub fn from_range(range: Range<u64>) -> Self {
        let mut set = Self::new();
        set.insert(range);
        set
    }

    /// Adds `range`, merging it with any range it overlaps or touches.
    ///
    /// Appending in ascending order (the common case when walking a bitmap) is O(1).
    pub fn insert(&mut self, range: Range<u64>) {
        if range.start >= range.end {
            return;
        }
        if let Some(last) = self.ranges.last_mut() {
            if range.start >= last.start {
                if range.start <= last.end {
                    last.end = last.end.max(range.end);
                } else {
                    self.ranges.push(range);
                }
                return;
            }
        } else {
            self.ranges.push(range);
            return;
        }
        // General case: find every range that overlaps or touches, replace them by one.
        let first = self.ranges.partition_point(|r| r.end < range.start);
        let past = self.ranges.partition_point(|r| r.start <= range.end);
        let merged = match self.ranges.get(first..past) {
            Some([head, .., tail]) => head.start.min(range.start)..tail.end.max(range.end),
            Some([only]) => only.start.min(range.start)..only.end.max(range.end),
            _ => range,
        };
        self.ranges.splice(first..past, [merged]);
    }

    /// Adds one range of `unit` bytes per set bit of an LSB-first bitmap: bit `i` (for
    /// `i < bit_count`) stands for `[base + i*unit, base + (i+1)*unit)`. Bits past `bit_count`
    /// and past the end of `bitmap` are ignored.
    ///
    /// This is how ext, NTFS and exFAT describe allocation; whole 0x00 and 0xFF bytes are
    /// handled at once so that scanning a multi-TB volume's bitmap stays cheap.
    pub fn insert_bitmap(&mut self, bitmap: &[u8], bit_count: u64, base: u64, unit: u64) {
        let bit_count = bit_count.min((bitmap.len() as u64).saturating_mul(8));
        let unit_range = |first: u64, past: u64| {
            base.saturating_add(first.saturating_mul(unit))..base.saturating_add(past.saturating_mul(unit))
        };
        let mut run_start: Option<u64> = None;
        let mut bit = 0u64;
        while bit < bit_count {
            let byte = bitmap.get((bit / 8) as usize).copied().unwrap_or(0);
            let whole_byte = bit % 8 == 0 && bit + 8 <= bit_count;
            if whole_byte && (byte == 0x00 || byte == 0xFF) {
                match (byte == 0xFF, run_start) {
                    (true, None) => run_start = Some(bit),
                    (false, Some(start)) => {
                        self.insert(unit_range(start, bit));
                        run_start = None;
                    }
                    _ => {}
                }
                bit += 8;
                continue;
            }
            let used = byte >> (bit % 8) & 1 == 1;
            match (used, run_start) {
                (true, None) => run_start = Some(bit),
                (false, Some(start)) => {
                    self.insert(unit_range(start, bit));
                    run_start = None;
                }
                _ => {}
            }
            bit += 1;
        }
        if let Some(start) = run_start {
            self.insert(unit_range(start, bit_count));
        }
    }

    /// Adds every range of `other`.
    pub fn union_with(&mut self, other: &RangeSet) {
        for range in other.iter() {
            self.insert(range);
        }
    }

    /// The ranges of `within` that this set does not cover.
    pub fn complement(&self, within: Range<u64>) -> RangeSet {
        let mut gaps = RangeSet::new();
        let mut cursor = within.start;
        for range in self.overlapping(within.clone()) {
            gaps.insert(cursor..range.start);
            cursor = range.end;
        }
        gaps.insert(cursor..within.end);
        gaps
    }

    /// The bytes of this set that `removed` does not cover.
    pub fn difference(&self, removed: &RangeSet) -> RangeSet {
        let mut result = RangeSet::new();
        for range in self.iter() {
            result.union_with(&removed.complement(range));
        }
        result
    }

    /// This set moved `offset` bytes up: a volume's ranges placed at its partition's offset.
    pub fn shifted(&self, offset: u64) -> RangeSet {
        RangeSet {
            ranges: self.ranges.iter().map(|r| r.start.saturating_add(offset)..r.end.saturating_add(offset)).collect(),
        }
    }

    /// The parts of this set that fall inside `window`, clipped to it, in order.
    pub fn overlapping(&self, window: Range<u64>) -> impl Iterator<Item = Range<u64>> + '_ {
        let first = self.ranges.partition_point(|r| r.end <= window.start);
        self.ranges
            .get(first..)
            .unwrap_or_default()
            .iter()
            .take_while(move |r| r.start < window.end)
            .map(move |r| r.start.max(window.start)..r.end.min(window.end))
            .filter(|r| r.start < r.end)
    }

    /// Number of bytes of `window` that this set covers.
    pub fn covered_in(&self, window: Range<u64>) -> u64 {
        self.overlapping(window).map(|r| r.end - r.start).sum()
    }

    /// Whether `offset` lies in the set.
    pub fn contains(&self, offset: u64) -> bool {
        self.containing(offset).is_some()
    }

    /// The (merged) range that holds `offset`, if any.
    pub fn containing(&self, offset: u64) -> Option<Range<u64>> {
        let index = self.ranges.partition_point(|r| r.end <= offset);
        self.ranges.get(index).filter(|r| r.start <= offset).cloned()
    }

    /// Whether every byte of `range` lies in the set.
    pub fn contains_range(&self, range: Range<u64>) -> bool {
        range.start >= range.end || self.covered_in(range.clone()) == range.end - range.start
    }

    /// This set limited to `[0, limit)`.
    pub fn clipped(&self, limit: u64) -> RangeSet {
        let mut clipped = RangeSet::new();
        for range in self.overlapping(0..limit) {
            clipped.insert(range);
        }
        clipped
    }

    /// Total number of bytes covered.
    pub fn total(&self) -> u64 {
        self.ranges.iter().map(|r| r.end - r.start).sum()
    }

    /// The ranges, in ascending order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = Range<u64>> + '_ {
        self.ranges.iter().cloned()
    }

    /// Number of disjoint ranges.
    pub fn len(&self) -> usize {
        self.ranges.len()
    }

    /// Whether the set covers nothing.
    pub fn is_empty(&self) -> bool {
        self.ranges.is_empty()
    }

    /// One past the highest covered byte, or 0 for an empty set.
    pub fn end(&self) -> u64 {
        self.ranges.last().map_or(0, |r| r.end)
    }
}

impl FromIterator<Range<u64>> for RangeSet {
    fn from_iter<I: IntoIterator<Item = Range<u64>>>(iter: I) -> Self {
        let mut set = RangeSet::new();
        for range in iter {
            set.insert(range);
        }
        set
    }
}

#[cfg(test)]
mod tests;
