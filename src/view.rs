//! The disk as a directory of sparse files: what `imgstream mount` shows, what `backup-disk`
//! archives, and `imgstream map`.
//!
//! The directory holds one file per raw area (`raw-<offset>.bin`: MBR/GPT, boot loader gap,
//! EBRs, backup GPT), `partN.img` per partition (free space reads as zeros and is a hole for
//! `lseek`), and `manifest.json` describing it all. A source without a partition table (one
//! partition, a filesystem image) shows one image, `part1.img`. The partitions' verdicts come
//! from [`disk::plan`], the planning `imgstream disk` uses, so its policy applies here too.

use crate::cli::{DiskPolicyArgs, MapArgs, MountArgs};
use crate::disk::{self, DiskPlan};
use crate::size::human;
use crate::{Failure, note, signals};
use imgstream_blockio::{ReadAt, Source};
use imgstream_extents::RangeSet;
use imgstream_view::fuse::Reading;
use imgstream_view::{Content, View, ViewFile};
use serde_json::json;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// The manifest format this version writes (`imgstream-disk-1` was the multi-archive layout).
pub(crate) const MANIFEST_FORMAT: &str = "imgstream-disk-2";
/// The device FUSE mounts go through.
const FUSE_DEVICE: &str = "/dev/fuse";

/// Whether this kernel (or container) offers FUSE.
pub(crate) fn have_fuse() -> bool {
    Path::new(FUSE_DEVICE).exists()
}
/// The manifest's file name.
pub(crate) const MANIFEST: &str = "manifest.json";

/// The file name of partition `index`.
pub(crate) fn part_file(index: u32) -> String {
    format!("part{index}.img")
}

/// The file name of the raw area at byte `offset` (zero-padded: names sort by offset).
fn raw_file(offset: u64) -> String {
    format!("raw-{offset:016}.bin")
}

/// Opens `path` read-only and plans it as `imgstream disk` does (a partition mounted
/// read-write is refused), printing warnings.
pub(crate) fn open_and_plan(path: &Path, policy: &DiskPolicyArgs) -> Result<(Source, DiskPlan), Failure> {
    let source = Source::open(path)?;
    let plan = disk::plan(&source, &source, policy, None, false)?;
    disk::print_warnings(&plan, None);
    Ok((source, plan))
}

/// The view of a planned disk: raw areas, partitions, then the manifest (last, so that a tar
/// stream cut short lacks it and no restore mistakes it for a whole backup).
pub(crate) fn disk_view(source: Source, plan: &DiskPlan, path: &Path, name: &str) -> Result<View, Failure> {
    let mut files = Vec::new();
    let mut raw_areas = Vec::new();
    for area in plan.layout.raw.iter() {
        let file = raw_file(area.start);
        raw_areas.push(json!({ "offset": area.start, "size": area.end - area.start, "file": file }));
        let len = area.end - area.start;
        files.push(ViewFile {
            name: file,
            content: Content::Source { start: area.start, len, used: RangeSet::from_range(0..len) },
        });
    }
    let mut partitions = Vec::new();
    for p in &plan.parts {
        let file = part_file(p.partition.index);
        partitions.push(json!({
            "index": p.partition.index,
            "start": p.partition.start,
            "size": p.partition.len,
            "type": p.partition.type_id,
            "name": p.partition.name,
            "uuid": p.partition.uuid,
            "bootable": p.partition.bootable,
            "filesystem": p.volume.filesystem(),
            "elision": disk::elision_name(&p.volume.elision),
            "used": p.volume.used.total(),
            "file": file,
        }));
        files.push(ViewFile {
            name: file,
            content: Content::Source { start: p.partition.start, len: p.partition.len, used: p.volume.used.clone() },
        });
    }
    let manifest = json!({
        "format": MANIFEST_FORMAT,
        "name": name,
        "source": path.display().to_string(),
        "disk_size": plan.layout.size,
        "sector_size": plan.layout.sector_size,
        "table": plan.layout.table.name(),
        "disk_id": plan.layout.disk_id,
        "partitions": partitions,
        "raw_areas": raw_areas,
        "restore": "imgstream restore-disk --repo REPO --name NAME TARGET; or by hand: for every raw area and partition, `borg extract --stdout REPO::NAME FILE | dd of=TARGET bs=4M seek=OFFSET oflag=seek_bytes conv=notrunc` (OFFSET: the area's offset, the partition's start)",
    });
    let text = serde_json::to_string_pretty(&manifest).expect("OK to unwrap: a Value always serialises") + "\n";
    files.push(ViewFile { name: MANIFEST.into(), content: Content::Bytes(text.into_bytes()) });
    Ok(View::new(Box::new(source), files)?)
}

/// "GPT disk, 3 partition(s), 1.2 GiB used of 16.0 GiB"
pub(crate) fn describe_plan(plan: &DiskPlan) -> String {
    format!(
        "{}, {} partition(s), {} used of {}",
        plan.layout.table.disk_words(),
        plan.parts.len(),
        human(plan.used.total()),
        human(plan.layout.size)
    )
}

/// The failure for read errors the view recorded, or Ok if there were none.
pub(crate) fn read_errors(view: &View, what: &str) -> Result<(), Failure> {
    let errors = view.errors();
    match errors.first() {
        None => Ok(()),
        Some(first) => Err(Failure::new(format!("{} read error(s) {what}; the first: {first}", errors.len()))),
    }
}

pub(crate) fn mount(args: &MountArgs) -> Result<(), Failure> {
    signals::catch()?;
    check_mountpoint(&args.mountpoint)?;
    let (reader, plan) = open_and_plan(&args.source, &args.policy)?;
    let name = args.source.file_name().map_or("disk".into(), |n| n.to_string_lossy().into_owned());
    let view = Arc::new(disk_view(reader, &plan, &args.source, &name)?);
    let mounted = imgstream_view::fuse::mount(Arc::clone(&view), &args.mountpoint, Reading::Cached)
        .map_err(|e| Failure::new(format!("cannot mount on {}: {e}", args.mountpoint.display())))?;
    note(&format!(
        "{} ({}) mounted read-only at {}; Ctrl-C, SIGTERM or `umount {}` ends it",
        args.source.display(),
        describe_plan(&plan),
        args.mountpoint.display(),
        args.mountpoint.display()
    ));
    while signals::received().is_none() && !mounted.is_finished() {
        std::thread::sleep(Duration::from_millis(100));
    }
    mounted.unmount().map_err(|e| Failure::new(format!("cannot unmount {}: {e}", args.mountpoint.display())))?;
    note(&format!("{} unmounted", args.mountpoint.display()));
    read_errors(&view, "while mounted")
}

/// The mount point must be an empty directory: a mount over files (or over /proc, or over an
/// earlier view) hides them until it ends. FUSE must be there.
fn check_mountpoint(path: &Path) -> Result<(), Failure> {
    let mut entries = std::fs::read_dir(path).map_err(|e| Failure::usage(format!("{}: {e}", path.display())))?;
    if entries.next().is_some() {
        return Err(Failure::usage(format!("{}: not empty; mount on an empty directory", path.display())));
    }
    if !have_fuse() {
        return Err(Failure::new(format!(
            "cannot mount: {FUSE_DEVICE} does not exist (no FUSE in this kernel or container)"
        )));
    }
    Ok(())
}

pub(crate) fn map(args: &MapArgs) -> Result<(), Failure> {
    let (reader, plan) = open_and_plan(&args.source, &args.policy)?;
    let data = imgstream_view::without_holes(&plan.used, &reader, 0, reader.size());
    disk::print(&imgstream_view::map::borg_map(&data, reader.size()))
}
