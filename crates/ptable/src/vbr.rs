//! Volume boot records: a filesystem that starts at sector 0 of a disk ("superfloppy").
//!
//! mbrman accepts any sector 0 that ends in 0x55AA, so an NTFS or FAT boot sector would parse
//! as an MBR. These checks recognise the filesystems whose signature lives in the first
//! sectors, so that such a disk is treated as one volume instead.

use crate::bytes::{array, le16, le32, le64, u8_at};

/// NTFS: OEM ID at byte 3 (ntfs-3g `ntfs_boot_sector_is_ntfs`).
const NTFS_OEM_ID: &[u8; 8] = b"NTFS    ";
/// exFAT: file system name at byte 3 (exFAT spec §3.1.2).
const EXFAT_NAME: &[u8; 8] = b"EXFAT   ";
/// FAT12/16: file system type string at byte 54; FAT32: at byte 82 (Microsoft FAT spec §3.2, §3.3).
const FAT16_TYPE_AT: usize = 54;
const FAT32_TYPE_AT: usize = 82;
/// BPB fields (FAT spec §3.1).
const BPB_BYTES_PER_SECTOR: usize = 11;
const BPB_SECTORS_PER_CLUSTER: usize = 13;
const BPB_RESERVED_SECTORS: usize = 14;
const BPB_NUM_FATS: usize = 16;
const BPB_MEDIA: usize = 21;
/// ext2/3/4: `s_magic` at byte 56 of the superblock, which starts at byte 1024.
const EXT_MAGIC_AT: usize = 1024 + 56;
const EXT_MAGIC: u16 = 0xEF53;

/// The filesystem whose boot record or superblock is at the start of `head` (the first
/// 2 KiB of the disk, or less if the disk is smaller), if any.
pub(crate) fn filesystem_at_start(head: &[u8]) -> Option<&'static str> {
    if &array::<8>(head, 3) == NTFS_OEM_ID {
        return Some("ntfs");
    }
    if &array::<8>(head, 3) == EXFAT_NAME {
        return Some("exfat");
    }
    if is_fat_boot_sector(head) {
        return Some("fat");
    }
    if head.len() >= EXT_MAGIC_AT + 2 && le16(head, EXT_MAGIC_AT) == EXT_MAGIC {
        return Some("ext");
    }
    None
}

/// NTFS BPB fields (ntfs-3g `ntfs_boot_sector_is_ntfs`, and the ntfs crate's `has_shape`): the
/// FAT-only fields, which NTFS requires to be zero (reserved sectors, FATs, root entries, 16-bit
/// sectors; FAT size; 32-bit sectors), and the 64-bit sector count, $MFT and $MFTMirr clusters,
/// which it requires to be set.
const NTFS_ZERO_FIELDS: [std::ops::Range<usize>; 3] = [0x0E..0x15, 0x16..0x18, 0x20..0x24];
const NTFS_SET_FIELDS: [usize; 3] = [0x28, 0x30, 0x38];

/// exFAT (spec §3.1): `MustBeZero` covers bytes 11..64, where FAT and NTFS keep their BPB; the
/// volume length (u64) and the FAT offset, FAT length and cluster heap offset (u32) are set.
const EXFAT_MUST_BE_ZERO: std::ops::Range<usize> = 11..64;
const EXFAT_VOLUME_LENGTH: usize = 72;
const EXFAT_SET_FIELDS: [usize; 3] = [80, 84, 88];

/// The filesystem whose boot sector, damaged, is at the start of `head`, for a disk whose MBR
/// entries are all unused: an NTFS boot sector by its shape whatever its OEM id, an exFAT one by
/// its shape whatever its name, a FAT boot sector by its type string whatever its BPB says or by
/// its BPB without a type string. The
/// disk is then probed as one volume, so the damage is named (or, for exFAT, the volume is copied
/// raw with a warning), as `part` does, instead of passing for an empty MBR copied raw in silence.
pub(crate) fn damaged_filesystem_at_start(head: &[u8]) -> Option<&'static str> {
    let zero = |range: std::ops::Range<usize>| head.get(range).is_some_and(|b| b.iter().all(|&b| b == 0));
    if NTFS_ZERO_FIELDS.into_iter().all(zero) && NTFS_SET_FIELDS.iter().all(|&at| le64(head, at) != 0) {
        return Some("ntfs");
    }
    if zero(EXFAT_MUST_BE_ZERO)
        && le64(head, EXFAT_VOLUME_LENGTH) != 0
        && EXFAT_SET_FIELDS.iter().all(|&at| le32(head, at) != 0)
    {
        return Some("exfat");
    }
    (fat_type_string(head) || fat_shape(head)).then_some("fat")
}

/// What the FAT parser itself requires of a boot sector (its `looks_like_fat`): a jump
/// instruction, a valid sector size and media byte. The type string is informational (fatgen103
/// forbids deciding the type by it, and DOS 3 wrote none), so it is not needed here.
fn fat_shape(head: &[u8]) -> bool {
    matches!(u8_at(head, 0), 0xEB | 0xE9)
        && matches!(le16(head, BPB_BYTES_PER_SECTOR), 512 | 1024 | 2048 | 4096)
        && valid_media(u8_at(head, BPB_MEDIA))
}

fn valid_media(media: u8) -> bool {
    media == 0xF0 || media >= 0xF8
}

fn fat_type_string(head: &[u8]) -> bool {
    array::<3>(head, FAT16_TYPE_AT) == *b"FAT" || &array::<8>(head, FAT32_TYPE_AT) == b"FAT32   "
}

/// A FAT boot sector: a type string and a plausible BPB. Both are needed, because boot loaders
/// (GRUB's boot.img) keep a BPB-shaped area in an MBR.
fn is_fat_boot_sector(head: &[u8]) -> bool {
    let type_string = fat_type_string(head);
    let bytes_per_sector = le16(head, BPB_BYTES_PER_SECTOR);
    let sectors_per_cluster = u8_at(head, BPB_SECTORS_PER_CLUSTER);
    let media = u8_at(head, BPB_MEDIA);
    type_string
        && matches!(bytes_per_sector, 512 | 1024 | 2048 | 4096)
        && sectors_per_cluster.is_power_of_two()
        && le16(head, BPB_RESERVED_SECTORS) >= 1
        && u8_at(head, BPB_NUM_FATS) >= 1
        && valid_media(media)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_are_recognised_and_a_bpb_alone_is_not_fat() {
        let mut head = vec![0u8; 2048];
        assert_eq!(filesystem_at_start(&head), None);
        head.get_mut(3..11).unwrap().copy_from_slice(b"NTFS    ");
        assert_eq!(filesystem_at_start(&head), Some("ntfs"));

        let mut fat = vec![0u8; 512];
        fat.get_mut(11..13).unwrap().copy_from_slice(&512u16.to_le_bytes());
        *fat.get_mut(13).unwrap() = 8;
        fat.get_mut(14..16).unwrap().copy_from_slice(&32u16.to_le_bytes());
        *fat.get_mut(16).unwrap() = 2;
        *fat.get_mut(21).unwrap() = 0xF8;
        assert_eq!(filesystem_at_start(&fat), None, "a BPB without a type string");
        fat.get_mut(82..90).unwrap().copy_from_slice(b"FAT32   ");
        assert_eq!(filesystem_at_start(&fat), Some("fat"));
        *fat.get_mut(13).unwrap() = 3;
        assert_eq!(filesystem_at_start(&fat), None, "sectors per cluster not a power of two");

        let mut ext = vec![0u8; 2048];
        ext.get_mut(1080..1082).unwrap().copy_from_slice(&0xEF53u16.to_le_bytes());
        assert_eq!(filesystem_at_start(&ext), Some("ext"));
        assert_eq!(filesystem_at_start(ext.get(..1081).unwrap()), None, "truncated");
    }
}
