//! FAT12, FAT16 and FAT32: which bytes of a FAT volume must be copied.
//!
//! This crate owns the FAT on-disk format as Microsoft's specification (fatgen103, "FAT: General
//! Overview of On-Disk Format") describes it: the boot sector and BPB ([`boot_sector`]), the
//! FAT32 FSInfo and backup boot sectors ([`fsinfo`]), and the File Allocation Table itself
//! ([`table`]). Its answer, [`analyze`], marks as used: the reserved sectors, every FAT copy, the
//! FAT12/16 root directory, every cluster whose entry is non-zero in any FAT copy (bad clusters
//! included), and everything past the last cluster. Only clusters whose entry is 0 in every copy
//! are free. The FAT type is decided by cluster count, as the specification does.
//!
//! A dirty volume (FAT16/32 entry 1 "clean shutdown" bit clear, or the boot sector's state
//! byte) is reported as a warning and in `info`, not a refusal: FAT has no journal to replay.
//! What a crash can leave behind is a directory entry pointing at clusters whose FAT entries
//! were never written; those read as free here, and fsck.fat drops them too ("Contains a free
//! cluster (2). Assuming EOF." then "Truncating file to 0 bytes", checked with dosfstools 4.2).
//! `--raw` copies such a volume whole.

#![forbid(unsafe_code)]

mod boot_sector;
mod fsinfo;
mod table;

pub use boot_sector::{BootSector, FatType};
/// Why a FAT volume could not be analysed: the message names the structure and its byte offset.
pub use imgstream_volume::ParseError as Error;

use boot_sector::{BOOT_SECTOR_LEN, looks_like_fat};
use fsinfo::FsInfo;
use imgstream_blockio::ReadAt;
use imgstream_volume::{Allocation, RangeSet, read_at};
use std::io;

/// Cheap signature check: a jump instruction, 0x55AA at byte 510, a valid sector size and media
/// byte, and not an NTFS or exFAT boot sector. Ok(false) for a volume smaller than one sector.
pub fn detect(volume: &dyn ReadAt) -> io::Result<bool> {
    if volume.size() < BOOT_SECTOR_LEN as u64 {
        return Ok(false);
    }
    let mut sector = [0u8; BOOT_SECTOR_LEN];
    volume.read_exact_at(&mut sector, 0)?;
    Ok(looks_like_fat(&sector))
}

/// Reads the boot sector and every FAT copy of `volume` and returns the bytes to copy.
pub fn analyze(volume: &dyn ReadAt) -> Result<Allocation, Error> {
    let size = volume.size();
    if size < BOOT_SECTOR_LEN as u64 {
        return Err(Error::corrupt("boot sector", 0, format!("the volume holds only {size} bytes")));
    }
    let mut sector = [0u8; BOOT_SECTOR_LEN];
    read_at(volume, || "boot sector", 0, &mut sector)?;
    let boot = BootSector::parse(&sector, size)?;
    let fat_type = boot.fat_type;
    let scan = table::scan(volume, &boot)?;
    if fat_type == FatType::Fat32 && !scan.used.get(u64::from(boot.root_cluster)) {
        return Err(Error::corrupt(
            "FAT 1",
            boot.fat_offset(0) + u64::from(boot.root_cluster) * 4,
            format!("the root directory's first cluster {} is marked free", boot.root_cluster),
        ));
    }

    let cluster_size = boot.cluster_size();
    let mut used = RangeSet::from_range(0..boot.data_offset());
    used.insert_bitmap(scan.used.as_bitmap(), boot.cluster_count, boot.data_offset(), cluster_size);
    used.insert(boot.data_end()..size);

    let mut allocation = Allocation::new(fat_type.name(), cluster_size, used);
    // Every FAT copy, and the boot sector (its state byte is the dirty flag).
    allocation.map_ranges = (0..boot.num_fats)
        .map(|index| boot.fat_offset(index)..boot.fat_offset(index) + boot.fat_bytes_used())
        .chain(std::iter::once(0..BOOT_SECTOR_LEN as u64))
        .collect();
    let free = boot.cluster_count - scan.used_count;
    let warnings = &mut allocation.warnings;
    let dirty_fat = scan.dirty(fat_type);
    if dirty_fat || boot.state_dirty {
        let source = match (dirty_fat, boot.state_dirty) {
            (true, true) => "FAT entry 1 and the boot sector's state byte",
            (true, false) => "FAT entry 1",
            _ => "the boot sector's state byte",
        };
        warnings.push(format!(
            "{fat_type} volume was not cleanly unmounted ({source}); free clusters are still those the FAT marks free, run fsck.fat to check it"
        ));
    }
    if scan.hard_error(fat_type) {
        warnings.push(format!("{fat_type} entry 1 says disk I/O errors were met on this volume"));
    }
    if scan.copies_disagree > 0 {
        warnings.push(format!(
            "the {} FAT copies disagree on whether {} clusters are free; those clusters are copied",
            boot.num_fats, scan.copies_disagree
        ));
    }
    if scan.links_to_free > 0 {
        warnings.push(format!(
            "FAT 1 links to {} clusters that every FAT copy marks free; those clusters are copied",
            scan.links_to_free
        ));
    }
    if scan.links_out_of_range > 0 {
        warnings.push(format!(
            "FAT 1 has {} links to cluster numbers outside 2..={} (fsck.fat would truncate those chains)",
            scan.links_out_of_range,
            boot.cluster_count + 1
        ));
    }
    let fs_info = fsinfo::read_fs_info(volume, &boot)?;
    if let Some(FsInfo::Invalid(message)) = &fs_info {
        warnings.push(message.clone());
    }
    if let Some(message) = fsinfo::check_backup_boot(volume, &boot, &sector)? {
        warnings.push(message);
    }

    let details = &mut allocation.details;
    let mut detail = |label: &str, value: String| details.push((label.to_owned(), value));
    detail("FAT type", format!("{fat_type} (by cluster count)"));
    detail("bytes per sector", boot.bytes_per_sector.to_string());
    detail("cluster size", cluster_size.to_string());
    detail("clusters", boot.cluster_count.to_string());
    detail("free clusters", free.to_string());
    detail("bad clusters", scan.bad_clusters.to_string());
    detail("FAT copies", boot.num_fats.to_string());
    detail("FAT size", format!("{} sectors", boot.fat_size));
    if let Some(active) = boot.active_fat_only {
        detail("active FAT", format!("{} only (mirroring disabled)", active + 1));
    }
    detail("data area", format!("bytes {}..{}", boot.data_offset(), boot.data_end()));
    detail("dirty", if dirty_fat || boot.state_dirty { "yes".into() } else { "no".into() });
    if let Some(FsInfo::Valid(hint)) = fs_info {
        detail("FSInfo free count", hint.map_or_else(|| "unknown".into(), |n| n.to_string()));
    }
    if let Some(label) = boot.label {
        detail("label", label);
    }
    Ok(allocation)
}

#[cfg(test)]
mod tests;
