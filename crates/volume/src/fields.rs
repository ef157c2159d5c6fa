//! Little- and big-endian reads of on-disk fields from a structure already in memory, without indexing.
//!
//! A field that does not fit in `bytes` reads as zeros. That is safe because callers read
//! fixed offsets of buffers they sized themselves from the specification (`read_exact_at` of
//! the whole structure), so it only happens on a bug in the caller, never on hostile input;
//! validating the values, not the offsets, is the caller's job, and a zero fails it.

/// The `N` bytes at `offset`.
pub fn array<const N: usize>(bytes: &[u8], offset: usize) -> [u8; N] {
    offset.checked_add(N).and_then(|end| bytes.get(offset..end)).and_then(|b| b.try_into().ok()).unwrap_or([0; N])
}

/// The byte at `offset`.
pub fn u8_at(bytes: &[u8], offset: usize) -> u8 {
    bytes.get(offset).copied().unwrap_or(0)
}

/// The little-endian u16 at `offset`.
pub fn le16(bytes: &[u8], offset: usize) -> u16 {
    u16::from_le_bytes(array(bytes, offset))
}

/// The little-endian u32 at `offset`.
pub fn le32(bytes: &[u8], offset: usize) -> u32 {
    u32::from_le_bytes(array(bytes, offset))
}

/// The little-endian u64 at `offset`.
pub fn le64(bytes: &[u8], offset: usize) -> u64 {
    u64::from_le_bytes(array(bytes, offset))
}

/// The big-endian u16 at `offset` (XFS).
pub fn be16(bytes: &[u8], offset: usize) -> u16 {
    u16::from_be_bytes(array(bytes, offset))
}

/// The big-endian u32 at `offset`.
pub fn be32(bytes: &[u8], offset: usize) -> u32 {
    u32::from_be_bytes(array(bytes, offset))
}

/// The big-endian u64 at `offset`.
pub fn be64(bytes: &[u8], offset: usize) -> u64 {
    u64::from_be_bytes(array(bytes, offset))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_read_in_either_byte_order_and_short_buffers_read_as_zero() {
        let bytes = [1, 2, 3, 4, 5, 6, 7, 8, 9];
        assert_eq!(u8_at(&bytes, 8), 9);
        assert_eq!(le16(&bytes, 1), 0x0302);
        assert_eq!(le32(&bytes, 0), 0x0403_0201);
        assert_eq!(le64(&bytes, 1), 0x0908_0706_0504_0302);
        assert_eq!(array::<3>(&bytes, 6), [7, 8, 9]);
        assert_eq!(be16(&bytes, 1), 0x0203);
        assert_eq!(be32(&bytes, 0), 0x0102_0304);
        assert_eq!(be64(&bytes, 1), 0x0203_0405_0607_0809);
        // One byte short, past the end, or an offset that overflows: zeros.
        assert_eq!(u8_at(&bytes, 9), 0);
        assert_eq!(le32(&bytes, 6), 0);
        assert_eq!(le64(&bytes, 2), 0);
        assert_eq!(be32(&bytes, 6), 0);
        assert_eq!(le16(&bytes, usize::MAX), 0);
        assert_eq!(array::<4>(&bytes, usize::MAX - 1), [0; 4]);
    }
}
