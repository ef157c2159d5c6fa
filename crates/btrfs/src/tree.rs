//! Tree blocks (`struct btrfs_header`, `btrfs_item`, `btrfs_key_ptr`) and the walk over a tree.
//!
//! Every block is read at its logical address through the chunk map, from a copy on this
//! device, and validated before anything in it is used: checksum, fsid, `bytenr` equal to the
//! address it was reached by, the level its parent promised, and an item count that fits the
//! block. Items must lie inside the block. A walk visits each block once (a visited set) and
//! levels strictly decrease from the root, so loops and shared subtrees end; the depth is
//! bounded by the superblock's `MAX_LEVEL`.

use crate::Error;
use crate::chunks::ChunkMap;
use crate::superblock::{MAX_LEVEL, Root, Superblock};
use imgstream_blockio::ReadAt;
use imgstream_volume::fields::{array, le32, le64, u8_at};
use imgstream_volume::read_at;
use std::collections::HashSet;

/// Bytes of a `btrfs_disk_key`: objectid u64, type u8, offset u64.
pub(crate) const KEY_LEN: usize = 17;
/// Bytes of `struct btrfs_header`.
const HEADER_LEN: usize = 101;
/// Bytes of a leaf's `btrfs_item`: key, data offset u32, data size u32.
const ITEM_LEN: usize = KEY_LEN + 8;
/// Bytes of a node's `btrfs_key_ptr`: key, block pointer u64, generation u64.
const KEY_PTR_LEN: usize = KEY_LEN + 16;

// Header field offsets.
const HEADER_FSID: usize = 0x20;
const HEADER_BYTENR: usize = 0x30;
const HEADER_NRITEMS: usize = 0x60;
const HEADER_LEVEL: usize = 0x64;

/// Item types this crate reads (`BTRFS_*_KEY`).
pub(crate) const EXTENT_DATA: u8 = 108;
pub(crate) const ROOT_ITEM: u8 = 132;
pub(crate) const EXTENT_ITEM: u8 = 168;
pub(crate) const METADATA_ITEM: u8 = 169;
pub(crate) const BLOCK_GROUP_ITEM: u8 = 192;
pub(crate) const DEV_ITEM: u8 = 216;
pub(crate) const DEV_EXTENT: u8 = 204;
pub(crate) const CHUNK_ITEM: u8 = 228;

/// A `btrfs_disk_key`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Key {
    pub(crate) objectid: u64,
    pub(crate) item_type: u8,
    pub(crate) offset: u64,
}

impl Key {
    /// The key stored at the start of `bytes`.
    pub(crate) fn parse(bytes: &[u8]) -> Self {
        Self { objectid: le64(bytes, 0), item_type: u8_at(bytes, 8), offset: le64(bytes, 9) }
    }
}

/// A validated tree block.
pub(crate) struct Block {
    /// Where on this device the copy that was read lies.
    pub(crate) physical: u64,
    bytes: Vec<u8>,
    nritems: usize,
}

/// One leaf item: its key, its data, and the data's absolute byte offset (for messages).
pub(crate) struct Item<'a> {
    pub(crate) key: Key,
    pub(crate) data: &'a [u8],
    pub(crate) at: u64,
}

impl Item<'_> {
    /// Fails unless the item's data holds at least `len` bytes.
    pub(crate) fn require(&self, what: &str, len: usize) -> Result<(), Error> {
        if self.data.len() < len {
            return Err(Error::corrupt(
                what.to_owned(),
                self.at,
                format!("{} bytes, at least {len} expected", self.data.len()),
            ));
        }
        Ok(())
    }
}

impl Block {
    /// The items of a leaf; each one's data was checked to lie inside the block.
    pub(crate) fn items(&self) -> impl Iterator<Item = Item<'_>> + '_ {
        (0..self.nritems).map(move |i| {
            let base = HEADER_LEN + i * ITEM_LEN;
            let start = HEADER_LEN + le32(&self.bytes, base + KEY_LEN) as usize;
            let len = le32(&self.bytes, base + KEY_LEN + 4) as usize;
            Item {
                key: Key::parse(self.bytes.get(base..).unwrap_or_default()),
                data: self.bytes.get(start..start + len).unwrap_or_default(),
                at: self.physical + start as u64,
            }
        })
    }

    /// The child block addresses of a node.
    fn children(&self) -> impl Iterator<Item = u64> + '_ {
        (0..self.nritems).map(move |i| le64(&self.bytes, HEADER_LEN + i * KEY_PTR_LEN + KEY_LEN))
    }
}

/// What a walk does with each leaf it reads.
pub(crate) type LeafVisitor<'v> = dyn FnMut(&Block) -> Result<(), Error> + 'v;

/// Reads tree blocks of one filesystem from one device.
pub(crate) struct Reader<'a> {
    pub(crate) volume: &'a dyn ReadAt,
    pub(crate) superblock: &'a Superblock,
    pub(crate) chunks: &'a ChunkMap,
}

impl Reader<'_> {
    /// Reads and validates the block of tree `tree` at `logical`, which must be at `level`.
    /// Tries each copy on this device in turn (DUP, RAID1) until one is valid, as the kernel does.
    pub(crate) fn read(&self, tree: &str, logical: u64, level: u8) -> Result<Block, Error> {
        let structure = || format!("{tree} block (logical {logical})");
        let nodesize = u64::from(self.superblock.nodesize);
        let chunk = self.chunks.find(logical).ok_or_else(|| {
            Error::corrupt(
                structure(),
                logical,
                "the address lies in no chunk (the byte offset is logical)".to_string(),
            )
        })?;
        let Some(end) = logical.checked_add(nodesize).filter(|&end| end <= chunk.range().end) else {
            let problem = format!("the block crosses the end of its chunk at logical {}", chunk.range().end);
            return Err(Error::corrupt(structure(), logical, format!("{problem} (the byte offset is logical)")));
        };
        let Some(copies) = chunk.copies_on(self.superblock.devid, logical..end) else {
            return Err(Error::unsupported(
                structure(),
                logical,
                format!(
                    "it lies in a {} chunk, which this crate does not read (the byte offset is logical)",
                    chunk.profile.name()
                ),
            ));
        };
        let mut first_error = None;
        // A striped chunk may hold only part of the block on this device: such a piece is no copy.
        for copy in copies.into_iter().filter(|c| c.end - c.start == nodesize) {
            if copy.end > self.volume.size() {
                first_error.get_or_insert_with(|| {
                    Error::corrupt(
                        structure(),
                        copy.start,
                        format!("past the end of the device ({} bytes)", self.volume.size()),
                    )
                });
                continue;
            }
            let mut bytes = vec![0u8; nodesize as usize];
            read_at(self.volume, structure, copy.start, &mut bytes)?;
            match self.validate(bytes, logical, copy.start, level) {
                Ok(block) => return Ok(block),
                Err(problem) => {
                    first_error.get_or_insert_with(|| Error::corrupt(structure(), copy.start, problem));
                }
            }
        }
        Err(first_error.unwrap_or_else(|| {
            Error::unsupported(
                structure(),
                logical,
                format!(
                    "no copy of the block lies on this device (devid {}); image the device that holds the metadata (the byte offset is logical)",
                    self.superblock.devid
                ),
            )
        }))
    }

    /// Checks a block read from device byte `physical`; the error is the problem's description.
    fn validate(&self, bytes: Vec<u8>, logical: u64, physical: u64, level: u8) -> Result<Block, String> {
        let csum_type = self.superblock.csum_type;
        if !csum_type.verify(&bytes) {
            return Err(format!("{csum_type} checksum does not match its content"));
        }
        if array::<16>(&bytes, HEADER_FSID) != self.superblock.tree_fsid {
            return Err("its fsid is not this filesystem's".into());
        }
        let bytenr = le64(&bytes, HEADER_BYTENR);
        if bytenr != logical {
            return Err(format!("header bytenr is {bytenr}, expected {logical}"));
        }
        let actual_level = u8_at(&bytes, HEADER_LEVEL);
        if actual_level != level {
            return Err(format!("level is {actual_level}, expected {level}"));
        }
        let nritems = le32(&bytes, HEADER_NRITEMS) as usize;
        let entry_len = if level == 0 { ITEM_LEN } else { KEY_PTR_LEN };
        let capacity = (bytes.len() - HEADER_LEN) / entry_len;
        if nritems > capacity || (level > 0 && nritems == 0) {
            return Err(format!("{nritems} items, a level {level} block holds 1 to {capacity}"));
        }
        if level == 0 {
            let data_area = bytes.len() - HEADER_LEN;
            for i in 0..nritems {
                let base = HEADER_LEN + i * ITEM_LEN + KEY_LEN;
                let (start, len) = (le32(&bytes, base) as usize, le32(&bytes, base + 4) as usize);
                if start.checked_add(len).is_none_or(|end| end > data_area) || start < nritems * ITEM_LEN && len > 0 {
                    return Err(format!(
                        "item {i}'s data ({len} bytes at {start}) is not inside the block's data area"
                    ));
                }
            }
        }
        Ok(Block { physical, bytes, nritems })
    }

    /// Walks tree `tree` from `root`, skipping blocks already in `visited`. Every block's logical
    /// address goes to `on_block`; leaves are read and handed to `on_leaf`, unless it is `None`,
    /// in which case only the nodes are read (leaf addresses come from their parents).
    pub(crate) fn walk(
        &self,
        tree: &str,
        root: Root,
        visited: &mut HashSet<u64>,
        on_block: &mut dyn FnMut(u64),
        mut on_leaf: Option<&mut LeafVisitor<'_>>,
    ) -> Result<(), Error> {
        if root.level >= MAX_LEVEL {
            return Err(Error::corrupt(
                format!("{tree} root"),
                root.logical,
                format!("level {} is not below {MAX_LEVEL}", root.level),
            ));
        }
        let mut pending = vec![root];
        while let Some(Root { logical, level }) = pending.pop() {
            if !visited.insert(logical) {
                continue;
            }
            on_block(logical);
            if level == 0 {
                match on_leaf.as_mut() {
                    Some(on_leaf) => on_leaf(&self.read(tree, logical, 0)?)?,
                    None => continue,
                }
            } else {
                let node = self.read(tree, logical, level)?;
                pending.extend(node.children().map(|child| Root { logical: child, level: level - 1 }));
            }
        }
        Ok(())
    }
}
