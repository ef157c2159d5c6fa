//! The command line, as clap definitions only: no behaviour here.

use crate::progress::ProgressMode;
use clap::{Args, Parser, Subcommand};
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
    /// Recognised: ext2/3/4, NTFS, FAT12/16/32, exFAT, Linux swap; anything else is copied raw
    /// with a warning.
    #[command(after_help = EXAMPLES)]
    Part(PartArgs),
    /// Show the filesystem of SOURCE and how much of it `part` would elide.
    Info(InfoArgs),
    /// Stream a whole disk (GPT, MBR or none) to stdout: each partition elided by its filesystem,
    /// everything outside partitions (tables, boot loader gap, EBRs, backup GPT) copied exactly.
    Disk(crate::disk::DiskArgs),
    /// Write a raw image from stdin to a file or block device, optionally sparse.
    Restore(crate::restore::RestoreArgs),
    /// Check an image stream on stdin against SOURCE: used bytes equal, free bytes zero, exact
    /// length; lists the first differences and exits 1 on any.
    Verify(crate::verify::VerifyArgs),
    /// Back up a whole disk into a borg repository as one archive (a manifest, the raw areas
    /// outside partitions, one image per partition) that borg reads sparsely: free space is
    /// never read. A failed or interrupted run leaves no archive.
    BackupDisk(crate::borg::BackupDiskArgs),
    /// Restore a backup-disk backup onto a disk or file (a larger GPT disk gets its backup
    /// table moved to the new end).
    RestoreDisk(crate::borg::RestoreDiskArgs),
    /// Show a disk read-only as a directory of sparse files (FUSE, in the foreground): the
    /// manifest, the raw areas and one image per partition, free space as holes that read as
    /// zeros. Ends with Ctrl-C, SIGTERM or `umount MOUNTPOINT` (exit 0), unmounting.
    Mount(crate::view::MountArgs),
    /// Print the used/zero map of a disk or volume in borg 2's `create --map` format (borg 2
    /// betas): `START LENGTH data|zero` lines covering the exact size.
    Map(crate::view::MapArgs),
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
    pub(crate) rescue: crate::rescue::RescueArgs,
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
