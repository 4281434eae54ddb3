// SPDX-License-Identifier: GPL-2.0

//! Property tests: `check` accepts exactly the writes the rules describe.

use proptest::prelude::*;
use untorn_logic::atomic_write::{check, check_shape, AtomicWriteError, AtomicWriteLimits};

fn limits() -> impl Strategy<Value = AtomicWriteLimits> {
    (9u32..=20, 0u32..=8).prop_filter_map("valid limits", |(min_shift, extra)| {
        AtomicWriteLimits::new(1 << min_shift, 1 << (min_shift + extra).min(31))
    })
}

proptest! {
    #[test]
    fn accepted_writes_follow_every_rule(pos in 0u64..(1 << 40), len in 0u64..(1 << 22), l in limits()) {
        if check(pos, len, &l).is_ok() {
            prop_assert!(len.is_power_of_two());
            prop_assert_eq!(pos % len, 0);
            prop_assert!(len >= u64::from(l.unit_min()) && len <= u64::from(l.unit_max()));
        }
    }

    #[test]
    fn every_aligned_unit_within_limits_is_accepted(shift in 9u32..=20, index in 0u64..(1 << 20), l in limits()) {
        let len = 1u64 << shift;
        let verdict = check(index * len, len, &l);
        if len >= u64::from(l.unit_min()) && len <= u64::from(l.unit_max()) {
            prop_assert_eq!(verdict, Ok(()));
        } else {
            prop_assert!(matches!(verdict, Err(AtomicWriteError::TooSmall | AtomicWriteError::TooLarge)));
        }
    }

    #[test]
    fn no_limits_refuses_everything(pos: u64, len: u64) {
        prop_assert_eq!(check(pos, len, &AtomicWriteLimits::NONE), Err(AtomicWriteError::Unsupported));
    }

    #[test]
    fn shape_is_power_of_two_and_natural_alignment(pos: u64, len: u64) {
        let expected = len.is_power_of_two() && pos % len == 0;
        prop_assert_eq!(check_shape(pos, len).is_ok(), expected);
    }

    #[test]
    fn intersection_is_honoured_by_both(a in limits(), b in limits(), shift in 9u32..=28) {
        let both = a.intersect(&b);
        let len = 1u64 << shift;
        if check(0, len, &both).is_ok() {
            prop_assert!(check(0, len, &a).is_ok() && check(0, len, &b).is_ok());
        }
    }
}
