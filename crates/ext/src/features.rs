//! The three feature bitmaps of the superblock (`s_feature_compat`, `s_feature_incompat`,
//! `s_feature_ro_compat`), with e2fsprogs' names (lib/e2p/feature.c) and what each means for
//! the block bitmaps.
//!
//! By the ext rules, an unknown *compat* bit is safe to ignore, an unknown *ro_compat* bit is
//! safe only for readers that do not interpret the on-disk layout (bigalloc itself is a
//! ro_compat bit and changes what a bitmap bit means), and an unknown *incompat* bit is not safe
//! at all. So unknown ro_compat and incompat bits make the volume unsupported (copied raw).

/// `s_feature_compat`: readers and writers may ignore these.
pub(crate) mod compat {
    pub(crate) const DIR_PREALLOC: u32 = 0x1;
    pub(crate) const IMAGIC_INODES: u32 = 0x2;
    pub(crate) const HAS_JOURNAL: u32 = 0x4;
    pub(crate) const EXT_ATTR: u32 = 0x8;
    pub(crate) const RESIZE_INODE: u32 = 0x10;
    pub(crate) const DIR_INDEX: u32 = 0x20;
    /// Pre-2008 e2fsprogs: BLOCK_UNINIT groups without descriptor checksums, whose bitmap
    /// blocks were never written. Modern tools read those bitmaps as if valid; we refuse.
    pub(crate) const LAZY_BG: u32 = 0x40;
    /// next3 snapshots (never merged): blocks may be owned by a snapshot.
    pub(crate) const EXCLUDE_BITMAP: u32 = 0x100;
    pub(crate) const SPARSE_SUPER2: u32 = 0x200;
    pub(crate) const FAST_COMMIT: u32 = 0x400;
    pub(crate) const STABLE_INODES: u32 = 0x800;
    pub(crate) const ORPHAN_FILE: u32 = 0x1000;
    /// Compat bits we refuse anyway: they change what a free bit may mean.
    pub(crate) const UNSUPPORTED: u32 = LAZY_BG | EXCLUDE_BITMAP;
}

/// `s_feature_incompat`: a reader that does not know one must not touch the filesystem.
pub(crate) mod incompat {
    pub(crate) const COMPRESSION: u32 = 0x1;
    pub(crate) const FILETYPE: u32 = 0x2;
    /// needs_recovery: the journal holds committed transactions not yet written in place.
    pub(crate) const RECOVER: u32 = 0x4;
    /// This volume is an external journal, not a filesystem.
    pub(crate) const JOURNAL_DEV: u32 = 0x8;
    pub(crate) const META_BG: u32 = 0x10;
    pub(crate) const EXTENTS: u32 = 0x40;
    pub(crate) const BIT64: u32 = 0x80;
    pub(crate) const MMP: u32 = 0x100;
    pub(crate) const FLEX_BG: u32 = 0x200;
    pub(crate) const EA_INODE: u32 = 0x400;
    pub(crate) const DIRDATA: u32 = 0x1000;
    pub(crate) const CSUM_SEED: u32 = 0x2000;
    pub(crate) const LARGEDIR: u32 = 0x4000;
    pub(crate) const INLINE_DATA: u32 = 0x8000;
    pub(crate) const ENCRYPT: u32 = 0x10000;
    pub(crate) const CASEFOLD: u32 = 0x20000;
    /// Every bit whose effect on the allocation bitmaps we know: none for file-content
    /// features (extents, inline data, encryption, ...: blocks stay in the bitmaps), layout for
    /// meta_bg, 64bit, flex_bg, and hazards for recover and journal_dev. Compression (never
    /// in mainline) and Lustre's dirdata are left out on purpose.
    pub(crate) const KNOWN: u32 = FILETYPE
        | RECOVER
        | JOURNAL_DEV
        | META_BG
        | EXTENTS
        | BIT64
        | MMP
        | FLEX_BG
        | EA_INODE
        | CSUM_SEED
        | LARGEDIR
        | INLINE_DATA
        | ENCRYPT
        | CASEFOLD;
}

/// `s_feature_ro_compat`: a reader may ignore these only if it does not interpret the layout.
pub(crate) mod ro_compat {
    pub(crate) const SPARSE_SUPER: u32 = 0x1;
    pub(crate) const LARGE_FILE: u32 = 0x2;
    pub(crate) const BTREE_DIR: u32 = 0x4;
    pub(crate) const HUGE_FILE: u32 = 0x8;
    /// uninit_bg: crc16 descriptor checksums; BLOCK_UNINIT is honoured.
    pub(crate) const GDT_CSUM: u32 = 0x10;
    pub(crate) const DIR_NLINK: u32 = 0x20;
    pub(crate) const EXTRA_ISIZE: u32 = 0x40;
    pub(crate) const QUOTA: u32 = 0x100;
    /// The block bitmaps count clusters of 2^n blocks.
    pub(crate) const BIGALLOC: u32 = 0x200;
    /// crc32c checksums on the superblock, descriptors and bitmaps; BLOCK_UNINIT is honoured.
    pub(crate) const METADATA_CSUM: u32 = 0x400;
    pub(crate) const READONLY: u32 = 0x1000;
    pub(crate) const PROJECT: u32 = 0x2000;
    pub(crate) const SHARED_BLOCKS: u32 = 0x4000;
    pub(crate) const VERITY: u32 = 0x8000;
    /// The orphan file has entries (inodes being deleted keep their blocks allocated).
    pub(crate) const ORPHAN_PRESENT: u32 = 0x10000;
    /// Every bit whose effect on the allocation bitmaps we know. Left out: has_snapshot (0x80,
    /// next3) and replica (0x800, Lustre), which e2fsprogs does not support either.
    pub(crate) const KNOWN: u32 = SPARSE_SUPER
        | LARGE_FILE
        | BTREE_DIR
        | HUGE_FILE
        | GDT_CSUM
        | DIR_NLINK
        | EXTRA_ISIZE
        | QUOTA
        | BIGALLOC
        | METADATA_CSUM
        | READONLY
        | PROJECT
        | SHARED_BLOCKS
        | VERITY
        | ORPHAN_PRESENT;
}

/// e2fsprogs' names of the bits, in its display order (compat, incompat, ro_compat).
const NAMES: &[(Kind, u32, &str)] = &[
    (Kind::Compat, compat::DIR_PREALLOC, "dir_prealloc"),
    (Kind::Compat, compat::IMAGIC_INODES, "imagic_inodes"),
    (Kind::Compat, compat::HAS_JOURNAL, "has_journal"),
    (Kind::Compat, compat::EXT_ATTR, "ext_attr"),
    (Kind::Compat, compat::RESIZE_INODE, "resize_inode"),
    (Kind::Compat, compat::DIR_INDEX, "dir_index"),
    (Kind::Compat, compat::LAZY_BG, "lazy_bg"),
    (Kind::Compat, compat::EXCLUDE_BITMAP, "snapshot_bitmap"),
    (Kind::Compat, compat::SPARSE_SUPER2, "sparse_super2"),
    (Kind::Compat, compat::FAST_COMMIT, "fast_commit"),
    (Kind::Compat, compat::STABLE_INODES, "stable_inodes"),
    (Kind::Compat, compat::ORPHAN_FILE, "orphan_file"),
    (Kind::Incompat, incompat::COMPRESSION, "compression"),
    (Kind::Incompat, incompat::FILETYPE, "filetype"),
    (Kind::Incompat, incompat::RECOVER, "needs_recovery"),
    (Kind::Incompat, incompat::JOURNAL_DEV, "journal_dev"),
    (Kind::Incompat, incompat::META_BG, "meta_bg"),
    (Kind::Incompat, incompat::EXTENTS, "extent"),
    (Kind::Incompat, incompat::BIT64, "64bit"),
    (Kind::Incompat, incompat::MMP, "mmp"),
    (Kind::Incompat, incompat::FLEX_BG, "flex_bg"),
    (Kind::Incompat, incompat::EA_INODE, "ea_inode"),
    (Kind::Incompat, incompat::DIRDATA, "dirdata"),
    (Kind::Incompat, incompat::CSUM_SEED, "metadata_csum_seed"),
    (Kind::Incompat, incompat::LARGEDIR, "large_dir"),
    (Kind::Incompat, incompat::INLINE_DATA, "inline_data"),
    (Kind::Incompat, incompat::ENCRYPT, "encrypt"),
    (Kind::Incompat, incompat::CASEFOLD, "casefold"),
    (Kind::RoCompat, ro_compat::SPARSE_SUPER, "sparse_super"),
    (Kind::RoCompat, ro_compat::LARGE_FILE, "large_file"),
    (Kind::RoCompat, ro_compat::BTREE_DIR, "btree_dir"),
    (Kind::RoCompat, ro_compat::HUGE_FILE, "huge_file"),
    (Kind::RoCompat, ro_compat::GDT_CSUM, "uninit_bg"),
    (Kind::RoCompat, ro_compat::DIR_NLINK, "dir_nlink"),
    (Kind::RoCompat, ro_compat::EXTRA_ISIZE, "extra_isize"),
    (Kind::RoCompat, ro_compat::QUOTA, "quota"),
    (Kind::RoCompat, ro_compat::BIGALLOC, "bigalloc"),
    (Kind::RoCompat, ro_compat::METADATA_CSUM, "metadata_csum"),
    (Kind::RoCompat, ro_compat::READONLY, "read-only"),
    (Kind::RoCompat, ro_compat::PROJECT, "project"),
    (Kind::RoCompat, ro_compat::SHARED_BLOCKS, "shared_blocks"),
    (Kind::RoCompat, ro_compat::VERITY, "verity"),
    (Kind::RoCompat, ro_compat::ORPHAN_PRESENT, "orphan_present"),
];

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Compat,
    Incompat,
    RoCompat,
}

/// The three feature words of a superblock.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Features {
    pub(crate) compat: u32,
    pub(crate) incompat: u32,
    pub(crate) ro_compat: u32,
}

impl Features {
    /// Space-separated names of the set bits, as `dumpe2fs -h` lists them (unknown bits as
    /// `FEATURE_C12`-style names, and "(none)" for none, like e2fsprogs).
    pub(crate) fn names(&self) -> String {
        let mut names = Vec::new();
        for (kind, word, prefix) in [
            (Kind::Compat, self.compat, 'C'),
            (Kind::Incompat, self.incompat, 'I'),
            (Kind::RoCompat, self.ro_compat, 'R'),
        ] {
            for bit in 0..32 {
                let mask = 1u32 << bit;
                if word & mask == 0 {
                    continue;
                }
                match NAMES.iter().find(|(k, m, _)| *k == kind && *m == mask) {
                    Some((_, _, name)) => names.push((*name).to_owned()),
                    None => names.push(format!("FEATURE_{prefix}{bit}")),
                }
            }
        }
        if names.is_empty() {
            return "(none)".into();
        }
        names.join(" ")
    }

    /// The name blkid gives this filesystem (libblkid superblocks/ext.c): ext2 and ext3 are
    /// the feature sets the old drivers understood, without and with a journal; anything
    /// else is ext4.
    pub(crate) fn blkid_name(&self) -> &'static str {
        const EXT2_INCOMPAT: u32 = incompat::FILETYPE | incompat::META_BG;
        const EXT3_INCOMPAT: u32 = EXT2_INCOMPAT | incompat::RECOVER;
        const EXT23_RO_COMPAT: u32 = ro_compat::SPARSE_SUPER | ro_compat::LARGE_FILE | ro_compat::BTREE_DIR;
        let old_ro_compat = self.ro_compat & !EXT23_RO_COMPAT == 0;
        if self.compat & compat::HAS_JOURNAL == 0 && old_ro_compat && self.incompat & !EXT2_INCOMPAT == 0 {
            "ext2"
        } else if self.compat & compat::HAS_JOURNAL != 0 && old_ro_compat && self.incompat & !EXT3_INCOMPAT == 0 {
            "ext3"
        } else {
            "ext4"
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_e2fsprogs_and_show_unknown_bits() {
        let features = Features {
            compat: compat::HAS_JOURNAL | 0x8000_0000,
            incompat: incompat::BIT64,
            ro_compat: ro_compat::BIGALLOC,
        };
        assert_eq!(features.names(), "has_journal FEATURE_C31 64bit bigalloc");
    }

    #[test]
    fn blkid_names() {
        let ext2 =
            Features { compat: compat::EXT_ATTR, incompat: incompat::FILETYPE, ro_compat: ro_compat::SPARSE_SUPER };
        assert_eq!(ext2.blkid_name(), "ext2");
        let ext3 = Features { compat: ext2.compat | compat::HAS_JOURNAL, ..ext2 };
        assert_eq!(ext3.blkid_name(), "ext3");
        let ext4 = Features { incompat: ext3.incompat | incompat::EXTENTS, ..ext3 };
        assert_eq!(ext4.blkid_name(), "ext4");
        // A journal-less filesystem with ext4 features is still ext4 for blkid.
        let ext4_no_journal = Features { compat: ext2.compat, ro_compat: ro_compat::HUGE_FILE, ..ext2 };
        assert_eq!(ext4_no_journal.blkid_name(), "ext4");
    }
}
