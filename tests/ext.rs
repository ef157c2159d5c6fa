//! ext2/3/4 end to end: `imgstream part` on images made by mke2fs + debugfs
//! (fixtures/gen/ext.sh), judged by tools we did not write:
//! - `dumpe2fs`: each group's "Free blocks:" list, so the expected output is the source with
//!   exactly those blocks (clusters, with bigalloc) zeroed;
//! - `zerofree` on a copy must give the same bytes, but for the superblock fields it updates;
//! - `e2fsck -fn` must find the output clean, and `debugfs rdump` must read every file back
//!   unchanged (and, as root, the kernel's ext4 driver through a loop mount);
//! - `blkid` names the filesystem as we do; `debugfs jr` shows what the needs_recovery hazard
//!   would have destroyed.

#![allow(clippy::indexing_slicing)] // test code: a panic is a failed test, with its message

use crate::util::*;
use std::collections::HashMap;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::process::Command;

pub fn read(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

pub fn path_str(path: &Path) -> &str {
    path.to_str().expect("UTF-8 path")
}

/// `dumpe2fs -h`'s "Name:   value" lines.
pub fn dumpe2fs_header(image: &Path) -> HashMap<String, String> {
    let output = run_ok(Command::new("dumpe2fs").arg("-h").arg(image));
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| line.split_once(':'))
        .map(|(key, value)| (key.trim().to_owned(), value.trim().to_owned()))
        .collect()
}

pub fn header_number(header: &HashMap<String, String>, key: &str) -> usize {
    header.get(key).unwrap_or_else(|| panic!("dumpe2fs -h has no {key:?}")).parse().unwrap()
}

/// The free byte ranges per dumpe2fs's per-group "Free blocks:" lists. With bigalloc they name
/// the first block of each free cluster, so a run `a-b` covers blocks a to b + ratio - 1.
pub(crate) fn dumpe2fs_free(image: &Path) -> Vec<Range<usize>> {
    let header = dumpe2fs_header(image);
    let block = header_number(&header, "Block size");
    let ratio = header.get("Cluster size").map_or(1, |_| header_number(&header, "Cluster size") / block);
    let output = run_ok(Command::new("dumpe2fs").arg(image));
    let mut free = Vec::new();
    let mut groups = 0;
    for line in String::from_utf8_lossy(&output.stdout).lines() {
        let Some(list) = line.strip_prefix("  Free blocks: ") else { continue };
        groups += 1;
        for item in list.split(", ").map(str::trim).filter(|s| !s.is_empty()) {
            let (first, last) = item.split_once('-').unwrap_or((item, item));
            let (first, last): (usize, usize) = (first.parse().unwrap(), last.parse().unwrap());
            free.push(first * block..(last + ratio) * block);
        }
    }
    assert_eq!(groups, header_number(&header, "Block count").div_ceil(header_number(&header, "Blocks per group")));
    free
}

/// The source with every block dumpe2fs lists as free zeroed.
pub(crate) fn expected_from_dumpe2fs(image: &Path, source: &[u8]) -> Vec<u8> {
    let mut expected = source.to_vec();
    for range in dumpe2fs_free(image) {
        expected[range].fill(0);
    }
    expected
}

/// `imgstream part` with extra arguments, to a file next to the image.
fn part_to_file(image: &Path, args: &[&str], name: &str) -> (PathBuf, Vec<u8>) {
    let mut all = vec!["part"];
    all.extend_from_slice(args);
    all.push(path_str(image));
    let out = imgstream_ok(&all);
    let path = image.with_file_name(name);
    std::fs::write(&path, &out).unwrap();
    (path, out)
}

pub fn have_e2fsprogs() -> bool {
    ["dumpe2fs", "debugfs", "e2fsck"].iter().all(|t| have_tool(t))
}

#[test]
fn ext_output_is_the_source_with_exactly_the_dumpe2fs_free_blocks_zeroed() {
    if !have_e2fsprogs() {
        return;
    }
    for name in fixtures_with_prefix("ext-") {
        let dir = scratch();
        let image = fixture(&name, dir.path());
        let before = sha256(&image);
        let source = read(&image);
        let (_, out) = part_to_file(&image, &["--threads", "1"], "out.img");
        let expected = expected_from_dumpe2fs(&image, &source);
        assert_same_bytes(&format!("{name} vs dumpe2fs"), &out, &expected);
        // The stamp pattern and deleted files' data are really there to be zeroed.
        let zeroed = source.iter().zip(&out).filter(|(s, o)| s != o).count();
        assert!(zeroed > source.len() / 10, "{name}: only {zeroed} bytes changed, the fixture hides bugs");
        for (threads, block) in [("8", "4K"), ("3", "64K"), ("2", "4M")] {
            let again = imgstream_ok(&["part", path_str(&image), "--threads", threads, "--block-size", block]);
            assert!(again == out, "{name}: output differs with {threads} threads and {block} blocks");
        }
        assert_eq!(sha256(&image), before, "{name}: the source changed");
    }
}

#[test]
fn ext_output_passes_e2fsck_and_every_file_reads_back() {
    if !have_e2fsprogs() {
        return;
    }
    for name in fixtures_with_prefix("ext-") {
        let dir = scratch();
        let image = fixture(&name, dir.path());
        let (output_image, _) = part_to_file(&image, &[], "out.img");
        let fsck = Command::new("e2fsck").arg("-fn").arg(&output_image).output().unwrap();
        assert!(
            fsck.status.success(),
            "{name}: e2fsck -fn on the output: {}\n{}",
            fsck.status,
            String::from_utf8_lossy(&fsck.stdout)
        );
        let (from_source, from_output) = (dir.path().join("source-files"), dir.path().join("output-files"));
        for (img, to) in [(&image, &from_source), (&output_image, &from_output)] {
            std::fs::create_dir(to).unwrap();
            run_ok(Command::new("debugfs").arg("-R").arg(format!("rdump / {}", to.display())).arg(img));
        }
        let files = compare_trees(&from_source, &from_output);
        assert!(files >= 40, "{name}: only {files} files dumped");
    }
}

/// Asserts two directory trees hold the same names, file contents and symlink targets;
/// returns the number of files compared.
pub fn compare_trees(a: &Path, b: &Path) -> usize {
    let mut names_a: Vec<_> = std::fs::read_dir(a).unwrap().map(|e| e.unwrap().file_name()).collect();
    let mut names_b: Vec<_> = std::fs::read_dir(b).unwrap().map(|e| e.unwrap().file_name()).collect();
    names_a.sort();
    names_b.sort();
    assert_eq!(names_a, names_b, "entries of {} and {}", a.display(), b.display());
    let mut files = 0;
    for name in names_a {
        let (pa, pb) = (a.join(&name), b.join(&name));
        let kind = std::fs::symlink_metadata(&pa).unwrap().file_type();
        if kind.is_symlink() {
            assert_eq!(std::fs::read_link(&pa).unwrap(), std::fs::read_link(&pb).unwrap(), "{}", pa.display());
        } else if kind.is_dir() {
            files += compare_trees(&pa, &pb);
        } else {
            assert!(read(&pa) == read(&pb), "{} differs", pa.display());
            files += 1;
        }
    }
    files
}

/// Superblock fields that zerofree's ext2fs_close updates itself (absolute offsets in the
/// primary superblock): s_wtime, s_kbytes_written, s_wtime_hi, s_checksum.
const ZEROFREE_FIELDS: [Range<usize>; 4] =
    [1024 + 0x30..1024 + 0x34, 1024 + 0x178..1024 + 0x180, 1024 + 0x274..1024 + 0x275, 1024 + 0x3FC..1024 + 0x400];

#[test]
fn ext_output_equals_zerofree_but_for_the_superblock_fields_it_updates() {
    if !have_tool("zerofree") {
        return;
    }
    for name in fixtures_with_prefix("ext-") {
        let dir = scratch();
        let image = fixture(&name, dir.path());
        let out = imgstream_ok(&["part", path_str(&image)]);
        let zerofreed = dir.path().join("zerofree.img");
        std::fs::copy(&image, &zerofreed).unwrap();
        run_ok(Command::new("zerofree").arg(&zerofreed));
        let mut theirs = read(&zerofreed);
        let mut ours = out.clone();
        let mut masked = 0;
        for range in ZEROFREE_FIELDS {
            masked += theirs[range.clone()].iter().zip(&ours[range.clone()]).filter(|(a, b)| a != b).count();
            theirs[range.clone()].fill(0);
            ours[range].fill(0);
        }
        assert_same_bytes(&format!("{name} vs zerofree"), &ours, &theirs);
        assert!(masked <= 16, "{name}: {masked} masked bytes differ");
    }
}

#[test]
fn ext_names_and_details_match_blkid_and_dumpe2fs() {
    if !have_tool("blkid") || !have_tool("dumpe2fs") {
        return;
    }
    for name in fixtures_with_prefix("ext-") {
        let dir = scratch();
        let image = fixture(&name, dir.path());
        let blkid = run_ok(Command::new("blkid").args(["-p", "-o", "value", "-s", "TYPE"]).arg(&image));
        let info: serde_json::Value =
            serde_json::from_slice(&imgstream_ok(&["info", "--json", path_str(&image)])).unwrap();
        let volume = &info["volume"];
        assert_eq!(volume["filesystem"], String::from_utf8_lossy(&blkid.stdout).trim(), "{name}");
        let header = dumpe2fs_header(&image);
        let details = &volume["details"];
        for (ours, theirs) in [
            ("block_size", "Block size"),
            ("block_count", "Block count"),
            ("free_blocks", "Free blocks"),
            ("uuid", "Filesystem UUID"),
            ("label", "Filesystem volume name"),
            ("features", "Filesystem features"),
        ] {
            assert_eq!(details[ours].as_str(), header.get(theirs).map(String::as_str), "{name}: {ours}");
        }
        let cluster = header.get("Cluster size").filter(|_| header["Filesystem features"].contains("bigalloc"));
        assert_eq!(details["cluster_size"].as_str(), cluster.map(String::as_str), "{name}: cluster size");
        let free = volume["free"].as_u64().unwrap();
        let dumpe2fs_free_bytes: usize = dumpe2fs_free(&image).iter().map(|r| r.len()).sum();
        assert_eq!(free, dumpe2fs_free_bytes as u64, "{name}: free bytes");
    }
}

#[test]
fn ext_needs_recovery_keeps_the_blocks_the_journal_allocates() {
    if !have_e2fsprogs() {
        return;
    }
    let dir = scratch();
    let image = fixture("extbad-needs-recovery", dir.path());
    let source = read(&image);
    let output = run_ok(imgstream().args(["part", path_str(&image)]));
    assert!(!String::from_utf8_lossy(&output.stderr).contains("warning"), "{:?}", output.stderr);
    let info = String::from_utf8(imgstream_ok(&["info", path_str(&image)])).unwrap();
    assert!(info.contains("needs recovery: 1 transactions, 1 bitmap copies; elided safely"), "{info}");
    let raw = imgstream_ok(&["part", "--raw", path_str(&image)]);
    assert!(raw == source, "--raw is not an exact copy");

    // Replaying the journal (debugfs jr, on a copy) marks blocks used that the on-disk bitmap
    // shows free: their data must be in the output, with everything else the bitmaps keep.
    let header = dumpe2fs_header(&image);
    let block = header_number(&header, "Block size");
    let dump = String::from_utf8(run_ok(Command::new("dumpe2fs").arg(&image)).stdout).unwrap();
    let bitmaps: Vec<(usize, usize)> = dump
        .split("\nGroup ")
        .skip(1)
        .filter(|g| g.starts_with(|c: char| c.is_ascii_digit()) && !g.lines().next().unwrap().contains("BLOCK_UNINIT"))
        .map(|g| {
            let first = g.split("(Blocks ").nth(1).unwrap().split('-').next().unwrap().parse().unwrap();
            let bitmap = g.split("Block bitmap at ").nth(1).unwrap().split(' ').next().unwrap().parse().unwrap();
            (first, bitmap)
        })
        .collect();
    let replayed = dir.path().join("replayed.img");
    std::fs::copy(&image, &replayed).unwrap();
    run_ok(Command::new("debugfs").args(["-w", "-R", "jr"]).arg(&replayed));
    let after = read(&replayed);
    let bit = |img: &[u8], bitmap: usize, i: usize| img[bitmap * block + i / 8] >> (i % 8) & 1 == 1;
    let mut kept = 0;
    for (first, bitmap) in bitmaps {
        for i in 0..block * 8 {
            let at = (first + i) * block;
            if !bit(&source, bitmap, i) && bit(&after, bitmap, i) && at < source.len() {
                assert!(output.stdout[at..at + block] == source[at..at + block], "block {} was zeroed", first + i);
                kept += usize::from(source[at..at + block].iter().any(|&b| b != 0));
            }
        }
    }
    assert_eq!(kept, 64, "the journal allocates 64 blocks whose data the on-disk bitmap calls free");
    // Only those: every other block dumpe2fs calls free is zeroed.
    let expected = expected_from_dumpe2fs(&image, &source);
    let differing = expected.iter().zip(&output.stdout).filter(|(e, o)| e != o).count();
    assert!(differing > 0 && differing <= 64 * block, "{differing} bytes differ from the on-disk elision");
}

/// Writes `patch` at `offset` in a copy of fixture `name`.
fn corrupted(name: &str, dir: &Path, patches: &[(usize, &[u8])]) -> PathBuf {
    let image = fixture(name, dir);
    let mut bytes = read(&image);
    for (offset, patch) in patches {
        bytes[*offset..*offset + patch.len()].copy_from_slice(patch);
    }
    std::fs::write(&image, bytes).unwrap();
    image
}

#[test]
fn ext_corrupt_metadata_fails_with_one_line_naming_the_structure_and_offset() {
    // ext-ext2 has no checksums, so a field can be changed alone; ext-ext4 has them all.
    // ext-ext2's descriptor table is block 2 (1 KiB blocks); ext-ext4's is block 1 (4 KiB).
    let cases: [(&str, &str, usize, &[u8], &str); 5] = [
        (
            "descriptor past the end",
            "ext-ext2",
            2048 + 32,
            &u32::MAX.to_le_bytes(),
            "group descriptor 1 at byte 2080: block bitmap at block 4294967295 lies outside its group",
        ),
        ("bad descriptor checksum", "ext-ext4", 4096 + 64 + 0x0C, &[0xAB], "group descriptor 1 at byte 4190: checksum"),
        ("bad superblock checksum", "ext-ext4", 1024 + 0x78, b"X", "superblock at byte 2044: checksum"),
        (
            "hostile s_log_block_size",
            "ext-ext2",
            1024 + 0x18,
            &20u32.to_le_bytes(),
            "superblock at byte 1048: s_log_block_size 20 is out of range",
        ),
        (
            "hostile s_blocks_per_group",
            "ext-ext2",
            1024 + 0x20,
            &u32::MAX.to_le_bytes(),
            "superblock at byte 1056: s_blocks_per_group 4294967295",
        ),
    ];
    for (what, name, offset, patch, message) in cases {
        let dir = scratch();
        let image = corrupted(name, dir.path(), &[(offset, patch)]);
        let stderr = run_fails(imgstream().args(["part", path_str(&image)]), 1);
        assert!(stderr.starts_with("imgstream: error: ") && stderr.contains(message), "{what}: {stderr}");
        assert_eq!(stderr.trim_end().lines().count(), 1, "{what}: {stderr}");
        assert!(imgstream_ok(&["part", "--raw", path_str(&image)]) == read(&image), "{what}: --raw is not a copy");
    }
}

#[test]
fn ext_truncated_image_fails_and_bad_magic_is_copied_raw() {
    let dir = scratch();
    let image = fixture("ext-ext4", dir.path());
    let bytes = read(&image);
    let truncated = dir.path().join("truncated.img");
    std::fs::write(&truncated, &bytes[..bytes.len() / 4]).unwrap();
    let stderr = run_fails(imgstream().args(["part", path_str(&truncated)]), 1);
    assert!(stderr.contains("superblock at byte 1028: truncated: the filesystem has 4000 blocks"), "{stderr}");
    // Without the magic nothing says it is ext: an unknown volume is copied whole, with a warning.
    let mut no_magic = bytes.clone();
    no_magic[1024 + 0x38] = 0;
    std::fs::write(&image, &no_magic).unwrap();
    let output = run_ok(imgstream().args(["part", path_str(&image)]));
    assert!(String::from_utf8_lossy(&output.stderr).contains("no known filesystem"));
    assert!(output.stdout == no_magic);
}

#[test]
fn ext_journal_device_is_copied_raw_with_a_warning() {
    if !have_tool("mke2fs") {
        return;
    }
    let dir = scratch();
    let image = dir.path().join("journal.img");
    std::fs::write(&image, vec![0x5A; 4 << 20]).unwrap();
    run_ok(Command::new("mke2fs").args(["-F", "-q", "-O", "journal_dev", "-b", "4096"]).arg(&image));
    let output = run_ok(imgstream().args(["part", path_str(&image)]));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("imgstream: warning:") && stderr.contains("external journal device"), "{stderr}");
    assert!(output.stdout == read(&image));
}

/// Runs `f` with `image` attached read-only to a loop device, detaching it in every case.
fn with_loop_device<T>(image: &Path, f: impl FnOnce(&str) -> T) -> T {
    with_loop_device_mode(image, "-r", f)
}

/// `with_loop_device` with losetup's `-r` (read-only) or `-f`-only (read-write) mode.
pub fn with_loop_device_mode<T>(image: &Path, mode: &str, f: impl FnOnce(&str) -> T) -> T {
    let mut args = vec!["-f", "--show"];
    if mode == "-r" {
        args.insert(0, "-r");
    }
    let output = run_ok(Command::new("losetup").args(&args).arg(image));
    let device = String::from_utf8(output.stdout).unwrap().trim().to_owned();
    struct Detach(String);
    impl Drop for Detach {
        fn drop(&mut self) {
            let _ = Command::new("losetup").args(["-d", &self.0]).status();
        }
    }
    let _detach = Detach(device.clone());
    f(&device)
}

/// Mounts `device` read-only (no journal replay) on `dir`, runs `f`, unmounts in every case.
fn with_mount<T>(device: &str, dir: &Path, f: impl FnOnce() -> T) -> T {
    with_mount_options(device, dir, "ro,noload", f)
}

pub fn with_mount_options<T>(device: &str, dir: &Path, options: &str, f: impl FnOnce() -> T) -> T {
    std::fs::create_dir_all(dir).unwrap();
    run_ok(Command::new("mount").args(["-o", options, device]).arg(dir));
    struct Unmount(PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg(&self.0).status();
        }
    }
    let _unmount = Unmount(dir.to_owned());
    f()
}

#[test]
fn root_ext_loop_device_source_and_kernel_mount_of_the_output() {
    if !is_root() || !have_tool("losetup") {
        return;
    }
    for name in ["ext-ext4", "ext-1k", "ext-bigalloc", "ext-metabg"] {
        let dir = scratch();
        let image = fixture(name, dir.path());
        let from_file = imgstream_ok(&["part", path_str(&image)]);
        let output_image = dir.path().join("out.img");
        std::fs::write(&output_image, &from_file).unwrap();
        with_loop_device(&image, |source_device| {
            let from_device = imgstream_ok(&["part", source_device]);
            assert!(from_device == from_file, "{name}: the loop device gives other bytes than the file");
            with_loop_device(&output_image, |output_device| {
                let (a, b) = (dir.path().join("mnt-source"), dir.path().join("mnt-output"));
                with_mount(source_device, &a, || {
                    with_mount(output_device, &b, || {
                        let files = compare_trees(&a, &b);
                        assert!(files >= 40, "{name}: {files} files");
                    })
                })
            })
        });
    }
}

/// Bytes of `path`, written by the test to a file in the mounted filesystem.
pub fn write_random_file(path: &Path, len: usize, seed: u64) {
    let mut state = seed | 1;
    let bytes: Vec<u8> = (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 24) as u8
        })
        .collect();
    std::fs::write(path, bytes).unwrap();
}

#[test]
fn root_ext_images_written_by_the_kernel_frozen_live_and_unmounted() {
    // The kernel, not e2fsprogs, writes the bitmaps and group descriptors here. A copy taken
    // under fsfreeze (what an LVM snapshot sees) must be clean and consistent; a copy of the
    // live mounted device has needs_recovery set and is analysed; after umount, clean.
    if !is_root() || !have_tool("losetup") || !have_tool("fsfreeze") || !have_e2fsprogs() {
        return;
    }
    for name in ["ext-ext4", "ext-1k", "ext-bigalloc", "ext-ext3"] {
        let dir = scratch();
        let image = fixture(name, dir.path());
        let (frozen, live) = (dir.path().join("frozen.img"), dir.path().join("live.img"));
        let mount_point = dir.path().join("mnt");
        with_loop_device_mode(&image, "rw", |device| {
            with_mount_options(device, &mount_point, "rw", || {
                write_random_file(&mount_point.join("new1"), 300_000, 1);
                std::fs::remove_file(mount_point.join("big.bin")).unwrap();
                std::fs::remove_dir_all(mount_point.join("many")).unwrap();
                run_ok(&mut Command::new("sync"));
                write_random_file(&mount_point.join("new2"), 200_000, 2);
                run_ok(Command::new("fsfreeze").arg("-f").arg(&mount_point));
                let copied = std::fs::copy(&image, &frozen);
                run_ok(Command::new("fsfreeze").arg("-u").arg(&mount_point));
                copied.unwrap();
                write_random_file(&mount_point.join("new3"), 100_000, 3);
                std::fs::copy(&image, &live).unwrap();
            })
        });
        for (what, img) in [("frozen", &frozen), ("unmounted", &image)] {
            let header = dumpe2fs_header(img);
            assert!(!header["Filesystem features"].contains("needs_recovery"), "{name} {what}: needs_recovery");
            let out = imgstream_ok(&["part", path_str(img)]);
            assert_same_bytes(&format!("{name} {what} vs dumpe2fs"), &out, &expected_from_dumpe2fs(img, &read(img)));
            let output_image = dir.path().join(format!("{what}-out.img"));
            std::fs::write(&output_image, &out).unwrap();
            let fsck = Command::new("e2fsck").arg("-fn").arg(&output_image).output().unwrap();
            assert!(fsck.status.success(), "{name} {what}: e2fsck -fn: {}", String::from_utf8_lossy(&fsck.stdout));
            let (a, b) = (dir.path().join(format!("{what}-a")), dir.path().join(format!("{what}-b")));
            for (from, to) in [(img, &a), (&output_image, &b)] {
                std::fs::create_dir(to).unwrap();
                run_ok(Command::new("debugfs").arg("-R").arg(format!("rdump / {}", to.display())).arg(from));
            }
            compare_trees(&a, &b);
        }
        // The live copy's journal is analysed (tests/journal.rs judges such copies by replay).
        let info = String::from_utf8(imgstream_ok(&["info", path_str(&live)])).unwrap();
        assert!(info.contains("needs recovery:") && info.contains("elided safely"), "{name} live: {info}");
    }
}
