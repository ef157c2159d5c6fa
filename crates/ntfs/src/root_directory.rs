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
use crate::error::{Error, Offset};
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
pub(crate) fn find<T: Read + Seek>(ntfs: &Ntfs, fs: &mut T, names: &[&str]) -> Result<Vec<Found>, Error> {
    let root = ntfs.root_directory(fs).map_err(Error::parse("root directory (MFT record 5)"))?;
    let context = format!("root directory index (MFT record 5 at byte {})", root.position().into_offset());
    let mut found = Vec::new();
    let mut index_root = None;
    for attribute in root.attributes_raw() {
        let attribute = attribute.map_err(Error::parse(context.clone()))?;
        if attribute.ty().map_err(Error::parse(context.clone()))? == NtfsAttributeType::IndexRoot
            && attribute.name().map_err(Error::parse(context.clone()))? == DIRECTORY_INDEX
        {
            index_root = Some(attribute.resident_structured_value::<NtfsIndexRoot>().map_err(Error::parse(context.clone()))?);
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
    let allocation = index_allocation(&root, fs, &context)?;
    let mut visited = BTreeSet::new();
    while let Some(vcn) = pending.pop_front() {
        if !visited.insert(vcn) {
            continue;
        }
        if visited.len() > MAX_NODES {
            return Err(Error::corrupt(context, 0, format!("more than {MAX_NODES} index nodes")));
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
/// small directories such as the root).
fn index_allocation<'n, 'f, T: Read + Seek>(root: &'f NtfsFile<'n>, fs: &mut T, context: &str) -> Result<NtfsIndexAllocation<'n, 'f>, Error> {
    for attribute in root.attributes_raw() {
        let attribute = attribute.map_err(Error::parse(context))?;
        if attribute.ty().map_err(Error::parse(context))? == NtfsAttributeType::IndexAllocation
            && attribute.name().map_err(Error::parse(context))? == DIRECTORY_INDEX
        {
            return attribute.structured_value::<_, NtfsIndexAllocation>(fs).map_err(Error::parse(context));
        }
    }
    Err(Error::corrupt(
        context,
        root.position().into_offset(),
        "$INDEX_ALLOCATION:$I30 is not in the base record (an attribute-list root directory is not supported)",
    ))
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
                format!("index entry length {} is shorter than its {ENTRY_HEADER_SIZE}-byte header", entry.index_entry_length()),
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
            found.push(Found { name: i, record: reference.file_record_number(), sequence: reference.sequence_number() });
        }
    }
    Ok(())
}
