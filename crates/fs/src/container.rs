//! Volume managers: LVM2 PVs and md RAID members, seen through the volumes they hold.
//!
//! The `lvm` and `md` crates say where the inner volumes lie in their container; here each
//! inner volume that may be read through its map is examined like any volume (recursively, so a
//! PV on an md member works), its used set is mapped back to container offsets, and the result
//! is the container's used set: everything except free extents and the free space of the
//! volumes examined. Volumes that must be copied raw are named with the reason; [`Container`]
//! keeps the tree for `imgstream info`.

use crate::{Elision, Error, Policy, Volume, examine_at, unreadable, volume_manager};
use imgstream_blockio::{Mapped, ReadAt, Window};
use imgstream_lvm::{LogicalVolume, Placed, SourceMap};
use imgstream_volume::{Allocation, Classify, ErrorClass, RangeSet};
use std::ops::Range;

/// A volume manager's view of a volume, for `imgstream info`.
#[derive(Clone, Debug)]
pub struct Container {
    /// What holds the inner volumes: "LVM2 PV pv0 of VG vg0", "md raid1 member (metadata 1.2, array host:0)".
    /// The facts (VG, extent size, superblock version...) are the container's allocation details.
    pub kind: String,
    /// The volumes inside, with their verdicts.
    pub volumes: Vec<Inner>,
}

/// One volume inside a container.
#[derive(Clone, Debug)]
pub struct Inner {
    /// "vg/lv", or "array data".
    pub name: String,
    /// "linear", "striped", "thin-pool", "raid1", ...
    pub kind: String,
    /// What was found in it (raw ones say why in `elision`).
    pub volume: Volume,
}

/// The LVM2 label lies in one of the first four sectors.
const LABEL_SECTORS_END: u64 = 2048;

/// Which volume in the source (the range of a partition, or of the whole source), and how to
/// treat it.
type Part = (Range<u64>, Policy);

/// A container of kind `name` ("lvm2", "md") copied raw with `reason`, as a warning too.
fn raw(size: u64, name: &'static str, reason: String) -> Volume {
    Volume { recognised_as: Some(name), ..Volume::raw(size, None, reason, true) }
}

/// An error from a container crate: I/O fails the run, the rest means "copy it raw".
fn container_error<E: Classify>(size: u64, name: &'static str, what: &str, error: E) -> Result<Volume, Error> {
    match error.class() {
        ErrorClass::Io => Err(Error::Io(std::io::Error::other(error.to_string()))),
        _ => Ok(raw(size, name, format!("{what}: {error}"))),
    }
}

/// Examines an md member: a RAID1 member in sync is its data area's volume plus the rest raw.
pub(crate) fn md_member(volume: &dyn ReadAt, policy: &Policy, depth: usize) -> Result<Volume, Error> {
    let size = volume.size();
    let member = match imgstream_md::read_member(volume) {
        Ok(member) => member,
        Err(error) => return container_error(size, "md", "md member", error),
    };
    let kind = format!("md {} member", member.level_name());
    let what = format!("{kind} (metadata {}, array {})", member.version, member.array);
    if let Some(reason) = &member.raw_reason {
        return Ok(raw(size, "md", format!("{what}: {reason}")));
    }
    let data = member.data.clone();
    let window = Window::new(volume, data.start, data.end - data.start)?;
    let inner = examine_at(&window, policy, depth + 1)
        .map_err(|e| Error::Inside { volume: what.clone(), message: e.to_string() })?;
    let mut used = inner.used.shifted(data.start);
    used.union_with(&RangeSet::from_range(0..size).difference(&RangeSet::from_range(data.clone())));
    let mut allocation = Allocation::new(
        format!("md-{}", member.level_name()),
        inner.allocation.as_ref().map_or(0, |a| a.unit),
        used.clone(),
    );
    allocation.details = vec![
        ("metadata".into(), member.version.into()),
        ("array".into(), member.array.clone()),
        ("devices".into(), member.raid_disks.to_string()),
        ("data area".into(), format!("bytes {}..{}", data.start, data.end)),
    ];
    allocation.unsafe_reasons = inner.allocation.as_ref().map(|a| a.unsafe_reasons.clone()).unwrap_or_default();
    // What to read again to catch a changing source: the superblock and the inner map.
    allocation.map_ranges = inner.map_ranges().shifted(data.start);
    allocation.map_ranges.insert(member.superblock.clone());
    let warnings = inner.warnings.iter().map(|w| format!("{what}: {w}")).collect();
    // Raw inside is raw here too, named as the member.
    let elision = match &inner.elision {
        Elision::Raw(reason) => Elision::Raw(format!("{what}: {reason}")),
        other => other.clone(),
    };
    let container = Container {
        kind: what,
        volumes: vec![Inner { name: "array data".into(), kind: member.level_name(), volume: inner }],
    };
    Ok(Volume {
        size,
        allocation: Some(allocation),
        used,
        elision,
        warnings,
        recognised_as: None,
        inner: Some(container),
    })
}

/// Examines the volumes `parts` of `source` together, so that an LVM VG whose PVs are several
/// of them is mapped as one. Volumes that are not PVs are examined on their own.
pub(crate) fn examine_parts(source: &dyn ReadAt, parts: &[Part], depth: usize) -> Vec<Result<Volume, Error>> {
    let mut results: Vec<Option<Result<Volume, Error>>> = Vec::new();
    let mut pvs = Vec::new();
    for (index, (part, policy)) in parts.iter().enumerate() {
        let examined = (|| {
            let window = Window::new(source, part.start, part.end - part.start)?;
            let pv = !policy.raw
                && match volume_manager(&window) {
                    Ok((md, lvm)) => !md && lvm,
                    Err(error) if policy.rescue => return Ok(Some(unreadable(window.size(), &error))),
                    Err(error) => return Err(error.into()),
                };
            if !pv {
                return examine_at(&window, policy, depth).map(Some);
            }
            match imgstream_lvm::read_pv(&window) {
                Ok(pv) => {
                    pvs.push((index, pv));
                    Ok(None)
                }
                Err(error) => container_error(window.size(), "lvm2", "LVM2 PV", error).map(Some),
            }
        })();
        results.push(examined.transpose());
    }
    if !pvs.is_empty() {
        let (placed, policies): (Vec<Placed<'_>>, Vec<Policy>) = pvs
            .iter()
            .filter_map(|(index, pv)| {
                let (part, policy) = parts.get(*index)?;
                Some((Placed { pv, offset: part.start, size: part.end - part.start }, *policy))
            })
            .unzip();
        let map = imgstream_lvm::map_source(&placed);
        let volumes = physical_volumes(source, &map, &placed, &policies, depth);
        for ((index, _), volume) in pvs.iter().zip(volumes) {
            if let Some(slot) = results.get_mut(*index) {
                *slot = Some(volume);
            }
        }
    }
    results
        .into_iter()
        .map(|r| r.unwrap_or_else(|| Err(Error::Io(std::io::Error::other("volume not examined")))))
        .collect()
}

/// What one LV turned out to be, the source bytes of its extents that may be zeroed, and the
/// source bytes of its allocation map.
struct Examined {
    inner: Inner,
    elidable: RangeSet,
    map: RangeSet,
}

fn logical_volume(source: &dyn ReadAt, lv: &LogicalVolume, policy: &Policy, depth: usize) -> Result<Examined, Error> {
    let name = format!("{}/{}", lv.vg, lv.name);
    let inner = |volume| Inner { name: name.clone(), kind: lv.kind.clone(), volume };
    let stretches = match &lv.map {
        Ok(stretches) => stretches.clone(),
        Err(reason) => {
            // Hidden LVs are parts of a visible one, whose warning says it all.
            let volume = Volume::raw(lv.size, None, reason.clone(), !lv.hidden);
            return Ok(Examined { inner: inner(volume), elidable: RangeSet::new(), map: RangeSet::new() });
        }
    };
    let mapped = Mapped::new(source, stretches)?;
    let volume = examine_at(&mapped, policy, depth + 1)
        .map_err(|e| Error::Inside { volume: format!("LV {name}"), message: e.to_string() })?;
    let mut pieces = Vec::new();
    if !matches!(volume.elision, Elision::Raw(_)) {
        for free in volume.used.complement(0..mapped.size()).iter() {
            mapped.source_ranges(free, |range| pieces.push(range));
        }
    }
    let mut map = Vec::new();
    for range in volume.map_ranges().iter() {
        mapped.source_ranges(range, |piece| map.push(piece));
    }
    Ok(Examined { inner: inner(volume), elidable: sorted_set(pieces), map: sorted_set(map) })
}

/// A set from ranges in any order: sorted first, so that building it stays linear (a striped
/// LV's pieces alternate between its columns).
fn sorted_set(mut ranges: Vec<Range<u64>>) -> RangeSet {
    ranges.sort_unstable_by_key(|range| range.start);
    ranges.into_iter().collect()
}

/// Each PV's volume: always-copied bytes, LV extents as their filesystems allow, free extents zeroed.
fn physical_volumes(
    source: &dyn ReadAt,
    map: &SourceMap,
    placed: &[Placed<'_>],
    policies: &[Policy],
    depth: usize,
) -> Vec<Result<Volume, Error>> {
    // An LV is examined under the policy of the first PV holding its extents.
    let policy_of = |lv: &LogicalVolume| lv.extents.first().and_then(|(i, _)| policies.get(*i)).or(policies.first());
    let examined: Vec<Result<Examined, String>> = map
        .lvs
        .iter()
        .map(|lv| {
            let policy = policy_of(lv).copied().unwrap_or_default();
            logical_volume(source, lv, &policy, depth).map_err(|e| e.to_string())
        })
        .collect();
    let mut volumes = Vec::new();
    for (index, (pv, layout)) in placed.iter().zip(&map.pvs).enumerate() {
        let layout = match layout {
            Ok(layout) => layout,
            Err(reason) => {
                volumes.push(Ok(raw(pv.size, "lvm2", format!("LVM2 PV: {reason}"))));
                continue;
            }
        };
        // LVs with extents here, and those with none in the source (thin, snapshot, raid) on every PV of their VG.
        let on_this_pv = |lv: &&(&LogicalVolume, &Result<Examined, String>)| {
            lv.0.extents.iter().any(|(i, _)| *i == index) || (lv.0.extents.is_empty() && lv.0.vg == layout.vg)
        };
        let lvs: Vec<(&LogicalVolume, &Result<Examined, String>)> = map.lvs.iter().zip(&examined).collect();
        let lvs: Vec<_> = lvs.iter().filter(on_this_pv).collect();
        if let Some((_, Err(message))) = lvs.iter().find(|(_, e)| e.is_err()) {
            volumes.push(Err(Error::Inside {
                volume: format!("LVM2 PV {} of VG {}", layout.name, layout.vg),
                message: message.clone(),
            }));
            continue;
        }
        let range = pv.offset..pv.offset + pv.size;
        let mut elidable: Vec<Range<u64>> = layout.free.iter().collect();
        let mut container =
            Container { kind: format!("LVM2 PV {} of VG {}", layout.name, layout.vg), volumes: Vec::new() };
        let mut allocation = Allocation::new("lvm2", layout.extent_size, RangeSet::new());
        // The label sectors and metadata areas, and the LVs' maps: read again to catch changes.
        let mut map: Vec<Range<u64>> = pv.pv.label.metadata_areas.clone();
        map.push(0..LABEL_SECTORS_END.min(pv.size));
        let mut warnings = Vec::new();
        let mut forced = false;
        for (_, examined) in &lvs {
            let Ok(examined) = examined else { continue };
            let to_pv = |p: Range<u64>| p.start - pv.offset..p.end - pv.offset;
            elidable.extend(examined.elidable.overlapping(range.clone()).map(to_pv));
            map.extend(examined.map.overlapping(range.clone()).map(to_pv));
            let volume = &examined.inner.volume;
            let name = &examined.inner.name;
            warnings.extend(volume.warnings.iter().map(|w| format!("LV {name}: {w}")));
            if let Some(a) = &volume.allocation {
                allocation.unsafe_reasons.extend(a.unsafe_reasons.iter().map(|r| format!("LV {name}: {r}")));
            }
            forced |= volume.elision == Elision::Forced;
            container.volumes.push(examined.inner.clone());
        }
        let mut used = sorted_set(elidable).complement(0..pv.size);
        used.union_with(&layout.always);
        allocation.used = used.clone();
        allocation.map_ranges = sorted_set(map);
        allocation.details = details(layout);
        let elision = if forced { Elision::Forced } else { Elision::Elided };
        volumes.push(Ok(Volume {
            size: pv.size,
            allocation: Some(allocation),
            used,
            elision,
            warnings,
            recognised_as: None,
            inner: Some(container),
        }));
    }
    volumes
}

fn details(layout: &imgstream_lvm::PvLayout) -> Vec<(String, String)> {
    let free_extents = layout.free.total() / layout.extent_size;
    let seqnos: Vec<String> = layout.seqnos.iter().map(u64::to_string).collect();
    let mut details = vec![
        ("volume group".into(), layout.vg.clone()),
        ("physical volume".into(), layout.name.clone()),
        ("metadata seqno".into(), seqnos.join(", ")),
        ("extent size".into(), format!("{} bytes", layout.extent_size)),
        ("extents".into(), format!("{} ({free_extents} free)", layout.pe_count)),
    ];
    if layout.wrapped {
        details.push(("metadata text".into(), "wraps around its circular buffer".into()));
    }
    if layout.precommitted {
        details.push(("pre-committed metadata".into(), "present (both versions taken into account)".into()));
    }
    details
}
