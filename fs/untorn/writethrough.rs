// SPDX-License-Identifier: GPL-2.0

//! Writethrough and untorn writes (`Documentation/filesystems/untorn.rst`, "Sequence of one
//! writethrough write").
//!
//! An eligible write (power-of-two length, naturally aligned, within the file's limits) is
//! copied into a pinned bounce buffer, the folios of its range are locked in ascending order,
//! storage writes the bounce untorn (the lower as one atomic direct write, or a device as one
//! `REQ_ATOMIC` bio: `backend.rs`), and only then is the data copied into the folios, inside a
//! publication slot, so that readers never see what the device does not have, nor half a unit.

use kernel::{
    prelude::*,
    time::{Instant, Monotonic},
};

use crate::{
    aops,
    backend::backend,
    counters::Counters,
    kernel_ext::{
        bounce::UserBounce,
        folio::{FolioLock, OwnedLockedFolio},
        ops::{Kiocb, UserIter},
        publication::{Slot, WINDOW},
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

/// A bounce buffer of `len` bytes for a write to `inode`, from the mount's cache if possible.
fn new_bounce(inode: &Inode<Untorn>, len: usize) -> Result<UserBounce<'_>> {
    let data = &inode.super_block().info().data;
    let bounce = UserBounce::new(len, data.bounce_cache())?;
    let counters = data.counters();
    Counters::inc(if bounce.reused() {
        &counters.bounce_reused
    } else {
        &counters.bounce_mapped
    });
    Ok(bounce)
}

/// A writethrough write (`RWF_ATOMIC`, or a file in writethrough mode): returns only after the
/// storage write completed.
pub(crate) fn write(kiocb: &mut Kiocb<'_, Untorn>, iter: &mut UserIter) -> Result<usize> {
    let inode = kiocb.inode();
    let data = &inode.super_block().info().data;
    let start = Instant::<Monotonic>::now();
    let result = write_locked(kiocb, iter);
    match &result {
        Ok(_) => data
            .latency()
            .record(start.elapsed().as_micros_ceil().max(0) as u64),
        Err(e) => Counters::inc(data.counters().error_counter(*e)),
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
    let (result, overlapped) = inode
        .data()
        .writethrough(|| dispatch_under_lock(kiocb, iter, shared));
    if overlapped {
        let counters = inode.super_block().info().data.counters();
        Counters::inc(&counters.writethrough_overlapped);
    }
    result
}

fn dispatch_under_lock(
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

/// A writethrough write that cannot be untorn, in chunks that each lie in one publication
/// window: each chunk reaches storage before its data enters the page cache, as for untorn
/// writes, but without the all-or-nothing promise of the device. Returns the bytes of the chunks
/// done before a failure, or the failure if none was.
fn plain_writethrough(kiocb: &mut Kiocb<'_, Untorn>, iter: &mut UserIter) -> Result<usize> {
    let inode = kiocb.inode();
    let start = kiocb.pos();
    let count = iter.count();
    let old_size = inode.size();
    kiocb.file_modified()?;
    if start > old_size {
        inode.zero_beyond_eof(old_size);
    }
    let mut done = 0;
    while done < count {
        let pos = start + done as i64;
        let window_left = (WINDOW - pos as u64 % WINDOW) as usize;
        let len = (count - done).min(window_left);
        match write_chunk(inode, iter, pos, len, kiocb.sync_flags()) {
            Ok(()) => done += len,
            Err(e) if done == 0 => return Err(e),
            Err(_) => break,
        }
    }
    kiocb.set_pos(start + done as i64);
    let counters = inode.super_block().info().data.counters();
    Counters::add(
        &counters.writethrough_writes,
        &counters.writethrough_bytes,
        done as u64,
    );
    Counters::inc(&counters.writethrough_not_eligible);
    Ok(done)
}

/// One chunk `[pos, pos + len)` of a plain writethrough write. The I/O covers the chunk rounded
/// out to the blocks of storage I/O (up to the new end of file): the user's bytes are copied
/// into the bounce buffer first, with no folio locked (the buffer may be a mapping of this very
/// file), and the bytes around them come from the locked folios.
fn write_chunk(
    inode: &Inode<Untorn>,
    iter: &mut UserIter,
    pos: i64,
    len: usize,
    sync_flags: i32,
) -> Result {
    let end = pos + len as i64;
    let new_size = inode.size().max(end);
    // At least 1, also for a backend that says 0 (and no division by zero).
    let block = i64::from(backend(inode).io_block(inode).max(1));
    let io_start = pos - pos % block;
    let io_end = (end + (block - end % block) % block).min(new_size);
    let mut bounce = new_bounce(inode, (io_end - io_start) as usize)?;
    bounce.fill_at((pos - io_start) as usize, iter, len)?;
    let result = write_chunk_locked(inode, &mut bounce, pos, end, io_start, io_end, sync_flags);
    if result.is_err() {
        // SAFETY: `fill_at` consumed exactly `len` bytes of `iter`.
        unsafe { iter.revert(len) };
    }
    // `bounce` is unmapped only now, after the folio locks are gone (unmapping takes
    // `mmap_lock`, which a fault may hold while it waits for a folio lock).
    drop(bounce);
    result
}

fn write_chunk_locked(
    inode: &Inode<Untorn>,
    bounce: &mut UserBounce<'_>,
    pos: i64,
    end: i64,
    io_start: i64,
    io_end: i64,
    sync_flags: i32,
) -> Result {
    // Dirty folios' bytes outside the I/O range go to storage first, as for untorn writes.
    let folios = lock_range(inode, io_start, io_end, true)?;
    let result = (|| -> Result {
        // The bytes around the chunk must be the file's current ones.
        for f in folios.iter() {
            let folio = &f.folio;
            let (fpos, fend) = (folio.pos(), folio.pos() + folio.size() as i64);
            for (from, to) in [
                (io_start.max(fpos), pos.min(fend)),
                (end.max(fpos), io_end.min(fend)),
            ] {
                if from >= to {
                    continue;
                }
                if !folio.is_uptodate() {
                    aops::fill(inode, &[folio])?;
                    folio.mark_uptodate();
                }
                bounce.copy_from_folio(
                    folio,
                    (from - fpos) as usize,
                    (from - io_start) as usize,
                    (to - from) as usize,
                )?;
            }
        }
        let io_len = (io_end - io_start) as usize;
        backend(inode).write_range(inode, io_start, bounce, io_len, sync_flags)?;
        publish(inode, &folios, bounce, io_start, pos, end);
        if end > inode.size() {
            inode.set_size(end);
        }
        Ok(())
    })();
    if result.is_err() {
        // The device may hold part of the chunk: dirty the folios again, so that writeback
        // brings the device back to what the page cache (and readers) have.
        for f in &folios {
            if f.folio.is_uptodate() {
                f.folio.mark_dirty();
            }
        }
    }
    result
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
    // The user's data, all or nothing, before anything changes.
    let mut bounce = new_bounce(inode, count)?;
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
    let folios = match lock_range(inode, pos, end, true) {
        Ok(folios) => folios,
        Err(e) => {
            iter_restore(iter, &bounce);
            return Err(e);
        }
    };
    let written = backend(inode).write_untorn(inode, pos, &bounce, kiocb.sync_flags());
    let result = match written {
        Ok(()) => {
            publish(inode, &folios, &bounce, pos, pos, end);
            if end > inode.size() {
                inode.set_size(end);
            }
            Ok(count)
        }
        Err(e) => {
            for f in &folios {
                if f.was_dirty {
                    // Its buffered data is still not on storage.
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
fn iter_restore(iter: &mut UserIter, bounce: &UserBounce<'_>) {
    // SAFETY: `bounce` was filled from `iter`, which consumed exactly its length.
    unsafe { iter.revert(bounce.size()) };
}

/// Locks the folios of `[pos, end)` in ascending order, waits for their writeback, and clears
/// the dirty ones; the parts of those outside the range go to storage first, so that the
/// untorn write is the only change to the range's units.
fn lock_range(
    inode: &Inode<Untorn>,
    pos: i64,
    end: i64,
    write_outside_first: bool,
) -> Result<KVec<RangeFolio>> {
    let mut folios = KVec::new();
    let mut at = pos;
    while at < end {
        let folio = inode.folio_for_write(at, (end - at) as usize)?;
        folio.wait_writeback();
        let was_dirty = folio.clear_dirty_for_io();
        at = folio.pos() + folio.size() as i64;
        let entry = RangeFolio { folio, was_dirty };
        if was_dirty && write_outside_first {
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
            aops::write_to_storage(inode, folio, 0, len)?;
        }
    }
    let fend = (fpos + fsize).min(size);
    if end < fend {
        aops::write_to_storage(inode, folio, (end - fpos) as usize, (fend - end) as usize)?;
    }
    Ok(())
}

/// Copies the written data into the folios that hold valid data or are wholly covered, inside
/// the publication slot of the write's window (an untorn write lies inside one window).
/// `bounce` holds the file's bytes from `base`; `[pos, end)` is the written range.
fn publish(
    inode: &Inode<Untorn>,
    folios: &[RangeFolio],
    bounce: &UserBounce<'_>,
    base: i64,
    pos: i64,
    end: i64,
) {
    let data = &inode.super_block().info().data;
    let slot = Slot::of(inode.lower().ino(), pos as u64);
    let copy = || {
        for f in folios {
            let folio = &f.folio;
            let (fpos, fend) = (folio.pos(), folio.pos() + folio.size() as i64);
            let (from, to) = (pos.max(fpos), end.min(fend));
            let whole = from == fpos && to == fend;
            if !folio.is_uptodate() && !whole {
                // Not read yet: a later read takes the new data from storage.
                continue;
            }
            let copied = bounce.copy_to_folio(
                folio,
                (from - fpos) as usize,
                (from - base) as usize,
                (to - from) as usize,
            );
            if copied.is_ok() && whole {
                folio.mark_uptodate();
            }
            folio.flush_dcache();
        }
    };
    if data.skip_publication() {
        copy();
    } else {
        data.publication().publish(slot, copy);
    }
}
