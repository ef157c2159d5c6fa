//! NTFS: which bytes of a volume are in use, and is it safe to zero the rest?
//!
//! This crate owns the NTFS answer to [`imgstream_volume::Allocation`]. It validates the boot
//! sector itself, then opens the volume with the `ntfs` crate and reads the unnamed `$DATA` of
//! `$Bitmap`: the used clusters, plus everything the bitmap does not cover (the volume tail
//! after the last whole cluster, which holds the backup boot sector, and any space between the
//! end of the volume and the end of the partition), are what must be copied. Like ntfsclone, it
//! cross-checks the bitmap against the clusters of `$MFT`, `$MFTMirr`, `$LogFile`, `$Bitmap`
//! and `$Boot` (a system file's cluster marked free is corruption), and against the runs of
//! every MFT record in use ([`mft_scan`]): where ntfsclone refuses a cluster a file uses but
//! `$Bitmap` marks free, we keep it and warn.
//!
//! Zeroing free clusters is refused (`unsafe_reasons`) when the `$Volume` dirty flag is set,
//! when `$LogFile` needs replaying (or cannot be read), and when `hiberfil.sys` shows that
//! Windows is hibernated (or cannot be checked). With [`Options::drop_pagefile`], the clusters
//! of `pagefile.sys`, `swapfile.sys` and a non-hibernated `hiberfil.sys` in the root directory
//! are zeroed too, when every check on them passes (see [`pagefiles`]).
//!
//! The `ntfs` crate is only ever given a volume whose geometry we checked, and records and
//! index nodes whose sizes we bounded; as a last line of defence, a panic inside it is caught
//! and reported as corruption (see [`guard`]).

#![forbid(unsafe_code)]

mod bitmap;
mod boot_sector;
mod data_runs;
mod error;
mod guard;
mod logfile;
mod mft_scan;
mod pagefiles;
mod root_directory;
mod system_files;

pub use error::Error;

use boot_sector::BootSector;
use data_runs::{Stream, read_at, stream, unnamed_data};
use error::Offset;
use imgstream_blockio::{Cursor, ReadAt};
use imgstream_volume::{Allocation, RangeSet};
use logfile::LogState;
use ntfs::structured_values::NtfsVolumeFlags;
use ntfs::{Ntfs, NtfsAttributeType};
use pagefiles::Hibernation;
use std::io;

/// Choices that change the answer.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Options {
    /// Also zero the clusters of `pagefile.sys`, `swapfile.sys` and a non-hibernated
    /// `hiberfil.sys` in the root directory (their MFT records are kept, so Windows recreates
    /// their content).
    pub drop_pagefile: bool,
}

/// Whether `volume` starts with an NTFS boot sector (its OEM id, or the shape of its BPB when
/// the OEM id is damaged). Reads one sector; a volume too small for one is not NTFS.
pub fn detect(volume: &dyn ReadAt) -> io::Result<bool> {
    let mut sector = [0u8; boot_sector::BOOT_SECTOR_SIZE];
    if volume.size() < sector.len() as u64 {
        return Ok(false);
    }
    volume.read_exact_at(&mut sector, 0)?;
    Ok(BootSector::has_signature(&sector) || BootSector::has_shape(&sector))
}

/// The byte ranges of `volume` that must be copied, with the hazards that make zeroing the
/// rest unsafe and the facts `imgstream info` shows.
pub fn analyze(volume: &dyn ReadAt, options: &Options) -> Result<Allocation, Error> {
    let boot = BootSector::read(volume)?;
    guard::no_panic("NTFS metadata", || analyze_volume(volume, &boot, options))
}

fn analyze_volume(volume: &dyn ReadAt, boot: &BootSector, options: &Options) -> Result<Allocation, Error> {
    let mut fs = Cursor::new(volume);
    let ntfs = Ntfs::new(&mut fs).map_err(Error::parse("boot sector at byte 0"))?;
    if u64::from(ntfs.cluster_size()) != boot.cluster_size || ntfs.file_record_size() != boot.record_size as u32 {
        return Err(Error::corrupt("boot sector", 0, "the ntfs crate reads a different geometry than we do"));
    }

    // The system files' data runs, then $Bitmap and the cross-check.
    let mut system_streams = Vec::new();
    for (record, name) in system_files::CHECKED {
        let file = ntfs.file(&mut fs, record).map_err(Error::parse(format!("{name} (MFT record {record})")))?;
        let at = file.position().into_offset();
        let stream = unnamed_data(&ntfs, volume, &file, &mut fs)?
            .ok_or_else(|| Error::corrupt(format!("{name} (MFT record {record})"), at, "it has no unnamed $DATA"))?;
        system_streams.push((record, name, at, stream));
    }
    let stream_of = |wanted: u64| system_streams.iter().find(|(record, ..)| *record == wanted);
    let Some((_, _, bitmap_at, bitmap_stream)) = stream_of(6) else {
        return Err(Error::corrupt("$Bitmap", 0, "not read"));
    };
    let mut used = bitmap::used_clusters(volume, boot, bitmap_stream, *bitmap_at)?;
    let mut system = system_files::check_fixed_locations(boot, &used)?;
    for (record, name, at, stream) in &system_streams {
        system_files::check_runs(name, *record, *at, stream, boot, &used)?;
        for (position, len) in stream.allocated_runs() {
            system.insert(position..position + len);
        }
    }
    // Outside the bitmap's coverage: the backup boot sector and whatever follows the volume.
    used.insert(boot.bitmap_coverage()..volume.size());
    let Some((_, _, mft_at, mft_stream)) = stream_of(0) else {
        return Err(Error::corrupt("$MFT", 0, "not read"));
    };
    let (files_detail, files_warning) =
        add_file_clusters(volume, boot, &ntfs, &mut fs, mft_stream, *mft_at, &mut used)?;

    let mut allocation = Allocation::new("ntfs", boot.cluster_size, RangeSet::new());
    allocation.map_ranges = bitmap_stream.allocated_runs().map(|(position, len)| position..position + len).collect();
    let details = &mut allocation.details;
    details.push(("cluster size".into(), boot.cluster_size.to_string()));
    details.push(("sector size".into(), boot.sector_size.to_string()));
    details.push(("MFT record size".into(), boot.record_size.to_string()));
    details.push(("clusters".into(), boot.total_clusters.to_string()));
    details.push(("volume serial".into(), format!("{:016X}", boot.serial_number)));
    details.push(("files cross-checked".into(), files_detail));
    allocation.warnings.extend(files_warning);

    // $Volume: label, version, dirty flag.
    // The label is only shown: a damaged one is worth a warning, not a refusal.
    match ntfs.volume_name(&mut fs) {
        Some(Ok(name)) => allocation.details.push(("label".into(), name.name().to_string_lossy())),
        Some(Err(error)) => {
            allocation.warnings.push(format!("cannot read the volume label ($Volume, MFT record 3): {error}"))
        }
        None => {}
    }
    let info = ntfs.volume_info(&mut fs).map_err(Error::parse("$Volume (MFT record 3): volume information"))?;
    let flags = info.flags();
    allocation.details.push(("NTFS version".into(), format!("{}.{}", info.major_version(), info.minor_version())));
    allocation.details.push(("volume flags".into(), format!("{:#06x}", flags.bits())));
    let dirty = flags.contains(NtfsVolumeFlags::IS_DIRTY);
    allocation.details.push(("dirty".into(), if dirty { "yes" } else { "no" }.into()));
    if dirty {
        allocation.unsafe_reasons.push(
            "the volume's dirty flag is set ($Volume): Windows was not shut down cleanly or chkdsk is scheduled".into(),
        );
    }
    if flags.contains(NtfsVolumeFlags::CHKDSK_UNDERWAY) {
        allocation.unsafe_reasons.push("chkdsk was interrupted on this volume ($Volume flag CHKDSK_UNDERWAY)".into());
    }

    // $LogFile restart pages.
    if let Some((_, _, log_at, log_stream)) = stream_of(2) {
        let len = usize::try_from(log_stream.data_size().min(logfile::EXAMINED_BYTES)).unwrap_or(0);
        let mut log = vec![0u8; len];
        read_at(volume, log_stream, 0, &mut log)?;
        let state = logfile::state(&log);
        let (detail, hazard) = match state {
            LogState::Empty => ("clean (empty)".to_owned(), None),
            LogState::Clean { .. } => ("clean".to_owned(), None),
            LogState::NeedsReplay { page_offset, clients, flags } => (
                "needs replay".to_owned(),
                Some(format!(
                    "$LogFile (MFT record 2 at byte {log_at}) needs replaying: the restart area at log byte {page_offset} has clients in use ({clients:#06x}) and no clean flag ({flags:#06x}); mount it in Windows or run chkdsk first"
                )),
            ),
            LogState::Unknown(why) => (
                "unknown".to_owned(),
                Some(format!("cannot tell whether $LogFile (MFT record 2 at byte {log_at}) is clean: {why}")),
            ),
        };
        allocation.details.push(("$LogFile".into(), detail));
        allocation.unsafe_reasons.extend(hazard);
    }

    // The root directory: hibernation, and the throwaway files.
    let report = pagefiles::examine(&ntfs, &mut fs, volume, boot, &used, &system);
    match &report.hibernation {
        Hibernation::No => {}
        Hibernation::Yes(why) => allocation.unsafe_reasons.push(format!(
            "{why}; Windows will overwrite this filesystem when it resumes (boot Windows and shut it down fully, e.g. `shutdown /s /t 0`)"
        )),
        Hibernation::Unknown(why) => allocation.unsafe_reasons.push(why.clone()),
    }
    let mut droppable = RangeSet::new();
    for file in &report.files {
        allocation.details.push((file.name.into(), format!("{} bytes", file.size)));
        match &file.droppable {
            Ok(ranges) => droppable.union_with(ranges),
            Err(why) if options.drop_pagefile => {
                allocation.warnings.push(format!("--drop-pagefile: keeping {}: {why}", file.name));
            }
            Err(_) => {}
        }
    }
    if let (Some(why), true) = (&report.lookup_error, options.drop_pagefile) {
        allocation.warnings.push(format!("--drop-pagefile: nothing dropped: {why}"));
    }
    let saving: u64 = droppable.iter().map(|r| used.covered_in(r)).sum();
    allocation.details.push(("bytes --drop-pagefile would save".into(), saving.to_string()));
    if options.drop_pagefile {
        used = used.difference(&droppable);
    }
    allocation.used = used.clipped(volume.size());
    Ok(allocation)
}

/// Adds to `used` the clusters that in-use MFT records' runs occupy but `$Bitmap` marks free.
/// Returns the `info` detail and, on a mismatch, the warning.
fn add_file_clusters<T: io::Read + io::Seek>(
    volume: &dyn ReadAt,
    boot: &BootSector,
    ntfs: &Ntfs,
    fs: &mut T,
    mft: &Stream,
    mft_at: u64,
    used: &mut RangeSet,
) -> Result<(String, Option<String>), Error> {
    // Bounds the walk and the MFT bitmap below: $MFT cannot be larger than the volume.
    if mft.data_size() > boot.bitmap_coverage() {
        return Err(Error::corrupt(
            "$MFT (MFT record 0)",
            mft_at,
            format!("its $DATA is {} bytes, more than the {}-byte volume", mft.data_size(), boot.bitmap_coverage()),
        ));
    }
    let mft_file = ntfs.file(fs, 0).map_err(Error::parse("$MFT (MFT record 0)"))?;
    let mft_bitmap = match stream(ntfs, volume, &mft_file, fs, NtfsAttributeType::Bitmap, "")? {
        Some(bitmap) => {
            let records = mft.data_size() / boot.record_size;
            let mut bits = vec![0u8; usize::try_from(records.div_ceil(8)).unwrap_or(0)];
            read_at(volume, &bitmap, 0, &mut bits)?;
            Some(bits)
        }
        None => None,
    };
    let found = mft_scan::file_clusters(volume, boot, mft, mft_bitmap.as_deref())?;
    let missing = found.clusters.difference(used);
    let clusters = missing.total() / boot.cluster_size;
    let records = found.records_in_use;
    if clusters == 0 {
        return Ok((format!("{records} MFT records in use, every cluster of theirs marked in $Bitmap"), None));
    }
    let first = missing.iter().next().map_or(0, |r| r.start / boot.cluster_size);
    used.union_with(&missing);
    let detail = format!("{records} MFT records in use, {clusters} clusters of theirs free in $Bitmap (kept)");
    let warning = format!(
        "{clusters} clusters used by files but free in $Bitmap (the first is cluster {first}; $MFT at byte {mft_at}): kept; run chkdsk"
    );
    Ok((detail, Some(warning)))
}

#[cfg(test)]
#[allow(clippy::indexing_slicing)]
mod tests {
    use super::*;

    #[test]
    fn detect_is_false_for_tiny_or_foreign_volumes() {
        assert!(!detect(&vec![0u8; 100]).unwrap());
        assert!(!detect(&vec![0u8; 4096]).unwrap());
        let mut ntfs = vec![0u8; 512];
        ntfs[3..11].copy_from_slice(b"NTFS    ");
        assert!(detect(&ntfs).unwrap());
    }
}
