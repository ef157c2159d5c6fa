//! Deterministic robustness: every byte of the boot sector and of the first MFT records of real
//! fixtures (made by mkntfs + ntfs-3g, fixtures/gen/ntfs.sh) is corrupted in turn, and the image
//! is truncated at many lengths. `analyze` must return Ok or Err, never panic (a panic caught
//! by our guard counts as a failure here too: it means a check is missing), and what it calls
//! used must stay inside the volume.

#![allow(clippy::indexing_slicing, clippy::single_range_in_vec_init, missing_docs)]

use imgstream_blockio::ReadAt;
use imgstream_ntfs::{Error, Options, analyze};
use std::io;
use std::path::Path;
use std::process::Command;

fn fixture(name: &str) -> Vec<u8> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("../../fixtures/{name}.img.zst"));
    let output = Command::new("zstd").arg("-d").arg("-c").arg(&path).output().expect("run zstd");
    assert!(output.status.success(), "zstd -d {}", path.display());
    output.stdout
}

/// `base` with the byte at `offset` replaced by `value`, without copying the image.
struct Patched<'a> {
    base: &'a [u8],
    offset: usize,
    value: u8,
}

impl ReadAt for Patched<'_> {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.base.read_exact_at(buf, offset)?;
        let start = offset as usize;
        if (start..start + buf.len()).contains(&self.offset) {
            buf[self.offset - start] = self.value;
        }
        Ok(())
    }
    fn size(&self) -> u64 {
        self.base.len() as u64
    }
}

fn check(volume: &dyn ReadAt, what: &dyn Fn() -> String) {
    for drop_pagefile in [false, true] {
        match analyze(volume, &Options { drop_pagefile }) {
            Ok(allocation) => {
                assert!(allocation.used.end() <= volume.size(), "{}: used past the end", what());
                assert!(allocation.used.contains_range(0..512), "{}: the boot sector is not kept", what());
            }
            Err(Error::Panicked { message, .. }) => panic!("{}: the ntfs crate panicked: {message}", what()),
            Err(error) => {
                let text = error.to_string();
                assert!(!text.is_empty() && !text.contains('\n'), "{}: error is not one line: {text:?}", what());
            }
        }
    }
}

/// Byte offset of MFT record 0, from the boot sector.
fn mft_offset(image: &[u8]) -> usize {
    let sector = u16::from_le_bytes([image[0x0B], image[0x0C]]) as usize;
    let spc = image[0x0D];
    let cluster = if spc > 128 { 1 << (256 - spc as usize) } else { spc as usize } * sector;
    u64::from_le_bytes(image[0x30..0x38].try_into().unwrap()) as usize * cluster
}

fn corrupt_each_byte(name: &str, ranges: &[std::ops::Range<usize>], values: &[u8]) {
    let image = fixture(name);
    analyze(&image, &Options::default()).expect("the pristine fixture analyses");
    for range in ranges {
        for offset in range.clone() {
            for &value in values {
                if image[offset] == value {
                    continue;
                }
                let patched = Patched { base: &image, offset, value };
                check(&patched, &|| format!("{name}: byte {offset} = {value:#04x}"));
            }
        }
    }
}

#[test]
fn every_boot_sector_byte_corrupted() {
    for name in ["ntfs-c4096", "ntfs-s4096"] {
        corrupt_each_byte(name, &[0..512], &[0x00, 0x01, 0x7F, 0x80, 0xF4, 0xFF]);
    }
}

#[test]
fn every_byte_of_the_first_mft_records_corrupted() {
    // Records 0-7 ($MFT, $MFTMirr, $LogFile, $Volume, $AttrDef, root, $Bitmap, $Boot), and the
    // attribute-list file's records on the fragmented fixture.
    let image = fixture("ntfs-c4096");
    let mft = mft_offset(&image);
    corrupt_each_byte("ntfs-c4096", &[mft..mft + 8 * 1024], &[0x00, 0xFF]);
    let image = fixture("ntfs-fragmented");
    let mft = mft_offset(&image);
    corrupt_each_byte("ntfs-fragmented", &[mft..mft + 8 * 1024, mft + 64 * 1024..mft + 72 * 1024], &[0x00, 0xFF]);
}

#[test]
fn every_truncation_is_an_error_or_ok() {
    let image = fixture("ntfs-c4096");
    let mut len = 0;
    while len < image.len() {
        let truncated = &image[..len];
        check(&truncated, &|| format!("truncated to {len} bytes"));
        len += if len < 8192 { 97 } else { 65521 };
    }
}

/// A fuzz input (fuzz_targets/ntfs.rs format: u16 BE size in 4 KiB units, then chunks of
/// u32 LE offset, u16 LE length, bytes) as the volume it describes.
fn sparse_volume(input: &[u8]) -> Vec<u8> {
    let size = usize::from(u16::from_be_bytes([input[0], input[1]])) * 4096;
    let mut volume = vec![0u8; size];
    let mut rest = &input[2..];
    while let [a, b, c, d, e, f, tail @ ..] = rest {
        let offset = u32::from_le_bytes([*a, *b, *c, *d]) as usize;
        let len = usize::from(u16::from_le_bytes([*e, *f])).min(tail.len());
        let end = (offset + len).min(size);
        if offset < end {
            volume[offset..end].copy_from_slice(&tail[..end - offset]);
        }
        rest = &tail[len..];
    }
    volume
}

/// Every input the fuzzer found a panic with (tests/fuzz-regressions/) now analyses cleanly.
#[test]
fn fuzz_regressions() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fuzz-regressions");
    let mut count = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let volume = sparse_volume(&std::fs::read(&path).unwrap());
        check(&volume, &|| path.display().to_string());
        count += 1;
    }
    assert!(count > 0);
}
