//! `imgstream info`: what a source holds and how much `part` would elide.

use crate::cli::InfoArgs;
use crate::disk;
use crate::size::{human, percent};
use crate::{Failure, warn};
use imgstream_blockio::mounts::{Mount, mounts_over};
use imgstream_blockio::{ReadAt, Source, SourceKind};
use imgstream_fs::{Elision, OnUnsafe, Policy, Volume};
use imgstream_ptable::TableKind;
use serde_json::{Value, json};

/// The version of `info --json`'s shape, documented in `docs/info-schema.json`: a removed or
/// renamed key, or a changed meaning, bumps it.
const SCHEMA: u32 = 1;

/// "block device" or "image file".
fn kind_name(source: &Source) -> &'static str {
    match source.kind() {
        SourceKind::BlockDevice => "block device",
        SourceKind::ImageFile => "image file",
    }
}

/// A details label as a stable JSON key: "cluster size" -> "cluster_size".
fn snake_case(label: &str) -> String {
    let words: Vec<String> =
        label.split(|c: char| !c.is_ascii_alphanumeric()).filter(|w| !w.is_empty()).map(str::to_lowercase).collect();
    words.join("_")
}

/// Text or null: JSON says "absent" with null, never with an empty string.
fn text_or_null(text: &str) -> Value {
    if text.is_empty() { Value::Null } else { Value::from(text) }
}

pub(crate) fn run(args: &InfoArgs) -> Result<(), Failure> {
    let source = Source::open(&args.source)?;
    if let Some(text) = disk_report(&source, args)? {
        return disk::print(&text);
    }
    let mounts = mounts_over(&source)?;
    let mounts: Vec<&Mount> = mounts.iter().collect();
    let examined = unless_mounted(imgstream_fs::examine(&source, &examine_policy(args)), source.size(), &mounts)?;
    let volume = volume_report(&examined, &mounts, args.on_unsafe);
    let (size, used, elidable) = (source.size(), volume.get("used").cloned(), volume.get("elidable").cloned());
    let report = json!({
        "schema": SCHEMA,
        "source": args.source.display().to_string(),
        "kind": kind_name(&source),
        "size": size,
        "table": null,
        "partitions": [],
        "volume": volume,
        "raw": 0,
        "total": { "size": size, "used": used, "elidable": elidable },
    });
    let text = if args.json {
        serde_json::to_string_pretty(&report).expect("OK to unwrap: a Value always serialises") + "\n"
    } else {
        table(&report)
    };
    disk::print(&text)
}

/// How `info` examines a volume: as if forced, so that an unsafe volume still shows its
/// numbers; [`volume_report`] then says what `--on-unsafe` would do with it.
pub(crate) fn examine_policy(args: &InfoArgs) -> Policy {
    Policy {
        on_unsafe: OnUnsafe::Force,
        drop_pagefile: args.drop_pagefile,
        deep_check: args.deep_check,
        ..Policy::default()
    }
}

/// A volume mounted read-write may read as corrupt (it changes while read): then its mount,
/// which [`volume_report`] names, is the answer rather than the parse error.
pub(crate) fn unless_mounted<E: Into<Failure>>(
    examined: Result<Volume, E>,
    size: u64,
    mounts: &[&Mount],
) -> Result<Volume, Failure> {
    match examined {
        Err(error) if mounts.iter().any(|m| m.writable) => Ok(Volume::raw(size, None, error.into().to_string(), false)),
        other => other.map_err(Into::into),
    }
}

/// What `part` would do with the volume `examined` (under [`examine_policy`]), covered by
/// `mounts`, as JSON: filesystem, unit, size, used, free, elidable bytes, status ("elided",
/// "raw", "refused" or "forced") with its reason, details.
pub(crate) fn volume_report(examined: &Volume, mounts: &[&Mount], on_unsafe: OnUnsafe) -> Value {
    let allocation = examined.allocation.as_ref();
    let unsafe_reasons = allocation.map(|a| a.unsafe_reasons.join("; ")).unwrap_or_default();
    let (status, reason) = match (&examined.elision, mounts.iter().find(|m| m.writable)) {
        // It changes while read: that, not what its journal or dirty flag says, is the reason.
        (_, Some(mount)) => (
            "refused",
            format!(
                "{} (unmount it, remount it read-only or image a snapshot; --force images it anyway)",
                mount.describe()
            ),
        ),
        (Elision::Raw(reason), None) => ("raw", reason.clone()),
        _ if unsafe_reasons.is_empty() => ("elided", String::new()),
        _ => match on_unsafe {
            OnUnsafe::Raw => ("raw", format!("unsafe to elide: {unsafe_reasons} (--on-unsafe force elides anyway)")),
            OnUnsafe::Refuse => ("refused", format!("unsafe to elide: {unsafe_reasons}")),
            OnUnsafe::Force => ("forced", format!("elided despite: {unsafe_reasons}")),
        },
    };
    let used = allocation.map_or(examined.size, |a| a.used.clipped(examined.size).total());
    // Only what `part` would really zero counts: a raw or refused volume elides nothing.
    let elidable = if matches!(status, "elided" | "forced") { examined.size - used } else { 0 };
    let mut details: serde_json::Map<String, Value> = allocation
        .map(|a| a.details.iter().map(|(k, v)| (snake_case(k), Value::from(v.clone()))).collect())
        .unwrap_or_default();
    for mount in mounts.iter().filter(|m| !m.writable) {
        details.insert("mounted".into(), Value::from(mount.describe()));
    }
    // The volumes inside an LVM2 PV or md member, each reported the same way.
    let container = examined.inner.as_ref().map(|c| {
        let volumes: Vec<Value> = c
            .volumes
            .iter()
            .map(|inner| {
                let mut row = serde_json::Map::new();
                row.insert("name".into(), Value::from(inner.name.clone()));
                row.insert("type".into(), Value::from(inner.kind.clone()));
                if let Value::Object(fields) = volume_report(&inner.volume, &[], on_unsafe) {
                    row.extend(fields);
                }
                Value::Object(row)
            })
            .collect();
        json!({ "kind": c.kind, "volumes": volumes })
    });
    json!({
        // What a crate parsed or a signature named; null when nothing was recognised.
        "filesystem": examined.allocation.as_ref().map(|a| a.filesystem.as_str()).or(examined.recognised_as),
        "unit": allocation.map(|a| a.unit),
        "size": examined.size,
        "used": used,
        "free": examined.size - used,
        "elidable": elidable,
        "status": status,
        "reason": text_or_null(&reason),
        "warnings": allocation.map(|a| a.warnings.clone()).unwrap_or_default(),
        "details": details,
        "container": container,
        // Where the allocation map lives: what `part` reads again to catch a changing source.
        "map_ranges": examined.map_ranges().iter().map(|r| [r.start, r.end]).collect::<Vec<_>>(),
    })
}

/// The tree of volumes inside a container, one indented row each: name, type, filesystem,
/// size, used, elidable, and why one is not simply elided.
pub(crate) fn container_rows(volume: &Value, indent: &str, text: &mut String) {
    let Some(container) = volume["container"].as_object() else { return };
    let number = |v: &Value| v.as_u64().unwrap_or(0);
    let text_of = |v: &Value| v.as_str().unwrap_or("").to_owned();
    text.push_str(&format!("{indent}{}\n", text_of(&container["kind"])));
    for inner in container["volumes"].as_array().into_iter().flatten() {
        let status = match inner["status"].as_str().unwrap_or("") {
            "elided" => String::new(),
            other => format!(" [{other}: {}]", text_of(&inner["reason"])),
        };
        text.push_str(&format!(
            "{indent}  {:<20} {:<10} {:<10} {:>10} used {:>10} elidable {:>10}{status}\n",
            text_of(&inner["name"]),
            text_of(&inner["type"]),
            inner["filesystem"].as_str().unwrap_or("unknown"),
            human(number(&inner["size"])),
            human(number(&inner["used"])),
            human(number(&inner["elidable"])),
        ));
        container_rows(inner, &format!("{indent}    "), text);
    }
}

fn table(report: &Value) -> String {
    let number = |v: &Value| v.as_u64().unwrap_or(0);
    let text = |v: &Value| v.as_str().unwrap_or("").to_owned();
    let volume = &report["volume"];
    let size = number(&volume["size"]);
    let mut rows: Vec<(String, String)> = vec![
        (
            "source".into(),
            format!("{} ({}, {} bytes)", text(&report["source"]), text(&report["kind"]), number(&report["size"])),
        ),
        ("filesystem".into(), volume["filesystem"].as_str().unwrap_or("unknown").to_owned()),
    ];
    if number(&volume["unit"]) > 0 {
        rows.push(("unit".into(), format!("{} bytes", number(&volume["unit"]))));
    }
    for key in ["used", "free"] {
        rows.push((
            key.into(),
            format!("{} ({:.1}%)", human(number(&volume[key])), percent(number(&volume[key]), size)),
        ));
    }
    let reason = text(&volume["reason"]);
    rows.push((
        "elision".into(),
        match volume["status"].as_str().unwrap_or("") {
            "elided" => format!(
                "{} would be zeroed ({:.1}%)",
                human(number(&volume["elidable"])),
                percent(number(&volume["elidable"]), size)
            ),
            "refused" => format!("refused by `part`: {reason}"),
            "forced" => format!("{} would be zeroed, {reason}", human(number(&volume["elidable"]))),
            _ => format!("none, copied raw: {reason}"),
        },
    ));
    for (key, value) in volume["details"].as_object().into_iter().flatten() {
        rows.push((key.replace('_', " "), text(value)));
    }
    for warning in volume["warnings"].as_array().into_iter().flatten() {
        rows.push(("warning".into(), text(warning)));
    }
    let width = rows.iter().map(|(label, _)| label.len()).max().unwrap_or(0) + 2;
    let mut lines: String = rows.iter().map(|(label, value)| format!("{label:<width$}{value}\n")).collect();
    container_rows(volume, "", &mut lines);
    lines
}

/// `info` on a source with a partition table: the table, each partition's filesystem, size,
/// used and elidable bytes, and totals. `None` if the source has no table (one volume).
fn disk_report(source: &Source, args: &InfoArgs) -> Result<Option<String>, Failure> {
    let layout = match imgstream_ptable::read_layout(source, disk::sector_size_hint(source)) {
        Ok(layout) if layout.table != TableKind::None => layout,
        Ok(_) => return Ok(None),
        // `info` still describes it as one volume; `disk` would refuse it.
        Err(e) => {
            warn(&format!("not read as a partitioned disk: {e}"));
            return Ok(None);
        }
    };
    let mounts = mounts_over(source)?;
    let mut partitions = Vec::new();
    let (mut used, mut elidable) = (layout.raw.total(), 0u64);
    let all = disk::examine_partitions(source, &layout, |_| examine_policy(args));
    for (partition, examined) in layout.partitions.iter().zip(all) {
        let over: Vec<&Mount> = mounts.iter().filter(|m| m.overlaps(&partition.range())).collect();
        let examined = unless_mounted(examined, partition.len, &over)?;
        let volume = volume_report(&examined, &over, args.on_unsafe);
        // What the image keeps: all of a partition that is not elided, whatever it uses.
        let partition_elidable = volume.get("elidable").and_then(Value::as_u64).unwrap_or(0);
        used += partition.len - partition_elidable;
        elidable += partition_elidable;
        let type_name = imgstream_ptable::partition_type(&partition.type_id).map(|t| t.name);
        partitions.push(json!({
            "index": partition.index,
            "start": partition.start,
            "size": partition.len,
            "type": partition.type_id,
            "type_name": type_name,
            "name": text_or_null(&partition.name),
            "uuid": text_or_null(&partition.uuid),
            "bootable": partition.bootable,
            "volume": volume,
        }));
    }
    let report = json!({
        "schema": SCHEMA,
        "source": source.path().display().to_string(),
        "kind": kind_name(source),
        "size": layout.size,
        "table": {
            "type": layout.table.name(),
            "sector_size": layout.sector_size,
            "id": text_or_null(&layout.disk_id),
            "extended": layout.extended.as_ref().map(|r| json!({"start": r.start, "size": r.end - r.start})),
            "structures": layout.structures.iter().map(|s| json!({"what": s.what, "start": s.range.start, "size": s.range.end - s.range.start})).collect::<Vec<_>>(),
            "warnings": layout.warnings,
        },
        "partitions": partitions,
        "volume": null,
        "raw": layout.raw.total(),
        "total": { "size": layout.size, "used": used, "elidable": elidable },
    });
    Ok(Some(if args.json {
        serde_json::to_string_pretty(&report).expect("OK to unwrap: a Value always serialises") + "\n"
    } else {
        disk_table(&report)
    }))
}

fn disk_table(report: &Value) -> String {
    let number = |v: &Value| v.as_u64().unwrap_or(0);
    let text_of = |v: &Value| v.as_str().unwrap_or("").to_owned();
    let table = &report["table"];
    let mut text = format!(
        "source      {} ({}, {} bytes, {})\ntable       {}, {}-byte sectors, id {}\n",
        text_of(&report["source"]),
        text_of(&report["kind"]),
        number(&report["size"]),
        human(number(&report["size"])),
        text_of(&table["type"]),
        number(&table["sector_size"]),
        text_of(&table["id"])
    );
    for warning in table["warnings"].as_array().into_iter().flatten() {
        text.push_str(&format!("warning     {}\n", text_of(warning)));
    }
    text.push_str(&format!(
        "\n{:>4} {:>10} {:>10} {:<10} {:>10} {:>10}  {}\n",
        "#", "start", "size", "filesystem", "used", "elidable", "type / status"
    ));
    for p in report["partitions"].as_array().into_iter().flatten() {
        let v = &p["volume"];
        let status = match v["status"].as_str().unwrap_or("") {
            "elided" => String::new(),
            status => format!(" [{status}: {}]", text_of(&v["reason"])),
        };
        let type_name = p["type_name"].as_str().map_or_else(|| text_of(&p["type"]), str::to_owned);
        let name = if text_of(&p["name"]).is_empty() { String::new() } else { format!(" \"{}\"", text_of(&p["name"])) };
        text.push_str(&format!(
            "{:>3}{} {:>10} {:>10} {:<10} {:>10} {:>10}  {}{name}{status}\n",
            number(&p["index"]),
            // `*` marks the MBR active (GPT legacy BIOS bootable) partition, as fdisk does.
            if p["bootable"].as_bool() == Some(true) { "*" } else { " " },
            human(number(&p["start"])),
            human(number(&p["size"])),
            v["filesystem"].as_str().unwrap_or("unknown"),
            human(number(&v["used"])),
            human(number(&v["elidable"])),
            type_name,
        ));
        for warning in v["warnings"].as_array().into_iter().flatten() {
            text.push_str(&format!("    warning: {}\n", text_of(warning)));
        }
        container_rows(v, "    ", &mut text);
    }
    let total = &report["total"];
    let size = number(&total["size"]);
    text.push_str(&format!(
        "\nraw areas   {} (table, gaps, boot loader; copied verbatim)\ntotal       {}: used {} ({:.1}%), elidable {} ({:.1}%)\n",
        human(number(&report["raw"])),
        human(size),
        human(number(&total["used"])),
        percent(number(&total["used"]), size),
        human(number(&total["elidable"])),
        percent(number(&total["elidable"]), size)
    ));
    text
}
