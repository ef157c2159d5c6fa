//! `$LogFile` (MFT record 2): was the volume shut down cleanly?
//!
//! Only the two restart pages at the start of the log are read, as ntfs-3g and Linux do
//! (`ntfs_check_logfile` / `ntfs_is_logfile_clean`, libntfs/logfile.c). The log is clean if it
//! is empty (ntfs-3g fills it with 0xFF when it mounts a clean volume), or if the newest valid
//! restart area has no client in use or carries the "volume is clean" flag. Otherwise Windows
//! would replay the log on the next mount and may allocate clusters that `$Bitmap` still marks
//! free. A log we cannot read is reported as such: the caller does not elide on doubt.
//!
//! Layout (little-endian), from Linux `fs/ntfs/logfile.h`: restart page header = magic "RSTR" or
//! "CHKD" @0, update sequence array offset u16 @4 and count u16 @6, chkdsk LSN u64 @8, system
//! page size u32 @0x10, log page size u32 @0x14, restart area offset u16 @0x18, minor version
//! i16 @0x1A, major version i16 @0x1C. Restart area = current LSN u64 @0, client in-use list u16
//! @0x0C, flags u16 @0x0E.

use crate::boot_sector::{le_u16, le_u32, le_u64};

/// Bytes of the log examined: room for both restart pages at the largest page size we accept.
pub(crate) const EXAMINED_BYTES: u64 = 2 * MAX_PAGE_SIZE as u64;
/// Restart pages are one system page (4 KiB on x86, 8 KiB on IA-64); 64 KiB bounds a hostile field.
const MAX_PAGE_SIZE: usize = 64 << 10;
/// Multi-sector transfer protection works in 512-byte strides whatever the sector size.
const STRIDE: usize = 512;
const USA_OFFSET: usize = 0x04;
const USA_COUNT: usize = 0x06;
const CHKDSK_LSN: usize = 0x08;
const SYSTEM_PAGE_SIZE: usize = 0x10;
const LOG_PAGE_SIZE: usize = 0x14;
const RESTART_AREA_OFFSET: usize = 0x18;
const MINOR_VERSION: usize = 0x1A;
const MAJOR_VERSION: usize = 0x1C;
const RA_CURRENT_LSN: usize = 0x00;
const RA_CLIENT_IN_USE_LIST: usize = 0x0C;
const RA_FLAGS: usize = 0x0E;
/// The restart area fields we read end here.
const RA_MIN_LEN: usize = 0x10;
/// `client_in_use_list` value meaning "no client".
const NO_CLIENT: u16 = 0xFFFF;
/// `RESTART_VOLUME_IS_CLEAN` in the restart area flags.
const VOLUME_IS_CLEAN: u16 = 0x0002;

/// What the restart pages say.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum LogState {
    /// No restart page was ever written, or ntfs-3g emptied the log (all 0xFF).
    Empty,
    /// The newest restart area says the volume was shut down cleanly.
    Clean { page_offset: usize },
    /// The newest restart area has clients in use and no clean flag: Windows will replay it.
    NeedsReplay { page_offset: usize, clients: u16, flags: u16 },
    /// Neither empty nor a valid restart page: we cannot tell.
    Unknown(String),
}

/// Examines the first bytes of `$LogFile` (up to [`EXAMINED_BYTES`]).
pub(crate) fn state(log: &[u8]) -> LogState {
    let mut empty = true;
    let mut newest: Option<(i64, usize, u16, u16)> = None;
    let mut position = 0usize;
    let mut rejected = Vec::new();
    while let Some(block) = log.get(position..position.saturating_add(STRIDE)) {
        let magic = block.get(..4).unwrap_or_default();
        if magic == [0xFF; 4] {
            // An empty block after a non-empty one ends the search (ntfs-3g does the same).
            if !empty {
                break;
            }
        } else {
            empty = false;
        }
        if magic == b"RCRD" {
            break;
        }
        if magic == b"RSTR" || magic == b"CHKD" {
            match restart_page(log, position) {
                Ok(page) => {
                    if newest.is_none_or(|(lsn, ..)| page.0 > lsn) {
                        newest = Some(page);
                    }
                    if position != 0 {
                        break; // the second restart page: done
                    }
                }
                Err(why) => rejected.push(format!("restart page at log byte {position}: {why}")),
            }
        }
        position = if position == 0 { STRIDE } else { position.saturating_mul(2) };
    }
    match newest {
        _ if empty => LogState::Empty,
        Some((_, page_offset, clients, flags)) if clients != NO_CLIENT && flags & VOLUME_IS_CLEAN == 0 => {
            LogState::NeedsReplay { page_offset, clients, flags }
        }
        Some((_, page_offset, ..)) => LogState::Clean { page_offset },
        None if rejected.is_empty() => LogState::Unknown("no restart page found in a log that is not empty".into()),
        None => LogState::Unknown(rejected.join("; ")),
    }
}

/// Validates the restart page at `position`; returns (LSN, position, client in-use list, flags).
fn restart_page(log: &[u8], position: usize) -> Result<(i64, usize, u16, u16), String> {
    let header = log.get(position..position + STRIDE).ok_or("truncated")?;
    let system_page_size = usize::try_from(le_u32(header, SYSTEM_PAGE_SIZE)).unwrap_or(0);
    let log_page_size = le_u32(header, LOG_PAGE_SIZE);
    if !(STRIDE..=MAX_PAGE_SIZE).contains(&system_page_size)
        || !system_page_size.is_power_of_two()
        || log_page_size < STRIDE as u32
        || !log_page_size.is_power_of_two()
    {
        return Err(format!("unsupported page sizes {system_page_size}/{log_page_size}"));
    }
    if position != 0 && position != system_page_size {
        return Err(format!("not at byte 0 or at the system page size {system_page_size}"));
    }
    let version = (le_u16(header, MAJOR_VERSION), le_u16(header, MINOR_VERSION));
    if !matches!(version, (1, 1) | (2, 0)) {
        return Err(format!("log version {}.{} is not 1.1 or 2.0", version.0, version.1));
    }
    let mut page = log.get(position..position + system_page_size).ok_or("truncated")?.to_vec();
    let restart_area = usize::from(le_u16(header, RESTART_AREA_OFFSET));
    if restart_area % 8 != 0 || restart_area.saturating_add(RA_MIN_LEN) > system_page_size {
        return Err(format!("restart area offset {restart_area} lies outside the page"));
    }
    if let Err(why) = apply_fixups(&mut page, Strides::All) {
        // Like ntfs-3g: a torn write only matters if the restart area crosses the first stride.
        if restart_area + RA_MIN_LEN > STRIDE - 2 {
            return Err(why);
        }
    }
    let area = page.get(restart_area..).ok_or("restart area outside the page")?;
    let lsn = if page.starts_with(b"RSTR") { le_u64(area, RA_CURRENT_LSN) } else { le_u64(&page, CHKDSK_LSN) };
    Ok((i64::from_le_bytes(lsn.to_le_bytes()), position, le_u16(area, RA_CLIENT_IN_USE_LIST), le_u16(area, RA_FLAGS)))
}

/// Which strides of a record [`apply_fixups`] requires to be protected.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Strides {
    /// Every 512-byte stride, with the array inside the first one (ntfs-3g's check).
    All,
    /// As many strides as the array counts, the array anywhere in the record: what the `ntfs`
    /// crate accepts, so that we see the bytes it will see.
    AsCounted,
}

/// Undoes the update sequence protection of a multi-sector record in place: the last two bytes
/// of each protected 512-byte stride must equal the update sequence number and are replaced by
/// the saved bytes.
pub(crate) fn apply_fixups(record: &mut [u8], strides: Strides) -> Result<(), String> {
    let offset = usize::from(le_u16(record, USA_OFFSET));
    let count = usize::from(le_u16(record, USA_COUNT));
    let all = record.len() / STRIDE;
    let fits = match strides {
        Strides::All => count == all + 1 && offset + 2 * count <= STRIDE - 2,
        Strides::AsCounted => count >= 1 && count - 1 <= all && offset + 2 * count <= record.len(),
    };
    if !fits || offset % 2 != 0 && strides == Strides::All {
        return Err(format!("update sequence array ({count} entries at byte {offset}) does not fit {all} strides"));
    }
    let usn = le_u16(record, offset);
    for stride in 0..count - 1 {
        let end = (stride + 1) * STRIDE;
        let saved = le_u16(record, offset + 2 * (stride + 1));
        let tail = record.get_mut(end - 2..end).ok_or("stride outside the record")?;
        if tail != usn.to_le_bytes() {
            return Err(format!("torn write: stride {stride} does not end with the update sequence number {usn:#06x}"));
        }
        tail.copy_from_slice(&saved.to_le_bytes());
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::indexing_slicing)]
pub(crate) mod tests {
    use super::*;

    /// A protected restart page of `size` bytes with the given restart area fields.
    pub(crate) fn restart_page(magic: &[u8; 4], size: usize, lsn: u64, clients: u16, flags: u16) -> Vec<u8> {
        let mut page = vec![0u8; size];
        page[..4].copy_from_slice(magic);
        let count = size / STRIDE + 1;
        page[USA_OFFSET..USA_OFFSET + 2].copy_from_slice(&0x1Eu16.to_le_bytes());
        page[USA_COUNT..USA_COUNT + 2].copy_from_slice(&(count as u16).to_le_bytes());
        page[CHKDSK_LSN..CHKDSK_LSN + 8].copy_from_slice(&lsn.to_le_bytes());
        page[SYSTEM_PAGE_SIZE..SYSTEM_PAGE_SIZE + 4].copy_from_slice(&(size as u32).to_le_bytes());
        page[LOG_PAGE_SIZE..LOG_PAGE_SIZE + 4].copy_from_slice(&4096u32.to_le_bytes());
        let ra = 0x30;
        page[RESTART_AREA_OFFSET..RESTART_AREA_OFFSET + 2].copy_from_slice(&(ra as u16).to_le_bytes());
        page[MINOR_VERSION..MINOR_VERSION + 2].copy_from_slice(&1u16.to_le_bytes());
        page[MAJOR_VERSION..MAJOR_VERSION + 2].copy_from_slice(&1u16.to_le_bytes());
        page[ra + RA_CURRENT_LSN..ra + RA_CURRENT_LSN + 8].copy_from_slice(&lsn.to_le_bytes());
        page[ra + RA_CLIENT_IN_USE_LIST..ra + RA_CLIENT_IN_USE_LIST + 2].copy_from_slice(&clients.to_le_bytes());
        page[ra + RA_FLAGS..ra + RA_FLAGS + 2].copy_from_slice(&flags.to_le_bytes());
        // Protect: save the last two bytes of each stride, write the USN there.
        let usn = 0x0007u16;
        page[0x1E..0x20].copy_from_slice(&usn.to_le_bytes());
        for stride in 0..size / STRIDE {
            let end = (stride + 1) * STRIDE;
            let saved = [page[end - 2], page[end - 1]];
            page[0x20 + 2 * stride..0x22 + 2 * stride].copy_from_slice(&saved);
            page[end - 2..end].copy_from_slice(&usn.to_le_bytes());
        }
        page
    }

    fn log(first: Vec<u8>, second: Vec<u8>) -> Vec<u8> {
        let mut log = first;
        log.extend(second);
        log.resize(4 * 4096, 0xFF);
        log
    }

    #[test]
    fn an_all_ff_log_is_empty() {
        assert_eq!(state(&vec![0xFF; 65536]), LogState::Empty);
    }

    #[test]
    fn no_client_or_the_clean_flag_means_clean() {
        let clean = log(restart_page(b"RSTR", 4096, 5, NO_CLIENT, 0), restart_page(b"RSTR", 4096, 4, NO_CLIENT, 0));
        assert_eq!(state(&clean), LogState::Clean { page_offset: 0 });
        let flagged = log(restart_page(b"RSTR", 4096, 5, 0, VOLUME_IS_CLEAN), restart_page(b"RSTR", 4096, 4, 0, 0));
        assert_eq!(state(&flagged), LogState::Clean { page_offset: 0 });
    }

    #[test]
    fn a_client_in_use_without_the_clean_flag_needs_replay_and_the_newest_page_wins() {
        let dirty = log(restart_page(b"RSTR", 4096, 5, 0, 0), restart_page(b"RSTR", 4096, 4, NO_CLIENT, 0));
        assert_eq!(state(&dirty), LogState::NeedsReplay { page_offset: 0, clients: 0, flags: 0 });
        let newer_second = log(restart_page(b"RSTR", 4096, 5, NO_CLIENT, 0), restart_page(b"RSTR", 4096, 9, 0, 0));
        assert_eq!(state(&newer_second), LogState::NeedsReplay { page_offset: 4096, clients: 0, flags: 0 });
        let chkdsk = log(restart_page(b"CHKD", 4096, 5, 0, 0), vec![0xFF; 4096]);
        assert!(matches!(state(&chkdsk), LogState::NeedsReplay { .. }));
    }

    #[test]
    fn a_torn_or_garbled_log_is_unknown_never_clean() {
        let mut torn = log(restart_page(b"RSTR", 4096, 5, NO_CLIENT, 0), vec![0xFF; 4096]);
        torn[1023] ^= 0xFF; // breaks the fixup of stride 1; the restart area is in stride 0
        assert_eq!(state(&torn), LogState::Clean { page_offset: 0 });
        let mut torn_area = torn.clone();
        torn_area[RESTART_AREA_OFFSET] = 0xF8; // restart area at 0x1F8 crosses the first stride
        torn_area[RESTART_AREA_OFFSET + 1] = 0x01;
        assert!(matches!(state(&torn_area), LogState::Unknown(why) if why.contains("torn write")));
        let garbage: Vec<u8> = (0..16384u32).map(|i| (i * 7) as u8).collect();
        assert!(matches!(state(&garbage), LogState::Unknown(_)));
        let mut bad_version = log(restart_page(b"RSTR", 4096, 5, NO_CLIENT, 0), vec![0xFF; 4096]);
        bad_version[MAJOR_VERSION] = 3;
        assert!(matches!(state(&bad_version), LogState::Unknown(why) if why.contains("version 3.1")));
    }

    #[test]
    fn fixups_as_counted_accept_fewer_strides_as_the_ntfs_crate_does() {
        let mut page = restart_page(b"RSTR", 4096, 5, NO_CLIENT, 0);
        // One array entry (the USN alone): nothing to fix, accepted as counted, not by ntfs-3g.
        page[USA_COUNT..USA_COUNT + 2].copy_from_slice(&1u16.to_le_bytes());
        let before = page.clone();
        apply_fixups(&mut page, Strides::AsCounted).unwrap();
        assert_eq!(page, before);
        assert!(apply_fixups(&mut page, Strides::All).is_err());
        // Zero entries (no USN): rejected by both.
        page[USA_COUNT..USA_COUNT + 2].copy_from_slice(&0u16.to_le_bytes());
        assert!(apply_fixups(&mut page, Strides::AsCounted).is_err());
        // All strides: both fix every stride.
        let mut all = restart_page(b"RSTR", 4096, 5, NO_CLIENT, 0);
        let mut counted = all.clone();
        apply_fixups(&mut all, Strides::All).unwrap();
        apply_fixups(&mut counted, Strides::AsCounted).unwrap();
        assert_eq!(all, counted);
        assert_eq!(&all[510..512], &[0, 0]);
    }

    /// Property: any single-byte change of a valid log gives some state, never a panic; and a
    /// log whose only restart page needs replay is never called clean unless a byte of its
    /// restart area fields changed.
    #[test]
    fn every_single_byte_mutation_is_handled() {
        let dirty = log(restart_page(b"RSTR", 4096, 5, 0, 0), restart_page(b"RSTR", 4096, 4, 0, 0));
        for offset in (0..8192).step_by(3) {
            for value in [0x00, 0xFF, 0x5A] {
                let mut mutated = dirty.clone();
                mutated[offset] = value;
                let result = state(&mutated);
                let in_fields = [0x30 + 0x0C, 0x30 + 0x0D, 0x30 + 0x0E, 0x30 + 0x0F]
                    .iter()
                    .any(|&f| offset == f || offset == 4096 + f);
                if !in_fields && mutated != dirty {
                    assert!(
                        !matches!(result, LogState::Clean { .. } | LogState::Empty),
                        "byte {offset} = {value:#x}: {result:?}"
                    );
                }
            }
        }
    }
}
