//! imgstream: stream disks and partitions as raw images whose free space reads as zeros.
//!
//! The binary only wires the library crates together: it parses the command line, opens the
//! source, asks `imgstream-fs` which bytes are used, runs the `imgstream-stream` engine to
//! stdout, and turns the outcome into messages on stderr and an exit status. stdout carries
//! image bytes only.

mod borg;
mod cli;
mod disk;
mod generate;
mod info;
mod input;
mod output;
mod part;
mod progress;
mod rescue;
mod restore;
mod signals;
mod size;
mod target;
mod verify;
mod view;

use clap::Parser;
use std::fmt;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};

/// Why a command failed, and the exit status that says so.
#[derive(Debug)]
pub(crate) struct Failure {
    message: String,
    code: u8,
}

impl Failure {
    /// A runtime failure (exit status 1).
    pub(crate) fn new(message: impl Into<String>) -> Self {
        Self { message: message.into(), code: 1 }
    }

    /// A usage error (exit status 2).
    pub(crate) fn usage(message: impl Into<String>) -> Self {
        Self { message: message.into(), code: 2 }
    }

    /// A failure with its own exit status (128 + N after signal N).
    pub(crate) fn with_code(message: impl Into<String>, code: u8) -> Self {
        Self { message: message.into(), code }
    }

    /// The same failure, its message followed by `more`: what it leaves behind, or a hint.
    pub(crate) fn followed_by(self, more: &str) -> Self {
        Self { message: format!("{}; {more}", self.message), ..self }
    }
}

impl<E: std::error::Error> From<E> for Failure {
    fn from(error: E) -> Self {
        Self::new(error.to_string())
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

/// `--quiet`: only errors reach stderr, so that cron mails nothing on success.
static QUIET: AtomicBool = AtomicBool::new(false);

/// Prints a warning on stderr (not with `--quiet`).
pub(crate) fn warn(message: &str) {
    if !QUIET.load(Ordering::Relaxed) {
        eprintln!("imgstream: warning: {message}");
    }
}

/// Prints a summary or status line on stderr (not with `--quiet`).
pub(crate) fn note(message: &str) {
    if !QUIET.load(Ordering::Relaxed) {
        eprintln!("imgstream: {message}");
    }
}

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    QUIET.store(cli.quiet, Ordering::Relaxed);
    let streams = matches!(
        cli.command,
        cli::Command::Part(_) | cli::Command::Disk(_) | cli::Command::Restore(_) | cli::Command::Verify(_)
    );
    let result = if streams { signals::install() } else { Ok(()) }.and_then(|()| match cli.command {
        cli::Command::Part(args) => part::run(&args),
        cli::Command::Info(args) => info::run(&args),
        cli::Command::Disk(args) => disk::run(&args),
        cli::Command::Restore(args) => restore::run(&args),
        cli::Command::Verify(args) => verify::run(&args),
        cli::Command::BackupDisk(args) => borg::backup(&args),
        cli::Command::RestoreDisk(args) => borg::restore(&args),
        cli::Command::Mount(args) => view::mount(&args),
        cli::Command::Map(args) => view::map(&args),
        cli::Command::Man(args) => generate::man(&args),
        cli::Command::Completions(args) => generate::completions(&args),
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            // One line: a multi-line message from a library would break log parsers.
            eprintln!("imgstream: error: {}", failure.message.replace('\n', " "));
            ExitCode::from(failure.code)
        }
    }
}
