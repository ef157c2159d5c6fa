//! Fuzzes imgstream_ext: arbitrary bytes as a volume (see zero_tail.rs). Properties: no panic,
//! used ranges within the volume, deterministic, the boot area and the superblock (the first
//! 2048 bytes) always kept, and errors on one line. The seed `ext-journal-1k-40k`
//! (make-ext-journal-seed.sh) needs recovery, so that mutations reach the journal analysis:
//! the journal inode's extent tree, the JBD2 superblock, descriptor tags, escaped copies and
//! logged bitmaps. With `--deep-check` (the inode scan on metadata_csum filesystems too) the
//! answer only ever keeps more, or fails.

#![no_main]

mod zero_tail;

use imgstream_ext::Options;
use libfuzzer_sys::fuzz_target;
use zero_tail::ZeroTail;

fuzz_target!(|input: &[u8]| {
    let volume = ZeroTail::new(input);
    let _ = imgstream_ext::detect(&volume);
    match imgstream_ext::analyze(&volume) {
        Ok(allocation) => {
            let again = imgstream_ext::analyze(&volume).expect("second analysis failed");
            zero_tail::check(&volume, &allocation, &again, 2048);
            if let Ok(deep) = imgstream_ext::analyze_with(&volume, &Options { deep_check: true }) {
                let deep_again =
                    imgstream_ext::analyze_with(&volume, &Options { deep_check: true }).expect("second deep check failed");
                zero_tail::check(&volume, &deep, &deep_again, 2048);
                for range in allocation.used.iter() {
                    assert!(deep.used.contains_range(range), "--deep-check dropped a used range");
                }
            }
        }
        Err(error) => assert!(!error.to_string().contains('\n'), "multi-line error: {error}"),
    }
});
