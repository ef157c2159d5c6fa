//! The two checksums of ext metadata, in the form e2fsprogs (lib/ext2fs/csum.c, crc16.c) and
//! the kernel compute them.
//!
//! - crc32c "raw": the Castagnoli CRC with a caller-chosen seed and *no* final inversion
//!   (`ext2fs_crc32c_le`). The `crc` crate's CRC-32/ISCSI inverts at the end, so we undo it, and
//!   it reflects the initial value of a reflected algorithm, so we pre-reflect the seed.
//! - crc16 (uninit_bg / GDT_CSUM only): polynomial 0x8005 reflected, initial 0xFFFF, no final
//!   xor, which is the catalogue's CRC-16/MODBUS.

use crc::{CRC_16_MODBUS, CRC_32_ISCSI, Crc};

const CRC32C: Crc<u32> = Crc::<u32>::new(&CRC_32_ISCSI);
const CRC16: Crc<u16> = Crc::<u16>::new(&CRC_16_MODBUS);

/// `ext2fs_crc32c_le(seed, parts...)`: the parts are checksummed as one byte string.
pub(crate) fn crc32c_raw(seed: u32, parts: &[&[u8]]) -> u32 {
    let mut digest = CRC32C.digest_with_initial(seed.reverse_bits());
    for part in parts {
        digest.update(part);
    }
    !digest.finalize()
}

/// `ext2fs_crc16(~0, parts...)`.
pub(crate) fn crc16(parts: &[&[u8]]) -> u16 {
    let mut digest = CRC16.digest();
    for part in parts {
        digest.update(part);
    }
    digest.finalize()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32c_raw_is_the_inverted_standard_crc32c_when_seeded_with_all_ones() {
        // The standard CRC-32C check value of "123456789" is 0xE3069283 (the catalogue's);
        // the raw form skips the final inversion.
        assert_eq!(crc32c_raw(!0, &[b"123456789"]), !0xE306_9283);
    }

    #[test]
    fn crc32c_raw_chains_like_the_kernel() {
        // crc32c(crc32c(seed, a), b) == crc32c(seed, a ‖ b): the seed of the second call is the
        // raw result of the first, which checks the seed reflection.
        let first = crc32c_raw(0x1234_5678, &[b"group"]);
        assert_eq!(crc32c_raw(first, &[b"descriptor"]), crc32c_raw(0x1234_5678, &[b"group", b"descriptor"]));
    }

    #[test]
    fn crc16_is_modbus() {
        // The catalogue's CRC-16/MODBUS check value.
        assert_eq!(crc16(&[b"123456789"]), 0x4B37);
    }
}
