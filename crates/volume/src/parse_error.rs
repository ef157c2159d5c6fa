//! Why a volume could not be analysed: the error type the ext, fat, exfat and swap crates share.
//!
//! Rules: every message is one line and names the on-disk structure and its absolute byte
//! offset in the volume, with the expected and the actual value where there is one. Failed
//! reads are [`ParseError::Io`]; inconsistent metadata is [`ParseError::Corrupt`] (the run
//! fails unless the user asks for a raw copy); a valid variant that the crate does not handle,
//! or whose effect on the allocation map it cannot rule out, is [`ParseError::Unsupported`]
//! (the volume is copied raw, with a warning). Hazards that a valid filesystem can be in
//! (journal needs recovery, not cleanly unmounted) are not errors: they go to
//! [`Allocation::unsafe_reasons`](crate::Allocation::unsafe_reasons).

use crate::{Classify, ErrorClass};
use imgstream_blockio::ReadAt;
use std::borrow::Cow;
use std::io;

/// Why a volume could not be analysed.
// Cow: most structures are fixed names ("boot sector"), some are numbered ("group descriptor 5").
#[derive(Debug, thiserror::Error)]
pub enum ParseError {
    /// Reading the volume failed.
    #[error("reading the {structure} at byte {offset}: {source}")]
    Io {
        /// What was being read, e.g. "block bitmap of group 5".
        structure: Cow<'static, str>,
        /// Absolute byte offset of the read.
        offset: u64,
        /// The underlying error.
        source: io::Error,
    },
    /// The metadata is inconsistent.
    #[error("{structure} at byte {offset}: {problem}")]
    Corrupt {
        /// The on-disk structure, e.g. "superblock", "FAT 2".
        structure: Cow<'static, str>,
        /// Absolute byte offset of the structure or field.
        offset: u64,
        /// What is wrong, with expected and actual values.
        problem: String,
    },
    /// A valid variant the crate does not handle.
    #[error("{structure} at byte {offset}: {problem}")]
    Unsupported {
        /// The on-disk structure.
        structure: Cow<'static, str>,
        /// Absolute byte offset of the field.
        offset: u64,
        /// What is not supported.
        problem: String,
    },
}

impl ParseError {
    /// A [`ParseError::Corrupt`] for `structure` at byte `offset`.
    pub fn corrupt(structure: impl Into<Cow<'static, str>>, offset: u64, problem: impl Into<String>) -> Self {
        Self::Corrupt { structure: structure.into(), offset, problem: problem.into() }
    }

    /// A [`ParseError::Unsupported`] for `structure` at byte `offset`.
    pub fn unsupported(structure: impl Into<Cow<'static, str>>, offset: u64, problem: impl Into<String>) -> Self {
        Self::Unsupported { structure: structure.into(), offset, problem: problem.into() }
    }
}

impl Classify for ParseError {
    fn class(&self) -> ErrorClass {
        match self {
            Self::Io { .. } => ErrorClass::Io,
            Self::Corrupt { .. } => ErrorClass::Corrupt,
            Self::Unsupported { .. } => ErrorClass::Unsupported,
        }
    }
}

/// Reads `buf.len()` bytes at `offset`, naming the structure on failure. `structure` is only
/// called then, so that loops reading numbered structures format no names while reads succeed.
pub fn read_at<S: Into<Cow<'static, str>>>(
    volume: &dyn ReadAt,
    structure: impl FnOnce() -> S,
    offset: u64,
    buf: &mut [u8],
) -> Result<(), ParseError> {
    volume.read_exact_at(buf, offset).map_err(|source| ParseError::Io { structure: structure().into(), offset, source })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_name_the_structure_and_offset_and_classes_follow_the_variant() {
        let corrupt = ParseError::corrupt("boot sector", 11, "bytes per sector 0");
        assert_eq!(corrupt.to_string(), "boot sector at byte 11: bytes per sector 0");
        assert_eq!(corrupt.class(), ErrorClass::Corrupt);
        let unsupported = ParseError::unsupported(format!("group descriptor {}", 5), 4096, "too new");
        assert_eq!(unsupported.to_string(), "group descriptor 5 at byte 4096: too new");
        assert_eq!(unsupported.class(), ErrorClass::Unsupported);

        let volume = vec![0u8; 8];
        let mut buf = [0u8; 4];
        assert!(read_at(&volume, || -> String { unreachable!("named on success") }, 4, &mut buf).is_ok());
        let error = read_at(&volume, || "swap header", 6, &mut buf).unwrap_err();
        assert!(error.to_string().starts_with("reading the swap header at byte 6: "), "{error}");
        assert_eq!(error.class(), ErrorClass::Io);
    }
}
