//! Restore: a raw image stream (stdin, `borg extract --stdout`) written to a file or a device.
//!
//! [`Target::open`] opens the destination for writing, after refusing a mounted one: a regular
//! file is truncated first (so nothing stale survives), a block device is opened exclusively.
//! [`write_stream`] then copies a stream into the target at an offset, page by page: data pages
//! are written with `pwrite` in runs, runs of zero pages are
//! - skipped in a regular file (they stay holes: only non-zero blocks are allocated),
//! - on a block device, zeroed with `BLKZEROOUT` (cheap on thin or SSD targets), or skipped only
//!   when the user promises the device already reads as zeros (`assume_zeroed`),
//! - or written as zeros when sparseness was not asked for.
//!
//! A stream shorter or longer than expected is an error that names both lengths. The source
//! of the stream is never trusted to be the right size.

#![forbid(unsafe_code)]

mod target;
mod writer;

pub use target::{OpenOptions, Target, TargetKind, ZeroMode};
pub use writer::{DEFAULT_BLOCK_SIZE, PAGE_SIZE, Report, fill, write_stream};

use std::io;
use std::path::PathBuf;

/// Why a restore failed. Each message names the target and the byte offset.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The target cannot be opened or examined.
    #[error("{}: {source}", path.display())]
    Open {
        /// The target.
        path: PathBuf,
        /// The cause.
        source: io::Error,
    },
    /// The target must not be written: mounted, in use, not a file or device, too small.
    #[error("{}: {reason}", path.display())]
    Refused {
        /// The target.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// Reading the image stream failed.
    #[error("reading the image stream after {received} bytes: {source}")]
    Read {
        /// Bytes of the stream consumed before the failure.
        received: u64,
        /// The cause.
        source: io::Error,
    },
    /// Writing (or zeroing) the target failed.
    #[error("{}: {what} of {len} bytes at byte {offset}: {source}", path.display())]
    Write {
        /// The target.
        path: PathBuf,
        /// "write", "zero-out" or "sync".
        what: &'static str,
        /// Absolute byte offset in the target.
        offset: u64,
        /// Length of the failed operation.
        len: u64,
        /// The cause.
        source: io::Error,
    },
    /// The stream ended early: the target is incomplete.
    #[error("{}: the image stream ended after {received} bytes, {expected} were expected: the target is incomplete", path.display())]
    Short {
        /// The target.
        path: PathBuf,
        /// Bytes received.
        received: u64,
        /// Bytes expected.
        expected: u64,
    },
    /// The stream holds more than the target expects.
    #[error("{}: the image stream is longer than the {expected} bytes expected (it does not fit this target)", path.display())]
    Long {
        /// The target.
        path: PathBuf,
        /// Bytes expected.
        expected: u64,
    },
}
