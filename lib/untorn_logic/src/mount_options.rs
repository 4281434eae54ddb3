// SPDX-License-Identifier: GPL-2.0

//! The `writethrough=` mount option and the per-file mode it combines with.
//!
//! See "Mounting" and "The per-file mode" in `Documentation/filesystems/untorn.rst`.

use super::errno::EINVAL;

/// Which files of a mount are written through (`writethrough=`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum WritethroughPolicy {
    /// Files whose persistent mode is writethrough (the default).
    #[default]
    Marked,
    /// Every regular file.
    All,
    /// No file (persistent modes are kept, only ignored).
    None,
}

/// An invalid `writethrough=` value or per-file mode: `EINVAL`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InvalidOption;

impl InvalidOption {
    /// The positive errno of the refusal.
    pub const fn errno(self) -> i32 {
        EINVAL
    }
}

impl WritethroughPolicy {
    /// Parses the value of `writethrough=`.
    pub fn parse(value: &[u8]) -> Result<Self, InvalidOption> {
        match value {
            b"marked" => Ok(Self::Marked),
            b"all" => Ok(Self::All),
            b"none" => Ok(Self::None),
            _ => Err(InvalidOption),
        }
    }

    /// The value as `/proc/mounts` shows it.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Marked => "marked",
            Self::All => "all",
            Self::None => "none",
        }
    }

    /// Whether a file with persistent mode `mode` is written through under this policy.
    pub const fn writes_through(self, mode: FileMode) -> bool {
        match self {
            Self::All => true,
            Self::None => false,
            Self::Marked => matches!(mode, FileMode::Writethrough),
        }
    }
}

/// A file's persistent mode, as the mode ioctl and the lower xattr carry it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum FileMode {
    /// Writes go through the page cache and writeback as usual.
    #[default]
    Off,
    /// Every write is written through.
    Writethrough,
}

impl FileMode {
    /// `UNTORN_MODE_OFF`.
    pub const OFF: u32 = 0;
    /// `UNTORN_MODE_WRITETHROUGH`.
    pub const WRITETHROUGH: u32 = 1;

    /// The mode of a uapi value.
    pub const fn from_u32(value: u32) -> Result<Self, InvalidOption> {
        match value {
            Self::OFF => Ok(Self::Off),
            Self::WRITETHROUGH => Ok(Self::Writethrough),
            _ => Err(InvalidOption),
        }
    }

    /// The uapi value.
    pub const fn as_u32(self) -> u32 {
        match self {
            Self::Off => Self::OFF,
            Self::Writethrough => Self::WRITETHROUGH,
        }
    }

    /// The lower extended attribute that stores a file's mode (hidden from users).
    pub const XATTR_NAME: &'static core::ffi::CStr = c"trusted.untorn.mode";
    /// The prefix of every extended attribute untorn keeps to itself.
    pub const XATTR_PREFIX: &'static [u8] = b"trusted.untorn.";
    /// The attribute's value for [`FileMode::Writethrough`]; without the attribute, `Off`.
    pub const XATTR_WRITETHROUGH: &'static [u8] = b"writethrough";

    /// The mode a stored attribute value means: anything but the writethrough value is `Off`.
    pub fn from_xattr(value: &[u8]) -> Self {
        if value == Self::XATTR_WRITETHROUGH {
            Self::Writethrough
        } else {
            Self::Off
        }
    }

    /// The mode a whole mount's policy and the file's own mode give.
    pub const fn effective(self, policy: WritethroughPolicy) -> Self {
        match policy {
            WritethroughPolicy::All => Self::Writethrough,
            WritethroughPolicy::None => Self::Off,
            WritethroughPolicy::Marked => self,
        }
    }
}

/// Whether an extended attribute name is one untorn keeps to itself.
pub fn is_private_xattr(name: &[u8]) -> bool {
    name.starts_with(FileMode::XATTR_PREFIX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_modes_follow_the_policy_and_the_xattr() {
        use FileMode::*;
        for mode in [Off, Writethrough] {
            assert_eq!(mode.effective(WritethroughPolicy::All), Writethrough);
            assert_eq!(mode.effective(WritethroughPolicy::None), Off);
            assert_eq!(mode.effective(WritethroughPolicy::Marked), mode);
        }
        assert_eq!(FileMode::from_xattr(b"writethrough"), Writethrough);
        assert_eq!(FileMode::from_xattr(b"writethrough\0"), Off);
        assert_eq!(FileMode::from_xattr(b""), Off);
        assert!(is_private_xattr(b"trusted.untorn.mode"));
        assert!(!is_private_xattr(b"trusted.untorn"));
        assert!(!is_private_xattr(b"user.untorn.mode"));
    }

    #[test]
    fn policy_values_parse_exactly() {
        assert_eq!(
            WritethroughPolicy::parse(b"all"),
            Ok(WritethroughPolicy::All)
        );
        assert_eq!(
            WritethroughPolicy::parse(b"none"),
            Ok(WritethroughPolicy::None)
        );
        assert_eq!(
            WritethroughPolicy::parse(b"marked"),
            Ok(WritethroughPolicy::Marked)
        );
        for bad in [&b""[..], b"ALL", b"all ", b"yes", b"1"] {
            assert_eq!(
                WritethroughPolicy::parse(bad).map_err(InvalidOption::errno),
                Err(EINVAL)
            );
        }
        for p in [
            WritethroughPolicy::All,
            WritethroughPolicy::None,
            WritethroughPolicy::Marked,
        ] {
            assert_eq!(WritethroughPolicy::parse(p.as_str().as_bytes()), Ok(p));
        }
    }

    #[test]
    fn the_policy_decides_over_the_file_mode() {
        use FileMode::*;
        use WritethroughPolicy as P;
        assert!(P::All.writes_through(Off));
        assert!(!P::None.writes_through(Writethrough));
        assert!(P::Marked.writes_through(Writethrough));
        assert!(!P::Marked.writes_through(Off));
        assert_eq!(WritethroughPolicy::default(), P::Marked);
    }

    #[test]
    fn file_modes_round_trip_and_others_are_refused() {
        for m in [FileMode::Off, FileMode::Writethrough] {
            assert_eq!(FileMode::from_u32(m.as_u32()), Ok(m));
        }
        assert_eq!(FileMode::from_u32(2), Err(InvalidOption));
        assert_eq!(FileMode::from_u32(u32::MAX), Err(InvalidOption));
    }
}
