#![allow(clippy::indexing_slicing)] // test code: a panic is a failed test, with its message

use super::*;

/// The reference model: one bool per byte of a small universe.
fn model_of(set: &RangeSet, universe: u64) -> Vec<bool> {
    (0..universe).map(|b| set.contains(b)).collect()
}

fn assert_canonical(set: &RangeSet) {
    for pair in set.ranges.windows(2) {
        let [a, b] = pair else { unreachable!() };
        assert!(a.start < a.end && a.end < b.start, "not canonical: {:?}", set.ranges);
    }
}

#[test]
fn random_inserts_match_a_per_byte_model() {
    let mut rng = fastrand::Rng::with_seed(0x9E37_79B9_7F4A_7C15);
    for _ in 0..500 {
        let universe = 200;
        let mut set = RangeSet::new();
        let mut model = vec![false; universe as usize];
        for _ in 0..rng.u64(..20) {
            let start = rng.u64(..universe);
            let len = rng.u64(..30);
            let end = (start + len).min(universe);
            set.insert(start..end);
            model[start as usize..end as usize].iter_mut().for_each(|b| *b = true);
        }
        assert_canonical(&set);
        assert_eq!(model_of(&set, universe), model);
        assert_eq!(set.total(), model.iter().filter(|b| **b).count() as u64);

        let gaps = set.complement(10..190);
        assert_canonical(&gaps);
        for byte in 0..universe {
            let expected = (10..190).contains(&byte) && !model[byte as usize];
            assert_eq!(gaps.contains(byte), expected, "complement at {byte}");
        }
        // Removing the odd 10-byte stripes, checked against the model.
        let stripes: RangeSet = (0..universe / 20).map(|i| i * 20 + 10..i * 20 + 20).collect();
        let remaining = set.difference(&stripes);
        assert_canonical(&remaining);
        for byte in 0..universe {
            assert_eq!(remaining.contains(byte), model[byte as usize] && byte % 20 < 10, "difference at {byte}");
        }
        let window = 37..151;
        let covered: u64 = model[37..151].iter().filter(|b| **b).count() as u64;
        assert_eq!(set.covered_in(window.clone()), covered);
        assert_eq!(set.contains_range(window.clone()), covered == 151 - 37);
        assert_eq!(set.clipped(100).total(), model[..100].iter().filter(|b| **b).count() as u64);
    }
}

#[test]
fn bitmap_matches_bit_by_bit_decoding() {
    let mut rng = fastrand::Rng::with_seed(12345);
    for _ in 0..300 {
        let bytes: Vec<u8> = (0..rng.u64(..40))
            .map(|_| match rng.u64(..4) {
                0 => 0x00,
                1 => 0xFF,
                _ => rng.u8(..),
            })
            .collect();
        let bit_count = rng.u64(..bytes.len() as u64 * 8 + 20);
        let (base, unit) = (rng.u64(..5000), 1 + rng.u64(..4096));
        let mut set = RangeSet::new();
        set.insert_bitmap(&bytes, bit_count, base, unit);
        assert_canonical(&set);
        let mut expected = RangeSet::new();
        for bit in 0..bit_count.min(bytes.len() as u64 * 8) {
            if bytes[(bit / 8) as usize] >> (bit % 8) & 1 == 1 {
                expected.insert(base + bit * unit..base + (bit + 1) * unit);
            }
        }
        assert_eq!(set, expected);
    }
}

#[test]
fn touching_ranges_merge_and_empty_ranges_vanish() {
    let set: RangeSet = [10..20, 0..5, 5..10, 30..30, 25..27].into_iter().collect();
    assert_eq!(set.iter().collect::<Vec<_>>(), vec![0..20, 25..27]);
    assert_eq!(set.shifted(100).iter().collect::<Vec<_>>(), vec![100..120, 125..127]);
    assert_eq!(set.overlapping(15..26).collect::<Vec<_>>(), vec![15..20, 25..26]);
    assert_eq!(set.end(), 27);
    assert!(RangeSet::from_range(7..7).is_empty());
}

#[test]
fn difference_removes_exactly_the_given_ranges() {
    let set: RangeSet = [0..10, 20..30].into_iter().collect();
    let removed: RangeSet = [5..8, 9..25, 40..50].into_iter().collect();
    assert_eq!(set.difference(&removed), [0..5, 8..9, 25..30].into_iter().collect());
    assert_eq!(set.difference(&RangeSet::new()), set);
    assert!(set.difference(&set).is_empty());
}
