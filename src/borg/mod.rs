//! Driving borg for `backup-disk` and `restore-disk`: the borg command (`$IMGSTREAM_BORG` or
//! `borg`), its failures as one line, SIGINT/SIGTERM forwarded to it, and scratch directories.
//!
//! [`backup`] makes a whole disk one archive NAME; [`restore`] writes it back (and the
//! earlier multi-archive layout).

mod backup;
mod passphrase;
mod restore;

pub(crate) use backup::backup;
pub(crate) use restore::restore;

use crate::{Failure, signals};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{SystemTime, UNIX_EPOCH};

/// The borg program (`$IMGSTREAM_BORG` or `borg`), with the passphrase found for this run.
pub(super) fn borg() -> Command {
    let mut command = Command::new(std::env::var_os("IMGSTREAM_BORG").unwrap_or_else(|| "borg".into()));
    command.stdin(Stdio::null());
    passphrase::apply(&mut command);
    command
}

/// Runs a borg command; fails with its exit status and (if captured) stderr.
pub(super) fn run_borg(command: &mut Command, what: &str) -> Result<std::process::Output, Failure> {
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
pub(super) fn run_watched(command: &mut Command) -> Result<ExitStatus, Failure> {
    let mut child = command.spawn().map_err(|e| Failure::new(format!("cannot run borg: {e}")))?;
    signals::watch_child(child.id());
    let status = child.wait();
    signals::forget_child();
    status.map_err(|e| Failure::new(format!("borg: {e}")))
}

/// The repository as borg should see it from any working directory: a relative local path
/// is made absolute (borg runs inside the mount or a staging directory); URLs and
/// `host:path` forms are left alone.
pub(super) fn absolute_repo(repo: &str) -> String {
    let local = !repo.contains("://") && !repo.contains(':');
    match std::env::current_dir() {
        Ok(cwd) if local && Path::new(repo).is_relative() => cwd.join(repo).display().to_string(),
        _ => repo.to_owned(),
    }
}

/// A fresh directory in $TMPDIR, removed when dropped: with everything in it (`all`), or only
/// if empty (a mountpoint, which must never be emptied through a mount still there).
pub(super) struct TempDir {
    pub(super) path: PathBuf,
    all: bool,
}

impl TempDir {
    pub(super) fn new(purpose: &str, all: bool) -> Result<Self, Failure> {
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
