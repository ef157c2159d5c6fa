//! Names for volumes that no filesystem crate reads, so that "copied raw" says what was copied.
//!
//! Each entry is a magic number at a fixed place, with the source it comes from. The table is
//! consulted only after every parser declined the volume ([`crate::examine`]), so a crate that
//! learns a format (XFS, btrfs, LVM2, md) takes precedence over its entry here. Recognising a
//! signature never elides anything: it only names the volume and, where there is one, says how
//! to image it so that it can be elided (open the encryption, expose a disk image as raw).

use imgstream_blockio::ReadAt;
use std::io;

/// A format that imgstream names but does not elide.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Signature {
    /// Short name, shown where a filesystem's name would be ("luks2", "btrfs", "qcow2").
    pub name: &'static str,
    /// What it is, in words.
    pub what: &'static str,
    /// How to image it elided instead, or "".
    pub hint: &'static str,
    /// Where its magic is.
    places: &'static [Place],
    /// The bytes found there.
    magic: &'static [u8],
}

impl Signature {
    /// "LUKS2 encrypted container (imgstream does not read it; to elide ...)".
    pub fn describe(&self) -> String {
        let hint = if self.hint.is_empty() { String::new() } else { format!("; {}", self.hint) };
        format!("{} (imgstream does not read it{hint})", self.what)
    }
}

/// A byte offset of a magic number.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Place {
    /// From the start of the volume.
    Start(u64),
    /// md v1.0: 8 KiB before the end, rounded down to 4 KiB (mdadm `super1.c`: `sb_offset =
    /// (dsize - 8*2) & ~(4*2-1)` in sectors).
    Md10,
    /// md 0.90: the last 64 KiB-aligned 64 KiB block (`MD_NEW_SIZE_SECTORS`, `md_p.h`).
    Md090,
    /// `count` slots of `step` bytes from `start` (a ring of records, any of which may be live).
    Ring { start: u64, step: u64, count: u64 },
}

impl Place {
    fn offsets(self, size: u64) -> Vec<u64> {
        match self {
            Self::Start(offset) => vec![offset],
            Self::Md10 => (size / 512).checked_sub(16).map(|sectors| (sectors & !7) * 512).into_iter().collect(),
            Self::Md090 => (size & !0xFFFF).checked_sub(0x1_0000).into_iter().collect(),
            Self::Ring { start, step, count } => (0..count).map(|slot| start + slot * step).collect(),
        }
    }
}

const HINT_LUKS: &str = "to elide, open it (`cryptsetup open SOURCE NAME`) and image /dev/mapper/NAME";
const HINT_IMAGE: &str = "to elide the disk inside, expose it as raw (`qemu-storage-daemon --blockdev \
driver=file,... --export type=fuse,...` or `qemu-nbd -r`) and image that";
const HINT_LVM: &str = "to elide, image each logical volume (`vgchange -ay`, then imgstream part /dev/VG/LV)";

const HINT_MD: &str = "to elide, assemble the array and image /dev/mdN";
const AT_0: &[Place] = &[Place::Start(0)];

/// One table entry (a function, so that each fits on a line).
const fn sig(
    name: &'static str,
    what: &'static str,
    hint: &'static str,
    places: &'static [Place],
    magic: &'static [u8],
) -> Signature {
    Signature { name, what, hint, places, magic }
}

/// Most specific first: entries at byte 0 with long magics, then later offsets.
const TABLE: &[Signature] = &[
    // cryptsetup docs/on-disk-format.pdf and on-disk-format-luks2.pdf: "LUKS\xba\xbe", then the
    // big-endian version.
    sig("luks1", "LUKS1 encrypted container", HINT_LUKS, AT_0, b"LUKS\xba\xbe\x00\x01"),
    sig("luks2", "LUKS2 encrypted container", HINT_LUKS, AT_0, b"LUKS\xba\xbe\x00\x02"),
    // qemu docs/interop/qcow2.txt: "QFI\xfb".
    sig("qcow2", "qcow2 disk image", HINT_IMAGE, AT_0, b"QFI\xfb"),
    // VMware Virtual Disk Format 1.1, sparse extent header: "KDMV"; or a text descriptor.
    sig("vmdk", "VMDK disk image", HINT_IMAGE, AT_0, b"KDMV"),
    sig("vmdk", "VMDK descriptor", HINT_IMAGE, AT_0, b"# Disk DescriptorFile"),
    // MS-VHDX 2.2.1 file type identifier: "vhdxfile".
    sig("vhdx", "VHDX disk image", HINT_IMAGE, AT_0, b"vhdxfile"),
    // Virtual Hard Disk Image Format Specification: a dynamic disk starts with a footer copy.
    sig("vhd", "VHD disk image", HINT_IMAGE, AT_0, b"conectix"),
    // BitLocker (libbde documentation): OEM name "-FVE-FS-" in the boot sector.
    sig(
        "bitlocker",
        "BitLocker encrypted volume",
        "to elide, unlock it (`dislocker` or Windows) and image the decrypted volume",
        &[Place::Start(3)],
        b"-FVE-FS-",
    ),
    // ReFS (libfsrefs documentation): OEM name "ReFS\0\0\0\0" in the volume header.
    sig("refs", "ReFS filesystem", "", &[Place::Start(3)], b"ReFS\0\0\0\0"),
    // Apple File System Reference: the container superblock's magic "NXSB" after its 32-byte
    // object header.
    sig("apfs", "APFS container", "", &[Place::Start(32)], b"NXSB"),
    // LVM2 lib/format_text/layout.h: "LABELONE" in one of sectors 0-3, type "LVM2 001" at +24.
    // Only the id is matched here; the type follows it in every sector pvcreate writes.
    sig(
        "lvm2-pv",
        "LVM2 physical volume",
        HINT_LVM,
        &[Place::Start(0), Place::Start(512), Place::Start(1024), Place::Start(1536)],
        b"LABELONE",
    ),
    // md_p.h: MD_SB_MAGIC 0xa92b4efc (little-endian), major_version 1 (v1.x) or 0 (0.90).
    sig(
        "md-member",
        "md RAID member (metadata 1.x)",
        HINT_MD,
        &[Place::Start(0), Place::Start(4096), Place::Md10],
        b"\xfc\x4e\x2b\xa9\x01\x00\x00\x00",
    ),
    sig("md-member", "md RAID member (metadata 0.90)", HINT_MD, &[Place::Md090], b"\xfc\x4e\x2b\xa9\x00\x00\x00\x00"),
    // hfs_format.h: kHFSPlusSigWord "H+" version 4, kHFSXSigWord "HX" version 5, at 1024.
    sig("hfsplus", "HFS+ filesystem", "", &[Place::Start(1024)], b"H+\x00\x04"),
    sig("hfsplus", "HFSX filesystem", "", &[Place::Start(1024)], b"HX\x00\x05"),
    // f2fs_fs.h: F2FS_SUPER_MAGIC 0xF2F52010 (little-endian) at F2FS_SUPER_OFFSET 1024.
    sig("f2fs", "F2FS filesystem", "", &[Place::Start(1024)], b"\x10\x20\xf5\xf2"),
    // bcache.h: the superblock at sector 8, its 16-byte magic after offset(8) crc(8) version(8).
    sig(
        "bcache",
        "bcache device",
        "to elide, image the /dev/bcacheN it backs",
        &[Place::Start(4096 + 24)],
        b"\xc6\x85\x73\xf6\x4e\x1a\x45\xca\x82\x65\xf5\x7f\x48\xba\x6d\x81",
    ),
    // btrfs ctree.h: BTRFS_MAGIC "_BHRfS_M" at byte 64 of the superblock at 64 KiB.
    sig("btrfs", "btrfs filesystem", "", &[Place::Start(0x1_0040)], b"_BHRfS_M"),
    // ZFS uberblock.h: UBERBLOCK_MAGIC 0x00bab10c, little-endian u64, in the uberblock ring of
    // label 0 (vdev_impl.h: at 128 KiB, 128 KiB long; a slot is 1 KiB or 2^ashift bytes, so
    // every 1 KiB step covers both).
    sig(
        "zfs",
        "ZFS pool member",
        "",
        &[Place::Ring { start: 128 * 1024, step: 1024, count: 128 }],
        b"\x0c\xb1\xba\x00\x00\x00\x00\x00",
    ),
    // vmfs-tools vmfs_volume.h: VMFS_VOLINFO_MAGIC 0xc001d00d (little-endian) at 1 MiB.
    sig("vmfs", "VMFS datastore", "", &[Place::Start(0x10_0000)], b"\x0d\xd0\x01\xc0"),
];

/// The first entry whose magic `volume` holds at one of its places, if any.
pub fn identify(volume: &dyn ReadAt) -> io::Result<Option<&'static Signature>> {
    let size = volume.size();
    let mut buf = [0u8; 32];
    for signature in TABLE {
        let Some(buf) = buf.get_mut(..signature.magic.len()) else { continue };
        for offset in signature.places.iter().flat_map(|place| place.offsets(size)) {
            if offset.checked_add(buf.len() as u64).is_none_or(|end| end > size) {
                continue;
            }
            volume.read_exact_at(buf, offset)?;
            if buf == signature.magic {
                return Ok(Some(signature));
            }
        }
    }
    Ok(None)
}

#[cfg(test)]
#[allow(clippy::indexing_slicing)]
mod tests {
    use super::*;

    /// Every entry, written alone at each of its places into a zeroed volume, is found as itself.
    #[test]
    fn every_entry_is_found_at_each_of_its_places_and_nothing_in_zeros() {
        let size = 4 << 20;
        assert_eq!(identify(&vec![0u8; size]).unwrap(), None);
        for signature in TABLE {
            for offset in signature.places.iter().flat_map(|place| place.offsets(size as u64)) {
                let mut volume = vec![0u8; size];
                let offset = offset as usize;
                volume[offset..offset + signature.magic.len()].copy_from_slice(signature.magic);
                let found = identify(&volume).unwrap().unwrap();
                assert_eq!((found.name, found.what), (signature.name, signature.what), "at byte {offset}");
            }
        }
    }

    #[test]
    fn md_superblock_places_follow_mdadm() {
        // A 10 MiB + 3 sector member: v1.0 at (20486 - 16) & !7 = 20464 sectors; 0.90 at 10 MiB - 64 KiB.
        let size = 10 * 1024 * 1024 + 3 * 512;
        assert_eq!(Place::Md10.offsets(size), [20464 * 512]);
        assert_eq!(Place::Md090.offsets(size), [10 * 1024 * 1024 - 65536]);
        assert_eq!(Place::Md10.offsets(4096), []);
        assert_eq!(Place::Md090.offsets(4096), []);
    }
}
