//! ext4 fast commits: the records in the journal's fast-commit area that allocate blocks.
//!
//! The fast-commit area (the journal's last `s_num_fc_blks` blocks) holds no JBD2 headers but
//! a stream of little-endian tag-length-value records, `struct ext4_fc_tl { le16 tag; le16 len }`
//! followed by `len` bytes, block by block (a PAD record fills each block's end). Replay of an
//! `ADD_RANGE` record (tag 1: le32 inode, then a 12-byte `ext4_extent`: le32 logical block,
//! le16 length, above 32768 for an unwritten extent of length - 32768, le16 start high, le32
//! start low) maps the extent into the inode and marks its blocks used in the bitmap
//! (`ext4_fc_replay_add_range`, `ext4_mb_mark_bb`).
//!
//! Every `ADD_RANGE` found in any block counts, whatever its transaction ID and checksum say:
//! a stale or uncommitted record can only keep more blocks. Ranges are clamped to the
//! filesystem. Rules: e2fsprogs lib/ext2fs/fast_commit.h, the kernel's fs/ext4/fast_commit.c,
//! the team's notes (shared/journal-and-volumes.md §1.6).

use imgstream_volume::fields::{le16, le32};
use std::ops::Range;

/// `EXT4_FC_TAG_ADD_RANGE`.
const TAG_ADD_RANGE: u16 = 1;
/// `struct ext4_fc_tl`: tag and length.
const TL_BYTES: usize = 4;
/// `struct ext4_fc_add_range`: the inode number and an extent.
const ADD_RANGE_BYTES: usize = 16;
/// `EXT_INIT_MAX_LEN`: longer extents are unwritten.
const MAX_INIT_LEN: u16 = 32768;

/// Appends the filesystem blocks (below `blocks_count`) that the `ADD_RANGE` records of one
/// fast-commit block name.
pub(crate) fn add_ranges(block: &[u8], blocks_count: u64, ranges: &mut Vec<Range<u64>>) {
    let mut at = 0;
    while let Some(header) = block.get(at..at + TL_BYTES) {
        let (tag, len) = (le16(header, 0), usize::from(le16(header, 2)));
        let Some(value) = block.get(at + TL_BYTES..at + TL_BYTES + len) else { break };
        if tag == TAG_ADD_RANGE && len >= ADD_RANGE_BYTES {
            let count = match le16(value, 8) {
                len if len > MAX_INIT_LEN => len - MAX_INIT_LEN,
                len => len,
            };
            let start = u64::from(le16(value, 10)) << 32 | u64::from(le32(value, 12));
            let end = start.saturating_add(u64::from(count)).min(blocks_count);
            if start < end {
                ranges.push(start..end);
            }
        }
        at += TL_BYTES + len;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(tag: u16, value: &[u8]) -> Vec<u8> {
        let mut bytes = tag.to_le_bytes().to_vec();
        bytes.extend_from_slice(&(value.len() as u16).to_le_bytes());
        bytes.extend_from_slice(value);
        bytes
    }

    fn add_range(ino: u32, lblk: u32, len: u16, start: u64) -> Vec<u8> {
        let mut value = ino.to_le_bytes().to_vec();
        value.extend_from_slice(&lblk.to_le_bytes());
        value.extend_from_slice(&len.to_le_bytes());
        value.extend_from_slice(&((start >> 32) as u16).to_le_bytes());
        value.extend_from_slice(&(start as u32).to_le_bytes());
        record(TAG_ADD_RANGE, &value)
    }

    #[test]
    fn add_ranges_are_found_unwritten_ones_too_and_clamped() {
        let mut block = record(9, &[0; 8]); // HEAD
        block.extend(add_range(12, 0, 5, 100));
        block.extend(record(2, &[0; 12])); // DEL_RANGE: frees only
        block.extend(add_range(13, 7, MAX_INIT_LEN + 3, 200)); // unwritten, 3 blocks
        block.extend(add_range(14, 0, 10, 995)); // clamped to the end
        block.extend(add_range(15, 0, 10, 5000)); // past the end: nothing
        block.extend(record(7, &[0; 20])); // PAD
        block.extend(add_range(16, 0, 100, 0).get(..10).unwrap()); // cut short by the block's end
        let mut ranges = Vec::new();
        add_ranges(&block, 1000, &mut ranges);
        assert_eq!(ranges, [100..105, 200..203, 995..1000]);
    }

    #[test]
    fn garbage_never_panics_and_stays_within_the_filesystem() {
        let mut state = 0x2545_F491_4F6C_DD1Du64;
        for _ in 0..2000 {
            let block: Vec<u8> = (0..64)
                .map(|i| {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    // Small tags and lengths, so that records parse.
                    if i % 4 < 2 { (state % 3) as u8 } else { (state >> 8) as u8 }
                })
                .collect();
            let mut ranges = Vec::new();
            add_ranges(&block, 1 << 20, &mut ranges);
            assert!(ranges.iter().all(|r| r.start < r.end && r.end <= 1 << 20));
        }
    }
}
