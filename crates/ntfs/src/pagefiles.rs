//! `pagefile.sys`, `swapfile.sys` and `hiberfil.sys` in the root directory: whether Windows is
//! hibernated, and which of their clusters `--drop-pagefile` may zero.
//!
//! Hibernation: like ntfs-3g's `ntfs_volume_check_hiberfile`, a `hiberfil.sys` whose first
//! bytes are a hibernation signature (`hibr`, `wake`, `rstr`, `link`, any case; Windows 8+ Fast
//! Startup writes `HIBR`), or that is shorter than its 4096-byte header, means Windows is
//! hibernated: its memory image holds a view of the filesystem that it writes back on resume.
//! A header of zeros means it is not. Anything else we cannot read or do not understand is
//! reported as a doubt, never as "not hibernated".
//!
//! Dropping: a file's clusters are zeroed only if everything checks out: the index entry points
//! at an in-use, non-directory record with the expected sequence number, every name of the file
//! lives in the root directory, every run lies inside the volume and is marked used, and no run
//! touches a system file's clusters or another of these files. Any doubt keeps the file.

use crate::boot_sector::BootSector;
use crate::data_runs::{Stream, read_at, unnamed_data};
use crate::error::Offset;
use crate::root_directory::{self, Found};
use imgstream_blockio::ReadAt;
use imgstream_volume::RangeSet;
use ntfs::structured_values::NtfsFileName;
use ntfs::{KnownNtfsFileRecordNumber, Ntfs, NtfsAttributeType, NtfsFileFlags};
use std::io::{Read, Seek};

/// The throwaway files, looked up in the root directory.
pub(crate) const NAMES: [&str; 3] = ["pagefile.sys", "swapfile.sys", "hiberfil.sys"];
const HIBERFIL: usize = 2;
/// ntfs-3g reads this much of hiberfil.sys and treats a shorter file as hibernated.
const HIBERFIL_HEADER_SIZE: usize = 4096;
/// First four bytes of a hibernation image, compared case-insensitively.
const HIBERNATION_SIGNATURES: [&[u8; 4]; 4] = [b"hibr", b"wake", b"rstr", b"link"];

/// Is Windows hibernated?
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Hibernation {
    /// No hiberfil.sys, or its header is zeros.
    No,
    /// hiberfil.sys carries a hibernation image (the reason says which signature).
    Yes(String),
    /// We could not tell (the reason says why).
    Unknown(String),
}

/// One throwaway file found in the root directory.
#[derive(Clone, Debug)]
pub(crate) struct Throwaway {
    pub(crate) name: &'static str,
    /// Logical size in bytes (0 if it could not be read).
    pub(crate) size: u64,
    /// Its clusters, if all of them may be zeroed; else why not.
    pub(crate) droppable: Result<RangeSet, String>,
}

/// What the root directory says about hibernation and the throwaway files.
#[derive(Clone, Debug)]
pub(crate) struct Report {
    pub(crate) hibernation: Hibernation,
    pub(crate) files: Vec<Throwaway>,
    /// Set if the root directory could not be searched at all.
    pub(crate) lookup_error: Option<String>,
}

/// Looks the throwaway files up and examines them. `used` is the bitmap's used set and
/// `system` the clusters of the system files.
pub(crate) fn examine<T: Read + Seek>(
    ntfs: &Ntfs,
    fs: &mut T,
    volume: &dyn ReadAt,
    boot: &BootSector,
    used: &RangeSet,
    system: &RangeSet,
) -> Report {
    let found = match root_directory::find(ntfs, fs, volume, &NAMES) {
        Ok(found) => found,
        Err(error) => {
            let why = format!("cannot search the root directory for hiberfil.sys: {error}");
            return Report {
                hibernation: Hibernation::Unknown(why.clone()),
                files: Vec::new(),
                lookup_error: Some(why),
            };
        }
    };
    let mut hibernation = Hibernation::No;
    let mut files: Vec<Throwaway> = Vec::new();
    let mut seen_records = Vec::new();
    for Found { name, record, sequence } in found {
        if seen_records.contains(&record) {
            continue; // a second name (8.3 alias) of a file already examined
        }
        seen_records.push(record);
        let name = NAMES.get(name).copied().unwrap_or("?");
        let (size, stream) = match open(ntfs, fs, volume, record, sequence) {
            Ok((size, stream)) => (size, Ok(stream)),
            Err(why) => (0, Err(why)),
        };
        if name == NAMES[HIBERFIL] {
            let verdict = match &stream {
                Ok(stream) => hiberfil_state(volume, stream),
                Err(why) => Hibernation::Unknown(format!("cannot read hiberfil.sys (MFT record {record}): {why}")),
            };
            hibernation = worse(hibernation, verdict);
        }
        let droppable = stream.and_then(|stream| clusters(&stream, boot, used, system));
        files.push(Throwaway { name, size, droppable });
    }
    // hiberfil.sys is only thrown away if Windows is not hibernated.
    if hibernation != Hibernation::No {
        for file in files.iter_mut().filter(|f| f.name == NAMES[HIBERFIL]) {
            file.droppable = Err("Windows may be hibernated".into());
        }
    }
    // Cross-linked throwaway files: keep both.
    let ranges: Vec<Option<RangeSet>> = files.iter().map(|f| f.droppable.as_ref().ok().cloned()).collect();
    for (i, file) in files.iter_mut().enumerate() {
        let Ok(mine) = &file.droppable else { continue };
        let shared = ranges
            .iter()
            .enumerate()
            .any(|(j, other)| j != i && other.as_ref().is_some_and(|o| o.iter().any(|r| mine.covered_in(r) > 0)));
        if shared {
            file.droppable =
                Err("its clusters are shared with another of pagefile.sys, swapfile.sys, hiberfil.sys".into());
        }
    }
    Report { hibernation, files, lookup_error: None }
}

/// Opens MFT record `record` and checks it is the live, root-only, non-directory file the index
/// entry meant; returns its size and unnamed $DATA.
fn open<T: Read + Seek>(
    ntfs: &Ntfs,
    fs: &mut T,
    volume: &dyn ReadAt,
    record: u64,
    sequence: u16,
) -> Result<(u64, Stream), String> {
    let file = ntfs.file(fs, record).map_err(|e| e.to_string())?;
    let at = file.position().into_offset();
    if !file.flags().contains(NtfsFileFlags::IN_USE) || file.flags().contains(NtfsFileFlags::IS_DIRECTORY) {
        return Err(format!(
            "MFT record {record} at byte {at} is not an in-use file (flags {:#x})",
            file.flags().bits()
        ));
    }
    if file.sequence_number() != sequence {
        return Err(format!(
            "MFT record {record} at byte {at} has sequence number {}, the directory entry expects {sequence}",
            file.sequence_number()
        ));
    }
    for attribute in file.attributes_raw() {
        let attribute = attribute.map_err(|e| e.to_string())?;
        if attribute.ty().map_err(|e| e.to_string())? != NtfsAttributeType::FileName {
            continue;
        }
        // $FILE_NAME is always resident; the crate would parse a non-resident one through
        // reads whose failure it cannot report (it panics on binrw errors other than I/O).
        if !attribute.is_resident() {
            return Err(format!("MFT record {record} at byte {at} has a non-resident $FILE_NAME"));
        }
        let name = attribute.structured_value::<_, NtfsFileName>(fs).map_err(|e| e.to_string())?;
        let parent = name.parent_directory_reference().file_record_number();
        if parent != KnownNtfsFileRecordNumber::RootDirectory as u64 {
            return Err(format!("MFT record {record} at byte {at} is also linked from directory record {parent}"));
        }
    }
    let stream = unnamed_data(ntfs, volume, &file, fs).map_err(|e| e.to_string())?;
    let stream = stream.ok_or_else(|| format!("MFT record {record} at byte {at} has no unnamed $DATA"))?;
    Ok((stream.data_size(), stream))
}

/// The hibernation verdict from hiberfil.sys's header.
fn hiberfil_state(volume: &dyn ReadAt, stream: &Stream) -> Hibernation {
    let size = stream.data_size();
    if size < HIBERFIL_HEADER_SIZE as u64 {
        return Hibernation::Yes(format!(
            "hiberfil.sys is {size} bytes, shorter than its {HIBERFIL_HEADER_SIZE}-byte header (ntfs-3g treats that as hibernated)"
        ));
    }
    let mut header = [0u8; HIBERFIL_HEADER_SIZE];
    if let Err(error) = read_at(volume, stream, 0, &mut header) {
        return Hibernation::Unknown(format!("cannot read the header of hiberfil.sys: {error}"));
    }
    let magic = [header[0], header[1], header[2], header[3]];
    if HIBERNATION_SIGNATURES.iter().any(|s| s.eq_ignore_ascii_case(&magic)) {
        return Hibernation::Yes(format!(
            "Windows is hibernated or was shut down with Fast Startup: hiberfil.sys starts with \"{}\"",
            String::from_utf8_lossy(&magic)
        ));
    }
    if magic == [0; 4] {
        return Hibernation::No;
    }
    Hibernation::Unknown(format!(
        "hiberfil.sys starts with the unknown signature {magic:02x?}, so hibernation cannot be ruled out"
    ))
}

/// The clusters of `stream` if every one of them may be zeroed.
fn clusters(stream: &Stream, boot: &BootSector, used: &RangeSet, system: &RangeSet) -> Result<RangeSet, String> {
    let mut ranges = RangeSet::new();
    for (position, len) in stream.allocated_runs() {
        let range = position..position.saturating_add(len);
        if range.end > boot.bitmap_coverage() || position % boot.cluster_size != 0 {
            return Err(format!("a data run at byte {position} lies outside the volume's clusters"));
        }
        if !used.contains_range(range.clone()) {
            return Err(format!("a data run at byte {position} includes clusters $Bitmap marks free"));
        }
        if system.covered_in(range.clone()) > 0 {
            return Err(format!("a data run at byte {position} overlaps a system file"));
        }
        ranges.insert(range);
    }
    Ok(ranges)
}

/// The more alarming of two verdicts.
fn worse(a: Hibernation, b: Hibernation) -> Hibernation {
    match (a, b) {
        (Hibernation::Yes(why), _) | (_, Hibernation::Yes(why)) => Hibernation::Yes(why),
        (Hibernation::Unknown(why), _) | (_, Hibernation::Unknown(why)) => Hibernation::Unknown(why),
        _ => Hibernation::No,
    }
}

#[cfg(test)]
#[allow(clippy::indexing_slicing)]
mod tests {
    use super::*;
    use crate::data_runs::Run;

    fn hiberfil(header: &[u8], size: u64) -> (Vec<u8>, Stream) {
        let mut volume = vec![0u8; 16384];
        volume[8192..8192 + header.len()].copy_from_slice(header);
        let stream = Stream::NonResident {
            data_size: size,
            runs: vec![Run { stream_offset: 0, position: Some(8192), len: 8192 }],
        };
        (volume, stream)
    }

    #[test]
    fn hibernation_signatures_are_recognised_in_any_case() {
        for magic in [b"hibr", b"HIBR", b"wake", b"WAKE", b"Rstr", b"link"] {
            let (volume, stream) = hiberfil(magic, 8192);
            assert!(matches!(hiberfil_state(&volume, &stream), Hibernation::Yes(_)), "{magic:?}");
        }
        let (volume, stream) = hiberfil(&[0; 4], 8192);
        assert_eq!(hiberfil_state(&volume, &stream), Hibernation::No);
        let (volume, stream) = hiberfil(b"FREE", 8192);
        assert!(matches!(hiberfil_state(&volume, &stream), Hibernation::Unknown(_)));
        let (volume, stream) = hiberfil(&[0; 4], 100);
        assert!(matches!(hiberfil_state(&volume, &stream), Hibernation::Yes(why) if why.contains("shorter")));
        let (volume, _) = hiberfil(&[0; 4], 8192);
        let past_end = Stream::NonResident {
            data_size: 8192,
            runs: vec![Run { stream_offset: 0, position: Some(1 << 40), len: 8192 }],
        };
        assert!(matches!(hiberfil_state(&volume, &past_end), Hibernation::Unknown(_)));
    }

    #[test]
    fn only_used_clusters_outside_system_files_are_droppable() {
        let boot = BootSector::small_for_tests();
        let stream = Stream::NonResident {
            data_size: 8192,
            runs: vec![
                Run { stream_offset: 0, position: Some(40960), len: 4096 },
                Run { stream_offset: 4096, position: None, len: 4096 },
            ],
        };
        let used = RangeSet::from_range(0..50 * 4096);
        let system = RangeSet::from_range(0..5 * 4096);
        assert_eq!(clusters(&stream, &boot, &used, &system).unwrap(), RangeSet::from_range(40960..45056));
        assert!(clusters(&stream, &boot, &RangeSet::from_range(0..40960), &system).unwrap_err().contains("marks free"));
        assert!(
            clusters(&stream, &boot, &used, &RangeSet::from_range(44000..44001)).unwrap_err().contains("system file")
        );
        let outside = Stream::NonResident {
            data_size: 4096,
            runs: vec![Run { stream_offset: 0, position: Some(100 * 4096), len: 4096 }],
        };
        assert!(clusters(&outside, &boot, &used, &system).unwrap_err().contains("outside"));
    }
}
