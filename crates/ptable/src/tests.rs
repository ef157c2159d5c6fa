//! In-memory tables: valid ones, and each corruption giving a clear error (never a panic).

#![allow(clippy::indexing_slicing)]

use super::*;
use crate::gpt::testing::{build, write_copy};

const MIB: u64 = 1 << 20;

fn gpt_disk() -> Vec<u8> {
    // 4 MiB disk, 512-byte sectors: partitions at 1 MiB (1 MiB long) and 2 MiB (1 MiB long).
    build(8192, 512, &[(0xA1, 2048, 4095), (0xB2, 4096, 6143)])
}

#[test]
fn a_gpt_disk_gives_its_partitions_and_everything_else_as_raw() {
    let disk = gpt_disk();
    let layout = read_layout(&disk, None).unwrap();
    assert_eq!(layout.table, TableKind::Gpt);
    assert_eq!(layout.sector_size, 512);
    assert!(layout.warnings.is_empty(), "{:?}", layout.warnings);
    assert!(layout.protective_mbr_only);
    let ranges: Vec<_> = layout.partitions.iter().map(|p| (p.index, p.range())).collect();
    assert_eq!(ranges, vec![(1, MIB..2 * MIB), (2, 2 * MIB..3 * MIB)]);
    assert_eq!(layout.partitions[0].type_id, "A1A1A1A1-A1A1-A1A1-A1A1-A1A1A1A1A1A1");
    assert_eq!(layout.partitions[0].name, "p");
    assert_eq!(layout.raw.iter().collect::<Vec<_>>(), vec![0..MIB, 3 * MIB..4 * MIB]);
    // Both copies of the table are listed, and none lies in a partition.
    let whats: Vec<&str> = layout.structures.iter().map(|s| s.what.as_str()).collect();
    assert_eq!(
        whats,
        ["protective MBR", "primary GPT header", "primary GPT entries", "backup GPT entries", "backup GPT header"]
    );
    assert_eq!(layout.structures.last().unwrap().range, 4 * MIB - 512..4 * MIB);
}

#[test]
fn a_4096_byte_sector_gpt_is_probed_on_an_image_and_taken_as_given_on_a_device() {
    let disk = build(1024, 4096, &[(0xC3, 256, 511)]);
    let layout = read_layout(&disk, None).unwrap();
    assert_eq!(layout.sector_size, 4096);
    assert_eq!(layout.partitions[0].range(), MIB..2 * MIB);
    assert_eq!(read_layout(&disk, Some(4096)).unwrap().partitions, layout.partitions);
    // Told 512 (a device that says so), the 4096-byte table is not found.
    assert!(matches!(read_layout(&disk, Some(512)), Err(Error::Corrupt(_))));
    assert!(matches!(read_layout(&disk, Some(1000)), Err(Error::Unsupported(_))));
}

#[test]
fn a_damaged_primary_header_falls_back_to_the_backup_with_a_warning() {
    for damage in
        [16usize /* header CRC */, 24 /* my_lba */, 0 /* signature */, 80 /* entry count */]
    {
        let mut disk = gpt_disk();
        disk[512 + damage] ^= 0x01;
        let layout = read_layout(&disk, None).unwrap();
        assert_eq!(layout.partitions.len(), 2, "damage at {damage}");
        assert_eq!(layout.partitions, read_layout(&gpt_disk(), None).unwrap().partitions);
        assert!(
            layout
                .warnings
                .iter()
                .any(|w| w.contains("primary GPT header at byte 512 is damaged") && w.contains("backup")),
            "{:?}",
            layout.warnings
        );
    }
    // A damaged primary entry array (its CRC fails) also means the backup is used.
    let mut disk = gpt_disk();
    disk[1024 + 40] ^= 0x01;
    let layout = read_layout(&disk, None).unwrap();
    assert!(layout.warnings.iter().any(|w| w.contains("CRC")), "{:?}", layout.warnings);
    assert_eq!(layout.partitions[0].range(), MIB..2 * MIB);
}

#[test]
fn a_damaged_backup_is_reported_and_the_primary_used() {
    let mut disk = gpt_disk();
    let last = disk.len() - 512;
    disk[last + 16] ^= 0xFF;
    let layout = read_layout(&disk, None).unwrap();
    assert_eq!(layout.partitions.len(), 2);
    assert!(
        layout.warnings.iter().any(|w| w.contains("backup GPT header at byte 4193792 is damaged")),
        "{:?}",
        layout.warnings
    );
}

#[test]
fn both_copies_damaged_is_an_error_naming_both() {
    let mut disk = gpt_disk();
    disk[512 + 16] ^= 1;
    let last = disk.len() - 512;
    disk[last + 16] ^= 1;
    let Err(Error::Corrupt(message)) = read_layout(&disk, None) else { panic!("expected an error") };
    assert!(message.contains("no valid GPT header") && message.contains("header CRC"), "{message}");
    assert!(message.contains("backup header at byte 4193792"), "{message}");
}

#[test]
fn huge_entry_counts_and_odd_entry_sizes_never_reach_gptman() {
    for (count, size) in [(u32::MAX, 128u32), (MAX_ENTRIES_PLUS_ONE, 128), (128, 0), (128, 256), (u32::MAX, u32::MAX)] {
        let mut disk = gpt_disk();
        for lba in [1u64, 8191] {
            let at = (lba * 512) as usize;
            disk[at + 80..at + 84].copy_from_slice(&count.to_le_bytes());
            disk[at + 84..at + 88].copy_from_slice(&size.to_le_bytes());
            fix_header_crc(&mut disk, at);
        }
        let Err(Error::Corrupt(message)) = read_layout(&disk, None) else {
            panic!("count {count} size {size}: expected an error")
        };
        assert!(message.contains("exceed the limit") || message.contains("entry size"), "{message}");
    }
}

const MAX_ENTRIES_PLUS_ONE: u32 = gpt::MAX_ENTRIES + 1;

fn fix_header_crc(disk: &mut [u8], at: usize) {
    disk[at + 16..at + 20].fill(0);
    let crc = crc::Crc::<u32>::new(&crc::CRC_32_ISO_HDLC).checksum(&disk[at..at + 92]);
    disk[at + 16..at + 20].copy_from_slice(&crc.to_le_bytes());
}

#[test]
fn gpt_partitions_that_overlap_or_leave_the_usable_area_are_errors() {
    let overlapping = build(8192, 512, &[(0xA1, 2048, 4095), (0xB2, 4000, 6143)]);
    let Err(Error::Corrupt(message)) = read_layout(&overlapping, None) else { panic!() };
    assert!(
        message.contains("partition 1 (bytes 1048576..2097152) overlaps partition 2") && message.contains("overlap"),
        "{message}"
    );

    let past_usable = build(8192, 512, &[(0xA1, 2048, 8180)]);
    let Err(Error::Corrupt(message)) = read_layout(&past_usable, None) else { panic!() };
    assert!(
        message.contains("GPT entry 1 at byte 1024") && message.contains("outside the usable sectors"),
        "{message}"
    );

    // Starting at LBA 0 would make gptman's alignment search panic; we refuse it first.
    let at_zero = build(8192, 512, &[(0xA1, 0, 10), (0xB2, 0, 20)]);
    assert!(matches!(read_layout(&at_zero, None), Err(Error::Corrupt(_))));

    let backwards = build(8192, 512, &[(0xA1, 4095, 2048)]);
    assert!(matches!(read_layout(&backwards, None), Err(Error::Corrupt(_))));
}

#[test]
fn an_entry_array_inside_the_usable_area_is_damage() {
    let mut disk = gpt_disk();
    // Primary array moved to LBA 2048 (inside partition 1): the primary is damaged, backup used.
    write_copy(&mut disk, 512, 1, 8191, 2048, 128, &[(0xA1, 2048, 4095)]);
    let layout = read_layout(&disk, None).unwrap();
    assert!(layout.warnings.iter().any(|w| w.contains("overlaps the usable area")), "{:?}", layout.warnings);
}

#[test]
fn a_backup_that_is_not_at_the_end_is_reported() {
    // A 4 MiB GPT disk copied to 8 MiB: the backup is in the middle.
    let mut disk = gpt_disk();
    disk.resize(8 * MIB as usize, 0);
    let layout = read_layout(&disk, None).unwrap();
    assert!(layout.warnings.iter().any(|w| w.contains("last LBA is 16383")), "{:?}", layout.warnings);
    // Everything after the last partition is raw, old backup included.
    assert_eq!(layout.raw.iter().last(), Some(3 * MIB..8 * MIB));
}

#[test]
fn moving_the_backup_to_a_larger_disks_end_gives_a_valid_table() {
    let mut disk = gpt_disk();
    disk.resize(8 * MIB as usize, 0);
    let layout = read_layout(&disk, None).unwrap();
    let mut cursor = std::io::Cursor::new(disk);
    let moved = move_backup_to_end(&mut cursor, &layout).unwrap().unwrap();
    assert_eq!(moved, Relocation { old_backup_lba: 8191, new_backup_lba: 16383 });
    let disk = cursor.into_inner();
    let after = read_layout(&disk, None).unwrap();
    assert!(after.warnings.is_empty(), "{:?}", after.warnings);
    assert_eq!(after.partitions, layout.partitions);
    assert!(disk[4 * MIB as usize - 512..4 * MIB as usize].iter().all(|&b| b == 0), "old backup header cleared");
    // The protective MBR now covers the whole larger disk.
    assert_eq!(u32::from_le_bytes(disk[446 + 12..446 + 16].try_into().unwrap()), 16383);
    // Doing it again changes nothing.
    let mut cursor = std::io::Cursor::new(disk);
    assert_eq!(move_backup_to_end(&mut cursor, &after).unwrap(), None);
}

/// An MBR disk: primary 1 at 1 MiB (1 MiB), extended at 2 MiB (5 MiB) with logicals at
/// 2 MiB + 1 MiB and 5 MiB (1 MiB each), EBRs at 2 MiB and 4 MiB; 8 MiB disk.
fn mbr_disk() -> Vec<u8> {
    let mut disk = vec![0u8; 8 * MIB as usize];
    set_entry(&mut disk, 0, 0, 0x80, 0x83, 2048, 2048);
    set_entry(&mut disk, 0, 1, 0, 0x05, 4096, 10240);
    disk[440..444].copy_from_slice(&[0x78, 0x56, 0x34, 0x12]);
    signature(&mut disk, 0);
    // EBR 1 at sector 4096: logical at +2048, next EBR at extended+4096 (sector 8192).
    set_entry(&mut disk, 4096, 0, 0, 0x83, 2048, 2048);
    set_entry(&mut disk, 4096, 1, 0, 0x05, 4096, 4096);
    signature(&mut disk, 4096);
    // EBR 2 at sector 8192: logical at +2048 (sector 10240).
    set_entry(&mut disk, 8192, 0, 0, 0x83, 2048, 2048);
    signature(&mut disk, 8192);
    disk
}

fn set_entry(disk: &mut [u8], lba: usize, slot: usize, boot: u8, sys: u8, start: u32, sectors: u32) {
    let at = lba * 512 + 446 + slot * 16;
    disk[at] = boot;
    disk[at + 4] = sys;
    disk[at + 8..at + 12].copy_from_slice(&start.to_le_bytes());
    disk[at + 12..at + 16].copy_from_slice(&sectors.to_le_bytes());
}

fn signature(disk: &mut [u8], lba: usize) {
    disk[lba * 512 + 510] = 0x55;
    disk[lba * 512 + 511] = 0xAA;
}

#[test]
fn an_mbr_disk_gives_primaries_and_logicals_and_keeps_the_ebrs_raw() {
    let disk = mbr_disk();
    let layout = read_layout(&disk, None).unwrap();
    assert_eq!(layout.table, TableKind::Mbr);
    assert_eq!(layout.disk_id, "0x12345678");
    let parts: Vec<_> =
        layout.partitions.iter().map(|p| (p.index, p.range(), p.type_id.as_str(), p.bootable)).collect();
    assert_eq!(
        parts,
        vec![(1, MIB..2 * MIB, "83", true), (5, 3 * MIB..4 * MIB, "83", false), (6, 5 * MIB..6 * MIB, "83", false)]
    );
    assert_eq!(layout.extended, Some(2 * MIB..7 * MIB));
    assert_eq!(
        layout.raw.iter().collect::<Vec<_>>(),
        vec![0..MIB, 2 * MIB..3 * MIB, 4 * MIB..5 * MIB, 6 * MIB..8 * MIB]
    );
    let ebrs: Vec<_> = layout.structures.iter().filter(|s| s.what.starts_with("EBR")).map(|s| s.range.start).collect();
    assert_eq!(ebrs, vec![2 * MIB, 4 * MIB]);
    assert!(ebrs.iter().all(|&b| layout.raw.contains(b)));
}

#[test]
fn an_ebr_chain_that_loops_or_runs_backwards_is_an_error() {
    // The second EBR points back at the first one.
    let mut disk = mbr_disk();
    set_entry(&mut disk, 8192, 1, 0, 0x05, 0, 4096);
    disk[8192 * 512 + 446 + 16 + 8..8192 * 512 + 446 + 16 + 12].copy_from_slice(&4096u32.to_le_bytes());
    let Err(Error::Corrupt(message)) = read_layout(&disk, None) else { panic!() };
    assert!(message.contains("EBR at byte 4194304") && message.contains("loop"), "{message}");
    // An EBR that points at itself.
    let mut disk = mbr_disk();
    set_entry(&mut disk, 4096, 1, 0, 0x05, 0, 0);
    let at = 4096 * 512 + 446 + 16 + 8;
    disk[at..at + 4].copy_from_slice(&0u32.to_le_bytes());
    // relative 0 means "end", so this chain just stops after one logical: fine.
    assert_eq!(read_layout(&disk, None).unwrap().partitions.len(), 2);
}

#[test]
fn an_ebr_chain_longer_than_the_cap_is_refused() {
    // 200 EBRs, one per 2 sectors, each with a 1-sector logical: strictly forward but too long.
    let mut disk = vec![0u8; 1024 * 512];
    set_entry(&mut disk, 0, 0, 0, 0x05, 2, 1000);
    signature(&mut disk, 0);
    for k in 0..200usize {
        let lba = 2 + 2 * k;
        set_entry(&mut disk, lba, 0, 0, 0x83, 1, 1);
        set_entry(&mut disk, lba, 1, 0, 0x05, (2 * k + 2) as u32, 2);
        signature(&mut disk, lba);
    }
    let Err(Error::Unsupported(message)) = read_layout(&disk, None) else { panic!() };
    assert!(message.contains("more than 128 logical partitions"), "{message}");
}

#[test]
fn mbr_entries_past_the_end_overlapping_or_overflowing_are_errors() {
    let mut disk = mbr_disk();
    set_entry(&mut disk, 0, 2, 0, 0x83, 16000, 1000);
    let Err(Error::Corrupt(message)) = read_layout(&disk, None) else { panic!() };
    assert!(message.contains("partition 3") && message.contains("past the end of the disk"), "{message}");

    let mut disk = mbr_disk();
    set_entry(&mut disk, 0, 2, 0, 0x83, 3000, 2000);
    let Err(Error::Corrupt(message)) = read_layout(&disk, None) else { panic!() };
    assert!(message.contains("overlap"), "{message}");

    // A logical whose start overflows u32 once made absolute (mbrman would overflow).
    let mut disk = mbr_disk();
    set_entry(&mut disk, 4096, 0, 0, 0x83, u32::MAX - 10, 1);
    let Err(Error::Corrupt(message)) = read_layout(&disk, None) else { panic!() };
    assert!(message.contains("overflows 32 bits"), "{message}");

    // A logical outside its extended partition.
    let mut disk = mbr_disk();
    set_entry(&mut disk, 8192, 0, 0, 0x83, 2048, 9000);
    let Err(Error::Corrupt(message)) = read_layout(&disk, None) else { panic!() };
    assert!(message.contains("logical partition 6") && message.contains("extended partition"), "{message}");

    // A bad boot flag in an EBR.
    let mut disk = mbr_disk();
    disk[8192 * 512 + 446] = 0x12;
    let Err(Error::Corrupt(message)) = read_layout(&disk, None) else { panic!() };
    assert!(message.contains("boot flag 0x12"), "{message}");

    // A missing signature in the second EBR.
    let mut disk = mbr_disk();
    disk[8192 * 512 + 510] = 0;
    let Err(Error::Corrupt(message)) = read_layout(&disk, None) else { panic!() };
    assert!(message.contains("EBR at byte 4194304") && message.contains("signature"), "{message}");
}

#[test]
fn tiny_and_tableless_disks_are_one_volume() {
    for len in [0usize, 5, 511] {
        let layout = read_layout(&vec![0x55u8; len], None).unwrap();
        assert_eq!(layout.table, TableKind::None);
        assert_eq!(layout.partitions[0].range(), 0..len as u64);
        assert!(layout.raw.is_empty());
    }
    // No 0x55AA: not a table.
    let layout = read_layout(&vec![0u8; 4096], None).unwrap();
    assert_eq!(layout.table, TableKind::None);
    assert_eq!(layout.filesystem_at_start, None);
}

#[test]
fn a_filesystem_at_sector_0_is_one_volume_even_with_0x55aa() {
    let mut disk = vec![0u8; MIB as usize];
    disk[3..11].copy_from_slice(b"NTFS    ");
    signature(&mut disk, 0);
    // Boot code bytes where the entries would be: invalid boot flags.
    disk[446..510].fill(0x33);
    let layout = read_layout(&disk, None).unwrap();
    assert_eq!(layout.table, TableKind::None);
    assert_eq!(layout.filesystem_at_start, Some("ntfs"));
    // Zeros there (no used entry): still a volume, not an empty MBR.
    disk[446..510].fill(0);
    assert_eq!(read_layout(&disk, None).unwrap().table, TableKind::None);
}

/// A damaged boot sector at sector 0 (NTFS OEM id, FAT BPB) with no used MBR entry is that
/// volume, so its parser names the damage; with a used entry that fits, the table wins.
#[test]
fn a_damaged_boot_sector_without_used_entries_is_one_volume() {
    let mut ntfs = vec![0u8; MIB as usize];
    ntfs[3..11].copy_from_slice(b"NTFX    ");
    for at in [0x28, 0x30, 0x38] {
        ntfs[at] = 4;
    }
    signature(&mut ntfs, 0);
    let mut fat = vec![0u8; MIB as usize];
    fat[82..90].copy_from_slice(b"FAT32   "); // reserved sectors 0, media 0: an implausible BPB
    signature(&mut fat, 0);
    let mut exfat = vec![0u8; MIB as usize];
    exfat[3..11].copy_from_slice(b"EXFXT   ");
    for at in [72, 80, 84, 88] {
        exfat[at] = 8;
    }
    signature(&mut exfat, 0);
    // No type string (DOS 3, or damaged): a jump, 512-byte sectors and media 0xF8.
    let mut untyped = vec![0u8; MIB as usize];
    untyped[..3].copy_from_slice(&[0xEB, 0x3C, 0x90]);
    untyped[11..13].copy_from_slice(&512u16.to_le_bytes());
    untyped[21] = 0xF8;
    signature(&mut untyped, 0);
    for (name, mut disk, filesystem) in
        [("ntfs", ntfs, "ntfs"), ("fat", fat, "fat"), ("exfat", exfat, "exfat"), ("untyped fat", untyped, "fat")]
    {
        let layout = read_layout(&disk, None).unwrap();
        assert_eq!((layout.table, layout.filesystem_at_start), (TableKind::None, Some(filesystem)), "{name}");
        set_entry(&mut disk, 0, 0, 0, 0x83, 1024, 16);
        assert_eq!(read_layout(&disk, None).unwrap().table, TableKind::Mbr, "{name} with an entry");
    }
}

/// Every single-byte corruption of the table sectors gives Ok or Err, never a panic, and an
/// Ok answer is self-consistent.
#[test]
fn corrupting_any_table_byte_never_panics_and_answers_stay_consistent() {
    let gpt = gpt_disk();
    let mbr = mbr_disk();
    let targets: Vec<(&str, &Vec<u8>, Vec<usize>)> = vec![
        (
            "gpt",
            &gpt,
            (0..3 * 512)
                .chain(8191 * 512..8191 * 512 + 92)
                .chain(gpt.len() - 33 * 512..gpt.len() - 33 * 512 + 256)
                .collect(),
        ),
        (
            "mbr",
            &mbr,
            (440..512).chain(4096 * 512 + 446..4096 * 512 + 512).chain(8192 * 512 + 446..8192 * 512 + 512).collect(),
        ),
    ];
    for (name, disk, offsets) in targets {
        for &at in &offsets {
            for value in [0x00u8, 0xFF, disk[at] ^ 0x01, disk[at] ^ 0x80] {
                let mut mutated = disk.clone();
                mutated[at] = value;
                if let Ok(layout) = read_layout(&mutated, None) {
                    check_consistent(&layout, &format!("{name} byte {at} = {value:#x}"));
                }
            }
        }
    }
}

pub(crate) fn check_consistent(layout: &DiskLayout, what: &str) {
    let inside: RangeSet = layout.partitions.iter().map(Partition::range).collect();
    assert_eq!(inside.total(), layout.partitions.iter().map(|p| p.len).sum::<u64>(), "{what}: partitions overlap");
    assert!(inside.end() <= layout.size, "{what}: partition past the end");
    assert_eq!(inside.total() + layout.raw.total(), layout.size, "{what}: raw is not the complement");
    for s in &layout.structures {
        assert!(s.range.end <= layout.size, "{what}: {} past the end", s.what);
        assert!(layout.raw.contains_range(s.range.clone()), "{what}: {} not raw", s.what);
    }
}

/// A committed disk fixture, decompressed with the zstd tool; `None` (with a visible message)
/// if zstd is missing, except under `CI=true`.
fn fixture(name: &str) -> Option<Vec<u8>> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures").join(format!("{name}.img.zst"));
    match std::process::Command::new("zstd").arg("-dc").arg(&path).output() {
        Ok(output) if output.status.success() => Some(output.stdout),
        other => {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "CI=true but zstd cannot decompress {}: {other:?}",
                path.display()
            );
            eprintln!("SKIPPED: zstd cannot decompress {}", path.display());
            None
        }
    }
}

/// The fixtures made by sfdisk parse, and every byte of their table sectors (MBR, GPT headers
/// and arrays at both ends, EBRs), set to 0x00, 0xFF or with a bit flipped, gives Ok or Err,
/// never a panic, and a consistent answer.
#[test]
fn corrupting_the_fixture_tables_byte_by_byte_never_panics() {
    let table_bytes = |disk: &[u8], layout: &DiskLayout| -> Vec<usize> {
        let mut offsets: Vec<usize> = Vec::new();
        for s in &layout.structures {
            // Whole headers and EBR sectors; the first four entries of each array.
            let len = if s.what.contains("entries") { 512 } else { (s.range.end - s.range.start) as usize };
            offsets.extend(s.range.start as usize..(s.range.start as usize + len).min(disk.len()));
        }
        offsets
    };
    for name in ["disk-gpt", "disk-mbr", "disk-gpt4k"] {
        let Some(mut disk) = fixture(name) else { return };
        let layout = read_layout(&disk, None).unwrap();
        assert!(layout.warnings.is_empty(), "{name}: {:?}", layout.warnings);
        check_consistent(&layout, name);
        let offsets = table_bytes(&disk, &layout);
        assert!(offsets.len() > 1000, "{name}: {} table bytes", offsets.len());
        let (mut ok, mut err) = (0, 0);
        for at in offsets {
            let original = disk[at];
            for value in [0x00, original ^ 0x81] {
                if value == original {
                    continue;
                }
                disk[at] = value;
                match read_layout(&disk, None) {
                    Ok(mutated) => {
                        check_consistent(&mutated, &format!("{name} byte {at} = {value:#x}"));
                        ok += 1;
                    }
                    Err(e) => {
                        assert!(!e.to_string().contains('\n'), "{e}");
                        err += 1;
                    }
                }
            }
            disk[at] = original;
        }
        // Both outcomes happen: damage is either survived (backup copy, unused bytes) or reported.
        assert!(ok > 0 && err > 0, "{name}: {ok} survived, {err} reported");
    }
}

/// Fuzz regression (crash-3d66d357): 584 bytes with 0x55AA and no entries, read with the
/// device's 4096-byte sectors, gave an MBR structure reaching past the end of the disk.
#[test]
fn a_disk_smaller_than_one_device_sector_is_one_volume() {
    let mut disk = vec![0u8; 584];
    disk[..3].copy_from_slice(&[0x0B, 0x11, 0x30]);
    disk[510] = 0x55;
    disk[511] = 0xAA;
    disk[512..520].copy_from_slice(b"EFI PART");
    let layout = read_layout(&disk, Some(4096)).unwrap();
    assert_eq!(layout.table, TableKind::None);
    check_consistent(&layout, "584 bytes, 4096-byte sectors");
    // With 512-byte sectors it is an empty MBR, its one sector inside the disk.
    let layout = read_layout(&disk, Some(512)).unwrap();
    assert_eq!(layout.table, TableKind::Mbr);
    check_consistent(&layout, "584 bytes, 512-byte sectors");
}

#[test]
fn a_hybrid_mbr_is_reported_and_the_gpt_used() {
    let mut disk = gpt_disk();
    // A second MBR entry mirroring GPT partition 1 (what gdisk's hybrid MBR does).
    set_entry(&mut disk, 0, 1, 0x80, 0x0C, 2048, 2048);
    let layout = read_layout(&disk, None).unwrap();
    assert_eq!(layout.table, TableKind::Gpt);
    assert!(!layout.protective_mbr_only);
    assert!(layout.warnings.iter().any(|w| w.contains("hybrid MBR at byte 0 (1 entries")), "{:?}", layout.warnings);
    assert_eq!(layout.partitions.len(), 2);
}

#[test]
fn a_stale_backup_gpt_header_in_the_last_sector_is_zeroed_and_nothing_else() {
    let mut disk = vec![0xABu8; 4 * MIB as usize];
    let last = disk.len() - 4096;
    disk[last..last + 8].copy_from_slice(b"EFI PART");
    // A last sector that overlaps the restored disk (a target larger by less than a sector)
    // is the disk's own: left as it is.
    let restored_size = last as u64 + 100;
    let mut cursor = std::io::Cursor::new(disk.clone());
    assert_eq!(clear_stale_backup_header(&mut cursor, 4096, restored_size).unwrap(), None);
    assert_eq!(cursor.into_inner(), disk);
    let mut cursor = std::io::Cursor::new(disk);
    assert_eq!(clear_stale_backup_header(&mut cursor, 4096, last as u64).unwrap(), Some(1023));
    let disk = cursor.into_inner();
    assert!(disk[last..].iter().all(|&b| b == 0));
    assert!(disk[..last].iter().all(|&b| b == 0xAB));
    // No signature: left alone.
    let mut cursor = std::io::Cursor::new(disk.clone());
    assert_eq!(clear_stale_backup_header(&mut cursor, 512, 0).unwrap(), None);
    assert_eq!(cursor.into_inner(), disk);
}

/// A disk whose sectors in `bad` cannot be read.
struct Unreadable {
    disk: Vec<u8>,
    bad: std::ops::Range<u64>,
}

impl ReadAt for Unreadable {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        if offset < self.bad.end && self.bad.start < offset + buf.len() as u64 {
            return Err(io::Error::other("Input/output error"));
        }
        self.disk.read_exact_at(buf, offset)
    }
    fn size(&self) -> u64 {
        self.disk.len() as u64
    }
}

#[test]
fn a_failed_read_names_the_table_structure_and_its_byte() {
    let failing = |disk: Vec<u8>, bad: std::ops::Range<u64>| {
        read_layout(&Unreadable { disk, bad }, None).map(|_| ()).unwrap_err().to_string()
    };
    let backup = 4 * MIB - 512;
    assert_eq!(
        failing(gpt_disk(), backup..4 * MIB),
        format!("reading the GPT header (LBA 8191) at byte {backup}: Input/output error")
    );
    assert_eq!(
        failing(gpt_disk(), 8192..8704),
        "reading the GPT partition entry array of the header at LBA 1 at byte 1024: Input/output error"
    );
    assert_eq!(failing(mbr_disk(), 0..512), "reading the disk's first sectors at byte 0: Input/output error");
    assert_eq!(
        failing(mbr_disk(), 4 * MIB..4 * MIB + 512),
        format!("reading the EBR at byte {}: Input/output error", 4 * MIB)
    );
}
