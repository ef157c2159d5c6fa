//! The AG free-space header (AGF, sector 1 of every allocation group): where the AG's
//! by-block-number free-space B+tree starts, how deep it is, and how many blocks it holds.
//!
//! Offsets and rules: libxfs/xfs_format.h (`struct xfs_agf`) and xfs_alloc.c (`xfs_agf_verify`).
//! The free list (AGFL) ring's first, last and count are bounded here; [`crate::agfl`] reads it.

use crate::agfl;
use crate::superblock::Superblock;
use crate::{Error, checksum};
use imgstream_blockio::ReadAt;
use imgstream_volume::fields::be32;
use imgstream_volume::read_at;

/// "XAGF".
const XFS_AGF_MAGIC: u32 = 0x5841_4746;
const XFS_AGF_VERSION: u32 = 1;
/// Deepest B+tree the kernel ever builds (`XFS_BTREE_MAXLEVELS` before it became per-tree).
pub(crate) const MAX_LEVELS: u32 = 9;

pub(crate) const AGF_MAGICNUM: usize = 0;
pub(crate) const AGF_VERSIONNUM: usize = 4;
pub(crate) const AGF_SEQNO: usize = 8;
pub(crate) const AGF_LENGTH: usize = 12;
pub(crate) const AGF_BNO_ROOT: usize = 16;
pub(crate) const AGF_BNO_LEVEL: usize = 28;
pub(crate) const AGF_FLFIRST: usize = 40;
pub(crate) const AGF_FLLAST: usize = 44;
pub(crate) const AGF_FLCOUNT: usize = 48;
pub(crate) const AGF_FREEBLKS: usize = 52;
pub(crate) const AGF_UUID: usize = 64;
pub(crate) const AGF_CRC: usize = 216;

/// One AG's AGF, validated.
#[derive(Clone, Debug)]
pub(crate) struct Agf {
    /// Absolute byte offset of the AGF.
    pub(crate) offset: u64,
    pub(crate) bno_root: u32,
    pub(crate) bno_levels: u32,
    /// Free blocks the B+trees hold (`agf_freeblks`; AGFL blocks are not counted).
    pub(crate) free_blocks: u32,
    /// The free list ring: first slot, last slot and number of blocks.
    pub(crate) fl_first: u32,
    pub(crate) fl_last: u32,
    pub(crate) fl_count: u32,
}

/// Reads and validates the AGF of AG `agno`.
pub(crate) fn read(volume: &dyn ReadAt, sb: &Superblock, agno: u32) -> Result<Agf, Error> {
    let offset = sb.byte_of(agno, 0) + u64::from(sb.sector_size);
    let structure = || format!("AGF of AG {agno}");
    let mut raw = vec![0u8; sb.sector_size as usize];
    read_at(volume, structure, offset, &mut raw)?;
    let corrupt = |field: usize, problem: String| Error::corrupt(structure(), offset + field as u64, problem);

    let magic = be32(&raw, AGF_MAGICNUM);
    if magic != XFS_AGF_MAGIC {
        return Err(corrupt(
            AGF_MAGICNUM,
            format!("bad magic 0x{magic:08x} (expected 0x{XFS_AGF_MAGIC:08x}, \"XAGF\")"),
        ));
    }
    if sb.v5 {
        checksum::verify_header(&raw, AGF_CRC, AGF_UUID, sb.metadata_uuid)
            .map_err(|(field, problem)| corrupt(field, problem))?;
    }
    let version = be32(&raw, AGF_VERSIONNUM);
    if version != XFS_AGF_VERSION {
        return Err(corrupt(AGF_VERSIONNUM, format!("version {version} (expected {XFS_AGF_VERSION})")));
    }
    let seqno = be32(&raw, AGF_SEQNO);
    if seqno != agno {
        return Err(corrupt(AGF_SEQNO, format!("sequence number {seqno} (expected the AG number, {agno})")));
    }
    let length = be32(&raw, AGF_LENGTH);
    let expected = sb.ag_length(agno);
    if length != expected {
        return Err(corrupt(AGF_LENGTH, format!("length {length} blocks (the superblock makes it {expected})")));
    }
    let bno_root = be32(&raw, AGF_BNO_ROOT);
    if bno_root < sb.first_free_agbno() || bno_root >= length {
        return Err(corrupt(
            AGF_BNO_ROOT,
            format!(
                "free-space B+tree root at block {bno_root}, outside the AG (blocks {}..{length})",
                sb.first_free_agbno()
            ),
        ));
    }
    let bno_levels = be32(&raw, AGF_BNO_LEVEL);
    if !(1..=MAX_LEVELS).contains(&bno_levels) {
        return Err(corrupt(
            AGF_BNO_LEVEL,
            format!("free-space B+tree of {bno_levels} levels (expected 1 to {MAX_LEVELS})"),
        ));
    }
    let agfl_slots = agfl::slots(sb);
    for (field, name) in [(AGF_FLFIRST, "first"), (AGF_FLLAST, "last"), (AGF_FLCOUNT, "count")] {
        let value = be32(&raw, field);
        let limit = if field == AGF_FLCOUNT { agfl_slots + 1 } else { agfl_slots };
        if value >= limit {
            return Err(corrupt(field, format!("free list {name} {value} does not fit an AGFL of {agfl_slots} slots")));
        }
    }
    let free_blocks = be32(&raw, AGF_FREEBLKS);
    if free_blocks > length {
        return Err(corrupt(AGF_FREEBLKS, format!("{free_blocks} free blocks in an AG of {length}")));
    }
    let (fl_first, fl_last, fl_count) = (be32(&raw, AGF_FLFIRST), be32(&raw, AGF_FLLAST), be32(&raw, AGF_FLCOUNT));
    Ok(Agf { offset, bno_root, bno_levels, free_blocks, fl_first, fl_last, fl_count })
}
