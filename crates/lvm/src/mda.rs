//! A metadata area: a checksummed header sector, then a circular buffer of VG metadata text.
//!
//! The header (`mda_header`, 512 bytes) lists raw locations: slot 0 is the committed metadata,
//! slot 1 the pre-committed one an interrupted command may leave behind. Each location gives the
//! text's offset from the area's start, its size and its checksum; text that runs past the
//! area's end continues right after the header (lvm2 `_vg_read_raw_area`), and the checksum
//! covers both pieces.

use crate::label::SECTOR;
use crate::{Error, crc};
use imgstream_blockio::ReadAt;
use imgstream_volume::fields::{array, le32, le64};
use imgstream_volume::read_at;
use std::ops::Range;

/// `mda_header.magic`.
const MAGIC: &[u8; 16] = b" LVM2 x[5A%r0N*>";
/// `mda_header.version`.
const VERSION: u32 = 1;
/// The header's `raw_locn` array starts here; each entry is 24 bytes.
const RAW_LOCNS: usize = 40;
const RAW_LOCN_LEN: usize = 24;
/// `raw_locn.flags`: `pvchange --metadataignore`; lvm reads no metadata from such a slot.
const RAW_LOCN_IGNORED: u32 = 1;
/// The largest metadata text we read (LVM's own texts are kilobytes; this bounds memory).
const MAX_TEXT: u64 = 64 << 20;

/// One slot's metadata text, checksum verified.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MetadataText {
    /// Byte offset of the metadata area in the PV.
    pub area: u64,
    /// 0 for committed, 1 for pre-committed.
    pub slot: usize,
    /// The text, without trailing NUL bytes.
    pub text: Vec<u8>,
    /// Whether the text wrapped around the end of the circular buffer.
    pub wrapped: bool,
}

/// Reads the header of the metadata area `area` and the text of its committed and pre-committed
/// slots (those in use and not ignored).
pub(crate) fn read(volume: &dyn ReadAt, area: &Range<u64>) -> Result<Vec<MetadataText>, Error> {
    const STRUCTURE: &str = "LVM2 metadata area header";
    let mut header = [0u8; SECTOR as usize];
    read_at(volume, || STRUCTURE, area.start, &mut header)?;
    let corrupt = |field: usize, problem: String| Error::corrupt(STRUCTURE, area.start + field as u64, problem);
    let stored = le32(&header, 0);
    let computed = crc::checksum(header.get(4..).unwrap_or_default());
    if array::<16>(&header, 4) != *MAGIC {
        return Err(corrupt(4, "no \" LVM2 x[5A%r0N*>\" magic".into()));
    }
    if stored != computed {
        return Err(corrupt(0, format!("checksum {stored:#010x}, computed {computed:#010x}")));
    }
    if le32(&header, 20) != VERSION {
        return Err(Error::unsupported(STRUCTURE, area.start + 20, format!("version {}", le32(&header, 20))));
    }
    let size = area.end - area.start;
    if le64(&header, 24) != area.start || le64(&header, 32) != size {
        return Err(corrupt(
            24,
            format!(
                "describes {} bytes at byte {}, the PV header says {size} at {}",
                le64(&header, 32),
                le64(&header, 24),
                area.start
            ),
        ));
    }
    let mut texts = Vec::new();
    for slot in 0..2 {
        let at = RAW_LOCNS + slot * RAW_LOCN_LEN;
        let (offset, len, checksum, flags) =
            (le64(&header, at), le64(&header, at + 8), le32(&header, at + 16), le32(&header, at + 20));
        if offset == 0 || flags & RAW_LOCN_IGNORED != 0 {
            continue;
        }
        let buffer = size - SECTOR;
        if offset < SECTOR || offset >= size || len == 0 || len > buffer {
            return Err(corrupt(
                at,
                format!("slot {slot}: {len} bytes of text at offset {offset} in a {size}-byte area"),
            ));
        }
        if len > MAX_TEXT {
            return Err(Error::unsupported(
                STRUCTURE,
                area.start + at as u64,
                format!("slot {slot}: {len} bytes of text"),
            ));
        }
        // The text may wrap: what does not fit before the area's end continues after the header.
        let first = len.min(size - offset);
        let mut text = vec![0u8; len as usize];
        let (head, tail) = text.split_at_mut(first as usize);
        let structure = || format!("LVM2 metadata text (slot {slot}) of the area at byte {}", area.start);
        read_at(volume, structure, area.start + offset, head)?;
        read_at(volume, structure, area.start + SECTOR, tail)?;
        let wrapped = !tail.is_empty();
        let computed = crc::checksum(&text);
        if computed != checksum {
            return Err(corrupt(
                at + 16,
                format!("slot {slot}: text checksum {checksum:#010x}, computed {computed:#010x}"),
            ));
        }
        while text.last() == Some(&0) {
            text.pop();
        }
        texts.push(MetadataText { area: area.start, slot, text, wrapped });
    }
    Ok(texts)
}
