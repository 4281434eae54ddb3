// SPDX-License-Identifier: GPL-2.0

//! File operations: reads and writes through untorn's page cache, `O_DIRECT` passed to the lower
//! file, `fsync`, `fallocate`, and directories read from the lower directory.

use kernel::{bindings, prelude::*};

use crate::{
    backend::backend,
    counters::Counters,
    kernel_ext::{
        bindings as ext,
        ops::{Kiocb, UpperFile, UserIter},
        publication::{Slot, WINDOW},
        vfs::{DirContext, Inode, LowerFile},
    },
    mode,
    untorn_logic::mount_options::FileMode,
    writethrough, Untorn,
};

pub(crate) fn open(inode: &Inode<Untorn>, file: &UpperFile) -> Result {
    let path = file_lower_path(inode, file)?;
    let backend = backend(inode);
    let (min, max) = backend.open(inode, &path, file.is_writable())?;
    if backend.direct_file(inode)?.can_direct_io() {
        // The VFS refuses `O_DIRECT` (at open and by `fcntl`) without this.
        file.set_mode_flags(ext::UNTORN_FMODE_CAN_ODIRECT);
    }
    mode::set_limits(inode, min, max);
    if file.is_writable() && inode.data().limits().is_supported() {
        // The VFS refuses `RWF_ATOMIC` without this (`EOPNOTSUPP`).
        file.set_mode_flags(ext::UNTORN_FMODE_CAN_ATOMIC_WRITE);
    }
    Ok(())
}

fn file_lower_path(
    _inode: &Inode<Untorn>,
    file: &UpperFile,
) -> Result<crate::kernel_ext::vfs::LowerPath> {
    file.dentry::<Untorn>().lower_path()
}

pub(crate) fn open_dir(inode: &Inode<Untorn>, file: &UpperFile) -> Result {
    let path = file_lower_path(inode, file)?;
    let flags = bindings::O_RDONLY | bindings::O_DIRECTORY | bindings::O_LARGEFILE;
    let lower = LowerFile::open(&path, flags, &inode.super_block().info().creds)?;
    file.set_lower(lower);
    Ok(())
}

pub(crate) fn read_iter(kiocb: &mut Kiocb<'_, Untorn>, iter: &mut UserIter) -> Result<usize> {
    if iter.count() == 0 {
        return Ok(0);
    }
    if !kiocb.is_direct() {
        return read_windows(kiocb, iter);
    }
    // O_DIRECT: storage's file serves it, after all our dirty folios reached it (not only those
    // of the range: the lower's size must be ours, or a read in a hole below our end of file
    // would end early).
    let inode = kiocb.inode();
    inode.write_and_wait(0, i64::MAX)?;
    let counters = inode.super_block().info().data.counters();
    Counters::inc(&counters.direct_reads);
    let lower = backend(inode).direct_file(inode)?;
    let read = inode
        .super_block()
        .as_mounter(|| kiocb.lower_direct(lower, iter, false))?;
    // The data file is `O_NOATIME`: the access time is ours to update, as `filemap_read()`
    // does for buffered reads.
    kiocb.file().accessed();
    Ok(read)
}

/// Buffered reads, one publication window at a time: a window is read again if a writethrough
/// write published into it meanwhile, so no read returns half of an untorn write.
fn read_windows(kiocb: &mut Kiocb<'_, Untorn>, iter: &mut UserIter) -> Result<usize> {
    let inode = kiocb.inode();
    let data = &inode.super_block().info().data;
    let ino = inode.lower().ino();
    let mut total = 0;
    while iter.count() > 0 {
        let pos = kiocb.pos();
        let window_left = (WINDOW - pos as u64 % WINDOW) as usize;
        let max = iter.count().min(window_left);
        let slot = Slot::of(ino, pos as u64);
        let done = loop {
            let seq = data.publication().read_begin(slot);
            let done = match kiocb.filemap_read_at_most(iter, max) {
                Ok(done) => done,
                Err(e) if total == 0 => return Err(e),
                Err(_) => return Ok(total),
            };
            if !data.publication().read_retry(slot, seq) {
                break done;
            }
            // SAFETY: The read above consumed `done` bytes of `iter`.
            unsafe { kiocb.unread(iter, done) };
            Counters::inc(&data.counters().reader_retries);
        };
        total += done;
        if done < max {
            break;
        }
    }
    Ok(total)
}

pub(crate) fn write_iter(kiocb: &mut Kiocb<'_, Untorn>, iter: &mut UserIter) -> Result<usize> {
    let result = write_iter_checked(kiocb, iter);
    match result {
        // The file is the device: writes end where it ends, with the block device's errno
        // (the VFS says `EFBIG` at `s_maxbytes`).
        Err(e) if e == EFBIG && backend(kiocb.inode()).fixed_size() => Err(ENOSPC),
        other => other,
    }
}

fn write_iter_checked(kiocb: &mut Kiocb<'_, Untorn>, iter: &mut UserIter) -> Result<usize> {
    let inode = kiocb.inode();
    if !kiocb.is_direct() {
        let lower_dentry = kiocb.file().dentry::<Untorn>().lower()?;
        if kiocb.is_atomic() || mode::effective(inode, lower_dentry)? == FileMode::Writethrough {
            return writethrough::write(kiocb, iter);
        }
    }
    let written = inode.with_lock(|| -> Result<usize> {
        if kiocb.write_checks(iter)? == 0 {
            return Ok(0);
        }
        kiocb.file_modified()?;
        let old_size = inode.size();
        if kiocb.pos() > old_size {
            inode.zero_beyond_eof(old_size);
        }
        if kiocb.is_direct() {
            write_direct(kiocb, iter)
        } else {
            let written = kiocb.perform_write(iter)?;
            let counters = inode.super_block().info().data.counters();
            Counters::add(&counters.writes, &counters.write_bytes, written as u64);
            Ok(written)
        }
    })?;
    if written == 0 {
        return Ok(0);
    }
    kiocb.write_sync(written)
}

/// `O_DIRECT` write: our cached copy of the range is written back and dropped before, and
/// dropped again after (a racing mmap fault may have read old data), as the VFS does for
/// filesystems with their own direct I/O.
fn write_direct(kiocb: &mut Kiocb<'_, Untorn>, iter: &mut UserIter) -> Result<usize> {
    let inode = kiocb.inode();
    let (start, end) = (kiocb.pos(), kiocb.pos() + iter.count() as i64 - 1);
    inode.write_and_wait(start, end)?;
    let counters = inode.super_block().info().data.counters();
    Counters::inc(&counters.direct_writes);
    match inode.invalidate(start, end) {
        Ok(()) => {}
        Err(e) if e == EBUSY => return write_direct_fallback(kiocb, iter),
        Err(e) => return Err(e),
    }
    let lower = backend(inode).direct_file(inode)?;
    let written = inode
        .super_block()
        .as_mounter(|| kiocb.lower_direct(lower, iter, true))?;
    // A failure here only means a mapped folio was re-read meanwhile; the next read sees the
    // lower's data either way once it is dropped, so it is not the write's error.
    let _ = inode.invalidate(start, end);
    if kiocb.pos() > inode.size() {
        inode.set_size(kiocb.pos());
    }
    Ok(written)
}

/// A folio of the range was dirtied again through a shared mapping between its write-back and
/// its invalidation, so it cannot be dropped: the write goes through the page cache instead, and
/// its range is written back and dropped, as the kernel's own fallback does when a direct write
/// cannot invalidate the page cache (`-ENOTBLK` from `fs/iomap/direct-io.c`, then
/// `direct_write_fallback()`).
fn write_direct_fallback(kiocb: &mut Kiocb<'_, Untorn>, iter: &mut UserIter) -> Result<usize> {
    let inode = kiocb.inode();
    let start = kiocb.pos();
    let written = kiocb.perform_write(iter)?;
    if written > 0 {
        let end = start + written as i64 - 1;
        inode.write_and_wait(start, end)?;
        // As after a direct write: a folio dirtied again meanwhile stays, which is no error.
        let _ = inode.invalidate(start, end);
    }
    Ok(written)
}

/// `fsync`: our dirty folios of the range go to storage, which is then made durable.
pub(crate) fn fsync(
    file: &UpperFile,
    inode: &Inode<Untorn>,
    start: i64,
    end: i64,
    datasync: bool,
) -> Result {
    file.write_and_wait(start, end)?;
    backend(inode).sync_range(inode, start, end, datasync)
}

/// `fallocate`: our page cache is written back first, so the lower's size and data are ours;
/// after the lower call the size follows the lower's and the touched range is re-read.
pub(crate) fn fallocate(
    file: &UpperFile,
    inode: &Inode<Untorn>,
    mode: i32,
    offset: i64,
    len: i64,
) -> Result {
    let _ = file;
    if backend(inode).fixed_size() {
        // A device's blocks are all allocated, and cannot be punched or shifted.
        return Err(EOPNOTSUPP);
    }
    inode.with_lock(|| {
        inode.write_and_wait(0, i64::MAX)?;
        let lower = inode.data_file_rw().ok_or(EBADF)?;
        inode
            .super_block()
            .as_mounter(|| lower.fallocate(mode, offset, len))?;
        if mode & !(crate::kernel_ext::bindings::UNTORN_FALLOC_FL_KEEP_SIZE as i32) != 0 {
            // Punch, zero, collapse and insert change data; collapse and insert shift all that
            // follows. Our folios there are clean (written back above): drop them whole, so
            // the next read takes the lower's data.
            inode.invalidate(offset, i64::MAX)?;
        }
        let lower_size = inode.lower().size();
        if lower_size != inode.size() {
            if lower_size > inode.size() {
                inode.zero_beyond_eof(inode.size());
            }
            inode.set_size(lower_size);
        }
        crate::kernel_ext::ops::copy_attributes(inode);
        Ok(())
    })
}

/// `readdir`: the lower directory's entries, at our position (lower positions are cookies that
/// we pass through, so `telldir`/`seekdir` work).
pub(crate) fn iterate_shared(file: &UpperFile, ctx: &mut DirContext) -> Result {
    let lower = file.lower().ok_or(EBADF)?;
    lower.set_pos(ctx.pos());
    let sb = file.dentry::<Untorn>().super_block();
    sb.as_mounter(|| lower.iterate_dir(ctx))
}

pub(crate) fn llseek_dir(file: &UpperFile, offset: i64, whence: i32) -> Result<i64> {
    let lower = file.lower().ok_or(EBADF)?;
    let pos = lower.llseek(offset, whence)?;
    file.set_pos(pos);
    Ok(pos)
}
