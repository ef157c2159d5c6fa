//! `imgstream disk`: a whole disk as one raw stream, and `info` on a disk.
//!
//! The partition table (`imgstream-ptable`) splits the disk into partitions and raw areas.
//! Each partition is examined on its own window by `imgstream-fs` (unknown ones are copied
//! raw); the used ranges, shifted to the partition's offset, plus every raw area (MBR/GPT,
//! the gap before the first partition, EBRs and gaps, the backup GPT) make the disk's used
//! set, which the same engine streams.
//!
//! One partition's trouble stays that partition's: one unsafe to elide is copied raw with a
//! warning (`--on-unsafe`), one mounted read-write (through any stack of loop, dm or md
//! devices) is refused by name, and `--raw-partition` / `--force-partition` apply to one only.

use crate::cli::{DiskArgs, DiskPolicyArgs};
use crate::output::Output;
use crate::size::{human, percent};
use crate::{Failure, note, progress, warn};
use imgstream_blockio::mounts::{self};
use imgstream_blockio::{ReadAt, Source, SourceKind, Window};
use imgstream_extents::RangeSet;
use imgstream_fs::{Elision, Policy, Volume};
use imgstream_ptable::{DiskLayout, Partition};
use std::io::Write;

/// One partition and what its filesystem allows.
pub(crate) struct PartPlan {
    pub(crate) partition: Partition,
    pub(crate) volume: Volume,
}

/// A disk: its table, each partition's verdict, and the disk-wide used set.
pub(crate) struct DiskPlan {
    pub(crate) layout: DiskLayout,
    pub(crate) parts: Vec<PartPlan>,
    /// Partitions' used ranges (disk offsets) plus every raw area.
    pub(crate) used: RangeSet,
    /// The tables and the partitions' allocation maps (disk offsets), to catch a disk that
    /// changes while it is read.
    pub(crate) map: RangeSet,
}

/// The logical sector size to read the table with: the device's, or probed for an image.
pub(crate) fn sector_size_hint(source: &Source) -> Option<u32> {
    (source.kind() == SourceKind::BlockDevice).then(|| source.sector_size())
}

/// Reads the table of `source` (`opened`, as read through `source`), refuses a partition of
/// `selected` (all if `None`) that is mounted read-write unless it is forced, then examines
/// every partition under its policy (with `rescue`, one whose metadata cannot be read is copied
/// raw). `disk`, `backup-disk` and `verify --disk` plan with this.
pub(crate) fn plan(
    opened: &Source,
    source: &dyn ReadAt,
    policy: &DiskPolicyArgs,
    selected: Option<u32>,
    rescue: bool,
) -> Result<DiskPlan, Failure> {
    let mounts = mounts::mounts_over(opened)?;
    let layout = imgstream_ptable::read_layout(source, sector_size_hint(opened))?;
    let mut named = policy.raw_partition.iter().chain(&policy.force_partition);
    if let Some(missing) = named.find(|&&n| !layout.partitions.iter().any(|p| p.index == n)) {
        let known: Vec<String> = layout.partitions.iter().map(|p| p.index.to_string()).collect();
        return Err(Failure::usage(format!("no partition {missing} (partitions: {})", known.join(", "))));
    }
    for partition in layout.partitions.iter().filter(|p| selected.is_none_or(|i| i == p.index)) {
        let forced = policy.forced(partition.index);
        crate::part::refuse_mounted(&mounts, &partition.range(), &describe(partition), forced)?;
    }
    let mut used = layout.raw.clone();
    let mut map: RangeSet = layout.structures.iter().map(|s| s.range.clone()).collect();
    let mut parts = Vec::new();
    let examined = examine_partitions(source, &layout, |index| Policy { rescue, ..policy.policy(index) });
    for (partition, volume) in layout.partitions.iter().zip(examined) {
        let volume = volume?;
        used.union_with(&volume.used.shifted(partition.start));
        map.union_with(&volume.map_ranges().shifted(partition.start));
        parts.push(PartPlan { partition: partition.clone(), volume });
    }
    Ok(DiskPlan { layout, parts, used, map })
}

/// `imgstream_fs::examine_parts` on every partition, each under `policy_of(its number)`:
/// together, so that an LVM VG over several partitions is mapped as one. A partition whose GPT
/// type holds no filesystem by design (BIOS boot, Microsoft reserved) and in which nothing was
/// recognised is named by its type and copied raw without a warning.
pub(crate) fn examine_partitions(
    source: &dyn ReadAt,
    layout: &DiskLayout,
    policy_of: impl Fn(u32) -> Policy,
) -> Vec<Result<Volume, Failure>> {
    let parts: Vec<_> = layout.partitions.iter().map(|p| (p.range(), policy_of(p.index))).collect();
    let examined = imgstream_fs::examine_parts(source, &parts);
    layout
        .partitions
        .iter()
        .zip(examined)
        .map(|(partition, volume)| {
            let volume = volume.map_err(|e| Failure::new(format!("{}: {e}", describe(partition))))?;
            match imgstream_ptable::partition_type(&partition.type_id) {
                Some(known)
                    if known.no_filesystem && !policy_of(partition.index).raw && volume.filesystem() == "unknown" =>
                {
                    let reason = format!("{} partition: no filesystem by design", known.name);
                    Ok(Volume { recognised_as: Some("none"), ..Volume::raw(volume.size, None, reason, false) })
                }
                _ => Ok(volume),
            }
        })
        .collect()
}

/// Prints the table's warnings and those of every partition (or of partition `only`).
pub(crate) fn print_warnings(plan: &DiskPlan, only: Option<u32>) {
    for warning in &plan.layout.warnings {
        warn(warning);
    }
    for part in plan.parts.iter().filter(|p| only.is_none_or(|i| i == p.partition.index)) {
        for warning in &part.volume.warnings {
            warn(&format!("{}: {warning}", describe(&part.partition)));
        }
    }
}

/// "partition 2 (bytes 1048576..9437184)", or "the disk" when there is no table.
pub(crate) fn describe(partition: &Partition) -> String {
    if partition.type_id.is_empty() && partition.start == 0 {
        return "the disk".into();
    }
    format!("partition {} (bytes {}..{})", partition.index, partition.start, partition.start + partition.len)
}

pub(crate) fn run(args: &DiskArgs) -> Result<(), Failure> {
    let opened = Source::open(&args.source)?;
    let source: &dyn ReadAt = &opened;
    args.rescue.check_map(&opened, args.output.output.as_deref())?;
    let rescue_mode = args.rescue.rescue;
    let plan = if args.policy.common.raw && args.partition.is_none() {
        crate::part::refuse_writable_mount(&opened, args.policy.common.force)?;
        None
    } else {
        match plan(&opened, source, &args.policy, args.partition, rescue_mode) {
            // An unreadable table: nothing is known free, so the whole disk is rescued raw.
            Err(e) if rescue_mode && args.partition.is_none() => {
                warn(&format!("{e}; copying the whole disk raw (--rescue)"));
                None
            }
            plan => Some(plan?),
        }
    };
    let (used, size, start, map) = match (&plan, args.partition) {
        (None, _) => (RangeSet::from_range(0..source.size()), source.size(), 0, RangeSet::new()),
        (Some(plan), None) => (plan.used.clone(), source.size(), 0, plan.map.clone()),
        (Some(plan), Some(index)) => {
            let part = plan.parts.iter().find(|p| p.partition.index == index).ok_or_else(|| {
                let known: Vec<String> = plan.parts.iter().map(|p| p.partition.index.to_string()).collect();
                Failure::usage(format!(
                    "{}: no partition {index} (partitions: {})",
                    args.source.display(),
                    known.join(", ")
                ))
            })?;
            let map = part.volume.map_ranges().shifted(part.partition.start);
            (part.volume.used.clone(), part.partition.len, part.partition.start, map)
        }
    };
    if let Some(plan) = &plan {
        print_warnings(plan, args.partition);
    }
    let window = Window::new(source, start, size)?;
    let mut output = Output::open(args.output.output.as_deref(), &opened, size)?;
    let change = crate::part::ChangeCheck::start(source, map)?;
    let rescue = args.rescue.reader(&window, opened.sector_size());
    let reader: &dyn ReadAt = rescue.as_ref().map_or(&window, |r| r);
    let progress = progress::reporter(args.engine.progress, Some(size));
    let stats = imgstream_stream::stream(reader, &used, output.sink.as_mut(), args.engine.options(), progress.as_ref());
    drop(progress);
    let stats = stats.map_err(|e| output.failure(&args.source, e))?;
    change.finish(source, &args.source)?;
    rescue.map_or(Ok(()), |r| args.rescue.finish(&r))?;
    output.keep();
    let seconds = stats.elapsed.as_secs_f64();
    let rate = if seconds > 0.0 { human((stats.total as f64 / seconds) as u64) + "/s" } else { "-".into() };
    let what = match (&plan, args.partition) {
        (None, _) => "disk (raw)".to_owned(),
        (Some(plan), None) => format!("{}, {} partition(s)", plan.layout.table.disk_words(), plan.parts.len()),
        (Some(_), Some(index)) => format!("partition {index}"),
    };
    note(&format!(
        "{what}: {} in {seconds:.2} s ({rate}); read {}, elided {} ({:.1}%)",
        human(stats.total),
        human(stats.read),
        human(stats.elided),
        percent(stats.elided, stats.total)
    ));
    Ok(())
}

/// The `Elision` in words, for the manifest.
pub(crate) fn elision_name(elision: &Elision) -> &'static str {
    match elision {
        Elision::Elided => "elided",
        Elision::Forced => "forced",
        Elision::Raw(_) => "raw",
    }
}

/// Writes `text` to stdout.
pub(crate) fn print(text: &str) -> Result<(), Failure> {
    std::io::stdout().write_all(text.as_bytes()).map_err(|e| Failure::new(format!("stdout: write failed: {e}")))
}
