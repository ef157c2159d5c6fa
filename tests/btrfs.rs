//! btrfs: the committed fixtures, and images made with mkfs.btrfs over random bytes and aged
//! through the kernel (subvolume, snapshot, zstd-compressed files, files deleted after the
//! snapshot, a deleted subvolume), in SINGLE and DUP metadata. Oracles: `btrfs check
//! --readonly` on the output, the files of a read-only mount of the output against those of the
//! source, `btrfs filesystem usage` for what is free, partclone.btrfs's image size, and `btrfs
//! inspect-internal dump-tree` for the log tree of a copy taken while a file was being fsync'ed.

#![allow(clippy::indexing_slicing)] // test code: a panic is a failed test, with its message

use crate::exfat::files_under;
use crate::ext::{with_loop_device_mode, with_mount_options};
use crate::util::*;
use serde_json::Value;
use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

fn path_str(path: &Path) -> &str {
    path.to_str().unwrap()
}

fn have_btrfs_progs() -> bool {
    have_tool("mkfs.btrfs") && have_tool("btrfs")
}

/// `imgstream part IMAGE > OUT`, checking the source is unchanged; returns the bytes kept
/// (`info --json`'s used count).
fn elide(image: &Path, out: &Path) -> u64 {
    let before = sha256(image);
    std::fs::write(out, imgstream_ok(&["part", path_str(image)])).unwrap();
    assert_eq!(sha256(image), before, "the source changed");
    let info: Value = serde_json::from_slice(&imgstream_ok(&["info", "--json", path_str(image)])).unwrap();
    assert_eq!(info["volume"]["filesystem"], "btrfs", "{info}");
    assert_eq!(info["volume"]["status"], "elided", "{info}");
    info["volume"]["used"].as_u64().unwrap()
}

/// `btrfs check --readonly --check-data-csum` must find nothing wrong (it reads every data checksum).
fn assert_check_clean(image: &Path) {
    run_ok(Command::new("btrfs").args(["check", "--readonly", "--check-data-csum"]).arg(image));
}

/// Every byte of `out` equals `source`'s or is zero.
fn assert_equal_or_zero(out: &[u8], source: &[u8]) {
    assert_eq!(out.len(), source.len());
    // Whole equal or zero blocks first (slice comparisons are fast even unoptimised).
    let zeros = [0u8; 4096];
    for (i, (o, s)) in out.chunks(4096).zip(source.chunks(4096)).enumerate() {
        if o != s && o != &zeros[..o.len()] {
            let wrong = o.iter().zip(s).position(|(o, s)| o != s && *o != 0);
            assert!(wrong.is_none(), "output byte {:?} is neither the source's nor zero", wrong.map(|w| i * 4096 + w));
        }
    }
}

#[test]
fn btrfs_fixture_output_passes_btrfs_check() {
    if !have_btrfs_progs() {
        return;
    }
    let dir = scratch();
    for name in fixtures_with_prefix("btrfs-") {
        let image = fixture(&name, dir.path());
        let out = dir.path().join("out.img");
        let kept = elide(&image, &out);
        assert_check_clean(&out);
        assert_equal_or_zero(&std::fs::read(&out).unwrap(), &std::fs::read(&image).unwrap());
        let size = std::fs::metadata(&image).unwrap().len();
        // The first MiB, the system chunks (16 MiB with DUP), a few tree blocks and files.
        assert!(kept < size / 5, "{name}: {kept} of {size} bytes kept");
    }
}

#[test]
fn btrfs_corrupt_superblock_is_refused_with_its_offset() {
    let dir = scratch();
    let image = fixture("btrfs-small", dir.path());
    let bytes = std::fs::read(&image).unwrap();
    let mut flipped = bytes.clone();
    flipped[0x10000 + 0x100] ^= 1;
    std::fs::write(&image, &flipped).unwrap();
    let stderr = run_fails(imgstream().args(["part", path_str(&image)]), 1);
    assert!(stderr.contains("superblock at byte 65536: crc32c checksum does not match"), "{stderr}");
    let output = run_ok(imgstream().args(["part", "--raw", path_str(&image)]));
    assert!(output.stdout == flipped);
}

/// Fills `path` with `len` random bytes, so that free space holds garbage.
fn random_image(path: &Path, len: u64) {
    let mut random = std::fs::File::open("/dev/urandom").unwrap();
    let mut file = std::fs::File::create(path).unwrap();
    std::io::copy(&mut std::io::Read::take(&mut random, len), &mut file).unwrap();
}

/// Writes `len` bytes: random, or a compressible text if `text`.
fn write_file(path: &Path, len: usize, text: bool) {
    let mut bytes = vec![0u8; len];
    if text {
        for (i, chunk) in bytes.chunks_mut(64).enumerate() {
            let line = format!("{i:>10} a line of a compressible file at {}\n", path.display());
            let n = chunk.len().min(line.len());
            chunk[..n].copy_from_slice(&line.as_bytes()[..n]);
        }
    } else {
        let mut random = std::fs::File::open("/dev/urandom").unwrap();
        std::io::Read::read_exact(&mut random, &mut bytes).unwrap();
    }
    std::fs::write(path, bytes).unwrap();
}

/// Ages a mounted filesystem: a subvolume with random and compressible files, a snapshot of it,
/// files deleted after the snapshot, more files, and a large file written then deleted.
fn age(mnt: &Path) {
    let btrfs = |args: &[&str]| run_ok(Command::new("btrfs").args(args));
    let sub = mnt.join("sub");
    btrfs(&["-q", "subvolume", "create", path_str(&sub)]);
    for i in 0..30 {
        write_file(&sub.join(format!("random{i}")), 1000 + i * 37_000, false);
        write_file(&sub.join(format!("text{i}")), 5000 + i * 50_000, true);
    }
    write_file(&sub.join("big"), 24 << 20, false);
    // A subvolume deleted just before the unmount: its cleanup may stop half way.
    let gone = mnt.join("gone");
    btrfs(&["-q", "subvolume", "create", path_str(&gone)]);
    for i in 0..200 {
        write_file(&gone.join(format!("f{i}")), 3000, true);
    }
    run_ok(&mut Command::new("sync"));
    btrfs(&["-q", "subvolume", "delete", path_str(&gone)]);
    btrfs(&["-q", "subvolume", "snapshot", path_str(&sub), path_str(&mnt.join("snap"))]);
    for name in ["big", "random0", "text0", "random7"] {
        std::fs::remove_file(sub.join(name)).unwrap();
    }
    for i in 0..20 {
        write_file(&mnt.join(format!("top{i}")), 3000 + i * 20_000, i % 2 == 0);
    }
    write_file(&mnt.join("deleted"), 40 << 20, false);
    run_ok(&mut Command::new("sync"));
    std::fs::remove_file(mnt.join("deleted")).unwrap();
    for i in (0..20).step_by(3) {
        std::fs::remove_file(mnt.join(format!("top{i}"))).unwrap();
    }
    run_ok(&mut Command::new("sync"));
}

/// SHA-256 of every regular file under `root`, by relative path.
fn file_hashes(root: &Path) -> BTreeMap<PathBuf, String> {
    files_under(root).into_iter().map(|file| (file.clone(), sha256(&root.join(file)))).collect()
}

/// Mounts `image` read-only through a loop device and runs `f` on the mount point.
fn with_mounted<T>(image: &Path, mnt: &Path, options: &str, f: impl FnOnce(&Path) -> T) -> T {
    with_loop_device_mode(image, "", |device| with_mount_options(device, mnt, options, || f(mnt)))
}

/// The number after `label` in `btrfs filesystem usage -b` output.
fn usage_number(usage: &str, label: &str) -> u64 {
    let line = usage.lines().find(|l| l.trim_start().starts_with(label)).unwrap_or_else(|| panic!("{label}?\n{usage}"));
    line[line.find(':').unwrap() + 1..].split_whitespace().next().unwrap().parse().unwrap()
}

#[test]
fn root_btrfs_aged_images_single_and_dup_metadata() {
    if !is_root() || !have_btrfs_progs() || !have_tool("losetup") {
        return;
    }
    for metadata in ["single", "dup"] {
        let dir = scratch();
        let image = dir.path().join("source.img");
        let mnt = dir.path().join("mnt");
        random_image(&image, 300 << 20);
        run_ok(Command::new("mkfs.btrfs").args(["-q", "-f", "-d", "single", "-m", metadata]).arg(&image));
        let usage = with_mounted(&image, &mnt, "compress=zstd", |mnt| {
            age(mnt);
            String::from_utf8(run_ok(Command::new("btrfs").args(["filesystem", "usage", "-b"]).arg(mnt)).stdout)
                .unwrap()
        });
        let source_files = with_mounted(&image, &mnt, "ro", file_hashes);
        assert!(source_files.len() > 100, "{} files", source_files.len());

        let out = dir.path().join("out.img");
        let kept = elide(&image, &out);
        assert_check_clean(&out);
        let out_files = with_mounted(&out, &mnt, "ro", file_hashes);
        assert!(out_files == source_files, "{metadata}: the output's files differ from the source's");

        // What btrfs itself calls free: the device minus the raw bytes used (DUP counted twice).
        let size = usage_number(&usage, "Device size:");
        let free = size - usage_number(&usage, "Used:");
        let unallocated = usage_number(&usage, "Device unallocated:");
        let elided = size - kept;
        assert!(elided >= unallocated, "{metadata}: elided {elided} < unallocated {unallocated}");
        assert!(elided * 10 >= free * 9, "{metadata}: elided {elided} of {free} free bytes");
        let mut report = format!(
            "btrfs {metadata} metadata: kept {kept} of {size} bytes, elided {elided} = {:.1}% of the {free} free per btrfs filesystem usage ({unallocated} unallocated)",
            elided as f64 * 100.0 / free as f64
        );
        if have_tool("partclone.btrfs") {
            let saved = dir.path().join("partclone.img");
            run_ok(Command::new("partclone.btrfs").args(["-q", "-c", "-s"]).arg(&image).arg("-o").arg(&saved));
            let partclone = std::fs::metadata(&saved).unwrap().len();
            assert!(kept <= partclone, "{metadata}: kept {kept} > partclone's image {partclone}");
            let info = run_ok(Command::new("partclone.info").arg("-s").arg(&saved));
            let info = String::from_utf8_lossy(&info.stdout) + String::from_utf8_lossy(&info.stderr);
            let number = |label: &str, word: usize| -> u64 {
                let line = info.lines().find(|l| l.starts_with(label)).unwrap_or_else(|| panic!("{label}?\n{info}"));
                line.split_whitespace().nth(word).unwrap().parse().unwrap()
            };
            let in_use = number("Space in use:", 6) * number("Block size:", 2);
            report += &format!("; partclone.btrfs image {partclone} bytes, its space in use {in_use} bytes");
        }
        let _ = writeln!(std::io::stderr(), "{report}");
    }
}

/// A chunk as `dump-tree -t chunk` shows it.
struct ChunkInfo {
    logical: u64,
    length: u64,
    /// "DATA|RAID0", "METADATA|DUP", ...
    kind: String,
    /// (devid, device byte offset) of each stripe.
    stripes: Vec<(u64, u64)>,
}

/// The chunks of a filesystem, per `dump-tree -t chunk`.
fn chunk_map(image: &Path) -> Vec<ChunkInfo> {
    let dump = run_ok(Command::new("btrfs").args(["inspect-internal", "dump-tree", "-t", "chunk"]).arg(image));
    let mut chunks: Vec<ChunkInfo> = Vec::new();
    for line in String::from_utf8(dump.stdout).unwrap().lines().map(str::trim) {
        let words: Vec<&str> = line.split_whitespace().collect();
        if line.contains("CHUNK_ITEM") {
            let logical = words[words.iter().position(|w| *w == "CHUNK_ITEM").unwrap() + 1].trim_end_matches(')');
            chunks.push(ChunkInfo {
                logical: logical.parse().unwrap(),
                length: 0,
                kind: String::new(),
                stripes: Vec::new(),
            });
        } else if let (Some(chunk), ["length", length, "owner", _, "stripe_len", _, "type", kind]) =
            (chunks.last_mut(), &words[..])
        {
            (chunk.length, chunk.kind) = (length.parse().unwrap(), kind.to_string());
        } else if let (Some(chunk), ["stripe", _, "devid", devid, "offset", offset]) = (chunks.last_mut(), &words[..]) {
            chunk.stripes.push((devid.parse().unwrap(), offset.parse().unwrap()));
        }
    }
    chunks
}

/// Every (logical, length) the log tree holds, blocks and fsynced data extents, per
/// `dump-tree -b LOG_ROOT --follow` and the subvolume log trees its ROOT_ITEMs name.
fn log_tree_ranges(image: &Path, log_root: u64, nodesize: u64) -> Vec<(u64, u64)> {
    let mut ranges = Vec::new();
    let mut roots = vec![log_root];
    while let Some(root) = roots.pop() {
        let dump = run_ok(
            Command::new("btrfs")
                .args(["inspect-internal", "dump-tree", "--follow", "-b", &root.to_string()])
                .arg(image),
        );
        for line in String::from_utf8(dump.stdout).unwrap().lines().map(str::trim) {
            let words: Vec<&str> = line.split_whitespace().collect();
            match &words[..] {
                ["leaf" | "node", bytenr, "items" | "level", ..] => ranges.push((bytenr.parse().unwrap(), nodesize)),
                ["generation", _, "root_dirid", _, "bytenr", bytenr, ..] => roots.push(bytenr.parse().unwrap()),
                ["extent", "data", "disk", "byte", bytenr, "nr", len] if *bytenr != "0" => {
                    ranges.push((bytenr.parse().unwrap(), len.parse().unwrap()))
                }
                _ => {}
            }
        }
    }
    ranges.sort();
    ranges.dedup();
    ranges
}

/// The number after `field` in `dump-super` output.
fn super_field(image: &Path, field: &str) -> u64 {
    let dump = run_ok(Command::new("btrfs").args(["inspect-internal", "dump-super"]).arg(image));
    let text = String::from_utf8(dump.stdout).unwrap();
    let line = text.lines().find(|l| l.split_whitespace().next() == Some(field)).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

const LOG_PIECE: usize = 64 << 10;

/// The byte a writer puts in piece `i` of the fsynced file.
fn piece_byte(i: usize) -> u8 {
    (i % 251) as u8 + 1
}

#[test]
fn root_btrfs_log_tree_of_a_copy_taken_during_fsyncs_is_kept() {
    if !is_root() || !have_btrfs_progs() || !have_tool("losetup") {
        return;
    }
    let dir = scratch();
    let image = dir.path().join("live.img");
    let copy = dir.path().join("copy.img");
    let mnt = dir.path().join("mnt");
    random_image(&image, 160 << 20);
    run_ok(Command::new("mkfs.btrfs").args(["-q", "-f"]).arg(&image));
    // commit=300: no transaction commit during the test, so fsync goes through the log tree.
    let synced = with_mounted(&image, &mnt, "commit=300", |mnt| {
        write_file(&mnt.join("before"), 100_000, false);
        run_ok(&mut Command::new("sync"));
        let (stop, synced) = (AtomicBool::new(false), AtomicUsize::new(0));
        std::thread::scope(|scope| {
            scope.spawn(|| {
                let file = std::fs::File::create(mnt.join("fsynced")).unwrap();
                for i in 0..1000 {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    file.write_all_at(&vec![piece_byte(i); LOG_PIECE], (i * LOG_PIECE) as u64).unwrap();
                    file.sync_all().unwrap();
                    synced.store(i + 1, Ordering::Release);
                }
            });
            while synced.load(Ordering::Acquire) < 20 {
                std::thread::yield_now();
            }
            let before = synced.load(Ordering::Acquire);
            std::fs::copy(&image, &copy).unwrap();
            stop.store(true, Ordering::Relaxed);
            before
        })
    });
    let log_root = super_field(&copy, "log_root");
    assert_ne!(log_root, 0, "the copy has no log tree");

    let out = dir.path().join("out.img");
    elide(&copy, &out);
    let (copy_bytes, out_bytes) = (std::fs::read(&copy).unwrap(), std::fs::read(&out).unwrap());
    let chunks = chunk_map(&copy);
    let ranges = log_tree_ranges(&copy, log_root, super_field(&copy, "nodesize"));
    assert!(ranges.len() > 2, "{ranges:?}");
    for (logical, len) in ranges {
        let chunk = chunks.iter().find(|c| (c.logical..c.logical + c.length).contains(&logical)).unwrap();
        for (_, stripe) in &chunk.stripes {
            let at = (stripe + logical - chunk.logical) as usize;
            let what = format!("log tree range at logical {logical} (byte {at})");
            assert_same_bytes(&what, &out_bytes[at..at + len as usize], &copy_bytes[at..at + len as usize]);
        }
    }
    // Mounting replays the log: the file holds at least every piece fsynced before the copy.
    let fsynced = with_mounted(&out, &mnt, "ro", |mnt| std::fs::read(mnt.join("fsynced")).unwrap());
    assert!(fsynced.len() >= synced * LOG_PIECE, "{} bytes, {synced} pieces were fsynced", fsynced.len());
    for (i, piece) in fsynced.chunks(LOG_PIECE).enumerate() {
        assert!(piece.iter().all(|&b| b == piece_byte(i)), "piece {i} of the replayed file is wrong");
    }
    assert_check_clean(&out);
}

#[test]
fn root_btrfs_raid0_and_raid10_devices_each_keep_their_own_extents() {
    if !is_root() || !have_btrfs_progs() || !have_tool("losetup") {
        return;
    }
    // Metadata on every device (RAID1 on two, RAID1C4 on four): a device without a copy of the
    // trees cannot be analysed alone, and is copied raw.
    for (data, metadata, count) in [("raid0", "raid1", 2), ("raid10", "raid1c4", 4)] {
        let dir = scratch();
        let root = dir.path().join("root");
        std::fs::create_dir(&root).unwrap();
        for i in 0..12 {
            write_file(&root.join(format!("file{i}")), 10_000 + i * 700_000, i % 3 == 0);
        }
        let devices: Vec<_> = (1..=count).map(|i| dir.path().join(format!("dev{i}.img"))).collect();
        for device in &devices {
            random_image(device, 128 << 20);
        }
        // Data striped (mapped piece by piece), metadata mirrored; files written through a mount
        // (--rootdir takes one device only), some deleted.
        run_ok(Command::new("mkfs.btrfs").args(["-q", "-f", "-d", data, "-m", metadata]).args(&devices));
        let mnt = dir.path().join("mnt");
        with_loop_devices(&devices, "", &mut Vec::new(), &mut |loops| {
            with_mount_options(&loops[0], &mnt, &multi_device_options("compress=zstd", loops), || {
                for i in 0..12 {
                    let name = format!("file{i}");
                    std::fs::copy(root.join(&name), mnt.join(&name)).unwrap();
                }
                write_file(&mnt.join("deleted"), 20 << 20, false);
                run_ok(&mut Command::new("sync"));
                std::fs::remove_file(mnt.join("deleted")).unwrap();
            })
        });
        let outputs: Vec<_> = (1..=count).map(|i| dir.path().join(format!("out{i}.img"))).collect();
        for (index, (device, out)) in devices.iter().zip(&outputs).enumerate() {
            let devid = index as u64 + 1;
            let output = run_ok(imgstream().args(["part", path_str(device)]));
            let stderr = String::from_utf8_lossy(&output.stderr);
            let warning = format!("btrfs spans {count} devices: only this device's (devid {devid})");
            assert!(stderr.contains(&warning), "{stderr}");
            let source = std::fs::read(device).unwrap();
            assert_equal_or_zero(&output.stdout, &source);
            // Every data and metadata block group, striped ones included, refined by the extent tree.
            let info: Value = serde_json::from_slice(&imgstream_ok(&["info", "--json", path_str(device)])).unwrap();
            let refined = info["volume"]["details"]["refined_block_groups"].as_str().unwrap().to_owned();
            let (done, rest) = refined.split_once(" of ").unwrap();
            assert!(rest.starts_with(&format!("{done} ")) && done != "0", "device {devid}: {refined}");
            assert!(info["volume"]["used"].as_u64().unwrap() < source.len() as u64 / 2, "{info}");
            std::fs::write(out, &output.stdout).unwrap();
        }
        // The outputs together: btrfs check reads every data checksum, and a mount gives the files.
        let files = with_loop_devices(&outputs, "-r", &mut Vec::new(), &mut |loops| {
            run_ok(Command::new("btrfs").args(["device", "scan"]).args(loops));
            run_ok(Command::new("btrfs").args(["check", "--readonly", "--check-data-csum", &loops[0]]));
            with_mount_options(&loops[0], &mnt, &multi_device_options("ro", loops), || file_hashes(&mnt))
        });
        assert!(files == file_hashes(&root), "{data}: the outputs' files differ from the ones mkfs was given");
    }
}

/// Attaches every image to a loop device (`mode` as for `with_loop_device_mode`), detached again
/// in every case, and runs `f` on their names.
fn with_loop_devices<T>(
    images: &[PathBuf],
    mode: &str,
    loops: &mut Vec<String>,
    f: &mut dyn FnMut(&[String]) -> T,
) -> T {
    match images {
        [] => f(loops),
        [first, rest @ ..] => with_loop_device_mode(first, mode, |device| {
            loops.push(device.to_owned());
            with_loop_devices(rest, mode, loops, f)
        }),
    }
}

/// Mount options naming every device of a multi-device filesystem.
fn multi_device_options(options: &str, loops: &[String]) -> String {
    loops.iter().fold(options.to_owned(), |all, device| format!("{all},device={device}"))
}
