// SPDX-License-Identifier: GPL-2.0

//! Property tests of the end-of-file split: the direct part is aligned and below the end of
//! file, the tail is the partial last block, nothing at or past the size is written, and
//! together they cover exactly the part of the I/O range below the size.

use proptest::prelude::*;
use untorn_logic::range::{io_range, split_at_eof, ByteRange};

proptest! {
    #[test]
    fn eof_split_covers_the_write_exactly_below_the_size(
        shift in 9u32..=16,
        pos in 0u64..(1 << 30),
        len in 0u64..(1 << 22),
        size in 0u64..(1 << 31),
    ) {
        let align = 1u32 << shift;
        let a = u64::from(align);
        let write = ByteRange::at(pos, len).map_err(|e| TestCaseError::fail(format!("{e:?}")))?;
        let io = io_range(&write, align).map_err(|e| TestCaseError::fail(format!("{e:?}")))?;
        prop_assert!(io.start() <= write.start() && io.end() >= write.end());
        prop_assert_eq!(io.start() % a, 0);
        prop_assert_eq!(io.end() % a, 0);

        let split = split_at_eof(&io, size, align).map_err(|e| TestCaseError::fail(format!("{e:?}")))?;
        let (d, t) = (split.direct, split.tail);
        // Direct I/O: aligned at both ends and never past the last whole block.
        prop_assert_eq!(d.start() % a, 0);
        prop_assert_eq!(d.end() % a, 0);
        prop_assert!(d.end() <= size - size % a || d.is_empty());
        // The tail is inside the partial last block and ends at most at the size.
        if !t.is_empty() {
            prop_assert!(t.start() >= size - size % a);
            prop_assert!(t.end() <= size);
            prop_assert!(t.len() < a);
            prop_assert_eq!(t.start(), if d.is_empty() { io.start() } else { d.end() });
        }
        // Together: exactly [io.start, min(io.end, size)).
        let covered = d.len() + t.len();
        let wanted = io.end().min(size).saturating_sub(io.start());
        prop_assert_eq!(covered, wanted);
    }
}
