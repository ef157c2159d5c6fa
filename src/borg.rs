//! `backup-disk` and `restore-disk`: a whole disk in a borg repository, one archive per
//! partition plus one for the partition table, the raw areas and a manifest.
//!
//! Layout of a backup named NAME:
//! - `NAME-partN`: partition N as a raw image (free space zeroed), stored as `partN.img`;
//!   created with `borg create --content-from-command ... -- imgstream disk --partition N`, so
//!   that a failing read makes the command fail and borg commit nothing;
//! - `NAME-table`, created last: `manifest.json` (disk size, sector size, table type, each
//!   partition's index, start, size, type, filesystem, used bytes, archive) and `raw/<offset>.bin`,
//!   one file per area outside the partitions (MBR/GPT, boot loader gap, EBRs, backup GPT),
//!   written completely before borg runs.
//!
//! If any step fails, every archive this run created (and any checkpoint borg left) is deleted
//! again: a failed backup leaves no new archive.

use crate::cli::EngineArgs;
use crate::disk::{self, DiskPlan};
use crate::progress::{self, ProgressMode};
use crate::size::human;
use crate::{Failure, warn};
use clap::Args;
use imgstream_blockio::{Cursor, ReadAt, Source, SourceKind, Window};
use imgstream_restore::{OpenOptions, Target, TargetKind};
use imgstream_stream::NoProgress;
use serde_json::{Value, json};
use std::ffi::OsString;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

/// The manifest format this version writes and reads.
const MANIFEST_FORMAT: &str = "imgstream-disk-1";
/// borg's advice for block devices and disk images; zero blocks then dedup to nothing.
const DEFAULT_CHUNKER: &str = "fixed,4194304";

/// How a backup is laid out in the repository, and how to restore it without imgstream's help.
const LAYOUT_HELP: &str = "\
Archives of a backup named NAME (default: SOURCE's file name and the UTC time):
  NAME-partN   partition N as a raw image (free space zeroed), made with
               borg create --content-from-command ... -- imgstream disk --partition N SOURCE
  NAME-table   manifest.json (disk size, sector size, table type, every partition's index,
               start, size, type, filesystem, used bytes, archive) and raw/<offset>.bin: every
               area outside the partitions (MBR/GPT, boot loader gap, EBRs, backup GPT)
A failing read fails the command, borg commits nothing, and the archives this run already
made are deleted again: a failed backup-disk leaves no new archive. Default borg options:
--chunker-params fixed,4194304 (add yours after --).

Restore the whole disk:   imgstream restore-disk --repo REPO --name NAME /dev/sdX
Restore one partition:    borg extract --stdout REPO::NAME-part2 | imgstream restore --sparse /dev/sdX2
With plain borg and dd:   mkdir t && cd t && borg extract REPO::NAME-table
                          for f in raw/*.bin: dd if=$f of=/dev/sdX bs=1M seek=<offset> oflag=seek_bytes conv=notrunc
                            (<offset> is the file name without leading zeros)
                          for each partition in manifest.json:
                            borg extract --stdout REPO::<archive> | dd of=/dev/sdX bs=4M seek=<start> oflag=seek_bytes conv=notrunc
                          (dd writes every zero; on a larger GPT disk, run `sgdisk -e` or `sfdisk --relocate
                          gpt-bak-std` afterwards to move the backup GPT to the end)";

/// `imgstream backup-disk`.
#[derive(Debug, Args)]
#[command(after_help = LAYOUT_HELP)]
pub(crate) struct BackupDiskArgs {
    /// Disk to back up: block device or image file (never written).
    pub(crate) source: PathBuf,
    /// The borg repository (must exist: `borg init`).
    #[arg(long)]
    pub(crate) repo: String,
    /// Archive name prefix [default: the source's file name and the UTC time].
    #[arg(long)]
    pub(crate) name: Option<String>,
    /// How to treat each partition's filesystem.
    #[command(flatten)]
    pub(crate) policy: disk::DiskPolicyArgs,
    /// How to stream.
    #[command(flatten)]
    pub(crate) engine: EngineArgs,
    /// Extra arguments for every `borg create` (e.g. `-- --compression zstd,3`).
    #[arg(last = true, value_name = "BORG ARGS")]
    pub(crate) borg_args: Vec<OsString>,
}

/// `imgstream restore-disk`.
#[derive(Debug, Args)]
#[command(after_help = LAYOUT_HELP)]
pub(crate) struct RestoreDiskArgs {
    /// The borg repository.
    #[arg(long)]
    pub(crate) repo: String,
    /// The backup's name (the prefix of its archives) [default: the latest backup-disk in REPO].
    #[arg(long)]
    pub(crate) name: Option<String>,
    /// Disk to write: a block device not in use, or a file (created with the disk's size, or
    /// an existing file at least that large, truncated first).
    pub(crate) target: PathBuf,
    /// Block device only: it already reads as zeros, so zero runs are skipped.
    #[arg(long)]
    pub(crate) assume_zeroed: bool,
    /// Progress on stderr.
    #[arg(long, value_enum, default_value_t)]
    pub(crate) progress: ProgressMode,
    /// Extra arguments for every `borg extract`.
    #[arg(last = true, value_name = "BORG ARGS")]
    pub(crate) borg_args: Vec<OsString>,
}

/// The borg program: `$IMGSTREAM_BORG` or `borg`.
fn borg() -> Command {
    let mut command = Command::new(std::env::var_os("IMGSTREAM_BORG").unwrap_or_else(|| "borg".into()));
    command.stdin(Stdio::null());
    command
}

/// Runs a borg command; fails with its exit status and (if captured) stderr.
fn run_borg(command: &mut Command, what: &str) -> Result<std::process::Output, Failure> {
    let output = command.output().map_err(|e| Failure::new(format!("cannot run borg ({what}): {e}")))?;
    if output.status.success() {
        Ok(output)
    } else {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let detail = stderr.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or("").trim();
        Err(Failure::new(format!(
            "borg {what} failed ({}){}",
            output.status,
            if detail.is_empty() { String::new() } else { format!(": {detail}") }
        )))
    }
}

/// The repository as borg should see it from any working directory: a relative local path
/// is made absolute (the table archive is created from inside a staging directory); URLs and
/// `host:path` forms are left alone.
fn absolute_repo(repo: &str) -> String {
    let local = !repo.contains("://") && !repo.contains(':');
    match std::env::current_dir() {
        Ok(cwd) if local && Path::new(repo).is_relative() => cwd.join(repo).display().to_string(),
        _ => repo.to_owned(),
    }
}

/// A directory removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new(purpose: &str) -> Result<Self, Failure> {
        let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.subsec_nanos());
        let path = std::env::temp_dir().join(format!("imgstream-{purpose}-{}-{nanos}", std::process::id()));
        fs::create_dir(&path).map_err(|e| Failure::new(format!("{}: {e}", path.display())))?;
        Ok(Self(path))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// "2026-11-25T05:58:01" (UTC), for default archive names.
fn utc_timestamp() -> String {
    let secs = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (H. Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}", rem / 3600, rem % 3600 / 60, rem % 60)
}

fn raw_file(dir: &Path, offset: u64) -> PathBuf {
    dir.join("raw").join(format!("{offset:016}.bin"))
}

fn part_archive(name: &str, index: u64) -> String {
    format!("{name}-part{index}")
}

fn table_archive(name: &str) -> String {
    format!("{name}-table")
}

pub(crate) fn backup(args: &BackupDiskArgs) -> Result<(), Failure> {
    let source = Source::open(&args.source)?;
    // Everything is examined before any archive exists: a refused partition fails the run here.
    let reader = &source;
    let plan = disk::plan(&source, &reader, &args.policy, None, false)?;
    for warning in &plan.layout.warnings {
        warn(warning);
    }
    let name = match &args.name {
        Some(name) => name.clone(),
        None => {
            let base = args.source.file_name().map_or("disk".into(), |n| n.to_string_lossy().into_owned());
            format!("{base}-{}", utc_timestamp())
        }
    };
    let staging = TempDir::new("backup")?;
    write_table_files(&reader, &plan, &args.source, &name, &staging.0)?;

    let repo = absolute_repo(&args.repo);
    let mut run = BorgRun { repo: &repo, attempted: Vec::new(), created: Vec::new() };
    let result = (|| -> Result<(), Failure> {
        let started = Instant::now();
        let count = plan.parts.len();
        for (number, part) in plan.parts.iter().enumerate() {
            let index = u64::from(part.partition.index);
            let archive = part_archive(&name, index);
            eprintln!(
                "imgstream: partition {index} ({}/{count}, {}, {}, {} used) -> {}::{archive}",
                number + 1,
                part.volume.filesystem(),
                human(part.partition.len),
                human(part.volume.used.total()),
                args.repo
            );
            let mut command = borg();
            command.arg("create").arg("--content-from-command").arg("--stdin-name").arg(format!("part{index}.img"));
            chunker_and_extra(&mut command, &args.borg_args);
            command.arg(format!("{repo}::{archive}")).arg("--").arg(std::env::current_exe()?);
            command.args(["disk", "--partition", &index.to_string()]).arg(&args.source).args(child_flags(args));
            run.create(&mut command, &archive)?;
        }
        let archive = table_archive(&name);
        eprintln!("imgstream: partition table, raw areas and manifest -> {}::{archive}", args.repo);
        let mut command = borg();
        command.arg("create");
        chunker_and_extra(&mut command, &args.borg_args);
        command.arg(format!("{repo}::{archive}")).args(["manifest.json", "raw"]).current_dir(&staging.0);
        run.create(&mut command, &archive)?;
        let total = plan.layout.size;
        let used = plan.used.total();
        eprintln!(
            "imgstream: backed up {} ({}, {} partition(s)) as {name} in {:.2} s: {} used, {} elided",
            human(total),
            plan.layout.table.disk_words(),
            count,
            started.elapsed().as_secs_f64(),
            human(used),
            human(total - used)
        );
        Ok(())
    })();
    if let Err(failure) = result {
        let removed = run.remove_created();
        return Err(Failure::new(format!("{failure}; {removed}")));
    }
    Ok(())
}

/// Adds the default chunker (unless the user chose one) and the user's borg arguments.
fn chunker_and_extra(command: &mut Command, extra: &[OsString]) {
    if !extra.iter().any(|a| a.to_string_lossy().starts_with("--chunker-params")) {
        command.args(["--chunker-params", DEFAULT_CHUNKER]);
    }
    command.args(extra);
}

/// The flags the child `imgstream disk --partition N` needs to stream what we examined.
fn child_flags(args: &BackupDiskArgs) -> Vec<String> {
    let mut flags = args.policy.flags();
    let options = args.engine.options();
    flags.extend([
        "--threads".into(),
        options.threads.to_string(),
        "--block-size".into(),
        options.block_size.to_string(),
    ]);
    let progress = match args.engine.progress {
        ProgressMode::Auto => "auto",
        ProgressMode::Always => "always",
        ProgressMode::Never => "never",
    };
    flags.extend(["--progress".into(), progress.into()]);
    flags
}

/// The archives one backup run makes, so that a failure can remove them all.
struct BorgRun<'a> {
    repo: &'a str,
    attempted: Vec<String>,
    created: Vec<String>,
}

impl BorgRun<'_> {
    fn create(&mut self, command: &mut Command, archive: &str) -> Result<(), Failure> {
        self.attempted.push(archive.to_owned());
        // borg's stderr (and the child imgstream's, which borg passes on) goes to ours.
        let status = command.status().map_err(|e| Failure::new(format!("cannot run borg: {e}")))?;
        if !status.success() {
            return Err(Failure::new(format!("borg create {}::{archive} failed ({status})", self.repo)));
        }
        self.created.push(archive.to_owned());
        Ok(())
    }

    /// Deletes what this run created, and checkpoints of what it attempted. Returns a phrase
    /// for the error message.
    fn remove_created(&self) -> String {
        let mut doomed = self.created.clone();
        // borg 1.2 hides checkpoints unless asked; borg 1.1 lists them and lacks the option.
        let list = |extra: &[&str]| {
            borg().args(["list", "--short"]).args(extra).arg(self.repo).stderr(Stdio::null()).output().ok()
        };
        let listed = list(&["--consider-checkpoints"]).filter(|o| o.status.success()).or_else(|| list(&[]));
        if let Some(output) = listed {
            for line in String::from_utf8_lossy(&output.stdout).lines() {
                let is_checkpoint = self.attempted.iter().any(|a| {
                    line.strip_prefix(a.as_str())
                        .is_some_and(|rest| rest == ".checkpoint" || rest.starts_with(".checkpoint."))
                });
                if is_checkpoint {
                    doomed.push(line.to_owned());
                }
            }
        }
        if doomed.is_empty() {
            return "no archive was created".into();
        }
        let mut failed = Vec::new();
        for archive in &doomed {
            let deleted = borg()
                .arg("delete")
                .arg(format!("{}::{archive}", self.repo))
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
            if !deleted.is_ok_and(|s| s.success()) {
                failed.push(archive.clone());
            }
        }
        if failed.is_empty() {
            format!("removed the {} archive(s) this run had created ({})", doomed.len(), doomed.join(", "))
        } else {
            format!(
                "could not remove archive(s) {} of this failed run: delete them with borg delete",
                failed.join(", ")
            )
        }
    }
}

/// Writes `manifest.json` and `raw/<offset>.bin` (sparse) into `dir`.
fn write_table_files(source: &dyn ReadAt, plan: &DiskPlan, path: &Path, name: &str, dir: &Path) -> Result<(), Failure> {
    fs::create_dir(dir.join("raw")).map_err(|e| Failure::new(format!("{}: {e}", dir.display())))?;
    let mut raw_areas = Vec::new();
    for area in plan.layout.raw.iter() {
        let file = raw_file(dir, area.start);
        let target = Target::open(&file, OpenOptions { sparse: true, ..OpenOptions::default() })?;
        let window = Window::new(source, area.start, area.end - area.start)?;
        let copied = imgstream_restore::write_stream(
            &target,
            &mut Cursor::new(&window),
            0,
            Some(area.end - area.start),
            imgstream_restore::DEFAULT_BLOCK_SIZE,
            &NoProgress,
        )
        .map_err(|e| Failure::new(format!("{}: raw area at byte {}: {e}", path.display(), area.start)))?;
        target.finish(copied.total)?;
        raw_areas.push(json!({ "offset": area.start, "size": area.end - area.start, "file": format!("raw/{:016}.bin", area.start) }));
    }
    let partitions: Vec<Value> = plan
        .parts
        .iter()
        .map(|p| {
            json!({
                "index": p.partition.index,
                "start": p.partition.start,
                "size": p.partition.len,
                "type": p.partition.type_id,
                "name": p.partition.name,
                "uuid": p.partition.uuid,
                "bootable": p.partition.bootable,
                "filesystem": p.volume.filesystem(),
                "elision": disk::elision_name(&p.volume.elision),
                "used": p.volume.used.total(),
                "archive": part_archive(name, u64::from(p.partition.index)),
            })
        })
        .collect();
    let manifest = json!({
        "format": MANIFEST_FORMAT,
        "name": name,
        "source": path.display().to_string(),
        "disk_size": plan.layout.size,
        "sector_size": plan.layout.sector_size,
        "table": plan.layout.table.name(),
        "disk_id": plan.layout.disk_id,
        "partitions": partitions,
        "raw_areas": raw_areas,
        "restore": "imgstream restore-disk --repo REPO --name NAME TARGET; or by hand: dd each raw/<offset>.bin to byte <offset> of the disk, then `borg extract --stdout REPO::<archive> | imgstream restore --sparse --size <size>` (or dd seek=<start> oflag=seek_bytes) for each partition",
    });
    let text = serde_json::to_string_pretty(&manifest).expect("OK to unwrap: a Value always serialises") + "\n";
    fs::write(dir.join("manifest.json"), text).map_err(|e| Failure::new(format!("{}: {e}", dir.display())))
}

/// A partition or raw area to restore, from a checked manifest.
struct Piece {
    offset: u64,
    size: u64,
    /// Some(archive) for a partition; None for a raw area file.
    archive: Option<(u64, String, String)>,
}

/// Reads and checks a manifest: known format, pieces inside the disk and disjoint.
fn check_manifest(manifest: &Value, name: &str) -> Result<(u64, u32, String, Vec<Piece>), Failure> {
    let bad = |what: &str| Failure::new(format!("manifest of {name}: {what}"));
    if manifest["format"].as_str() != Some(MANIFEST_FORMAT) {
        return Err(bad(&format!("format {} is not {MANIFEST_FORMAT}", manifest["format"])));
    }
    let disk_size = manifest["disk_size"].as_u64().ok_or_else(|| bad("no disk_size"))?;
    let sector_size = manifest["sector_size"]
        .as_u64()
        .and_then(|s| u32::try_from(s).ok())
        .filter(|s| imgstream_ptable::SECTOR_SIZES.contains(s));
    let sector_size = sector_size.ok_or_else(|| bad("invalid sector_size"))?;
    let table = manifest["table"].as_str().unwrap_or("").to_owned();
    let mut pieces = Vec::new();
    for p in manifest["partitions"].as_array().ok_or_else(|| bad("no partitions"))? {
        let (Some(index), Some(offset), Some(size)) = (p["index"].as_u64(), p["start"].as_u64(), p["size"].as_u64())
        else {
            return Err(bad(&format!("partition entry {p} lacks index, start or size")));
        };
        let filesystem = p["filesystem"].as_str().unwrap_or("unknown").to_owned();
        pieces.push(Piece { offset, size, archive: Some((index, part_archive(name, index), filesystem)) });
    }
    for a in manifest["raw_areas"].as_array().ok_or_else(|| bad("no raw_areas"))? {
        let (Some(offset), Some(size)) = (a["offset"].as_u64(), a["size"].as_u64()) else {
            return Err(bad(&format!("raw area {a} lacks offset or size")));
        };
        pieces.push(Piece { offset, size, archive: None });
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
    Ok((disk_size, sector_size, table, pieces))
}

/// The latest `NAME-table` archive in the repository.
fn latest_backup(repo: &str) -> Result<String, Failure> {
    let output = run_borg(borg().args(["list", "--short", "--glob-archives", "*-table", repo]), "list")?;
    let listing = String::from_utf8_lossy(&output.stdout);
    let latest = listing.lines().rev().find_map(|l| l.strip_suffix("-table"));
    latest.map(str::to_owned).ok_or_else(|| Failure::new(format!("{repo}: no backup-disk archive (*-table) found")))
}

pub(crate) fn restore(args: &RestoreDiskArgs) -> Result<(), Failure> {
    let started = Instant::now();
    let name = match &args.name {
        Some(name) => name.clone(),
        None => {
            let name = latest_backup(&args.repo)?;
            eprintln!("imgstream: restoring the latest backup, {name}");
            name
        }
    };
    let staging = TempDir::new("restore")?;
    let mut extract = borg();
    let repo = absolute_repo(&args.repo);
    extract
        .arg("extract")
        .args(&args.borg_args)
        .arg(format!("{repo}::{}", table_archive(&name)))
        .current_dir(&staging.0);
    run_borg(&mut extract, &format!("extract {}::{}", args.repo, table_archive(&name)))?;
    let manifest_path = staging.0.join("manifest.json");
    let text =
        fs::read_to_string(&manifest_path).map_err(|e| Failure::new(format!("{}: {e}", manifest_path.display())))?;
    let manifest: Value = serde_json::from_str(&text).map_err(|e| Failure::new(format!("manifest of {name}: {e}")))?;
    let (disk_size, sector_size, table, pieces) = check_manifest(&manifest, &name)?;

    // Size and sector checks come before anything is written.
    let existing = fs::metadata(&args.target).ok();
    let is_device = existing.as_ref().is_some_and(|m| {
        use std::os::unix::fs::FileTypeExt;
        m.file_type().is_block_device()
    });
    let file_len = if is_device {
        let device = Source::open(&args.target)?;
        if device.kind() == SourceKind::BlockDevice && device.sector_size() != sector_size {
            return Err(Failure::new(format!(
                "{}: logical sector size {} differs from the backup's {sector_size}: the table's sector numbers would be wrong",
                args.target.display(),
                device.sector_size()
            )));
        }
        None
    } else {
        match existing.map(|m| m.len()).filter(|&len| len > 0) {
            Some(len) => Some(len),
            None => Some(disk_size),
        }
    };
    let capacity = match file_len {
        Some(len) => len,
        None => Source::open(&args.target)?.size(),
    };
    if capacity < disk_size {
        return Err(Failure::new(format!(
            "{}: {capacity} bytes is smaller than the backed-up disk ({disk_size} bytes); nothing was written",
            args.target.display()
        )));
    }
    let target = Target::open(&args.target, OpenOptions { sparse: true, assume_zeroed: args.assume_zeroed, file_len })?;
    let partitions = pieces.iter().filter(|p| p.archive.is_some()).count();
    let partition_bytes: u64 = pieces.iter().filter(|p| p.archive.is_some()).map(|p| p.size).sum();
    let mut done = 0usize;
    let mut restored = 0u64;
    for piece in &pieces {
        match &piece.archive {
            None => {
                let path = raw_file(&staging.0, piece.offset);
                let mut file = fs::File::open(&path)
                    .map_err(|e| Failure::new(format!("{} (table archive): {e}", path.display())))?;
                imgstream_restore::write_stream(
                    &target,
                    &mut file,
                    piece.offset,
                    Some(piece.size),
                    imgstream_restore::DEFAULT_BLOCK_SIZE,
                    &NoProgress,
                )?;
            }
            Some((index, archive, filesystem)) => {
                done += 1;
                eprintln!(
                    "imgstream: partition {index} ({done}/{partitions}, {filesystem}, {}) <- {}::{archive}",
                    human(piece.size),
                    args.repo
                );
                let part_started = Instant::now();
                restore_partition(&repo, archive, &args.borg_args, &target, piece, args.progress)?;
                restored += piece.size;
                let seconds = part_started.elapsed().as_secs_f64();
                eprintln!(
                    "imgstream: partition {index} done in {seconds:.2} s; {} of {} partition bytes restored ({:.0}%)",
                    human(restored),
                    human(partition_bytes),
                    crate::size::percent(restored, partition_bytes)
                );
            }
        }
    }
    if target.kind() == TargetKind::File {
        target.finish(capacity)?;
    }
    if table == "gpt" && capacity > disk_size {
        let written = Source::open(&args.target)?;
        let layout = imgstream_ptable::read_layout(&written, Some(sector_size))?;
        let mut file: &fs::File = target.file();
        if let Some(moved) = imgstream_ptable::move_backup_to_end(&mut file, &layout)? {
            eprintln!(
                "imgstream: the target is larger: backup GPT moved from LBA {} to the new last LBA {}",
                moved.old_backup_lba, moved.new_backup_lba
            );
        }
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
    eprintln!(
        "imgstream: restored {name} ({} disk, {} partition(s), {}) to {} in {:.2} s",
        table,
        partitions,
        human(disk_size),
        args.target.display(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// `borg extract --stdout` of one partition archive into its place on the target.
fn restore_partition(
    repo: &str,
    archive: &str,
    extra: &[OsString],
    target: &Target,
    piece: &Piece,
    mode: ProgressMode,
) -> Result<(), Failure> {
    let mut child = borg()
        .arg("extract")
        .arg("--stdout")
        .args(extra)
        .arg(format!("{repo}::{archive}"))
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|e| Failure::new(format!("cannot run borg extract: {e}")))?;
    let mut stdout = child.stdout.take().expect("OK to unwrap: stdout was piped");
    let progress = progress::reporter(mode, Some(piece.size));
    let written = imgstream_restore::write_stream(
        target,
        &mut stdout,
        piece.offset,
        Some(piece.size),
        imgstream_restore::DEFAULT_BLOCK_SIZE,
        progress.as_ref(),
    );
    drop(progress);
    drop(stdout);
    if written.is_err() {
        let _ = child.kill();
    }
    let status = child.wait().map_err(|e| Failure::new(format!("borg extract {repo}::{archive}: {e}")))?;
    written.map_err(|e| Failure::new(format!("{repo}::{archive}: {e}")))?;
    if !status.success() {
        return Err(Failure::new(format!(
            "borg extract {repo}::{archive} failed ({status}): the partition is incomplete"
        )));
    }
    Ok(())
}
