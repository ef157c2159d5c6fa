#![allow(clippy::indexing_slicing)] // test code on images it built itself

//! Unit tests on in-memory volumes laid out by hand from fatgen103's formulas, one corrupted
//! field at a time. The fixture-based oracle tests live in tests/fat.rs.

use super::*;
use imgstream_volume::{Classify, ErrorClass};

/// A hand-built volume: 512-byte sectors, 1 sector per cluster, 1 reserved sector (4 for
/// FAT32, with FSInfo at 1 and the backup boot sector at 2), 2 FATs.
struct Layout {
    fat_type: FatType,
    clusters: u64,
    fat_sectors: u64,
    root_entries: u64,
    reserved: u64,
}

impl Layout {
    fn new(fat_type: FatType, clusters: u64) -> Self {
        let bits = fat_type.entry_bits();
        let fat_sectors = ((clusters + 2) * bits).div_ceil(8).div_ceil(512);
        let (root_entries, reserved) = if fat_type == FatType::Fat32 { (0, 4) } else { (512, 1) };
        Self { fat_type, clusters, fat_sectors, root_entries, reserved }
    }
    fn data_offset(&self) -> u64 {
        (self.reserved + 2 * self.fat_sectors + self.root_entries * 32 / 512) * 512
    }
    fn total_sectors(&self) -> u64 {
        self.data_offset() / 512 + self.clusters
    }
    fn fat_offset(&self, copy: u64) -> u64 {
        (self.reserved + copy * self.fat_sectors) * 512
    }

    /// The image, with FAT entries 0 and 1 set as mkfs.fat does and nothing allocated.
    fn build(&self) -> Vec<u8> {
        let mut image = vec![0xA5u8; usize::try_from(self.total_sectors() * 512).unwrap()];
        let boot = &mut image[..512];
        boot.fill(0);
        boot[..3].copy_from_slice(&[0xEB, 0x3C, 0x90]);
        boot[3..11].copy_from_slice(b"mkfs.fat");
        put16(boot, 11, 512);
        boot[13] = 1;
        put16(boot, 14, self.reserved as u16);
        boot[16] = 2;
        put16(boot, 17, self.root_entries as u16);
        boot[21] = 0xF8;
        let total = self.total_sectors();
        if total < 0x10000 && self.fat_type != FatType::Fat32 {
            put16(boot, 19, total as u16);
        } else {
            put32(boot, 32, total as u32);
        }
        if self.fat_type == FatType::Fat32 {
            put32(boot, 36, self.fat_sectors as u32);
            put32(boot, 44, 2);
            put16(boot, 48, 1);
            put16(boot, 50, 2);
            boot[66] = 0x29;
        } else {
            put16(boot, 22, self.fat_sectors as u16);
            boot[38] = 0x29;
        }
        boot[510] = 0x55;
        boot[511] = 0xAA;
        if self.fat_type == FatType::Fat32 {
            let boot_copy = image[..512].to_vec();
            image[1024..1536].copy_from_slice(&boot_copy);
            let fsinfo = &mut image[512..1024];
            fsinfo.fill(0);
            put32(fsinfo, 0, 0x4161_5252);
            put32(fsinfo, 484, 0x6141_7272);
            put32(fsinfo, 488, 0xFFFF_FFFF);
            put32(fsinfo, 508, 0xAA55_0000);
            image[1536..2048].fill(0);
        }
        for copy in 0..2 {
            let start = self.fat_offset(copy) as usize;
            image[start..start + (self.fat_sectors * 512) as usize].fill(0);
        }
        let (e0, e1) = match self.fat_type {
            FatType::Fat12 => (0xFF8, 0xFFF),
            FatType::Fat16 => (0xFFF8, 0xFFFF),
            FatType::Fat32 => (0x0FFF_FFF8, 0x0FFF_FFFF),
        };
        self.set_entry(&mut image, 0, e0);
        self.set_entry(&mut image, 1, e1);
        if self.fat_type == FatType::Fat32 {
            self.set_entry(&mut image, 2, 0x0FFF_FFFF); // the root directory
        }
        image
    }

    /// Sets entry `cluster` to `value` in both FAT copies.
    fn set_entry(&self, image: &mut [u8], cluster: u64, value: u32) {
        for copy in 0..2 {
            self.set_entry_in(image, copy, cluster, value);
        }
    }

    fn set_entry_in(&self, image: &mut [u8], copy: u64, cluster: u64, value: u32) {
        let fat = self.fat_offset(copy) as usize;
        match self.fat_type {
            FatType::Fat12 => {
                let at = fat + (cluster * 3 / 2) as usize;
                let pair = u16::from_le_bytes([image[at], image[at + 1]]);
                let pair = if cluster % 2 == 0 {
                    (pair & 0xF000) | (value as u16 & 0xFFF)
                } else {
                    (pair & 0x000F) | ((value as u16) << 4)
                };
                image[at..at + 2].copy_from_slice(&pair.to_le_bytes());
            }
            FatType::Fat16 => put16(image, fat + cluster as usize * 2, value as u16),
            FatType::Fat32 => put32(image, fat + cluster as usize * 4, value),
        }
    }

    fn cluster_range(&self, cluster: u64) -> std::ops::Range<u64> {
        let start = self.data_offset() + (cluster - 2) * 512;
        start..start + 512
    }
}

fn put16(bytes: &mut [u8], at: usize, value: u16) {
    bytes[at..at + 2].copy_from_slice(&value.to_le_bytes());
}

fn put32(bytes: &mut [u8], at: usize, value: u32) {
    bytes[at..at + 4].copy_from_slice(&value.to_le_bytes());
}

/// The used set the specification implies: metadata, non-zero clusters, the tail.
fn expected_used(layout: &Layout, image: &[u8], used_clusters: &[u64]) -> RangeSet {
    let mut used = RangeSet::from_range(0..layout.data_offset());
    for &cluster in used_clusters {
        used.insert(layout.cluster_range(cluster));
    }
    used.insert(layout.data_offset() + layout.clusters * 512..image.len() as u64);
    used
}

/// A named corruption of an image.
type Mutation = Box<dyn Fn(&mut Vec<u8>)>;

fn corrupt_message(image: &[u8]) -> String {
    match analyze(&image) {
        Err(error @ Error::Corrupt { .. }) => {
            assert_eq!(error.class(), ErrorClass::Corrupt);
            error.to_string()
        }
        other => panic!("expected a Corrupt error, got {other:?}"),
    }
}

#[test]
fn fat_type_follows_the_cluster_count_boundaries() {
    for (clusters, fat_type) in [
        (1, FatType::Fat12),
        (4084, FatType::Fat12),
        (4085, FatType::Fat16),
        (65524, FatType::Fat16),
        (65525, FatType::Fat32),
    ] {
        let layout = Layout::new(fat_type, clusters);
        let image = layout.build();
        assert!(detect(&image).unwrap());
        let allocation = analyze(&image).unwrap_or_else(|e| panic!("{clusters} clusters: {e}"));
        assert_eq!(allocation.filesystem, fat_type.name(), "{clusters} clusters");
        assert_eq!(allocation.unit, 512);
        let root = if fat_type == FatType::Fat32 { vec![2] } else { vec![] };
        assert_eq!(allocation.used, expected_used(&layout, &image, &root), "{clusters} clusters");
        assert!(allocation.warnings.is_empty(), "{:?}", allocation.warnings);
    }
}

#[test]
fn non_zero_entries_are_used_whatever_their_value() {
    let layout = Layout::new(FatType::Fat16, 5000);
    let mut image = layout.build();
    // A chain 10 -> 11 -> EOC, a bad cluster, a reserved value, the last cluster.
    for (cluster, value) in [(10, 11), (11, 0xFFFF), (20, 0xFFF7), (30, 0xFFF0), (5001, 0xFFF8)] {
        layout.set_entry(&mut image, cluster, value);
    }
    let allocation = analyze(&image).unwrap();
    assert_eq!(allocation.used, expected_used(&layout, &image, &[10, 11, 20, 30, 5001]));
    let detail = |label: &str| allocation.details.iter().find(|(l, _)| l == label).map(|(_, v)| v.clone());
    assert_eq!(detail("bad clusters").as_deref(), Some("1"));
    assert_eq!(detail("free clusters").as_deref(), Some("4995"));
}

#[test]
fn a_cluster_used_in_any_fat_copy_is_used() {
    let layout = Layout::new(FatType::Fat12, 300);
    let mut image = layout.build();
    layout.set_entry_in(&mut image, 0, 7, 0xFFF);
    layout.set_entry_in(&mut image, 1, 9, 0xFFF);
    let allocation = analyze(&image).unwrap();
    assert_eq!(allocation.used, expected_used(&layout, &image, &[7, 9]));
    assert!(
        allocation.warnings.iter().any(|w| w.contains("disagree on whether 2 clusters")),
        "{:?}",
        allocation.warnings
    );
}

#[test]
fn a_link_to_a_free_cluster_keeps_that_cluster() {
    let layout = Layout::new(FatType::Fat16, 5000);
    let mut image = layout.build();
    layout.set_entry(&mut image, 100, 200); // 200 is free: the FAT contradicts itself
    layout.set_entry(&mut image, 101, 9999); // past the last cluster
    let allocation = analyze(&image).unwrap();
    assert_eq!(allocation.used, expected_used(&layout, &image, &[100, 101, 200]));
    assert!(allocation.warnings.iter().any(|w| w.contains("links to 1 clusters that every FAT copy marks free")));
    assert!(allocation.warnings.iter().any(|w| w.contains("1 links to cluster numbers outside")));
}

#[test]
fn dirty_bits_warn_but_do_not_refuse() {
    for fat_type in [FatType::Fat16, FatType::Fat32] {
        let layout = Layout::new(fat_type, if fat_type == FatType::Fat16 { 5000 } else { 65600 });
        let mut image = layout.build();
        let clean = analyze(&image).unwrap();
        let entry1 = if fat_type == FatType::Fat16 { 0x7FFF } else { 0x07FF_FFFF };
        layout.set_entry_in(&mut image, 0, 1, entry1);
        let dirty = analyze(&image).unwrap();
        assert!(dirty.unsafe_reasons.is_empty());
        assert!(
            dirty.warnings.iter().any(|w| w.contains("not cleanly unmounted (FAT entry 1)")),
            "{:?}",
            dirty.warnings
        );
        assert!(dirty.details.contains(&("dirty".into(), "yes".into())));
        assert!(clean.details.contains(&("dirty".into(), "no".into())));
        assert_eq!(dirty.used, clean.used);
    }
}

#[test]
fn corrupt_boot_sector_fields_give_clear_errors() {
    let layout = Layout::new(FatType::Fat16, 5000);
    let good = layout.build();
    let cases: Vec<(&str, Mutation)> = vec![
        ("sectors per cluster is 0 (zero cluster size)", Box::new(|i| i[13] = 0)),
        ("sectors per cluster 3 is not a power of two", Box::new(|i| i[13] = 3)),
        ("bytes per sector 0 is not", Box::new(|i| put16(i, 11, 0))),
        ("bytes per sector 513 is not", Box::new(|i| put16(i, 11, 513))),
        ("reserved sector count is 0", Box::new(|i| put16(i, 14, 0))),
        ("number of FATs is 0", Box::new(|i| i[16] = 0)),
        ("media descriptor 0x00", Box::new(|i| i[21] = 0)),
        ("signature is 0x0000, expected 0xAA55", Box::new(|i| i[510..512].fill(0))),
        ("past the last sector", Box::new(|i| put16(i, 22, 0xFFFF))),
        ("total sector count is 0", Box::new(|i| put16(i, 19, 0))),
        ("do not fit in the volume", Box::new(|i| put16(i, 19, 0xFFFF))),
        (
            "FAT size is 0",
            Box::new(|i| {
                put16(i, 22, 0);
                put32(i, 36, 0);
            }),
        ),
        (
            "fewer than the 5022 needed for cluster count 5020 (cluster count out of range)",
            Box::new(|i| put16(i, 22, 10)),
        ),
        ("root directory entries, BPB_RootEntCnt is 0", Box::new(|i| put16(i, 17, 0))),
        (
            "no room for a single cluster",
            Box::new(|i| {
                i[13] = 2;
                put16(i, 19, 74);
            }),
        ),
    ];
    for (expected, mutate) in cases {
        let mut image = good.clone();
        mutate(&mut image);
        let message = corrupt_message(&image);
        assert!(message.contains(expected), "expected {expected:?} in {message:?}");
        assert!(message.contains("at byte"), "no offset in {message:?}");
    }
}

#[test]
fn fat32_specific_fields_are_checked() {
    let layout = Layout::new(FatType::Fat32, 65600);
    let good = layout.build();
    let cases: Vec<(&str, Mutation)> = vec![
        ("root directory cluster 1 is outside", Box::new(|i| put32(i, 44, 1))),
        ("root directory cluster 99999 is outside", Box::new(|i| put32(i, 44, 99999))),
        ("FAT32 needs BPB_RootEntCnt = 0", Box::new(|i| put16(i, 17, 16))),
        ("FSInfo sector 9 lies outside the 4 reserved sectors", Box::new(|i| put16(i, 48, 9))),
        ("backup boot sector 4 lies outside", Box::new(|i| put16(i, 50, 4))),
        ("the root directory's first cluster 3 is marked free", Box::new(|i| put32(i, 44, 3))),
        // A FAT16-sized BPB on a volume whose cluster count says FAT32.
        ("makes this FAT32", Box::new(|i| put16(i, 22, 100))),
    ];
    for (expected, mutate) in cases {
        let mut image = good.clone();
        mutate(&mut image);
        let message = corrupt_message(&image);
        assert!(message.contains(expected), "expected {expected:?} in {message:?}");
    }
    let mut newer = good.clone();
    put16(&mut newer, 42, 0x0100);
    assert_eq!(analyze(&newer).unwrap_err().class(), ErrorClass::Unsupported);

    let mut bad_fsinfo = good.clone();
    bad_fsinfo[512] ^= 1;
    let allocation = analyze(&bad_fsinfo).unwrap();
    assert!(allocation.warnings.iter().any(|w| w.contains("FSI_LeadSig at byte 512")), "{:?}", allocation.warnings);

    let mut stale_backup = good;
    stale_backup[1024 + 71] ^= 1;
    let allocation = analyze(&stale_backup).unwrap();
    assert!(allocation.warnings.iter().any(|w| w.contains("backup boot sector 2 at byte 1024 differs")));
}

#[test]
fn a_fat32_layout_with_few_clusters_is_an_error() {
    // FAT32 BPB (BPB_FATSz16 = 0) but only 5000 clusters: fatgen103 calls that FAT16.
    let layout = Layout { fat_type: FatType::Fat32, ..Layout::new(FatType::Fat32, 5000) };
    let message = corrupt_message(&layout.build());
    assert!(message.contains("cluster count 5000 makes this FAT16"), "{message}");
}

#[test]
fn detect_rejects_small_ntfs_exfat_and_blank_volumes() {
    let good = Layout::new(FatType::Fat12, 100).build();
    assert!(detect(&good).unwrap());
    assert!(!detect(&&good[..511]).unwrap());
    assert!(!detect(&vec![0u8; 4096]).unwrap());
    for oem in [b"NTFS    ", b"EXFAT   "] {
        let mut other = good.clone();
        other[3..11].copy_from_slice(oem);
        assert!(!detect(&other).unwrap());
    }
    let mut no_jump = good;
    no_jump[0] = 0x33;
    assert!(!detect(&no_jump).unwrap());
}

#[test]
fn truncated_volumes_give_errors_not_panics() {
    let layout = Layout::new(FatType::Fat16, 5000);
    let image = layout.build();
    for len in [0, 1, 511, 512, 513, 1024, 4096, layout.data_offset() as usize, image.len() - 1] {
        let result = analyze(&&image[..len]);
        assert!(result.is_err(), "truncated to {len} bytes: {result:?}");
    }
    // Longer than the filesystem: the tail is copied.
    let mut longer = image.clone();
    longer.extend_from_slice(&[7; 3000]);
    let allocation = analyze(&longer).unwrap();
    assert!(allocation.used.contains_range(image.len() as u64..longer.len() as u64));
    assert!(!allocation.used.contains(image.len() as u64 - 1));
}

#[test]
fn property_used_clusters_are_exactly_the_non_zero_entries() {
    let mut rng = fastrand::Rng::with_seed(0x5EED_F00D);
    for round in 0..40 {
        let fat_type = [FatType::Fat12, FatType::Fat16][round % 2];
        let clusters = if fat_type == FatType::Fat12 { 1 + rng.u64(..4084) } else { 4085 + rng.u64(..3000) };
        let layout = Layout::new(fat_type, clusters);
        let mut image = layout.build();
        let mut used = Vec::new();
        for cluster in 2..clusters + 2 {
            if rng.u64(..3) == 0 {
                // An end-of-chain mark or a link to a used cluster: never to a free one.
                let value = if rng.u64(..2) == 0 || used.is_empty() {
                    fat_type.link_mask()
                } else {
                    used[rng.usize(..used.len())] as u32
                };
                layout.set_entry(&mut image, cluster, value);
                used.push(cluster);
            }
        }
        let allocation = analyze(&image).unwrap();
        assert_eq!(allocation.used, expected_used(&layout, &image, &used), "round {round}");
        assert!(allocation.warnings.is_empty(), "round {round}: {:?}", allocation.warnings);
        let free = clusters - used.len() as u64;
        assert!(allocation.details.contains(&("free clusters".into(), free.to_string())));
    }
}

#[test]
fn every_single_byte_corruption_of_the_metadata_is_handled() {
    for layout in [Layout::new(FatType::Fat12, 500), Layout::new(FatType::Fat16, 4200)] {
        let good = layout.build();
        let size = good.len() as u64;
        for at in 0..1024.min(layout.data_offset() as usize) {
            for value in [0x00, 0xFF, good[at] ^ 0x01, good[at] ^ 0x80] {
                let mut image = good.clone();
                image[at] = value;
                if let Ok(allocation) = analyze(&image) {
                    assert!(allocation.used.end() <= size, "byte {at} = {value:#x}: used past the end");
                    // The boot sector is reserved whatever the fields say.
                    assert!(allocation.used.contains_range(0..512), "byte {at} = {value:#x}: boot sector elided");
                }
            }
        }
    }
}

fn fixture(name: &str) -> Vec<u8> {
    let path = format!("{}/../../fixtures/{name}.img.zst", env!("CARGO_MANIFEST_DIR"));
    let output = std::process::Command::new("zstd").args(["-q", "-d", "-c", &path]).output().expect("run zstd");
    assert!(output.status.success(), "zstd -d {path}: {}", String::from_utf8_lossy(&output.stderr));
    output.stdout
}

#[test]
fn every_single_byte_corruption_of_a_fixture_boot_sector_is_handled() {
    // fat-12/fat-16: the whole boot sector. fat-32: its BPB, signature and FSInfo fields only
    // (each analysis reads 2 x 260 KiB of FAT, slow in a debug build).
    for (name, targets) in [
        ("fat-12", (0..512).collect::<Vec<usize>>()),
        ("fat-16", (0..512).collect()),
        ("fat-32", (0..90).chain(510..512).chain([512, 996, 1000, 1020]).collect()),
    ] {
        let mut image = fixture(name);
        let size = image.len() as u64;
        let clean = analyze(&image).unwrap_or_else(|e| panic!("{name}: {e}"));
        for at in targets {
            let original = image[at];
            for value in [0x00, 0xFF, original ^ 0x01, original ^ 0x80] {
                image[at] = value;
                match analyze(&image) {
                    Ok(allocation) => {
                        assert!(allocation.used.end() <= size, "{name} byte {at} = {value:#x}: used past the end");
                        assert!(
                            allocation.used.contains_range(0..512),
                            "{name} byte {at} = {value:#x}: boot sector elided"
                        );
                    }
                    Err(error) => assert!(error.to_string().contains("at byte"), "{name} byte {at}: {error}"),
                }
            }
            image[at] = original;
        }
        assert_eq!(analyze(&image).unwrap(), clean);
    }
}
