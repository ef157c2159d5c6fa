//! The JBD2 journal (ext3/ext4) of a filesystem that needs recovery, read without replaying
//! it: every block of the filesystem that some descriptor block of the log says was logged,
//! where its copy lies in the log, and the number of committed transactions recovery would
//! replay.
//!
//! Everything in the journal is big-endian. Block 0 of the journal inode is the journal
//! superblock; the normal log area is `[s_first, j_last)`, where `j_last` is `s_maxlen`, or
//! `s_maxlen - s_num_fc_blks` when the fast-commit area takes the tail (its records are read by
//! [`crate::fast_commit`]). A descriptor block's tags name the filesystem blocks whose copies
//! follow it in the log, wrapping from `j_last` to `s_first` (the kernel's rule since commit
//! 2dfba3bb40ad; e2fsprogs still wraps at the end of the fast-commit area, which ends its scan
//! too early).
//!
//! Unlike recovery, which follows transaction IDs from `s_start` and stops at the first bad
//! checksum, this reads *every* block of the log area and takes every descriptor it finds,
//! stale ones too, and ignores checksums and revoke records: callers only ever add what a copy
//! says is in use, so more copies can only keep more blocks, never fewer. A logged block whose
//! first four bytes were the magic number was escaped (`ESCAPE` tag flag: the bytes zeroed), so
//! no logged copy is mistaken for a descriptor, and the magic is put back before a copy is used.
//!
//! Rules: e2fsprogs lib/ext2fs/kernel-jbd.h (`journal_superblock_t`, `journal_block_tag_t`,
//! `journal_block_tag3_t`, `journal_tag_bytes`), e2fsck/recovery.c (`count_tags`,
//! `do_one_pass`), e2fsck/journal.c (`e2fsck_journal_load`: the known feature sets), and the
//! team's notes (shared/journal-and-volumes.md §1.2 to §1.5).

use crate::Error;
use crate::block_map::BlockMap;
use crate::fast_commit;
use crate::superblock::Superblock;
use imgstream_blockio::ReadAt;
use imgstream_volume::fields::array;
use imgstream_volume::read_at;
use std::collections::HashMap;
use std::ops::Range;

/// `h_magic` of every journal metadata block.
pub(crate) const JBD2_MAGIC: u32 = 0xC03B_3998;

// `h_blocktype`.
const DESCRIPTOR_BLOCK: u32 = 1;
const COMMIT_BLOCK: u32 = 2;
const SUPERBLOCK_V1: u32 = 3;
const SUPERBLOCK_V2: u32 = 4;
const REVOKE_BLOCK: u32 = 5;

// Journal superblock fields.
const S_BLOCKSIZE: usize = 0x0C;
const S_MAXLEN: usize = 0x10;
const S_FIRST: usize = 0x14;
const S_SEQUENCE: usize = 0x18;
const S_START: usize = 0x1C;
const S_FEATURE_INCOMPAT: usize = 0x28;
const S_FEATURE_RO_COMPAT: usize = 0x2C;
const S_NUM_FC_BLKS: usize = 0x54;

/// `s_feature_incompat` bits (the whole known set, as e2fsck's JBD2_KNOWN_INCOMPAT_FEATURES).
mod feature {
    pub(super) const REVOKE: u32 = 0x1;
    pub(super) const BIT64: u32 = 0x2;
    pub(super) const ASYNC_COMMIT: u32 = 0x4;
    pub(super) const CSUM_V2: u32 = 0x8;
    pub(super) const CSUM_V3: u32 = 0x10;
    pub(super) const FAST_COMMIT: u32 = 0x20;
    pub(super) const KNOWN: u32 = REVOKE | BIT64 | ASYNC_COMMIT | CSUM_V2 | CSUM_V3 | FAST_COMMIT;
}

// Tag flags (the low 16 bits, at byte 6 of both tag layouts).
const FLAG_ESCAPE: u16 = 0x1;
const FLAG_SAME_UUID: u16 = 0x2;
const FLAG_LAST_TAG: u16 = 0x8;
/// The 12-byte header of every journal metadata block, where descriptor tags begin.
const HEADER_BYTES: usize = 12;
/// The UUID following a tag without `SAME_UUID`.
const TAG_UUID_BYTES: usize = 16;
/// With csum v2/v3, a descriptor ends with a 4-byte checksum tail.
const DESCRIPTOR_TAIL_BYTES: usize = 4;
/// `jbd2_journal_get_num_fc_blks`: the fast-commit area's size when the superblock says 0.
const DEFAULT_FC_BLOCKS: u64 = 256;
/// How many contiguous journal blocks one read may take.
const READ_RUN_BYTES: u64 = 1 << 20;

fn be16(bytes: &[u8], offset: usize) -> u16 {
    u16::from_be_bytes(array(bytes, offset))
}

fn be32(bytes: &[u8], offset: usize) -> u32 {
    u32::from_be_bytes(array(bytes, offset))
}

/// A filesystem block that a descriptor says was logged, and where its copy is.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Tag {
    /// The filesystem block the copy belongs to.
    pub(crate) home: u64,
    /// The journal block holding the copy.
    log_block: u64,
    /// The copy's first four bytes were the magic number and were zeroed.
    escaped: bool,
}

/// What the journal of a filesystem needing recovery holds.
pub(crate) struct Log {
    /// Every tag of every descriptor block found in the log area, in log order.
    pub(crate) tags: Vec<Tag>,
    /// Committed transactions from `s_start` in sequence (checksums not checked).
    pub(crate) transactions: u64,
    /// Filesystem blocks named by a fast-commit `ADD_RANGE` anywhere in the fast-commit area.
    pub(crate) fast_commit_blocks: Vec<Range<u64>>,
    /// Where the journal's blocks are.
    map: BlockMap,
    block_bits: u32,
}

/// The journal superblock fields the analysis uses, validated.
struct JournalSuperblock {
    maxlen: u64,
    first: u64,
    sequence: u32,
    start: u64,
    incompat: u32,
    /// End of the normal log area (the fast-commit area follows it).
    last: u64,
}

impl JournalSuperblock {
    fn parse(raw: &[u8], sb: &Superblock, offset: u64) -> Result<Self, Error> {
        let unsupported =
            |field: usize, problem: String| Error::unsupported("journal superblock", offset + field as u64, problem);
        let magic = be32(raw, 0);
        let blocktype = be32(raw, 4);
        if magic != JBD2_MAGIC || !(SUPERBLOCK_V1..=SUPERBLOCK_V2).contains(&blocktype) {
            return Err(unsupported(
                0,
                format!("magic 0x{magic:08x}, block type {blocktype}: not a JBD2 journal superblock"),
            ));
        }
        let block_size = u64::from(be32(raw, S_BLOCKSIZE));
        if block_size != sb.block_size() {
            return Err(unsupported(
                S_BLOCKSIZE,
                format!("block size {block_size} differs from the filesystem's {}", sb.block_size()),
            ));
        }
        // Version 1 has no feature words.
        let v2 = blocktype == SUPERBLOCK_V2;
        let word = |field| if v2 { be32(raw, field) } else { 0 };
        let incompat = word(S_FEATURE_INCOMPAT);
        let unknown = incompat & !feature::KNOWN;
        if unknown != 0 {
            return Err(unsupported(
                S_FEATURE_INCOMPAT,
                format!("unknown incompatible journal features 0x{unknown:x}"),
            ));
        }
        // No read-only-compatible journal feature is defined; e2fsck refuses any.
        let ro_compat = word(S_FEATURE_RO_COMPAT);
        if ro_compat != 0 {
            return Err(unsupported(
                S_FEATURE_RO_COMPAT,
                format!("unknown read-only-compatible journal features 0x{ro_compat:x}"),
            ));
        }
        let maxlen = u64::from(be32(raw, S_MAXLEN));
        let first = u64::from(be32(raw, S_FIRST));
        let fc_blocks = if incompat & feature::FAST_COMMIT != 0 {
            match u64::from(be32(raw, S_NUM_FC_BLKS)) {
                0 => DEFAULT_FC_BLOCKS,
                n => n,
            }
        } else {
            0
        };
        let last = maxlen.saturating_sub(fc_blocks);
        if maxlen > sb.blocks_count || first == 0 || first >= last {
            return Err(unsupported(
                S_MAXLEN,
                format!(
                    "log area from block {first} to {last} of {maxlen} ({fc_blocks} fast-commit blocks) is not valid in a filesystem of {} blocks",
                    sb.blocks_count
                ),
            ));
        }
        let start = u64::from(be32(raw, S_START));
        if start != 0 && !(first..last).contains(&start) {
            return Err(unsupported(S_START, format!("log start {start} lies outside the log area {first}..{last}")));
        }
        Ok(Self { maxlen, first, sequence: be32(raw, S_SEQUENCE), start, incompat, last })
    }

    /// The journal block `count` blocks after `block` (in the normal log area), wrapping at
    /// the end of the normal log area, not at the end of the fast-commit area.
    fn advance(&self, block: u64, count: u64) -> u64 {
        let len = self.last - self.first;
        self.first + (block.saturating_sub(self.first) + count % len) % len
    }

    fn has(&self, bit: u32) -> bool {
        self.incompat & bit != 0
    }

    /// `journal_tag_bytes`.
    fn tag_bytes(&self) -> usize {
        if self.has(feature::CSUM_V3) {
            return 16;
        }
        let size = 12 + if self.has(feature::CSUM_V2) { 2 } else { 0 };
        if self.has(feature::BIT64) { size } else { size - 4 }
    }

    /// The tags of descriptor block `block`: (home block, flags), as `count_tags` counts them.
    fn descriptor_tags(&self, block: &[u8]) -> Vec<(u64, u16)> {
        let tag_bytes = self.tag_bytes();
        let tail = if self.has(feature::CSUM_V2 | feature::CSUM_V3) { DESCRIPTOR_TAIL_BYTES } else { 0 };
        let size = block.len().saturating_sub(tail);
        let mut tags = Vec::new();
        let mut at = HEADER_BYTES;
        while at + tag_bytes <= size {
            let tag = block.get(at..at + tag_bytes).unwrap_or(&[]);
            let flags = be16(tag, 6);
            let high = if self.has(feature::BIT64) { u64::from(be32(tag, 8)) << 32 } else { 0 };
            tags.push((high | u64::from(be32(tag, 0)), flags));
            at += tag_bytes;
            if flags & FLAG_SAME_UUID == 0 {
                at += TAG_UUID_BYTES;
            }
            if flags & FLAG_LAST_TAG != 0 {
                break;
            }
        }
        tags
    }
}

/// Header of a journal metadata block in the normal log area: (block type, sequence, tags).
type Header = (u32, u32, u64);

impl Log {
    /// Reads the internal journal (inode `s_journal_inum`) of `sb`.
    pub(crate) fn read(volume: &dyn ReadAt, sb: &Superblock) -> Result<Self, Error> {
        let inode = sb.journal_inum;
        let first = BlockMap::of_inode(volume, sb, inode, 1)?;
        let Some(sb_block) = first.physical(0) else {
            return Err(Error::unsupported(
                format!("journal inode {inode}"),
                crate::superblock::SUPERBLOCK_OFFSET,
                "has no block 0 (the journal superblock)",
            ));
        };
        let sb_offset = sb_block << sb.block_bits;
        let mut raw = vec![0; usize::try_from(sb.block_size()).unwrap_or(0)];
        read_at(volume, || "journal superblock", sb_offset, &mut raw)?;
        let jsb = JournalSuperblock::parse(&raw, sb, sb_offset)?;

        let map = BlockMap::of_inode(volume, sb, inode, jsb.maxlen)?;
        if let Some(hole) = map.first_hole(jsb.maxlen) {
            return Err(Error::unsupported(
                format!("journal inode {inode}"),
                sb_offset,
                format!("journal block {hole} of {} is not mapped", jsb.maxlen),
            ));
        }
        let mut log =
            Self { tags: Vec::new(), transactions: 0, fast_commit_blocks: Vec::new(), map, block_bits: sb.block_bits };
        let headers = log.scan(volume, sb, &jsb)?;
        log.transactions = count_transactions(&jsb, &headers);
        Ok(log)
    }

    /// Reads every block of the journal after its superblock once, run by run: descriptor tags
    /// and headers from the normal area, `ADD_RANGE`s from the fast-commit area.
    fn scan(
        &mut self,
        volume: &dyn ReadAt,
        sb: &Superblock,
        jsb: &JournalSuperblock,
    ) -> Result<HashMap<u64, Header>, Error> {
        let block_size = usize::try_from(sb.block_size()).unwrap_or(0);
        let max_run = (READ_RUN_BYTES >> sb.block_bits).max(1);
        let mut headers = HashMap::new();
        let mut buf = Vec::new();
        // Every block in [s_first, s_maxlen) is mapped (checked), so the runs in logical order
        // reach them all.
        let mut next = jsb.first;
        for run in self.map.runs().to_vec() {
            while next < jsb.maxlen && next >= run.logical && next < run.logical + run.len {
                let start = next;
                next = (run.logical + run.len).min(jsb.maxlen).min(start + max_run);
                buf.resize(block_size * usize::try_from(next - start).unwrap_or(0), 0);
                let offset = (run.physical + (start - run.logical)) << sb.block_bits;
                read_at(volume, || format!("journal blocks {start}..{next}"), offset, &mut buf)?;
                for (block, data) in (start..next).zip(buf.chunks_exact(block_size)) {
                    self.scan_block(block, data, sb, jsb, &mut headers);
                }
            }
        }
        if next < jsb.maxlen {
            // Only overlapping runs out of order can leave blocks unread.
            return Err(Error::unsupported(
                "journal inode",
                crate::superblock::SUPERBLOCK_OFFSET,
                format!("its block map overlaps itself around journal block {next}"),
            ));
        }
        Ok(headers)
    }

    /// One journal block of the scan.
    fn scan_block(
        &mut self,
        block: u64,
        data: &[u8],
        sb: &Superblock,
        jsb: &JournalSuperblock,
        headers: &mut HashMap<u64, Header>,
    ) {
        if block >= jsb.last {
            fast_commit::add_ranges(data, sb.blocks_count, &mut self.fast_commit_blocks);
        } else if be32(data, 0) == JBD2_MAGIC {
            let (blocktype, sequence) = (be32(data, 4), be32(data, 8));
            let mut tags = 0;
            if blocktype == DESCRIPTOR_BLOCK {
                for (i, (home, flags)) in jsb.descriptor_tags(data).into_iter().enumerate() {
                    let log_block = jsb.advance(block, 1 + i as u64);
                    self.tags.push(Tag { home, log_block, escaped: flags & FLAG_ESCAPE != 0 });
                    tags += 1;
                }
            }
            headers.insert(block, (blocktype, sequence, tags));
        }
    }

    /// The filesystem blocks holding the journal.
    pub(crate) fn physical_blocks(&self) -> Vec<Range<u64>> {
        self.map.runs().iter().map(|run| run.physical..run.physical + run.len).collect()
    }

    /// The logged copy of `tag.home`, with the magic number put back if it was escaped.
    pub(crate) fn copy(&self, volume: &dyn ReadAt, tag: &Tag) -> Result<Vec<u8>, Error> {
        let mut block = vec![0; 1usize << self.block_bits];
        // Log blocks are below s_maxlen, all of which are mapped (checked when read).
        let offset = self.map.physical(tag.log_block).unwrap_or(0) << self.block_bits;
        read_at(
            volume,
            || format!("journal block {} (a copy of block {})", tag.log_block, tag.home),
            offset,
            &mut block,
        )?;
        if tag.escaped {
            if let Some(head) = block.get_mut(..4) {
                head.copy_from_slice(&JBD2_MAGIC.to_be_bytes());
            }
        }
        Ok(block)
    }
}

/// The transactions recovery would replay: from `s_start`, follow the blocks whose sequence
/// is the one expected (descriptors skip their data blocks, revoke blocks are passed over,
/// each commit ends one transaction), until a block does not fit.
fn count_transactions(jsb: &JournalSuperblock, headers: &HashMap<u64, Header>) -> u64 {
    if jsb.start == 0 {
        return 0;
    }
    let (mut next, mut expected, mut transactions) = (jsb.start, jsb.sequence, 0u64);
    // Each step moves at least one block; a log walked twice around would repeat itself.
    for _ in 0..2 * (jsb.last - jsb.first) {
        match headers.get(&next) {
            Some(&(DESCRIPTOR_BLOCK, sequence, tags)) if sequence == expected => {
                next = jsb.advance(next, 1 + tags);
            }
            Some(&(REVOKE_BLOCK, sequence, _)) if sequence == expected => next = jsb.advance(next, 1),
            Some(&(COMMIT_BLOCK, sequence, _)) if sequence == expected => {
                transactions += 1;
                expected = expected.wrapping_add(1);
                next = jsb.advance(next, 1);
            }
            _ => break,
        }
    }
    transactions
}
