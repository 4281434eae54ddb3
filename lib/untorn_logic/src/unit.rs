// SPDX-License-Identifier: GPL-2.0

//! Self-describing, versioned test units: what the crash campaign and the concurrency tests
//! write, and how they tell a whole unit from a torn one.
//!
//! A unit is a naturally aligned range of a file (4 KiB to 64 KiB in the campaign) written with
//! one untorn write. Every 512-byte sector of it carries a header naming the unit, the version
//! of the write, its own position in the unit, and a checksum of the whole sector, followed by
//! payload derived from those. Reading a unit back then tells, without any other record:
//!
//! - `Initial`: every sector is zero (never written: files start zero-filled);
//! - `Whole(version)`: every sector is from the same write;
//! - `Torn`: every sector is valid, but they come from different writes (or some are still
//!   zero); this is what an untorn write must never show;
//! - `Corrupt`: some sector is neither zero nor a valid sector of this unit (a bad checksum,
//!   another unit's data, a sector at the wrong place).

use super::rng;

/// The granularity at which a device may tear a write, and the size of a unit's sectors.
pub const SECTOR_SIZE: usize = 512;
/// The largest unit.
pub const MAX_UNIT_SIZE: usize = 1 << 20;

const MAGIC: u32 = u32::from_le_bytes(*b"UNTN");
const HEADER_SIZE: usize = 32;
// Header layout (little endian): magic u32, sector index u32, unit u64, version u64, checksum u64.
const CHECKSUM_AT: usize = 24;

/// Which write a unit holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UnitTag {
    /// The unit's index in its file (its offset divided by its size).
    pub unit: u64,
    /// The version of the write: 1 for the first write of a unit, then increasing. 0 is reserved
    /// for "never written".
    pub version: u64,
}

/// A buffer that cannot hold a unit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UnitError {
    /// Not a non-zero multiple of [`SECTOR_SIZE`] up to [`MAX_UNIT_SIZE`].
    BadSize,
    /// Version 0 means "never written" and cannot be written.
    ZeroVersion,
}

/// What reading a unit back shows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UnitState {
    /// Every sector is zero.
    Initial,
    /// Every sector is from the write of this version.
    Whole(u64),
    /// Valid sectors of different writes (a zero sector counts as version 0).
    Torn {
        /// The oldest version seen.
        oldest: u64,
        /// The newest version seen.
        newest: u64,
    },
    /// A sector that is neither zero nor a valid sector of this unit at this place.
    Corrupt {
        /// Its index in the unit.
        sector: usize,
    },
}

fn checked_sectors(len: usize) -> Result<usize, UnitError> {
    if len == 0 || len > MAX_UNIT_SIZE || len % SECTOR_SIZE != 0 {
        return Err(UnitError::BadSize);
    }
    Ok(len / SECTOR_SIZE)
}

/// FNV-1a over the sector with its checksum field taken as zero.
fn sector_checksum(sector: &[u8]) -> u64 {
    let mut hash = 0xcbf2_9ce4_8422_2325u64;
    for (i, &byte) in sector.iter().enumerate() {
        let b = if (CHECKSUM_AT..CHECKSUM_AT + 8).contains(&i) {
            0
        } else {
            byte
        };
        hash = (hash ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash
}

fn put_u32(buf: &mut [u8], at: usize, v: u32) {
    if let Some(dst) = buf.get_mut(at..at + 4) {
        dst.copy_from_slice(&v.to_le_bytes());
    }
}

fn put_u64(buf: &mut [u8], at: usize, v: u64) {
    if let Some(dst) = buf.get_mut(at..at + 8) {
        dst.copy_from_slice(&v.to_le_bytes());
    }
}

fn get_u32(buf: &[u8], at: usize) -> u32 {
    let mut b = [0u8; 4];
    if let Some(src) = buf.get(at..at + 4) {
        b.copy_from_slice(src);
    }
    u32::from_le_bytes(b)
}

fn get_u64(buf: &[u8], at: usize) -> u64 {
    let mut b = [0u8; 8];
    if let Some(src) = buf.get(at..at + 8) {
        b.copy_from_slice(src);
    }
    u64::from_le_bytes(b)
}

/// Fills `buf` (the whole unit) with the content of the write `tag`.
pub fn fill_unit(buf: &mut [u8], tag: UnitTag) -> Result<(), UnitError> {
    checked_sectors(buf.len())?;
    if tag.version == 0 {
        return Err(UnitError::ZeroVersion);
    }
    for (index, sector) in buf.chunks_exact_mut(SECTOR_SIZE).enumerate() {
        let index = index as u32;
        put_u32(sector, 0, MAGIC);
        put_u32(sector, 4, index);
        put_u64(sector, 8, tag.unit);
        put_u64(sector, 16, tag.version);
        put_u64(sector, CHECKSUM_AT, 0);
        let mut state = rng::hash(tag.unit, tag.version, u64::from(index), 0);
        for word in sector[HEADER_SIZE..].chunks_exact_mut(8) {
            state = rng::mix64(state);
            word.copy_from_slice(&state.to_le_bytes());
        }
        let sum = sector_checksum(sector);
        put_u64(sector, CHECKSUM_AT, sum);
    }
    Ok(())
}

/// What `buf`, read back from unit `unit`, holds.
pub fn inspect_unit(buf: &[u8], unit: u64) -> Result<UnitState, UnitError> {
    checked_sectors(buf.len())?;
    let mut oldest = u64::MAX;
    let mut newest = 0u64;
    for (index, sector) in buf.chunks_exact(SECTOR_SIZE).enumerate() {
        let version = if sector.iter().all(|&b| b == 0) {
            0
        } else {
            let valid = get_u32(sector, 0) == MAGIC
                && get_u32(sector, 4) as usize == index
                && get_u64(sector, 8) == unit
                && get_u64(sector, 16) != 0
                && get_u64(sector, CHECKSUM_AT) == sector_checksum(sector);
            if !valid {
                return Ok(UnitState::Corrupt { sector: index });
            }
            get_u64(sector, 16)
        };
        oldest = oldest.min(version);
        newest = newest.max(version);
    }
    Ok(match (oldest, newest) {
        (0, 0) => UnitState::Initial,
        (o, n) if o == n => UnitState::Whole(n),
        (oldest, newest) => UnitState::Torn { oldest, newest },
    })
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use std::vec;

    #[test]
    fn a_written_unit_reads_back_whole() {
        let mut buf = vec![0u8; 16384];
        assert_eq!(inspect_unit(&buf, 3), Ok(UnitState::Initial));
        fill_unit(
            &mut buf,
            UnitTag {
                unit: 3,
                version: 7,
            },
        )
        .unwrap();
        assert_eq!(inspect_unit(&buf, 3), Ok(UnitState::Whole(7)));
    }

    #[test]
    fn half_old_half_new_is_torn() {
        let mut old = vec![0u8; 8192];
        let mut new = vec![0u8; 8192];
        fill_unit(
            &mut old,
            UnitTag {
                unit: 1,
                version: 1,
            },
        )
        .unwrap();
        fill_unit(
            &mut new,
            UnitTag {
                unit: 1,
                version: 2,
            },
        )
        .unwrap();
        old[4096..].copy_from_slice(&new[4096..]);
        assert_eq!(
            inspect_unit(&old, 1),
            Ok(UnitState::Torn {
                oldest: 1,
                newest: 2
            })
        );
        // A partly written first version is torn against "never written".
        let mut fresh = vec![0u8; 8192];
        fresh[..512].copy_from_slice(&new[..512]);
        assert_eq!(
            inspect_unit(&fresh, 1),
            Ok(UnitState::Torn {
                oldest: 0,
                newest: 2
            })
        );
    }

    #[test]
    fn foreign_or_damaged_sectors_are_corrupt() {
        let mut a = vec![0u8; 4096];
        fill_unit(
            &mut a,
            UnitTag {
                unit: 0,
                version: 1,
            },
        )
        .unwrap();
        // Another unit's data.
        assert_eq!(inspect_unit(&a, 1), Ok(UnitState::Corrupt { sector: 0 }));
        // A flipped payload bit.
        let mut b = a.clone();
        b[2 * 512 + 100] ^= 1;
        assert_eq!(inspect_unit(&b, 0), Ok(UnitState::Corrupt { sector: 2 }));
        // Sectors swapped within the unit.
        let mut c = a.clone();
        let (first, rest) = c.split_at_mut(512);
        first.swap_with_slice(&mut rest[..512]);
        assert_eq!(inspect_unit(&c, 0), Ok(UnitState::Corrupt { sector: 0 }));
    }

    #[test]
    fn bad_buffers_are_refused() {
        let mut odd = vec![0u8; 1000];
        let tag = UnitTag {
            unit: 0,
            version: 1,
        };
        assert_eq!(fill_unit(&mut odd, tag), Err(UnitError::BadSize));
        assert_eq!(fill_unit(&mut [], tag), Err(UnitError::BadSize));
        let mut ok = vec![0u8; 512];
        assert_eq!(
            fill_unit(
                &mut ok,
                UnitTag {
                    unit: 0,
                    version: 0
                }
            ),
            Err(UnitError::ZeroVersion)
        );
    }
}
