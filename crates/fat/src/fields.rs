//! Little-endian reads of on-disk fields from a sector already in memory (shared with the exFAT
//! crate). A field that does not fit in `bytes` reads as 0: callers size their buffers from
//! the specification, so that only happens on a bug, never on hostile input.

/// The byte at `offset`.
pub fn byte_at(bytes: &[u8], offset: usize) -> u8 {
    bytes.get(offset).copied().unwrap_or(0)
}

/// The little-endian u16 at `offset`.
pub fn u16_at(bytes: &[u8], offset: usize) -> u16 {
    bytes.get(offset..offset.saturating_add(2)).and_then(|b| b.try_into().ok()).map_or(0, u16::from_le_bytes)
}

/// The little-endian u32 at `offset`.
pub fn u32_at(bytes: &[u8], offset: usize) -> u32 {
    bytes.get(offset..offset.saturating_add(4)).and_then(|b| b.try_into().ok()).map_or(0, u32::from_le_bytes)
}

/// The little-endian u64 at `offset`.
pub fn u64_at(bytes: &[u8], offset: usize) -> u64 {
    bytes.get(offset..offset.saturating_add(8)).and_then(|b| b.try_into().ok()).map_or(0, u64::from_le_bytes)
}
