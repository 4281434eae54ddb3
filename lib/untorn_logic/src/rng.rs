// SPDX-License-Identifier: GPL-2.0

//! A small deterministic pseudo-random number generator, SplitMix64, and a keyed hash built on
//! its output function.
//!
//! Nothing here is cryptographic: the aim is reproducibility. The same seed gives the same
//! numbers on every machine, in the kernel and on the host, with no floating point, no division
//! and no allocation.
//!
//! - [`SplitMix64`] is the sequential generator (Steele, Lea and Flood, "Fast splittable
//!   pseudorandom number generators", OOPSLA 2014), for a stream of draws.
//! - [`hash`] is a pure function of a seed and three words, for decisions that must be
//!   re-queried in any order (the crash model asks "is sector 3 of write 17 kept?" as often as it
//!   likes and always gets the same answer).

/// The golden-ratio increment of SplitMix64.
const GAMMA: u64 = 0x9e37_79b9_7f4a_7c15;

/// Scrambles `z` with the SplitMix64 output function, a bijection of `u64` whose every output bit
/// depends on every input bit.
pub const fn mix64(z: u64) -> u64 {
    let z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    let z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A keyed hash of three words: a pure function of its arguments, well mixed.
///
/// Each word is absorbed in turn as SplitMix64 absorbs its increment, so that swapping two words
/// changes the result.
pub const fn hash(seed: u64, a: u64, b: u64, c: u64) -> u64 {
    let h = mix64(seed.wrapping_add(GAMMA));
    let h = mix64(h.wrapping_add(GAMMA) ^ a);
    let h = mix64(h.wrapping_add(GAMMA) ^ b);
    mix64(h.wrapping_add(GAMMA) ^ c)
}

/// Maps a uniformly random `x` to `0..bound` (`0` if `bound` is `0`), by multiplying its high
/// 32 bits by `bound`.
///
/// The bias is below `bound / 2^32`, negligible for the small bounds of the crash model, and the
/// computation needs neither division nor 128-bit arithmetic.
pub const fn scale(x: u64, bound: u32) -> u32 {
    // Both factors are below 2^32, so the product fits and the result is below `bound`.
    (((x >> 32) * bound as u64) >> 32) as u32
}

/// The SplitMix64 generator: a 64-bit state advanced by a fixed odd increment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SplitMix64 {
    state: u64,
}

impl SplitMix64 {
    /// Returns the generator seeded with `seed`; every seed, zero included, is a good one.
    pub const fn new(seed: u64) -> Self {
        Self { state: seed }
    }

    /// Returns the next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(GAMMA);
        mix64(self.state)
    }

    /// Returns a number in `0..bound` (`0` if `bound` is `0`), as [`scale`] maps it.
    pub fn below(&mut self, bound: u32) -> u32 {
        scale(self.next_u64(), bound)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_the_reference_splitmix64() {
        // The first outputs of the reference C implementation (Vigna's splitmix64.c) for seed 0.
        let mut rng = SplitMix64::new(0);
        assert_eq!(rng.next_u64(), 0xe220_a839_7b1d_cdaf);
        assert_eq!(rng.next_u64(), 0x6e78_9e6a_a1b9_65f4);
        assert_eq!(rng.next_u64(), 0x06c4_5d18_8009_454f);
    }

    #[test]
    fn same_seed_same_stream() {
        let mut a = SplitMix64::new(42);
        let mut b = SplitMix64::new(42);
        let mut c = SplitMix64::new(43);
        let mut differ = false;
        for _ in 0..100 {
            let x = a.next_u64();
            assert_eq!(x, b.next_u64());
            differ |= x != c.next_u64();
        }
        assert!(differ);
    }

    #[test]
    fn below_stays_in_range_and_covers_it() {
        let mut rng = SplitMix64::new(7);
        let mut seen = [0u32; 10];
        for _ in 0..10_000 {
            let x = rng.below(10);
            assert!(x < 10);
            if let Some(n) = seen.get_mut(x as usize) {
                *n += 1;
            }
        }
        // Each value is expected 1000 times; 800 is more than six standard deviations away.
        assert!(seen.iter().all(|&n| n > 800), "{seen:?}");
        assert_eq!(rng.below(0), 0);
        assert_eq!(scale(u64::MAX, u32::MAX), u32::MAX - 1);
        assert_eq!(scale(u64::MAX, 1), 0);
    }

    #[test]
    fn hash_depends_on_every_word_and_their_order() {
        let base = hash(1, 2, 3, 4);
        assert_eq!(base, hash(1, 2, 3, 4));
        assert_ne!(base, hash(0, 2, 3, 4));
        assert_ne!(base, hash(1, 0, 3, 4));
        assert_ne!(base, hash(1, 2, 0, 4));
        assert_ne!(base, hash(1, 2, 3, 0));
        assert_ne!(hash(1, 2, 3, 4), hash(1, 3, 2, 4));
        assert_ne!(hash(1, 2, 3, 4), hash(1, 2, 4, 3));
    }

    #[test]
    fn hash_bits_are_balanced() {
        // The low bit decides sector tears: it must be close to a fair coin.
        let ones = (0..10_000u64)
            .filter(|&i| hash(99, 3, i, 5) & 1 == 1)
            .count();
        assert!((4_700..=5_300).contains(&ones), "{ones}");
    }
}
