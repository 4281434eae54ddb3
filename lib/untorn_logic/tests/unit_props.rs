// SPDX-License-Identifier: GPL-2.0

//! Property tests of the unit verifier: any mix of sectors from two versions of a unit reads as
//! whole exactly when every sector comes from one of them, and any damage is noticed.

use proptest::prelude::*;
use untorn_logic::unit::{fill_unit, inspect_unit, UnitState, UnitTag, SECTOR_SIZE};

fn unit(size: usize, unit: u64, version: u64) -> Result<Vec<u8>, TestCaseError> {
    let mut buf = vec![0u8; size];
    if version > 0 {
        fill_unit(&mut buf, UnitTag { unit, version })
            .map_err(|e| TestCaseError::fail(format!("{e:?}")))?;
    }
    Ok(buf)
}

proptest! {
    #[test]
    fn a_mix_of_two_versions_is_whole_only_if_unmixed(
        shift in 0u32..=7,
        unit_index in 0u64..1000,
        old_version in 0u64..5,
        step in 1u64..5,
        picks in proptest::collection::vec(any::<bool>(), 128),
    ) {
        let size = SECTOR_SIZE << shift;
        let sectors = size / SECTOR_SIZE;
        let new_version = old_version + step;
        let old = unit(size, unit_index, old_version)?;
        let new = unit(size, unit_index, new_version)?;
        let mut mixed = old.clone();
        let mut took_new = 0;
        for (s, &pick) in picks.iter().take(sectors).enumerate() {
            if pick {
                let range = s * SECTOR_SIZE..(s + 1) * SECTOR_SIZE;
                mixed[range.clone()].copy_from_slice(&new[range]);
                took_new += 1;
            }
        }
        let state = inspect_unit(&mixed, unit_index).map_err(|e| TestCaseError::fail(format!("{e:?}")))?;
        let expected = if took_new == sectors {
            UnitState::Whole(new_version)
        } else if took_new == 0 {
            if old_version == 0 { UnitState::Initial } else { UnitState::Whole(old_version) }
        } else {
            UnitState::Torn { oldest: old_version, newest: new_version }
        };
        prop_assert_eq!(state, expected);
    }

    #[test]
    fn any_flipped_bit_of_a_written_unit_is_noticed(
        shift in 0u32..=7,
        version in 1u64..100,
        at in any::<usize>(),
        bit in 0u8..8,
    ) {
        let size = SECTOR_SIZE << shift;
        let mut buf = unit(size, 9, version)?;
        let at = at % size;
        buf[at] ^= 1 << bit;
        let state = inspect_unit(&buf, 9).map_err(|e| TestCaseError::fail(format!("{e:?}")))?;
        prop_assert_eq!(state, UnitState::Corrupt { sector: at / SECTOR_SIZE });
    }
}
