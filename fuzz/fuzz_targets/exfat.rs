//! Fuzzes imgstream_exfat: arbitrary bytes as a volume (see zero_tail.rs). Properties: no panic,
//! used ranges within the volume, deterministic, and the exfat header area always kept.
//! Seeds (fuzz/seeds/exfat): prefixes of the exfat fixtures, and of a 1 MiB volume made with
//! `mkfs.exfat -b 512 -c 512` (all its metadata in the first 28 KiB) holding a file and a directory.

#![no_main]

mod zero_tail;

use libfuzzer_sys::fuzz_target;
use zero_tail::ZeroTail;

/// The exFAT boot checksum (specification §3.4) of 512-byte-sector region `region`.
fn boot_checksum(region: &[u8]) -> u32 {
    region
        .iter()
        .take(11 * 512)
        .enumerate()
        .filter(|(i, _)| ![106, 107, 112].contains(i))
        .fold(0u32, |sum, (_, &b)| sum.rotate_right(1).wrapping_add(u32::from(b)))
}

fuzz_target!(|input: &[u8]| {
    // Random bytes almost never carry a valid boot checksum: when the input starts like a real
    // boot sector (0xEB), rewrite it so that the fuzzer reaches the FAT, directory and bitmap.
    let mut fixed;
    let input = if input.first() == Some(&0xEB) && input.len() >= 12 * 512 {
        fixed = input.to_vec();
        let checksum = boot_checksum(&fixed).to_le_bytes();
        fixed[11 * 512..12 * 512].chunks_mut(4).for_each(|c| c.copy_from_slice(&checksum));
        &fixed[..]
    } else {
        input
    };
    let volume = ZeroTail::new(input);
    let _ = imgstream_exfat::detect(&volume);
    if let Ok(allocation) = imgstream_exfat::analyze(&volume) {
        let again = imgstream_exfat::analyze(&volume).expect("second analysis failed");
        zero_tail::check(&volume, &allocation, &again, 12 * 512);
    }
});
