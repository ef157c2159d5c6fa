//! FAT12/16/32 end to end: `imgstream part` on images made by mkfs.fat + mtools
//! (fixtures/gen/fat.sh), judged by tools we did not write:
//! - mtools: `minfo` gives the geometry and `mshowfat` every file's and directory's clusters,
//!   so the expected output is the source with every other data cluster zeroed;
//! - `partclone.fat -D` (its map of used bytes) as a second opinion (FAT16/32);
//! - `fsck.fat -n` must find the output clean, and `mcopy` must read every file back unchanged.

#![allow(clippy::indexing_slicing)] // test code: a panic is a failed test, with its message

use crate::util::*;
use std::collections::HashMap;
use std::ops::Range;
use std::path::Path;
use std::process::Command;

/// fixtures/gen/fat.sh marks 1 KiB blocks 5000 and 5001 of fat-16 bad: cluster-aligned bytes
/// that no file owns but that the FAT marks used (0xFFF7), so they must be copied.
const FAT16_BAD_BYTES: Range<usize> = 5000 * 1024..5002 * 1024;

fn mtools(tool: &str) -> Command {
    let mut command = Command::new(tool);
    command.env("MTOOLS_SKIP_CHECK", "1");
    command
}

/// `minfo`'s "name: value" and "name=value" lines.
fn minfo(image: &Path) -> HashMap<String, u64> {
    let output = run_ok(mtools("minfo").arg("-i").arg(image).arg("::"));
    let mut fields = HashMap::new();
    for line in String::from_utf8_lossy(&output.stdout).lines() {
        let Some((key, value)) = line.split_once(": ").or_else(|| line.split_once('=')) else { continue };
        let number = value.split_whitespace().next().unwrap_or("");
        if let Ok(n) = number.parse::<u64>() {
            fields.insert(key.trim().to_owned(), n);
        }
    }
    fields
}

/// Geometry as mtools reads it: (data area offset, cluster size, cluster count).
fn geometry(image: &Path) -> (usize, usize, usize) {
    let info = minfo(image);
    let get = |key: &str| *info.get(key).unwrap_or_else(|| panic!("minfo has no {key:?}: {info:?}")) as usize;
    let sector = get("sector size");
    let per_cluster = get("cluster size");
    let fat_sectors = if get("sectors per fat") != 0 { get("sectors per fat") } else { get("Big fatlen") };
    let total = if get("small size") != 0 { get("small size") } else { get("big size") };
    let root_sectors = (get("max available root directory slots") * 32).div_ceil(sector);
    let data_sector = get("reserved (boot) sectors") + get("fats") * fat_sectors + root_sectors;
    (data_sector * sector, per_cluster * sector, (total - data_sector) / per_cluster)
}

/// Every file and directory, as mtools paths ("::/dir/"), the root included.
fn all_paths(image: &Path) -> Vec<String> {
    let output = run_ok(mtools("mdir").args(["-/", "-b", "-a", "-i"]).arg(image).arg("::"));
    let mut paths = vec!["::/".to_owned()];
    paths.extend(String::from_utf8_lossy(&output.stdout).lines().map(str::to_owned).filter(|l| l.starts_with("::/")));
    paths
}

/// Clusters that mshowfat lists for `path`: "<2-3><7>" -> [2, 3, 7].
fn clusters_of(image: &Path, path: &str) -> Vec<usize> {
    let output = run_ok(mtools("mshowfat").arg("-i").arg(image).arg(path.trim_end_matches('/')));
    let text = String::from_utf8_lossy(&output.stdout);
    let mut clusters = Vec::new();
    for run in text.split('<').skip(1) {
        let run = run.split('>').next().unwrap_or("");
        let (first, last) = run.split_once('-').unwrap_or((run, run));
        let (first, last): (usize, usize) = (first.parse().unwrap(), last.parse().unwrap());
        clusters.extend(first..=last);
    }
    clusters
}

/// The source with every data cluster that no file, directory or bad mark owns zeroed.
fn expected_from_mtools(image: &Path, source: &[u8], bad: Option<Range<usize>>) -> Vec<u8> {
    let (data, cluster, count) = geometry(image);
    let mut keep = vec![false; count + 2];
    for path in all_paths(image) {
        for c in clusters_of(image, &path) {
            keep[c] = true;
        }
    }
    let mut expected = source.to_vec();
    for (c, &kept) in keep.iter().enumerate().skip(2) {
        let bytes = data + (c - 2) * cluster..data + (c - 1) * cluster;
        let is_bad = bad.as_ref().is_some_and(|b| b.start < bytes.end && bytes.start < b.end);
        if !kept && !is_bad {
            expected[bytes].fill(0);
        }
    }
    expected
}

/// The source with everything outside partclone's map of used bytes ("+" lines) zeroed
/// (`partclone.<fs> -D` writes that map; tests/exfat.rs uses this too).
pub(crate) fn expected_from_partclone(tool: &str, image: &Path, source: &[u8], dir: &Path) -> Vec<u8> {
    let map = dir.join("partclone.map");
    run_ok(Command::new(tool).args(["-q", "-D", "-s"]).arg(image).arg("-o").arg(&map));
    let mut expected = vec![0u8; source.len()];
    for line in std::fs::read_to_string(&map).unwrap().lines().filter(|l| !l.starts_with('#')) {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if let [pos, size, "+"] = fields[..] {
            let parse = |hex: &str| usize::from_str_radix(hex.trim_start_matches("0x"), 16).unwrap();
            let range = parse(pos)..parse(pos) + parse(size);
            expected[range.clone()].copy_from_slice(&source[range]);
        }
    }
    expected
}

/// `imgstream part SOURCE` gives `out` whatever the thread count and block size.
pub(crate) fn assert_thread_and_block_size_invariant(name: &str, source: &str, out: &[u8]) {
    for (threads, block) in [("4", "4K"), ("3", "64K"), ("2", "4M")] {
        let again = imgstream_ok(&["part", source, "--threads", threads, "--block-size", block]);
        assert!(again == out, "{name}: output differs with {threads} threads and {block} blocks");
    }
}

fn have_fat_tools() -> bool {
    have_tool("minfo")
        && have_tool("mshowfat")
        && have_tool("mcopy")
        && have_tool("fsck.fat")
        && have_tool("partclone.fat")
}

#[test]
fn fat_output_is_the_source_with_exactly_the_free_clusters_zeroed() {
    if !have_fat_tools() {
        return;
    }
    for name in fixtures_with_prefix("fat-") {
        let dir = scratch();
        let image = fixture(&name, dir.path());
        let hash = sha256(&image);
        let source = std::fs::read(&image).unwrap();
        let path = image.to_str().unwrap();
        let out = imgstream_ok(&["part", path, "--threads", "1"]);

        let bad = (name == "fat-16").then_some(FAT16_BAD_BYTES);
        let expected = expected_from_mtools(&image, &source, bad.clone());
        assert_ne!(expected, source, "{name}: no stale data in free clusters, the test would prove nothing");
        assert_same_bytes(&format!("{name} vs mtools"), &out, &expected);

        // partclone 0.3.23 decodes FAT12 wrongly (its map of fat-12 keeps clusters near the end
        // of the volume that no file owns, and misses ones mshowfat lists), so FAT16/32 only.
        // It skips bad clusters, which we copy.
        if name != "fat-12" {
            let mut second = expected_from_partclone("partclone.fat", &image, &source, dir.path());
            if let Some(bad) = bad {
                second[bad.clone()].copy_from_slice(&source[bad]);
            }
            assert_same_bytes(&format!("{name} vs partclone.fat"), &out, &second);
        }

        assert_thread_and_block_size_invariant(&name, path, &out);

        let output_image = dir.path().join("out.img");
        std::fs::write(&output_image, &out).unwrap();
        let fsck = run_ok(Command::new("fsck.fat").arg("-n").arg(&output_image));
        let report = String::from_utf8_lossy(&fsck.stdout);
        assert!(
            !report.to_lowercase().contains("differ") && !report.contains("Free cluster summary"),
            "{name}: {report}"
        );
        for file in all_paths(&image).iter().filter(|p| !p.ends_with('/')) {
            let read = |from: &Path| run_ok(mtools("mcopy").arg("-n").arg("-i").arg(from).arg(file).arg("-")).stdout;
            assert!(read(&output_image) == read(&image), "{name}: {file} differs after imgstream");
        }
        assert_eq!(sha256(&image), hash, "{name}: the source changed");
    }
}

#[test]
fn fat_info_shows_type_cluster_size_and_free_space() {
    if !(have_tool("minfo") && have_tool("fsck.fat")) {
        return;
    }
    for (name, fat_type) in [("fat-12", "fat12"), ("fat-16", "fat16"), ("fat-32", "fat32")] {
        let dir = scratch();
        let image = fixture(name, dir.path());
        let (_, cluster, count) = geometry(&image);
        let text = String::from_utf8(imgstream_ok(&["info", image.to_str().unwrap()])).unwrap();
        assert!(text.lines().any(|l| l.starts_with("filesystem") && l.ends_with(fat_type)), "{name}:\n{text}");
        assert!(
            text.lines().any(|l| l.starts_with("unit") && l.contains(&format!("{cluster} bytes"))),
            "{name}:\n{text}"
        );
        assert!(
            text.lines().any(|l| l.starts_with("clusters") && l.ends_with(&format!(" {count}"))),
            "{name}:\n{text}"
        );
        assert!(text.lines().any(|l| l.starts_with("free")), "{name}:\n{text}");

        // fsck.fat's "N files, USED/TOTAL clusters" (bad clusters count as used): the free bytes
        // `info --json` reports are exactly the free clusters.
        let fsck = run_ok(Command::new("fsck.fat").arg("-n").arg(&image));
        let summary = String::from_utf8_lossy(&fsck.stdout).lines().last().unwrap_or_default().to_owned();
        let counts = summary
            .rsplit(", ")
            .next()
            .and_then(|c| c.strip_suffix(" clusters"))
            .unwrap_or_else(|| panic!("{summary}"));
        let (used, total) = counts.split_once('/').unwrap();
        let free_clusters = total.parse::<u64>().unwrap() - used.parse::<u64>().unwrap();
        let json = String::from_utf8(imgstream_ok(&["info", "--json", image.to_str().unwrap()])).unwrap();
        let expected = format!("\"free\": {},", free_clusters * cluster as u64);
        assert!(json.contains(&expected), "{name}: fsck.fat says {summary}, expected {expected} in\n{json}");
    }
}

#[test]
fn fat_dirty_volume_is_elided_with_a_warning() {
    if !have_fat_tools() {
        return;
    }
    let dir = scratch();
    let image = fixture("fatbad-dirty", dir.path());
    let source = std::fs::read(&image).unwrap();
    let output = run_ok(imgstream().args(["part", image.to_str().unwrap()]));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("imgstream: warning:") && stderr.contains("not cleanly unmounted (FAT entry 1)"),
        "{stderr}"
    );
    assert_same_bytes("fatbad-dirty vs mtools", &output.stdout, &expected_from_mtools(&image, &source, None));
    let info = String::from_utf8(imgstream_ok(&["info", image.to_str().unwrap()])).unwrap();
    assert!(info.lines().any(|l| l.starts_with("dirty") && l.ends_with("yes")), "{info}");
}

#[test]
fn fat_corrupt_boot_sectors_fail_with_the_field_and_offset() {
    let cases: [(&str, usize, &[u8], &str); 3] = [
        ("zero cluster size", 13, &[0], "boot sector at byte 13: sectors per cluster is 0 (zero cluster size)"),
        ("FAT size past the end", 22, &[0xFF, 0x7F], "boot sector at byte 22: reserved sectors"),
        ("cluster count out of range", 22, &[1, 0], "boot sector at byte 22: a FAT of 1 sectors holds 256 entries"),
    ];
    for (what, at, bytes, message) in cases {
        let dir = scratch();
        let image = fixture("fat-16", dir.path());
        let mut data = std::fs::read(&image).unwrap();
        data[at..at + bytes.len()].copy_from_slice(bytes);
        std::fs::write(&image, &data).unwrap();
        let stderr = run_fails(imgstream().args(["part", image.to_str().unwrap()]), 1);
        assert!(stderr.starts_with("imgstream: error: ") && stderr.contains(message), "{what}: {stderr}");
        assert_eq!(stderr.trim_end().lines().count(), 1, "{what}: not one line: {stderr}");
        assert!(!stderr.contains("panicked"), "{what}: {stderr}");
        // --raw still copies it.
        assert!(imgstream_ok(&["part", "--raw", image.to_str().unwrap()]) == data, "{what}: --raw is not a copy");
    }
}

/// A boot sector claiming 255 FAT copies (the others then read from the root directory and the
/// data area): every cluster any copy marks used is copied, and the warning counts clusters,
/// each once, not cluster-copy pairs.
#[test]
fn copies_that_disagree_are_counted_once_per_cluster() {
    let dir = scratch();
    let image = fixture("fat-16", dir.path());
    let mut bytes = std::fs::read(&image).unwrap();
    bytes[16] = 255; // BPB_NumFATs
    std::fs::write(&image, &bytes).unwrap();
    let report = String::from_utf8(run_ok(imgstream().args(["info", "--json"]).arg(&image)).stdout).unwrap();
    let report: serde_json::Value = serde_json::from_str(&report).unwrap();
    let volume = &report["volume"];
    let clusters: u64 = volume["details"]["clusters"].as_str().unwrap().parse().unwrap();
    let warning =
        volume["warnings"].as_array().unwrap().iter().filter_map(|w| w.as_str()).find(|w| w.contains("disagree"));
    let counted: u64 =
        warning.unwrap().split(" on whether ").nth(1).unwrap().split(' ').next().unwrap().parse().unwrap();
    assert!(0 < counted && counted <= clusters, "{counted} of {clusters} clusters: {warning:?}");
}
