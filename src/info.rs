//! `imgstream info`: what a source holds and how much `part` would elide.

use crate::Failure;
use crate::cli::InfoArgs;
use crate::size::{human, percent};
use imgstream_blockio::mounts::{Mount, mounts_over};
use imgstream_blockio::{ReadAt, Source, SourceKind};
use imgstream_fs::{Elision, OnUnsafe, Policy, Volume};
use serde_json::{Value, json};
use std::io::Write;

pub(crate) fn run(args: &InfoArgs) -> Result<(), Failure> {
    let source = Source::open(&args.source)?;
    if let Some(text) = crate::disk::info(&source, args)? {
        return crate::disk::print(&text);
    }
    let mounts = mounts_over(&source)?;
    let mounts: Vec<&Mount> = mounts.iter().collect();
    let examined = unless_mounted(imgstream_fs::examine(&source, &examine_policy(args)), source.size(), &mounts)?;
    let report = json!({
        "source": args.source.display().to_string(),
        "kind": match source.kind() { SourceKind::BlockDevice => "block device", SourceKind::ImageFile => "image file" },
        "size": source.size(),
        "volume": volume_report(&examined, &mounts, args.on_unsafe),
    });
    let text = if args.json {
        serde_json::to_string_pretty(&report).expect("OK to unwrap: a Value always serialises") + "\n"
    } else {
        table(&report)
    };
    std::io::stdout().write_all(text.as_bytes())?;
    Ok(())
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
        .map(|a| a.details.iter().map(|(k, v)| (k.clone(), Value::from(v.clone()))).collect())
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
        "filesystem": examined.filesystem(),
        "unit": allocation.map_or(0, |a| a.unit),
        "size": examined.size,
        "used": used,
        "free": examined.size - used,
        "elidable": elidable,
        "status": status,
        "reason": reason,
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
            text_of(&inner["filesystem"]),
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
        ("filesystem".into(), text(&volume["filesystem"])),
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
    for (label, value) in volume["details"].as_object().into_iter().flatten() {
        rows.push((label.clone(), text(value)));
    }
    for warning in volume["warnings"].as_array().into_iter().flatten() {
        rows.push(("warning".into(), text(warning)));
    }
    let width = rows.iter().map(|(label, _)| label.len()).max().unwrap_or(0) + 2;
    let mut lines: String = rows.iter().map(|(label, value)| format!("{label:<width$}{value}\n")).collect();
    container_rows(volume, "", &mut lines);
    lines
}
