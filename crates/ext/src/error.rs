//! Why an ext volume could not be analysed.
//!
//! Rules: every message is one line and names the on-disk structure and its absolute byte
//! offset in the volume, with the expected and the actual value where there is one. Failed
//! reads are [`Error::Io`]; inconsistent metadata is [`Error::Corrupt`] (the run fails unless
//! the user asks for a raw copy); a valid variant that this crate does not handle, or whose
//! effect on the block bitmaps it cannot rule out, is [`Error::Unsupported`] (the volume is
//! copied raw, with a warning). Hazards that a valid filesystem can be in (journal needs
//! recovery, not cleanly unmounted) are not errors: they go to `Allocation::unsafe_reasons`.

use imgstream_blockio::ReadAt;
use imgstream_volume::{Classify, ErrorClass};
use std::io;

/// Why an ext volume could not be analysed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Reading the volume failed.
    #[error("reading the {structure} at byte {offset}: {source}")]
    Io {
        /// What was being read, e.g. "block bitmap of group 5".
        structure: String,
        /// Absolute byte offset of the read.
        offset: u64,
        /// The underlying error.
        source: io::Error,
    },
    /// The metadata is inconsistent.
    #[error("{structure} at byte {offset}: {problem}")]
    Corrupt {
        /// The on-disk structure, e.g. "superblock", "group descriptor 5".
        structure: String,
        /// Absolute byte offset of the structure or field.
        offset: u64,
        /// What is wrong, with expected and actual values.
        problem: String,
    },
    /// A valid variant this crate does not handle.
    #[error("{structure} at byte {offset}: {problem}")]
    Unsupported {
        /// The on-disk structure.
        structure: String,
        /// Absolute byte offset of the field.
        offset: u64,
        /// What is not supported.
        problem: String,
    },
}

impl Error {
    pub(crate) fn corrupt(structure: impl Into<String>, offset: u64, problem: impl Into<String>) -> Self {
        Self::Corrupt { structure: structure.into(), offset, problem: problem.into() }
    }

    pub(crate) fn unsupported(structure: impl Into<String>, offset: u64, problem: impl Into<String>) -> Self {
        Self::Unsupported { structure: structure.into(), offset, problem: problem.into() }
    }
}

impl Classify for Error {
    fn class(&self) -> ErrorClass {
        match self {
            Self::Io { .. } => ErrorClass::Io,
            Self::Corrupt { .. } => ErrorClass::Corrupt,
            Self::Unsupported { .. } => ErrorClass::Unsupported,
        }
    }
}

/// Reads `buf.len()` bytes at `offset`, naming `structure` on failure.
pub(crate) fn read(
    volume: &dyn ReadAt,
    structure: impl FnOnce() -> String,
    offset: u64,
    buf: &mut [u8],
) -> Result<(), Error> {
    volume.read_exact_at(buf, offset).map_err(|source| Error::Io { structure: structure(), offset, source })
}
