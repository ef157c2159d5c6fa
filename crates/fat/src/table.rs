//! The File Allocation Table (fatgen103 §4): one entry per cluster; 0 means free.
//!
//! Every FAT copy is read, in bounded chunks, and a cluster is in use if its entry is non-zero
//! in any copy (so copies that disagree can only make us copy more). A FAT32 entry counts as
//! non-zero if any of its 32 bits is set, even the 4 reserved ones: fatgen103 says to ignore
//! them, but an entry whose only set bits are reserved is not one we can prove free.
//! Entry 1 carries the FAT16/32 "clean shutdown" and "no hard error" bits (fatgen103 §4.1).

use crate::Error;
use crate::boot_sector::{BootSector, FatType};
use imgstream_blockio::ReadAt;
use imgstream_volume::read_at;

/// Entries decoded per read: even (so that a FAT12 chunk starts on a byte boundary) and small
/// enough that a chunk stays at most 1 MiB.
const CHUNK_ENTRIES: u64 = 256 * 1024;

/// Entry 1: FAT16 "volume cleanly unmounted" bit (clear = dirty).
const FAT16_CLEAN_SHUTDOWN: u32 = 0x8000;
/// Entry 1: FAT16 "no disk I/O error" bit (clear = errors were met).
const FAT16_NO_HARD_ERROR: u32 = 0x4000;
/// Entry 1: FAT32 "volume cleanly unmounted" bit.
const FAT32_CLEAN_SHUTDOWN: u32 = 0x0800_0000;
/// Entry 1: FAT32 "no disk I/O error" bit.
const FAT32_NO_HARD_ERROR: u32 = 0x0400_0000;

/// One bit per data cluster: bit `k` stands for cluster `k + 2`, LSB-first, as
/// [`imgstream_volume::RangeSet::insert_bitmap`] wants.
#[derive(Clone, Debug)]
pub(crate) struct ClusterBits {
    bytes: Vec<u8>,
    cluster_count: u64,
}

impl ClusterBits {
    fn new(cluster_count: u64) -> Self {
        // cluster_count <= FAT32_MAX_CLUSTERS, validated against the volume size: at most 32 MiB.
        Self { bytes: vec![0; usize::try_from(cluster_count.div_ceil(8)).unwrap_or(0)], cluster_count }
    }

    fn set(&mut self, cluster: u64) {
        let k = cluster.wrapping_sub(2);
        if k >= self.cluster_count {
            return;
        }
        if let Some(byte) = usize::try_from(k / 8).ok().and_then(|i| self.bytes.get_mut(i)) {
            *byte |= 1 << (k % 8);
        }
    }

    pub(crate) fn get(&self, cluster: u64) -> bool {
        let k = cluster.wrapping_sub(2);
        k < self.cluster_count
            && usize::try_from(k / 8).ok().and_then(|i| self.bytes.get(i)).is_some_and(|b| b >> (k % 8) & 1 == 1)
    }

    fn count(&self) -> u64 {
        self.bytes.iter().map(|b| u64::from(b.count_ones())).sum()
    }

    pub(crate) fn as_bitmap(&self) -> &[u8] {
        &self.bytes
    }
}

/// What the FATs say.
#[derive(Debug)]
pub(crate) struct TableScan {
    /// Clusters whose entry is non-zero in some FAT copy, plus free clusters a chain links to.
    pub used: ClusterBits,
    /// Number of clusters set in `used`.
    pub used_count: u64,
    /// Entry 1 of the first FAT.
    pub entry1: u32,
    /// Clusters that some copy marks free and another marks in use.
    pub copies_disagree: u64,
    /// Clusters marked bad in the first FAT.
    pub bad_clusters: u64,
    /// Chain links (first FAT) to a cluster marked free in every copy; those clusters are kept.
    pub links_to_free: u64,
    /// Chain links (first FAT) to a cluster number that does not exist, or the reserved value 1.
    pub links_out_of_range: u64,
}

impl TableScan {
    /// Whether entry 1 says the volume was not cleanly unmounted (FAT16/32 only).
    pub(crate) fn dirty(&self, fat_type: FatType) -> bool {
        match fat_type {
            FatType::Fat12 => false,
            FatType::Fat16 => self.entry1 & FAT16_CLEAN_SHUTDOWN == 0,
            FatType::Fat32 => self.entry1 & FAT32_CLEAN_SHUTDOWN == 0,
        }
    }

    /// Whether entry 1 says disk I/O errors were met (FAT16/32 only).
    pub(crate) fn hard_error(&self, fat_type: FatType) -> bool {
        match fat_type {
            FatType::Fat12 => false,
            FatType::Fat16 => self.entry1 & FAT16_NO_HARD_ERROR == 0,
            FatType::Fat32 => self.entry1 & FAT32_NO_HARD_ERROR == 0,
        }
    }
}

/// Calls `visit(cluster, entry)` for entries 0 to `cluster_count + 1` of FAT `index`.
fn for_each_entry(
    volume: &dyn ReadAt,
    boot: &BootSector,
    index: u64,
    mut visit: impl FnMut(u64, u32),
) -> Result<(), Error> {
    let fat_type = boot.fat_type;
    let bits = fat_type.entry_bits();
    let entries = boot.cluster_count + 2;
    let base = boot.fat_offset(index);
    let mut buf = Vec::new();
    let mut first = 0;
    while first < entries {
        let count = CHUNK_ENTRIES.min(entries - first);
        // `first` is even, so the chunk starts on a byte boundary; FAT12's last entry may need
        // half a byte more, which the FAT size check in BootSector::parse guarantees is there.
        let len = (count * bits).div_ceil(8);
        buf.resize(usize::try_from(len).unwrap_or(0), 0);
        read_at(volume, || fat_structure(index), base + first * bits / 8, &mut buf)?;
        for i in 0..count {
            visit(first + i, decode(&buf, i, fat_type));
        }
        first += count;
    }
    Ok(())
}

/// Entry `i` of a chunk that starts at an even entry.
fn decode(chunk: &[u8], i: u64, fat_type: FatType) -> u32 {
    let at = |offset: u64, len: usize| -> u32 {
        let start = usize::try_from(offset).unwrap_or(usize::MAX);
        let mut le = [0u8; 4];
        for (k, byte) in le.iter_mut().take(len).enumerate() {
            *byte = start.checked_add(k).and_then(|p| chunk.get(p)).copied().unwrap_or(0);
        }
        u32::from_le_bytes(le)
    };
    match fat_type {
        FatType::Fat12 => {
            let pair = at(i * 3 / 2, 2);
            if i % 2 == 0 { pair & 0xFFF } else { pair >> 4 }
        }
        FatType::Fat16 => at(i * 2, 2),
        FatType::Fat32 => at(i * 4, 4),
    }
}

/// "FAT 1", "FAT 2", ... for messages.
fn fat_structure(index: u64) -> &'static str {
    const NAMES: [&str; 4] = ["FAT 1", "FAT 2", "FAT 3", "FAT 4"];
    NAMES.get(usize::try_from(index).unwrap_or(usize::MAX)).copied().unwrap_or("FAT copy")
}

/// Reads every FAT copy and decides which clusters are in use.
pub(crate) fn scan(volume: &dyn ReadAt, boot: &BootSector) -> Result<TableScan, Error> {
    let fat_type = boot.fat_type;
    let mut first_copy = ClusterBits::new(boot.cluster_count);
    let mut entry1 = 0;
    let mut bad_clusters = 0;
    for_each_entry(volume, boot, 0, |cluster, entry| {
        if cluster == 1 {
            entry1 = entry;
        } else if cluster >= 2 && entry != 0 {
            first_copy.set(cluster);
            if entry & fat_type.link_mask() == fat_type.bad_cluster() {
                bad_clusters += 1;
            }
        }
    })?;
    let mut used = first_copy.clone();
    // Each cluster counts once, however many copies disagree on it.
    let mut disagreeing = ClusterBits::new(boot.cluster_count);
    for index in 1..boot.num_fats {
        for_each_entry(volume, boot, index, |cluster, entry| {
            if cluster >= 2 && (entry != 0) != first_copy.get(cluster) {
                disagreeing.set(cluster);
                used.set(cluster);
            }
        })?;
    }
    let copies_disagree = disagreeing.count();
    // A link to a cluster that every copy marks free means the FAT contradicts itself: keep
    // that cluster, it may hold the rest of a file.
    let max_cluster = boot.cluster_count + 1;
    let (mut links_to_free, mut links_out_of_range) = (0, 0);
    let mut linked_free = Vec::new();
    for_each_entry(volume, boot, 0, |cluster, entry| {
        let link = entry & fat_type.link_mask();
        if cluster < 2 || entry == 0 || link >= fat_type.bad_cluster() {
            return;
        }
        let link = u64::from(link);
        if link < 2 || link > max_cluster {
            links_out_of_range += 1;
        } else if !used.get(link) {
            links_to_free += 1;
            linked_free.push(link);
        }
    })?;
    for cluster in linked_free {
        used.set(cluster);
    }
    let used_count = used.count();
    Ok(TableScan { used, used_count, entry1, copies_disagree, bad_clusters, links_to_free, links_out_of_range })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fat12_entries_straddle_bytes() {
        // Entries 0..4 = 0xFF8, 0xFFF, 0x003, 0xABC packed as fatgen103 §4 shows.
        let chunk = [0xF8, 0xFF, 0xFF, 0x03, 0xC0, 0xAB];
        let decoded: Vec<u32> = (0..4).map(|i| decode(&chunk, i, FatType::Fat12)).collect();
        assert_eq!(decoded, [0xFF8, 0xFFF, 0x003, 0xABC]);
        // Past the end of the chunk: zero, no panic.
        assert_eq!(decode(&chunk, 10, FatType::Fat12), 0);
    }

    #[test]
    fn cluster_bits_ignore_reserved_and_out_of_range_clusters() {
        let mut bits = ClusterBits::new(10);
        for cluster in [0, 1, 2, 11, 12, u64::MAX] {
            bits.set(cluster);
        }
        assert!(bits.get(2) && bits.get(11));
        assert!(!bits.get(0) && !bits.get(1) && !bits.get(12));
        assert_eq!(bits.count(), 2);
    }
}
