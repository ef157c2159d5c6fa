//! LVM2's checksum: CRC-32 (reflected polynomial 0xEDB88320) started from 0xF597A6CF, with no
//! final inversion (lvm2 `calc_crc(INITIAL_CRC, ...)`). It guards the label sector, the
//! metadata area header and the metadata text.

/// lvm2 `INITIAL_CRC`.
pub(crate) const INITIAL: u32 = 0xF597_A6CF;

/// Continues the checksum `crc` over `bytes`.
pub(crate) fn update(mut crc: u32, bytes: &[u8]) -> u32 {
    for &byte in bytes {
        crc ^= u32::from(byte);
        for _ in 0..8 {
            crc = (crc >> 1) ^ (0xEDB8_8320 & (crc & 1).wrapping_neg());
        }
    }
    crc
}

/// The checksum of `bytes`.
pub(crate) fn checksum(bytes: &[u8]) -> u32 {
    update(INITIAL, bytes)
}
