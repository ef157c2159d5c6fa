//! The root directory's `$I30` index (MFT record 5): which of a few names it holds.
//!
//! We do not use the `ntfs` crate's B-tree search: it follows subnode pointers without a bound
//! (a crafted index that points at itself would never end) and needs the volume's `$UpCase`
//! table. Instead every node reachable from `$INDEX_ROOT` is visited once (a root directory has a
//! few dozen entries), with each subnode read at most once, at most [`MAX_ENTRIES_PER_NODE`]
//! entries per node, and the index record size checked before the crate allocates a record of
//! that size. Names are compared ASCII-case-insensitively, which is exact for the ASCII names
//! looked up here.

use crate::boot_sector::MAX_INDEX_RECORD_SIZE;
use crate::boot_sector::{le_u16, le_u32};
use crate::data_runs::{Stream, attribute_stream, read_at};
use crate::error::{Error, Offset};
use crate::logfile::{Strides, apply_fixups};
use imgstream_blockio::ReadAt;
use ntfs::attribute_value::NtfsAttributeValue;
use ntfs::indexes::NtfsFileNameIndex;
use ntfs::structured_values::{NtfsIndexAllocation, NtfsIndexRoot};
use ntfs::{Ntfs, NtfsAttributeType, NtfsFile, NtfsIndexEntry, NtfsIndexEntryFlags};
use std::collections::{BTreeSet, VecDeque};
use std::io::{Read, Seek};

/// The directory index of a directory is named `$I30`.
const DIRECTORY_INDEX: &str = "$I30";
/// An index entry header is 16 bytes, so a node of at most 64 KiB holds at most this many.
const MAX_ENTRIES_PER_NODE: usize = (MAX_INDEX_RECORD_SIZE / 16) as usize;
/// Index entry header size; shorter entries are corrupt (and would underflow the crate's
/// subnode arithmetic).
const ENTRY_HEADER_SIZE: u16 = 16;
/// Index node header (after the $INDEX_ROOT header or the INDX record header): entries offset
/// u32 @0 and index size u32 @4, both relative to the node header; the header is 16 bytes.
const NODE_ENTRIES_OFFSET: usize = 0;
const NODE_INDEX_SIZE: usize = 4;
const NODE_HEADER_SIZE: u64 = 16;
/// The $INDEX_ROOT value starts with 16 bytes before its node header.
const INDEX_ROOT_HEADER_SIZE: usize = 16;
/// An INDX record starts with 24 bytes before its node header.
const INDEX_RECORD_HEADER_SIZE: usize = 24;
/// Index entry: length u16 @8, flags u8 @12 (0x02: the last entry of the node, no key).
const ENTRY_LENGTH: usize = 8;
const ENTRY_FLAGS: usize = 12;
const LAST_ENTRY_FLAG: u8 = 0x02;
/// Bound on the index nodes visited.
const MAX_NODES: usize = 1 << 16;

/// A name found in the root directory and the MFT record it points to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Found {
    /// Index into the names looked up.
    pub(crate) name: usize,
    /// MFT record number of the file.
    pub(crate) record: u64,
    /// Sequence number the index entry expects the record to carry.
    pub(crate) sequence: u16,
}

/// Looks `names` up in the root directory; a name may be found more than once (8.3 aliases).
pub(crate) fn find<T: Read + Seek>(
    ntfs: &Ntfs,
    fs: &mut T,
    volume: &dyn ReadAt,
    names: &[&str],
) -> Result<Vec<Found>, Error> {
    let root = ntfs.root_directory(fs).map_err(Error::parse("root directory (MFT record 5)"))?;
    let context = format!("root directory index (MFT record 5 at byte {})", root.position().into_offset());
    let mut found = Vec::new();
    let mut index_root = None;
    for attribute in root.attributes_raw() {
        let attribute = attribute.map_err(Error::parse(context.clone()))?;
        if attribute.ty().map_err(Error::parse(context.clone()))? == NtfsAttributeType::IndexRoot
            && attribute.name().map_err(Error::parse(context.clone()))? == DIRECTORY_INDEX
        {
            // The crate slices the entries by these header fields without checking their order.
            if let NtfsAttributeValue::Resident(value) = attribute.value(fs).map_err(Error::parse(context.clone()))? {
                check_node(
                    value.data(),
                    INDEX_ROOT_HEADER_SIZE,
                    value.data().len(),
                    &context,
                    value.data_position().into_offset(),
                )?;
            }
            index_root =
                Some(attribute.resident_structured_value::<NtfsIndexRoot>().map_err(Error::parse(context.clone()))?);
            break;
        }
    }
    let Some(index_root) = index_root else {
        return Err(Error::corrupt(context, root.position().into_offset(), "no $INDEX_ROOT named $I30"));
    };
    let record_size = index_root.index_record_size();
    if !u64::from(record_size).is_power_of_two() || !(512..=MAX_INDEX_RECORD_SIZE).contains(&u64::from(record_size)) {
        return Err(Error::corrupt(
            context,
            index_root.position().into_offset(),
            format!("index record size {record_size} is not a power of two in 512..={MAX_INDEX_RECORD_SIZE}"),
        ));
    }
    let mut pending = VecDeque::new();
    let root_entries = index_root.entries::<NtfsFileNameIndex>().map_err(Error::parse(context.clone()))?;
    visit_node(root_entries, names, &context, &mut found, &mut pending)?;
    if pending.is_empty() {
        return Ok(found);
    }
    let (allocation, allocation_stream) = index_allocation(&root, fs, &context)?;
    let mut record_bytes = vec![0u8; record_size as usize];
    let mut visited = BTreeSet::new();
    while let Some(vcn) = pending.pop_front() {
        if !visited.insert(vcn) {
            continue;
        }
        if visited.len() > MAX_NODES {
            return Err(Error::corrupt(context, 0, format!("more than {MAX_NODES} index nodes")));
        }
        // Where the crate will read the record (VCN x cluster size): check its node header first.
        let offset = u64::try_from(vcn).ok().and_then(|v| v.checked_mul(u64::from(ntfs.cluster_size())));
        if let Some(offset) = offset.filter(|&o| o < allocation_stream.data_size()) {
            read_at(volume, &allocation_stream, offset, &mut record_bytes)?;
            // Fixed up as the crate does it (which accepts fewer strides than the record has); a
            // record that fails that is rejected by the crate before it looks at entries.
            if record_bytes.starts_with(b"INDX") && apply_fixups(&mut record_bytes, Strides::AsCounted).is_ok() {
                let at = format!("{context}: index record at VCN {vcn}");
                let position = allocation_stream.volume_offset(offset).unwrap_or(0);
                check_node(&record_bytes, INDEX_RECORD_HEADER_SIZE, record_bytes.len(), &at, position)?;
            }
        }
        let record = allocation
            .record_from_vcn(fs, record_size, ntfs::types::Vcn::from(vcn))
            .map_err(Error::parse(format!("{context}: index record at VCN {vcn}")))?;
        let entries = record.entries::<NtfsFileNameIndex>().map_err(Error::parse(context.clone()))?;
        visit_node(entries, names, &context, &mut found, &mut pending)?;
    }
    Ok(found)
}

/// `$INDEX_ALLOCATION:$I30` read from the base record (where ntfs-3g and Windows keep it for
/// small directories such as the root), for the crate and as runs for our own checks.
fn index_allocation<'n, 'f, T: Read + Seek>(
    root: &'f NtfsFile<'n>,
    fs: &mut T,
    context: &str,
) -> Result<(NtfsIndexAllocation<'n, 'f>, Stream), Error> {
    for attribute in root.attributes_raw() {
        let attribute = attribute.map_err(Error::parse(context))?;
        if attribute.ty().map_err(Error::parse(context))? == NtfsAttributeType::IndexAllocation
            && attribute.name().map_err(Error::parse(context))? == DIRECTORY_INDEX
        {
            let runs = attribute_stream(&attribute, fs, context)?;
            return Ok((
                attribute.structured_value::<_, NtfsIndexAllocation>(fs).map_err(Error::parse(context))?,
                runs,
            ));
        }
    }
    Err(Error::corrupt(
        context,
        root.position().into_offset(),
        "$INDEX_ALLOCATION:$I30 is not in the base record (an attribute-list root directory is not supported)",
    ))
}

/// Checks the index node at `start` of `node` (`len` valid bytes) before the crate parses it:
/// the entries it slices out, `[start + entries_offset, start + index_size)`, must be in order
/// and inside, and each entry up to the last must be at least a header long and end inside
/// (the crate indexes into shorter ones and loops on zero-length ones).
fn check_node(node: &[u8], start: usize, len: usize, context: &str, position: u64) -> Result<(), Error> {
    let entries_offset = le_u32(node, start + NODE_ENTRIES_OFFSET) as usize;
    let index_size = le_u32(node, start + NODE_INDEX_SIZE) as usize;
    let end = start.saturating_add(index_size);
    if (entries_offset as u64) < NODE_HEADER_SIZE || entries_offset > index_size || end > len.min(node.len()) {
        return Err(Error::corrupt(
            context,
            position,
            format!("index node header: entries at {entries_offset}, index size {index_size}, in a {len}-byte node"),
        ));
    }
    let mut entry = start + entries_offset;
    while entry < end {
        let length = usize::from(le_u16(node, entry + ENTRY_LENGTH));
        if length < usize::from(ENTRY_HEADER_SIZE) || entry + length > end {
            return Err(Error::corrupt(
                context,
                position + entry as u64,
                format!(
                    "index entry of {length} bytes does not fit between its {ENTRY_HEADER_SIZE}-byte header and the node end at {end}"
                ),
            ));
        }
        if node.get(entry + ENTRY_FLAGS).is_some_and(|f| f & LAST_ENTRY_FLAG != 0) {
            break;
        }
        entry += length;
    }
    Ok(())
}

/// Records matching names and queues subnodes of one node's entries.
fn visit_node<'s>(
    entries: impl Iterator<Item = ntfs::Result<NtfsIndexEntry<'s, NtfsFileNameIndex>>>,
    names: &[&str],
    context: &str,
    found: &mut Vec<Found>,
    pending: &mut VecDeque<i64>,
) -> Result<(), Error> {
    for entry in entries.take(MAX_ENTRIES_PER_NODE) {
        let entry = entry.map_err(Error::parse(context))?;
        let position = entry.position().into_offset();
        if entry.index_entry_length() < ENTRY_HEADER_SIZE {
            return Err(Error::corrupt(
                context,
                position,
                format!(
                    "index entry length {} is shorter than its {ENTRY_HEADER_SIZE}-byte header",
                    entry.index_entry_length()
                ),
            ));
        }
        if entry.flags().contains(NtfsIndexEntryFlags::HAS_SUBNODE) {
            if let Some(vcn) = entry.subnode_vcn() {
                pending.push_back(vcn.map_err(Error::parse(context))?.value());
            }
        }
        if entry.flags().contains(NtfsIndexEntryFlags::LAST_ENTRY) {
            continue;
        }
        let Some(key) = entry.key() else { continue };
        let key = key.map_err(Error::parse(context))?;
        let name = key.name().to_string_lossy();
        if let Some(i) = names.iter().position(|n| n.eq_ignore_ascii_case(&name)) {
            let reference = entry.file_reference();
            found.push(Found {
                name: i,
                record: reference.file_record_number(),
                sequence: reference.sequence_number(),
            });
        }
    }
    Ok(())
}
