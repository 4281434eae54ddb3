// SPDX-License-Identifier: GPL-2.0

//! Byte-range arithmetic of untorn's data path.
//!
//! The lower file is written with direct I/O, which needs offsets and lengths aligned to the
//! lower's direct-I/O alignment `L` (a power of two). A direct write past the end of file would
//! make the lower file longer than untorn's, so the block holding the end of file is split: a
//! direct write up to `round_down(size, L)`, and a buffered write of the rest (the tail). See
//! "End of file and exact sizes" in `Documentation/filesystems/untorn.rst`.

/// Why a range could not be computed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RangeError {
    /// The alignment is not a power of two.
    BadAlignment,
    /// The range ends before it starts, or does not fit in a file offset.
    BadRange,
    /// The range does not start on an alignment boundary where one is needed.
    Unaligned,
}

/// A half-open byte range `[start, end)` of a file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ByteRange {
    start: u64,
    end: u64,
}

/// The largest file offset plus one (`loff_t` is signed).
pub const MAX_FILE_END: u64 = i64::MAX as u64;

impl ByteRange {
    /// The range `[start, end)`, if `start <= end <= MAX_FILE_END`.
    pub const fn new(start: u64, end: u64) -> Result<Self, RangeError> {
        if start > end || end > MAX_FILE_END {
            return Err(RangeError::BadRange);
        }
        Ok(Self { start, end })
    }

    /// The range of `len` bytes at `pos`.
    pub const fn at(pos: u64, len: u64) -> Result<Self, RangeError> {
        match pos.checked_add(len) {
            Some(end) => Self::new(pos, end),
            None => Err(RangeError::BadRange),
        }
    }

    /// The empty range at `pos`.
    pub const fn empty(pos: u64) -> Self {
        Self {
            start: pos,
            end: pos,
        }
    }

    /// The first byte.
    pub const fn start(&self) -> u64 {
        self.start
    }

    /// One past the last byte.
    pub const fn end(&self) -> u64 {
        self.end
    }

    /// The number of bytes.
    pub const fn len(&self) -> u64 {
        self.end - self.start
    }

    /// Whether the range has no byte.
    pub const fn is_empty(&self) -> bool {
        self.start == self.end
    }

    /// The smallest range holding both.
    pub const fn union(&self, other: &Self) -> Self {
        Self {
            start: if self.start < other.start {
                self.start
            } else {
                other.start
            },
            end: if self.end > other.end {
                self.end
            } else {
                other.end
            },
        }
    }

    /// The indices of the first and last `1 << shift`-byte units (pages, folios) the range
    /// touches, or `None` for an empty range.
    pub const fn unit_indices(&self, shift: u32) -> Option<(u64, u64)> {
        if self.is_empty() || shift >= 64 {
            return None;
        }
        Some((self.start >> shift, (self.end - 1) >> shift))
    }

    /// Whether the first and the last unit the range touches are only partly covered, so that
    /// their other bytes must be read before the units can be written whole.
    pub const fn partial_edges(&self, shift: u32) -> (bool, bool) {
        if self.is_empty() || shift >= 64 {
            return (false, false);
        }
        let mask = (1u64 << shift) - 1;
        (self.start & mask != 0, self.end & mask != 0)
    }
}

const fn checked_align(align: u32) -> Result<u64, RangeError> {
    if align.is_power_of_two() {
        Ok(align as u64)
    } else {
        Err(RangeError::BadAlignment)
    }
}

/// `round_down(x, align)` for a power-of-two `align`.
pub const fn round_down(x: u64, align: u32) -> Result<u64, RangeError> {
    match checked_align(align) {
        Ok(a) => Ok(x & !(a - 1)),
        Err(e) => Err(e),
    }
}

/// `round_up(x, align)` for a power-of-two `align`, if it fits in a file offset.
pub const fn round_up(x: u64, align: u32) -> Result<u64, RangeError> {
    let a = match checked_align(align) {
        Ok(a) => a,
        Err(e) => return Err(e),
    };
    match x.checked_add(a - 1) {
        Some(y) if (y & !(a - 1)) <= MAX_FILE_END => Ok(y & !(a - 1)),
        _ => Err(RangeError::BadRange),
    }
}

/// The range a write of `write` must send to the lower with direct I/O before the end-of-file
/// rule: `write` widened to the lower's direct-I/O alignment `align`.
pub const fn io_range(write: &ByteRange, align: u32) -> Result<ByteRange, RangeError> {
    let start = match round_down(write.start, align) {
        Ok(s) => s,
        Err(e) => return Err(e),
    };
    let end = match round_up(write.end, align) {
        Ok(e) => e,
        Err(e) => return Err(e),
    };
    ByteRange::new(start, end)
}

/// How an aligned I/O range reaches a lower file of `size` bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LowerIo {
    /// Written with direct I/O: aligned at both ends, entirely below the end of file.
    pub direct: ByteRange,
    /// Written with buffered I/O: the partial last block, `[round_down(size, L), size)`, or empty.
    pub tail: ByteRange,
}

/// Splits the aligned I/O range `io` of a file whose size (after the write) is `size`: the
/// direct part ends at `round_down(size, align)`, the rest up to `size` is the buffered tail,
/// and nothing at or past `size` is written, so the lower never grows beyond `size`.
pub const fn split_at_eof(io: &ByteRange, size: u64, align: u32) -> Result<LowerIo, RangeError> {
    let a = match checked_align(align) {
        Ok(a) => a,
        Err(e) => return Err(e),
    };
    if io.start & (a - 1) != 0 {
        return Err(RangeError::Unaligned);
    }
    let block_end = size & !(a - 1);
    let end = if io.end < size { io.end } else { size };
    if io.start >= end {
        return Ok(LowerIo {
            direct: ByteRange::empty(io.start),
            tail: ByteRange::empty(io.start),
        });
    }
    let direct_end = if end < block_end { end } else { block_end };
    if direct_end <= io.start {
        // Everything lies in the partial last block.
        return Ok(LowerIo {
            direct: ByteRange::empty(io.start),
            tail: ByteRange {
                start: io.start,
                end,
            },
        });
    }
    Ok(LowerIo {
        direct: ByteRange {
            start: io.start,
            end: direct_end,
        },
        tail: ByteRange {
            start: direct_end,
            end,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(start: u64, end: u64) -> ByteRange {
        match ByteRange::new(start, end) {
            Ok(r) => r,
            Err(e) => panic!("bad test range: {e:?}"),
        }
    }

    #[test]
    fn a_write_inside_the_file_is_all_direct() {
        let io = split_at_eof(&r(8192, 16384), 1 << 20, 4096);
        assert_eq!(
            io,
            Ok(LowerIo {
                direct: r(8192, 16384),
                tail: ByteRange::empty(16384)
            })
        );
    }

    #[test]
    fn the_partial_last_block_is_the_buffered_tail() {
        // A 10000-byte file written from 4096: [4096, 8192) direct, [8192, 10000) buffered.
        let io = split_at_eof(&r(4096, 12288), 10000, 4096);
        assert_eq!(
            io,
            Ok(LowerIo {
                direct: r(4096, 8192),
                tail: r(8192, 10000)
            })
        );
    }

    #[test]
    fn a_write_in_the_last_block_only_has_a_tail() {
        let io = split_at_eof(&r(8192, 12288), 9000, 4096);
        assert_eq!(
            io,
            Ok(LowerIo {
                direct: ByteRange::empty(8192),
                tail: r(8192, 9000)
            })
        );
    }

    #[test]
    fn bad_inputs_are_refused() {
        assert_eq!(ByteRange::new(2, 1), Err(RangeError::BadRange));
        assert_eq!(ByteRange::at(u64::MAX, 2), Err(RangeError::BadRange));
        assert_eq!(
            split_at_eof(&r(0, 4096), 4096, 3000),
            Err(RangeError::BadAlignment)
        );
        assert_eq!(
            split_at_eof(&r(512, 4096), 4096, 4096),
            Err(RangeError::Unaligned)
        );
        assert_eq!(round_up(MAX_FILE_END, 4096), Err(RangeError::BadRange));
    }

    #[test]
    fn edges_and_indices_of_units() {
        let w = r(4000, 8200);
        assert_eq!(w.unit_indices(12), Some((0, 2)));
        assert_eq!(w.partial_edges(12), (true, true));
        assert_eq!(r(4096, 8192).partial_edges(12), (false, false));
        assert_eq!(ByteRange::empty(5).unit_indices(12), None);
    }
}
