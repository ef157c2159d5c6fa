//! Fuzzes imgstream_md: arbitrary bytes as a member (see zero_tail.rs). When the input's first
//! byte is odd, the checksum of a version-1 superblock at byte 4096 (1.2) is fixed up first, so
//! that mutations of its fields reach the layout checks.
//!
//! Properties: no panic; the same answer twice; superblock and data area inside the member and
//! disjoint.

#![no_main]

#[allow(dead_code)] // zero_tail::check is for filesystem answers
mod zero_tail;

use imgstream_blockio::ReadAt;
use imgstream_md::{detect, read_member};
use libfuzzer_sys::fuzz_target;
use zero_tail::ZeroTail;

/// md's `calc_sb_1_csum` over the superblock at byte 4096 (256 bytes + 2 per device role),
/// stored in place.
fn fix_checksum(bytes: &mut [u8]) {
    let field = |at: usize| bytes.get(at..at + 4).map_or(0, |b| u32::from_le_bytes(b.try_into().unwrap()));
    let len = 256 + 2 * field(4096 + 220).min(1900) as usize;
    let Some(superblock) = bytes.get(4096..4096 + len) else { return };
    let mut sum = 0u64;
    for (index, word) in superblock.chunks(4).enumerate() {
        if index * 4 != 216 {
            let mut padded = [0u8; 4];
            padded[..word.len()].copy_from_slice(word);
            sum += u64::from(u32::from_le_bytes(padded));
        }
    }
    let sum = ((sum & 0xFFFF_FFFF) + (sum >> 32)) as u32;
    bytes[4096 + 216..4096 + 220].copy_from_slice(&sum.to_le_bytes());
}

fuzz_target!(|input: &[u8]| {
    let Some((&mode, rest)) = input.split_first() else { return };
    let mut bytes = rest.to_vec();
    if mode & 1 == 1 {
        fix_checksum(&mut bytes);
    }
    let volume = ZeroTail::new(&bytes);
    let _ = detect(&volume);
    let Ok(member) = read_member(&volume) else { return };
    assert_eq!(Ok(&member), read_member(&volume).as_ref().map_err(|_| ()), "two readings differ");
    assert!(member.superblock.end <= volume.size() && member.data.end <= volume.size(), "past the member");
    assert!(member.data.start < member.data.end || member.raw_reason.is_some() || member.version == "0.90");
    let disjoint = member.superblock.end <= member.data.start || member.data.end <= member.superblock.start;
    assert!(disjoint, "superblock {:?} inside data {:?}", member.superblock, member.data);
});
