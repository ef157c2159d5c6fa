//! The NTFS boot sector ($Boot, sector 0): the volume geometry, validated by us before the
//! `ntfs` crate sees the volume.
//!
//! The crate checks some of these fields itself, but not all of them against the volume it is
//! given (total sectors, MFT position) nor the record size when it is given as a cluster count
//! (which it would then allocate). Checking here also gives every error the same shape: the
//! field, its byte offset, the value found and the range allowed.
//!
//! Layout (little-endian): <https://en.wikipedia.org/wiki/NTFS#Partition_Boot_Sector_(VBR)>,
//! ntfs-3g `include/ntfs-3g/bootsect.h`.

use crate::error::Error;
use imgstream_blockio::ReadAt;

/// Bytes 3..11: the OEM id that marks an NTFS boot sector.
pub(crate) const OEM_ID: &[u8; 8] = b"NTFS    ";
const OEM_ID_OFFSET: usize = 3;
/// u16: bytes per sector.
const BYTES_PER_SECTOR: usize = 0x0B;
/// u8: sectors per cluster, or (above 128) a negated power of two.
const SECTORS_PER_CLUSTER: usize = 0x0D;
/// FAT's reserved sectors, number of FATs, root entries and 16-bit sector count; its FAT size;
/// its 32-bit sector count: all zero on NTFS.
const FAT_ONLY_FIELDS: [std::ops::Range<usize>; 3] = [0x0E..0x15, 0x16..0x18, 0x20..0x24];
/// u64: sectors in the volume, not counting the backup boot sector that follows them.
const TOTAL_SECTORS: usize = 0x28;
/// u64: first cluster of $MFT.
const MFT_LCN: usize = 0x30;
/// u64: first cluster of $MFTMirr.
const MFT_MIRROR_LCN: usize = 0x38;
/// i8: clusters per MFT record, or (negative) log2 of its size in bytes.
const CLUSTERS_PER_MFT_RECORD: usize = 0x40;
/// i8: clusters per index record, or (negative) log2 of its size in bytes.
const CLUSTERS_PER_INDEX_RECORD: usize = 0x44;
/// u64: volume serial number.
const SERIAL_NUMBER: usize = 0x48;
/// The boot sector signature 0x55 0xAA at bytes 510..512, whatever the sector size.
const SIGNATURE_OFFSET: usize = 510;

/// The part of sector 0 we read: the signature sits at its end even with 4096-byte sectors.
pub(crate) const BOOT_SECTOR_SIZE: usize = 512;
/// Windows supports 512- to 4096-byte sectors (so does the `ntfs` crate).
const MIN_SECTOR_SIZE: u64 = 512;
const MAX_SECTOR_SIZE: u64 = 4096;
/// Windows supports clusters of 512 bytes to 2 MiB.
const MIN_CLUSTER_SIZE: u64 = 512;
const MAX_CLUSTER_SIZE: u64 = 2 << 20;
/// MFT records are 1 KiB (4 KiB on some 4Kn volumes); the `ntfs` crate allocates one per record
/// read, so anything else is refused rather than trusted.
const MIN_RECORD_SIZE: u64 = 1024;
const MAX_RECORD_SIZE: u64 = 4096;
/// Index records are 4 KiB in practice; 64 KiB bounds what a hostile field can make us allocate.
const MIN_INDEX_RECORD_SIZE: u64 = 512;
pub(crate) const MAX_INDEX_RECORD_SIZE: u64 = 64 << 10;

/// The validated geometry of an NTFS volume.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct BootSector {
    /// Bytes per sector: a power of two in 512..=4096.
    pub(crate) sector_size: u64,
    /// Bytes per cluster: a power of two in 512..=2 MiB, at least one sector.
    pub(crate) cluster_size: u64,
    /// Sectors in the volume; `total_sectors * sector_size` fits in the volume.
    pub(crate) total_sectors: u64,
    /// Clusters covered by $Bitmap: the whole clusters inside `total_sectors`.
    pub(crate) total_clusters: u64,
    /// First cluster of $MFT, inside the volume.
    pub(crate) mft_lcn: u64,
    /// First cluster of $MFTMirr, inside the volume.
    pub(crate) mft_mirror_lcn: u64,
    /// Bytes per MFT record: a power of two in 1024..=4096.
    pub(crate) record_size: u64,
    /// Volume serial number.
    pub(crate) serial_number: u64,
}

impl BootSector {
    /// Whether `sector` (the first bytes of a volume) carries the NTFS OEM id.
    pub(crate) fn has_signature(sector: &[u8]) -> bool {
        sector.get(OEM_ID_OFFSET..OEM_ID_OFFSET + OEM_ID.len()) == Some(OEM_ID.as_slice())
    }

    /// Whether `sector` has the shape of an NTFS boot sector whatever its OEM id: 0x55AA, the
    /// BPB fields that FAT uses and NTFS requires to be zero (reserved sectors, FATs, root
    /// entries, 16- and 32-bit sector counts, FAT size) all zero, and a 64-bit sector count and
    /// $MFT and $MFTMirr clusters set. No FAT or exFAT boot sector looks like this, so a damaged
    /// OEM id is reported as a damaged NTFS boot sector, not as a corrupt FAT.
    pub(crate) fn has_shape(sector: &[u8]) -> bool {
        let zero = |range: std::ops::Range<usize>| sector.get(range).is_some_and(|b| b.iter().all(|&b| b == 0));
        sector.len() >= BOOT_SECTOR_SIZE
            && le_u16(sector, SIGNATURE_OFFSET) == 0xAA55
            && FAT_ONLY_FIELDS.into_iter().all(zero)
            && [TOTAL_SECTORS, MFT_LCN, MFT_MIRROR_LCN].iter().all(|&offset| le_u64(sector, offset) != 0)
    }

    /// Reads and validates the boot sector of `volume`.
    pub(crate) fn read(volume: &dyn ReadAt) -> Result<Self, Error> {
        let mut sector = [0u8; BOOT_SECTOR_SIZE];
        if volume.size() < BOOT_SECTOR_SIZE as u64 {
            return Err(corrupt(0, format!("the volume is {} bytes, too small for a boot sector", volume.size())));
        }
        volume.read_exact_at(&mut sector, 0)?;
        Self::parse(&sector, volume.size())
    }

    /// Validates a boot sector against the size of the volume it starts.
    pub(crate) fn parse(sector: &[u8; BOOT_SECTOR_SIZE], volume_size: u64) -> Result<Self, Error> {
        if !Self::has_signature(sector) {
            let found = sector.get(OEM_ID_OFFSET..OEM_ID_OFFSET + OEM_ID.len()).unwrap_or_default();
            return Err(corrupt(
                OEM_ID_OFFSET,
                format!(
                    "the OEM id is \"{}\", not \"NTFS    \", but the rest is an NTFS boot sector (no FAT fields, $MFT at cluster {}): a damaged NTFS boot sector (its backup is in the volume's last sector)",
                    found.escape_ascii(),
                    le_u64(sector, MFT_LCN)
                ),
            ));
        }
        let signature = le_u16(sector, SIGNATURE_OFFSET);
        if signature != 0xAA55 {
            return Err(corrupt(SIGNATURE_OFFSET, format!("signature is {signature:#06x}, expected 0xaa55")));
        }
        let sector_size = u64::from(le_u16(sector, BYTES_PER_SECTOR));
        if !(MIN_SECTOR_SIZE..=MAX_SECTOR_SIZE).contains(&sector_size) || !sector_size.is_power_of_two() {
            return Err(corrupt(
                BYTES_PER_SECTOR,
                format!(
                    "bytes per sector {sector_size} is not a power of two in {MIN_SECTOR_SIZE}..={MAX_SECTOR_SIZE}"
                ),
            ));
        }
        let raw_spc = sector.get(SECTORS_PER_CLUSTER).copied().unwrap_or(0);
        let sectors_per_cluster = match raw_spc {
            // 129..=255 encode 2^(256 - value) sectors (clusters above 64 KiB).
            129..=255 => 1u64.checked_shl(256 - u32::from(raw_spc)).unwrap_or(0),
            n if n.is_power_of_two() => u64::from(n),
            _ => 0,
        };
        let cluster_size = sectors_per_cluster.saturating_mul(sector_size);
        if sectors_per_cluster == 0 || !(MIN_CLUSTER_SIZE..=MAX_CLUSTER_SIZE).contains(&cluster_size) {
            return Err(corrupt(
                SECTORS_PER_CLUSTER,
                format!(
                    "sectors per cluster {raw_spc:#04x} gives a cluster size outside {MIN_CLUSTER_SIZE}..={MAX_CLUSTER_SIZE} bytes"
                ),
            ));
        }
        let total_sectors = le_u64(sector, TOTAL_SECTORS);
        let volume_bytes = total_sectors.checked_mul(sector_size).filter(|&bytes| bytes <= volume_size);
        let Some(volume_bytes) = volume_bytes else {
            return Err(corrupt(
                TOTAL_SECTORS,
                format!(
                    "total sectors {total_sectors} x {sector_size} bytes does not fit in the {volume_size}-byte volume (truncated image?)"
                ),
            ));
        };
        let total_clusters = volume_bytes / cluster_size;
        if total_clusters == 0 {
            return Err(corrupt(TOTAL_SECTORS, format!("total sectors {total_sectors} is less than one cluster")));
        }
        let lcn_inside = |offset: usize, what: &str| {
            let lcn = le_u64(sector, offset);
            if lcn == 0 || lcn >= total_clusters {
                Err(corrupt(offset, format!("{what} cluster {lcn} is not inside clusters 1..{total_clusters}")))
            } else {
                Ok(lcn)
            }
        };
        let mft_lcn = lcn_inside(MFT_LCN, "$MFT")?;
        let mft_mirror_lcn = lcn_inside(MFT_MIRROR_LCN, "$MFTMirr")?;
        let mft_record_size = record_size(
            sector,
            CLUSTERS_PER_MFT_RECORD,
            cluster_size,
            MIN_RECORD_SIZE..=MAX_RECORD_SIZE,
            "MFT record",
        )?;
        record_size(
            sector,
            CLUSTERS_PER_INDEX_RECORD,
            cluster_size,
            MIN_INDEX_RECORD_SIZE..=MAX_INDEX_RECORD_SIZE,
            "index record",
        )?;
        Ok(Self {
            sector_size,
            cluster_size,
            total_sectors,
            total_clusters,
            mft_lcn,
            mft_mirror_lcn,
            record_size: mft_record_size,
            serial_number: le_u64(sector, SERIAL_NUMBER),
        })
    }

    /// 100 clusters of 4 KiB, for unit tests of what works on a geometry.
    #[cfg(test)]
    pub(crate) fn small_for_tests() -> Self {
        Self {
            sector_size: 512,
            cluster_size: 4096,
            total_sectors: 800,
            total_clusters: 100,
            mft_lcn: 4,
            mft_mirror_lcn: 50,
            record_size: 1024,
            serial_number: 0,
        }
    }

    /// Bytes covered by $Bitmap: every whole cluster of the volume.
    pub(crate) fn bitmap_coverage(&self) -> u64 {
        // Cannot overflow: total_clusters * cluster_size <= total_sectors * sector_size.
        self.total_clusters * self.cluster_size
    }
}

/// An MFT or index record size field: positive = clusters, negative = log2 of the bytes.
fn record_size(
    sector: &[u8],
    offset: usize,
    cluster_size: u64,
    allowed: std::ops::RangeInclusive<u64>,
    what: &str,
) -> Result<u64, Error> {
    let raw = sector.get(offset).map_or(0, |&b| i8::from_le_bytes([b]));
    let size = if raw > 0 {
        cluster_size.checked_mul(raw.unsigned_abs().into())
    } else {
        1u64.checked_shl(u32::from(raw.unsigned_abs()))
    };
    match size {
        Some(size) if allowed.contains(&size) && size.is_power_of_two() => Ok(size),
        _ => Err(corrupt(
            offset,
            format!(
                "{what} size field {raw} gives {} bytes, not a power of two in {}..={}",
                size.map_or_else(|| "too many".to_owned(), |s| s.to_string()),
                allowed.start(),
                allowed.end()
            ),
        )),
    }
}

fn corrupt(offset: usize, message: String) -> Error {
    Error::corrupt("boot sector", offset as u64, message)
}

pub(crate) fn le_u16(bytes: &[u8], offset: usize) -> u16 {
    let mut raw = [0u8; 2];
    if let Some(field) = bytes.get(offset..offset + 2) {
        raw.copy_from_slice(field);
    }
    u16::from_le_bytes(raw)
}

pub(crate) fn le_u32(bytes: &[u8], offset: usize) -> u32 {
    let mut raw = [0u8; 4];
    if let Some(field) = bytes.get(offset..offset + 4) {
        raw.copy_from_slice(field);
    }
    u32::from_le_bytes(raw)
}

pub(crate) fn le_u64(bytes: &[u8], offset: usize) -> u64 {
    let mut raw = [0u8; 8];
    if let Some(field) = bytes.get(offset..offset + 8) {
        raw.copy_from_slice(field);
    }
    u64::from_le_bytes(raw)
}

#[cfg(test)]
#[allow(clippy::indexing_slicing)]
mod tests {
    use super::*;

    /// A boot sector as mkntfs writes it for a 16 MiB volume with 4 KiB clusters.
    pub(crate) fn sample() -> [u8; BOOT_SECTOR_SIZE] {
        let mut s = [0u8; BOOT_SECTOR_SIZE];
        s[OEM_ID_OFFSET..OEM_ID_OFFSET + 8].copy_from_slice(OEM_ID);
        s[BYTES_PER_SECTOR..BYTES_PER_SECTOR + 2].copy_from_slice(&512u16.to_le_bytes());
        s[SECTORS_PER_CLUSTER] = 8;
        s[TOTAL_SECTORS..TOTAL_SECTORS + 8].copy_from_slice(&32767u64.to_le_bytes());
        s[MFT_LCN..MFT_LCN + 8].copy_from_slice(&4u64.to_le_bytes());
        s[MFT_MIRROR_LCN..MFT_MIRROR_LCN + 8].copy_from_slice(&2047u64.to_le_bytes());
        s[CLUSTERS_PER_MFT_RECORD] = 0xF6; // -10: 1024 bytes
        s[CLUSTERS_PER_INDEX_RECORD] = 0xF4; // -12: 4096 bytes
        s[SERIAL_NUMBER..SERIAL_NUMBER + 8].copy_from_slice(&0x1234_5678_9ABC_DEF0u64.to_le_bytes());
        s[SIGNATURE_OFFSET] = 0x55;
        s[SIGNATURE_OFFSET + 1] = 0xAA;
        s
    }

    const SIZE: u64 = 16 << 20;

    #[test]
    fn a_damaged_oem_id_is_still_recognised_as_ntfs_by_its_shape_and_named() {
        let mut damaged = sample();
        damaged[OEM_ID_OFFSET + 3] = b'X';
        assert!(!BootSector::has_signature(&damaged) && BootSector::has_shape(&damaged));
        let message = BootSector::parse(&damaged, SIZE).unwrap_err().to_string();
        assert!(message.contains("\"NTFX    \"") && message.contains("damaged NTFS boot sector"), "{message}");
        // A FAT field set (here: one reserved sector) is not NTFS's shape.
        let mut fat_like = damaged;
        fat_like[0x0E] = 1;
        assert!(!BootSector::has_shape(&fat_like));
    }

    #[test]
    fn a_valid_boot_sector_parses() {
        let boot = BootSector::parse(&sample(), SIZE).unwrap();
        assert_eq!(boot.sector_size, 512);
        assert_eq!(boot.cluster_size, 4096);
        assert_eq!(boot.total_clusters, 32767 * 512 / 4096);
        assert_eq!(boot.record_size, 1024);
        assert_eq!(boot.bitmap_coverage(), 4095 * 4096);
    }

    #[test]
    fn large_clusters_use_the_negative_exponent() {
        let mut s = sample();
        s[SECTORS_PER_CLUSTER] = 0xF4; // 2^12 sectors of 512 bytes = 2 MiB
        s[MFT_MIRROR_LCN..MFT_MIRROR_LCN + 8].copy_from_slice(&3u64.to_le_bytes());
        assert_eq!(BootSector::parse(&s, SIZE).unwrap().cluster_size, 2 << 20);
        s[SECTORS_PER_CLUSTER] = 0xF3; // 4 MiB: too big
        let error = BootSector::parse(&s, SIZE).unwrap_err().to_string();
        assert!(error.contains("boot sector at byte 13") && error.contains("0xf3"), "{error}");
    }

    /// Each corrupted field gives an error naming its byte offset, never a panic.
    #[test]
    fn each_corrupted_field_is_named() {
        let cases: &[(usize, &[u8], &str)] = &[
            (OEM_ID_OFFSET, b"NTFX", "OEM id"),
            (SIGNATURE_OFFSET, &[0x55, 0xAB], "signature"),
            (BYTES_PER_SECTOR, &[0x00, 0x01], "bytes per sector 256"),
            (BYTES_PER_SECTOR, &[0x00, 0x03], "bytes per sector 768"),
            (BYTES_PER_SECTOR, &[0x00, 0x20], "bytes per sector 8192"),
            (SECTORS_PER_CLUSTER, &[0], "sectors per cluster"),
            (SECTORS_PER_CLUSTER, &[3], "sectors per cluster"),
            (SECTORS_PER_CLUSTER, &[0x81], "sectors per cluster"),
            (TOTAL_SECTORS, &[0, 0, 1, 0, 0, 0, 0, 0], "does not fit"),
            (TOTAL_SECTORS, &[0xFF; 8], "does not fit"),
            (TOTAL_SECTORS, &[1, 0, 0, 0, 0, 0, 0, 0], "less than one cluster"),
            (MFT_LCN, &[0; 8], "$MFT cluster 0"),
            (MFT_LCN, &[0xFF, 0x0F, 0, 0, 0, 0, 0, 0], "$MFT cluster 4095"),
            (MFT_MIRROR_LCN, &[0xFF; 8], "$MFTMirr"),
            (CLUSTERS_PER_MFT_RECORD, &[0xF3], "MFT record size field -13"),
            (CLUSTERS_PER_MFT_RECORD, &[0x7F], "MFT record size field 127"),
            (CLUSTERS_PER_MFT_RECORD, &[0x80], "MFT record size field -128"),
            (CLUSTERS_PER_INDEX_RECORD, &[0x20], "index record size field 32"),
        ];
        for &(offset, bytes, expected) in cases {
            let mut s = sample();
            s[offset..offset + bytes.len()].copy_from_slice(bytes);
            let error = BootSector::parse(&s, SIZE).expect_err(expected).to_string();
            assert!(
                error.contains(&format!("boot sector at byte {offset}:")) && error.contains(expected),
                "field at {offset}: {error}"
            );
        }
    }

    #[test]
    fn a_volume_too_small_for_a_boot_sector_is_an_error() {
        let tiny = vec![0u8; 100];
        let error = BootSector::read(&tiny).unwrap_err().to_string();
        assert!(error.contains("too small"), "{error}");
    }

    /// Property: any single-byte change of a valid boot sector parses or fails cleanly, and what
    /// parses stays inside the volume.
    #[test]
    fn every_single_byte_mutation_parses_or_fails_cleanly() {
        for offset in 0..BOOT_SECTOR_SIZE {
            for value in [0x00, 0x01, 0x7F, 0x80, 0xF4, 0xFF] {
                let mut s = sample();
                s[offset] = value;
                if let Ok(boot) = BootSector::parse(&s, SIZE) {
                    assert!(boot.total_sectors * boot.sector_size <= SIZE);
                    assert!(boot.mft_lcn < boot.total_clusters && boot.mft_mirror_lcn < boot.total_clusters);
                    assert!(boot.bitmap_coverage() <= SIZE);
                }
            }
        }
    }
}
