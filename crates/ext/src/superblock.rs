//! The superblock (1024 bytes at byte 1024 of the volume) and the geometry derived from it:
//! block and cluster size, groups, where each group starts, which groups hold a backup
//! superblock, where the group descriptor blocks are.
//!
//! Offsets and rules: e2fsprogs lib/ext2fs/ext2_fs.h (`struct ext2_super_block`), openfs.c
//! (`ext2fs_open2` validation, `ext2fs_descriptor_block_loc2`), closefs.c
//! (`ext2fs_bg_has_super`), csum.c (`ext2fs_superblock_csum`). Little-endian throughout.

use crate::Error;
use crate::checksum::crc32c_raw;
use crate::features::{Features, compat, incompat, ro_compat};
use imgstream_volume::fields::{array, le16, le32, le64};
use std::fmt::Write as _;

/// Byte offset of the primary superblock in the volume, whatever the block size.
pub(crate) const SUPERBLOCK_OFFSET: u64 = 1024;
/// Size of the superblock structure.
pub(crate) const SUPERBLOCK_SIZE: usize = 1024;
/// `s_magic`.
pub(crate) const EXT_MAGIC: u16 = 0xEF53;

// Field offsets within the superblock.
pub(crate) const S_INODES_COUNT: usize = 0x00;
pub(crate) const S_BLOCKS_COUNT_LO: usize = 0x04;
#[cfg(test)]
pub(crate) const S_FREE_BLOCKS_COUNT_LO: usize = 0x0C;
pub(crate) const S_FIRST_DATA_BLOCK: usize = 0x14;
pub(crate) const S_LOG_BLOCK_SIZE: usize = 0x18;
pub(crate) const S_LOG_CLUSTER_SIZE: usize = 0x1C;
pub(crate) const S_BLOCKS_PER_GROUP: usize = 0x20;
pub(crate) const S_CLUSTERS_PER_GROUP: usize = 0x24;
pub(crate) const S_INODES_PER_GROUP: usize = 0x28;
pub(crate) const S_MAGIC: usize = 0x38;
pub(crate) const S_STATE: usize = 0x3A;
pub(crate) const S_REV_LEVEL: usize = 0x4C;
pub(crate) const S_INODE_SIZE: usize = 0x58;
pub(crate) const S_FEATURE_COMPAT: usize = 0x5C;
pub(crate) const S_FEATURE_INCOMPAT: usize = 0x60;
pub(crate) const S_FEATURE_RO_COMPAT: usize = 0x64;
pub(crate) const S_UUID: usize = 0x68;
pub(crate) const S_VOLUME_NAME: usize = 0x78;
pub(crate) const S_LAST_MOUNTED: usize = 0x88;
pub(crate) const S_RESERVED_GDT_BLOCKS: usize = 0xCE;
pub(crate) const S_JOURNAL_UUID: usize = 0xD0;
pub(crate) const S_JOURNAL_INUM: usize = 0xE0;
pub(crate) const S_JOURNAL_DEV: usize = 0xE4;
pub(crate) const S_DESC_SIZE: usize = 0xFE;
pub(crate) const S_FIRST_META_BG: usize = 0x104;
pub(crate) const S_BLOCKS_COUNT_HI: usize = 0x150;
#[cfg(test)]
pub(crate) const S_FREE_BLOCKS_HI: usize = 0x158;
pub(crate) const S_MMP_BLOCK: usize = 0x168;
pub(crate) const S_CHECKSUM_TYPE: usize = 0x175;
pub(crate) const S_BACKUP_BGS: usize = 0x24C;
pub(crate) const S_CHECKSUM_SEED: usize = 0x270;
pub(crate) const S_CHECKSUM: usize = 0x3FC;

/// `s_state` bit: cleanly unmounted (cleared while a journal-less filesystem is mounted).
pub(crate) const STATE_VALID: u16 = 0x1;
/// `s_state` bit: the kernel detected errors.
pub(crate) const STATE_ERROR: u16 = 0x2;

/// `s_rev_level` values: 0 is the original format (128-byte inodes, no feature words).
const GOOD_OLD_REV: u32 = 0;
const DYNAMIC_REV: u32 = 1;
const GOOD_OLD_INODE_SIZE: u16 = 128;
/// Blocks are 1 KiB << s_log_block_size, at most 64 KiB (EXT2_MAX_BLOCK_LOG_SIZE 16).
const MIN_BLOCK_LOG: u32 = 10;
const MAX_BLOCK_LOG: u32 = 16;
/// Clusters are at most 2^29 bytes (EXT2_MAX_CLUSTER_LOG_SIZE).
const MAX_CLUSTER_LOG: u32 = 29;
/// 32-byte descriptors without 64bit; with it, s_desc_size is a power of two in [64, 1024]
/// (EXT2_MIN_DESC_SIZE_64BIT, EXT2_MAX_DESC_SIZE).
const DESC_SIZE_32: u32 = 32;
const MIN_DESC_SIZE_64: u32 = 64;
const MAX_DESC_SIZE: u32 = 1024;
/// `s_checksum_type` for crc32c, the only one defined.
const CHECKSUM_TYPE_CRC32C: u8 = 1;

/// A validated superblock: every field the allocation map depends on, checked for
/// consistency, so that the geometry methods below cannot overflow or divide by zero.
#[derive(Clone, Debug)]
pub(crate) struct Superblock {
    pub(crate) features: Features,
    pub(crate) blocks_count: u64,
    pub(crate) first_data_block: u64,
    /// log2 of the block size in bytes.
    pub(crate) block_bits: u32,
    /// log2 of blocks per cluster (0 without bigalloc).
    pub(crate) cluster_bits: u32,
    pub(crate) blocks_per_group: u64,
    pub(crate) clusters_per_group: u64,
    pub(crate) inodes_per_group: u64,
    pub(crate) inode_size: u64,
    pub(crate) state: u16,
    pub(crate) uuid: [u8; 16],
    pub(crate) volume_name: String,
    pub(crate) last_mounted: String,
    pub(crate) reserved_gdt_blocks: u64,
    pub(crate) journal_uuid: [u8; 16],
    pub(crate) journal_inum: u32,
    pub(crate) journal_dev: u32,
    /// Bytes per group descriptor (32, or s_desc_size with 64bit).
    pub(crate) desc_size: u64,
    pub(crate) first_meta_bg: u64,
    pub(crate) mmp_block: u64,
    pub(crate) backup_bgs: [u64; 2],
    /// The seed of every metadata_csum checksum but the superblock's own.
    pub(crate) csum_seed: u32,
    /// Number of block groups.
    pub(crate) groups: u64,
}

/// A NUL-terminated string field, lossily decoded.
fn c_string(sb: &[u8; SUPERBLOCK_SIZE], offset: usize, len: usize) -> String {
    let field = sb.get(offset..offset + len).unwrap_or(&[]);
    let end = field.iter().position(|&b| b == 0).unwrap_or(field.len());
    String::from_utf8_lossy(field.get(..end).unwrap_or(&[])).into_owned()
}

/// An error about the superblock field at `field` (offset within the superblock).
fn corrupt(field: usize, problem: impl Into<String>) -> Error {
    Error::corrupt("superblock", SUPERBLOCK_OFFSET + field as u64, problem)
}

fn unsupported(field: usize, problem: impl Into<String>) -> Error {
    Error::unsupported("superblock", SUPERBLOCK_OFFSET + field as u64, problem)
}

impl Superblock {
    /// Parses and validates the superblock `sb` of a volume of `volume_size` bytes, in the
    /// order and with the rules of `ext2fs_open2`, plus the volume-size check e2fsprogs leaves
    /// to the I/O layer.
    pub(crate) fn parse(sb: &[u8; SUPERBLOCK_SIZE], volume_size: u64) -> Result<Self, Error> {
        let magic = le16(sb, S_MAGIC);
        if magic != EXT_MAGIC {
            return Err(corrupt(S_MAGIC, format!("bad magic 0x{magic:04X} (expected 0x{EXT_MAGIC:04X})")));
        }
        let features = Features {
            compat: le32(sb, S_FEATURE_COMPAT),
            incompat: le32(sb, S_FEATURE_INCOMPAT),
            ro_compat: le32(sb, S_FEATURE_RO_COMPAT),
        };
        if features.ro_compat & ro_compat::METADATA_CSUM != 0 {
            let checksum_type = sb.get(S_CHECKSUM_TYPE).copied().unwrap_or(0);
            if checksum_type != CHECKSUM_TYPE_CRC32C {
                return Err(unsupported(
                    S_CHECKSUM_TYPE,
                    format!("unknown checksum type {checksum_type} (only 1, crc32c, exists)"),
                ));
            }
            let stored = le32(sb, S_CHECKSUM);
            let computed = crc32c_raw(!0, &[sb.get(..S_CHECKSUM).unwrap_or(&[])]);
            if stored != computed {
                return Err(corrupt(
                    S_CHECKSUM,
                    format!("checksum 0x{stored:08x} does not match the contents (computed 0x{computed:08x})"),
                ));
            }
        }
        let rev_level = le32(sb, S_REV_LEVEL);
        if rev_level > DYNAMIC_REV {
            return Err(unsupported(
                S_REV_LEVEL,
                format!("revision {rev_level} is newer than 1, the last one defined"),
            ));
        }
        let unknown = features.incompat & !incompat::KNOWN;
        if unknown != 0 {
            return Err(unsupported(
                S_FEATURE_INCOMPAT,
                format!(
                    "incompatible features 0x{unknown:x} ({}) are not supported",
                    Features { compat: 0, incompat: unknown, ro_compat: 0 }.names()
                ),
            ));
        }
        let unknown = features.ro_compat & !ro_compat::KNOWN;
        if unknown != 0 {
            return Err(unsupported(
                S_FEATURE_RO_COMPAT,
                format!(
                    "read-only-compatible features 0x{unknown:x} ({}) are not supported",
                    Features { compat: 0, incompat: 0, ro_compat: unknown }.names()
                ),
            ));
        }
        let refused = features.compat & compat::UNSUPPORTED;
        if refused != 0 {
            return Err(unsupported(
                S_FEATURE_COMPAT,
                format!(
                    "features 0x{refused:x} ({}) are not supported: they change what a free bit means",
                    Features { compat: refused, incompat: 0, ro_compat: 0 }.names()
                ),
            ));
        }

        if features.incompat & incompat::JOURNAL_DEV != 0 {
            return Err(unsupported(
                S_FEATURE_INCOMPAT,
                "this is an external journal device (journal_dev), not a filesystem: it has no allocation bitmaps",
            ));
        }

        let log_block = le32(sb, S_LOG_BLOCK_SIZE);
        if log_block > MAX_BLOCK_LOG - MIN_BLOCK_LOG {
            return Err(corrupt(
                S_LOG_BLOCK_SIZE,
                format!(
                    "s_log_block_size {log_block} is out of range (at most {}, for 64 KiB blocks)",
                    MAX_BLOCK_LOG - MIN_BLOCK_LOG
                ),
            ));
        }
        let block_bits = MIN_BLOCK_LOG + log_block;
        let log_cluster = le32(sb, S_LOG_CLUSTER_SIZE);
        let bigalloc = features.ro_compat & ro_compat::BIGALLOC != 0;
        let cluster_bits = if bigalloc {
            if log_cluster < log_block || MIN_BLOCK_LOG.saturating_add(log_cluster) > MAX_CLUSTER_LOG {
                return Err(corrupt(
                    S_LOG_CLUSTER_SIZE,
                    format!(
                        "s_log_cluster_size {log_cluster} is out of range (from s_log_block_size {log_block} to {})",
                        MAX_CLUSTER_LOG - MIN_BLOCK_LOG
                    ),
                ));
            }
            log_cluster - log_block
        } else {
            if log_cluster != log_block {
                return Err(corrupt(
                    S_LOG_CLUSTER_SIZE,
                    format!(
                        "s_log_cluster_size {log_cluster} differs from s_log_block_size {log_block} without bigalloc"
                    ),
                ));
            }
            0
        };
        let block_size = 1u64 << block_bits;

        let inode_size = if rev_level == GOOD_OLD_REV { GOOD_OLD_INODE_SIZE } else { le16(sb, S_INODE_SIZE) };
        if inode_size < GOOD_OLD_INODE_SIZE || u64::from(inode_size) > block_size || !inode_size.is_power_of_two() {
            return Err(corrupt(
                S_INODE_SIZE,
                format!("inode size {inode_size} is not a power of two from 128 to the block size {block_size}"),
            ));
        }
        let bit64 = features.incompat & incompat::BIT64 != 0;
        let desc_size = if bit64 { u32::from(le16(sb, S_DESC_SIZE)) } else { DESC_SIZE_32 };
        if bit64 && (!(MIN_DESC_SIZE_64..=MAX_DESC_SIZE).contains(&desc_size) || !desc_size.is_power_of_two()) {
            return Err(corrupt(
                S_DESC_SIZE,
                format!(
                    "group descriptor size {desc_size} is not a power of two from {MIN_DESC_SIZE_64} to {MAX_DESC_SIZE} (64bit is set)"
                ),
            ));
        }

        let blocks_per_group = u64::from(le32(sb, S_BLOCKS_PER_GROUP));
        let clusters_per_group = u64::from(le32(sb, S_CLUSTERS_PER_GROUP));
        // One bitmap block holds a group's bits: at most 8 * block size clusters per group.
        let max_per_group = block_size * 8;
        if clusters_per_group == 0 || clusters_per_group > max_per_group {
            return Err(corrupt(
                S_CLUSTERS_PER_GROUP,
                format!(
                    "s_clusters_per_group {clusters_per_group} is out of range (1 to {max_per_group}, the bits of one bitmap block)"
                ),
            ));
        }
        if blocks_per_group != clusters_per_group << cluster_bits {
            return Err(corrupt(
                S_BLOCKS_PER_GROUP,
                format!(
                    "s_blocks_per_group {blocks_per_group} is not s_clusters_per_group {clusters_per_group} x {} blocks per cluster",
                    1u64 << cluster_bits
                ),
            ));
        }
        if clusters_per_group % 8 != 0 {
            // e2fsprogs reads and checksums cpg / 8 bytes of each bitmap; mke2fs never makes this.
            return Err(unsupported(
                S_CLUSTERS_PER_GROUP,
                format!("s_clusters_per_group {clusters_per_group} is not a multiple of 8"),
            ));
        }
        let inodes_per_group = u64::from(le32(sb, S_INODES_PER_GROUP));
        if inodes_per_group == 0 || inodes_per_group > max_per_group {
            return Err(corrupt(
                S_INODES_PER_GROUP,
                format!(
                    "s_inodes_per_group {inodes_per_group} is out of range (1 to {max_per_group}, the bits of one bitmap block)"
                ),
            ));
        }

        let blocks_count_hi = if bit64 { u64::from(le32(sb, S_BLOCKS_COUNT_HI)) } else { 0 };
        let blocks_count = blocks_count_hi << 32 | u64::from(le32(sb, S_BLOCKS_COUNT_LO));
        let first_data_block = u64::from(le32(sb, S_FIRST_DATA_BLOCK));
        if first_data_block >= blocks_count {
            return Err(corrupt(
                S_FIRST_DATA_BLOCK,
                format!("s_first_data_block {first_data_block} is not below s_blocks_count {blocks_count}"),
            ));
        }
        // The primary superblock lies at byte 1024: in block 1 with 1 KiB blocks (block 0 is
        // left to boot loaders), else in block 0. Bigalloc always starts at block 0.
        let expected_first = u64::from(block_size == 1024 && !bigalloc);
        if first_data_block != expected_first {
            return Err(unsupported(
                S_FIRST_DATA_BLOCK,
                format!(
                    "s_first_data_block {first_data_block} with {block_size}-byte blocks (expected {expected_first})"
                ),
            ));
        }
        if blocks_count.checked_mul(block_size).is_none_or(|bytes| bytes > volume_size) {
            return Err(corrupt(
                S_BLOCKS_COUNT_LO,
                format!(
                    "truncated: the filesystem has {blocks_count} blocks of {block_size} bytes but the volume holds only {volume_size} bytes"
                ),
            ));
        }
        let groups = (blocks_count - first_data_block).div_ceil(blocks_per_group);
        let inodes_count = u64::from(le32(sb, S_INODES_COUNT));
        if groups.checked_mul(inodes_per_group) != Some(inodes_count) {
            return Err(corrupt(
                S_INODES_COUNT,
                format!("s_inodes_count {inodes_count} is not {groups} groups x {inodes_per_group} inodes per group"),
            ));
        }

        let uuid = array(sb, S_UUID);
        let csum_seed = if features.incompat & incompat::CSUM_SEED != 0 {
            le32(sb, S_CHECKSUM_SEED)
        } else {
            crc32c_raw(!0, &[&uuid])
        };
        Ok(Self {
            features,
            blocks_count,
            first_data_block,
            block_bits,
            cluster_bits,
            blocks_per_group,
            clusters_per_group,
            inodes_per_group,
            inode_size: u64::from(inode_size),
            state: le16(sb, S_STATE),
            uuid,
            volume_name: c_string(sb, S_VOLUME_NAME, 16),
            last_mounted: c_string(sb, S_LAST_MOUNTED, 64),
            reserved_gdt_blocks: u64::from(le16(sb, S_RESERVED_GDT_BLOCKS)),
            journal_uuid: array(sb, S_JOURNAL_UUID),
            journal_inum: le32(sb, S_JOURNAL_INUM),
            journal_dev: le32(sb, S_JOURNAL_DEV),
            desc_size: u64::from(desc_size),
            first_meta_bg: u64::from(le32(sb, S_FIRST_META_BG)),
            mmp_block: le64(sb, S_MMP_BLOCK),
            backup_bgs: [u64::from(le32(sb, S_BACKUP_BGS)), u64::from(le32(sb, S_BACKUP_BGS + 4))],
            csum_seed,
            groups,
        })
    }

    pub(crate) fn has_incompat(&self, bit: u32) -> bool {
        self.features.incompat & bit != 0
    }

    pub(crate) fn has_ro_compat(&self, bit: u32) -> bool {
        self.features.ro_compat & bit != 0
    }

    pub(crate) fn has_compat(&self, bit: u32) -> bool {
        self.features.compat & bit != 0
    }

    pub(crate) fn block_size(&self) -> u64 {
        1 << self.block_bits
    }

    pub(crate) fn cluster_size(&self) -> u64 {
        1 << (self.block_bits + self.cluster_bits)
    }

    /// Group descriptors per descriptor block.
    pub(crate) fn descs_per_block(&self) -> u64 {
        self.block_size() / self.desc_size
    }

    /// Blocks holding the group descriptor table (meta_bg spreads them over the volume).
    pub(crate) fn desc_blocks(&self) -> u64 {
        self.groups.div_ceil(self.descs_per_block())
    }

    /// Blocks of one group's inode table.
    pub(crate) fn inode_table_blocks(&self) -> u64 {
        (self.inodes_per_group * self.inode_size).div_ceil(self.block_size())
    }

    /// Descriptor checksums are present (and BLOCK_UNINIT may be honoured).
    pub(crate) fn has_group_desc_csum(&self) -> bool {
        self.has_ro_compat(ro_compat::METADATA_CSUM | ro_compat::GDT_CSUM)
    }

    /// First block of group `group` (< groups, so no overflow: it is below blocks_count).
    pub(crate) fn group_first_block(&self, group: u64) -> u64 {
        self.first_data_block + group * self.blocks_per_group
    }

    /// Clusters the bitmap of `group` covers: all of them but in the last group, which ends at
    /// the filesystem's end (the bits after it are padding).
    pub(crate) fn clusters_in_group(&self, group: u64) -> u64 {
        let first = self.group_first_block(group);
        let blocks = (self.blocks_count - first).min(self.blocks_per_group);
        blocks.div_ceil(1 << self.cluster_bits)
    }

    /// `ext2fs_bg_has_super`: whether `group` holds a superblock (and, without meta_bg, a copy
    /// of the descriptor table and the reserved GDT blocks).
    pub(crate) fn has_super(&self, group: u64) -> bool {
        if group == 0 {
            return true;
        }
        if self.has_compat(compat::SPARSE_SUPER2) {
            return group == self.backup_bgs[0] || group == self.backup_bgs[1];
        }
        if group <= 1 || !self.has_ro_compat(ro_compat::SPARSE_SUPER) {
            return true;
        }
        if group % 2 == 0 {
            return false;
        }
        is_power_of(group, 3) || is_power_of(group, 5) || is_power_of(group, 7)
    }

    /// `ext2fs_descriptor_block_loc2` for the primary table: the block holding descriptor
    /// block `index` (< desc_blocks).
    pub(crate) fn desc_block_location(&self, index: u64) -> u64 {
        // With 1 KiB blocks and bigalloc, block 0 is left to boot loaders and the table starts
        // one block later.
        let group_zero_adjust = u64::from(index == 0 && self.block_size() == 1024 && self.cluster_bits > 0);
        if !self.has_incompat(incompat::META_BG) || index < self.first_meta_bg {
            return self.first_data_block + index + 1 + group_zero_adjust;
        }
        let group = self.descs_per_block() * index;
        self.group_first_block(group) + u64::from(self.has_super(group)) + group_zero_adjust
    }

    /// The external journal, if this filesystem has one.
    pub(crate) fn external_journal(&self) -> Option<String> {
        if !self.has_compat(compat::HAS_JOURNAL) || self.journal_inum != 0 {
            return None;
        }
        if self.journal_dev == 0 && self.journal_uuid == [0; 16] {
            return None;
        }
        Some(format!("device 0x{:x}, UUID {}", self.journal_dev, format_uuid(&self.journal_uuid)))
    }
}

/// Whether `value` is a power of `base` (base^1 or more).
fn is_power_of(mut value: u64, base: u64) -> bool {
    if value < base {
        return false;
    }
    while value % base == 0 {
        value /= base;
    }
    value == 1
}

/// The usual 8-4-4-4-12 form.
pub(crate) fn format_uuid(uuid: &[u8; 16]) -> String {
    let mut text = String::with_capacity(36);
    for (i, byte) in uuid.iter().enumerate() {
        if matches!(i, 4 | 6 | 8 | 10) {
            text.push('-');
        }
        let _ = write!(text, "{byte:02x}");
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn powers() {
        let powers: Vec<u64> =
            (1..=50).filter(|&g| is_power_of(g, 3) || is_power_of(g, 5) || is_power_of(g, 7)).collect();
        assert_eq!(powers, [3, 5, 7, 9, 25, 27, 49]);
        assert!(!is_power_of(1, 3), "1 = 3^0 is group 1, handled before");
    }

    #[test]
    fn uuid_format() {
        let uuid = [0x3b, 0x1e, 0x2d, 0x4c, 0x5a, 0x69, 0x4b, 0x78, 0x8c, 0x97, 0xa6, 0xb5, 0xc4, 0xd3, 0xe2, 0xf1];
        assert_eq!(format_uuid(&uuid), "3b1e2d4c-5a69-4b78-8c97-a6b5c4d3e2f1");
    }
}
