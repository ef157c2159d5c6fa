//! SIGINT and SIGTERM for the commands that run borg or serve a mount: caught, so that the
//! command can stop its child, remove what it made (archives, checkpoints, mounts, staging
//! directories) and only then exit with 128 + the signal's number.
//!
//! signal-hook's handler only writes to a pipe; one thread reads it, records the signal and
//! forwards SIGTERM to the watched child. The signal mask is left alone (children inherit it):
//! borg still sees a Ctrl-C from the terminal itself.

use crate::Failure;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use std::sync::atomic::{AtomicI32, Ordering};

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
