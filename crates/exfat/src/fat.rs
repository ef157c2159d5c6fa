//! The File Allocation Table (exFAT specification §4): cluster chains. In exFAT the FAT does not
//! say what is free (the allocation bitmap does); it is used here only to follow the root
//! directory's chain and to check that the allocation bitmap is contiguous.

use crate::Error;
use crate::boot_region::BootSector;
use imgstream_blockio::ReadAt;
use imgstream_volume::read_at;

/// FAT entry marking the end of a chain.
pub(crate) const END_OF_CHAIN: u32 = 0xFFFF_FFFF;

/// The FAT entry of `cluster` in the active FAT.
pub(crate) fn entry(volume: &dyn ReadAt, boot: &BootSector, cluster: u64) -> Result<u32, Error> {
    let offset = boot.active_fat_offset() + cluster * 4;
    let mut bytes = [0u8; 4];
    read_at(volume, || "FAT", offset, &mut bytes)?;
    Ok(u32::from_le_bytes(bytes))
}

/// Follows the chain from `first` for at most `max_clusters` clusters; returns the clusters in
/// order. `structure` names the chain's owner in errors.
pub(crate) fn chain(
    volume: &dyn ReadAt,
    boot: &BootSector,
    first: u64,
    max_clusters: u64,
    structure: &'static str,
) -> Result<Vec<u64>, Error> {
    let mut clusters = Vec::new();
    let mut cluster = first;
    loop {
        if cluster < 2 || cluster > boot.cluster_count + 1 {
            return Err(Error::corrupt(
                structure,
                boot.active_fat_offset() + clusters.last().copied().unwrap_or(0) * 4,
                format!("cluster chain reaches cluster {cluster}, outside 2..={}", boot.cluster_count + 1),
            ));
        }
        if clusters.len() as u64 >= max_clusters {
            return Err(Error::corrupt(
                structure,
                boot.active_fat_offset() + cluster * 4,
                format!("cluster chain is longer than {max_clusters} clusters (a loop?)"),
            ));
        }
        clusters.push(cluster);
        let next = entry(volume, boot, cluster)?;
        if next == END_OF_CHAIN {
            return Ok(clusters);
        }
        cluster = u64::from(next);
    }
}

/// Entries `first..first + count` of the active FAT, in one read (the caller bounds `count` by
/// the cluster count, so the read stays inside the FAT).
pub(crate) fn entries(volume: &dyn ReadAt, boot: &BootSector, first: u64, count: u64) -> Result<Vec<u32>, Error> {
    let mut bytes = vec![0u8; usize::try_from(count * 4).unwrap_or(0)];
    read_at(volume, || "FAT", boot.active_fat_offset() + first * 4, &mut bytes)?;
    Ok(bytes.chunks_exact(4).filter_map(|c| c.try_into().ok()).map(u32::from_le_bytes).collect())
}
