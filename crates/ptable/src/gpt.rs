//! The GUID Partition Table: primary header (LBA 1) and entry array, backup entry array and
//! backup header (last LBA).
//!
//! Layout: UEFI 2.10 §5.3 (<https://uefi.org/specs/UEFI/2.10/05_GUID_Partition_Table_Format.html>).
//! Validity follows Linux `block/partitions/efi.c` `is_gpt_valid`: signature, header CRC,
//! `my_lba`, usable range inside the disk, entry array CRC; plus what gptman needs
//! (revision 1.0, a 92-byte header, 128-byte entries) and a bound on the entry count, so that a
//! crafted header can reach neither gptman's unchecked LBA arithmetic nor an allocation sized
//! from disk. A header that fails any check is "damaged": we fall back to the other copy, as
//! the kernel does, and say so.

use crate::bytes::{array, guid, le32, le64};
use crate::{Error, Structure, corrupt};
use crc::{CRC_32_ISO_HDLC, Crc};
use imgstream_blockio::{Cursor, ReadAt};
use std::io::{self, Read, Seek, Write};
use std::ops::Range;

/// CRC-32 as used by UEFI (the zlib/IEEE polynomial, reflected, inverted).
const CRC32: Crc<u32> = Crc::<u32>::new(&CRC_32_ISO_HDLC);

/// Header fields (UEFI §5.3.2, table 5.5).
const SIGNATURE: &[u8; 8] = b"EFI PART";
const HDR_SIGNATURE: usize = 0;
const HDR_REVISION: usize = 8;
const HDR_HEADER_SIZE: usize = 12;
const HDR_HEADER_CRC: usize = 16;
const HDR_MY_LBA: usize = 24;
const HDR_ALTERNATE_LBA: usize = 32;
const HDR_FIRST_USABLE_LBA: usize = 40;
const HDR_LAST_USABLE_LBA: usize = 48;
const HDR_DISK_GUID: usize = 56;
const HDR_ENTRIES_LBA: usize = 72;
const HDR_ENTRY_COUNT: usize = 80;
const HDR_ENTRY_SIZE: usize = 84;
const HDR_ENTRIES_CRC: usize = 88;
/// Revision 1.0, the only one defined.
const REVISION_1_0: u32 = 0x0001_0000;
/// The header size every tool writes; gptman accepts nothing else (the spec allows up to a
/// sector, with reserved zeros).
const HEADER_SIZE: u32 = 92;
/// The entry size every tool writes; gptman accepts nothing else (the spec allows 128 * 2^n).
pub(crate) const ENTRY_SIZE: u32 = 128;
/// 128 entries (16 KiB) is the UEFI minimum array and what every tool writes. A header may ask
/// for more; 16384 entries (2 MiB) is far beyond any real table and keeps both our buffer and
/// gptman's entry vector small.
pub(crate) const MAX_ENTRIES: u32 = 16384;

/// Entry fields (UEFI §5.3.3, table 5.6).
const ENT_TYPE_GUID: usize = 0;
const ENT_STARTING_LBA: usize = 32;
const ENT_ENDING_LBA: usize = 40;

/// A header that passed every check.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Header {
    pub(crate) my_lba: u64,
    pub(crate) alternate_lba: u64,
    pub(crate) first_usable_lba: u64,
    pub(crate) last_usable_lba: u64,
    pub(crate) disk_guid: [u8; 16],
    pub(crate) entries_lba: u64,
    pub(crate) entry_count: u32,
    pub(crate) entries_crc: u32,
}

impl Header {
    /// Bytes of the entry array, rounded up to whole sectors.
    fn array_sectors(&self, ss: u64) -> u64 {
        (u64::from(self.entry_count) * u64::from(ENTRY_SIZE)).div_ceil(ss)
    }
}

/// A used entry as we read it, to compare with gptman's.
#[derive(Clone, Debug, PartialEq, Eq)]
struct RawEntry {
    index: u32,
    type_guid: [u8; 16],
    starting_lba: u64,
    ending_lba: u64,
}

/// The partition table: which header was used and the used entries, read by gptman.
#[derive(Debug)]
pub(crate) struct Gpt {
    pub(crate) sector_size: u32,
    pub(crate) header: Header,
    pub(crate) table: gptman::GPT,
    pub(crate) structures: Vec<Structure>,
    pub(crate) warnings: Vec<String>,
}

/// A header check that failed: why, for the message.
type Damage = String;

/// Reads and checks the header at `lba`; the inner `Err` says why it is damaged.
fn read_header(disk: &dyn ReadAt, ss: u64, lba: u64) -> Result<Result<Header, Damage>, Error> {
    let disk_sectors = disk.size() / ss;
    if lba >= disk_sectors {
        return Ok(Err(format!("LBA {lba} lies past the end of the disk ({disk_sectors} sectors)")));
    }
    let mut raw = [0u8; HEADER_SIZE as usize];
    crate::read_at(disk, &format!("GPT header (LBA {lba})"), lba * ss, &mut raw)?;
    if &array::<8>(&raw, HDR_SIGNATURE) != SIGNATURE {
        return Ok(Err("no \"EFI PART\" signature".into()));
    }
    let revision = le32(&raw, HDR_REVISION);
    if revision != REVISION_1_0 {
        return Ok(Err(format!("revision 0x{revision:08x} is not 1.0")));
    }
    let header_size = le32(&raw, HDR_HEADER_SIZE);
    if header_size != HEADER_SIZE {
        return Ok(Err(format!("header size {header_size} is not {HEADER_SIZE}")));
    }
    let stored_crc = le32(&raw, HDR_HEADER_CRC);
    let mut zeroed = raw;
    if let Some(crc_field) = zeroed.get_mut(HDR_HEADER_CRC..HDR_HEADER_CRC + 4) {
        crc_field.fill(0);
    }
    let computed_crc = CRC32.checksum(&zeroed);
    if stored_crc != computed_crc {
        return Ok(Err(format!("header CRC 0x{stored_crc:08x} does not match its contents (0x{computed_crc:08x})")));
    }
    let header = Header {
        my_lba: le64(&raw, HDR_MY_LBA),
        alternate_lba: le64(&raw, HDR_ALTERNATE_LBA),
        first_usable_lba: le64(&raw, HDR_FIRST_USABLE_LBA),
        last_usable_lba: le64(&raw, HDR_LAST_USABLE_LBA),
        disk_guid: array(&raw, HDR_DISK_GUID),
        entries_lba: le64(&raw, HDR_ENTRIES_LBA),
        entry_count: le32(&raw, HDR_ENTRY_COUNT),
        entries_crc: le32(&raw, HDR_ENTRIES_CRC),
    };
    if header.my_lba != lba {
        return Ok(Err(format!("it says it lives at LBA {}", header.my_lba)));
    }
    let entry_size = le32(&raw, HDR_ENTRY_SIZE);
    if entry_size != ENTRY_SIZE {
        return Ok(Err(format!("partition entry size {entry_size} is not {ENTRY_SIZE} (unsupported)")));
    }
    if header.entry_count > MAX_ENTRIES {
        return Ok(Err(format!("{} partition entries exceed the limit of {MAX_ENTRIES}", header.entry_count)));
    }
    if header.first_usable_lba > header.last_usable_lba || header.last_usable_lba >= disk_sectors {
        return Ok(Err(format!(
            "usable sectors {}..={} do not lie inside the disk ({disk_sectors} sectors)",
            header.first_usable_lba, header.last_usable_lba
        )));
    }
    // The entry array: inside the disk, clear of the usable area and of this header.
    let array_end = header.entries_lba.checked_add(header.array_sectors(ss));
    let array_ok = match array_end {
        Some(end) if header.entries_lba >= 1 && end <= disk_sectors => {
            let clear_of_usable = end <= header.first_usable_lba || header.entries_lba > header.last_usable_lba;
            let clear_of_header = end <= lba || header.entries_lba > lba;
            clear_of_usable && clear_of_header
        }
        _ => false,
    };
    if !array_ok {
        return Ok(Err(format!(
            "partition entry array at LBA {} ({} sectors) overlaps the usable area, the header, or the disk's end",
            header.entries_lba,
            header.array_sectors(ss)
        )));
    }
    Ok(Ok(header))
}

/// Reads the entry array of a checked header and verifies its CRC; returns the used entries.
fn read_entries(disk: &dyn ReadAt, ss: u64, header: &Header) -> Result<Result<Vec<RawEntry>, Damage>, Error> {
    // Bounded: entry_count <= MAX_ENTRIES, so at most 2 MiB.
    let len = usize::try_from(u64::from(header.entry_count) * u64::from(ENTRY_SIZE)).unwrap_or(usize::MAX);
    let mut bytes = vec![0u8; len];
    let what = format!("GPT partition entry array of the header at LBA {}", header.my_lba);
    crate::read_at(disk, &what, header.entries_lba * ss, &mut bytes)?;
    let computed = CRC32.checksum(&bytes);
    if computed != header.entries_crc {
        return Ok(Err(format!(
            "partition entry array at byte {}: CRC 0x{:08x} does not match its contents (0x{computed:08x})",
            header.entries_lba * ss,
            header.entries_crc
        )));
    }
    let entries = bytes
        .chunks_exact(ENTRY_SIZE as usize)
        .zip(1u32..)
        .map(|(entry, index)| RawEntry {
            index,
            type_guid: array(entry, ENT_TYPE_GUID),
            starting_lba: le64(entry, ENT_STARTING_LBA),
            ending_lba: le64(entry, ENT_ENDING_LBA),
        })
        .filter(|e| e.type_guid != [0; 16])
        .collect();
    Ok(Ok(entries))
}

/// A header and its array, both valid.
fn read_copy(disk: &dyn ReadAt, ss: u64, lba: u64) -> Result<Result<(Header, Vec<RawEntry>), Damage>, Error> {
    let header = match read_header(disk, ss, lba)? {
        Ok(header) => header,
        Err(damage) => return Ok(Err(damage)),
    };
    Ok(read_entries(disk, ss, &header)?.map(|entries| (header, entries)))
}

/// The sector sizes to try: the device's, or 512 then 4096 for an image file.
fn candidates(sector_size: Option<u32>) -> Vec<u32> {
    sector_size.map_or_else(|| vec![512, 4096], |ss| vec![ss])
}

/// Finds and checks the GPT (primary, else backup, for each candidate sector size), then
/// has gptman read the same copy and compares.
pub(crate) fn read(disk: &dyn ReadAt, sector_size: Option<u32>) -> Result<Gpt, Error> {
    let mut problems = Vec::new();
    let mut chosen = None;
    for ss in candidates(sector_size) {
        match read_copy(disk, u64::from(ss), 1)? {
            Ok(copy) => {
                chosen = Some((ss, copy, false));
                break;
            }
            Err(damage) => problems.push((ss, damage)),
        }
    }
    if chosen.is_none() {
        for ss in candidates(sector_size) {
            let last = (disk.size() / u64::from(ss)).saturating_sub(1);
            match read_copy(disk, u64::from(ss), last)? {
                Ok(copy) => {
                    chosen = Some((ss, copy, true));
                    break;
                }
                Err(damage) => problems.push((ss, format!("backup header at byte {}: {damage}", last * u64::from(ss)))),
            }
        }
    }
    let Some((ss, (header, entries), from_backup)) = chosen else {
        let reasons: Vec<String> = problems.iter().map(|(ss, d)| format!("{ss}-byte sectors: {d}")).collect();
        return Err(corrupt(format!(
            "protective MBR at byte 0 announces a GPT, but no valid GPT header was found ({})",
            reasons.join("; ")
        )));
    };
    let ss64 = u64::from(ss);
    let mut warnings = Vec::new();
    if from_backup {
        let primary = problems.iter().find(|(s, _)| *s == ss).map_or("unreadable", |(_, d)| d.as_str());
        warnings.push(format!(
            "primary GPT header at byte {ss} is damaged ({primary}); using the backup header at byte {}",
            header.my_lba * ss64
        ));
    } else {
        check_backup(disk, ss64, &header, &mut warnings)?;
    }
    // Bounds first: gptman's alignment search panics on entries that start at LBA 0.
    for entry in &entries {
        let (first, last) = (entry.starting_lba, entry.ending_lba);
        if first > last || first < header.first_usable_lba || last > header.last_usable_lba {
            return Err(corrupt(format!(
                "GPT entry {} at byte {}: sectors {first}..={last} lie outside the usable sectors {}..={}",
                entry.index,
                entry_byte(&header, ss64, entry.index),
                header.first_usable_lba,
                header.last_usable_lba
            )));
        }
    }
    let table = read_with_gptman(disk, ss, from_backup)?;
    cross_check(&table, &header, &entries)?;
    let structures = structures(disk, ss64, &header, from_backup)?;
    Ok(Gpt { sector_size: ss, header, table, structures, warnings })
}

/// Warns about a damaged, misplaced or different backup copy (the primary is fine).
fn check_backup(disk: &dyn ReadAt, ss: u64, primary: &Header, warnings: &mut Vec<String>) -> Result<(), Error> {
    let last = disk.size() / ss - 1;
    if primary.alternate_lba != last {
        warnings.push(format!(
            "the GPT header at byte {ss} puts its backup at LBA {}, but the disk's last LBA is {last} (a disk copied to a larger one?)",
            primary.alternate_lba
        ));
    }
    match read_copy(disk, ss, primary.alternate_lba)? {
        Err(damage) => warnings.push(format!(
            "backup GPT header at byte {} is damaged ({damage}); the primary is used and the backup is copied as it is",
            primary.alternate_lba.saturating_mul(ss)
        )),
        Ok((backup, _)) if backup.entries_crc != primary.entries_crc || backup.disk_guid != primary.disk_guid => {
            warnings.push(format!(
                "backup GPT at byte {} differs from the primary; the primary is used",
                primary.alternate_lba * ss
            ));
        }
        Ok(_) => {}
    }
    Ok(())
}

/// A view of the disk whose primary header sector reads as zeros, so that gptman falls back to
/// the backup copy we chose (it tries the primary first and checks less than we do).
struct WithoutPrimary<'a> {
    disk: &'a dyn ReadAt,
    hidden: Range<u64>,
}

impl ReadAt for WithoutPrimary<'_> {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.disk.read_exact_at(buf, offset)?;
        let end = offset.saturating_add(buf.len() as u64);
        let from = self.hidden.start.max(offset);
        let to = self.hidden.end.min(end);
        if from < to {
            let (a, b) = ((from - offset) as usize, (to - offset) as usize); // both <= buf.len()
            if let Some(part) = buf.get_mut(a..b) {
                part.fill(0);
            }
        }
        Ok(())
    }
    fn size(&self) -> u64 {
        self.disk.size()
    }
}

fn read_with_gptman(disk: &dyn ReadAt, ss: u32, from_backup: bool) -> Result<gptman::GPT, Error> {
    let ss64 = u64::from(ss);
    let result = if from_backup {
        let view = WithoutPrimary { disk, hidden: ss64..2 * ss64 };
        gptman::GPT::read_from(&mut Cursor::new(&view), ss64)
    } else {
        gptman::GPT::read_from(&mut Cursor::new(disk), ss64)
    };
    result.map_err(|e| match e {
        gptman::Error::Io(io) => Error::Io(io),
        other => corrupt(format!("GPT at byte {ss}: gptman cannot read the table imgstream checked: {other}")),
    })
}

/// gptman must have read the copy we checked, with the same entries.
fn cross_check(table: &gptman::GPT, header: &Header, entries: &[RawEntry]) -> Result<(), Error> {
    let theirs = &table.header;
    let same_header = theirs.primary_lba == header.my_lba
        && theirs.backup_lba == header.alternate_lba
        && theirs.first_usable_lba == header.first_usable_lba
        && theirs.last_usable_lba == header.last_usable_lba
        && theirs.partition_entry_lba == header.entries_lba
        && theirs.number_of_partition_entries == header.entry_count;
    let their_entries: Vec<RawEntry> = table
        .iter()
        .filter(|(_, p)| p.is_used())
        .map(|(index, p)| RawEntry {
            index,
            type_guid: p.partition_type_guid,
            starting_lba: p.starting_lba,
            ending_lba: p.ending_lba,
        })
        .collect();
    if same_header && their_entries == entries {
        Ok(())
    } else {
        Err(corrupt(format!(
            "GPT header at LBA {}: gptman reads a different table than imgstream ({} used entries vs {})",
            header.my_lba,
            their_entries.len(),
            entries.len()
        )))
    }
}

/// Where the table lives: protective MBR, headers and arrays of both copies (as far as the
/// chosen header tells, and the other copy if it is readable).
fn structures(disk: &dyn ReadAt, ss: u64, header: &Header, from_backup: bool) -> Result<Vec<Structure>, Error> {
    let sector = |lba: u64| lba * ss..(lba + 1) * ss;
    let array = |h: &Header| h.entries_lba * ss..(h.entries_lba + h.array_sectors(ss)) * ss;
    let (mine, other) = if from_backup { ("backup", "primary") } else { ("primary", "backup") };
    let mut structures = vec![
        Structure::new("protective MBR", sector(0)),
        Structure::new(format!("{mine} GPT header"), sector(header.my_lba)),
        Structure::new(format!("{mine} GPT entries"), array(header)),
    ];
    if let Ok((other_header, _)) = read_copy(disk, ss, header.alternate_lba)? {
        structures.push(Structure::new(format!("{other} GPT header"), sector(other_header.my_lba)));
        structures.push(Structure::new(format!("{other} GPT entries"), array(&other_header)));
    }
    structures.sort_by_key(|s| s.range.start);
    Ok(structures)
}

/// What [`move_backup_to_end`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Relocation {
    /// The backup header's LBA before.
    pub old_backup_lba: u64,
    /// The backup header's LBA now (the target's last LBA).
    pub new_backup_lba: u64,
}

/// After a GPT disk was written to a larger `target` (its primary table intact, its backup in
/// the middle of the disk): moves the backup entries and header to the new end with gptman,
/// widens the usable area, clears the old backup copy, and rewrites a purely protective MBR's
/// size field (a hybrid MBR is left alone). Returns `None` if the backup already is at the end.
///
/// `target` must be the disk that [`crate::read_layout`] checked as `layout`.
pub fn move_backup_to_end<T>(target: &mut T, layout: &crate::DiskLayout) -> Result<Option<Relocation>, Error>
where
    T: Read + Write + Seek,
{
    let ss = u64::from(layout.sector_size);
    let gpt_error = |e: gptman::Error| match e {
        gptman::Error::Io(io) => Error::Io(io),
        other => corrupt(format!("GPT at byte {ss}: gptman: {other}")),
    };
    let mut gpt = gptman::GPT::read_from(target, ss).map_err(gpt_error)?;
    if gpt.is_backup() {
        return Err(corrupt(format!("GPT at byte {ss}: the primary header is damaged; refusing to rewrite the table")));
    }
    let size = target.seek(io::SeekFrom::End(0))?;
    let new_backup_lba = size / ss - 1;
    let old = gpt.header.clone();
    if old.backup_lba == new_backup_lba {
        return Ok(None);
    }
    gpt.header.update_from(target, ss).map_err(gpt_error)?;
    // update_from recomputes first_usable_lba from the array size; keep the table's own value.
    gpt.header.first_usable_lba = old.first_usable_lba;
    gpt.write_into(target).map_err(gpt_error)?;
    // The old backup (array after the old last usable LBA, header at the old backup LBA) is now
    // stale data in free space; clear it so no tool mistakes it for a table.
    let old_start = (old.last_usable_lba + 1) * ss;
    let old_end = (old.backup_lba + 1) * ss;
    if old_end <= gpt.header.last_usable_lba * ss && old_start < old_end {
        let zeros = vec![0u8; usize::try_from(old_end - old_start).unwrap_or(0)];
        target.seek(io::SeekFrom::Start(old_start))?;
        target.write_all(&zeros)?;
    }
    if layout.protective_mbr_only {
        gptman::GPT::write_protective_mbr_into(target, ss).map_err(gpt_error)?;
    }
    target.flush()?;
    Ok(Some(Relocation { old_backup_lba: old.backup_lba, new_backup_lba }))
}

/// After a disk of `disk_size` bytes without GPT was written to a larger `target`: a GPT backup
/// header in the target's last sector, left from an earlier life outside the written disk,
/// would make tools see a second (damaged) table; it is zeroed. A last sector that overlaps the
/// disk is the disk's own and is left as restored. Returns the LBA zeroed, if any.
pub fn clear_stale_backup_header<T>(target: &mut T, sector_size: u32, disk_size: u64) -> Result<Option<u64>, Error>
where
    T: Read + Write + Seek,
{
    let ss = u64::from(sector_size);
    let last_lba = (target.seek(io::SeekFrom::End(0))? / ss).saturating_sub(1);
    if last_lba * ss < disk_size {
        return Ok(None);
    }
    let mut signature = [0u8; SIGNATURE.len()];
    target.seek(io::SeekFrom::Start(last_lba * ss))?;
    target.read_exact(&mut signature)?;
    if &signature != SIGNATURE {
        return Ok(None);
    }
    target.seek(io::SeekFrom::Start(last_lba * ss))?;
    target.write_all(&vec![0u8; usize::try_from(ss).unwrap_or(0)])?;
    target.flush()?;
    Ok(Some(last_lba))
}

/// The text form of a partition's type and unique GUIDs and its name.
pub(crate) fn describe(entry: &gptman::GPTPartitionEntry) -> (String, String, String) {
    (guid(&entry.partition_type_guid), guid(&entry.unique_partition_guid), entry.partition_name.as_str().to_owned())
}

/// Where the partition entries start in a header, for messages.
pub(crate) fn entry_byte(header: &Header, ss: u64, index: u32) -> u64 {
    header.entries_lba * ss + u64::from(index.saturating_sub(1)) * u64::from(ENTRY_SIZE)
}

#[cfg(test)]
#[allow(clippy::indexing_slicing)]
pub(crate) mod testing {
    //! Builds GPT disks in memory for the unit tests.
    use super::*;

    /// A used entry for [`build`]: (type GUID byte, first LBA, last LBA).
    pub(crate) type Part = (u8, u64, u64);

    /// Writes a header + array pair (CRCs computed) for a disk of `disk_sectors` at `lba`.
    pub(crate) fn write_copy(
        disk: &mut [u8],
        ss: u64,
        lba: u64,
        alternate: u64,
        entries_lba: u64,
        count: u32,
        parts: &[Part],
    ) {
        let disk_sectors = disk.len() as u64 / ss;
        let array_sectors = (u64::from(count) * 128).div_ceil(ss);
        let mut array = vec![0u8; count as usize * 128];
        for (i, (ty, first, last)) in parts.iter().enumerate() {
            let e = &mut array[i * 128..(i + 1) * 128];
            e[0..16].fill(*ty);
            e[16..32].fill(i as u8 + 1);
            e[32..40].copy_from_slice(&first.to_le_bytes());
            e[40..48].copy_from_slice(&last.to_le_bytes());
            e[56..58].copy_from_slice(&(u16::from(b'p')).to_le_bytes());
        }
        let mut h = [0u8; 92];
        h[0..8].copy_from_slice(SIGNATURE);
        h[8..12].copy_from_slice(&REVISION_1_0.to_le_bytes());
        h[12..16].copy_from_slice(&92u32.to_le_bytes());
        h[24..32].copy_from_slice(&lba.to_le_bytes());
        h[32..40].copy_from_slice(&alternate.to_le_bytes());
        h[40..48].copy_from_slice(&(2 + array_sectors).to_le_bytes());
        h[48..56].copy_from_slice(&(disk_sectors - 2 - array_sectors).to_le_bytes());
        h[56..72].fill(0xD1);
        h[72..80].copy_from_slice(&entries_lba.to_le_bytes());
        h[80..84].copy_from_slice(&count.to_le_bytes());
        h[84..88].copy_from_slice(&128u32.to_le_bytes());
        h[88..92].copy_from_slice(&CRC32.checksum(&array).to_le_bytes());
        let crc = CRC32.checksum(&h);
        h[16..20].copy_from_slice(&crc.to_le_bytes());
        let at = (lba * ss) as usize;
        disk[at..at + 92].copy_from_slice(&h);
        let at = (entries_lba * ss) as usize;
        disk[at..at + array.len()].copy_from_slice(&array);
    }

    /// A whole GPT disk: protective MBR, primary and backup with 128 entries.
    pub(crate) fn build(disk_sectors: u64, ss: u64, parts: &[Part]) -> Vec<u8> {
        let mut disk = vec![0u8; (disk_sectors * ss) as usize];
        let last = disk_sectors - 1;
        disk[446 + 4] = 0xEE;
        disk[446 + 8..446 + 12].copy_from_slice(&1u32.to_le_bytes());
        disk[446 + 12..446 + 16].copy_from_slice(&((last) as u32).to_le_bytes());
        disk[510] = 0x55;
        disk[511] = 0xAA;
        let array_sectors = (128 * 128u64).div_ceil(ss);
        write_copy(&mut disk, ss, 1, last, 2, 128, parts);
        write_copy(&mut disk, ss, last, 1, last - array_sectors, 128, parts);
        disk
    }
}
