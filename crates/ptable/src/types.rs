//! Names of common partition types (GPT type GUIDs, MBR system ids), and which of them hold no
//! filesystem by design.
//!
//! Sources: the UEFI specification (table 5.7, "Defined GPT Partition Entry - Partition Type
//! GUIDs"), the Discoverable Partitions Specification (uapi-group.org) for the Linux types,
//! Microsoft's `PARTITION_INFORMATION_GPT` documentation for the Windows ones, and util-linux's
//! `include/pt-mbr-partnames.h` (the names fdisk shows) for MBR ids.

/// A known partition type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PartitionType {
    /// The type as [`crate::Partition::type_id`] spells it: an upper-case GUID (GPT) or the
    /// system id in lower-case hex without leading zeros (MBR: "83", "7").
    pub id: &'static str,
    /// Its name ("EFI System", "Linux filesystem", "HPFS/NTFS/exFAT").
    pub name: &'static str,
    /// Holds no filesystem by design (BIOS boot, Microsoft Reserved): copied raw, no warning.
    pub no_filesystem: bool,
}

const fn typed(id: &'static str, name: &'static str) -> PartitionType {
    PartitionType { id, name, no_filesystem: false }
}

const GPT_TYPES: &[PartitionType] = &[
    typed("C12A7328-F81F-11D2-BA4B-00A0C93EC93B", "EFI System"),
    PartitionType { id: "21686148-6449-6E6F-744E-656564454649", name: "BIOS boot", no_filesystem: true },
    PartitionType { id: "E3C9E316-0B5C-4DB8-817D-F92DF00215AE", name: "Microsoft reserved", no_filesystem: true },
    typed("EBD0A0A2-B9E5-4433-87C0-68B6B72699C7", "Microsoft basic data"),
    typed("DE94BBA4-06D1-4D40-A16A-BFD50179D6AC", "Windows recovery environment"),
    typed("5808C8AA-7E8F-42E0-85D2-E1E90434CFB3", "Windows LDM metadata"),
    typed("AF9B60A0-1431-4F62-BC68-3311714A69AD", "Windows LDM data"),
    typed("E75CAF8F-F680-4CEE-AFA3-B001E56EFC2D", "Windows Storage Spaces"),
    typed("0FC63DAF-8483-4772-8E79-3D69D8477DE4", "Linux filesystem"),
    typed("0657FD6D-A4AB-43C4-84E5-0933C84B4F4F", "Linux swap"),
    typed("E6D6D379-F507-44C2-A23C-238F2A3DF928", "Linux LVM"),
    typed("A19D880F-05FC-4D3B-A006-743F0F84911E", "Linux RAID"),
    typed("CA7D7CCB-63ED-4C53-861C-1742536059CC", "Linux LUKS"),
    typed("933AC7E1-2EB4-4F13-B844-0E14E2AEF915", "Linux /home"),
    typed("3B8F8425-20E0-4F3B-907F-1A25A76F98E8", "Linux /srv"),
    typed("4D21B016-B534-45C2-A9FB-5C16E091FD2D", "Linux /var"),
    typed("7EC6F557-3BC5-4ACA-B293-16EF5DF639D1", "Linux /var/tmp"),
    typed("BC13C2FF-59E6-4262-A352-B275FD6F7172", "Linux extended boot (/boot)"),
    typed("4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709", "Linux root (x86-64)"),
    typed("44479540-F297-41B2-9AF7-D131D5F0458A", "Linux root (x86)"),
    typed("B921B045-1DF0-41C3-AF44-4C6F280D3FAE", "Linux root (ARM64)"),
    typed("69DAD710-2CE4-4E3C-B16C-21A1D49ABED3", "Linux root (ARM)"),
    typed("8DA63339-0007-60C0-C436-083AC8230908", "Linux reserved"),
    typed("48465300-0000-11AA-AA11-00306543ECAC", "Apple HFS+"),
    typed("7C3457EF-0000-11AA-AA11-00306543ECAC", "Apple APFS"),
    typed("516E7CB6-6ECF-11D6-8FF8-00022D09712B", "FreeBSD UFS"),
    typed("6A898CC3-1DD2-11B2-99A6-080020736631", "ZFS (Solaris /usr, also used by OpenZFS)"),
    typed("AA31E02A-400F-11DB-9590-000C2911D1B8", "VMware VMFS"),
    typed("9198EFFC-31C0-11DB-8F78-000C2911D1B8", "VMware reserved"),
    typed("CAFECAFE-9B03-4F30-B4C6-B4B80CEFF106", "Ceph block"),
];

const MBR_TYPES: &[PartitionType] = &[
    typed("1", "FAT12"),
    typed("4", "FAT16 <32M"),
    typed("5", "Extended"),
    typed("6", "FAT16"),
    typed("7", "HPFS/NTFS/exFAT"),
    typed("b", "W95 FAT32"),
    typed("c", "W95 FAT32 (LBA)"),
    typed("e", "W95 FAT16 (LBA)"),
    typed("f", "W95 Ext'd (LBA)"),
    typed("11", "Hidden FAT12"),
    typed("12", "Compaq diagnostics"),
    typed("14", "Hidden FAT16 <32M"),
    typed("16", "Hidden FAT16"),
    typed("17", "Hidden HPFS/NTFS"),
    typed("1b", "Hidden W95 FAT32"),
    typed("1c", "Hidden W95 FAT32 (LBA)"),
    typed("1e", "Hidden W95 FAT16 (LBA)"),
    typed("27", "Hidden NTFS WinRE"),
    typed("42", "SFS"),
    typed("82", "Linux swap / Solaris"),
    typed("83", "Linux"),
    typed("85", "Linux extended"),
    typed("8e", "Linux LVM"),
    typed("a5", "FreeBSD"),
    typed("a6", "OpenBSD"),
    typed("a8", "Darwin UFS"),
    typed("a9", "NetBSD"),
    typed("af", "HFS / HFS+"),
    typed("bf", "Solaris"),
    PartitionType { id: "da", name: "Non-FS data", no_filesystem: true },
    typed("de", "Dell Utility"),
    typed("ee", "GPT"),
    typed("ef", "EFI (FAT-12/16/32)"),
    typed("fb", "VMware VMFS"),
    typed("fc", "VMware VMKCORE"),
    typed("fd", "Linux raid autodetect"),
];

/// The known type with this id (a GPT type GUID in any case, or an MBR system id as
/// [`crate::Partition::type_id`] spells it), if any.
pub fn partition_type(type_id: &str) -> Option<&'static PartitionType> {
    GPT_TYPES.iter().chain(MBR_TYPES).find(|t| t.id.eq_ignore_ascii_case(type_id))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_well_formed_and_unique_and_found_in_any_case() {
        for (i, t) in GPT_TYPES.iter().enumerate() {
            let groups: Vec<usize> = t.id.split('-').map(str::len).collect();
            assert_eq!(groups, [8, 4, 4, 4, 12], "{}", t.id);
            assert!(t.id.chars().all(|c| c == '-' || c.is_ascii_digit() || c.is_ascii_uppercase()), "{}", t.id);
            assert!(GPT_TYPES.iter().skip(i + 1).all(|u| u.id != t.id), "{} twice", t.id);
        }
        for (i, t) in MBR_TYPES.iter().enumerate() {
            // As the MBR parser spells a system id: `format!("{:x}", sys)`.
            let sys = u8::from_str_radix(t.id, 16).unwrap_or_else(|_| panic!("{} is not hex", t.id));
            assert_eq!(format!("{sys:x}"), t.id);
            assert!(MBR_TYPES.iter().skip(i + 1).all(|u| u.id != t.id), "{} twice", t.id);
        }
        assert_eq!(partition_type("c12a7328-f81f-11d2-ba4b-00a0c93ec93b").map(|t| t.name), Some("EFI System"));
        assert!(partition_type("21686148-6449-6E6F-744E-656564454649").is_some_and(|t| t.no_filesystem));
        assert_eq!(partition_type("00000000-0000-0000-0000-000000000001"), None);
        assert_eq!(partition_type("83").map(|t| t.name), Some("Linux"));
        assert_eq!(partition_type("7").map(|t| t.name), Some("HPFS/NTFS/exFAT"));
        assert_eq!(partition_type("99"), None);
    }
}
