//! Little-endian field reads from on-disk sectors, without indexing.
//!
//! Every buffer handed to these functions was read whole (`read_exact_at` of a fixed size), so
//! a field outside it is a programming error in this crate, not bad input; it reads as zero,
//! which every caller treats as "absent" and which the unit tests would catch.

/// `N` bytes at `at`, or zeros if the buffer is too short.
pub(crate) fn array<const N: usize>(bytes: &[u8], at: usize) -> [u8; N] {
    at.checked_add(N).and_then(|end| bytes.get(at..end)).and_then(|field| field.try_into().ok()).unwrap_or([0; N])
}

/// The byte at `at`.
pub(crate) fn u8_at(bytes: &[u8], at: usize) -> u8 {
    bytes.get(at).copied().unwrap_or(0)
}

/// Little-endian u16 at `at`.
pub(crate) fn le16(bytes: &[u8], at: usize) -> u16 {
    u16::from_le_bytes(array(bytes, at))
}

/// Little-endian u32 at `at`.
pub(crate) fn le32(bytes: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(array(bytes, at))
}

/// Little-endian u64 at `at`.
pub(crate) fn le64(bytes: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(array(bytes, at))
}

/// A GUID as text, the way sfdisk and the UEFI spec print it: the first three fields are
/// stored little-endian, the last two as bytes.
pub(crate) fn guid(raw: &[u8; 16]) -> String {
    let [a0, a1, a2, a3, b0, b1, c0, c1, d @ ..] = *raw;
    let [d0, d1, e0, e1, e2, e3, e4, e5] = d;
    format!(
        "{:08X}-{:04X}-{:04X}-{d0:02X}{d1:02X}-{e0:02X}{e1:02X}{e2:02X}{e3:02X}{e4:02X}{e5:02X}",
        u32::from_le_bytes([a0, a1, a2, a3]),
        u16::from_le_bytes([b0, b1]),
        u16::from_le_bytes([c0, c1]),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_buffers_read_as_zero_and_guids_print_mixed_endian() {
        assert_eq!(le32(&[1, 2, 3], 0), 0);
        assert_eq!(le16(&[1, 2, 3], 1), 0x0302);
        assert_eq!(le64(&[0; 4], usize::MAX), 0);
        // The Microsoft basic data GUID as stored on disk, and as sfdisk prints it.
        let raw = [0xA2, 0xA0, 0xD0, 0xEB, 0xE5, 0xB9, 0x33, 0x44, 0x87, 0xC0, 0x68, 0xB6, 0xB7, 0x26, 0x99, 0xC7];
        assert_eq!(guid(&raw), "EBD0A0A2-B9E5-4433-87C0-68B6B72699C7");
    }
}
