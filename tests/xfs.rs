//! XFS end to end: `imgstream part` on images made at test time by mkfs.xfs over random bytes
//! (so that wrongly zeroed or copied free space shows), aged so that the free-space B+trees hold
//! many extents, judged by tools we did not write:
//! - `xfs_db freesp -d` lists every free extent, the free list (AGFL) blocks included: the
//!   expected output is the source with exactly those extents zeroed (and the AGFL blocks
//!   `xfs_db agf`/`agfl` name must be among them, so that the test covers them);
//! - `xfs_repair -n` must find the output clean, and (root) every file read through a read-only
//!   loop mount of the output equals the source's;
//! - `partclone.xfs -D` (its map of used bytes) as a second opinion: it keeps exactly what we
//!   keep;
//! - `xfs_logprint -t` says CLEAN or DIRTY as `imgstream info` does, and a dirty log (a copy
//!   taken while mounted and written) is unsafe: copied raw by default, refused with
//!   `--on-unsafe refuse`.
//!
//! Kernels built without CONFIG_XFS_SUPPORT_V4 (this machine's) do not mount v4 (`-m crc=0`),
//! so every image is filled by mkfs.xfs from a protofile and aged by zapping every other file's
//! inode with xfs_db and letting xfs_repair free its blocks; a v5 one is also aged through a
//! real loop mount (root).

#![allow(clippy::indexing_slicing)] // test code: a panic is a failed test, with its message

use crate::disk::LoopDevice;
use crate::exfat::files_under;
use crate::fat::{assert_thread_and_block_size_invariant, expected_from_partclone};
use crate::util::*;
use std::io::Read;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Test images: 64 MiB, 4 AGs of 16 MiB (the smallest AG mkfs.xfs makes).
const IMAGE_BYTES: u64 = 64 << 20;

fn have_xfs_tools() -> bool {
    ["mkfs.xfs", "xfs_db", "xfs_repair", "xfs_logprint", "partclone.xfs"].into_iter().all(have_tool)
}

/// mkfs.xfs of xfsprogs >= 5.19 refuses filesystems under 300 MB unless it believes fstests runs it.
pub(crate) fn mkfs_xfs() -> Command {
    let mut command = Command::new("mkfs.xfs");
    command.envs([("TEST_DIR", "/tmp"), ("TEST_DEV", "/dev/null"), ("QA_CHECK_FS", "1")]);
    command
}

/// A file of `size` random bytes: free space full of garbage.
fn random_image(path: &Path) {
    let mut bytes = Vec::new();
    std::fs::File::open("/dev/urandom").unwrap().take(IMAGE_BYTES).read_to_end(&mut bytes).unwrap();
    std::fs::write(path, bytes).unwrap();
}

/// `xfs_db -r` with `commands`; its stdout and stderr (it prints some answers on stderr).
fn xfs_db(image: &Path, commands: &[String]) -> String {
    let mut command = Command::new("xfs_db");
    command.arg("-r");
    for c in commands {
        command.args(["-c", c]);
    }
    let output = run_ok(command.arg(image));
    String::from_utf8_lossy(&output.stdout).into_owned() + &String::from_utf8_lossy(&output.stderr)
}

/// The value of xfs_db's `name = value` line.
fn field(text: &str, name: &str) -> u64 {
    let line = text
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{name} = ")))
        .unwrap_or_else(|| panic!("no {name}:\n{text}"));
    line.trim().parse().unwrap_or_else(|_| panic!("{name} = {line}"))
}

/// (block size, blocks per AG, AG count) per xfs_db.
fn geometry(image: &Path) -> (u64, u64, u64) {
    let sb = xfs_db(image, &["sb 0".into(), "p blocksize agblocks agcount".into()]);
    (field(&sb, "blocksize"), field(&sb, "agblocks"), field(&sb, "agcount"))
}

/// `freesp -d`'s extents (each line "agno agbno len"), as byte ranges.
pub(crate) fn freesp(image: &Path) -> Vec<Range<usize>> {
    let (block, ag_blocks, _) = geometry(image);
    let text = xfs_db(image, &["freesp -d".into()]);
    let mut free = Vec::new();
    for line in text.lines() {
        let numbers: Vec<u64> = line.split_whitespace().map_while(|w| w.parse().ok()).collect();
        if let [agno, agbno, len] = numbers[..] {
            let start = (agno * ag_blocks + agbno) * block;
            free.push(start as usize..(start + len * block) as usize);
        }
    }
    assert!(!free.is_empty(), "freesp -d listed nothing:\n{text}");
    free
}

/// The byte ranges of the blocks on every AG's free list: AGFL slots `flfirst` to `fllast`
/// (`flcount` of them), wrapping at the end of the AGFL's array.
fn agfl_blocks(image: &Path) -> Vec<Range<usize>> {
    let (block, ag_blocks, ag_count) = geometry(image);
    let mut blocks = Vec::new();
    for agno in 0..ag_count {
        let text =
            xfs_db(image, &[format!("agf {agno}"), "p flfirst flcount".into(), format!("agfl {agno}"), "p bno".into()]);
        let slots: Vec<&str> = text
            .lines()
            .find_map(|l| l.strip_prefix("bno["))
            .and_then(|l| l.split_once(" = "))
            .unwrap_or_else(|| panic!("no AGFL array:\n{text}"))
            .1
            .split_whitespace()
            .map(|slot| slot.split_once(':').unwrap().1)
            .collect();
        let (first, count) = (field(&text, "flfirst") as usize, field(&text, "flcount") as usize);
        for index in 0..count {
            let agbno: u64 = slots[(first + index) % slots.len()].parse().unwrap();
            let start = ((agno * ag_blocks + agbno) * block) as usize;
            blocks.push(start..start + block as usize);
        }
    }
    blocks
}

/// The cycle stamped on the internal log's first 512-byte block (its second word in a record
/// header, magic 0xFEEDBABE): above 1 once the log has wrapped.
fn log_cycle(image: &Path) -> u32 {
    let sb = xfs_db(image, &["sb 0".into(), "p logstart agblklog agblocks blocksize".into()]);
    let (logstart, agblklog) = (field(&sb, "logstart"), field(&sb, "agblklog"));
    let block = (logstart >> agblklog) * field(&sb, "agblocks") + (logstart & ((1 << agblklog) - 1));
    let offset = (block * field(&sb, "blocksize")) as usize;
    let bytes = std::fs::read(image).unwrap();
    let word = |at: usize| u32::from_be_bytes(bytes[at..at + 4].try_into().unwrap());
    if word(offset) == 0xFEED_BABE { word(offset + 4) } else { word(offset) }
}

fn logprint_state(image: &Path) -> String {
    let output = Command::new("xfs_logprint").arg("-t").arg(image).output().unwrap();
    let text = String::from_utf8_lossy(&output.stdout).into_owned() + &String::from_utf8_lossy(&output.stderr);
    let state =
        text.split_once("state: <").and_then(|(_, rest)| rest.split_once('>')).unwrap_or_else(|| panic!("{text}"));
    state.0.to_owned()
}

fn info_field(image: &Path, name: &str) -> String {
    let info = String::from_utf8(imgstream_ok(&["info", image.to_str().unwrap()])).unwrap();
    let line =
        info.lines().find(|l| l.starts_with(&format!("{name}  "))).unwrap_or_else(|| panic!("no {name}:\n{info}"));
    line[name.len()..].trim().to_owned()
}

/// Checks one clean image against every oracle; returns the output.
fn check_against_oracles(name: &str, image: &Path, dir: &Path) -> Vec<u8> {
    let hash = sha256(image);
    let source = std::fs::read(image).unwrap();
    let path = image.to_str().unwrap();
    let out = imgstream_ok(&["part", path, "--threads", "1"]);

    let mut expected = source.clone();
    for range in freesp(image) {
        expected[range].fill(0);
    }
    assert_ne!(expected, source, "{name}: nothing free, the test would prove nothing");
    let agfl = agfl_blocks(image);
    assert!(!agfl.is_empty(), "{name}: no free list blocks, the test would not cover them");
    for range in agfl {
        assert!(expected[range.clone()].iter().all(|&b| b == 0), "{name}: freesp -d kept AGFL block {range:?}");
    }
    assert_same_bytes(&format!("{name} vs xfs_db freesp -d"), &out, &expected);
    assert_thread_and_block_size_invariant(name, path, &out);

    let output_image = dir.join("out.img");
    std::fs::write(&output_image, &out).unwrap();
    run_ok(Command::new("xfs_repair").args(["-n", "-f"]).arg(&output_image));

    let partclone = expected_from_partclone("partclone.xfs", image, &source, dir);
    assert_same_bytes(&format!("{name} vs partclone.xfs"), &out, &partclone);

    assert_eq!(logprint_state(image), "CLEAN", "{name}");
    assert_eq!(info_field(image, "log"), "clean", "{name}");
    assert_eq!(sha256(image), hash, "{name}: the source changed");
    out
}

/// Writes a protofile for mkfs.xfs -p: directory /a with `count` files of 1 to ~4 KiB.
pub(crate) fn protofile(dir: &Path, count: usize) -> PathBuf {
    let files = dir.join("proto-files");
    std::fs::create_dir_all(&files).unwrap();
    let mut proto = String::from("proto\n0 0\nd--755 0 0\na d--755 0 0\n");
    for i in 0..count {
        let file = files.join(format!("f{i}"));
        std::fs::write(&file, &format!("USED f{i} ").repeat(600).as_bytes()[..1 + (i * 977) % 4000]).unwrap();
        proto += &format!("f{i} ---644 0 0 {}\n", file.display());
    }
    proto += "$\n$\n";
    let path = dir.join("proto.txt");
    std::fs::write(&path, proto).unwrap();
    path
}

/// Ages an unmounted image: every other file of /a loses its inode (xfs_db), then xfs_repair
/// frees its blocks and rebuilds the free-space B+trees with the holes.
pub(crate) fn age_offline(image: &Path) {
    let listing = xfs_db(image, &["ls /a".into()]);
    let mut zap = Vec::new();
    for line in listing.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        if let [_, inode, "regular", _, _, name, ..] = words[..] {
            if name.trim_start_matches('f').parse::<usize>().unwrap() % 2 == 0 {
                zap.extend([format!("inode {inode}"), "write -d core.mode 0".into()]);
            }
        }
    }
    assert!(zap.len() > 100, "{listing}");
    let mut command = Command::new("xfs_db");
    command.arg("-x");
    for c in &zap {
        command.args(["-c", c]);
    }
    run_ok(command.arg(image));
    run_ok(Command::new("xfs_repair").arg("-f").arg(image));
}

fn bno_levels(image: &Path) -> Vec<u64> {
    let (_, _, ag_count) = geometry(image);
    (0..ag_count).map(|agno| field(&xfs_db(image, &[format!("agf {agno}"), "p bnolevel".into()]), "bnolevel")).collect()
}

#[test]
fn xfs_v4_and_v5_output_is_the_source_with_exactly_the_free_extents_zeroed() {
    if !have_xfs_tools() {
        return;
    }
    for (name, options) in [
        ("v5, 4 KiB blocks", &["-b", "size=4096"][..]),
        ("v5, 1 KiB blocks", &["-b", "size=1024"][..]),
        ("v4, 4 KiB blocks", &["-m", "crc=0", "-b", "size=4096"][..]),
        ("v4, 1 KiB blocks", &["-m", "crc=0", "-b", "size=1024"][..]),
    ] {
        let dir = scratch();
        let image = dir.path().join("xfs.img");
        random_image(&image);
        let proto = protofile(dir.path(), 600);
        run_ok(mkfs_xfs().args(["-q", "-d", "agcount=4"]).args(options).arg("-p").arg(&proto).arg(&image));
        age_offline(&image);
        if name.ends_with("1 KiB blocks") {
            // (1024 - header) / 8 records fit a leaf: 300 holes need an interior level.
            assert!(bno_levels(&image).iter().any(|&l| l >= 2), "{name}: {:?}", bno_levels(&image));
        }
        check_against_oracles(name, &image, dir.path());
    }
}

#[test]
fn xfs_dirty_log_is_copied_raw_refused_or_forced() {
    if !have_xfs_tools() {
        return;
    }
    let dir = scratch();
    let image = fixture("xfsbad-dirty", dir.path());
    let source = std::fs::read(&image).unwrap();
    let path = image.to_str().unwrap();
    assert_eq!(logprint_state(&image), "DIRTY");
    assert_eq!(info_field(&image, "log"), "dirty");
    let stderr = run_fails(imgstream().args(["part", "--on-unsafe", "refuse", path]), 1);
    assert!(stderr.starts_with("imgstream: error: ") && stderr.contains("XFS log is dirty ("), "{stderr}");
    assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
    // The default, --on-unsafe raw: the source unchanged, with a warning that says why.
    let output = run_ok(imgstream().args(["part", path]));
    assert!(output.stdout == source, "--on-unsafe raw is not an exact copy");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("imgstream: warning: ") && stderr.contains("XFS log is dirty"), "{stderr}");
    assert!(imgstream_ok(&["part", "--raw", path]) == source, "--raw is not a copy");
    let forced = run_ok(imgstream().args(["part", "--force", path]));
    assert!(String::from_utf8_lossy(&forced.stderr).contains("imgstream: warning:"));
    assert!(forced.stdout != source, "--force elided nothing");
}

/// A mount point, unmounted when dropped.
pub(crate) struct Mounted(PathBuf);

impl Mounted {
    pub(crate) fn new(device: &Path, mount_point: PathBuf, options: &str) -> Self {
        std::fs::create_dir_all(&mount_point).unwrap();
        run_ok(Command::new("mount").args(["-t", "xfs", "-o", options]).arg(device).arg(&mount_point));
        Self(mount_point)
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

/// Writes `count` small files into each of `dirs` (XFS puts each new directory in another AG)
/// and deletes every other one.
fn age_mounted(root: &Path, dirs: usize, count: usize) {
    for d in 0..dirs {
        let dir = root.join(format!("d{d}"));
        std::fs::create_dir(&dir).unwrap();
        for i in 0..count {
            let size = 1 + (i * 977 + d * 131) % 6000;
            std::fs::write(dir.join(format!("f{i}")), &format!("USED d{d}/f{i} ").repeat(600).as_bytes()[..size])
                .unwrap();
        }
    }
    run_ok(&mut Command::new("sync"));
    for d in 0..dirs {
        for i in (0..count).step_by(2) {
            std::fs::remove_file(root.join(format!("d{d}/f{i}"))).unwrap();
        }
    }
}

#[test]
fn root_xfs_aged_through_a_loop_mount_reads_back_equal_and_a_copy_taken_while_mounted_is_refused() {
    if !(is_root() && have_xfs_tools() && have_tool("losetup") && have_tool("fsfreeze")) {
        return;
    }
    let dir = scratch();
    let image = dir.path().join("xfs.img");
    random_image(&image);
    // 1 KiB blocks: the same metadata churn fills more log blocks, so the log wraps.
    run_ok(mkfs_xfs().args(["-q", "-d", "agcount=4", "-b", "size=1024"]).arg(&image));
    {
        let device = LoopDevice::attach(&image, &[]);
        let mounted = Mounted::new(device.path(), dir.path().join("mnt"), "rw");
        age_mounted(&mounted.0, 4, 1500);
        // A copy taken now, while mounted with synced transactions in its log, is crash-consistent.
        run_ok(&mut Command::new("sync"));
        std::fs::copy(&image, dir.path().join("live.img")).unwrap();
        // A copy taken under fsfreeze, as an LVM or storage snapshot is: the log is covered,
        // with no unmount record.
        run_ok(Command::new("fsfreeze").arg("-f").arg(&mounted.0));
        std::fs::copy(&image, dir.path().join("frozen.img")).unwrap();
        run_ok(Command::new("fsfreeze").arg("-u").arg(&mounted.0));
    }
    // 1 KiB blocks hold 121 free extents a leaf; ~750 holes per AG need an interior level.
    assert!(bno_levels(&image).iter().any(|&l| l >= 2), "{:?}", bno_levels(&image));
    assert!(log_cycle(&image) >= 2, "the log never wrapped: the test would not cover a ring's head search");
    let out = check_against_oracles("v5, 1 KiB blocks, aged through a mount", &image, dir.path());

    let output_image = dir.path().join("out.img");
    std::fs::write(&output_image, &out).unwrap();
    let (source_device, output_device) =
        (LoopDevice::attach(&image, &["-r"]), LoopDevice::attach(&output_image, &["-r"]));
    let source = Mounted::new(source_device.path(), dir.path().join("source"), "ro,norecovery,nouuid");
    let output = Mounted::new(output_device.path(), dir.path().join("output"), "ro,norecovery,nouuid");
    let files = files_under(&source.0);
    assert_eq!(files.len(), 4 * 750);
    assert_eq!(files_under(&output.0), files, "the file lists differ");
    for file in &files {
        assert!(
            std::fs::read(source.0.join(file)).unwrap() == std::fs::read(output.0.join(file)).unwrap(),
            "{} differs",
            file.display()
        );
    }

    let live = dir.path().join("live.img");
    assert_eq!(logprint_state(&live), "DIRTY");
    let stderr = run_fails(imgstream().args(["part", "--on-unsafe", "refuse"]).arg(&live), 1);
    assert!(stderr.contains("XFS log is dirty"), "{stderr}");

    // Frozen is not clean for XFS: copied raw, and the warning says so, since "image a clean
    // snapshot" is what the user thought they did.
    let frozen = dir.path().join("frozen.img");
    let output = run_ok(imgstream().arg("part").arg(&frozen));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("XFS log is dirty") && stderr.contains("fsfreeze"), "{stderr}");
    assert!(output.stdout == std::fs::read(&frozen).unwrap(), "a frozen XFS is not copied raw");
}
