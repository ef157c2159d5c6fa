//! `imgstream verify SOURCE`: checks an image stream on stdin (`borg extract --stdout ...`)
//! against SOURCE, with the same analysis as `part` (or `disk`, with `--disk`): every used
//! byte equal, every free byte zero, the exact length. The expected image is produced by the
//! streaming engine into a sink that compares instead of writing, so verify sees exactly what
//! `part` would emit; free blocks are never read from SOURCE.

use crate::cli::VerifyArgs;
use crate::part::ChangeCheck;
use crate::size::human;
use crate::{Failure, note, progress, warn};
use imgstream_blockio::{ReadAt, Source};
use imgstream_extents::RangeSet;
use imgstream_stream::Sink;
use std::fs::File;
use std::io::{self, Read};

/// Differences listed before the rest are only counted.
const SHOWN_DIFFERENCES: usize = 10;

pub(crate) fn run(args: &VerifyArgs) -> Result<(), Failure> {
    let input = crate::input::stdin_stream("borg extract --stdout ... | imgstream verify SOURCE")?;
    let opened = Source::open(&args.source)?;
    let source: &dyn ReadAt = &opened;
    // As `part` and `disk` refuse it; `disk::plan` refuses a mounted partition by name itself.
    if !args.disk || args.policy.common.raw {
        crate::part::refuse_writable_mount(&opened, args.policy.common.force)?;
    }
    let (used, map) = if args.disk {
        let plan = if args.policy.common.raw {
            None
        } else {
            Some(crate::disk::plan(&opened, source, &args.policy, None, false)?)
        };
        for part in plan.iter().flat_map(|p| &p.parts) {
            for warning in &part.volume.warnings {
                warn(&format!("{}: {warning}", crate::disk::describe(&part.partition)));
            }
        }
        plan.map_or((RangeSet::from_range(0..source.size()), RangeSet::new()), |p| (p.used, p.map))
    } else {
        let volume = imgstream_fs::examine(source, &args.policy.common.policy())?;
        for warning in &volume.warnings {
            warn(warning);
        }
        if !args.policy.common.raw {
            crate::part::suggest_disk(
                &volume,
                &opened,
                &args.source,
                "`imgstream verify --disk` checks a `disk` stream of it",
            );
        }
        let map = volume.map_ranges();
        (volume.used, map)
    };
    let change = ChangeCheck::start(source, map)?;
    let mut compare = Compare::new(input, used.clone());
    let progress = progress::reporter(args.engine.progress, Some(source.size()));
    let stats = imgstream_stream::stream(source, &used, &mut compare, args.engine.options(), progress.as_ref());
    drop(progress);
    let stats = stats.map_err(|e| match e {
        // The sink reads: its failures are reads of the stream, not writes.
        imgstream_stream::Error::Write { written, source } => {
            Failure::new(format!("stdin: reading the stream failed at byte {written}: {source}"))
        }
        e => crate::output::stream_failure(&args.source, "stdin", e),
    })?;
    change.finish(source, &args.source)?;
    if compare.places == 0 {
        note(&format!(
            "verify: the stream matches {} ({} bytes: {} compared with the source, {} zeros)",
            args.source.display(),
            stats.total,
            human(stats.read),
            human(stats.elided)
        ));
        return Ok(());
    }
    for difference in &compare.shown {
        eprintln!("imgstream: difference: {difference}");
    }
    if compare.places > compare.shown.len() as u64 {
        eprintln!("imgstream: difference: ... and {} more", compare.places - compare.shown.len() as u64);
    }
    Err(Failure::new(format!(
        "the stream differs from {}: {} difference(s), {} byte(s) differ",
        args.source.display(),
        compare.places,
        compare.differing
    )))
}

/// A sink that reads the stream under test from stdin and compares it with the expected image.
struct Compare {
    input: File,
    /// What the analysis says is used, to tell used bytes from free ones in the report.
    used: RangeSet,
    /// Bytes of the expected image compared so far.
    position: u64,
    /// The stream ended before the image did.
    ended: bool,
    buffer: Vec<u8>,
    /// The first differences, one line each (a run of differing bytes, or a length mismatch).
    shown: Vec<String>,
    /// Differences found, shown or not.
    places: u64,
    differing: u64,
}

impl Compare {
    fn new(input: File, used: RangeSet) -> Self {
        Self { input, used, position: 0, ended: false, buffer: Vec::new(), shown: Vec::new(), places: 0, differing: 0 }
    }

    /// Compares the next `len` bytes of the stream with `expected` (`None`: zeros).
    fn compare(&mut self, expected: Option<&[u8]>, len: usize) -> io::Result<()> {
        if self.ended {
            self.position += len as u64;
            return Ok(());
        }
        self.buffer.resize(len, 0);
        let got = imgstream_restore::fill(&mut self.input, &mut self.buffer)?;
        let wanted = |index: usize| expected.and_then(|e| e.get(index).copied()).unwrap_or(0);
        let actual = |index: usize| self.buffer.get(index).copied().unwrap_or(0);
        let same = match expected {
            Some(expected) => self.buffer.get(..got) == expected.get(..got),
            None => self.buffer.iter().take(got).all(|&b| b == 0),
        };
        let mut runs = Vec::new();
        let mut index = 0;
        while !same && index < got {
            if actual(index) == wanted(index) {
                index += 1;
                continue;
            }
            let start = index;
            while index < got && actual(index) != wanted(index) {
                index += 1;
            }
            runs.push((start, index, actual(start), wanted(start)));
        }
        for (start, end, actual, wanted) in runs {
            let at = self.position + start as u64;
            let what = if self.used.contains(at) { "used bytes" } else { "free space (zeros expected)" };
            self.differing += (end - start) as u64;
            self.note(format!(
                "{} byte(s) at byte {at} (0x{at:x}) of {what}: the stream has 0x{actual:02x}, SOURCE 0x{wanted:02x}",
                end - start
            ));
        }
        if got < len {
            self.ended = true;
            let at = self.position + got as u64;
            self.note(format!("the stream ends at byte {at}: it is shorter than the image"));
        }
        self.position += len as u64;
        Ok(())
    }

    fn note(&mut self, difference: String) {
        self.places += 1;
        if self.shown.len() < SHOWN_DIFFERENCES {
            self.shown.push(difference);
        }
    }
}

impl Sink for Compare {
    fn write_data(&mut self, data: &[u8]) -> io::Result<()> {
        self.compare(Some(data), data.len())
    }

    fn write_zeros(&mut self, mut len: u64) -> io::Result<()> {
        const CHUNK: u64 = 1 << 20;
        while len > 0 {
            let piece = len.min(CHUNK);
            self.compare(None, usize::try_from(piece).unwrap_or(0))?;
            len -= piece;
        }
        Ok(())
    }

    fn finish(&mut self) -> io::Result<()> {
        if !self.ended && self.input.read(&mut [0u8; 1])? > 0 {
            let len = self.position;
            self.note(format!("the stream is longer than the image's {len} bytes"));
        }
        Ok(())
    }
}
