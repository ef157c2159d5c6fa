//! Tests on the committed fixtures (fixtures/gen/xfs.sh, made with the real mkfs.xfs and
//! xfs_repair and aged through a loop mount), loaded into memory: one field corrupted at a time,
//! each giving a clear error naming the structure and its byte offset (or a hazard), never a
//! panic. The byte-for-byte comparison with xfs_db's free extents is in tests/xfs.rs.

#![allow(clippy::indexing_slicing)] // tests index known fixtures; a panic is a failure

use super::*;
use crate::agf::{
    AGF_BNO_LEVEL, AGF_BNO_ROOT, AGF_CRC, AGF_FLCOUNT, AGF_FLFIRST, AGF_FLLAST, AGF_FREEBLKS, AGF_LENGTH, AGF_MAGICNUM,
    AGF_SEQNO,
};
use crate::bnobt::{BB_CRC, BB_NUMRECS};
use crate::superblock::*;
use imgstream_volume::{Classify, ErrorClass};
use std::path::PathBuf;
use std::process::Command;

/// Decompresses `fixtures/<name>.img.zst` into memory.
fn fixture(name: &str) -> Vec<u8> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(format!("../../fixtures/{name}.img.zst"));
    let output = Command::new("zstd").args(["-q", "-d", "-c"]).arg(&path).output().expect("run zstd");
    assert!(output.status.success(), "zstd -d {}: {}", path.display(), String::from_utf8_lossy(&output.stderr));
    output.stdout
}

fn get32(img: &[u8], offset: usize) -> u32 {
    u32::from_be_bytes(img[offset..offset + 4].try_into().unwrap())
}

fn put32(img: &mut [u8], offset: usize, value: u32) {
    img[offset..offset + 4].copy_from_slice(&value.to_be_bytes());
}

fn put64(img: &mut [u8], offset: usize, value: u64) {
    img[offset..offset + 8].copy_from_slice(&value.to_be_bytes());
}

/// Re-seals the v5 checksum of the `len`-byte structure at `start`, so that the check under test
/// is the field's, not the checksum's.
fn seal(img: &mut [u8], start: usize, len: usize, crc_field: usize) {
    let sum = checksum::compute(&img[start..start + len], crc_field);
    img[start + crc_field..start + crc_field + 4].copy_from_slice(&sum.to_le_bytes());
}

/// The fixture's geometry, read back independently of the crate: (block size, AG blocks).
fn geometry(img: &[u8]) -> (usize, usize) {
    (get32(img, SB_BLOCKSIZE) as usize, get32(img, SB_AGBLOCKS) as usize)
}

/// Byte offset of AG `agno`'s AGF (512-byte sectors in every fixture).
fn agf_at(img: &[u8], agno: usize) -> usize {
    let (block, ag_blocks) = geometry(img);
    agno * ag_blocks * block + 512
}

/// Byte offset of the root block of AG `agno`'s by-block free-space B+tree.
fn bno_root_at(img: &[u8], agno: usize) -> usize {
    let (block, ag_blocks) = geometry(img);
    (agno * ag_blocks + get32(img, agf_at(img, agno) + AGF_BNO_ROOT) as usize) * block
}

fn analyze_bytes(img: &[u8]) -> Result<Allocation, Error> {
    analyze(&img.to_vec())
}

/// Asserts that analysing `img` fails with `class`, naming `structure` at byte `offset`.
fn assert_error(img: &[u8], class: ErrorClass, structure: &str, offset: usize, problem: &str) {
    let error = analyze_bytes(img).expect_err("the corruption must be noticed");
    let message = error.to_string();
    assert_eq!(error.class(), class, "{message}");
    assert!(message.starts_with(&format!("{structure} at byte {offset}: ")), "{message}");
    assert!(message.contains(problem), "{message}");
    assert!(!message.contains('\n'), "{message}");
}

fn set_sb32(img: &mut [u8], field: usize, value: u32) {
    put32(img, field, value);
    seal(img, 0, 512, SB_CRC);
}

fn set_agf32(img: &mut [u8], agno: usize, field: usize, value: u32) {
    let at = agf_at(img, agno);
    put32(img, at + field, value);
    seal(img, at, 512, AGF_CRC);
}

#[test]
fn clean_fixtures_keep_their_headers_and_log_and_free_most_of_the_rest() {
    for name in ["xfs-v5", "xfs-v4-1k"] {
        let img = fixture(name);
        let allocation = analyze_bytes(&img).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(allocation.unsafe_reasons.is_empty(), "{name}: {:?}", allocation.unsafe_reasons);
        let (block, ag_blocks) = geometry(&img);
        assert_eq!(allocation.unit, block as u64);
        for agno in 0..2 {
            let ag = (agno * ag_blocks * block) as u64;
            assert!(allocation.used.contains_range(ag..ag + 2048), "{name}: AG {agno}'s headers are not kept");
        }
        assert!(allocation.used.total() < img.len() as u64 / 3, "{name}: {} bytes used", allocation.used.total());
        let log = allocation.details.iter().find(|(k, _)| k == "log").unwrap();
        assert_eq!(log.1, "clean");
    }
}

#[test]
fn a_log_copied_while_mounted_is_dirty_and_keeps_the_free_list() {
    let img = fixture("xfsbad-dirty");
    let allocation = analyze_bytes(&img).unwrap();
    assert_eq!(allocation.unsafe_reasons.len(), 1, "{:?}", allocation.unsafe_reasons);
    assert!(allocation.unsafe_reasons[0].starts_with("XFS log is dirty ("), "{:?}", allocation.unsafe_reasons);
    let blocks = free_list(&img, 0);
    assert!(!blocks.is_empty(), "the fixture's AG 0 has an empty free list");
    for range in blocks {
        assert!(allocation.used.contains_range(range.clone()), "free list block {range:?} zeroed with a dirty log");
    }
}

/// Byte offset of AG `agno`'s AGFL (512-byte sectors in every fixture).
fn agfl_at(img: &[u8], agno: usize) -> usize {
    agf_at(img, agno) + 2 * 512
}

/// The byte offset of the first AGFL slot: after the 36-byte header on v5, none on v4.
fn agfl_slots_at(img: &[u8], agno: usize) -> usize {
    agfl_at(img, agno) + if img[SB_VERSIONNUM + 1] & 0xf == 5 { 36 } else { 0 }
}

/// The number of slots of an AGFL ring.
fn agfl_slot_count(img: &[u8]) -> usize {
    (agfl_at(img, 0) + 512 - agfl_slots_at(img, 0)) / 4
}

/// The blocks (AG-relative) on AG `agno`'s free list, read independently of the crate.
fn free_list_agbnos(img: &[u8], agno: usize) -> Vec<u32> {
    let (agf, slots_at, slot_count) = (agf_at(img, agno), agfl_slots_at(img, agno), agfl_slot_count(img));
    let (first, count) = (get32(img, agf + AGF_FLFIRST) as usize, get32(img, agf + AGF_FLCOUNT) as usize);
    (0..count).map(|i| get32(img, slots_at + 4 * ((first + i) % slot_count))).collect()
}

/// The byte ranges of the blocks on AG `agno`'s free list.
fn free_list(img: &[u8], agno: usize) -> Vec<std::ops::Range<u64>> {
    let (block, ag_blocks) = geometry(img);
    let start = |agbno: u32| ((agno * ag_blocks + agbno as usize) * block) as u64;
    free_list_agbnos(img, agno).into_iter().map(|agbno| start(agbno)..start(agbno + 1)).collect()
}

/// Writes `value` into AG `agno`'s AGFL slot `slot` and re-seals it on v5.
fn set_agfl_slot(img: &mut [u8], agno: usize, slot: usize, value: u32) {
    put32(img, agfl_slots_at(img, agno) + 4 * slot, value);
    if agfl_slots_at(img, agno) != agfl_at(img, agno) {
        seal(img, agfl_at(img, agno), 512, 32);
    }
}

#[test]
fn free_list_blocks_are_free_with_a_clean_log_even_when_the_ring_wraps() {
    for name in ["xfs-v5", "xfs-v4-1k"] {
        let img = fixture(name);
        let allocation = analyze_bytes(&img).unwrap();
        let blocks = free_list(&img, 1);
        assert!(blocks.len() >= 2, "{name}: AG 1's free list is too short to wrap");
        for range in &blocks {
            assert!(!allocation.used.contains(range.start), "{name}: free list block {range:?} kept");
        }

        // The same blocks, moved so that the ring wraps past its last slot; every other slot
        // holds NULLAGBNO, which the crate would refuse if it read it.
        let slot_count = agfl_slot_count(&img);
        let agbnos = free_list_agbnos(&img, 1);
        let mut wrapped = img.clone();
        for slot in 0..slot_count {
            set_agfl_slot(&mut wrapped, 1, slot, u32::MAX);
        }
        let first = slot_count - 1;
        for (i, agbno) in agbnos.iter().enumerate() {
            set_agfl_slot(&mut wrapped, 1, (first + i) % slot_count, *agbno);
        }
        set_agf32(&mut wrapped, 1, AGF_FLFIRST, first as u32);
        set_agf32(&mut wrapped, 1, AGF_FLLAST, ((first + agbnos.len() - 1) % slot_count) as u32);
        let wrapped_allocation = analyze_bytes(&wrapped).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(wrapped_allocation.used, allocation.used, "{name}");
        assert!(wrapped_allocation.warnings.is_empty(), "{name}: {:?}", wrapped_allocation.warnings);
    }
}

#[test]
fn free_list_corruptions_are_named_and_a_ring_of_another_size_is_kept() {
    let img = fixture("xfs-v5");
    let (at, slots_at) = (agfl_at(&img, 1), agfl_slots_at(&img, 1));
    let agfl = "AGFL of AG 1";
    let first = get32(&img, agf_at(&img, 1) + AGF_FLFIRST) as usize;
    let ag_length = get32(&img, agf_at(&img, 1) + AGF_LENGTH);
    for (agbno, problem) in [(0, "free list block 0 is outside the AG"), (ag_length, "is outside the AG")] {
        let mut bad = img.clone();
        set_agfl_slot(&mut bad, 1, first, agbno);
        assert_error(&bad, ErrorClass::Corrupt, agfl, slots_at + 4 * first, problem);
    }
    // A free list block inside the internal log.
    let (block, ag_blocks) = geometry(&img);
    let log_block = log_bytes(&img).start / block;
    let (log_ag, log_agbno) = (log_block / ag_blocks, (log_block % ag_blocks) as u32);
    let log_first = get32(&img, agf_at(&img, log_ag) + AGF_FLFIRST) as usize;
    let mut bad = img.clone();
    set_agfl_slot(&mut bad, log_ag, log_first, log_agbno);
    assert_error(&bad, ErrorClass::Corrupt, "superblock", SB_LOGSTART, "overlaps free space");

    let mut bad = img.clone();
    put32(&mut bad, at, 0);
    seal(&mut bad, at, 512, 32);
    assert_error(&bad, ErrorClass::Corrupt, agfl, at, "bad magic");
    let mut bad = img.clone();
    put32(&mut bad, at + 4, 0);
    seal(&mut bad, at, 512, 32);
    assert_error(&bad, ErrorClass::Corrupt, agfl, at + 4, "sequence number 0");
    let mut bad = img.clone();
    bad[at + 500] ^= 1;
    assert_error(&bad, ErrorClass::Corrupt, agfl, at + 32, "checksum");

    // First, last and count that only fit a ring of another size (the pre-4.5 header quirk):
    // the blocks are kept, with a warning.
    let mut odd = img.clone();
    let last = get32(&img, agf_at(&img, 1) + AGF_FLLAST);
    set_agf32(&mut odd, 1, AGF_FLLAST, last + 1);
    let allocation = analyze_bytes(&odd).unwrap();
    assert!(allocation.warnings.len() == 1 && allocation.warnings[0].contains("AG 1"), "{:?}", allocation.warnings);
    for range in free_list(&img, 1) {
        assert!(allocation.used.contains_range(range.clone()), "free list block {range:?} zeroed");
    }
}

/// The byte range of the fixture's internal log.
fn log_bytes(img: &[u8]) -> std::ops::Range<usize> {
    let (block, ag_blocks) = geometry(img);
    let logstart = u64::from_be_bytes(img[SB_LOGSTART..SB_LOGSTART + 8].try_into().unwrap()) as usize;
    let agblklog = img[SB_AGBLKLOG];
    let start = ((logstart >> agblklog) * ag_blocks + (logstart & ((1 << agblklog) - 1))) * block;
    start..start + get32(img, SB_LOGBLOCKS) as usize * block
}

#[test]
fn the_log_is_clean_only_with_an_unmount_record_at_the_head() {
    let img = fixture("xfs-v5");
    let log = log_bytes(&img);
    // The fixture's log has not wrapped: the head is the first block of cycle 0 (the kernel
    // stamps blocks past the head with cycle 0 record headers at mount), the unmount record's
    // header the last one before it.
    let cycle = |at: usize| if get32(&img, at) == 0xFEED_BABE { get32(&img, at + 4) } else { get32(&img, at) };
    let head = (log.start..log.end).step_by(512).find(|&at| cycle(at) == 0).unwrap();
    let header = (log.start..head).step_by(512).rev().find(|&at| get32(&img, at) == 0xFEED_BABE).unwrap();
    let mut not_unmount = img.clone();
    not_unmount[header + 512 + 9] &= !0x20;
    let reasons = analyze_bytes(&not_unmount).unwrap().unsafe_reasons;
    assert!(reasons[0].contains("is not an unmount record"), "{reasons:?}");

    // A stale block of the current cycle just past the head: a torn write the kernel would sort out.
    let mut torn = img.clone();
    put32(&mut torn, head, 1);
    let reasons = analyze_bytes(&torn).unwrap().unsafe_reasons;
    assert!(reasons[0].contains("XFS log is dirty"), "{reasons:?}");

    // A log never written (or zeroed by xfs_repair -L) has nothing to replay.
    let mut zeroed = img.clone();
    zeroed[log.clone()].fill(0);
    let allocation = analyze_bytes(&zeroed).unwrap();
    assert!(allocation.unsafe_reasons.is_empty(), "{:?}", allocation.unsafe_reasons);

    // Only the last block written: the kernel would refuse to mount it.
    let mut last_only = zeroed;
    put32(&mut last_only, log.end - 512, 1);
    assert!(!analyze_bytes(&last_only).unwrap().unsafe_reasons.is_empty());
}

#[test]
fn superblock_corruptions_are_named() {
    let img = fixture("xfs-v5");
    let mut bad = img.clone();
    put32(&mut bad, 0, 0x5846_5343);
    assert_error(&bad, ErrorClass::Corrupt, "superblock", 0, "bad magic");

    let mut bad = img.clone();
    bad[400] ^= 1;
    assert_error(&bad, ErrorClass::Corrupt, "superblock", SB_CRC, "checksum");

    let mut bad = img.clone();
    set_sb32(&mut bad, SB_BLOCKSIZE, 3000);
    assert_error(&bad, ErrorClass::Corrupt, "superblock", SB_BLOCKSIZE, "not a power of two");

    // A valid block size whose log field is wrong: named at the log's own offset.
    let mut bad = img.clone();
    bad[SB_BLOCKLOG] = 31;
    seal(&mut bad, 0, 512, SB_CRC);
    assert_error(
        &bad,
        ErrorClass::Corrupt,
        "superblock",
        SB_BLOCKLOG,
        "block size log 31, but a block size of 4096 needs 12",
    );

    let mut bad = img.clone();
    set_sb32(&mut bad, SB_AGCOUNT, 0);
    assert_error(&bad, ErrorClass::Corrupt, "superblock", SB_AGCOUNT, "0 AGs");

    // One AG more than dblocks fills.
    let mut bad = img.clone();
    set_sb32(&mut bad, SB_AGCOUNT, 3);
    assert_error(&bad, ErrorClass::Corrupt, "superblock", SB_AGCOUNT, "do not fit");

    // AGs past the end of the volume.
    let mut bad = img.clone();
    let ag_blocks = geometry(&img).1 as u64;
    put64(&mut bad, SB_DBLOCKS, 200 * ag_blocks);
    set_sb32(&mut bad, SB_AGCOUNT, 200);
    assert_error(&bad, ErrorClass::Corrupt, "superblock", SB_DBLOCKS, "ends past the volume's end");

    let mut bad = img.clone();
    let incompat = get32(&img, SB_FEATURES_INCOMPAT);
    set_sb32(&mut bad, SB_FEATURES_INCOMPAT, incompat | 0x8000_0000);
    assert_error(&bad, ErrorClass::Unsupported, "superblock", SB_FEATURES_INCOMPAT, "unknown incompatible");

    let mut bad = img.clone();
    put64(&mut bad, SB_LOGSTART, u64::MAX);
    seal(&mut bad, 0, 512, SB_CRC);
    assert_error(&bad, ErrorClass::Corrupt, "superblock", SB_LOGSTART, "is not inside an AG");

    let truncated = &img[..img.len() / 2];
    assert_error(truncated, ErrorClass::Corrupt, "superblock", SB_DBLOCKS, "truncated image");
    assert_error(&img[..300], ErrorClass::Corrupt, "superblock", 0, "truncated");
}

#[test]
fn external_log_realtime_and_needsrepair_are_hazards() {
    let img = fixture("xfs-v5");
    let mut external = img.clone();
    put64(&mut external, SB_LOGSTART, 0);
    seal(&mut external, 0, 512, SB_CRC);
    let reasons = analyze_bytes(&external).unwrap().unsafe_reasons;
    assert!(reasons.len() == 1 && reasons[0].contains("external device"), "{reasons:?}");

    let mut realtime = img.clone();
    put64(&mut realtime, SB_RBLOCKS, 1000);
    seal(&mut realtime, 0, 512, SB_CRC);
    let reasons = analyze_bytes(&realtime).unwrap().unsafe_reasons;
    assert!(reasons.len() == 1 && reasons[0].contains("realtime section"), "{reasons:?}");

    let mut repair = img.clone();
    let incompat = get32(&img, SB_FEATURES_INCOMPAT);
    set_sb32(&mut repair, SB_FEATURES_INCOMPAT, incompat | INCOMPAT_NEEDSREPAIR);
    let reasons = analyze_bytes(&repair).unwrap().unsafe_reasons;
    assert!(reasons.len() == 1 && reasons[0].contains("needsrepair"), "{reasons:?}");
}

#[test]
fn agf_corruptions_are_named_with_their_ag() {
    let img = fixture("xfs-v5");
    let at = agf_at(&img, 1);
    let agf = "AGF of AG 1";
    let mut bad = img.clone();
    put32(&mut bad, at + AGF_MAGICNUM, 0);
    assert_error(&bad, ErrorClass::Corrupt, agf, at, "bad magic");

    let mut bad = img.clone();
    bad[at + 300] ^= 1;
    assert_error(&bad, ErrorClass::Corrupt, agf, at + AGF_CRC, "checksum");

    let cases: [(usize, u32, &str); 5] = [
        (AGF_SEQNO, 0, "sequence number 0"),
        (AGF_LENGTH, 100, "length 100"),
        (AGF_BNO_ROOT, 0, "outside the AG"),
        (AGF_BNO_LEVEL, 10, "10 levels"),
        (AGF_FREEBLKS, get32(&img, at + AGF_FREEBLKS) + 1, "but the free-space B+tree holds"),
    ];
    for (field, value, problem) in cases {
        let mut bad = img.clone();
        set_agf32(&mut bad, 1, field, value);
        assert_error(&bad, ErrorClass::Corrupt, agf, at + field, problem);
    }
}

#[test]
fn btree_corruptions_are_named_with_their_block() {
    // v5: the root leaf's checksum.
    let img = fixture("xfs-v5");
    let root = bno_root_at(&img, 0);
    let root_agbno = get32(&img, agf_at(&img, 0) + AGF_BNO_ROOT);
    let mut bad = img.clone();
    bad[root + 100] ^= 1;
    let structure = format!("free-space B+tree block {root_agbno} of AG 0");
    assert_error(&bad, ErrorClass::Corrupt, &structure, root + BB_CRC, "checksum");

    // v4, 1 KiB blocks: AG 1's tree has an interior root whose pointers start after
    // (1024 - 16) / 12 = 84 keys.
    let img = fixture("xfs-v4-1k");
    assert_eq!(get32(&img, agf_at(&img, 1) + AGF_BNO_LEVEL), 2, "the fixture lost its 2-level tree");
    let root = bno_root_at(&img, 1);
    let root_agbno = get32(&img, agf_at(&img, 1) + AGF_BNO_ROOT);
    let structure = format!("free-space B+tree block {root_agbno} of AG 1");
    let pointers = root + 16 + 84 * 8;
    let ag_length = get32(&img, agf_at(&img, 1) + AGF_LENGTH);

    let mut bad = img.clone();
    put32(&mut bad, pointers + 4, get32(&img, pointers));
    assert_error(&bad, ErrorClass::Corrupt, &structure, pointers + 4, "already reached (a loop)");

    let mut bad = img.clone();
    put32(&mut bad, pointers, root_agbno);
    assert_error(&bad, ErrorClass::Corrupt, &structure, pointers, "already reached (a loop)");

    let mut bad = img.clone();
    put32(&mut bad, pointers, ag_length);
    assert_error(&bad, ErrorClass::Corrupt, &structure, pointers, "outside the AG");

    let mut bad = img.clone();
    bad[root + BB_NUMRECS..root + BB_NUMRECS + 2].copy_from_slice(&1000u16.to_be_bytes());
    assert_error(&bad, ErrorClass::Corrupt, &structure, root + BB_NUMRECS, "1000 records");

    // The first leaf: a record of zero blocks.
    let (block, ag_blocks) = geometry(&img);
    let leaf = (ag_blocks + get32(&img, pointers) as usize) * block;
    let mut bad = img.clone();
    put32(&mut bad, leaf + 16 + 4, 0);
    let structure = format!("free-space B+tree block {} of AG 1", get32(&img, pointers));
    assert_error(&bad, ErrorClass::Corrupt, &structure, leaf + 16, "is empty");
}
