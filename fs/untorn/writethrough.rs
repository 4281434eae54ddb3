// SPDX-License-Identifier: GPL-2.0

//! Writethrough and untorn writes (`Documentation/filesystems/untorn.rst`, "Sequence of one
//! writethrough write").
//!
//! An eligible write (power-of-two length, naturally aligned, within the file's limits) is
//! copied into a pinned bounce buffer, the folios of its range are locked in ascending order,
//! the lower writes the bounce as one atomic direct write, and only then is the data copied into
//! the folios, inside a publication slot, so that readers never see what the device does not
//! have, nor half a unit.

use kernel::{pr_warn_once, prelude::*};

use crate::{
    aops,
    counters::Counters,
    kernel_ext::{
        bounce::UserBounce,
        folio::{FolioLock, OwnedLockedFolio},
        ops::{Kiocb, UserIter},
        publication::Slot,
        vfs::Inode,
    },
    untorn_logic::atomic_write::{check, AtomicWriteError},
    Untorn,
};

/// Whether a write of `len` bytes at `pos` can be untorn: within the limits, and with an
/// address space for the bounce buffer.
fn eligibility(inode: &Inode<Untorn>, pos: i64, len: usize) -> Result<(), Error> {
    check(pos as u64, len as u64, &inode.data().limits()).map_err(|e| match e {
        AtomicWriteError::Unsupported => EOPNOTSUPP,
        _ => EINVAL,
    })?;
    if !UserBounce::possible() {
        return Err(EOPNOTSUPP);
    }
    Ok(())
}

/// A writethrough write (`RWF_ATOMIC`, or a file in writethrough mode): returns only after the
/// lower write completed.
pub(crate) fn write(kiocb: &mut Kiocb<'_, Untorn>, iter: &mut UserIter) -> Result<usize> {
    let inode = kiocb.inode();
    let counters = inode.super_block().info().data.counters();
    let result = write_locked(kiocb, iter);
    if let Err(e) = &result {
        Counters::inc(counters.error_counter(*e));
    }
    result
}

fn write_locked(kiocb: &mut Kiocb<'_, Untorn>, iter: &mut UserIter) -> Result<usize> {
    let inode = kiocb.inode();
    if kiocb.is_nowait() {
        return Err(EAGAIN);
    }
    // A shared inode lock lets writes to other parts of the file run in parallel; extending
    // or privilege-dropping writes need it exclusive (the rule of XFS's direct writes), and so
    // do writes that are not untorn (they go through `generic_perform_write`).
    let shared_ok = |kiocb: &Kiocb<'_, Untorn>, count: usize| {
        !kiocb.is_append() && inode.is_nosec() && kiocb.pos() + count as i64 <= inode.size()
    };
    if shared_ok(kiocb, iter.count()) {
        let done = inode.with_lock_shared(|| -> Result<Option<usize>> {
            if !shared_ok(kiocb, iter.count()) {
                return Ok(None);
            }
            under_lock(kiocb, iter, true)
        })?;
        if let Some(done) = done {
            return Ok(done);
        }
    }
    inode
        .with_lock(|| under_lock(kiocb, iter, false))
        .map(|done| done.unwrap_or(0))
}

/// Returns `None` if the write needs the inode lock exclusive and `shared` is set.
fn under_lock(
    kiocb: &mut Kiocb<'_, Untorn>,
    iter: &mut UserIter,
    shared: bool,
) -> Result<Option<usize>> {
    let inode = kiocb.inode();
    let asked = iter.count();
    // Limits and `O_APPEND`.
    let count = kiocb.write_checks(iter)?;
    if count == 0 {
        return Ok(Some(0));
    }
    let pos = kiocb.pos();
    let eligible = if count < asked && kiocb.is_atomic() {
        // An atomic write is never shortened (RLIMIT_FSIZE, s_maxbytes).
        Err(EINVAL)
    } else {
        eligibility(inode, pos, count)
    };
    match eligible {
        Ok(()) => untorn_write(kiocb, iter, pos, count, shared).map(Some),
        Err(e) if kiocb.is_atomic() => Err(e),
        Err(_) if shared => {
            // SAFETY: `write_checks` only truncated the iterator, which held `asked` bytes.
            unsafe { iter.reexpand(asked) };
            Ok(None)
        }
        Err(_) => plain_writethrough(kiocb, iter).map(Some),
    }
}

/// A writethrough write that cannot be untorn: copied into the page cache, then written to the
/// lower and waited for. No tearing promise, and (unlike untorn writes) readers may see the
/// data while it is on its way.
fn plain_writethrough(kiocb: &mut Kiocb<'_, Untorn>, iter: &mut UserIter) -> Result<usize> {
    let inode = kiocb.inode();
    let start = kiocb.pos();
    let old_size = inode.size();
    kiocb.file_modified()?;
    if start > old_size {
        inode.zero_beyond_eof(old_size);
    }
    let written = kiocb.perform_write(iter)?;
    if written == 0 {
        return Ok(0);
    }
    inode.write_and_wait(start, start + written as i64 - 1)?;
    let written = kiocb.write_sync(written)?;
    let counters = inode.super_block().info().data.counters();
    Counters::add(
        &counters.writethrough_writes,
        &counters.writethrough_bytes,
        written as u64,
    );
    Counters::inc(&counters.writethrough_not_eligible);
    Ok(written)
}

/// A folio of the range, locked, and whether its dirty flag was cleared for this write.
struct RangeFolio {
    folio: OwnedLockedFolio,
    was_dirty: bool,
}

/// The untorn write of `count` bytes at `pos`.
fn untorn_write(
    kiocb: &mut Kiocb<'_, Untorn>,
    iter: &mut UserIter,
    pos: i64,
    count: usize,
    shared: bool,
) -> Result<usize> {
    let inode = kiocb.inode();
    let lower = inode.data_file_rw().ok_or(EBADF)?;
    // The user's data, all or nothing, before anything changes.
    let mut bounce = UserBounce::new(count)?;
    bounce.fill_from(iter)?;
    let old_size = inode.size();
    if let Err(e) = kiocb.file_modified() {
        iter_restore(iter, &bounce);
        return Err(e);
    }
    if !shared && pos > old_size {
        inode.zero_beyond_eof(old_size);
    }
    let end = pos + count as i64;
    let folios = match lock_range(inode, pos, end) {
        Ok(folios) => folios,
        Err(e) => {
            iter_restore(iter, &bounce);
            return Err(e);
        }
    };
    let written = inode
        .super_block()
        .as_mounter(|| lower.write_atomic(pos, &bounce, kiocb.sync_flags()));
    let result = match written {
        Ok(n) if n == count => {
            publish(inode, &folios, &bounce, pos, end);
            if end > inode.size() {
                inode.set_size(end);
            }
            Ok(count)
        }
        Ok(_) => {
            // `iomap` never writes part of an atomic write; if a lower did, neither the old
            // nor the new data is known to be what the device has.
            pr_warn_once!("untorn: a lower atomic write was short\n");
            Err(EIO)
        }
        Err(e) => {
            for f in &folios {
                if f.was_dirty {
                    // Its buffered data is still not on the device.
                    f.folio.mark_dirty();
                }
            }
            Err(e)
        }
    };
    // Folios first: `bounce`'s unmap takes `mmap_lock`, which a fault holds while it waits
    // for a folio lock.
    drop(folios);
    match result {
        Ok(count) => {
            drop(bounce);
            kiocb.set_pos(end);
            let counters = inode.super_block().info().data.counters();
            Counters::add(
                &counters.writethrough_writes,
                &counters.writethrough_bytes,
                count as u64,
            );
            Counters::add(
                &counters.untorn_writes,
                &counters.untorn_bytes,
                count as u64,
            );
            Ok(count)
        }
        Err(e) => {
            if e == EIO {
                let _ = inode.invalidate(pos, end - 1);
            }
            iter_restore(iter, &bounce);
            Err(e)
        }
    }
}

/// Gives back to the iterator what the bounce buffer took, so a failed write consumed nothing.
fn iter_restore(iter: &mut UserIter, bounce: &UserBounce) {
    // SAFETY: `bounce` was filled from `iter`, which consumed exactly its length.
    unsafe { iter.revert(bounce.size()) };
}

/// Locks the folios of `[pos, end)` in ascending order, waits for their writeback, and clears
/// the dirty ones; the parts of those outside the range go to the lower first, so that the
/// untorn write is the only change to the range's units.
fn lock_range(inode: &Inode<Untorn>, pos: i64, end: i64) -> Result<KVec<RangeFolio>> {
    let mut folios = KVec::new();
    let mut at = pos;
    while at < end {
        let folio = inode.folio_for_write(at, (end - at) as usize)?;
        folio.wait_writeback();
        let was_dirty = folio.clear_dirty_for_io();
        at = folio.pos() + folio.size() as i64;
        let entry = RangeFolio { folio, was_dirty };
        if was_dirty {
            if let Err(e) = write_outside(inode, &entry.folio, pos, end) {
                entry.folio.mark_dirty();
                return Err(e);
            }
        }
        folios.push(entry, GFP_KERNEL)?;
    }
    Ok(folios)
}

/// Writes the bytes of a dirty folio that lie outside `[pos, end)` (and below the end of file).
fn write_outside(inode: &Inode<Untorn>, folio: &OwnedLockedFolio, pos: i64, end: i64) -> Result {
    let (fpos, fsize) = (folio.pos(), folio.size() as i64);
    let size = inode.size();
    if fpos < pos {
        let len = (pos.min(size) - fpos).max(0) as usize;
        if len > 0 {
            aops::write_to_lower(inode, folio, 0, len)?;
        }
    }
    let fend = (fpos + fsize).min(size);
    if end < fend {
        aops::write_to_lower(inode, folio, (end - fpos) as usize, (fend - end) as usize)?;
    }
    Ok(())
}

/// Copies the written data into the folios that hold valid data or are wholly covered, inside
/// the publication slot of the write's window (an untorn write lies inside one window).
fn publish(inode: &Inode<Untorn>, folios: &[RangeFolio], bounce: &UserBounce, pos: i64, end: i64) {
    let data = &inode.super_block().info().data;
    let slot = Slot::of(inode.lower().ino(), pos as u64);
    data.publication().publish(slot, || {
        for f in folios {
            let folio = &f.folio;
            let (fpos, fend) = (folio.pos(), folio.pos() + folio.size() as i64);
            let (from, to) = (pos.max(fpos), end.min(fend));
            let whole = from == fpos && to == fend;
            if !folio.is_uptodate() && !whole {
                // Not read yet: a later read takes the new data from the lower.
                continue;
            }
            let copied = bounce.copy_to_folio(
                folio,
                (from - fpos) as usize,
                (from - pos) as usize,
                (to - from) as usize,
            );
            if copied.is_ok() && whole {
                folio.mark_uptodate();
            }
            folio.flush_dcache();
        }
    });
}
