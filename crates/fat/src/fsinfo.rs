//! The FAT32 FSInfo sector (fatgen103 §5) and the backup boot sector (§3.3 `BPB_BkBootSec`).
//!
//! Both lie in the reserved sectors, which are always copied, and neither decides what is free:
//! FSInfo's free count is only a hint. So a bad signature or a stale backup is a warning, not
//! an error; the counts are shown by `imgstream info`.

use crate::Error;
use crate::boot_sector::{BOOT_SECTOR_LEN, BootSector};
use imgstream_blockio::ReadAt;
use imgstream_volume::fields::le32;
use imgstream_volume::read_at;

const FSI_LEAD_SIG: usize = 0;
const FSI_STRUC_SIG: usize = 484;
const FSI_FREE_COUNT: usize = 488;
const FSI_TRAIL_SIG: usize = 508;
const LEAD_SIG: u32 = 0x4161_5252;
const STRUC_SIG: u32 = 0x6141_7272;
const TRAIL_SIG: u32 = 0xAA55_0000;
/// `FSI_Free_Count` value meaning "unknown".
const FREE_COUNT_UNKNOWN: u32 = 0xFFFF_FFFF;

/// What the FSInfo sector says.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum FsInfo {
    /// Signatures valid; the free cluster count, if known.
    Valid(Option<u32>),
    /// A signature is wrong; the message names it.
    Invalid(String),
}

/// Reads the FSInfo sector named by the boot sector, if any.
pub(crate) fn read_fs_info(volume: &dyn ReadAt, boot: &BootSector) -> Result<Option<FsInfo>, Error> {
    let Some(sector) = boot.fs_info_sector else { return Ok(None) };
    let offset = sector * boot.bytes_per_sector;
    let mut buf = [0u8; BOOT_SECTOR_LEN];
    read_at(volume, || "FSInfo sector", offset, &mut buf)?;
    for (field, name, expected) in [
        (FSI_LEAD_SIG, "FSI_LeadSig", LEAD_SIG),
        (FSI_STRUC_SIG, "FSI_StrucSig", STRUC_SIG),
        (FSI_TRAIL_SIG, "FSI_TrailSig", TRAIL_SIG),
    ] {
        let actual = le32(&buf, field);
        if actual != expected {
            let at = offset + field as u64;
            return Ok(Some(FsInfo::Invalid(format!(
                "FSInfo sector {sector}: {name} at byte {at} is 0x{actual:08X}, expected 0x{expected:08X}"
            ))));
        }
    }
    let free = le32(&buf, FSI_FREE_COUNT);
    Ok(Some(FsInfo::Valid((free != FREE_COUNT_UNKNOWN).then_some(free))))
}

/// Compares the backup boot sector with the boot sector; returns a warning if they differ.
pub(crate) fn check_backup_boot(volume: &dyn ReadAt, boot: &BootSector, main: &[u8]) -> Result<Option<String>, Error> {
    let Some(sector) = boot.backup_boot_sector else { return Ok(None) };
    let offset = sector * boot.bytes_per_sector;
    let mut buf = [0u8; BOOT_SECTOR_LEN];
    read_at(volume, || "backup boot sector", offset, &mut buf)?;
    let differing = buf.iter().zip(main).position(|(a, b)| a != b);
    Ok(differing.map(|at| {
        format!("the backup boot sector {sector} at byte {offset} differs from the boot sector (first at byte {at} of the sector)")
    }))
}
