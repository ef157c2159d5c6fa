//! The multi-mount protection block (incompat mmp): a sequence number that a node mounting
//! the filesystem keeps changing, and that says "clean" only when nobody has it mounted.
//!
//! Layout: e2fsprogs lib/ext2fs/ext2_fs.h (`struct mmp_struct`, `EXT4_MMP_SEQ_*`).

use crate::Error;
use crate::superblock::Superblock;
use imgstream_blockio::ReadAt;
use imgstream_volume::fields::le32;
use imgstream_volume::read_at;

const MMP_MAGIC: u32 = 0x004D_4D50;
/// The filesystem is not in use.
const MMP_SEQ_CLEAN: u32 = 0xFF4D_4D50;
/// e2fsck has it open.
const MMP_SEQ_FSCK: u32 = 0xE24D_4D50;
const MMP_SEQ: usize = 4;

/// Why the MMP block says the filesystem may be in use, if it does.
pub(crate) fn hazard(volume: &dyn ReadAt, sb: &Superblock) -> Result<Option<String>, Error> {
    let block = sb.mmp_block;
    if block < sb.first_data_block || block >= sb.blocks_count {
        return Err(Error::corrupt(
            "superblock",
            crate::superblock::SUPERBLOCK_OFFSET + 0x168,
            format!(
                "MMP block {block} lies outside the filesystem (blocks {}..{})",
                sb.first_data_block, sb.blocks_count
            ),
        ));
    }
    let offset = block << sb.block_bits;
    let mut head = [0u8; 8];
    read_at(volume, || "MMP block", offset, &mut head)?;
    let magic = le32(&head, 0);
    if magic != MMP_MAGIC {
        return Err(Error::corrupt(
            "MMP block",
            offset,
            format!("bad magic 0x{magic:08x} (expected 0x{MMP_MAGIC:08x})"),
        ));
    }
    let seq = le32(&head, MMP_SEQ);
    Ok(match seq {
        MMP_SEQ_CLEAN => None,
        MMP_SEQ_FSCK => Some(format!("the MMP block at byte {} says e2fsck is checking the filesystem", offset)),
        _ => Some(format!(
            "the MMP block at byte {} has sequence 0x{seq:08x}, not the clean value: the filesystem is in use (possibly by another node) or was not cleanly unmounted",
            offset + MMP_SEQ as u64
        )),
    })
}
