//! exFAT end to end: `imgstream part` on images made by mkfs.exfat and written through
//! exfat-fuse (fixtures/gen/exfat.sh), judged by tools we did not write:
//! - `partclone.exfat -D` (its map of used bytes): the output must be the source with
//!   everything outside that map zeroed;
//! - `fsck.exfat -n` must find the output clean and `dump.exfat` must count the same free
//!   clusters as `imgstream info`;
//! - (root) every file read through exfat-fuse from the output equals the source's.

#![allow(clippy::indexing_slicing)] // test code: a panic is a failed test, with its message

use crate::fat::{assert_thread_and_block_size_invariant, expected_from_partclone};
use crate::util::*;
use std::path::{Path, PathBuf};
use std::process::Command;

/// `dump.exfat`'s "Free Clusters" count.
fn dump_free_clusters(image: &Path) -> String {
    let output = run_ok(Command::new("dump.exfat").arg(image));
    let text = String::from_utf8_lossy(&output.stdout);
    let line = text.lines().find(|l| l.starts_with("Free Clusters")).unwrap_or_else(|| panic!("dump.exfat:\n{text}"));
    line.split_whitespace().last().unwrap().to_owned()
}

#[test]
fn exfat_output_is_the_source_with_exactly_the_free_clusters_zeroed() {
    if !(have_tool("partclone.exfat") && have_tool("fsck.exfat") && have_tool("dump.exfat")) {
        return;
    }
    for name in fixtures_with_prefix("exfat-") {
        let dir = scratch();
        let image = fixture(&name, dir.path());
        let hash = sha256(&image);
        let source = std::fs::read(&image).unwrap();
        let path = image.to_str().unwrap();
        let out = imgstream_ok(&["part", path, "--threads", "1"]);
        let expected = expected_from_partclone("partclone.exfat", &image, &source, dir.path());
        assert_ne!(expected, source, "{name}: no stale data in free clusters, the test would prove nothing");
        assert_same_bytes(&format!("{name} vs partclone.exfat"), &out, &expected);

        assert_thread_and_block_size_invariant(&name, path, &out);
        let output_image = dir.path().join("out.img");
        std::fs::write(&output_image, &out).unwrap();
        run_ok(Command::new("fsck.exfat").arg("-n").arg(&output_image));

        let info = String::from_utf8(imgstream_ok(&["info", path])).unwrap();
        let free = dump_free_clusters(&image);
        assert!(
            info.lines().any(|l| l.starts_with("free clusters") && l.ends_with(&free)),
            "{name}: dump.exfat says {free}:\n{info}"
        );
        assert!(info.lines().any(|l| l.starts_with("filesystem") && l.ends_with("exfat")), "{info}");
        assert_eq!(sha256(&image), hash, "{name}: the source changed");
    }
}

#[test]
fn exfat_dirty_volume_is_refused_unless_forced() {
    if !have_tool("partclone.exfat") {
        return;
    }
    let dir = scratch();
    let image = fixture("exfatbad-dirty", dir.path());
    let source = std::fs::read(&image).unwrap();
    let path = image.to_str().unwrap();
    let stderr = run_fails(imgstream().args(["part", "--on-unsafe", "refuse", path]), 1);
    assert!(stderr.starts_with("imgstream: error: ") && stderr.contains("VolumeDirty"), "{stderr}");
    assert!(imgstream_ok(&["part", "--raw", path]) == source, "--raw is not a copy");
    let forced = run_ok(imgstream().args(["part", "--force", path]));
    assert!(String::from_utf8_lossy(&forced.stderr).contains("imgstream: warning:"));
    assert_same_bytes(
        "exfatbad-dirty --force",
        &forced.stdout,
        &expected_from_partclone("partclone.exfat", &image, &source, dir.path()),
    );
}

/// A loop device mounted read-only with exfat-fuse; unmounted and detached on drop.
struct FuseMount {
    device: String,
    mountpoint: PathBuf,
    mounted: bool,
}

impl FuseMount {
    fn new(image: &Path, mountpoint: PathBuf) -> Self {
        std::fs::create_dir_all(&mountpoint).unwrap();
        let output = run_ok(Command::new("losetup").args(["-r", "-f", "--show"]).arg(image));
        let device = String::from_utf8(output.stdout).unwrap().trim().to_owned();
        let mut mount = Self { device, mountpoint, mounted: false };
        run_ok(Command::new("mount.exfat-fuse").args(["-o", "ro"]).arg(&mount.device).arg(&mount.mountpoint));
        mount.mounted = true;
        mount
    }
}

impl Drop for FuseMount {
    fn drop(&mut self) {
        if self.mounted {
            let _ = Command::new("umount").arg(&self.mountpoint).status();
        }
        let _ = Command::new("losetup").arg("-d").arg(&self.device).status();
    }
}

/// Every regular file under `root`, relative, sorted.
pub(crate) fn files_under(root: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut pending = vec![root.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                pending.push(path);
            } else {
                files.push(path.strip_prefix(root).unwrap().to_path_buf());
            }
        }
    }
    files.sort();
    files
}

#[test]
fn root_exfat_every_file_reads_back_equal() {
    if !(is_root() && have_tool("mount.exfat-fuse") && have_tool("losetup")) {
        return;
    }
    for name in fixtures_with_prefix("exfat-") {
        let dir = scratch();
        let image = fixture(&name, dir.path());
        let output_image = dir.path().join("out.img");
        std::fs::write(&output_image, imgstream_ok(&["part", image.to_str().unwrap()])).unwrap();
        let source = FuseMount::new(&image, dir.path().join("source"));
        let output = FuseMount::new(&output_image, dir.path().join("output"));
        let files = files_under(&source.mountpoint);
        assert!(files.len() >= 6, "{name}: only {files:?}");
        assert_eq!(files_under(&output.mountpoint), files, "{name}: the file lists differ");
        for file in &files {
            let (a, b) = (
                std::fs::read(source.mountpoint.join(file)).unwrap(),
                std::fs::read(output.mountpoint.join(file)).unwrap(),
            );
            assert!(a == b, "{name}: {} differs", file.display());
        }
    }
}
