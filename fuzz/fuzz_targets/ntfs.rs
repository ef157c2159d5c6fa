//! Fuzzes imgstream_ntfs. NTFS metadata is spread over the volume ($MFT near the start, the
//! mirror in the middle, $Bitmap and the root index wherever mkntfs put them), so the input is
//! not a prefix of the volume but a sparse description of it (see [`Sparse`]): small seeds
//! (fuzz/seeds/ntfs, made by make-seeds.py from the fixtures) then describe whole volumes that
//! analyse successfully, and the fuzzer mutates the metadata itself.
//!
//! Properties: no panic, and no panic caught by the crate's guard either (each one is a check
//! we are missing); used ranges inside the volume; the boot sector always kept; the same answer
//! twice; `--drop-pagefile` only ever removes ranges; errors on one line.

#![no_main]

mod sparse;

use imgstream_blockio::ReadAt;
use imgstream_ntfs::{Error, Options};
use libfuzzer_sys::fuzz_target;
use sparse::Sparse;

fn analyze(volume: &Sparse<'_>, drop_pagefile: bool) -> Option<imgstream_volume::Allocation> {
    match imgstream_ntfs::analyze(volume, &Options { drop_pagefile }) {
        Ok(allocation) => Some(allocation),
        Err(Error::Panicked { message, .. }) => panic!("the ntfs crate panicked: {message}"),
        Err(error) => {
            assert!(!error.to_string().contains('\n'), "multi-line error: {error}");
            None
        }
    }
}

fuzz_target!(|input: &[u8]| {
    let volume = Sparse::new(input);
    let _ = imgstream_ntfs::detect(&volume);
    let Some(kept) = analyze(&volume, false) else { return };
    assert!(kept.used.end() <= volume.size(), "used range past the end of the volume");
    assert!(kept.used.contains_range(0..512), "the boot sector must always be kept");
    assert_eq!(Some(&kept), analyze(&volume, false).as_ref(), "two analyses differ");
    let dropped = analyze(&volume, true).expect("--drop-pagefile failed where the plain analysis worked");
    assert!(dropped.used.contains_range(0..512), "--drop-pagefile zeroed the boot sector");
    for range in dropped.used.iter() {
        assert!(kept.used.contains_range(range), "--drop-pagefile added a used range");
    }
});
