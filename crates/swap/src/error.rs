//! Why a swap area could not be analysed. Every message names the swap header field and its
//! absolute byte offset; see the fat crate's error module for the classes.

use imgstream_volume::{Classify, ErrorClass};
use std::io;

/// Why a swap area could not be analysed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Reading the volume failed.
    #[error("reading the swap header at byte {offset}: {source}")]
    Io {
        /// Absolute byte offset of the read.
        offset: u64,
        /// The underlying error.
        source: io::Error,
    },
    /// The header is inconsistent.
    #[error("swap header at byte {offset}: {problem}")]
    Corrupt {
        /// Absolute byte offset of the field.
        offset: u64,
        /// What is wrong, with expected and actual values.
        problem: String,
    },
    /// A valid variant this crate does not handle (the pre-2.2 "SWAP-SPACE" format).
    #[error("swap header at byte {offset}: {problem}")]
    Unsupported {
        /// Absolute byte offset of the field.
        offset: u64,
        /// What is not supported.
        problem: String,
    },
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
