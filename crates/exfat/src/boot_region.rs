//! The main and backup boot regions (exFAT specification §3): 12 sectors each, the boot sector
//! (§3.1) first and the boot checksum sector (§3.4) last. Every field that locates the FAT and
//! the cluster heap is validated here against the spec's ranges and the volume's size.

use crate::Error;
use imgstream_blockio::ReadAt;
use imgstream_volume::fields::{le16, le32, le64, u8_at};
use imgstream_volume::read_at;

/// Sectors in one boot region; the backup region follows the main one.
pub(crate) const REGION_SECTORS: u64 = 12;
/// Sectors covered by the boot checksum (all but the checksum sector itself).
const CHECKSUMMED_SECTORS: u64 = 11;
/// Smallest sector size (2^9): enough to hold the boot sector's fields.
pub(crate) const MIN_SECTOR: usize = 512;

// Boot sector field offsets, named as in the specification (§3.1, table 3).
const JUMP_BOOT: usize = 0;
const FILE_SYSTEM_NAME: usize = 3;
const MUST_BE_ZERO: usize = 11;
const MUST_BE_ZERO_END: usize = 64;
const VOLUME_LENGTH: usize = 72;
const FAT_OFFSET: usize = 80;
const FAT_LENGTH: usize = 84;
const CLUSTER_HEAP_OFFSET: usize = 88;
const CLUSTER_COUNT: usize = 92;
const FIRST_CLUSTER_OF_ROOT_DIRECTORY: usize = 96;
const VOLUME_SERIAL_NUMBER: usize = 100;
const FILE_SYSTEM_REVISION: usize = 104;
/// `VolumeFlags` and `PercentInUse` change in place, so the checksum skips them.
const VOLUME_FLAGS: usize = 106;
const BYTES_PER_SECTOR_SHIFT: usize = 108;
const SECTORS_PER_CLUSTER_SHIFT: usize = 109;
const NUMBER_OF_FATS: usize = 110;
const PERCENT_IN_USE: usize = 112;
const BOOT_SIGNATURE: usize = 510;

/// The signature at byte 3.
pub(crate) const EXFAT_NAME: &[u8; 8] = b"EXFAT   ";
/// `BytesPerSectorShift` range: 512 B to 4 KiB sectors.
const SECTOR_SHIFTS: std::ops::RangeInclusive<u8> = 9..=12;
/// Clusters are at most 32 MiB: `BytesPerSectorShift + SectorsPerClusterShift <= 25`.
const MAX_CLUSTER_SHIFT: u8 = 25;
/// Cluster numbers stop below 0xFFFFFFF7 (bad cluster); numbering starts at 2.
pub(crate) const MAX_CLUSTER_COUNT: u64 = 0xFFFF_FFF5;
/// The FAT starts after the two boot regions.
const MIN_FAT_OFFSET: u64 = 2 * REGION_SECTORS;

/// `VolumeFlags` bits (§3.1.13).
pub(crate) const ACTIVE_FAT: u16 = 0x0001;
pub(crate) const VOLUME_DIRTY: u16 = 0x0002;
pub(crate) const MEDIA_FAILURE: u16 = 0x0004;

/// The signature check behind [`crate::detect`]: "EXFAT   " at byte 3.
pub(crate) fn has_signature(sector: &[u8]) -> bool {
    sector.get(FILE_SYSTEM_NAME..FILE_SYSTEM_NAME + 8) == Some(&EXFAT_NAME[..])
}

/// The validated geometry of an exFAT volume. Offsets are volume-relative bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BootSector {
    /// Bytes per sector.
    pub sector_size: u64,
    /// Bytes per cluster.
    pub cluster_size: u64,
    /// `VolumeLength`, in sectors.
    pub volume_length: u64,
    /// `FatOffset`, in sectors.
    pub fat_offset: u64,
    /// `FatLength`, in sectors.
    pub fat_length: u64,
    /// `NumberOfFats`: 1, or 2 with TexFAT.
    pub number_of_fats: u64,
    /// `ClusterHeapOffset`, in sectors.
    pub cluster_heap_offset: u64,
    /// `ClusterCount`.
    pub cluster_count: u64,
    /// `FirstClusterOfRootDirectory`.
    pub root_cluster: u32,
    /// `VolumeFlags`.
    pub volume_flags: u16,
    /// `PercentInUse` (0xFF: not known).
    pub percent_in_use: u8,
    /// `VolumeSerialNumber`.
    pub serial: u32,
    /// `FileSystemRevision` as (major, minor).
    pub revision: (u8, u8),
}

impl BootSector {
    /// Parses and validates the main boot sector of a volume of `volume_size` bytes.
    pub fn parse(sector: &[u8], volume_size: u64) -> Result<Self, Error> {
        let bad = |offset: usize, problem: String| Error::corrupt("main boot sector", offset as u64, problem);
        if sector.len() < MIN_SECTOR {
            return Err(bad(0, format!("only {} bytes, a boot sector needs {MIN_SECTOR}", sector.len())));
        }
        if !has_signature(sector) {
            return Err(bad(FILE_SYSTEM_NAME, "FileSystemName is not \"EXFAT   \"".into()));
        }
        let jump = sector.get(JUMP_BOOT..JUMP_BOOT + 3).unwrap_or_default();
        if jump != [0xEB, 0x76, 0x90] {
            return Err(bad(JUMP_BOOT, format!("JumpBoot is {jump:02X?}, expected [EB, 76, 90]")));
        }
        if let Some(at) = sector.get(MUST_BE_ZERO..MUST_BE_ZERO_END).and_then(|z| z.iter().position(|&b| b != 0)) {
            return Err(bad(MUST_BE_ZERO + at, "MustBeZero field is not zero (a FAT BPB?)".into()));
        }
        if le16(sector, BOOT_SIGNATURE) != 0xAA55 {
            return Err(bad(
                BOOT_SIGNATURE,
                format!("BootSignature is 0x{:04X}, expected 0xAA55", le16(sector, BOOT_SIGNATURE)),
            ));
        }
        let revision = le16(sector, FILE_SYSTEM_REVISION);
        let revision = ((revision >> 8) as u8, (revision & 0xFF) as u8);
        if revision.0 != 1 {
            return Err(Error::unsupported(
                "main boot sector",
                FILE_SYSTEM_REVISION as u64,
                format!("FileSystemRevision {}.{:02}: only 1.xx is known", revision.0, revision.1),
            ));
        }
        let sector_shift = u8_at(sector, BYTES_PER_SECTOR_SHIFT);
        if !SECTOR_SHIFTS.contains(&sector_shift) {
            return Err(bad(BYTES_PER_SECTOR_SHIFT, format!("BytesPerSectorShift {sector_shift} is outside 9..=12")));
        }
        let cluster_shift = u8_at(sector, SECTORS_PER_CLUSTER_SHIFT);
        if cluster_shift > MAX_CLUSTER_SHIFT - sector_shift {
            return Err(bad(
                SECTORS_PER_CLUSTER_SHIFT,
                format!(
                    "SectorsPerClusterShift {cluster_shift} makes clusters larger than 32 MiB (at most {})",
                    MAX_CLUSTER_SHIFT - sector_shift
                ),
            ));
        }
        let number_of_fats = u64::from(u8_at(sector, NUMBER_OF_FATS));
        if !(1..=2).contains(&number_of_fats) {
            return Err(bad(NUMBER_OF_FATS, format!("NumberOfFats {number_of_fats} is not 1 or 2")));
        }
        let sector_size = 1u64 << sector_shift;
        let sectors_per_cluster = 1u64 << cluster_shift;
        let volume_length = le64(sector, VOLUME_LENGTH);
        // Checked: VolumeLength is a raw 64-bit count.
        let volume_bytes = volume_length.checked_mul(sector_size);
        if volume_bytes.is_none_or(|bytes| bytes > volume_size) {
            return Err(bad(
                VOLUME_LENGTH,
                format!(
                    "VolumeLength {volume_length} sectors of {sector_size} bytes does not fit in the volume of {volume_size} bytes (truncated image?)"
                ),
            ));
        }
        let fat_offset = u64::from(le32(sector, FAT_OFFSET));
        let fat_length = u64::from(le32(sector, FAT_LENGTH));
        let cluster_heap_offset = u64::from(le32(sector, CLUSTER_HEAP_OFFSET));
        let cluster_count = u64::from(le32(sector, CLUSTER_COUNT));
        if fat_offset < MIN_FAT_OFFSET {
            return Err(bad(
                FAT_OFFSET,
                format!("FatOffset {fat_offset} lies inside the boot regions (at least {MIN_FAT_OFFSET})"),
            ));
        }
        // u32 values: these sums and products fit in u64.
        let fats_end = fat_offset + fat_length * number_of_fats;
        if fat_length == 0 || fats_end > cluster_heap_offset {
            return Err(bad(
                FAT_LENGTH,
                format!(
                    "{number_of_fats} FATs of {fat_length} sectors from sector {fat_offset} end at sector {fats_end}, past ClusterHeapOffset {cluster_heap_offset}"
                ),
            ));
        }
        if cluster_count == 0 || cluster_count > MAX_CLUSTER_COUNT {
            return Err(bad(
                CLUSTER_COUNT,
                format!("ClusterCount {cluster_count} is out of range (1..={MAX_CLUSTER_COUNT})"),
            ));
        }
        let heap_end = cluster_heap_offset + cluster_count * sectors_per_cluster;
        if heap_end > volume_length {
            return Err(bad(
                CLUSTER_COUNT,
                format!(
                    "ClusterCount {cluster_count} clusters of {sectors_per_cluster} sectors from sector {cluster_heap_offset} end at sector {heap_end}, past VolumeLength {volume_length} (cluster count out of range)"
                ),
            ));
        }
        if (cluster_count + 2) * 4 > fat_length * sector_size {
            return Err(bad(
                FAT_LENGTH,
                format!("FatLength {fat_length} sectors cannot hold {} entries", cluster_count + 2),
            ));
        }
        let root_cluster = le32(sector, FIRST_CLUSTER_OF_ROOT_DIRECTORY);
        if root_cluster < 2 || u64::from(root_cluster) > cluster_count + 1 {
            return Err(bad(
                FIRST_CLUSTER_OF_ROOT_DIRECTORY,
                format!("FirstClusterOfRootDirectory {root_cluster} is outside clusters 2..={}", cluster_count + 1),
            ));
        }
        Ok(Self {
            sector_size,
            cluster_size: sector_size * sectors_per_cluster,
            volume_length,
            fat_offset,
            fat_length,
            number_of_fats,
            cluster_heap_offset,
            cluster_count,
            root_cluster,
            volume_flags: le16(sector, VOLUME_FLAGS),
            percent_in_use: u8_at(sector, PERCENT_IN_USE),
            serial: le32(sector, VOLUME_SERIAL_NUMBER),
            revision,
        })
    }

    /// Byte offset of the cluster heap (cluster 2).
    pub fn heap_start(&self) -> u64 {
        self.cluster_heap_offset * self.sector_size
    }

    /// One past the last byte of the last cluster.
    pub fn heap_end(&self) -> u64 {
        self.heap_start() + self.cluster_count * self.cluster_size
    }

    /// Byte offset of `cluster` (2 <= cluster <= cluster_count + 1).
    pub fn cluster_offset(&self, cluster: u64) -> u64 {
        self.heap_start() + cluster.saturating_sub(2) * self.cluster_size
    }

    /// Byte offset of the FAT the volume uses (`ActiveFat` selects the second with TexFAT).
    pub fn active_fat_offset(&self) -> u64 {
        let active = if self.number_of_fats == 2 && self.volume_flags & ACTIVE_FAT != 0 { 1 } else { 0 };
        (self.fat_offset + active * self.fat_length) * self.sector_size
    }
}

/// The boot checksum of a region (§3.4): every byte of sectors 0-10 except `VolumeFlags` and
/// `PercentInUse` in sector 0, rotated right one bit and added.
pub(crate) fn boot_checksum(region: &[u8], sector_size: usize) -> u32 {
    let mut checksum = 0u32;
    for (index, &byte) in region.iter().take(sector_size * CHECKSUMMED_SECTORS as usize).enumerate() {
        if index == VOLUME_FLAGS || index == VOLUME_FLAGS + 1 || index == PERCENT_IN_USE {
            continue;
        }
        checksum = checksum.rotate_right(1).wrapping_add(u32::from(byte));
    }
    checksum
}

/// Reads the region at `first_sector` and checks that its sector 11 repeats the checksum of
/// sectors 0-10. Returns the region's bytes.
pub(crate) fn read_region(
    volume: &dyn ReadAt,
    structure: &'static str,
    first_sector: u64,
    sector_size: u64,
) -> Result<Vec<u8>, Error> {
    let offset = first_sector * sector_size;
    let mut region = vec![0u8; usize::try_from(REGION_SECTORS * sector_size).unwrap_or(0)];
    read_at(volume, || structure, offset, &mut region)?;
    let sector_size = usize::try_from(sector_size).unwrap_or(MIN_SECTOR);
    let expected = boot_checksum(&region, sector_size);
    let checksum_sector = region.get(sector_size * CHECKSUMMED_SECTORS as usize..).unwrap_or_default();
    if let Some(at) = checksum_sector.chunks(4).position(|c| c != expected.to_le_bytes()) {
        let at = offset + (sector_size * CHECKSUMMED_SECTORS as usize + at * 4) as u64;
        let found = le32(checksum_sector, (at - offset) as usize - sector_size * CHECKSUMMED_SECTORS as usize);
        return Err(Error::corrupt(
            structure,
            at,
            format!("boot checksum is 0x{found:08X}, sectors 0-10 sum to 0x{expected:08X}"),
        ));
    }
    Ok(region)
}

/// Whether two boot sectors agree, ignoring the fields that change in place.
pub(crate) fn same_boot_sector(main: &[u8], backup: &[u8]) -> bool {
    let skip = |i: usize| i == VOLUME_FLAGS || i == VOLUME_FLAGS + 1 || i == PERCENT_IN_USE;
    main.len() == backup.len() && main.iter().zip(backup).enumerate().all(|(i, (a, b))| a == b || skip(i))
}
