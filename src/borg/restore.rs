//! `restore-disk`: a `backup-disk` backup written back to a disk or file.
//!
//! The manifest's raw areas and partitions are written back, each with `borg extract
//! --stdout`, and a GPT's backup table is moved to the end of a larger disk. The layout of
//! earlier versions restores too: one archive per partition (`NAME-partN`) plus `NAME-table`
//! holding the manifest and `raw/<offset>.bin`.

use super::{TempDir, absolute_repo, borg, run_borg};
use crate::cli::RestoreDiskArgs;
use crate::progress::{self, ProgressMode};
use crate::size::human;
use crate::view::{self, MANIFEST};
use crate::{Failure, note, signals, warn};
use imgstream_blockio::{ReadAt, Source, SourceKind};
use imgstream_ptable::TableKind;
use imgstream_restore::{OpenOptions, Target, TargetKind};
use imgstream_stream::NoProgress;
use serde_json::Value;
use std::ffi::OsString;
use std::fs;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Instant;

/// The manifest format of the earlier multi-archive layout (restore only).
const SPLIT_MANIFEST_FORMAT: &str = "imgstream-disk-1";

/// What an interruption before the first write leaves.
const NOTHING_WRITTEN: &str = "nothing was written";
/// An interruption while writing (the caller adds what the target holds then).
const STOPPED: &str = "the restore stopped part way";

/// Where a piece of the disk comes from.
enum PieceSource {
    /// A file of the backup's one archive.
    File(String),
    /// A whole archive (partitions of the earlier layout).
    Archive(String),
    /// A file extracted into the staging directory (raw areas of the earlier layout).
    Staged(PathBuf),
}

/// A partition or raw area to restore, from a checked manifest.
struct Piece {
    offset: u64,
    size: u64,
    from: PieceSource,
    /// Partitions: (index, filesystem), for messages.
    partition: Option<(u64, String)>,
}

/// The backed-up disk, from a checked manifest.
struct Disk {
    size: u64,
    sector_size: u32,
    table: TableKind,
    /// In disk order, disjoint.
    pieces: Vec<Piece>,
}

/// A backup in the repository: one archive, or the earlier one per partition plus a table.
enum Backup {
    Single(String),
    Split(String),
}

/// Which backup to restore: `name` (an archive NAME, or an earlier NAME-table), or the latest;
/// and every archive in the repository.
fn find_backup(repo: &str, name: Option<&str>) -> Result<(Backup, Vec<String>), Failure> {
    let output = run_borg(borg().args(["list", "--short", repo]), "list")?;
    let listing = String::from_utf8_lossy(&output.stdout);
    let names: Vec<&str> = listing.lines().collect();
    let backup = match name {
        Some(name) if names.contains(&name) => Ok(Backup::Single(name.to_owned())),
        Some(name) if names.contains(&format!("{name}-table").as_str()) => Ok(Backup::Split(name.to_owned())),
        Some(name) => Err(Failure::new(format!("{repo}: no backup {name} (no archive {name} nor {name}-table)"))),
        None => match names.last() {
            Some(last) => Ok(last
                .strip_suffix("-table")
                .map_or(Backup::Single(last.to_string()), |n| Backup::Split(n.to_owned()))),
            None => Err(Failure::new(format!("{repo}: no archive"))),
        },
    }?;
    Ok((backup, names.into_iter().map(str::to_owned).collect()))
}

/// The earlier layout's partition archives must all be there before anything is written.
fn split_backup_is_whole(pieces: &[Piece], archives: &[String], name: &str, repo: &str) -> Result<(), Failure> {
    let missing = pieces.iter().find_map(|piece| match &piece.from {
        PieceSource::Archive(archive) if !archives.contains(archive) => Some(archive),
        _ => None,
    });
    match missing {
        Some(archive) => Err(Failure::new(format!(
            "{repo}: backup {name} lacks its archive {archive}: it is not a whole backup; nothing was written"
        ))),
        None => Ok(()),
    }
}

/// A manifest's file name: plain names only (it becomes a borg path).
fn checked_file(value: &Value, bad: &dyn Fn(&str) -> Failure) -> Result<String, Failure> {
    let file = value["file"].as_str().unwrap_or("");
    let plain = !file.is_empty()
        && !file.starts_with('.')
        && file.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
    if plain { Ok(file.to_owned()) } else { Err(bad(&format!("file name {:?} is not a plain name", value["file"]))) }
}

/// Reads and checks a manifest: known format, pieces inside the disk and disjoint.
fn check_manifest(manifest: &Value, backup: &Backup, staging: &Path) -> Result<Disk, Failure> {
    let (name, format) = match backup {
        Backup::Single(name) => (name, view::MANIFEST_FORMAT),
        Backup::Split(name) => (name, SPLIT_MANIFEST_FORMAT),
    };
    let bad = |what: &str| Failure::new(format!("manifest of {name}: {what}"));
    if manifest["format"].as_str() != Some(format) {
        return Err(bad(&format!("format {} is not {format}", manifest["format"])));
    }
    let disk_size = manifest["disk_size"].as_u64().ok_or_else(|| bad("no disk_size"))?;
    let sector_size = manifest["sector_size"]
        .as_u64()
        .and_then(|s| u32::try_from(s).ok())
        .filter(|s| imgstream_ptable::SECTOR_SIZES.contains(s));
    let sector_size = sector_size.ok_or_else(|| bad("invalid sector_size"))?;
    let table = manifest["table"].as_str().and_then(TableKind::from_name);
    let table = table.ok_or_else(|| bad(&format!("table {} is not gpt, dos or none", manifest["table"])))?;
    let mut pieces = Vec::new();
    for p in manifest["partitions"].as_array().ok_or_else(|| bad("no partitions"))? {
        let (Some(index), Some(offset), Some(size)) = (p["index"].as_u64(), p["start"].as_u64(), p["size"].as_u64())
        else {
            return Err(bad(&format!("partition entry {p} lacks index, start or size")));
        };
        let from = match backup {
            Backup::Single(_) => PieceSource::File(checked_file(p, &bad)?),
            Backup::Split(name) => PieceSource::Archive(format!("{name}-part{index}")),
        };
        let filesystem = p["filesystem"].as_str().unwrap_or("unknown").to_owned();
        pieces.push(Piece { offset, size, from, partition: Some((index, filesystem)) });
    }
    for a in manifest["raw_areas"].as_array().ok_or_else(|| bad("no raw_areas"))? {
        let (Some(offset), Some(size)) = (a["offset"].as_u64(), a["size"].as_u64()) else {
            return Err(bad(&format!("raw area {a} lacks offset or size")));
        };
        let from = match backup {
            Backup::Single(_) => PieceSource::File(checked_file(a, &bad)?),
            Backup::Split(_) => PieceSource::Staged(staging.join("raw").join(format!("{offset:016}.bin"))),
        };
        pieces.push(Piece { offset, size, from, partition: None });
    }
    pieces.sort_by_key(|p| p.offset);
    let mut end = 0u64;
    for piece in &pieces {
        let piece_end = piece.offset.checked_add(piece.size).filter(|&e| e <= disk_size);
        match piece_end {
            Some(piece_end) if piece.offset >= end => end = piece_end,
            _ => {
                return Err(bad(&format!(
                    "piece at byte {} ({} bytes) overlaps another or leaves the disk",
                    piece.offset, piece.size
                )));
            }
        }
    }
    Ok(Disk { size: disk_size, sector_size, table, pieces })
}

pub(crate) fn restore(args: &RestoreDiskArgs) -> Result<(), Failure> {
    signals::catch()?;
    let started = Instant::now();
    let repo = absolute_repo(&args.repo);
    super::passphrase::find(&repo)?;
    let (backup, archives) = find_backup(&repo, args.name.as_deref())?;
    let (name, manifest_archive, manifest_files) = match &backup {
        Backup::Single(name) => (name.clone(), name.clone(), vec![MANIFEST]),
        Backup::Split(name) => (name.clone(), format!("{name}-table"), Vec::new()),
    };
    if args.name.is_none() {
        note(&format!("restoring the latest backup, {name}"));
    }
    let staging = TempDir::new("restore", true)?;
    let mut extract = borg();
    extract
        .arg("extract")
        .args(&args.borg_args)
        .arg(format!("{repo}::{manifest_archive}"))
        .args(manifest_files)
        .current_dir(&staging.path);
    run_borg(&mut extract, &format!("extract {}::{manifest_archive}", args.repo))?;
    signals::check(NOTHING_WRITTEN)?;
    let manifest_path = staging.path.join(MANIFEST);
    let text =
        fs::read_to_string(&manifest_path).map_err(|e| Failure::new(format!("{}: {e}", manifest_path.display())))?;
    let manifest: Value = serde_json::from_str(&text).map_err(|e| Failure::new(format!("manifest of {name}: {e}")))?;
    let disk = check_manifest(&manifest, &backup, &staging.path)?;

    // Every check of the archive and the target comes before anything is written.
    let files = match &backup {
        Backup::Single(name) => whole_backup_files(&repo, name, &args.repo, &disk.pieces)?,
        Backup::Split(name) => split_backup_is_whole(&disk.pieces, &archives, name, &args.repo).map(|()| Vec::new())?,
    };
    signals::check(NOTHING_WRITTEN)?;
    let existing = crate::target::existing(&args.target)?;
    let file_len = checked_file_len(&args.target, existing.as_ref(), &disk)?;
    let left_behind = if existing.is_some() {
        format!("{} holds an incomplete disk (what it held before is overwritten)", args.target.display())
    } else {
        format!("the incomplete {} was removed", args.target.display())
    };
    let partitions = crate::target::removed_unless_complete(&args.target, existing.is_some(), || {
        write_disk(&repo, &backup, args, &disk, &files, file_len).map_err(|failure| failure.followed_by(&left_behind))
    })?;
    note(&format!(
        "restored {name} ({}, {partitions} partition(s), {}) to {} in {:.2} s",
        disk.table.disk_words(),
        human(disk.size),
        args.target.display(),
        started.elapsed().as_secs_f64()
    ));
    Ok(())
}

/// The length a file target gets (`None` for a block device), after the checks that come
/// before anything is written: the target holds the whole disk, and a device's logical
/// sectors are the backup's (the table counts in sectors).
fn checked_file_len(target: &Path, existing: Option<&fs::Metadata>, disk: &Disk) -> Result<Option<u64>, Failure> {
    use std::os::unix::fs::FileTypeExt;
    let capacity = match existing {
        Some(metadata) if metadata.file_type().is_block_device() => {
            let device = Source::open(target)?;
            if device.kind() == SourceKind::BlockDevice && device.sector_size() != disk.sector_size {
                return Err(Failure::new(format!(
                    "{}: logical sector size {} differs from the backup's {}: the table's sector numbers would be wrong",
                    target.display(),
                    device.sector_size(),
                    disk.sector_size
                )));
            }
            device.size()
        }
        // A file keeps its length if it has one, else it gets the disk's.
        Some(metadata) if metadata.len() > 0 => metadata.len(),
        _ => disk.size,
    };
    if capacity < disk.size {
        return Err(Failure::new(format!(
            "{}: {capacity} bytes is smaller than the backed-up disk ({} bytes); nothing was written",
            target.display(),
            disk.size
        )));
    }
    let is_file = existing.is_none_or(fs::Metadata::is_file);
    Ok(is_file.then_some(capacity))
}

/// Writes every piece into the target, then fits the table to a larger target; returns the
/// number of partitions restored.
fn write_disk(
    repo: &str,
    backup: &Backup,
    args: &RestoreDiskArgs,
    disk: &Disk,
    files: &[(String, u64)],
    file_len: Option<u64>,
) -> Result<usize, Failure> {
    let target = Target::open(&args.target, OpenOptions { sparse: true, assume_zeroed: args.assume_zeroed, file_len })?;
    let capacity = target.capacity().unwrap_or(disk.size);
    let mut tally = Tally::new(&disk.pieces);
    match backup {
        Backup::Single(name) => restore_single(repo, name, args, &target, &disk.pieces, files, &mut tally)?,
        Backup::Split(_) => restore_split(repo, args, &target, &disk.pieces, &mut tally)?,
    }
    if target.kind() == TargetKind::File {
        target.finish(capacity)?;
    }
    if capacity > disk.size {
        fit_table_to_larger_target(&target, disk)?;
    }
    target.finish(capacity)?;
    if target.kind() == TargetKind::BlockDevice {
        // A loop device without partition scanning says EINVAL: nothing to re-read.
        if let Err(e) = imgstream_blockio::ioctl::reread_partition_table(target.file()) {
            if e.raw_os_error() != Some(nix::errno::Errno::EINVAL as i32) {
                warn(&format!("{}: the kernel did not re-read the partition table: {e}", args.target.display()));
            }
        }
    }
    Ok(tally.partitions)
}

/// The target is larger than the disk: a GPT's backup moves to the new end; any other disk
/// must not leave a stale GPT backup header from the target's earlier life in its last sector,
/// and no disk a stale md superblock (0.90, 1.0) where md looks for one, near the end.
fn fit_table_to_larger_target(target: &Target, disk: &Disk) -> Result<(), Failure> {
    let mut file: &fs::File = target.file();
    if disk.table == TableKind::Gpt {
        let written = Source::open(target.path())?;
        let layout = imgstream_ptable::read_layout(&written, Some(disk.sector_size))?;
        if let Some(moved) = imgstream_ptable::move_backup_to_end(&mut file, &layout)? {
            note(&format!(
                "the target is larger: backup GPT moved from LBA {} to the new last LBA {}",
                moved.old_backup_lba, moved.new_backup_lba
            ));
        }
    } else if let Some(lba) = imgstream_ptable::clear_stale_backup_header(&mut file, disk.sector_size, disk.size)
        .map_err(|e| Failure::new(format!("{}: {e}", target.path().display())))?
    {
        note(&format!(
            "the target's last sector (LBA {lba}, outside the restored disk) held a stale GPT backup header: zeroed"
        ));
    }
    // md finds 0.90 and 1.0 superblocks from the device's end, past the restored disk.
    let written = Source::open(target.path())?;
    let failed = |e: io::Error| Failure::new(format!("{}: {e}", target.path().display()));
    for at in imgstream_md::superblocks_at_end(&written, disk.size).map_err(failed)? {
        let sector = vec![0u8; disk.sector_size as usize];
        std::os::unix::fs::FileExt::write_all_at(file, &sector, at).map_err(failed)?;
        note(&format!(
            "the target held a stale md superblock at byte {at} (outside the restored disk, where md looks for one): its first sector zeroed"
        ));
    }
    Ok(())
}

/// The pieces of the earlier layout: raw areas from the staged table archive, partitions from
/// their own archives.
fn restore_split(
    repo: &str,
    args: &RestoreDiskArgs,
    target: &Target,
    pieces: &[Piece],
    tally: &mut Tally,
) -> Result<(), Failure> {
    for piece in pieces {
        signals::check(STOPPED)?;
        tally.start(piece, &args.repo);
        match &piece.from {
            PieceSource::Staged(path) => {
                let mut file = fs::File::open(path)
                    .map_err(|e| Failure::new(format!("{} (table archive): {e}", path.display())))?;
                write_piece(target, &mut file, piece, &NoProgress)?;
            }
            PieceSource::Archive(archive) => {
                extract_archive(repo, archive, &args.borg_args, target, piece, args.progress)?
            }
            PieceSource::File(file) => {
                return Err(Failure::new(format!("{file}: a file name in a manifest of the earlier layout")));
            }
        }
        tally.finish(piece);
    }
    Ok(())
}

/// Progress messages, one line per partition as it starts and as it is done.
struct Tally {
    partitions: usize,
    partition_bytes: u64,
    done: usize,
    restored: u64,
    started: Instant,
}

impl Tally {
    fn new(pieces: &[Piece]) -> Self {
        let partitions = pieces.iter().filter(|p| p.partition.is_some());
        Self {
            partitions: partitions.clone().count(),
            partition_bytes: partitions.map(|p| p.size).sum(),
            done: 0,
            restored: 0,
            started: Instant::now(),
        }
    }

    fn start(&mut self, piece: &Piece, repo: &str) {
        self.started = Instant::now();
        if let Some((index, filesystem)) = &piece.partition {
            self.done += 1;
            let from = match &piece.from {
                PieceSource::File(file) => file.clone(),
                PieceSource::Archive(archive) => format!("{repo}::{archive}"),
                PieceSource::Staged(path) => path.display().to_string(),
            };
            note(&format!(
                "partition {index} ({}/{}, {filesystem}, {}) <- {from}",
                self.done,
                self.partitions,
                human(piece.size)
            ));
        }
    }

    fn finish(&mut self, piece: &Piece) {
        if let Some((index, _)) = &piece.partition {
            self.restored += piece.size;
            note(&format!(
                "partition {index} done in {:.2} s; {} of {} partition bytes restored ({:.0}%)",
                self.started.elapsed().as_secs_f64(),
                human(self.restored),
                human(self.partition_bytes),
                crate::size::percent(self.restored, self.partition_bytes)
            ));
        }
    }
}

/// The files of archive `name` in archive order with their sizes (`borg list`): the order in
/// which `borg extract --stdout` writes them.
fn archive_files(repo: &str, name: &str) -> Result<Vec<(String, u64)>, Failure> {
    let listing = run_borg(
        borg().args(["list", "--format", "{type} {size} {path}{NL}"]).arg(format!("{repo}::{name}")),
        &format!("list {name}"),
    )?;
    let mut files = Vec::new();
    for line in String::from_utf8_lossy(&listing.stdout).lines() {
        let mut fields = line.splitn(3, ' ');
        let (Some(kind), Some(size), Some(path)) = (fields.next(), fields.next(), fields.next()) else {
            return Err(Failure::new(format!("borg list {name}: unexpected line {line:?}")));
        };
        let size = size.parse().map_err(|_| Failure::new(format!("borg list {name}: unexpected line {line:?}")))?;
        if kind == "-" {
            files.push((path.to_owned(), size));
        }
    }
    Ok(files)
}

/// The files of archive `name` (see [`archive_files`]), checked to hold each piece of the
/// manifest once at its size: a backup made with `--exclude`, or cut short, is refused.
fn whole_backup_files(repo: &str, name: &str, repo_arg: &str, pieces: &[Piece]) -> Result<Vec<(String, u64)>, Failure> {
    let files = archive_files(repo, name)?;
    for piece in pieces {
        if let PieceSource::File(file) = &piece.from {
            if files.iter().filter(|(path, size)| path == file && *size == piece.size).count() != 1 {
                return Err(Failure::new(format!(
                    "{repo_arg}::{name}: no single file {file} of {} bytes: the archive is not a whole backup; nothing was written",
                    piece.size
                )));
            }
        }
    }
    Ok(files)
}

/// The single-archive layout in one `borg extract --stdout REPO::NAME`, which writes every
/// file one after the other: each piece goes to its place, other files (the manifest) are
/// skipped. One borg run instead of one per piece (and one passphrase prompt).
fn restore_single(
    repo: &str,
    name: &str,
    args: &RestoreDiskArgs,
    target: &Target,
    pieces: &[Piece],
    files: &[(String, u64)],
    tally: &mut Tally,
) -> Result<(), Failure> {
    let piece_of = |path: &str| pieces.iter().find(|p| matches!(&p.from, PieceSource::File(f) if f == path));
    let (child, mut stdout) = spawn_extract(repo, name, &args.borg_args)?;
    let copied = (|| -> Result<(), Failure> {
        for (path, size) in files {
            signals::check(STOPPED)?;
            let mut file = (&mut stdout).take(*size);
            let Some(piece) = piece_of(path) else {
                let skipped = io::copy(&mut file, &mut io::sink())
                    .map_err(|e| Failure::new(format!("{}::{name} {path}: {e}", args.repo)))?;
                if skipped != *size {
                    return Err(Failure::new(format!("{}::{name} {path}: the stream ended early", args.repo)));
                }
                continue;
            };
            tally.start(piece, &args.repo);
            let mode = if piece.partition.is_some() { args.progress } else { ProgressMode::Never };
            let progress = progress::reporter(mode, Some(piece.size));
            write_piece(target, &mut file, piece, progress.as_ref())
                .map_err(|e| Failure::new(format!("{}::{name} {path}: {e}", args.repo)))?;
            tally.finish(piece);
        }
        Ok(())
    })();
    drop(stdout);
    finish_extract(child, copied, &format!("{}::{name}", args.repo))
}

/// The stream of one piece, exactly its size, written at its place in the disk.
fn write_piece(
    target: &Target,
    stream: &mut (dyn Read + Send),
    piece: &Piece,
    progress: &dyn imgstream_stream::Progress,
) -> Result<imgstream_restore::Report, imgstream_restore::Error> {
    let block_size = imgstream_restore::DEFAULT_BLOCK_SIZE;
    imgstream_restore::write_stream(target, stream, piece.offset, Some(piece.size), block_size, progress)
}

/// `borg extract --stdout REPO::archive` (a partition of the earlier layout) into its place.
fn extract_archive(
    repo: &str,
    archive: &str,
    extra: &[OsString],
    target: &Target,
    piece: &Piece,
    mode: ProgressMode,
) -> Result<(), Failure> {
    let (child, mut stdout) = spawn_extract(repo, archive, extra)?;
    let progress = progress::reporter(mode, Some(piece.size));
    let written = write_piece(target, &mut stdout, piece, progress.as_ref());
    drop(progress);
    drop(stdout);
    let written = written.map(|_| ()).map_err(|e| Failure::new(format!("{repo}::{archive}: {e}")));
    finish_extract(child, written, &format!("{repo}::{archive}"))
}

/// Starts `borg extract --stdout REPO::archive`, stopped by SIGINT/SIGTERM; returns its stdout.
fn spawn_extract(
    repo: &str,
    archive: &str,
    extra: &[OsString],
) -> Result<(std::process::Child, std::process::ChildStdout), Failure> {
    let mut child = borg()
        .arg("extract")
        .arg("--stdout")
        .args(extra)
        .arg(format!("{repo}::{archive}"))
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|e| Failure::new(format!("cannot run borg extract: {e}")))?;
    signals::watch_child(child.id());
    let stdout = child.stdout.take().expect("OK to unwrap: stdout was piped");
    Ok((child, stdout))
}

/// Waits for `borg extract` (stopped first if writing failed); an interruption, the writing's
/// failure or borg's, in that order, fails the restore.
fn finish_extract(mut child: std::process::Child, written: Result<(), Failure>, what: &str) -> Result<(), Failure> {
    if written.is_err() {
        signals::stop_child();
    }
    let status = child.wait();
    signals::forget_child();
    signals::check(STOPPED)?;
    written?;
    let status = status.map_err(|e| Failure::new(format!("borg extract {what}: {e}")))?;
    if !status.success() {
        return Err(Failure::new(format!("borg extract {what} failed ({status})")));
    }
    Ok(())
}
