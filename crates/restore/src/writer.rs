//! The copy loop: fill a large block from the stream, split it into pages, write data runs,
//! turn zero runs into holes, `BLKZEROOUT` or plain zeros.

use crate::{Error, Target, ZeroMode};
use imgstream_blockio::ioctl;
use imgstream_stream::Progress;
use std::io::{self, Read};
use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::sync::mpsc;

/// Zero detection granularity: a file-system page, so holes line up with filesystem blocks.
pub const PAGE_SIZE: usize = 4096;
/// The stream is read in blocks of this size (borg's fixed chunk size).
pub const DEFAULT_BLOCK_SIZE: usize = 4 << 20;
/// `BLKZEROOUT` needs 512-byte aligned start and length.
const ZEROOUT_ALIGN: u64 = 512;

/// Zeros to compare pages against (memcmp is vectorised) and to write zero runs from.
static ZEROS: [u8; 1 << 20] = [0; 1 << 20];

/// What a stream copy did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Report {
    /// Bytes of stream consumed.
    pub total: u64,
    /// Bytes written as data.
    pub data: u64,
    /// Bytes in zero runs (holes, zeroed out, skipped or written as zeros).
    pub zeros: u64,
}

/// Blocks in flight between the reader thread and the writer: one being filled, one being
/// written, one queued. Memory is `READ_AHEAD * block_size`.
const READ_AHEAD: usize = 3;

/// Copies `input` into `target` starting at byte `offset`. The stream must hold exactly
/// `expected` bytes if given; it may never reach past the target's capacity. Reads in blocks of
/// `block_size` bytes (a multiple of [`PAGE_SIZE`]), filling each block across short reads.
///
/// A reader thread fills blocks while the calling thread writes the previous ones, so that the
/// producer (borg) never waits for a write.
pub fn write_stream(
    target: &Target,
    input: &mut (dyn Read + Send),
    offset: u64,
    expected: Option<u64>,
    block_size: usize,
    progress: &dyn Progress,
) -> Result<Report, Error> {
    let block_size = block_size.max(PAGE_SIZE) / PAGE_SIZE * PAGE_SIZE;
    let limit = match (expected, target.capacity()) {
        (Some(expected), _) => Some(expected),
        (None, Some(capacity)) => Some(capacity.saturating_sub(offset)),
        (None, None) => None,
    };
    if let (Some(expected), Some(capacity)) = (expected, target.capacity()) {
        if offset.saturating_add(expected) > capacity {
            return Err(Error::Refused {
                path: target.path.clone(),
                reason: format!(
                    "{expected} bytes at byte {offset} do not fit in its {capacity} bytes: nothing was written"
                ),
            });
        }
    }
    let (full_tx, full_rx) = mpsc::sync_channel::<io::Result<(Vec<u8>, usize)>>(READ_AHEAD - 1);
    let (empty_tx, empty_rx) = mpsc::sync_channel::<Vec<u8>>(READ_AHEAD);
    for _ in 0..READ_AHEAD {
        empty_tx.send(Vec::new()).expect("OK to unwrap: the channel has room for every buffer");
    }
    std::thread::scope(|scope| {
        // Owned by this closure: returning (even early, on an error) drops them, which stops
        // a reader blocked on a full queue before the scope waits for it.
        let (full_rx, empty_tx) = (full_rx, empty_tx);
        scope.spawn(move || {
            // Stops at the end of the stream, on a read error, or when the writer hangs up.
            while let Ok(mut buffer) = empty_rx.recv() {
                buffer.resize(block_size, 0);
                let result = fill(input, &mut buffer);
                let done = !matches!(result, Ok(n) if n > 0);
                if full_tx.send(result.map(|n| (buffer, n))).is_err() || done {
                    break;
                }
            }
        });
        let mut writer = Writer { target, zeros: None, report: Report::default() };
        let mut received = 0u64;
        // Start of the previous block: written back by now, so its clean pages can be dropped.
        let mut writeback_from = offset;
        while let Ok(result) = full_rx.recv() {
            let (buffer, filled) = result.map_err(|source| Error::Read { received, source })?;
            if filled == 0 {
                break;
            }
            let after = received + filled as u64;
            if let Some(limit) = limit {
                if after > limit {
                    return Err(Error::Long { path: target.path.clone(), expected: limit });
                }
            }
            writer.block(buffer.get(..filled).unwrap_or_default(), offset + received)?;
            target.start_writeback(writeback_from..offset + after);
            writeback_from = offset + received;
            received = after;
            progress.advance(filled as u64);
            // The reader may be gone (it stops after the last block); the buffer is then dropped.
            let _ = empty_tx.send(buffer);
        }
        writer.flush_zeros()?;
        if let Some(expected) = expected {
            if received != expected {
                return Err(Error::Short { path: target.path.clone(), received, expected });
            }
        }
        writer.report.total = received;
        Ok(writer.report)
    })
}

/// Reads until `buffer` is full or the stream ends (a pipe delivers at most its buffer per read);
/// returns the number of bytes read.
pub fn fill(input: &mut dyn Read, buffer: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while let Some(rest) = buffer.get_mut(filled..) {
        if rest.is_empty() {
            break;
        }
        match input.read(rest) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

fn is_zero(page: &[u8]) -> bool {
    ZEROS.get(..page.len()).is_some_and(|zeros| zeros == page)
}

struct Writer<'a> {
    target: &'a Target,
    /// A zero run not yet applied (absolute offsets): consecutive runs across blocks merge.
    zeros: Option<Range<u64>>,
    report: Report,
}

impl Writer<'_> {
    /// One block of the stream at absolute offset `at`: data runs written, zero runs collected.
    fn block(&mut self, block: &[u8], at: u64) -> Result<(), Error> {
        let mut data_start: Option<usize> = None;
        for (index, page) in block.chunks(PAGE_SIZE).enumerate() {
            let page_at = index * PAGE_SIZE;
            if is_zero(page) {
                if let Some(start) = data_start.take() {
                    self.data(block.get(start..page_at).unwrap_or_default(), at + start as u64)?;
                }
                let page_range = at + page_at as u64..at + (page_at + page.len()) as u64;
                self.zeros = Some(match self.zeros.take() {
                    Some(run) if run.end == page_range.start => run.start..page_range.end,
                    Some(run) => {
                        self.apply_zeros(run)?;
                        page_range
                    }
                    None => page_range,
                });
            } else if data_start.is_none() {
                self.flush_zeros()?;
                data_start = Some(page_at);
            }
        }
        if let Some(start) = data_start {
            self.data(block.get(start..).unwrap_or_default(), at + start as u64)?;
        }
        Ok(())
    }

    fn data(&mut self, bytes: &[u8], at: u64) -> Result<(), Error> {
        self.target.file.write_all_at(bytes, at).map_err(|e| self.write_error("write", at, bytes.len() as u64, e))?;
        self.report.data += bytes.len() as u64;
        Ok(())
    }

    fn flush_zeros(&mut self) -> Result<(), Error> {
        match self.zeros.take() {
            Some(run) => self.apply_zeros(run),
            None => Ok(()),
        }
    }

    fn apply_zeros(&mut self, run: Range<u64>) -> Result<(), Error> {
        self.report.zeros += run.end - run.start;
        match self.target.zero_mode {
            ZeroMode::Skip => Ok(()),
            ZeroMode::Write => self.write_zeros(run),
            ZeroMode::ZeroOut => {
                // The aligned middle through the ioctl, any unaligned edge as written zeros.
                let start = run.start.div_ceil(ZEROOUT_ALIGN) * ZEROOUT_ALIGN;
                let end = run.end / ZEROOUT_ALIGN * ZEROOUT_ALIGN;
                if start >= end {
                    return self.write_zeros(run);
                }
                self.write_zeros(run.start..start)?;
                match ioctl::zero_out(&self.target.file, start, end - start) {
                    Ok(()) => {}
                    // Not supported by this device (or kernel): zeros the slow way.
                    Err(e) if matches!(e.raw_os_error(), Some(libc::EOPNOTSUPP | libc::ENOTTY | libc::EINVAL)) => {
                        self.write_zeros(start..end)?;
                    }
                    Err(e) => return Err(self.write_error("zero-out", start, end - start, e)),
                }
                self.write_zeros(end..run.end)
            }
        }
    }

    fn write_zeros(&self, run: Range<u64>) -> Result<(), Error> {
        let mut at = run.start;
        while at < run.end {
            let len = usize::try_from(run.end - at).map_or(ZEROS.len(), |n| n.min(ZEROS.len()));
            let zeros = ZEROS.get(..len).unwrap_or_default();
            self.target.file.write_all_at(zeros, at).map_err(|e| self.write_error("write", at, len as u64, e))?;
            at += len as u64;
        }
        Ok(())
    }

    fn write_error(&self, what: &'static str, offset: u64, len: u64, source: io::Error) -> Error {
        Error::Write { path: self.target.path.clone(), what, offset, len, source }
    }
}

#[cfg(test)]
mod tests;
