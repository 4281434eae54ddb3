// SPDX-License-Identifier: GPL-2.0

//! The configuration rules and the commands of `tornblk`, the power-cut simulating RAM block
//! device (`samples/rust/tornblk`, `Documentation/block/tornblk.rst`): what the module accepts
//! through configfs, as pure logic that the host tests.
//!
//! The crash model itself is in [`super::crash_model`].

use super::crash_model::MAX_WRITES_BEFORE_CUT;
pub use super::errno::EINVAL;

/// The smallest device, in MiB.
pub const MIN_SIZE_MIB: u64 = 1;
/// The largest device, in MiB (4 GiB; the device allocates its pages as they are written).
pub const MAX_SIZE_MIB: u64 = 4096;
/// The smallest volatile write cache, in MiB.
pub const MIN_CACHE_MIB: u32 = 1;
/// The largest volatile write cache, in MiB.
pub const MAX_CACHE_MIB: u32 = 64;
/// The most writes the volatile cache holds; one more destages it (see [`must_destage`]).
pub const MAX_PENDING_WRITES: usize = 1024;
/// The largest request the device takes (its `max_hw_sectors`), in bytes.
pub const MAX_REQUEST_BYTES: u32 = 1 << 20;
/// The largest atomic write the device may advertise, in bytes.
pub const MAX_ATOMIC_BYTES: u32 = MAX_REQUEST_BYTES;
/// The longest configfs name of a device: its disk is `tornblk<name>`, in a 32-byte field.
pub const MAX_NAME_LEN: usize = 31 - DISK_PREFIX.len();
/// The prefix of every disk name.
pub const DISK_PREFIX: &str = "tornblk";

/// A configuration value out of range, or a malformed command.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Invalid;

impl Invalid {
    /// The positive errno for this error.
    pub const fn errno(self) -> i32 {
        EINVAL
    }
}

/// Parses a decimal unsigned number, as written to a configfs attribute (surrounding white
/// space, such as `echo`'s newline, allowed).
pub fn parse_u64(text: &[u8]) -> Result<u64, Invalid> {
    let text = trim(text);
    if text.is_empty() {
        return Err(Invalid);
    }
    let mut value = 0u64;
    for &b in text {
        if !b.is_ascii_digit() {
            return Err(Invalid);
        }
        value = value
            .checked_mul(10)
            .and_then(|v| v.checked_add(u64::from(b - b'0')))
            .ok_or(Invalid)?;
    }
    Ok(value)
}

/// Parses a decimal number that fits a `u32`.
pub fn parse_u32(text: &[u8]) -> Result<u32, Invalid> {
    u32::try_from(parse_u64(text)?).map_err(|_| Invalid)
}

/// Parses `0` or `1`.
pub fn parse_bool(text: &[u8]) -> Result<bool, Invalid> {
    match parse_u64(text)? {
        0 => Ok(false),
        1 => Ok(true),
        _ => Err(Invalid),
    }
}

fn trim(text: &[u8]) -> &[u8] {
    let start = text
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(text.len());
    let end = text
        .iter()
        .rposition(|b| !b.is_ascii_whitespace())
        .map_or(start, |i| i + 1);
    text.get(start..end).unwrap_or(&[])
}

/// Checks a device size in MiB.
pub const fn check_size_mib(mib: u64) -> Result<u64, Invalid> {
    if mib < MIN_SIZE_MIB || mib > MAX_SIZE_MIB {
        Err(Invalid)
    } else {
        Ok(mib)
    }
}

/// Checks a logical block size: 512 or 4096 bytes.
pub const fn check_logical_block_size(bytes: u32) -> Result<u32, Invalid> {
    match bytes {
        512 | 4096 => Ok(bytes),
        _ => Err(Invalid),
    }
}

/// Checks a volatile write cache size in MiB.
pub const fn check_cache_mib(mib: u32) -> Result<u32, Invalid> {
    if mib < MIN_CACHE_MIB || mib > MAX_CACHE_MIB {
        Err(Invalid)
    } else {
        Ok(mib)
    }
}

/// Checks one atomic write limit as written: 0, or a multiple of 512 bytes up to
/// [`MAX_ATOMIC_BYTES`] (the relations between the limits are checked when the disk is made).
pub const fn check_atomic_bytes(bytes: u32) -> Result<u32, Invalid> {
    if bytes % 512 != 0 || bytes > MAX_ATOMIC_BYTES {
        Err(Invalid)
    } else {
        Ok(bytes)
    }
}

/// Checks a configfs name for a device, whose disk is `tornblk<name>`: 1 to [`MAX_NAME_LEN`]
/// ASCII letters, digits, `_` or `-`.
pub fn check_name(name: &[u8]) -> Result<(), Invalid> {
    let ok = !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && name
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(Invalid)
    }
}

/// Whether the volatile cache, holding `pending_writes` writes of `pending_bytes` bytes, must be
/// destaged (written back whole, as by a flush) before it can take a write of `bytes` bytes
/// with a capacity of `cache_bytes`. A write larger than the cache is taken into an empty one.
pub const fn must_destage(
    pending_writes: usize,
    pending_bytes: u64,
    bytes: u64,
    cache_bytes: u64,
) -> bool {
    pending_writes > 0
        && (pending_writes >= MAX_PENDING_WRITES
            || pending_bytes.saturating_add(bytes) > cache_bytes)
}

/// The seed of cut number `cut` (from 0) since the device's seed was last set.
pub const fn cut_seed(seed: u64, cut: u64) -> u64 {
    seed.wrapping_add(cut)
}

/// A power command, as written to the `command` attribute.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Command {
    /// `cut`: cut the power now.
    Cut,
    /// `cut_after N`: cut the power right after the next `N` writes complete.
    CutAfter(u64),
    /// `cut_random MAX`: cut the power after a number of writes in `1..=MAX` drawn from the seed
    /// of the next cut.
    CutRandom(u32),
    /// `disarm`: forget an armed cut.
    Disarm,
    /// `power_on`: make the crash image the content and serve I/O again.
    PowerOn,
}

impl Command {
    /// Parses a command: a word, and a decimal count for `cut_after` and `cut_random`. Counts
    /// out of range (0, or above [`MAX_WRITES_BEFORE_CUT`]) are refused here too.
    pub fn parse(text: &[u8]) -> Result<Self, Invalid> {
        let text = trim(text);
        let (word, arg) = match text.iter().position(|b| b.is_ascii_whitespace()) {
            Some(i) => (
                text.get(..i).unwrap_or(&[]),
                Some(text.get(i..).unwrap_or(&[])),
            ),
            None => (text, None),
        };
        let count = |arg: Option<&[u8]>| -> Result<u64, Invalid> {
            let n = parse_u64(arg.ok_or(Invalid)?)?;
            if n == 0 || n > MAX_WRITES_BEFORE_CUT {
                return Err(Invalid);
            }
            Ok(n)
        };
        match (word, arg) {
            (b"cut", None) => Ok(Self::Cut),
            (b"disarm", None) => Ok(Self::Disarm),
            (b"power_on", None) => Ok(Self::PowerOn),
            (b"cut_after", arg) => Ok(Self::CutAfter(count(arg)?)),
            (b"cut_random", arg) => Ok(Self::CutRandom(
                u32::try_from(count(arg)?).map_err(|_| Invalid)?,
            )),
            _ => Err(Invalid),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_parse_like_sysfs() {
        assert_eq!(parse_u64(b"42\n"), Ok(42));
        assert_eq!(parse_u64(b"  7 "), Ok(7));
        assert_eq!(parse_u64(b"18446744073709551615"), Ok(u64::MAX));
        for bad in [
            &b""[..],
            b"\n",
            b"-1",
            b"1x",
            b"0x10",
            b"18446744073709551616",
            b"1 2",
        ] {
            assert_eq!(parse_u64(bad), Err(Invalid), "{bad:?}");
        }
        assert_eq!(parse_u32(b"4294967296"), Err(Invalid));
        assert_eq!(parse_bool(b"1\n"), Ok(true));
        assert_eq!(parse_bool(b"0"), Ok(false));
        assert_eq!(parse_bool(b"2"), Err(Invalid));
        assert_eq!(Invalid.errno(), EINVAL);
    }

    #[test]
    fn configuration_ranges() {
        assert_eq!(check_size_mib(0), Err(Invalid));
        assert_eq!(check_size_mib(1), Ok(1));
        assert_eq!(check_size_mib(4096), Ok(4096));
        assert_eq!(check_size_mib(4097), Err(Invalid));
        assert_eq!(check_size_mib(u64::MAX), Err(Invalid));
        for lbs in [0, 256, 1024, 2048, 8192] {
            assert_eq!(check_logical_block_size(lbs), Err(Invalid));
        }
        assert_eq!(check_logical_block_size(512), Ok(512));
        assert_eq!(check_logical_block_size(4096), Ok(4096));
        assert_eq!(check_cache_mib(0), Err(Invalid));
        assert_eq!(check_cache_mib(65), Err(Invalid));
        assert_eq!(check_cache_mib(8), Ok(8));
        assert_eq!(check_atomic_bytes(0), Ok(0));
        assert_eq!(check_atomic_bytes(1000), Err(Invalid));
        assert_eq!(check_atomic_bytes(1 << 20), Ok(1 << 20));
        assert_eq!(check_atomic_bytes(2 << 20), Err(Invalid));
        assert_eq!(check_name(b"0"), Ok(()));
        assert_eq!(check_name(b"a_b-1"), Ok(()));
        assert_eq!(check_name(b""), Err(Invalid));
        assert_eq!(check_name(b"a b"), Err(Invalid));
        assert_eq!(check_name(&[b'x'; MAX_NAME_LEN]), Ok(()));
        assert_eq!(check_name(&[b'x'; MAX_NAME_LEN + 1]), Err(Invalid));
        assert_eq!(DISK_PREFIX.len() + MAX_NAME_LEN, 31);
    }

    #[test]
    fn the_cache_destages_when_full() {
        let mib = 1 << 20;
        assert!(!must_destage(0, 0, 2 * mib, mib));
        assert!(!must_destage(1, 4096, 4096, mib));
        assert!(!must_destage(255, mib - 4096, 4096, mib));
        assert!(must_destage(256, mib, 4096, mib));
        assert!(must_destage(1, 4096, mib, mib));
        assert!(must_destage(MAX_PENDING_WRITES, 0, 512, u64::MAX));
        assert!(!must_destage(MAX_PENDING_WRITES - 1, 0, 512, u64::MAX));
    }

    #[test]
    fn commands_parse() {
        assert_eq!(Command::parse(b"cut\n"), Ok(Command::Cut));
        assert_eq!(Command::parse(b"power_on"), Ok(Command::PowerOn));
        assert_eq!(Command::parse(b"disarm"), Ok(Command::Disarm));
        assert_eq!(Command::parse(b"cut_after 5\n"), Ok(Command::CutAfter(5)));
        assert_eq!(
            Command::parse(b"cut_after 4294967296"),
            Ok(Command::CutAfter(MAX_WRITES_BEFORE_CUT))
        );
        assert_eq!(Command::parse(b"cut_random 10"), Ok(Command::CutRandom(10)));
        for bad in [
            &b""[..],
            b"cut 1",
            b"cut_after",
            b"cut_after 0",
            b"cut_after 4294967297",
            b"cut_after x",
            b"cut_random 0",
            b"cut_random 4294967296",
            b"power_on now",
            b"reboot",
            b"CUT",
        ] {
            assert_eq!(Command::parse(bad), Err(Invalid), "{bad:?}");
        }
    }

    #[test]
    fn cut_seeds_follow_the_seed() {
        assert_eq!(cut_seed(7, 0), 7);
        assert_eq!(cut_seed(7, 3), 10);
        assert_eq!(cut_seed(u64::MAX, 1), 0);
    }
}
