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

use imgstream_blockio::ReadAt;
use imgstream_ntfs::{Error, Options};
use libfuzzer_sys::fuzz_target;
use std::io;

/// A volume described by the input: a u16 (big-endian) size in 4 KiB units (up to 256 MiB),
/// then chunks of (byte offset u32 LE, length u16 LE, bytes); every other byte reads as zero,
/// later chunks override earlier ones, and a short last chunk keeps the bytes present.
struct Sparse<'a> {
    size: u64,
    chunks: Vec<(u64, &'a [u8])>,
}

impl<'a> Sparse<'a> {
    fn new(input: &'a [u8]) -> Self {
        let (size, mut rest) = match input {
            [hi, lo, rest @ ..] => (u64::from(u16::from_be_bytes([*hi, *lo])) * 4096, rest),
            _ => (0, input),
        };
        let mut chunks = Vec::new();
        while let [a, b, c, d, e, f, tail @ ..] = rest {
            let offset = u64::from(u32::from_le_bytes([*a, *b, *c, *d]));
            let len = usize::from(u16::from_le_bytes([*e, *f])).min(tail.len());
            let (bytes, next) = tail.split_at(len);
            chunks.push((offset, bytes));
            rest = next;
        }
        Self { size, chunks }
    }
}

impl ReadAt for Sparse<'_> {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        let end = offset.checked_add(buf.len() as u64).filter(|&end| end <= self.size);
        let Some(end) = end else {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "past the end"));
        };
        buf.fill(0);
        for &(start, bytes) in &self.chunks {
            let from = start.max(offset);
            let to = (start + bytes.len() as u64).min(end);
            if from < to {
                let (src, dst) = ((from - start) as usize, (from - offset) as usize);
                let n = (to - from) as usize;
                buf[dst..dst + n].copy_from_slice(&bytes[src..src + n]);
            }
        }
        Ok(())
    }
    fn size(&self) -> u64 {
        self.size
    }
}

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
