//! NTFS end to end: `imgstream part` and `info` on images made by mkntfs + ntfs-3g
//! (fixtures/gen/ntfs.sh), judged by tools we did not write:
//! - `ntfsclone --overwrite OUT IMG` writes the used clusters into an empty file: our output must
//!   equal it byte for byte (past the end of the NTFS volume, where ntfsclone's output stops, it
//!   must equal the source: that space is outside $Bitmap);
//! - `ntfsinfo -m` gives the cluster size and free cluster count `info` must report, and
//!   `ntfsinfo -F FILE -v` the runs that `--drop-pagefile` must zero;
//! - `ntfsls` + `ntfscat` read every file back from the output unchanged, `ntfsfix -n` reports
//!   the same on the output as on the source, and (as root) ntfs-3g mounts the output read-only
//!   with the same tree as the source.

#![allow(clippy::indexing_slicing)] // test code: a panic is a failed test, with its message

use crate::util::*;
use serde_json::Value;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The clean fixtures (the `ntfsbad-` ones are refused).
/// Every NTFS fixture holds more files than this (fixtures/gen/ntfs.sh).
const FIXTURE_FILES: usize = 5;

fn clean_fixtures() -> Vec<String> {
    fixtures_with_prefix("ntfs-")
}

fn read(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

/// `imgstream part ARGS IMAGE`, written next to the image as `name`.
fn part(image: &Path, args: &[&str], name: &str) -> (PathBuf, Vec<u8>) {
    let mut command = imgstream();
    command.arg("part").args(args).arg(image);
    let out = run_ok(&mut command).stdout;
    let path = image.with_file_name(name);
    std::fs::write(&path, &out).unwrap();
    (path, out)
}

/// ntfsclone's raw image of `image` (used clusters copied, the rest holes).
fn ntfsclone(image: &Path, extra: &[&str]) -> Vec<u8> {
    let out = image.with_extension("ntfsclone");
    run_ok(Command::new("ntfsclone").arg("-q").args(extra).arg("--overwrite").arg(&out).arg(image));
    let bytes = read(&out);
    std::fs::remove_file(&out).unwrap();
    bytes
}

/// Our output must be ntfsclone's, then the source for whatever follows the volume.
fn assert_matches_ntfsclone(what: &str, ours: &[u8], theirs: &[u8], source: &[u8]) {
    assert_eq!(ours.len(), source.len(), "{what}: output length");
    assert!(theirs.len() <= ours.len(), "{what}: ntfsclone wrote {} bytes, we {}", theirs.len(), ours.len());
    assert_same_bytes(what, &ours[..theirs.len()], theirs);
    assert_same_bytes(&format!("{what}, past the volume"), &ours[theirs.len()..], &source[theirs.len()..]);
}

/// Every regular file of an NTFS image, as absolute paths (from `ntfsls -R -F`); there must be
/// more than `more_than` of them.
pub(crate) fn files(image: &Path, more_than: usize) -> Vec<String> {
    let output = run_ok(Command::new("ntfsls").args(["-R", "-F"]).arg(image));
    let mut files = Vec::new();
    let mut dir = String::new();
    for line in String::from_utf8_lossy(&output.stdout).lines() {
        if let Some(header) = line.strip_suffix(':') {
            dir = header.trim_end_matches('/').to_owned();
        } else if !line.is_empty() && !line.ends_with('/') {
            files.push(format!("{dir}/{line}"));
        }
    }
    assert!(files.len() > more_than, "ntfsls found only {files:?}");
    files
}

pub(crate) fn ntfscat(image: &Path, file: &str) -> Vec<u8> {
    run_ok(Command::new("ntfscat").arg(image).arg(file)).stdout
}

/// `ntfsfix -n`'s report with the image name taken out.
pub(crate) fn ntfsfix_report(image: &Path) -> String {
    let output = Command::new("ntfsfix").arg("-n").arg(image).output().unwrap();
    let text = String::from_utf8_lossy(&output.stdout).to_string() + &String::from_utf8_lossy(&output.stderr);
    format!("status {:?}\n{}", output.status.code(), text.replace(image.to_str().unwrap(), "IMAGE"))
}

/// `ntfsinfo -m`'s "Name: value" lines.
fn ntfsinfo_number(image: &Path, key: &str) -> u64 {
    let output = run_ok(Command::new("ntfsinfo").arg("-m").arg(image));
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    let line = text
        .lines()
        .find_map(|l| l.trim().strip_prefix(&format!("{key}: ")))
        .unwrap_or_else(|| panic!("no {key} in {text}"));
    line.split_whitespace().next().unwrap().parse().unwrap()
}

/// The allocated clusters of `file` as byte ranges, from `ntfsinfo -F FILE -v` runlists.
fn ntfsinfo_runs(image: &Path, file: &str, cluster: u64) -> Vec<Range<usize>> {
    let output = run_ok(Command::new("ntfsinfo").arg("-F").arg(file).arg("-v").arg(image));
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    let mut runs = Vec::new();
    let mut in_data = false;
    let mut in_runlist = false;
    for line in text.lines() {
        if line.starts_with("Dumping attribute") {
            in_data = line.contains("$DATA (0x80)");
            in_runlist = false;
        } else if line.trim_start().starts_with("Runlist:") {
            in_runlist = in_data;
        } else if in_runlist {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let hex = |s: &str| i64::from_str_radix(s.trim_start_matches("0x"), 16).ok();
            match fields[..] {
                [_, lcn, len] if hex(lcn).is_some() && hex(len).is_some() => {
                    let (lcn, len) = (hex(lcn).unwrap(), hex(len).unwrap());
                    if lcn >= 0 {
                        runs.push(lcn as usize * cluster as usize..(lcn + len) as usize * cluster as usize);
                    }
                }
                _ => in_runlist = false,
            }
        }
    }
    assert!(!runs.is_empty(), "no runs for {file} in:\n{text}");
    runs
}

fn info_json(image: &Path, args: &[&str]) -> Value {
    let output = run_ok(imgstream().arg("info").arg("--json").args(args).arg(image));
    serde_json::from_slice(&output.stdout).unwrap()
}

/// A read-only ntfs-3g mount, unmounted when dropped.
struct Mount {
    point: PathBuf,
}

impl Mount {
    fn read_only(image: &Path, point: PathBuf) -> Self {
        std::fs::create_dir_all(&point).unwrap();
        run_ok(Command::new("ntfs-3g").args(["-o", "ro"]).arg(image).arg(&point));
        Self { point }
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.point).status();
    }
}

#[test]
fn every_clean_fixture_streams_as_ntfsclone_writes_it_for_any_thread_count() {
    if !have_tool("ntfsclone") {
        return;
    }
    for name in clean_fixtures() {
        let dir = scratch();
        let image = fixture(&name, dir.path());
        let before = sha256(&image);
        let source = read(&image);
        let (_, ours) = part(&image, &["--threads", "1"], "out1.img");
        let theirs = ntfsclone(&image, &[]);
        assert_matches_ntfsclone(&name, &ours, &theirs, &source);
        assert!(ours != source, "{name}: nothing was elided");
        for args in [&["--threads", "4"][..], &["--threads", "3", "--block-size", "64K"]] {
            let (_, other) = part(&image, args, "out2.img");
            assert_same_bytes(&format!("{name} with {args:?}"), &other, &ours);
        }
        assert_eq!(sha256(&image), before, "{name}: the source changed");
    }
}

#[test]
fn files_read_back_from_the_output_equal_the_source_and_ntfsfix_agrees() {
    if !(have_tool("ntfsls") && have_tool("ntfscat") && have_tool("ntfsfix")) {
        return;
    }
    for name in clean_fixtures() {
        let dir = scratch();
        let image = fixture(&name, dir.path());
        let (output, _) = part(&image, &[], "out.img");
        let names = files(&image, FIXTURE_FILES);
        assert_eq!(files(&output, FIXTURE_FILES), names, "{name}: file list");
        for file in &names {
            assert!(ntfscat(&output, file) == ntfscat(&image, file), "{name}: {file} differs in the output");
        }
        // Nothing new: the same report as on the source. (On ntfs-c65536 both say the
        // alternate boot sector is BAD: ntfsfix looks for it at the end of the image, which is
        // 256 KiB past the end of the volume where mkntfs put it.)
        assert_eq!(ntfsfix_report(&output), ntfsfix_report(&image), "{name}: ntfsfix -n");
    }
}

#[test]
fn info_reports_ntfsinfos_geometry_and_free_clusters() {
    if !have_tool("ntfsinfo") {
        return;
    }
    for name in clean_fixtures() {
        let dir = scratch();
        let image = fixture(&name, dir.path());
        let volume = &info_json(&image, &[])["volume"];
        let cluster = ntfsinfo_number(&image, "Cluster Size");
        let clusters = ntfsinfo_number(&image, "Volume Size in Clusters");
        let free = ntfsinfo_number(&image, "Free Clusters");
        let size = std::fs::metadata(&image).unwrap().len();
        assert_eq!(volume["filesystem"], "ntfs", "{name}");
        assert_eq!(volume["unit"].as_u64(), Some(cluster), "{name}");
        assert_eq!(volume["status"], "elided", "{name}");
        // Used: the clusters $Bitmap marks, plus everything after the last whole cluster.
        assert_eq!(volume["used"].as_u64(), Some((clusters - free) * cluster + (size - clusters * cluster)), "{name}");
        assert_eq!(volume["details"]["cluster_size"], cluster.to_string(), "{name}");
        assert_eq!(volume["details"]["dirty"], "no", "{name}");
    }
}

#[test]
fn drop_pagefile_zeroes_exactly_the_clusters_ntfsinfo_lists_and_keeps_every_other_file() {
    if !(have_tool("ntfsinfo") && have_tool("ntfscat") && have_tool("ntfsls")) {
        return;
    }
    for (name, dropped) in [
        ("ntfs-c4096", &["/pagefile.sys", "/swapfile.sys", "/hiberfil.sys"][..]),
        ("ntfs-fragmented", &["/pagefile.sys"][..]),
    ] {
        let dir = scratch();
        let image = fixture(name, dir.path());
        let cluster = ntfsinfo_number(&image, "Cluster Size");
        let (_, plain) = part(&image, &[], "plain.img");
        let (output, ours) = part(&image, &["--drop-pagefile", "--threads", "2"], "dropped.img");
        let mut expected = plain.clone();
        let mut saved = 0;
        for file in dropped {
            for run in ntfsinfo_runs(&image, file, cluster) {
                saved += run.len();
                expected[run].fill(0);
            }
        }
        assert_same_bytes(&format!("{name} --drop-pagefile"), &ours, &expected);
        let volume = &info_json(&image, &["--drop-pagefile"])["volume"];
        assert_eq!(volume["details"]["bytes_drop_pagefile_would_save"], saved.to_string(), "{name}");
        for file in files(&image, FIXTURE_FILES) {
            if dropped.contains(&file.as_str()) {
                continue;
            }
            assert!(ntfscat(&output, &file) == ntfscat(&image, &file), "{name}: {file} differs after --drop-pagefile");
        }
    }
}

#[test]
fn root_outputs_mount_read_only_with_the_source_tree() {
    if !(is_root() && have_tool("ntfs-3g")) {
        return;
    }
    for name in clean_fixtures() {
        let dir = scratch();
        let image = fixture(&name, dir.path());
        let (output, _) = part(&image, &[], "out.img");
        let (dropped, _) = part(&image, &["--drop-pagefile"], "dropped.img");
        let source = Mount::read_only(&image, dir.path().join("source"));
        let copy = Mount::read_only(&output, dir.path().join("copy"));
        run_ok(Command::new("diff").arg("-r").arg(&source.point).arg(&copy.point));
        let without = Mount::read_only(&dropped, dir.path().join("dropped"));
        // The throwaway files keep their names and sizes; their content is gone.
        run_ok(
            Command::new("diff")
                .arg("-r")
                .args(["-x", "pagefile.sys", "-x", "swapfile.sys", "-x", "hiberfil.sys"])
                .arg(&source.point)
                .arg(&without.point),
        );
        for file in ["pagefile.sys", "swapfile.sys", "hiberfil.sys"] {
            let (a, b) = (source.point.join(file), without.point.join(file));
            if a.exists() {
                assert_eq!(
                    std::fs::metadata(&a).unwrap().len(),
                    std::fs::metadata(&b).unwrap().len(),
                    "{name}: {file}"
                );
                assert!(read(&b).iter().all(|&byte| byte == 0), "{name}: {file} was not zeroed");
            }
        }
    }
}

/// Runs `part` on a refused fixture: exit 1 and a single error line containing `reason`.
fn assert_refused(image: &Path, reason: &str) {
    let stderr = run_fails(imgstream().args(["part", "--on-unsafe", "refuse"]).arg(image), 1);
    assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
    assert!(stderr.starts_with("imgstream: error: ") && stderr.contains(reason), "{stderr}");
}

#[test]
fn dirty_hibernated_and_unreplayed_volumes_are_refused_and_force_or_raw_override() {
    if !have_tool("ntfsclone") {
        return;
    }
    for (name, reason, ntfsclone_args) in [
        ("ntfsbad-dirty", "dirty flag is set", &["--force"][..]),
        ("ntfsbad-hibernated", "hiberfil.sys starts with \"HIBR\"", &[][..]),
        ("ntfsbad-logfile", "$LogFile (MFT record 2 at byte", &[][..]),
    ] {
        let dir = scratch();
        let image = fixture(name, dir.path());
        let before = sha256(&image);
        let source = read(&image);
        assert_refused(&image, reason);
        assert!(info_json(&image, &["--on-unsafe", "refuse"])["volume"]["status"] == "refused", "{name}: info");
        assert!(info_json(&image, &[])["volume"]["status"] == "raw", "{name}: info status");
        // --raw, and the default --on-unsafe raw: the source unchanged.
        for flags in [&["--raw"][..], &[]] {
            let (_, raw) = part(&image, flags, "raw.img");
            assert_same_bytes(&format!("{name} {flags:?}"), &raw, &source);
        }
        // --force: elided as ntfsclone (itself forced past the dirty flag) elides it, with a warning.
        let output = run_ok(imgstream().args(["part", "--force"]).arg(&image));
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains("imgstream: warning: ") && stderr.contains("--force"), "{name}: {stderr}");
        assert_matches_ntfsclone(
            &format!("{name} --force"),
            &output.stdout,
            &ntfsclone(&image, ntfsclone_args),
            &source,
        );
        assert_eq!(sha256(&image), before, "{name}: the source changed");
    }
}

#[test]
fn a_bitmap_that_frees_a_system_file_cluster_is_corrupt_and_only_raw_copies_it() {
    let dir = scratch();
    let image = fixture("ntfsbad-bitmap", dir.path());
    assert_refused(&image, "$LogFile (MFT record 2) at byte 18432: data run");
    let stderr = run_fails(imgstream().args(["part", "--force"]).arg(&image), 1);
    assert!(stderr.contains("the bitmap cannot be trusted"), "{stderr}");
    let (_, raw) = part(&image, &["--raw"], "raw.img");
    assert_same_bytes("ntfsbad-bitmap --raw", &raw, &read(&image));
}

#[test]
fn truncated_and_corrupt_images_fail_with_one_line_naming_the_structure() {
    let dir = scratch();
    let image = fixture("ntfs-c4096", dir.path());
    let source = read(&image);
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("truncated to half", source[..source.len() / 2].to_vec(), "boot sector at byte 40: total sectors"),
        ("truncated to 300 bytes", source[..300].to_vec(), ""),
        (
            "bad sectors per cluster",
            {
                let mut s = source.clone();
                s[13] = 3;
                s
            },
            "boot sector at byte 13",
        ),
        (
            "$MFT outside the volume",
            {
                let mut s = source.clone();
                s[0x30..0x38].copy_from_slice(&u64::MAX.to_le_bytes());
                s
            },
            "boot sector at byte 48",
        ),
        (
            "MFT record 0 overwritten",
            {
                let mut s = source.clone();
                let mft = u64::from_le_bytes(s[0x30..0x38].try_into().unwrap()) as usize * 4096;
                s[mft..mft + 1024].fill(0x41);
                s
            },
            "$MFT",
        ),
    ];
    for (what, bytes, expected) in cases {
        let path = dir.path().join("corrupt.img");
        std::fs::write(&path, &bytes).unwrap();
        let output = imgstream().arg("part").arg(&path).output().unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        if expected.is_empty() {
            // Too small for an NTFS boot sector: not recognised, copied raw with a warning.
            assert!(output.status.success() && output.stdout == bytes, "{what}: {stderr}");
            continue;
        }
        assert_eq!(output.status.code(), Some(1), "{what}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "{what}: one line: {stderr}");
        assert!(stderr.contains("corrupt ntfs: ") && stderr.contains(expected), "{what}: {stderr}");
        assert!(!stderr.contains("panicked"), "{what}: {stderr}");
    }
}

#[test]
fn volumes_with_2_mib_clusters_made_now_stream_as_ntfsclone_writes_them() {
    if !(have_tool("mkntfs") && have_tool("ntfscp") && have_tool("ntfsclone")) {
        return;
    }
    for sector in [512u64, 4096] {
        let dir = scratch();
        let image = dir.path().join("c2m.img");
        // 41 MiB of garbage that differs everywhere, then a 40 MiB volume: 19 whole clusters, a
        // tail of almost 2 MiB with the backup boot sector, and 1 MiB after the volume.
        let garbage: Vec<u8> =
            (0..(41u64 << 20) / 8).flat_map(|i| i.wrapping_mul(0x9E37_79B9_7F4A_7C15).to_le_bytes()).collect();
        std::fs::write(&image, &garbage).unwrap();
        let sectors = ((40u64 << 20) / sector).to_string();
        run_ok(
            Command::new("mkntfs")
                .args(["-F", "-f", "-q", "-c", "2097152", "-s", &sector.to_string()])
                .arg(&image)
                .arg(&sectors),
        );
        let payload = dir.path().join("payload.bin");
        std::fs::write(&payload, &garbage[..3_000_000]).unwrap();
        run_ok(Command::new("ntfscp").arg(&image).arg(&payload).arg("/payload.bin"));
        let (_, ours) = part(&image, &["--threads", "3"], "out.img");
        let what = format!("2 MiB clusters, {sector}-byte sectors");
        assert_matches_ntfsclone(&what, &ours, &ntfsclone(&image, &[]), &read(&image));
        assert_eq!(info_json(&image, &[])["volume"]["unit"].as_u64(), Some(2 << 20), "{what}");
    }
}
