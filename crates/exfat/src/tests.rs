//! Unit tests on the committed fixtures (made by mkfs.exfat and exfat-fuse), one corrupted field
//! at a time. The oracle comparisons (partclone.exfat, fsck.exfat) live in tests/exfat.rs.

#![allow(clippy::indexing_slicing)] // test code on images it loaded itself

use super::*;
use imgstream_volume::{Classify, ErrorClass};
use std::process::Command;

fn fixture(name: &str) -> Vec<u8> {
    let path = format!("{}/../../fixtures/{name}.img.zst", env!("CARGO_MANIFEST_DIR"));
    let output = Command::new("zstd").args(["-q", "-d", "-c", &path]).output().expect("run zstd");
    assert!(output.status.success(), "zstd -d {path}: {}", String::from_utf8_lossy(&output.stderr));
    output.stdout
}

fn put32(image: &mut [u8], at: usize, value: u32) {
    image[at..at + 4].copy_from_slice(&value.to_le_bytes());
}

/// Rewrites the main boot region's checksum sector after a deliberate change to sectors 0-10.
fn fix_checksum(image: &mut [u8]) {
    let sector = 512; // the fixtures use 512-byte sectors
    let checksum = boot_region::boot_checksum(&image[..12 * sector], sector);
    for at in (11 * sector..12 * sector).step_by(4) {
        put32(image, at, checksum);
    }
}

fn error_of(image: &[u8]) -> Error {
    match analyze(&image) {
        Ok(allocation) => panic!("expected an error, got {allocation:?}"),
        Err(error) => error,
    }
}

fn root_directory_offset(image: &[u8]) -> usize {
    let boot = BootSector::parse(&image[..512], image.len() as u64).unwrap();
    boot.cluster_offset(u64::from(boot.root_cluster)) as usize
}

#[test]
fn fixtures_parse_and_keep_everything_outside_the_heap() {
    for name in ["exfat-4k", "exfat-512"] {
        let image = fixture(name);
        assert!(detect(&image).unwrap());
        let allocation = analyze(&image).unwrap_or_else(|e| panic!("{name}: {e}"));
        let boot = BootSector::parse(&image[..512], image.len() as u64).unwrap();
        assert_eq!(allocation.filesystem, "exfat");
        assert_eq!(allocation.unit, boot.cluster_size);
        assert!(allocation.used.contains_range(0..boot.heap_start()));
        assert!(allocation.used.contains_range(boot.heap_end()..image.len() as u64));
        assert!(allocation.used.end() <= image.len() as u64);
        assert!(allocation.unsafe_reasons.is_empty() && allocation.warnings.is_empty(), "{allocation:?}");
        // Used heap bytes come in whole clusters.
        let heap_used = allocation.used.covered_in(boot.heap_start()..boot.heap_end());
        assert_eq!(heap_used % boot.cluster_size, 0);
    }
}

#[test]
fn volume_dirty_is_refused_and_media_failure_warned() {
    let mut image = fixture("exfat-4k");
    image[106] |= 0x02; // VolumeFlags is outside the checksum: no fix needed
    let allocation = analyze(&image).unwrap();
    assert_eq!(allocation.unsafe_reasons.len(), 1);
    assert!(allocation.unsafe_reasons[0].contains("VolumeDirty"));
    image[106] = 0x04;
    let allocation = analyze(&image).unwrap();
    assert!(allocation.unsafe_reasons.is_empty());
    assert!(allocation.warnings.iter().any(|w| w.contains("MediaFailure")));
}

#[test]
fn boot_checksums_are_verified() {
    let good = fixture("exfat-4k");
    let mut main = good.clone();
    main[512 * 9 + 7] ^= 0x40; // OEM parameters sector: covered by the checksum
    let error = error_of(&main);
    assert_eq!(error.class(), ErrorClass::Corrupt);
    assert!(error.to_string().starts_with("main boot region at byte 5632: boot checksum is 0x"), "{error}");

    let mut backup = good.clone();
    backup[12 * 512 + 512 * 2] ^= 1;
    let allocation = analyze(&backup).unwrap();
    assert!(
        allocation.warnings.iter().any(|w| w.contains("backup boot region at byte 11776: boot checksum")),
        "{:?}",
        allocation.warnings
    );

    let mut differing = good;
    differing[12 * 512 + 100] ^= 1; // VolumeSerialNumber of the backup
    let sector = 512;
    let checksum = boot_region::boot_checksum(&differing[12 * sector..24 * sector], sector);
    for at in (23 * sector..24 * sector).step_by(4) {
        put32(&mut differing, at, checksum);
    }
    let allocation = analyze(&differing).unwrap();
    assert!(
        allocation.warnings.iter().any(|w| w.contains("backup boot sector at byte 6144 differs")),
        "{:?}",
        allocation.warnings
    );
}

#[test]
fn corrupt_boot_sector_fields_give_clear_errors() {
    let good = fixture("exfat-4k");
    let size = good.len() as u32;
    let cases: Vec<(&str, usize, Vec<u8>)> = vec![
        ("BytesPerSectorShift 8 is outside 9..=12", 108, vec![8]),
        ("SectorsPerClusterShift 17 makes clusters larger than 32 MiB", 109, vec![17]),
        ("NumberOfFats 0 is not 1 or 2", 110, vec![0]),
        ("ClusterCount 0 is out of range", 92, 0u32.to_le_bytes().to_vec()),
        ("(cluster count out of range)", 92, 0xFFFF_FFF0u32.to_le_bytes().to_vec()),
        ("does not fit in the volume", 72, u64::from(size).to_le_bytes().to_vec()),
        ("FatOffset 3 lies inside the boot regions", 80, 3u32.to_le_bytes().to_vec()),
        ("past ClusterHeapOffset", 84, 0x10_0000u32.to_le_bytes().to_vec()),
        ("FatLength 1 sectors cannot hold", 84, 1u32.to_le_bytes().to_vec()),
        ("FirstClusterOfRootDirectory 1 is outside", 96, 1u32.to_le_bytes().to_vec()),
        ("FirstClusterOfRootDirectory 99999 is outside", 96, 99999u32.to_le_bytes().to_vec()),
        ("MustBeZero field is not zero", 11, vec![0x02]),
        ("BootSignature is 0x0000", 510, vec![0, 0]),
        ("JumpBoot is", 1, vec![0x3C]),
    ];
    for (expected, at, bytes) in cases {
        let mut image = good.clone();
        image[at..at + bytes.len()].copy_from_slice(&bytes);
        fix_checksum(&mut image);
        let error = error_of(&image);
        assert_eq!(error.class(), ErrorClass::Corrupt, "{error}");
        let message = error.to_string();
        assert!(message.contains(expected), "expected {expected:?} in {message:?}");
        assert!(message.contains("main boot sector at byte"), "{message}");
    }
    let mut newer = good;
    newer[105] = 2;
    fix_checksum(&mut newer);
    assert_eq!(error_of(&newer).class(), ErrorClass::Unsupported);
}

#[test]
fn the_bitmap_must_exist_and_cover_the_system_files() {
    let good = fixture("exfat-4k");
    let root = root_directory_offset(&good);
    let bitmap_entry = (0..good.len()).step_by(32).map(|i| root + i).find(|&at| good[at] == 0x81).unwrap();

    let mut no_bitmap = good.clone();
    no_bitmap[bitmap_entry] = 0x01; // not in use
    assert!(error_of(&no_bitmap).to_string().contains("no Allocation Bitmap entry (type 0x81)"));

    let mut short = good.clone();
    put32(&mut short, bitmap_entry + 24, 3);
    assert!(error_of(&short).to_string().contains("DataLength 3 is shorter"));

    let mut outside = good.clone();
    put32(&mut outside, bitmap_entry + 20, 0x00FF_FFFF);
    assert!(error_of(&outside).to_string().contains("FirstCluster 16777215"));

    // Clear the bitmap's bit for the root directory's cluster.
    let boot = BootSector::parse(&good[..512], good.len() as u64).unwrap();
    let first_cluster = u32::from_le_bytes(good[bitmap_entry + 20..bitmap_entry + 24].try_into().unwrap());
    let bitmap = boot.cluster_offset(u64::from(first_cluster)) as usize;
    let bit = u64::from(boot.root_cluster) - 2;
    let mut root_free = good;
    root_free[bitmap + (bit / 8) as usize] &= !(1 << (bit % 8));
    let message = error_of(&root_free).to_string();
    assert!(
        message.contains(&format!("cluster {} of the root directory is marked free", boot.root_cluster)),
        "{message}"
    );
}

#[test]
fn root_directory_chain_loops_and_truncation_are_errors() {
    let good = fixture("exfat-512");
    let boot = BootSector::parse(&good[..512], good.len() as u64).unwrap();
    let mut looped = good.clone();
    let entry = (boot.active_fat_offset() + u64::from(boot.root_cluster) * 4) as usize;
    put32(&mut looped, entry, boot.root_cluster);
    assert!(error_of(&looped).to_string().contains("cluster chain is longer than"));

    let mut wild = good.clone();
    put32(&mut wild, entry, 0x7FFF_0000);
    assert!(error_of(&wild).to_string().contains("cluster chain reaches cluster 2147418112"));

    for len in [0, 100, 511, 512, 6000, 12 * 512, 24 * 512, boot.heap_start() as usize, good.len() - 1] {
        let result = analyze(&&good[..len]);
        assert!(result.is_err(), "truncated to {len}: {result:?}");
    }
    assert!(!detect(&&good[..511]).unwrap());
}

#[test]
fn every_single_byte_corruption_of_the_metadata_is_handled() {
    let mut image = fixture("exfat-512");
    let size = image.len() as u64;
    let root = root_directory_offset(&image);
    let sector = 512;
    let targets: Vec<usize> = (0..sector).chain(root..root + 256).collect();
    for at in targets {
        let original = image[at];
        for value in [0x00, 0xFF, original ^ 0x01, original ^ 0x80] {
            image[at] = value;
            if at < sector {
                fix_checksum(&mut image);
            }
            if let Ok(allocation) = analyze(&image) {
                assert!(allocation.used.end() <= size, "byte {at} = {value:#x}: used past the end");
                assert!(allocation.used.contains_range(0..12 * 512), "byte {at} = {value:#x}: boot region elided");
            }
        }
        image[at] = original;
        fix_checksum(&mut image);
    }
}

/// The byte offset of the allocation bitmap and the heap used per the bitmap alone.
fn bitmap_offset(image: &[u8], boot: &BootSector) -> usize {
    let root = root_directory_offset(image);
    let entry = (0..image.len()).step_by(32).map(|i| root + i).find(|&at| image[at] == 0x81).unwrap();
    boot.cluster_offset(u64::from(u32::from_le_bytes(image[entry + 20..entry + 24].try_into().unwrap()))) as usize
}

#[test]
fn on_clean_fixtures_the_tree_owns_exactly_the_clusters_the_bitmap_marks() {
    for name in ["exfat-4k", "exfat-512"] {
        let image = fixture(name);
        let boot = BootSector::parse(&image[..512], image.len() as u64).unwrap();
        let root = directory::read_root(&image, &boot).unwrap();
        let found = files::file_clusters(&image, &boot, &root.clusters).unwrap();
        let mut bitmap = RangeSet::new();
        let entry = root.bitmaps.first().unwrap();
        bitmap::read_into(&image, &boot, entry, &mut bitmap).unwrap();
        assert_eq!(found.clusters, bitmap, "{name}");
        assert!(found.files >= 5, "{name}: {} files", found.files);
        let allocation = analyze(&image).unwrap();
        assert!(allocation.warnings.is_empty(), "{name}: {:?}", allocation.warnings);
    }
}

#[test]
fn a_file_cluster_cleared_in_the_bitmap_is_kept_with_a_warning() {
    let good = fixture("exfat-512");
    let boot = BootSector::parse(&good[..512], good.len() as u64).unwrap();
    let bitmap = bitmap_offset(&good, &boot);
    let heap = boot.heap_start()..boot.heap_end();
    let clean = analyze(&good).unwrap();
    // The last used cluster of the heap (a file's, not a system file's).
    let last = clean.used.overlapping(heap.clone()).last().unwrap().end - boot.cluster_size;
    let bit = ((last - heap.start) / boot.cluster_size) as usize;
    let mut flipped = good.clone();
    flipped[bitmap + bit / 8] &= !(1 << (bit % 8));
    let allocation = analyze(&flipped).unwrap();
    assert_eq!(allocation.used, clean.used, "the cleared cluster must be kept");
    let warning = allocation.warnings.join("\n");
    assert!(
        warning.contains(&format!(
            "1 clusters used by files but free in the allocation bitmap (the first is cluster {})",
            bit + 2
        )),
        "{warning}"
    );
    let detail = &allocation.details.iter().find(|(k, _)| k == "files cross-checked").unwrap().1;
    assert!(detail.contains("1 clusters of theirs free"), "{detail}");
}
