//! The allocation of a filesystem whose journal needs recovery, without replaying it.
//!
//! After a crash, or in a snapshot taken without the filesystem's help, the newest allocations
//! may live only in committed transactions of the journal, which the kernel replays at the next
//! mount. The restored image keeps the journal intact, so it replays there too; what must not
//! be zeroed is every block that is in use before *or* after that replay:
//!
//! `used = on-disk bitmaps ∪ every logged copy of a block bitmap ∪ every fast-commit ADD_RANGE`
//!
//! with the additions the team's notes prove necessary (shared/journal-and-volumes.md §1.7):
//! escaped copies get their magic back ([`crate::journal`]); a group's bitmap is computed from
//! the layout (`BLOCK_UNINIT`) only if the on-disk descriptor and every logged copy of it say
//! so, otherwise its on-disk bitmap counts too; a log that changes the geometry (a logged
//! superblock with another block count, a logged descriptor for a group that does not exist, a
//! logged reserved-GDT block or a block past the end: an online resize) cannot be judged and is
//! refused; every descriptor of the log area counts, stale ones too. Revoke records are
//! ignored: they only withhold copies from replay, and a withheld copy can only add blocks.
//!
//! Inodes allocated in the journal window exist only in logged inode-bitmap and inode-table
//! blocks, which replay writes whole; the blocks their files use were marked in a block bitmap
//! of the same transaction, so a logged bitmap copy covers them (data blocks are written in
//! place before that transaction commits). Orphan processing after replay only frees blocks.
//!
//! A block bitmap whose checksum fails is expected here (the bitmap and the descriptor holding
//! its checksum reach the disk at different times): its on-disk bits count with its logged
//! copies. If there is none, the bitmap was not changed in the log window, so it is the one the
//! last checkpoint wrote; it counts alone if a logged copy of its descriptor (itself verified)
//! holds its checksum (JBD2 logs a descriptor block again in every transaction that touches any
//! of its groups, so its home copy lags), and otherwise the whole group is kept. Free counts may
//! lag the bitmaps for the same reason and are not cross-checked.

use crate::Error;
use crate::block_bitmap;
use crate::features::incompat;
use crate::group_desc::{self, BLOCK_UNINIT, DescriptorTable, GroupDesc};
use crate::journal::Log;
use crate::superblock::{S_BLOCKS_COUNT_HI, S_BLOCKS_COUNT_LO, S_MAGIC, SUPERBLOCK_OFFSET, Superblock};
use imgstream_blockio::ReadAt;
use imgstream_volume::fields::{le16, le32};
use std::collections::{HashMap, HashSet};
use std::ops::Range;

/// What the journal adds to the on-disk allocation.
#[derive(Default)]
pub(crate) struct Recovery {
    /// The OR of every logged copy of each block that some descriptor version names as a block
    /// bitmap (the group's bitmap bytes only), by filesystem block.
    bitmap_copies: HashMap<u64, Vec<u8>>,
    /// For each group with logged descriptor copies: (block bitmap location, flags) of each.
    desc_versions: HashMap<u64, Vec<(u64, u16)>>,
    /// For each group, its logged descriptor copies whose own checksum verifies: the block
    /// bitmap checksums the kernel computed, which vouch for an on-disk bitmap that fails the
    /// on-disk descriptor's.
    logged_descs: HashMap<u64, Vec<GroupDesc>>,
    /// Blocks that fast-commit replay marks used.
    pub(crate) fast_commit_blocks: Vec<Range<u64>>,
    /// Where the journal is, in filesystem blocks (what decides the answer, with the bitmaps).
    pub(crate) journal_blocks: Vec<Range<u64>>,
    /// Committed transactions recovery would replay.
    pub(crate) transactions: u64,
    /// Logged block bitmap copies found.
    pub(crate) bitmap_copy_count: u64,
}

impl Recovery {
    /// Reads the internal journal and collects what it adds. An error other than
    /// [`Error::Io`] means the log cannot be judged (the caller refuses, naming it).
    pub(crate) fn analyze(volume: &dyn ReadAt, sb: &Superblock) -> Result<Self, Error> {
        let log = Log::read(volume, sb)?;
        let mut recovery = Self {
            fast_commit_blocks: log.fast_commit_blocks.clone(),
            journal_blocks: log.physical_blocks(),
            transactions: log.transactions,
            ..Self::default()
        };
        let desc_blocks: HashMap<u64, u64> =
            (0..sb.desc_blocks()).map(|index| (sb.desc_block_location(index), index)).collect();
        let old_desc_blocks =
            if sb.has_incompat(incompat::META_BG) { sb.first_meta_bg.min(sb.desc_blocks()) } else { sb.desc_blocks() };
        let reserved_start = sb.desc_block_location(0) + old_desc_blocks;
        let reserved_gdt = reserved_start..reserved_start + sb.reserved_gdt_blocks;
        let superblock_home = SUPERBLOCK_OFFSET >> sb.block_bits;
        for tag in &log.tags {
            let resize = |what: String| {
                Error::unsupported(
                    "journal",
                    tag.home << sb.block_bits,
                    format!("{what}: the log resizes the filesystem (online resize), its bitmaps cannot be located"),
                )
            };
            if tag.home >= sb.blocks_count {
                return Err(resize(format!(
                    "a logged copy of block {}, past the filesystem's {} blocks",
                    tag.home, sb.blocks_count
                )));
            }
            if reserved_gdt.contains(&tag.home) {
                return Err(resize(format!("a logged copy of reserved descriptor block {}", tag.home)));
            }
            if tag.home == superblock_home {
                let copy = log.copy(volume, tag)?;
                let within = usize::try_from(SUPERBLOCK_OFFSET - (superblock_home << sb.block_bits)).unwrap_or(0);
                let raw = copy.get(within..).unwrap_or(&[]);
                let high = if sb.has_incompat(incompat::BIT64) { u64::from(le32(raw, S_BLOCKS_COUNT_HI)) } else { 0 };
                let blocks = high << 32 | u64::from(le32(raw, S_BLOCKS_COUNT_LO));
                if le16(raw, S_MAGIC) == crate::superblock::EXT_MAGIC && blocks != sb.blocks_count {
                    return Err(resize(format!("a logged superblock with {blocks} blocks, not {}", sb.blocks_count)));
                }
            }
            if let Some(&index) = desc_blocks.get(&tag.home) {
                let copy = log.copy(volume, tag)?;
                recovery.add_descriptor_copy(sb, index, &copy).map_err(resize)?;
            }
        }

        // Every block that some version of some descriptor names as a block bitmap.
        let mut table = DescriptorTable::new(volume, sb);
        let mut bitmap_blocks = HashSet::new();
        for group in 0..sb.groups {
            bitmap_blocks.insert(table.get(group)?.block_bitmap);
        }
        bitmap_blocks.extend(recovery.desc_versions.values().flatten().map(|&(block, _)| block));
        let bitmap_bytes = bitmap_bytes(sb);
        for tag in log.tags.iter().filter(|tag| bitmap_blocks.contains(&tag.home)) {
            let copy = log.copy(volume, tag)?;
            let merged = recovery.bitmap_copies.entry(tag.home).or_insert_with(|| vec![0; bitmap_bytes]);
            for (into, byte) in merged.iter_mut().zip(&copy) {
                *into |= byte;
            }
            recovery.bitmap_copy_count += 1;
        }
        Ok(recovery)
    }

    /// Records the descriptors in a logged copy of descriptor block `index`. A non-zero slot
    /// past the last group is a group the filesystem does not have yet.
    fn add_descriptor_copy(&mut self, sb: &Superblock, index: u64, copy: &[u8]) -> Result<(), String> {
        let per_block = sb.descs_per_block();
        let desc_size = usize::try_from(sb.desc_size).unwrap_or(usize::MAX);
        for (slot, desc) in copy.chunks_exact(desc_size).enumerate() {
            let group = index * per_block + slot as u64;
            if group >= sb.groups {
                if desc.iter().any(|&b| b != 0) {
                    return Err(format!(
                        "a logged descriptor for group {group}, past the last group {}",
                        sb.groups - 1
                    ));
                }
                continue;
            }
            let parsed = group_desc::parse(sb, desc, 0);
            if parsed.block_bitmap >= sb.blocks_count {
                return Err(format!(
                    "a logged descriptor of group {group} with its block bitmap at block {}, past the end",
                    parsed.block_bitmap
                ));
            }
            self.desc_versions.entry(group).or_default().push((parsed.block_bitmap, parsed.flags));
            if group_desc::verify_checksum(sb, group, desc, 0).is_ok() {
                self.logged_descs.entry(group).or_default().push(parsed);
            }
        }
        Ok(())
    }

    /// The used-cluster bitmap of `group` (clusters_per_group / 8 bytes): the on-disk bitmap,
    /// or the layout of a group that every descriptor version says is `BLOCK_UNINIT`, with every
    /// logged copy ORed in. A warning is added when a group is kept whole.
    pub(crate) fn group_bitmap(
        &self,
        volume: &dyn ReadAt,
        sb: &Superblock,
        group: u64,
        desc: &GroupDesc,
        warnings: &mut Vec<String>,
    ) -> Result<Vec<u8>, Error> {
        let versions = self.desc_versions.get(&group).map_or(&[][..], Vec::as_slice);
        let uninit_on_disk = sb.has_group_desc_csum() && desc.flags & BLOCK_UNINIT != 0;
        let mut locations = vec![desc.block_bitmap];
        locations.extend(versions.iter().map(|&(block, _)| block).filter(|&block| block != desc.block_bitmap));
        let copies: Vec<&Vec<u8>> = locations.iter().filter_map(|block| self.bitmap_copies.get(block)).collect();

        let mut bitmap = if uninit_on_disk && versions.iter().all(|&(_, flags)| flags & BLOCK_UNINIT != 0) {
            vec![0; bitmap_bytes(sb)]
        } else {
            let (bitmap, verified) = block_bitmap::read_bitmap_unverified(volume, sb, group, desc)?;
            // An uninitialised group's on-disk bitmap has no checksum to match; it only adds bits.
            if !uninit_on_disk && copies.is_empty() {
                if let Err(torn) = verified {
                    // Checkpointed after the last logged copy of its descriptor was written: the
                    // kernel's own checksum of these bits is in the log.
                    let vouched = self.logged_descs.get(&group).is_some_and(|logged| {
                        logged.iter().any(|logged| {
                            logged.block_bitmap == desc.block_bitmap
                                && block_bitmap::checksum_matches(sb, logged, &bitmap)
                        })
                    });
                    if !vouched {
                        warnings.push(format!(
                            "{torn}; the journal holds no copy of it, so the whole group {group} is kept"
                        ));
                        return Ok(vec![0xFF; bitmap_bytes(sb)]);
                    }
                }
            }
            bitmap
        };
        if uninit_on_disk {
            let first_cluster = sb.group_first_block(group) >> sb.cluster_bits;
            for clusters in block_bitmap::uninit_used_clusters(sb, group, desc).iter() {
                for cluster in clusters {
                    set_bit(&mut bitmap, cluster - first_cluster);
                }
            }
        }
        for copy in copies {
            for (into, byte) in bitmap.iter_mut().zip(copy) {
                *into |= byte;
            }
        }
        Ok(bitmap)
    }

    /// One line for `info`.
    pub(crate) fn summary(&self) -> String {
        let mut text =
            format!("needs recovery: {} transactions, {} bitmap copies", self.transactions, self.bitmap_copy_count);
        if !self.fast_commit_blocks.is_empty() {
            let blocks: u64 = self.fast_commit_blocks.iter().map(|r| r.end - r.start).sum();
            text += &format!(", {} fast-commit ranges ({blocks} blocks)", self.fast_commit_blocks.len());
        }
        text + "; elided safely"
    }
}

/// Bytes of one group's bitmap that count (validated: at most one block).
fn bitmap_bytes(sb: &Superblock) -> usize {
    usize::try_from(sb.clusters_per_group / 8).unwrap_or(0)
}

fn set_bit(bitmap: &mut [u8], bit: u64) {
    if let Some(byte) = bitmap.get_mut(usize::try_from(bit / 8).unwrap_or(usize::MAX)) {
        *byte |= 1 << (bit % 8);
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::indexing_slicing)] // tests index a known fixture; a panic is a failure

    use crate::block_map::BlockMap;
    use crate::features::incompat;
    use crate::journal::Log;
    use crate::superblock::{S_CHECKSUM, S_FEATURE_INCOMPAT, SUPERBLOCK_SIZE, Superblock};
    use crate::tests::fixture;
    use crate::{analyze, group_desc::DescriptorTable};

    /// extbad-needs-recovery: one committed transaction (descriptor in journal block 1, a copy
    /// of group 0's block bitmap in journal block 2, commit in block 3) marking 64 more blocks
    /// used; a 64bit journal (12-byte tags, flags at byte 6).
    fn image() -> Vec<u8> {
        fixture("extbad-needs-recovery")
    }

    fn superblock(img: &[u8]) -> Superblock {
        Superblock::parse(img[1024..1024 + SUPERBLOCK_SIZE].try_into().unwrap(), img.len() as u64).unwrap()
    }

    /// Byte offset of journal block `block`.
    fn journal_block(img: &[u8], block: u64) -> usize {
        let sb = superblock(img);
        let map = BlockMap::of_inode(&img, &sb, 8, block + 1).unwrap();
        (map.physical(block).unwrap() << sb.block_bits) as usize
    }

    fn set_incompat(img: &mut [u8], value: u32) {
        img[1024 + S_FEATURE_INCOMPAT..][..4].copy_from_slice(&value.to_le_bytes());
        let sum = crate::checksum::crc32c_raw(!0, &[&img[1024..1024 + S_CHECKSUM]]);
        img[1024 + S_CHECKSUM..][..4].copy_from_slice(&sum.to_le_bytes());
    }

    fn incompat_of(img: &[u8]) -> u32 {
        u32::from_le_bytes(img[1024 + S_FEATURE_INCOMPAT..][..4].try_into().unwrap())
    }

    #[test]
    fn the_logged_bitmap_copy_keeps_the_64_blocks_the_transaction_allocates() {
        let img = image();
        let allocation = analyze(&img.as_slice()).unwrap();
        assert!(allocation.unsafe_reasons.is_empty(), "{:?}", allocation.unsafe_reasons);
        let journal = &allocation.details.iter().find(|(label, _)| label == "journal").unwrap().1;
        assert_eq!(journal, "needs recovery: 1 transactions, 1 bitmap copies; elided safely");
        // The journal decides the answer too: read again after streaming, like the bitmaps.
        for block in [0, 2, 1023] {
            let at = journal_block(&img, block) as u64;
            assert!(allocation.map_ranges.contains_range(at..at + 4096), "journal block {block}");
        }
        // The same image as if the journal were empty: the on-disk bitmaps alone.
        let mut clean = img.clone();
        set_incompat(&mut clean, incompat_of(&img) & !incompat::RECOVER);
        let on_disk = analyze(&clean.as_slice()).unwrap();
        assert!(on_disk.used.difference(&allocation.used).is_empty(), "the journal view dropped blocks");
        assert_eq!(allocation.used.total() - on_disk.used.total(), 64 * 4096);
    }

    #[test]
    fn an_unknown_journal_feature_is_refused_naming_it() {
        let mut img = image();
        let at = journal_block(&img, 0);
        img[at + 0x28..at + 0x2C].copy_from_slice(&0x8000_0002u32.to_be_bytes());
        let allocation = analyze(&img.as_slice()).unwrap();
        let reasons = allocation.unsafe_reasons.join("; ");
        assert!(reasons.contains("cannot be analysed") && reasons.contains("journal features 0x80000000"), "{reasons}");
        assert!(allocation.details.iter().all(|(label, _)| label != "journal"));
    }

    #[test]
    fn a_logged_superblock_with_another_size_is_an_online_resize_and_refused() {
        let mut img = image();
        let sb = superblock(&img);
        // Point the tag at the superblock's block and make the copy a superblock of another size.
        let descriptor = journal_block(&img, 1);
        img[descriptor + 12..descriptor + 16].copy_from_slice(&0u32.to_be_bytes());
        let copy = journal_block(&img, 2);
        let mut logged = img[..4096].to_vec();
        logged[1024 + 4..1024 + 8].copy_from_slice(&((sb.blocks_count + 1024) as u32).to_le_bytes());
        img[copy..copy + 4096].copy_from_slice(&logged);
        let reasons = analyze(&img.as_slice()).unwrap().unsafe_reasons.join("; ");
        assert!(
            reasons.contains("a logged superblock with 5024 blocks, not 4000") && reasons.contains("online resize"),
            "{reasons}"
        );
    }

    #[test]
    fn an_escaped_copy_gets_its_magic_back() {
        let mut img = image();
        // The logged copy's first word zeroed, as JBD2 escapes a block starting with the magic.
        let copy = journal_block(&img, 2);
        img[copy..copy + 4].fill(0);
        let sb = superblock(&img);
        let first_word = |img: &[u8]| {
            let log = Log::read(&img, &sb).unwrap();
            assert_eq!(log.tags.len(), 1);
            log.copy(&img, &log.tags[0]).unwrap()[..4].to_vec()
        };
        assert_eq!(first_word(&img), [0; 4]);
        let flags = journal_block(&img, 1) + 12 + 6;
        img[flags + 1] |= 1; // ESCAPE
        assert_eq!(first_word(&img), [0xC0, 0x3B, 0x39, 0x98]);
    }

    #[test]
    fn a_torn_block_bitmap_joins_its_copies_or_keeps_its_whole_group() {
        let mut img = image();
        let sb = superblock(&img);
        let volume = img.as_slice();
        let mut table = DescriptorTable::new(&volume, &sb);
        let (bitmap0, bitmap3) = (table.get(0).unwrap().block_bitmap, table.get(3).unwrap().block_bitmap);
        // Group 0 has a logged copy; group 3 has none. Flip a bit in each (a torn write).
        for bitmap in [bitmap0, bitmap3] {
            img[(bitmap * 4096 + 100) as usize] ^= 0x10;
        }
        let allocation = analyze(&img.as_slice()).unwrap();
        assert!(allocation.unsafe_reasons.is_empty(), "{:?}", allocation.unsafe_reasons);
        assert_eq!(allocation.warnings.len(), 1, "{:?}", allocation.warnings);
        let warning = &allocation.warnings[0];
        assert!(warning.contains("block bitmap of group 3") && warning.contains("whole group 3 is kept"), "{warning}");
        assert!(allocation.used.contains_range(sb.group_first_block(3) * 4096..sb.blocks_count * 4096));
    }
}
