//! Fuzzes imgstream_xfs: arbitrary bytes as a volume (see zero_tail.rs). Properties: no panic,
//! used ranges within the volume, deterministic, the superblock and AG 0's other headers (the
//! first four 512-byte sectors at least) always kept, and errors on one line.

#![no_main]

mod zero_tail;

use libfuzzer_sys::fuzz_target;
use zero_tail::ZeroTail;

fuzz_target!(|input: &[u8]| {
    let volume = ZeroTail::new(input);
    let _ = imgstream_xfs::detect(&volume);
    match imgstream_xfs::analyze(&volume) {
        Ok(allocation) => {
            let again = imgstream_xfs::analyze(&volume).expect("second analysis failed");
            zero_tail::check(&volume, &allocation, &again, 2048);
        }
        Err(error) => assert!(!error.to_string().contains('\n'), "multi-line error: {error}"),
    }
});
