//! The Master Boot Record (sector 0) and the chain of Extended Boot Records of logical
//! partitions.
//!
//! Layout (<https://en.wikipedia.org/wiki/Master_boot_record>, Linux `block/partitions/msdos.c`):
//! four 16-byte entries at byte 446, the signature 0x55 0xAA at byte 510. Each EBR has the same
//! layout; its entry 1 is a logical partition (start relative to the EBR), its entry 2 points
//! to the next EBR (start relative to the extended partition), 0 ending the chain.
//!
//! We walk and check everything here first, with checked arithmetic, and only then let mbrman
//! read the same sectors (mbrman adds u32 LBAs unchecked and trusts the chain to end), and
//! compare its answer with ours.

use crate::bytes::{array, le32, u8_at};
use crate::{Error, corrupt};
use imgstream_blockio::{Cursor, ReadAt};

/// An MBR or EBR is one 512-byte structure at the start of its sector, whatever the sector size.
pub(crate) const RECORD_SIZE: usize = 512;
/// The partition table inside the record.
const ENTRIES_AT: usize = 446;
const ENTRY_SIZE: usize = 16;
/// Entry fields.
const ENTRY_BOOT: usize = 0;
const ENTRY_TYPE: usize = 4;
const ENTRY_START_LBA: usize = 8;
const ENTRY_SECTORS: usize = 12;
/// The boot signature at byte 510.
const SIGNATURE_AT: usize = 510;
const SIGNATURE: [u8; 2] = [0x55, 0xAA];
/// Valid boot indicators (mbrman rejects anything else; so does Linux for a partition table).
const BOOT_INACTIVE: u8 = 0x00;
const BOOT_ACTIVE: u8 = 0x80;
/// The type of a GPT's protective (or hybrid) MBR entry.
pub(crate) const PROTECTIVE_TYPE: u8 = 0xEE;
/// Linux numbers at most 256 partitions per disk (DISK_MAX_PARTS); fdisk and mbrman users
/// rarely go past a few dozen logicals. A chain longer than this is refused rather than
/// walked: each hop is a sector read, and a crafted chain could otherwise be very long.
pub(crate) const MAX_LOGICAL_PARTITIONS: usize = 128;

/// One 16-byte partition entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Entry {
    pub(crate) boot: u8,
    pub(crate) sys: u8,
    pub(crate) start: u32,
    pub(crate) sectors: u32,
}

impl Entry {
    fn parse(record: &[u8], slot: usize) -> Self {
        let at = ENTRIES_AT + slot * ENTRY_SIZE;
        Self {
            boot: u8_at(record, at + ENTRY_BOOT),
            sys: u8_at(record, at + ENTRY_TYPE),
            start: le32(record, at + ENTRY_START_LBA),
            sectors: le32(record, at + ENTRY_SECTORS),
        }
    }

    pub(crate) fn is_used(&self) -> bool {
        self.sys != 0
    }

    /// The extended-partition types mbrman follows (DOS, Windows LBA, Linux, DR-DOS).
    pub(crate) fn is_extended(&self) -> bool {
        matches!(self.sys, 0x05 | 0x0F | 0x85 | 0xC5 | 0xD5)
    }

    fn boot_flag_valid(&self) -> bool {
        self.boot == BOOT_INACTIVE || self.boot == BOOT_ACTIVE
    }
}

/// Whether a record ends in 0x55AA.
pub(crate) fn has_signature(record: &[u8]) -> bool {
    array::<2>(record, SIGNATURE_AT) == SIGNATURE
}

/// The four entries of an MBR or EBR.
pub(crate) fn entries(record: &[u8]) -> [Entry; 4] {
    [0, 1, 2, 3].map(|slot| Entry::parse(record, slot))
}

/// Whether sector 0 reads as a partition table at all: signature and valid boot flags.
pub(crate) fn is_structurally_valid(record: &[u8]) -> bool {
    has_signature(record) && entries(record).iter().all(Entry::boot_flag_valid)
}

/// A logical partition found in the EBR chain (absolute LBAs).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Logical {
    /// Where its EBR lives.
    pub(crate) ebr_lba: u64,
    /// The entry with `start` made absolute; `sys == 0` for an EBR without a partition.
    pub(crate) entry: Entry,
}

/// A checked MBR.
#[derive(Clone, Debug)]
pub(crate) struct Mbr {
    /// Slots 1..=4 in order.
    pub(crate) primaries: [Entry; 4],
    /// The EBR chain in order; partition numbers are 5, 6, ...
    pub(crate) logicals: Vec<Logical>,
}

/// Reads and checks the MBR and its EBR chain on a disk of `disk_sectors` sectors of
/// `sector_size` bytes, then has mbrman read it too and insists on the same answer.
pub(crate) fn read(disk: &dyn ReadAt, sector_size: u32, disk_sectors: u64) -> Result<Mbr, Error> {
    let ss = u64::from(sector_size);
    let mut record = [0u8; RECORD_SIZE];
    crate::read_at(disk, "MBR", 0, &mut record)?;
    if !has_signature(&record) {
        return Err(corrupt(format!(
            "MBR at byte 0: signature 0x{:04X} is not 0x55AA",
            u16::from_be_bytes(array(&record, SIGNATURE_AT))
        )));
    }
    let primaries = entries(&record);
    let mut extended = None;
    for (slot, entry) in primaries.iter().enumerate() {
        let at = ENTRIES_AT + slot * ENTRY_SIZE;
        let what = || format!("MBR at byte 0: partition {} (entry at byte {at}, type 0x{:02x})", slot + 1, entry.sys);
        if !entry.boot_flag_valid() {
            return Err(corrupt(format!("{}: boot flag 0x{:02x} is neither 0x00 nor 0x80", what(), entry.boot)));
        }
        if !entry.is_used() {
            continue;
        }
        check_extent(u64::from(entry.start), u64::from(entry.sectors), 1, (disk_sectors, "the disk"), &what)?;
        if entry.is_extended() {
            if let Some(first) = extended {
                return Err(Error::Unsupported(format!(
                    "MBR at byte 0: partitions {} and {} are both extended partitions",
                    first + 1,
                    slot + 1
                )));
            }
            extended = Some(slot);
        }
    }
    let logicals = match extended.and_then(|slot| primaries.get(slot)) {
        Some(container) => walk_ebr_chain(disk, ss, container)?,
        None => Vec::new(),
    };
    let mbr = Mbr { primaries, logicals };
    cross_check_with_mbrman(disk, sector_size, &mbr)?;
    Ok(mbr)
}

/// `[start, start + sectors)` must be non-empty, start at or after `first` and end by `limit`.
fn check_extent(
    start: u64,
    sectors: u64,
    first: u64,
    limit: (u64, &str),
    what: &dyn Fn() -> String,
) -> Result<(), Error> {
    let (limit, limit_name) = limit;
    if sectors == 0 {
        return Err(corrupt(format!("{}: size is 0 sectors", what())));
    }
    if start < first {
        return Err(corrupt(format!("{}: starts at sector {start}, before sector {first}", what())));
    }
    let end = start.saturating_add(sectors);
    if end > limit {
        return Err(corrupt(format!(
            "{}: sectors {start}..{end} reach past the end of {limit_name} (sector {limit})",
            what()
        )));
    }
    Ok(())
}

/// Follows the EBR chain of `container` strictly forward, at most `MAX_LOGICAL_PARTITIONS` hops.
fn walk_ebr_chain(disk: &dyn ReadAt, ss: u64, container: &Entry) -> Result<Vec<Logical>, Error> {
    let ext_start = u64::from(container.start);
    let ext_sectors = u64::from(container.sectors);
    let mut logicals: Vec<Logical> = Vec::new();
    let mut relative: u32 = 0;
    loop {
        let ebr_lba = ext_start + u64::from(relative); // both < 2^32: no overflow in u64
        let byte = ebr_lba * ss; // < 2^32 sectors of at most 4096 bytes: fits in u64
        if logicals.len() >= MAX_LOGICAL_PARTITIONS {
            return Err(Error::Unsupported(format!(
                "EBR at byte {byte}: more than {MAX_LOGICAL_PARTITIONS} logical partitions"
            )));
        }
        // mbrman computes the EBR's LBA in u32.
        if u32::try_from(ebr_lba).is_err() {
            return Err(corrupt(format!("EBR at byte {byte}: LBA {ebr_lba} does not fit in 32 bits")));
        }
        let mut record = [0u8; RECORD_SIZE];
        crate::read_at(disk, "EBR", byte, &mut record)?;
        if !has_signature(&record) {
            if relative == 0 {
                // An empty extended partition need not hold an EBR (mbrman and Linux agree).
                break;
            }
            return Err(corrupt(format!(
                "EBR at byte {byte} (linked from the EBR at byte {}): signature 0x{:04X} is not 0x55AA",
                logicals.last().map_or(0, |l| l.ebr_lba * ss),
                u16::from_be_bytes(array(&record, SIGNATURE_AT))
            )));
        }
        let [data, next, ..] = entries(&record);
        for (slot, entry) in [(1, data), (2, next)] {
            if !entry.boot_flag_valid() {
                return Err(corrupt(format!(
                    "EBR at byte {byte}: entry {slot} has boot flag 0x{:02x}, neither 0x00 nor 0x80",
                    entry.boot
                )));
            }
        }
        // mbrman makes the logical start absolute in u32 even for an unused entry.
        let Some(absolute_start) = data.start.checked_add(ebr_lba as u32) else {
            return Err(corrupt(format!(
                "EBR at byte {byte}: logical partition start {} + EBR LBA {ebr_lba} overflows 32 bits",
                data.start
            )));
        };
        if data.is_used() {
            let number = logicals.len() + 5;
            let what = || format!("EBR at byte {byte}: logical partition {number} (type 0x{:02x})", data.sys);
            if data.is_extended() {
                return Err(Error::Unsupported(format!("{}: a nested extended partition", what())));
            }
            // Inside the extended partition, after its own EBR.
            let limit = (ext_start + ext_sectors, "the extended partition");
            check_extent(u64::from(absolute_start), u64::from(data.sectors), ebr_lba + 1, limit, &what)?;
        }
        logicals.push(Logical { ebr_lba, entry: Entry { start: absolute_start, ..data } });
        if next.start == 0 {
            break;
        }
        if next.start <= relative {
            return Err(corrupt(format!(
                "EBR at byte {byte}: next EBR at sector {} of the extended partition does not lie after this one (sector {relative}): the chain would loop",
                next.start
            )));
        }
        if u64::from(next.start) >= ext_sectors {
            return Err(corrupt(format!(
                "EBR at byte {byte}: next EBR at sector {} lies outside the extended partition ({ext_sectors} sectors)",
                next.start
            )));
        }
        relative = next.start;
    }
    Ok(logicals)
}

/// mbrman must see what we saw; a difference means one of us misreads the table.
fn cross_check_with_mbrman(disk: &dyn ReadAt, sector_size: u32, ours: &Mbr) -> Result<(), Error> {
    let theirs = mbrman::MBR::read_from(&mut Cursor::new(disk), sector_size)
        .map_err(|e| corrupt(format!("MBR at byte 0: mbrman cannot read it: {e}")))?;
    let same_entry = |a: &mbrman::MBRPartitionEntry, b: &Entry| {
        a.boot == b.boot && a.sys == b.sys && a.starting_lba == b.start && a.sectors == b.sectors
    };
    let primaries_agree = theirs.header.iter().zip(&ours.primaries).all(|((_, a), b)| same_entry(a, b));
    let logicals_agree = theirs.logical_partitions.len() == ours.logicals.len()
        && theirs
            .logical_partitions
            .iter()
            .zip(&ours.logicals)
            .all(|(a, b)| u64::from(a.absolute_ebr_lba) == b.ebr_lba && same_entry(&a.partition, &b.entry));
    if primaries_agree && logicals_agree {
        Ok(())
    } else {
        Err(corrupt(format!(
            "MBR at byte 0: mbrman reads {} logical partitions where imgstream reads {}, or different entries",
            theirs.logical_partitions.len(),
            ours.logicals.len()
        )))
    }
}
