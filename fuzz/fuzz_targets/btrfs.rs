//! Fuzzes imgstream_btrfs on a sparse volume (see sparse.rs): the seeds (fuzz/seeds/btrfs, made
//! by make-btrfs-seeds.py) hold the superblock and tree blocks of freshly made filesystems.
//! btrfs checksums each of them, so that mutations get past those checks the harness first
//! reseals them with crc32c: the superblock, and every chunk that starts a nodesize-aligned
//! block. The top bit of the first byte (cleared before use, so volumes stay under 128 MiB)
//! skips that, so that the checksum checks are fuzzed too.
//!
//! Properties: no panic; used ranges inside the volume; the first MiB always kept; the same
//! answer twice; errors on one line.

#![no_main]

mod sparse;
#[allow(dead_code)] // only its check is used: the volume is sparse
mod zero_tail;

use crc::{CRC_32_ISCSI, Crc};
use imgstream_blockio::ReadAt;
use libfuzzer_sys::fuzz_target;
use sparse::Sparse;

const SUPERBLOCK: u64 = 64 * 1024;
const CRC32C: Crc<u32> = Crc::<u32>::new(&CRC_32_ISCSI);

/// The checksum of the `len`-byte block at `offset` of the volume `input` describes.
fn block_crc(input: &[u8], offset: u64, len: usize) -> Option<u32> {
    let mut block = vec![0u8; len];
    Sparse::new(input).read_exact_at(&mut block, offset).ok()?;
    Some(CRC32C.checksum(&block[32..]))
}

/// Rewrites, in the input, the checksum of the superblock and of every tree block that a chunk starts.
fn reseal(input: &mut [u8]) {
    let mut nodesize = [0u8; 4];
    let _ = Sparse::new(input).read_exact_at(&mut nodesize, SUPERBLOCK + 0x94);
    let nodesize = u64::from(u32::from_le_bytes(nodesize));
    let nodesize = if nodesize.is_power_of_two() && (4096..=65536).contains(&nodesize) { nodesize } else { 4096 };
    for (offset, range) in sparse::layout(input) {
        let len = if offset == SUPERBLOCK { 4096 } else { nodesize };
        if offset % len != 0 || range.len() < 4 {
            continue;
        }
        if let Some(crc) = block_crc(input, offset, len as usize) {
            input[range.start..range.start + 4].copy_from_slice(&crc.to_le_bytes());
        }
    }
}

fuzz_target!(|input: &[u8]| {
    let mut input = input.to_vec();
    let resealed = input.first().is_some_and(|b| b & 0x80 == 0);
    if let Some(first) = input.first_mut() {
        *first &= 0x7f;
    }
    if resealed {
        reseal(&mut input);
    }
    let volume = Sparse::new(&input);
    let _ = imgstream_btrfs::detect(&volume);
    match imgstream_btrfs::analyze(&volume) {
        Ok(allocation) => {
            let again = imgstream_btrfs::analyze(&volume).expect("second analysis failed");
            zero_tail::check(&volume, &allocation, &again, 1 << 20);
        }
        Err(error) => assert!(!error.to_string().contains('\n'), "multi-line error: {error}"),
    }
});
