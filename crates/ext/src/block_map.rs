//! The block map of one inode: which physical block holds each of its first logical blocks,
//! through an extent tree (ext4) or direct and indirect block pointers (ext2/3). Used to find
//! the internal journal (inode 8), whose log is addressed by logical block.
//!
//! Layout: e2fsprogs lib/ext2fs/ext2_fs.h (`struct ext2_inode`: `i_flags` at 0x20, `i_block` at
//! 0x28, 60 bytes), ext3_extents.h (12-byte header with magic 0xF30A, 12-byte index and leaf
//! entries; an `ee_len` above 32768 is an unwritten extent of `ee_len - 32768` blocks) and
//! block.c (12 direct pointers, then single, double and triple indirect blocks of block
//! size / 4 little-endian pointers). Every pointer is checked to lie inside the filesystem, the
//! tree's depth is bounded, and so is the number of tree blocks read.

use crate::Error;
use crate::group_desc::DescriptorTable;
use crate::superblock::Superblock;
use imgstream_blockio::ReadAt;
use imgstream_volume::fields::{le16, le32};
use imgstream_volume::read_at;

/// `i_flags` bit: the inode's `i_block` holds an extent tree.
const EXTENTS_FL: u32 = 0x8_0000;
const I_FLAGS: usize = 0x20;
const I_BLOCK: usize = 0x28;
const I_BLOCK_LEN: usize = 60;
const EXTENT_MAGIC: u16 = 0xF30A;
/// The kernel's limit on the extent tree's depth (EXT4_MAX_EXTENT_DEPTH).
const MAX_EXTENT_DEPTH: u16 = 5;
/// `ee_len` above this marks an unwritten extent.
const MAX_INIT_EXTENT_LEN: u16 = 32768;
/// Direct pointers in `i_block`; then the single, double and triple indirect block.
const DIRECT_POINTERS: usize = 12;

/// Physical block of each logical block `0..len` of an inode; `None` for a hole.
pub(crate) struct BlockMap {
    pub(crate) blocks: Vec<Option<u64>>,
}

/// What is being mapped, for messages: "journal inode 8".
struct Mapper<'a> {
    volume: &'a dyn ReadAt,
    sb: &'a Superblock,
    what: String,
    blocks: Vec<Option<u64>>,
    /// Tree or indirect blocks still allowed to be read (a hostile tree could loop).
    budget: u64,
}

impl BlockMap {
    /// Maps the first `len` logical blocks of inode `inode` (>= 1). `len` is at most the
    /// filesystem's block count.
    pub(crate) fn of_inode(volume: &dyn ReadAt, sb: &Superblock, inode: u32, len: u64) -> Result<Self, Error> {
        let (raw, inode_offset) = read_inode(volume, sb, inode)?;
        let len = len.min(sb.blocks_count);
        let i_block = raw.get(I_BLOCK..I_BLOCK + I_BLOCK_LEN).unwrap_or(&[]);
        let i_block_offset = inode_offset + I_BLOCK as u64;
        let mut mapper = Mapper {
            volume,
            sb,
            what: format!("inode {inode}"),
            blocks: vec![None; usize::try_from(len).unwrap_or(0)],
            // Every tree or indirect block maps at least one logical block, plus slack for the
            // upper levels.
            budget: len + 64,
        };
        if le32(&raw, I_FLAGS) & EXTENTS_FL != 0 {
            mapper.extent_node(i_block, i_block_offset, None)?;
        } else {
            mapper.indirect_root(i_block, i_block_offset)?;
        }
        Ok(Self { blocks: mapper.blocks })
    }
}

/// Byte offset of inode `inode` in the volume.
fn inode_offset(volume: &dyn ReadAt, sb: &Superblock, inode: u32) -> Result<u64, Error> {
    let index = u64::from(inode).checked_sub(1).ok_or_else(|| {
        Error::corrupt("superblock", crate::superblock::SUPERBLOCK_OFFSET, "inode number 0 does not exist")
    })?;
    let group = index / sb.inodes_per_group;
    if group >= sb.groups {
        return Err(Error::corrupt(
            "superblock",
            crate::superblock::SUPERBLOCK_OFFSET,
            format!("inode {inode} is past the last group {}", sb.groups - 1),
        ));
    }
    let desc = DescriptorTable::new(volume, sb).get(group)?;
    Ok((desc.inode_table << sb.block_bits) + (index % sb.inodes_per_group) * sb.inode_size)
}

/// The raw inode (`s_inode_size` bytes) and its byte offset.
fn read_inode(volume: &dyn ReadAt, sb: &Superblock, inode: u32) -> Result<(Vec<u8>, u64), Error> {
    let offset = inode_offset(volume, sb, inode)?;
    // inode_size is validated: 128 to the block size.
    let mut raw = vec![0; usize::try_from(sb.inode_size).unwrap_or(128)];
    read_at(volume, || format!("inode {inode}"), offset, &mut raw)?;
    Ok((raw, offset))
}

impl Mapper<'_> {
    fn corrupt(&self, offset: u64, problem: impl Into<String>) -> Error {
        Error::corrupt(format!("{} block map", self.what), offset, problem)
    }

    /// Reads tree or indirect block `block`, after checking it lies inside the filesystem.
    fn read_block(&mut self, block: u64, offset_of_pointer: u64) -> Result<Vec<u8>, Error> {
        if block == 0 || block >= self.sb.blocks_count {
            return Err(self.corrupt(
                offset_of_pointer,
                format!("points to block {block}, outside the filesystem (1 to {})", self.sb.blocks_count - 1),
            ));
        }
        if self.budget == 0 {
            return Err(self.corrupt(offset_of_pointer, "has more tree blocks than blocks to map: a loop"));
        }
        self.budget -= 1;
        let mut buf = vec![0; usize::try_from(self.sb.block_size()).unwrap_or(0)];
        let offset = block << self.sb.block_bits;
        read_at(self.volume, || format!("{} block map block {block}", self.what), offset, &mut buf)?;
        Ok(buf)
    }

    /// Records `count` blocks from `physical` for logical blocks from `logical`, within `len`.
    fn map(&mut self, logical: u64, physical: u64, count: u64, offset: u64) -> Result<(), Error> {
        let len = self.blocks.len() as u64;
        if logical >= len {
            return Ok(());
        }
        let count = count.min(len - logical);
        if physical.checked_add(count).is_none_or(|end| end > self.sb.blocks_count) {
            return Err(self.corrupt(
                offset,
                format!("maps blocks {physical}..+{count}, past the filesystem's {} blocks", self.sb.blocks_count),
            ));
        }
        for i in 0..count {
            // logical + i < len, which fits in usize (the vector exists).
            if let Some(slot) = self.blocks.get_mut(usize::try_from(logical + i).unwrap_or(usize::MAX)) {
                *slot = Some(physical + i);
            }
        }
        Ok(())
    }

    /// One extent tree node (`node` read from byte `offset`); `expected_depth` is one less than
    /// its parent's (None at the root).
    fn extent_node(&mut self, node: &[u8], offset: u64, expected_depth: Option<u16>) -> Result<(), Error> {
        let magic = le16(node, 0);
        if magic != EXTENT_MAGIC {
            return Err(self.corrupt(offset, format!("extent header magic 0x{magic:04x} (expected 0xf30a)")));
        }
        let entries = usize::from(le16(node, 2));
        let depth = le16(node, 6);
        if depth > MAX_EXTENT_DEPTH || expected_depth.is_some_and(|d| d != depth) {
            return Err(self.corrupt(offset, format!("extent tree depth {depth} is inconsistent")));
        }
        if 12 + entries * 12 > node.len() {
            return Err(self.corrupt(offset, format!("{entries} extent entries do not fit in the node")));
        }
        for i in 0..entries {
            let at = 12 + i * 12;
            let entry = node.get(at..at + 12).unwrap_or(&[]);
            let entry_offset = offset + at as u64;
            if depth == 0 {
                let len = le16(entry, 4);
                let len = if len > MAX_INIT_EXTENT_LEN { len - MAX_INIT_EXTENT_LEN } else { len };
                let start = u64::from(le16(entry, 6)) << 32 | u64::from(le32(entry, 8));
                self.map(u64::from(le32(entry, 0)), start, u64::from(len), entry_offset)?;
            } else if u64::from(le32(entry, 0)) < self.blocks.len() as u64 {
                // Only subtrees that start within the blocks to map (and so within the budget).
                let child = u64::from(le16(entry, 8)) << 32 | u64::from(le32(entry, 4));
                let buf = self.read_block(child, entry_offset)?;
                self.extent_node(&buf, child << self.sb.block_bits, Some(depth - 1))?;
            }
        }
        Ok(())
    }

    fn indirect_root(&mut self, i_block: &[u8], i_block_offset: u64) -> Result<(), Error> {
        let per_block = self.sb.block_size() / 4;
        let mut first = 0u64;
        for (i, level) in (0..DIRECT_POINTERS).map(|_| 0u32).chain([1, 2, 3]).enumerate() {
            let pointer = u64::from(le32(i_block, i * 4));
            let span = per_block.pow(level);
            if pointer != 0 {
                self.indirect(pointer, level, first, i_block_offset + i as u64 * 4)?;
            }
            first += span;
            if first >= self.blocks.len() as u64 {
                break;
            }
        }
        Ok(())
    }

    /// Pointer `pointer` at `level` (0: a data block) mapping logical blocks from `first`.
    fn indirect(&mut self, pointer: u64, level: u32, first: u64, pointer_offset: u64) -> Result<(), Error> {
        if level == 0 {
            return self.map(first, pointer, 1, pointer_offset);
        }
        let buf = self.read_block(pointer, pointer_offset)?;
        let per_block = self.sb.block_size() / 4;
        let span = per_block.pow(level - 1);
        for i in 0..per_block {
            let logical = first + i * span;
            if logical >= self.blocks.len() as u64 {
                break;
            }
            let child = u64::from(le32(&buf, usize::try_from(i * 4).unwrap_or(usize::MAX)));
            if child != 0 {
                self.indirect(child, level - 1, logical, (pointer << self.sb.block_bits) + i * 4)?;
            }
        }
        Ok(())
    }
}
