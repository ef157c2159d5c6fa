//! `imgstream info`: what a source holds and how much `part` would elide.

use crate::Failure;
use crate::cli::InfoArgs;
use crate::size::{human, percent};
use imgstream_blockio::{ReadAt, Source, SourceKind};
use imgstream_fs::{Elision, Policy, Volume};
use serde_json::{Value, json};
use std::io::Write;

pub(crate) fn run(args: &InfoArgs) -> Result<(), Failure> {
    let source = Source::open(&args.source)?;
    if let Some(text) = crate::disk::info(&source, args)? {
        return crate::disk::print(&text);
    }
    let report = json!({
        "source": args.source.display().to_string(),
        "kind": match source.kind() { SourceKind::BlockDevice => "block device", SourceKind::ImageFile => "image file" },
        "size": source.size(),
        "volume": volume_report(&source, args)?,
    });
    let text = if args.json {
        serde_json::to_string_pretty(&report).expect("OK to unwrap: a Value always serialises") + "\n"
    } else {
        table(&report)
    };
    std::io::stdout().write_all(text.as_bytes())?;
    Ok(())
}

/// What `part` would do with `volume`, as JSON: filesystem, unit, size, used, free,
/// elidable bytes, status ("elided", "raw" or "refused") with its reason, details.
pub(crate) fn volume_report(volume: &dyn ReadAt, args: &InfoArgs) -> Result<Value, Failure> {
    // Parse as if forced, so that an unsafe volume still shows its numbers; the status says
    // that `part` would refuse it.
    let policy = Policy { raw: false, force: true, drop_pagefile: args.drop_pagefile, deep_check: args.deep_check };
    let examined: Volume = imgstream_fs::examine(volume, &policy)?;
    let allocation = examined.allocation.as_ref();
    let unsafe_reasons = allocation.map(|a| a.unsafe_reasons.clone()).unwrap_or_default();
    let (status, reason) = match &examined.elision {
        Elision::Raw(reason) => ("raw", reason.clone()),
        _ if !unsafe_reasons.is_empty() => ("refused", unsafe_reasons.join("; ")),
        _ => ("elided", String::new()),
    };
    let used = allocation.map_or(examined.size, |a| a.used.clipped(examined.size).total());
    let elidable = if status == "raw" { 0 } else { examined.size - used };
    let details: serde_json::Map<String, Value> = allocation
        .map(|a| a.details.iter().map(|(k, v)| (k.clone(), Value::from(v.clone()))).collect())
        .unwrap_or_default();
    Ok(json!({
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
    }))
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
            "refused" => format!("refused by `part`: {reason} (--raw copies it, --force elides anyway)"),
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
    rows.iter().map(|(label, value)| format!("{label:<width$}{value}\n")).collect()
}
