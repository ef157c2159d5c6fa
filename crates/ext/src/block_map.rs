//! The block map of one inode: which physical blocks hold its first logical blocks,
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
use std::collections::HashSet;

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

/// Logical blocks `logical..logical + len` of an inode, stored at `physical..physical + len`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Run {
    pub(crate) logical: u64,
    pub(crate) physical: u64,
    pub(crate) len: u64,
}

/// Where the first logical blocks of an inode are: runs sorted by logical block (a hostile tree
/// may make them overlap; the first run holding a block answers for it).
pub(crate) struct BlockMap {
    runs: Vec<Run>,
}

/// What is being mapped, for messages: "inode 8".
struct Mapper<'a> {
    volume: &'a dyn ReadAt,
    sb: &'a Superblock,
    what: String,
    /// Logical blocks to map: `0..len`.
    len: u64,
    runs: Vec<Run>,
    /// Tree and indirect blocks read so far: one read twice is a loop.
    visited: HashSet<u64>,
    /// Tree or indirect blocks still allowed to be read.
    budget: u64,
}

impl BlockMap {
    /// Maps the first `len` logical blocks of inode `inode` (>= 1).
    pub(crate) fn of_inode(volume: &dyn ReadAt, sb: &Superblock, inode: u32, len: u64) -> Result<Self, Error> {
        let (raw, inode_offset) = read_inode(volume, sb, inode)?;
        let i_block = raw.get(I_BLOCK..I_BLOCK + I_BLOCK_LEN).unwrap_or(&[]);
        let i_block_offset = inode_offset + I_BLOCK as u64;
        let mut mapper = Mapper {
            volume,
            sb,
            what: format!("inode {inode}"),
            len,
            runs: Vec::new(),
            visited: HashSet::new(),
            // Every tree or indirect block maps at least one of the blocks asked for, plus
            // slack for the upper levels; and no tree has more blocks than the filesystem.
            budget: len.min(sb.blocks_count) + 64,
        };
        if le32(&raw, I_FLAGS) & EXTENTS_FL != 0 {
            mapper.extent_node(i_block, i_block_offset, None)?;
        } else {
            mapper.indirect_root(i_block, i_block_offset)?;
        }
        let mut runs = mapper.runs;
        runs.sort_by_key(|run| run.logical);
        Ok(Self { runs })
    }

    /// The physical block holding logical block `logical`, if mapped.
    pub(crate) fn physical(&self, logical: u64) -> Option<u64> {
        // The last run starting at or before `logical`, then the runs before it (overlaps).
        let after = self.runs.partition_point(|run| run.logical <= logical);
        self.runs
            .get(..after)?
            .iter()
            .rev()
            .find(|run| logical - run.logical < run.len)
            .map(|run| run.physical + (logical - run.logical))
    }

    /// The first logical block below `len` that no run maps.
    pub(crate) fn first_hole(&self, len: u64) -> Option<u64> {
        let mut covered = 0;
        for run in &self.runs {
            if run.logical > covered {
                break;
            }
            covered = covered.max(run.logical + run.len);
        }
        (covered < len).then_some(covered)
    }

    /// The runs, in logical order.
    pub(crate) fn runs(&self) -> &[Run] {
        &self.runs
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
        if !self.visited.insert(block) {
            return Err(self.corrupt(offset_of_pointer, format!("reaches block {block} twice: a loop")));
        }
        if self.budget == 0 {
            return Err(self.corrupt(offset_of_pointer, "has more tree blocks than blocks to map"));
        }
        self.budget -= 1;
        let mut buf = vec![0; usize::try_from(self.sb.block_size()).unwrap_or(0)];
        let offset = block << self.sb.block_bits;
        read_at(self.volume, || format!("{} block map block {block}", self.what), offset, &mut buf)?;
        Ok(buf)
    }

    /// Records `count` blocks from `physical` for logical blocks from `logical`, within `len`,
    /// extending the last run when they continue it.
    fn map(&mut self, logical: u64, physical: u64, count: u64, offset: u64) -> Result<(), Error> {
        if logical >= self.len || count == 0 {
            return Ok(());
        }
        let count = count.min(self.len - logical);
        if physical == 0 || physical.checked_add(count).is_none_or(|end| end > self.sb.blocks_count) {
            return Err(self.corrupt(
                offset,
                format!("maps blocks {physical}..+{count}, outside the filesystem's {} blocks", self.sb.blocks_count),
            ));
        }
        match self.runs.last_mut() {
            Some(run) if run.logical + run.len == logical && run.physical + run.len == physical => run.len += count,
            _ => self.runs.push(Run { logical, physical, len: count }),
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
            } else if u64::from(le32(entry, 0)) < self.len {
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
            if first >= self.len {
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
            if logical >= self.len {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn map(runs: &[(u64, u64, u64)]) -> BlockMap {
        let mut runs: Vec<Run> = runs.iter().map(|&(logical, physical, len)| Run { logical, physical, len }).collect();
        runs.sort_by_key(|run| run.logical);
        BlockMap { runs }
    }

    #[test]
    fn lookups_and_holes() {
        let m = map(&[(0, 100, 2), (2, 500, 10), (20, 900, 5)]);
        assert_eq!(m.physical(0), Some(100));
        assert_eq!(m.physical(1), Some(101));
        assert_eq!(m.physical(11), Some(509));
        assert_eq!(m.physical(12), None);
        assert_eq!(m.physical(24), Some(904));
        assert_eq!(m.physical(25), None);
        assert_eq!(m.first_hole(12), None);
        assert_eq!(m.first_hole(13), Some(12));
        assert_eq!(map(&[(1, 5, 3)]).first_hole(2), Some(0));
        // Overlapping runs (a hostile tree): a block inside any of them is mapped.
        let m = map(&[(0, 100, 50), (10, 300, 5)]);
        assert_eq!(m.physical(40), Some(140));
        assert_eq!(m.physical(12), Some(302));
        assert_eq!(m.first_hole(50), None);
    }
}
