//! md RAID members: there is no md driver here, so members are written by hand from the
//! kernel's `md_p.h` layout and `mdadm --examine` (`-X` for the bitmap) is the oracle that they
//! are genuine. A RAID1 member's inner ext4 is elided exactly (partclone on the data area);
//! a RAID5 member is named and copied raw.

#![allow(clippy::indexing_slicing)] // test code: a panic is a failed test, with its message

use crate::disk::LoopDevice;
use crate::lvm::{aged_ext4, ext4_oracle, random_file, stream_to_file};
use crate::util::*;
use serde_json::Value;
use std::path::Path;
use std::process::Command;

const MIB: u64 = 1 << 20;
const SECTOR: u64 = 512;

/// What goes into a version-1 superblock.
struct Superblock {
    level: u32,
    raid_disks: u32,
    /// Where the superblock is, in sectors (1.2: 8; 1.0: near the end).
    super_offset: u64,
    data_offset: u64,
    data_size: u64,
    /// The write-intent bitmap's offset from the superblock, in sectors.
    bitmap_offset: Option<i32>,
    /// A bad-block log 16 sectors after the superblock, with these (first sector, count) entries.
    bad_blocks: Option<&'static [(u64, u64)]>,
}

/// Where the bad-block log lies, from the superblock, and its size, in sectors.
const BAD_BLOCK_LOG: (u32, u16) = (16, 8);

const SET_UUID: [u8; 16] = *b"imgstream-md-set";

/// `struct mdp_superblock_1` (md_p.h), checksum computed as `calc_sb_1_csum` does.
fn superblock(sb: &Superblock) -> Vec<u8> {
    let max_dev = 16usize;
    let mut bytes = vec![0u8; 256 + 2 * max_dev];
    let mut put = |at: usize, value: &[u8]| bytes[at..at + value.len()].copy_from_slice(value);
    put(0, &0xa92b_4efcu32.to_le_bytes());
    put(4, &1u32.to_le_bytes());
    let features = u32::from(sb.bitmap_offset.is_some()) | if sb.bad_blocks.is_some() { 8 } else { 0 };
    put(8, &features.to_le_bytes());
    put(16, &SET_UUID);
    put(32, b"imgstream:0");
    put(64, &1_700_000_000u64.to_le_bytes());
    put(72, &sb.level.to_le_bytes());
    put(76, &(if sb.level == 5 { 2u32 } else { 0 }).to_le_bytes());
    put(80, &sb.data_size.to_le_bytes());
    put(88, &(if sb.level == 5 { 128u32 } else { 0 }).to_le_bytes());
    put(92, &sb.raid_disks.to_le_bytes());
    put(96, &sb.bitmap_offset.unwrap_or(0).to_le_bytes());
    put(128, &sb.data_offset.to_le_bytes());
    put(136, &sb.data_size.to_le_bytes());
    put(144, &sb.super_offset.to_le_bytes());
    put(168, b"imgstream-device");
    if sb.bad_blocks.is_some() {
        put(186, &BAD_BLOCK_LOG.1.to_le_bytes());
        put(188, &BAD_BLOCK_LOG.0.to_le_bytes());
    }
    put(192, &1_700_000_100u64.to_le_bytes());
    put(200, &7u64.to_le_bytes());
    put(208, &u64::MAX.to_le_bytes());
    put(220, &(max_dev as u32).to_le_bytes());
    for role in 0..max_dev {
        let value: u16 = if (role as u32) < sb.raid_disks { role as u16 } else { 0xffff };
        put(256 + 2 * role, &value.to_le_bytes());
    }
    let mut sum: u64 = bytes.chunks_exact(4).map(|w| u64::from(u32::from_le_bytes(w.try_into().unwrap()))).sum();
    sum = (sum & 0xffff_ffff) + (sum >> 32);
    bytes[216..220].copy_from_slice(&(sum as u32).to_le_bytes());
    bytes
}

/// A version 1.0 superblock at sector `super_offset` (RAID1, device 0 of 2, data from sector 0).
pub(crate) fn member_1_0_superblock(super_offset: u64) -> Vec<u8> {
    superblock(&Superblock {
        level: 1,
        raid_disks: 2,
        super_offset,
        data_offset: 0,
        data_size: super_offset - 128,
        bitmap_offset: None,
        bad_blocks: None,
    })
}

/// `mdp_super_t` (md_p.h, version 0.90, little-endian): RAID1 of 2 devices of `size_kib` KiB,
/// this one device 0, active and in sync; checksum as `calc_sb_csum` computes it.
pub(crate) fn superblock_0_90(size_kib: u64) -> Vec<u8> {
    let mut bytes = vec![0u8; 4096];
    let mut word = |index: usize, value: u32| bytes[index * 4..index * 4 + 4].copy_from_slice(&value.to_le_bytes());
    for (index, value) in
        [(0, 0xa92b_4efc), (2, 90), (5, 0x1111_1111), (6, 1_700_000_000), (7, 1), (8, size_kib as u32)]
    {
        word(index, value);
    }
    for (index, value) in [(9, 2), (10, 2), (13, 0x2222_2222), (14, 0x3333_3333), (15, 0x4444_4444)] {
        word(index, value);
    }
    // utime, state (clean), active, working, events_lo.
    for (index, value) in [(32, 1_700_000_100), (33, 1), (34, 2), (35, 2), (40, 7)] {
        word(index, value);
    }
    // Each device's descriptor (number, major, minor, raid_disk, state: active and in sync),
    // then this device's at word 992.
    for (base, device) in [(128, 0), (160, 1), (992, 0)] {
        for (offset, value) in [(0, device), (1, 9), (2, device), (3, device), (4, 6)] {
            word(base + offset, value);
        }
    }
    let sum: u64 = bytes.chunks_exact(4).map(|w| u64::from(u32::from_le_bytes(w.try_into().unwrap()))).sum();
    let sum = (sum & 0xffff_ffff) + (sum >> 32);
    bytes[152..156].copy_from_slice(&(sum as u32).to_le_bytes());
    bytes
}

/// `bitmap_super_t` (md-bitmap.h) for a 1 MiB chunk over `sync_sectors`.
fn bitmap_superblock(sync_sectors: u64) -> Vec<u8> {
    let mut bytes = vec![0u8; 256];
    let mut put = |at: usize, value: &[u8]| bytes[at..at + value.len()].copy_from_slice(value);
    put(0, &0x6d74_6962u32.to_le_bytes());
    put(4, &4u32.to_le_bytes());
    put(8, &SET_UUID);
    put(24, &7u64.to_le_bytes());
    put(32, &7u64.to_le_bytes());
    put(40, &sync_sectors.to_le_bytes());
    put(52, &(MIB as u32).to_le_bytes());
    put(56, &5u32.to_le_bytes());
    bytes
}

/// `mdadm --examine` (and `-X` on a loop device, with a bitmap) accept the member; returns its report.
fn mdadm_examine(member: &Path, bitmap: bool) -> String {
    let text = String::from_utf8(run_ok(Command::new("mdadm").arg("--examine").arg(member)).stdout).unwrap();
    assert!(text.contains("Checksum :") && text.contains(" - correct"), "mdadm --examine: {text}");
    if bitmap {
        // On a regular file, -X reads an external bitmap file; a member must be a device.
        let device = LoopDevice::attach(member, &["-r"]);
        let report = String::from_utf8(run_ok(Command::new("mdadm").arg("-X").arg(device.path())).stdout).unwrap();
        assert!(report.contains("Sync Size") && report.contains("Chunksize : 1 MB"), "mdadm -X: {report}");
    }
    text
}

/// A member of `len` bytes over garbage, with `sb` written and an aged ext4 in the data area.
fn member(dir: &Path, name: &str, len: u64, sb: &Superblock) -> (std::path::PathBuf, Vec<u8>, Vec<u8>) {
    let path = dir.join(format!("{name}.img"));
    random_file(&path, len);
    let mut image = std::fs::read(&path).unwrap();
    let data = aged_ext4(dir, name, sb.data_size * SECTOR, sb.data_offset + 7);
    let start = (sb.data_offset * SECTOR) as usize;
    image[start..start + data.len()].copy_from_slice(&data);
    let at = (sb.super_offset * SECTOR) as usize;
    let bytes = superblock(sb);
    image[at..at + bytes.len()].copy_from_slice(&bytes);
    if let Some(offset) = sb.bitmap_offset {
        let bitmap = bitmap_superblock(sb.data_size);
        let at = (at as i64 + i64::from(offset) * SECTOR as i64) as usize;
        image[at..at + bitmap.len()].copy_from_slice(&bitmap);
    }
    if let Some(entries) = sb.bad_blocks {
        // md.c super_1_sync: sector << 10 | count per entry, the rest all ones.
        let log = &mut image[at + BAD_BLOCK_LOG.0 as usize * 512..][..usize::from(BAD_BLOCK_LOG.1) * 512];
        log.fill(0xff);
        for (entry, (sector, count)) in log.chunks_exact_mut(8).zip(entries) {
            entry.copy_from_slice(&(sector << 10 | count).to_le_bytes());
        }
    }
    std::fs::write(&path, &image).unwrap();
    (path, image, data)
}

fn info_volume(source: &Path) -> Value {
    let json: Value = serde_json::from_slice(&run_ok(imgstream().args(["info", "--json"]).arg(source)).stdout).unwrap();
    json["volume"].clone()
}

/// Acceptance 3: RAID1 members with metadata 1.2 (with a write-intent bitmap and an empty
/// bad-block log) and 1.0 (at the end): the data area's ext4 is elided exactly as partclone says,
/// everything else is copied.
#[test]
fn root_raid1_members_elide_their_inner_ext4_exactly() {
    if !is_root() || !have_tool("mdadm") || !have_tool("partclone.extfs") || !have_tool("debugfs") {
        return;
    }
    let dir = scratch();
    let dir = dir.path();
    let len = 24 * MIB;
    let sectors = len / SECTOR;
    let v1_0_at = (sectors - 16) & !7;
    let members = [
        (
            "v1.2",
            Superblock {
                level: 1,
                raid_disks: 2,
                super_offset: 8,
                data_offset: 2048,
                data_size: sectors - 4096,
                bitmap_offset: Some(8),
                bad_blocks: Some(&[]),
            },
            "1.2",
        ),
        (
            "v1.0",
            Superblock {
                level: 1,
                raid_disks: 2,
                super_offset: v1_0_at,
                data_offset: 0,
                data_size: v1_0_at - 128,
                bitmap_offset: None,
                bad_blocks: None,
            },
            "1.0",
        ),
    ];
    for (name, sb, version) in members {
        let (path, image, data) = member(dir, name, len, &sb);
        let report = mdadm_examine(&path, sb.bitmap_offset.is_some());
        assert!(report.contains(&format!("Version : {version}")) && report.contains("Raid Level : raid1"), "{report}");
        let before = sha256(&path);
        let (output, stderr) = stream_to_file(&["part"], &path, &dir.join(format!("{name}-out.img")));
        assert!(!stderr.contains("warning"), "{stderr}");
        let mut expected = image.clone();
        let start = (sb.data_offset * SECTOR) as usize;
        expected[start..start + data.len()].copy_from_slice(&ext4_oracle(&data, dir));
        assert_same_bytes(&format!("md {name} member vs oracle"), &output, &expected);
        assert_ne!(expected, image, "{name}: the oracle zeroed nothing");
        assert_eq!(sha256(&path), before, "{name}: the source changed");
        mdadm_examine(&dir.join(format!("{name}-out.img")), sb.bitmap_offset.is_some());
        let volume = info_volume(&path);
        assert_eq!(volume["filesystem"], "md-raid1", "{volume}");
        let inner = &volume["container"]["volumes"][0];
        assert_eq!(
            (inner["filesystem"].as_str(), inner["status"].as_str()),
            (Some("ext4"), Some("elided")),
            "{volume}"
        );
    }
}

/// A 16 MiB member of a `level` array of `raid_disks` (metadata 1.2, data from sector 2048) with
/// `bad_blocks`, accepted by `mdadm --examine`: `part` copies it raw and its warning and `info`'s
/// reason say `reason`. Returns the member and mdadm's report.
fn copied_raw(
    dir: &Path,
    name: &str,
    (level, raid_disks): (u32, u32),
    bad_blocks: Option<&'static [(u64, u64)]>,
    reason: &str,
) -> (std::path::PathBuf, String) {
    let len = 16 * MIB;
    let sb = Superblock {
        level,
        raid_disks,
        super_offset: 8,
        data_offset: 2048,
        data_size: len / SECTOR - 4096,
        bitmap_offset: None,
        bad_blocks,
    };
    let (path, image, _) = member(dir, name, len, &sb);
    let report = mdadm_examine(&path, false);
    let (output, stderr) = stream_to_file(&["part"], &path, &dir.join(format!("{name}-out.img")));
    assert!(stderr.contains(reason) && stderr.contains("copying it raw"), "{stderr}");
    assert_same_bytes(&format!("{name} member copied raw"), &output, &image);
    let volume = info_volume(&path);
    assert_eq!(volume["status"], "raw", "{volume}");
    assert!(volume["reason"].as_str().unwrap().contains(reason), "{volume}");
    (path, report)
}

/// Acceptance 3: a RAID5 member holds a third of the data, striped: named, copied raw.
#[test]
fn raid5_member_is_named_and_copied_raw() {
    if !have_tool("mdadm") || !have_tool("debugfs") {
        return;
    }
    let dir = scratch();
    let (_, report) = copied_raw(dir.path(), "raid5", (5, 3), None, "md raid5 member: only RAID1 members");
    assert!(report.contains("Raid Level : raid5"), "{report}");
}

/// A RAID1 member whose bad-block log records bad sectors does not hold them: the kernel reads
/// them from another member, and what this one holds there (maybe the filesystem's bitmap) is
/// not the array's. Its data area cannot be read as the array: named, copied raw.
#[test]
fn a_raid1_member_with_bad_blocks_recorded_is_copied_raw() {
    if !have_tool("mdadm") || !have_tool("debugfs") {
        return;
    }
    let dir = scratch();
    let (path, report) =
        copied_raw(dir.path(), "bad-blocks", (1, 2), Some(&[(2048 + 40, 8)]), "1 bad block(s) recorded");
    assert!(report.contains("bad blocks present"), "{report}");
    let listed = run_ok(Command::new("mdadm").arg("--examine-badblocks").arg(&path)).stdout;
    assert!(String::from_utf8_lossy(&listed).contains("2088 for 8 sectors"), "{}", String::from_utf8_lossy(&listed));
}
