//! Whole disks: the partition table against sfdisk, `disk` against per-filesystem oracles
//! (partclone for FAT and ext, ntfsclone for NTFS, the swap header page), raw areas against the
//! source, and backup-disk / restore-disk through real borg (sfdisk --verify, fsck tools).

#![allow(clippy::indexing_slicing)] // test code: a panic is a failed test, with its message

use crate::faults::FaultySource;
use crate::ntfs::{files, ntfscat, ntfsfix_report};
use crate::util::*;
use serde_json::Value;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::process::Command;

const DISKS: [&str; 2] = ["disk-gpt", "disk-mbr"];

fn json(output: &[u8]) -> Value {
    serde_json::from_slice(output).expect("valid JSON")
}

/// sfdisk's view: (sector size, label, id, data partitions as (number, byte range, type, name,
/// uuid)), and the extended partition's byte range if any.
pub(crate) struct Sfdisk {
    label: String,
    id: String,
    sector_size: u64,
    pub(crate) partitions: Vec<(u64, Range<u64>, String, String, String)>,
    extended: Option<Range<u64>>,
}

pub(crate) fn sfdisk(disk: &Path) -> Sfdisk {
    let table = json(&run_ok(Command::new("sfdisk").arg("--json").arg(disk)).stdout)["partitiontable"].clone();
    let sector_size = table["sectorsize"].as_u64().unwrap_or(512);
    let node_prefix = table["device"].as_str().unwrap().to_owned();
    let mut partitions = Vec::new();
    let mut extended = None;
    for p in table["partitions"].as_array().unwrap() {
        let range = p["start"].as_u64().unwrap() * sector_size
            ..(p["start"].as_u64().unwrap() + p["size"].as_u64().unwrap()) * sector_size;
        let number: u64 =
            p["node"].as_str().unwrap().strip_prefix(&node_prefix).unwrap().trim_start_matches('p').parse().unwrap();
        let kind = p["type"].as_str().unwrap().to_owned();
        if table["label"] == "dos" && ["5", "f", "85"].contains(&kind.as_str()) {
            extended = Some(range);
            continue;
        }
        let text = |key: &str| p[key].as_str().unwrap_or("").to_owned();
        partitions.push((number, range, kind, text("name"), text("uuid")));
    }
    Sfdisk {
        label: table["label"].as_str().unwrap().to_owned(),
        id: table["id"].as_str().unwrap().to_owned(),
        sector_size,
        partitions,
        extended,
    }
}

fn info_json(source: &Path) -> Value {
    json(&run_ok(imgstream().args(["info", "--json"]).arg(source)).stdout)
}

/// `imgstream info`'s table and partitions must be sfdisk's.
fn assert_info_matches_sfdisk(source: &Path, oracle: &Sfdisk) {
    let info = info_json(source);
    assert_eq!(info["table"]["type"], oracle.label.as_str(), "{}", source.display());
    assert_eq!(info["table"]["sector_size"], oracle.sector_size);
    assert_eq!(info["table"]["id"].as_str().unwrap().to_lowercase(), oracle.id.to_lowercase());
    let ours: Vec<(u64, Range<u64>, String, String, String)> = info["partitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            let start = p["start"].as_u64().unwrap();
            // MBR partitions have no name or uuid: null, as sfdisk's empty field.
            let text = |key: &str| p[key].as_str().unwrap_or("").to_owned();
            (
                p["index"].as_u64().unwrap(),
                start..start + p["size"].as_u64().unwrap(),
                text("type"),
                text("name"),
                text("uuid"),
            )
        })
        .collect();
    assert_eq!(ours, oracle.partitions, "{}: partitions differ from sfdisk's", source.display());
    let extended = info["table"]["extended"].as_object().map(|e| {
        let start = e["start"].as_u64().unwrap();
        start..start + e["size"].as_u64().unwrap()
    });
    assert_eq!(extended, oracle.extended);
}

#[test]
fn info_lists_the_partitions_sfdisk_lists() {
    if !have_tool("sfdisk") {
        return;
    }
    let dir = scratch();
    for name in DISKS {
        let disk = fixture(name, dir.path());
        assert_info_matches_sfdisk(&disk, &sfdisk(&disk));
    }
}

#[test]
fn root_a_4096_byte_sector_disk_is_read_through_its_loop_device() {
    if !is_root() || !have_tool("sfdisk") || !have_tool("losetup") {
        return;
    }
    let dir = scratch();
    let disk = fixture("disk-gpt4k", dir.path());
    let device = LoopDevice::attach(&disk, &["-r", "-b", "4096"]);
    let oracle = sfdisk(device.path());
    assert_eq!(oracle.sector_size, 4096);
    assert_info_matches_sfdisk(device.path(), &oracle);
    // The image file itself: probed to 4096 as well.
    let info = info_json(&disk);
    assert_eq!(info["table"]["sector_size"], 4096);
    assert_eq!(info["partitions"][0]["start"], oracle.partitions[0].1.start);
    // And the stream of the device equals the stream of the file.
    let from_device = run_ok(imgstream().arg("disk").arg(device.path())).stdout;
    let from_file = run_ok(imgstream().arg("disk").arg(&disk)).stdout;
    assert_same_bytes("disk-gpt4k via loop device vs file", &from_device, &from_file);
}

/// A loop device, detached when dropped.
pub(crate) struct LoopDevice(PathBuf);

impl LoopDevice {
    pub(crate) fn attach(file: &Path, options: &[&str]) -> Self {
        let output = run_ok(Command::new("losetup").args(["-f", "--show"]).args(options).arg(file));
        Self(PathBuf::from(String::from_utf8(output.stdout).unwrap().trim()))
    }
    pub(crate) fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for LoopDevice {
    fn drop(&mut self) {
        let _ = Command::new("losetup").arg("-d").arg(&self.0).status();
    }
}

/// Cuts `range` of `disk` into a file of its own.
pub(crate) fn extract(disk: &[u8], range: &Range<u64>, path: &Path) -> PathBuf {
    std::fs::write(path, &disk[range.start as usize..range.end as usize]).unwrap();
    path.to_owned()
}

/// What an independent tool says a partition's image must be: partclone (FAT, ext) or
/// ntfsclone (NTFS) write used blocks into an empty file; swap keeps its header page.
pub(crate) fn oracle_image(blkid_type: &str, ours: &str, partition: &Path, dir: &Path) -> Vec<u8> {
    let bytes = std::fs::read(partition).unwrap();
    let out = dir.join("oracle.img");
    let _ = std::fs::remove_file(&out);
    let partclone = |tool: &str| {
        let saved = dir.join("saved.pc");
        let _ = std::fs::remove_file(&saved);
        run_ok(Command::new(tool).args(["-q", "-c", "-s"]).arg(partition).arg("-o").arg(&saved));
        run_ok(Command::new("partclone.restore").args(["-q", "-W", "-s"]).arg(&saved).arg("-O").arg(&out));
        std::fs::read(&out).unwrap()
    };
    match (blkid_type, ours) {
        ("vfat", _) if have_tool("partclone.fat") => partclone("partclone.fat"),
        ("ext2" | "ext3" | "ext4", _) if have_tool("partclone.extfs") => partclone("partclone.extfs"),
        ("ntfs", "ntfs") if have_tool("ntfsclone") => {
            run_ok(Command::new("ntfsclone").args(["-q", "-f", "-o"]).arg(&out).arg(partition));
            std::fs::read(&out).unwrap()
        }
        ("swap", "swap") => {
            // mkswap's header page (4 KiB here); the swap pages are garbage once swapoff'd.
            let mut expected = vec![0u8; bytes.len()];
            expected[..4096].copy_from_slice(&bytes[..4096]);
            expected
        }
        (kind, ours) => panic!("{}: no oracle for blkid type {kind:?} (imgstream: {ours})", partition.display()),
    }
}

fn blkid_type(partition: &Path) -> String {
    let output = Command::new("blkid").args(["-p", "-o", "value", "-s", "TYPE"]).arg(partition).output().unwrap();
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}

/// Acceptance 1: the disk stream is the source with each filesystem's free blocks zeroed (per
/// an independent tool) and every byte outside partitions (per sfdisk) identical.
#[test]
fn disk_stream_is_the_source_with_each_filesystems_free_blocks_zeroed() {
    if !have_tool("sfdisk") || !have_tool("blkid") || !have_tool("partclone.restore") {
        return;
    }
    let dir = scratch();
    for name in DISKS {
        let disk = fixture(name, dir.path());
        let before = sha256(&disk);
        let source = std::fs::read(&disk).unwrap();
        let output = run_ok(imgstream().args(["disk", "--threads", "3"]).arg(&disk));
        let stream = output.stdout;
        assert_eq!(stream.len(), source.len(), "{name}: the stream has the disk's size");
        let oracle = sfdisk(&disk);
        let info = info_json(&disk);
        let mut covered = 0;
        for (index, (number, range, ..)) in oracle.partitions.iter().enumerate() {
            let part = extract(&source, range, &dir.path().join(format!("{name}-{number}.img")));
            let ours = info["partitions"][index]["volume"]["filesystem"].as_str().unwrap().to_owned();
            let kind = blkid_type(&part);
            let expected = oracle_image(&kind, &ours, &part, dir.path());
            let actual = &stream[range.start as usize..range.end as usize];
            assert_same_bytes(&format!("{name} partition {number} ({kind}, imgstream: {ours})"), actual, &expected);
            assert!(
                expected != std::fs::read(&part).unwrap(),
                "{name} partition {number}: the oracle zeroed nothing; the test proves nothing"
            );
            covered += range.end - range.start;
        }
        // Everything else, byte for byte: MBR/GPT, boot loader gap, EBRs, gaps, backup GPT.
        let mut outside = 0;
        let mut cursor = 0u64;
        let mut ranges: Vec<Range<u64>> = oracle.partitions.iter().map(|p| p.1.clone()).collect();
        ranges.sort_by_key(|r| r.start);
        ranges.push(source.len() as u64..source.len() as u64);
        for range in ranges {
            let gap = cursor as usize..range.start as usize;
            assert_same_bytes(
                &format!("{name} bytes {gap:?} outside partitions"),
                &stream[gap.clone()],
                &source[gap.clone()],
            );
            outside += gap.len() as u64;
            cursor = range.end;
        }
        assert_eq!(covered + outside, source.len() as u64);
        assert!(source[..440].starts_with(b"FAKE-"), "{name}: the fixture's boot code is there to be kept");
        assert_eq!(sha256(&disk), before, "{name}: the source changed");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains("disk,") && stderr.contains("partition(s)"), "{stderr}");
    }
}

#[test]
fn one_partition_of_a_disk_streams_alone_and_equals_its_slice_of_the_disk_stream() {
    let dir = scratch();
    let disk = fixture("disk-mbr", dir.path());
    let whole = run_ok(imgstream().arg("disk").arg(&disk)).stdout;
    let info = info_json(&disk);
    for p in info["partitions"].as_array().unwrap() {
        let (start, size) = (p["start"].as_u64().unwrap() as usize, p["size"].as_u64().unwrap() as usize);
        let index = p["index"].to_string();
        let alone = run_ok(imgstream().args(["disk", "--partition", &index]).arg(&disk)).stdout;
        assert_same_bytes(&format!("partition {index}"), &alone, &whole[start..start + size]);
    }
    let stderr = run_fails(imgstream().args(["disk", "--partition", "3"]).arg(&disk), 2);
    assert!(stderr.contains("no partition 3 (partitions: 1, 5, 6)"), "{stderr}");
    // MBR system ids are named as fdisk names them.
    let names: Vec<(&str, &str)> = info["partitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p["type"].as_str().unwrap(), p["type_name"].as_str().unwrap()))
        .collect();
    assert_eq!(names, [("83", "Linux"); 3]);
}

#[test]
fn a_corrupt_table_fails_with_the_structure_and_offset_and_raw_still_copies() {
    let dir = scratch();
    let disk = fixture("disk-mbr", dir.path());
    let mut bytes = std::fs::read(&disk).unwrap();
    // The second EBR (sector 36864) points back at the first one: a loop.
    let next = 36864 * 512 + 446 + 16 + 8;
    bytes[next - 4] = 0x05;
    bytes[next..next + 4].copy_from_slice(&1u32.to_le_bytes());
    let broken = dir.path().join("broken.img");
    std::fs::write(&broken, &bytes).unwrap();
    let stderr = run_fails(imgstream().arg("disk").arg(&broken), 1);
    assert!(stderr.contains("corrupt partition table: EBR at byte 18874368") && stderr.contains("loop"), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
    let raw = run_ok(imgstream().args(["disk", "--raw"]).arg(&broken)).stdout;
    assert_same_bytes("--raw copy of a disk with a broken table", &raw, &bytes);
}

/// borg with a repository in a scratch directory.
/// An executable shell script `dir/name` running `body`, to stand in for borg
/// (`IMGSTREAM_BORG`): borg as imgstream runs it, with something done before or added.
pub(crate) fn borg_wrapper(dir: &Path, name: &str, body: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
    std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    path
}

pub(crate) struct Borg {
    pub(crate) repo: PathBuf,
    home: PathBuf,
}

impl Borg {
    pub(crate) fn init(dir: &Path) -> Self {
        let borg = Self::at(dir);
        run_ok(borg.command().args(["init", "-e", "none"]).arg(&borg.repo));
        borg
    }

    /// The repository `dir/repo`, not yet made.
    pub(crate) fn at(dir: &Path) -> Self {
        Self { repo: dir.join("repo"), home: dir.join("borg-home") }
    }

    /// Sets borg's environment on any command (borg itself, or imgstream running borg).
    pub(crate) fn env<'a>(&self, command: &'a mut Command) -> &'a mut Command {
        command
            .env("BORG_PASSPHRASE", "")
            .env("BORG_BASE_DIR", &self.home)
            .env("BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK", "yes")
            .env("BORG_RELOCATED_REPO_ACCESS_IS_OK", "yes")
    }

    pub(crate) fn command(&self) -> Command {
        let mut command = Command::new("borg");
        self.env(&mut command);
        command
    }

    pub(crate) fn archives(&self) -> Vec<String> {
        // Checkpoints too: a failed run must not leave one behind either.
        let output = run_ok(self.command().args(["list", "--short", "--consider-checkpoints"]).arg(&self.repo));
        String::from_utf8(output.stdout).unwrap().lines().map(str::to_owned).collect()
    }

    pub(crate) fn imgstream(&self, args: &[&str]) -> Command {
        let mut command = imgstream();
        command.args(args).arg("--repo").arg(&self.repo);
        self.env(&mut command);
        command
    }
}

/// Every partition of `image` passes its filesystem's checker; an NTFS one also reads back
/// through libntfs-3g (`ntfsfix -n`, every file with `ntfscat`) as the same partition of `source`.
fn check_filesystems(image: &Path, source: &Path, dir: &Path) {
    let bytes = std::fs::read(image).unwrap();
    let source_bytes = std::fs::read(source).unwrap();
    for (number, range, ..) in sfdisk(image).partitions {
        let part = extract(&bytes, &range, &dir.join(format!("check-{number}.img")));
        match blkid_type(&part).as_str() {
            "ext4" => {
                run_ok(Command::new("e2fsck").args(["-f", "-n"]).arg(&part));
            }
            "vfat" => {
                run_ok(Command::new("fsck.fat").arg("-n").arg(&part));
            }
            "ntfs" => {
                // ntfsclone walks the whole $Bitmap and MFT; it refuses an inconsistent volume.
                run_ok(Command::new("ntfsclone").args(["-q", "-s", "-O", "/dev/null"]).arg(&part));
                let original = extract(&source_bytes, &range, &dir.join(format!("source-{number}.img")));
                assert_eq!(ntfsfix_report(&part), ntfsfix_report(&original), "partition {number}: ntfsfix -n");
                // disk-gpt's NTFS holds a.bin, c.bin, d.bin and e.bin (fixtures/gen/disk.sh).
                for file in files(&original, 3) {
                    assert!(ntfscat(&part, &file) == ntfscat(&original, &file), "partition {number}: {file} differs");
                }
            }
            "swap" => {}
            other => panic!("partition {number}: unexpected filesystem {other:?}"),
        }
    }
}

/// Acceptance 2: backup-disk, then restore-disk into a fresh sparse file and into a target
/// twice as large; a smaller target is refused before anything is written.
#[test]
fn backup_disk_then_restore_disk_gives_back_the_disk_stream() {
    for tool in ["borg", "sfdisk", "fdisk", "e2fsck", "fsck.fat", "ntfsclone", "ntfsls", "ntfscat", "ntfsfix", "blkid"]
    {
        if !have_tool(tool) {
            return;
        }
    }
    let dir = scratch();
    let borg = Borg::init(dir.path());
    for name in DISKS {
        let disk = fixture(name, dir.path());
        let stream = run_ok(imgstream().arg("disk").arg(&disk)).stdout;
        let size = stream.len() as u64;
        run_ok(borg.imgstream(&["backup-disk", "--name", name]).arg(&disk));
        let info = info_json(&disk);
        assert!(borg.archives().contains(&name.to_string()), "{name} missing from {:?}", borg.archives());

        // The manifest, as a user of plain borg would read it.
        let listing = dir.path().join(format!("{name}-manifest"));
        std::fs::create_dir(&listing).unwrap();
        run_ok(
            borg.command()
                .arg("extract")
                .arg(format!("{}::{name}", borg.repo.display()))
                .arg("manifest.json")
                .current_dir(&listing),
        );
        let manifest = json(&std::fs::read(listing.join("manifest.json")).unwrap());
        assert_eq!(manifest["disk_size"], size);
        assert_eq!(manifest["sector_size"], 512);
        assert_eq!(manifest["table"], sfdisk(&disk).label.as_str());
        for (ours, theirs) in
            manifest["partitions"].as_array().unwrap().iter().zip(info["partitions"].as_array().unwrap())
        {
            for key in ["index", "start", "size", "type"] {
                assert_eq!(ours[key], theirs[key], "manifest {key}");
            }
            assert_eq!(ours["filesystem"], theirs["volume"]["filesystem"]);
            assert_eq!(ours["used"], theirs["volume"]["used"]);
            assert_eq!(ours["file"], format!("part{}.img", theirs["index"]));
        }

        // Into a fresh sparse file.
        let fresh = dir.path().join(format!("{name}-restored.img"));
        run_ok(borg.imgstream(&["restore-disk", "--name", name]).arg(&fresh));
        assert_same_bytes(&format!("{name} restored"), &std::fs::read(&fresh).unwrap(), &stream);
        run_ok(Command::new("sfdisk").arg("--verify").arg(&fresh));
        check_filesystems(&fresh, &disk, dir.path());
        let allocated = std::os::unix::fs::MetadataExt::blocks(&std::fs::metadata(&fresh).unwrap()) * 512;
        assert!(allocated < size, "{name}: the restored file is not sparse ({allocated} of {size} bytes allocated)");

        // Into a file twice as large.
        let large = dir.path().join(format!("{name}-large.img"));
        std::fs::File::create(&large).unwrap().set_len(2 * size).unwrap();
        let output = run_ok(borg.imgstream(&["restore-disk", "--name", name]).arg(&large));
        let restored = std::fs::read(&large).unwrap();
        assert_eq!(restored.len() as u64, 2 * size);
        let verify = run_ok(Command::new("sfdisk").arg("--verify").arg(&large));
        let verify_text =
            String::from_utf8_lossy(&verify.stdout).to_string() + &String::from_utf8_lossy(&verify.stderr);
        assert!(verify_text.contains("No errors detected"), "{verify_text}");
        let fdisk = run_ok(Command::new("fdisk").arg("-l").arg(&large));
        let fdisk_text = String::from_utf8_lossy(&fdisk.stdout).to_string() + &String::from_utf8_lossy(&fdisk.stderr);
        assert!(
            !fdisk_text.to_lowercase().contains("warn")
                && !fdisk_text.contains("corrupt")
                && !fdisk_text.contains("mismatch"),
            "{fdisk_text}"
        );
        if name == "disk-gpt" {
            let last = restored.len() - 512;
            assert_eq!(&restored[last..last + 8], b"EFI PART", "backup GPT header at the new last LBA");
            assert_eq!(u64::from_le_bytes(restored[last + 24..last + 32].try_into().unwrap()), 2 * size / 512 - 1);
            assert!(String::from_utf8_lossy(&output.stderr).contains("backup GPT moved"));
        } else {
            // MBR: nothing to move; the extra space is zeros.
            assert!(restored[size as usize..].iter().all(|&b| b == 0));
        }
        check_filesystems(&large, &disk, dir.path());
        // Every partition and every byte outside the old backup GPT is where it was.
        for (_, range, ..) in sfdisk(&disk).partitions {
            let r = range.start as usize..range.end as usize;
            assert_same_bytes("partition in the larger disk", &restored[r.clone()], &stream[r]);
        }

        // A smaller target: refused, untouched.
        let small = dir.path().join(format!("{name}-small.img"));
        std::fs::write(&small, vec![0xA5u8; (size / 2) as usize]).unwrap();
        let before = sha256(&small);
        let stderr = run_fails(borg.imgstream(&["restore-disk", "--name", name]).arg(&small), 1);
        assert!(
            stderr.contains("smaller than the backed-up disk") && stderr.contains("nothing was written"),
            "{stderr}"
        );
        assert_eq!(sha256(&small), before, "the smaller target was written to");
    }
}

/// A scratch directory with a borg repository holding backup-disk backups of fixture `name`
/// under each of `backups`; `None` (skipped) without borg.
pub(crate) fn backed_up(name: &str, backups: &[&str]) -> Option<(tempfile::TempDir, Borg, PathBuf)> {
    if !have_tool("borg") {
        return None;
    }
    let dir = scratch();
    let borg = Borg::init(dir.path());
    let disk = fixture(name, dir.path());
    for backup in backups {
        run_ok(borg.imgstream(&["backup-disk", "--name", backup]).arg(&disk));
    }
    Some((dir, borg, disk))
}

/// Acceptance 3: a read error in the middle of backup-disk leaves no new archive, through the
/// FUSE view (borg only warns and commits: the archive is deleted again) and the tar stream.
#[test]
fn a_read_error_during_backup_disk_leaves_no_new_archive() {
    let Some((_dir, borg, disk)) = backed_up("disk-gpt", &["good"]) else { return };
    let before = borg.archives();
    // Partition 3 starts at byte 46137344; --raw makes every byte of it a read.
    let bad_page = |at: u64| at / 4096 * 4096..at / 4096 * 4096 + 4096;
    let Some(faulty) = FaultySource::new(&disk, &[bad_page(50_000_000)]) else { return };
    for (mode, committed) in
        [("--fuse", "deleted what borg had committed (bad)"), ("--no-fuse", "no archive was committed")]
    {
        let mut command = borg.imgstream(&["backup-disk", "--raw", "--name", "bad"]);
        command.args((mode == "--no-fuse").then_some(mode)).arg(faulty.path());
        let stderr = run_fails(&mut command, 1);
        assert!(stderr.contains("Input/output error") && stderr.contains("part3.img"), "{mode}: {stderr}");
        assert!(stderr.contains(committed), "{mode}: {stderr}");
        assert_eq!(borg.archives(), before, "{mode}: a failed backup left archives behind");
    }
    drop(faulty);
    // A failure before borg runs: an unreadable partition table area.
    let Some(faulty) = FaultySource::new(&disk, &[bad_page(60_000_000)]) else { return };
    let stderr = run_fails(borg.imgstream(&["backup-disk", "--name", "bad2"]).arg(faulty.path()), 1);
    assert!(stderr.contains("error:"), "{stderr}");
    assert_eq!(borg.archives(), before);
}

/// The plain-borg way of restoring one partition, as the manifest documents it.
#[test]
fn one_partition_restores_alone_with_plain_borg_and_imgstream_restore() {
    let Some((dir, borg, disk)) = backed_up("disk-mbr", &["m"]) else { return };
    let alone = run_ok(imgstream().args(["disk", "--partition", "5"]).arg(&disk)).stdout;
    let target = dir.path().join("p5.img");
    let script = format!(
        "borg extract --stdout {}::m part5.img | {} restore --sparse --size {} {}",
        borg.repo.display(),
        env!("CARGO_BIN_EXE_imgstream"),
        alone.len(),
        target.display()
    );
    run_ok(borg.env(Command::new("bash").args(["-o", "pipefail", "-c", &script])));
    assert_same_bytes("partition 5 restored alone", &std::fs::read(&target).unwrap(), &alone);
}

/// A disk without a partition table whose sector 0 holds a filesystem is that filesystem.
#[test]
fn a_partitionless_disk_with_a_filesystem_at_sector_0_streams_like_part() {
    let dir = scratch();
    for name in ["fat-32", "ext-ext4"] {
        let image = fixture(name, dir.path());
        let disk = run_ok(imgstream().arg("disk").arg(&image)).stdout;
        let part = run_ok(imgstream().arg("part").arg(&image)).stdout;
        assert_same_bytes(&format!("disk vs part of {name}"), &disk, &part);
        assert!(disk != std::fs::read(&image).unwrap(), "{name}: nothing was elided");
    }
}

/// The FAT type string ("FAT32   ", "FAT16   ") is informational (fatgen103: never use it to
/// decide the type; DOS 3 wrote none): a superfloppy whose string is damaged still streams as
/// `part` streams it, elided, not as an empty MBR copied raw.
#[test]
fn a_partitionless_fat_disk_without_its_type_string_streams_like_part() {
    let dir = scratch();
    for (name, at) in [("fat-32", 82), ("fat-16", 54), ("fat-12", 54)] {
        let image = fixture(name, dir.path());
        let mut bytes = std::fs::read(&image).unwrap();
        bytes[at..at + 8].copy_from_slice(b"        ");
        std::fs::write(&image, &bytes).unwrap();
        let disk = run_ok(imgstream().arg("disk").arg(&image)).stdout;
        let part = run_ok(imgstream().arg("part").arg(&image)).stdout;
        assert_same_bytes(&format!("disk vs part of {name} without its type string"), &disk, &part);
        assert!(disk != bytes, "{name}: nothing was elided");
    }
}

/// A superfloppy (a USB stick without a partition table) whose boot sector is damaged is still
/// that filesystem, not an empty MBR copied raw in silence: `disk` fails as `part` does, with the
/// same one-line reason naming the field and its byte offset.
#[test]
fn a_partitionless_disk_with_a_damaged_boot_sector_fails_as_part_does() {
    let dir = scratch();
    // (fixture, byte, value, what the error names): a damaged NTFS OEM id, FAT32 reserved
    // sectors 0, FAT16 sectors per cluster 3.
    for (name, at, value, reason) in [
        ("ntfs-c4096", 6, b'X', "damaged NTFS boot sector"),
        ("fat-32", 14, 0, "boot sector at byte 14"),
        ("fat-16", 13, 3, "boot sector at byte 13"),
    ] {
        let image = fixture(name, dir.path());
        let mut bytes = std::fs::read(&image).unwrap();
        bytes[at] = value;
        std::fs::write(&image, &bytes).unwrap();
        let part = run_fails(imgstream().arg("part").arg(&image), 1);
        let disk = run_fails(imgstream().arg("disk").arg(&image), 1);
        assert!(part.contains(reason), "{name}: part: {part}");
        assert!(disk.contains(reason) && disk.lines().count() == 1, "{name}: disk: {disk}");
    }
    // A damaged exFAT name: no parser claims it, so `part` and `disk` copy it raw with a warning.
    let image = fixture("exfat-4k", dir.path());
    let mut bytes = std::fs::read(&image).unwrap();
    bytes[6] = b'X';
    std::fs::write(&image, &bytes).unwrap();
    for command in ["part", "disk"] {
        let output = run_ok(imgstream().arg(command).arg(&image));
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains("warning") && stderr.contains("no known filesystem"), "exfat-4k: {command}: {stderr}");
        assert!(output.stdout == bytes, "exfat-4k: {command}: not copied whole");
    }
}

/// restore-disk without --name takes the latest backup; a 4096-byte-sector GPT moved to a larger
/// file keeps 4096-byte sectors.
#[test]
fn restore_disk_without_a_name_takes_the_latest_backup_and_keeps_4096_byte_sectors() {
    let Some((dir, borg, disk)) = backed_up("disk-gpt4k", &["older", "newer"]) else { return };
    let stream = run_ok(imgstream().arg("disk").arg(&disk)).stdout;
    let target = dir.path().join("large.img");
    std::fs::File::create(&target).unwrap().set_len(2 * stream.len() as u64).unwrap();
    let output = run_ok(borg.imgstream(&["restore-disk"]).arg(&target));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("restoring the latest backup, newer"), "{stderr}");
    let restored = std::fs::read(&target).unwrap();
    let end = stream.len();
    // Partition 1 (bytes 1 MiB..9 MiB) is as in the stream (the table's sizes were updated).
    assert_same_bytes("partition 1", &restored[1 << 20..9 << 20], &stream[1 << 20..9 << 20]);
    let last = restored.len() - 4096;
    assert_eq!(&restored[last..last + 8], b"EFI PART");
    assert_eq!(
        u64::from_le_bytes(restored[last + 24..last + 32].try_into().unwrap()),
        (restored.len() / 4096 - 1) as u64
    );
    let info = info_json(&target);
    assert_eq!(info["table"]["sector_size"], 4096);
    assert!(info["table"]["warnings"].as_array().unwrap().is_empty(), "{}", info["table"]["warnings"]);
    assert!(restored[end - 4096..end].iter().all(|&b| b == 0), "the old backup header was cleared");
}

/// Free bytes of one filesystem image, as its own tools count them.
pub(crate) fn free_bytes_per_oracle(kind: &str, partition: &Path) -> u64 {
    let output = |command: &mut Command| String::from_utf8(run_ok(command).stdout).unwrap();
    let field = |text: &str, label: &str| -> u64 {
        let line = text
            .lines()
            .find(|l| l.trim_start().starts_with(label))
            .unwrap_or_else(|| panic!("no {label:?} in:\n{text}"));
        line[line.find(label).unwrap() + label.len()..]
            .trim()
            .split(|c: char| !c.is_ascii_digit())
            .next()
            .unwrap()
            .parse()
            .unwrap()
    };
    match kind {
        "vfat" => {
            // fsck.fat -v: "N bytes per cluster" and, last, "<name>: F files, USED/TOTAL clusters".
            let text = output(Command::new("fsck.fat").args(["-n", "-v"]).arg(partition));
            let cluster = text
                .lines()
                .find_map(|l| l.trim().strip_suffix(" bytes per cluster")?.trim().parse::<u64>().ok())
                .unwrap();
            let counts = text.lines().rev().find(|l| l.contains(" clusters")).unwrap();
            let fraction = counts.split(", ").last().unwrap().trim_end_matches(" clusters");
            let (used, total) = fraction.split_once('/').unwrap();
            (total.parse::<u64>().unwrap() - used.parse::<u64>().unwrap()) * cluster
        }
        "ntfs" => {
            let text = output(Command::new("ntfsinfo").args(["-m", "-f"]).arg(partition));
            field(&text, "Free Clusters:") * field(&text, "Cluster Size:")
        }
        "ext4" => {
            let text = output(Command::new("dumpe2fs").arg("-h").arg(partition).stderr(std::process::Stdio::null()));
            field(&text, "Free blocks:") * field(&text, "Block size:")
        }
        // mkswap's rule for a whole-partition swap area: every page but the header page is swap
        // space (it prints "size = (pages - 1) * page size").
        "swap" => std::fs::metadata(partition).unwrap().len() - 4096,
        other => panic!("no free-space oracle for {other}"),
    }
}

/// Issue acceptance: on the GPT disk with an ESP (FAT32), NTFS, ext4 and swap, `info` shows all
/// four elided, and its total elidable bytes equal the sum of what each filesystem's own tool
/// counts as free.
#[test]
fn info_on_the_gpt_disk_elides_all_four_filesystems_as_their_own_tools_count_free_space() {
    if !["sfdisk", "blkid", "fsck.fat", "ntfsinfo", "dumpe2fs"].iter().all(|t| have_tool(t)) {
        return;
    }
    let dir = scratch();
    let disk = fixture("disk-gpt", dir.path());
    let source = std::fs::read(&disk).unwrap();
    let info = info_json(&disk);
    let mut kinds = Vec::new();
    let mut oracle_total = 0;
    for (index, (number, range, ..)) in sfdisk(&disk).partitions.iter().enumerate() {
        let volume = &info["partitions"][index]["volume"];
        let part = extract(&source, range, &dir.path().join(format!("part{number}.img")));
        let kind = blkid_type(&part);
        assert_eq!(volume["status"], "elided", "partition {number} ({kind}): {volume}");
        let free = free_bytes_per_oracle(&kind, &part);
        assert_eq!(volume["elidable"].as_u64().unwrap(), free, "partition {number} ({kind})");
        oracle_total += free;
        kinds.push(kind);
    }
    assert_eq!(kinds, ["vfat", "ntfs", "ext4", "swap"]);
    assert_eq!(info["total"]["elidable"].as_u64().unwrap(), oracle_total);
}
