//! From the PVs found in one source to what may be read through a map.
//!
//! PVs are grouped by VG UUID; every metadata version of a VG (both slots of every metadata
//! area on every PV of the source) is parsed, and the answer is their union:
//! - an extent is free only if no LV uses it in any version;
//! - an LV is read through its map only if every version agrees on that map, all its segments
//!   are linear or striped on PVs of this source, it is visible, no other LV is built on it
//!   (snapshot origin or COW store, thin pool, raid image, cache origin...), and no other LV
//!   uses any of its extents in any version. Every other LV is copied raw, with the reason.
//!
//! A VG whose metadata versions disagree on the extent size or a PV's first extent, whose
//! extents do not fit in their PV, or that lvm itself refuses (a segment naming a volume the VG
//! lacks or its own LV, one extent mapped twice in one version), makes its PVs raw, with the
//! reason.

use crate::PhysicalVolume;
use crate::config;
use crate::metadata::{self, LvEntry, Segment, VolumeGroup};
use imgstream_blockio::Stretch;
use imgstream_extents::RangeSet;
use std::collections::BTreeMap;
use std::ops::Range;

/// A PV and where it lies in the source.
#[derive(Clone, Copy, Debug)]
pub struct Placed<'a> {
    /// What its label and metadata areas hold.
    pub pv: &'a PhysicalVolume,
    /// Its first byte in the source.
    pub offset: u64,
    /// Its size in bytes (the partition's).
    pub size: u64,
}

/// What the PVs of one source hold.
#[derive(Clone, Debug)]
pub struct SourceMap {
    /// One entry per PV given, in order: its layout, or why it must be copied raw.
    pub pvs: Vec<Result<PvLayout, String>>,
    /// Every LV with extents on a PV that has a layout.
    pub lvs: Vec<LogicalVolume>,
}

/// The layout of one PV in its VG.
#[derive(Clone, Debug)]
pub struct PvLayout {
    /// VG name (newest version).
    pub vg: String,
    /// The PV's name in the VG metadata (`pv0`).
    pub name: String,
    /// Sequence numbers of the metadata versions found, ascending.
    pub seqnos: Vec<u64>,
    /// Extent size in bytes.
    pub extent_size: u64,
    /// Number of extents (the smallest any version gives).
    pub pe_count: u64,
    /// PV bytes to copy whatever the LVs hold: label, metadata areas, the space before the first
    /// extent and after the last.
    pub always: RangeSet,
    /// PV bytes of extents that no LV uses in any metadata version.
    pub free: RangeSet,
    /// Whether some metadata text on this PV wrapped around its circular buffer.
    pub wrapped: bool,
    /// Whether this PV holds pre-committed metadata (slot 1).
    pub precommitted: bool,
}

/// An LV, as all metadata versions together describe it.
#[derive(Clone, Debug)]
pub struct LogicalVolume {
    /// VG name.
    pub vg: String,
    /// LV name.
    pub name: String,
    /// "linear", "striped", or the first segment type that is not striped ("thin-pool", "raid1"...).
    pub kind: String,
    /// Size in bytes (newest version).
    pub size: u64,
    /// Hidden LVs are parts of others.
    pub hidden: bool,
    /// Its extents on each PV of the source (index into the PVs given), PV-relative bytes,
    /// union over the metadata versions. Empty for an LV built only from other LVs (thin,
    /// snapshot, raid) or lying wholly on PVs outside the source.
    pub extents: Vec<(usize, RangeSet)>,
    /// How to read it from the source, or why it must be copied raw.
    pub map: Result<Vec<Stretch>, String>,
}

/// Maps the PVs found in one source.
pub fn map_source(placed: &[Placed<'_>]) -> SourceMap {
    // Each PV starts out raw with the first reason that applies; mapping its VG replaces that.
    let parsed: Vec<Result<Vec<VolumeGroup>, String>> = placed.iter().map(|pv| versions(pv.pv)).collect();
    let all_versions = || parsed.iter().flatten().flatten();
    let mut pvs: Vec<Result<PvLayout, String>> = Vec::new();
    // Which VG each PV belongs to: its own metadata's, else the VG whose metadata lists it.
    let mut groups: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    for (index, (pv, versions)) in placed.iter().zip(&parsed).enumerate() {
        let uuid = &pv.pv.label.uuid;
        let own = versions.as_ref().map(|v| v.first().map(|vg| vg.id.clone()));
        let listed = || all_versions().find(|vg| vg.pvs.iter().any(|p| &p.uuid == uuid)).map(|vg| vg.id.clone());
        let duplicates = placed.iter().filter(|other| &other.pv.label.uuid == uuid).count();
        pvs.push(Err(match own.map(|own| own.or_else(listed)) {
            Err(reason) => reason.clone(),
            _ if duplicates > 1 => format!("PV UUID {uuid} appears {duplicates} times in this source"),
            Ok(Some(id)) => {
                groups.entry(id).or_default().push(index);
                "no version of its VG's metadata lists this PV's UUID".into()
            }
            Ok(None) if pv.pv.label.metadata_areas.is_empty() => {
                "PV without a metadata area, and no PV of this source describes its VG".into()
            }
            Ok(None) => "PV in no volume group (its metadata areas hold no VG)".into(),
        }));
    }
    let mut lvs = Vec::new();
    for (id, members) in groups {
        let mut versions: Vec<VolumeGroup> = Vec::new();
        for vg in members.iter().filter_map(|&i| parsed.get(i)).flatten().flatten() {
            if vg.id == id && !versions.contains(vg) {
                versions.push(vg.clone());
            }
        }
        versions.sort_by_key(|vg| vg.seqno);
        match map_group(&versions, &members, placed) {
            Ok((layouts, group_lvs)) => {
                for (index, layout) in layouts {
                    if let Some(slot) = pvs.get_mut(index) {
                        *slot = Ok(layout);
                    }
                }
                lvs.extend(group_lvs);
            }
            Err(reason) => {
                for &index in &members {
                    if let Some(slot) = pvs.get_mut(index) {
                        *slot = Err(reason.clone());
                    }
                }
            }
        }
    }
    SourceMap { pvs, lvs }
}

/// Every distinct VG metadata version on one PV.
fn versions(pv: &PhysicalVolume) -> Result<Vec<VolumeGroup>, String> {
    let mut versions: Vec<VolumeGroup> = Vec::new();
    for text in &pv.texts {
        let name = || format!("LVM2 metadata text (slot {}) of the area at byte {}", text.slot, text.area);
        let section = config::parse(&text.text).map_err(|e| format!("{}: {e}", name()))?;
        let vg = metadata::volume_group(&section).map_err(|e| format!("{}: {e}", name()))?;
        if let Some(first) = versions.first().filter(|first| first.id != vg.id) {
            return Err(format!("{}: describes VG {}, another copy VG {}", name(), vg.name, first.name));
        }
        if !versions.contains(&vg) {
            versions.push(vg);
        }
    }
    Ok(versions)
}

/// One LV in one metadata version.
#[derive(Clone, Debug, PartialEq)]
struct LvVersion {
    kind: String,
    size: u64,
    hidden: bool,
    extents: BTreeMap<usize, RangeSet>,
    stretches: Vec<Stretch>,
    raw: Option<String>,
}

type Layouts = Vec<(usize, PvLayout)>;

fn map_group(
    versions: &[VolumeGroup],
    members: &[usize],
    placed: &[Placed<'_>],
) -> Result<(Layouts, Vec<LogicalVolume>), String> {
    let newest = versions.last().ok_or("no metadata")?;
    let vg_name = newest.name.clone();
    let fail = |problem: String| format!("VG {vg_name}: {problem}");
    if versions.iter().any(|vg| vg.extent_size != newest.extent_size) {
        return Err(fail("metadata versions disagree on the extent size".into()));
    }
    let extent_size = newest.extent_size;
    // Per member: (name, pe_start, smallest pe_count) over the versions listing it.
    let mut layout_of: BTreeMap<usize, (String, u64, u64)> = BTreeMap::new();
    for vg in versions {
        for entry in &vg.pvs {
            let Some(&index) = members.iter().find(|&&i| placed.get(i).is_some_and(|p| p.pv.label.uuid == entry.uuid))
            else {
                continue;
            };
            let size = placed.get(index).map_or(0, |p| p.size);
            let end = entry.pe_count.checked_mul(extent_size).and_then(|len| len.checked_add(entry.pe_start));
            if end.is_none_or(|end| end > size) {
                return Err(fail(format!(
                    "PV {}: {} extents from byte {} do not fit in its {size} bytes",
                    entry.name, entry.pe_count, entry.pe_start
                )));
            }
            let layout = layout_of.entry(index).or_insert_with(|| (entry.name.clone(), entry.pe_start, entry.pe_count));
            if layout.1 != entry.pe_start {
                return Err(fail(format!("metadata versions disagree on the first extent of PV {}", entry.name)));
            }
            layout.2 = layout.2.min(entry.pe_count);
        }
    }
    // Each version's LVs, by name.
    let mut by_name: BTreeMap<String, Vec<(u64, LvVersion)>> = BTreeMap::new();
    for vg in versions {
        for (name, lv) in lv_versions(vg, members, placed)? {
            by_name.entry(name).or_default().push((vg.seqno, lv));
        }
    }
    let seqnos: Vec<u64> = versions.iter().map(|vg| vg.seqno).collect();
    let mut lvs: Vec<LogicalVolume> = Vec::new();
    for (name, found) in by_name {
        let (newest_seqno, last) = found.last().expect("OK to unwrap: every name was found once");
        let mut extents: BTreeMap<usize, RangeSet> = BTreeMap::new();
        for (_, lv) in &found {
            for (index, set) in &lv.extents {
                extents.entry(*index).or_default().union_with(set);
            }
        }
        let map = if let Some(reason) = found.iter().find_map(|(_, lv)| lv.raw.clone()) {
            Err(reason)
        } else if found.len() < versions.len() {
            Err(format!("not in every metadata version (seqno {newest_seqno}, found {} of {:?})", found.len(), seqnos))
        } else if found.iter().any(|(_, lv)| lv.stretches != last.stretches) {
            Err(format!("metadata versions {seqnos:?} disagree on its map"))
        } else {
            Ok(last.stretches.clone())
        };
        lvs.push(LogicalVolume {
            vg: vg_name.clone(),
            name,
            kind: last.kind.clone(),
            size: last.size,
            hidden: last.hidden,
            extents: extents.into_iter().collect(),
            map,
        });
    }
    // In the newest text's order, which is lvm's (creation) order; LVs it lacks come last.
    lvs.sort_by_key(|lv| newest.lvs.iter().position(|entry| entry.name == lv.name).unwrap_or(usize::MAX));
    // An LV read through its map must own its extents in every version.
    let shared: Vec<Option<String>> = lvs
        .iter()
        .enumerate()
        .map(|(i, lv)| {
            let other = lvs.iter().enumerate().find(|(j, other)| *j != i && overlaps(&lv.extents, &other.extents))?;
            Some(format!("shares extents with LV {} in some metadata version", other.1.name))
        })
        .collect();
    for (lv, reason) in lvs.iter_mut().zip(shared) {
        if let (Some(reason), Ok(_)) = (reason, &lv.map) {
            lv.map = Err(reason);
        }
    }
    let mut layouts = Vec::new();
    for (index, (name, pe_start, pe_count)) in layout_of {
        let Some(pv) = placed.get(index) else { continue };
        let data = pe_start..pe_start + pe_count * extent_size;
        let mut always = RangeSet::from_range(0..pv.size).difference(&RangeSet::from_range(data.clone()));
        for area in &pv.pv.label.metadata_areas {
            always.insert(area.start.min(pv.size)..area.end.min(pv.size));
        }
        let mut taken = always.clone();
        for lv in &lvs {
            for (_, set) in lv.extents.iter().filter(|(i, _)| *i == index) {
                taken.union_with(set);
            }
        }
        let free = taken.complement(data);
        layouts.push((
            index,
            PvLayout {
                vg: vg_name.clone(),
                name,
                seqnos: seqnos.clone(),
                extent_size,
                pe_count,
                always,
                free,
                wrapped: pv.pv.texts.iter().any(|t| t.wrapped),
                precommitted: pv.pv.texts.iter().any(|t| t.slot == 1),
            },
        ));
    }
    Ok((layouts, lvs))
}

fn overlaps(a: &[(usize, RangeSet)], b: &[(usize, RangeSet)]) -> bool {
    a.iter().any(|(i, set)| {
        b.iter().filter(|(j, _)| j == i).any(|(_, other)| set.iter().any(|range| other.covered_in(range) > 0))
    })
}

/// Each LV of `vg` with its extents on the members, its map over the source, and whether it
/// must be copied raw.
fn lv_versions(vg: &VolumeGroup, members: &[usize], placed: &[Placed<'_>]) -> Result<Vec<(String, LvVersion)>, String> {
    let extent = vg.extent_size;
    let fail = |problem: String| format!("VG {} (seqno {}): {problem}", vg.name, vg.seqno);
    // Why other LVs must be copied raw: they are built on by these.
    let mut built_on: BTreeMap<&str, String> = BTreeMap::new();
    for lv in &vg.lvs {
        for segment in lv.segments.iter().filter(|s| !s.is_striped()) {
            for (key, target) in &segment.names {
                if target != &lv.name && vg.lvs.iter().any(|other| &other.name == target) {
                    built_on.entry(target).or_insert_with(|| role(key, &segment.kind, &lv.name));
                }
            }
        }
    }
    let mut result = Vec::new();
    // The extents striped segments map in this version, per member: each at most once.
    let mut mapped_in_version: BTreeMap<usize, RangeSet> = BTreeMap::new();
    for lv in &vg.lvs {
        let mut version = LvVersion {
            kind: kind(lv),
            size: 0,
            hidden: !lv.visible,
            extents: BTreeMap::new(),
            stretches: Vec::new(),
            raw: None,
        };
        for segment in &lv.segments {
            let len =
                segment.extent_count.checked_mul(extent).ok_or_else(|| fail(format!("LV {} too large", lv.name)))?;
            version.size = version.size.saturating_add(len);
            let striped = segment.is_striped();
            let stripes = segment.areas.len().max(1) as u64;
            let area_extents = if striped { segment.extent_count / stripes } else { segment.extent_count };
            let mut columns = Vec::new();
            for (name, first) in &segment.areas {
                let Some(pv) = vg.pvs.iter().find(|pv| &pv.name == name) else {
                    // lvm refuses such a VG ("Couldn't find volume"): the extents this area held
                    // would otherwise count as free.
                    if name == &lv.name || !vg.lvs.iter().any(|other| &other.name == name) {
                        return Err(fail(format!(
                            "LV {}, segment at extent {}: {name:?} is neither a PV nor another LV of the VG",
                            lv.name, segment.start_extent
                        )));
                    }
                    if striped {
                        version.raw.get_or_insert(format!("is stacked on LV {name} (a pvmove in progress?)"));
                    }
                    continue;
                };
                // Other segment types name PV areas without their length: take the most they can use.
                let past = if striped {
                    first.checked_add(area_extents)
                } else {
                    Some(first.saturating_add(area_extents).min(pv.pe_count))
                };
                if past.is_none_or(|past| past > pv.pe_count || *first >= pv.pe_count) {
                    return Err(fail(format!(
                        "LV {}: extents {first}.. of PV {name} past its {} extents",
                        lv.name, pv.pe_count
                    )));
                }
                let member =
                    members.iter().copied().find(|&i| placed.get(i).is_some_and(|p| p.pv.label.uuid == pv.uuid));
                match member {
                    Some(index) => {
                        // A member's extents were checked to fit in it, so this cannot overflow.
                        let range: Range<u64> = pv.pe_start + first * extent..pv.pe_start + past.unwrap_or(0) * extent;
                        columns.push(placed.get(index).map_or(0, |p| p.offset) + range.start);
                        // lvm refuses such a VG ("PV segments corrupted"): a block of the extent
                        // free at one LV offset would be zeroed though used at the other, and
                        // extents an LV no longer maps after such an edit would count as free.
                        if striped {
                            let mapped = mapped_in_version.entry(index).or_default();
                            if mapped.covered_in(range.clone()) > 0 {
                                return Err(fail(format!(
                                    "LV {}: extents {first}..{} of PV {name} are mapped twice in this version",
                                    lv.name,
                                    past.unwrap_or(0)
                                )));
                            }
                            mapped.insert(range.clone());
                        }
                        version.extents.entry(index).or_default().insert(range);
                    }
                    None => {
                        version.raw.get_or_insert(format!(
                            "has extents on PV {name} (UUID {}), which is not in this source",
                            pv.uuid
                        ));
                    }
                }
            }
            if !striped {
                version.raw.get_or_insert(why_raw(segment, lv));
            } else if stripes > 1 && (area_extents * extent) % segment.stripe_size != 0 {
                version.raw.get_or_insert(format!("stripe size {} does not divide its stripes", segment.stripe_size));
            } else if columns.len() as u64 == stripes {
                let chunk = if stripes > 1 { segment.stripe_size } else { len };
                version.stretches.push(Stretch { len, chunk, columns });
            }
        }
        if let Some(why) = built_on.get(lv.name.as_str()) {
            version.raw.get_or_insert_with(|| why.clone());
        }
        if version.raw.is_none() && lv.locked {
            version.raw = Some("locked by a pvmove in progress".into());
        }
        if version.raw.is_none() && !lv.visible {
            version.raw = Some("hidden LV (part of another LV)".into());
        }
        result.push((lv.name.clone(), version));
    }
    Ok(result)
}

/// "linear", "striped", or the first segment type that is not striped.
fn kind(lv: &LvEntry) -> String {
    if let Some(other) = lv.segments.iter().find(|s| !s.is_striped()) {
        return other.kind.clone();
    }
    let striped = lv.segments.iter().any(|s| s.areas.len() > 1);
    if striped { "striped" } else { "linear" }.into()
}

/// Why an LV with a segment of another type than striped is copied raw.
fn why_raw(segment: &Segment, lv: &LvEntry) -> String {
    let kind = segment.kind.as_str();
    match kind {
        "thin" => "thin LV: its blocks live in a thin pool and may be shared with thin snapshots".into(),
        "thin-pool" => "thin pool: copied with its hidden data and metadata LVs".into(),
        "snapshot" => format!("old-style snapshot {}: its exception store is copied raw", lv.name),
        _ if kind.starts_with("raid") || kind == "mirror" => {
            format!("{kind} LV: its images are copied raw (no single map to read it through)")
        }
        _ => format!("{kind} LV: only linear and striped LVs are read through their map"),
    }
}

/// Why an LV named under `key` by a segment of type `kind` of LV `user` is copied raw.
fn role(key: &str, kind: &str, user: &str) -> String {
    match (kind, key) {
        ("snapshot", "origin") => {
            format!("origin of old-style snapshot {user}: the snapshot still reads the origin's freed blocks")
        }
        ("snapshot", "cow_store") => format!("COW store of snapshot {user}"),
        _ => format!("{key} of {kind} LV {user}"),
    }
}
