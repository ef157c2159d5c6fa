//! Why a FAT or exFAT volume could not be analysed (the exfat crate shares this type).
//!
//! Rules: every message is one line and names the on-disk structure and its absolute byte
//! offset in the volume, with the expected and the actual value where there is one. Reads go
//! through [`Error::Io`]; anything inconsistent is [`Error::Corrupt`] (the run fails unless the
//! user asks for a raw copy); a valid variant we do not handle is [`Error::Unsupported`] (copied
//! raw with a warning).

use imgstream_volume::{Classify, ErrorClass};
use std::io;

/// Why a FAT or exFAT volume could not be analysed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Reading the volume failed.
    #[error("reading the {structure} at byte {offset}: {source}")]
    Io {
        /// What was being read.
        structure: &'static str,
        /// Absolute byte offset of the read.
        offset: u64,
        /// The underlying error.
        source: io::Error,
    },
    /// The metadata is inconsistent.
    #[error("{structure} at byte {offset}: {problem}")]
    Corrupt {
        /// The on-disk structure (e.g. "boot sector", "FAT 2").
        structure: &'static str,
        /// Absolute byte offset of the structure or field.
        offset: u64,
        /// What is wrong, with expected and actual values.
        problem: String,
    },
    /// A valid variant this crate does not handle.
    #[error("{structure} at byte {offset}: {problem}")]
    Unsupported {
        /// The on-disk structure.
        structure: &'static str,
        /// Absolute byte offset of the field.
        offset: u64,
        /// What is not supported.
        problem: String,
    },
}

impl Error {
    /// A [`Error::Corrupt`] for `structure` at byte `offset`.
    pub fn corrupt(structure: &'static str, offset: u64, problem: impl Into<String>) -> Self {
        Self::Corrupt { structure, offset, problem: problem.into() }
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
pub fn read(
    volume: &dyn imgstream_blockio::ReadAt,
    structure: &'static str,
    offset: u64,
    buf: &mut [u8],
) -> Result<(), Error> {
    volume.read_exact_at(buf, offset).map_err(|source| Error::Io { structure, offset, source })
}
