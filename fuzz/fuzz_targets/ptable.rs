//! Fuzzes imgstream_ptable: the input's first byte picks the sector size hint (none = probe,
//! 512, 4096), the rest is the whole disk, so both GPT copies and EBR chains are reachable.
//! Properties: no panic; partitions inside the disk and disjoint; the raw areas are exactly the
//! rest and hold every table structure; the same answer twice; and for a GPT, moving the backup
//! to the end of a larger copy either fails cleanly or gives a table with the same partitions.

#![no_main]

use imgstream_extents::RangeSet;
use imgstream_ptable::{DiskLayout, Partition, TableKind, move_backup_to_end, read_layout};
use libfuzzer_sys::fuzz_target;

fn check(layout: &DiskLayout, size: u64) {
    assert_eq!(layout.size, size);
    let inside: RangeSet = layout.partitions.iter().map(Partition::range).collect();
    let sum: u64 = layout.partitions.iter().map(|p| p.len).sum();
    assert_eq!(inside.total(), sum, "partitions overlap");
    assert!(inside.end() <= size, "a partition ends past the disk");
    assert_eq!(inside.total() + layout.raw.total(), size, "raw areas are not the complement");
    assert!(layout.raw.end() <= size);
    for s in &layout.structures {
        assert!(s.range.end <= size, "{} reaches past the disk", s.what);
        assert!(layout.raw.contains_range(s.range.clone()), "{} lies in a partition", s.what);
    }
}

fuzz_target!(|input: &[u8]| {
    let Some((&hint, disk)) = input.split_first() else { return };
    let sector_size = match hint % 3 {
        0 => None,
        1 => Some(512),
        _ => Some(4096),
    };
    let Ok(layout) = read_layout(&disk, sector_size) else { return };
    check(&layout, disk.len() as u64);
    let again = read_layout(&disk, sector_size).expect("second read failed");
    assert_eq!(format!("{layout:?}"), format!("{again:?}"), "two reads differ");
    if layout.table == TableKind::Gpt && disk.len() < (8 << 20) {
        let mut larger = disk.to_vec();
        larger.resize(disk.len() + (1 << 20), 0);
        let mut cursor = std::io::Cursor::new(larger);
        if move_backup_to_end(&mut cursor, &layout).is_ok() {
            let moved = cursor.into_inner();
            let after = read_layout(&moved, Some(layout.sector_size)).expect("the moved table does not read back");
            check(&after, moved.len() as u64);
            assert_eq!(after.partitions, layout.partitions, "moving the backup changed the partitions");
        }
    }
});
