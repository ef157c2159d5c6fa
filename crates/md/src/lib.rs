//! Linux md RAID members: where the superblock is, what the array is, and, for a RAID1 member
//! in sync, the data area that holds a whole copy of the array (kernel `md_p.h`).
//!
//! Superblock versions: 0.90 (4 KiB, 64 KiB-aligned near the end, data from byte 0), 1.0
//! (4 KiB-aligned, 8 to 12 KiB before the end), 1.1 (at byte 0) and 1.2 (at byte 4096); 1.x
//! give the data area as `data_offset`/`data_size` in sectors. Everything outside the data area
//! (superblock, write-intent bitmap, bad-block log, padding) is always copied; the `fs` crate
//! analyses the data area as a volume. A member of any other level, a spare, a faulty member,
//! one being rebuilt or reshaped, one whose bad-block log records bad blocks is named and copied
//! raw.

#![forbid(unsafe_code)]

/// Why a member's superblock could not be read: the message names the structure and its byte offset.
pub use imgstream_volume::ParseError as Error;

use imgstream_blockio::ReadAt;
use imgstream_volume::fields::{array, le16, le32, le64, u8_at};
use imgstream_volume::read_at;
use std::io;
use std::ops::Range;

/// `MD_SB_MAGIC`, first field of every version.
const MAGIC: u32 = 0xa92b_4efc;
const SECTOR: u64 = 512;
/// Bytes read for a superblock: 0.90 is 4 KiB; 1.x is 256 bytes plus 2 per device role.
const SUPERBLOCK_LEN: usize = 4096;
/// Version 1 `feature_map` bits.
const FEATURE_BITMAP: u32 = 1;
const FEATURE_RECOVERY: u32 = 2;
const FEATURE_RESHAPE: u32 = 4;
const FEATURE_BAD_BLOCKS: u32 = 8;
/// The write-intent bitmap's superblock: "bitm", 256 bytes, then one bit per chunk.
const BITMAP_MAGIC: u32 = 0x6d74_6962;
const BITMAP_HEADER_LEN: u64 = 256;
/// The most of a bad-block log the kernel reads (one page): a longer one makes it refuse the member.
const BAD_BLOCK_LOG_MAX: u64 = 4096;

/// What a member's superblock says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Member {
    /// "0.90", "1.0", "1.1" or "1.2".
    pub version: &'static str,
    /// RAID level (-1 linear, 0, 1, 4, 5, 6, 10, -4 multipath).
    pub level: i32,
    /// Array name (1.x) or UUID.
    pub array: String,
    /// Number of devices in the array.
    pub raid_disks: u32,
    /// The superblock's bytes.
    pub superblock: Range<u64>,
    /// Bytes holding the array's data on this member.
    pub data: Range<u64>,
    /// Why the data area cannot be read as the array's content, if it cannot.
    pub raw_reason: Option<String>,
}

impl Member {
    /// "raid1", "raid5", "linear"...
    pub fn level_name(&self) -> String {
        match self.level {
            -1 => "linear".into(),
            -4 => "multipath".into(),
            -5 => "faulty".into(),
            level => format!("raid{level}"),
        }
    }
}

/// Where each version's superblock lies in a volume of `size` bytes.
fn locations(size: u64) -> [(&'static str, Option<u64>); 4] {
    let sectors = size / SECTOR;
    let v1_0 = sectors.checked_sub(16).map(|s| (s & !7) * SECTOR);
    let v0_90 = (size & !0xFFFF).checked_sub(0x10000);
    [("1.2", Some(4096)), ("1.1", Some(0)), ("1.0", v1_0), ("0.90", v0_90)]
}

fn find(volume: &dyn ReadAt) -> io::Result<Option<(&'static str, u64, Vec<u8>)>> {
    for (version, at) in locations(volume.size()) {
        let Some(at) = at.filter(|at| at + SUPERBLOCK_LEN as u64 <= volume.size()) else { continue };
        let mut bytes = vec![0u8; SUPERBLOCK_LEN];
        volume.read_exact_at(&mut bytes, at)?;
        let major = if version == "0.90" { 0 } else { 1 };
        if le32(&bytes, 0) == MAGIC && le32(&bytes, 4) == major {
            return Ok(Some((version, at, bytes)));
        }
    }
    Ok(None)
}

/// Cheap check: an md superblock magic where one of the four versions puts it.
pub fn detect(volume: &dyn ReadAt) -> io::Result<bool> {
    Ok(find(volume)?.is_some())
}

/// Superblocks of versions 0.90 and 1.0, which md looks for relative to a device's end, that
/// lie wholly at or after byte `from` of `device`: where a disk of `from` bytes was restored onto
/// a larger device, such a superblock is left from the device's earlier life, and would make md
/// assemble that old array over the restored disk. Returns each one's byte offset.
pub fn superblocks_at_end(device: &dyn ReadAt, from: u64) -> io::Result<Vec<u64>> {
    let mut found = Vec::new();
    for (version, at) in locations(device.size()) {
        let Some(at) = at.filter(|at| *at >= from && at + SUPERBLOCK_LEN as u64 <= device.size()) else { continue };
        if version != "0.90" && version != "1.0" {
            continue;
        }
        let mut head = [0u8; 8];
        device.read_exact_at(&mut head, at)?;
        let major = if version == "0.90" { 0 } else { 1 };
        if le32(&head, 0) == MAGIC && le32(&head, 4) == major {
            found.push(at);
        }
    }
    Ok(found)
}

/// The sum that md's checksums use: little-endian u32 words (a trailing u16 too) with the
/// checksum field as zero, folded from 64 to 32 bits.
fn word_sum(bytes: &[u8], checksum_at: usize) -> u32 {
    let mut sum = 0u64;
    let mut chunks = bytes.chunks_exact(4);
    for (index, word) in chunks.by_ref().enumerate() {
        if index * 4 != checksum_at {
            sum += u64::from(le32(word, 0));
        }
    }
    if chunks.remainder().len() >= 2 {
        sum += u64::from(le16(chunks.remainder(), 0));
    }
    ((sum & 0xFFFF_FFFF) + (sum >> 32)) as u32
}

/// Reads the superblock of the member `volume`.
pub fn read_member(volume: &dyn ReadAt) -> Result<Member, Error> {
    let found = find(volume).map_err(|source| Error::Io { structure: "md superblock".into(), offset: 0, source })?;
    let Some((version, at, bytes)) = found else {
        return Err(Error::corrupt("md superblock", 0, "no superblock where versions 0.90 and 1.x put it"));
    };
    if version == "0.90" { version_0_90(at, &bytes) } else { version_1(volume, version, at, &bytes) }
}

fn version_0_90(at: u64, bytes: &[u8]) -> Result<Member, Error> {
    const STRUCTURE: &str = "md superblock 0.90";
    const CHECKSUM: usize = 38 * 4;
    let stored = le32(bytes, CHECKSUM);
    let computed = word_sum(bytes, CHECKSUM);
    if stored != computed {
        return Err(Error::corrupt(
            STRUCTURE,
            at + CHECKSUM as u64,
            format!("checksum {stored:#x}, computed {computed:#x}"),
        ));
    }
    let level = le32(bytes, 7 * 4) as i32;
    let data_len = u64::from(le32(bytes, 8 * 4)) * 1024;
    let uuid = [5, 13, 14, 15].map(|word| format!("{:08x}", le32(bytes, word * 4))).join(":");
    if data_len > at {
        return Err(Error::corrupt(
            STRUCTURE,
            at + 32,
            format!("{data_len} bytes of data overlap the superblock at {at}"),
        ));
    }
    // This device's descriptor (word 992): state bit 2 is "in sync".
    let state = le32(bytes, 992 * 4 + 16);
    let raw_reason = (state & 4 == 0).then(|| "member not in sync with its array".to_owned());
    let mut member = Member {
        version: "0.90",
        level,
        array: uuid,
        raid_disks: le32(bytes, 10 * 4),
        superblock: at..at + SUPERBLOCK_LEN as u64,
        data: 0..data_len,
        raw_reason,
    };
    check_level(&mut member);
    Ok(member)
}

fn version_1(volume: &dyn ReadAt, version: &'static str, at: u64, bytes: &[u8]) -> Result<Member, Error> {
    let structure = format!("md superblock {version}");
    let corrupt = |field: usize, problem: String| Error::corrupt(structure.clone(), at + field as u64, problem);
    let max_dev = le32(bytes, 220) as usize;
    let len = 256 + 2 * max_dev;
    let Some(superblock) = bytes.get(..len) else {
        return Err(corrupt(220, format!("{max_dev} device roles do not fit in {SUPERBLOCK_LEN} bytes")));
    };
    let (stored, computed) = (le32(bytes, 216), word_sum(superblock, 216));
    if stored != computed {
        return Err(corrupt(216, format!("checksum {stored:#x}, computed {computed:#x}")));
    }
    if le64(bytes, 144).checked_mul(SECTOR) != Some(at) {
        return Err(corrupt(144, format!("records itself at sector {}, found at byte {at}", le64(bytes, 144))));
    }
    let (data_offset, data_size) = (le64(bytes, 128), le64(bytes, 136));
    let data = data_offset
        .checked_mul(SECTOR)
        .zip(data_size.checked_mul(SECTOR))
        .and_then(|(start, len)| Some(start..start.checked_add(len)?))
        .filter(|data| data.end <= volume.size() && data.start < data.end)
        .ok_or_else(|| {
            corrupt(128, format!("data area of {data_size} sectors at sector {data_offset} outside the member"))
        })?;
    let superblock = at..at + len as u64;
    let overlapping = |range: &Range<u64>| range.start < data.end && data.start < range.end;
    if overlapping(&superblock) {
        return Err(corrupt(128, "data area overlaps the superblock".into()));
    }
    let features = le32(bytes, 8);
    // Offsets of the bitmap and bad-block log are signed sector counts from the superblock.
    let relative = |field: usize| at.checked_add_signed(i64::from(le32(bytes, field) as i32) * SECTOR as i64);
    if features & FEATURE_BITMAP != 0 {
        let bitmap = relative(96).ok_or_else(|| corrupt(96, "bitmap before the start of the member".into()))?;
        let bitmap = bitmap_range(volume, bitmap)?;
        if overlapping(&bitmap) {
            return Err(corrupt(96, format!("write-intent bitmap at bytes {bitmap:?} overlaps the data area")));
        }
    }
    let mut bad_blocks = None;
    if features & FEATURE_BAD_BLOCKS != 0 {
        let start = relative(188).ok_or_else(|| corrupt(188, "bad-block log before the start of the member".into()))?;
        let log = start..start + u64::from(le16(bytes, 186)) * SECTOR;
        if log.end > volume.size() {
            return Err(corrupt(188, format!("bad-block log at bytes {log:?} past the end of the member")));
        }
        if overlapping(&log) {
            return Err(corrupt(188, format!("bad-block log at bytes {log:?} overlaps the data area")));
        }
        bad_blocks = bad_block_log(volume, &log, u32::from(u8_at(bytes, 185)))?;
    }
    let name = array::<32>(bytes, 32);
    let name = String::from_utf8_lossy(name.split(|&b| b == 0).next().unwrap_or_default()).into_owned();
    // A device number past the role table makes the member a spare, as the kernel has it.
    let dev_number = le32(bytes, 160);
    let role = if dev_number < max_dev as u32 { le16(bytes, 256 + 2 * dev_number as usize) } else { 0xffff };
    let raw_reason = if features & FEATURE_RESHAPE != 0 {
        Some("the array is being reshaped".to_owned())
    } else if features & FEATURE_RECOVERY != 0 {
        Some(format!("member being rebuilt (recovered up to sector {})", le64(bytes, 152)))
    } else if role >= 0xfffe {
        Some(format!("{} member: its data is not in sync", if role == 0xffff { "spare" } else { "faulty" }))
    } else {
        bad_blocks
    };
    let mut member = Member {
        version,
        level: le32(bytes, 72) as i32,
        array: name,
        raid_disks: le32(bytes, 92),
        superblock,
        data,
        raw_reason,
    };
    check_level(&mut member);
    Ok(member)
}

/// Only a RAID1 member holds a whole copy of the array.
fn check_level(member: &mut Member) {
    if member.level != 1 && member.raw_reason.is_none() {
        member.raw_reason =
            Some(format!("md {} member: only RAID1 members hold a whole copy of the array", member.level_name()));
    }
}

/// Why a member whose bad-block log is `log` (bytes) holds no whole copy of the array, if it
/// does not: the kernel reads those sectors from another member, so what this one holds there,
/// a bitmap or inode table of the filesystem included, is not the array's data.
fn bad_block_log(volume: &dyn ReadAt, log: &Range<u64>, shift: u32) -> Result<Option<String>, Error> {
    const STRUCTURE: &str = "md bad-block log";
    let len = log.end - log.start;
    if len > BAD_BLOCK_LOG_MAX {
        // md.c super_1_load refuses such a member.
        return Ok(Some(format!("bad-block log of {len} bytes at byte {}, more than the kernel reads", log.start)));
    }
    let mut entries = vec![0u8; usize::try_from(len).unwrap_or(0)];
    read_at(volume, || STRUCTURE, log.start, &mut entries)?;
    // Each entry: the first sector of the member << 10 | the sector count (both in units of
    // 2^shift sectors); all ones ends the list.
    let recorded: Vec<u64> = entries
        .chunks_exact(8)
        .map(|entry| le64(entry, 0))
        .take_while(|&entry| entry != u64::MAX)
        .filter(|entry| entry & 0x3ff > 0)
        .map(|entry| entry >> 10)
        .collect();
    Ok(recorded.first().map(|first| {
        format!(
            "{} bad block(s) recorded in its bad-block log at byte {} (the first at sector {} of the member): the array reads them from another member",
            recorded.len(),
            log.start,
            first.checked_shl(shift).unwrap_or(u64::MAX)
        )
    }))
}

/// The bytes of the write-intent bitmap whose superblock is at `at`.
fn bitmap_range(volume: &dyn ReadAt, at: u64) -> Result<Range<u64>, Error> {
    const STRUCTURE: &str = "md write-intent bitmap";
    let mut header = [0u8; BITMAP_HEADER_LEN as usize];
    if at.saturating_add(BITMAP_HEADER_LEN) > volume.size() {
        return Err(Error::corrupt(STRUCTURE, at, "past the end of the member"));
    }
    read_at(volume, || STRUCTURE, at, &mut header)?;
    if le32(&header, 0) != BITMAP_MAGIC {
        return Err(Error::corrupt(STRUCTURE, at, "no \"bitm\" magic"));
    }
    let (sync_sectors, chunk) = (le64(&header, 40), u64::from(le32(&header, 52)));
    if chunk == 0 {
        return Err(Error::corrupt(STRUCTURE, at + 52, "chunk size 0"));
    }
    let chunks = sync_sectors.saturating_mul(SECTOR).div_ceil(chunk);
    Ok(at..at.saturating_add(BITMAP_HEADER_LEN + chunks.div_ceil(8)))
}

#[cfg(test)]
mod tests;
