//! Block bitmaps: one block per group, bit i (LSB first) set when cluster i of the group is in
//! use, with a metadata_csum checksum in the group descriptor; and the bitmap of a
//! BLOCK_UNINIT group, which is never read but computed from the layout.
//!
//! Rules: e2fsprogs lib/ext2fs/rw_bitmaps.c (`read_bitmaps_range_start`: only the first
//! clusters_per_group / 8 bytes count, and an uninit group's bitmap is not read when its
//! descriptor checksum verifies), csum.c (`ext2fs_block_bitmap_csum_verify`), alloc_sb.c
//! (`ext2fs_reserve_super_and_bgd`) and closefs.c (`ext2fs_super_and_bgd_loc2`), which the
//! kernel mirrors in `ext4_init_block_bitmap` / `ext4_num_base_meta_clusters`.

use crate::Error;
use crate::checksum::crc32c_raw;
use crate::features::{incompat, ro_compat};
use crate::group_desc::GroupDesc;
use crate::superblock::Superblock;
use imgstream_blockio::ReadAt;
use imgstream_volume::{RangeSet, read_at};
use std::ops::Range;

/// Reads the block bitmap of `group` (clusters_per_group / 8 bytes) and verifies its checksum.
pub(crate) fn read_bitmap(
    volume: &dyn ReadAt,
    sb: &Superblock,
    group: u64,
    desc: &GroupDesc,
) -> Result<Vec<u8>, Error> {
    let (bitmap, verified) = read_bitmap_unverified(volume, sb, group, desc)?;
    verified.map(|()| bitmap)
}

/// Reads the block bitmap of `group`; the second value says whether its checksum matches the
/// one in the descriptor (always, without metadata_csum).
pub(crate) fn read_bitmap_unverified(
    volume: &dyn ReadAt,
    sb: &Superblock,
    group: u64,
    desc: &GroupDesc,
) -> Result<(Vec<u8>, Result<(), Error>), Error> {
    // clusters_per_group is validated: at most 8 * 64 KiB bits, a multiple of 8.
    let mut bitmap = vec![0; usize::try_from(sb.clusters_per_group / 8).unwrap_or(0)];
    let offset = desc.block_bitmap << sb.block_bits;
    read_at(volume, || format!("block bitmap of group {group}"), offset, &mut bitmap)?;
    let verified = if sb.has_ro_compat(ro_compat::METADATA_CSUM) {
        verify_checksum(sb, group, desc, &bitmap, offset)
    } else {
        Ok(())
    };
    Ok((bitmap, verified))
}

fn verify_checksum(sb: &Superblock, group: u64, desc: &GroupDesc, bitmap: &[u8], offset: u64) -> Result<(), Error> {
    if checksum_matches(sb, desc, bitmap) {
        return Ok(());
    }
    let computed = crc32c_raw(sb.csum_seed, &[bitmap]);
    let (lo, hi) = desc.block_bitmap_csum;
    let stored = hi.map_or(u32::from(lo), |hi| u32::from(hi) << 16 | u32::from(lo));
    Err(Error::corrupt(
        format!("block bitmap of group {group}"),
        offset,
        format!(
            "checksum 0x{computed:08x} does not match 0x{stored:08x} in group descriptor {group} at byte {}",
            desc.offset
        ),
    ))
}

/// Whether `bitmap` has the checksum that `desc` records for it (metadata_csum).
pub(crate) fn checksum_matches(sb: &Superblock, desc: &GroupDesc, bitmap: &[u8]) -> bool {
    let computed = crc32c_raw(sb.csum_seed, &[bitmap]);
    let (lo, hi) = desc.block_bitmap_csum;
    match hi {
        Some(hi) => computed == u32::from(hi) << 16 | u32::from(lo),
        None => computed & 0xFFFF == u32::from(lo),
    }
}

/// Number of clear bits among the first `bits` of an LSB-first bitmap.
pub(crate) fn count_free(bitmap: &[u8], bits: u64) -> u64 {
    let whole = usize::try_from(bits / 8).unwrap_or(usize::MAX).min(bitmap.len());
    let mut free: u64 = bitmap.get(..whole).unwrap_or(&[]).iter().map(|b| u64::from(b.count_zeros())).sum();
    if let Some(&last) = bitmap.get(whole) {
        let rest = bits % 8;
        let mask = (1u16 << rest) - 1;
        free += u64::from((!u16::from(last) & mask).count_ones());
    }
    free
}

/// The clusters a BLOCK_UNINIT group uses, as e2fsprogs and the kernel compute them: its
/// backup superblock and descriptor blocks (`ext2fs_reserve_super_and_bgd`) and its own bitmaps
/// and inode table where they lie inside the group. In cluster numbers, clipped to the group.
pub(crate) fn uninit_used_clusters(sb: &Superblock, group: u64, desc: &GroupDesc) -> RangeSet {
    let group_start = sb.group_first_block(group);
    let group_blocks = group_start..(group_start + sb.blocks_per_group).min(sb.blocks_count);
    let mut blocks: Vec<Range<u64>> = Vec::new();
    let mut mark = |range: Range<u64>| blocks.push(range);

    // With 1 KiB blocks and bigalloc the superblock is in block 1, not the group's block 0.
    let mut group_block = group_start;
    if group_block == 0 && sb.block_size() == 1024 {
        group_block = 1;
    }
    let meta_bg = sb.has_incompat(incompat::META_BG);
    let old_desc_blocks = if meta_bg { sb.first_meta_bg } else { sb.desc_blocks() + sb.reserved_gdt_blocks };
    let has_super = sb.has_super(group);
    if has_super {
        mark(group_block..group_block + 1);
    }
    if group == 0 && sb.block_size() == 1024 && sb.cluster_bits > 0 {
        mark(0..1);
    }
    let per_block = sb.descs_per_block();
    if !meta_bg || group / per_block < sb.first_meta_bg {
        if has_super {
            let start = group_block + 1;
            mark(start..start.saturating_add(old_desc_blocks).min(sb.blocks_count));
        }
    } else {
        let position = group % per_block;
        if position == 0 || position == 1 || position == per_block - 1 {
            let block = group_block + u64::from(has_super);
            mark(block..block + 1);
        }
    }
    mark(desc.block_bitmap..desc.block_bitmap + 1);
    mark(desc.inode_bitmap..desc.inode_bitmap + 1);
    mark(desc.inode_table..desc.inode_table + sb.inode_table_blocks());

    let mut clusters = RangeSet::new();
    let to_clusters = |r: &Range<u64>| (r.start >> sb.cluster_bits)..((r.end - 1) >> sb.cluster_bits) + 1;
    let group_clusters = to_clusters(&group_blocks);
    blocks.sort_by_key(|r| r.start);
    for range in blocks.iter().filter(|r| r.start < r.end) {
        let range = to_clusters(range);
        clusters.insert(range.start.max(group_clusters.start)..range.end.min(group_clusters.end));
    }
    clusters
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn count_free_ignores_bits_past_the_count() {
        // 0b1111_0000 then 0xFF: 4 free among the first 12 bits; padding bits never count.
        assert_eq!(count_free(&[0xF0, 0xFF], 12), 4);
        assert_eq!(count_free(&[0x00, 0x00], 12), 12);
        assert_eq!(count_free(&[0x00, 0xF0], 12), 12);
        assert_eq!(count_free(&[0x00], 0), 0);
    }

    #[test]
    fn count_free_agrees_with_a_bit_by_bit_count() {
        // Property over pseudo-random bitmaps and every bit count.
        let mut state = 0x9E37_79B9_7F4A_7C15u64;
        for _ in 0..200 {
            let bytes: Vec<u8> = (0..9)
                .map(|_| {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    state.to_le_bytes()[0]
                })
                .collect();
            for bits in 0..=72 {
                let slow = (0..bits)
                    .filter(|&i| bytes.get((i / 8) as usize).is_some_and(|b| b >> (i % 8) & 1 == 0))
                    .count() as u64;
                assert_eq!(count_free(&bytes, bits), slow, "{bytes:?} {bits}");
            }
        }
    }
}
