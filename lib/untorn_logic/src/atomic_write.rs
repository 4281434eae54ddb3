// SPDX-License-Identifier: GPL-2.0

//! The rules an untorn (atomic) write must follow.
//!
//! They are upstream's rules for `RWF_ATOMIC` direct writes (`generic_atomic_write_valid()` in
//! `fs/read_write.c`, plus the unit limits that filesystems and the block layer enforce), applied
//! to a write at byte offset `pos` of `len` bytes:
//!
//! 1. The file must support atomic writes at all (non-zero limits), else `EOPNOTSUPP`.
//! 2. `len` must be a power of two, else `EINVAL`.
//! 3. `pos` must be a multiple of `len` (natural alignment), else `EINVAL`.
//! 4. `len` must lie within `[unit_min, unit_max]`, else `EINVAL`.

pub use super::errno::{EINVAL, EOPNOTSUPP};

/// The atomic write limits of a file or device, in bytes, as `statx` reports them.
///
/// # Invariants
///
/// Either both limits are zero (no atomic writes), or both are powers of two and
/// `unit_min <= unit_max`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AtomicWriteLimits {
    unit_min: u32,
    unit_max: u32,
}

impl AtomicWriteLimits {
    /// Limits of a file or device that cannot write atomically.
    pub const NONE: Self = Self {
        unit_min: 0,
        unit_max: 0,
    };

    /// Returns the limits, or `None` if they break the invariants (which a driver or a lower
    /// filesystem must never report; callers treat that as "no atomic writes").
    pub const fn new(unit_min: u32, unit_max: u32) -> Option<Self> {
        if unit_min == 0 && unit_max == 0 {
            return Some(Self::NONE);
        }
        if unit_min.is_power_of_two() && unit_max.is_power_of_two() && unit_min <= unit_max {
            Some(Self { unit_min, unit_max })
        } else {
            None
        }
    }

    /// The smallest atomic write, in bytes (0 if unsupported).
    pub const fn unit_min(&self) -> u32 {
        self.unit_min
    }

    /// The largest atomic write, in bytes (0 if unsupported).
    pub const fn unit_max(&self) -> u32 {
        self.unit_max
    }

    /// Whether any atomic write is possible.
    pub const fn is_supported(&self) -> bool {
        self.unit_max != 0
    }

    /// The limits both `self` and `other` honour: what a stack of the two can promise.
    pub const fn intersect(&self, other: &Self) -> Self {
        let unit_min = if self.unit_min > other.unit_min {
            self.unit_min
        } else {
            other.unit_min
        };
        let unit_max = if self.unit_max < other.unit_max {
            self.unit_max
        } else {
            other.unit_max
        };
        if unit_min == 0 || unit_max == 0 || unit_min > unit_max {
            Self::NONE
        } else {
            Self { unit_min, unit_max }
        }
    }
}

/// Why an atomic write was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AtomicWriteError {
    /// The file cannot be written atomically at all.
    Unsupported,
    /// The length is not a power of two (zero included).
    NotPowerOfTwo,
    /// The offset is not a multiple of the length.
    Misaligned,
    /// The length is below the smallest atomic unit.
    TooSmall,
    /// The length is above the largest atomic unit.
    TooLarge,
}

impl AtomicWriteError {
    /// The positive errno the system call returns for this refusal.
    pub const fn errno(self) -> i32 {
        match self {
            Self::Unsupported => EOPNOTSUPP,
            Self::NotPowerOfTwo | Self::Misaligned | Self::TooSmall | Self::TooLarge => EINVAL,
        }
    }
}

/// Checks the shape of an atomic write, as `generic_atomic_write_valid()` does for a direct
/// write from a single user buffer: a power-of-two length at a naturally aligned offset.
pub const fn check_shape(pos: u64, len: u64) -> Result<(), AtomicWriteError> {
    if !len.is_power_of_two() {
        return Err(AtomicWriteError::NotPowerOfTwo);
    }
    if pos & (len - 1) != 0 {
        return Err(AtomicWriteError::Misaligned);
    }
    Ok(())
}

/// Checks that a write of `len` bytes at `pos` can be done as one untorn write within `limits`.
///
/// Checks are made in the order the kernel makes them, so that the errno matches upstream's
/// `RWF_ATOMIC`: support first (`kiocb_set_rw_flags()`), then shape, then the unit limits.
pub const fn check(pos: u64, len: u64, limits: &AtomicWriteLimits) -> Result<(), AtomicWriteError> {
    if !limits.is_supported() {
        return Err(AtomicWriteError::Unsupported);
    }
    if let Err(e) = check_shape(pos, len) {
        return Err(e);
    }
    if len < limits.unit_min as u64 {
        return Err(AtomicWriteError::TooSmall);
    }
    if len > limits.unit_max as u64 {
        return Err(AtomicWriteError::TooLarge);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// XFS on `scsi_debug atomic_wr=1`, as statx reports it (4 KiB to 1 MiB).
    const XFS_ON_SCSI_DEBUG: AtomicWriteLimits = match AtomicWriteLimits::new(4096, 1 << 20) {
        Some(l) => l,
        None => panic!("valid limits"),
    };

    #[test]
    fn accepts_database_pages() {
        for page in [4096u64, 8192, 16384, 65536] {
            assert_eq!(check(7 * page, page, &XFS_ON_SCSI_DEBUG), Ok(()));
        }
    }

    #[test]
    fn refusals_have_upstream_errnos() {
        let l = &XFS_ON_SCSI_DEBUG;
        assert_eq!(check(0, 0, l).map_err(|e| e.errno()), Err(EINVAL));
        assert_eq!(check(0, 12288, l), Err(AtomicWriteError::NotPowerOfTwo));
        assert_eq!(check(4096, 8192, l), Err(AtomicWriteError::Misaligned));
        assert_eq!(check(0, 2048, l), Err(AtomicWriteError::TooSmall));
        assert_eq!(check(0, 2 << 20, l), Err(AtomicWriteError::TooLarge));
        let none = &AtomicWriteLimits::NONE;
        assert_eq!(check(0, 4096, none).map_err(|e| e.errno()), Err(EOPNOTSUPP));
        // Unsupported wins over a bad shape, as RWF_ATOMIC on a non-atomic file does.
        assert_eq!(check(1, 3, none), Err(AtomicWriteError::Unsupported));
    }

    #[test]
    fn limits_must_be_powers_of_two_in_order() {
        assert_eq!(AtomicWriteLimits::new(0, 0), Some(AtomicWriteLimits::NONE));
        assert_eq!(AtomicWriteLimits::new(4096, 3 << 12), None);
        assert_eq!(AtomicWriteLimits::new(8192, 4096), None);
        assert_eq!(AtomicWriteLimits::new(0, 4096), None);
        assert!(AtomicWriteLimits::new(512, 512).is_some());
    }

    #[test]
    fn intersection_of_disjoint_limits_is_none() {
        let small = AtomicWriteLimits::new(512, 4096);
        let large = AtomicWriteLimits::new(8192, 65536);
        match (small, large) {
            (Some(s), Some(l)) => assert_eq!(s.intersect(&l), AtomicWriteLimits::NONE),
            _ => panic!("valid limits"),
        }
    }
}
