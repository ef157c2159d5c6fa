//! The boot sector and its BIOS Parameter Block (fatgen103 §3, "Boot Sector and BPB Structure"):
//! the geometry of the volume, validated, and the FAT type decided by cluster count exactly as
//! the specification does (§3.5 "FAT Type Determination"), never by the `BS_FilSysType` label.

use crate::Error;
use imgstream_volume::fields::{le16, le32, u8_at};
use std::fmt;

/// Bytes of the boot sector we parse (the BPB lies in the first 90; the signature at 510).
pub(crate) const BOOT_SECTOR_LEN: usize = 512;

// Field offsets, named as in fatgen103.
const BS_JMP_BOOT: usize = 0;
const BS_OEM_NAME: usize = 3;
const BPB_BYTS_PER_SEC: usize = 11;
const BPB_SEC_PER_CLUS: usize = 13;
const BPB_RSVD_SEC_CNT: usize = 14;
const BPB_NUM_FATS: usize = 16;
const BPB_ROOT_ENT_CNT: usize = 17;
const BPB_TOT_SEC16: usize = 19;
const BPB_MEDIA: usize = 21;
const BPB_FAT_SZ16: usize = 22;
const BPB_TOT_SEC32: usize = 32;
/// FAT12/16: `BS_Reserved1`, which Windows NT and Linux use as a state byte (bit 0: dirty).
const BS_STATE_16: usize = 37;
const BS_BOOT_SIG_16: usize = 38;
const BS_VOL_LAB_16: usize = 43;
const BPB_FAT_SZ32: usize = 36;
const BPB_EXT_FLAGS: usize = 40;
const BPB_FS_VER: usize = 42;
const BPB_ROOT_CLUS: usize = 44;
const BPB_FS_INFO: usize = 48;
const BPB_BK_BOOT_SEC: usize = 50;
/// FAT32: `BS_Reserved1`, the same state byte as [`BS_STATE_16`].
const BS_STATE_32: usize = 65;
const BS_BOOT_SIG_32: usize = 66;
const BS_VOL_LAB_32: usize = 71;
/// The two bytes 0x55 0xAA, at offset 510 whatever the sector size (fatgen103 §3.1 note).
const SIGNATURE: usize = 510;

/// Extended boot signature: the volume label fields that follow are valid.
const EXTENDED_BOOT_SIGNATURE: u8 = 0x29;
/// The state byte's "volume not cleanly unmounted" bit (Linux `FAT_STATE_DIRTY`).
const STATE_DIRTY: u8 = 0x01;

/// Sector sizes the specification allows.
const VALID_BYTES_PER_SECTOR: [u32; 4] = [512, 1024, 2048, 4096];
/// Sectors per cluster: a power of two from 1 to 128.
const MAX_SECTORS_PER_CLUSTER: u32 = 128;
/// Media descriptors the specification allows (and Linux `fat_valid_media` accepts).
fn valid_media(media: u8) -> bool {
    media == 0xF0 || media >= 0xF8
}
/// A FAT12 volume has fewer clusters than this; fatgen103 §3.5.
pub(crate) const FAT12_MAX_CLUSTERS: u64 = 4085;
/// A FAT16 volume has fewer clusters than this; fatgen103 §3.5.
pub(crate) const FAT16_MAX_CLUSTERS: u64 = 65525;
/// Highest cluster count FAT32 can address: cluster numbers run to 0x0FFFFFF6 (0x0FFFFFF7 marks
/// a bad cluster), and numbering starts at 2.
pub(crate) const FAT32_MAX_CLUSTERS: u64 = 0x0FFF_FFF5;
/// `BPB_FSInfo` / `BPB_BkBootSec` values meaning "there is none".
const NO_SECTOR: [u16; 2] = [0, 0xFFFF];

/// FAT12, FAT16 or FAT32, by cluster count.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FatType {
    /// Fewer than 4085 clusters; 12-bit entries.
    Fat12,
    /// Fewer than 65525 clusters; 16-bit entries.
    Fat16,
    /// 28-bit entries stored in 32 bits.
    Fat32,
}

impl FatType {
    /// Bits per FAT entry.
    pub fn entry_bits(self) -> u64 {
        match self {
            Self::Fat12 => 12,
            Self::Fat16 => 16,
            Self::Fat32 => 32,
        }
    }

    /// The value that marks a bad cluster (0xFF7, 0xFFF7, 0x0FFFFFF7).
    pub fn bad_cluster(self) -> u32 {
        match self {
            Self::Fat12 => 0xFF7,
            Self::Fat16 => 0xFFF7,
            Self::Fat32 => 0x0FFF_FFF7,
        }
    }

    /// The bits of an entry that hold a cluster number (FAT32's top 4 bits are reserved).
    pub fn link_mask(self) -> u32 {
        match self {
            Self::Fat12 => 0xFFF,
            Self::Fat16 => 0xFFFF,
            Self::Fat32 => 0x0FFF_FFFF,
        }
    }

    /// The filesystem name used in [`imgstream_volume::Allocation::filesystem`].
    pub fn name(self) -> &'static str {
        match self {
            Self::Fat12 => "fat12",
            Self::Fat16 => "fat16",
            Self::Fat32 => "fat32",
        }
    }
}

impl fmt::Display for FatType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Fat12 => "FAT12",
            Self::Fat16 => "FAT16",
            Self::Fat32 => "FAT32",
        })
    }
}

/// The cheap signature check behind [`crate::detect`]: a jump instruction, 0x55AA, a valid sector
/// size and media byte, and not an NTFS or exFAT boot sector (whose jump, signature and, for
/// NTFS, sector size look the same). Further fields are left to [`BootSector::parse`], so that a
/// FAT volume with one corrupt field gets a precise error instead of a silent raw copy.
pub(crate) fn looks_like_fat(sector: &[u8]) -> bool {
    let jump = u8_at(sector, BS_JMP_BOOT);
    let oem = sector.get(BS_OEM_NAME..BS_OEM_NAME + 8).unwrap_or_default();
    (jump == 0xEB || jump == 0xE9)
        && sector.get(SIGNATURE..SIGNATURE + 2) == Some(&[0x55, 0xAA][..])
        && VALID_BYTES_PER_SECTOR.contains(&u32::from(le16(sector, BPB_BYTS_PER_SEC)))
        && valid_media(u8_at(sector, BPB_MEDIA))
        && oem != b"NTFS    "
        && oem != b"EXFAT   "
}

/// The validated geometry of a FAT volume. Sector and cluster numbers are as in the BPB; byte
/// offsets are volume-relative.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BootSector {
    /// FAT type, by cluster count.
    pub fat_type: FatType,
    /// `BPB_BytsPerSec`.
    pub bytes_per_sector: u64,
    /// `BPB_SecPerClus`.
    pub sectors_per_cluster: u64,
    /// `BPB_RsvdSecCnt`.
    pub reserved_sectors: u64,
    /// `BPB_NumFATs`.
    pub num_fats: u64,
    /// `BPB_RootEntCnt` (0 on FAT32).
    pub root_entries: u64,
    /// `BPB_TotSec16` or `BPB_TotSec32`.
    pub total_sectors: u64,
    /// `BPB_FATSz16` or `BPB_FATSz32`, in sectors.
    pub fat_size: u64,
    /// Number of data clusters (numbered 2 to `cluster_count + 1`).
    pub cluster_count: u64,
    /// FAT32 `BPB_RootClus`; 0 on FAT12/16.
    pub root_cluster: u32,
    /// FAT32 `BPB_FSInfo`; `None` on FAT12/16 or if absent.
    pub fs_info_sector: Option<u64>,
    /// FAT32 `BPB_BkBootSec`; `None` on FAT12/16 or if absent.
    pub backup_boot_sector: Option<u64>,
    /// FAT32 `BPB_ExtFlags` bit 7: only one FAT (bits 0-3) is active, the others are not mirrored.
    pub active_fat_only: Option<u64>,
    /// The state byte's dirty bit (Windows NT / Linux).
    pub state_dirty: bool,
    /// `BS_VolLab`, trimmed, if the extended boot signature is present.
    pub label: Option<String>,
}

impl BootSector {
    /// Parses and validates the boot sector of a volume of `volume_size` bytes.
    pub fn parse(sector: &[u8], volume_size: u64) -> Result<Self, Error> {
        let bad = |offset: usize, problem: String| Error::corrupt("boot sector", offset as u64, problem);
        if sector.len() < BOOT_SECTOR_LEN {
            return Err(bad(0, format!("only {} bytes, a boot sector needs {BOOT_SECTOR_LEN}", sector.len())));
        }
        if sector.get(SIGNATURE..SIGNATURE + 2) != Some(&[0x55, 0xAA][..]) {
            return Err(bad(SIGNATURE, format!("signature is 0x{:04X}, expected 0xAA55", le16(sector, SIGNATURE))));
        }
        let bytes_per_sector = u64::from(le16(sector, BPB_BYTS_PER_SEC));
        if !VALID_BYTES_PER_SECTOR.iter().any(|&v| u64::from(v) == bytes_per_sector) {
            return Err(bad(
                BPB_BYTS_PER_SEC,
                format!("bytes per sector {bytes_per_sector} is not 512, 1024, 2048 or 4096"),
            ));
        }
        let sectors_per_cluster = u64::from(u8_at(sector, BPB_SEC_PER_CLUS));
        if sectors_per_cluster == 0 {
            return Err(bad(BPB_SEC_PER_CLUS, "sectors per cluster is 0 (zero cluster size)".into()));
        }
        if !sectors_per_cluster.is_power_of_two() || sectors_per_cluster > u64::from(MAX_SECTORS_PER_CLUSTER) {
            return Err(bad(
                BPB_SEC_PER_CLUS,
                format!(
                    "sectors per cluster {sectors_per_cluster} is not a power of two up to {MAX_SECTORS_PER_CLUSTER}"
                ),
            ));
        }
        let reserved_sectors = u64::from(le16(sector, BPB_RSVD_SEC_CNT));
        if reserved_sectors == 0 {
            return Err(bad(
                BPB_RSVD_SEC_CNT,
                "reserved sector count is 0 (the boot sector itself is reserved)".into(),
            ));
        }
        let num_fats = u64::from(u8_at(sector, BPB_NUM_FATS));
        if num_fats == 0 {
            return Err(bad(BPB_NUM_FATS, "number of FATs is 0".into()));
        }
        let media = u8_at(sector, BPB_MEDIA);
        if !valid_media(media) {
            return Err(bad(BPB_MEDIA, format!("media descriptor 0x{media:02X} is not 0xF0 or 0xF8..0xFF")));
        }
        let root_entries = u64::from(le16(sector, BPB_ROOT_ENT_CNT));
        let total_sectors_16 = u64::from(le16(sector, BPB_TOT_SEC16));
        let total_sectors =
            if total_sectors_16 != 0 { total_sectors_16 } else { u64::from(le32(sector, BPB_TOT_SEC32)) };
        if total_sectors == 0 {
            return Err(bad(BPB_TOT_SEC16, "total sector count is 0 in both BPB_TotSec16 and BPB_TotSec32".into()));
        }
        let fat_size_16 = u64::from(le16(sector, BPB_FAT_SZ16));
        let fat32_layout = fat_size_16 == 0;
        let fat_size = if fat32_layout { u64::from(le32(sector, BPB_FAT_SZ32)) } else { fat_size_16 };
        if fat_size == 0 {
            return Err(bad(BPB_FAT_SZ32, "FAT size is 0 in both BPB_FATSz16 and BPB_FATSz32".into()));
        }
        // All products below are of values below 2^32, so they fit in u64.
        let volume_bytes = total_sectors * bytes_per_sector;
        if volume_bytes > volume_size {
            return Err(bad(
                if total_sectors_16 != 0 { BPB_TOT_SEC16 } else { BPB_TOT_SEC32 },
                format!(
                    "{total_sectors} sectors of {bytes_per_sector} bytes ({volume_bytes} bytes) do not fit in the volume of {volume_size} bytes (truncated image?)"
                ),
            ));
        }
        let root_dir_sectors = (root_entries * 32).div_ceil(bytes_per_sector);
        let metadata_sectors = reserved_sectors + num_fats * fat_size + root_dir_sectors;
        if metadata_sectors >= total_sectors {
            return Err(bad(
                if fat32_layout { BPB_FAT_SZ32 } else { BPB_FAT_SZ16 },
                format!(
                    "reserved sectors {reserved_sectors} + {num_fats} FATs of {fat_size} sectors + {root_dir_sectors} root directory sectors reach sector {metadata_sectors}, past the last sector {}",
                    total_sectors - 1
                ),
            ));
        }
        let cluster_count = (total_sectors - metadata_sectors) / sectors_per_cluster;
        if cluster_count == 0 {
            return Err(bad(
                BPB_SEC_PER_CLUS,
                format!(
                    "no room for a single cluster of {sectors_per_cluster} sectors after sector {metadata_sectors}"
                ),
            ));
        }
        let fat_type = if cluster_count < FAT12_MAX_CLUSTERS {
            FatType::Fat12
        } else if cluster_count < FAT16_MAX_CLUSTERS {
            FatType::Fat16
        } else {
            FatType::Fat32
        };
        if fat32_layout != (fat_type == FatType::Fat32) {
            return Err(bad(
                BPB_FAT_SZ16,
                format!(
                    "cluster count {cluster_count} makes this {fat_type} (FAT12 below {FAT12_MAX_CLUSTERS}, FAT16 below {FAT16_MAX_CLUSTERS}), but BPB_FATSz16 = {fat_size_16} says {}",
                    if fat32_layout { "FAT32" } else { "FAT12/16" }
                ),
            ));
        }
        if cluster_count > FAT32_MAX_CLUSTERS {
            return Err(bad(
                BPB_TOT_SEC32,
                format!("cluster count {cluster_count} is out of range (FAT32 allows at most {FAT32_MAX_CLUSTERS})"),
            ));
        }
        let fat_entries = fat_size * bytes_per_sector * 8 / fat_type.entry_bits();
        if fat_entries < cluster_count + 2 {
            return Err(bad(
                if fat32_layout { BPB_FAT_SZ32 } else { BPB_FAT_SZ16 },
                format!(
                    "a FAT of {fat_size} sectors holds {fat_entries} entries, fewer than the {} needed for cluster count {cluster_count} (cluster count out of range)",
                    cluster_count + 2
                ),
            ));
        }
        let mut boot = Self {
            fat_type,
            bytes_per_sector,
            sectors_per_cluster,
            reserved_sectors,
            num_fats,
            root_entries,
            total_sectors,
            fat_size,
            cluster_count,
            root_cluster: 0,
            fs_info_sector: None,
            backup_boot_sector: None,
            active_fat_only: None,
            state_dirty: false,
            label: None,
        };
        let (state, boot_sig, label) = if fat_type == FatType::Fat32 {
            boot.parse_fat32(sector)?;
            (BS_STATE_32, BS_BOOT_SIG_32, BS_VOL_LAB_32)
        } else {
            if root_entries == 0 {
                return Err(bad(
                    BPB_ROOT_ENT_CNT,
                    format!("{fat_type} needs root directory entries, BPB_RootEntCnt is 0"),
                ));
            }
            (BS_STATE_16, BS_BOOT_SIG_16, BS_VOL_LAB_16)
        };
        if u8_at(sector, boot_sig) == EXTENDED_BOOT_SIGNATURE {
            boot.state_dirty = u8_at(sector, state) & STATE_DIRTY != 0;
            boot.label = sector
                .get(label..label + 11)
                .map(|l| String::from_utf8_lossy(l).trim_end_matches([' ', '\0']).to_owned())
                .filter(|l| !l.is_empty());
        }
        Ok(boot)
    }

    /// The FAT32 part of the BPB (fatgen103 §3.3).
    fn parse_fat32(&mut self, sector: &[u8]) -> Result<(), Error> {
        let bad = |offset: usize, problem: String| Error::corrupt("boot sector", offset as u64, problem);
        if self.root_entries != 0 {
            return Err(bad(BPB_ROOT_ENT_CNT, format!("FAT32 needs BPB_RootEntCnt = 0, found {}", self.root_entries)));
        }
        let version = le16(sector, BPB_FS_VER);
        if version != 0 {
            return Err(Error::unsupported(
                "boot sector",
                BPB_FS_VER as u64,
                format!("FAT32 version {}.{} is newer than 0.0", version >> 8, version & 0xFF),
            ));
        }
        let root_cluster = le32(sector, BPB_ROOT_CLUS);
        if root_cluster < 2 || u64::from(root_cluster) > self.cluster_count + 1 {
            return Err(bad(
                BPB_ROOT_CLUS,
                format!("root directory cluster {root_cluster} is outside clusters 2..={}", self.cluster_count + 1),
            ));
        }
        self.root_cluster = root_cluster;
        for (offset, name) in [(BPB_FS_INFO, "FSInfo"), (BPB_BK_BOOT_SEC, "backup boot")] {
            let value = le16(sector, offset);
            if NO_SECTOR.contains(&value) {
                continue;
            }
            if u64::from(value) >= self.reserved_sectors {
                return Err(bad(
                    offset,
                    format!("{name} sector {value} lies outside the {} reserved sectors", self.reserved_sectors),
                ));
            }
            if offset == BPB_FS_INFO {
                self.fs_info_sector = Some(u64::from(value));
            } else {
                self.backup_boot_sector = Some(u64::from(value));
            }
        }
        let ext_flags = le16(sector, BPB_EXT_FLAGS);
        if ext_flags & 0x80 != 0 {
            self.active_fat_only = Some(u64::from(ext_flags & 0x0F));
        }
        Ok(())
    }

    /// Bytes per cluster.
    pub fn cluster_size(&self) -> u64 {
        self.sectors_per_cluster * self.bytes_per_sector
    }

    /// Byte offset of FAT number `index` (0-based).
    pub fn fat_offset(&self, index: u64) -> u64 {
        (self.reserved_sectors + index * self.fat_size) * self.bytes_per_sector
    }

    /// Bytes of one FAT that hold entries 0 to `cluster_count + 1`.
    pub fn fat_bytes_used(&self) -> u64 {
        ((self.cluster_count + 2) * self.fat_type.entry_bits()).div_ceil(8)
    }

    /// Byte offset of cluster 2, the first data cluster: everything before it (reserved
    /// sectors, FATs, FAT12/16 root directory) is metadata.
    pub fn data_offset(&self) -> u64 {
        let root_dir_sectors = (self.root_entries * 32).div_ceil(self.bytes_per_sector);
        (self.reserved_sectors + self.num_fats * self.fat_size + root_dir_sectors) * self.bytes_per_sector
    }

    /// One past the last byte of the last cluster; the rest of the volume is outside the FAT.
    pub fn data_end(&self) -> u64 {
        self.data_offset() + self.cluster_count * self.cluster_size()
    }
}
