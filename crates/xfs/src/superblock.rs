//! The primary superblock (sector 0 of AG 0) and the geometry derived from it: block and sector
//! size, allocation groups, the internal log's place, and the feature words that decide whether
//! this crate understands the volume.
//!
//! Offsets and rules: libxfs/xfs_format.h (`struct xfs_dsb`, `XFS_SB_VERSION_*`,
//! `XFS_SB_FEAT_*`) and xfs_sb.c (`xfs_validate_sb_common`, `xfs_sb_good_v4_features`). All
//! fields are big-endian; the v5 checksum covers the whole sector.

use crate::Error;
use crate::checksum;
use imgstream_volume::fields::{array, be16, be32, be64, u8_at};
use std::ops::RangeInclusive;

/// "XFSB".
pub(crate) const XFS_SB_MAGIC: u32 = 0x5846_5342;

// Field offsets within the superblock.
pub(crate) const SB_BLOCKSIZE: usize = 4;
pub(crate) const SB_DBLOCKS: usize = 8;
pub(crate) const SB_RBLOCKS: usize = 16;
pub(crate) const SB_UUID: usize = 32;
pub(crate) const SB_LOGSTART: usize = 48;
pub(crate) const SB_AGBLOCKS: usize = 84;
pub(crate) const SB_AGCOUNT: usize = 88;
pub(crate) const SB_LOGBLOCKS: usize = 96;
pub(crate) const SB_VERSIONNUM: usize = 100;
pub(crate) const SB_SECTSIZE: usize = 102;
pub(crate) const SB_BLOCKLOG: usize = 120;
pub(crate) const SB_SECTLOG: usize = 121;
pub(crate) const SB_AGBLKLOG: usize = 124;
pub(crate) const SB_INPROGRESS: usize = 126;
pub(crate) const SB_FEATURES2: usize = 200;
pub(crate) const SB_FEATURES_RO_COMPAT: usize = 212;
pub(crate) const SB_FEATURES_INCOMPAT: usize = 216;
pub(crate) const SB_CRC: usize = 224;
pub(crate) const SB_META_UUID: usize = 248;

/// The low nibble of `sb_versionnum`.
const VERSION_NUMBITS: u16 = 0x000f;
/// v4: the log is version 2 (v5 always is).
const VERSION_LOGV2BIT: u16 = 0x0400;
/// v4: `sb_features2` is valid.
const VERSION_MOREBITSBIT: u16 = 0x8000;
/// v4 feature bits the kernel accepts (`XFS_SB_VERSION_OKBITS`: all but the never-implemented
/// shared-filesystem bit 0x0200).
const VERSION_OKBITS: u16 = 0xfdff;
/// v4 `sb_features2` bits the kernel accepts (`XFS_SB_VERSION2_OKBITS`: lazy counters, attr2,
/// 32-bit project ids, file types in directories).
const VERSION2_OKBITS: u32 = 0x0000_028a;

/// v5 incompatible features whose on-disk changes leave the superblock, the AGF and the
/// free-space B+trees as this crate reads them: ftype, sparse inodes, meta_uuid, bigtime,
/// needsrepair (reported as a hazard), nrext64, exchange-range, parent pointers.
const INCOMPAT_KNOWN: u32 = 0x0000_00ff;
pub(crate) const INCOMPAT_META_UUID: u32 = 0x0000_0004;
pub(crate) const INCOMPAT_NEEDSREPAIR: u32 = 0x0000_0010;
/// v5 read-only-compatible features: free inode B+tree, reverse mapping, reflink, inode B+tree
/// block counts. Their B+trees take blocks out of the free space like any other metadata.
const RO_COMPAT_KNOWN: u32 = 0x0000_000f;

/// Smallest and largest allocation group, in blocks and bytes (`XFS_MIN_AG_BLOCKS`, `XFS_MAX_AG_BYTES`).
const MIN_AG_BLOCKS: u32 = 64;
const MAX_AG_BYTES: u64 = 1 << 40;

/// What the rest of the crate needs from the superblock, validated.
#[derive(Clone, Debug)]
pub(crate) struct Superblock {
    /// v5 (CRC-enabled) rather than v4.
    pub(crate) v5: bool,
    pub(crate) block_size: u32,
    pub(crate) sector_size: u32,
    /// Filesystem blocks in the data section.
    pub(crate) dblocks: u64,
    /// Blocks of the realtime section (on another device).
    pub(crate) rblocks: u64,
    pub(crate) ag_count: u32,
    pub(crate) ag_blocks: u32,
    /// The internal log's first block (linear, `agno * agblocks + agbno`) and length in blocks;
    /// `None` for an external log device.
    pub(crate) log: Option<(u64, u32)>,
    /// The log uses version-2 records (multi-block headers).
    pub(crate) log_v2: bool,
    /// The UUID stamped into v5 metadata blocks (`sb_meta_uuid` with the meta_uuid feature).
    pub(crate) metadata_uuid: [u8; 16],
    /// `sb_features_incompat` (v5; 0 on v4).
    pub(crate) incompat: u32,
}

impl Superblock {
    /// Validates the superblock sector `raw` (`sb_sectsize` bytes, or 512 before that is
    /// known: the caller re-reads) of a volume of `volume_size` bytes.
    pub(crate) fn parse(raw: &[u8], volume_size: u64) -> Result<Self, Error> {
        let corrupt = |field: usize, problem: String| Error::corrupt("superblock", field as u64, problem);
        let unsupported = |field: usize, problem: String| Error::unsupported("superblock", field as u64, problem);

        let magic = be32(raw, 0);
        if magic != XFS_SB_MAGIC {
            return Err(corrupt(0, format!("bad magic 0x{magic:08x} (expected 0x{XFS_SB_MAGIC:08x}, \"XFSB\")")));
        }
        let versionnum = be16(raw, SB_VERSIONNUM);
        let v5 = match versionnum & VERSION_NUMBITS {
            5 => true,
            4 => false,
            other => {
                return Err(unsupported(
                    SB_VERSIONNUM,
                    format!("superblock version {other} (only 4 and 5 are supported)"),
                ));
            }
        };

        // A size, then its log2 in another field: each wrong one is named at its own offset.
        let power_of_two = |what: &str, size: u32, size_at: usize, log_at: usize, sizes: RangeInclusive<u32>| {
            let log = u8_at(raw, log_at);
            if !sizes.contains(&size) || !size.is_power_of_two() {
                let (min, max) = sizes.into_inner();
                Err(corrupt(size_at, format!("{what} {size} is not a power of two from {min} to {max}")))
            } else if u32::from(log) != size.trailing_zeros() {
                Err(corrupt(
                    log_at,
                    format!("{what} log {log}, but a {what} of {size} needs {}", size.trailing_zeros()),
                ))
            } else {
                Ok(())
            }
        };
        let sector_size = u32::from(be16(raw, SB_SECTSIZE));
        power_of_two("sector size", sector_size, SB_SECTSIZE, SB_SECTLOG, 512..=32768)?;
        let block_size = be32(raw, SB_BLOCKSIZE);
        power_of_two("block size", block_size, SB_BLOCKSIZE, SB_BLOCKLOG, sector_size..=65536)?;
        if v5 {
            // Only now is the length of the checksummed sector known.
            if let Err((stored, computed)) = checksum::verify(raw, SB_CRC) {
                return Err(corrupt(SB_CRC, format!("checksum 0x{stored:08x}, computed 0x{computed:08x}")));
            }
        }
        if u8_at(raw, SB_INPROGRESS) != 0 {
            return Err(corrupt(SB_INPROGRESS, "sb_inprogress is set: mkfs.xfs did not finish".into()));
        }

        let ag_blocks = be32(raw, SB_AGBLOCKS);
        let max_ag_blocks = MAX_AG_BYTES / u64::from(block_size);
        if ag_blocks < MIN_AG_BLOCKS || u64::from(ag_blocks) > max_ag_blocks {
            return Err(corrupt(
                SB_AGBLOCKS,
                format!("{ag_blocks} blocks per AG (expected {MIN_AG_BLOCKS} to {max_ag_blocks})"),
            ));
        }
        // agblklog is rounded up, so that agblocks need not be a power of two.
        let ag_blk_log = u8_at(raw, SB_AGBLKLOG);
        let expected_log = u32::BITS - (ag_blocks - 1).leading_zeros();
        if u32::from(ag_blk_log) != expected_log {
            return Err(corrupt(
                SB_AGBLKLOG,
                format!("agblklog {ag_blk_log}, but {ag_blocks} blocks per AG need {expected_log}"),
            ));
        }
        let ag_count = be32(raw, SB_AGCOUNT);
        let dblocks = be64(raw, SB_DBLOCKS);
        // Every AG but the last is full; the last one holds at least MIN_AG_BLOCKS.
        let full = u64::from(ag_count) * u64::from(ag_blocks);
        let min = full.saturating_sub(u64::from(ag_blocks)) + u64::from(MIN_AG_BLOCKS);
        if ag_count == 0 {
            return Err(corrupt(SB_AGCOUNT, "0 AGs: a filesystem has at least one".into()));
        }
        if dblocks > full || dblocks < min {
            return Err(corrupt(
                SB_AGCOUNT,
                format!("{ag_count} AGs of {ag_blocks} blocks do not fit {dblocks} blocks (expected {min} to {full})"),
            ));
        }
        if dblocks.checked_mul(u64::from(block_size)).is_none_or(|bytes| bytes > volume_size) {
            return Err(corrupt(
                SB_DBLOCKS,
                format!(
                    "the filesystem ({dblocks} blocks of {block_size} bytes) ends past the volume's end ({volume_size} bytes): truncated image?"
                ),
            ));
        }

        let logstart = be64(raw, SB_LOGSTART);
        let log_blocks = be32(raw, SB_LOGBLOCKS);
        let log = if logstart == 0 {
            None
        } else {
            // A packed fsblock number: AG in the high bits, block in the AG in the low agblklog bits.
            let agno = logstart >> ag_blk_log;
            let agbno = logstart & ((1 << ag_blk_log) - 1);
            let ag_length = if agno + 1 == u64::from(ag_count) {
                dblocks - (full - u64::from(ag_blocks))
            } else {
                u64::from(ag_blocks)
            };
            if agno >= u64::from(ag_count) || agbno == 0 || log_blocks == 0 || agbno + u64::from(log_blocks) > ag_length
            {
                return Err(corrupt(
                    SB_LOGSTART,
                    format!(
                        "internal log at fsblock {logstart} (AG {agno} block {agbno}), {log_blocks} blocks long, is not inside an AG"
                    ),
                ));
            }
            Some((agno * u64::from(ag_blocks) + agbno, log_blocks))
        };

        let (incompat, metadata_uuid) = if v5 {
            let incompat = be32(raw, SB_FEATURES_INCOMPAT);
            if incompat & !INCOMPAT_KNOWN != 0 {
                return Err(unsupported(
                    SB_FEATURES_INCOMPAT,
                    format!("unknown incompatible features 0x{:x}", incompat & !INCOMPAT_KNOWN),
                ));
            }
            let ro_compat = be32(raw, SB_FEATURES_RO_COMPAT);
            if ro_compat & !RO_COMPAT_KNOWN != 0 {
                return Err(unsupported(
                    SB_FEATURES_RO_COMPAT,
                    format!("unknown read-only-compatible features 0x{:x}", ro_compat & !RO_COMPAT_KNOWN),
                ));
            }
            let uuid_field = if incompat & INCOMPAT_META_UUID != 0 { SB_META_UUID } else { SB_UUID };
            (incompat, array(raw, uuid_field))
        } else {
            let features2 = if versionnum & VERSION_MOREBITSBIT != 0 { be32(raw, SB_FEATURES2) } else { 0 };
            if versionnum & !VERSION_OKBITS != 0 || features2 & !VERSION2_OKBITS != 0 {
                return Err(unsupported(
                    SB_VERSIONNUM,
                    format!("unknown v4 features (versionnum 0x{versionnum:04x}, features2 0x{features2:08x})"),
                ));
            }
            (0, array(raw, SB_UUID))
        };

        Ok(Self {
            v5,
            block_size,
            sector_size,
            dblocks,
            rblocks: be64(raw, SB_RBLOCKS),
            ag_count,
            ag_blocks,
            log,
            log_v2: v5 || versionnum & VERSION_LOGV2BIT != 0,
            metadata_uuid,
            incompat,
        })
    }

    /// Blocks in AG `agno` (the last one may be short).
    pub(crate) fn ag_length(&self, agno: u32) -> u32 {
        if agno + 1 == self.ag_count {
            // dblocks fits the AGs (checked in parse), so this is at most ag_blocks.
            (self.dblocks - u64::from(agno) * u64::from(self.ag_blocks)) as u32
        } else {
            self.ag_blocks
        }
    }

    /// Byte offset of block `agbno` of AG `agno`.
    pub(crate) fn byte_of(&self, agno: u32, agbno: u32) -> u64 {
        (u64::from(agno) * u64::from(self.ag_blocks) + u64::from(agbno)) * u64::from(self.block_size)
    }

    /// The first block of an AG after its four header sectors (SB, AGF, AGI, AGFL), where the
    /// free-space B+trees may point (`XFS_AGFL_BLOCK + 1`).
    pub(crate) fn first_free_agbno(&self) -> u32 {
        3 * self.sector_size / self.block_size + 1
    }
}
