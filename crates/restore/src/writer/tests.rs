#![allow(clippy::indexing_slicing)]

use super::*;
use crate::{OpenOptions, TargetKind};
use imgstream_stream::NoProgress;
use std::os::unix::fs::MetadataExt;

/// An image: data pages at a few places (one not page-aligned), zeros elsewhere, a zero tail.
fn image(len: usize) -> Vec<u8> {
    let mut bytes = vec![0u8; len];
    for (start, end) in
        [(0, 5000), (1 << 20, (1 << 20) + 4096), (3 << 20, (3 << 20) + 100_000), (len - (3 << 20), len - (3 << 20) + 7)]
    {
        for (i, b) in bytes[start..end].iter_mut().enumerate() {
            *b = (i % 251) as u8 + 1;
        }
    }
    bytes
}

/// A reader that returns at most `step` bytes per call, like a pipe.
struct Trickle<'a> {
    bytes: &'a [u8],
    step: usize,
}

impl Read for Trickle<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = buf.len().min(self.step).min(self.bytes.len());
        buf[..n].copy_from_slice(&self.bytes[..n]);
        self.bytes = &self.bytes[n..];
        Ok(n)
    }
}

fn restore_to_file(
    bytes: &[u8],
    sparse: bool,
    step: usize,
    block: usize,
) -> (tempfile::TempDir, std::path::PathBuf, Report) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("out.img");
    let target = Target::open(&path, OpenOptions { sparse, ..Default::default() }).unwrap();
    assert_eq!(target.kind(), TargetKind::File);
    let report = write_stream(&target, &mut Trickle { bytes, step }, 0, None, block, &NoProgress).unwrap();
    target.finish(report.total).unwrap();
    (dir, path, report)
}

#[test]
fn a_sparse_file_gets_the_exact_bytes_and_holes_for_zero_pages() {
    let bytes = image(16 << 20);
    let (_dir, path, report) = restore_to_file(&bytes, true, usize::MAX, DEFAULT_BLOCK_SIZE);
    assert!(std::fs::read(&path).unwrap() == bytes, "contents differ");
    assert_eq!(report.total, bytes.len() as u64);
    let data_pages = bytes.chunks(PAGE_SIZE).filter(|p| !is_zero(p)).count() as u64;
    assert_eq!(report.data, data_pages * PAGE_SIZE as u64);
    // Allocated blocks: the data pages, give or take filesystem metadata blocks.
    let allocated = std::fs::metadata(&path).unwrap().blocks() * 512;
    assert!(
        allocated >= report.data && allocated <= report.data + (64 << 10),
        "allocated {allocated}, data {}",
        report.data
    );
}

#[test]
fn without_sparse_every_byte_is_written() {
    let bytes = image(8 << 20);
    let (_dir, path, _) = restore_to_file(&bytes, false, usize::MAX, DEFAULT_BLOCK_SIZE);
    assert!(std::fs::read(&path).unwrap() == bytes);
    assert!(std::fs::metadata(&path).unwrap().blocks() * 512 >= 8 << 20, "zeros were not written");
}

#[test]
fn the_result_does_not_depend_on_read_sizes_or_block_size() {
    let bytes = image(8 << 20);
    for (step, block) in [(1, 64 << 10), (3000, 4096), (65536, 1 << 20), (1 << 20, 4 << 20), (usize::MAX, 4097)] {
        let (_dir, path, report) = restore_to_file(&bytes, true, step, block);
        assert!(std::fs::read(&path).unwrap() == bytes, "step {step} block {block}");
        assert_eq!(report.total, bytes.len() as u64);
    }
}

#[test]
fn old_file_contents_never_show_through_a_hole() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("old.img");
    std::fs::write(&path, vec![0xEEu8; 8 << 20]).unwrap();
    let bytes = image(8 << 20);
    let target = Target::open(&path, OpenOptions { sparse: true, ..Default::default() }).unwrap();
    let report = write_stream(&target, &mut &bytes[..], 0, None, DEFAULT_BLOCK_SIZE, &NoProgress).unwrap();
    target.finish(report.total).unwrap();
    assert!(std::fs::read(&path).unwrap() == bytes);
}

#[test]
fn streams_shorter_or_longer_than_expected_are_errors() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("out.img");
    let bytes = image(4 << 20);
    let target = Target::open(&path, OpenOptions::default()).unwrap();
    let short = write_stream(&target, &mut &bytes[..], 0, Some(5 << 20), 1 << 20, &NoProgress).unwrap_err();
    assert!(short.to_string().contains("ended after 4194304 bytes, 5242880 were expected"), "{short}");
    let long = write_stream(&target, &mut &bytes[..], 0, Some(3 << 20), 1 << 20, &NoProgress).unwrap_err();
    assert!(long.to_string().contains("longer than the 3145728 bytes expected"), "{long}");
    // A file opened with a length is a region target: nothing may reach past it.
    let sized =
        Target::open(&path, OpenOptions { sparse: true, file_len: Some(6 << 20), ..Default::default() }).unwrap();
    let past = write_stream(&sized, &mut &bytes[..], 3 << 20, None, 1 << 20, &NoProgress).unwrap_err();
    assert!(matches!(past, Error::Long { .. }), "{past}");
    let refused = write_stream(&sized, &mut &bytes[..], 3 << 20, Some(4 << 20), 1 << 20, &NoProgress).unwrap_err();
    assert!(matches!(refused, Error::Refused { .. }), "{refused}");
}

#[test]
fn regions_land_at_their_offsets_in_a_sized_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("disk.img");
    let target =
        Target::open(&path, OpenOptions { sparse: true, file_len: Some(12 << 20), ..Default::default() }).unwrap();
    let a = image(4 << 20);
    let b: Vec<u8> = image(4 << 20).iter().map(|x| x.wrapping_mul(3)).collect();
    write_stream(&target, &mut &b[..], 8 << 20, Some(4 << 20), 1 << 20, &NoProgress).unwrap();
    write_stream(&target, &mut &a[..], 1 << 20, Some(4 << 20), 1 << 20, &NoProgress).unwrap();
    target.finish(12 << 20).unwrap();
    let out = std::fs::read(&path).unwrap();
    assert_eq!(out.len(), 12 << 20);
    assert!(out[1 << 20..5 << 20] == a[..] && out[8 << 20..] == b[..]);
    assert!(out[..1 << 20].iter().chain(&out[5 << 20..8 << 20]).all(|&x| x == 0));
}

#[test]
fn a_failing_reader_reports_how_far_it_got() {
    struct Failing(usize);
    impl Read for Failing {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            if self.0 == 0 {
                return Err(io::Error::other("pipe broke"));
            }
            let n = buf.len().min(self.0);
            buf[..n].fill(1);
            self.0 -= n;
            Ok(n)
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let target = Target::open(&dir.path().join("x"), OpenOptions::default()).unwrap();
    let error = write_stream(&target, &mut Failing(3 << 20), 0, None, 1 << 20, &NoProgress).unwrap_err();
    assert!(error.to_string().contains("after 3145728 bytes: pipe broke"), "{error}");
}

#[test]
fn assume_zeroed_is_refused_for_files_and_odd_targets_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let error =
        Target::open(&dir.path().join("x"), OpenOptions { assume_zeroed: true, ..Default::default() }).unwrap_err();
    assert!(error.to_string().contains("--assume-zeroed is for block devices"), "{error}");
    let error = Target::open(dir.path(), OpenOptions::default()).unwrap_err();
    assert!(error.to_string().contains("not a regular file or block device"), "{error}");
}

#[test]
fn an_endless_stream_stops_at_the_limit_without_hanging() {
    struct Endless;
    impl Read for Endless {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            buf.fill(9);
            Ok(buf.len())
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let target = Target::open(&dir.path().join("x"), OpenOptions::default()).unwrap();
    let error = write_stream(&target, &mut Endless, 0, Some(3 << 20), 1 << 20, &NoProgress).unwrap_err();
    assert!(matches!(error, Error::Long { expected, .. } if expected == 3 << 20), "{error}");
}
