//! `backup-disk`: a whole disk as one borg archive.
//!
//! The disk is shown as a directory of sparse files ([`crate::view`]) and archived as one
//! archive NAME: through a FUSE mount and `borg create --sparse` (free space is a hole that borg
//! never reads), or, without FUSE, as a tar stream into `borg import-tar` (free space travels as
//! zeros). A backup is complete or absent: a read error (borg would only warn and commit), a
//! failing borg, SIGINT or SIGTERM leave no archive, no checkpoint, no mount and no staging
//! directory.

use super::{TempDir, absolute_repo, borg, run_watched};
use crate::cli::BackupDiskArgs;
use crate::part::ChangeCheck;
use crate::size::human;
use crate::view;
use crate::{Failure, note, signals};
use imgstream_stream::PipeSink;
use imgstream_view::View;
use imgstream_view::fuse::Reading;
use nix::fcntl::{FcntlArg, fcntl};
use std::ffi::OsString;
use std::fs;
use std::io;
use std::os::fd::OwnedFd;
use std::process::{Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

/// borg's advice for block devices and disk images; zero blocks then dedup to nothing.
const DEFAULT_CHUNKER: &str = "fixed,4194304";

/// A pipe this large wakes borg less often.
const PIPE_SIZE: i32 = 1 << 20;

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
    let change = ChangeCheck::start(&reader, plan.map.clone())?;
    let name = match &args.name {
        Some(name) => name.clone(),
        None => {
            let base = args.source.file_name().map_or("disk".into(), |n| n.to_string_lossy().into_owned());
            format!("{base}-{}", utc_timestamp())
        }
    };
    let view = Arc::new(view::disk_view(reader, &plan, &args.source, &name)?);
    let repo = absolute_repo(&args.repo);
    super::passphrase::find(&repo)?;
    let fuse = !args.no_fuse && view::have_fuse();
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
    } else if let Some(status) = outcome.status.filter(|s| !s.success()) {
        Some((format!("borg failed ({status})"), 1))
    } else {
        change.finish(view.source(), &args.source).err().map(|failure| (failure.to_string(), 1))
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
    let mounted = match imgstream_view::fuse::mount(Arc::clone(view), &mountpoint.path, Reading::Streamed) {
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
