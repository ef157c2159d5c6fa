//! Little-endian field reads from on-disk structures. A field past the end of `bytes` reads as
//! zeros: callers read fixed offsets of buffers they sized themselves, so that never happens,
//! and validation of the values (not of the offsets) is theirs.

/// `N` bytes at `offset`.
pub(crate) fn array<const N: usize>(bytes: &[u8], offset: usize) -> [u8; N] {
    offset.checked_add(N).and_then(|end| bytes.get(offset..end)).and_then(|b| b.try_into().ok()).unwrap_or([0; N])
}

pub(crate) fn le16(bytes: &[u8], offset: usize) -> u16 {
    u16::from_le_bytes(array(bytes, offset))
}

pub(crate) fn le32(bytes: &[u8], offset: usize) -> u32 {
    u32::from_le_bytes(array(bytes, offset))
}

pub(crate) fn le64(bytes: &[u8], offset: usize) -> u64 {
    u64::from_le_bytes(array(bytes, offset))
}
