// SPDX-License-Identifier: GPL-2.0

//! The per-file mode ABI of `include/uapi/linux/untorn.h`, for Rust users and the module.
//!
//! A KUnit test of the module checks every number here against the C header.

use super::mount_options::{FileMode, InvalidOption};

/// The ioctl type byte of untorn (unlisted in `ioctl-number.rst`).
pub const UNTORN_IOC_TYPE: u32 = 0xBC;

/// `struct untorn_mode`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct UntornMode {
    /// `UNTORN_MODE_OFF` or `UNTORN_MODE_WRITETHROUGH`.
    pub mode: u32,
    /// GET only: the mode after the mount option; ignored by SET.
    pub effective: u32,
    /// Must be 0.
    pub flags: u32,
    /// Must be 0.
    pub reserved: u32,
}

/// `_IOC(dir, type, nr, size)` of `include/uapi/asm-generic/ioctl.h`.
const fn ioc(dir: u32, nr: u32, size: usize) -> u32 {
    (dir << 30) | ((size as u32) << 16) | (UNTORN_IOC_TYPE << 8) | nr
}

const IOC_WRITE: u32 = 1;
const IOC_READ: u32 = 2;

/// `UNTORN_IOC_GET_MODE`: `_IOR(0xBC, 0x00, struct untorn_mode)`.
pub const UNTORN_IOC_GET_MODE: u32 = ioc(IOC_READ, 0, core::mem::size_of::<UntornMode>());
/// `UNTORN_IOC_SET_MODE`: `_IOW(0xBC, 0x01, struct untorn_mode)`.
pub const UNTORN_IOC_SET_MODE: u32 = ioc(IOC_WRITE, 1, core::mem::size_of::<UntornMode>());

impl UntornMode {
    /// The size of the struct in the ioctl's argument.
    pub const SIZE: usize = core::mem::size_of::<Self>();

    /// The struct from the user's bytes (native byte order, as C lays it out).
    pub fn from_bytes(bytes: &[u8; Self::SIZE]) -> Self {
        let field =
            |i: usize| u32::from_ne_bytes([bytes[i], bytes[i + 1], bytes[i + 2], bytes[i + 3]]);
        Self {
            mode: field(0),
            effective: field(4),
            flags: field(8),
            reserved: field(12),
        }
    }

    /// The struct's bytes for the user.
    pub fn to_bytes(&self) -> [u8; Self::SIZE] {
        let mut bytes = [0u8; Self::SIZE];
        for (i, value) in [self.mode, self.effective, self.flags, self.reserved]
            .into_iter()
            .enumerate()
        {
            bytes[i * 4..i * 4 + 4].copy_from_slice(&value.to_ne_bytes());
        }
        bytes
    }

    /// The mode a SET request asks for; `EINVAL` for an unknown mode or non-zero
    /// `flags`/`reserved` (kept zero so that they can gain a meaning later).
    pub const fn requested(&self) -> Result<FileMode, InvalidOption> {
        if self.flags != 0 || self.reserved != 0 {
            return Err(InvalidOption);
        }
        FileMode::from_u32(self.mode)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ioctl_numbers_follow_the_generic_encoding() {
        // Values computed by hand from asm-generic/ioctl.h: size 16, type 0xBC.
        assert_eq!(UNTORN_IOC_GET_MODE, 0x8010_BC00);
        assert_eq!(UNTORN_IOC_SET_MODE, 0x4010_BC01);
    }

    #[test]
    fn bytes_round_trip() {
        let m = UntornMode {
            mode: 1,
            effective: 0,
            flags: 0x0102_0304,
            reserved: 7,
        };
        assert_eq!(UntornMode::from_bytes(&m.to_bytes()), m);
        assert_eq!(&m.to_bytes()[0..4], &1u32.to_ne_bytes());
    }

    #[test]
    fn set_requests_are_validated() {
        let ok = UntornMode {
            mode: 1,
            ..Default::default()
        };
        assert_eq!(ok.requested(), Ok(FileMode::Writethrough));
        // `effective` is ignored by SET.
        let ignored = UntornMode { effective: 7, ..ok };
        assert_eq!(ignored.requested(), Ok(FileMode::Writethrough));
        for bad in [
            UntornMode { mode: 2, ..ok },
            UntornMode { flags: 1, ..ok },
            UntornMode { reserved: 1, ..ok },
        ] {
            assert_eq!(bad.requested(), Err(InvalidOption));
        }
    }
}
