//! The VG metadata text as a model: the volume group's extent size, its physical volumes (UUID,
//! first extent, extent count) and its logical volumes with their segments.
//!
//! Only what mapping needs is validated here (numbers in range, stripes well formed, segments
//! contiguous); which LVs may be read through their map is decided in [`crate::group`].

use crate::config::{Section, Value};
use crate::label::SECTOR;

/// One version of a VG's metadata.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VolumeGroup {
    /// VG name.
    pub name: String,
    /// VG UUID without dashes.
    pub id: String,
    /// Sequence number: every metadata change increments it.
    pub seqno: u64,
    /// Extent size in bytes.
    pub extent_size: u64,
    /// The PVs, in the order of the text.
    pub pvs: Vec<PvEntry>,
    /// The LVs, in the order of the text.
    pub lvs: Vec<LvEntry>,
}

/// A PV as the VG metadata describes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PvEntry {
    /// Its name inside the metadata (`pv0`), which segments refer to.
    pub name: String,
    /// PV UUID without dashes, as in the label.
    pub uuid: String,
    /// Byte offset of extent 0 in the PV.
    pub pe_start: u64,
    /// Number of extents.
    pub pe_count: u64,
}

/// An LV as the VG metadata describes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LvEntry {
    /// LV name.
    pub name: String,
    /// Whether `status` holds "VISIBLE" (hidden LVs are parts of others: `_tmeta`, `_rimage_0`...).
    pub visible: bool,
    /// Whether `status` holds "LOCKED" (being moved by `pvmove`).
    pub locked: bool,
    /// Its segments, in order of `start_extent`, contiguous from 0.
    pub segments: Vec<Segment>,
}

/// One segment of an LV.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Segment {
    /// First LV extent it covers.
    pub start_extent: u64,
    /// Number of LV extents.
    pub extent_count: u64,
    /// `type`: "striped" (linear is striped with one stripe), "thin-pool", "snapshot", "raid1"...
    pub kind: String,
    /// Striped: bytes per stripe chunk (0 for one stripe).
    pub stripe_size: u64,
    /// Striped: the `stripes` array as (PV or LV name, first extent) pairs. Other types: every
    /// (name, number) pair found in their arrays (a `mirror` segment's legs, for example).
    pub areas: Vec<(String, u64)>,
    /// Other types: every (key, string) they hold, array elements included: the LVs they are
    /// built from (`origin`, `cow_store`, `thin_pool`, `raids`...).
    pub names: Vec<(String, String)>,
}

impl Segment {
    /// Whether this is a (linear or) striped segment, the only kind we read through.
    pub fn is_striped(&self) -> bool {
        self.kind == "striped"
    }
}

/// The problem with a metadata text; the caller names the text.
pub(crate) type Problem = String;

fn uuid(text: &str) -> String {
    text.chars().filter(|c| *c != '-').collect()
}

fn number(section: &Section, key: &str, what: &str) -> Result<u64, Problem> {
    section
        .int(key)
        .and_then(|value| u64::try_from(value).ok())
        .ok_or_else(|| format!("{what}: no non-negative integer \"{key}\""))
}

/// The VG described by a metadata text: the one top-level section.
pub(crate) fn volume_group(text: &Section) -> Result<VolumeGroup, Problem> {
    let mut sections = text.sections();
    let (Some((name, vg)), None) = (sections.next(), sections.next()) else {
        return Err("not exactly one volume group section".into());
    };
    let what = format!("VG {name}");
    let id = uuid(vg.str("id").ok_or_else(|| format!("{what}: no \"id\""))?);
    let seqno = number(vg, "seqno", &what)?;
    let extent_size = number(vg, "extent_size", &what)?
        .checked_mul(SECTOR)
        .filter(|size| *size > 0)
        .ok_or_else(|| format!("{what}: extent size out of range"))?;
    let mut pvs = Vec::new();
    for (pv_name, pv) in vg.section("physical_volumes").map(Section::sections).into_iter().flatten() {
        let what = format!("{what}, PV {pv_name}");
        let pe_start = number(pv, "pe_start", &what)?
            .checked_mul(SECTOR)
            .ok_or_else(|| format!("{what}: pe_start out of range"))?;
        let pe_count = number(pv, "pe_count", &what)?;
        let uuid = uuid(pv.str("id").ok_or_else(|| format!("{what}: no \"id\""))?);
        pvs.push(PvEntry { name: pv_name.to_owned(), uuid, pe_start, pe_count });
    }
    let mut lvs = Vec::new();
    for (lv_name, lv) in vg.section("logical_volumes").map(Section::sections).into_iter().flatten() {
        lvs.push(logical_volume(lv_name, lv, &format!("{what}, LV {lv_name}"))?);
    }
    Ok(VolumeGroup { name: name.to_owned(), id, seqno, extent_size, pvs, lvs })
}

fn logical_volume(name: &str, lv: &Section, what: &str) -> Result<LvEntry, Problem> {
    let status: Vec<&str> = match lv.get("status") {
        Some(Value::Array(items)) => {
            items.iter().filter_map(|v| if let Value::Str(s) = v { Some(s.as_str()) } else { None }).collect()
        }
        _ => Vec::new(),
    };
    let segment_count = number(lv, "segment_count", what)?;
    // lvm reads every non-empty section of an LV as a segment, and refuses the VG when they do
    // not number `segment_count`: a segment left unread would leave its extents looking free.
    let sections = lv.sections().filter(|(_, section)| !section.entries.is_empty()).count();
    if sections as u64 != segment_count {
        return Err(format!("{what}: segment_count {segment_count}, but {sections} segment sections"));
    }
    let mut segments = Vec::new();
    let mut next_extent = 0u64;
    for index in 1..=segment_count {
        let key = format!("segment{index}");
        let section = lv.section(&key).ok_or_else(|| format!("{what}: no {key} of {segment_count}"))?;
        let segment = segment(section, &format!("{what}, {key}"))?;
        if segment.start_extent != next_extent {
            return Err(format!("{what}, {key}: starts at extent {}, expected {next_extent}", segment.start_extent));
        }
        next_extent =
            next_extent.checked_add(segment.extent_count).ok_or_else(|| format!("{what}: too many extents"))?;
        segments.push(segment);
    }
    Ok(LvEntry {
        name: name.to_owned(),
        visible: status.contains(&"VISIBLE"),
        locked: status.contains(&"LOCKED"),
        segments,
    })
}

fn segment(section: &Section, what: &str) -> Result<Segment, Problem> {
    let start_extent = number(section, "start_extent", what)?;
    let extent_count = number(section, "extent_count", what)?;
    let kind = section.str("type").ok_or_else(|| format!("{what}: no \"type\""))?.to_owned();
    let mut segment =
        Segment { start_extent, extent_count, kind, stripe_size: 0, areas: Vec::new(), names: Vec::new() };
    if segment.is_striped() {
        let stripe_count = number(section, "stripe_count", what)?;
        let Some(Value::Array(stripes)) = section.get("stripes") else {
            return Err(format!("{what}: no \"stripes\" array"));
        };
        segment.areas = pairs(stripes);
        if stripe_count == 0 || segment.areas.len() as u64 != stripe_count || stripes.len() as u64 != 2 * stripe_count {
            return Err(format!("{what}: stripe_count {stripe_count} with {} stripes entries", stripes.len()));
        }
        if extent_count % stripe_count != 0 {
            return Err(format!("{what}: {extent_count} extents do not divide into {stripe_count} stripes"));
        }
        if stripe_count > 1 {
            segment.stripe_size = number(section, "stripe_size", what)?
                .checked_mul(SECTOR)
                .filter(|size| *size > 0)
                .ok_or_else(|| format!("{what}: stripe_size out of range"))?;
        }
        return Ok(segment);
    }
    for (key, value) in &section.entries {
        match value {
            Value::Str(name) if key != "type" => segment.names.push((key.clone(), name.clone())),
            Value::Array(items) => {
                let strings = items.iter().filter_map(|v| if let Value::Str(s) = v { Some(s) } else { None });
                segment.names.extend(strings.map(|s| (key.clone(), s.clone())));
                segment.areas.extend(pairs(items));
            }
            _ => {}
        }
    }
    Ok(segment)
}

/// The (string, non-negative integer) pairs of an array, in order.
fn pairs(items: &[Value]) -> Vec<(String, u64)> {
    items
        .windows(2)
        .filter_map(|pair| match pair {
            [Value::Str(name), Value::Int(extent)] => Some((name.clone(), u64::try_from(*extent).ok()?)),
            _ => None,
        })
        .collect()
}
