//! `cargo bench --bench engine`: the engine's own cost and the allocation-map build, without
//! disk I/O in the way. Reported as throughput (median of several runs), never asserted.
//!
//! - engine, 30% used: an in-memory 1 GiB source whose used set is 30% in 64 KiB..8 MiB
//!   pieces, streamed to a discarding writer, for a few thread counts and block sizes;
//! - zeros: a 4 GiB image with nothing used (what a pipe to borg sees on an empty disk);
//! - allocation map: `imgstream_fs::examine` on every committed filesystem fixture.

#![allow(clippy::indexing_slicing)] // a benchmark: a panic is a failed run, with its message

use imgstream_extents::RangeSet;
use imgstream_stream::{NoProgress, Options, PipeSink, StreamSink, stream};
use std::num::NonZeroUsize;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

const RUNS: usize = 5;

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

fn rate(bytes: u64, time: Duration) -> String {
    format!("{:>8.0} MB/s", bytes as f64 / time.as_secs_f64() / 1e6)
}

fn options(threads: usize, block_size: usize) -> Options {
    Options { threads: NonZeroUsize::new(threads).unwrap(), block_size }
}

/// 30% of `size` in pieces of 64 KiB to 8 MiB, spread evenly (deterministic).
fn thirty_percent_used(size: u64) -> RangeSet {
    let mut used = RangeSet::new();
    let mut offset = 0;
    let mut piece = 64 << 10;
    while offset < size {
        used.insert(offset..(offset + piece).min(size));
        offset += piece * 10 / 3;
        piece = if piece >= 8 << 20 { 64 << 10 } else { piece * 2 };
    }
    used
}

fn bench_engine() {
    let size = 1u64 << 30;
    let source = vec![0xA5u8; size as usize];
    let used = thirty_percent_used(size);
    println!(
        "engine, in-memory 1 GiB source, {:.0}% used, to a discarding writer:",
        used.total() as f64 * 100.0 / size as f64
    );
    for (threads, block_size) in [(1, 1 << 20), (2, 1 << 20), (4, 1 << 20), (2, 64 << 10), (2, 4 << 20)] {
        let samples = (0..RUNS)
            .map(|_| {
                let started = Instant::now();
                stream(
                    &source,
                    &used,
                    &mut StreamSink::new(std::io::sink()),
                    options(threads, block_size),
                    &NoProgress,
                )
                .unwrap();
                started.elapsed()
            })
            .collect();
        println!("  {threads} threads, {:>4} KiB blocks: {} of image", block_size >> 10, rate(size, median(samples)));
    }
    drop(source);
    let size = 4u64 << 30;
    let nothing = RangeSet::new();
    let samples = (0..RUNS).map(|_| zeros_into_a_pipe(size, &nothing)).collect();
    println!(
        "zeros, 4 GiB with nothing used, into a 1 MiB pipe drained 1 MiB at a time: {}",
        rate(size, median(samples))
    );
}

/// Streams an image with nothing used into a pipe (through the sink the CLI uses for pipes)
/// whose other end a thread drains with 1 MiB reads, like `dd of=/dev/null bs=1M`.
fn zeros_into_a_pipe(size: u64, nothing: &RangeSet) -> Duration {
    use nix::fcntl::{FcntlArg, fcntl};
    use std::io::Read;
    let (read_end, write_end) = nix::unistd::pipe().unwrap();
    let _ = fcntl(&write_end, FcntlArg::F_SETPIPE_SZ(1 << 20));
    let drain = std::thread::spawn(move || {
        let mut reader = std::fs::File::from(read_end);
        let mut buffer = vec![0u8; 1 << 20];
        let mut total = 0u64;
        loop {
            match reader.read(&mut buffer).unwrap() {
                0 => return total,
                n => total += n as u64,
            }
        }
    });
    let source = ZeroSized(size);
    let started = Instant::now();
    let mut sink = PipeSink::new(std::fs::File::from(write_end));
    stream(&source, nothing, &mut sink, options(2, 1 << 20), &NoProgress).unwrap();
    drop(sink);
    assert_eq!(drain.join().unwrap(), size);
    started.elapsed()
}

/// A source of a given size that must never be read (nothing is used).
#[derive(Clone, Copy)]
struct ZeroSized(u64);
impl imgstream_blockio::ReadAt for ZeroSized {
    fn read_exact_at(&self, _: &mut [u8], offset: u64) -> std::io::Result<()> {
        panic!("free space read at byte {offset}")
    }
    fn size(&self) -> u64 {
        self.0
    }
}

fn bench_allocation_maps() {
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures");
    let dir = std::env::temp_dir().join(format!("imgstream-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut names: Vec<_> = std::fs::read_dir(&fixtures)
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok()?.strip_suffix(".img.zst").map(str::to_owned))
        // A whole disk is one volume per partition (the partition table decides), not one filesystem.
        .filter(|name| !name.starts_with("disk-"))
        .collect();
    names.sort();
    println!("allocation map (imgstream_fs::examine), per filesystem fixture:");
    for name in names {
        let image = dir.join(format!("{name}.img"));
        let status = Command::new("zstd")
            .args(["-q", "-d", "-f", "-o"])
            .arg(&image)
            .arg(fixtures.join(format!("{name}.img.zst")))
            .status();
        if !status.is_ok_and(|s| s.success()) {
            println!("  {name}: cannot decompress (is zstd installed?)");
            continue;
        }
        let source = imgstream_blockio::Source::open(&image).unwrap();
        let policy = imgstream_fs::Policy { on_unsafe: imgstream_fs::OnUnsafe::Force, ..Default::default() };
        let mut last = None;
        let samples = (0..RUNS)
            .map(|_| {
                let started = Instant::now();
                last = Some(imgstream_fs::examine(&source, &policy));
                started.elapsed()
            })
            .collect();
        let summary = match last {
            Some(Ok(volume)) => format!("{}, {} used ranges", volume.filesystem(), volume.used.len()),
            Some(Err(error)) => format!("error: {error}"),
            None => String::new(),
        };
        println!("  {name:<28} {:>9.1} µs  ({summary})", median(samples).as_secs_f64() * 1e6);
        std::fs::remove_file(&image).unwrap();
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

fn main() {
    // `cargo test` runs benches with --bench absent: keep that quick.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    bench_engine();
    bench_allocation_maps();
}
