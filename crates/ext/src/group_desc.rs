//! Group descriptors: where each group's block bitmap, inode bitmap and inode table are, how
//! many clusters the group has free, and its flags, with the descriptor checksum.
//!
//! Layout: e2fsprogs lib/ext2fs/ext2_fs.h (`struct ext4_group_desc`; the `_hi` halves exist
//! only with 64bit, whose descriptors are at least 64 bytes). Checks: openfs.c (where the
//! table is), check_desc.c (`ext2fs_check_desc`: metadata inside the filesystem, and inside
//! its own group without flex_bg), csum.c (`ext2fs_group_desc_csum`).

use crate::Error;
use crate::checksum::{crc16, crc32c_raw};
use crate::features::{incompat, ro_compat};
use crate::superblock::Superblock;
use imgstream_blockio::ReadAt;
use imgstream_volume::fields::{le16, le32};
use imgstream_volume::read_at;
use std::ops::RangeInclusive;

// Field offsets within a descriptor.
pub(crate) const BG_BLOCK_BITMAP_LO: usize = 0x00;
pub(crate) const BG_INODE_BITMAP_LO: usize = 0x04;
pub(crate) const BG_INODE_TABLE_LO: usize = 0x08;
pub(crate) const BG_FREE_BLOCKS_COUNT_LO: usize = 0x0C;
pub(crate) const BG_FLAGS: usize = 0x12;
pub(crate) const BG_BLOCK_BITMAP_CSUM_LO: usize = 0x18;
pub(crate) const BG_CHECKSUM: usize = 0x1E;
pub(crate) const BG_BLOCK_BITMAP_HI: usize = 0x20;
pub(crate) const BG_INODE_BITMAP_HI: usize = 0x24;
pub(crate) const BG_INODE_TABLE_HI: usize = 0x28;
pub(crate) const BG_FREE_BLOCKS_COUNT_HI: usize = 0x2C;
pub(crate) const BG_BLOCK_BITMAP_CSUM_HI: usize = 0x38;
/// The block bitmap checksum's high half exists if descriptors reach past it
/// (EXT4_BG_BLOCK_BITMAP_CSUM_HI_END).
const BLOCK_BITMAP_CSUM_HI_END: u64 = 0x3A;

/// `bg_flags`: the inode bitmap and table were never initialised; no inode is in use.
pub(crate) const INODE_UNINIT: u16 = 0x1;
/// `bg_flags`: the block bitmap was never initialised; it must be computed from the layout.
pub(crate) const BLOCK_UNINIT: u16 = 0x2;

/// One validated group descriptor.
#[derive(Clone, Debug)]
pub(crate) struct GroupDesc {
    /// Absolute byte offset of this descriptor, for messages.
    pub(crate) offset: u64,
    pub(crate) block_bitmap: u64,
    pub(crate) inode_bitmap: u64,
    pub(crate) inode_table: u64,
    /// `bg_free_blocks_count`: free clusters in the group.
    pub(crate) free_clusters: u64,
    pub(crate) flags: u16,
    /// `bg_block_bitmap_csum`: the low 16 bits, and the high 16 if the descriptor holds them.
    pub(crate) block_bitmap_csum: (u16, Option<u16>),
}

/// Reads the primary descriptor table one block at a time, in group order.
pub(crate) struct DescriptorTable<'a> {
    volume: &'a dyn ReadAt,
    sb: &'a Superblock,
    /// The descriptor block in `block`, by index in the table.
    cached: Option<u64>,
    block: Vec<u8>,
}

impl<'a> DescriptorTable<'a> {
    pub(crate) fn new(volume: &'a dyn ReadAt, sb: &'a Superblock) -> Self {
        // The block size is validated (at most 64 KiB).
        let block = vec![0; usize::try_from(sb.block_size()).unwrap_or(0)];
        Self { volume, sb, cached: None, block }
    }

    /// The block holding descriptor block `index`, checked to lie inside the filesystem.
    pub(crate) fn block_location(&self, index: u64) -> Result<u64, Error> {
        let block = self.sb.desc_block_location(index);
        if block >= self.sb.blocks_count {
            // Only meta_bg places descriptor blocks by group; the table itself is at its start.
            return Err(Error::corrupt(
                "superblock",
                crate::superblock::SUPERBLOCK_OFFSET,
                format!(
                    "descriptor block {index} would lie at block {block}, past the last block {}",
                    self.sb.blocks_count - 1
                ),
            ));
        }
        Ok(block)
    }

    /// The descriptor of `group` (< groups), validated and checksum-verified.
    pub(crate) fn get(&mut self, group: u64) -> Result<GroupDesc, Error> {
        let sb = self.sb;
        let per_block = sb.descs_per_block();
        let index = group / per_block;
        let block_offset = self.block_location(index)? << sb.block_bits;
        if self.cached != Some(index) {
            read_at(self.volume, || format!("group descriptor block {index}"), block_offset, &mut self.block)?;
            self.cached = Some(index);
        }
        let within = (group % per_block) * sb.desc_size;
        let offset = block_offset + within;
        let desc = usize::try_from(within)
            .ok()
            .and_then(|start| self.block.get(start..start + usize::try_from(sb.desc_size).ok()?))
            .ok_or_else(|| {
                Error::corrupt(format!("group descriptor {group}"), offset, "lies outside its descriptor block")
            })?;
        let parsed = parse(sb, desc, offset);
        verify_checksum(sb, group, desc, offset)?;
        validate(sb, group, &parsed)?;
        Ok(parsed)
    }
}

/// Decodes one descriptor (`desc`, desc_size bytes, at byte `offset`), without checks.
pub(crate) fn parse(sb: &Superblock, desc: &[u8], offset: u64) -> GroupDesc {
    let bit64 = sb.has_incompat(incompat::BIT64);
    let wide =
        |lo: usize, hi: usize| u64::from(le32(desc, lo)) | if bit64 { u64::from(le32(desc, hi)) << 32 } else { 0 };
    let free_hi = if bit64 { u64::from(le16(desc, BG_FREE_BLOCKS_COUNT_HI)) << 16 } else { 0 };
    GroupDesc {
        offset,
        block_bitmap: wide(BG_BLOCK_BITMAP_LO, BG_BLOCK_BITMAP_HI),
        inode_bitmap: wide(BG_INODE_BITMAP_LO, BG_INODE_BITMAP_HI),
        inode_table: wide(BG_INODE_TABLE_LO, BG_INODE_TABLE_HI),
        free_clusters: u64::from(le16(desc, BG_FREE_BLOCKS_COUNT_LO)) | free_hi,
        flags: le16(desc, BG_FLAGS),
        block_bitmap_csum: (
            le16(desc, BG_BLOCK_BITMAP_CSUM_LO),
            (sb.desc_size >= BLOCK_BITMAP_CSUM_HI_END).then(|| le16(desc, BG_BLOCK_BITMAP_CSUM_HI)),
        ),
    }
}

/// `ext2fs_group_desc_csum`: crc32c with metadata_csum, else crc16 with uninit_bg; `None`
/// without descriptor checksums. The checksum field itself is left out (metadata_csum: counted
/// as zero).
pub(crate) fn desc_checksum(sb: &Superblock, group: u64, desc: &[u8]) -> Option<u16> {
    // group < 2^32: groups x inodes per group (>= 1) equals the 32-bit s_inodes_count.
    let group_le = u32::try_from(group).unwrap_or(u32::MAX).to_le_bytes();
    let head = desc.get(..BG_CHECKSUM).unwrap_or(&[]);
    let tail = desc.get(BG_CHECKSUM + 2..).unwrap_or(&[]);
    if sb.has_ro_compat(ro_compat::METADATA_CSUM) {
        // The low 16 bits of the crc32c.
        Some((crc32c_raw(sb.csum_seed, &[&group_le, head, &[0, 0], tail]) & 0xFFFF) as u16)
    } else if sb.has_ro_compat(ro_compat::GDT_CSUM) {
        Some(crc16(&[&sb.uuid, &group_le, head, tail]))
    } else {
        None
    }
}

/// Fails unless descriptor `desc` of `group` (raw, at byte `offset`) has its own checksum right.
pub(crate) fn verify_checksum(sb: &Superblock, group: u64, desc: &[u8], offset: u64) -> Result<(), Error> {
    let Some(computed) = desc_checksum(sb, group, desc) else {
        return Ok(());
    };
    let stored = le16(desc, BG_CHECKSUM);
    if stored != computed {
        return Err(Error::corrupt(
            format!("group descriptor {group}"),
            offset + BG_CHECKSUM as u64,
            format!("checksum 0x{stored:04x} does not match the contents (computed 0x{computed:04x})"),
        ));
    }
    Ok(())
}

/// `ext2fs_check_desc`: bitmaps and inode table inside the filesystem, and inside the group
/// itself unless flex_bg lets them live anywhere.
fn validate(sb: &Superblock, group: u64, desc: &GroupDesc) -> Result<(), Error> {
    let allowed: RangeInclusive<u64> = if sb.has_incompat(incompat::FLEX_BG) {
        sb.first_data_block..=sb.blocks_count - 1
    } else {
        let first = sb.group_first_block(group);
        first..=(first + sb.blocks_per_group - 1).min(sb.blocks_count - 1)
    };
    let where_ = if sb.has_incompat(incompat::FLEX_BG) { "the filesystem" } else { "its group" };
    let check = |what: &str, field: usize, first: u64, count: u64| {
        let last = first.checked_add(count - 1);
        if allowed.contains(&first) && last.is_some_and(|last| allowed.contains(&last)) {
            return Ok(());
        }
        let blocks = if count == 1 { format!("block {first}") } else { format!("blocks {first}..+{count}") };
        Err(Error::corrupt(
            format!("group descriptor {group}"),
            desc.offset + field as u64,
            format!("{what} at {blocks} lies outside {where_} (blocks {}..={})", allowed.start(), allowed.end()),
        ))
    };
    check("block bitmap", BG_BLOCK_BITMAP_LO, desc.block_bitmap, 1)?;
    check("inode bitmap", BG_INODE_BITMAP_LO, desc.inode_bitmap, 1)?;
    check("inode table", BG_INODE_TABLE_LO, desc.inode_table, sb.inode_table_blocks())
}
