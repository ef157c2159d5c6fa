#![allow(clippy::indexing_slicing)] // test code: a panic is a failed test

use super::*;
use crate::{Content, ViewFile};
use imgstream_blockio::ReadAt;
use imgstream_extents::RangeSet;
use std::io;
use std::time::{Duration, Instant};

const MIB: u64 = 1 << 20;

/// A 64 MiB source whose every 8-byte word holds its own offset (so a misplaced byte shows),
/// failing reads that touch `bad`.
struct Numbered {
    bad: Option<u64>,
}
impl ReadAt for Numbered {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        let end = offset + buf.len() as u64;
        if self.bad.is_some_and(|bad| (offset..end).contains(&bad)) {
            return Err(io::Error::other("bad sector"));
        }
        for (i, byte) in buf.iter_mut().enumerate() {
            let at = offset + i as u64;
            *byte = (at / 8).to_le_bytes()[(at % 8) as usize];
        }
        Ok(())
    }
    fn size(&self) -> u64 {
        64 * MIB
    }
}

/// One 40 MiB file at source byte 4096, used in [4 KiB, 10 MiB + 123) and [20 MiB, 30 MiB).
fn view(bad: Option<u64>) -> View {
    let mut used = RangeSet::new();
    used.insert(4096..10 * MIB + 123);
    used.insert(20 * MIB..30 * MIB);
    let files =
        vec![ViewFile { name: "part1.img".into(), content: Content::Source { start: 4096, len: 40 * MIB, used } }];
    View::new(Box::new(Numbered { bad }), files).expect("view")
}

/// Asks `ahead` for `range` until a block holds it (true) or `patience` has passed (false);
/// what it answers must be what the view reads there.
fn ask(ahead: &ReadAhead, view: &View, range: Range<u64>, patience: Duration) -> bool {
    let started = Instant::now();
    loop {
        if let Some(lent) = ahead.lend(view, 0, range.clone()) {
            let mut expected = vec![0; (range.end - range.start) as usize];
            view.read_at(0, range.start, &mut expected).expect("read");
            assert!(lent.bytes() == expected, "bytes {range:?} differ from the view's");
            return true;
        }
        if started.elapsed() > patience {
            return false;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Runs `test` with a read-ahead thread for `view`, stopped however `test` ends.
fn with_read_ahead(view: &View, test: impl FnOnce(&ReadAhead)) {
    struct StopOnDrop<'a>(&'a ReadAhead);
    impl Drop for StopOnDrop<'_> {
        fn drop(&mut self) {
            self.0.stop();
        }
    }
    let ahead = ReadAhead::default();
    std::thread::scope(|s| {
        s.spawn(|| ahead.run(view));
        let _stop = StopOnDrop(&ahead);
        test(&ahead);
    });
}

/// The requests borg's fixed chunker makes for the used range `used`: 4 MiB reads from its
/// start, each cut by the kernel into requests of 1 MiB less the buffer's offset in its page.
fn borg_requests(used: Range<u64>) -> Vec<Range<u64>> {
    let mut requests = Vec::new();
    let mut read = used.start;
    while read < used.end {
        let read_end = used.end.min(read + BLOCK);
        let mut at = read;
        while at < read_end {
            let end = read_end.min(at + MIB - 2000);
            requests.push(at..end);
            at = end;
        }
        read = read_end;
    }
    requests
}

#[test]
fn a_reader_front_to_back_is_answered_from_blocks_after_its_first_request() {
    let view = view(None);
    with_read_ahead(&view, |ahead| {
        let requests: Vec<_> =
            borg_requests(4096..10 * MIB + 123).into_iter().chain(borg_requests(20 * MIB..30 * MIB)).collect();
        assert!(!ask(ahead, &view, requests[0].clone(), Duration::ZERO), "nothing is read ahead of a first request");
        for request in &requests[1..] {
            assert!(ask(ahead, &view, request.clone(), Duration::from_secs(5)), "{request:?} was not read ahead");
        }
    });
}

#[test]
fn a_reader_that_goes_elsewhere_is_followed_there() {
    let view = view(None);
    with_read_ahead(&view, |ahead| {
        let patience = Duration::from_secs(5);
        assert!(!ask(ahead, &view, 4096..MIB, Duration::ZERO));
        assert!(ask(ahead, &view, MIB..2 * MIB, patience));
        // Back inside the block still kept: answered from it.
        assert!(ask(ahead, &view, 8192..MIB, Duration::ZERO));
        // Past the first block, then back to the start, then into the middle of the second
        // range: each first request is read by the caller, the next ones come from blocks.
        assert!(ask(ahead, &view, 5 * MIB..6 * MIB, patience));
        assert!(!ask(ahead, &view, 4096..8192, Duration::ZERO));
        assert!(ask(ahead, &view, 8192..MIB, patience));
        assert!(!ask(ahead, &view, 25 * MIB..25 * MIB + 10, Duration::ZERO));
        assert!(ask(ahead, &view, 25 * MIB + 10..26 * MIB, patience), "the block holding the request is read");
        assert!(ask(ahead, &view, 28 * MIB..29 * MIB, patience));
        // A request across two blocks is left to the caller.
        assert!(!ask(ahead, &view, 28 * MIB - 10..28 * MIB + 10, Duration::from_millis(100)));
    });
}

#[test]
fn a_failed_read_ahead_answers_nothing_and_is_recorded() {
    // Source byte 6 MiB is file byte 6 MiB - 4096: in the second block of the first range.
    let view = view(Some(6 * MIB));
    with_read_ahead(&view, |ahead| {
        assert!(!ask(ahead, &view, 4096..MIB, Duration::ZERO));
        assert!(ask(ahead, &view, MIB..2 * MIB, Duration::from_secs(5)));
        assert!(!ask(ahead, &view, 5 * MIB..6 * MIB, Duration::from_millis(200)), "no block holds a failed read");
    });
    assert!(!view.errors().is_empty(), "the failed read is on record");
}
