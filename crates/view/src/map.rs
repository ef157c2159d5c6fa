//! A used set as borg 2's `create --map` input: one `START LENGTH data|zero` line per range,
//! sorted and contiguous from 0 to the exact size (borg 2 betas; borg 1.x has no `--map`).

use imgstream_extents::RangeSet;
use std::fmt::Write;

/// The map of an image of `size` bytes whose bytes in `used` hold data and the rest zeros.
pub fn borg_map(used: &RangeSet, size: u64) -> String {
    let mut text = String::new();
    let mut cursor = 0;
    let mut line = |start: u64, end: u64, state: &str| {
        let _ = writeln!(text, "{start} {} {state}", end - start);
    };
    for range in used.overlapping(0..size) {
        if range.start > cursor {
            line(cursor, range.start, "zero");
        }
        line(range.start, range.end, "data");
        cursor = range.end;
    }
    if cursor < size {
        line(cursor, size, "zero");
    }
    text
}
