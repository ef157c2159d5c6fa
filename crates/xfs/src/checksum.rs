//! The CRC of v5 (CRC-enabled) XFS metadata: the standard CRC-32C of the whole structure with
//! its own checksum field counted as zeros, stored little-endian even though every other field
//! is big-endian (`xfs_start_cksum_update`/`xfs_end_cksum` in libxfs/xfs_cksum.h).

use crc::{CRC_32_ISCSI, Crc};
use imgstream_volume::fields::{array, le32};

const CRC32C: Crc<u32> = Crc::<u32>::new(&CRC_32_ISCSI);

/// The checksum xfs computes for `bytes` whose checksum field is at `field`.
pub(crate) fn compute(bytes: &[u8], field: usize) -> u32 {
    let (before, rest) = bytes.split_at(field.min(bytes.len()));
    let mut digest = CRC32C.digest();
    digest.update(before);
    digest.update(&[0; 4]);
    digest.update(rest.get(4..).unwrap_or_default());
    digest.finalize()
}

/// Whether the checksum stored at `field` matches; `Err` carries (stored, computed).
pub(crate) fn verify(bytes: &[u8], field: usize) -> Result<(), (u32, u32)> {
    let (stored, computed) = (le32(bytes, field), compute(bytes, field));
    if stored == computed { Ok(()) } else { Err((stored, computed)) }
}

/// Checks a v5 AG header sector: its checksum at `crc_field`, then its UUID at `uuid_field`
/// against the superblock's `metadata_uuid`; `Err` carries the bad field's offset and the problem.
pub(crate) fn verify_header(
    raw: &[u8],
    crc_field: usize,
    uuid_field: usize,
    metadata_uuid: [u8; 16],
) -> Result<(), (usize, String)> {
    if let Err((stored, computed)) = verify(raw, crc_field) {
        return Err((crc_field, format!("checksum 0x{stored:08x}, computed 0x{computed:08x}")));
    }
    if array::<16>(raw, uuid_field) != metadata_uuid {
        return Err((uuid_field, "UUID differs from the superblock's".into()));
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::indexing_slicing)] // known-size test data
mod tests {
    use super::*;

    #[test]
    fn the_field_counts_as_zeros_and_the_result_is_the_standard_crc32c() {
        // The catalogue's CRC-32C check value of "123456789".
        assert_eq!(CRC32C.checksum(b"123456789"), 0xE306_9283);
        let mut bytes = *b"12345678\0\0\0\09";
        assert_eq!(compute(&bytes, 8), CRC32C.checksum(b"12345678\0\0\0\09"));
        let sum = compute(&bytes, 8);
        bytes[8..12].copy_from_slice(&sum.to_le_bytes());
        assert_eq!(verify(&bytes, 8), Ok(()));
        bytes[12] ^= 1;
        assert!(verify(&bytes, 8).is_err());
    }
}
