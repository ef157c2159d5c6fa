//! Ctrl-C (SIGINT) and SIGTERM during `part`, `disk`, `verify` and `restore`: the run stops at
//! once with one line on stderr, the progress bar cleared and a file target this run created
//! removed; the exit status is 130 for SIGINT and 143 for SIGTERM (128 + the signal number, as
//! a shell reports a process killed by it).
//!
//! The signals are blocked in every thread and taken by one waiting thread (`sigwait`), so no
//! code runs inside a signal handler. Commands that run child processes (borg) do not use this:
//! a child would inherit the blocked mask.

use crate::Failure;
use indicatif::ProgressBar;
use nix::sys::signal::{SigSet, Signal};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

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
