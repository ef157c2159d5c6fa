//! Every block an inode in use references, from the inode tables: the second view of what is in
//! use, next to the block bitmaps.
//!
//! Without metadata_csum nothing protects a block bitmap: two bits cleared under a file and two
//! set elsewhere keep every free count right and would zero the file's blocks; only the inodes
//! tell. So each inode in use is read, as e2fsck's pass 1 decides it: its bit is set in the
//! group's inode bitmap (a group flagged `INODE_UNINIT` has none in use, when its descriptor
//! checksum was verified), and it has links, or it is one of the reserved inodes below
//! `s_first_ino` (bad blocks, root, resize inode 7, journal inode 8, ...). Its blocks are the
//! extent tree (index and leaf blocks, and each extent, uninitialized ones included) or the
//! indirect block map (the single, double and triple indirect blocks themselves, and the data),
//! plus its extended attribute block (`i_file_acl`). Fast symlinks (shorter than the 60 bytes of
//! `i_block`), inline-data inodes and device, fifo and socket inodes have no blocks.
//!
//! Every block number is checked against the filesystem (a pointer outside it is corruption, as
//! e2fsck reports "illegal block"), extent trees are at most 5 levels deep, and the tree and map
//! blocks read in all are at most the filesystem's block count, so that a hostile map pointing
//! at itself cannot loop.
//!
//! Layouts: e2fsprogs lib/ext2fs/ext2_fs.h (`struct ext2_inode_large`), ext3_extents.h, and
//! `ext2fs_is_fast_symlink` (lib/ext2fs/symlink.c).

use crate::Error;
use crate::features::incompat;
use crate::group_desc::{DescriptorTable, INODE_UNINIT};
use crate::superblock::{S_REV_LEVEL, SUPERBLOCK_OFFSET, Superblock};
use imgstream_blockio::ReadAt;
use imgstream_volume::fields::{le16, le32};
use imgstream_volume::{RangeSet, read_at};
use std::ops::Range;

/// `s_first_ino` (revision 1 and later); revision 0 reserves the first 10 inodes.
const S_FIRST_INO: usize = 0x54;
const GOOD_OLD_FIRST_INO: u64 = 11;
/// Inode fields.
const I_MODE: usize = 0x00;
const I_SIZE_LO: usize = 0x04;
const I_LINKS_COUNT: usize = 0x1A;
const I_FLAGS: usize = 0x20;
const I_BLOCK: usize = 0x28;
const I_BLOCK_LEN: usize = 60;
const I_FILE_ACL_LO: usize = 0x68;
const I_SIZE_HIGH: usize = 0x6C;
const I_FILE_ACL_HIGH: usize = 0x76;
/// `i_mode` file types.
const S_IFMT: u16 = 0xF000;
const S_IFREG: u16 = 0x8000;
const S_IFDIR: u16 = 0x4000;
const S_IFLNK: u16 = 0xA000;
/// `i_flags`.
const EXTENTS_FL: u32 = 0x0008_0000;
const INLINE_DATA_FL: u32 = 0x1000_0000;
/// Extent tree: a 12-byte header (magic, entries, max, depth), then 12-byte entries.
const EXTENT_MAGIC: u16 = 0xF30A;
const EXTENT_ENTRY: usize = 12;
const MAX_EXTENT_DEPTH: u16 = 5;
/// `ee_len` above this marks an uninitialized extent of `ee_len - 32768` blocks.
const INIT_MAX_LEN: u16 = 32768;
/// Indirect map: 12 direct pointers, then the single, double and triple indirect blocks.
const DIRECT_BLOCKS: usize = 12;
/// Inode table bytes read at once.
const CHUNK_BYTES: u64 = 1 << 20;

/// What the scan found.
#[derive(Debug, Default)]
pub(crate) struct FileBlocks {
    /// Byte ranges of the blocks the inodes in use reference.
    pub(crate) blocks: RangeSet,
    /// How many inodes were in use.
    pub(crate) inodes: u64,
}

/// Scans every inode in use of the filesystem.
pub(crate) fn file_blocks(volume: &dyn ReadAt, sb: &Superblock) -> Result<FileBlocks, Error> {
    let mut head = [0u8; S_FIRST_INO + 4 - S_REV_LEVEL];
    read_at(volume, || "superblock", SUPERBLOCK_OFFSET + S_REV_LEVEL as u64, &mut head)?;
    let first_ino =
        if le32(&head, 0) == 0 { GOOD_OLD_FIRST_INO } else { u64::from(le32(&head, S_FIRST_INO - S_REV_LEVEL)) };
    let mut scan = Scan { volume, sb, first_ino, runs: Vec::new(), reads_left: sb.blocks_count, inodes: 0 };
    let honour_uninit = sb.has_group_desc_csum();
    let mut table = DescriptorTable::new(volume, sb);
    // inodes_per_group is validated: at most the bits of one bitmap block.
    let mut bitmap = vec![0u8; usize::try_from(sb.inodes_per_group.div_ceil(8)).unwrap_or(0)];
    let mut chunk = Vec::new();
    for group in 0..sb.groups {
        // Verified (checksum and locations) before anything in it is trusted.
        let desc = table.get(group)?;
        if honour_uninit && desc.flags & INODE_UNINIT != 0 {
            continue;
        }
        let bitmap_at = desc.inode_bitmap << sb.block_bits;
        read_at(volume, || format!("inode bitmap of group {group}"), bitmap_at, &mut bitmap)?;
        let in_use = |index: u64| bitmap.get((index / 8) as usize).is_some_and(|b| b >> (index % 8) & 1 != 0);
        let Some(last) = (0..sb.inodes_per_group).rev().find(|&i| in_use(i)) else { continue };
        // Only the part of the table up to the last inode in use is read.
        let table_at = desc.inode_table << sb.block_bits;
        let table_len = (last + 1) * sb.inode_size;
        let mut done = 0;
        while done < table_len {
            let len = (table_len - done).min(CHUNK_BYTES - CHUNK_BYTES % sb.inode_size);
            chunk.resize(usize::try_from(len).unwrap_or(0), 0);
            let at = table_at + done;
            read_at(volume, || format!("inode table of group {group}"), at, &mut chunk)?;
            let first_index = done / sb.inode_size;
            for (i, inode) in chunk.chunks_exact(usize::try_from(sb.inode_size).unwrap_or(1)).enumerate() {
                let index = first_index + i as u64;
                if in_use(index) {
                    let number = group * sb.inodes_per_group + index + 1;
                    scan.inode(number, inode, at + i as u64 * sb.inode_size)?;
                }
            }
            done += len;
        }
    }
    let mut runs = scan.runs;
    runs.sort_unstable_by_key(|r| r.start);
    let mut blocks = RangeSet::new();
    for run in runs {
        blocks.insert((run.start << sb.block_bits)..(run.end << sb.block_bits));
    }
    Ok(FileBlocks { blocks, inodes: scan.inodes })
}

struct Scan<'a> {
    volume: &'a dyn ReadAt,
    sb: &'a Superblock,
    first_ino: u64,
    /// Block runs found, contiguous ones merged as they come.
    runs: Vec<Range<u64>>,
    /// Extent tree and indirect blocks that may still be read.
    reads_left: u64,
    inodes: u64,
}

/// Which inode is being read, for messages.
#[derive(Clone, Copy)]
struct Inode {
    number: u64,
    offset: u64,
}

impl Scan<'_> {
    /// Adds the blocks of inode `number` (its bytes `raw`, at volume byte `offset`), if in use.
    fn inode(&mut self, number: u64, raw: &[u8], offset: u64) -> Result<(), Error> {
        let links = le16(raw, I_LINKS_COUNT);
        if links == 0 && number >= self.first_ino {
            return Ok(());
        }
        self.inodes += 1;
        let inode = Inode { number, offset };
        let acl_high = if self.sb.has_incompat(incompat::BIT64) { u64::from(le16(raw, I_FILE_ACL_HIGH)) } else { 0 };
        let acl = u64::from(le32(raw, I_FILE_ACL_LO)) | acl_high << 32;
        if acl != 0 {
            self.add(inode, acl, 1, "extended attribute block")?;
        }
        let mode = le16(raw, I_MODE);
        let flags = le32(raw, I_FLAGS);
        let size = u64::from(le32(raw, I_SIZE_LO)) | u64::from(le32(raw, I_SIZE_HIGH)) << 32;
        let has_blocks = match mode & S_IFMT {
            S_IFREG | S_IFDIR => true,
            // ext2fs_is_fast_symlink: the target is stored in i_block itself.
            S_IFLNK => size == 0 || size >= I_BLOCK_LEN as u64,
            // The reserved inodes without a type (bad blocks inode 1) may still map blocks.
            0 => number < self.first_ino,
            // Devices, fifos and sockets keep other data in i_block.
            _ => false,
        };
        if !has_blocks || flags & INLINE_DATA_FL != 0 {
            return Ok(());
        }
        let i_block = raw.get(I_BLOCK..I_BLOCK + I_BLOCK_LEN).unwrap_or_default();
        if flags & EXTENTS_FL != 0 {
            self.extent_node(inode, i_block, None)
        } else {
            for (slot, pointer) in i_block.chunks_exact(4).enumerate() {
                let block = u64::from(le32(pointer, 0));
                if block == 0 {
                    continue;
                }
                match slot.checked_sub(DIRECT_BLOCKS) {
                    None => self.add(inode, block, 1, "data block")?,
                    Some(level) => self.indirect(inode, block, level)?,
                }
            }
            Ok(())
        }
    }

    /// An extent tree node (the inode's `i_block`, or a tree block); `depth` is the depth its
    /// parent expects (`None` at the root).
    fn extent_node(&mut self, inode: Inode, node: &[u8], depth: Option<u16>) -> Result<(), Error> {
        let (magic, entries, max, node_depth) = (le16(node, 0), le16(node, 2), le16(node, 4), le16(node, 6));
        let fits = EXTENT_ENTRY * (1 + usize::from(max)) <= node.len();
        if magic != EXTENT_MAGIC
            || entries > max
            || !fits
            || node_depth > MAX_EXTENT_DEPTH
            || depth.is_some_and(|d| d != node_depth)
        {
            return Err(self.corrupt(
                inode,
                format!(
                    "extent tree node with magic {magic:#06x}, {entries} of {max} entries, depth {node_depth} (expected {}) is invalid",
                    depth.map_or_else(|| format!("at most {MAX_EXTENT_DEPTH}"), |d| d.to_string())
                ),
            ));
        }
        for index in 0..usize::from(entries) {
            let entry = node.get(EXTENT_ENTRY * (1 + index)..EXTENT_ENTRY * (2 + index)).unwrap_or_default();
            if node_depth == 0 {
                let start = u64::from(le32(entry, 8)) | u64::from(le16(entry, 6)) << 32;
                let len = le16(entry, 4);
                let len = if len > INIT_MAX_LEN { len - INIT_MAX_LEN } else { len };
                if len > 0 {
                    self.add(inode, start, u64::from(len), "extent")?;
                }
            } else {
                let child = u64::from(le32(entry, 4)) | u64::from(le16(entry, 8)) << 32;
                let block = self.read_tree_block(inode, child, "extent tree block")?;
                self.extent_node(inode, &block, Some(node_depth - 1))?;
            }
        }
        Ok(())
    }

    /// An indirect block of `level` (0: single, 1: double, 2: triple) and what it points to.
    fn indirect(&mut self, inode: Inode, block: u64, level: usize) -> Result<(), Error> {
        let pointers = self.read_tree_block(inode, block, "indirect block")?;
        for pointer in pointers.chunks_exact(4) {
            let child = u64::from(le32(pointer, 0));
            if child == 0 {
                continue;
            }
            match level.checked_sub(1) {
                None => self.add(inode, child, 1, "data block")?,
                Some(level) => self.indirect(inode, child, level)?,
            }
        }
        Ok(())
    }

    /// Adds and reads one extent tree or indirect block, within the read budget.
    fn read_tree_block(&mut self, inode: Inode, block: u64, what: &str) -> Result<Vec<u8>, Error> {
        self.add(inode, block, 1, what)?;
        if self.reads_left == 0 {
            return Err(self.corrupt(
                inode,
                format!(
                    "more extent tree and indirect blocks than the {} blocks of the filesystem (a loop?)",
                    self.sb.blocks_count
                ),
            ));
        }
        self.reads_left -= 1;
        let mut bytes = vec![0u8; usize::try_from(self.sb.block_size()).unwrap_or(0)];
        let number = inode.number;
        read_at(self.volume, || format!("{what} {block} of inode {number}"), block << self.sb.block_bits, &mut bytes)?;
        Ok(bytes)
    }

    /// Records `len` blocks from `start`, which must lie inside the filesystem.
    fn add(&mut self, inode: Inode, start: u64, len: u64, what: &str) -> Result<(), Error> {
        let sb = self.sb;
        if start < sb.first_data_block || start.checked_add(len).is_none_or(|end| end > sb.blocks_count) {
            return Err(self.corrupt(
                inode,
                format!(
                    "{what} at block {start} (+{len}) lies outside the filesystem (blocks {}..{})",
                    sb.first_data_block, sb.blocks_count
                ),
            ));
        }
        match self.runs.last_mut() {
            Some(last) if last.end == start => last.end += len,
            _ => self.runs.push(start..start + len),
        }
        Ok(())
    }

    fn corrupt(&self, inode: Inode, problem: String) -> Error {
        Error::corrupt(format!("inode {}", inode.number), inode.offset, problem)
    }
}

#[cfg(test)]
#[allow(clippy::indexing_slicing)]
mod tests {
    use super::*;
    use crate::tests::{clean_fixtures, fixture};
    use crate::{Options, analyze, analyze_with};

    fn superblock(image: &[u8]) -> Superblock {
        Superblock::parse(&image[1024..2048].try_into().unwrap(), image.len() as u64).unwrap()
    }

    fn detail(allocation: &imgstream_volume::Allocation) -> &str {
        &allocation.details.iter().find(|(label, _)| label == "inode scan").unwrap().1
    }

    #[test]
    fn clean_fixtures_agree_and_metadata_csum_is_scanned_only_when_asked() {
        for name in clean_fixtures() {
            let image = fixture(&name);
            let deep = analyze_with(&image, &Options { deep_check: true }).unwrap();
            assert!(deep.warnings.is_empty(), "{name}: {:?}", deep.warnings);
            assert!(detail(&deep).contains("inodes in use, every block of theirs marked"), "{name}: {}", detail(&deep));
            let default = analyze(&image).unwrap();
            assert_eq!(default.used, deep.used, "{name}");
            let csum = superblock(&image).has_ro_compat(crate::features::ro_compat::METADATA_CSUM);
            assert_eq!(detail(&default).starts_with("skipped: metadata_csum"), csum, "{name}: {}", detail(&default));
        }
    }

    /// Two bits cleared under a file and two set elsewhere in the same group: every free count
    /// still agrees, and only the inodes tell.
    #[test]
    fn a_count_neutral_bitmap_flip_keeps_the_files_blocks() {
        let mut image = fixture("ext-ext2");
        let sb = superblock(&image);
        let clean = analyze(&image).unwrap();
        let files = file_blocks(&image, &sb).unwrap().blocks;
        // The last two blocks files own in group 0 past its inode table (data, not the reserved
        // descriptor blocks the resize inode maps), and two free blocks of the same group.
        let group = 0;
        let desc = DescriptorTable::new(&image, &sb).get(group).unwrap();
        let data =
            (desc.inode_table + sb.inode_table_blocks()) << sb.block_bits..sb.group_first_block(1) << sb.block_bits;
        let last = files.overlapping(data).last().unwrap().end >> sb.block_bits;
        let bitmap = (desc.block_bitmap << sb.block_bits) as usize;
        let bit = |block: u64| (block - sb.first_data_block - group * sb.blocks_per_group) as usize;
        let group_end = (sb.group_first_block(group) + sb.blocks_per_group).min(sb.blocks_count);
        let free: Vec<u64> = (sb.group_first_block(group)..group_end)
            .filter(|&b| !clean.used.contains(b << sb.block_bits))
            .take(2)
            .collect();
        assert_eq!(free.len(), 2, "no free blocks in group {group}");
        for block in [last - 1, last - 2].into_iter().chain(free) {
            image[bitmap + bit(block) / 8] ^= 1 << (bit(block) % 8);
        }
        let allocation = analyze(&image).unwrap();
        assert_eq!(allocation.used.difference(&clean.used).total(), 2 << sb.block_bits, "the two set bits");
        assert!(clean.used.difference(&allocation.used).is_empty(), "a file block was dropped");
        let warning = allocation.warnings.join("; ");
        assert!(
            warning.contains(&format!(
                "2 blocks used by files but free in the block bitmaps (the first is block {})",
                last - 2
            )),
            "{warning}"
        );
        assert!(detail(&allocation).contains("2 blocks of theirs free"), "{}", detail(&allocation));
    }

    /// An inode with `mode`, `flags` and `i_block`, scanned alone.
    fn scan_inode(image: &[u8], mode: u16, flags: u32, size: u32, i_block: &[u8]) -> Result<Vec<Range<u64>>, Error> {
        let sb = superblock(image);
        let mut scan =
            Scan { volume: &image, sb: &sb, first_ino: 11, runs: Vec::new(), reads_left: sb.blocks_count, inodes: 0 };
        let mut raw = vec![0u8; 128];
        raw[I_MODE..I_MODE + 2].copy_from_slice(&mode.to_le_bytes());
        raw[I_SIZE_LO..I_SIZE_LO + 4].copy_from_slice(&size.to_le_bytes());
        raw[I_LINKS_COUNT] = 1;
        raw[I_FLAGS..I_FLAGS + 4].copy_from_slice(&flags.to_le_bytes());
        raw[I_BLOCK..I_BLOCK + i_block.len()].copy_from_slice(i_block);
        scan.inode(12, &raw, 4096)?;
        Ok(scan.runs)
    }

    fn extent_header(entries: u16, depth: u16) -> Vec<u8> {
        // magic, entries, max, depth, generation (u32)
        [EXTENT_MAGIC, entries, 4, depth, 0, 0].iter().flat_map(|v| v.to_le_bytes()).collect()
    }

    #[test]
    fn block_maps_extent_trees_and_their_hostile_variants() {
        let image = fixture("ext-ext2"); // 12000 blocks of 1 KiB
        // Direct pointers 100 and 101, a hole, then 300.
        let map: Vec<u8> = [100u32, 101, 0, 300].iter().flat_map(|v| v.to_le_bytes()).collect();
        assert_eq!(scan_inode(&image, S_IFREG, 0, 4096, &map).unwrap(), [100..102, 300..301]);
        // A fast symlink's target and a device number are not blocks.
        assert!(scan_inode(&image, S_IFLNK, 0, 20, b"../../some/where/else").unwrap().is_empty());
        assert!(scan_inode(&image, 0x2000, 0, 0, &[0xFF; 8]).unwrap().is_empty());
        // An extent leaf: 5 blocks at 200 (uninitialized: 32768 + 5).
        let mut leaf = extent_header(1, 0);
        leaf.extend([0u8; 4].iter().chain(&(32768u16 + 5).to_le_bytes()).chain(&[0, 0]).chain(&200u32.to_le_bytes()));
        assert_eq!(scan_inode(&image, S_IFREG, EXTENTS_FL, 4096, &leaf).unwrap(), vec![200..205]);
        // Past the end of the filesystem, a bad magic, too deep: corruption naming the inode.
        let past: Vec<u8> = [12000u32].iter().flat_map(|v| v.to_le_bytes()).collect();
        let error = scan_inode(&image, S_IFREG, 0, 4096, &past).unwrap_err().to_string();
        assert!(error.starts_with("inode 12 at byte 4096: data block at block 12000 (+1) lies outside"), "{error}");
        let error = scan_inode(&image, S_IFREG, EXTENTS_FL, 4096, &[0u8; 12]).unwrap_err().to_string();
        assert!(error.contains("extent tree node with magic 0x0000"), "{error}");
        let error = scan_inode(&image, S_IFREG, EXTENTS_FL, 4096, &extent_header(0, 6)).unwrap_err().to_string();
        assert!(error.contains("depth 6"), "{error}");
    }

    #[test]
    fn an_indirect_block_pointing_at_itself_ends_in_an_error() {
        let mut image = fixture("ext-ext2");
        // Block 5000 (1 KiB): 256 pointers to itself, used as a triple indirect block.
        for slot in 0..256 {
            image[5000 * 1024 + slot * 4..5000 * 1024 + slot * 4 + 4].copy_from_slice(&5000u32.to_le_bytes());
        }
        let mut map = vec![0u8; 60];
        map[56..60].copy_from_slice(&5000u32.to_le_bytes());
        let error = scan_inode(&image, S_IFREG, 0, 4096, &map).unwrap_err().to_string();
        assert!(error.contains("more extent tree and indirect blocks than the 12000 blocks"), "{error}");
    }
}
