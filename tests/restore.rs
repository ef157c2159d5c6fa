//! `imgstream restore`: a raw stream on stdin into a sparse file (du vs ls -l) or a block
//! device holding old data (exact bytes), length checks, and refusing a target in use.

#![allow(clippy::indexing_slicing)] // test code: a panic is a failed test, with its message

use crate::disk::{LoopDevice, backed_up, borg_wrapper};
use crate::faults::SmallTmpfs;
use crate::util::*;
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

/// Runs `imgstream restore ARGS` with `stream` written into its stdin through a pipe, in
/// pieces of odd sizes (a pipe delivers short reads).
fn restore(args: &[&str], stream: &[u8]) -> std::process::Output {
    let mut child = imgstream()
        .arg("restore")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let data = stream.to_vec();
    let writer = std::thread::spawn(move || {
        for piece in data.chunks(65_537) {
            if stdin.write_all(piece).is_err() {
                break; // restore stopped reading (a length error)
            }
        }
    });
    let output = child.wait_with_output().unwrap();
    writer.join().unwrap();
    output
}

fn disk_stream(dir: &Path) -> Vec<u8> {
    let disk = fixture("disk-gpt", dir);
    run_ok(imgstream().arg("disk").arg(&disk)).stdout
}

/// Bytes `du` says a file occupies.
fn du_bytes(path: &Path) -> u64 {
    let output = run_ok(Command::new("du").args(["-B1", "--"]).arg(path));
    String::from_utf8(output.stdout).unwrap().split_whitespace().next().unwrap().parse().unwrap()
}

/// Acceptance 4 (file): only the non-zero blocks are allocated, and the bytes are exact.
#[test]
fn restore_sparse_into_a_file_allocates_only_the_non_zero_blocks() {
    if !have_tool("du") {
        return;
    }
    let dir = scratch();
    let stream = disk_stream(dir.path());
    let target = dir.path().join("restored.img");
    let output = restore(&["--sparse", target.to_str().unwrap()], &stream);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    assert_same_bytes("restored file", &std::fs::read(&target).unwrap(), &stream);
    let apparent = std::fs::metadata(&target).unwrap().len();
    assert_eq!(apparent, stream.len() as u64, "ls -l size");
    let non_zero = stream.chunks(4096).filter(|page| page.iter().any(|&b| b != 0)).count() as u64 * 4096;
    let allocated = du_bytes(&target);
    // At least the data, at most the data plus a little filesystem metadata (extent blocks).
    assert!(
        allocated >= non_zero && allocated <= non_zero + (256 << 10),
        "du {allocated}, non-zero pages {non_zero}, ls -l {apparent}"
    );
    assert!(allocated < apparent / 2, "not sparse: du {allocated}, ls -l {apparent}");

    // Without --sparse every block is written.
    let dense = dir.path().join("dense.img");
    let output = restore(&[dense.to_str().unwrap()], &stream);
    assert!(output.status.success());
    assert_same_bytes("dense file", &std::fs::read(&dense).unwrap(), &stream);
    assert!(du_bytes(&dense) >= apparent, "zeros were not written");
}

#[test]
fn a_stream_shorter_or_longer_than_expected_fails_with_both_lengths() {
    let dir = scratch();
    let stream = vec![7u8; 3 << 20];
    let target = dir.path().join("t.img");
    let path = target.to_str().unwrap();
    let output = restore(&["--sparse", "--size", "4M", path], &stream);
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("ended after 3145728 bytes, 4194304 were expected") && stderr.contains("incomplete"),
        "{stderr}"
    );
    let output = restore(&["--size", "2M", path], &stream);
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("longer than the 2097152 bytes expected"), "{stderr}");
    assert_eq!(stderr.lines().filter(|l| l.contains("error:")).count(), 1, "{stderr}");
    // Usage errors: --assume-zeroed on a file.
    let output = restore(&["--assume-zeroed", path], &stream);
    assert_eq!(output.status.code(), Some(1), "{}", String::from_utf8_lossy(&output.stderr));
}

/// A file of `len` bytes of 0xAB: "old data" a restore must not leave behind.
fn old_data(path: &Path, len: usize) {
    std::fs::write(path, vec![0xABu8; len]).unwrap();
}

/// Acceptance 4 (device): on a loop device full of old data, --sparse (BLKZEROOUT) and plain
/// writes give the exact bytes; --assume-zeroed is exact only on a zeroed device.
#[test]
fn root_restore_onto_a_loop_device_with_old_data_gives_the_exact_bytes() {
    if !is_root() || !have_tool("losetup") {
        return;
    }
    let dir = scratch();
    let stream = disk_stream(dir.path());
    let backing = dir.path().join("device.img");
    for args in [&["--sparse"][..], &[][..]] {
        old_data(&backing, stream.len());
        let device = LoopDevice::attach(&backing, &[]);
        let mut all = args.to_vec();
        all.push(device.path().to_str().unwrap());
        let output = restore(&all, &stream);
        assert!(output.status.success(), "{args:?}: {}", String::from_utf8_lossy(&output.stderr));
        let stderr = String::from_utf8_lossy(&output.stderr);
        if args.is_empty() {
            assert!(stderr.contains("written"), "{stderr}");
        } else {
            assert!(stderr.contains("zeroed out (BLKZEROOUT)"), "{stderr}");
        }
        drop(device);
        assert_same_bytes(&format!("loop device after restore {args:?}"), &std::fs::read(&backing).unwrap(), &stream);
    }
    // --assume-zeroed: exact on a zeroed device, and (the reason it is opt-in) not on old data.
    std::fs::write(&backing, vec![0u8; stream.len()]).unwrap();
    let device = LoopDevice::attach(&backing, &[]);
    assert!(restore(&["--assume-zeroed", device.path().to_str().unwrap()], &stream).status.success());
    drop(device);
    assert_same_bytes("assume-zeroed on a zeroed device", &std::fs::read(&backing).unwrap(), &stream);
    old_data(&backing, stream.len());
    let device = LoopDevice::attach(&backing, &[]);
    assert!(restore(&["--assume-zeroed", device.path().to_str().unwrap()], &stream).status.success());
    drop(device);
    assert!(std::fs::read(&backing).unwrap() != stream, "old data should show through --assume-zeroed");

    // A device of another size: the stream must match it unless --size says otherwise.
    old_data(&backing, stream.len() + (1 << 20));
    let device = LoopDevice::attach(&backing, &[]);
    let output = restore(&["--sparse", device.path().to_str().unwrap()], &stream);
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("were expected") && stderr.contains("needs --size BYTES"), "{stderr}");
    let size = stream.len().to_string();
    assert!(restore(&["--sparse", "--size", &size, device.path().to_str().unwrap()], &stream).status.success());
}

#[test]
fn root_a_mounted_target_is_refused() {
    if !is_root() || !have_tool("losetup") || !have_tool("mkfs.ext4") {
        return;
    }
    let dir = scratch();
    let backing = dir.path().join("fs.img");
    std::fs::File::create(&backing).unwrap().set_len(8 << 20).unwrap();
    run_ok(Command::new("mkfs.ext4").args(["-q", "-F"]).arg(&backing));
    let device = LoopDevice::attach(&backing, &[]);
    let mount_point = dir.path().join("mnt");
    std::fs::create_dir(&mount_point).unwrap();
    run_ok(Command::new("mount").arg(device.path()).arg(&mount_point));
    // Mounting writes the superblock; compare while mounted, after the kernel has flushed.
    run_ok(&mut Command::new("sync"));
    let before = sha256(&backing);
    let stream = vec![0u8; 8 << 20];
    let on_device = restore(&["--sparse", device.path().to_str().unwrap()], &stream);
    // Even --force (replace a non-empty file) does not write through a mount.
    let on_file = restore(&["--sparse", "--force", backing.to_str().unwrap()], &stream);
    run_ok(&mut Command::new("sync"));
    let after = sha256(&backing);
    let _ = Command::new("umount").arg(&mount_point).status();
    assert_eq!(on_device.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&on_device.stderr);
    assert!(stderr.contains("mounted read-write") || stderr.contains("in use"), "{stderr}");
    assert_eq!(on_file.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&on_file.stderr);
    assert!(stderr.contains("mounted read-write"), "{stderr}");
    assert_eq!(after, before, "a mounted target was written");
}

/// restore-disk onto a larger block device full of old data: exact partitions and raw areas,
/// zeros where the stream has zeros, the backup GPT at the device's end.
#[test]
fn root_restore_disk_onto_a_larger_loop_device_with_old_data() {
    if !is_root() || !have_tool("losetup") || !have_tool("sfdisk") {
        return;
    }
    let Some((dir, borg, disk)) = backed_up("disk-gpt", &["d"]) else { return };
    let stream = run_ok(imgstream().arg("disk").arg(&disk)).stdout;
    let backing = dir.path().join("device.img");
    old_data(&backing, stream.len() + (16 << 20));
    let device = LoopDevice::attach(&backing, &[]);
    run_ok(borg.imgstream(&["restore-disk", "--name", "d"]).arg(device.path()));
    let verify = run_ok(Command::new("sfdisk").arg("--verify").arg(device.path()));
    assert!(String::from_utf8_lossy(&verify.stdout).contains("No errors detected"));
    drop(device);
    let restored = std::fs::read(&backing).unwrap();
    // Partitions byte for byte (free space zeros, not 0xAB).
    let info: serde_json::Value =
        serde_json::from_slice(&run_ok(imgstream().args(["info", "--json"]).arg(&disk)).stdout).unwrap();
    for p in info["partitions"].as_array().unwrap() {
        let (start, size) = (p["start"].as_u64().unwrap() as usize, p["size"].as_u64().unwrap() as usize);
        assert_same_bytes(
            &format!("partition {}", p["index"]),
            &restored[start..start + size],
            &stream[start..start + size],
        );
    }
    let last = restored.len() - 512;
    assert_eq!(&restored[last..last + 8], b"EFI PART");
}

/// restore-disk checks that the archive holds every file of its manifest before it writes:
/// an archive without part2.img (borg run with `--exclude part2.img`, which backup-disk itself
/// refuses) leaves an existing target untouched and creates no new one.
#[test]
fn restore_disk_refuses_an_incomplete_archive_before_writing() {
    let Some((dir, borg, disk)) = backed_up("disk-gpt", &[]) else { return };
    let excluding = borg_wrapper(dir.path(), "borg-excluding-part2", "exec borg \"$@\" --exclude part2.img");
    run_ok(borg.imgstream(&["backup-disk", "--name", "excl"]).arg(&disk).env("IMGSTREAM_BORG", &excluding));
    let victim = dir.path().join("victim.img");
    old_data(&victim, 64 << 20);
    let before = sha256(&victim);
    let stderr = run_fails(borg.imgstream(&["restore-disk", "--name", "excl"]).arg(&victim), 1);
    assert!(stderr.contains("no single file part2.img") && stderr.contains("nothing was written"), "{stderr}");
    assert_eq!(sha256(&victim), before, "the existing target was written");
    let fresh = dir.path().join("fresh.img");
    let stderr = run_fails(borg.imgstream(&["restore-disk", "--name", "excl"]).arg(&fresh), 1);
    assert!(stderr.contains("not a whole backup"), "{stderr}");
    assert!(!fresh.exists(), "a failed restore-disk left the file it created");
}

/// restore-disk failing while it writes (the target's filesystem is full): a file the run
/// created is removed; an existing one is left, and the message says it holds an incomplete disk.
#[test]
fn root_restore_disk_failing_part_way_removes_the_file_it_created() {
    if !is_root() {
        return;
    }
    let Some((dir, borg, _disk)) = backed_up("disk-gpt", &["d"]) else { return };
    // 1 MiB: less than the disk's data.
    let tiny = SmallTmpfs::mount(dir.path(), "1M");
    let fresh = tiny.0.join("fresh.img");
    let stderr = run_fails(borg.imgstream(&["restore-disk", "--name", "d"]).arg(&fresh), 1);
    assert!(stderr.contains("No space left on device") && stderr.contains("was removed"), "{stderr}");
    assert!(!fresh.exists(), "a failed restore-disk left the file it created");
    let existing = tiny.0.join("existing.img");
    std::fs::File::create(&existing).unwrap().set_len(64 << 20).unwrap();
    let stderr = run_fails(borg.imgstream(&["restore-disk", "--name", "d"]).arg(&existing), 1);
    assert!(stderr.contains("existing.img holds an incomplete disk"), "{stderr}");
    assert!(existing.exists());
}

/// A device node that does not exist (yet) is not created as a file in devtmpfs, by either
/// command.
#[test]
fn root_a_missing_device_node_is_refused_not_created() {
    if !is_root() {
        return;
    }
    /// Removes what a wrong run would create under /dev.
    struct Node(std::path::PathBuf);
    impl Drop for Node {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }
    let Some((_dir, borg, _disk)) = backed_up("disk-mbr", &["m"]) else { return };
    let node = Node(format!("/dev/imgstream-test-missing-{}", std::process::id()).into());
    let stderr = run_fails(borg.imgstream(&["restore-disk", "--name", "m"]).arg(&node.0), 1);
    assert!(stderr.contains("the device does not exist"), "{stderr}");
    assert!(!node.0.exists(), "restore-disk created {}", node.0.display());
    let output = restore(&["--sparse", node.0.to_str().unwrap()], &[0u8; 4096]);
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("the device does not exist"), "{stderr}");
    assert!(!node.0.exists(), "restore created {}", node.0.display());
}

/// An MBR disk restored onto a larger device that held a GPT before: the stale backup GPT
/// header in the device's last sector is zeroed (else tools see both tables).
#[test]
fn root_restore_disk_clears_a_stale_backup_gpt_header_on_a_larger_device() {
    if !is_root() || !have_tool("losetup") {
        return;
    }
    let Some((dir, borg, disk)) = backed_up("disk-mbr", &["m"]) else { return };
    let size = std::fs::metadata(&disk).unwrap().len() as usize;
    let backing = dir.path().join("device.img");
    let mut old = vec![0xABu8; size + (16 << 20)];
    let last = old.len() - 512;
    old[last..last + 8].copy_from_slice(b"EFI PART");
    std::fs::write(&backing, &old).unwrap();
    let device = LoopDevice::attach(&backing, &[]);
    let output = run_ok(borg.imgstream(&["restore-disk", "--name", "m"]).arg(device.path()));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("stale GPT backup header"), "{stderr}");
    drop(device);
    let restored = std::fs::read(&backing).unwrap();
    assert!(restored[last..].iter().all(|&b| b == 0), "the stale backup GPT header is still there");
    assert!(restored[last - 512..last].iter().all(|&b| b == 0xAB), "more than the last sector was cleared");
}

/// A disk restored onto a larger device that was an md member (metadata 1.0 and 0.90, which md
/// finds from the device's end): the stale superblocks past the restored disk are wiped, else
/// md would assemble the old array over the restored disk. mdadm --examine is the judge.
#[test]
fn root_restore_disk_clears_stale_md_superblocks_at_the_end_of_a_larger_device() {
    if !is_root() || !have_tool("losetup") || !have_tool("mdadm") {
        return;
    }
    let Some((dir, borg, disk)) = backed_up("disk-mbr", &["m"]) else { return };
    let size = std::fs::metadata(&disk).unwrap().len();
    let backing = dir.path().join("device.img");
    let len = size + (16 << 20);
    let mut old = vec![0xABu8; len as usize];
    let sectors = len / 512;
    let v1_0 = (sectors - 16) & !7;
    let v0_90 = (len & !0xFFFF) - 0x10000;
    let mut superblocks = Vec::new();
    for (version, at, bytes) in [
        ("0.90", v0_90, crate::md::superblock_0_90(v0_90 / 1024)),
        ("1.0", v1_0 * 512, crate::md::member_1_0_superblock(v1_0)),
    ] {
        old[at as usize..at as usize + bytes.len()].copy_from_slice(&bytes);
        let backing_alone = dir.path().join(format!("alone-{version}.img"));
        let mut alone = vec![0u8; len as usize];
        alone[at as usize..at as usize + bytes.len()].copy_from_slice(&bytes);
        std::fs::write(&backing_alone, &alone).unwrap();
        let examined = run_ok(Command::new("mdadm").arg("--examine").arg(&backing_alone)).stdout;
        assert!(
            String::from_utf8_lossy(&examined).contains(&format!("Version : {version}")),
            "mdadm sees the {version} superblock"
        );
        superblocks.push(at);
    }
    std::fs::write(&backing, &old).unwrap();
    let device = LoopDevice::attach(&backing, &[]);
    let output = run_ok(borg.imgstream(&["restore-disk", "--name", "m"]).arg(device.path()));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(stderr.matches("stale md superblock").count(), 2, "{stderr}");
    // mdadm --examine reports the MBR then (exit 0), but no md superblock.
    let examined = Command::new("mdadm").arg("--examine").arg(device.path()).output().unwrap();
    let report = String::from_utf8_lossy(&examined.stdout);
    assert!(!report.contains("a92b4efc") && !report.contains("Raid Level"), "mdadm still finds a superblock: {report}");
    drop(device);
    let restored = std::fs::read(&backing).unwrap();
    for at in superblocks {
        let at = at as usize;
        assert!(restored[at..at + 512].iter().all(|&b| b == 0), "superblock at {at} still there");
        assert!(restored[at - 512..at].iter().all(|&b| b == 0xAB), "more than the superblock's sector was cleared");
    }
}

/// A directory target is named as one; a disk without a partition table is described in words.
#[test]
fn restore_disk_refuses_a_directory_and_describes_a_disk_without_a_table() {
    let Some((dir, borg, _disk)) = backed_up("fat-32", &["plain"]) else { return };
    let directory = dir.path().join("somedir");
    std::fs::create_dir(&directory).unwrap();
    let stderr = run_fails(borg.imgstream(&["restore-disk", "--name", "plain"]).arg(&directory), 1);
    assert!(stderr.contains("is a directory") && stderr.contains("nothing was written"), "{stderr}");
    assert_eq!(std::fs::read_dir(&directory).unwrap().count(), 0);
    let output = run_ok(borg.imgstream(&["restore-disk", "--name", "plain"]).arg(dir.path().join("plain.img")));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("(disk without a partition table, 1 partition(s)"), "{stderr}");
}

/// An empty stream (what a failure upstream in a plain pipe leaves) restores nothing: exit 1,
/// and no file is left; `--size 0` asks for an empty image and gets one.
#[test]
fn an_empty_stream_is_refused_unless_size_0_asks_for_it() {
    let dir = scratch();
    let target = dir.path().join("restored.img");
    let output = restore(&["--sparse", target.to_str().unwrap()], &[]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("the image stream is empty"), "{stderr}");
    assert!(!target.exists(), "an empty restore left its file");
    let output = restore(&["--size", "0", target.to_str().unwrap()], &[]);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    assert_eq!(std::fs::metadata(&target).unwrap().len(), 0);
}
