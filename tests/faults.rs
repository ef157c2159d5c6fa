//! Real faults, no test hooks in the binary: a source whose sectors cannot be read (nbdkit's
//! ddrescue filter behind nbdfuse), `--rescue` judged by `ddrescuelog`, a source that shrinks
//! or whose allocation map changes while it is read, a restore target that fills up or is too
//! small, SIGINT and SIGTERM in the middle of a run, and the page cache left behind.

#![allow(clippy::indexing_slicing)] // test code: a panic is a failed test, with its message

use crate::util::*;
use std::io::{Read, Write};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const PAGE: usize = 4096;

/// A read-only file served by nbdkit through nbdfuse whose reads fail with EIO on `bad` byte
/// ranges (nbdkit's ddrescue filter, given a map that lists them as bad sectors), as a dying
/// disk's would. Unmounted when dropped.
pub(crate) struct FaultySource {
    mount: PathBuf,
    child: Child,
}

impl FaultySource {
    /// Serves `image` with `bad` (sorted, 4 KiB-aligned: the FUSE page cache reads whole pages) failing;
    /// `None` (skipped) without nbdkit or nbdfuse.
    pub(crate) fn new(image: &Path, bad: &[Range<u64>]) -> Option<Self> {
        if !have_tool("nbdkit") || !have_tool("nbdfuse") || !have_tool("fusermount3") {
            return None;
        }
        let size = std::fs::metadata(image).unwrap().len();
        let mut map = String::from("# Mapfile\n0x00000000 +\n");
        let mut at = 0;
        for range in bad {
            assert!(range.start % PAGE as u64 == 0 && range.end % PAGE as u64 == 0, "{range:?}");
            if range.start > at {
                map += &format!("0x{at:x} 0x{:x} +\n", range.start - at);
            }
            map += &format!("0x{:x} 0x{:x} -\n", range.start, range.end - range.start);
            at = range.end;
        }
        if size > at {
            map += &format!("0x{at:x} 0x{:x} +\n", size - at);
        }
        let dir = image.with_extension("faulty");
        let (mount, map_path, pid_file) = (dir.join("mnt"), dir.join("bad.map"), dir.join("pid"));
        std::fs::create_dir_all(&mount).unwrap();
        std::fs::write(&map_path, map).unwrap();
        let _ = std::fs::remove_file(&pid_file); // left by an earlier source over the same image
        let child = Command::new("nbdfuse")
            .args(["-r", "-P"])
            .arg(&pid_file)
            .arg(mount.join("source"))
            .args(["--command", "nbdkit", "-s", "-r", "--filter=ddrescue", "file"])
            .arg(format!("file={}", image.display()))
            .arg(format!("ddrescue-mapfile={}", map_path.display()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null()) // one line per failed read
            .spawn()
            .expect("start nbdfuse");
        let mut source = Self { mount, child };
        let started = Instant::now();
        while !pid_file.exists() {
            assert!(source.child.try_wait().unwrap().is_none(), "nbdfuse exited before serving");
            assert!(started.elapsed() < Duration::from_secs(30), "nbdfuse did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        Some(source)
    }

    pub(crate) fn path(&self) -> PathBuf {
        self.mount.join("source")
    }
}

impl Drop for FaultySource {
    fn drop(&mut self) {
        let _ = Command::new("fusermount3").arg("-u").arg(&self.mount).status();
        let _ = self.child.wait();
    }
}

/// The 4 KiB pages of `image` that `part` copies (non-zero in its output) and that it elides
/// (zero in the output, not in the source), as byte ranges, in order.
pub(crate) fn used_and_elided_pages(source: &[u8], image: &[u8]) -> (Vec<Range<u64>>, Vec<Range<u64>>) {
    let (mut used, mut elided) = (Vec::new(), Vec::new());
    for (index, (ours, theirs)) in image.chunks(PAGE).zip(source.chunks(PAGE)).enumerate() {
        let range = (index * PAGE) as u64..((index + 1) * PAGE) as u64;
        if ours == theirs && ours.iter().any(|&b| b != 0) {
            used.push(range);
        } else if ours.iter().all(|&b| b == 0) && theirs.iter().any(|&b| b != 0) {
            elided.push(range);
        }
    }
    (used, elided)
}

/// stderr must be exactly one line, an error, containing every one of `needles`.
fn assert_one_error_line(stderr: &str, needles: &[&str]) {
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "expected one line on stderr, got:\n{stderr}");
    assert!(lines[0].starts_with("imgstream: error: "), "{stderr}");
    for needle in needles {
        assert!(lines[0].contains(needle), "{needle:?} missing from: {stderr}");
    }
}

/// Zeros `ranges` of `bytes`.
fn zeroed(bytes: &[u8], ranges: &[Range<u64>]) -> Vec<u8> {
    let mut copy = bytes.to_vec();
    for range in ranges {
        copy[range.start as usize..range.end as usize].fill(0);
    }
    copy
}

#[test]
fn an_unreadable_used_sector_fails_part_and_disk_with_one_line_and_a_free_one_is_never_read() {
    let dir = scratch();
    let image = fixture("ext-ext4", dir.path());
    let source = std::fs::read(&image).unwrap();
    let clean = imgstream_ok(&["part", image.to_str().unwrap()]);
    let (used, elided) = used_and_elided_pages(&source, &clean);
    let bad_used = used[used.len() / 2].clone();
    let free = elided.iter().find(|r| r.start >= bad_used.end).expect("a free page after the bad one").clone();
    let Some(faulty) = FaultySource::new(&image, &[bad_used, free]) else { return };
    let stderr = run_fails(imgstream().arg("part").arg(faulty.path()).stdout(Stdio::null()), 1);
    assert_one_error_line(&stderr, &["Input/output error", "at byte"]);
    drop(faulty);

    // The first page, read before any filesystem is recognised: the line names what was read.
    let Some(faulty) = FaultySource::new(&image, std::slice::from_ref(&(0..PAGE as u64))) else { return };
    let stderr = run_fails(imgstream().arg("part").arg(faulty.path()).stdout(Stdio::null()), 1);
    assert_one_error_line(&stderr, &["Input/output error", "at byte 0", "md superblock or an LVM2 label"]);
    drop(faulty);

    // Bad sectors only where the filesystem is free: never read, so the image is complete.
    let Some(faulty) = FaultySource::new(&image, &elided[..3]) else { return };
    let output = run_ok(imgstream().arg("part").arg(faulty.path()));
    assert_same_bytes("part of a source whose free sectors are unreadable", &output.stdout, &clean);
    drop(faulty);

    let disk = fixture("disk-gpt", dir.path());
    let disk_bytes = std::fs::read(&disk).unwrap();
    let clean = imgstream_ok(&["disk", disk.to_str().unwrap()]);
    let (used, _) = used_and_elided_pages(&disk_bytes, &clean);
    let Some(faulty) = FaultySource::new(&disk, &[used[used.len() / 2].clone()]) else { return };
    let stderr = run_fails(imgstream().arg("disk").arg(faulty.path()).stdout(Stdio::null()), 1);
    assert_one_error_line(&stderr, &["Input/output error", "at byte"]);
}

/// Acceptance 3: --rescue gives a full-length image, a map ddrescuelog reads with exactly the
/// bad sectors, and the summary.
#[test]
fn rescue_images_a_dying_source_with_zeros_for_its_bad_sectors_and_a_ddrescue_map() {
    if !have_tool("ddrescuelog") || !have_tool("dumpe2fs") {
        return;
    }
    let dir = scratch();
    let image = fixture("ext-ext4", dir.path());
    let source = std::fs::read(&image).unwrap();
    let clean = imgstream_ok(&["part", image.to_str().unwrap()]);
    let (used, elided) = used_and_elided_pages(&source, &clean);
    // Two bad areas that are read (one of two pages), one that is free and never read.
    let a = used[used.len() / 3].clone();
    let pair = (used.len() / 2..used.len() - 1).find(|&i| used[i].end == used[i + 1].start).expect("two used pages");
    let b = used[pair].start..used[pair + 1].end;
    let free = elided.iter().find(|r| r.start >= b.end).expect("a free page after the bad ones").clone();
    let Some(faulty) = FaultySource::new(&image, &[a.clone(), b.clone(), free]) else { return };
    let map = dir.path().join("rescue.map");
    let output = run_ok(
        imgstream().args(["part", "--rescue", "--rescue-map"]).arg(&map).arg(faulty.path()).stderr(Stdio::piped()),
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.stdout.len(), source.len(), "not a full-length image");
    assert_same_bytes("rescued image", &output.stdout, &zeroed(&clean, &[a.clone(), b.clone()]));
    assert!(stderr.contains("rescue: 12288 bytes (12.0 KiB) unreadable in 2 bad area(s)"), "{stderr}");

    // ddrescuelog: a valid map, finished, listing exactly the bad 512-byte sectors.
    let listed = run_ok(Command::new("ddrescuelog").args(["-b", "512", "-l-"]).arg(&map)).stdout;
    let sectors: Vec<u64> = String::from_utf8(listed).unwrap().lines().map(|l| l.trim().parse().unwrap()).collect();
    let expected: Vec<u64> = [a, b].iter().flat_map(|r| r.start / 512..r.end / 512).collect();
    assert_eq!(sectors, expected);
    let summary = String::from_utf8(run_ok(Command::new("ddrescuelog").arg("-t").arg(&map)).stdout).unwrap();
    let bad_sectors = summary.split("bad-sector:").nth(1).unwrap_or("").trim_start();
    assert!(summary.contains("current status: finished") && bad_sectors.starts_with("12288 B"), "{summary}");
    drop(faulty);

    // Unreadable metadata (the superblock's page): the volume is copied raw, with a warning.
    let superblock_page = 0..PAGE as u64;
    let Some(faulty) = FaultySource::new(&image, std::slice::from_ref(&superblock_page)) else { return };
    let output = run_ok(
        imgstream().args(["part", "--rescue", "--rescue-map"]).arg(&map).arg(faulty.path()).stderr(Stdio::piped()),
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("warning: its metadata cannot be read") && stderr.contains("copying it raw"), "{stderr}");
    assert_same_bytes("rescued raw image", &output.stdout, &zeroed(&source, std::slice::from_ref(&superblock_page)));
    drop(faulty);

    // Unreadable metadata of a filesystem that was recognised (a block bitmap, 4 KiB blocks): it
    // is copied raw as ext, not as an unknown volume, and `disk` (which would do the same
    // without a partition table) is not suggested.
    let dump = run_ok(Command::new("dumpe2fs").arg(&image)).stdout;
    let bitmap_block: u64 = String::from_utf8_lossy(&dump)
        .lines()
        .find_map(|line| line.trim().strip_prefix("Block bitmap at ")?.split_whitespace().next()?.parse().ok())
        .expect("dumpe2fs names a block bitmap");
    let bitmap_page = bitmap_block * PAGE as u64..(bitmap_block + 1) * PAGE as u64;
    let Some(faulty) = FaultySource::new(&image, std::slice::from_ref(&bitmap_page)) else { return };
    let output = run_ok(
        imgstream().args(["part", "--rescue", "--rescue-map"]).arg(&map).arg(faulty.path()).stderr(Stdio::piped()),
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("imgstream: ext: ") && stderr.contains("copied raw: its metadata cannot be read"),
        "{stderr}"
    );
    assert!(!stderr.contains("imgstream disk"), "{stderr}");
    assert_same_bytes("rescued ext4 copied raw", &output.stdout, &zeroed(&source, &[bitmap_page]));
    drop(faulty);

    // A whole disk: the bad page is zero, everything else as `disk` streams it.
    let disk = fixture("disk-gpt", dir.path());
    let disk_bytes = std::fs::read(&disk).unwrap();
    let clean = imgstream_ok(&["disk", disk.to_str().unwrap()]);
    let (used, _) = used_and_elided_pages(&disk_bytes, &clean);
    let bad = used[used.len() / 2].clone();
    let Some(faulty) = FaultySource::new(&disk, std::slice::from_ref(&bad)) else { return };
    let output = run_ok(imgstream().args(["disk", "--rescue", "--rescue-map"]).arg(&map).arg(faulty.path()));
    assert_same_bytes("rescued disk", &output.stdout, &zeroed(&clean, &[bad]));
    drop(faulty);

    // The first page of partition 3 (its superblock, where md and LVM2 labels are looked for
    // too): that partition alone is copied raw, every other one is elided as usual; without
    // --rescue, one line names the partition and what was read.
    let third = crate::disk::sfdisk(&disk).partitions.iter().find(|p| p.0 == 3).expect("a partition 3").1.clone();
    let bad = third.start..third.start + PAGE as u64;
    let Some(faulty) = FaultySource::new(&disk, std::slice::from_ref(&bad)) else { return };
    let output = run_ok(
        imgstream().args(["disk", "--rescue", "--rescue-map"]).arg(&map).arg(faulty.path()).stderr(Stdio::piped()),
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("partition 3") && stderr.contains("its metadata cannot be read"), "{stderr}");
    let mut expected = clean.clone();
    let span = third.start as usize..third.end as usize;
    expected[span.clone()].copy_from_slice(&disk_bytes[span]);
    assert_same_bytes("rescued disk, partition 3 raw", &output.stdout, &zeroed(&expected, &[bad]));
    let stderr = run_fails(imgstream().arg("disk").arg(faulty.path()).stdout(Stdio::null()), 1);
    assert_one_error_line(&stderr, &["partition 3", "md superblock or an LVM2 label", "Input/output error"]);
    drop(faulty);

    // The map is not optional: without it the zeros would be unaccounted for.
    run_fails(imgstream().args(["part", "--rescue"]).arg(&image), 2);
}

/// Runs `command` with `stdin`; returns its exit status and stderr.
fn run_with_stdin(command: &mut Command, stdin: impl Into<Stdio>) -> (Option<i32>, String) {
    let output = command.stdin(stdin).stdout(Stdio::null()).output().expect("run imgstream");
    (output.status.code(), String::from_utf8_lossy(&output.stderr).into_owned())
}

/// Runs imgstream with `args`, reads `first` bytes of its stdout, calls `meanwhile`, then drains
/// stdout; returns the exit status and stderr. The run cannot finish before the drain: the image
/// is larger than the pipe and the engine's buffers.
fn with_pause(args: &[&str], first: usize, meanwhile: impl FnOnce(u32)) -> (Option<i32>, String) {
    let mut child =
        imgstream().args(args).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("start imgstream");
    let mut stdout = child.stdout.take().unwrap();
    let mut head = vec![0u8; first];
    stdout.read_exact(&mut head).unwrap();
    meanwhile(child.id());
    std::io::copy(&mut stdout, &mut std::io::sink()).unwrap();
    let output = child.wait_with_output().unwrap();
    (output.status.code(), String::from_utf8_lossy(&output.stderr).into_owned())
}

#[test]
fn a_source_that_shrinks_while_it_is_read_fails_with_one_line() {
    let dir = scratch();
    let image = fixture("ext-ext4", dir.path());
    let path = image.to_str().unwrap();
    let (code, stderr) = with_pause(&["part", "--raw", "-j", "1", "--block-size", "64K", path], 65536, |_| {
        std::fs::OpenOptions::new().write(true).open(&image).unwrap().set_len(4 << 20).unwrap();
    });
    assert_eq!(code, Some(1), "{stderr}");
    assert_one_error_line(&stderr, &["shrank from 16777216 to 4194304 bytes while it was read"]);
}

/// The same with a block device: a loop device whose backing file is cut, then `losetup -c`.
#[test]
fn root_a_loop_device_that_shrinks_while_it_is_read_fails_with_one_line() {
    if !is_root() || !have_tool("losetup") {
        return;
    }
    let dir = scratch();
    let image = fixture("ext-ext4", dir.path());
    let device = crate::disk::LoopDevice::attach(&image, &[]);
    let path = device.path().to_str().unwrap();
    let (code, stderr) = with_pause(&["part", "--raw", "-j", "1", "--block-size", "64K", path], 65536, |_| {
        std::fs::OpenOptions::new().write(true).open(&image).unwrap().set_len(4 << 20).unwrap();
        run_ok(Command::new("losetup").arg("-c").arg(device.path()));
    });
    assert_eq!(code, Some(1), "{stderr}");
    assert_one_error_line(&stderr, &["shrank from 16777216 to 4194304 bytes while it was read"]);
}

/// The byte ranges `info --json` says hold the allocation map of `image`.
fn map_ranges(image: &Path) -> Vec<[u64; 2]> {
    let json = run_ok(imgstream().args(["info", "--json"]).arg(image)).stdout;
    let report: serde_json::Value = serde_json::from_slice(&json).unwrap();
    serde_json::from_value(report["volume"]["map_ranges"].clone()).unwrap()
}

#[test]
fn an_allocation_map_that_changes_while_the_source_is_read_is_caught() {
    let dir = scratch();
    for name in ["ext-ext4", "ntfs-c4096", "fat-32", "exfat-4k", "xfs-v5", "btrfs-small"] {
        let image = fixture(name, dir.path());
        let ranges = map_ranges(&image);
        assert!(!ranges.is_empty(), "{name}: no map ranges");
        // The last byte of the map: a bitmap's or FAT's, not the boot sector's.
        let at = ranges.last().unwrap()[1] - 1;
        let path = image.to_str().unwrap();
        let (code, stderr) = with_pause(&["part", "-j", "1", "--block-size", "64K", path], 65536, |_| {
            let mut file = std::fs::OpenOptions::new().read(true).write(true).open(&image).unwrap();
            let mut byte = [0u8];
            std::os::unix::fs::FileExt::read_exact_at(&file, &mut byte, at).unwrap();
            std::os::unix::fs::FileExt::write_all_at(&file, &[byte[0] ^ 0x01], at).unwrap();
            file.flush().unwrap();
        });
        assert_eq!(code, Some(1), "{name}: {stderr}");
        assert_one_error_line(&stderr, &["changed while it was read: the image may be torn; image a snapshot"]);
    }
}

/// Sends `signal` (a `kill` name) to process `pid`.
fn kill(signal: &str, pid: u32) {
    run_ok(Command::new("kill").args([&format!("-{signal}"), &pid.to_string()]));
}

#[test]
fn sigint_and_sigterm_stop_part_and_disk_with_one_line_and_their_status() {
    let dir = scratch();
    let image = fixture("ext-ext4", dir.path());
    let disk = fixture("disk-gpt", dir.path());
    let cases: [(&[&str], &Path, &str, i32); 4] = [
        (&["part"], &image, "INT", 130),
        (&["part", "--raw"], &image, "TERM", 143),
        (&["disk"], &disk, "INT", 130),
        (&["disk", "--progress", "always"], &disk, "TERM", 143),
    ];
    for (args, source, signal, status) in cases {
        let mut args = args.to_vec();
        args.push(source.to_str().unwrap());
        let (code, stderr) = with_pause(&args, 65536, |pid| kill(signal, pid));
        assert_eq!(code, Some(status), "{args:?} {signal}: {stderr}");
        let what = if signal == "INT" { "interrupted (SIGINT)" } else { "terminated (SIGTERM)" };
        assert_one_error_line(&stderr, &[what]);
    }
}

/// Runs `imgstream restore ARGS` with stdin from a pipe; returns the child and the pipe.
fn start_restore(args: &[&str]) -> (Child, std::process::ChildStdin) {
    let mut child = imgstream()
        .arg("restore")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start imgstream restore");
    let stdin = child.stdin.take().unwrap();
    (child, stdin)
}

/// Waits until `path` exists and holds at least `len` bytes.
fn wait_for_file(path: &Path, len: u64) {
    let started = Instant::now();
    while std::fs::metadata(path).map_or(true, |m| m.len() < len) {
        assert!(started.elapsed() < Duration::from_secs(30), "{} never reached {len} bytes", path.display());
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn a_signal_stops_restore_before_or_during_the_stream_and_removes_the_file_it_created() {
    let dir = scratch();
    for (signal, status, sent) in [("INT", 130, 0usize), ("TERM", 143, 9 << 20)] {
        let target = dir.path().join(format!("target-{signal}.img"));
        let (child, mut stdin) = start_restore(&[target.to_str().unwrap()]);
        stdin.write_all(&vec![0x5a; sent]).unwrap();
        // The target exists once restore waits for (more of) the stream; 8 MiB are written
        // once the third 4 MiB block has started arriving.
        wait_for_file(&target, (sent as u64).saturating_sub(1 << 20) / (4 << 20) * (4 << 20));
        kill(signal, child.id());
        let output = child.wait_with_output().unwrap();
        drop(stdin);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(status), "{stderr}");
        assert_one_error_line(&stderr, &["the output is incomplete"]);
        assert!(!target.exists(), "{signal}: the interrupted restore left {}", target.display());
    }
}

#[test]
fn restore_refuses_before_writing_and_keeps_files_it_did_not_create() {
    let dir = scratch();
    let stream = dir.path().join("stream.img");
    std::fs::write(&stream, vec![0xa5u8; 3 << 20]).unwrap();
    let open_stream = || std::fs::File::open(&stream).unwrap();

    // An existing non-empty file is not replaced without --force.
    let existing = dir.path().join("existing.img");
    std::fs::write(&existing, b"precious").unwrap();
    // Refused before any work, as `part -o` refuses it: a usage error.
    let (code, stderr) = run_with_stdin(imgstream().arg("restore").arg(&existing), open_stream());
    assert_eq!(code, Some(2), "{stderr}");
    assert_one_error_line(&stderr, &["exists and is not empty: use --force to replace it"]);
    assert_eq!(std::fs::read(&existing).unwrap(), b"precious");
    let (code, stderr) = run_with_stdin(imgstream().args(["restore", "--force"]).arg(&existing), open_stream());
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(std::fs::read(&existing).unwrap(), std::fs::read(&stream).unwrap());

    // --size that disagrees with a regular file on stdin: refused, nothing created.
    let fresh = dir.path().join("fresh.img");
    let (code, stderr) = run_with_stdin(imgstream().args(["restore", "--size", "1M"]).arg(&fresh), open_stream());
    assert_eq!(code, Some(1), "{stderr}");
    assert_one_error_line(&stderr, &["--size 1048576 but stdin holds 3145728 bytes", "nothing was written"]);
    assert!(!fresh.exists());

    // A stream that ends early (stdin empty): the file this run created is removed again.
    let stderr = run_fails(imgstream().args(["restore", "--size", "4M"]).arg(&fresh), 1);
    assert_one_error_line(&stderr, &["ended after 0 bytes"]);
    assert!(!fresh.exists(), "a failed restore left the file it created");
}

/// A 4 MiB block device (loop) holding a pattern; restores that cannot fit must not touch it.
#[test]
fn root_restore_refuses_a_stream_larger_than_the_device_before_the_first_write() {
    if !is_root() {
        return;
    }
    let dir = scratch();
    let backing = dir.path().join("small.img");
    std::fs::write(&backing, vec![0x3cu8; 4 << 20]).unwrap();
    let device = crate::disk::LoopDevice::attach(&backing, &[]);
    let before = sha256(&backing);
    let stream = dir.path().join("stream.img");
    std::fs::write(&stream, vec![0xa5u8; 8 << 20]).unwrap();
    // stdin a regular file: its size is known.
    let (code, stderr) = run_with_stdin(
        imgstream().args(["restore", "--sparse"]).arg(device.path()),
        std::fs::File::open(&stream).unwrap(),
    );
    assert_eq!(code, Some(1), "{stderr}");
    assert_one_error_line(&stderr, &["do not fit", "nothing was written"]);
    // A smaller regular file: only with --size, which says the rest of the device stays as it is.
    std::fs::write(&stream, vec![0xa5u8; 1 << 20]).unwrap();
    let (code, stderr) =
        run_with_stdin(imgstream().arg("restore").arg(device.path()), std::fs::File::open(&stream).unwrap());
    assert_eq!(code, Some(1), "{stderr}");
    assert_one_error_line(&stderr, &["stdin holds 1048576 bytes", "give --size 1048576", "nothing was written"]);
    std::fs::write(&stream, vec![0xa5u8; 8 << 20]).unwrap();
    // A pipe with --size.
    let script = format!(
        "cat {} | {} restore --sparse --size 8M {}",
        stream.display(),
        env!("CARGO_BIN_EXE_imgstream"),
        device.path().display()
    );
    let output = Command::new("bash").args(["-c", &script]).output().unwrap();
    assert_eq!(output.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&output.stderr).contains("do not fit"));
    drop(device);
    assert_eq!(sha256(&backing), before, "the device was written to");
}

/// A small tmpfs mounted in a test's scratch directory, unmounted when dropped: a target
/// whose filesystem fills up.
pub(crate) struct SmallTmpfs(pub(crate) PathBuf);

impl SmallTmpfs {
    /// `size` as mount takes it (`4M`), mounted at `dir/tmpfs`.
    pub(crate) fn mount(dir: &Path, size: &str) -> Self {
        let mount = dir.join("tmpfs");
        std::fs::create_dir(&mount).unwrap();
        run_ok(
            Command::new("mount").args(["-t", "tmpfs", "-o", &format!("size={size}"), "imgstream-test"]).arg(&mount),
        );
        Self(mount)
    }
}

impl Drop for SmallTmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

#[test]
fn root_a_restore_target_that_fills_up_fails_with_one_line_and_leaves_no_file() {
    if !is_root() {
        return;
    }
    let dir = scratch();
    let tmpfs = SmallTmpfs::mount(dir.path(), "4M");
    let mount = tmpfs.0.clone();
    let target = mount.join("restored.img");
    let stream: Vec<u8> = (0..16u32 << 20).map(|i| (i % 251) as u8).collect();
    let (child, mut stdin) = start_restore(&[target.to_str().unwrap()]);
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(&stream); // restore stops reading when the target is full
    });
    let output = child.wait_with_output().unwrap();
    writer.join().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert_one_error_line(&stderr, &["No space left on device", "at byte"]);
    assert!(std::fs::read_dir(&mount).unwrap().next().is_none(), "the full target left a file");
    drop(tmpfs);
}

/// Acceptance 4 at test scale: after `part` of a 256 MiB ext4 filled to 60%, read with a cold
/// cache, at most 1/64 of it is cached (the bound for 4 GiB is 64 MiB).
#[test]
fn part_leaves_the_source_out_of_the_page_cache() {
    if !have_tool("fincore") || !have_tool("mke2fs") {
        return;
    }
    let dir = scratch();
    let files = dir.path().join("files");
    std::fs::create_dir(&files).unwrap();
    let chunk: Vec<u8> = (0..1u32 << 20).map(|i| (i * 7 % 253) as u8).collect();
    for index in 0..16 {
        let mut file = std::fs::File::create(files.join(format!("f{index}"))).unwrap();
        for _ in 0..10 {
            file.write_all(&chunk).unwrap();
        }
    }
    let image = dir.path().join("filled.img");
    run_ok(Command::new("truncate").args(["-s", "256M"]).arg(&image));
    run_ok(Command::new("mke2fs").args(["-q", "-t", "ext4", "-E", "nodiscard", "-d"]).arg(&files).arg(&image));
    let cached = || -> u64 {
        let out = run_ok(Command::new("fincore").args(["-b", "-n", "-o", "RES"]).arg(&image)).stdout;
        String::from_utf8(out).unwrap().trim().parse().unwrap()
    };
    // Cold: dd's nocache drops the file's pages.
    run_ok(Command::new("dd").arg(format!("if={}", image.display())).args(["iflag=nocache", "count=0", "status=none"]));
    let cold = cached();
    let output = run_ok(imgstream().arg("part").arg(&image).stdout(Stdio::null()).stderr(Stdio::piped()));
    let after = cached();
    let read = String::from_utf8_lossy(&output.stderr);
    assert!(after <= cold + (4 << 20), "{after} bytes of the 256 MiB image cached after part (cold: {cold}); {read}");
}

#[test]
fn messages_name_what_was_found_and_never_show_rust_debug_text() {
    let dir = scratch();
    // An NTFS boot sector whose OEM id is damaged is a damaged NTFS, not a corrupt FAT.
    let image = fixture("ntfs-c4096", dir.path());
    let mut bytes = std::fs::read(&image).unwrap();
    bytes[3..7].copy_from_slice(b"NTFX");
    std::fs::write(&image, &bytes).unwrap();
    let stderr = run_fails(imgstream().arg("part").arg(&image).stdout(Stdio::null()), 1);
    assert_one_error_line(&stderr, &["corrupt ntfs", "\"NTFX    \"", "damaged NTFS boot sector"]);
    assert!(!stderr.contains("fat"), "{stderr}");

    // Truncated images of every kind: one line, no `Error { kind: ... }`.
    for name in ["ntfs-c4096", "ext-ext4", "fat-32", "exfat-4k", "disk-gpt"] {
        let image = fixture(name, dir.path());
        let bytes = std::fs::read(&image).unwrap();
        for cut in [600, 70_000, 3_000_000] {
            std::fs::write(&image, &bytes[..cut]).unwrap();
            for command in ["part", "disk", "info"] {
                let output = imgstream().arg(command).arg(&image).stdout(Stdio::null()).output().unwrap();
                let stderr = String::from_utf8_lossy(&output.stderr);
                assert!(
                    !stderr.contains("kind:") && !stderr.contains(" { "),
                    "{name} cut at {cut}, {command}: {stderr}"
                );
            }
        }
    }

    // An ext journal device has no bitmaps: copied raw with a warning, not refused.
    if !have_tool("mke2fs") {
        return;
    }
    let journal = dir.path().join("journal.img");
    run_ok(Command::new("truncate").args(["-s", "8M"]).arg(&journal));
    run_ok(Command::new("mke2fs").args(["-q", "-O", "journal_dev", "-b", "4096"]).arg(&journal));
    let output = run_ok(imgstream().arg("part").arg(&journal).stderr(Stdio::piped()));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("warning:") && stderr.contains("journal device") && stderr.contains("copying it raw"));
    assert_same_bytes("journal device", &output.stdout, &std::fs::read(&journal).unwrap());
}

/// Ctrl-C typed on a terminal (script(1) gives imgstream a pty) while the progress bar is
/// drawn: the bar is cleared, then the one error line, status 130.
#[test]
fn ctrl_c_on_a_terminal_clears_the_progress_bar() {
    if !have_tool("script") || !have_tool("mkfifo") {
        return;
    }
    let dir = scratch();
    let image = fixture("ext-ext4", dir.path());
    let fifo = dir.path().join("out.fifo");
    run_ok(Command::new("mkfifo").arg(&fifo));
    let command = format!("{} part {} > {}", env!("CARGO_BIN_EXE_imgstream"), image.display(), fifo.display());
    let mut terminal = Terminal::spawn(&command, |_| {});
    let mut output = std::fs::File::open(&fifo).unwrap();
    output.read_exact(&mut vec![0u8; 65536]).unwrap();
    terminal.wait_for("ETA", 1);
    terminal.type_keys(b"\x03");
    std::io::copy(&mut output, &mut std::io::sink()).unwrap();
    let (status, text) = terminal.finish();
    assert_eq!(status.code(), Some(130), "{text:?}");
    // After the last drawing of the bar: the erase-line sequence, then only the error line.
    let after_bar = &text[text.rfind("ETA").unwrap()..];
    let cleared = after_bar.find("\x1b[2K").unwrap_or_else(|| panic!("the bar was not cleared: {text:?}"));
    let rest = after_bar[cleared + 4..].trim();
    assert!(rest.starts_with("imgstream: error: interrupted (SIGINT)") && rest.lines().count() == 1, "{text:?}");
}

/// `--rescue-map` names a file of its own: the source (also through a hard or symbolic link),
/// the image (`-o FILE`, also one not made yet, or the file stdout writes to) and a device are
/// refused (exit 2) before anything is read or written.
#[test]
fn a_rescue_map_over_the_source_the_image_or_a_device_is_refused_before_anything_is_written() {
    let dir = scratch();
    let source = fixture("fat-12", dir.path());
    let before = sha256(&source);
    let hard_link = dir.path().join("hard-link.img");
    std::fs::hard_link(&source, &hard_link).unwrap();
    let symlink = dir.path().join("symlink.img");
    std::os::unix::fs::symlink(&source, &symlink).unwrap();
    let rescue = |command: &str, map: &Path| {
        let mut run = imgstream();
        run.args([command, "--rescue", "--rescue-map"]).arg(map);
        run
    };
    let stdout_file = dir.path().join("image.img");
    let stdout = |file: &Path| std::fs::File::create(file).unwrap();
    for command in ["part", "disk"] {
        for map in [&source, &hard_link, &symlink] {
            let stderr = run_fails(rescue(command, map).arg(&source).stdout(stdout(&stdout_file)), 2);
            assert!(stderr.contains("is the source"), "{command} --rescue-map {}: {stderr}", map.display());
        }
        let stderr = run_fails(rescue(command, &stdout_file).arg(&source).stdout(stdout(&stdout_file)), 2);
        assert!(stderr.contains("is the output (stdout)"), "{stderr}");
        assert_eq!(std::fs::metadata(&stdout_file).unwrap().len(), 0, "the map was written over stdout's file");
        let new = dir.path().join("new.img");
        let same_new = dir.path().join(".").join("new.img");
        let stderr = run_fails(rescue(command, &same_new).arg("-o").arg(&new).arg(&source), 2);
        assert!(stderr.contains("is the output"), "{stderr}");
        assert!(!new.exists(), "a refused run left {}", new.display());
        let stderr = run_fails(rescue(command, Path::new("/dev/null")).arg(&source).stdout(stdout(&stdout_file)), 2);
        assert!(stderr.contains("not a regular file"), "{stderr}");
    }
    assert_eq!(sha256(&source), before, "the source changed");
}

/// The same with a loop device for the source: the device itself and the file under it.
#[test]
fn root_a_rescue_map_over_a_loop_device_source_or_its_backing_file_is_refused() {
    if !is_root() || !have_tool("losetup") {
        return;
    }
    let dir = scratch();
    let backing = fixture("fat-12", dir.path());
    let before = sha256(&backing);
    let device = crate::disk::LoopDevice::attach(&backing, &[]);
    for map in [device.path(), backing.as_path()] {
        let mut command = imgstream();
        command.args(["part", "--rescue", "--rescue-map"]).arg(map).arg(device.path()).stdout(Stdio::null());
        let stderr = run_fails(&mut command, 2);
        assert!(stderr.contains("is the source"), "--rescue-map {}: {stderr}", map.display());
    }
    drop(device);
    assert_eq!(sha256(&backing), before, "the source changed");
}

/// A map that cannot be written whole (its filesystem is full) fails the run and leaves the
/// previous map as it was, for ddrescue to resume from.
#[test]
fn root_a_rescue_map_that_cannot_be_written_whole_leaves_the_previous_one() {
    if !is_root() {
        return;
    }
    let dir = scratch();
    let source = fixture("fat-12", dir.path());
    let tmpfs = SmallTmpfs::mount(dir.path(), "4M");
    let map = tmpfs.0.join("rescue.map");
    let previous = "# Mapfile. Created by GNU ddrescue\n0x00000000     ?               1\n";
    std::fs::write(&map, previous).unwrap();
    let mut filler = std::fs::File::create(tmpfs.0.join("filler")).unwrap();
    while filler.write_all(&[0xffu8; 4096]).is_ok() {}
    let mut command = imgstream();
    command.args(["part", "--rescue", "--rescue-map"]).arg(&map).arg(&source).stdout(Stdio::null());
    let stderr = run_fails(&mut command, 1);
    assert_one_error_line(&stderr, &["cannot write the rescue map", "No space left on device"]);
    assert_eq!(std::fs::read_to_string(&map).unwrap(), previous, "the previous map was clobbered");
    drop(filler); // an open file keeps the tmpfs busy
    drop(tmpfs);
}
