#![allow(clippy::indexing_slicing)] // test code: a panic is a failed test, with its message

use super::*;
use std::sync::atomic::AtomicU64;

/// A source that records every byte it is asked for, to prove free space is never read,
/// and can fail at one offset.
struct Recording {
    data: Vec<u8>,
    fail_at: Option<u64>,
    reads_outside: Mutex<Vec<Range>>,
    allowed: RangeSet,
    bytes_read: AtomicU64,
}
type Range = std::ops::Range<u64>;

impl ReadAt for Recording {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        let range = offset..offset + buf.len() as u64;
        if !self.allowed.contains_range(range.clone()) {
            self.reads_outside.lock().unwrap().push(range.clone());
        }
        if self.fail_at.is_some_and(|at| range.contains(&at)) {
            return Err(io::Error::other(format!("injected read error at byte {offset}")));
        }
        self.bytes_read.fetch_add(buf.len() as u64, Ordering::Relaxed);
        self.data.read_exact_at(buf, offset)
    }
    fn size(&self) -> u64 {
        self.data.len() as u64
    }
}

fn random_case(rng: &mut fastrand::Rng) -> (Vec<u8>, RangeSet) {
    let size = rng.u64(..3 << 20) + 1;
    let data: Vec<u8> = (0..size).map(|i| (i % 251) as u8 | 1).collect();
    let mut used = RangeSet::new();
    for _ in 0..rng.u64(..40) {
        let start = rng.u64(..size);
        let len = match rng.u64(..3) {
            0 => rng.u64(..100),
            1 => rng.u64(..8192),
            _ => rng.u64(..1 << 20),
        };
        used.insert(start..(start + len).min(size));
    }
    (data, used)
}

fn expected_image(data: &[u8], used: &RangeSet) -> Vec<u8> {
    let mut image = vec![0u8; data.len()];
    for range in used.iter() {
        let (start, end) = (range.start as usize, range.end as usize);
        image[start..end].copy_from_slice(&data[start..end]);
    }
    image
}

fn options(threads: usize, block_size: usize) -> Options {
    Options { threads: NonZeroUsize::new(threads).unwrap(), block_size }
}

#[test]
fn output_is_the_source_with_free_bytes_zeroed_for_any_threads_and_block_size() {
    let mut rng = fastrand::Rng::with_seed(0xDEAD_BEEF);
    for case in 0..40 {
        let (data, used) = random_case(&mut rng);
        let expected = expected_image(&data, &used);
        for (threads, block_size) in [(1, 4096), (3, 65536), (8, 1 << 20), (2, 4 << 20)] {
            let source = Recording {
                data: data.clone(),
                fail_at: None,
                reads_outside: Mutex::new(Vec::new()),
                allowed: used.clone(),
                bytes_read: AtomicU64::new(0),
            };
            let mut sink = StreamSink::new(Vec::new());
            let stats = stream(&source, &used, &mut sink, options(threads, block_size), &NoProgress).unwrap();
            assert!(sink.into_inner() == expected, "case {case}, {threads} threads, block {block_size}: image differs");
            assert_eq!(*source.reads_outside.lock().unwrap(), Vec::<Range>::new(), "free space was read");
            assert_eq!(source.bytes_read.load(Ordering::Relaxed), used.total());
            assert_eq!(stats.total, data.len() as u64);
            assert_eq!(stats.read + stats.elided, stats.total);
        }
    }
}

#[test]
fn plan_covers_the_image_in_order_with_aligned_data_blocks() {
    let mut rng = fastrand::Rng::with_seed(7);
    for _ in 0..200 {
        let (data, used) = random_case(&mut rng);
        let size = data.len() as u64;
        let block = 4096 << rng.u64(..4);
        let mut cursor = 0;
        let mut previous_zero = false;
        let mut zero_run_start = 0;
        for segment in Plan::new(&used, size, block) {
            match segment {
                Segment::Data(range) => {
                    assert_eq!(range.start, cursor);
                    assert_eq!(range.start % block, 0, "data block not aligned");
                    assert!(range.end - range.start == block || range.end == size);
                    assert!(used.covered_in(range.clone()) > 0, "data block without used bytes");
                    cursor = range.end;
                    previous_zero = false;
                }
                Segment::Zeros(range) => {
                    assert_eq!(range.start, cursor);
                    assert!(range.end > range.start);
                    assert_eq!(used.covered_in(range.clone()), 0, "zero run holds used bytes");
                    // Two zero runs in a row only where a long run was split.
                    assert!(!previous_zero || range.start - zero_run_start >= MAX_ZERO_RUN_FOR_TESTS);
                    if !previous_zero {
                        zero_run_start = range.start;
                    }
                    cursor = range.end;
                    previous_zero = true;
                }
            }
        }
        assert_eq!(cursor, size);
    }
}
const MAX_ZERO_RUN_FOR_TESTS: u64 = 256 << 20;

#[test]
fn a_read_error_stops_the_run_and_names_the_offset() {
    let size = 8 << 20;
    let used = RangeSet::from_range(0..size);
    let source = Recording {
        data: vec![1; size as usize],
        fail_at: Some(5 << 20),
        reads_outside: Mutex::new(Vec::new()),
        allowed: used.clone(),
        bytes_read: AtomicU64::new(0),
    };
    let mut sink = StreamSink::new(Vec::new());
    let error = stream(&source, &used, &mut sink, options(4, 1 << 20), &NoProgress).unwrap_err();
    assert!(matches!(error, Error::Read(_)), "{error:?}");
    assert!(error.to_string().contains(&format!("byte {}", 5 << 20)), "{error}");
    assert!((sink.into_inner().len() as u64) < size);
}

/// A consumer that accepts `limit` bytes and then closes the pipe.
struct ClosesEarly {
    accepted: usize,
    limit: usize,
}
impl io::Write for ClosesEarly {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.accepted >= self.limit {
            return Err(io::ErrorKind::BrokenPipe.into());
        }
        let n = buf.len().min(self.limit - self.accepted);
        self.accepted += n;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[test]
fn a_consumer_that_closes_early_is_an_error() {
    let data = vec![7u8; 16 << 20];
    let used = RangeSet::from_iter([0..(4 << 20), (12 << 20)..(13 << 20)]);
    let mut sink = StreamSink::new(ClosesEarly { accepted: 0, limit: 1 << 20 });
    let error = stream(&data, &used, &mut sink, options(2, 65536), &NoProgress).unwrap_err();
    assert!(matches!(error, Error::OutputClosed { written } if written <= 1 << 20), "{error:?}");
}

#[test]
fn a_sparse_file_gets_holes_and_the_exact_length() {
    use std::os::unix::fs::MetadataExt;
    let dir = std::env::temp_dir().join(format!("imgstream-stream-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("out.img");
    let size = 32u64 << 20;
    let data: Vec<u8> = (0..size).map(|i| (i % 13) as u8 + 1).collect();
    // Used: a bit at the start and a bit in the middle; the image ends in a long zero run.
    let used = RangeSet::from_iter([0..100_000, (10 << 20)..(11 << 20)]);
    let mut sink = SparseFileSink::new(std::fs::File::create(&path).unwrap());
    stream(&data, &used, &mut sink, options(2, 1 << 20), &NoProgress).unwrap();
    let written = std::fs::read(&path).unwrap();
    let allocated = std::fs::metadata(&path).unwrap().blocks() * 512;
    std::fs::remove_dir_all(&dir).unwrap();
    assert!(written == expected_image(&data, &used), "sparse output differs");
    assert!(allocated < 4 << 20, "{allocated} bytes allocated for 2.1 MB of data");
}

#[test]
fn invalid_block_sizes_are_refused() {
    let data = vec![0u8; 4096];
    for block_size in [0, 512, 3 << 20, 8 << 20] {
        let mut sink = StreamSink::new(Vec::new());
        let error = stream(&data, &RangeSet::new(), &mut sink, options(1, block_size), &NoProgress);
        assert!(matches!(error, Err(Error::BlockSize(_))), "{block_size}");
    }
}

/// Streams `data` (only `used` read) into a real pipe through a `PipeSink`; a thread reads up
/// to `read_limit` bytes 1 MiB at a time, then closes its end. Returns the bytes it read.
fn through_a_pipe(data: &[u8], used: &RangeSet, read_limit: usize) -> (Result<Stats, Error>, Vec<u8>) {
    use std::io::Read;
    let (read_end, write_end) = nix::unistd::pipe().unwrap();
    let reader = std::thread::spawn(move || {
        let mut received = Vec::new();
        let mut buffer = vec![0u8; 1 << 20];
        let mut pipe = std::fs::File::from(read_end);
        while received.len() < read_limit {
            match pipe.read(&mut buffer).unwrap() {
                0 => break,
                n => received.extend_from_slice(&buffer[..n]),
            }
        }
        received
    });
    let mut sink = PipeSink::new(std::fs::File::from(write_end));
    let result = stream(&data, used, &mut sink, options(2, 64 << 10), &NoProgress);
    drop(sink);
    (result, reader.join().unwrap())
}

#[test]
fn a_pipe_gets_every_byte_with_zero_runs_spliced() {
    let mut rng = fastrand::Rng::with_seed(0x5EED);
    for case in 0..20 {
        let (data, used) = random_case(&mut rng);
        let (result, received) = through_a_pipe(&data, &used, usize::MAX);
        result.unwrap();
        assert!(received == expected_image(&data, &used), "case {case}: piped image differs");
    }
}

#[test]
fn a_pipe_closed_early_is_an_error() {
    let data = vec![7u8; 16 << 20];
    // Zeros first, so the close is met by vmsplice, then data.
    let used = RangeSet::from_range((12 << 20)..(13 << 20));
    let (result, received) = through_a_pipe(&data, &used, 1 << 20);
    assert!(matches!(result, Err(Error::OutputClosed { .. })), "{result:?}");
    assert!(received.len() < data.len());
}

#[test]
fn a_pipe_sink_on_something_else_falls_back_to_writes() {
    let dir = std::env::temp_dir().join(format!("imgstream-pipe-fallback-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("out.img");
    let data: Vec<u8> = (0..(3u64 << 20)).map(|i| (i % 251) as u8 + 1).collect();
    let used = RangeSet::from_iter([0..5000, (2 << 20)..(2 << 20) + 70_000]);
    let mut sink = PipeSink::new(std::fs::File::create(&path).unwrap());
    stream(&data, &used, &mut sink, options(2, 1 << 20), &NoProgress).unwrap();
    let written = std::fs::read(&path).unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
    assert!(written == expected_image(&data, &used), "fallback output differs");
}

/// Fails its first block, but only once the other readers have filled every other buffer of
/// the pool: the writer then holds them all, waiting for the failed block.
struct FailsFirstBlockLast {
    data: Vec<u8>,
    others_read: AtomicU64,
    others_needed: u64,
}

impl ReadAt for FailsFirstBlockLast {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        if offset == 0 {
            let started = std::time::Instant::now();
            while self.others_read.load(Ordering::SeqCst) < self.others_needed
                && started.elapsed() < Duration::from_secs(5)
            {
                std::thread::sleep(Duration::from_millis(1));
            }
            return Err(io::Error::other("injected read error at byte 0"));
        }
        self.others_read.fetch_add(1, Ordering::SeqCst);
        self.data.read_exact_at(buf, offset)
    }
    fn size(&self) -> u64 {
        self.data.len() as u64
    }
}

#[test]
fn a_read_error_while_the_writer_holds_every_buffer_stops_the_run_instead_of_hanging() {
    let block = 64 << 10;
    // Two readers, four buffers: the second reader fills three blocks while the first fails.
    let source = FailsFirstBlockLast { data: vec![1; 16 * block], others_read: AtomicU64::new(0), others_needed: 3 };
    let used = RangeSet::from_range(0..source.size());
    let mut sink = StreamSink::new(Vec::new());
    let error = stream(&source, &used, &mut sink, options(2, block), &NoProgress).unwrap_err();
    assert!(error.to_string().contains("injected read error at byte 0"), "{error}");
}
