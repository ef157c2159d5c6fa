//! One volume's trouble is that volume's: a partition unsafe to elide is copied raw with a
//! warning naming it while the rest of the disk is elided (`--on-unsafe`), a mount through any
//! stack of loop devices refuses only the partition it covers, and what imgstream cannot elide
//! is named after the real tools that made it (cryptsetup, mkfs.btrfs, qemu-img, lvm, ...).

#![allow(clippy::indexing_slicing)] // test code: a panic is a failed test, with its message

use crate::disk::LoopDevice;
use crate::ext::{dumpe2fs_free, expected_from_dumpe2fs};
use crate::util::*;
use serde_json::Value;
use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

const MIB: u64 = 1 << 20;

/// A GPT disk in `dir` whose partitions, 1 MiB aligned and in order, hold the bytes of
/// `contents` (each a whole number of MiB); returns it with each partition's byte range.
fn gpt_disk(dir: &Path, contents: &[&Path]) -> (PathBuf, Vec<Range<u64>>) {
    let mut ranges = Vec::new();
    let mut script = String::from("label: gpt\n");
    let mut start = MIB;
    for content in contents {
        let len = std::fs::metadata(content).unwrap().len();
        script.push_str(&format!("start={}, size={}\n", start / 512, len / 512));
        ranges.push(start..start + len);
        start += len;
    }
    let disk = dir.join("disk.img");
    let file = std::fs::File::create(&disk).unwrap();
    file.set_len(start + MIB).unwrap();
    let mut sfdisk = Command::new("sfdisk").arg("-q").arg(&disk).stdin(Stdio::piped()).spawn().unwrap();
    std::io::Write::write_all(&mut sfdisk.stdin.take().unwrap(), script.as_bytes()).unwrap();
    assert!(sfdisk.wait().unwrap().success(), "sfdisk {script}");
    for (content, range) in contents.iter().zip(&ranges) {
        file.write_all_at(&std::fs::read(content).unwrap(), range.start).unwrap();
    }
    (disk, ranges)
}

fn slice<'a>(bytes: &'a [u8], range: &Range<u64>) -> &'a [u8] {
    &bytes[range.start as usize..range.end as usize]
}

fn info_json(args: &[&str], source: &Path) -> Value {
    serde_json::from_slice(&run_ok(imgstream().arg("info").arg("--json").args(args).arg(source)).stdout).unwrap()
}

/// The warning lines about partition `index`.
fn warnings_for(stderr: &str, index: u32) -> Vec<&str> {
    stderr.lines().filter(|l| l.contains("warning: ") && l.contains(&format!("partition {index} "))).collect()
}

/// Replays the journal of both images (e2fsck -fy on copies) and checks that every block in
/// use in the replayed `source` has the same bytes in the replayed `output`. Both replays get
/// one clock (E2FSCK_TIME), or a second boundary between them would show as differing write
/// and check times in the superblock.
fn assert_replays_alike(what: &str, source: &[u8], output: &[u8], dir: &Path) {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let mut replayed = Vec::new();
    for (name, bytes) in [("src", source), ("out", output)] {
        let path = dir.join(format!("replay-{name}.img"));
        std::fs::write(&path, bytes).unwrap();
        let status = Command::new("e2fsck")
            .arg("-fy")
            .arg(&path)
            .env("E2FSCK_TIME", now.to_string())
            .stdout(Stdio::null())
            .status()
            .unwrap();
        assert!(status.code().is_some_and(|c| c <= 1), "{what}: e2fsck -fy {name}: {status}");
        replayed.push(path);
    }
    let expected = expected_from_dumpe2fs(&replayed[0], &std::fs::read(&replayed[0]).unwrap());
    let mut actual = std::fs::read(&replayed[1]).unwrap();
    for range in dumpe2fs_free(&replayed[0]) {
        actual[range].fill(0);
    }
    assert_same_bytes(&format!("{what}: replayed output vs replayed source, blocks in use"), &actual, &expected);
}

/// Acceptance (#9, 3): a GPT disk of a clean ext4, a dirty NTFS (mkntfs, then the $Volume
/// dirty flag as Windows sets it) and an ext4 whose journal needs recovery (debugfs jo/jw/jc):
/// `disk` succeeds, the NTFS is copied byte for byte with a warning naming it, both ext4 are
/// elided (the second, until its journal is analysed, raw with a warning: never a block lost);
/// `--on-unsafe refuse` fails naming the NTFS; restore-disk of a backup-disk gives the same.
#[test]
fn one_unsafe_partition_is_copied_raw_with_a_warning_and_the_rest_of_the_disk_is_elided() {
    if !have_tool("sfdisk") || !have_tool("dumpe2fs") || !have_tool("e2fsck") || !have_tool("borg") {
        return;
    }
    let dir = scratch();
    let names = ["ext-ext4", "ntfsbad-dirty", "extbad-needs-recovery"];
    let images: Vec<PathBuf> = names.iter().map(|name| fixture(name, dir.path())).collect();
    let (disk, parts) = gpt_disk(dir.path(), &images.iter().map(PathBuf::as_path).collect::<Vec<_>>());
    let before = sha256(&disk);
    let source = std::fs::read(&disk).unwrap();

    let output = run_ok(imgstream().arg("disk").arg(&disk));
    let (out, stderr) = (output.stdout, String::from_utf8_lossy(&output.stderr).into_owned());
    assert_eq!(out.len(), source.len());
    // Partition 2: raw, and the warning names its number, filesystem and reason.
    let ntfs = warnings_for(&stderr, 2);
    assert!(
        ntfs.len() == 1 && ntfs[0].contains("ntfs") && ntfs[0].contains("dirty") && ntfs[0].contains("raw"),
        "{stderr}"
    );
    assert_same_bytes("dirty NTFS partition", slice(&out, &parts[1]), slice(&source, &parts[1]));
    // Partition 1: exactly dumpe2fs's free blocks zeroed, and no warning.
    assert!(warnings_for(&stderr, 1).is_empty(), "{stderr}");
    let expected = expected_from_dumpe2fs(&images[0], &std::fs::read(&images[0]).unwrap());
    assert_same_bytes("clean ext4 partition", slice(&out, &parts[0]), &expected);
    assert_ne!(slice(&out, &parts[0]), slice(&source, &parts[0]), "the clean ext4 was not elided");
    // Partition 3: raw with a warning about its journal, or elided without losing a block.
    let journal = warnings_for(&stderr, 3);
    if journal.is_empty() {
        assert_replays_alike("needs_recovery ext4", slice(&source, &parts[2]), slice(&out, &parts[2]), dir.path());
    } else {
        assert!(journal[0].contains("journal") && journal[0].contains("raw"), "{stderr}");
        assert_same_bytes("needs_recovery ext4", slice(&out, &parts[2]), slice(&source, &parts[2]));
    }
    // Outside the partitions: every byte.
    assert_same_bytes("table and gaps", &out[..MIB as usize], &source[..MIB as usize]);
    assert_same_bytes("backup GPT", &out[parts[2].end as usize..], &source[parts[2].end as usize..]);

    // Refused on request, naming the NTFS partition; --raw-partition copies one partition raw.
    let stderr = run_fails(imgstream().args(["disk", "--on-unsafe", "refuse"]).arg(&disk).stdout(Stdio::null()), 1);
    assert!(stderr.contains("partition 2 ") && stderr.contains("ntfs") && stderr.contains("dirty"), "{stderr}");
    let forced = run_ok(imgstream().args(["disk", "--on-unsafe", "force"]).arg(&disk));
    assert!(warnings_for(&String::from_utf8_lossy(&forced.stderr), 2).iter().any(|w| w.contains("eliding ntfs")));
    assert_ne!(slice(&forced.stdout, &parts[1]), slice(&source, &parts[1]), "--on-unsafe force elides the NTFS");
    let stderr = run_fails(imgstream().args(["disk", "--raw-partition", "4"]).arg(&disk).stdout(Stdio::null()), 2);
    assert!(stderr.contains("no partition 4 (partitions: 1, 2, 3)"), "{stderr}");
    let raw1 = run_ok(imgstream().args(["disk", "--raw-partition", "1"]).arg(&disk)).stdout;
    assert_same_bytes("--raw-partition 1", slice(&raw1, &parts[0]), slice(&source, &parts[0]));
    assert_same_bytes("--raw-partition 1, partition 2", slice(&raw1, &parts[1]), slice(&out, &parts[1]));
    // info agrees: partition 2 raw for being dirty.
    let info = info_json(&[], &disk);
    assert_eq!(info["partitions"][0]["volume"]["status"], "elided");
    assert_eq!(info["partitions"][1]["volume"]["status"], "raw");
    assert!(info["partitions"][1]["volume"]["reason"].as_str().unwrap().contains("dirty"), "{info}");

    // backup-disk: refused on request before any archive exists; by default the same image.
    let borg = crate::disk::Borg::init(dir.path());
    let stderr = run_fails(borg.imgstream(&["backup-disk", "--on-unsafe", "refuse", "--name", "r"]).arg(&disk), 1);
    assert!(stderr.contains("partition 2 ") && stderr.contains("dirty"), "{stderr}");
    assert!(borg.archives().is_empty(), "{:?}", borg.archives());
    run_ok(borg.imgstream(&["backup-disk", "--name", "b"]).arg(&disk));
    let restored = dir.path().join("restored.img");
    run_ok(borg.imgstream(&["restore-disk", "--name", "b"]).arg(&restored));
    assert_same_bytes("restore-disk of backup-disk vs disk", &std::fs::read(&restored).unwrap(), &out);
    assert_eq!(sha256(&disk), before, "the source changed");
}

/// A mount, unmounted when dropped.
struct Mounted(PathBuf);

impl Mounted {
    fn new(device: &Path, point: &Path, command: &[&str]) -> Self {
        std::fs::create_dir_all(point).unwrap();
        run_ok(Command::new(command[0]).args(&command[1..]).arg(device).arg(point));
        Self(point.to_owned())
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

/// Acceptance (#9, 4): a partition mounted read-write through a stack of loop devices is
/// refused by name, by `disk` on the image file and on a loop device over it, while the other
/// partitions stream; `info` names the mount point; read-only mounts are fine. Stacks: ext4 via
/// a loop device at the partition's offset in the file; XFS via a loop device at the offset in
/// another loop device over the file; NTFS by ntfs-3g (FUSE) via a loop device at its offset.
/// (This kernel has no device-mapper or md and its loop devices show no partitions: holders
/// and partitions are covered by the fake-sysfs unit test in crates/blockio.)
#[test]
fn root_a_mount_through_a_stack_of_loop_devices_refuses_only_its_partition_and_info_names_it() {
    if !is_root() || !have_tool("sfdisk") || !have_tool("losetup") || !have_tool("mkfs.xfs") || !have_tool("ntfs-3g") {
        return;
    }
    let dir = scratch();
    let ext4 = fixture("ext-ext4", dir.path());
    let ntfs = fixture("ntfs-c4096", dir.path());
    let xfs = dir.path().join("xfs.img");
    std::fs::File::create(&xfs).unwrap().set_len(32 * MIB).unwrap();
    // mkfs.xfs refuses filesystems under 300 MiB unless it is run by a test suite.
    run_ok(
        Command::new("mkfs.xfs")
            .args(["-q", "-f"])
            .arg(&xfs)
            .env("TEST_DIR", "1")
            .env("TEST_DEV", "1")
            .env("QA_CHECK_FS", "1"),
    );
    let (disk, parts) = gpt_disk(dir.path(), &[&ext4, &xfs, &ntfs]);
    let whole_ro = LoopDevice::attach(&disk, &["-r"]);
    let whole_rw = LoopDevice::attach(&disk, &[]);
    let at = |range: &Range<u64>| {
        ["-o".to_owned(), range.start.to_string(), "--sizelimit".into(), (range.end - range.start).to_string()]
    };
    let loop_at = |file: &Path, range: &Range<u64>| {
        LoopDevice::attach(file, &at(range).iter().map(String::as_str).collect::<Vec<_>>())
    };
    let cases: [(u32, &Path, &[&str], &[&str]); 3] = [
        (1, &disk, &["mount"], &["mount", "-o", "ro"]),
        (2, whole_rw.path(), &["mount"], &["mount", "-o", "ro"]),
        (3, &disk, &["ntfs-3g"], &["ntfs-3g", "-o", "ro"]),
    ];
    for (index, under, rw, ro) in cases {
        let range = &parts[index as usize - 1];
        let device = loop_at(under, range);
        let point = dir.path().join(format!("mnt{index}"));
        let mounted = Mounted::new(device.path(), &point, rw);
        let point_text = point.display().to_string();
        for source in [disk.as_path(), whole_ro.path()] {
            let what = format!("partition {index} mounted, source {}", source.display());
            let stderr = run_fails(imgstream().arg("disk").arg(source).stdout(Stdio::null()), 1);
            assert!(
                stderr.contains(&format!("partition {index} "))
                    && stderr.contains(&point_text)
                    && stderr.contains("read-write"),
                "{what}: {stderr}"
            );
            assert_eq!(stderr.lines().count(), 1, "{what}: {stderr}");
            for other in (1..=3).filter(|&o| o != index) {
                run_ok(imgstream().args(["disk", "--partition", &other.to_string()]).arg(source).stdout(Stdio::null()));
            }
            let info = info_json(&[], source);
            for p in info["partitions"].as_array().unwrap() {
                let volume = &p["volume"];
                if p["index"] == index {
                    assert_eq!(volume["status"], "refused", "{what}: {p}");
                    assert!(volume["reason"].as_str().unwrap().contains(&point_text), "{what}: {p}");
                } else {
                    assert_ne!(volume["status"], "refused", "{what}: {p}");
                }
            }
        }
        // --force-partition images it anyway, with a warning.
        let output = run_ok(
            imgstream().args(["disk", "--force-partition", &index.to_string()]).arg(&disk).stdout(Stdio::null()),
        );
        assert!(String::from_utf8_lossy(&output.stderr).contains("--force"), "{index}");
        drop(mounted);
        // Read-only: fine, and info says where.
        let mounted = Mounted::new(device.path(), &point, ro);
        run_ok(imgstream().arg("disk").arg(&disk).stdout(Stdio::null()));
        let info = info_json(&[], whole_ro.path());
        let details = &info["partitions"][index as usize - 1]["volume"]["details"];
        assert!(
            details["mounted"].as_str().is_some_and(|m| m.contains("read-only") && m.contains(&point_text)),
            "{info}"
        );
        drop(mounted);
    }
}

/// `part` on an NTFS image that ntfs-3g mounts directly (FUSE, no block device): refused.
#[test]
fn root_a_fuse_mount_of_the_image_file_itself_is_found() {
    if !is_root() || !have_tool("ntfs-3g") {
        return;
    }
    let dir = scratch();
    let image = fixture("ntfs-c4096", dir.path());
    let point = dir.path().join("mnt");
    let mounted = Mounted::new(&image, &point, &["ntfs-3g"]);
    let stderr = run_fails(imgstream().arg("part").arg(&image).stdout(Stdio::null()), 1);
    assert!(stderr.contains("read-write") && stderr.contains(&point.display().to_string()), "{stderr}");
    let info = info_json(&[], &image);
    assert_eq!(info["volume"]["status"], "refused", "{info}");
    drop(mounted);
    run_ok(imgstream().arg("part").arg(&image).stdout(Stdio::null()));
}

/// A sparse file of `len` bytes in `dir`.
fn sparse(dir: &Path, name: &str, len: u64) -> PathBuf {
    let path = dir.join(name);
    std::fs::File::create(&path).unwrap().set_len(len).unwrap();
    path
}

/// `info` (JSON and text) names `image` as `name`, copies it raw, and says `words`.
fn assert_named(image: &Path, name: &str, words: &str) {
    let info = info_json(&[], image);
    let volume = &info["volume"];
    let what = format!("{}: {volume}", image.display());
    assert_eq!(volume["filesystem"], name, "{what}");
    assert_eq!(volume["status"], "raw", "{what}");
    assert_eq!(volume["elidable"], 0, "{what}");
    assert!(volume["reason"].as_str().unwrap().contains(words), "{what}");
    let text = String::from_utf8(run_ok(imgstream().arg("info").arg(image)).stdout).unwrap();
    assert!(text.contains(&format!("filesystem  {name}\n")) && text.contains(words), "{text}");
    let stderr = String::from_utf8(run_ok(imgstream().arg("part").arg(image).stdout(Stdio::null())).stderr).unwrap();
    assert!(stderr.contains("warning: ") && stderr.contains(words), "{stderr}");
}

/// An md RAID1 member (metadata 1.2, device 0 of 2) of `len` bytes, written from the md_p.h
/// layout (this kernel has no md, so `mdadm --create` cannot run); mdadm --examine checks it.
fn md_member(dir: &Path, len: u64) -> PathBuf {
    let path = sparse(dir, "md.img", len);
    let mut sb = vec![0u8; 512];
    let mut put = |offset: usize, bytes: &[u8]| sb[offset..offset + bytes.len()].copy_from_slice(bytes);
    put(0, &0xa92b_4efc_u32.to_le_bytes()); // magic
    put(4, &1u32.to_le_bytes()); // major_version
    put(16, &[0x11; 16]); // set_uuid
    put(32, b"policy:0"); // set_name
    put(72, &1u32.to_le_bytes()); // level: raid1
    let data_sectors = len / 512 - 2048;
    put(80, &data_sectors.to_le_bytes()); // size
    put(92, &2u32.to_le_bytes()); // raid_disks
    put(128, &2048u64.to_le_bytes()); // data_offset
    put(136, &data_sectors.to_le_bytes()); // data_size
    put(144, &8u64.to_le_bytes()); // super_offset
    put(168, &[0x22; 16]); // device_uuid
    put(200, &1u64.to_le_bytes()); // events
    put(208, &u64::MAX.to_le_bytes()); // resync_offset: in sync
    put(220, &2u32.to_le_bytes()); // max_dev
    put(256, &[0, 0, 1, 0]); // dev_roles
    // super1.c calc_sb_1_csum: the 32-bit words of the first 256 + 2 * max_dev bytes, folded.
    let sum: u64 = sb[..260].chunks(4).map(|w| u64::from(u32::from_le_bytes(w.try_into().unwrap()))).sum();
    let csum = (sum & 0xffff_ffff) + (sum >> 32);
    sb[216..220].copy_from_slice(&(csum as u32).to_le_bytes());
    std::fs::OpenOptions::new().write(true).open(&path).unwrap().write_all_at(&sb, 4096).unwrap();
    let examine = run_ok(Command::new("mdadm").arg("--examine").arg(&path));
    let report = String::from_utf8_lossy(&examine.stdout);
    assert!(report.contains("Version : 1.2") && report.contains("raid1") && report.contains("correct"), "{report}");
    path
}

/// Acceptance (#10, 4): what imgstream cannot elide is named after the real tool that made it,
/// in `info` (JSON and text) and in `part`'s warning, with the hint where there is one.
/// Synthetic headers, from each format's specification, where Debian has no tool that runs
/// here: md (no md in this kernel; checked by mdadm --examine), ZFS, VMFS, ReFS, HFS+,
/// BitLocker (covered, with every other entry at every place, by the unit test in crates/fs).
#[test]
fn what_is_not_elided_is_named_after_the_tool_that_made_it() {
    let tools = ["cryptsetup", "mkfs.f2fs", "qemu-img", "make-bcache", "mkapfs", "mdadm"];
    if !tools.iter().all(|t| have_tool(t)) {
        return;
    }
    let dir = scratch();
    let d = dir.path();
    let key = d.join("key");
    std::fs::write(&key, "passphrase").unwrap();
    for version in ["luks1", "luks2"] {
        let image = sparse(d, &format!("{version}.img"), 32 * MIB);
        run_ok(
            Command::new("cryptsetup")
                .args(["luksFormat", "-q", "--type", version, "--pbkdf", "pbkdf2"])
                .args(["--pbkdf-force-iterations", "1000", "--key-file"])
                .arg(&key)
                .arg(&image),
        );
        assert_named(&image, version, "/dev/mapper/NAME");
    }
    let made = |name: &str, len: u64, command: &[&str]| {
        let image = sparse(d, &format!("{name}.img"), len);
        let mut command_line = Command::new(command[0]);
        command_line.args(&command[1..]).arg(&image).env("TEST_DIR", "1").env("TEST_DEV", "1").env("QA_CHECK_FS", "1");
        run_ok(command_line.stdout(Stdio::null()));
        image
    };
    assert_named(&made("f2fs", 64 * MIB, &["mkfs.f2fs", "-q"]), "f2fs", "F2FS filesystem");
    assert_named(&made("bcache", 16 * MIB, &["make-bcache", "-B"]), "bcache", "bcache device");
    assert_named(&made("apfs", 256 * MIB, &["mkapfs"]), "apfs", "APFS container");
    for (format, name) in [("qcow2", "qcow2"), ("vmdk", "vmdk"), ("vhdx", "vhdx"), ("vpc", "vhd")] {
        let image = d.join(format!("disk.{format}"));
        run_ok(Command::new("qemu-img").args(["create", "-q", "-f", format]).arg(&image).arg("64M"));
        assert_named(&image, name, "qemu-nbd -r");
    }
    // The md crate reads the RAID1 member; its data area holds nothing known, so it is raw.
    assert_named(&md_member(d, 16 * MIB), "md-raid1", "md raid1 member (metadata 1.2, array policy:0)");
    // A hibernated swap area (mkswap, then the kernel's signature): the swap crate names it and
    // keeps all of it.
    let swap = fixture("swapbad-hibernated", d);
    let volume = &info_json(&[], &swap)["volume"];
    assert!(volume["filesystem"] == "swap" && volume["used"] == volume["size"], "{volume}");
    assert!(volume["warnings"][0].as_str().unwrap().contains("hibernation image"), "{volume}");
    // The rest from their specifications: (name, words, byte offset, magic).
    let synthetic: [(&str, &str, u64, &[u8]); 5] = [
        ("zfs", "ZFS pool member", 128 * 1024 + 5 * 1024, b"\x0c\xb1\xba\x00\x00\x00\x00\x00"),
        ("vmfs", "VMFS datastore", MIB, b"\x0d\xd0\x01\xc0"),
        ("refs", "ReFS filesystem", 3, b"ReFS\0\0\0\0"),
        ("hfsplus", "HFS+ filesystem", 1024, b"H+\x00\x04"),
        ("bitlocker", "BitLocker encrypted volume", 3, b"-FVE-FS-"),
    ];
    for (name, words, offset, magic) in synthetic {
        let image = sparse(d, &format!("{name}.img"), 4 * MIB);
        std::fs::OpenOptions::new().write(true).open(&image).unwrap().write_all_at(magic, offset).unwrap();
        assert_named(&image, name, words);
    }
}

/// An LVM2 physical volume written by pvcreate (on a loop device: lvm wants one; activation off,
/// as this kernel has no device-mapper), named while no LVM crate reads it.
#[test]
fn root_an_lvm2_physical_volume_from_pvcreate_is_named() {
    if !is_root() || !have_tool("pvcreate") || !have_tool("losetup") {
        return;
    }
    let dir = scratch();
    let image = sparse(dir.path(), "pv.img", 16 * MIB);
    {
        let device = LoopDevice::attach(&image, &[]);
        let config = "global {activation = 0} devices {use_devicesfile = 0}";
        run_ok(Command::new("pvcreate").args(["-q", "--config", config]).arg(device.path()));
    }
    let info = info_json(&[], &image);
    // The LVM2 crate, once it lands, reads an empty PV; until then it is named.
    if info["volume"]["filesystem"] == "lvm2-pv" {
        assert_named(&image, "lvm2-pv", "LVM2 physical volume");
    } else {
        assert!(info["volume"]["filesystem"].as_str().unwrap().contains("lvm"), "{info}");
    }
}

/// Partitions whose GPT type holds no filesystem are named by it and copied without a warning;
/// a LUKS partition is named with its hint; info shows every type GUID by name.
#[test]
fn bios_boot_and_microsoft_reserved_partitions_are_named_and_copied_without_a_warning() {
    if !have_tool("sfdisk") || !have_tool("cryptsetup") {
        return;
    }
    let dir = scratch();
    let d = dir.path();
    let (bios, msr) = (sparse(d, "bios.img", MIB), sparse(d, "msr.img", 2 * MIB));
    std::fs::write(&msr, vec![0x5a; 2 * MIB as usize]).unwrap();
    let luks = sparse(d, "luks.img", 32 * MIB);
    std::fs::write(d.join("key"), "k").unwrap();
    run_ok(
        Command::new("cryptsetup")
            .args(["luksFormat", "-q", "--type", "luks2", "--pbkdf", "pbkdf2"])
            .args(["--pbkdf-force-iterations", "1000", "--key-file"])
            .arg(d.join("key"))
            .arg(&luks),
    );
    let (disk, parts) = gpt_disk(d, &[&bios, &msr, &luks]);
    let types = [
        "21686148-6449-6E6F-744E-656564454649",
        "E3C9E316-0B5C-4DB8-817D-F92DF00215AE",
        "CA7D7CCB-63ED-4C53-861C-1742536059CC",
    ];
    for (index, guid) in types.iter().enumerate() {
        run_ok(Command::new("sfdisk").args(["-q", "--part-type"]).arg(&disk).arg((index + 1).to_string()).arg(guid));
    }
    let source = std::fs::read(&disk).unwrap();
    let output = run_ok(imgstream().arg("disk").arg(&disk));
    assert!(output.stdout == source, "all three are copied");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(warnings_for(&stderr, 1).is_empty() && warnings_for(&stderr, 2).is_empty(), "{stderr}");
    assert!(warnings_for(&stderr, 3).iter().any(|w| w.contains("LUKS2") && w.contains("/dev/mapper/NAME")), "{stderr}");
    let info = info_json(&[], &disk);
    let names: Vec<&str> =
        info["partitions"].as_array().unwrap().iter().map(|p| p["type_name"].as_str().unwrap()).collect();
    assert_eq!(names, ["BIOS boot", "Microsoft reserved", "Linux LUKS"]);
    assert!(
        info["partitions"][1]["volume"]["reason"].as_str().unwrap().contains("Microsoft reserved partition"),
        "{info}"
    );
    let text = String::from_utf8(run_ok(imgstream().arg("info").arg(&disk)).stdout).unwrap();
    assert!(text.contains("BIOS boot") && text.contains("Linux LUKS") && text.contains(" luks2 "), "{text}");
    assert_eq!(parts.len(), 3);
}

/// `part -o DEVICE` and `disk -o DEVICE` check the device as `restore` checks its target, before
/// the first write: one that shows bytes of the source (a loop device over the source file, at
/// any offset) is refused as the source (exit 2); one mounted read-write, or too small for the
/// image, is refused (exit 1) and left as it was. One that fits gets the image at its start.
#[test]
fn root_an_output_device_over_the_source_mounted_or_too_small_is_refused_before_any_write() {
    if !is_root() || !have_tool("losetup") || !have_tool("mkfs.ext4") {
        return;
    }
    let dir = scratch();
    let source = fixture("fat-12", dir.path());
    let before = sha256(&source);
    let whole = LoopDevice::attach(&source, &[]);
    let at_offset = LoopDevice::attach(&source, &["-o", &MIB.to_string()]);
    for device in [&whole, &at_offset] {
        for command in ["part", "disk"] {
            let stderr = run_fails(imgstream().args([command, "-o"]).arg(device.path()).arg(&source), 2);
            assert!(stderr.contains("is the source"), "{command} -o {}: {stderr}", device.path().display());
        }
    }
    drop((whole, at_offset));
    assert_eq!(sha256(&source), before, "the source was written through a loop device");

    let mounted_file = dir.path().join("mounted.img");
    std::fs::File::create(&mounted_file).unwrap().set_len(16 * MIB).unwrap();
    run_ok(Command::new("mkfs.ext4").args(["-q", "-F"]).arg(&mounted_file));
    let device = LoopDevice::attach(&mounted_file, &[]);
    let mounted = Mounted::new(device.path(), &dir.path().join("mnt"), &["mount"]);
    for command in ["part", "disk"] {
        let stderr = run_fails(imgstream().args([command, "-o"]).arg(device.path()).arg(&source), 1);
        assert!(stderr.contains("mounted read-write"), "{command}: {stderr}");
    }
    drop(mounted);
    drop(device);
    let fat_boot_sector = &std::fs::read(&source).unwrap()[..512];
    assert_ne!(&std::fs::read(&mounted_file).unwrap()[..512], fat_boot_sector, "the mounted device was written");

    let small_file = dir.path().join("small.img");
    std::fs::write(&small_file, vec![0x5a; 2 * MIB as usize]).unwrap();
    let small = LoopDevice::attach(&small_file, &[]);
    for command in ["part", "disk"] {
        let stderr = run_fails(imgstream().args([command, "-o"]).arg(small.path()).arg(&source), 1);
        assert!(stderr.contains("do not fit") && stderr.contains("nothing was written"), "{command}: {stderr}");
    }
    drop(small);
    assert!(std::fs::read(&small_file).unwrap().iter().all(|&b| b == 0x5a), "the small device was written");

    let large_file = dir.path().join("large.img");
    std::fs::write(&large_file, vec![0x5a; 8 * MIB as usize]).unwrap();
    let large = LoopDevice::attach(&large_file, &[]);
    run_ok(imgstream().args(["part", "-o"]).arg(large.path()).arg(&source));
    drop(large);
    let image = imgstream_ok(&["part", source.to_str().unwrap()]);
    assert_same_bytes("part -o DEVICE", &std::fs::read(&large_file).unwrap()[..image.len()], &image);
}

/// `verify` refuses a source mounted read-write as `part` does (exit 1), as a device or as the
/// image file under it, also with `--disk --raw`; `--force` checks it anyway, with a warning.
#[test]
fn root_verify_refuses_a_source_mounted_read_write_unless_forced() {
    if !is_root() || !have_tool("losetup") {
        return;
    }
    let dir = scratch();
    let source = fixture("ext-1k", dir.path());
    let stream = dir.path().join("stream.img");
    run_ok(imgstream().args(["part", "-o"]).arg(&stream).arg(&source));
    let device = LoopDevice::attach(&source, &[]);
    let mounted = Mounted::new(device.path(), &dir.path().join("mnt"), &["mount"]);
    let verify = |args: &[&str], what: &Path| {
        let stdin = std::fs::File::open(&stream).unwrap();
        let output = imgstream().arg("verify").args(args).arg(what).stdin(stdin).output().unwrap();
        (output.status.code(), String::from_utf8_lossy(&output.stderr).into_owned())
    };
    for what in [device.path(), source.as_path()] {
        for args in [&[][..], &["--disk", "--raw"]] {
            let (code, stderr) = verify(args, what);
            assert_eq!(code, Some(1), "verify {args:?} {}: {stderr}", what.display());
            assert!(stderr.contains("mounted read-write") && stderr.contains("unmount it"), "{stderr}");
        }
    }
    let (_, stderr) = verify(&["--force"], device.path());
    assert!(stderr.contains("warning") && stderr.contains("--force") && !stderr.contains("unmount it"), "{stderr}");
    drop(mounted);
}
