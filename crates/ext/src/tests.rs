//! Tests on the committed fixtures (made by fixtures/gen/ext.sh with the real mke2fs), loaded
//! into memory: the free count against the one e2fsprogs wrote in the superblock, and one
//! corrupted field at a time, each of which must give a clear error (or a hazard), never a
//! panic. The byte-for-byte comparison with dumpe2fs is in tests/ext.rs.

#![allow(clippy::indexing_slicing)] // tests index known fixtures; a panic is a failure

use super::*;
use crate::group_desc::{BG_BLOCK_BITMAP_LO, BG_CHECKSUM, BG_FLAGS, desc_checksum};
use crate::superblock::*;
use imgstream_volume::{Classify, ErrorClass};
use std::path::PathBuf;
use std::process::Command;

fn fixtures_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fixtures")
}

/// Decompresses `fixtures/<name>.img.zst` into memory (the zstd tool is in every base system).
pub(super) fn fixture(name: &str) -> Vec<u8> {
    let path = fixtures_dir().join(format!("{name}.img.zst"));
    let output = Command::new("zstd").args(["-q", "-d", "-c"]).arg(&path).output().expect("run zstd");
    assert!(output.status.success(), "zstd -d {}: {}", path.display(), String::from_utf8_lossy(&output.stderr));
    output.stdout
}

/// The committed clean ext fixtures.
pub(super) fn clean_fixtures() -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(fixtures_dir())
        .expect("read fixtures/")
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter_map(|n| n.strip_suffix(".img.zst").map(str::to_owned))
        .filter(|n| n.starts_with("ext-"))
        .collect();
    names.sort();
    assert!(names.len() >= 10, "ext fixtures missing: {names:?}");
    names
}

fn sb_bytes(img: &[u8]) -> [u8; SUPERBLOCK_SIZE] {
    img[1024..2048].try_into().unwrap()
}

fn parsed_sb(img: &[u8]) -> Superblock {
    Superblock::parse(&sb_bytes(img), img.len() as u64).expect("valid superblock")
}

fn get32(img: &[u8], offset: usize) -> u32 {
    u32::from_le_bytes(img[offset..offset + 4].try_into().unwrap())
}

fn put16(img: &mut [u8], offset: usize, value: u16) {
    img[offset..offset + 2].copy_from_slice(&value.to_le_bytes());
}

fn put32(img: &mut [u8], offset: usize, value: u32) {
    img[offset..offset + 4].copy_from_slice(&value.to_le_bytes());
}

/// Sets superblock field `field` and re-seals the superblock checksum, so that the check
/// under test is the field's, not the checksum's.
fn set_sb32(img: &mut [u8], field: usize, value: u32) {
    put32(img, 1024 + field, value);
    fix_sb_checksum(img);
}

fn set_sb16(img: &mut [u8], field: usize, value: u16) {
    put16(img, 1024 + field, value);
    fix_sb_checksum(img);
}

fn fix_sb_checksum(img: &mut [u8]) {
    if get32(img, 1024 + S_FEATURE_RO_COMPAT) & ro_compat::METADATA_CSUM != 0 {
        let sum = crate::checksum::crc32c_raw(!0, &[&img[1024..1024 + S_CHECKSUM]]);
        put32(img, 1024 + S_CHECKSUM, sum);
    }
}

/// Byte offset of group `group`'s descriptor in the primary table.
fn desc_offset(img: &[u8], group: u64) -> usize {
    let sb = parsed_sb(img);
    let per_block = sb.descs_per_block();
    let block = sb.desc_block_location(group / per_block);
    ((block << sb.block_bits) + (group % per_block) * sb.desc_size) as usize
}

/// Re-seals the checksum of group `group`'s descriptor after a change.
fn fix_desc_checksum(img: &mut [u8], group: u64) {
    let sb = parsed_sb(img);
    let at = desc_offset(img, group);
    let desc = img[at..at + sb.desc_size as usize].to_vec();
    if let Some(sum) = desc_checksum(&sb, group, &desc) {
        put16(img, at + BG_CHECKSUM, sum);
    }
}

fn analyze_bytes(img: &[u8]) -> Result<Allocation, Error> {
    analyze(&img)
}

/// Asserts `analyze` fails with `class`, with a one-line message containing every `needles`.
fn expect_error(img: &[u8], class: ErrorClass, needles: &[&str]) -> String {
    let error = analyze_bytes(img).expect_err("analysis should fail");
    let message = error.to_string();
    assert_eq!(error.class(), class, "wrong class for: {message}");
    assert!(!message.contains('\n'), "not one line: {message}");
    for needle in needles {
        assert!(message.contains(needle), "{message:?} lacks {needle:?}");
    }
    message
}

fn detail<'a>(allocation: &'a Allocation, label: &str) -> &'a str {
    &allocation
        .details
        .iter()
        .find(|(l, _)| l == label)
        .unwrap_or_else(|| panic!("no {label} in {:?}", allocation.details))
        .1
}

/// The properties every successful answer has, whatever the input.
fn assert_sane(img: &[u8], allocation: &Allocation) {
    let size = img.len() as u64;
    assert!(allocation.used.end() <= size, "used reaches past the volume: {} > {size}", allocation.used.end());
    // The boot area and the superblock are always copied.
    assert!(allocation.used.contains_range(0..2048), "boot area or superblock not in used");
}

#[test]
fn every_fixture_counts_the_free_blocks_e2fsprogs_recorded() {
    // s_free_blocks_count was written by mke2fs/debugfs on a cleanly closed filesystem: an
    // oracle for our total, which we count from the bitmaps (or the layout, for BLOCK_UNINIT).
    for name in clean_fixtures() {
        let img = fixture(&name);
        let allocation = analyze_bytes(&img).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_sane(&img, &allocation);
        assert!(allocation.unsafe_reasons.is_empty(), "{name}: {:?}", allocation.unsafe_reasons);
        let sb = parsed_sb(&img);
        let hi = if sb.has_incompat(incompat::BIT64) { u64::from(get32(&img, 1024 + S_FREE_BLOCKS_HI)) } else { 0 };
        let recorded = hi << 32 | u64::from(get32(&img, 1024 + S_FREE_BLOCKS_COUNT_LO));
        assert_eq!(detail(&allocation, "free blocks"), recorded.to_string(), "{name}");
        // Free space per our answer equals the free clusters, plus nothing else: the
        // volume minus used is exactly free clusters x cluster size.
        let free_bytes = img.len() as u64 - allocation.used.total();
        assert_eq!(free_bytes, recorded * sb.block_size(), "{name}: free bytes");
    }
}

#[test]
fn the_tail_and_the_bytes_before_the_first_data_block_are_copied() {
    // ext-ext2: 1 KiB blocks (block 0 is outside every bitmap) and a filesystem smaller than
    // its volume.
    let img = fixture("ext-ext2");
    let sb = parsed_sb(&img);
    assert_eq!(sb.first_data_block, 1);
    let fs_end = sb.blocks_count * 1024;
    assert!(fs_end < img.len() as u64, "the fixture has a tail");
    let allocation = analyze_bytes(&img).unwrap();
    assert!(allocation.used.contains_range(0..1024));
    assert!(allocation.used.contains_range(fs_end..img.len() as u64));
}

#[test]
fn names_match_the_filesystem_type() {
    for (name, expected) in [("ext-ext2", "ext2"), ("ext-ext3", "ext3"), ("ext-ext4", "ext4")] {
        assert_eq!(analyze_bytes(&fixture(name)).unwrap().filesystem, expected);
    }
}

#[test]
fn detect_needs_the_magic_and_enough_bytes() {
    let img = fixture("ext-ext4");
    assert!(detect(&img).unwrap());
    assert!(!detect(&img[..1081].to_vec()).unwrap(), "too small to hold the magic");
    assert!(detect(&img[..1082].to_vec()).unwrap());
    assert!(!detect(&vec![0u8; 4096]).unwrap());
}

// ---- hazards ----

#[test]
fn needs_recovery_with_an_external_journal_is_unsafe() {
    // The journal lives elsewhere: what it allocates cannot be known from this volume.
    let mut img = fixture("extbad-needs-recovery");
    set_sb32(&mut img, S_JOURNAL_INUM, 0);
    set_sb32(&mut img, S_JOURNAL_DEV, 0x0803);
    let reasons = analyze_bytes(&img).unwrap().unsafe_reasons;
    assert_eq!(reasons.len(), 2, "{reasons:?}");
    assert!(reasons[0].contains("journal needs recovery") && reasons[0].contains("it is on an external device"));
    assert!(reasons[1].contains("external device (device 0x803"), "{reasons:?}");
}

#[test]
fn a_filesystem_not_cleanly_unmounted_or_with_errors_is_unsafe() {
    let mut img = fixture("ext-ext2");
    set_sb16(&mut img, S_STATE, 0);
    let reasons = analyze_bytes(&img).unwrap().unsafe_reasons;
    assert!(reasons.iter().any(|r| r.contains("not cleanly unmounted")), "{reasons:?}");
    set_sb16(&mut img, S_STATE, STATE_VALID | STATE_ERROR);
    let reasons = analyze_bytes(&img).unwrap().unsafe_reasons;
    assert!(reasons.iter().any(|r| r.contains("recorded errors")), "{reasons:?}");
}

#[test]
fn an_external_journal_is_unsafe() {
    let mut img = fixture("ext-ext4");
    set_sb32(&mut img, S_JOURNAL_INUM, 0);
    set_sb32(&mut img, S_JOURNAL_DEV, 0x0803);
    let reasons = analyze_bytes(&img).unwrap().unsafe_reasons;
    assert!(reasons.iter().any(|r| r.contains("external device")), "{reasons:?}");
}

#[test]
fn a_journal_device_is_unsupported() {
    let mut img = fixture("ext-ext4");
    let incompat = get32(&img, 1024 + S_FEATURE_INCOMPAT);
    set_sb32(&mut img, S_FEATURE_INCOMPAT, incompat | incompat::JOURNAL_DEV);
    expect_error(&img, ErrorClass::Unsupported, &["superblock at byte 1120", "journal device"]);
}

#[test]
fn mmp_in_use_is_unsafe_and_a_bad_mmp_block_is_corrupt() {
    let mut img = fixture("ext-ext4");
    let sb = parsed_sb(&img);
    // Any block will do for the MMP block: the bitmaps do not change.
    let block = sb.blocks_count - 1;
    let at = (block << sb.block_bits) as usize;
    let incompat = get32(&img, 1024 + S_FEATURE_INCOMPAT);
    put32(&mut img, 1024 + S_MMP_BLOCK, block as u32);
    set_sb32(&mut img, S_FEATURE_INCOMPAT, incompat | incompat::MMP);
    put32(&mut img, at, 0x004D_4D50);
    put32(&mut img, at + 4, 0xFF4D_4D50);
    assert!(analyze_bytes(&img).unwrap().unsafe_reasons.is_empty());
    put32(&mut img, at + 4, 42);
    let reasons = analyze_bytes(&img).unwrap().unsafe_reasons;
    assert!(reasons.iter().any(|r| r.contains("MMP block")), "{reasons:?}");
    put32(&mut img, at, 0x1234);
    expect_error(&img, ErrorClass::Corrupt, &["MMP block at byte", "bad magic"]);
    set_sb32(&mut img, S_MMP_BLOCK, u32::MAX);
    expect_error(&img, ErrorClass::Corrupt, &["MMP block 4294967295 lies outside"]);
}

// ---- superblock fields ----

#[test]
fn truncated_volumes() {
    let img = fixture("ext-ext4");
    for len in [0, 1000, 1082, 2047] {
        expect_error(&img[..len], ErrorClass::Corrupt, &["superblock at byte 1024", "truncated"]);
    }
    // Half of the filesystem: the superblock is whole but the blocks are not all there.
    let sb = parsed_sb(&img);
    let half = (sb.blocks_count * sb.block_size() / 2) as usize;
    expect_error(&img[..half], ErrorClass::Corrupt, &["superblock at byte 1028", "truncated", "volume holds only"]);
}

#[test]
fn bad_magic() {
    let mut img = fixture("ext-ext4");
    img[1024 + S_MAGIC] ^= 0xFF;
    expect_error(&img, ErrorClass::Corrupt, &["superblock at byte 1080", "bad magic", "0xEF53"]);
}

#[test]
fn bad_superblock_checksum() {
    let mut img = fixture("ext-ext4");
    img[1024 + S_VOLUME_NAME] ^= 1;
    expect_error(&img, ErrorClass::Corrupt, &["superblock at byte 2044", "checksum"]);
}

#[test]
fn hostile_geometry_fields() {
    let base = fixture("ext-ext4");
    let cases: &[(usize, u32, &str)] = &[
        (S_LOG_BLOCK_SIZE, 7, "superblock at byte 1048: s_log_block_size 7"),
        (S_LOG_BLOCK_SIZE, u32::MAX, "s_log_block_size 4294967295"),
        (S_LOG_CLUSTER_SIZE, 3, "s_log_cluster_size 3 differs"),
        (S_BLOCKS_PER_GROUP, 0, "s_blocks_per_group 0"),
        (S_BLOCKS_PER_GROUP, u32::MAX, "s_blocks_per_group 4294967295"),
        (S_CLUSTERS_PER_GROUP, 0, "s_clusters_per_group 0"),
        (S_CLUSTERS_PER_GROUP, 1 << 20, "s_clusters_per_group 1048576 is out of range"),
        (S_INODES_PER_GROUP, 0, "s_inodes_per_group 0"),
        (S_INODES_PER_GROUP, u32::MAX, "s_inodes_per_group 4294967295"),
        (S_INODES_COUNT, 12345, "s_inodes_count 12345"),
        (S_BLOCKS_COUNT_LO, u32::MAX, "truncated"),
        (S_BLOCKS_COUNT_LO, 0, "s_first_data_block 0 is not below s_blocks_count 0"),
        (S_BLOCKS_COUNT_HI, u32::MAX, "truncated"),
        (S_FIRST_DATA_BLOCK, u32::MAX, "s_first_data_block 4294967295"),
    ];
    for &(field, value, needle) in cases {
        let mut img = base.clone();
        set_sb32(&mut img, field, value);
        let message = expect_error(&img, ErrorClass::Corrupt, &[needle]);
        assert!(message.starts_with("superblock at byte "), "{message}");
    }
    for (field, value, needle) in [
        (S_INODE_SIZE, 100u16, "inode size 100"),
        (S_INODE_SIZE, 8192, "inode size 8192"),
        (S_DESC_SIZE, 0, "descriptor size 0"),
        (S_DESC_SIZE, 48, "descriptor size 48"),
        (S_DESC_SIZE, 2048, "descriptor size 2048"),
    ] {
        let mut img = base.clone();
        set_sb16(&mut img, field, value);
        expect_error(&img, ErrorClass::Corrupt, &[needle]);
    }
}

#[test]
fn unknown_features_are_unsupported_but_unknown_compat_bits_are_not() {
    let base = fixture("ext-ext4");
    for (field, bit, needle) in [
        (S_FEATURE_INCOMPAT, 1u32 << 30, "FEATURE_I30"),
        (S_FEATURE_INCOMPAT, incompat::COMPRESSION, "compression"),
        (S_FEATURE_RO_COMPAT, 1 << 29, "FEATURE_R29"),
        (S_FEATURE_COMPAT, features::compat::LAZY_BG, "lazy_bg"),
    ] {
        let mut img = base.clone();
        let word = get32(&img, 1024 + field);
        set_sb32(&mut img, field, word | bit);
        expect_error(&img, ErrorClass::Unsupported, &[needle]);
    }
    let mut img = base.clone();
    let word = get32(&img, 1024 + S_FEATURE_COMPAT);
    set_sb32(&mut img, S_FEATURE_COMPAT, word | 1 << 31);
    let allocation = analyze_bytes(&img).unwrap();
    assert!(detail(&allocation, "features").contains("FEATURE_C31"));
    assert_eq!(allocation.used, analyze_bytes(&base).unwrap().used);
}

#[test]
fn unexpected_revision_or_first_data_block_is_unsupported() {
    let mut img = fixture("ext-ext4");
    set_sb32(&mut img, S_REV_LEVEL, 2);
    expect_error(&img, ErrorClass::Unsupported, &["revision 2"]);
    let mut img = fixture("ext-ext4");
    set_sb32(&mut img, S_FIRST_DATA_BLOCK, 1);
    expect_error(&img, ErrorClass::Unsupported, &["s_first_data_block 1 with 4096-byte blocks"]);
}

#[test]
fn hostile_first_meta_bg_does_not_escape() {
    // meta_bg places descriptor blocks by group; a huge s_first_meta_bg puts them all in the
    // primary table, where a big table would run past the volume.
    let mut img = fixture("ext-metabg");
    for value in [0, 1, 2, 3, 1000, u32::MAX] {
        set_sb32(&mut img, S_FIRST_META_BG, value);
        if let Ok(allocation) = analyze_bytes(&img) {
            assert_sane(&img, &allocation);
        }
    }
}

// ---- group descriptors ----

#[test]
fn a_descriptor_pointing_past_the_end() {
    let mut img = fixture("ext-ext4");
    let sb = parsed_sb(&img);
    let at = desc_offset(&img, 5);
    put32(&mut img, at + BG_BLOCK_BITMAP_LO, (sb.blocks_count + 5) as u32);
    fix_desc_checksum(&mut img, 5);
    expect_error(
        &img,
        ErrorClass::Corrupt,
        &[&format!("group descriptor 5 at byte {at}"), "block bitmap at block 4005 lies outside"],
    );
}

#[test]
fn a_descriptor_outside_its_group_without_flex_bg() {
    let mut img = fixture("ext-noflex");
    let at = desc_offset(&img, 2);
    put32(&mut img, at + BG_BLOCK_BITMAP_LO, 10);
    fix_desc_checksum(&mut img, 2);
    expect_error(&img, ErrorClass::Corrupt, &["group descriptor 2", "block bitmap at block 10 lies outside its group"]);
}

#[test]
fn bad_descriptor_checksums() {
    for name in ["ext-ext4", "ext-uninitbg", "ext-no64bit"] {
        let mut img = fixture(name);
        let at = desc_offset(&img, 1);
        img[at + BG_CHECKSUM] ^= 0x40;
        expect_error(
            &img,
            ErrorClass::Corrupt,
            &[&format!("group descriptor 1 at byte {}", at + BG_CHECKSUM), "checksum"],
        );
    }
}

#[test]
fn a_free_count_that_disagrees_with_the_bitmap() {
    let mut img = fixture("ext-ext4");
    let at = desc_offset(&img, 0);
    img[at + crate::group_desc::BG_FREE_BLOCKS_COUNT_LO] ^= 1;
    fix_desc_checksum(&mut img, 0);
    expect_error(
        &img,
        ErrorClass::Corrupt,
        &[&format!("group descriptor 0 at byte {}", at + 0xC), "its block bitmap has"],
    );
}

#[test]
fn a_forged_block_uninit_flag_is_caught_by_the_free_count() {
    // Group 0 of ext-ext4 is initialised and holds files; claiming BLOCK_UNINIT (with a valid
    // checksum) would make its files' blocks free, but the count no longer matches.
    let mut img = fixture("ext-ext4");
    let at = desc_offset(&img, 0);
    let flags = u16::from_le_bytes([img[at + BG_FLAGS], img[at + BG_FLAGS + 1]]);
    put16(&mut img, at + BG_FLAGS, flags | BLOCK_UNINIT);
    fix_desc_checksum(&mut img, 0);
    expect_error(&img, ErrorClass::Corrupt, &["group descriptor 0", "BLOCK_UNINIT"]);
}

#[test]
fn block_uninit_without_descriptor_checksums_is_ignored() {
    // ext2 has no descriptor checksums: e2fsprogs reads the bitmap whatever the flag says.
    let mut img = fixture("ext-ext2");
    let before = analyze_bytes(&img).unwrap();
    for group in 0..3 {
        let at = desc_offset(&img, group);
        put16(&mut img, at + BG_FLAGS, BLOCK_UNINIT);
    }
    assert_eq!(analyze_bytes(&img).unwrap().used, before.used);
}

#[test]
fn block_uninit_groups_ignore_the_garbage_in_their_bitmap_blocks() {
    // In ext-ext4, groups 5 and 6 are BLOCK_UNINIT and their on-disk bitmap blocks still hold the
    // FREE pattern: trashing them further changes nothing.
    let mut img = fixture("ext-ext4");
    let before = analyze_bytes(&img).unwrap();
    let sb = parsed_sb(&img);
    let mut table = DescriptorTable::new(&img, &sb);
    let uninit: Vec<u64> = (0..sb.groups).filter(|&g| table.get(g).unwrap().flags & BLOCK_UNINIT != 0).collect();
    assert!(uninit.len() >= 2, "the fixture should have BLOCK_UNINIT groups: {uninit:?}");
    let bitmaps: Vec<u64> = uninit.iter().map(|&g| table.get(g).unwrap().block_bitmap).collect();
    let first_bitmap = (bitmaps[0] << sb.block_bits) as usize;
    assert!(img[first_bitmap..first_bitmap + 16].starts_with(b"FREE lba="), "the uninit bitmap block holds the stamp");
    for block in bitmaps {
        let at = (block << sb.block_bits) as usize;
        img[at..at + 4096].fill(0);
    }
    assert_eq!(analyze_bytes(&img).unwrap().used, before.used);
}

#[test]
fn bad_block_bitmap_checksum() {
    let mut img = fixture("ext-ext4");
    let sb = parsed_sb(&img);
    let mut table = DescriptorTable::new(&img, &sb);
    let bitmap = table.get(0).unwrap().block_bitmap;
    let at = (bitmap << sb.block_bits) as usize;
    // A bit past the group's clusters is outside the checksum: flip one inside.
    img[at + 10] ^= 0x10;
    expect_error(&img, ErrorClass::Corrupt, &[&format!("block bitmap of group 0 at byte {at}"), "checksum"]);
}

// ---- robustness ----

/// Applies four mutations to every byte in `range` of `img`, each with and without re-sealing
/// the superblock checksum (and descriptor `reseal_descriptor`'s), and checks that analysis
/// answers sanely or fails cleanly. Mutates in place and restores, to keep it fast.
fn sweep(img: &mut [u8], range: std::ops::Range<usize>, reseal_descriptor: Option<u64>) -> (usize, usize) {
    let (mut ok, mut failed) = (0, 0);
    let desc_at = reseal_descriptor.map(|group| desc_offset(img, group));
    let saved_sb = img[1024..2048].to_vec();
    let saved_desc = desc_at.map(|at| img[at..at + 64].to_vec());
    for at in range {
        for mutate in [|b: u8| b ^ 0xFF, |b: u8| b ^ 0x01, |_| 0x00, |_| 0x80] {
            let original = img[at];
            if mutate(original) == original {
                continue;
            }
            for reseal in [false, true] {
                img[at] = mutate(original);
                if reseal {
                    fix_sb_checksum(img);
                    if let (Some(group), Ok(_)) =
                        (reseal_descriptor, Superblock::parse(&sb_bytes(img), img.len() as u64))
                    {
                        fix_desc_checksum(img, group);
                    }
                }
                match analyze_bytes(img) {
                    Ok(allocation) => {
                        assert_sane(img, &allocation);
                        ok += 1;
                    }
                    Err(error) => {
                        assert!(!error.to_string().contains('\n'));
                        failed += 1;
                    }
                }
                img[at] = original;
                img[1024..2048].copy_from_slice(&saved_sb);
                if let (Some(desc_at), Some(saved)) = (desc_at, &saved_desc) {
                    img[desc_at..desc_at + 64].copy_from_slice(saved);
                }
            }
        }
    }
    (ok, failed)
}

#[test]
fn robustness_every_superblock_byte() {
    for name in ["ext-ext4", "ext-ext2", "ext-bigalloc1k", "ext-metabg"] {
        let mut img = fixture(name);
        let (ok, failed) = sweep(&mut img, 1024..2048, None);
        assert!(ok > 0 && failed > 0, "{name}: {ok} ok, {failed} failed");
    }
}

#[test]
fn robustness_every_descriptor_byte() {
    for name in ["ext-ext4", "ext-ext2", "ext-uninitbg", "ext-no64bit"] {
        let mut img = fixture(name);
        let sb = parsed_sb(&img);
        let at = desc_offset(&img, 0);
        let len = (sb.desc_size * sb.groups.min(sb.descs_per_block())) as usize;
        for group in [0, 1] {
            let start = desc_offset(&img, group);
            sweep(&mut img, start..start + sb.desc_size as usize, Some(group));
        }
        sweep(&mut img, at..at + len, None);
    }
}

#[test]
fn robustness_block_bitmap_bytes() {
    let mut img = fixture("ext-ext2");
    let sb = parsed_sb(&img);
    let mut table = DescriptorTable::new(&img, &sb);
    let at = (table.get(1).unwrap().block_bitmap << sb.block_bits) as usize;
    // Without checksums, a flipped bitmap bit is caught by the free count.
    let (ok, failed) = sweep(&mut img, at..at + 64, None);
    assert_eq!(ok, 0, "every bitmap change must be caught by the free count");
    assert!(failed > 0);
}

#[test]
fn metadata_stays_used_even_where_its_bitmap_bit_is_clear() {
    // ext-ext2 (no checksums): clear group 1's bit for its first inode table block and raise
    // the free count to match. The bitmap alone would now zero that block; the descriptor
    // says it holds inodes, so it is still copied.
    let mut img = fixture("ext-ext2");
    let sb = parsed_sb(&img);
    let mut table = DescriptorTable::new(&img, &sb);
    let desc = table.get(1).unwrap();
    let bit = desc.inode_table - sb.group_first_block(1);
    let at = (desc.block_bitmap << sb.block_bits) as usize + (bit / 8) as usize;
    assert!(img[at] & 1 << (bit % 8) != 0, "the inode table block is marked used");
    img[at] &= !(1 << (bit % 8));
    let count_at = desc_offset(&img, 1) + crate::group_desc::BG_FREE_BLOCKS_COUNT_LO;
    let count = u16::from_le_bytes([img[count_at], img[count_at + 1]]);
    put16(&mut img, count_at, count + 1);
    let allocation = analyze_bytes(&img).unwrap();
    let block = desc.inode_table << sb.block_bits;
    assert!(allocation.used.contains_range(block..block + sb.block_size()));
}
