//! `analyze` on the fixtures (fixtures/gen/ntfs.sh), without the command line: each refusal
//! case gives its reason, the corrupt bitmap its class, and the clean volumes none. The exact
//! used sets are judged against ntfsclone in the workspace's integration tests (tests/ntfs.rs).

#![allow(clippy::indexing_slicing, missing_docs)]

use imgstream_ntfs::{Options, analyze};
use imgstream_volume::{Classify, ErrorClass};
use std::path::Path;
use std::process::Command;

fn fixture(name: &str) -> Vec<u8> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("../../fixtures/{name}.img.zst"));
    let output = Command::new("zstd").arg("-d").arg("-c").arg(&path).output().expect("run zstd");
    assert!(output.status.success(), "zstd -d {}", path.display());
    output.stdout
}

fn detail<'a>(allocation: &'a imgstream_volume::Allocation, key: &str) -> &'a str {
    allocation.details.iter().find(|(k, _)| k == key).map_or("", |(_, v)| v.as_str())
}

#[test]
fn clean_fixtures_have_no_hazards_and_keep_their_tail() {
    for name in ["ntfs-c512", "ntfs-c4096", "ntfs-c65536", "ntfs-s4096", "ntfs-fragmented"] {
        let image = fixture(name);
        let allocation = analyze(&image, &Options::default()).unwrap();
        assert!(allocation.unsafe_reasons.is_empty(), "{name}: {:?}", allocation.unsafe_reasons);
        assert!(allocation.warnings.is_empty(), "{name}: {:?}", allocation.warnings);
        assert_eq!(detail(&allocation, "dirty"), "no", "{name}");
        assert_eq!(detail(&allocation, "$LogFile"), "clean (empty)", "{name}");
        // The last sector (the backup boot sector, or what follows the volume) is always kept.
        let size = image.len() as u64;
        assert!(allocation.used.contains_range(size - 512..size), "{name}");
        assert!(allocation.used.contains_range(0..8192), "{name}: $Boot");
        assert!(allocation.used.total() < size, "{name}: nothing free");
    }
}

#[test]
fn drop_pagefile_removes_exactly_what_info_says_it_saves() {
    for name in ["ntfs-c4096", "ntfs-fragmented", "ntfsbad-hibernated"] {
        let image = fixture(name);
        let kept = analyze(&image, &Options::default()).unwrap();
        let dropped = analyze(&image, &Options { drop_pagefile: true }).unwrap();
        let saving: u64 = detail(&kept, "bytes --drop-pagefile would save").parse().unwrap();
        assert!(saving > 0, "{name}");
        assert_eq!(kept.used.total() - dropped.used.total(), saving, "{name}");
        for range in dropped.used.iter() {
            assert!(kept.used.contains_range(range), "{name}");
        }
    }
    // Hibernated: hiberfil.sys is kept, only pagefile.sys (256 KiB) goes.
    let image = fixture("ntfsbad-hibernated");
    let dropped = analyze(&image, &Options { drop_pagefile: true }).unwrap();
    assert_eq!(detail(&dropped, "bytes --drop-pagefile would save"), (256 << 10).to_string());
    assert!(dropped.warnings.iter().any(|w| w.contains("keeping hiberfil.sys")), "{:?}", dropped.warnings);
}

#[test]
fn each_refusal_fixture_gives_its_reason() {
    for (name, reason) in [
        ("ntfsbad-dirty", "dirty flag is set"),
        ("ntfsbad-hibernated", "hiberfil.sys starts with \"HIBR\""),
        ("ntfsbad-logfile", "needs replaying"),
    ] {
        let allocation = analyze(&fixture(name), &Options::default()).unwrap();
        assert_eq!(allocation.unsafe_reasons.len(), 1, "{name}: {:?}", allocation.unsafe_reasons);
        assert!(allocation.unsafe_reasons[0].contains(reason), "{name}: {:?}", allocation.unsafe_reasons);
    }
    let error = analyze(&fixture("ntfsbad-bitmap"), &Options::default()).unwrap_err();
    assert_eq!(error.class(), ErrorClass::Corrupt);
    assert!(error.to_string().contains("the bitmap cannot be trusted"), "{error}");
}
