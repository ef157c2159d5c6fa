//! The swap header: page 0 of a swap area, `union swap_header` in the kernel's
//! include/linux/swap.h. A 10-byte magic ends the page; the `info` block sits at byte 1024:
//! `bootbits[1024]`, then `version`, `last_page`, `nr_badpages` (u32 each), `sws_uuid[16]`,
//! `sws_volume[16]`, `padding[117]` (u32) and `badpages[]` (u32, from byte 1536). The fields
//! are in the byte order of the machine that ran mkswap; the kernel accepts either (it
//! byte-swaps when `version` reads as 0x01000000), and so do we.
//!
//! When Linux hibernates to a swap area it rewrites the end of page 0 as `struct
//! swsusp_header` (kernel/power/swap.c): `orig_sig[10]` ("SWAPSPACE2", saved) then `sig[10]`
//! ("S1SUSPEND" for the kernel, "ULSUSPEND" for uswsusp, "S2SUSPEND" for older kernels).

use imgstream_volume::fields::array;

/// The page sizes a swap area may use: the magic's position tells which.
pub(crate) const PAGE_SIZES: [u64; 5] = [4096, 8192, 16384, 32768, 65536];
/// Length of the magic at the end of page 0.
pub(crate) const MAGIC_LEN: u64 = 10;
/// The version-1 (Linux 2.2 and later) swap magic.
pub(crate) const SWAPSPACE2: &[u8; 10] = b"SWAPSPACE2";
/// The version-0 magic, which the kernel stopped accepting in 2.5.
pub(crate) const SWAP_SPACE: &[u8; 10] = b"SWAP-SPACE";
/// Hibernation signatures known to replace the magic.
pub(crate) const HIBERNATION_SIGNATURES: [&[u8]; 4] = [b"S1SUSPEND", b"S2SUSPEND", b"ULSUSPEND", b"LINHIB0001"];

/// Offset of `info.version`.
pub(crate) const VERSION: usize = 1024;
/// Offset of `info.last_page`: the index of the last usable page.
pub(crate) const LAST_PAGE: usize = 1028;
/// Offset of `info.nr_badpages`.
pub(crate) const NR_BADPAGES: usize = 1032;
/// Offset of `info.sws_uuid`.
pub(crate) const UUID: usize = 1036;
/// Offset of `info.sws_volume`, the label.
pub(crate) const VOLUME_NAME: usize = 1052;
/// Offset of `info.badpages[0]`.
pub(crate) const BADPAGES: usize = 1536;
/// Bytes of page 0 the header fields need (the magic is read separately).
pub(crate) const INFO_END: usize = BADPAGES;

/// Most bad pages a header of `page_size` can list: the kernel's `MAX_SWAP_BADPAGES`, the room
/// between `badpages` and the magic.
pub(crate) fn max_bad_pages(page_size: u64) -> u64 {
    (page_size - MAGIC_LEN - BADPAGES as u64) / 4
}

/// What sits where the magic belongs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Signature {
    /// "SWAPSPACE2": a swap area.
    Swap,
    /// "SWAP-SPACE": the old format.
    OldSwap,
    /// A hibernation image; the signature as text.
    Hibernation(String),
}

/// Classifies the 20 bytes that end page 0 (`orig_sig` then `sig`), if they belong to swap.
pub(crate) fn signature(tail: &[u8; 20]) -> Option<Signature> {
    let (orig_sig, sig) = tail.split_at(10);
    let text = || String::from_utf8_lossy(sig).trim_end_matches('\0').to_owned();
    if sig == SWAPSPACE2 {
        Some(Signature::Swap)
    } else if sig == SWAP_SPACE {
        Some(Signature::OldSwap)
    } else if HIBERNATION_SIGNATURES.iter().any(|s| sig.starts_with(s)) || orig_sig == SWAPSPACE2 {
        Some(Signature::Hibernation(text()))
    } else {
        None
    }
}

/// Reads a u32 of the header in its byte order.
pub(crate) fn u32_at(page: &[u8], offset: usize, big_endian: bool) -> u32 {
    let bytes: [u8; 4] = array(page, offset);
    if big_endian { u32::from_be_bytes(bytes) } else { u32::from_le_bytes(bytes) }
}
