//! Unit tests on the committed fixtures (made by mkfs.btrfs, fixtures/gen/btrfs.sh), one
//! corrupted field at a time, each structure resealed with its checksum so that the check under
//! test is the one that fires. The oracle comparisons (btrfs check, mounts, partclone) live in
//! tests/btrfs.rs.

#![allow(clippy::indexing_slicing)] // test code on images it loaded itself

use super::*;
use crate::checksum::CsumType;
use crate::superblock::MAX_LEVEL;
use crate::tree::{BLOCK_GROUP_ITEM, Block, ROOT_ITEM, Reader};
use imgstream_volume::{Classify, ErrorClass, RangeSet};
use std::process::Command;

const SB: usize = SUPER_OFFSET as usize;

fn fixture(name: &str) -> Vec<u8> {
    let path = format!("{}/../../fixtures/{name}.img.zst", env!("CARGO_MANIFEST_DIR"));
    let output = Command::new("zstd").args(["-q", "-d", "-c", &path]).output().expect("run zstd");
    assert!(output.status.success(), "zstd -d {path}: {}", String::from_utf8_lossy(&output.stderr));
    output.stdout
}

fn put64(image: &mut [u8], at: usize, value: u64) {
    image[at..at + 8].copy_from_slice(&value.to_le_bytes());
}

fn superblock(image: &[u8]) -> Superblock {
    Superblock::parse(&image[SB..SB + SUPER_LEN], image.len() as u64).unwrap()
}

/// Rewrites the checksum of the structure of `len` bytes at `at` (the fixtures use crc32c).
fn reseal(image: &mut [u8], at: usize, len: usize) {
    let csum = CsumType::Crc32c.compute(&image[at..at + len]);
    image[at..at + csum.len()].copy_from_slice(&csum);
}

fn reseal_superblock(image: &mut [u8]) {
    reseal(image, SB, SUPER_LEN);
}

fn error_of(image: &[u8]) -> Error {
    match analyze(&image) {
        Ok(allocation) => panic!("expected an error, got {allocation:?}"),
        Err(error) => error,
    }
}

fn assert_error(image: &[u8], class: ErrorClass, message: &str) {
    let error = error_of(image);
    assert_eq!(error.class(), class, "{error}");
    assert!(error.to_string().contains(message), "{error}\nshould contain: {message}");
}

/// Reads the leaf of tree `objectid` (the fixtures' trees are single leaves) through the crate.
fn tree_leaf(image: &[u8], objectid: u64) -> Block {
    let sb = superblock(image);
    let (chunks, _) = refine::read_chunk_tree(&image, &sb).unwrap();
    let reader = Reader { volume: &image, superblock: &sb, chunks: &chunks };
    let root_tree = reader.read("root tree", sb.root.logical, 0).unwrap();
    let root_item = root_tree.items().find(|i| i.key.item_type == ROOT_ITEM && i.key.objectid == objectid).unwrap();
    reader.read("tree", u64::from_le_bytes(root_item.data[176..184].try_into().unwrap()), 0).unwrap()
}

#[test]
fn fixtures_parse_with_every_checksum_type() {
    for (name, csum) in [
        ("btrfs-small", "crc32c"),
        ("btrfs-xxhash", "xxhash64"),
        ("btrfs-sha256", "sha256"),
        ("btrfs-blake2", "blake2b"),
    ] {
        let image = fixture(name);
        assert!(detect(&image).unwrap());
        let allocation = analyze(&image).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(allocation.filesystem, "btrfs");
        assert_eq!(allocation.unit, 4096);
        assert_eq!(allocation.map_ranges, RangeSet::from_range(SUPER_OFFSET..SUPER_OFFSET + SUPER_LEN as u64));
        assert!(allocation.warnings.is_empty() && allocation.unsafe_reasons.is_empty(), "{allocation:?}");
        let detail = |label: &str| allocation.details.iter().find(|(l, _)| l == label).unwrap().1.clone();
        assert_eq!(detail("checksum"), csum);
        let groups = detail("refined block groups");
        let (refined, rest) = groups.split_once(" of ").unwrap();
        let total = rest.split_whitespace().next().unwrap();
        assert_eq!(refined, total, "{name}: {groups}");
        let size = image.len() as u64;
        assert!(allocation.used.contains_range(0..1 << 20), "{name}: the first MiB");
        assert!(allocation.used.contains_range(64 << 20..(64 << 20) + 4096), "{name}: the 64 MiB mirror");
        // The first MiB, the system chunks (16 MiB with DUP), a few tree blocks and files.
        assert!(allocation.used.total() < size / 5, "{name}: {} bytes used", allocation.used.total());
        // Every tree block the crate reads is kept: the superblock's roots, on every copy.
        let sb = superblock(&image);
        let (chunks, _) = refine::read_chunk_tree(&image, &sb).unwrap();
        for root in [sb.root, sb.chunk_root] {
            let chunk = chunks.find(root.logical).unwrap();
            for copy in chunk.copies_on(sb.devid, root.logical..root.logical + u64::from(sb.nodesize)).unwrap() {
                assert!(allocation.used.contains_range(copy), "{name}: root at logical {}", root.logical);
            }
        }
    }
}

#[test]
fn superblock_corruption_is_named_with_its_offset() {
    let good = fixture("btrfs-small");
    let mut image = good.clone();
    image[SB + 0x40] = b'X';
    assert!(!detect(&image).unwrap());
    assert_error(&image, ErrorClass::Corrupt, "superblock at byte 65600: magic is \"XBHRfS_M\"");

    let mut image = good.clone();
    image[SB + 0x200] ^= 1;
    assert_error(&image, ErrorClass::Corrupt, "superblock at byte 65536: crc32c checksum does not match");

    let mut image = good.clone();
    image[SB + 0xc4] = 9; // csum_type
    assert_error(&image, ErrorClass::Unsupported, "checksum type 9 is not one of");

    let cases: [(usize, u64, ErrorClass, &str); 7] = [
        (0xbc, 1 << 12 | 0x341, ErrorClass::Unsupported, "incompat feature ZONED"),
        (0xbc, 1 << 40 | 0x341, ErrorClass::Unsupported, "unknown incompat flags 0x10000000000"),
        (0xb4, 1 << 9, ErrorClass::Unsupported, "unknown compat_ro flags 0x200"),
        (0x38, 1 << 32 | 1, ErrorClass::Unsupported, "seed device"),
        (0x30, 0x20000, ErrorClass::Corrupt, "bytenr is 131072"),
        (0x88, 0, ErrorClass::Corrupt, "num_devices is 0"),
        (0xc9 + 8, 1 << 40, ErrorClass::Corrupt, "dev_item.total_bytes 1099511627776 is past the end"),
    ];
    for (field, value, class, message) in cases {
        let mut image = good.clone();
        put64(&mut image, SB + field, value);
        reseal_superblock(&mut image);
        assert_error(&image, class, message);
    }
    let mut image = good.clone();
    image[SB + 0x94..SB + 0x98].copy_from_slice(&3000u32.to_le_bytes()); // nodesize
    reseal_superblock(&mut image);
    assert_error(&image, ErrorClass::Corrupt, "superblock at byte 65684: nodesize 3000");
    let mut image = good.clone();
    image[SB + 0xc6] = MAX_LEVEL; // root_level
    reseal_superblock(&mut image);
    assert_error(&image, ErrorClass::Corrupt, "tree level 8 is not below 8");

    // Too short for a superblock, and truncated before the device's end.
    assert_error(&good[..SB + 100], ErrorClass::Corrupt, "the volume holds only");
    assert_error(&good[..good.len() / 2], ErrorClass::Corrupt, "truncated image?");
}

#[test]
fn tree_pointers_outside_chunks_or_past_the_device_are_corrupt() {
    let good = fixture("btrfs-small");
    let mut image = good.clone();
    put64(&mut image, SB + 0x50, 7 << 40); // root: no chunk there
    reseal_superblock(&mut image);
    assert_error(
        &image,
        ErrorClass::Corrupt,
        "root tree block (logical 7696581394432) at byte 7696581394432: the address lies in no chunk",
    );

    // The system chunk's stripes moved past the end of the device: the chunk tree cannot be read.
    let mut image = good.clone();
    let sb = superblock(&image);
    let array = SB + superblock::SYS_CHUNK_ARRAY;
    let stripes = u16::from_le_bytes(image[array + 17 + 44..array + 17 + 46].try_into().unwrap());
    for i in 0..usize::from(stripes) {
        put64(&mut image, array + 17 + 48 + 32 * i + 8, 1 << 40);
    }
    reseal_superblock(&mut image);
    assert_error(&image, ErrorClass::Corrupt, &format!("chunk tree block (logical {})", sb.chunk_root.logical));
    assert_error(&image, ErrorClass::Corrupt, "past the end of the device");

    // A stripe count that does not fit the item.
    let mut image = good.clone();
    image[array + 17 + 44..array + 17 + 46].copy_from_slice(&60u16.to_le_bytes());
    reseal_superblock(&mut image);
    assert_error(&image, ErrorClass::Corrupt, "60 stripes need 1968 bytes");
}

#[test]
fn a_chunk_tree_that_points_at_itself_ends_with_an_error() {
    let mut image = fixture("btrfs-small");
    let sb = superblock(&image);
    let (chunks, _) = refine::read_chunk_tree(&image, &sb).unwrap();
    let root = sb.chunk_root.logical;
    let nodesize = sb.nodesize as usize;
    // The chunk tree's only leaf becomes a level-1 node whose one pointer is itself, on every copy.
    for copy in chunks.find(root).unwrap().copies_on(sb.devid, root..root + nodesize as u64).unwrap() {
        let at = copy.start as usize;
        image[at + 0x60..at + 0x64].copy_from_slice(&1u32.to_le_bytes()); // nritems
        image[at + 0x64] = 1; // level
        put64(&mut image, at + 101 + 17, root);
        reseal(&mut image, at, nodesize);
    }
    image[SB + 0xc7] = 1; // chunk_root_level
    reseal_superblock(&mut image);
    // The walk skips the block it has seen: no chunk, no DEV_ITEM is found, and that is named.
    assert_error(&image, ErrorClass::Corrupt, "the DEV_ITEM of devid 1 in the chunk tree is missing");
}

#[test]
fn a_bad_first_copy_of_a_dup_block_is_read_from_the_second() {
    let mut image = fixture("btrfs-small");
    let expected = analyze(&image).unwrap();
    let leaf = tree_leaf(&image, 2); // extent tree
    image[leaf.physical as usize + 200] ^= 0xff;
    assert_eq!(analyze(&image).unwrap(), expected);
    // Both copies bad: the first one's problem is reported.
    let sb = superblock(&image);
    let (chunks, _) = refine::read_chunk_tree(&image, &sb).unwrap();
    for copy in chunks.find(sb.root.logical).unwrap().copies_on(sb.devid, sb.root.logical..sb.root.logical + 1).unwrap()
    {
        image[copy.start as usize + 0x30] ^= 1; // bytenr
    }
    assert_error(&image, ErrorClass::Corrupt, "checksum does not match its content");
}

#[test]
fn a_block_group_the_extent_tree_does_not_add_up_to_is_kept_whole() {
    let mut image = fixture("btrfs-xxhash"); // SINGLE metadata: one copy of each block
    let good = analyze(&image).unwrap();
    let leaf = tree_leaf(&image, 2);
    // A data or metadata block group: system ones are kept whole anyway.
    let is_system = |data: &[u8]| u64::from_le_bytes(data[16..24].try_into().unwrap()) & 2 != 0;
    let group = leaf.items().find(|i| i.key.item_type == BLOCK_GROUP_ITEM && !is_system(i.data)).unwrap();
    let (logical, length, at) = (group.key.objectid, group.key.offset, group.at as usize);
    let used = u64::from_le_bytes(image[at..at + 8].try_into().unwrap());
    put64(&mut image, at, used + 4096);
    let nodesize = superblock(&image).nodesize as usize;
    let physical = leaf.physical as usize;
    let csum = CsumType::Xxhash64.compute(&image[physical..physical + nodesize]);
    image[physical..physical + 8].copy_from_slice(&csum);

    let allocation = analyze(&image).unwrap();
    assert!(allocation.warnings.iter().any(|w| w.contains(&format!("(logical {logical})"))), "{allocation:?}");
    assert!(allocation.used.total() > good.used.total());
    let sb = superblock(&image);
    let (chunks, _) = refine::read_chunk_tree(&image, &sb).unwrap();
    for copy in chunks.get(logical).unwrap().copies_on(sb.devid, logical..logical + length).unwrap() {
        assert!(allocation.used.contains_range(copy), "block group {logical} not kept whole");
    }
}

#[test]
fn a_second_device_is_warned_and_a_foreign_devid_refused() {
    let good = fixture("btrfs-small");
    let mut image = good.clone();
    put64(&mut image, SB + 0x88, 2); // num_devices
    reseal_superblock(&mut image);
    let allocation = analyze(&image).unwrap();
    assert!(allocation.warnings.iter().any(|w| w.contains("spans 2 devices")), "{allocation:?}");

    let mut image = good.clone();
    put64(&mut image, SB + 0xc9, 2); // dev_item.devid
    reseal_superblock(&mut image);
    // Another devid's device holds no copy of the chunk tree: copied raw, not guessed at.
    assert_error(&image, ErrorClass::Unsupported, "no copy of the block lies on this device (devid 2)");
    let mut image = good;
    image[SB + 0xc9 + 66] ^= 1; // dev_item.uuid
    reseal_superblock(&mut image);
    assert_error(&image, ErrorClass::Corrupt, "is another device's");
}

#[test]
fn error_flag_is_unsafe() {
    let mut image = fixture("btrfs-small");
    image[SB + 0x38] |= 1 << 2;
    reseal_superblock(&mut image);
    let allocation = analyze(&image).unwrap();
    assert!(allocation.unsafe_reasons.iter().any(|r| r.contains("ERROR flag")), "{allocation:?}");
}

/// A chunk item: `length` bytes, RAID0 (`sub_stripes` 1) or RAID10 (2), 64 KiB pieces, with
/// `devids` for its stripes, stripe i at device byte (i + 1) MiB.
fn striped_chunk(length: u64, raid10: bool, devids: &[u64]) -> chunks::Chunk {
    let mut item = vec![0u8; chunks::CHUNK_LEN + 32 * devids.len()];
    item[0..8].copy_from_slice(&length.to_le_bytes());
    item[16..24].copy_from_slice(&65536u64.to_le_bytes());
    let flags: u64 = 1 | if raid10 { 1 << 6 } else { 1 << 3 };
    item[24..32].copy_from_slice(&flags.to_le_bytes());
    item[44..46].copy_from_slice(&(devids.len() as u16).to_le_bytes());
    item[46..48].copy_from_slice(&(if raid10 { 2u16 } else { 1 }).to_le_bytes());
    for (i, devid) in devids.iter().enumerate() {
        put64(&mut item, 48 + 32 * i, *devid);
        put64(&mut item, 56 + 32 * i, (i as u64 + 1) << 20);
    }
    chunks::Chunk::parse(1 << 30, &item, 0, 4096).unwrap().0
}

#[test]
fn raid0_and_raid10_map_as_the_kernel_stripes_them() {
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let mut next = |bound: u64| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed % bound
    };
    let piece = 65536u64;
    for (raid10, devids) in
        [(false, vec![1, 2]), (false, vec![1, 2, 1]), (true, vec![1, 2, 3, 4]), (true, vec![2, 1, 1, 3, 4, 2])]
    {
        let copies = if raid10 { 2 } else { 1 };
        let groups = devids.len() as u64 / copies;
        let chunk = striped_chunk(piece * groups * 40, raid10, &devids);
        assert!(chunk.is_mapped());
        for _ in 0..200 {
            let start = next(chunk.length);
            let end = start + 1 + next(chunk.length - start);
            for devid in 1..=4 {
                // The kernel's way, one piece at a time (btrfs_map_block).
                let mut expected = RangeSet::new();
                let mut offset = start;
                while offset < end {
                    let p = offset / piece;
                    let piece_end = end.min((p + 1) * piece);
                    for k in 0..copies {
                        let index = ((p % groups) * copies + k) as usize;
                        if devids[index] == devid {
                            let at = ((index as u64 + 1) << 20) + p / groups * piece + offset % piece;
                            expected.insert(at..at + piece_end - offset);
                        }
                    }
                    offset = piece_end;
                }
                let mut actual = RangeSet::new();
                for range in chunk.copies_on(devid, chunk.logical + start..chunk.logical + end).unwrap() {
                    actual.insert(range);
                }
                assert_eq!(actual, expected, "{devids:?} raid10={raid10} devid {devid}, logical {start}..{end}");
            }
        }
    }
    // Not whole rows of pieces: not mapped (kept whole).
    assert!(!striped_chunk(piece * 3, false, &[1, 2]).is_mapped());
}
