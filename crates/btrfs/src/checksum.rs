//! The four checksums btrfs stores in the first 32 bytes of its superblock and of every tree
//! block (kernel `fs/btrfs/disk-io.c csum_tree_block`, `btrfs_check_super_csum`): computed over
//! the rest of the structure, from byte 32 to its end, and stored little-endian from byte 0.

use blake2::Blake2b;
use blake2::digest::Digest;
use blake2::digest::consts::U32;
use crc::{CRC_32_ISCSI, Crc};
use sha2::Sha256;
use std::fmt;

/// Bytes at the start of a checksummed structure that hold the checksum itself.
pub(crate) const CSUM_AREA: usize = 32;

const CRC32C: Crc<u32> = Crc::<u32>::new(&CRC_32_ISCSI);

/// `btrfs_super_block.csum_type`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CsumType {
    /// 0: CRC-32C (Castagnoli), 4 bytes.
    Crc32c,
    /// 1: xxHash64 with seed 0, 8 bytes.
    Xxhash64,
    /// 2: SHA-256, 32 bytes.
    Sha256,
    /// 3: BLAKE2b-256, 32 bytes.
    Blake2b,
}

impl CsumType {
    /// The type stored as `raw`, or `None` for a type this crate does not know.
    pub(crate) fn from_raw(raw: u16) -> Option<Self> {
        match raw {
            0 => Some(Self::Crc32c),
            1 => Some(Self::Xxhash64),
            2 => Some(Self::Sha256),
            3 => Some(Self::Blake2b),
            _ => None,
        }
    }

    /// The checksum of `block[32..]` in its on-disk form (the first bytes of a 32-byte area).
    pub(crate) fn compute(self, block: &[u8]) -> Vec<u8> {
        let covered = block.get(CSUM_AREA..).unwrap_or_default();
        match self {
            Self::Crc32c => CRC32C.checksum(covered).to_le_bytes().to_vec(),
            Self::Xxhash64 => xxhash_rust::xxh64::xxh64(covered, 0).to_le_bytes().to_vec(),
            Self::Sha256 => Sha256::digest(covered).to_vec(),
            Self::Blake2b => Blake2b::<U32>::digest(covered).to_vec(),
        }
    }

    /// True if the checksum stored at the start of `block` matches its content.
    pub(crate) fn verify(self, block: &[u8]) -> bool {
        let computed = self.compute(block);
        block.get(..computed.len()) == Some(&computed[..])
    }
}

impl fmt::Display for CsumType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Crc32c => "crc32c",
            Self::Xxhash64 => "xxhash64",
            Self::Sha256 => "sha256",
            Self::Blake2b => "blake2b",
        })
    }
}
