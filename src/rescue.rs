//! `--rescue` for a dying disk: unreadable sectors become zeros in the image, listed in a GNU
//! ddrescue map (`--rescue-map FILE`) and a summary line.
//!
//! The map covers the whole image: '+' (finished) for everything that was read or is free per
//! the filesystem, '-' (bad sector) for what could not be read. `ddrescuelog` reads it, and
//! ddrescue itself can retry just the bad areas from the same device with it.

use crate::Failure;
use crate::cli::RescueArgs;
use crate::size::human;
use imgstream_blockio::{ReadAt, Rescue, Source};
use std::fmt::Write as _;
use std::fs::Permissions;
use std::io::{self, Write as _};
use std::ops::Range;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

impl RescueArgs {
    /// The source as the stream reads it: through [`Rescue`] if asked for.
    pub(crate) fn reader<'a>(&self, source: &'a dyn ReadAt, sector_size: u32) -> Option<Rescue<&'a dyn ReadAt>> {
        self.rescue.then(|| Rescue::new(source, sector_size))
    }

    /// Refuses, before anything is read or written, a map that would be written over the
    /// source, over the image (`output`, or stdout's file), or into a device.
    pub(crate) fn check_map(&self, source: &Source, output: Option<&Path>) -> Result<(), Failure> {
        let Some(path) = &self.rescue_map else { return Ok(()) };
        crate::output::refuse_source("rescue map", path, source)?;
        crate::output::refuse_output("rescue map", path, output)?;
        match std::fs::metadata(path) {
            Ok(metadata) if !metadata.is_file() => Err(Failure::usage(format!(
                "rescue map {} exists and is not a regular file: give a file name",
                path.display()
            ))),
            _ => Ok(()),
        }
    }

    /// After a complete stream: writes the map and prints the summary.
    pub(crate) fn finish(&self, rescue: &Rescue<&dyn ReadAt>) -> Result<(), Failure> {
        let Some(path) = &self.rescue_map else { return Ok(()) };
        let bad = rescue.bad_ranges();
        let command_line: Vec<String> = std::env::args().collect();
        replace_file(path, &ddrescue_map(&bad, rescue.size(), &command_line.join(" ")))
            .map_err(|e| Failure::new(format!("{}: cannot write the rescue map: {e}", path.display())))?;
        let unreadable: u64 = bad.iter().map(|r| r.end - r.start).sum();
        if bad.is_empty() {
            eprintln!("imgstream: rescue: every sector was read; map in {}", path.display());
        } else {
            eprintln!(
                "imgstream: rescue: {unreadable} bytes ({}) unreadable in {} bad area(s), written as zeros; map in {}",
                human(unreadable),
                bad.len(),
                path.display()
            );
        }
        Ok(())
    }
}

/// Replaces `path` with `text` whole or not at all: written to a new file beside it, synced,
/// then renamed over it. A failed write (a full disk) leaves the old map for ddrescue to resume
/// from, and a link at `path` is replaced, not written through.
fn replace_file(path: &Path, text: &str) -> io::Result<()> {
    let mut file = tempfile::Builder::new()
        .prefix(".imgstream-map-")
        .permissions(Permissions::from_mode(0o666))
        .tempfile_in(crate::output::directory_of(path))?;
    file.write_all(text.as_bytes())?;
    file.as_file().sync_all()?;
    file.persist(path)?;
    Ok(())
}

/// A GNU ddrescue map of an image of `size` bytes whose `bad` ranges (sorted, disjoint) could
/// not be read: comments, the status line (finished), then `pos size status` lines.
fn ddrescue_map(bad: &[Range<u64>], size: u64, command_line: &str) -> String {
    let mut map = format!(
        "# Mapfile. Created by imgstream {}\n# Command line: {command_line}\n# Finished\n\
         # current_pos  current_status  current_pass\n0x00000000     +               1\n\
         #      pos        size  status\n",
        env!("CARGO_PKG_VERSION")
    );
    let mut line = |range: Range<u64>, status: char| {
        if range.start < range.end {
            let _ = writeln!(map, "0x{:08X}  0x{:08X}  {status}", range.start, range.end - range.start);
        }
    };
    let mut at = 0;
    for range in bad {
        line(at..range.start, '+');
        line(range.clone(), '-');
        at = range.end;
    }
    line(at..size, '+');
    map
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_map_alternates_finished_and_bad_areas_over_the_whole_image() {
        let map = ddrescue_map(&[512..1024, 4096..8192], 8192, "imgstream part --rescue x");
        let blocks: Vec<&str> = map.lines().filter(|l| !l.starts_with('#')).collect();
        assert_eq!(
            blocks,
            [
                "0x00000000     +               1",
                "0x00000000  0x00000200  +",
                "0x00000200  0x00000200  -",
                "0x00000400  0x00000C00  +",
                "0x00001000  0x00001000  -",
            ]
        );
        assert!(ddrescue_map(&[], 0, "").lines().all(|l| l.starts_with('#') || l.starts_with("0x00000000     +")));
    }
}
