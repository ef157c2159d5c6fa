//! Unit tests on headers laid out as include/linux/swap.h describes and on the committed
//! fixtures (made by mkswap). The end-to-end checks live in tests/swap.rs.

#![allow(clippy::indexing_slicing)] // test code on images it built itself

use super::*;
use imgstream_volume::{Classify, ErrorClass};
use std::process::Command;

fn fixture(name: &str) -> Vec<u8> {
    let path = format!("{}/../../fixtures/{name}.img.zst", env!("CARGO_MANIFEST_DIR"));
    let output = Command::new("zstd").args(["-q", "-d", "-c", &path]).output().expect("run zstd");
    assert!(output.status.success(), "zstd -d {path}: {}", String::from_utf8_lossy(&output.stderr));
    output.stdout
}

/// A swap area of `pages` pages of `page_size` bytes, every byte 0xA5 but the header.
fn swap_area(page_size: usize, pages: usize, big_endian: bool, bad: &[u32]) -> Vec<u8> {
    let mut image = vec![0xA5u8; page_size * pages];
    image[..page_size].fill(0);
    let put = |image: &mut Vec<u8>, at: usize, value: u32| {
        let bytes = if big_endian { value.to_be_bytes() } else { value.to_le_bytes() };
        image[at..at + 4].copy_from_slice(&bytes);
    };
    put(&mut image, 1024, 1);
    put(&mut image, 1028, (pages - 1) as u32);
    put(&mut image, 1032, bad.len() as u32);
    for (i, &page) in bad.iter().enumerate() {
        put(&mut image, 1536 + 4 * i, page);
    }
    image[1052..1056].copy_from_slice(b"root");
    image[page_size - 10..page_size].copy_from_slice(b"SWAPSPACE2");
    image
}

fn elided(allocation: &Allocation, size: u64) -> u64 {
    size - allocation.used.total()
}

#[test]
fn header_page_is_kept_and_every_swap_page_elided() {
    for page_size in [4096, 8192, 16384, 32768, 65536] {
        for big_endian in [false, true] {
            let image = swap_area(page_size, 20, big_endian, &[3, 19]);
            assert!(detect(&image).unwrap());
            let allocation = analyze(&image).unwrap_or_else(|e| panic!("{page_size}: {e}"));
            assert_eq!(allocation.unit, page_size as u64);
            assert_eq!(allocation.used, RangeSet::from_range(0..page_size as u64), "{page_size} {big_endian}");
            assert!(allocation.warnings.is_empty());
            assert!(allocation.details.contains(&("bad pages".into(), "2".into())));
            assert!(allocation.details.contains(&("label".into(), "root".into())));
        }
    }
}

#[test]
fn bytes_past_the_last_page_are_copied() {
    let mut image = swap_area(4096, 10, false, &[]);
    image.extend_from_slice(&[1; 1000]); // a partial page
    let mut shorter = image.clone();
    shorter[1028..1032].copy_from_slice(&7u32.to_le_bytes()); // last_page 7 of 9
    let allocation = analyze(&image).unwrap();
    assert_eq!(allocation.used.iter().collect::<Vec<_>>(), vec![0..4096, 40960..41960]);
    let allocation = analyze(&shorter).unwrap();
    assert_eq!(allocation.used.iter().collect::<Vec<_>>(), vec![0..4096, 32768..41960]);
}

#[test]
fn hibernation_signatures_copy_everything_with_a_warning() {
    for signature in [&b"S1SUSPEND\0"[..], b"S2SUSPEND\0", b"ULSUSPEND\0", b"LINHIB0001", b"XYZZY\0\0\0\0\0"] {
        let mut image = swap_area(4096, 16, false, &[]);
        // struct swsusp_header: orig_sig keeps "SWAPSPACE2", sig takes the hibernation mark.
        image[4076..4086].copy_from_slice(b"SWAPSPACE2");
        image[4086..4096].copy_from_slice(signature);
        assert!(detect(&image).unwrap());
        let allocation = analyze(&image).unwrap();
        assert_eq!(allocation.used, RangeSet::from_range(0..image.len() as u64));
        assert_eq!(allocation.warnings.len(), 1);
        assert!(allocation.warnings[0].contains("hibernation image"), "{:?}", allocation.warnings);
        assert!(allocation.unsafe_reasons.is_empty());
    }
}

#[test]
fn the_old_format_is_unsupported_and_bad_headers_are_corrupt() {
    let good = swap_area(4096, 16, false, &[]);
    let mut old = good.clone();
    old[4086..4096].copy_from_slice(b"SWAP-SPACE");
    assert_eq!(analyze(&old).unwrap_err().class(), ErrorClass::Unsupported);

    let cases: [(&str, usize, u32); 6] = [
        ("last_page 16 is outside 1..=15", 1028, 16),
        ("last_page 0 is outside", 1028, 0),
        ("last_page 4294967295 is outside", 1028, u32::MAX),
        ("nr_badpages 638 is more than the 637", 1032, 638),
        ("version 0x2, only version 1", 1024, 2),
        ("bad page 0 is page 0, outside 1..=15", 1032, 1),
    ];
    for (expected, at, value) in cases {
        let mut image = good.clone();
        image[at..at + 4].copy_from_slice(&value.to_le_bytes());
        let error = analyze(&image).unwrap_err();
        assert!(error.to_string().contains(expected), "expected {expected:?} in {error}");
        assert!(
            error.to_string().starts_with(&format!(
                "swap header at byte {}",
                if at == 1032 && value == 1 { 1536 } else { at as u64 }
            )),
            "{error}"
        );
    }
}

#[test]
fn small_and_foreign_volumes_are_not_swap() {
    let image = swap_area(4096, 4, false, &[]);
    assert!(!detect(&&image[..4095]).unwrap());
    assert!(analyze(&&image[..4095]).is_err());
    assert!(!detect(&vec![0u8; 65536 * 2]).unwrap());
    // A 64 KiB-page swap is found at its own page size, not at 4 KiB.
    let big = swap_area(65536, 3, false, &[]);
    assert_eq!(analyze(&big).unwrap().unit, 65536);
}

#[test]
fn fixtures_match_what_mkswap_was_told() {
    // fixtures/gen/swap.sh: 4 MiB with 4 KiB pages; 4 MiB + 8 KiB with 64 KiB pages.
    let small = fixture("swap-4k");
    let allocation = analyze(&small).unwrap();
    assert_eq!(allocation.used, RangeSet::from_range(0..4096));
    assert!(allocation.details.contains(&("uuid".into(), "5a5a5a5a-0004-4000-8000-000000000004".into())));
    assert!(allocation.details.contains(&("label".into(), "swap4k".into())));
    let big = fixture("swap-64k");
    let allocation = analyze(&big).unwrap();
    assert_eq!(allocation.used.iter().collect::<Vec<_>>(), vec![0..65536, 4 << 20..(4 << 20) + 8192]);
    assert_eq!(elided(&allocation, big.len() as u64), (4 << 20) - 65536);
    let hibernated = fixture("swapbad-hibernated");
    let allocation = analyze(&hibernated).unwrap();
    assert_eq!(allocation.used.total(), hibernated.len() as u64);
    assert!(allocation.warnings[0].contains("\"S1SUSPEND\" at byte 4086"), "{:?}", allocation.warnings);
}

#[test]
fn every_single_byte_corruption_of_the_header_is_handled() {
    for name in ["swap-4k", "swap-64k"] {
        let mut image = fixture(name);
        let size = image.len() as u64;
        let page = if name == "swap-4k" { 4096 } else { 65536 };
        let targets: Vec<usize> = (1024..1600).chain(4076..4096).chain(page - 20..page).collect();
        for at in targets {
            let original = image[at];
            for value in [0x00, 0xFF, original ^ 0x01, original ^ 0x80] {
                image[at] = value;
                if let Ok(allocation) = analyze(&image) {
                    assert!(allocation.used.end() <= size, "{name} byte {at} = {value:#x}: used past the end");
                    assert!(allocation.used.contains_range(0..4096), "{name} byte {at} = {value:#x}: header elided");
                }
            }
            image[at] = original;
        }
    }
}
