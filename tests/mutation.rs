//! The allocation map lies: seeded byte flips in NTFS `$Bitmap`, the exFAT allocation bitmap and
//! ext2/ext3 block bitmaps (there also count-neutral flips: two bits cleared, two set in the same
//! group, so that every free count still agrees). In every mutant that imgstream accepts, no
//! block that holds data in the clean fixture may be zeroed.
//!
//! Oracles, none of them ours:
//! - the clean fixture's used blocks: `ntfsclone`'s raw image, `partclone.exfat`'s map,
//!   `dumpe2fs`'s free block lists (every sector that is non-zero in that reference image must
//!   be kept, since a mutant differs from the clean fixture only in bitmap bytes, which are
//!   always copied);
//! - per mutant, the blocks the flip hid: `ntfsclone`'s "Cluster accounting failed at N",
//!   `fsck.exfat -n`'s "cluster 0xN is marked as free", `e2fsck -fn`'s "Block bitmap
//!   differences: +N"; each must be kept.
//!
//! Mutants are analysed in-process (what `part` would copy), each under a timeout so that a hang
//! fails the test; a few per fixture also go through the binary end to end.

#![allow(clippy::indexing_slicing)] // test code: a panic is a failed test, with its message

use crate::ext::expected_from_dumpe2fs;
use crate::fat::expected_from_partclone;
use crate::util::*;
use imgstream_extents::RangeSet;
use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::mpsc;
use std::time::Duration;

/// Sector granularity of the reference: every filesystem here allocates whole sectors.
const SECTOR: usize = 512;
/// End-to-end binary runs per fixture (the rest are analysed in-process).
const END_TO_END: usize = 3;
/// An analysis taking longer than this is a hang.
const ANALYSIS_TIMEOUT: Duration = Duration::from_secs(30);

/// Byte flips of a mutant: (offset, xor mask).
type Flips = Vec<(usize, u8)>;

/// splitmix64: a seeded generator, so that a failing mutant can be reproduced.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// One fixture under test.
struct Subject {
    name: String,
    image: PathBuf,
    clean: Vec<u8>,
    /// Sectors holding non-zero bytes in the real tool's image of the clean fixture.
    reference: RangeSet,
    /// Where the bitmap bytes lie (byte ranges of the image), with the bits of each that count.
    bitmaps: Vec<(Range<usize>, usize)>,
}

/// Non-zero sectors of `image` as byte ranges.
fn non_zero_sectors(image: &[u8]) -> RangeSet {
    let mut set = RangeSet::new();
    for (index, sector) in image.chunks(SECTOR).enumerate() {
        if sector.iter().any(|&b| b != 0) {
            let start = (index * SECTOR) as u64;
            set.insert(start..start + sector.len() as u64);
        }
    }
    set
}

/// What imgstream would copy from `volume`, or `None` if it refuses it; fails on a panic or hang.
fn analysed(volume: Vec<u8>, what: &str) -> (Vec<u8>, Option<(RangeSet, Vec<String>)>) {
    let (sender, receiver) = mpsc::channel();
    std::thread::spawn(move || {
        let result = imgstream_fs::examine(&volume, &imgstream_fs::Policy::default())
            .map(|v| (v.used, v.warnings))
            .map_err(|e| e.to_string());
        let _ = sender.send((volume, result));
    });
    let (volume, result) = receiver
        .recv_timeout(ANALYSIS_TIMEOUT)
        .unwrap_or_else(|e| panic!("{what}: the analysis panicked or hung ({e})"));
    match result {
        Ok(answer) => (volume, Some(answer)),
        Err(message) => {
            assert!(!message.contains('\n') && !message.contains("Error {"), "{what}: bad message {message:?}");
            (volume, None)
        }
    }
}

/// Applies `flips` (offset, xor mask) to `image` and its working copy on disk.
fn apply(image: &mut [u8], file: &std::fs::File, flips: &[(usize, u8)]) {
    for &(offset, mask) in flips {
        image[offset] ^= mask;
        file.write_all_at(&image[offset..offset + 1], offset as u64).unwrap();
    }
}

/// Counts of what the mutants did, to prove the test exercised something.
#[derive(Debug, Default)]
struct Tally {
    mutants: usize,
    accepted: usize,
    /// Accepted mutants in which the oracle tool saw hidden blocks (all kept).
    hidden_and_kept: usize,
    /// Accepted mutants with a warning that files' blocks are free in the bitmap (hidden blocks
    /// that are the filesystem's own metadata are kept by the layout, without one).
    warned: usize,
}

impl Tally {
    fn add(&mut self, other: &Tally) {
        self.mutants += other.mutants;
        self.accepted += other.accepted;
        self.hidden_and_kept += other.hidden_and_kept;
        self.warned += other.warned;
    }
}

/// Runs `mutants` seeded mutants of `subject`. `mutate` picks the flips; `hidden` asks the real
/// tool which byte ranges the flipped bitmap wrongly calls free.
fn run_mutants(
    subject: &Subject,
    mutants: usize,
    seed: u64,
    mutate: &dyn Fn(&Subject, &mut Rng) -> Flips,
    hidden: &dyn Fn(&Path) -> Vec<Range<u64>>,
) -> Tally {
    let file = std::fs::OpenOptions::new().write(true).open(&subject.image).unwrap();
    let mut rng = Rng(seed);
    let mut image = subject.clean.clone();
    let mut tally = Tally::default();
    for mutant in 0..mutants {
        let flips = mutate(subject, &mut rng);
        let what = format!("{} mutant {mutant} (seed {seed}, flips {flips:?})", subject.name);
        apply(&mut image, &file, &flips);
        let (returned, answer) = analysed(image, &what);
        image = returned;
        tally.mutants += 1;
        if let Some((used, warnings)) = answer {
            tally.accepted += 1;
            let lost = subject.reference.difference(&used);
            assert!(lost.is_empty(), "{what}: data zeroed at bytes {:?}; warnings {warnings:?}", lost.iter().next());
            let hidden = hidden(&subject.image);
            for range in &hidden {
                assert!(used.contains_range(range.clone()), "{what}: the tool's hidden block {range:?} is zeroed");
            }
            tally.hidden_and_kept += usize::from(!hidden.is_empty());
            tally.warned += usize::from(warnings.iter().any(|w| w.contains("used by files but free")));
            if tally.accepted <= END_TO_END {
                end_to_end(subject, &image, &used, &what);
            }
        }
        apply(&mut image, &file, &flips);
    }
    assert!(image == subject.clean, "{}: the mutations were not undone", subject.name);
    tally
}

/// `imgstream part` of the mutant (on disk): exit 0, and the source on every used byte.
fn end_to_end(subject: &Subject, mutant: &[u8], used: &RangeSet, what: &str) {
    let output =
        run_ok(Command::new("timeout").arg("60").arg(env!("CARGO_BIN_EXE_imgstream")).arg("part").arg(&subject.image));
    let out = output.stdout;
    assert_eq!(out.len(), mutant.len(), "{what}: output length");
    for range in used.iter() {
        let range = range.start as usize..range.end as usize;
        assert!(out[range.clone()] == mutant[range.clone()], "{what}: used bytes {range:?} differ from the source");
    }
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!stderr.contains("panicked"), "{what}: {stderr}");
}

fn subject(name: &str, dir: &Path, reference: impl FnOnce(&Path, &[u8]) -> Vec<u8>) -> Subject {
    let image = fixture(name, dir);
    let clean = std::fs::read(&image).unwrap();
    let reference = non_zero_sectors(&reference(&image, &clean));
    Subject { name: name.into(), image, clean, reference, bitmaps: Vec::new() }
}

/// The number ending the first line of `text` that starts (after blanks) with `key`, as in
/// `ntfsinfo`'s "Cluster Size: 4096", `dump.exfat`'s "Cluster size:  4096" or `dumpe2fs`'s
/// "Block size:               1024".
fn field(text: &str, key: &str) -> usize {
    let line = text.lines().find(|l| l.trim_start().starts_with(key)).unwrap_or_else(|| panic!("no {key}:\n{text}"));
    line.split_whitespace().last().unwrap().parse().unwrap_or_else(|e| panic!("{line}: {e}"))
}

/// Output of `tool args image` (stdout and stderr), whatever its exit status.
fn tool_output(tool: &str, args: &[&str], image: &Path) -> String {
    let output = Command::new("timeout").arg("60").arg(tool).args(args).arg(image).output().unwrap();
    format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr))
}

/// 1 to 3 random flips in the bitmap bytes, most of them over units in use (where a cleared
/// bit would hide data).
fn random_flips(subject: &Subject, rng: &mut Rng) -> Flips {
    let bytes: Vec<usize> = subject.bitmaps.iter().flat_map(|(r, _)| r.clone()).collect();
    let busy: Vec<usize> = bytes.iter().copied().filter(|&b| subject.clean[b] != 0).collect();
    (0..1 + rng.below(3))
        .map(|_| {
            let pool = if !busy.is_empty() && rng.below(4) > 0 { &busy } else { &bytes };
            (pool[rng.below(pool.len())], 1 + rng.below(255) as u8)
        })
        .collect()
}

#[test]
fn ntfs_bitmap_flips_never_zero_a_file_cluster() {
    if !have_tool("ntfsclone") || !have_tool("ntfsinfo") {
        return;
    }
    let mut total = Tally::default();
    for (name, seed) in [("ntfs-fragmented", 1), ("ntfs-c4096", 2)] {
        let dir = scratch();
        let mut subject = subject(name, dir.path(), |image, source| {
            let out = image.with_extension("ntfsclone");
            run_ok(Command::new("ntfsclone").arg("-q").arg("--overwrite").arg(&out).arg(image));
            let mut reference = std::fs::read(&out).unwrap();
            std::fs::remove_file(&out).unwrap();
            // Past the volume (outside $Bitmap) the source is copied.
            reference.extend_from_slice(&source[reference.len()..]);
            reference
        });
        // $Bitmap's location from ntfsinfo: its runlist (VCN, LCN, length) and the cluster count.
        let volume = tool_output("ntfsinfo", &["-m"], &subject.image);
        let (cluster, clusters) = (field(&volume, "Cluster Size:"), field(&volume, "Volume Size in Clusters:"));
        let record = tool_output("ntfsinfo", &["-v", "-i", "6"], &subject.image);
        let runs = record.split("Runlist:").nth(1).unwrap_or_else(|| panic!("{record}"));
        let mut left = clusters.div_ceil(8);
        for line in runs.lines().skip(1).take_while(|l| l.starts_with('\t')) {
            let fields: Vec<usize> = line
                .split_whitespace()
                .map(|f| usize::from_str_radix(f.trim_start_matches("0x"), 16).unwrap())
                .collect();
            let (lcn, len) = (fields[1], (fields[2] * cluster).min(left));
            subject.bitmaps.push((lcn * cluster..lcn * cluster + len, len * 8));
            left -= len;
        }
        assert_eq!(left, 0, "{name}: $Bitmap runs from ntfsinfo:\n{record}");
        let hidden = |image: &Path| -> Vec<Range<u64>> {
            // "Cluster accounting failed at 15556 (0x3cc4): missing cluster in $Bitmap"
            let text = tool_output("ntfsclone", &["-o", "-"], image);
            text.lines()
                .filter(|l| l.contains("missing cluster in $Bitmap"))
                .filter_map(|l| l.split_whitespace().nth(4)?.parse::<u64>().ok())
                .map(|c| c * cluster as u64..(c + 1) * cluster as u64)
                .collect()
        };
        let tally = run_mutants(&subject, 100, seed, &random_flips, &hidden);
        total.add(&tally);
    }
    assert_exercised("NTFS", &total);
}

/// The test proves something only if mutants were accepted, and hid data that was kept.
fn assert_exercised(what: &str, tally: &Tally) {
    eprintln!("{what}: {tally:?}");
    assert!(tally.accepted >= tally.mutants / 4, "{what}: too few mutants accepted: {tally:?}");
    assert!(tally.hidden_and_kept >= tally.mutants / 10, "{what}: too few mutants hid data: {tally:?}");
    // On ext most set bits belong to inode tables, kept by the layout without a warning.
    assert!(tally.warned >= tally.hidden_and_kept / 5, "{what}: too few warnings: {tally:?}");
}

#[test]
fn exfat_bitmap_flips_never_zero_a_file_cluster() {
    if !have_tool("partclone.exfat") || !have_tool("fsck.exfat") || !have_tool("dump.exfat") {
        return;
    }
    let mut total = Tally::default();
    for (name, seed) in [("exfat-512", 3), ("exfat-4k", 4)] {
        let dir = scratch();
        let partclone_dir = dir.path().join("partclone");
        std::fs::create_dir(&partclone_dir).unwrap();
        let mut subject = subject(name, dir.path(), |image, source| {
            expected_from_partclone("partclone.exfat", image, source, &partclone_dir)
        });
        let dump = tool_output("dump.exfat", &[], &subject.image);
        let number = |key: &str| field(&dump, key);
        let heap = number("Cluster Heap Offset (sector offset):") * 512;
        let cluster = number("Cluster size:");
        let bitmap = heap + (number("Bitmap start cluster:") - 2) * cluster;
        let clusters = number("Total Clusters:");
        subject.bitmaps.push((bitmap..bitmap + clusters.div_ceil(8), clusters));
        let hidden = |image: &Path| -> Vec<Range<u64>> {
            // "ERROR: /f.bin: cluster 0x142 is marked as free at 0x214440. Truncate (y/N)? n"
            let text = tool_output("fsck.exfat", &["-n"], image);
            text.split("cluster 0x")
                .skip(1)
                .filter(|rest| rest.contains(" is marked as free"))
                .filter_map(|rest| u64::from_str_radix(rest.split_whitespace().next()?, 16).ok())
                .map(|c| {
                    let start = heap as u64 + (c - 2) * cluster as u64;
                    start..start + cluster as u64
                })
                .collect()
        };
        let tally = run_mutants(&subject, 100, seed, &random_flips, &hidden);
        total.add(&tally);
    }
    assert_exercised("exFAT", &total);
}

#[test]
fn ext_block_bitmap_flips_never_zero_a_file_block() {
    if !have_tool("dumpe2fs") || !have_tool("e2fsck") {
        return;
    }
    let mut total = Tally::default();
    for (name, seed) in [("ext-ext2", 5), ("ext-ext3", 6)] {
        let dir = scratch();
        let mut subject = subject(name, dir.path(), expected_from_dumpe2fs);
        let dump = tool_output("dumpe2fs", &[], &subject.image);
        let (block, per_group) = (field(&dump, "Block size:"), field(&dump, "Blocks per group:"));
        let (first_data_block, blocks) = (field(&dump, "First block:"), field(&dump, "Block count:"));
        // "  Block bitmap at 96 (+95)": one bitmap block per group, covering its blocks.
        for (group, line) in dump.lines().filter_map(|l| l.trim_start().strip_prefix("Block bitmap at ")).enumerate() {
            let at: usize = line.split_whitespace().next().unwrap().parse().unwrap();
            let bits = per_group.min(blocks - first_data_block - group * per_group);
            subject.bitmaps.push((at * block..at * block + bits.div_ceil(8), bits));
        }
        let hidden = |image: &Path| -> Vec<Range<u64>> {
            // "Block bitmap differences:  +(800--803) -1234 +1240"
            let text = tool_output("e2fsck", &["-fn"], image);
            let Some(list) = text.split("Block bitmap differences:").nth(1) else { return Vec::new() };
            let list = list.split("\nFix?").next().unwrap_or_default();
            list.split_whitespace()
                .filter_map(|item| item.strip_prefix('+'))
                .map(|item| {
                    let item = item.trim_start_matches('(').trim_end_matches(')');
                    let (first, last) = item.split_once("--").unwrap_or((item, item));
                    let (first, last): (u64, u64) = (first.parse().unwrap(), last.parse().unwrap());
                    first * block as u64..(last + 1) * block as u64
                })
                .collect()
        };
        let random = run_mutants(&subject, 75, seed, &random_flips, &hidden);
        let neutral = run_mutants(&subject, 75, seed + 100, &count_neutral_flips, &hidden);
        assert_eq!(neutral.accepted, neutral.mutants, "{name}: count-neutral flips must be accepted: {neutral:?}");
        for tally in [random, neutral] {
            total.add(&tally);
        }
    }
    assert_exercised("ext", &total);
}

/// In one group's bitmap: two set bits cleared and two clear bits set, so that the group's
/// free count still agrees (only an inode scan can tell).
fn count_neutral_flips(subject: &Subject, rng: &mut Rng) -> Flips {
    // Only the bits that count: padding bits past the last block are outside the free count.
    let bits = |(bitmap, count): &(Range<usize>, usize), set: bool| -> Vec<(usize, u8)> {
        (0..*count)
            .map(|bit| (bitmap.start + bit / 8, 1u8 << (bit % 8)))
            .filter(|&(byte, mask)| (subject.clean[byte] & mask != 0) == set)
            .collect()
    };
    // A group with at least two used and two free blocks.
    let (set, clear) = loop {
        let bitmap = &subject.bitmaps[rng.below(subject.bitmaps.len())];
        let (set, clear) = (bits(bitmap, true), bits(bitmap, false));
        if set.len() >= 2 && clear.len() >= 2 {
            break (set, clear);
        }
    };
    let mut flips = Vec::new();
    for pool in [&set, &set, &clear, &clear] {
        loop {
            let flip = pool[rng.below(pool.len())];
            if !flips.contains(&flip) {
                flips.push(flip);
                break;
            }
        }
    }
    flips
}
