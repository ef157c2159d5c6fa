//! Fuzzes imgstream_fat: arbitrary bytes as a volume (see zero_tail.rs). Properties: no panic,
//! used ranges within the volume, deterministic, and the fat header area always kept.

#![no_main]

mod zero_tail;

use libfuzzer_sys::fuzz_target;
use zero_tail::ZeroTail;

fuzz_target!(|input: &[u8]| {
    let volume = ZeroTail::new(input);
    let _ = imgstream_fat::detect(&volume);
    if let Ok(allocation) = imgstream_fat::analyze(&volume) {
        let again = imgstream_fat::analyze(&volume).expect("second analysis failed");
        zero_tail::check(&volume, &allocation, &again, 512);
    }
});
