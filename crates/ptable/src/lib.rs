//! Partition tables: which byte ranges of a disk are partitions, and which are not.
//!
//! [`read_layout`] reads a GPT (512- or 4096-byte sectors, falling back to the backup header
//! when the primary is damaged) or an MBR with its chain of logical partitions, and answers
//! with a [`DiskLayout`]: the partitions, and the raw areas outside them (the MBR, GPT headers
//! and arrays, the gap before the first partition where boot loaders live, EBRs and gaps
//! between partitions, the backup GPT at the end), which a disk image must copy verbatim.
//! A disk whose sector 0 holds a filesystem, or no partition table at all, is one volume.
//!
//! gptman and mbrman do the reading, as the project asked, but only after our own checks of
//! every header, count and LBA against the disk size, and their answer is compared with ours:
//! a crafted table gives an [`Error`], never a panic, a loop or an allocation sized from disk.

#![forbid(unsafe_code)]

mod bytes;
mod gpt;
mod mbr;
mod types;
mod vbr;

pub use gpt::{Relocation, clear_stale_backup_header, move_backup_to_end};
pub use types::{PartitionType, partition_type};

use imgstream_blockio::ReadAt;
use imgstream_extents::RangeSet;
use std::io;
use std::ops::Range;

/// Logical sector sizes a disk may have.
pub const SECTOR_SIZES: [u32; 4] = [512, 1024, 2048, 4096];

/// The kind of partition table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TableKind {
    /// GUID Partition Table.
    Gpt,
    /// MBR ("dos" in sfdisk), with logical partitions in an extended one.
    Mbr,
    /// No partition table: the whole disk is one volume.
    None,
}

impl TableKind {
    /// The name sfdisk uses ("gpt", "dos"), or "none".
    pub fn name(self) -> &'static str {
        match self {
            TableKind::Gpt => "gpt",
            TableKind::Mbr => "dos",
            TableKind::None => "none",
        }
    }

    /// The kind [`TableKind::name`] names, if any.
    pub fn from_name(name: &str) -> Option<Self> {
        [TableKind::Gpt, TableKind::Mbr, TableKind::None].into_iter().find(|kind| kind.name() == name)
    }

    /// The disk in words, for messages: "GPT disk", "MBR disk", "disk without a partition table".
    pub fn disk_words(self) -> &'static str {
        match self {
            TableKind::Gpt => "GPT disk",
            TableKind::Mbr => "MBR disk",
            TableKind::None => "disk without a partition table",
        }
    }
}

/// One partition, in bytes from the start of the disk.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Partition {
    /// Its number: the GPT entry number, or 1-4 (primary) and 5.. (logical) for an MBR, as
    /// Linux and sfdisk number them. 1 for the whole disk when there is no table.
    pub index: u32,
    /// First byte.
    pub start: u64,
    /// Length in bytes.
    pub len: u64,
    /// The type as sfdisk prints it: a GUID (`0FC63DAF-8483-4772-8E79-3D69D8477DE4`) or an MBR
    /// id in hex (`83`, `7`, `c`). Empty when there is no table.
    pub type_id: String,
    /// GPT: the unique partition GUID; MBR: empty.
    pub uuid: String,
    /// GPT: the partition name; MBR: empty.
    pub name: String,
    /// MBR: the active (boot) flag.
    pub bootable: bool,
}

impl Partition {
    /// The byte range it covers.
    pub fn range(&self) -> Range<u64> {
        self.start..self.start + self.len
    }
}

/// Where a piece of the partition table lives (for `info` and for the overlap checks).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Structure {
    /// What it is: "protective MBR", "primary GPT header", "EBR of partition 5", ...
    pub what: String,
    /// Its bytes.
    pub range: Range<u64>,
}

impl Structure {
    pub(crate) fn new(what: impl Into<String>, range: Range<u64>) -> Self {
        Self { what: what.into(), range }
    }
}

/// What a disk holds.
#[derive(Clone, Debug)]
pub struct DiskLayout {
    /// GPT, MBR or none.
    pub table: TableKind,
    /// Disk size in bytes.
    pub size: u64,
    /// Logical sector size the table was read with.
    pub sector_size: u32,
    /// GPT disk GUID, or the MBR disk signature as 8 hex digits (`0x1234abcd`); empty for none.
    pub disk_id: String,
    /// The partitions, in table order (logical partitions after the primaries).
    pub partitions: Vec<Partition>,
    /// MBR: the extended partition that contains the logical ones (not itself a volume).
    pub extended: Option<Range<u64>>,
    /// The table's own sectors.
    pub structures: Vec<Structure>,
    /// Everything outside the partitions: copied verbatim by a disk image.
    pub raw: RangeSet,
    /// GPT: sector 0 is a plain protective MBR (one 0xEE entry), which may be rewritten for a
    /// larger disk; false for a hybrid MBR.
    pub protective_mbr_only: bool,
    /// What the user should know: a damaged primary GPT, a hybrid MBR, a misplaced backup.
    pub warnings: Vec<String>,
    /// When there is no table: the filesystem signature found at sector 0, if any.
    pub filesystem_at_start: Option<&'static str>,
}

/// Why a partition table cannot be used. Each message names the structure and its byte offset.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Reading one of the table's structures failed.
    #[error("reading the {structure} at byte {offset}: {source}")]
    Read {
        /// What was being read, e.g. "backup GPT header".
        structure: String,
        /// Byte offset of the read.
        offset: u64,
        /// The underlying error.
        source: io::Error,
    },
    /// Any other I/O on the disk failed (gptman's reads, rewriting a target's table).
    #[error("{0}")]
    Io(#[from] io::Error),
    /// The table is inconsistent: bad checksums in both copies, partitions overlapping or past
    /// the end, a looping EBR chain.
    #[error("corrupt partition table: {0}")]
    Corrupt(String),
    /// A valid table this crate does not handle (several extended partitions, nested ones,
    /// unusual entry sizes, a sector size gptman cannot use).
    #[error("unsupported partition table: {0}")]
    Unsupported(String),
}

pub(crate) fn corrupt(message: String) -> Error {
    Error::Corrupt(message)
}

/// Reads `buf.len()` bytes of `structure` at `offset`, naming it on failure.
pub(crate) fn read_at(disk: &dyn ReadAt, structure: &str, offset: u64, buf: &mut [u8]) -> Result<(), Error> {
    disk.read_exact_at(buf, offset).map_err(|source| Error::Read { structure: structure.to_owned(), offset, source })
}

/// How many bytes of the disk start we look at for filesystem signatures (ext's magic is at 1080).
const HEAD_SIZE: u64 = 2048;

/// Reads the partition table of `disk`. `sector_size` is the device's logical sector size for a
/// block device; `None` (an image file) probes 512 then 4096 for a GPT and uses 512 for an MBR.
pub fn read_layout(disk: &dyn ReadAt, sector_size: Option<u32>) -> Result<DiskLayout, Error> {
    if let Some(ss) = sector_size {
        if !SECTOR_SIZES.contains(&ss) {
            return Err(Error::Unsupported(format!("logical sector size {ss} is not one of {SECTOR_SIZES:?}")));
        }
    }
    let size = disk.size();
    let mut head = vec![0u8; usize::try_from(size.min(HEAD_SIZE)).unwrap_or(0)];
    read_at(disk, "disk's first sectors", 0, &mut head)?;
    // Less than one sector (of the size the device reports) cannot hold a table.
    let smallest = sector_size.map_or(mbr::RECORD_SIZE as u64, u64::from).max(mbr::RECORD_SIZE as u64);
    if size < smallest {
        return Ok(whole_disk(
            size,
            sector_size.unwrap_or(512),
            None,
            vec![format!("the disk is only {size} bytes, too small for a partition table")],
        ));
    }
    let structurally_valid = mbr::is_structurally_valid(&head);
    let entries = mbr::entries(&head);
    if structurally_valid && entries.iter().any(|e| e.sys == mbr::PROTECTIVE_TYPE) {
        return gpt_layout(disk, sector_size, &entries);
    }
    let no_used_entry = !entries.iter().any(mbr::Entry::is_used);
    let filesystem = vbr::filesystem_at_start(&head)
        .or_else(|| no_used_entry.then(|| vbr::damaged_filesystem_at_start(&head)).flatten());
    let ss = sector_size.unwrap_or(512);
    let disk_sectors = size / u64::from(ss);
    // A boot sector can look like an MBR; only a table whose used entries all fit the disk
    // wins over a filesystem signature.
    let plausible_table = structurally_valid
        && entries.iter().any(mbr::Entry::is_used)
        && entries
            .iter()
            .filter(|e| e.is_used())
            .all(|e| e.start >= 1 && e.sectors >= 1 && u64::from(e.start) + u64::from(e.sectors) <= disk_sectors);
    if filesystem.is_some() && !plausible_table {
        return Ok(whole_disk(size, ss, filesystem, Vec::new()));
    }
    if !mbr::has_signature(&head) {
        return Ok(whole_disk(size, ss, None, Vec::new()));
    }
    mbr_layout(disk, ss, &head)
}

/// The whole disk as one volume.
fn whole_disk(size: u64, sector_size: u32, filesystem: Option<&'static str>, warnings: Vec<String>) -> DiskLayout {
    DiskLayout {
        table: TableKind::None,
        size,
        sector_size,
        disk_id: String::new(),
        partitions: vec![Partition {
            index: 1,
            start: 0,
            len: size,
            type_id: String::new(),
            uuid: String::new(),
            name: String::new(),
            bootable: false,
        }],
        extended: None,
        structures: Vec::new(),
        raw: RangeSet::new(),
        protective_mbr_only: false,
        warnings,
        filesystem_at_start: filesystem,
    }
}

fn gpt_layout(disk: &dyn ReadAt, sector_size: Option<u32>, mbr_entries: &[mbr::Entry; 4]) -> Result<DiskLayout, Error> {
    let table = gpt::read(disk, sector_size)?;
    let ss = u64::from(table.sector_size);
    let mut warnings = table.warnings.clone();
    let used_mbr: Vec<&mbr::Entry> = mbr_entries.iter().filter(|e| e.is_used()).collect();
    let protective_mbr_only = used_mbr.len() == 1;
    if !protective_mbr_only {
        warnings.push(format!(
            "hybrid MBR at byte 0 ({} entries besides the GPT's): the GPT is used; the MBR is copied as it is",
            used_mbr.len() - 1
        ));
    }
    let header = &table.header;
    let mut partitions = Vec::new();
    for (index, entry) in table.table.iter().filter(|(_, p)| p.is_used()) {
        let at = gpt::entry_byte(header, ss, index);
        let (first, last) = (entry.starting_lba, entry.ending_lba);
        if first > last || first < header.first_usable_lba || last > header.last_usable_lba {
            return Err(corrupt(format!(
                "GPT entry {index} at byte {at}: sectors {first}..={last} lie outside the usable sectors {}..={}",
                header.first_usable_lba, header.last_usable_lba
            )));
        }
        let (type_id, uuid, name) = gpt::describe(entry);
        // last <= last_usable < disk sectors, so these products fit in u64.
        partitions.push(Partition {
            index,
            start: first * ss,
            len: (last - first + 1) * ss,
            type_id,
            uuid,
            name,
            bootable: false,
        });
    }
    let layout = DiskLayout {
        table: TableKind::Gpt,
        size: disk.size(),
        sector_size: table.sector_size,
        disk_id: bytes::guid(&header.disk_guid),
        raw: RangeSet::new(),
        partitions,
        extended: None,
        structures: table.structures,
        protective_mbr_only,
        warnings,
        filesystem_at_start: None,
    };
    finish(layout)
}

fn mbr_layout(disk: &dyn ReadAt, ss: u32, head: &[u8]) -> Result<DiskLayout, Error> {
    let ss64 = u64::from(ss);
    let table = mbr::read(disk, ss, disk.size() / ss64)?;
    let mut partitions = Vec::new();
    let mut structures = vec![Structure::new("MBR", 0..ss64)];
    let mut extended = None;
    for (slot, entry) in (1u32..).zip(&table.primaries) {
        if !entry.is_used() {
            continue;
        }
        let range = u64::from(entry.start) * ss64..(u64::from(entry.start) + u64::from(entry.sectors)) * ss64;
        if entry.is_extended() {
            extended = Some(range);
            continue;
        }
        partitions.push(mbr_partition(slot, entry, ss64));
    }
    for (number, logical) in (5u32..).zip(&table.logicals) {
        structures.push(Structure::new(format!("EBR {number}"), logical.ebr_lba * ss64..(logical.ebr_lba + 1) * ss64));
        if logical.entry.is_used() {
            partitions.push(mbr_partition(number, &logical.entry, ss64));
        }
    }
    // Primaries must not reach into the extended partition; logicals were checked to lie inside it.
    if let Some(container) = &extended {
        for p in partitions.iter().filter(|p| p.index <= 4) {
            if p.start < container.end && container.start < p.start + p.len {
                return Err(overlap(
                    &format!("MBR at byte 0: partition {}", p.index),
                    &p.range(),
                    "the extended partition",
                    container,
                ));
            }
        }
    }
    let layout = DiskLayout {
        table: TableKind::Mbr,
        size: disk.size(),
        sector_size: ss,
        disk_id: format!("0x{:08x}", u32::from_le_bytes(bytes::array(head, 440))),
        partitions,
        extended,
        structures,
        raw: RangeSet::new(),
        protective_mbr_only: false,
        warnings: Vec::new(),
        filesystem_at_start: None,
    };
    finish(layout)
}

fn mbr_partition(index: u32, entry: &mbr::Entry, ss: u64) -> Partition {
    Partition {
        index,
        start: u64::from(entry.start) * ss,
        len: u64::from(entry.sectors) * ss,
        type_id: format!("{:x}", entry.sys),
        uuid: String::new(),
        name: String::new(),
        bootable: entry.boot == 0x80,
    }
}

/// "A (bytes x..y) overlaps B (bytes z..w)".
fn overlap(a: &str, a_range: &Range<u64>, b: &str, b_range: &Range<u64>) -> Error {
    corrupt(format!(
        "{a} (bytes {}..{}) overlaps {b} (bytes {}..{})",
        a_range.start, a_range.end, b_range.start, b_range.end
    ))
}

/// Checks that partitions lie inside the disk, overlap neither each other nor the table's own
/// sectors, and computes the raw areas.
fn finish(mut layout: DiskLayout) -> Result<DiskLayout, Error> {
    let mut sorted: Vec<&Partition> = layout.partitions.iter().collect();
    sorted.sort_by_key(|p| p.start);
    for p in &sorted {
        if p.len == 0 || p.start.checked_add(p.len).is_none_or(|end| end > layout.size) {
            return Err(corrupt(format!(
                "partition {} at byte {} ({} bytes) does not lie inside the disk ({} bytes)",
                p.index, p.start, p.len, layout.size
            )));
        }
    }
    for pair in sorted.windows(2) {
        if let [a, b] = pair {
            if b.start < a.start + a.len {
                return Err(overlap(
                    &format!("partition {}", a.index),
                    &a.range(),
                    &format!("partition {}", b.index),
                    &b.range(),
                ));
            }
        }
    }
    for structure in &layout.structures {
        if let Some(p) =
            sorted.iter().find(|p| p.start < structure.range.end && structure.range.start < p.start + p.len)
        {
            return Err(corrupt(format!(
                "the {} at byte {} lies inside partition {} (bytes {}..{})",
                structure.what,
                structure.range.start,
                p.index,
                p.start,
                p.start + p.len
            )));
        }
    }
    let inside: RangeSet = layout.partitions.iter().map(Partition::range).collect();
    layout.raw = inside.complement(0..layout.size);
    Ok(layout)
}

#[cfg(test)]
mod tests;
