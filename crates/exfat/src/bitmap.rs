//! The Allocation Bitmap (exFAT specification §7.1.5): one bit per cluster of the heap, LSB
//! first, 1 = allocated. It is the only authority on free clusters: files marked NoFatChain
//! have no FAT entries at all.

use crate::Error;
use crate::boot_region::BootSector;
use crate::directory::SystemFile;
use crate::fat;
use imgstream_blockio::ReadAt;
use imgstream_volume::{RangeSet, read_at};
use std::ops::Range;

/// Bitmap bytes read at once.
const CHUNK: u64 = 1 << 20;

/// The clusters of a system file (bitmap, up-case table) that must be contiguous, as the Linux
/// driver reads them: checked against the heap, and against the FAT when it holds a chain.
pub(crate) fn contiguous_clusters(
    volume: &dyn ReadAt,
    boot: &BootSector,
    file: &SystemFile,
    structure: &'static str,
) -> Result<Range<u64>, Error> {
    let last_cluster = boot.cluster_count + 1;
    let clusters = file.data_length.div_ceil(boot.cluster_size);
    let end = file.first_cluster.checked_add(clusters);
    if file.first_cluster < 2 || clusters == 0 || end.is_none_or(|end| end - 1 > last_cluster) {
        return Err(Error::corrupt(
            structure,
            file.entry_offset,
            format!(
                "FirstCluster {} and DataLength {} do not lie inside clusters 2..={last_cluster}",
                file.first_cluster, file.data_length
            ),
        ));
    }
    let range = file.first_cluster..file.first_cluster + clusters;
    let links = fat::entries(volume, boot, range.start, clusters)?;
    let chained = links.iter().zip(range.clone()).all(|(&link, cluster)| {
        if cluster + 1 == range.end { link == fat::END_OF_CHAIN } else { u64::from(link) == cluster + 1 }
    });
    let no_chain = links.iter().all(|&link| link == 0);
    if !chained && !no_chain {
        return Err(Error::unsupported(
            structure,
            boot.active_fat_offset() + range.start * 4,
            format!("the FAT chain of clusters {}..{} is not contiguous", range.start, range.end),
        ));
    }
    Ok(range)
}

/// Adds the heap ranges of the clusters `bitmap` marks allocated to `used`.
pub(crate) fn read_into(
    volume: &dyn ReadAt,
    boot: &BootSector,
    file: &SystemFile,
    used: &mut RangeSet,
) -> Result<(), Error> {
    let needed = boot.cluster_count.div_ceil(8);
    if file.data_length < needed {
        return Err(Error::corrupt(
            "allocation bitmap entry",
            file.entry_offset,
            format!(
                "DataLength {} is shorter than the {needed} bytes {} clusters need",
                file.data_length, boot.cluster_count
            ),
        ));
    }
    let start = boot.cluster_offset(file.first_cluster);
    let mut buf = Vec::new();
    let mut done = 0;
    while done < needed {
        let len = CHUNK.min(needed - done);
        buf.resize(usize::try_from(len).unwrap_or(0), 0);
        read_at(volume, || "allocation bitmap", start + done, &mut buf)?;
        let first_bit = done * 8;
        let bits = (len * 8).min(boot.cluster_count - first_bit);
        used.insert_bitmap(&buf, bits, boot.cluster_offset(2 + first_bit), boot.cluster_size);
        done += len;
    }
    Ok(())
}
