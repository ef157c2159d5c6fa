//! exFAT: which bytes of an exFAT volume must be copied.
//!
//! This crate owns the exFAT on-disk format as Microsoft's "exFAT file system specification"
//! describes it: the main and backup boot regions with their checksums ([`boot_region`]), the
//! FAT's cluster chains ([`fat`]), the root directory's system entries ([`directory`]) and the
//! Allocation Bitmap ([`bitmap`]). Its answer, [`analyze`], marks as used everything before the
//! cluster heap (boot regions, FATs), every cluster the bitmap marks allocated (in any bitmap,
//! when TexFAT keeps two), every cluster the directory tree's entries own ([`files`]: kept with a
//! warning where the bitmap disagrees), and everything after the heap. A volume whose `VolumeDirty` flag is
//! set is refused, like a dirty NTFS: its bitmap may be stale.

#![forbid(unsafe_code)]

mod bitmap;
mod boot_region;
mod directory;
mod fat;
mod files;

pub use boot_region::BootSector;
/// Why an exFAT volume could not be analysed: the message names the structure and its byte offset.
pub use imgstream_volume::ParseError as Error;

use boot_region::{MEDIA_FAILURE, MIN_SECTOR, REGION_SECTORS, VOLUME_DIRTY};
use imgstream_blockio::ReadAt;
use imgstream_volume::{Allocation, RangeSet, read_at};
use std::io;

/// Cheap signature check: "EXFAT   " at byte 3. Ok(false) for a volume smaller than a sector.
pub fn detect(volume: &dyn ReadAt) -> io::Result<bool> {
    if volume.size() < MIN_SECTOR as u64 {
        return Ok(false);
    }
    let mut sector = [0u8; MIN_SECTOR];
    volume.read_exact_at(&mut sector, 0)?;
    Ok(boot_region::has_signature(&sector))
}

/// Reads the boot regions, the root directory and the allocation bitmap of `volume` and
/// returns the bytes to copy.
pub fn analyze(volume: &dyn ReadAt) -> Result<Allocation, Error> {
    let size = volume.size();
    if size < MIN_SECTOR as u64 {
        return Err(Error::corrupt("main boot sector", 0, format!("the volume holds only {size} bytes")));
    }
    let mut first = [0u8; MIN_SECTOR];
    read_at(volume, || "main boot sector", 0, &mut first)?;
    let boot = BootSector::parse(&first, size)?;
    let main = boot_region::read_region(volume, "main boot region", 0, boot.sector_size)?;
    let mut warnings = Vec::new();
    let sector = usize::try_from(boot.sector_size).unwrap_or(MIN_SECTOR);
    match boot_region::read_region(volume, "backup boot region", REGION_SECTORS, boot.sector_size) {
        Ok(backup) => {
            if !boot_region::same_boot_sector(
                main.get(..sector).unwrap_or_default(),
                backup.get(..sector).unwrap_or_default(),
            ) {
                warnings.push(format!(
                    "the backup boot sector at byte {} differs from the main one",
                    REGION_SECTORS * boot.sector_size
                ));
            }
        }
        Err(error @ Error::Io { .. }) => return Err(error),
        // The backup region is only read when the main one is bad; ours is good.
        Err(error) => warnings.push(format!("{error}; the main boot region is valid")),
    }

    let root = directory::read_root(volume, &boot)?;
    let Some(first_bitmap) = root.bitmaps.first() else {
        return Err(Error::corrupt(
            "root directory",
            boot.cluster_offset(u64::from(boot.root_cluster)),
            "no Allocation Bitmap entry (type 0x81) before the end of the directory",
        ));
    };
    if root.bitmaps.len() as u64 != boot.number_of_fats {
        warnings.push(format!(
            "{} allocation bitmap entries for NumberOfFats {}; a cluster marked in any of them is kept",
            root.bitmaps.len(),
            boot.number_of_fats
        ));
    }
    let mut used = RangeSet::from_range(0..boot.heap_start());
    let mut system_files = Vec::new();
    // The main boot sector (VolumeFlags: dirty) and the allocation bitmaps.
    let mut map_ranges = RangeSet::from_range(0..MIN_SECTOR as u64);
    for bitmap_file in &root.bitmaps {
        let clusters = bitmap::contiguous_clusters(volume, &boot, bitmap_file, "allocation bitmap")?;
        map_ranges.insert(boot.cluster_offset(clusters.start)..boot.cluster_offset(clusters.end));
        system_files.push(("allocation bitmap", clusters));
        bitmap::read_into(volume, &boot, bitmap_file, &mut used)?;
    }
    if let Some(upcase) = &root.upcase {
        system_files.push(("up-case table", bitmap::contiguous_clusters(volume, &boot, upcase, "up-case table")?));
    }
    // The bitmap must mark the system files' and the root directory's own clusters.
    let root_clusters = root.clusters.iter().map(|&c| ("root directory", c..c + 1));
    for (name, clusters) in system_files.into_iter().chain(root_clusters) {
        let bytes = boot.cluster_offset(clusters.start)..boot.cluster_offset(clusters.end);
        if !used.contains_range(bytes.clone()) {
            let free = used.complement(bytes).iter().next().map_or(0, |r| r.start);
            let cluster = 2 + (free - boot.heap_start()) / boot.cluster_size;
            return Err(Error::corrupt(
                "allocation bitmap",
                boot.cluster_offset(first_bitmap.first_cluster) + (cluster - 2) / 8,
                format!("cluster {cluster} of the {name} is marked free"),
            ));
        }
    }
    // The second view: every cluster the directory tree's entries own.
    let found = files::file_clusters(volume, &boot, &root.clusters)?;
    let missing = found.clusters.difference(&used);
    let missing_clusters = missing.total() / boot.cluster_size;
    let files_detail = if missing_clusters == 0 {
        format!("{} files and directories, every cluster of theirs marked in the allocation bitmap", found.files)
    } else {
        let first = missing.iter().next().map_or(0, |r| 2 + (r.start - boot.heap_start()) / boot.cluster_size);
        warnings.push(format!(
            "{missing_clusters} clusters used by files but free in the allocation bitmap (the first is cluster {first}): kept; run fsck.exfat"
        ));
        used.union_with(&missing);
        format!(
            "{} files and directories, {missing_clusters} clusters of theirs free in the allocation bitmap (kept)",
            found.files
        )
    };
    let heap_used = used.covered_in(boot.heap_start()..boot.heap_end());
    used.insert(boot.heap_end()..size);

    let mut allocation = Allocation::new("exfat", boot.cluster_size, used);
    allocation.map_ranges = map_ranges;
    if boot.volume_flags & VOLUME_DIRTY != 0 {
        allocation.unsafe_reasons.push(
            "VolumeDirty is set in the main boot sector (byte 106): the volume was not cleanly unmounted and its allocation bitmap may be stale (run fsck.exfat)".into(),
        );
    }
    if boot.volume_flags & MEDIA_FAILURE != 0 {
        warnings.push("MediaFailure is set in the main boot sector (byte 106): the medium reported errors".into());
    }
    allocation.warnings = warnings;
    let used_clusters = heap_used / boot.cluster_size;
    let details = &mut allocation.details;
    let mut detail = |label: &str, value: String| details.push((label.to_owned(), value));
    detail("bytes per sector", boot.sector_size.to_string());
    detail("cluster size", boot.cluster_size.to_string());
    detail("clusters", boot.cluster_count.to_string());
    detail("free clusters", (boot.cluster_count - used_clusters).to_string());
    detail("FATs", boot.number_of_fats.to_string());
    detail("cluster heap", format!("bytes {}..{}", boot.heap_start(), boot.heap_end()));
    detail("revision", format!("{}.{:02}", boot.revision.0, boot.revision.1));
    detail("serial", format!("{:04X}-{:04X}", boot.serial >> 16, boot.serial & 0xFFFF));
    detail("files cross-checked", files_detail);
    detail("dirty", if boot.volume_flags & VOLUME_DIRTY != 0 { "yes".into() } else { "no".into() });
    if boot.percent_in_use != 0xFF {
        detail("percent in use (boot sector)", boot.percent_in_use.to_string());
    }
    Ok(allocation)
}

#[cfg(test)]
mod tests;
