//! The AG free list (AGFL, sector 3 of every allocation group): a ring of block numbers the
//! AG keeps in reserve for B+tree splits. Those blocks are free (not referenced by anything)
//! but not in the free-space B+tree; xfs_db `freesp -d` and partclone.xfs count them as free.
//!
//! Layout: libxfs/xfs_format.h (`struct xfs_agfl`: v5 has a 36-byte header of magic, seqno,
//! uuid, lsn and crc; v4 has none) and xfs_alloc.c (`xfs_agfl_verify`, `xfs_agfl_needs_reset`).

use crate::agf::Agf;
use crate::superblock::Superblock;
use crate::{Error, checksum};
use imgstream_blockio::ReadAt;
use imgstream_volume::fields::be32;
use imgstream_volume::read_at;

/// "XAFL".
const XFS_AGFL_MAGIC: u32 = 0x5841_464c;
const AGFL_MAGICNUM: usize = 0;
const AGFL_SEQNO: usize = 4;
const AGFL_UUID: usize = 8;
const AGFL_CRC: usize = 32;
/// Bytes of the v5 AGFL header (magic, seqno, uuid, lsn, crc); v4 has none.
pub(crate) const AGFL_V5_HEADER: u32 = 36;

/// Slots in the AGFL ring of a volume.
pub(crate) fn slots(sb: &Superblock) -> u32 {
    (sb.sector_size - if sb.v5 { AGFL_V5_HEADER } else { 0 }) / 4
}

/// The blocks (AG-relative) on AG `agno`'s free list, or `None` when the AGF's first, last
/// and count disagree about the ring's size: v5 filesystems written by kernels before 4.5 on
/// 64-bit machines sized the header as 40 bytes and wrapped one slot early, so which slots
/// are live is unknown and the blocks are kept.
pub(crate) fn blocks(volume: &dyn ReadAt, sb: &Superblock, agno: u32, agf: &Agf) -> Result<Option<Vec<u32>>, Error> {
    let slot_count = slots(sb);
    if agf.fl_count == 0 {
        return Ok(Some(Vec::new()));
    }
    if (agf.fl_first + agf.fl_count - 1) % slot_count != agf.fl_last {
        return Ok(None);
    }
    let offset = sb.byte_of(agno, 0) + 3 * u64::from(sb.sector_size);
    let structure = || format!("AGFL of AG {agno}");
    let mut raw = vec![0u8; sb.sector_size as usize];
    read_at(volume, structure, offset, &mut raw)?;
    let corrupt = |field: usize, problem: String| Error::corrupt(structure(), offset + field as u64, problem);

    let header = if sb.v5 {
        let magic = be32(&raw, AGFL_MAGICNUM);
        if magic != XFS_AGFL_MAGIC {
            return Err(corrupt(
                AGFL_MAGICNUM,
                format!("bad magic 0x{magic:08x} (expected 0x{XFS_AGFL_MAGIC:08x}, \"XAFL\")"),
            ));
        }
        checksum::verify_header(&raw, AGFL_CRC, AGFL_UUID, sb.metadata_uuid)
            .map_err(|(field, problem)| corrupt(field, problem))?;
        let seqno = be32(&raw, AGFL_SEQNO);
        if seqno != agno {
            return Err(corrupt(AGFL_SEQNO, format!("sequence number {seqno} (expected the AG number, {agno})")));
        }
        AGFL_V5_HEADER as usize
    } else {
        0
    };
    let (first_free, length) = (sb.first_free_agbno(), sb.ag_length(agno));
    (0..agf.fl_count)
        .map(|i| {
            let slot = header + 4 * ((agf.fl_first + i) % slot_count) as usize;
            let agbno = be32(&raw, slot);
            if agbno < first_free || agbno >= length {
                return Err(corrupt(
                    slot,
                    format!("free list block {agbno} is outside the AG (blocks {first_free}..{length})"),
                ));
            }
            Ok(agbno)
        })
        .collect::<Result<Vec<_>, _>>()
        .map(Some)
}
