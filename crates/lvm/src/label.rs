//! The LVM2 label and PV header: "LABELONE" in one of sectors 0-3 (normally 1), checksummed,
//! followed by the PV's UUID, its size, where its physical extents start (the data area) and
//! where its metadata areas are (lvm2 `lib/label/label.h`, `lib/format_text/layout.h`).

use crate::{Error, crc};
use imgstream_blockio::ReadAt;
use imgstream_volume::fields::{array, le32, le64};
use std::ops::Range;

/// Sector size of every LVM2 on-disk offset counted in sectors.
pub(crate) const SECTOR: u64 = 512;
/// The label lies in one of the first four sectors.
const LABEL_SECTORS: u64 = 4;
/// `label_header.id`.
const LABEL_ID: &[u8; 8] = b"LABELONE";
/// `label_header.type` of a text-format (LVM2) PV.
const LABEL_TYPE: &[u8; 8] = b"LVM2 001";
/// Size of `label_header`; the PV header follows at `offset`, normally right after it.
const LABEL_HEADER_LEN: usize = 32;
/// `pv_header`: UUID (32 ASCII characters) then the device size; `disk_locn` lists follow.
const UUID_LEN: usize = 32;
const DISK_LOCN_LEN: usize = 16;

/// What the label sector says about a PV.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Label {
    /// Which sector (0-3) holds the label.
    pub sector: u64,
    /// The PV's UUID, 32 characters without dashes.
    pub uuid: String,
    /// Device size recorded by `pvcreate`, in bytes.
    pub device_size: u64,
    /// Byte offset where the data area (the first physical extent) starts.
    pub data_start: u64,
    /// The metadata areas, as PV byte ranges (a header sector and a circular text buffer).
    pub metadata_areas: Vec<Range<u64>>,
}

/// The sector holding "LABELONE" and "LVM2 001", if any of sectors 0-3 does.
pub(crate) fn find(volume: &dyn ReadAt) -> std::io::Result<Option<(u64, [u8; 512])>> {
    for sector in 0..LABEL_SECTORS {
        let mut bytes = [0u8; SECTOR as usize];
        if (sector + 1) * SECTOR > volume.size() {
            break;
        }
        volume.read_exact_at(&mut bytes, sector * SECTOR)?;
        if bytes.starts_with(LABEL_ID) && bytes.get(24..32) == Some(LABEL_TYPE.as_slice()) {
            return Ok(Some((sector, bytes)));
        }
    }
    Ok(None)
}

/// Parses the label found in `sector` (its 512 bytes in `bytes`).
pub(crate) fn parse(sector: u64, bytes: &[u8; 512]) -> Result<Label, Error> {
    let at = sector * SECTOR;
    let corrupt = |field: usize, problem: String| Error::corrupt("LVM2 label", at + field as u64, problem);
    if le64(bytes, 8) != sector {
        return Err(corrupt(8, format!("records sector {}, found in sector {sector}", le64(bytes, 8))));
    }
    let stored = le32(bytes, 16);
    let computed = crc::checksum(bytes.get(20..).unwrap_or_default());
    if stored != computed {
        return Err(corrupt(16, format!("checksum {stored:#010x}, computed {computed:#010x}")));
    }
    let offset = le32(bytes, 20) as usize;
    if !(LABEL_HEADER_LEN..=512 - UUID_LEN - 8 - 2 * DISK_LOCN_LEN).contains(&offset) {
        return Err(corrupt(20, format!("PV header offset {offset} is outside the sector")));
    }
    let uuid_bytes: [u8; UUID_LEN] = array(bytes, offset);
    if !uuid_bytes.iter().all(u8::is_ascii_alphanumeric) {
        return Err(corrupt(offset, "PV UUID is not 32 letters and digits".into()));
    }
    let uuid = String::from_utf8_lossy(&uuid_bytes).into_owned();
    let device_size = le64(bytes, offset + UUID_LEN);
    // Two NULL-terminated lists of {offset, size}: data areas, then metadata areas.
    let mut cursor = offset + UUID_LEN + 8;
    let mut lists: [Vec<(u64, u64)>; 2] = [Vec::new(), Vec::new()];
    for list in &mut lists {
        loop {
            if cursor + DISK_LOCN_LEN > bytes.len() {
                return Err(corrupt(cursor, "area list runs past the end of the label sector".into()));
            }
            let (area_offset, area_size) = (le64(bytes, cursor), le64(bytes, cursor + 8));
            cursor += DISK_LOCN_LEN;
            if area_offset == 0 {
                break;
            }
            list.push((area_offset, area_size));
        }
    }
    let [data, metadata] = lists;
    let data_start = match data.as_slice() {
        [(start, _)] => *start,
        _ => return Err(corrupt(offset, format!("{} data areas, LVM2 writes exactly one", data.len()))),
    };
    let mut metadata_areas = Vec::new();
    for (start, size) in metadata {
        let end = start.checked_add(size).filter(|_| size > SECTOR);
        let Some(end) = end else {
            return Err(corrupt(offset, format!("metadata area of {size} bytes at byte {start}")));
        };
        metadata_areas.push(start..end);
    }
    Ok(Label { sector, uuid, device_size, data_start, metadata_areas })
}

/// Reads and parses the label of `volume`; `None` if it has none.
pub(crate) fn read(volume: &dyn ReadAt) -> Result<Option<Label>, Error> {
    let found = find(volume).map_err(|source| Error::Io { structure: "LVM2 label".into(), offset: 0, source })?;
    found.map(|(sector, bytes)| parse(sector, &bytes)).transpose()
}
