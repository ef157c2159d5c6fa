//! `backup-disk` and `restore-disk`: a whole disk as one borg archive, and back.
//!
//! `backup-disk` shows the disk as a directory of sparse files ([`crate::view`]) and archives
//! that directory as one archive NAME: through a FUSE mount and `borg create --sparse` (free
//! space is a hole that borg never reads), or, without FUSE, as a tar stream into `borg
//! import-tar` (free space travels as zeros). A backup is complete or absent: a read error
//! (borg would only warn and commit), a failing borg, SIGINT or SIGTERM leave no archive, no
//! checkpoint, no mount and no staging directory.
//!
//! `restore-disk` writes the manifest's raw areas and partitions back, each with `borg extract
//! --stdout`, and moves a GPT's backup table to the end of a larger disk. It also restores the
//! layout of earlier versions: one archive per partition (`NAME-partN`) plus `NAME-table`
//! holding the manifest and `raw/<offset>.bin`.

use crate::cli::EngineArgs;
use crate::disk::DiskPolicyArgs;
use crate::progress::{self, ProgressMode};
use crate::size::human;
use crate::view::{self, MANIFEST};
use crate::{Failure, note, signals, warn};
use clap::Args;
use imgstream_blockio::{ReadAt, Source, SourceKind};
use imgstream_restore::{OpenOptions, Target, TargetKind};
use imgstream_stream::{NoProgress, PipeSink};
use imgstream_view::View;
use nix::fcntl::{FcntlArg, fcntl};
use serde_json::Value;
use std::ffi::OsString;
use std::fs;
use std::io::{self, Read};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

/// The manifest format of the earlier multi-archive layout (restore only).
const SPLIT_MANIFEST_FORMAT: &str = "imgstream-disk-1";
/// borg's advice for block devices and disk images; zero blocks then dedup to nothing.
const DEFAULT_CHUNKER: &str = "fixed,4194304";
/// What an interrupted restore leaves.
const INCOMPLETE: &str = "the target holds an incomplete disk";
/// A pipe this large wakes borg less often.
const PIPE_SIZE: i32 = 1 << 20;

/// How a backup is laid out in the repository, and how to restore it without imgstream's help.
const LAYOUT_HELP: &str = "\
A backup named NAME (default: SOURCE's file name and the UTC time) is one archive NAME:
  manifest.json        disk size, sector size, table type, every partition's index, start, size,
                       type, filesystem, used bytes, elision, file; every raw area's offset, size, file
  raw-<offset>.bin     each area outside the partitions (MBR/GPT, boot loader gap, EBRs, backup GPT)
  partN.img            partition N as a raw image, free space zeroed (unpartitioned source: part1.img)
It is made with `borg create --read-special --sparse --files-cache=disabled --chunker-params
fixed,4194304 REPO::NAME FILES...` inside a read-only FUSE view of the disk, so borg never reads
free space; without /dev/fuse (or with --no-fuse) with `borg import-tar REPO::NAME -` from a tar stream
(same files). Add borg options after --. A read error, a failing borg, SIGINT or SIGTERM leave
no archive, no checkpoint and no mount. One backup is one archive, so
  borg prune --keep-daily 7 --glob-archives 'laptop-*' REPO
keeps whole backups. Encrypted repository: set BORG_PASSPHRASE or BORG_PASSCOMMAND (a backup
asks once).

Restore the whole disk:   imgstream restore-disk --repo REPO --name NAME /dev/sdX
Restore one partition:    borg extract --stdout REPO::NAME part2.img | imgstream restore --sparse /dev/sdX2
With plain borg and dd:   borg extract REPO::NAME manifest.json   (offsets and starts are in it)
                          for each raw area and partition FILE at byte OFFSET:
                            borg extract --stdout REPO::NAME FILE | dd of=/dev/sdX bs=4M seek=OFFSET oflag=seek_bytes conv=notrunc
                          (dd writes every zero; on a larger GPT disk, run `sgdisk -e` afterwards
                          to move the backup GPT to the end)
restore-disk also restores backups of earlier versions (archives NAME-partN and NAME-table).";

/// `imgstream backup-disk`.
#[derive(Debug, Args)]
#[command(after_help = LAYOUT_HELP)]
pub(crate) struct BackupDiskArgs {
    /// Disk to back up: block device or image file (never written).
    pub(crate) source: PathBuf,
    /// The borg repository (must exist: `borg init`).
    #[arg(long)]
    pub(crate) repo: String,
    /// Archive name [default: the source's file name and the UTC time].
    #[arg(long)]
    pub(crate) name: Option<String>,
    /// Do not mount a FUSE view: stream a tar archive into `borg import-tar` (free space then
    /// travels as zeros). The default without /dev/fuse.
    #[arg(long)]
    pub(crate) no_fuse: bool,
    /// How to treat each partition's filesystem.
    #[command(flatten)]
    pub(crate) policy: DiskPolicyArgs,
    /// How to stream (the tar stream of --no-fuse).
    #[command(flatten)]
    pub(crate) engine: EngineArgs,
    /// Extra arguments for `borg create` / `borg import-tar` (e.g. `-- --compression zstd,3`).
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
    /// The backup's name [default: the latest archive in REPO].
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

/// Runs borg with its output on ours; SIGINT/SIGTERM stop it.
fn run_watched(command: &mut Command) -> Result<ExitStatus, Failure> {
    let mut child = command.spawn().map_err(|e| Failure::new(format!("cannot run borg: {e}")))?;
    signals::watch_child(child.id());
    let status = child.wait();
    signals::forget_child();
    status.map_err(|e| Failure::new(format!("borg: {e}")))
}

/// The repository as borg should see it from any working directory: a relative local path
/// is made absolute (borg runs inside the mount or a staging directory); URLs and
/// `host:path` forms are left alone.
fn absolute_repo(repo: &str) -> String {
    let local = !repo.contains("://") && !repo.contains(':');
    match std::env::current_dir() {
        Ok(cwd) if local && Path::new(repo).is_relative() => cwd.join(repo).display().to_string(),
        _ => repo.to_owned(),
    }
}

/// A fresh directory in $TMPDIR, removed when dropped: with everything in it (`all`), or only
/// if empty (a mountpoint, which must never be emptied through a mount still there).
struct TempDir {
    path: PathBuf,
    all: bool,
}

impl TempDir {
    fn new(purpose: &str, all: bool) -> Result<Self, Failure> {
        let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.subsec_nanos());
        let path = std::env::temp_dir().join(format!("imgstream-{purpose}-{}-{nanos}", std::process::id()));
        fs::create_dir(&path).map_err(|e| Failure::new(format!("{}: {e}", path.display())))?;
        Ok(Self { path, all })
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = if self.all { fs::remove_dir_all(&self.path) } else { fs::remove_dir(&self.path) };
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

/// How borg ended, and imgstream's own failure meanwhile (a mount that failed, a read error
/// in the tar stream); `status` is None if borg never ran.
struct Outcome {
    status: Option<ExitStatus>,
    own: Result<(), Failure>,
}

pub(crate) fn backup(args: &BackupDiskArgs) -> Result<(), Failure> {
    signals::catch()?;
    let started = Instant::now();
    // Everything is examined before borg runs: a refused partition fails the run here.
    let (reader, plan) = view::open_and_plan(&args.source, &args.policy)?;
    let name = match &args.name {
        Some(name) => name.clone(),
        None => {
            let base = args.source.file_name().map_or("disk".into(), |n| n.to_string_lossy().into_owned());
            format!("{base}-{}", utc_timestamp())
        }
    };
    let view = Arc::new(view::disk_view(reader, &plan, &args.source, &name)?);
    let repo = absolute_repo(&args.repo);
    let fuse = !args.no_fuse && Path::new("/dev/fuse").exists();
    note(&format!(
        "{} ({}) -> {}::{name}, {}",
        args.source.display(),
        view::describe_plan(&plan),
        args.repo,
        if fuse { "borg create --sparse on a FUSE view" } else { "a tar stream into borg import-tar" }
    ));
    let outcome = if fuse { create_on_mount(&view, &repo, &name, args) } else { import_tar(&view, &repo, &name, args) };
    // borg exits 1 after a warning, and has then committed the archive.
    let committed = outcome.status.is_some_and(|s| matches!(s.code(), Some(0 | 1)));
    let failure = if let Some(signal) = signals::received() {
        Some((format!("interrupted by {}", signal.as_str()), 128 + signal as u8))
    } else if let Err(failure) = outcome.own {
        Some((failure.to_string(), 1))
    } else if let Err(failure) = view::read_errors(&view, "in the source") {
        Some((failure.to_string(), 1))
    } else {
        outcome.status.filter(|s| !s.success()).map(|s| (format!("borg failed ({s})"), 1))
    };
    if let Some((message, code)) = failure {
        let cleanup = remove_archive(&repo, &name, committed);
        return Err(Failure::with_code(format!("{message}; {cleanup}"), code));
    }
    note(&format!(
        "backed up {} as {}::{name} in {:.2} s: {} used, {} elided; imgstream CPU {:.2} s",
        human(plan.layout.size),
        args.repo,
        started.elapsed().as_secs_f64(),
        human(plan.used.total()),
        human(plan.layout.size - plan.used.total()),
        own_cpu_seconds()
    ));
    Ok(())
}

/// CPU time of this process, all threads (the FUSE server or the tar stream), borg excluded.
fn own_cpu_seconds() -> f64 {
    use nix::sys::resource::{UsageWho, getrusage};
    getrusage(UsageWho::RUSAGE_SELF).map_or(0.0, |usage| {
        let seconds = |t: nix::sys::time::TimeVal| t.tv_sec() as f64 + t.tv_usec() as f64 / 1e6;
        seconds(usage.user_time()) + seconds(usage.system_time())
    })
}

/// Adds the default chunker (unless the user chose one) and the user's borg arguments.
fn chunker_and_extra(command: &mut Command, extra: &[OsString]) {
    if !extra.iter().any(|a| a.to_string_lossy().starts_with("--chunker-params")) {
        command.args(["--chunker-params", DEFAULT_CHUNKER]);
    }
    command.args(extra);
}

/// `borg create --sparse REPO::NAME FILES...` inside a FUSE mount of the view.
fn create_on_mount(view: &Arc<View>, repo: &str, name: &str, args: &BackupDiskArgs) -> Outcome {
    let failed = |own: Failure| Outcome { status: None, own: Err(own) };
    let mountpoint = match TempDir::new("view", false) {
        Ok(dir) => dir,
        Err(e) => return failed(e),
    };
    let mounted = match imgstream_view::fuse::mount(Arc::clone(view), &mountpoint.path) {
        Ok(mounted) => mounted,
        Err(e) => {
            let hint = "use --no-fuse to stream a tar archive into borg import-tar instead";
            return failed(Failure::new(format!(
                "cannot mount the view on {}: {e}; {hint}",
                mountpoint.path.display()
            )));
        }
    };
    let mut command = borg();
    command.args(["create", "--read-special", "--sparse", "--files-cache=disabled"]);
    chunker_and_extra(&mut command, &args.borg_args);
    // The files by name, not `.`: the archive then holds no directory entry, whose read-only
    // mode `borg extract` would give the directory it extracts into.
    command.arg(format!("{repo}::{name}")).args(view.files().iter().map(|f| &f.name)).current_dir(mounted.path());
    let status = run_watched(&mut command);
    let unmounted =
        mounted.unmount().map_err(|e| Failure::new(format!("cannot unmount {}: {e}", mountpoint.path.display())));
    match status {
        Ok(status) => Outcome { status: Some(status), own: unmounted },
        Err(e) => failed(e),
    }
}

/// `borg import-tar REPO::NAME -` fed with the view as a tar stream. On any failure borg is
/// stopped before its input closes: a tar stream that ends at a member boundary would be
/// committed as if complete.
fn import_tar(view: &View, repo: &str, name: &str, args: &BackupDiskArgs) -> Outcome {
    let mut command = borg();
    command.arg("import-tar");
    chunker_and_extra(&mut command, &args.borg_args);
    command.arg(format!("{repo}::{name}")).arg("-").stdin(Stdio::piped());
    let mut child = match command.spawn() {
        Ok(child) => child,
        Err(e) => return Outcome { status: None, own: Err(Failure::new(format!("cannot run borg: {e}"))) },
    };
    signals::watch_child(child.id());
    let pipe = fs::File::from(OwnedFd::from(child.stdin.take().expect("OK to unwrap: stdin was piped")));
    // Advice only: a smaller pipe is slower, not wrong.
    let _ = fcntl(&pipe, FcntlArg::F_SETPIPE_SZ(PIPE_SIZE));
    let mut sink = PipeSink::new(pipe);
    let between = || match signals::received() {
        Some(signal) => Err(io::Error::other(format!("interrupted by {}", signal.as_str()))),
        None => Ok(()),
    };
    let written = view
        .write_tar(&mut sink, args.engine.options(), &between)
        .and_then(|()| imgstream_view::tar::finish(&mut sink));
    if written.is_ok() {
        drop(sink);
    } else {
        signals::stop_child();
    }
    let status = child.wait();
    signals::forget_child();
    let status = match status {
        Ok(status) => status,
        Err(e) => return Outcome { status: None, own: Err(Failure::new(format!("borg import-tar: {e}"))) },
    };
    // A closed pipe means borg stopped reading: its status tells why.
    let own = match written {
        Err(e) if e.kind() != io::ErrorKind::BrokenPipe => Err(Failure::new(format!("{e}"))),
        _ => Ok(()),
    };
    Outcome { status: Some(status), own }
}

/// Deletes archive `name` if this run committed it, and every checkpoint of it. Returns a
/// phrase for the error message.
fn remove_archive(repo: &str, name: &str, committed: bool) -> String {
    // borg 1.2 hides checkpoints unless asked; borg 1.1 lists them and lacks the option.
    let list =
        |extra: &[&str]| borg().args(["list", "--short"]).args(extra).arg(repo).stderr(Stdio::null()).output().ok();
    let listed = list(&["--consider-checkpoints"]).filter(|o| o.status.success()).or_else(|| list(&[]));
    let Some(listed) = listed else {
        return format!("could not list {repo}: check it for {name} and {name}.checkpoint with borg list");
    };
    let doomed: Vec<String> = String::from_utf8_lossy(&listed.stdout)
        .lines()
        .filter(|line| {
            let checkpoint =
                line.strip_prefix(name).is_some_and(|rest| rest == ".checkpoint" || rest.starts_with(".checkpoint."));
            checkpoint || (committed && *line == name)
        })
        .map(str::to_owned)
        .collect();
    if doomed.is_empty() {
        return "no archive was committed".into();
    }
    let failed: Vec<&String> = doomed
        .iter()
        .filter(|archive| {
            let deleted = borg()
                .arg("delete")
                .arg(format!("{repo}::{archive}"))
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
            !deleted.is_ok_and(|s| s.success())
        })
        .collect();
    if failed.is_empty() {
        format!("deleted what borg had committed ({})", doomed.join(", "))
    } else {
        let failed: Vec<&str> = failed.iter().map(|s| s.as_str()).collect();
        format!("could not delete {} of this failed run: delete them with borg delete", failed.join(", "))
    }
}

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

/// A backup in the repository: one archive, or the earlier one per partition plus a table.
enum Backup {
    Single(String),
    Split(String),
}

/// Which backup to restore: `name` (an archive NAME, or an earlier NAME-table), or the latest.
fn find_backup(repo: &str, name: Option<&str>) -> Result<Backup, Failure> {
    let output = run_borg(borg().args(["list", "--short", repo]), "list")?;
    let listing = String::from_utf8_lossy(&output.stdout);
    let names: Vec<&str> = listing.lines().collect();
    match name {
        Some(name) if names.contains(&name) => Ok(Backup::Single(name.to_owned())),
        Some(name) if names.contains(&format!("{name}-table").as_str()) => Ok(Backup::Split(name.to_owned())),
        Some(name) => Err(Failure::new(format!("{repo}: no backup {name} (no archive {name} nor {name}-table)"))),
        None => match names.last() {
            Some(last) => Ok(last
                .strip_suffix("-table")
                .map_or(Backup::Single(last.to_string()), |n| Backup::Split(n.to_owned()))),
            None => Err(Failure::new(format!("{repo}: no archive"))),
        },
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
fn check_manifest(
    manifest: &Value,
    backup: &Backup,
    staging: &Path,
) -> Result<(u64, u32, String, Vec<Piece>), Failure> {
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
    let table = manifest["table"].as_str().unwrap_or("").to_owned();
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
    Ok((disk_size, sector_size, table, pieces))
}

pub(crate) fn restore(args: &RestoreDiskArgs) -> Result<(), Failure> {
    signals::catch()?;
    let started = Instant::now();
    let repo = absolute_repo(&args.repo);
    let backup = find_backup(&repo, args.name.as_deref())?;
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
    signals::check(INCOMPLETE)?;
    let manifest_path = staging.path.join(MANIFEST);
    let text =
        fs::read_to_string(&manifest_path).map_err(|e| Failure::new(format!("{}: {e}", manifest_path.display())))?;
    let manifest: Value = serde_json::from_str(&text).map_err(|e| Failure::new(format!("manifest of {name}: {e}")))?;
    let (disk_size, sector_size, table, pieces) = check_manifest(&manifest, &backup, &staging.path)?;

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
    let mut tally = Tally::new(&pieces);
    match &backup {
        Backup::Single(name) => restore_single(&repo, name, args, &target, &pieces, &mut tally)?,
        Backup::Split(_) => {
            for piece in &pieces {
                signals::check(INCOMPLETE)?;
                tally.start(piece, &args.repo);
                match &piece.from {
                    PieceSource::Staged(path) => {
                        let mut file = fs::File::open(path)
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
                    PieceSource::Archive(archive) => {
                        extract_archive(&repo, archive, &args.borg_args, &target, piece, args.progress)?
                    }
                    PieceSource::File(file) => {
                        return Err(Failure::new(format!("{file}: a file name in a manifest of the earlier layout")));
                    }
                }
                tally.finish(piece);
            }
        }
    }
    let partitions = tally.partitions;
    if target.kind() == TargetKind::File {
        target.finish(capacity)?;
    }
    if table == "gpt" && capacity > disk_size {
        let written = Source::open(&args.target)?;
        let layout = imgstream_ptable::read_layout(&written, Some(sector_size))?;
        let mut file: &fs::File = target.file();
        if let Some(moved) = imgstream_ptable::move_backup_to_end(&mut file, &layout)? {
            note(&format!(
                "the target is larger: backup GPT moved from LBA {} to the new last LBA {}",
                moved.old_backup_lba, moved.new_backup_lba
            ));
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
    note(&format!(
        "restored {name} ({} disk, {} partition(s), {}) to {} in {:.2} s",
        table,
        partitions,
        human(disk_size),
        args.target.display(),
        started.elapsed().as_secs_f64()
    ));
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

/// The single-archive layout in one `borg extract --stdout REPO::NAME`, which writes every
/// file one after the other: each piece goes to its place, other files (the manifest) are
/// skipped. One borg run instead of one per piece (and one passphrase prompt).
fn restore_single(
    repo: &str,
    name: &str,
    args: &RestoreDiskArgs,
    target: &Target,
    pieces: &[Piece],
    tally: &mut Tally,
) -> Result<(), Failure> {
    let files = archive_files(repo, name)?;
    let piece_of = |path: &str| pieces.iter().find(|p| matches!(&p.from, PieceSource::File(f) if f == path));
    for piece in pieces {
        if let PieceSource::File(file) = &piece.from {
            if files.iter().filter(|(path, size)| path == file && *size == piece.size).count() != 1 {
                return Err(Failure::new(format!(
                    "{}::{name}: no single file {file} of {} bytes: the archive is not a whole backup",
                    args.repo, piece.size
                )));
            }
        }
    }
    let (child, mut stdout) = spawn_extract(repo, name, &args.borg_args)?;
    let copied = (|| -> Result<(), Failure> {
        for (path, size) in &files {
            signals::check(INCOMPLETE)?;
            let mut file = (&mut stdout).take(*size);
            let Some(piece) = piece_of(path) else {
                let skipped = io::copy(&mut file, &mut io::sink())?;
                if skipped != *size {
                    return Err(Failure::new(format!("{}::{name} {path}: the stream ended early", args.repo)));
                }
                continue;
            };
            tally.start(piece, &args.repo);
            let mode = if piece.partition.is_some() { args.progress } else { ProgressMode::Never };
            let progress = progress::reporter(mode, Some(piece.size));
            imgstream_restore::write_stream(
                target,
                &mut file,
                piece.offset,
                Some(piece.size),
                imgstream_restore::DEFAULT_BLOCK_SIZE,
                progress.as_ref(),
            )
            .map_err(|e| Failure::new(format!("{}::{name} {path}: {e}", args.repo)))?;
            tally.finish(piece);
        }
        Ok(())
    })();
    drop(stdout);
    finish_extract(child, copied, &format!("{}::{name}", args.repo))
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
    signals::check(INCOMPLETE)?;
    written?;
    let status = status.map_err(|e| Failure::new(format!("borg extract {what}: {e}")))?;
    if !status.success() {
        return Err(Failure::new(format!("borg extract {what} failed ({status}): the disk is incomplete")));
    }
    Ok(())
}
