// SPDX-License-Identifier: GPL-2.0

//! Address-space operations: untorn's own page cache, filled from and written back to storage
//! through the mount's backend (`backend.rs`: the lower file with direct I/O, so the data is not
//! cached twice, or the block device with untorn's own bios).

use kernel::prelude::*;

use crate::{
    backend::total_size,
    counters::Counters,
    kernel_ext::{
        folio::{Folio, FolioLock, LockedFolio, OwnedLockedFolio},
        ops::{Readahead, Writeback},
        task,
        vfs::{Inode, READ_FOLIOS_MAX},
    },
    Untorn,
};

/// Fills the contiguous locked `folios` from storage with one read: the bytes below our size,
/// zeroes beyond.
pub(crate) fn fill(inode: &Inode<Untorn>, folios: &[&dyn FolioLock]) -> Result {
    let Some(first) = folios.first() else {
        return Ok(());
    };
    let (pos, size) = (first.pos(), inode.size());
    let valid = if pos >= size {
        0
    } else {
        (size - pos).min(total_size(folios) as i64) as usize
    };
    let mut filled = 0;
    if valid > 0 {
        let data = &inode.super_block().info().data;
        filled = data.backend().read(inode, folios, valid)?;
        let counters = data.counters();
        Counters::add(&counters.reads, &counters.read_bytes, filled as u64);
    }
    // Beyond storage's end of file (or ours) the folios read as zeroes.
    let mut start = 0;
    for folio in folios {
        folio.zero(filled.min(valid).saturating_sub(start), folio.size());
        start += folio.size();
    }
    Ok(())
}

pub(crate) fn read_folio(inode: &Inode<Untorn>, folio: LockedFolio<'_>) -> Result {
    match fill(inode, &[&folio]) {
        Ok(()) => {
            folio.end_read(true);
            Ok(())
        }
        Err(e) => {
            Counters::inc(&inode.super_block().info().data.counters().errors);
            folio.end_read(false);
            Err(e)
        }
    }
}

/// Fills a readahead request's folios in batches of up to [`READ_FOLIOS_MAX`], each with one
/// storage read, rather than a read per folio.
pub(crate) fn readahead(inode: &Inode<Untorn>, mut request: Readahead<'_>) {
    loop {
        let mut batch: [Option<OwnedLockedFolio>; READ_FOLIOS_MAX] =
            [const { None }; READ_FOLIOS_MAX];
        let mut count = 0;
        while count < READ_FOLIOS_MAX {
            let Some(folio) = request.next_folio() else {
                break;
            };
            batch[count] = Some(folio);
            count += 1;
        }
        let Some(head) = &batch[0] else {
            return;
        };
        // Slots past `count` are never read: they repeat the first folio to fill the array.
        let folios: [&dyn FolioLock; READ_FOLIOS_MAX] =
            core::array::from_fn(|i| batch[i].as_ref().unwrap_or(head) as &dyn FolioLock);
        let result = fill(inode, &folios[..count]);
        if result.is_err() {
            Counters::inc(&inode.super_block().info().data.counters().errors);
        }
        for folio in batch.into_iter().flatten() {
            folio.end_read(result.is_ok());
        }
        if count < READ_FOLIOS_MAX {
            return;
        }
    }
}

pub(crate) fn write_begin(inode: &Inode<Untorn>, pos: i64, len: usize) -> Result<OwnedLockedFolio> {
    let folio = inode.folio_for_write(pos, len)?;
    if folio.is_uptodate() {
        return Ok(folio);
    }
    let offset = (pos - folio.pos()) as usize;
    let len = len.min(folio.size() - offset);
    if offset == 0 && len == folio.size() {
        // The copy overwrites the whole folio; `write_end` marks it up to date.
        return Ok(folio);
    }
    if folio.pos() >= inode.size() {
        // Wholly beyond the end of file: nothing to read.
        folio.zero(0, folio.size());
    } else {
        fill(inode, &[&folio])?;
    }
    folio.mark_uptodate();
    Ok(folio)
}

pub(crate) fn write_end(
    inode: &Inode<Untorn>,
    pos: i64,
    len: usize,
    copied: usize,
    folio: OwnedLockedFolio,
) -> usize {
    if !folio.is_uptodate() {
        if copied < len {
            // A short copy into a folio we did not read: redo it (generic_perform_write
            // faults the user page in and retries).
            return 0;
        }
        folio.mark_uptodate();
    }
    let end = pos + copied as i64;
    if end > inode.size() {
        inode.set_size(end);
    }
    if copied > 0 {
        folio.mark_dirty();
    }
    copied
}

/// Writes back each dirty folio, as a task that cleans our pages
/// ([`task::cleaning_upper_pages`]).
pub(crate) fn writepages(inode: &Inode<Untorn>, wb: &mut Writeback<'_>) -> Result {
    task::cleaning_upper_pages(|| wb.for_each(|folio| write_back(inode, folio)))
}

/// Writes back one dirty folio with one lower write (two at end of file, see above).
fn write_back(inode: &Inode<Untorn>, folio: LockedFolio<'_>) -> Result {
    let sb = inode.super_block();
    let counters = sb.info().data.counters();
    let (pos, size) = (folio.pos(), inode.size());
    if pos >= size {
        // Truncated while waiting for the lock: nothing left to write.
        folio.unlock();
        return Ok(());
    }
    let len = (size - pos).min(folio.size() as i64) as usize;
    // The part beyond the end of file may hold bytes a shared mapping wrote there: zero it
    // on every writeback, so they never become file data when the file grows.
    folio.zero(len, folio.size());
    let folio = folio.start_writeback();
    let result = write_to_storage(inode, &folio, 0, len);
    match result {
        Ok(()) => Counters::add(&counters.writeback, &counters.writeback_bytes, len as u64),
        Err(_) => Counters::inc(&counters.errors),
    }
    folio.end(result)
}

/// Writes bytes `offset..offset + len` of a folio that is locked or under writeback to
/// storage.
pub(crate) fn write_to_storage(
    inode: &Inode<Untorn>,
    folio: &Folio,
    offset: usize,
    len: usize,
) -> Result {
    let backend = inode.super_block().info().data.backend();
    backend.write_folio(inode, folio, offset, len)
}
