#![allow(clippy::indexing_slicing)] // test code: a panic is a failed test

use super::*;
use imgstream_stream::StreamSink;
use std::num::NonZeroUsize;

/// A 64 KiB source whose byte i is (i % 251) + 1 (never zero), and a view of two files.
fn view() -> View {
    let source: Vec<u8> = (0..65536u32).map(|i| (i % 251) as u8 + 1).collect();
    let mut used = RangeSet::new();
    used.insert(4096..8192);
    used.insert(8192..12288); // touches the previous one: merged
    used.insert(20000..20010);
    let files = vec![
        ViewFile { name: "part1.img".into(), content: Content::Source { start: 1024, len: 32768, used } },
        ViewFile { name: "manifest.json".into(), content: Content::Bytes(b"{}\n".to_vec()) },
    ];
    View::new(Box::new(source), files).expect("view")
}

#[test]
fn reads_used_ranges_from_the_source_and_zeros_elsewhere() {
    let view = view();
    let mut buf = vec![0xffu8; 32768];
    view.read_at(0, 0, &mut buf).expect("read");
    for (i, &b) in buf.iter().enumerate() {
        let used = (4096..12288).contains(&i) || (20000..20010).contains(&i);
        let expected = if used { ((1024 + i) % 251) as u8 + 1 } else { 0 };
        assert_eq!(b, expected, "byte {i}");
    }
    let mut past = [0u8; 2];
    assert!(view.read_at(0, 32767, &mut past).is_err());
    let mut manifest = [0u8; 3];
    view.read_at(1, 0, &mut manifest).expect("manifest");
    assert_eq!(&manifest, b"{}\n");
    assert!(view.errors().is_empty());
}

#[test]
fn seek_data_and_hole_walk_the_merged_ranges() {
    let view = view();
    assert_eq!(view.seek_data(0, 0), Some(4096));
    assert_eq!(view.seek_hole(0, 0), Some(0));
    assert_eq!(view.seek_hole(0, 4096), Some(12288));
    assert_eq!(view.seek_hole(0, 5000), Some(12288));
    assert_eq!(view.seek_data(0, 12288), Some(20000));
    assert_eq!(view.seek_data(0, 20010), None);
    assert_eq!(view.seek_hole(0, 20010), Some(20010));
    assert_eq!(view.seek_hole(0, 32768), None);
    assert_eq!(view.seek_data(1, 1), Some(1));
    assert_eq!(view.seek_hole(1, 0), Some(3));
    assert!(view.is_hole(0, 0, 4096) && !view.is_hole(0, 0, 4097));
}

/// A source whose reads fail.
struct Failing;
impl ReadAt for Failing {
    fn read_exact_at(&self, _buf: &mut [u8], offset: u64) -> io::Result<()> {
        Err(io::Error::other(format!("bad sector at {offset}")))
    }
    fn size(&self) -> u64 {
        1 << 20
    }
}

#[test]
fn a_failed_read_is_recorded_and_reading_holes_still_works() {
    let files = vec![ViewFile {
        name: "part2.img".into(),
        content: Content::Source { start: 4096, len: 65536, used: RangeSet::from_range(8192..12288) },
    }];
    let view = View::new(Box::new(Failing), files).expect("view");
    let mut buf = vec![0u8; 4096];
    view.read_at(0, 0, &mut buf).expect("a hole needs no read");
    let error = view.read_at(0, 8192, &mut buf).expect_err("must fail");
    assert!(error.to_string().contains("part2.img"), "{error}");
    assert_eq!(view.errors().len(), 1);
    assert!(view.errors()[0].contains("at byte 12288"), "{:?}", view.errors());
}

#[test]
fn a_window_outside_the_source_is_refused() {
    let files =
        vec![ViewFile { name: "x".into(), content: Content::Source { start: 1, len: 1 << 20, used: RangeSet::new() } }];
    assert!(View::new(Box::new(Failing), files).is_err());
}

/// Parses one header the way tar readers do (ustar octal or GNU base-256 size).
fn parsed_size(header: &[u8; 512]) -> u64 {
    let field = &header[124..136];
    if field[0] & 0x80 != 0 {
        field[1..].iter().fold(u64::from(field[0] & 0x7f), |n, &b| (n << 8) | u64::from(b))
    } else {
        let text = std::str::from_utf8(&field[..11]).expect("octal");
        u64::from_str_radix(text, 8).expect("octal")
    }
}

#[test]
fn tar_headers_carry_small_and_huge_sizes_with_a_valid_checksum() {
    for size in [0, 1, 8 << 30, (8 << 30) - 1, 1 << 40] {
        let header = tar::header("part1.img", size, 1_700_000_000).expect("header");
        assert_eq!(parsed_size(&header), size);
        let stored = u32::from_str_radix(std::str::from_utf8(&header[148..154]).expect("octal"), 8).expect("octal");
        let sum: u32 =
            header.iter().enumerate().map(|(i, &b)| if (148..156).contains(&i) { 32 } else { u32::from(b) }).sum();
        assert_eq!(stored, sum);
        assert_eq!(&header[0..10], b"part1.img\0");
    }
    assert!(tar::header(&"x".repeat(100), 1, 0).is_err());
}

#[test]
fn the_tar_stream_holds_every_file_padded_and_ends_only_when_finished() {
    let view = view();
    let mut sink = StreamSink::new(Vec::new());
    let options = imgstream_stream::Options { threads: NonZeroUsize::MIN, block_size: 4096 };
    view.write_tar(&mut sink, options, &|| Ok(())).expect("tar");
    let unfinished = sink.into_inner();
    assert_eq!(unfinished.len(), 512 + 32768 + 512 + 512);
    let mut expected = vec![0u8; 32768];
    view.read_at(0, 0, &mut expected).expect("read");
    assert_eq!(&unfinished[512..512 + 32768], &expected[..]);
    assert_eq!(&unfinished[512 + 32768 + 512..][..3], b"{}\n");
    let stop = view.write_tar(&mut StreamSink::new(Vec::new()), options, &|| Err(io::Error::other("interrupted")));
    assert!(stop.is_err());
    let mut sink = StreamSink::new(Vec::new());
    tar::finish(&mut sink).expect("finish");
    assert_eq!(sink.into_inner(), vec![0u8; 1024]);
}

#[test]
fn the_borg_map_covers_the_exact_size_with_alternating_states() {
    let mut used = RangeSet::new();
    used.insert(0..4096);
    used.insert(8192..16384);
    assert_eq!(map::borg_map(&used, 20000), "0 4096 data\n4096 4096 zero\n8192 8192 data\n16384 3616 zero\n");
    assert_eq!(map::borg_map(&RangeSet::new(), 10), "0 10 zero\n");
    assert_eq!(map::borg_map(&RangeSet::from_range(0..50), 10), "0 10 data\n");
    assert_eq!(map::borg_map(&RangeSet::new(), 0), "");
}

/// A 128 MiB source of ones that records the advice it is given.
#[derive(Default)]
struct Advised {
    prefetched: Mutex<Vec<std::ops::Range<u64>>>,
    dropped: Mutex<Vec<std::ops::Range<u64>>>,
}
impl ReadAt for Advised {
    fn read_exact_at(&self, buf: &mut [u8], _offset: u64) -> io::Result<()> {
        buf.fill(1);
        Ok(())
    }
    fn size(&self) -> u64 {
        128 << 20
    }
    fn drop_cache(&self, range: std::ops::Range<u64>) {
        self.dropped.lock().unwrap().push(range);
    }
    fn prefetch(&self, range: std::ops::Range<u64>) {
        self.prefetched.lock().unwrap().push(range);
    }
}

#[test]
fn reads_ahead_the_used_bytes_once_and_drops_well_behind_the_reader() {
    // Leaked: the view owns a `'static` reader, and the test reads the record after.
    let source: &'static Advised = Box::leak(Box::default());
    let mut used = RangeSet::new();
    used.insert(4096..12288);
    used.insert(20000..20010);
    used.insert(40 << 20..41 << 20);
    let files =
        vec![ViewFile { name: "part1.img".into(), content: Content::Source { start: 1024, len: 64 << 20, used } }];
    let view = View::new(Box::new(source), files).expect("view");
    let mut buf = vec![0u8; 6000];
    view.read_at(0, 0, &mut buf).expect("read");
    // Ahead of the read: the rest of the first used range and the second, in source offsets;
    // the third is beyond the window.
    assert_eq!(*source.prefetched.lock().unwrap(), [7024..13312, 21024..21034]);
    // The next read is still inside the window advised: no new advice.
    view.read_at(0, 6000, &mut buf).expect("read");
    assert_eq!(source.prefetched.lock().unwrap().len(), 2);
    assert!(source.dropped.lock().unwrap().is_empty(), "nothing dropped so close to the reader");
    // Far ahead: the window moves there, and everything up to a step behind is dropped.
    view.read_at(0, 40 << 20, &mut buf).expect("read");
    let (ahead, behind) = (1024 + (40 << 20) + 6000..1024 + (41 << 20), 1024..1024 + (24 << 20));
    assert_eq!(source.prefetched.lock().unwrap()[2..], vec![ahead]);
    assert_eq!(*source.dropped.lock().unwrap(), vec![behind]);
}

/// A 64 KiB source of ones whose bytes 16384..32768 are a hole (a sparse image file).
struct Sparse;
impl ReadAt for Sparse {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        for (i, byte) in buf.iter_mut().enumerate() {
            *byte = u8::from(!(16384..32768).contains(&(offset + i as u64)));
        }
        Ok(())
    }
    fn size(&self) -> u64 {
        65536
    }
    fn data_in(&self, range: std::ops::Range<u64>) -> Vec<std::ops::Range<u64>> {
        [0..16384, 32768..65536]
            .into_iter()
            .map(|r| r.start.max(range.start)..r.end.min(range.end))
            .filter(|r| r.start < r.end)
            .collect()
    }
}

#[test]
fn the_sources_own_holes_are_holes_of_the_view_and_still_read_as_zeros() {
    let used = RangeSet::from_range(0..40000);
    let files = vec![ViewFile { name: "part1.img".into(), content: Content::Source { start: 8192, len: 40000, used } }];
    let view = View::new(Box::new(Sparse), files).expect("view");
    // File byte 8192 is source byte 16384: the hole runs to file byte 24576.
    assert_eq!(view.used(0).map(|u| u.iter().collect::<Vec<_>>()), Some(vec![0..8192, 24576..40000]));
    assert_eq!(view.seek_hole(0, 0), Some(8192));
    assert_eq!(view.seek_data(0, 8192), Some(24576));
    let mut buf = vec![0xffu8; 40000];
    view.read_at(0, 0, &mut buf).expect("read");
    assert!(buf.iter().enumerate().all(|(i, &b)| b == u8::from(!(8192..24576).contains(&i))));
}
