//! Every cluster a file or directory occupies, from the directory tree: the second view of what
//! is in use, next to the allocation bitmap.
//!
//! A cleared bit in the allocation bitmap would zero a file's cluster (`fsck.exfat -n` reports
//! "cluster is marked as free"). So the tree is walked from the root directory: every entry set
//! in use whose entries say clusters are allocated (`AllocationPossible`), that is the Stream
//! Extension of each file and directory (§7.6), the Allocation Bitmap and Up-case Table (§7.1,
//! §7.2), and any benign primary or secondary entry of the generic templates (§6.3, §6.4, e.g. a
//! Vendor Allocation entry), gives its clusters: a contiguous run with `NoFatChain`, else the FAT
//! chain, in both cases as many clusters as `DataLength` needs. Sub-directories are walked in
//! turn. Loops are bounded: each directory is visited once (by first cluster), a chain is at most
//! the cluster count long, and a directory at most 256 MiB.
//!
//! A chain that leaves the heap or ends early is corruption: the volume is refused, never
//! guessed at.

use crate::Error;
use crate::boot_region::BootSector;
use crate::directory::{
    ALLOCATION_BITMAP, DATA_LENGTH, END_OF_DIRECTORY, ENTRY_LEN, FIRST_CLUSTER, MAX_DIRECTORY_BYTES, UPCASE_TABLE,
};
use imgstream_blockio::ReadAt;
use imgstream_volume::fields::{le16, le32, le64, u8_at};
use imgstream_volume::{RangeSet, read_at};
use std::collections::HashSet;
use std::ops::Range;

/// A type without bit 7 (InUse) is a deleted entry.
const IN_USE: u8 = 0x80;
const FILE: u8 = 0x85;
/// Benign primaries (0xA0-0xBF) follow the generic primary template.
const BENIGN_PRIMARIES: Range<u8> = 0xA0..0xC0;
/// Secondaries (0xC0-0xFF) follow the generic secondary template; 0xC0 is the Stream Extension.
const FIRST_SECONDARY: u8 = 0xC0;
const STREAM_EXTENSION: u8 = 0xC0;
/// File entry: SecondaryCount @1, FileAttributes @4 (bit 4: directory).
const SECONDARY_COUNT: usize = 1;
const FILE_ATTRIBUTES: usize = 4;
const ATTR_DIRECTORY: u16 = 0x10;
/// Generic template: flags (GeneralPrimaryFlags @2 or GeneralSecondaryFlags @1), then
/// FirstCluster and DataLength where the bitmap entry has them. Flag bit 0:
/// AllocationPossible; bit 1: NoFatChain.
const PRIMARY_FLAGS: usize = 2;
const SECONDARY_FLAGS: usize = 1;
const ALLOCATION_POSSIBLE: u8 = 0x01;
const NO_FAT_CHAIN: u8 = 0x02;
/// FAT bytes cached at once while following chains.
const FAT_WINDOW: u64 = 64 << 10;

/// What the walk found.
#[derive(Debug, Default)]
pub(crate) struct FileClusters {
    /// Byte ranges of the clusters the tree's entries own (directories included).
    pub(crate) clusters: RangeSet,
    /// How many files and directories were found.
    pub(crate) files: u64,
}

/// Walks the tree from the root directory, whose clusters are `root`.
pub(crate) fn file_clusters(volume: &dyn ReadAt, boot: &BootSector, root: &[u64]) -> Result<FileClusters, Error> {
    let mut walk = Walk { volume, boot, fat: FatCache::default(), found: FileClusters::default() };
    let mut visited = HashSet::from([u64::from(boot.root_cluster)]);
    let mut pending = vec![root.to_vec()];
    while let Some(clusters) = pending.pop() {
        for &cluster in &clusters {
            walk.add(cluster..cluster + 1);
        }
        for (first, chain) in walk.directory(&clusters)? {
            if visited.insert(first) {
                pending.push(chain);
            }
        }
    }
    Ok(walk.found)
}

struct Walk<'a> {
    volume: &'a dyn ReadAt,
    boot: &'a BootSector,
    fat: FatCache,
    found: FileClusters,
}

/// Where an entry's clusters are.
struct Allocation {
    entry_offset: u64,
    flags: u8,
    first_cluster: u64,
    data_length: u64,
}

impl Walk<'_> {
    fn add(&mut self, clusters: Range<u64>) {
        self.found.clusters.insert(self.boot.cluster_offset(clusters.start)..self.boot.cluster_offset(clusters.end));
    }

    /// Adds the clusters of the entries of the directory stored in `clusters`; returns its
    /// sub-directories as (first cluster, clusters).
    fn directory(&mut self, clusters: &[u64]) -> Result<Vec<(u64, Vec<u64>)>, Error> {
        let mut subdirectories = Vec::new();
        let mut buf = vec![0u8; usize::try_from(self.boot.cluster_size).unwrap_or(0)];
        // The directory attribute of the File entry whose secondaries follow.
        let mut in_directory_set = false;
        let mut secondaries_left = 0u8;
        for &cluster in clusters {
            let offset = self.boot.cluster_offset(cluster);
            read_at(self.volume, || "directory", offset, &mut buf)?;
            for (index, entry) in buf.chunks_exact(ENTRY_LEN).enumerate() {
                let entry_offset = offset + (index * ENTRY_LEN) as u64;
                let entry_type = u8_at(entry, 0);
                if entry_type == END_OF_DIRECTORY {
                    return Ok(subdirectories);
                }
                let secondary = entry_type >= FIRST_SECONDARY;
                if secondary && secondaries_left > 0 {
                    secondaries_left -= 1;
                } else {
                    secondaries_left = 0;
                    in_directory_set = false;
                }
                if entry_type & IN_USE == 0 {
                    continue;
                }
                let generic = |flags_at: usize| Allocation {
                    entry_offset,
                    flags: u8_at(entry, flags_at),
                    first_cluster: u64::from(le32(entry, FIRST_CLUSTER)),
                    data_length: le64(entry, DATA_LENGTH),
                };
                let allocation = match entry_type {
                    FILE => {
                        self.found.files += 1;
                        secondaries_left = u8_at(entry, SECONDARY_COUNT);
                        in_directory_set = le16(entry, FILE_ATTRIBUTES) & ATTR_DIRECTORY != 0;
                        continue;
                    }
                    // Always allocated; contiguous, as the Linux driver reads them.
                    ALLOCATION_BITMAP | UPCASE_TABLE => {
                        Allocation { flags: ALLOCATION_POSSIBLE | NO_FAT_CHAIN, ..generic(0) }
                    }
                    t if BENIGN_PRIMARIES.contains(&t) => generic(PRIMARY_FLAGS),
                    t if t >= FIRST_SECONDARY && secondary => generic(SECONDARY_FLAGS),
                    _ => continue,
                };
                if allocation.flags & ALLOCATION_POSSIBLE == 0 || allocation.data_length == 0 {
                    continue;
                }
                let chain = self.chain(&allocation)?;
                // A Stream Extension inside the set of a File entry with the directory attribute.
                if entry_type == STREAM_EXTENSION && in_directory_set {
                    if allocation.data_length > MAX_DIRECTORY_BYTES {
                        return Err(Error::corrupt(
                            "directory entry",
                            entry_offset,
                            format!("a directory of {} bytes, more than {MAX_DIRECTORY_BYTES}", allocation.data_length),
                        ));
                    }
                    subdirectories.push((allocation.first_cluster, chain));
                } else {
                    for &cluster in &chain {
                        self.add(cluster..cluster + 1);
                    }
                }
                if entry_type == STREAM_EXTENSION {
                    in_directory_set = false;
                }
            }
        }
        Ok(subdirectories)
    }

    /// The clusters of an allocation: `DataLength` rounded up to clusters, contiguous with
    /// NoFatChain, else along the FAT.
    fn chain(&mut self, allocation: &Allocation) -> Result<Vec<u64>, Error> {
        let boot = self.boot;
        let count = allocation.data_length.div_ceil(boot.cluster_size);
        let first = allocation.first_cluster;
        let last_cluster = boot.cluster_count + 1;
        let end = first.checked_add(count);
        if first < 2 || first > last_cluster || count > boot.cluster_count {
            return Err(Error::corrupt(
                "directory entry",
                allocation.entry_offset,
                format!(
                    "FirstCluster {first} and DataLength {} do not lie inside clusters 2..={last_cluster}",
                    allocation.data_length
                ),
            ));
        }
        if allocation.flags & NO_FAT_CHAIN != 0 {
            if end.is_none_or(|end| end - 1 > last_cluster) {
                return Err(Error::corrupt(
                    "directory entry",
                    allocation.entry_offset,
                    format!("{count} contiguous clusters from cluster {first} run past cluster {last_cluster}"),
                ));
            }
            return Ok((first..first + count).collect());
        }
        let mut clusters = Vec::new();
        let mut cluster = first;
        // count <= cluster_count bounds the walk, loops included.
        for _ in 0..count {
            if !(2..=last_cluster).contains(&cluster) {
                return Err(Error::corrupt(
                    "directory entry",
                    allocation.entry_offset,
                    format!(
                        "the FAT chain from cluster {first} reaches {cluster} after {} of its {count} clusters",
                        clusters.len()
                    ),
                ));
            }
            clusters.push(cluster);
            cluster = u64::from(self.fat.entry(self.volume, boot, cluster)?);
        }
        Ok(clusters)
    }
}

/// A window of the active FAT, so that following a chain does not read 4 bytes at a time.
#[derive(Default)]
struct FatCache {
    start: u64,
    entries: Vec<u8>,
}

impl FatCache {
    fn entry(&mut self, volume: &dyn ReadAt, boot: &BootSector, cluster: u64) -> Result<u32, Error> {
        let offset = cluster * 4;
        let cached = offset >= self.start && offset + 4 <= self.start + self.entries.len() as u64;
        if !cached {
            let fat_bytes = (boot.cluster_count + 2) * 4;
            self.start = offset - offset % FAT_WINDOW;
            let len = FAT_WINDOW.min(fat_bytes.saturating_sub(self.start)).max(4);
            self.entries.resize(usize::try_from(len).unwrap_or(0), 0);
            read_at(volume, || "FAT", boot.active_fat_offset() + self.start, &mut self.entries)?;
        }
        Ok(le32(&self.entries, usize::try_from(offset - self.start).unwrap_or(usize::MAX)))
    }
}
