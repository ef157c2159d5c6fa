//! The streams of a file (the unnamed `$DATA`, or `$INDEX_ALLOCATION:$I30`): resident bytes, or
//! their data runs (the clusters they occupy), following `$ATTRIBUTE_LIST` extents ourselves.
//!
//! `NtfsFile::data()` of the `ntfs` crate returns the wrong extent for files with an attribute
//! list (crates.md §2.4), so the walk is done here: with a list, every `$DATA` extent it names is
//! read from its own record, in VCN order; without one, the single `$DATA` attribute of the base
//! record is used.

use crate::boot_sector::le_u16;
use crate::error::{Error, Offset};
use imgstream_blockio::ReadAt;
use ntfs::attribute_value::NtfsAttributeValue;
use ntfs::structured_values::NtfsAttributeList;
use ntfs::{Ntfs, NtfsAttribute, NtfsAttributeType, NtfsFile};
use std::io::{Read, Seek};

/// At most this many runs per stream: a badly fragmented $MFT has thousands; a hostile
/// attribute list could repeat extents without end.
const MAX_RUNS: usize = 1 << 20;
/// An attribute list longer than this is refused (a few KB is usual; each entry is 32+ bytes).
const MAX_LIST_BYTES: u64 = 4 << 20;
/// Attribute list entry: length u16 @4, name length u8 @6 (in UTF-16 units), header 26 bytes.
const LIST_ENTRY_LENGTH: usize = 4;
const LIST_ENTRY_NAME_LENGTH: usize = 6;
const LIST_ENTRY_HEADER_SIZE: usize = 26;
/// At most this many attribute-list entries are looked at.
const MAX_LIST_ENTRIES: usize = 1 << 16;

/// One data run: `len` bytes of the stream at `stream_offset`, stored at volume byte `position`
/// (`None` for a sparse run, which occupies no clusters).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Run {
    pub(crate) stream_offset: u64,
    pub(crate) position: Option<u64>,
    pub(crate) len: u64,
}

/// Where the bytes of an unnamed `$DATA` stream are.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Stream {
    /// Stored inside the MFT record.
    Resident(Vec<u8>),
    /// Stored in clusters; `data_size` is the logical length.
    NonResident { data_size: u64, runs: Vec<Run> },
}

impl Stream {
    /// The logical length in bytes.
    pub(crate) fn data_size(&self) -> u64 {
        match self {
            Self::Resident(bytes) => bytes.len() as u64,
            Self::NonResident { data_size, .. } => *data_size,
        }
    }

    /// The volume byte offset of byte `offset` of a non-resident stream (`None` in a hole, past
    /// the runs, or for a resident stream).
    pub(crate) fn volume_offset(&self, offset: u64) -> Option<u64> {
        let Self::NonResident { runs, .. } = self else { return None };
        let run = runs.iter().find(|r| r.stream_offset <= offset && offset - r.stream_offset < r.len)?;
        run.position?.checked_add(offset - run.stream_offset)
    }

    /// Whether the first `len` bytes lie in the stream's bytes or runs (sparse runs count).
    pub(crate) fn covers(&self, len: u64) -> bool {
        match self {
            Self::Resident(bytes) => len <= bytes.len() as u64,
            Self::NonResident { runs, .. } => runs.last().map_or(0, |r| r.stream_offset.saturating_add(r.len)) >= len,
        }
    }

    /// The runs that occupy clusters (empty for a resident stream).
    pub(crate) fn allocated_runs(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        let runs = match self {
            Self::Resident(_) => &[][..],
            Self::NonResident { runs, .. } => runs.as_slice(),
        };
        runs.iter().filter_map(|r| r.position.map(|p| (p, r.len)))
    }
}

/// The unnamed `$DATA` stream of `file`, or `None` if it has none.
pub(crate) fn unnamed_data<T: Read + Seek>(
    ntfs: &Ntfs,
    volume: &dyn ReadAt,
    file: &NtfsFile<'_>,
    fs: &mut T,
) -> Result<Option<Stream>, Error> {
    stream(ntfs, volume, file, fs, NtfsAttributeType::Data, "")
}

/// The stream of attribute `ty` named `name` ("" for unnamed) of `file`, or `None`.
pub(crate) fn stream<T: Read + Seek>(
    ntfs: &Ntfs,
    volume: &dyn ReadAt,
    file: &NtfsFile<'_>,
    fs: &mut T,
    ty: NtfsAttributeType,
    name: &str,
) -> Result<Option<Stream>, Error> {
    let record = file.file_record_number();
    let context = |what: &str| format!("MFT record {record} at byte {}: {what}", file.position().into_offset());
    for attribute in file.attributes_raw() {
        let attribute = attribute.map_err(Error::parse(context("attribute")))?;
        if attribute.ty().map_err(Error::parse(context("attribute type")))? == NtfsAttributeType::AttributeList {
            return from_attribute_list(ntfs, volume, file, &attribute, fs, ty, name);
        }
    }
    for attribute in file.attributes_raw() {
        let attribute = attribute.map_err(Error::parse(context("attribute")))?;
        if attribute.ty().map_err(Error::parse(context("attribute type")))? != ty
            || attribute.name().map_err(Error::parse(context("attribute name")))? != name
        {
            continue;
        }
        return attribute_stream(&attribute, fs, &context("attribute value")).map(Some);
    }
    Ok(None)
}

/// Checks every entry of an attribute list before the crate parses it: the crate panics on an
/// entry header cut short by the end of the list (binrw's error is not an I/O error there), and
/// on a non-resident list whose runs do not cover its length.
fn check_attribute_list<T: Read + Seek>(
    volume: &dyn ReadAt,
    list: &NtfsAttribute<'_, '_>,
    fs: &mut T,
    context: &str,
) -> Result<(), Error> {
    let position = list.position().into_offset();
    let stream = attribute_stream(list, fs, context)?;
    let size = stream.data_size();
    if size > MAX_LIST_BYTES || !stream.covers(size) {
        return Err(Error::corrupt(
            context,
            position,
            format!("{size} bytes, not covered by its runs or above {MAX_LIST_BYTES}"),
        ));
    }
    let mut bytes = vec![0u8; usize::try_from(size).unwrap_or(0)];
    read_at(volume, &stream, 0, &mut bytes)?;
    let mut entry = 0usize;
    while entry < bytes.len() {
        let length = usize::from(le_u16(&bytes, entry + LIST_ENTRY_LENGTH));
        let name = 2 * usize::from(bytes.get(entry + LIST_ENTRY_NAME_LENGTH).copied().unwrap_or(0));
        if length < LIST_ENTRY_HEADER_SIZE + name || entry + length > bytes.len() {
            return Err(Error::corrupt(
                context,
                position,
                format!(
                    "entry at byte {entry} of the list is {length} bytes long, its header and name need {}, the list has {} left",
                    LIST_ENTRY_HEADER_SIZE + name,
                    bytes.len() - entry
                ),
            ));
        }
        entry += length;
    }
    Ok(())
}

/// The stream of one attribute on its own (its own runs only, no attribute list).
pub(crate) fn attribute_stream<T: Read + Seek>(
    attribute: &NtfsAttribute<'_, '_>,
    fs: &mut T,
    context: &str,
) -> Result<Stream, Error> {
    let mut runs = Vec::new();
    let data_size = attribute.value_length();
    Ok(match extent(attribute, fs, &mut runs, 0, context)? {
        Some(resident) => Stream::Resident(resident),
        None => Stream::NonResident { data_size, runs },
    })
}

/// Every extent of attribute `ty` named `name` listed by `list`, read from its own record, in
/// VCN order.
fn from_attribute_list<T: Read + Seek>(
    ntfs: &Ntfs,
    volume: &dyn ReadAt,
    file: &NtfsFile<'_>,
    list: &NtfsAttribute<'_, '_>,
    fs: &mut T,
    ty: NtfsAttributeType,
    name: &str,
) -> Result<Option<Stream>, Error> {
    let context = format!(
        "$ATTRIBUTE_LIST of MFT record {} at byte {}",
        file.file_record_number(),
        list.position().into_offset()
    );
    check_attribute_list(volume, list, fs, &context)?;
    let list = list.structured_value::<_, NtfsAttributeList>(fs).map_err(Error::parse(context.clone()))?;
    let mut entries = list.entries();
    let mut runs = Vec::new();
    let mut data_size = None;
    let mut seen = 0usize;
    while let Some(entry) = entries.next(fs) {
        seen += 1;
        if seen > MAX_LIST_ENTRIES {
            return Err(Error::corrupt(
                context,
                list.position().into_offset(),
                format!("more than {MAX_LIST_ENTRIES} entries"),
            ));
        }
        let entry = entry.map_err(Error::parse(context.clone()))?;
        if entry.ty().map_err(Error::parse(context.clone()))? != ty || entry.name() != name {
            continue;
        }
        let lowest_vcn = entry.lowest_vcn().value();
        let where_ = format!(
            "{context}: {ty:?} extent at VCN {lowest_vcn} in MFT record {}",
            entry.base_file_reference().file_record_number()
        );
        let expected_offset = runs.last().map_or(0, |r: &Run| r.stream_offset.saturating_add(r.len));
        let offset = u64::try_from(lowest_vcn).ok().and_then(|v| v.checked_mul(u64::from(ntfs.cluster_size())));
        if offset != Some(expected_offset) {
            return Err(Error::corrupt(
                where_,
                entry.position().into_offset(),
                format!(
                    "starts at VCN {lowest_vcn}, but the extents before it end at byte {expected_offset} of the stream"
                ),
            ));
        }
        let extent_file = entry.to_file(ntfs, fs).map_err(Error::parse(where_.clone()))?;
        let attribute = entry.to_attribute(&extent_file).map_err(Error::parse(where_.clone()))?;
        if lowest_vcn == 0 {
            data_size = Some(attribute.value_length());
        }
        if let Some(resident) = extent(&attribute, fs, &mut runs, expected_offset, &where_)? {
            if runs.is_empty() {
                return Ok(Some(Stream::Resident(resident)));
            }
            return Err(Error::corrupt(
                where_,
                attribute.position().into_offset(),
                "a resident extent follows non-resident ones",
            ));
        }
    }
    Ok(data_size.map(|data_size| Stream::NonResident { data_size, runs }))
}

/// Appends the runs of one non-resident extent to `runs`, or returns the bytes of a resident one.
fn extent<T: Read + Seek>(
    attribute: &NtfsAttribute<'_, '_>,
    fs: &mut T,
    runs: &mut Vec<Run>,
    mut stream_offset: u64,
    context: &str,
) -> Result<Option<Vec<u8>>, Error> {
    match attribute.value(fs).map_err(Error::parse(context))? {
        NtfsAttributeValue::Resident(value) => Ok(Some(value.data().to_vec())),
        NtfsAttributeValue::NonResident(value) => {
            for run in value.data_runs() {
                let run = run.map_err(Error::parse(context))?;
                if runs.len() >= MAX_RUNS {
                    return Err(Error::corrupt(
                        context,
                        attribute.position().into_offset(),
                        format!("more than {MAX_RUNS} data runs"),
                    ));
                }
                let len = run.allocated_size();
                runs.push(Run { stream_offset, position: run.data_position().value().map(|p| p.get()), len });
                stream_offset = stream_offset.saturating_add(len);
            }
            Ok(None)
        }
        // Only reached through `NtfsFile::attributes()`, which we do not use for $DATA.
        NtfsAttributeValue::AttributeListNonResident(_) => {
            Err(Error::corrupt(context, attribute.position().into_offset(), "unexpected attribute-list value"))
        }
    }
}

/// Reads `buf.len()` bytes of `stream` from byte `offset` of the stream (zeros past its
/// logical end and in sparse runs).
pub(crate) fn read_at(volume: &dyn ReadAt, stream: &Stream, offset: u64, buf: &mut [u8]) -> Result<(), Error> {
    buf.fill(0);
    let end = offset.saturating_add(buf.len() as u64).min(stream.data_size());
    match stream {
        Stream::Resident(bytes) => {
            for (i, byte) in buf.iter_mut().enumerate() {
                let at = offset.saturating_add(i as u64);
                if at >= end {
                    break;
                }
                *byte = usize::try_from(at).ok().and_then(|at| bytes.get(at)).copied().unwrap_or(0);
            }
        }
        Stream::NonResident { runs, .. } => {
            let first = runs.partition_point(|r| r.stream_offset.saturating_add(r.len) <= offset);
            for run in runs.iter().skip(first) {
                if run.stream_offset >= end {
                    break;
                }
                let Some(position) = run.position else { continue };
                let from = run.stream_offset.max(offset);
                let to = run.stream_offset.saturating_add(run.len).min(end);
                if from >= to {
                    continue;
                }
                // Both bounds lie within [offset, offset + buf.len()), so they fit in usize.
                let (Ok(start), Ok(stop)) = (usize::try_from(from - offset), usize::try_from(to - offset)) else {
                    continue;
                };
                if let Some(dst) = buf.get_mut(start..stop) {
                    volume.read_exact_at(dst, position.saturating_add(from - run.stream_offset))?;
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::indexing_slicing)]
mod tests {
    use super::*;

    fn runs() -> Stream {
        // 4 bytes at volume byte 100, a 4-byte hole, 4 bytes at volume byte 10; logical size 10.
        Stream::NonResident {
            data_size: 10,
            runs: vec![
                Run { stream_offset: 0, position: Some(100), len: 4 },
                Run { stream_offset: 4, position: None, len: 4 },
                Run { stream_offset: 8, position: Some(10), len: 4 },
            ],
        }
    }

    #[test]
    fn reads_follow_runs_holes_and_the_logical_end() {
        let volume: Vec<u8> = (0..=255u8).collect();
        let mut buf = [0xEEu8; 12];
        read_at(&volume, &runs(), 0, &mut buf).unwrap();
        assert_eq!(buf, [100, 101, 102, 103, 0, 0, 0, 0, 10, 11, 0, 0]);
        let mut buf = [0xEEu8; 4];
        read_at(&volume, &runs(), 2, &mut buf).unwrap();
        assert_eq!(buf, [102, 103, 0, 0]);
        read_at(&volume, &runs(), 9, &mut buf).unwrap();
        assert_eq!(buf, [11, 0, 0, 0]);
        read_at(&volume, &Stream::Resident(vec![1, 2, 3]), 1, &mut buf).unwrap();
        assert_eq!(buf, [2, 3, 0, 0]);
        assert_eq!(runs().allocated_runs().collect::<Vec<_>>(), [(100, 4), (10, 4)]);
        assert_eq!(runs().volume_offset(9), Some(11));
        assert_eq!(runs().volume_offset(5), None);
        assert_eq!(runs().volume_offset(12), None);
    }

    #[test]
    fn a_run_past_the_end_of_the_volume_is_an_error_not_a_panic() {
        let volume = vec![0u8; 50];
        let mut buf = [0u8; 4];
        assert!(read_at(&volume, &runs(), 0, &mut buf).is_err());
    }
}
