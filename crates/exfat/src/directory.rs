//! The root directory (exFAT specification §6 and §7): 32-byte entries, of which we need the
//! Allocation Bitmap (type 0x81, §7.1) and Up-case Table (0x82, §7.2) entries.

use crate::Error;
use crate::boot_region::BootSector;
use crate::fat;
use imgstream_blockio::ReadAt;
use imgstream_volume::fields::{le32, le64};
use imgstream_volume::read_at;

pub(crate) const ENTRY_LEN: usize = 32;
/// EntryType 0x00: end of directory; every later entry is unused.
pub(crate) const END_OF_DIRECTORY: u8 = 0x00;
pub(crate) const ALLOCATION_BITMAP: u8 = 0x81;
pub(crate) const UPCASE_TABLE: u8 = 0x82;
/// Field offsets shared by the two critical primary entries we read.
const BITMAP_FLAGS: usize = 1;
pub(crate) const FIRST_CLUSTER: usize = 20;
pub(crate) const DATA_LENGTH: usize = 24;
/// A directory is at most 256 MiB (§6.2.4.1 "DataLength ... 256MB").
pub(crate) const MAX_DIRECTORY_BYTES: u64 = 256 << 20;

/// A contiguous system file named by a root directory entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct SystemFile {
    /// Byte offset of its directory entry, for messages.
    pub entry_offset: u64,
    /// `BitmapFlags` bit 0 for bitmaps (which FAT it belongs to); 0 otherwise.
    pub index: u8,
    pub first_cluster: u64,
    pub data_length: u64,
}

/// What the root directory holds that matters here.
#[derive(Debug, Default)]
pub(crate) struct RootDirectory {
    /// The root directory's own clusters.
    pub clusters: Vec<u64>,
    pub bitmaps: Vec<SystemFile>,
    pub upcase: Option<SystemFile>,
}

/// Reads the root directory's entries up to the end-of-directory marker.
pub(crate) fn read_root(volume: &dyn ReadAt, boot: &BootSector) -> Result<RootDirectory, Error> {
    let max_clusters = (MAX_DIRECTORY_BYTES / boot.cluster_size).max(1);
    let clusters = fat::chain(volume, boot, u64::from(boot.root_cluster), max_clusters, "root directory")?;
    let mut root = RootDirectory::default();
    let mut buf = vec![0u8; usize::try_from(boot.cluster_size).unwrap_or(0)];
    'clusters: for &cluster in &clusters {
        let offset = boot.cluster_offset(cluster);
        read_at(volume, || "root directory", offset, &mut buf)?;
        for (index, entry) in buf.chunks_exact(ENTRY_LEN).enumerate() {
            let entry_offset = offset + (index * ENTRY_LEN) as u64;
            let entry_type = entry.first().copied().unwrap_or(END_OF_DIRECTORY);
            let file = || SystemFile {
                entry_offset,
                index: entry.get(BITMAP_FLAGS).copied().unwrap_or(0) & 1,
                first_cluster: u64::from(le32(entry, FIRST_CLUSTER)),
                data_length: le64(entry, DATA_LENGTH),
            };
            match entry_type {
                END_OF_DIRECTORY => break 'clusters,
                ALLOCATION_BITMAP => root.bitmaps.push(file()),
                UPCASE_TABLE => root.upcase = Some(SystemFile { index: 0, ..file() }),
                _ => {}
            }
        }
    }
    root.clusters = clusters;
    Ok(root)
}
