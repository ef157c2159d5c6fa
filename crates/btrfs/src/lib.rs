//! btrfs: which bytes of one btrfs device must be copied.
//!
//! The sound base rule (`../shared/journal-and-volumes.md` §5.2): every allocation btrfs makes,
//! data, metadata, the log tree and fsynced data included, lives inside a chunk, and a chunk's
//! bytes on a device are that device's `DEV_EXTENT`s. So the first MiB, the superblock mirrors
//! and every device extent of this device are used, and the unallocated rest is free. The path
//! there: the superblock ([`superblock`]), its `sys_chunk_array` and the chunk tree
//! ([`chunks`]), the root tree, and the device tree, all read as validated tree blocks
//! ([`tree`]).
//!
//! Inside data and metadata block groups of every profile but RAID5/6 (system
//! chunks, which hold only the chunk tree, are kept whole), the extent tree refines
//! that ([`refine`]): only its `EXTENT_ITEM` and `METADATA_ITEM` ranges are used, mapped onto
//! every copy on this device. The extent tree, not the free-space tree, is the authority: it is
//! what the free-space tree and the v1 space cache are derived from, and both of those are
//! themselves stored in extents it lists (free-space tree blocks as `METADATA_ITEM`s, the v1
//! cache as the data extents of its inodes), so they are kept either way. Added on top: every
//! block of the log tree and the data extents its `EXTENT_DATA` items point at (fsynced since
//! the last commit, not yet in the extent tree; partclone misses them), and every tree block
//! reachable from the root tree and the chunk tree. A block group whose extents do not add up
//! to its `BLOCK_GROUP_ITEM`'s `used` is kept whole, as is any RAID5/6 chunk.
//!
//! A multi-device filesystem is imaged one device at a time: only this device's extents are
//! mapped, and a tree block that has no copy on this device makes the device unsupported (it is
//! then copied raw, with a warning).

#![forbid(unsafe_code)]

mod checksum;
mod chunks;
mod refine;
mod superblock;
mod tree;

pub use checksum::CsumType;
/// Why a btrfs device could not be analysed: the message names the structure and its byte
/// offset (logical addresses are said to be logical).
pub use imgstream_volume::ParseError as Error;

use imgstream_blockio::ReadAt;
use imgstream_volume::{Allocation, RangeSet, read_at};
use std::io;
use superblock::{MAGIC, MAGIC_AT, SUPER_LEN, SUPER_OFFSET, Superblock};

/// Cheap signature check: the magic `_BHRfS_M` in the primary superblock at 64 KiB.
pub fn detect(volume: &dyn ReadAt) -> io::Result<bool> {
    if volume.size() < SUPER_OFFSET + SUPER_LEN as u64 {
        return Ok(false);
    }
    let mut magic = [0u8; 8];
    volume.read_exact_at(&mut magic, SUPER_OFFSET + MAGIC_AT as u64)?;
    Ok(&magic == MAGIC)
}

/// Reads the superblock and the chunk, root, device, extent and log trees of `volume` and
/// returns the bytes to copy.
pub fn analyze(volume: &dyn ReadAt) -> Result<Allocation, Error> {
    let size = volume.size();
    if size < SUPER_OFFSET + SUPER_LEN as u64 {
        return Err(Error::corrupt("superblock", SUPER_OFFSET, format!("the volume holds only {size} bytes")));
    }
    let mut block = vec![0u8; SUPER_LEN];
    read_at(volume, || "superblock", SUPER_OFFSET, &mut block)?;
    let superblock = Superblock::parse(&block, size)?;
    let found = refine::scan(volume, &superblock)?;

    let mut allocation = Allocation::new("btrfs", u64::from(superblock.sectorsize), found.used);
    // Every transaction commit and every log-tree sync (fsync) rewrites the primary superblock
    // (its generation, its roots): it changes whenever anything the answer rests on does.
    allocation.map_ranges = RangeSet::from_range(SUPER_OFFSET..SUPER_OFFSET + SUPER_LEN as u64);
    if superblock.error_flag {
        allocation.unsafe_reasons.push(
            "the superblock's ERROR flag is set (the kernel met an error and stopped writing); run btrfs check".into(),
        );
    }
    if superblock.num_devices > 1 {
        allocation.warnings.push(format!(
            "btrfs spans {} devices: only this device's (devid {}) extents are imaged; back up every device",
            superblock.num_devices, superblock.devid
        ));
    }
    if found.raid56_chunks > 0 {
        allocation
            .warnings
            .push(format!("{} chunks of the RAID5/6 profiles are kept whole on this device", found.raid56_chunks));
    }
    if !found.mismatched_groups.is_empty() {
        allocation.warnings.push(format!(
            "the extent tree does not account for all of {} block groups (logical {}); they are kept whole",
            found.mismatched_groups.len(),
            found.mismatched_groups.iter().map(u64::to_string).collect::<Vec<_>>().join(", ")
        ));
    }

    let details = &mut allocation.details;
    let mut detail = |label: &str, value: String| details.push((label.to_owned(), value));
    detail("nodesize", superblock.nodesize.to_string());
    detail("sectorsize", superblock.sectorsize.to_string());
    detail("checksum", superblock.csum_type.to_string());
    detail("generation", superblock.generation.to_string());
    detail("devices", format!("{} (this is devid {})", superblock.num_devices, superblock.devid));
    detail("profiles", found.profiles);
    detail("filesystem bytes used", format!("{} of {}", superblock.bytes_used, superblock.total_bytes));
    detail("bytes in device extents", found.device_extent_bytes.to_string());
    detail(
        "refined block groups",
        format!("{} of {} data and metadata (by the extent tree)", found.refined_groups, found.groups_on_device),
    );
    detail(
        "log tree",
        match superblock.log_root {
            Some(_) => {
                format!("present: {} blocks and {} bytes of fsynced data kept", found.log_blocks, found.log_data_bytes)
            }
            None => "none".into(),
        },
    );
    Ok(allocation)
}

#[cfg(test)]
mod tests;
