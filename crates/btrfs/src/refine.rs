//! The trees behind the answer: chunk tree, root tree, device tree, extent tree (and block group
//! tree), log tree, and the byte ranges of this device they make used.
//!
//! Consistency is checked where it decides what is zeroed: every device extent must match a
//! stripe of its chunk on this device and every such stripe must have its device extent, every
//! `sys_chunk_array` chunk must be in the chunk tree, and a block group is refined only when the
//! extents inside it add up exactly to its `used` count.

use crate::Error;
use crate::chunks::{Chunk, ChunkMap, TYPE_DATA, TYPE_METADATA, TYPE_SYSTEM};
use crate::superblock::{
    COMPAT_RO_BLOCK_GROUP_TREE, DEV_ITEM_UUID, Root, SUPER_OFFSET, SYS_CHUNK_ARRAY, Superblock, mirrors,
};
use crate::tree::{
    BLOCK_GROUP_ITEM, Block, CHUNK_ITEM, DEV_EXTENT, DEV_ITEM, EXTENT_DATA, EXTENT_ITEM, METADATA_ITEM, ROOT_ITEM,
    Reader,
};
use imgstream_blockio::ReadAt;
use imgstream_volume::RangeSet;
use imgstream_volume::fields::{array, le64, u8_at};
use std::collections::{BTreeMap, HashSet};
use std::ops::Range;

/// Every device reserves its first MiB (boot loaders, the primary superblock).
const RESERVED: u64 = 1 << 20;
/// Tree objectids (`BTRFS_*_TREE_OBJECTID`).
const EXTENT_TREE: u64 = 2;
const DEV_TREE: u64 = 4;
const BLOCK_GROUP_TREE: u64 = 11;
/// `BTRFS_TREE_LOG_OBJECTID` (-6): the key objectid of the log root tree's ROOT_ITEMs.
const TREE_LOG: u64 = -6i64 as u64;
/// Shortest `btrfs_root_item` (before the v2 fields); `bytenr` at 176, `level` at 238.
const ROOT_ITEM_MIN: usize = 239;
/// `btrfs_root_item.drop_progress` (its key's objectid) and `drop_level`.
const ROOT_ITEM_DROP_PROGRESS: usize = 220;
const ROOT_ITEM_DROP_LEVEL: usize = 237;
/// Shortest regular `btrfs_file_extent_item`; type at 20, `disk_bytenr` at 21, `disk_num_bytes` at 29.
const FILE_EXTENT_REG_LEN: usize = 53;
/// File extent types with an extent on disk: REG and PREALLOC (0 is INLINE).
const FILE_EXTENT_ON_DISK: [u8; 2] = [1, 2];

/// What [`scan`] found.
pub(crate) struct Found {
    pub(crate) used: RangeSet,
    pub(crate) profiles: String,
    pub(crate) device_extent_bytes: u64,
    /// Data and metadata block groups with a stripe on this device (system ones are kept whole).
    pub(crate) groups_on_device: usize,
    pub(crate) refined_groups: usize,
    pub(crate) raid56_chunks: usize,
    /// Logical starts of block groups kept whole because the extent tree does not add up.
    pub(crate) mismatched_groups: Vec<u64>,
    pub(crate) log_blocks: usize,
    pub(crate) log_data_bytes: u64,
}

/// One `DEV_EXTENT` of this device.
struct DevExtent {
    physical: u64,
    length: u64,
    chunk_offset: u64,
    at: u64,
}

/// Reads every tree this answer needs and returns the used byte ranges of the device.
pub(crate) fn scan(volume: &dyn ReadAt, sb: &Superblock) -> Result<Found, Error> {
    let (chunks, mut tree_blocks) = read_chunk_tree(volume, sb)?;
    let reader = Reader { volume, superblock: sb, chunks: &chunks };

    let mut roots: Vec<RootItem> = Vec::new();
    reader.walk(
        "root tree",
        sb.root,
        &mut HashSet::new(),
        &mut |l| tree_blocks.push(l),
        Some(&mut |leaf| {
            roots.extend(root_items(leaf, |_| true)?);
            Ok(())
        }),
    )?;
    let tree_root = |objectid: u64, name: &str| {
        roots.iter().find(|r| r.objectid == objectid).map(|r| r.root).ok_or_else(|| {
            Error::corrupt(
                "root tree",
                sb.root.logical,
                format!("no ROOT_ITEM for the {name} (the byte offset is logical)"),
            )
        })
    };

    let mut dev_extents = Vec::new();
    reader.walk(
        "device tree",
        tree_root(DEV_TREE, "device tree")?,
        &mut HashSet::new(),
        &mut |_| {},
        Some(&mut |leaf| {
            for item in leaf.items().filter(|i| i.key.item_type == DEV_EXTENT && i.key.objectid == sb.devid) {
                item.require("DEV_EXTENT item", 32)?;
                dev_extents.push(DevExtent {
                    physical: item.key.offset,
                    length: le64(item.data, 24),
                    chunk_offset: le64(item.data, 16),
                    at: item.at,
                });
            }
            Ok(())
        }),
    )?;

    let extent_root = tree_root(EXTENT_TREE, "extent tree")?;
    let group_root = if sb.compat_ro & COMPAT_RO_BLOCK_GROUP_TREE != 0 {
        Some(tree_root(BLOCK_GROUP_TREE, "block group tree")?)
    } else {
        None
    };
    let ExtentTree { extents, groups } = read_extent_tree(&reader, extent_root, group_root)?;

    let (log_blocks, log_data) = read_log_tree(&reader)?;
    // Belt and braces: every tree block reachable from the root tree, whether or not the extent
    // tree lists it. Only nodes are read; leaf addresses come from their parents.
    let mut reachable = HashSet::new();
    // A subvolume being deleted points at blocks already freed (left of its drop_progress) and
    // maybe reused; what it still holds is in the extent tree.
    for &RootItem { root, .. } in roots.iter().filter(|r| !r.dropping) {
        reader.walk("tree", root, &mut reachable, &mut |l| tree_blocks.push(l), None)?;
    }

    let mut found = Found {
        used: RangeSet::new(),
        profiles: profiles(&chunks, sb.devid),
        device_extent_bytes: dev_extents.iter().fold(0, |sum, e| sum.saturating_add(e.length)),
        groups_on_device: 0,
        refined_groups: 0,
        raid56_chunks: 0,
        mismatched_groups: Vec::new(),
        log_blocks: log_blocks.len(),
        log_data_bytes: log_data.iter().fold(0, |sum, r| sum.saturating_add(r.end - r.start)),
    };
    let mut ranges: Vec<Range<u64>> = vec![0..RESERVED.min(volume.size()), sb.device_bytes..volume.size()];
    ranges.extend(mirrors(sb.device_bytes));
    check_device_extents(&dev_extents, &chunks, sb)?;
    for chunk in chunks.iter().filter(|c| c.stripes_on(sb.devid).next().is_some()) {
        // System chunks hold only the chunk tree: kept whole, so that its older copies stay for
        // `btrfs rescue chunk-recover`, whatever the extent tree says.
        let refined = if chunk.flags & TYPE_SYSTEM != 0 {
            None
        } else if chunk.is_mapped() {
            found.groups_on_device += 1;
            let inside = extents_inside(&extents, chunk, groups.get(&chunk.logical).copied());
            if inside.is_none() {
                found.mismatched_groups.push(chunk.logical);
            }
            inside
        } else {
            found.groups_on_device += 1;
            found.raid56_chunks += 1;
            None
        };
        match refined {
            Some(inside) => {
                found.refined_groups += 1;
                for extent in inside {
                    ranges.extend(chunk.copies_on(sb.devid, extent.clone()).unwrap_or_default());
                }
            }
            None => ranges.extend(chunk.stripes_on(sb.devid).map(|s| s.offset..s.offset + chunk.device_length())),
        }
    }
    let nodesize = u64::from(sb.nodesize);
    let blocks = tree_blocks.iter().chain(&log_blocks).map(|&l| ("tree block", l..l.saturating_add(nodesize)));
    for (what, logical) in blocks.chain(log_data.iter().map(|r| ("fsynced data extent", r.clone()))) {
        ranges.extend(map_logical(&chunks, sb.devid, what, logical)?);
    }
    ranges.sort_by_key(|r| r.start);
    for range in ranges {
        found.used.insert(range);
    }
    Ok(found)
}

/// Bootstraps from the superblock's `sys_chunk_array`, reads the chunk tree, and checks that
/// every system chunk is in it. Returns the chunk map and the chunk tree's block addresses.
pub(crate) fn read_chunk_tree(volume: &dyn ReadAt, sb: &Superblock) -> Result<(ChunkMap, Vec<u64>), Error> {
    let array_at = SUPER_OFFSET + SYS_CHUNK_ARRAY as u64;
    let system = ChunkMap::from_sys_array(&sb.sys_chunk_array, array_at, sb.sectorsize)?;
    let boot = Reader { volume, superblock: sb, chunks: &system };
    let mut chunks = ChunkMap::default();
    let mut blocks = Vec::new();
    let mut device_uuid = None;
    boot.walk(
        "chunk tree",
        sb.chunk_root,
        &mut HashSet::new(),
        &mut |l| blocks.push(l),
        Some(&mut |leaf| {
            for item in leaf.items() {
                match item.key.item_type {
                    CHUNK_ITEM => {
                        let (chunk, _) = Chunk::parse(item.key.offset, item.data, item.at, sb.sectorsize)?;
                        chunks.insert(chunk, item.at)?;
                    }
                    DEV_ITEM if item.key.offset == sb.devid => {
                        device_uuid = Some(array::<16>(item.data, DEV_ITEM_UUID));
                    }
                    _ => {}
                }
            }
            Ok(())
        }),
    )?;
    // The superblock's devid decides which stripes are this device's: the chunk tree must agree.
    if device_uuid != Some(sb.device_uuid) {
        let whose = if device_uuid.is_some() { "another device's" } else { "missing" };
        return Err(Error::corrupt(
            "superblock",
            SUPER_OFFSET,
            format!("the DEV_ITEM of devid {} in the chunk tree is {whose}", sb.devid),
        ));
    }
    if let Some(missing) = system.iter().find(|c| chunks.get(c.logical) != Some(*c)) {
        return Err(Error::corrupt(
            "sys_chunk_array",
            array_at,
            format!("its chunk at logical {} is not the same in the chunk tree", missing.logical),
        ));
    }
    Ok((chunks, blocks))
}

/// A ROOT_ITEM: which tree, where its root is, and whether its deletion has begun.
struct RootItem {
    objectid: u64,
    root: Root,
    /// `drop_progress` or `drop_level` set: part of the tree has been freed already.
    dropping: bool,
}

/// The ROOT_ITEMs in `leaf` whose objectid passes `wanted`.
fn root_items(leaf: &Block, wanted: impl Fn(u64) -> bool) -> Result<Vec<RootItem>, Error> {
    let mut roots = Vec::new();
    for item in leaf.items().filter(|i| i.key.item_type == ROOT_ITEM && wanted(i.key.objectid)) {
        item.require("ROOT_ITEM", ROOT_ITEM_MIN)?;
        roots.push(RootItem {
            objectid: item.key.objectid,
            root: Root { logical: le64(item.data, 176), level: u8_at(item.data, 238) },
            dropping: le64(item.data, ROOT_ITEM_DROP_PROGRESS) != 0 || u8_at(item.data, ROOT_ITEM_DROP_LEVEL) != 0,
        });
    }
    Ok(roots)
}

/// A BLOCK_GROUP_ITEM: the block group's length and the bytes its extents take.
#[derive(Clone, Copy)]
struct BlockGroup {
    length: u64,
    used: u64,
}

/// What the extent tree says is allocated.
struct ExtentTree {
    /// EXTENT_ITEM and METADATA_ITEM ranges, logical, sorted.
    extents: Vec<Range<u64>>,
    /// Block groups by logical start.
    groups: BTreeMap<u64, BlockGroup>,
}

/// Reads the allocated extents and the block groups from the extent tree, and from the block
/// group tree if there is one.
fn read_extent_tree(reader: &Reader<'_>, extent_root: Root, group_root: Option<Root>) -> Result<ExtentTree, Error> {
    let mut extents: Vec<Range<u64>> = Vec::new();
    let mut groups = BTreeMap::new();
    let nodesize = u64::from(reader.superblock.nodesize);
    let mut extent_leaf = |leaf: &Block| {
        for item in leaf.items() {
            let start = item.key.objectid;
            match item.key.item_type {
                EXTENT_ITEM => extents.push(start..start.saturating_add(item.key.offset)),
                METADATA_ITEM => extents.push(start..start.saturating_add(nodesize)),
                BLOCK_GROUP_ITEM => {
                    item.require("BLOCK_GROUP_ITEM", 24)?;
                    groups.insert(start, BlockGroup { length: item.key.offset, used: le64(item.data, 0) });
                }
                _ => {}
            }
        }
        Ok(())
    };
    reader.walk("extent tree", extent_root, &mut HashSet::new(), &mut |_| {}, Some(&mut extent_leaf))?;
    if let Some(root) = group_root {
        reader.walk("block group tree", root, &mut HashSet::new(), &mut |_| {}, Some(&mut extent_leaf))?;
    }
    extents.sort_by_key(|r| (r.start, r.end));
    Ok(ExtentTree { extents, groups })
}

/// Walks the log root tree and every subvolume log tree it names: returns the logical address
/// of every block, and the logical ranges of the data extents its `EXTENT_DATA` items point at.
fn read_log_tree(reader: &Reader<'_>) -> Result<(Vec<u64>, Vec<Range<u64>>), Error> {
    let mut blocks = Vec::new();
    let mut data = Vec::new();
    let Some(log_root) = reader.superblock.log_root else {
        return Ok((blocks, data));
    };
    let mut visited = HashSet::new();
    let mut queue = vec![log_root];
    let mut next = 0;
    while let Some(&root) = queue.get(next) {
        next += 1;
        let mut subtrees = Vec::new();
        reader.walk(
            "log tree",
            root,
            &mut visited,
            &mut |l| blocks.push(l),
            Some(&mut |leaf| {
                subtrees.extend(root_items(leaf, |id| id == TREE_LOG)?.into_iter().map(|r| r.root));
                for item in leaf.items().filter(|i| i.key.item_type == EXTENT_DATA) {
                    // Inline extents are shorter; an extent on disk needs the whole item.
                    if FILE_EXTENT_ON_DISK.contains(&u8_at(item.data, 20)) {
                        item.require("EXTENT_DATA item", FILE_EXTENT_REG_LEN)?;
                        let disk_bytenr = le64(item.data, 21);
                        if disk_bytenr != 0 {
                            data.push(disk_bytenr..disk_bytenr.saturating_add(le64(item.data, 29)));
                        }
                    }
                }
                Ok(())
            }),
        )?;
        queue.extend(subtrees);
    }
    Ok((blocks, data))
}

/// Checks that the device extents of this device and the chunks' stripes on it match one to one.
fn check_device_extents(dev_extents: &[DevExtent], chunks: &ChunkMap, sb: &Superblock) -> Result<(), Error> {
    let mut matched = HashSet::new();
    for extent in dev_extents {
        let problem = if extent.physical.checked_add(extent.length).is_none_or(|end| end > sb.device_bytes) {
            Some(format!("it ends past the device's {} bytes", sb.device_bytes))
        } else {
            match chunks.get(extent.chunk_offset) {
                None => Some(format!("no chunk starts at logical {}", extent.chunk_offset)),
                Some(chunk) if chunk.device_length() != extent.length => Some(format!(
                    "length {} differs from the chunk's {} per device",
                    extent.length,
                    chunk.device_length()
                )),
                Some(chunk) if !chunk.stripes_on(sb.devid).any(|s| s.offset == extent.physical) => {
                    Some(format!("the chunk at logical {} has no stripe here", chunk.logical))
                }
                Some(_) => None,
            }
        };
        if let Some(problem) = problem {
            return Err(Error::corrupt(format!("DEV_EXTENT at device byte {}", extent.physical), extent.at, problem));
        }
        matched.insert((extent.chunk_offset, extent.physical));
    }
    for chunk in chunks.iter() {
        if let Some(stripe) = chunk.stripes_on(sb.devid).find(|s| !matched.contains(&(chunk.logical, s.offset))) {
            return Err(Error::corrupt(
                format!("chunk at logical {}", chunk.logical),
                stripe.offset,
                format!("its stripe on devid {} has no DEV_EXTENT", sb.devid),
            ));
        }
    }
    Ok(())
}

/// The extents inside `chunk` (sorted `extents` of the whole filesystem), if they are exactly
/// what its block group item accounts for; `None` if the chunk must be kept whole.
fn extents_inside<'e>(extents: &'e [Range<u64>], chunk: &Chunk, group: Option<BlockGroup>) -> Option<&'e [Range<u64>]> {
    let BlockGroup { length, used } = group?;
    if length != chunk.length {
        return None;
    }
    let end = chunk.range().end;
    let first = extents.partition_point(|e| e.start < chunk.logical);
    let past = extents.partition_point(|e| e.start < end);
    let inside = extents.get(first..past)?;
    // Overlapping extents would count twice and fail the sum; one crossing the chunk's end fails here.
    let mut total = 0u64;
    for extent in inside {
        if extent.end > end || extent.end <= extent.start {
            return None;
        }
        total = total.checked_add(extent.end - extent.start)?;
    }
    (total == used).then_some(inside)
}

/// The device ranges on `devid` holding logical `range` (a tree block or a data extent), every
/// copy of it; none for a RAID5/6 chunk, which is kept whole anyway.
fn map_logical(chunks: &ChunkMap, devid: u64, what: &str, range: Range<u64>) -> Result<Vec<Range<u64>>, Error> {
    let chunk = chunks.find(range.start).filter(|c| range.end <= c.range().end).ok_or_else(|| {
        Error::corrupt(
            format!("{what} at logical {}..{}", range.start, range.end),
            range.start,
            "it does not lie inside one chunk (the byte offset is logical)".to_string(),
        )
    })?;
    Ok(chunk.copies_on(devid, range).unwrap_or_default())
}

/// "data single, metadata DUP, system DUP": the profiles of the chunks on this device.
fn profiles(chunks: &ChunkMap, devid: u64) -> String {
    let mut seen: Vec<String> = Vec::new();
    for chunk in chunks.iter().filter(|c| c.stripes_on(devid).next().is_some()) {
        let kind = match chunk.flags & (TYPE_DATA | TYPE_METADATA | TYPE_SYSTEM) {
            TYPE_DATA => "data",
            TYPE_METADATA => "metadata",
            TYPE_SYSTEM => "system",
            _ => "mixed",
        };
        let entry = format!("{kind} {}", chunk.profile.name());
        if !seen.contains(&entry) {
            seen.push(entry);
        }
    }
    seen.join(", ")
}
