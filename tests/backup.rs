//! backup-disk as one borg archive (FUSE view with `borg create --sparse`, or a tar stream into
//! `borg import-tar` with `--no-fuse`), judged by borg itself: what `borg list` shows, what
//! `borg extract` gives back, `borg prune`, interrupted and failing runs, an encrypted
//! repository; and `imgstream mount` / `imgstream map` against Python's `os.lseek`.

#![allow(clippy::indexing_slicing)] // test code: a panic is a failed test, with its message

use crate::disk::{Borg, backed_up, borg_wrapper};
use crate::util::*;
use nix::sys::signal::{Signal, kill, killpg};
use nix::unistd::Pid;
use serde_json::{Value, json};
use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// The two ways backup-disk feeds borg.
const MODES: [&str; 2] = ["--fuse", "--no-fuse"];

/// `backup-disk` in `mode` (`--fuse` is the default, so it is not passed).
fn backup(borg: &Borg, mode: &str, name: &str, disk: &Path, borg_args: &[&str]) -> Command {
    let mut command = borg.imgstream(&["backup-disk", "--name", name]);
    command.args((mode == "--no-fuse").then_some(mode)).arg(disk);
    if !borg_args.is_empty() {
        command.arg("--").args(borg_args);
    }
    command
}

/// `borg extract` of a whole archive into a fresh directory.
fn extract_all(borg: &Borg, archive: &str, dir: &Path) -> PathBuf {
    let into = dir.join(format!("extracted-{archive}"));
    std::fs::create_dir(&into).unwrap();
    run_ok(borg.command().arg("extract").arg(format!("{}::{archive}", borg.repo.display())).current_dir(&into));
    into
}

/// The files of a directory, name -> bytes, with the manifest's backup name left out (it is
/// the one thing that differs between two backups of one disk).
fn files_of(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut files: Vec<(String, Vec<u8>)> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            let name = e.file_name().into_string().unwrap();
            let mut bytes = std::fs::read(e.path()).unwrap();
            if name == "manifest.json" {
                let mut manifest: Value = serde_json::from_slice(&bytes).unwrap();
                manifest["name"] = json!("");
                bytes = serde_json::to_vec(&manifest).unwrap();
            }
            (name, bytes)
        })
        .collect();
    files.sort();
    files
}

/// Acceptance 2 and 5: one archive per backup, the same files whichever way borg was fed, and
/// the README's prune recipe keeps whole backups (two backups on one day: the earlier goes;
/// what stays restores to the whole disk).
#[test]
fn one_archive_per_backup_the_same_files_either_way_and_prune_keeps_whole_backups() {
    let Some((dir, borg, disk)) = backed_up("disk-mbr", &[]) else { return };
    let stream = run_ok(imgstream().arg("disk").arg(&disk)).stdout;
    let stamps = [
        ("laptop-a", "--fuse", "2026-01-01T10:00:00"),
        ("laptop-b", "--no-fuse", "2026-01-01T12:00:00"),
        ("laptop-c", "--fuse", "2026-01-02T12:00:00"),
    ];
    for (name, mode, stamp) in stamps {
        run_ok(&mut backup(&borg, mode, name, &disk, &["--timestamp", stamp]));
    }
    run_ok(borg.command().arg("create").arg(format!("{}::other", borg.repo.display())).arg(&disk));
    assert_eq!(borg.archives(), ["laptop-a", "laptop-b", "laptop-c", "other"]);

    let fuse = files_of(&extract_all(&borg, "laptop-a", dir.path()));
    let tar = files_of(&extract_all(&borg, "laptop-b", dir.path()));
    let names: Vec<&str> = fuse.iter().map(|(n, _)| n.as_str()).collect();
    assert!(names.contains(&"manifest.json") && names.contains(&"part5.img"), "{names:?}");
    assert!(fuse == tar, "the import-tar archive's files differ from the FUSE archive's");

    // The README's recipe with 2 days instead of 7 (borg keeps the oldest archive while fewer
    // days than asked exist): the day-1 backup made first goes, whole.
    run_ok(borg.command().args(["prune", "--keep-daily", "2", "--glob-archives", "laptop-*"]).arg(&borg.repo));
    assert_eq!(borg.archives(), ["laptop-b", "laptop-c", "other"]);
    for name in ["laptop-b", "laptop-c"] {
        let target = dir.path().join(format!("{name}.img"));
        run_ok(borg.imgstream(&["restore-disk", "--name", name]).arg(&target));
        assert_same_bytes(name, &std::fs::read(&target).unwrap(), &stream);
    }
}

/// Acceptance 3: a backup in the earlier layout (one archive per partition, NAME-table with
/// the manifest and raw/<offset>.bin), made here with plain borg as that version did, restores;
/// without one of its partition archives it is refused before anything is written.
#[test]
fn a_backup_in_the_earlier_multi_archive_layout_still_restores() {
    let Some((dir, borg, disk)) = backed_up("disk-mbr", &["new"]) else { return };
    let stream = run_ok(imgstream().arg("disk").arg(&disk)).stdout;
    let repo = borg.repo.display().to_string();
    let manifest: Value =
        serde_json::from_slice(&std::fs::read(extract_all(&borg, "new", dir.path()).join("manifest.json")).unwrap())
            .unwrap();
    let table = dir.path().join("table");
    std::fs::create_dir_all(table.join("raw")).unwrap();
    let mut raw_areas = Vec::new();
    for area in manifest["raw_areas"].as_array().unwrap() {
        let (offset, size) = (area["offset"].as_u64().unwrap() as usize, area["size"].as_u64().unwrap() as usize);
        std::fs::write(table.join("raw").join(format!("{offset:016}.bin")), &stream[offset..offset + size]).unwrap();
        raw_areas.push(json!({ "offset": offset, "size": size, "file": format!("raw/{offset:016}.bin") }));
    }
    let mut partitions = Vec::new();
    for p in manifest["partitions"].as_array().unwrap() {
        let index = p["index"].as_u64().unwrap();
        let script = format!(
            "{} disk --partition {index} {} | borg create --chunker-params fixed,4194304 --stdin-name part{index}.img {repo}::old-part{index} -",
            env!("CARGO_BIN_EXE_imgstream"),
            disk.display()
        );
        run_ok(borg.env(Command::new("bash").args(["-o", "pipefail", "-c", &script])));
        partitions.push(json!({ "index": index, "start": p["start"], "size": p["size"], "filesystem": p["filesystem"], "archive": format!("old-part{index}") }));
    }
    let old = json!({ "format": "imgstream-disk-1", "name": "old", "disk_size": manifest["disk_size"], "sector_size": 512, "table": "dos", "partitions": partitions, "raw_areas": raw_areas });
    std::fs::write(table.join("manifest.json"), serde_json::to_vec_pretty(&old).unwrap()).unwrap();
    run_ok(borg.command().args(["create", &format!("{repo}::old-table"), "manifest.json", "raw"]).current_dir(&table));

    let target = dir.path().join("old.img");
    run_ok(borg.imgstream(&["restore-disk", "--name", "old"]).arg(&target));
    assert_same_bytes("the earlier layout restored", &std::fs::read(&target).unwrap(), &stream);

    run_ok(borg.command().args(["delete", &format!("{repo}::old-part1")]));
    let before = sha256(&target);
    let stderr = run_fails(borg.imgstream(&["restore-disk", "--name", "old"]).arg(&target), 1);
    assert!(stderr.contains("lacks its archive old-part1") && stderr.contains("nothing was written"), "{stderr}");
    assert_eq!(sha256(&target), before, "the target was written");
}

/// Acceptance 6, and restore-disk too (four borg runs): an encrypted repository's passphrase
/// is found once per run, from BORG_PASSCOMMAND (run once), BORG_PASSPHRASE_FD (read once: a
/// second borg would find the pipe empty) or the terminal (asked once and not echoed; a wrong
/// one is asked again).
#[test]
fn an_encrypted_repository_asks_for_the_passphrase_once_per_backup_and_per_restore() {
    if !have_tool("borg") || !have_tool("script") {
        return;
    }
    let dir = scratch();
    let disk = fixture("disk-gpt", dir.path());
    let stream = run_ok(imgstream().arg("disk").arg(&disk)).stdout;
    let count = dir.path().join("asked");
    let passcommand = format!("sh -c 'echo asked >> {}; echo secret'", count.display());
    let borg = Borg::at(dir.path());
    let with_passcommand = |command: &mut Command| {
        borg.env(command).env_remove("BORG_PASSPHRASE").env("BORG_PASSCOMMAND", &passcommand);
    };
    let asked = || std::fs::read_to_string(&count).unwrap().lines().count();
    let mut init = borg.command();
    with_passcommand(init.args(["init", "-e", "repokey"]).arg(&borg.repo));
    run_ok(&mut init);
    for mode in MODES {
        std::fs::write(&count, "").unwrap();
        let mut command = backup(&borg, mode, mode.trim_start_matches('-'), &disk, &[]);
        with_passcommand(&mut command);
        run_ok(&mut command);
        assert_eq!(asked(), 1, "{mode}: passphrase asked more than once");
    }
    let restore_disk = |target: &Path| {
        let exe = env!("CARGO_BIN_EXE_imgstream");
        format!("{exe} restore-disk --name fuse --repo {} {}", borg.repo.display(), target.display())
    };
    let restored = |target: &Path, how: &str| assert_same_bytes(how, &std::fs::read(target).unwrap(), &stream);

    std::fs::write(&count, "").unwrap();
    let target = dir.path().join("passcommand.img");
    let mut restore = borg.imgstream(&["restore-disk", "--name", "fuse"]);
    with_passcommand(restore.arg(&target));
    run_ok(&mut restore);
    assert_eq!(asked(), 1, "restore-disk ran BORG_PASSCOMMAND more than once");
    restored(&target, "restore-disk with BORG_PASSCOMMAND");

    let target = dir.path().join("fd.img");
    let from_fd = format!("exec 3< <(printf 'secret\\n'); BORG_PASSPHRASE_FD=3 exec {}", restore_disk(&target));
    run_ok(borg.env(Command::new("bash").args(["-c", &from_fd])).env_remove("BORG_PASSPHRASE"));
    restored(&target, "restore-disk with BORG_PASSPHRASE_FD");

    let target = dir.path().join("typed.img");
    let mut terminal = Terminal::spawn(&restore_disk(&target), |command| {
        borg.env(command).env_remove("BORG_PASSPHRASE");
    });
    let prompt = format!("Enter passphrase for {}: ", borg.repo.display());
    terminal.wait_for(&prompt, 1);
    terminal.type_keys(b"wrong\n");
    terminal.wait_for(&prompt, 2);
    terminal.type_keys(b"secret\n");
    let (status, text) = terminal.finish();
    assert!(status.success(), "{text:?}");
    assert_eq!(text.matches(&prompt).count(), 2, "{text:?}");
    assert!(text.contains("Incorrect passphrase") && !text.contains("secret") && !text.contains("wrong"), "{text:?}");
    restored(&target, "restore-disk with the passphrase typed");
}

/// A GPT disk image with one ext4 partition holding `random_mib` MiB of random data, built with
/// sfdisk and `mkfs.ext4 -d` (no mount needed).
fn random_disk(dir: &Path, random_mib: u64) -> PathBuf {
    let content = dir.join("content");
    std::fs::create_dir_all(&content).unwrap();
    run_ok(
        Command::new("dd")
            .args(["if=/dev/urandom", "bs=1M", "status=none", &format!("count={random_mib}")])
            .arg(format!("of={}", content.join("random.bin").display())),
    );
    let part = dir.join("part.img");
    let part_mib = random_mib + 16;
    run_ok(Command::new("mkfs.ext4").args(["-q", "-F", "-d"]).arg(&content).arg(&part).arg(format!("{part_mib}M")));
    let disk = dir.join("random-disk.img");
    std::fs::File::create(&disk).unwrap().set_len((part_mib + 2) << 20).unwrap();
    let script = format!(
        "echo 'label: gpt\nstart=2048, size={}, type=linux' | sfdisk -q {} && dd if={} of={} bs=1M seek=1 conv=notrunc,sparse status=none",
        part_mib << 11,
        disk.display(),
        part.display(),
        disk.display()
    );
    run_ok(Command::new("bash").args(["-c", &script]));
    disk
}

/// Lines of a child's stderr, as they come.
fn stderr_lines(child: &mut Child) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    let stderr = child.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    rx
}

/// Waits (at most a minute) for a line containing `text`; returns every line read so far.
fn wait_for_line(lines: &mpsc::Receiver<String>, text: &str) -> Vec<String> {
    let mut seen = Vec::new();
    while let Ok(line) = lines.recv_timeout(Duration::from_secs(60)) {
        let found = line.contains(text);
        seen.push(line);
        if found {
            return seen;
        }
    }
    panic!("no line with {text:?} on stderr; got {seen:?}");
}

/// Waits (at most a minute) until `path` exists.
fn wait_for_path(path: &Path) {
    let started = Instant::now();
    while !path.exists() {
        assert!(started.elapsed() < Duration::from_secs(60), "{} never appeared", path.display());
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Lines of /proc/mounts that mention `dir`.
fn mounts_under(dir: &Path) -> Vec<String> {
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap();
    mounts.lines().filter(|l| l.contains(&dir.display().to_string())).map(str::to_owned).collect()
}

/// A child in its own process group, killed with its group when dropped (a test that fails
/// half-way leaves no borg or imgstream running).
struct Group(Child);

impl Group {
    fn spawn(command: &mut Command) -> Self {
        Self(command.process_group(0).stdin(Stdio::null()).stderr(Stdio::piped()).spawn().unwrap())
    }

    fn signal(&self, signal: Signal, whole_group: bool) {
        let pid = Pid::from_raw(self.0.id() as i32);
        if whole_group { killpg(pid, signal) } else { kill(pid, signal) }.unwrap();
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        // SIGTERM first: imgstream then unmounts what it mounted, so a test that fails midway
        // leaves no mount on the machine; SIGKILL for what is left after 5 s.
        let group = Pid::from_raw(self.0.id() as i32);
        let _ = killpg(group, Signal::SIGTERM);
        let started = Instant::now();
        while matches!(self.0.try_wait(), Ok(None)) && started.elapsed() < Duration::from_secs(5) {
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = killpg(group, Signal::SIGKILL);
        let _ = self.0.wait();
    }
}

/// Acceptance 4 and 5: SIGINT and SIGTERM at three points (borg starting; borg reading; the
/// whole process group, as a terminal's Ctrl-C, which makes borg write a checkpoint), and a
/// borg that fails (the repository is locked): exit status non-zero, no archive and no
/// checkpoint (`borg list --consider-checkpoints` unchanged), no mount, no staging directory;
/// and an interrupted restore-disk leaves no staging directory.
#[test]
fn root_interrupted_or_failing_backups_leave_no_archive_no_checkpoint_and_no_mount() {
    if !is_root() || !have_tool("borg") || !have_tool("mkfs.ext4") || !have_tool("sfdisk") {
        return;
    }
    let dir = scratch();
    // zstd level 19 makes borg take seconds for 24 MiB of random data: time to interrupt it.
    let disk = random_disk(dir.path(), 24);
    let slow = ["--compression", "zstd,19"];
    let tmp = dir.path().join("tmp");
    std::fs::create_dir(&tmp).unwrap();
    for mode in MODES {
        let home = dir.path().join(mode.trim_start_matches('-'));
        std::fs::create_dir(&home).unwrap();
        let borg = Borg::init(&home);
        let lock = borg.repo.join("lock.exclusive");
        let before = borg.archives();
        for (point, whole_group) in [("borg starting", false), ("borg reading", false), ("Ctrl-C", true)] {
            for signal in [Signal::SIGINT, Signal::SIGTERM] {
                let what = format!("{mode}, {signal} at {point}");
                let mut command = backup(&borg, mode, "cut", &disk, &slow);
                let mut child = Group::spawn(command.env("TMPDIR", &tmp));
                let lines = stderr_lines(&mut child.0);
                // The line backup-disk prints when the disk is planned, just before borg starts.
                let mut seen = wait_for_line(&lines, "-> ");
                if point != "borg starting" {
                    wait_for_path(&lock);
                    std::thread::sleep(Duration::from_millis(500));
                }
                child.signal(signal, whole_group);
                let status = child.0.wait().unwrap();
                seen.extend(lines.iter());
                assert_eq!(status.code(), Some(128 + signal as i32), "{what}: {seen:?}");
                assert!(
                    seen.iter().any(|l| l.contains(&format!("interrupted by {}", signal.as_str()))),
                    "{what}: {seen:?}"
                );
                assert_eq!(borg.archives(), before, "{what}: an archive or checkpoint remains: {seen:?}");
                assert!(mounts_under(&tmp).is_empty(), "{what}: {:?}", mounts_under(&tmp));
                assert_eq!(std::fs::read_dir(&tmp).unwrap().count(), 0, "{what}: something was left in $TMPDIR");
                assert!(!lock.exists(), "{what}: the repository is still locked");
            }
        }
        // borg fails: another borg holds the repository's lock.
        let holder = Group::spawn(borg.env(borg.command().arg("with-lock").arg(&borg.repo).args(["sleep", "60"])));
        wait_for_path(&lock);
        let stderr = run_fails(backup(&borg, mode, "locked", &disk, &[]).env("TMPDIR", &tmp), 1);
        assert!(stderr.contains("borg failed"), "{mode}: {stderr}");
        drop(holder);
        assert_eq!(borg.archives(), before, "{mode}: locked repository");
        assert!(mounts_under(&tmp).is_empty() && std::fs::read_dir(&tmp).unwrap().count() == 0, "{mode}: leftovers");
    }
    // restore-disk interrupted while it fetches the manifest: no staging directory remains.
    let borg = Borg::at(&dir.path().join("fuse"));
    run_ok(&mut backup(&borg, "--fuse", "whole", &disk, &[]));
    let target = dir.path().join("restored.img");
    let mut child = Group::spawn(borg.imgstream(&["restore-disk"]).arg(&target).env("TMPDIR", &tmp));
    let lines = stderr_lines(&mut child.0);
    let mut seen = wait_for_line(&lines, "restoring the latest backup");
    child.signal(Signal::SIGINT, false);
    let status = child.0.wait().unwrap();
    seen.extend(lines.iter());
    assert_eq!(status.code(), Some(130), "restore-disk: {seen:?}");
    assert_eq!(std::fs::read_dir(&tmp).unwrap().count(), 0, "restore-disk left its staging directory");
}

/// A source whose allocation map changes while borg reads it (a live disk: here debugfs
/// writes a file into it as borg starts) fails the backup, as it fails `imgstream disk`: exit
/// 1, no archive.
#[test]
fn a_source_that_changes_during_the_backup_leaves_no_archive() {
    if !have_tool("borg") || !have_tool("debugfs") {
        return;
    }
    let dir = scratch();
    let borg = Borg::init(dir.path());
    let before = borg.archives();
    let change =
        "case $1 in create|import-tar) debugfs -w -R 'write /etc/hostname changed' \"$SOURCE\" >/dev/null 2>&1 ;; esac";
    let changing_borg = borg_wrapper(dir.path(), "borg-after-a-change", &format!("{change}\nexec borg \"$@\""));
    for mode in MODES {
        let volume = fixture("ext-ext4", dir.path());
        let mut command = backup(&borg, mode, "live", &volume, &[]);
        let stderr = run_fails(command.env("IMGSTREAM_BORG", &changing_borg).env("SOURCE", &volume), 1);
        assert!(stderr.contains("changed while it was read"), "{mode}: {stderr}");
        assert_eq!(borg.archives(), before, "{mode}: an archive remains: {stderr}");
    }
}

/// Python's `os.lseek` walk of a file's data ranges (SEEK_DATA, then SEEK_HOLE, until ENXIO).
const LSEEK_WALK: &str = "
import os, sys
fd = os.open(sys.argv[1], os.O_RDONLY)
offset = 0
while True:
    try:
        data = os.lseek(fd, offset, os.SEEK_DATA)
    except OSError:
        break
    offset = os.lseek(fd, data, os.SEEK_HOLE)
    print(data, offset - data)
";

/// `imgstream mount`: every file equals its slice of `imgstream disk`, lseek's data ranges are
/// `imgstream map`'s data lines inside it, and SIGTERM unmounts (exit 0).
#[test]
fn root_mount_shows_files_whose_bytes_and_holes_match_disk_and_map() {
    if !is_root() || !have_tool("python3") {
        return;
    }
    let dir = scratch();
    let disk = fixture("disk-gpt", dir.path());
    let stream = run_ok(imgstream().arg("disk").arg(&disk)).stdout;
    let map = String::from_utf8(run_ok(imgstream().arg("map").arg(&disk)).stdout).unwrap();
    let mut data = Vec::new();
    let mut end = 0;
    for line in map.lines() {
        let fields: Vec<&str> = line.split(' ').collect();
        let (start, len): (u64, u64) = (fields[0].parse().unwrap(), fields[1].parse().unwrap());
        assert_eq!(start, end, "map lines must be contiguous: {line}");
        end = start + len;
        match fields[2] {
            "data" => data.push(start..end),
            "zero" => assert!(stream[start as usize..end as usize].iter().all(|&b| b == 0), "{line}: not zeros"),
            other => panic!("unknown state {other}"),
        }
    }
    assert_eq!(end, stream.len() as u64, "the map covers the exact size");

    let mountpoint = dir.path().join("mnt");
    std::fs::create_dir(&mountpoint).unwrap();
    let mut child = Group::spawn(imgstream().arg("mount").arg(&disk).arg(&mountpoint));
    let lines = stderr_lines(&mut child.0);
    wait_for_line(&lines, "mounted read-only");
    let manifest: Value = serde_json::from_slice(&std::fs::read(mountpoint.join("manifest.json")).unwrap()).unwrap();
    let mut pieces: Vec<(String, u64, u64)> = Vec::new();
    for p in manifest["partitions"].as_array().unwrap() {
        pieces.push((p["file"].as_str().unwrap().into(), p["start"].as_u64().unwrap(), p["size"].as_u64().unwrap()));
    }
    for a in manifest["raw_areas"].as_array().unwrap() {
        pieces.push((a["file"].as_str().unwrap().into(), a["offset"].as_u64().unwrap(), a["size"].as_u64().unwrap()));
    }
    assert_eq!(pieces.iter().map(|p| p.2).sum::<u64>(), stream.len() as u64, "the files cover the disk");
    for (file, start, size) in &pieces {
        let path = mountpoint.join(file);
        let (start, end) = (*start, start + size);
        assert_same_bytes(file, &std::fs::read(&path).unwrap(), &stream[start as usize..end as usize]);
        let walk = run_ok(Command::new("python3").arg("-c").arg(LSEEK_WALK).arg(&path)).stdout;
        let expected: String = data
            .iter()
            .filter(|r| r.start < end && r.end > start)
            .map(|r| format!("{} {}\n", r.start.max(start) - start, r.end.min(end) - r.start.max(start)))
            .collect();
        assert_eq!(String::from_utf8(walk).unwrap(), expected, "{file}: lseek's data ranges");
    }
    child.signal(Signal::SIGTERM, false);
    let status = child.0.wait().unwrap();
    assert!(status.success(), "mount after SIGTERM: {status}");
    assert!(mounts_under(&mountpoint).is_empty(), "still mounted");
}

/// `imgstream mount` of the disk-gpt fixture, running (fields drop in order: the child, stopped
/// with SIGTERM, unmounts before the directory goes).
struct MountedView {
    mountpoint: PathBuf,
    child: Group,
    lines: mpsc::Receiver<String>,
    dir: tempfile::TempDir,
}

/// Mounts the disk-gpt fixture on a fresh directory and waits until it is mounted.
fn mount_disk_gpt() -> MountedView {
    let dir = scratch();
    let disk = fixture("disk-gpt", dir.path());
    let mountpoint = dir.path().join("mnt");
    std::fs::create_dir(&mountpoint).unwrap();
    let mut child = Group::spawn(imgstream().arg("mount").arg(&disk).arg(&mountpoint));
    let lines = stderr_lines(&mut child.0);
    wait_for_line(&lines, "mounted read-only");
    MountedView { mountpoint, child, lines, dir }
}

/// `umount MOUNTPOINT`, the other way the help and the README give to end `imgstream mount`:
/// exit 0, and no error about an unmount that someone else already did.
#[test]
fn root_mount_ends_cleanly_when_unmounted_by_umount() {
    if !is_root() || !have_tool("umount") {
        return;
    }
    // Bindings drop in reverse: the child (which unmounts) before the directory.
    let MountedView { dir: _dir, lines, mut child, mountpoint } = mount_disk_gpt();
    run_ok(Command::new("umount").arg(&mountpoint));
    let status = child.0.wait().unwrap();
    let rest: Vec<String> = lines.try_iter().collect();
    assert!(status.success(), "mount after umount: {status}; stderr {rest:?}");
    assert!(rest.iter().all(|l| !l.contains("error")), "stderr {rest:?}");
    assert!(rest.iter().any(|l| l.contains("unmounted")), "stderr {rest:?}");
}

/// `imgstream mount` needs an empty directory (as its help says): a file, a missing path or a
/// directory with files in it (which the mount would hide) is refused, exit 2, nothing mounted.
#[test]
fn mount_refuses_a_mountpoint_that_is_not_an_empty_directory() {
    let dir = scratch();
    let disk = fixture("disk-gpt", dir.path());
    let full = dir.path().join("full");
    std::fs::create_dir(&full).unwrap();
    std::fs::write(full.join("kept"), b"x").unwrap();
    for mountpoint in [full.clone(), disk.clone(), dir.path().join("missing")] {
        let stderr = run_fails(imgstream().arg("mount").arg(&disk).arg(&mountpoint), 2);
        assert!(stderr.contains(&mountpoint.display().to_string()), "{stderr}");
        assert!(mounts_under(dir.path()).is_empty(), "{mountpoint:?} was mounted");
    }
    assert!(full.join("kept").exists());
}

/// SIGTERM while another process still has its working directory inside the mount (umount says
/// EBUSY): the mount is detached anyway, so that no mount stays behind, and imgstream exits 0.
#[test]
fn root_mount_detaches_a_busy_mount_on_sigterm() {
    if !is_root() {
        return;
    }
    // Bindings drop in reverse: the child (which unmounts) before the directory.
    let MountedView { dir: _dir, lines, mut child, mountpoint } = mount_disk_gpt();
    let mut inside = Group::spawn(Command::new("sleep").arg("60").current_dir(&mountpoint));
    child.signal(Signal::SIGTERM, false);
    let status = child.0.wait().unwrap();
    let rest: Vec<String> = lines.try_iter().collect();
    let _ = inside.0.kill();
    let _ = inside.0.wait();
    assert!(mounts_under(&mountpoint).is_empty(), "still mounted; stderr {rest:?}");
    assert!(status.success(), "mount after SIGTERM: {status}; stderr {rest:?}");
}
