//! `imgstream part`: one volume to stdout.

use crate::cli::PartArgs;
use crate::output::Output;
use crate::size::{human, percent};
use crate::{Failure, note, progress, warn};
use imgstream_blockio::mounts::{self, Mount};
use imgstream_blockio::{ReadAt, Source};
use imgstream_extents::RangeSet;
use imgstream_fs::{Elision, Policy, Volume};
use imgstream_stream::Stats;
use std::ops::Range;
use std::path::Path;

pub(crate) fn run(args: &PartArgs) -> Result<(), Failure> {
    let source = Source::open(&args.source)?;
    args.rescue.check_map(&source, args.output.output.as_deref())?;
    refuse_writable_mount(&source, args.policy.force)?;
    let policy = Policy { rescue: args.rescue.rescue, ..args.policy.policy() };
    let volume = imgstream_fs::examine(&source, &policy)?;
    for warning in &volume.warnings {
        warn(warning);
    }
    if !args.policy.raw {
        suggest_disk(
            &volume,
            &source,
            &args.source,
            "`imgstream disk` elides the free space of each (`--partition N` streams one)",
        );
    }
    let mut output = Output::open(args.output.output.as_deref(), &source, volume.size)?;
    let change = ChangeCheck::start(&source, volume.map_ranges())?;
    let rescue = args.rescue.reader(&source, source.sector_size());
    let reader: &dyn ReadAt = rescue.as_ref().map_or(&source, |r| r);
    let progress = progress::reporter(args.engine.progress, Some(volume.size));
    let stats =
        imgstream_stream::stream(reader, &volume.used, output.sink.as_mut(), args.engine.options(), progress.as_ref());
    drop(progress);
    let stats = stats.map_err(|e| output.failure(&args.source, e))?;
    change.finish(&source, &args.source)?;
    rescue.map_or(Ok(()), |r| args.rescue.finish(&r))?;
    output.keep();
    note(&summary(&volume, &stats));
    Ok(())
}

/// A source with no filesystem that holds a partition table: `part` copies it raw (and `verify`
/// checks it so) where `disk` would elide each partition's free space; `advice` says what to
/// run instead. Without a table (an unknown volume, or a filesystem whose metadata cannot be
/// read), `disk` would do just the same: nothing is said.
pub(crate) fn suggest_disk(volume: &Volume, source: &Source, path: &Path, advice: &str) {
    if volume.allocation.is_some() || volume.recognised_as.is_some() {
        return;
    }
    if let Ok(layout) = imgstream_ptable::read_layout(source, crate::disk::sector_size_hint(source)) {
        if layout.table != imgstream_ptable::TableKind::None && !layout.partitions.is_empty() {
            warn(&format!(
                "{} is a {} with {} partition(s): {advice}",
                path.display(),
                layout.table.disk_words(),
                layout.partitions.len()
            ));
        }
    }
}

/// Catches a source that changes while it is read (a running VM's disk, a device mounted
/// meanwhile): a digest of its allocation map, taken before streaming, must hold after it.
pub(crate) struct ChangeCheck {
    ranges: RangeSet,
    before: u64,
}

impl ChangeCheck {
    /// Takes the first digest of `ranges` of `source`.
    pub(crate) fn start(source: &dyn ReadAt, ranges: RangeSet) -> Result<Self, Failure> {
        let before = imgstream_fs::digest(source, &ranges)?;
        Ok(Self { ranges, before })
    }

    /// Fails if the allocation map of `source` (named `path`) is not what it was at the start.
    pub(crate) fn finish(&self, source: &dyn ReadAt, path: &Path) -> Result<(), Failure> {
        if imgstream_fs::digest(source, &self.ranges)? == self.before {
            Ok(())
        } else {
            Err(Failure::new(format!(
                "{} changed while it was read: the image may be torn; image a snapshot",
                path.display()
            )))
        }
    }
}

/// Refuses a source mounted read-write, itself or anything in it or stacked on it: its
/// allocation map changes while we read it.
pub(crate) fn refuse_writable_mount(source: &Source, force: bool) -> Result<(), Failure> {
    let mounts = mounts::mounts_over(source)?;
    refuse_mounted(&mounts, &(0..source.size()), &source.path().display().to_string(), force)
}

/// Refuses `what`, the bytes `range` of the source, if one of `mounts` covers it read-write;
/// with `force`, a warning instead.
pub(crate) fn refuse_mounted(mounts: &[Mount], range: &Range<u64>, what: &str, force: bool) -> Result<(), Failure> {
    let Some(mount) = mounts.iter().find(|m| m.writable && m.overlaps(range)) else { return Ok(()) };
    let message = format!("{what} is {}: its allocation map changes while we read", mount.describe());
    if force {
        warn(&format!("{message}; imaging it anyway (--force)"));
        Ok(())
    } else {
        Err(Failure::new(format!("{message}; unmount it, remount it read-only, or image a snapshot")))
    }
}

/// "ext4: 64.0 MiB in 0.12 s (533.3 MiB/s); read 12.0 MiB, elided 52.0 MiB of free space (81.2%)"
fn summary(volume: &Volume, stats: &Stats) -> String {
    let seconds = stats.elapsed.as_secs_f64();
    let rate = if seconds > 0.0 { human((stats.total as f64 / seconds) as u64) + "/s" } else { "-".into() };
    let how = match &volume.elision {
        Elision::Elided | Elision::Forced => {
            format!("elided {} of free space ({:.1}%)", human(stats.elided), percent(stats.elided, stats.total))
        }
        Elision::Raw(reason) => format!("copied raw: {reason}"),
    };
    format!(
        "{}: {} in {seconds:.2} s ({rate}); read {}, {how}",
        volume.filesystem(),
        human(stats.total),
        human(stats.read)
    )
}
