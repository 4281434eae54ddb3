// SPDX-License-Identifier: GPL-2.0

//! The per-file writethrough mode (persistent, in a lower extended attribute, set by ioctl) and
//! the atomic write limits of a file.

use core::sync::atomic::{AtomicU32, AtomicU8, Ordering};

use kernel::{
    prelude::*,
    uaccess::{UserPtr, UserSlice},
};

use crate::{
    kernel_ext::{
        lower,
        ops::{InValue, OutBuffer, UpperFile},
        publication::WINDOW,
        vfs::{Inode, LowerDentry},
    },
    untorn_logic::{
        atomic_write::AtomicWriteLimits,
        mount_options::FileMode,
        uapi::{UntornMode, UNTORN_IOC_GET_MODE, UNTORN_IOC_SET_MODE},
    },
    Untorn,
};

/// The mode is not read from the lower yet.
const MODE_UNKNOWN: u8 = u8::MAX;

/// The smallest untorn write: a sector, as for direct I/O.
const UNIT_MIN: u32 = 512;

/// What untorn keeps per inode.
pub(crate) struct UntornInode {
    /// The persistent mode (a [`FileMode`] value), or [`MODE_UNKNOWN`].
    mode: AtomicU8,
    /// The atomic write limits, refreshed at every open: what the lower offers for this file,
    /// within what one bounce buffer carries.
    unit_min: AtomicU32,
    unit_max: AtomicU32,
    /// Writethrough writes to this file between taking and dropping the inode lock.
    writethrough_in_flight: AtomicU32,
}

impl UntornInode {
    pub(crate) const fn new() -> Self {
        Self {
            mode: AtomicU8::new(MODE_UNKNOWN),
            unit_min: AtomicU32::new(0),
            unit_max: AtomicU32::new(0),
            writethrough_in_flight: AtomicU32::new(0),
        }
    }

    /// Runs `write`, a writethrough write under the inode lock, counted as in flight; returns
    /// its result and whether another writethrough write to this file was in flight when it
    /// began.
    pub(crate) fn writethrough<R>(&self, write: impl FnOnce() -> R) -> (R, bool) {
        let others = self.writethrough_in_flight.fetch_add(1, Ordering::Relaxed);
        let result = write();
        self.writethrough_in_flight.fetch_sub(1, Ordering::Relaxed);
        (result, others > 0)
    }

    /// The limits untorn honours for this file (none before the first open).
    pub(crate) fn limits(&self) -> AtomicWriteLimits {
        AtomicWriteLimits::new(
            self.unit_min.load(Ordering::Relaxed),
            self.unit_max.load(Ordering::Relaxed),
        )
        .unwrap_or(AtomicWriteLimits::NONE)
    }

    fn known_mode(&self) -> Option<FileMode> {
        match self.mode.load(Ordering::Acquire) {
            MODE_UNKNOWN => None,
            value => FileMode::from_u32(u32::from(value)).ok(),
        }
    }

    fn set_mode(&self, mode: FileMode) {
        self.mode.store(mode.as_u32() as u8, Ordering::Release);
    }
}

/// `statx`'s `atomic_write_segments_max`: untorn copies any iovec into its bounce buffer.
pub(crate) const SEGMENTS_MAX: u32 = 1024;

/// The limits untorn honours for lower limits `min..=max`: within `[UNIT_MIN, WINDOW]` (a
/// bounce buffer's pages always fit one bio).
pub(crate) fn untorn_limits(min: u32, max: u32) -> AtomicWriteLimits {
    let ours = AtomicWriteLimits::new(UNIT_MIN, WINDOW as u32).unwrap_or(AtomicWriteLimits::NONE);
    AtomicWriteLimits::new(min, max)
        .unwrap_or(AtomicWriteLimits::NONE)
        .intersect(&ours)
}

/// Sets the file's limits (at every open) from storage's limits `min..=max`, within
/// `[UNIT_MIN, WINDOW]` (a bounce buffer's pages always fit one bio).
pub(crate) fn set_limits(inode: &Inode<Untorn>, min: u32, max: u32) {
    let limits = untorn_limits(min, max);
    let state = inode.data();
    state.unit_min.store(limits.unit_min(), Ordering::Relaxed);
    state.unit_max.store(limits.unit_max(), Ordering::Relaxed);
}

/// The file's persistent mode, read from the lower extended attribute the first time.
pub(crate) fn persistent(inode: &Inode<Untorn>, lower_dentry: &LowerDentry) -> Result<FileMode> {
    if let Some(mode) = inode.data().known_mode() {
        return Ok(mode);
    }
    let mut value = [0u8; 16];
    let read = inode.super_block().as_mounter(|| {
        lower::getxattr(
            lower_dentry,
            FileMode::XATTR_NAME,
            OutBuffer::from_slice(&mut value),
        )
    });
    let mode = match read {
        Ok(len) => FileMode::from_xattr(&value[..len.min(value.len())]),
        // No attribute, a lower without `trusted.` attributes, or a longer (unknown) value.
        Err(e) if e == ENODATA || e == EOPNOTSUPP || e == ERANGE => FileMode::Off,
        Err(e) => return Err(e),
    };
    inode.data().set_mode(mode);
    Ok(mode)
}

/// The mode that decides what a write does: the mount's policy applied to the file's mode.
pub(crate) fn effective(inode: &Inode<Untorn>, lower_dentry: &LowerDentry) -> Result<FileMode> {
    let policy = inode.super_block().info().data.policy();
    Ok(persistent(inode, lower_dentry)?.effective(policy))
}

/// `ioctl`: `UNTORN_IOC_GET_MODE` and `UNTORN_IOC_SET_MODE`; anything else `ENOTTY`.
pub(crate) fn ioctl(
    file: &UpperFile,
    inode: &Inode<Untorn>,
    cmd: u32,
    arg: usize,
) -> Result<isize> {
    let user = UserSlice::new(UserPtr::from_addr(arg), UntornMode::SIZE);
    let lower_dentry = file.dentry::<Untorn>().lower()?;
    match cmd {
        UNTORN_IOC_GET_MODE => {
            let mode = persistent(inode, lower_dentry)?;
            let policy = inode.super_block().info().data.policy();
            let answer = UntornMode {
                mode: mode.as_u32(),
                effective: mode.effective(policy).as_u32(),
                ..Default::default()
            };
            user.writer().write_slice(&answer.to_bytes())?;
            Ok(0)
        }
        UNTORN_IOC_SET_MODE => {
            let mut bytes = [0u8; UntornMode::SIZE];
            user.reader().read_slice(&mut bytes)?;
            let mode = UntornMode::from_bytes(&bytes)
                .requested()
                .map_err(|_| EINVAL)?;
            if !file.caller_owns_or_capable() {
                return Err(EPERM);
            }
            file.with_write_access(|| set_mode(inode, lower_dentry, mode))?;
            Ok(0)
        }
        _ => Err(ENOTTY),
    }
}

/// Stores the mode on the lower, then in memory. A file switched to writethrough starts clean:
/// its dirty folios are written back.
fn set_mode(inode: &Inode<Untorn>, lower_dentry: &LowerDentry, mode: FileMode) -> Result {
    inode.with_lock(|| {
        let sb = inode.super_block();
        sb.as_mounter_writing(|| match mode {
            FileMode::Writethrough => lower::setxattr(
                lower_dentry,
                FileMode::XATTR_NAME,
                InValue::from_slice(FileMode::XATTR_WRITETHROUGH),
                0,
            ),
            FileMode::Off => {
                match lower::setxattr(lower_dentry, FileMode::XATTR_NAME, InValue::removal(), 0) {
                    Err(e) if e == ENODATA => Ok(()),
                    r => r,
                }
            }
        })?;
        inode.data().set_mode(mode);
        if mode == FileMode::Writethrough {
            inode.write_and_wait(0, i64::MAX)?;
        }
        Ok(())
    })
}
