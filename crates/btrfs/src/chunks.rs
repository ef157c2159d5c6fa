//! Chunks: btrfs's logical address space mapped onto devices (`struct btrfs_chunk`, CHUNK_ITEM
//! 228 in the chunk tree, and the same records in the superblock's `sys_chunk_array`).
//!
//! Each chunk is a run of logical addresses backed by one or more stripes, each a byte range of
//! one device. The profile decides how: SINGLE, DUP and RAID1/1C3/1C4 hold the whole chunk in
//! every stripe (two stripes on the same device for DUP), RAID0/10/5/6 spread it over their
//! stripes in `stripe_len` pieces. SINGLE, DUP, RAID1* and the striping of RAID0 and RAID10 are
//! mapped byte for byte here (as the kernel's `btrfs_map_block` does); RAID5/6, whose parity
//! rotates, is kept whole on this device, and its tree blocks cannot be read.

use crate::Error;
use imgstream_volume::fields::{le16, le64};
use std::collections::BTreeMap;
use std::ops::Range;

/// Bytes of `struct btrfs_chunk` before its stripes.
pub(crate) const CHUNK_LEN: usize = 48;
/// Bytes of one `struct btrfs_stripe`.
const STRIPE_LEN: usize = 32;

/// Block group type bits (`BTRFS_BLOCK_GROUP_*`).
pub(crate) const TYPE_DATA: u64 = 1 << 0;
pub(crate) const TYPE_SYSTEM: u64 = 1 << 1;
pub(crate) const TYPE_METADATA: u64 = 1 << 2;
const TYPE_KINDS: u64 = TYPE_DATA | TYPE_SYSTEM | TYPE_METADATA;

/// How a chunk's bytes are laid out over its stripes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Profile {
    Single,
    Dup,
    /// RAID1 (2 copies), RAID1C3, RAID1C4: every stripe holds the whole chunk.
    Mirror(u16),
    Raid0,
    Raid10,
    Raid5,
    Raid6,
}

impl Profile {
    /// The profile named by a chunk's type bits, or `None` if more than one profile bit is set.
    fn from_type(flags: u64) -> Option<Self> {
        let profiles = [
            (1 << 3, Self::Raid0),
            (1 << 4, Self::Mirror(2)),
            (1 << 5, Self::Dup),
            (1 << 6, Self::Raid10),
            (1 << 7, Self::Raid5),
            (1 << 8, Self::Raid6),
            (1 << 9, Self::Mirror(3)),
            (1 << 10, Self::Mirror(4)),
        ];
        let mut found = profiles.iter().filter(|(bit, _)| flags & bit != 0).map(|&(_, profile)| profile);
        match (found.next(), found.next()) {
            (None, _) => Some(Self::Single),
            (Some(profile), None) => Some(profile),
            (Some(_), Some(_)) => None,
        }
    }

    /// The name `btrfs filesystem df` uses.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::Single => "single",
            Self::Dup => "DUP",
            Self::Mirror(2) => "RAID1",
            Self::Mirror(3) => "RAID1C3",
            Self::Mirror(_) => "RAID1C4",
            Self::Raid0 => "RAID0",
            Self::Raid10 => "RAID10",
            Self::Raid5 => "RAID5",
            Self::Raid6 => "RAID6",
        }
    }
}

/// One stripe: a byte range of device `devid` starting at `offset`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Stripe {
    pub(crate) devid: u64,
    pub(crate) offset: u64,
}

/// A validated chunk.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Chunk {
    pub(crate) logical: u64,
    pub(crate) length: u64,
    pub(crate) flags: u64,
    pub(crate) profile: Profile,
    pub(crate) stripes: Vec<Stripe>,
    sub_stripes: u64,
    /// Bytes of one piece of a RAID0/10 stripe (`BTRFS_STRIPE_LEN`, 64 KiB).
    stripe_len: u64,
}

impl Chunk {
    /// Parses the chunk item for logical address `logical` from `bytes`, which holds the item
    /// (and maybe more); `at` is its absolute byte offset, for messages. Returns the chunk and
    /// the item's length.
    pub(crate) fn parse(logical: u64, bytes: &[u8], at: u64, sectorsize: u32) -> Result<(Self, usize), Error> {
        let structure = || format!("chunk item for logical {logical}");
        let corrupt = |problem: String| Error::corrupt(structure(), at, problem);
        if bytes.len() < CHUNK_LEN {
            return Err(corrupt(format!("{} bytes, a chunk item needs at least {CHUNK_LEN}", bytes.len())));
        }
        let length = le64(bytes, 0);
        let flags = le64(bytes, 24);
        let num_stripes = le16(bytes, 44);
        let sub_stripes = u64::from(le16(bytes, 46));
        let item_len = CHUNK_LEN + STRIPE_LEN * usize::from(num_stripes);
        if bytes.len() < item_len {
            return Err(corrupt(format!(
                "{num_stripes} stripes need {item_len} bytes, the item holds {}",
                bytes.len()
            )));
        }
        if length == 0 || length % u64::from(sectorsize) != 0 || logical.checked_add(length).is_none() {
            return Err(corrupt(format!("length {length} is not a non-zero multiple of the sector size {sectorsize}")));
        }
        if flags & TYPE_KINDS == 0 {
            return Err(corrupt(format!("type 0x{flags:x} is none of data, metadata, system")));
        }
        let profile =
            Profile::from_type(flags).ok_or_else(|| corrupt(format!("type 0x{flags:x} names two profiles")))?;
        let expected = match profile {
            Profile::Single => Some(1),
            Profile::Dup => Some(2),
            Profile::Mirror(copies) => Some(copies),
            _ => None,
        };
        let fits = match profile {
            Profile::Raid10 => sub_stripes >= 2 && num_stripes >= 2 && u64::from(num_stripes) % sub_stripes == 0,
            Profile::Raid5 => num_stripes >= 2,
            Profile::Raid6 => num_stripes >= 3,
            _ => expected.is_none_or(|n| num_stripes == n) && num_stripes >= 1,
        };
        if !fits {
            return Err(corrupt(format!(
                "{num_stripes} stripes ({sub_stripes} sub-stripes) do not fit its {} profile",
                profile.name()
            )));
        }
        let stripes: Vec<Stripe> = (0..usize::from(num_stripes))
            .map(|i| {
                let base = CHUNK_LEN + i * STRIPE_LEN;
                Stripe { devid: le64(bytes, base), offset: le64(bytes, base + 8) }
            })
            .collect();
        let stripe_len = le64(bytes, 16);
        let chunk = Self { logical, length, flags, profile, stripes, sub_stripes, stripe_len };
        let per_device = chunk.device_length();
        if let Some(stripe) = chunk.stripes.iter().find(|s| s.offset.checked_add(per_device).is_none()) {
            return Err(corrupt(format!("stripe at device byte {} overflows", stripe.offset)));
        }
        if profile == Profile::Dup
            && chunk.stripes.iter().any(|s| s.devid != chunk.stripes.first().map_or(0, |f| f.devid))
        {
            return Err(corrupt("DUP stripes lie on different devices".into()));
        }
        Ok((chunk, item_len))
    }

    /// Logical addresses of the chunk.
    pub(crate) fn range(&self) -> Range<u64> {
        self.logical..self.logical + self.length
    }

    /// Bytes each stripe occupies on its device (the length of its device extent).
    pub(crate) fn device_length(&self) -> u64 {
        let n = self.stripes.len() as u64;
        match self.profile {
            Profile::Single | Profile::Dup | Profile::Mirror(_) => self.length,
            Profile::Raid0 => self.length / n,
            Profile::Raid10 => self.length / (n / self.sub_stripes.max(1)),
            Profile::Raid5 => self.length / (n - 1),
            Profile::Raid6 => self.length / (n - 2),
        }
    }

    /// The stripes on device `devid`.
    pub(crate) fn stripes_on(&self, devid: u64) -> impl Iterator<Item = &Stripe> + '_ {
        self.stripes.iter().filter(move |s| s.devid == devid)
    }

    /// True if logical addresses of this chunk can be mapped to device bytes here: every
    /// profile but RAID5/6 (whose parity rotates), and RAID0/10 only with a stripe length that is
    /// a power of two of at least 4 KiB and a chunk made of whole rows of pieces, as btrfs makes.
    pub(crate) fn is_mapped(&self) -> bool {
        match self.profile {
            Profile::Single | Profile::Dup | Profile::Mirror(_) => true,
            Profile::Raid0 | Profile::Raid10 => {
                let row = self.stripe_len.checked_mul(self.stripe_groups());
                let sane = self.stripe_len.is_power_of_two() && self.stripe_len >= 4096;
                sane && row.is_some_and(|row| self.length % row == 0)
            }
            Profile::Raid5 | Profile::Raid6 => false,
        }
    }

    /// RAID0/10: how many stripe groups a row of pieces spans (stripes, or mirrored pairs).
    fn stripe_groups(&self) -> u64 {
        let copies = if self.profile == Profile::Raid10 { self.sub_stripes } else { 1 };
        self.stripes.len() as u64 / copies.max(1)
    }

    /// Device byte ranges on `devid` holding the logical `range` (which lies inside the chunk),
    /// every copy of it there; `None` if the chunk [`is_mapped`](Self::is_mapped) not.
    pub(crate) fn copies_on(&self, devid: u64, range: Range<u64>) -> Option<Vec<Range<u64>>> {
        if !self.is_mapped() {
            return None;
        }
        let (start, end) = (range.start - self.logical, range.end - self.logical);
        let copies = match self.profile {
            Profile::Raid0 => 1,
            Profile::Raid10 => self.sub_stripes,
            _ => return Some(self.stripes_on(devid).map(|s| s.offset + start..s.offset + end).collect()),
        };
        if start >= end {
            return Some(Vec::new());
        }
        // RAID0/10 (kernel `btrfs_map_block`): piece p (of stripe_len bytes) of the chunk lies in
        // stripe group p % groups, at row p / groups of each of the group's `copies` stripes. The
        // bytes of `range` in one group are contiguous on its stripes, from the first byte of the
        // range that falls in the group to the last.
        let (len, groups) = (self.stripe_len, self.stripe_groups());
        let on_device = |x: u64| x / len / groups * len + x % len;
        let mut found = Vec::new();
        for (index, stripe) in self.stripes.iter().enumerate().filter(|(_, s)| s.devid == devid) {
            let group = index as u64 / copies;
            let (first_piece, last_piece) = (start / len, (end - 1) / len);
            let first = first_piece + (group + groups - first_piece % groups) % groups;
            let last = last_piece.checked_sub((last_piece % groups + groups - group) % groups);
            let (Some(last), true) = (last, first <= last_piece) else { continue };
            let (x, y) = (start.max(first * len), (end - 1).min((last * len).saturating_add(len - 1)));
            if x <= y {
                found.push(stripe.offset + on_device(x)..stripe.offset + on_device(y) + 1);
            }
        }
        Some(found)
    }
}

/// Every chunk, by logical start; chunks never overlap.
#[derive(Clone, Debug, Default)]
pub(crate) struct ChunkMap {
    chunks: BTreeMap<u64, Chunk>,
}

impl ChunkMap {
    /// Adds `chunk`; `at` is its item's byte offset, for the message if it overlaps another.
    pub(crate) fn insert(&mut self, chunk: Chunk, at: u64) -> Result<(), Error> {
        let overlapping =
            self.chunks.range(..chunk.range().end).next_back().filter(|(_, c)| c.range().end > chunk.logical);
        if let Some((_, other)) = overlapping {
            return Err(Error::corrupt(
                format!("chunk item for logical {}", chunk.logical),
                at,
                format!("it overlaps the chunk at logical {}..{}", other.logical, other.range().end),
            ));
        }
        self.chunks.insert(chunk.logical, chunk);
        Ok(())
    }

    /// The chunk holding logical address `logical`.
    pub(crate) fn find(&self, logical: u64) -> Option<&Chunk> {
        self.chunks.range(..=logical).next_back().map(|(_, c)| c).filter(|c| c.range().contains(&logical))
    }

    /// The chunk starting at `logical`.
    pub(crate) fn get(&self, logical: u64) -> Option<&Chunk> {
        self.chunks.get(&logical)
    }

    /// Every chunk, in logical order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = &Chunk> {
        self.chunks.values()
    }

    /// Parses the superblock's `sys_chunk_array`: (disk key, chunk item) pairs, packed.
    /// `at` is the array's absolute byte offset.
    pub(crate) fn from_sys_array(array: &[u8], at: u64, sectorsize: u32) -> Result<Self, Error> {
        let mut map = Self::default();
        let mut pos = 0;
        while pos < array.len() {
            let item_at = at + pos as u64;
            let key = array
                .get(pos..pos + crate::tree::KEY_LEN)
                .ok_or_else(|| Error::corrupt("sys_chunk_array", item_at, "the array ends inside a key".to_string()))?;
            let key = crate::tree::Key::parse(key);
            if key.item_type != crate::tree::CHUNK_ITEM {
                return Err(Error::corrupt(
                    "sys_chunk_array",
                    item_at,
                    format!("key type {} is not CHUNK_ITEM ({})", key.item_type, crate::tree::CHUNK_ITEM),
                ));
            }
            pos += crate::tree::KEY_LEN;
            let (chunk, len) =
                Chunk::parse(key.offset, array.get(pos..).unwrap_or_default(), at + pos as u64, sectorsize)?;
            map.insert(chunk, item_at)?;
            pos += len;
        }
        Ok(map)
    }
}
