//! Ctrl-C (SIGINT) and SIGTERM during `part`, `disk`, `verify` and `restore`: the run stops at
//! once with one line on stderr, the progress bar cleared and a file target this run created
//! removed; the exit status is 130 for SIGINT and 143 for SIGTERM (128 + the signal number, as
//! a shell reports a process killed by it).
//!
//! The signals are blocked in every thread and taken by one waiting thread (`sigwait`), so no
//! code runs inside a signal handler. Commands that run child processes (borg) do not use this:
//! a child would inherit the blocked mask.
//!
//! `backup-disk`, `restore-disk` and `mount` use [`catch`] instead: the command must first stop
//! its child, remove what it made (archives, checkpoints, mounts, staging directories) and only
//! then exit with 128 + the signal's number. signal-hook's handler only writes to a pipe; one
//! thread reads it, records the signal and forwards SIGTERM to the watched child. The signal
//! mask is left alone (children inherit it): borg still sees a Ctrl-C from the terminal itself.

use crate::Failure;
use indicatif::ProgressBar;
use nix::sys::signal::{SigSet, Signal, kill};
use nix::unistd::Pid;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicI32, Ordering};

/// What to undo when a signal arrives.
struct Cleanup {
    bar: Option<ProgressBar>,
    created: Vec<PathBuf>,
}

static CLEANUP: Mutex<Cleanup> = Mutex::new(Cleanup { bar: None, created: Vec::new() });

fn cleanup() -> std::sync::MutexGuard<'static, Cleanup> {
    CLEANUP.lock().unwrap_or_else(|p| p.into_inner())
}

/// Takes SIGINT and SIGTERM away from the default action (call before starting any thread).
pub(crate) fn install() -> Result<(), Failure> {
    let mut signals = SigSet::empty();
    signals.add(Signal::SIGINT);
    signals.add(Signal::SIGTERM);
    signals.thread_block().map_err(|e| Failure::new(format!("cannot block SIGINT and SIGTERM: {e}")))?;
    std::thread::spawn(move || {
        if let Ok(signal) = signals.wait() {
            stop(signal);
        }
    });
    Ok(())
}

fn stop(signal: Signal) -> ! {
    let cleanup = cleanup();
    if let Some(bar) = &cleanup.bar {
        bar.finish_and_clear();
    }
    for path in &cleanup.created {
        let _ = std::fs::remove_file(path);
    }
    let (what, code) = match signal {
        Signal::SIGINT => ("interrupted (SIGINT)", 130),
        _ => ("terminated (SIGTERM)", 143),
    };
    eprintln!("imgstream: error: {what}: the output is incomplete");
    std::process::exit(code)
}

/// Clears `bar` if a signal stops the run.
pub(crate) fn clear_on_signal(bar: &ProgressBar) {
    cleanup().bar = Some(bar.clone());
}

/// Removes `path` (a file this run created) if a signal stops the run, until [`keep`] is called.
pub(crate) fn remove_on_signal(path: &Path) {
    cleanup().created.push(path.to_owned());
}

/// `path` is complete: a signal no longer removes it.
pub(crate) fn keep(path: &Path) {
    cleanup().created.retain(|p| p != path);
}

/// The first signal received (0: none).
static RECEIVED: AtomicI32 = AtomicI32::new(0);
/// The child to stop when a signal arrives (0: none).
static CHILD: AtomicI32 = AtomicI32::new(0);

/// Starts catching SIGINT and SIGTERM: from now on they no longer end the process.
pub(crate) fn catch() -> Result<(), Failure> {
    let mut signals = signal_hook::iterator::Signals::new([signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM])
        .map_err(|e| Failure::new(format!("cannot catch SIGINT and SIGTERM: {e}")))?;
    std::thread::Builder::new().name("signals".into()).spawn(move || {
        for signal in signals.forever() {
            let _ = RECEIVED.compare_exchange(0, signal, Ordering::SeqCst, Ordering::SeqCst);
            stop_child();
        }
    })?;
    Ok(())
}

/// The signal that interrupted us, if any.
pub(crate) fn received() -> Option<Signal> {
    Signal::try_from(RECEIVED.load(Ordering::SeqCst)).ok()
}

/// Makes `pid` the child that a signal stops; stops it at once if a signal already came.
pub(crate) fn watch_child(pid: u32) {
    CHILD.store(i32::try_from(pid).unwrap_or(0), Ordering::SeqCst);
    if received().is_some() {
        stop_child();
    }
}

/// No child to stop any more (it has been waited for: its pid may be reused).
pub(crate) fn forget_child() {
    CHILD.store(0, Ordering::SeqCst);
}

/// Sends SIGTERM to the watched child: borg then stops without committing or checkpointing.
pub(crate) fn stop_child() {
    let pid = CHILD.load(Ordering::SeqCst);
    if pid > 0 {
        let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
    }
}

/// The failure for an interruption by `signal`: exit status 128 + its number.
pub(crate) fn interrupted(signal: Signal, cleanup: &str) -> Failure {
    Failure::with_code(format!("interrupted by {}; {cleanup}", signal.as_str()), 128 + signal as u8)
}

/// `Err(interrupted)` once a signal has come, for loops that check between steps; `cleanup`
/// tells what state that leaves.
pub(crate) fn check(cleanup: &str) -> Result<(), Failure> {
    received().map_or(Ok(()), |signal| Err(interrupted(signal, cleanup)))
}
