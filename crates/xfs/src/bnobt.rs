//! The by-block-number free-space B+tree of one AG (bnobt): its leaf records are the AG's free
//! extents, in ascending order.
//!
//! Short-form B+tree blocks (libxfs/xfs_format.h `struct xfs_btree_block`, xfs_alloc_btree.h):
//! a 16-byte header on v4 (magic "ABTB", level, record count, left and right siblings), 56 bytes
//! on v5 (magic "AB3B", plus the block's own disk address, LSN, UUID, owning AG and a CRC).
//! Leaves hold `(startblock, blockcount)` pairs; interior nodes hold as many keys as fit
//! (`maxrecs`), then the child pointers, AG-relative block numbers, starting right after the
//! last possible key (`XFS_ALLOC_PTR_ADDR`), whatever the node's record count.
//!
//! The walk goes level by level from the root, each node's children in key order, so leaves
//! come left to right. Every pointer must lie in the AG past its headers, and every block is
//! visited at most once (a loop or a shared child is corruption); the depth is the AGF's, at
//! most [`MAX_LEVELS`](crate::agf::MAX_LEVELS). Records must be non-empty, inside the AG and
//! ascending without overlap.

use crate::agf::Agf;
use crate::superblock::Superblock;
use crate::{Error, checksum};
use imgstream_blockio::ReadAt;
use imgstream_volume::fields::{array, be16, be32, be64};
use imgstream_volume::read_at;
use std::collections::HashSet;
use std::ops::Range;

const ABTB_MAGIC: u32 = 0x4142_5442;
const AB3B_MAGIC: u32 = 0x4142_3342;
const V4_HEADER: usize = 16;
const V5_HEADER: usize = 56;

pub(crate) const BB_LEVEL: usize = 4;
pub(crate) const BB_NUMRECS: usize = 6;
pub(crate) const BB_BLKNO: usize = 16;
pub(crate) const BB_UUID: usize = 32;
pub(crate) const BB_OWNER: usize = 48;
pub(crate) const BB_CRC: usize = 52;
/// Leaf records and interior keys are two u32; pointers one.
const RECORD: usize = 8;
const POINTER: usize = 4;

/// The free extents of AG `agno`, in AG blocks, ascending; their total is checked against the AGF.
pub(crate) fn free_extents(
    volume: &dyn ReadAt,
    sb: &Superblock,
    agno: u32,
    agf: &Agf,
) -> Result<Vec<Range<u32>>, Error> {
    let ag_length = sb.ag_length(agno);
    let first_valid = sb.first_free_agbno();
    let block_size = sb.block_size as usize;
    let header = if sb.v5 { V5_HEADER } else { V4_HEADER };
    let max_leaf = (block_size - header) / RECORD;
    let max_node = (block_size - header) / (RECORD + POINTER);

    let mut extents: Vec<Range<u32>> = Vec::new();
    let mut visited = HashSet::new();
    visited.insert(agf.bno_root);
    let mut this_level = vec![agf.bno_root];
    let mut raw = vec![0u8; block_size];
    for level in (0..agf.bno_levels).rev() {
        let mut next_level = Vec::new();
        for &agbno in &this_level {
            let offset = sb.byte_of(agno, agbno);
            let structure = || format!("free-space B+tree block {agbno} of AG {agno}");
            read_at(volume, structure, offset, &mut raw)?;
            let corrupt = |field: usize, problem: String| Error::corrupt(structure(), offset + field as u64, problem);

            check_header(sb, agno, offset, &raw).map_err(|(field, problem)| corrupt(field, problem))?;
            let block_level = u32::from(be16(&raw, BB_LEVEL));
            if block_level != level {
                return Err(corrupt(BB_LEVEL, format!("level {block_level}, but its parent makes it {level}")));
            }
            let numrecs = usize::from(be16(&raw, BB_NUMRECS));
            let max = if level == 0 { max_leaf } else { max_node };
            // Only a root leaf may be empty (an AG with no free space).
            let min = usize::from(agbno != agf.bno_root || level > 0);
            if numrecs < min || numrecs > max {
                return Err(corrupt(BB_NUMRECS, format!("{numrecs} records (expected {min} to {max})")));
            }
            if level == 0 {
                for index in 0..numrecs {
                    let field = header + index * RECORD;
                    let (start, count) = (be32(&raw, field), be32(&raw, field + 4));
                    let previous_end = extents.last().map_or(first_valid, |e| e.end);
                    let end = start.checked_add(count).filter(|&end| count > 0 && end <= ag_length);
                    match end {
                        Some(end) if start >= previous_end => extents.push(start..end),
                        _ => {
                            return Err(corrupt(
                                field,
                                format!(
                                    "free extent {index} (blocks {start}+{count}) is empty, past the AG's {ag_length} blocks or not after the previous one (which ends at {previous_end})"
                                ),
                            ));
                        }
                    }
                }
            } else {
                let pointers = header + max_node * RECORD;
                for index in 0..numrecs {
                    let field = pointers + index * POINTER;
                    let child = be32(&raw, field);
                    if child < first_valid || child >= ag_length {
                        return Err(corrupt(
                            field,
                            format!(
                                "pointer {index} to block {child}, outside the AG (blocks {first_valid}..{ag_length})"
                            ),
                        ));
                    }
                    if !visited.insert(child) {
                        return Err(corrupt(
                            field,
                            format!("pointer {index} to block {child}, which the tree already reached (a loop)"),
                        ));
                    }
                    next_level.push(child);
                }
            }
        }
        this_level = next_level;
    }

    let total: u64 = extents.iter().map(|e| u64::from(e.end - e.start)).sum();
    if total != u64::from(agf.free_blocks) {
        return Err(Error::corrupt(
            format!("AGF of AG {agno}"),
            agf.offset + crate::agf::AGF_FREEBLKS as u64,
            format!(
                "{} free blocks, but the free-space B+tree holds {total} in {} extents",
                agf.free_blocks,
                extents.len()
            ),
        ));
    }
    Ok(extents)
}

/// The checks every block's header must pass: its magic and, on v5, checksum, self address,
/// UUID and owner. `Err` names the field's offset in the block and the problem.
fn check_header(sb: &Superblock, agno: u32, offset: u64, raw: &[u8]) -> Result<(), (usize, String)> {
    let expected_magic = if sb.v5 { AB3B_MAGIC } else { ABTB_MAGIC };
    let magic = be32(raw, 0);
    if magic != expected_magic {
        return Err((0, format!("bad magic 0x{magic:08x} (expected 0x{expected_magic:08x})")));
    }
    if !sb.v5 {
        return Ok(());
    }
    if let Err((stored, computed)) = checksum::verify(raw, BB_CRC) {
        return Err((BB_CRC, format!("checksum 0x{stored:08x}, computed 0x{computed:08x}")));
    }
    // The block's own address, in 512-byte units from the start of the data device.
    let blkno = be64(raw, BB_BLKNO);
    if blkno != offset / 512 {
        return Err((BB_BLKNO, format!("says it is at sector {blkno}, but it is at sector {}", offset / 512)));
    }
    if array::<16>(raw, BB_UUID) != sb.metadata_uuid {
        return Err((BB_UUID, "UUID differs from the superblock's".into()));
    }
    let owner = be32(raw, BB_OWNER);
    if owner != agno {
        return Err((BB_OWNER, format!("owned by AG {owner}, but it is in AG {agno}")));
    }
    Ok(())
}
