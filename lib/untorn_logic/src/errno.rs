// SPDX-License-Identifier: GPL-2.0

//! The errno values the shared logic returns, as positive numbers (the kernel negates them).
//!
//! One definition for every file here, from `include/uapi/asm-generic/errno-base.h` and
//! `errno.h`, which are the same on every architecture untorn builds for.

/// `EIO`.
pub const EIO: i32 = 5;
/// `EBUSY`.
pub const EBUSY: i32 = 16;
/// `EINVAL`.
pub const EINVAL: i32 = 22;
/// `EOPNOTSUPP`.
pub const EOPNOTSUPP: i32 = 95;
