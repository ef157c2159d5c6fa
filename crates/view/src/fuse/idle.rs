//! The scheduling class of a helper thread: this crate's only `unsafe` (nix has no
//! `sched_setscheduler`).
#![allow(unsafe_code)]

/// Lets the calling thread run only on a CPU that nothing else wants (SCHED_IDLE): work it
/// does ahead of time then never delays a request or the reader. Advice only: if refused, the
/// thread runs as before.
pub(super) fn run_when_idle() {
    let param = libc::sched_param { sched_priority: 0 };
    // SAFETY: pid 0 is the calling thread, and `param` is a valid sched_param that outlives
    // the call, which only reads it.
    let _ = unsafe { libc::sched_setscheduler(0, libc::SCHED_IDLE, &param) };
}
