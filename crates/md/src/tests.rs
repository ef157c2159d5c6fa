//! Synthetic members for what the integration tests (hand-written 1.2/1.0 members checked by
//! `mdadm --examine`) do not cover: 0.90 and 1.1, spares, damaged checksums, overlapping bitmaps.

#![allow(clippy::indexing_slicing)] // test code: a panic is a failed test, with its message

use super::*;

const MIB: u64 = 1 << 20;

fn put(bytes: &mut [u8], at: usize, value: &[u8]) {
    bytes[at..at + value.len()].copy_from_slice(value);
}

/// A 1.x superblock at byte `at` of a 4 MiB member: RAID `level`, data from sector 2048, this
/// device's role `role`, with `features`.
fn member_1(at: u64, level: u32, role: u16, features: u32) -> Vec<u8> {
    let mut image = vec![0u8; 4 * MIB as usize];
    let sb = &mut image[at as usize..at as usize + 512];
    put(sb, 0, &MAGIC.to_le_bytes());
    put(sb, 4, &1u32.to_le_bytes());
    put(sb, 8, &features.to_le_bytes());
    put(sb, 32, b"host:7");
    put(sb, 72, &level.to_le_bytes());
    put(sb, 92, &2u32.to_le_bytes());
    put(sb, 96, &8u32.to_le_bytes()); // bitmap 4 KiB after the superblock
    put(sb, 128, &2048u64.to_le_bytes());
    put(sb, 136, &4096u64.to_le_bytes());
    put(sb, 144, &(at / SECTOR).to_le_bytes());
    put(sb, 220, &2u32.to_le_bytes());
    put(sb, 256, &role.to_le_bytes());
    let sum = word_sum(&sb[..260], 216);
    put(sb, 216, &sum.to_le_bytes());
    image
}

#[test]
fn a_version_1_1_raid1_member_has_its_data_area_and_other_states_are_raw() {
    let member = read_member(&member_1(0, 1, 0, 0)).unwrap();
    assert_eq!((member.version, member.level_name().as_str(), member.array.as_str()), ("1.1", "raid1", "host:7"));
    assert_eq!((member.data.clone(), member.superblock.clone(), member.raw_reason), (MIB..3 * MIB, 0..260, None));
    let spare = read_member(&member_1(0, 1, 0xffff, 0)).unwrap();
    assert_eq!(spare.raw_reason.as_deref(), Some("spare member: its data is not in sync"));
    let rebuilding = read_member(&member_1(4096, 1, 0, FEATURE_RECOVERY)).unwrap();
    assert!(rebuilding.raw_reason.unwrap().starts_with("member being rebuilt"));
    let raid0 = read_member(&member_1(4096, 0, 0, 0)).unwrap();
    assert_eq!(raid0.raw_reason.as_deref(), Some("md raid0 member: only RAID1 members hold a whole copy of the array"));
}

#[test]
fn damaged_checksums_and_bitmaps_overlapping_the_data_are_corrupt() {
    let mut image = member_1(4096, 1, 0, 0);
    image[4096 + 40] ^= 1;
    let error = read_member(&image).unwrap_err().to_string();
    assert!(error.starts_with("md superblock 1.2 at byte 4312: checksum"), "{error}");
    // A bitmap whose chunks reach into the data area at 1 MiB.
    let mut image = member_1(4096, 1, 0, FEATURE_BITMAP);
    put(&mut image, 8192, &BITMAP_MAGIC.to_le_bytes());
    put(&mut image, 8192 + 40, &(1u64 << 40).to_le_bytes());
    put(&mut image, 8192 + 52, &512u32.to_le_bytes());
    let error = read_member(&image).unwrap_err().to_string();
    assert!(error.contains("write-intent bitmap at bytes 8192.."), "{error}");
}

#[test]
fn a_version_0_90_member_keeps_its_data_from_byte_0() {
    let size = 4 * MIB + 12345;
    let mut image = vec![0u8; size as usize];
    let at = (size & !0xFFFF) - 0x10000;
    let sb = &mut image[at as usize..at as usize + SUPERBLOCK_LEN];
    put(sb, 0, &MAGIC.to_le_bytes());
    put(sb, 8, &90u32.to_le_bytes());
    put(sb, 7 * 4, &1u32.to_le_bytes());
    put(sb, 8 * 4, &(3 * 1024u32).to_le_bytes()); // 3 MiB of data, in KiB
    put(sb, 10 * 4, &2u32.to_le_bytes());
    put(sb, 992 * 4 + 16, &6u32.to_le_bytes()); // active, in sync
    let sum = word_sum(sb, 38 * 4);
    put(sb, 38 * 4, &sum.to_le_bytes());
    assert!(detect(&image).unwrap());
    let member = read_member(&image).unwrap();
    assert_eq!((member.version, member.data.clone(), member.raw_reason.clone()), ("0.90", 0..3 * MIB, None));
    assert_eq!(member.superblock, at..at + 4096);
    assert!(!detect(&vec![0u8; 4 * MIB as usize]).unwrap());
}

/// Sets the 1.x superblock field at `field` of the member's superblock at `at`, checksum kept right.
fn set_field(image: &mut [u8], at: usize, field: usize, value: &[u8]) {
    let sb = &mut image[at..at + 512];
    put(sb, field, value);
    let sum = word_sum(&sb[..260], 216);
    put(sb, 216, &sum.to_le_bytes());
}

#[test]
fn a_device_number_past_the_role_table_is_a_spare_as_the_kernel_reads_it() {
    let mut image = member_1(4096, 1, 0, 0);
    // max_dev is 2; device 5's role would be read from past the table (zeros: "active 0").
    set_field(&mut image, 4096, 160, &5u32.to_le_bytes());
    let member = read_member(&image).unwrap();
    assert_eq!(member.raw_reason.as_deref(), Some("spare member: its data is not in sync"));
}

#[test]
fn a_bad_block_log_the_kernel_would_not_read_makes_the_member_raw() {
    let mut image = member_1(4096, 1, 0, FEATURE_BAD_BLOCKS);
    // 16 sectors at 8 sectors after the superblock: more than the page md.c reads.
    set_field(&mut image, 4096, 186, &16u16.to_le_bytes());
    set_field(&mut image, 4096, 188, &8u32.to_le_bytes());
    let reason = read_member(&image).unwrap().raw_reason.unwrap();
    assert_eq!(reason, "bad-block log of 8192 bytes at byte 8192, more than the kernel reads");
    // 8 sectors, all ones but one entry of 0 sectors: no bad block.
    set_field(&mut image, 4096, 186, &8u16.to_le_bytes());
    image[8192..12288].fill(0xff);
    image[8192..8200].copy_from_slice(&(77u64 << 10).to_le_bytes());
    assert_eq!(read_member(&image).unwrap().raw_reason, None);
}

#[test]
fn superblocks_at_the_end_are_found_only_past_the_given_byte() {
    let mut image = vec![0u8; 4 * MIB as usize];
    let (v1_0, v0_90) = ((4 * MIB / SECTOR - 16) * SECTOR, 4 * MIB - 0x10000);
    for (at, major) in [(v1_0, 1u32), (v0_90, 0)] {
        put(&mut image[at as usize..], 0, &MAGIC.to_le_bytes());
        put(&mut image[at as usize..], 4, &major.to_le_bytes());
    }
    assert_eq!(superblocks_at_end(&image, 3 * MIB).unwrap(), vec![v1_0, v0_90]);
    assert_eq!(superblocks_at_end(&image, v0_90 + 1).unwrap(), vec![v1_0]);
    // A 1.2 superblock near the start is the restored disk's own business.
    put(&mut image, 4096, &MAGIC.to_le_bytes());
    put(&mut image, 4100, &1u32.to_le_bytes());
    assert_eq!(superblocks_at_end(&image, 0).unwrap(), vec![v1_0, v0_90]);
}

#[test]
fn a_bitmap_or_bad_block_log_past_the_end_is_corrupt_not_a_read_error() {
    use imgstream_volume::{Classify, ErrorClass};
    let mut image = member_1(4096, 1, 0, FEATURE_BITMAP);
    set_field(&mut image, 4096, 96, &(8 * 1024u32).to_le_bytes()); // 4 MiB after the superblock
    let error = read_member(&image).unwrap_err();
    assert_eq!(error.class(), ErrorClass::Corrupt, "{error}");
    assert!(error.to_string().contains("past the end of the member"), "{error}");
    let mut image = member_1(4096, 1, 0, FEATURE_BAD_BLOCKS);
    set_field(&mut image, 4096, 186, &8u16.to_le_bytes());
    set_field(&mut image, 4096, 188, &(8 * 1024u32 - 12).to_le_bytes());
    let error = read_member(&image).unwrap_err();
    assert_eq!(error.class(), ErrorClass::Corrupt, "{error}");
    assert!(error.to_string().starts_with("md superblock 1.2 at byte 4284: bad-block log"), "{error}");
}
