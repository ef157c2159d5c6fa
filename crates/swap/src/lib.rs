//! Linux swap areas: which bytes must be copied.
//!
//! This crate owns the Linux swap header ([`header`]). A swap area's pages hold nothing worth
//! keeping once the system that wrote them is off, so [`analyze`] keeps only the header page
//! (label, UUID, bad-page list) and anything past the last page the header covers, and elides
//! the rest. A swap area holding a hibernation image is different: the image is a whole
//! system's memory waiting to be resumed, so it is copied raw, with a warning.

#![forbid(unsafe_code)]

mod header;

/// Why a swap area could not be analysed: the message names the swap header field's byte offset.
pub use imgstream_volume::ParseError as Error;

use header::{BADPAGES, HIBERNATION_SIGNATURES, INFO_END, LAST_PAGE, MAGIC_LEN, NR_BADPAGES, PAGE_SIZES, Signature};
use imgstream_blockio::ReadAt;
use imgstream_volume::{Allocation, RangeSet, read_at};
use std::io;

/// The structure every error names: all of a swap area's metadata is in its header page.
const HEADER: &str = "swap header";

/// Where the swap signature was found, and what it says.
fn find_signature(volume: &dyn ReadAt) -> io::Result<Option<(u64, Signature)>> {
    for page_size in PAGE_SIZES {
        if volume.size() < page_size {
            break;
        }
        let mut tail = [0u8; 20];
        volume.read_exact_at(&mut tail, page_size - 2 * MAGIC_LEN)?;
        if let Some(signature) = header::signature(&tail) {
            return Ok(Some((page_size, signature)));
        }
    }
    Ok(None)
}

/// Cheap signature check: "SWAPSPACE2" (or a hibernation signature in its place) ending a page
/// of 4 to 64 KiB. Ok(false) for a volume smaller than a page.
pub fn detect(volume: &dyn ReadAt) -> io::Result<bool> {
    Ok(find_signature(volume)?.is_some())
}

/// Reads the swap header of `volume` and returns the bytes to copy.
pub fn analyze(volume: &dyn ReadAt) -> Result<Allocation, Error> {
    let size = volume.size();
    let Some((page_size, signature)) =
        find_signature(volume).map_err(|source| Error::Io { structure: HEADER.into(), offset: 0, source })?
    else {
        return Err(Error::corrupt(
            HEADER,
            PAGE_SIZES[0] - MAGIC_LEN,
            format!("no \"SWAPSPACE2\" signature at the end of a page of {}..={} bytes", PAGE_SIZES[0], PAGE_SIZES[4]),
        ));
    };
    let magic_at = page_size - MAGIC_LEN;
    let whole = |filesystem_detail: (String, String), warning: String| {
        let mut allocation = Allocation::new("swap", page_size, RangeSet::from_range(0..size));
        allocation.warnings.push(warning);
        allocation.details.push(("page size".into(), page_size.to_string()));
        allocation.details.push(filesystem_detail);
        allocation
    };
    match signature {
        Signature::Swap => {}
        Signature::OldSwap => {
            return Err(Error::unsupported(
                HEADER,
                magic_at,
                "\"SWAP-SPACE\" is the version 0 format, which Linux dropped in 2.5",
            ));
        }
        Signature::Hibernation(sig) => {
            let known = HIBERNATION_SIGNATURES.iter().any(|s| sig.as_bytes().starts_with(s));
            return Ok(whole(
                ("hibernation image".into(), format!("{sig:?}")),
                format!(
                    "swap area holds a hibernation image (signature {sig:?}{} at byte {magic_at}); copying it raw so that it can still be resumed",
                    if known { "" } else { ", not \"SWAPSPACE2\"" }
                ),
            ));
        }
    }

    let mut page = vec![0u8; INFO_END];
    read_at(volume, || HEADER, 0, &mut page)?;
    let version_le = header::u32_at(&page, header::VERSION, false);
    let big_endian = version_le == 0x0100_0000;
    let version = header::u32_at(&page, header::VERSION, big_endian);
    if version != 1 {
        return Err(Error::unsupported(
            HEADER,
            header::VERSION as u64,
            format!("swap header version {version_le:#x}, only version 1 is known"),
        ));
    }
    let last_page = u64::from(header::u32_at(&page, LAST_PAGE, big_endian));
    let pages_in_volume = size / page_size;
    if last_page == 0 || last_page >= pages_in_volume {
        return Err(Error::corrupt(
            HEADER,
            LAST_PAGE as u64,
            format!(
                "last_page {last_page} is outside 1..={} (the volume holds {pages_in_volume} pages of {page_size} bytes)",
                pages_in_volume.saturating_sub(1)
            ),
        ));
    }
    let nr_badpages = u64::from(header::u32_at(&page, NR_BADPAGES, big_endian));
    let max_bad = header::max_bad_pages(page_size);
    if nr_badpages > max_bad {
        return Err(Error::corrupt(
            HEADER,
            NR_BADPAGES as u64,
            format!("nr_badpages {nr_badpages} is more than the {max_bad} a {page_size}-byte header holds"),
        ));
    }
    // Bad pages are never swapped to, so they hold nothing either; they are only checked.
    if nr_badpages > 0 {
        let mut list = vec![0u8; usize::try_from(nr_badpages * 4).unwrap_or(0)];
        read_at(volume, || HEADER, BADPAGES as u64, &mut list)?;
        for index in 0..nr_badpages {
            let at = usize::try_from(index * 4).unwrap_or(usize::MAX);
            let bad = u64::from(header::u32_at(&list, at, big_endian));
            if bad == 0 || bad > last_page {
                return Err(Error::corrupt(
                    HEADER,
                    BADPAGES as u64 + index * 4,
                    format!("bad page {index} is page {bad}, outside 1..={last_page}"),
                ));
            }
        }
    }

    let swap_end = (last_page + 1) * page_size;
    let mut used = RangeSet::from_range(0..page_size);
    used.insert(swap_end..size);
    let mut allocation = Allocation::new("swap", page_size, used);
    // The header page: swapon rewrites it.
    allocation.map_ranges = RangeSet::from_range(0..page_size);
    let details = &mut allocation.details;
    let mut detail = |label: &str, value: String| details.push((label.to_owned(), value));
    detail("page size", page_size.to_string());
    detail("version", if big_endian { "1 (big-endian)".into() } else { "1".into() });
    detail("pages", format!("{last_page} after the header"));
    detail("bad pages", nr_badpages.to_string());
    let uuid = page.get(header::UUID..header::UUID + 16).unwrap_or_default();
    if uuid.iter().any(|&b| b != 0) {
        let hex: String = uuid.iter().map(|b| format!("{b:02x}")).collect();
        let part = |r: std::ops::Range<usize>| hex.get(r).unwrap_or_default().to_owned();
        detail("uuid", format!("{}-{}-{}-{}-{}", part(0..8), part(8..12), part(12..16), part(16..20), part(20..32)));
    }
    let label = page.get(header::VOLUME_NAME..header::VOLUME_NAME + 16).unwrap_or_default();
    let label = String::from_utf8_lossy(label).trim_end_matches('\0').to_owned();
    if !label.is_empty() {
        detail("label", label);
    }
    Ok(allocation)
}

#[cfg(test)]
mod tests;
