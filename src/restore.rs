//! `imgstream restore`: a raw image on stdin written to a file or block device.

use crate::size::{human, parse_size};
use crate::{Failure, progress};
use clap::Args;
use imgstream_restore::{OpenOptions, Target, TargetKind, ZeroMode};
use std::io::IsTerminal;
use std::path::PathBuf;

/// The pipe buffer asked for on stdin (the default unprivileged maximum, /proc/sys/fs/pipe-max-size).
const PIPE_SIZE: i32 = 1 << 20;

/// `imgstream restore`.
#[derive(Debug, Args)]
pub(crate) struct RestoreArgs {
    /// File or block device to write. A file is created or truncated; a device must not be in use.
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
    /// Progress on stderr.
    #[arg(long, value_enum, default_value_t)]
    pub(crate) progress: progress::ProgressMode,
}

pub(crate) fn run(args: &RestoreArgs) -> Result<(), Failure> {
    let stdin = std::io::stdin();
    if stdin.is_terminal() {
        return Err(Failure::usage(
            "refusing to read an image from a terminal: pipe it in (borg extract --stdout ... | imgstream restore TARGET)",
        ));
    }
    // A larger pipe lets the producer (borg) run ahead while a block is being written.
    // Advice only: a smaller pipe is slower, not wrong.
    let _ = nix::fcntl::fcntl(&stdin, nix::fcntl::FcntlArg::F_SETPIPE_SZ(PIPE_SIZE));
    // Unbuffered: blocks are large, and the reader thread needs a `Send` handle.
    let mut input = std::fs::File::from(std::os::fd::AsFd::as_fd(&stdin).try_clone_to_owned()?);
    let target = Target::open(
        &args.target,
        OpenOptions { sparse: args.sparse, assume_zeroed: args.assume_zeroed, file_len: None },
    )?;
    let expected = args.size.or(target.capacity());
    let progress = progress::reporter(args.progress, expected);
    let started = std::time::Instant::now();
    let report = imgstream_restore::write_stream(
        &target,
        &mut input,
        0,
        expected,
        imgstream_restore::DEFAULT_BLOCK_SIZE,
        progress.as_ref(),
    );
    drop(progress);
    let report = report?;
    target.finish(report.total)?;
    let seconds = started.elapsed().as_secs_f64();
    let rate = if seconds > 0.0 { human((report.total as f64 / seconds) as u64) + "/s" } else { "-".into() };
    crate::note(&format!(
        "restored {} to {} in {seconds:.2} s ({rate}); wrote {}, {} of zeros {}",
        human(report.total),
        args.target.display(),
        human(report.data),
        human(report.zeros),
        zero_words(target.kind(), target.zero_mode())
    ));
    Ok(())
}

/// How zero runs were handled, for the summary.
pub(crate) fn zero_words(kind: TargetKind, mode: ZeroMode) -> &'static str {
    match (kind, mode) {
        (_, ZeroMode::Write) => "written",
        (TargetKind::File, ZeroMode::Skip) => "left as holes",
        (TargetKind::BlockDevice, ZeroMode::Skip) => "skipped (--assume-zeroed)",
        (_, ZeroMode::ZeroOut) => "zeroed out (BLKZEROOUT)",
    }
}
