//! What every filesystem crate (ext, ntfs, fat, exfat, swap) shares.
//!
//! Each crate answers one question, "which byte ranges of this volume are in use", as an
//! [`Allocation`], and classifies its errors with [`Classify`], so that the `fs` crate can apply
//! one policy to all of them: unsupported variants are copied raw, corrupt metadata fails, and
//! [`Allocation::unsafe_reasons`] refuse elision unless the user forces it.
//!
//! The parsers also share their tools: [`fields`] reads little- and big-endian fields of on-disk
//! structures, and [`ParseError`] (with [`read_at`]) is the error of those whose messages all
//! take the form "structure at byte N: problem".

#![forbid(unsafe_code)]

pub mod fields;
mod parse_error;

pub use imgstream_extents::RangeSet;
pub use parse_error::{ParseError, read_at};

/// What a filesystem crate found in a volume.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Allocation {
    /// Short name of the filesystem variant, e.g. "ext4", "ntfs", "fat32", "swap".
    pub filesystem: String,
    /// Allocation unit in bytes (block or cluster size); free space comes in multiples of it.
    pub unit: u64,
    /// Byte ranges of the volume that must be copied: in-use units, metadata, and everything the
    /// allocation map does not cover. Volume-relative, within the volume's size.
    pub used: RangeSet,
    /// Why zeroing free space could lose data (journal needs recovery, dirty, hibernated).
    /// Non-empty means: refuse, unless the user asks for a raw copy or forces elision.
    pub unsafe_reasons: Vec<String>,
    /// Things the user should know that do not block elision (a FAT dirty bit, a fallback).
    pub warnings: Vec<String>,
    /// Extra facts for `imgstream info`, as (label, value) pairs in display order.
    pub details: Vec<(String, String)>,
    /// Where the allocation map and the state a mount changes live (bitmaps, FATs, superblock):
    /// read again after streaming, a difference means the source changed while it was read.
    pub map_ranges: RangeSet,
}

impl Allocation {
    /// An allocation with no hazards, warnings or details.
    pub fn new(filesystem: impl Into<String>, unit: u64, used: RangeSet) -> Self {
        Self {
            filesystem: filesystem.into(),
            unit,
            used,
            unsafe_reasons: Vec::new(),
            warnings: Vec::new(),
            details: Vec::new(),
            map_ranges: RangeSet::new(),
        }
    }
}

/// How the policy treats an error from a filesystem crate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorClass {
    /// Reading the source failed: the run fails.
    Io,
    /// A variant this crate does not understand: that volume is copied raw, with a warning.
    Unsupported,
    /// Metadata is inconsistent: the run fails unless the user asks for a raw copy.
    Corrupt,
}

/// Implemented by every filesystem crate's error type.
pub trait Classify: std::error::Error + Send + Sync + 'static {
    /// The policy class of this error.
    fn class(&self) -> ErrorClass;
}
