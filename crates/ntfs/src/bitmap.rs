//! `$Bitmap` (MFT record 6): one bit per cluster, LSB first, set = in use.
//!
//! Bits at and past `total_clusters` are padding (mkntfs and ntfsresize set them to 1) and are
//! ignored; the bytes past the last whole cluster are outside the bitmap's coverage and the
//! caller copies them raw.

use crate::boot_sector::BootSector;
use crate::data_runs::{Stream, read_at};
use crate::error::Error;
use imgstream_blockio::ReadAt;
use imgstream_volume::RangeSet;

/// The bitmap is read in pieces of this many bytes (8 Mi clusters each), so a multi-TB
/// volume's bitmap never sits in memory whole.
const CHUNK_BYTES: u64 = 1 << 20;

/// The byte ranges of the clusters `$Bitmap` marks in use.
pub(crate) fn used_clusters(
    volume: &dyn ReadAt,
    boot: &BootSector,
    bitmap: &Stream,
    record_position: u64,
) -> Result<RangeSet, Error> {
    let needed = boot.total_clusters.div_ceil(8);
    if bitmap.data_size() < needed {
        return Err(Error::corrupt(
            "$Bitmap (MFT record 6)",
            record_position,
            format!("its $DATA is {} bytes, but {} clusters need {needed}", bitmap.data_size(), boot.total_clusters),
        ));
    }
    let mut used = RangeSet::new();
    let mut chunk = vec![0u8; usize::try_from(CHUNK_BYTES.min(needed)).unwrap_or(0)];
    let mut offset = 0u64;
    while offset < needed {
        let len = (needed - offset).min(CHUNK_BYTES);
        let bytes = chunk.get_mut(..usize::try_from(len).unwrap_or(0)).unwrap_or_default();
        read_at(volume, bitmap, offset, bytes)?;
        let first_cluster = offset * 8;
        let clusters = (boot.total_clusters - first_cluster).min(len * 8);
        used.insert_bitmap(bytes, clusters, first_cluster * boot.cluster_size, boot.cluster_size);
        offset += len;
    }
    Ok(used)
}
