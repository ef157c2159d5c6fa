//! Why an NTFS volume could not be analysed.
//!
//! Rules: every message is one line that names the structure, its absolute byte offset in the
//! volume and what was found. Reading errors of the source are [`ErrorClass::Io`]; a structure
//! that points outside the volume or fails its checks is [`ErrorClass::Corrupt`]. Hazards that
//! only make zeroing unsafe are not errors: they go to `Allocation::unsafe_reasons`.

use imgstream_volume::{Classify, ErrorClass};
use std::io;

/// An NTFS volume whose allocation could not be determined.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Reading the volume failed.
    #[error("reading the volume failed: {0}")]
    Io(#[from] io::Error),
    /// A structure failed our own checks.
    #[error("{structure} at byte {offset}: {message}")]
    Corrupt {
        /// The on-disk structure, e.g. "boot sector" or "$Bitmap".
        structure: String,
        /// Absolute byte offset of the structure or field in the volume.
        offset: u64,
        /// What was found and what was expected.
        message: String,
    },
    /// The `ntfs` crate rejected a structure (its message carries the byte position).
    #[error("{context}: {}", crate_message(source))]
    Parse {
        /// What we were reading.
        context: String,
        /// The crate's error.
        source: ntfs::NtfsError,
    },
    /// The `ntfs` crate panicked on this input; caught so that bad input gives an error.
    #[error("{context}: the metadata is too damaged to parse (the ntfs crate panicked: {message})")]
    Panicked {
        /// What we were reading.
        context: String,
        /// The panic payload, if it was a string.
        message: String,
    },
}

impl Error {
    /// A corrupt structure at `offset`.
    pub(crate) fn corrupt(structure: impl Into<String>, offset: u64, message: impl Into<String>) -> Self {
        Self::Corrupt { structure: structure.into(), offset, message: message.into() }
    }

    /// Wraps an `ntfs` crate error with what we were doing.
    pub(crate) fn parse(context: impl Into<String>) -> impl FnOnce(ntfs::NtfsError) -> Self {
        let context = context.into();
        move |source| Self::Parse { context, source }
    }
}

/// The `ntfs` crate's message, except for I/O errors, which it shows as Rust debug text
/// (`I/O error: Custom { kind: UnexpectedEof, ... }`): those are shown as the error's own line.
fn crate_message(error: &ntfs::NtfsError) -> String {
    match error {
        ntfs::NtfsError::Io(e) => e.to_string(),
        other => other.to_string(),
    }
}

impl Classify for Error {
    fn class(&self) -> ErrorClass {
        match self {
            // A read past the end means some structure points outside the volume.
            Self::Io(e) if e.kind() == io::ErrorKind::UnexpectedEof => ErrorClass::Corrupt,
            Self::Io(_) => ErrorClass::Io,
            Self::Parse { source: ntfs::NtfsError::Io(e), .. } if e.kind() != io::ErrorKind::UnexpectedEof => {
                ErrorClass::Io
            }
            Self::Corrupt { .. } | Self::Parse { .. } | Self::Panicked { .. } => ErrorClass::Corrupt,
        }
    }
}

/// The byte offset of an `ntfs` crate position (0 when it has none).
pub(crate) trait Offset {
    fn into_offset(self) -> u64;
}

impl Offset for ntfs::types::NtfsPosition {
    fn into_offset(self) -> u64 {
        self.value().map_or(0, |p| p.get())
    }
}

#[cfg(test)]
#[allow(clippy::indexing_slicing)]
mod tests {
    use super::*;

    #[test]
    fn reads_past_the_end_are_corruption_and_other_read_errors_are_io() {
        let eof = Error::Io(io::Error::new(io::ErrorKind::UnexpectedEof, "short"));
        assert_eq!(eof.class(), ErrorClass::Corrupt);
        let eio = Error::Io(io::Error::other("EIO"));
        assert_eq!(eio.class(), ErrorClass::Io);
        let crate_eio = Error::parse("x")(ntfs::NtfsError::Io(io::Error::other("EIO")));
        assert_eq!(crate_eio.class(), ErrorClass::Io);
        let crate_bad = Error::parse("x")(ntfs::NtfsError::InvalidMftLcn);
        assert_eq!(crate_bad.class(), ErrorClass::Corrupt);
        assert_eq!(Error::corrupt("$Bitmap", 4096, "bad").to_string(), "$Bitmap at byte 4096: bad");
    }

    #[test]
    fn read_errors_from_the_ntfs_crate_show_as_one_plain_line() {
        let short =
            io::Error::new(io::ErrorKind::UnexpectedEof, "read of 1024 bytes at byte 4096: unexpected end of file");
        let error = Error::parse("$MFT (MFT record 0)")(ntfs::NtfsError::Io(short));
        assert_eq!(error.to_string(), "$MFT (MFT record 0): read of 1024 bytes at byte 4096: unexpected end of file");
    }
}
