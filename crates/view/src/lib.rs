//! A disk shown as a directory of read-only sparse files, for borg `--sparse`.
//!
//! A [`View`] is a list of [`ViewFile`]s: small in-memory files (the manifest) and windows of
//! the source with their used [`RangeSet`] (raw areas, partitions). Reading a file copies its
//! used ranges from the source (less the source's own holes, when it is a sparse image file)
//! and gives zeros elsewhere; [`View::seek_data`] and
//! [`View::seek_hole`] answer `lseek(SEEK_DATA/SEEK_HOLE)` from the used set, so a reader that
//! skips holes (borg `create --sparse`) never touches free space. Every read error is recorded
//! ([`View::errors`]): borg only warns about a file it could not read and commits anyway, so
//! the caller must check the record after borg has finished.
//!
//! The view is presented three ways: mounted with FUSE ([`fuse`]), streamed as a tar archive
//! ([`tar`], for `borg import-tar` where FUSE is missing), and as a borg 2 `--map` ([`map`]).

// Denied, not forbidden: `fuse::idle` holds the crate's one `unsafe` call.
#![deny(unsafe_code)]

pub mod fuse;
pub mod map;
pub mod tar;

use imgstream_blockio::ReadAt;
use imgstream_extents::RangeSet;
use std::io;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
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

    /// The ranges that hold data: everything, for in-memory bytes; for a window of `source`,
    /// its used ranges less the source's own holes (a sparse image's holes read as zeros).
    fn used_in(&self, source: &dyn ReadAt) -> RangeSet {
        match &self.content {
            Content::Bytes(bytes) => RangeSet::from_range(0..bytes.len() as u64),
            Content::Source { start, len, used } => without_holes(used, source, *start, *len),
        }
    }
}

/// `used` (relative to `start`, clipped to `len`) less the holes of `source` there: a sparse
/// image file's holes read as zeros, so they need no reading and are holes of the view too.
pub fn without_holes(used: &RangeSet, source: &dyn ReadAt, start: u64, len: u64) -> RangeSet {
    let mut data = RangeSet::new();
    for range in source.data_in(start..start.saturating_add(len)) {
        data.insert(range.start - start..range.end - start);
    }
    used.clipped(len).difference(&data.complement(0..len))
}

/// How far past a read the source is asked to read ahead: a reader that asks for one piece at
/// a time (a FUSE request, a tar member's next block) then still keeps many device reads in
/// flight, and a cold disk is read at its sequential speed.
const PREFETCH: u64 = 32 << 20;

/// The source's pages are dropped behind the reader in steps this large and this far behind
/// it: a drop costs a flush of every CPU's page lists, and the server threads answer reads a
/// little out of order.
const DROP_STEP: u64 = 16 << 20;

/// The directory: files in a fixed order, over one source.
pub struct View {
    source: Box<dyn ReadAt>,
    files: Vec<ViewFile>,
    /// Each file's ranges that hold data: used, inside the file, and not a hole of the source
    /// (computed once: lseek asks often).
    used: Vec<RangeSet>,
    /// Modification and change time of every file: the moment the view was made, so that a
    /// cache keyed on ctime (borg's files cache) never mistakes one mount for another.
    created: SystemTime,
    /// Per file: how far (relative to the file) the source has been asked to read ahead.
    prefetched: Vec<AtomicU64>,
    /// Per file: up to where the source's pages have been dropped.
    dropped: Vec<AtomicU64>,
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
        let used = files.iter().map(|file| file.used_in(&*source)).collect();
        let marks = || files.iter().map(|_| AtomicU64::new(0)).collect();
        let (prefetched, dropped) = (marks(), marks());
        Ok(Self {
            source,
            files,
            used,
            created: SystemTime::now(),
            prefetched,
            dropped,
            errors: Mutex::new(Vec::new()),
        })
    }

    /// The source the files show.
    pub fn source(&self) -> &dyn ReadAt {
        &*self.source
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
            Content::Source { start, .. } => {
                let used = self.used.get(index).ok_or_else(|| io::Error::other("no used set"))?;
                self.prefetch(index, *start, used, end);
                let at = |position: u64| (position - offset) as usize;
                let mut filled = offset;
                for range in used.overlapping(offset..end) {
                    buf.get_mut(at(filled)..at(range.start)).unwrap_or_default().fill(0);
                    let part = buf.get_mut(at(range.start)..at(range.end)).unwrap_or_default();
                    let from = start + range.start..start + range.end;
                    if let Err(e) = self.source.read_exact_at(part, from.start) {
                        let message = format!(
                            "{}: read of {} bytes at byte {} of the source failed: {e}",
                            file.name,
                            part.len(),
                            from.start
                        );
                        self.errors.lock().unwrap_or_else(|p| p.into_inner()).push(message.clone());
                        return Err(io::Error::new(e.kind(), message));
                    }
                    filled = range.end;
                }
                buf.get_mut(at(filled)..).unwrap_or_default().fill(0);
                self.drop_behind(index, *start, offset);
            }
        }
        Ok(())
    }

    /// Asks the source to read ahead the used bytes of the next [`PREFETCH`] bytes of file
    /// `index` after `end`, once the advice given so far runs less than half that far ahead.
    fn prefetch(&self, index: usize, start: u64, used: &RangeSet, end: u64) {
        let Some(ahead) = self.prefetched.get(index) else { return };
        let (mark, to) = (ahead.load(Ordering::Relaxed), end.saturating_add(PREFETCH));
        // A mark behind the read, or beyond the window (the reader went back), starts anew.
        let from = if (end..=to).contains(&mark) { mark } else { end };
        // Of concurrent readers, only the one that moves the mark gives the advice.
        if from >= end.saturating_add(PREFETCH / 2)
            || ahead.compare_exchange(mark, to, Ordering::Relaxed, Ordering::Relaxed).is_err()
        {
            return;
        }
        for range in used.overlapping(from..to) {
            self.source.prefetch(start + range.start..start + range.end);
        }
    }

    /// Drops the source's pages of file `index` up to [`DROP_STEP`] before `offset`, once a
    /// whole step has gathered: the reader keeps its own copy (the FUSE file's page cache,
    /// borg's chunk), and the source's pages would only crowd out what the machine uses.
    fn drop_behind(&self, index: usize, start: u64, offset: u64) {
        let Some(dropped) = self.dropped.get(index) else { return };
        let (mark, until) = (dropped.load(Ordering::Relaxed), offset.saturating_sub(DROP_STEP));
        if until >= mark.saturating_add(DROP_STEP)
            && dropped.compare_exchange(mark, until, Ordering::Relaxed, Ordering::Relaxed).is_ok()
        {
            self.source.drop_cache(start + mark..start + until);
        }
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

    /// File `index`'s ranges that hold data (used, inside the file, not a hole of the source).
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
