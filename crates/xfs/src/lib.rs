//! XFS (v4 and v5): which bytes of a volume are in use.
//!
//! Free means listed in an allocation group's by-block-number free-space B+tree (bnobt), the
//! map the kernel allocates from, or on its free list (AGFL: blocks held back for B+tree
//! splits, referenced by nothing, overwritten when taken; only with a clean log and no other
//! hazard, else they are kept); everything else is used: the superblock and AG headers of
//! every AG, inode chunks, every B+tree, the internal log, file data, and any tail of the
//! volume past the filesystem. This is partclone.xfs's rule and xfs_db `freesp -d`'s, with
//! checks they lack: checksums and self-describing fields of v5 metadata, B+tree depth,
//! pointers and loops, free list block numbers, and each AG's free count against its AGF.
//!
//! Hazards go to [`Allocation::unsafe_reasons`]: a dirty log (its transactions may allocate
//! blocks the on-disk B+trees still show free; see [`log`]), an external log device (whose
//! state this volume cannot show), a realtime section, and the needsrepair flag.
//!
//! References: libxfs/xfs_format.h, xfs_sb.c, xfs_alloc.c, xfs_alloc_btree.c,
//! xfs_log_recover.c, xfsprogs libxlog/util.c and db/freesp.c, partclone src/xfsclone.c, and
//! the team's notes (shared/journal-and-volumes.md §4).

#![forbid(unsafe_code)]

mod agf;
mod agfl;
mod bnobt;
mod checksum;
mod log;
mod superblock;

#[cfg(test)]
mod tests;

/// Why an XFS volume could not be analysed: the message names the structure and its byte offset.
pub use imgstream_volume::ParseError as Error;

use imgstream_blockio::ReadAt;
use imgstream_volume::fields::be16;
use imgstream_volume::{Allocation, RangeSet, read_at};
use log::LogState;
use std::io;
use superblock::{INCOMPAT_NEEDSREPAIR, SB_SECTSIZE, Superblock, XFS_SB_MAGIC};

/// The smallest sector, where every superblock field this crate reads lies.
const MIN_SECTOR: usize = 512;

/// Whether `volume` starts with an XFS superblock (magic "XFSB" at byte 0).
pub fn detect(volume: &dyn ReadAt) -> io::Result<bool> {
    if volume.size() < 4 {
        return Ok(false);
    }
    let mut magic = [0u8; 4];
    volume.read_exact_at(&mut magic, 0)?;
    Ok(u32::from_be_bytes(magic) == XFS_SB_MAGIC)
}

/// Which bytes of the XFS volume must be copied, with its hazards and facts for `info`.
pub fn analyze(volume: &dyn ReadAt) -> Result<Allocation, Error> {
    let sb = read_superblock(volume)?;
    let block_size = u64::from(sb.block_size);

    // The log first: a copy taken while mounted may hold AGFs and B+trees that disagree, which
    // is then the dirty log's doing, not corruption.
    let log_state = sb.log.map(|(start, blocks)| log::state(volume, &sb, start, blocks)).transpose()?;
    let unsafe_reasons = hazards(&sb, log_state.as_ref());
    let mut warnings = Vec::new();
    let (mut free, agfs, extent_count) = match free_space(volume, &sb) {
        Ok(found) => found,
        Err(error @ Error::Corrupt { .. }) if !unsafe_reasons.is_empty() => {
            warnings.push(format!("the free-space trees do not add up ({error}): every block is kept"));
            (RangeSet::new(), Vec::new(), 0)
        }
        Err(error) => return Err(error),
    };
    check_log_not_free(&sb, &free)?;

    // A dirty log may hold AGF and AGFL updates not yet written back: the free list is read
    // (and trusted) only when nothing else is in doubt.
    if unsafe_reasons.is_empty() {
        for (agno, agf) in (0..sb.ag_count).zip(&agfs) {
            match agfl::blocks(volume, &sb, agno, agf)? {
                Some(blocks) => {
                    for agbno in blocks {
                        free.insert(sb.byte_of(agno, agbno)..sb.byte_of(agno, agbno + 1));
                    }
                }
                None => warnings.push(format!(
                    "the free list of XFS AG {agno} does not match its ring size (written by a kernel before 4.5?): its {} blocks are kept",
                    agf.fl_count
                )),
            }
        }
        check_log_not_free(&sb, &free)?;
    }
    let used = free.complement(0..volume.size());
    let mut allocation = Allocation::new("xfs", block_size, used);
    // Each AG's header sectors (superblock, AGF, AGI, AGFL): an allocation rewrites its AGF.
    let headers = 4 * u64::from(sb.sector_size);
    allocation.map_ranges = (0..sb.ag_count).map(|agno| sb.byte_of(agno, 0)..sb.byte_of(agno, 0) + headers).collect();
    allocation.unsafe_reasons = unsafe_reasons;
    allocation.warnings = warnings;
    allocation.details = details(&sb, &free, extent_count, log_state.as_ref());
    Ok(allocation)
}

/// Every AG's AGF and the free extents of its by-block B+tree (volume byte ranges), with the
/// number of extents.
fn free_space(volume: &dyn ReadAt, sb: &Superblock) -> Result<(RangeSet, Vec<agf::Agf>, usize), Error> {
    let mut free = RangeSet::new();
    let mut agfs = Vec::new();
    let mut extent_count = 0usize;
    for agno in 0..sb.ag_count {
        let agf = agf::read(volume, sb, agno)?;
        let extents = bnobt::free_extents(volume, sb, agno, &agf)?;
        extent_count += extents.len();
        for extent in extents {
            free.insert(sb.byte_of(agno, extent.start)..sb.byte_of(agno, extent.end));
        }
        agfs.push(agf);
    }
    Ok((free, agfs, extent_count))
}

/// Refuses a volume whose internal log overlaps the free space found so far.
fn check_log_not_free(sb: &Superblock, free: &RangeSet) -> Result<(), Error> {
    let Some((start, blocks)) = sb.log else { return Ok(()) };
    let block_size = u64::from(sb.block_size);
    let log_bytes = start * block_size..(start + u64::from(blocks)) * block_size;
    if free.overlapping(log_bytes.clone()).next().is_some() {
        return Err(Error::corrupt(
            "superblock",
            superblock::SB_LOGSTART as u64,
            format!("the internal log (bytes {}..{}) overlaps free space", log_bytes.start, log_bytes.end),
        ));
    }
    Ok(())
}

/// Reads the primary superblock: its first 512 bytes give the sector size, over which v5
/// computes the checksum.
fn read_superblock(volume: &dyn ReadAt) -> Result<Superblock, Error> {
    let size = volume.size();
    let mut head = [0u8; MIN_SECTOR];
    if size < MIN_SECTOR as u64 {
        return Err(Error::corrupt("superblock", 0, format!("truncated: the volume is {size} bytes")));
    }
    read_at(volume, || "superblock", 0, &mut head)?;
    let sector = usize::from(be16(&head, SB_SECTSIZE));
    if !(MIN_SECTOR..=32768).contains(&sector) || !sector.is_power_of_two() || sector as u64 > size {
        // Superblock::parse names the bad sector size (or the magic, if that is wrong first).
        return Superblock::parse(&head, size);
    }
    let mut raw = vec![0u8; sector];
    read_at(volume, || "superblock", 0, &mut raw)?;
    Superblock::parse(&raw, size)
}

/// The states in which the free-space B+trees may not tell the whole truth.
fn hazards(sb: &Superblock, log_state: Option<&LogState>) -> Vec<String> {
    let mut reasons = Vec::new();
    match log_state {
        Some(LogState::Dirty(why)) => reasons.push(format!(
            "XFS log is dirty ({why}): mount and unmount it (or run xfs_repair) first; a snapshot taken under \
             fsfreeze (LVM, storage) has a dirty log too"
        )),
        Some(LogState::Clean | LogState::Empty) => {}
        None => reasons.push(
            "the XFS log is on an external device: whether it holds transactions to replay cannot be checked from this volume"
                .into(),
        ),
    }
    if sb.rblocks > 0 {
        reasons.push(format!(
            "the XFS filesystem has a realtime section ({} blocks on another device), which imgstream does not handle",
            sb.rblocks
        ));
    }
    if sb.incompat & INCOMPAT_NEEDSREPAIR != 0 {
        reasons.push("the XFS needsrepair flag is set: run xfs_repair first".into());
    }
    reasons
}

/// Facts for `imgstream info`.
fn details(
    sb: &Superblock,
    free: &RangeSet,
    extent_count: usize,
    log_state: Option<&LogState>,
) -> Vec<(String, String)> {
    let log = match log_state {
        Some(LogState::Clean) => "clean",
        Some(LogState::Empty) => "empty",
        Some(LogState::Dirty(_)) => "dirty",
        None => "external",
    };
    vec![
        ("version".into(), if sb.v5 { "v5 (CRC)" } else { "v4" }.into()),
        ("block size".into(), sb.block_size.to_string()),
        ("sector size".into(), sb.sector_size.to_string()),
        ("block count".into(), sb.dblocks.to_string()),
        ("allocation groups".into(), format!("{} of {} blocks", sb.ag_count, sb.ag_blocks)),
        ("free blocks".into(), (free.total() / u64::from(sb.block_size)).to_string()),
        ("free extents".into(), extent_count.to_string()),
        ("log".into(), log.into()),
    ]
}
