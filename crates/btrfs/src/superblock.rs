//! The primary superblock (`struct btrfs_super_block`, kernel `include/uapi/linux/btrfs_tree.h`):
//! 4 KiB at byte 64 KiB of every device, checksummed, naming the roots of the chunk, root and
//! log trees, the geometry, the feature bits and this device's `dev_item`. Only the primary copy
//! is read: its mirrors are kept in the image but not trusted for anything.

use crate::Error;
use crate::checksum::CsumType;
use imgstream_volume::fields::{array, le16, le32, le64, u8_at};

/// Byte offset of the primary superblock.
pub(crate) const SUPER_OFFSET: u64 = 64 * 1024;
/// Bytes of a superblock (`BTRFS_SUPER_INFO_SIZE`).
pub(crate) const SUPER_LEN: usize = 4096;
/// `BTRFS_MAGIC`, at byte 0x40 of the superblock.
pub(crate) const MAGIC: &[u8; 8] = b"_BHRfS_M";
/// Offset of the magic within the superblock.
pub(crate) const MAGIC_AT: usize = 0x40;
/// Deepest tree: levels run from 0 (leaves) to `BTRFS_MAX_LEVEL - 1`.
pub(crate) const MAX_LEVEL: u8 = 8;

// Field offsets of `btrfs_super_block`.
const FSID: usize = 0x20;
const BYTENR: usize = 0x30;
const FLAGS: usize = 0x38;
const GENERATION: usize = 0x48;
const ROOT: usize = 0x50;
const CHUNK_ROOT: usize = 0x58;
const LOG_ROOT: usize = 0x60;
const TOTAL_BYTES: usize = 0x70;
const BYTES_USED: usize = 0x78;
const NUM_DEVICES: usize = 0x88;
const SECTORSIZE: usize = 0x90;
const NODESIZE: usize = 0x94;
const SYS_CHUNK_ARRAY_SIZE: usize = 0xa0;
const COMPAT_RO_FLAGS: usize = 0xb4;
const INCOMPAT_FLAGS: usize = 0xbc;
const CSUM_TYPE: usize = 0xc4;
const ROOT_LEVEL: usize = 0xc6;
const CHUNK_ROOT_LEVEL: usize = 0xc7;
const LOG_ROOT_LEVEL: usize = 0xc8;
const DEV_ITEM: usize = 0xc9;
const DEV_ITEM_DEVID: usize = DEV_ITEM;
const DEV_ITEM_TOTAL_BYTES: usize = DEV_ITEM + 8;
/// `dev_item.uuid`: this device's UUID, also in its DEV_ITEM in the chunk tree.
pub(crate) const DEV_ITEM_UUID: usize = 66;
const DEV_ITEM_FSID: usize = DEV_ITEM + 82;
const METADATA_UUID: usize = 0x23b;
/// `sys_chunk_array`: the system chunks, so that the chunk tree can be found.
pub(crate) const SYS_CHUNK_ARRAY: usize = 0x32b;
/// `BTRFS_SYSTEM_CHUNK_ARRAY_SIZE`.
const SYS_CHUNK_ARRAY_MAX: usize = 2048;

/// Superblock flags that make a device something other than a plain member of a filesystem.
const FLAG_ERROR: u64 = 1 << 2;
const FLAGS_UNSUPPORTED: [(u64, &str); 7] = [
    (1 << 32, "a seed device (SEEDING)"),
    (1 << 33, "a btrfs-image metadata dump (METADUMP)"),
    (1 << 34, "a btrfs-image metadata dump (METADUMP_V2)"),
    (1 << 35, "an interrupted fsid change (CHANGING_FSID)"),
    (1 << 36, "an interrupted fsid change (CHANGING_FSID_V2)"),
    (1 << 38, "an interrupted block group tree conversion (CHANGING_BG_TREE)"),
    (3 << 39, "an interrupted checksum conversion (CHANGING_DATA_CSUM / CHANGING_META_CSUM)"),
];
/// Flags this crate knows to be harmless: WRITTEN, RELOC, ERROR (reported), and the above.
const FLAGS_KNOWN: u64 = 0b111 | (0b1_1111 << 32) | (0b111 << 38);

/// `compat_ro`: FREE_SPACE_TREE, FREE_SPACE_TREE_VALID, VERITY, BLOCK_GROUP_TREE.
const COMPAT_RO_KNOWN: u64 = 0b1111;
/// `compat_ro` BLOCK_GROUP_TREE: block group items live in their own tree (id 11).
pub(crate) const COMPAT_RO_BLOCK_GROUP_TREE: u64 = 1 << 3;

/// `incompat` bits that do not change where data lives: MIXED_BACKREF, DEFAULT_SUBVOL,
/// MIXED_GROUPS, COMPRESS_LZO, COMPRESS_ZSTD, BIG_METADATA, EXTENDED_IREF, RAID56,
/// SKINNY_METADATA, NO_HOLES, METADATA_UUID, RAID1C34, SIMPLE_QUOTA.
const INCOMPAT_KNOWN: u64 = 0xfff | (1 << 16);
/// `incompat` METADATA_UUID: tree blocks carry `metadata_uuid` instead of `fsid`.
const INCOMPAT_METADATA_UUID: u64 = 1 << 10;
/// Known `incompat` bits whose layouts this crate does not handle, by name.
const INCOMPAT_UNSUPPORTED: [(u64, &str); 3] =
    [(1 << 12, "ZONED"), (1 << 13, "EXTENT_TREE_V2"), (1 << 14, "RAID_STRIPE_TREE")];

/// Sector sizes the kernel accepts (4 KiB to 64 KiB, powers of two).
const SECTORSIZE_RANGE: std::ops::RangeInclusive<u32> = 4096..=65536;
/// `BTRFS_MAX_METADATA_BLOCKSIZE`.
const MAX_NODESIZE: u32 = 65536;

/// A tree root named by the superblock or a ROOT_ITEM: logical address and level.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Root {
    pub(crate) logical: u64,
    pub(crate) level: u8,
}

/// The validated primary superblock.
#[derive(Clone, Debug)]
pub(crate) struct Superblock {
    pub(crate) csum_type: CsumType,
    /// The UUID every tree block header carries (`metadata_uuid` with METADATA_UUID, else `fsid`).
    pub(crate) tree_fsid: [u8; 16],
    pub(crate) generation: u64,
    pub(crate) root: Root,
    pub(crate) chunk_root: Root,
    /// `None` when `log_root` is 0 (no fsync since the last commit).
    pub(crate) log_root: Option<Root>,
    pub(crate) total_bytes: u64,
    pub(crate) bytes_used: u64,
    pub(crate) num_devices: u64,
    pub(crate) sectorsize: u32,
    pub(crate) nodesize: u32,
    pub(crate) compat_ro: u64,
    /// The superblock's ERROR flag: the kernel met an error and forced the filesystem read-only.
    pub(crate) error_flag: bool,
    pub(crate) devid: u64,
    pub(crate) device_uuid: [u8; 16],
    pub(crate) device_bytes: u64,
    pub(crate) sys_chunk_array: Vec<u8>,
}

impl Superblock {
    /// Parses and validates the superblock read from [`SUPER_OFFSET`] of a volume of `volume_size` bytes.
    pub(crate) fn parse(block: &[u8], volume_size: u64) -> Result<Self, Error> {
        let at = |field: usize| SUPER_OFFSET + field as u64;
        let corrupt = |field: usize, problem: String| Error::corrupt("superblock", at(field), problem);
        let unsupported = |field: usize, problem: String| Error::unsupported("superblock", at(field), problem);
        let magic = array::<8>(block, MAGIC_AT);
        if &magic != MAGIC {
            return Err(corrupt(
                MAGIC_AT,
                format!("magic is {:?}, expected \"_BHRfS_M\"", String::from_utf8_lossy(&magic)),
            ));
        }
        let raw_csum_type = le16(block, CSUM_TYPE);
        let Some(csum_type) = CsumType::from_raw(raw_csum_type) else {
            return Err(unsupported(
                CSUM_TYPE,
                format!("checksum type {raw_csum_type} is not one of crc32c, xxhash64, sha256, blake2b"),
            ));
        };
        if !csum_type.verify(block) {
            return Err(corrupt(0, format!("{csum_type} checksum does not match its content")));
        }
        let bytenr = le64(block, BYTENR);
        if bytenr != SUPER_OFFSET {
            return Err(corrupt(BYTENR, format!("bytenr is {bytenr}, expected {SUPER_OFFSET} (the primary copy)")));
        }
        let flags = le64(block, FLAGS);
        if let Some((_, what)) = FLAGS_UNSUPPORTED.iter().find(|(bit, _)| flags & bit != 0) {
            return Err(unsupported(FLAGS, format!("the device is {what}")));
        }
        if flags & !FLAGS_KNOWN != 0 {
            return Err(unsupported(FLAGS, format!("unknown flags 0x{:x}", flags & !FLAGS_KNOWN)));
        }
        let incompat = le64(block, INCOMPAT_FLAGS);
        if let Some((_, name)) = INCOMPAT_UNSUPPORTED.iter().find(|(bit, _)| incompat & bit != 0) {
            return Err(unsupported(INCOMPAT_FLAGS, format!("incompat feature {name} is not supported")));
        }
        if incompat & !INCOMPAT_KNOWN != 0 {
            return Err(unsupported(
                INCOMPAT_FLAGS,
                format!("unknown incompat flags 0x{:x}", incompat & !INCOMPAT_KNOWN),
            ));
        }
        let compat_ro = le64(block, COMPAT_RO_FLAGS);
        if compat_ro & !COMPAT_RO_KNOWN != 0 {
            return Err(unsupported(
                COMPAT_RO_FLAGS,
                format!("unknown compat_ro flags 0x{:x}", compat_ro & !COMPAT_RO_KNOWN),
            ));
        }
        let sectorsize = le32(block, SECTORSIZE);
        if !sectorsize.is_power_of_two() || !SECTORSIZE_RANGE.contains(&sectorsize) {
            return Err(corrupt(
                SECTORSIZE,
                format!("sectorsize {sectorsize} is not a power of two from 4096 to 65536"),
            ));
        }
        let nodesize = le32(block, NODESIZE);
        if !nodesize.is_power_of_two() || nodesize < sectorsize || nodesize > MAX_NODESIZE {
            return Err(corrupt(
                NODESIZE,
                format!("nodesize {nodesize} is not a power of two from sectorsize {sectorsize} to {MAX_NODESIZE}"),
            ));
        }
        let sys_len = le32(block, SYS_CHUNK_ARRAY_SIZE) as usize;
        if sys_len > SYS_CHUNK_ARRAY_MAX {
            return Err(corrupt(
                SYS_CHUNK_ARRAY_SIZE,
                format!("sys_chunk_array_size {sys_len} is larger than the array's {SYS_CHUNK_ARRAY_MAX} bytes"),
            ));
        }
        let num_devices = le64(block, NUM_DEVICES);
        if num_devices == 0 {
            return Err(corrupt(NUM_DEVICES, "num_devices is 0".into()));
        }
        let fsid = array::<16>(block, FSID);
        if array::<16>(block, DEV_ITEM_FSID) != fsid {
            return Err(corrupt(DEV_ITEM_FSID, "dev_item.fsid differs from the superblock's fsid".into()));
        }
        let device_bytes = le64(block, DEV_ITEM_TOTAL_BYTES);
        if device_bytes > volume_size {
            return Err(corrupt(
                DEV_ITEM_TOTAL_BYTES,
                format!(
                    "dev_item.total_bytes {device_bytes} is past the end of the volume ({volume_size} bytes; truncated image?)"
                ),
            ));
        }
        let root = |addr: usize, level: usize| -> Result<Root, Error> {
            let root = Root { logical: le64(block, addr), level: u8_at(block, level) };
            if root.level >= MAX_LEVEL {
                return Err(corrupt(level, format!("tree level {} is not below {MAX_LEVEL}", root.level)));
            }
            Ok(root)
        };
        let log_root = root(LOG_ROOT, LOG_ROOT_LEVEL)?;
        let tree_fsid = if incompat & INCOMPAT_METADATA_UUID != 0 { array::<16>(block, METADATA_UUID) } else { fsid };
        Ok(Self {
            csum_type,
            tree_fsid,
            generation: le64(block, GENERATION),
            root: root(ROOT, ROOT_LEVEL)?,
            chunk_root: root(CHUNK_ROOT, CHUNK_ROOT_LEVEL)?,
            log_root: (log_root.logical != 0).then_some(log_root),
            total_bytes: le64(block, TOTAL_BYTES),
            bytes_used: le64(block, BYTES_USED),
            num_devices,
            sectorsize,
            nodesize,
            compat_ro,
            error_flag: flags & FLAG_ERROR != 0,
            devid: le64(block, DEV_ITEM_DEVID),
            device_uuid: array::<16>(block, DEV_ITEM + DEV_ITEM_UUID),
            device_bytes,
            sys_chunk_array: block.get(SYS_CHUNK_ARRAY..SYS_CHUNK_ARRAY + sys_len).unwrap_or_default().to_vec(),
        })
    }
}

/// The superblock copies inside a device of `size` bytes: 64 KiB, 64 MiB, 256 GiB
/// (`btrfs_sb_offset`), each [`SUPER_LEN`] bytes.
pub(crate) fn mirrors(size: u64) -> impl Iterator<Item = std::ops::Range<u64>> {
    [SUPER_OFFSET, 64 << 20, 256 << 30]
        .into_iter()
        .map(|start| start..start + SUPER_LEN as u64)
        .filter(move |range| range.end <= size)
}
