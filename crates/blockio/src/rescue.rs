//! Reads for a dying disk (`--rescue`): a read that fails is retried sector by sector, and the
//! sectors that still fail read as zeros and are remembered, for a ddrescue map and a summary.
//!
//! Only I/O errors are rescued. A read past the end (`UnexpectedEof`: the source shrank, or a
//! caller's bug) still fails, since zeros there would hide a truncated source.

use crate::ReadAt;
use std::io;
use std::ops::Range;
use std::sync::Mutex;

/// A `ReadAt` that never fails on an unreadable sector: it reads zeros there instead.
#[derive(Debug)]
pub struct Rescue<R> {
    inner: R,
    sector: u64,
    bad: Mutex<Vec<Range<u64>>>,
}

impl<R: ReadAt> Rescue<R> {
    /// Rescue reads over `inner`, retrying in units of `sector_size` bytes (at least 1).
    pub fn new(inner: R, sector_size: u32) -> Self {
        Self { inner, sector: u64::from(sector_size.max(1)), bad: Mutex::new(Vec::new()) }
    }

    /// The unreadable byte ranges met so far, sorted, adjacent ones merged.
    pub fn bad_ranges(&self) -> Vec<Range<u64>> {
        let mut ranges = self.bad.lock().unwrap_or_else(|p| p.into_inner()).clone();
        ranges.sort_by_key(|r| r.start);
        let mut merged: Vec<Range<u64>> = Vec::with_capacity(ranges.len());
        for range in ranges {
            match merged.last_mut() {
                Some(last) if last.end >= range.start => last.end = last.end.max(range.end),
                _ => merged.push(range),
            }
        }
        merged
    }

    /// Reads `buf` at `offset` one sector-aligned piece at a time, zeroing the pieces that fail.
    fn read_by_sector(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        let mut done = 0usize;
        while done < buf.len() {
            let at = offset + done as u64;
            let piece_len = usize::try_from((at / self.sector + 1) * self.sector - at)
                .map_or(buf.len() - done, |len| len.min(buf.len() - done));
            let Some(piece) = buf.get_mut(done..done + piece_len) else { break };
            match self.inner.read_exact_at(piece, at) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Err(e),
                Err(_) => {
                    piece.fill(0);
                    self.bad.lock().unwrap_or_else(|p| p.into_inner()).push(at..at + piece_len as u64);
                }
            }
            done += piece_len;
        }
        Ok(())
    }
}

impl<R: ReadAt> ReadAt for Rescue<R> {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        match self.inner.read_exact_at(buf, offset) {
            Err(e) if e.kind() != io::ErrorKind::UnexpectedEof => self.read_by_sector(buf, offset),
            result => result,
        }
    }
    fn size(&self) -> u64 {
        self.inner.size()
    }
    fn drop_cache(&self, range: Range<u64>) {
        self.inner.drop_cache(range);
    }
    fn prefetch(&self, range: Range<u64>) {
        self.inner.prefetch(range);
    }
    fn data_in(&self, range: Range<u64>) -> Vec<Range<u64>> {
        self.inner.data_in(range)
    }
}

#[cfg(test)]
#[allow(clippy::indexing_slicing)] // test code: a panic is a failed test
mod tests {
    use super::*;

    /// 4 KiB of 0xAA whose bytes 1000..1100 cannot be read.
    struct Damaged;

    impl ReadAt for Damaged {
        fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
            let end = offset + buf.len() as u64;
            if end > 4096 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            if offset < 1100 && end > 1000 {
                return Err(io::Error::other("Input/output error"));
            }
            buf.fill(0xAA);
            Ok(())
        }
        fn size(&self) -> u64 {
            4096
        }
    }

    #[test]
    fn unreadable_sectors_read_as_zeros_and_are_listed_merged() {
        let rescue = Rescue::new(Damaged, 512);
        let mut buf = vec![1u8; 3000];
        rescue.read_exact_at(&mut buf, 100).unwrap();
        // The sectors 512..1024 and 1024..1536 hold the bad bytes; the rest was readable.
        assert!(buf[..412].iter().all(|&b| b == 0xAA));
        assert!(buf[412..1436].iter().all(|&b| b == 0));
        assert!(buf[1436..].iter().all(|&b| b == 0xAA));
        // Reading the bad bytes again (unaligned) finds the same sectors: they merge.
        rescue.read_exact_at(&mut [0u8; 600], 1000).unwrap();
        assert_eq!(rescue.bad_ranges(), vec![512..1536]);
    }

    #[test]
    fn a_read_past_the_end_still_fails() {
        let rescue = Rescue::new(Damaged, 512);
        let error = rescue.read_exact_at(&mut [0u8; 1024], 3584).unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::UnexpectedEof);
        assert!(rescue.bad_ranges().is_empty());
    }
}
