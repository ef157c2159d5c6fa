//! Is the internal log clean? A dirty log holds transactions that mounting replays, and until
//! then the on-disk free-space B+trees may still list blocks those transactions allocated.
//!
//! This is the kernel's and xfsprogs' decision (`xlog_find_head`, `xlog_find_tail`,
//! `xlog_check_unmount_rec` in xfs_log_recover.c; `xlog_is_dirty` in libxlog/util.c), made
//! stricter wherever it has to guess, so that "clean" is only said when they would say it too:
//! - The log is a ring of 512-byte basic blocks, each stamped with the cycle (pass over the
//!   ring) that wrote it: its first word, or the second in a record header (magic 0xFEEDBABE).
//! - The head is where the cycle drops: found by the same binary search as the kernel's, then
//!   every block in the window before it that the kernel scans (`XLOG_TOTAL_REC_SHIFT`, 2 MiB,
//!   the most that can be in flight) must carry the current cycle and every block of that
//!   window past the head the previous one. The kernel tolerates and repairs some mixtures
//!   (torn concurrent writes); we call them dirty.
//! - Clean means the last record header before the head is an unmount record (one operation,
//!   flagged `XLOG_UNMOUNT_TRANS`) that ends exactly at the head: then the kernel sets the tail
//!   to the head and replays nothing. Anything else is dirty.
//! - A log whose first and last blocks are both unwritten (cycle 0) is empty: nothing to replay.

use crate::Error;
use crate::superblock::Superblock;
use imgstream_blockio::ReadAt;
use imgstream_volume::fields::{be32, u8_at};
use imgstream_volume::read_at;

const BB: u64 = 512;
const XLOG_HEADER_MAGIC: u32 = 0xFEED_BABE;
/// Blocks the kernel scans before the head (`XLOG_TOTAL_REC_SHIFT` of a v2 log: 8 in-core
/// logs of 256 KiB); v1 logs use less, and scanning more is only stricter.
const SCAN_BLOCKS: u64 = 4096;
/// Record headers span one basic block per 32 KiB of record (`XLOG_HEADER_CYCLE_SIZE`).
const HEADER_CYCLE_SIZE: u32 = 32768;
/// `h_version` bit of v2 records.
const XLOG_VERSION_2: u32 = 2;
/// `oh_flags` bit of the unmount record's only operation.
const XLOG_UNMOUNT_TRANS: u8 = 0x20;

const H_CYCLE: usize = 4;
const H_VERSION: usize = 8;
const H_LEN: usize = 12;
const H_NUM_LOGOPS: usize = 40;
const H_SIZE: usize = 320;
const OH_FLAGS: usize = 9;

/// The log's verdict.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum LogState {
    /// Ends with an unmount record at the head.
    Clean,
    /// Never written (or zeroed by `xfs_repair -L`).
    Empty,
    /// Why it may hold transactions to replay.
    Dirty(String),
}

/// Decides the state of the internal log at linear block `start`, `blocks` long.
pub(crate) fn state(volume: &dyn ReadAt, sb: &Superblock, start: u64, blocks: u32) -> Result<LogState, Error> {
    let log = Log {
        volume,
        offset: start * u64::from(sb.block_size),
        len: u64::from(blocks) * u64::from(sb.block_size) / BB,
    };
    let first = log.cycle(0)?;
    let last = log.cycle(log.len - 1)?;
    // (head, cycle before the head, cycle from the head on); head == len: the whole ring has one cycle.
    let (head, before, after) = match (first, last) {
        (0, 0) => return Ok(LogState::Empty),
        (0, _) => return Ok(LogState::Dirty("its first block is unwritten but its last is not".into())),
        (1, 0) => (log.cycle_start(0)?, 1, 0),
        (_, 0) => return Ok(LogState::Dirty(format!("its last block is unwritten but its first has cycle {first}"))),
        _ if first == last => (log.len, first, first),
        _ if last.wrapping_add(1) == first => (log.cycle_start(last)?, first, last),
        _ => return Ok(LogState::Dirty(format!("its first block has cycle {first} and its last cycle {last}"))),
    };

    // The window of up to SCAN_BLOCKS blocks that ends at the head, wrapping round the ring.
    let window_len = SCAN_BLOCKS.min(log.len);
    let window_start = (head + log.len - window_len) % log.len;
    let window = log.read_ring(window_start, window_len)?;
    let block = |index: u64| window.get((index * BB) as usize..((index + 1) * BB) as usize).unwrap_or_default();
    let ring = |index: u64| (window_start + index) % log.len;
    for index in 0..window_len {
        let number = ring(index);
        let expected = if number < head { before } else { after };
        let cycle = cycle_of(block(index));
        if cycle != expected {
            return Ok(LogState::Dirty(format!(
                "log block {number} has cycle {cycle} where {expected} was expected (head at block {})",
                head % log.len
            )));
        }
    }

    // The kernel looks for the last record header no further back than one record can span
    // (`XLOG_REC_SHIFT`: 256 KiB in a v2 log, 32 KiB in a v1 log), and fails the mount without one.
    let record_scan = window_len.min(if sb.log_v2 { 512 } else { 64 });
    let Some(header) =
        (window_len - record_scan..window_len).rev().find(|&index| be32(block(index), 0) == XLOG_HEADER_MAGIC)
    else {
        return Ok(LogState::Dirty(format!("no record header in the {record_scan} blocks before the head")));
    };
    let record = block(header);
    // v2 records carry their in-core log size, which sets how many blocks the header spans. The
    // kernel computes that twice, once ignoring h_version and a zero size; both agree here.
    let header_blocks = if sb.log_v2 {
        let size = be32(record, H_SIZE);
        if be32(record, H_VERSION) & XLOG_VERSION_2 == 0 || size == 0 {
            return Ok(LogState::Dirty(format!(
                "the last record header (at log block {}) is not a v2 one",
                ring(header)
            )));
        }
        u64::from(size.div_ceil(HEADER_CYCLE_SIZE))
    } else {
        1
    };
    let data_blocks = u64::from(be32(record, H_LEN)).div_ceil(BB);
    let record_end = header + header_blocks + data_blocks;
    if record_end != window_len {
        return Ok(LogState::Dirty(format!(
            "the last record (at log block {}, cycle {}) does not end at the head (block {})",
            ring(header),
            be32(record, H_CYCLE),
            head % log.len
        )));
    }
    let operation = block(header + header_blocks);
    if be32(record, H_NUM_LOGOPS) != 1 || data_blocks == 0 || u8_at(operation, OH_FLAGS) & XLOG_UNMOUNT_TRANS == 0 {
        return Ok(LogState::Dirty(format!(
            "the last record (at log block {}) is not an unmount record",
            ring(header)
        )));
    }
    Ok(LogState::Clean)
}

/// The cycle stamped on a basic block.
fn cycle_of(block: &[u8]) -> u32 {
    if be32(block, 0) == XLOG_HEADER_MAGIC { be32(block, H_CYCLE) } else { be32(block, 0) }
}

/// The log's basic blocks.
struct Log<'a> {
    volume: &'a dyn ReadAt,
    /// Byte offset of block 0.
    offset: u64,
    /// Length in basic blocks.
    len: u64,
}

impl Log<'_> {
    /// `count` blocks from `start`, wrapping at the end of the ring (`count` ≤ len).
    fn read_ring(&self, start: u64, count: u64) -> Result<Vec<u8>, Error> {
        let mut bytes = vec![0u8; (count * BB) as usize];
        let first_part = count.min(self.len - start);
        let (head, tail) = bytes.split_at_mut((first_part * BB) as usize);
        read_at(self.volume, || "internal log", self.offset + start * BB, head)?;
        read_at(self.volume, || "internal log", self.offset, tail)?;
        Ok(bytes)
    }

    fn cycle(&self, block: u64) -> Result<u32, Error> {
        Ok(cycle_of(&self.read_ring(block, 1)?))
    }

    /// The first block with `cycle` after block 0, by the kernel's binary search
    /// (`xlog_find_cycle_start` from block 0 to the last block).
    fn cycle_start(&self, cycle: u32) -> Result<u64, Error> {
        let (mut first, mut end) = (0, self.len - 1);
        let mut mid = (first + end) / 2;
        while mid != first && mid != end {
            if self.cycle(mid)? == cycle {
                end = mid;
            } else {
                first = mid;
            }
            mid = (first + end) / 2;
        }
        Ok(end)
    }
}
