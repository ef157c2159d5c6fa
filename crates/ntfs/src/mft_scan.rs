//! Every cluster a file occupies, from the MFT itself: the second view of what is in use.
//!
//! `$Bitmap` alone decides nothing: a flipped bit in it would zero a file's clusters. ntfsclone
//! walks every MFT record and refuses the volume when a run lies on a cluster `$Bitmap` marks
//! free ("Cluster accounting failed"); we walk them the same way and keep such clusters instead
//! (the caller warns). The walk is our own, because the `ntfs` crate cannot read records past
//! the first extent of a fragmented `$MFT` (crates.md §2.4): `$MFT` is read through its own data
//! runs, and each record is parsed here.
//!
//! Every record in use (its header flag) is walked, base and extension records alike, so every
//! extent of every attribute is seen in the record that holds it, attribute lists need no
//! following, and each non-resident attribute counts: unnamed and named `$DATA`,
//! `$INDEX_ALLOCATION`, `$BITMAP`, `$ATTRIBUTE_LIST`, `$EA`, `$LOGGED_UTILITY_STREAM`, ...
//! A record the MFT bitmap or its own header marks in use must parse: a torn or damaged one is
//! corruption, never skipped.
//!
//! Layouts: ntfs-3g `include/ntfs-3g/layout.h` (`MFT_RECORD`, `ATTR_RECORD`) and
//! `libntfs-3g/runlist.c` (`ntfs_mapping_pairs_decompress`).

use crate::boot_sector::{BootSector, le_u16, le_u32, le_u64};
use crate::data_runs::{Stream, read_at};
use crate::error::Error;
use crate::logfile::{Strides, apply_fixups};
use imgstream_blockio::ReadAt;
use imgstream_volume::RangeSet;
use imgstream_volume::fields::u8_at;

/// MFT record header fields.
const RECORD_MAGIC: &[u8; 4] = b"FILE";
const ATTRS_OFFSET: usize = 0x14;
const FLAGS: usize = 0x16;
const BYTES_IN_USE: usize = 0x18;
/// `flags`: the record is in use.
const IN_USE: u16 = 0x0001;
/// Attribute record header fields.
const ATTR_TYPE: usize = 0x00;
const ATTR_LENGTH: usize = 0x04;
const ATTR_NON_RESIDENT: usize = 0x08;
const ATTR_NAME_LENGTH: usize = 0x09;
const ATTR_LOWEST_VCN: usize = 0x10;
const ATTR_MAPPING_PAIRS_OFFSET: usize = 0x20;
const ATTR_INITIALIZED_SIZE: usize = 0x38;
/// The `$DATA` attribute type.
const DATA: u32 = 0x80;
/// The type that ends a record's attributes.
const END_MARKER: u32 = 0xFFFF_FFFF;
/// The smallest attribute headers: resident 24 bytes, non-resident 64.
const MIN_ATTR_LEN: usize = 0x18;
const MIN_NON_RESIDENT_LEN: usize = 0x40;
/// Records are read this many bytes at a time.
const CHUNK_BYTES: u64 = 1 << 20;

/// What the walk found.
#[derive(Debug, Default)]
pub(crate) struct FileClusters {
    /// Byte ranges of the clusters that in-use records' non-resident attributes occupy.
    pub(crate) clusters: RangeSet,
    /// How many records were in use.
    pub(crate) records_in_use: u64,
}

/// Walks every record of `$MFT` (`mft`, its unnamed `$DATA`), with the MFT's own `$BITMAP`
/// (`mft_bitmap`, one bit per record) when it could be read.
pub(crate) fn file_clusters(
    volume: &dyn ReadAt,
    boot: &BootSector,
    mft: &Stream,
    mft_bitmap: Option<&[u8]>,
) -> Result<FileClusters, Error> {
    let record_size = boot.record_size;
    let mut record0 = vec![0u8; usize::try_from(record_size).unwrap_or(0)];
    read_at(volume, mft, 0, &mut record0)?;
    let position = mft.volume_offset(0).unwrap_or(0);
    let initialized =
        initialized_size(&mut record0).map_err(|problem| Error::corrupt("MFT record 0", position, problem))?;
    let records = mft.data_size().min(initialized.unwrap_or(u64::MAX)) / record_size;
    let chunk_records = (CHUNK_BYTES / record_size).max(1);
    let mut chunk = vec![0u8; usize::try_from(chunk_records.min(records) * record_size).unwrap_or(0)];
    let mut found = FileClusters::default();
    let mut first = 0u64;
    while first < records {
        let count = (records - first).min(chunk_records);
        let bytes = chunk.get_mut(..usize::try_from(count * record_size).unwrap_or(0)).unwrap_or_default();
        read_at(volume, mft, first * record_size, bytes)?;
        for (index, record) in bytes.chunks_exact_mut(usize::try_from(record_size).unwrap_or(1)).enumerate() {
            let number = first + index as u64;
            let marked = mft_bitmap.is_some_and(|bits| bit(bits, number));
            let corrupt = |problem| {
                let position = mft.volume_offset(number * record_size).unwrap_or(0);
                Error::corrupt(format!("MFT record {number}"), position, problem)
            };
            if let Some(attributes) = in_use_attributes(record, marked).map_err(corrupt)? {
                found.records_in_use += 1;
                add_runs(attributes, boot, &mut found.clusters).map_err(corrupt)?;
            }
        }
        first += count;
    }
    Ok(found)
}

fn bit(bits: &[u8], index: u64) -> bool {
    usize::try_from(index / 8).ok().and_then(|byte| bits.get(byte)).is_some_and(|b| b >> (index % 8) & 1 != 0)
}

/// The attribute bytes of a record in use (fixups applied), `None` for a free record, or why a
/// record that is in use (`marked` by the MFT bitmap, or by its own flag) cannot be read.
fn in_use_attributes(record: &mut [u8], marked: bool) -> Result<Option<&[u8]>, String> {
    if !record.starts_with(RECORD_MAGIC) {
        // An all-zero record was never written (a formatter may reserve bitmap bits for
        // records it leaves blank): it holds no attributes.
        if !marked || record.iter().all(|&b| b == 0) {
            return Ok(None);
        }
        let magic = record.get(..4).map(String::from_utf8_lossy).unwrap_or_default().into_owned();
        return Err(format!("the MFT bitmap marks it in use, but its magic is {magic:?}, not \"FILE\""));
    }
    // The flags lie in the first stride, before any fixed-up bytes.
    let flagged = le_u16(record, FLAGS) & IN_USE != 0;
    if !marked && !flagged {
        return Ok(None);
    }
    if let Err(why) = apply_fixups(record, Strides::All) {
        if marked || flagged {
            return Err(format!("a record in use fails its update sequence check: {why}"));
        }
        return Ok(None);
    }
    if !flagged {
        return Ok(None);
    }
    let start = usize::from(le_u16(record, ATTRS_OFFSET));
    let in_use = usize::try_from(le_u32(record, BYTES_IN_USE)).unwrap_or(usize::MAX);
    match record.get(start..in_use) {
        Some(attributes) if start % 8 == 0 && start >= 0x30 => Ok(Some(attributes)),
        _ => Err(format!(
            "attributes at byte {start} to bytes in use {in_use} do not fit the {}-byte record",
            record.len()
        )),
    }
}

/// Calls `visit(offset, type, attribute bytes)` for each attribute of a record's attribute area
/// (from its first attribute to the end of its bytes in use), checking each one's length.
fn for_each_attribute(
    attributes: &[u8],
    mut visit: impl FnMut(usize, u32, &[u8]) -> Result<(), String>,
) -> Result<(), String> {
    let mut at = 0usize;
    // Each attribute is at least 24 bytes long, so this bounds the loop.
    for _ in 0..=attributes.len() / MIN_ATTR_LEN {
        let ty = le_u32(attributes, at + ATTR_TYPE);
        if ty == END_MARKER {
            return Ok(());
        }
        let length = usize::try_from(le_u32(attributes, at + ATTR_LENGTH)).unwrap_or(usize::MAX);
        let attribute = at.checked_add(length).and_then(|end| attributes.get(at..end));
        let non_resident = attributes.get(at + ATTR_NON_RESIDENT).copied().unwrap_or(0) != 0;
        let min = if non_resident { MIN_NON_RESIDENT_LEN } else { MIN_ATTR_LEN };
        let Some(attribute) = attribute.filter(|_| length >= min && length % 8 == 0) else {
            return Err(format!(
                "attribute {ty:#x} at byte {at} of the attributes is {length} bytes long, which does not fit"
            ));
        };
        visit(at, ty, attribute)?;
        at += length;
    }
    Err("no end marker after its attributes".into())
}

/// Adds the clusters of every non-resident attribute in `attributes` (a record's attribute
/// area) to `clusters`.
fn add_runs(attributes: &[u8], boot: &BootSector, clusters: &mut RangeSet) -> Result<(), String> {
    for_each_attribute(attributes, |at, ty, attribute| {
        if u8_at(attribute, ATTR_NON_RESIDENT) == 0 {
            return Ok(());
        }
        let length = attribute.len();
        let pairs = usize::from(le_u16(attribute, ATTR_MAPPING_PAIRS_OFFSET));
        let runs = attribute.get(pairs..).filter(|_| pairs >= MIN_NON_RESIDENT_LEN).ok_or_else(|| {
            format!("attribute {ty:#x} at byte {at}: mapping pairs offset {pairs} outside its {length} bytes")
        })?;
        for (lcn, count) in decode_runs(runs).map_err(|why| format!("attribute {ty:#x} at byte {at}: {why}"))? {
            let end = lcn.checked_add(count).filter(|&end| end <= boot.total_clusters);
            if end.is_none() {
                return Err(format!(
                    "attribute {ty:#x} at byte {at}: data run of {count} clusters at cluster {lcn} lies past the last cluster {}",
                    boot.total_clusters - 1
                ));
            }
            clusters.insert(lcn * boot.cluster_size..(lcn + count) * boot.cluster_size);
        }
        Ok(())
    })
}

/// The `initialized_size` of the unnamed `$DATA` of `$MFT`'s record 0 (its first extent holds
/// it), if the record has that attribute. Records past it were never written: like ntfsclone,
/// the walk stops there, since what they hold is stale.
fn initialized_size(record0: &mut [u8]) -> Result<Option<u64>, String> {
    let Some(attributes) = in_use_attributes(record0, true)? else { return Ok(None) };
    let mut size = None;
    for_each_attribute(attributes, |_, ty, attribute| {
        let unnamed_first_extent = u8_at(attribute, ATTR_NAME_LENGTH) == 0 && le_u64(attribute, ATTR_LOWEST_VCN) == 0;
        if ty == DATA && u8_at(attribute, ATTR_NON_RESIDENT) != 0 && unnamed_first_extent {
            size = Some(le_u64(attribute, ATTR_INITIALIZED_SIZE));
        }
        Ok(())
    })?;
    Ok(size)
}

/// Decodes mapping pairs (ntfs-3g `ntfs_mapping_pairs_decompress`) into (first cluster,
/// clusters) of each allocated run; sparse runs occupy nothing and are left out. Each pair is a
/// header byte (low nibble: bytes of the run length, high nibble: bytes of the signed LCN delta,
/// 0 for a sparse run), then those little-endian bytes; a zero header ends the list.
pub(crate) fn decode_runs(pairs: &[u8]) -> Result<Vec<(u64, u64)>, String> {
    let mut runs = Vec::new();
    let mut lcn = 0i64;
    let mut at = 0usize;
    // Each pair takes at least two bytes, so this bounds the loop.
    for _ in 0..=pairs.len() {
        let header = *pairs.get(at).ok_or_else(|| format!("mapping pairs end at byte {at} without a terminator"))?;
        if header == 0 {
            return Ok(runs);
        }
        let (length_bytes, delta_bytes) = (usize::from(header & 0x0F), usize::from(header >> 4));
        if length_bytes == 0 || length_bytes > 8 || delta_bytes > 8 {
            return Err(format!("mapping pair header {header:#04x} at byte {at} is invalid"));
        }
        let field = |from: usize, len: usize| {
            pairs.get(from..from + len).map(signed_le).ok_or_else(|| format!("mapping pair at byte {at} is cut short"))
        };
        let length = field(at + 1, length_bytes)?;
        if length <= 0 {
            return Err(format!("mapping pair at byte {at} has run length {length}"));
        }
        if delta_bytes > 0 {
            let delta = field(at + 1 + length_bytes, delta_bytes)?;
            lcn = lcn.checked_add(delta).filter(|&lcn| lcn >= 0).ok_or_else(|| {
                format!("mapping pair at byte {at}: cluster delta {delta} from {lcn} leaves the volume")
            })?;
            runs.push((lcn.unsigned_abs(), length.unsigned_abs()));
        }
        at += 1 + length_bytes + delta_bytes;
    }
    Err("too many mapping pairs".into())
}

/// A little-endian two's complement number of 1 to 8 bytes.
fn signed_le(bytes: &[u8]) -> i64 {
    let mut raw = [0u8; 8];
    let fill = if bytes.last().is_some_and(|&b| b & 0x80 != 0) { 0xFF } else { 0 };
    raw.fill(fill);
    for (dst, &src) in raw.iter_mut().zip(bytes) {
        *dst = src;
    }
    i64::from_le_bytes(raw)
}

#[cfg(test)]
#[allow(clippy::indexing_slicing)]
mod tests {
    use super::*;

    #[test]
    fn mapping_pairs_decode_with_signed_deltas_and_sparse_runs() {
        // 0x21: 1 length byte, 2 delta bytes. Run 1: 0x18 clusters at 0x5634. Sparse (0x01):
        // 0x10 clusters. Run 3: 0x08 clusters at delta -0x10 (0xF0 sign-extended).
        let pairs = [0x21, 0x18, 0x34, 0x56, 0x01, 0x10, 0x11, 0x08, 0xF0, 0x00];
        assert_eq!(decode_runs(&pairs).unwrap(), [(0x5634, 0x18), (0x5624, 0x08)]);
        assert_eq!(signed_le(&[0xFF]), -1);
        assert_eq!(signed_le(&[0x80, 0x00]), 0x80);
        assert_eq!(signed_le(&[0xFF; 8]), -1);
    }

    #[test]
    fn bad_mapping_pairs_are_errors() {
        for (pairs, expected) in [
            (&[0x21, 0x18, 0x34][..], "cut short"),
            (&[0x21, 0x18, 0x34, 0x56][..], "without a terminator"),
            (&[0x11, 0x04, 0xFF, 0x00][..], "leaves the volume"),
            (&[0x11, 0xFF, 0x04, 0x00][..], "run length -1"),
            (&[0x90, 0x00][..], "invalid"),
            (&[][..], "without a terminator"),
        ] {
            let error = decode_runs(pairs).unwrap_err();
            assert!(error.contains(expected), "{pairs:?}: {error}");
        }
    }

    fn boot() -> BootSector {
        BootSector::small_for_tests()
    }

    /// A 1 KiB record in use holding `attributes` (each already laid out), with valid fixups.
    fn record(attributes: &[&[u8]], flags: u16) -> Vec<u8> {
        let mut r = vec![0u8; 1024];
        r[..4].copy_from_slice(RECORD_MAGIC);
        r[4..6].copy_from_slice(&0x30u16.to_le_bytes()); // update sequence array at 0x30
        r[6..8].copy_from_slice(&3u16.to_le_bytes());
        r[0x30..0x32].copy_from_slice(&7u16.to_le_bytes());
        r[ATTRS_OFFSET..ATTRS_OFFSET + 2].copy_from_slice(&0x38u16.to_le_bytes());
        r[FLAGS..FLAGS + 2].copy_from_slice(&flags.to_le_bytes());
        let mut at = 0x38;
        for a in attributes {
            r[at..at + a.len()].copy_from_slice(a);
            at += a.len();
        }
        r[at..at + 4].copy_from_slice(&END_MARKER.to_le_bytes());
        r[BYTES_IN_USE..BYTES_IN_USE + 4].copy_from_slice(&(at as u32 + 8).to_le_bytes());
        for stride in 1..=2 {
            let end = stride * 512;
            r.copy_within(end - 2..end, 0x30 + 2 * stride);
            r[end - 2..end].copy_from_slice(&7u16.to_le_bytes());
        }
        r
    }

    fn non_resident(ty: u32, pairs: &[u8]) -> Vec<u8> {
        let len = (0x40 + pairs.len()).div_ceil(8) * 8;
        let mut a = vec![0u8; len];
        a[..4].copy_from_slice(&ty.to_le_bytes());
        a[4..8].copy_from_slice(&(len as u32).to_le_bytes());
        a[ATTR_NON_RESIDENT] = 1;
        a[ATTR_MAPPING_PAIRS_OFFSET..ATTR_MAPPING_PAIRS_OFFSET + 2].copy_from_slice(&0x40u16.to_le_bytes());
        a[0x40..0x40 + pairs.len()].copy_from_slice(pairs);
        a
    }

    fn resident(ty: u32) -> Vec<u8> {
        let mut a = vec![0u8; 0x18];
        a[..4].copy_from_slice(&ty.to_le_bytes());
        a[4..8].copy_from_slice(&0x18u32.to_le_bytes());
        a
    }

    fn walk(record: &mut [u8], marked: bool) -> Result<Option<RangeSet>, String> {
        let Some(attributes) = in_use_attributes(record, marked)? else { return Ok(None) };
        let mut clusters = RangeSet::new();
        add_runs(attributes, &boot(), &mut clusters)?;
        Ok(Some(clusters))
    }

    #[test]
    fn every_non_resident_attribute_of_a_record_in_use_counts() {
        // A resident $STANDARD_INFORMATION, $DATA at clusters 10..12, a named $EA-like 0xE0 at 20.
        let data = non_resident(0x80, &[0x11, 0x02, 0x0A, 0x00]);
        let ea = non_resident(0xE0, &[0x11, 0x01, 0x14, 0x00]);
        let mut r = record(&[&resident(0x10), &data, &ea], IN_USE);
        let clusters = walk(&mut r, false).unwrap().unwrap();
        assert_eq!(clusters.iter().collect::<Vec<_>>(), [10 * 4096..12 * 4096, 20 * 4096..21 * 4096]);
        // Not in use: nothing, even with runs.
        let mut free = record(&[&data], 0);
        assert_eq!(walk(&mut free, false).unwrap(), None);
    }

    #[test]
    fn damaged_records_in_use_are_errors_and_free_garbage_is_skipped() {
        let data = non_resident(0x80, &[0x11, 0x02, 0x0A, 0x00]);
        let mut torn = record(&[&data], IN_USE);
        torn[511] ^= 1;
        assert!(walk(&mut torn, false).unwrap_err().contains("update sequence"));
        let mut garbage = vec![0xABu8; 1024];
        assert_eq!(walk(&mut garbage, false).unwrap(), None);
        assert!(walk(&mut garbage, true).unwrap_err().contains("magic"));
        assert_eq!(walk(&mut vec![0u8; 1024], true).unwrap(), None, "a blank record reserved in the MFT bitmap");
        let past_end = non_resident(0x80, &[0x11, 0x02, 0x63, 0x00]); // clusters 99..101 of 100
        assert!(walk(&mut record(&[&past_end], IN_USE), false).unwrap_err().contains("past the last cluster 99"));
        let mut long = non_resident(0x80, &[0x11, 0x02, 0x0A, 0x00]);
        long[4] = 0xF8; // length 248: past bytes in use
        assert!(walk(&mut record(&[&long], IN_USE), false).unwrap_err().contains("does not fit"));
        let mut no_end = record(&[&data], IN_USE);
        no_end[BYTES_IN_USE] = 0x38 + data.len() as u8; // the end marker lies past bytes in use
        assert!(walk(&mut no_end, false).is_err());
    }

    #[test]
    fn the_initialized_size_comes_from_the_first_extent_of_the_unnamed_data() {
        let mut data = non_resident(0x80, &[0x11, 0x02, 0x0A, 0x00]);
        data[ATTR_INITIALIZED_SIZE..ATTR_INITIALIZED_SIZE + 8].copy_from_slice(&0x5000u64.to_le_bytes());
        let mut named = data.clone();
        named[ATTR_NAME_LENGTH] = 4;
        let mut later = data.clone();
        later[ATTR_LOWEST_VCN] = 1;
        assert_eq!(initialized_size(&mut record(&[&resident(0x10), &data], IN_USE)), Ok(Some(0x5000)));
        assert_eq!(initialized_size(&mut record(&[&named, &later], IN_USE)), Ok(None));
        assert!(initialized_size(&mut vec![0xFFu8; 1024]).unwrap_err().contains("magic"));
    }

    /// Property: any single-byte change of a record in use parses or fails cleanly.
    #[test]
    fn every_single_byte_mutation_is_handled() {
        let data = non_resident(0x80, &[0x21, 0x02, 0x0A, 0x00, 0x11, 0x01, 0x05, 0x00]);
        let base = record(&[&resident(0x10), &data], IN_USE);
        for at in 0..0x38 + 0x18 + data.len() + 8 {
            for value in [0x00, 0x01, 0x7F, 0x80, 0xFF] {
                let mut r = base.clone();
                r[at] = value;
                if let Ok(Some(clusters)) = walk(&mut r, true) {
                    assert!(clusters.end() <= 100 * 4096);
                }
            }
        }
    }
}
