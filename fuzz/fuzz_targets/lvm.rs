//! Fuzzes imgstream_lvm. The input's first byte picks the mode:
//! - even: the rest is a volume (see zero_tail.rs): label, PV header, metadata area header and
//!   slots as they come, checksums and all;
//! - odd: the rest is VG metadata text, put into a well-formed PV (label, one metadata area,
//!   valid checksums, the text wrapping around the buffer when bit 1 is set), so that mutations
//!   reach the text parser and the mapping instead of stopping at a checksum.
//!
//! Properties: no panic; the same answer twice; always-copied and free ranges inside the PV and
//! disjoint; LV extents inside the PV and never free; every LV map a valid `Mapped` view.

#![no_main]

#[allow(dead_code)] // zero_tail::check is for filesystem answers
mod zero_tail;

use imgstream_blockio::{Mapped, ReadAt};
use imgstream_lvm::{Placed, map_source, read_pv};
use libfuzzer_sys::fuzz_target;
use zero_tail::ZeroTail;

/// lvm2 `calc_crc(INITIAL_CRC, ...)`, written out again so that the target checks the crate.
fn crc(bytes: &[u8]) -> u32 {
    let mut crc = 0xF597_A6CFu32;
    for &byte in bytes {
        crc ^= u32::from(byte);
        for _ in 0..8 {
            crc = (crc >> 1) ^ (0xEDB8_8320 & (crc & 1).wrapping_neg());
        }
    }
    crc
}

/// A PV of 8 MiB: label in sector 1, a metadata area of 8 KiB at 4096 holding `text` in slot 0
/// (from offset 512, or from near the area's end when `wrap`), extents from 1 MiB.
fn pv_around(text: &[u8], wrap: bool) -> Vec<u8> {
    const AREA: usize = 4096;
    const AREA_SIZE: usize = 8192;
    let text = &text[..text.len().min(AREA_SIZE - 512)];
    let mut image = vec![0u8; AREA + AREA_SIZE];
    image[512..520].copy_from_slice(b"LABELONE");
    image[520..528].copy_from_slice(&1u64.to_le_bytes());
    image[532..536].copy_from_slice(&32u32.to_le_bytes());
    image[536..544].copy_from_slice(b"LVM2 001");
    image[544..576].copy_from_slice(b"FUZZFUZZFUZZFUZZFUZZFUZZFUZZFUZZ");
    image[576..584].copy_from_slice(&(8u64 << 20).to_le_bytes());
    image[584..592].copy_from_slice(&(1u64 << 20).to_le_bytes());
    image[616..624].copy_from_slice(&(AREA as u64).to_le_bytes());
    image[624..632].copy_from_slice(&(AREA_SIZE as u64).to_le_bytes());
    let label_crc = crc(&image[532..1024]);
    image[528..532].copy_from_slice(&label_crc.to_le_bytes());
    let offset = if wrap { AREA_SIZE - text.len().min(AREA_SIZE - 512) / 2 } else { 512 };
    for (i, byte) in text.iter().enumerate() {
        let at = offset + i;
        image[AREA + if at >= AREA_SIZE { at - AREA_SIZE + 512 } else { at }] = *byte;
    }
    let header = &mut image[AREA..AREA + 512];
    header[4..20].copy_from_slice(b" LVM2 x[5A%r0N*>");
    header[20..24].copy_from_slice(&1u32.to_le_bytes());
    header[24..32].copy_from_slice(&(AREA as u64).to_le_bytes());
    header[32..40].copy_from_slice(&(AREA_SIZE as u64).to_le_bytes());
    header[40..48].copy_from_slice(&(offset as u64).to_le_bytes());
    header[48..56].copy_from_slice(&(text.len() as u64).to_le_bytes());
    header[56..60].copy_from_slice(&crc(text).to_le_bytes());
    let header_crc = crc(&header[4..]);
    header[..4].copy_from_slice(&header_crc.to_le_bytes());
    // ZeroTail's size suffix: zeros up to 8 MiB, in 4 KiB units.
    let zeros = ((8usize << 20) - image.len()) / 4096;
    image.extend_from_slice(&(zeros as u16).to_be_bytes());
    image
}

fn check(volume: &ZeroTail<'_>) {
    let _ = imgstream_lvm::detect(volume);
    let Ok(pv) = read_pv(volume) else { return };
    let size = volume.size();
    let placed = [Placed { pv: &pv, offset: 0, size }];
    let map = map_source(&placed);
    assert_eq!(format!("{map:?}"), format!("{:?}", map_source(&placed)), "two mappings differ");
    for layout in map.pvs.iter().flatten() {
        assert!(layout.always.end() <= size && layout.free.end() <= size, "ranges past the PV");
        assert_eq!(layout.free.difference(&layout.always), layout.free, "free bytes are always copied");
        for lv in &map.lvs {
            for (_, extents) in &lv.extents {
                assert!(extents.end() <= size, "LV {} past the PV", lv.name);
                assert_eq!(extents.difference(&layout.free), *extents, "LV {} extents called free", lv.name);
            }
        }
    }
    for lv in &map.lvs {
        if let Ok(stretches) = &lv.map {
            let mapped = Mapped::new(volume, stretches.clone()).expect("an LV map is a valid view");
            assert_eq!(mapped.size(), lv.size, "LV {} map size", lv.name);
        }
    }
}

fuzz_target!(|input: &[u8]| {
    let Some((&mode, rest)) = input.split_first() else { return };
    if mode & 1 == 0 {
        check(&ZeroTail::new(rest));
    } else {
        let image = pv_around(rest, mode & 2 != 0);
        check(&ZeroTail::new(&image));
    }
});
