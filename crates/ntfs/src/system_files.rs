//! The cross-check ntfsclone also makes: every cluster of the system files `$MFT`, `$MFTMirr`,
//! `$LogFile`, `$Bitmap` and `$Boot` must lie inside the volume and be marked in use in
//! `$Bitmap`. If one is not, the bitmap cannot be trusted to say what else is free.

use crate::boot_sector::BootSector;
use crate::data_runs::Stream;
use crate::error::Error;
use imgstream_volume::RangeSet;

/// $MFTMirr mirrors the first four MFT records ($MFT, $MFTMirr, $LogFile, $Volume).
const MIRRORED_RECORDS: u64 = 4;

/// The system files whose clusters are checked, by MFT record number.
pub(crate) const CHECKED: [(u64, &str); 5] =
    [(0, "$MFT"), (1, "$MFTMirr"), (2, "$LogFile"), (6, "$Bitmap"), (7, "$Boot")];

/// Checks that every allocated run of `stream` (the unnamed $DATA of system file `name`) lies
/// inside the bitmap's coverage and is marked used.
pub(crate) fn check_runs(
    name: &str,
    record: u64,
    record_position: u64,
    stream: &Stream,
    boot: &BootSector,
    used: &RangeSet,
) -> Result<(), Error> {
    for (position, len) in stream.allocated_runs() {
        let cluster = position / boot.cluster_size;
        let clusters = len / boot.cluster_size;
        let end = position.checked_add(len);
        let structure = format!("{name} (MFT record {record})");
        if end.is_none_or(|end| end > boot.bitmap_coverage()) {
            return Err(Error::corrupt(
                structure,
                record_position,
                format!(
                    "data run of {clusters} clusters at cluster {cluster} lies past the last cluster {}",
                    boot.total_clusters - 1
                ),
            ));
        }
        if let Some(free) = used.complement(position..position + len).iter().next() {
            return Err(Error::corrupt(
                structure,
                record_position,
                format!(
                    "data run of {clusters} clusters at cluster {cluster} includes cluster {} (byte {}) that $Bitmap marks free: the bitmap cannot be trusted",
                    free.start / boot.cluster_size,
                    free.start
                ),
            ));
        }
    }
    Ok(())
}

/// Checks that what the boot sector points at is marked used: the boot sector itself (cluster
/// 0), and the first four records of $MFT and of $MFTMirr where it says they are. The runs of
/// `$Boot`, `$MFT` and `$MFTMirr` should cover these, but a damaged record could describe
/// other clusters; zeroing these would make the copy unbootable as NTFS. Returns these places,
/// which nothing may claim as its own (see `pagefiles`).
pub(crate) fn check_fixed_locations(boot: &BootSector, used: &RangeSet) -> Result<RangeSet, Error> {
    let mirrored = MIRRORED_RECORDS * boot.record_size;
    let places = [
        ("the boot sector", 0, boot.sector_size),
        ("the start of $MFT named by the boot sector", boot.mft_lcn * boot.cluster_size, mirrored),
        ("the start of $MFTMirr named by the boot sector", boot.mft_mirror_lcn * boot.cluster_size, mirrored),
    ];
    let mut fixed = RangeSet::new();
    for (what, start, len) in places {
        let range = start..start.saturating_add(len).min(boot.bitmap_coverage());
        fixed.insert(range.clone());
        if let Some(free) = used.complement(range).iter().next() {
            return Err(Error::corrupt(
                "$Bitmap (MFT record 6)",
                free.start,
                format!(
                    "cluster {} holds {what}, but $Bitmap marks it free: the bitmap cannot be trusted",
                    free.start / boot.cluster_size
                ),
            ));
        }
    }
    Ok(fixed)
}

#[cfg(test)]
#[allow(clippy::indexing_slicing)]
mod tests {
    use super::*;
    use crate::data_runs::Run;

    fn boot() -> BootSector {
        BootSector::small_for_tests()
    }

    fn stream(runs: &[(Option<u64>, u64)]) -> Stream {
        let mut offset = 0;
        let runs = runs
            .iter()
            .map(|&(position, len)| {
                let run = Run { stream_offset: offset, position, len };
                offset += len;
                run
            })
            .collect();
        Stream::NonResident { data_size: offset, runs }
    }

    #[test]
    fn the_boot_sector_and_the_mft_starts_must_be_used() {
        // small_for_tests: $MFT at cluster 4, $MFTMirr at cluster 50, 1 KiB records.
        let used: RangeSet = [0..4096, 4 * 4096..5 * 4096, 50 * 4096..51 * 4096].into_iter().collect();
        check_fixed_locations(&boot(), &used).unwrap();
        for (hole, expected) in [
            (0..512, "cluster 0 holds the boot sector,"),
            (4 * 4096..4 * 4096 + 1, "cluster 4 holds the start of $MFT"),
            (50 * 4096 + 4095..50 * 4096 + 4096, "cluster 50 holds the start of $MFTMirr"),
        ] {
            let partial = used.difference(&RangeSet::from_range(hole));
            let error = check_fixed_locations(&boot(), &partial).unwrap_err().to_string();
            assert!(error.contains(expected), "{error}");
        }
    }

    #[test]
    fn runs_inside_used_clusters_pass() {
        let used = RangeSet::from_range(4 * 4096..20 * 4096);
        check_runs(
            "$MFT",
            0,
            16384,
            &stream(&[(Some(4 * 4096), 4 * 4096), (None, 4096), (Some(10 * 4096), 4096)]),
            &boot(),
            &used,
        )
        .unwrap();
    }

    #[test]
    fn a_run_over_a_free_cluster_or_past_the_end_is_corrupt() {
        let used = RangeSet::from_range(4 * 4096..8 * 4096);
        let error = check_runs("$MFT", 0, 16384, &stream(&[(Some(4 * 4096), 5 * 4096)]), &boot(), &used)
            .unwrap_err()
            .to_string();
        assert!(error.contains("includes cluster 8 (byte 32768) that $Bitmap marks free"), "{error}");
        let error = check_runs("$LogFile", 2, 18432, &stream(&[(Some(99 * 4096), 2 * 4096)]), &boot(), &used)
            .unwrap_err()
            .to_string();
        assert!(error.contains("past the last cluster 99"), "{error}");
        let error = check_runs("$Boot", 7, 0, &stream(&[(Some(u64::MAX - 4095), 8192)]), &boot(), &used)
            .unwrap_err()
            .to_string();
        assert!(error.contains("past the last cluster"), "{error}");
    }
}
