//! The streaming engine: turns a source plus its used [`RangeSet`] into an image on a [`Sink`].
//!
//! It knows nothing of filesystems. The image is cut into fixed blocks; a block with no used
//! byte is emitted as zeros without touching the source, the others are read by N reader
//! threads (only their used parts; the rest of the buffer is zero-filled) into pooled buffers
//! and written by one writer in order. Output is identical for any thread count or block size.
//!
//! Memory is bounded: a reader takes a buffer from the pool *before* it takes the next block
//! from the plan, so blocks are handed out in order to readers that can finish them, and the
//! writer, which waits for the lowest outstanding block, can always make progress.

mod plan;
mod sink;

pub use plan::{Plan, Segment};
pub use sink::{PipeSink, Sink, SparseFileSink, StreamSink};

use crossbeam_channel::{Receiver, Sender, bounded};
use imgstream_blockio::ReadAt;
use imgstream_extents::RangeSet;
use std::collections::BTreeMap;
use std::io;
use std::num::NonZeroUsize;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// Block sizes must divide 4 MiB (borg's fixed chunk size, so zero blocks dedup) and be a
/// multiple of 4 KiB (page and sector alignment).
pub const MIN_BLOCK_SIZE: usize = 4096;
/// See [`MIN_BLOCK_SIZE`].
pub const MAX_BLOCK_SIZE: usize = 4 << 20;

/// How to stream.
#[derive(Clone, Copy, Debug)]
pub struct Options {
    /// Reader threads.
    pub threads: NonZeroUsize,
    /// Block size in bytes: a power of two in `MIN_BLOCK_SIZE..=MAX_BLOCK_SIZE`.
    pub block_size: usize,
}

/// Receives the number of bytes written as the stream advances (the CLI draws a bar).
pub trait Progress: Sync {
    /// `bytes` more bytes of the image were written.
    fn advance(&self, bytes: u64);
}

/// No progress reporting.
pub struct NoProgress;
impl Progress for NoProgress {
    fn advance(&self, _bytes: u64) {}
}

/// What a finished run did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Bytes of image written (the source size).
    pub total: u64,
    /// Bytes read from the source (the used ranges).
    pub read: u64,
    /// Bytes emitted as zeros without reading.
    pub elided: u64,
    /// Wall time of the run.
    pub elapsed: Duration,
}

/// Why a run stopped. Every variant names the byte offset.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Invalid options.
    #[error("block size {0} is not a power of two between 4K and 4M")]
    BlockSize(usize),
    /// The source could not be read.
    #[error("{0}")]
    Read(io::Error),
    /// The consumer went away: the image it got is truncated.
    #[error("output closed early after {written} bytes: the image is truncated")]
    OutputClosed {
        /// Bytes delivered before the close.
        written: u64,
    },
    /// Writing the image failed.
    #[error("write failed after {written} bytes: {source}")]
    Write {
        /// Bytes delivered before the failure.
        written: u64,
        /// The write error.
        source: io::Error,
    },
}

/// Everything before the writer's position has been read for good: every `DROP_STEP` bytes the
/// page cache is told to drop it (`ReadAt::drop_cache`), read blocks and the kernel's readahead
/// into free space alike, so that a backup does not evict the host's cache.
const DROP_STEP: u64 = 8 << 20;

/// A block a reader filled, or a run of zeros, tagged with its place in the image.
enum Piece {
    Data(Vec<u8>),
    Zeros(u64),
}

/// What readers send the writer: a piece with its index, or `None` when a reader stopped on an
/// error: its block will never come, so the writer stops too (else it would wait for that
/// block while the other readers wait for the buffers it holds).
type Message = Option<(usize, Piece)>;

/// Streams the image of `source` to `sink`: bytes in `used` are copied, the rest is zeros.
pub fn stream(
    source: &dyn ReadAt,
    used: &RangeSet,
    sink: &mut dyn Sink,
    options: Options,
    progress: &dyn Progress,
) -> Result<Stats, Error> {
    let block_size = options.block_size;
    if !block_size.is_power_of_two() || !(MIN_BLOCK_SIZE..=MAX_BLOCK_SIZE).contains(&block_size) {
        return Err(Error::BlockSize(block_size));
    }
    let started = Instant::now();
    let size = source.size();
    let used = used.clipped(size);
    let plan = Mutex::new(Plan::new(&used, size, block_size as u64).enumerate());
    let threads = options.threads.get();
    // Two buffers per reader keep every reader busy while the writer drains.
    let pool_size = threads * 2;
    let (pool_tx, pool_rx) = bounded::<Vec<u8>>(pool_size);
    for _ in 0..pool_size {
        pool_tx.send(Vec::new()).expect("OK to unwrap: the pool has room for every buffer");
    }
    let (piece_tx, piece_rx) = bounded::<Message>(pool_size * 2 + 2);
    let cancel = AtomicBool::new(false);
    let read_error: Mutex<Option<io::Error>> = Mutex::new(None);

    let written = std::thread::scope(|scope| {
        for _ in 0..threads {
            let (pool_rx, piece_tx) = (pool_rx.clone(), piece_tx.clone());
            let (plan, cancel, read_error, used) = (&plan, &cancel, &read_error, &used);
            scope.spawn(move || {
                if let Err(error) = read_blocks(source, used, plan, &pool_rx, &piece_tx, cancel, block_size) {
                    cancel.store(true, Ordering::Relaxed);
                    read_error.lock().unwrap_or_else(|p| p.into_inner()).get_or_insert(error);
                    // The writer may be gone already; then there is no one to tell.
                    let _ = piece_tx.send(None);
                }
            });
        }
        drop((pool_rx, piece_tx));
        let result = write_in_order(&piece_rx, &pool_tx, sink, progress, source);
        // On a write error the readers must stop too: they see the flag or a closed channel.
        cancel.store(true, Ordering::Relaxed);
        drop((piece_rx, pool_tx));
        result
    })?;

    if let Some(error) = read_error.into_inner().unwrap_or_else(|p| p.into_inner()) {
        return Err(Error::Read(error));
    }
    if written != size {
        // Only a reader that stopped early without an error could cause this; never report success.
        return Err(Error::Read(io::Error::other(format!("stream ended at byte {written} of {size}"))));
    }
    sink.finish().map_err(|source| Error::Write { written, source })?;
    let read = used.total();
    Ok(Stats { total: size, read, elided: size - read, elapsed: started.elapsed() })
}

/// A reader thread: takes a buffer, then the next segment, fills it, hands it to the writer.
fn read_blocks(
    source: &dyn ReadAt,
    used: &RangeSet,
    plan: &Mutex<std::iter::Enumerate<Plan<'_>>>,
    pool: &Receiver<Vec<u8>>,
    pieces: &Sender<Message>,
    cancel: &AtomicBool,
    block_size: usize,
) -> io::Result<()> {
    let mut spare: Option<Vec<u8>> = None;
    while !cancel.load(Ordering::Relaxed) {
        let mut buffer = match spare.take() {
            Some(buffer) => buffer,
            // The writer is gone: it stopped on an error of its own.
            None => match pool.recv() {
                Ok(buffer) => buffer,
                Err(_) => return Ok(()),
            },
        };
        let next = plan.lock().unwrap_or_else(|p| p.into_inner()).next();
        let Some((index, segment)) = next else { return Ok(()) };
        let piece = match segment {
            Segment::Zeros(range) => {
                spare = Some(buffer);
                Piece::Zeros(range.end - range.start)
            }
            Segment::Data(range) => {
                let len = usize::try_from(range.end - range.start).expect("OK to unwrap: at most one block");
                buffer.clear();
                buffer.reserve_exact(block_size);
                buffer.resize(len, 0);
                for part in used.overlapping(range.clone()) {
                    let at = usize::try_from(part.start - range.start).expect("OK to unwrap: inside the block");
                    let part_len = usize::try_from(part.end - part.start).expect("OK to unwrap: inside the block");
                    let target = buffer.get_mut(at..at + part_len).expect("OK to unwrap: inside the block");
                    source.read_exact_at(target, part.start)?;
                }
                Piece::Data(buffer)
            }
        };
        if pieces.send(Some((index, piece))).is_err() {
            return Ok(());
        }
    }
    Ok(())
}

/// The writer: emits pieces in image order, returning data buffers to the pool, and lets the
/// page cache drop what lies behind (see [`DROP_STEP`]). Returns the number of bytes written
/// when the readers are done.
fn write_in_order(
    pieces: &Receiver<Message>,
    pool: &Sender<Vec<u8>>,
    sink: &mut dyn Sink,
    progress: &dyn Progress,
    source: &dyn ReadAt,
) -> Result<u64, Error> {
    let mut waiting: BTreeMap<usize, Piece> = BTreeMap::new();
    let mut next = 0usize;
    let mut written = 0u64;
    let mut dropped_to = 0u64;
    let fail = |written: u64, source: io::Error| match source.kind() {
        io::ErrorKind::BrokenPipe => Error::OutputClosed { written },
        _ => Error::Write { written, source },
    };
    while let Ok(Some((index, piece))) = pieces.recv() {
        waiting.insert(index, piece);
        while let Some(piece) = waiting.remove(&next) {
            let len = match piece {
                Piece::Zeros(len) => {
                    sink.write_zeros(len).map_err(|e| fail(written, e))?;
                    len
                }
                Piece::Data(buffer) => {
                    sink.write_data(&buffer).map_err(|e| fail(written, e))?;
                    let len = buffer.len() as u64;
                    // The pool is only full if readers are gone; dropping the buffer is then fine.
                    let _ = pool.try_send(buffer);
                    len
                }
            };
            written += len;
            progress.advance(len);
            next += 1;
            if written - dropped_to >= DROP_STEP {
                source.drop_cache(dropped_to..written);
                dropped_to = written;
            }
        }
    }
    // To the end of the source, not of what was written: the kernel's readahead runs ahead.
    source.drop_cache(dropped_to..source.size());
    Ok(written)
}

#[cfg(test)]
mod tests;
