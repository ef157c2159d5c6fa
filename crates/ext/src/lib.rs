//! ext2, ext3 and ext4: which bytes of a volume are in use.
//!
//! This crate owns the on-disk rules that decide it: the superblock and its feature words,
//! the group descriptors (32 or 64 bytes, crc16 or crc32c checksums, meta_bg placement), and
//! the block bitmaps (cluster bitmaps with bigalloc, checksummed with metadata_csum). The
//! bitmap of a `BLOCK_UNINIT` group is computed from the layout, never read, exactly when
//! e2fsprogs does so. Everything no bitmap covers is reported used: the bytes before
//! `s_first_data_block` (block 0 with 1 KiB blocks) and the tail between the end of the
//! filesystem and the end of the volume. Each group's free count is cross-checked with its
//! descriptor: a clean filesystem always agrees, so a mismatch is corruption. Each group's
//! backup superblock and descriptor blocks are kept where the layout puts them, whatever its
//! bitmap says, and the blocks the inodes in use reference ([`inode_scan`]) are kept where a
//! bitmap marks them free, with a warning (without metadata_csum, or with `--deep-check`).
//!
//! When the journal needs recovery, the blocks its committed transactions and fast commits
//! allocate count as used too ([`recovery`]), and free counts are not cross-checked: the image
//! keeps the journal, which replays when the restored filesystem is mounted.
//!
//! Hazards that a valid filesystem can be in (a journal that needs recovery but cannot be
//! analysed, external journal, not cleanly unmounted, errors recorded, MMP in use) are reported
//! in [`Allocation::unsafe_reasons`]; the `fs` crate decides what to do with them.
//!
//! References: e2fsprogs lib/ext2fs (openfs.c, closefs.c, alloc_sb.c, rw_bitmaps.c, csum.c,
//! check_desc.c), the kernel's Documentation/filesystems/ext4, and the team's notes
//! (shared/crates.md §3.3, §3.4).

#![forbid(unsafe_code)]

mod block_bitmap;
mod block_map;
mod checksum;
mod fast_commit;
mod features;
mod group_desc;
mod inode_scan;
mod journal;
mod mmp;
mod recovery;
mod superblock;

#[cfg(test)]
mod tests;

/// Why an ext volume could not be analysed: the message names the structure and its byte offset.
pub use imgstream_volume::ParseError as Error;

use features::{incompat, ro_compat};
use group_desc::{BG_FREE_BLOCKS_COUNT_LO, BLOCK_UNINIT, DescriptorTable};
use imgstream_blockio::ReadAt;
use imgstream_volume::{Allocation, Classify, ErrorClass, RangeSet, read_at};
use recovery::Recovery;
use std::io;
use std::ops::Range;
use superblock::{STATE_ERROR, STATE_VALID, SUPERBLOCK_OFFSET, SUPERBLOCK_SIZE, Superblock};

/// Whether `volume` holds an ext2/3/4 superblock (magic 0xEF53 at byte 1080). A volume too
/// small to hold it is not ext.
pub fn detect(volume: &dyn ReadAt) -> io::Result<bool> {
    let magic_offset = SUPERBLOCK_OFFSET + superblock::S_MAGIC as u64;
    if volume.size() < magic_offset + 2 {
        return Ok(false);
    }
    let mut magic = [0u8; 2];
    volume.read_exact_at(&mut magic, magic_offset)?;
    Ok(u16::from_le_bytes(magic) == superblock::EXT_MAGIC)
}

/// Choices that change the answer.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Options {
    /// Scan the inodes even with metadata_csum (whose checksummed bitmaps are trusted otherwise).
    pub deep_check: bool,
}

/// Which bytes of the ext volume must be copied, with its hazards and facts for `info`, with the
/// default [`Options`].
pub fn analyze(volume: &dyn ReadAt) -> Result<Allocation, Error> {
    analyze_with(volume, &Options::default())
}

/// Which bytes of the ext volume must be copied, with its hazards and facts for `info`.
///
/// The block bitmaps are cross-checked with the blocks the inodes in use reference (the
/// `inode_scan` module) on every filesystem without metadata_csum, and on all with
/// [`Options::deep_check`]; blocks that files reference but a bitmap marks free are kept, with a
/// warning.
pub fn analyze_with(volume: &dyn ReadAt, options: &Options) -> Result<Allocation, Error> {
    let size = volume.size();
    let superblock_end = SUPERBLOCK_OFFSET + SUPERBLOCK_SIZE as u64;
    if size < superblock_end {
        return Err(Error::corrupt(
            "superblock",
            SUPERBLOCK_OFFSET,
            format!("truncated: the volume is {size} bytes, the superblock ends at byte {superblock_end}"),
        ));
    }
    let mut raw = [0u8; SUPERBLOCK_SIZE];
    read_at(volume, || "superblock", SUPERBLOCK_OFFSET, &mut raw)?;
    let sb = Superblock::parse(&raw, size)?;

    let mut unsafe_reasons = hazards(&sb);
    if sb.has_incompat(incompat::MMP) {
        unsafe_reasons.extend(mmp::hazard(volume, &sb)?);
    }
    let recovery =
        if sb.has_incompat(incompat::RECOVER) { Some(journal_view(volume, &sb, &mut unsafe_reasons)?) } else { None };
    let mut warnings = Vec::new();
    let (mut used, free_clusters, map_ranges) = used_ranges(volume, &sb, recovery.as_ref(), &mut warnings)?;
    let (scan_detail, scan_warning) = if recovery.is_some() {
        // The inodes on disk predate the journal's transactions, which may free and reuse
        // their blocks (an old indirect block may hold new data): only the replayed view
        // could be scanned.
        ("skipped: the journal needs recovery, so the inodes on disk are not current".to_owned(), None)
    } else if sb.has_ro_compat(ro_compat::METADATA_CSUM) && !options.deep_check {
        ("skipped: metadata_csum checksums the bitmaps (--deep-check scans anyway)".to_owned(), None)
    } else {
        add_file_blocks(volume, &sb, &mut used)?
    };

    let mut allocation = Allocation::new(sb.features.blkid_name(), sb.cluster_size(), used);
    allocation.map_ranges = map_ranges;
    allocation.unsafe_reasons = unsafe_reasons;
    allocation.warnings = warnings;
    allocation.warnings.extend(scan_warning);
    allocation.details = details(&sb, free_clusters);
    if let Some(recovery) = recovery.filter(|_| allocation.unsafe_reasons.is_empty()) {
        allocation.details.push(("journal".into(), recovery.summary()));
    }
    allocation.details.push(("inode scan".into(), scan_detail));
    Ok(allocation)
}

/// What the journal of a filesystem that needs recovery adds to its bitmaps. When the log cannot
/// be judged, nothing (the on-disk bitmaps alone, for `--force`) and the reason in `reasons`.
fn journal_view(volume: &dyn ReadAt, sb: &Superblock, reasons: &mut Vec<String>) -> Result<Recovery, Error> {
    let why_not = if sb.external_journal().is_some() {
        "it is on an external device".to_owned()
    } else if !sb.has_compat(features::compat::HAS_JOURNAL) || sb.journal_inum == 0 {
        "the filesystem has no journal".to_owned()
    } else {
        match Recovery::analyze(volume, sb) {
            Ok(recovery) => return Ok(recovery),
            Err(error) if error.class() == ErrorClass::Io => return Err(error),
            Err(error) => error.to_string(),
        }
    };
    reasons.insert(0, format!(
        "the journal needs recovery (needs_recovery is set) and cannot be analysed: {why_not}; committed transactions may allocate blocks that the on-disk bitmaps still show as free; mount the filesystem or run e2fsck to replay it first"
    ));
    Ok(Recovery::default())
}

/// Adds to `used` the clusters that inodes in use reference but the bitmaps mark free. Returns
/// the `info` detail and, on a mismatch, the warning.
fn add_file_blocks(
    volume: &dyn ReadAt,
    sb: &Superblock,
    used: &mut RangeSet,
) -> Result<(String, Option<String>), Error> {
    let found = inode_scan::file_blocks(volume, sb)?;
    let missing = found.blocks.difference(used);
    let inodes = found.inodes;
    if missing.is_empty() {
        return Ok((format!("{inodes} inodes in use, every block of theirs marked in the block bitmaps"), None));
    }
    let blocks = missing.total() >> sb.block_bits;
    let first = missing.iter().next().map_or(0, |r| r.start >> sb.block_bits);
    // The bitmaps count clusters: keep the whole clusters around the missing blocks.
    let cluster = sb.cluster_size();
    for range in missing.iter() {
        used.insert(range.start / cluster * cluster..(range.end.div_ceil(cluster) * cluster).min(volume.size()));
    }
    let detail = format!("{inodes} inodes in use, {blocks} blocks of theirs free in the block bitmaps (kept)");
    let warning = format!(
        "{blocks} blocks used by files but free in the block bitmaps (the first is block {first}): kept; run e2fsck"
    );
    Ok((detail, Some(warning)))
}

/// The states in which the on-disk bitmaps may not tell the whole truth.
fn hazards(sb: &Superblock) -> Vec<String> {
    let mut reasons = Vec::new();
    if let Some(journal) = sb.external_journal() {
        reasons.push(format!("the journal is on an external device ({journal}): whether it holds transactions to replay cannot be checked from this volume"));
    }
    if sb.state & STATE_VALID == 0 {
        reasons.push(format!("the filesystem was not cleanly unmounted (s_state 0x{:x} lacks the valid bit): its bitmaps may be stale; run e2fsck first", sb.state));
    }
    if sb.state & STATE_ERROR != 0 {
        reasons.push(format!(
            "the kernel recorded errors in this filesystem (s_state 0x{:x} has the error bit): run e2fsck first",
            sb.state
        ));
    }
    reasons
}

/// The used byte ranges of the volume, the number of free clusters, and where the allocation
/// map lives (superblock, descriptor blocks, block bitmaps, and the journal when it needs
/// recovery); with `recovery`, including what the journal allocates.
fn used_ranges(
    volume: &dyn ReadAt,
    sb: &Superblock,
    recovery: Option<&Recovery>,
    warnings: &mut Vec<String>,
) -> Result<(RangeSet, u64, RangeSet), Error> {
    let size = volume.size();
    let block_bytes = |blocks: Range<u64>| (blocks.start << sb.block_bits)..(blocks.end << sb.block_bits);
    let cluster_bytes = |clusters: Range<u64>| {
        let shift = sb.block_bits + sb.cluster_bits;
        (clusters.start << shift)..(clusters.end << shift)
    };
    // Whole clusters around a block range, in blocks.
    let round_to_clusters = |blocks: Range<u64>| {
        let ratio = 1u64 << sb.cluster_bits;
        (blocks.start & !(ratio - 1))..blocks.end.div_ceil(ratio) * ratio
    };

    // From the bitmaps, group by group, in ascending order (so that inserting is cheap).
    let mut from_bitmaps = RangeSet::new();
    // Everything else, merged in at the end.
    let mut extra: Vec<Range<u64>> = vec![
        // Before s_first_data_block (boot loaders), the superblock and the rest of its block:
        // always, whatever a bitmap bit says.
        0..block_bytes(0..sb.first_data_block + 1).end.max(SUPERBLOCK_OFFSET + SUPERBLOCK_SIZE as u64),
        // Outside every bitmap: after the filesystem.
        block_bytes(0..sb.blocks_count).end..size,
    ];

    let honour_uninit = sb.has_group_desc_csum();
    let per_block = sb.descs_per_block();
    let mut table = DescriptorTable::new(volume, sb);
    let mut free_total = 0u64;
    let mut map = RangeSet::from_range(SUPERBLOCK_OFFSET..SUPERBLOCK_OFFSET + SUPERBLOCK_SIZE as u64);
    if let Some(recovery) = recovery {
        extra.extend(recovery.fast_commit_blocks.iter().map(|blocks| block_bytes(round_to_clusters(blocks.clone()))));
        for blocks in &recovery.journal_blocks {
            map.insert(block_bytes(blocks.clone()));
        }
    }
    for group in 0..sb.groups {
        // Verified (checksum and locations) before anything in it is trusted.
        let desc = table.get(group)?;
        let clusters = sb.clusters_in_group(group);
        let first_cluster = sb.group_first_block(group) >> sb.cluster_bits;
        // BLOCK_UNINIT counts only with descriptor checksums, which `get` verified.
        let free = if let Some(recovery) = recovery {
            let bitmap = recovery.group_bitmap(volume, sb, group, &desc, warnings)?;
            let base = first_cluster << (sb.block_bits + sb.cluster_bits);
            from_bitmaps.insert_bitmap(&bitmap, clusters, base, sb.cluster_size());
            block_bitmap::count_free(&bitmap, clusters)
        } else if honour_uninit && desc.flags & BLOCK_UNINIT != 0 {
            let used = block_bitmap::uninit_used_clusters(sb, group, &desc);
            for range in used.iter() {
                from_bitmaps.insert(cluster_bytes(range));
            }
            // `used` is clipped to the group's clusters.
            clusters.saturating_sub(used.total())
        } else {
            let bitmap = block_bitmap::read_bitmap(volume, sb, group, &desc)?;
            from_bitmaps.insert_bitmap(
                &bitmap,
                clusters,
                first_cluster << (sb.block_bits + sb.cluster_bits),
                sb.cluster_size(),
            );
            block_bitmap::count_free(&bitmap, clusters)
        };
        // This group's descriptor block and own metadata, wherever they lie: a superset of
        // what the bitmaps say. On a sane filesystem they are already covered (by this group's
        // bitmap, or with flex_bg by an earlier group's), so `extra` stays small.
        let mut metadata = vec![
            desc.block_bitmap..desc.block_bitmap + 1,
            desc.inode_bitmap..desc.inode_bitmap + 1,
            desc.inode_table..desc.inode_table + sb.inode_table_blocks(),
        ];
        if group % per_block == 0 {
            let block = table.block_location(group / per_block)?;
            metadata.push(block..block + 1);
            map.insert(block_bytes(block..block + 1));
        }
        map.insert(block_bytes(desc.block_bitmap..desc.block_bitmap + 1));
        for blocks in metadata {
            let bytes = block_bytes(round_to_clusters(blocks));
            if !from_bitmaps.contains_range(bytes.clone()) {
                extra.push(bytes);
            }
        }
        // And its backup superblock and descriptor blocks, which the layout places: a bitmap
        // bit cleared over them must not zero them.
        for clusters in block_bitmap::uninit_used_clusters(sb, group, &desc).iter() {
            let bytes = cluster_bytes(clusters);
            if !from_bitmaps.contains_range(bytes.clone()) {
                extra.push(bytes);
            }
        }
        // Recovery may leave free counts behind the bitmaps; they are rewritten at replay.
        if free != desc.free_clusters && recovery.is_none() {
            let source = if honour_uninit && desc.flags & BLOCK_UNINIT != 0 {
                "the layout of this BLOCK_UNINIT group leaves"
            } else {
                "its block bitmap has"
            };
            return Err(Error::corrupt(
                format!("group descriptor {group}"),
                desc.offset + BG_FREE_BLOCKS_COUNT_LO as u64,
                format!("free count {} but {source} {free} free of {clusters} clusters", desc.free_clusters),
            ));
        }
        free_total += free;
    }

    extra.sort_by_key(|r| r.start);
    Ok((merge(&from_bitmaps, &extra).clipped(size), free_total, map.clipped(size)))
}

/// The union of a set and sorted ranges, in one ascending pass (inserting in order is cheap).
fn merge(set: &RangeSet, sorted: &[Range<u64>]) -> RangeSet {
    let mut merged = RangeSet::new();
    let mut left = set.iter().peekable();
    let mut right = sorted.iter().cloned().peekable();
    loop {
        let next = match (left.peek(), right.peek()) {
            (Some(a), Some(b)) if a.start <= b.start => left.next(),
            (Some(_), Some(_)) | (None, Some(_)) => right.next(),
            (Some(_), None) => left.next(),
            (None, None) => break,
        };
        if let Some(range) = next {
            merged.insert(range);
        }
    }
    merged
}

/// Facts for `imgstream info`.
fn details(sb: &Superblock, free_clusters: u64) -> Vec<(String, String)> {
    let mut details = vec![("block size".to_owned(), sb.block_size().to_string())];
    if sb.has_ro_compat(ro_compat::BIGALLOC) {
        details.push(("cluster size".into(), sb.cluster_size().to_string()));
    }
    details.push(("block count".into(), sb.blocks_count.to_string()));
    details.push(("block groups".into(), sb.groups.to_string()));
    details.push(("free blocks".into(), (free_clusters << sb.cluster_bits).to_string()));
    details.push(("features".into(), sb.features.names()));
    if !sb.volume_name.is_empty() {
        details.push(("label".into(), sb.volume_name.clone()));
    }
    details.push(("UUID".into(), superblock::format_uuid(&sb.uuid)));
    let state = match (sb.state & STATE_VALID != 0, sb.state & STATE_ERROR != 0) {
        (true, false) => "clean",
        (true, true) => "clean with errors",
        (false, false) => "not clean",
        (false, true) => "not clean with errors",
    };
    details.push(("state".into(), state.into()));
    if !sb.last_mounted.is_empty() {
        details.push(("last mounted on".into(), sb.last_mounted.clone()));
    }
    details
}
