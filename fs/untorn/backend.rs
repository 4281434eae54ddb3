// SPDX-License-Identifier: GPL-2.0

//! Where a file's data is stored: the seam between untorn's page cache and writethrough engine
//! (`aops.rs`, `writethrough.rs`), which are the same for every mount, and storage, which is
//! either a lower file (stacked mode, [`LowerFileBackend`]) or a block device that untorn writes
//! with its own bios (raw mode, [`DeviceBackend`]); see `Documentation/filesystems/untorn.rst`,
//! "Backends".
//!
//! The engine locks folios, copies and publishes; a backend only moves a locked, up-to-date
//! range to storage, fills folios from it, and makes it durable.

use kernel::{pr_warn_once, prelude::*};

use crate::{
    counters::Counters,
    kernel_ext::{
        bio::{BlockDevice, WriteKind},
        bounce::UserBounce,
        folio::{Folio, FolioLock},
        lower,
        ops::Statfs,
        vfs::{Dentry, Inode, LowerFile, LowerPath, SuperBlock},
    },
    untorn_logic::range::{round_down, round_up},
    Untorn,
};

/// The bytes that `folios` hold together.
pub(crate) fn total_size(folios: &[&dyn FolioLock]) -> usize {
    folios.iter().map(|f| f.size()).sum()
}

/// The storage of `inode`'s mount.
pub(crate) fn backend(inode: &Inode<Untorn>) -> &dyn Backend {
    inode.super_block().info().data.backend()
}

/// A kind of storage for untorn's files. A new kind implements this and is chosen at mount
/// (`super.rs`); nothing else changes.
pub(crate) trait Backend: Send + Sync {
    /// Prepares `inode`'s data path for an open (for writing if `write`) of `path`, and returns
    /// the atomic write unit limits `(min, max)` that storage offers for this file (0 if none),
    /// from which untorn's own are cut.
    fn open(&self, inode: &Inode<Untorn>, path: &LowerPath, write: bool) -> Result<(u32, u32)>;

    /// The file that serves `O_DIRECT` reads and writes of `inode` (after untorn's cache of
    /// the range was written back and dropped).
    fn direct_file<'a>(&'a self, inode: &'a Inode<Untorn>) -> Result<&'a LowerFile>;

    /// Whether storage can be written (a remount read-write is refused otherwise).
    fn writable(&self) -> bool {
        true
    }

    /// The atomic write limits `(unit_min, unit_max, unit_max_opt)` of storage for `statx`, if
    /// they are the same for every file; `None` if the lower file's own `statx` tells.
    fn fixed_atomic_limits(&self) -> Option<(u32, u32, u32)> {
        None
    }

    /// Whether a file's size is storage's (a device's): it never changes, writes end there,
    /// and truncate and `fallocate` are refused.
    fn fixed_size(&self) -> bool {
        false
    }

    /// The block that storage writes of this file are aligned to: a write that is not untorn
    /// covers its range rounded out to it (up to the end of file).
    fn io_block(&self, inode: &Inode<Untorn>) -> u32;

    /// Fills the contiguous locked `folios` (at most [`IO_FOLIOS_MAX`]) from storage with one
    /// read: at least the first `valid` bytes from the first folio's file position, which lie
    /// below the end of file. Returns the bytes filled.
    fn read(&self, inode: &Inode<Untorn>, folios: &[&dyn FolioLock], valid: usize)
        -> Result<usize>;

    /// Writes bytes `offset..offset + len` of a folio that is locked or under writeback.
    fn write_folio(
        &self,
        inode: &Inode<Untorn>,
        folio: &Folio,
        offset: usize,
        len: usize,
    ) -> Result;

    /// Writes the first `len` bytes of the contiguous `folios` (at most [`IO_FOLIOS_MAX`]),
    /// which are under writeback, from the first one's file position; only the last may be
    /// written in part (it holds the end of file). By default a write per folio.
    fn write_folios(&self, inode: &Inode<Untorn>, folios: &[&Folio], len: usize) -> Result {
        let mut left = len;
        for folio in folios {
            let piece = left.min(folio.size());
            if piece == 0 {
                break;
            }
            self.write_folio(inode, folio, 0, piece)?;
            left -= piece;
        }
        Ok(())
    }

    /// An untorn write: all of `bounce` at `pos` or none of it, on storage when this returns
    /// (durable too if `sync_flags` has `IOCB_DSYNC` or `IOCB_SYNC`). Refused, with nothing
    /// written, if storage cannot write it untorn.
    fn write_untorn(
        &self,
        inode: &Inode<Untorn>,
        pos: i64,
        bounce: &UserBounce<'_>,
        sync_flags: i32,
    ) -> Result;

    /// A plain write of the first `len` bytes of `bounce` at `pos` (aligned to
    /// [`Self::io_block`], or ending at the end of file), on storage when this returns.
    fn write_range(
        &self,
        inode: &Inode<Untorn>,
        pos: i64,
        bounce: &UserBounce<'_>,
        len: usize,
        sync_flags: i32,
    ) -> Result;

    /// Makes what was written of `start..=end` durable (after writeback): `fsync`.
    fn sync_range(&self, inode: &Inode<Untorn>, start: i64, end: i64, datasync: bool) -> Result;

    /// Makes everything written durable: `syncfs`.
    fn sync_fs(&self, sb: &SuperBlock<Untorn>) -> Result;

    /// `statfs` (the magic is set by the caller).
    fn statfs(&self, dentry: &Dentry<Untorn>, buf: &mut Statfs) -> Result;
}

/// Stacked mode: each file's data is its lower file's, read and written with direct I/O.
///
/// Direct I/O needs offsets and lengths aligned to the lower's block size `L`. Folios are
/// aligned (a folio is at least a page, and `L` is at most a page), except the one holding the
/// end of the file: of it, the aligned part goes direct and the last partial block is written
/// buffered (the lower's page cache then holds that one block until its own writeback). A lower
/// without direct I/O gets buffered I/O throughout. The lower file's size is therefore exact.
pub(crate) struct LowerFileBackend;

impl LowerFileBackend {
    /// The lower's direct I/O alignment for this file, or `None` if direct I/O is not possible.
    fn direct_alignment(inode: &Inode<Untorn>, lower: &LowerFile) -> Option<u32> {
        let align = inode.lower().block_size();
        (lower.can_direct_io() && align > 0 && align as usize <= kernel::page::PAGE_SIZE)
            .then_some(align)
    }

    /// Of a write of `len` bytes from an aligned position, how many go direct: all whole lower
    /// blocks; the rest (a tail block at end of file, or everything without direct I/O) is
    /// written buffered.
    fn direct_part(inode: &Inode<Untorn>, lower: &LowerFile, len: usize) -> Result<usize> {
        Ok(match Self::direct_alignment(inode, lower) {
            Some(align) => round_down(len as u64, align).map_err(|_| EINVAL)? as usize,
            None => 0,
        })
    }

    /// Writes `len` bytes of the folio, failing on a short write (a full lower device).
    fn write_all(
        lower: &LowerFile,
        folio: &Folio,
        offset: usize,
        len: usize,
        pos: i64,
        direct: bool,
    ) -> Result {
        let written = lower.write_folio(folio, offset, len, pos, direct)?;
        if written != len {
            return Err(ENOSPC);
        }
        Ok(())
    }

    /// Writes the first `len` bytes of the contiguous `folios` with one write, failing on a
    /// short write.
    fn write_folios_all(lower: &LowerFile, folios: &[&Folio], len: usize, direct: bool) -> Result {
        let pos = folios.first().ok_or(EINVAL)?.pos();
        if lower.write_folios(folios, len, pos, direct)? != len {
            return Err(ENOSPC);
        }
        Ok(())
    }

    /// Writes `len` bytes of `bounce` from `offset`, failing on a short write.
    fn write_bounce_all(
        lower: &LowerFile,
        pos: i64,
        bounce: &UserBounce<'_>,
        offset: usize,
        len: usize,
        direct: bool,
        sync_flags: i32,
    ) -> Result {
        if lower.write_bounce(pos, bounce, offset, len, direct, sync_flags)? != len {
            return Err(EIO);
        }
        Ok(())
    }
}

impl Backend for LowerFileBackend {
    fn open(&self, inode: &Inode<Untorn>, path: &LowerPath, write: bool) -> Result<(u32, u32)> {
        inode.open_data_file(path, write)?;
        let data = inode.data_file().ok_or(EBADF)?;
        if !data.can_direct_io() {
            // Untorn writes are the lower's atomic direct writes.
            return Ok((0, 0));
        }
        let (min, max, _) = inode
            .super_block()
            .as_mounter(|| lower::atomic_write_limits(path))?;
        Ok((min, max))
    }

    fn direct_file<'a>(&'a self, inode: &'a Inode<Untorn>) -> Result<&'a LowerFile> {
        inode.data_file().ok_or(EBADF)
    }

    fn io_block(&self, inode: &Inode<Untorn>) -> u32 {
        inode
            .data_file()
            .and_then(|lower| Self::direct_alignment(inode, lower))
            .unwrap_or(1)
    }

    fn read(
        &self,
        inode: &Inode<Untorn>,
        folios: &[&dyn FolioLock],
        valid: usize,
    ) -> Result<usize> {
        let lower = inode.data_file().ok_or(EIO)?;
        let pos = folios.first().ok_or(EINVAL)?.pos();
        let sb = inode.super_block();
        match Self::direct_alignment(inode, lower) {
            Some(align) => {
                let len = round_up(valid as u64, align)
                    .map_err(|_| EINVAL)?
                    .min(total_size(folios) as u64) as usize;
                sb.as_mounter(|| lower.read_folios(folios, len, pos, true))
            }
            None => sb.as_mounter(|| lower.read_folios(folios, valid, pos, false)),
        }
    }

    fn write_folio(
        &self,
        inode: &Inode<Untorn>,
        folio: &Folio,
        offset: usize,
        len: usize,
    ) -> Result {
        let lower = inode.data_file_rw().ok_or(EBADF)?;
        let pos = folio.pos() + offset as i64;
        let direct = Self::direct_part(inode, lower, len)?;
        inode.super_block().as_mounter(|| -> Result {
            if direct > 0 {
                Self::write_all(lower, folio, offset, direct, pos, true)?;
            }
            if direct < len {
                let tail = (offset + direct, len - direct, pos + direct as i64);
                Self::write_all(lower, folio, tail.0, tail.1, tail.2, false)?;
            }
            Ok(())
        })
    }

    fn write_folios(&self, inode: &Inode<Untorn>, folios: &[&Folio], len: usize) -> Result {
        let lower = inode.data_file_rw().ok_or(EBADF)?;
        let direct = Self::direct_part(inode, lower, len)?;
        inode.super_block().as_mounter(|| -> Result {
            if direct == 0 {
                // No direct I/O, or less than a lower block: all of it buffered.
                return Self::write_folios_all(lower, folios, len, false);
            }
            Self::write_folios_all(lower, folios, direct, true)?;
            if direct < len {
                // The end of file's partial block, buffered (see above). The folios before
                // the last are whole pages, so it lies in the last.
                let last = folios.last().ok_or(EINVAL)?;
                let pos = folios[0].pos() + direct as i64;
                let offset = usize::try_from(pos - last.pos()).map_err(|_| EINVAL)?;
                Self::write_all(lower, last, offset, len - direct, pos, false)?;
            }
            Ok(())
        })
    }

    fn write_untorn(
        &self,
        inode: &Inode<Untorn>,
        pos: i64,
        bounce: &UserBounce<'_>,
        sync_flags: i32,
    ) -> Result {
        let lower = inode.data_file_rw().ok_or(EBADF)?;
        let written = inode
            .super_block()
            .as_mounter(|| lower.write_atomic(pos, bounce, sync_flags))?;
        if written != bounce.size() {
            // `iomap` never writes part of an atomic write; if a lower did, neither the old
            // nor the new data is known to be what the device has.
            pr_warn_once!("untorn: a lower atomic write was short\n");
            Counters::inc(&inode.super_block().info().data.counters().err_short);
            return Err(EIO);
        }
        Ok(())
    }

    fn write_range(
        &self,
        inode: &Inode<Untorn>,
        pos: i64,
        bounce: &UserBounce<'_>,
        len: usize,
        sync_flags: i32,
    ) -> Result {
        let lower = inode.data_file_rw().ok_or(EBADF)?;
        let direct = Self::direct_part(inode, lower, len)?;
        inode.super_block().as_mounter(|| -> Result {
            if direct > 0 {
                Self::write_bounce_all(lower, pos, bounce, 0, direct, true, sync_flags)?;
            }
            if direct < len {
                let tail_pos = pos + direct as i64;
                let tail = len - direct;
                Self::write_bounce_all(lower, tail_pos, bounce, direct, tail, false, sync_flags)?;
                // Writethrough: the tail block must reach the device too, not only the
                // lower's page cache.
                lower.write_and_wait(tail_pos, pos + len as i64 - 1)?;
            }
            Ok(())
        })
    }

    fn sync_range(&self, inode: &Inode<Untorn>, start: i64, end: i64, datasync: bool) -> Result {
        let lower = inode.data_file().ok_or(EBADF)?;
        inode
            .super_block()
            .as_mounter(|| lower.fsync_range(start, end, datasync))
    }

    fn sync_fs(&self, sb: &SuperBlock<Untorn>) -> Result {
        sb.as_mounter(|| sb.sync_lower())
    }

    fn statfs(&self, dentry: &Dentry<Untorn>, buf: &mut Statfs) -> Result {
        let path = dentry.lower_path()?;
        dentry.super_block().as_mounter(|| buf.fill_from(&path))
    }
}

/// Raw mode: the one file's data is a block device's, which untorn reads and writes with bios
/// it builds itself (`rust/kernel_ext/bio.rs`). The namespace (one directory, one file) lives
/// in a private tmpfs (`super.rs`), so every name and attribute operation is stacked mode's.
pub(crate) struct DeviceBackend {
    device: BlockDevice,
}

impl DeviceBackend {
    pub(crate) fn new(device: BlockDevice) -> Self {
        Self { device }
    }

    fn counters(inode: &Inode<Untorn>) -> &Counters {
        inode.super_block().info().data.counters()
    }

    /// Writes the first `len` bytes of `bounce` at `pos`: one `REQ_ATOMIC` bio if `atomic`, with
    /// `REQ_FUA` for `O_DSYNC`/`O_SYNC` (`sync_flags`).
    fn write_bounce(
        &self,
        inode: &Inode<Untorn>,
        pos: i64,
        bounce: &UserBounce<'_>,
        len: usize,
        atomic: bool,
        sync_flags: i32,
    ) -> Result {
        let kind = WriteKind {
            atomic,
            fua: sync_flags != 0,
        };
        let pos = u64::try_from(pos).map_err(|_| EINVAL)?;
        let result = self.device.write_bounce(bounce, 0, len, pos, kind);
        if atomic && result.is_ok() {
            Counters::inc(&Self::counters(inode).device_atomic_writes);
        }
        Self::account(inode, result, len, true)
    }

    /// Counts a device request of `bytes`, and an error if it failed.
    fn account(inode: &Inode<Untorn>, result: Result, bytes: usize, write: bool) -> Result {
        let counters = Self::counters(inode);
        match result {
            Ok(()) if write => Counters::add(
                &counters.device_writes,
                &counters.device_write_bytes,
                bytes as u64,
            ),
            Ok(()) => Counters::add(
                &counters.device_reads,
                &counters.device_read_bytes,
                bytes as u64,
            ),
            Err(_) => Counters::inc(&counters.device_errors),
        }
        result
    }
}

impl Backend for DeviceBackend {
    fn open(&self, inode: &Inode<Untorn>, path: &LowerPath, write: bool) -> Result<(u32, u32)> {
        // The tmpfs file keeps the attributes (the access time, the mode's extended attribute);
        // the data is the device's.
        inode.open_data_file(path, write)?;
        Ok(self
            .fixed_atomic_limits()
            .map_or((0, 0), |(min, max, _)| (min, max)))
    }

    fn direct_file<'a>(&'a self, _inode: &'a Inode<Untorn>) -> Result<&'a LowerFile> {
        // Served by the block device's own file operations (`block/fops.c`).
        Ok(self.device.file())
    }

    fn writable(&self) -> bool {
        self.device.file().can_write()
    }

    fn fixed_atomic_limits(&self) -> Option<(u32, u32, u32)> {
        // No `unit_max_opt`, as the device node's own `statx` (`bdev_statx()`): a device has
        // no slower path above some size.
        Some(
            self.device
                .atomic_limits()
                .map_or((0, 0, 0), |l| (l.unit_min(), l.unit_max(), 0)),
        )
    }

    fn fixed_size(&self) -> bool {
        true
    }

    fn io_block(&self, _inode: &Inode<Untorn>) -> u32 {
        self.device.logical_block_size()
    }

    fn read(
        &self,
        inode: &Inode<Untorn>,
        folios: &[&dyn FolioLock],
        valid: usize,
    ) -> Result<usize> {
        // The device's size is a multiple of its block, which is at most a page.
        let block = self.device.logical_block_size();
        let len = round_up(valid as u64, block)
            .map_err(|_| EINVAL)?
            .min(total_size(folios) as u64) as usize;
        let pos = u64::try_from(folios.first().ok_or(EINVAL)?.pos()).map_err(|_| EINVAL)?;
        let result = self.device.read_folios(folios, len, pos);
        Self::account(inode, result, len, false)?;
        Ok(len)
    }

    fn write_folio(
        &self,
        inode: &Inode<Untorn>,
        folio: &Folio,
        offset: usize,
        len: usize,
    ) -> Result {
        let pos = u64::try_from(folio.pos() + offset as i64).map_err(|_| EINVAL)?;
        let result = self.device.write_folio(folio, offset, len, pos, false);
        Self::account(inode, result, len, true)
    }

    fn write_untorn(
        &self,
        inode: &Inode<Untorn>,
        pos: i64,
        bounce: &UserBounce<'_>,
        sync_flags: i32,
    ) -> Result {
        self.write_bounce(inode, pos, bounce, bounce.size(), true, sync_flags)
    }

    fn write_range(
        &self,
        inode: &Inode<Untorn>,
        pos: i64,
        bounce: &UserBounce<'_>,
        len: usize,
        sync_flags: i32,
    ) -> Result {
        self.write_bounce(inode, pos, bounce, len, false, sync_flags)
    }

    fn sync_range(&self, inode: &Inode<Untorn>, _start: i64, _end: i64, _datasync: bool) -> Result {
        let result = self.device.flush();
        if result.is_ok() {
            Counters::inc(&Self::counters(inode).device_flushes);
        }
        result
    }

    fn sync_fs(&self, sb: &SuperBlock<Untorn>) -> Result {
        let result = self.device.flush();
        if result.is_ok() {
            Counters::inc(&sb.info().data.counters().device_flushes);
        }
        result
    }

    fn statfs(&self, dentry: &Dentry<Untorn>, buf: &mut Statfs) -> Result {
        let path = dentry.lower_path()?;
        dentry.super_block().as_mounter(|| buf.fill_from(&path))?;
        // The device's capacity, all of it in use by the one file.
        let block = u64::from(self.device.logical_block_size());
        let blocks = self.device.size().checked_div(block).unwrap_or(0);
        buf.set_space(block, blocks, 0, 1, 0);
        Ok(())
    }
}
