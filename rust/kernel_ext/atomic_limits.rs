// SPDX-License-Identifier: GPL-2.0

//! Atomic write limits of a block device, in bytes: what a disk driver reports
//! (`super::block`) and what a user of a device reads from its queue (`super::bio`).

use kernel::error::{code::EINVAL, Result};

/// Atomic write limits of a disk, in bytes: as a driver reports them (the `hw` limits of
/// `struct queue_limits`, from which the block layer derives what sysfs shows), or as the block
/// layer enforces them for bios.
///
/// # Invariants
///
/// `unit_min` and `unit_max` are powers of two with `logical block size <= unit_min <= unit_max
/// <= max`, `max` is a multiple of the logical block size, and `boundary` is 0 or a power of two
/// of at least `max`: what `blk_validate_atomic_write_limits()` accepts without a warning.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AtomicLimits {
    unit_min: u32,
    unit_max: u32,
    max: u32,
    boundary: u32,
}

impl AtomicLimits {
    /// Returns the limits if they are valid for a disk of `logical_block_size`, else `EINVAL`.
    pub fn new(
        logical_block_size: u32,
        unit_min: u32,
        unit_max: u32,
        max: u32,
        boundary: u32,
    ) -> Result<Self> {
        let valid = logical_block_size.is_power_of_two()
            && unit_min.is_power_of_two()
            && unit_max.is_power_of_two()
            && logical_block_size <= unit_min
            && unit_min <= unit_max
            && unit_max <= max
            && max % logical_block_size == 0
            && (boundary == 0 || (boundary.is_power_of_two() && boundary >= max));
        if !valid {
            return Err(EINVAL);
        }
        Ok(Self {
            unit_min,
            unit_max,
            max,
            boundary,
        })
    }

    /// The smallest atomic write.
    pub fn unit_min(&self) -> u32 {
        self.unit_min
    }

    /// The largest atomic write of one unit.
    pub fn unit_max(&self) -> u32 {
        self.unit_max
    }

    /// The largest atomic write.
    pub fn max(&self) -> u32 {
        self.max
    }

    /// The boundary an atomic write may not cross (0: none).
    pub fn boundary(&self) -> u32 {
        self.boundary
    }

    /// Whether one bio of `len` bytes at byte `pos` of the device is within these limits: a
    /// power of two from `unit_min` to `unit_max`, naturally aligned, and not across the
    /// boundary. (A naturally aligned unit never crosses a power-of-two boundary of at least
    /// `max`, which the invariants give; checked anyway, as the block layer does.)
    pub fn accepts(&self, pos: u64, len: u64) -> bool {
        let crosses = self.boundary != 0
            && len > 0
            && pos / u64::from(self.boundary) != (pos + len - 1) / u64::from(self.boundary);
        len.is_power_of_two()
            && u64::from(self.unit_min) <= len
            && len <= u64::from(self.unit_max)
            && pos % len == 0
            && !crosses
    }
}
