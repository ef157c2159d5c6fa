//! The command line, as clap definitions only: no behaviour here. Every command's arguments
//! live here, so the command modules depend on this one and never the other way round.

use crate::progress::ProgressMode;
use crate::size::parse_size;
use clap::{Args, Parser, Subcommand};
use imgstream_fs::{OnUnsafe, Policy};
use std::ffi::OsString;
use std::num::NonZeroUsize;
use std::path::PathBuf;

const EXAMPLES: &str = "\
Examples:
  borg create --chunker-params fixed,4194304 --content-from-command repo::sda2-{now} -- imgstream part /dev/sda2
      (a failed read commits nothing; a plain `imgstream part ... | borg create -` would commit a truncated archive)
  borg extract --stdout repo::sda2-2026-11-25 | dd of=/dev/sda2 bs=4M conv=fsync   (restore)
  imgstream backup-disk /dev/sda --repo repo --name laptop   (a whole disk, one backup)
  imgstream part -o sda2.img /dev/sda2       (a sparse file: free space becomes holes)
  imgstream info /dev/sda

Exit status: 0 success, 1 failure (read/write error, corrupt filesystem, unsafe one with
--on-unsafe refuse, source mounted read-write or changed while read, output closed early),
2 usage error, 130 SIGINT (Ctrl-C), 143 SIGTERM.";

/// Stream disks and partitions as raw images whose free space reads as zeros.
#[derive(Debug, Parser)]
#[command(name = "imgstream", version, after_help = EXAMPLES)]
pub(crate) struct Cli {
    /// Print nothing but errors on stderr: no warnings, no summary (for cron).
    #[arg(short, long, global = true)]
    pub(crate) quiet: bool,
    /// What to do.
    #[command(subcommand)]
    pub(crate) command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Stream one filesystem (partition or image) to stdout as a raw image, free blocks as zeros.
    ///
    /// Blocks that the filesystem's own allocation map marks free are emitted as zeros without
    /// being read; everything else, including every byte the map does not cover, is copied
    /// exactly. The output has exactly the size of SOURCE and restores with plain `dd`.
    /// Recognised: ext2/3/4, NTFS, FAT12/16/32, exFAT, XFS, btrfs, Linux swap, and the volumes
    /// inside an LVM2 physical volume or an md RAID member; anything else is copied raw with a
    /// warning.
    #[command(after_help = EXAMPLES)]
    Part(PartArgs),
    /// Show the filesystem of SOURCE and how much of it `part` would elide.
    Info(InfoArgs),
    /// Stream a whole disk (GPT, MBR or none) to stdout: each partition elided by its filesystem,
    /// everything outside partitions (tables, boot loader gap, EBRs, backup GPT) copied exactly.
    Disk(DiskArgs),
    /// Write a raw image from stdin to a file or block device, optionally sparse.
    Restore(RestoreArgs),
    /// Check an image stream on stdin against SOURCE: used bytes equal, free bytes zero, exact
    /// length; lists the first differences and exits 1 on any.
    Verify(VerifyArgs),
    /// Back up a whole disk into a borg repository as one archive (a manifest, the raw areas
    /// outside partitions, one image per partition) that borg reads sparsely: free space is
    /// never read. A failed or interrupted run leaves no archive.
    BackupDisk(BackupDiskArgs),
    /// Restore a backup-disk backup onto a disk or file (a larger GPT disk gets its backup
    /// table moved to the new end).
    RestoreDisk(RestoreDiskArgs),
    /// Show a disk read-only as a directory of sparse files (FUSE, in the foreground): the
    /// manifest, the raw areas and one image per partition, free space as holes that read as
    /// zeros. Ends with Ctrl-C, SIGTERM or `umount MOUNTPOINT` (exit 0), unmounting.
    Mount(MountArgs),
    /// Print the used/zero map of a disk or volume in borg 2's `create --map` format (borg 2
    /// betas): `START LENGTH data|zero` lines covering the exact size (a sparse image's holes are zero).
    Map(MapArgs),
    /// Write the man pages (imgstream.1, imgstream-part.1, ...) into a directory.
    Man(ManArgs),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell) on stdout.
    ///
    /// bash: `imgstream completions bash > /etc/bash_completion.d/imgstream`.
    Completions(CompletionsArgs),
}

/// `imgstream man`.
#[derive(Debug, Args)]
pub(crate) struct ManArgs {
    /// Directory to write the pages into (created if missing); view one with `man -l DIR/imgstream-part.1`.
    pub(crate) dir: PathBuf,
}

/// `imgstream completions`.
#[derive(Debug, Args)]
pub(crate) struct CompletionsArgs {
    /// The shell.
    #[arg(value_enum)]
    pub(crate) shell: clap_complete::Shell,
}

/// `imgstream part`.
#[derive(Debug, Args)]
pub(crate) struct PartArgs {
    /// Block device or image file to read (never written).
    pub(crate) source: PathBuf,
    /// How to treat the filesystem.
    #[command(flatten)]
    pub(crate) policy: PolicyArgs,
    /// How to stream.
    #[command(flatten)]
    pub(crate) engine: EngineArgs,
    /// Reading a dying disk.
    #[command(flatten)]
    pub(crate) rescue: RescueArgs,
    /// Where to write the image.
    #[command(flatten)]
    pub(crate) output: OutputArgs,
}

/// Where `part` and `disk` write the image.
#[derive(Debug, Args)]
pub(crate) struct OutputArgs {
    /// Write the image to FILE instead of stdout: a new or empty file gets holes for the zeros;
    /// an existing non-empty file is refused; a block device is written in full.
    #[arg(short, long, value_name = "FILE")]
    pub(crate) output: Option<PathBuf>,
}

/// `imgstream info`.
#[derive(Debug, Args)]
pub(crate) struct InfoArgs {
    /// Block device or image file to examine.
    pub(crate) source: PathBuf,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub(crate) json: bool,
    /// Count pagefile.sys, swapfile.sys and hiberfil.sys as elidable (NTFS).
    #[arg(long)]
    pub(crate) drop_pagefile: bool,
    /// ext4 with metadata_csum: also cross-check the block bitmaps with every inode's blocks.
    #[arg(long)]
    pub(crate) deep_check: bool,
    /// What `part` and `disk` would do with a volume unsafe to elide (raw, refuse, force).
    #[arg(long, value_name = "raw|refuse|force", default_value_t)]
    pub(crate) on_unsafe: imgstream_fs::OnUnsafe,
}

/// Options that decide what may be zeroed.
#[derive(Debug, Args)]
pub(crate) struct PolicyArgs {
    /// Copy every byte: no filesystem parsing, no elision.
    #[arg(long, conflicts_with = "force")]
    pub(crate) raw: bool,
    /// `--on-unsafe force`, and image a source even if it is mounted read-write.
    ///
    /// The on-disk allocation map may then miss blocks that are in use: the image can lose data.
    #[arg(long)]
    pub(crate) force: bool,
    /// A volume unsafe to elide (journal needs recovery, dirty, hibernated): copy it raw with a
    /// warning, fail, or elide it anyway. A read-write mount is refused unless --force.
    #[arg(long, value_name = "raw|refuse|force", default_value_t)]
    pub(crate) on_unsafe: imgstream_fs::OnUnsafe,
    /// NTFS: also zero pagefile.sys, swapfile.sys and (if not hibernated) hiberfil.sys.
    #[arg(long)]
    pub(crate) drop_pagefile: bool,
    /// ext4 with metadata_csum: also cross-check the block bitmaps with every inode's blocks
    /// (always done without metadata_csum, and on NTFS and exFAT).
    #[arg(long)]
    pub(crate) deep_check: bool,
}

/// Options of the streaming engine. The output is identical whatever their values.
#[derive(Debug, Args)]
pub(crate) struct EngineArgs {
    /// Reader threads [default: available cores, at most 4].
    #[arg(short = 'j', long, value_name = "N", value_parser = parse_threads)]
    pub(crate) threads: Option<NonZeroUsize>,
    /// Read block size: a power of two from 4K to 4M, so it divides borg's 4 MiB chunks.
    #[arg(long, value_name = "SIZE", default_value = "1M", value_parser = parse_block_size)]
    pub(crate) block_size: usize,
    /// Progress on stderr.
    #[arg(long, value_enum, default_value_t)]
    pub(crate) progress: ProgressMode,
}

fn parse_threads(text: &str) -> Result<NonZeroUsize, String> {
    let count: usize = text.parse().map_err(|_| format!("'{text}' is not a number of threads"))?;
    NonZeroUsize::new(count).ok_or_else(|| "at least one reader thread is needed (-j 1 or more)".to_owned())
}

fn parse_block_size(text: &str) -> Result<usize, String> {
    let size = crate::size::parse_size(text)?;
    let valid = imgstream_stream::MIN_BLOCK_SIZE as u64..=imgstream_stream::MAX_BLOCK_SIZE as u64;
    if size.is_power_of_two() && valid.contains(&size) {
        Ok(size as usize)
    } else {
        Err(format!("block size {text} must be a power of two from 4K to 4M"))
    }
}

impl EngineArgs {
    /// The engine options, with the default thread count resolved.
    pub(crate) fn options(&self) -> imgstream_stream::Options {
        const DEFAULT_MAX_THREADS: usize = 4;
        let threads = self.threads.unwrap_or_else(|| {
            let cores = std::thread::available_parallelism().map_or(1, NonZeroUsize::get);
            NonZeroUsize::new(cores.min(DEFAULT_MAX_THREADS)).unwrap_or(NonZeroUsize::MIN)
        });
        imgstream_stream::Options { threads, block_size: self.block_size }
    }
}

impl PolicyArgs {
    /// The filesystem policy these flags ask for.
    pub(crate) fn policy(&self) -> imgstream_fs::Policy {
        let on_unsafe = if self.force { imgstream_fs::OnUnsafe::Force } else { self.on_unsafe };
        imgstream_fs::Policy {
            raw: self.raw,
            on_unsafe,
            drop_pagefile: self.drop_pagefile,
            deep_check: self.deep_check,
            ..Default::default()
        }
    }
}

/// The files of a backup, shared by both helps.
macro_rules! layout_help {
    () => {
        "\
  manifest.json        disk size, sector size, table type, every partition's index, start, size,
                       type, filesystem, used bytes, elision, file; every raw area's offset, size, file
  raw-<offset>.bin     each area outside the partitions (MBR/GPT, boot loader gap, EBRs, backup GPT)
  partN.img            partition N as a raw image, free space zeroed (unpartitioned source: part1.img)
"
    };
}

/// How to restore a backup, with or without imgstream, shared by both helps.
macro_rules! restore_help {
    () => {
        "\
Restore the whole disk:   imgstream restore-disk --repo REPO --name NAME /dev/sdX
Restore one partition:    borg extract --stdout REPO::NAME part2.img | imgstream restore --sparse /dev/sdX2
With plain borg and dd:   borg extract REPO::NAME manifest.json   (offsets and starts are in it)
                          for each raw area and partition FILE at byte OFFSET (0 included):
                            borg extract --stdout REPO::NAME FILE | dd of=/dev/sdX bs=4M seek=OFFSET oflag=seek_bytes conv=notrunc,fsync
                          (dd writes every zero; on a larger GPT disk, run `sgdisk -e` afterwards
                          to move the backup GPT to the end)"
    };
}

/// How a backup is made and laid out in the repository, and how to restore it.
const BACKUP_HELP: &str = concat!(
    "A backup named NAME (default: SOURCE's file name and the UTC time) is one archive NAME:\n",
    layout_help!(),
    "\
It is made with `borg create --read-special --sparse --files-cache=disabled --chunker-params
fixed,4194304 REPO::NAME FILES...` inside a read-only FUSE view of the disk, so borg never reads
free space; without /dev/fuse (or with --no-fuse) with `borg import-tar REPO::NAME -` from a tar stream
(same files). Add borg options after --. A read error, a failing borg, SIGINT or SIGTERM leave
no archive, no checkpoint and no mount. One backup is one archive, so
  borg prune --keep-daily 7 --glob-archives 'laptop-*' REPO
keeps whole backups. Encrypted repository: set BORG_PASSPHRASE or BORG_PASSCOMMAND (a backup
asks once). Nightly, with systemd (the default NAME is sda-<UTC time>):
  /etc/systemd/system/imgstream-backup.service
    [Service]
    Type=oneshot
    Environment=BORG_PASSCOMMAND=\"cat /root/.borg-passphrase\"
    ExecStart=/usr/bin/imgstream backup-disk --quiet /dev/sda --repo /backup
    ExecStartPost=/usr/bin/borg prune --keep-daily 7 --keep-weekly 4 --glob-archives 'sda-*' /backup
  /etc/systemd/system/imgstream-backup.timer
    [Timer]
    OnCalendar=daily
    Persistent=true
    [Install]
    WantedBy=timers.target
  systemctl enable --now imgstream-backup.timer

",
    restore_help!()
);

/// How `restore-disk` reads a backup, and the alternatives.
const RESTORE_HELP: &str = concat!(
    "A backup NAME is one archive NAME holding:\n",
    layout_help!(),
    "\n",
    restore_help!(),
    "\nrestore-disk also restores backups of earlier versions (archives NAME-partN and NAME-table)."
);

/// `imgstream backup-disk`.
#[derive(Debug, Args)]
#[command(after_help = BACKUP_HELP)]
pub(crate) struct BackupDiskArgs {
    /// Disk to back up: block device or image file (never written).
    pub(crate) source: PathBuf,
    /// The borg repository (must exist: `borg init`).
    #[arg(long)]
    pub(crate) repo: String,
    /// Archive name [default: the source's file name and the UTC time].
    #[arg(long, value_parser = parse_archive_name)]
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
    /// Extra arguments for `borg create` / `borg import-tar` (e.g. `-- --compression zstd,3`);
    /// not those that would leave files out (`--exclude`, `--pattern`, ...) or commit nothing
    /// (`--dry-run`).
    #[arg(last = true, value_name = "BORG ARGS", value_parser = parse_backup_borg_arg)]
    pub(crate) borg_args: Vec<OsString>,
}

/// A name imgstream can clean up after: borg expands `{placeholders}` (imgstream would then look
/// for the wrong archive), and names a checkpoint `NAME.checkpoint` or `NAME.checkpoint.N`
/// (which a failed run deletes, and `borg prune` treats as a checkpoint).
fn parse_archive_name(name: &str) -> Result<String, String> {
    let checkpoint = name.rsplit_once(".checkpoint").is_some_and(|(_, rest)| {
        rest.is_empty()
            || rest.strip_prefix('.').is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
    });
    let problem = if name.trim().is_empty() {
        "an archive needs a name"
    } else if name.contains('/') {
        "borg forbids '/' in archive names"
    } else if name.contains(['{', '}']) {
        "borg would expand the {placeholders}; the default name already ends with the UTC time"
    } else if checkpoint {
        "borg names its checkpoints so"
    } else {
        return Ok(name.to_owned());
    };
    Err(problem.to_owned())
}

/// Refuses a borg option that makes a backup that is not whole: files left out, or nothing
/// committed while imgstream reports success.
fn parse_backup_borg_arg(arg: &str) -> Result<OsString, String> {
    const PARTIAL: [&str; 8] = [
        "--dry-run",
        "--exclude",
        "--exclude-from",
        "--pattern",
        "--patterns-from",
        "--exclude-caches",
        "--exclude-if-present",
        "--exclude-nodump",
    ];
    let long = arg.split_once('=').map_or(arg, |(option, _)| option);
    // A cluster of short flags ("-sn"); a value follows -C (compression) directly.
    let short = arg.strip_prefix('-').filter(|flags| !flags.starts_with('-')).unwrap_or_default();
    let short_partial = short.chars().take_while(|&c| c != 'C').any(|c| c == 'n' || c == 'e');
    if PARTIAL.contains(&long) || short_partial {
        Err("it would make a backup that is not whole (files left out, or nothing committed)".to_owned())
    } else {
        Ok(arg.into())
    }
}

/// `imgstream restore-disk`.
#[derive(Debug, Args)]
#[command(after_help = RESTORE_HELP)]
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

/// `imgstream disk`.
#[derive(Debug, Args)]
pub(crate) struct DiskArgs {
    /// Disk: block device or image file to read (never written).
    pub(crate) source: PathBuf,
    /// Stream only partition N (its number in the table, as `info` lists it).
    #[arg(long, value_name = "N")]
    pub(crate) partition: Option<u32>,
    /// How to treat each partition's filesystem.
    #[command(flatten)]
    pub(crate) policy: DiskPolicyArgs,
    /// How to stream.
    #[command(flatten)]
    pub(crate) engine: EngineArgs,
    /// Reading a dying disk.
    #[command(flatten)]
    pub(crate) rescue: RescueArgs,
    /// Where to write the image.
    #[command(flatten)]
    pub(crate) output: OutputArgs,
}

/// The policy options of `disk` and `backup-disk`: the common ones, and per partition.
#[derive(Debug, Args)]
pub(crate) struct DiskPolicyArgs {
    /// For every partition.
    #[command(flatten)]
    pub(crate) common: PolicyArgs,
    /// Copy partition N raw, without parsing it (repeatable): --raw for one partition.
    #[arg(long, value_name = "N")]
    pub(crate) raw_partition: Vec<u32>,
    /// --force for partition N only (repeatable): elide it even if unsafe, image it even if
    /// mounted read-write.
    #[arg(long, value_name = "N")]
    pub(crate) force_partition: Vec<u32>,
}

impl DiskPolicyArgs {
    /// The policy for partition `index`.
    pub(crate) fn policy(&self, index: u32) -> Policy {
        let mut policy = self.common.policy();
        policy.raw |= self.raw_partition.contains(&index);
        if self.forced(index) {
            policy.on_unsafe = OnUnsafe::Force;
        }
        policy
    }

    /// Whether partition `index` is forced: elided even if unsafe, imaged even if mounted read-write.
    pub(crate) fn forced(&self, index: u32) -> bool {
        self.common.force || self.force_partition.contains(&index)
    }
}

/// `imgstream restore`.
#[derive(Debug, Args)]
pub(crate) struct RestoreArgs {
    /// File or block device to write. A new or empty file is written (an existing non-empty
    /// one only with --force); a device must not be in use.
    pub(crate) target: PathBuf,
    /// Zero blocks become holes in a file, or BLKZEROOUT on a device, instead of written zeros.
    #[arg(long)]
    pub(crate) sparse: bool,
    /// Block device only: it already reads as zeros (new thin volume, discarded SSD), so zero
    /// runs are skipped. Wrong if it holds old data: that data would show through.
    #[arg(long)]
    pub(crate) assume_zeroed: bool,
    /// The exact stream length [default: a device's size; a file takes whatever arrives].
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    pub(crate) size: Option<u64>,
    /// Replace an existing non-empty file (refused otherwise).
    #[arg(long)]
    pub(crate) force: bool,
    /// Progress on stderr.
    #[arg(long, value_enum, default_value_t)]
    pub(crate) progress: ProgressMode,
}

/// `imgstream verify`.
#[derive(Debug, Args)]
pub(crate) struct VerifyArgs {
    /// The partition, image or (with --disk) disk the stream was made from (never written).
    pub(crate) source: PathBuf,
    /// The stream is a `disk` image (partition table and every partition) instead of `part`'s.
    #[arg(long)]
    pub(crate) disk: bool,
    /// How the filesystem (each partition's, with --disk) was treated when the stream was made.
    #[command(flatten)]
    pub(crate) policy: DiskPolicyArgs,
    /// How to read.
    #[command(flatten)]
    pub(crate) engine: EngineArgs,
}

/// `imgstream mount`.
#[derive(Debug, Args)]
pub(crate) struct MountArgs {
    /// Disk, partition or image file to show (never written).
    pub(crate) source: PathBuf,
    /// An empty directory to mount it on.
    pub(crate) mountpoint: PathBuf,
    /// How to treat each partition's filesystem.
    #[command(flatten)]
    pub(crate) policy: DiskPolicyArgs,
}

/// `imgstream map`.
#[derive(Debug, Args)]
pub(crate) struct MapArgs {
    /// Disk, partition or image file (never written).
    pub(crate) source: PathBuf,
    /// How to treat each partition's filesystem.
    #[command(flatten)]
    pub(crate) policy: DiskPolicyArgs,
}

/// `--rescue` and its map.
#[derive(Debug, Args)]
pub(crate) struct RescueArgs {
    /// Dying disk: retry a failed read sector by sector and write unreadable sectors as zeros,
    /// listed in the --rescue-map file. Unreadable metadata: the volume is copied raw.
    #[arg(long, requires = "rescue_map")]
    pub(crate) rescue: bool,
    /// Where --rescue writes its GNU ddrescue map of the image (replaced if it exists).
    #[arg(long, value_name = "FILE", requires = "rescue")]
    pub(crate) rescue_map: Option<PathBuf>,
}
