//! A disk shown as a directory of read-only sparse files, for borg `--sparse`.
//!
//! A [`View`] is a list of [`ViewFile`]s: small in-memory files (the manifest) and windows of
//! the source with their used [`RangeSet`] (raw areas, partitions). Reading a file copies its
//! used ranges from the source and gives zeros elsewhere; [`View::seek_data`] and
//! [`View::seek_hole`] answer `lseek(SEEK_DATA/SEEK_HOLE)` from the used set, so a reader that
//! skips holes (borg `create --sparse`) never touches free space. Every read error is recorded
//! ([`View::errors`]): borg only warns about a file it could not read and commits anyway, so
//! the caller must check the record after borg has finished.
//!
//! The view is presented three ways: mounted with FUSE ([`fuse`]), streamed as a tar archive
//! ([`tar`], for `borg import-tar` where FUSE is missing), and as a borg 2 `--map` ([`map`]).

#![forbid(unsafe_code)]

pub mod fuse;
pub mod map;
pub mod tar;

use imgstream_blockio::ReadAt;
use imgstream_extents::RangeSet;
use std::io;
use std::sync::Mutex;
use std::time::SystemTime;

/// What a file of the view holds.
pub enum Content {
    /// Bytes kept in memory (the manifest).
    Bytes(Vec<u8>),
    /// `len` bytes of the source from byte `start`; only `used` (relative to `start`) is read,
    /// the rest reads as zeros.
    Source {
        /// First byte in the source.
        start: u64,
        /// Length of the file.
        len: u64,
        /// Used ranges, relative to the file's start.
        used: RangeSet,
    },
}

/// One file of the view.
pub struct ViewFile {
    /// Its name in the directory (`manifest.json`, `part2.img`, ...).
    pub name: String,
    /// What it holds.
    pub content: Content,
}

impl ViewFile {
    /// Length in bytes.
    pub fn size(&self) -> u64 {
        match &self.content {
            Content::Bytes(bytes) => bytes.len() as u64,
            Content::Source { len, .. } => *len,
        }
    }

    /// The ranges that hold data (everything, for in-memory bytes).
    fn used(&self) -> RangeSet {
        match &self.content {
            Content::Bytes(bytes) => RangeSet::from_range(0..bytes.len() as u64),
            Content::Source { used, len, .. } => used.clipped(*len),
        }
    }
}

/// The directory: files in a fixed order, over one source.
pub struct View {
    source: Box<dyn ReadAt>,
    files: Vec<ViewFile>,
    /// Each file's used ranges, clipped to its length (computed once: lseek asks often).
    used: Vec<RangeSet>,
    /// Modification and change time of every file: the moment the view was made, so that a
    /// cache keyed on ctime (borg's files cache) never mistakes one mount for another.
    created: SystemTime,
    errors: Mutex<Vec<String>>,
}

impl View {
    /// A view of `files` over `source`. Source windows must lie inside the source.
    pub fn new(source: Box<dyn ReadAt>, files: Vec<ViewFile>) -> io::Result<Self> {
        for file in &files {
            if let Content::Source { start, len, .. } = &file.content {
                if start.checked_add(*len).is_none_or(|end| end > source.size()) {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidInput,
                        format!("{}: bytes {start}+{len} are not inside the source", file.name),
                    ));
                }
            }
        }
        let used = files.iter().map(ViewFile::used).collect();
        Ok(Self { source, files, used, created: SystemTime::now(), errors: Mutex::new(Vec::new()) })
    }

    /// The files, in directory order.
    pub fn files(&self) -> &[ViewFile] {
        &self.files
    }

    /// When the view was made (every file's mtime and ctime).
    pub fn created(&self) -> SystemTime {
        self.created
    }

    /// Fills `buf` with file `index`'s bytes from `offset` (the caller keeps the request inside
    /// the file). A failed source read is recorded and returned.
    pub fn read_at(&self, index: usize, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        let file = self.file(index)?;
        let end = offset.checked_add(buf.len() as u64).filter(|&end| end <= file.size());
        let Some(end) = end else {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, format!("{}: read past the end", file.name)));
        };
        match &file.content {
            Content::Bytes(bytes) => {
                let from = bytes.get(offset as usize..end as usize).unwrap_or_default();
                buf.copy_from_slice(from);
            }
            Content::Source { start, used, .. } => {
                buf.fill(0);
                for range in used.overlapping(offset..end) {
                    let part = buf.get_mut((range.start - offset) as usize..(range.end - offset) as usize);
                    let part = part.unwrap_or_default();
                    if let Err(e) = self.source.read_exact_at(part, start + range.start) {
                        let message = format!(
                            "{}: read of {} bytes at byte {} of the source failed: {e}",
                            file.name,
                            part.len(),
                            start + range.start
                        );
                        self.errors.lock().unwrap_or_else(|p| p.into_inner()).push(message.clone());
                        return Err(io::Error::new(e.kind(), message));
                    }
                }
            }
        }
        Ok(())
    }

    /// Whether file `index` has no used byte in `offset..end` (it reads as zeros there).
    pub fn is_hole(&self, index: usize, offset: u64, end: u64) -> bool {
        self.used.get(index).is_some_and(|used| used.covered_in(offset..end) == 0)
    }

    /// `lseek(SEEK_DATA)`: the first used byte at or after `offset`, or `None` (ENXIO).
    pub fn seek_data(&self, index: usize, offset: u64) -> Option<u64> {
        self.used.get(index)?.overlapping(offset..u64::MAX).next().map(|r| r.start)
    }

    /// `lseek(SEEK_HOLE)`: the first free byte at or after `offset` (the file's end counts as a
    /// hole), or `None` (ENXIO) past the end.
    pub fn seek_hole(&self, index: usize, offset: u64) -> Option<u64> {
        let (file, used) = (self.files.get(index)?, self.used.get(index)?);
        if offset >= file.size() {
            return None;
        }
        // Ranges are merged, so the range containing `offset` ends at a real hole.
        match used.overlapping(offset..u64::MAX).next() {
            Some(range) if range.start == offset => Some(range.end),
            _ => Some(offset),
        }
    }

    /// File `index`'s used ranges, clipped to its length.
    pub fn used(&self, index: usize) -> Option<&RangeSet> {
        self.used.get(index)
    }

    /// Every read error so far, in order.
    pub fn errors(&self) -> Vec<String> {
        self.errors.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn file(&self, index: usize) -> io::Result<&ViewFile> {
        self.files.get(index).ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, format!("no file {index}")))
    }
}

#[cfg(test)]
mod tests;
